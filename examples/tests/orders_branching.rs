//! The flow-file example (`flows/orders.yaml`): Save/Load branching, run by
//! its binary as a user would run it.

use std::process::Command;

// Links the example library, whose functions the flow file names.
use syncflow_examples as _;

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn the_branching_example_gives_the_rows_of_the_static_flow() {
    let dir = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_orders_branching"))
        .env("OUT_DIR", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    for flow in ["flow `orders`", "flow `rows`", "flow `audit`"] {
        assert!(stderr.contains(flow), "a summary per flow: {stderr}");
    }

    // The same events through the static `flow!` of the `orders` binary.
    let reference = dir.path().join("reference-rows.jsonl");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orders.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_orders"))
        .args(["run", "orders", "--input"])
        .arg(&data)
        .arg("--output")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );

    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let rows = read("order-rows.jsonl");
    assert_eq!(rows.lines().count(), 10, "{rows}");
    assert_eq!(
        sorted_lines(&rows),
        sorted_lines(&std::fs::read_to_string(&reference).unwrap())
    );
    // The audit branch got every valid order, as saved.
    let audit = read("valid-orders.jsonl");
    assert_eq!(audit.lines().count(), 6, "{audit}");
    for line in audit.lines() {
        let order: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            order["order"]["id"].is_u64() && order["unit_cents"].is_array(),
            "{line}"
        );
    }
    // Six events could not be processed: each is dead-lettered with its reason.
    let dead = read("orders-branching-dead-letters.jsonl");
    assert_eq!(dead.lines().count(), 6, "{dead}");
    assert!(dead.contains("unsupported currency `JPY`"), "{dead}");

    // A second run saves the events again; each branch reads only what is
    // new since its cursor, so its output holds this run's rows only.
    let again = Command::new(env!("CARGO_BIN_EXE_orders_branching"))
        .env("OUT_DIR", dir.path())
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(sorted_lines(&read("order-rows.jsonl")), sorted_lines(&rows));

    // `check` and `channels` through the same binary.
    let check = Command::new(env!("CARGO_BIN_EXE_orders_branching"))
        .env("OUT_DIR", dir.path())
        .arg("check")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/orders.yaml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success() && text.contains("3 flows checked, no errors"),
        "{text}"
    );
    let channels = Command::new(env!("CARGO_BIN_EXE_orders_branching"))
        .args(["channels", "--json"])
        .arg(dir.path().join("orders-channels.redb"))
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&channels.stdout).unwrap();
    assert_eq!(json[0]["name"], "valid_orders");
    assert_eq!(json[0]["length"], 12, "two runs saved six orders each");
    for reader in json[0]["readers"].as_array().unwrap() {
        assert_eq!(reader["lag"], 0, "{reader}");
    }
}

#[test]
fn the_flow_files_own_tests_pass() {
    let run = Command::new(env!("CARGO_BIN_EXE_orders_branching"))
        .arg("test")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/orders.yaml"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(out.contains("test result: ok. 3 passed; 0 failed"), "{out}");
}

#[test]
fn the_flow_file_needs_the_catalog_resource() {
    // A program that runs the file without giving `Res<Catalog>` is told so.
    let dir = tempfile::tempdir().unwrap();
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/orders.yaml");
    let mut out = Vec::new();
    let mut err = Vec::new();
    // SAFETY: the variables are only read by this test's CLI call.
    unsafe {
        std::env::set_var("EXAMPLES_DIR", env!("CARGO_MANIFEST_DIR"));
        std::env::set_var("OUT_DIR", dir.path());
    }
    let code = syncflow::cli::Cli::new().execute(
        ["x", "check", file.to_str().unwrap()],
        &mut out,
        &mut err,
    );
    let err = String::from_utf8(err).unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("flow `rows`: ") && err.contains("Catalog"),
        "{err}"
    );
}
