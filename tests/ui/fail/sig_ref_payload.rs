use syncflow::prelude::*;

#[sync_function]
fn length(line: &str) -> usize {
    line.len()
}

fn main() {}
