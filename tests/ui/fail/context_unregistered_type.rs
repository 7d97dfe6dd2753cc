use syncflow::prelude::*;

#[sync_function]
fn scale(n: i64, factor: u32) -> i64 {
    n * i64::from(factor)
}

fn main() {}
