//! Per-function policies: retry, timeout, concurrency, batching, rate limit
//! and what to do with a message whose step failed.

pub mod duration;
pub mod retry;

pub use duration::{DurationError, Human};
pub use retry::{Attempt, Backoff, GaveUp, Jitter, Retry, RetryError, retry_async};
