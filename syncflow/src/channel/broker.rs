//! Save/Load channels kept by a broker instead of the embedded store, so
//! the flows that save and the flows that load can run on different
//! machines.
//!
//! A broker channel has the same meaning as an embedded one: `save:`
//! appends durably (the source's position is committed only once the
//! broker confirmed), every reader name gets every record, a reader's
//! position survives restarts and is advanced only over acknowledged
//! batches. What the broker adds is that several **processes** reading
//! with one reader name share the records (the broker's own consumer
//! groups), so a branch scales past one machine.
//!
//! | | NATS JetStream | Redis Streams |
//! |---|---|---|
//! | the channel | a stream, `syncflow_<channel>`, capturing the subject `syncflow.channel.<channel>` | the stream key `syncflow:channel:<channel>` |
//! | a reader | a durable pull consumer named after the reader | a consumer group named after the reader |
//! | `save:` | publish, confirmed by the stream's acks | `XADD`, confirmed by the reply |
//! | retention | the stream's `max_msgs` / `max_age` | `XADD MAXLEN ~` / `XTRIM MINID ~` |
//!
//! The channel (stream) is created, or its limits updated, when a flow
//! file that uses it starts ([`BrokerChannel::prepare`]).
//!
//! Dots in channel and reader names become `_` in NATS stream and consumer
//! names (NATS does not allow dots there).

// Without a broker compiled in, `BrokerChannel` has no variant and most of
// this module has nothing to do.
#![cfg_attr(
    not(any(feature = "nats", feature = "redis")),
    allow(
        unused_imports,
        unused_variables,
        unused_mut,
        unreachable_code,
        dead_code
    )
)]

use std::time::Duration;

use serde::Deserialize;

use serde::Serialize;

use super::{ChannelStats, ChannelStore, Retention, SaveSink};
use crate::connector::{Batch, ConnectorError, Read, Sink, Source};
use crate::runtime::Shutdown;

/// A channel kept by a broker (`channels.brokers.<channel>` in a flow file).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BrokerChannel {
    /// A NATS JetStream stream.
    #[cfg(feature = "nats")]
    Nats(NatsChannel),
    /// A Redis stream.
    #[cfg(feature = "redis")]
    Redis(RedisChannel),
}

/// Every broker key of `channels.brokers`, with the cargo feature that compiles it in.
pub const BROKER_KEYS: &[(&str, &str)] = &[("nats", "nats"), ("redis", "redis")];

impl BrokerChannel {
    /// The channel's name.
    pub fn channel(&self) -> &str {
        match *self {
            #[cfg(feature = "nats")]
            BrokerChannel::Nats(ref c) => &c.channel,
            #[cfg(feature = "redis")]
            BrokerChannel::Redis(ref c) => &c.channel,
        }
    }

    /// The broker's key in flow files (`nats`, `redis`).
    pub fn key(&self) -> &'static str {
        match *self {
            #[cfg(feature = "nats")]
            BrokerChannel::Nats(_) => "nats",
            #[cfg(feature = "redis")]
            BrokerChannel::Redis(_) => "redis",
        }
    }

    /// Where the records are, for messages (`nats://host:4222 stream
    /// syncflow_orders`); credentials are never shown.
    pub fn location(&self) -> String {
        match *self {
            #[cfg(feature = "nats")]
            BrokerChannel::Nats(ref c) => format!(
                "{} stream {}",
                crate::connector::netutil::redact_urls(&c.url),
                c.stream
            ),
            #[cfg(feature = "redis")]
            BrokerChannel::Redis(ref c) => format!(
                "{} stream {}",
                crate::connector::netutil::redact_urls(&c.url),
                c.stream
            ),
        }
    }

    /// Applies a retention (a flow file's `channels.retention.<channel>`).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        match self {
            #[cfg(feature = "nats")]
            BrokerChannel::Nats(ref mut c) => c.retention = retention,
            #[cfg(feature = "redis")]
            BrokerChannel::Redis(ref mut c) => c.retention = retention,
        }
        self
    }

    /// Creates the channel on the broker if it does not exist, and brings
    /// its retention limits up to date. Idempotent; run before the flows
    /// that use the channel start.
    pub async fn prepare(&self) -> Result<(), ConnectorError> {
        match *self {
            #[cfg(feature = "nats")]
            BrokerChannel::Nats(ref c) => c.prepare().await,
            #[cfg(feature = "redis")]
            BrokerChannel::Redis(_) => Ok(()), // XADD and XGROUP CREATE MKSTREAM create it
        }
    }

    /// The channel's records and readers, as the broker reports them.
    pub async fn stats(&self) -> Result<ChannelStats, ConnectorError> {
        match *self {
            #[cfg(feature = "nats")]
            BrokerChannel::Nats(ref c) => c.stats().await,
            #[cfg(feature = "redis")]
            BrokerChannel::Redis(ref c) => c.stats().await,
        }
    }
}

/// The sink of `save: <channel>` (and of dead letters sent to a channel):
/// the embedded store's, or the broker's.
pub(crate) enum ChannelSink {
    Embedded(SaveSink),
    #[cfg(feature = "nats")]
    Nats(crate::connector::nats::NatsSink),
    #[cfg(feature = "redis")]
    Redis(crate::connector::redis::RedisStreamSink),
}

impl ChannelSink {
    /// Opens the sink of `channel`: on its broker when it has one, else in `store`.
    pub(crate) async fn open(
        channel: &str,
        broker: Option<&BrokerChannel>,
        store: Option<&ChannelStore>,
    ) -> Result<Self, ConnectorError> {
        match broker {
            None => match store {
                Some(store) => Ok(ChannelSink::Embedded(SaveSink::open(store, channel)?)),
                None => Err(ConnectorError::Other(
                    "channels are opened by `Plan::run`: run the whole plan".into(),
                )),
            },
            Some(broker) => match *broker {
                #[cfg(feature = "nats")]
                BrokerChannel::Nats(ref c) => Ok(ChannelSink::Nats(
                    crate::connector::nats::NatsSink::connect(&c.sink_config()).await?,
                )),
                #[cfg(feature = "redis")]
                BrokerChannel::Redis(ref c) => Ok(ChannelSink::Redis(
                    crate::connector::redis::RedisStreamSink::connect(&c.sink_config()).await?,
                )),
            },
        }
    }
}

impl<T: Serialize + Sync> Sink<T> for ChannelSink {
    fn name(&self) -> String {
        match self {
            ChannelSink::Embedded(s) => format!("save:{}", s.channel()),
            #[cfg(feature = "nats")]
            ChannelSink::Nats(s) => Sink::<T>::name(s),
            #[cfg(feature = "redis")]
            ChannelSink::Redis(s) => Sink::<T>::name(s),
        }
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        match self {
            ChannelSink::Embedded(s) => s.write(items).await,
            #[cfg(feature = "nats")]
            ChannelSink::Nats(s) => s.write(items).await,
            #[cfg(feature = "redis")]
            ChannelSink::Redis(s) => s.write(items).await,
        }
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        match self {
            ChannelSink::Embedded(s) => Sink::<T>::flush(s).await,
            #[cfg(feature = "nats")]
            ChannelSink::Nats(s) => Sink::<T>::flush(s).await,
            #[cfg(feature = "redis")]
            ChannelSink::Redis(s) => Sink::<T>::flush(s).await,
        }
    }
}

/// A broker channel's reader within a flow file run: it follows the
/// channel until `writers_done` is triggered (the flows of the same file
/// that save into it ended), then reads until the broker has nothing more
/// for it, and ends. Without `writers_done` it follows until shutdown.
pub(crate) struct DrainAfter<S> {
    inner: S,
    writers_done: Option<Shutdown>,
}

impl<S> DrainAfter<S> {
    pub(crate) fn new(inner: S, writers_done: Option<Shutdown>) -> Self {
        DrainAfter {
            inner,
            writers_done,
        }
    }
}

impl<S: Source> Source for DrainAfter<S> {
    type Item = S::Item;
    type Ack = S::Ack;
    type Acker = S::Acker;

    fn name(&self) -> std::sync::Arc<str> {
        self.inner.name()
    }

    fn acker(&mut self) -> Self::Acker {
        self.inner.acker()
    }

    fn progress(&self) -> Option<crate::connector::SourceProgress> {
        self.inner.progress()
    }

    async fn read(
        &mut self,
        batch: &mut Batch<Self::Item>,
        max: usize,
    ) -> Result<Read<Self::Ack>, ConnectorError> {
        // Checked before the read: when the writers had ended before it
        // started and it finds nothing, everything they saved was read.
        let done = self
            .writers_done
            .as_ref()
            .is_some_and(Shutdown::is_shutdown);
        match self.inner.read(batch, max).await? {
            Read::Idle if done => Ok(Read::End),
            other => Ok(other),
        }
    }
}

/// Reads `channels.brokers.<channel>`: exactly one broker key, with its
/// settings (already `${VAR}`-interpolated).
#[allow(unused_variables)]
pub(crate) fn from_settings(
    channel: &str,
    key: &str,
    settings: serde_json::Value,
) -> Result<BrokerChannel, String> {
    match key {
        #[cfg(feature = "nats")]
        "nats" => {
            let config: NatsChannelConfig =
                serde_json::from_value(settings).map_err(|e| format!("nats: {e}"))?;
            Ok(BrokerChannel::Nats(NatsChannel::new(channel, config)))
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let config: RedisChannelConfig =
                serde_json::from_value(settings).map_err(|e| format!("redis: {e}"))?;
            Ok(BrokerChannel::Redis(RedisChannel::new(channel, config)))
        }
        _ => match BROKER_KEYS.iter().find(|(k, _)| *k == key) {
            Some((_, feature)) => Err(format!(
                "this syncflow binary was built without `{key}` channels: build it with the cargo feature `{feature}` (`syncflow connectors` lists what is compiled in)"
            )),
            None => Err(format!(
                "unknown broker `{key}`: a channel is kept by `nats` or `redis` (or, without an entry here, by the embedded store)"
            )),
        },
    }
}

/// `a.b` → `a_b`: NATS stream and consumer names may not hold dots.
#[cfg(feature = "nats")]
fn nats_name(name: &str) -> String {
    name.replace('.', "_")
}

/// Settings of a channel kept by NATS JetStream (`channels.brokers.<channel>.nats`).
///
/// ```yaml
/// channels:
///   brokers:
///     orders:
///       nats: { url: "nats://127.0.0.1:4222" }
/// ```
#[cfg(feature = "nats")]
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsChannelConfig {
    /// Server URL(s) (default `nats://127.0.0.1:4222`); credentials in it are never shown.
    pub url: Option<String>,
    /// The stream (default `syncflow_<channel>`, dots as `_`).
    pub stream: Option<String>,
    /// The subject the stream captures (default `syncflow.channel.<channel>`).
    pub subject: Option<String>,
    /// Replicas of the stream on a clustered server (default 1).
    #[schemars(range(min = 1, max = 5))]
    pub replicas: Option<usize>,
    /// How long the server waits for a reader's acknowledgement before it
    /// delivers a record again, to this or another process (default `30s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub ack_wait: Option<Duration>,
}

/// A channel kept by a NATS JetStream stream.
#[cfg(feature = "nats")]
#[derive(Debug, Clone, PartialEq)]
pub struct NatsChannel {
    /// The channel's name.
    pub channel: String,
    /// Server URL(s).
    pub url: String,
    /// The stream.
    pub stream: String,
    /// The subject the stream captures, and `save:` publishes to.
    pub subject: String,
    /// Stream replicas.
    pub replicas: usize,
    /// What the stream keeps.
    pub retention: Retention,
    /// The readers' acknowledgement wait.
    pub ack_wait: Option<Duration>,
}

#[cfg(feature = "nats")]
impl NatsChannel {
    /// The channel `channel` with these settings (defaults filled in).
    pub fn new(channel: &str, config: NatsChannelConfig) -> Self {
        NatsChannel {
            channel: channel.to_string(),
            url: config
                .url
                .unwrap_or_else(|| crate::connector::nats::DEFAULT_URL.to_string()),
            stream: config
                .stream
                .unwrap_or_else(|| format!("syncflow_{}", nats_name(channel))),
            subject: config
                .subject
                .unwrap_or_else(|| format!("syncflow.channel.{channel}")),
            replicas: config.replicas.unwrap_or(1).max(1),
            retention: Retention::UNLIMITED,
            ack_wait: config.ack_wait,
        }
    }

    fn target(&self) -> String {
        format!(
            "channel `{}` ({} stream {})",
            self.channel,
            crate::connector::netutil::redact_urls(&self.url),
            self.stream
        )
    }

    fn stream_config(&self) -> async_nats::jetstream::stream::Config {
        use async_nats::jetstream::stream;
        stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            max_messages: self
                .retention
                .records_limit()
                .and_then(|n| i64::try_from(n).ok())
                .unwrap_or(-1),
            max_age: self.retention.age_limit().unwrap_or(Duration::ZERO),
            ..Default::default()
        }
    }

    /// Creates the stream, or updates its limits to the retention.
    pub async fn prepare(&self) -> Result<(), ConnectorError> {
        use async_nats::jetstream;
        let target = self.target();
        let fail = |action: &'static str, e: String, hint: &'static str| {
            ConnectorError::server("nats", target.clone(), action, e, hint)
        };
        let client = crate::connector::nats::connect_client(&self.url, None, "channel").await?;
        let js = jetstream::new(client);
        let wanted = self.stream_config();
        match js.get_stream(&self.stream).await {
            Ok(mut stream) => {
                let info = stream.info().await.map_err(|e| {
                    fail(
                        "read the stream's settings",
                        e.to_string(),
                        "check that JetStream is enabled (nats-server -js)",
                    )
                })?;
                let config = &info.config;
                if !config.subjects.contains(&self.subject) {
                    return Err(fail(
                        "use the stream",
                        format!(
                            "the stream exists but captures {:?}, not `{}`",
                            config.subjects, self.subject
                        ),
                        "give the channel its own `stream` name, or the stream's subject as `subject`",
                    ));
                }
                if config.max_messages != wanted.max_messages || config.max_age != wanted.max_age {
                    let mut updated = config.clone();
                    updated.max_messages = wanted.max_messages;
                    updated.max_age = wanted.max_age;
                    js.update_stream(updated).await.map_err(|e| {
                        fail(
                            "update the stream's retention",
                            e.to_string(),
                            "check the account's JetStream limits",
                        )
                    })?;
                }
                Ok(())
            }
            Err(e) if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref err) if err.code() == 404) =>
            {
                js.create_stream(wanted).await.map_err(|e| {
                    fail(
                        "create the stream",
                        e.to_string(),
                        "check that JetStream is enabled and that no other stream captures the channel's subject",
                    )
                })?;
                Ok(())
            }
            Err(e) => Err(fail(
                "look up the stream",
                e.to_string(),
                "check that the server runs with JetStream enabled (nats-server -js)",
            )),
        }
    }

    /// The source reading the channel as `reader` (a durable consumer of
    /// that name, dots as `_`).
    pub fn source_config(&self, reader: &str) -> crate::connector::nats::NatsSourceConfig {
        let mut config =
            crate::connector::nats::NatsSourceConfig::new(&self.stream, nats_name(reader));
        config.url = self.url.clone();
        config.ack_wait = self.ack_wait;
        config
    }

    /// The sink appending to the channel.
    pub fn sink_config(&self) -> crate::connector::nats::NatsSinkConfig {
        let mut config = crate::connector::nats::NatsSinkConfig::new(&self.subject);
        config.url = self.url.clone();
        config
    }

    /// The stream's records and its durable consumers as readers.
    pub async fn stats(&self) -> Result<ChannelStats, ConnectorError> {
        use async_nats::jetstream;
        use futures_util::StreamExt;
        let target = self.target();
        let fail = |action: &'static str, e: String| {
            ConnectorError::server(
                "nats",
                target.clone(),
                action,
                e,
                "check that the server runs with JetStream and that a flow created the channel",
            )
        };
        let client = crate::connector::nats::connect_client(&self.url, None, "channel").await?;
        let js = jetstream::new(client);
        let mut stream = js
            .get_stream(&self.stream)
            .await
            .map_err(|e| fail("find the stream", e.to_string()))?;
        let info = stream
            .info()
            .await
            .map_err(|e| fail("read the stream", e.to_string()))?
            .clone();
        let state = &info.state;
        let next = state.last_sequence + 1;
        let first = if state.messages == 0 {
            next
        } else {
            state.first_sequence
        };
        let mut readers = Vec::new();
        let mut consumers = stream.consumers();
        while let Some(consumer) = consumers.next().await {
            let c = consumer.map_err(|e| fail("list the readers", e.to_string()))?;
            let position = c.ack_floor.stream_sequence + 1;
            readers.push(super::ReaderStats {
                name: c.name,
                position,
                lag: c.num_pending + c.num_ack_pending as u64,
                skipped: first.saturating_sub(position),
            });
        }
        readers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ChannelStats {
            name: self.channel.clone(),
            length: state.messages,
            first,
            next,
            bytes: state.bytes,
            retention: self.retention,
            readers,
        })
    }
}

/// Settings of a channel kept by a Redis stream (`channels.brokers.<channel>.redis`).
///
/// ```yaml
/// channels:
///   brokers:
///     audit:
///       redis: { url: "redis://127.0.0.1:6379" }
/// ```
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisChannelConfig {
    /// Server URL (default `redis://127.0.0.1:6379`); a password in it is never shown.
    pub url: Option<String>,
    /// The stream key (default `syncflow:channel:<channel>`).
    pub stream: Option<String>,
    /// This process's consumer name in every reader's group (default: the
    /// host name). Keep it stable across restarts, and give each process
    /// on one host its own (`consumer: "${HOSTNAME}-2"`).
    pub consumer: Option<String>,
    /// How long a record must have been pending before another process of
    /// the same reader takes it over (default `60s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub claim_min_idle: Option<Duration>,
}

/// A channel kept by a Redis stream.
#[cfg(feature = "redis")]
#[derive(Debug, Clone, PartialEq)]
pub struct RedisChannel {
    /// The channel's name.
    pub channel: String,
    /// Server URL.
    pub url: String,
    /// The stream key.
    pub stream: String,
    /// This process's consumer name in the readers' groups.
    pub consumer: String,
    /// What the stream keeps.
    pub retention: Retention,
    /// When a pending record is taken over by another process.
    pub claim_min_idle: Option<Duration>,
}

/// The host's name, for consumer names that stay the same across restarts.
#[cfg(feature = "redis")]
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "syncflow".to_string())
}

#[cfg(feature = "redis")]
impl RedisChannel {
    /// The channel `channel` with these settings (defaults filled in).
    pub fn new(channel: &str, config: RedisChannelConfig) -> Self {
        RedisChannel {
            channel: channel.to_string(),
            url: config
                .url
                .unwrap_or_else(|| crate::connector::redis::DEFAULT_URL.to_string()),
            stream: config
                .stream
                .unwrap_or_else(|| format!("syncflow:channel:{channel}")),
            consumer: config.consumer.unwrap_or_else(host_name),
            retention: Retention::UNLIMITED,
            claim_min_idle: config.claim_min_idle,
        }
    }

    /// The source reading the channel as `reader` (a consumer group of that name).
    pub fn source_config(&self, reader: &str) -> crate::connector::redis::RedisStreamSourceConfig {
        let mut config = crate::connector::redis::RedisStreamSourceConfig::new(
            &self.stream,
            reader,
            &self.consumer,
        );
        config.url = self.url.clone();
        config.claim_min_idle = self.claim_min_idle;
        config
    }

    /// The sink appending to the channel, trimming it to the retention.
    pub fn sink_config(&self) -> crate::connector::redis::RedisStreamSinkConfig {
        let mut config = crate::connector::redis::RedisStreamSinkConfig::new(&self.stream);
        config.url = self.url.clone();
        config.maxlen = self.retention.records_limit();
        config.max_age = self.retention.age_limit();
        config
    }

    /// The stream's entries and its consumer groups as readers.
    pub async fn stats(&self) -> Result<ChannelStats, ConnectorError> {
        crate::connector::redis::stream_stats(&self.url, &self.stream)
            .await
            .map(|s| ChannelStats {
                name: self.channel.clone(),
                length: s.length,
                first: s.added + 1 - s.length,
                next: s.added + 1,
                bytes: s.bytes,
                retention: self.retention,
                readers: s
                    .groups
                    .into_iter()
                    .map(|g| super::ReaderStats {
                        name: g.name,
                        position: g.read + 1 - g.pending.min(g.read),
                        lag: g.lag + g.pending,
                        skipped: 0,
                    })
                    .collect(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_brokers_are_named() {
        let err = from_settings("c", "kafka", serde_json::json!({})).unwrap_err();
        assert!(err.contains("unknown broker `kafka`"), "{err}");
        #[cfg(not(feature = "nats"))]
        {
            let err = from_settings("c", "nats", serde_json::json!({})).unwrap_err();
            assert!(err.contains("cargo feature `nats`"), "{err}");
        }
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_defaults_turn_dots_into_underscores() {
        let c = match from_settings("orders.eu", "nats", serde_json::json!({})).unwrap() {
            BrokerChannel::Nats(c) => c,
            #[allow(unreachable_patterns)]
            _ => unreachable!(),
        };
        assert_eq!(c.stream, "syncflow_orders_eu");
        assert_eq!(c.subject, "syncflow.channel.orders.eu");
        assert_eq!(c.source_config("billing.v2").durable, "billing_v2");
        let c = c.clone();
        let limited = BrokerChannel::Nats(c).with_retention(
            Retention::default()
                .max_records(10)
                .max_age(Duration::from_secs(60)),
        );
        let BrokerChannel::Nats(c) = limited else {
            unreachable!()
        };
        let config = c.stream_config();
        assert_eq!(config.max_messages, 10);
        assert_eq!(config.max_age, Duration::from_secs(60));
        let err = from_settings("c", "nats", serde_json::json!({"urll": "x"})).unwrap_err();
        assert!(err.contains("unknown field `urll`"), "{err}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_defaults_and_retention_reach_the_sink() {
        let c = RedisChannel::new(
            "audit",
            RedisChannelConfig {
                consumer: Some("p1".into()),
                ..Default::default()
            },
        );
        assert_eq!(c.stream, "syncflow:channel:audit");
        let BrokerChannel::Redis(c) = BrokerChannel::Redis(c).with_retention(
            Retention::default()
                .max_records(5)
                .max_age(Duration::from_secs(9)),
        ) else {
            unreachable!()
        };
        let sink = c.sink_config();
        assert_eq!(
            (sink.maxlen, sink.max_age),
            (Some(5), Some(Duration::from_secs(9)))
        );
        let source = c.source_config("billing");
        assert_eq!(
            (source.group.as_str(), source.consumer.as_str()),
            ("billing", "p1")
        );
    }
}
