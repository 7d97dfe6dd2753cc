//! The orders example binary, run as a user would run it.

use std::process::Command;

use syncflow_examples::orders::OrderRow;

fn data() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/orders.jsonl")
}

#[test]
fn the_readme_command_prints_rows_and_a_summary() {
    let out = Command::new(env!("CARGO_BIN_EXE_orders")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<OrderRow> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 10);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "in                   14",
        "out                  10",
        "malformed             1",
    ] {
        assert!(
            stderr.contains(expected),
            "summary lacks `{expected}`:\n{stderr}"
        );
    }
}

#[test]
fn run_with_files_writes_rows_and_dead_letters_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, dead) = (dir.path().join("rows.jsonl"), dir.path().join("dead.jsonl"));
    let status = Command::new(env!("CARGO_BIN_EXE_orders"))
        .args(["run", "orders", "--workers", "2", "--input"])
        .arg(data())
        .arg("--output")
        .arg(&rows)
        .arg("--dead-letter")
        .arg(&dead)
        .env("SYNCFLOW_LOG", "error")
        .status()
        .unwrap();
    assert!(status.success());

    let rows: Vec<OrderRow> = std::fs::read_to_string(&rows)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Per-key order: the update of order 1002 (paid) comes after its creation.
    let statuses: Vec<&str> = rows
        .iter()
        .filter(|r| r.order_id == 1002)
        .map(|r| r.status.as_str())
        .collect();
    assert_eq!(statuses, ["pending", "paid"]);
    assert_eq!(rows.len(), 10);

    let dead: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut stages: Vec<(u64, &str)> = dead
        .iter()
        .map(|d| {
            (
                d["position"].as_u64().unwrap(),
                d["stage"].as_str().unwrap(),
            )
        })
        .collect();
    stages.sort();
    assert_eq!(
        stages,
        [
            (5, "validate"),
            (8, "validate"),
            (9, "decode"),
            (10, "parse"),
            (12, "validate"),
            (14, "parse")
        ]
    );
    assert!(
        dead.iter()
            .all(|d| d["input"].as_str().is_some_and(|raw| raw.starts_with('{')))
    );
}

#[test]
fn functions_lists_the_example_steps() {
    let out = Command::new(env!("CARGO_BIN_EXE_orders"))
        .arg("functions")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<usize> = ["enrich", "parse", "to_row", "validate"]
        .iter()
        .map(|n| text.find(n).unwrap())
        .collect();
    assert!(names.windows(2).all(|w| w[0] < w[1]), "not sorted:\n{text}");
}

/// Reads standard input as a stream, then drains and exits 0 on SIGTERM.
#[cfg(unix)]
#[test]
fn sigterm_drains_a_streaming_run_and_exits_zero() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = Command::new(env!("CARGO_BIN_EXE_orders"))
        .args(["run", "orders", "--input", "-", "--output", "-"])
        .env("SYNCFLOW_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let first = std::fs::read_to_string(data())
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    writeln!(stdin, "{first}").unwrap();
    stdin.flush().unwrap();

    // The run streams: the rows of the first event arrive while stdin is
    // still open. (Read on a thread, so that a broken stream fails the test
    // instead of hanging it.)
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rows) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first_row = rows.recv_timeout(Duration::from_secs(20));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let row: OrderRow =
        serde_json::from_str(&first_row.expect("a row while stdin is open")).unwrap();
    assert_eq!((row.order_id, row.line_no), (1001, 1));

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit 20 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}");
    reader.join().unwrap();
    let rest: Vec<String> = rows.try_iter().collect();
    assert_eq!(
        rest.len(),
        1,
        "the second row of order 1001 is flushed before exit: {rest:?}"
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in                    1"),
        "summary missing:\n{stderr}"
    );
    drop(stdin);
}
