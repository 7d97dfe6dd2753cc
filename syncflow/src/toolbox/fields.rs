//! Field paths (`a.b.c`) and the operators that edit fields: `set`,
//! `rename`, `remove`.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map as JsonMap, Value};

use super::expr::json_type_article;
use super::{Expr, Fields, ToolError, ToolOutcome};

/// A dotted path to a field: `user.address.city` is the key `city` of the
/// object under `address` of the object under `user`.
///
/// Segments are split at every `.`; there is no escape, so a key that
/// contains a dot cannot be named by a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: Box<str>,
    segments: Box<[Box<str>]>,
}

impl FieldPath {
    /// Parses `a.b.c`. Fails on an empty path or an empty segment (`a..b`,
    /// `.a`, `a.`), saying so.
    pub fn parse(path: &str) -> Result<FieldPath, String> {
        if path.is_empty() {
            return Err("the field path is empty: name a field, such as `user.id`".into());
        }
        let segments: Box<[Box<str>]> = path.split('.').map(Box::from).collect();
        if segments.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "the field path `{path}` has an empty part: write field names joined by single \
                 dots, such as `user.id`"
            ));
        }
        Ok(FieldPath {
            text: Box::from(path),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path, if every step is an object that has the key.
    pub fn get<'a>(&self, message: &'a Value) -> Option<&'a Value> {
        self.segments
            .iter()
            .try_fold(message, |value, key| value.as_object()?.get(&**key))
    }

    /// The value at this path, mutably.
    pub fn get_mut<'a>(&self, message: &'a mut Value) -> Option<&'a mut Value> {
        self.segments
            .iter()
            .try_fold(message, |value, key| value.as_object_mut()?.get_mut(&**key))
    }

    /// Sets the value at this path, creating empty objects for the missing
    /// steps. Fails if the message, or a step on the way, is not an object.
    pub fn set(&self, message: &mut Value, value: Value) -> Result<(), String> {
        let (last, parents) = self.split_last();
        let mut current = message;
        for (depth, key) in parents.iter().enumerate() {
            let object = self.object_at(current, depth)?;
            current = object
                .entry(&**key)
                .or_insert_with(|| Value::Object(JsonMap::new()));
        }
        let object = self.object_at(current, parents.len())?;
        object.insert(String::from(last), value);
        Ok(())
    }

    /// Removes and returns the value at this path; `None` if it is not there.
    pub fn remove(&self, message: &mut Value) -> Option<Value> {
        let (last, parents) = self.split_last();
        let parent = parents
            .iter()
            .try_fold(message, |value, key| value.as_object_mut()?.get_mut(&**key))?;
        parent.as_object_mut()?.remove(last)
    }

    fn split_last(&self) -> (&str, &[Box<str>]) {
        match self.segments.split_last() {
            Some((last, parents)) => (last, parents),
            // `parse` never builds an empty path.
            None => ("", &[]),
        }
    }

    /// `value` as an object, or an error naming the part of the path that is
    /// something else.
    fn object_at<'v>(
        &self,
        value: &'v mut Value,
        depth: usize,
    ) -> Result<&'v mut JsonMap<String, Value>, String> {
        let kind = json_type_article(value);
        value.as_object_mut().ok_or_else(|| {
            if depth == 0 {
                format!(
                    "cannot set `{self}`: the message is {kind}, not an object; \
                     fields can only be set on objects"
                )
            } else {
                let parent = self.segments[..depth].join(".");
                format!(
                    "cannot set `{self}`: `{parent}` is {kind}, not an object; \
                     remove or rename it first, or choose another path"
                )
            }
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn path(tool: &'static str, text: &str) -> Result<FieldPath, ToolError> {
    FieldPath::parse(text).map_err(|message| ToolError::Args { tool, message })
}

/// What `set` writes to a field: a constant, or the result of an expression.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetValue {
    /// A constant JSON value: `{value: prod}`.
    Value(Value),
    /// An expression evaluated on the message: `{expr: 'status >= 500'}`.
    Expr(String),
}

/// Arguments of `set`: field paths and what to write there, in order.
///
/// ```yaml
/// - set:
///     env: { value: prod }
///     http.error: { expr: 'status >= 500' }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct SetArgs {
    /// Path → value, applied in the order written.
    pub fields: Fields<SetValue>,
}

enum Assign {
    Value(Value),
    Expr(Expr),
}

/// Sets fields to constants or expression results, creating objects along
/// dotted paths. Fields are set in order: an expression sees the fields set
/// before it.
pub struct Set {
    fields: Vec<(FieldPath, Assign)>,
}

impl Set {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "set";

    /// Checks the paths and compiles the expressions.
    pub fn new(args: SetArgs) -> Result<Set, ToolError> {
        if args.fields.0.is_empty() {
            return Err(ToolError::Args {
                tool: Self::NAME,
                message: "no fields given: write `path: {value: ...}` or `path: {expr: ...}`"
                    .into(),
            });
        }
        let mut fields = Vec::with_capacity(args.fields.0.len());
        for (text, value) in args.fields.0 {
            let at = path(Self::NAME, &text)?;
            let assign = match value {
                SetValue::Value(v) => Assign::Value(v),
                SetValue::Expr(src) => {
                    Assign::Expr(Expr::compile(&src).map_err(|error| ToolError::Expr {
                        tool: Self::NAME,
                        at: format!("expression for `{text}`"),
                        error,
                    })?)
                }
            };
            fields.push((at, assign));
        }
        Ok(Set { fields })
    }

    /// The operator's name, `set`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `set: env = "prod", http.error = status >= 500`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .fields
            .iter()
            .map(|(at, assign)| match assign {
                Assign::Value(v) => format!("{at} = {v}"),
                Assign::Expr(e) => format!("{at} = {e}"),
            })
            .collect();
        format!("set: {}", parts.join(", "))
    }

    /// Sets the fields on `message`.
    pub fn apply(&self, mut message: Value) -> Result<ToolOutcome, ToolError> {
        for (at, assign) in &self.fields {
            let value = match assign {
                Assign::Value(v) => v.clone(),
                Assign::Expr(e) => e.eval(&message).map_err(|error| ToolError::Eval {
                    tool: Self::NAME,
                    error,
                })?,
            };
            at.set(&mut message, value)
                .map_err(|message| ToolError::Message {
                    tool: Self::NAME,
                    message,
                })?;
        }
        Ok(ToolOutcome::One(message))
    }
}

/// Arguments of `rename`: `from: to` pairs, in order.
///
/// ```yaml
/// - rename: { host: server.name, msg: message }
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct RenameArgs {
    /// Old path → new path.
    pub fields: Fields<String>,
}

/// Moves fields to new paths. A field that is not in the message is skipped;
/// a value already at the new path is replaced.
pub struct Rename {
    moves: Vec<(FieldPath, FieldPath)>,
}

impl Rename {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "rename";

    /// Checks the paths.
    pub fn new(args: RenameArgs) -> Result<Rename, ToolError> {
        if args.fields.0.is_empty() {
            return Err(ToolError::Args {
                tool: Self::NAME,
                message: "no fields given: write `old.path: new.path`".into(),
            });
        }
        let mut moves = Vec::with_capacity(args.fields.0.len());
        for (from, to) in args.fields.0 {
            let from = path(Self::NAME, &from)?;
            let to = path(Self::NAME, &to)?;
            if to.segments.starts_with(&from.segments) {
                return Err(ToolError::Args {
                    tool: Self::NAME,
                    message: format!(
                        "cannot rename `{from}` to `{to}`, which is inside it: copy it with \
                         `set` and an expression instead"
                    ),
                });
            }
            moves.push((from, to));
        }
        Ok(Rename { moves })
    }

    /// The operator's name, `rename`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `rename: host → server.name`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .moves
            .iter()
            .map(|(from, to)| format!("{from} → {to}"))
            .collect();
        format!("rename: {}", parts.join(", "))
    }

    /// Moves the fields of `message`.
    pub fn apply(&self, mut message: Value) -> Result<ToolOutcome, ToolError> {
        for (from, to) in &self.moves {
            if let Some(value) = from.remove(&mut message) {
                to.set(&mut message, value)
                    .map_err(|message| ToolError::Message {
                        tool: Self::NAME,
                        message,
                    })?;
            }
        }
        Ok(ToolOutcome::One(message))
    }
}

/// Arguments of `remove`: the paths to delete.
///
/// ```yaml
/// - remove: [password, user.ssn]
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct RemoveArgs {
    /// Paths of the fields to delete.
    pub fields: Vec<String>,
}

/// Deletes fields. A field that is not in the message is skipped.
pub struct Remove {
    paths: Vec<FieldPath>,
}

impl Remove {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "remove";

    /// Checks the paths.
    pub fn new(args: RemoveArgs) -> Result<Remove, ToolError> {
        if args.fields.is_empty() {
            return Err(ToolError::Args {
                tool: Self::NAME,
                message: "no fields given: write a list of paths, such as `[password, user.ssn]`"
                    .into(),
            });
        }
        let paths = args
            .fields
            .iter()
            .map(|p| path(Self::NAME, p))
            .collect::<Result<_, _>>()?;
        Ok(Remove { paths })
    }

    /// The operator's name, `remove`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `remove: password, user.ssn`.
    pub fn describe(&self) -> String {
        let parts: Vec<&str> = self.paths.iter().map(FieldPath::as_str).collect();
        format!("remove: {}", parts.join(", "))
    }

    /// Deletes the fields from `message`.
    pub fn apply(&self, mut message: Value) -> Result<ToolOutcome, ToolError> {
        for at in &self.paths {
            at.remove(&mut message);
        }
        Ok(ToolOutcome::One(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(outcome: Result<ToolOutcome, ToolError>) -> Value {
        match outcome {
            Ok(ToolOutcome::One(v)) => v,
            other => panic!("expected one message, got {other:?}"),
        }
    }

    #[test]
    fn paths_parse_and_reject_empty_parts() {
        let p = FieldPath::parse("a.b.c").unwrap();
        assert_eq!(p.as_str(), "a.b.c");
        for bad in ["", "a..b", ".a", "a."] {
            let err = FieldPath::parse(bad).unwrap_err();
            assert!(err.contains("empty"), "{bad}: {err}");
        }
    }

    #[test]
    fn get_set_remove_on_nested_objects() {
        let mut msg = json!({"a": {"b": {"c": 1}}, "x": "s"});
        let p = FieldPath::parse("a.b.c").unwrap();
        assert_eq!(p.get(&msg), Some(&json!(1)));
        p.set(&mut msg, json!(2)).unwrap();
        assert_eq!(msg["a"]["b"]["c"], json!(2));

        let new = FieldPath::parse("n.m.o").unwrap();
        new.set(&mut msg, json!(true)).unwrap();
        assert_eq!(
            msg["n"],
            json!({"m": {"o": true}}),
            "objects created on the way"
        );

        assert_eq!(p.remove(&mut msg), Some(json!(2)));
        assert_eq!(msg["a"], json!({"b": {}}));
        assert_eq!(p.remove(&mut msg), None, "already gone");
        assert_eq!(FieldPath::parse("x.y").unwrap().get(&msg), None);
    }

    #[test]
    fn set_through_a_non_object_says_which_part() {
        let mut msg = json!({"a": {"b": "text"}});
        let err = FieldPath::parse("a.b.c")
            .unwrap()
            .set(&mut msg, json!(1))
            .unwrap_err();
        assert!(err.contains("`a.b` is a string"), "{err}");
        let err = FieldPath::parse("a")
            .unwrap()
            .set(&mut json!([1]), json!(1))
            .unwrap_err();
        assert!(err.contains("the message is an array"), "{err}");
    }

    #[test]
    fn set_writes_constants_and_expressions_in_order() {
        let args: SetArgs = serde_json::from_str(
            r#"{"env": {"value": "prod"}, "http.error": {"expr": "status >= 500"},
                "http.label": {"expr": "http.error ? 'bad' : 'ok'"}, "n": {"value": null}}"#,
        )
        .unwrap();
        let set = Set::new(args).unwrap();
        let out = one(set.apply(json!({"status": 503})));
        assert_eq!(
            out,
            json!({"status": 503, "env": "prod", "n": null,
                   "http": {"error": true, "label": "bad"}})
        );
        let out = one(set.apply(json!({"status": 200})));
        assert_eq!(out["http"], json!({"error": false, "label": "ok"}));
        assert_eq!(
            set.describe(),
            "set: env = \"prod\", http.error = status >= 500, \
             http.label = http.error ? 'bad' : 'ok', n = null"
        );
    }

    #[test]
    fn set_errors_name_the_field_and_the_problem() {
        let args: SetArgs = serde_json::from_str(r#"{"x": {"expr": "status >"}}"#).unwrap();
        let err = Set::new(args).err().unwrap();
        assert!(
            err.to_string()
                .starts_with("set: expression for `x`: column 9"),
            "{err}"
        );

        let err = serde_json::from_str::<SetArgs>(r#"{"x": {"exp": "1"}}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `exp`"), "{err}");
        let args: SetArgs = serde_json::from_str(r#"{"x": {"expr": "status + 1"}}"#).unwrap();
        let err = Set::new(args).unwrap().apply(json!({})).unwrap_err();
        assert!(
            err.to_string()
                .contains("field `status` is not in the message"),
            "{err}"
        );

        let args: SetArgs = serde_json::from_str(r#"{"a.b": {"value": 1}}"#).unwrap();
        let err = Set::new(args).unwrap().apply(json!({"a": 5})).unwrap_err();
        assert!(err.to_string().contains("`a` is a number"), "{err}");
    }

    #[test]
    fn rename_moves_fields_and_skips_missing_ones() {
        let args: RenameArgs =
            serde_json::from_str(r#"{"host": "server.name", "msg": "message", "nope": "x"}"#)
                .unwrap();
        let rename = Rename::new(args).unwrap();
        let out = one(rename.apply(json!({"host": "web-1", "msg": "hi", "server": {"ip": 1}})));
        assert_eq!(
            out,
            json!({"server": {"ip": 1, "name": "web-1"}, "message": "hi"})
        );
        assert_eq!(
            rename.describe(),
            "rename: host → server.name, msg → message, nope → x"
        );
        let args: RenameArgs = serde_json::from_str(r#"{"a": "a.b"}"#).unwrap();
        assert!(
            Rename::new(args)
                .err()
                .unwrap()
                .to_string()
                .contains("inside it")
        );
    }

    #[test]
    fn remove_deletes_nested_fields() {
        let args: RemoveArgs = serde_json::from_str(r#"["password", "user.ssn", "gone"]"#).unwrap();
        let remove = Remove::new(args).unwrap();
        let out = one(remove.apply(json!({"password": "x", "user": {"ssn": 1, "id": 2}})));
        assert_eq!(out, json!({"user": {"id": 2}}));
        assert_eq!(remove.describe(), "remove: password, user.ssn, gone");
        let args: RemoveArgs = serde_json::from_str(r#"["a..b"]"#).unwrap();
        assert!(Remove::new(args).is_err());
    }

    #[test]
    fn empty_arguments_are_rejected() {
        assert!(Set::new(serde_json::from_str("{}").unwrap()).is_err());
        assert!(Rename::new(serde_json::from_str("{}").unwrap()).is_err());
        assert!(Remove::new(serde_json::from_str("[]").unwrap()).is_err());
    }
}
