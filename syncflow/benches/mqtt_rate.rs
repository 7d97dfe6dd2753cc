//! MQTT: the connectors' rates against the raw rumqttc client, in the same
//! run. Needs an MQTT broker (Mosquitto) on 127.0.0.1:1883 (or the port in
//! `MQTT_PORT`); skips with a message when it is missing.
//!
//! ```text
//! cargo bench -p syncflow --features mqtt --bench mqtt_rate
//! cargo bench -p syncflow --features mqtt --bench mqtt_rate -- --rounds 7
//! ```
//!
//! Each round (default 5):
//!
//! - **publish**: 20 000 readings (`{"id":..,"value":..}`) at QoS 1 to a
//!   topic nobody reads, in batches of 100, each waiting for its PUBACKs:
//!   `MqttSink` (`write` + `flush` per batch) against rumqttc (`publish` per
//!   message, then the batch's PUBACKs);
//! - **end to end**: 5 bursts of 900 readings (below Mosquitto's default
//!   `max_queued_messages` of 1000, past which it drops messages), each
//!   published as above and read until every one arrived, decoded and
//!   acknowledged: `MqttSink` → broker → `MqttSource` → `flow!` (one step)
//!   → a counting sink, against a rumqttc publisher → broker → a rumqttc
//!   subscriber (persistent session, manual acknowledgements after
//!   decoding). The time runs from the first publish to the last message
//!   read.
//!
//! Prints messages per second of each and the ratio syncflow ÷ raw client
//! (of rates: above 1 is faster), the median over the rounds.
//!
//! `MQTT_PORT` picks another local broker. Mosquitto without
//! `set_tcp_nodelay true` (its default) holds back the last PUBACKs of a
//! batch until the client's delayed TCP acknowledgement, about 40 ms: a
//! batch then costs that much whoever publishes, and the rates measure the
//! stalls (see the book's *Benchmarks* page).

mod rates;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rates::{Count, Table};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use syncflow::connector::mqtt::{MqttSink, MqttSinkConfig, MqttSource, MqttSourceConfig};
use syncflow::connector::{Sink, serde_decode};
use syncflow::prelude::*;
use tokio::sync::mpsc;

const PUBLISH: u64 = 20_000;
const BURST: u64 = 900;
const BURSTS: u64 = 5;
const BATCH: usize = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    id: u64,
    value: f64,
}

/// Passes the reading's id on.
#[sync_function]
fn mqtt_reading_id(r: Reading) -> u64 {
    r.id
}

/// The broker's port: `MQTT_PORT`, default 1883.
fn port() -> u16 {
    std::env::var("MQTT_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1883)
}

fn readings(n: u64) -> Vec<Reading> {
    (1..=n).map(|id| Reading { id, value: 1.5 }).collect()
}

/// A rumqttc publisher: the client and the PUBACKs its event loop counts.
struct RawPublisher {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl RawPublisher {
    async fn connect(id: &str) -> Self {
        let options = MqttOptions::new(id, "127.0.0.1", port());
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (tx, acks) = mpsc::unbounded_channel();
        let (connected_tx, connected) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut connected_tx = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(c) = connected_tx.take() {
                            let _ = c.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(_))) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        connected.await.expect("the publisher connects");
        RawPublisher { client, acks, task }
    }

    /// Publishes in batches, each waiting for its PUBACKs.
    async fn publish(&mut self, topic: &str, readings: &[Reading]) {
        for chunk in readings.chunks(BATCH) {
            for r in chunk {
                let payload = serde_json::to_vec(r).unwrap();
                self.client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            for _ in chunk {
                self.acks
                    .recv()
                    .await
                    .expect("the publisher's event loop runs");
            }
        }
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), self.task).await;
    }
}

/// A rumqttc subscriber with a persistent session that decodes each
/// message and acknowledges it after; counts what it read.
struct RawSubscriber {
    client: AsyncClient,
    seen: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RawSubscriber {
    async fn connect(id: &str, topic: &str) -> Self {
        let mut options = MqttOptions::new(id, "127.0.0.1", port());
        options.set_clean_session(false).set_manual_acks(true);
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        let seen = Arc::new(AtomicU64::new(0));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let task = {
            let (client, seen) = (client.clone(), seen.clone());
            tokio::spawn(async move {
                let mut subscribed_tx = Some(subscribed_tx);
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            if let Some(s) = subscribed_tx.take() {
                                let _ = s.send(());
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            let reading: Reading =
                                serde_json::from_slice(&publish.payload).unwrap();
                            assert!(reading.id > 0);
                            if client.ack(&publish).await.is_err() {
                                return;
                            }
                            seen.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        };
        subscribed.await.expect("the subscriber subscribes");
        RawSubscriber { client, seen, task }
    }

    async fn close(self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), self.task).await;
    }
}

/// Connects with a clean session, which drops the broker's session of `id`.
async fn forget_session(id: &str) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port());
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Incoming(Packet::ConnAck(_))) = eventloop.poll().await {
                break;
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}

async fn wait(seen: impl Fn() -> u64, n: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen() < n {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {n} messages after 60 s",
            seen()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn raw_publish(topic: &str, id: &str) -> f64 {
    let readings = readings(PUBLISH);
    let mut publisher = RawPublisher::connect(id).await;
    let started = Instant::now();
    publisher.publish(topic, &readings).await;
    let rate = PUBLISH as f64 / started.elapsed().as_secs_f64();
    publisher.close().await;
    rate
}

async fn sink_publish(topic: &str) -> f64 {
    let readings = readings(PUBLISH);
    let mut sink = MqttSink::connect(&MqttSinkConfig::new(topic).broker("127.0.0.1", port()))
        .await
        .unwrap();
    let started = Instant::now();
    for chunk in readings.chunks(BATCH) {
        sink.write(chunk).await.unwrap();
        Sink::<Reading>::flush(&mut sink).await.unwrap();
    }
    PUBLISH as f64 / started.elapsed().as_secs_f64()
}

async fn raw_end_to_end(topic: &str, tag: &str) -> f64 {
    let readings = readings(BURST);
    let sub_id = format!("{tag}-rs");
    let subscriber = RawSubscriber::connect(&sub_id, topic).await;
    let mut publisher = RawPublisher::connect(&format!("{tag}-rp")).await;
    let mut busy = Duration::ZERO;
    for burst in 1..=BURSTS {
        let started = Instant::now();
        publisher.publish(topic, &readings).await;
        wait(
            || subscriber.seen.load(Ordering::Relaxed),
            burst * BURST,
            "mqtt raw end to end",
        )
        .await;
        busy += started.elapsed();
    }
    publisher.close().await;
    subscriber.close().await;
    forget_session(&sub_id).await;
    (BURST * BURSTS) as f64 / busy.as_secs_f64()
}

async fn syncflow_end_to_end(topic: &str, tag: &str) -> f64 {
    let readings = readings(BURST);
    let source_id = format!("{tag}-ss");
    let count = Count::default();
    let runtime = Runtime::new(flow!(mqtt_reading_id))
        .source(
            MqttSource::<Reading>::connect(
                &MqttSourceConfig::new(&source_id, topic).broker("127.0.0.1", port()),
                serde_decode,
            )
            .await
            .unwrap(),
        )
        .sink(count.clone())
        .batch_size(1000)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    let mut sink = MqttSink::connect(&MqttSinkConfig::new(topic).broker("127.0.0.1", port()))
        .await
        .unwrap();
    let mut busy = Duration::ZERO;
    for burst in 1..=BURSTS {
        let started = Instant::now();
        for chunk in readings.chunks(BATCH) {
            sink.write(chunk).await.unwrap();
            Sink::<Reading>::flush(&mut sink).await.unwrap();
        }
        wait(|| count.get(), burst * BURST, "mqtt syncflow end to end").await;
        busy += started.elapsed();
    }
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    drop(sink);
    forget_session(&source_id).await;
    (BURST * BURSTS) as f64 / busy.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !rates::up(&format!("127.0.0.1:{}", port())) {
        eprintln!(
            "mqtt_rate skipped: needs an MQTT broker (Mosquitto) on 127.0.0.1:{}",
            port()
        );
        return;
    }
    let rounds = rates::rounds(5);
    eprintln!(
        "mqtt_rate: {PUBLISH} readings published, {BURSTS}×{BURST} end to end, per round; {rounds} round(s)"
    );
    let pid = std::process::id();
    let mut table = Table::new("mqtt");
    for round in 0..rounds {
        let tag = format!("sf-rate-{pid}-{round}");
        eprintln!("round {round}:");
        let topic = format!("sf/rate/{pid}/{round}/publish");
        let raw = raw_publish(&topic, &format!("{tag}-p")).await;
        let sink = sink_publish(&topic).await;
        table.add("publish (QoS 1, PUBACKed)", raw, sink);
        let (raw_topic, sf_topic) = (
            format!("sf/rate/{pid}/{round}/raw"),
            format!("sf/rate/{pid}/{round}/sf"),
        );
        let raw = raw_end_to_end(&raw_topic, &tag).await;
        let syncflow = syncflow_end_to_end(&sf_topic, &tag).await;
        table.add("end to end (publish, read, decode, ack)", raw, syncflow);
    }
    table.print();
}
