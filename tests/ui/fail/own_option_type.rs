use syncflow::prelude::*;

pub enum Option<T> {
    Yes(T),
    No,
}

#[sync_function]
fn maybe(n: i64) -> Option<i64> {
    if n > 0 { Option::Yes(n) } else { Option::No }
}

fn main() {}
