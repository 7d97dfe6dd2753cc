//! The PostgreSQL sink: batched, idempotent upserts and deletes by primary key.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Statement};

use super::{CONNECTOR, classify, connect, describe, error_text, parse_url, split_table};
use crate::connector::sql::{
    CellEncoder, Collector, Column, Failure, IngestOptions, InputFormat, NoRowEvents, Outage, Plan,
    Rejects, RetryConfig, Table, UnknownColumns, quote_ident,
};
use crate::connector::{ConnectorError, Sink};

/// Configuration of a [`PostgresSink`] (`sinks: [ { postgres: {...} } ]` in
/// flow files).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// Connection string: `postgres://user:password@host:5432/database` or
    /// `host=... port=... user=... password=... dbname=...` (no TLS).
    pub url: String,
    /// The table: `name` (in schema `public`) or `schema.name`.
    pub table: String,
    /// The columns rows are matched by; by default the table's primary key,
    /// read from the catalog. Other columns need a unique index.
    #[serde(default)]
    pub key: Vec<String>,
    /// What the messages are: `auto` (default: change events are recognized
    /// by their `op`, `source` and `before`/`after`), `rows` or `cdc`.
    #[serde(default)]
    pub input: InputFormat,
    /// A message field that is not a column: `reject` (default: the message
    /// is dead-lettered) or `ignore`.
    #[serde(default)]
    pub unknown_columns: UnknownColumns,
    /// Change events with `op: t` (truncate): `ignore` (default), `apply`
    /// (delete every row) or `reject`.
    #[serde(default)]
    pub on_truncate: NoRowEvents,
    /// Change events with `op: ddl`: `ignore` (default) or `reject`.
    #[serde(default)]
    pub on_ddl: NoRowEvents,
    /// A JSON-lines file receiving the messages the sink rejects (unknown
    /// column, missing key, a value the database refuses), one
    /// `DeadLetter` per line. Without it they are only logged (`warn`).
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// Rows per statement (default 1000).
    #[serde(default = "default_rows_per_statement")]
    pub rows_per_statement: usize,
    /// How a lost connection is retried.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_rows_per_statement() -> usize {
    1000
}

impl PostgresSinkConfig {
    /// A configuration with the defaults, writing to `table` of the
    /// database at `url`.
    pub fn new(url: impl Into<String>, table: impl Into<String>) -> Self {
        PostgresSinkConfig {
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

    /// Says what the messages are (default [`InputFormat::Auto`]).
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

    /// Rows per statement.
    pub fn rows_per_statement(mut self, rows: usize) -> Self {
        self.rows_per_statement = rows;
        self
    }

    /// How lost connections are retried.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    pub(crate) fn ingest_options(&self) -> IngestOptions {
        IngestOptions {
            input: self.input,
            unknown_columns: self.unknown_columns,
            on_truncate: self.on_truncate,
            on_ddl: self.on_ddl,
        }
    }
}

/// Writes rows and change events into a PostgreSQL table.
///
/// Messages are plain JSON objects (one field per column: an upsert) or
/// [`ChangeEvent`](crate::cdc::ChangeEvent) envelopes (`c`, `u`, `r`: upsert
/// of `after`; `d`: delete by the key in `before`). Between two flushes the
/// changes are collapsed per primary key; a flush writes them in **one
/// transaction**: deletes, then one multi-row statement per set of columns,
///
/// ```sql
/// INSERT INTO "public"."orders" ("id", "qty")
///   SELECT "id", "qty" FROM json_populate_recordset(NULL::"public"."orders", $1::json)
///   ON CONFLICT ("id") DO UPDATE SET "qty" = EXCLUDED."qty"
/// ```
///
/// prepared once per set of columns. PostgreSQL itself converts the JSON
/// values to the column types, so every type with a text form works
/// (numbers, text, booleans, dates and timestamps in ISO 8601, `json` and
/// `jsonb`, arrays...). Replaying a batch leaves the same rows, so
/// at-least-once delivery gives exactly-once results.
///
/// A message the sink cannot apply (unknown column, missing key, a value
/// the database refuses) is rejected: logged, written to the
/// [`dead_letter`](PostgresSinkConfig::dead_letter) file, and the flow
/// goes on. A lost connection is retried with backoff.
pub struct PostgresSink {
    pg: tokio_postgres::Config,
    target: String,
    rows_per_statement: usize,
    client: Option<Client>,
    statements: HashMap<StatementKey, Statement>,
    table: Table,
    qualified: String,
    options: IngestOptions,
    collector: Collector<Range<u32>>,
    rejects: Rejects,
    param: String,
    outage: Outage,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("target", &self.target)
            .field("key", &self.table.key)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum StatementKey {
    Upsert(u32),
    Delete,
}

/// Keeps each value's JSON text: PostgreSQL converts it.
struct JsonCells;

impl CellEncoder for JsonCells {
    type Value = Range<u32>;
    fn encode(&mut self, _: usize, _: &str, at: Range<u32>) -> Result<Range<u32>, String> {
        Ok(at)
    }
}

/// A JSON text sent as a `json` (or `jsonb`) parameter.
#[derive(Debug)]
struct JsonText<'a>(&'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == Type::JSONB {
            out.extend_from_slice(&[1]);
        }
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON || *ty == Type::JSONB
    }
    to_sql_checked!();
}

impl PostgresSink {
    /// Connects, reads the table's columns and primary key from the
    /// catalog, and opens the dead-letter file if one is configured.
    pub async fn connect(config: &PostgresSinkConfig) -> Result<Self, ConnectorError> {
        let pg = parse_url(&config.url)?;
        let (schema, name) = split_table(&config.table);
        let target = format!("{} table {schema}.{name}", describe(&pg));
        if config.on_ddl == NoRowEvents::Apply {
            return Err(ConnectorError::server(
                CONNECTOR,
                target,
                "configure the sink",
                "`on_ddl: apply` is not supported",
                "use `ignore` or `reject`: schema changes are not replayed",
            ));
        }
        if config.rows_per_statement == 0 {
            return Err(ConnectorError::server(
                CONNECTOR,
                target,
                "configure the sink",
                "`rows_per_statement` is 0",
                "set it to 1 or more (default 1000)",
            ));
        }
        let client = connect(&pg).await.map_err(|e| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "connect",
                error_text(&e),
                "check that PostgreSQL is running and the connection string (host, port, user, database)",
            )
        })?;
        let table = load_table(&client, &schema, &name, &config.key)
            .await
            .map_err(|(action, message, hint)| {
                ConnectorError::server(CONNECTOR, target.clone(), action, message, hint)
            })?;
        let rejects = Rejects::open(config.dead_letter.as_ref(), target.clone(), "postgres sink")?;
        Ok(PostgresSink {
            pg,
            outage: config.retry.outage(CONNECTOR, &target),
            target,
            rows_per_statement: config.rows_per_statement,
            client: Some(client),
            statements: HashMap::new(),
            qualified: format!("{}.{}", quote_ident(&schema), quote_ident(&name)),
            table,
            options: config.ingest_options(),
            collector: Collector::default(),
            rejects,
            param: String::new(),
        })
    }

    /// The columns rows are matched by.
    pub fn key_columns(&self) -> Vec<&str> {
        self.table
            .key
            .iter()
            .map(|&k| self.table.columns[k].name.as_str())
            .collect()
    }

    /// Messages rejected so far (dead-lettered).
    pub fn rejected(&self) -> u64 {
        self.rejects.total
    }

    fn statement_sql(&self, key: StatementKey) -> String {
        let q = &self.qualified;
        let key_cols: Vec<String> = self
            .table
            .key
            .iter()
            .map(|&k| quote_ident(&self.table.columns[k].name))
            .collect();
        match key {
            StatementKey::Delete => {
                let on: Vec<String> = key_cols.iter().map(|c| format!("t.{c} = k.{c}")).collect();
                format!(
                    "DELETE FROM {q} AS t USING json_populate_recordset(NULL::{q}, $1::json) AS k WHERE {}",
                    on.join(" AND ")
                )
            }
            StatementKey::Upsert(shape) => {
                let columns = &self.collector.shape_columns[shape as usize];
                let names: Vec<String> = columns
                    .iter()
                    .map(|&c| quote_ident(&self.table.columns[c as usize].name))
                    .collect();
                let updates: Vec<String> = columns
                    .iter()
                    .filter(|&&c| !self.table.is_key(c as usize))
                    .map(|&c| {
                        let n = quote_ident(&self.table.columns[c as usize].name);
                        format!("{n} = EXCLUDED.{n}")
                    })
                    .collect();
                let action = if updates.is_empty() {
                    "DO NOTHING".to_string()
                } else {
                    format!("DO UPDATE SET {}", updates.join(", "))
                };
                format!(
                    "INSERT INTO {q} ({cols}) SELECT {cols} FROM json_populate_recordset(NULL::{q}, $1::json) ON CONFLICT ({keys}) {action}",
                    cols = names.join(", "),
                    keys = key_cols.join(", ")
                )
            }
        }
    }

    async fn statement(&mut self, key: StatementKey) -> Result<Statement, Failure> {
        if let Some(s) = self.statements.get(&key) {
            return Ok(s.clone());
        }
        let sql = self.statement_sql(key);
        let client = self.client.as_ref().ok_or_else(not_connected)?;
        let statement = client.prepare(&sql).await.map_err(|e| classify(&e))?;
        self.statements.insert(key, statement.clone());
        Ok(statement)
    }

    /// Runs a statement over rows (a JSON array of them, built in `param`).
    async fn run(&mut self, key: StatementKey, rows: &[usize]) -> Result<(), Failure> {
        let statement = self.statement(key).await?;
        write_rows(
            &self.collector,
            &self.table,
            rows,
            key == StatementKey::Delete,
            &mut self.param,
        );
        let client = self.client.as_ref().ok_or_else(not_connected)?;
        client
            .execute(&statement, &[&JsonText(&self.param)])
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }

    async fn simple(&self, sql: &str) -> Result<(), Failure> {
        let client = self.client.as_ref().ok_or_else(not_connected)?;
        client.batch_execute(sql).await.map_err(|e| classify(&e))
    }

    /// Writes the whole batch in one transaction.
    async fn apply_batch(&mut self, plan: &Plan) -> Result<(), Failure> {
        self.simple("BEGIN").await?;
        let result = async {
            if self.collector.truncate {
                self.simple(&format!("DELETE FROM {}", self.qualified))
                    .await?;
            }
            for chunk in plan.deletes.chunks(self.rows_per_statement) {
                self.run(StatementKey::Delete, chunk).await?;
            }
            for (shape, rows) in &plan.groups {
                for chunk in rows.chunks(self.rows_per_statement) {
                    self.run(StatementKey::Upsert(*shape), chunk).await?;
                }
            }
            self.simple("COMMIT").await
        }
        .await;
        if result.is_err() {
            let _ = self.simple("ROLLBACK").await;
        }
        result
    }

    /// Writes the batch row by row in one transaction, each row in a
    /// savepoint; returns the rows the database refused, with its reason.
    async fn apply_rows(&mut self, plan: &Plan) -> Result<Vec<(usize, String)>, Failure> {
        self.simple("BEGIN").await?;
        let mut refused = Vec::new();
        let result = async {
            if self.collector.truncate {
                self.simple(&format!("DELETE FROM {}", self.qualified))
                    .await?;
            }
            let deletes = plan.deletes.iter().map(|&i| (StatementKey::Delete, i));
            let upserts = plan
                .groups
                .iter()
                .flat_map(|(shape, rows)| rows.iter().map(|&i| (StatementKey::Upsert(*shape), i)));
            let all: Vec<_> = deletes.chain(upserts).collect();
            for (key, row) in all {
                if refused.iter().any(|(r, _)| *r == row) {
                    continue;
                }
                self.simple("SAVEPOINT syncflow_row").await?;
                match self.run(key, &[row]).await {
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

    async fn reconnect(&mut self) -> Result<(), Failure> {
        self.client = None;
        self.statements.clear();
        let client = connect(&self.pg).await.map_err(|e| classify(&e))?;
        self.client = Some(client);
        Ok(())
    }

    fn fail(&self, action: &'static str, message: String, hint: &str) -> ConnectorError {
        ConnectorError::server(CONNECTOR, self.target.clone(), action, message, hint)
    }
}

fn not_connected() -> Failure {
    Failure::Connection("not connected".to_string())
}

/// Writes rows as a JSON array of objects (only the key columns with `key_only`).
fn write_rows(
    collector: &Collector<Range<u32>>,
    table: &Table,
    rows: &[usize],
    key_only: bool,
    out: &mut String,
) {
    out.clear();
    out.push('[');
    for (n, &i) in rows.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push('{');
        let row = &collector.rows[i];
        let mut first = true;
        for cell in collector.row_cells(row) {
            let column = cell.column as usize;
            if key_only && !table.is_key(column) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(&table.columns[column].json_name);
            out.push(':');
            out.push_str(&collector.inputs[cell.value.start as usize..cell.value.end as usize]);
        }
        out.push('}');
    }
    out.push(']');
}

/// Reads a table's columns and key from the catalog. Errors are (action,
/// message, hint).
async fn load_table(
    client: &Client,
    schema: &str,
    name: &str,
    key: &[String],
) -> Result<Table, (&'static str, String, String)> {
    let display = format!("{schema}.{name}");
    let read =
        |e: tokio_postgres::Error| ("read the table's columns", error_text(&e), String::new());
    let oid: Option<u32> = client
        .query_opt(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await
        .map_err(read)?
        .map(|row| row.get(0));
    let Some(oid) = oid else {
        return Err((
            "find the table",
            format!("there is no table `{display}`"),
            "create it first (the sink does not create tables), or fix `table` (`schema.name`; names are case-sensitive)".to_string(),
        ));
    };
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated::text = '' \
             FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(read)?;
    let columns: Vec<Column> = rows
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            Column {
                json_name: serde_json::to_string(&name).unwrap_or_default(),
                name,
                type_name: r.get(1),
                writable: r.get(2),
            }
        })
        .collect();
    let key: Vec<String> = if key.is_empty() {
        client
            .query(
                "SELECT a.attname::text FROM pg_index i \
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.ord",
                &[&oid],
            )
            .await
            .map_err(read)?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        let unique: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = $1 AND i.indisunique \
                 AND i.indpred IS NULL AND i.indexprs IS NULL AND \
                 (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a \
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[])) \
                 = (SELECT array_agg(x ORDER BY x) FROM unnest($2::text[]) AS x))",
                &[&oid, &key],
            )
            .await
            .map_err(read)?
            .get(0);
        if !unique {
            return Err((
                "check the key columns",
                format!(
                    "no unique index of `{display}` is on exactly the key columns ({})",
                    key.join(", ")
                ),
                "create one (`CREATE UNIQUE INDEX ... (columns)`), or leave `key` empty to use the primary key".to_string(),
            ));
        }
        key.to_vec()
    };
    Table::new(display, columns, &key).map_err(|e| ("read the table's key", e, String::new()))
}

impl<T: Serialize + Sync> Sink<T> for PostgresSink {
    fn name(&self) -> String {
        format!("postgres {}", self.target)
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        for item in items {
            self.collector
                .add(item, &self.table, &self.options, &mut JsonCells);
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
            if self.client.as_ref().is_none_or(Client::is_closed)
                && let Err(failure) = self.reconnect().await
            {
                let message = match failure {
                    Failure::Connection(m) | Failure::Transient(m) => m,
                    Failure::Data(m) | Failure::Fatal(m) => {
                        return Err(self.fail("connect", m, "check the server's log"));
                    }
                };
                match self.outage.failed_within("reach the database", &message) {
                    Some(wait) => {
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    None => {
                        return Err(self.fail(
                            "connect",
                            message,
                            "check that PostgreSQL is running; the batch will be written again by the next run",
                        ));
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
                    self.client = None;
                    match self.outage.failed_within("reach the database", &message) {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => {
                            return Err(self.fail(
                                "write a batch",
                                message,
                                "check that PostgreSQL is running; the batch will be written again by the next run",
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
            self.statements.clear();
        }
        Ok(())
    }
}
