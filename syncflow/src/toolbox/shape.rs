//! Operators that shape the stream rather than change one message:
//! `batch` groups messages into JSON arrays, `unbatch` splits arrays back
//! into messages, and `throttle` limits the rate at which messages pass.
//!
//! In a flow, `batch` holds messages until it has `size` of them or the
//! source batch they came in ends (so that nothing held outlives the
//! acknowledgement of its source batch), and `throttle` makes the flow wait
//! for its rate; applied alone to one message, both pass it on unchanged.

use serde::Deserialize;
use serde_json::Value;

use super::{ToolError, ToolOutcome};
use crate::policy::Rate;

/// The largest `batch` size: a held batch is one JSON array in memory.
pub const MAX_BATCH_SIZE: usize = 1_000_000;

/// Arguments of `batch`.
///
/// ```yaml
/// - batch: { size: 500 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchArgs {
    /// The most messages in one array (at least 1).
    pub size: usize,
}

/// Groups up to `size` consecutive messages into one JSON array.
#[derive(Debug, Clone)]
pub struct Batch {
    size: usize,
}

impl Batch {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "batch";

    /// Checks the size.
    pub fn new(args: BatchArgs) -> Result<Batch, ToolError> {
        if args.size == 0 || args.size > MAX_BATCH_SIZE {
            return Err(ToolError::Args {
                tool: Self::NAME,
                message: format!(
                    "size must be between 1 and {MAX_BATCH_SIZE}, not {}",
                    args.size
                ),
            });
        }
        Ok(Batch { size: args.size })
    }

    /// The operator's name.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// The most messages in one array.
    pub fn size(&self) -> usize {
        self.size
    }

    /// One line saying what the step does.
    pub fn describe(&self) -> String {
        format!(
            "batch: group up to {} messages of a source batch into one JSON array",
            self.size
        )
    }

    /// Alone, a message passes unchanged: the flow does the grouping.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        Ok(ToolOutcome::One(message))
    }
}

/// Arguments of `unbatch` (none).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnbatchArgs {}

/// Splits a JSON array into one message per element.
#[derive(Debug, Clone, Default)]
pub struct Unbatch;

impl Unbatch {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "unbatch";

    /// The operator.
    pub fn new(_: UnbatchArgs) -> Result<Unbatch, ToolError> {
        Ok(Unbatch)
    }

    /// The operator's name.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line saying what the step does.
    pub fn describe(&self) -> String {
        "unbatch: emit each element of an array as its own message".to_string()
    }

    /// An array becomes its elements (none for an empty array); anything
    /// else is an error.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        match message {
            Value::Array(items) => Ok(ToolOutcome::Many(items)),
            other => Err(ToolError::Message {
                tool: Self::NAME,
                message: format!(
                    "the message is {}, not an array: put `unbatch` after a step that emits arrays (such as `batch`)",
                    super::expr::json_type_article(&other)
                ),
            }),
        }
    }
}

/// Arguments of `throttle`.
///
/// ```yaml
/// - throttle: { rate: 200/s }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleArgs {
    /// The most messages per period (`200/s`, `1000/min`).
    pub rate: Rate,
}

/// Lets messages pass at most at a rate; the flow waits (backpressure)
/// rather than dropping.
#[derive(Debug, Clone)]
pub struct Throttle {
    rate: Rate,
}

impl Throttle {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "throttle";

    /// The operator.
    pub fn new(args: ThrottleArgs) -> Result<Throttle, ToolError> {
        Ok(Throttle { rate: args.rate })
    }

    /// The operator's name.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// The rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// One line saying what the step does.
    pub fn describe(&self) -> String {
        format!("throttle: let at most {} messages pass", self.rate)
    }

    /// Alone, a message passes unchanged: the flow does the waiting.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        Ok(ToolOutcome::One(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unbatch_splits_arrays_and_refuses_anything_else() {
        let out = Unbatch.apply(json!([1, {"a": 2}])).unwrap();
        assert_eq!(out, ToolOutcome::Many(vec![json!(1), json!({"a": 2})]));
        assert_eq!(
            Unbatch.apply(json!([])).unwrap(),
            ToolOutcome::Many(Vec::new())
        );
        let err = Unbatch.apply(json!({"a": 1})).unwrap_err().to_string();
        assert!(
            err.starts_with("unbatch: the message is an object, not an array"),
            "{err}"
        );
    }

    #[test]
    fn batch_size_is_checked() {
        assert!(Batch::new(BatchArgs { size: 0 }).is_err());
        assert_eq!(Batch::new(BatchArgs { size: 3 }).unwrap().size(), 3);
        let t: ThrottleArgs = serde_json::from_value(json!({"rate": "50/s"})).unwrap();
        assert!(Throttle::new(t).unwrap().describe().contains("50"));
    }
}
