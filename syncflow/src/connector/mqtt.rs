//! MQTT 3.1.1 (Mosquitto and other brokers): [`MqttSource`] subscribes at
//! QoS 1 with a persistent session and acknowledges (PUBACK) a message only
//! after the runtime acknowledged it; [`MqttSink`] publishes at QoS 1 and
//! its flush waits for every PUBACK.
//!
//! # What MQTT can and cannot promise
//!
//! - **At least once, within the broker's limits.** The source's session is
//!   persistent (`clean_session = false`, a fixed client id), so messages
//!   that arrive while the flow is down are queued by the broker and
//!   messages received but not acknowledged are sent again after a
//!   reconnect. But the broker only queues messages for a subscription that
//!   exists: messages published before the source first subscribed are not
//!   delivered, and a broker bounds its queues (Mosquitto's
//!   `max_queued_messages`, 1000 by default, *drops* what exceeds it,
//!   including while the client's in-flight window is full).
//! - **The in-flight window is the broker's.** A broker sends a client at
//!   most so many unacknowledged QoS 1 messages (Mosquitto's
//!   `max_inflight_messages`, 20 by default); a batch is therefore never
//!   bigger than that window. Raise it on the broker for throughput.
//! - **No consumer groups in MQTT 3.1.1.** Two clients subscribing to the
//!   same topic each get every message. To share the work, subscribe to a
//!   *shared subscription*, `$share/<group>/<topic filter>` (MQTT 5, and
//!   Mosquitto ≥ 1.6 for 3.1.1 clients too), with one client id per process.
//! - Two processes with the same client id take the session from each
//!   other: give every process its own.
//!
//! Built without TLS: use a TLS-terminating proxy for `mqtts`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet,
    Publish, QoS, SubscribeReasonCode,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::netutil::Outage;

/// The longest pause between reconnection attempts by default.
const DEFAULT_MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);
use super::{Acker, Batch, ConnectorError, DecodeFn, Read, Sink, Source};

/// The broker's host by default.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// The broker's port by default.
pub const DEFAULT_PORT: u16 = 1883;
/// How long a read waits for a first message before it returns idle.
pub const DEFAULT_IDLE: Duration = Duration::from_millis(200);
/// The largest message accepted or sent, by default.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1024 * 1024;

const CONNECTOR: &str = "mqtt";
/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn default_host() -> String {
    DEFAULT_HOST.to_string()
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

/// Where an [`MqttSource`] subscribes (the `mqtt` source of a flow file).
///
/// ```
/// use syncflow::connector::mqtt::MqttSourceConfig;
///
/// // One process:
/// let config = MqttSourceConfig::new("orders-flow", "shop/+/orders");
/// // One of several processes sharing the work:
/// let shared = MqttSourceConfig::new("orders-flow-2", "$share/orders-flow/shop/+/orders");
/// # let _ = (config, shared);
/// ```
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// The broker's host name or address (default `127.0.0.1`).
    #[serde(default = "default_host")]
    pub host: String,
    /// The broker's port (default 1883).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The client id, which names the persistent session on the broker:
    /// keep it the same across restarts (that is how messages that arrived
    /// meanwhile are found again), and different for every process.
    pub client_id: String,
    /// The topic filter to subscribe to at QoS 1 (`+` and `#` wildcards),
    /// or a shared subscription `$share/<group>/<filter>` to split the
    /// messages among the processes of a group.
    pub topic: String,
    /// User name, if the broker asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (never logged).
    #[serde(default)]
    pub password: Option<String>,
    /// Keep-alive interval (default `30s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub keep_alive: Option<Duration>,
    /// The largest message accepted, in bytes (default 1 MiB).
    #[serde(default)]
    pub max_packet_size: Option<usize>,
    /// How long a read waits for a first message before it hands over
    /// nothing (default `200ms`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub idle: Option<Duration>,
    /// The longest pause between reconnection attempts (default `10s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub reconnect_max: Option<Duration>,
}

impl std::fmt::Debug for MqttSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSourceConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("topic", &self.topic)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl MqttSourceConfig {
    /// Subscribes to `topic` on the default broker as `client_id`.
    pub fn new(client_id: impl Into<String>, topic: impl Into<String>) -> Self {
        MqttSourceConfig {
            host: default_host(),
            port: DEFAULT_PORT,
            client_id: client_id.into(),
            topic: topic.into(),
            username: None,
            password: None,
            keep_alive: None,
            max_packet_size: None,
            idle: None,
            reconnect_max: None,
        }
    }

    /// The broker's address.
    pub fn broker(mut self, host: impl Into<String>, port: u16) -> Self {
        self.host = host.into();
        self.port = port;
        self
    }

    /// User name and password.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
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
        format!(
            "topic `{}` at {}:{} as `{}`",
            self.topic, self.host, self.port, self.client_id
        )
    }
}

/// Where an [`MqttSink`] publishes (the `mqtt` sink of a flow file).
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// The broker's host name or address (default `127.0.0.1`).
    #[serde(default = "default_host")]
    pub host: String,
    /// The broker's port (default 1883).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The topic every message is published to (no wildcards).
    pub topic: String,
    /// The client id (default: `syncflow-sink-` and a random suffix). The
    /// session is persistent, so that messages not yet acknowledged are
    /// sent again after a reconnect; a fixed id reuses one session on the
    /// broker across restarts instead of leaving one per run.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Publish with the retain flag (default false).
    #[serde(default)]
    pub retain: bool,
    /// User name, if the broker asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (never logged).
    #[serde(default)]
    pub password: Option<String>,
    /// Messages published and not yet acknowledged at most (default 100).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub max_inflight: Option<u16>,
    /// Keep-alive interval (default `30s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub keep_alive: Option<Duration>,
    /// The largest message sent, in bytes (default 1 MiB).
    #[serde(default)]
    pub max_packet_size: Option<usize>,
    /// The longest pause between reconnection attempts (default `10s`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub reconnect_max: Option<Duration>,
}

impl std::fmt::Debug for MqttSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSinkConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("topic", &self.topic)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl MqttSinkConfig {
    /// Publishes to `topic` on the default broker.
    pub fn new(topic: impl Into<String>) -> Self {
        MqttSinkConfig {
            host: default_host(),
            port: DEFAULT_PORT,
            topic: topic.into(),
            client_id: None,
            retain: false,
            username: None,
            password: None,
            max_inflight: None,
            keep_alive: None,
            max_packet_size: None,
            reconnect_max: None,
        }
    }

    /// The broker's address.
    pub fn broker(mut self, host: impl Into<String>, port: u16) -> Self {
        self.host = host.into();
        self.port = port;
        self
    }

    /// A fixed client id.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// User name and password.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// The longest pause between reconnection attempts.
    pub fn reconnect_max(mut self, max: Duration) -> Self {
        self.reconnect_max = Some(max);
        self
    }

    fn target(&self) -> String {
        format!("topic `{}` at {}:{}", self.topic, self.host, self.port)
    }
}

struct Options<'a> {
    host: &'a str,
    port: u16,
    client_id: &'a str,
    username: &'a Option<String>,
    password: &'a Option<String>,
    keep_alive: Option<Duration>,
    max_packet_size: Option<usize>,
    manual_acks: bool,
    inflight: Option<u16>,
}

fn mqtt_options(o: Options<'_>) -> MqttOptions {
    let mut options = MqttOptions::new(o.client_id, o.host, o.port);
    let size = o.max_packet_size.unwrap_or(DEFAULT_MAX_PACKET_SIZE);
    options
        .set_clean_session(false)
        .set_manual_acks(o.manual_acks)
        .set_keep_alive(o.keep_alive.unwrap_or(Duration::from_secs(30)))
        .set_max_packet_size(size, size);
    if let Some(inflight) = o.inflight {
        options.set_inflight(inflight.max(1));
    }
    if let Some(user) = o.username {
        options.set_credentials(user, o.password.clone().unwrap_or_default());
    }
    options
}

/// Explains a connection error, with what to do about it.
fn connect_error(target: &str, error: &ConnectionError) -> ConnectorError {
    let hint = match error {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => "check the user name and password (and the broker's ACL)",
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId) => {
            "the broker refused the client id: use letters, digits and dashes, at most 23 characters for strict brokers"
        }
        _ => "check that the broker runs at that address (Mosquitto listens on 1883 by default)",
    };
    ConnectorError::server(CONNECTOR, target, "connect", error, hint)
}

/// Stops a connection driver when every handle on it is gone.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Says goodbye to the broker (the session stays) within a short time.
async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_millis(200), async {
            while !matches!(
                eventloop.poll().await,
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_)
            ) {}
        })
        .await;
    }
}

// ---------------------------------------------------------------- source ---

type Message = (u64, Publish);

/// Subscribes to an MQTT topic at QoS 1 with a persistent session.
///
/// Each read hands over the messages that arrived (up to the batch size),
/// waiting up to [`MqttSourceConfig::idle`] for the first. A message's
/// position counts the messages this source received, from 1. See the
/// [module documentation](self) for what MQTT can and cannot promise.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use syncflow::connector::mqtt::{MqttSource, MqttSourceConfig};
/// use syncflow::connector::serde_decode;
///
/// #[derive(serde::Deserialize)]
/// struct Reading { sensor: String, value: f64 }
///
/// let config = MqttSourceConfig::new("readings-flow", "sensors/+/reading");
/// let source = MqttSource::<Reading>::connect(&config, serde_decode).await?;
/// # let _ = source; Ok(()) }
/// ```
pub struct MqttSource<T> {
    name: Arc<str>,
    target: String,
    decode: DecodeFn<T>,
    idle: Duration,
    messages: mpsc::Receiver<Message>,
    /// A message of a newer connection than the last batch's: the next batch starts with it.
    carried: Option<Message>,
    client: AsyncClient,
    generation: Arc<AtomicU64>,
    position: u64,
    stop: Arc<StopOnDrop>,
}

impl<T> std::fmt::Debug for MqttSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSource")
            .field("target", &self.target)
            .field("position", &self.position)
            .finish()
    }
}

/// What the source's connection driver shares with the source.
struct SourceDriver {
    client: AsyncClient,
    eventloop: EventLoop,
    topic: String,
    target: String,
    messages: mpsc::Sender<Message>,
    generation: Arc<AtomicU64>,
    outage: Outage,
    stop: CancellationToken,
}

impl SourceDriver {
    /// Polls the connection until stopped: subscribes on every new session,
    /// forwards messages, reconnects with backoff. `ready` learns whether the
    /// first connection and subscription worked.
    async fn run(mut self, ready: oneshot::Sender<Result<(), ConnectorError>>) {
        let mut ready = Some(ready);
        loop {
            let event = tokio::select! {
                () = self.stop.cancelled() => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.generation.fetch_add(1, Ordering::SeqCst);
                    self.outage.recovered();
                    if ack.session_present {
                        // The subscription is part of the session.
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(Ok(()));
                        }
                    } else if let Err(e) = self.client.try_subscribe(&self.topic, QoS::AtLeastOnce)
                    {
                        tracing::error!(target = %self.target, error = %e, "cannot subscribe");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, SubscribeReasonCode::Failure));
                    let result = if refused {
                        Err(ConnectorError::server(
                            CONNECTOR,
                            &self.target,
                            "subscribe",
                            "the broker refused the subscription",
                            "check the topic filter (and `$share/<group>/<filter>` support) and the broker's ACL",
                        ))
                    } else {
                        Ok(())
                    };
                    match ready.take() {
                        Some(ready) => {
                            let _ = ready.send(result);
                        }
                        None => {
                            if let Err(error) = result {
                                tracing::error!(%error, "subscription refused after a reconnect");
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let generation = self.generation.load(Ordering::SeqCst);
                    // Without a reader (the source is gone, its acker
                    // drains), the message is left unacknowledged: the
                    // broker sends it again to the next session.
                    let _ = self.messages.send((generation, publish)).await;
                }
                Ok(_) => {}
                Err(error) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(connect_error(&self.target, &error)));
                        return;
                    }
                    let delay = self.outage.failed("keep the connection", &error);
                    tokio::select! {
                        () = self.stop.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        disconnect(&self.client, &mut self.eventloop).await;
    }
}

impl<T: Send + 'static> MqttSource<T> {
    /// Connects as the configured client, subscribes at QoS 1 (unless the
    /// broker kept the session and its subscription), and decodes messages
    /// with `decode` (use [`serde_decode`](super::serde_decode) for any
    /// `T: Deserialize`).
    ///
    /// Fails if the first connection or the subscription fails; later
    /// connection losses are retried.
    pub async fn connect(
        config: &MqttSourceConfig,
        decode: DecodeFn<T>,
    ) -> Result<Self, ConnectorError> {
        let target = config.target();
        let options = mqtt_options(Options {
            host: &config.host,
            port: config.port,
            client_id: &config.client_id,
            username: &config.username,
            password: &config.password,
            keep_alive: config.keep_alive,
            max_packet_size: config.max_packet_size,
            manual_acks: true,
            inflight: None,
        });
        let (client, eventloop) = AsyncClient::new(options, 1024);
        let (tx, rx) = mpsc::channel(1024);
        let generation = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = SourceDriver {
            client: client.clone(),
            eventloop,
            topic: config.topic.clone(),
            target: target.clone(),
            messages: tx,
            generation: generation.clone(),
            outage: Outage::new(CONNECTOR, target.clone())
                .max_backoff(config.reconnect_max.unwrap_or(DEFAULT_MAX_BACKOFF)),
            stop: stop.clone(),
        };
        let stop = Arc::new(StopOnDrop(stop));
        tokio::spawn(driver.run(ready_tx));
        match tokio::time::timeout(CONNECT_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(error),
            Ok(Err(_)) | Err(_) => {
                return Err(ConnectorError::server(
                    CONNECTOR,
                    target,
                    "connect",
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                    "check that an MQTT broker (not another service) listens at that address",
                ));
            }
        }
        Ok(MqttSource {
            name: Arc::from(format!("mqtt:{}", config.topic)),
            target,
            decode,
            idle: config.idle.unwrap_or(DEFAULT_IDLE),
            messages: rx,
            carried: None,
            client,
            generation,
            position: 0,
            stop,
        })
    }
}

/// Acknowledges the messages of an [`MqttSource`] batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttAck {
    /// The connection the messages came on.
    pub generation: u64,
    /// Their packet ids (QoS 1 messages only).
    pub packet_ids: Vec<u16>,
}

/// Sends the PUBACKs of an [`MqttSource`]'s acknowledged batches.
pub struct MqttAcker {
    client: AsyncClient,
    generation: Arc<AtomicU64>,
    pending: Vec<MqttAck>,
    target: String,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for MqttAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttAcker")
            .field("target", &self.target)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Acker for MqttAcker {
    type Ack = MqttAck;

    fn ack(&mut self, ack: MqttAck) {
        self.pending.push(ack);
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        let current = self.generation.load(Ordering::SeqCst);
        let mut puback = Publish::new("", QoS::AtLeastOnce, Vec::new());
        for ack in self.pending.drain(..) {
            if ack.generation != current {
                // Received on a connection that is gone: the broker sends
                // these messages again on the new one; acknowledging the old
                // packet ids could acknowledge other messages.
                tracing::debug!(
                    target = %self.target,
                    messages = ack.packet_ids.len(),
                    "acknowledgements dropped: their connection is gone and the messages come again"
                );
                continue;
            }
            for &pkid in &ack.packet_ids {
                puback.pkid = pkid;
                if self.client.ack(&puback).await.is_err() {
                    tracing::debug!(target = %self.target, "acknowledgement not sent: the connection is closing");
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl<T: Send + 'static> Source for MqttSource<T> {
    type Item = T;
    type Ack = MqttAck;
    type Acker = MqttAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> MqttAcker {
        MqttAcker {
            client: self.client.clone(),
            generation: self.generation.clone(),
            pending: Vec::new(),
            target: self.target.clone(),
            _stop: self.stop.clone(),
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<MqttAck>, ConnectorError> {
        let first = match self.carried.take() {
            Some(message) => message,
            None => match tokio::time::timeout(self.idle, self.messages.recv()).await {
                Err(_elapsed) => return Ok(Read::Idle),
                Ok(None) => {
                    return Err(ConnectorError::server(
                        CONNECTOR,
                        &self.target,
                        "receive",
                        "the connection driver stopped",
                        "this is a syncflow bug: please report it",
                    ));
                }
                Ok(Some(message)) => message,
            },
        };
        let generation = first.0;
        let mut ack = MqttAck {
            generation,
            packet_ids: Vec::new(),
        };
        let mut next = Some(first);
        while let Some((message_generation, publish)) = next.take() {
            if message_generation != generation {
                // A batch holds the messages of one connection only: keep
                // this one for the next batch.
                self.carried = Some((message_generation, publish));
                break;
            }
            self.position += 1;
            let payload = (self.decode)(&publish.payload);
            batch.push(self.position, &publish.payload, payload);
            if publish.qos != QoS::AtMostOnce {
                ack.packet_ids.push(publish.pkid);
            }
            if batch.len() >= max {
                break;
            }
            next = self.messages.try_recv().ok();
        }
        Ok(Read::Batch(ack))
    }
}

// ------------------------------------------------------------------ sink ---

/// The sink's view of its connection: PUBACKs counted, and whether
/// unacknowledged messages were lost with a session.
#[derive(Debug, Clone, Default)]
struct Link {
    acked: u64,
    lost: Option<String>,
}

/// Publishes to an MQTT topic at QoS 1.
///
/// Every output is encoded as JSON and published; [`Sink::flush`] returns
/// once the broker acknowledged (PUBACK) every message published so far.
/// After a reconnect, messages not yet acknowledged are sent again (the
/// session is persistent); if the broker lost the session meanwhile
/// (restarted without persistence), the flush fails instead of pretending,
/// so that the source delivers those messages again on the next run.
pub struct MqttSink {
    client: AsyncClient,
    target: String,
    topic: String,
    retain: bool,
    link: watch::Receiver<Link>,
    sent: Arc<AtomicU64>,
    buffer: BytesMut,
    ends: Vec<usize>,
    _stop: StopOnDrop,
}

impl std::fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSink")
            .field("target", &self.target)
            .field("sent", &self.sent.load(Ordering::Relaxed))
            .field("acked", &self.link.borrow().acked)
            .finish()
    }
}

struct SinkDriver {
    client: AsyncClient,
    eventloop: EventLoop,
    target: String,
    link: watch::Sender<Link>,
    sent: Arc<AtomicU64>,
    outage: Outage,
    stop: CancellationToken,
}

impl SinkDriver {
    async fn run(mut self, ready: oneshot::Sender<Result<(), ConnectorError>>) {
        let mut ready = Some(ready);
        let mut sessions = 0u64;
        loop {
            let event = tokio::select! {
                () = self.stop.cancelled() => break,
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    self.link.send_modify(|link| link.acked += 1);
                }
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    sessions += 1;
                    self.outage.recovered();
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                    let unacked = self.sent.load(Ordering::SeqCst) > self.link.borrow().acked;
                    if sessions > 1 && !ack.session_present && unacked {
                        self.link.send_modify(|link| {
                            link.lost = Some(
                                "the broker lost the session (restarted without persistence?), and with it messages not yet acknowledged".into(),
                            );
                        });
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(connect_error(&self.target, &error)));
                        return;
                    }
                    let delay = self.outage.failed("keep the connection", &error);
                    tokio::select! {
                        () = self.stop.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        disconnect(&self.client, &mut self.eventloop).await;
    }
}

impl MqttSink {
    /// Connects (persistent session) and waits for the broker's answer.
    /// Fails if the first connection fails; later losses are retried.
    pub async fn connect(config: &MqttSinkConfig) -> Result<Self, ConnectorError> {
        let target = config.target();
        if config.topic.is_empty() || config.topic.contains(['+', '#']) {
            return Err(ConnectorError::server(
                CONNECTOR,
                target,
                "publish",
                "the topic is empty or has a wildcard (`+`, `#`)",
                "publish to one concrete topic, such as `shop/eu/charges`",
            ));
        }
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("syncflow-sink-{:08x}", fastrand::u32(..)));
        let options = mqtt_options(Options {
            host: &config.host,
            port: config.port,
            client_id: &client_id,
            username: &config.username,
            password: &config.password,
            keep_alive: config.keep_alive,
            max_packet_size: config.max_packet_size,
            manual_acks: false,
            inflight: Some(config.max_inflight.unwrap_or(100)),
        });
        let (client, eventloop) = AsyncClient::new(options, 1024);
        let (link_tx, link_rx) = watch::channel(Link::default());
        let sent = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        let driver = SinkDriver {
            client: client.clone(),
            eventloop,
            target: target.clone(),
            link: link_tx,
            sent: sent.clone(),
            outage: Outage::new(CONNECTOR, target.clone())
                .max_backoff(config.reconnect_max.unwrap_or(DEFAULT_MAX_BACKOFF)),
            stop: stop.clone(),
        };
        tokio::spawn(driver.run(ready_tx));
        match tokio::time::timeout(CONNECT_TIMEOUT, ready_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(error),
            Ok(Err(_)) | Err(_) => {
                return Err(ConnectorError::server(
                    CONNECTOR,
                    target,
                    "connect",
                    format!("no answer within {CONNECT_TIMEOUT:?}"),
                    "check that an MQTT broker (not another service) listens at that address",
                ));
            }
        }
        Ok(MqttSink {
            client,
            target,
            topic: config.topic.clone(),
            retain: config.retain,
            link: link_rx,
            sent,
            buffer: BytesMut::with_capacity(64 * 1024),
            ends: Vec::new(),
            _stop: StopOnDrop(stop),
        })
    }
}

impl<T: Serialize + Sync> Sink<T> for MqttSink {
    fn name(&self) -> String {
        format!("mqtt {}", self.target)
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        // One buffer for the batch, one allocation: each message is a slice of it.
        self.ends.clear();
        let mut writer = (&mut self.buffer).writer();
        for item in items {
            serde_json::to_writer(&mut writer, item).map_err(|source| ConnectorError::Encode {
                target: self.target.clone(),
                source,
            })?;
            self.ends.push(writer.get_ref().len());
        }
        let all = self.buffer.split().freeze();
        let mut start = 0;
        for &end in &self.ends {
            self.sent.fetch_add(1, Ordering::SeqCst);
            self.client
                .publish_bytes(
                    self.topic.as_str(),
                    QoS::AtLeastOnce,
                    self.retain,
                    all.slice(start..end),
                )
                .await
                .map_err(|e| {
                    ConnectorError::server(
                        CONNECTOR,
                        &self.target,
                        "publish",
                        e,
                        "the connection driver stopped: this is a syncflow bug, please report it",
                    )
                })?;
            start = end;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnectorError> {
        let sent = self.sent.load(Ordering::SeqCst);
        let link = self
            .link
            .wait_for(|link| link.acked >= sent || link.lost.is_some())
            .await
            .map_err(|_| {
                ConnectorError::server(
                    CONNECTOR,
                    &self.target,
                    "wait for acknowledgements",
                    "the connection driver stopped",
                    "this is a syncflow bug: please report it",
                )
            })?;
        if let Some(lost) = &link.lost {
            return Err(ConnectorError::server(
                CONNECTOR,
                &self.target,
                "confirm the messages published",
                lost,
                "the run stops so that the source delivers them again; enable persistence on the broker",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_read_from_yaml_and_hide_passwords() {
        let source: MqttSourceConfig = serde_saphyr::from_str(
            "client_id: flow-1\ntopic: '$share/g/sensors/#'\npassword: hunter2\nusername: u\n",
        )
        .unwrap();
        assert_eq!(
            (source.host.as_str(), source.port),
            (DEFAULT_HOST, DEFAULT_PORT)
        );
        assert!(!format!("{source:?}").contains("hunter2"));
        let sink: MqttSinkConfig =
            serde_saphyr::from_str("topic: out\npassword: hunter2\n").unwrap();
        assert!(!sink.retain);
        assert!(!format!("{sink:?}").contains("hunter2"));
        let missing = serde_saphyr::from_str::<MqttSourceConfig>("topic: t\n");
        assert!(missing.unwrap_err().to_string().contains("client_id"));
    }
}
