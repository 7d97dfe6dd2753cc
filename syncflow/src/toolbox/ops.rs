//! Constructors of toolbox steps for `flow!`: `flow!(parse -> ops::filter("cents > 0") -> save)`.
//!
//! Each returns the built operator or its configuration error, exactly as
//! the same step in a flow file would be checked at load time. See the
//! [`step`](super::step) module for how they run.

use serde_json::Value;

use super::{
    CdcFilter, CdcFilterArgs, CdcOp, CdcUnwrap, CdcUnwrapArgs, Dedupe, DedupeArgs, Fields, Filter,
    FilterArgs, JsonDecode, JsonEncode, JsonFieldArgs, Map, MapArgs, Remove, RemoveArgs, Rename,
    RenameArgs, Set, SetArgs, SetValue, Tool, ToolError, ToolSpec,
};

fn spec(value: Value) -> Result<Tool, ToolError> {
    let spec: ToolSpec = serde_json::from_value(value).map_err(|e| ToolError::Args {
        tool: "toolbox",
        message: e.to_string(),
    })?;
    Tool::build(spec)
}

/// `filter`: keeps the messages for which `condition` (CEL) is true.
pub fn filter(condition: &str) -> Result<Tool, ToolError> {
    Ok(Tool::Filter(Filter::new(FilterArgs {
        expr: condition.to_string(),
    })?))
}

/// `map`: replaces each message by the value of `expression` (CEL).
pub fn map(expression: &str) -> Result<Tool, ToolError> {
    Ok(Tool::Map(Map::new(MapArgs {
        expr: expression.to_string(),
    })?))
}

/// `set`: sets fields, each to a value or the result of an expression, in order.
pub fn set(fields: &[(&str, SetValue)]) -> Result<Tool, ToolError> {
    let args = SetArgs {
        fields: Fields(
            fields
                .iter()
                .map(|(path, value)| (path.to_string(), value.clone()))
                .collect(),
        ),
    };
    Ok(Tool::Set(Set::new(args)?))
}

/// `rename`: moves fields (`from`, `to` paths), in order.
pub fn rename(pairs: &[(&str, &str)]) -> Result<Tool, ToolError> {
    let args = RenameArgs {
        fields: Fields(
            pairs
                .iter()
                .map(|(from, to)| (from.to_string(), to.to_string()))
                .collect(),
        ),
    };
    Ok(Tool::Rename(Rename::new(args)?))
}

/// `remove`: removes fields (paths); missing ones are ignored.
pub fn remove(paths: &[&str]) -> Result<Tool, ToolError> {
    Ok(Tool::Remove(Remove::new(RemoveArgs {
        fields: paths.iter().map(|p| p.to_string()).collect(),
    })?))
}

/// `dedupe`: drops messages whose `key` (CEL) was seen within `ttl` (`10m`).
pub fn dedupe(key: &str, ttl: &str) -> Result<Tool, ToolError> {
    let args: DedupeArgs = serde_json::from_value(serde_json::json!({ "key": key, "ttl": ttl }))
        .map_err(|e| ToolError::Args {
            tool: Dedupe::NAME,
            message: e.to_string(),
        })?;
    Ok(Tool::Dedupe(Dedupe::new(args)?))
}

/// `json_decode`: parses the JSON text of `field` (`None`: the whole message).
pub fn json_decode(field: Option<&str>) -> Result<Tool, ToolError> {
    let args = json_field(field)?;
    Ok(Tool::JsonDecode(JsonDecode::new(args)?))
}

/// `json_encode`: writes `field` (`None`: the whole message) as JSON text.
pub fn json_encode(field: Option<&str>) -> Result<Tool, ToolError> {
    let args = json_field(field)?;
    Ok(Tool::JsonEncode(JsonEncode::new(args)?))
}

fn json_field(field: Option<&str>) -> Result<JsonFieldArgs, ToolError> {
    Ok(JsonFieldArgs {
        field: field.map(str::to_string),
        ..JsonFieldArgs::default()
    })
}

/// `cdc_filter`: keeps change events whose operation is one of `ops`.
pub fn cdc_filter(ops: &[CdcOp]) -> Result<Tool, ToolError> {
    Ok(Tool::CdcFilter(CdcFilter::new(CdcFilterArgs {
        ops: ops.to_vec(),
    })?))
}

/// `cdc_unwrap` with its defaults: a change event becomes its row.
pub fn cdc_unwrap() -> Result<Tool, ToolError> {
    Ok(Tool::CdcUnwrap(CdcUnwrap::new(CdcUnwrapArgs::default())?))
}

/// Any operator, from its flow-file form: `ops::step(json!({"set": {...}}))`.
pub fn step(spec_json: Value) -> Result<Tool, ToolError> {
    spec(spec_json)
}
