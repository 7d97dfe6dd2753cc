//! The RabbitMQ connectors against a real broker (127.0.0.1:5672,
//! guest/guest): round trip, at-least-once across failures and dropped
//! runtimes, reconnects through a cutting proxy, bad input, and two
//! processes sharing one queue.

mod connector_support;

use std::collections::BTreeSet;
use std::time::Duration;

use connector_support::{Collect, distinct, wait_for, wait_for_async};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use syncflow::connector::amqp::{AmqpSink, AmqpSinkConfig, AmqpSource, AmqpSourceConfig};
use syncflow::connector::{Sink, serde_decode};
use syncflow::prelude::*;
use syncflow_tests::proxy::Proxy;
use syncflow_tests::services::{require, unique};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, Clone, Deserialize)]
struct Order {
    id: u64,
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    id: u64,
    euros: f64,
}

/// Turns an order into a charge.
#[sync_function]
fn charge(o: Order) -> Charge {
    Charge {
        id: o.id,
        euros: o.cents as f64 / 100.0,
    }
}

/// Passes the order's id on.
#[sync_function]
fn order_id(o: Order) -> u64 {
    o.id
}

fn order(id: u64) -> String {
    format!(r#"{{"id":{id},"cents":{}}}"#, id * 100)
}

async fn channel() -> (Connection, Channel) {
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

async fn declare(channel: &Channel, queue: &str) -> lapin::Queue {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// Publishes to a (declared) durable queue and waits for the confirms.
async fn publish(queue: &str, payloads: impl IntoIterator<Item = String>) {
    let (_connection, channel) = channel().await;
    declare(&channel, queue).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for payload in payloads {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                payload.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
    }
    assert!(channel.wait_for_confirms().await.unwrap().is_empty());
}

/// (ready messages, consumers) of a queue.
async fn queue_state(queue: &str) -> (u32, u32) {
    let (_connection, channel) = channel().await;
    let q = declare(&channel, queue).await;
    (q.message_count(), q.consumer_count())
}

/// Takes every ready message off a queue.
async fn drain(queue: &str) -> Vec<String> {
    let (_connection, channel) = channel().await;
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        out.push(String::from_utf8(message.delivery.data.clone()).unwrap());
    }
    out
}

async fn delete(queues: &[&str]) {
    let (_connection, channel) = channel().await;
    for queue in queues {
        channel
            .queue_delete((*queue).into(), QueueDeleteOptions::default())
            .await
            .unwrap();
    }
}

/// Waits until nobody consumes the queue any more (a closed consumer's
/// unacknowledged deliveries are back in it then) and returns its ready messages.
async fn settled(queue: &str) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (messages, consumers) = queue_state(queue).await;
        if consumers == 0 {
            return messages;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the consumers of {queue} stay"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds the ids waiting in `queue` to `out`; returns how many distinct ids came.
async fn take_ids(queue: &str, out: &mut Vec<u64>) -> usize {
    out.extend(drain(queue).await.iter().map(|s| s.parse::<u64>().unwrap()));
    distinct(out).len()
}

fn source_config(queue: &str) -> AmqpSourceConfig {
    AmqpSourceConfig::new(queue).reconnect_max(Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_a_flow_acknowledges_everything() {
    if !require("rabbitmq") {
        return;
    }
    let (q_in, q_out) = (unique("sf_amqp_in"), unique("sf_amqp_out"));
    publish(&q_in, (1..=50).map(order)).await;

    let source = AmqpSource::<Order>::connect(&source_config(&q_in), serde_decode)
        .await
        .unwrap();
    let sink = AmqpSink::connect(&AmqpSinkConfig::new("", &q_out).declare_queue(&q_out))
        .await
        .unwrap();
    let runtime = Runtime::new(flow!(charge))
        .source(source)
        .sink(sink)
        .batch_size(16)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for_async("50 charges", Duration::from_secs(15), || async {
        queue_state(&q_out).await.0 == 50
    })
    .await;
    shutdown.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.input, summary.output), (50, 50));

    let mut charges: Vec<Charge> = drain(&q_out)
        .await
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    charges.sort_by_key(|c| c.id);
    let expected: Vec<Charge> = (1..=50)
        .map(|id| Charge {
            id,
            euros: id as f64,
        })
        .collect();
    assert_eq!(charges, expected);
    assert_eq!(settled(&q_in).await, 0, "a delivery was not acknowledged");
    delete(&[&q_in, &q_out]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_when_the_sink_fails_and_a_new_run_gets_it_all() {
    if !require("rabbitmq") {
        return;
    }
    let queue = unique("sf_amqp_fail");
    publish(&queue, (1..=10).map(order)).await;

    let failing = Runtime::new(flow!(order_id))
        .source(
            AmqpSource::<Order>::connect(&source_config(&queue), serde_decode)
                .await
                .unwrap(),
        )
        .sink(Collect::<u64>::failing())
        .handle_signals(false)
        .run()
        .await;
    let error = failing.unwrap_err().to_string();
    assert!(error.contains("refused on purpose"), "{error}");
    assert_eq!(settled(&queue).await, 10, "deliveries were acknowledged");

    let collect = Collect::<u64>::new();
    let runtime = Runtime::new(flow!(order_id))
        .source(
            AmqpSource::<Order>::connect(&source_config(&queue), serde_decode)
                .await
                .unwrap(),
        )
        .sink(collect.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for("10 orders", Duration::from_secs(10), || collect.len() >= 10).await;
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(distinct(&collect.snapshot()), (1..=10).collect::<Vec<_>>());
    assert_eq!(settled(&queue).await, 0);
    delete(&[&queue]).await;
}

#[test]
fn a_dropped_runtime_loses_nothing() {
    if !require("rabbitmq") {
        return;
    }
    let queue = unique("sf_amqp_drop");
    let first = Collect::<u64>::slow(Duration::from_millis(30));
    {
        let tokio = tokio::runtime::Runtime::new().unwrap();
        tokio.block_on(async {
            publish(&queue, (1..=100).map(order)).await;
            let runtime = Runtime::new(flow!(order_id))
                .source(
                    AmqpSource::<Order>::connect(&source_config(&queue).prefetch(20), serde_decode)
                        .await
                        .unwrap(),
                )
                .sink(first.clone())
                .batch_size(10)
                .handle_signals(false);
            tokio::spawn(runtime.run());
            wait_for("a first part", Duration::from_secs(10), || {
                first.len() >= 20
            })
            .await;
        });
        // The process "crashes": no shutdown, no drain.
    }
    let got_first = first.snapshot();
    assert!(
        got_first.len() < 100,
        "the first run finished before the drop"
    );

    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let second = Collect::<u64>::new();
        let runtime = Runtime::new(flow!(order_id))
            .source(
                AmqpSource::<Order>::connect(&source_config(&queue), serde_decode)
                    .await
                    .unwrap(),
            )
            .sink(second.clone())
            .handle_signals(false);
        let shutdown = runtime.shutdown_handle();
        let run = tokio::spawn(runtime.run());
        let all: BTreeSet<u64> = (1..=100).collect();
        wait_for("every order", Duration::from_secs(15), || {
            let seen: BTreeSet<u64> = got_first
                .iter()
                .chain(second.snapshot().iter())
                .copied()
                .collect();
            seen == all
        })
        .await;
        shutdown.shutdown();
        run.await.unwrap().unwrap();
        assert_eq!(settled(&queue).await, 0);
        delete(&[&queue]).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_resumes_after_the_connections_are_cut() {
    if !require("rabbitmq") {
        return;
    }
    let (q_in, q_out) = (unique("sf_amqp_cut_in"), unique("sf_amqp_cut_out"));
    let proxy = Proxy::start("127.0.0.1:5672").await.unwrap();
    let via_proxy = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    publish(&q_in, (1..=50).map(order)).await;

    let source = AmqpSource::<Order>::connect(
        &source_config(&q_in).url(&via_proxy).prefetch(10),
        serde_decode,
    )
    .await
    .unwrap();
    let sink = AmqpSink::connect(
        &AmqpSinkConfig::new("", &q_out)
            .url(&via_proxy)
            .declare_queue(&q_out)
            .reconnect_max(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let runtime = Runtime::new(flow!(order_id))
        .source(source)
        .sink(sink)
        .batch_size(10)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    let mut out: Vec<u64> = Vec::new();
    let mut seen = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while seen < 20 {
        assert!(std::time::Instant::now() < deadline, "no first part");
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = take_ids(&q_out, &mut out).await;
    }
    proxy.cut(Duration::from_millis(700)).await;
    publish(&q_in, (51..=100).map(order)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while seen < 100 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {seen} of 100 orders came through"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = take_ids(&q_out, &mut out).await;
    }
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(distinct(&out), (1..=100).collect::<Vec<_>>());
    assert_eq!(settled(&q_in).await, 0);
    delete(&[&q_in, &q_out]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_acknowledged() {
    if !require("rabbitmq") {
        return;
    }
    let queue = unique("sf_amqp_bad");
    publish(
        &queue,
        [
            order(1),
            "not json".to_string(),
            r#"{"id":"x"}"#.to_string(),
            order(2),
        ],
    )
    .await;
    let collect = Collect::<u64>::new();
    let dead = Collect::<DeadLetter>::new();
    let runtime = Runtime::new(flow!(order_id))
        .source(
            AmqpSource::<Order>::connect(&source_config(&queue), serde_decode)
                .await
                .unwrap(),
        )
        .sink(collect.clone())
        .dead_letter_sink(dead.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for(
        "2 orders and 2 dead letters",
        Duration::from_secs(10),
        || collect.len() == 2 && dead.len() == 2,
    )
    .await;
    shutdown.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.malformed, 2);
    assert_eq!(collect.snapshot(), vec![1, 2]);
    let dead = dead.snapshot();
    assert_eq!(dead[0].stage, "decode");
    assert_eq!(dead[0].input, "not json");
    assert_eq!(dead[1].input, r#"{"id":"x"}"#);
    assert_eq!(dead[0].source, format!("amqp:{queue}"));
    assert_eq!(
        settled(&queue).await,
        0,
        "bad messages must be acknowledged too"
    );
    delete(&[&queue]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_fails_the_flush_of_an_unroutable_message() {
    if !require("rabbitmq") {
        return;
    }
    let key = unique("sf_amqp_nowhere");
    let mut sink = AmqpSink::connect(&AmqpSinkConfig::new("amq.direct", &key))
        .await
        .unwrap();
    Sink::<u64>::write(&mut sink, &[1, 2]).await.unwrap();
    let error = Sink::<u64>::flush(&mut sink).await.unwrap_err().to_string();
    assert!(error.contains("cannot route a message"), "{error}");
    assert!(error.contains("NO_ROUTE"), "{error}");
    assert!(error.contains("guest:***@"), "{error}");
    assert!(!error.contains("guest:guest"), "password shown: {error}");

    // Wrong credentials fail at once, with what to check.
    let error = AmqpSink::connect(
        &AmqpSinkConfig::new("", "x").url("amqp://guest:wrong@127.0.0.1:5672/%2f"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("cannot connect"), "{error}");
    assert!(error.contains("user, password and vhost"), "{error}");
    assert!(!error.contains("wrong"), "password shown: {error}");
}

// ---- Two processes share a queue ----

const CHILD_ENV: &str = "SYNCFLOW_AMQP_CHILD_QUEUE";

/// Consumes the queue until it is empty and quiet, then prints the ids.
async fn consume_share(queue: &str) -> Vec<u64> {
    let collect = Collect::<u64>::slow(Duration::from_millis(20));
    let runtime = Runtime::new(flow!(order_id))
        .source(
            AmqpSource::<Order>::connect(&source_config(queue).prefetch(5), serde_decode)
                .await
                .unwrap(),
        )
        .sink(collect.clone())
        .batch_size(5)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut last = (0, std::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = collect.len();
        if n != last.0 {
            last = (n, std::time::Instant::now());
        }
        let quiet = last.1.elapsed() > Duration::from_secs(1);
        if (n > 0 && quiet && queue_state(queue).await.0 == 0)
            || std::time::Instant::now() > deadline
        {
            break;
        }
    }
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    collect.snapshot()
}

/// Run by `two_processes_share_a_queue` in a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by another test"]
async fn child_consumer() {
    let Ok(queue) = std::env::var(CHILD_ENV) else {
        return;
    };
    let ids = consume_share(&queue).await;
    let text: Vec<String> = ids.iter().map(u64::to_string).collect();
    println!("CHILD-IDS {}", text.join(","));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_queue() {
    if !require("rabbitmq") {
        return;
    }
    let queue = unique("sf_amqp_share");
    let (_connection, channel) = channel().await;
    declare(&channel, &queue).await;
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_consumer", "--ignored", "--nocapture"])
        .env(CHILD_ENV, &queue)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let here = tokio::spawn({
        let queue = queue.clone();
        async move { consume_share(&queue).await }
    });
    wait_for_async("both consumers", Duration::from_secs(15), || async {
        queue_state(&queue).await.1 == 2
    })
    .await;
    publish(&queue, (1..=200).map(order)).await;

    let here = here.await.unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD-IDS "))
        .unwrap_or_else(|| panic!("the child printed no ids: {stdout}"));
    let there: Vec<u64> = line
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(
        !here.is_empty() && !there.is_empty(),
        "one process did all the work: {} here, {} there",
        here.len(),
        there.len()
    );
    let all: Vec<u64> = here.iter().chain(&there).copied().collect();
    assert_eq!(distinct(&all), (1..=200).collect::<Vec<_>>());
    eprintln!("shared: {} here, {} in the child", here.len(), there.len());
    delete(&[&queue]).await;
}
