//! The binlog CDC source when the server logs minimal table metadata
//! (`binlog_row_metadata=MINIMAL`): column names, signedness, character
//! sets and ENUM values then come from `information_schema`.
//!
//! A test binary of its own: it changes a global server setting for a
//! moment, which must not overlap the other binlog tests (cargo runs test
//! binaries one after the other). The setting is restored even on failure.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::json;
use syncflow::cdc::{CdcOp, ChangeEvent};
use syncflow::connector::{
    ConnectorError, MysqlCdcSource, MysqlCdcSourceConfig, SnapshotMode, serde_decode,
};
use syncflow::prelude::*;
use syncflow::runtime::Shutdown;
use syncflow_tests::services::{require, unique};

const URL: &str = "mysql://root@127.0.0.1:3306";

/// Passes each change event through.
#[sync_function]
fn cdc_minimal_pass(e: ChangeEvent) -> ChangeEvent {
    e
}

struct Collect(Arc<Mutex<Vec<ChangeEvent>>>);

impl Sink<ChangeEvent> for Collect {
    fn name(&self) -> String {
        "collect".into()
    }
    async fn write(&mut self, items: &[ChangeEvent]) -> Result<(), ConnectorError> {
        self.0.lock().unwrap().extend_from_slice(items);
        Ok(())
    }
    async fn flush(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

async fn conn() -> mysql_async::Conn {
    let opts = mysql_async::OptsBuilder::from_opts(mysql_async::Opts::from_url(URL).unwrap())
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await.unwrap()
}

async fn body(db: String) {
    let mut c = conn().await;
    c.query_drop(format!("CREATE DATABASE `{db}`"))
        .await
        .unwrap();
    c.query_drop(format!("USE `{db}`")).await.unwrap();
    c.query_drop(
        "CREATE TABLE t (id INT UNSIGNED PRIMARY KEY, big BIGINT UNSIGNED, name VARCHAR(10), \
         e ENUM('x','y'), s SET('p','q'), b VARBINARY(4), j JSON)",
    )
    .await
    .unwrap();
    let mut config = MysqlCdcSourceConfig::new(URL);
    config.include = vec![format!("{db}.*")];
    config.snapshot = SnapshotMode::Never;
    let source = MysqlCdcSource::<ChangeEvent>::connect(&config, serde_decode)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shutdown = Shutdown::new();
    let task = tokio::spawn(
        Runtime::new(flow!(cdc_minimal_pass))
            .source(source)
            .sink(Collect(seen.clone()))
            .with_shutdown(shutdown.clone())
            .handle_signals(false)
            .run(),
    );
    c.query_drop(
        "INSERT INTO t VALUES (4000000000, 18446744073709551615, 'héllo', 'y', 'p,q', X'0102', '[1]')",
    )
    .await
    .unwrap();
    c.query_drop("UPDATE t SET e = 'x' WHERE id = 4000000000")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while seen.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.shutdown();
    task.await.unwrap().unwrap();
    let seen = seen.lock().unwrap().clone();
    let row = json!({"id": 4000000000u64, "big": u64::MAX, "name": "héllo", "e": "y", "s": "p,q", "b": "AQI=", "j": [1]});
    assert_eq!(seen[0].op, CdcOp::Insert);
    assert_eq!(serde_json::to_value(&seen[0].after).unwrap(), row);
    let mut updated = row.clone();
    updated["e"] = json!("x");
    assert_eq!(serde_json::to_value(&seen[1].before).unwrap(), row);
    assert_eq!(serde_json::to_value(&seen[1].after).unwrap(), updated);
    c.query_drop(format!("DROP DATABASE `{db}`")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_types_come_from_information_schema_with_minimal_metadata() {
    if !require("mariadb") {
        return;
    }
    let mut admin = conn().await;
    let before: String = admin
        .query_first("SELECT @@global.binlog_row_metadata")
        .await
        .unwrap()
        .unwrap();
    admin
        .query_drop("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
        .await
        .unwrap();
    let db = unique("cdc_minimal");
    let result = tokio::spawn(body(db.clone())).await;
    admin
        .query_drop(format!("SET GLOBAL binlog_row_metadata = '{before}'"))
        .await
        .unwrap();
    let _ = admin
        .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
        .await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic.into_panic());
    }
}
