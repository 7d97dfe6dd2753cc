//! NATS JetStream: [`NatsSource`] reads a stream through a durable pull
//! consumer, [`NatsSink`] publishes with JetStream acknowledgements.
//!
//! **Delivery: at least once.** The source acknowledges a message to the
//! server only after every sink confirmed the outputs made from it (the
//! runtime's end-to-end acknowledgement). A message not acknowledged within
//! the consumer's `ack_wait` (the run failed, the process died) is delivered
//! again, to this process or to another one reading with the same durable
//! consumer: processes sharing a durable name share the work.
//!
//! The sink publishes every message of a batch without waiting, then waits
//! for all the stream's acknowledgements in [`Sink::flush`]; a batch is
//! confirmed to the source only once the stream stored all of it.
//!
//! A lost connection is re-established by the client with capped
//! exponential backoff and jitter, logged once per outage (`warn`) and when
//! it is back (`info`); the flow resumes where it was.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_nats::{Client, ConnectOptions, Event, Message, StatusCode, Subject, Subscriber};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::field_template::FieldTemplate;
use super::netutil::{IDLE_STEP, Outage, redact_urls};
use super::{Acker, Batch, ConnectorError, DecodeFn, Read, Sink, Source, serde_decode};
use crate::policy::{Jitter, Retry};

const CONNECTOR: &str = "nats";

/// The server the configurations point at unless told otherwise.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// Messages asked for per pull request, unless configured.
pub const DEFAULT_BATCH_SIZE: usize = 1000;
/// How long a pull waits for a first message before `read` returns idle.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(200);
/// How long the server waits for an acknowledgement before delivering again.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Most messages delivered but not yet acknowledged, per consumer.
pub const DEFAULT_MAX_ACK_PENDING: i64 = 20_000;
/// How long the sink waits for the stream's acknowledgement of a publish.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Most publishes a sink keeps unconfirmed before it waits for the oldest.
pub const DEFAULT_MAX_PENDING: usize = 8192;
/// How long a sink keeps retrying publishes that failed for lack of a
/// connection before the run fails.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);
/// How long connecting may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an acknowledgement commit may wait for the connection.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pull request without waiting (`no_wait`) may stay silent
/// before it counts as lost (the server answers such requests at once).
const FETCH_PATIENCE: Duration = Duration::from_secs(1);
/// Extra time given to a waiting pull request after its expiry.
const EXPIRY_GRACE: Duration = Duration::from_secs(1);
/// Pause after the server said the consumer has too many messages unacknowledged.
const BUSY_PAUSE: Duration = Duration::from_millis(20);

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

/// Where a new durable consumer starts reading its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliverFrom {
    /// From the first message still in the stream (the default).
    #[default]
    All,
    /// Only messages stored after the consumer was created.
    New,
    /// From the last message in the stream.
    Last,
}

/// Configuration of a [`NatsSource`] (`source: { nats: {...} }` in a flow file).
///
/// ```yaml
/// source:
///   nats:
///     url: nats://127.0.0.1:4222
///     stream: ORDERS
///     subject: orders.created
///     durable: billing
///     ack_wait: 30s
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Server URL, or several separated by commas (default
    /// `nats://127.0.0.1:4222`). May hold credentials
    /// (`nats://user:password@host:4222`, `nats://token@host:4222`); they are
    /// never shown in logs or errors.
    #[serde(default = "default_url")]
    pub url: String,
    /// The JetStream stream to read.
    pub stream: String,
    /// The durable consumer's name. Processes reading with the same name
    /// share the messages; its position survives restarts. Created if
    /// missing, updated to this configuration if it exists.
    pub durable: String,
    /// Only messages whose subject matches this filter (`orders.*`,
    /// `orders.>`); default: every message of the stream.
    #[serde(default)]
    pub subject: Option<String>,
    /// Messages asked for per pull request (default 1000; a flow's batch
    /// size caps it).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub batch_size: Option<usize>,
    /// How long a pull waits for a message before the source reports that
    /// nothing arrived (default `200ms`, at least `1ms`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub max_wait: Option<Duration>,
    /// How long the server waits for a message's acknowledgement before it
    /// delivers the message again (default `30s`). Make it longer than a
    /// message takes to get through the flow and its sinks.
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub ack_wait: Option<Duration>,
    /// Most messages delivered and not yet acknowledged (default 20000):
    /// bounds the work in flight across every process of the consumer.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_ack_pending: Option<i64>,
    /// Deliveries of one message before the server gives up on it (default:
    /// no limit).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_deliver: Option<i64>,
    /// Where a new consumer starts: `all` (default), `new` or `last`.
    /// Ignored when the consumer exists.
    #[serde(default)]
    pub deliver: DeliverFrom,
    /// Creates the stream with these subjects when it does not exist
    /// (default: a missing stream is an error).
    #[serde(default)]
    pub create_stream: Option<Vec<String>>,
    /// How long connecting may take (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub connect_timeout: Option<Duration>,
}

impl NatsSourceConfig {
    /// A configuration reading `stream` with the durable consumer `durable`,
    /// everything else at its default.
    pub fn new(stream: impl Into<String>, durable: impl Into<String>) -> Self {
        NatsSourceConfig {
            url: default_url(),
            stream: stream.into(),
            durable: durable.into(),
            subject: None,
            batch_size: None,
            max_wait: None,
            ack_wait: None,
            max_ack_pending: None,
            max_deliver: None,
            deliver: DeliverFrom::All,
            create_stream: None,
            connect_timeout: None,
        }
    }
}

/// Configuration of a [`NatsSink`] (`sinks: [ { nats: {...} } ]` in a flow file).
///
/// ```yaml
/// sinks:
///   - nats:
///       url: nats://127.0.0.1:4222
///       subject: invoices.{region}
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL, or several separated by commas (default
    /// `nats://127.0.0.1:4222`); credentials in it are never shown.
    #[serde(default = "default_url")]
    pub url: String,
    /// The subject to publish to: fixed (`invoices.created`) or built from
    /// each message's fields (`invoices.{region}`, `orders.{customer.id}`).
    /// A JetStream stream must capture it.
    pub subject: String,
    /// How long to wait for the stream's acknowledgement of one publish
    /// (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub publish_timeout: Option<Duration>,
    /// Most publishes awaiting acknowledgement before the sink waits for the
    /// oldest (default 8192).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_pending: Option<usize>,
    /// How long to keep retrying publishes that failed for lack of a
    /// connection before the run fails (default `60s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub retry_for: Option<Duration>,
    /// How long connecting may take (default `5s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub connect_timeout: Option<Duration>,
}

impl NatsSinkConfig {
    /// A configuration publishing to `subject` (a template, see
    /// [`NatsSinkConfig::subject`]), everything else at its default.
    pub fn new(subject: impl Into<String>) -> Self {
        NatsSinkConfig {
            url: default_url(),
            subject: subject.into(),
            publish_timeout: None,
            max_pending: None,
            retry_for: None,
            connect_timeout: None,
        }
    }
}

/// Connects a client that reconnects with capped exponential backoff and
/// jitter, and logs each outage once.
pub(crate) async fn connect_client(
    url: &str,
    timeout: Option<Duration>,
    role: &'static str,
) -> Result<Client, ConnectorError> {
    let shown = redact_urls(url);
    let down = Arc::new(AtomicBool::new(false));
    let target = format!("{shown} ({role})");
    let backoff = Retry::new(u32::MAX)
        .with_initial_backoff(super::netutil::INITIAL_BACKOFF)
        .with_max_backoff(super::netutil::MAX_BACKOFF)
        .with_jitter(Jitter::EQUAL);
    let options = ConnectOptions::new()
        .name(format!("syncflow {role}"))
        .connection_timeout(timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
        .reconnect_delay_callback(move |attempts| {
            if attempts <= 1 {
                Duration::ZERO
            } else {
                backoff.delay(attempts as u32 - 1, &mut fastrand::Rng::new())
            }
        })
        .event_callback(move |event| {
            let (down, target) = (down.clone(), target.clone());
            async move {
                match event {
                    Event::Disconnected => {
                        if !down.swap(true, Ordering::Relaxed) {
                            tracing::warn!(
                                connector = CONNECTOR,
                                target = %target,
                                "connection lost; reconnecting with backoff (unacknowledged messages are delivered again, nothing is lost)"
                            );
                        }
                    }
                    Event::Connected => {
                        if down.swap(false, Ordering::Relaxed) {
                            tracing::info!(connector = CONNECTOR, target = %target, "reconnected; resuming");
                        }
                    }
                    Event::SlowConsumer(_) => tracing::warn!(
                        connector = CONNECTOR,
                        target = %target,
                        "the client dropped messages it could not buffer (slow consumer); they are delivered again after ack_wait"
                    ),
                    other => tracing::debug!(connector = CONNECTOR, target = %target, event = %other, "client event"),
                }
            }
        });
    let urls: Vec<&str> = url.split(',').map(str::trim).collect();
    options.connect(urls).await.map_err(|e| {
        ConnectorError::server(
            CONNECTOR,
            shown,
            "connect",
            e,
            "check that the server runs and the URL, port and credentials are right (a JetStream server: nats-server -js)",
        )
    })
}

/// Reads a JetStream stream through a durable pull consumer.
///
/// Each `read` pulls what the consumer has ready, up to the batch size; if
/// nothing is ready it waits up to `max_wait` for a first message, returns
/// it with whatever arrived along with it, or returns [`Read::Idle`]. Both
/// take one pull request (`no_wait` with an expiry: the server answers at
/// once with what is ready, or waits for the first message); on a server
/// that does not wait on such a request, the wait takes a second request. A record's position is the message's stream
/// sequence number; its raw bytes are the payload. Messages are
/// acknowledged to the server only once the runtime acknowledged them.
///
/// ```no_run
/// # async fn run() -> Result<(), syncflow::connector::ConnectorError> {
/// use syncflow::connector::nats::NatsSource;
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let source = NatsSource::<Order>::builder("ORDERS", "billing")
///     .subject("orders.created")
///     .ack_wait(std::time::Duration::from_secs(60))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
pub struct NatsSource<T> {
    client: Client,
    name: Arc<str>,
    target: String,
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<durable>`.
    next: Subject,
    /// Pull requests are answered on `<inbox>.<n>`; the subscription takes `<inbox>.*`.
    inbox: String,
    subscription: Subscriber,
    /// The number of the last pull request sent.
    request: u64,
    /// Whether the server waits for a first message on a request that asks
    /// for what is ready without waiting *and* has an expiry
    /// ([`Pull::ReadyOrFirst`]); cleared when it answers such a request at
    /// once with nothing, as servers do where "no wait" overrides the
    /// expiry (the source then waits in two requests, [`Pull::Wait`] and
    /// [`Pull::Ready`]).
    ready_or_first: bool,
    batch_size: usize,
    max_wait: Duration,
    decode: DecodeFn<T>,
    outage: Outage,
    request_body: Vec<u8>,
}

impl<T> std::fmt::Debug for NatsSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSource")
            .field("name", &self.name)
            .field("batch_size", &self.batch_size)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

/// Builds a [`NatsSource`] step by step (see [`NatsSourceConfig`] for each setting).
#[derive(Debug, Clone)]
pub struct NatsSourceBuilder<T> {
    config: NatsSourceConfig,
    decode: DecodeFn<T>,
}

impl<T: Send + 'static> NatsSourceBuilder<T> {
    /// The server URL(s) (default `nats://127.0.0.1:4222`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }
    /// Only messages whose subject matches this filter.
    pub fn subject(mut self, filter: impl Into<String>) -> Self {
        self.config.subject = Some(filter.into());
        self
    }
    /// Messages asked for per pull request (default 1000).
    pub fn batch_size(mut self, messages: usize) -> Self {
        self.config.batch_size = Some(messages);
        self
    }
    /// How long a pull waits for a message (default 200 ms).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = Some(wait);
        self
    }
    /// How long the server waits for an acknowledgement (default 30 s).
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.config.ack_wait = Some(wait);
        self
    }
    /// Most messages delivered and not yet acknowledged (default 20000).
    pub fn max_ack_pending(mut self, messages: i64) -> Self {
        self.config.max_ack_pending = Some(messages);
        self
    }
    /// Deliveries of one message before the server gives up on it.
    pub fn max_deliver(mut self, deliveries: i64) -> Self {
        self.config.max_deliver = Some(deliveries);
        self
    }
    /// Where a new consumer starts (default: the first message).
    pub fn deliver(mut self, from: DeliverFrom) -> Self {
        self.config.deliver = from;
        self
    }
    /// Creates the stream with these subjects if it does not exist.
    pub fn create_stream<S: Into<String>>(mut self, subjects: impl IntoIterator<Item = S>) -> Self {
        self.config.create_stream = Some(subjects.into_iter().map(Into::into).collect());
        self
    }
    /// Decodes payloads with `decode` instead of `T`'s `Deserialize`.
    pub fn with_decoder(mut self, decode: DecodeFn<T>) -> Self {
        self.decode = decode;
        self
    }
    /// The configuration built so far.
    pub fn config(&self) -> &NatsSourceConfig {
        &self.config
    }
    /// Connects (see [`NatsSource::connect`]).
    pub async fn connect(self) -> Result<NatsSource<T>, ConnectorError> {
        NatsSource::connect(&self.config, self.decode).await
    }
}

impl<T: DeserializeOwned + Send + 'static> NatsSource<T> {
    /// A builder reading `stream` with the durable consumer `durable`,
    /// decoding payloads as JSON into `T`.
    pub fn builder(stream: impl Into<String>, durable: impl Into<String>) -> NatsSourceBuilder<T> {
        NatsSourceBuilder {
            config: NatsSourceConfig::new(stream, durable),
            decode: serde_decode::<T>,
        }
    }
}

fn jetstream_error(
    target: &str,
    action: &'static str,
    error: impl std::fmt::Display,
    hint: impl Into<String>,
) -> ConnectorError {
    ConnectorError::server(CONNECTOR, target, action, error, hint)
}

impl<T: Send + 'static> NatsSource<T> {
    /// Connects to the server, checks the stream (creating it when
    /// `create_stream` says so), creates or updates the durable consumer,
    /// and subscribes to the replies of its pull requests.
    pub async fn connect(
        config: &NatsSourceConfig,
        decode: DecodeFn<T>,
    ) -> Result<Self, ConnectorError> {
        let shown = redact_urls(&config.url);
        let target = format!(
            "{shown} stream {} consumer {}",
            config.stream, config.durable
        );
        if config.stream.is_empty() || config.durable.is_empty() {
            return Err(jetstream_error(
                &target,
                "start",
                "`stream` and `durable` must not be empty",
                "name the stream to read and the durable consumer that keeps the position",
            ));
        }
        let batch_size = config.batch_size.unwrap_or(DEFAULT_BATCH_SIZE).max(1);
        let client = connect_client(&config.url, config.connect_timeout, "source").await?;
        let js = jetstream::new(client.clone());

        let stream = match js.get_stream(&config.stream).await {
            Ok(stream) => stream,
            Err(e) => {
                let missing = matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref err) if err.code() == 404);
                match (&config.create_stream, missing) {
                    (Some(subjects), true) => js
                        .create_stream(stream::Config {
                            name: config.stream.clone(),
                            subjects: subjects.clone(),
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| {
                            jetstream_error(
                                &target,
                                "create the stream",
                                e,
                                "check that JetStream is enabled and the subjects do not overlap another stream's",
                            )
                        })?,
                    (None, true) => {
                        return Err(jetstream_error(
                            &target,
                            "find the stream",
                            e,
                            "create the stream first (nats stream add), or set `create_stream` to the subjects it should capture",
                        ));
                    }
                    _ => {
                        return Err(jetstream_error(
                            &target,
                            "look up the stream",
                            e,
                            "check that JetStream is enabled on the server (nats-server -js)",
                        ));
                    }
                }
            }
        };
        let consumer_config = consumer::pull::Config {
            durable_name: Some(config.durable.clone()),
            filter_subject: config.subject.clone().unwrap_or_default(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait.unwrap_or(DEFAULT_ACK_WAIT),
            max_deliver: config.max_deliver.unwrap_or(-1),
            max_ack_pending: config.max_ack_pending.unwrap_or(DEFAULT_MAX_ACK_PENDING),
            deliver_policy: match config.deliver {
                DeliverFrom::All => consumer::DeliverPolicy::All,
                DeliverFrom::New => consumer::DeliverPolicy::New,
                DeliverFrom::Last => consumer::DeliverPolicy::Last,
            },
            ..Default::default()
        };
        stream
            .create_consumer(consumer_config)
            .await
            .map_err(|e| {
                jetstream_error(
                    &target,
                    "create or update the durable consumer",
                    e,
                    "an existing consumer of that name may have settings that cannot change (filter subject, deliver policy): delete it or choose another `durable` name",
                )
            })?;

        let inbox = client.new_inbox();
        let subscription = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| jetstream_error(&target, "subscribe to pull replies", e, ""))?;
        let next = Subject::from(format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            config.stream, config.durable
        ));
        Ok(NatsSource {
            name: Arc::from(format!("{shown}/{}", config.stream)),
            outage: Outage::new(CONNECTOR, target.clone()),
            target,
            client,
            next,
            inbox,
            subscription,
            request: 0,
            ready_or_first: true,
            batch_size,
            // A pull request with no expiry would never end: 1 ms at least.
            max_wait: config
                .max_wait
                .unwrap_or(DEFAULT_MAX_WAIT)
                .max(Duration::from_millis(1)),
            decode,
            request_body: Vec::with_capacity(64),
        })
    }

    /// Sends pull request number `self.request + 1` and returns its reply subject.
    async fn pull(
        &mut self,
        batch: usize,
        pull: Pull,
    ) -> Result<Subject, async_nats::PublishError> {
        use std::io::Write as _;
        self.request += 1;
        let reply = Subject::from(format!("{}.{}", self.inbox, self.request));
        self.request_body.clear();
        let _ = match pull {
            Pull::Ready => write!(self.request_body, r#"{{"batch":{batch},"no_wait":true}}"#),
            Pull::Wait(expires) => write!(
                self.request_body,
                r#"{{"batch":{batch},"expires":{}}}"#,
                expires.as_nanos()
            ),
            Pull::ReadyOrFirst(expires) => write!(
                self.request_body,
                r#"{{"batch":{batch},"expires":{},"no_wait":true}}"#,
                expires.as_nanos()
            ),
        };
        self.client
            .publish_with_reply(
                self.next.clone(),
                reply.clone(),
                Bytes::copy_from_slice(&self.request_body),
            )
            .await?;
        Ok(reply)
    }

    /// Takes one message from the subscription: a delivery goes into the
    /// batch; a status ending pull request `reply` is returned.
    fn take(
        &self,
        message: Message,
        reply: Option<&Subject>,
        batch: &mut Batch<T>,
        acks: &mut Vec<Subject>,
    ) -> Option<PullEnd> {
        match message.status {
            None | Some(StatusCode::OK) => {
                let Some(ack) = message.reply else {
                    tracing::debug!(subject = %message.subject, "ignoring a message without a reply subject on the pull inbox");
                    return None;
                };
                let position = stream_sequence(&ack).unwrap_or(0);
                batch.push(position, &message.payload, (self.decode)(&message.payload));
                acks.push(ack);
                None
            }
            Some(StatusCode::IDLE_HEARTBEAT) => None,
            Some(status) => {
                if reply != Some(&message.subject) {
                    // The end of an earlier request that timed out on our side.
                    return None;
                }
                let description = message.description.unwrap_or_default();
                Some(match status {
                    StatusCode::NOT_FOUND | StatusCode::TIMEOUT => PullEnd::Drained,
                    StatusCode::REQUEST_TERMINATED
                        if description.contains("Deleted")
                            || description.contains("push")
                            || description.contains("MaxRequest") =>
                    {
                        PullEnd::Fatal(format!("{status}: {description}"))
                    }
                    StatusCode::REQUEST_TERMINATED => PullEnd::Busy,
                    StatusCode::NO_RESPONDERS => PullEnd::Unreachable,
                    _ => PullEnd::Fatal(format!("{status}: {description}")),
                })
            }
        }
    }

    /// Receives the replies of pull request `reply` until it ends, `want`
    /// messages were taken, or nothing came for `patience`.
    async fn receive(
        &mut self,
        reply: &Subject,
        want: usize,
        patience: Duration,
        batch: &mut Batch<T>,
        acks: &mut Vec<Subject>,
    ) -> PullEnd {
        let start = acks.len();
        while acks.len() - start < want {
            let message = match tokio::time::timeout(patience, self.subscription.next()).await {
                Ok(Some(message)) => message,
                Ok(None) => return PullEnd::Fatal("the pull subscription was closed".into()),
                Err(_) => return PullEnd::TimedOut,
            };
            if let Some(end) = self.take(message, Some(reply), batch, acks) {
                return end;
            }
        }
        PullEnd::Complete
    }

    /// Takes the deliveries already buffered (late replies of earlier requests).
    fn take_buffered(&mut self, want: usize, batch: &mut Batch<T>, acks: &mut Vec<Subject>) {
        use futures_util::FutureExt;
        while acks.len() < want {
            match self.subscription.next().now_or_never() {
                Some(Some(message)) => {
                    self.take(message, None, batch, acks);
                }
                _ => break,
            }
        }
    }

    fn fail(&self, end: PullEnd) -> ConnectorError {
        let message = match end {
            PullEnd::Fatal(message) => message,
            _ => "unexpected end of a pull request".to_string(),
        };
        jetstream_error(
            &self.target,
            "pull messages",
            message,
            "the consumer was deleted or changed on the server; restart the flow to create it again",
        )
    }

    /// One pull request that ends once the consumer has nothing more ready
    /// (`Pull::Ready`, `Pull::ReadyOrFirst`): takes what it delivers.
    async fn fetch(
        &mut self,
        want: usize,
        pull: Pull,
        batch: &mut Batch<T>,
        acks: &mut Vec<Subject>,
    ) -> Result<PullEnd, ConnectorError> {
        let reply = match self.pull(want, pull).await {
            Ok(reply) => reply,
            Err(e) => return Ok(PullEnd::Error(e.to_string())),
        };
        let patience = match pull {
            Pull::Ready => FETCH_PATIENCE,
            Pull::Wait(expires) | Pull::ReadyOrFirst(expires) => expires + EXPIRY_GRACE,
        };
        let end = self.receive(&reply, want, patience, batch, acks).await;
        match end {
            PullEnd::Fatal(_) => Err(self.fail(end)),
            end => Ok(end),
        }
    }
}

/// What a pull request asks the server for.
#[derive(Debug, Clone, Copy)]
enum Pull {
    /// What the consumer has ready, without waiting (`no_wait`); ends with
    /// a 404 or 408 status once nothing more is ready.
    Ready,
    /// Messages as they arrive until the batch is full or the request
    /// expires (`expires`).
    Wait(Duration),
    /// What the consumer has ready; if nothing is, the first message to
    /// arrive within the expiry and what is ready with it (`no_wait` and
    /// `expires`, nats-server 2.9 and later); ends with a 408 status.
    ReadyOrFirst(Duration),
}

/// How a pull request ended.
#[derive(Debug)]
enum PullEnd {
    /// Every message asked for arrived.
    Complete,
    /// The consumer had no more messages (404, 408).
    Drained,
    /// The consumer has too many messages unacknowledged (409): wait for acks.
    Busy,
    /// Nobody answered (503): the server is restarting or JetStream is not ready.
    Unreachable,
    /// No end arrived in time (a lost connection, a lost reply).
    TimedOut,
    /// The request could not be sent.
    Error(String),
    /// The consumer is gone or unusable.
    Fatal(String),
}

/// The stream sequence number in a JetStream acknowledgement subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
/// or the longer form with a domain and an account hash after `$JS.ACK`.
fn stream_sequence(ack: &str) -> Option<u64> {
    let tokens = ack.split('.').count();
    let index = match tokens {
        9 => 5,
        n if n >= 11 => 7,
        _ => return None,
    };
    ack.split('.').nth(index)?.parse().ok()
}

/// The acknowledgement token of one batch of a [`NatsSource`]: the reply
/// subjects of its messages.
#[derive(Debug, Default)]
pub struct NatsAck {
    replies: Vec<Subject>,
}

impl NatsAck {
    /// Number of messages acknowledged by this token.
    pub fn len(&self) -> usize {
        self.replies.len()
    }
    /// Whether the token acknowledges no message.
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
    }
}

/// Acknowledges a [`NatsSource`]'s messages to the server, once the runtime
/// acknowledged them.
#[derive(Debug)]
pub struct NatsAcker {
    client: Client,
    target: String,
    pending: Vec<Subject>,
}

const ACK_BODY: Bytes = Bytes::from_static(b"+ACK");

impl Acker for NatsAcker {
    type Ack = NatsAck;

    fn ack(&mut self, ack: NatsAck) {
        if self.pending.is_empty() {
            self.pending = ack.replies;
        } else {
            self.pending.extend(ack.replies);
        }
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        let mut sent = 0;
        let mut problem = None;
        for reply in &self.pending {
            match tokio::time::timeout_at(deadline, self.client.publish(reply.clone(), ACK_BODY))
                .await
            {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => {
                    problem = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    problem = Some("timed out waiting for the connection".to_string());
                    break;
                }
            }
        }
        self.pending.drain(..sent);
        if problem.is_none() {
            match tokio::time::timeout_at(deadline, self.client.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problem = Some(e.to_string()),
                Err(_) => problem = Some("timed out waiting for the connection".to_string()),
            }
        }
        if let Some(problem) = problem {
            // Not an error of the run: an acknowledgement that does not reach
            // the server only makes the message come again after ack_wait.
            tracing::warn!(
                connector = CONNECTOR,
                target = %self.target,
                unsent = self.pending.len(),
                %problem,
                "acknowledgements may not have reached the server; those messages will be delivered again after ack_wait"
            );
        }
        Ok(())
    }
}

impl<T: Send + 'static> Source for NatsSource<T> {
    type Item = T;
    type Ack = NatsAck;
    type Acker = NatsAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> NatsAcker {
        NatsAcker {
            client: self.client.clone(),
            target: self.target.clone(),
            pending: Vec::new(),
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<NatsAck>, ConnectorError> {
        if !self.outage.wait_step(IDLE_STEP).await {
            return Ok(Read::Idle);
        }
        if self.client.connection_state() != State::Connected {
            // The client reconnects by itself (and logs the outage).
            tokio::time::sleep(IDLE_STEP.min(self.max_wait)).await;
            return Ok(Read::Idle);
        }
        let want = max.min(self.batch_size).max(1);
        let mut acks = Vec::with_capacity(want);
        self.take_buffered(want, batch, &mut acks);
        let mut end = PullEnd::Complete;
        if acks.is_empty() && self.ready_or_first {
            // One request: what is ready, or else the first message to
            // arrive within max_wait with whatever came along with it.
            let asked = Instant::now();
            end = self
                .fetch(want, Pull::ReadyOrFirst(self.max_wait), batch, &mut acks)
                .await?;
            if acks.is_empty()
                && matches!(end, PullEnd::Drained)
                && asked.elapsed() < self.max_wait / 2
            {
                // The server did not wait: "no wait" overrides the expiry
                // there. Wait in two requests from now on.
                self.ready_or_first = false;
                tracing::debug!(
                    connector = CONNECTOR,
                    target = %self.target,
                    "the server answers a waiting no-wait pull at once; waiting with a separate request"
                );
            }
        } else if acks.len() < want {
            end = self
                .fetch(want - acks.len(), Pull::Ready, batch, &mut acks)
                .await?;
        }
        if acks.is_empty() && matches!(end, PullEnd::Drained) && !self.ready_or_first {
            // Nothing ready: wait up to max_wait for one message, then take
            // whatever else arrived meanwhile.
            let reply = match self.pull(1, Pull::Wait(self.max_wait)).await {
                Ok(reply) => reply,
                Err(e) => {
                    self.outage.failed_quietly("send a pull request", &e);
                    return Ok(Read::Idle);
                }
            };
            let patience = self.max_wait + EXPIRY_GRACE;
            end = self.receive(&reply, 1, patience, batch, &mut acks).await;
            if let PullEnd::Fatal(_) = end {
                return Err(self.fail(end));
            }
            if acks.len() == 1 && want > 1 {
                end = self.fetch(want - 1, Pull::Ready, batch, &mut acks).await?;
            }
        }
        match end {
            PullEnd::Complete | PullEnd::Drained => self.outage.recovered(),
            PullEnd::Busy => {
                if acks.is_empty() {
                    tokio::time::sleep(BUSY_PAUSE).await;
                }
            }
            PullEnd::Unreachable => {
                self.outage.failed(
                    "pull messages (no responder: the server is restarting, JetStream is not ready, or the consumer was deleted)",
                    &"503 no responders",
                );
            }
            // A lost connection: the client logs the outage and reconnects.
            PullEnd::TimedOut => {
                self.outage
                    .failed_quietly("pull messages", &"no reply to a pull request in time");
            }
            PullEnd::Error(e) => {
                self.outage.failed_quietly("send a pull request", &e);
            }
            PullEnd::Fatal(_) => return Err(self.fail(end)),
        }
        if acks.is_empty() {
            Ok(Read::Idle)
        } else {
            Ok(Read::Batch(NatsAck { replies: acks }))
        }
    }
}

/// Where a [`NatsSink`] publishes: one subject, or one built per message.
#[derive(Debug)]
enum Target {
    Fixed(Subject),
    Template(FieldTemplate),
}

/// One publish awaiting the stream's acknowledgement.
struct Pending {
    subject: Subject,
    payload: Bytes,
    ack: Option<jetstream::context::PublishAckFuture>,
}

/// Publishes each output as JSON to a JetStream subject and waits for the
/// stream's acknowledgements.
///
/// `write` encodes and publishes a batch without waiting; `flush` waits
/// until the stream acknowledged every message (so the runtime confirms a
/// batch only once it is stored). A publish that fails for lack of a
/// connection is sent again, with backoff, for up to `retry_for`; a message
/// retried may be stored twice, and after others (at-least-once).
///
/// The subject is fixed (`invoices.created`) or a template over the
/// message's fields (`invoices.{region}`): a fixed subject costs nothing per
/// message, a template reads the fields back from the encoded message.
///
/// ```no_run
/// # async fn run() -> Result<(), syncflow::connector::ConnectorError> {
/// use syncflow::connector::nats::NatsSink;
/// let sink = NatsSink::builder("invoices.{region}").connect().await?;
/// # Ok(()) }
/// ```
pub struct NatsSink {
    js: jetstream::Context,
    name: String,
    target: Target,
    buffer: BytesMut,
    pending: VecDeque<Pending>,
    /// Publishes to send again: subject, payload, and why they failed.
    failed: Vec<(Subject, Bytes, PublishErrorKind, String)>,
    max_pending: usize,
    retry_for: Duration,
    outage: Outage,
    subject_text: String,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Builds a [`NatsSink`] step by step (see [`NatsSinkConfig`] for each setting).
#[derive(Debug, Clone)]
pub struct NatsSinkBuilder {
    config: NatsSinkConfig,
}

impl NatsSinkBuilder {
    /// The server URL(s) (default `nats://127.0.0.1:4222`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.url = url.into();
        self
    }
    /// How long to wait for one publish's acknowledgement (default 5 s).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = Some(timeout);
        self
    }
    /// Most publishes awaiting acknowledgement (default 8192).
    pub fn max_pending(mut self, publishes: usize) -> Self {
        self.config.max_pending = Some(publishes);
        self
    }
    /// How long to retry publishes failing for lack of a connection (default 60 s).
    pub fn retry_for(mut self, time: Duration) -> Self {
        self.config.retry_for = Some(time);
        self
    }
    /// Connects (see [`NatsSink::connect`]).
    pub async fn connect(self) -> Result<NatsSink, ConnectorError> {
        NatsSink::connect(&self.config).await
    }
}

impl NatsSink {
    /// A builder publishing to `subject` (fixed, or a template such as
    /// `invoices.{region}`).
    pub fn builder(subject: impl Into<String>) -> NatsSinkBuilder {
        NatsSinkBuilder {
            config: NatsSinkConfig::new(subject),
        }
    }

    /// Connects to the server. A fixed subject must be captured by a
    /// stream; this is checked here so that a typo fails at start.
    pub async fn connect(config: &NatsSinkConfig) -> Result<Self, ConnectorError> {
        let shown = redact_urls(&config.url);
        let name = format!("{shown}/{}", config.subject);
        let template = FieldTemplate::parse(&config.subject).map_err(|e| {
            jetstream_error(&name, "use the subject", e, "fix the `subject` setting")
        })?;
        let target = match template.fixed() {
            Some(fixed) => {
                let subject = Subject::validated(fixed).map_err(|e| {
                    jetstream_error(
                        &name,
                        "use the subject",
                        e,
                        "a subject is made of dot-separated tokens without spaces or wildcards",
                    )
                })?;
                Target::Fixed(subject)
            }
            None => Target::Template(template),
        };
        let client = connect_client(&config.url, config.connect_timeout, "sink").await?;
        let max_pending = config.max_pending.unwrap_or(DEFAULT_MAX_PENDING).max(1);
        let js = jetstream::context::ContextBuilder::new()
            .timeout(config.publish_timeout.unwrap_or(DEFAULT_PUBLISH_TIMEOUT))
            .max_ack_inflight(max_pending)
            .build(client);
        if let Target::Fixed(subject) = &target {
            js.stream_by_subject(subject.as_str()).await.map_err(|e| {
                jetstream_error(
                    &name,
                    "find a stream for the subject",
                    e,
                    "create a JetStream stream whose subjects include it (nats stream add), or check the subject",
                )
            })?;
        }
        Ok(NatsSink {
            js,
            outage: Outage::new(CONNECTOR, name.clone()),
            subject_text: config.subject.clone(),
            name,
            target,
            buffer: BytesMut::with_capacity(64 * 1024),
            pending: VecDeque::new(),
            failed: Vec::new(),
            max_pending,
            retry_for: config.retry_for.unwrap_or(DEFAULT_RETRY_FOR),
        })
    }

    fn subject_for(&self, payload: &[u8]) -> Result<Subject, ConnectorError> {
        match &self.target {
            Target::Fixed(subject) => Ok(subject.clone()),
            Target::Template(template) => {
                let bad = |problem: String| {
                    jetstream_error(
                        &self.name,
                        "build the subject of a message",
                        problem,
                        "make every output carry the fields the subject template names, or use a fixed subject",
                    )
                };
                let object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(payload)
                        .map_err(|_| bad("the message is not a JSON object".to_string()))?;
                let text = template.render(&object).map_err(bad)?;
                Subject::validated(&text)
                    .map_err(|_| {
                        bad(format!(
                            "`{text}` is not a valid subject (empty tokens or whitespace)"
                        ))
                    })
                    .and_then(|s| {
                        if s.split('.').any(|t| t == "*" || t == ">") {
                            Err(bad(format!("`{text}` contains a wildcard")))
                        } else {
                            Ok(s)
                        }
                    })
            }
        }
    }

    /// Waits for the oldest publish's acknowledgement.
    async fn confirm_oldest(&mut self) -> Result<(), ConnectorError> {
        let Some(mut pending) = self.pending.pop_front() else {
            return Ok(());
        };
        let Some(ack) = pending.ack.take() else {
            return Ok(());
        };
        match ack.await {
            Ok(_) => Ok(()),
            Err(e) => self.on_publish_error(pending.subject, pending.payload, e),
        }
    }

    /// Sorts a failed publish: kept for a retry, or an error of the run.
    fn on_publish_error(
        &mut self,
        subject: Subject,
        payload: Bytes,
        error: async_nats::jetstream::context::PublishError,
    ) -> Result<(), ConnectorError> {
        match error.kind() {
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::StreamNotFound
            | PublishErrorKind::MaxAckPending => {
                self.failed
                    .push((subject, payload, error.kind(), error.to_string()));
                Ok(())
            }
            PublishErrorKind::MaxPayloadExceeded => Err(jetstream_error(
                &self.name,
                "publish",
                error,
                "the message is larger than the server's max_payload: raise it on the server or make outputs smaller",
            )),
            _ => Err(jetstream_error(
                &self.name,
                "publish",
                error,
                "the stream refused the message (limits such as max_msgs with discard new, or a sealed stream); check the stream's settings",
            )),
        }
    }

    async fn publish(&mut self, subject: Subject, payload: Bytes) -> Result<(), ConnectorError> {
        while self.pending.len() >= self.max_pending {
            self.confirm_oldest().await?;
        }
        match self.js.publish(subject.clone(), payload.clone()).await {
            Ok(ack) => {
                self.pending.push_back(Pending {
                    subject,
                    payload,
                    ack: Some(ack),
                });
                Ok(())
            }
            Err(e) => self.on_publish_error(subject, payload, e),
        }
    }
}

impl<T: Serialize + Sync> Sink<T> for NatsSink {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        for item in items {
            if self.buffer.capacity() - self.buffer.len() < 4096 {
                self.buffer.reserve(64 * 1024);
            }
            if let Err(source) = serde_json::to_writer((&mut self.buffer).writer(), item) {
                self.buffer.clear();
                return Err(ConnectorError::Encode {
                    target: self.name.clone(),
                    source,
                });
            }
            let payload = self.buffer.split().freeze();
            let subject = self.subject_for(&payload)?;
            self.publish(subject, payload).await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        while !self.pending.is_empty() {
            self.confirm_oldest().await?;
        }
        while !self.failed.is_empty() {
            let (_, _, kind, problem) = &self.failed[0];
            let delay = if *kind == PublishErrorKind::StreamNotFound {
                self.outage.failed("publish", problem)
            } else {
                // A lost connection, which the client logs itself.
                self.outage.failed_quietly("publish", problem)
            };
            if self.outage.elapsed() >= self.retry_for {
                let count = self.failed.len();
                let problem = problem.clone();
                self.failed.clear();
                return Err(jetstream_error(
                    &self.name,
                    "publish",
                    format!(
                        "{count} message(s) still unconfirmed after retrying for {:?}: {problem}",
                        self.retry_for
                    ),
                    format!(
                        "check that the server is up and a stream captures `{}`; the source will deliver the unconfirmed messages again",
                        self.subject_text
                    ),
                ));
            }
            tokio::time::sleep(delay).await;
            for (subject, payload, _, _) in std::mem::take(&mut self.failed) {
                self.publish(subject, payload).await?;
            }
            while !self.pending.is_empty() {
                self.confirm_oldest().await?;
            }
        }
        self.outage.recovered();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_sequence_in_both_ack_subject_forms() {
        assert_eq!(
            stream_sequence("$JS.ACK.ORDERS.billing.1.42.7.1700000000000000000.3"),
            Some(42)
        );
        assert_eq!(
            stream_sequence("$JS.ACK.hub.ACCHASH.ORDERS.billing.2.43.8.1700000000000000000.0.tok"),
            Some(43)
        );
        assert_eq!(stream_sequence("_INBOX.x"), None);
    }

    #[test]
    fn config_reads_durations_and_rejects_unknown_keys() {
        let c: NatsSourceConfig = serde_json::from_value(serde_json::json!({
            "stream": "S", "durable": "d", "ack_wait": "2s", "max_wait": "150ms"
        }))
        .unwrap();
        assert_eq!(c.ack_wait, Some(Duration::from_secs(2)));
        assert_eq!(c.url, DEFAULT_URL);
        let e = serde_json::from_value::<NatsSourceConfig>(serde_json::json!({
            "stream": "S", "durable": "d", "ackwait": "2s"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
