//! Driving a flow: from a source, through the flow's workers, to its sinks.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use syncflow::prelude::*;
//!
//! #[derive(Deserialize)]
//! struct Order { id: u64, customer: u32, cents: i64 }
//! #[derive(Serialize)]
//! struct Charge { id: u64, customer: u32, euros: f64 }
//!
//! /// Turns an order into a charge; refuses negative amounts.
//! #[sync_function]
//! fn charge(o: Order) -> Result<Charge, String> {
//!     if o.cents < 0 {
//!         return Err(format!("negative amount {}", o.cents));
//!     }
//!     Ok(Charge { id: o.id, customer: o.customer, euros: o.cents as f64 / 100.0 })
//! }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let summary = Runtime::new(flow!(name = "charges", charge))
//!     .source(JsonLinesSource::open("orders.jsonl")?.state_dir(".syncflow")?)
//!     .sink(JsonLinesSink::append("charges.jsonl")?)
//!     .dead_letter("charges.dead.jsonl")
//!     .workers(4)
//!     .key(|o: &Order| o.customer) // same customer, same worker: order kept per customer
//!     .run()
//!     .await?;
//! eprintln!("{summary}");
//! # Ok(()) }
//! ```
//!
//! # How a run works
//!
//! - One task reads **batches** from the source ([`Runtime::batch_size`]
//!   records each) and splits each batch by the hash of [`Runtime::key`]
//!   across the workers, so messages with the same key are processed by the
//!   same worker, in source order. Without a key, whole batches go to the
//!   workers in turn (no ordering across batches when `workers > 1`).
//! - Each worker runs every message of its part through the flow's fused
//!   step chain, collecting outputs into a reused buffer: no channel hop,
//!   no allocation and no span per message; one debug span per batch.
//! - Each sink runs in its own task and gets every output batch. It flushes
//!   when its queue runs dry or every few batches, then confirms.
//! - A source batch is acknowledged once every sink confirmed every part of
//!   it, and the source's position is committed only over a contiguous run of
//!   acknowledged batches: after a crash, nothing confirmed is lost and
//!   nothing before the checkpoint is read again.
//! - Queues between tasks are bounded ([`Runtime::queue_depth`]): a slow sink
//!   slows the reader down, memory stays flat.
//! - Bad input never stops the flow: a record that cannot be decoded, or a
//!   message for which a step fails, is counted, logged (`warn`) and written
//!   to the dead-letter output ([`Runtime::dead_letter`]) with its position
//!   and raw input. A failure to *write* a dead letter stops the run.
//! - Ctrl-C or SIGTERM (and [`Shutdown::shutdown`]) stop reading; the batches
//!   already read are finished, sinks flushed and the position committed, and
//!   `run` returns the summary. A second signal aborts at once.

mod ack;
mod progress;
mod shutdown;
mod summary;
mod tasks;

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::connector::{ConnectorError, Discard, JsonLinesSink, Sink, Source};
use crate::flow::{CheckError, Flow, FlowDef};
use crate::monitor::Monitor;

pub use progress::{Counts, Progress};
pub use shutdown::Shutdown;
pub(crate) use shutdown::next_signal;
pub use summary::RunSummary;
pub use tasks::{DeadLetter, StopReason};

use tasks::{Counters, OutBatch, SinkRole, SinkWiring};
pub(crate) use tasks::{KeyFn, key_fn};

type TaskFuture = Pin<Box<dyn Future<Output = Result<(), RunError>> + Send>>;
type SinkSpawn<O> = Box<dyn FnOnce(SinkWiring<O>) -> TaskFuture + Send>;

struct SinkEntry<O> {
    name: String,
    spawn: SinkSpawn<O>,
}

enum DeadLetterTarget<O> {
    None,
    Path(PathBuf),
    Sink(SinkEntry<O>),
}

/// Records per source batch unless [`Runtime::batch_size`] says otherwise:
/// large enough that hand-overs between tasks and sink flushes are rare,
/// small enough that a batch of ~200-byte records stays around a megabyte.
pub const DEFAULT_BATCH_SIZE: usize = 4096;

/// The runtime has no source yet: call [`Runtime::source`].
#[derive(Debug, Clone, Copy)]
pub struct NoSource;

/// Runs a [`Flow`] from a [`Source`] to one or more [`Sink`]s.
///
/// Built step by step: [`Runtime::new`], then [`Runtime::source`] (required),
/// [`Runtime::sink`] (any number; without one, outputs are counted and
/// dropped), and options; [`Runtime::run`] drives it to the end of the input
/// or to a shutdown. The flow's output type must be `Sync`: every sink
/// reads the same output batch.
///
/// ```
/// use syncflow::prelude::*;
///
/// /// Doubles a number.
/// #[sync_function]
/// fn double(n: i64) -> i64 { n * 2 }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let (input, output) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
/// std::fs::write(&input, "1\n2\n3\n")?;
///
/// let summary = tokio::runtime::Runtime::new()?.block_on(
///     Runtime::new(flow!(double))
///         .source(JsonLinesSource::open(&input)?)
///         .sink(JsonLinesSink::create(&output)?)
///         .handle_signals(false)
///         .run(),
/// )?;
/// assert_eq!(std::fs::read_to_string(&output)?, "2\n4\n6\n");
/// assert_eq!((summary.input, summary.output), (3, 3));
/// # Ok(()) }
/// ```
pub struct Runtime<F: FlowDef, M, S = NoSource> {
    flow: Flow<F, M>,
    source: S,
    sinks: Vec<SinkEntry<F::Output>>,
    dead_letter: DeadLetterTarget<F::Output>,
    workers: usize,
    key: Option<KeyFn<F::Input>>,
    batch_size: usize,
    queue_depth: usize,
    shutdown: Shutdown,
    signals: bool,
    progress: Option<Progress>,
}

impl<F: FlowDef, M: Monitor> Runtime<F, M, NoSource>
where
    F::Input: 'static,
    F::Output: Sync + 'static,
{
    /// A runtime for `flow`, with one worker, batches of
    /// [`Runtime::DEFAULT_BATCH_SIZE`] and signal handling on.
    pub fn new(flow: Flow<F, M>) -> Self {
        Runtime {
            flow,
            source: NoSource,
            sinks: Vec::new(),
            dead_letter: DeadLetterTarget::None,
            workers: 1,
            key: None,
            batch_size: Self::DEFAULT_BATCH_SIZE,
            queue_depth: Self::DEFAULT_QUEUE_DEPTH,
            shutdown: Shutdown::new(),
            signals: true,
            progress: None,
        }
    }
}

impl<F: FlowDef, M: Monitor, S> Runtime<F, M, S>
where
    F::Input: 'static,
    F::Output: Sync + 'static,
{
    /// Records per source batch, by default ([`DEFAULT_BATCH_SIZE`]).
    pub const DEFAULT_BATCH_SIZE: usize = DEFAULT_BATCH_SIZE;
    /// Batches queued per worker and per sink, by default.
    pub const DEFAULT_QUEUE_DEPTH: usize = 4;

    /// Where the flow's input comes from. The source's item type must be
    /// the flow's input type.
    pub fn source<S2: Source<Item = F::Input>>(self, source: S2) -> Runtime<F, M, S2> {
        Runtime {
            flow: self.flow,
            source,
            sinks: self.sinks,
            dead_letter: self.dead_letter,
            workers: self.workers,
            key: self.key,
            batch_size: self.batch_size,
            queue_depth: self.queue_depth,
            shutdown: self.shutdown,
            signals: self.signals,
            progress: self.progress,
        }
    }

    /// Adds a sink; every sink gets every output.
    pub fn sink<K: Sink<F::Output>>(mut self, sink: K) -> Self {
        self.sinks
            .push(sink_entry(sink, SinkRole::Output, |b| &b.outputs));
        self
    }

    /// Appends a [`DeadLetter`] line to this file for every record that
    /// could not be decoded and every step failure. The file is created if
    /// missing, and never truncated.
    pub fn dead_letter(mut self, path: impl Into<PathBuf>) -> Self {
        self.dead_letter = DeadLetterTarget::Path(path.into());
        self
    }

    /// Sends dead letters to a sink of your own instead of a file.
    pub fn dead_letter_sink<K: Sink<DeadLetter>>(mut self, sink: K) -> Self {
        self.dead_letter =
            DeadLetterTarget::Sink(sink_entry(sink, SinkRole::DeadLetter, |b| &b.dead));
        self
    }

    /// Number of parallel workers (default 1). With more than one, set a
    /// [`Runtime::key`] to keep per-key order.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Partitions messages across workers by this key: messages with equal
    /// keys are processed by the same worker, in source order.
    pub fn key<K: Hash>(mut self, key: impl Fn(&F::Input) -> K + Send + Sync + 'static) -> Self {
        self.key = Some(tasks::key_fn(key));
        self
    }

    pub(crate) fn key_hash(mut self, key: KeyFn<F::Input>) -> Self {
        self.key = Some(key);
        self
    }

    /// Records per source batch (default [`Runtime::DEFAULT_BATCH_SIZE`]).
    pub fn batch_size(mut self, records: usize) -> Self {
        self.batch_size = records;
        self
    }

    /// Batches queued in front of each worker and each sink (default
    /// [`Runtime::DEFAULT_QUEUE_DEPTH`]); bounds memory when input outruns output.
    pub fn queue_depth(mut self, batches: usize) -> Self {
        self.queue_depth = batches;
        self
    }

    /// Whether Ctrl-C and SIGTERM stop the run gracefully (default on). Turn
    /// it off when your program handles signals itself and stops the run
    /// through a [`Shutdown`] handle.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// A handle that stops this run gracefully.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Uses this handle to stop the run (instead of a new one).
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Publishes the run's counters through this handle while it runs
    /// (see [`Progress`]).
    pub fn progress(mut self, progress: &Progress) -> Self {
        self.progress = Some(progress.clone());
        self
    }

    /// The flow being run.
    pub fn flow(&self) -> &Flow<F, M> {
        &self.flow
    }
}

fn sink_entry<O, T, K>(sink: K, role: SinkRole, pick: fn(&OutBatch<O>) -> &[T]) -> SinkEntry<O>
where
    O: Send + Sync + 'static,
    T: Sync + 'static,
    K: Sink<T>,
{
    let name = sink.name();
    let task_name = name.clone();
    SinkEntry {
        name,
        spawn: Box::new(move |wiring| {
            Box::pin(tasks::sink_loop(sink, task_name, role, wiring, pick))
        }),
    }
}

#[derive(Debug)]
enum Done {
    Reader(StopReason),
    Acker(u64),
    Other,
}

impl<F: FlowDef, M: Monitor, S: Source<Item = F::Input>> Runtime<F, M, S>
where
    F::Input: 'static,
    F::Output: Sync + 'static,
{
    /// Runs the flow until the source ends or a shutdown is requested, and
    /// returns what it did.
    ///
    /// Fails before reading anything if the flow's resources are missing
    /// ([`Flow::check`]) or the settings are invalid; fails during the run
    /// if the source, a sink, the dead-letter output or the checkpoint
    /// fails (bad input does not fail a run). Batches not acknowledged when
    /// a run fails are read again by the next run of a checkpointed source.
    pub async fn run(self) -> Result<RunSummary, RunError> {
        let Runtime {
            flow,
            mut source,
            sinks,
            dead_letter,
            workers,
            key,
            batch_size,
            queue_depth,
            shutdown,
            signals,
            progress,
        } = self;
        let flow_name = flow.name();
        if workers == 0 {
            return Err(RunError::Config(format!(
                "flow `{flow_name}`: `workers` is 0; it must be at least 1"
            )));
        }
        if batch_size == 0 {
            return Err(RunError::Config(format!(
                "flow `{flow_name}`: `batch_size` is 0; it must be at least 1"
            )));
        }
        flow.check()?;
        let dead_letter = match dead_letter {
            DeadLetterTarget::None => None,
            DeadLetterTarget::Sink(entry) => Some(entry),
            DeadLetterTarget::Path(path) => {
                let sink = JsonLinesSink::append(&path).map_err(|error| RunError::DeadLetter {
                    name: path.display().to_string(),
                    error,
                })?;
                Some(sink_entry(
                    sink,
                    SinkRole::DeadLetter,
                    |b: &OutBatch<F::Output>| &b.dead,
                ))
            }
        };
        let mut sinks = sinks;
        if sinks.is_empty() {
            sinks.push(sink_entry(
                Discard,
                SinkRole::Output,
                |b: &OutBatch<F::Output>| &b.outputs,
            ));
        }
        let dead_letters = dead_letter.is_some();
        sinks.extend(dead_letter);

        let started = Instant::now();
        let source_name = source.name();
        let stop = shutdown.child_token();
        let abort = CancellationToken::new();
        let signal_task = signals
            .then(|| tokio::spawn(shutdown::listen(flow_name, shutdown.clone(), abort.clone())));
        let counters = Arc::new(Counters::new(workers));
        let acker = source.acker();
        let source_progress = source.progress();

        let mut set: JoinSet<Result<Done, RunError>> = JoinSet::new();
        let mut labels = HashMap::new();

        // Acknowledgements.
        let (registered_tx, registered_rx) = tokio::sync::mpsc::unbounded_channel();
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = set.spawn({
            let source = source_name.to_string();
            let per_part = sinks.len();
            async move {
                ack::ack_loop(acker, source, registered_rx, done_rx, per_part)
                    .await
                    .map(Done::Acker)
            }
        });
        labels.insert(
            handle.id(),
            format!("the acknowledgement task of source `{source_name}`"),
        );

        // Sinks.
        let (recycle_tx, recycle_rx): (Vec<_>, Vec<_>) = (0..workers)
            .map(|_| tasks::channel(queue_depth * 2 + 2))
            .unzip();
        let recycle: Arc<[_]> = recycle_tx.into();
        let mut sink_inputs = Vec::with_capacity(sinks.len());
        for entry in sinks {
            let (tx, rx) = tasks::channel(queue_depth);
            sink_inputs.push(tx);
            let wiring = SinkWiring {
                input: rx,
                done: done_tx.clone(),
                recycle: recycle.clone(),
                counters: counters.clone(),
            };
            let handle = set.spawn({
                let task = (entry.spawn)(wiring);
                async move { task.await.map(|()| Done::Other) }
            });
            labels.insert(handle.id(), format!("sink `{}`", entry.name));
        }
        drop(done_tx);
        drop(recycle);

        // Workers.
        let (pool_tx, pool_rx) = tasks::channel(workers * (queue_depth + 2));
        let mut worker_inputs = Vec::with_capacity(workers);
        for (index, recycled) in recycle_rx.into_iter().enumerate() {
            let (tx, rx) = tasks::channel(queue_depth);
            worker_inputs.push(tx);
            let setup = tasks::WorkerSetup {
                worker: flow.worker(source_name.clone(), index),
                index,
                flow: flow_name,
                source: source_name.clone(),
                input: rx,
                sinks: sink_inputs.clone(),
                pool: pool_tx.clone(),
                recycled,
                dead_letters,
                counters: counters.clone(),
            };
            let handle =
                set.spawn(async move { tasks::work_loop(setup).await.map(|()| Done::Other) });
            labels.insert(handle.id(), format!("worker {index} of flow `{flow_name}`"));
        }
        drop(sink_inputs);
        drop(pool_tx);

        // Reader.
        let reader = tasks::read_loop(tasks::ReaderSetup {
            source,
            workers: worker_inputs,
            registered: registered_tx,
            pool: pool_rx,
            stop: stop.clone(),
            key,
            batch_size,
            counters: counters.clone(),
        });
        let handle = set.spawn(async move { reader.await.map(Done::Reader) });
        labels.insert(handle.id(), format!("the reader of source `{source_name}`"));
        if let Some(progress) = progress {
            progress.attach(counters.clone(), source_progress);
        }

        let mut first_error: Option<RunError> = None;
        let mut stop_reason = StopReason::EndOfInput;
        let mut batches = 0;
        loop {
            let joined = tokio::select! {
                joined = set.join_next_with_id() => joined,
                () = abort.cancelled() => {
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    if let Some(task) = signal_task { task.abort(); }
                    return Err(RunError::Aborted { flow: flow_name });
                }
            };
            let Some(joined) = joined else { break };
            let error = match joined {
                Ok((_, Ok(Done::Reader(reason)))) => {
                    stop_reason = reason;
                    None
                }
                Ok((_, Ok(Done::Acker(n)))) => {
                    batches = n;
                    None
                }
                Ok((_, Ok(Done::Other))) => None,
                Ok((_, Err(error))) => Some(error),
                Err(join_error) => {
                    let task = labels
                        .get(&join_error.id())
                        .cloned()
                        .unwrap_or_else(|| "a task".to_string());
                    Some(if join_error.is_panic() {
                        RunError::Panicked {
                            task,
                            message: panic_message(join_error.into_panic()),
                        }
                    } else {
                        RunError::Panicked {
                            task,
                            message: "it was cancelled".to_string(),
                        }
                    })
                }
            };
            if let Some(error) = error {
                tracing::error!(flow = flow_name, %error, "run failed; stopping");
                stop.cancel();
                first_error.get_or_insert(error);
            }
        }
        if let Some(task) = signal_task {
            task.abort();
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        let c = &counters;
        Ok(RunSummary {
            policies: Vec::new(),
            flow: flow_name.to_string(),
            source: source_name.to_string(),
            stop: stop_reason,
            input: c.input.load(Relaxed),
            output: c.output.load(Relaxed),
            filtered: c.filtered.load(Relaxed),
            failed: c.failed.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
            dead_lettered: c.dead_lettered.load(Relaxed),
            batches,
            workers: c.per_worker.iter().map(|w| w.load(Relaxed)).collect(),
            elapsed: started.elapsed(),
            steps: flow.stats().map(|s| s.snapshot()).unwrap_or_default(),
        })
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// A run could not start, or stopped on an error.
///
/// Bad input is not an error of the run: it is counted and dead-lettered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The flow's resources are missing.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// A runtime setting is invalid.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The source failed.
    #[error("source `{name}` failed: {error}")]
    Source {
        /// The source's name.
        name: String,
        /// What went wrong.
        error: ConnectorError,
    },
    /// A sink failed. Outputs not yet flushed are not acknowledged: a
    /// checkpointed source reads them again on the next run.
    #[error("sink `{name}` failed: {error}")]
    Sink {
        /// The sink's name.
        name: String,
        /// What went wrong.
        error: ConnectorError,
    },
    /// The dead-letter output failed; the run stops so that no failed
    /// message is lost.
    #[error(
        "dead-letter output `{name}` failed: {error} (the run stopped so that no failed message is lost)"
    )]
    DeadLetter {
        /// The dead-letter output's name.
        name: String,
        /// What went wrong.
        error: ConnectorError,
    },
    /// The source's position could not be committed.
    #[error(
        "cannot commit the position of source `{name}`: {error} (outputs after the last committed position will be produced again by the next run)"
    )]
    Commit {
        /// The source's name.
        name: String,
        /// What went wrong.
        error: ConnectorError,
    },
    /// A task panicked (a bug in a step function, a connector, or syncflow).
    #[error(
        "{task} panicked: {message}; a step function or connector has a bug (set RUST_BACKTRACE=1 to see where); messages not acknowledged will be read again by the next run of a checkpointed source"
    )]
    Panicked {
        /// Which task.
        task: String,
        /// The panic message.
        message: String,
    },
    /// A second interrupt stopped the run without draining.
    #[error(
        "flow `{flow}` aborted by a second interrupt without finishing its in-flight batches; a checkpointed source resumes from its last committed position"
    )]
    Aborted {
        /// The flow's name.
        flow: &'static str,
    },
}
