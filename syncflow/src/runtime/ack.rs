//! End-to-end acknowledgement: a source batch is acknowledged once every
//! sink confirmed every part of it, and only in read order.

use std::collections::VecDeque;

use tokio::sync::mpsc::UnboundedReceiver;

use super::RunError;
use crate::connector::Acker;

/// A batch read from the source, waiting for its confirmations.
struct Slot<A> {
    remaining: usize,
    ack: Option<A>,
}

/// Tracks batches by sequence number (from 1, in read order) and releases
/// their tokens only over a contiguous prefix of completed batches.
pub(crate) struct AckTracker<A> {
    window: VecDeque<Slot<A>>,
    /// Sequence number of `window[0]`.
    base: u64,
    /// Confirmations expected per part of a batch (one per sink).
    per_part: usize,
}

impl<A> AckTracker<A> {
    pub(crate) fn new(per_part: usize) -> Self {
        AckTracker {
            window: VecDeque::new(),
            base: 1,
            per_part,
        }
    }

    /// Batch `seq` was read and split into `parts` parts (0 for an empty batch).
    pub(crate) fn register(&mut self, seq: u64, parts: usize, ack: A) {
        debug_assert_eq!(seq, self.base + self.window.len() as u64);
        self.window.push_back(Slot {
            remaining: parts * self.per_part,
            ack: Some(ack),
        });
    }

    /// One sink confirmed one part of batch `seq`. Returns `false` if the
    /// batch is not registered yet.
    pub(crate) fn done(&mut self, seq: u64) -> bool {
        let Some(index) = seq.checked_sub(self.base) else {
            return false;
        };
        match self.window.get_mut(index as usize) {
            Some(slot) => {
                slot.remaining = slot.remaining.saturating_sub(1);
                true
            }
            None => false,
        }
    }

    /// The token of the oldest batch, if it and all before it are complete.
    pub(crate) fn pop_ready(&mut self) -> Option<A> {
        if self.window.front()?.remaining > 0 {
            return None;
        }
        let slot = self.window.pop_front()?;
        self.base += 1;
        slot.ack
    }

    /// Batches registered but not yet acknowledged.
    pub(crate) fn in_flight(&self) -> usize {
        self.window.len()
    }
}

/// A registration: (sequence number, number of parts, token).
pub(crate) type Registration<A> = (u64, usize, A);

/// The acknowledgement task: returns the number of batches acknowledged.
pub(crate) async fn ack_loop<K: Acker>(
    mut acker: K,
    source: String,
    mut registered: UnboundedReceiver<Registration<K::Ack>>,
    mut done: UnboundedReceiver<u64>,
    per_part: usize,
) -> Result<u64, RunError> {
    let mut tracker = AckTracker::new(per_part);
    let (mut reg_open, mut done_open) = (true, true);
    let mut acked = 0u64;

    // A confirmation is only sent after its registration (the reader
    // registers a batch before handing it to the workers), so an unknown
    // sequence number means its registration is already queued.
    let on_done = |tracker: &mut AckTracker<K::Ack>,
                   registered: &mut UnboundedReceiver<Registration<K::Ack>>,
                   seq: u64| {
        while !tracker.done(seq) {
            match registered.try_recv() {
                Ok((s, parts, ack)) => tracker.register(s, parts, ack),
                Err(_) => {
                    tracing::error!(
                        seq,
                        "confirmation for a batch that was never registered (syncflow bug)"
                    );
                    break;
                }
            }
        }
    };

    loop {
        tokio::select! {
            biased;
            r = registered.recv(), if reg_open => match r {
                Some((seq, parts, ack)) => tracker.register(seq, parts, ack),
                None => reg_open = false,
            },
            d = done.recv(), if done_open => match d {
                Some(seq) => on_done(&mut tracker, &mut registered, seq),
                None => done_open = false,
            },
            else => break,
        }
        while let Ok((seq, parts, ack)) = registered.try_recv() {
            tracker.register(seq, parts, ack);
        }
        while let Ok(seq) = done.try_recv() {
            on_done(&mut tracker, &mut registered, seq);
        }
        let mut released = 0;
        while let Some(ack) = tracker.pop_ready() {
            acker.ack(ack);
            released += 1;
        }
        if released > 0 {
            acker.commit().await.map_err(|error| RunError::Commit {
                name: source.clone(),
                error,
            })?;
            acked += released;
        }
    }
    if tracker.in_flight() > 0 {
        tracing::debug!(
            source,
            unacknowledged = tracker.in_flight(),
            "batches left unacknowledged; they will be read again on the next run"
        );
    }
    Ok(acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_only_contiguous_completed_batches() {
        let mut t = AckTracker::new(2); // two sinks
        t.register(1, 1, "a");
        t.register(2, 2, "b");
        t.register(3, 0, "c"); // empty batch
        assert_eq!(t.pop_ready(), None);
        // batch 2 completes first: nothing is released before batch 1.
        for _ in 0..4 {
            assert!(t.done(2));
        }
        assert_eq!(t.pop_ready(), None);
        assert!(t.done(1));
        assert_eq!(t.pop_ready(), None);
        assert!(t.done(1));
        assert_eq!(t.pop_ready(), Some("a"));
        assert_eq!(t.pop_ready(), Some("b"));
        assert_eq!(t.pop_ready(), Some("c"));
        assert_eq!(t.pop_ready(), None);
        assert!(!t.done(4), "unregistered batch");
        assert!(!t.done(1), "already released batch");
    }
}
