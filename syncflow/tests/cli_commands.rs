//! The command line: listings, runs, and the errors users meet first.

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};
use syncflow::cli::Cli;
use syncflow::prelude::*;

#[derive(Debug, Deserialize)]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[derive(Debug, Serialize)]
struct Fahrenheit {
    sensor: String,
    fahrenheit: f64,
}

/// Converts a reading to Fahrenheit.
///
/// Second paragraph, not part of the summary.
#[sync_function]
fn to_fahrenheit(r: Reading) -> Fahrenheit {
    Fahrenheit {
        sensor: r.sensor,
        fahrenheit: r.celsius * 9.0 / 5.0 + 32.0,
    }
}

/// Refuses readings below absolute zero.
#[sync_function]
fn plausible(r: Reading) -> Result<Reading, String> {
    if r.celsius < -273.15 {
        Err(format!("{} °C is below absolute zero", r.celsius))
    } else {
        Ok(r)
    }
}

fn cli() -> Cli {
    Cli::new()
        .flow("temperatures", || flow!(plausible -> to_fahrenheit))
        .keyed_flow(
            "temperatures-by-sensor",
            || flow!(plausible -> to_fahrenheit),
            |r: &Reading| r.sensor.clone(),
        )
}

/// Runs the command line in-process; returns (exit code, stdout, stderr).
fn exec(args: &[&str]) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let args = std::iter::once("my-flows").chain(args.iter().copied());
    let code = cli().execute(args, &mut out, &mut err);
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn functions_lists_registered_functions_sorted_as_a_table() {
    let (code, out, err) = exec(&["functions"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("NAME"), "{out}");
    for column in ["INPUT → OUTPUT", "SHAPE", "ASYNC", "SUMMARY", "LOCATION"] {
        assert!(header.contains(column), "{header}");
    }
    let rows: Vec<&str> = lines.collect();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r.split_whitespace().next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "not sorted:\n{out}");
    let row = rows
        .iter()
        .find(|r| r.starts_with("to_fahrenheit "))
        .unwrap_or_else(|| panic!("to_fahrenheit missing:\n{out}"));
    assert!(row.contains("Reading → Fahrenheit"), "{row}");
    assert!(row.contains(" map "), "{row}");
    assert!(row.contains("Converts a reading to Fahrenheit."), "{row}");
    assert!(!row.contains("Second paragraph"), "{row}");
    assert!(row.contains("cli_commands.rs:"), "{row}");
    let plausible = rows.iter().find(|r| r.starts_with("plausible ")).unwrap();
    assert!(plausible.contains("fallible map"), "{plausible}");
}

#[test]
fn functions_json_has_full_type_names_and_locations() {
    let (code, out, _) = exec(&["functions", "--json"]);
    assert_eq!(code, 0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = list.iter().map(|f| f["name"].as_str().unwrap()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let f = list.iter().find(|f| f["name"] == "to_fahrenheit").unwrap();
    assert_eq!(f["input"], "cli_commands::Reading");
    assert_eq!(f["output"], "cli_commands::Fahrenheit");
    assert_eq!(f["shape"], "map");
    assert_eq!(f["async"], false);
    assert_eq!(f["summary"], "Converts a reading to Fahrenheit.");
    assert!(f["file"].as_str().unwrap().ends_with("cli_commands.rs"));
    assert!(f["line"].as_u64().unwrap() > 0);
}

#[test]
fn flows_lists_the_registered_flows() {
    let (code, out, _) = exec(&["flows"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("FLOW"), "{out}");
    assert!(
        out.contains("temperatures            Reading → Fahrenheit  plausible -> to_fahrenheit"),
        "{out}"
    );
    assert!(out.contains("temperatures-by-sensor"), "{out}");
    let (_, json, _) = exec(&["flows", "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(list[1]["keyed"], true);
    assert_eq!(list[0]["keyed"], false);
}

#[test]
fn an_unknown_flow_suggests_the_closest_names() {
    let (code, out, err) = exec(&["run", "temperatrues"]);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "error: unknown flow `temperatrues`; did you mean `temperatures`? \
         (flows in this binary: temperatures, temperatures-by-sensor; list them with the `flows` command)\n"
    );
}

#[test]
fn a_missing_input_file_says_which_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let (code, _, err) = exec(&["run", "temperatures", "--input", missing.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.starts_with(&format!(
            "error: cannot open input file `{}`: ",
            missing.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("pass `--input -` to read standard input"),
        "{err}"
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn run_writes_every_output_and_dead_letters_and_prints_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"sensor\":\"a\",\"celsius\":100}\nnot json\n{\"sensor\":\"b\",\"celsius\":-300}\n{\"sensor\":\"a\",\"celsius\":0}\n",
    )
    .unwrap();
    let (a, b, dead) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("dead.jsonl"),
    );
    let (code, out, err) = exec(&[
        "run",
        "temperatures-by-sensor",
        "-i",
        input.to_str().unwrap(),
        "-o",
        a.to_str().unwrap(),
        "--output",
        b.to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
        "--workers",
        "2",
        "--batch-size",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "");
    let expected =
        "{\"sensor\":\"a\",\"fahrenheit\":212.0}\n{\"sensor\":\"a\",\"fahrenheit\":32.0}\n";
    assert_eq!(read(&a), expected);
    assert_eq!(read(&b), expected);
    let dead: Vec<DeadLetter> = read(&dead)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<_> = dead
        .iter()
        .map(|d| (d.position, d.stage.as_str()))
        .collect();
    assert_eq!(got, vec![(2, "decode"), (3, "plausible")]);
    assert!(
        err.starts_with("flow `temperatures-by-sensor (plausible->to_fahrenheit)` from `"),
        "{err}"
    );
    assert!(err.contains("malformed"), "{err}");
    assert!(err.contains("plausible"), "{err}");
}

#[test]
fn run_with_a_state_dir_resumes_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let state = dir.path().join("state");
    std::fs::write(&input, "{\"sensor\":\"a\",\"celsius\":100}\n").unwrap();
    let args = |_: ()| {
        vec![
            "run".to_string(),
            "temperatures".into(),
            "-i".into(),
            input.display().to_string(),
            "-o".into(),
            output.display().to_string(),
            "--state-dir".into(),
            state.display().to_string(),
        ]
    };
    let run = || {
        let a = args(());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        exec(&a)
    };
    assert_eq!(run().0, 0);
    let mut more = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    std::io::Write::write_all(&mut more, b"{\"sensor\":\"b\",\"celsius\":0}\n").unwrap();
    let (code, _, err) = run();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("in                    1"), "{err}");
    assert_eq!(
        read(&output),
        "{\"sensor\":\"a\",\"fahrenheit\":212.0}\n{\"sensor\":\"b\",\"fahrenheit\":32.0}\n"
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    let (code, _, err) = exec(&["run", "temperatures", "--workers", "0"]);
    assert_eq!(code, 2);
    assert!(err.contains("--workers"), "{err}");
    let (code, out, _) = exec(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("functions"), "{out}");
}

#[test]
fn the_stock_binary_lists_functions_and_explains_that_it_has_no_flows() {
    let bin = env!("CARGO_BIN_EXE_syncflow");
    let out = Command::new(bin).arg("functions").output().unwrap();
    assert!(out.status.success());
    let out = Command::new(bin).args(["run", "orders"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown flow `orders`"), "{err}");
    assert!(err.contains("Cli::new().flow("), "{err}");
}

#[tokio::test]
async fn running_from_inside_an_async_runtime_is_refused_with_an_explanation() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "").unwrap();
    let (code, _, err) = exec(&["run", "temperatures", "-i", input.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("from a plain (non-async) `fn main`"), "{err}");
}
