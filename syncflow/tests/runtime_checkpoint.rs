//! Checkpoints and shutdown: a rerun resumes after the last delivered
//! line; nothing is lost, nothing before the checkpoint is processed again.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use syncflow::connector::{Batch, ConnectorError, Read, Source};
use syncflow::prelude::*;
use syncflow::runtime::StopReason;

/// Passes the number through; stops the run when it sees `stop_at`.
#[sync_function]
fn watch(n: u64, stop: Res<StopAt>) -> u64 {
    if n == stop.at {
        stop.handle.shutdown();
    }
    n
}

struct StopAt {
    at: u64,
    handle: Shutdown,
}

/// Passes the number through.
#[sync_function]
fn pass(n: u64) -> u64 {
    n
}

fn numbers(dir: &Path, count: u64) -> PathBuf {
    let path = dir.join("numbers.jsonl");
    let text: String = (1..=count).map(|i| format!("{i}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

fn read_numbers(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// A source that ends after `batches` batches of the source it wraps, as if
/// the process had stopped there.
struct Limited<S> {
    inner: S,
    batches: usize,
}

impl<S: Source> Source for Limited<S> {
    type Item = S::Item;
    type Ack = S::Ack;
    type Acker = S::Acker;
    fn name(&self) -> Arc<str> {
        self.inner.name()
    }
    fn acker(&mut self) -> S::Acker {
        self.inner.acker()
    }
    async fn read(
        &mut self,
        batch: &mut Batch<S::Item>,
        max: usize,
    ) -> Result<Read<S::Ack>, ConnectorError> {
        if self.batches == 0 {
            return Ok(Read::End);
        }
        self.batches -= 1;
        self.inner.read(batch, max).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_resumes_after_the_last_committed_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), 100);
    let state = dir.path().join("state");
    let output = dir.path().join("out.jsonl");

    let source = JsonLinesSource::<u64>::open(&input)
        .unwrap()
        .state_dir(&state)
        .unwrap();
    assert_eq!(source.resumed_after_line(), None);
    let first = Runtime::new(flow!(pass))
        .source(Limited {
            inner: source,
            batches: 3,
        })
        .sink(JsonLinesSink::create(&output).unwrap())
        .batch_size(10)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(first.input, 30);
    assert_eq!(read_numbers(&output), (1..=30).collect::<Vec<_>>());

    let source = JsonLinesSource::<u64>::open(&input)
        .unwrap()
        .state_dir(&state)
        .unwrap();
    assert_eq!(source.resumed_after_line(), Some(30));
    let second = Runtime::new(flow!(pass))
        .source(source)
        .sink(JsonLinesSink::append(&output).unwrap())
        .batch_size(10)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(
        second.input, 70,
        "lines before the checkpoint were read again"
    );
    assert_eq!(read_numbers(&output), (1..=100).collect::<Vec<_>>());

    // A third run finds nothing new.
    let third = Runtime::new(flow!(pass))
        .source(
            JsonLinesSource::<u64>::open(&input)
                .unwrap()
                .state_dir(&state)
                .unwrap(),
        )
        .sink(JsonLinesSink::append(&output).unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(third.input, 0);
    assert_eq!(read_numbers(&output).len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_batches_and_the_rerun_completes_the_input() {
    const TOTAL: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), TOTAL);
    let state = dir.path().join("state");
    let output = dir.path().join("out.jsonl");

    // A step stops the run through the handle, half-way through reading.
    let stop = Shutdown::new();
    let first = Runtime::new(flow!(watch).resource(StopAt {
        at: 500,
        handle: stop.clone(),
    }))
    .with_shutdown(stop)
    .source(
        JsonLinesSource::<u64>::open(&input)
            .unwrap()
            .state_dir(&state)
            .unwrap(),
    )
    .sink(JsonLinesSink::create(&output).unwrap())
    .batch_size(100)
    .handle_signals(false)
    .run()
    .await
    .unwrap();
    assert_eq!(first.stop, StopReason::Shutdown);
    // Reading stopped soon after line 500 (bounded queues), and every batch
    // read was finished: outputs are exactly the lines read, in order.
    eprintln!("stopped after {} of {TOTAL} lines", first.input);
    assert!(first.input >= 500 && first.input < TOTAL, "{}", first.input);
    assert_eq!(first.input % 100, 0, "only whole batches are read");
    assert_eq!(read_numbers(&output), (1..=first.input).collect::<Vec<_>>());
    assert_eq!(first.output, first.input);

    let second = Runtime::new(flow!(pass))
        .source(
            JsonLinesSource::<u64>::open(&input)
                .unwrap()
                .state_dir(&state)
                .unwrap(),
        )
        .sink(JsonLinesSink::append(&output).unwrap())
        .batch_size(100)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(first.input + second.input, TOTAL);
    assert_eq!(read_numbers(&output), (1..=TOTAL).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_before_the_start_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), 10);
    let shutdown = Shutdown::new();
    shutdown.shutdown();
    let summary = Runtime::new(flow!(pass))
        .source(JsonLinesSource::<u64>::open(&input).unwrap())
        .with_shutdown(shutdown)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(summary.stop, StopReason::Shutdown);
    assert_eq!(summary.input, 0);
}

/// A sink that fails at its third write, keeping what it was given.
struct Flaky {
    writes: usize,
    seen: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Sink<u64> for Flaky {
    fn name(&self) -> String {
        "flaky".into()
    }
    async fn write(&mut self, items: &[u64]) -> Result<(), ConnectorError> {
        self.writes += 1;
        if self.writes == 3 {
            return Err(ConnectorError::Other("the disk is on fire".into()));
        }
        self.seen.lock().unwrap().extend_from_slice(items);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sink_failure_nothing_unconfirmed_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), 1000);
    let state = dir.path().join("state");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let err = Runtime::new(flow!(pass))
        .source(
            JsonLinesSource::<u64>::open(&input)
                .unwrap()
                .state_dir(&state)
                .unwrap(),
        )
        .sink(Flaky {
            writes: 0,
            seen: seen.clone(),
        })
        .batch_size(10)
        .handle_signals(false)
        .run()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(text, "sink `flaky` failed: the disk is on fire");

    let source = JsonLinesSource::<u64>::open(&input)
        .unwrap()
        .state_dir(&state)
        .unwrap();
    let resumed = source.resumed_after_line().unwrap_or(0);
    // Only lines the sink received can have been committed.
    assert!(resumed <= 20, "committed line {resumed} was never written");
    let output = dir.path().join("out.jsonl");
    let second = Runtime::new(flow!(pass))
        .source(source)
        .sink(JsonLinesSink::create(&output).unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(second.input, 1000 - resumed);
    let mut all: BTreeSet<u64> = seen.lock().unwrap().iter().copied().collect();
    all.extend(read_numbers(&output));
    assert_eq!(all, (1..=1000).collect(), "a line was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_input_is_refused_with_a_way_out() {
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), 100);
    let state = dir.path().join("state");
    Runtime::new(flow!(pass))
        .source(
            JsonLinesSource::<u64>::open(&input)
                .unwrap()
                .state_dir(&state)
                .unwrap(),
        )
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    numbers(dir.path(), 10);
    let err = JsonLinesSource::<u64>::open(&input)
        .unwrap()
        .state_dir(&state)
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated or replaced"), "{err}");
    assert!(err.contains("delete the checkpoint file"), "{err}");
}

/// A sink that accepts writes but cannot make them durable.
struct NeverDurable;

impl Sink<u64> for NeverDurable {
    fn name(&self) -> String {
        "never-durable".into()
    }
    async fn write(&mut self, _: &[u64]) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Err(ConnectorError::Other("fsync failed".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_committed_before_the_sink_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let input = numbers(dir.path(), 100);
    let state = dir.path().join("state");
    let err = Runtime::new(flow!(pass))
        .source(
            JsonLinesSource::<u64>::open(&input)
                .unwrap()
                .state_dir(&state)
                .unwrap(),
        )
        .sink(NeverDurable)
        .batch_size(10)
        .handle_signals(false)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "sink `never-durable` failed: fsync failed");
    let source = JsonLinesSource::<u64>::open(&input)
        .unwrap()
        .state_dir(&state)
        .unwrap();
    assert_eq!(source.resumed_after_line(), None);
}
