//! `policies:` in flow files: read, validated, and applied per step.

use super::model::{FlowFile, StepSpec};
use super::{ConfigError, ConfigErrors};
use crate::dynamic::{Applied, OnFailure};
use crate::policy::{OnError, Policy, PolicySet};
use crate::registry::TypeCodec;

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

/// What a step runs with: its `on_error` (and, for dead letters into a
/// channel, the channel), and retry, timeout, rate limit and concurrency
/// ready to apply.
pub(super) struct StepPolicy {
    /// With `batch`: the most messages per call.
    pub(super) batch: Option<usize>,
    pub(super) on_error: OnFailure,
    pub(super) dead_letter_channel: Option<String>,
    pub(super) applied: Option<Applied>,
}

/// The policies a step runs with. A policy this version does not apply to
/// YAML flows is an error rather than a setting silently ignored.
pub(super) fn step_policy(
    function: &str,
    attribute: &Policy,
    input: &TypeCodec,
    policies: &PolicySet,
    at: &dyn Fn(String) -> ConfigError,
    errors: &mut ConfigErrors,
) -> StepPolicy {
    let policy: Policy = policies.resolve(function, attribute);
    let batch = match &policy.batch {
        None => None,
        Some(batching) => match batching.size {
            Some(size) if (1..=crate::toolbox::MAX_BATCH_SIZE).contains(&size) => Some(size),
            Some(size) => {
                errors.push(at(format!(
                    "policy `batch` of `{function}`: size must be between 1 and {}, not {size}",
                    crate::toolbox::MAX_BATCH_SIZE
                )));
                None
            }
            // The documented default.
            None => Some(100),
        },
    };
    let applied = match Applied::new(function, &policy, input) {
        Ok(applied) => applied,
        Err(e) => {
            errors.push(at(e.to_string()));
            None
        }
    };
    let mut dead_letter_channel = None;
    let on_error = match policy.on_error() {
        OnError::DeadLetter { channel: None } => OnFailure::DeadLetter,
        OnError::DeadLetter {
            channel: Some(channel),
        } => {
            match crate::channel::check_name("dead-letter channel", &channel) {
                Ok(()) => dead_letter_channel = Some(channel),
                Err(e) => errors.push(at(format!("on_error of `{function}`: {e}"))),
            }
            OnFailure::DeadLetter
        }
        OnError::Drop => OnFailure::Drop,
        OnError::Stop => OnFailure::Stop,
        OnError::Skip => OnFailure::Skip,
    };
    StepPolicy {
        batch,
        on_error,
        dead_letter_channel,
        applied,
    }
}
