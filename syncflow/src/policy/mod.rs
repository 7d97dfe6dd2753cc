//! Per-function policies: retry, timeout, concurrency, batching, rate limit
//! and what to do with a message whose step failed.

pub mod concurrency;
pub mod duration;
pub mod rate;
pub mod retry;
pub mod timeout;

pub use concurrency::{Closed, Concurrency, Permit};
pub use duration::{DurationError, Human};
pub use rate::{Clock, ManualClock, Rate, RateError, RateLimiter, TokioClock};
pub use retry::{Attempt, Backoff, GaveUp, Jitter, Retry, RetryError, retry_async};
pub use timeout::{TimedOut, with_timeout};
