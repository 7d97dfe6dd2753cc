//! `crate = path` names syncflow through a re-export.
mod reexport {
    pub use ::syncflow as engine;
}

use reexport::engine::prelude::{Meta, sync_function};

#[sync_function(crate = crate::reexport::engine)]
fn parse(line: String, _meta: &Meta) -> usize {
    line.len()
}

#[sync_function(crate = "crate::reexport::engine", name = "twice")]
fn double(n: usize) -> usize {
    n * 2
}

fn main() {
    let _ = reexport::engine::flow!(parse -> double);
}
