//! Reading a run's counters while it runs: [`Progress`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tokio::sync::Notify;

use super::tasks::Counters;
use crate::connector::{SourceProgress, SourceStatus};

/// A handle on the live counters of one run: what it has read, emitted,
/// filtered, failed on so far, and what its source reports of its work
/// ([`Progress::source`]: a snapshot's rows, a file's bytes).
///
/// Make one, give it to [`Runtime::progress`](super::Runtime::progress),
/// keep a clone and read it with [`Progress::counts`] from anywhere (an
/// admin endpoint, a progress bar) while the run goes on. A handle follows
/// one run: give each run its own.
///
/// ```
/// use syncflow::runtime::Progress;
///
/// let progress = Progress::new();
/// assert!(!progress.is_started());
/// assert_eq!(progress.counts().input, 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Progress {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counters: OnceLock<Attached>,
    started: Notify,
}

#[derive(Debug)]
struct Attached {
    counters: Arc<Counters>,
    source: Option<SourceProgress>,
}

impl Progress {
    /// A handle not attached to a run yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches the run's counters and its source's progress handle: the
    /// run has set up its source, sinks and workers and starts reading.
    pub(crate) fn attach(&self, counters: Arc<Counters>, source: Option<SourceProgress>) {
        if self
            .inner
            .counters
            .set(Attached { counters, source })
            .is_ok()
        {
            self.inner.started.notify_waiters();
        } else {
            tracing::warn!(
                "one `Progress` handle was given to two runs; it follows the first only (give each run its own)"
            );
        }
    }

    /// Whether the run got past its setup and started reading.
    pub fn is_started(&self) -> bool {
        self.inner.counters.get().is_some()
    }

    /// Waits until the run started reading (forever if it never does: wait
    /// for the run's end as well).
    pub async fn started(&self) {
        loop {
            let notified = self.inner.started.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_started() {
                return;
            }
            notified.await;
        }
    }

    /// The counters so far (all zero before the run started).
    pub fn counts(&self) -> Counts {
        let Some(Attached { counters: c, .. }) = self.inner.counters.get() else {
            return Counts::default();
        };
        Counts {
            input: c.input.load(Relaxed),
            output: c.output.load(Relaxed),
            filtered: c.filtered.load(Relaxed),
            failed: c.failed.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
            dead_lettered: c.dead_lettered.load(Relaxed),
        }
    }

    /// What the run's source reports about its work (phase, rows or bytes
    /// done, the total when known: see [`SourceProgress`]); `None` before
    /// the run started or when the source reports nothing (a stream).
    pub fn source(&self) -> Option<SourceStatus> {
        self.inner
            .counters
            .get()
            .and_then(|a| a.source.as_ref())
            .map(SourceProgress::status)
    }
}

/// Counters of a run (or of several runs, added up); the same meaning as
/// the fields of [`RunSummary`](super::RunSummary).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Records read from the source (malformed ones included).
    pub input: u64,
    /// Messages emitted by the flow.
    pub output: u64,
    /// Input messages that produced no output and no failure.
    pub filtered: u64,
    /// Input messages for which a step failed.
    pub failed: u64,
    /// Records that could not be decoded.
    pub malformed: u64,
    /// Entries written to the dead-letter output.
    pub dead_lettered: u64,
}

impl Counts {
    /// The counters of a finished run.
    pub fn of(summary: &super::RunSummary) -> Self {
        Counts {
            input: summary.input,
            output: summary.output,
            filtered: summary.filtered,
            failed: summary.failed,
            malformed: summary.malformed,
            dead_lettered: summary.dead_lettered,
        }
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;

    fn add(self, o: Counts) -> Counts {
        Counts {
            input: self.input + o.input,
            output: self.output + o.output,
            filtered: self.filtered + o.filtered,
            failed: self.failed + o.failed,
            malformed: self.malformed + o.malformed,
            dead_lettered: self.dead_lettered + o.dead_lettered,
        }
    }
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        *self = *self + o;
    }
}
