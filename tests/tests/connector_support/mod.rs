//! Helpers shared by the broker and HTTP connector tests: a sink that
//! collects (or refuses) what it gets, runs in the background, and waiting
//! for a condition with a deadline.

#![allow(dead_code)] // each test file uses its own part of it

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use syncflow::connector::{ConnectorError, Sink};
use tokio::sync::Semaphore;

/// A sink that keeps every item it is given (shared with the test), or
/// refuses every write.
#[derive(Clone)]
pub struct Collect<T> {
    pub items: Arc<Mutex<Vec<T>>>,
    pub fail: bool,
    /// When set, each flush takes a permit first (tests hold the sink back).
    pub gate: Option<Arc<Semaphore>>,
    /// Pause of each flush (a slow server).
    pub delay: Duration,
}

impl<T> Collect<T> {
    pub fn new() -> Self {
        Collect {
            items: Arc::new(Mutex::new(Vec::new())),
            fail: false,
            gate: None,
            delay: Duration::ZERO,
        }
    }

    pub fn failing() -> Self {
        Collect {
            fail: true,
            ..Self::new()
        }
    }

    pub fn gated(gate: Arc<Semaphore>) -> Self {
        Collect {
            gate: Some(gate),
            ..Self::new()
        }
    }

    pub fn slow(delay: Duration) -> Self {
        Collect {
            delay,
            ..Self::new()
        }
    }

    pub fn len(&self) -> usize {
        self.items.lock().unwrap().len()
    }
}

impl<T: Clone> Collect<T> {
    pub fn snapshot(&self) -> Vec<T> {
        self.items.lock().unwrap().clone()
    }
}

impl<T: Clone + Send + Sync + 'static> Sink<T> for Collect<T> {
    fn name(&self) -> String {
        "collect".into()
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        if self.fail {
            return Err(ConnectorError::server(
                "test",
                "collect",
                "write",
                "refused on purpose",
                "",
            ));
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.items.lock().unwrap().extend_from_slice(items);
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        Ok(())
    }
}

/// Waits until `cond` holds, checking every 20 ms; panics with `what` after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the async `cond` holds, checking every 50 ms.
pub async fn wait_for_async<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sorted and deduplicated: what arrived at least once.
pub fn distinct<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    v
}
