//! Toolbox operators as steps of `flow!` flows.

use serde::{Deserialize, Serialize};
use serde_json::json;
use syncflow::prelude::*;
use syncflow::toolbox::{SetValue, ops};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u32,
    pub cents: i64,
    #[serde(default)]
    pub note: Option<String>,
}

#[sync_function]
pub fn tb_parse(line: String) -> Result<Order, serde_json::Error> {
    serde_json::from_str(&line)
}

#[sync_function]
pub fn tb_cents(order: Order) -> i64 {
    order.cents
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn toolbox_steps_run_between_typed_steps() {
    let flow = flow!(
        tb_parse
            -> ops::filter("cents >= 100")
            -> ops::set(&[("note", SetValue::Expr("cents > 1000 ? 'big' : 'small'".into()))])
            -> ops::dedupe("id", "10m")
            -> tb_cents
    );
    let names: Vec<&str> = flow.steps().iter().map(|s| s.name).collect();
    assert_eq!(names, ["tb_parse", "filter", "set", "dedupe", "tb_cents"]);
    let inputs = [
        r#"{"id":1,"cents":50}"#,
        r#"{"id":2,"cents":150}"#,
        r#"{"id":3,"cents":5000}"#,
        r#"{"id":2,"cents":150}"#,
    ];
    let out = block_on(flow.run_collect(inputs.map(String::from))).unwrap();
    assert_eq!(
        out.outputs,
        [150, 5000],
        "filtered, then deduplicated by id"
    );
    assert!(out.failures.is_empty(), "{:?}", out.failures);
}

#[test]
fn toolbox_steps_on_json_messages_and_per_message_errors() {
    // As the first step, a toolbox operator takes JSON.
    let flow = flow!(ops::filter("level != 'debug'") -> ops::remove(&["password"]));
    let out = block_on(flow.run_collect([
        json!({"level": "debug", "m": 1}),
        json!({"level": "info", "m": 2, "password": "x"}),
        json!({"m": 3}),
    ]))
    .unwrap();
    assert_eq!(out.outputs, [json!({"level": "info", "m": 2})]);
    // A condition that fails on a message is that message's failure.
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].step, "filter");
    assert!(
        out.failures[0].error.contains("level"),
        "{:?}",
        out.failures
    );

    // A map whose result no longer fits the flow's type fails per message.
    let flow = flow!(tb_parse -> ops::map("{'id': id}") -> tb_cents);
    let out = block_on(flow.run_collect([r#"{"id":1,"cents":50}"#.to_string()])).unwrap();
    assert!(out.outputs.is_empty());
    assert!(
        out.failures[0]
            .error
            .starts_with("the operator's output does not fit the flow's message type"),
        "{:?}",
        out.failures
    );
}

#[test]
#[should_panic(expected = "invalid toolbox step `filter` in flow!: filter: ")]
fn an_invalid_toolbox_step_stops_the_program_where_the_flow_is_made() {
    let _ = flow!(tb_parse -> ops::filter("cents >=") -> tb_cents);
}
