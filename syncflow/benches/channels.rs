//! Durable channels: Save -> Load throughput, with every commit fsynced,
//! against raw redb writes of the same records.
//!
//! ```text
//! cargo bench -p syncflow --bench channels                 # criterion, then the ratio table
//! cargo bench -p syncflow --bench channels -- --ratios     # the ratio table only
//! cargo bench -p syncflow --bench channels -- --rounds 11  # more rounds for the table
//! cargo bench -p syncflow --bench channels -- --ratios --dir /dev/shm  # files elsewhere
//! ```
//!
//! Records are ~200-byte JSON objects, held as `Box<RawValue>` (what the
//! YAML runtime passes through channels). Per round, on a fresh file:
//!
//! - **raw redb write**: one write transaction per batch, one table insert
//!   per record (`u64` key, the JSON text as value), committed (fsync);
//! - **raw redb write + read**: the same, then every record read back with
//!   one range per batch;
//! - **save**: [`SaveSink`] `write` + `flush` per batch (one transaction,
//!   fsync);
//! - **load**: [`LoadSource`] `read` + `ack` + `commit` per batch (a durable
//!   cursor commit, fsync, per batch);
//! - **save -> load**: both, records counted over the total time;
//! - **runtime s->l**: a `Runtime` run saving the records (from memory)
//!   into a channel, then one loading them (into a sink that drops them):
//!   reads, acknowledgements and commits pipelined and grouped as the
//!   runtime does them.
//!
//! The table gives the median over the rounds of each figure and of the
//! per-round ratios. Target: save -> load at 500k msg/s or more.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use redb::{ReadableDatabase, TableDefinition};
use serde_json::value::RawValue;
use syncflow::channel::{ChannelStore, LoadSource, SaveSink};
use syncflow::connector::{Acker, Batch, ConnectorError, NoAck, Read, Sink, Source};
use syncflow::prelude::{Runtime, flow, sync_function};

/// Passes already-encoded JSON through.
#[sync_function]
fn pass_raw(v: Box<RawValue>) -> Box<RawValue> {
    v
}

/// Hands out records held in memory, moving them (no copy, no decoding).
struct Memory {
    records: std::vec::IntoIter<Box<RawValue>>,
    position: u64,
}

impl Source for Memory {
    type Item = Box<RawValue>;
    type Ack = ();
    type Acker = NoAck;
    fn name(&self) -> std::sync::Arc<str> {
        std::sync::Arc::from("memory")
    }
    fn acker(&mut self) -> NoAck {
        NoAck
    }
    async fn read(
        &mut self,
        batch: &mut Batch<Box<RawValue>>,
        max: usize,
    ) -> Result<Read<()>, ConnectorError> {
        for record in self.records.by_ref().take(max) {
            self.position += 1;
            batch.push(self.position, b"", Ok(record));
        }
        Ok(if batch.is_empty() {
            Read::End
        } else {
            Read::Batch(())
        })
    }
}

const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const TARGET: f64 = 500_000.0;

/// `count` JSON objects of about 200 bytes, deterministic.
fn records(count: usize) -> Vec<Box<RawValue>> {
    const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];
    const PATHS: [&str; 5] = [
        "/api/orders",
        "/api/users/profile",
        "/health",
        "/api/cart/items",
        "/login",
    ];
    (0..count)
        .map(|i| {
            let text = format!(
                r#"{{"ts":"2026-11-23T10:{:02}:{:02}.{:03}Z","level":"{}","service":"checkout-{}","path":"{}","status":{},"latency_ms":{}.{},"user":{},"msg":"request handled in time, cache warm, 3 items"}}"#,
                (i / 60_000) % 60,
                (i / 1000) % 60,
                i % 1000,
                LEVELS[i % 4],
                i % 7,
                PATHS[i % 5],
                200 + (i % 3) * 100,
                i % 900,
                i % 10,
                (i * 7919) % 1_000_003,
            );
            RawValue::from_string(text).expect("valid JSON")
        })
        .collect()
}

struct Figures {
    raw_write: Duration,
    raw_write_read: Duration,
    save: Duration,
    load: Duration,
    runtime: Duration,
}

fn raw_write(path: &Path, records: &[Box<RawValue>], batch: usize) -> Duration {
    let db = redb::Database::create(path).expect("create redb file");
    let started = Instant::now();
    let mut seq = 1u64;
    for chunk in records.chunks(batch) {
        let tx = db.begin_write().expect("begin write");
        {
            let mut table = tx.open_table(RAW).expect("open table");
            for r in chunk {
                table.insert(seq, r.get().as_bytes()).expect("insert");
                seq += 1;
            }
        }
        tx.commit().expect("commit");
    }
    started.elapsed()
}

fn raw_read(path: &Path, count: usize, batch: usize) -> Duration {
    let db = redb::Database::open(path).expect("open redb file");
    let started = Instant::now();
    let mut out: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    let mut from = 1u64;
    while seen < count {
        out.clear();
        let tx = db.begin_read().expect("begin read");
        let table = tx.open_table(RAW).expect("open table");
        for entry in table.range(from..from + batch as u64).expect("range") {
            let (_, v) = entry.expect("entry");
            out.extend_from_slice(v.value());
            seen += 1;
        }
        from += batch as u64;
        black_box(&out);
    }
    started.elapsed()
}

async fn save(store: &ChannelStore, records: &[Box<RawValue>], batch: usize) -> Duration {
    let mut sink = SaveSink::open(store, "bench").expect("open sink");
    let started = Instant::now();
    for chunk in records.chunks(batch) {
        sink.write(chunk).await.expect("write");
        Sink::<Box<RawValue>>::flush(&mut sink)
            .await
            .expect("flush");
    }
    started.elapsed()
}

async fn load(store: &ChannelStore, count: usize, batch: usize) -> Duration {
    let mut source = LoadSource::<Box<RawValue>>::open(store, "bench", "reader")
        .expect("open source")
        .follow(false);
    let mut acker = source.acker();
    let mut buf = Batch::with_capacity(batch);
    let started = Instant::now();
    let mut seen = 0usize;
    loop {
        buf.clear();
        match source.read(&mut buf, batch).await.expect("read") {
            Read::Batch(ack) => {
                seen += buf.len();
                black_box(&buf);
                acker.ack(ack);
                acker.commit().await.expect("commit");
            }
            Read::Idle => continue,
            Read::End => break,
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(seen, count, "the load did not see every record");
    assert!(buf.iter().all(|(_, _, r)| r.is_ok()));
    elapsed
}

/// A flow saving the records through the runtime, then one loading them
/// (to a sink that drops them): acks and commits pipelined and grouped as
/// the runtime does them.
async fn runtime_save_load(
    store: &ChannelStore,
    records: Vec<Box<RawValue>>,
    batch: usize,
) -> Duration {
    let count = records.len() as u64;
    let source = Memory {
        records: records.into_iter(),
        position: 0,
    };
    let sink = SaveSink::open(store, "through-runtime").expect("open sink");
    let loader = LoadSource::<Box<RawValue>>::open(store, "through-runtime", "reader")
        .expect("open source")
        .follow(false);
    let started = Instant::now();
    let saved = Runtime::new(flow!(pass_raw))
        .source(source)
        .sink(sink)
        .batch_size(batch)
        .handle_signals(false)
        .run()
        .await
        .expect("save run");
    let loaded = Runtime::new(flow!(pass_raw))
        .source(loader)
        .batch_size(batch)
        .handle_signals(false)
        .run()
        .await
        .expect("load run");
    let elapsed = started.elapsed();
    assert_eq!((saved.output, loaded.input), (count, count));
    elapsed
}

fn round(
    rt: &tokio::runtime::Runtime,
    base: &Path,
    records: &[Box<RawValue>],
    batch: usize,
) -> Figures {
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let raw_path = dir.path().join("raw.redb");
    let raw_write = raw_write(&raw_path, records, batch);
    let raw_read = raw_read(&raw_path, records.len(), batch);
    let store = ChannelStore::open(dir.path().join("channels.redb")).expect("open store");
    let owned = records.to_vec();
    let (save, load, runtime) = rt.block_on(async {
        let save = save(&store, records, batch).await;
        let load = load(&store, records.len(), batch).await;
        let runtime = runtime_save_load(&store, owned, batch).await;
        (save, load, runtime)
    });
    Figures {
        raw_write,
        raw_write_read: raw_write + raw_read,
        save,
        load,
        runtime,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median time of `fdatasync` after writing 200 KB to a file in `base`:
/// what one durable commit costs on this disk, at the moment.
fn fsync_latency(base: &Path) -> Duration {
    use std::io::Write;
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let mut file = std::fs::File::create(dir.path().join("probe")).expect("probe file");
    let block = vec![b'x'; 200 * 1024];
    let mut times: Vec<f64> = (0..50)
        .map(|_| {
            file.write_all(&block).expect("write probe");
            let started = Instant::now();
            file.sync_data().expect("fdatasync probe");
            started.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Duration::from_secs_f64(times[times.len() / 2])
}

fn ratios(base: &Path, rounds: usize, count: usize) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let records = records(count);
    let bytes: usize = records.iter().map(|r| r.get().len()).sum();
    println!(
        "\nchannels: {count} records of {} bytes on average, {rounds} rounds, every commit fsynced; medians",
        bytes / count
    );
    println!(
        "files in {}; fdatasync of 200 KB takes {:.2} ms (median) there now",
        base.display(),
        fsync_latency(base).as_secs_f64() * 1e3
    );
    println!(
        "{:<7} {:>12} {:>12} {:>12} {:>12} {:>13} {:>13} {:>13} {:>15}",
        "batch",
        "raw write/s",
        "raw w+r/s",
        "save/s",
        "load/s",
        "save->load/s",
        "/ raw write",
        "/ raw w+r",
        "runtime s->l/s"
    );
    let mut pass = true;
    for batch in [1024, 4096] {
        let rate = |d: Duration| count as f64 / d.as_secs_f64();
        let mut cols: [Vec<f64>; 8] = Default::default();
        for _ in 0..rounds {
            let f = round(&rt, base, &records, batch);
            let total = f.save + f.load;
            cols[0].push(rate(f.raw_write));
            cols[1].push(rate(f.raw_write_read));
            cols[2].push(rate(f.save));
            cols[3].push(rate(f.load));
            cols[4].push(rate(total));
            cols[5].push(f.raw_write.as_secs_f64() / total.as_secs_f64());
            cols[6].push(f.raw_write_read.as_secs_f64() / total.as_secs_f64());
            cols[7].push(rate(f.runtime));
        }
        let [a, b, c, d, e, f, g, h] = cols.map(median);
        println!(
            "{batch:<7} {a:>12.0} {b:>12.0} {c:>12.0} {d:>12.0} {e:>13.0} {f:>12.2}x {g:>12.2}x {h:>15.0}"
        );
        if batch == 1024 && e < TARGET {
            pass = false;
        }
    }
    println!(
        "target: save->load >= {TARGET:.0} msg/s at batch 1024: {}",
        if pass { "PASS" } else { "FAIL" }
    );
    println!(
        "(`/ raw write`: raw redb write time over save->load time; > 1: the channel round trip is faster)"
    );
}

fn criterion_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    const COUNT: usize = 32 * 1024;
    const BATCH: usize = 1024;
    let records = records(COUNT);
    let mut group = c.benchmark_group("channels");
    group.throughput(Throughput::Elements(COUNT as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("save_load_batch_1024", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
                let store =
                    ChannelStore::open(dir.path().join("channels.redb")).expect("open store");
                total += rt.block_on(async {
                    save(&store, &records, BATCH).await + load(&store, COUNT, BATCH).await
                });
            }
            total
        })
    });
    group.bench_function("raw_redb_write_batch_1024", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
                total += raw_write(&dir.path().join("raw.redb"), &records, BATCH);
            }
            total
        })
    });
    group.finish();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only_ratios = args.iter().any(|a| a == "--ratios");
    let ours = only_ratios || args.iter().any(|a| a == "--rounds" || a == "--dir");
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(7);
    if !only_ratios {
        // Criterion refuses arguments it does not know: ours turn its parsing off.
        let mut c = if ours {
            Criterion::default()
        } else {
            Criterion::default().configure_from_args()
        };
        criterion_benches(&mut c);
        c.final_summary();
    }
    // `cargo test --benches` runs bench binaries with `--test`: keep it short.
    let base = args
        .iter()
        .position(|a| a == "--dir")
        .and_then(|i| args.get(i + 1))
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_TARGET_TMPDIR").into());
    if args.iter().any(|a| a == "--test") {
        ratios(&base, 1, 4096);
    } else {
        ratios(&base, rounds, 200_000);
    }
}
