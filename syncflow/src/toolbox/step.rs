//! Toolbox operators as steps of a `flow!` flow.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use syncflow::prelude::*;
//! use syncflow::toolbox::ops;
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! pub struct Order { id: u32, cents: i64, note: Option<String> }
//!
//! #[sync_function]
//! fn parse(line: String) -> Result<Order, serde_json::Error> {
//!     serde_json::from_str(&line)
//! }
//!
//! let flow = flow!(parse -> ops::filter("cents >= 100") -> ops::remove(&["note"]));
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! let out = rt.block_on(flow.run_collect([
//!     r#"{"id":1,"cents":50,"note":null}"#.to_string(),
//!     r#"{"id":2,"cents":150,"note":"gift"}"#.to_string(),
//! ])).unwrap();
//! assert_eq!(out.outputs, [Order { id: 2, cents: 150, note: None }]);
//! ```
//!
//! A step written `path(args)` in `flow!` is built once, when the flow is
//! made, by calling `path(args)`: a function of [`ops`](super::ops)
//! returning `Result<Tool, ToolError>`. Its message type is the previous
//! step's output `T` (`serde_json::Value` as the first step), which it reads
//! and writes through serde: the operator sees `T` as JSON and what it
//! passes on is read back as `T` (a `map` that changes the shape fails per
//! message with the serde error). An invalid step (an expression that does
//! not compile) stops the program where the flow is made, with the
//! operator's error: the same check a flow file gets at load time.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Tool, ToolError, ToolOutcome};
use crate::context::Context;
use crate::function::{Failure, Operator, Step, StepInfo};
use crate::monitor::{Monitor, StepRef};

/// The description of one toolbox step of a `flow!` (generated per step).
pub trait ToolKind: Send + Sync + 'static {
    /// The step's description; its name is the operator's.
    const INFO: &'static StepInfo;
}

/// A toolbox operator as a step taking and emitting `T`.
pub struct ToolStep<T, K> {
    cell: Cell,
    _types: PhantomData<fn(T) -> (T, K)>,
}

enum Cell {
    Shared(Tool),
    Locked(Mutex<Tool>),
}

impl<T, K: ToolKind> ToolStep<T, K> {
    /// The step, from an operator built by a function of
    /// [`ops`](super::ops). Used by `flow!`.
    ///
    /// # Panics
    ///
    /// When the operator could not be built (an expression that does not
    /// compile, invalid arguments), with its error: a `flow!` is made once,
    /// at start-up, so the program stops before any message is processed.
    #[track_caller]
    pub fn build(tool: Result<Tool, ToolError>) -> Self {
        match tool {
            Ok(tool) => Self::new(tool),
            Err(e) => panic!("invalid toolbox step `{}` in flow!: {e}", K::INFO.name),
        }
    }

    /// The step, from a built operator. `route`, `batch`, `unbatch` and
    /// `throttle` shape a stream of JSON messages and are for flow files.
    pub fn new(tool: Tool) -> Self {
        let cell = if tool.is_stateful() {
            Cell::Locked(Mutex::new(tool))
        } else {
            Cell::Shared(tool)
        };
        ToolStep {
            cell,
            _types: PhantomData,
        }
    }
}

/// A toolbox step of a `flow!` failed on a message.
#[derive(Debug)]
pub enum ToolStepError {
    /// The operator refused the message (an expression failed on it, the
    /// message has the wrong shape).
    Tool(ToolError),
    /// The message could not be read as JSON, or the operator's output could
    /// not be read back as the step's type.
    Serde(serde_json::Error),
}

impl fmt::Display for ToolStepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ToolStepError::Tool(e) => e.fmt(f),
            ToolStepError::Serde(e) => write!(
                f,
                "the operator's output does not fit the flow's message type: {e}"
            ),
        }
    }
}

impl std::error::Error for ToolStepError {}

/// Moves a `T` into JSON without a copy when `T` is already JSON.
fn to_json<T: Serialize + 'static>(input: T) -> Result<Value, serde_json::Error> {
    let mut slot = Some(input);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<Value>>() {
        Some(value) => Ok(value.take().unwrap_or(Value::Null)),
        None => serde_json::to_value(slot.as_ref()),
    }
}

/// Reads a `T` back from JSON, moving it when `T` is JSON.
fn from_json<T: DeserializeOwned + 'static>(value: Value) -> Result<T, serde_json::Error> {
    let mut slot = Some(value);
    if let Some(same) = (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
    {
        return Ok(same);
    }
    serde_json::from_value(slot.take().unwrap_or(Value::Null))
}

impl<T, K> ToolStep<T, K>
where
    T: Serialize + DeserializeOwned + 'static,
{
    fn apply(&self, input: T) -> Result<ToolOutcome, ToolStepError> {
        let message = to_json(input).map_err(ToolStepError::Serde)?;
        let outcome = match &self.cell {
            Cell::Shared(tool) => match tool.apply_stateless(message) {
                Ok(outcome) => outcome,
                Err(_) => unreachable!("stateful operators are locked"),
            },
            Cell::Locked(tool) => {
                let now_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                tool.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(message, now_ms)
            }
        };
        outcome.map_err(ToolStepError::Tool)
    }

    fn emit_all(&self, input: T, mut next: impl FnMut(T)) -> Result<usize, Failure<ToolStepError>> {
        let one = |v: Value| from_json::<T>(v).map_err(|e| Failure::User(ToolStepError::Serde(e)));
        match self.apply(input).map_err(Failure::User)? {
            ToolOutcome::One(v) | ToolOutcome::To { message: v, .. } => {
                next(one(v)?);
                Ok(1)
            }
            ToolOutcome::Drop => Ok(0),
            ToolOutcome::Many(values) => {
                let n = values.len();
                for v in values {
                    next(one(v)?);
                }
                Ok(n)
            }
        }
    }
}

// Not offered as a fix when a `flow!` names something that is not a step.
#[diagnostic::do_not_recommend]
impl<T, K: ToolKind> Operator for ToolStep<T, K> {
    type Input = T;
    type Output = T;
    const INFO: &'static StepInfo = K::INFO;
}

#[diagnostic::do_not_recommend]
impl<T, K, Prev> Step<T, Prev> for ToolStep<T, K>
where
    T: Serialize + DeserializeOwned + Send + 'static,
    K: ToolKind,
{
    type Items = Vec<T>;
    type Error = ToolStepError;

    fn call<'a>(
        &'a self,
        _: &'a Context,
        input: T,
    ) -> impl Future<Output = Result<Vec<T>, Failure<ToolStepError>>> + Send + 'a {
        let mut items = Vec::new();
        let result = self.emit_all(input, |item| items.push(item)).map(|_| items);
        std::future::ready(result)
    }

    #[inline]
    fn call_now<M, N>(
        &self,
        _: &Context,
        input: T,
        monitor: &mut M,
        step: StepRef,
        timed: bool,
        mut next: N,
    ) -> Result<usize, Failure<ToolStepError>>
    where
        M: Monitor,
        N: FnMut(T, &mut M),
    {
        // The operator is timed with the reading and writing of its message.
        let timer = timed.then(|| monitor.enter(step));
        let mut out = Vec::new();
        let result = self.emit_all(input, |item| out.push(item));
        if let Some(timer) = timer {
            monitor.exit(step, timer);
        }
        let n = result?;
        for item in out {
            next(item, monitor);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u32,
    }

    #[test]
    fn json_messages_move_and_typed_ones_go_through_serde() {
        let value = json!({"id": 7});
        assert_eq!(to_json(value.clone()).unwrap(), value);
        assert_eq!(from_json::<Value>(value.clone()).unwrap(), value);
        assert_eq!(to_json(Order { id: 7 }).unwrap(), value);
        assert_eq!(from_json::<Order>(value).unwrap(), Order { id: 7 });
        assert!(from_json::<Order>(json!({"name": "x"})).is_err());
    }
}
