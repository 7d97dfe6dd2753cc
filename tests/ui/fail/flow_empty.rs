use syncflow::prelude::*;

fn main() {
    let _ = flow!();
}
