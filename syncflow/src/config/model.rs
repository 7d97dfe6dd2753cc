//! The flow file format, as Rust types (the JSON Schema is derived from them).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A flow file: one or more flows run by one process.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "syncflow flow file")]
pub struct FlowFile {
    /// The flows, by name. Every flow runs in parallel with the others.
    #[schemars(with = "BTreeMap<String, FlowSpec>")]
    pub flows: BTreeMap<String, Spanned<FlowSpec>>,
    /// Policies by registered function name, and `defaults` for every
    /// function (see the policies chapter of the book).
    #[serde(default)]
    #[schemars(with = "Option<BTreeMap<String, serde_json::Value>>")]
    pub policies: Option<Spanned<serde_json::Value>>,
    /// The embedded store of the Save/Load channels.
    #[serde(default)]
    #[schemars(with = "Option<ChannelsSpec>")]
    pub channels: Option<Spanned<ChannelsSpec>>,
    /// Tests of the flows' steps, run by `syncflow test`.
    #[serde(default)]
    #[schemars(with = "Vec<super::testing::TestSpec>")]
    pub tests: Vec<Spanned<super::testing::TestSpec>>,
}

/// The embedded channel store.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelsSpec {
    /// The store file (default `.syncflow/channels.redb`; `${VAR}` is replaced).
    pub path: Option<String>,
    /// Retention by channel name (for the embedded store's channels and
    /// the brokers' alike).
    #[serde(default)]
    pub retention: BTreeMap<String, RetentionSpec>,
    /// Channels kept by a broker instead of the embedded store, by channel
    /// name, so that flows on different machines can save and load them.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, BrokerSpec>")]
    pub brokers: BTreeMap<String, Spanned<BrokerSpec>>,
}

/// The broker that keeps a channel: exactly one of `nats` or `redis`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BrokerSpec {
    /// A NATS JetStream stream (cargo feature `nats`; `${VAR}` is replaced
    /// in every string).
    #[cfg_attr(
        feature = "nats",
        schemars(with = "Option<crate::channel::NatsChannelConfig>")
    )]
    pub nats: Option<serde_json::Value>,
    /// A Redis stream (cargo feature `redis`; `${VAR}` is replaced in every
    /// string).
    #[cfg_attr(
        feature = "redis",
        schemars(with = "Option<crate::channel::RedisChannelConfig>")
    )]
    pub redis: Option<serde_json::Value>,
}

/// How much of a channel is kept (both limits apply when both are given).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// Keep at most this many records.
    #[schemars(range(min = 1))]
    pub max_records: Option<u64>,
    /// Keep records for at most this long (`"7d"` is not accepted; use
    /// `"168h"`, `"30m"`, `"90s"`).
    pub max_age: Option<String>,
}

/// One flow: where messages come from, the steps they go through, where
/// they go.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    /// Where the flow's messages come from.
    #[schemars(with = "SourceSpec")]
    pub source: Spanned<SourceSpec>,
    /// The steps, in order: registered `#[sync_function]` names (run
    /// `syncflow functions` to list them). Each step's input type must be
    /// the previous step's output type.
    #[serde(default)]
    #[schemars(with = "Vec<StepSpec>")]
    pub steps: Vec<Spanned<StepSpec>>,
    /// Where the flow's outputs go; every sink gets every output. Without
    /// sinks, outputs are counted and dropped.
    #[serde(default)]
    #[schemars(with = "Vec<SinkSpec>")]
    pub sinks: Vec<Spanned<SinkSpec>>,
    /// A JSON-lines file (appended to) that receives every message that
    /// could not be decoded or that a step failed on, with the reason.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub dead_letter: Option<Spanned<String>>,
    /// Parallel workers (default 1).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub workers: Option<usize>,
    /// With several workers: an expression over the input message (as
    /// JSON) whose value picks the worker, so that messages with equal keys
    /// are processed in source order (`key: customer_id`).
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub key: Option<Spanned<String>>,
    /// Records per source batch (default 4096).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub batch_size: Option<usize>,
}

/// A step: the name of a registered function.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StepSpec {
    /// A registered `#[sync_function]`, by name.
    Function(String),
    /// A step given as a one-key map (`- name: arguments`).
    WithArgs(BTreeMap<String, serde_json::Value>),
}

/// A source: exactly one of `file`, `stdin` or `load`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Read a JSON-lines file (`${VAR}` is replaced by the environment
    /// variable's value).
    pub file: Option<String>,
    /// Keep a checkpoint of the file in this directory and resume after
    /// the last line whose outputs every sink confirmed.
    pub state_dir: Option<String>,
    /// Read JSON lines from standard input.
    pub stdin: Option<bool>,
    /// Read a Save/Load channel, from this flow's cursor: every flow that
    /// loads a channel gets every message.
    pub load: Option<String>,
    /// With `load`: the name of the cursor (default: the flow's name).
    pub reader: Option<String>,
    /// PostgreSQL logical replication (pgoutput): a snapshot of the
    /// published tables, then every change, as change events (cargo feature
    /// `postgres`; `${VAR}` is replaced in every string).
    #[cfg_attr(
        feature = "postgres",
        schemars(with = "Option<crate::connector::postgres::PostgresCdcSourceConfig>")
    )]
    pub postgres: Option<serde_json::Value>,
    /// RabbitMQ (AMQP 0-9-1): consume a RabbitMQ queue with manual acks and a prefetch; acked once every sink confirmed (cargo feature `amqp`).
    #[cfg_attr(
        feature = "amqp",
        schemars(with = "Option<crate::connector::amqp::AmqpSourceConfig>")
    )]
    pub amqp: Option<serde_json::Value>,
    /// MQTT 3.1.1 at QoS 1: subscribe at QoS 1 with a persistent session; PUBACK once every sink confirmed (cargo feature `mqtt`).
    #[cfg_attr(
        feature = "mqtt",
        schemars(with = "Option<crate::connector::mqtt::MqttSourceConfig>")
    )]
    pub mqtt: Option<serde_json::Value>,
    /// HTTP: a webhook: POSTed JSON, answered 200 only once every sink confirmed it (cargo feature `http`).
    #[cfg_attr(
        feature = "http",
        schemars(with = "Option<crate::connector::http::HttpSourceConfig>")
    )]
    pub http: Option<serde_json::Value>,
    /// NATS JetStream: a durable pull consumer of a JetStream stream; acked once every sink confirmed (cargo feature `nats`).
    #[cfg_attr(
        feature = "nats",
        schemars(with = "Option<crate::connector::nats::NatsSourceConfig>")
    )]
    pub nats: Option<serde_json::Value>,
    /// Redis Streams: a Redis Stream read by a consumer group (XREADGROUP, XACK once every sink confirmed, XAUTOCLAIM of stuck entries) (cargo feature `redis`).
    #[cfg_attr(
        feature = "redis",
        schemars(with = "Option<crate::connector::redis::RedisStreamSourceConfig>")
    )]
    pub redis: Option<serde_json::Value>,
    /// MySQL / MariaDB binlog CDC: a consistent snapshot, then the binlog's row changes, as change events; resumes from its checkpoint in `state_dir` (cargo feature `mysql-cdc`).
    #[cfg_attr(
        feature = "mysql-cdc",
        schemars(with = "Option<crate::connector::mysql_cdc::MysqlCdcSourceConfig>")
    )]
    pub mysql_cdc: Option<serde_json::Value>,
    /// Kafka: a consumer group whose offsets are committed only once every
    /// sink confirmed (cargo feature `kafka`).
    #[cfg_attr(
        feature = "kafka",
        schemars(with = "Option<crate::connector::kafka::KafkaSourceConfig>")
    )]
    pub kafka: Option<serde_json::Value>,
}

impl SourceSpec {
    /// The connector keys given, with their settings.
    pub(crate) fn connectors(&self) -> Vec<(&'static str, &serde_json::Value)> {
        [
            ("postgres", &self.postgres),
            ("amqp", &self.amqp),
            ("mqtt", &self.mqtt),
            ("http", &self.http),
            ("nats", &self.nats),
            ("redis", &self.redis),
            ("mysql_cdc", &self.mysql_cdc),
            ("kafka", &self.kafka),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.as_ref()?)))
        .collect()
    }
}

/// A sink: exactly one of `file`, `stdout` or `save`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Write JSON lines to this file (`${VAR}` is replaced).
    pub file: Option<String>,
    /// Append to the file instead of replacing it (default false).
    pub append: Option<bool>,
    /// Sync the file to disk at each flush, before the source's position
    /// is committed (default true).
    pub fsync: Option<bool>,
    /// Write JSON lines to standard output.
    pub stdout: Option<bool>,
    /// Append to a Save/Load channel (durable before the source's position
    /// is committed); other flows `load` it.
    pub save: Option<String>,
    /// Take only the messages the flow's last step, `route`, sends to this
    /// target (without it, a sink takes every message).
    pub route: Option<String>,
    /// Upsert into a PostgreSQL table, batched and idempotent (cargo feature
    /// `postgres`; `${VAR}` is replaced in every string).
    #[cfg_attr(
        feature = "postgres",
        schemars(with = "Option<crate::connector::postgres::PostgresSinkConfig>")
    )]
    pub postgres: Option<serde_json::Value>,
    /// Upsert into a MySQL / MariaDB table, batched and idempotent (cargo
    /// feature `mysql`; `${VAR}` is replaced in every string).
    #[cfg_attr(
        feature = "mysql",
        schemars(with = "Option<crate::connector::mysql_sink::MysqlSinkConfig>")
    )]
    pub mysql: Option<serde_json::Value>,
    /// RabbitMQ (AMQP 0-9-1): publish to a RabbitMQ exchange with publisher confirms (cargo feature `amqp`).
    #[cfg_attr(
        feature = "amqp",
        schemars(with = "Option<crate::connector::amqp::AmqpSinkConfig>")
    )]
    pub amqp: Option<serde_json::Value>,
    /// MQTT 3.1.1 at QoS 1: publish at QoS 1; a flush waits for every PUBACK (cargo feature `mqtt`).
    #[cfg_attr(
        feature = "mqtt",
        schemars(with = "Option<crate::connector::mqtt::MqttSinkConfig>")
    )]
    pub mqtt: Option<serde_json::Value>,
    /// HTTP: POST messages to a URL, retrying 5xx and connection errors with backoff (cargo feature `http`).
    #[cfg_attr(
        feature = "http",
        schemars(with = "Option<crate::connector::http::HttpSinkConfig>")
    )]
    pub http: Option<serde_json::Value>,
    /// NATS JetStream: publish to JetStream; a flush waits for every ack (cargo feature `nats`).
    #[cfg_attr(
        feature = "nats",
        schemars(with = "Option<crate::connector::nats::NatsSinkConfig>")
    )]
    pub nats: Option<serde_json::Value>,
    /// Redis Streams: XADD to a Redis Stream, one pipeline per batch (cargo feature `redis`).
    #[cfg_attr(
        feature = "redis",
        schemars(with = "Option<crate::connector::redis::RedisStreamSinkConfig>")
    )]
    pub redis_stream: Option<serde_json::Value>,
    /// Redis keys: set or delete a key (or hash) per message or change event, for cache sync (cargo feature `redis`).
    #[cfg_attr(
        feature = "redis",
        schemars(with = "Option<crate::connector::redis::RedisKeySinkConfig>")
    )]
    pub redis_keys: Option<serde_json::Value>,
    /// Kafka: an idempotent producer (`acks=all`); a flush waits for every
    /// delivery report (cargo feature `kafka`).
    #[cfg_attr(
        feature = "kafka",
        schemars(with = "Option<crate::connector::kafka::KafkaSinkConfig>")
    )]
    pub kafka: Option<serde_json::Value>,
}

impl SinkSpec {
    /// The connector keys given, with their settings.
    pub(crate) fn connectors(&self) -> Vec<(&'static str, &serde_json::Value)> {
        [
            ("postgres", &self.postgres),
            ("mysql", &self.mysql),
            ("amqp", &self.amqp),
            ("mqtt", &self.mqtt),
            ("http", &self.http),
            ("nats", &self.nats),
            ("redis_stream", &self.redis_stream),
            ("redis_keys", &self.redis_keys),
            ("kafka", &self.kafka),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value.as_ref()?)))
        .collect()
    }
}

/// The JSON Schema of flow files, pretty-printed.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(FlowFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
