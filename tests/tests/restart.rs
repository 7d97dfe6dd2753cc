//! A real broker server restarted in the middle of a flow: the server
//! process is killed (SIGKILL) while the flow reads from it and writes to
//! it, stays down for a while, and is started again with the same command
//! line; the flow goes on by itself and every message gets through.
//!
//! The servers restarted are private ones, started by the test on a free
//! port with their data in a temporary folder, not the machine's shared
//! servers: killing those would break every other test (and every other
//! program) using them at that moment, and the machine's Redis keeps
//! nothing on disk, so its restart would lose the very stream being read.
//! The private Redis runs with the machine's settings except that it logs
//! every write to an append-only file (`--appendonly yes --appendfsync
//! always`), so that a restart keeps the stream and its consumer group, as
//! a production server would; the private NATS server keeps its JetStream
//! store in its folder, as the machine's does.
//!
//! What these tests add to the per-connector `Proxy` cuts: the server state
//! (stream, consumer group or durable consumer, pending entries) comes back
//! from disk in a new server process, and the connectors find their way to
//! it through their own reconnect loops.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use syncflow::connector::nats::{NatsSink, NatsSinkConfig, NatsSource, NatsSourceConfig};
use syncflow::connector::redis::{
    RedisStreamSink, RedisStreamSinkConfig, RedisStreamSource, RedisStreamSourceConfig,
};
use syncflow::connector::serde_decode;
use syncflow::prelude::*;
use syncflow_tests::services::require_program;

/// Messages in the input.
const MESSAGES: u64 = 3000;
/// Work done per message, so that the flow is still running at the restart.
const WORK: Duration = Duration::from_millis(1);
/// Outputs written before the server is killed.
const KILL_AFTER: u64 = 1000;
/// How long the server stays down.
const DOWN_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct Order {
    id: u64,
    cents: i64,
}

/// Counts the messages processed (deliveries, duplicates included).
#[derive(Clone, Default)]
struct Processed(Arc<AtomicU64>);

/// Passes an order through, slowly; counts it.
#[sync_function]
fn restart_pass(o: Order, processed: Res<Processed>) -> Order {
    processed.0.fetch_add(1, Relaxed);
    std::thread::sleep(WORK);
    o
}

fn order(id: u64) -> Order {
    Order {
        id,
        cents: id as i64 * 3,
    }
}

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "syncflow=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A server process of the test's own, killed when dropped.
struct Server {
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts `program args` (which must make it listen on `port`) and waits
    /// until it accepts connections.
    async fn start(program: PathBuf, args: Vec<String>, port: u16) -> Server {
        let mut server = Server {
            program,
            args,
            port,
            child: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("{} exited at start: {status}", self.program.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} is not listening on port {} after 15 s",
                self.program.display(),
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server (SIGKILL: no chance to say goodbye to its clients).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server, leaves it down for `down`, starts it again with the
    /// same command line; returns when it accepts connections.
    async fn restart(&mut self, down: Duration) {
        self.kill();
        tokio::time::sleep(down).await;
        self.spawn().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `check` holds, polling; panics with `what` after `limit`.
async fn wait_for<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the test measured around the restart.
struct Figures {
    written_at_kill: u64,
    recovered_after: Duration,
}

/// Kills and restarts `server` once `outputs` reaches `KILL_AFTER`, then
/// measures how long after the restart the outputs grow again.
async fn restart_mid_flow<F: AsyncFnMut() -> Option<u64>>(
    server: &mut Server,
    mut outputs: F,
) -> Figures {
    let mut seen = 0;
    wait_for(
        Duration::from_secs(20),
        "outputs before the restart",
        async || {
            seen = outputs().await.unwrap_or(0);
            seen >= KILL_AFTER
        },
    )
    .await;
    server.restart(DOWN_FOR).await;
    let back = Instant::now();
    let mut after = 0;
    wait_for(
        Duration::from_secs(20),
        "outputs after the restart",
        async || {
            after = outputs().await.unwrap_or(0);
            after > seen
        },
    )
    .await;
    Figures {
        written_at_kill: seen,
        recovered_after: back.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_server_restarted_mid_flow_loses_nothing() {
    let Some(program) = require_program("redis-server", "redis-server") else {
        return;
    };
    logs();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The machine's command line (see `services::SERVICES`), on a port and
    // in a folder of its own, in the foreground, with every write logged.
    let args: Vec<String> = [
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir.path().display().to_string(),
        "--logfile",
        &dir.path().join("redis.log").display().to_string(),
        "--daemonize",
        "no",
    ]
    .map(String::from)
    .into();
    let mut server = Server::start(program, args, port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str()).unwrap();
    let (input, output, group) = ("orders", "copies", "restart");
    {
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        let mut pipe = redis::pipe();
        for id in 1..=MESSAGES {
            let payload = serde_json::to_string(&order(id)).unwrap();
            pipe.xadd(input, "*", &[("payload", payload)]).ignore();
        }
        pipe.exec_async(&mut con).await.unwrap();
    }

    let mut source_config = RedisStreamSourceConfig::new(input, group, "worker");
    source_config.url = url.clone();
    source_config.batch_size = Some(50);
    source_config.block = Some(Duration::from_millis(100));
    let mut sink_config = RedisStreamSinkConfig::new(output);
    sink_config.url = url.clone();
    let processed = Processed::default();
    let runtime = Runtime::new(flow!(restart_pass).resource(processed.clone()))
        .source(
            RedisStreamSource::<Order>::connect(&source_config, serde_decode)
                .await
                .unwrap(),
        )
        .sink(RedisStreamSink::connect(&sink_config).await.unwrap())
        .batch_size(50)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    // A fresh connection for every look: the test's own connections break
    // at the restart too.
    let xlen = async |key: &str| -> Option<u64> {
        let mut con = client.get_multiplexed_async_connection().await.ok()?;
        con.xlen(key).await.ok()
    };
    let figures = restart_mid_flow(&mut server, async || xlen(output).await).await;
    wait_for(
        Duration::from_secs(30),
        "every message copied and acknowledged",
        async || {
            let Ok(mut con) = client.get_multiplexed_async_connection().await else {
                return false;
            };
            let Ok(groups) = con
                .xinfo_groups::<_, redis::streams::StreamInfoGroupsReply>(input)
                .await
            else {
                return false;
            };
            let copied: u64 = con.xlen(output).await.unwrap_or(0);
            copied >= MESSAGES
                && groups
                    .groups
                    .iter()
                    .any(|g| g.name == group && g.pending == 0 && g.lag == Some(0))
        },
    )
    .await;
    shutdown.shutdown();
    let summary = run
        .await
        .unwrap()
        .expect("the run went on through the restart");

    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply = con.xrange_all(output).await.unwrap();
    let copies: Vec<Order> = reply
        .ids
        .iter()
        .map(|e| serde_json::from_str(&e.get::<String>("payload").unwrap()).unwrap())
        .collect();
    check_copies("Redis", &copies, &figures, &processed, &summary, started);
}

/// Checks that every order was copied with its content, and prints the figures.
fn check_copies(
    server: &str,
    copies: &[Order],
    figures: &Figures,
    processed: &Processed,
    summary: &RunSummary,
    started: Instant,
) {
    for copy in copies {
        assert_eq!(copy, &order(copy.id), "a copy differs from its order");
    }
    let ids: BTreeSet<u64> = copies.iter().map(|o| o.id).collect();
    let missing: Vec<u64> = (1..=MESSAGES).filter(|id| !ids.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} orders lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(ids.len() as u64, MESSAGES, "unknown orders copied");
    println!(
        "{server} restart: killed (SIGKILL) after {} of {MESSAGES} copies, down {} ms, \
         copies flowing again {} ms after it was back; {} copies ({} extra), {} processings, \
         this run read {} and emitted {}; {:.1} s",
        figures.written_at_kill,
        DOWN_FOR.as_millis(),
        figures.recovered_after.as_millis(),
        copies.len(),
        copies.len() as u64 - MESSAGES,
        processed.0.load(Relaxed),
        summary.input,
        summary.output,
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restarted_mid_flow_loses_nothing() {
    let Some(program) = require_program("nats-server", "nats-server") else {
        return;
    };
    logs();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The machine's command line (see `services::SERVICES`), on a port and
    // with a JetStream store of its own.
    let args: Vec<String> = [
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-js",
        "-sd",
        &dir.path().join("store").display().to_string(),
        "-l",
        &dir.path().join("nats.log").display().to_string(),
    ]
    .map(String::from)
    .into();
    let mut server = Server::start(program, args, port).await;
    let url = format!("nats://127.0.0.1:{port}");
    let (input, output) = ("ORDERS", "COPIES");
    {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        for (name, subject) in [(input, "orders.new"), (output, "copies.new")] {
            js.create_stream(async_nats::jetstream::stream::Config {
                name: name.to_string(),
                subjects: vec![subject.to_string()],
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let mut acks = Vec::new();
        for id in 1..=MESSAGES {
            let payload = serde_json::to_vec(&order(id)).unwrap();
            acks.push(js.publish("orders.new", payload.into()).await.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }

    let mut source_config = NatsSourceConfig::new(input, "restart");
    source_config.url = url.clone();
    source_config.batch_size = Some(50);
    source_config.max_wait = Some(Duration::from_millis(100));
    // Acknowledgements sent while the server is down are lost: those
    // messages come again after this long.
    source_config.ack_wait = Some(Duration::from_secs(3));
    let mut sink_config = NatsSinkConfig::new("copies.new");
    sink_config.url = url.clone();
    let processed = Processed::default();
    let runtime = Runtime::new(flow!(restart_pass).resource(processed.clone()))
        .source(
            NatsSource::<Order>::connect(&source_config, serde_decode)
                .await
                .unwrap(),
        )
        .sink(NatsSink::connect(&sink_config).await.unwrap())
        .batch_size(50)
        .handle_signals(false);
    let shutdown = runtime.shutdown_handle();
    let run = tokio::spawn(runtime.run());

    let stream_info = async |name: &str| -> Option<(u64, Option<(u64, usize)>)> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_millis(500))
            .connect(&url)
            .await
            .ok()?;
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(name).await.ok()?;
        let messages = stream.info().await.ok()?.state.messages;
        let consumer = match stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>("restart")
            .await
        {
            Ok(mut consumer) => consumer
                .info()
                .await
                .ok()
                .map(|i| (i.num_pending, i.num_ack_pending)),
            Err(_) => None,
        };
        Some((messages, consumer))
    };
    let figures = restart_mid_flow(&mut server, async || {
        stream_info(output).await.map(|(messages, _)| messages)
    })
    .await;
    wait_for(
        Duration::from_secs(30),
        "every message copied and acknowledged",
        async || {
            let copied = stream_info(output).await.map_or(0, |(m, _)| m);
            let consumer = stream_info(input).await.and_then(|(_, c)| c);
            copied >= MESSAGES && consumer == Some((0, 0))
        },
    )
    .await;
    shutdown.shutdown();
    let summary = run
        .await
        .unwrap()
        .expect("the run went on through the restart");

    let copies = nats_contents(&url, output).await;
    check_copies("NATS", &copies, &figures, &processed, &summary, started);
}

/// Every message of a stream, decoded.
async fn nats_contents(url: &str, name: &str) -> Vec<Order> {
    use futures_util::StreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = js.get_stream(name).await.unwrap();
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .messages()
            .await
            .unwrap();
        let before = out.len();
        while let Some(message) = batch.next().await {
            out.push(serde_json::from_slice(&message.unwrap().payload).unwrap());
        }
        if out.len() == before {
            return out;
        }
    }
}
