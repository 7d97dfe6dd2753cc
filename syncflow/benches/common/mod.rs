//! Shared support for the syncflow benchmarks (`w2_chain`, `w1_logs`, `compare`).
//!
//! - [`w2`]: a chain of small steps over an order record, as `flow!`, by hand
//!   and as a `Vec<Box<dyn Fn>>`;
//! - [`w1`]: the NDJSON log ETL of `shared/bench/w1`, its data generator, a
//!   hand-written serde_json loop and the same work as a `flow!`.
//!
//! Every variant's hot loop is an `#[inline(never)]` function with a unique
//! name, so that `valgrind --tool=callgrind --toggle-collect='*name*'` counts
//! exactly its instructions (see `compare --callgrind`).

#![allow(dead_code)]

pub mod w1;
pub mod w2;

use std::future::Future;
use std::pin::pin;
use std::task::{Poll, Waker};

/// Runs a future that is ready on its first poll (a flow of sync steps) with
/// no executor.
///
/// # Panics
///
/// If the future is not ready: only flows of sync steps can be driven this way.
#[inline(always)]
pub fn poll_ready<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut
        .as_mut()
        .poll(&mut std::task::Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a flow of sync steps must complete on its first poll"),
    }
}
