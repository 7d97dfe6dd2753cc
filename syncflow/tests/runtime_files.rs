//! File to file runs: exact outputs, malformed input, step failures,
//! several sinks, setup errors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use syncflow::prelude::*;
use syncflow::runtime::StopReason;

#[derive(Debug, Deserialize)]
struct Order {
    id: u64,
    cents: i64,
}

#[derive(Debug, Serialize)]
struct Charge {
    id: u64,
    euros: String,
}

/// Drops free orders.
#[sync_function]
fn paid(o: Order) -> Option<Order> {
    (o.cents != 0).then_some(o)
}

/// Turns an order into a charge; refuses negative amounts.
#[sync_function]
fn charge(o: Order) -> Result<Charge, String> {
    if o.cents < 0 {
        return Err(format!("negative amount {}", o.cents));
    }
    Ok(Charge {
        id: o.id,
        euros: format!("{}.{:02}", o.cents / 100, o.cents % 100),
    })
}

struct Files {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Files {
            root: dir.path().to_path_buf(),
            _dir: dir,
        }
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn dead_letters(path: &Path) -> Vec<DeadLetter> {
    read(path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_to_file_outputs_are_exact() {
    let files = Files::new();
    let input = files.write(
        "orders.jsonl",
        "{\"id\":1,\"cents\":1250}\n{\"id\":2,\"cents\":0}\n{\"id\":3,\"cents\":99}\n{\"id\":4,\"cents\":100000}\n",
    );
    let output = files.path("charges.jsonl");
    let summary = Runtime::new(flow!(name = "charges", paid -> charge))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(JsonLinesSink::create(&output).unwrap())
        .handle_signals(false)
        .batch_size(2)
        .run()
        .await
        .unwrap();
    assert_eq!(
        read(&output),
        "{\"id\":1,\"euros\":\"12.50\"}\n{\"id\":3,\"euros\":\"0.99\"}\n{\"id\":4,\"euros\":\"1000.00\"}\n"
    );
    assert_eq!(summary.stop, StopReason::EndOfInput);
    assert_eq!(
        (
            summary.input,
            summary.output,
            summary.filtered,
            summary.failed,
            summary.malformed
        ),
        (4, 3, 1, 0, 0)
    );
    assert_eq!(summary.batches, 2);
    let steps: Vec<_> = summary
        .steps
        .iter()
        .map(|s| (s.name, s.calls, s.out, s.filtered))
        .collect();
    assert_eq!(steps, vec![("paid", 4, 3, 1), ("charge", 3, 3, 0)]);
    let table = summary.to_string();
    assert!(table.contains("flow `charges`"), "{table}");
    assert!(table.contains("msg/s"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_are_counted_and_dead_lettered_while_the_rest_goes_through() {
    let files = Files::new();
    let input = files.write(
        "orders.jsonl",
        concat!(
            "{\"id\":1,\"cents\":100}\n",
            "{\"id\":2,\"cents\":\n",            // line 2: bad JSON
            "\n",                                // line 3: blank, skipped
            "{\"id\":\"four\",\"cents\":400}\n", // line 4: wrong shape
            "{\"id\":5,\"cents\":500}\n",
        ),
    );
    let output = files.path("out.jsonl");
    let dead = files.path("dead.jsonl");
    let summary = Runtime::new(flow!(charge))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(JsonLinesSink::create(&output).unwrap())
        .dead_letter(&dead)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(
        read(&output),
        "{\"id\":1,\"euros\":\"1.00\"}\n{\"id\":5,\"euros\":\"5.00\"}\n"
    );
    assert_eq!(
        (summary.input, summary.output, summary.malformed),
        (4, 2, 2)
    );
    assert_eq!(summary.dead_lettered, 2);

    let dead = dead_letters(&dead);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].position, 2);
    assert_eq!(dead[0].stage, "decode");
    assert_eq!(dead[0].step_index, None);
    assert_eq!(dead[0].input, "{\"id\":2,\"cents\":");
    assert!(dead[0].error.contains("EOF"), "{}", dead[0].error);
    assert_eq!(dead[0].source, input.display().to_string());
    assert_eq!(dead[1].position, 4);
    assert!(dead[1].error.contains("invalid type"), "{}", dead[1].error);
    assert_eq!(dead[1].input, "{\"id\":\"four\",\"cents\":400}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_failures_are_dead_lettered_with_the_step_and_the_raw_line() {
    let files = Files::new();
    let input = files.write(
        "orders.jsonl",
        "{\"id\":1,\"cents\":-5}\n{\"id\":2,\"cents\":0}\n{\"id\":3,\"cents\":7}\n{\"id\":4, \"cents\":-1}\n",
    );
    let output = files.path("out.jsonl");
    let dead = files.path("dead.jsonl");
    // An existing dead-letter file is appended to, never truncated.
    std::fs::write(&dead, "").unwrap();
    let summary = Runtime::new(flow!(paid -> charge))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(JsonLinesSink::create(&output).unwrap())
        .dead_letter(&dead)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!(read(&output), "{\"id\":3,\"euros\":\"0.07\"}\n");
    assert_eq!(
        (
            summary.input,
            summary.output,
            summary.filtered,
            summary.failed
        ),
        (4, 1, 1, 2)
    );
    let dead = dead_letters(&dead);
    let got: Vec<_> = dead
        .iter()
        .map(|d| {
            (
                d.position,
                d.stage.as_str(),
                d.step_index,
                d.error.as_str(),
                d.input.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                1,
                "charge",
                Some(1),
                "negative amount -5",
                "{\"id\":1,\"cents\":-5}"
            ),
            (
                4,
                "charge",
                Some(1),
                "negative amount -1",
                "{\"id\":4, \"cents\":-1}"
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sink_gets_every_output() {
    let files = Files::new();
    let lines: String = (1..=2500)
        .map(|i| format!("{{\"id\":{i},\"cents\":{i}}}\n"))
        .collect();
    let input = files.write("orders.jsonl", &lines);
    let (a, b) = (files.path("a.jsonl"), files.path("b.jsonl"));
    let summary = Runtime::new(flow!(charge))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(JsonLinesSink::create(&a).unwrap())
        .sink(JsonLinesSink::create(&b).unwrap().fsync(false))
        .batch_size(100)
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    let expected: String = (1..=2500i64)
        .map(|i| format!("{{\"id\":{i},\"euros\":\"{}.{:02}\"}}\n", i / 100, i % 100))
        .collect();
    assert_eq!(read(&a), expected);
    assert_eq!(read(&b), expected);
    assert_eq!(summary.output, 2500);
    assert_eq!(summary.batches, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sinks_outputs_are_counted_and_dropped() {
    let files = Files::new();
    let input = files.write(
        "orders.jsonl",
        "{\"id\":1,\"cents\":1}\n{\"id\":2,\"cents\":2}\n",
    );
    let summary = Runtime::new(flow!(charge))
        .source(JsonLinesSource::open(&input).unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap();
    assert_eq!((summary.input, summary.output), (2, 2));
}

#[tokio::test]
async fn an_unwritable_dead_letter_file_stops_the_run_before_it_reads() {
    let files = Files::new();
    let input = files.write("orders.jsonl", "{\"id\":1,\"cents\":1}\n");
    let output = files.path("out.jsonl");
    let dead = files.path("no-such-dir/dead.jsonl");
    let err = Runtime::new(flow!(charge))
        .source(JsonLinesSource::open(&input).unwrap())
        .sink(JsonLinesSink::create(&output).unwrap())
        .dead_letter(&dead)
        .handle_signals(false)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::DeadLetter { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("no-such-dir/dead.jsonl"), "{text}");
    assert!(text.contains("create the directory"), "{text}");
    assert_eq!(read(&output), "");
}

#[test]
fn a_missing_input_file_names_the_path() {
    let err = JsonLinesSource::<i64>::open("/definitely/not/here.jsonl").unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot open input file `/definitely/not/here.jsonl`:"),
        "{text}"
    );
    assert!(text.contains("check the path"), "{text}");
}

/// Looks a price up in a table registered as a resource.
#[sync_function]
fn priced(id: u64, table: Res<Vec<i64>>) -> Option<i64> {
    table.get().get(id as usize).copied()
}

#[tokio::test]
async fn missing_resources_stop_the_run_before_it_reads() {
    let files = Files::new();
    let input = files.write("ids.jsonl", "1\n");
    let err = Runtime::new(flow!(priced))
        .source(JsonLinesSource::open(&input).unwrap())
        .handle_signals(false)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, RunError::Check(_)), "{err:?}");
    assert!(
        err.to_string().contains("Res<alloc::vec::Vec<i64>>"),
        "{err}"
    );
}

#[tokio::test]
async fn zero_workers_is_a_clear_setting_error() {
    let files = Files::new();
    let input = files.write("ids.jsonl", "1\n");
    let err = Runtime::new(flow!(priced).resource(vec![1i64, 2]))
        .source(JsonLinesSource::open(&input).unwrap())
        .workers(0)
        .handle_signals(false)
        .run()
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid setting: flow `priced`: `workers` is 0; it must be at least 1"
    );
}
