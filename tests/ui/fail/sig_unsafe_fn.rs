use syncflow::prelude::*;

#[sync_function]
unsafe fn double(n: i64) -> i64 {
    n * 2
}

fn main() {}
