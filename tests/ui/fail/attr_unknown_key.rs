use syncflow::prelude::*;

#[sync_function(nmae = "parse_line")]
fn parse(line: String) -> usize {
    line.len()
}

fn main() {}
