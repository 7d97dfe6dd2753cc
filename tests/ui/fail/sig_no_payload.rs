use syncflow::prelude::*;

#[sync_function]
fn tick() -> u64 {
    42
}

fn main() {}
