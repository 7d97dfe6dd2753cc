//! Sources and sinks: where a flow's messages come from and where they go.
//!
//! Connectors move **batches**, never single messages, and the runtime
//! acknowledges a source's batch only after every sink has confirmed the
//! outputs made from it (end-to-end acknowledgement, as in Vector, or the
//! transaction model of Redpanda Connect):
//!
//! 1. [`Source::read`] fills a reusable [`Batch`] and returns an
//!    acknowledgement token ([`Source::Ack`]): a line number, a set of
//!    Kafka offsets, a list of JetStream message handles, an LSN...
//! 2. The runtime runs the batch through the flow and hands the outputs to
//!    every [`Sink`]; a sink confirms a batch once [`Sink::flush`] has made
//!    it durable.
//! 3. When every sink has confirmed a batch *and every batch read before it*,
//!    the runtime passes its token to the source's [`Acker`], in read order,
//!    and calls [`Acker::commit`] (for files: write the checkpoint file).
//!
//! So a source's committed position only ever advances over contiguous,
//! fully delivered batches: after a crash, a source resumes at or before the
//! first message whose outputs may be missing (at-least-once delivery).
//!
//! Connectors available now, all needing no server:
//! [`JsonLinesSource`] / [`JsonLinesSink`] (files, with checkpoints),
//! [`StdinSource`] / [`StdoutSink`], and [`Discard`].
//!
//! Behind cargo features: `postgres` (`PostgresSink`, `PostgresCdcSource`)
//! and `mysql` (`MysqlSink`), in the modules `postgres` and `mysql_sink`;
//! `nats` (JetStream: module `nats`) and `redis` (Streams and key/value
//! cache sync: module `redis`); `kafka` (`KafkaSource`, `KafkaSink`:
//! module `kafka`).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

#[cfg(feature = "amqp")]
pub mod amqp;
mod checkpoint;
#[cfg(any(feature = "nats", feature = "redis"))]
mod field_template;
#[cfg(feature = "http")]
pub mod http;
pub mod jsonl;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "mysql-cdc")]
pub mod mysql_cdc;
#[cfg(feature = "mysql")]
pub mod mysql_sink;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(any(
    feature = "nats",
    feature = "redis",
    feature = "amqp",
    feature = "mqtt",
    feature = "http",
    feature = "postgres",
    feature = "mysql",
    feature = "mysql-cdc"
))]
pub(crate) mod netutil;
#[cfg(feature = "postgres")]
pub mod postgres;
mod progress;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub mod sql;
pub mod stdio;

#[cfg(feature = "nats")]
pub use self::nats::{NatsSink, NatsSinkConfig, NatsSource, NatsSourceConfig};
#[cfg(feature = "redis")]
pub use self::redis::{
    RedisKeySink, RedisKeySinkConfig, RedisStreamSink, RedisStreamSinkConfig, RedisStreamSource,
    RedisStreamSourceConfig,
};
pub use jsonl::{DecodeFn, JsonLinesSink, JsonLinesSource, serde_decode};
#[cfg(feature = "mysql-cdc")]
pub use mysql_cdc::{
    BinlogAcker, BinlogPosition, MysqlCdcSource, MysqlCdcSourceBuilder, MysqlCdcSourceConfig,
    ResumeBy, SchemaChangePolicy, SnapshotMode,
};
pub use progress::{Phase, SourceProgress, SourceStatus, Unit};
pub use stdio::{StdinSource, StdoutSink};

#[cfg(feature = "amqp")]
pub use amqp::{AmqpSink, AmqpSinkConfig, AmqpSource, AmqpSourceConfig};
#[cfg(feature = "http")]
pub use http::{HttpSink, HttpSinkConfig, HttpSource, HttpSourceConfig};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaSink, KafkaSinkConfig, KafkaSource, KafkaSourceConfig};
#[cfg(feature = "mqtt")]
pub use mqtt::{MqttSink, MqttSinkConfig, MqttSource, MqttSourceConfig};
#[cfg(feature = "mysql")]
pub use mysql_sink::{MysqlSink, MysqlSinkConfig};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresCdcSource, PostgresCdcSourceConfig, PostgresSink, PostgresSinkConfig};

/// What one call of [`Source::read`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read<A> {
    /// The batch holds the records read (possibly none); `A` acknowledges
    /// all of them at once.
    Batch(A),
    /// Nothing arrived in the source's waiting time; the batch is empty.
    /// The runtime checks for shutdown and calls `read` again.
    Idle,
    /// The input is exhausted; the batch is empty and `read` is not called again.
    End,
}

/// Where a flow's input comes from.
///
/// A source reads in batches into a buffer owned by the runtime (so no
/// per-message allocation is needed), and decodes each record into the
/// flow's input type `Item`. A record that cannot be decoded is pushed as a
/// [`DecodeError`]: the runtime counts it, logs it and dead-letters it, and
/// the flow goes on.
///
/// The futures returned are `Send`: the runtime runs the source in its own
/// task. Implement with `async move` blocks or `async fn` bodies:
///
/// ```
/// use std::sync::Arc;
/// use syncflow::connector::{Acker, Batch, ConnectorError, NoAck, Read, Source};
///
/// /// Counts from 1 to `to`, in batches.
/// struct Count { next: u64, to: u64 }
///
/// impl Source for Count {
///     type Item = u64;
///     type Ack = ();
///     type Acker = NoAck;
///     fn name(&self) -> Arc<str> { Arc::from("count") }
///     fn acker(&mut self) -> NoAck { NoAck }
///     async fn read(&mut self, batch: &mut Batch<u64>, max: usize) -> Result<Read<()>, ConnectorError> {
///         if self.next > self.to {
///             return Ok(Read::End);
///         }
///         while batch.len() < max && self.next <= self.to {
///             batch.push(self.next, b"", Ok(self.next));
///             self.next += 1;
///         }
///         Ok(Read::Batch(()))
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a syncflow source",
    label = "not a `Source`",
    note = "give the runtime a source before running it: `Runtime::new(flow).source(JsonLinesSource::open(path)?)`, or implement `syncflow::connector::Source`"
)]
pub trait Source: Send + 'static {
    /// The decoded payload: the flow's input type.
    type Item: Send + 'static;
    /// Acknowledges one batch (line number, offsets, message handles...).
    type Ack: Send + 'static;
    /// Receives the acknowledgements, in a task of its own.
    type Acker: Acker<Ack = Self::Ack>;

    /// A short name for logs, message metadata and dead letters (a path, a
    /// stream name, `stdin`).
    fn name(&self) -> Arc<str>;

    /// The acknowledgement receiver. Called once, before the first `read`.
    fn acker(&mut self) -> Self::Acker;

    /// Pushes up to `max` records into `batch` (which the runtime hands over
    /// empty) and returns the token acknowledging them.
    ///
    /// A source waiting for data (stdin, a network stream) should return
    /// within a fraction of a second with what it has, or with
    /// [`Read::Idle`], so that shutdown stays prompt: the runtime never
    /// cancels a `read`, it stops calling it.
    fn read(
        &mut self,
        batch: &mut Batch<Self::Item>,
        max: usize,
    ) -> impl Future<Output = Result<Read<Self::Ack>, ConnectorError>> + Send;

    /// A handle on what the source is doing and how much work it expects
    /// (the rows of a snapshot, the bytes of a file), for progress bars.
    /// Called once, before the first `read`; the source keeps a clone and
    /// updates it as it reads, once per batch. The default: `None`, the
    /// source knows no totals (a stream).
    fn progress(&self) -> Option<SourceProgress> {
        None
    }
}

/// Receives a source's acknowledgements and makes them durable.
///
/// [`Acker::ack`] is called once per batch, in the order the batches were
/// read, only after the batch and every batch before it were delivered to
/// all sinks; [`Acker::commit`] follows once for each group of
/// acknowledgements (so a file checkpoint is written once per group, not
/// once per batch).
pub trait Acker: Send + 'static {
    /// The token type, [`Source::Ack`].
    type Ack: Send + 'static;
    /// Records that the batch with this token, and all before it, went through.
    fn ack(&mut self, ack: Self::Ack);
    /// Makes the recorded acknowledgements durable (writes a checkpoint,
    /// commits offsets, sends acks to the server).
    fn commit(&mut self) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}

/// The acker of a source that cannot resume (standard input, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAck;

impl Acker for NoAck {
    type Ack = ();
    fn ack(&mut self, _: ()) {}
    async fn commit(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// Where a flow's outputs go.
///
/// The runtime calls [`Sink::write`] with every batch of outputs, then
/// [`Sink::flush`] when its queue runs dry or after a few batches; a batch is
/// confirmed to the source only after the `flush` that follows its `write`
/// succeeded. `flush` must therefore make everything written durable (or
/// delivered: sent and acknowledged by the server).
///
/// A sink is generic over the item type, so one sink type can take the
/// output of any flow whose output it can encode:
/// `impl<T: Serialize + Sync> Sink<T> for JsonLinesSink`.
pub trait Sink<T>: Send + 'static {
    /// A short name for logs and errors (a path, `stdout`).
    fn name(&self) -> String;
    /// Writes (or buffers) a batch of outputs.
    fn write(&mut self, items: &[T]) -> impl Future<Output = Result<(), ConnectorError>> + Send;
    /// Makes every item written so far durable.
    fn flush(&mut self) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}

/// A sink that drops everything: for flows run for their side effects.
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl<T: Sync> Sink<T> for Discard {
    fn name(&self) -> String {
        "discard".to_string()
    }
    async fn write(&mut self, _: &[T]) -> Result<(), ConnectorError> {
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A record could not be decoded into the flow's input type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    /// A decode error with the decoder's message (e.g. a serde error).
    pub fn new(message: impl fmt::Display) -> Self {
        DecodeError {
            message: message.to_string(),
        }
    }
    /// The decoder's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for DecodeError {}

#[derive(Debug)]
pub(crate) struct Record<T> {
    pub(crate) position: u64,
    pub(crate) raw: Range<usize>,
    pub(crate) payload: Result<T, DecodeError>,
}

/// A reusable buffer of records: decoded payloads with their position in
/// the source and their raw bytes (kept for dead letters).
///
/// The raw bytes of all records share one buffer, so filling a batch that
/// was used before allocates nothing.
#[derive(Debug)]
pub struct Batch<T> {
    pub(crate) records: Vec<Record<T>>,
    pub(crate) raw: Vec<u8>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            records: Vec::new(),
            raw: Vec::new(),
        }
    }
}

impl<T> Batch<T> {
    /// An empty batch with room for `records` records.
    pub fn with_capacity(records: usize) -> Self {
        Batch {
            records: Vec::with_capacity(records),
            raw: Vec::new(),
        }
    }

    /// Adds a record: its position in the source (for files, the line
    /// number from 1), its raw bytes (may be empty when the source has no
    /// raw form) and its decoded payload or decode error.
    #[inline]
    pub fn push(&mut self, position: u64, raw: &[u8], payload: Result<T, DecodeError>) {
        let start = self.raw.len();
        self.raw.extend_from_slice(raw);
        self.records.push(Record {
            position,
            raw: start..self.raw.len(),
            payload,
        });
    }

    /// Adds a record whose raw bytes are already in the raw buffer.
    #[inline]
    pub(crate) fn push_range(
        &mut self,
        position: u64,
        raw: Range<usize>,
        payload: Result<T, DecodeError>,
    ) {
        self.records.push(Record {
            position,
            raw,
            payload,
        });
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Removes every record, keeping the allocations.
    pub fn clear(&mut self) {
        self.records.clear();
        self.raw.clear();
    }

    /// The records: position, raw bytes, payload.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8], &Result<T, DecodeError>)> + '_ {
        self.records.iter().map(|r| {
            (
                r.position,
                self.raw.get(r.raw.clone()).unwrap_or(&[]),
                &r.payload,
            )
        })
    }
}

/// A source or sink failed. Every message says what failed, where, and what
/// to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// An I/O operation on a file or stream failed.
    #[error("cannot {action} `{}`: {source}{}", path.display(), hint_text(hint))]
    Io {
        /// What was being done ("open input file", "write to").
        action: &'static str,
        /// The file or stream (`stdin`, `stdout` for those).
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
        /// What to do about it (may be empty).
        hint: &'static str,
    },
    /// An output message could not be encoded.
    #[error(
        "cannot encode an output message for `{target}`: {source}; make the flow's output type serializable as JSON (e.g. maps need string keys)"
    )]
    Encode {
        /// The sink.
        target: String,
        /// The serializer's error.
        source: serde_json::Error,
    },
    /// A checkpoint file is unusable.
    #[error("checkpoint file `{}` {problem}; {fix}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What to do about it.
        fix: String,
    },
    /// A server (broker, database, HTTP endpoint) refused or failed an
    /// operation, or could not be reached.
    #[error(transparent)]
    Server(Box<ServerError>),
    /// Any other failure of a connector (for connectors outside this crate).
    #[error(transparent)]
    Other(Box<dyn StdError + Send + Sync + 'static>),
}

/// What a server refused or failed, where, and what to do about it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{connector} `{target}`: cannot {action}: {message}{}",
    hint_text(hint)
)]
pub struct ServerError {
    /// The connector (`nats`, `redis`, `postgres`...).
    pub connector: &'static str,
    /// What it talks to: a stream, queue, table or address (never a password).
    pub target: String,
    /// What was being done ("connect", "publish", "ack").
    pub action: &'static str,
    /// The server's or client library's message.
    pub message: String,
    /// What to do about it (may be empty).
    pub hint: String,
}

fn hint_text(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("; {hint}")
    }
}

impl ConnectorError {
    /// A [`ConnectorError::Server`] error.
    pub fn server(
        connector: &'static str,
        target: impl Into<String>,
        action: &'static str,
        message: impl fmt::Display,
        hint: impl Into<String>,
    ) -> Self {
        ConnectorError::Server(Box::new(ServerError {
            connector,
            target: target.into(),
            action,
            message: message.to_string(),
            hint: hint.into(),
        }))
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
        hint: &'static str,
    ) -> Self {
        ConnectorError::Io {
            action,
            path: path.into(),
            source,
            hint,
        }
    }
}
