//! Reading the binlog: events to change-event envelopes, transaction
//! boundaries to resumable positions, lost connections to reconnects.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mysql_async::binlog::events::{
    Event, EventData, OptionalMetaExtractor, OptionalMetadataField, QueryEvent, RotateEvent,
    TableMapEvent,
};
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};

use super::ddl::{self, Statement};
use super::schema::{self, TableSchema};
use super::value::{self, BINARY_CHARSET, Kind};
use super::{Backoff, BinlogPosition, Failure, ResumeBy, SchemaChangePolicy, Settings, now_ms};
use crate::connector::{Batch, ConnectorError, DecodeError, DecodeFn, Read};

/// How often an idle server sends a heartbeat event.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Silence after which the connection is taken for dead.
const DEAD_AFTER: Duration = Duration::from_secs(10);
/// Table maps kept; more are dropped (they come again with each transaction).
const MAX_TABLES: usize = 4096;

// Event type codes (MySQL's and MariaDB's).
const QUERY: u8 = 2;
const ROTATE: u8 = 4;
const FORMAT_DESCRIPTION: u8 = 15;
const XID: u8 = 16;
const TABLE_MAP: u8 = 19;
const WRITE_V1: u8 = 23;
const UPDATE_V1: u8 = 24;
const DELETE_V1: u8 = 25;
const WRITE_V2: u8 = 30;
const UPDATE_V2: u8 = 31;
const DELETE_V2: u8 = 32;
const MYSQL_GTID: u8 = 33;
const PARTIAL_UPDATE: u8 = 39;
const TRANSACTION_PAYLOAD: u8 = 40;
const MYSQL_GTID_TAGGED: u8 = 42;
const MARIA_GTID: u8 = 162;
const MARIA_QUERY_COMPRESSED: u8 = 165;
const MARIA_ROWS_COMPRESSED: std::ops::RangeInclusive<u8> = 166..=171;

/// A table of the binlog's table maps, ready to turn row images into JSON.
#[derive(Debug)]
pub(crate) struct TableDecoder {
    /// The table map event's bytes: a new map with equal bytes reuses this decoder.
    raw: Vec<u8>,
    db: String,
    table: String,
    included: bool,
    /// `"name":` of each column, escaped.
    keys: Vec<Vec<u8>>,
    kinds: Vec<Kind>,
    /// `,"source":{"connector":"mysql","db":"…","table":"…","pos":"`
    source: Vec<u8>,
}

/// The operation of a rows event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Insert,
    Update,
    Delete,
}

/// A rows event being turned into records (possibly over several batches).
struct Rows {
    event: Event,
    table: Arc<TableDecoder>,
    op: Op,
    columns: usize,
    before: Option<Range<usize>>,
    after: Option<Range<usize>>,
    /// Offset of the next row in the event's data.
    at: usize,
    /// The rest of the envelope after the images (source and ts_ms).
    tail: Vec<u8>,
    /// Record position: the event's offset in its file.
    position: u64,
}

/// MariaDB's GTID position (one GTID per replication domain), or MySQL's
/// last GTID.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gtids {
    /// (domain, server, sequence) for MariaDB.
    domains: Vec<(u32, u32, u64)>,
    /// MySQL: the last GTID seen.
    other: Option<Arc<str>>,
    text: Option<Arc<str>>,
}

impl Gtids {
    /// Parses a MariaDB GTID position such as `0-1-100,1-2-5`; anything
    /// else is kept as it is.
    pub(crate) fn parse(text: Option<&str>) -> Gtids {
        let Some(text) = text.filter(|t| !t.is_empty()) else {
            return Gtids::default();
        };
        let parsed: Option<Vec<(u32, u32, u64)>> = text
            .split(',')
            .map(|g| {
                let mut parts = g.trim().splitn(3, '-');
                Some((
                    parts.next()?.parse().ok()?,
                    parts.next()?.parse().ok()?,
                    parts.next()?.parse().ok()?,
                ))
            })
            .collect();
        match parsed {
            Some(domains) => Gtids {
                domains,
                other: None,
                text: Some(Arc::from(text)),
            },
            None => Gtids {
                domains: Vec::new(),
                other: Some(Arc::from(text)),
                text: Some(Arc::from(text)),
            },
        }
    }

    fn apply(&mut self, gtid: &Gtid) {
        match gtid {
            Gtid::Maria(domain, server, seq) => {
                match self.domains.iter_mut().find(|d| d.0 == *domain) {
                    Some(d) => *d = (*domain, *server, *seq),
                    None => {
                        self.domains.push((*domain, *server, *seq));
                        self.domains.sort_unstable();
                    }
                }
                self.other = None;
            }
            Gtid::Other(text) => self.other = Some(text.clone()),
        }
        self.text = None;
    }

    /// The MariaDB GTID position (`domain-server-sequence` per domain) to
    /// resume from; `None` when there is none (nothing logged yet) or the
    /// position is not MariaDB's (MySQL keeps only its last GTID here).
    pub(crate) fn maria_position(&self) -> Option<String> {
        if self.other.is_some() || self.domains.is_empty() {
            return None;
        }
        let mut s = String::new();
        for (i, (d, srv, seq)) in self.domains.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "{d}-{srv}-{seq}");
        }
        Some(s)
    }

    pub(crate) fn text(&mut self) -> Option<Arc<str>> {
        if self.text.is_none() {
            self.text = if let Some(other) = &self.other {
                Some(other.clone())
            } else {
                self.maria_position().map(Arc::from)
            };
        }
        self.text.clone()
    }
}

/// The GTID of one transaction.
#[derive(Debug, Clone)]
enum Gtid {
    Maria(u32, u32, u64),
    Other(Arc<str>),
}

impl Gtid {
    fn text(&self) -> String {
        match self {
            Gtid::Maria(d, s, n) => format!("{d}-{s}-{n}"),
            Gtid::Other(t) => t.to_string(),
        }
    }
}

/// Streams the binlog from a position, reconnecting when the connection is lost.
pub(crate) struct BinlogReader {
    settings: Arc<Settings>,
    stream: Option<BinlogStream>,
    /// A second connection, for `information_schema` look-ups.
    query: Option<Conn>,
    /// The file of the events being read.
    file: Arc<str>,
    /// Where the next transaction starts: the position to resume at.
    boundary_file: Arc<str>,
    boundary: u64,
    in_tx: bool,
    /// Rows of captured tables seen in the current transaction.
    tx_rows: u64,
    /// Rows of the first transaction already delivered before a resume.
    skip: u64,
    tx_gtid: Option<Gtid>,
    tx_gtid_text: Option<String>,
    gtids: Gtids,
    tables: HashMap<u64, Arc<TableDecoder>>,
    rows: Option<Rows>,
    /// A fatal error to report on the next read (after the batch before it).
    failure: Option<ConnectorError>,
    backoff: Backoff,
    last_event: Instant,
    last_token: Option<BinlogPosition>,
    /// Statements inside transactions (statement-based logging) warned about.
    warned_statement: bool,
    /// Whether the server sends checksums (`binlog_checksum`).
    checksums: bool,
    /// Whether this connection's format description event came.
    format_seen: bool,
    /// Where the last MySQL transaction payload event (compressed
    /// transaction) ends: the events inside it have no position of their own.
    payload_end: u64,
    payload_start: u64,
    /// A connection being made.
    connecting: Option<Connecting>,
    /// MariaDB: the GTID position this connection asked the server to
    /// start after (`None`: it asked for `boundary_file:boundary`).
    gtid_start: Option<Arc<str>>,
    /// Resumed by GTID and no GTID event came yet: where in the server's
    /// files the stream starts is known only at the first transaction.
    gtid_pending: bool,
    /// MariaDB: the server's `@@gtid_binlog_pos` when this connection was made.
    server_gtid: Option<String>,
}

/// What a new binlog connection brings: the stream, whether events carry
/// checksums, and (MariaDB) the server's `@@gtid_binlog_pos`.
type Connected = (BinlogStream, bool, Option<String>);
type Connecting = tokio::task::JoinHandle<Result<Connected, mysql_async::Error>>;

impl Drop for BinlogReader {
    fn drop(&mut self) {
        if let Some(connecting) = self.connecting.take() {
            connecting.abort();
        }
    }
}

impl BinlogReader {
    /// A reader starting at `start` (a transaction boundary); the first
    /// `start.skip_rows` rows of the transaction there are not emitted again.
    pub(crate) fn new(settings: Arc<Settings>, start: &BinlogPosition) -> Self {
        BinlogReader {
            backoff: Backoff::new("mysql-cdc", settings.target.clone()),
            settings,
            stream: None,
            query: None,
            file: start.file.clone(),
            boundary_file: start.file.clone(),
            boundary: start.pos,
            in_tx: false,
            tx_rows: 0,
            skip: start.skip_rows,
            tx_gtid: None,
            tx_gtid_text: None,
            gtids: Gtids::parse(start.gtid.as_deref()),
            tables: HashMap::new(),
            rows: None,
            failure: None,
            last_event: Instant::now(),
            last_token: Some(start.clone()),
            warned_statement: false,
            checksums: true,
            format_seen: false,
            payload_end: 0,
            payload_start: 0,
            connecting: None,
            gtid_start: None,
            gtid_pending: false,
            server_gtid: None,
        }
    }

    /// The position a restart would resume at, now.
    pub(crate) fn position(&mut self) -> BinlogPosition {
        BinlogPosition {
            file: self.boundary_file.clone(),
            pos: self.boundary,
            // Inside a transaction: the rows of it handed over so far. At a
            // boundary, rows still to skip when the transaction there is
            // replayed (after a resume or a reconnect); 0 otherwise.
            skip_rows: if self.in_tx {
                self.tx_rows.max(self.skip)
            } else {
                self.skip
            },
            gtid: self.gtids.text(),
        }
    }

    /// Replays from the boundary: rows of the open transaction already
    /// handed over are skipped.
    fn start_connect_state(&mut self) {
        if self.in_tx {
            self.skip = self.skip.max(self.tx_rows);
        }
        self.in_tx = false;
        self.tx_rows = 0;
        self.tx_gtid = None;
        self.rows = None;
        self.file = self.boundary_file.clone();
    }

    /// The GTID position to ask the server to start after, when this
    /// connection resumes by GTID (see [`ResumeBy`]).
    fn resume_gtid(&self) -> Option<String> {
        match self.settings.resume_by {
            _ if !self.settings.mariadb => None,
            ResumeBy::Position => None,
            // No position yet (the server logged no GTID): by file and offset.
            ResumeBy::Auto | ResumeBy::Gtid => self.gtids.maria_position(),
        }
    }

    /// Starts connecting in a task of its own, so that a read waiting for a
    /// slow or unreachable server still returns in time.
    fn start_connect(&mut self) {
        self.start_connect_state();
        let opts = self.settings.opts.clone();
        let server_id = self.settings.server_id;
        let mariadb = self.settings.mariadb;
        let file = self.boundary_file.to_string();
        let pos = self.boundary;
        let gtid = self.resume_gtid();
        self.gtid_pending = gtid.is_some();
        self.gtid_start = gtid.as_deref().map(Arc::from);
        self.connecting = Some(tokio::spawn(async move {
            let mut conn = Conn::new(opts).await?;
            let (checksum, server_gtid): (Option<String>, Option<String>) = if mariadb {
                conn.query_first("SELECT @@global.binlog_checksum, @@global.gtid_binlog_pos")
                    .await?
                    .unwrap_or_default()
            } else {
                let checksum = conn.query_first("SELECT @@global.binlog_checksum").await?;
                (checksum, None)
            };
            let checksums = !checksum.is_some_and(|c| c.eq_ignore_ascii_case("NONE"));
            // GTID events (MariaDB), heartbeats when idle.
            conn.query_drop("SET @mariadb_slave_capability = 4").await?;
            conn.query_drop(format!(
                "SET @master_heartbeat_period = {}",
                HEARTBEAT.as_nanos()
            ))
            .await?;
            let request = match &gtid {
                Some(gtid) => {
                    // MariaDB starts after this GTID position, in whichever
                    // file holds it: the request names no file, and the
                    // stream opens with a rotate event naming it.
                    conn.exec_drop("SET @slave_connect_state = ?", (gtid.as_str(),))
                        .await?;
                    BinlogStreamRequest::new(server_id)
                        .with_filename(&b""[..])
                        .with_pos(4)
                }
                None => BinlogStreamRequest::new(server_id)
                    .with_filename(file.as_bytes())
                    .with_pos(pos),
            };
            let stream = conn.get_binlog_stream(request).await?;
            Ok((stream, checksums, server_gtid))
        }));
    }

    /// The error for a failure of the binlog stream that retrying will not
    /// cure; a start the server refuses (error 1236) says what to do.
    fn fatal(&self, action: &'static str, error: &mysql_async::Error) -> ConnectorError {
        let at = format!("{}:{}", self.boundary_file, self.boundary);
        if !matches!(error, mysql_async::Error::Server(e) if e.code == 1236) {
            return self.settings.fatal(action, error, &at);
        }
        let restart = match &self.settings.checkpoint {
            Some(path) => format!(
                "delete the checkpoint `{}` to start again with a snapshot",
                path.display()
            ),
            None => "restart the flow to start again with a snapshot".to_string(),
        };
        let keep = "keep binlogs longer (expire_logs_days / binlog_expire_logs_seconds) than the flow may be stopped";
        let (message, hint) = match &self.gtid_start {
            Some(gtid) => (
                format!(
                    "the server cannot send the binlog after GTID position {gtid} (the server's @@gtid_binlog_pos is {}): {error}",
                    match self.server_gtid.as_deref() {
                        Some(pos) if !pos.is_empty() => pos,
                        _ => "empty",
                    }
                ),
                format!(
                    "the transactions after that position are not in the server's binlogs (purged, RESET MASTER, or a server of another replication topology); point `url` at a server that has them, or {restart}; {keep}"
                ),
            ),
            None => {
                let gtid = if self.settings.mariadb {
                    self.gtids.maria_position()
                } else {
                    None
                };
                let instead = match gtid {
                    Some(gtid) => format!(
                        "resuming by the GTID position {gtid} needs no file: set `resume_by` to `auto` or `gtid`, or "
                    ),
                    None => String::new(),
                };
                (
                    format!(
                        "the server cannot send binlog file `{}` from offset {}: {error}",
                        self.boundary_file, self.boundary
                    ),
                    format!(
                        "the file is gone from the server (purged, RESET MASTER, or another server) or unreadable; {instead}{restart}; {keep}"
                    ),
                )
            }
        };
        ConnectorError::server(
            "mysql-cdc",
            self.settings.target.clone(),
            action,
            message,
            hint,
        )
    }

    /// The connection broke: drop it and reconnect after a backoff.
    fn lost(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.stream = None;
        self.query = None;
        self.rows = None;
        self.backoff
            .failed(&format!("{what} (the binlog stream)"), error);
    }

    /// Reads up to `max` records; see [`super::MysqlCdcSource`].
    pub(crate) async fn read<T>(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
        decode: DecodeFn<T>,
        linger: Duration,
    ) -> Result<Read<Option<BinlogPosition>>, ConnectorError> {
        if let Some(error) = self.failure.take() {
            return Err(error);
        }
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            if let Some(rows) = self.rows.take() {
                self.emit_rows(rows, batch, max, decode);
                continue;
            }
            if self.stream.is_none() {
                if self.connecting.is_none() {
                    if let Some(wait) = self.backoff.wait() {
                        let until = tokio::time::Instant::now() + wait;
                        if until > deadline {
                            tokio::time::sleep_until(deadline).await;
                            break;
                        }
                        tokio::time::sleep_until(until).await;
                    }
                    self.start_connect();
                }
                let Some(connecting) = self.connecting.as_mut() else {
                    break;
                };
                let joined = match tokio::time::timeout_at(deadline, connecting).await {
                    // Still connecting: go on at the next read.
                    Err(_elapsed) => break,
                    Ok(joined) => joined,
                };
                self.connecting = None;
                match joined {
                    Ok(Ok((stream, checksums, server_gtid))) => {
                        self.stream = Some(stream);
                        self.checksums = checksums;
                        self.server_gtid = server_gtid;
                        self.format_seen = false;
                        self.last_event = Instant::now();
                    }
                    Ok(Err(e)) => match super::classify(&e) {
                        Failure::Lost => {
                            self.lost("connect", &e);
                            continue;
                        }
                        Failure::Fatal => return Err(self.fatal("start the binlog stream", &e)),
                    },
                    Err(e) => {
                        self.lost("connect", &e);
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                break;
            };
            let wait = if batch.is_empty() {
                deadline.saturating_duration_since(tokio::time::Instant::now())
            } else {
                Duration::ZERO
            };
            let next = tokio::time::timeout(wait, stream.next()).await;
            match next {
                Err(_elapsed) => {
                    if self.last_event.elapsed() > DEAD_AFTER {
                        self.lost("read", &"no event or heartbeat from the server for 10 s");
                    }
                    break;
                }
                Ok(None) => self.lost("read", &"the server closed the binlog stream"),
                Ok(Some(Err(e))) => match super::classify(&e) {
                    Failure::Lost => self.lost("read", &e),
                    Failure::Fatal => {
                        let error = self.fatal("read the binlog", &e);
                        if batch.is_empty() {
                            return Err(error);
                        }
                        self.failure = Some(error);
                        break;
                    }
                },
                Ok(Some(Ok(event))) => {
                    self.last_event = Instant::now();
                    self.backoff.recovered();
                    match self.handle(event, batch, max, decode).await {
                        Ok(()) => {}
                        Err(Handled::Lost(what, e)) => self.lost(what, &e),
                        Err(Handled::Fatal(error)) => {
                            if batch.is_empty() {
                                return Err(error);
                            }
                            self.failure = Some(error);
                            break;
                        }
                    }
                    if self.failure.is_some() {
                        break;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline && !batch.is_empty() {
                break;
            }
        }
        let token = self.position();
        if batch.is_empty() && self.last_token.as_ref() == Some(&token) {
            return Ok(Read::Idle);
        }
        self.last_token = Some(token.clone());
        Ok(Read::Batch(Some(token)))
    }

    async fn handle<T>(
        &mut self,
        event: Event,
        batch: &mut Batch<T>,
        max: usize,
        decode: DecodeFn<T>,
    ) -> Result<(), Handled> {
        let header = event.header();
        let kind = header.event_type_raw();
        let end = header.log_pos() as u64;
        match kind {
            ROTATE => {
                let rotate: RotateEvent<'_> = event
                    .read_event()
                    .map_err(|e| Handled::Lost("read a rotate event", e.to_string()))?;
                let mut raw = rotate.name_raw();
                if !self.format_seen && self.checksums && raw.len() > 4 {
                    // Sent before the format description event, the first
                    // rotate event still ends with its 4-byte checksum.
                    raw = &raw[..raw.len() - 4];
                }
                let name = String::from_utf8_lossy(raw);
                if end == 0 && *name == *self.file {
                    // The server confirms the file asked for.
                    return Ok(());
                }
                let name: Arc<str> = Arc::from(name.as_ref());
                // Resumed by GTID: the boundary stays where it was until
                // the first transaction shows where the stream starts.
                if !self.in_tx && !self.gtid_pending {
                    self.boundary_file = name.clone();
                    self.boundary = rotate.position();
                }
                self.file = name;
            }
            FORMAT_DESCRIPTION => self.format_seen = true,
            TRANSACTION_PAYLOAD => {
                self.payload_end = end;
                self.payload_start = end.saturating_sub(header.event_size() as u64);
            }
            MARIA_GTID => {
                let data = event.data();
                if data.len() >= 13 {
                    let seq = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
                    let domain = u32::from_le_bytes(data[8..12].try_into().unwrap_or_default());
                    let standalone = data[12] & 1 != 0;
                    if self.gtid_pending && end > 0 {
                        // Resumed by GTID: the server skipped every
                        // transaction of the position; the next one starts here.
                        self.gtid_pending = false;
                        self.boundary_file = self.file.clone();
                        self.boundary = end.saturating_sub(header.event_size() as u64);
                    }
                    self.set_gtid(Gtid::Maria(domain, header.server_id(), seq));
                    self.in_tx = !standalone;
                    self.tx_rows = 0;
                }
            }
            MYSQL_GTID | MYSQL_GTID_TAGGED => {
                if let Ok(Some(EventData::GtidEvent(g))) = event.read_data() {
                    let sid = g.sid();
                    let mut text = String::with_capacity(48);
                    for (i, b) in sid.iter().enumerate() {
                        if matches!(i, 4 | 6 | 8 | 10) {
                            text.push('-');
                        }
                        let _ = write!(text, "{b:02x}");
                    }
                    let _ = write!(text, ":{}", g.gno());
                    self.set_gtid(Gtid::Other(Arc::from(text)));
                }
            }
            QUERY => {
                let query: QueryEvent<'_> = event
                    .read_event()
                    .map_err(|e| Handled::Lost("read a query event", e.to_string()))?;
                let text = query.query();
                let trimmed = text.trim();
                if trimmed.eq_ignore_ascii_case("BEGIN") {
                    self.in_tx = true;
                    self.tx_rows = 0;
                } else if trimmed.eq_ignore_ascii_case("COMMIT") {
                    self.end_tx(end);
                } else {
                    let start = end.saturating_sub(header.event_size() as u64);
                    let schema = query.schema().into_owned();
                    let text = trimmed.to_string();
                    let changed =
                        self.statement(&schema, &text, start, header.timestamp(), batch, decode)?;
                    if !changed && self.in_tx && !self.warned_statement && is_dml(&text) {
                        self.warned_statement = true;
                        tracing::warn!(
                            server = %self.settings.target,
                            statement = %short(&text),
                            "a statement was logged instead of its rows (binlog_format is not ROW for some session?); its changes are not captured"
                        );
                    }
                    // A statement outside a transaction is one by itself.
                    if !self.in_tx && self.failure.is_none() {
                        self.end_tx(end);
                    }
                }
            }
            XID => self.end_tx(end),
            TABLE_MAP => self.table_map(&event).await?,
            WRITE_V1 | UPDATE_V1 | DELETE_V1 | WRITE_V2 | UPDATE_V2 | DELETE_V2 => {
                self.rows_event(event, kind, batch, max, decode);
            }
            PARTIAL_UPDATE => {
                self.undecodable(
                    batch,
                    decode,
                    &event,
                    "a partial JSON update event (binlog_row_value_options=PARTIAL_JSON) cannot be read; set binlog_row_value_options to ''",
                );
            }
            MARIA_QUERY_COMPRESSED => {
                return Err(Handled::Fatal(ConnectorError::server(
                    "mysql-cdc",
                    self.settings.target.clone(),
                    "read the binlog",
                    "the server writes compressed events (log_bin_compress=ON)",
                    "set log_bin_compress=OFF on the server; compressed binlog events cannot be read",
                )));
            }
            k if MARIA_ROWS_COMPRESSED.contains(&k) => {
                self.undecodable(
                    batch,
                    decode,
                    &event,
                    "a compressed rows event (log_bin_compress=ON) cannot be read; set log_bin_compress=OFF",
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn set_gtid(&mut self, gtid: Gtid) {
        self.tx_gtid_text = Some(gtid.text());
        self.tx_gtid = Some(gtid);
    }

    /// A transaction ended at `end`: the next one starts there.
    fn end_tx(&mut self, end: u64) {
        let end = if end == 0 { self.payload_end } else { end };
        if end > 0 {
            self.boundary_file = self.file.clone();
            self.boundary = end;
        }
        if let Some(gtid) = self.tx_gtid.take() {
            self.gtids.apply(&gtid);
        }
        self.in_tx = false;
        self.tx_rows = 0;
        self.skip = 0;
    }

    async fn schema(&mut self, db: &str, table: &str) -> Result<Option<TableSchema>, Handled> {
        // A connection idle for long may have been closed by the server:
        // one fresh try before taking the server for lost.
        let mut last = String::new();
        for _ in 0..2 {
            if self.query.is_none() {
                match Conn::new(self.settings.opts.clone()).await {
                    Ok(conn) => self.query = Some(conn),
                    Err(e) => {
                        return Err(Handled::Lost("connect for a schema look-up", e.to_string()));
                    }
                }
            }
            let Some(conn) = self.query.as_mut() else {
                break;
            };
            match schema::load(conn, db, table, self.settings.mariadb).await {
                Ok(schema) => return Ok(schema),
                Err(e) => {
                    self.query = None;
                    last = e.to_string();
                }
            }
        }
        Err(Handled::Lost("look up a table's columns", last))
    }

    async fn table_map(&mut self, event: &Event) -> Result<(), Handled> {
        let tme: TableMapEvent<'_> = match event.read_event() {
            Ok(tme) => tme,
            Err(e) => {
                tracing::warn!(server = %self.settings.target, error = %e, "unreadable table map event; rows of its table will be dead-lettered");
                return Ok(());
            }
        };
        let id = tme.table_id();
        if self.tables.get(&id).is_some_and(|t| t.raw == event.data()) {
            return Ok(());
        }
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let included = self.settings.filter.includes(&db, &table);
        let decoder = if included {
            self.decoder(&tme, event.data(), db, table).await?
        } else {
            TableDecoder {
                raw: event.data().to_vec(),
                db,
                table,
                included,
                keys: Vec::new(),
                kinds: Vec::new(),
                source: Vec::new(),
            }
        };
        if self.tables.len() >= MAX_TABLES {
            self.tables.clear();
        }
        self.tables.insert(id, Arc::new(decoder));
        Ok(())
    }

    /// Builds the decoder of a captured table from its table map (and
    /// `information_schema` for what the map lacks).
    async fn decoder(
        &mut self,
        tme: &TableMapEvent<'_>,
        raw: &[u8],
        db: String,
        table: String,
    ) -> Result<TableDecoder, Handled> {
        let count = tme.columns_count() as usize;
        let mut types = Vec::with_capacity(count);
        for i in 0..count {
            let raw_type = tme
                .get_raw_column_type(i)
                .ok()
                .flatten()
                .map(|t| t as u8)
                .unwrap_or(0);
            let real = tme.get_column_type(i).ok().flatten();
            let meta = tme.get_column_metadata(i).unwrap_or(&[]).to_vec();
            types.push((raw_type, real, meta));
        }
        let extractor = OptionalMetaExtractor::new(tme.iter_optional_meta()).ok();
        let names: Vec<String> = extractor
            .as_ref()
            .map(|x| {
                x.iter_column_name()
                    .filter_map(Result::ok)
                    .map(|n| n.name().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let signedness: Vec<bool> = extractor
            .as_ref()
            .map(|x| x.iter_signedness().collect())
            .unwrap_or_default();
        let is_char = |t: &Option<ColumnType>| t.is_some_and(|t| t.is_character_type());
        let char_columns = types.iter().filter(|(_, t, _)| is_char(t)).count();
        let charsets: Vec<u16> = extractor
            .as_ref()
            .map(|x| {
                x.iter_charset()
                    .take(char_columns)
                    .filter_map(Result::ok)
                    .collect()
            })
            .unwrap_or_default();
        let (mut enums, mut sets) = (Vec::new(), Vec::new());
        for field in tme.iter_optional_meta().flatten() {
            match field {
                OptionalMetadataField::EnumStrValue(values) => {
                    for v in values.iter_values().flatten() {
                        enums.push(v.values().iter().map(|s| s.value().into_owned()).collect());
                    }
                }
                OptionalMetadataField::SetStrValue(values) => {
                    for v in values.iter_values().flatten() {
                        sets.push(v.values().iter().map(|s| s.value().into_owned()).collect());
                    }
                }
                _ => {}
            }
        }
        let numeric = types
            .iter()
            .filter(|(raw, _, _)| ColumnType::try_from(*raw).is_ok_and(|t| t.is_numeric_type()))
            .count();
        let enum_count = types
            .iter()
            .filter(|(_, t, _)| t.is_some_and(|t| t.is_enum_or_set_type()))
            .count();
        let has_text = types.iter().any(|(_, t, _)| {
            matches!(
                t,
                Some(
                    ColumnType::MYSQL_TYPE_BLOB
                        | ColumnType::MYSQL_TYPE_VARCHAR
                        | ColumnType::MYSQL_TYPE_VAR_STRING
                        | ColumnType::MYSQL_TYPE_STRING
                )
            )
        });
        let complete = names.len() == count
            && signedness.len() == numeric
            && charsets.len() == char_columns
            && enums.len() + sets.len() == enum_count;
        // MariaDB's JSON is text with a check: only the schema tells.
        let schema = if !complete || (self.settings.mariadb && has_text) {
            self.schema(&db, &table).await?
        } else {
            None
        };
        let schema_col = |i: usize| schema.as_ref().and_then(|s| s.columns.get(i));
        let (mut numeric_i, mut char_i, mut enum_i, mut set_i) = (0, 0, 0, 0);
        let mut keys = Vec::with_capacity(count);
        let mut kinds = Vec::with_capacity(count);
        for (i, (raw_type, real, meta)) in types.iter().enumerate() {
            let name = names
                .get(i)
                .cloned()
                .or_else(|| schema_col(i).map(|c| c.name.clone()))
                .unwrap_or_else(|| format!("@{}", i + 1));
            let mut unsigned = false;
            if ColumnType::try_from(*raw_type).is_ok_and(|t| t.is_numeric_type()) {
                unsigned = signedness
                    .get(numeric_i)
                    .copied()
                    .or_else(|| schema_col(i).map(|c| c.unsigned))
                    .unwrap_or(false);
                numeric_i += 1;
            }
            let mut charset = None;
            if is_char(real) {
                charset = charsets
                    .get(char_i)
                    .copied()
                    .or_else(|| schema_col(i).map(|c| if c.binary { BINARY_CHARSET } else { 45 }));
                char_i += 1;
            }
            let mut values = None;
            match real {
                Some(ColumnType::MYSQL_TYPE_ENUM) => {
                    values = enums.get(enum_i).cloned();
                    enum_i += 1;
                }
                Some(ColumnType::MYSQL_TYPE_SET) => {
                    values = sets.get(set_i).cloned();
                    set_i += 1;
                }
                _ => {}
            }
            if values.is_none() && real.is_some_and(|t| t.is_enum_or_set_type()) {
                values = schema_col(i).map(|c| c.values.clone());
            }
            let json = schema.as_ref().is_some_and(|s| s.is_json(&name));
            let kind = match real {
                Some(t) => value::binlog_kind(*t, *raw_type, meta, unsigned, charset, json, values),
                None => Kind::Unsupported(*raw_type),
            };
            let mut key = Vec::with_capacity(name.len() + 3);
            value::write_str(&mut key, &name);
            key.push(b':');
            keys.push(key);
            kinds.push(kind);
        }
        let mut source = Vec::with_capacity(96);
        source.extend_from_slice(br#","source":{"connector":"mysql","db":"#);
        value::write_str(&mut source, &db);
        source.extend_from_slice(br#","table":"#);
        value::write_str(&mut source, &table);
        source.extend_from_slice(br#","pos":"#);
        Ok(TableDecoder {
            raw: raw.to_vec(),
            db,
            table,
            included: true,
            keys,
            kinds,
            source,
        })
    }

    /// The end of an envelope: `"pos":"file:offset","gtid":…,"ts_ms":…,"snapshot":false},"ts_ms":…}`.
    fn tail(&self, out: &mut Vec<u8>, position: u64, ts: u32) {
        out.push(b'"');
        out.extend_from_slice(self.file.as_bytes());
        let _ = write!(out, ":{position}\"");
        if let Some(gtid) = &self.tx_gtid_text {
            out.extend_from_slice(br#","gtid":""#);
            out.extend_from_slice(gtid.as_bytes());
            out.push(b'"');
        }
        let _ = write!(
            out,
            r#","ts_ms":{},"snapshot":false}},"ts_ms":{}}}"#,
            ts as u64 * 1000,
            now_ms()
        );
    }

    fn rows_event<T>(
        &mut self,
        event: Event,
        kind: u8,
        batch: &mut Batch<T>,
        max: usize,
        decode: DecodeFn<T>,
    ) {
        let data = event.data();
        let v2 = matches!(kind, WRITE_V2 | UPDATE_V2 | DELETE_V2);
        let op = match kind {
            WRITE_V1 | WRITE_V2 => Op::Insert,
            UPDATE_V1 | UPDATE_V2 => Op::Update,
            _ => Op::Delete,
        };
        let Some((table_id, columns, before, after, at)) = parse_rows_header(data, v2, op) else {
            self.undecodable(batch, decode, &event, "a rows event is truncated");
            return;
        };
        let Some(table) = self.tables.get(&table_id).cloned() else {
            self.undecodable(
                batch,
                decode,
                &event,
                "a rows event refers to a table map that was not read",
            );
            return;
        };
        if !table.included {
            return;
        }
        let header = event.header();
        let position = match header.log_pos() {
            // Inside a compressed transaction (MySQL): where that starts.
            0 => self.payload_start,
            end => (end as u64).saturating_sub(header.event_size() as u64),
        };
        let mut tail = Vec::with_capacity(160);
        tail.extend_from_slice(&table.source);
        self.tail(&mut tail, position, header.timestamp());
        let rows = Rows {
            event,
            table,
            op,
            columns,
            before,
            after,
            at,
            tail,
            position,
        };
        self.emit_rows(rows, batch, max, decode);
    }

    /// Turns the rows of `rows` into records until the batch is full.
    fn emit_rows<T>(
        &mut self,
        mut rows: Rows,
        batch: &mut Batch<T>,
        max: usize,
        decode: DecodeFn<T>,
    ) {
        let data = rows.event.data();
        let (op_text, has_before, has_after): (&[u8], bool, bool) = match rows.op {
            Op::Insert => (br#"{"op":"c","before":null,"after":"#, false, true),
            Op::Update => (br#"{"op":"u","before":"#, true, true),
            Op::Delete => (br#"{"op":"d","before":"#, true, false),
        };
        while rows.at < data.len() {
            if batch.len() >= max {
                self.rows = Some(rows);
                return;
            }
            let start = batch.raw.len();
            batch.raw.extend_from_slice(op_text);
            let mut result = Ok(());
            if has_before {
                let present = rows.before.clone().map(|r| &data[r]).unwrap_or(&[]);
                result = write_image(
                    &mut batch.raw,
                    &rows.table,
                    rows.columns,
                    present,
                    data,
                    &mut rows.at,
                );
                batch.raw.extend_from_slice(br#","after":"#);
            }
            if result.is_ok() {
                if has_after {
                    let present = rows.after.clone().map(|r| &data[r]).unwrap_or(&[]);
                    result = write_image(
                        &mut batch.raw,
                        &rows.table,
                        rows.columns,
                        present,
                        data,
                        &mut rows.at,
                    );
                } else {
                    batch.raw.extend_from_slice(b"null");
                }
            }
            self.tx_rows += 1;
            if let Err(error) = result {
                batch.raw.truncate(start);
                let message = format!(
                    "cannot read a row of `{}`.`{}` at {}:{}: {}",
                    rows.table.db, rows.table.table, self.file, rows.position, error.0
                );
                self.push_error(batch, rows.position, message);
                // The rest of the event cannot be located.
                return;
            }
            if self.tx_rows <= self.skip {
                // Delivered before the restart.
                batch.raw.truncate(start);
                continue;
            }
            batch.raw.extend_from_slice(&rows.tail);
            let end = batch.raw.len();
            let payload = decode(&batch.raw[start..end]);
            batch.push_range(rows.position, start..end, payload);
        }
    }

    fn push_error<T>(&self, batch: &mut Batch<T>, position: u64, message: String) {
        let mut raw = Vec::with_capacity(message.len() + 16);
        raw.extend_from_slice(br#"{"error":"#);
        value::write_str(&mut raw, &message);
        raw.push(b'}');
        batch.push(position, &raw, Err(DecodeError::new(message)));
    }

    fn undecodable<T>(
        &mut self,
        batch: &mut Batch<T>,
        _decode: DecodeFn<T>,
        event: &Event,
        what: &str,
    ) {
        let header = event.header();
        let position = (header.log_pos() as u64).saturating_sub(header.event_size() as u64);
        self.tx_rows += 1;
        if self.tx_rows <= self.skip {
            return;
        }
        let message = format!("{what} (binlog {}:{position})", self.file);
        self.push_error(batch, position, message);
    }

    /// A statement outside a transaction: a schema change, a truncation,
    /// or something that changes no captured row.
    fn statement<T>(
        &mut self,
        default_db: &str,
        text: &str,
        position: u64,
        ts: u32,
        batch: &mut Batch<T>,
        decode: DecodeFn<T>,
    ) -> Result<bool, Handled> {
        let (db, table, truncate) = match ddl::classify(default_db, text) {
            Statement::Other => return Ok(false),
            Statement::Truncate(db, table) => (db, table, true),
            Statement::Table(db, table) => (db, table, false),
            Statement::Database(db) => (db, String::new(), false),
        };
        let relevant = if table.is_empty() {
            self.settings.filter.includes_db(&db)
        } else {
            self.settings.filter.includes(&db, &table)
        };
        // Column metadata is read again at the table's next table map.
        self.tables
            .retain(|_, t| !(t.db == db && (table.is_empty() || t.table == table)));
        if !relevant {
            return Ok(true);
        }
        let op: &[u8] = if truncate {
            br#"{"op":"t","before":null,"after":null"#
        } else {
            match self.settings.schema_changes {
                SchemaChangePolicy::Ignore => return Ok(true),
                SchemaChangePolicy::Fail => {
                    let error = ConnectorError::server(
                        "mysql-cdc",
                        self.settings.target.clone(),
                        "follow a schema change",
                        format!(
                            "`{}` changed `{db}`{}{} at {}:{position} and `schema_changes` is `fail`",
                            short(text),
                            if table.is_empty() { "" } else { "." },
                            table,
                            self.file
                        ),
                        "check that the flow handles the new schema, then set `schema_changes` to `ignore` or `pass` and restart; the checkpoint still points before the change",
                    );
                    if batch.is_empty() {
                        return Err(Handled::Fatal(error));
                    }
                    self.failure = Some(error);
                    return Ok(true);
                }
                SchemaChangePolicy::Pass => br#"{"op":"ddl","before":null,"after":null"#,
            }
        };
        self.tx_rows += 1;
        if self.tx_rows <= self.skip {
            return Ok(true);
        }
        let start = batch.raw.len();
        batch.raw.extend_from_slice(op);
        batch
            .raw
            .extend_from_slice(br#","source":{"connector":"mysql","db":"#);
        value::write_str(&mut batch.raw, &db);
        batch.raw.extend_from_slice(br#","table":"#);
        value::write_str(&mut batch.raw, &table);
        batch.raw.extend_from_slice(br#","pos":"#);
        let mut tail = Vec::new();
        self.tail(&mut tail, position, ts);
        if !truncate {
            // Replace the closing brace by the statement.
            tail.pop();
            tail.extend_from_slice(br#","ddl":"#);
            value::write_str(&mut tail, text);
            tail.push(b'}');
        }
        batch.raw.extend_from_slice(&tail);
        let end = batch.raw.len();
        let payload = decode(&batch.raw[start..end]);
        batch.push_range(position, start..end, payload);
        Ok(true)
    }

    /// Closes the connections.
    pub(crate) async fn close(&mut self) {
        if let Some(connecting) = self.connecting.take() {
            connecting.abort();
        }
        if let Some(stream) = self.stream.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
        }
        if let Some(conn) = self.query.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.disconnect()).await;
        }
    }
}

/// Why handling an event stopped.
pub(crate) enum Handled {
    /// The connection broke (what was being done, the error).
    Lost(&'static str, String),
    /// The source cannot go on.
    Fatal(ConnectorError),
}

/// Whether a statement changes rows (and should have been logged as rows).
fn is_dml(text: &str) -> bool {
    let word: String = text
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    matches!(
        word.as_str(),
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD"
    )
}

/// The first 200 characters of a statement.
pub(crate) fn short(text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Reads a rows event's post-header: table id, number of columns, the
/// before and after column bitmaps, and where the rows start.
#[allow(clippy::type_complexity)]
fn parse_rows_header(
    data: &[u8],
    v2: bool,
    op: Op,
) -> Option<(
    u64,
    usize,
    Option<Range<usize>>,
    Option<Range<usize>>,
    usize,
)> {
    let mut at = 0;
    let id = data.get(0..6)?;
    let table_id = id.iter().rev().fold(0u64, |v, b| (v << 8) | *b as u64);
    at += 6 + 2; // table id, flags
    if v2 {
        let extra = u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?) as usize;
        at += extra.max(2);
    }
    let (columns, n) = lenenc(data.get(at..)?)?;
    at += n;
    let columns = columns as usize;
    let bitmap = columns.div_ceil(8);
    let mut first = at..at + bitmap;
    data.get(first.clone())?;
    at += bitmap;
    let (before, after) = match op {
        Op::Insert => (None, Some(first)),
        Op::Delete => (Some(first), None),
        Op::Update => {
            let second = at..at + bitmap;
            data.get(second.clone())?;
            at += bitmap;
            (Some(std::mem::replace(&mut first, 0..0)), Some(second))
        }
    };
    Some((table_id, columns, before, after, at))
}

/// A length-encoded integer and its size in bytes.
fn lenenc(data: &[u8]) -> Option<(u64, usize)> {
    let first = *data.first()?;
    let n = match first {
        0..=250 => return Some((first as u64, 1)),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let bytes = data.get(1..1 + n)?;
    let v = bytes.iter().rev().fold(0u64, |v, b| (v << 8) | *b as u64);
    Some((v, 1 + n))
}

/// Writes one row image (`{"col":value,…}`) at `data[*at..]`.
fn write_image(
    out: &mut Vec<u8>,
    table: &TableDecoder,
    columns: usize,
    present: &[u8],
    data: &[u8],
    at: &mut usize,
) -> Result<(), value::ValueError> {
    let bit = |bits: &[u8], i: usize| bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0);
    let count = (0..columns).filter(|i| bit(present, *i)).count();
    let nulls = data
        .get(*at..*at + count.div_ceil(8))
        .ok_or_else(|| value::ValueError("the row image ends in its NULL bitmap".into()))?;
    *at += nulls.len();
    if columns > table.kinds.len() {
        return Err(value::ValueError(format!(
            "the rows event has {columns} columns, its table map {}",
            table.kinds.len()
        )));
    }
    out.push(b'{');
    let mut index = 0;
    for i in 0..columns {
        if !bit(present, i) {
            continue;
        }
        if index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&table.keys[i]);
        if bit(nulls, index) {
            out.extend_from_slice(b"null");
        } else {
            value::write_binlog_value(out, &table.kinds[i], data, at)?;
        }
        index += 1;
    }
    out.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_positions_track_each_domain() {
        let mut g = Gtids::parse(Some("0-1-5"));
        g.apply(&Gtid::Maria(0, 1, 6));
        g.apply(&Gtid::Maria(2, 3, 1));
        assert_eq!(g.text().as_deref(), Some("0-1-6,2-3-1"));
        assert_eq!(Gtids::parse(None).text(), None);
        let mut mysql = Gtids::parse(Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:23"));
        assert_eq!(
            mysql.text().as_deref(),
            Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:23")
        );
        assert_eq!(
            mysql.maria_position(),
            None,
            "MySQL's last GTID is no position"
        );
        assert_eq!(g.maria_position().as_deref(), Some("0-1-6,2-3-1"));
        assert_eq!(Gtids::parse(Some("")).maria_position(), None);
    }

    #[test]
    fn connections_resume_by_gtid_on_mariadb_unless_told_otherwise() {
        let gtid = |by, mariadb| reader_with(0, by, mariadb).resume_gtid();
        assert_eq!(gtid(ResumeBy::Auto, true).as_deref(), Some("0-1-5"));
        assert_eq!(gtid(ResumeBy::Gtid, true).as_deref(), Some("0-1-5"));
        assert_eq!(gtid(ResumeBy::Position, true), None);
        assert_eq!(gtid(ResumeBy::Auto, false), None);
        let mut r = reader(0);
        r.gtids = Gtids::default();
        // Nothing logged with a GTID yet: by file and offset.
        assert_eq!(r.resume_gtid(), None);
    }

    #[test]
    fn a_start_the_server_refuses_says_what_to_do() {
        let refused = |message: &str| {
            mysql_async::Error::Server(mysql_async::ServerError {
                code: 1236,
                message: message.into(),
                state: "HY000".into(),
            })
        };
        // By file and offset: names the file, and the GTID to resume by instead.
        let mut r = reader_with(0, ResumeBy::Position, true);
        let err = r
            .fatal(
                "read the binlog",
                &refused("Could not find first log file name in binary log index file"),
            )
            .to_string();
        assert!(
            err.contains("binlog file `bin.000001` from offset 100")
                && err.contains("Could not find first log file")
                && err.contains("GTID position 0-1-5")
                && err.contains("`resume_by` to `auto` or `gtid`")
                && err.contains("start again with a snapshot"),
            "{err}"
        );
        // By GTID: names the position asked for and the server's.
        r = reader_with(0, ResumeBy::Auto, true);
        r.gtid_start = r.resume_gtid().map(Arc::from);
        r.server_gtid = Some("0-1-3".into());
        let err = r
            .fatal(
                "read the binlog",
                &refused("requested to start from GTID 0-1-5, which is not in the master's binlog"),
            )
            .to_string();
        assert!(
            err.contains("after GTID position 0-1-5")
                && err.contains("@@gtid_binlog_pos is 0-1-3")
                && err.contains("not in the master's binlog")
                && err.contains("start again with a snapshot"),
            "{err}"
        );
        // MySQL: no GTID to suggest.
        let r = reader_with(0, ResumeBy::Auto, false);
        let err = r.fatal("read the binlog", &refused("purged")).to_string();
        assert!(
            err.contains("bin.000001") && !err.contains("resume_by"),
            "{err}"
        );
    }

    fn reader(skip_rows: u64) -> BinlogReader {
        reader_with(skip_rows, ResumeBy::Auto, true)
    }

    fn reader_with(skip_rows: u64, resume_by: ResumeBy, mariadb: bool) -> BinlogReader {
        let settings = Arc::new(Settings {
            opts: mysql_async::OptsBuilder::default().into(),
            target: "test:3306".into(),
            filter: super::super::filter::TableFilter::default(),
            schema_changes: SchemaChangePolicy::Ignore,
            server_id: 7,
            mariadb,
            resume_by,
            checkpoint: None,
        });
        BinlogReader::new(
            settings,
            &BinlogPosition {
                file: Arc::from("bin.000001"),
                pos: 100,
                skip_rows,
                gtid: Some(Arc::from("0-1-5")),
            },
        )
    }

    #[test]
    fn positions_keep_the_rows_to_skip_until_the_transaction_ends() {
        let mut r = reader(6);
        // Resumed inside a transaction: the position says so until it ends.
        assert_eq!(r.position().skip_rows, 6);
        r.in_tx = true;
        r.tx_rows = 2; // still skipping
        assert_eq!(r.position().skip_rows, 6);
        r.tx_rows = 9; // three more handed over
        assert_eq!(r.position().skip_rows, 9);
        r.set_gtid(Gtid::Maria(0, 1, 6));
        r.end_tx(250);
        let p = r.position();
        assert_eq!((&*p.file, p.pos, p.skip_rows), ("bin.000001", 250, 0));
        assert_eq!(p.gtid.as_deref(), Some("0-1-6"));
        // A reconnect inside a transaction replays it, skipping what was handed over.
        r.in_tx = true;
        r.tx_rows = 4;
        r.start_connect_state();
        assert_eq!((r.position().pos, r.position().skip_rows), (250, 4));
    }

    #[test]
    fn lenenc_integers() {
        assert_eq!(lenenc(&[5]), Some((5, 1)));
        assert_eq!(lenenc(&[0xfc, 0x01, 0x01]), Some((257, 3)));
        assert_eq!(lenenc(&[0xfc, 0x01]), None);
    }
}
