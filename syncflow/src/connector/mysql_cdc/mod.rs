//! MySQL / MariaDB change data capture from the binary log.
//!
//! [`MysqlCdcSource`] reads an initial snapshot of the captured tables (one
//! consistent transaction, primary-key order, in chunks: `op: "r"` events),
//! then streams the binlog from the position that snapshot saw, turning row
//! events into [change events](crate::cdc::ChangeEvent) with before and
//! after images:
//!
//! ```json
//! {"op":"u","before":{"id":1,"qty":2},"after":{"id":1,"qty":3},
//!  "source":{"connector":"mysql","db":"shop","table":"orders",
//!            "pos":"mariadb-bin.000003:1234","gtid":"0-1-57","ts_ms":1700000000000,"snapshot":false},
//!  "ts_ms":1700000000123}
//! ```
//!
//! The position is checkpointed (with a state directory) only when the
//! runtime acknowledges, at transaction boundaries: a checkpoint is a
//! `file:offset` where a transaction starts, plus the number of that
//! transaction's rows already delivered when a batch ended inside it, and
//! (MariaDB) the GTID position before that transaction. A restart resumes
//! exactly there: nothing acknowledged is read again, nothing
//! unacknowledged is lost. On MariaDB it asks for the binlog by GTID, so
//! a checkpoint survives purged, reset or renamed binlog files
//! ([`ResumeBy`]). A lost connection is retried with backoff and resumes
//! from the last position read.
//!
//! The server needs `binlog_format=ROW` (`binlog_row_image=FULL` for complete
//! before images, `binlog_row_metadata=FULL` for column names without
//! `information_schema` look-ups) and a user with `REPLICATION SLAVE`,
//! `REPLICATION CLIENT` (MariaDB: `BINLOG MONITOR`) and `SELECT`. See the
//! book's page *MySQL / MariaDB CDC* for every option and the type mapping.

mod binlog;
mod ddl;
mod filter;
mod schema;
mod snapshot;
mod value;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use self::binlog::BinlogReader;
use self::filter::TableFilter;
use self::snapshot::Snapshot;
use super::{Acker, Batch, ConnectorError, DecodeFn, Read, Source, SourceProgress, serde_decode};

/// How long a read waits for changes before handing over what it has.
const LINGER: Duration = Duration::from_millis(200);
/// How long `connect` waits for the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the source does with a schema change (`ALTER TABLE`, `DROP TABLE`,
/// `CREATE INDEX`…) of a captured table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchemaChangePolicy {
    /// Stop the flow with an error naming the statement; the checkpoint
    /// stays before it.
    Fail,
    /// Go on (column names and types are read again from the next table map).
    #[default]
    Ignore,
    /// Emit an `op: "ddl"` event whose `ddl` holds the statement, and go on.
    Pass,
}

/// Whether the source reads the captured tables before streaming changes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    /// Without a checkpoint: read every captured table first (`op: "r"`),
    /// then stream from the snapshot's binlog position.
    #[default]
    Initial,
    /// Without a checkpoint: stream from the server's current binlog
    /// position, reading no existing rows.
    Never,
}

/// How a [`MysqlCdcSource`] asks the server for the binlog where its
/// checkpoint (or a lost connection) left it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResumeBy {
    /// MariaDB: by GTID when the position has one (every position does
    /// once the server logged a transaction), else by file and offset.
    /// MySQL: by file and offset.
    #[default]
    Auto,
    /// By GTID, always (MariaDB only): the binlog file names may differ
    /// (purged files, `RESET MASTER`, another server of the replication
    /// topology). `connect` fails on MySQL, or when the checkpoint has no GTID.
    Gtid,
    /// By binlog file and offset, always: the file must still be on the server.
    Position,
}

/// The settings of a [`MysqlCdcSource`] (`source: { mysql_cdc: {...} }` in
/// flow files).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlCdcSourceConfig {
    /// The server: `mysql://user:password@host:3306`. The user needs
    /// `REPLICATION SLAVE`, `REPLICATION CLIENT` (MariaDB: `BINLOG MONITOR`)
    /// and `SELECT` on the captured tables. The password is never logged.
    pub url: String,
    /// Tables to capture, as `database.table` globs (`*` and `?`), e.g.
    /// `shop.*`, `*.orders`; a bare name means a whole database. Empty (the
    /// default): every table outside the system databases.
    #[serde(default)]
    pub include: Vec<String>,
    /// Tables not to capture, even when included, e.g. `shop.tmp_*`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// What to do on a schema change of a captured table: `fail`, `ignore`
    /// (the default) or `pass` (emit an `op: "ddl"` event).
    #[serde(default)]
    pub schema_changes: SchemaChangePolicy,
    /// `initial` (the default): read the captured tables first when there
    /// is no checkpoint; `never`: start at the current end of the binlog.
    #[serde(default)]
    pub snapshot: SnapshotMode,
    /// Rows per snapshot query (default 1024).
    #[serde(default = "default_chunk")]
    pub snapshot_chunk: usize,
    /// Where the checkpoint file is kept. Without it, every run starts
    /// afresh (with a snapshot, or at the end of the binlog).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Names the checkpoint file, so several sources can share a state
    /// directory; default: the server's `host_port`.
    #[serde(default)]
    pub name: Option<String>,
    /// The replica server id this source registers with. It must differ
    /// from every other replica of the server (a second connection with
    /// the same id makes the server drop the first). Default: random.
    #[serde(default)]
    pub server_id: Option<u32>,
    /// How to ask for the binlog when resuming (from the checkpoint, or
    /// after a lost connection): `auto` (the default: by GTID on MariaDB,
    /// by file and offset on MySQL), `gtid` (MariaDB only) or `position`.
    #[serde(default)]
    pub resume_by: ResumeBy,
}

fn default_chunk() -> usize {
    1024
}

impl MysqlCdcSourceConfig {
    /// Settings with defaults for the server at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        MysqlCdcSourceConfig {
            url: url.into(),
            include: Vec::new(),
            exclude: Vec::new(),
            schema_changes: SchemaChangePolicy::default(),
            snapshot: SnapshotMode::default(),
            snapshot_chunk: default_chunk(),
            state_dir: None,
            name: None,
            server_id: None,
            resume_by: ResumeBy::default(),
        }
    }
}

/// A position in the binlog where a transaction starts, with the number of
/// its rows already delivered: the acknowledgement token and checkpoint of
/// a [`MysqlCdcSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinlogPosition {
    /// The binlog file, e.g. `mariadb-bin.000003`.
    pub file: Arc<str>,
    /// The offset in the file where the transaction starts.
    pub pos: u64,
    /// Rows of that transaction already delivered (a batch ended inside it).
    pub skip_rows: u64,
    /// MariaDB: the GTID position after the last delivered transaction
    /// (`domain-server-sequence` per domain); MySQL: its GTID.
    pub gtid: Option<Arc<str>>,
}

impl fmt::Display for BinlogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)?;
        if self.skip_rows > 0 {
            write!(f, " (+{} rows)", self.skip_rows)?;
        }
        Ok(())
    }
}

/// What the source knows of its server, shared by its parts.
#[derive(Debug)]
pub(crate) struct Settings {
    opts: Opts,
    /// `host:port`, for logs and errors (never the password).
    target: String,
    filter: TableFilter,
    schema_changes: SchemaChangePolicy,
    server_id: u32,
    mariadb: bool,
    resume_by: ResumeBy,
    /// The checkpoint file, for errors that suggest deleting it.
    checkpoint: Option<PathBuf>,
}

/// What a failed operation means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connection broke: reconnect and go on.
    Lost,
    /// Retrying will not help.
    Fatal,
}

/// Server errors that a reconnect may cure (shutdown in progress, killed
/// connection, network errors, too many connections).
const TRANSIENT: [u16; 9] = [1040, 1053, 1077, 1078, 1079, 1080, 1152, 1158, 1927];

pub(crate) fn classify(error: &mysql_async::Error) -> Failure {
    match error {
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => Failure::Lost,
        mysql_async::Error::Server(e)
            if TRANSIENT.contains(&e.code) || (1159..=1161).contains(&e.code) =>
        {
            Failure::Lost
        }
        _ => Failure::Fatal,
    }
}

impl Settings {
    /// The error for a failure that retrying will not cure, with a hint.
    fn fatal(&self, action: &'static str, error: &mysql_async::Error, at: &str) -> ConnectorError {
        let hint = match error {
            mysql_async::Error::Server(e) if e.code == 1236 => format!(
                "the binlog at {at} is no longer on the server (purged?) or unreadable; delete the checkpoint to start again with a snapshot, and keep binlogs longer (expire_logs_days / binlog_expire_logs_seconds) than the flow may be stopped"
            ),
            mysql_async::Error::Server(e) if matches!(e.code, 1044 | 1045 | 1227 | 1698) => {
                "check the user and password, and grant REPLICATION SLAVE, REPLICATION CLIENT (MariaDB: BINLOG MONITOR) and SELECT".to_string()
            }
            _ => format!("the source was at binlog {at}"),
        };
        ConnectorError::server("mysql-cdc", self.target.clone(), action, error, hint)
    }
}

/// Reconnection delays (exponential from 100 ms, capped at 5 s, with
/// jitter) and one warning per outage: the connectors' shared tracker.
pub(crate) type Backoff = super::netutil::Outage;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

enum State {
    /// The snapshot is not started, or is starting.
    Start(Option<tokio::task::JoinHandle<Result<Snapshot, mysql_async::Error>>>),
    Snapshot(Box<Snapshot>),
    Stream(Box<BinlogReader>),
}

/// Captures the row changes of a MySQL or MariaDB server from its binlog.
///
/// Each change becomes one record: the JSON envelope of
/// [`ChangeEvent`](crate::cdc::ChangeEvent) (its raw bytes, kept for dead
/// letters), decoded into the flow's input type (`ChangeEvent`,
/// `serde_json::Value`, or a type of your own).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use syncflow::cdc::ChangeEvent;
/// use syncflow::connector::{MysqlCdcSource, SchemaChangePolicy};
///
/// let source = MysqlCdcSource::<ChangeEvent>::builder("mysql://cdc:secret@127.0.0.1:3306")
///     .include("shop.*")
///     .exclude("shop.tmp_*")
///     .schema_changes(SchemaChangePolicy::Pass)
///     .state_dir(".syncflow")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
pub struct MysqlCdcSource<T> {
    settings: Arc<Settings>,
    name: Arc<str>,
    decode: DecodeFn<T>,
    checkpoint: Option<PathBuf>,
    resumed: Option<BinlogPosition>,
    snapshot_mode: SnapshotMode,
    chunk: usize,
    state: State,
    backoff: Backoff,
    /// The snapshot's rows read of the rows expected, then `streaming`.
    progress: SourceProgress,
}

impl<T> fmt::Debug for MysqlCdcSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlCdcSource")
            .field("server", &self.settings.target)
            .field("checkpoint", &self.checkpoint)
            .field("resumed", &self.resumed)
            .finish()
    }
}

/// Builds a [`MysqlCdcSource`]: [`MysqlCdcSource::builder`].
#[derive(Debug, Clone)]
pub struct MysqlCdcSourceBuilder<T> {
    config: MysqlCdcSourceConfig,
    decode: DecodeFn<T>,
}

impl<T: Send + 'static> MysqlCdcSourceBuilder<T> {
    /// Captures the tables matching this `database.table` glob (may be
    /// repeated; none: every table).
    pub fn include(mut self, pattern: impl Into<String>) -> Self {
        self.config.include.push(pattern.into());
        self
    }
    /// Skips the tables matching this `database.table` glob.
    pub fn exclude(mut self, pattern: impl Into<String>) -> Self {
        self.config.exclude.push(pattern.into());
        self
    }
    /// What to do on a schema change (default [`SchemaChangePolicy::Ignore`]).
    pub fn schema_changes(mut self, policy: SchemaChangePolicy) -> Self {
        self.config.schema_changes = policy;
        self
    }
    /// Whether to read the tables first when there is no checkpoint.
    pub fn snapshot(mut self, mode: SnapshotMode) -> Self {
        self.config.snapshot = mode;
        self
    }
    /// Rows per snapshot query (default 1024).
    pub fn snapshot_chunk(mut self, rows: usize) -> Self {
        self.config.snapshot_chunk = rows;
        self
    }
    /// Keeps the checkpoint in this directory, and resumes from it.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.state_dir = Some(dir.into());
        self
    }
    /// Names the checkpoint file (default: the server's `host_port`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }
    /// The replica server id (default: random).
    pub fn server_id(mut self, id: u32) -> Self {
        self.config.server_id = Some(id);
        self
    }
    /// How to ask for the binlog when resuming (default [`ResumeBy::Auto`]:
    /// by GTID on MariaDB, by file and offset on MySQL).
    pub fn resume_by(mut self, resume_by: ResumeBy) -> Self {
        self.config.resume_by = resume_by;
        self
    }
    /// Decodes each envelope with `decode` instead of `T`'s `Deserialize`.
    pub fn with_decoder<U: Send + 'static>(self, decode: DecodeFn<U>) -> MysqlCdcSourceBuilder<U> {
        MysqlCdcSourceBuilder {
            config: self.config,
            decode,
        }
    }
    /// Checks the server and the checkpoint; see [`MysqlCdcSource::connect`].
    pub async fn connect(self) -> Result<MysqlCdcSource<T>, ConnectorError> {
        MysqlCdcSource::connect(&self.config, self.decode).await
    }
}

impl<T: DeserializeOwned + Send + 'static> MysqlCdcSource<T> {
    /// A builder for the server at `url` (`mysql://user:password@host:port`).
    pub fn builder(url: impl Into<String>) -> MysqlCdcSourceBuilder<T> {
        MysqlCdcSourceBuilder {
            config: MysqlCdcSourceConfig::new(url),
            decode: serde_decode::<T>,
        }
    }
}

/// `host:port` of a URL, without user or password.
fn target_of(opts: &Opts) -> String {
    format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port())
}

fn config_error(
    target: &str,
    message: impl fmt::Display,
    hint: impl Into<String>,
) -> ConnectorError {
    ConnectorError::server("mysql-cdc", target.to_string(), "start", message, hint)
}

impl<T: Send + 'static> MysqlCdcSource<T> {
    /// Connects to the server, checks that its binlog can be captured,
    /// and loads the checkpoint (from `state_dir`) if there is one.
    ///
    /// Fails when the URL or a pattern is invalid, the server cannot be
    /// reached, the binlog is off or not in ROW format, or the checkpoint
    /// is unreadable.
    pub async fn connect(
        config: &MysqlCdcSourceConfig,
        decode: DecodeFn<T>,
    ) -> Result<Self, ConnectorError> {
        let opts = Opts::from_url(&config.url).map_err(|e| {
            config_error(
                "(url)",
                format!("the url is invalid ({e})"),
                "write it as mysql://user:password@host:3306",
            )
        })?;
        let target = target_of(&opts);
        // A TCP connection even to localhost (the client would otherwise
        // switch to the Unix socket); keepalive to notice dead peers.
        let opts: Opts = OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            .tcp_keepalive(Some(Duration::from_secs(30)))
            .stmt_cache_size(32)
            .into();
        let filter = TableFilter::new(&config.include, &config.exclude)
            .map_err(|e| config_error(&target, e, "fix `include` / `exclude`"))?;
        if config.snapshot_chunk == 0 {
            return Err(config_error(
                &target,
                "`snapshot_chunk` is 0",
                "set it to at least 1 (default 1024)",
            ));
        }
        let hint = "check that the server runs and the url's host, port, user and password";
        let mut conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts.clone())).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                return Err(ConnectorError::server(
                    "mysql-cdc",
                    target.clone(),
                    "connect",
                    &e,
                    hint,
                ));
            }
            Err(_) => {
                return Err(ConnectorError::server(
                    "mysql-cdc",
                    target.clone(),
                    "connect",
                    format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
                    hint,
                ));
            }
        };
        let checks = async {
            let (version, log_bin, format): (String, Option<String>, Option<String>) = conn
                .query_first("SELECT VERSION(), @@log_bin, @@binlog_format")
                .await?
                .unwrap_or_default();
            let image: Option<String> = conn
                .query_first("SELECT @@binlog_row_image")
                .await
                .ok()
                .flatten();
            Ok::<_, mysql_async::Error>((version, log_bin, format, image))
        }
        .await;
        let (version, log_bin, format, image) = checks.map_err(|e| {
            ConnectorError::server(
                "mysql-cdc",
                target.clone(),
                "check the binlog settings",
                &e,
                "",
            )
        })?;
        if log_bin.as_deref() != Some("1") && log_bin.as_deref() != Some("ON") {
            return Err(config_error(
                &target,
                "the binary log is off",
                "start the server with log_bin (and binlog_format=ROW, binlog_row_image=FULL, binlog_row_metadata=FULL)",
            ));
        }
        if !format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("ROW"))
        {
            return Err(config_error(
                &target,
                format!(
                    "binlog_format is {} (row changes are only captured in ROW format)",
                    format.as_deref().unwrap_or("unknown")
                ),
                "set binlog_format=ROW on the server (SET GLOBAL binlog_format='ROW' and in its config file)",
            ));
        }
        if let Some(image) = image.filter(|i| !i.eq_ignore_ascii_case("FULL")) {
            tracing::warn!(
                server = %target,
                binlog_row_image = %image,
                "binlog_row_image is not FULL: before images and updated rows will lack the columns the server leaves out"
            );
        }
        let mariadb = version.to_ascii_lowercase().contains("mariadb");
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format!("{}_{}", opts.ip_or_hostname(), opts.tcp_port()));
        let (checkpoint, resumed) = match &config.state_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    ConnectorError::io(
                        "create state directory",
                        dir,
                        e,
                        "choose a directory you can write to",
                    )
                })?;
                let path = dir.join(checkpoint_file_name(&name));
                let saved = Checkpoint::load(&path)?;
                (Some(path), saved.map(|c| c.position()))
            }
            None => (None, None),
        };
        check_resume_by(
            config.resume_by,
            mariadb,
            &version,
            &target,
            checkpoint.as_deref(),
            resumed.as_ref(),
        )?;
        let server_id = config
            .server_id
            .unwrap_or_else(|| fastrand::u32(0x4000_0000..0x7fff_ffff));
        let settings = Arc::new(Settings {
            opts,
            target: target.clone(),
            filter,
            schema_changes: config.schema_changes,
            server_id,
            mariadb,
            resume_by: config.resume_by,
            checkpoint: checkpoint.clone(),
        });
        let state = match &resumed {
            Some(position) => {
                tracing::info!(server = %target, %position, "mysql-cdc: resuming from the checkpoint");
                State::Stream(Box::new(BinlogReader::new(settings.clone(), position)))
            }
            None if config.snapshot == SnapshotMode::Never => {
                let position = current_position(&mut conn, mariadb).await.map_err(|e| {
                    settings.fatal("read the current binlog position", &e, "(start)")
                })?;
                tracing::info!(server = %target, %position, "mysql-cdc: streaming from the current binlog position (no snapshot)");
                State::Stream(Box::new(BinlogReader::new(settings.clone(), &position)))
            }
            None => State::Start(None),
        };
        let _ = conn.disconnect().await;
        let progress = SourceProgress::new();
        if matches!(state, State::Stream(_)) {
            progress.streaming();
        }
        Ok(MysqlCdcSource {
            name: Arc::from(format!("mysql-cdc://{target}")),
            backoff: Backoff::new("mysql-cdc", settings.target.clone()),
            settings,
            decode,
            checkpoint,
            resumed,
            snapshot_mode: config.snapshot,
            chunk: config.snapshot_chunk,
            state,
            progress,
        })
    }

    /// The position this source resumed from, when it found a checkpoint.
    pub fn resumed_from(&self) -> Option<&BinlogPosition> {
        self.resumed.as_ref()
    }

    /// The checkpoint file, when a state directory was given.
    pub fn checkpoint_path(&self) -> Option<&Path> {
        self.checkpoint.as_deref()
    }

    /// Whether the source was told to take no snapshot.
    pub fn snapshot_mode(&self) -> SnapshotMode {
        self.snapshot_mode
    }

    /// Closes the server connections (dropping the source does too, less politely).
    pub async fn close(mut self) {
        match std::mem::replace(&mut self.state, State::Start(None)) {
            State::Stream(mut reader) => reader.close().await,
            State::Snapshot(snapshot) => snapshot.close().await,
            State::Start(starting) => {
                if let Some(starting) = starting {
                    starting.abort();
                }
            }
        }
    }

    async fn read_snapshot(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<Option<BinlogPosition>>, ConnectorError> {
        if let State::Start(starting) = &mut self.state {
            if starting.is_none() {
                if let Some(wait) = self.backoff.wait() {
                    tokio::time::sleep(wait.min(LINGER)).await;
                    return Ok(Read::Idle);
                }
                // In a task of its own, so that a read waiting for a slow
                // or unreachable server still returns in time.
                let settings = self.settings.clone();
                let progress = self.progress.clone();
                *starting = Some(tokio::spawn(async move {
                    Snapshot::begin(&settings, progress).await
                }));
            }
            let Some(handle) = starting.as_mut() else {
                return Ok(Read::Idle);
            };
            let Ok(joined) = tokio::time::timeout(LINGER, handle).await else {
                return Ok(Read::Idle);
            };
            *starting = None;
            let begun = joined.map_err(|e| mysql_async::Error::Other(Box::new(e)));
            match begun.and_then(|r| r) {
                Ok(snapshot) => {
                    self.backoff.recovered();
                    self.state = State::Snapshot(Box::new(snapshot));
                }
                Err(e)
                    if classify(&e) == Failure::Lost
                        || matches!(e, mysql_async::Error::Other(_)) =>
                {
                    self.backoff
                        .failed("start the snapshot (the snapshot connection)", &e);
                    return Ok(Read::Idle);
                }
                Err(e) => return Err(self.settings.fatal("start the snapshot", &e, "(snapshot)")),
            }
        }
        let State::Snapshot(snapshot) = &mut self.state else {
            return Ok(Read::Idle);
        };
        match snapshot
            .fill(&self.settings, batch, max, self.chunk, self.decode)
            .await
        {
            Ok(false) => Ok(Read::Batch(None)),
            Ok(true) => {
                let start = snapshot.start.clone();
                self.progress.streaming();
                let state = std::mem::replace(
                    &mut self.state,
                    State::Stream(Box::new(BinlogReader::new(self.settings.clone(), &start))),
                );
                if let State::Snapshot(snapshot) = state {
                    snapshot.close().await;
                }
                // The snapshot is delivered once this batch is: the stream
                // starts at the snapshot's position.
                Ok(Read::Batch(Some(start)))
            }
            Err(e) if classify(&e) == Failure::Lost => {
                // Restart the snapshot from the beginning (at-least-once:
                // rows read so far come again).
                self.backoff.failed(
                    "read the snapshot; restarting it from the beginning (the snapshot connection)",
                    &e,
                );
                self.state = State::Start(None);
                batch.clear();
                Ok(Read::Idle)
            }
            Err(e) => Err(self.settings.fatal("read the snapshot", &e, "(snapshot)")),
        }
    }
}

impl<T> Drop for MysqlCdcSource<T> {
    fn drop(&mut self) {
        if let State::Start(Some(starting)) = &self.state {
            starting.abort();
        }
    }
}

/// Refuses `resume_by: gtid` where it cannot work: on MySQL, and with a
/// checkpoint that holds no MariaDB GTID position.
fn check_resume_by(
    resume_by: ResumeBy,
    mariadb: bool,
    version: &str,
    target: &str,
    checkpoint: Option<&Path>,
    resumed: Option<&BinlogPosition>,
) -> Result<(), ConnectorError> {
    if resume_by != ResumeBy::Gtid {
        return Ok(());
    }
    if !mariadb {
        return Err(config_error(
            target,
            format!(
                "`resume_by` is `gtid`, but the server is MySQL ({version}): syncflow keeps the last GTID read, not MySQL's executed GTID set, so it resumes from MySQL by binlog file and offset"
            ),
            "set `resume_by` to `auto` or `position`",
        ));
    }
    if let (Some(path), Some(position)) = (checkpoint, resumed)
        && binlog::Gtids::parse(position.gtid.as_deref())
            .maria_position()
            .is_none()
    {
        return Err(config_error(
            target,
            format!(
                "`resume_by` is `gtid`, but the checkpoint `{}` holds no MariaDB GTID position (it is at binlog {position}, written before the server logged any GTID)",
                path.display()
            ),
            "set `resume_by` to `auto` to resume by its file and offset this once (the checkpoints after the next transaction hold its GTID), or delete the checkpoint to start again with a snapshot",
        ));
    }
    Ok(())
}

/// The server's current binlog position (for `snapshot: never`).
async fn current_position(
    conn: &mut Conn,
    mariadb: bool,
) -> Result<BinlogPosition, mysql_async::Error> {
    let row: Option<mysql_async::Row> = match conn.query_first("SHOW BINARY LOG STATUS").await {
        Ok(row) => row,
        Err(_) => conn.query_first("SHOW MASTER STATUS").await?,
    };
    let file: String = row
        .as_ref()
        .and_then(|r| r.get_opt(0).and_then(Result::ok))
        .unwrap_or_default();
    let pos: u64 = row
        .as_ref()
        .and_then(|r| r.get_opt(1).and_then(Result::ok))
        .unwrap_or(4);
    let gtid: Option<String> = if mariadb {
        conn.exec_first("SELECT BINLOG_GTID_POS(?, ?)", (&file, pos))
            .await?
            .flatten()
    } else {
        row.as_ref().and_then(|r| r.get_opt(4).and_then(Result::ok))
    };
    Ok(BinlogPosition {
        file: Arc::from(file),
        pos,
        skip_rows: 0,
        gtid: gtid.filter(|g| !g.is_empty()).map(Arc::from),
    })
}

impl<T: Send + 'static> Source for MysqlCdcSource<T> {
    type Item = T;
    type Ack = Option<BinlogPosition>;
    type Acker = BinlogAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> BinlogAcker {
        BinlogAcker {
            path: self.checkpoint.clone(),
            server: self.settings.target.clone(),
            acked: self.resumed.clone(),
            stored: self.resumed.clone(),
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<Option<BinlogPosition>>, ConnectorError> {
        match &mut self.state {
            State::Stream(reader) => reader.read(batch, max, self.decode, LINGER).await,
            _ => self.read_snapshot(batch, max).await,
        }
    }

    /// The snapshot's rows read and expected (exact for tables under
    /// 100 000 rows, the server's estimate above), then `streaming`.
    fn progress(&self) -> Option<SourceProgress> {
        Some(self.progress.clone())
    }
}

/// `mysql-cdc.127.0.0.1_3306.checkpoint.json`
fn checkpoint_file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("mysql-cdc.{safe}.checkpoint.json")
}

/// What a checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    /// The server, for people reading the file.
    server: String,
    file: String,
    pos: u64,
    #[serde(default)]
    skip_rows: u64,
    #[serde(default)]
    gtid: Option<String>,
}

impl Checkpoint {
    const VERSION: u32 = 1;

    fn position(&self) -> BinlogPosition {
        BinlogPosition {
            file: Arc::from(self.file.as_str()),
            pos: self.pos,
            skip_rows: self.skip_rows,
            gtid: self.gtid.as_deref().map(Arc::from),
        }
    }

    fn load(path: &Path) -> Result<Option<Checkpoint>, ConnectorError> {
        super::checkpoint::load(path)
    }

    /// Writes the checkpoint atomically (see [`super::checkpoint::store`]).
    fn store(&self, path: &Path) -> Result<(), ConnectorError> {
        super::checkpoint::store(self, path)
    }
}

/// Writes the checkpoint of a [`MysqlCdcSource`] when the runtime
/// acknowledges (nothing without a state directory).
#[derive(Debug)]
pub struct BinlogAcker {
    path: Option<PathBuf>,
    server: String,
    acked: Option<BinlogPosition>,
    stored: Option<BinlogPosition>,
}

impl Acker for BinlogAcker {
    type Ack = Option<BinlogPosition>;

    fn ack(&mut self, ack: Option<BinlogPosition>) {
        // Snapshot batches (None) complete no position of their own.
        if let Some(position) = ack {
            self.acked = Some(position);
        }
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        let (Some(path), Some(position)) = (self.path.clone(), self.acked.clone()) else {
            return Ok(());
        };
        if self.stored.as_ref() == Some(&position) {
            return Ok(());
        }
        let checkpoint = Checkpoint {
            version: Checkpoint::VERSION,
            server: self.server.clone(),
            file: position.file.to_string(),
            pos: position.pos,
            skip_rows: position.skip_rows,
            gtid: position.gtid.as_deref().map(str::to_string),
        };
        let stored_path = path.clone();
        tokio::task::spawn_blocking(move || checkpoint.store(&stored_path))
            .await
            .map_err(|e| ConnectorError::Checkpoint {
                path,
                problem: format!("could not be written: the writing task failed ({e})"),
                fix: "retry the run; the previous checkpoint is intact".into(),
            })??;
        self.stored = Some(position);
        Ok(())
    }
}

impl super::checkpoint::Versioned for Checkpoint {
    const VERSION: u32 = Checkpoint::VERSION;
    const WHAT: &'static str = "binlog checkpoint";
    const FIX: &'static str = "delete it to start again with a snapshot";
    fn version(&self) -> u32 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(checkpoint_file_name("127.0.0.1_3306"));
        assert!(path.ends_with("mysql-cdc.127.0.0.1_3306.checkpoint.json"));
        assert_eq!(Checkpoint::load(&path).unwrap(), None);
        let c = Checkpoint {
            version: 1,
            server: "h:1".into(),
            file: "mariadb-bin.000002".into(),
            pos: 1234,
            skip_rows: 3,
            gtid: Some("0-1-9".into()),
        };
        c.store(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), Some(c.clone()));
        assert_eq!(
            c.position().to_string(),
            "mariadb-bin.000002:1234 (+3 rows)"
        );
        std::fs::write(&path, "{").unwrap();
        assert!(
            Checkpoint::load(&path)
                .unwrap_err()
                .to_string()
                .contains("delete it")
        );
    }

    #[test]
    fn config_has_defaults_and_rejects_unknown_keys() {
        let c: MysqlCdcSourceConfig =
            serde_saphyr::from_str("url: mysql://root@127.0.0.1:3306\ninclude: [shop.*]\n")
                .unwrap();
        assert_eq!(c.schema_changes, SchemaChangePolicy::Ignore);
        assert_eq!(c.snapshot, SnapshotMode::Initial);
        assert_eq!(c.snapshot_chunk, 1024);
        assert_eq!(c.resume_by, ResumeBy::Auto);
        assert!(serde_saphyr::from_str::<MysqlCdcSourceConfig>("url: x\nbogus: 1\n").is_err());
    }

    #[test]
    fn resume_by_reads_from_yaml_and_the_builder() {
        for (text, expected) in [
            ("auto", ResumeBy::Auto),
            ("gtid", ResumeBy::Gtid),
            ("position", ResumeBy::Position),
        ] {
            let c: MysqlCdcSourceConfig =
                serde_saphyr::from_str(&format!("url: x\nresume_by: {text}\n")).unwrap();
            assert_eq!(c.resume_by, expected);
        }
        assert!(
            serde_saphyr::from_str::<MysqlCdcSourceConfig>("url: x\nresume_by: file\n").is_err()
        );
        let b = MysqlCdcSource::<serde_json::Value>::builder("x").resume_by(ResumeBy::Position);
        assert_eq!(b.config.resume_by, ResumeBy::Position);
    }

    #[test]
    fn resume_by_gtid_is_refused_on_mysql_and_without_a_gtid() {
        let at = |gtid: Option<&str>| BinlogPosition {
            file: Arc::from("bin.000003"),
            pos: 120,
            skip_rows: 0,
            gtid: gtid.map(Arc::from),
        };
        let path = Path::new("/state/mysql-cdc.x.checkpoint.json");
        let check = |by, mariadb, position: Option<&BinlogPosition>| {
            check_resume_by(by, mariadb, "8.4.2", "h:3306", Some(path), position)
        };
        let err = check(ResumeBy::Gtid, false, None).unwrap_err().to_string();
        assert!(
            err.contains("MySQL (8.4.2)")
                && err.contains("set `resume_by` to `auto` or `position`"),
            "{err}"
        );
        // MySQL's last GTID is no position to resume from.
        let mysql_gtid = at(Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:23"));
        let err = check(ResumeBy::Gtid, true, Some(&mysql_gtid))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no MariaDB GTID"), "{err}");
        let err = check(ResumeBy::Gtid, true, Some(&at(None)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/state/mysql-cdc.x.checkpoint.json")
                && err.contains("bin.000003:120")
                && err.contains("`auto`"),
            "{err}"
        );
        assert!(check(ResumeBy::Gtid, true, Some(&at(Some("0-1-5,1-2-9")))).is_ok());
        assert!(
            check(ResumeBy::Gtid, true, None).is_ok(),
            "no checkpoint: nothing to resume"
        );
        for by in [ResumeBy::Auto, ResumeBy::Position] {
            assert!(check(by, false, Some(&at(None))).is_ok());
        }
    }
}
