//! The registry of every `#[sync_function]` linked into the binary.
//!
//! Each annotated function submits a [`Registration`] through `inventory`.
//! The registry is for discovery (`syncflow functions`), config-driven flows
//! and monitoring; static flows are wired at compile time and never look
//! anything up here.
//!
//! A crate of functions that the binary never names is not linked, and its
//! registrations are then missing: name it once with `use my_functions as _;`.

mod codec;
mod erased;

pub use codec::{
    BoxedSlot, CloneFn, CodecError, DecodeFn, EncodeFn, FromValueFn, ToValueFn, TypeCodec, probe,
    take, to_raw_json,
};
pub use erased::{Adapter, AsyncCall, ErasedError, ErasedStep, Next, slot_error};

use crate::function::StepInfo;

/// One registered sync function. Submitted by `#[sync_function]`.
pub struct Registration {
    /// The function's description.
    pub info: &'static StepInfo,
    /// The function as a step of a flow assembled at run time.
    pub step: &'static dyn ErasedStep,
    /// How the function's payload type is read from JSON, if it can be.
    pub input: fn() -> TypeCodec,
    /// How the type of the messages it emits is written as JSON, if it can be.
    pub output: fn() -> TypeCodec,
    /// Default policies given in the attribute (`#[sync_function(retry = 3)]`).
    pub policy: &'static AttrPolicy,
}

/// Default policies of a function, as written in its attribute
/// (`#[sync_function(retry = 3, timeout = "2s", on_error = "drop")]`).
/// Flow files apply them under their own `policies:`; they are read by the
/// same rules when a flow file is loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrPolicy {
    /// `retry = N`: attempts in all.
    pub retry: Option<u32>,
    /// `timeout = "2s"`.
    pub timeout: Option<&'static str>,
    /// `concurrency = N`.
    pub concurrency: Option<u32>,
    /// `rate_limit = "100/s"`.
    pub rate_limit: Option<&'static str>,
    /// `on_error = "drop"`.
    pub on_error: Option<&'static str>,
}

impl AttrPolicy {
    /// As a policy; an error says what the attribute got wrong.
    pub fn to_policy(&self) -> Result<crate::policy::Policy, String> {
        let mut map = serde_json::Map::new();
        if let Some(n) = self.retry {
            map.insert("retry".into(), n.into());
        }
        if let Some(t) = self.timeout {
            map.insert("timeout".into(), t.into());
        }
        if let Some(n) = self.concurrency {
            map.insert("concurrency".into(), n.into());
        }
        if let Some(r) = self.rate_limit {
            map.insert("rate_limit".into(), r.into());
        }
        if let Some(e) = self.on_error {
            map.insert("on_error".into(), e.into());
        }
        let policy: crate::policy::Policy =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
        let problems = policy.problems("attribute");
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "))
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("name", &self.info.name)
            .field("module", &self.info.module)
            .field("input", &(self.input)())
            .field("output", &(self.output)())
            .field("policy", self.policy)
            .finish()
    }
}

inventory::collect!(Registration);

/// Every registration, sorted by name, then module.
pub fn registrations() -> Vec<&'static Registration> {
    let mut all: Vec<&'static Registration> = inventory::iter::<Registration>.into_iter().collect();
    all.sort_by(|a, b| (a.info.name, a.info.module).cmp(&(b.info.name, b.info.module)));
    all
}

/// The registration of the function with this name, if exactly one has it.
pub fn lookup(name: &str) -> Result<&'static Registration, LookupError> {
    let all = registrations();
    let found: Vec<_> = all
        .iter()
        .copied()
        .filter(|r| r.info.name == name)
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(LookupError::Unknown {
            name: name.to_string(),
            closest: closest(name, all.iter().map(|r| r.info.name)),
        }),
        many => Err(LookupError::Ambiguous {
            name: name.to_string(),
            modules: many.iter().map(|r| r.info.module.to_string()).collect(),
        }),
    }
}

/// Every registered function, sorted by name, then module.
///
/// `inventory` yields registrations in link order, which differs between
/// builds, so the list is always sorted before it is shown or searched.
pub fn functions() -> Vec<&'static StepInfo> {
    let mut all: Vec<&'static StepInfo> = inventory::iter::<Registration>
        .into_iter()
        .map(|r| r.info)
        .collect();
    all.sort_by(|a, b| (a.name, a.module).cmp(&(b.name, b.module)));
    all
}

/// The registered function with this name, if exactly one has it.
pub fn find(name: &str) -> Result<&'static StepInfo, LookupError> {
    lookup(name).map(|r| r.info)
}

/// A failed registry lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No function has the name.
    #[error("no sync function is registered as `{name}`{}", suggest(closest))]
    Unknown {
        /// The name looked up.
        name: String,
        /// Registered names close to it, closest first.
        closest: Vec<String>,
    },
    /// Several functions share the name.
    #[error(
        "`{name}` names {} sync functions (in {}); give them distinct names with #[sync_function(name = \"...\")]",
        modules.len(),
        modules.join(", ")
    )]
    Ambiguous {
        /// The name looked up.
        name: String,
        /// Modules of the functions that have it.
        modules: Vec<String>,
    },
}

fn suggest(closest: &[String]) -> String {
    match did_you_mean(closest) {
        None => "; run `syncflow functions` to list the registered ones".to_string(),
        Some(question) => format!(
            "; {question} (if the function is in another crate, make sure the binary links it with `use that_crate as _;`)"
        ),
    }
}

/// "did you mean `a` or `b`?" for the names [`closest`] found, if any.
pub fn did_you_mean(closest: &[String]) -> Option<String> {
    if closest.is_empty() {
        return None;
    }
    let names: Vec<String> = closest.iter().map(|c| format!("`{c}`")).collect();
    Some(format!("did you mean {}?", names.join(" or ")))
}

/// Up to three names within a small edit distance of `name`, closest first.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<String> {
    let limit = (name.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("parse", "parse"), 0);
        assert_eq!(edit_distance("parse", "prase"), 2);
        assert_eq!(edit_distance("parse", "parser"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn closest_keeps_near_names_in_order() {
        let names = ["validate", "enrich", "parse", "parse_order"];
        assert_eq!(
            closest("pars", names.into_iter()),
            vec!["parse".to_string()]
        );
        assert_eq!(
            closest("enrch", names.into_iter()),
            vec!["enrich".to_string()]
        );
        assert!(closest("zzzzzz", names.into_iter()).is_empty());
    }
}
