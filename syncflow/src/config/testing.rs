//! `tests:` in flow files, run by `syncflow test flows.yaml`.
//!
//! ```yaml
//! tests:
//!   - name: hot readings are converted
//!     flow: temperatures            # the flow's steps (its source and sinks are not used)
//!     input:
//!       - { sensor: hall, celsius: 100 }
//!       - { sensor: test-1, celsius: 5 }
//!     expect:
//!       - { sensor: hall, fahrenheit: 212.0 }
//!   - name: enrich can be mocked
//!     step: to_fahrenheit           # or one step alone
//!     mocks:
//!       lookup_sensor: { returns: { sensor: hall, site: north } }
//!     input: [{ sensor: hall, celsius: -300 }]
//!     expect_failures: 1
//!     expect_errors: [below absolute zero]
//! ```
//!
//! Each test feeds its input messages (JSON, read as the first step's input
//! type) through the flow's steps in memory, with mocks in place of the
//! steps they name, and compares what comes out: the exact outputs in order
//! (`expect`), their number (`expect_count`), the number of failed messages
//! (`expect_failures`) and texts the failures must contain
//! (`expect_errors`). Numbers compare by value (`212` equals `212.0`).

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::{Location, Spanned};

use super::model::{FlowSpec, StepSpec};
use super::{ConfigError, ConfigErrors, build_chain};
use crate::context::{Context, Resources};
use crate::dynamic::{DynFlow, JsonOut};
use crate::flow::Flow;
use crate::function::StepInfo;
use crate::monitor::{Metrics, NoMonitor, StepRef};
use crate::policy::PolicySet;
use crate::registry::{
    AsyncCall, BoxedSlot, ErasedError, ErasedStep, FromValueFn, Next, TypeCodec,
};

/// One test of a flow file.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// What the test checks (shown in the report).
    pub name: String,
    /// The flow whose steps are tested (exactly one of `flow` and `step`).
    pub flow: Option<String>,
    /// A single step (a registered function or flow) tested alone.
    pub step: Option<String>,
    /// The input messages, in order, as JSON.
    #[serde(default)]
    pub input: Vec<Value>,
    /// The exact outputs, in order.
    pub expect: Option<Vec<Value>>,
    /// How many outputs.
    pub expect_count: Option<usize>,
    /// How many messages a step failed on (default: checked to be 0 when
    /// neither `expect_failures` nor `expect_errors` is given).
    pub expect_failures: Option<usize>,
    /// Texts that must each appear in some failure's error.
    #[serde(default)]
    pub expect_errors: Vec<String>,
    /// Steps replaced by mocks, by name.
    #[serde(default)]
    pub mocks: BTreeMap<String, MockSpec>,
}

/// What a mock does instead of the step it replaces (exactly one key).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MockSpec {
    /// Emit this message (read as the step's output type) for every input.
    pub returns: Option<Value>,
    /// Emit these messages for every input (a fan-out; `[]` drops it).
    pub emits: Option<Vec<Value>>,
    /// Fail every input with this error.
    pub fails: Option<String>,
}

/// A mock, checked: what it does for every message.
#[derive(Debug, Clone)]
pub(crate) enum MockStep {
    Emit(Arc<[Value]>),
    Fail(Arc<str>),
}

impl MockStep {
    fn from_spec(spec: &MockSpec) -> Result<MockStep, String> {
        match (&spec.returns, &spec.emits, &spec.fails) {
            (Some(v), None, None) => Ok(MockStep::Emit(Arc::from(vec![v.clone()]))),
            (None, Some(vs), None) => Ok(MockStep::Emit(Arc::from(vs.clone()))),
            (None, None, Some(e)) => Ok(MockStep::Fail(Arc::from(e.as_str()))),
            _ => Err("a mock is exactly one of `returns: <message>`, `emits: [<message>, ...]` or `fails: <error>`".to_string()),
        }
    }

    /// The mock as a step in place of `info`, taking `input` and emitting
    /// `output`; the messages it emits are read as `output` now, so a
    /// message of the wrong shape is an error of the test file.
    pub(crate) fn node(
        &self,
        info: &'static StepInfo,
        input: TypeCodec,
        output: TypeCodec,
    ) -> Result<Box<dyn ErasedStep>, String> {
        let from_value = output.from_value;
        if let MockStep::Emit(values) = self {
            let from_value = from_value.ok_or_else(|| {
                format!(
                    "the mock of `{}` emits messages, but its output type `{}` cannot be read from JSON: derive `Deserialize` for it, or mock it with `fails:`",
                    info.name, output.name
                )
            })?;
            for (i, v) in values.iter().enumerate() {
                from_value(v.clone()).map_err(|e| {
                    format!(
                        "message {} of the mock of `{}` is not a `{}`: {e}",
                        i + 1,
                        info.name,
                        output.name
                    )
                })?;
            }
        }
        Ok(Box::new(MockNode {
            info,
            input: input.id,
            output: output.id,
            from_value,
            action: self.clone(),
        }))
    }
}

/// A mock in a flow.
struct MockNode {
    info: &'static StepInfo,
    input: TypeId,
    output: TypeId,
    from_value: Option<FromValueFn>,
    action: MockStep,
}

impl MockNode {
    /// The messages this mock emits, freshly read.
    fn outputs(&self) -> Result<Vec<BoxedSlot>, ErasedError> {
        match &self.action {
            MockStep::Fail(e) => Err(Box::new(e.to_string())),
            MockStep::Emit(values) => {
                let Some(from_value) = self.from_value else {
                    return Ok(Vec::new());
                };
                values
                    .iter()
                    .map(|v| {
                        from_value(v.clone()).map_err(|e| Box::new(e.to_string()) as ErasedError)
                    })
                    .collect()
            }
        }
    }

    fn emit<M>(&self, monitor: &mut M, next: Next<'_, M>) -> Result<usize, ErasedError> {
        let outputs = self.outputs()?;
        let n = outputs.len();
        for mut slot in outputs {
            next(&mut *slot, monitor);
        }
        Ok(n)
    }
}

impl ErasedStep for MockNode {
    fn info(&self) -> &'static StepInfo {
        self.info
    }
    fn input_id(&self) -> TypeId {
        self.input
    }
    fn output_id(&self) -> TypeId {
        self.output
    }
    fn check(&self, _: &Resources, _: &mut Vec<String>) {}
    fn call_metrics(
        &self,
        _: &Context,
        _: &mut dyn Any,
        monitor: &mut Metrics,
        _: StepRef,
        _: bool,
        next: Next<'_, Metrics>,
    ) -> Result<usize, ErasedError> {
        self.emit(monitor, next)
    }
    fn call_bare(
        &self,
        _: &Context,
        _: &mut dyn Any,
        _: StepRef,
        next: Next<'_, NoMonitor>,
    ) -> Result<usize, ErasedError> {
        self.emit(&mut NoMonitor, next)
    }
    fn call_async<'a>(&'a self, _: &'a Context, _: &mut dyn Any) -> AsyncCall<'a> {
        let outputs = self.outputs();
        Box::pin(async move { outputs })
    }
}

/// The outcome of one test.
#[derive(Debug, Clone, PartialEq)]
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// Where it is in the file.
    pub line: u64,
    /// Why it failed (empty when it passed).
    pub problems: Vec<String>,
}

impl TestOutcome {
    /// Whether the test passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The outcome of every test of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct TestReport {
    /// The file.
    pub origin: String,
    /// One outcome per test, in file order.
    pub tests: Vec<TestOutcome>,
}

impl TestReport {
    /// Whether every test passed.
    pub fn passed(&self) -> bool {
        self.tests.iter().all(TestOutcome::passed)
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.tests.len();
        writeln!(
            f,
            "running {n} test{} from {}",
            if n == 1 { "" } else { "s" },
            self.origin
        )?;
        for t in &self.tests {
            writeln!(
                f,
                "test {} ... {}",
                t.name,
                if t.passed() { "ok" } else { "FAILED" }
            )?;
        }
        let failed: Vec<_> = self.tests.iter().filter(|t| !t.passed()).collect();
        if !failed.is_empty() {
            writeln!(f, "\nfailures:")?;
            for t in &failed {
                writeln!(f, "\n---- {} ({}:{}) ----", t.name, self.origin, t.line)?;
                for p in &t.problems {
                    writeln!(f, "{p}")?;
                }
            }
        }
        writeln!(
            f,
            "\ntest result: {}. {} passed; {} failed",
            if failed.is_empty() { "ok" } else { "FAILED" },
            n - failed.len(),
            failed.len()
        )
    }
}

/// Checks a flow file, then runs its `tests:`. The file must check
/// without errors (like `syncflow check`) before any test runs.
pub async fn run_tests(
    text: &str,
    origin: &str,
    resources: &Resources,
) -> Result<TestReport, ConfigErrors> {
    super::load_str(text, origin)?;
    let file: super::FlowFile = serde_saphyr::from_str(text).map_err(|e| {
        ConfigErrors::one(ConfigError::new(
            origin,
            e.location().unwrap_or(Location::UNKNOWN),
            super::error::describe_yaml_error(&e),
        ))
    })?;
    let policies: PolicySet = file
        .policies
        .as_ref()
        .and_then(|p| serde_json::from_value(p.value.clone()).ok())
        .unwrap_or_default();
    let mut errors = ConfigErrors::default();
    let mut planned = Vec::new();
    for test in &file.tests {
        if let Some(flow) = build_test(test, &file.flows, &policies, origin, &mut errors) {
            planned.push((test, flow));
        }
    }
    if file.tests.is_empty() {
        errors.push(ConfigError::new(
            origin,
            Location::UNKNOWN,
            "the file has no `tests:`: add a list of tests (see `syncflow schema`)".to_string(),
        ));
    }
    let planned = errors.into_result(planned)?;
    let mut tests = Vec::new();
    for (test, flow) in planned {
        tests.push(run_one(&test.value, test.referenced.line(), flow, resources).await);
    }
    Ok(TestReport {
        origin: origin.to_string(),
        tests,
    })
}

fn build_test(
    test: &Spanned<TestSpec>,
    flows: &BTreeMap<String, Spanned<FlowSpec>>,
    policies: &PolicySet,
    origin: &str,
    errors: &mut ConfigErrors,
) -> Option<DynFlow> {
    let loc = test.referenced;
    let t = &test.value;
    let at =
        |message: String| ConfigError::new(origin, loc, format!("test `{}`: {message}", t.name));
    let before = errors.len();
    let mut mocks = super::Mocks::new();
    for (name, spec) in &t.mocks {
        match MockStep::from_spec(spec) {
            Ok(m) => {
                mocks.insert(name.clone(), m);
            }
            Err(e) => errors.push(at(format!("mock of `{name}`: {e}"))),
        }
    }
    let single;
    let steps: &[Spanned<StepSpec>] = match (&t.flow, &t.step) {
        (Some(flow), None) => match flows.get(flow) {
            Some(spec) => &spec.value.steps,
            None => {
                let closest = crate::registry::closest(flow, flows.keys().map(String::as_str));
                errors.push(at(format!(
                    "the file has no flow `{flow}`{}",
                    crate::registry::did_you_mean(&closest)
                        .map(|q| format!("; {q}"))
                        .unwrap_or_default()
                )));
                return None;
            }
        },
        (None, Some(step)) => {
            single = [Spanned {
                value: StepSpec::Function(step.clone()),
                referenced: loc,
                defined: loc,
            }];
            &single
        }
        _ => {
            errors.push(at(
                "give exactly one of `flow: <name>` or `step: <name>`".to_string()
            ));
            return None;
        }
    };
    for name in t.mocks.keys() {
        let used = steps
            .iter()
            .any(|s| matches!(&s.value, StepSpec::Function(n) if n == name));
        if !used {
            errors.push(at(format!(
                "`{name}` is mocked but is not a step of what the test runs"
            )));
        }
    }
    if t.expect_failures.is_some_and(|n| n > t.input.len()) {
        errors.push(at(format!(
            "expect_failures is {} but the test has {} input messages",
            t.expect_failures.unwrap_or_default(),
            t.input.len()
        )));
    }
    let name = format!("test: {}", t.name);
    let (builder, complete, _) = build_chain(&name, steps, policies, &mocks, origin, errors);
    if !complete || errors.len() > before {
        return None;
    }
    match builder.build(TypeCodec::json()) {
        Ok(flow) => Some(flow),
        Err(e) => {
            errors.push(at(e.to_string()));
            None
        }
    }
}

async fn run_one(t: &TestSpec, line: u64, flow: DynFlow, resources: &Resources) -> TestOutcome {
    let mut problems = Vec::new();
    let decode = flow.decoder();
    let input_type = flow.input().name;
    let mut inputs = Vec::new();
    for (i, value) in t.input.iter().enumerate() {
        let text = value.to_string();
        match decode(text.as_bytes()) {
            Ok(slot) => inputs.push(slot),
            Err(e) => problems.push(format!(
                "input {} is not a `{input_type}`: {}",
                i + 1,
                e.message()
            )),
        }
    }
    if !problems.is_empty() {
        return TestOutcome {
            name: t.name.clone(),
            line,
            problems,
        };
    }
    let flow = Flow::new(flow).with_resources(resources.clone());
    let collected = match flow.run_collect(inputs).await {
        Ok(c) => c,
        Err(e) => {
            return TestOutcome {
                name: t.name.clone(),
                line,
                problems: vec![e.to_string()],
            };
        }
    };
    let outputs: Vec<Value> = collected
        .outputs
        .iter()
        .map(|out: &JsonOut| serde_json::from_str(out.json.get()).unwrap_or(Value::Null))
        .collect();
    if let Some(expected) = &t.expect {
        compare_outputs(expected, &outputs, &mut problems);
    }
    if let Some(n) = t.expect_count
        && outputs.len() != n
    {
        problems.push(format!("expected {n} outputs, got {}", outputs.len()));
    }
    let failures: Vec<String> = collected
        .failures
        .iter()
        .map(|f| {
            format!(
                "input {}: step `{}` failed: {}",
                f.input + 1,
                f.step,
                f.error
            )
        })
        .collect();
    match t.expect_failures {
        Some(n) if failures.len() != n => problems.push(format!(
            "expected {n} failed messages, got {}{}",
            failures.len(),
            list(&failures)
        )),
        None if t.expect_errors.is_empty() && !failures.is_empty() => problems.push(format!(
            "expected no failed message, got {}{}",
            failures.len(),
            list(&failures)
        )),
        _ => {}
    }
    for text in &t.expect_errors {
        if !failures.iter().any(|f| f.contains(text.as_str())) {
            problems.push(format!(
                "no failure mentions `{text}`{}",
                if failures.is_empty() {
                    " (nothing failed)".to_string()
                } else {
                    list(&failures)
                }
            ));
        }
    }
    TestOutcome {
        name: t.name.clone(),
        line,
        problems,
    }
}

fn list(items: &[String]) -> String {
    items.iter().map(|i| format!("\n    {i}")).collect()
}

fn compare_outputs(expected: &[Value], got: &[Value], problems: &mut Vec<String>) {
    for (i, (e, g)) in expected.iter().zip(got).enumerate() {
        if !json_eq(e, g) {
            problems.push(format!("output {}:\n  expected {e}\n       got {g}", i + 1));
        }
    }
    if expected.len() != got.len() {
        let extra = if got.len() > expected.len() {
            format!(
                "; the extra outputs:{}",
                list(
                    &got[expected.len()..]
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                )
            )
        } else {
            String::new()
        };
        problems.push(format!(
            "expected {} outputs, got {}{extra}",
            expected.len(),
            got.len()
        ));
    }
}

/// JSON equality where numbers compare by value (`212` equals `212.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        assert!(json_eq(
            &json!({"a": [212, 1.5]}),
            &json!({"a": [212.0, 1.5]})
        ));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 2})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_eq(&json!("1"), &json!(1)));
    }
}
