//! The NATS JetStream connector against a real server (nats-server -js on
//! 127.0.0.1:4222): round trip through the runtime, at-least-once delivery,
//! reconnects, bad input, and two processes sharing a durable consumer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use syncflow::connector::nats::{NatsSink, NatsSinkConfig, NatsSource, NatsSourceConfig};
use syncflow::connector::{ConnectorError, Sink};
use syncflow::prelude::*;
use syncflow_tests::proxy::Proxy;
use syncflow_tests::services::{require, unique};

const NATS: &str = "nats://127.0.0.1:4222";

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
fn nats_invoice(o: Order) -> Invoice {
    Invoice {
        id: o.id,
        region: o.region,
        euros: o.cents as f64 / 100.0,
        by: std::process::id(),
    }
}

/// Like `nats_invoice`, slowly (so that two processes both get work).
#[sync_function]
fn nats_slow_invoice(o: Order) -> Invoice {
    std::thread::sleep(Duration::from_millis(2));
    nats_invoice(o)
}

/// Passes orders through; stops the run after `stop.after` orders.
#[sync_function]
fn nats_stop_after(o: Order, stop: Res<StopAfter>) -> Order {
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

/// Passes orders through.
#[sync_function]
fn nats_pass(o: Order) -> Order {
    o
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

async fn jetstream() -> jetstream::Context {
    jetstream::new(async_nats::connect(NATS).await.unwrap())
}

/// A fresh stream capturing `<prefix>.>`; returns (stream name, subject prefix).
async fn fresh_stream(js: &jetstream::Context, prefix: &str) -> (String, String) {
    let name = unique(prefix).to_uppercase();
    let subject = name.to_lowercase();
    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    (name, subject)
}

/// Publishes orders `ids` to `subject` after `delay_ms`, in a task.
fn publish_later(
    js: &jetstream::Context,
    subject: String,
    delay_ms: u64,
    ids: std::ops::RangeInclusive<u64>,
) -> tokio::task::JoinHandle<()> {
    let js = js.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        publish_orders(&js, &subject, ids).await;
    })
}

async fn publish_orders(js: &jetstream::Context, subject: &str, ids: impl Iterator<Item = u64>) {
    let mut acks = Vec::new();
    for id in ids {
        let payload = serde_json::to_vec(&order(id)).unwrap();
        acks.push(
            js.publish(subject.to_string(), payload.into())
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// Every message of a stream, as JSON.
async fn stream_contents<T: serde::de::DeserializeOwned>(
    js: &jetstream::Context,
    name: &str,
) -> Vec<T> {
    let stream = js.get_stream(name).await.unwrap();
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(message) = batch.next().await {
            out.push(serde_json::from_slice(&message.unwrap().payload).unwrap());
        }
        if out.len() == before {
            return out;
        }
    }
}

async fn stream_count(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

async fn consumer_info(js: &jetstream::Context, stream: &str, durable: &str) -> consumer::Info {
    let stream = js.get_stream(stream).await.unwrap();
    let mut consumer: consumer::PullConsumer = stream.get_consumer(durable).await.unwrap();
    consumer.info().await.unwrap().clone()
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

async fn delete_streams(js: &jetstream::Context, names: &[&str]) {
    for name in names {
        let _ = js.delete_stream(name).await;
    }
}

fn source_config(stream: &str, durable: &str) -> NatsSourceConfig {
    let mut config = NatsSourceConfig::new(stream, durable);
    config.max_wait = Some(Duration::from_millis(100));
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

/// A sink whose first write fails.
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
async fn round_trip_through_the_runtime_with_a_subject_per_region() {
    if !require("nats") {
        return;
    }
    let js = jetstream().await;
    let (input, in_subject) = fresh_stream(&js, "sf_rt_in").await;
    let (output, out_subject) = fresh_stream(&js, "sf_rt_out").await;
    publish_orders(&js, &format!("{in_subject}.new"), 1..=50).await;

    let source = NatsSource::<Order>::connect(
        &source_config(&input, "billing"),
        syncflow::connector::serde_decode,
    )
    .await
    .unwrap();
    let sink = NatsSink::connect(&NatsSinkConfig::new(format!("{out_subject}.{{region}}")))
        .await
        .unwrap();
    let runtime = Runtime::new(flow!(nats_invoice))
        .source(source)
        .sink(sink)
        .batch_size(16)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for(Duration::from_secs(10), "50 invoices", async || {
        stream_count(&js, &output).await >= 50
    })
    .await;
    stop.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.input, summary.output), (50, 50));

    let mut invoices: Vec<Invoice> = stream_contents(&js, &output).await;
    invoices.sort_by_key(|i| i.id);
    let expected: Vec<Invoice> = (1..=50).map(|id| nats_invoice(order(id))).collect();
    assert_eq!(invoices, expected);
    // Each invoice went to its region's subject.
    let stream = js.get_stream(&output).await.unwrap();
    let eu = stream
        .get_last_raw_message_by_subject(&format!("{out_subject}.eu"))
        .await
        .unwrap();
    let last_eu: Invoice = serde_json::from_slice(&eu.payload).unwrap();
    assert_eq!((last_eu.id, last_eu.region.as_str()), (50, "eu"));
    // Everything was acknowledged.
    let info = consumer_info(&js, &input, "billing").await;
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    assert_eq!(info.ack_floor.stream_sequence, 50);
    delete_streams(&js, &[&input, &output]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_leaves_messages_unacknowledged_and_they_come_again() {
    if !require("nats") {
        return;
    }
    let js = jetstream().await;
    let (input, in_subject) = fresh_stream(&js, "sf_alo").await;
    publish_orders(&js, &format!("{in_subject}.new"), 1..=30).await;
    let mut config = source_config(&input, "alo");
    config.ack_wait = Some(Duration::from_secs(1));

    // The sink fails: the run stops, nothing is acknowledged.
    let err = Runtime::new(flow!(nats_pass))
        .source(
            NatsSource::<Order>::builder(&input, "alo")
                .max_wait(Duration::from_millis(100))
                .ack_wait(Duration::from_secs(1))
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
    let info = consumer_info(&js, &input, "alo").await;
    assert!(info.num_ack_pending > 0, "{info:?}");
    assert_eq!(
        info.ack_floor.stream_sequence, 0,
        "something was acknowledged"
    );

    // A new run gets every message (the unacknowledged ones after ack_wait).
    let seen = Collect::default();
    let runtime = Runtime::new(flow!(nats_pass))
        .source(
            NatsSource::<Order>::connect(&config, syncflow::connector::serde_decode)
                .await
                .unwrap(),
        )
        .sink(seen.clone())
        .batch_size(10)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for(Duration::from_secs(10), "all 30 orders", async || {
        ids(seen.0.lock().unwrap().iter()).len() == 30
    })
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(ids(seen.0.lock().unwrap().iter()), (1..=30).collect());
    let info = consumer_info(&js, &input, "alo").await;
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));

    // A run stopped mid-way, then a new one: every message arrives.
    publish_orders(&js, &format!("{in_subject}.new"), 31..=90).await;
    let first = Collect::default();
    let stop = Shutdown::new();
    let flow = flow!(nats_stop_after).resource(StopAfter {
        after: 20,
        seen: Default::default(),
        handle: stop.clone(),
    });
    let summary = Runtime::new(flow)
        .source(
            NatsSource::<Order>::connect(&config, syncflow::connector::serde_decode)
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
    let runtime = Runtime::new(flow!(nats_pass))
        .source(
            NatsSource::<Order>::connect(&config, syncflow::connector::serde_decode)
                .await
                .unwrap(),
        )
        .sink(second.clone())
        .batch_size(5)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    let expected: BTreeSet<u64> = (31..=90).collect();
    wait_for(Duration::from_secs(10), "orders 31 to 90", async || {
        let all = first
            .0
            .lock()
            .unwrap()
            .iter()
            .chain(second.0.lock().unwrap().iter())
            .map(|o| o.id)
            .collect::<BTreeSet<_>>();
        all == expected
    })
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    // The first run acknowledged what it delivered: the second did not get it again.
    let again = ids(first.0.lock().unwrap().iter())
        .intersection(&ids(second.0.lock().unwrap().iter()))
        .count();
    assert_eq!(again, 0, "messages delivered by the stopped run came again");
    delete_streams(&js, &[&input]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_resumes_after_the_connection_is_cut() {
    if !require("nats") {
        return;
    }
    logs();
    let js = jetstream().await;
    let (input, in_subject) = fresh_stream(&js, "sf_cut_in").await;
    let (output, out_subject) = fresh_stream(&js, "sf_cut_out").await;
    let proxy = Proxy::start("127.0.0.1:4222").await.unwrap();
    let url = format!("nats://{}", proxy.addr());

    let mut config = source_config(&input, "cut");
    config.url = url.clone();
    config.ack_wait = Some(Duration::from_secs(2));
    let source = NatsSource::<Order>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let mut sink_config = NatsSinkConfig::new(format!("{out_subject}.all"));
    sink_config.url = url;
    sink_config.publish_timeout = Some(Duration::from_secs(1));
    let sink = NatsSink::connect(&sink_config).await.unwrap();
    let runtime = Runtime::new(flow!(nats_pass))
        .source(source)
        .sink(sink)
        .batch_size(20)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    const TOTAL: u64 = 300;
    let subject = format!("{in_subject}.new");
    for chunk in 0..30 {
        publish_orders(&js, &subject, chunk * 10 + 1..=chunk * 10 + 10).await;
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
            stream_count(&js, &output).await >= TOTAL
                && ids(stream_contents::<Order>(&js, &output).await.iter()).len() as u64 == TOTAL
        },
    )
    .await;
    stop.shutdown();
    run.await.unwrap().unwrap();
    let got: Vec<Order> = stream_contents(&js, &output).await;
    assert_eq!(ids(got.iter()), (1..=TOTAL).collect());
    eprintln!(
        "{} outputs for {TOTAL} inputs (duplicates are allowed)",
        got.len()
    );
    delete_streams(&js, &[&input, &output]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_the_flow_goes_on() {
    if !require("nats") {
        return;
    }
    let js = jetstream().await;
    let (input, in_subject) = fresh_stream(&js, "sf_bad").await;
    let subject = format!("{in_subject}.new");
    publish_orders(&js, &subject, 1..=2).await;
    js.publish(subject.clone(), "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish(subject.clone(), r#"{"id":"x"}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish_orders(&js, &subject, 3..=4).await;

    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let seen = Collect::default();
    let runtime = Runtime::new(flow!(nats_pass))
        .source(
            NatsSource::<Order>::connect(
                &source_config(&input, "bad"),
                syncflow::connector::serde_decode,
            )
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
    let got: Vec<(u64, &str, &str)> = letters
        .iter()
        .map(|d| (d.position, d.stage.as_str(), d.input.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![(3, "decode", "{not json"), (4, "decode", r#"{"id":"x"}"#)]
    );
    // Dead-lettered messages are acknowledged like the others.
    let info = consumer_info(&js, &input, "bad").await;
    assert_eq!(
        (info.num_ack_pending, info.ack_floor.stream_sequence),
        (0, 6)
    );
    delete_streams(&js, &[&input]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_explained_and_can_be_created() {
    if !require("nats") {
        return;
    }
    let name = unique("sf_missing").to_uppercase();
    let err = NatsSource::<Order>::connect(
        &source_config(&name, "x"),
        syncflow::connector::serde_decode,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("find the stream") && err.contains("create_stream"),
        "{err}"
    );
    let mut config = source_config(&name, "x");
    config.create_stream = Some(vec![format!("{}.>", name.to_lowercase())]);
    NatsSource::<Order>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let js = jetstream().await;
    assert_eq!(stream_count(&js, &name).await, 0);
    let err = NatsSink::connect(&NatsSinkConfig::new("sf.nowhere.at.all"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("find a stream for the subject"), "{err}");
    let err = NatsSource::<Order>::connect(
        &NatsSourceConfig {
            url: "nats://user:hunter2@127.0.0.1:1".into(),
            ..source_config(&name, "x")
        },
        syncflow::connector::serde_decode,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cannot connect") && !err.contains("hunter2"),
        "{err}"
    );
    delete_streams(&js, &[&name]).await;
}

// ---- Two processes ----

const CHILD_ENV: &str = "SYNCFLOW_NATS_TEST_CHILD";

/// Run by `two_processes_share_a_durable_consumer` in child processes (does
/// nothing otherwise): reads the stream with the shared durable consumer
/// until the stop file appears, then prints how many orders it processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by another test"]
async fn nats_child_worker() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = task.split('|').collect();
    let [stream, durable, out_subject, ready, stop_file] = parts[..] else {
        panic!("bad task {task}");
    };
    let mut config = source_config(stream, durable);
    config.batch_size = Some(10);
    let source = NatsSource::<Order>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let sink = NatsSink::connect(&NatsSinkConfig::new(out_subject))
        .await
        .unwrap();
    let runtime = Runtime::new(flow!(nats_slow_invoice))
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
        .args(["--exact", "nats_child_worker", "--ignored", "--nocapture"])
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
async fn two_processes_share_a_durable_consumer() {
    if !require("nats") {
        return;
    }
    let js = jetstream().await;
    let (input, in_subject) = fresh_stream(&js, "sf_two_in").await;
    let (output, out_subject) = fresh_stream(&js, "sf_two_out").await;
    // Create the consumer before the children, so that they update one consumer.
    NatsSource::<Order>::connect(
        &source_config(&input, "shared"),
        syncflow::connector::serde_decode,
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stop_file = dir.path().join("stop");
    let children: Vec<_> = (0..2)
        .map(|i| {
            spawn_child(format!(
                "{input}|shared|{out_subject}.done|{}|{}",
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
    let subject = format!("{in_subject}.new");
    for chunk in 0..(TOTAL / 10) {
        publish_orders(&js, &subject, chunk * 10 + 1..=chunk * 10 + 10).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_for(
        Duration::from_secs(15),
        "every order processed",
        async || stream_count(&js, &output).await >= TOTAL,
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
    let invoices: Vec<Invoice> = stream_contents(&js, &output).await;
    let done: BTreeSet<u64> = invoices.iter().map(|i| i.id).collect();
    assert_eq!(done, (1..=TOTAL).collect(), "an order was not processed");
    let by: BTreeSet<u32> = invoices.iter().map(|i| i.by).collect();
    eprintln!("processed per child: {counts:?}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "a child did no work: {counts:?}"
    );
    assert_eq!(by.len(), 2, "invoices made by {by:?}");
    assert!(counts.iter().sum::<u64>() >= TOTAL);
    delete_streams(&js, &[&input, &output]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_returns_what_is_ready_at_once_and_idles_within_max_wait() {
    use syncflow::connector::{Batch, Read, Source};
    if !require("nats") {
        return;
    }
    let js = jetstream().await;
    let (input, in_subject) = fresh_stream(&js, "sf_idle").await;
    let mut config = source_config(&input, "idle");
    config.max_wait = Some(Duration::from_millis(200));
    let mut source = NatsSource::<Order>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let mut batch = Batch::default();
    // Fewer messages than asked for: they come without waiting for more.
    publish_orders(&js, &format!("{in_subject}.new"), 1..=5).await;
    let started = std::time::Instant::now();
    let read = source.read(&mut batch, 100).await.unwrap();
    assert!(
        matches!(read, Read::Batch(ref ack) if ack.len() == 5),
        "{read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let positions: Vec<u64> = batch.iter().map(|(p, _, _)| p).collect();
    assert_eq!(positions, vec![1, 2, 3, 4, 5], "stream sequence numbers");
    // Nothing: idle after about max_wait.
    batch.clear();
    let started = std::time::Instant::now();
    let read = source.read(&mut batch, 100).await.unwrap();
    let waited = started.elapsed();
    assert!(matches!(read, Read::Idle), "{read:?}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(400),
        "{waited:?}"
    );
    // A message arriving during the wait is returned at once.
    let publisher = publish_later(&js, format!("{in_subject}.new"), 50, 6..=6);
    let started = std::time::Instant::now();
    let read = source.read(&mut batch, 100).await.unwrap();
    assert!(
        matches!(read, Read::Batch(ref ack) if ack.len() == 1),
        "{read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(190),
        "{:?}",
        started.elapsed()
    );
    publisher.await.unwrap();
    delete_streams(&js, &[&input]).await;
}

/// The pull requests the server received since the last call (a core
/// subscription on the consumer's request subject sees every request).
async fn requests_seen(spy: &mut async_nats::Subscriber) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(Some(request)) = tokio::time::timeout(Duration::from_millis(100), spy.next()).await
    {
        seen.push(String::from_utf8_lossy(&request.payload).into_owned());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_takes_one_pull_request_whether_messages_are_ready_or_awaited() {
    use syncflow::connector::{Batch, Read, Source};
    if !require("nats") {
        return;
    }
    let client = async_nats::connect(NATS).await.unwrap();
    let js = jetstream::new(client.clone());
    let (input, in_subject) = fresh_stream(&js, "sf_onepull").await;
    let mut config = source_config(&input, "onepull");
    config.max_wait = Some(Duration::from_millis(300));
    let mut source = NatsSource::<Order>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let mut spy = client
        .subscribe(format!("$JS.API.CONSUMER.MSG.NEXT.{input}.onepull"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let subject = format!("{in_subject}.new");
    let mut batch = Batch::default();

    // Ready messages: one request, answered at once.
    publish_orders(&js, &subject, 1..=5).await;
    let started = std::time::Instant::now();
    let read = source.read(&mut batch, 100).await.unwrap();
    assert!(
        matches!(read, Read::Batch(ref ack) if ack.len() == 5),
        "{read:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
    let seen = requests_seen(&mut spy).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0].contains(r#""no_wait":true"#) && seen[0].contains(r#""expires":300000000"#),
        "{seen:?}"
    );

    // Nothing ready, then three messages: the same single request waits
    // for the first and brings it at once.
    batch.clear();
    let publisher = publish_later(&js, subject.clone(), 80, 6..=8);
    let started = std::time::Instant::now();
    let read = source.read(&mut batch, 100).await.unwrap();
    let waited = started.elapsed();
    assert!(
        matches!(read, Read::Batch(ref ack) if !ack.is_empty()),
        "{read:?}"
    );
    assert!(
        waited >= Duration::from_millis(60) && waited < Duration::from_millis(250),
        "{waited:?}"
    );
    publisher.await.unwrap();
    assert_eq!(requests_seen(&mut spy).await.len(), 1);
    // Whatever the first read left comes with the next request.
    let mut got: Vec<u64> = batch.iter().map(|(p, _, _)| p).collect();
    while got.len() < 3 {
        batch.clear();
        if let Read::Batch(_) = source.read(&mut batch, 100).await.unwrap() {
            got.extend(batch.iter().map(|(p, _, _)| p));
        }
    }
    assert_eq!(got, vec![6, 7, 8], "stream sequence numbers");
    requests_seen(&mut spy).await;

    // Nothing at all: idle after max_wait, still one request.
    batch.clear();
    let started = std::time::Instant::now();
    let read = source.read(&mut batch, 100).await.unwrap();
    let waited = started.elapsed();
    assert!(matches!(read, Read::Idle), "{read:?}");
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(600),
        "{waited:?}"
    );
    assert_eq!(requests_seen(&mut spy).await.len(), 1);
    delete_streams(&js, &[&input]).await;
}
