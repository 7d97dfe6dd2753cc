//! The Kafka connectors against librdkafka's in-process mock cluster
//! (`rdkafka::mocking::MockCluster`: real brokers speaking the Kafka
//! protocol on loopback ports, with consumer groups and offset commits; no
//! Kafka server is needed, so these tests never skip): round trip through a
//! runtime, offsets committed only after the sinks confirmed, resuming after
//! a stop or a crash, two processes sharing a group's partitions, dead
//! letters, metadata envelopes, broker outages and delivery failures.

mod sql_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde::{Deserialize, Serialize};
use sql_common::{Collect, NeverConfirm, dead_letters, wait_until};
use syncflow::connector::kafka::{
    KafkaRecord, KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig,
};
use syncflow::connector::{ConnectorError, Sink};
use syncflow::prelude::*;
use syncflow_tests::services::unique;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    id: u64,
    customer: String,
    euros: f64,
}

/// Turns an order into a charge.
#[sync_function]
fn charge(o: Order) -> Charge {
    Charge {
        id: o.id,
        customer: o.customer,
        euros: o.cents as f64 / 100.0,
    }
}

/// Passes an order through.
#[sync_function]
fn pass(o: Order) -> Order {
    o
}

/// Passes a record with its metadata through.
#[sync_function]
fn pass_record(r: KafkaRecord<serde_json::Value>) -> KafkaRecord<serde_json::Value> {
    r
}

fn order(id: u64) -> Order {
    Order {
        id,
        customer: format!("c{}", id % 5),
        cents: id as i64 * 100 + 1,
    }
}

/// Shows the connectors' logs with `RUST_LOG=syncflow=debug,librdkafka=debug`.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A mock cluster of `brokers` brokers with `topics` (name, partitions).
fn cluster(
    brokers: i32,
    topics: &[(&str, i32)],
) -> (MockCluster<'static, DefaultProducerContext>, String) {
    logs();
    let mock = MockCluster::new(brokers).expect("start a mock Kafka cluster");
    for (topic, partitions) in topics {
        mock.create_topic(topic, *partitions, 1)
            .expect("create a topic");
    }
    let bootstrap = mock.bootstrap_servers();
    (mock, bootstrap)
}

/// Source settings with quick group membership (heartbeats every 100 ms).
fn source_config(brokers: &str, topic: &str, group: &str) -> KafkaSourceConfig {
    KafkaSourceConfig::new(brokers, [topic], group)
        .property("session.timeout.ms", "3000")
        .property("heartbeat.interval.ms", "100")
        .connect_timeout(Duration::from_secs(5))
}

/// Produces messages (key, payload), zstd-compressed, and waits until all
/// are delivered.
fn produce(brokers: &str, topic: &str, messages: &[(Option<String>, Vec<u8>)]) {
    tokio::task::block_in_place(|| {
        let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("compression.type", "zstd")
            .create()
            .unwrap();
        for (key, payload) in messages {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key.as_bytes());
            }
            producer.send(record).map_err(|(e, _)| e).unwrap();
            producer.poll(Duration::ZERO);
        }
        producer.flush(Duration::from_secs(10)).unwrap();
    })
}

/// Produces orders as JSON, keyed by customer.
fn produce_orders(brokers: &str, topic: &str, ids: impl IntoIterator<Item = u64>) {
    let messages: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let o = order(id);
            (Some(o.customer.clone()), serde_json::to_vec(&o).unwrap())
        })
        .collect();
    produce(brokers, topic, &messages);
}

/// A message read back from a topic.
#[derive(Debug, Clone)]
struct Msg {
    partition: i32,
    key: Option<String>,
    payload: Vec<u8>,
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Vec<i32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect()
}

/// Every message of a topic (up to its current end), per partition in offset order.
fn read_topic(brokers: &str, topic: &str) -> Vec<Msg> {
    tokio::task::block_in_place(|| {
        // A group id is needed to assign partitions; nothing is committed.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut ends = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in partitions(&consumer, topic) {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap();
            if high > low {
                ends.insert(p, high);
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .unwrap();
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return out;
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ends.is_empty() {
            assert!(Instant::now() < deadline, "timed out reading `{topic}`");
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let m = message.unwrap();
            let Some(&end) = ends.get(&m.partition()) else {
                continue;
            };
            if m.offset() < end {
                out.push(Msg {
                    partition: m.partition(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
            }
            if m.offset() + 1 >= end {
                ends.remove(&m.partition());
            }
        }
        out
    })
}

/// Messages in a topic now (sum of its partitions' watermark spans).
fn topic_len(brokers: &str, topic: &str) -> i64 {
    tokio::task::block_in_place(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .unwrap();
        partitions(&consumer, topic)
            .into_iter()
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(5))
                    .unwrap();
                high - low
            })
            .sum()
    })
}

/// The group's committed offset per partition (`None`: nothing committed),
/// and the partition's end.
fn committed(brokers: &str, group: &str, topic: &str) -> Vec<(Option<i64>, i64)> {
    tokio::task::block_in_place(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        let parts = partitions(&consumer, topic);
        for p in &parts {
            tpl.add_partition(topic, *p);
        }
        let offsets = consumer
            .committed_offsets(tpl, Duration::from_secs(5))
            .unwrap();
        parts
            .iter()
            .map(|p| {
                let committed = match offsets.find_partition(topic, *p).unwrap().offset() {
                    Offset::Offset(n) => Some(n),
                    _ => None,
                };
                let (_, high) = consumer
                    .fetch_watermarks(topic, *p, Duration::from_secs(5))
                    .unwrap();
                (committed, high)
            })
            .collect()
    })
}

/// Asserts that the group committed every partition's end.
fn assert_all_committed(brokers: &str, group: &str, topic: &str) {
    for (i, (committed, end)) in committed(brokers, group, topic).into_iter().enumerate() {
        if end > 0 {
            assert_eq!(committed, Some(end), "partition {i} of `{topic}`");
        }
    }
}

type Run = tokio::task::JoinHandle<Result<RunSummary, RunError>>;

/// Runs `pass` from the source to `sink`.
fn start<K: Sink<Order>>(source: KafkaSource<Order>, sink: K, batch: usize) -> (Shutdown, Run) {
    let runtime = Runtime::new(flow!(pass))
        .source(source)
        .sink(sink)
        .batch_size(batch)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    (shutdown, tokio::spawn(runtime.run()))
}

async fn stop(shutdown: Shutdown, run: Run) -> RunSummary {
    shutdown.shutdown();
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("the run stops promptly")
        .unwrap()
        .expect("the run succeeds")
}

fn ids(orders: &[Order]) -> Vec<u64> {
    let mut ids: Vec<u64> = orders.iter().map(|o| o.id).collect();
    ids.sort_unstable();
    ids
}

/// A sink that confirms slowly (a pause per write), so a stop comes mid-way.
struct Slow(Collect<Order>, Duration);

impl Sink<Order> for Slow {
    fn name(&self) -> String {
        "slow".into()
    }
    async fn write(&mut self, items: &[Order]) -> Result<(), ConnectorError> {
        tokio::time::sleep(self.1).await;
        self.0.write(items).await
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_a_runtime_with_keys_and_commits() {
    let (input, output, group) = (unique("orders"), unique("charges"), unique("g"));
    let (_mock, brokers) = cluster(1, &[(&input, 3), (&output, 3)]);
    produce_orders(&brokers, &input, 1..=100);

    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &input, &group))
        .await
        .unwrap();
    let sink = KafkaSink::connect(
        &KafkaSinkConfig::new(&brokers, &output)
            .key("customer")
            .property("compression.type", "lz4"),
    )
    .await
    .unwrap();
    let runtime = Runtime::new(flow!(charge))
        .source(source)
        .sink(sink)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_until(20, "100 charges in the output topic", || async {
        topic_len(&brokers, &output) >= 100
    })
    .await;
    let summary = tokio::time::timeout(Duration::from_secs(15), async {
        shutdown.shutdown();
        run.await
    })
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(
        (summary.input, summary.output, summary.malformed),
        (100, 100, 0)
    );
    assert_eq!(summary.source, format!("kafka:{input}"));

    let messages = read_topic(&brokers, &output);
    assert_eq!(messages.len(), 100, "exactly once each: no duplicates");
    let mut charges: Vec<Charge> = Vec::new();
    let mut per_key: BTreeMap<String, (i32, Vec<u64>)> = BTreeMap::new();
    for m in &messages {
        let c: Charge = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(
            m.key.as_deref(),
            Some(c.customer.as_str()),
            "key from `customer`"
        );
        let entry = per_key
            .entry(c.customer.clone())
            .or_insert((m.partition, Vec::new()));
        assert_eq!(entry.0, m.partition, "one key, one partition");
        entry.1.push(c.id);
        charges.push(c);
    }
    for (key, (_, ids)) in &per_key {
        assert!(ids.is_sorted(), "order kept for key {key}: {ids:?}");
    }
    charges.sort_by_key(|c| c.id);
    let expected: Vec<Charge> = (1..=100).map(|id| charge(order(id))).collect();
    assert_eq!(charges, expected);
    assert_all_committed(&brokers, &group, &input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_committed_only_after_the_sinks_confirmed() {
    let (topic, group) = (unique("orders"), unique("g"));
    let (_mock, brokers) = cluster(1, &[(&topic, 2)]);
    produce_orders(&brokers, &topic, 1..=20);

    // A sink that fails: the run fails, nothing is committed.
    let seen = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    let (_, run) = start(
        source,
        NeverConfirm {
            seen: seen.clone(),
            fail: true,
        },
        100,
    );
    let result = tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(result, Err(RunError::Sink { .. })),
        "the failing sink fails the run: {result:?}"
    );
    assert!(seen.len() > 0, "the sink saw messages");
    for (committed, _) in committed(&brokers, &group, &topic) {
        assert_eq!(
            committed, None,
            "nothing committed for an unconfirmed batch"
        );
    }

    // A new consumer of the group gets every message again.
    let out = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    let (shutdown, run) = start(source, out.clone(), 100);
    wait_until(20, "20 orders", || async { out.len() >= 20 }).await;
    let summary = stop(shutdown, run).await;
    assert_eq!(summary.input, 20);
    assert_eq!(ids(&out.take()), (1..=20).collect::<Vec<_>>());
    assert_all_committed(&brokers, &group, &topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_runtime_resumes_where_it_stopped_and_a_crashed_one_loses_nothing() {
    let (topic, group) = (unique("orders"), unique("g"));
    let (_mock, brokers) = cluster(1, &[(&topic, 2)]);
    produce_orders(&brokers, &topic, 1..=300);

    // Run 1: stopped gracefully mid-way.
    let first = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    let (shutdown, run) = start(source, Slow(first.clone(), Duration::from_millis(20)), 10);
    wait_until(20, "run 1 to start", || async { first.len() >= 50 }).await;
    stop(shutdown, run).await;
    let first = first.take();
    assert!(
        first.len() < 300,
        "run 1 stopped mid-way ({} orders)",
        first.len()
    );

    // Run 2: dropped (a crash) mid-way, with a sink that never confirms.
    let seen = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    let (_, run) = start(
        source,
        NeverConfirm {
            seen: seen.clone(),
            fail: false,
        },
        10,
    );
    wait_until(20, "run 2 to read", || async { seen.len() >= 10 }).await;
    run.abort();
    let _ = run.await;
    let crashed = ids(&seen.take());
    assert!(
        crashed.iter().all(|id| !first.iter().any(|o| o.id == *id)),
        "run 2 starts after what run 1 delivered"
    );

    // Run 3 gets everything run 1 did not deliver, the crashed run's
    // unconfirmed messages included.
    let rest = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    let (shutdown, run) = start(source, rest.clone(), 50);
    let missing = 300 - first.len();
    wait_until(20, "the rest", || async { rest.len() >= missing }).await;
    stop(shutdown, run).await;
    let mut all = ids(&first);
    all.extend(ids(&rest.take()));
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=300).collect::<Vec<_>>(),
        "nothing lost, nothing twice"
    );
    assert_all_committed(&brokers, &group, &topic);
}

const CHILD_ENV: &str = "SYNCFLOW_KAFKA_CHILD";

/// The second consumer of `two_processes_share_the_partitions`, run as a
/// child process: writes what it processed to a file until told to stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by two_processes_share_the_partitions"]
async fn child_consumer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let [brokers, topic, group, out, stop_file]: [&str; 5] =
        spec.split('|').collect::<Vec<_>>().try_into().unwrap();
    let source = KafkaSource::<Order>::connect(&source_config(brokers, topic, group))
        .await
        .unwrap();
    let (shutdown, run) = start(source, JsonLinesSink::append(out).unwrap(), 16);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(stop_file).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = stop(shutdown, run).await;
    println!("CHILD-DONE input={}", summary.input);
}

fn read_ids(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Order>(l).unwrap().id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_partitions() {
    let (topic, group) = (unique("orders"), unique("g"));
    let (_mock, brokers) = cluster(1, &[(&topic, 4)]);
    let dir = tempfile::tempdir().unwrap();
    let (child_out, stop_file): (PathBuf, PathBuf) =
        (dir.path().join("child.jsonl"), dir.path().join("stop"));

    let mine = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    let (shutdown, run) = start(source, mine.clone(), 16);
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_consumer", "--ignored", "--nocapture"])
        .env(
            CHILD_ENV,
            format!(
                "{brokers}|{topic}|{group}|{}|{}",
                child_out.display(),
                stop_file.display()
            ),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Produce a trickle (every customer, so every partition) until both
    // processes have done work, then check that every message was processed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut next = 1u64;
    loop {
        produce_orders(&brokers, &topic, next..next + 10);
        next += 10;
        let theirs = read_ids(&child_out).len();
        if mine.len() > 0 && theirs > 0 && next > 100 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "both processes should get partitions (mine {}, theirs {theirs})",
            mine.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let produced: BTreeSet<u64> = (1..next).collect();
    wait_until(20, "every message processed", || async {
        let mut seen: BTreeSet<u64> = ids(&mine.0.lock().unwrap()).into_iter().collect();
        seen.extend(read_ids(&child_out));
        seen == produced
    })
    .await;
    std::fs::write(&stop_file, b"").unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let child_log = String::from_utf8_lossy(&status.stdout).into_owned()
        + &String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "child failed: {child_log}");
    assert!(child_log.contains("CHILD-DONE"), "{child_log}");
    stop(shutdown, run).await;
    let (mine, theirs) = (ids(&mine.take()), read_ids(&child_out));
    assert!(!mine.is_empty() && !theirs.is_empty());
    let mut all: BTreeSet<u64> = mine.iter().copied().collect();
    all.extend(&theirs);
    assert_eq!(all, produced, "every message processed");
    assert_all_committed(&brokers, &group, &topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_the_flow_goes_on() {
    let (topic, group) = (unique("orders"), unique("g"));
    let (_mock, brokers) = cluster(1, &[(&topic, 1)]);
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let good = |id| Some(serde_json::to_vec(&order(id)).unwrap());
    let messages: Vec<(Option<String>, Vec<u8>)> = [
        good(1),
        Some(b"not json".to_vec()),
        good(3),
        Some(br#"{"id":"four"}"#.to_vec()),
        Some(Vec::new()),
        good(6),
    ]
    .into_iter()
    .map(|p| (None, p.unwrap()))
    .collect();
    produce(&brokers, &topic, &messages);

    let out = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    let runtime = Runtime::new(flow!(pass))
        .source(source)
        .sink(out.clone())
        .dead_letter(&dead)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_until(20, "3 orders and 3 dead letters", || async {
        out.len() >= 3 && dead_letters(&dead).len() >= 3
    })
    .await;
    let summary = stop(shutdown, run).await;
    assert_eq!(
        (summary.input, summary.output, summary.malformed),
        (6, 3, 3)
    );
    assert_eq!(ids(&out.take()), vec![1, 3, 6]);
    let letters = dead_letters(&dead);
    let got: Vec<(u64, &str, &str)> = letters
        .iter()
        .map(|d| (d.position, d.stage.as_str(), d.input.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "decode", "not json"),
            (3, "decode", r#"{"id":"four"}"#),
            (4, "decode", ""),
        ],
        "position = offset, raw payload kept"
    );
    assert!(letters.iter().all(|d| d.source == format!("kafka:{topic}")));
    assert_all_committed(&brokers, &group, &topic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_envelopes_carry_key_partition_and_offset() {
    let (topic, group) = (unique("events"), unique("g"));
    let (_mock, brokers) = cluster(1, &[(&topic, 1)]);
    produce(
        &brokers,
        &topic,
        &[
            (Some("k1".into()), br#"{"a":1}"#.to_vec()),
            (None, b"[1,2]".to_vec()),
            (Some("k3".into()), b"oops".to_vec()),
        ],
    );
    let out: Collect<KafkaRecord<serde_json::Value>> = Collect::new();
    let source = KafkaSource::<KafkaRecord<serde_json::Value>>::connect(
        &source_config(&brokers, &topic, &group).metadata(true),
    )
    .await
    .unwrap();
    let runtime = Runtime::new(flow!(pass_record))
        .source(source)
        .sink(out.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_until(20, "2 records", || async { out.len() >= 2 }).await;
    shutdown.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(
        summary.malformed, 1,
        "a payload that is not JSON is malformed"
    );
    let records = out.take();
    let got: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.topic.as_str(),
                r.partition,
                r.offset,
                r.key.as_deref(),
                r.payload.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                topic.as_str(),
                0,
                0,
                Some("k1"),
                serde_json::json!({"a": 1})
            ),
            (topic.as_str(), 0, 1, None, serde_json::json!([1, 2])),
        ]
    );
    assert!(records.iter().all(|r| r.timestamp.is_some_and(|t| t > 0)));
}

/// Sum of the group's committed offsets over the topic's partitions.
fn committed_total(brokers: &str, group: &str, topic: &str) -> i64 {
    committed(brokers, group, topic)
        .iter()
        .map(|(c, _)| c.unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outages_are_ridden_out_and_nothing_is_lost() {
    // The source reads cluster A, the sink writes cluster B: each can go
    // down on its own.
    let (input, output, group) = (unique("orders"), unique("copies"), unique("g"));
    let (mock_a, a) = cluster(1, &[(&input, 2)]);
    let (mock_b, b) = cluster(1, &[(&output, 2)]);
    produce_orders(&a, &input, 1..=50);
    // Membership outlives the outage (with reconnection backoff): no
    // rebalance, so no message is read twice.
    let config = source_config(&a, &input, &group).property("session.timeout.ms", "10000");
    let source = KafkaSource::<Order>::connect(&config).await.unwrap();
    let sink = KafkaSink::connect(&KafkaSinkConfig::new(&b, &output))
        .await
        .unwrap();
    let (shutdown, run) = start(source, sink, 10);
    wait_until(20, "50 copies, committed", || async {
        topic_len(&b, &output) >= 50 && committed_total(&a, &group, &input) == 50
    })
    .await;

    // The sink's cluster goes away: messages are read, but not delivered,
    // so nothing more is committed.
    mock_b.broker_down(1).unwrap();
    produce_orders(&a, &input, 51..=100);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!run.is_finished(), "the flow waits for the sink's broker");
    assert_eq!(
        committed_total(&a, &group, &input),
        50,
        "nothing undelivered is committed"
    );
    mock_b.broker_up(1).unwrap();
    wait_until(30, "100 copies, committed", || async {
        topic_len(&b, &output) >= 100 && committed_total(&a, &group, &input) == 100
    })
    .await;

    // The source's cluster goes away, then comes back.
    mock_a.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!run.is_finished(), "the flow waits for the source's broker");
    mock_a.broker_up(1).unwrap();
    produce_orders(&a, &input, 101..=150);
    wait_until(30, "150 copies, committed", || async {
        topic_len(&b, &output) >= 150 && committed_total(&a, &group, &input) == 150
    })
    .await;
    stop(shutdown, run).await;
    let copied: Vec<u64> = read_topic(&b, &output)
        .iter()
        .map(|m| serde_json::from_slice::<Order>(&m.payload).unwrap().id)
        .collect();
    assert_eq!(
        copied.iter().copied().collect::<BTreeSet<_>>(),
        (1..=150).collect::<BTreeSet<_>>(),
        "nothing lost"
    );
    assert_eq!(
        copied.len(),
        150,
        "the idempotent producer wrote nothing twice"
    );
    assert_all_committed(&a, &group, &input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_flush_fails_when_a_delivery_fails() {
    let topic = unique("out");
    let (mock, brokers) = cluster(1, &[(&topic, 1)]);
    let mut sink = KafkaSink::connect(
        &KafkaSinkConfig::new(&brokers, &topic).delivery_timeout(Duration::from_secs(5)),
    )
    .await
    .unwrap();
    Sink::<Order>::write(&mut sink, &[order(1)]).await.unwrap();
    Sink::<Order>::flush(&mut sink).await.unwrap();

    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
    );
    Sink::<Order>::write(&mut sink, &[order(2)]).await.unwrap();
    let error = Sink::<Order>::flush(&mut sink)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("1 message(s) were not delivered") && error.contains("uthoriz"),
        "{error}"
    );
    assert_eq!(topic_len(&brokers, &topic), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_without_brokers_fails_with_what_to_do() {
    let config = KafkaSourceConfig::new("127.0.0.1:1", ["t"], "g")
        .connect_timeout(Duration::from_millis(500));
    let error = KafkaSource::<Order>::connect(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("kafka `t at 127.0.0.1:1`: cannot connect"),
        "{error}"
    );
    assert!(error.contains("check `brokers`"), "{error}");

    let config = KafkaSourceConfig::new("127.0.0.1:1", ["t"], "g").property("group.id", "other");
    let error = KafkaSource::<Order>::connect(&config)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("property `group.id` is set by syncflow"),
        "{error}"
    );
    assert!(error.contains("use `group`"), "{error}");

    let config = KafkaSinkConfig::new("127.0.0.1:1", "t").property("linger.ms", "soon");
    let error = KafkaSink::connect(&config).await.unwrap_err().to_string();
    assert!(
        error.contains("cannot create the producer") && error.contains("`linger.ms`"),
        "{error}"
    );

    // A secret never shows, whatever fails.
    let config = KafkaSinkConfig::new("127.0.0.1:1", "t")
        .property("sasl.password", "hunter2")
        .connect_timeout(Duration::from_millis(500));
    let error = KafkaSink::connect(&config).await.unwrap_err().to_string();
    assert!(!error.contains("hunter2"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_an_outage_is_prompt_and_the_group_resumes() {
    let (topic, group) = (unique("orders"), unique("g"));
    let (mock, brokers) = cluster(1, &[(&topic, 2)]);
    produce_orders(&brokers, &topic, 1..=10);
    let out = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    // One order per batch, slowly: acknowledgements keep coming during the
    // outage, and their commits fail.
    let (shutdown, run) = start(source, Slow(out.clone(), Duration::from_millis(100)), 1);
    wait_until(20, "a first order", || async { out.len() >= 1 }).await;
    mock.broker_down(1).unwrap();
    wait_until(20, "10 orders", || async { out.len() >= 10 }).await;
    let stopping = Instant::now();
    let summary = stop(shutdown, run).await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        stopping.elapsed()
    );
    assert_eq!(summary.input, 10);

    // Back up: the group's next run reads what could not be committed, and
    // ends with everything committed.
    mock.broker_up(1).unwrap();
    let rest = Collect::new();
    let source = KafkaSource::<Order>::connect(&source_config(&brokers, &topic, &group))
        .await
        .unwrap();
    let (shutdown, run) = start(source, rest.clone(), 100);
    wait_until(20, "everything committed", || async {
        committed_total(&brokers, &group, &topic) == 10
    })
    .await;
    stop(shutdown, run).await;
    assert_eq!(ids(&out.take()), (1..=10).collect::<Vec<_>>());
    assert!(ids(&rest.take()).iter().all(|id| (1..=10).contains(id)));
}
