//! Connectors in flow files, against the real services: a PostgreSQL table
//! replicated into MariaDB by a flow file (pgoutput CDC source → MySQL
//! upsert sink), and the load-time errors of connector settings.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use syncflow::config;
use syncflow::connector::postgres::PostgresCdcSourceConfig;
use syncflow::runtime::Shutdown;
use syncflow_tests::services::{require, unique};

const PG: &str = "host=127.0.0.1 user=postgres dbname=test";
const MY: &str = "mysql://root@127.0.0.1:3306/test";

async fn pg() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(PG, tokio_postgres::NoTls)
        .await
        .expect("connect to PostgreSQL");
    tokio::spawn(connection);
    client
}

/// Waits until the PostgreSQL table holds exactly `want` (id, name), in id order.
async fn wait_pg(client: &tokio_postgres::Client, table: &str, want: &[(i64, &str)]) {
    let want: Vec<(i64, String)> = want.iter().map(|(i, s)| (*i, s.to_string())).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows: Vec<(i64, String)> = client
            .query(&format!("SELECT id, name FROM {table} ORDER BY id"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        if rows == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{rows:?} != {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn my_rows(conn: &mut mysql_async::Conn, table: &str) -> Vec<(i64, String)> {
    conn.query(format!("SELECT id, name FROM {table} ORDER BY id"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_file_replicates_postgres_into_mariadb() {
    if !require("postgres") || !require("mariadb") {
        return;
    }
    let table = unique("yaml_repl");
    let slot = unique("yaml_slot");
    let publication = unique("yaml_pub");
    let client = pg().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL);
             INSERT INTO {table} VALUES (1, 'one'), (2, 'two');"
        ))
        .await
        .unwrap();
    let mut my = mysql_async::Conn::new(mysql_async::Opts::from_url(MY).unwrap())
        .await
        .unwrap();
    my.query_drop(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL)"
    ))
    .await
    .unwrap();

    // The connection strings come from the environment, as secrets would.
    // SAFETY: set before any thread of this test reads the environment.
    unsafe {
        std::env::set_var("SYNCFLOW_TEST_PG", PG);
        std::env::set_var("SYNCFLOW_TEST_MY", MY);
    }
    let yaml = format!(
        r#"
flows:
  replicate:
    source:
      postgres: {{ url: "${{SYNCFLOW_TEST_PG}}", tables: [{table}], slot: {slot}, publication: {publication}, poll_interval_ms: 50 }}
    sinks:
      - mysql: {{ url: "${{SYNCFLOW_TEST_MY}}", table: {table} }}
"#
    );
    let plan = config::load_str(&yaml, "replicate.yaml").expect("valid");
    let shutdown = Shutdown::new();
    let run = tokio::spawn(plan.run(shutdown.clone(), false));

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let expect_rows = |rows: Vec<(i64, String)>, want: &[(i64, &str)]| {
        rows == want
            .iter()
            .map(|(i, s)| (*i, s.to_string()))
            .collect::<Vec<_>>()
    };
    // The snapshot arrives first...
    while !expect_rows(my_rows(&mut my, &table).await, &[(1, "one"), (2, "two")]) {
        assert!(
            std::time::Instant::now() < deadline,
            "snapshot not replicated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... then every change.
    client
        .batch_execute(&format!(
            "UPDATE {table} SET name = 'uno' WHERE id = 1;
             DELETE FROM {table} WHERE id = 2;
             INSERT INTO {table} VALUES (3, 'three');"
        ))
        .await
        .unwrap();
    while !expect_rows(my_rows(&mut my, &table).await, &[(1, "uno"), (3, "three")]) {
        assert!(
            std::time::Instant::now() < deadline,
            "changes not replicated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.shutdown();
    let results = run.await.unwrap();
    let summary = results[0].1.as_ref().expect("the flow ran");
    assert_eq!(
        summary.output, 5,
        "2 snapshot rows and 3 changes: {summary}"
    );

    // Clean up: the slot and publication, and both tables.
    let cdc = PostgresCdcSourceConfig {
        slot: slot.clone(),
        publication: publication.clone(),
        ..PostgresCdcSourceConfig::new(PG, [table.as_str()])
    };
    assert!(cdc.drop_slot().await.unwrap());
    cdc.drop_publication().await.unwrap();
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    my.query_drop(format!("DROP TABLE {table}")).await.unwrap();
}

#[test]
fn connector_settings_are_checked_at_load() {
    let yaml = r#"
flows:
  f:
    source: { postgres: { url: "host=x", tabels: [t] } }
    sinks:
      - mysql: { table: t }
      - { mysql: { url: "mysql://x/y", table: t }, fsync: true }
      - { file: out.jsonl, postgres: { url: "host=x", table: t } }
"#;
    let text = config::load_str(yaml, "c.yaml").unwrap_err().to_string();
    assert!(
        text.contains("c.yaml:4:13: source postgres: unknown field `tabels`"),
        "{text}"
    );
    assert!(
        text.contains("c.yaml:6:9: sink mysql: missing field `url`"),
        "{text}"
    );
    assert!(
        text.contains(
            "`append` and `fsync` apply to a `file` sink only, not to the `mysql` connector"
        ),
        "{text}"
    );
    assert!(
        text.contains("a sink is exactly one of `file: <path>`, `stdout: true`, `save: <channel>` or a connector (`postgres`, `mysql`"),
        "{text}"
    );
    let unset = "flows:\n  f:\n    source: { postgres: { url: \"${SYNCFLOW_SURELY_UNSET}\" } }\n";
    let text = config::load_str(unset, "u.yaml").unwrap_err().to_string();
    assert!(
        text.contains("source postgres: ") && text.contains("SYNCFLOW_SURELY_UNSET"),
        "{text}"
    );
}

#[test]
fn syncflow_connectors_lists_what_is_compiled_in() {
    let (code, table, _) = syncflow_tests::cli(&["connectors"]);
    assert_eq!(code, 0);
    // This test binary is built with the connector features.
    for key in ["file", "postgres", "mysql"] {
        let line = table
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no `{key}` line in\n{table}"));
        assert!(line.contains("yes"), "{line}");
    }
    let (code, json, _) = syncflow_tests::cli(&["connectors", "--json"]);
    assert_eq!(code, 0);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let postgres = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == "postgres")
        .unwrap();
    assert_eq!(postgres["feature"], "postgres");
    assert_eq!(postgres["compiled_in"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_file_moves_a_rabbitmq_queue_into_another() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
    if !require("rabbitmq") {
        return;
    }
    let (input, output) = (unique("yaml_in"), unique("yaml_out"));
    let conn = lapin::Connection::connect(
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    for queue in [&input, &output] {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
    }
    for i in 0..20 {
        channel
            .basic_publish(
                "".into(),
                input.as_str().into(),
                BasicPublishOptions::default(),
                format!("{{\"n\":{i}}}").as_bytes(),
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let yaml = format!(
        r#"
flows:
  relay:
    source: {{ amqp: {{ queue: {input}, prefetch: 50 }} }}
    steps:
      - set: {{ relayed: {{ value: true }} }}
    sinks:
      - amqp: {{ exchange: "", routing_key: {output} }}
"#
    );
    let plan = config::load_str(&yaml, "relay.yaml").expect("valid");
    let shutdown = Shutdown::new();
    let run = tokio::spawn(plan.run(shutdown.clone(), false));
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while got.len() < 20 {
        assert!(std::time::Instant::now() < deadline, "got only {got:?}");
        match channel
            .basic_get(output.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(message) => got
                .push(serde_json::from_slice::<serde_json::Value>(&message.delivery.data).unwrap()),
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    shutdown.shutdown();
    let results = run.await.unwrap();
    assert!(results[0].1.is_ok(), "{:?}", results[0].1);
    for (i, message) in got.iter().enumerate() {
        assert_eq!(message, &serde_json::json!({ "n": i, "relayed": true }));
    }
    for queue in [&input, &output] {
        channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_file_replicates_mariadb_into_postgres_from_the_binlog() {
    if !require("mariadb") || !require("postgres") {
        return;
    }
    let table = unique("yaml_binlog");
    let dir = tempfile::tempdir().unwrap();
    let mut my = mysql_async::Conn::new(mysql_async::Opts::from_url(MY).unwrap())
        .await
        .unwrap();
    my.query_drop(format!(
        "CREATE TABLE {table} (id BIGINT PRIMARY KEY, name VARCHAR(64) NOT NULL);
         INSERT INTO {table} VALUES (1, 'one'), (2, 'two')"
    ))
    .await
    .unwrap();
    let client = pg().await;
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, name text NOT NULL)"
        ))
        .await
        .unwrap();
    let yaml = format!(
        r#"
flows:
  replicate:
    source:
      mysql_cdc: {{ url: "{MY}", include: ["test.{table}"], state_dir: "{state}" }}
    sinks:
      - postgres: {{ url: "{PG}", table: {table} }}
"#,
        state = dir.path().display()
    );
    let shutdown = Shutdown::new();
    let plan = config::load_str(&yaml, "binlog.yaml").expect("valid");
    let run = tokio::spawn(plan.run(shutdown.clone(), false));
    wait_pg(&client, &table, &[(1, "one"), (2, "two")]).await;
    my.query_drop(format!(
        "UPDATE {table} SET name = 'uno' WHERE id = 1; DELETE FROM {table} WHERE id = 2; INSERT INTO {table} VALUES (3, 'three')"
    ))
    .await
    .unwrap();
    wait_pg(&client, &table, &[(1, "uno"), (3, "three")]).await;
    shutdown.shutdown();
    assert!(run.await.unwrap()[0].1.is_ok());

    // A second run resumes from the checkpoint: no new snapshot, only the
    // changes made while it was stopped.
    my.query_drop(format!("INSERT INTO {table} VALUES (4, 'four')"))
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let plan = config::load_str(&yaml, "binlog.yaml").expect("valid");
    let run = tokio::spawn(plan.run(shutdown.clone(), false));
    wait_pg(&client, &table, &[(1, "uno"), (3, "three"), (4, "four")]).await;
    shutdown.shutdown();
    let results = run.await.unwrap();
    let summary = results[0].1.as_ref().unwrap();
    assert_eq!(summary.input, 1, "only the new insert was read: {summary}");

    my.query_drop(format!("DROP TABLE {table}")).await.unwrap();
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}
