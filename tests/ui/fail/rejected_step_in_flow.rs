use syncflow::prelude::*;

// The signature is rejected: that one error is all the user should see,
// not a second one at the flow that uses the function.
#[sync_function]
fn length(line: &str) -> usize {
    line.len()
}

#[sync_function]
fn double(n: usize) -> usize {
    n * 2
}

fn main() {
    let _ = flow!(length -> double);
}
