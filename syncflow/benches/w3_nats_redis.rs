//! W3: NATS JetStream → a trivial function → Redis stream (`XADD`), through
//! the runtime, against a hand-written async-nats → redis loop in the same
//! run. Needs nats-server -js on 127.0.0.1:4222 and Redis on 127.0.0.1:6379;
//! skips with a message when either is missing.
//!
//! ```text
//! cargo bench -p syncflow --features nats,redis --bench w3_nats_redis
//! cargo bench -p syncflow --features nats,redis --bench w3_nats_redis -- --messages 20000 --rounds 1
//! ```
//!
//! Both variants read the same 100 000 messages of ~200 bytes from one
//! stream (each round with a fresh durable consumer), decode each into a
//! struct, keep four fields, encode the result as JSON and append it to a
//! fresh Redis stream, acknowledging the messages once Redis confirmed their
//! outputs. The time runs from the first read until the last output is in
//! Redis. Prints messages per second, the median over the rounds, and the
//! ratio of the runtime's time to the hand-written loop's.

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
    ts: u64,
    host: String,
    status: u16,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct LogOut {
    ts: u64,
    host: String,
    status: u16,
    kb: f64,
}

/// Keeps four fields (the work of both variants).
#[sync_function]
fn w3_project(r: LogRecord) -> LogOut {
    project(r)
}

#[inline]
fn project(r: LogRecord) -> LogOut {
    LogOut {
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
}

fn opts() -> Opts {
    let mut o = Opts {
        messages: 100_000,
        rounds: 3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => {
                o.messages = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--messages takes a number")
            }
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds takes a number")
            }
            "--quick" => o.rounds = 1,
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
    let tag = std::process::id();
    let name = format!("W3_{tag}");
    let subject = format!("w3_{tag}.logs");
    let js = jetstream::new(async_nats::connect(NATS).await.unwrap());
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
        let h = run_hand(&js, &name, &format!("hand{round}"), &out_hand, o.messages).await;
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
