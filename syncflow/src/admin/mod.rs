//! The admin HTTP API: list, change, pause and resume the flows of a
//! [`FlowManager`] while they run.
//!
//! | method and path | does | answers |
//! |---|---|---|
//! | `GET /health` | is the process up | `200 {"status":"ok","flows":3,"running":2,"failed":0}` |
//! | `GET /flows` | every flow, with its state and counters | `200 {"flows":[status, ...]}` |
//! | `GET /flows/{name}` | one flow, with its definition as written | `200 status`, `404` |
//! | `PUT /flows/{name}` | body: the YAML of one flow; creates or replaces it | `201`/`200 status`, `422 errors`, `409` |
//! | `DELETE /flows/{name}` | stops and removes it | `200 status`, `404` |
//! | `POST /flows/{name}/pause` | drains and stops it, keeping its position | `200 status`, `404`, `409` |
//! | `POST /flows/{name}/resume` | starts it again from its position | `200 status`, `404`, `409`, `422` |
//!
//! Errors are JSON: `{"error": "what went wrong", "errors": [{"file": ...,
//! "line": 3, "column": 5, "message": ...}]}` (`errors` lists every problem
//! of a rejected definition; it is empty for other errors).
//!
//! # Security
//!
//! The API changes what the process runs, so it binds to a loopback
//! address unless given a token: [`AdminServer::bind`] refuses a
//! non-loopback address without one. With a token, every request must
//! carry `Authorization: Bearer <token>` (else `401`). Without a token,
//! requests from a browser page of another site (an `Origin` or `Host`
//! header that is not loopback) are refused (`403`), so that a web page
//! cannot reach the API through the user's browser. Values interpolated
//! from the environment (`${VAR}`) are never sent back: a flow's
//! definition is returned as written.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::manage::{FlowManager, FlowState, FlowStatus, ManageError};
use crate::runtime::Shutdown;

/// The environment variable the CLI reads the admin token from when
/// `--admin-token` is not given.
pub const TOKEN_ENV: &str = "SYNCFLOW_ADMIN_TOKEN";

/// The admin API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The address is not `host:port`, or its host is unknown.
    #[error(
        "cannot use `{addr}` as the admin address: {message}; give `host:port`, e.g. 127.0.0.1:8080"
    )]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        message: String,
    },
    /// A non-loopback address without a token.
    #[error(
        "refusing to serve the admin API on `{addr}` without a token: it is not a loopback address, so anyone who can reach it could change the running flows. Set a token with --admin-token or {TOKEN_ENV} (requests then need `Authorization: Bearer <token>`), or bind to 127.0.0.1"
    )]
    TokenRequired {
        /// The address given.
        addr: String,
    },
    /// An empty token.
    #[error("the admin token is empty: give a long random value (e.g. `openssl rand -hex 32`)")]
    EmptyToken,
    /// The address could not be bound.
    #[error("cannot listen on `{addr}` for the admin API: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The admin API, bound and ready to serve.
#[derive(Debug)]
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    token: Option<String>,
}

impl AdminServer {
    /// Binds `addr` (`host:port`; port 0 picks a free one). Without a
    /// token, every address `host` resolves to must be a loopback address.
    pub async fn bind(addr: &str, token: Option<String>) -> Result<AdminServer, AdminError> {
        if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(AdminError::EmptyToken);
        }
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| AdminError::Address {
                addr: addr.to_string(),
                message: e.to_string(),
            })?
            .collect();
        let Some(first) = resolved.first().copied() else {
            return Err(AdminError::Address {
                addr: addr.to_string(),
                message: "it resolves to no address".to_string(),
            });
        };
        if token.is_none() && !resolved.iter().all(|a| a.ip().to_canonical().is_loopback()) {
            return Err(AdminError::TokenRequired {
                addr: addr.to_string(),
            });
        }
        let listener = tokio::net::TcpListener::bind(first)
            .await
            .map_err(|source| AdminError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        Ok(AdminServer { listener, token })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the API for `manager` until `shutdown` is triggered (requests
    /// in progress are finished).
    pub async fn serve(self, manager: FlowManager, shutdown: Shutdown) -> std::io::Result<()> {
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(%addr, token = self.token.is_some(), "admin API listening");
        }
        axum::serve(self.listener, router(manager, self.token))
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
    }
}

#[derive(Clone)]
struct AppState {
    manager: FlowManager,
    token: Option<std::sync::Arc<str>>,
}

/// The API's routes, for serving them yourself (with your own listener,
/// TLS or extra routes). With `token`, every request needs
/// `Authorization: Bearer <token>`.
pub fn router(manager: FlowManager, token: Option<String>) -> Router {
    let state = AppState {
        manager,
        token: token.map(std::sync::Arc::from),
    };
    Router::new()
        .route("/health", get(health))
        .route("/flows", get(list))
        .route(
            "/flows/{name}",
            get(get_flow).put(put_flow).delete(delete_flow),
        )
        .route("/flows/{name}/pause", post(pause_flow))
        .route("/flows/{name}/resume", post(resume_flow))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// A JSON error.
fn error(status: StatusCode, message: String, errors: Vec<serde_json::Value>) -> Response {
    (
        status,
        axum::Json(json!({ "error": message, "errors": errors })),
    )
        .into_response()
}

async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    match &state.token {
        Some(token) => {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if !given.is_some_and(|g| same(g.as_bytes(), token.as_bytes())) {
                let mut response = error(
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong token: send `Authorization: Bearer <token>` with the token the process was started with".to_string(),
                    Vec::new(),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                return response;
            }
        }
        None => {
            if let Some(problem) = foreign_browser_request(headers) {
                return error(StatusCode::FORBIDDEN, problem, Vec::new());
            }
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Without a token the API trusts the machine: refuse what a web page of
/// another site could send through the user's browser (a cross-site
/// request carries its `Origin`; a DNS-rebinding one, a foreign `Host`).
fn foreign_browser_request(headers: &HeaderMap) -> Option<String> {
    for (name, strip_scheme) in [(header::ORIGIN, true), (header::HOST, false)] {
        let Some(value) = headers.get(&name) else {
            continue;
        };
        let value = value.to_str().unwrap_or("");
        let host = if strip_scheme {
            value.split_once("://").map_or(value, |(_, rest)| rest)
        } else {
            value
        };
        if !is_loopback_host(host) {
            return Some(format!(
                "the admin API without a token answers requests made from this machine only; this request's `{name}` is `{value}`. Start the process with --admin-token to allow remote clients"
            ));
        }
    }
    None
}

/// `localhost`, `127.0.0.1:8080`, `[::1]:8080`, ...
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn manage_error(e: ManageError) -> Response {
    let status = match &e {
        ManageError::Invalid(_) | ManageError::Start { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ManageError::NotFound { .. } => StatusCode::NOT_FOUND,
        ManageError::Exists { .. } | ManageError::NotResumable { .. } => StatusCode::CONFLICT,
        ManageError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    match e {
        ManageError::Invalid(errors) => {
            let n = errors.errors.len();
            let list = errors
                .errors
                .into_iter()
                .map(|e| {
                    json!({
                        "file": e.file, "line": e.line, "column": e.column,
                        "message": e.message, "text": e.to_string(),
                    })
                })
                .collect();
            error(
                status,
                format!(
                    "the definition was rejected ({n} error{}); nothing was changed",
                    if n == 1 { "" } else { "s" }
                ),
                list,
            )
        }
        other => error(status, other.to_string(), Vec::new()),
    }
}

fn ok(status: StatusCode, flow: FlowStatus) -> Response {
    (status, axum::Json(flow)).into_response()
}

async fn health(State(state): State<AppState>) -> Response {
    let flows = state.manager.list();
    let count = |s: FlowState| flows.iter().filter(|f| f.state == s).count();
    axum::Json(json!({
        "status": "ok",
        "flows": flows.len(),
        "running": count(FlowState::Running),
        "paused": count(FlowState::Paused),
        "failed": count(FlowState::Failed),
    }))
    .into_response()
}

async fn list(State(state): State<AppState>) -> Response {
    #[derive(serde::Serialize)]
    struct Flows {
        flows: Vec<FlowStatus>,
    }
    axum::Json(Flows {
        flows: state.manager.list(),
    })
    .into_response()
}

async fn get_flow(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.manager.get(&name) {
        Some(flow) => ok(StatusCode::OK, flow),
        None => manage_error(ManageError::NotFound {
            known: state.manager.list().into_iter().map(|f| f.name).collect(),
            name,
        }),
    }
}

async fn put_flow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8 text: send the flow's YAML".to_string(),
            Vec::new(),
        );
    };
    if text.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "the body is empty: send the YAML of flow `{name}` (its `source:`, `steps:` and `sinks:`)"
            ),
            Vec::new(),
        );
    }
    let origin = format!("PUT /flows/{name}");
    match state.manager.put(&name, text, &origin).await {
        Ok((flow, true)) => ok(StatusCode::CREATED, flow),
        Ok((flow, false)) => ok(StatusCode::OK, flow),
        Err(e) => manage_error(e),
    }
}

async fn delete_flow(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.manager.delete(&name).await {
        Ok(flow) => ok(StatusCode::OK, flow),
        Err(e) => manage_error(e),
    }
}

async fn pause_flow(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.manager.pause(&name).await {
        Ok(flow) => ok(StatusCode::OK, flow),
        Err(e) => manage_error(e),
    }
}

async fn resume_flow(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.manager.resume(&name).await {
        Ok(flow) => ok(StatusCode::OK, flow),
        Err(e) => manage_error(e),
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: see GET /flows, GET|PUT|DELETE /flows/{name}, POST /flows/{name}/pause|resume, GET /health".to_string(),
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1:80",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn tokens_are_compared_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
    }
}
