//! The definition of one managed flow: its text as written, checked alone
//! with the settings (`policies`, `channels`) of the file it belongs to.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use crate::config::{self, ConfigError, ConfigErrors, FlowFile, FlowSpec, Plan};
use crate::policy::DEFAULTS_KEY;

/// The file-wide settings flows are checked with: `policies` and `channels`,
/// as written (no `${VAR}` expanded).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Settings {
    pub(crate) policies: Option<serde_json::Value>,
    pub(crate) channels: Option<serde_json::Value>,
}

impl Settings {
    /// The settings as they bear on a flow whose steps are `functions`: the
    /// policies of other functions are left out (they are checked with the
    /// flows that use them).
    pub(crate) fn for_functions(&self, functions: &[String]) -> Settings {
        let policies = self.policies.as_ref().map(|p| match p {
            serde_json::Value::Object(map) => serde_json::Value::Object(
                map.iter()
                    .filter(|(k, _)| k.as_str() == DEFAULTS_KEY || functions.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        });
        Settings {
            policies,
            channels: self.channels.clone(),
        }
    }

    /// A flow file with these settings and no flow yet.
    fn empty_file(&self, origin: &str) -> Result<FlowFile, ConfigErrors> {
        let mut doc = serde_json::Map::new();
        doc.insert(
            "flows".into(),
            serde_json::Value::Object(Default::default()),
        );
        if let Some(p) = &self.policies {
            doc.insert("policies".into(), p.clone());
        }
        if let Some(c) = &self.channels {
            doc.insert("channels".into(), c.clone());
        }
        // JSON is YAML: the settings go through the same reader as files.
        let text = serde_json::Value::Object(doc).to_string();
        serde_saphyr::from_str(&text).map_err(|e| {
            one(
                origin,
                format!(
                    "the `policies`/`channels` settings of the flow file cannot be read back ({}); apply the whole file again",
                    config_message(&e)
                ),
            )
        })
    }

    fn to_value(&self) -> serde_json::Value {
        serde_json::json!({ "policies": self.policies, "channels": self.channels })
    }
}

/// A flow file as loose values: what changes are compared on.
#[derive(Debug, Deserialize)]
pub(crate) struct RawFile {
    #[serde(default)]
    pub(crate) flows: BTreeMap<String, Spanned<serde_json::Value>>,
    #[serde(default)]
    pub(crate) policies: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) channels: Option<serde_json::Value>,
}

impl RawFile {
    pub(crate) fn parse(text: &str, origin: &str) -> Result<RawFile, ConfigErrors> {
        serde_saphyr::from_str(text).map_err(|e| yaml_error(&e, origin))
    }

    pub(crate) fn settings(&self) -> Settings {
        Settings {
            policies: self.policies.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// One managed flow's definition.
#[derive(Debug, Clone)]
pub(crate) struct Definition {
    /// The text as written: one flow (`source:`, `steps:`, ...), or a whole
    /// file holding that one flow.
    pub(crate) text: String,
    /// Whether `text` is a whole file (with its own `policies`/`channels`).
    pub(crate) whole_file: bool,
    /// Names the text in errors.
    pub(crate) origin: String,
    /// Lines and columns to add to a location in `text` to get one in
    /// `origin` (for a flow cut out of a file).
    pub(crate) offset: (u64, u64),
    /// The settings a one-flow text is checked with.
    pub(crate) settings: Settings,
    /// The flow and its settings as values (no `${VAR}` expanded): two
    /// definitions with the same `raw` run the same way.
    pub(crate) raw: serde_json::Value,
}

impl Definition {
    /// A definition given as text (`PUT /flows/{name}`, `FlowManager::create`):
    /// one flow, checked with `settings`, or a whole file holding exactly
    /// the flow `name`.
    pub(crate) fn from_text(
        name: &str,
        text: &str,
        origin: &str,
        settings: &Settings,
    ) -> Result<(Definition, Plan), ConfigErrors> {
        let top: serde_json::Value =
            serde_saphyr::from_str(text).map_err(|e| yaml_error(&e, origin))?;
        let is_file = top.as_object().is_some_and(|m| m.contains_key("flows"));
        if is_file {
            let plan = config::load_str(text, origin)?;
            let names = plan.names();
            if names != [name] {
                return Err(one(
                    origin,
                    format!(
                        "a whole flow file given for flow `{name}` must define exactly that flow; it defines {}: send the one flow (its `source:`, `steps:`, `sinks:`), or a file with only `flows: {{ {name}: ... }}`",
                        if names.is_empty() {
                            "none".to_string()
                        } else {
                            names
                                .iter()
                                .map(|n| format!("`{n}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    ),
                ));
            }
            let raw_file = RawFile::parse(text, origin)?;
            let flow = raw_file
                .flows
                .get(name)
                .map(|f| f.value.clone())
                .unwrap_or_default();
            let settings = raw_file.settings().for_functions(&functions_of(&flow));
            let def = Definition {
                text: text.to_string(),
                whole_file: true,
                origin: origin.to_string(),
                offset: (0, 0),
                raw: serde_json::json!({ "flow": flow, "settings": settings.to_value() }),
                settings,
            };
            return Ok((def, plan));
        }
        let settings = settings.for_functions(&functions_of(&top));
        let def = Definition {
            text: text.to_string(),
            whole_file: false,
            origin: origin.to_string(),
            offset: (0, 0),
            raw: serde_json::json!({ "flow": top, "settings": settings.to_value() }),
            settings,
        };
        let plan = def.check(name)?;
        Ok((def, plan))
    }

    /// The definition of flow `name` of a flow file: its lines as written,
    /// cut out of the file (or, for a flow written inline, as JSON).
    pub(crate) fn cut_from_file(
        name: &str,
        file_text: &str,
        origin: &str,
        flow: &Spanned<serde_json::Value>,
        settings: &Settings,
    ) -> Definition {
        let settings = settings.for_functions(&functions_of(&flow.value));
        let raw = serde_json::json!({ "flow": flow.value, "settings": settings.to_value() });
        let (text, origin, offset) = match cut(file_text, flow.referenced) {
            Some((text, offset))
                if serde_saphyr::from_str::<serde_json::Value>(&text)
                    .is_ok_and(|v| v == flow.value) =>
            {
                (text, origin.to_string(), offset)
            }
            _ => (
                serde_json::to_string_pretty(&flow.value).unwrap_or_default(),
                format!("flow `{name}` of {origin} (as JSON)"),
                (0, 0),
            ),
        };
        Definition {
            text,
            whole_file: false,
            origin,
            offset,
            settings,
            raw,
        }
    }

    /// Checks the definition again (on resume: the functions are the same,
    /// but the environment may have changed).
    pub(crate) fn check(&self, name: &str) -> Result<Plan, ConfigErrors> {
        if self.whole_file {
            return config::load_str(&self.text, &self.origin);
        }
        let shift = |mut errors: ConfigErrors| {
            for e in &mut errors.errors {
                if e.line > 0 && e.file == self.origin {
                    e.line += self.offset.0;
                    e.column += self.offset.1;
                }
            }
            errors
        };
        let spec: Spanned<FlowSpec> =
            serde_saphyr::from_str(&self.text).map_err(|e| shift(yaml_error(&e, &self.origin)))?;
        let mut file = self.settings.empty_file(&self.origin)?;
        file.flows.insert(name.to_string(), spec);
        config::check(file, &self.origin).map_err(shift)
    }
}

/// The registered function names among a flow's steps.
fn functions_of(flow: &serde_json::Value) -> Vec<String> {
    flow.get("steps")
        .and_then(|s| s.as_array())
        .map(|steps| {
            steps
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The lines of a block mapping that starts at `at`, up to the first line
/// indented less, without their common indentation; and the offset of the
/// cut text in the file. `None` for a value written inline (`{ ... }`).
fn cut(text: &str, at: Location) -> Option<(String, (u64, u64))> {
    let line = usize::try_from(at.line()).ok()?.checked_sub(1)?;
    let indent = usize::try_from(at.column()).ok()?.checked_sub(1)?;
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.get(line)?;
    let head: String = first.chars().take(indent).collect();
    if !head.chars().all(|c| c == ' ') || first.chars().nth(indent).is_none_or(|c| c == '{') {
        return None;
    }
    let mut end = line + 1;
    while let Some(l) = lines.get(end) {
        let content = l.trim_start_matches(' ');
        if !content.trim().is_empty() && l.len() - content.len() < indent {
            break;
        }
        end += 1;
    }
    while end > line + 1 && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    let mut out = String::new();
    for l in &lines[line..end] {
        let spaces = l.len() - l.trim_start_matches(' ').len();
        out.push_str(&l[spaces.min(indent)..]);
        out.push('\n');
    }
    Some((out, (line as u64, indent as u64)))
}

fn yaml_error(e: &serde_saphyr::Error, origin: &str) -> ConfigErrors {
    let location = e.location().unwrap_or(Location::UNKNOWN);
    ConfigErrors {
        errors: vec![ConfigError {
            file: origin.to_string(),
            line: location.line(),
            column: location.column(),
            message: config_message(e),
        }],
    }
}

fn config_message(e: &serde_saphyr::Error) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string()
}

pub(crate) fn one(origin: &str, message: String) -> ConfigErrors {
    ConfigErrors {
        errors: vec![ConfigError {
            file: origin.to_string(),
            line: 0,
            column: 0,
            message,
        }],
    }
}

/// `message` with the value of every `${VAR}` that `text` refers to put
/// back as `${VAR}`: what the flow's environment supplied is never echoed.
pub(crate) fn redact(message: &str, text: &str) -> String {
    let mut values: Vec<(String, String)> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else { break };
        let expr = &after[..end];
        let name = expr.split_once(":-").map_or(expr, |(n, _)| n);
        if let Ok(value) = std::env::var(name)
            && !value.is_empty()
        {
            values.push((value, format!("${{{name}}}")));
        }
        rest = &after[end + 1..];
    }
    // Longest first, so that a value containing another is replaced whole.
    values.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
    let mut out = message.to_string();
    for (value, reference) in values {
        out = out.replace(&value, &reference);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_a_flow_out_of_its_file() {
        let text = "flows:\n  a:\n    source: { stdin: true }\n    # the steps\n    steps: [x]\n\n  b:\n    source: { stdin: true }\nchannels: {}\n";
        let raw: RawFile = RawFile::parse(text, "f.yaml").unwrap();
        let a = &raw.flows["a"];
        let (cut_a, offset) = cut(text, a.referenced).unwrap();
        assert_eq!(
            cut_a, "source: { stdin: true }\n# the steps\nsteps: [x]\n",
            "{:?}",
            a.referenced
        );
        assert_eq!(offset, (2, 4));
        let (cut_b, _) = cut(text, raw.flows["b"].referenced).unwrap();
        assert_eq!(cut_b, "source: { stdin: true }\n");

        let inline = "flows:\n  a: { source: { stdin: true } }\n";
        let raw = RawFile::parse(inline, "f.yaml").unwrap();
        assert_eq!(cut(inline, raw.flows["a"].referenced), None);
    }

    #[test]
    fn policies_of_other_functions_are_left_out() {
        let settings = Settings {
            policies: Some(serde_json::json!({
                "defaults": { "on_error": "drop" },
                "parse": { "on_error": "stop" },
                "other": { "on_error": "stop" },
            })),
            channels: None,
        };
        let only = settings.for_functions(&["parse".to_string()]);
        assert_eq!(
            only.policies,
            Some(serde_json::json!({
                "defaults": { "on_error": "drop" },
                "parse": { "on_error": "stop" },
            }))
        );
    }

    #[test]
    fn interpolated_values_are_put_back_as_references() {
        // SAFETY: no other test reads or writes this variable.
        unsafe { std::env::set_var("SYNCFLOW_REDACT_TEST", "s3cr3t-path") };
        let text = "source: { file: \"${SYNCFLOW_REDACT_TEST}/in.jsonl\" }";
        assert_eq!(
            redact("cannot open `s3cr3t-path/in.jsonl`", text),
            "cannot open `${SYNCFLOW_REDACT_TEST}/in.jsonl`"
        );
    }
}
