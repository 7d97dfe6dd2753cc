//! Redis: [`RedisStreamSource`] reads a stream with a consumer group,
//! [`RedisStreamSink`] appends to a stream, and [`RedisKeySink`] keeps keys
//! in sync with a flow's outputs (a cache fed by change data capture).
//!
//! **Delivery: at least once.** The source acknowledges an entry (`XACK`)
//! only after every sink confirmed the outputs made from it. An entry read
//! but never acknowledged stays pending: the same consumer reads its own
//! pending entries first when it starts again, and another consumer of the
//! group takes over the entries of a consumer that is gone (`XAUTOCLAIM`,
//! once they have been idle for `claim_min_idle`). Processes reading with
//! the same group and different consumer names share the work.
//!
//! The sinks send each batch as one pipeline and return once Redis answered
//! it, so a batch is confirmed to the source only when it is stored.
//!
//! A lost connection is retried with capped exponential backoff and
//! jitter, logged once per outage (`warn`) and when it is back (`info`).

use std::fmt;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ErrorKind, Pipeline, RedisError, ServerErrorKind, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};
use tokio::time::Instant;

use super::field_template::FieldTemplate;
use super::netutil::{IDLE_STEP, Outage, redact_url};
use super::{
    Acker, Batch, ConnectorError, DecodeError, DecodeFn, Read, Sink, Source, serde_decode,
};
use crate::cdc::CdcOp;

const CONNECTOR: &str = "redis";

/// The server the configurations point at unless told otherwise.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// The entry field holding the message, unless configured.
pub const DEFAULT_FIELD: &str = "payload";
/// Entries read per command (`COUNT`), unless configured.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// How long `XREADGROUP` blocks waiting for new entries (`BLOCK`).
pub const DEFAULT_BLOCK: Duration = Duration::from_millis(200);
/// How long an entry stays pending with another consumer before this one
/// takes it over (`XAUTOCLAIM` min idle time).
pub const DEFAULT_CLAIM_MIN_IDLE: Duration = Duration::from_secs(60);
/// How often the source looks for entries to take over.
pub const DEFAULT_CLAIM_INTERVAL: Duration = Duration::from_secs(10);
/// How long a command may wait for its answer (the source adds its `block` time).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a sink keeps retrying a batch that failed for lack of a
/// connection before the run fails.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);

/// How long an acknowledgement commit keeps retrying before it leaves the
/// acknowledgements for the next commit.
const COMMIT_RETRY_FOR: Duration = Duration::from_secs(10);
/// Entry IDs per `XACK` command.
const ACK_CHUNK: usize = 1000;

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

fn default_field() -> String {
    DEFAULT_FIELD.to_string()
}

fn default_true() -> bool {
    true
}

/// Configuration of a [`RedisStreamSource`] (`source: { redis: {...} }` in a flow file).
///
/// ```yaml
/// source:
///   redis:
///     url: redis://127.0.0.1:6379
///     stream: orders
///     group: billing
///     consumer: billing-1
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamSourceConfig {
    /// Server URL (default `redis://127.0.0.1:6379`; `redis://:password@host:6379/0`
    /// with a password, which is never shown in logs or errors).
    #[serde(default = "default_url")]
    pub url: String,
    /// The stream to read (created, empty, if missing).
    pub stream: String,
    /// The consumer group (created if missing, see `start`). Processes
    /// reading with the same group share the entries.
    pub group: String,
    /// This process's name in the group. Keep it stable across restarts: a
    /// consumer reads its own pending entries first when it starts. Give
    /// every process of a group its own name.
    pub consumer: String,
    /// The entry field holding the message as JSON (default `payload`), or
    /// `*` to read the entry's fields as one JSON object of strings.
    #[serde(default = "default_field")]
    pub field: String,
    /// Entries read per command (default 1000; a flow's batch size caps it).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub batch_size: Option<usize>,
    /// How long a read waits for new entries before the source reports that
    /// nothing arrived (default `200ms`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub block: Option<Duration>,
    /// Where a new group starts: `0` (default: every entry in the stream),
    /// `$` (only entries added from now on), or an entry ID.
    #[serde(default)]
    pub start: Option<String>,
    /// Take over entries left pending by other consumers of the group (dead
    /// or stuck) once they have been idle long enough (default true).
    #[serde(default = "default_true")]
    pub claim: bool,
    /// How long an entry must have been pending, unacknowledged, before this
    /// consumer takes it over (default `60s`). Make it longer than an entry
    /// takes to get through the flow and its sinks.
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub claim_min_idle: Option<Duration>,
    /// How often to look for entries to take over (default `10s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub claim_interval: Option<Duration>,
    /// How long a command may wait for its answer, on top of `block`
    /// (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub response_timeout: Option<Duration>,
    /// How long connecting may take (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub connect_timeout: Option<Duration>,
}

impl RedisStreamSourceConfig {
    /// A configuration reading `stream` as `consumer` of `group`,
    /// everything else at its default.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        RedisStreamSourceConfig {
            url: default_url(),
            stream: stream.into(),
            group: group.into(),
            consumer: consumer.into(),
            field: default_field(),
            batch_size: None,
            block: None,
            start: None,
            claim: true,
            claim_min_idle: None,
            claim_interval: None,
            response_timeout: None,
            connect_timeout: None,
        }
    }
}

/// Configuration of a [`RedisStreamSink`] (`sinks: [ { redis_stream: {...} } ]`).
///
/// ```yaml
/// sinks:
///   - redis_stream:
///       stream: invoices
///       maxlen: 1000000
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamSinkConfig {
    /// Server URL (default `redis://127.0.0.1:6379`); a password in it is never shown.
    #[serde(default = "default_url")]
    pub url: String,
    /// The stream to append to (`XADD`; created if missing).
    pub stream: String,
    /// The entry field that holds the message as JSON (default `payload`).
    #[serde(default = "default_field")]
    pub field: String,
    /// Trim the stream to about this many entries (`MAXLEN ~`); default: no trimming.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub maxlen: Option<u64>,
    /// Remove entries older than this (`XTRIM MINID ~`, at each write;
    /// entry IDs are the server's clock); default: no trimming by age.
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Duration>,
    /// How long to keep retrying a batch that failed for lack of a
    /// connection before the run fails (default `60s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub retry_for: Option<Duration>,
    /// How long a command may wait for its answer (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub response_timeout: Option<Duration>,
    /// How long connecting may take (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub connect_timeout: Option<Duration>,
}

impl RedisStreamSinkConfig {
    /// A configuration appending to `stream`, everything else at its default.
    pub fn new(stream: impl Into<String>) -> Self {
        RedisStreamSinkConfig {
            url: default_url(),
            stream: stream.into(),
            field: default_field(),
            maxlen: None,
            max_age: None,
            retry_for: None,
            response_timeout: None,
            connect_timeout: None,
        }
    }
}

/// How a [`RedisKeySink`] stores an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// `SET key <the object as JSON>` (the default).
    #[default]
    Json,
    /// A hash with one field per top-level field of the object (`HSET`):
    /// strings as they are, other values as JSON, null fields left out. The
    /// hash is replaced as a whole, so fields the object lost disappear.
    Hash,
}

/// Configuration of a [`RedisKeySink`] (`sinks: [ { redis_keys: {...} } ]`).
///
/// ```yaml
/// sinks:
///   - redis_keys:
///       key: "user:{id}"
///       mode: hash
///       ttl: 1h
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisKeySinkConfig {
    /// Server URL (default `redis://127.0.0.1:6379`); a password in it is never shown.
    #[serde(default = "default_url")]
    pub url: String,
    /// The key of each object, built from its fields: `user:{id}`,
    /// `order:{shop}:{order_id}`, `cart:{customer.id}`.
    pub key: String,
    /// `json` (default): the key holds the object as JSON; `hash`: the key
    /// is a hash of the object's fields.
    #[serde(default)]
    pub mode: KeyMode,
    /// Expire keys this long after they were last set; default: never.
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub ttl: Option<Duration>,
    /// How long to keep retrying a batch that failed for lack of a
    /// connection before the run fails (default `60s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub retry_for: Option<Duration>,
    /// How long a command may wait for its answer (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub response_timeout: Option<Duration>,
    /// How long connecting may take (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub connect_timeout: Option<Duration>,
}

impl RedisKeySinkConfig {
    /// A configuration writing keys built from `key` (a template, see
    /// [`RedisKeySinkConfig::key`]) as JSON, everything else at its default.
    pub fn new(key: impl Into<String>) -> Self {
        RedisKeySinkConfig {
            url: default_url(),
            key: key.into(),
            mode: KeyMode::Json,
            ttl: None,
            retry_for: None,
            response_timeout: None,
            connect_timeout: None,
        }
    }
}

// ---- Connections and errors ----

fn error(
    target: &str,
    action: &'static str,
    message: impl fmt::Display,
    hint: impl Into<String>,
) -> ConnectorError {
    ConnectorError::server(CONNECTOR, target, action, message, hint)
}

/// Whether an error may go away by itself: a lost or refused connection, a
/// timeout, a server loading its data or failing over.
fn transient(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io
            | ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            )
    )
}

fn is_code(e: &RedisError, code: &str) -> bool {
    e.code() == Some(code)
}

fn open_client(url: &str, target: &str) -> Result<Client, ConnectorError> {
    Client::open(url).map_err(|e| {
        error(
            target,
            "use the URL",
            e,
            "write it as redis://[:password@]host[:port][/db]",
        )
    })
}

/// A connection that reconnects on failure. The manager's own retries are
/// kept short: the connectors back off between tries themselves, so that
/// a shutdown is never stuck behind a reconnect loop.
async fn manager(
    client: &Client,
    target: &str,
    response_timeout: Duration,
    connect_timeout: Option<Duration>,
) -> Result<ConnectionManager, ConnectorError> {
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(|e| {
            error(
                target,
                "connect",
                e,
                "check that the server runs and the URL, port and password are right",
            )
        })
}

/// Runs a pipeline, retrying with backoff while the failure is transient,
/// for up to `retry_for`.
async fn run_pipeline(
    conn: &mut ConnectionManager,
    pipe: &Pipeline,
    outage: &mut Outage,
    retry_for: Duration,
    target: &str,
    hint: &str,
) -> Result<(), ConnectorError> {
    loop {
        match pipe.query_async::<()>(conn).await {
            Ok(()) => {
                outage.recovered();
                return Ok(());
            }
            Err(e) if transient(&e) && outage.elapsed() < retry_for => {
                let delay = outage.failed("write", &e);
                tokio::time::sleep(delay).await;
            }
            Err(e) if transient(&e) => {
                return Err(error(
                    target,
                    "write",
                    format!("still failing after retrying for {retry_for:?}: {e}"),
                    "check that the server is up; the source will deliver the unconfirmed messages again",
                ));
            }
            Err(e) => return Err(error(target, "write", e, hint)),
        }
    }
}

// ---- Entry IDs and replies ----

/// A stream entry ID, `<milliseconds>-<sequence>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId {
    /// The time part (milliseconds since the Unix epoch).
    pub ms: u64,
    /// The sequence within the millisecond.
    pub seq: u64,
}

impl EntryId {
    fn parse(text: &[u8]) -> Option<EntryId> {
        let text = std::str::from_utf8(text).ok()?;
        let (ms, seq) = text.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// Writes `ms-seq` into `buf` and returns it.
    fn format<'a>(&self, buf: &'a mut [u8; 48]) -> &'a [u8] {
        let mut cursor = &mut buf[..];
        let _ = write!(cursor, "{}-{}", self.ms, self.seq);
        let left = cursor.len();
        &buf[..48 - left]
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

fn unexpected(what: &str) -> String {
    format!("unexpected reply shape ({what}); is this a Redis 5+ server?")
}

/// The entries of an `XREADGROUP` reply for one stream (none on a timeout).
fn read_entries(reply: Value) -> Result<Vec<Value>, String> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => match pair.into_iter().nth(1) {
                Some(Value::Array(entries)) => Ok(entries),
                Some(Value::Nil) | None => Ok(Vec::new()),
                _ => Err(unexpected("stream entries")),
            },
            _ => Err(unexpected("stream")),
        },
        Value::Map(streams) => match streams.into_iter().next() {
            None => Ok(Vec::new()),
            Some((_, Value::Array(entries))) => Ok(entries),
            _ => Err(unexpected("stream entries")),
        },
        _ => Err(unexpected("XREADGROUP")),
    }
}

/// The next cursor and the entries of an `XAUTOCLAIM` reply.
fn claim_entries(reply: Value) -> Result<(EntryId, Vec<Value>), String> {
    let Value::Array(parts) = reply else {
        return Err(unexpected("XAUTOCLAIM"));
    };
    let mut parts = parts.into_iter();
    let cursor = parts
        .next()
        .as_ref()
        .and_then(bytes_of)
        .and_then(EntryId::parse)
        .ok_or_else(|| unexpected("XAUTOCLAIM cursor"))?;
    match parts.next() {
        Some(Value::Array(entries)) => Ok((cursor, entries)),
        _ => Err(unexpected("XAUTOCLAIM entries")),
    }
}

/// An entry's ID and fields (`None`: the entry was deleted while pending).
fn entry(value: Value) -> Result<(EntryId, Option<Vec<Value>>), String> {
    let Value::Array(parts) = value else {
        return Err(unexpected("entry"));
    };
    let mut parts = parts.into_iter();
    let id = parts
        .next()
        .as_ref()
        .and_then(bytes_of)
        .and_then(EntryId::parse)
        .ok_or_else(|| unexpected("entry ID"))?;
    match parts.next() {
        Some(Value::Array(fields)) => Ok((id, Some(fields))),
        Some(Value::Map(pairs)) => Ok((
            id,
            Some(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        )),
        Some(Value::Nil) | None => Ok((id, None)),
        _ => Err(unexpected("entry fields")),
    }
}

/// Writes an entry's fields as one JSON object of strings.
fn fields_as_json(fields: &[Value], out: &mut Vec<u8>) {
    let mut map = Map::new();
    for pair in fields.chunks(2) {
        if let [k, v] = pair {
            let key = bytes_of(k).map(String::from_utf8_lossy).unwrap_or_default();
            let value = bytes_of(v).map(String::from_utf8_lossy).unwrap_or_default();
            map.insert(key.into_owned(), Json::String(value.into_owned()));
        }
    }
    let _ = serde_json::to_writer(out, &map);
}

// ---- Source ----

/// Where a [`RedisStreamSource`] reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// This consumer's own pending entries after this ID (after a restart
    /// or a lost reply).
    Pending(EntryId),
    /// New entries (`>`).
    New,
}

#[derive(Debug)]
struct Claim {
    min_idle_ms: u64,
    interval: Duration,
    next_at: Instant,
    cursor: EntryId,
}

/// Reads a Redis stream as one consumer of a consumer group.
///
/// When it starts, the source creates the group if missing (`XGROUP CREATE
/// ... MKSTREAM`), then reads this consumer's own pending entries (those
/// read before a restart and never acknowledged), then new entries with
/// `XREADGROUP ... BLOCK`. Every `claim_interval` it takes over entries
/// that other consumers left pending for longer than `claim_min_idle`
/// (`XAUTOCLAIM`). Entries are acknowledged (`XACK`) once the runtime
/// acknowledged them.
///
/// A record's position is the time part of its entry ID (milliseconds);
/// its raw bytes are the payload field.
///
/// ```no_run
/// # async fn run() -> Result<(), syncflow::connector::ConnectorError> {
/// use syncflow::connector::redis::RedisStreamSource;
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let source = RedisStreamSource::<Order>::builder("orders", "billing", "billing-1")
///     .claim_min_idle(std::time::Duration::from_secs(30))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
pub struct RedisStreamSource<T> {
    conn: ConnectionManager,
    ack_conn: ConnectionManager,
    name: Arc<str>,
    target: String,
    stream: String,
    group: String,
    consumer: String,
    start: String,
    /// `None` for `*`: every field, as a JSON object.
    field: Option<String>,
    batch_size: usize,
    block_ms: u64,
    phase: Phase,
    /// The highest ID handed over from this consumer's reads.
    last_seen: EntryId,
    claim: Option<Claim>,
    decode: DecodeFn<T>,
    outage: Outage,
    scratch: Vec<u8>,
}

impl<T> fmt::Debug for RedisStreamSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamSource")
            .field("name", &self.name)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisStreamSource`] step by step (see
/// [`RedisStreamSourceConfig`] for each setting).
#[derive(Debug, Clone)]
pub struct RedisStreamSourceBuilder<T> {
    config: RedisStreamSourceConfig,
    decode: DecodeFn<T>,
}

impl<T: Send + 'static> RedisStreamSourceBuilder<T> {
    /// The server URL (default `redis://127.0.0.1:6379`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }
    /// The entry field holding the message (default `payload`; `*`: all fields).
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.config.field = field.into();
        self
    }
    /// Entries read per command (default 1000).
    pub fn batch_size(mut self, entries: usize) -> Self {
        self.config.batch_size = Some(entries);
        self
    }
    /// How long a read waits for new entries (default 200 ms).
    pub fn block(mut self, wait: Duration) -> Self {
        self.config.block = Some(wait);
        self
    }
    /// Where a new group starts (`0`, `$` or an entry ID).
    pub fn start(mut self, id: impl Into<String>) -> Self {
        self.config.start = Some(id.into());
        self
    }
    /// Whether to take over entries other consumers left pending (default true).
    pub fn claim(mut self, on: bool) -> Self {
        self.config.claim = on;
        self
    }
    /// How long an entry must be idle before it is taken over (default 60 s).
    pub fn claim_min_idle(mut self, idle: Duration) -> Self {
        self.config.claim_min_idle = Some(idle);
        self
    }
    /// How often to look for entries to take over (default 10 s).
    pub fn claim_interval(mut self, every: Duration) -> Self {
        self.config.claim_interval = Some(every);
        self
    }
    /// Decodes payloads with `decode` instead of `T`'s `Deserialize`.
    pub fn with_decoder(mut self, decode: DecodeFn<T>) -> Self {
        self.decode = decode;
        self
    }
    /// The configuration built so far.
    pub fn config(&self) -> &RedisStreamSourceConfig {
        &self.config
    }
    /// Connects (see [`RedisStreamSource::connect`]).
    pub async fn connect(self) -> Result<RedisStreamSource<T>, ConnectorError> {
        RedisStreamSource::connect(&self.config, self.decode).await
    }
}

impl<T: DeserializeOwned + Send + 'static> RedisStreamSource<T> {
    /// A builder reading `stream` as `consumer` of `group`, decoding
    /// payloads as JSON into `T`.
    pub fn builder(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> RedisStreamSourceBuilder<T> {
        RedisStreamSourceBuilder {
            config: RedisStreamSourceConfig::new(stream, group, consumer),
            decode: serde_decode::<T>,
        }
    }
}

impl<T: Send + 'static> RedisStreamSource<T> {
    /// Connects (one connection for reading, one for acknowledging) and
    /// creates the group if it is missing.
    pub async fn connect(
        config: &RedisStreamSourceConfig,
        decode: DecodeFn<T>,
    ) -> Result<Self, ConnectorError> {
        let shown = redact_url(&config.url);
        let target = format!(
            "{shown} stream {} group {} consumer {}",
            config.stream, config.group, config.consumer
        );
        if config.stream.is_empty() || config.group.is_empty() || config.consumer.is_empty() {
            return Err(error(
                &target,
                "start",
                "`stream`, `group` and `consumer` must not be empty",
                "name the stream, the consumer group, and this process's consumer name in the group",
            ));
        }
        let block = config.block.unwrap_or(DEFAULT_BLOCK);
        let response_timeout = block + config.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT);
        let client = open_client(&config.url, &target)?;
        let conn = manager(&client, &target, response_timeout, config.connect_timeout).await?;
        let ack_conn = manager(
            &client,
            &target,
            config.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT),
            config.connect_timeout,
        )
        .await?;
        let claim = config.claim.then(|| Claim {
            min_idle_ms: config
                .claim_min_idle
                .unwrap_or(DEFAULT_CLAIM_MIN_IDLE)
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            interval: config.claim_interval.unwrap_or(DEFAULT_CLAIM_INTERVAL),
            next_at: Instant::now(),
            cursor: EntryId::default(),
        });
        let mut source = RedisStreamSource {
            conn,
            ack_conn,
            name: Arc::from(format!("{shown}/{}", config.stream)),
            outage: Outage::new(CONNECTOR, target.clone()),
            target,
            stream: config.stream.clone(),
            group: config.group.clone(),
            consumer: config.consumer.clone(),
            start: config.start.clone().unwrap_or_else(|| "0".to_string()),
            field: (config.field != "*").then(|| config.field.clone()),
            batch_size: config.batch_size.unwrap_or(DEFAULT_BATCH_SIZE).max(1),
            block_ms: block.as_millis().try_into().unwrap_or(u64::MAX).max(1),
            phase: Phase::Pending(EntryId::default()),
            last_seen: EntryId::default(),
            claim,
            decode,
            scratch: Vec::new(),
        };
        source.ensure_group().await?;
        Ok(source)
    }

    /// `XGROUP CREATE <stream> <group> <start> MKSTREAM`, unless the group exists.
    async fn ensure_group(&mut self) -> Result<(), ConnectorError> {
        let result = ::redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&self.start)
            .arg("MKSTREAM")
            .query_async::<()>(&mut self.conn)
            .await;
        match result {
            Ok(()) => {
                tracing::info!(connector = CONNECTOR, target = %self.target, start = %self.start, "created the consumer group");
                Ok(())
            }
            Err(e) if is_code(&e, "BUSYGROUP") => Ok(()),
            Err(e) => Err(error(
                &self.target,
                "create the consumer group",
                e,
                "check that the key is a stream (or free) and that `start` is `0`, `$` or an entry ID",
            )),
        }
    }

    /// Adds the entries to the batch and their IDs to `ids`; returns the
    /// highest ID.
    fn take(
        &mut self,
        entries: Vec<Value>,
        batch: &mut Batch<T>,
        ids: &mut Vec<EntryId>,
    ) -> Result<Option<EntryId>, ConnectorError> {
        let mut highest = None;
        for value in entries {
            let (id, fields) =
                entry(value).map_err(|m| error(&self.target, "read entries", m, ""))?;
            highest = Some(id);
            ids.push(id);
            // An entry deleted while pending has no fields: it is only acknowledged.
            let Some(fields) = fields else { continue };
            match &self.field {
                Some(name) => {
                    let payload = fields
                        .chunks(2)
                        .find(|pair| bytes_of(&pair[0]) == Some(name.as_bytes()))
                        .and_then(|pair| pair.get(1))
                        .and_then(bytes_of);
                    match payload {
                        Some(payload) => batch.push(id.ms, payload, (self.decode)(payload)),
                        None => {
                            self.scratch.clear();
                            fields_as_json(&fields, &mut self.scratch);
                            let problem = DecodeError::new(format!(
                                "entry {id} has no field `{name}` (its fields are in the input); write the message into `{name}`, or set `field` to the field that holds it, or to `*`"
                            ));
                            batch.push(id.ms, &self.scratch, Err(problem));
                        }
                    }
                }
                None => {
                    self.scratch.clear();
                    fields_as_json(&fields, &mut self.scratch);
                    let decoded = (self.decode)(&self.scratch);
                    batch.push(id.ms, &self.scratch, decoded);
                }
            }
        }
        Ok(highest)
    }

    /// One step of reading: own pending entries, or entries to take over,
    /// or new entries.
    async fn step(
        &mut self,
        batch: &mut Batch<T>,
        want: usize,
        ids: &mut Vec<EntryId>,
    ) -> Result<(), Step> {
        if let Phase::Pending(after) = self.phase {
            let mut buf = [0u8; 48];
            let reply: Value = ::redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&self.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(want)
                .arg("STREAMS")
                .arg(&self.stream)
                .arg(after.format(&mut buf))
                .query_async(&mut self.conn)
                .await
                .map_err(Step::Redis)?;
            let entries = read_entries(reply).map_err(Step::Reply)?;
            if entries.is_empty() {
                self.phase = Phase::New;
            } else {
                let count = entries.len();
                if let Some(highest) = self.take(entries, batch, ids).map_err(Step::Fatal)? {
                    self.phase = Phase::Pending(highest);
                    self.last_seen = self.last_seen.max(highest);
                }
                tracing::debug!(connector = CONNECTOR, target = %self.target, count, "read own pending entries");
                return Ok(());
            }
        }
        if let Some(claim) = &self.claim
            && Instant::now() >= claim.next_at
        {
            let mut buf = [0u8; 48];
            let reply: Value = ::redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(claim.min_idle_ms)
                .arg(claim.cursor.format(&mut buf))
                .arg("COUNT")
                .arg(want)
                .query_async(&mut self.conn)
                .await
                .map_err(Step::Redis)?;
            let (cursor, entries) = claim_entries(reply).map_err(Step::Reply)?;
            let count = entries.len();
            self.take(entries, batch, ids).map_err(Step::Fatal)?;
            if let Some(claim) = &mut self.claim {
                claim.cursor = cursor;
                if cursor == EntryId::default() {
                    claim.next_at = Instant::now() + claim.interval;
                }
            }
            if count > 0 {
                tracing::info!(
                    connector = CONNECTOR,
                    target = %self.target,
                    count,
                    "took over entries left pending by other consumers of the group"
                );
                return Ok(());
            }
        }
        let reply: Value = ::redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(want)
            .arg("BLOCK")
            .arg(self.block_ms)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query_async(&mut self.conn)
            .await
            .map_err(Step::Redis)?;
        let entries = read_entries(reply).map_err(Step::Reply)?;
        if let Some(highest) = self.take(entries, batch, ids).map_err(Step::Fatal)? {
            self.last_seen = self.last_seen.max(highest);
        }
        Ok(())
    }
}

/// Why a read step failed.
enum Step {
    Redis(RedisError),
    Reply(String),
    Fatal(ConnectorError),
}

/// The acknowledgement token of one batch of a [`RedisStreamSource`]: its entry IDs.
#[derive(Debug, Default)]
pub struct RedisAck {
    ids: Vec<EntryId>,
}

impl RedisAck {
    /// The entry IDs acknowledged by this token.
    pub fn ids(&self) -> &[EntryId] {
        &self.ids
    }
}

/// Acknowledges a [`RedisStreamSource`]'s entries (`XACK`) once the runtime
/// acknowledged them.
#[derive(Debug)]
pub struct RedisAcker {
    conn: ConnectionManager,
    stream: String,
    group: String,
    target: String,
    pending: Vec<EntryId>,
    outage: Outage,
}

impl Acker for RedisAcker {
    type Ack = RedisAck;

    fn ack(&mut self, ack: RedisAck) {
        if self.pending.is_empty() {
            self.pending = ack.ids;
        } else {
            self.pending.extend(ack.ids);
        }
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pipe = ::redis::pipe();
        let mut buf = [0u8; 48];
        for chunk in self.pending.chunks(ACK_CHUNK) {
            let cmd = pipe.cmd("XACK").arg(&self.stream).arg(&self.group);
            for id in chunk {
                cmd.arg(id.format(&mut buf));
            }
            cmd.ignore();
        }
        let started = Instant::now();
        loop {
            match pipe.query_async::<()>(&mut self.conn).await {
                Ok(()) => {
                    self.outage.recovered();
                    self.pending.clear();
                    return Ok(());
                }
                Err(e) if is_code(&e, "NOGROUP") => {
                    tracing::warn!(
                        connector = CONNECTOR,
                        target = %self.target,
                        entries = self.pending.len(),
                        "the consumer group or stream is gone; nothing left to acknowledge"
                    );
                    self.pending.clear();
                    return Ok(());
                }
                Err(e) if transient(&e) && started.elapsed() < COMMIT_RETRY_FOR => {
                    let delay = self.outage.failed("acknowledge entries", &e);
                    tokio::time::sleep(delay).await;
                }
                Err(e) if transient(&e) => {
                    // Not an error of the run: the entries stay pending and
                    // are acknowledged by the next commit, or read again.
                    tracing::warn!(
                        connector = CONNECTOR,
                        target = %self.target,
                        entries = self.pending.len(),
                        error = %e,
                        "cannot acknowledge entries yet; keeping them for the next commit"
                    );
                    return Ok(());
                }
                Err(e) => {
                    return Err(error(
                        &self.target,
                        "acknowledge entries",
                        e,
                        "check the server's log; unacknowledged entries are read again",
                    ));
                }
            }
        }
    }
}

impl<T: Send + 'static> Source for RedisStreamSource<T> {
    type Item = T;
    type Ack = RedisAck;
    type Acker = RedisAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> RedisAcker {
        RedisAcker {
            conn: self.ack_conn.clone(),
            stream: self.stream.clone(),
            group: self.group.clone(),
            outage: Outage::new(CONNECTOR, self.target.clone()),
            target: self.target.clone(),
            pending: Vec::new(),
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<RedisAck>, ConnectorError> {
        if !self.outage.wait_step(IDLE_STEP).await {
            return Ok(Read::Idle);
        }
        let want = max.min(self.batch_size).max(1);
        let mut ids = Vec::new();
        match self.step(batch, want, &mut ids).await {
            Ok(()) => self.outage.recovered(),
            Err(Step::Redis(e)) if transient(&e) => {
                self.outage.failed("read entries", &e);
                // A reply lost with the connection may have delivered
                // entries to this consumer: read its pending entries again.
                self.phase = Phase::Pending(self.last_seen);
                return Ok(Read::Idle);
            }
            Err(Step::Redis(e)) if is_code(&e, "NOGROUP") => {
                tracing::warn!(
                    connector = CONNECTOR,
                    target = %self.target,
                    "the consumer group or the stream disappeared (deleted, or a server restart without persistence); creating the group again"
                );
                self.ensure_group().await?;
                self.phase = Phase::Pending(EntryId::default());
                return Ok(Read::Idle);
            }
            Err(Step::Redis(e)) => {
                let hint = if e.to_string().contains("XAUTOCLAIM") {
                    "taking over entries needs Redis 6.2 or later (XAUTOCLAIM): upgrade, or set `claim: false`"
                } else {
                    "check that the key is a stream and the consumer has the rights to read it"
                };
                return Err(error(&self.target, "read entries", e, hint));
            }
            Err(Step::Reply(m)) => return Err(error(&self.target, "read entries", m, "")),
            Err(Step::Fatal(e)) => return Err(e),
        }
        if ids.is_empty() {
            Ok(Read::Idle)
        } else {
            Ok(Read::Batch(RedisAck { ids }))
        }
    }
}

// ---- Stream sink ----

/// Appends each output as JSON to a Redis stream (`XADD`, one field).
///
/// Each batch is sent as one pipeline and confirmed before `write` returns;
/// a batch that fails for lack of a connection is sent again with backoff,
/// for up to `retry_for` (its entries may then be added twice:
/// at-least-once).
///
/// ```no_run
/// # async fn run() -> Result<(), syncflow::connector::ConnectorError> {
/// use syncflow::connector::redis::RedisStreamSink;
/// let sink = RedisStreamSink::builder("invoices").maxlen(1_000_000).connect().await?;
/// # Ok(()) }
/// ```
pub struct RedisStreamSink {
    conn: ConnectionManager,
    name: String,
    stream: String,
    field: String,
    maxlen: Option<u64>,
    max_age: Option<Duration>,
    retry_for: Duration,
    pipe: Pipeline,
    buf: Vec<u8>,
    outage: Outage,
}

impl fmt::Debug for RedisStreamSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamSink")
            .field("name", &self.name)
            .field("field", &self.field)
            .field("maxlen", &self.maxlen)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisStreamSink`] step by step (see [`RedisStreamSinkConfig`]).
#[derive(Debug, Clone)]
pub struct RedisStreamSinkBuilder {
    config: RedisStreamSinkConfig,
}

impl RedisStreamSinkBuilder {
    /// The server URL (default `redis://127.0.0.1:6379`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }
    /// The entry field holding the message (default `payload`).
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.config.field = field.into();
        self
    }
    /// Trim the stream to about this many entries.
    pub fn maxlen(mut self, entries: u64) -> Self {
        self.config.maxlen = Some(entries);
        self
    }
    /// How long to retry a batch failing for lack of a connection (default 60 s).
    pub fn retry_for(mut self, time: Duration) -> Self {
        self.config.retry_for = Some(time);
        self
    }
    /// Connects (see [`RedisStreamSink::connect`]).
    pub async fn connect(self) -> Result<RedisStreamSink, ConnectorError> {
        RedisStreamSink::connect(&self.config).await
    }
}

impl RedisStreamSink {
    /// A builder appending to `stream`.
    pub fn builder(stream: impl Into<String>) -> RedisStreamSinkBuilder {
        RedisStreamSinkBuilder {
            config: RedisStreamSinkConfig::new(stream),
        }
    }

    /// Connects to the server.
    pub async fn connect(config: &RedisStreamSinkConfig) -> Result<Self, ConnectorError> {
        let shown = redact_url(&config.url);
        let name = format!("{shown}/{}", config.stream);
        if config.stream.is_empty() || config.field.is_empty() {
            return Err(error(
                &name,
                "start",
                "`stream` and `field` must not be empty",
                "name the stream to append to and the field that holds each message",
            ));
        }
        let client = open_client(&config.url, &name)?;
        let conn = manager(
            &client,
            &name,
            config.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT),
            config.connect_timeout,
        )
        .await?;
        Ok(RedisStreamSink {
            conn,
            outage: Outage::new(CONNECTOR, name.clone()),
            name,
            stream: config.stream.clone(),
            field: config.field.clone(),
            maxlen: config.maxlen,
            max_age: config.max_age,
            retry_for: config.retry_for.unwrap_or(DEFAULT_RETRY_FOR),
            pipe: ::redis::pipe(),
            buf: Vec::with_capacity(1024),
        })
    }
}

impl<T: Serialize + Sync> Sink<T> for RedisStreamSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        if items.is_empty() {
            return Ok(());
        }
        self.pipe.clear();
        for item in items {
            self.buf.clear();
            serde_json::to_writer(&mut self.buf, item).map_err(|source| {
                ConnectorError::Encode {
                    target: self.name.clone(),
                    source,
                }
            })?;
            let cmd = self.pipe.cmd("XADD").arg(&self.stream);
            if let Some(maxlen) = self.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(maxlen);
            }
            cmd.arg("*").arg(&self.field).arg(&self.buf[..]).ignore();
        }
        if let Some(age) = self.max_age {
            // Entry IDs start with the server's clock in ms: drop older ones.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let oldest = now.saturating_sub(age).as_millis();
            self.pipe
                .cmd("XTRIM")
                .arg(&self.stream)
                .arg("MINID")
                .arg("~")
                .arg(oldest.to_string())
                .ignore();
        }
        run_pipeline(
            &mut self.conn,
            &self.pipe,
            &mut self.outage,
            self.retry_for,
            &self.name,
            "check that the key is a stream (not another type) and that the server accepts writes (maxmemory, replica)",
        )
        .await
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        // Every batch was confirmed by the server in `write`.
        Ok(())
    }
}

// ---- Stream statistics (for `syncflow channels`) ----

/// What the server says of a stream and its consumer groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StreamStats {
    /// Entries in the stream (`XLEN`).
    pub length: u64,
    /// Entries ever added (`entries-added`, Redis 7; the length before).
    pub added: u64,
    /// Memory used by the key (`MEMORY USAGE`).
    pub bytes: u64,
    /// The consumer groups, by name.
    pub groups: Vec<GroupStats>,
}

/// One consumer group of a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GroupStats {
    pub name: String,
    /// Entries delivered to the group (`entries-read`).
    pub read: u64,
    /// Delivered and not acknowledged.
    pub pending: u64,
    /// Not yet delivered (`lag`).
    pub lag: u64,
}

/// The fields of an `XINFO` reply (a flat array of pairs, or a RESP3 map).
fn info_fields(reply: Value) -> Vec<(String, Value)> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Map(map) => map,
        Value::Array(items) => {
            let mut items = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((String::from_utf8_lossy(bytes_of(&k)?).into_owned(), v)))
        .collect()
}

fn field_u64(fields: &[(String, Value)], name: &str) -> Option<u64> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| match v {
            Value::Int(n) => u64::try_from(*n).ok(),
            other => std::str::from_utf8(bytes_of(other)?).ok()?.parse().ok(),
        })
}

/// `XLEN`, `XINFO STREAM`, `XINFO GROUPS` and `MEMORY USAGE` of `stream`.
pub(crate) async fn stream_stats(url: &str, stream: &str) -> Result<StreamStats, ConnectorError> {
    let target = format!("{}/{stream}", redact_url(url));
    let client = open_client(url, &target)?;
    let mut conn = manager(&client, &target, DEFAULT_RESPONSE_TIMEOUT, None).await?;
    let fail = |action: &'static str, e: RedisError| {
        error(
            &target,
            action,
            e,
            "check that the server runs and that a flow created the channel",
        )
    };
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .map_err(|e| fail("look up the stream", e))?;
    if exists == 0 {
        return Ok(StreamStats::default());
    }
    let info: Value = ::redis::cmd("XINFO")
        .arg("STREAM")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .map_err(|e| fail("read the stream (XINFO STREAM)", e))?;
    let info = info_fields(info);
    let length = field_u64(&info, "length").unwrap_or(0);
    let added = field_u64(&info, "entries-added")
        .unwrap_or(length)
        .max(length);
    let groups: Value = ::redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .map_err(|e| fail("list the readers (XINFO GROUPS)", e))?;
    let groups = match groups {
        Value::Array(groups) => groups,
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for group in groups {
        let fields = info_fields(group);
        let Some(name) = fields
            .iter()
            .find(|(k, _)| k == "name")
            .and_then(|(_, v)| bytes_of(v))
            .map(|b| String::from_utf8_lossy(b).into_owned())
        else {
            continue;
        };
        let pending = field_u64(&fields, "pending").unwrap_or(0);
        let read = field_u64(&fields, "entries-read").unwrap_or(0);
        let lag = field_u64(&fields, "lag").unwrap_or_else(|| added.saturating_sub(read));
        out.push(GroupStats {
            name,
            read,
            pending,
            lag,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    let bytes: Option<u64> = ::redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(stream)
        .query_async(&mut conn)
        .await
        .unwrap_or(None);
    Ok(StreamStats {
        length,
        added,
        bytes: bytes.unwrap_or(0),
        groups: out,
    })
}

// ---- Key sink ----

/// Keeps Redis keys in sync with a flow's outputs: a cache fed by change
/// data capture, or by any flow of objects.
///
/// Each output is
/// - a plain JSON object: the key built from its fields (`user:{id}`) is
///   set to it;
/// - a [`ChangeEvent`](crate::cdc::ChangeEvent) envelope (`op`, `before`,
///   `after`, `source`, `ts_ms`): `c`, `u` and `r` set the key built from
///   `after` to `after`; `d` deletes the key built from `before`; `t` and
///   `ddl` change nothing.
///
/// With [`KeyMode::Json`] a key holds the object as JSON (`SET`); with
/// [`KeyMode::Hash`] it is a hash of the object's fields, replaced as a
/// whole (`DEL` + `HSET`, atomically per batch). Writing the same output
/// twice leaves the same state (idempotent), so redeliveries are harmless.
/// Each batch is one pipeline, confirmed before `write` returns.
///
/// ```no_run
/// # async fn run() -> Result<(), syncflow::connector::ConnectorError> {
/// use syncflow::connector::redis::{KeyMode, RedisKeySink};
/// let sink = RedisKeySink::builder("user:{id}").mode(KeyMode::Hash).connect().await?;
/// # Ok(()) }
/// ```
pub struct RedisKeySink {
    conn: ConnectionManager,
    name: String,
    key: FieldTemplate,
    mode: KeyMode,
    ttl_ms: Option<u64>,
    retry_for: Duration,
    pipe: Pipeline,
    buf: Vec<u8>,
    key_buf: String,
    outage: Outage,
}

impl fmt::Debug for RedisKeySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisKeySink")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("ttl_ms", &self.ttl_ms)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisKeySink`] step by step (see [`RedisKeySinkConfig`]).
#[derive(Debug, Clone)]
pub struct RedisKeySinkBuilder {
    config: RedisKeySinkConfig,
}

impl RedisKeySinkBuilder {
    /// The server URL (default `redis://127.0.0.1:6379`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }
    /// JSON strings (default) or hashes.
    pub fn mode(mut self, mode: KeyMode) -> Self {
        self.config.mode = mode;
        self
    }
    /// Expire keys this long after they were last set.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = Some(ttl);
        self
    }
    /// How long to retry a batch failing for lack of a connection (default 60 s).
    pub fn retry_for(mut self, time: Duration) -> Self {
        self.config.retry_for = Some(time);
        self
    }
    /// Connects (see [`RedisKeySink::connect`]).
    pub async fn connect(self) -> Result<RedisKeySink, ConnectorError> {
        RedisKeySink::connect(&self.config).await
    }
}

/// What one output asks of the key sink.
#[derive(Debug)]
enum KeyChange<'a> {
    Set(&'a Map<String, Json>),
    Delete(&'a Map<String, Json>),
    Nothing,
}

/// Reads an output as a change envelope or a plain object.
fn key_change(value: &Json) -> Result<KeyChange<'_>, String> {
    let Json::Object(object) = value else {
        return Err(format!(
            "an output is not a JSON object but {}; the key sink takes objects and change events",
            match value {
                Json::Array(_) => "an array",
                Json::Null => "null",
                _ => "a scalar",
            }
        ));
    };
    let op = match (object.get("op"), object.get("source"), object.get("ts_ms")) {
        (Some(Json::String(op)), Some(Json::Object(_)), Some(_)) => CdcOp::from_code(op),
        _ => None,
    };
    let Some(op) = op else {
        return Ok(KeyChange::Set(object));
    };
    let row = |name: &str| match object.get(name) {
        Some(Json::Object(row)) => Ok(row),
        _ => Err(format!(
            "a change event with op `{}` has no `{name}` row to build the key from",
            op.code()
        )),
    };
    Ok(match op {
        CdcOp::Insert | CdcOp::Update | CdcOp::Snapshot => KeyChange::Set(row("after")?),
        CdcOp::Delete => KeyChange::Delete(row("before")?),
        CdcOp::Truncate | CdcOp::Ddl => KeyChange::Nothing,
    })
}

impl RedisKeySink {
    /// A builder writing the keys built from `key` (a template such as `user:{id}`).
    pub fn builder(key: impl Into<String>) -> RedisKeySinkBuilder {
        RedisKeySinkBuilder {
            config: RedisKeySinkConfig::new(key),
        }
    }

    /// Checks the key template and connects to the server.
    pub async fn connect(config: &RedisKeySinkConfig) -> Result<Self, ConnectorError> {
        let shown = redact_url(&config.url);
        let name = format!("{shown} keys {}", config.key);
        let key = FieldTemplate::parse(&config.key)
            .map_err(|e| error(&name, "use the key template", e, "fix the `key` setting"))?;
        if key.fixed().is_some() {
            return Err(error(
                &name,
                "use the key template",
                format!(
                    "`{}` names no field, so every object would go to one key",
                    config.key
                ),
                "put the fields that identify an object in braces, e.g. `user:{id}`",
            ));
        }
        let client = open_client(&config.url, &name)?;
        let conn = manager(
            &client,
            &name,
            config.response_timeout.unwrap_or(DEFAULT_RESPONSE_TIMEOUT),
            config.connect_timeout,
        )
        .await?;
        let mut pipe = ::redis::pipe();
        if config.mode == KeyMode::Hash {
            pipe.atomic();
        }
        Ok(RedisKeySink {
            conn,
            outage: Outage::new(CONNECTOR, name.clone()),
            name,
            key,
            mode: config.mode,
            ttl_ms: config
                .ttl
                .map(|t| t.as_millis().try_into().unwrap_or(u64::MAX).max(1)),
            retry_for: config.retry_for.unwrap_or(DEFAULT_RETRY_FOR),
            pipe,
            buf: Vec::with_capacity(1024),
            key_buf: String::new(),
        })
    }

    fn bad_output(&self, problem: String) -> ConnectorError {
        error(
            &self.name,
            "build a key",
            problem,
            format!(
                "make every output an object (or a change event) with the fields the key template `{}` names",
                self.key.text()
            ),
        )
    }

    /// Adds the commands for one output to the pipeline.
    fn add(&mut self, value: &Json) -> Result<(), ConnectorError> {
        let change = key_change(value).map_err(|p| self.bad_output(p))?;
        let (row, set) = match change {
            KeyChange::Set(row) => (row, true),
            KeyChange::Delete(row) => (row, false),
            KeyChange::Nothing => return Ok(()),
        };
        self.key_buf.clear();
        if let Err(problem) = self.key.render_into(row, &mut self.key_buf) {
            return Err(self.bad_output(problem));
        }
        let key = self.key_buf.as_str();
        if !set {
            self.pipe.cmd("DEL").arg(key).ignore();
            return Ok(());
        }
        match self.mode {
            KeyMode::Json => {
                self.buf.clear();
                serde_json::to_writer(&mut self.buf, row).map_err(|source| {
                    ConnectorError::Encode {
                        target: self.name.clone(),
                        source,
                    }
                })?;
                let cmd = self.pipe.cmd("SET").arg(key).arg(&self.buf[..]);
                if let Some(ttl) = self.ttl_ms {
                    cmd.arg("PX").arg(ttl);
                }
                cmd.ignore();
            }
            KeyMode::Hash => {
                self.pipe.cmd("DEL").arg(key).ignore();
                // A hash cannot be empty: for an object without (non-null)
                // fields, the DEL alone stands for it.
                if row.values().any(|v| !v.is_null()) {
                    let cmd = self.pipe.cmd("HSET").arg(key);
                    for (name, value) in row {
                        match value {
                            Json::Null => {}
                            Json::String(s) => {
                                cmd.arg(name.as_str()).arg(s.as_str());
                            }
                            other => {
                                self.buf.clear();
                                let _ = serde_json::to_writer(&mut self.buf, other);
                                cmd.arg(name.as_str()).arg(&self.buf[..]);
                            }
                        }
                    }
                    cmd.ignore();
                    if let Some(ttl) = self.ttl_ms {
                        self.pipe.cmd("PEXPIRE").arg(key).arg(ttl).ignore();
                    }
                }
            }
        }
        Ok(())
    }
}

impl<T: Serialize + Sync> Sink<T> for RedisKeySink {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        self.pipe.clear();
        for item in items {
            let value = serde_json::to_value(item).map_err(|source| ConnectorError::Encode {
                target: self.name.clone(),
                source,
            })?;
            self.add(&value)?;
        }
        if self.pipe.is_empty() {
            return Ok(());
        }
        run_pipeline(
            &mut self.conn,
            &self.pipe,
            &mut self.outage,
            self.retry_for,
            &self.name,
            "a key may exist with another type (e.g. a string where a hash is written): delete it or change the key template",
        )
        .await
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        // Every batch was confirmed by the server in `write`.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_parse_and_format() {
        let id = EntryId::parse(b"1700000000000-42").unwrap();
        assert_eq!(
            id,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 42
            }
        );
        let mut buf = [0u8; 48];
        assert_eq!(id.format(&mut buf), b"1700000000000-42");
        assert_eq!(EntryId::parse(b"nope"), None);
        assert!(EntryId::parse(b"1-2") < EntryId::parse(b"1-10"));
    }

    #[test]
    fn replies_of_both_protocols_give_entries() {
        let e = |id: &str, f: &str, v: &str| {
            Value::Array(vec![
                Value::BulkString(id.into()),
                Value::Array(vec![
                    Value::BulkString(f.into()),
                    Value::BulkString(v.into()),
                ]),
            ])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![e("1-1", "payload", "1"), e("1-2", "payload", "2")]),
        ])]);
        assert_eq!(read_entries(resp2).unwrap().len(), 2);
        let resp3 = Value::Map(vec![(
            Value::BulkString(b"s".to_vec()),
            Value::Array(vec![e("1-1", "payload", "1")]),
        )]);
        assert_eq!(read_entries(resp3).unwrap().len(), 1);
        assert!(read_entries(Value::Nil).unwrap().is_empty());
        let (id, fields) = entry(Value::Array(vec![
            Value::BulkString(b"3-4".to_vec()),
            Value::Nil,
        ]))
        .unwrap();
        assert_eq!((id, fields), (EntryId { ms: 3, seq: 4 }, None));
        let claim = Value::Array(vec![
            Value::BulkString(b"0-0".to_vec()),
            Value::Array(vec![e("1-1", "payload", "1")]),
            Value::Array(vec![]),
        ]);
        let (cursor, entries) = claim_entries(claim).unwrap();
        assert_eq!((cursor, entries.len()), (EntryId::default(), 1));
    }

    #[test]
    fn change_events_and_plain_objects() {
        let plain = serde_json::json!({"id": 1, "op": "c"});
        assert!(matches!(key_change(&plain), Ok(KeyChange::Set(_))));
        let delete = serde_json::json!({"op": "d", "before": {"id": 1}, "after": null,
            "source": {"connector": "mysql"}, "ts_ms": 1});
        assert!(matches!(key_change(&delete), Ok(KeyChange::Delete(row)) if row["id"] == 1));
        let update = serde_json::json!({"op": "u", "before": {"id": 1}, "after": {"id": 1, "n": 2},
            "source": {}, "ts_ms": 1});
        assert!(matches!(key_change(&update), Ok(KeyChange::Set(row)) if row["n"] == 2));
        let truncate = serde_json::json!({"op": "t", "source": {}, "ts_ms": 1});
        assert!(matches!(key_change(&truncate), Ok(KeyChange::Nothing)));
        let broken = serde_json::json!({"op": "d", "source": {}, "ts_ms": 1});
        assert!(key_change(&broken).unwrap_err().contains("no `before`"));
        assert!(
            key_change(&serde_json::json!([1]))
                .unwrap_err()
                .contains("an array")
        );
    }

    #[test]
    fn fields_become_one_json_object() {
        let mut out = Vec::new();
        fields_as_json(
            &[
                Value::BulkString(b"a".to_vec()),
                Value::BulkString(b"1".to_vec()),
            ],
            &mut out,
        );
        assert_eq!(out, br#"{"a":"1"}"#);
    }
}
