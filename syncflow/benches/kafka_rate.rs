//! Kafka: the connectors' rates against the raw rdkafka client, in the same
//! run, on librdkafka's in-process mock cluster (no broker needed; the
//! cluster's own work shares the cores with the clients, so it is no model
//! of a real broker's latency).
//!
//! ```text
//! cargo bench -p syncflow --features kafka --bench kafka_rate
//! cargo bench -p syncflow --features kafka --bench kafka_rate -- --rounds 5
//! ```
//!
//! Each round (default 3), on topics of 4 partitions:
//!
//! - **produce**: 200 000 orders of ~60 bytes as JSON, keyed by customer,
//!   idempotent with `acks=all`, flushed every 4096: `KafkaSink` (`write` +
//!   `flush` per batch) against an rdkafka `FutureProducer` with the same
//!   settings (`send_result` per message, then the batch's delivery
//!   futures awaited);
//! - **consume**: those orders read by a new consumer group, decoded, their
//!   offsets committed: `KafkaSource` → `flow!` (one step) → a counting
//!   sink (commits after each acknowledged batch), against an rdkafka
//!   `StreamConsumer` loop that decodes each message, stores its offset
//!   and commits asynchronously every 4096 messages. Joining the group
//!   takes seconds here, so the time runs from the first message to the
//!   last (the first batch, or message, not counted).
//!
//! Prints messages per second of each and the ratio syncflow ÷ raw client
//! (of rates: above 1 is faster), the median over the rounds.

mod rates;

use std::time::{Duration, Instant};

use rates::{Count, Table};
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use syncflow::connector::Sink;
use syncflow::connector::kafka::{KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig};
use syncflow::prelude::*;

const N: u64 = 200_000;
const BATCH: usize = 4096;
const PARTITIONS: i32 = 4;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    cents: i64,
}

/// An order's id.
#[sync_function]
fn kafka_order_id(o: Order) -> u64 {
    o.id
}

fn orders() -> Vec<Order> {
    (1..=N)
        .map(|id| Order {
            id,
            customer: format!("c{}", id % 5),
            cents: id as i64 * 100 + 1,
        })
        .collect()
}

/// rdkafka: a `FutureProducer`, `send_result` per message, then every
/// delivery future of the batch awaited.
async fn raw_produce(brokers: &str, topic: &str, orders: &[Order]) -> f64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    let started = Instant::now();
    let mut payload = Vec::with_capacity(128);
    let mut deliveries = Vec::with_capacity(BATCH);
    for chunk in orders.chunks(BATCH) {
        for order in chunk {
            payload.clear();
            serde_json::to_writer(&mut payload, order).unwrap();
            let record = FutureRecord::<str, [u8]>::to(topic)
                .key(order.customer.as_str())
                .payload(&payload);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        for delivery in deliveries.drain(..) {
            delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
    N as f64 / started.elapsed().as_secs_f64()
}

/// `KafkaSink`: `write` + `flush` per batch.
async fn sink_produce(brokers: &str, topic: &str, orders: &[Order]) -> f64 {
    let mut sink = KafkaSink::connect(&KafkaSinkConfig::new(brokers, topic).key("customer"))
        .await
        .unwrap();
    let started = Instant::now();
    for chunk in orders.chunks(BATCH) {
        sink.write(chunk).await.unwrap();
        Sink::<Order>::flush(&mut sink).await.unwrap();
    }
    N as f64 / started.elapsed().as_secs_f64()
}

/// rdkafka: a `StreamConsumer` loop, offsets stored per message and
/// committed every batch.
async fn raw_consume(brokers: &str, topic: &str, group: &str) -> f64 {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "3000")
        .set("heartbeat.interval.ms", "100")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut first = None;
    let mut seen = 0u64;
    let mut sum = 0u64;
    while seen < N {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("a message within 60 s")
            .unwrap();
        first.get_or_insert_with(Instant::now);
        let order: Order = serde_json::from_slice(message.payload().unwrap_or(&[])).unwrap();
        sum += order.id;
        consumer.store_offset_from_message(&message).unwrap();
        seen += 1;
        if seen.is_multiple_of(BATCH as u64) {
            consumer.commit_consumer_state(CommitMode::Async).unwrap();
        }
    }
    let elapsed = first.expect("a first message").elapsed();
    tokio::task::block_in_place(|| consumer.commit_consumer_state(CommitMode::Sync)).unwrap();
    assert_eq!(sum, N * (N + 1) / 2);
    (N - 1) as f64 / elapsed.as_secs_f64()
}

/// `KafkaSource` → `flow!` → a counting sink.
async fn runtime_consume(brokers: &str, topic: &str, group: &str) -> f64 {
    let count = Count::default();
    let config = KafkaSourceConfig::new(brokers, [topic], group)
        .property("session.timeout.ms", "3000")
        .property("heartbeat.interval.ms", "100")
        .connect_timeout(Duration::from_secs(5));
    let source = KafkaSource::<Order>::connect(&config).await.unwrap();
    let runtime = Runtime::new(flow!(kafka_order_id))
        .source(source)
        .sink(count.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    count
        .wait(N, Duration::from_secs(120), "kafka runtime consume")
        .await;
    let (first, last) = count.span().expect("writes");
    let counted = N - count.first_write();
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    counted as f64 / (last - first).as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = rates::rounds(3);
    let mock = match MockCluster::new(1) {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("kafka_rate skipped: cannot start librdkafka's mock cluster ({e})");
            return;
        }
    };
    let brokers = mock.bootstrap_servers();
    let orders = orders();
    eprintln!("kafka_rate: {N} orders per round, {PARTITIONS} partitions, {rounds} round(s)");
    let mut table = Table::new("kafka (mock cluster)");
    for round in 0..rounds {
        let (raw_topic, sf_topic) = (format!("raw-{round}"), format!("sf-{round}"));
        for topic in [&raw_topic, &sf_topic] {
            mock.create_topic(topic, PARTITIONS, 1).unwrap();
        }
        eprintln!("round {round}:");
        let raw = raw_produce(&brokers, &raw_topic, &orders).await;
        let sink = sink_produce(&brokers, &sf_topic, &orders).await;
        table.add("produce (acks=all, idempotent)", raw, sink);
        let raw = raw_consume(&brokers, &raw_topic, &format!("raw-{round}")).await;
        let runtime = runtime_consume(&brokers, &sf_topic, &format!("sf-{round}")).await;
        table.add("consume (decoded, offsets committed)", raw, runtime);
    }
    table.print();
}
