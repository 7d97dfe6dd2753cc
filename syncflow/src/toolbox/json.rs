//! `json_decode` and `json_encode`: JSON text inside messages.

use serde::Deserialize;
use serde_json::Value;

use super::expr::json_type_article;
use super::fields::FieldPath;
use super::{ToolError, ToolOutcome};

/// Arguments of `json_decode` and `json_encode`.
///
/// ```yaml
/// - json_decode: { field: payload }            # in place
/// - json_decode: { field: raw, to: event }     # into another field
/// - json_decode: {}                            # the message itself
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonFieldArgs {
    /// The field to convert (a dotted path); without it, the whole message.
    #[serde(default)]
    pub field: Option<String>,
    /// Where to write the result (a dotted path); without it, in place. Only
    /// with `field`.
    #[serde(default)]
    pub to: Option<String>,
}

/// Which value the operator converts and where the result goes.
struct Target {
    field: Option<FieldPath>,
    to: Option<FieldPath>,
}

impl Target {
    fn new(tool: &'static str, args: JsonFieldArgs) -> Result<Target, ToolError> {
        let parse = |text: &str| {
            FieldPath::parse(text).map_err(|message| ToolError::Args { tool, message })
        };
        let field = args.field.as_deref().map(parse).transpose()?;
        let to = args.to.as_deref().map(parse).transpose()?;
        if field.is_none() && to.is_some() {
            return Err(ToolError::Args {
                tool,
                message: "`to` needs `field`: the whole message is always converted in place"
                    .into(),
            });
        }
        Ok(Target { field, to })
    }

    fn describe(&self, verb: &str, whole: &str) -> String {
        match (&self.field, &self.to) {
            (None, _) => whole.to_owned(),
            (Some(field), None) => format!("{verb} field {field}"),
            (Some(field), Some(to)) => format!("{verb} field {field} into {to}"),
        }
    }

    /// Applies `convert` to the chosen value and stores the result.
    fn apply(
        &self,
        tool: &'static str,
        mut message: Value,
        convert: impl FnOnce(&Value, &str) -> Result<Value, String>,
    ) -> Result<ToolOutcome, ToolError> {
        let fail = |message| ToolError::Message { tool, message };
        let Some(field) = &self.field else {
            let converted = convert(&message, "the message").map_err(fail)?;
            return Ok(ToolOutcome::One(converted));
        };
        let what = format!("field `{field}`");
        let slot = field.get_mut(&mut message).ok_or_else(|| {
            fail(format!(
                "{what} is not in the message: check the path, or filter such messages out \
                 first with `has(...)`"
            ))
        })?;
        let converted = convert(slot, &what).map_err(fail)?;
        match &self.to {
            None => *slot = converted,
            Some(to) => to.set(&mut message, converted).map_err(fail)?,
        }
        Ok(ToolOutcome::One(message))
    }
}

/// Parses JSON text held in a string field, or in the message itself.
pub struct JsonDecode {
    target: Target,
}

impl JsonDecode {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "json_decode";

    /// Checks the paths.
    pub fn new(args: JsonFieldArgs) -> Result<JsonDecode, ToolError> {
        Ok(JsonDecode {
            target: Target::new(Self::NAME, args)?,
        })
    }

    /// The operator's name, `json_decode`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `json_decode: parse field payload`.
    pub fn describe(&self) -> String {
        format!(
            "json_decode: {}",
            self.target
                .describe("parse", "parse the message (a string of JSON text)")
        )
    }

    /// Replaces the JSON text with the value it holds.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        self.target.apply(Self::NAME, message, |value, what| {
            let Value::String(text) = value else {
                return Err(format!(
                    "{what} is {}, not a string of JSON text: it may be decoded already{}",
                    json_type_article(value),
                    if what == "the message" {
                        "; give `field:` to decode one field"
                    } else {
                        ""
                    }
                ));
            };
            serde_json::from_str(text).map_err(|e| {
                format!("{what} is not valid JSON text: {e} (in the text, not the flow file)")
            })
        })
    }
}

/// Writes a field, or the whole message, as a string of JSON text.
pub struct JsonEncode {
    target: Target,
}

impl JsonEncode {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "json_encode";

    /// Checks the paths.
    pub fn new(args: JsonFieldArgs) -> Result<JsonEncode, ToolError> {
        Ok(JsonEncode {
            target: Target::new(Self::NAME, args)?,
        })
    }

    /// The operator's name, `json_encode`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `json_encode: write field payload as text`.
    pub fn describe(&self) -> String {
        format!(
            "json_encode: {}",
            self.target
                .describe("encode", "write the message as a string of JSON text")
        )
    }

    /// Replaces the value with its JSON text.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        self.target.apply(Self::NAME, message, |value, what| {
            serde_json::to_string(value)
                .map(Value::String)
                .map_err(|e| format!("{what} cannot be written as JSON: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(text: &str) -> JsonFieldArgs {
        serde_json::from_str(text).unwrap()
    }

    fn one(outcome: Result<ToolOutcome, ToolError>) -> Value {
        match outcome {
            Ok(ToolOutcome::One(v)) => v,
            other => panic!("expected one message, got {other:?}"),
        }
    }

    #[test]
    fn decode_a_field_in_place_or_into_another() {
        let d = JsonDecode::new(args(r#"{"field": "payload"}"#)).unwrap();
        let out = one(d.apply(json!({"id": 1, "payload": "{\"a\": [1, 2]}"})));
        assert_eq!(out, json!({"id": 1, "payload": {"a": [1, 2]}}));

        let d = JsonDecode::new(args(r#"{"field": "raw", "to": "event.body"}"#)).unwrap();
        let out = one(d.apply(json!({"raw": "3"})));
        assert_eq!(out, json!({"raw": "3", "event": {"body": 3}}));
        assert_eq!(d.describe(), "json_decode: parse field raw into event.body");
    }

    #[test]
    fn decode_the_whole_message() {
        let d = JsonDecode::new(JsonFieldArgs::default()).unwrap();
        assert_eq!(one(d.apply(json!("{\"a\":1}"))), json!({"a": 1}));
        let err = d.apply(json!({"a": 1})).unwrap_err().to_string();
        assert!(
            err.contains("the message is an object, not a string"),
            "{err}"
        );
        assert!(err.contains("give `field:`"), "{err}");
    }

    #[test]
    fn decode_errors_say_what_is_wrong() {
        let d = JsonDecode::new(args(r#"{"field": "p"}"#)).unwrap();
        let err = d.apply(json!({"p": "{\"a\": }"})).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "json_decode: field `p` is not valid JSON text: expected value at line 1 column 7"
            ),
            "{err}"
        );
        let err = d.apply(json!({"q": 1})).unwrap_err().to_string();
        assert!(err.contains("field `p` is not in the message"), "{err}");
        let err = d.apply(json!({"p": {"a": 1}})).unwrap_err().to_string();
        assert!(err.contains("it may be decoded already"), "{err}");
        assert!(JsonDecode::new(args(r#"{"to": "x"}"#)).is_err());
        let err = serde_json::from_str::<JsonFieldArgs>(r#"{"feild": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `feild`"), "{err}");
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let msg = json!({"id": 7, "body": {"x": [1, "two", null]}});
        let e = JsonEncode::new(args(r#"{"field": "body"}"#)).unwrap();
        let encoded = one(e.apply(msg.clone()));
        assert_eq!(encoded["body"], json!(r#"{"x":[1,"two",null]}"#));
        let d = JsonDecode::new(args(r#"{"field": "body"}"#)).unwrap();
        assert_eq!(one(d.apply(encoded)), msg);

        let whole = JsonEncode::new(JsonFieldArgs::default()).unwrap();
        let text = one(whole.apply(msg.clone()));
        assert_eq!(
            text.as_str()
                .map(serde_json::from_str::<Value>)
                .and_then(Result::ok),
            Some(msg)
        );
        assert_eq!(
            whole.describe(),
            "json_encode: write the message as a string of JSON text"
        );
    }
}
