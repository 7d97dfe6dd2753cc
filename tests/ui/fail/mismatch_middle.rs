use syncflow::prelude::*;

pub struct Parsed(i64);
pub struct Valid(i64);
pub struct Row(String);

#[sync_function]
fn parse(line: String) -> Parsed {
    Parsed(line.len() as i64)
}

#[sync_function]
fn validate(p: Parsed) -> Valid {
    Valid(p.0)
}

#[sync_function]
fn write(r: Row) -> String {
    r.0
}

#[sync_function]
fn done(s: String) -> usize {
    s.len()
}

fn main() {
    // A step that turns `Valid` into `Row` is missing before `write`.
    let _ = flow!(parse -> validate -> write -> done);
}
