//! Flows from YAML: checked against the registry on load, then run.

use serde::{Deserialize, Serialize};
use syncflow::config;
use syncflow::prelude::*;
use syncflow::runtime::Shutdown;

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Reading {
    pub sensor: String,
    pub celsius: f64,
}

#[derive(Debug, Serialize)]
pub struct Fahrenheit {
    pub sensor: String,
    pub fahrenheit: f64,
}

/// A type with no serde impls.
pub struct Opaque(pub u32);

/// Drops readings from sensors under test.
#[sync_function]
pub fn yaml_drop_test_sensors(r: Reading) -> Option<Reading> {
    (!r.sensor.starts_with("test-")).then_some(r)
}

/// Converts to Fahrenheit; refuses impossible temperatures.
#[sync_function]
pub fn yaml_to_fahrenheit(r: Reading) -> Result<Fahrenheit, String> {
    if r.celsius < -273.15 {
        return Err(format!("{} °C is below absolute zero", r.celsius));
    }
    Ok(Fahrenheit {
        sensor: r.sensor,
        fahrenheit: r.celsius * 9.0 / 5.0 + 32.0,
    })
}

/// Splits a reading into its sensor's name characters (a fan-out).
#[sync_function]
pub fn yaml_letters(f: Fahrenheit) -> Vec<String> {
    f.sensor.chars().map(String::from).collect()
}

/// Makes something that cannot be written as JSON.
#[sync_function]
pub fn yaml_opaque(f: Fahrenheit) -> Opaque {
    Opaque(f.fahrenheit as u32)
}

/// Takes something that cannot be read or written as JSON.
#[sync_function]
pub fn yaml_from_opaque(o: Opaque) -> u32 {
    o.0
}

/// What one batch of readings held.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchSummary {
    pub count: usize,
    pub sensors: String,
}

/// Sums up a batch of readings; refuses a batch with an impossible one.
#[sync_function]
pub fn yaml_sum_batch(readings: Vec<Reading>) -> Result<BatchSummary, String> {
    if let Some(bad) = readings.iter().find(|r| r.celsius < -273.15) {
        return Err(format!("{} reads below absolute zero", bad.sensor));
    }
    Ok(BatchSummary {
        count: readings.len(),
        sensors: readings.iter().map(|r| r.sensor.as_str()).collect(),
    })
}

fn run(plan: config::Plan) -> Vec<(String, Result<RunSummary, RunError>)> {
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(plan.run(Shutdown::new(), false))
}

#[test]
fn a_yaml_flow_runs_registered_functions_file_to_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let letters = dir.path().join("letters.jsonl");
    let dead = dir.path().join("dead.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"sensor\":\"hall\",\"celsius\":20}\n",
            "{\"sensor\":\"test-1\",\"celsius\":5}\n",
            "not json\n",
            "{\"sensor\":\"cellar\",\"celsius\":-300}\n",
            "{\"sensor\":\"roof\",\"celsius\":-40}\n",
        ),
    )
    .unwrap();
    let yaml = format!(
        r#"
flows:
  temperatures:
    source: {{ file: "{input}" }}
    steps:
      - yaml_drop_test_sensors
      - yaml_to_fahrenheit
    sinks:
      - file: "{output}"
    dead_letter: "{dead}"
  letters:
    source: {{ file: "{input}" }}
    steps: [yaml_drop_test_sensors, yaml_to_fahrenheit, yaml_letters]
    sinks: [{{ file: "{letters}", fsync: false }}]
"#,
        input = input.display(),
        output = output.display(),
        letters = letters.display(),
        dead = dead.display(),
    );
    let plan = config::load_str(&yaml, "flows.yaml").expect("the file is valid");
    assert_eq!(plan.names(), ["letters", "temperatures"]);
    let results = run(plan);
    let (name, summary) = &results[1];
    assert_eq!(name, "temperatures");
    let summary = summary.as_ref().expect("the flow ran");
    assert_eq!(
        (
            summary.input,
            summary.output,
            summary.malformed,
            summary.failed
        ),
        (5, 2, 1, 1)
    );
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "{\"sensor\":\"hall\",\"fahrenheit\":68.0}\n{\"sensor\":\"roof\",\"fahrenheit\":-40.0}\n"
    );
    let dead_letters = std::fs::read_to_string(&dead).unwrap();
    assert!(
        dead_letters.contains("below absolute zero"),
        "{dead_letters}"
    );
    assert!(
        dead_letters.contains("yaml_to_fahrenheit"),
        "{dead_letters}"
    );
    assert_eq!(dead_letters.lines().count(), 2, "{dead_letters}");
    assert_eq!(
        std::fs::read_to_string(&letters).unwrap(),
        "\"h\"\n\"a\"\n\"l\"\n\"l\"\n\"r\"\n\"o\"\n\"o\"\n\"f\"\n"
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_location() {
    let yaml = r#"
flows:
  broken:
    source: { file: in.jsonl }
    steps:
      - yaml_to_farenheit
      - yaml_letters
  mismatched:
    source: { file: in.jsonl }
    steps:
      - yaml_to_fahrenheit
      - yaml_drop_test_sensors
  unwritable:
    source: { file: in.jsonl, stdin: true }
    steps: [yaml_to_fahrenheit, yaml_opaque]
    sinks: [{ stdout: true }]
"#;
    let errors = config::load_str(yaml, "flows.yaml").unwrap_err();
    let text = errors.to_string();
    let lines: Vec<_> = errors.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].starts_with("flows.yaml:6:9: no sync function is registered as `yaml_to_farenheit`; did you mean `yaml_to_fahrenheit`?"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("flows.yaml:12:9: flow step `yaml_drop_test_sensors` cannot take `")
            && lines[1]
                .contains("Fahrenheit`, the output of the previous step `yaml_to_fahrenheit`"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("flows.yaml:14:13: a source is exactly one of"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("flows.yaml:16:13: the flow writes its output to sinks as JSON, but `")
            && lines[3].contains("Opaque` (the output of `yaml_opaque`) cannot be written as JSON: derive `Serialize`"),
        "{text}"
    );
    assert!(
        text.ends_with("4 errors in the flow file; nothing was started"),
        "{text}"
    );
}

#[test]
fn yaml_syntax_and_unknown_keys_are_located() {
    let errors = config::load_str(
        "flows:\n  f:\n    source: { file: in.jsonl }\n    step: [a]\n",
        "f.yaml",
    )
    .unwrap_err();
    let e = &errors.errors[0];
    assert_eq!((e.line, e.file.as_str()), (4, "f.yaml"), "{errors}");
    assert!(e.message.contains("step"), "{errors}");

    let errors = config::load_str("flows:\n  f: [\n", "g.yaml").unwrap_err();
    assert!(errors.errors[0].line >= 2, "{errors}");
}

#[test]
fn a_typed_input_without_deserialize_cannot_start_a_flow() {
    let yaml = "flows:\n  f:\n    source: { stdin: true }\n    steps: [yaml_letters]\n";
    // `Fahrenheit` is only Serialize: it cannot be read from the source.
    let errors = config::load_str(yaml, "f.yaml").unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert!(
        errors.errors[0]
            .to_string()
            .starts_with("f.yaml:3:13: the flow reads its input from a source as JSON, but `"),
        "{errors}"
    );
}

use syncflow_tests::cli;

#[test]
fn cli_checks_runs_and_describes_flow_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    std::fs::write(&input, "{\"sensor\":\"hall\",\"celsius\":100}\n").unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "flows:\n  t:\n    source: {{ file: \"${{SYNCFLOW_TEST_DIR}}/in.jsonl\" }}\n    steps: [yaml_to_fahrenheit]\n    sinks: [{{ file: \"{}\" }}]\n",
            output.display()
        ),
    )
    .unwrap();
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var("SYNCFLOW_TEST_DIR", dir.path()) };

    let (code, out, err) = cli(&["check", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("flow `t`: ") && out.contains("yaml_to_fahrenheit"),
        "{out}"
    );
    assert!(out.contains("1 flow checked, no errors"), "{out}");

    let (code, out, err) = cli(&["run", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "{\"sensor\":\"hall\",\"fahrenheit\":212.0}\n"
    );
    assert!(err.contains("t"), "the summary names the flow: {err}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "flows:\n  t:\n    source: { file: in.jsonl }\n    steps: [yaml_to_fahrenheit, yaml_to_fahrenheit]\n",
    )
    .unwrap();
    let (code, out, err) = cli(&["check", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    let located = format!(
        "error: {}:4:33: flow step `yaml_to_fahrenheit` cannot take",
        bad.display()
    );
    assert!(err.starts_with(&located), "{err}");
    assert!(
        err.trim_end()
            .ends_with("1 error in the flow file; nothing was started"),
        "{err}"
    );
    let (code, _, err) = cli(&["run", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "a rejected file runs nothing: {err}");

    let (code, schema, _) = cli(&["schema"]);
    assert_eq!(code, 0);
    let schema: serde_json::Value = serde_json::from_str(&schema).expect("the schema is JSON");
    assert!(schema["properties"]["flows"].is_object(), "{schema}");
    let flow = &schema["$defs"]["FlowSpec"]["properties"];
    for key in [
        "source",
        "steps",
        "sinks",
        "dead_letter",
        "workers",
        "batch_size",
    ] {
        assert!(
            flow[key].is_object(),
            "the schema describes `{key}`: {schema}"
        );
    }
}

#[test]
fn policies_choose_what_happens_to_failed_messages() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut lines = String::new();
    for i in 0..5000 {
        let celsius = if i % 2 == 1 { -500 } else { 10 };
        lines.push_str(&format!("{{\"sensor\":\"s{i}\",\"celsius\":{celsius}}}\n"));
    }
    std::fs::write(&input, lines).unwrap();
    let flow = |name: &str| {
        format!(
            "  {name}:\n    source: {{ file: \"{input}\" }}\n    steps: [yaml_to_fahrenheit]\n    sinks: [{{ file: \"{out}\", fsync: false }}]\n    dead_letter: \"{dead}\"\n    batch_size: 100\n",
            input = input.display(),
            out = dir.path().join(format!("{name}.out")).display(),
            dead = dir.path().join(format!("{name}.dead")).display(),
        )
    };
    let run_with = |policy: &str, name: &str| {
        let yaml = format!(
            "flows:\n{}policies:\n  yaml_to_fahrenheit: {{ on_error: {policy} }}\n",
            flow(name)
        );
        let plan = config::load_str(&yaml, "p.yaml").expect("valid");
        let (_, summary) = run(plan).pop().unwrap();
        let summary = summary.expect("the flow ran");
        let dead =
            std::fs::read_to_string(dir.path().join(format!("{name}.dead"))).unwrap_or_default();
        (summary, dead.lines().count())
    };

    let (summary, dead) = run_with("dead_letter", "dl");
    assert_eq!((summary.output, summary.failed, dead), (2500, 2500, 2500));

    let (summary, dead) = run_with("drop", "dropped");
    assert_eq!(
        (summary.output, dead),
        (2500, 0),
        "dropped, not dead-lettered"
    );

    let (summary, dead) = run_with("stop", "stopped");
    assert!(
        dead >= 1,
        "the failure that stopped the flow is dead-lettered"
    );
    assert!(
        summary.input < 5000,
        "the flow stopped reading after the first failure: read {}",
        summary.input
    );
}

#[test]
fn skip_passes_failed_messages_on_and_dead_letters_go_to_a_channel() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"sensor\":\"a\",\"celsius\":10}\n{\"sensor\":\"b\",\"celsius\":-500}\n{\"sensor\":\"c\",\"celsius\":0}\n",
    )
    .unwrap();
    // `skip`: the reading the step failed on goes to the sink unchanged.
    let yaml = format!(
        "flows:\n  f:\n    source: {{ file: \"{d}/in.jsonl\" }}\n    steps: [yaml_to_fahrenheit]\n    sinks: [{{ file: \"{d}/skip.jsonl\" }}]\npolicies:\n  yaml_to_fahrenheit: {{ on_error: skip }}\n"
    );
    let (_, summary) = run(config::load_str(&yaml, "skip.yaml").expect("valid"))
        .pop()
        .unwrap();
    let summary = summary.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("skip.jsonl")).unwrap(),
        "{\"sensor\":\"a\",\"fahrenheit\":50.0}\n{\"sensor\":\"b\",\"celsius\":-500.0}\n{\"sensor\":\"c\",\"fahrenheit\":32.0}\n"
    );
    assert_eq!((summary.output, summary.failed), (3, 0));
    let counts = summary
        .policies
        .iter()
        .find(|(n, _)| n == "yaml_to_fahrenheit");
    assert_eq!(
        counts.map(|(_, c)| c.skipped),
        Some(1),
        "{:?}",
        summary.policies
    );

    // `{ dead_letter: <channel> }`: the letter (error, step, original
    // message) is saved into the channel, and another flow loads it.
    let yaml = format!(
        r#"
channels: {{ path: "{d}/channels.redb" }}
flows:
  convert:
    source: {{ file: "{d}/in.jsonl" }}
    steps: [yaml_to_fahrenheit]
    sinks: [{{ file: "{d}/good.jsonl" }}]
  failures:
    source: {{ load: bad-readings }}
    sinks: [{{ file: "{d}/bad.jsonl" }}]
policies:
  yaml_to_fahrenheit: {{ on_error: {{ dead_letter: bad-readings }} }}
"#
    );
    let results = run(config::load_str(&yaml, "dl.yaml").expect("valid"));
    for (name, r) in &results {
        assert!(r.is_ok(), "flow {name}: {r:?}");
    }
    let good = std::fs::read_to_string(dir.path().join("good.jsonl")).unwrap();
    assert_eq!(good.lines().count(), 2);
    let bad = std::fs::read_to_string(dir.path().join("bad.jsonl")).unwrap();
    let letters: Vec<syncflow::runtime::DeadLetter> = bad
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{bad}");
    assert_eq!(letters[0].stage, "yaml_to_fahrenheit");
    assert_eq!(letters[0].position, 2);
    assert!(letters[0].error.contains("below absolute zero"), "{bad}");
    assert_eq!(letters[0].input, "{\"sensor\":\"b\",\"celsius\":-500}");
    let convert = &results.iter().find(|(n, _)| n == "convert").unwrap().1;
    let counts = &convert.as_ref().unwrap().policies;
    assert_eq!(counts[0].1.dead_lettered, 1, "{counts:?}");

    // `skip` needs a step input that can be written as JSON; a channel
    // name must be valid.
    let yaml = "flows:\n  f:\n    source: { stdin: true }\n    steps: [yaml_to_fahrenheit, yaml_opaque, yaml_from_opaque]\npolicies:\n  yaml_from_opaque: { on_error: skip }\n  yaml_to_fahrenheit: { on_error: { dead_letter: \"bad readings\" } }\n";
    let text = config::load_str(yaml, "p.yaml").unwrap_err().to_string();
    assert!(
        text.contains("p.yaml:4:46: `on_error: skip` of `yaml_from_opaque` passes its input on to the sinks as JSON, but `yaml_flows::Opaque` cannot be written as JSON"),
        "{text}"
    );
    assert!(
        text.contains("p.yaml:4:13: on_error of `yaml_to_fahrenheit`: invalid dead-letter channel name `bad readings`"),
        "{text}"
    );
}

#[test]
fn key_keeps_per_key_order_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut lines = String::new();
    for i in 0..3000 {
        lines.push_str(&format!("{{\"sensor\":\"s{}\",\"celsius\":{i}}}\n", i % 7));
    }
    std::fs::write(dir.path().join("in.jsonl"), lines).unwrap();
    let yaml = format!(
        "flows:\n  f:\n    source: {{ file: \"{d}/in.jsonl\" }}\n    steps: [yaml_to_fahrenheit]\n    sinks: [{{ file: \"{d}/out.jsonl\", fsync: false }}]\n    workers: 4\n    batch_size: 16\n    key: sensor\n"
    );
    let (_, summary) = run(config::load_str(&yaml, "key.yaml").expect("valid"))
        .pop()
        .unwrap();
    let summary = summary.unwrap();
    assert_eq!(summary.output, 3000);
    assert!(
        summary.workers.iter().filter(|n| **n > 0).count() >= 2,
        "the keys spread over several workers: {:?}",
        summary.workers
    );
    // Each sensor's readings come out in source order.
    let mut last: std::collections::HashMap<String, f64> = Default::default();
    for line in std::fs::read_to_string(dir.path().join("out.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let sensor = v["sensor"].as_str().unwrap().to_string();
        let f = v["fahrenheit"].as_f64().unwrap();
        if let Some(prev) = last.insert(sensor.clone(), f) {
            assert!(prev < f, "sensor {sensor}: {f} after {prev}");
        }
    }
    assert_eq!(last.len(), 7);

    // A key expression is checked at load, like every expression.
    let bad = "flows:\n  f:\n    source: { stdin: true }\n    steps: [yaml_to_fahrenheit]\n    workers: 2\n    key: 'sensor +'\n";
    let text = config::load_str(bad, "k.yaml").unwrap_err().to_string();
    assert!(text.contains("k.yaml:6:10: key: "), "{text}");
}

#[test]
fn batch_groups_messages_within_each_source_batch() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut lines = String::new();
    for (i, c) in "abcdefgh".chars().enumerate() {
        let celsius = if c == 'g' { -500 } else { i as i32 };
        lines.push_str(&format!("{{\"sensor\":\"{c}\",\"celsius\":{celsius}}}\n"));
    }
    std::fs::write(dir.path().join("in.jsonl"), lines).unwrap();
    // Source batches of 4: groups of at most 3 never span two source
    // batches (a held message is never acknowledged before it ran).
    let yaml = format!(
        "flows:\n  f:\n    source: {{ file: \"{d}/in.jsonl\" }}\n    steps: [yaml_drop_test_sensors, yaml_sum_batch]\n    sinks: [{{ file: \"{d}/out.jsonl\" }}]\n    dead_letter: \"{d}/dead.jsonl\"\n    batch_size: 4\npolicies:\n  yaml_sum_batch: {{ batch: {{ size: 3 }} }}\n"
    );
    let (_, summary) = run(config::load_str(&yaml, "b.yaml").expect("valid"))
        .pop()
        .unwrap();
    let summary = summary.unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
        "{\"count\":3,\"sensors\":\"abc\"}\n{\"count\":1,\"sensors\":\"d\"}\n{\"count\":1,\"sensors\":\"h\"}\n"
    );
    // The group with the impossible reading is dead-lettered whole.
    let dead = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    let letter: syncflow::runtime::DeadLetter = serde_json::from_str(dead.trim()).unwrap();
    assert_eq!(letter.stage, "yaml_sum_batch");
    assert!(
        letter.error.contains("g reads below absolute zero"),
        "{dead}"
    );
    let group: Vec<serde_json::Value> = serde_json::from_str(&letter.input).unwrap();
    let sensors: Vec<&str> = group
        .iter()
        .map(|r| r["sensor"].as_str().unwrap())
        .collect();
    assert_eq!(sensors, ["e", "f", "g"]);
    assert_eq!((summary.input, summary.output, summary.failed), (8, 3, 1));

    // The toolbox's batch / unbatch round trip, and throttle's wait.
    let yaml = format!(
        "flows:\n  arrays:\n    source: {{ file: \"{d}/in.jsonl\" }}\n    steps: [{{ batch: {{ size: 5 }} }}]\n    sinks: [{{ file: \"{d}/arrays.jsonl\" }}]\n  back:\n    source: {{ file: \"{d}/in.jsonl\" }}\n    steps: [{{ batch: {{ size: 5 }} }}, unbatch, {{ throttle: {{ rate: 6/s }} }}]\n    sinks: [{{ file: \"{d}/back.jsonl\" }}]\n"
    );
    let results = run(config::load_str(&yaml, "t.yaml").expect("valid"));
    let arrays = std::fs::read_to_string(dir.path().join("arrays.jsonl")).unwrap();
    let sizes: Vec<usize> = arrays
        .lines()
        .map(|l| {
            serde_json::from_str::<Vec<serde_json::Value>>(l)
                .unwrap()
                .len()
        })
        .collect();
    assert_eq!(sizes, [5, 3]);
    let input = std::fs::read_to_string(dir.path().join("in.jsonl")).unwrap();
    let back = std::fs::read_to_string(dir.path().join("back.jsonl")).unwrap();
    let parse = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(parse(&back), parse(&input));
    let back_summary = results
        .iter()
        .find(|(n, _)| n == "back")
        .unwrap()
        .1
        .as_ref()
        .unwrap();
    let throttle = back_summary.policies.iter().find(|(n, _)| n == "throttle");
    assert!(
        throttle.is_some_and(|(_, c)| c.rate_limited > 0),
        "throttle waited for its rate: {:?}",
        back_summary.policies
    );
}

#[test]
fn invalid_or_unapplied_policies_are_load_errors() {
    let yaml = "flows:\n  f:\n    source: { stdin: true }\n    steps: [yaml_to_fahrenheit]\npolicies:\n  yaml_to_fahrenheit: { batch: { size: 10 } }\n  yaml_to_farenheit: { on_error: drop }\n";
    let errors = config::load_str(yaml, "p.yaml").unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("policies.yaml_to_farenheit: the flow has no function `yaml_to_farenheit`"),
        "{text}"
    );
    assert!(
        text.contains(
            "p.yaml:4:13: batched step `yaml_to_fahrenheit` takes `yaml_flows::Reading`, but with `batch` it gets the previous step's `serde_json::value::Value` messages in groups"
        ),
        "{text}"
    );
    let bad = "flows:\n  f:\n    source: { stdin: true }\npolicies:\n  defaults: { timeout: 2 }\n";
    let errors = config::load_str(bad, "p.yaml").unwrap_err();
    assert!(
        errors.errors[0]
            .to_string()
            .starts_with("p.yaml:5:3: policies: "),
        "{errors}"
    );
}

/// The keys of the reference tables under `### {heading}` in the book.
fn documented_keys(book: &str, heading: &str) -> Vec<String> {
    let start = book
        .find(&format!("### {heading}"))
        .unwrap_or_else(|| panic!("the book has a `{heading}` section"));
    let section = &book[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    let mut keys: Vec<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    keys.sort();
    keys
}

#[test]
fn the_config_reference_matches_the_schema() {
    let book = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../book/src/config.md"
    ))
    .expect("the config chapter");
    let schema: serde_json::Value = serde_json::from_str(&config::schema_json()).unwrap();
    let keys = |props: &serde_json::Value| {
        let mut k: Vec<String> = props
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        documented_keys(&book, "Top level"),
        keys(&schema["properties"])
    );
    for (heading, def) in [
        ("A flow", "FlowSpec"),
        ("A source", "SourceSpec"),
        ("A sink", "SinkSpec"),
    ] {
        assert_eq!(
            documented_keys(&book, heading),
            keys(&schema["$defs"][def]["properties"]),
            "book section `{heading}` vs schema `{def}`"
        );
    }
}

syncflow::register_flow!(
    "yaml_clean_readings",
    flow!(yaml_drop_test_sensors -> yaml_to_fahrenheit)
);

#[test]
fn a_registered_flow_is_one_step_of_a_yaml_flow() {
    let found = syncflow::dynamic::find_flow("yaml_clean_readings").expect("registered");
    assert_eq!(found.name, "yaml_clean_readings");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let dead = dir.path().join("dead.jsonl");
    std::fs::write(
        &input,
        "{\"sensor\":\"ab\",\"celsius\":0}\n{\"sensor\":\"test-x\",\"celsius\":0}\n{\"sensor\":\"cd\",\"celsius\":-999}\n",
    )
    .unwrap();
    let yaml = format!(
        "flows:\n  nested:\n    source: {{ file: \"{}\" }}\n    steps: [yaml_clean_readings, yaml_letters]\n    sinks: [{{ file: \"{}\" }}]\n    dead_letter: \"{}\"\n",
        input.display(),
        output.display(),
        dead.display()
    );
    let plan = config::load_str(&yaml, "n.yaml").expect("valid");
    let (_, summary) = run(plan).pop().unwrap();
    let summary = summary.unwrap();
    assert_eq!((summary.output, summary.failed), (2, 1));
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "\"a\"\n\"b\"\n");
    let dead = std::fs::read_to_string(&dead).unwrap();
    assert!(
        dead.contains("below absolute zero (step `yaml_to_fahrenheit` of flow `yaml_drop_test_sensors->yaml_to_fahrenheit`)"),
        "{dead}"
    );

    // Its types are checked like a function's.
    let yaml = "flows:\n  f:\n    source: { stdin: true }\n    steps: [yaml_clean_readings, yaml_clean_readings]\n";
    let errors = config::load_str(yaml, "n.yaml").unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("n.yaml:4:34: flow step `yaml_clean_readings` cannot take"),
        "{errors}"
    );
}

#[test]
fn save_and_load_branch_one_flow_into_two() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"sensor\":\"ab\",\"celsius\":100}\n{\"sensor\":\"test-1\",\"celsius\":1}\n{\"sensor\":\"cd\",\"celsius\":0}\n",
    )
    .unwrap();
    let yaml = format!(
        r#"
channels:
  path: "{d}/store/channels.redb"
  retention:
    clean: {{ max_records: 1000, max_age: 1h }}
flows:
  ingest:
    source: {{ file: "{d}/in.jsonl", state_dir: "{d}/state" }}
    steps: [yaml_drop_test_sensors]
    sinks: [{{ save: clean }}]
  fahrenheit:
    source: {{ load: clean }}
    steps: [yaml_to_fahrenheit]
    sinks: [{{ file: "{d}/f.jsonl" }}]
  letters:
    source: {{ load: clean }}
    steps: [yaml_to_fahrenheit, yaml_letters]
    sinks: [{{ file: "{d}/letters.jsonl" }}]
"#
    );
    let plan = config::load_str(&yaml, "branch.yaml").expect("valid");
    assert_eq!(
        plan.channels.as_ref().unwrap().path,
        dir.path().join("store/channels.redb")
    );
    let results = run(plan);
    for (name, r) in &results {
        assert!(r.is_ok(), "flow {name}: {r:?}");
    }
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(
        read("f.jsonl"),
        "{\"sensor\":\"ab\",\"fahrenheit\":212.0}\n{\"sensor\":\"cd\",\"fahrenheit\":32.0}\n"
    );
    assert_eq!(read("letters.jsonl"), "\"a\"\n\"b\"\n\"c\"\n\"d\"\n");

    // A second run: the file source resumes after its checkpoint, and each
    // loading flow after its own cursor, so nothing is processed twice.
    let plan = config::load_str(&yaml, "branch.yaml").expect("valid");
    let results = run(plan);
    for (name, r) in &results {
        let summary = r.as_ref().unwrap();
        assert_eq!(summary.input, 0, "flow {name} read nothing new");
    }
    assert_eq!(read("f.jsonl"), "", "the sink file was recreated empty");

    // The store's statistics show one reader per loading flow, caught up.
    let store =
        syncflow::channel::ChannelStore::open(dir.path().join("store/channels.redb")).unwrap();
    let stats = store
        .channel_stats("clean")
        .unwrap()
        .expect("the channel exists");
    assert_eq!(stats.length, 2);
    let mut readers: Vec<_> = stats
        .readers
        .iter()
        .map(|r| (r.name.as_str(), r.lag))
        .collect();
    readers.sort();
    assert_eq!(readers, [("fahrenheit", 0), ("letters", 0)]);
    drop(store);

    // `syncflow channels` shows the same, from the flow file or the store.
    let file = dir.path().join("branch.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let (code, out, err) = cli(&["channels", file.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[0]["name"], "clean");
    assert_eq!(json[0]["length"], 2);
    assert_eq!(json[0]["readers"].as_array().unwrap().len(), 2);
    let store_path = dir.path().join("store/channels.redb");
    let (code, table, _) = cli(&["channels", store_path.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        table.contains("clean") && table.contains("fahrenheit") && table.contains("letters"),
        "{table}"
    );
    let (code, _, err) = cli(&["channels", dir.path().join("nope.redb").to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no channel store at"), "{err}");
}

#[test]
fn channel_settings_are_checked() {
    let yaml = "channels:\n  retention:\n    c: { max_records: 0, max_age: soon }\nflows:\n  f:\n    source: { load: \"bad name!\", state_dir: x }\n    sinks: [{ save: c, fsync: true }]\n";
    let errors = config::load_str(yaml, "c.yaml").unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains("c.yaml:6:13: `state_dir` applies to a `file` source only"),
        "{text}"
    );
    assert!(
        text.contains("c.yaml:7:13: `append` and `fsync` apply to a `file` sink only"),
        "{text}"
    );
    assert!(
        text.contains("c.yaml:2:3: channels.retention.c.max_records must be at least 1"),
        "{text}"
    );
    assert!(
        text.contains("c.yaml:2:3: channels.retention.c.max_age: "),
        "{text}"
    );
}

/// Looks up a sensor's site (a stand-in for a call to another system).
#[sync_function]
pub fn yaml_lookup_site(r: Reading) -> Result<Reading, String> {
    Err(format!("no site database in tests for {}", r.sensor))
}

const TESTED: &str = r#"
flows:
  temperatures:
    source: { stdin: true }
    steps: [yaml_lookup_site, yaml_drop_test_sensors, yaml_to_fahrenheit]
tests:
  - name: readings are converted, test sensors dropped
    flow: temperatures
    mocks:
      yaml_lookup_site: { returns: { sensor: hall, celsius: 100 } }
    input:
      - { sensor: anything, celsius: 0 }
    expect:
      - { sensor: hall, fahrenheit: 212 }
  - name: a failing step is reported
    step: yaml_to_fahrenheit
    input: [{ sensor: a, celsius: -300 }, { sensor: b, celsius: 0 }]
    expect_count: 1
    expect_failures: 1
    expect_errors: [below absolute zero]
  - name: a wrong expectation fails
    step: yaml_to_fahrenheit
    input: [{ sensor: a, celsius: 0 }]
    expect: [{ sensor: a, fahrenheit: 33 }]
  - name: the real lookup fails without a mock
    flow: temperatures
    input: [{ sensor: a, celsius: 0 }]
    expect_count: 0
"#;

#[test]
fn flow_tests_run_with_mocks_and_report_like_a_test_runner() {
    let report = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(config::testing::run_tests(
            TESTED,
            "t.yaml",
            &Default::default(),
        ))
        .expect("the file checks");
    let passed: Vec<(&str, bool)> = report
        .tests
        .iter()
        .map(|t| (t.name.as_str(), t.passed()))
        .collect();
    assert_eq!(
        passed,
        [
            ("readings are converted, test sensors dropped", true),
            ("a failing step is reported", true),
            ("a wrong expectation fails", false),
            ("the real lookup fails without a mock", false),
        ]
    );
    let text = report.to_string();
    assert!(
        text.contains("test a wrong expectation fails ... FAILED"),
        "{text}"
    );
    assert!(
        text.contains("output 1:\n  expected {\"fahrenheit\":33,\"sensor\":\"a\"}\n       got {\"fahrenheit\":32.0,\"sensor\":\"a\"}"),
        "{text}"
    );
    assert!(
        text.contains("expected no failed message, got 1\n    input 1: step `yaml_lookup_site` failed: no site database in tests for a"),
        "{text}"
    );
    assert!(
        text.ends_with("test result: FAILED. 2 passed; 2 failed\n"),
        "{text}"
    );

    // Through the CLI: exit code 1, the report on standard output.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.yaml");
    std::fs::write(&file, TESTED).unwrap();
    let (code, out, err) = cli(&["test", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.starts_with("running 4 tests from "), "{out}");
    assert!(err.contains("2 tests of"), "{err}");
}

#[test]
fn flow_test_mistakes_are_load_errors() {
    let yaml = r#"
flows:
  f:
    source: { stdin: true }
    steps: [yaml_to_fahrenheit]
tests:
  - name: unknown flow
    flow: g
    input: []
  - name: bad mock
    flow: f
    mocks:
      yaml_to_fahrenheit: { returns: { sensor: 1 } }
      yaml_letters: { fails: nope }
"#;
    let errors = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(config::testing::run_tests(
            yaml,
            "m.yaml",
            &Default::default(),
        ))
        .unwrap_err();
    let text = errors.to_string();
    assert!(
        text.contains(
            "m.yaml:7:5: test `unknown flow`: the file has no flow `g`; did you mean `f`?"
        ),
        "{text}"
    );
    assert!(
        text.contains("test `bad mock`: `yaml_letters` is mocked but is not a step"),
        "{text}"
    );
    assert!(
        text.contains("m.yaml:5:13: the mock of `yaml_to_fahrenheit` emits messages, but its output type `yaml_flows::Fahrenheit` cannot be read from JSON: derive `Deserialize`"),
        "{text}"
    );
}

/// Fails the first two calls for each sensor (per process), then passes.
#[sync_function]
pub fn yaml_flaky(r: Reading) -> Result<Reading, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static CALLS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);
    let mut calls = CALLS.lock().unwrap();
    let n = calls
        .get_or_insert_with(HashMap::new)
        .entry(r.sensor.clone())
        .or_insert(0);
    *n += 1;
    if *n <= 2 {
        Err(format!("{} is flaky (call {n})", r.sensor))
    } else {
        Ok(r)
    }
}

/// Takes its time.
#[sync_function]
pub async fn yaml_slow(r: Reading) -> Reading {
    tokio::time::sleep(std::time::Duration::from_millis(if r.celsius > 0.0 {
        300
    } else {
        0
    }))
    .await;
    r
}

/// A payload that cannot be copied.
#[derive(Debug, Deserialize, Serialize)]
pub struct Unique {
    pub id: u32,
}

/// Passes a unique value on.
#[sync_function]
pub fn yaml_unique(u: Unique) -> Unique {
    u
}

fn run_policy_flow(steps: &str, policies: &str, lines: &str) -> (RunSummary, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines).unwrap();
    let (out, dead) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let yaml = format!(
        "flows:\n  p:\n    source: {{ file: \"{}\" }}\n    steps: {steps}\n    sinks: [{{ file: \"{}\" }}]\n    dead_letter: \"{}\"\npolicies:\n{policies}",
        input.display(),
        out.display(),
        dead.display()
    );
    let plan = config::load_str(&yaml, "p.yaml").expect("valid");
    let (_, summary) = run(plan).pop().unwrap();
    (
        summary.expect("ran"),
        std::fs::read_to_string(&out).unwrap_or_default(),
        std::fs::read_to_string(&dead).unwrap_or_default(),
    )
}

#[test]
fn retry_calls_a_failing_step_again_with_backoff() {
    let lines = "{\"sensor\":\"r1\",\"celsius\":1}\n{\"sensor\":\"r2\",\"celsius\":2}\n";
    let (summary, out, dead) = run_policy_flow(
        "[yaml_flaky]",
        "  yaml_flaky: { retry: { attempts: 3, initial_backoff: 1ms } }\n",
        lines,
    );
    assert_eq!((summary.output, summary.failed), (2, 0), "{dead}");
    assert_eq!(out.lines().count(), 2);
    let (name, counts) = &summary.policies[0];
    assert_eq!(name, "yaml_flaky");
    assert_eq!(
        (counts.retries, counts.gave_up),
        (4, 0),
        "two retries per message"
    );
    assert!(summary.to_string().contains("policies"), "{summary}");

    // Two attempts are not enough: the message is dead-lettered, saying so.
    let lines = "{\"sensor\":\"r3\",\"celsius\":1}\n";
    let (summary, _, dead) = run_policy_flow(
        "[yaml_flaky]",
        "  yaml_flaky: { retry: { attempts: 2, initial_backoff: 1ms } }\n",
        lines,
    );
    assert_eq!(summary.failed, 1);
    assert!(
        dead.contains("r3 is flaky (call 2) (after 2 attempts)"),
        "{dead}"
    );
    assert_eq!(
        (summary.policies[0].1.retries, summary.policies[0].1.gave_up),
        (1, 1)
    );
}

#[test]
fn timeout_fails_a_slow_async_step_and_rate_limit_waits() {
    let lines = "{\"sensor\":\"slow\",\"celsius\":1}\n{\"sensor\":\"fast\",\"celsius\":-1}\n";
    let (summary, out, dead) = run_policy_flow(
        "[yaml_slow]",
        "  yaml_slow: { timeout: 50ms, rate_limit: 1000/s }\n",
        lines,
    );
    assert_eq!((summary.output, summary.failed), (1, 1));
    assert!(out.contains("fast") && !out.contains("slow"), "{out}");
    assert!(
        dead.contains("step `yaml_slow` timed out after 50ms"),
        "{dead}"
    );
    assert_eq!(summary.policies[0].1.timeouts, 1);

    // A burst of one at 20/s: the second and third messages wait for tokens.
    let lines = "{\"sensor\":\"a\",\"celsius\":-1}\n".repeat(3);
    let (summary, _, _) = run_policy_flow(
        "[yaml_slow]",
        "  yaml_slow: { rate_limit: { rate: 20/s, burst: 1 } }\n",
        &lines,
    );
    assert_eq!(summary.output, 3);
    assert!(
        summary.policies[0].1.rate_limited >= 2,
        "{:?}",
        summary.policies
    );
}

#[test]
fn retry_of_a_step_whose_input_cannot_be_copied_is_a_load_error() {
    let yaml = "flows:\n  f:\n    source: { stdin: true }\n    steps: [yaml_unique]\npolicies:\n  yaml_unique: { retry: 3 }\n";
    let errors = config::load_str(yaml, "u.yaml").unwrap_err();
    assert!(
        errors.to_string().contains("u.yaml:4:13: `retry` of `yaml_unique` needs to call it again with the same input, but `yaml_flows::Unique` is not `Clone`: derive `Clone` for it"),
        "{errors}"
    );
}

#[test]
fn built_in_operators_run_between_typed_steps_and_route_to_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("cdc.jsonl"),
        concat!(
            "{\"op\":\"c\",\"after\":{\"sensor\":\"hall\",\"celsius\":100,\"note\":\"x\"}}\n",
            "{\"op\":\"d\",\"before\":{\"sensor\":\"gone\",\"celsius\":1}}\n",
            "{\"op\":\"u\",\"after\":{\"sensor\":\"cellar\",\"celsius\":-5,\"note\":\"y\"}}\n",
            "{\"op\":\"c\",\"after\":{\"sensor\":\"test-9\",\"celsius\":20,\"note\":\"z\"}}\n",
            "{\"op\":\"c\",\"after\":{\"sensor\":\"hall\",\"celsius\":100,\"note\":\"again\"}}\n",
        ),
    )
    .unwrap();
    let yaml = format!(
        r#"
flows:
  readings:
    source: {{ file: "{d}/cdc.jsonl" }}
    steps:
      - cdc_filter: {{ ops: [insert, update] }}
      - cdc_unwrap
      - filter: '!sensor.startsWith("test-")'
      - dedupe: {{ key: 'sensor + ":" + string(celsius)', ttl: 1h }}
      - remove: [note]
      - yaml_to_fahrenheit
      - set: {{ unit: {{ value: F }} }}
      - route:
          cases:
            - {{ when: 'fahrenheit > 100.0', to: hot }}
          default: cold
    sinks:
      - {{ file: "{d}/hot.jsonl", route: hot }}
      - {{ file: "{d}/cold.jsonl", route: cold }}
      - {{ file: "{d}/all.jsonl" }}
"#
    );
    let plan = config::load_str(&yaml, "tools.yaml").unwrap_or_else(|e| panic!("{e}"));
    let (_, summary) = run(plan).pop().unwrap();
    let summary = summary.expect("ran");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
    assert_eq!(
        read("hot.jsonl"),
        "{\"fahrenheit\":212.0,\"sensor\":\"hall\",\"unit\":\"F\"}\n"
    );
    assert_eq!(
        read("cold.jsonl"),
        "{\"fahrenheit\":23.0,\"sensor\":\"cellar\",\"unit\":\"F\"}\n"
    );
    assert_eq!(read("all.jsonl").lines().count(), 2);
    // The delete, the test sensor and the duplicate were filtered, each by its step.
    let filtered: Vec<(&str, u64)> = summary.steps.iter().map(|s| (s.name, s.filtered)).collect();
    assert_eq!(
        &filtered[..4],
        [
            ("cdc_filter", 1),
            ("cdc_unwrap", 0),
            ("filter", 1),
            ("dedupe", 1)
        ],
        "{summary}"
    );
    assert!(
        summary.steps.iter().any(|s| s.name == "from_json")
            && summary.steps.iter().any(|s| s.name == "to_json"),
        "JSON bridges around the typed step: {summary}"
    );
}

#[test]
fn built_in_operator_mistakes_are_located() {
    let yaml = r#"
flows:
  f:
    source: { stdin: true }
    steps:
      - filter: 'level == '
      - route: { cases: [{ when: 'true', to: a }] }
      - set: { x: { expr: '1' } }
    sinks:
      - { stdout: true, route: b }
  g:
    source: { stdin: true }
    steps:
      - fliter: 'x'
"#;
    let errors = config::load_str(yaml, "t.yaml").unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("t.yaml:6:9: filter: "), "{text}");
    assert!(
        text.contains(
            "t.yaml:7:9: `route` picks the sinks a message goes to, so it is the last step"
        ),
        "{text}"
    );
    assert!(
        text.contains("t.yaml:14:9: unknown step `fliter`")
            && text.contains("did you mean `filter`?"),
        "{text}"
    );
}

#[test]
fn route_targets_and_sinks_must_match() {
    let yaml = r#"
flows:
  f:
    source: { stdin: true }
    steps:
      - route: { cases: [{ when: 'true', to: a }], default: b }
    sinks:
      - { stdout: true, route: a }
      - { stdout: true, route: c }
"#;
    let errors = config::load_str(yaml, "r.yaml").unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("r.yaml:9:9: no case of the flow's `route` step sends messages to `c`; its targets are `a`, `b`"), "{text}");
    assert!(
        text.contains("r.yaml:6:9: `route` sends messages to `b`, but no sink has `route: b`"),
        "{text}"
    );
}

/// Like `yaml_flaky`, with its retry policy in the attribute.
#[sync_function(retry = 3, on_error = "drop")]
pub fn yaml_flaky_attr(r: Reading) -> Result<Reading, String> {
    yaml_flaky(r)
}

#[test]
fn attribute_policies_are_defaults_that_flow_files_override() {
    let lines = "{\"sensor\":\"a1\",\"celsius\":1}\n";
    // The attribute alone: three attempts, enough.
    let (summary, out, _) = run_policy_flow("[yaml_flaky_attr]", "  {}\n", lines);
    assert_eq!(
        (summary.output, summary.policies[0].1.retries),
        (1, 2),
        "{out}"
    );

    // The file says one attempt, and dead letters instead of drops.
    let lines = "{\"sensor\":\"a2\",\"celsius\":1}\n";
    let (summary, _, dead) = run_policy_flow(
        "[yaml_flaky_attr]",
        "  yaml_flaky_attr: { retry: 1, on_error: dead_letter }\n",
        lines,
    );
    assert_eq!((summary.output, summary.failed), (0, 1));
    assert!(dead.contains("a2 is flaky (call 1)"), "{dead}");
    assert!(
        summary.policies.is_empty(),
        "one attempt: no retry policy at run time"
    );
}

/// Passes a reading on after a short wait: a run that lasts.
#[sync_function]
pub async fn yaml_slow_reading(r: Reading) -> Reading {
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    r
}

/// The `progress: ` lines of a run's standard error, with the share each
/// shows of `input`'s bytes: checks that each line has the numbers of
/// the file's backfill.
fn progress_lines(err: &str, flow: &str, input: &std::path::Path) -> Vec<u64> {
    assert!(
        !err.contains('\r') && !err.contains('\x1b'),
        "not a terminal: lines, never redrawn: {err:?}"
    );
    let size = std::fs::metadata(input).unwrap().len();
    let total = format!("/{:.1} kB of {}", size as f64 / 1000.0, input.display());
    err.lines()
        .filter_map(|l| l.strip_prefix("progress: "))
        .map(|l| {
            let rest = l
                .strip_prefix(&format!("{flow}: "))
                .unwrap_or_else(|| panic!("the flow's name first: {l}"));
            assert!(rest.contains(&total), "`{total}` in {l}");
            assert!(!rest.contains('['), "no bar off a terminal: {l}");
            let (percent, _) = rest
                .split_once("% ")
                .unwrap_or_else(|| panic!("a share done: {l}"));
            percent.parse().unwrap()
        })
        .collect()
}

#[test]
fn cli_run_shows_a_file_backfill_as_progress_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("readings.jsonl");
    let lines: String = (0..200)
        .map(|i| format!("{{\"sensor\":\"s{i:03}\",\"celsius\":{i}}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let file = dir.path().join("slow.yaml");
    std::fs::write(
        &file,
        format!(
            "flows:\n  slow:\n    source: {{ file: \"{}\" }}\n    steps: [yaml_slow_reading]\n    sinks: [{{ file: \"{}\", fsync: false }}]\n    batch_size: 10\n",
            input.display(),
            dir.path().join("out.jsonl").display()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();

    // 200 readings of 2 ms each, in batches of 10: a run of 400 ms or more.
    let (code, out, err) = cli(&["run", file, "--progress-every", "50ms"]);
    assert_eq!(code, 0, "{out}{err}");
    let shares = progress_lines(&err, "slow", &input);
    assert!(shares.len() >= 2, "a line every 50 ms: {err}");
    assert!(
        shares.windows(2).all(|w| w[0] <= w[1]),
        "the share only grows: {shares:?}"
    );
    assert!(shares[0] < 100, "lines while the file is read: {err}");
    assert!(
        err.contains("flow `slow`"),
        "the summary follows the progress lines: {err}"
    );

    // The same for a flow compiled into the binary, reading `--input`.
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let code = syncflow::cli::Cli::new()
        .flow("slow", || flow!(yaml_slow_reading))
        .execute(
            [
                "syncflow",
                "run",
                "slow",
                "--input",
                input.to_str().unwrap(),
                "--output",
                dir.path().join("out2.jsonl").to_str().unwrap(),
                "--batch-size",
                "10",
                "--progress-every",
                "50ms",
            ],
            &mut o,
            &mut e,
        );
    let err = String::from_utf8(e).unwrap();
    assert_eq!(code, 0, "{err}");
    assert!(progress_lines(&err, "slow", &input).len() >= 2, "{err}");

    // `off`: no progress at all.
    let (code, out, err) = cli(&["run", file, "--progress-every", "off"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains("progress:"), "{err}");
    // A duration without a unit is refused, saying what to write.
    let (code, _, err) = cli(&["run", file, "--progress-every", "5"]);
    assert_eq!(code, 2);
    assert!(err.contains("250ms") && err.contains("off"), "{err}");
}
