//! The operators driven by one expression each: `filter`, `map`, `route`.

use serde::Deserialize;
use serde_json::Value;

use super::{Expr, ToolError, ToolOutcome};

fn compile(tool: &'static str, at: &str, source: &str) -> Result<Expr, ToolError> {
    Expr::compile(source).map_err(|error| ToolError::Expr {
        tool,
        at: at.to_owned(),
        error,
    })
}

/// Arguments of `filter`: the condition, written directly.
///
/// ```yaml
/// - filter: 'level != "debug"'
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct FilterArgs {
    /// A boolean expression; messages for which it is true are kept.
    pub expr: String,
}

/// Keeps the messages for which a condition is true.
pub struct Filter {
    condition: Expr,
}

impl Filter {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "filter";

    /// Compiles the condition.
    pub fn new(args: FilterArgs) -> Result<Filter, ToolError> {
        Ok(Filter {
            condition: compile(Self::NAME, "condition", &args.expr)?,
        })
    }

    /// The operator's name, `filter`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `filter: keep where level != "debug"`.
    pub fn describe(&self) -> String {
        format!("filter: keep where {}", self.condition)
    }

    /// Whether `message` passes. An error if the condition fails or is not a
    /// boolean.
    pub fn keep(&self, message: &Value) -> Result<bool, ToolError> {
        self.condition
            .eval_bool(message)
            .map_err(|error| ToolError::Eval {
                tool: Self::NAME,
                error,
            })
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

/// Arguments of `map`: the expression whose result replaces the message.
///
/// ```yaml
/// - map: '{"ts": ts, "level": level, "host": host, "status": status}'
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MapArgs {
    /// Any expression; its result, as JSON, is the new message.
    pub expr: String,
}

/// Replaces each message with the result of an expression.
pub struct Map {
    expr: Expr,
}

impl Map {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "map";

    /// Compiles the expression.
    pub fn new(args: MapArgs) -> Result<Map, ToolError> {
        Ok(Map {
            expr: compile(Self::NAME, "expression", &args.expr)?,
        })
    }

    /// The operator's name, `map`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `map: each message becomes {...}`.
    pub fn describe(&self) -> String {
        format!("map: each message becomes {}", self.expr)
    }

    /// The new message.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        self.expr
            .eval(&message)
            .map(ToolOutcome::One)
            .map_err(|error| ToolError::Eval {
                tool: Self::NAME,
                error,
            })
    }
}

/// One case of `route`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCase {
    /// The condition.
    pub when: String,
    /// Where messages go when it is true: an output name the flow defines.
    pub to: String,
}

/// Arguments of `route`.
///
/// ```yaml
/// - route:
///     cases:
///       - { when: 'status >= 500', to: errors }
///       - { when: 'level == "warn"', to: warnings }
///     default: main
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteArgs {
    /// Tried in order; the first whose condition is true wins.
    pub cases: Vec<RouteCase>,
    /// Where messages go when no case matches. Without it, they are dropped.
    #[serde(default)]
    pub default: Option<String>,
}

/// Sends each message to the target of the first case whose condition is
/// true, or to the default.
pub struct Route {
    cases: Vec<(Expr, usize)>,
    default: Option<usize>,
    targets: Vec<Box<str>>,
}

impl Route {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "route";

    /// Compiles the conditions and checks the target names.
    pub fn new(args: RouteArgs) -> Result<Route, ToolError> {
        if args.cases.is_empty() {
            return Err(ToolError::Args {
                tool: Self::NAME,
                message: "no cases given: write `cases: [{when: <condition>, to: <output>}]`"
                    .into(),
            });
        }
        let mut targets: Vec<Box<str>> = Vec::new();
        let mut target = |name: &str, at: &str| -> Result<usize, ToolError> {
            if name.trim().is_empty() {
                return Err(ToolError::Args {
                    tool: Self::NAME,
                    message: format!("{at}: the target name is empty: name an output"),
                });
            }
            Ok(match targets.iter().position(|t| &**t == name) {
                Some(i) => i,
                None => {
                    targets.push(Box::from(name));
                    targets.len() - 1
                }
            })
        };
        let mut cases = Vec::with_capacity(args.cases.len());
        for (i, case) in args.cases.iter().enumerate() {
            let at = format!("cases[{i}]");
            let to = target(&case.to, &format!("{at}.to"))?;
            cases.push((compile(Self::NAME, &format!("{at}.when"), &case.when)?, to));
        }
        let default = match &args.default {
            Some(name) => Some(target(name, "default")?),
            None => None,
        };
        Ok(Route {
            cases,
            default,
            targets,
        })
    }

    /// The operator's name, `route`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings:
    /// `route: status >= 500 → errors; otherwise → main`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .cases
            .iter()
            .map(|(when, to)| format!("{when} → {}", self.targets[*to]))
            .collect();
        parts.push(match self.default {
            Some(to) => format!("otherwise → {}", self.targets[to]),
            None => "otherwise dropped".into(),
        });
        format!("route: {}", parts.join("; "))
    }

    /// Every target name, each once, in the order they first appear (cases,
    /// then the default). [`ToolOutcome::To`] carries an index into it.
    pub fn targets(&self) -> &[Box<str>] {
        &self.targets
    }

    /// Where `message` goes: the index in [`Route::targets`], or `None` when
    /// no case matches and there is no default.
    pub fn route_index(&self, message: &Value) -> Result<Option<usize>, ToolError> {
        for (when, to) in &self.cases {
            let matched = when.eval_bool(message).map_err(|error| ToolError::Eval {
                tool: Self::NAME,
                error,
            })?;
            if matched {
                return Ok(Some(*to));
            }
        }
        Ok(self.default)
    }

    /// The name of the target `message` goes to; `None` when no case matches
    /// and there is no default (the message is then dropped).
    pub fn route(&self, message: &Value) -> Result<Option<&str>, ToolError> {
        Ok(self
            .route_index(message)?
            .map(|index| &*self.targets[index]))
    }

    /// Tags `message` with its target, or drops it.
    pub fn apply(&self, message: Value) -> Result<ToolOutcome, ToolError> {
        Ok(match self.route_index(&message)? {
            Some(target) => ToolOutcome::To { target, message },
            None => ToolOutcome::Drop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(src: &str) -> Filter {
        Filter::new(FilterArgs { expr: src.into() }).unwrap()
    }

    #[test]
    fn filter_keeps_what_is_true_and_drops_the_rest() {
        let f = filter(r#"level != "debug""#);
        let info = json!({"level": "info", "n": 1});
        assert_eq!(f.apply(info.clone()).unwrap(), ToolOutcome::One(info));
        assert_eq!(
            f.apply(json!({"level": "debug"})).unwrap(),
            ToolOutcome::Drop
        );
        assert_eq!(f.describe(), r#"filter: keep where level != "debug""#);
        assert_eq!(f.name(), "filter");
    }

    #[test]
    fn filter_errors_name_the_operator_and_expression() {
        let err = Filter::new(FilterArgs {
            expr: "level ==".into(),
        })
        .err()
        .unwrap();
        let text = err.to_string();
        assert!(text.starts_with("filter: condition: column 9: "), "{text}");

        let err = filter("level").apply(json!({"level": "x"})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "filter: expression `level`: the result is a string where true or false is \
             needed: compare it, e.g. `x == \"...\"`, `x > 0` or `has(this.x)`"
        );
        let err = filter("level == 'x'").apply(json!({})).unwrap_err();
        assert!(matches!(err, ToolError::Eval { .. }), "{err:?}");
    }

    #[test]
    fn map_replaces_the_message() {
        let m = Map::new(MapArgs {
            expr: "{'host': host, 'ok': status < 400}".into(),
        })
        .unwrap();
        let out = m
            .apply(json!({"host": "a", "status": 404, "msg": "x"}))
            .unwrap();
        assert_eq!(out, ToolOutcome::One(json!({"host": "a", "ok": false})));
        let scalar = Map::new(MapArgs {
            expr: "status * 2".into(),
        })
        .unwrap();
        assert_eq!(
            scalar.apply(json!({"status": 21})).unwrap(),
            ToolOutcome::One(json!(42))
        );
        assert!(m.apply(json!({"host": "a"})).is_err());
    }

    fn route(yaml_like_json: &str) -> Route {
        Route::new(serde_json::from_str(yaml_like_json).unwrap()).unwrap()
    }

    #[test]
    fn route_takes_the_first_matching_case_in_order() {
        let r = route(
            r#"{"cases": [
                {"when": "status >= 500", "to": "errors"},
                {"when": "status >= 400", "to": "client"},
                {"when": "level == 'warn'", "to": "errors"}
            ], "default": "main"}"#,
        );
        // 503 matches the first two cases: the first one wins.
        assert_eq!(r.route(&json!({"status": 503})).unwrap(), Some("errors"));
        assert_eq!(r.route(&json!({"status": 404})).unwrap(), Some("client"));
        assert_eq!(
            r.route(&json!({"status": 200, "level": "warn"})).unwrap(),
            Some("errors")
        );
        assert_eq!(
            r.route(&json!({"status": 200, "level": "info"})).unwrap(),
            Some("main")
        );
        let names: Vec<&str> = r.targets().iter().map(|t| &**t).collect();
        assert_eq!(names, ["errors", "client", "main"], "each name once");
        assert_eq!(
            r.apply(json!({"status": 404})).unwrap(),
            ToolOutcome::To {
                target: 1,
                message: json!({"status": 404})
            }
        );
        assert_eq!(
            r.describe(),
            "route: status >= 500 → errors; status >= 400 → client; \
             level == 'warn' → errors; otherwise → main"
        );
    }

    #[test]
    fn route_without_default_drops_unmatched_messages() {
        let r = route(r#"{"cases": [{"when": "status >= 500", "to": "errors"}]}"#);
        assert_eq!(r.route(&json!({"status": 200})).unwrap(), None);
        assert_eq!(r.apply(json!({"status": 200})).unwrap(), ToolOutcome::Drop);
        assert!(r.describe().ends_with("otherwise dropped"));
    }

    #[test]
    fn route_stops_at_the_first_match_so_later_cases_may_fail() {
        let r = route(
            r#"{"cases": [{"when": "has(this.status)", "to": "a"},
                          {"when": "missing == 1", "to": "b"}]}"#,
        );
        assert_eq!(r.route(&json!({"status": 1})).unwrap(), Some("a"));
        let err = r.route(&json!({})).unwrap_err();
        assert!(err.to_string().contains("`missing`"), "{err}");
    }

    #[test]
    fn route_arguments_are_checked() {
        let err = Route::new(serde_json::from_str(r#"{"cases": []}"#).unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("no cases"), "{err}");
        let err = Route::new(
            serde_json::from_str(
                r#"{"cases": [{"when": "a >", "to": "x"}, {"when": "1", "to": "y"}]}"#,
            )
            .unwrap(),
        )
        .err()
        .unwrap();
        assert!(
            err.to_string()
                .starts_with("route: cases[0].when: column 4"),
            "{err}"
        );
        let err = Route::new(
            serde_json::from_str(r#"{"cases": [{"when": "true", "to": " "}]}"#).unwrap(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("cases[0].to"), "{err}");
        let err =
            serde_json::from_str::<RouteArgs>(r#"{"cases": [], "defualt": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `defualt`"), "{err}");
        let err = serde_json::from_str::<RouteArgs>(r#"{"cases": [{"when": "true", "go": "x"}]}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `go`"), "{err}");
    }
}
