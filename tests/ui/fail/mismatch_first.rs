use syncflow::prelude::*;

pub struct Raw(String);
pub struct Parsed(i64);
pub struct Checked(i64);

#[sync_function]
fn read(line: String) -> Raw {
    Raw(line)
}

#[sync_function]
fn check(p: Parsed) -> Checked {
    Checked(p.0)
}

#[sync_function]
fn finish(c: Checked) -> i64 {
    c.0
}

fn main() {
    // `check` takes `Parsed`, but the first step, `read`, emits `Raw`.
    let _ = flow!(read -> check -> finish);
}
