//! Validation: every problem of a policy configuration at once, each with
//! the path of the key (`policies.parse.retry.attempts`) and what to do.
//!
//! Deserialisation already refuses what cannot be read (unknown keys, a
//! duration without a unit); validation finds values that read fine but
//! cannot work (`attempts: 0`, `timeout: 0s`, a cap below the first delay).

use std::fmt;
use std::time::Duration;

use super::duration::Human;
use super::retry::{DEFAULT_INITIAL_BACKOFF, DEFAULT_MAX_BACKOFF};
use super::{DEFAULTS_KEY, OnError, Policy, PolicySet, Retry};

/// One problem in a policy configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: the dotted path of the key, e.g. `policies.parse.retry.attempts`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A policy configuration has problems; all of them are listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InvalidPolicy {
    /// Every problem found, in the order of the configuration.
    pub problems: Vec<Problem>,
}

impl fmt::Display for InvalidPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "invalid policy configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

fn into_result(problems: Vec<Problem>) -> Result<(), InvalidPolicy> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(InvalidPolicy { problems })
    }
}

struct Out<'a> {
    problems: &'a mut Vec<Problem>,
}

impl Out<'_> {
    fn push(&mut self, path: String, message: String) {
        self.problems.push(Problem { path, message });
    }
}

impl Policy {
    /// Every problem of this policy, its keys under `path` (e.g.
    /// `policies.parse`). Values a layer does not set are taken as their
    /// built-in defaults where two values must agree (`max_backoff` ≥
    /// `initial_backoff`). Use it on a whole layer, or on the policy a
    /// function resolves to.
    pub fn problems(&self, path: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut out = Out {
            problems: &mut problems,
        };
        self.check_fields(path, &mut out);
        if let Some(retry) = &self.retry {
            check_backoff_order(path, retry, None, &mut out);
        }
        problems
    }

    /// `Ok` when [`Policy::problems`] finds none.
    pub fn validate(&self, path: &str) -> Result<(), InvalidPolicy> {
        into_result(self.problems(path))
    }

    /// The checks of single values.
    fn check_fields(&self, path: &str, out: &mut Out<'_>) {
        if let Some(retry) = &self.retry {
            let at = |key: &str| format!("{path}.retry.{key}");
            if retry.attempts == Some(0) {
                out.push(
                    at("attempts"),
                    "attempts must be at least 1: it counts every try, the first call included (1 means no retry)".into(),
                );
            }
            if let Some(m) = retry.multiplier
                && !(m.is_finite() && m >= 1.0)
            {
                out.push(
                    at("multiplier"),
                    format!("multiplier {m} must be a number of at least 1 (1 keeps the backoff constant, 2 doubles it each time)"),
                );
            }
            if let Some(j) = retry.jitter
                && !(0.0..=1.0).contains(&j.get())
            {
                out.push(
                    at("jitter"),
                    format!("jitter {} is outside 0..1: write `none`, `equal`, `full`, or a fraction from 0 to 1", j.get()),
                );
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            out.push(
                format!("{path}.timeout"),
                "timeout 0s would fail every call: give a positive duration such as `2s`, or remove `timeout` for no limit".into(),
            );
        }
        if let Some(batch) = &self.batch
            && batch.size == Some(0)
        {
            out.push(
                format!("{path}.batch.size"),
                "size must be at least 1: it is the most messages per call (leave `batch` out to call with one message at a time)".into(),
            );
        }
        if let Some(rate) = &self.rate_limit {
            let at = format!("{path}.rate_limit");
            if rate.count == 0 {
                out.push(
                    at.clone(),
                    format!("rate {rate} would never let a call through: allow at least 1 call per period, or remove `rate_limit`"),
                );
            }
            if rate.per.is_zero() {
                out.push(
                    at.clone(),
                    format!("rate {rate} has an empty period: give a positive period such as `/s` or `/10s`"),
                );
            }
            if rate.burst == Some(0) {
                out.push(
                    format!("{at}.burst"),
                    "burst must be at least 1: leave it out to allow as many calls at once as the rate's count".into(),
                );
            }
        }
        if let Some(OnError::DeadLetter {
            channel: Some(channel),
        }) = &self.on_error
            && channel.trim().is_empty()
        {
            out.push(
                format!("{path}.on_error.dead_letter"),
                "the dead-letter channel name is empty: name a channel, or write `on_error: dead_letter` for the run's dead-letter output".into(),
            );
        }
    }
}

/// `max_backoff` must not be below `initial_backoff`. `layer` is the retry
/// being checked; a value it does not set comes from `base` (with a label
/// saying where that is) or is the built-in default. Reported only when
/// `layer` sets one of the two, so an inherited conflict is reported once,
/// where it is written.
fn check_backoff_order(path: &str, layer: &Retry, base: Option<(&Retry, &str)>, out: &mut Out<'_>) {
    let pick = |get: fn(&Retry) -> Option<Duration>, default: Duration| {
        if let Some(v) = get(layer) {
            return (v, String::new(), true);
        }
        match base.and_then(|(b, label)| get(b).map(|v| (v, label))) {
            Some((v, label)) => (v, format!(" (from {label})"), false),
            None => (default, " (the built-in default)".to_owned(), false),
        }
    };
    let (initial, initial_note, initial_here) =
        pick(|r| r.initial_backoff, DEFAULT_INITIAL_BACKOFF);
    let (max, max_note, max_here) = pick(|r| r.max_backoff, DEFAULT_MAX_BACKOFF);
    if max >= initial || !(initial_here || max_here) {
        return;
    }
    let (initial, max) = (Human(initial), Human(max));
    if max_here {
        out.push(
            format!("{path}.retry.max_backoff"),
            format!("max_backoff {max} is below initial_backoff {initial}{initial_note}: raise max_backoff to at least {initial}, or lower initial_backoff"),
        );
    } else {
        out.push(
            format!("{path}.retry.initial_backoff"),
            format!("initial_backoff {initial} is above max_backoff {max}{max_note}: lower initial_backoff to at most {max}, or raise max_backoff"),
        );
    }
}

impl PolicySet {
    /// Every problem of the `policies` section, for a flow whose functions
    /// are registered as `functions`: the values of each layer (under
    /// `policies.defaults` and `policies.<name>`), values of a function
    /// that conflict with the defaults it inherits, and names that are not
    /// functions of the flow.
    pub fn problems(&self, functions: &[&str]) -> Vec<Problem> {
        let mut problems = Vec::new();
        let defaults_path = format!("policies.{DEFAULTS_KEY}");
        problems.extend(self.defaults.problems(&defaults_path));
        for (name, policy) in &self.functions {
            let path = format!("policies.{name}");
            if !functions.contains(&name.as_str()) {
                problems.push(Problem {
                    message: unknown_function(name, functions),
                    path: path.clone(),
                });
            }
            let mut out = Out {
                problems: &mut problems,
            };
            policy.check_fields(&path, &mut out);
            if let Some(retry) = &policy.retry {
                let base = self
                    .defaults
                    .retry
                    .as_ref()
                    .map(|r| (r, defaults_path.as_str()));
                check_backoff_order(&path, retry, base, &mut out);
            }
        }
        problems
    }

    /// `Ok` when [`PolicySet::problems`] finds none.
    pub fn validate(&self, functions: &[&str]) -> Result<(), InvalidPolicy> {
        into_result(self.problems(functions))
    }
}

fn unknown_function(name: &str, functions: &[&str]) -> String {
    let mut message = format!("the flow has no function `{name}`");
    let closest = functions
        .iter()
        .map(|f| (edit_distance(name, f), *f))
        .filter(|(d, f)| *d <= 2.max(f.len() / 4))
        .min();
    match closest {
        Some((_, f)) => message.push_str(&format!("; did you mean `{f}`?")),
        None if functions.is_empty() => {}
        None => message.push_str(&format!("; its functions are {}", functions.join(", "))),
    }
    message.push_str(&format!(
        " (policies apply by registered name; `{DEFAULTS_KEY}` applies to every function)"
    ));
    message
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Batching, Jitter, Rate};
    use serde_json::json;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn paths(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.path.as_str()).collect()
    }

    #[test]
    fn a_sound_policy_has_no_problem() {
        let p = Policy {
            retry: Some(
                Retry::new(1)
                    .with_initial_backoff(ms(0))
                    .with_max_backoff(ms(0)),
            ),
            timeout: Some(ms(1)),
            batch: Some(Batching::new(1)),
            rate_limit: Some(Rate::per_second(1).with_burst(1)),
            on_error: Some(OnError::DeadLetter {
                channel: Some("dl".into()),
            }),
            ..Policy::default()
        };
        assert_eq!(p.validate("policies.f"), Ok(()));
        assert_eq!(Policy::default().validate("policies.f"), Ok(()));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let p = Policy {
            retry: Some(
                Retry::new(0)
                    .with_initial_backoff(ms(100))
                    .with_max_backoff(ms(10))
                    .with_multiplier(0.5)
                    .with_jitter(Jitter::fraction(1.5)),
            ),
            timeout: Some(Duration::ZERO),
            batch: Some(Batching::new(0)),
            rate_limit: Some(Rate::new(0, Duration::ZERO).with_burst(0)),
            on_error: Some(OnError::DeadLetter {
                channel: Some("  ".into()),
            }),
            concurrency: None,
        };
        let err = p.validate("policies.parse").expect_err("many problems");
        assert_eq!(
            paths(&err.problems),
            [
                "policies.parse.retry.attempts",
                "policies.parse.retry.multiplier",
                "policies.parse.retry.jitter",
                "policies.parse.timeout",
                "policies.parse.batch.size",
                "policies.parse.rate_limit",
                "policies.parse.rate_limit",
                "policies.parse.rate_limit.burst",
                "policies.parse.on_error.dead_letter",
                "policies.parse.retry.max_backoff",
            ]
        );
        let text = err.to_string();
        for expected in [
            "invalid policy configuration (10 problems):",
            "policies.parse.retry.attempts: attempts must be at least 1",
            "multiplier 0.5 must be a number of at least 1",
            "jitter 1.5 is outside 0..1",
            "timeout 0s would fail every call",
            "size must be at least 1",
            "rate 0/0s would never let a call through",
            "has an empty period",
            "burst must be at least 1",
            "dead-letter channel name is empty",
            "max_backoff 10ms is below initial_backoff 100ms: raise max_backoff to at least 100ms",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
        let nan = Policy {
            retry: Some(
                Retry::default()
                    .with_multiplier(f64::NAN)
                    .with_jitter(Jitter::fraction(f64::NAN)),
            ),
            ..Policy::default()
        };
        assert_eq!(
            paths(&nan.problems("p")),
            ["p.retry.multiplier", "p.retry.jitter"]
        );
    }

    #[test]
    fn backoff_order_against_built_in_defaults() {
        // Only initial_backoff set, above the built-in cap of 10s.
        let p = Policy {
            retry: Some(Retry::default().with_initial_backoff(Duration::from_secs(20))),
            ..Policy::default()
        };
        let problems = p.problems("policies.slow");
        assert_eq!(paths(&problems), ["policies.slow.retry.initial_backoff"]);
        assert!(
            problems[0]
                .message
                .contains("initial_backoff 20s is above max_backoff 10s (the built-in default)"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn policy_set_checks_layers_names_and_inherited_conflicts() {
        let set: PolicySet = serde_json::from_value(json!({
            "defaults": { "retry": { "max_backoff": "200ms" }, "timeout": "0s" },
            "parse": { "retry": { "initial_backoff": "1s", "attempts": 0 } },
            "enrich": { "retry": 4 },
            "pasre": { "timeout": "1s" },
            "zzz": {}
        }))
        .expect("reads");
        let problems = set.problems(&["parse", "enrich", "write"]);
        assert_eq!(
            paths(&problems),
            [
                "policies.defaults.timeout",
                // `enrich` sets neither backoff: its inherited values are fine
                // (100ms under 200ms) and nothing is reported for it.
                "policies.parse.retry.attempts",
                "policies.parse.retry.initial_backoff",
                "policies.pasre",
                "policies.zzz",
            ],
            "{problems:#?}"
        );
        let by_path = |p: &str| {
            problems
                .iter()
                .find(|x| x.path == p)
                .map(|x| x.message.clone())
                .unwrap_or_default()
        };
        assert!(by_path("policies.pasre").contains("no function `pasre`; did you mean `parse`?"));
        assert!(by_path("policies.zzz").contains("its functions are parse, enrich, write"));
        assert!(
            by_path("policies.parse.retry.initial_backoff")
                .contains("initial_backoff 1s is above max_backoff 200ms (from policies.defaults)")
        );
        assert_eq!(
            set.validate(&["parse", "enrich", "pasre", "zzz"])
                .map_err(|e| e.problems.len()),
            Err(3)
        );
    }

    #[test]
    fn a_defaults_conflict_is_reported_once_at_the_defaults() {
        let set: PolicySet = serde_json::from_value(json!({
            "defaults": { "retry": { "initial_backoff": "1s", "max_backoff": "10ms" } },
            "a": { "retry": 2 },
            "b": { "timeout": "1s" }
        }))
        .expect("reads");
        let problems = set.problems(&["a", "b"]);
        assert_eq!(paths(&problems), ["policies.defaults.retry.max_backoff"]);
        assert_eq!(
            set.validate(&["a", "b"])
                .map_err(|e| e.to_string().lines().count()),
            Err(2)
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("parse", "parse"), 0);
        assert_eq!(edit_distance("pasre", "parse"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
