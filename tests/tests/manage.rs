//! Changing flows while they run: the flow manager, file watching and the
//! admin HTTP API.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use syncflow::admin::{AdminError, AdminServer};
use syncflow::channel::{ChannelStore, RecordBatch};
use syncflow::manage::{FlowManager, FlowState, ManageError, WatchEvent, watch_file};
use syncflow::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Deserialize, Serialize)]
pub struct Msg {
    pub id: u64,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Tagged {
    pub id: u64,
    pub v: u32,
}

/// Tags a message as handled by version 1.
#[sync_function]
pub fn manage_v1(m: Msg) -> Tagged {
    work();
    Tagged { id: m.id, v: 1 }
}

/// Tags a message as handled by version 2.
#[sync_function]
pub fn manage_v2(m: Msg) -> Tagged {
    work();
    Tagged { id: m.id, v: 2 }
}

/// Some work per message, so that a flow has batches in flight when it is
/// swapped (a swap that did not drain them would then lose or repeat some).
fn work() {
    std::thread::sleep(Duration::from_micros(40));
}

/// The store file and the sink file of one test.
struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    store_path: PathBuf,
    sink: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        Setup {
            store_path: path.join("channels.redb"),
            sink: path.join("out.jsonl"),
            dir: path,
            _dir: dir,
        }
    }

    /// A flow file with one loading flow `f` whose steps are `steps`.
    fn file(&self, steps: &str, extra: &str) -> String {
        format!(
            "channels:\n  path: \"{store}\"\nflows:\n  f:\n    source: {{ load: input }}\n    steps: [{steps}]\n    sinks:\n      - file: \"{sink}\"\n        append: true\n        fsync: false\n    batch_size: 64\n{extra}",
            store = self.store_path.display(),
            sink = self.sink.display(),
        )
    }

    /// The body of flow `f` alone.
    fn body(&self, steps: &str) -> String {
        format!(
            "source: {{ load: input }}\nsteps: [{steps}]\nsinks:\n  - file: \"{sink}\"\n    append: true\n    fsync: false\nbatch_size: 64\n",
            sink = self.sink.display(),
        )
    }

    fn store(&self) -> ChannelStore {
        ChannelStore::open(&self.store_path).unwrap()
    }

    fn outputs(&self) -> Vec<Tagged> {
        read_outputs(&self.sink)
    }
}

fn read_outputs(path: &Path) -> Vec<Tagged> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        // The last line may be partly written while the flow runs.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Appends messages `ids` to channel `input`, `per_batch` per append.
fn produce(store: &ChannelStore, ids: std::ops::Range<u64>, per_batch: u64) {
    let mut batch = RecordBatch::new();
    for id in ids {
        batch.push_json(&Msg { id }).unwrap();
        if batch.len() as u64 == per_batch {
            store.append("input", &batch).unwrap();
            batch.clear();
        }
    }
    if !batch.is_empty() {
        store.append("input", &batch).unwrap();
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every id of `0..n` exactly once, in order.
fn assert_exactly(outputs: &[Tagged], n: u64) {
    let ids: Vec<u64> = outputs.iter().map(|t| t.id).collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{} duplicates",
        ids.len() - unique.len()
    );
    assert_eq!(ids.len() as u64, n, "lost {}", n - ids.len() as u64);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert_eq!(unique, (0..n).collect::<BTreeSet<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_replaced_twice_under_load_loses_and_repeats_nothing() {
    const N: u64 = 20_000;
    let s = Setup::new();
    let manager = FlowManager::new();
    let report = manager
        .apply_file(&s.file("manage_v1", ""), "flows.yaml")
        .await
        .unwrap();
    assert_eq!(report.created, ["f"]);

    // The producer appends N messages in batches of 50, over a second or two.
    let store = s.store();
    let produced = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer = tokio::task::spawn_blocking({
        let produced = produced.clone();
        move || {
            for chunk in 0..N / 50 {
                produce(&store, chunk * 50..(chunk + 1) * 50, 50);
                produced.store((chunk + 1) * 50, std::sync::atomic::Ordering::Release);
                std::thread::sleep(Duration::from_millis(3));
            }
        }
    });
    let produced_more_than = |n: u64| {
        let produced = produced.clone();
        move || produced.load(std::sync::atomic::Ordering::Acquire) > n
    };

    // Two replacements while it produces: v2 (another step), then v1 again.
    wait_until(
        "a third of the messages",
        Duration::from_secs(30),
        produced_more_than(N / 3),
    )
    .await;
    let status = manager.replace("f", &s.body("manage_v2")).await.unwrap();
    assert_eq!((status.version, status.state), (2, FlowState::Running));
    wait_until(
        "two thirds of the messages",
        Duration::from_secs(30),
        produced_more_than(2 * N / 3),
    )
    .await;
    assert!(
        !producer.is_finished(),
        "the producer ended before the second replacement: the test did not swap under load"
    );
    let status = manager.replace("f", &s.body("manage_v1")).await.unwrap();
    assert_eq!(status.version, 3);
    producer.await.unwrap();

    wait_until("every message", Duration::from_secs(60), || {
        s.outputs().len() as u64 >= N
    })
    .await;
    // Nothing more arrives late.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let statuses = manager.shutdown().await;
    let outputs = s.outputs();
    let lines = std::fs::read_to_string(&s.sink).unwrap().lines().count();
    assert_eq!(lines, outputs.len(), "the sink has broken lines");
    assert_exactly(&outputs, N);

    // Each version handled a contiguous run of messages: v1, then v2, then v1.
    let mut runs: Vec<u32> = outputs.iter().map(|t| t.v).collect();
    runs.dedup();
    assert_eq!(runs, [1, 2, 1], "the versions did not take over in turn");
    assert_eq!(statuses[0].total.output, N, "{:?}", statuses[0]);
    assert_eq!(
        s.store().cursor("input", "f").unwrap().map(|c| c.position),
        Some(N + 1),
        "the reader's cursor is after the last message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_replacement_leaves_the_running_version_alone() {
    let s = Setup::new();
    let manager = FlowManager::new();
    manager
        .apply_file(&s.file("manage_v1", ""), "flows.yaml")
        .await
        .unwrap();
    let store = s.store();
    produce(&store, 0..10, 10);
    wait_until("10 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 10
    })
    .await;

    // An unknown function, located in the text sent.
    let err = manager
        .replace("f", &s.body("manage_v1, manage_v3"))
        .await
        .unwrap_err();
    let ManageError::Invalid(errors) = &err else {
        panic!("expected located errors, got {err}");
    };
    assert_eq!(errors.errors.len(), 1, "{err}");
    let e = &errors.errors[0];
    assert_eq!((e.file.as_str(), e.line), ("flow `f`", 2), "{err}");
    assert!(
        e.message
            .contains("no sync function is registered as `manage_v3`"),
        "{err}"
    );

    // A type mismatch: manage_v2 takes a `Msg`, manage_v1 emits a `Tagged`.
    let err = manager
        .replace("f", &s.body("manage_v1, manage_v2"))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("flow `f`:2:") && text.contains("cannot take") && text.contains("Tagged"),
        "{text}"
    );

    // Version 1 still runs, and still processes.
    let status = manager.get("f").unwrap();
    assert_eq!((status.version, status.state), (1, FlowState::Running));
    produce(&store, 10..20, 10);
    wait_until("20 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 20
    })
    .await;
    manager.shutdown().await;
    let outputs = s.outputs();
    assert_exactly(&outputs, 20);
    assert!(outputs.iter().all(|t| t.v == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_flow_processes_nothing_until_resumed() {
    let s = Setup::new();
    let manager = FlowManager::new();
    manager
        .apply_file(&s.file("manage_v1", ""), "flows.yaml")
        .await
        .unwrap();
    let store = s.store();
    produce(&store, 0..100, 25);
    wait_until("100 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 100
    })
    .await;

    let status = manager.pause("f").await.unwrap();
    assert_eq!(status.state, FlowState::Paused);
    assert_eq!(status.total.input, 100);
    produce(&store, 100..300, 25);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.outputs().len(), 100, "a paused flow wrote outputs");
    let status = manager.get("f").unwrap();
    assert_eq!((status.state, status.total.input), (FlowState::Paused, 100));
    // Pausing again changes nothing.
    assert_eq!(manager.pause("f").await.unwrap().state, FlowState::Paused);

    let status = manager.resume("f").await.unwrap();
    assert_eq!((status.state, status.version), (FlowState::Running, 1));
    wait_until("300 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 300
    })
    .await;
    let status = manager.get("f").unwrap();
    assert_eq!(status.total.input, 300);
    assert_eq!(
        status.run.input, 200,
        "the resumed run read only what was new"
    );
    manager.shutdown().await;
    assert_exactly(&s.outputs(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_without_a_position_cannot_be_swapped_or_paused() {
    let s = Setup::new();
    let input = s.dir.join("in.jsonl");
    std::fs::write(&input, "{\"id\":1}\n").unwrap();
    let manager = FlowManager::new();
    let body = |steps: &str| {
        format!(
            "source: {{ file: \"{}\" }}\nsteps: [{steps}]\nsinks: [{{ file: \"{}\", append: true }}]\n",
            input.display(),
            s.sink.display()
        )
    };
    let status = manager.create("plain", &body("manage_v1")).await.unwrap();
    assert!(!status.resumable);
    let err = manager
        .replace("plain", &body("manage_v2"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ManageError::NotResumable { .. })
            && err.to_string().contains("Add `state_dir: <dir>`"),
        "{err}"
    );
    let err = manager.pause("plain").await.unwrap_err();
    assert!(err.to_string().contains("cannot be paused"), "{err}");
    assert_eq!(manager.get("plain").unwrap().version, 1);

    // With a checkpoint, the same flow can be replaced: the new version
    // resumes after the lines already processed.
    let with_state = |steps: &str| {
        body(steps).replace(
            "\" }\nsteps",
            &format!(
                "\", state_dir: \"{}\" }}\nsteps",
                s.dir.join("state").display()
            ),
        )
    };
    manager.delete("plain").await.unwrap();
    std::fs::remove_file(&s.sink).unwrap();
    let status = manager
        .create("checkpointed", &with_state("manage_v1"))
        .await
        .unwrap();
    assert!(status.resumable, "{status:?}");
    wait_until("the file's end", Duration::from_secs(10), || {
        manager.get("checkpointed").unwrap().state == FlowState::Stopped
    })
    .await;
    assert_eq!(
        manager.get("checkpointed").unwrap().reason.as_deref(),
        Some("end of input")
    );
    std::fs::write(&input, "{\"id\":1}\n{\"id\":2}\n").unwrap();
    let status = manager
        .replace("checkpointed", &with_state("manage_v2"))
        .await
        .unwrap();
    assert_eq!(status.version, 2);
    wait_until("the new line", Duration::from_secs(10), || {
        s.outputs().len() == 2
    })
    .await;
    let outputs = s.outputs();
    assert_eq!(
        outputs.iter().map(|t| (t.id, t.v)).collect::<Vec<_>>(),
        [(1, 1), (2, 2)]
    );
    manager.shutdown().await;
}

/// Passes a message on after a short wait: a run that lasts.
#[sync_function]
pub async fn manage_slow(m: Msg) -> Msg {
    tokio::time::sleep(Duration::from_millis(5)).await;
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_flow_shows_how_far_its_source_got() {
    use syncflow::connector::{Phase, Unit};
    let s = Setup::new();
    let input = s.dir.join("in.jsonl");
    let lines: String = (0..100).map(|i| format!("{{\"id\":{i}}}\n")).collect();
    std::fs::write(&input, &lines).unwrap();
    let manager = FlowManager::new();
    let body = format!(
        "source: {{ file: \"{}\" }}\nsteps: [manage_slow]\nsinks: [{{ file: \"{}\", append: true }}]\nbatch_size: 5\n",
        input.display(),
        s.sink.display()
    );
    manager.create("slow", &body).await.unwrap();
    let mut seen = None;
    wait_until("the source's progress", Duration::from_secs(10), || {
        seen = manager.get("slow").unwrap().source;
        seen.as_ref().is_some_and(|s| s.done > 0)
    })
    .await;
    let status = seen.unwrap();
    assert_eq!(
        (status.phase, status.unit, status.total),
        (Phase::Backfill, Unit::Bytes, Some(lines.len() as u64))
    );
    assert!(
        status.done < lines.len() as u64,
        "read while it runs: {status:?}"
    );
    let json = serde_json::to_value(manager.get("slow").unwrap()).unwrap();
    assert_eq!(json["source"]["phase"], "backfill", "{json}");
    assert_eq!(json["source"]["unit"], "bytes", "{json}");
    wait_until("the file's end", Duration::from_secs(10), || {
        manager.get("slow").unwrap().state == FlowState::Stopped
    })
    .await;
    assert_eq!(manager.get("slow").unwrap().source, None);
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applying_a_file_changes_only_the_flows_whose_definition_changed() {
    let s = Setup::new();
    let file = |policy: &str, comment: &str| {
        format!(
            "policies:\n  manage_v1: {{ on_error: {policy} }}\nchannels: {{ path: \"{}\" }}\nflows:\n  f:\n    source: {{ load: input }}\n    steps: [manage_v1]{comment}\n  g:\n    source: {{ load: input }}\n    steps: [manage_v2]\n",
            s.store_path.display()
        )
    };
    let manager = FlowManager::new();
    let report = manager
        .apply_file(&file("drop", ""), "flows.yaml")
        .await
        .unwrap();
    assert_eq!(report.created, ["f", "g"]);
    // A flow created on its own is not the file's: the file leaves it alone.
    manager
        .create("h", "source: { load: input }\nsteps: [manage_v2]\n")
        .await
        .unwrap();

    // A comment changes no definition.
    let report = manager
        .apply_file(&file("drop", "  # the first flow"), "flows.yaml")
        .await
        .unwrap();
    assert!(report.is_empty(), "{report}");
    assert_eq!(report.unchanged, ["f", "g"]);
    assert!(manager.get("f").unwrap().text.contains("# the first flow"));

    // A policy of manage_v1 changes f only (g does not use manage_v1).
    let report = manager
        .apply_file(&file("stop", ""), "flows.yaml")
        .await
        .unwrap();
    assert_eq!(
        (report.replaced, report.unchanged),
        (vec!["f".to_string()], vec!["g".to_string()])
    );
    let versions: Vec<(String, u64)> = manager
        .list()
        .into_iter()
        .map(|f| (f.name, f.version))
        .collect();
    assert_eq!(
        versions,
        [("f".into(), 2), ("g".into(), 1), ("h".into(), 1)]
    );

    // A file without g deletes g, keeps h.
    let without_g = file("stop", "").split("  g:").next().unwrap().to_string();
    let report = manager.apply_file(&without_g, "flows.yaml").await.unwrap();
    assert_eq!(report.deleted, ["g"]);
    let names: Vec<String> = manager.list().into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["f", "h"]);
    manager.shutdown().await;
}

// ---------------------------------------------------------------- watching

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_watched_file_replaces_the_flow_and_a_bad_edit_is_rejected() {
    let s = Setup::new();
    let file = s.dir.join("flows.yaml");
    let other_sink = s.dir.join("other.jsonl");
    let g = format!(
        "  g:\n    source: {{ load: input }}\n    steps: [manage_v1]\n    sinks: [{{ file: \"{}\", append: true }}]\n",
        other_sink.display()
    );
    std::fs::write(&file, s.file("manage_v1", &g)).unwrap();
    let manager = FlowManager::new();
    let text = std::fs::read_to_string(&file).unwrap();
    let origin = file.display().to_string();
    let report = manager.apply_file(&text, &origin).await.unwrap();
    assert_eq!(report.created, ["f", "g"]);
    // The text of a flow of a file is its lines as written.
    assert!(
        manager
            .get("g")
            .unwrap()
            .text
            .starts_with("source: { load: input }\nsteps: [manage_v1]\n"),
        "{:?}",
        manager.get("g").unwrap().text
    );

    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = watch_file(
        manager.clone(),
        &file,
        Duration::from_millis(100),
        move |event| {
            let _ = tx.send(event);
        },
    )
    .unwrap();
    let store = s.store();
    produce(&store, 0..10, 10);
    wait_until("10 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 10
    })
    .await;

    // An edit: f gets another step, g is removed.
    std::fs::write(&file, s.file("manage_v2", "")).unwrap();
    let event = next_event(&mut events).await;
    let WatchEvent::Applied { report, .. } = &event else {
        panic!("expected the edit to be applied: {event}");
    };
    assert_eq!(
        (&report.replaced, &report.deleted),
        (&vec!["f".to_string()], &vec!["g".to_string()]),
        "{event}"
    );
    assert_eq!(manager.get("f").unwrap().version, 2);
    assert!(manager.get("g").is_none());
    produce(&store, 10..20, 10);
    wait_until("20 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 20
    })
    .await;

    // A bad edit: rejected with its location in the file; v2 keeps running.
    std::fs::write(&file, s.file("manage_v2, manage_nope", "")).unwrap();
    let event = next_event(&mut events).await;
    let WatchEvent::Rejected { error, .. } = &event else {
        panic!("expected the edit to be rejected: {event}");
    };
    let text = error.to_string();
    assert!(
        text.contains(&format!("{origin}:6:")) && text.contains("manage_nope"),
        "{text}"
    );
    let status = manager.get("f").unwrap();
    assert_eq!((status.version, status.state), (2, FlowState::Running));
    produce(&store, 20..30, 10);
    wait_until("30 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 30
    })
    .await;

    manager.shutdown().await;
    let outputs = s.outputs();
    assert_exactly(&outputs, 30);
    let versions: Vec<u32> = outputs.iter().map(|t| t.v).collect();
    assert_eq!(&versions[..10], [1; 10]);
    assert_eq!(&versions[10..], [2; 20]);
}

async fn next_event(events: &mut tokio::sync::mpsc::UnboundedReceiver<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("no watch event within 10 s")
        .expect("the watcher ended")
}

// ---------------------------------------------------------------- admin API

/// One HTTP/1.1 request; the status and the JSON body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n",
        addr.port(),
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    let json = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    (status, json)
}

async fn serve(manager: &FlowManager, token: Option<&str>) -> (SocketAddr, Shutdown) {
    let server = AdminServer::bind("127.0.0.1:0", token.map(String::from))
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let stop = Shutdown::new();
    tokio::spawn(server.serve(manager.clone(), stop.clone()));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_puts_pauses_resumes_and_deletes_flows() {
    let s = Setup::new();
    let manager = FlowManager::new();
    // The channel store's path comes from the file applied first.
    manager
        .apply_file(&s.file("manage_v1", ""), "flows.yaml")
        .await
        .unwrap();
    manager.delete("f").await.unwrap();
    let (addr, stop) = serve(&manager, None).await;

    let (code, health) = http(addr, "GET", "/health", "", &[]).await;
    assert_eq!((code, &health["status"]), (200, &serde_json::json!("ok")));

    // PUT creates (201), then replaces (200).
    let (code, flow) = http(addr, "PUT", "/flows/f", &s.body("manage_v1"), &[]).await;
    assert_eq!(code, 201, "{flow}");
    assert_eq!(
        (&flow["state"], &flow["version"]),
        (&serde_json::json!("running"), &serde_json::json!(1))
    );
    let store = s.store();
    produce(&store, 0..10, 10);
    wait_until("10 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 10
    })
    .await;
    let (code, list) = http(addr, "GET", "/flows", "", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(list["flows"][0]["name"], "f");
    assert_eq!(list["flows"][0]["run"]["output"], 10, "{list}");

    let (code, flow) = http(addr, "PUT", "/flows/f", &s.body("manage_v2"), &[]).await;
    assert_eq!(
        (code, &flow["version"]),
        (200, &serde_json::json!(2)),
        "{flow}"
    );

    // A bad PUT: 422 with the located errors; version 2 keeps running.
    let (code, body) = http(addr, "PUT", "/flows/f", &s.body("manage_nope"), &[]).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["errors"][0]["line"], 2, "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("manage_nope"),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was changed")
    );
    let (_, flow) = http(addr, "GET", "/flows/f", "", &[]).await;
    assert_eq!(
        (&flow["version"], &flow["state"]),
        (&serde_json::json!(2), &serde_json::json!("running"))
    );
    assert!(flow["text"].as_str().unwrap().contains("manage_v2"));

    // Pause, produce, nothing arrives; resume, everything arrives.
    let (code, flow) = http(addr, "POST", "/flows/f/pause", "", &[]).await;
    assert_eq!((code, &flow["state"]), (200, &serde_json::json!("paused")));
    produce(&store, 10..20, 10);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(s.outputs().len(), 10);
    let (code, flow) = http(addr, "POST", "/flows/f/resume", "", &[]).await;
    assert_eq!((code, &flow["state"]), (200, &serde_json::json!("running")));
    wait_until("20 outputs", Duration::from_secs(10), || {
        s.outputs().len() == 20
    })
    .await;

    // Delete; then it is gone.
    let (code, _) = http(addr, "DELETE", "/flows/f", "", &[]).await;
    assert_eq!(code, 200);
    let (code, body) = http(addr, "GET", "/flows/f", "", &[]).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no flow is named `f`")
    );
    let (code, _) = http(addr, "POST", "/flows/f/pause", "", &[]).await;
    assert_eq!(code, 404);
    assert_exactly(&s.outputs(), 20);

    // A request from a web page of another site is refused.
    let (code, body) = http(
        addr,
        "POST",
        "/flows/f/pause",
        "",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(code, 403, "{body}");

    stop.shutdown();
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_never_echoes_values_from_the_environment() {
    let s = Setup::new();
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("MANAGE_TEST_SECRET_DIR", s.dir.join("s3cr3t")) };
    std::fs::create_dir_all(s.dir.join("s3cr3t")).unwrap();
    let manager = FlowManager::new();
    let (addr, stop) = serve(&manager, None).await;
    let body = "source: { file: \"${MANAGE_TEST_SECRET_DIR}/missing.jsonl\", state_dir: \"${MANAGE_TEST_SECRET_DIR}\" }\nsteps: [manage_v1]\n";
    // The input file is missing: the flow does not start, and the error
    // names the path as written.
    let (code, reply) = http(addr, "PUT", "/flows/secret", body, &[]).await;
    assert_eq!(code, 422, "{reply}");
    let reply = reply.to_string();
    assert!(reply.contains("${MANAGE_TEST_SECRET_DIR}"), "{reply}");
    assert!(!reply.contains("s3cr3t"), "{reply}");

    std::fs::write(s.dir.join("s3cr3t/missing.jsonl"), "{\"id\":1}\n").unwrap();
    let (code, reply) = http(addr, "PUT", "/flows/secret", body, &[]).await;
    assert_eq!(code, 201, "{reply}");
    let (_, list) = http(addr, "GET", "/flows", "", &[]).await;
    let list = list.to_string();
    assert!(
        list.contains("${MANAGE_TEST_SECRET_DIR}/missing.jsonl"),
        "{list}"
    );
    assert!(!list.contains("s3cr3t"), "{list}");
    stop.shutdown();
    manager.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_a_token_off_loopback_and_checks_it() {
    let err = AdminServer::bind("0.0.0.0:0", None).await.unwrap_err();
    assert!(matches!(err, AdminError::TokenRequired { .. }), "{err}");
    assert!(err.to_string().contains("--admin-token"), "{err}");
    assert!(matches!(
        AdminServer::bind("127.0.0.1:0", Some(" ".into())).await,
        Err(AdminError::EmptyToken)
    ));

    // With a token, a non-loopback address is accepted; requests need it.
    let manager = FlowManager::new();
    let server = AdminServer::bind("0.0.0.0:0", Some("t0ken".into()))
        .await
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let stop = Shutdown::new();
    tokio::spawn(server.serve(manager.clone(), stop.clone()));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let (code, body) = http(addr, "GET", "/flows", "", &[]).await;
    assert_eq!(code, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
    let (code, _) = http(
        addr,
        "GET",
        "/flows",
        "",
        &[("Authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(code, 401);
    let (code, body) = http(
        addr,
        "GET",
        "/flows",
        "",
        &[("Authorization", "Bearer t0ken")],
    )
    .await;
    assert_eq!((code, &body["flows"]), (200, &serde_json::json!([])));
    stop.shutdown();
}

#[test]
fn the_cli_refuses_a_public_admin_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flows.yaml");
    std::fs::write(
        &file,
        "flows:\n  f:\n    source: { stdin: true }\n    steps: [manage_v1]\n",
    )
    .unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = syncflow::cli::Cli::new().execute(
        [
            "syncflow",
            "run",
            file.to_str().unwrap(),
            "--admin",
            "0.0.0.0:0",
        ],
        &mut out,
        &mut err,
    );
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("refusing to serve the admin API on `0.0.0.0:0` without a token"),
        "{err}"
    );
}
