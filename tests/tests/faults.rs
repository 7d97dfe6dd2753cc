//! Delivery guarantees under faults, against the real local services.
//!
//! - **Kill tests**: a flow reading a broker (a Redis Streams consumer group,
//!   a NATS JetStream durable consumer) through a `#[sync_function]` into the
//!   idempotent `PostgresSink` runs in a child process, which is killed with
//!   SIGKILL at random points and restarted, several times, then allowed to
//!   finish. Every message must be in PostgreSQL exactly once (one row per
//!   message, with the right content), and the messages processed more than
//!   once must fit in what the killed runs had processed but not yet
//!   committed.
//! - **Slow sink, bounded memory**: a large JSON-lines file read as fast as
//!   the source can, into a sink that sleeps on every batch, in a child
//!   process whose resident memory is sampled while it runs: backpressure
//!   holds the reader back, memory stays flat.
//!
//! The kill points come from a seeded generator; the seed is printed, and
//! `SYNCFLOW_FAULT_SEED=<seed>` replays the same kill count and delays (the
//! exact messages in flight at each kill still depend on timing).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use syncflow::connector::nats::{NatsSource, NatsSourceConfig};
use syncflow::connector::postgres::{PostgresSink, PostgresSinkConfig};
use syncflow::connector::redis::{RedisStreamSource, RedisStreamSourceConfig};
use syncflow::connector::{ConnectorError, Sink, Source, serde_decode};
use syncflow::prelude::*;
use syncflow::runtime::{Progress, RunSummary};
use syncflow_tests::services::{require, unique};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const REDIS: &str = "redis://127.0.0.1:6379";
const NATS: &str = "nats://127.0.0.1:4222";

/// The child process's task (JSON), set by the parent tests.
const CHILD_ENV: &str = "SYNCFLOW_FAULTS_CHILD";
/// Replays the kill count and delays of an earlier run.
const SEED_ENV: &str = "SYNCFLOW_FAULT_SEED";

// ---- The kill tests' settings ----

/// Messages in the input.
const MESSAGES: u64 = 5000;
/// Records per source batch.
const BATCH: usize = 25;
/// Batches queued in front of the worker and in front of the sink.
const QUEUE_DEPTH: usize = 2;
/// Work done per message (so that a run lasts a few seconds and the kills
/// land mid-flow).
const WORK: Duration = Duration::from_millis(1);
/// Batches a sink task may have written without confirming them (the
/// runtime flushes a sink at the latest after this many batches:
/// `MAX_UNFLUSHED` in `runtime/tasks.rs`).
const SINK_UNCONFIRMED: usize = 16;
/// Batches whose messages may have been processed, but whose position is
/// not committed yet, at any moment of a run:
/// - 1 in the worker (processed in part or in full),
/// - `QUEUE_DEPTH` processed and queued in front of the sink,
/// - `SINK_UNCONFIRMED` written to the sink and not confirmed yet,
/// - 1 confirmed and being committed by the acknowledgement task (a commit,
///   one `XACK` or a few ack publishes, takes far less time than the
///   `BATCH` × `WORK` a batch needs, so no more than one waits).
///
/// Batches read and still queued in front of the worker are not processed
/// yet: they are delivered again after a kill, but processed only once.
const UNCOMMITTED_BATCHES: usize = 1 + QUEUE_DEPTH + SINK_UNCONFIRMED + 1;
/// How long JetStream waits for an acknowledgement before delivering a
/// message again: also how long a restarted child waits for the messages
/// the killed one had been given.
const NATS_ACK_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct Order {
    id: u64,
    region: String,
    cents: i64,
}

/// A row of the output table.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Row {
    id: u64,
    region: String,
    cents: i64,
    label: String,
}

fn order(id: u64) -> Order {
    Order {
        id,
        region: ["eu", "us", "ap"][(id % 3) as usize].to_string(),
        cents: id as i64 * 7 + 3,
    }
}

fn label(o: &Order) -> String {
    format!("order {} of {} for {} cents", o.id, o.region, o.cents)
}

/// Records every message processed: one line with its ID, appended to a
/// file of the run with one `write` each, so that the record survives a
/// SIGKILL of the process the moment after (it is in the kernel's hands).
/// Unlike the table, this record is not idempotent: it counts deliveries.
struct Processed {
    file: std::fs::File,
    work: Duration,
}

impl Processed {
    fn record(&self, id: u64) {
        let mut line = [0u8; 24];
        let mut cursor = std::io::Cursor::new(&mut line[..]);
        writeln!(cursor, "{id}").expect("an ID fits in 24 bytes");
        let len = cursor.position() as usize;
        (&self.file)
            .write_all(&line[..len])
            .expect("append to the processed log");
    }
}

/// Turns an order into a row; records that it processed the order.
#[sync_function]
fn fault_row(o: Order, processed: Res<Processed>) -> Row {
    processed.record(o.id);
    std::thread::sleep(processed.work);
    Row {
        label: label(&o),
        id: o.id,
        region: o.region,
        cents: o.cents,
    }
}

/// Which broker a kill test reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
enum Broker {
    Redis,
    Nats,
}

/// What a child process runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
enum ChildTask {
    /// One run of a kill test's flow, until `stop` exists.
    Flow {
        broker: Broker,
        /// The Redis stream, or the JetStream stream.
        stream: String,
        /// The consumer group, or the durable consumer.
        group: String,
        table: String,
        processed: PathBuf,
        stop: PathBuf,
    },
    /// The slow-sink run of the memory test.
    SlowSink { input: PathBuf, run_for_ms: u64 },
}

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "syncflow=warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Runs a child process's task (does nothing when not run as a child).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the other tests of this file"]
async fn fault_child() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    logs();
    let task: ChildTask = serde_json::from_str(&task).expect("a child task");
    match task {
        ChildTask::Flow {
            broker,
            stream,
            group,
            table,
            processed,
            stop,
        } => {
            let sink = PostgresSink::connect(&PostgresSinkConfig::new(PG, table.as_str()))
                .await
                .unwrap();
            let processed = Processed {
                file: std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&processed)
                    .unwrap(),
                work: WORK,
            };
            let summary = match broker {
                Broker::Redis => {
                    // One consumer name for every run: a restarted consumer
                    // reads its own pending entries first.
                    let mut config = RedisStreamSourceConfig::new(stream, group, "worker");
                    config.batch_size = Some(BATCH);
                    config.block = Some(Duration::from_millis(100));
                    let source = RedisStreamSource::<Order>::connect(&config, serde_decode)
                        .await
                        .unwrap();
                    run_flow(source, sink, processed, &stop).await
                }
                Broker::Nats => {
                    let mut config = NatsSourceConfig::new(stream, group);
                    config.batch_size = Some(BATCH);
                    config.max_wait = Some(Duration::from_millis(100));
                    config.ack_wait = Some(NATS_ACK_WAIT);
                    let source = NatsSource::<Order>::connect(&config, serde_decode)
                        .await
                        .unwrap();
                    run_flow(source, sink, processed, &stop).await
                }
            };
            println!(
                "FAULT-CHILD-SUMMARY input={} output={}",
                summary.input, summary.output
            );
        }
        ChildTask::SlowSink { input, run_for_ms } => {
            slow_sink_child(&input, Duration::from_millis(run_for_ms)).await;
        }
    }
}

async fn run_flow<S: Source<Item = Order>>(
    source: S,
    sink: PostgresSink,
    processed: Processed,
    stop: &Path,
) -> RunSummary {
    let runtime = Runtime::new(flow!(name = "faults", fault_row).resource(processed))
        .source(source)
        .sink(sink)
        .batch_size(BATCH)
        .queue_depth(QUEUE_DEPTH)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let stop = stop.to_path_buf();
    tokio::spawn(async move {
        while !stop.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.shutdown();
    });
    runtime.run().await.unwrap()
}

/// A child process running [`fault_child`]. Its output is read as it comes
/// (so that it never blocks on a full pipe), and it is killed if still
/// running when dropped, so that a failing test leaves no process behind.
struct ChildRun {
    child: Child,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl ChildRun {
    fn spawn(task: &ChildTask) -> ChildRun {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "fault_child", "--ignored", "--nocapture"])
            .env(CHILD_ENV, serde_json::to_string(task).unwrap())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
            text
        });
        ChildRun {
            child,
            stdout: Some(stdout),
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit, up to `limit` (then kills it and
    /// panics): whether it succeeded, and its output.
    async fn wait(mut self, limit: Duration) -> (bool, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let stdout = self.stdout.take().unwrap();
                let text = tokio::task::spawn_blocking(move || stdout.join().unwrap())
                    .await
                    .unwrap();
                return (status.success(), text);
            }
            if Instant::now() > deadline {
                self.kill();
                let text = self.stdout.take().unwrap().join().unwrap();
                panic!("the child did not exit within {limit:?}; its output:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for ChildRun {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `check` holds, polling; panics with `what` after `limit`.
async fn wait_for<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The seed of this run's kill points: `SYNCFLOW_FAULT_SEED`, or a new one.
fn seed() -> u64 {
    match std::env::var(SEED_ENV) {
        Ok(seed) => seed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={seed} is not a number")),
        Err(_) => fastrand::u64(..),
    }
}

/// IDs recorded in a processed log, one per line.
fn processed_ids(path: &Path) -> Vec<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .map(|l| l.parse().unwrap_or_else(|_| panic!("bad line {l:?}")))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

fn lines_in(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

async fn pg() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

async fn row_count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn redis() -> MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn jetstream() -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(NATS).await.unwrap())
}

/// A broker holding the input of a kill test.
enum Input {
    Redis {
        con: MultiplexedConnection,
        stream: String,
        group: String,
    },
    Nats {
        js: async_nats::jetstream::Context,
        stream: String,
        durable: String,
    },
}

impl Input {
    /// A fresh stream holding `MESSAGES` orders.
    async fn fill(broker: Broker) -> Input {
        let payloads = (1..=MESSAGES).map(|id| serde_json::to_string(&order(id)).unwrap());
        match broker {
            Broker::Redis => {
                let mut con = redis().await;
                let stream = unique("sf_faults");
                let mut pipe = redis::pipe();
                for payload in payloads {
                    pipe.xadd(&stream, "*", &[("payload", payload)]).ignore();
                }
                pipe.exec_async(&mut con).await.unwrap();
                Input::Redis {
                    con,
                    stream,
                    group: "faults".to_string(),
                }
            }
            Broker::Nats => {
                let js = jetstream().await;
                let stream = unique("SF_FAULTS").to_uppercase();
                let subject = format!("{}.orders", stream.to_lowercase());
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![subject.clone()],
                    ..Default::default()
                })
                .await
                .unwrap();
                let mut acks = Vec::new();
                for payload in payloads {
                    acks.push(
                        js.publish(subject.clone(), payload.into_bytes().into())
                            .await
                            .unwrap(),
                    );
                    if acks.len() == 500 {
                        for ack in acks.drain(..) {
                            ack.await.unwrap();
                        }
                    }
                }
                for ack in acks {
                    ack.await.unwrap();
                }
                Input::Nats {
                    js,
                    stream,
                    durable: "faults".to_string(),
                }
            }
        }
    }

    fn names(&self) -> (&str, &str) {
        match self {
            Input::Redis { stream, group, .. } => (stream, group),
            Input::Nats {
                stream, durable, ..
            } => (stream, durable),
        }
    }

    /// Messages delivered and not acknowledged, and messages not delivered
    /// yet (`None` before the group or consumer exists).
    async fn backlog(&mut self) -> Option<(u64, u64)> {
        match self {
            Input::Redis { con, stream, group } => {
                let reply: redis::streams::StreamInfoGroupsReply =
                    con.xinfo_groups(&*stream).await.ok()?;
                let info = reply.groups.iter().find(|g| g.name == *group)?;
                Some((info.pending as u64, info.lag.unwrap_or(usize::MAX) as u64))
            }
            Input::Nats {
                js,
                stream,
                durable,
            } => {
                let stream = js.get_stream(&*stream).await.ok()?;
                let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer(durable).await.ok()?;
                let info = consumer.info().await.ok()?;
                Some((info.num_ack_pending as u64, info.num_pending))
            }
        }
    }

    async fn delete(mut self) {
        match &mut self {
            Input::Redis { con, stream, .. } => {
                let _: () = con.del(&*stream).await.unwrap();
            }
            Input::Nats { js, stream, .. } => {
                let _ = js.delete_stream(&*stream).await;
            }
        }
    }
}

/// The kill test: see the file's documentation.
async fn kill_and_restart(broker: Broker) {
    let started = Instant::now();
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let kills = rng.usize(4..=6);
    println!(
        "{broker:?} kill test: seed {seed} ({kills} kills; replay with {SEED_ENV}={seed}), \
         {MESSAGES} messages, batches of {BATCH}, queue depth {QUEUE_DEPTH}"
    );
    let client = pg().await;
    let table = unique("sf_faults");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, region text NOT NULL, \
             cents bigint NOT NULL, label text NOT NULL)"
        ))
        .await
        .unwrap();
    let mut input = Input::fill(broker).await;
    let (stream, group) = input.names();
    let (stream, group) = (stream.to_string(), group.to_string());
    let dir = tempfile::tempdir().unwrap();
    let task = |run: usize| ChildTask::Flow {
        broker,
        stream: stream.clone(),
        group: group.clone(),
        table: table.clone(),
        processed: dir.path().join(format!("processed{run}")),
        stop: dir.path().join("stop"),
    };
    let processed_log = |run: usize| dir.path().join(format!("processed{run}"));

    // Kill points spread over the input: each run is killed once it has
    // processed something and PostgreSQL holds at least its target number
    // of rows, after a further random delay (so that the kill lands
    // anywhere in a batch's life: reading, processing, writing, committing).
    let mut targets: Vec<u64> = (0..kills).map(|_| rng.u64(0..MESSAGES * 9 / 10)).collect();
    targets.sort_unstable();
    let mut kill_points = Vec::new();
    let mut per_run = Vec::new();
    for (run, &target) in targets.iter().enumerate() {
        let mut child = ChildRun::spawn(&task(run));
        let log = processed_log(run);
        wait_for(
            Duration::from_secs(20),
            "a run to start working",
            async || lines_in(&log) > 0,
        )
        .await;
        wait_for(
            Duration::from_secs(30),
            "the rows before a kill point",
            async || row_count(&client, &table).await >= target as i64,
        )
        .await;
        let delay = rng.u64(0..=50);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill(); // SIGKILL
        kill_points.push((row_count(&client, &table).await, delay));
        per_run.push(lines_in(&log));
    }

    // The last run goes to the end of the input.
    let child = ChildRun::spawn(&task(kills));
    wait_for(
        Duration::from_secs(45),
        "every message in PostgreSQL and acknowledged",
        async || {
            row_count(&client, &table).await == MESSAGES as i64
                && input.backlog().await == Some((0, 0))
        },
    )
    .await;
    std::fs::write(dir.path().join("stop"), "stop").unwrap();
    let (success, stdout) = child.wait(Duration::from_secs(20)).await;
    assert!(success, "the last run failed:\n{stdout}");
    assert!(
        stdout.contains("FAULT-CHILD-SUMMARY"),
        "the last run printed no summary:\n{stdout}"
    );
    per_run.push(lines_in(&processed_log(kills)));

    // Exactly one row per message, with the right content.
    let rows = client
        .query(
            &format!("SELECT id, region, cents, label FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len() as u64, MESSAGES);
    for (row, id) in rows.iter().zip(1..=MESSAGES) {
        let expected = order(id);
        let got = (
            row.get::<_, i64>(0),
            row.get::<_, String>(1),
            row.get::<_, i64>(2),
            row.get::<_, String>(3),
        );
        assert_eq!(
            got,
            (
                id as i64,
                expected.region.clone(),
                expected.cents,
                label(&expected)
            ),
            "row {id}"
        );
    }

    // Every message processed at least once; the extra deliveries bounded.
    let mut times: HashMap<u64, u32> = HashMap::new();
    for run in 0..=kills {
        for id in processed_ids(&processed_log(run)) {
            *times.entry(id).or_default() += 1;
        }
    }
    assert!(
        (1..=MESSAGES).all(|id| times.contains_key(&id)),
        "a message was never processed"
    );
    assert_eq!(times.len() as u64, MESSAGES, "an unknown ID was processed");
    let total: u64 = times.values().map(|&n| u64::from(n)).sum();
    let duplicates = total - MESSAGES;
    let again = times.values().filter(|&&n| n > 1).count();
    let most = times.values().copied().max().unwrap_or(0);
    let bound = (kills * UNCOMMITTED_BATCHES * BATCH) as u64;
    println!(
        "{broker:?} kill test: seed {seed}; {kills} SIGKILLs at (rows in PostgreSQL, ms after \
         reaching the target) {kill_points:?}; processed per run {per_run:?} (the last one finished); \
         {total} processings of {MESSAGES} messages: {duplicates} extra ({again} messages \
         processed more than once, at most {most} times); bound {bound} = {kills} kills × \
         {UNCOMMITTED_BATCHES} uncommitted batches × {BATCH}; {MESSAGES} rows in PostgreSQL, \
         all correct; {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // A kill almost always lands while the worker is in the middle of a
    // batch (it is busy `BATCH` × `WORK` per batch, a commit takes
    // microseconds): no message processed twice would mean that no kill
    // interrupted any work, and the test tested nothing.
    assert!(
        duplicates > 0,
        "none of the {kills} kills interrupted work in flight (seed {seed})"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} extra processings, more than the {bound} the uncommitted batches of \
         {kills} killed runs can hold (seed {seed})"
    );
    input.delete().await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_redis_stream_flow_delivers_every_message_to_postgres_once() {
    if !require("redis") || !require("postgres") {
        return;
    }
    kill_and_restart(Broker::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_nats_flow_delivers_every_message_to_postgres_once() {
    if !require("nats") || !require("postgres") {
        return;
    }
    kill_and_restart(Broker::Nats).await;
}

// ---- Slow sink, bounded memory ----

/// Lines of the memory test's input file.
const LINES: u64 = 300_000;
/// Bytes of text per line (the line is a little longer).
const TEXT: usize = 1000;
/// Records per source batch in the memory test.
const SLOW_BATCH: usize = 256;
/// Batches queued in front of the worker and the sink in the memory test
/// (the default).
const SLOW_QUEUE_DEPTH: usize = 4;
/// How long the slow sink sleeps on every batch.
const SLOW_PAUSE: Duration = Duration::from_millis(20);
/// How long the memory test's flow runs before it is stopped.
const SLOW_RUN: Duration = Duration::from_secs(3);
/// The most the resident memory may grow while the flow runs.
const RSS_GROWTH_LIMIT: u64 = 24 << 20;

#[derive(Debug, Clone, Deserialize, Serialize)]
struct Line {
    id: u64,
    text: String,
}

/// Passes a line through.
#[sync_function]
fn fault_pass(line: Line) -> Line {
    line
}

/// A sink that sleeps on every batch and only counts what it got.
struct SlowSink {
    written: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pause: Duration,
}

impl Sink<Line> for SlowSink {
    fn name(&self) -> String {
        "slow".to_string()
    }
    async fn write(&mut self, items: &[Line]) -> Result<(), ConnectorError> {
        tokio::time::sleep(self.pause).await;
        self.written
            .fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// The memory test's child: runs the flow for `run_for`, sampling its own
/// resident memory and how far the reader is ahead of the sink, then stops
/// it gracefully and prints the figures.
async fn slow_sink_child(input: &Path, run_for: Duration) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

    let baseline = status_kib("VmRSS").expect("VmRSS in /proc/self/status");
    let written = Arc::new(AtomicU64::new(0));
    let progress = Progress::new();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = std::thread::spawn({
        let (written, progress, done) = (written.clone(), progress.clone(), done.clone());
        move || {
            let (mut peak, mut lag, mut samples) = (0u64, 0u64, 0u64);
            while !done.load(Relaxed) {
                peak = peak.max(status_kib("VmRSS").unwrap_or(0));
                // Read before written: the lag is never overestimated.
                let read = progress.counts().input;
                lag = lag.max(read.saturating_sub(written.load(Relaxed)));
                samples += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            (peak, lag, samples)
        }
    });
    let runtime = Runtime::new(flow!(fault_pass))
        .source(JsonLinesSource::<Line>::open(input).unwrap())
        .sink(SlowSink {
            written: written.clone(),
            pause: SLOW_PAUSE,
        })
        .batch_size(SLOW_BATCH)
        .queue_depth(SLOW_QUEUE_DEPTH)
        .progress(&progress)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let started = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(run_for).await;
        shutdown.shutdown();
    });
    let summary = runtime.run().await.unwrap();
    let elapsed = started.elapsed();
    done.store(true, Relaxed);
    let (peak, lag, samples) = sampler.join().unwrap();
    let hwm = status_kib("VmHWM").unwrap_or(0);

    // For comparison: how fast the same reader goes into a sink that keeps
    // up (measured after the memory figures were taken).
    let fast = Progress::new();
    let runtime = Runtime::new(flow!(fault_pass))
        .source(JsonLinesSource::<Line>::open(input).unwrap())
        .batch_size(SLOW_BATCH)
        .queue_depth(SLOW_QUEUE_DEPTH)
        .progress(&fast)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let fast_started = Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        shutdown.shutdown();
    });
    let fast_read = runtime.run().await.unwrap().input;
    let fast_ms = fast_started.elapsed().as_millis();
    println!(
        "SLOW-SINK baseline_kib={baseline} peak_kib={peak} hwm_kib={hwm} read={} written={} \
         max_lag={lag} samples={samples} elapsed_ms={} fast_read={fast_read} fast_ms={fast_ms}",
        summary.input,
        written.load(Relaxed),
        elapsed.as_millis()
    );
}

/// Parses `key=value` figures from a child's output line starting with `tag`.
fn figures(stdout: &str, tag: &str) -> HashMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(tag))
        .unwrap_or_else(|| panic!("the child printed no `{tag}` line:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sink_holds_the_reader_back_and_memory_stays_flat() {
    if status_kib("VmRSS").is_none() {
        assert!(
            !syncflow_tests::services::in_ci(),
            "/proc/self/status has no VmRSS: the memory test needs Linux"
        );
        eprintln!("skipped: /proc/self/status has no VmRSS (the memory test needs Linux)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lines.jsonl");
    let text = "x".repeat(TEXT);
    {
        let mut out =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&input).unwrap());
        for id in 1..=LINES {
            writeln!(out, r#"{{"id":{id},"text":"{text}"}}"#).unwrap();
        }
        out.flush().unwrap();
    }
    let bytes = std::fs::metadata(&input).unwrap().len();
    let child = ChildRun::spawn(&ChildTask::SlowSink {
        input: input.clone(),
        run_for_ms: SLOW_RUN.as_millis() as u64,
    });
    let (success, stdout) = child.wait(Duration::from_secs(40)).await;
    assert!(success, "the child failed:\n{stdout}");
    let f = figures(&stdout, "SLOW-SINK");
    let growth = (f["peak_kib"].max(f["hwm_kib"]) - f["baseline_kib"]) * 1024;
    // The reader may be ahead of the sink by what the queues hold: the
    // batch in the reader's hands, `SLOW_QUEUE_DEPTH` batches queued for
    // the worker, the worker's batch, as many queued for the sink, and the
    // batch being written.
    let window = ((3 + 2 * SLOW_QUEUE_DEPTH) * SLOW_BATCH) as u64;
    println!(
        "slow sink: input {LINES} lines, {:.0} MiB; in {} ms the reader read {} lines \
         ({:.1} MiB), the sink took {} (into a sink that keeps up, the same reader reads {} \
         lines in {} ms); the reader was at most {} lines ahead of the sink \
         (window {window}); RSS {:.1} MiB at start, peak {:.1} MiB (VmHWM {:.1} MiB): \
         growth {:.1} MiB, limit {} MiB",
        bytes as f64 / 1048576.0,
        f["elapsed_ms"],
        f["read"],
        f["read"] as f64 * bytes as f64 / LINES as f64 / 1048576.0,
        f["written"],
        f["fast_read"],
        f["fast_ms"],
        f["max_lag"],
        f["baseline_kib"] as f64 / 1024.0,
        f["peak_kib"] as f64 / 1024.0,
        f["hwm_kib"] as f64 / 1024.0,
        growth as f64 / 1048576.0,
        RSS_GROWTH_LIMIT >> 20,
    );
    assert!(
        bytes >= 10 * RSS_GROWTH_LIMIT,
        "the input ({bytes} bytes) must be at least ten times the memory limit"
    );
    assert!(
        f["read"] < LINES / 2,
        "the reader read {} of {LINES} lines: the slow sink did not hold it back",
        f["read"]
    );
    assert!(
        f["max_lag"] <= window,
        "the reader got {} lines ahead of the sink; the queues hold at most {window}",
        f["max_lag"]
    );
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "resident memory grew by {growth} bytes while the flow ran (limit {RSS_GROWTH_LIMIT})"
    );
}
