//! Text templates over a message's fields: `user:{id}`, `orders.{region}`,
//! `shop:{customer.id}:cart`, used for Redis keys and NATS subjects.
//!
//! A placeholder `{path}` names a field of the message (a JSON object); a
//! dotted path goes into nested objects. `{{` and `}}` stand for literal
//! braces. A field's value must be a string (inserted as is), a number or a
//! boolean (inserted as JSON writes them).

use std::fmt::Write as _;

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldTemplate {
    text: String,
    parts: Vec<Part>,
}

impl FieldTemplate {
    /// Parses `text`; the error says what is wrong and where.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let start = i + 1;
                    let Some(len) = text[start..].find('}') else {
                        return Err(format!(
                            "template `{text}`: the `{{` at byte {i} is never closed; write `{{field}}`, or `{{{{` for a literal brace"
                        ));
                    };
                    let name = text[start..start + len].trim();
                    if name.is_empty() || name.split('.').any(str::is_empty) || name.contains('{') {
                        return Err(format!(
                            "template `{text}`: `{{{}}}` does not name a field; write a field name such as `{{id}}` or a path such as `{{customer.id}}`",
                            &text[start..start + len]
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field(name.split('.').map(str::to_string).collect()));
                    while chars.next_if(|&(j, _)| j <= start + len).is_some() {}
                }
                '}' => {
                    return Err(format!(
                        "template `{text}`: unmatched `}}` at byte {i}; write `}}}}` for a literal brace"
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(FieldTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // used by the Redis key sink
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The text, when the template has no placeholder.
    pub(crate) fn fixed(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [] => Some(""),
            [Part::Literal(text)] => Some(text),
            _ => None,
        }
    }

    /// Appends the template filled from `object` to `out`. On error, `out`
    /// may hold part of the text.
    pub(crate) fn render_into(
        &self,
        object: &Map<String, Value>,
        out: &mut String,
    ) -> Result<(), String> {
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(path) => {
                    let mut value = object.get(&path[0]);
                    for name in &path[1..] {
                        value = value.and_then(|v| v.get(name));
                    }
                    match value {
                        Some(Value::String(s)) => out.push_str(s),
                        Some(Value::Number(n)) => {
                            let _ = write!(out, "{n}");
                        }
                        Some(Value::Bool(b)) => {
                            let _ = write!(out, "{b}");
                        }
                        Some(other) => {
                            let kind = match other {
                                Value::Null => "null",
                                Value::Array(_) => "an array",
                                _ => "an object",
                            };
                            return Err(format!(
                                "template `{}`: field `{}` is {kind}; a placeholder needs a string, a number or a boolean",
                                self.text,
                                path.join(".")
                            ));
                        }
                        None => {
                            return Err(format!(
                                "template `{}`: the message has no field `{}`",
                                self.text,
                                path.join(".")
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The template filled from `object`.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))] // used by the NATS sink
    pub(crate) fn render(&self, object: &Map<String, Value>) -> Result<String, String> {
        let mut out = String::new();
        self.render_into(object, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn fills_fields_paths_and_escapes() {
        let t = FieldTemplate::parse("user:{id}:{ profile.region }:{{x}}").unwrap();
        assert_eq!(t.fixed(), None);
        let o = obj(serde_json::json!({"id": 7, "profile": {"region": "eu"}}));
        assert_eq!(t.render(&o).unwrap(), "user:7:eu:{x}");
        let fixed = FieldTemplate::parse("orders.out").unwrap();
        assert_eq!(fixed.fixed(), Some("orders.out"));
        let b = FieldTemplate::parse("{ok}").unwrap();
        assert_eq!(
            b.render(&obj(serde_json::json!({"ok": true}))).unwrap(),
            "true"
        );
    }

    #[test]
    fn explains_bad_templates_and_missing_fields() {
        assert!(
            FieldTemplate::parse("user:{id")
                .unwrap_err()
                .contains("never closed")
        );
        assert!(
            FieldTemplate::parse("user:{}")
                .unwrap_err()
                .contains("does not name")
        );
        assert!(
            FieldTemplate::parse("user:{a..b}")
                .unwrap_err()
                .contains("does not name")
        );
        assert!(
            FieldTemplate::parse("user:}")
                .unwrap_err()
                .contains("unmatched")
        );
        let t = FieldTemplate::parse("user:{id}").unwrap();
        let err = t
            .render(&obj(serde_json::json!({"name": "x"})))
            .unwrap_err();
        assert!(err.contains("no field `id`"), "{err}");
        let err = t.render(&obj(serde_json::json!({"id": null}))).unwrap_err();
        assert!(err.contains("is null"), "{err}");
    }
}
