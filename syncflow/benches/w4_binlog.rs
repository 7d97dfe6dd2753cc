//! W4: the MySQL/MariaDB binlog source's row events per second, on one core.
//!
//! ```text
//! cargo bench -p syncflow --features mysql-cdc --bench w4_binlog
//! W4_ROWS=500000 W4_ROUNDS=5 W4_URL=mysql://root@127.0.0.1:3306 cargo bench ...
//! ```
//!
//! Writes `W4_ROWS` rows (default 200 000) of a six-column table with
//! multi-row `INSERT`s of 1000 rows (one transaction each), then reads them
//! back from the binlog `W4_ROUNDS` times (default 3) through a `Runtime`
//! on a current-thread Tokio runtime (one core; the server has the other):
//! binlog events → row images decoded → JSON envelopes → the flow's input
//! type → a pass-through step → `Discard`. Every round starts from a
//! checkpoint written at the position before the inserts.
//!
//! Two input types: `Box<RawValue>` (the envelope kept as JSON text: the
//! source's own cost) and `ChangeEvent` (decoded into maps: what a typical
//! flow pays). Target: ≥ 100k row events/s.

use std::path::Path;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::value::RawValue;
use syncflow::cdc::ChangeEvent;
use syncflow::connector::{
    Batch, ConnectorError, MysqlCdcSource, MysqlCdcSourceConfig, Read, Source, serde_decode,
};
use syncflow::prelude::{Runtime, flow, sync_function};

/// Passes the envelope text through.
#[sync_function]
fn w4_raw(v: Box<RawValue>) -> Box<RawValue> {
    v
}

/// Passes the change event through.
#[sync_function]
fn w4_event(e: ChangeEvent) -> ChangeEvent {
    e
}

/// Ends the input after `rows` records.
struct Take<S> {
    inner: S,
    rows: usize,
}

impl<S: Source> Source for Take<S> {
    type Item = S::Item;
    type Ack = S::Ack;
    type Acker = S::Acker;
    fn name(&self) -> std::sync::Arc<str> {
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

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes the checkpoint the source resumes from: the position before the inserts.
fn checkpoint(dir: &Path, file: &str, pos: u64) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let text = format!(
        r#"{{"version":1,"server":"bench","file":"{file}","pos":{pos},"skip_rows":0,"gtid":null}}"#
    );
    std::fs::write(dir.join("mysql-cdc.w4.checkpoint.json"), text).unwrap();
}

async fn round<T, F>(config: &MysqlCdcSourceConfig, rows: usize, run: F) -> f64
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: AsyncFnOnce(Take<MysqlCdcSource<T>>) -> u64,
{
    let source = MysqlCdcSource::<T>::connect(config, serde_decode::<T>)
        .await
        .expect("connect");
    let started = Instant::now();
    let n = run(Take {
        inner: source,
        rows,
    })
    .await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(n as usize, rows, "every row read");
    rows as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let url: String = env("W4_URL", "mysql://root@127.0.0.1:3306".to_string());
    let rows: usize = env("W4_ROWS", 200_000);
    let rounds: usize = env("W4_ROUNDS", 3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&url).unwrap())
            .prefer_socket(false);
        let mut conn = match mysql_async::Conn::new(opts).await {
            Ok(conn) => conn,
            Err(e) => {
                eprintln!("w4_binlog skipped: cannot reach {url} ({e})");
                return;
            }
        };
        let db = format!("w4_{}", std::process::id());
        conn.query_drop(format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        conn.query_drop(format!(
            "CREATE TABLE {db}.orders (id BIGINT PRIMARY KEY, customer INT NOT NULL, \
             item VARCHAR(32) NOT NULL, qty INT NOT NULL, price DECIMAL(10,2) NOT NULL, \
             created DATETIME NOT NULL)"
        ))
        .await
        .unwrap();
        let (file, pos): (String, u64) = {
            let row: mysql_async::Row = conn
                .query_first("SHOW MASTER STATUS")
                .await
                .unwrap()
                .unwrap();
            (row.get(0).unwrap(), row.get(1).unwrap())
        };
        let written = Instant::now();
        let mut id = 0u64;
        while (id as usize) < rows {
            let n = 1000.min(rows - id as usize);
            let values: Vec<String> = (0..n)
                .map(|_| {
                    id += 1;
                    format!(
                        "({id}, {}, 'item-{}', {}, {}.{:02}, '2024-03-{:02} 12:{:02}:00')",
                        id % 977,
                        id % 50,
                        id % 9 + 1,
                        id % 500,
                        id % 100,
                        id % 28 + 1,
                        id % 60
                    )
                })
                .collect();
            conn.query_drop(format!(
                "INSERT INTO {db}.orders VALUES {}",
                values.join(",")
            ))
            .await
            .unwrap();
        }
        eprintln!(
            "w4_binlog: wrote {rows} rows in {:.1} s; reading them {rounds} times from the binlog",
            written.elapsed().as_secs_f64()
        );
        let dir = std::env::temp_dir().join(format!("w4_binlog_{}", std::process::id()));
        let mut config = MysqlCdcSourceConfig::new(url.clone());
        config.include = vec![format!("{db}.orders")];
        config.state_dir = Some(dir.clone());
        config.name = Some("w4".into());

        let (mut raw, mut events) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            checkpoint(&dir, &file, pos);
            raw.push(
                round::<Box<RawValue>, _>(&config, rows, async |source| {
                    let summary = Runtime::new(flow!(w4_raw))
                        .source(source)
                        .handle_signals(false)
                        .run()
                        .await
                        .unwrap();
                    summary.input
                })
                .await,
            );
            checkpoint(&dir, &file, pos);
            events.push(
                round::<ChangeEvent, _>(&config, rows, async |source| {
                    let summary = Runtime::new(flow!(w4_event))
                        .source(source)
                        .handle_signals(false)
                        .run()
                        .await
                        .unwrap();
                    summary.input
                })
                .await,
            );
        }
        let (raw, events) = (median(raw), median(events));
        println!("w4_binlog ({rows} rows, median of {rounds} rounds, one core):");
        println!(
            "  binlog -> Box<RawValue> -> Discard: {:>9.0} row events/s",
            raw
        );
        println!(
            "  binlog -> ChangeEvent   -> Discard: {:>9.0} row events/s",
            events
        );
        println!("  target: 100000 row events/s");
        let _ = conn.query_drop(format!("DROP DATABASE {db}")).await;
        let _ = conn.disconnect().await;
        let _ = std::fs::remove_dir_all(&dir);
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
}
