//! Runnable syncflow examples.
//!
//! - [`orders`]: order change events → warehouse rows
//!   (`parse → validate → enrich → to_row`), run with
//!   `cargo run -p syncflow-examples --bin orders`.
#![warn(missing_docs)]

pub mod orders;
