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
//! the entry minus the time it was sent. The same producer and observer
//! serve both variants, so their own costs are the same in both. Each of
//! `--latency-rounds` (default 3) runs both variants, in alternating order.
//! Prints p50, p99 and max per variant and round, and the ratio of the
//! runtime's p99 to the hand-written loop's, with its median over the
//! rounds (target ≤ 2). The runtime runs with the defaults a user gets
//! (`NatsSourceConfig::new`, `RedisStreamSinkConfig::new`, the runtime's
//! batch size).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use syncflow::connector::nats::{NatsSource, NatsSourceConfig};
use syncflow::connector::redis::{RedisStreamSink, RedisStreamSinkConfig};
use syncflow::connector::serde_decode;
use syncflow::prelude::*;

const NATS: &str = "nats://127.0.0.1:4222";
const REDIS: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Deserialize)]
struct LogRecord {
    /// The send time of the latency part (nanoseconds since the bench's
    /// start); absent (0) in the throughput part.
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
    LogOut {
        sent: r.sent,
        ts: r.ts,
        host: r.host,
        status: r.status,
        kb: r.bytes as f64 / 1024.0,
    }
}

fn line(i: u64) -> String {
    format!(
        r#"{{"ts":{},"host":"web-{:03}.example.internal","level":"info","status":{},"bytes":{},"path":"/api/v1/items/{}","msg":"request handled in {}us by worker {}","user":"user{}@example.com"}}"#,
        1_700_000_000_000 + i,
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
            // Passed by `cargo bench`; filters are not supported.
            _ => {}
        }
    }
    o
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
    let source =
        NatsSource::<LogRecord>::connect(&NatsSourceConfig::new(stream, durable), serde_decode)
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

#[tokio::main]
async fn main() {
    if !up("127.0.0.1:4222") || !up("127.0.0.1:6379") {
        eprintln!(
            "w3_nats_redis skipped: needs nats-server -js on 127.0.0.1:4222 and redis-server on 127.0.0.1:6379"
        );
        return;
    }
    let o = opts();
    let client = async_nats::connect(NATS).await.unwrap();
    let js = jetstream::new(client.clone());
    if o.throughput {
        throughput(&o, &js).await;
    }
    if o.latency {
        latency(&o, &client, &js).await;
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

/// Nanoseconds since `origin`.
fn ns_since(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}

/// Publishes `total` messages at `rate` per second: every millisecond, as
/// many as are due by then (so a late tick does not lower the rate), each
/// stamped just before it is handed to the client. Returns the seconds it
/// took.
async fn produce(
    client: &async_nats::Client,
    subject: &async_nats::Subject,
    origin: Instant,
    rate: u64,
    total: u64,
) -> f64 {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            let text = timed_line(sent, ns_since(origin));
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
}

/// Reads the output stream until `total` entries arrived; returns the
/// latency (ns) of each entry sent at or after `from` ns.
async fn observe(out: String, total: u64, origin: Instant, from: u64) -> Vec<u64> {
    use redis::AsyncCommands;
    use redis::streams::{StreamReadOptions, StreamReadReply};
    let mut con = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let options = StreamReadOptions::default().block(100).count(5000);
    let mut last = "0-0".to_string();
    let mut seen = 0u64;
    let mut latencies = Vec::with_capacity(total as usize);
    let mut progress = Instant::now();
    while seen < total {
        let reply: Option<StreamReadReply> = con
            .xread_options(&[&out], &[&last], &options)
            .await
            .unwrap();
        let now = ns_since(origin);
        let Some(reply) = reply else {
            assert!(
                progress.elapsed() < Duration::from_secs(30),
                "{out}: no new output for 30 s after {seen} of {total} entries"
            );
            continue;
        };
        for key in reply.keys {
            for entry in key.ids {
                if let Some(redis::Value::BulkString(payload)) = entry.map.get("payload") {
                    let sent = serde_json::from_slice::<Sent>(payload).unwrap().sent;
                    if sent >= from {
                        latencies.push(now.saturating_sub(sent));
                    }
                }
                last = entry.id;
                seen += 1;
            }
        }
        progress = Instant::now();
    }
    latencies
}

/// p50, p99, max (ns) of the latencies.
fn percentiles(mut v: Vec<u64>) -> (u64, u64, u64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99), at(1.0))
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// One variant at a fixed rate on a fresh stream; returns (p50, p99, max)
/// and the achieved send rate.
async fn latency_round(
    o: &Opts,
    client: &async_nats::Client,
    js: &jetstream::Context,
    variant: Variant,
    round: usize,
) -> ((u64, u64, u64), f64) {
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
    let origin = Instant::now();
    let from = (o.warmup * 1e9) as u64;

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
            let source = NatsSource::<LogRecord>::connect(
                &NatsSourceConfig::new(name.as_str(), "rt"),
                serde_decode,
            )
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
    let observer = tokio::spawn(observe(out.clone(), total, origin, from));
    let subject = async_nats::Subject::from(subject);
    let secs = produce(client, &subject, origin, o.rate, total).await;
    let latencies = observer.await.unwrap();
    match running {
        Running::Hand(run) => run.await.unwrap(),
        Running::Runtime(stop, run) => {
            stop.shutdown();
            let summary = run.await.unwrap().unwrap();
            assert_eq!(summary.output, total);
        }
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
    (percentiles(latencies), total as f64 / secs)
}

enum Running {
    Hand(tokio::task::JoinHandle<()>),
    Runtime(
        Shutdown,
        tokio::task::JoinHandle<Result<RunSummary, RunError>>,
    ),
}

async fn latency(o: &Opts, client: &async_nats::Client, js: &jetstream::Context) {
    eprintln!(
        "w3 latency: {} msg/s for {} s (+{} s warm-up) per variant, {} round(s)",
        o.rate, o.seconds, o.warmup, o.latency_rounds
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
            let ((p50, p, max), rate) = latency_round(o, client, js, variant, round).await;
            println!(
                "w3 latency round {round}: {:<12} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   (sent {rate:.0} msg/s)",
                variant.label(),
                ms(p50),
                ms(p),
                ms(max)
            );
            p99[usize::from(variant == Variant::Runtime)] = p;
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
