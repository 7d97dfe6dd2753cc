use syncflow::prelude::*;

#[sync_function]
fn parse(line: String) -> i64 {
    line.len() as i64
}

// Forgot `#[sync_function]`: E0573 "expected type, found function".
fn double(n: i64) -> i64 {
    n * 2
}

fn main() {
    let _ = flow!(parse -> double);
}
