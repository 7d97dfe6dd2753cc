use syncflow::prelude::*;

#[sync_function]
fn parse(line: String) -> usize {
    line.len()
}

#[sync_function]
fn double(n: usize) -> usize {
    n * 2
}

fn main() {
    let _ = flow!(parse => double);
}
