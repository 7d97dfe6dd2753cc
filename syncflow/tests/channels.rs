//! Durable channels: the store (order, cursors, retention, stats), the
//! connectors, and Save -> Load runs through the runtime, with restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use syncflow::channel::{
    ChannelError, ChannelStore, Cursor, LoadOptions, LoadSource, RawLoadSource, RawSaveSink,
    RecordBatch, RecordBuffer, Retention, SaveSink, StartAt,
};
use syncflow::connector::{Acker, Batch, Read, Sink, Source};
use syncflow::prelude::*;
use syncflow::runtime::StopReason;

fn store_in(dir: &tempfile::TempDir) -> ChannelStore {
    ChannelStore::open(dir.path().join("channels.redb")).unwrap()
}

fn batch_of(records: impl IntoIterator<Item = String>) -> RecordBatch {
    let mut batch = RecordBatch::new();
    for r in records {
        batch.push(r.as_bytes()).unwrap();
    }
    batch
}

fn numbers(range: std::ops::RangeInclusive<u64>) -> RecordBatch {
    batch_of(range.map(|i| i.to_string()))
}

fn read_all(store: &ChannelStore, channel: &str, from: u64, max: usize) -> Vec<(u64, String)> {
    let mut buf = RecordBuffer::new();
    store.read(channel, from, max, &mut buf).unwrap();
    buf.iter()
        .map(|(seq, bytes)| (seq, String::from_utf8(bytes.to_vec()).unwrap()))
        .collect()
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_numbers(path: &Path, count: u64) {
    let text: String = (1..=count).map(|i| format!("{i}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// Reads one batch straight from a source (no runtime).
async fn read_batch<S: Source>(source: &mut S, max: usize) -> (Vec<(u64, String)>, Read<S::Ack>)
where
    S::Item: std::fmt::Debug,
{
    let mut batch = Batch::default();
    let read = source.read(&mut batch, max).await.unwrap();
    let records = batch
        .iter()
        .map(|(pos, _, payload)| (pos, format!("{:?}", payload.as_ref().unwrap())))
        .collect();
    (records, read)
}

#[test]
fn appends_get_consecutive_sequence_numbers_and_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let a = store.append("log", &numbers(1..=3)).unwrap();
    assert_eq!(a.seqs, 1..4);
    let empty = store.append("log", &RecordBatch::new()).unwrap();
    assert_eq!(empty.seqs, 4..4);
    // Large enough to be stored as several chunks.
    let b = store.append("log", &numbers(4..=10_000)).unwrap();
    assert_eq!(b.seqs, 4..10_001);
    // Another channel has its own numbering.
    assert_eq!(store.append("other", &numbers(1..=2)).unwrap().seqs, 1..3);

    let all = read_all(&store, "log", 1, usize::MAX);
    assert_eq!(all.len(), 10_000);
    for (i, (seq, text)) in all.iter().enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert_eq!(text, &seq.to_string());
    }
    // From the middle of a chunk, across a chunk boundary, bounded by `max`.
    let mut buf = RecordBuffer::new();
    let info = store.read("log", 4090, 20, &mut buf).unwrap();
    assert_eq!(
        (info.start, info.next, info.records, info.skipped),
        (4090, 4110, 20, 0)
    );
    let seqs: Vec<u64> = buf.iter().map(|(s, _)| s).collect();
    assert_eq!(seqs, (4090..4110).collect::<Vec<_>>());
    // At the end: nothing, and where to continue.
    let info = store.read("log", 10_001, 20, &mut buf).unwrap();
    assert_eq!((info.records, info.next, info.end), (0, 10_001, 10_001));
    assert!(buf.is_empty());
    // A channel never written reads as empty.
    assert!(read_all(&store, "nothing-here", 1, 10).is_empty());
}

#[test]
fn names_are_validated_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let err = store.append("no spaces", &numbers(1..=1)).unwrap_err();
    assert!(
        matches!(
            err,
            ChannelError::InvalidName {
                kind: "channel",
                ..
            }
        ),
        "{err}"
    );
    let err = LoadSource::<u64>::open(&store, "ok", "")
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid reader name ``: it is empty"), "{err}");
    let err = SaveSink::open(&store, "a/b").unwrap_err().to_string();
    assert!(err.contains("contains '/'"), "{err}");
    assert!(
        store.channels().unwrap().is_empty(),
        "an invalid name created something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_each_get_every_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    store.append("events", &numbers(1..=5)).unwrap();
    let mut a = LoadSource::<u64>::open(&store, "events", "a")
        .unwrap()
        .follow(false);
    let mut b = LoadSource::<u64>::open(&store, "events", "b")
        .unwrap()
        .follow(false);
    let (got_a, _) = read_batch(&mut a, 3).await;
    let (got_b, _) = read_batch(&mut b, 100).await;
    assert_eq!(
        got_a,
        (1..=3).map(|i| (i, i.to_string())).collect::<Vec<_>>()
    );
    assert_eq!(
        got_b,
        (1..=5).map(|i| (i, i.to_string())).collect::<Vec<_>>()
    );
    let (got_a, _) = read_batch(&mut a, 100).await;
    assert_eq!(got_a, vec![(4, "4".into()), (5, "5".into())]);
    // A reader name is used by one source at a time.
    let err = LoadSource::<u64>::open(&store, "events", "a").unwrap_err();
    assert!(matches!(err, ChannelError::ReaderBusy { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("give each loading flow its own reader name"),
        "{err}"
    );
    drop(a);
    LoadSource::<u64>::open(&store, "events", "a").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cursor_moves_only_on_commit_and_a_restart_resumes_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.redb");
    {
        let store = ChannelStore::open(&path).unwrap();
        store.append("jobs", &numbers(1..=25)).unwrap();
        let mut source = LoadSource::<u64>::open(&store, "jobs", "worker").unwrap();
        assert_eq!(
            source.resumed(),
            Cursor {
                position: 1,
                skipped: 0
            }
        );
        let mut acker = source.acker();

        let (first, read) = read_batch(&mut source, 10).await;
        assert_eq!(first.len(), 10);
        let Read::Batch(ack1) = read else {
            panic!("{read:?}")
        };
        assert_eq!(ack1.next, 11);
        // Read but not acknowledged: the cursor has not moved.
        assert_eq!(store.cursor("jobs", "worker").unwrap().unwrap().position, 1);
        acker.ack(ack1);
        // Acknowledged but not committed: still not moved.
        assert_eq!(store.cursor("jobs", "worker").unwrap().unwrap().position, 1);
        acker.commit().await.unwrap();
        assert_eq!(
            store.cursor("jobs", "worker").unwrap().unwrap().position,
            11
        );

        // A second batch is read, never acknowledged: then the process "dies".
        let (second, _) = read_batch(&mut source, 10).await;
        assert_eq!(second.first().map(|r| r.0), Some(11));
        let stats = store.channel_stats("jobs").unwrap().unwrap();
        assert_eq!(stats.reader("worker").unwrap().lag, 15);
    }
    // Every handle is gone: the file is really reopened.
    let store = ChannelStore::open(&path).unwrap();
    let mut source = LoadSource::<u64>::open(&store, "jobs", "worker")
        .unwrap()
        .follow(false);
    assert_eq!(source.resumed().position, 11);
    let mut acker = source.acker();
    let mut redelivered = Vec::new();
    loop {
        let (records, read) = read_batch(&mut source, 7).await;
        match read {
            Read::Batch(ack) => {
                acker.ack(ack);
                acker.commit().await.unwrap();
            }
            Read::End => break,
            Read::Idle => panic!("follow(false) never idles"),
        }
        redelivered.extend(records.into_iter().map(|r| r.0));
    }
    // Exactly the unacknowledged records, once each, in order.
    assert_eq!(redelivered, (11..=25).collect::<Vec<_>>());
    assert_eq!(
        store.cursor("jobs", "worker").unwrap().unwrap().position,
        26
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_is_woken_by_an_append_and_idles_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    // Idle after the poll interval when nothing comes.
    let mut quick = LoadSource::<u64>::open_with(
        &store,
        "wake",
        "quick",
        LoadOptions::default().poll_interval(Duration::from_millis(50)),
    )
    .unwrap();
    let started = Instant::now();
    let (_, read) = read_batch(&mut quick, 10).await;
    assert_eq!(read, Read::Idle);
    assert!(started.elapsed() >= Duration::from_millis(50));

    // A reader that would poll only every 30 s is woken by an append at once.
    let mut slow = LoadSource::<u64>::open_with(
        &store,
        "wake",
        "slow",
        LoadOptions::default().poll_interval(Duration::from_secs(30)),
    )
    .unwrap();
    let writer = store.clone();
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tokio::task::spawn_blocking(move || writer.append("wake", &numbers(1..=2)))
            .await
            .unwrap()
            .unwrap();
    });
    let started = Instant::now();
    let (records, read) = read_batch(&mut slow, 10).await;
    let waited = started.elapsed();
    append.await.unwrap();
    assert!(matches!(read, Read::Batch(_)), "{read:?}");
    assert_eq!(records.len(), 2);
    assert!(
        waited < Duration::from_secs(10),
        "not woken: waited {waited:?}"
    );
}

#[test]
fn retention_by_count_keeps_the_newest_records_and_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    store
        .register_reader("recent", "late", StartAt::Oldest)
        .unwrap();
    store
        .set_retention("recent", Retention::default().max_records(1000))
        .unwrap();
    let record = "x".repeat(200);
    let mut seq = 0u64;
    let mut max_bytes = 0;
    for round in 0..40 {
        let n = 100 + round * 7;
        let batch = batch_of((0..n).map(|_| record.clone()));
        let info = store.append("recent", &batch).unwrap();
        seq += n;
        assert_eq!(info.seqs.end, seq + 1);
        let stats = store.channel_stats("recent").unwrap().unwrap();
        assert_eq!(stats.next, seq + 1);
        assert_eq!(stats.length, seq.min(1000));
        assert_eq!(stats.first, (seq + 1).saturating_sub(1000).max(1));
        max_bytes = max_bytes.max(stats.bytes);
    }
    // Whole chunks below the oldest retained record are deleted: the bytes
    // stay near 1000 records (plus one partly trimmed chunk).
    assert!(
        max_bytes < 2 * 1000 * 204,
        "{max_bytes} bytes for 1000 records"
    );
    let retained = read_all(&store, "recent", 1, usize::MAX);
    assert_eq!(retained.len(), 1000);
    assert_eq!(retained[0].0, seq - 999);

    // The reader registered at record 1 fell behind: it skips to the
    // oldest record and the gap is reported.
    let mut buf = RecordBuffer::new();
    let info = store.read("recent", 1, 10, &mut buf).unwrap();
    assert_eq!((info.start, info.skipped), (seq - 999, seq - 1000));
    let stats = store.channel_stats("recent").unwrap().unwrap();
    assert_eq!(stats.reader("late").unwrap().lag, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_behind_retention_skips_counts_and_commits_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let mut source = LoadSource::<u64>::open(&store, "short", "slow")
        .unwrap()
        .follow(false);
    let mut acker = source.acker();
    store
        .set_retention("short", Retention::default().max_records(5))
        .unwrap();
    store.append("short", &numbers(1..=12)).unwrap();
    let skipped = source.skipped();
    let (records, read) = read_batch(&mut source, 100).await;
    assert_eq!(
        records,
        (8..=12).map(|i| (i, i.to_string())).collect::<Vec<_>>()
    );
    let Read::Batch(ack) = read else {
        panic!("{read:?}")
    };
    assert_eq!((ack.next, ack.skipped), (13, 7));
    assert_eq!(skipped.load(Relaxed), 7);
    acker.ack(ack);
    acker.commit().await.unwrap();
    assert_eq!(
        store.cursor("short", "slow").unwrap(),
        Some(Cursor {
            position: 13,
            skipped: 7
        })
    );
    // Everything it could read was trimmed: an empty batch still moves the
    // cursor past the gap.
    store.append("short", &numbers(13..=30)).unwrap();
    store.append("short", &numbers(31..=31)).unwrap();
    let (records, read) = read_batch(&mut source, 2).await;
    assert_eq!(records, vec![(27, "27".into()), (28, "28".into())]);
    let Read::Batch(ack) = read else {
        panic!("{read:?}")
    };
    assert_eq!((ack.next, ack.skipped), (29, 14));
    acker.ack(ack);
    acker.commit().await.unwrap();
    let stats = store.stats().unwrap();
    let reader = stats.channel("short").unwrap().reader("slow").unwrap();
    assert_eq!((reader.position, reader.skipped, reader.lag), (29, 21, 3));
}

#[test]
fn retention_by_age_uses_append_times() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = Arc::new(AtomicU64::new(1_000_000));
    let clock = now_ms.clone();
    let store = ChannelStore::options()
        .clock(move || SystemTime::UNIX_EPOCH + Duration::from_millis(clock.load(Relaxed)))
        .open(dir.path().join("aged.redb"))
        .unwrap();
    let at = |secs: u64| now_ms.store(1_000_000 + secs * 1000, Relaxed);
    store
        .set_retention(
            "aged",
            Retention::default().max_age(Duration::from_secs(15)),
        )
        .unwrap();
    at(0);
    store.append("aged", &numbers(1..=3)).unwrap();
    at(10);
    store.append("aged", &numbers(4..=5)).unwrap();
    at(14);
    let info = store.append("aged", &numbers(6..=6)).unwrap();
    assert_eq!(info.trimmed, 0, "nothing is older than 15 s yet");
    at(20);
    // The first batch (20 s old) goes; the second (10 s old) stays.
    let info = store.append("aged", &numbers(7..=7)).unwrap();
    assert_eq!(info.trimmed, 3);
    let seqs: Vec<u64> = read_all(&store, "aged", 1, 100)
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(seqs, vec![4, 5, 6, 7]);
    // Without appends, `trim` applies the age limit: at 34 s, records
    // appended at 10 s and 14 s are too old, the one at 20 s is not.
    at(34);
    assert_eq!(store.trim("aged").unwrap(), 3);
    let stats = store.channel_stats("aged").unwrap().unwrap();
    assert_eq!((stats.first, stats.next, stats.length), (7, 8, 1));
    at(100);
    assert_eq!(store.trim_all().unwrap(), 1);
    let stats = store.channel_stats("aged").unwrap().unwrap();
    assert_eq!(
        (stats.first, stats.next, stats.length, stats.bytes),
        (8, 8, 0, 0)
    );
    // Sequence numbers go on after an emptied channel.
    assert_eq!(store.append("aged", &numbers(8..=8)).unwrap().seqs, 8..9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_periodic_trim_ages_out_records_without_appends() {
    let dir = tempfile::tempdir().unwrap();
    let now_ms = Arc::new(AtomicU64::new(5_000_000));
    let clock = now_ms.clone();
    let store = ChannelStore::options()
        .clock(move || SystemTime::UNIX_EPOCH + Duration::from_millis(clock.load(Relaxed)))
        .open(dir.path().join("periodic.redb"))
        .unwrap();
    store
        .set_retention(
            "idle",
            Retention::default().max_age(Duration::from_secs(60)),
        )
        .unwrap();
    store.append("idle", &numbers(1..=4)).unwrap();
    let trimmer = store.trim_every(Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.channel_stats("idle").unwrap().unwrap().length, 4);
    // Two minutes pass without an append: the trimmer removes the records.
    now_ms.fetch_add(120_000, Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.channel_stats("idle").unwrap().unwrap().length > 0 {
        assert!(Instant::now() < deadline, "the periodic trim never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    trimmer.abort();
    let stats = store.channel_stats("idle").unwrap().unwrap();
    assert_eq!((stats.first, stats.next, stats.bytes), (5, 5, 0));
}

#[test]
fn stats_show_lengths_positions_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    store.append("orders", &numbers(1..=100)).unwrap();
    store
        .register_reader("orders", "billing", StartAt::Oldest)
        .unwrap();
    store
        .register_reader("orders", "audit", StartAt::Latest)
        .unwrap();
    store
        .commit_cursor(
            "orders",
            "billing",
            Cursor {
                position: 61,
                skipped: 0,
            },
        )
        .unwrap();
    store.create_channel("empty").unwrap();
    store.append("orders", &numbers(101..=110)).unwrap();

    let stats = store.stats().unwrap();
    assert_eq!(stats.path, store.path());
    let names: Vec<&str> = stats.channels.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["empty", "orders"]);
    let orders = stats.channel("orders").unwrap();
    assert_eq!((orders.length, orders.first, orders.next), (110, 1, 111));
    assert_eq!(orders.bytes, (9 + 90 * 2 + 11 * 3) + 110 * 4);
    let readers: Vec<(&str, u64, u64)> = orders
        .readers
        .iter()
        .map(|r| (r.name.as_str(), r.position, r.lag))
        .collect();
    assert_eq!(readers, vec![("audit", 101, 10), ("billing", 61, 50)]);
    let empty = stats.channel("empty").unwrap();
    assert_eq!(
        (empty.length, empty.first, empty.next, empty.bytes),
        (0, 1, 1, 0)
    );

    let table = stats.to_string();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], vec!["empty", "0", "1", "1", "0", "B", "all", "-"]);
    assert_eq!(
        rows[1],
        vec![
            "orders", "110", "1", "111", "662", "B", "all", "audit", "101", "10", "0"
        ]
    );
    assert_eq!(rows[2], vec!["billing", "61", "50", "0"]);

    assert!(store.remove_reader("orders", "audit").unwrap());
    assert!(store.delete_channel("orders").unwrap());
    assert!(!store.delete_channel("orders").unwrap());
    assert_eq!(store.channels().unwrap(), vec!["empty".to_string()]);
    assert_eq!(store.cursor("orders", "billing").unwrap(), None);
}

// ---- Through the runtime ----

#[derive(Debug, Deserialize)]
struct Order {
    id: u64,
    cents: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Charge {
    id: u64,
    euros: String,
}

/// Turns an order into a charge.
#[sync_function]
fn charge(o: Order) -> Charge {
    Charge {
        id: o.id,
        euros: format!("{}.{:02}", o.cents / 100, o.cents % 100),
    }
}

/// Keeps charges of at least one euro.
#[sync_function]
fn big(c: Charge) -> Option<Charge> {
    (!c.euros.starts_with("0.")).then_some(c)
}

/// Passes already-encoded JSON through.
#[sync_function]
fn pass_raw(v: Box<RawValue>) -> Box<RawValue> {
    v
}

/// Passes the number through.
#[sync_function]
fn pass(n: u64) -> u64 {
    n
}

/// Passes the number through; stops the run when it sees `stop_at`.
#[sync_function]
fn watch(n: u64, stop: Res<StopAt>) -> u64 {
    if n == stop.at {
        stop.handle.shutdown();
    }
    n
}

struct StopAt {
    at: u64,
    handle: Shutdown,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_saves_into_a_channel_and_another_loads_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let input = dir.path().join("orders.jsonl");
    std::fs::write(
        &input,
        "{\"id\":1,\"cents\":1250}\n{\"id\":2,\"cents\":5}\n{\"id\":3,\"cents\":99}\n{\"id\":4,\"cents\":100000}\n",
    )
    .unwrap();
    let saved = Runtime::new(flow!(charge))
        .source(JsonLinesSource::<Order>::open(&input).unwrap())
        .sink(SaveSink::open(&store, "charges").unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!((saved.input, saved.output), (4, 4));
    assert_eq!(
        read_all(&store, "charges", 1, 10),
        vec![
            (1, r#"{"id":1,"euros":"12.50"}"#.into()),
            (2, r#"{"id":2,"euros":"0.05"}"#.into()),
            (3, r#"{"id":3,"euros":"0.99"}"#.into()),
            (4, r#"{"id":4,"euros":"1000.00"}"#.into()),
        ]
    );

    let output = dir.path().join("big.jsonl");
    let loaded = Runtime::new(flow!(big))
        .source(
            LoadSource::<Charge>::open(&store, "charges", "big-ones")
                .unwrap()
                .follow(false),
        )
        .sink(JsonLinesSink::create(&output).unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(loaded.stop, StopReason::EndOfInput);
    assert_eq!(loaded.source, "load:charges@big-ones");
    assert_eq!((loaded.input, loaded.output, loaded.filtered), (4, 2, 2));
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "{\"id\":1,\"euros\":\"12.50\"}\n{\"id\":4,\"euros\":\"1000.00\"}\n"
    );
    // The reader's cursor is at the end; a rerun finds nothing new.
    let stats = store.channel_stats("charges").unwrap().unwrap();
    let reader = stats.reader("big-ones").unwrap();
    assert_eq!((reader.position, reader.lag), (5, 0));
    let again = Runtime::new(flow!(big))
        .source(
            LoadSource::<Charge>::open(&store, "charges", "big-ones")
                .unwrap()
                .follow(false),
        )
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(again.input, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_json_goes_through_a_channel_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let input = dir.path().join("raw.jsonl");
    // Odd spacing and key order: re-encoding would change them.
    let text = "{ \"b\" : 1,\"a\":[1,  2] }\n\"text\"\n{\"n\":1.50}\n";
    std::fs::write(&input, text).unwrap();
    Runtime::new(flow!(pass_raw))
        .source(JsonLinesSource::<Box<RawValue>>::open(&input).unwrap())
        .sink(SaveSink::open(&store, "raw").unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(
        read_all(&store, "raw", 1, 10)
            .into_iter()
            .map(|r| r.1)
            .collect::<Vec<_>>(),
        text.lines().collect::<Vec<_>>()
    );
    let output = dir.path().join("out.jsonl");
    Runtime::new(flow!(pass_raw))
        .source(
            LoadSource::<Box<RawValue>>::open(&store, "raw", "copy")
                .unwrap()
                .follow(false),
        )
        .sink(JsonLinesSink::create(&output).unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&output).unwrap(), text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_become_dead_letters_with_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let mut raw = RawSaveSink::open(&store, "mixed").unwrap();
    let records: Vec<&[u8]> = vec![b"1", b"{oops", b"3", b"\xff\xfe", b"\"four\""];
    raw.write(&records).await.unwrap();
    Sink::<&[u8]>::flush(&mut raw).await.unwrap();
    assert_eq!(raw.appended(), 5);

    let output = dir.path().join("out.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let summary = Runtime::new(flow!(pass))
        .source(
            LoadSource::<u64>::open(&store, "mixed", "numbers")
                .unwrap()
                .follow(false),
        )
        .sink(JsonLinesSink::create(&output).unwrap())
        .dead_letter(&dead)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(
        (summary.input, summary.output, summary.malformed),
        (5, 2, 3)
    );
    assert_eq!(lines(&output), vec!["1", "3"]);
    let dead: Vec<DeadLetter> = lines(&dead)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(u64, &str, &str)> = dead
        .iter()
        .map(|d| (d.position, d.stage.as_str(), d.input.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, "decode", "{oops"),
            (4, "decode", "\u{fffd}\u{fffd}"),
            (5, "decode", "\"four\""),
        ]
    );
    assert!(dead.iter().all(|d| d.source == "load:mixed@numbers"));
    // The bad records were acknowledged with the rest: not read again.
    assert_eq!(
        store.cursor("mixed", "numbers").unwrap().unwrap().position,
        6
    );

    // The raw source gets the bytes as they are.
    let mut raw_source = RawLoadSource::open(&store, "mixed", "bytes")
        .unwrap()
        .follow(false);
    let mut batch = Batch::default();
    raw_source.read(&mut batch, 10).await.unwrap();
    let payloads: Vec<Vec<u8>> = batch.iter().map(|(_, _, p)| p.clone().unwrap()).collect();
    assert_eq!(
        payloads,
        records.iter().map(|r| r.to_vec()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_loading_flows_run_side_by_side_and_each_gets_everything() {
    const TOTAL: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir);
    let input = dir.path().join("numbers.jsonl");
    write_numbers(&input, TOTAL);
    Runtime::new(flow!(pass))
        .source(JsonLinesSource::<u64>::open(&input).unwrap())
        .sink(SaveSink::open(&store, "numbers").unwrap())
        .batch_size(250)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    let run = |reader: &str, out: &PathBuf| {
        Runtime::new(flow!(pass))
            .source(
                LoadSource::<u64>::open(&store, "numbers", reader)
                    .unwrap()
                    .follow(false),
            )
            .sink(JsonLinesSink::create(out).unwrap())
            .batch_size(100)
            .handle_signals(false)
            .run()
    };
    let (out_a, out_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let (a, b) = tokio::join!(run("a", &out_a), run("b", &out_b));
    assert_eq!((a.unwrap().input, b.unwrap().input), (TOTAL, TOTAL));
    let expected: Vec<String> = (1..=TOTAL).map(|i| i.to_string()).collect();
    assert_eq!(lines(&out_a), expected);
    assert_eq!(lines(&out_b), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_load_chain_stopped_midway_loses_and_repeats_nothing() {
    const TOTAL: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.redb");
    let input = dir.path().join("numbers.jsonl");
    let output = dir.path().join("out.jsonl");
    write_numbers(&input, TOTAL);

    let first = {
        let store = ChannelStore::open(&path).unwrap();
        // The saver and a following loader run at the same time; the loader
        // is stopped after record 5000 while the saver may still be saving.
        let saver = Runtime::new(flow!(pass))
            .source(JsonLinesSource::<u64>::open(&input).unwrap())
            .sink(SaveSink::open(&store, "chain").unwrap())
            .batch_size(500)
            .handle_signals(false)
            .run();
        let stop = Shutdown::new();
        let loader = Runtime::new(flow!(watch).resource(StopAt {
            at: 5000,
            handle: stop.clone(),
        }))
        .with_shutdown(stop)
        .source(LoadSource::<u64>::open(&store, "chain", "copier").unwrap())
        .sink(JsonLinesSink::create(&output).unwrap())
        .batch_size(300)
        .handle_signals(false)
        .run();
        let (saved, first) = tokio::join!(saver, loader);
        assert_eq!(saved.unwrap().output, TOTAL);
        let first = first.unwrap();
        assert_eq!(first.stop, StopReason::Shutdown);
        first
    };
    eprintln!(
        "the loader stopped after {} of {TOTAL} records",
        first.input
    );
    assert!(
        first.input >= 5000 && first.input < TOTAL,
        "{}",
        first.input
    );
    // Every batch read was finished and committed before the stop.
    assert_eq!(lines(&output).len() as u64, first.input);

    // "Restart": the store is reopened, the loader resumes at its cursor.
    let store = ChannelStore::open(&path).unwrap();
    let cursor = store.cursor("chain", "copier").unwrap().unwrap();
    assert_eq!(cursor.position, first.input + 1);
    let second = Runtime::new(flow!(pass))
        .source(
            LoadSource::<u64>::open(&store, "chain", "copier")
                .unwrap()
                .follow(false),
        )
        .sink(JsonLinesSink::append(&output).unwrap())
        .batch_size(300)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(first.input + second.input, TOTAL);
    let expected: Vec<String> = (1..=TOTAL).map(|i| i.to_string()).collect();
    assert_eq!(lines(&output), expected, "lost or repeated records");
}

/// A sink that fails at its `fail_at`-th write, keeping what it was given.
struct Flaky {
    writes: usize,
    fail_at: usize,
    seen: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Sink<u64> for Flaky {
    fn name(&self) -> String {
        "flaky".into()
    }
    async fn write(&mut self, items: &[u64]) -> Result<(), syncflow::connector::ConnectorError> {
        self.writes += 1;
        if self.writes == self.fail_at {
            return Err(syncflow::connector::ConnectorError::Other(
                "the disk is on fire".into(),
            ));
        }
        self.seen.lock().unwrap().extend_from_slice(items);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), syncflow::connector::ConnectorError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_only_unacknowledged_batches_are_delivered_again() {
    const TOTAL: u64 = 1000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("channels.redb");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let store = ChannelStore::open(&path).unwrap();
        store.append("work", &numbers(1..=TOTAL)).unwrap();
        let err = Runtime::new(flow!(pass))
            .source(LoadSource::<u64>::open(&store, "work", "w").unwrap())
            .sink(Flaky {
                writes: 0,
                fail_at: 6,
                seen: seen.clone(),
            })
            .batch_size(50)
            .handle_signals(false)
            .run()
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "sink `flaky` failed: the disk is on fire");
    }
    let first: Vec<u64> = seen.lock().unwrap().clone();
    // The sink got five whole batches before failing.
    assert_eq!(first, (1..=250).collect::<Vec<_>>());

    let store = ChannelStore::open(&path).unwrap();
    let position = store.cursor("work", "w").unwrap().unwrap().position;
    // Only batches the sink confirmed can have been committed: a batch
    // boundary at or before what the sink received.
    assert!(
        position <= 251 && (position - 1).is_multiple_of(50),
        "cursor {position}"
    );
    let output = dir.path().join("out.jsonl");
    let second = Runtime::new(flow!(pass))
        .source(
            LoadSource::<u64>::open(&store, "work", "w")
                .unwrap()
                .follow(false),
        )
        .sink(JsonLinesSink::create(&output).unwrap())
        .batch_size(50)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    let again: Vec<u64> = lines(&output).iter().map(|l| l.parse().unwrap()).collect();
    // Exactly the records from the cursor on, once each.
    assert_eq!(again, (position..=TOTAL).collect::<Vec<_>>());
    assert_eq!(second.input, TOTAL - position + 1);
    // Duplicates: exactly the records the sink saw that were not committed.
    let duplicates = first.iter().filter(|n| **n >= position).count() as u64;
    assert_eq!(duplicates, 251 - position);
    let mut all: Vec<u64> = first.iter().copied().chain(again).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (1..=TOTAL).collect::<Vec<_>>(), "a record was lost");
}

// ---- Another process ----

const HELPER_ENV: &str = "SYNCFLOW_CHANNEL_TEST_HELPER";

/// Run by `another_process_...` in a child process (does nothing otherwise):
/// opens the store named in the environment and appends three records.
#[test]
#[ignore = "run as a child process by another test"]
fn child_process_helper() {
    let Ok(task) = std::env::var(HELPER_ENV) else {
        return;
    };
    let (mode, path) = task.split_once(':').unwrap();
    let options = ChannelStore::options().shared(mode == "shared");
    match options.open(path) {
        Err(e) => println!("CHILD-ERROR {e}"),
        Ok(store) => {
            let seqs = store.append("cross", &numbers(1..=3)).unwrap().seqs;
            println!("CHILD-APPENDED {seqs:?}");
        }
    }
}

fn run_child(mode: &str, path: &Path) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process_helper",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, format!("{mode}:{}", path.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_is_refused_by_default_and_shares_in_shared_mode() {
    let dir = tempfile::tempdir().unwrap();
    let exclusive = dir.path().join("exclusive.redb");
    let _store = ChannelStore::open(&exclusive).unwrap();
    let out = run_child("exclusive", &exclusive);
    assert!(out.contains("CHILD-ERROR channel store"), "{out}");
    assert!(
        out.contains("exclusive.redb` is already open in another process"),
        "{out}"
    );
    assert!(out.contains("ChannelStoreOptions::shared(true)"), "{out}");

    let shared_path = dir.path().join("shared.redb");
    let shared = ChannelStore::options()
        .shared(true)
        .open(&shared_path)
        .unwrap();
    let mut source = LoadSource::<u64>::open_with(
        &shared,
        "cross",
        "here",
        LoadOptions::default().poll_interval(Duration::from_millis(50)),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || run_child("shared", &shared_path))
        .await
        .unwrap();
    assert!(out.contains("CHILD-APPENDED 1..4"), "{out}");
    let (records, _) = read_batch(&mut source, 10).await;
    assert_eq!(
        records,
        (1..=3).map(|i| (i, i.to_string())).collect::<Vec<_>>()
    );
}
