//! The initial snapshot: every captured table read in one consistent
//! transaction, in primary-key order and in chunks, as `op: "r"` events,
//! together with the binlog position that transaction saw.

use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};

use super::schema::{self, quote};
use super::value::{self, SnapKind};
use super::{BinlogPosition, Settings, now_ms};
use crate::connector::{Batch, DecodeFn, Phase, SourceProgress, Unit};

/// Tables whose row estimate is below this are counted exactly (in the
/// snapshot's transaction) when their turn comes: such a count takes a few
/// milliseconds, and a small or freshly filled table is where InnoDB's
/// estimate (`information_schema.TABLES.TABLE_ROWS`) is most off. Larger
/// tables keep the estimate, which costs nothing; every table's estimate is
/// replaced by the rows actually read once it is done.
const COUNT_BELOW: u64 = 100_000;

/// A table being read.
struct Scan {
    db: String,
    table: String,
    /// `SELECT … LIMIT ?` from the start, and `… WHERE key > ? … LIMIT ?`.
    first: String,
    next: String,
    /// Indexes of the primary-key columns in the rows; empty: no key, read
    /// by offset.
    key: Vec<usize>,
    key_names: Vec<String>,
    json: Vec<String>,
    /// The last key read (for the next chunk).
    last: Option<Vec<Value>>,
    offset: u64,
    /// `"name":` of each column and how its values are written (from the
    /// first chunk's columns).
    columns: Option<Vec<(Vec<u8>, SnapKind)>>,
    /// The rows expected of this table (in the snapshot's expected total).
    expected: u64,
    /// `,"source":{…,"db":…,"table":…,"pos":"file:pos","gtid":…,"ts_ms":…,"snapshot":true},"ts_ms":`
    tail: Vec<u8>,
}

/// An initial snapshot in progress.
pub(crate) struct Snapshot {
    conn: Conn,
    /// Where the binlog stream starts once the snapshot is read.
    pub(crate) start: BinlogPosition,
    ts_ms: u64,
    /// The tables still to read, with their row estimates.
    tables: VecDeque<(String, String, u64)>,
    scan: Option<Scan>,
    rows: u64,
    /// Tables in the snapshot, and the number of the one being read.
    table_count: usize,
    table_number: usize,
    /// Rows expected in all: read, counted or estimated.
    expected: u64,
    progress: SourceProgress,
}

impl Snapshot {
    /// Opens the consistent snapshot, lists the captured tables with their
    /// row estimates, and starts the snapshot phase of `progress`.
    pub(crate) async fn begin(
        settings: &Settings,
        progress: SourceProgress,
    ) -> Result<Snapshot, mysql_async::Error> {
        let mut conn = Conn::new(settings.opts.clone()).await?;
        conn.query_drop("SET SESSION time_zone = '+00:00'").await?;
        conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        let (file, pos, gtid) = if settings.mariadb {
            // MariaDB reports the binlog position of the snapshot itself.
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await?;
            let status: Vec<(String, String)> =
                conn.query("SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
            let get = |name: &str| {
                status
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let file = get("Binlog_snapshot_file");
            let pos: u64 = get("Binlog_snapshot_position").parse().unwrap_or(4);
            let gtid: Option<String> = conn
                .exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file, pos))
                .await?
                .flatten();
            (file, pos, gtid)
        } else {
            // MySQL: a short global read lock pins the position while the
            // snapshot starts (needs the RELOAD privilege).
            conn.query_drop("FLUSH TABLES WITH READ LOCK").await?;
            let started = async {
                conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                    .await?;
                let status: Option<Row> = match conn.query_first("SHOW BINARY LOG STATUS").await {
                    Ok(row) => row,
                    Err(_) => conn.query_first("SHOW MASTER STATUS").await?,
                };
                Ok::<_, mysql_async::Error>(status)
            }
            .await;
            conn.query_drop("UNLOCK TABLES").await?;
            let status = started?;
            let file: String = status
                .as_ref()
                .and_then(|r| r.get_opt(0).and_then(Result::ok))
                .unwrap_or_default();
            let pos: u64 = status
                .as_ref()
                .and_then(|r| r.get_opt(1).and_then(Result::ok))
                .unwrap_or(4);
            let gtid: Option<String> = status
                .as_ref()
                .and_then(|r| r.get_opt(4).and_then(Result::ok))
                .filter(|g: &String| !g.is_empty());
            (file, pos, gtid)
        };
        let listed: Vec<(String, String)> = conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME",
            )
            .await?;
        let tables: Vec<(String, String)> = listed
            .into_iter()
            .filter(|(db, table)| settings.filter.includes(db, table))
            .collect();
        let tables = estimates(&mut conn, tables).await?;
        let expected = tables.iter().map(|t| t.2).sum();
        let what = match tables.len() {
            1 => format!("{}.{}", tables[0].0, tables[0].1),
            n => format!("{n} tables"),
        };
        progress.begin(Phase::Snapshot, what, Unit::Rows, Some(expected));
        tracing::info!(
            server = %settings.target,
            binlog = %format!("{file}:{pos}"),
            gtid = gtid.as_deref().unwrap_or(""),
            "initial snapshot started"
        );
        Ok(Snapshot {
            conn,
            start: BinlogPosition {
                file: Arc::from(file),
                pos,
                skip_rows: 0,
                gtid: gtid.filter(|g| !g.is_empty()).map(Arc::from),
            },
            ts_ms: now_ms(),
            table_count: tables.len(),
            table_number: 0,
            tables,
            scan: None,
            rows: 0,
            expected,
            progress,
        })
    }

    async fn next_table(&mut self, settings: &Settings) -> Result<bool, mysql_async::Error> {
        let Some((db, table, estimate)) = self.tables.pop_front() else {
            return Ok(false);
        };
        let schema = schema::load(&mut self.conn, &db, &table, settings.mariadb)
            .await?
            .unwrap_or_default();
        let from = format!("SELECT * FROM {}.{}", quote(&db), quote(&table));
        let mut expected = estimate;
        if estimate < COUNT_BELOW {
            // In the snapshot's transaction: exactly the rows it will read.
            let count: Option<u64> = self
                .conn
                .query_first(format!(
                    "SELECT COUNT(*) FROM {}.{}",
                    quote(&db),
                    quote(&table)
                ))
                .await?;
            expected = count.unwrap_or(estimate);
        }
        self.table_number += 1;
        self.correct(estimate, expected);
        self.progress.set_what(if self.table_count > 1 {
            format!(
                "{db}.{table} (table {} of {})",
                self.table_number, self.table_count
            )
        } else {
            format!("{db}.{table}")
        });
        let keys: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
        let (first, next) = if keys.is_empty() {
            (
                format!("{from} LIMIT ? OFFSET ?"),
                format!("{from} LIMIT ? OFFSET ?"),
            )
        } else {
            // (k1 > ?) OR (k1 = ? AND k2 > ?) OR …: a range the optimizer
            // reads from the primary key.
            let order = keys.join(", ");
            let mut disjuncts = Vec::new();
            for i in 0..keys.len() {
                let mut parts: Vec<String> = keys[..i].iter().map(|k| format!("{k} = ?")).collect();
                parts.push(format!("{} > ?", keys[i]));
                disjuncts.push(format!("({})", parts.join(" AND ")));
            }
            (
                format!("{from} ORDER BY {order} LIMIT ?"),
                format!(
                    "{from} WHERE {} ORDER BY {order} LIMIT ?",
                    disjuncts.join(" OR ")
                ),
            )
        };
        let mut tail = Vec::with_capacity(160);
        tail.extend_from_slice(br#","source":{"connector":"mysql","db":"#);
        value::write_str(&mut tail, &db);
        tail.extend_from_slice(br#","table":"#);
        value::write_str(&mut tail, &table);
        let _ = write!(tail, r#","pos":"{}:{}""#, self.start.file, self.start.pos);
        if let Some(gtid) = &self.start.gtid {
            tail.extend_from_slice(br#","gtid":"#);
            value::write_str(&mut tail, gtid);
        }
        let _ = write!(
            tail,
            r#","ts_ms":{},"snapshot":true}},"ts_ms":"#,
            self.ts_ms
        );
        self.scan = Some(Scan {
            db,
            table,
            first,
            next,
            key: Vec::new(),
            key_names: schema.primary_key.clone(),
            json: schema
                .columns
                .iter()
                .filter(|c| c.json)
                .map(|c| c.name.clone())
                .collect(),
            last: None,
            offset: 0,
            columns: None,
            expected,
            tail,
        });
        Ok(true)
    }

    /// Replaces a table's share of the expected total.
    fn correct(&mut self, was: u64, now: u64) {
        self.expected = (self.expected + now).saturating_sub(was);
        self.progress.set_total(Some(self.expected));
    }

    /// Reads rows into `batch` up to `max`, `chunk` rows per query. Returns
    /// whether the snapshot is complete.
    pub(crate) async fn fill<T>(
        &mut self,
        settings: &Settings,
        batch: &mut Batch<T>,
        max: usize,
        chunk: usize,
        decode: DecodeFn<T>,
    ) -> Result<bool, mysql_async::Error> {
        while batch.len() < max {
            if self.scan.is_none() && !self.next_table(settings).await? {
                let _ = self.conn.query_drop("COMMIT").await;
                tracing::info!(
                    server = %settings.target,
                    rows = self.rows,
                    "initial snapshot read; streaming the binlog from {}:{}",
                    self.start.file,
                    self.start.pos
                );
                return Ok(true);
            }
            let Some(scan) = self.scan.as_mut() else {
                continue;
            };
            let limit = chunk.min(max - batch.len()).max(1) as u64;
            let rows: Vec<Row> = if scan.key_names.is_empty() {
                self.conn.exec(&scan.first, (limit, scan.offset)).await?
            } else if let Some(last) = &scan.last {
                let mut params = Vec::new();
                for i in 0..last.len() {
                    params.extend(last[..=i].iter().cloned());
                }
                params.push(Value::UInt(limit));
                self.conn.exec(&scan.next, params).await?
            } else {
                self.conn.exec(&scan.first, (limit,)).await?
            };
            let done = (rows.len() as u64) < limit;
            if let Some(row) = rows.first()
                && scan.columns.is_none()
            {
                let columns = row.columns_ref();
                scan.columns = Some(
                    columns
                        .iter()
                        .map(|c| {
                            let name = c.name_str();
                            let mut key = Vec::new();
                            value::write_str(&mut key, &name);
                            key.push(b':');
                            let json = scan.json.iter().any(|j| *j == *name);
                            (key, value::snapshot_kind(c, json))
                        })
                        .collect(),
                );
                scan.key = scan
                    .key_names
                    .iter()
                    .filter_map(|k| columns.iter().position(|c| c.name_str() == k.as_str()))
                    .collect();
            }
            let columns = scan.columns.as_deref().unwrap_or(&[]);
            for row in &rows {
                let start = batch.raw.len();
                batch
                    .raw
                    .extend_from_slice(br#"{"op":"r","before":null,"after":{"#);
                for (i, (key, kind)) in columns.iter().enumerate() {
                    if i > 0 {
                        batch.raw.push(b',');
                    }
                    batch.raw.extend_from_slice(key);
                    match row.as_ref(i) {
                        Some(v) => value::write_snapshot_value(&mut batch.raw, *kind, v),
                        None => batch.raw.extend_from_slice(b"null"),
                    }
                }
                batch.raw.push(b'}');
                batch.raw.extend_from_slice(&scan.tail);
                let _ = write!(batch.raw, "{}}}", now_ms());
                let end = batch.raw.len();
                let payload = decode(&batch.raw[start..end]);
                self.rows += 1;
                batch.push_range(self.rows, start..end, payload);
            }
            scan.offset += rows.len() as u64;
            self.progress.advance(rows.len() as u64);
            if let Some(row) = rows.last()
                && !scan.key.is_empty()
            {
                scan.last = Some(
                    scan.key
                        .iter()
                        .map(|i| row.as_ref(*i).cloned().unwrap_or(Value::NULL))
                        .collect(),
                );
            }
            if done {
                tracing::debug!(db = %scan.db, table = %scan.table, rows = scan.offset, "snapshot of a table read");
                let (was, read) = (scan.expected, scan.offset);
                self.scan = None;
                self.correct(was, read);
            }
        }
        Ok(false)
    }

    /// Ends the snapshot transaction and closes its connection.
    pub(crate) async fn close(self) {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), self.conn.disconnect()).await;
    }
}

/// The row estimates of `tables` (`information_schema.TABLES.TABLE_ROWS`:
/// free, read from the storage engine's statistics; 0 when it has none).
/// One query per database, so that the server opens only those tables.
async fn estimates(
    conn: &mut Conn,
    tables: Vec<(String, String)>,
) -> Result<VecDeque<(String, String, u64)>, mysql_async::Error> {
    let mut dbs: Vec<&str> = tables.iter().map(|(db, _)| db.as_str()).collect();
    dbs.sort_unstable();
    dbs.dedup();
    let mut rows = std::collections::HashMap::new();
    for db in dbs {
        let listed: Vec<(String, Option<u64>)> = conn
            .exec(
                "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
                (db,),
            )
            .await?;
        for (table, estimate) in listed {
            rows.insert((db.to_string(), table), estimate.unwrap_or(0));
        }
    }
    Ok(tables
        .into_iter()
        .map(|(db, table)| {
            let estimate = rows.get(&(db.clone(), table.clone())).copied().unwrap_or(0);
            (db, table, estimate)
        })
        .collect())
}
