use syncflow::prelude::*;

pub struct Parsed(i64);
pub struct Enriched(i64);

#[sync_function]
async fn parse(line: String) -> Parsed {
    Parsed(line.len() as i64)
}

#[sync_function]
async fn enrich(e: Enriched) -> Enriched {
    e
}

fn main() {
    let _ = flow!(parse -> enrich);
}
