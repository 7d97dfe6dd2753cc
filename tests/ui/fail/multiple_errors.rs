use syncflow::prelude::*;

#[sync_function(nmae = "x")]
const fn parse<T>(line: &str) {
    let _ = line;
}

fn main() {}
