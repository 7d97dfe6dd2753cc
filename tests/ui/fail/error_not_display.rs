use syncflow::prelude::*;

#[derive(Debug)]
pub struct ParseError;

#[sync_function]
fn parse(line: String) -> Result<i64, ParseError> {
    line.parse().map_err(|_| ParseError)
}

fn main() {}
