//! HTTP: [`HttpSource`], a webhook that answers `200` only once the
//! messages of a request went through the flow and every sink confirmed
//! them, and [`HttpSink`], which POSTs outputs to a URL with retries.
//!
//! # The webhook's answers
//!
//! | Answer | When | The client should |
//! |---|---|---|
//! | `200 {"accepted": n}` | every message of the request was delivered to every sink (or dead-lettered by a failing step) | move on |
//! | `400 {"error": ...}` | the body is not valid JSON of the flow's input type; nothing of the request was taken | fix the message |
//! | `401` | a bearer token is configured and the request lacks it | send `Authorization: Bearer <token>` |
//! | `413` | the body is larger than `max_body_bytes` | send smaller requests |
//! | `503 {"error": ...}` | the flow is shutting down or stopped before delivering | retry later (at-least-once) |
//!
//! `GET` on the webhook's path answers `200` while it accepts messages and
//! `503` once it shuts down (for load balancers' health checks).
//!
//! A request is never half taken: its messages are decoded first and
//! refused together. Delivery is at least once: a client that gets no
//! answer (timeout, `503`) and retries may deliver a message twice.
//!
//! # The sink
//!
//! [`HttpSink`] POSTs each batch as one JSON array (or each message as its
//! own request), retries connection errors, timeouts, `5xx`, `408` and `429`
//! with a capped, jittered exponential backoff, and fails at once on any
//! other `4xx` (the request itself is wrong: retrying cannot help). A
//! batch is confirmed to the source only after the server answered `2xx`.
//!
//! The client is hyper's (already in syncflow for the admin API): plain
//! `http://` only, no new dependency; put a TLS-terminating proxy in front
//! of `https://` endpoints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::netutil::redact_url as redact;
use super::{Acker, Batch, ConnectorError, DecodeFn, Read, Sink, Source};
use crate::policy::Retry;

const CONNECTOR: &str = "http";

/// The webhook's address by default: this machine only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// The largest request body accepted by default (10 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// How long a read waits for a first request before it returns idle.
pub const DEFAULT_IDLE: Duration = Duration::from_millis(200);
/// How long the sink waits for one answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries of one request in all, by default.
pub const DEFAULT_ATTEMPTS: u32 = 5;

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

fn default_path() -> String {
    "/".to_string()
}

fn default_max_body() -> usize {
    DEFAULT_MAX_BODY_BYTES
}

fn default_queue() -> usize {
    64
}

/// How a request body holds messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    /// The whole body is one message (one JSON value).
    #[default]
    Json,
    /// One message per line (JSON lines); blank lines are skipped.
    JsonLines,
    /// The body is a JSON array; each element is a message.
    JsonArray,
}

/// The webhook of an [`HttpSource`] (the `http` source of a flow file).
///
/// ```
/// use syncflow::connector::http::{BodyFormat, HttpSourceConfig};
///
/// let config = HttpSourceConfig::new("127.0.0.1:9000")
///     .path("/orders")
///     .format(BodyFormat::JsonLines)
///     .bearer_token("s3cret");
/// # let _ = config;
/// ```
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The address to listen on (default `127.0.0.1:8080`: this machine
    /// only). Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The path messages are POSTed to (default `/`).
    #[serde(default = "default_path")]
    pub path: String,
    /// How a request body holds messages: `json` (one message, the
    /// default), `json_lines` (one per line) or `json_array` (one per element).
    #[serde(default)]
    pub format: BodyFormat,
    /// Require `Authorization: Bearer <token>` on every request (recommended
    /// as soon as the address is reachable from other machines). Never logged.
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// The largest request body accepted, in bytes (default 10 MiB; larger
    /// ones get `413`).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Requests waiting for the flow at most (default 64); more wait in
    /// their connection (backpressure).
    #[serde(default = "default_queue")]
    #[schemars(range(min = 1))]
    pub queue: usize,
    /// How long a read waits for a first request before it hands over
    /// nothing (default `200ms`).
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub idle: Option<Duration>,
}

impl std::fmt::Debug for HttpSourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSourceConfig")
            .field("listen", &self.listen)
            .field("path", &self.path)
            .field("format", &self.format)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl HttpSourceConfig {
    /// A webhook on `listen` (`host:port`), path `/`, one message per request.
    pub fn new(listen: impl Into<String>) -> Self {
        HttpSourceConfig {
            listen: listen.into(),
            path: default_path(),
            format: BodyFormat::Json,
            bearer_token: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            queue: default_queue(),
            idle: None,
        }
    }

    /// The path messages are POSTed to.
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// How a request body holds messages.
    pub fn format(mut self, format: BodyFormat) -> Self {
        self.format = format;
        self
    }

    /// Requires this bearer token.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// The largest request body accepted.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }
}

/// How an [`HttpSink`] sends a batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// One request per batch; the body is a JSON array of the outputs.
    #[default]
    Array,
    /// One request per output; the body is the output's JSON.
    Each,
}

/// Where an [`HttpSink`] POSTs (the `http` sink of a flow file).
///
/// ```
/// use std::time::Duration;
/// use syncflow::connector::http::{HttpSinkConfig, SinkMode};
///
/// let config = HttpSinkConfig::new("http://127.0.0.1:9000/charges")
///     .mode(SinkMode::Each)
///     .header("x-source", "syncflow")
///     .timeout(Duration::from_secs(5));
/// # let _ = config;
/// ```
#[derive(Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// The endpoint, `http://host:port/path` (plain HTTP; no credentials in
    /// the URL: use `bearer_token` or `headers`).
    pub url: String,
    /// `array` (default: one request per batch, a JSON array) or `each`
    /// (one request per output).
    #[serde(default)]
    pub mode: SinkMode,
    /// Extra request headers (e.g. an API key). Values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Send `Authorization: Bearer <token>` (never logged).
    #[serde(default)]
    pub bearer_token: Option<String>,
    /// How long to wait for one answer (default `10s`); a timeout is retried.
    #[serde(default, with = "crate::policy::duration::option")]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Retries of connection errors, timeouts, `5xx`, `408` and `429`: the
    /// retry policy (`retry: 5` or `{attempts, initial_backoff,
    /// max_backoff, multiplier, jitter}`; default 5 attempts from `100ms`
    /// up to `10s`, full jitter).
    #[serde(default)]
    #[schemars(with = "Option<serde_json::Value>")]
    pub retry: Option<Retry>,
}

impl std::fmt::Debug for HttpSinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSinkConfig")
            .field("url", &redact(&self.url))
            .field("mode", &self.mode)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl HttpSinkConfig {
    /// POSTs batches to `url` as JSON arrays.
    pub fn new(url: impl Into<String>) -> Self {
        HttpSinkConfig {
            url: url.into(),
            mode: SinkMode::Array,
            headers: BTreeMap::new(),
            bearer_token: None,
            timeout: None,
            retry: None,
        }
    }

    /// One request per batch or per output.
    pub fn mode(mut self, mode: SinkMode) -> Self {
        self.mode = mode;
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sends this bearer token.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// How long to wait for one answer.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = Some(retry);
        self
    }
}

// ---------------------------------------------------------------- source ---

/// One accepted request: its body, its decoded messages (with where each
/// lies in the body) and who waits for the answer.
struct Accepted<T> {
    body: Bytes,
    messages: std::vec::IntoIter<(Range<usize>, T)>,
    respond: oneshot::Sender<()>,
}

struct Shared<T> {
    requests: mpsc::Sender<Accepted<T>>,
    decode: DecodeFn<T>,
    format: BodyFormat,
    token: Option<String>,
    closing: AtomicBool,
    name: String,
}

/// Cancels the server when the source and its acker are both gone.
struct StopOnDrop(CancellationToken);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A webhook: receives messages POSTed as JSON and answers each request
/// once its messages went through the flow (see the [module
/// documentation](self) for the answers).
///
/// A message's position counts the messages received, from 1; its raw
/// bytes are its JSON text in the request.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use syncflow::connector::http::{HttpSource, HttpSourceConfig};
/// use syncflow::connector::serde_decode;
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// let source = HttpSource::<Order>::connect(&HttpSourceConfig::new("127.0.0.1:9000"), serde_decode).await?;
/// println!("POST orders to http://{}/", source.local_addr());
/// # Ok(()) }
/// ```
pub struct HttpSource<T> {
    name: Arc<str>,
    addr: SocketAddr,
    shared: Arc<Shared<T>>,
    requests: mpsc::Receiver<Accepted<T>>,
    /// The request being read, when a batch filled up in its middle.
    current: Option<Accepted<T>>,
    idle: Duration,
    position: u64,
    stop: Arc<StopOnDrop>,
}

impl<T> std::fmt::Debug for HttpSource<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("addr", &self.addr)
            .field("position", &self.position)
            .finish()
    }
}

impl<T: Send + 'static> HttpSource<T> {
    /// Binds the configured address and serves the webhook; messages
    /// are decoded with `decode` (use [`serde_decode`](super::serde_decode)
    /// for any `T: Deserialize`). Fails if the address cannot be bound.
    pub async fn connect(
        config: &HttpSourceConfig,
        decode: DecodeFn<T>,
    ) -> Result<Self, ConnectorError> {
        let target = format!("webhook on {}{}", config.listen, config.path);
        if !config.path.starts_with('/') {
            return Err(ConnectorError::server(
                CONNECTOR,
                target,
                "listen",
                format!("the path `{}` does not start with `/`", config.path),
                "write the path as it appears in the URL, such as `/orders`",
            ));
        }
        if config
            .bearer_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConnectorError::server(
                CONNECTOR,
                target,
                "listen",
                "the bearer token is empty",
                "give a long random value (e.g. `openssl rand -hex 32`), or no token",
            ));
        }
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| {
                ConnectorError::server(
                    CONNECTOR,
                    &target,
                    "listen",
                    e,
                    "is another process using that port? choose another `listen` address (port 0 picks a free one)",
                )
            })?;
        let addr = listener
            .local_addr()
            .map_err(|e| ConnectorError::server(CONNECTOR, &target, "listen", e, ""))?;
        if config.bearer_token.is_none() && !addr.ip().to_canonical().is_loopback() {
            tracing::warn!(
                %addr,
                "the webhook accepts messages from other machines without a token; set `bearer_token`"
            );
        }
        let name = format!("http:{}{}", addr, config.path);
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let shared = Arc::new(Shared {
            requests: tx,
            decode,
            format: config.format,
            token: config.bearer_token.clone(),
            closing: AtomicBool::new(false),
            name: name.clone(),
        });
        let router = Router::new()
            .route(&config.path, post(receive::<T>).get(health::<T>))
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%addr, %error, "the webhook stopped serving");
            }
        });
        tracing::info!(%addr, path = %config.path, "webhook listening");
        Ok(HttpSource {
            name: Arc::from(name),
            addr,
            shared,
            requests: rx,
            current: None,
            idle: config.idle.unwrap_or(DEFAULT_IDLE),
            position: 0,
            stop: Arc::new(StopOnDrop(stop)),
        })
    }

    /// The address the webhook listens on (with the port chosen for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl<T> Drop for HttpSource<T> {
    fn drop(&mut self) {
        // New requests get 503; those queued but not read are answered 503
        // when their queue (`requests`) is dropped with this source.
        self.shared.closing.store(true, Ordering::SeqCst);
    }
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn closing(name: &str) -> Response {
    let mut response = answer(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::json!({ "error": format!("{name} is shutting down: the messages were not taken; retry later") }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

/// Compares in a time that does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health<T: Send + 'static>(State(shared): State<Arc<Shared<T>>>) -> Response {
    if shared.closing.load(Ordering::SeqCst) {
        closing(&shared.name)
    } else {
        answer(StatusCode::OK, serde_json::json!({ "status": "accepting" }))
    }
}

/// Splits and decodes a request body; the first bad message refuses it all.
fn decode_body<T>(
    body: &Bytes,
    format: BodyFormat,
    decode: DecodeFn<T>,
) -> Result<Vec<(Range<usize>, T)>, String> {
    let mut out = Vec::new();
    let mut one = |range: Range<usize>, n: usize| -> Result<(), String> {
        match decode(&body[range.clone()]) {
            Ok(item) => {
                out.push((range, item));
                Ok(())
            }
            Err(e) => Err(format!("message {n} of the request cannot be decoded: {e}")),
        }
    };
    match format {
        BodyFormat::Json => one(0..body.len(), 1)?,
        BodyFormat::JsonLines => {
            let mut start = 0;
            let mut n = 0;
            while start < body.len() {
                let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
                let mut line_end = end;
                if line_end > start && body[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                if !body[start..line_end].iter().all(u8::is_ascii_whitespace) {
                    n += 1;
                    one(start..line_end, n)?;
                }
                start = end + 1;
            }
        }
        BodyFormat::JsonArray => {
            let elements: Vec<&RawValue> = serde_json::from_slice(body)
                .map_err(|e| format!("the body is not a JSON array: {e}"))?;
            let base = body.as_ptr() as usize;
            for (i, element) in elements.iter().enumerate() {
                // A raw value borrows the body: its offset is where it lies.
                let start = element.get().as_ptr() as usize - base;
                one(start..start + element.get().len(), i + 1)?;
            }
        }
    }
    Ok(out)
}

async fn receive<T: Send + 'static>(
    State(shared): State<Arc<Shared<T>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if shared.closing.load(Ordering::SeqCst) {
        return closing(&shared.name);
    }
    if let Some(token) = &shared.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
            let mut response = answer(
                StatusCode::UNAUTHORIZED,
                serde_json::json!({ "error": "missing or wrong token: send `Authorization: Bearer <token>`" }),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let messages = match decode_body(&body, shared.format, shared.decode) {
        Ok(messages) => messages,
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                serde_json::json!({ "error": format!("{error}; nothing of this request was taken") }),
            );
        }
    };
    let count = messages.len();
    if count == 0 {
        return answer(StatusCode::OK, serde_json::json!({ "accepted": 0 }));
    }
    let (respond, delivered) = oneshot::channel();
    let accepted = Accepted {
        body,
        messages: messages.into_iter(),
        respond,
    };
    if shared.requests.send(accepted).await.is_err() {
        return closing(&shared.name);
    }
    match delivered.await {
        Ok(()) => answer(StatusCode::OK, serde_json::json!({ "accepted": count })),
        Err(_) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": format!("{} stopped before these messages were delivered; retry later", shared.name) }),
        ),
    }
}

/// Answers the requests of an [`HttpSource`] batch: the responders of the
/// requests whose last message is in it.
pub struct HttpAck {
    responders: Vec<oneshot::Sender<()>>,
}

impl std::fmt::Debug for HttpAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAck")
            .field("requests", &self.responders.len())
            .finish()
    }
}

/// Answers `200` to the requests whose messages were all acknowledged.
pub struct HttpAcker {
    pending: Vec<oneshot::Sender<()>>,
    _stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for HttpAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAcker")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Acker for HttpAcker {
    type Ack = HttpAck;

    fn ack(&mut self, ack: HttpAck) {
        self.pending.extend(ack.responders);
    }

    async fn commit(&mut self) -> Result<(), ConnectorError> {
        for respond in self.pending.drain(..) {
            // A client that hung up gets no answer; its messages went through.
            let _ = respond.send(());
        }
        Ok(())
    }
}

impl<T: Send + 'static> Source for HttpSource<T> {
    type Item = T;
    type Ack = HttpAck;
    type Acker = HttpAcker;

    fn name(&self) -> Arc<str> {
        self.name.clone()
    }

    fn acker(&mut self) -> HttpAcker {
        HttpAcker {
            pending: Vec::new(),
            _stop: self.stop.clone(),
        }
    }

    async fn read(
        &mut self,
        batch: &mut Batch<T>,
        max: usize,
    ) -> Result<Read<HttpAck>, ConnectorError> {
        let mut request = match self.current.take() {
            Some(request) => request,
            None => match tokio::time::timeout(self.idle, self.requests.recv()).await {
                Ok(Some(request)) => request,
                // `None` cannot happen while `self.shared` holds the sender.
                Err(_) | Ok(None) => return Ok(Read::Idle),
            },
        };
        let mut responders = Vec::new();
        loop {
            for (range, item) in request.messages.by_ref() {
                self.position += 1;
                batch.push(self.position, &request.body[range], Ok(item));
                if batch.len() >= max {
                    break;
                }
            }
            if request.messages.len() > 0 {
                // The batch is full in the middle of this request: its
                // answer waits for the batch that takes its last message.
                self.current = Some(request);
                break;
            }
            responders.push(request.respond);
            if batch.len() >= max {
                break;
            }
            match self.requests.try_recv() {
                Ok(next) => request = next,
                Err(_) => break,
            }
        }
        Ok(Read::Batch(HttpAck { responders }))
    }
}

// ------------------------------------------------------------------ sink ---

/// POSTs outputs as JSON to a URL, with retries (see the [module
/// documentation](self)).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use syncflow::connector::http::{HttpSink, HttpSinkConfig};
///
/// let sink = HttpSink::connect(&HttpSinkConfig::new("http://127.0.0.1:9000/charges")).await?;
/// # let _ = sink; Ok(()) }
/// ```
pub struct HttpSink {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: hyper::Uri,
    target: String,
    mode: SinkMode,
    headers: HeaderMap,
    timeout: Duration,
    retry: Retry,
    rng: fastrand::Rng,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("target", &self.target)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Why one try of a request failed.
enum Failure {
    /// Worth another try (connection error, timeout, 5xx, 408, 429).
    Transient(String),
    /// The request itself is wrong (other 4xx, 3xx).
    Permanent(String),
}

impl HttpSink {
    /// Checks the URL and headers and builds the client (no request is
    /// sent: connections are opened, and kept, as batches are posted).
    pub async fn connect(config: &HttpSinkConfig) -> Result<Self, ConnectorError> {
        let target = redact(&config.url);
        let invalid = |message: String, hint: &str| {
            ConnectorError::server(CONNECTOR, target.clone(), "post", message, hint)
        };
        let uri: hyper::Uri = config.url.parse().map_err(|e| {
            invalid(
                format!("invalid URL: {e}"),
                "write it as `http://host:port/path`",
            )
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not built into this syncflow".into(),
                    "POST to a TLS-terminating proxy (or sidecar) over http on a trusted network",
                ));
            }
            _ => {
                return Err(invalid(
                    "the URL does not start with `http://`".into(),
                    "write it as `http://host:port/path`",
                ));
            }
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(invalid(
                "the URL holds credentials".into(),
                "put them in `bearer_token` or `headers` (e.g. `authorization`), which are never logged",
            ));
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &config.headers {
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| invalid(format!("invalid header name `{name}`: {e}"), ""))?;
            let mut value = HeaderValue::try_from(value.as_str())
                .map_err(|e| invalid(format!("invalid value of header `{name}`: {e}"), ""))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(token) = &config.bearer_token {
            let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                invalid(
                    "the bearer token has characters not allowed in a header".into(),
                    "",
                )
            })?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
        let mut retry = Retry::new(DEFAULT_ATTEMPTS);
        if let Some(given) = &config.retry {
            retry = given.merged_over(&retry);
        }
        Ok(HttpSink {
            client: Client::builder(TokioExecutor::new()).build_http(),
            uri,
            target,
            mode: config.mode,
            headers,
            timeout: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
            retry,
            rng: fastrand::Rng::new(),
            buffer: Vec::with_capacity(64 * 1024),
        })
    }

    /// One try: POST `body` and read the answer.
    async fn try_post(&self, body: Bytes) -> Result<(), Failure> {
        let mut request = hyper::Request::post(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        request.headers_mut().extend(self.headers.clone());
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Failure::Transient(format!("no answer: {}", error_chain(&e))))?;
            let status = response.status();
            // Read (a bounded part of) the answer, for the error message and
            // so that the connection can be reused.
            let text = match Limited::new(response.into_body(), 4096).collect().await {
                Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Ok::<_, Failure>((status, text))
        };
        let (status, text) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Err(Failure::Transient(format!(
                    "no answer within {:?}",
                    self.timeout
                )));
            }
            Ok(result) => result?,
        };
        if status.is_success() {
            return Ok(());
        }
        let message = format!("the server answered {status}: {}", text.trim());
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Err(Failure::Transient(message))
        } else {
            Err(Failure::Permanent(message))
        }
    }

    /// POSTs `body`, retrying transient failures.
    async fn post(&mut self, body: Bytes) -> Result<(), ConnectorError> {
        let attempts = self.retry.attempts().max(1);
        let mut attempt = 1;
        loop {
            match self.try_post(body.clone()).await {
                Ok(()) => return Ok(()),
                Err(Failure::Permanent(message)) => {
                    return Err(ConnectorError::server(
                        CONNECTOR,
                        &self.target,
                        "post",
                        message,
                        "the server refused the request itself (not retried): check the URL, the headers and what the endpoint expects",
                    ));
                }
                Err(Failure::Transient(message)) if attempt >= attempts => {
                    return Err(ConnectorError::server(
                        CONNECTOR,
                        &self.target,
                        "post",
                        format!("{message} (after {attempts} tries)"),
                        "check that the endpoint runs and is healthy; raise `retry` to wait longer",
                    ));
                }
                Err(Failure::Transient(message)) => {
                    let delay = self.retry.delay(attempt, &mut self.rng);
                    tracing::warn!(
                        target = %self.target,
                        attempt,
                        retry_in = ?delay,
                        error = %message,
                        "POST failed; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }
}

/// An error and its sources, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

impl<T: Serialize + Sync> Sink<T> for HttpSink {
    fn name(&self) -> String {
        format!("http {}", self.target)
    }

    async fn write(&mut self, items: &[T]) -> Result<(), ConnectorError> {
        if items.is_empty() {
            return Ok(());
        }
        let encode = |buffer: &mut Vec<u8>, item: &T, target: &str| {
            serde_json::to_writer(buffer, item).map_err(|source| ConnectorError::Encode {
                target: target.to_string(),
                source,
            })
        };
        match self.mode {
            SinkMode::Array => {
                self.buffer.clear();
                self.buffer.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.buffer.push(b',');
                    }
                    encode(&mut self.buffer, item, &self.target)?;
                }
                self.buffer.push(b']');
                let body = Bytes::copy_from_slice(&self.buffer);
                self.post(body).await
            }
            SinkMode::Each => {
                for item in items {
                    self.buffer.clear();
                    encode(&mut self.buffer, item, &self.target)?;
                    let body = Bytes::copy_from_slice(&self.buffer);
                    self.post(body).await?;
                }
                Ok(())
            }
        }
    }

    /// Every write was answered `2xx` before it returned: nothing to wait for.
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(body: &str, format: BodyFormat) -> Result<Vec<(String, u64)>, String> {
        let body = Bytes::copy_from_slice(body.as_bytes());
        let decoded = decode_body(&body, format, super::super::serde_decode::<u64>)?;
        Ok(decoded
            .into_iter()
            .map(|(r, v)| (String::from_utf8(body[r].to_vec()).unwrap(), v))
            .collect())
    }

    #[test]
    fn bodies_split_into_messages_with_their_raw_text() {
        assert_eq!(ids("7", BodyFormat::Json).unwrap(), vec![("7".into(), 7)]);
        assert_eq!(
            ids("1\r\n\n 2\n3", BodyFormat::JsonLines).unwrap(),
            vec![("1".into(), 1), (" 2".into(), 2), ("3".into(), 3)]
        );
        assert_eq!(
            ids("[ 1,2 , 30]", BodyFormat::JsonArray).unwrap(),
            vec![("1".into(), 1), ("2".into(), 2), ("30".into(), 30)]
        );
        let e = ids("1\nx\n3", BodyFormat::JsonLines).unwrap_err();
        assert!(
            e.starts_with("message 2 of the request cannot be decoded"),
            "{e}"
        );
        let e = ids("{\"a\":1}", BodyFormat::JsonArray).unwrap_err();
        assert!(e.contains("not a JSON array"), "{e}");
        assert!(ids("", BodyFormat::JsonLines).unwrap().is_empty());
    }

    #[test]
    fn configs_read_from_yaml_and_hide_secrets() {
        let source: HttpSourceConfig =
            serde_saphyr::from_str("format: json_lines\nbearer_token: hunter2\n").unwrap();
        assert_eq!(source.listen, DEFAULT_LISTEN);
        assert_eq!(source.format, BodyFormat::JsonLines);
        assert!(!format!("{source:?}").contains("hunter2"));
        let sink: HttpSinkConfig = serde_saphyr::from_str(
            "url: http://h/p\nmode: each\nheaders: { x-key: hunter2 }\nretry: { attempts: 3, max_backoff: 1s }\ntimeout: 2s\n",
        )
        .unwrap();
        assert_eq!(sink.mode, SinkMode::Each);
        assert_eq!(sink.retry.as_ref().map(Retry::attempts), Some(3));
        assert!(!format!("{sink:?}").contains("hunter2"));
        let bad = serde_saphyr::from_str::<HttpSinkConfig>("url: http://h/p\nmode: batch\n");
        assert!(bad.is_err());
    }

    #[test]
    fn token_comparison_is_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn bad_sink_urls_are_explained() {
        let err = |url: &str| {
            block_on(HttpSink::connect(&HttpSinkConfig::new(url)))
                .unwrap_err()
                .to_string()
        };
        assert!(err("https://x/y").contains("TLS-terminating proxy"));
        assert!(err("ftp://x/y").contains("does not start with `http://`"));
        let e = err("http://me:secret@x/y");
        assert!(
            e.contains("holds credentials") && !e.contains("secret"),
            "{e}"
        );
    }
}
