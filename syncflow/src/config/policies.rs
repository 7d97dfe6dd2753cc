//! `policies:` in flow files: read, validated, and applied per step.

use super::model::{FlowFile, StepSpec};
use super::{ConfigError, ConfigErrors};
use crate::dynamic::OnFailure;
use crate::policy::{OnError, Policy, PolicySet};

/// Reads and validates `policies:` against the functions the flows use.
pub(super) fn check_policies(
    file: &FlowFile,
    origin: &str,
    errors: &mut ConfigErrors,
) -> PolicySet {
    let Some(spanned) = &file.policies else {
        return PolicySet::default();
    };
    let at = |message: String| ConfigError::new(origin, spanned.referenced, message);
    let set: PolicySet = match serde_json::from_value(spanned.value.clone()) {
        Ok(set) => set,
        Err(e) => {
            errors.push(at(format!("policies: {e}")));
            return PolicySet::default();
        }
    };
    let mut used: Vec<&str> = file
        .flows
        .values()
        .flat_map(|f| f.value.steps.iter())
        .filter_map(|s| match &s.value {
            StepSpec::Function(name) => Some(name.as_str()),
            StepSpec::WithArgs(_) => None,
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    for problem in set.problems(&used) {
        errors.push(at(problem.to_string()));
    }
    set
}

/// The `on_error` a step runs with; a policy this version does not apply to
/// YAML flows is an error rather than a setting silently ignored.
pub(super) fn step_policy(
    function: &str,
    policies: &PolicySet,
    at: &dyn Fn(String) -> ConfigError,
    errors: &mut ConfigErrors,
) -> OnFailure {
    let policy: Policy = policies.resolve(function, &Policy::default());
    let unsupported = [
        ("retry", policy.retry.is_some()),
        ("timeout", policy.timeout.is_some()),
        ("concurrency", policy.concurrency.is_some()),
        ("batch", policy.batch.is_some()),
        ("rate_limit", policy.rate_limit.is_some()),
    ];
    for (key, set) in unsupported {
        if set {
            errors.push(at(format!(
                "policy `{key}` of `{function}` is not applied to YAML flows by this version of syncflow; remove it (it would be ignored)"
            )));
        }
    }
    match policy.on_error() {
        OnError::DeadLetter { channel: None } => OnFailure::DeadLetter,
        OnError::Drop => OnFailure::Drop,
        OnError::Stop => OnFailure::Stop,
        other => {
            errors.push(at(format!(
                "`on_error: {}` of `{function}` is not applied to YAML flows by this version of syncflow; use `dead_letter` (to the flow's dead_letter file), `drop` or `stop`",
                other.name()
            )));
            OnFailure::DeadLetter
        }
    }
}
