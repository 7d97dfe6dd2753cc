//! The toolbox: built-in operators configured per step, working on JSON
//! messages (`serde_json::Value`).
//!
//! Each operator is a plain struct built from a `Deserialize` arguments
//! struct, checked when built (expressions compiled, paths parsed), and
//! applied to one message at a time. [`ToolSpec`] is the shape of a step in
//! a flow file (`- filter: 'level != "debug"'`) and [`Tool`] the built
//! operator, for an executor that runs steps from configuration:
//!
//! ```
//! use serde_json::json;
//! use syncflow::toolbox::{Tool, ToolOutcome, ToolSpec};
//!
//! let spec: ToolSpec = serde_json::from_str(r#"{"filter": "level != \"debug\""}"#).unwrap();
//! let mut tool = Tool::build(spec).unwrap();
//! assert_eq!(tool.describe(), r#"filter: keep where level != "debug""#);
//! let out = tool.apply(json!({"level": "info"}), 0).unwrap();
//! assert_eq!(out, ToolOutcome::One(json!({"level": "info"})));
//! ```
//!
//! Expressions are CEL ([`expr`]); the book's `toolbox.md` documents every
//! operator and the language.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::Value;

pub mod cdc;
pub mod dedupe;
pub mod expr;
pub mod fields;
pub mod json;
pub mod logic;
pub mod shape;

pub use cdc::{CdcFilter, CdcFilterArgs, CdcOp, CdcUnwrap, CdcUnwrapArgs, DeleteRows};
pub use dedupe::{Dedupe, DedupeArgs};
pub use expr::{EvalError, EvalErrorKind, Expr, ExprError};
pub use fields::{FieldPath, Remove, RemoveArgs, Rename, RenameArgs, Set, SetArgs, SetValue};
pub use json::{JsonDecode, JsonEncode, JsonFieldArgs};
pub use logic::{Filter, FilterArgs, Map, MapArgs, Route, RouteArgs, RouteCase};
pub use shape::{Batch, BatchArgs, MAX_BATCH_SIZE, Throttle, ThrottleArgs, Unbatch, UnbatchArgs};

/// What an operator does with one message.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolOutcome {
    /// Pass this message on: the input (changed or not) or its replacement.
    One(Value),
    /// Drop the message: filtered out, a duplicate, an unwanted change, or a
    /// route with no match and no default.
    Drop,
    /// Pass these messages on, in order (`unbatch`).
    Many(Vec<Value>),
    /// Send the message to a route target: an index into
    /// [`Route::targets`].
    To {
        /// Index of the target in [`Route::targets`].
        target: usize,
        /// The message, unchanged.
        message: Value,
    },
}

/// Why an operator could not be built, or failed on a message. The text
/// starts with the operator's name and says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// The step's arguments are invalid (load time).
    #[error("{tool}: {message}")]
    Args {
        /// The operator.
        tool: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
    /// An expression in the step's arguments does not compile (load time).
    #[error("{tool}: {at}: {error}")]
    Expr {
        /// The operator.
        tool: &'static str,
        /// Which argument: `condition`, `cases[1].when`, `key`, ...
        at: String,
        /// The compile error, with its column.
        error: ExprError,
    },
    /// An expression failed on this message.
    #[error("{tool}: {error}")]
    Eval {
        /// The operator.
        tool: &'static str,
        /// The evaluation error, which names the expression.
        error: EvalError,
    },
    /// The message does not have the shape the operator needs.
    #[error("{tool}: {message}")]
    Message {
        /// The operator.
        tool: &'static str,
        /// What is wrong with the message.
        message: String,
    },
}

impl ToolError {
    /// The operator that raised the error.
    pub fn tool(&self) -> &'static str {
        match self {
            ToolError::Args { tool, .. }
            | ToolError::Expr { tool, .. }
            | ToolError::Eval { tool, .. }
            | ToolError::Message { tool, .. } => tool,
        }
    }

    /// Whether the error is about the configuration (found when building the
    /// operator) rather than about one message.
    pub fn is_config(&self) -> bool {
        matches!(self, ToolError::Args { .. } | ToolError::Expr { .. })
    }
}

/// A map whose entries keep the order they are written in (`set` and
/// `rename` apply them in that order). A key given twice is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields<T>(pub Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Fields<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Fields<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from field paths")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<T>, A::Error> {
                let mut entries: Vec<(String, T)> =
                    Vec::with_capacity(map.size_hint().unwrap_or(0).min(256));
                while let Some(key) = map.next_key::<String>()? {
                    if entries.iter().any(|(k, _)| *k == key) {
                        return Err(de::Error::custom(format!(
                            "`{key}` is given twice: keep one"
                        )));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Fields(entries))
            }
        }

        deserializer.deserialize_map(Entries(PhantomData))
    }
}

/// One toolbox step as written in a flow file: the operator's name as the
/// only key, its arguments as the value.
///
/// ```yaml
/// - filter: 'level != "debug"'
/// - set: { env: { value: prod } }
/// - cdc_unwrap:                      # no arguments: the defaults
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolSpec {
    /// [`Filter`].
    Filter(FilterArgs),
    /// [`Map`].
    Map(MapArgs),
    /// [`Set`].
    Set(SetArgs),
    /// [`Rename`].
    Rename(RenameArgs),
    /// [`Remove`].
    Remove(RemoveArgs),
    /// [`Route`].
    Route(RouteArgs),
    /// [`Dedupe`].
    Dedupe(DedupeArgs),
    /// [`JsonDecode`]; no arguments means the whole message.
    JsonDecode(Option<JsonFieldArgs>),
    /// [`JsonEncode`]; no arguments means the whole message.
    JsonEncode(Option<JsonFieldArgs>),
    /// [`CdcFilter`].
    CdcFilter(CdcFilterArgs),
    /// [`CdcUnwrap`]; no arguments means the defaults.
    CdcUnwrap(Option<CdcUnwrapArgs>),
    /// [`Batch`].
    Batch(BatchArgs),
    /// [`Unbatch`]; takes no arguments.
    Unbatch(Option<UnbatchArgs>),
    /// [`Throttle`].
    Throttle(ThrottleArgs),
}

/// The names of all toolbox operators, as written in flow files.
pub const TOOL_NAMES: [&str; 14] = [
    Filter::NAME,
    Map::NAME,
    Set::NAME,
    Rename::NAME,
    Remove::NAME,
    Route::NAME,
    Dedupe::NAME,
    JsonDecode::NAME,
    JsonEncode::NAME,
    CdcFilter::NAME,
    CdcUnwrap::NAME,
    Batch::NAME,
    Unbatch::NAME,
    Throttle::NAME,
];

/// A built toolbox operator.
pub enum Tool {
    /// `filter`.
    Filter(Filter),
    /// `map`.
    Map(Map),
    /// `set`.
    Set(Set),
    /// `rename`.
    Rename(Rename),
    /// `remove`.
    Remove(Remove),
    /// `route`.
    Route(Route),
    /// `dedupe`.
    Dedupe(Dedupe),
    /// `json_decode`.
    JsonDecode(JsonDecode),
    /// `json_encode`.
    JsonEncode(JsonEncode),
    /// `cdc_filter`.
    CdcFilter(CdcFilter),
    /// `cdc_unwrap`.
    CdcUnwrap(CdcUnwrap),
    /// `batch`.
    Batch(Batch),
    /// `unbatch`.
    Unbatch(Unbatch),
    /// `throttle`.
    Throttle(Throttle),
}

impl Tool {
    /// Builds the operator: compiles its expressions and checks its
    /// arguments. Errors here are configuration errors.
    pub fn build(spec: ToolSpec) -> Result<Tool, ToolError> {
        Ok(match spec {
            ToolSpec::Filter(args) => Tool::Filter(Filter::new(args)?),
            ToolSpec::Map(args) => Tool::Map(Map::new(args)?),
            ToolSpec::Set(args) => Tool::Set(Set::new(args)?),
            ToolSpec::Rename(args) => Tool::Rename(Rename::new(args)?),
            ToolSpec::Remove(args) => Tool::Remove(Remove::new(args)?),
            ToolSpec::Route(args) => Tool::Route(Route::new(args)?),
            ToolSpec::Dedupe(args) => Tool::Dedupe(Dedupe::new(args)?),
            ToolSpec::JsonDecode(args) => {
                Tool::JsonDecode(JsonDecode::new(args.unwrap_or_default())?)
            }
            ToolSpec::JsonEncode(args) => {
                Tool::JsonEncode(JsonEncode::new(args.unwrap_or_default())?)
            }
            ToolSpec::CdcFilter(args) => Tool::CdcFilter(CdcFilter::new(args)?),
            ToolSpec::CdcUnwrap(args) => Tool::CdcUnwrap(CdcUnwrap::new(args.unwrap_or_default())?),
            ToolSpec::Batch(args) => Tool::Batch(Batch::new(args)?),
            ToolSpec::Unbatch(args) => Tool::Unbatch(Unbatch::new(args.unwrap_or_default())?),
            ToolSpec::Throttle(args) => Tool::Throttle(Throttle::new(args)?),
        })
    }

    /// The operator's name, as written in flow files.
    pub fn name(&self) -> &'static str {
        match self {
            Tool::Filter(t) => t.name(),
            Tool::Map(t) => t.name(),
            Tool::Set(t) => t.name(),
            Tool::Rename(t) => t.name(),
            Tool::Remove(t) => t.name(),
            Tool::Route(t) => t.name(),
            Tool::Dedupe(t) => t.name(),
            Tool::JsonDecode(t) => t.name(),
            Tool::JsonEncode(t) => t.name(),
            Tool::CdcFilter(t) => t.name(),
            Tool::CdcUnwrap(t) => t.name(),
            Tool::Batch(t) => t.name(),
            Tool::Unbatch(t) => t.name(),
            Tool::Throttle(t) => t.name(),
        }
    }

    /// One line saying what this step does, for listings.
    pub fn describe(&self) -> String {
        match self {
            Tool::Filter(t) => t.describe(),
            Tool::Map(t) => t.describe(),
            Tool::Set(t) => t.describe(),
            Tool::Rename(t) => t.describe(),
            Tool::Remove(t) => t.describe(),
            Tool::Route(t) => t.describe(),
            Tool::Dedupe(t) => t.describe(),
            Tool::JsonDecode(t) => t.describe(),
            Tool::JsonEncode(t) => t.describe(),
            Tool::CdcFilter(t) => t.describe(),
            Tool::CdcUnwrap(t) => t.describe(),
            Tool::Batch(t) => t.describe(),
            Tool::Unbatch(t) => t.describe(),
            Tool::Throttle(t) => t.describe(),
        }
    }

    /// Whether the operator keeps state between messages (`dedupe`): it
    /// then needs `&mut` access ([`Tool::apply`]); the others can be applied
    /// through a shared reference ([`Tool::apply_stateless`]).
    pub fn is_stateful(&self) -> bool {
        matches!(self, Tool::Dedupe(_))
    }

    /// Applies a stateless operator through a shared reference, so that
    /// several workers can use one instance. A stateful operator
    /// ([`Tool::is_stateful`]) hands the message back untouched as `Err`.
    pub fn apply_stateless(&self, message: Value) -> Result<Result<ToolOutcome, ToolError>, Value> {
        Ok(match self {
            Tool::Filter(t) => t.apply(message),
            Tool::Map(t) => t.apply(message),
            Tool::Set(t) => t.apply(message),
            Tool::Rename(t) => t.apply(message),
            Tool::Remove(t) => t.apply(message),
            Tool::Route(t) => t.apply(message),
            Tool::Dedupe(_) => return Err(message),
            Tool::JsonDecode(t) => t.apply(message),
            Tool::JsonEncode(t) => t.apply(message),
            Tool::CdcFilter(t) => t.apply(message),
            Tool::CdcUnwrap(t) => t.apply(message),
            Tool::Batch(t) => t.apply(message),
            Tool::Unbatch(t) => t.apply(message),
            Tool::Throttle(t) => t.apply(message),
        })
    }

    /// Applies the operator to one message. `now_ms` is the current time in
    /// milliseconds from any fixed origin; only `dedupe` reads it.
    pub fn apply(&mut self, message: Value, now_ms: u64) -> Result<ToolOutcome, ToolError> {
        match self {
            Tool::Filter(t) => t.apply(message),
            Tool::Map(t) => t.apply(message),
            Tool::Set(t) => t.apply(message),
            Tool::Rename(t) => t.apply(message),
            Tool::Remove(t) => t.apply(message),
            Tool::Route(t) => t.apply(message),
            Tool::Dedupe(t) => t.apply(message, now_ms),
            Tool::JsonDecode(t) => t.apply(message),
            Tool::JsonEncode(t) => t.apply(message),
            Tool::CdcFilter(t) => t.apply(message),
            Tool::CdcUnwrap(t) => t.apply(message),
            Tool::Batch(t) => t.apply(message),
            Tool::Unbatch(t) => t.apply(message),
            Tool::Throttle(t) => t.apply(message),
        }
    }
}

impl fmt::Debug for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Tool").field(&self.describe()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn build(step: &str) -> Result<Tool, String> {
        let spec: ToolSpec = serde_json::from_str(step).map_err(|e| e.to_string())?;
        Tool::build(spec).map_err(|e| e.to_string())
    }

    #[test]
    fn every_operator_builds_from_its_step_shape() {
        let steps = [
            r#"{"filter": "level != 'debug'"}"#,
            r#"{"map": "{'level': level}"}"#,
            r#"{"set": {"env": {"value": "prod"}}}"#,
            r#"{"rename": {"host": "server.name"}}"#,
            r#"{"remove": ["password"]}"#,
            r#"{"route": {"cases": [{"when": "true", "to": "a"}]}}"#,
            r#"{"dedupe": {"key": "id", "ttl": "10m"}}"#,
            r#"{"json_decode": {"field": "payload"}}"#,
            r#"{"json_encode": null}"#,
            r#"{"cdc_filter": {"ops": ["insert"]}}"#,
            r#"{"cdc_unwrap": null}"#,
            r#"{"batch": {"size": 10}}"#,
            r#"{"unbatch": null}"#,
            r#"{"throttle": {"rate": "10/s"}}"#,
        ];
        let mut names = Vec::new();
        for step in steps {
            let tool = build(step).unwrap_or_else(|e| panic!("{step}: {e}"));
            assert!(
                tool.describe().starts_with(tool.name()),
                "{}",
                tool.describe()
            );
            names.push(tool.name());
        }
        assert_eq!(names, TOOL_NAMES);
    }

    #[test]
    fn tools_can_move_to_worker_threads() {
        fn assert_send<T: Send>() {}
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send::<Tool>();
        assert_send_sync::<Filter>();
        assert_send_sync::<Route>();
        assert_send_sync::<ToolError>();
    }

    #[test]
    fn steps_with_wrong_shapes_are_rejected_by_name() {
        let err = build(r#"{"filtre": "true"}"#).unwrap_err();
        assert!(err.contains("unknown variant `filtre`"), "{err}");
        let err = build(r#"{"set": {"a": {"value": 1}, "a": {"value": 2}}}"#).unwrap_err();
        assert!(err.contains("`a` is given twice"), "{err}");
        let err = build(r#"{"filter": "level =="}"#).unwrap_err();
        assert!(err.starts_with("filter: condition: column 9"), "{err}");
    }

    #[test]
    fn a_chain_of_tools_runs_like_a_flow() {
        let mut chain: Vec<Tool> = [
            r#"{"json_decode": null}"#,
            r#"{"cdc_filter": {"ops": ["c", "u"]}}"#,
            r#"{"cdc_unwrap": {"op_field": "__op"}}"#,
            r#"{"set": {"big": {"expr": "qty > 10"}}}"#,
            r#"{"dedupe": {"key": "id", "ttl": "1m"}}"#,
            r#"{"route": {"cases": [{"when": "big", "to": "large"}], "default": "small"}}"#,
        ]
        .iter()
        .map(|s| build(s).unwrap())
        .collect();
        let inputs = [
            r#"{"op":"c","before":null,"after":{"id":1,"qty":20}}"#,
            r#"{"op":"d","before":{"id":1,"qty":20},"after":null}"#,
            r#"{"op":"u","before":{"id":1},"after":{"id":1,"qty":5}}"#,
            r#"{"op":"u","before":{"id":2},"after":{"id":2,"qty":5}}"#,
        ];
        let mut routed = Vec::new();
        'messages: for (i, input) in inputs.iter().enumerate() {
            let mut message = json!(input);
            for tool in &mut chain {
                match tool.apply(message, i as u64).unwrap() {
                    ToolOutcome::One(next) => message = next,
                    ToolOutcome::To { target, message } => {
                        routed.push((target, message));
                        continue 'messages;
                    }
                    ToolOutcome::Drop | ToolOutcome::Many(_) => continue 'messages,
                }
            }
            panic!("the route sends every message somewhere or drops it");
        }
        // The delete is filtered out, the second change of id 1 is a repeat.
        assert_eq!(
            routed,
            [
                (0, json!({"id": 1, "qty": 20, "__op": "c", "big": true})),
                (1, json!({"id": 2, "qty": 5, "__op": "u", "big": false})),
            ]
        );
    }
}
