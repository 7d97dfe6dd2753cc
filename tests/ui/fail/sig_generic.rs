use syncflow::prelude::*;

#[sync_function]
fn identity<T: Send>(item: T) -> T {
    item
}

fn main() {}
