use syncflow::prelude::*;

#[sync_function(name = "parse_line", name = "parse_row")]
fn parse(line: String) -> usize {
    line.len()
}

fn main() {}
