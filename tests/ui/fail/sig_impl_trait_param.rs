use syncflow::prelude::*;

#[sync_function]
fn describe(item: impl std::fmt::Display) -> String {
    item.to_string()
}

fn main() {}
