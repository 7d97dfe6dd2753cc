//! MySQL and MariaDB: [`MysqlSink`] writes rows and change events as
//! batched, idempotent upserts (`INSERT ... ON DUPLICATE KEY UPDATE`) and
//! deletes by primary key, one transaction per flush.
//!
//! Uses [mysql_async](https://docs.rs/mysql_async) over plain TCP (no TLS).
//! See the book's page `connectors/mysql-sink.md`.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Value};
use serde::{Deserialize, Serialize};

use super::sql::{
    CellEncoder, Collector, Column, Failure, IngestOptions, InputFormat, NoRowEvents, Outage, Plan,
    Rejects, RetryConfig, Table, UnknownColumns, classify_state,
};
use super::{ConnectorError, Sink};

const CONNECTOR: &str = "mysql";

/// Configuration of a [`MysqlSink`] (`sinks: [ { mysql: {...} } ]` in flow
/// files).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlSinkConfig {
    /// Connection URL: `mysql://user:password@host:3306/database` (no TLS).
    pub url: String,
    /// The table: `name` (in the URL's database) or `database.name`.
    pub table: String,
    /// The columns rows are matched by; by default the table's primary key,
    /// read from the catalog. Other columns need a unique index.
    #[serde(default)]
    pub key: Vec<String>,
    /// What the messages are: `auto` (default), `rows` or `cdc`.
    #[serde(default)]
    pub input: InputFormat,
    /// A message field that is not a column: `reject` (default) or `ignore`.
    #[serde(default)]
    pub unknown_columns: UnknownColumns,
    /// Change events with `op: t` (truncate): `ignore` (default), `apply`
    /// (delete every row) or `reject`.
    #[serde(default)]
    pub on_truncate: NoRowEvents,
    /// Change events with `op: ddl`: `ignore` (default) or `reject`.
    #[serde(default)]
    pub on_ddl: NoRowEvents,
    /// A JSON-lines file receiving the messages the sink rejects, one
    /// `DeadLetter` per line. Without it they are only logged (`warn`).
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// Rows per statement at most (default 500); smaller statements have
    /// power-of-two sizes, so that few statements are prepared.
    #[serde(default = "default_rows_per_statement")]
    pub rows_per_statement: usize,
    /// How a lost connection is retried.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_rows_per_statement() -> usize {
    500
}

impl MysqlSinkConfig {
    /// A configuration with the defaults, writing to `table` of the
    /// database at `url`.
    pub fn new(url: impl Into<String>, table: impl Into<String>) -> Self {
        MysqlSinkConfig {
            url: url.into(),
            table: table.into(),
            key: Vec::new(),
            input: InputFormat::default(),
            unknown_columns: UnknownColumns::default(),
            on_truncate: NoRowEvents::default(),
            on_ddl: NoRowEvents::default(),
            dead_letter: None,
            rows_per_statement: default_rows_per_statement(),
            retry: RetryConfig::default(),
        }
    }

    /// Matches rows by these columns instead of the primary key.
    pub fn key<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.key = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Says what the messages are.
    pub fn input(mut self, input: InputFormat) -> Self {
        self.input = input;
        self
    }

    /// What to do with fields that are not columns.
    pub fn unknown_columns(mut self, unknown: UnknownColumns) -> Self {
        self.unknown_columns = unknown;
        self
    }

    /// What to do with truncate events.
    pub fn on_truncate(mut self, mode: NoRowEvents) -> Self {
        self.on_truncate = mode;
        self
    }

    /// What to do with schema change events.
    pub fn on_ddl(mut self, mode: NoRowEvents) -> Self {
        self.on_ddl = mode;
        self
    }

    /// Appends rejected messages to this JSON-lines file.
    pub fn dead_letter(mut self, path: impl Into<PathBuf>) -> Self {
        self.dead_letter = Some(path.into());
        self
    }

    /// Rows per statement at most.
    pub fn rows_per_statement(mut self, rows: usize) -> Self {
        self.rows_per_statement = rows;
        self
    }

    /// How lost connections are retried.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }
}

/// How a column's JSON values are converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    UInt,
    Decimal,
    Float,
    Text,
    Json,
    Date,
    DateTime,
    Other,
}

impl Kind {
    fn of(data_type: &str, column_type: &str, json: bool) -> Kind {
        if json {
            return Kind::Json;
        }
        let unsigned = column_type.contains("unsigned");
        match data_type {
            "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" | "year" => {
                if unsigned {
                    Kind::UInt
                } else {
                    Kind::Int
                }
            }
            "bit" => Kind::UInt,
            "decimal" | "numeric" => Kind::Decimal,
            "float" | "double" | "real" => Kind::Float,
            "json" => Kind::Json,
            "date" => Kind::Date,
            "datetime" | "timestamp" => Kind::DateTime,
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum"
            | "set" => Kind::Text,
            _ => Kind::Other,
        }
    }
}

/// Converts JSON values to MySQL values by column type.
struct MysqlCells {
    kinds: Vec<Kind>,
}

impl CellEncoder for MysqlCells {
    type Value = Value;
    fn encode(&mut self, column: usize, raw: &str, _: Range<u32>) -> Result<Value, String> {
        encode(self.kinds[column], raw)
    }
}

/// Converts one JSON value (its text) for a column of this kind.
fn encode(kind: Kind, raw: &str) -> Result<Value, String> {
    if raw == "null" {
        return Ok(Value::NULL);
    }
    let first = raw.as_bytes().first().copied().unwrap_or(b' ');
    let string = || serde_json::from_str::<String>(raw).map_err(|e| e.to_string());
    match (kind, first) {
        (Kind::Json, _) => Ok(Value::Bytes(raw.as_bytes().to_vec())),
        (_, b'{' | b'[') if kind != Kind::Text && kind != Kind::Other => {
            Err("expected a single value, got an object or array".to_string())
        }
        (Kind::Int | Kind::UInt, b't' | b'f') => Ok(Value::Int(i64::from(raw == "true"))),
        (Kind::Int, b'"') => parse_int(string()?.trim()).map(Value::Int),
        (Kind::Int, _) => parse_int(raw).map(Value::Int),
        (Kind::UInt, b'"') => parse_uint(string()?.trim()).map(Value::UInt),
        (Kind::UInt, _) => parse_uint(raw).map(Value::UInt),
        (Kind::Decimal, b'"') => Ok(Value::Bytes(string()?.into_bytes())),
        (Kind::Decimal, b't' | b'f') => Err("expected a number".to_string()),
        (Kind::Decimal, _) => Ok(Value::Bytes(raw.as_bytes().to_vec())),
        (Kind::Float, b'"') => string()?
            .trim()
            .parse::<f64>()
            .map(Value::Double)
            .map_err(|_| "expected a number".to_string()),
        (Kind::Float, b't' | b'f') => Err("expected a number".to_string()),
        (Kind::Float, _) => raw
            .parse::<f64>()
            .map(Value::Double)
            .map_err(|e| e.to_string()),
        (Kind::Date | Kind::DateTime, b'"') => {
            let text = string()?;
            let t = parse_datetime(&text).ok_or_else(|| {
                "expected a date (2024-01-31) or a date and time in ISO 8601 (2024-01-31T10:00:00, with an optional fraction and Z or +02:00)".to_string()
            })?;
            Ok(if kind == Kind::Date {
                Value::Date(t.0, t.1, t.2, 0, 0, 0, 0)
            } else {
                Value::Date(t.0, t.1, t.2, t.3, t.4, t.5, t.6)
            })
        }
        (Kind::Date | Kind::DateTime, _) => {
            Err("expected a date or timestamp string in ISO 8601".to_string())
        }
        (_, b'"') => Ok(Value::Bytes(string()?.into_bytes())),
        // Numbers, booleans, objects and arrays in text columns: their JSON text.
        _ => Ok(Value::Bytes(raw.as_bytes().to_vec())),
    }
}

fn parse_int(text: &str) -> Result<i64, String> {
    if let Ok(v) = text.parse::<i64>() {
        return Ok(v);
    }
    match text.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(f as i64),
        Ok(_) => Err("expected an integer".to_string()),
        Err(_) => Err("expected an integer".to_string()),
    }
}

fn parse_uint(text: &str) -> Result<u64, String> {
    if let Ok(v) = text.parse::<u64>() {
        return Ok(v);
    }
    match text.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && (0.0..1.8e19).contains(&f) => Ok(f as u64),
        _ => Err("expected a non-negative integer".to_string()),
    }
}

/// (year, month, day, hour, minute, second, microsecond), in UTC when the
/// text has an offset.
type DateTime = (u16, u8, u8, u8, u8, u8, u32);

/// Parses `YYYY-MM-DD`, optionally followed by `T` or a space,
/// `HH:MM[:SS[.ffffff]]` and `Z`, `±HH`, `±HHMM` or `±HH:MM`.
fn parse_datetime(text: &str) -> Option<DateTime> {
    let b = text.trim().as_bytes();
    let num = |s: &[u8]| -> Option<u32> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(&b[..4])?, num(&b[5..7])?, num(&b[8..10])?);
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y as i64, mo) {
        return None;
    }
    let mut rest = &b[10..];
    let (mut h, mut mi, mut s, mut us) = (0u32, 0u32, 0u32, 0u32);
    let mut offset_min = 0i64;
    if let Some((&sep, tail)) = rest.split_first() {
        if sep != b'T' && sep != b't' && sep != b' ' {
            return None;
        }
        if tail.len() < 5 || tail[2] != b':' {
            return None;
        }
        h = num(&tail[..2])?;
        mi = num(&tail[3..5])?;
        rest = &tail[5..];
        if rest.first() == Some(&b':') {
            s = num(rest.get(1..3)?)?;
            rest = &rest[3..];
            if rest.first() == Some(&b'.') {
                let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if digits == 0 {
                    return None;
                }
                let frac = &rest[1..1 + digits];
                let mut micros = 0u32;
                for i in 0..6 {
                    micros = micros * 10 + frac.get(i).map_or(0, |c| u32::from(c - b'0'));
                }
                us = micros;
                rest = &rest[1 + digits..];
            }
        }
        match rest {
            [] => {}
            [b'Z' | b'z'] => {}
            [sign @ (b'+' | b'-'), tz @ ..] => {
                let (oh, om) = match tz.len() {
                    2 => (num(tz)?, 0),
                    4 => (num(&tz[..2])?, num(&tz[2..])?),
                    5 if tz[2] == b':' => (num(&tz[..2])?, num(&tz[3..])?),
                    _ => return None,
                };
                offset_min = i64::from(oh * 60 + om);
                if *sign == b'-' {
                    offset_min = -offset_min;
                }
            }
            _ => return None,
        }
        if h > 23 || mi > 59 || s > 60 {
            return None;
        }
    }
    // To UTC.
    let mut minutes = days_from_civil(y as i64, mo, d) * 1440 + i64::from(h * 60 + mi) - offset_min;
    let days = minutes.div_euclid(1440);
    minutes = minutes.rem_euclid(1440);
    let (y, mo, d) = civil_from_days(days);
    Some((
        u16::try_from(y).ok()?,
        mo as u8,
        d as u8,
        (minutes / 60) as u8,
        (minutes % 60) as u8,
        s as u8,
        us,
    ))
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Writes rows and change events into a MySQL or MariaDB table.
///
/// The same model as [`PostgresSink`](super::postgres::PostgresSink):
/// plain JSON objects are upserts, [`ChangeEvent`](crate::cdc::ChangeEvent)
/// envelopes are applied (`c`/`u`/`r` upsert `after`, `d` deletes by the key
/// in `before`), changes are collapsed per primary key between flushes, and
/// a flush writes everything in one transaction with multi-row statements:
///
/// ```sql
/// INSERT INTO `orders` (`id`, `qty`) VALUES (?, ?), (?, ?), ...
///   ON DUPLICATE KEY UPDATE `qty` = VALUES(`qty`)
/// DELETE FROM `orders` WHERE `id` IN (?, ?, ...)
/// ```
///
/// JSON values are converted by column type (integers, decimals exactly,
/// floats, text, `json`, dates and timestamps in ISO 8601 converted to UTC,
/// booleans as 0/1); a value that does not fit rejects its message, which
/// is dead-lettered while the flow goes on. The session runs in UTC
/// (`time_zone = '+00:00'`) with strict SQL mode, so the server refuses
/// values instead of truncating them.
pub struct MysqlSink {
    opts: Opts,
    target: String,
    rows_per_statement: usize,
    conn: Option<Conn>,
    table: Table,
    qualified: String,
    options: IngestOptions,
    cells: MysqlCells,
    collector: Collector<Value>,
    rejects: Rejects,
    sql: HashMap<(bool, u32, usize), String>,
    outage: Outage,
}

impl std::fmt::Debug for MysqlSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlSink")
            .field("target", &self.target)
            .finish()
    }
}

fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn error_text(error: &mysql_async::Error) -> String {
    match error {
        mysql_async::Error::Server(e) => {
            format!("{} (error {}, SQLSTATE {})", e.message, e.code, e.state)
        }
        other => other.to_string(),
    }
}

/// How to handle a failed operation.
fn classify(error: &mysql_async::Error) -> Failure {
    let text = error_text(error);
    match error {
        mysql_async::Error::Server(e) => match e.code {
            // Lock wait timeout, deadlock.
            1205 | 1213 => Failure::Transient(text),
            // Incorrect value, data truncated, no default, invalid JSON,
            // check constraint, out of range, too long, foreign key.
            1048 | 1062 | 1264 | 1265 | 1292 | 1364 | 1366 | 1406 | 1451 | 1452 | 3140 | 4025 => {
                Failure::Data(text)
            }
            _ => classify_state(&e.state, text),
        },
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => Failure::Connection(text),
        _ => Failure::Fatal(text),
    }
}

async fn open(opts: &Opts) -> Result<Conn, mysql_async::Error> {
    let mut conn = Conn::new(opts.clone()).await?;
    conn.query_drop(
        "SET time_zone = '+00:00', sql_mode = IF(@@SESSION.sql_mode = '', 'STRICT_ALL_TABLES', CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES'))",
    )
    .await?;
    Ok(conn)
}

impl MysqlSink {
    /// Connects, reads the table's columns and primary key from the
    /// catalog, and opens the dead-letter file if one is configured.
    pub async fn connect(config: &MysqlSinkConfig) -> Result<Self, ConnectorError> {
        let url_error = |e: mysql_async::UrlError| {
            ConnectorError::server(
                CONNECTOR,
                "(connection URL)",
                "read the connection URL",
                e,
                "write it as `mysql://user:password@host:3306/database`",
            )
        };
        let base = Opts::from_url(&config.url).map_err(url_error)?;
        let opts: Opts = OptsBuilder::from_opts(base.clone())
            .stmt_cache_size(Some(256))
            .prefer_socket(Some(false))
            .into();
        let (db, name) = match config.table.split_once('.') {
            Some((db, name)) => (db.to_string(), name.to_string()),
            None => (
                base.db_name().unwrap_or_default().to_string(),
                config.table.clone(),
            ),
        };
        let target = format!(
            "{}@{}:{}/{db} table {name}",
            base.user().unwrap_or("root"),
            base.ip_or_hostname(),
            base.tcp_port()
        );
        let configure = |message: &str, hint: &str| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "configure the sink",
                message,
                hint,
            )
        };
        if db.is_empty() {
            return Err(configure(
                "the table has no database",
                "name it `database.table`, or put the database in the URL",
            ));
        }
        if config.on_ddl == NoRowEvents::Apply {
            return Err(configure(
                "`on_ddl: apply` is not supported",
                "use `ignore` or `reject`: schema changes are not replayed",
            ));
        }
        if config.rows_per_statement == 0 {
            return Err(configure(
                "`rows_per_statement` is 0",
                "set it to 1 or more (default 500)",
            ));
        }
        let mut conn = open(&opts).await.map_err(|e| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "connect",
                error_text(&e),
                "check that the server is running and the URL (host, port, user, database)",
            )
        })?;
        let (table, kinds) = load_table(&mut conn, &db, &name, &config.key)
            .await
            .map_err(|(action, message, hint)| {
                ConnectorError::server(CONNECTOR, target.clone(), action, message, hint)
            })?;
        let rejects = Rejects::open(config.dead_letter.as_ref(), target.clone(), "mysql sink")?;
        Ok(MysqlSink {
            opts,
            outage: config.retry.outage(CONNECTOR, &target),
            target,
            rows_per_statement: config.rows_per_statement,
            conn: Some(conn),
            qualified: format!("{}.{}", quote(&db), quote(&name)),
            table,
            options: IngestOptions {
                input: config.input,
                unknown_columns: config.unknown_columns,
                on_truncate: config.on_truncate,
                on_ddl: config.on_ddl,
            },
            cells: MysqlCells { kinds },
            collector: Collector::default(),
            rejects,
            sql: HashMap::new(),
        })
    }

    /// Messages rejected so far (dead-lettered).
    pub fn rejected(&self) -> u64 {
        self.rejects.total
    }

    /// The statement deleting (`delete`) or upserting `rows` rows of a shape.
    fn sql(&mut self, delete: bool, shape: u32, rows: usize) -> &str {
        let (table, qualified, shapes) =
            (&self.table, &self.qualified, &self.collector.shape_columns);
        self.sql.entry((delete, shape, rows)).or_insert_with(|| {
            let name = |c: usize| quote(&table.columns[c].name);
            if delete {
                let keys: Vec<String> = table.key.iter().map(|&k| name(k)).collect();
                let one = if keys.len() == 1 {
                    "?".to_string()
                } else {
                    format!("({})", vec!["?"; keys.len()].join(", "))
                };
                let lhs = if keys.len() == 1 {
                    keys[0].clone()
                } else {
                    format!("({})", keys.join(", "))
                };
                return format!(
                    "DELETE FROM {qualified} WHERE {lhs} IN ({})",
                    vec![one; rows].join(", ")
                );
            }
            let columns = &shapes[shape as usize];
            let names: Vec<String> = columns.iter().map(|&c| name(c as usize)).collect();
            let one = format!("({})", vec!["?"; columns.len()].join(", "));
            let mut updates: Vec<String> = columns
                .iter()
                .filter(|&&c| !table.is_key(c as usize))
                .map(|&c| {
                    let n = name(c as usize);
                    format!("{n} = VALUES({n})")
                })
                .collect();
            if updates.is_empty() {
                let k = name(table.key[0]);
                updates.push(format!("{k} = {k}"));
            }
            format!(
                "INSERT INTO {qualified} ({}) VALUES {} ON DUPLICATE KEY UPDATE {}",
                names.join(", "),
                vec![one; rows].join(", "),
                updates.join(", ")
            )
        })
    }

    /// Runs one statement over rows (their key with `delete`).
    async fn run(&mut self, delete: bool, shape: u32, rows: &[usize]) -> Result<(), Failure> {
        let sql = self.sql(delete, shape, rows.len()).to_string();
        let mut params = Vec::new();
        for &i in rows {
            let row = &self.collector.rows[i];
            if delete {
                for &k in &self.table.key {
                    let cell = self
                        .collector
                        .row_cells(row)
                        .iter()
                        .find(|c| c.column as usize == k);
                    params.push(cell.map_or(Value::NULL, |c| c.value.clone()));
                }
            } else {
                params.extend(
                    self.collector
                        .row_cells(row)
                        .iter()
                        .map(|c| c.value.clone()),
                );
            }
        }
        let conn = self.conn.as_mut().ok_or_else(not_connected)?;
        conn.exec_drop(sql, Params::Positional(params))
            .await
            .map_err(|e| classify(&e))
    }

    /// Runs statements over rows in chunks: full chunks, then power-of-two
    /// sizes, so that few distinct statements are prepared.
    async fn run_chunked(
        &mut self,
        delete: bool,
        shape: u32,
        rows: &[usize],
    ) -> Result<(), Failure> {
        let mut rest = rows;
        while !rest.is_empty() {
            let n = if rest.len() >= self.rows_per_statement {
                self.rows_per_statement
            } else {
                1 << (usize::BITS - 1 - rest.len().leading_zeros())
            };
            let (chunk, tail) = rest.split_at(n);
            self.run(delete, shape, chunk).await?;
            rest = tail;
        }
        Ok(())
    }

    async fn simple(&mut self, sql: &str) -> Result<(), Failure> {
        let conn = self.conn.as_mut().ok_or_else(not_connected)?;
        conn.query_drop(sql).await.map_err(|e| classify(&e))
    }

    async fn apply_batch(&mut self, plan: &Plan) -> Result<(), Failure> {
        self.simple("START TRANSACTION").await?;
        let result = async {
            if self.collector.truncate {
                let sql = format!("DELETE FROM {}", self.qualified);
                self.simple(&sql).await?;
            }
            self.run_chunked(true, 0, &plan.deletes).await?;
            for (shape, rows) in &plan.groups {
                self.run_chunked(false, *shape, rows).await?;
            }
            self.simple("COMMIT").await
        }
        .await;
        if result.is_err() {
            let _ = self.simple("ROLLBACK").await;
        }
        result
    }

    async fn apply_rows(&mut self, plan: &Plan) -> Result<Vec<(usize, String)>, Failure> {
        self.simple("START TRANSACTION").await?;
        let mut refused: Vec<(usize, String)> = Vec::new();
        let result = async {
            if self.collector.truncate {
                let sql = format!("DELETE FROM {}", self.qualified);
                self.simple(&sql).await?;
            }
            let deletes = plan.deletes.iter().map(|&i| (true, 0, i));
            let upserts = plan
                .groups
                .iter()
                .flat_map(|(shape, rows)| rows.iter().map(|&i| (false, *shape, i)));
            let all: Vec<_> = deletes.chain(upserts).collect();
            for (delete, shape, row) in all {
                if refused.iter().any(|(r, _)| *r == row) {
                    continue;
                }
                self.simple("SAVEPOINT syncflow_row").await?;
                match self.run(delete, shape, &[row]).await {
                    Ok(()) => self.simple("RELEASE SAVEPOINT syncflow_row").await?,
                    Err(Failure::Data(message)) => {
                        self.simple("ROLLBACK TO SAVEPOINT syncflow_row").await?;
                        refused.push((
                            row,
                            format!("{} refused the row: {message}", self.table.display),
                        ));
                    }
                    Err(other) => return Err(other),
                }
            }
            self.simple("COMMIT").await
        }
        .await;
        if result.is_err() {
            let _ = self.simple("ROLLBACK").await;
        }
        result.map(|()| refused)
    }

    fn fail(&self, action: &'static str, message: String, hint: &str) -> ConnectorError {
        ConnectorError::server(CONNECTOR, self.target.clone(), action, message, hint)
    }
}

fn not_connected() -> Failure {
    Failure::Connection("not connected".to_string())
}

/// Reads a table's columns, their conversions and the key from the catalog.
/// Errors are (action, message, hint).
async fn load_table(
    conn: &mut Conn,
    db: &str,
    name: &str,
    key: &[String],
) -> Result<(Table, Vec<Kind>), (&'static str, String, String)> {
    let display = format!("{db}.{name}");
    let read = |e: mysql_async::Error| ("read the table's columns", error_text(&e), String::new());
    let columns: Vec<(String, String, String, String)> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, EXTRA FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (db, name),
        )
        .await
        .map_err(read)?;
    if columns.is_empty() {
        return Err((
            "find the table",
            format!("there is no table `{display}`"),
            "create it first (the sink does not create tables), or fix `table`".to_string(),
        ));
    }
    // MariaDB's JSON columns are LONGTEXT with a json_valid() check.
    let checks: Vec<String> = conn
        .exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (db, name),
        )
        .await
        .unwrap_or_default();
    let mut kinds = Vec::with_capacity(columns.len());
    let columns: Vec<Column> = columns
        .into_iter()
        .map(|(column, data_type, column_type, extra)| {
            let json = checks
                .iter()
                .any(|c| c.replace(' ', "") == format!("json_valid(`{column}`)"));
            kinds.push(Kind::of(
                &data_type.to_lowercase(),
                &column_type.to_lowercase(),
                json,
            ));
            let extra = extra.to_uppercase();
            Column {
                json_name: serde_json::to_string(&column).unwrap_or_default(),
                name: column,
                type_name: if json {
                    "json".to_string()
                } else {
                    column_type
                },
                writable: !["GENERATED", "VIRTUAL", "PERSISTENT", "STORED"]
                    .iter()
                    .any(|g| extra.contains(g)),
            }
        })
        .collect();
    let indexes: Vec<(String, String)> = conn
        .exec(
            "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0 ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (db, name),
        )
        .await
        .map_err(read)?;
    let key: Vec<String> = if key.is_empty() {
        indexes
            .iter()
            .filter(|(index, _)| index == "PRIMARY")
            .map(|(_, c)| c.clone())
            .collect()
    } else {
        let mut wanted = key.to_vec();
        wanted.sort();
        let mut by_index: HashMap<&str, Vec<String>> = HashMap::new();
        for (index, column) in &indexes {
            by_index.entry(index).or_default().push(column.clone());
        }
        let found = by_index.values_mut().any(|cols| {
            cols.sort();
            *cols == wanted
        });
        if !found {
            return Err((
                "check the key columns",
                format!(
                    "no unique index of `{display}` is on exactly the key columns ({})",
                    key.join(", ")
                ),
                "create one, or leave `key` empty to use the primary key".to_string(),
            ));
        }
        key.to_vec()
    };
    let table = Table::new(display, columns, &key)
        .map_err(|e| ("read the table's key", e, String::new()))?;
    Ok((table, kinds))
}

impl<T: Serialize + Sync> Sink<T> for MysqlSink {
    fn name(&self) -> String {
        format!("mysql {}", self.target)
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        for item in items {
            self.collector
                .add(item, &self.table, &self.options, &mut self.cells);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        if self.collector.is_empty() {
            return Ok(());
        }
        let plan = self.collector.plan();
        let mut row_by_row = false;
        loop {
            if self.conn.is_none() {
                match open(&self.opts).await {
                    Ok(conn) => self.conn = Some(conn),
                    Err(e) => {
                        let message = error_text(&e);
                        match self.outage.failed_within("reach the database", &message) {
                            Some(wait) => {
                                tokio::time::sleep(wait).await;
                                continue;
                            }
                            None => {
                                return Err(self.fail(
                                    "connect",
                                    message,
                                    "check that the server is running; the batch will be written again by the next run",
                                ));
                            }
                        }
                    }
                }
            }
            let result = if row_by_row {
                self.apply_rows(&plan).await
            } else {
                self.apply_batch(&plan).await.map(|()| Vec::new())
            };
            match result {
                Ok(refused) => {
                    for (row, error) in refused {
                        self.collector.reject_row(row, error);
                    }
                    break;
                }
                Err(Failure::Data(_)) if !row_by_row => row_by_row = true,
                Err(Failure::Connection(message) | Failure::Transient(message)) => {
                    self.conn = None;
                    match self.outage.failed_within("reach the database", &message) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => {
                            return Err(self.fail(
                                "write a batch",
                                message,
                                "check that the server is running; the batch will be written again by the next run",
                            ));
                        }
                    }
                }
                Err(Failure::Data(message) | Failure::Fatal(message)) => {
                    return Err(self.fail(
                        "write a batch",
                        message,
                        "check the table's definition and the sink's `table` and `key`; the batch will be written again by the next run",
                    ));
                }
            }
        }
        self.outage.recovered();
        self.rejects.write(&mut self.collector.rejects).await?;
        if self.collector.clear() {
            self.sql.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_parse_to_utc() {
        assert_eq!(
            parse_datetime("2024-02-29"),
            Some((2024, 2, 29, 0, 0, 0, 0))
        );
        assert_eq!(
            parse_datetime("2024-01-02T03:04:05.123Z"),
            Some((2024, 1, 2, 3, 4, 5, 123_000))
        );
        assert_eq!(
            parse_datetime("2024-01-01 01:30:00+02:00"),
            Some((2023, 12, 31, 23, 30, 0, 0))
        );
        assert_eq!(
            parse_datetime("2024-12-31T23:00:00-0130"),
            Some((2025, 1, 1, 0, 30, 0, 0))
        );
        assert_eq!(parse_datetime("2023-02-29"), None);
        assert_eq!(parse_datetime("2024-01-02T25:00:00"), None);
        assert_eq!(parse_datetime("yesterday"), None);
    }

    #[test]
    fn values_convert_by_column_kind() {
        assert_eq!(encode(Kind::Int, "42"), Ok(Value::Int(42)));
        assert_eq!(encode(Kind::Int, "\"42\""), Ok(Value::Int(42)));
        assert_eq!(encode(Kind::Int, "true"), Ok(Value::Int(1)));
        assert_eq!(encode(Kind::Int, "1.0"), Ok(Value::Int(1)));
        assert!(encode(Kind::Int, "1.5").is_err());
        assert!(encode(Kind::Int, "\"abc\"").is_err());
        assert_eq!(
            encode(Kind::UInt, "18446744073709551615"),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(
            encode(Kind::Decimal, "12345678901234.123456"),
            Ok(Value::Bytes(b"12345678901234.123456".to_vec()))
        );
        assert_eq!(encode(Kind::Float, "1.5"), Ok(Value::Double(1.5)));
        assert_eq!(
            encode(Kind::Text, "\"a\\\"b\""),
            Ok(Value::Bytes(b"a\"b".to_vec()))
        );
        assert_eq!(encode(Kind::Text, "5"), Ok(Value::Bytes(b"5".to_vec())));
        assert_eq!(
            encode(Kind::Json, "\"s\""),
            Ok(Value::Bytes(b"\"s\"".to_vec()))
        );
        assert_eq!(
            encode(Kind::Json, "{\"a\":1}"),
            Ok(Value::Bytes(b"{\"a\":1}".to_vec()))
        );
        assert_eq!(encode(Kind::Text, "null"), Ok(Value::NULL));
        assert_eq!(
            encode(Kind::DateTime, "\"2024-01-02T03:04:05Z\""),
            Ok(Value::Date(2024, 1, 2, 3, 4, 5, 0))
        );
        assert_eq!(
            encode(Kind::Date, "\"2024-01-02\""),
            Ok(Value::Date(2024, 1, 2, 0, 0, 0, 0))
        );
        assert!(encode(Kind::Date, "20240102").is_err());
        assert!(encode(Kind::Int, "{\"a\":1}").is_err());
    }
}
