//! The local services the connector tests run against.
//!
//! A connector test starts with [`require`]: on a machine where the service
//! does not answer, the test prints why it is skipped and returns; in CI
//! (`CI=true`) a missing service fails the test instead, so a green CI run
//! always means the connector was tested against the real server.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The services of a developer machine and CI, with the command that starts
/// each one when it is down.
pub const SERVICES: &[(&str, &str, &str)] = &[
    (
        "postgres",
        "127.0.0.1:5432",
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    ),
    (
        "mariadb",
        "127.0.0.1:3306",
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    ),
    (
        "redis",
        "127.0.0.1:6379",
        "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
    ),
    ("rabbitmq", "127.0.0.1:5672", "rabbitmq-server -detached"),
    (
        "mosquitto",
        "127.0.0.1:1883",
        "mosquitto -d -c /etc/mosquitto/mosquitto.conf",
    ),
    (
        "nats",
        "127.0.0.1:4222",
        "nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server (in the background)",
    ),
];

/// Whether tests run in CI, where every service must be there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Checks that the named service (a key of [`SERVICES`]) answers on its
/// port. Returns `false`, after printing why, when it does not and this is
/// not CI; panics with what to do when it does not and this is CI.
///
/// ```no_run
/// if !syncflow_tests::services::require("nats") {
///     return;
/// }
/// ```
pub fn require(service: &str) -> bool {
    let Some(&(_, addr, start)) = SERVICES.iter().find(|(name, _, _)| *name == service) else {
        panic!(
            "unknown service `{service}`; known: postgres, mariadb, redis, rabbitmq, mosquitto, nats"
        );
    };
    let addr: SocketAddr = addr.parse().expect("service addresses are valid");
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => true,
        Err(error) if in_ci() => panic!(
            "{service} is not answering on {addr} ({error}); CI needs every service: start it with `{start}`"
        ),
        Err(error) => {
            eprintln!(
                "skipped: {service} is not answering on {addr} ({error}); start it with `{start}` to run this test"
            );
            false
        }
    }
}

/// Finds a server program (`redis-server`, `nats-server`) that a test
/// starts itself, in `PATH` or the usual `sbin` folders. Returns `None`,
/// after printing why, when it is not installed and this is not CI; panics
/// with what to install when it is not and this is CI.
///
/// ```no_run
/// let Some(redis_server) = syncflow_tests::services::require_program("redis-server", "redis-server") else {
///     return;
/// };
/// ```
pub fn require_program(program: &str, package: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(Into::into))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file());
    match found {
        Some(found) => Some(found),
        None if in_ci() => panic!(
            "`{program}` is not installed; CI needs it: install the Debian package `{package}`"
        ),
        None => {
            eprintln!(
                "skipped: `{program}` is not installed; install the Debian package `{package}` to run this test"
            );
            None
        }
    }
}

/// A name unique to this test run, for streams, queues, tables and
/// consumer groups, so runs never see each other's data.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
