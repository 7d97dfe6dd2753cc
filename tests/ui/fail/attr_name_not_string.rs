use syncflow::prelude::*;

#[sync_function(name = parse_line)]
fn parse(line: String) -> usize {
    line.len()
}

fn main() {}
