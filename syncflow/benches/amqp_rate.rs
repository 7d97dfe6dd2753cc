//! RabbitMQ: the connectors' rates against the raw lapin client, in the same
//! run. Needs RabbitMQ on 127.0.0.1:5672 (guest/guest); skips with a
//! message when it is missing.
//!
//! ```text
//! cargo bench -p syncflow --features amqp --bench amqp_rate
//! cargo bench -p syncflow --features amqp --bench amqp_rate -- --rounds 5
//! ```
//!
//! Each round (default 3):
//!
//! - **publish**: 20 000 orders (`{"id":..,"cents":..}`) to a durable queue,
//!   persistent, in batches of 1000, each batch waiting for its publisher
//!   confirms: `AmqpSink` (`write` + `flush` per batch) against lapin
//!   (`basic_publish` per message, then every confirm of the batch);
//! - **consume**: those 20 000 messages, decoded, acknowledged, with a
//!   prefetch of 2000: `AmqpSource` → `flow!` (one step) → a counting sink,
//!   batches of 1000, against a lapin consumer loop that decodes each
//!   delivery and acknowledges every 1000th with `multiple`.
//!
//! Prints messages per second of each and the ratio syncflow ÷ raw client
//! (of rates: above 1 is faster), the median over the rounds.

mod rates;

use std::future::poll_fn;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures_core::Stream;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use rates::{Count, Table};
use serde::{Deserialize, Serialize};
use syncflow::connector::amqp::{AmqpSink, AmqpSinkConfig, AmqpSource, AmqpSourceConfig};
use syncflow::connector::{Sink, serde_decode};
use syncflow::prelude::*;

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const N: u64 = 20_000;
const BATCH: usize = 1000;
const PREFETCH: u16 = 2000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: u64,
    cents: i64,
}

/// Passes the order's id on.
#[sync_function]
fn amqp_order_id(o: Order) -> u64 {
    o.id
}

fn orders() -> Vec<Order> {
    (1..=N)
        .map(|id| Order {
            id,
            cents: id as i64 * 100,
        })
        .collect()
}

async fn channel() -> (Connection, Channel) {
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

async fn declare(channel: &Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// lapin: publishes the orders in batches, each waiting for its confirms.
async fn raw_publish(queue: &str, orders: &[Order]) -> f64 {
    let (_connection, channel) = channel().await;
    declare(&channel, queue).await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    let mut confirms = Vec::with_capacity(BATCH);
    for chunk in orders.chunks(BATCH) {
        for order in chunk {
            let payload = serde_json::to_vec(order).unwrap();
            confirms.push(
                channel
                    .basic_publish(
                        "".into(),
                        queue.into(),
                        BasicPublishOptions::default(),
                        &payload,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into()),
                    )
                    .await
                    .unwrap(),
            );
        }
        for confirm in confirms.drain(..) {
            assert!(confirm.await.unwrap().is_ack());
        }
    }
    N as f64 / started.elapsed().as_secs_f64()
}

/// `AmqpSink`: `write` + `flush` per batch.
async fn sink_publish(queue: &str, orders: &[Order]) -> f64 {
    let mut sink = AmqpSink::connect(&AmqpSinkConfig::new("", queue).declare_queue(queue))
        .await
        .unwrap();
    let started = Instant::now();
    for chunk in orders.chunks(BATCH) {
        sink.write(chunk).await.unwrap();
        Sink::<Order>::flush(&mut sink).await.unwrap();
    }
    N as f64 / started.elapsed().as_secs_f64()
}

/// lapin: consumes, decodes, acknowledges every 1000th delivery (multiple).
async fn raw_consume(queue: &str) -> f64 {
    let (_connection, channel) = channel().await;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut seen = 0u64;
    let mut sum = 0u64;
    while seen < N {
        let delivery = poll_fn(|cx| Pin::new(&mut consumer).poll_next(cx))
            .await
            .expect("the consumer ended")
            .unwrap();
        let order: Order = serde_json::from_slice(&delivery.data).unwrap();
        sum += order.id;
        seen += 1;
        if seen.is_multiple_of(BATCH as u64) || seen == N {
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .unwrap();
        }
    }
    let rate = N as f64 / started.elapsed().as_secs_f64();
    assert_eq!(sum, N * (N + 1) / 2);
    rate
}

/// `AmqpSource` → `flow!` → a counting sink.
async fn runtime_consume(queue: &str) -> f64 {
    let count = Count::default();
    let source = AmqpSource::<Order>::connect(
        &AmqpSourceConfig::new(queue).prefetch(PREFETCH),
        serde_decode,
    )
    .await
    .unwrap();
    let runtime = Runtime::new(flow!(amqp_order_id))
        .source(source)
        .sink(count.clone())
        .batch_size(BATCH)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let started = Instant::now();
    let run = tokio::spawn(runtime.run());
    count
        .wait(N, Duration::from_secs(120), "amqp runtime consume")
        .await;
    let rate = N as f64 / started.elapsed().as_secs_f64();
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    rate
}

async fn delete(queue: &str) {
    let (_connection, channel) = channel().await;
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !rates::up("127.0.0.1:5672") {
        eprintln!("amqp_rate skipped: needs RabbitMQ on 127.0.0.1:5672 (guest/guest)");
        return;
    }
    let rounds = rates::rounds(3);
    let orders = orders();
    let tag = std::process::id();
    eprintln!("amqp_rate: {N} orders per round, {rounds} round(s)");
    let mut table = Table::new("amqp");
    for round in 0..rounds {
        let (raw_queue, sink_queue) = (
            format!("sf_amqp_rate_{tag}_{round}_raw"),
            format!("sf_amqp_rate_{tag}_{round}_sf"),
        );
        eprintln!("round {round}:");
        let raw = raw_publish(&raw_queue, &orders).await;
        let sink = sink_publish(&sink_queue, &orders).await;
        table.add("publish (persistent, confirmed)", raw, sink);
        let raw = raw_consume(&raw_queue).await;
        let runtime = runtime_consume(&sink_queue).await;
        table.add("consume (decoded, acknowledged)", raw, runtime);
        delete(&raw_queue).await;
        delete(&sink_queue).await;
    }
    table.print();
}
