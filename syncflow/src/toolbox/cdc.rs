//! Change-data-capture helpers for Debezium-style envelopes:
//!
//! ```json
//! {"op": "u", "before": {"id": 1, "qty": 2}, "after": {"id": 1, "qty": 3},
//!  "source": {"db": "shop", "table": "orders"}, "ts_ms": 1700000000000}
//! ```
//!
//! `op` is `c` (insert), `u` (update), `d` (delete), `r` (snapshot read) or
//! `t` (truncate). An envelope wrapped as `{"schema": ..., "payload": {...}}`
//! (Kafka Connect's JSON converter with schemas on) is read through
//! `payload`.

use serde::Deserialize;

pub use crate::cdc::CdcOp;
use serde_json::{Map as JsonMap, Value};

use super::expr::json_type_article;
use super::fields::FieldPath;
use super::{ToolError, ToolOutcome};

/// Reads the envelope of `message`: itself, or its `payload`.
fn envelope(message: &Value) -> Result<(&JsonMap<String, Value>, CdcOp), String> {
    let Value::Object(fields) = message else {
        return Err(format!(
            "not a change envelope: the message is {}, not an object with `op`, `before` and \
             `after`",
            json_type_article(message)
        ));
    };
    let fields = match (fields.get("op"), fields.get("payload")) {
        (None, Some(Value::Object(payload))) if payload.contains_key("op") => payload,
        _ => fields,
    };
    let op = match fields.get("op") {
        Some(Value::String(code)) => CdcOp::from_code(code).ok_or_else(|| {
            format!("unknown change op `{code}`: expected c, u, d, r, t or ddl (Debezium codes)")
        })?,
        Some(other) => {
            return Err(format!(
                "not a change envelope: `op` is {}, not a string such as \"c\"",
                json_type_article(other)
            ));
        }
        None => {
            let mut keys: Vec<&str> = fields.keys().map(String::as_str).take(6).collect();
            if fields.len() > keys.len() {
                keys.push("...");
            }
            return Err(format!(
                "not a change envelope: no `op` field (the message has: {}); expected \
                 Debezium's {{op, before, after, source}}: unwrap it only once, and only on \
                 change events",
                keys.join(", ")
            ));
        }
    };
    Ok((fields, op))
}

/// Arguments of `cdc_filter`.
///
/// ```yaml
/// - cdc_filter: { ops: [insert, update] }    # or [c, u]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcFilterArgs {
    /// The operations to keep.
    pub ops: Vec<CdcOp>,
}

/// Keeps the change events whose operation is listed.
pub struct CdcFilter {
    ops: u8,
}

impl CdcFilter {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "cdc_filter";

    /// Checks that at least one operation is listed.
    pub fn new(args: CdcFilterArgs) -> Result<CdcFilter, ToolError> {
        if args.ops.is_empty() {
            return Err(ToolError::Args {
                tool: Self::NAME,
                message: "no ops given: list the operations to keep, such as `[insert, update]`"
                    .into(),
            });
        }
        Ok(CdcFilter {
            ops: args.ops.iter().fold(0, |bits, op| bits | op.bit()),
        })
    }

    /// The operator's name, `cdc_filter`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `cdc_filter: keep c (insert), u (update)`.
    pub fn describe(&self) -> String {
        let ops: Vec<String> = CdcOp::ALL
            .into_iter()
            .filter(|op| self.ops & op.bit() != 0)
            .map(|op| op.to_string())
            .collect();
        format!("cdc_filter: keep {}", ops.join(", "))
    }

    /// Whether the envelope's operation is kept. An error if `message` is
    /// not an envelope.
    pub fn keep(&self, message: &Value) -> Result<bool, ToolError> {
        let (_, op) = envelope(message).map_err(|message| ToolError::Message {
            tool: Self::NAME,
            message,
        })?;
        Ok(self.ops & op.bit() != 0)
    }

    /// Passes `message` on, or drops it.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        Ok(if self.keep(&message)? {
            ToolOutcome::One(message)
        } else {
            ToolOutcome::Drop
        })
    }
}

/// What `cdc_unwrap` emits for a delete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteRows {
    /// The row as it was before the delete (`before`).
    #[default]
    Before,
    /// Nothing: deletes are dropped.
    Drop,
}

/// Arguments of `cdc_unwrap`.
///
/// ```yaml
/// - cdc_unwrap: { deletes: before, op_field: __op }
/// - cdc_unwrap: {}                    # defaults: deletes: before, no op field
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcUnwrapArgs {
    /// What to emit for deletes (default `before`).
    #[serde(default)]
    pub deletes: DeleteRows,
    /// If given, a field (dotted path) of the emitted row that receives the
    /// op code (`c`, `u`, `d`, `r`).
    #[serde(default)]
    pub op_field: Option<String>,
}

/// Replaces a change envelope with its row: `after` for inserts, updates
/// and snapshot reads, `before` for deletes (or drops them). Truncates carry
/// no row and are dropped.
pub struct CdcUnwrap {
    deletes: DeleteRows,
    op_field: Option<FieldPath>,
}

impl CdcUnwrap {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "cdc_unwrap";

    /// Checks the op field's path.
    pub fn new(args: CdcUnwrapArgs) -> Result<CdcUnwrap, ToolError> {
        let op_field = args
            .op_field
            .as_deref()
            .map(FieldPath::parse)
            .transpose()
            .map_err(|message| ToolError::Args {
                tool: Self::NAME,
                message,
            })?;
        Ok(CdcUnwrap {
            deletes: args.deletes,
            op_field,
        })
    }

    /// The operator's name, `cdc_unwrap`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings.
    pub fn describe(&self) -> String {
        let deletes = match self.deletes {
            DeleteRows::Before => "the row before for deletes",
            DeleteRows::Drop => "deletes dropped",
        };
        let op = match &self.op_field {
            Some(field) => format!(", op code in `{field}`"),
            None => String::new(),
        };
        format!("cdc_unwrap: emit the row after each change, {deletes}{op}")
    }

    /// The row of the change, or `Drop`.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        let fail = |message| ToolError::Message {
            tool: Self::NAME,
            message,
        };
        let op = envelope(&message).map_err(fail)?.1;
        let image = match op {
            CdcOp::Insert | CdcOp::Update | CdcOp::Snapshot => "after",
            CdcOp::Delete if self.deletes == DeleteRows::Before => "before",
            CdcOp::Delete | CdcOp::Truncate | CdcOp::Ddl => return Ok(ToolOutcome::Drop),
        };
        let mut fields = match message {
            Value::Object(mut outer) => match outer.remove("payload") {
                Some(Value::Object(payload)) if !outer.contains_key("op") => payload,
                Some(payload) => {
                    outer.insert("payload".into(), payload);
                    outer
                }
                None => outer,
            },
            // `envelope` accepted it, so it is an object.
            other => return Err(fail(format!("not a change envelope: {other}"))),
        };
        let mut row = match fields.remove(image) {
            Some(Value::Null) | None => {
                let hint = if image == "before" {
                    "the source did not send the old row (Postgres: set REPLICA IDENTITY \
                     FULL, or DEFAULT with a primary key), or set `deletes: drop`"
                } else {
                    "the envelope is incomplete: check the connector's output"
                };
                let article = if image == "after" { "an" } else { "a" };
                return Err(fail(format!(
                    "op {op} without {article} `{image}` row: {hint}"
                )));
            }
            Some(row) => row,
        };
        if let Some(field) = &self.op_field {
            field
                .set(&mut row, Value::String(op.code().to_owned()))
                .map_err(|e| fail(format!("cannot add the op to the row: {e}")))?;
        }
        Ok(ToolOutcome::One(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(op: &str) -> Value {
        json!({
            "op": op,
            "before": if op == "c" || op == "r" { Value::Null } else { json!({"id": 1, "qty": 2}) },
            "after": if op == "d" { Value::Null } else { json!({"id": 1, "qty": 3}) },
            "source": {"table": "orders"}
        })
    }

    fn cdc_filter(ops: &str) -> CdcFilter {
        CdcFilter::new(serde_json::from_str(ops).unwrap()).unwrap()
    }

    #[test]
    fn filter_by_codes_or_readable_names() {
        for args in [r#"{"ops": ["c", "u"]}"#, r#"{"ops": ["insert", "update"]}"#] {
            let f = cdc_filter(args);
            assert!(f.keep(&change("c")).unwrap(), "{args}");
            assert!(f.keep(&change("u")).unwrap(), "{args}");
            assert!(!f.keep(&change("d")).unwrap(), "{args}");
            assert!(!f.keep(&change("r")).unwrap(), "{args}");
            assert_eq!(f.describe(), "cdc_filter: keep c (insert), u (update)");
        }
        let f = cdc_filter(r#"{"ops": ["snapshot", "delete", "create"]}"#);
        assert!(f.keep(&change("r")).unwrap() && f.keep(&change("d")).unwrap());
        assert_eq!(f.apply(change("u")).unwrap(), ToolOutcome::Drop);
        assert_eq!(f.apply(change("c")).unwrap(), ToolOutcome::One(change("c")));
    }

    #[test]
    fn filter_arguments_are_checked() {
        let err = serde_json::from_str::<CdcFilterArgs>(r#"{"ops": ["upsert"]}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `upsert`"),
            "{err}"
        );
        let err = serde_json::from_str::<CdcFilterArgs>(r#"{"op": ["c"]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `op`"), "{err}");
        assert!(CdcFilter::new(CdcFilterArgs { ops: vec![] }).is_err());
    }

    #[test]
    fn messages_that_are_not_envelopes_are_clear_errors() {
        let f = cdc_filter(r#"{"ops": ["c"]}"#);
        let err = f
            .keep(&json!({"id": 1, "name": "x"}))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cdc_filter: not a change envelope: no `op` field"),
            "{err}"
        );
        assert!(err.contains("(the message has: id, name)"), "{err}");
        let err = f.keep(&json!("text")).unwrap_err().to_string();
        assert!(err.contains("the message is a string"), "{err}");
        let err = f.keep(&json!({"op": "x"})).unwrap_err().to_string();
        assert!(err.contains("unknown change op `x`"), "{err}");
        let err = f.keep(&json!({"op": 1})).unwrap_err().to_string();
        assert!(err.contains("`op` is a number"), "{err}");
    }

    #[test]
    fn envelopes_wrapped_in_payload_are_read() {
        let wrapped = json!({"schema": {}, "payload": change("c")});
        assert!(cdc_filter(r#"{"ops": ["c"]}"#).keep(&wrapped).unwrap());
        let unwrap = CdcUnwrap::new(CdcUnwrapArgs::default()).unwrap();
        assert_eq!(
            unwrap.apply(wrapped).unwrap(),
            ToolOutcome::One(json!({"id": 1, "qty": 3}))
        );
    }

    #[test]
    fn unwrap_emits_after_or_before_for_deletes() {
        let unwrap = CdcUnwrap::new(CdcUnwrapArgs::default()).unwrap();
        for op in ["c", "u", "r"] {
            assert_eq!(
                unwrap.apply(change(op)).unwrap(),
                ToolOutcome::One(json!({"id": 1, "qty": 3})),
                "{op}"
            );
        }
        assert_eq!(
            unwrap.apply(change("d")).unwrap(),
            ToolOutcome::One(json!({"id": 1, "qty": 2}))
        );
        assert_eq!(unwrap.apply(json!({"op": "t"})).unwrap(), ToolOutcome::Drop);
    }

    #[test]
    fn unwrap_options_drop_deletes_and_add_the_op() {
        let unwrap = CdcUnwrap::new(
            serde_json::from_str(r#"{"deletes": "drop", "op_field": "meta.op"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(unwrap.apply(change("d")).unwrap(), ToolOutcome::Drop);
        assert_eq!(
            unwrap.apply(change("u")).unwrap(),
            ToolOutcome::One(json!({"id": 1, "qty": 3, "meta": {"op": "u"}}))
        );
        assert_eq!(
            unwrap.describe(),
            "cdc_unwrap: emit the row after each change, deletes dropped, op code in `meta.op`"
        );
        let with_op = CdcUnwrap::new(CdcUnwrapArgs {
            op_field: Some("__op".into()),
            ..CdcUnwrapArgs::default()
        })
        .unwrap();
        assert_eq!(
            with_op.apply(change("d")).unwrap(),
            ToolOutcome::One(json!({"id": 1, "qty": 2, "__op": "d"}))
        );
    }

    #[test]
    fn unwrap_errors_say_what_is_missing() {
        let unwrap = CdcUnwrap::new(CdcUnwrapArgs::default()).unwrap();
        let err = unwrap
            .apply(json!({"op": "d", "before": null, "after": null}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("op d (delete) without a `before` row"),
            "{err}"
        );
        assert!(err.contains("REPLICA IDENTITY"), "{err}");
        let err = unwrap.apply(json!({"op": "c"})).unwrap_err().to_string();
        assert!(err.contains("without an `after` row"), "{err}");
        let err = CdcUnwrap::new(CdcUnwrapArgs {
            op_field: Some("__op".into()),
            ..CdcUnwrapArgs::default()
        })
        .unwrap()
        .apply(json!({"op": "c", "after": 5}))
        .unwrap_err()
        .to_string();
        assert!(err.contains("cannot add the op"), "{err}");
        let err = serde_json::from_str::<CdcUnwrapArgs>(r#"{"deletes": "tombstone"}"#).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `tombstone`"),
            "{err}"
        );
    }
}
