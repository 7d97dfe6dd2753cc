//! The PostgreSQL connectors against a real server (127.0.0.1:5432, user
//! `postgres`, database `test`, `wal_level = logical`): the sink (round trip,
//! replays, change events, type conversions, rejected rows, reconnects) and
//! the pgoutput CDC source (snapshot and streaming with exact envelopes,
//! resuming from the confirmed position, slot cleanup).

mod sql_common;

use std::time::Duration;

use serde_json::{Value, json};
use sql_common::{Collect, NeverConfirm, Rows, dead_letters, input_file, wait_until};
use syncflow::cdc::{CdcOp, ChangeEvent};
use syncflow::connector::postgres::{
    PostgresCdcSource, PostgresCdcSourceConfig, PostgresSink, PostgresSinkConfig, SnapshotMode,
};
use syncflow::connector::sql::{InputFormat, RetryConfig};
use syncflow::prelude::*;
use syncflow_tests::proxy::Proxy;
use syncflow_tests::services::{require, unique};

const URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Passes a row through.
#[sync_function]
fn pass_row(row: Value) -> Value {
    row
}

/// Passes a change event through.
#[sync_function]
fn pass_event(event: ChangeEvent) -> ChangeEvent {
    event
}

async fn pg() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(URL, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    client
}

/// Every row of a table as JSON text (columns as PostgreSQL prints them),
/// ordered by `id`.
async fn table_rows(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    client
        .query(
            &format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

const TYPED_TABLE: &str = "(id int PRIMARY KEY, b bigint, n numeric(20,6), s text, f bool, \
     ts timestamp, tz timestamptz, j json, jb jsonb, d date)";

fn typed_rows() -> Vec<Value> {
    vec![
        json!({"id": 1, "b": 9007199254740993u64, "n": 1234.5678, "s": "a \"quoted\" é",
               "f": true, "ts": "2024-01-02T03:04:05.123", "tz": "2024-01-02T03:04:05+02:00",
               "j": {"x": [1, 2]}, "jb": "just a string", "d": "2024-02-29"}),
        json!({"id": 2, "b": -5, "n": "0.000001", "s": 42, "f": false, "ts": "2024-12-31 23:59:59",
               "tz": "2024-06-01T00:00:00Z", "j": null, "jb": {"a": null}, "d": "1999-01-01"}),
        json!({"id": 3}),
    ]
}

const TYPED_EXPECTED: [&str; 3] = [
    r#"{"id":1,"b":9007199254740993,"n":1234.567800,"s":"a \"quoted\" é","f":true,"ts":"2024-01-02T03:04:05.123","tz":"2024-01-02T01:04:05+00:00","j":{"x":[1,2]},"jb":"just a string","d":"2024-02-29"}"#,
    r#"{"id":2,"b":-5,"n":0.000001,"s":"42","f":false,"ts":"2024-12-31T23:59:59","tz":"2024-06-01T00:00:00+00:00","j":null,"jb":{"a": null},"d":"1999-01-01"}"#,
    r#"{"id":3,"b":null,"n":null,"s":null,"f":null,"ts":null,"tz":null,"j":null,"jb":null,"d":null}"#,
];

#[tokio::test]
async fn sink_round_trip_converts_types_and_replays_leave_the_same_rows() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_types");
    client
        .batch_execute(&format!("CREATE TABLE {table} {TYPED_TABLE}"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(&dir, &typed_rows());
    let config = PostgresSinkConfig::new(URL, table.as_str());
    for run in 0..2 {
        // The same input twice: the second run is a replay.
        let sink = PostgresSink::connect(&config).await.unwrap();
        assert_eq!(sink.key_columns(), vec!["id"]);
        let summary = Runtime::new(flow!(name = "pg_types", pass_row))
            .source(JsonLinesSource::open(&input).unwrap())
            .sink(sink)
            .handle_signals(false)
            .run()
            .await
            .unwrap();
        assert_eq!((summary.input, summary.output), (3, 3), "run {run}");
        assert_eq!(
            table_rows(&client, &table).await,
            TYPED_EXPECTED,
            "run {run}"
        );
    }
    // A partial row updates only its columns.
    let input = input_file(&dir, &[json!({"id": 2, "s": "changed", "jb": [1]})]);
    Runtime::new(flow!(name = "pg_types", pass_row))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(PostgresSink::connect(&config).await.unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    let rows = table_rows(&client, &table).await;
    assert_eq!(
        rows[1],
        r#"{"id":2,"b":-5,"n":0.000001,"s":"changed","f":false,"ts":"2024-12-31T23:59:59","tz":"2024-06-01T00:00:00+00:00","j":null,"jb":[1],"d":"1999-01-01"}"#
    );
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

fn event(op: &str, before: Value, after: Value) -> Value {
    json!({"op": op, "before": before, "after": after,
           "source": {"connector": "mysql", "db": "shop", "table": "orders", "pos": "f:1", "ts_ms": 1},
           "ts_ms": 2})
}

#[tokio::test]
async fn sink_applies_change_events_in_order_within_a_batch() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_cdc_sink");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, qty int NOT NULL DEFAULT 0, note text);
             INSERT INTO {table} VALUES (10, 1, 'old'), (11, 1, 'keep')"
        ))
        .await
        .unwrap();
    let events = vec![
        event("r", Value::Null, json!({"id": 1, "qty": 1, "note": "a"})),
        event("c", Value::Null, json!({"id": 2, "qty": 2, "note": "b"})),
        event(
            "u",
            json!({"id": 1, "qty": 1, "note": "a"}),
            json!({"id": 1, "qty": 5, "note": "a"}),
        ),
        event("d", json!({"id": 2}), Value::Null),
        // Deleted, then inserted again with fewer columns: defaults come back.
        event("d", json!({"id": 10}), Value::Null),
        event("c", Value::Null, json!({"id": 10, "note": "new"})),
        // An update that changes the key.
        event(
            "u",
            json!({"id": 11}),
            json!({"id": 12, "qty": 7, "note": "keep"}),
        ),
        // A truncate is ignored by default.
        json!({"op": "t", "source": {"connector": "postgres", "db": "x", "table": "y", "pos": "0/1", "ts_ms": 1}, "ts_ms": 1}),
        // A plain row next to events.
        json!({"id": 3, "qty": 3}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(&dir, &events);
    for _ in 0..2 {
        Runtime::new(flow!(name = "pg_events", pass_row))
            .source(JsonLinesSource::open(&input).unwrap())
            .sink(
                PostgresSink::connect(&PostgresSinkConfig::new(URL, table.as_str()))
                    .await
                    .unwrap(),
            )
            .handle_signals(false)
            .run()
            .await
            .unwrap();
        assert_eq!(
            table_rows(&client, &table).await,
            vec![
                r#"{"id":1,"qty":5,"note":"a"}"#,
                r#"{"id":3,"qty":3,"note":null}"#,
                r#"{"id":10,"qty":0,"note":"new"}"#,
                r#"{"id":12,"qty":7,"note":"keep"}"#,
            ]
        );
    }
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sink_dead_letters_rows_it_cannot_write_and_the_flow_goes_on() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_bad");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, qty int NOT NULL, note text)"
        ))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let input = input_file(
        &dir,
        &[
            json!({"id": 1, "qty": 1}),
            json!({"id": 2, "qty": 2, "colour": "red"}),
            json!({"id": 3, "qty": "three"}),
            json!({"qty": 4}),
            json!({"id": 5, "note": "no qty"}),
            json!({"id": 6, "qty": 6}),
        ],
    );
    let sink =
        PostgresSink::connect(&PostgresSinkConfig::new(URL, table.as_str()).dead_letter(&dead))
            .await
            .unwrap();
    let summary = Runtime::new(flow!(name = "pg_bad", pass_row))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(sink)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(summary.output, 6);
    assert_eq!(
        table_rows(&client, &table).await,
        vec![
            r#"{"id":1,"qty":1,"note":null}"#,
            r#"{"id":6,"qty":6,"note":null}"#
        ]
    );
    let letters = dead_letters(&dead);
    let mut found: Vec<(u64, String, String)> = letters
        .iter()
        .map(|l| (l.position, l.error.clone(), l.input.clone()))
        .collect();
    found.sort();
    assert_eq!(found.len(), 4, "{found:#?}");
    assert_eq!(
        found[0].1,
        format!(
            "field `colour` is not a column of table `public.{table}` (columns: id, qty, note); remove it from the message, or set the sink's `unknown_columns: ignore`"
        )
    );
    assert_eq!(found[0].2, r#"{"colour":"red","id":2,"qty":2}"#);
    assert!(
        found[1].1.contains(
            "refused the row: invalid input syntax for type integer: \"three\" (SQLSTATE 22P02)"
        ),
        "{}",
        found[1].1
    );
    assert_eq!(
        found[2].1,
        format!("the row has no value for key column `id` of table `public.{table}`")
    );
    assert!(
        found[3].1.contains("null value in column \"qty\""),
        "{}",
        found[3].1
    );
    assert!(letters.iter().all(|l| l.stage == "postgres sink"));
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sink_reconnects_after_a_cut_and_loses_nothing() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_cut");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
    let proxy = Proxy::start("127.0.0.1:5432").await.unwrap();
    let url = format!("postgres://postgres@{}/test", proxy.addr());
    let retry = RetryConfig {
        initial_ms: 20,
        max_ms: 200,
        max_attempts: 0,
    };
    let sink = PostgresSink::connect(&PostgresSinkConfig::new(url, table.as_str()).retry(retry))
        .await
        .unwrap();
    let rows = Rows {
        next: 1,
        to: 600,
        per_batch: 20,
        pause: Duration::from_millis(20),
    };
    let run = tokio::spawn(
        Runtime::new(flow!(name = "pg_cut", pass_row))
            .source(rows)
            .sink(sink)
            .batch_size(20)
            .handle_signals(false)
            .run(),
    );
    let count = format!("SELECT count(*) FROM {table}");
    wait_until(10, "the first rows", || async {
        client
            .query_one(&count, &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
            >= 60
    })
    .await;
    proxy.cut(Duration::from_millis(300)).await;
    let summary = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the flow finishes")
        .unwrap()
        .unwrap();
    assert_eq!(summary.output, 600);
    let (n, sum): (i64, i64) = {
        let row = client
            .query_one(
                &format!("SELECT count(*), sum(id)::bigint FROM {table}"),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((n, sum), (600, 600 * 601 / 2));
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

// ---- CDC source ----

/// Events whose `after` must have a numeric `qty`.
#[derive(serde::Deserialize, serde::Serialize, Clone, Debug)]
struct Strict {
    after: StrictRow,
}
#[derive(serde::Deserialize, serde::Serialize, Clone, Debug)]
struct StrictRow {
    id: i64,
    qty: i64,
}
#[sync_function]
fn pass_strict(e: Strict) -> Strict {
    e
}

struct Cdc {
    config: PostgresCdcSourceConfig,
}

impl Cdc {
    fn new(tables: &[&str]) -> Cdc {
        let config = PostgresCdcSourceConfig::new(URL, tables.iter().copied())
            .slot(unique("sf_slot"))
            .publication(unique("sf_pub"))
            .poll_interval(Duration::from_millis(50));
        Cdc { config }
    }

    async fn source(&self) -> PostgresCdcSource<ChangeEvent> {
        PostgresCdcSource::connect(&self.config).await.unwrap()
    }

    /// Starts a run into `sink`; returns its shutdown handle and task.
    async fn start<K: Sink<ChangeEvent>>(
        &self,
        sink: K,
    ) -> (
        Shutdown,
        tokio::task::JoinHandle<Result<RunSummary, RunError>>,
    ) {
        let runtime = Runtime::new(flow!(name = "pg_cdc", pass_event))
            .source(self.source().await)
            .sink(sink)
            .batch_size(100)
            .handle_signals(false);
        let shutdown = runtime.shutdown_handle();
        (shutdown, tokio::spawn(runtime.run()))
    }

    async fn cleanup(&self) {
        assert!(self.config.drop_slot().await.unwrap());
        assert!(!self.config.drop_slot().await.unwrap());
        assert!(self.config.drop_publication().await.unwrap());
        let client = pg().await;
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "the slot is gone");
    }
}

/// An event without its times and position: (op, before, after, table, snapshot).
fn shape(e: &ChangeEvent) -> (CdcOp, Option<Value>, Option<Value>, String, bool) {
    assert_eq!(e.source.connector, "postgres");
    assert_eq!(e.source.db, "test");
    assert_eq!(e.source.schema.as_deref(), Some("public"));
    assert!(e.source.pos.contains('/'), "an LSN: {}", e.source.pos);
    assert!(e.source.ts_ms > 1_600_000_000_000 && e.ts_ms >= e.source.ts_ms - 60_000);
    (
        e.op,
        e.before.clone().map(Value::Object),
        e.after.clone().map(Value::Object),
        e.source.table.clone(),
        e.source.snapshot,
    )
}

async fn stop(
    shutdown: Shutdown,
    run: tokio::task::JoinHandle<Result<RunSummary, RunError>>,
) -> RunSummary {
    shutdown.shutdown();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run stops promptly")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn cdc_snapshot_then_changes_with_exact_envelopes() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_src");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, qty int, price numeric(10,2), at timestamptz, tags jsonb, ok bool);
             INSERT INTO {table} VALUES (1, 10, 1.50, '2024-01-02 03:04:05+00', '{{\"a\":1}}', true), (2, 20, NULL, NULL, NULL, NULL)"
        ))
        .await
        .unwrap();
    let cdc = Cdc::new(&[&table]);
    let events = Collect::new();
    let (shutdown, run) = cdc.start(events.clone()).await;
    wait_until(10, "the snapshot", || async { events.len() >= 2 }).await;
    client
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES (3, 30, 9.99, '2024-06-01 12:00:00.5+02', '[1, 2]', false);
             UPDATE {table} SET qty = 11 WHERE id = 1;
             UPDATE {table} SET id = 4 WHERE id = 2;
             DELETE FROM {table} WHERE id = 3;
             BEGIN; ALTER TABLE {table} REPLICA IDENTITY FULL; COMMIT;
             UPDATE {table} SET qty = 12 WHERE id = 1;
             TRUNCATE {table};"
        ))
        .await
        .unwrap();
    wait_until(10, "the changes", || async { events.len() >= 8 }).await;
    stop(shutdown, run).await;
    let got: Vec<_> = events.take().iter().map(shape).collect();
    let row1 = json!({"id": 1, "qty": 10, "price": "1.50", "at": "2024-01-02T03:04:05Z", "tags": {"a": 1}, "ok": true});
    let row1_11 = json!({"id": 1, "qty": 11, "price": "1.50", "at": "2024-01-02T03:04:05Z", "tags": {"a": 1}, "ok": true});
    let row1_12 = json!({"id": 1, "qty": 12, "price": "1.50", "at": "2024-01-02T03:04:05Z", "tags": {"a": 1}, "ok": true});
    let expected = vec![
        (
            CdcOp::Snapshot,
            None,
            Some(row1.clone()),
            table.clone(),
            true,
        ),
        (
            CdcOp::Snapshot,
            None,
            Some(json!({"id": 2, "qty": 20, "price": null, "at": null, "tags": null, "ok": null})),
            table.clone(),
            true,
        ),
        (
            CdcOp::Insert,
            None,
            Some(
                json!({"id": 3, "qty": 30, "price": "9.99", "at": "2024-06-01T10:00:00.5Z", "tags": [1, 2], "ok": false}),
            ),
            table.clone(),
            false,
        ),
        // Default replica identity: no `before` unless the key changed.
        (
            CdcOp::Update,
            None,
            Some(row1_11.clone()),
            table.clone(),
            false,
        ),
        (
            CdcOp::Update,
            Some(json!({"id": 2})),
            Some(json!({"id": 4, "qty": 20, "price": null, "at": null, "tags": null, "ok": null})),
            table.clone(),
            false,
        ),
        (
            CdcOp::Delete,
            Some(json!({"id": 3})),
            None,
            table.clone(),
            false,
        ),
        // Replica identity full: the whole old row.
        (
            CdcOp::Update,
            Some(row1_11),
            Some(row1_12),
            table.clone(),
            false,
        ),
        (CdcOp::Truncate, None, None, table.clone(), false),
    ];
    assert_eq!(got, expected);
    cdc.cleanup().await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn cdc_resumes_from_the_confirmed_position_and_redelivers_what_was_not_acknowledged() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_resume");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, v text); INSERT INTO {table} VALUES (1, 'a')"
        ))
        .await
        .unwrap();
    let cdc = Cdc::new(&[&table]);
    let ids = |events: Vec<ChangeEvent>| -> Vec<(CdcOp, i64)> {
        events
            .iter()
            .map(|e| {
                let row = e.after.as_ref().or(e.before.as_ref()).unwrap();
                (e.op, row["id"].as_i64().unwrap())
            })
            .collect()
    };
    let insert = |id: i64| format!("INSERT INTO {table} VALUES ({id}, 'x')");

    // Run 1: the snapshot and one change, then a graceful stop.
    let events = Collect::new();
    let (shutdown, run) = cdc.start(events.clone()).await;
    wait_until(10, "the snapshot", || async { events.len() >= 1 }).await;
    client.batch_execute(&insert(2)).await.unwrap();
    wait_until(10, "run 1", || async { events.len() >= 2 }).await;
    stop(shutdown, run).await;
    assert_eq!(
        ids(events.take()),
        vec![(CdcOp::Snapshot, 1), (CdcOp::Insert, 2)]
    );

    // Changes while stopped come in the next run; nothing read before does.
    client.batch_execute(&insert(3)).await.unwrap();
    client
        .batch_execute(&format!("UPDATE {table} SET v = 'b' WHERE id = 1"))
        .await
        .unwrap();
    let (shutdown, run) = cdc.start(events.clone()).await;
    client.batch_execute(&insert(4)).await.unwrap();
    wait_until(10, "run 2", || async { events.len() >= 3 }).await;
    stop(shutdown, run).await;
    assert_eq!(
        ids(events.take()),
        vec![(CdcOp::Insert, 3), (CdcOp::Update, 1), (CdcOp::Insert, 4)]
    );

    // Run 3: a sink that fails, so nothing is acknowledged.
    client.batch_execute(&insert(5)).await.unwrap();
    let seen = Collect::new();
    let (_, run) = cdc
        .start(NeverConfirm {
            seen: seen.clone(),
            fail: true,
        })
        .await;
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "the failing sink stops the run");
    assert_eq!(ids(seen.take()), vec![(CdcOp::Insert, 5)]);

    // Run 4: a sink that never confirms, and the runtime is dropped.
    let (_, run) = cdc
        .start(NeverConfirm {
            seen: seen.clone(),
            fail: false,
        })
        .await;
    wait_until(10, "run 4", || async { seen.len() >= 1 }).await;
    run.abort();
    let _ = run.await;
    assert_eq!(ids(seen.take()), vec![(CdcOp::Insert, 5)]);

    // Run 5 gets the unacknowledged change again, then new ones.
    let (shutdown, run) = cdc.start(events.clone()).await;
    client.batch_execute(&insert(6)).await.unwrap();
    wait_until(15, "run 5", || async { events.len() >= 2 }).await;
    stop(shutdown, run).await;
    assert_eq!(
        ids(events.take()),
        vec![(CdcOp::Insert, 5), (CdcOp::Insert, 6)]
    );

    cdc.cleanup().await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn cdc_into_the_sink_replicates_a_table() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let (src, dst) = (unique("sf_pg_repl_src"), unique("sf_pg_repl_dst"));
    client
        .batch_execute(&format!(
            "CREATE TABLE {src} {TYPED_TABLE}; CREATE TABLE {dst} {TYPED_TABLE};
             INSERT INTO {src} VALUES (1, 5, 1.25, 'x', true, '2024-01-01 00:00:00', '2024-01-01 00:00:00+00', '{{\"a\":[1]}}', '\"s\"', '2024-01-01')"
        ))
        .await
        .unwrap();
    let cdc = Cdc::new(&[&src]);
    let config = cdc.config.clone();
    let sink =
        PostgresSink::connect(&PostgresSinkConfig::new(URL, dst.as_str()).input(InputFormat::Cdc))
            .await
            .unwrap();
    let runtime = Runtime::new(flow!(name = "pg_replicate", pass_event))
        .source(
            PostgresCdcSource::<ChangeEvent>::connect(&config)
                .await
                .unwrap(),
        )
        .sink(sink)
        .batch_size(100)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    client
        .batch_execute(&format!(
            "INSERT INTO {src} VALUES (2, -9007199254740993, 0.000001, 'é\"', false, '2023-05-06 07:08:09.123456', '2023-05-06 07:08:09.5+05:30', '[]', '{{\"k\": {{\"n\": null}}}}', '2000-02-29');
             UPDATE {src} SET s = 'y', n = 2.5 WHERE id = 1;
             INSERT INTO {src} (id) VALUES (3); DELETE FROM {src} WHERE id = 3;
             INSERT INTO {src} (id, s) VALUES (4, 'last')"
        ))
        .await
        .unwrap();
    let (src_q, dst_q) = (src.clone(), dst.clone());
    wait_until(10, "the replica to catch up", || {
        let (client, src, dst) = (&client, &src_q, &dst_q);
        async move {
            let a = table_rows(client, src).await;
            a.len() == 3 && a == table_rows(client, dst).await
        }
    })
    .await;
    stop(shutdown, run).await;
    cdc.cleanup().await;
    client
        .batch_execute(&format!("DROP TABLE {src}; DROP TABLE {dst}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn cdc_source_reconnects_after_a_cut() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_src_cut");
    client
        .batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let proxy = Proxy::start("127.0.0.1:5432").await.unwrap();
    let mut cdc = Cdc::new(&[&table]);
    cdc.config.url = format!("postgres://postgres@{}/test", proxy.addr());
    cdc.config.snapshot = SnapshotMode::Never;
    cdc.config.retry = RetryConfig {
        initial_ms: 20,
        max_ms: 200,
        max_attempts: 0,
    };
    let events = Collect::new();
    let (shutdown, run) = cdc.start(events.clone()).await;
    for id in 1..=50 {
        client
            .batch_execute(&format!("INSERT INTO {table} VALUES ({id})"))
            .await
            .unwrap();
        if id == 20 {
            wait_until(10, "the first changes", || async { events.len() >= 10 }).await;
            proxy.cut(Duration::from_millis(300)).await;
        }
    }
    wait_until(15, "every change", || async { events.len() >= 50 }).await;
    stop(shutdown, run).await;
    let ids: Vec<i64> = events
        .take()
        .iter()
        .map(|e| e.after.as_ref().unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=50).collect::<Vec<_>>());
    cdc.config.url = URL.to_string();
    cdc.cleanup().await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn cdc_undecodable_events_are_dead_lettered_and_the_flow_goes_on() {
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_src_bad");
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, qty int)"
        ))
        .await
        .unwrap();
    let mut cdc = Cdc::new(&[&table]);
    cdc.config.snapshot = SnapshotMode::Never;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let out = Collect::new();
    let runtime = Runtime::new(flow!(name = "pg_strict", pass_strict))
        .source(
            PostgresCdcSource::<Strict>::connect(&cdc.config)
                .await
                .unwrap(),
        )
        .sink(out.clone())
        .dead_letter(&dead)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    client
        .batch_execute(&format!(
            "INSERT INTO {table} VALUES (1, 1); INSERT INTO {table} VALUES (2, NULL); INSERT INTO {table} VALUES (3, 3)"
        ))
        .await
        .unwrap();
    wait_until(10, "the good events", || async { out.len() >= 2 }).await;
    let summary = stop(shutdown, run).await;
    assert_eq!(summary.malformed, 1);
    let letters = dead_letters(&dead);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].stage, "decode");
    assert!(
        letters[0].input.contains(r#""after":{"id":2,"qty":null}"#),
        "{}",
        letters[0].input
    );
    let ids: Vec<i64> = out.take().iter().map(|e| e.after.id).collect();
    assert_eq!(ids, vec![1, 3]);
    cdc.cleanup().await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_snapshot_reports_rows_read_of_rows_expected_then_streaming() {
    use syncflow::connector::{Batch, Phase, Read, Source, Unit};
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let t = unique("sf_pg_progress");
    // `a`: never analyzed (no estimate, `reltuples` -1): counted exactly.
    // `b`: analyzed and above the size counted exactly: its estimate
    // stands until it is read.
    const A: u64 = 3000;
    const B: u64 = 120_000;
    client
        .batch_execute(&format!(
            "CREATE TABLE {t}_a (id int PRIMARY KEY, qty int);
             INSERT INTO {t}_a SELECT i, i % 7 FROM generate_series(1, {A}) i;
             CREATE TABLE {t}_b (id int PRIMARY KEY, qty int);
             INSERT INTO {t}_b SELECT i, i % 7 FROM generate_series(1, {B}) i;
             ANALYZE {t}_b;"
        ))
        .await
        .unwrap();
    let (a, b) = (format!("{t}_a"), format!("{t}_b"));
    let cdc = Cdc::new(&[&a, &b]);
    let mut source = cdc.source().await;
    let progress = source.progress().expect("the CDC source reports progress");
    assert_eq!(
        progress.status().phase,
        Phase::Starting,
        "a snapshot is to come"
    );
    let mut batch = Batch::default();
    let mut read = 0u64;
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot did not end"
        );
        batch.clear();
        let result = source.read(&mut batch, 1000).await.unwrap();
        read += batch.len() as u64;
        let status = progress.status();
        if status.phase == Phase::Streaming {
            assert!(
                matches!(result, Read::Batch(Some(_))),
                "streaming once the snapshot's last batch is read: {result:?}"
            );
            break;
        }
        if status.phase == Phase::Snapshot {
            assert_eq!(status.done, read, "rows read, counted per batch");
            assert_eq!(status.unit, Unit::Rows);
            seen.push(status);
        }
    }
    assert_eq!(read, A + B);
    let b_estimate: f32 = client
        .query_one(
            &format!("SELECT reltuples FROM pg_class WHERE oid = '{b}'::regclass"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let b_estimate = b_estimate as u64;
    assert!(
        b_estimate.abs_diff(B) <= B / 2,
        "ANALYZE estimates {b_estimate}"
    );
    let first = &seen[0];
    assert_eq!(&*first.what, format!("public.{a} (table 1 of 2)"));
    assert_eq!(
        first.total,
        Some(A + b_estimate),
        "`a` counted exactly though never analyzed, `b` estimated"
    );
    let on_b = seen
        .iter()
        .find(|s| s.what.starts_with(&format!("public.{b} ")))
        .expect("statuses while reading `b`");
    assert_eq!(on_b.total, Some(A + b_estimate), "{on_b:?}");
    let end = progress.status();
    assert_eq!(
        (end.phase, end.done, end.total),
        (Phase::Streaming, A + B, Some(A + B)),
        "the total becomes the rows read; the snapshot's figures stay once streaming"
    );
    drop(source);
    cdc.cleanup().await;
    client
        .batch_execute(&format!("DROP TABLE {a}, {b}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn cdc_without_a_snapshot_reports_streaming() {
    use syncflow::connector::{Phase, Source};
    if !require("postgres") {
        return;
    }
    let client = pg().await;
    let table = unique("sf_pg_progress_never");
    client
        .batch_execute(&format!("CREATE TABLE {table} (id int PRIMARY KEY)"))
        .await
        .unwrap();
    let mut cdc = Cdc::new(&[&table]);
    cdc.config.snapshot = SnapshotMode::Never;
    let source = cdc.source().await;
    let status = source.progress().unwrap().status();
    assert_eq!(
        (status.phase, status.done, status.total),
        (Phase::Streaming, 0, None)
    );
    drop(source);
    cdc.cleanup().await;
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
