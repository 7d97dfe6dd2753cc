//! W4: SQL sink throughput, rows per second, in batches of 1000 rows
//! (one `write` + `flush`, so one transaction, per batch).
//!
//! ```text
//! cargo bench -p syncflow --features postgres --bench w4_sql
//! cargo bench -p syncflow --features postgres,mysql --bench w4_sql   # MySQL/MariaDB too
//! ```
//!
//! Needs PostgreSQL at 127.0.0.1:5432 (user `postgres`, database `test`)
//! and, with `mysql`, MariaDB or MySQL at 127.0.0.1:3306 (user `root`,
//! database `test`); a missing server is skipped. Cases, each over 30
//! batches after 3 warm-up batches, median of 5 rounds:
//!
//! - **insert**: rows with new keys (the upsert inserts);
//! - **update**: the same keys again with new values (the upsert updates);
//! - **cdc**: `ChangeEvent` envelopes (`op: u` with `after`) of existing keys;
//! - **collapse**: 1000 messages over 100 keys (collapsed to 100 rows).

use std::time::Instant;

use serde::Serialize;
use syncflow::cdc::{CdcOp, ChangeEvent, ChangeSource};
use syncflow::connector::Sink;

const BATCH: usize = 1000;
const BATCHES: usize = 30;
const ROUNDS: usize = 5;

#[derive(Serialize, Clone)]
struct Row {
    id: i64,
    customer: i32,
    qty: i32,
    price: f64,
    note: String,
    at: String,
}

fn row(id: i64, round: i64) -> Row {
    Row {
        id,
        customer: (id % 977) as i32,
        qty: (id + round) as i32 % 100,
        price: (id % 10_000) as f64 / 100.0,
        note: format!("order {id} of round {round}"),
        at: format!("2024-01-{:02}T10:{:02}:00Z", 1 + id % 28, id % 60),
    }
}

fn event(r: &Row) -> ChangeEvent {
    let serde_json::Value::Object(after) = serde_json::to_value(r).unwrap() else {
        unreachable!()
    };
    ChangeEvent {
        op: CdcOp::Update,
        before: None,
        after: Some(after),
        source: ChangeSource {
            connector: "postgres".into(),
            db: "shop".into(),
            schema: Some("public".into()),
            table: "orders".into(),
            pos: "0/16B3748".into(),
            gtid: None,
            ts_ms: 1_700_000_000_000,
            snapshot: false,
        },
        ts_ms: 1_700_000_000_123,
        ddl: None,
    }
}

/// Rows per second of `batches` write+flush rounds.
async fn measure<S: Sink<T>, T>(sink: &mut S, batches: &[Vec<T>]) -> f64 {
    let start = Instant::now();
    let mut rows = 0;
    for batch in batches {
        sink.write(batch).await.unwrap();
        sink.flush().await.unwrap();
        rows += batch.len();
    }
    rows as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the four cases against a sink; `clear` empties its table.
async fn cases<S: Sink<Row> + Sink<ChangeEvent>>(
    label: &str,
    mut sink: S,
    mut clear: impl AsyncFnMut(),
) {
    let mut table = Vec::new();
    for case in ["insert", "update", "cdc", "collapse"] {
        let mut rates = Vec::new();
        for round in 0..ROUNDS as i64 {
            let key = |b: usize, i: usize| (b * BATCH + i) as i64;
            let rows: Vec<Vec<Row>> = (0..BATCHES + 3)
                .map(|b| (0..BATCH).map(|i| row(key(b, i), round)).collect())
                .collect();
            let rate = match case {
                "insert" => {
                    clear().await;
                    measure(&mut sink, &rows[..3]).await;
                    clear().await;
                    measure(&mut sink, &rows[3..]).await
                }
                "update" => {
                    measure(&mut sink, &rows[..3]).await;
                    measure(&mut sink, &rows[3..]).await
                }
                "cdc" => {
                    let events: Vec<Vec<ChangeEvent>> =
                        rows.iter().map(|b| b.iter().map(event).collect()).collect();
                    measure(&mut sink, &events[..3]).await;
                    measure(&mut sink, &events[3..]).await
                }
                _ => {
                    let few: Vec<Vec<Row>> = (0..BATCHES + 3)
                        .map(|b| {
                            (0..BATCH)
                                .map(|i| row((i % 100) as i64, round + b as i64))
                                .collect()
                        })
                        .collect();
                    measure(&mut sink, &few[..3]).await;
                    measure(&mut sink, &few[3..]).await
                }
            };
            rates.push(rate);
        }
        table.push((case, median(rates)));
    }
    println!("\n{label} (batches of {BATCH} rows, {BATCHES} batches, median of {ROUNDS} rounds)");
    println!("{:<10} {:>12}", "case", "rows/s");
    for (case, rate) in table {
        println!("{case:<10} {rate:>12.0}");
    }
}

#[cfg(feature = "mysql")]
/// Runs SQL with the `mariadb` command-line client; false if it failed.
fn sql(client: &[&str], statement: &str) -> bool {
    std::process::Command::new(client[0])
        .args(&client[1..])
        .arg("-e")
        .arg(statement)
        .output()
        .is_ok_and(|o| o.status.success())
}

const PSQL: &[&str] = &[
    "psql",
    "-h",
    "127.0.0.1",
    "-U",
    "postgres",
    "-d",
    "test",
    "-q",
    "-c",
];
#[cfg(feature = "mysql")]
const MARIADB: &[&str] = &["mariadb", "-h", "127.0.0.1", "-u", "root", "test"];

async fn postgres() {
    use syncflow::connector::postgres::{PostgresSink, PostgresSinkConfig};
    let psql = |s: &str| {
        std::process::Command::new(PSQL[0])
            .args(&PSQL[1..])
            .arg(s)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let table = format!("sf_bench_{}", std::process::id());
    if !psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE UNLOGGED TABLE {table} (id bigint PRIMARY KEY, customer int, qty int, price numeric(12,2), note text, at timestamptz)"
    )) {
        println!("PostgreSQL (psql -h 127.0.0.1 -U postgres test) is not available: skipped");
        return;
    }
    let url = "postgres://postgres@127.0.0.1:5432/test";
    let sink = PostgresSink::connect(&PostgresSinkConfig::new(url, table.as_str()))
        .await
        .unwrap();
    let truncate = format!("TRUNCATE {table}");
    cases("PostgreSQL sink (unlogged table)", sink, async || {
        assert!(psql(&truncate));
    })
    .await;
    psql(&format!("DROP TABLE {table}"));
}

#[cfg(feature = "mysql")]
async fn mysql() {
    use syncflow::connector::mysql_sink::{MysqlSink, MysqlSinkConfig};
    let table = format!("sf_bench_{}", std::process::id());
    if !sql(
        MARIADB,
        &format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT PRIMARY KEY, customer INT, qty INT, price DECIMAL(12,2), note TEXT, at TIMESTAMP NULL)"
        ),
    ) {
        println!("MariaDB (mariadb -h 127.0.0.1 -u root test) is not available: skipped");
        return;
    }
    let url = "mysql://root@127.0.0.1:3306/test";
    let sink = MysqlSink::connect(&MysqlSinkConfig::new(url, table.as_str()))
        .await
        .unwrap();
    let truncate = format!("TRUNCATE {table}");
    cases("MySQL/MariaDB sink (InnoDB)", sink, async || {
        assert!(sql(MARIADB, &truncate));
    })
    .await;
    sql(MARIADB, &format!("DROP TABLE {table}"));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("w4_sql: bench");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        postgres().await;
        #[cfg(feature = "mysql")]
        mysql().await;
    });
}
