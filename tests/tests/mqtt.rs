//! The MQTT connectors against a real Mosquitto (127.0.0.1:1883): round
//! trip, at-least-once through the persistent session (failed sink, dropped
//! runtime), reconnects through a cutting proxy, bad input, and two
//! processes sharing a topic through a shared subscription.

mod connector_support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connector_support::{Collect, distinct, wait_for};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use syncflow::connector::mqtt::{MqttSink, MqttSinkConfig, MqttSource, MqttSourceConfig};
use syncflow::connector::{Batch, Read, Sink, Source, serde_decode};
use syncflow::prelude::*;
use syncflow_tests::proxy::Proxy;
use syncflow_tests::services::{require, unique};

#[derive(Debug, Clone, Deserialize)]
struct Reading {
    id: u64,
    value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Scaled {
    id: u64,
    value: f64,
}

/// Scales a reading.
#[sync_function]
fn scale(r: Reading) -> Scaled {
    Scaled {
        id: r.id,
        value: r.value * 10.0,
    }
}

/// Passes the reading's id on.
#[sync_function]
fn reading_id(r: Reading) -> u64 {
    r.id
}

fn reading(id: u64) -> String {
    format!(r#"{{"id":{id},"value":{}.5}}"#, id)
}

/// Publishes at QoS 1 and waits for every PUBACK.
async fn publish(topic: &str, payloads: impl IntoIterator<Item = String>) {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new(unique("pub"), "127.0.0.1", 1883), 1024);
    let mut count = 0;
    for payload in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        count += 1;
    }
    let mut acked = 0;
    while acked < count {
        if let Event::Incoming(Packet::PubAck(_)) =
            tokio::time::timeout(Duration::from_secs(5), eventloop.poll())
                .await
                .unwrap()
                .unwrap()
        {
            acked += 1;
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

/// Subscribes (QoS 1) and keeps every message's payload.
async fn subscribe(topic: &str) -> (Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new(unique("sub"), "127.0.0.1", 1883), 64);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
            break;
        }
    }
    let task = tokio::spawn({
        let got = got.clone();
        async move {
            let _client = client;
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    got.lock()
                        .unwrap()
                        .push(String::from_utf8(p.payload.to_vec()).unwrap());
                }
            }
        }
    });
    (got, task)
}

/// Removes a persistent session from the broker.
async fn forget_session(client_id: &str) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", 1883);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await.unwrap() {
            break;
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
}

fn config(client_id: &str, topic: &str) -> MqttSourceConfig {
    MqttSourceConfig::new(client_id, topic).reconnect_max(Duration::from_millis(500))
}

/// The first message a new source with this session gets.
async fn first_message(client_id: &str, topic: &str) -> Option<u64> {
    let mut source = MqttSource::<Reading>::connect(&config(client_id, topic), serde_decode)
        .await
        .unwrap();
    let mut batch = Batch::default();
    for _ in 0..25 {
        if let Read::Batch(_) = source.read(&mut batch, 1).await.unwrap() {
            let (_, _, payload) = batch.iter().next().unwrap();
            return Some(payload.as_ref().unwrap().id);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_a_flow_acknowledges_everything() {
    if !require("mosquitto") {
        return;
    }
    let (topic_in, topic_out, id) = (unique("sf/in"), unique("sf/out"), unique("sf-src"));
    let (out, listener) = subscribe(&topic_out).await;
    let source = MqttSource::<Reading>::connect(&config(&id, &topic_in), serde_decode)
        .await
        .unwrap();
    let sink = MqttSink::connect(&MqttSinkConfig::new(&topic_out))
        .await
        .unwrap();
    let runtime = Runtime::new(flow!(scale))
        .source(source)
        .sink(sink)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    publish(&topic_in, (1..=50).map(reading)).await;
    wait_for("50 outputs", Duration::from_secs(15), || {
        out.lock().unwrap().len() >= 50
    })
    .await;
    shutdown.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.input, summary.output), (50, 50));
    let mut got: Vec<Scaled> = out
        .lock()
        .unwrap()
        .iter()
        .map(|s| serde_json::from_str(s).unwrap())
        .collect();
    got.sort_by_key(|s| s.id);
    let expected: Vec<Scaled> = (1..=50)
        .map(|id| Scaled {
            id,
            value: (id as f64 + 0.5) * 10.0,
        })
        .collect();
    assert_eq!(got, expected);
    listener.abort();

    // Everything was acknowledged: the session's next message is a new one.
    publish(&topic_in, [reading(1000)]).await;
    assert_eq!(first_message(&id, &topic_in).await, Some(1000));
    forget_session(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_when_the_sink_fails_and_the_session_delivers_it_again() {
    if !require("mosquitto") {
        return;
    }
    let (topic, id) = (unique("sf/fail"), unique("sf-fail"));
    let source = MqttSource::<Reading>::connect(&config(&id, &topic), serde_decode)
        .await
        .unwrap();
    publish(&topic, (1..=10).map(reading)).await;
    let error = Runtime::new(flow!(reading_id))
        .source(source)
        .sink(Collect::<u64>::failing())
        .handle_signals(false)
        .run()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("refused on purpose"), "{error}");

    let collect = Collect::<u64>::new();
    let runtime = Runtime::new(flow!(reading_id))
        .source(
            MqttSource::<Reading>::connect(&config(&id, &topic), serde_decode)
                .await
                .unwrap(),
        )
        .sink(collect.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    wait_for("10 readings again", Duration::from_secs(10), || {
        collect.len() >= 10
    })
    .await;
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(distinct(&collect.snapshot()), (1..=10).collect::<Vec<_>>());
    publish(&topic, [reading(1000)]).await;
    assert_eq!(first_message(&id, &topic).await, Some(1000));
    forget_session(&id).await;
}

#[test]
fn a_dropped_runtime_loses_nothing() {
    if !require("mosquitto") {
        return;
    }
    let (topic, id) = (unique("sf/drop"), unique("sf-drop"));
    let first = Collect::<u64>::slow(Duration::from_millis(30));
    {
        let tokio = tokio::runtime::Runtime::new().unwrap();
        tokio.block_on(async {
            let runtime = Runtime::new(flow!(reading_id))
                .source(
                    MqttSource::<Reading>::connect(&config(&id, &topic), serde_decode)
                        .await
                        .unwrap(),
                )
                .sink(first.clone())
                .batch_size(5)
                .handle_signals(false);
            tokio::spawn(runtime.run());
            publish(&topic, (1..=100).map(reading)).await;
            wait_for("a first part", Duration::from_secs(10), || {
                first.len() >= 20
            })
            .await;
        });
    }
    let got_first = first.snapshot();
    assert!(
        got_first.len() < 100,
        "the first run finished before the drop"
    );

    let tokio = tokio::runtime::Runtime::new().unwrap();
    tokio.block_on(async {
        let second = Collect::<u64>::new();
        let runtime = Runtime::new(flow!(reading_id))
            .source(
                MqttSource::<Reading>::connect(&config(&id, &topic), serde_decode)
                    .await
                    .unwrap(),
            )
            .sink(second.clone())
            .handle_signals(false);
        let shutdown = runtime.shutdown_handle();
        let run = tokio::spawn(runtime.run());
        let all: BTreeSet<u64> = (1..=100).collect();
        wait_for("every reading", Duration::from_secs(15), || {
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
        forget_session(&id).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_resumes_after_the_connections_are_cut() {
    if !require("mosquitto") {
        return;
    }
    let (topic_in, topic_out, id) = (unique("sf/cut/in"), unique("sf/cut/out"), unique("sf-cut"));
    let sink_id = unique("sf-cut-sink");
    let proxy = Proxy::start("127.0.0.1:1883").await.unwrap();
    let (host, port) = (proxy.addr().ip().to_string(), proxy.addr().port());
    let (out, listener) = subscribe(&topic_out).await;
    let source =
        MqttSource::<Reading>::connect(&config(&id, &topic_in).broker(&host, port), serde_decode)
            .await
            .unwrap();
    let sink = MqttSink::connect(
        &MqttSinkConfig::new(&topic_out)
            .broker(&host, port)
            .client_id(&sink_id)
            .reconnect_max(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let runtime = Runtime::new(flow!(reading_id))
        .source(source)
        .sink(sink)
        .batch_size(10)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    let ids = || -> Vec<u64> {
        let got: Vec<u64> = out
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        distinct(&got)
    };
    publish(&topic_in, (1..=50).map(reading)).await;
    wait_for("a first part", Duration::from_secs(10), || {
        ids().len() >= 20
    })
    .await;
    proxy.cut(Duration::from_millis(700)).await;
    publish(&topic_in, (51..=100).map(reading)).await;
    wait_for("every reading", Duration::from_secs(20), || {
        ids().len() == 100
    })
    .await;
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    assert_eq!(ids(), (1..=100).collect::<Vec<_>>());
    listener.abort();
    forget_session(&id).await;
    forget_session(&sink_id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_are_dead_lettered_and_acknowledged() {
    if !require("mosquitto") {
        return;
    }
    let (topic, id) = (unique("sf/bad"), unique("sf-bad"));
    let collect = Collect::<u64>::new();
    let dead = Collect::<DeadLetter>::new();
    let runtime = Runtime::new(flow!(reading_id))
        .source(
            MqttSource::<Reading>::connect(&config(&id, &topic), serde_decode)
                .await
                .unwrap(),
        )
        .sink(collect.clone())
        .dead_letter_sink(dead.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    publish(&topic, [reading(1), "not json".to_string(), reading(2)]).await;
    wait_for(
        "2 readings and 1 dead letter",
        Duration::from_secs(10),
        || collect.len() == 2 && dead.len() == 1,
    )
    .await;
    shutdown.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.malformed, 1);
    assert_eq!(collect.snapshot(), vec![1, 2]);
    let dead = dead.snapshot();
    assert_eq!(
        (dead[0].stage.as_str(), dead[0].input.as_str()),
        ("decode", "not json")
    );
    assert_eq!(dead[0].source, format!("mqtt:{topic}"));
    publish(&topic, [reading(1000)]).await;
    assert_eq!(
        first_message(&id, &topic).await,
        Some(1000),
        "the bad message was not acknowledged"
    );
    forget_session(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_say_what_to_check() {
    if !require("mosquitto") {
        return;
    }
    let error = MqttSource::<Reading>::connect(
        &MqttSourceConfig::new(unique("sf-err"), "x").broker("127.0.0.1", 1),
        serde_decode,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(error.contains("cannot connect"), "{error}");
    assert!(error.contains("check that the broker runs"), "{error}");
    let error = MqttSink::connect(&MqttSinkConfig::new("a/+/b"))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("wildcard"), "{error}");
    let mut sink = MqttSink::connect(&MqttSinkConfig::new(unique("sf/flush")))
        .await
        .unwrap();
    Sink::<u64>::write(&mut sink, &[1, 2, 3]).await.unwrap();
    Sink::<u64>::flush(&mut sink).await.unwrap();
}

// ---- Two processes share a topic ----

const CHILD_ENV: &str = "SYNCFLOW_MQTT_CHILD";

/// Consumes the shared subscription until quiet, then returns the ids.
async fn consume_share(client_id: &str, filter: &str, ready: impl FnOnce()) -> Vec<u64> {
    let collect = Collect::<u64>::slow(Duration::from_millis(5));
    let runtime = Runtime::new(flow!(reading_id))
        .source(
            MqttSource::<Reading>::connect(&config(client_id, filter), serde_decode)
                .await
                .unwrap(),
        )
        .sink(collect.clone())
        .batch_size(5)
        .handle_signals(false);
    ready();
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
        if (n > 0 && last.1.elapsed() > Duration::from_secs(1))
            || std::time::Instant::now() > deadline
        {
            break;
        }
    }
    shutdown.shutdown();
    run.await.unwrap().unwrap();
    forget_session(client_id).await;
    collect.snapshot()
}

/// Run by `two_processes_share_a_shared_subscription` in a child process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by another test"]
async fn child_subscriber() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (client_id, filter) = task.split_once(' ').unwrap();
    let ids = consume_share(client_id, filter, || println!("CHILD-READY")).await;
    let text: Vec<String> = ids.iter().map(u64::to_string).collect();
    println!("CHILD-IDS {}", text.join(","));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_shared_subscription() {
    if !require("mosquitto") {
        return;
    }
    use std::io::BufRead;
    let topic = unique("sf/share");
    let filter = format!("$share/{}/{topic}", unique("group"));
    let (here_id, there_id) = (unique("sf-share-a"), unique("sf-share-b"));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_subscriber", "--ignored", "--nocapture"])
        .env(CHILD_ENV, format!("{there_id} {filter}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = lines_tx.send(line.unwrap_or_default());
        }
    });
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let here = tokio::spawn({
        let filter = filter.clone();
        async move {
            consume_share(&here_id, &filter, || {
                let _ = ready_tx.send(());
            })
            .await
        }
    });
    ready_rx.await.unwrap();
    let mut output = Vec::new();
    let child_ready = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(100)) {
                let ready = line == "CHILD-READY";
                if ready {
                    return (true, lines_rx);
                }
            }
        }
        (false, lines_rx)
    })
    .await
    .unwrap();
    let (ok, lines_rx) = child_ready;
    assert!(ok, "the child did not subscribe");
    publish(&topic, (1..=200).map(reading)).await;

    let here = here.await.unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    output.extend(lines_rx.try_iter());
    let line = output
        .iter()
        .find_map(|l| l.strip_prefix("CHILD-IDS "))
        .unwrap_or_else(|| panic!("the child printed no ids: {output:?}"));
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
}
