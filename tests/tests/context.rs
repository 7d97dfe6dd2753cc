//! Context parameters: `&Meta`, `&Context` and `Res<T>` after the payload,
//! and the start-up check that every resource a step asks for is there.

use std::sync::Arc;

use syncflow::context::Resources;
use syncflow::flow::{Emit, StepFailure};
use syncflow::prelude::*;

/// A resource: a multiplier.
pub struct Factor(i64);

/// Another resource.
pub struct Prefix(&'static str);

#[sync_function]
fn scale(n: i64, factor: Res<Factor>) -> i64 {
    n * factor.0
}

#[sync_function]
fn locate(n: i64, meta: &Meta) -> String {
    format!("{n}@{}:{}#{}", meta.source, meta.position, meta.worker)
}

/// Every kind of context parameter, in any order, in an async fn.
#[sync_function(name = "label_it")]
async fn label(
    n: i64,
    prefix: Res<'_, Prefix>,
    cx: &Context,
    factor: Res<'_, Factor>,
    meta: &Meta,
) -> Vec<String> {
    tokio::task::yield_now().await;
    assert_eq!(cx.meta().position, meta.position);
    let factor: &Factor = factor.get();
    vec![format!("{}{}@{}", prefix.0, n * factor.0, meta.position)]
}

#[tokio::test]
async fn meta_is_the_current_message_position_and_source() {
    let flow = flow!(locate);
    let done = flow.run_collect([10, 20, 30]).await.unwrap();
    assert_eq!(
        done.outputs,
        ["10@memory:1#0", "20@memory:2#0", "30@memory:3#0"]
    );

    // A worker of its own: its source and index reach the step.
    let mut worker = flow.worker(Arc::from("orders.ndjson"), 3);
    let mut out = Sink::default();
    worker.process(42, 7, &mut out).await;
    assert_eq!(out.outputs, ["7@orders.ndjson:42#3"]);
}

#[tokio::test]
async fn resources_reach_the_steps_that_ask_for_them() {
    let flow = flow!(scale -> label)
        .resource(Factor(3))
        .resource(Prefix("n="));
    assert_eq!(flow.check(), Ok(()));
    let done = flow.run_collect([1, 2]).await.unwrap();
    assert_eq!(done.outputs, ["n=9@1", "n=18@2"]);
    // Registering a type again replaces it.
    let flow = flow.resource(Factor(1));
    assert_eq!(flow.run_collect([5]).await.unwrap().outputs, ["n=5@1"]);
}

#[tokio::test]
async fn a_missing_resource_stops_the_flow_before_it_starts() {
    let flow = flow!(name = "scaling", scale -> label).resource(Prefix(""));
    let err = flow.check().unwrap_err();
    assert_eq!(err.flow, "scaling");
    // One problem per parameter that cannot be supplied, naming the
    // function, the type and what is registered.
    assert_eq!(err.problems.len(), 2, "{:?}", err.problems);
    for (problem, function) in err.problems.iter().zip(["scale", "label_it"]) {
        assert!(
            problem.contains(&format!("function `{function}`")),
            "{problem}"
        );
        assert!(problem.contains("Res<context::Factor>"), "{problem}");
        assert!(problem.contains("registered: context::Prefix"), "{problem}");
        assert!(problem.contains("`.resource(value)`"), "{problem}");
    }
    let text = err.to_string();
    assert!(
        text.starts_with("flow `scaling` cannot start:\n  - function `scale`"),
        "{text}"
    );

    // run_collect checks first.
    assert_eq!(flow.run_collect([1]).await.unwrap_err(), err);

    // With nothing registered at all.
    let err = flow!(scale).check().unwrap_err();
    assert!(
        err.problems[0].contains("(registered: none)"),
        "{}",
        err.problems[0]
    );
}

/// Collects what a worker emits.
#[derive(Default)]
struct Sink<T> {
    outputs: Vec<T>,
    failures: Vec<(&'static str, usize, String)>,
}

impl<T> Emit<T> for Sink<T> {
    fn emit(&mut self, item: T) {
        self.outputs.push(item);
    }
    fn fail(&mut self, failure: StepFailure<'_>) {
        self.failures.push((
            failure.step.info.name,
            failure.step.index,
            failure.error.to_string(),
        ));
    }
}

#[tokio::test]
async fn a_missing_resource_at_run_time_fails_the_message_not_the_flow() {
    // Without the check (a worker used directly), the step reports the
    // missing resource as the message's failure.
    let flow = flow!(scale -> label).resource(Factor(2));
    let mut worker = flow.worker(Arc::from("direct"), 0);
    let mut out = Sink::default();
    worker.process(1, 5, &mut out).await;
    assert!(out.outputs.is_empty());
    assert_eq!(out.failures.len(), 1);
    let (step, index, error) = &out.failures[0];
    assert_eq!((*step, *index), ("label_it", 1));
    assert!(error.contains("context::Prefix"), "{error}");
    assert!(error.contains("`.resource(value)`"), "{error}");
}

#[test]
fn context_functions_stay_callable() {
    let meta = Meta {
        source: Arc::from("s"),
        position: 9,
        worker: 1,
    };
    assert_eq!(locate(4, &meta), "4@s:9#1");
    // `Res<T>` has no public constructor yet: a function taking one cannot
    // be called directly in a unit test (a gap in syncflow::context).
    let mut resources = Resources::new();
    resources.insert(Factor(2));
    assert!(resources.contains::<Factor>());
}
