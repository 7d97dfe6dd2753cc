//! The PostgreSQL change-data-capture source: logical replication with
//! `pgoutput`, read by polling `pg_logical_slot_peek_binary_changes`, and
//! confirmed with `pg_replication_slot_advance` once the runtime
//! acknowledged.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, Notify};
use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, Row, SimpleQueryMessage, Statement};

use super::pgoutput::{self, Message, Relation, Tuple, Value, format_lsn, parse_lsn};
use super::{CONNECTOR, classify, connect, describe, error_text, parse_url, split_table};
use crate::connector::sql::{Failure, Outage, RetryConfig, quote_ident};
use crate::connector::{
    Acker, Batch, ConnectorError, DecodeFn, Phase, Read, Source, SourceProgress, Unit, serde_decode,
};

/// Prefix of the logical decoding messages syncflow writes (snapshot markers).
const MARKER_PREFIX: &str = "syncflow";

/// Tables whose row estimate (`pg_class.reltuples`, -1 when never analyzed)
/// is below this are counted exactly, in the snapshot's transaction, when
/// their turn comes: a few milliseconds for such a table, and where the
/// estimate is most often missing or stale (a table filled since the last
/// `ANALYZE`). Larger tables keep the estimate; each table's share of the
/// expected total becomes the rows actually read once it is done.
const COUNT_BELOW: i64 = 100_000;

/// When the source reads the published tables' existing rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// When the slot is created (the first run): every row of every
    /// published table is read (`op: r`) before the changes that follow.
    /// Default.
    #[default]
    Initial,
    /// Never: only changes made after the slot was created are read.
    Never,
    /// At every start: a new snapshot follows the changes not yet
    /// acknowledged.
    Always,
}

/// Configuration of a [`PostgresCdcSource`] (`source: { postgres: {...} }`
/// in flow files).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresCdcSourceConfig {
    /// Connection string: `postgres://user:password@host:5432/database` or
    /// `host=... user=... dbname=...`. The user needs the `REPLICATION`
    /// attribute (or superuser), and the server `wal_level = logical`.
    pub url: String,
    /// The tables to capture (`name` in schema `public`, or `schema.name`).
    /// The publication is created with them if missing, and tables missing
    /// from an existing publication are added to it. Empty: the publication
    /// must exist, and its tables are captured.
    #[serde(default)]
    pub tables: Vec<String>,
    /// The publication's name (default `syncflow`).
    #[serde(default = "default_name")]
    pub publication: String,
    /// The replication slot's name (default `syncflow`); it keeps the
    /// position the runtime acknowledged. One slot per running source.
    #[serde(default = "default_name")]
    pub slot: String,
    /// When existing rows are read: `initial` (default), `never`, `always`.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// How long to wait between two polls that found nothing, in
    /// milliseconds (default 200): the latency of an idle source.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Changes asked for per poll, beyond those already read but not yet
    /// acknowledged (default 10000; whole transactions are always read).
    #[serde(default = "default_changes_per_poll")]
    pub changes_per_poll: u32,
    /// Changes read but not yet acknowledged before the source waits for
    /// acknowledgements (default 100000).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u64,
    /// How a lost connection is retried.
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_name() -> String {
    "syncflow".to_string()
}
fn default_poll_interval_ms() -> u64 {
    200
}
fn default_changes_per_poll() -> u32 {
    10_000
}
fn default_max_in_flight() -> u64 {
    100_000
}

impl PostgresCdcSourceConfig {
    /// A configuration with the defaults, capturing `tables` of the
    /// database at `url`.
    pub fn new<S: Into<String>>(
        url: impl Into<String>,
        tables: impl IntoIterator<Item = S>,
    ) -> Self {
        PostgresCdcSourceConfig {
            url: url.into(),
            tables: tables.into_iter().map(Into::into).collect(),
            publication: default_name(),
            slot: default_name(),
            snapshot: SnapshotMode::default(),
            poll_interval_ms: default_poll_interval_ms(),
            changes_per_poll: default_changes_per_poll(),
            max_in_flight: default_max_in_flight(),
            retry: RetryConfig::default(),
        }
    }

    /// Uses this publication.
    pub fn publication(mut self, name: impl Into<String>) -> Self {
        self.publication = name.into();
        self
    }

    /// Uses this replication slot.
    pub fn slot(mut self, name: impl Into<String>) -> Self {
        self.slot = name.into();
        self
    }

    /// When existing rows are read.
    pub fn snapshot(mut self, mode: SnapshotMode) -> Self {
        self.snapshot = mode;
        self
    }

    /// The wait between two empty polls.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval_ms = interval.as_millis() as u64;
        self
    }

    /// How lost connections are retried.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }
}

/// The connection shared by the source and its acker (one at a time: a
/// slot can be used by one session at once).
struct Control {
    pg: tokio_postgres::Config,
    target: String,
    client: Option<Client>,
    peek: Option<Statement>,
    outage: Outage,
    next_attempt: Instant,
}

impl Control {
    /// The client, connecting if needed (one attempt).
    async fn client(&mut self) -> Result<&Client, Failure> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.lost();
        }
        if self.client.is_none() {
            let client = connect(&self.pg).await.map_err(|e| classify(&e))?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| Failure::Connection("not connected".into()))
    }

    /// While disconnected and before the next attempt is due: how long
    /// until it is.
    fn waiting(&self) -> Option<Duration> {
        if self.client.is_some() {
            return None;
        }
        let wait = self.next_attempt.saturating_duration_since(Instant::now());
        (!wait.is_zero()).then_some(wait)
    }

    fn lost(&mut self) {
        self.client = None;
        self.peek = None;
    }

    /// Handles a failure: `Ok` when it is worth retrying later (the
    /// connection is dropped and the next attempt paced), else the error.
    fn failed(&mut self, failure: Failure, action: &'static str) -> Result<(), ConnectorError> {
        let message = match failure {
            Failure::Connection(m) | Failure::Transient(m) => m,
            Failure::Data(m) | Failure::Fatal(m) => {
                return Err(ConnectorError::server(
                    CONNECTOR,
                    self.target.clone(),
                    action,
                    m,
                    "check the slot, the publication and the user's rights (REPLICATION)",
                ));
            }
        };
        self.lost();
        match self.outage.failed_within("reach the database", &message) {
            Some(wait) => {
                self.next_attempt = Instant::now() + wait;
                Ok(())
            }
            None => Err(ConnectorError::server(
                CONNECTOR,
                self.target.clone(),
                action,
                message,
                "check that PostgreSQL is running; the next run resumes from the last acknowledged position",
            )),
        }
    }

    /// Moves the slot's confirmed position to `lsn`, if it is ahead.
    async fn advance(
        &mut self,
        slot: &str,
        lsn: u64,
        confirmed: &AtomicU64,
    ) -> Result<(), Failure> {
        if lsn <= confirmed.load(Ordering::Acquire) {
            return Ok(());
        }
        let client = self.client().await?;
        client
            .execute(
                "SELECT pg_replication_slot_advance($1, ($2::text)::pg_lsn)",
                &[&slot, &format_lsn(lsn)],
            )
            .await
            .map_err(|e| classify(&e))?;
        confirmed.fetch_max(lsn, Ordering::AcqRel);
        Ok(())
    }
}

/// A transaction being read.
struct Txn {
    skip: bool,
    ts_ms: u64,
    rows: u64,
    marker: bool,
}

/// A snapshot being read: the published tables, one cursor at a time, in
/// one repeatable-read transaction of a connection of its own.
struct Snapshot {
    /// End of the marker transaction: acknowledging the snapshot's last
    /// batch confirms it, so that a restart does not read it again.
    marker_end: u64,
    pos: String,
    ts_ms: u64,
    client: Option<Client>,
    tables: Vec<SnapTable>,
    index: usize,
    cursor_open: bool,
    rows: u64,
    /// Rows expected in all (read, counted or estimated), and of the
    /// table being read.
    expected: u64,
    table_expected: u64,
    table_rows: u64,
}

/// Replaces a table's share (`was`) of the snapshot's `expected` total by `now`.
fn correct(expected: &mut u64, progress: &SourceProgress, was: u64, now: u64) {
    *expected = (*expected + now).saturating_sub(was);
    progress.set_total(Some(*expected));
}

struct SnapTable {
    schema: String,
    name: String,
    columns: Vec<(String, u32)>,
    /// `pg_class.reltuples`: an estimate, -1 when never analyzed.
    estimate: i64,
}

impl SnapTable {
    fn estimate(&self) -> u64 {
        self.estimate.max(0) as u64
    }
}

/// Reads the changes of PostgreSQL tables through logical replication
/// (`pgoutput`), as [`ChangeEvent`](crate::cdc::ChangeEvent) envelopes
/// decoded into the flow's input type.
///
/// On connect, the publication and the replication slot are created if
/// missing. A new slot is followed by a snapshot of the published tables
/// (`op: r`), then by the changes committed since (`c`, `u`, `d`, `t`), in
/// commit order. The slot's confirmed position moves only over changes the
/// runtime acknowledged, so a restart resumes after the last acknowledged
/// transaction: at-least-once delivery.
///
/// ```no_run
/// # async fn run() -> Result<(), syncflow::connector::ConnectorError> {
/// use syncflow::cdc::ChangeEvent;
/// use syncflow::connector::postgres::{PostgresCdcSource, PostgresCdcSourceConfig};
///
/// let config = PostgresCdcSourceConfig::new("postgres://postgres@127.0.0.1/shop", ["orders"])
///     .slot("shop_orders");
/// let source = PostgresCdcSource::<ChangeEvent>::connect(&config).await?;
/// # Ok(()) }
/// ```
pub struct PostgresCdcSource<T> {
    name: Arc<str>,
    target: String,
    slot: String,
    publication: String,
    db: String,
    decode: DecodeFn<T>,
    control: Arc<Mutex<Control>>,
    confirmed: Arc<AtomicU64>,
    acked: Arc<Notify>,
    poll_interval: Duration,
    changes_per_poll: u32,
    max_in_flight: u64,
    relations: HashMap<u32, Relation>,
    pending: VecDeque<Row>,
    txn: Option<Txn>,
    /// End of the last transaction read whole: later polls skip it.
    emitted_end: u64,
    /// Transactions read but not confirmed: (end LSN, rows of the poll result).
    in_flight: VecDeque<(u64, u64)>,
    in_flight_rows: u64,
    last_empty_poll: Option<Instant>,
    snapshot: Option<Snapshot>,
    marker: Vec<u8>,
    buf: Vec<u8>,
    snapshot_position: u64,
    /// The snapshot's rows read of the rows expected, then `streaming`.
    progress: SourceProgress,
}

impl<T> std::fmt::Debug for PostgresCdcSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCdcSource")
            .field("target", &self.target)
            .field("slot", &self.slot)
            .field("publication", &self.publication)
            .finish()
    }
}

/// Acknowledges a [`PostgresCdcSource`]'s batches: moves the replication
/// slot's confirmed position over the transactions the runtime confirmed.
pub struct PostgresCdcAcker {
    control: Arc<Mutex<Control>>,
    confirmed: Arc<AtomicU64>,
    notify: Arc<Notify>,
    slot: String,
    acked: u64,
}

impl std::fmt::Debug for PostgresCdcAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresCdcAcker")
            .field("slot", &self.slot)
            .field("acked", &format_lsn(self.acked))
            .finish()
    }
}

impl Acker for PostgresCdcAcker {
    /// The end LSN of the last transaction read whole by the batch, if any.
    type Ack = Option<u64>;

    fn ack(&mut self, ack: Option<u64>) {
        if let Some(lsn) = ack {
            self.acked = self.acked.max(lsn);
        }
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.acked <= self.confirmed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut control = self.control.lock().await;
        // A few attempts; past them the position stays behind (the changes
        // would be read again after a restart) and the next commit retries.
        for attempt in 1..=3u32 {
            if let Some(wait) = control.waiting() {
                tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
            }
            match control
                .advance(&self.slot, self.acked, &self.confirmed)
                .await
            {
                Ok(()) => {
                    self.notify.notify_waiters();
                    return Ok(());
                }
                Err(failure) => {
                    control.failed(failure, "confirm the replication slot's position")?;
                    if attempt == 3 {
                        break;
                    }
                }
            }
        }
        tracing::warn!(
            connector = CONNECTOR,
            target = %control.target,
            slot = %self.slot,
            lsn = %format_lsn(self.acked),
            "cannot confirm the slot's position now; will retry at the next acknowledgement"
        );
        Ok(())
    }
}

impl<T: DeserializeOwned + Send + 'static> PostgresCdcSource<T> {
    /// Connects with the default decoder (serde).
    pub async fn connect(config: &PostgresCdcSourceConfig) -> Result<Self, ConnectorError> {
        Self::connect_with(config, serde_decode::<T>).await
    }
}

impl<T: Send + 'static> PostgresCdcSource<T> {
    /// Connects, creates the publication and the slot if missing, and
    /// decodes each change event with `decode`.
    pub async fn connect_with(
        config: &PostgresCdcSourceConfig,
        decode: DecodeFn<T>,
    ) -> Result<Self, ConnectorError> {
        let pg = parse_url(&config.url)?;
        let target = describe(&pg);
        let fail = |action: &'static str, e: tokio_postgres::Error, hint: &str| {
            ConnectorError::server(CONNECTOR, target.clone(), action, error_text(&e), hint)
        };
        let client = connect(&pg).await.map_err(|e| {
            fail(
                "connect",
                e,
                "check that PostgreSQL is running and the connection string (host, port, user, database)",
            )
        })?;
        let row = client
            .query_one(
                "SELECT current_database()::text, current_setting('wal_level')",
                &[],
            )
            .await
            .map_err(|e| fail("read the server settings", e, ""))?;
        let db: String = row.get(0);
        let wal_level: String = row.get(1);
        if wal_level != "logical" {
            return Err(ConnectorError::server(
                CONNECTOR,
                target,
                "start logical replication",
                format!("the server has wal_level = {wal_level}"),
                "set `wal_level = logical` in postgresql.conf (or ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL",
            ));
        }
        ensure_publication(&client, &config.publication, &config.tables)
            .await
            .map_err(|(action, message, hint)| {
                ConnectorError::server(CONNECTOR, target.clone(), action, message, hint)
            })?;
        let slot = client
            .query_opt(
                "SELECT plugin::text, database::text, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&config.slot],
            )
            .await
            .map_err(|e| fail("read the replication slot", e, ""))?;
        let (created, confirmed) = match slot {
            Some(row) => {
                let plugin: Option<String> = row.get(0);
                let slot_db: Option<String> = row.get(1);
                if plugin.as_deref() != Some("pgoutput") || slot_db.as_deref() != Some(&db) {
                    return Err(ConnectorError::server(
                        CONNECTOR,
                        target,
                        "use the replication slot",
                        format!(
                            "slot `{}` exists but is not a pgoutput slot of database `{db}` (plugin {plugin:?}, database {slot_db:?})",
                            config.slot
                        ),
                        "choose another `slot` name, or drop that slot",
                    ));
                }
                let lsn: Option<String> = row.get(2);
                (false, lsn.as_deref().and_then(parse_lsn).unwrap_or(0))
            }
            None => {
                let row = client
                    .query_one(
                        "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                        &[&config.slot],
                    )
                    .await
                    .map_err(|e| {
                        fail(
                            "create the replication slot",
                            e,
                            "the user needs the REPLICATION attribute, and max_replication_slots a free slot",
                        )
                    })?;
                let lsn: String = row.get(0);
                tracing::info!(connector = CONNECTOR, target = %target, slot = %config.slot, lsn, "created replication slot");
                (true, parse_lsn(&lsn).unwrap_or(0))
            }
        };
        let marker = serde_json::json!({ "snapshot": config.slot }).to_string();
        let snapshot = match config.snapshot {
            SnapshotMode::Initial => created,
            SnapshotMode::Always => true,
            SnapshotMode::Never => false,
        };
        if snapshot {
            client
                .execute(
                    "SELECT pg_logical_emit_message(true, $1, $2)",
                    &[&MARKER_PREFIX, &marker],
                )
                .await
                .map_err(|e| fail("write the snapshot marker", e, ""))?;
        }
        let name: Arc<str> = Arc::from(format!("postgres {target} slot {}", config.slot));
        let progress = SourceProgress::new();
        if !snapshot {
            progress.streaming();
        }
        Ok(PostgresCdcSource {
            name,
            slot: config.slot.clone(),
            publication: config.publication.clone(),
            db,
            decode,
            control: Arc::new(Mutex::new(Control {
                pg,
                target: target.clone(),
                client: Some(client),
                peek: None,
                outage: config.retry.outage(CONNECTOR, &target),
                next_attempt: Instant::now(),
            })),
            target,
            confirmed: Arc::new(AtomicU64::new(confirmed)),
            acked: Arc::new(Notify::new()),
            poll_interval: Duration::from_millis(config.poll_interval_ms.max(1)),
            changes_per_poll: config.changes_per_poll.max(1),
            max_in_flight: config.max_in_flight.max(1),
            relations: HashMap::new(),
            pending: VecDeque::new(),
            txn: None,
            emitted_end: 0,
            in_flight: VecDeque::new(),
            in_flight_rows: 0,
            last_empty_poll: None,
            snapshot: None,
            marker: marker.into_bytes(),
            buf: Vec::new(),
            snapshot_position: 0,
            progress,
        })
    }
}

impl PostgresCdcSourceConfig {
    /// Drops the replication slot, if it exists; returns whether it did.
    /// Without its slot, a source starts over (with a new snapshot) and the
    /// server no longer keeps WAL for it: drop the slot of a flow you
    /// remove, or the server's disk fills up with WAL. Waits up to 5 s for
    /// a source that just stopped to release the slot.
    pub async fn drop_slot(&self) -> Result<bool, ConnectorError> {
        let pg = parse_url(&self.url)?;
        let target = describe(&pg);
        let fail = |e: tokio_postgres::Error| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "drop the replication slot",
                error_text(&e),
                "stop the source using it first (a slot in use cannot be dropped)",
            )
        };
        let client = connect(&pg).await.map_err(fail)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let dropped = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.slot],
                )
                .await;
            match dropped {
                Ok(n) => return Ok(n > 0),
                Err(e) if slot_in_use(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(fail(e)),
            }
        }
    }

    /// Drops the publication, if it exists; returns whether it did.
    pub async fn drop_publication(&self) -> Result<bool, ConnectorError> {
        let pg = parse_url(&self.url)?;
        let target = describe(&pg);
        let fail = |e: tokio_postgres::Error| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "drop the publication",
                error_text(&e),
                "",
            )
        };
        let client = connect(&pg).await.map_err(fail)?;
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[&self.publication],
            )
            .await
            .map_err(fail)?
            .is_some();
        if exists {
            client
                .batch_execute(&format!(
                    "DROP PUBLICATION IF EXISTS {}",
                    quote_ident(&self.publication)
                ))
                .await
                .map_err(fail)?;
        }
        Ok(exists)
    }
}

/// Whether an error says the slot is used by another session (55006).
fn slot_in_use(error: &tokio_postgres::Error) -> bool {
    error
        .as_db_error()
        .is_some_and(|db| db.code().code() == "55006")
}

/// Creates the publication if missing, and adds the configured tables
/// missing from it. Errors are (action, message, hint).
async fn ensure_publication(
    client: &Client,
    publication: &str,
    tables: &[String],
) -> Result<(), (&'static str, String, String)> {
    let read = |e: tokio_postgres::Error| ("read the publication", error_text(&e), String::new());
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(read)?
        .is_some();
    let quoted: Vec<String> = tables
        .iter()
        .map(|t| {
            let (schema, name) = split_table(t);
            format!("{}.{}", quote_ident(&schema), quote_ident(&name))
        })
        .collect();
    let change = |e: tokio_postgres::Error| {
        (
            "create or change the publication",
            error_text(&e),
            "check that the tables exist and that the user owns them (or is superuser)".to_string(),
        )
    };
    if !exists {
        if tables.is_empty() {
            return Err((
                "find the publication",
                format!("there is no publication `{publication}` and no `tables` to create it with"),
                "list the tables to capture in `tables`, or create the publication (CREATE PUBLICATION ... FOR TABLE ...)".to_string(),
            ));
        }
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {}",
                quote_ident(publication),
                quoted.join(", ")
            ))
            .await
            .map_err(change)?;
        return Ok(());
    }
    for (table, quoted) in tables.iter().zip(&quoted) {
        let (schema, name) = split_table(table);
        let published = client
            .query_opt(
                "SELECT 1 FROM pg_publication_tables WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                &[&publication, &schema, &name],
            )
            .await
            .map_err(read)?
            .is_some();
        if !published {
            client
                .batch_execute(&format!(
                    "ALTER PUBLICATION {} ADD TABLE {quoted}",
                    quote_ident(publication)
                ))
                .await
                .map_err(change)?;
        }
    }
    Ok(())
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// PostgreSQL's epoch (2000-01-01) in Unix milliseconds.
const PG_EPOCH_MS: i64 = 946_684_800_000;

impl<T: Send + 'static> PostgresCdcSource<T> {
    /// Polls the slot for changes into `pending`; `false` when none came.
    async fn poll(&mut self) -> Result<bool, ConnectorError> {
        if let Some(last) = self.last_empty_poll {
            let wait = self.poll_interval.saturating_sub(last.elapsed());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let confirmed = self.confirmed.load(Ordering::Acquire);
        while let Some(&(end, rows)) = self.in_flight.front() {
            if end > confirmed {
                break;
            }
            self.in_flight.pop_front();
            self.in_flight_rows -= rows;
        }
        if self.in_flight_rows >= self.max_in_flight {
            // Wait for acknowledgements rather than read the same changes again.
            let _ = tokio::time::timeout(self.poll_interval, self.acked.notified()).await;
            return Ok(false);
        }
        let upto =
            (self.in_flight_rows + u64::from(self.changes_per_poll)).min(i32::MAX as u64) as i32;
        let idle = self.in_flight.is_empty();
        let mut control = self.control.lock().await;
        if let Some(wait) = control.waiting() {
            drop(control);
            tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
            return Ok(false);
        }
        let result = async {
            let client = control.client().await?;
            let flush_lsn: Option<u64> = if idle {
                let row = client
                    .query_one("SELECT pg_current_wal_flush_lsn()", &[])
                    .await
                    .map_err(|e| classify(&e))?;
                Some(u64::from(row.get::<_, PgLsn>(0)))
            } else {
                None
            };
            let peek = match control.peek.clone() {
                Some(s) => s,
                None => {
                    let client = control.client().await?;
                    let s = client
                        .prepare(
                            "SELECT lsn, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
                             'proto_version', '1', 'publication_names', $3, 'messages', 'true')",
                        )
                        .await
                        .map_err(|e| classify(&e))?;
                    control.peek = Some(s.clone());
                    s
                }
            };
            let client = control.client().await?;
            let rows = client
                .query(&peek, &[&self.slot, &upto, &self.publication])
                .await
                .map_err(|e| classify(&e))?;
            if rows.is_empty()
                && let Some(lsn) = flush_lsn
            {
                // Nothing published committed before `lsn`: confirm up to it,
                // so that the server need not keep (and decode again) the
                // WAL of other tables' changes.
                control.advance(&self.slot, lsn, &self.confirmed).await?;
            }
            Ok::<_, Failure>(rows)
        }
        .await;
        match result {
            Ok(rows) => {
                let control = &mut *control;
                control.outage.recovered();
                if rows.is_empty() {
                    self.last_empty_poll = Some(Instant::now());
                    return Ok(false);
                }
                self.pending.extend(rows);
                Ok(true)
            }
            Err(failure) => {
                control.failed(failure, "read changes from the replication slot")?;
                Ok(false)
            }
        }
    }

    /// Turns pending messages into events, up to `max`; returns the end of
    /// the last transaction read whole.
    fn process(&mut self, batch: &mut Batch<T>, max: usize) -> Result<Option<u64>, ConnectorError> {
        let mut ack = None;
        while batch.len() < max {
            let Some(row) = self.pending.pop_front() else {
                break;
            };
            let lsn = u64::from(row.get::<_, PgLsn>(0));
            let data: &[u8] = row.get(1);
            let message = pgoutput::decode(data).map_err(|e| {
                ConnectorError::server(
                    CONNECTOR,
                    self.target.clone(),
                    "decode a pgoutput message",
                    format!("{e} (at {})", format_lsn(lsn)),
                    "this is a bug of syncflow's pgoutput decoder: please report it",
                )
            })?;
            if let Some(txn) = &mut self.txn {
                txn.rows += 1;
            }
            match message {
                Message::Begin {
                    final_lsn,
                    commit_ts,
                } => {
                    self.txn = Some(Txn {
                        skip: final_lsn < self.emitted_end,
                        ts_ms: (commit_ts / 1000 + PG_EPOCH_MS).max(0) as u64,
                        rows: 1,
                        marker: false,
                    });
                }
                Message::Relation(rel) => {
                    self.relations.insert(rel.id, rel);
                }
                Message::Commit { end_lsn } => {
                    let Some(txn) = self.txn.take() else { continue };
                    if txn.skip {
                        continue;
                    }
                    self.emitted_end = end_lsn;
                    self.in_flight.push_back((end_lsn, txn.rows));
                    self.in_flight_rows += txn.rows;
                    if txn.marker {
                        // The snapshot's last batch confirms the marker.
                        self.snapshot = Some(Snapshot {
                            marker_end: end_lsn,
                            pos: format_lsn(lsn),
                            ts_ms: txn.ts_ms,
                            client: None,
                            tables: Vec::new(),
                            index: 0,
                            cursor_open: false,
                            rows: 0,
                            expected: 0,
                            table_expected: 0,
                            table_rows: 0,
                        });
                        return Ok(ack);
                    }
                    ack = Some(end_lsn);
                }
                Message::Logical {
                    prefix, content, ..
                } => {
                    if let Some(txn) = &mut self.txn
                        && !txn.skip
                        && prefix == MARKER_PREFIX
                        && content == self.marker.as_slice()
                    {
                        txn.marker = true;
                    }
                }
                Message::Insert { relation, new } => {
                    self.change(batch, lsn, "c", relation, None, Some(&new))?;
                }
                Message::Update { relation, old, new } => {
                    let old = old.as_ref().map(|(kind, t)| (*kind, t));
                    self.change(batch, lsn, "u", relation, old, Some(&new))?;
                }
                Message::Delete { relation, old } => {
                    self.change(batch, lsn, "d", relation, Some((old.0, &old.1)), None)?;
                }
                Message::Truncate { relations } => {
                    for relation in relations {
                        self.change(batch, lsn, "t", relation, None, None)?;
                    }
                }
                Message::Other => {}
            }
        }
        Ok(ack)
    }

    /// Pushes one change event.
    fn change(
        &mut self,
        batch: &mut Batch<T>,
        lsn: u64,
        op: &str,
        relation: u32,
        old: Option<(u8, &Tuple<'_>)>,
        new: Option<&Tuple<'_>>,
    ) -> Result<(), ConnectorError> {
        let Some(txn) = &self.txn else { return Ok(()) };
        if txn.skip {
            return Ok(());
        }
        let ts_ms = txn.ts_ms;
        let Some(rel) = self.relations.get(&relation) else {
            return Err(ConnectorError::server(
                CONNECTOR,
                self.target.clone(),
                "decode a change",
                format!("a change of relation {relation} came before its description"),
                "this is a bug of syncflow's pgoutput decoder: please report it",
            ));
        };
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(b"{\"op\":\"");
        buf.extend_from_slice(op.as_bytes());
        buf.extend_from_slice(b"\",\"before\":");
        match old {
            Some((kind, tuple)) => write_tuple(
                buf,
                rel.columns
                    .iter()
                    .map(|c| (c.name.as_str(), c.type_oid, kind == b'O' || c.key)),
                tuple,
            ),
            None => buf.extend_from_slice(b"null"),
        }
        buf.extend_from_slice(b",\"after\":");
        match new {
            Some(tuple) => write_tuple(
                buf,
                rel.columns
                    .iter()
                    .map(|c| (c.name.as_str(), c.type_oid, true)),
                tuple,
            ),
            None => buf.extend_from_slice(b"null"),
        }
        write_source(
            buf,
            &self.db,
            &rel.schema,
            &rel.name,
            &format_lsn(lsn),
            ts_ms,
            false,
        );
        let payload = (self.decode)(buf);
        batch.push(lsn, buf, payload);
        Ok(())
    }

    /// Reads the next rows of the snapshot.
    async fn read_snapshot(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<Option<u64>>, ConnectorError> {
        let result = self.fill_snapshot(batch, max).await;
        let Some(snapshot) = &mut self.snapshot else {
            return Ok(Read::Batch(None));
        };
        match result {
            Ok(true) => {
                let end = snapshot.marker_end;
                tracing::info!(connector = CONNECTOR, target = %self.target, slot = %self.slot, rows = snapshot.rows, "snapshot read");
                self.snapshot = None;
                self.progress.streaming();
                Ok(Read::Batch(Some(end)))
            }
            Ok(false) => Ok(Read::Batch(None)),
            Err(failure) => {
                // Start the snapshot over: rows read twice are harmless.
                snapshot.client = None;
                snapshot.index = 0;
                snapshot.cursor_open = false;
                snapshot.tables.clear();
                let mut control = self.control.lock().await;
                control.failed(failure, "read the snapshot")?;
                let wait = control
                    .next_attempt
                    .saturating_duration_since(Instant::now());
                drop(control);
                tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
                if batch.is_empty() {
                    Ok(Read::Idle)
                } else {
                    Ok(Read::Batch(None))
                }
            }
        }
    }

    /// Fills the batch from the snapshot; `true` when it is complete.
    async fn fill_snapshot(&mut self, batch: &mut Batch<T>, max: usize) -> Result<bool, Failure> {
        let pg = self.control.lock().await.pg.clone();
        let Some(snapshot) = &mut self.snapshot else {
            return Ok(true);
        };
        if snapshot.client.is_none() {
            let client = connect(&pg).await.map_err(|e| classify(&e))?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| classify(&e))?;
            snapshot.tables = snapshot_tables(&client, &self.publication).await?;
            snapshot.client = Some(client);
            snapshot.index = 0;
            snapshot.cursor_open = false;
            snapshot.rows = 0;
            snapshot.expected = snapshot.tables.iter().map(SnapTable::estimate).sum();
            let what = match snapshot.tables.as_slice() {
                [table] => format!("{}.{}", table.schema, table.name),
                tables => format!("{} tables", tables.len()),
            };
            self.progress
                .begin(Phase::Snapshot, what, Unit::Rows, Some(snapshot.expected));
        }
        let Some(client) = snapshot.client.as_ref() else {
            return Ok(false);
        };
        while batch.len() < max {
            let Some(table) = snapshot.tables.get(snapshot.index) else {
                let _ = client.batch_execute("COMMIT").await;
                return Ok(true);
            };
            if !snapshot.cursor_open {
                let (estimate, mut expected) = (table.estimate(), table.estimate());
                if table.estimate < COUNT_BELOW {
                    // In the snapshot's transaction: exactly the rows it reads.
                    let row = client
                        .query_one(
                            &format!(
                                "SELECT count(*) FROM {}.{}",
                                quote_ident(&table.schema),
                                quote_ident(&table.name)
                            ),
                            &[],
                        )
                        .await
                        .map_err(|e| classify(&e))?;
                    expected = row.get::<_, i64>(0).max(0) as u64;
                }
                let what = if snapshot.tables.len() > 1 {
                    format!(
                        "{}.{} (table {} of {})",
                        table.schema,
                        table.name,
                        snapshot.index + 1,
                        snapshot.tables.len()
                    )
                } else {
                    format!("{}.{}", table.schema, table.name)
                };
                let columns: Vec<String> =
                    table.columns.iter().map(|(n, _)| quote_ident(n)).collect();
                client
                    .batch_execute(&format!(
                        "DECLARE syncflow_snapshot NO SCROLL CURSOR FOR SELECT {} FROM {}.{}",
                        if columns.is_empty() {
                            "NULL".to_string()
                        } else {
                            columns.join(", ")
                        },
                        quote_ident(&table.schema),
                        quote_ident(&table.name)
                    ))
                    .await
                    .map_err(|e| classify(&e))?;
                snapshot.cursor_open = true;
                snapshot.table_expected = expected;
                snapshot.table_rows = 0;
                correct(&mut snapshot.expected, &self.progress, estimate, expected);
                self.progress.set_what(what);
            }
            let want = max - batch.len();
            let messages = client
                .simple_query(&format!("FETCH {want} FROM syncflow_snapshot"))
                .await
                .map_err(|e| classify(&e))?;
            let mut got: u64 = 0;
            for message in &messages {
                let SimpleQueryMessage::Row(row) = message else {
                    continue;
                };
                got += 1;
                snapshot.rows += 1;
                self.snapshot_position += 1;
                let buf = &mut self.buf;
                buf.clear();
                buf.extend_from_slice(b"{\"op\":\"r\",\"before\":null,\"after\":{");
                for (i, (name, oid)) in table.columns.iter().enumerate() {
                    if i > 0 {
                        buf.push(b',');
                    }
                    write_str(buf, name);
                    buf.push(b':');
                    match row.get(i) {
                        Some(text) => write_value(buf, *oid, text.as_bytes()),
                        None => buf.extend_from_slice(b"null"),
                    }
                }
                buf.push(b'}');
                write_source(
                    buf,
                    &self.db,
                    &table.schema,
                    &table.name,
                    &snapshot.pos,
                    snapshot.ts_ms,
                    true,
                );
                let payload = (self.decode)(buf);
                batch.push(self.snapshot_position, buf, payload);
            }
            self.progress.advance(got);
            snapshot.table_rows += got;
            if got < want as u64 {
                client
                    .batch_execute("CLOSE syncflow_snapshot")
                    .await
                    .map_err(|e| classify(&e))?;
                snapshot.cursor_open = false;
                snapshot.index += 1;
                let (was, read) = (snapshot.table_expected, snapshot.table_rows);
                correct(&mut snapshot.expected, &self.progress, was, read);
            }
        }
        Ok(false)
    }
}

/// The published tables and their (published) columns.
async fn snapshot_tables(client: &Client, publication: &str) -> Result<Vec<SnapTable>, Failure> {
    let rows = client
        .query(
            "SELECT p.schemaname::text, p.tablename::text, c.reltuples::bigint \
             FROM pg_publication_tables p \
             JOIN pg_class c ON c.oid = (quote_ident(p.schemaname) || '.' || quote_ident(p.tablename))::regclass \
             WHERE p.pubname = $1 ORDER BY 1, 2",
            &[&publication],
        )
        .await
        .map_err(|e| classify(&e))?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let (schema, name, estimate): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        let columns = client
            .query(
                "SELECT a.attname::text, a.atttypid FROM pg_attribute a \
                 WHERE a.attrelid = (quote_ident($1) || '.' || quote_ident($2))::regclass \
                 AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
                &[&schema, &name],
            )
            .await
            .map_err(|e| classify(&e))?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, u32>(1)))
            .collect();
        tables.push(SnapTable {
            schema,
            name,
            columns,
            estimate,
        });
    }
    Ok(tables)
}

/// Writes `,"source":{...},"ts_ms":...}`: the end of an event.
fn write_source(
    buf: &mut Vec<u8>,
    db: &str,
    schema: &str,
    table: &str,
    pos: &str,
    ts_ms: u64,
    snapshot: bool,
) {
    use std::io::Write as _;
    buf.extend_from_slice(b",\"source\":{\"connector\":\"postgres\",\"db\":");
    write_str(buf, db);
    buf.extend_from_slice(b",\"schema\":");
    write_str(buf, schema);
    buf.extend_from_slice(b",\"table\":");
    write_str(buf, table);
    buf.extend_from_slice(b",\"pos\":");
    write_str(buf, pos);
    let _ = write!(
        buf,
        ",\"ts_ms\":{ts_ms},\"snapshot\":{snapshot}}},\"ts_ms\":{}}}",
        now_ms()
    );
}

/// Writes a tuple as a JSON object of the columns marked `true`
/// (unchanged TOASTed values are left out).
fn write_tuple<'c>(
    buf: &mut Vec<u8>,
    columns: impl Iterator<Item = (&'c str, u32, bool)>,
    tuple: &Tuple<'_>,
) {
    buf.push(b'{');
    let mut first = true;
    for ((name, oid, include), value) in columns.zip(&tuple.values) {
        if !include || *value == Value::Unchanged {
            continue;
        }
        if !first {
            buf.push(b',');
        }
        first = false;
        write_str(buf, name);
        buf.push(b':');
        match value {
            Value::Text(text) => write_value(buf, oid, text),
            _ => buf.extend_from_slice(b"null"),
        }
    }
    buf.push(b'}');
}

fn write_str(buf: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Writes a column's text value as JSON, by type: numbers and booleans as
/// such, `json`/`jsonb` as JSON, timestamps in ISO 8601 (`T`, `Z`),
/// `numeric` and everything else as strings.
pub(crate) fn write_value(buf: &mut Vec<u8>, oid: u32, text: &[u8]) {
    const BOOL: u32 = 16;
    const INT8: u32 = 20;
    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const OID: u32 = 26;
    const JSON: u32 = 114;
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    const TIMESTAMP: u32 = 1114;
    const TIMESTAMPTZ: u32 = 1184;
    const JSONB: u32 = 3802;
    let as_str = |buf: &mut Vec<u8>, text: &[u8]| write_str(buf, &String::from_utf8_lossy(text));
    match oid {
        BOOL => buf.extend_from_slice(if text == b"t" { b"true" } else { b"false" }),
        INT2 | INT4 | INT8 | OID => buf.extend_from_slice(text),
        FLOAT4 | FLOAT8 => {
            if text
                .iter()
                .all(|b| b.is_ascii_digit() || b"-+.e".contains(b))
            {
                buf.extend_from_slice(text);
            } else {
                as_str(buf, text); // NaN, Infinity
            }
        }
        JSON | JSONB => buf.extend_from_slice(text),
        TIMESTAMP | TIMESTAMPTZ if text.len() >= 19 && text[10] == b' ' => {
            let mut t = text.to_vec();
            t[10] = b'T';
            if oid == TIMESTAMPTZ && t.ends_with(b"+00") {
                t.truncate(t.len() - 3);
                t.push(b'Z');
            }
            as_str(buf, &t);
        }
        _ => as_str(buf, text),
    }
}

impl<T: Send + 'static> Source for PostgresCdcSource<T> {
    type Item = T;
    type Ack = Option<u64>;
    type Acker = PostgresCdcAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> PostgresCdcAcker {
        PostgresCdcAcker {
            control: self.control.clone(),
            confirmed: self.confirmed.clone(),
            notify: self.acked.clone(),
            slot: self.slot.clone(),
            acked: 0,
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<Option<u64>>, ConnectorError> {
        if self.snapshot.is_some() {
            return self.read_snapshot(batch, max).await;
        }
        if self.pending.is_empty() && !self.poll().await? {
            return Ok(Read::Idle);
        }
        let ack = self.process(batch, max)?;
        if batch.is_empty() && ack.is_none() && self.snapshot.is_none() {
            if self.pending.is_empty() {
                // Only transactions read before: pace the next poll.
                self.last_empty_poll = Some(Instant::now());
            }
            return Ok(Read::Idle);
        }
        self.last_empty_poll = None;
        Ok(Read::Batch(ack))
    }

    /// The snapshot's rows read and expected (exact for tables under
    /// 100 000 rows, `pg_class.reltuples` above), then `streaming`.
    fn progress(&self) -> Option<SourceProgress> {
        Some(self.progress.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(oid: u32, text: &str) -> String {
        let mut buf = Vec::new();
        write_value(&mut buf, oid, text.as_bytes());
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn values_become_json_by_type() {
        assert_eq!(value(16, "t"), "true");
        assert_eq!(value(16, "f"), "false");
        assert_eq!(value(20, "9007199254740993"), "9007199254740993");
        assert_eq!(value(701, "1.5e+100"), "1.5e+100");
        assert_eq!(value(701, "NaN"), "\"NaN\"");
        assert_eq!(value(1700, "12.340"), "\"12.340\"");
        assert_eq!(value(3802, "{\"a\": [1]}"), "{\"a\": [1]}");
        assert_eq!(
            value(1184, "2024-01-02 03:04:05.123+00"),
            "\"2024-01-02T03:04:05.123Z\""
        );
        assert_eq!(
            value(1114, "2024-01-02 03:04:05"),
            "\"2024-01-02T03:04:05\""
        );
        assert_eq!(value(1184, "infinity"), "\"infinity\"");
        assert_eq!(value(1082, "2024-02-29"), "\"2024-02-29\"");
        assert_eq!(value(25, "a\"b"), "\"a\\\"b\"");
    }
}
