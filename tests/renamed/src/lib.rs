//! Sync functions and a flow written against `syncflow` renamed to `sf`.
//!
//! Nothing here can name `syncflow`: it is not a dependency of this crate,
//! so `#[sync_function]` must find the crate as `::sf` (from Cargo.toml) and
//! `flow!` through `$crate`.
//!
//! ```compile_fail
//! use syncflow as _; // not a dependency under that name
//! ```

use sf::flow::{Flow, FlowDef};
use sf::prelude::*;

/// Parses a number.
#[sync_function]
pub fn parse(line: String) -> Result<i64, std::num::ParseIntError> {
    line.trim().parse()
}

/// Keeps positive numbers, for the message's source position.
#[sync_function(name = "renamed_positive")]
pub async fn positive(n: i64, meta: &Meta) -> Option<(i64, u64)> {
    (n > 0).then_some((n, meta.position))
}

/// The flow of this crate.
pub fn flow() -> Flow<impl FlowDef<Input = String, Output = (i64, u64)>> {
    sf::flow!(name = "renamed", parse -> positive)
}
