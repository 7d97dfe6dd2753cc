//! Helpers shared by the network connectors: a reconnect backoff that logs
//! each outage once, and URL redaction for names and errors.

// Each connector uses a part: with only some of them built, the rest is unused.
#![allow(dead_code)]

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::policy::{Jitter, Retry};

/// The first delay before retrying a failed connection.
pub(crate) const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay between two tries, unless a connector's settings say
/// otherwise ([`Outage::max_backoff`]).
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest a source's `read` waits before it returns [`Read::Idle`]
/// during an outage, so that a shutdown stays prompt.
///
/// [`Read::Idle`]: super::Read::Idle
pub(crate) const IDLE_STEP: Duration = Duration::from_millis(200);

/// Tracks an outage of one connection: capped exponential backoff with
/// jitter between tries, a `warn` when it starts (once per outage), an
/// `info` when it ends.
#[derive(Debug)]
pub(crate) struct Outage {
    connector: &'static str,
    target: String,
    retry: Retry,
    rng: fastrand::Rng,
    /// When the outage began; `None` while connected.
    since: Option<Instant>,
    /// Whether the outage was logged at `warn` (then its end is logged too).
    announced: bool,
    failures: u32,
    /// No new try before this instant.
    retry_at: Option<Instant>,
}

impl Outage {
    /// A tracker for the connection of `connector` to `target` (already redacted).
    pub(crate) fn new(connector: &'static str, target: impl Into<String>) -> Self {
        Outage {
            connector,
            target: target.into(),
            retry: Retry::new(u32::MAX)
                .with_initial_backoff(INITIAL_BACKOFF)
                .with_max_backoff(MAX_BACKOFF)
                .with_multiplier(2.0)
                .with_jitter(Jitter::EQUAL),
            rng: fastrand::Rng::new(),
            since: None,
            announced: false,
            failures: 0,
            retry_at: None,
        }
    }

    /// Retries at most `max` apart instead of [`MAX_BACKOFF`].
    pub(crate) fn max_backoff(mut self, max: Duration) -> Self {
        self.retry = Retry::new(u32::MAX)
            .with_initial_backoff(INITIAL_BACKOFF.min(max))
            .with_max_backoff(max)
            .with_multiplier(2.0)
            .with_jitter(Jitter::EQUAL);
        self
    }

    /// Uses `retry`'s backoff and gives up after its attempts (see
    /// [`Outage::failed_within`]); by default an outage is retried forever.
    pub(crate) fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Like [`Outage::failed`], but `None` once the tries of the outage
    /// reached the retry's attempts: the caller gives up.
    pub(crate) fn failed_within(
        &mut self,
        action: &str,
        error: &dyn fmt::Display,
    ) -> Option<Duration> {
        let delay = self.record(action, error, true);
        (self.failures < self.retry.attempts()).then_some(delay)
    }

    /// How long until the next try is due (`None`: now).
    pub(crate) fn wait(&self) -> Option<Duration> {
        self.retry_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Records a failed try (`action` failed with `error`) and returns how
    /// long to wait before the next one. The first failure of an outage is
    /// logged at `warn`, later ones at `debug`.
    pub(crate) fn failed(&mut self, action: &str, error: &dyn fmt::Display) -> Duration {
        self.record(action, error, true)
    }

    /// Like [`Outage::failed`], logged at `debug` only: for failures that
    /// the client library already reports itself (a lost connection).
    pub(crate) fn failed_quietly(&mut self, action: &str, error: &dyn fmt::Display) -> Duration {
        self.record(action, error, false)
    }

    fn record(&mut self, action: &str, error: &dyn fmt::Display, warn: bool) -> Duration {
        let now = Instant::now();
        if self.since.is_none() {
            self.since = Some(now);
        }
        if warn && !self.announced {
            self.announced = true;
            tracing::warn!(
                connector = self.connector,
                target = %self.target,
                %error,
                "cannot {action}; retrying with backoff until the connection is back (nothing is lost meanwhile)"
            );
        } else {
            tracing::debug!(
                connector = self.connector,
                target = %self.target,
                %error,
                failures = self.failures + 1,
                "cannot {action}; retrying"
            );
        }
        self.failures = self.failures.saturating_add(1);
        let delay = self.retry.delay(self.failures, &mut self.rng);
        self.retry_at = Some(now + delay);
        delay
    }

    /// Records a successful operation: ends the outage if there was one.
    pub(crate) fn recovered(&mut self) {
        if let Some(since) = self.since.take()
            && std::mem::take(&mut self.announced)
        {
            tracing::info!(
                connector = self.connector,
                target = %self.target,
                down_for = ?since.elapsed(),
                tries = self.failures,
                "connection is back; resuming"
            );
        }
        self.failures = 0;
        self.retry_at = None;
    }

    /// How long the current outage has lasted (zero when connected).
    pub(crate) fn elapsed(&self) -> Duration {
        self.since.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// Waits until the next try is due, but at most `step`. Returns whether
    /// the next try is due (`false`: the caller should return `Idle` and
    /// come back).
    pub(crate) async fn wait_step(&mut self, step: Duration) -> bool {
        let Some(at) = self.retry_at else {
            return true;
        };
        let now = Instant::now();
        if at <= now {
            return true;
        }
        if at - now <= step {
            tokio::time::sleep_until(at).await;
            true
        } else {
            tokio::time::sleep(step).await;
            false
        }
    }
}

/// A URL with any password (or token given as a user name) replaced by
/// `***`, fit for names, logs and errors.
///
/// `redis://:secret@host:6379/0` → `redis://:***@host:6379/0`,
/// `nats://user:pw@host` → `nats://user:***@host`,
/// `nats://s3cr3t@host` → `nats://***@host` (a lone user part may be a token).
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => (&url[..i + 3], &url[i + 3..]),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}{redacted}{}", &rest[at..])
}

/// Redacts every URL in a comma-separated list of server URLs.
pub(crate) fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| redact_url(u.trim()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_redacted() {
        assert_eq!(
            redact_url("redis://:secret@host:6379/0"),
            "redis://:***@host:6379/0"
        );
        assert_eq!(redact_url("nats://u:p@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redact_url("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(
            redact_url("redis://127.0.0.1:6379/0?x=a@b"),
            "redis://127.0.0.1:6379/0?x=a@b"
        );
        assert_eq!(redact_url("127.0.0.1:4222"), "127.0.0.1:4222");
        assert_eq!(
            redact_urls("nats://a:b@h1, nats://h2"),
            "nats://a:***@h1,nats://h2"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_is_capped_and_resets() {
        let mut outage = Outage::new("test", "here");
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = outage.failed("connect", &"refused");
            assert!(last <= MAX_BACKOFF);
        }
        assert!(last >= MAX_BACKOFF / 2, "{last:?}");
        assert!(!outage.wait_step(Duration::from_millis(10)).await);
        outage.recovered();
        assert!(outage.wait_step(Duration::from_millis(10)).await);
        let first = outage.failed("connect", &"refused");
        assert!(first <= INITIAL_BACKOFF, "{first:?}");
    }
}
