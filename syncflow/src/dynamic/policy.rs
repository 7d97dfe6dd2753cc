//! Applying a step's policies (retry, timeout, rate limit, concurrency) in
//! a run-time flow.
//!
//! A flow with such a step runs on its async path: waiting (backoff, rate
//! limit, a free slot) must not block the worker's thread. Each attempt
//! gets its own copy of the input (the type must be `Clone` for a retry),
//! waits for the rate limiter and a concurrency permit, and runs under the
//! timeout. What the policies did is counted in [`PolicyStats`].

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::context::Context;
use crate::policy::{
    Concurrency, PolicyCounts, PolicyStats, RateLimiter, Retry, TimedOut, with_timeout,
};
use crate::registry::{BoxedSlot, CloneFn, ErasedError, ErasedStep};

/// The policies of one step, ready to apply.
pub struct Applied {
    retry: Option<Retry>,
    timeout: Option<Duration>,
    rate: Option<RateLimiter>,
    concurrency: Option<Concurrency>,
    clone: Option<CloneFn>,
    stats: Arc<PolicyStats>,
}

impl std::fmt::Debug for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applied")
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("rate_limited", &self.rate.is_some())
            .field(
                "concurrency",
                &self.concurrency.as_ref().map(Concurrency::limit),
            )
            .finish()
    }
}

/// A policy that cannot be applied to this step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`retry` of `{step}` needs to call it again with the same input, but `{ty}` is not `Clone`: derive `Clone` for it, or remove the retry"
)]
pub struct NotCloneable {
    /// The step.
    pub step: String,
    /// Its input type.
    pub ty: String,
}

impl Applied {
    /// The step's policies; `None` when none of them acts at run time.
    /// `input` is the step's input type (copied for each retry).
    pub fn new(
        step: &str,
        policy: &crate::policy::Policy,
        input: &crate::registry::TypeCodec,
    ) -> Result<Option<Applied>, NotCloneable> {
        let retry = policy.retry.clone().filter(|r| r.attempts() > 1);
        if retry.is_none()
            && policy.timeout.is_none()
            && policy.rate_limit.is_none()
            && policy.concurrency.is_none()
        {
            return Ok(None);
        }
        if retry.is_some() && input.clone.is_none() {
            return Err(NotCloneable {
                step: step.to_string(),
                ty: input.name.to_string(),
            });
        }
        Ok(Some(Applied {
            retry,
            timeout: policy.timeout,
            rate: policy.rate_limit.map(RateLimiter::new),
            concurrency: policy.concurrency.map(Concurrency::new),
            clone: input.clone,
            stats: Arc::new(PolicyStats::new()),
        }))
    }

    /// What the policies did so far.
    pub fn stats(&self) -> Arc<PolicyStats> {
        self.stats.clone()
    }

    /// Calls `step` with the message in `slot` under the policies.
    pub(crate) async fn call(
        &self,
        step: &dyn ErasedStep,
        cx: &Context,
        slot: &mut (dyn Any + Send),
    ) -> Result<Vec<BoxedSlot>, ErasedError> {
        let attempts = self.retry.as_ref().map_or(1, Retry::attempts).max(1);
        let mut rng = fastrand::Rng::new();
        let mut attempt = 1;
        loop {
            // A copy for this attempt while another may follow; the last
            // attempt takes the message itself.
            let mut copy: Option<BoxedSlot> = match (attempt < attempts, self.clone) {
                (true, Some(clone)) => clone(&*slot),
                _ => None,
            };
            if let Some(rate) = &self.rate {
                let waited = rate.acquire(1).await;
                self.stats.record_rate_wait(waited);
            }
            let _permit = match &self.concurrency {
                Some(limit) => Some(
                    limit
                        .acquire()
                        .await
                        .map_err(|e| Box::new(e) as ErasedError)?,
                ),
                None => None,
            };
            // The call takes its input out of the slot before it is polled.
            let call = match copy.as_mut() {
                Some(copy) => step.call_async(cx, &mut **copy),
                None => step.call_async(cx, &mut *slot),
            };
            let result = match self.timeout {
                Some(limit) => match with_timeout(limit, call).await {
                    Ok(result) => result,
                    Err(timed_out) => {
                        self.stats.record_timeout();
                        Err(Box::new(TimedOutIn {
                            step: step.info().name,
                            inner: timed_out,
                        }) as ErasedError)
                    }
                },
                None => call.await,
            };
            match result {
                Ok(outputs) => return Ok(outputs),
                Err(error) if attempt < attempts => {
                    self.stats.record_retry();
                    let delay = self
                        .retry
                        .as_ref()
                        .map_or(Duration::ZERO, |r| r.delay(attempt, &mut rng));
                    tracing::debug!(
                        step = step.info().name,
                        attempt,
                        attempts,
                        %error,
                        delay_ms = delay.as_millis() as u64,
                        "step failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(error) => {
                    if attempts > 1 {
                        self.stats.record_gave_up();
                        return Err(Box::new(format!("{error} (after {attempts} attempts)")));
                    }
                    return Err(error);
                }
            }
        }
    }
}

/// A step ran out of time.
#[derive(Debug)]
struct TimedOutIn {
    step: &'static str,
    inner: TimedOut,
}

impl std::fmt::Display for TimedOutIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step `{}` {}", self.step, self.inner)
    }
}

/// The policy counters of each step of a flow that has some.
pub type StepPolicyStats = Vec<(&'static str, Arc<PolicyStats>)>;

/// A snapshot of [`StepPolicyStats`].
pub fn snapshot(stats: &StepPolicyStats) -> Vec<(&'static str, PolicyCounts)> {
    stats
        .iter()
        .map(|(name, s)| (*name, s.snapshot()))
        .collect()
}
