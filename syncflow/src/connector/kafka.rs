//! Kafka: a consumer-group source and an idempotent producer sink, with
//! [librdkafka](https://github.com/confluentinc/librdkafka) (through the
//! `rdkafka` crate, built from its bundled sources).
//!
//! [`KafkaSource`] reads one or more topics as a member of a consumer group.
//! Automatic commits are off: the source commits, per partition, the offset
//! after the last message whose batch the runtime acknowledged (every sink
//! confirmed it, and every batch read before it). After a crash, a
//! rebalance or a stop, the group resumes at the first message whose
//! outputs may be missing: at-least-once delivery.
//!
//! [`KafkaSink`] produces each output as one JSON message with `acks=all`
//! and idempotence on; its flush waits for the delivery report of every
//! message written and fails if any message was not delivered, so a batch
//! is acknowledged to the source only once Kafka has stored its outputs.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use syncflow::connector::kafka::{KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig};
//! use syncflow::prelude::*;
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Order { id: u64, customer: String, cents: i64 }
//!
//! /// Keeps the orders of at least ten euros.
//! #[sync_function]
//! fn big(o: Order) -> Option<Order> { (o.cents >= 1000).then_some(o) }
//!
//! let source = KafkaSource::<Order>::connect(
//!     &KafkaSourceConfig::new("127.0.0.1:9092", ["orders"], "big-orders"),
//! ).await?;
//! let sink = KafkaSink::connect(&KafkaSinkConfig::new("127.0.0.1:9092", "big-orders").key("customer")).await?;
//! Runtime::new(flow!(big)).source(source).sink(sink).run().await?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::{
    Acker, Batch, ConnectorError, DecodeError, DecodeFn, Read, Sink, Source, serde_decode,
};

/// The connector's name in errors and logs.
const CONNECTOR: &str = "kafka";

/// How long [`KafkaSource::read`](Source::read) waits for a first message
/// before it returns [`Read::Idle`].
const IDLE_WAIT: Duration = Duration::from_millis(200);

/// Commit attempts per acknowledgement before the source gives up until the
/// next one (one while the brokers are unreachable).
const COMMIT_ATTEMPTS: u32 = 3;

/// The longest one commit (all its attempts) may take, so that a shutdown
/// during an outage stays prompt. What is not committed then is committed
/// by a later acknowledgement, or read again by the group's next member.
const COMMIT_BUDGET: Duration = Duration::from_secs(5);

/// The same while the brokers are known to be unreachable.
const COMMIT_BUDGET_DOWN: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

/// Where a consumer group without a committed offset starts reading a
/// partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// At the partition's first message (default): nothing already in the
    /// topic is missed.
    #[default]
    Earliest,
    /// After the partition's last message: only messages produced from now on.
    Latest,
}

impl StartFrom {
    fn property(self) -> &'static str {
        match self {
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// A librdkafka property value in a flow file: text, a number or a boolean.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only read through `properties`
enum PropertyValue {
    Text(String),
    Integer(i64),
    Number(f64),
    Flag(bool),
}

/// Reads `properties` whose values may be numbers or booleans in YAML.
fn properties_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, PropertyValue>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                PropertyValue::Text(s) => s,
                PropertyValue::Integer(n) => n.to_string(),
                PropertyValue::Number(n) => n.to_string(),
                PropertyValue::Flag(b) => b.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// Configuration of a [`KafkaSource`] (`source: { kafka: {...} }` in flow
/// files).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// The bootstrap brokers: `host:port`, comma-separated
    /// (librdkafka's `bootstrap.servers`).
    pub brokers: String,
    /// The topics to read. A name starting with `^` is a regular
    /// expression matched against every topic of the cluster.
    pub topics: Vec<String>,
    /// The consumer group (`group.id`): the group's members share the
    /// topics' partitions, and the group's committed offsets are where a
    /// restart resumes.
    pub group: String,
    /// Where the group starts in a partition it has no committed offset
    /// for: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start: StartFrom,
    /// Whether the decoder gets each message with its metadata: a
    /// [`KafkaRecord`] `{"topic", "partition", "offset", "timestamp",
    /// "key", "payload"}` instead of the payload alone (default `false`).
    #[serde(default)]
    pub metadata: bool,
    /// How long connecting may take before it fails, in milliseconds
    /// (default 10000): the source checks at start that the brokers answer.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Further librdkafka consumer properties (`session.timeout.ms`,
    /// `security.protocol`, `sasl.username`...), see librdkafka's
    /// CONFIGURATION.md. `bootstrap.servers`, `group.id`,
    /// `enable.auto.commit` and `auto.offset.reset` are set by the fields
    /// above and refused here.
    #[serde(default, deserialize_with = "properties_map")]
    #[schemars(with = "BTreeMap<String, PropertyValue>")]
    pub properties: BTreeMap<String, String>,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

fn default_delivery_timeout_ms() -> u64 {
    30_000
}

impl KafkaSourceConfig {
    /// A configuration with the defaults: `topics` read by consumer group
    /// `group` from the cluster at `brokers`.
    pub fn new<S: Into<String>>(
        brokers: impl Into<String>,
        topics: impl IntoIterator<Item = S>,
        group: impl Into<String>,
    ) -> Self {
        KafkaSourceConfig {
            brokers: brokers.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            group: group.into(),
            start: StartFrom::default(),
            metadata: false,
            connect_timeout_ms: default_connect_timeout_ms(),
            properties: BTreeMap::new(),
        }
    }

    /// Where a group without committed offsets starts.
    pub fn start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Decodes [`KafkaRecord`]s (payload with topic, partition, offset,
    /// timestamp and key) instead of bare payloads.
    pub fn metadata(mut self, on: bool) -> Self {
        self.metadata = on;
        self
    }

    /// How long connecting may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// Sets a librdkafka consumer property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }
}

/// Configuration of a [`KafkaSink`] (`sinks: [ { kafka: {...} } ]` in flow
/// files).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// The bootstrap brokers: `host:port`, comma-separated
    /// (librdkafka's `bootstrap.servers`).
    pub brokers: String,
    /// The topic written to.
    pub topic: String,
    /// The output field whose value becomes the message key (`id`, or a
    /// dotted path such as `customer.id`): a string gives its text, any
    /// other value its JSON text. Messages with the same key go to the same
    /// partition, in order. Without it, or when the field is missing or
    /// null, messages have no key.
    #[serde(default)]
    pub key: Option<String>,
    /// How long a message may take to be delivered, retries included, in
    /// milliseconds (librdkafka's `message.timeout.ms`, default 30000);
    /// past it the message fails and so does the sink's flush.
    #[serde(default = "default_delivery_timeout_ms")]
    pub delivery_timeout_ms: u64,
    /// How long connecting may take before it fails, in milliseconds
    /// (default 10000): the sink checks at start that the brokers answer.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Further librdkafka producer properties (`linger.ms`,
    /// `compression.type`, `security.protocol`...), see librdkafka's
    /// CONFIGURATION.md. `bootstrap.servers`, `acks`, `enable.idempotence`
    /// and `message.timeout.ms` are set by syncflow and refused here.
    #[serde(default, deserialize_with = "properties_map")]
    #[schemars(with = "BTreeMap<String, PropertyValue>")]
    pub properties: BTreeMap<String, String>,
}

impl KafkaSinkConfig {
    /// A configuration with the defaults, writing to `topic` of the cluster
    /// at `brokers`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        KafkaSinkConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            key: None,
            delivery_timeout_ms: default_delivery_timeout_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            properties: BTreeMap::new(),
        }
    }

    /// Takes each message's key from this output field (a dotted path).
    pub fn key(mut self, field: impl Into<String>) -> Self {
        self.key = Some(field.into());
        self
    }

    /// How long a message may take to be delivered.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// How long connecting may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// Sets a librdkafka producer property.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }
}

/// Builds a librdkafka configuration: syncflow's settings, then the user's
/// properties, refusing those syncflow sets itself.
fn client_config(
    target: &str,
    fixed: &[(&str, &str)],
    reserved: &[(&str, &str)],
    properties: &BTreeMap<String, String>,
) -> Result<ClientConfig, ConnectorError> {
    let mut config = ClientConfig::new();
    // Brokers close idle connections: not worth a log line.
    config.set("log.connection.close", "false");
    for (key, value) in fixed {
        config.set(*key, *value);
    }
    for (key, value) in properties {
        if let Some((_, instead)) = reserved.iter().find(|(k, _)| k == key) {
            return Err(ConnectorError::server(
                CONNECTOR,
                target,
                "configure the client",
                format!("property `{key}` is set by syncflow"),
                format!("remove it from `properties`; {instead}"),
            ));
        }
        config.set(key, value);
    }
    Ok(config)
}

/// A client-creation error, without the value of a secret property.
fn config_error(target: &str, role: &'static str, e: KafkaError) -> ConnectorError {
    let message = match &e {
        KafkaError::ClientConfig(_, description, key, _) => {
            let secret = ["password", "secret", "key", "token", "jaas"]
                .iter()
                .any(|s| key.contains(s));
            if secret {
                format!("invalid value for property `{key}` (value not shown)")
            } else {
                format!("{description} (property `{key}`)")
            }
        }
        other => other.to_string(),
    };
    ConnectorError::server(
        CONNECTOR,
        target,
        role,
        message,
        "check the property names and values in `properties` against librdkafka's CONFIGURATION.md",
    )
}

// ---------------------------------------------------------------------------
// Logging and outages
// ---------------------------------------------------------------------------

/// Logs a connection outage once (`warn`), and its end (`info`).
///
/// librdkafka reconnects by itself (with its own exponential backoff); this
/// only tracks what its callbacks and the connector's calls report, from
/// any thread.
#[derive(Debug)]
struct Outage {
    down: AtomicBool,
    since: Mutex<Option<std::time::Instant>>,
    target: String,
}

impl Outage {
    fn new(target: String) -> Self {
        Outage {
            down: AtomicBool::new(false),
            since: Mutex::new(None),
            target,
        }
    }

    fn failed(&self, error: &dyn fmt::Display) {
        if !self.down.swap(true, Ordering::AcqRel) {
            *lock(&self.since) = Some(std::time::Instant::now());
            tracing::warn!(
                connector = CONNECTOR,
                target = %self.target,
                %error,
                "cannot reach Kafka; librdkafka reconnects with backoff until the brokers answer (nothing is lost meanwhile)"
            );
        } else {
            tracing::debug!(connector = CONNECTOR, target = %self.target, %error, "Kafka still unreachable");
        }
    }

    fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    #[inline]
    fn ok(&self) {
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::AcqRel) {
            let down_for = lock(&self.since)
                .take()
                .map(|s| s.elapsed())
                .unwrap_or_default();
            tracing::info!(
                connector = CONNECTOR,
                target = %self.target,
                ?down_for,
                "connection is back; resuming"
            );
        }
    }
}

/// librdkafka's log facilities of connection failures.
const CONNECTION_FACILITIES: &[&str] = &["FAIL", "BROKERFAIL", "REQTMOUT", "CONNECT", "ERROR"];

/// Forwards librdkafka's log lines to `tracing`; connection failures count
/// as an outage (logged once).
fn log_line(outage: &Outage, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(connector = CONNECTOR, target = %outage.target, facility, "librdkafka: {message}");
        }
        RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
            if CONNECTION_FACILITIES.contains(&facility) {
                outage.failed(&message);
            } else {
                tracing::warn!(connector = CONNECTOR, target = %outage.target, facility, "librdkafka: {message}");
            }
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::debug!(connector = CONNECTOR, target = %outage.target, facility, "librdkafka: {message}");
        }
        RDKafkaLogLevel::Debug => {
            tracing::trace!(connector = CONNECTOR, target = %outage.target, facility, "librdkafka: {message}");
        }
    }
}

/// An error reported by librdkafka outside any call: fatal errors are
/// logged as errors (the next call fails with them), others as an outage.
fn client_error(outage: &Outage, error: &KafkaError, reason: &str) {
    if error.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal) {
        tracing::error!(connector = CONNECTOR, target = %outage.target, %error, reason, "fatal Kafka client error");
    } else {
        outage.failed(&format_args!("{error}: {reason}"));
    }
}

/// Locks a mutex, ignoring poisoning (the data stays consistent: every
/// critical section here is a few map updates).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Source
// ---------------------------------------------------------------------------

/// A message with its metadata, as decoded when
/// [`KafkaSourceConfig::metadata`] is on: use `KafkaRecord<Order>` as the
/// flow's input type instead of `Order`.
///
/// The decoder reads it from
/// `{"topic":"orders","partition":2,"offset":41,"timestamp":1700000000000,"key":"c-7","payload":{...}}`
/// (a key that is not UTF-8 is decoded lossily; a message without payload
/// has `"payload":null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KafkaRecord<T> {
    /// The topic the message was read from.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its timestamp (milliseconds since the Unix epoch), if it has one.
    pub timestamp: Option<i64>,
    /// Its key, if it has one.
    pub key: Option<String>,
    /// The decoded payload.
    pub payload: T,
}

/// A partition: topic name and partition number.
type Partition = (Arc<str>, i32);

/// The partitions assigned and the offsets acknowledged and committed,
/// shared by the source, its acker and its rebalance callback.
#[derive(Debug, Default)]
struct Offsets {
    /// Per assigned partition, the number of the assignment that gave it to
    /// this consumer. A batch read before a partition was revoked is
    /// acknowledged for it only if it is still the same assignment: a late
    /// acknowledgement never moves the offset of a partition that another
    /// consumer owns now (or owned in between).
    assigned: HashMap<Partition, u64>,
    /// Assignments so far.
    assignments: u64,
    /// Per partition, the offset after the last acknowledged message (in
    /// read order): where the group resumes.
    acked: HashMap<Partition, i64>,
    /// Per partition, the offset last committed by this consumer.
    committed: HashMap<Partition, i64>,
}

type Commit = Vec<(Arc<str>, i32, i64)>;

impl Offsets {
    /// Acknowledged offsets not committed yet, of the partitions `keep` selects.
    fn pending(&self, keep: impl Fn(&str, i32) -> bool) -> Commit {
        self.acked
            .iter()
            .filter(|(key, offset)| keep(&key.0, key.1) && self.committed.get(*key) != Some(offset))
            .map(|((topic, partition), offset)| (topic.clone(), *partition, *offset))
            .collect()
    }

    fn mark_committed(&mut self, list: &Commit) {
        for (topic, partition, offset) in list {
            self.committed.insert((topic.clone(), *partition), *offset);
        }
    }

    /// Records an acknowledged batch; returns the number of its partitions
    /// skipped because they were revoked since it was read.
    fn record(&mut self, ack: KafkaAck) -> usize {
        let mut skipped = 0;
        for (topic, partition, offset, assignment) in ack.offsets {
            let key = (topic, partition);
            if self.assigned.get(&key) == Some(&assignment) {
                self.acked.insert(key, offset);
            } else {
                skipped += 1;
            }
        }
        skipped
    }

    fn assign(&mut self, list: &TopicPartitionList) {
        self.assignments += 1;
        for e in list.elements() {
            self.assigned
                .insert((Arc::from(e.topic()), e.partition()), self.assignments);
        }
    }

    /// Forgets revoked partitions.
    fn revoke(&mut self, list: &TopicPartitionList) {
        let gone = |key: &Partition| list.find_partition(&key.0, key.1).is_some();
        self.assigned.retain(|key, _| !gone(key));
        self.acked.retain(|key, _| !gone(key));
        self.committed.retain(|key, _| !gone(key));
    }
}

/// What a consumer's callbacks share with its source and acker.
#[derive(Debug)]
struct ConsumerShared {
    group: String,
    outage: Outage,
    offsets: Mutex<Offsets>,
}

/// The consumer's librdkafka context: logs, errors, rebalances.
struct SourceContext {
    shared: Arc<ConsumerShared>,
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_line(&self.shared.outage, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.shared.outage, &error, reason);
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let shared = &self.shared;
        match rebalance {
            Rebalance::Revoke(revoked) => {
                // Commit what was acknowledged for the partitions leaving, so
                // that their next owner starts after it. Batches still in
                // flight are delivered by this consumer and read again by the
                // next owner (at-least-once).
                let pending = lock(&shared.offsets)
                    .pending(|topic, partition| revoked.find_partition(topic, partition).is_some());
                tracing::info!(
                    connector = CONNECTOR,
                    target = %shared.outage.target,
                    group = %shared.group,
                    partitions = %partition_names(revoked),
                    "partitions revoked"
                );
                // (Not while the brokers are unreachable: the commit would
                // only fail, after a wait.)
                if !pending.is_empty()
                    && !shared.outage.is_down()
                    && let Err(error) = commit_offsets(consumer, &pending)
                {
                    tracing::warn!(
                        connector = CONNECTOR,
                        target = %shared.outage.target,
                        group = %shared.group,
                        %error,
                        "cannot commit the offsets of revoked partitions; their next owner reads the acknowledged messages again"
                    );
                }
                lock(&shared.offsets).revoke(revoked);
            }
            Rebalance::Assign(assigned) => {
                lock(&shared.offsets).assign(assigned);
                tracing::info!(
                    connector = CONNECTOR,
                    target = %shared.outage.target,
                    group = %shared.group,
                    partitions = %partition_names(assigned),
                    "partitions assigned"
                );
            }
            Rebalance::Error(error) => tracing::warn!(
                connector = CONNECTOR,
                target = %shared.outage.target,
                group = %shared.group,
                %error,
                "consumer group rebalance failed; librdkafka retries"
            ),
        }
    }
}

/// `orders[0,1] audit[3]`
fn partition_names(list: &TopicPartitionList) -> String {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for e in list.elements() {
        by_topic
            .entry(e.topic().to_string())
            .or_default()
            .push(e.partition());
    }
    by_topic
        .iter()
        .map(|(t, ps)| {
            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
            format!("{t}[{}]", ps.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Commits these offsets, synchronously.
fn commit_offsets<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    list: &Commit,
) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(list.len());
    for (topic, partition, offset) in list {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)
}

type KafkaConsumer = StreamConsumer<SourceContext>;

/// Reads Kafka topics as a member of a consumer group; each message's
/// payload is decoded into the flow's input type.
///
/// - Batches hold up to the runtime's batch size of messages: what has
///   arrived, without waiting for more once one message is there. When
///   nothing arrives for 200 ms, [`Source::read`] returns [`Read::Idle`].
/// - A record's position (in dead letters) is the message's offset in its
///   partition; its raw bytes are the message's payload. With
///   [`KafkaSourceConfig::metadata`], the decoder gets a [`KafkaRecord`]
///   with topic, partition, offset, timestamp and key.
/// - Offsets are committed (`enable.auto.commit` is off) only over what the
///   runtime acknowledged: per partition, the offset after the last
///   acknowledged message, when the acker commits. When partitions are
///   revoked in a rebalance, their acknowledged offsets are committed first;
///   batches of theirs still in flight then are not committed for them (the
///   partition's next owner reads those messages again: at-least-once).
/// - A message that cannot be decoded is dead-lettered by the runtime; the
///   flow goes on.
///
/// Keep the runtime reading: librdkafka leaves the group when the source is
/// not read for `max.poll.interval.ms` (5 minutes by default).
pub struct KafkaSource<T> {
    consumer: Arc<KafkaConsumer>,
    name: Arc<str>,
    decode: DecodeFn<T>,
    metadata: bool,
    /// Topic names seen, shared by the acknowledgement tokens.
    topics: Vec<Arc<str>>,
    /// The envelope handed to the decoder when `metadata` is on.
    envelope: Vec<u8>,
}

impl<T> fmt::Debug for KafkaSource<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.consumer.context().shared;
        f.debug_struct("KafkaSource")
            .field("target", &shared.outage.target)
            .field("group", &shared.group)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl<T: DeserializeOwned + Send + 'static> KafkaSource<T> {
    /// Joins the consumer group and subscribes to the topics; payloads are
    /// decoded as JSON into `T`.
    pub async fn connect(config: &KafkaSourceConfig) -> Result<Self, ConnectorError> {
        Self::connect_with(config, serde_decode::<T>).await
    }
}

impl<T: Send + 'static> KafkaSource<T> {
    /// Joins the consumer group and subscribes to the topics; payloads (or
    /// [`KafkaRecord`] envelopes) are decoded with `decode`.
    pub async fn connect_with(
        config: &KafkaSourceConfig,
        decode: DecodeFn<T>,
    ) -> Result<Self, ConnectorError> {
        let topics = config.topics.join(",");
        let target = format!("{topics} at {}", config.brokers);
        let invalid = |message: &str, hint: &str| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "configure the consumer",
                message,
                hint,
            )
        };
        if config.brokers.trim().is_empty() {
            return Err(invalid(
                "`brokers` is empty",
                "give the brokers as `host:port`, comma-separated",
            ));
        }
        if config.topics.is_empty() || config.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(invalid(
                "`topics` is empty or has an empty name",
                "name at least one topic",
            ));
        }
        if config.group.trim().is_empty() {
            return Err(invalid(
                "`group` is empty",
                "name the consumer group: its committed offsets are where a restart resumes",
            ));
        }
        let client = client_config(
            &target,
            &[
                ("bootstrap.servers", config.brokers.as_str()),
                ("group.id", config.group.as_str()),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("enable.partition.eof", "false"),
                ("auto.offset.reset", config.start.property()),
            ],
            &[
                ("bootstrap.servers", "use `brokers`"),
                ("metadata.broker.list", "use `brokers`"),
                ("group.id", "use `group`"),
                (
                    "enable.auto.commit",
                    "syncflow commits offsets once the sinks confirmed the messages",
                ),
                ("auto.offset.reset", "use `start` (earliest or latest)"),
            ],
            &config.properties,
        )?;
        let shared = Arc::new(ConsumerShared {
            group: config.group.clone(),
            outage: Outage::new(target.clone()),
            offsets: Mutex::new(Offsets::default()),
        });
        let consumer: KafkaConsumer = client
            .create_with_context(SourceContext { shared })
            .map_err(|e| config_error(&target, "create the consumer", e))?;
        let consumer = Arc::new(consumer);

        // Fail early when no broker answers.
        let probe = config.topics.iter().find(|t| !t.starts_with('^')).cloned();
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let metadata = {
            let consumer = consumer.clone();
            let probe = probe.clone();
            tokio::task::spawn_blocking(move || consumer.fetch_metadata(probe.as_deref(), timeout))
                .await
                .map_err(|e| invalid(&format!("the connecting task failed: {e}"), ""))?
        };
        let metadata = metadata.map_err(|e| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "connect",
                format!("no broker answered within {} ms ({e})", config.connect_timeout_ms),
                "check `brokers` (host:port, comma-separated) and that Kafka is running and reachable",
            )
        })?;
        for topic in metadata.topics() {
            if let Some(error) = topic.error() {
                tracing::warn!(
                    connector = CONNECTOR,
                    target = %target,
                    topic = topic.name(),
                    error = %RDKafkaErrorCode::from(error),
                    "topic not readable yet; the source reads it once it exists"
                );
            }
        }
        let names: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "subscribe",
                e,
                "check the topic names (a regular expression starts with `^`)",
            )
        })?;
        tracing::info!(connector = CONNECTOR, target = %target, group = %config.group, "subscribed");
        Ok(KafkaSource {
            consumer,
            name: Arc::from(format!("kafka:{topics}")),
            decode,
            metadata: config.metadata,
            topics: Vec::new(),
            envelope: Vec::new(),
        })
    }
}

/// Acknowledges a batch of a [`KafkaSource`]: per partition read in the
/// batch, the offset after its last message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaAck {
    /// (topic, partition, next offset, assignment number).
    offsets: Vec<(Arc<str>, i32, i64, u64)>,
}

impl KafkaAck {
    /// `(topic, partition, next offset)` for each partition of the batch.
    pub fn offsets(&self) -> impl Iterator<Item = (&str, i32, i64)> + '_ {
        self.offsets.iter().map(|(t, p, o, _)| (&**t, *p, *o))
    }
}

/// Commits the offsets of a [`KafkaSource`]'s acknowledged batches.
pub struct KafkaAcker {
    consumer: Arc<KafkaConsumer>,
}

impl fmt::Debug for KafkaAcker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.consumer.context().shared;
        f.debug_struct("KafkaAcker")
            .field("target", &shared.outage.target)
            .field("group", &shared.group)
            .finish()
    }
}

/// Commit errors that retrying cannot fix.
fn commit_error_is_final(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::GroupAuthorizationFailed
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidGroupId
                | RDKafkaErrorCode::OffsetMetadataTooLarge
                | RDKafkaErrorCode::Fatal
        )
    )
}

impl Acker for KafkaAcker {
    type Ack = KafkaAck;

    fn ack(&mut self, ack: KafkaAck) {
        let shared = &self.consumer.context().shared;
        let skipped = lock(&shared.offsets).record(ack);
        if skipped > 0 {
            tracing::debug!(
                connector = CONNECTOR,
                target = %shared.outage.target,
                partitions = skipped,
                "batch acknowledged after some of its partitions were revoked: not committed for those (their owner reads these messages again)"
            );
        }
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        let shared = self.consumer.context().shared.clone();
        let mut pending = Some(lock(&shared.offsets).pending(|_, _| true));
        if pending.as_ref().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        // During an outage, one short try: the next acknowledgement tries again.
        let (attempts, budget) = if shared.outage.is_down() {
            (1, COMMIT_BUDGET_DOWN)
        } else {
            (COMMIT_ATTEMPTS, COMMIT_BUDGET)
        };
        let mut last_error = None;
        for attempt in 1..=attempts {
            let Some(list) = pending.take() else { break };
            let consumer = self.consumer.clone();
            // A synchronous commit, on a thread of its own; if it takes too
            // long it finishes there (committing acknowledged offsets late
            // is harmless) while the runtime goes on.
            let task = tokio::task::spawn_blocking(move || {
                let result = commit_offsets(&*consumer, &list);
                (result, list)
            });
            let left = budget.saturating_sub(started.elapsed());
            let (result, list) = match tokio::time::timeout(left, task).await {
                Err(_elapsed) => {
                    last_error = Some(format!("no answer within {budget:?}"));
                    break;
                }
                Ok(Err(e)) => {
                    return Err(ConnectorError::server(
                        CONNECTOR,
                        shared.outage.target.clone(),
                        "commit offsets",
                        format!("the committing task failed: {e}"),
                        "",
                    ));
                }
                Ok(Ok(done)) => done,
            };
            match result {
                Ok(()) => {
                    lock(&shared.offsets).mark_committed(&list);
                    shared.outage.ok();
                    return Ok(());
                }
                Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => return Ok(()),
                Err(error) if commit_error_is_final(&error) => {
                    return Err(ConnectorError::server(
                        CONNECTOR,
                        shared.outage.target.clone(),
                        "commit offsets",
                        format!("group `{}`: {error}", shared.group),
                        "check that the client may commit for this group (ACLs) and the group name",
                    ));
                }
                Err(error) => {
                    last_error = Some(error.to_string());
                    pending = Some(list);
                    if attempt < attempts {
                        let backoff = Duration::from_millis(100 << attempt);
                        let left = budget.saturating_sub(started.elapsed());
                        tokio::time::sleep(backoff.min(left)).await;
                    }
                }
            }
        }
        if let Some(error) = last_error {
            if shared.outage.is_down() {
                tracing::debug!(
                    connector = CONNECTOR,
                    target = %shared.outage.target,
                    group = %shared.group,
                    %error,
                    "cannot commit offsets during the outage; will retry at the next acknowledgement"
                );
            } else {
                tracing::warn!(
                    connector = CONNECTOR,
                    target = %shared.outage.target,
                    group = %shared.group,
                    %error,
                    "cannot commit offsets now; will retry at the next acknowledgement (messages after the last commit may be read again)"
                );
            }
        }
        Ok(())
    }
}

/// Writes `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The [`KafkaRecord`] envelope of a message, for the decoder.
fn write_envelope(out: &mut Vec<u8>, message: &BorrowedMessage<'_>, payload: Option<&[u8]>) {
    use std::io::Write as _;
    out.clear();
    out.extend_from_slice(b"{\"topic\":");
    json_str(out, message.topic());
    let _ = write!(
        out,
        ",\"partition\":{},\"offset\":{},\"timestamp\":",
        message.partition(),
        message.offset()
    );
    match message.timestamp().to_millis() {
        Some(ms) => {
            let _ = write!(out, "{ms}");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"key\":");
    match message.key() {
        Some(key) => json_str(out, &String::from_utf8_lossy(key)),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload.unwrap_or(b"null"));
    out.push(b'}');
}

impl<T: Send + 'static> KafkaSource<T> {
    /// A consumption error: fatal ones fail the source, others are an outage
    /// that librdkafka recovers from.
    fn consume_error(&self, error: KafkaError) -> Result<(), ConnectorError> {
        let shared = &self.consumer.context().shared;
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            return Err(ConnectorError::server(
                CONNECTOR,
                shared.outage.target.clone(),
                "consume",
                format!("fatal error {code}: {reason}"),
                "restart the flow; messages not acknowledged are read again",
            ));
        }
        match error {
            KafkaError::PartitionEOF(_) => {}
            KafkaError::MessageConsumptionFatal(code) => {
                return Err(ConnectorError::server(
                    CONNECTOR,
                    shared.outage.target.clone(),
                    "consume",
                    code,
                    "restart the flow; messages not acknowledged are read again",
                ));
            }
            KafkaError::MessageConsumption(
                code @ (RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed),
            ) => {
                tracing::warn!(
                    connector = CONNECTOR,
                    target = %shared.outage.target,
                    error = %code,
                    "a subscribed topic cannot be read; check that it exists and that this client may read it"
                );
            }
            other => shared.outage.failed(&other),
        }
        Ok(())
    }
}

impl<T: Send + 'static> Source for KafkaSource<T> {
    type Item = T;
    type Ack = KafkaAck;
    type Acker = KafkaAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> KafkaAcker {
        KafkaAcker {
            consumer: self.consumer.clone(),
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<KafkaAck>, ConnectorError> {
        let deadline = tokio::time::Instant::now() + IDLE_WAIT;
        let mut ack = KafkaAck::default();
        // The entry of `ack` of the last message's partition.
        let mut last: Option<usize> = None;
        let consumer = self.consumer.clone();
        let mut stream = consumer.stream();
        while batch.len() < max {
            let next = if batch.is_empty() {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(next) => next,
                    Err(_idle) => break,
                }
            } else {
                // What has arrived already; no waiting.
                match stream.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    self.consume_error(error)?;
                    if batch.is_empty() {
                        continue;
                    }
                    break;
                }
                None => break,
            };
            let payload = message.payload();
            let raw = payload.unwrap_or(&[]);
            let decoded = if self.metadata {
                match payload.map(serde_json::from_slice::<IgnoredAny>) {
                    Some(Err(e)) => Err(DecodeError::new(e)),
                    _ => {
                        write_envelope(&mut self.envelope, &message, payload);
                        (self.decode)(&self.envelope)
                    }
                }
            } else {
                (self.decode)(raw)
            };
            let offset = message.offset();
            batch.push(u64::try_from(offset).unwrap_or(0), raw, decoded);

            let (topic, partition) = (message.topic(), message.partition());
            let same = |(t, p, _, _): &(Arc<str>, i32, i64, u64)| *p == partition && &**t == topic;
            match last
                .filter(|&i| ack.offsets.get(i).is_some_and(same))
                .or_else(|| ack.offsets.iter().position(same))
            {
                Some(i) => {
                    ack.offsets[i].2 = offset + 1;
                    last = Some(i);
                }
                None => {
                    let name = match self.topics.iter().find(|t| &***t == topic) {
                        Some(name) => name.clone(),
                        None => {
                            let name: Arc<str> = Arc::from(topic);
                            self.topics.push(name.clone());
                            name
                        }
                    };
                    // Rebalance callbacks run inside this consumer's polls,
                    // so this is the assignment the message was read under.
                    let key = (name, partition);
                    let assignment = lock(&self.consumer.context().shared.offsets)
                        .assigned
                        .get(&key)
                        .copied()
                        .unwrap_or(0);
                    ack.offsets.push((key.0, partition, offset + 1, assignment));
                    last = Some(ack.offsets.len() - 1);
                }
            }
        }
        if batch.is_empty() {
            return Ok(Read::Idle);
        }
        self.consumer.context().shared.outage.ok();
        Ok(Read::Batch(ack))
    }
}

// ---------------------------------------------------------------------------
// Sink
// ---------------------------------------------------------------------------

/// Delivery reports of a sink's messages.
#[derive(Debug)]
struct Deliveries {
    /// Messages handed to librdkafka.
    sent: AtomicU64,
    /// Messages with a delivery report (success or failure).
    done: AtomicU64,
    /// Failed deliveries since the last flush.
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Woken when every message sent has its report.
    settled: tokio::sync::Notify,
    outage: Outage,
}

/// The producer's librdkafka context: logs, errors, delivery reports.
struct SinkContext {
    deliveries: Arc<Deliveries>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_line(&self.deliveries.outage, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.deliveries.outage, &error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let d = &self.deliveries;
        match result {
            Ok(_) => d.outage.ok(),
            Err((error, message)) => {
                if d.failed.fetch_add(1, Ordering::AcqRel) == 0 {
                    *lock(&d.first_error) = Some(format!(
                        "{error} (topic `{}`, partition {})",
                        message.topic(),
                        message.partition()
                    ));
                }
            }
        }
        let done = d.done.fetch_add(1, Ordering::AcqRel) + 1;
        if done >= d.sent.load(Ordering::Acquire) {
            d.settled.notify_waiters();
        }
    }
}

/// Produces each output as one JSON message to a Kafka topic.
///
/// The producer is idempotent with `acks=all`: a message is delivered once
/// every in-sync replica stored it, and retries never duplicate or reorder
/// messages. [`Sink::write`] encodes and enqueues (librdkafka batches and
/// sends in the background); [`Sink::flush`] waits for the delivery report
/// of every message enqueued and fails if any message was not delivered, so
/// the runtime acknowledges the source only over delivered outputs.
///
/// With [`KafkaSinkConfig::key`], each message's key is the text of an
/// output field; messages with equal keys go to the same partition.
pub struct KafkaSink {
    producer: ThreadedProducer<SinkContext>,
    deliveries: Arc<Deliveries>,
    topic: String,
    name: String,
    key: Option<Vec<String>>,
    buf: Vec<u8>,
    delivery_timeout: Duration,
}

impl fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSink")
            .field("target", &self.deliveries.outage.target)
            .field("key", &self.key)
            .finish()
    }
}

impl KafkaSink {
    /// Creates the producer and checks that the brokers answer.
    pub async fn connect(config: &KafkaSinkConfig) -> Result<Self, ConnectorError> {
        let target = format!("{} at {}", config.topic, config.brokers);
        let invalid = |message: &str, hint: &str| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "configure the producer",
                message,
                hint,
            )
        };
        if config.brokers.trim().is_empty() {
            return Err(invalid(
                "`brokers` is empty",
                "give the brokers as `host:port`, comma-separated",
            ));
        }
        if config.topic.trim().is_empty() {
            return Err(invalid("`topic` is empty", "name the topic to write to"));
        }
        let key = match &config.key {
            Some(path) => {
                let parts: Vec<String> = path.split('.').map(str::to_string).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(invalid(
                        &format!("`key` `{path}` is not a field path"),
                        "give a field name, or a dotted path such as `customer.id`",
                    ));
                }
                Some(parts)
            }
            None => None,
        };
        let timeout_ms = config.delivery_timeout_ms.max(1).to_string();
        let client = client_config(
            &target,
            &[
                ("bootstrap.servers", config.brokers.as_str()),
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("message.timeout.ms", timeout_ms.as_str()),
            ],
            &[
                ("bootstrap.servers", "use `brokers`"),
                ("metadata.broker.list", "use `brokers`"),
                ("enable.idempotence", "the sink is always idempotent"),
                ("acks", "the sink always waits for all in-sync replicas"),
                (
                    "request.required.acks",
                    "the sink always waits for all in-sync replicas",
                ),
                ("message.timeout.ms", "use `delivery_timeout_ms`"),
                ("delivery.timeout.ms", "use `delivery_timeout_ms`"),
            ],
            &config.properties,
        )?;
        let deliveries = Arc::new(Deliveries {
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            settled: tokio::sync::Notify::new(),
            outage: Outage::new(target.clone()),
        });
        let producer: ThreadedProducer<SinkContext> = client
            .create_with_context(SinkContext {
                deliveries: deliveries.clone(),
            })
            .map_err(|e| config_error(&target, "create the producer", e))?;
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        let metadata = {
            let producer = producer.clone();
            let topic = config.topic.clone();
            tokio::task::spawn_blocking(move || {
                producer.client().fetch_metadata(Some(&topic), timeout)
            })
            .await
            .map_err(|e| invalid(&format!("the connecting task failed: {e}"), ""))?
        };
        let metadata = metadata.map_err(|e| {
            ConnectorError::server(
                CONNECTOR,
                target.clone(),
                "connect",
                format!("no broker answered within {} ms ({e})", config.connect_timeout_ms),
                "check `brokers` (host:port, comma-separated) and that Kafka is running and reachable",
            )
        })?;
        for topic in metadata.topics() {
            if let Some(error) = topic.error() {
                tracing::warn!(
                    connector = CONNECTOR,
                    target = %target,
                    topic = topic.name(),
                    error = %RDKafkaErrorCode::from(error),
                    "topic not writable yet; deliveries fail unless the brokers create it"
                );
            }
        }
        Ok(KafkaSink {
            producer,
            deliveries,
            name: format!("kafka:{}", config.topic),
            topic: config.topic.clone(),
            key,
            buf: Vec::with_capacity(1024),
            delivery_timeout: Duration::from_millis(config.delivery_timeout_ms.max(1)),
        })
    }

    fn error(
        &self,
        action: &'static str,
        message: impl fmt::Display,
        hint: &str,
    ) -> ConnectorError {
        ConnectorError::server(
            CONNECTOR,
            self.deliveries.outage.target.clone(),
            action,
            message,
            hint,
        )
    }
}

impl<T: Serialize + Sync> Sink<T> for KafkaSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        for item in items {
            self.buf.clear();
            serde_json::to_writer(&mut self.buf, item).map_err(|source| {
                ConnectorError::Encode {
                    target: self.name.clone(),
                    source,
                }
            })?;
            let key = match &self.key {
                Some(path) => field_text(&self.buf, path),
                None => None,
            };
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(&self.buf[..]);
            if let Some(key) = key.as_deref() {
                record = record.key(key);
            }
            self.deliveries.sent.fetch_add(1, Ordering::AcqRel);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's queue is full: let deliveries catch up.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((error, _)) => {
                        self.deliveries.sent.fetch_sub(1, Ordering::AcqRel);
                        return Err(self.error(
                            "enqueue a message",
                            error,
                            "check the topic name and the message size (`message.max.bytes`)",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        let d = self.deliveries.clone();
        // librdkafka reports every message within its delivery timeout.
        let deadline = tokio::time::Instant::now() + self.delivery_timeout + Duration::from_secs(5);
        loop {
            let settled = d.settled.notified();
            tokio::pin!(settled);
            settled.as_mut().enable();
            let (sent, done) = (
                d.sent.load(Ordering::Acquire),
                d.done.load(Ordering::Acquire),
            );
            if done >= sent {
                break;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return Err(self.error(
                    "wait for delivery reports",
                    format!("{} message(s) still unconfirmed after {:?}", sent - done, self.delivery_timeout),
                    "check that the brokers are running; the batch is not acknowledged and is read again",
                ));
            }
        }
        let failed = d.failed.swap(0, Ordering::AcqRel);
        if failed > 0 {
            let first = lock(&d.first_error).take().unwrap_or_default();
            return Err(self.error(
                "deliver messages",
                format!("{failed} message(s) were not delivered; first error: {first}"),
                "check that the topic exists and that this client may write to it; the batch is not acknowledged and is read again",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Message keys from output fields
// ---------------------------------------------------------------------------

/// The text of the field at `path` in the JSON object `json`: a string's
/// content, another value's JSON text; `None` when missing or null.
fn field_text<'a>(json: &'a [u8], path: &[String]) -> Option<Cow<'a, [u8]>> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let raw: &'a RawValue = FieldSeed { path }.deserialize(&mut de).ok()??;
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s = serde_json::from_str::<Text<'a>>(text).ok()?.0;
            Some(match s {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            })
        }
        Some(b'n') => None,
        _ => Some(Cow::Borrowed(text.as_bytes())),
    }
}

/// A string, borrowed from the input unless it has escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// Finds the raw value at `path` in a JSON value, skipping everything else
/// without allocating.
struct FieldSeed<'p> {
    path: &'p [String],
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<&'de RawValue>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match self.path.split_first() {
                Some((first, rest)) if found.is_none() && key.0 == first.as_str() => {
                    found = if rest.is_empty() {
                        Some(map.next_value::<&'de RawValue>()?)
                    } else {
                        map.next_value_seed(FieldSeed { path: rest })?
                    };
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(json: &str, path: &str) -> Option<String> {
        let path: Vec<String> = path.split('.').map(str::to_string).collect();
        field_text(json.as_bytes(), &path).map(|k| String::from_utf8(k.into_owned()).unwrap())
    }

    #[test]
    fn keys_come_from_fields() {
        let doc =
            r#"{"id":42,"name":"a\"b","customer":{"id":"c-7","tags":[1,2]},"none":null,"f":1.5}"#;
        assert_eq!(key(doc, "id").as_deref(), Some("42"));
        assert_eq!(key(doc, "name").as_deref(), Some("a\"b"));
        assert_eq!(key(doc, "customer.id").as_deref(), Some("c-7"));
        assert_eq!(key(doc, "customer.tags").as_deref(), Some("[1,2]"));
        assert_eq!(
            key(doc, "customer").as_deref(),
            Some(r#"{"id":"c-7","tags":[1,2]}"#)
        );
        assert_eq!(key(doc, "f").as_deref(), Some("1.5"));
        assert_eq!(key(doc, "none"), None);
        assert_eq!(key(doc, "missing"), None);
        assert_eq!(key(doc, "id.deeper"), None);
        assert_eq!(key("[1,2]", "id"), None);
        assert_eq!(key("7", "id"), None);
    }

    #[test]
    fn properties_accept_numbers_and_flags() {
        let config: KafkaSourceConfig = serde_json::from_value(serde_json::json!({
            "brokers": "b:9092", "topics": ["t"], "group": "g",
            "properties": {"session.timeout.ms": 6000, "check.crcs": true, "client.id": "x"}
        }))
        .unwrap();
        assert_eq!(config.properties["session.timeout.ms"], "6000");
        assert_eq!(config.properties["check.crcs"], "true");
        assert_eq!(config.properties["client.id"], "x");
        assert_eq!(config.start, StartFrom::Earliest);
        let error = serde_json::from_value::<KafkaSinkConfig>(serde_json::json!({
            "brokers": "b:9092", "topic": "t", "partition": 3
        }))
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `partition`"),
            "{error}"
        );
    }

    fn partitions(list: &[(&str, i32)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in list {
            tpl.add_partition(t, *p);
        }
        tpl
    }

    fn ack(list: &[(&str, i32, i64, u64)]) -> KafkaAck {
        KafkaAck {
            offsets: list
                .iter()
                .map(|(t, p, o, a)| (Arc::from(*t), *p, *o, *a))
                .collect(),
        }
    }

    #[test]
    fn late_acknowledgements_of_revoked_partitions_are_not_committed() {
        let mut o = Offsets::default();
        o.assign(&partitions(&[("t", 0), ("t", 1)]));
        assert_eq!(o.record(ack(&[("t", 0, 10, 1), ("t", 1, 5, 1)])), 0);
        let mut pending = o.pending(|_, _| true);
        pending.sort();
        assert_eq!(
            pending,
            vec![(Arc::from("t"), 0, 10), (Arc::from("t"), 1, 5)]
        );
        o.mark_committed(&pending);
        assert!(o.pending(|_, _| true).is_empty());
        // Later acknowledgements move the offset, in read order.
        assert_eq!(o.record(ack(&[("t", 0, 12, 1)])), 0);
        assert_eq!(o.pending(|_, _| true), vec![(Arc::from("t"), 0, 12)]);
        assert_eq!(o.pending(|_, p| p == 1), vec![]);

        // Partition 0 leaves and comes back: batches read before are not
        // committed for it; partition 1 stayed and still is.
        o.revoke(&partitions(&[("t", 0)]));
        assert_eq!(o.pending(|_, _| true), vec![]);
        o.assign(&partitions(&[("t", 0)]));
        assert_eq!(o.record(ack(&[("t", 0, 20, 1), ("t", 1, 7, 1)])), 1);
        assert_eq!(o.pending(|_, _| true), vec![(Arc::from("t"), 1, 7)]);
        assert_eq!(o.record(ack(&[("t", 0, 13, 2)])), 0);
        let mut pending = o.pending(|_, _| true);
        pending.sort();
        assert_eq!(
            pending,
            vec![(Arc::from("t"), 0, 13), (Arc::from("t"), 1, 7)]
        );
    }

    #[test]
    fn reserved_properties_are_refused() {
        let mut properties = BTreeMap::new();
        properties.insert("enable.auto.commit".to_string(), "true".to_string());
        let error = client_config(
            "t",
            &[],
            &[("enable.auto.commit", "syncflow commits")],
            &properties,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("property `enable.auto.commit` is set by syncflow"),
            "{error}"
        );
    }
}
