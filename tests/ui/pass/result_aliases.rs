//! `anyhow`-style `Result<T>` aliases decide the shape like `Result<T, E>`.
use syncflow::prelude::*;

#[derive(Debug)]
pub struct MyErr;

impl std::fmt::Display for MyErr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

pub type Result<T> = std::result::Result<T, MyErr>;

#[sync_function]
fn parse(line: String) -> Result<i64> {
    line.parse().map_err(|_| MyErr)
}

#[sync_function]
fn positive(n: i64) -> Result<Option<i64>> {
    Ok((n > 0).then_some(n))
}

#[sync_function]
fn digits(n: i64) -> Result<Vec<u32>> {
    Ok(n.to_string().chars().filter_map(|c| c.to_digit(10)).collect())
}

#[sync_function]
fn read(n: u32) -> std::io::Result<u64> {
    Ok(u64::from(n))
}

fn main() {
    let _ = flow!(parse -> positive -> digits -> read);
}
