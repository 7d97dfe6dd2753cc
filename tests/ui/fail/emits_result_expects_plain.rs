use syncflow::prelude::*;

/// A type alias is not recognised as `Result`: the function is a map that
/// emits the whole `Result`.
type Parsed = Result<i64, std::num::ParseIntError>;

#[sync_function]
fn parse(line: String) -> Parsed {
    line.parse()
}

#[sync_function]
fn double(n: i64) -> i64 {
    n * 2
}

fn main() {
    let _ = flow!(parse -> double);
}
