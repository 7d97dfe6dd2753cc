//! PostgreSQL: [`PostgresSink`] writes rows and change events (batched,
//! idempotent upserts and deletes by primary key), and
//! [`PostgresCdcSource`] reads the changes of tables through logical
//! replication (`pgoutput`), with an initial snapshot, resuming from the
//! position the runtime acknowledged.
//!
//! Both use [tokio-postgres](https://docs.rs/tokio-postgres) over plain TCP
//! (no TLS). See the book's page `connectors/postgres.md`.

mod cdc;
mod pgoutput;
mod sink;

pub use cdc::{PostgresCdcAcker, PostgresCdcSource, PostgresCdcSourceConfig, SnapshotMode};
pub use sink::{PostgresSink, PostgresSinkConfig};

use std::error::Error as _;

use tokio_postgres::{Client, Config, NoTls};

use super::ConnectorError;
use super::sql::{Failure, classify_state};

/// The connector's name in errors and logs.
pub(crate) const CONNECTOR: &str = "postgres";

/// Parses a connection string (URL or `key=value` pairs).
pub(crate) fn parse_url(url: &str) -> Result<Config, ConnectorError> {
    url.parse::<Config>().map_err(|e| {
        ConnectorError::server(
            CONNECTOR,
            "(connection string)",
            "read the connection string",
            e,
            "write it as `postgres://user:password@host:5432/database` or `host=... user=... dbname=...`",
        )
    })
}

/// Where a configuration connects to, without its password:
/// `user@host:port/database`.
pub(crate) fn describe(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{db}")
}

/// Opens a connection whose session formats dates as ISO 8601 in UTC.
pub(crate) async fn connect(config: &Config) -> Result<Client, tokio_postgres::Error> {
    let mut config = config.clone();
    if config.get_application_name().is_none() {
        config.application_name("syncflow");
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(connector = CONNECTOR, %error, "connection closed");
        }
    });
    client
        .batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 3; SET IntervalStyle = 'iso_8601'")
        .await?;
    Ok(client)
}

/// A client error as text: the server's message, code and detail.
pub(crate) fn error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str("; ");
                text.push_str(detail);
            }
            text
        }
        None => match error.source() {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// How to handle a failed operation.
pub(crate) fn classify(error: &tokio_postgres::Error) -> Failure {
    let text = error_text(error);
    if let Some(db) = error.as_db_error() {
        // 55006: the replication slot is still used by a session that is
        // going away (a source that just stopped): worth retrying.
        if db.code().code() == "55006" {
            return Failure::Transient(text);
        }
        return classify_state(db.code().code(), text);
    }
    let io = error
        .source()
        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
    if error.is_closed()
        || io
        || text.starts_with("error connecting")
        || text.starts_with("error communicating")
    {
        Failure::Connection(text)
    } else {
        Failure::Fatal(text)
    }
}

/// Splits `schema.table` (or `table`, in `public`).
pub(crate) fn split_table(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((schema, table)) => (schema.to_string(), table.to_string()),
        None => ("public".to_string(), name.to_string()),
    }
}
