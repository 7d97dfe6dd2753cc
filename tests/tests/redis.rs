//! The Redis connectors against a real server (127.0.0.1:6379): streams
//! with consumer groups (round trip, at-least-once, reconnects, bad input,
//! two processes, taking over a dead consumer's entries) and the key sink
//! fed by change events.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use syncflow::connector::redis::{
    KeyMode, RedisKeySink, RedisKeySinkConfig, RedisStreamSink, RedisStreamSinkConfig,
    RedisStreamSource, RedisStreamSourceConfig,
};
use syncflow::connector::{ConnectorError, Sink, serde_decode};
use syncflow::prelude::*;
use syncflow_tests::proxy::Proxy;
use syncflow_tests::services::{require, unique};

const REDIS: &str = "redis://127.0.0.1:6379";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct Order {
    id: u64,
    region: String,
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct Invoice {
    id: u64,
    region: String,
    euros: f64,
    by: u32,
}

/// Turns an order into an invoice, tagged with the process that made it.
#[sync_function]
fn redis_invoice(o: Order) -> Invoice {
    Invoice {
        id: o.id,
        region: o.region,
        euros: o.cents as f64 / 100.0,
        by: std::process::id(),
    }
}

/// Like `redis_invoice`, slowly (so that two processes both get work).
#[sync_function]
fn redis_slow_invoice(o: Order) -> Invoice {
    std::thread::sleep(Duration::from_millis(2));
    redis_invoice(o)
}

/// Passes orders through.
#[sync_function]
fn redis_pass(o: Order) -> Order {
    o
}

/// Passes any JSON value through.
#[sync_function]
fn redis_pass_json(v: serde_json::Value) -> serde_json::Value {
    v
}

/// Passes orders through; stops the run after `stop.after` orders.
#[sync_function]
fn redis_stop_after(o: Order, stop: Res<StopAfter>) -> Order {
    if stop.seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 == stop.after {
        stop.handle.shutdown();
    }
    o
}

struct StopAfter {
    after: u64,
    seen: std::sync::atomic::AtomicU64,
    handle: Shutdown,
}

/// Shows the connectors' logs in the test's output (`RUST_LOG` filters).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "syncflow=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn order(id: u64) -> Order {
    Order {
        id,
        region: if id.is_multiple_of(2) { "eu" } else { "us" }.to_string(),
        cents: id as i64 * 100 + 5,
    }
}

async fn redis() -> MultiplexedConnection {
    redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn add_orders(con: &mut MultiplexedConnection, stream: &str, ids: impl Iterator<Item = u64>) {
    let mut pipe = redis::pipe();
    for id in ids {
        pipe.xadd(
            stream,
            "*",
            &[("payload", serde_json::to_string(&order(id)).unwrap())],
        )
        .ignore();
    }
    pipe.exec_async(con).await.unwrap();
}

/// The `payload` field of every entry of a stream, decoded.
async fn stream_contents<T: serde::de::DeserializeOwned>(
    con: &mut MultiplexedConnection,
    stream: &str,
) -> Vec<T> {
    let reply: redis::streams::StreamRangeReply = con.xrange_all(stream).await.unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            let payload: String = e.get("payload").unwrap();
            serde_json::from_str(&payload).unwrap()
        })
        .collect()
}

async fn xlen(con: &mut MultiplexedConnection, stream: &str) -> u64 {
    con.xlen(stream).await.unwrap()
}

/// Entries pending in the group: (total, per consumer).
async fn pending(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> (u64, HashMap<String, u64>) {
    let reply: redis::streams::StreamPendingReply = con.xpending(stream, group).await.unwrap();
    match reply {
        redis::streams::StreamPendingReply::Data(data) => (
            data.count as u64,
            data.consumers
                .iter()
                .map(|c| (c.name.clone(), c.pending as u64))
                .collect(),
        ),
        _ => (0, HashMap::new()),
    }
}

/// Waits until `check` holds, polling; panics with `what` after `limit`.
async fn wait_for<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn delete(con: &mut MultiplexedConnection, keys: &[&str]) {
    for key in keys {
        let _: () = con.del(*key).await.unwrap();
    }
}

fn source_config(stream: &str, group: &str, consumer: &str) -> RedisStreamSourceConfig {
    let mut config = RedisStreamSourceConfig::new(stream, group, consumer);
    config.block = Some(Duration::from_millis(100));
    config
}

/// A sink keeping everything written, for checks.
#[derive(Clone)]
struct Collect<T>(Arc<Mutex<Vec<T>>>);

impl<T> Default for Collect<T> {
    fn default() -> Self {
        Collect(Arc::default())
    }
}

impl<T: Clone + Send + Sync + 'static> Sink<T> for Collect<T> {
    fn name(&self) -> String {
        "collect".into()
    }
    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        self.0.lock().unwrap().extend_from_slice(items);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A sink whose every write fails.
struct FailFirst;

impl<T: Sync> Sink<T> for FailFirst {
    fn name(&self) -> String {
        "fail-first".into()
    }
    async fn write(&mut self, _: &[T]) -> Result<(), ConnectorError> {
        Err(ConnectorError::Other("the output is on fire".into()))
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

fn ids<'a>(orders: impl IntoIterator<Item = &'a Order>) -> BTreeSet<u64> {
    orders.into_iter().map(|o| o.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_the_runtime() {
    if !require("redis") {
        return;
    }
    let mut con = redis().await;
    let (input, output) = (unique("sf_rt_in"), unique("sf_rt_out"));
    add_orders(&mut con, &input, 1..=50).await;

    let source =
        RedisStreamSource::<Order>::connect(&source_config(&input, "billing", "b1"), serde_decode)
            .await
            .unwrap();
    let mut sink_config = RedisStreamSinkConfig::new(&output);
    sink_config.maxlen = Some(10_000);
    let sink = RedisStreamSink::connect(&sink_config).await.unwrap();
    let runtime = Runtime::new(flow!(redis_invoice))
        .source(source)
        .sink(sink)
        .batch_size(16)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for(Duration::from_secs(10), "50 invoices", async || {
        xlen(&mut con, &output).await >= 50
    })
    .await;
    stop.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.input, summary.output), (50, 50));

    let invoices: Vec<Invoice> = stream_contents(&mut con, &output).await;
    let expected: Vec<Invoice> = (1..=50).map(|id| redis_invoice(order(id))).collect();
    assert_eq!(invoices, expected, "in order, each once");
    assert_eq!(
        pending(&mut con, &input, "billing").await.0,
        0,
        "unacknowledged entries"
    );
    delete(&mut con, &[&input, &output]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_leaves_entries_pending_and_the_consumer_reads_them_again() {
    if !require("redis") {
        return;
    }
    let mut con = redis().await;
    let input = unique("sf_alo");
    add_orders(&mut con, &input, 1..=30).await;
    let config = source_config(&input, "alo", "c1");

    // The sink fails: the run stops, nothing is acknowledged.
    let err = Runtime::new(flow!(redis_pass))
        .source(
            RedisStreamSource::<Order>::builder(&input, "alo", "c1")
                .block(Duration::from_millis(100))
                .connect()
                .await
                .unwrap(),
        )
        .sink(FailFirst)
        .batch_size(10)
        .handle_signals(false)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Sink { .. }), "{err}");
    let (count, _) = pending(&mut con, &input, "alo").await;
    assert!(count > 0, "nothing left pending");

    // The same consumer starts again: its pending entries first, then the rest.
    let seen = Collect::default();
    let runtime = Runtime::new(flow!(redis_pass))
        .source(
            RedisStreamSource::<Order>::connect(&config, serde_decode)
                .await
                .unwrap(),
        )
        .sink(seen.clone())
        .batch_size(10)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for(Duration::from_secs(10), "all 30 orders", async || {
        seen.0.lock().unwrap().len() >= 30
    })
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let got: Vec<u64> = seen.0.lock().unwrap().iter().map(|o| o.id).collect();
    assert_eq!(got, (1..=30).collect::<Vec<_>>(), "each once, in order");
    assert_eq!(pending(&mut con, &input, "alo").await.0, 0);

    // A run stopped mid-way, then a new one: every entry arrives once.
    add_orders(&mut con, &input, 31..=90).await;
    let first = Collect::default();
    let stop = Shutdown::new();
    let flow = flow!(redis_stop_after).resource(StopAfter {
        after: 20,
        seen: Default::default(),
        handle: stop.clone(),
    });
    let summary = Runtime::new(flow)
        .source(
            RedisStreamSource::<Order>::connect(&config, serde_decode)
                .await
                .unwrap(),
        )
        .sink(first.clone())
        .batch_size(5)
        .with_shutdown(stop)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert!(
        summary.input >= 20 && summary.input < 60,
        "{}",
        summary.input
    );
    let second = Collect::default();
    let runtime = Runtime::new(flow!(redis_pass))
        .source(
            RedisStreamSource::<Order>::connect(&config, serde_decode)
                .await
                .unwrap(),
        )
        .sink(second.clone())
        .batch_size(5)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for(Duration::from_secs(10), "orders 31 to 90", async || {
        first.0.lock().unwrap().len() + second.0.lock().unwrap().len() >= 60
    })
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let all: Vec<u64> = first
        .0
        .lock()
        .unwrap()
        .iter()
        .chain(second.0.lock().unwrap().iter())
        .map(|o| o.id)
        .collect();
    assert_eq!(all, (31..=90).collect::<Vec<_>>(), "lost or repeated");
    delete(&mut con, &[&input]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_resumes_after_the_connection_is_cut() {
    if !require("redis") {
        return;
    }
    logs();
    let mut con = redis().await;
    let (input, output) = (unique("sf_cut_in"), unique("sf_cut_out"));
    let proxy = Proxy::start("127.0.0.1:6379").await.unwrap();
    let url = format!("redis://{}", proxy.addr());

    let mut config = source_config(&input, "cut", "c1");
    config.url = url.clone();
    let source = RedisStreamSource::<Order>::connect(&config, serde_decode)
        .await
        .unwrap();
    let mut sink_config = RedisStreamSinkConfig::new(&output);
    sink_config.url = url;
    let sink = RedisStreamSink::connect(&sink_config).await.unwrap();
    let runtime = Runtime::new(flow!(redis_pass))
        .source(source)
        .sink(sink)
        .batch_size(20)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    const TOTAL: u64 = 300;
    for chunk in 0..30 {
        add_orders(&mut con, &input, chunk * 10 + 1..=chunk * 10 + 10).await;
        if chunk == 10 {
            proxy.cut(Duration::from_millis(500)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    wait_for(
        Duration::from_secs(15),
        "every order after the cut",
        async || {
            xlen(&mut con, &output).await >= TOTAL
                && ids(stream_contents::<Order>(&mut con, &output).await.iter()).len() as u64
                    == TOTAL
        },
    )
    .await;
    wait_for(
        Duration::from_secs(15),
        "every entry acknowledged",
        async || pending(&mut con, &input, "cut").await.0 == 0,
    )
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let got: Vec<Order> = stream_contents(&mut con, &output).await;
    assert_eq!(ids(got.iter()), (1..=TOTAL).collect());
    eprintln!(
        "{} outputs for {TOTAL} inputs (duplicates are allowed)",
        got.len()
    );
    delete(&mut con, &[&input, &output]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_entries_are_dead_lettered_and_acknowledged() {
    if !require("redis") {
        return;
    }
    let mut con = redis().await;
    let input = unique("sf_bad");
    add_orders(&mut con, &input, 1..=2).await;
    let _: String = con
        .xadd(&input, "*", &[("payload", "{not json")])
        .await
        .unwrap();
    let _: String = con.xadd(&input, "*", &[("other", "x")]).await.unwrap();
    add_orders(&mut con, &input, 3..=4).await;

    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let seen = Collect::default();
    let runtime = Runtime::new(flow!(redis_pass))
        .source(
            RedisStreamSource::<Order>::connect(&source_config(&input, "bad", "c1"), serde_decode)
                .await
                .unwrap(),
        )
        .sink(seen.clone())
        .dead_letter(&dead)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for(Duration::from_secs(10), "the good orders", async || {
        seen.0.lock().unwrap().len() == 4
    })
    .await;
    stop.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.malformed, 2);
    assert_eq!(ids(seen.0.lock().unwrap().iter()), (1..=4).collect());
    let letters: Vec<DeadLetter> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2);
    assert_eq!(
        (letters[0].stage.as_str(), letters[0].input.as_str()),
        ("decode", "{not json")
    );
    assert_eq!(letters[1].input, r#"{"other":"x"}"#);
    assert!(
        letters[1].error.contains("no field `payload`"),
        "{}",
        letters[1].error
    );
    assert_eq!(
        pending(&mut con, &input, "bad").await.0,
        0,
        "dead letters are acknowledged"
    );
    delete(&mut con, &[&input]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_left_pending_by_a_dead_consumer_are_taken_over() {
    if !require("redis") {
        return;
    }
    let mut con = redis().await;
    let input = unique("sf_claim");
    add_orders(&mut con, &input, 1..=20).await;
    // A consumer reads 15 entries and dies without acknowledging them.
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&input)
        .arg("workers")
        .arg("0")
        .query_async(&mut con)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("workers")
        .arg("dead")
        .arg("COUNT")
        .arg(15)
        .arg("STREAMS")
        .arg(&input)
        .arg(">")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(pending(&mut con, &input, "workers").await.1["dead"], 15);

    let mut config = source_config(&input, "workers", "alive");
    config.claim_min_idle = Some(Duration::from_millis(300));
    config.claim_interval = Some(Duration::from_millis(100));
    let seen = Collect::default();
    let runtime = Runtime::new(flow!(redis_pass))
        .source(
            RedisStreamSource::<Order>::connect(&config, serde_decode)
                .await
                .unwrap(),
        )
        .sink(seen.clone())
        .batch_size(8)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    // The 5 never read come at once; the 15 once they have been idle long enough.
    wait_for(Duration::from_secs(10), "all 20 orders", async || {
        ids(seen.0.lock().unwrap().iter()).len() == 20
    })
    .await;
    wait_for(
        Duration::from_secs(5),
        "every entry acknowledged",
        async || pending(&mut con, &input, "workers").await.0 == 0,
    )
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let got: Vec<u64> = seen.0.lock().unwrap().iter().map(|o| o.id).collect();
    assert_eq!(got.len(), 20, "taken over more than once: {got:?}");
    assert_eq!(&got[..5], &[16, 17, 18, 19, 20], "new entries first");
    delete(&mut con, &[&input]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_sink_sets_and_deletes_keys_from_change_events() {
    if !require("redis") {
        return;
    }
    let mut con = redis().await;
    let prefix = unique("sf_user");
    let source = |op: &str| {
        serde_json::json!({"connector": "mysql", "db": "shop", "table": "users",
            "pos": format!("bin.000001:{op}"), "ts_ms": 1, "snapshot": op == "r"})
    };
    let event = |op: &str, before: serde_json::Value, after: serde_json::Value| serde_json::json!({"op": op, "before": before, "after": after, "source": source(op), "ts_ms": 2});
    let lines = [
        event(
            "c",
            serde_json::Value::Null,
            serde_json::json!({"id": 1, "name": "Ada", "age": 36, "note": null}),
        ),
        event(
            "c",
            serde_json::Value::Null,
            serde_json::json!({"id": 2, "name": "Bob", "age": 41, "note": null}),
        ),
        event(
            "u",
            serde_json::json!({"id": 1, "name": "Ada", "age": 36, "note": null}),
            serde_json::json!({"id": 1, "name": "Ada L.", "age": 37, "note": null}),
        ),
        event(
            "d",
            serde_json::json!({"id": 2, "name": "Bob", "age": 41, "note": null}),
            serde_json::Value::Null,
        ),
        event(
            "r",
            serde_json::Value::Null,
            serde_json::json!({"id": 3, "name": "Cy", "age": 5, "note": "new"}),
        ),
        serde_json::json!({"op": "t", "source": source("t"), "ts_ms": 3}),
        // A plain object (not an envelope) is set.
        serde_json::json!({"id": 4, "name": "Di", "age": 50, "note": null}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let key = |id: u64, mode: &str| format!("{prefix}:{mode}:{id}");

    for mode in [KeyMode::Json, KeyMode::Hash] {
        let name = format!("{mode:?}").to_lowercase();
        let mut config = RedisKeySinkConfig::new(format!("{prefix}:{name}:{{id}}"));
        config.mode = mode;
        config.ttl = (mode == KeyMode::Hash).then_some(Duration::from_secs(600));
        // Twice: the second run changes nothing (idempotent).
        for _ in 0..2 {
            let summary = Runtime::new(flow!(redis_pass_json))
                .source(JsonLinesSource::<serde_json::Value>::open(&input).unwrap())
                .sink(RedisKeySink::connect(&config).await.unwrap())
                .batch_size(3)
                .handle_signals(false)
                .run()
                .await
                .unwrap();
            assert_eq!(summary.output, 7);
            let exists: Vec<bool> = {
                let mut v = Vec::new();
                for id in 1..=4 {
                    v.push(con.exists(key(id, &name)).await.unwrap());
                }
                v
            };
            assert_eq!(exists, vec![true, false, true, true], "{name}");
            match mode {
                KeyMode::Json => {
                    let one: String = con.get(key(1, &name)).await.unwrap();
                    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
                    assert_eq!(
                        one,
                        serde_json::json!({"id": 1, "name": "Ada L.", "age": 37, "note": null})
                    );
                    let ttl: i64 = con.ttl(key(1, &name)).await.unwrap();
                    assert_eq!(ttl, -1, "no expiry by default");
                }
                KeyMode::Hash => {
                    let one: HashMap<String, String> = con.hgetall(key(1, &name)).await.unwrap();
                    let expected: HashMap<String, String> =
                        [("id", "1"), ("name", "Ada L."), ("age", "37")]
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                    assert_eq!(one, expected, "null fields are left out");
                    let three: HashMap<String, String> = con.hgetall(key(3, &name)).await.unwrap();
                    assert_eq!(three["note"], "new");
                    let ttl: i64 = con.ttl(key(1, &name)).await.unwrap();
                    assert!(ttl > 500 && ttl <= 600, "{ttl}");
                }
            }
        }
        for id in 1..=4 {
            delete(&mut con, &[&key(id, &name)]).await;
        }
    }

    // An output without the key's field fails the run with an explanation.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"name\":\"no id\"}\n").unwrap();
    let err = Runtime::new(flow!(redis_pass_json))
        .source(JsonLinesSource::<serde_json::Value>::open(&bad).unwrap())
        .sink(
            RedisKeySink::connect(&RedisKeySinkConfig::new(format!("{prefix}:{{id}}")))
                .await
                .unwrap(),
        )
        .handle_signals(false)
        .run()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no field `id`") && err.contains("key template"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_explained_without_showing_passwords() {
    if !require("redis") {
        return;
    }
    let mut config = source_config("s", "g", "c");
    config.url = "redis://:hunter2@127.0.0.1:1".into();
    config.connect_timeout = Some(Duration::from_millis(300));
    let err = RedisStreamSource::<Order>::connect(&config, serde_decode)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot connect") && err.contains(":***@") && !err.contains("hunter2"),
        "{err}"
    );
    let err = RedisKeySink::connect(&RedisKeySinkConfig::new("users"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("names no field"), "{err}");
    // A key of another type where a stream is expected.
    let mut con = redis().await;
    let key = unique("sf_string");
    let _: () = con.set(&key, "x").await.unwrap();
    let err = RedisStreamSource::<Order>::connect(&source_config(&key, "g", "c"), serde_decode)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("create the consumer group") && err.contains("WRONGTYPE"),
        "{err}"
    );
    delete(&mut con, &[&key]).await;
}

// ---- Two processes ----

const CHILD_ENV: &str = "SYNCFLOW_REDIS_TEST_CHILD";

/// Run by `two_processes_share_a_consumer_group` in child processes (does
/// nothing otherwise): reads the stream as one consumer of the group until
/// the stop file appears, then prints how many orders it processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by another test"]
async fn redis_child_worker() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = task.split('|').collect();
    let [stream, group, consumer, output, ready, stop_file] = parts[..] else {
        panic!("bad task {task}");
    };
    let mut config = source_config(stream, group, consumer);
    config.batch_size = Some(10);
    let source = RedisStreamSource::<Order>::connect(&config, serde_decode)
        .await
        .unwrap();
    let sink = RedisStreamSink::connect(&RedisStreamSinkConfig::new(output))
        .await
        .unwrap();
    let runtime = Runtime::new(flow!(redis_slow_invoice))
        .source(source)
        .sink(sink)
        .batch_size(10)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let stop_file = PathBuf::from(stop_file);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !stop_file.exists() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.shutdown();
    });
    std::fs::write(ready, "ready").unwrap();
    let summary = runtime.run().await.unwrap();
    println!("CHILD-PROCESSED {}", summary.output);
}

fn spawn_child(task: String) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "redis_child_worker", "--ignored", "--nocapture"])
        .env(CHILD_ENV, task)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn processed(out: &std::process::Output) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("CHILD-PROCESSED "))
        .unwrap_or_else(|| panic!("child printed no count: {text}"))
        .trim()
        .parse()
        .unwrap()
}

fn ready(dir: &Path, n: usize) -> bool {
    (0..n).all(|i| dir.join(format!("ready{i}")).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_consumer_group() {
    if !require("redis") {
        return;
    }
    let mut con = redis().await;
    let (input, output) = (unique("sf_two_in"), unique("sf_two_out"));
    let dir = tempfile::tempdir().unwrap();
    let stop_file = dir.path().join("stop");
    let children: Vec<_> = (0..2)
        .map(|i| {
            spawn_child(format!(
                "{input}|shared|worker{i}|{output}|{}|{}",
                dir.path().join(format!("ready{i}")).display(),
                stop_file.display()
            ))
        })
        .collect();
    wait_for(
        Duration::from_secs(15),
        "both children to start",
        async || ready(dir.path(), 2),
    )
    .await;

    const TOTAL: u64 = 400;
    for chunk in 0..(TOTAL / 10) {
        add_orders(&mut con, &input, chunk * 10 + 1..=chunk * 10 + 10).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_for(
        Duration::from_secs(15),
        "every order processed",
        async || xlen(&mut con, &output).await >= TOTAL,
    )
    .await;
    std::fs::write(&stop_file, "stop").unwrap();
    let outs: Vec<_> = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let counts: Vec<u64> = outs.iter().map(processed).collect();
    let invoices: Vec<Invoice> = stream_contents(&mut con, &output).await;
    let done: BTreeSet<u64> = invoices.iter().map(|i| i.id).collect();
    assert_eq!(done, (1..=TOTAL).collect(), "an order was not processed");
    eprintln!("processed per child: {counts:?}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "a child did no work: {counts:?}"
    );
    let by: BTreeSet<u32> = invoices.iter().map(|i| i.by).collect();
    assert_eq!(by.len(), 2, "invoices made by {by:?}");
    assert_eq!(pending(&mut con, &input, "shared").await.0, 0);
    delete(&mut con, &[&input, &output]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_returns_what_is_ready_at_once_and_idles_within_the_block_time() {
    use syncflow::connector::{Batch, Read, Source};
    if !require("redis") {
        return;
    }
    let mut con = redis().await;
    let input = unique("sf_idle");
    let mut config = source_config(&input, "idle", "c1");
    config.block = Some(Duration::from_millis(200));
    let mut source = RedisStreamSource::<Order>::connect(&config, serde_decode)
        .await
        .unwrap();
    let mut batch = Batch::default();
    add_orders(&mut con, &input, 1..=5).await;
    let started = std::time::Instant::now();
    let read = source.read(&mut batch, 100).await.unwrap();
    assert!(
        matches!(read, Read::Batch(ref ack) if ack.ids().len() == 5),
        "{read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    batch.clear();
    let started = std::time::Instant::now();
    let read = source.read(&mut batch, 100).await.unwrap();
    let waited = started.elapsed();
    assert!(matches!(read, Read::Idle), "{read:?}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(400),
        "{waited:?}"
    );
    delete(&mut con, &[&input]).await;
}

/// `max_age`: entries older than the age are trimmed at each write (whole
/// stream nodes, so a few old ones may stay with `~`); newer ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sink_trims_entries_older_than_max_age() {
    if !require("redis") {
        return;
    }
    let stream = unique("sf_age");
    let mut con = redis().await;
    // 1000 entries from 1970 (their IDs carry the time).
    let mut pipe = redis::pipe();
    for i in 1..=1000u64 {
        pipe.xadd(&stream, format!("{i}-0"), &[("payload", "{}")])
            .ignore();
    }
    pipe.exec_async(&mut con).await.unwrap();
    assert_eq!(xlen(&mut con, &stream).await, 1000);

    let mut config = RedisStreamSinkConfig::new(stream.as_str());
    config.max_age = Some(Duration::from_secs(3600));
    let mut sink = RedisStreamSink::connect(&config).await.unwrap();
    let fresh: Vec<Order> = (1..=5).map(order).collect();
    sink.write(&fresh).await.unwrap();
    Sink::<Order>::flush(&mut sink).await.unwrap();

    let kept: Vec<serde_json::Value> = stream_contents(&mut con, &stream).await;
    let old = kept
        .iter()
        .filter(|v| v.as_object().is_some_and(|o| o.is_empty()))
        .count();
    assert!(old <= 100, "{old} entries from 1970 kept");
    let new: Vec<Order> = kept
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect();
    assert_eq!(new, fresh, "the new entries stay");

    // Without max_age nothing is trimmed.
    let other = unique("sf_age_none");
    let mut pipe = redis::pipe();
    for i in 1..=300u64 {
        pipe.xadd(&other, format!("{i}-0"), &[("payload", "{}")])
            .ignore();
    }
    pipe.exec_async(&mut con).await.unwrap();
    let mut sink = RedisStreamSink::connect(&RedisStreamSinkConfig::new(other.as_str()))
        .await
        .unwrap();
    sink.write(&fresh).await.unwrap();
    assert_eq!(xlen(&mut con, &other).await, 305);
    delete(&mut con, &[&stream, &other]).await;
}
