//! What the policies did, counted: retries, timeouts, rate-limit waits and
//! the `on_error` outcomes, per function.
//!
//! The counters are shared atomics, bumped with relaxed ordering only when a
//! policy acts (a failure, a timeout, a wait), never on the path of a
//! message that passes: they cost nothing while all is well.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::OnError;

/// Counters of one function's policies, shared by every worker.
#[derive(Debug, Default)]
pub struct PolicyStats {
    retries: AtomicU64,
    gave_up: AtomicU64,
    timeouts: AtomicU64,
    rate_limited: AtomicU64,
    rate_limited_ns: AtomicU64,
    dropped: AtomicU64,
    dead_lettered: AtomicU64,
    skipped: AtomicU64,
    stopped: AtomicU64,
}

/// A copy of [`PolicyStats`] at one moment (each counter read on its own).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyCounts {
    /// Calls tried again after a failure.
    pub retries: u64,
    /// Calls that failed after their last allowed try or with an error that is not retryable.
    pub gave_up: u64,
    /// Calls cancelled by their timeout.
    pub timeouts: u64,
    /// Calls that had to wait for the rate limit.
    pub rate_limited: u64,
    /// Time spent waiting for the rate limit, in nanoseconds.
    pub rate_limited_ns: u64,
    /// Failed messages dropped (`on_error: drop`).
    pub dropped: u64,
    /// Failed messages sent to a dead-letter output (`on_error: dead_letter`).
    pub dead_lettered: u64,
    /// Failed messages passed on unchanged to the sinks (`on_error: skip`).
    pub skipped: u64,
    /// Failures that stopped the flow (`on_error: stop`).
    pub stopped: u64,
}

impl PolicyStats {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }
    /// A failed call will be tried again.
    pub fn record_retry(&self) {
        self.retries.fetch_add(1, Relaxed);
    }
    /// A call failed for good (its error then goes to `on_error`).
    pub fn record_gave_up(&self) {
        self.gave_up.fetch_add(1, Relaxed);
    }
    /// A call was cancelled by its timeout.
    pub fn record_timeout(&self) {
        self.timeouts.fetch_add(1, Relaxed);
    }
    /// A call waited `waited` for the rate limit (a zero wait is not counted).
    pub fn record_rate_wait(&self, waited: Duration) {
        if waited.is_zero() {
            return;
        }
        self.rate_limited.fetch_add(1, Relaxed);
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.rate_limited_ns.fetch_add(ns, Relaxed);
    }
    /// The `on_error` policy was applied to a failed message.
    pub fn record_on_error(&self, action: &OnError) {
        let counter = match action {
            OnError::Drop => &self.dropped,
            OnError::DeadLetter { .. } => &self.dead_lettered,
            OnError::Skip => &self.skipped,
            OnError::Stop => &self.stopped,
        };
        counter.fetch_add(1, Relaxed);
    }
    /// The counters now.
    pub fn snapshot(&self) -> PolicyCounts {
        PolicyCounts {
            retries: self.retries.load(Relaxed),
            gave_up: self.gave_up.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            rate_limited_ns: self.rate_limited_ns.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            dead_lettered: self.dead_lettered.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            stopped: self.stopped.load(Relaxed),
        }
    }
}

impl PolicyCounts {
    /// Time spent waiting for the rate limit.
    pub fn rate_limited_time(&self) -> Duration {
        Duration::from_nanos(self.rate_limited_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Rate, RateLimiter, Retry, retry_async, with_timeout};
    use std::sync::Arc;

    #[test]
    fn each_record_moves_its_own_counter() {
        let s = PolicyStats::new();
        s.record_retry();
        s.record_retry();
        s.record_gave_up();
        s.record_timeout();
        s.record_rate_wait(Duration::ZERO);
        s.record_rate_wait(Duration::from_millis(3));
        s.record_rate_wait(Duration::from_millis(4));
        for action in [
            OnError::Drop,
            OnError::DeadLetter { channel: None },
            OnError::DeadLetter {
                channel: Some("bad".into()),
            },
            OnError::Skip,
            OnError::Stop,
        ] {
            s.record_on_error(&action);
        }
        let c = s.snapshot();
        assert_eq!(
            c,
            PolicyCounts {
                retries: 2,
                gave_up: 1,
                timeouts: 1,
                rate_limited: 2,
                rate_limited_ns: 7_000_000,
                dropped: 1,
                dead_lettered: 2,
                skipped: 1,
                stopped: 1,
            }
        );
        assert_eq!(c.rate_limited_time(), Duration::from_millis(7));
    }

    /// The mechanisms feed the counters the way an executor would.
    #[tokio::test(start_paused = true)]
    async fn mechanisms_report_into_the_counters() {
        let stats = Arc::new(PolicyStats::new());
        let limiter = RateLimiter::new(Rate::per_second(10).with_burst(1));
        let retry = Retry::new(3).with_initial_backoff(Duration::from_millis(1));
        let result = retry_async(
            &retry,
            |_| true,
            |a| match a.next_delay {
                Some(_) => stats.record_retry(),
                None => stats.record_gave_up(),
            },
            || {
                let (stats, limiter) = (stats.clone(), &limiter);
                async move {
                    stats.record_rate_wait(limiter.acquire(1).await);
                    let r = with_timeout(
                        Duration::from_millis(50),
                        tokio::time::sleep(Duration::from_secs(1)),
                    )
                    .await;
                    if r.is_err() {
                        stats.record_timeout();
                    }
                    r
                }
            },
        )
        .await;
        assert!(result.is_err());
        let c = stats.snapshot();
        assert_eq!((c.retries, c.gave_up, c.timeouts), (2, 1, 3));
        // Three calls at 10/s with burst 1: the second and third waited.
        assert_eq!(c.rate_limited, 2);
        assert!(c.rate_limited_time() > Duration::ZERO);
        assert!(c.rate_limited_time() <= Duration::from_millis(200));
    }
}
