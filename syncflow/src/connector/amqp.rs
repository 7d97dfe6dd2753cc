//! RabbitMQ (AMQP 0-9-1): [`AmqpSource`] consumes a queue with manual
//! acknowledgements and a prefetch window; [`AmqpSink`] publishes persistent
//! messages with publisher confirms.
//!
//! Delivery is at least once end to end. The source acknowledges a delivery
//! to the broker only after the runtime acknowledged its batch, that is after
//! every sink confirmed the outputs made from it; deliveries not acknowledged
//! when a connection or the process ends are delivered again by the broker
//! (to this consumer after a reconnect, or to another consumer of the
//! queue). The sink's [`Sink::flush`] returns only once the broker confirmed
//! every message published since the last flush.
//!
//! Several processes consuming the same queue share its messages (competing
//! consumers): that is how a flow is scaled out.
//!
//! A lost connection is reopened with a capped, jittered exponential backoff;
//! one warning is logged per outage. Built without TLS: `amqps://` URLs are
//! refused with an explanation.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_core::Stream;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use lapin::{Confirmation, PublisherConfirm};
use serde::{Deserialize, Serialize};

use super::netutil::{Outage, redact_url as redact};

/// The longest pause between reconnection attempts by default.
const DEFAULT_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);
use super::{Acker, Batch, ConnectorError, DecodeFn, Read, Sink, Source};

/// The broker of a default RabbitMQ installation, as the `guest` user.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Deliveries the broker sends ahead of acknowledgements, by default.
pub const DEFAULT_PREFETCH: u16 = 1000;
/// How long a read waits for a first delivery before it returns idle.
pub const DEFAULT_IDLE: Duration = Duration::from_millis(200);

const CONNECTOR: &str = "amqp";

fn default_url() -> String {
    DEFAULT_URL.to_string()
}

fn default_true() -> bool {
    true
}

fn default_prefetch() -> u16 {
    DEFAULT_PREFETCH
}

/// Where an [`AmqpSource`] consumes from (the `amqp` source of a flow file).
///
/// ```
/// use syncflow::connector::amqp::AmqpSourceConfig;
///
/// let config = AmqpSourceConfig::new("orders")
///     .bind("amq.topic", "orders.#")
///     .prefetch(500);
/// assert_eq!(config.queue, "orders");
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    /// The broker: `amqp://user:password@host:port/vhost` (the default vhost
    /// `/` is written `%2f`). Default `amqp://guest:guest@127.0.0.1:5672/%2f`.
    /// The password is never logged.
    #[serde(default = "default_url")]
    pub url: String,
    /// The queue to consume.
    pub queue: String,
    /// Declare the queue (durable) if it does not exist (default true). With
    /// `false`, the queue must exist.
    #[serde(default = "default_true")]
    pub declare: bool,
    /// Bind the queue to this exchange (which must exist, e.g. `amq.topic`).
    /// Without it, the queue receives what is published to it directly.
    #[serde(default)]
    pub exchange: Option<String>,
    /// The binding's routing key or pattern (default: the queue's name, what
    /// a direct exchange routes by). Only with `exchange`.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// Deliveries the broker sends ahead of acknowledgements (`basic.qos`
    /// prefetch count; default 1000). At most this many messages are in the
    /// flow at once; keep it at least the flow's batch size for throughput,
    /// and lower it to share a queue more evenly between processes.
    #[serde(default = "default_prefetch")]
    #[schemars(range(min = 1))]
    pub prefetch: u16,
    /// How long a read waits for a first delivery before it hands over
    /// nothing (default `200ms`; keeps shutdown prompt).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub idle: Option<Duration>,
    /// The longest pause between reconnection attempts (default `10s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub reconnect_max: Option<Duration>,
}

impl AmqpSourceConfig {
    /// Consumes `queue` on the default broker ([`DEFAULT_URL`]), declaring it
    /// if missing, with the default prefetch.
    pub fn new(queue: impl Into<String>) -> Self {
        AmqpSourceConfig {
            url: default_url(),
            queue: queue.into(),
            declare: true,
            exchange: None,
            routing_key: None,
            prefetch: DEFAULT_PREFETCH,
            idle: None,
            reconnect_max: None,
        }
    }

    /// The broker's URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Whether to declare the queue (durable) if it is missing.
    pub fn declare(mut self, declare: bool) -> Self {
        self.declare = declare;
        self
    }

    /// Binds the queue to `exchange` with `routing_key`.
    pub fn bind(mut self, exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        self.exchange = Some(exchange.into());
        self.routing_key = Some(routing_key.into());
        self
    }

    /// The prefetch count (deliveries sent ahead of acknowledgements).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// How long a read waits before it returns idle.
    pub fn idle(mut self, idle: Duration) -> Self {
        self.idle = Some(idle);
        self
    }

    /// The longest pause between reconnection attempts.
    pub fn reconnect_max(mut self, max: Duration) -> Self {
        self.reconnect_max = Some(max);
        self
    }

    fn target(&self) -> String {
        format!("queue `{}` at {}", self.queue, redact(&self.url))
    }
}

/// Where an [`AmqpSink`] publishes (the `amqp` sink of a flow file).
///
/// ```
/// use syncflow::connector::amqp::AmqpSinkConfig;
///
/// // To a queue, through the default exchange:
/// let to_queue = AmqpSinkConfig::new("", "charges");
/// // To a topic exchange:
/// let to_topic = AmqpSinkConfig::new("amq.topic", "charges.eu");
/// # let _ = (to_queue, to_topic);
/// ```
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// The broker: `amqp://user:password@host:port/vhost`. Default
    /// `amqp://guest:guest@127.0.0.1:5672/%2f`. The password is never logged.
    #[serde(default = "default_url")]
    pub url: String,
    /// The exchange to publish to (default `""`, the default exchange, which
    /// routes a message to the queue named by its routing key).
    #[serde(default)]
    pub exchange: String,
    /// The routing key of every message (with the default exchange: the
    /// queue's name).
    pub routing_key: String,
    /// Declare this durable queue before publishing (useful with the default
    /// exchange, so that the first messages are not dropped for lack of a
    /// queue). Default: none.
    #[serde(default)]
    pub declare_queue: Option<String>,
    /// Fail the flush when a message cannot be routed to any queue (default
    /// true): the broker would otherwise confirm and drop it.
    #[serde(default = "default_true")]
    pub mandatory: bool,
    /// The longest pause between reconnection attempts (default `10s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub reconnect_max: Option<Duration>,
}

impl AmqpSinkConfig {
    /// Publishes to `exchange` with `routing_key` on the default broker.
    pub fn new(exchange: impl Into<String>, routing_key: impl Into<String>) -> Self {
        AmqpSinkConfig {
            url: default_url(),
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            declare_queue: None,
            mandatory: true,
            reconnect_max: None,
        }
    }

    /// The broker's URL.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Declares this durable queue before publishing.
    pub fn declare_queue(mut self, queue: impl Into<String>) -> Self {
        self.declare_queue = Some(queue.into());
        self
    }

    /// Whether an unroutable message fails the flush.
    pub fn mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// The longest pause between reconnection attempts.
    pub fn reconnect_max(mut self, max: Duration) -> Self {
        self.reconnect_max = Some(max);
        self
    }

    fn target(&self) -> String {
        let exchange = if self.exchange.is_empty() {
            "(default)"
        } else {
            &self.exchange
        };
        format!(
            "exchange `{exchange}` routing key `{}` at {}",
            self.routing_key,
            redact(&self.url)
        )
    }
}

/// Opens a connection and a channel, with a clear error for what failed.
async fn open_channel(url: &str, target: &str) -> Result<(Connection, Channel), ConnectorError> {
    if url.starts_with("amqps:") {
        return Err(ConnectorError::server(
            CONNECTOR,
            target,
            "connect",
            "TLS (amqps://) is not built into this syncflow",
            "use amqp:// on a trusted network, or a TLS-terminating proxy in front of the broker",
        ));
    }
    let properties = ConnectionProperties::default().with_connection_name("syncflow".into());
    let connection = Connection::connect(url, properties).await.map_err(|e| {
        ConnectorError::server(
            CONNECTOR,
            target,
            "connect",
            e,
            "check that RabbitMQ runs at that address and that the user, password and vhost (`%2f` for `/`) are right",
        )
    })?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| ConnectorError::server(CONNECTOR, target, "open a channel", e, ""))?;
    Ok((connection, channel))
}

// ---------------------------------------------------------------- source ---

/// A live consumer: the connection, its channel and the delivery stream.
struct Session {
    _connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

async fn open_session(config: AmqpSourceConfig, target: String) -> Result<Session, ConnectorError> {
    let (connection, channel) = open_channel(&config.url, &target).await?;
    channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| {
            ConnectorError::server(CONNECTOR, &target, "set the prefetch (basic.qos)", e, "")
        })?;
    if config.declare {
        channel
            .queue_declare(
                config.queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                ConnectorError::server(
                    CONNECTOR,
                    &target,
                    "declare the queue",
                    e,
                    "a queue that exists with other settings (not durable, other arguments) cannot be redeclared: set `declare: false` to use it as it is",
                )
            })?;
    }
    if let Some(exchange) = &config.exchange {
        let key = config.routing_key.as_deref().unwrap_or(&config.queue);
        channel
            .queue_bind(
                config.queue.as_str().into(),
                exchange.as_str().into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                ConnectorError::server(
                    CONNECTOR,
                    &target,
                    "bind the queue",
                    format!("to exchange `{exchange}` with key `{key}`: {e}"),
                    "the exchange must exist: declare it on the broker, or use a built-in one such as `amq.topic`",
                )
            })?;
    }
    let consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            ConnectorError::server(
                CONNECTOR,
                &target,
                "consume",
                e,
                "check that the queue exists (or set `declare: true`) and that the user may read it",
            )
        })?;
    Ok(Session {
        _connection: connection,
        channel,
        consumer,
    })
}

/// The channel the acknowledgements go to: that of the current session.
#[derive(Default)]
struct Current {
    /// Counts sessions: a delivery tag means something only on its channel.
    generation: u64,
    channel: Option<Channel>,
}

type SessionTask = tokio::task::JoinHandle<Result<Session, ConnectorError>>;

/// Consumes a RabbitMQ queue with manual acknowledgements.
///
/// Each read hands over the deliveries that are ready (up to the batch
/// size), waiting up to [`AmqpSourceConfig::idle`] for the first one. The
/// broker sends at most [`AmqpSourceConfig::prefetch`] deliveries ahead of
/// acknowledgements. A delivery's position is its delivery tag (counted
/// from 1 on each connection).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use syncflow::connector::amqp::{AmqpSource, AmqpSourceConfig};
/// use syncflow::connector::serde_decode;
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let source =
///     AmqpSource::<Order>::connect(&AmqpSourceConfig::new("orders"), serde_decode).await?;
/// # let _ = source; Ok(()) }
/// ```
pub struct AmqpSource<T> {
    config: AmqpSourceConfig,
    name: Arc<str>,
    target: String,
    decode: DecodeFn<T>,
    idle: Duration,
    session: Option<Session>,
    /// The session should be replaced once the batch being read is handed over.
    broken: bool,
    reconnecting: Option<SessionTask>,
    current: Arc<Mutex<Current>>,
    outage: Outage,
}

impl<T> std::fmt::Debug for AmqpSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSource")
            .field("target", &self.target)
            .field("connected", &self.session.is_some())
            .finish()
    }
}

impl<T: Send + 'static> AmqpSource<T> {
    /// Connects, declares and binds the queue as configured, and starts
    /// consuming; records are decoded with `decode` (use
    /// [`serde_decode`](super::serde_decode) for any `T: Deserialize`).
    ///
    /// Fails if the first connection cannot be made (wrong address, user or
    /// queue settings); later connection losses are retried.
    pub async fn connect(
        config: &AmqpSourceConfig,
        decode: DecodeFn<T>,
    ) -> Result<Self, ConnectorError> {
        let target = config.target();
        if config.prefetch == 0 {
            return Err(ConnectorError::server(
                CONNECTOR,
                target,
                "consume",
                "`prefetch` is 0, which RabbitMQ reads as no limit at all",
                "set `prefetch` to at least 1 (the default is 1000)",
            ));
        }
        let session = open_session(config.clone(), target.clone()).await?;
        let current = Arc::new(Mutex::new(Current {
            generation: 1,
            channel: Some(session.channel.clone()),
        }));
        Ok(AmqpSource {
            name: Arc::from(format!("amqp:{}", config.queue)),
            idle: config.idle.unwrap_or(DEFAULT_IDLE),
            outage: Outage::new(CONNECTOR, target.clone())
                .max_backoff(config.reconnect_max.unwrap_or(DEFAULT_MAX_BACKOFF)),
            config: config.clone(),
            target,
            decode,
            session: Some(session),
            broken: false,
            reconnecting: None,
            current,
        })
    }

    /// Whether the source is connected to the broker now.
    pub fn is_connected(&self) -> bool {
        self.session.is_some() && !self.broken
    }

    fn lose_session(&mut self, action: &str, error: &dyn std::fmt::Display) {
        self.session = None;
        self.broken = false;
        if let Ok(mut current) = self.current.lock() {
            current.channel = None;
        }
        let delay = self.outage.failed(action, error);
        self.start_reconnect(delay);
    }

    fn start_reconnect(&mut self, delay: Duration) {
        let (config, target) = (self.config.clone(), self.target.clone());
        self.reconnecting = Some(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            open_session(config, target).await
        }));
    }

    /// Waits (up to the idle time) for the reconnection in progress; returns
    /// whether a session is ready.
    async fn reconnect(&mut self) -> bool {
        let Some(task) = self.reconnecting.as_mut() else {
            let delay = self.outage.failed("consume", &"not connected");
            self.start_reconnect(delay);
            return false;
        };
        let Ok(joined) = tokio::time::timeout(self.idle, task).await else {
            return false;
        };
        self.reconnecting = None;
        match joined {
            Ok(Ok(session)) => {
                if let Ok(mut current) = self.current.lock() {
                    current.generation += 1;
                    current.channel = Some(session.channel.clone());
                }
                self.session = Some(session);
                self.outage.recovered();
                true
            }
            Ok(Err(error)) => {
                let delay = self.outage.failed("reconnect", &error);
                self.start_reconnect(delay);
                false
            }
            Err(join_error) => {
                let delay = self.outage.failed("reconnect", &join_error);
                self.start_reconnect(delay);
                false
            }
        }
    }
}

impl<T> Drop for AmqpSource<T> {
    fn drop(&mut self) {
        if let Some(task) = self.reconnecting.take() {
            task.abort();
        }
    }
}

/// Acknowledges the deliveries of an [`AmqpSource`] batch: all those of its
/// channel up to this delivery tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmqpAck {
    /// The connection (session) the deliveries came on.
    pub generation: u64,
    /// The batch's last delivery tag.
    pub delivery_tag: u64,
}

/// Sends the acknowledgements of an [`AmqpSource`] to the broker.
pub struct AmqpAcker {
    current: Arc<Mutex<Current>>,
    pending: Option<AmqpAck>,
    target: String,
}

impl std::fmt::Debug for AmqpAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpAcker")
            .field("target", &self.target)
            .field("pending", &self.pending)
            .finish()
    }
}

impl Acker for AmqpAcker {
    type Ack = AmqpAck;

    fn ack(&mut self, ack: AmqpAck) {
        // Acknowledgements come in read order; with `multiple`, the last
        // one covers those before it on the same channel.
        self.pending = Some(ack);
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        let Some(ack) = self.pending.take() else {
            return Ok(());
        };
        let channel = match self.current.lock() {
            Ok(current) if current.generation == ack.generation => current.channel.clone(),
            _ => None,
        };
        let Some(channel) = channel else {
            // The channel the deliveries came on is closed: the broker has
            // put them back in the queue already, and delivers them again.
            tracing::debug!(
                target = %self.target,
                delivery_tag = ack.delivery_tag,
                "acknowledgement dropped: its connection is gone and its deliveries come again"
            );
            return Ok(());
        };
        if let Err(error) = channel
            .basic_ack(ack.delivery_tag, BasicAckOptions { multiple: true })
            .await
        {
            tracing::debug!(
                target = %self.target,
                delivery_tag = ack.delivery_tag,
                %error,
                "acknowledgement not sent: its connection failed and its deliveries come again"
            );
        }
        Ok(())
    }
}

/// The next delivery if one is ready now, without waiting.
// Short-lived, on the stack: boxing the delivery would allocate per message.
#[allow(clippy::large_enum_variant)]
enum Next {
    Delivery(lapin::message::Delivery),
    NotReady,
    Failed(String),
}

async fn next_ready(consumer: &mut Consumer) -> Next {
    poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *consumer).poll_next(cx) {
            Poll::Pending => Next::NotReady,
            Poll::Ready(Some(Ok(delivery))) => Next::Delivery(delivery),
            Poll::Ready(Some(Err(e))) => Next::Failed(e.to_string()),
            Poll::Ready(None) => Next::Failed("the broker cancelled the consumer".into()),
        })
    })
    .await
}

async fn next_within(consumer: &mut Consumer, wait: Duration) -> Next {
    let next = poll_fn(|cx| Pin::new(&mut *consumer).poll_next(cx));
    match tokio::time::timeout(wait, next).await {
        Err(_elapsed) => Next::NotReady,
        Ok(Some(Ok(delivery))) => Next::Delivery(delivery),
        Ok(Some(Err(e))) => Next::Failed(e.to_string()),
        Ok(None) => {
            Next::Failed("the broker cancelled the consumer (was the queue deleted?)".into())
        }
    }
}

impl<T: Send + 'static> Source for AmqpSource<T> {
    type Item = T;
    type Ack = AmqpAck;
    type Acker = AmqpAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> AmqpAcker {
        AmqpAcker {
            current: self.current.clone(),
            pending: None,
            target: self.target.clone(),
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<AmqpAck>, ConnectorError> {
        if self.broken {
            self.lose_session("consume", &"the connection failed");
        }
        if self.session.is_none() && !self.reconnect().await {
            return Ok(Read::Idle);
        }
        let Some(session) = self.session.as_mut() else {
            return Ok(Read::Idle);
        };
        let mut last_tag = None;
        let mut failure = None;
        let mut next = next_within(&mut session.consumer, self.idle).await;
        loop {
            match next {
                Next::Delivery(delivery) => {
                    let payload = (self.decode)(&delivery.data);
                    batch.push(delivery.delivery_tag, &delivery.data, payload);
                    last_tag = Some(delivery.delivery_tag);
                }
                Next::NotReady => break,
                Next::Failed(error) => {
                    failure = Some(error);
                    break;
                }
            }
            if batch.len() >= max {
                break;
            }
            next = next_ready(&mut session.consumer).await;
        }
        let generation = self.current.lock().map(|c| c.generation).unwrap_or(0);
        if let Some(error) = failure {
            if last_tag.is_some() {
                // Hand over what arrived; reconnect on the next read.
                self.broken = true;
            } else {
                self.lose_session("consume", &error);
            }
        }
        Ok(match last_tag {
            Some(delivery_tag) => Read::Batch(AmqpAck {
                generation,
                delivery_tag,
            }),
            None => Read::Idle,
        })
    }
}

// ------------------------------------------------------------------ sink ---

/// Publishes to a RabbitMQ exchange with publisher confirms.
///
/// Every output is encoded as JSON and published as a persistent message
/// (`delivery_mode` 2, `content-type: application/json`).
/// [`Sink::flush`] waits until the broker confirmed every message published
/// since the last flush, and fails on a negative confirmation or (with
/// [`AmqpSinkConfig::mandatory`]) an unroutable message. After a lost
/// connection, the messages not yet confirmed are published again on the
/// new one: a message may be delivered twice, never lost.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use syncflow::connector::amqp::{AmqpSink, AmqpSinkConfig};
///
/// let sink = AmqpSink::connect(&AmqpSinkConfig::new("", "charges").declare_queue("charges")).await?;
/// # let _ = sink; Ok(()) }
/// ```
pub struct AmqpSink {
    config: AmqpSinkConfig,
    target: String,
    connection: Option<(Connection, Channel)>,
    /// JSON of every message since the last flush, back to back.
    buffer: Vec<u8>,
    /// Where each message lies in `buffer`.
    messages: Vec<(usize, usize)>,
    /// The confirmations of the messages published on the current channel.
    confirms: Vec<PublisherConfirm>,
    outage: Outage,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("target", &self.target)
            .field("unconfirmed", &self.messages.len())
            .finish()
    }
}

async fn open_publisher(
    config: &AmqpSinkConfig,
    target: &str,
) -> Result<(Connection, Channel), ConnectorError> {
    let (connection, channel) = open_channel(&config.url, target).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| {
            ConnectorError::server(CONNECTOR, target, "enable publisher confirms", e, "")
        })?;
    if let Some(queue) = &config.declare_queue {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                ConnectorError::server(
                    CONNECTOR,
                    target,
                    "declare the queue",
                    format!("`{queue}`: {e}"),
                    "a queue that exists with other settings cannot be redeclared: remove `declare_queue`",
                )
            })?;
    }
    Ok((connection, channel))
}

impl AmqpSink {
    /// Connects and enables publisher confirms (declaring
    /// [`AmqpSinkConfig::declare_queue`] if set). Fails if the first
    /// connection cannot be made; later losses are retried.
    pub async fn connect(config: &AmqpSinkConfig) -> Result<Self, ConnectorError> {
        let target = config.target();
        let connection = open_publisher(config, &target).await?;
        Ok(AmqpSink {
            outage: Outage::new(CONNECTOR, target.clone())
                .max_backoff(config.reconnect_max.unwrap_or(DEFAULT_MAX_BACKOFF)),
            config: config.clone(),
            target,
            connection: Some(connection),
            buffer: Vec::with_capacity(64 * 1024),
            messages: Vec::new(),
            confirms: Vec::new(),
        })
    }

    async fn publish(
        channel: &Channel,
        config: &AmqpSinkConfig,
        payload: &[u8],
    ) -> lapin::Result<PublisherConfirm> {
        channel
            .basic_publish(
                config.exchange.as_str().into(),
                config.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: config.mandatory,
                    ..BasicPublishOptions::default()
                },
                payload,
                BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into()),
            )
            .await
    }

    /// Publishes the messages `from..` of the buffer on the current channel.
    /// Returns false if the connection failed.
    async fn publish_from(&mut self, from: usize) -> bool {
        let Some((_, channel)) = &self.connection else {
            return false;
        };
        for &(start, end) in &self.messages[from..] {
            match Self::publish(channel, &self.config, &self.buffer[start..end]).await {
                Ok(confirm) => self.confirms.push(confirm),
                Err(error) => {
                    self.connection = None;
                    self.outage.failed("publish", &error);
                    return false;
                }
            }
        }
        true
    }

    /// Reconnects (waiting out the backoff) and publishes every unconfirmed
    /// message again.
    async fn republish(&mut self) {
        loop {
            if self.connection.is_none() {
                match open_publisher(&self.config, &self.target).await {
                    Ok(connection) => {
                        self.connection = Some(connection);
                        self.outage.recovered();
                    }
                    Err(error) => {
                        let delay = self.outage.failed("reconnect", &error);
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            self.confirms.clear();
            if self.publish_from(0).await {
                return;
            }
        }
    }
}

impl<T: Serialize + Sync> Sink<T> for AmqpSink {
    fn name(&self) -> String {
        format!("amqp {}", self.target)
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        let first = self.messages.len();
        for item in items {
            let start = self.buffer.len();
            serde_json::to_writer(&mut self.buffer, item).map_err(|source| {
                ConnectorError::Encode {
                    target: self.target.clone(),
                    source,
                }
            })?;
            self.messages.push((start, self.buffer.len()));
        }
        if self.connection.is_some() && self.confirms.len() == first {
            // Publish now; a failure is handled by the flush, which
            // reconnects and publishes everything unconfirmed again.
            self.publish_from(first).await;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        'wait: loop {
            if self.connection.is_none() || self.confirms.len() != self.messages.len() {
                self.republish().await;
            }
            for confirm in std::mem::take(&mut self.confirms) {
                match confirm.await {
                    Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
                    Ok(Confirmation::Ack(Some(returned))) => {
                        return Err(ConnectorError::server(
                            CONNECTOR,
                            &self.target,
                            "route a message",
                            format!(
                                "the broker returned it: {} {}",
                                returned.reply_code, returned.reply_text
                            ),
                            "no queue is bound to the exchange with this routing key: declare and bind one (or set `declare_queue`), or set `mandatory: false` to let the broker drop such messages",
                        ));
                    }
                    Ok(Confirmation::Nack(_)) => {
                        return Err(ConnectorError::server(
                            CONNECTOR,
                            &self.target,
                            "publish",
                            "the broker refused a message (negative publisher confirm)",
                            "check the broker's logs and the queue's limits (max-length with overflow reject-publish, disk or memory alarms)",
                        ));
                    }
                    Err(error) => {
                        // The connection failed before the confirmation:
                        // publish everything unconfirmed again.
                        self.connection = None;
                        self.outage.failed("confirm a publish", &error);
                        continue 'wait;
                    }
                }
            }
            break;
        }
        self.buffer.clear();
        self.messages.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_read_from_yaml_with_defaults() {
        let source: AmqpSourceConfig = serde_saphyr::from_str(
            "queue: orders\nexchange: amq.topic\nrouting_key: 'shop.#'\nidle: 500ms\n",
        )
        .unwrap();
        assert_eq!(source.url, DEFAULT_URL);
        assert_eq!(source.prefetch, DEFAULT_PREFETCH);
        assert!(source.declare);
        assert_eq!(source.idle, Some(Duration::from_millis(500)));
        assert_eq!(source.routing_key.as_deref(), Some("shop.#"));
        let sink: AmqpSinkConfig = serde_saphyr::from_str("routing_key: charges\n").unwrap();
        assert_eq!((sink.exchange.as_str(), sink.mandatory), ("", true));
        let unknown = serde_saphyr::from_str::<AmqpSourceConfig>("queue: q\nprefech: 5\n");
        assert!(unknown.unwrap_err().to_string().contains("prefech"));
        let bare = serde_saphyr::from_str::<AmqpSourceConfig>("queue: q\nidle: 200\n");
        assert!(bare.unwrap_err().to_string().contains("no unit"));
    }

    #[test]
    fn targets_never_show_the_password() {
        let config = AmqpSourceConfig::new("q").url("amqp://u:hunter2@h:5672/%2f");
        assert_eq!(config.target(), "queue `q` at amqp://u:***@h:5672/%2f");
        let config = AmqpSinkConfig::new("", "k").url("amqp://u:hunter2@h/%2f");
        assert!(!config.target().contains("hunter2"));
    }
}
