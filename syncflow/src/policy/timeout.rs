//! The `timeout` policy: a call that takes too long fails with [`TimedOut`].

use std::future::Future;
use std::time::Duration;

use super::duration::Human;

/// A call did not finish within its timeout. It was cancelled (its future
/// dropped) and counts as a failure of the step, which its retry and
/// `on_error` policies then handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "timed out after {}: the call did not finish within the `timeout` policy; raise `timeout` if calls this slow are expected",
    Human(*.after)
)]
pub struct TimedOut {
    /// The timeout that elapsed.
    pub after: Duration,
}

/// Runs `fut`, giving up after `limit` (tokio time) with [`TimedOut`].
///
/// A future that is ready when first polled succeeds even with a zero limit.
pub async fn with_timeout<F: Future>(limit: Duration, fut: F) -> Result<F::Output, TimedOut> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| TimedOut { after: limit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slow_calls_time_out_naming_the_limit() {
        let start = tokio::time::Instant::now();
        let err = with_timeout(Duration::from_millis(1500), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            7
        })
        .await
        .expect_err("too slow");
        assert_eq!(
            err,
            TimedOut {
                after: Duration::from_millis(1500)
            }
        );
        assert_eq!(start.elapsed(), Duration::from_millis(1500));
        let text = err.to_string();
        assert!(text.starts_with("timed out after 1s500ms"), "{text}");
        assert!(text.contains("raise `timeout`"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn fast_calls_pass_through() {
        let out = with_timeout(Duration::from_secs(2), async {
            tokio::time::sleep(Duration::from_millis(1999)).await;
            7
        })
        .await;
        assert_eq!(out, Ok(7));
        assert_eq!(with_timeout(Duration::ZERO, async { 8 }).await, Ok(8));
    }
}
