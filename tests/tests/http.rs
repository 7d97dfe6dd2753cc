//! The HTTP connectors on loopback: the webhook answers only after the
//! sinks confirmed, refuses bad input with 400 (and nothing is taken),
//! answers 503 while shutting down or when the flow failed; the sink
//! retries 5xx and connection errors with backoff, never 4xx.

mod connector_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use connector_support::{Collect, wait_for};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use syncflow::connector::http::{
    BodyFormat, HttpSink, HttpSinkConfig, HttpSource, HttpSourceConfig, SinkMode,
};
use syncflow::connector::{Sink, serde_decode};
use syncflow::policy::Retry;
use syncflow::prelude::*;
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Deserialize)]
struct Order {
    id: u64,
    cents: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Charge {
    id: u64,
    euros: f64,
}

/// Turns an order into a charge.
#[sync_function]
fn charge(o: Order) -> Charge {
    Charge {
        id: o.id,
        euros: o.cents as f64 / 100.0,
    }
}

/// Passes the order's id on.
#[sync_function]
fn order_id(o: Order) -> u64 {
    o.id
}

/// Sends a request; returns the status and the body.
async fn send(method: &str, url: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn webhook(config: HttpSourceConfig) -> (HttpSource<Order>, String) {
    let source = HttpSource::<Order>::connect(&config, serde_decode)
        .await
        .unwrap();
    let url = format!("http://{}{}", source.local_addr(), config.path);
    (source, url)
}

/// A local endpoint that keeps every body, after failing the first
/// `fail_first` requests with `fail_with`.
#[derive(Clone, Default)]
struct Endpoint {
    bodies: Arc<Mutex<Vec<String>>>,
    attempts: Arc<AtomicUsize>,
    fail_first: usize,
    fail_with: u16,
}

async fn endpoint_handler(State(e): State<Endpoint>, body: String) -> (StatusCode, String) {
    let attempt = e.attempts.fetch_add(1, Ordering::SeqCst);
    if attempt < e.fail_first {
        return (
            StatusCode::from_u16(e.fail_with).unwrap(),
            "try again".to_string(),
        );
    }
    e.bodies.lock().unwrap().push(body);
    (StatusCode::OK, "ok".to_string())
}

async fn serve(endpoint: Endpoint) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/in", post(endpoint_handler))
        .with_state(endpoint);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/in")
}

fn fast_retry(attempts: u32) -> Retry {
    Retry::new(attempts)
        .with_initial_backoff(Duration::from_millis(10))
        .with_max_backoff(Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_from_webhook_to_an_http_endpoint() {
    let endpoint = Endpoint::default();
    let target = serve(endpoint.clone()).await;
    let (source, url) = webhook(
        HttpSourceConfig::new("127.0.0.1:0")
            .path("/orders")
            .format(BodyFormat::JsonLines),
    )
    .await;
    let runtime = Runtime::new(flow!(charge))
        .source(source)
        .sink(
            HttpSink::connect(&HttpSinkConfig::new(&target))
                .await
                .unwrap(),
        )
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    let lines: String = (1..=5)
        .map(|id| format!("{{\"id\":{id},\"cents\":{}}}\n", id * 250))
        .collect();
    let (status, body) = send("POST", &url, &lines, None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":5}"#));
    // The answer came after the endpoint had the charges.
    let bodies = endpoint.bodies.lock().unwrap().clone();
    let charges: Vec<Charge> = bodies
        .iter()
        .flat_map(|b| serde_json::from_str::<Vec<Charge>>(b).unwrap())
        .collect();
    let expected: Vec<Charge> = (1..=5)
        .map(|id| Charge {
            id,
            euros: id as f64 * 2.5,
        })
        .collect();
    assert_eq!(charges, expected);
    assert_eq!(send("GET", &url, "", None).await.0, 200);
    shutdown.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.input, summary.output), (5, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_answers_only_after_the_sink_confirmed() {
    let gate = Arc::new(Semaphore::new(0));
    let collect = Collect::<u64>::gated(gate.clone());
    let (source, url) = webhook(HttpSourceConfig::new("127.0.0.1:0")).await;
    let runtime = Runtime::new(flow!(order_id))
        .source(source)
        .sink(collect.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    let request = tokio::spawn({
        let url = url.clone();
        async move { send("POST", &url, r#"{"id":7,"cents":1}"#, None).await }
    });
    wait_for("the sink's write", Duration::from_secs(5), || {
        collect.len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !request.is_finished(),
        "answered before the sink confirmed (its flush is held back)"
    );
    gate.add_permits(1);
    let (status, _) = request.await.unwrap();
    assert_eq!(status, 200);
    shutdown.shutdown();
    gate.add_permits(100);
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_and_nothing_of_the_request_is_taken() {
    let collect = Collect::<u64>::new();
    let (source, url) = webhook(
        HttpSourceConfig::new("127.0.0.1:0")
            .format(BodyFormat::JsonArray)
            .bearer_token("s3cret"),
    )
    .await;
    let runtime = Runtime::new(flow!(order_id))
        .source(source)
        .sink(collect.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());
    let token = Some("s3cret");

    let (status, body) = send("POST", &url, r#"[{"id":1,"cents":1},{"id":"two"}]"#, token).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("message 2 of the request cannot be decoded"),
        "{body}"
    );
    assert!(body.contains("nothing of this request was taken"), "{body}");
    let (status, body) = send("POST", &url, "not json", token).await;
    assert_eq!(status, 400);
    assert!(body.contains("not a JSON array"), "{body}");
    let (status, body) = send("POST", &url, r#"[{"id":3,"cents":1}]"#, Some("wrong")).await;
    assert_eq!(status, 401);
    assert!(body.contains("missing or wrong token"), "{body}");

    // The flow goes on.
    let (status, body) = send(
        "POST",
        &url,
        r#"[{"id":4,"cents":1},{"id":5,"cents":2}]"#,
        token,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"accepted":2}"#));
    assert_eq!(collect.snapshot(), vec![4, 5]);
    shutdown.shutdown();
    let summary = run.await.unwrap().unwrap();
    assert_eq!((summary.input, summary.malformed), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_answers_503_and_drains_what_was_taken() {
    let gate = Arc::new(Semaphore::new(0));
    let collect = Collect::<u64>::gated(gate.clone());
    let (source, url) = webhook(HttpSourceConfig::new("127.0.0.1:0")).await;
    let runtime = Runtime::new(flow!(order_id))
        .source(source)
        .sink(collect.clone())
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    let taken = tokio::spawn({
        let url = url.clone();
        async move { send("POST", &url, r#"{"id":1,"cents":1}"#, None).await }
    });
    wait_for("the sink's write", Duration::from_secs(5), || {
        collect.len() == 1
    })
    .await;
    shutdown.shutdown();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = send("GET", &url, "", None).await;
        if status == 503 {
            assert!(body.contains("shutting down"), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never shut down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = send("POST", &url, r#"{"id":2,"cents":1}"#, None).await;
    assert_eq!(status, 503);
    assert!(body.contains("retry later"), "{body}");
    gate.add_permits(100);
    assert_eq!(
        taken.await.unwrap().0,
        200,
        "a message taken before the shutdown is delivered"
    );
    run.await.unwrap().unwrap();
    assert_eq!(collect.snapshot(), vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sink_means_503_for_the_client() {
    let (source, url) = webhook(HttpSourceConfig::new("127.0.0.1:0")).await;
    let run = tokio::spawn(
        Runtime::new(flow!(order_id))
            .source(source)
            .sink(Collect::<u64>::failing())
            .handle_signals(false)
            .run(),
    );
    let (status, body) = send("POST", &url, r#"{"id":1,"cents":1}"#, None).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("before these messages were delivered"),
        "{body}"
    );
    assert!(run.await.unwrap().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_retries_server_errors_with_backoff() {
    let endpoint = Endpoint {
        fail_first: 2,
        fail_with: 503,
        ..Endpoint::default()
    };
    let url = serve(endpoint.clone()).await;
    let mut sink = HttpSink::connect(
        &HttpSinkConfig::new(&url)
            .mode(SinkMode::Each)
            .header("x-test", "yes")
            .retry(fast_retry(5)),
    )
    .await
    .unwrap();
    Sink::<u64>::write(&mut sink, &[41, 42]).await.unwrap();
    Sink::<u64>::flush(&mut sink).await.unwrap();
    assert_eq!(
        endpoint.attempts.load(Ordering::SeqCst),
        4,
        "2 failures, then 2 requests"
    );
    assert_eq!(*endpoint.bodies.lock().unwrap(), vec!["41", "42"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_does_not_retry_client_errors_and_gives_up_on_a_dead_server() {
    let endpoint = Endpoint {
        fail_first: 100,
        fail_with: 422,
        ..Endpoint::default()
    };
    let url = serve(endpoint.clone()).await;
    let mut sink = HttpSink::connect(&HttpSinkConfig::new(&url).retry(fast_retry(5)))
        .await
        .unwrap();
    let error = Sink::<u64>::write(&mut sink, &[1])
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        endpoint.attempts.load(Ordering::SeqCst),
        1,
        "a 4xx was retried"
    );
    assert!(error.contains("422"), "{error}");
    assert!(error.contains("not retried"), "{error}");

    // Nobody listens on port 9 of this machine: connection refused, retried, then given up.
    let mut sink =
        HttpSink::connect(&HttpSinkConfig::new("http://127.0.0.1:9/in").retry(fast_retry(3)))
            .await
            .unwrap();
    let error = Sink::<u64>::write(&mut sink, &[1])
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("after 3 tries"), "{error}");
    assert!(error.contains("no answer"), "{error}");
}
