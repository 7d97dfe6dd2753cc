//! The MySQL / MariaDB sink against a real server (127.0.0.1:3306, user
//! `root` without password, database `test`): round trip with type
//! conversions, replays, change events, rejected rows, reconnects.

mod sql_common;

use std::time::Duration;

use mysql_async::prelude::Queryable;
use serde_json::{Value, json};
use sql_common::{Rows, dead_letters, input_file};
use syncflow::connector::mysql_sink::{MysqlSink, MysqlSinkConfig};
use syncflow::connector::sql::{NoRowEvents, RetryConfig};
use syncflow::prelude::*;
use syncflow_tests::proxy::Proxy;
use syncflow_tests::services::{require, unique};

const URL: &str = "mysql://root@127.0.0.1:3306/test";

/// Passes a row through.
#[sync_function]
fn pass_row(row: Value) -> Value {
    row
}

async fn db() -> mysql_async::Conn {
    let mut conn = mysql_async::Conn::new(mysql_async::Opts::from_url(URL).unwrap())
        .await
        .expect("connect to MariaDB");
    conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
    conn
}

/// Every row of a table, its columns joined by `|` (NULL as `-`), by `id`.
async fn table_rows(conn: &mut mysql_async::Conn, table: &str, columns: &str) -> Vec<String> {
    let cols: Vec<String> = columns
        .split(',')
        .map(|c| format!("IFNULL(CAST({} AS CHAR), '-')", c.trim()))
        .collect();
    conn.query(format!(
        "SELECT CONCAT_WS('|', {}) FROM {table} ORDER BY id",
        cols.join(", ")
    ))
    .await
    .unwrap()
}

async fn run_file(input: &std::path::Path, config: &MysqlSinkConfig) -> RunSummary {
    Runtime::new(flow!(name = "mysql_rows", pass_row))
        .source(JsonLinesSource::open(input).unwrap())
        .sink(MysqlSink::connect(config).await.unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap()
}

#[tokio::test]
async fn sink_round_trip_converts_types_and_replays_leave_the_same_rows() {
    if !require("mariadb") {
        return;
    }
    let mut conn = db().await;
    let table = unique("sf_my_types");
    conn.query_drop(format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, b BIGINT, n DECIMAL(20,6), s TEXT, f BOOLEAN, \
         ts DATETIME(3), tz TIMESTAMP NULL, j JSON, d DATE, u BIGINT UNSIGNED, x DOUBLE)"
    ))
    .await
    .unwrap();
    let rows = vec![
        json!({"id": 1, "b": 9007199254740993u64, "n": "12345678901234.123456", "s": "a \"quoted\" é",
               "f": true, "ts": "2024-01-02T03:04:05.123", "tz": "2024-01-02T03:04:05+02:00",
               "j": {"x": [1, 2]}, "d": "2024-02-29", "u": 18446744073709551615u64, "x": 1.5}),
        json!({"id": 2, "b": "-5", "n": 0.25, "s": 42, "f": false, "ts": "2024-12-31 23:59:59",
               "tz": "2024-06-01T00:00:00Z", "j": "just a string", "d": "1999-01-01", "u": 0, "x": "2e3"}),
        json!({"id": 3}),
    ];
    let columns = "id, b, n, s, f, ts, tz, j, d, u, x";
    let expected = vec![
        "1|9007199254740993|12345678901234.123456|a \"quoted\" é|1|2024-01-02 03:04:05.123|2024-01-02 01:04:05|{\"x\":[1,2]}|2024-02-29|18446744073709551615|1.5",
        "2|-5|0.250000|42|0|2024-12-31 23:59:59.000|2024-06-01 00:00:00|\"just a string\"|1999-01-01|0|2000",
        "3|-|-|-|-|-|-|-|-|-|-",
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(&dir, &rows);
    let config = MysqlSinkConfig::new(URL, table.as_str());
    for run in 0..2 {
        let summary = run_file(&input, &config).await;
        assert_eq!(summary.output, 3);
        assert_eq!(
            table_rows(&mut conn, &table, columns).await,
            expected,
            "run {run}"
        );
    }
    // A partial row updates only its columns.
    let input = input_file(&dir, &[json!({"id": 2, "s": "changed", "j": [1]})]);
    run_file(&input, &config).await;
    assert_eq!(
        table_rows(&mut conn, &table, columns).await[1],
        "2|-5|0.250000|changed|0|2024-12-31 23:59:59.000|2024-06-01 00:00:00|[1]|1999-01-01|0|2000"
    );
    conn.query_drop(format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

fn event(op: &str, before: Value, after: Value) -> Value {
    json!({"op": op, "before": before, "after": after,
           "source": {"connector": "postgres", "db": "shop", "table": "orders", "pos": "0/1", "ts_ms": 1},
           "ts_ms": 2})
}

#[tokio::test]
async fn sink_applies_change_events_in_order_within_a_batch() {
    if !require("mariadb") {
        return;
    }
    let mut conn = db().await;
    let table = unique("sf_my_events");
    conn.query_drop(format!(
        "CREATE TABLE {table} (id INT, region VARCHAR(8), qty INT NOT NULL DEFAULT 0, note TEXT, PRIMARY KEY (id, region))"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "INSERT INTO {table} VALUES (10, 'eu', 1, 'old'), (11, 'eu', 1, 'keep'), (99, 'us', 9, 'gone')"
    ))
    .await
    .unwrap();
    let events = vec![
        event(
            "r",
            Value::Null,
            json!({"id": 1, "region": "eu", "qty": 1, "note": "a"}),
        ),
        event("c", Value::Null, json!({"id": 2, "region": "eu", "qty": 2})),
        event(
            "u",
            Value::Null,
            json!({"id": 1, "region": "eu", "qty": 5, "note": "a"}),
        ),
        event("d", json!({"id": 2, "region": "eu"}), Value::Null),
        event("d", json!({"id": 10, "region": "eu"}), Value::Null),
        event(
            "c",
            Value::Null,
            json!({"id": 10, "region": "eu", "note": "new"}),
        ),
        event(
            "u",
            json!({"id": 11, "region": "eu"}),
            json!({"id": 12, "region": "eu", "qty": 7, "note": "keep"}),
        ),
        json!({"id": 3, "region": "us", "qty": 3}),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = input_file(&dir, &events);
    let columns = "id, region, qty, note";
    for _ in 0..2 {
        run_file(&input, &MysqlSinkConfig::new(URL, table.as_str())).await;
        assert_eq!(
            table_rows(&mut conn, &table, columns).await,
            vec![
                "1|eu|5|a",
                "3|us|3|-",
                "10|eu|0|new",
                "12|eu|7|keep",
                "99|us|9|gone"
            ]
        );
    }
    // A truncate, applied: everything before it in the batch is void.
    let truncate = json!({"op": "t", "source": {"connector": "postgres", "db": "x", "table": "y", "pos": "0/1", "ts_ms": 1}, "ts_ms": 1});
    let input = input_file(
        &dir,
        &[
            json!({"id": 50, "region": "eu"}),
            truncate,
            json!({"id": 51, "region": "eu", "qty": 1}),
        ],
    );
    run_file(
        &input,
        &MysqlSinkConfig::new(URL, table.as_str()).on_truncate(NoRowEvents::Apply),
    )
    .await;
    assert_eq!(
        table_rows(&mut conn, &table, columns).await,
        vec!["51|eu|1|-"]
    );
    conn.query_drop(format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sink_dead_letters_rows_it_cannot_write_and_the_flow_goes_on() {
    if !require("mariadb") {
        return;
    }
    let mut conn = db().await;
    let table = unique("sf_my_bad");
    conn.query_drop(format!(
        "CREATE TABLE {table} (id INT PRIMARY KEY, qty INT NOT NULL, note VARCHAR(3))"
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
            json!({"id": 5, "qty": 5, "note": "too long"}),
            json!({"id": 6, "qty": 6}),
        ],
    );
    let summary = run_file(
        &input,
        &MysqlSinkConfig::new(URL, table.as_str()).dead_letter(&dead),
    )
    .await;
    assert_eq!(summary.output, 6);
    assert_eq!(
        table_rows(&mut conn, &table, "id, qty, note").await,
        vec!["1|1|-", "6|6|-"]
    );
    let mut letters: Vec<(u64, String)> = dead_letters(&dead)
        .into_iter()
        .map(|l| (l.position, l.error))
        .collect();
    letters.sort();
    assert_eq!(letters.len(), 4, "{letters:#?}");
    assert_eq!(
        letters[0].1,
        format!(
            "field `colour` is not a column of table `test.{table}` (columns: id, qty, note); remove it from the message, or set the sink's `unknown_columns: ignore`"
        )
    );
    assert_eq!(
        letters[1].1,
        format!(
            "column `qty` (int(11)) of table `test.{table}` cannot take `\"three\"`: expected an integer"
        )
    );
    assert_eq!(
        letters[2].1,
        format!("the row has no value for key column `id` of table `test.{table}`")
    );
    assert!(
        letters[3]
            .1
            .contains("refused the row: Data too long for column 'note'"),
        "{}",
        letters[3].1
    );
    conn.query_drop(format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn sink_reconnects_after_a_cut_and_loses_nothing() {
    if !require("mariadb") {
        return;
    }
    let mut conn = db().await;
    let table = unique("sf_my_cut");
    conn.query_drop(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, v TEXT)"
    ))
    .await
    .unwrap();
    let proxy = Proxy::start("127.0.0.1:3306").await.unwrap();
    let retry = RetryConfig {
        initial_ms: 20,
        max_ms: 200,
        max_attempts: 0,
    };
    let config = MysqlSinkConfig::new(
        format!("mysql://root@{}/test", proxy.addr()),
        table.as_str(),
    )
    .retry(retry);
    let rows = Rows {
        next: 1,
        to: 600,
        per_batch: 20,
        pause: Duration::from_millis(20),
    };
    let run = tokio::spawn(
        Runtime::new(flow!(name = "mysql_cut", pass_row))
            .source(rows)
            .sink(MysqlSink::connect(&config).await.unwrap())
            .batch_size(20)
            .handle_signals(false)
            .run(),
    );
    let count = format!("SELECT COUNT(*) FROM {table}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conn
        .query_first::<i64, _>(&count)
        .await
        .unwrap()
        .unwrap_or(0)
        < 60
    {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for the first rows"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    proxy.cut(Duration::from_millis(300)).await;
    let summary = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the flow finishes")
        .unwrap()
        .unwrap();
    assert_eq!(summary.output, 600);
    let (n, sum): (i64, i64) = conn
        .query_first(format!(
            "SELECT COUNT(*), CAST(SUM(id) AS SIGNED) FROM {table}"
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((n, sum), (600, 600 * 601 / 2));
    conn.query_drop(format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
