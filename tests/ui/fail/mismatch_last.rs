use syncflow::prelude::*;

pub struct Parsed(i64);
pub struct Checked(i64);

#[sync_function]
fn parse(line: String) -> Result<Parsed, std::num::ParseIntError> {
    Ok(Parsed(line.parse()?))
}

#[sync_function]
fn validate(c: Checked) -> Option<i64> {
    Some(c.0)
}

fn main() {
    let _ = flow!(parse -> validate);
}
