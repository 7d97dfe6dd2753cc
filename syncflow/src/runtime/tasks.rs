//! The tasks of a run: one reader, N workers, one task per sink, one acker.
//!
//! ```text
//!  reader ──batch──▶ worker i ──Arc<outputs>──▶ sink k ──seq──▶ acker
//!    │  (split by key hash)                                     ▲
//!    └──────────────── registration (seq, parts, token) ───────┘
//! ```
//!
//! Only batches travel between tasks. Buffers are recycled: emptied input
//! batches go back to the reader, output batches back to their worker.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{self, Receiver, Sender, UnboundedSender, error::TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::RunError;
use super::ack::Registration;
use crate::connector::{Batch, Read, Sink, Source};
use crate::flow::{Emit, FlowDef, StepFailure, Worker};
use crate::monitor::Monitor;

/// Sink batches written without a flush before the sink is flushed anyway.
const MAX_UNFLUSHED: usize = 16;

/// One message that could not go through, as written to the dead-letter output.
///
/// One JSON object per line, e.g.
/// `{"source":"in.jsonl","position":3,"stage":"decode","error":"expected value at line 1 column 1","input":"{oops"}`
/// or, for a step failure,
/// `{"source":"in.jsonl","position":7,"stage":"validate","step_index":1,"error":"amount must be positive","input":"{\"id\":7,\"cents\":-5}"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The source's name (for files, the path).
    pub source: String,
    /// The message's position in the source (for files, the line number from 1).
    pub position: u64,
    /// `"decode"` when the input could not be decoded, else the name of the
    /// step that failed.
    pub stage: String,
    /// The failed step's position in the flow (from 0); absent for `"decode"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_index: Option<usize>,
    /// The error, as text.
    pub error: String,
    /// The raw input record (lossy UTF-8), as read from the source.
    pub input: String,
}

/// Totals of a run, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) input: AtomicU64,
    pub(crate) output: AtomicU64,
    pub(crate) filtered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) per_worker: Vec<AtomicU64>,
}

impl Counters {
    pub(crate) fn new(workers: usize) -> Self {
        Counters {
            input: AtomicU64::new(0),
            output: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            per_worker: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// A worker's share of one source batch.
pub(crate) struct Part<T> {
    pub(crate) seq: u64,
    pub(crate) batch: Batch<T>,
}

/// What a worker made of one part, shared by every sink task.
pub(crate) struct OutBatch<O> {
    pub(crate) seq: u64,
    pub(crate) worker: usize,
    pub(crate) outputs: Vec<O>,
    pub(crate) dead: Vec<DeadLetter>,
}

pub(crate) type KeyFn<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

/// Hashes a key with a fixed hasher: the same key goes to the same worker,
/// in every run.
pub(crate) fn key_fn<T, K: Hash>(key: impl Fn(&T) -> K + Send + Sync + 'static) -> KeyFn<T> {
    Arc::new(move |item| {
        let mut hasher = DefaultHasher::new();
        key(item).hash(&mut hasher);
        hasher.finish()
    })
}

pub(crate) struct ReaderSetup<S: Source> {
    pub(crate) source: S,
    pub(crate) workers: Vec<Sender<Part<S::Item>>>,
    pub(crate) registered: UnboundedSender<Registration<S::Ack>>,
    pub(crate) pool: Receiver<Batch<S::Item>>,
    pub(crate) stop: CancellationToken,
    pub(crate) key: Option<KeyFn<S::Item>>,
    pub(crate) batch_size: usize,
    pub(crate) counters: Arc<Counters>,
}

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The source reported the end of its input.
    EndOfInput,
    /// A shutdown was requested (signal or [`Shutdown`](super::Shutdown) handle).
    Shutdown,
    /// Another task failed (the run returns that error instead).
    Failed,
}

pub(crate) async fn read_loop<S: Source>(setup: ReaderSetup<S>) -> Result<StopReason, RunError> {
    let ReaderSetup {
        mut source,
        workers,
        registered,
        mut pool,
        stop,
        key,
        batch_size,
        counters,
    } = setup;
    let name = source.name();
    let n = workers.len();
    let mut batch = Batch::with_capacity(batch_size);
    let mut parts: Vec<Option<Batch<S::Item>>> = (0..n).map(|_| None).collect();
    let mut seq = 0u64;
    loop {
        if stop.is_cancelled() {
            return Ok(StopReason::Shutdown);
        }
        batch.clear();
        let ack = match source.read(&mut batch, batch_size).await {
            Ok(Read::Batch(ack)) => ack,
            Ok(Read::Idle) => continue,
            Ok(Read::End) => return Ok(StopReason::EndOfInput),
            Err(error) => {
                return Err(RunError::Source {
                    name: name.to_string(),
                    error,
                });
            }
        };
        seq += 1;
        counters.input.fetch_add(batch.len() as u64, Relaxed);
        tracing::debug!(source = %name, seq, records = batch.len(), "read batch");

        let key = match &key {
            Some(key) if n > 1 => key,
            _ => {
                // One worker, or no key: the whole batch goes to one worker
                // (round robin over batches).
                let worker = (seq % n as u64) as usize;
                let parts = usize::from(!batch.is_empty());
                if registered.send((seq, parts, ack)).is_err() {
                    return Ok(StopReason::Failed);
                }
                if parts == 0 {
                    continue;
                }
                let fresh = pool
                    .try_recv()
                    .unwrap_or_else(|_| Batch::with_capacity(batch_size));
                let full = std::mem::replace(&mut batch, fresh);
                if workers[worker]
                    .send(Part { seq, batch: full })
                    .await
                    .is_err()
                {
                    return Ok(StopReason::Failed);
                }
                // Let the worker just woken start on this thread while
                // another thread takes over the reader: without this, tokio
                // keeps the woken worker in this thread's LIFO slot (where
                // no other thread can steal it) until the reader yields, and
                // the two run one after the other instead of side by side.
                tokio::task::yield_now().await;
                continue;
            }
        };

        // Split by key hash; records that could not be decoded have no key
        // and are spread by position.
        let Batch { records, raw } = &mut batch;
        for record in records.drain(..) {
            let worker = match &record.payload {
                Ok(item) => (key(item) % n as u64) as usize,
                Err(_) => (record.position % n as u64) as usize,
            };
            let part = parts[worker].get_or_insert_with(|| {
                pool.try_recv()
                    .unwrap_or_else(|_| Batch::with_capacity(batch_size / n + 1))
            });
            part.push(
                record.position,
                raw.get(record.raw.clone()).unwrap_or(&[]),
                record.payload,
            );
        }
        let count = parts.iter().filter(|p| p.is_some()).count();
        if registered.send((seq, count, ack)).is_err() {
            return Ok(StopReason::Failed);
        }
        for (worker, part) in parts.iter_mut().enumerate() {
            if let Some(part) = part.take()
                && workers[worker]
                    .send(Part { seq, batch: part })
                    .await
                    .is_err()
            {
                return Ok(StopReason::Failed);
            }
        }
        tokio::task::yield_now().await;
    }
}

/// Collects a message's outputs and failures into the worker's output batch.
struct BatchEmit<'a, O> {
    outputs: &'a mut Vec<O>,
    dead: Option<&'a mut Vec<DeadLetter>>,
    source: &'a str,
    position: u64,
    raw: &'a [u8],
    failures: usize,
}

impl<O: Send> Emit<O> for BatchEmit<'_, O> {
    #[inline]
    fn emit(&mut self, item: O) {
        self.outputs.push(item);
    }

    fn fail(&mut self, failure: StepFailure<'_>) {
        let raw = self.raw;
        self.fail_batch(failure, raw);
    }

    fn fail_batch(&mut self, failure: StepFailure<'_>, inputs: &[u8]) {
        self.failures += 1;
        let error = failure.error.to_string();
        tracing::warn!(
            source = self.source,
            position = self.position,
            step = failure.step.info.name,
            step_index = failure.step.index,
            %error,
            "step failed; message dead-lettered"
        );
        if let Some(dead) = self.dead.as_deref_mut() {
            dead.push(DeadLetter {
                source: self.source.to_string(),
                position: self.position,
                stage: failure.step.info.name.to_string(),
                step_index: Some(failure.step.index),
                error,
                input: String::from_utf8_lossy(inputs).into_owned(),
            });
        }
    }
}

pub(crate) struct WorkerSetup<F: FlowDef, M> {
    pub(crate) worker: Worker<F, M>,
    pub(crate) index: usize,
    pub(crate) flow: &'static str,
    pub(crate) source: Arc<str>,
    pub(crate) input: Receiver<Part<F::Input>>,
    pub(crate) sinks: Vec<Sender<Arc<OutBatch<F::Output>>>>,
    pub(crate) pool: Sender<Batch<F::Input>>,
    pub(crate) recycled: Receiver<OutBatch<F::Output>>,
    pub(crate) dead_letters: bool,
    pub(crate) counters: Arc<Counters>,
}

#[derive(Default)]
struct Tally {
    output: u64,
    filtered: u64,
    failed: u64,
    malformed: u64,
}

pub(crate) async fn work_loop<F: FlowDef, M: Monitor>(
    setup: WorkerSetup<F, M>,
) -> Result<(), RunError>
where
    F::Output: Sync + 'static,
    F::Input: 'static,
{
    let WorkerSetup {
        mut worker,
        index,
        flow,
        source,
        mut input,
        sinks,
        pool,
        mut recycled,
        dead_letters,
        counters,
    } = setup;
    while let Some(Part { seq, mut batch }) = input.recv().await {
        let mut out = recycled.try_recv().unwrap_or_else(|_| OutBatch {
            seq,
            worker: index,
            outputs: Vec::with_capacity(batch.len()),
            dead: Vec::new(),
        });
        out.seq = seq;
        let records = batch.len() as u64;
        let span = tracing::debug_span!("batch", flow, worker = index, seq, records);
        let tally = process_part(&mut worker, &mut batch, &mut out, &source, dead_letters)
            .instrument(span)
            .await;
        worker.flush();
        counters.output.fetch_add(tally.output, Relaxed);
        counters.filtered.fetch_add(tally.filtered, Relaxed);
        counters.failed.fetch_add(tally.failed, Relaxed);
        counters.malformed.fetch_add(tally.malformed, Relaxed);
        if let Some(count) = counters.per_worker.get(index) {
            count.fetch_add(records, Relaxed);
        }
        batch.clear();
        let _ = pool.try_send(batch);

        // The last sink gets the worker's own reference, so that whichever
        // sink finishes last can hand the buffers back for reuse.
        let mut out = Some(Arc::new(out));
        for (i, sink) in sinks.iter().enumerate() {
            let Some(shared) = (if i + 1 == sinks.len() {
                out.take()
            } else {
                out.clone()
            }) else {
                break;
            };
            if sink.send(shared).await.is_err() {
                // A sink stopped: its error is the run's error.
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn process_part<F: FlowDef, M: Monitor>(
    worker: &mut Worker<F, M>,
    batch: &mut Batch<F::Input>,
    out: &mut OutBatch<F::Output>,
    source: &str,
    dead_letters: bool,
) -> Tally {
    let mut tally = Tally::default();
    let Batch { records, raw } = batch;
    let last_position = records.last().map_or(0, |r| r.position);
    for record in records.drain(..) {
        let raw = raw.get(record.raw.clone()).unwrap_or(&[]);
        match record.payload {
            Ok(item) => {
                let before = out.outputs.len();
                let mut emit = BatchEmit {
                    outputs: &mut out.outputs,
                    dead: dead_letters.then_some(&mut out.dead),
                    source,
                    position: record.position,
                    raw,
                    failures: 0,
                };
                if let Some(pending) = worker.start(record.position, item, &mut emit) {
                    pending.await;
                }
                let failures = emit.failures;
                let emitted = out.outputs.len() - before;
                tally.output += emitted as u64;
                if failures > 0 {
                    tally.failed += 1;
                } else if emitted == 0 {
                    tally.filtered += 1;
                }
            }
            Err(error) => {
                tally.malformed += 1;
                tracing::warn!(
                    source,
                    position = record.position,
                    %error,
                    "malformed input; record dead-lettered"
                );
                if dead_letters {
                    out.dead.push(DeadLetter {
                        source: source.to_string(),
                        position: record.position,
                        stage: "decode".to_string(),
                        step_index: None,
                        error: error.to_string(),
                        input: String::from_utf8_lossy(raw).into_owned(),
                    });
                }
            }
        }
    }
    // What batched steps still hold runs now, before the outputs go to the
    // sinks: the batch's acknowledgement covers it.
    let before = out.outputs.len();
    let mut emit = BatchEmit {
        outputs: &mut out.outputs,
        dead: dead_letters.then_some(&mut out.dead),
        source,
        position: last_position,
        raw: &[],
        failures: 0,
    };
    worker.end_batch(&mut emit).await;
    tally.failed += emit.failures as u64;
    tally.output += (out.outputs.len() - before) as u64;
    tally
}

/// How a sink task reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SinkRole {
    Output,
    DeadLetter,
}

pub(crate) struct SinkWiring<O> {
    pub(crate) input: Receiver<Arc<OutBatch<O>>>,
    pub(crate) done: UnboundedSender<u64>,
    pub(crate) recycle: Arc<[Sender<OutBatch<O>>]>,
    pub(crate) counters: Arc<Counters>,
}

pub(crate) async fn sink_loop<O, T, K>(
    mut sink: K,
    name: String,
    role: SinkRole,
    wiring: SinkWiring<O>,
    pick: fn(&OutBatch<O>) -> &[T],
) -> Result<(), RunError>
where
    O: Send + Sync + 'static,
    T: Sync,
    K: Sink<T>,
{
    let SinkWiring {
        mut input,
        done,
        recycle,
        counters,
    } = wiring;
    let fail = |error| match role {
        SinkRole::Output => RunError::Sink {
            name: name.clone(),
            error,
        },
        SinkRole::DeadLetter => RunError::DeadLetter {
            name: name.clone(),
            error,
        },
    };
    let mut unconfirmed = Unconfirmed {
        pending: Vec::with_capacity(MAX_UNFLUSHED),
        unflushed: 0,
        done,
        role,
        counters,
    };
    loop {
        let next = if unconfirmed.pending.is_empty() {
            input.recv().await
        } else {
            match input.try_recv() {
                Ok(batch) => Some(batch),
                Err(TryRecvError::Empty) => {
                    unconfirmed.confirm(&mut sink).await.map_err(fail)?;
                    continue;
                }
                Err(TryRecvError::Disconnected) => None,
            }
        };
        let Some(batch) = next else { break };
        let items = pick(&batch);
        if !items.is_empty() {
            sink.write(items).await.map_err(fail)?;
            unconfirmed.unflushed += items.len() as u64;
        }
        unconfirmed.pending.push(batch.seq);
        if let Some(mut batch) = Arc::into_inner(batch) {
            batch.outputs.clear();
            batch.dead.clear();
            if let Some(back) = recycle.get(batch.worker) {
                let _ = back.try_send(batch);
            }
        }
        if unconfirmed.pending.len() >= MAX_UNFLUSHED {
            unconfirmed.confirm(&mut sink).await.map_err(fail)?;
        }
    }
    if !unconfirmed.pending.is_empty() {
        unconfirmed.confirm(&mut sink).await.map_err(fail)?;
    }
    Ok(())
}

/// What a sink task has written but not yet confirmed.
struct Unconfirmed {
    /// Sequence numbers of the batches written since the last confirmation.
    pending: Vec<u64>,
    /// Items written since the last flush.
    unflushed: u64,
    done: UnboundedSender<u64>,
    role: SinkRole,
    counters: Arc<Counters>,
}

impl Unconfirmed {
    /// Flushes what was written (if anything), then confirms the batches.
    async fn confirm<T: Sync, K: Sink<T>>(
        &mut self,
        sink: &mut K,
    ) -> Result<(), crate::connector::ConnectorError> {
        if self.unflushed > 0 {
            Sink::<T>::flush(sink).await?;
            if self.role == SinkRole::DeadLetter {
                self.counters
                    .dead_lettered
                    .fetch_add(self.unflushed, Relaxed);
            }
            self.unflushed = 0;
        }
        for seq in self.pending.drain(..) {
            // If the acknowledgement task is gone, the run is failing already.
            let _ = self.done.send(seq);
        }
        Ok(())
    }
}

pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    mpsc::channel(capacity.max(1))
}
