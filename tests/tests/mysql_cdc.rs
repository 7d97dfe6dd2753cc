//! The MySQL/MariaDB binlog CDC source against the local MariaDB (binlog on,
//! ROW format, full row metadata: see `.ci/services`).
//!
//! Every test works in a database of its own (`unique`), dropped at the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use syncflow::cdc::{CdcOp, ChangeEvent};
use syncflow::connector::{
    Batch, ConnectorError, MysqlCdcSource, MysqlCdcSourceConfig, Read, SchemaChangePolicy,
    SnapshotMode, Source,
};
use syncflow::prelude::*;
use syncflow::runtime::Shutdown;
use syncflow_tests::services::{require, unique};

const URL: &str = "mysql://root@127.0.0.1:3306";

/// Passes each change event through.
#[sync_function]
fn cdc_pass(e: ChangeEvent) -> ChangeEvent {
    e
}

/// An order row, for typed decoding.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct OrderChange {
    op: String,
    after: Option<Order>,
}

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
struct Order {
    id: u64,
    qty: u32,
}

/// Passes each typed order change through.
#[sync_function]
fn cdc_orders(o: OrderChange) -> OrderChange {
    o
}

/// Collects what it is given; optionally never confirms (flush hangs),
/// or takes its time.
struct Collect<T> {
    seen: Arc<Mutex<Vec<T>>>,
    hang: bool,
    delay: Duration,
}

impl<T: Clone + Send + Sync + 'static> Sink<T> for Collect<T> {
    fn name(&self) -> String {
        "collect".into()
    }
    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.seen.lock().unwrap().extend_from_slice(items);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

/// Ends the input after `rows` records, as if the process stopped there.
struct StopAfter<S> {
    inner: S,
    rows: usize,
}

impl<S: Source> Source for StopAfter<S> {
    type Item = S::Item;
    type Ack = S::Ack;
    type Acker = S::Acker;
    fn name(&self) -> Arc<str> {
        self.inner.name()
    }
    fn acker(&mut self) -> S::Acker {
        self.inner.acker()
    }
    async fn read(
        &mut self,
        batch: &mut Batch<S::Item>,
        max: usize,
    ) -> Result<Read<S::Ack>, ConnectorError> {
        if self.rows == 0 {
            return Ok(Read::End);
        }
        let read = self.inner.read(batch, max.min(self.rows)).await?;
        self.rows -= batch.len();
        Ok(read)
    }
}

/// A scratch database, dropped when the test ends.
struct Db {
    name: String,
    conn: mysql_async::Conn,
}

impl Db {
    async fn new(prefix: &str) -> Db {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("syncflow=info")
            .with_test_writer()
            .try_init();
        let name = unique(prefix);
        let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(URL).unwrap())
            .prefer_socket(false);
        let mut conn = mysql_async::Conn::new(opts).await.unwrap();
        conn.query_drop(format!("CREATE DATABASE `{name}`"))
            .await
            .unwrap();
        conn.query_drop(format!("USE `{name}`")).await.unwrap();
        Db { name, conn }
    }

    async fn sql(&mut self, sql: &str) {
        self.conn
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn config(&self) -> MysqlCdcSourceConfig {
        let mut c = MysqlCdcSourceConfig::new(URL);
        c.include = vec![format!("{}.*", self.name)];
        c
    }

    async fn drop(mut self) {
        let _ = self
            .conn
            .query_drop(format!("DROP DATABASE `{}`", self.name))
            .await;
        let _ = self.conn.disconnect().await;
    }
}

/// A run of the flow in the background.
struct Running<T> {
    seen: Arc<Mutex<Vec<T>>>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<Result<RunSummary, RunError>>,
}

fn start<S: Source<Item = ChangeEvent>>(
    source: S,
    batch: usize,
    hang: bool,
) -> Running<ChangeEvent> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    let runtime = Runtime::new(flow!(cdc_pass))
        .source(source)
        .sink(Collect {
            seen: seen.clone(),
            hang,
            delay: Duration::ZERO,
        })
        .batch_size(batch)
        .with_shutdown(shutdown.clone())
        .handle_signals(false);
    Running {
        seen,
        shutdown,
        task: tokio::spawn(runtime.run()),
    }
}

impl<T: Clone> Running<T> {
    /// Waits (up to 15 s) until `done` holds for what was collected.
    async fn wait(&self, what: &str, done: impl Fn(&[T]) -> bool) -> Vec<T> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let seen = self.seen.lock().unwrap().clone();
            if done(&seen) {
                return seen;
            }
            if self.task.is_finished() {
                panic!(
                    "the run ended while waiting for {what}; got {} events",
                    seen.len()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; got {} events",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> RunSummary {
        self.shutdown.shutdown();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the run stops promptly")
            .unwrap()
            .unwrap()
    }
}

/// The rows of events of one table, for comparisons.
fn after_ids(events: &[ChangeEvent]) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| e.after.as_ref()?.get("id")?.as_u64())
        .collect()
}

fn row(v: Value) -> Option<serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        Value::Null => None,
        other => panic!("not a row: {other}"),
    }
}

/// Checks an event apart from its positions and times.
fn check(
    e: &ChangeEvent,
    op: CdcOp,
    db: &str,
    table: &str,
    before: Value,
    after: Value,
    snapshot: bool,
) {
    assert_eq!(e.op, op, "{e:?}");
    assert_eq!(e.before, row(before), "before of {e:?}");
    assert_eq!(e.after, row(after), "after of {e:?}");
    assert_eq!(e.source.connector, "mysql");
    assert_eq!(e.source.db, db);
    assert_eq!(e.source.table, table);
    assert_eq!(e.source.snapshot, snapshot);
    let (file, offset) = e.source.pos.rsplit_once(':').expect("pos is file:offset");
    assert!(
        file.contains("bin") && offset.parse::<u64>().is_ok(),
        "{}",
        e.source.pos
    );
    let gtid = e
        .source
        .gtid
        .as_deref()
        .expect("MariaDB gives each transaction a GTID");
    assert_eq!(gtid.split('-').count(), 3, "domain-server-sequence: {gtid}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        e.ts_ms <= now && e.ts_ms + 60_000 > now,
        "ts_ms {}",
        e.ts_ms
    );
    assert!(
        e.source.ts_ms <= now && e.source.ts_ms + 60_000 > now,
        "source.ts_ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_stream_with_before_and_after_images() {
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_snap").await;
    db.sql("CREATE TABLE orders (id INT PRIMARY KEY, item VARCHAR(20), qty INT)")
        .await;
    db.sql("INSERT INTO orders VALUES (2, 'pear', 5), (1, 'apple', 3), (3, 'fig', 1)")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = db.config();
    config.state_dir = Some(dir.path().to_path_buf());
    config.snapshot_chunk = 2; // two snapshot queries for three rows
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    let snap = run.wait("the snapshot", |s| s.len() >= 3).await;
    let d = db.name.clone();
    // Primary-key order.
    check(
        &snap[0],
        CdcOp::Snapshot,
        &d,
        "orders",
        json!(null),
        json!({"id": 1, "item": "apple", "qty": 3}),
        true,
    );
    check(
        &snap[1],
        CdcOp::Snapshot,
        &d,
        "orders",
        json!(null),
        json!({"id": 2, "item": "pear", "qty": 5}),
        true,
    );
    check(
        &snap[2],
        CdcOp::Snapshot,
        &d,
        "orders",
        json!(null),
        json!({"id": 3, "item": "fig", "qty": 1}),
        true,
    );

    db.sql("INSERT INTO orders VALUES (4, 'kiwi', 7)").await;
    db.sql("UPDATE orders SET qty = 9 WHERE id = 2").await;
    db.sql("DELETE FROM orders WHERE id = 3").await;
    let all = run.wait("three changes", |s| s.len() >= 6).await;
    check(
        &all[3],
        CdcOp::Insert,
        &d,
        "orders",
        json!(null),
        json!({"id": 4, "item": "kiwi", "qty": 7}),
        false,
    );
    check(
        &all[4],
        CdcOp::Update,
        &d,
        "orders",
        json!({"id": 2, "item": "pear", "qty": 5}),
        json!({"id": 2, "item": "pear", "qty": 9}),
        false,
    );
    check(
        &all[5],
        CdcOp::Delete,
        &d,
        "orders",
        json!({"id": 3, "item": "fig", "qty": 1}),
        json!(null),
        false,
    );
    // Each change is later in the binlog than the snapshot position.
    let offset = |e: &ChangeEvent| {
        e.source
            .pos
            .rsplit_once(':')
            .unwrap()
            .1
            .parse::<u64>()
            .unwrap()
    };
    assert!(
        all[3].source.pos.split(':').next() != all[0].source.pos.split(':').next()
            || offset(&all[3]) > offset(&all[0])
    );
    assert!(
        offset(&all[4]) > offset(&all[3])
            || all[4].source.pos.split(':').next() != all[3].source.pos.split(':').next()
    );
    // The raw envelope serializes back to the same event (same shape as ChangeEvent).
    let text = serde_json::to_string(&all[4]).unwrap();
    assert_eq!(serde_json::from_str::<ChangeEvent>(&text).unwrap(), all[4]);
    let summary = run.stop().await;
    assert_eq!(summary.input, 6);
    db.drop().await;
}

/// Reads the checkpoint file of a state directory.
fn checkpoint(dir: &Path) -> Value {
    let entry = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .expect("a checkpoint file");
    serde_json::from_slice(&std::fs::read(entry).unwrap()).unwrap()
}

/// Run 1 of the resume tests: the snapshot (2 rows), then a transaction of
/// 10 rows of which only 6 are read before the input "ends" (batches of
/// 3); then, while stopped, an update and an insert. Returns the database,
/// the state directory, the source's settings and the checkpoint, which
/// is inside the transaction.
async fn cut_a_transaction(
    name: &str,
) -> (
    Db,
    tempfile::TempDir,
    MysqlCdcSourceConfig,
    serde_json::Value,
) {
    let mut db = Db::new(&format!("cdc_{name}")).await;
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, v INT)").await;
    db.sql("INSERT INTO t VALUES (1, 1), (2, 2)").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = db.config();
    config.state_dir = Some(dir.path().to_path_buf());
    config.name = Some(name.into());
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(
        StopAfter {
            inner: source,
            rows: 8,
        },
        3,
        false,
    );
    run.wait("the snapshot", |s| s.len() >= 2).await;
    db.sql("BEGIN").await;
    for id in 10..20 {
        db.sql(&format!("INSERT INTO t VALUES ({id}, {id})")).await;
    }
    db.sql("COMMIT").await;
    let summary = tokio::time::timeout(Duration::from_secs(15), run.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(summary.input, 8);
    let first = run.seen.lock().unwrap().clone();
    assert_eq!(after_ids(&first), vec![1, 2, 10, 11, 12, 13, 14, 15]);
    let saved = checkpoint(dir.path());
    assert_eq!(
        saved["skip_rows"], 6,
        "checkpoint inside the transaction: {saved}"
    );
    db.sql("UPDATE t SET v = 100 WHERE id = 1").await;
    db.sql("INSERT INTO t VALUES (30, 30)").await;
    (db, dir, config, saved)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_at_the_checkpoint_even_inside_a_transaction() {
    if !require("mariadb") {
        return;
    }
    let (mut db, dir, config, _) = cut_a_transaction("resume").await;

    // Run 2 resumes: the rest of the transaction, then the later changes;
    // no snapshot again, nothing delivered before.
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    assert_eq!(source.resumed_from().unwrap().skip_rows, 6);
    let run = start(source, 3, false);
    db.sql("INSERT INTO t VALUES (99, 99)").await; // the last one
    let second = run
        .wait("the sentinel", |s| after_ids(s).contains(&99))
        .await;
    assert_eq!(after_ids(&second), vec![16, 17, 18, 19, 1, 30, 99]);
    assert!(second.iter().all(|e| !e.source.snapshot));
    assert_eq!(second[4].op, CdcOp::Update);
    assert_eq!(second[4].before.as_ref().unwrap()["v"], 1);
    run.stop().await;
    let saved = checkpoint(dir.path());
    assert_eq!(saved["skip_rows"], 0);
    assert!(
        saved["gtid"].as_str().is_some_and(|g| g.contains('-')),
        "{saved}"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_dropped_before_acknowledging_gets_the_changes_again() {
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_crash").await;
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)").await;
    db.sql("INSERT INTO t VALUES (1)").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = db.config();
    config.state_dir = Some(dir.path().to_path_buf());
    // Run 1 delivers the snapshot and commits its checkpoint.
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    run.wait("the snapshot", |s| s.len() == 1).await;
    run.stop().await;
    let saved = checkpoint(dir.path());

    // Run 2: the sink never confirms; the process dies.
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, true);
    db.sql("INSERT INTO t VALUES (2), (3)").await;
    db.sql("UPDATE t SET id = 10 WHERE id = 1").await;
    // The sink is stuck in its first flush: it saw the first batch only.
    let lost = run.wait("the first changes", |s| !s.is_empty()).await;
    run.task.abort();
    let _ = run.task.await;
    // The checkpoint may have followed other databases' transactions
    // (empty batches), never past the unconfirmed changes.
    let after = checkpoint(dir.path());
    let (file, offset) = lost[0].source.pos.rsplit_once(':').unwrap();
    assert_eq!(after["file"], file);
    assert!(
        after["pos"].as_u64().unwrap() <= offset.parse::<u64>().unwrap(),
        "nothing unconfirmed is checkpointed: {after} vs {}",
        lost[0].source.pos
    );
    assert!(after["pos"].as_u64() >= saved["pos"].as_u64());

    // Run 3 gets the same changes again, at the same positions.
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    let again = run.wait("the changes again", |s| s.len() >= 3).await;
    run.stop().await;
    let key = |e: &ChangeEvent| {
        (
            e.op,
            e.before.clone(),
            e.after.clone(),
            e.source.pos.clone(),
            e.source.gtid.clone(),
        )
    };
    assert_eq!(
        lost.iter().map(key).collect::<Vec<_>>(),
        again[..lost.len()].iter().map(key).collect::<Vec<_>>(),
        "the unconfirmed changes come again, at the same positions"
    );
    assert_eq!(after_ids(&again), vec![2, 3, 10]);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_and_exclude_patterns_choose_the_tables() {
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_filter").await;
    let mut other = Db::new("cdc_other").await;
    for t in ["orders", "items", "tmp_scratch"] {
        db.sql(&format!("CREATE TABLE {t} (id INT PRIMARY KEY)"))
            .await;
        db.sql(&format!("INSERT INTO {t} VALUES (1)")).await;
    }
    other.sql("CREATE TABLE orders (id INT PRIMARY KEY)").await;
    let mut config = db.config();
    config.exclude = vec![format!("{}.tmp_*", db.name)];
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    run.wait("the snapshot", |s| s.len() >= 2).await;
    for t in ["orders", "items", "tmp_scratch"] {
        db.sql(&format!("INSERT INTO {t} VALUES (2)")).await;
    }
    other.sql("INSERT INTO orders VALUES (2)").await;
    db.sql("INSERT INTO orders VALUES (3)").await;
    let seen = run
        .wait("the sentinel", |s| after_ids(s).contains(&3))
        .await;
    run.stop().await;
    let tables: Vec<(String, String, u64)> = seen
        .iter()
        .map(|e| {
            (
                e.source.db.clone(),
                e.source.table.clone(),
                after_ids(std::slice::from_ref(e))[0],
            )
        })
        .collect();
    let d = db.name.clone();
    assert_eq!(
        tables,
        vec![
            (d.clone(), "items".into(), 1),
            (d.clone(), "orders".into(), 1),
            (d.clone(), "orders".into(), 2),
            (d.clone(), "items".into(), 2),
            (d.clone(), "orders".into(), 3),
        ]
    );
    db.drop().await;
    other.drop().await;
}

async fn ddl_run(policy: SchemaChangePolicy) -> (Vec<ChangeEvent>, Option<String>, String) {
    let mut db = Db::new("cdc_ddl").await;
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, a INT)").await;
    let mut config = db.config();
    config.snapshot = SnapshotMode::Never;
    config.schema_changes = policy;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    db.sql("INSERT INTO t VALUES (1, 1)").await;
    db.sql("ALTER TABLE t ADD COLUMN note VARCHAR(10) AFTER id")
        .await;
    db.sql("INSERT INTO t VALUES (2, 'hi', 2)").await;
    let name = db.name.clone();
    let error = if policy == SchemaChangePolicy::Fail {
        let result = tokio::time::timeout(Duration::from_secs(15), run.task)
            .await
            .unwrap()
            .unwrap();
        let seen = run.seen.lock().unwrap().clone();
        db.drop().await;
        return (seen, Some(result.unwrap_err().to_string()), name);
    } else {
        None
    };
    let seen = run
        .wait("the second insert", |s| after_ids(s).contains(&2))
        .await;
    run.stop().await;
    db.drop().await;
    (seen, error, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_pass_as_ddl_events_and_columns_are_read_again() {
    if !require("mariadb") {
        return;
    }
    let (seen, _, db) = ddl_run(SchemaChangePolicy::Pass).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[0].after, row(json!({"id": 1, "a": 1})));
    assert_eq!(seen[1].op, CdcOp::Ddl);
    assert_eq!(
        (seen[1].source.db.as_str(), seen[1].source.table.as_str()),
        (db.as_str(), "t")
    );
    assert_eq!(
        seen[1].ddl.as_deref(),
        Some("ALTER TABLE t ADD COLUMN note VARCHAR(10) AFTER id")
    );
    assert_eq!(
        (seen[1].before.as_ref(), seen[1].after.as_ref()),
        (None, None)
    );
    assert_eq!(seen[2].after, row(json!({"id": 2, "note": "hi", "a": 2})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_can_be_ignored() {
    if !require("mariadb") {
        return;
    }
    let (seen, _, _) = ddl_run(SchemaChangePolicy::Ignore).await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].after, row(json!({"id": 2, "note": "hi", "a": 2})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_can_stop_the_flow() {
    if !require("mariadb") {
        return;
    }
    let (seen, error, db) = ddl_run(SchemaChangePolicy::Fail).await;
    let error = error.unwrap();
    assert_eq!(
        after_ids(&seen),
        vec![1],
        "the change before the DDL is delivered"
    );
    assert!(error.contains("ALTER TABLE t ADD COLUMN note"), "{error}");
    assert!(error.contains(&format!("`{db}`.t")), "{error}");
    assert!(error.contains("schema_changes"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn column_types_read_the_same_from_snapshot_and_binlog() {
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_types").await;
    db.sql(
        "CREATE TABLE t (
            id INT PRIMARY KEY,
            ti TINYINT, si SMALLINT UNSIGNED, mi MEDIUMINT, bi BIGINT, bu BIGINT UNSIGNED,
            f FLOAT, d DOUBLE, dec1 DECIMAL(10,2), dec2 DECIMAL(30,10),
            dt DATE, dtm DATETIME, dtm3 DATETIME(3), ts TIMESTAMP(6) NULL, tm TIME, tm2 TIME(2), yr YEAR,
            c CHAR(5), vc VARCHAR(300), tx TEXT, emo VARCHAR(10) CHARACTER SET utf8mb4,
            bin VARBINARY(10), bl BLOB, j JSON, e ENUM('small','large'), st SET('a','b','c'), bt BIT(10),
            n INT NULL
        )",
    )
    .await;
    let values = "-5, 65535, -8388608, -9223372036854775808, 18446744073709551615, \
        1.5, -2.25, -1234.56, 12345678901234567890.0123456789, \
        '2024-02-29', '2024-02-29 23:59:58', '2024-02-29 23:59:58.123', '2024-02-29 12:00:00.000001', \
        '-12:34:56', '01:02:03.45', 2024, \
        'ab', REPEAT('x', 300), 'long text', 'héllo 😀', \
        X'00FF10', X'DEADBEEF', '{\"a\": [1, 2.5, \"x\"], \"b\": null}', 'large', 'a,c', b'1000000001', NULL";
    db.sql("SET time_zone = '+00:00'").await;
    db.sql(&format!("INSERT INTO t VALUES (1, {values})")).await;
    let config = db.config();
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    run.wait("the snapshot", |s| !s.is_empty()).await;
    db.sql(&format!("INSERT INTO t VALUES (2, {values})")).await;
    db.sql("UPDATE t SET ti = 7, n = 1 WHERE id = 2").await;
    let seen = run.wait("insert and update", |s| s.len() >= 3).await;
    run.stop().await;
    let expected = json!({
        "id": 1, "ti": -5, "si": 65535, "mi": -8388608, "bi": i64::MIN, "bu": u64::MAX,
        "f": 1.5, "d": -2.25, "dec1": "-1234.56", "dec2": "12345678901234567890.0123456789",
        "dt": "2024-02-29", "dtm": "2024-02-29T23:59:58", "dtm3": "2024-02-29T23:59:58.123",
        "ts": "2024-02-29T12:00:00.000001Z", "tm": "-12:34:56", "tm2": "01:02:03.45", "yr": 2024,
        "c": "ab", "vc": "x".repeat(300), "tx": "long text", "emo": "héllo 😀",
        "bin": "AP8Q", "bl": "3q2+7w==", "j": {"a": [1, 2.5, "x"], "b": null}, "e": "large", "st": "a,c",
        "bt": 513, "n": null
    });
    let mut snap = seen[0].after.clone().unwrap();
    assert_eq!(Value::Object(snap.clone()), expected, "snapshot values");
    let mut streamed = seen[1].after.clone().unwrap();
    streamed.insert("id".into(), json!(1));
    assert_eq!(
        Value::Object(streamed),
        expected,
        "binlog values equal the snapshot's"
    );
    // The update's before image is the inserted row; after has the change.
    snap.insert("id".into(), json!(2));
    assert_eq!(seen[2].before.clone().unwrap(), snap);
    let after: BTreeMap<_, _> = seen[2].after.clone().unwrap().into_iter().collect();
    assert_eq!(
        (after["ti"].clone(), after["n"].clone()),
        (json!(7), json!(1))
    );
    db.drop().await;
}

/// Cuts the connection in the middle of a large transaction: the source
/// reconnects (by `resume_by`) and delivers every row once, in order.
async fn resume_after_a_cut(resume_by: syncflow::connector::ResumeBy) {
    let proxy = syncflow_tests::proxy::Proxy::start("127.0.0.1:3306")
        .await
        .unwrap();
    let mut db = Db::new("cdc_cut").await;
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let mut config = db.config();
    config.url = format!("mysql://root@{}", proxy.addr());
    config.snapshot = SnapshotMode::Never;
    config.resume_by = resume_by;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 4, false);
    for id in 1..=20 {
        db.sql(&format!("INSERT INTO t VALUES ({id})")).await;
    }
    // A transaction of many rows, cut while it is being read.
    let big: Vec<String> = (100..400).map(|i| format!("({i})")).collect();
    db.sql(&format!("INSERT INTO t VALUES {}", big.join(",")))
        .await;
    run.wait("some rows", |s| s.len() >= 30).await;
    proxy.cut(Duration::from_millis(700)).await;
    for id in 21..=40 {
        db.sql(&format!("INSERT INTO t VALUES ({id})")).await;
    }
    let seen = run.wait("every row", |s| after_ids(s).contains(&40)).await;
    run.stop().await;
    let mut expected: Vec<u64> = (1..=20).collect();
    expected.extend(100..400);
    expected.extend(21..=40);
    assert_eq!(after_ids(&seen), expected, "nothing lost, nothing repeated");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_resumes_after_the_connection_is_cut() {
    if !require("mariadb") {
        return;
    }
    // MariaDB: by GTID.
    resume_after_a_cut(syncflow::connector::ResumeBy::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_resumes_by_file_and_offset_after_the_connection_is_cut() {
    if !require("mariadb") {
        return;
    }
    resume_after_a_cut(syncflow::connector::ResumeBy::Position).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_changes_are_dead_lettered_and_the_flow_goes_on() {
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_bad").await;
    db.sql("CREATE TABLE t (id INT PRIMARY KEY, qty INT)").await;
    let mut config = db.config();
    config.snapshot = SnapshotMode::Never;
    let source = MysqlCdcSource::<OrderChange>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        Runtime::new(flow!(cdc_orders))
            .source(source)
            .sink(Collect {
                seen: seen.clone(),
                hang: false,
                delay: Duration::ZERO,
            })
            .dead_letter(&dead)
            .with_shutdown(shutdown.clone())
            .handle_signals(false)
            .run(),
    );
    db.sql("INSERT INTO t VALUES (1, 5)").await;
    db.sql("INSERT INTO t VALUES (2, -1)").await; // qty: u32 cannot hold -1
    db.sql("INSERT INTO t VALUES (3, 7)").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.shutdown();
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.malformed, 1);
    let ids: Vec<u64> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|o: &OrderChange| {
            assert_eq!(o.op, "c");
            o.after.as_ref().unwrap().id
        })
        .collect();
    assert_eq!(ids, vec![1, 3]);
    let letter = std::fs::read_to_string(&dead).unwrap();
    assert!(
        letter.contains("-1"),
        "the dead letter keeps the raw envelope: {letter}"
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_with_what_to_do() {
    if !require("mariadb") {
        return;
    }
    let mut config = MysqlCdcSourceConfig::new("mysql://root:secret-pw@127.0.0.1:1");
    let err = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("127.0.0.1:1") && err.contains("check that the server runs"),
        "{err}"
    );
    assert!(
        !err.contains("secret-pw"),
        "the password is never shown: {err}"
    );
    config.url = URL.into();
    config.include = vec!["a.b.c".into()];
    let err = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("database.table"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_chunks_follow_composite_keys_and_read_keyless_tables() {
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_keys").await;
    db.sql("CREATE TABLE k (a INT, b VARCHAR(5), v INT, PRIMARY KEY (a, b))")
        .await;
    db.sql("INSERT INTO k VALUES (2,'b',1),(1,'z',2),(2,'a',3),(1,'a',4),(3,'a',5),(2,'c',6),(1,'m',7)")
        .await;
    db.sql("CREATE TABLE nokey (v INT)").await;
    db.sql("INSERT INTO nokey VALUES (5),(3),(1),(4),(2)").await;
    let mut config = db.config();
    config.snapshot_chunk = 2;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 3, false);
    let seen = run.wait("the snapshot", |s| s.len() >= 12).await;
    let keys: Vec<(i64, String)> = seen
        .iter()
        .filter(|e| e.source.table == "k")
        .map(|e| {
            let a = e.after.as_ref().unwrap();
            (
                a["a"].as_i64().unwrap(),
                a["b"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(i64, String)> = [
        (1, "a"),
        (1, "m"),
        (1, "z"),
        (2, "a"),
        (2, "b"),
        (2, "c"),
        (3, "a"),
    ]
    .iter()
    .map(|(a, b)| (*a, b.to_string()))
    .collect();
    assert_eq!(keys, expected, "primary-key order over chunks of 2");
    let mut values: Vec<i64> = seen
        .iter()
        .filter(|e| e.source.table == "nokey")
        .map(|e| e.after.as_ref().unwrap()["v"].as_i64().unwrap())
        .collect();
    values.sort();
    assert_eq!(
        values,
        vec![1, 2, 3, 4, 5],
        "a table without key, read by offset"
    );
    // A truncation is an event of its own.
    db.sql("TRUNCATE TABLE k").await;
    let all = run.wait("the truncation", |s| s.len() >= 13).await;
    run.stop().await;
    assert_eq!(all[12].op, CdcOp::Truncate);
    assert_eq!(
        (
            all[12].source.table.as_str(),
            all[12].before.as_ref(),
            all[12].after.as_ref()
        ),
        ("k", None, None)
    );
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_cut_short_starts_again_and_streaming_follows() {
    if !require("mariadb") {
        return;
    }
    let proxy = syncflow_tests::proxy::Proxy::start("127.0.0.1:3306")
        .await
        .unwrap();
    let mut db = Db::new("cdc_snapcut").await;
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)").await;
    db.sql(
        "INSERT INTO t SELECT seq FROM seq_1_to_3000", // MariaDB's sequence engine
    )
    .await;
    let mut config = db.config();
    config.url = format!("mysql://root@{}", proxy.addr());
    config.snapshot_chunk = 10;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    let run = Running {
        seen: seen.clone(),
        shutdown: shutdown.clone(),
        task: tokio::spawn(
            Runtime::new(flow!(cdc_pass))
                .source(source)
                .sink(Collect {
                    seen: seen.clone(),
                    hang: false,
                    delay: Duration::from_millis(3),
                })
                .batch_size(10)
                .with_shutdown(shutdown)
                .handle_signals(false)
                .run(),
        ),
    };
    run.wait("part of the snapshot", |s| s.len() >= 200).await;
    proxy.cut(Duration::from_millis(300)).await;
    let partial = run.seen.lock().unwrap().len();
    assert!(
        partial < 3000,
        "the cut came after the snapshot ({partial} rows)"
    );
    // The snapshot starts again: every row arrives (some twice), then changes.
    run.wait("the whole snapshot", |s| {
        let ids: std::collections::BTreeSet<u64> = after_ids(s).into_iter().collect();
        ids.len() == 3000
    })
    .await;
    db.sql("INSERT INTO t VALUES (5000)").await;
    let all = run
        .wait("the insert", |s| after_ids(s).contains(&5000))
        .await;
    run.stop().await;
    let last = all.last().unwrap();
    assert_eq!((last.op, last.source.snapshot), (CdcOp::Insert, false));
    assert!(all[..all.len() - 1].iter().all(|e| e.op == CdcOp::Snapshot));
    assert!(all.len() > 3001, "rows read before the cut came again");
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stays_prompt_while_the_server_is_down() {
    if !require("mariadb") {
        return;
    }
    let proxy = Arc::new(
        syncflow_tests::proxy::Proxy::start("127.0.0.1:3306")
            .await
            .unwrap(),
    );
    let db = Db::new("cdc_down").await;
    let mut config = db.config();
    config.url = format!("mysql://root@{}", proxy.addr());
    config.snapshot = SnapshotMode::Never;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut = tokio::spawn({
        let proxy = proxy.clone();
        async move { proxy.cut(Duration::from_secs(8)).await }
    });
    tokio::time::sleep(Duration::from_millis(800)).await; // reconnecting, refused
    let stopped = Instant::now();
    run.stop().await;
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "stopped in {:?}",
        stopped.elapsed()
    );
    cut.abort();
    db.drop().await;
}

/// Reads the snapshot through `source` in batches of `max` until its last
/// batch; returns the rows read and the progress seen after each batch of
/// the snapshot phase (checking that `done` counts the rows read).
async fn read_snapshot_watching(
    source: &mut MysqlCdcSource<ChangeEvent>,
    progress: &syncflow::connector::SourceProgress,
    max: usize,
) -> (u64, Vec<syncflow::connector::SourceStatus>) {
    use syncflow::connector::{Phase, Unit};
    let mut batch = Batch::default();
    let mut read = 0u64;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the snapshot did not end");
        batch.clear();
        let result = source.read(&mut batch, max).await.unwrap();
        read += batch.len() as u64;
        let status = progress.status();
        if status.phase == Phase::Streaming {
            // The batch that ends the snapshot carries where the stream starts.
            assert!(
                matches!(result, Read::Batch(Some(_))),
                "streaming only once the snapshot ended: {result:?}"
            );
            return (read, seen);
        }
        if status.phase == Phase::Snapshot {
            assert_eq!(status.done, read, "rows read, counted per batch");
            assert_eq!(status.unit, Unit::Rows);
            seen.push(status);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_snapshot_reports_rows_read_of_the_estimate_then_streaming() {
    use syncflow::connector::Phase;
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_progress").await;
    // Above the size under which tables are counted exactly: the server's
    // estimate stands until the table is read.
    const BIG: u64 = 120_000;
    db.sql("CREATE TABLE big (id INT PRIMARY KEY, qty INT)")
        .await;
    db.sql(&format!(
        "INSERT INTO big SELECT seq, seq % 7 FROM seq_1_to_{BIG}"
    ))
    .await;
    let mut config = db.config();
    config.snapshot_chunk = 5000;
    let mut source =
        MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
            .await
            .unwrap();
    let progress = source
        .progress()
        .expect("the binlog source reports progress");
    assert_eq!(progress.status().phase, Phase::Starting);
    let (read, seen) = read_snapshot_watching(&mut source, &progress, 7000).await;
    assert_eq!(read, BIG);
    let first = seen.first().expect("statuses during the snapshot");
    assert_eq!(&*first.what, format!("{}.big", db.name), "{first:?}");
    let estimate = first.total.expect("a total while reading `big`");
    assert!(
        estimate.abs_diff(BIG) <= BIG / 2,
        "the server's estimate {estimate} is near {BIG}"
    );
    let end = progress.status();
    assert_eq!(end.phase, Phase::Streaming);
    assert_eq!(
        (end.done, end.total),
        (BIG, Some(BIG)),
        "the total becomes the rows read; the snapshot's figures stay once streaming"
    );
    // Streaming on: the figures stay those of the snapshot.
    db.sql("INSERT INTO big VALUES (0, 0)").await;
    let mut batch = Batch::default();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        batch.clear();
        source.read(&mut batch, 100).await.unwrap();
        if !batch.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the insert was not streamed");
    }
    assert_eq!(progress.status().phase, Phase::Streaming);
    assert_eq!(progress.status().done, BIG);
    source.close().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_tables_are_counted_exactly_in_the_snapshot() {
    use syncflow::connector::Phase;
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_count").await;
    db.sql("CREATE TABLE a_small (id INT PRIMARY KEY)").await;
    db.sql("INSERT INTO a_small VALUES (1), (2), (3)").await;
    db.sql("CREATE TABLE b_small (id INT PRIMARY KEY)").await;
    db.sql("INSERT INTO b_small SELECT seq FROM seq_1_to_2500")
        .await;
    // Rows inserted but not committed count in InnoDB's estimate, not in
    // the snapshot: the estimate is off by 1000.
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(URL).unwrap())
        .prefer_socket(false);
    let mut other = mysql_async::Conn::new(opts).await.unwrap();
    other
        .query_drop(format!("USE `{}`", db.name))
        .await
        .unwrap();
    other.query_drop("BEGIN").await.unwrap();
    other
        .query_drop("INSERT INTO a_small SELECT seq FROM seq_10_to_1009")
        .await
        .unwrap();
    let estimates: Vec<(String, u64)> = db
        .conn
        .query(format!(
            "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' ORDER BY 1",
            db.name
        ))
        .await
        .unwrap();
    let (a_estimate, b_estimate) = (estimates[0].1, estimates[1].1);
    assert!(
        a_estimate > 500,
        "the estimate counts the uncommitted rows: {estimates:?}"
    );
    let mut source =
        MysqlCdcSource::<ChangeEvent>::connect(&db.config(), syncflow::connector::serde_decode)
            .await
            .unwrap();
    let progress = source.progress().unwrap();
    let (read, seen) = read_snapshot_watching(&mut source, &progress, 2).await;
    assert_eq!(read, 2503);
    let first = &seen[0];
    assert_eq!(&*first.what, format!("{}.a_small (table 1 of 2)", db.name));
    assert_eq!(first.done, 2);
    assert_eq!(
        first.total,
        Some(3 + b_estimate),
        "the rows of `a_small` counted (3, not its estimate {a_estimate}), and the estimate of `b_small`"
    );
    let on_b = seen
        .iter()
        .find(|s| s.what.ends_with(".b_small (table 2 of 2)"))
        .expect("statuses while reading `b_small`");
    assert_eq!(on_b.total, Some(2503), "both tables counted: {on_b:?}");
    let end = progress.status();
    assert_eq!(
        (end.phase, end.done, end.total),
        (Phase::Streaming, 2503, Some(2503))
    );
    other.query_drop("ROLLBACK").await.unwrap();
    let _ = other.disconnect().await;
    source.close().await;
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_taking_no_snapshot_reports_streaming() {
    use syncflow::connector::Phase;
    if !require("mariadb") {
        return;
    }
    let db = Db::new("cdc_progress_never").await;
    let mut config = db.config();
    config.snapshot = SnapshotMode::Never;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let status = source.progress().unwrap().status();
    assert_eq!(
        (status.phase, status.done, status.total),
        (Phase::Streaming, 0, None)
    );
    source.close().await;
    db.drop().await;
}

/// A binlog file name the server does not have.
const GONE: &str = "mariadb-bin.999999";

/// Copies the checkpoint of `from` into a new state directory, with its
/// binlog file renamed to one the server does not have (as after purged
/// binlogs, `RESET MASTER`, or a failover to another server).
fn without_its_file(from: &Path) -> (tempfile::TempDir, Value) {
    let mut saved = checkpoint(from);
    saved["file"] = json!(GONE);
    let dir = tempfile::tempdir().unwrap();
    let name = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    std::fs::write(
        dir.path().join(name.file_name().unwrap()),
        serde_json::to_vec(&saved).unwrap(),
    )
    .unwrap();
    (dir, saved)
}

/// The server's binlog files.
async fn binlog_files(db: &mut Db) -> Vec<String> {
    let rows: Vec<mysql_async::Row> = db.conn.query("SHOW BINARY LOGS").await.unwrap();
    rows.iter()
        .map(|r| r.get::<String, _>(0).unwrap())
        .collect()
}

/// The error a run ended with (it must end by itself, within 15 s).
async fn run_error<T>(run: Running<T>) -> String {
    tokio::time::timeout(Duration::from_secs(15), run.task)
        .await
        .expect("the run stops by itself, without retrying for ever")
        .unwrap()
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_whose_binlog_file_is_gone_resumes_by_gtid() {
    use syncflow::connector::ResumeBy;
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_gtid").await;
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)").await;
    db.sql("INSERT INTO t VALUES (1)").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = db.config();
    config.state_dir = Some(dir.path().to_path_buf());
    config.name = Some("gtid".into());

    // Run 1: the snapshot and two changes, checkpointed.
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    run.wait("the snapshot", |s| s.len() == 1).await;
    db.sql("INSERT INTO t VALUES (10)").await;
    db.sql("INSERT INTO t VALUES (11)").await;
    run.wait("two changes", |s| after_ids(s).contains(&11))
        .await;
    run.stop().await;

    // While stopped: a change, and a transaction of two.
    db.sql("INSERT INTO t VALUES (20)").await;
    db.sql("BEGIN").await;
    db.sql("INSERT INTO t VALUES (21)").await;
    db.sql("INSERT INTO t VALUES (22)").await;
    db.sql("COMMIT").await;
    let (_, saved) = without_its_file(dir.path());
    let gtid = saved["gtid"]
        .as_str()
        .expect("the checkpoint has a GTID")
        .to_string();

    // By file and offset, the checkpoint cannot resume: a clear error.
    let (by_position, _) = without_its_file(dir.path());
    let mut c = config.clone();
    c.state_dir = Some(by_position.path().to_path_buf());
    c.resume_by = ResumeBy::Position;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&c, syncflow::connector::serde_decode)
        .await
        .unwrap();
    assert_eq!(&*source.resumed_from().unwrap().file, GONE);
    let run = start(source, 100, false);
    let err = run_error(run).await;
    assert!(
        err.contains(&format!("binlog file `{GONE}`"))
            && err.contains(&format!("GTID position {gtid}"))
            && err.contains("`resume_by` to `auto` or `gtid`"),
        "{err}"
    );

    // auto, then gtid: exactly the changes after the checkpoint, in order,
    // at positions in the server's real files.
    let files = binlog_files(&mut db).await;
    let (by_auto, _) = without_its_file(dir.path());
    let (by_gtid, _) = without_its_file(dir.path());
    let mut expected = vec![20, 21, 22];
    for (state, resume_by, sentinel) in [
        (&by_auto, ResumeBy::Auto, 99),
        (&by_gtid, ResumeBy::Gtid, 98),
    ] {
        let mut c = config.clone();
        c.state_dir = Some(state.path().to_path_buf());
        c.resume_by = resume_by;
        let source = MysqlCdcSource::<ChangeEvent>::connect(&c, syncflow::connector::serde_decode)
            .await
            .unwrap();
        let run = start(source, 100, false);
        db.sql(&format!("INSERT INTO t VALUES ({sentinel})")).await;
        expected.push(sentinel);
        let seen = run
            .wait("the sentinel", |s| after_ids(s).contains(&sentinel))
            .await;
        run.stop().await;
        assert_eq!(after_ids(&seen), expected, "resume_by {resume_by:?}");
        for e in &seen {
            let file = e.source.pos.rsplit_once(':').unwrap().0;
            assert!(
                files.iter().any(|f| f == file),
                "{} in {files:?}",
                e.source.pos
            );
        }
        let after = checkpoint(state.path());
        assert!(
            files.iter().any(|f| after["file"] == json!(f)),
            "the checkpoint names a real file again: {after}"
        );
    }

    // The checkpoint the GTID resume wrote is a right file and offset too.
    let mut c = config.clone();
    c.state_dir = Some(by_auto.path().to_path_buf());
    c.resume_by = ResumeBy::Position;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&c, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    db.sql("INSERT INTO t VALUES (97)").await;
    let seen = run
        .wait("the sentinel", |s| after_ids(s).contains(&97))
        .await;
    run.stop().await;
    assert_eq!(after_ids(&seen), vec![98, 97]);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cut_by_a_checkpoint_resumes_by_gtid_without_repeating_rows() {
    use syncflow::connector::ResumeBy;
    if !require("mariadb") {
        return;
    }
    let (mut db, dir, config, first) = cut_a_transaction("gtid_tx").await;

    // Run 2, by GTID from a checkpoint whose file is gone: two more rows
    // of the transaction (none of the six again), then the input ends.
    let (state, _) = without_its_file(dir.path());
    let mut c = config.clone();
    c.state_dir = Some(state.path().to_path_buf());
    c.resume_by = ResumeBy::Gtid;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&c, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(
        StopAfter {
            inner: source,
            rows: 2,
        },
        3,
        false,
    );
    tokio::time::timeout(Duration::from_secs(15), run.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(after_ids(&run.seen.lock().unwrap()), vec![16, 17]);
    // Still inside the transaction: its real start, eight rows delivered.
    let second = checkpoint(state.path());
    assert_eq!(
        (
            &second["file"],
            &second["pos"],
            &second["skip_rows"],
            &second["gtid"]
        ),
        (&first["file"], &first["pos"], &json!(8), &first["gtid"]),
        "{second}"
    );

    // Run 3, by file and offset from that checkpoint: the rest, once.
    c.resume_by = ResumeBy::Position;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&c, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 3, false);
    db.sql("INSERT INTO t VALUES (99, 99)").await;
    let third = run
        .wait("the sentinel", |s| after_ids(s).contains(&99))
        .await;
    run.stop().await;
    assert_eq!(after_ids(&third), vec![18, 19, 1, 30, 99]);
    assert_eq!(third[2].op, CdcOp::Update);
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gtid_the_server_never_logged_stops_the_source_with_what_to_do() {
    if !require("mariadb") {
        return;
    }
    let mut db = Db::new("cdc_gtid_bad").await;
    db.sql("CREATE TABLE t (id INT PRIMARY KEY)").await;
    let server: String = db
        .conn
        .query_first("SELECT @@gtid_binlog_pos")
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Far past the server's own GTIDs, in a file it does not have.
    let (domain, rest) = server.split_once('-').unwrap();
    let ahead = format!("{domain}-{}-999999999", rest.split('-').next().unwrap());
    let path = dir.path().join("mysql-cdc.ahead.checkpoint.json");
    std::fs::write(
        &path,
        json!({"version": 1, "server": "x", "file": GONE, "pos": 4, "skip_rows": 0, "gtid": ahead})
            .to_string(),
    )
    .unwrap();
    let mut config = db.config();
    config.state_dir = Some(dir.path().to_path_buf());
    config.name = Some("ahead".into());
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap();
    let run = start(source, 100, false);
    let err = run_error(run).await;
    assert!(
        err.contains(&format!("after GTID position {ahead}"))
            && err.contains("@@gtid_binlog_pos is ")
            && err.contains(&path.display().to_string())
            && err.contains("start again with a snapshot"),
        "{err}"
    );

    // Forced GTID resume with a checkpoint that has no GTID: refused at connect.
    std::fs::write(
        &path,
        json!({"version": 1, "server": "x", "file": GONE, "pos": 4, "skip_rows": 0}).to_string(),
    )
    .unwrap();
    config.resume_by = syncflow::connector::ResumeBy::Gtid;
    let err = MysqlCdcSource::<ChangeEvent>::connect(&config, syncflow::connector::serde_decode)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("holds no MariaDB GTID") && err.contains(&path.display().to_string()),
        "{err}"
    );
    db.drop().await;
}
