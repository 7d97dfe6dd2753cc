//! Save/Load channels kept by NATS JetStream and by Redis Streams instead of
//! the embedded store, against the real local servers: every reader gets
//! every record, a reader's cursor survives a new run, retention is the
//! broker's, `syncflow channels` reports length and lag, and two processes
//! loading with one reader name share the records.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use syncflow::channel::BrokerChannel;
use syncflow::config;
use syncflow::prelude::*;
use syncflow::runtime::Shutdown;
use syncflow_tests::services::{require, unique};

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    id: u64,
    cents: u64,
}

/// Doubles an order's amount.
#[sync_function]
fn bc_double(o: Order) -> Order {
    Order {
        id: o.id,
        cents: o.cents * 2,
    }
}

/// Passes an order on.
#[sync_function]
fn bc_pass(o: Order) -> Order {
    o
}

fn write_orders(path: &Path, ids: std::ops::Range<u64>) {
    let text: String = ids
        .map(|id| format!("{{\"id\":{id},\"cents\":{}}}\n", id * 10))
        .collect();
    std::fs::write(path, text).unwrap();
}

fn read_orders(path: &Path) -> Vec<Order> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The broker entry of a channel: `nats: {...}` or `redis: {...}`, with a
/// stream of its own.
fn broker_entry(broker: &str, stream: &str) -> String {
    match broker {
        "nats" => format!("nats: {{ stream: \"{stream}\", subject: \"{stream}.records\" }}"),
        "redis" => format!("redis: {{ stream: \"{stream}\", consumer: \"test\" }}"),
        other => unreachable!("{other}"),
    }
}

/// A file → bc_double → save flow, and two flows loading the channel into files.
fn branching_file(dir: &Path, broker: &str, stream: &str, retention: &str) -> String {
    let d = dir.display();
    format!(
        r#"
channels:
  path: {d}/store.redb
  brokers:
    orders:
      {entry}
  {retention}
flows:
  produce:
    source: {{ file: "{d}/in.jsonl" }}
    steps: [bc_double]
    sinks: [{{ save: orders }}]
  billing:
    source: {{ load: orders }}
    steps: [bc_pass]
    sinks: [{{ file: "{d}/billing.jsonl" }}]
  audit:
    source: {{ load: orders, reader: audit.v2 }}
    steps: [bc_pass]
    sinks: [{{ file: "{d}/audit.jsonl" }}]
"#,
        entry = broker_entry(broker, stream),
    )
}

async fn run_file(text: &str) {
    let plan = config::load_str(text, "branching.yaml").unwrap();
    let results = tokio::time::timeout(Duration::from_secs(60), plan.run(Shutdown::new(), false))
        .await
        .expect("the flows end once the channel is drained");
    for (name, result) in results {
        let summary = result.unwrap_or_else(|e| panic!("flow {name}: {e}"));
        assert_eq!(summary.failed, 0, "flow {name}");
    }
}

fn broker_of(text: &str) -> BrokerChannel {
    let plan = config::load_str(text, "branching.yaml").unwrap();
    let channels = plan.channels.unwrap();
    assert!(
        !channels.embedded,
        "every channel is on the broker: no store file is needed"
    );
    channels.broker("orders").unwrap().clone()
}

async fn cleanup(broker: &str, stream: &str) {
    match broker {
        "nats" => {
            let client = async_nats::connect("127.0.0.1:4222").await.unwrap();
            let js = async_nats::jetstream::new(client);
            let _ = js.delete_stream(stream).await;
        }
        "redis" => {
            let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let _: () = redis::cmd("DEL")
                .arg(stream)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        _ => {}
    }
}

/// Every reader gets every record, in order; a second run reads only what
/// was saved since (the cursors were committed); the broker reports the
/// channel's length and no lag.
async fn branches_share_a_broker_channel(broker: &str) {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("sf_bc");
    let text = branching_file(dir.path(), broker, &stream, "");
    write_orders(&dir.path().join("in.jsonl"), 0..500);
    run_file(&text).await;
    let want: Vec<Order> = (0..500).map(|id| Order { id, cents: id * 20 }).collect();
    assert_eq!(read_orders(&dir.path().join("billing.jsonl")), want);
    assert_eq!(read_orders(&dir.path().join("audit.jsonl")), want);
    assert!(
        !dir.path().join("store.redb").exists(),
        "no embedded store is opened when every channel is on a broker"
    );

    // A second run: the readers resume after what they acknowledged.
    write_orders(&dir.path().join("in.jsonl"), 500..800);
    run_file(&text).await;
    let want: Vec<Order> = (500..800).map(|id| Order { id, cents: id * 20 }).collect();
    assert_eq!(read_orders(&dir.path().join("billing.jsonl")), want);
    assert_eq!(read_orders(&dir.path().join("audit.jsonl")), want);

    let stats = broker_of(&text).stats().await.unwrap();
    assert_eq!(stats.length, 800, "{stats:?}");
    let readers: Vec<(&str, u64)> = stats
        .readers
        .iter()
        .map(|r| (r.name.as_str(), r.lag))
        .collect();
    let audit = if broker == "nats" {
        "audit_v2"
    } else {
        "audit.v2"
    };
    assert_eq!(readers, vec![(audit, 0), ("billing", 0)], "{stats:?}");
    for r in &stats.readers {
        assert_eq!(r.position, stats.next, "{stats:?}");
    }

    // `syncflow channels flows.yaml` shows the same.
    let file = dir.path().join("branching.yaml");
    std::fs::write(&file, &text).unwrap();
    let path = file.to_str().unwrap().to_string();
    // The CLI starts its own async runtime: run it on a plain thread.
    let (code, out, err) =
        std::thread::spawn(move || syncflow_tests::cli(&["channels", &path, "--json"]))
            .join()
            .unwrap();
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["name"], "orders", "{json}");
    assert_eq!(json[0]["length"], 800, "{json}");
    assert!(
        json[0]["kept_in"].as_str().unwrap().contains(&stream),
        "{json}"
    );
    assert_eq!(json[0]["readers"][1]["lag"], 0, "{json}");
    cleanup(broker, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_channel_branches() {
    if require("nats") {
        branches_share_a_broker_channel("nats").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_channel_branches() {
    if require("redis") {
        branches_share_a_broker_channel("redis").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_channel_retention_is_the_streams() {
    if !require("nats") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("sf_bc_ret");
    let retention = "retention: { orders: { max_records: 100, max_age: 1h } }";
    let text = branching_file(dir.path(), "nats", &stream, retention);
    write_orders(&dir.path().join("in.jsonl"), 0..300);
    run_file(&text).await;
    let stats = broker_of(&text).stats().await.unwrap();
    assert_eq!((stats.length, stats.first, stats.next), (100, 201, 301));
    // The stream itself carries the limits.
    let client = async_nats::connect("127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.config.max_messages, 100);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    // Removing the retention from the file lifts the limits on the next start.
    let text = branching_file(dir.path(), "nats", &stream, "");
    write_orders(&dir.path().join("in.jsonl"), 300..310);
    run_file(&text).await;
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.config.max_messages, -1);
    assert_eq!(info.state.messages, 110);
    cleanup("nats", &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_channel_retention_trims_the_stream() {
    if !require("redis") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("sf_bc_ret");
    let retention = "retention: { orders: { max_records: 200 } }";
    let text = branching_file(dir.path(), "redis", &stream, retention);
    write_orders(&dir.path().join("in.jsonl"), 0..3000);
    run_file(&text).await;
    let stats = broker_of(&text).stats().await.unwrap();
    // `MAXLEN ~` trims whole nodes of the stream: about 200 are kept.
    assert!(
        stats.length >= 200 && stats.length < 600,
        "{} entries kept",
        stats.length
    );
    assert_eq!(stats.next, 3001);
    cleanup("redis", &stream).await;
}

#[test]
fn broker_settings_are_checked_on_load() {
    let cases = [
        (
            "brokers: { orders: { nats: {}, redis: {} } }",
            "give exactly one broker, `nats: {...}` or `redis: {...}` (found nats and redis)",
        ),
        (
            "brokers: { orders: {} }",
            "give exactly one broker, `nats: {...}` or `redis: {...}` (found none)",
        ),
        (
            "brokers: { orders: { nats: { urll: x } } }",
            "channels.brokers.orders: nats: unknown field `urll`",
        ),
        (
            "brokers: { orders: { redis: {} }, audit: { redis: { stream: \"syncflow:channel:orders\" } } }",
            "channel `audit` is kept in the same place",
        ),
        (
            "brokers: { orders: { nats: { url: \"${SF_BC_UNSET_VARIABLE}\" } } }",
            "SF_BC_UNSET_VARIABLE",
        ),
        ("brokers: { \"a b\": { nats: {} } }", "contains ' '"),
    ];
    for (channels, expected) in cases {
        let text = format!(
            "channels:\n  {channels}\nflows:\n  f:\n    source: {{ load: orders }}\n    steps: [bc_pass]\n"
        );
        let err = config::load_str(&text, "bad.yaml").unwrap_err().to_string();
        assert!(err.contains(expected), "{channels}:\n{err}");
        assert!(err.contains("bad.yaml:"), "{err}");
    }
}

// ---- Two processes share one reader ----

const CHILD_ENV: &str = "SYNCFLOW_BROKER_CHANNEL_CHILD";

/// Run by `two_processes_share_a_reader` in child processes (does nothing
/// otherwise): runs a flow file that loads the channel as reader `billing`
/// into its own file, until the stop file appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by another test"]
async fn broker_channel_child() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let [file, ready, stop] = task.split('|').collect::<Vec<_>>()[..] else {
        panic!("bad task {task}");
    };
    let text = std::fs::read_to_string(file).unwrap();
    let mut plan = config::load_str(&text, file).unwrap();
    let progress = plan.track_progress();
    let shutdown = Shutdown::new();
    let run = tokio::spawn(plan.run(shutdown.clone(), false));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !progress.iter().all(|(_, p)| p.is_started()) {
        assert!(Instant::now() < deadline, "the loader did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(ready, "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Path::new(stop).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.shutdown();
    for (name, result) in run.await.unwrap() {
        result.unwrap_or_else(|e| panic!("flow {name}: {e}"));
    }
}

async fn two_processes_share_a_reader(broker: &str) {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("sf_bc_two");
    let d = dir.path().display();
    let entry = |consumer: &str| match broker {
        "nats" => broker_entry("nats", &stream),
        _ => format!("redis: {{ stream: \"{stream}\", consumer: \"{consumer}\" }}"),
    };
    let loader = |i: usize| -> PathBuf {
        let text = format!(
            r#"
channels:
  brokers:
    orders:
      {entry}
flows:
  billing:
    source: {{ load: orders }}
    steps: [bc_pass]
    sinks: [{{ file: "{d}/out{i}.jsonl" }}]
    batch_size: 50
"#,
            entry = entry(&format!("p{i}")),
        );
        let path = dir.path().join(format!("loader{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    // The channel and the reader exist before the children start (NATS
    // would otherwise let the first child create the consumer alone).
    let producer = format!(
        r#"
channels:
  brokers:
    orders:
      {entry}
flows:
  produce:
    source: {{ file: "{d}/in.jsonl" }}
    steps: [bc_double]
    sinks: [{{ save: orders }}]
    batch_size: 20
"#,
        entry = entry("producer"),
    );
    write_orders(&dir.path().join("in.jsonl"), 0..0);
    let setup =
        format!("{producer}  billing:\n    source: {{ load: orders }}\n    steps: [bc_pass]\n");
    run_file(&setup).await;

    let stop = dir.path().join("stop");
    let children: Vec<_> = (0..2)
        .map(|i| {
            let task = format!(
                "{}|{}|{}",
                loader(i).display(),
                dir.path().join(format!("ready{i}")).display(),
                stop.display()
            );
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "broker_channel_child",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD_ENV, task)
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(0..2).all(|i| dir.path().join(format!("ready{i}")).exists()) {
        assert!(Instant::now() < deadline, "both children to start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    const TOTAL: u64 = 2000;
    write_orders(&dir.path().join("in.jsonl"), 0..TOTAL);
    run_file(&producer).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen: Vec<Vec<Order>> = (0..2)
            .map(|i| read_orders(&dir.path().join(format!("out{i}.jsonl"))))
            .collect();
        let ids: BTreeSet<u64> = seen.iter().flatten().map(|o| o.id).collect();
        if ids.len() as u64 == TOTAL || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    std::fs::write(&stop, "").unwrap();
    for mut child in children {
        assert!(child.wait().unwrap().success(), "a child failed");
    }
    let ids: BTreeSet<u64> = seen.iter().flatten().map(|o| o.id).collect();
    assert_eq!(
        ids,
        (0..TOTAL).collect::<BTreeSet<_>>(),
        "every order was processed"
    );
    let counts: Vec<usize> = seen.iter().map(Vec::len).collect();
    eprintln!("{broker}: processed per process: {counts:?}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "one process did all the work: {counts:?}"
    );
    for o in seen.iter().flatten() {
        assert_eq!(o.cents, o.id * 20);
    }
    cleanup(broker, &stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_nats_reader() {
    if require("nats") {
        two_processes_share_a_reader("nats").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_redis_reader() {
    if require("redis") {
        two_processes_share_a_reader("redis").await;
    }
}
