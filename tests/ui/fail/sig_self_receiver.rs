use syncflow::prelude::*;

pub struct Parser;

impl Parser {
    #[sync_function]
    fn parse(&self, line: String) -> i64 {
        line.len() as i64
    }
}

fn main() {}
