//! The connectors of flow files: the source and sink keys that name a
//! connector compiled into this binary (`source: { postgres: {...} }`,
//! `sinks: [ { nats: {...} } ]`).
//!
//! A connector's settings are read as JSON first, every string in them has
//! its `${VAR}` replaced, and then they are read into the connector's own
//! settings type (whose JSON Schema is part of the flow file's). So a URL
//! with a password comes from the environment and is never in the file.
//! A key for a connector that this binary was built without is an error
//! that names the cargo feature to enable.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::env;

/// Every connector key of sources, with the cargo feature that compiles it in.
pub const SOURCE_KEYS: &[(&str, &str)] = &[
    ("postgres", "postgres"),
    ("amqp", "amqp"),
    ("mqtt", "mqtt"),
    ("http", "http"),
    ("nats", "nats"),
    ("redis", "redis"),
    ("mysql_cdc", "mysql-cdc"),
    ("kafka", "kafka"),
];

/// Every connector key of sinks, with the cargo feature that compiles it in.
pub const SINK_KEYS: &[(&str, &str)] = &[
    ("postgres", "postgres"),
    ("mysql", "mysql"),
    ("amqp", "amqp"),
    ("mqtt", "mqtt"),
    ("http", "http"),
    ("nats", "nats"),
    ("redis_stream", "redis"),
    ("redis_keys", "redis"),
    ("kafka", "kafka"),
];

/// A connector source of a checked flow file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectorSource {
    /// PostgreSQL logical replication (pgoutput).
    #[cfg(feature = "postgres")]
    Postgres(Box<crate::connector::postgres::PostgresCdcSourceConfig>),
    /// RabbitMQ (AMQP 0-9-1).
    #[cfg(feature = "amqp")]
    Amqp(Box<crate::connector::amqp::AmqpSourceConfig>),
    /// MQTT 3.1.1 at QoS 1.
    #[cfg(feature = "mqtt")]
    Mqtt(Box<crate::connector::mqtt::MqttSourceConfig>),
    /// HTTP.
    #[cfg(feature = "http")]
    Http(Box<crate::connector::http::HttpSourceConfig>),
    /// NATS JetStream.
    #[cfg(feature = "nats")]
    Nats(Box<crate::connector::nats::NatsSourceConfig>),
    /// Redis Streams.
    #[cfg(feature = "redis")]
    Redis(Box<crate::connector::redis::RedisStreamSourceConfig>),
    /// MySQL / MariaDB binlog CDC.
    #[cfg(feature = "mysql-cdc")]
    MysqlCdc(Box<crate::connector::mysql_cdc::MysqlCdcSourceConfig>),
    /// Kafka consumer group.
    #[cfg(feature = "kafka")]
    Kafka(Box<crate::connector::kafka::KafkaSourceConfig>),
}

/// A connector sink of a checked flow file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectorSink {
    /// PostgreSQL upserts.
    #[cfg(feature = "postgres")]
    Postgres(Box<crate::connector::postgres::PostgresSinkConfig>),
    /// MySQL / MariaDB upserts.
    #[cfg(feature = "mysql")]
    Mysql(Box<crate::connector::mysql_sink::MysqlSinkConfig>),
    /// RabbitMQ (AMQP 0-9-1).
    #[cfg(feature = "amqp")]
    Amqp(Box<crate::connector::amqp::AmqpSinkConfig>),
    /// MQTT 3.1.1 at QoS 1.
    #[cfg(feature = "mqtt")]
    Mqtt(Box<crate::connector::mqtt::MqttSinkConfig>),
    /// HTTP.
    #[cfg(feature = "http")]
    Http(Box<crate::connector::http::HttpSinkConfig>),
    /// NATS JetStream.
    #[cfg(feature = "nats")]
    Nats(Box<crate::connector::nats::NatsSinkConfig>),
    /// Redis Streams.
    #[cfg(feature = "redis")]
    RedisStream(Box<crate::connector::redis::RedisStreamSinkConfig>),
    /// Redis keys.
    #[cfg(feature = "redis")]
    RedisKeys(Box<crate::connector::redis::RedisKeySinkConfig>),
    /// Kafka producer.
    #[cfg(feature = "kafka")]
    Kafka(Box<crate::connector::kafka::KafkaSinkConfig>),
}

/// Replaces `${VAR}` in every string of `value`.
pub(super) fn interpolate_all(value: &mut Value) -> Result<(), String> {
    match value {
        Value::String(s) => *s = env::interpolate(s)?,
        Value::Array(items) => {
            for item in items {
                interpolate_all(item)?;
            }
        }
        Value::Object(map) => {
            for item in map.values_mut() {
                interpolate_all(item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads a connector's settings.
#[allow(dead_code)] // unused when no connector is compiled in
fn settings<T: DeserializeOwned>(key: &str, mut value: Value) -> Result<Box<T>, String> {
    interpolate_all(&mut value).map_err(|m| format!("{key}: {m}"))?;
    serde_json::from_value(value).map_err(|e| format!("{key}: {e}"))
}

fn not_compiled(kind: &str, key: &str, feature: &str) -> String {
    format!(
        "this syncflow binary was built without the `{key}` {kind} connector: build it with the cargo feature `{feature}` (`syncflow connectors` lists what is compiled in)"
    )
}

/// The source of connector `key`, from its settings.
#[allow(unused_variables)]
pub(crate) fn source(key: &str, value: Value) -> Result<ConnectorSource, String> {
    match key {
        #[cfg(feature = "postgres")]
        "postgres" => Ok(ConnectorSource::Postgres(settings(key, value)?)),
        #[cfg(feature = "amqp")]
        "amqp" => Ok(ConnectorSource::Amqp(settings(key, value)?)),
        #[cfg(feature = "mqtt")]
        "mqtt" => Ok(ConnectorSource::Mqtt(settings(key, value)?)),
        #[cfg(feature = "http")]
        "http" => Ok(ConnectorSource::Http(settings(key, value)?)),
        #[cfg(feature = "nats")]
        "nats" => Ok(ConnectorSource::Nats(settings(key, value)?)),
        #[cfg(feature = "redis")]
        "redis" => Ok(ConnectorSource::Redis(settings(key, value)?)),
        #[cfg(feature = "mysql-cdc")]
        "mysql_cdc" => Ok(ConnectorSource::MysqlCdc(settings(key, value)?)),
        #[cfg(feature = "kafka")]
        "kafka" => Ok(ConnectorSource::Kafka(settings(key, value)?)),
        _ => {
            let feature = SOURCE_KEYS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(key, |(_, f)| f);
            Err(not_compiled("source", key, feature))
        }
    }
}

/// The sink of connector `key`, from its settings.
#[allow(unused_variables)]
pub(crate) fn sink(key: &str, value: Value) -> Result<ConnectorSink, String> {
    match key {
        #[cfg(feature = "postgres")]
        "postgres" => Ok(ConnectorSink::Postgres(settings(key, value)?)),
        #[cfg(feature = "mysql")]
        "mysql" => Ok(ConnectorSink::Mysql(settings(key, value)?)),
        #[cfg(feature = "amqp")]
        "amqp" => Ok(ConnectorSink::Amqp(settings(key, value)?)),
        #[cfg(feature = "mqtt")]
        "mqtt" => Ok(ConnectorSink::Mqtt(settings(key, value)?)),
        #[cfg(feature = "http")]
        "http" => Ok(ConnectorSink::Http(settings(key, value)?)),
        #[cfg(feature = "nats")]
        "nats" => Ok(ConnectorSink::Nats(settings(key, value)?)),
        #[cfg(feature = "redis")]
        "redis_stream" => Ok(ConnectorSink::RedisStream(settings(key, value)?)),
        #[cfg(feature = "redis")]
        "redis_keys" => Ok(ConnectorSink::RedisKeys(settings(key, value)?)),
        #[cfg(feature = "kafka")]
        "kafka" => Ok(ConnectorSink::Kafka(settings(key, value)?)),
        _ => {
            let feature = SINK_KEYS
                .iter()
                .find(|(k, _)| *k == key)
                .map_or(key, |(_, f)| f);
            Err(not_compiled("sink", key, feature))
        }
    }
}

impl ConnectorSource {
    /// The connector's key in flow files.
    pub fn key(&self) -> &'static str {
        match *self {
            #[cfg(feature = "postgres")]
            ConnectorSource::Postgres(_) => "postgres",
            #[cfg(feature = "amqp")]
            ConnectorSource::Amqp(_) => "amqp",
            #[cfg(feature = "mqtt")]
            ConnectorSource::Mqtt(_) => "mqtt",
            #[cfg(feature = "http")]
            ConnectorSource::Http(_) => "http",
            #[cfg(feature = "nats")]
            ConnectorSource::Nats(_) => "nats",
            #[cfg(feature = "redis")]
            ConnectorSource::Redis(_) => "redis",
            #[cfg(feature = "mysql-cdc")]
            ConnectorSource::MysqlCdc(_) => "mysql_cdc",
            #[cfg(feature = "kafka")]
            ConnectorSource::Kafka(_) => "kafka",
        }
    }
}

impl ConnectorSink {
    /// The connector's key in flow files.
    pub fn key(&self) -> &'static str {
        match *self {
            #[cfg(feature = "postgres")]
            ConnectorSink::Postgres(_) => "postgres",
            #[cfg(feature = "mysql")]
            ConnectorSink::Mysql(_) => "mysql",
            #[cfg(feature = "amqp")]
            ConnectorSink::Amqp(_) => "amqp",
            #[cfg(feature = "mqtt")]
            ConnectorSink::Mqtt(_) => "mqtt",
            #[cfg(feature = "http")]
            ConnectorSink::Http(_) => "http",
            #[cfg(feature = "nats")]
            ConnectorSink::Nats(_) => "nats",
            #[cfg(feature = "redis")]
            ConnectorSink::RedisStream(_) => "redis_stream",
            #[cfg(feature = "redis")]
            ConnectorSink::RedisKeys(_) => "redis_keys",
            #[cfg(feature = "kafka")]
            ConnectorSink::Kafka(_) => "kafka",
        }
    }
}

/// What `syncflow connectors` shows: every connector, whether this binary
/// has it, and its cargo feature.
pub fn compiled_in() -> Vec<ConnectorInfo> {
    let mut list = vec![
        ConnectorInfo::builtin("file", "source, sink", "JSON-lines files, with checkpoints"),
        ConnectorInfo::builtin("stdin / stdout", "source, sink", "JSON lines"),
        ConnectorInfo::builtin(
            "load / save",
            "source, sink",
            "Save/Load channels (embedded store; on NATS or Redis with those features)",
        ),
    ];
    let described: &[(&str, &str, &str, bool)] = &[
        (
            "postgres",
            "source, sink",
            "PostgreSQL: pgoutput CDC source, batched idempotent upsert sink",
            cfg!(feature = "postgres"),
        ),
        (
            "mysql",
            "sink",
            "MySQL / MariaDB: batched idempotent upsert sink",
            cfg!(feature = "mysql"),
        ),
        (
            "amqp",
            "source, sink",
            "RabbitMQ (AMQP 0-9-1): queue consumer with manual acks, publisher with confirms",
            cfg!(feature = "amqp"),
        ),
        (
            "mqtt",
            "source, sink",
            "MQTT 3.1.1 at QoS 1: subscriber with a persistent session, publisher",
            cfg!(feature = "mqtt"),
        ),
        (
            "http",
            "source, sink",
            "HTTP: webhook source answering after the sinks confirmed, POST sink with retries",
            cfg!(feature = "http"),
        ),
        (
            "nats",
            "source, sink",
            "NATS JetStream: durable pull consumer, publisher with acks",
            cfg!(feature = "nats"),
        ),
        (
            "redis",
            "source",
            "Redis Streams: consumer group with XACK and XAUTOCLAIM",
            cfg!(feature = "redis"),
        ),
        (
            "redis_stream",
            "sink",
            "Redis Streams: XADD",
            cfg!(feature = "redis"),
        ),
        (
            "redis_keys",
            "sink",
            "Redis keys and hashes: set / delete per message, for cache sync",
            cfg!(feature = "redis"),
        ),
        (
            "mysql_cdc",
            "source",
            "MySQL / MariaDB: binlog CDC (snapshot, then row changes)",
            cfg!(feature = "mysql-cdc"),
        ),
        (
            "kafka",
            "source, sink",
            "Kafka: consumer group with committed offsets, idempotent producer (acks=all)",
            cfg!(feature = "kafka"),
        ),
    ];
    for &(key, kinds, what, on) in described {
        let feature = SOURCE_KEYS
            .iter()
            .chain(SINK_KEYS)
            .find(|(k, _)| *k == key)
            .map_or(key, |(_, f)| f);
        list.push(ConnectorInfo {
            key,
            kinds,
            what,
            feature: Some(feature),
            compiled_in: on,
        });
    }
    list
}

/// One connector, as listed by `syncflow connectors`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectorInfo {
    /// Its key in flow files.
    pub key: &'static str,
    /// `source`, `sink`, or both.
    pub kinds: &'static str,
    /// What it connects to.
    pub what: &'static str,
    /// The cargo feature that compiles it in (`None`: always there).
    pub feature: Option<&'static str>,
    /// Whether this binary has it.
    pub compiled_in: bool,
}

impl ConnectorInfo {
    fn builtin(key: &'static str, kinds: &'static str, what: &'static str) -> Self {
        ConnectorInfo {
            key,
            kinds,
            what,
            feature: None,
            compiled_in: true,
        }
    }
}

type DynRuntime<S> = crate::runtime::Runtime<crate::dynamic::DynFlow, crate::monitor::Metrics, S>;

impl ConnectorSource {
    /// Connects and runs `flow` from this source.
    // Without connectors compiled in, there is nothing to match.
    #[allow(unused_variables)]
    pub(crate) async fn run(
        self,
        flow: crate::flow::Flow<crate::dynamic::DynFlow>,
        decode: crate::registry::DecodeFn,
        options: super::run::Options,
    ) -> Result<crate::runtime::RunSummary, crate::runtime::RunError> {
        let source_error = |key: &str, error| crate::runtime::RunError::Source {
            name: key.to_string(),
            error,
        };
        match self {
            #[cfg(feature = "postgres")]
            ConnectorSource::Postgres(config) => {
                let source =
                    crate::connector::postgres::PostgresCdcSource::connect_with(&config, decode)
                        .await
                        .map_err(|e| source_error("postgres", e))?;
                super::run::finish(crate::runtime::Runtime::new(flow).source(source), options).await
            }
            #[cfg(feature = "amqp")]
            ConnectorSource::Amqp(config) => {
                let source = crate::connector::amqp::AmqpSource::connect(&config, decode)
                    .await
                    .map_err(|e| source_error("amqp", e))?;
                super::run::finish(crate::runtime::Runtime::new(flow).source(source), options).await
            }
            #[cfg(feature = "mqtt")]
            ConnectorSource::Mqtt(config) => {
                let source = crate::connector::mqtt::MqttSource::connect(&config, decode)
                    .await
                    .map_err(|e| source_error("mqtt", e))?;
                super::run::finish(crate::runtime::Runtime::new(flow).source(source), options).await
            }
            #[cfg(feature = "http")]
            ConnectorSource::Http(config) => {
                let source = crate::connector::http::HttpSource::connect(&config, decode)
                    .await
                    .map_err(|e| source_error("http", e))?;
                super::run::finish(crate::runtime::Runtime::new(flow).source(source), options).await
            }
            #[cfg(feature = "nats")]
            ConnectorSource::Nats(config) => {
                let source = crate::connector::nats::NatsSource::connect(&config, decode)
                    .await
                    .map_err(|e| source_error("nats", e))?;
                super::run::finish(crate::runtime::Runtime::new(flow).source(source), options).await
            }
            #[cfg(feature = "redis")]
            ConnectorSource::Redis(config) => {
                let source = crate::connector::redis::RedisStreamSource::connect(&config, decode)
                    .await
                    .map_err(|e| source_error("redis", e))?;
                super::run::finish(crate::runtime::Runtime::new(flow).source(source), options).await
            }
            #[cfg(feature = "mysql-cdc")]
            ConnectorSource::MysqlCdc(config) => {
                let source = crate::connector::mysql_cdc::MysqlCdcSource::connect(&config, decode)
                    .await
                    .map_err(|e| source_error("mysql_cdc", e))?;
                super::run::finish(crate::runtime::Runtime::new(flow).source(source), options).await
            }
            #[cfg(feature = "kafka")]
            ConnectorSource::Kafka(config) => {
                let source = crate::connector::kafka::KafkaSource::connect_with(&config, decode)
                    .await
                    .map_err(|e| source_error("kafka", e))?;
                super::run::finish(crate::runtime::Runtime::new(flow).source(source), options).await
            }
        }
    }
}

impl ConnectorSink {
    /// Connects and adds this sink to `rt`, taking only `route`'s messages
    /// when given.
    #[allow(unused_variables)]
    pub(crate) async fn add_to<S: crate::connector::Source<Item = crate::registry::BoxedSlot>>(
        self,
        rt: DynRuntime<S>,
        route: Option<u16>,
    ) -> Result<DynRuntime<S>, crate::runtime::RunError> {
        let sink_error = |key: &str, error| crate::runtime::RunError::Sink {
            name: key.to_string(),
            error,
        };
        match self {
            #[cfg(feature = "postgres")]
            ConnectorSink::Postgres(config) => {
                let sink = crate::connector::postgres::PostgresSink::connect(&config)
                    .await
                    .map_err(|e| sink_error("postgres", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
            #[cfg(feature = "mysql")]
            ConnectorSink::Mysql(config) => {
                let sink = crate::connector::mysql_sink::MysqlSink::connect(&config)
                    .await
                    .map_err(|e| sink_error("mysql", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
            #[cfg(feature = "amqp")]
            ConnectorSink::Amqp(config) => {
                let sink = crate::connector::amqp::AmqpSink::connect(&config)
                    .await
                    .map_err(|e| sink_error("amqp", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
            #[cfg(feature = "mqtt")]
            ConnectorSink::Mqtt(config) => {
                let sink = crate::connector::mqtt::MqttSink::connect(&config)
                    .await
                    .map_err(|e| sink_error("mqtt", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
            #[cfg(feature = "http")]
            ConnectorSink::Http(config) => {
                let sink = crate::connector::http::HttpSink::connect(&config)
                    .await
                    .map_err(|e| sink_error("http", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
            #[cfg(feature = "nats")]
            ConnectorSink::Nats(config) => {
                let sink = crate::connector::nats::NatsSink::connect(&config)
                    .await
                    .map_err(|e| sink_error("nats", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
            #[cfg(feature = "redis")]
            ConnectorSink::RedisStream(config) => {
                let sink = crate::connector::redis::RedisStreamSink::connect(&config)
                    .await
                    .map_err(|e| sink_error("redis_stream", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
            #[cfg(feature = "redis")]
            ConnectorSink::RedisKeys(config) => {
                let sink = crate::connector::redis::RedisKeySink::connect(&config)
                    .await
                    .map_err(|e| sink_error("redis_keys", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
            #[cfg(feature = "kafka")]
            ConnectorSink::Kafka(config) => {
                let sink = crate::connector::kafka::KafkaSink::connect(&config)
                    .await
                    .map_err(|e| sink_error("kafka", e))?;
                Ok(super::run::add_sink(rt, sink, route))
            }
        }
    }
}
