//! W1: NDJSON log ETL, file to file (see `shared/bench/w1/README.md`).
//!
//! Parse each line, drop `level == "debug"`, keep `ts`, `host`, `status` and
//! `kb = bytes / 1024`, write compact JSON lines. Variants:
//! - `hand`: the idiomatic hand-written loop (`BufReader::lines`, serde_json
//!   into an owned struct, `serde_json::to_writer` into a `BufWriter`): the
//!   baseline;
//! - `hand-zc`: a tuned hand-written loop (one reused line buffer, borrowed
//!   strings): what the owned-message model costs, for information;
//! - `flow`, `flow+metrics`: the same work as a `flow!` of three
//!   `#[sync_function]`s driven by a `Worker` over the file, without and with
//!   the default `Metrics`;
//! - `runtime`: the real runtime, file to file: `JsonLinesSource` (which
//!   decodes each line) → `flow!(drop_debug -> project)` with the default
//!   `Metrics` → `JsonLinesSink`, one worker (so output order is the input's),
//!   on a multi-threaded tokio runtime as `#[tokio::main]` makes.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use syncflow::flow::{FlowDef, Worker};
use syncflow::prelude::*;

use super::poll_ready;

const IO_BUF: usize = 64 * 1024;

/// Writes `n` lines of W1 input, byte for byte what `gen_logs.py n` writes.
pub fn generate(path: &Path, n: u64) -> io::Result<()> {
    const LEVELS: [&str; 4] = ["info", "warn", "error", "debug"];
    const STATUS: [u16; 5] = [200, 200, 200, 404, 500];
    let mut w = BufWriter::with_capacity(IO_BUF, File::create(path)?);
    for i in 0..n {
        writeln!(
            w,
            r#"{{"ts":{},"host":"web-{:03}.example.internal","level":"{}","status":{},"bytes":{},"path":"/api/v1/items/{}?q=abc","msg":"request handled in {}us by worker {} for user user{}@example.com"}}"#,
            1_700_000_000_000 + i,
            i % 100,
            LEVELS[(i % 4) as usize],
            STATUS[(i % 5) as usize],
            100 + (i * 37) % 9000,
            i,
            (i * 13) % 5000,
            i % 16,
            i % 1000,
        )?;
    }
    w.flush()
}

/// An input record (fields the work does not use are skipped by serde).
#[derive(Debug, Deserialize)]
pub struct LogRecord {
    pub ts: u64,
    pub host: String,
    pub level: String,
    pub status: u16,
    pub bytes: u64,
}

/// An output record.
#[derive(Debug, Serialize)]
pub struct LogOut {
    pub ts: u64,
    pub host: String,
    pub status: u16,
    pub kb: f64,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub read: u64,
    pub written: u64,
    pub failed: u64,
}

// ---------------------------------------------------------------- hand-written

/// The baseline: the loop most Rust programmers would write.
#[inline(never)]
pub fn w1_hand(input: &Path, output: &Path) -> io::Result<Counts> {
    let reader = BufReader::with_capacity(IO_BUF, File::open(input)?);
    let mut w = BufWriter::with_capacity(IO_BUF, File::create(output)?);
    let mut c = Counts::default();
    for line in reader.lines() {
        let line = line?;
        c.read += 1;
        let rec: LogRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(_) => {
                c.failed += 1;
                continue;
            }
        };
        if rec.level == "debug" {
            continue;
        }
        let out = LogOut {
            ts: rec.ts,
            host: rec.host,
            status: rec.status,
            kb: rec.bytes as f64 / 1024.0,
        };
        serde_json::to_writer(&mut w, &out)?;
        w.write_all(b"\n")?;
        c.written += 1;
    }
    w.flush()?;
    Ok(c)
}

#[derive(Deserialize)]
struct LogRecordRef<'a> {
    ts: u64,
    #[serde(borrow)]
    host: Cow<'a, str>,
    #[serde(borrow)]
    level: Cow<'a, str>,
    status: u16,
    bytes: u64,
}

#[derive(Serialize)]
struct LogOutRef<'a> {
    ts: u64,
    host: &'a str,
    status: u16,
    kb: f64,
}

/// A tuned hand-written loop: one reused line buffer, no allocation per line.
#[inline(never)]
pub fn w1_hand_zero_copy(input: &Path, output: &Path) -> io::Result<Counts> {
    let mut reader = BufReader::with_capacity(IO_BUF, File::open(input)?);
    let mut w = BufWriter::with_capacity(IO_BUF, File::create(output)?);
    let mut c = Counts::default();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        c.read += 1;
        let rec: LogRecordRef<'_> = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(_) => {
                c.failed += 1;
                continue;
            }
        };
        if rec.level == "debug" {
            continue;
        }
        let out = LogOutRef {
            ts: rec.ts,
            host: &rec.host,
            status: rec.status,
            kb: rec.bytes as f64 / 1024.0,
        };
        serde_json::to_writer(&mut w, &out)?;
        w.write_all(b"\n")?;
        c.written += 1;
    }
    w.flush()?;
    Ok(c)
}

// ---------------------------------------------------------------- flow!

/// Parses one NDJSON line.
#[sync_function]
pub fn parse_log(line: String) -> Result<LogRecord, serde_json::Error> {
    serde_json::from_str(&line)
}

/// Drops debug records.
#[sync_function]
pub fn drop_debug(rec: LogRecord) -> Option<LogRecord> {
    (rec.level != "debug").then_some(rec)
}

/// Keeps ts, host, status and the size in KiB.
#[sync_function]
pub fn project(rec: LogRecord) -> LogOut {
    LogOut {
        ts: rec.ts,
        host: rec.host,
        status: rec.status,
        kb: rec.bytes as f64 / 1024.0,
    }
}

/// W1 as a flow (with the default `Metrics`).
pub fn flow() -> Flow<impl FlowDef<Input = String, Output = LogOut>> {
    flow!(name = "w1", parse_log -> drop_debug -> project)
}

/// Writes each output as a compact JSON line.
pub struct JsonLinesEmit<W: Write> {
    w: W,
    error: Option<io::Error>,
    pub written: u64,
    pub failed: u64,
}

impl<W: Write> JsonLinesEmit<W> {
    pub fn new(w: W) -> Self {
        JsonLinesEmit {
            w,
            error: None,
            written: 0,
            failed: 0,
        }
    }

    /// The first write error, if any, else the writer.
    pub fn finish(self) -> io::Result<W> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.w),
        }
    }
}

impl<W: Write + Send> Emit<LogOut> for JsonLinesEmit<W> {
    #[inline]
    fn emit(&mut self, item: LogOut) {
        let r = serde_json::to_writer(&mut self.w, &item)
            .map_err(io::Error::from)
            .and_then(|()| self.w.write_all(b"\n"));
        match r {
            Ok(()) => self.written += 1,
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }
    #[inline]
    fn fail(&mut self, _: StepFailure<'_>) {
        self.failed += 1;
    }
}

/// Lines per batch: the worker's monitor is flushed once per batch.
pub const BATCH: u64 = 1024;

/// The flow driven by a worker, file to file.
#[inline(never)]
pub fn w1_flow_worker<F, M>(w: &mut Worker<F, M>, input: &Path, output: &Path) -> io::Result<Counts>
where
    F: FlowDef<Input = String, Output = LogOut>,
    M: Monitor,
{
    let reader = BufReader::with_capacity(IO_BUF, File::open(input)?);
    let mut sink = JsonLinesEmit::new(BufWriter::with_capacity(IO_BUF, File::create(output)?));
    let mut read = 0;
    for line in reader.lines() {
        read += 1;
        if let Some(f) = w.start(read, line?, &mut sink) {
            poll_ready(f);
        }
        if read % BATCH == 0 {
            w.flush();
        }
    }
    w.flush();
    let c = Counts {
        read,
        written: sink.written,
        failed: sink.failed,
    };
    sink.finish()?.flush()?;
    Ok(c)
}

/// W1 as the runtime runs it: the source decodes each line into the first
/// step's input.
pub fn runtime_flow() -> Flow<impl FlowDef<Input = LogRecord, Output = LogOut>> {
    flow!(name = "w1_runtime", drop_debug -> project)
}

/// The real runtime, file to file.
#[inline(never)]
///
/// With `fsync`, the sink syncs the file at each flush, before the source's
/// checkpoint moves (the runtime's default); without it, the output is as
/// durable as the hand-written loop's (not synced).
pub fn w1_runtime(
    rt: &tokio::runtime::Runtime,
    input: &Path,
    output: &Path,
    fsync: bool,
) -> io::Result<Counts> {
    rt.block_on(async {
        let summary = syncflow::runtime::Runtime::new(runtime_flow())
            .source(
                syncflow::connector::JsonLinesSource::<LogRecord>::open(input)
                    .map_err(io::Error::other)?,
            )
            .sink(
                syncflow::connector::JsonLinesSink::create(output)
                    .map_err(io::Error::other)?
                    .fsync(fsync),
            )
            .workers(1)
            .handle_signals(false)
            .run()
            .await
            .map_err(io::Error::other)?;
        Ok(Counts {
            read: summary.input,
            written: summary.output,
            failed: summary.failed + summary.malformed,
        })
    })
}

/// The same flow as [`runtime_flow`], from a YAML flow file: the registered
/// `drop_debug` and `project` run as erased steps, the input is decoded by
/// `LogRecord`'s registered codec.
#[inline(never)]
pub fn w1_yaml(rt: &tokio::runtime::Runtime, input: &Path, output: &Path) -> io::Result<Counts> {
    let yaml = format!(
        "flows:\n  w1_yaml:\n    source: {{ file: \"{}\" }}\n    steps: [drop_debug, project]\n    sinks: [{{ file: \"{}\", fsync: false }}]\n",
        input.display(),
        output.display()
    );
    let plan = syncflow::config::load_str(&yaml, "w1.yaml").map_err(io::Error::other)?;
    let mut results = rt.block_on(plan.run(syncflow::runtime::Shutdown::new(), false));
    let (_, summary) = results
        .pop()
        .ok_or_else(|| io::Error::other("the flow file has no flow"))?;
    let summary = summary.map_err(io::Error::other)?;
    Ok(Counts {
        read: summary.input,
        written: summary.output,
        failed: summary.failed + summary.malformed,
    })
}

/// Which implementation of W1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hand,
    HandZeroCopy,
    FlowBare,
    FlowMetrics,
    Runtime,
    RuntimeFsync,
    Yaml,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Hand,
        Kind::HandZeroCopy,
        Kind::FlowBare,
        Kind::FlowMetrics,
        Kind::Runtime,
        Kind::RuntimeFsync,
        Kind::Yaml,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Hand => "hand-written loop",
            Kind::HandZeroCopy => "hand-written, zero-copy",
            Kind::FlowBare => "flow! Worker, no monitoring",
            Kind::FlowMetrics => "flow! Worker + Metrics",
            Kind::Runtime => "runtime file→file + Metrics",
            Kind::RuntimeFsync => "  same, fsync at each flush",
            Kind::Yaml => "YAML flow file→file + Metrics",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Kind::Hand => "hand",
            Kind::HandZeroCopy => "hand-zc",
            Kind::FlowBare => "flow",
            Kind::FlowMetrics => "metrics",
            Kind::Runtime => "runtime",
            Kind::RuntimeFsync => "runtime-fsync",
            Kind::Yaml => "yaml",
        }
    }

    /// Lower bound on throughput relative to the hand-written loop, if any.
    /// The fsync row is informative: the loop it is compared with syncs
    /// nothing.
    pub fn target(self) -> Option<f64> {
        match self {
            Kind::FlowBare | Kind::FlowMetrics | Kind::Runtime => Some(0.9),
            Kind::Hand | Kind::HandZeroCopy | Kind::RuntimeFsync | Kind::Yaml => None,
        }
    }
}

/// Every W1 variant, ready to run.
pub struct Variants<F: FlowDef> {
    pub bare: Worker<F, NoMonitor>,
    pub metrics: Worker<F, Metrics>,
    pub tokio: tokio::runtime::Runtime,
}

/// Builds the W1 variants.
pub fn variants() -> Variants<impl FlowDef<Input = String, Output = LogOut>> {
    Variants {
        bare: flow().without_monitoring().worker(Arc::from("w1"), 0),
        metrics: flow().worker(Arc::from("w1"), 0),
        tokio: tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime"),
    }
}

impl<F: FlowDef<Input = String, Output = LogOut>> Variants<F> {
    /// Runs one variant over `input`, writing `output`.
    pub fn run(&mut self, kind: Kind, input: &Path, output: &Path) -> io::Result<Counts> {
        match kind {
            Kind::Hand => w1_hand(input, output),
            Kind::HandZeroCopy => w1_hand_zero_copy(input, output),
            Kind::FlowBare => w1_flow_worker(&mut self.bare, input, output),
            Kind::FlowMetrics => w1_flow_worker(&mut self.metrics, input, output),
            Kind::Runtime => w1_runtime(&self.tokio, input, output, false),
            Kind::RuntimeFsync => w1_runtime(&self.tokio, input, output, true),
            Kind::Yaml => w1_yaml(&self.tokio, input, output),
        }
    }
}
