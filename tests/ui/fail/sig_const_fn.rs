use syncflow::prelude::*;

#[sync_function]
const fn double(n: i64) -> i64 {
    n * 2
}

fn main() {}
