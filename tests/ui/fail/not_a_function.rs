use syncflow::prelude::*;

#[sync_function]
fn parse(line: String) -> usize {
    line.len()
}

pub struct Double;

fn main() {
    // A type that is not a sync function.
    let _ = flow!(parse -> Double);
}
