//! W4: replication lag, MariaDB binlog → PostgreSQL, at a steady write rate.
//!
//! ```text
//! cargo bench -p syncflow --features mysql-cdc,postgres --bench w4_lag
//! W4_RATE=10000 W4_SECONDS=30 W4_TX_ROWS=20 cargo bench -p syncflow --features mysql-cdc,postgres --bench w4_lag
//! ```
//!
//! Writers change a MariaDB table `(id BIGINT PRIMARY KEY, payload
//! VARCHAR(200), written_at BIGINT)` at a steady rate of row events
//! (`W4_RATE`, default 5000 per second) for `W4_SECONDS` (default 20), in
//! small transactions of `W4_TX_ROWS` row events (default 10), of which
//! `W4_UPDATES` percent (default 20) update rows inserted about a second
//! earlier; `written_at` is the transaction's start, in microseconds since
//! the UNIX epoch. Each transaction is one round trip; `W4_WRITERS`
//! connections (default 4) share the rate, since one commit (an fsync of
//! the redo log) can take longer than the 2 ms between transactions. A flow replicates the table while it is written:
//! `MysqlCdcSource` (streaming from the end of the binlog, a checkpoint in a
//! state directory) → a pass-through `ChangeEvent` step → `PostgresSink`
//! (upserts by primary key), with the connectors' and the runtime's
//! defaults. The PostgreSQL table has the same columns plus `applied_at`,
//! set by a `BEFORE INSERT OR UPDATE` trigger to `clock_timestamp()` in
//! microseconds: the moment the sink's statement wrote the row (its
//! transaction commits a little later). Both servers run on this machine,
//! so both stamps come from the same clock.
//!
//! The lag of a row is `applied_at - written_at` of its last change (an
//! updated row counts its update). Prints p50, p99 and max, the row events
//! per second achieved, and checks that PostgreSQL ends with every row's
//! last value. Target: p99 < 100 ms.
//!
//! `W4_UNLOGGED=1` makes the PostgreSQL table unlogged (no WAL, no fsync
//! per commit), to see how much of the lag the sink's commits are.
//!
//! Needs MariaDB (`W4_URL`, default `mysql://root@127.0.0.1:3306`, binlog
//! in ROW format: `.ci/services`) and PostgreSQL (`W4_PG`, default
//! `postgres://postgres@127.0.0.1:5432/test`); skips with a message when one
//! is missing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use syncflow::cdc::ChangeEvent;
use syncflow::connector::postgres::{PostgresSink, PostgresSinkConfig};
use syncflow::connector::{MysqlCdcSource, MysqlCdcSourceConfig, SnapshotMode, serde_decode};
use syncflow::prelude::*;

/// Passes the change event through.
#[sync_function]
fn w4_replicate(e: ChangeEvent) -> ChangeEvent {
    e
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid number")),
        Err(_) => default,
    }
}

/// Microseconds since the UNIX epoch.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_micros() as i64
}

#[derive(Clone)]
struct Settings {
    url: String,
    pg: String,
    rate: u64,
    seconds: f64,
    tx_rows: u64,
    updates: u64,
    writers: u64,
}

/// What the writers did.
#[derive(Default)]
struct Written {
    events: u64,
    inserted: u64,
    updated: u64,
    secs: f64,
    /// The last `written_at` of every row, by id (index 0 unused).
    last: Vec<i64>,
    /// How long each transaction's round trip took (µs): the part of the
    /// lag spent before the change is even in the binlog.
    commits: Vec<i64>,
}

/// One writer of `writers`: writes row events at `rate / writers` per
/// second for `seconds`, in transactions of `tx_rows` events, each
/// transaction one round trip (`BEGIN; INSERT ...; UPDATE ...; COMMIT`).
/// Every millisecond it writes the transactions due by then. Its rows have
/// the ids `k + 1`, `k + 1 + writers`, ...
async fn write(
    mut conn: mysql_async::Conn,
    table: String,
    s: Settings,
    k: u64,
    writers: u64,
) -> (Written, mysql_async::Conn) {
    let rate = s.rate as f64 / writers as f64;
    let updates_per_tx = (s.tx_rows * s.updates / 100).min(s.tx_rows - 1);
    let inserts_per_tx = s.tx_rows - updates_per_tx;
    // Updates reach rows inserted about a second earlier.
    let back = (rate as u64).max(1);
    let total = (rate * s.seconds) as u64;
    let id = |j: u64| j * writers + k + 1;
    let mut w = Written::default();
    // The last stamp of each of this writer's rows, by j.
    let mut last: Vec<i64> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut sql = String::with_capacity(4096);
    while w.events < total {
        tick.tick().await;
        let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(total);
        while w.events < due {
            let at = now_us();
            sql.clear();
            sql.push_str(&format!("BEGIN; INSERT INTO {table} VALUES "));
            for n in 0..inserts_per_tx {
                let i = id(last.len() as u64);
                last.push(at);
                if n > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("({i},'row {i} written at {at}',{at})"));
            }
            sql.push(';');
            w.inserted += inserts_per_tx;
            w.events += inserts_per_tx;
            let newest = last.len() as u64 - 1;
            if updates_per_tx > 0 && newest > back + updates_per_tx * 7 {
                let ids: Vec<String> = (0..updates_per_tx)
                    .map(|m| {
                        let j = newest - back - m * 7;
                        last[j as usize] = at;
                        id(j).to_string()
                    })
                    .collect();
                sql.push_str(&format!(
                    " UPDATE {table} SET payload = 'row updated at {at}', written_at = {at} WHERE id IN ({});",
                    ids.join(",")
                ));
                w.updated += updates_per_tx;
                w.events += updates_per_tx;
            }
            sql.push_str(" COMMIT");
            let sent = Instant::now();
            conn.query_drop(&sql).await.unwrap();
            w.commits.push(sent.elapsed().as_micros() as i64);
        }
    }
    w.secs = started.elapsed().as_secs_f64();
    w.last = vec![0; (id(last.len() as u64)) as usize];
    for (j, at) in last.into_iter().enumerate() {
        w.last[id(j as u64) as usize] = at;
    }
    (w, conn)
}

/// p50, p99, max of the values.
fn percentiles(mut v: Vec<i64>) -> (i64, i64, i64) {
    v.sort_unstable();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99), at(1.0))
}

async fn wait_for_row(pg: &tokio_postgres::Client, table: &str, id: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = pg
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE id = $1"),
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        if n == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} (row {id}) did not reach PostgreSQL table {table} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let s = Settings {
        url: env("W4_URL", "mysql://root@127.0.0.1:3306".to_string()),
        pg: env(
            "W4_PG",
            "postgres://postgres@127.0.0.1:5432/test".to_string(),
        ),
        rate: env("W4_RATE", 5000),
        seconds: env("W4_SECONDS", 20.0),
        tx_rows: env::<u64>("W4_TX_ROWS", 10).max(1),
        updates: env("W4_UPDATES", 20),
        writers: env::<u64>("W4_WRITERS", 4).max(1),
    };
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(&s.url).unwrap())
        .prefer_socket(false);
    let mut my = match mysql_async::Conn::new(opts.clone()).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("w4_lag skipped: cannot reach MariaDB at {} ({e})", s.url);
            return;
        }
    };
    let (pg, pg_conn) = match tokio_postgres::connect(&s.pg, tokio_postgres::NoTls).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("w4_lag skipped: cannot reach PostgreSQL at {} ({e})", s.pg);
            return;
        }
    };
    tokio::spawn(pg_conn);

    let tag = std::process::id();
    let db = format!("w4lag_{tag}");
    let source_table = format!("{db}.events");
    let sink_table = format!("w4lag_{tag}");
    my.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    my.query_drop(format!(
        "CREATE TABLE {source_table} (id BIGINT PRIMARY KEY, payload VARCHAR(200) NOT NULL, \
         written_at BIGINT NOT NULL)"
    ))
    .await
    .unwrap();
    // W4_UNLOGGED=1: no WAL, so no fsync at the sink's commits (to see
    // what the commits cost in lag).
    let unlogged = if env("W4_UNLOGGED", 0u8) == 1 {
        "UNLOGGED"
    } else {
        ""
    };
    pg.batch_execute(&format!(
        "CREATE {unlogged} TABLE {sink_table} (id bigint PRIMARY KEY, payload text NOT NULL, \
             written_at bigint NOT NULL, applied_at bigint);
         CREATE FUNCTION {sink_table}_applied() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             NEW.applied_at := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
             RETURN NEW;
         END $$;
         CREATE TRIGGER applied BEFORE INSERT OR UPDATE ON {sink_table}
             FOR EACH ROW EXECUTE FUNCTION {sink_table}_applied();"
    ))
    .await
    .unwrap();

    let state = std::env::temp_dir().join(format!("w4_lag_{tag}"));
    let mut config = MysqlCdcSourceConfig::new(s.url.clone());
    config.include = vec![source_table.clone()];
    config.snapshot = SnapshotMode::Never;
    config.state_dir = Some(state.clone());
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, serde_decode)
        .await
        .unwrap();
    let sink = PostgresSink::connect(&PostgresSinkConfig::new(&s.pg, sink_table.as_str()))
        .await
        .unwrap();
    let runtime = Runtime::new(flow!(w4_replicate))
        .source(source)
        .sink(sink)
        .handle_signals(false);
    let stop = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    // The source streams from the end of the binlog once it is connected:
    // a first row that arrives shows it is.
    let mut first = 0;
    loop {
        first -= 1;
        my.query_drop(format!(
            "INSERT INTO {source_table} VALUES ({first}, 'start', {})",
            now_us()
        ))
        .await
        .unwrap();
        let seen: i64 = pg
            .query_one(&format!("SELECT count(*) FROM {sink_table}"), &[])
            .await
            .unwrap()
            .get(0);
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            first > -300,
            "the flow wrote nothing to PostgreSQL within 60 s"
        );
    }
    eprintln!(
        "w4_lag: writing {} row events/s for {} s in transactions of {} ({}% updates) on {} connections",
        s.rate, s.seconds, s.tx_rows, s.updates, s.writers
    );
    let mut writers = Vec::new();
    for k in 0..s.writers {
        let conn = mysql_async::Conn::new(opts.clone()).await.unwrap();
        writers.push(tokio::spawn(write(
            conn,
            source_table.clone(),
            s.clone(),
            k,
            s.writers,
        )));
    }
    let mut written = Written::default();
    for writer in writers {
        let (w, conn) = writer.await.unwrap();
        let _ = conn.disconnect().await;
        written.events += w.events;
        written.inserted += w.inserted;
        written.updated += w.updated;
        written.secs = written.secs.max(w.secs);
        written.commits.extend(w.commits);
        if written.last.len() < w.last.len() {
            written.last.resize(w.last.len(), 0);
        }
        for (id, at) in w.last.into_iter().enumerate() {
            if at != 0 {
                written.last[id] = at;
            }
        }
    }
    let end = -1_000_000;
    my.query_drop(format!(
        "INSERT INTO {source_table} VALUES ({end}, 'end', {})",
        now_us()
    ))
    .await
    .unwrap();
    wait_for_row(&pg, &sink_table, end, "the last row").await;
    stop.shutdown();
    let summary = run.await.unwrap().unwrap();

    let rows = pg
        .query(
            &format!(
                "SELECT id, written_at, applied_at - written_at FROM {sink_table} WHERE id > 0"
            ),
            &[],
        )
        .await
        .unwrap();
    let mut lags = Vec::with_capacity(rows.len());
    for row in &rows {
        let (id, written_at, lag): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            written_at, written.last[id as usize],
            "row {id} in PostgreSQL does not hold its last change"
        );
        lags.push(lag);
    }
    assert_eq!(
        rows.len() as u64,
        written.inserted,
        "every inserted row reached PostgreSQL"
    );
    let (p50, p99, max) = percentiles(lags);
    println!(
        "w4 lag, MariaDB binlog → PostgreSQL: {} row events ({} inserts, {} updates) at {:.0} row events/s for {:.1} s; {} source batches ({:.0} row events each on average)",
        written.events,
        written.inserted,
        written.updated,
        written.events as f64 / written.secs,
        written.secs,
        summary.batches,
        summary.input as f64 / summary.batches.max(1) as f64
    );
    println!(
        "  lag (applied_at - written_at, {} rows): p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms   (target p99 < 100 ms)",
        rows.len(),
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        max as f64 / 1000.0
    );
    let (c50, c99, cmax) = percentiles(std::mem::take(&mut written.commits));
    println!(
        "  of which the writers' own transactions (BEGIN ... COMMIT round trip, included in the lag): p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        c50 as f64 / 1000.0,
        c99 as f64 / 1000.0,
        cmax as f64 / 1000.0
    );

    let _ = my.query_drop(format!("DROP DATABASE {db}")).await;
    let _ = my.disconnect().await;
    let _ = pg
        .batch_execute(&format!(
            "DROP TABLE {sink_table}; DROP FUNCTION {sink_table}_applied()"
        ))
        .await;
    let _ = std::fs::remove_dir_all(&state);
}
