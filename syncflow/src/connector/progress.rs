//! What a source knows about the work ahead of it: [`SourceProgress`].

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// `total` when the amount of work is not known.
const UNKNOWN: u64 = u64::MAX;

/// A shared handle through which a source reports what it is doing and,
/// when it knows, how much work is left: the rows of a snapshot, the bytes
/// of a file.
///
/// A source makes one, keeps a clone and returns another from
/// [`Source::progress`](super::Source::progress); the runtime hands it to
/// the run's [`Progress`](crate::runtime::Progress), where the command
/// line's progress bar (and anyone else) reads it with
/// [`SourceProgress::status`].
///
/// Updating it costs an atomic add or store: do it once per batch (or per
/// query), not once per record. The phase and its label sit behind a lock,
/// taken only when the phase or the table changes.
///
/// ```
/// use syncflow::connector::{Phase, SourceProgress, Unit};
///
/// let progress = SourceProgress::new();
/// progress.begin(Phase::Snapshot, "shop.orders", Unit::Rows, Some(1_000));
/// progress.advance(400); // after each batch
/// let status = progress.status();
/// assert_eq!((status.done, status.total), (400, Some(1_000)));
/// assert_eq!(status.fraction(), Some(0.4));
///
/// progress.streaming();
/// assert_eq!(progress.status().phase, Phase::Streaming);
/// ```
#[derive(Debug, Clone, Default)]
pub struct SourceProgress {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    done: AtomicU64,
    total: AtomicU64,
    label: Mutex<Label>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            done: AtomicU64::new(0),
            total: AtomicU64::new(UNKNOWN),
            label: Mutex::new(Label::default()),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Label {
    phase: Phase,
    what: Arc<str>,
    unit: Unit,
}

/// What a source is doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Phase {
    /// Nothing reported yet (connecting, opening a snapshot).
    #[default]
    Starting,
    /// Reading the existing rows of database tables before their changes.
    Snapshot,
    /// Reading a bounded input, such as a file, from start to end.
    Backfill,
    /// Following changes or messages as they come: no end, no total.
    Streaming,
}

impl Phase {
    /// `starting`, `snapshot`, `backfill`, `streaming`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Snapshot => "snapshot",
            Phase::Backfill => "backfill",
            Phase::Streaming => "streaming",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What [`SourceStatus::done`] and [`SourceStatus::total`] count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Unit {
    /// Rows or records.
    #[default]
    Rows,
    /// Bytes of input.
    Bytes,
}

/// A reading of a [`SourceProgress`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// What the source is doing.
    pub phase: Phase,
    /// What the work is about: a table (`shop.orders`, with `table 2 of 3`
    /// when a snapshot reads several), a file.
    #[serde(serialize_with = "serialize_str")]
    pub what: Arc<str>,
    /// Work done so far in the phase.
    pub done: u64,
    /// The work the phase expects in all, when the source knows it: exact
    /// for a file, an estimate for a snapshot (corrected as each table
    /// ends, so that it equals `done` when the snapshot ends).
    pub total: Option<u64>,
    /// What `done` and `total` count.
    pub unit: Unit,
}

fn serialize_str<S: serde::Serializer>(s: &Arc<str>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(s)
}

impl SourceStatus {
    /// How much of the work is done, from 0.0 to 1.0, when the total is
    /// known and the phase is bounded (not [`Phase::Streaming`]).
    pub fn fraction(&self) -> Option<f64> {
        if self.phase == Phase::Streaming {
            return None;
        }
        let total = self.total?;
        if total == 0 {
            return Some(1.0);
        }
        Some((self.done as f64 / total as f64).clamp(0.0, 1.0))
    }
}

impl SourceProgress {
    /// A handle in the [`Phase::Starting`] phase.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a bounded phase (a snapshot, a backfill) over `what`: `done`
    /// goes back to zero, `total` is what is expected, if known.
    pub fn begin(&self, phase: Phase, what: impl Into<Arc<str>>, unit: Unit, total: Option<u64>) {
        let shared = &*self.inner;
        // The total first, so that a reader never sees the old phase's
        // `done` against the new total as done work.
        shared.total.store(UNKNOWN, Relaxed);
        {
            let mut label = shared.label.lock().unwrap_or_else(|e| e.into_inner());
            *label = Label {
                phase,
                what: what.into(),
                unit,
            };
        }
        shared.done.store(0, Relaxed);
        self.set_total(total);
    }

    /// Changes what the phase is about (the table a snapshot reads now),
    /// keeping its counts.
    pub fn set_what(&self, what: impl Into<Arc<str>>) {
        let mut label = self.inner.label.lock().unwrap_or_else(|e| e.into_inner());
        label.what = what.into();
    }

    /// Sets the work expected in all (a better estimate, an exact count).
    pub fn set_total(&self, total: Option<u64>) {
        let stored = match total {
            Some(n) => n.min(UNKNOWN - 1),
            None => UNKNOWN,
        };
        self.inner.total.store(stored, Relaxed);
    }

    /// Adds `n` to the work done: call it once per batch.
    #[inline]
    pub fn advance(&self, n: u64) {
        self.inner.done.fetch_add(n, Relaxed);
    }

    /// Sets the work done (for sources that know their position, like a
    /// byte offset).
    #[inline]
    pub fn set_done(&self, n: u64) {
        self.inner.done.store(n, Relaxed);
    }

    /// Enters [`Phase::Streaming`]. `done`, `total` and `what` keep the
    /// figures of the phase before it (the snapshot's rows, if there was
    /// one), for whoever wants to know how the snapshot ended.
    pub fn streaming(&self) {
        let mut label = self.inner.label.lock().unwrap_or_else(|e| e.into_inner());
        label.phase = Phase::Streaming;
    }

    /// The phase and the counts now.
    pub fn status(&self) -> SourceStatus {
        let shared = &*self.inner;
        let label = shared
            .label
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let done = shared.done.load(Relaxed);
        let total = shared.total.load(Relaxed);
        SourceStatus {
            phase: label.phase,
            what: label.what,
            done,
            total: (total != UNKNOWN).then_some(total),
            unit: label.unit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_handle_is_starting_with_nothing_known() {
        let p = SourceProgress::new();
        let s = p.status();
        assert_eq!(s.phase, Phase::Starting);
        assert_eq!((s.done, s.total), (0, None));
        assert_eq!(s.fraction(), None);
    }

    #[test]
    fn begin_resets_the_counts_and_clones_share_them() {
        let p = SourceProgress::new();
        let q = p.clone();
        p.begin(Phase::Backfill, "a.jsonl", Unit::Bytes, Some(10));
        q.set_done(7);
        p.advance(1);
        let s = q.status();
        assert_eq!(
            (s.phase, &*s.what, s.unit),
            (Phase::Backfill, "a.jsonl", Unit::Bytes)
        );
        assert_eq!((s.done, s.total), (8, Some(10)));
        p.begin(Phase::Snapshot, "db.t", Unit::Rows, None);
        let s = q.status();
        assert_eq!((s.done, s.total, s.unit), (0, None, Unit::Rows));
    }

    #[test]
    fn fraction_is_clamped_and_streaming_has_none_but_keeps_the_figures() {
        let p = SourceProgress::new();
        p.begin(Phase::Snapshot, "db.t", Unit::Rows, Some(4));
        p.advance(6);
        assert_eq!(p.status().fraction(), Some(1.0));
        p.set_total(Some(0));
        assert_eq!(p.status().fraction(), Some(1.0));
        p.set_total(Some(6));
        p.streaming();
        let s = p.status();
        assert_eq!(s.phase, Phase::Streaming);
        assert_eq!((s.done, s.total, &*s.what), (6, Some(6), "db.t"));
        assert_eq!(s.fraction(), None);
    }

    #[test]
    fn a_total_of_u64_max_is_not_mistaken_for_unknown() {
        let p = SourceProgress::new();
        p.set_total(Some(u64::MAX));
        assert_eq!(p.status().total, Some(u64::MAX - 1));
    }
}
