//! The `concurrency` policy: at most N calls of a function at once, across
//! every worker of the flow.

use std::num::NonZeroUsize;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A limit on calls in progress at once; clones share the limit.
#[derive(Debug, Clone)]
pub struct Concurrency {
    semaphore: Arc<Semaphore>,
    limit: usize,
}

/// One call's place under a [`Concurrency`] limit, given back when dropped.
#[derive(Debug)]
#[must_use = "the place is given back as soon as the permit is dropped"]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
}

/// The limit was closed (the flow is stopping): no further call may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the concurrency limit is closed because the flow is stopping; no new call can start")]
pub struct Closed;

impl Concurrency {
    /// At most `limit` calls at once.
    pub fn new(limit: NonZeroUsize) -> Self {
        let limit = limit.get().min(Semaphore::MAX_PERMITS);
        Concurrency {
            semaphore: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Calls in progress now.
    pub fn in_use(&self) -> usize {
        self.limit
            .saturating_sub(self.semaphore.available_permits())
    }

    /// Waits for a place (in the order callers asked).
    pub async fn acquire(&self) -> Result<Permit, Closed> {
        self.semaphore
            .clone()
            .acquire_owned()
            .await
            .map(|p| Permit { _permit: p })
            .map_err(|_| Closed)
    }

    /// A place if one is free now.
    pub fn try_acquire(&self) -> Option<Permit> {
        self.semaphore
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| Permit { _permit: p })
    }

    /// Wakes every waiter with [`Closed`] and refuses new calls; calls
    /// holding a permit finish normally.
    pub fn close(&self) {
        self.semaphore.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn limit(n: usize) -> Concurrency {
        Concurrency::new(NonZeroUsize::new(n).expect("test limit is positive"))
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_limit_at_once() {
        let c = limit(3);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (c, running, peak) = (c.clone(), running.clone(), peak.clone());
                tokio::spawn(async move {
                    let _p = c.acquire().await.expect("open");
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(c.in_use(), 0);
    }

    #[tokio::test]
    async fn try_acquire_and_close() {
        let c = limit(1);
        let held = c.try_acquire().expect("free");
        assert_eq!(c.in_use(), 1);
        assert!(c.try_acquire().is_none());
        drop(held);
        assert!(c.try_acquire().is_some());
        c.close();
        assert_eq!(c.acquire().await.err(), Some(Closed));
    }
}
