//! Reconnection bookkeeping shared by the network connectors: a capped
//! exponential backoff with jitter between attempts, one warning per outage
//! (not one per attempt), and URLs shown without their passwords.

// Each connector uses a part: with only some of them built, the rest is unused.
#![cfg_attr(
    not(all(feature = "amqp", feature = "mqtt", feature = "http")),
    allow(dead_code)
)]

use std::fmt;
use std::time::{Duration, Instant};

use crate::policy::{Jitter, Retry};

/// The first pause after a failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between attempts, unless a connector's config says otherwise.
pub(crate) const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The state of one connection: up, or down since a failure.
#[derive(Debug)]
pub(crate) struct Outage {
    connector: &'static str,
    target: String,
    retry: Retry,
    rng: fastrand::Rng,
    /// Failures in a row (0 while up).
    failures: u32,
    since: Option<Instant>,
}

impl Outage {
    /// A connection to `target` (shown in logs; never with a password),
    /// retried at most `max_backoff` apart.
    pub(crate) fn new(connector: &'static str, target: String, max_backoff: Duration) -> Self {
        Outage {
            connector,
            target,
            retry: Retry::new(u32::MAX)
                .with_initial_backoff(FIRST_BACKOFF.min(max_backoff))
                .with_max_backoff(max_backoff)
                .with_jitter(Jitter::EQUAL),
            rng: fastrand::Rng::new(),
            failures: 0,
            since: None,
        }
    }

    /// Records a failure: logs a warning at the first failure of an outage
    /// (later ones at debug level) and returns the pause before the next
    /// attempt.
    pub(crate) fn failed(&mut self, action: &str, error: &dyn fmt::Display) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let delay = self.retry.delay(self.failures, &mut self.rng);
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(
                connector = self.connector,
                target = %self.target,
                %error,
                "cannot {action}; reconnecting with backoff (nothing is lost: unacknowledged messages are delivered again)"
            );
        } else {
            tracing::debug!(
                connector = self.connector,
                target = %self.target,
                %error,
                attempt = self.failures,
                retry_in = ?delay,
                "still cannot {action}"
            );
        }
        delay
    }

    /// Records a working connection; logs the end of an outage.
    pub(crate) fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                connector = self.connector,
                target = %self.target,
                down_for = ?since.elapsed(),
                attempts = self.failures,
                "reconnected"
            );
        }
        self.failures = 0;
    }
}

/// A URL with its password replaced by `***`: `amqp://user:***@host/vhost`.
pub(crate) fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact("amqp://u:p@ss@host?x=@"),
            "amqp://u:***@host?x=@",
            "the last @ of the authority ends the user info"
        );
        assert_eq!(redact("amqp://host:5672"), "amqp://host:5672");
        assert_eq!(redact("amqp://user@host"), "amqp://user@host");
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        let mut outage = Outage::new("test", "here".into(), Duration::from_secs(1));
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = outage.failed("connect", &"refused");
            assert!(last <= Duration::from_secs(1));
        }
        assert!(last >= Duration::from_millis(500), "{last:?}");
        outage.recovered();
        assert!(outage.failed("connect", &"refused") <= FIRST_BACKOFF);
    }
}
