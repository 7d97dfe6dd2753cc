//! W3: NATS JetStream → a trivial function → Redis stream (`XADD`), through
//! the runtime, against a hand-written async-nats → redis loop in the same
//! run. Needs nats-server -js on 127.0.0.1:4222 and Redis on 127.0.0.1:6379;
//! skips with a message when either is missing.
//!
//! ```text
//! cargo bench -p syncflow --features nats,redis --bench w3_nats_redis
//! cargo bench -p syncflow --features nats,redis --bench w3_nats_redis -- --messages 20000 --rounds 1
//! cargo bench -p syncflow --features nats,redis --bench w3_nats_redis -- --latency
//! cargo bench -p syncflow --features nats,redis --bench w3_nats_redis -- --latency --rate 20000 --seconds 10
//! ```
//!
//! **Throughput** (first, unless `--latency`): both variants read the same
//! 100 000 messages of ~200 bytes from one stream (each round with a fresh
//! durable consumer), decode each into a struct, keep four fields, encode
//! the result as JSON and append it to a fresh Redis stream, acknowledging
//! the messages once Redis confirmed their outputs. The time runs from the
//! first read until the last output is in Redis. Prints messages per
//! second, the median over the rounds, and the ratio of the runtime's time
//! to the hand-written loop's.
//!
//! **Latency** (then, unless `--throughput`): a producer publishes to a
//! fresh stream at a fixed rate (`--rate`, default 20 000 msg/s, in bursts
//! paced every millisecond) for `--warmup` (1 s, not counted) plus
//! `--seconds` (10 s) while the variant runs; each message carries its send
//! time and the function passes it through. An observer reads the Redis
//! output stream (`XREAD BLOCK`) and takes, per message, the time it read
//! the entry minus the time it was sent. As in a deployment, where the
//! producer and the consumer of a pipeline are other processes, the
//! producer and the observer each run on an OS thread of their own with
//! their own current-thread tokio runtime and connection; the variant under
//! test has the main runtime (`w3-variant` threads, one per core) to
//! itself. The same producer and observer serve both variants. Each of
//! `--latency-rounds` (default 3) runs both variants, in alternating order.
//! Prints p50, p99 and max per variant and round (with the load average),
//! and the ratio of the runtime's p99 to the hand-written loop's, with its
//! median over the rounds (target ≤ 2). The runtime runs with the defaults
//! a user gets (`NatsSourceConfig::new`, `RedisStreamSinkConfig::new`, the
//! runtime's batch size).
//!
//! `--detail` also shows where each round's time went: per message, the
//! time from the send to NATS storing it (the stream's timestamp, read back
//! after the round), to the step running (noted by the step of both
//! variants), to Redis adding the output (the time in the entry ID, whole
//! milliseconds) and to the observer reading it; p50/p99/max of each
//! stage, the mean per stage of the slowest 1%, the p99 of each second, and
//! the CPU time, run-queue wait and times scheduled of the variant's
//! threads, the producer, the observer and the two servers (Linux
//! `schedstat`; the servers are the first processes named `nats-server`
//! and `redis-server`). `--dump PREFIX` writes those times of every message
//! to `PREFIX-<round>-<hand|rt>.txt`. `--nats URL` uses another NATS server
//! (e.g. one started with `GODEBUG=gctrace=1` to see its garbage
//! collections).
//!
//! ```text
//! cargo bench -p syncflow --features nats,redis --bench w3_nats_redis -- --latency --detail
//! cargo bench -p syncflow --features nats,redis --bench w3_nats_redis -- --latency --nats nats://127.0.0.1:4223 --dump /tmp/w3
//! ```

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use syncflow::connector::nats::{NatsSource, NatsSourceConfig};
use syncflow::connector::redis::{RedisStreamSink, RedisStreamSinkConfig};
use syncflow::connector::serde_decode;
use syncflow::prelude::*;

const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";
/// The NATS server (`--nats`), when not [`DEFAULT_NATS`].
static NATS_URL: OnceLock<String> = OnceLock::new();
const REDIS: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Deserialize)]
struct LogRecord {
    /// The send time of the latency part (nanoseconds since the latency
    /// part's origin); absent (0) in the throughput part.
    #[serde(default)]
    sent: u64,
    ts: u64,
    host: String,
    status: u16,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct LogOut {
    #[serde(skip_serializing_if = "is_zero")]
    sent: u64,
    ts: u64,
    host: String,
    status: u16,
    kb: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Keeps four fields (the work of both variants).
#[sync_function]
fn w3_project(r: LogRecord) -> LogOut {
    project(r)
}

#[inline]
fn project(r: LogRecord) -> LogOut {
    if r.sent != 0 {
        note_step(r.ts);
    }
    LogOut {
        sent: r.sent,
        ts: r.ts,
        host: r.host,
        status: r.status,
        kb: r.bytes as f64 / 1024.0,
    }
}

/// The `ts` of message 0; message `i` has `TS0 + i`.
const TS0: u64 = 1_700_000_000_000;

fn line(i: u64) -> String {
    format!(
        r#"{{"ts":{},"host":"web-{:03}.example.internal","level":"info","status":{},"bytes":{},"path":"/api/v1/items/{}","msg":"request handled in {}us by worker {}","user":"user{}@example.com"}}"#,
        TS0 + i,
        i % 100,
        [200, 200, 404, 500][(i % 4) as usize],
        100 + (i * 37) % 9000,
        i,
        (i * 13) % 5000,
        i % 16,
        i % 1000
    )
}

fn up(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("valid address");
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

struct Opts {
    messages: u64,
    rounds: usize,
    throughput: bool,
    latency: bool,
    /// Messages per second of the latency part.
    rate: u64,
    /// Measured seconds per latency round, after the warm-up.
    seconds: f64,
    /// Seconds of each latency round before measuring starts.
    warmup: f64,
    latency_rounds: usize,
    /// Prints where each latency round's time went (see the module docs).
    detail: bool,
    /// Another NATS server than [`DEFAULT_NATS`].
    nats: Option<String>,
    /// Writes each latency round's per-message times to files starting so.
    dump: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        messages: 100_000,
        rounds: 3,
        throughput: true,
        latency: true,
        rate: 20_000,
        seconds: 10.0,
        warmup: 1.0,
        latency_rounds: 3,
        detail: false,
        nats: None,
        dump: None,
    };
    let mut args = std::env::args().skip(1);
    fn number<T: std::str::FromStr>(args: &mut impl Iterator<Item = String>, flag: &str) -> T {
        args.next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{flag} takes a number"))
    }
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => o.messages = number(&mut args, "--messages"),
            "--rounds" => o.rounds = number(&mut args, "--rounds"),
            "--quick" => {
                o.rounds = 1;
                o.seconds = 3.0;
            }
            "--latency" => o.throughput = false,
            "--throughput" => o.latency = false,
            "--rate" => o.rate = number(&mut args, "--rate"),
            "--seconds" => o.seconds = number(&mut args, "--seconds"),
            "--warmup" => o.warmup = number(&mut args, "--warmup"),
            "--latency-rounds" => o.latency_rounds = number(&mut args, "--latency-rounds"),
            "--detail" => o.detail = true,
            "--nats" => o.nats = Some(args.next().expect("--nats takes a URL")),
            "--dump" => o.dump = Some(args.next().expect("--dump takes a file name prefix")),
            // Passed by `cargo bench`; filters are not supported.
            _ => {}
        }
    }
    o
}

fn nats() -> &'static str {
    NATS_URL.get().map_or(DEFAULT_NATS, String::as_str)
}

/// The source's configuration: the defaults a user gets, on [`nats`].
fn source_config(stream: &str, durable: &str) -> NatsSourceConfig {
    NatsSourceConfig {
        url: nats().to_string(),
        ..NatsSourceConfig::new(stream, durable)
    }
}

async fn xlen(con: &mut redis::aio::MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(con)
        .await
        .unwrap_or(0)
}

/// The runtime: NatsSource → flow!(w3_project) → RedisStreamSink.
async fn run_runtime(stream: &str, durable: &str, out: &str, total: u64) -> Duration {
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let source = NatsSource::<LogRecord>::connect(&source_config(stream, durable), serde_decode)
        .await
        .unwrap();
    let sink = RedisStreamSink::connect(&RedisStreamSinkConfig::new(out))
        .await
        .unwrap();
    let runtime = Runtime::new(flow!(w3_project))
        .source(source)
        .sink(sink)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let started = Instant::now();
    let run = tokio::spawn(runtime.run());
    while xlen(&mut redis, out).await < total {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = started.elapsed();
    stop.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.output, total);
    elapsed
}

/// The hand-written loop: fetch a batch, decode, project, encode, one
/// XADD pipeline, then acknowledge the batch.
async fn run_hand(
    js: &jetstream::Context,
    stream: &str,
    durable: &str,
    out: &str,
    total: u64,
) -> Duration {
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let consumer: consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.to_string()),
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let mut done = 0u64;
    let mut buf = Vec::with_capacity(512);
    while done < total {
        let mut messages = Vec::with_capacity(1000);
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            messages.push(message.unwrap());
        }
        if messages.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for message in &messages {
            let record: LogRecord = serde_json::from_slice(&message.payload).unwrap();
            buf.clear();
            serde_json::to_writer(&mut buf, &project(record)).unwrap();
            pipe.cmd("XADD")
                .arg(out)
                .arg("*")
                .arg("payload")
                .arg(&buf[..])
                .ignore();
        }
        pipe.exec_async(&mut redis).await.unwrap();
        for message in &messages {
            message.ack().await.unwrap();
        }
        done += messages.len() as u64;
    }
    let elapsed = started.elapsed();
    assert_eq!(xlen(&mut redis, out).await, total);
    elapsed
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let o = opts();
    if let Some(url) = &o.nats {
        let _ = NATS_URL.set(url.clone());
    }
    // The variant under test has this runtime (default size: one worker
    // per core) to itself; the producer and the observer of the latency
    // part run on threads of their own.
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("w3-variant")
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(run(o));
}

async fn run(o: Opts) {
    let nats_addr = nats().trim_start_matches("nats://");
    if !up(nats_addr) || !up("127.0.0.1:6379") {
        eprintln!(
            "w3_nats_redis skipped: needs nats-server -js on {nats_addr} and redis-server on 127.0.0.1:6379"
        );
        return;
    }
    let client = async_nats::connect(nats()).await.unwrap();
    let js = jetstream::new(client);
    if o.throughput {
        throughput(&o, &js).await;
    }
    if o.latency {
        latency(&o, &js).await;
    }
}

async fn throughput(o: &Opts, js: &jetstream::Context) {
    let tag = std::process::id();
    let name = format!("W3_{tag}");
    let subject = format!("w3_{tag}.logs");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut bytes = 0;
    let mut acks = Vec::with_capacity(5000);
    for i in 0..o.messages {
        let text = line(i);
        bytes += text.len();
        acks.push(js.publish(subject.clone(), text.into()).await.unwrap());
        if acks.len() == 5000 {
            for ack in acks.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await.unwrap();
    }
    eprintln!(
        "w3: {} messages of {} bytes on average in stream {name}; {} round(s)",
        o.messages,
        bytes as u64 / o.messages.max(1),
        o.rounds
    );

    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let (mut hand, mut runtime, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..o.rounds {
        let out_hand = format!("w3_{tag}_hand_{round}");
        let out_rt = format!("w3_{tag}_rt_{round}");
        let h = run_hand(js, &name, &format!("hand{round}"), &out_hand, o.messages).await;
        let r = run_runtime(&name, &format!("rt{round}"), &out_rt, o.messages).await;
        let (hs, rs) = (
            o.messages as f64 / h.as_secs_f64(),
            o.messages as f64 / r.as_secs_f64(),
        );
        eprintln!(
            "round {round}: hand-written {hs:>9.0} msg/s ({h:.2?})   runtime {rs:>9.0} msg/s ({r:.2?})   runtime/hand time {:.2}",
            r.as_secs_f64() / h.as_secs_f64()
        );
        hand.push(hs);
        runtime.push(rs);
        ratios.push(r.as_secs_f64() / h.as_secs_f64());
        let _: () = redis::cmd("DEL")
            .arg(&out_hand)
            .arg(&out_rt)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    println!(
        "w3 nats→redis, {} messages: hand-written {:.0} msg/s, runtime {:.0} msg/s; runtime time / hand time = {:.2} (median of {} rounds)",
        o.messages,
        median(hand),
        median(runtime),
        median(ratios),
        o.rounds
    );
    let _ = js.delete_stream(&name).await;
}

// ---- Latency at a fixed rate ----

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Hand,
    Runtime,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Hand => "hand-written",
            Variant::Runtime => "runtime",
        }
    }
}

/// A W3 line that starts with its send time.
fn timed_line(i: u64, sent: u64) -> String {
    let text = line(i);
    format!(r#"{{"sent":{sent},{}"#, &text[1..])
}

/// The clock of the latency part: send times are nanoseconds since this
/// instant; with the same instant on the Unix clock, in ns (to compare with
/// the servers' timestamps).
static ORIGIN: LazyLock<(Instant, u64)> = LazyLock::new(|| {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (Instant::now(), unix)
});

/// Nanoseconds since [`ORIGIN`].
fn now_ns() -> u64 {
    ORIGIN.0.elapsed().as_nanos() as u64
}

/// A Unix time in ns as ns since [`ORIGIN`].
fn from_unix(unix_ns: u64) -> u64 {
    unix_ns.saturating_sub(ORIGIN.1)
}

/// Whether the step notes when it ran (`--detail`, `--dump`).
static TIMING: AtomicBool = AtomicBool::new(false);
/// (message index, when the step ran) of every timed message since the
/// last take.
static STEP_RAN: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// Notes when the step ran for the message with this `ts` (both variants
/// call it from their step).
fn note_step(ts: u64) {
    if TIMING.load(Ordering::Relaxed) {
        let now = now_ns();
        if let Ok(mut ran) = STEP_RAN.lock() {
            ran.push((ts - TS0, now));
        }
    }
}

/// The 1-minute load average, as `/proc/loadavg` gives it ("?" elsewhere).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Runs `task` on a new OS thread with its own current-thread tokio
/// runtime (as a separate process would), and hands its result back with
/// the thread's scheduler figures.
fn on_own_thread<T, F>(
    name: &str,
    task: impl FnOnce() -> F + Send + 'static,
) -> tokio::sync::oneshot::Receiver<(T, Sched)>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime");
            let result = runtime.block_on(task());
            let sched = Sched::read("/proc/thread-self/schedstat");
            let _ = tx.send((result, sched));
        })
        .expect("a thread");
    rx
}

/// CPU time, time spent runnable but waiting for a CPU (ns), and times
/// scheduled, from Linux's `schedstat`; zero where it cannot be read.
#[derive(Clone, Copy, Default)]
struct Sched {
    cpu: u64,
    waited: u64,
    slices: u64,
}

impl Sched {
    fn read(path: &str) -> Sched {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0));
        Sched {
            cpu: fields.next().unwrap_or(0),
            waited: fields.next().unwrap_or(0),
            slices: fields.next().unwrap_or(0),
        }
    }

    /// The sum over the threads of process `pid` whose name starts with
    /// `prefix` ("" for all).
    fn threads(pid: &str, prefix: &str) -> Sched {
        let mut sum = Sched::default();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return sum;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if name.starts_with(prefix) {
                let one = Sched::read(&dir.join("schedstat").to_string_lossy());
                sum.cpu += one.cpu;
                sum.waited += one.waited;
                sum.slices += one.slices;
            }
        }
        sum
    }

    fn minus(self, before: Sched) -> Sched {
        Sched {
            cpu: self.cpu.saturating_sub(before.cpu),
            waited: self.waited.saturating_sub(before.waited),
            slices: self.slices.saturating_sub(before.slices),
        }
    }
}

/// The process id of the first process named `name`, if any.
fn pid_of(name: &str) -> Option<String> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            (pid.bytes().all(|b| b.is_ascii_digit()) && comm.trim() == name).then_some(pid)
        })
}

/// The scheduler figures of the variant's runtime threads and of the
/// servers (the first processes named `nats-server` and `redis-server`).
fn sched_snapshot() -> [Sched; 3] {
    let server = |name| pid_of(name).map_or_else(Sched::default, |pid| Sched::threads(&pid, ""));
    [
        Sched::threads("self", "w3-variant"),
        server("nats-server"),
        server("redis-server"),
    ]
}

/// Whom the scheduler figures of a round are about.
const SCHED_WHO: [&str; 5] = [
    "variant",
    "producer",
    "observer",
    "nats-server",
    "redis-server",
];

/// Publishes `total` messages at `rate` per second over its own
/// connection: every millisecond, as many as are due by then (so a late
/// tick does not lower the rate), each stamped just before it is handed to
/// the client. Returns the seconds it took.
async fn produce(subject: String, rate: u64, total: u64) -> f64 {
    let client = async_nats::connect(nats()).await.unwrap();
    let subject = async_nats::Subject::from(subject);
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            let text = timed_line(sent, now_ns());
            client.publish(subject.clone(), text.into()).await.unwrap();
            sent += 1;
        }
        client.flush().await.unwrap();
    }
    started.elapsed().as_secs_f64()
}

#[derive(Deserialize)]
struct Sent {
    sent: u64,
    ts: u64,
}

/// One output entry as the observer saw it.
#[derive(Clone, Copy)]
struct Seen {
    /// The message's index (its `ts` − [`TS0`]).
    index: u64,
    /// Send time, ns since [`ORIGIN`].
    sent: u64,
    /// When the observer read the entry, ns since [`ORIGIN`].
    read: u64,
    /// When Redis added the entry, ns since [`ORIGIN`]: the time part of
    /// its ID (whole ms on Redis's clock) plus half a millisecond.
    added: u64,
}

/// Reads the output stream over its own connection until `total` entries
/// arrived.
async fn observe(out: String, total: u64) -> Vec<Seen> {
    use redis::AsyncCommands;
    use redis::streams::{StreamReadOptions, StreamReadReply};
    // A thread starved of CPU reads a reply late: more patience than the
    // client's default (0.5 s) keeps a loaded machine from failing the run.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut con = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let options = StreamReadOptions::default().block(100).count(5000);
    let mut last = "0-0".to_string();
    let mut entries = Vec::with_capacity(total as usize);
    let mut progress = Instant::now();
    while (entries.len() as u64) < total {
        let reply: Option<StreamReadReply> = con
            .xread_options(&[&out], &[&last], &options)
            .await
            .unwrap();
        let read = now_ns();
        let Some(reply) = reply else {
            assert!(
                progress.elapsed() < Duration::from_secs(30),
                "{out}: no new output for 30 s after {} of {total} entries",
                entries.len()
            );
            continue;
        };
        for key in reply.keys {
            for entry in key.ids {
                let Some(redis::Value::BulkString(payload)) = entry.map.get("payload") else {
                    panic!("{out}: entry {} has no payload", entry.id);
                };
                let Sent { sent, ts } = serde_json::from_slice(payload).unwrap();
                let added_ms: u64 = entry
                    .id
                    .split_once('-')
                    .and_then(|(ms, _)| ms.parse().ok())
                    .unwrap();
                entries.push(Seen {
                    index: ts - TS0,
                    sent,
                    read,
                    added: from_unix(added_ms * 1_000_000 + 500_000),
                });
                last = entry.id;
            }
        }
        progress = Instant::now();
    }
    entries
}

/// When the server stored each message of the stream, ns since
/// [`ORIGIN`], by message index: read back through an ordered consumer
/// (the time is in each delivery's acknowledgement subject).
async fn stored_times(js: &jetstream::Context, name: &str, total: u64) -> Vec<u64> {
    let consumer = js
        .get_stream(name)
        .await
        .unwrap()
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut stored = vec![0u64; total as usize];
    for _ in 0..total {
        let message = messages.next().await.unwrap().unwrap();
        let Sent { ts, .. } = serde_json::from_slice(&message.payload).unwrap();
        let reply = message.reply.as_deref().unwrap_or_default();
        // $JS.ACK.<stream>.<consumer>.<delivered>.<seq>.<cseq>.<time>.<pending>
        // (two more tokens after $JS.ACK in the long form).
        let tokens: Vec<&str> = reply.split('.').collect();
        let at = if tokens.len() == 9 { 7 } else { 9 };
        let unix: u64 = tokens.get(at).and_then(|t| t.parse().ok()).unwrap();
        stored[(ts - TS0) as usize] = from_unix(unix);
    }
    stored
}

/// p50, p99, p99.9, max of some values.
#[derive(Clone, Copy, Default)]
struct Quantiles {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

fn quantiles(mut v: Vec<u64>) -> Quantiles {
    if v.is_empty() {
        return Quantiles::default();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Quantiles {
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The stages of a message's way, in order (see [`Detail`]).
const STAGES: [&str; 4] = [
    "publish → stored in NATS",
    "stored → step ran",
    "step → added by Redis",
    "added → read by observer",
];

/// Where the time of one variant's round went (`--detail`).
struct Detail {
    /// Each of [`STAGES`] (the clocks of NATS and Redis are this machine's,
    /// Redis's to the millisecond: ±0.5 ms on the last two).
    stages: [Quantiles; 4],
    /// Mean time in each of [`STAGES`] of the messages at or above the p99.
    slowest: [u64; 4],
    /// p99 of send → read per measured second, in send order.
    per_second_p99: Vec<u64>,
    /// Messages above 10 ms.
    over_10ms: usize,
    /// CPU and run-queue wait of each of [`SCHED_WHO`] during the round.
    sched: [Sched; 5],
}

/// What one variant did in one round.
struct RoundResult {
    /// Send → read by the observer, of the messages sent after the warm-up.
    total: Quantiles,
    /// Messages per second the producer achieved.
    rate: f64,
    detail: Option<Detail>,
}

/// Send → read of each message sent after the warm-up (at `from`).
fn measured(entries: &[Seen], from: u64) -> impl Iterator<Item = &Seen> {
    entries.iter().filter(move |e| e.sent >= from)
}

fn time_to_read(e: &Seen) -> u64 {
    e.read.saturating_sub(e.sent)
}

/// The time of each message per stage: [`STAGES`], indexed like `entries`.
fn stage_times(entries: &[Seen], stored: &[u64], ran: &[u64]) -> Vec<[u64; 4]> {
    entries
        .iter()
        .map(|e| {
            let i = e.index as usize;
            [
                stored[i].saturating_sub(e.sent),
                ran[i].saturating_sub(stored[i]),
                e.added.saturating_sub(ran[i]),
                e.read.saturating_sub(e.added),
            ]
        })
        .collect()
}

fn detail(entries: &[Seen], stages: &[[u64; 4]], from: u64, sched: [Sched; 5]) -> Detail {
    let total = quantiles(measured(entries, from).map(time_to_read).collect());
    let kept: Vec<(&Seen, &[u64; 4])> = entries
        .iter()
        .zip(stages)
        .filter(|(e, _)| e.sent >= from)
        .collect();
    let slow: Vec<&[u64; 4]> = kept
        .iter()
        .filter(|(e, _)| time_to_read(e) >= total.p99)
        .map(|(_, s)| *s)
        .collect();
    let mut seconds: Vec<Vec<u64>> = Vec::new();
    for e in measured(entries, from) {
        let s = ((e.sent - from) / 1_000_000_000) as usize;
        if seconds.len() <= s {
            seconds.resize_with(s + 1, Vec::new);
        }
        seconds[s].push(time_to_read(e));
    }
    Detail {
        stages: std::array::from_fn(|i| quantiles(kept.iter().map(|(_, s)| s[i]).collect())),
        slowest: std::array::from_fn(|i| {
            slow.iter().map(|s| s[i]).sum::<u64>() / slow.len().max(1) as u64
        }),
        per_second_p99: seconds.into_iter().map(|s| quantiles(s).p99).collect(),
        over_10ms: measured(entries, from)
            .filter(|e| time_to_read(e) > 10_000_000)
            .count(),
        sched,
    }
}

/// Writes one line per message: index, then sent, stored, step ran, added,
/// read (ns since [`ORIGIN`]); messages before `from` are the warm-up.
fn dump(path: &str, entries: &[Seen], stored: &[u64], ran: &[u64], from: u64) {
    use std::io::Write as _;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(
        file,
        "# index sent stored step_ran added read (ns; measured from {from})"
    )
    .unwrap();
    for e in entries {
        let i = e.index as usize;
        writeln!(
            file,
            "{} {} {} {} {} {}",
            e.index, e.sent, stored[i], ran[i], e.added, e.read
        )
        .unwrap();
    }
}

/// One variant at a fixed rate on a fresh stream. The variant runs on this
/// (the main) runtime; the producer and the observer each on their own
/// thread and runtime, as separate processes would.
async fn latency_round(
    o: &Opts,
    js: &jetstream::Context,
    variant: Variant,
    round: usize,
) -> RoundResult {
    let tag = std::process::id();
    let v = match variant {
        Variant::Hand => "hand",
        Variant::Runtime => "rt",
    };
    let name = format!("W3L_{tag}_{v}_{round}");
    let subject = format!("w3l_{tag}_{v}_{round}.logs");
    let out = format!("w3l_{tag}_{v}_{round}_out");
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let total = (o.rate as f64 * (o.warmup + o.seconds)) as u64;
    let from = now_ns() + (o.warmup * 1e9) as u64;
    let timing = o.detail || o.dump.is_some();
    TIMING.store(timing, Ordering::Relaxed);
    STEP_RAN.lock().unwrap().clear();
    let before = sched_snapshot();

    // The consumer side starts first (the stream keeps what is published
    // before it reads); the warm-up covers its start.
    let running = match variant {
        Variant::Hand => {
            let (js, name, out) = (js.clone(), name.clone(), out.clone());
            Running::Hand(tokio::spawn(async move {
                run_hand(&js, &name, "hand", &out, total).await;
            }))
        }
        Variant::Runtime => {
            let source =
                NatsSource::<LogRecord>::connect(&source_config(&name, "rt"), serde_decode)
                    .await
                    .unwrap();
            let sink = RedisStreamSink::connect(&RedisStreamSinkConfig::new(out.as_str()))
                .await
                .unwrap();
            let runtime = Runtime::new(flow!(w3_project))
                .source(source)
                .sink(sink)
                .handle_signals(false);
            Running::Runtime(runtime.shutdown_handle(), tokio::spawn(runtime.run()))
        }
    };
    let observer = on_own_thread("w3-observer", {
        let out = out.clone();
        move || observe(out, total)
    });
    let rate = o.rate;
    let producer = on_own_thread("w3-producer", move || produce(subject, rate, total));
    let (secs, producer_sched) = producer.await.expect("the producer thread failed");
    let (entries, observer_sched) = observer.await.expect("the observer thread failed");
    let after = sched_snapshot();
    match running {
        Running::Hand(run) => run.await.unwrap(),
        Running::Runtime(stop, run) => {
            stop.shutdown();
            let summary = run.await.unwrap().unwrap();
            assert_eq!(summary.output, total);
        }
    }
    let mut result = RoundResult {
        total: quantiles(measured(&entries, from).map(time_to_read).collect()),
        rate: total as f64 / secs,
        detail: None,
    };
    if timing {
        let mut ran = vec![0u64; total as usize];
        for (index, at) in std::mem::take(&mut *STEP_RAN.lock().unwrap()) {
            if let Some(slot) = ran.get_mut(index as usize) {
                *slot = at;
            }
        }
        let stored = stored_times(js, &name, total).await;
        if let Some(prefix) = &o.dump {
            dump(
                &format!("{prefix}-{round}-{v}.txt"),
                &entries,
                &stored,
                &ran,
                from,
            );
        }
        let sched = [
            after[0].minus(before[0]),
            producer_sched,
            observer_sched,
            after[1].minus(before[1]),
            after[2].minus(before[2]),
        ];
        let stages = stage_times(&entries, &stored, &ran);
        result.detail = Some(detail(&entries, &stages, from, sched));
    }
    let mut redis = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&out)
        .query_async(&mut redis)
        .await
        .unwrap();
    let _ = js.delete_stream(&name).await;
    result
}

enum Running {
    Hand(tokio::task::JoinHandle<()>),
    Runtime(
        Shutdown,
        tokio::task::JoinHandle<Result<RunSummary, RunError>>,
    ),
}

fn print_detail(d: &Detail, total: &Quantiles) {
    let seconds: Vec<String> = d
        .per_second_p99
        .iter()
        .map(|&p| format!("{:.1}", ms(p)))
        .collect();
    println!(
        "    p99.9 {:.2} ms, {} messages over 10 ms; p99 per second: {}",
        ms(total.p999),
        d.over_10ms,
        seconds.join(" ")
    );
    for (i, stage) in STAGES.iter().enumerate() {
        println!(
            "    {stage:<26} p50 {:>6.2}  p99 {:>6.2}  max {:>6.2} ms; the slowest 1% spend {:>6.2} ms here",
            ms(d.stages[i].p50),
            ms(d.stages[i].p99),
            ms(d.stages[i].max),
            ms(d.slowest[i]),
        );
    }
    let sched: Vec<String> = SCHED_WHO
        .iter()
        .zip(d.sched)
        .map(|(who, s)| {
            format!(
                "{who} {:.2}/{:.2}/{}k",
                s.cpu as f64 / 1e9,
                s.waited as f64 / 1e9,
                s.slices / 1000
            )
        })
        .collect();
    println!(
        "    CPU s / s runnable waiting for a CPU / times scheduled: {}",
        sched.join(", ")
    );
}

async fn latency(o: &Opts, js: &jetstream::Context) {
    eprintln!(
        "w3 latency: {} msg/s for {} s (+{} s warm-up) per variant, {} round(s); load average {}",
        o.rate,
        o.seconds,
        o.warmup,
        o.latency_rounds,
        load_average()
    );
    let mut ratios = Vec::new();
    for round in 0..o.latency_rounds {
        // Alternate which variant goes first.
        let order = if round % 2 == 0 {
            [Variant::Hand, Variant::Runtime]
        } else {
            [Variant::Runtime, Variant::Hand]
        };
        let mut p99 = [0u64; 2];
        for variant in order {
            let r = latency_round(o, js, variant, round).await;
            println!(
                "w3 latency round {round}: {:<12} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   (sent {:.0} msg/s, load {})",
                variant.label(),
                ms(r.total.p50),
                ms(r.total.p99),
                ms(r.total.max),
                r.rate,
                load_average()
            );
            if let Some(d) = &r.detail {
                print_detail(d, &r.total);
            }
            p99[usize::from(variant == Variant::Runtime)] = r.total.p99;
        }
        let ratio = p99[1] as f64 / p99[0] as f64;
        println!(
            "w3 latency round {round}: runtime p99 / hand-written p99 = {ratio:.2} (target ≤ 2)"
        );
        ratios.push(ratio);
    }
    if ratios.len() > 1 {
        println!(
            "w3 latency: runtime p99 / hand-written p99 = {:.2} (median of {} rounds)",
            median(ratios),
            o.latency_rounds
        );
    }
}
