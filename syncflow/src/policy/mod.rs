//! Per-function policies: retry, timeout, concurrency, batching, rate limit
//! and what to do with a message whose step failed.
//!
//! A [`Policy`] is what configuration says about one function. Policies come
//! in layers, and a more specific layer overrides a more general one key by
//! key ([`Policy::merged_over`]):
//!
//! 1. defaults given by the function's attribute (lowest),
//! 2. the configuration file's `policies.defaults`,
//! 3. the configuration file's `policies.<function name>` (highest).
//!
//! ```yaml
//! policies:
//!   defaults:
//!     timeout: 5s
//!   parse:
//!     retry: { attempts: 4, initial_backoff: 50ms }
//!     timeout: 2s
//!     on_error: dead_letter
//!   enrich:
//!     rate_limit: 500/s
//!     concurrency: 8
//!     on_error: { dead_letter: enrich-failures }
//! ```
//!
//! The mechanisms an executor applies the policies with are here too:
//! [`retry_async`] and [`Backoff`], [`with_timeout`], [`RateLimiter`],
//! [`Concurrency`], and [`PolicyStats`] to count what the policies did.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub mod concurrency;
pub mod duration;
pub mod rate;
pub mod retry;
pub mod stats;
pub mod timeout;
mod validate;

pub use concurrency::{Closed, Concurrency, Permit};
pub use duration::{DurationError, Human};
pub use rate::{Clock, ManualClock, Rate, RateError, RateLimiter, TokioClock};
pub use retry::{Attempt, Backoff, GaveUp, Jitter, Retry, RetryError, retry_async};
pub use stats::{PolicyCounts, PolicyStats};
pub use timeout::{TimedOut, with_timeout};
pub use validate::{InvalidPolicy, Problem};

/// The policies of one function, as one configuration layer states them.
///
/// Every key is optional: an unset key is inherited from the layer below
/// (see [`Policy::merged_over`]), and when no layer sets it the function
/// runs without that policy (no retry, no timeout, no limit, no batching)
/// and failed messages go to the run's dead-letter output
/// ([`OnError::default`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Try a failed call again (`retry: 3` or a map, see [`Retry`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Cancel a call that takes longer than this (`timeout: 2s`); each try
    /// of a retried call has its own timeout.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// At most this many calls of the function at once, across workers.
    #[serde(
        default,
        deserialize_with = "concurrency_limit",
        skip_serializing_if = "Option::is_none"
    )]
    pub concurrency: Option<NonZeroUsize>,
    /// Call the function with batches of messages (see [`Batching`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<Batching>,
    /// At most this many calls per period (`rate_limit: 500/s`, see [`Rate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Rate>,
    /// What happens to a message whose call failed for good (see [`OnError`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
}

impl Policy {
    /// This layer over `base`: every key this layer sets wins, the others
    /// come from `base`. `retry` and `batch` merge field by field (so
    /// `retry: 5` over `retry: { initial_backoff: 1s }` keeps the backoff);
    /// `timeout`, `concurrency`, `rate_limit` and `on_error` are replaced whole.
    ///
    /// For a function: `config_fn.merged_over(&config_defaults.merged_over(&attribute))`,
    /// which [`PolicySet::resolve`] does.
    pub fn merged_over(&self, base: &Policy) -> Policy {
        fn field_wise<T: Clone>(
            top: &Option<T>,
            base: &Option<T>,
            merge: fn(&T, &T) -> T,
        ) -> Option<T> {
            match (top, base) {
                (Some(t), Some(b)) => Some(merge(t, b)),
                (Some(x), None) | (None, Some(x)) => Some(x.clone()),
                (None, None) => None,
            }
        }
        Policy {
            retry: field_wise(&self.retry, &base.retry, Retry::merged_over),
            timeout: self.timeout.or(base.timeout),
            concurrency: self.concurrency.or(base.concurrency),
            batch: field_wise(&self.batch, &base.batch, Batching::merged_over),
            rate_limit: self.rate_limit.or(base.rate_limit),
            on_error: self.on_error.clone().or_else(|| base.on_error.clone()),
        }
    }

    /// What happens to a failed message: `on_error`, or the default.
    pub fn on_error(&self) -> OnError {
        self.on_error.clone().unwrap_or_default()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// Reads `concurrency`, explaining a zero or negative limit.
fn concurrency_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NonZeroUsize>, D::Error> {
    struct Limit(NonZeroUsize);
    impl<'de> Deserialize<'de> for Limit {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Limit;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a number of calls at once, at least 1")
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Limit, E> {
                    usize::try_from(v)
                        .ok()
                        .and_then(NonZeroUsize::new)
                        .map(Limit)
                        .ok_or_else(|| {
                            E::custom(format_args!(
                                "concurrency {v} would never let a call run; write the number of calls allowed at once, at least 1"
                            ))
                        })
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Limit, E> {
                    match u64::try_from(v) {
                        Ok(v) => self.visit_u64(v),
                        Err(_) => Err(E::custom(format_args!(
                            "concurrency {v} cannot be negative; write the number of calls allowed at once, at least 1"
                        ))),
                    }
                }
            }
            d.deserialize_any(V)
        }
    }
    Ok(Option::<Limit>::deserialize(d)?.map(|l| l.0))
}

/// Messages per batch when `batch` is set without `size`.
pub const DEFAULT_BATCH_SIZE: usize = 100;
/// How long a batch waits to fill when `batch` is set without `linger`:
/// not at all, so batching adds no latency unless asked to.
pub const DEFAULT_LINGER: Duration = Duration::ZERO;

/// The `batch` policy: call the function with up to `size` messages at
/// once, waiting at most `linger` for a batch to fill.
///
/// `batch: 100` is short for `batch: { size: 100 }`. Fields merge one by one,
/// as for [`Retry`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Batching {
    /// Most messages per call (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    /// Longest wait for a batch to fill before the call is made with what is there.
    #[serde(
        default,
        with = "duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub linger: Option<Duration>,
}

impl Batching {
    /// Batches of up to `size` messages, linger unset.
    pub fn new(size: usize) -> Batching {
        Batching {
            size: Some(size),
            linger: None,
        }
    }
    /// Sets `linger`.
    pub fn with_linger(mut self, linger: Duration) -> Batching {
        self.linger = Some(linger);
        self
    }
    /// Most messages per call ([`DEFAULT_BATCH_SIZE`] when unset).
    pub fn size(&self) -> usize {
        self.size.unwrap_or(DEFAULT_BATCH_SIZE)
    }
    /// Longest wait for a batch to fill ([`DEFAULT_LINGER`] when unset).
    pub fn linger(&self) -> Duration {
        self.linger.unwrap_or(DEFAULT_LINGER)
    }
    /// Field by field: what `self` sets, else what `base` sets.
    pub fn merged_over(&self, base: &Batching) -> Batching {
        Batching {
            size: self.size.or(base.size),
            linger: self.linger.or(base.linger),
        }
    }
}

/// The long form of [`Batching`] as written, checked for unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchingFields {
    #[serde(default)]
    size: Option<usize>,
    #[serde(default, with = "duration::option")]
    linger: Option<Duration>,
}

impl<'de> Deserialize<'de> for Batching {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Batching;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a batch size (`batch: 100`) or a map with size and linger")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Batching, E> {
                usize::try_from(v)
                    .map(Batching::new)
                    .map_err(|_| E::custom(format_args!("batch size {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Batching, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!(
                        "batch size {v} cannot be negative; write the most messages per call, at least 1"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Batching, A::Error> {
                let f = BatchingFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Batching {
                    size: f.size,
                    linger: f.linger,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// What happens to a message whose step failed for good (after any retries).
///
/// In configuration: `drop`, `dead_letter`, `{ dead_letter: <channel> }`,
/// `skip` or `stop`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Count it, log it, and forget it.
    Drop,
    /// Write it, with the step's name and error, to a dead-letter output:
    /// the named channel, or the run's dead-letter output when `None`.
    /// Without any dead-letter output it is counted and logged. The default.
    DeadLetter {
        /// The dead-letter channel; `None` for the run's dead-letter output.
        channel: Option<String>,
    },
    /// Skip the rest of the flow: the message as the failed step received it
    /// goes on unchanged to the sinks (only where that type is what the
    /// sinks take).
    Skip,
    /// Stop the flow: no further message is read; what was read is drained.
    Stop,
}

impl Default for OnError {
    /// `dead_letter`: the run's dead-letter output, as without any policy.
    fn default() -> Self {
        OnError::DeadLetter { channel: None }
    }
}

impl OnError {
    /// The configuration name: `drop`, `dead_letter`, `skip` or `stop`.
    pub const fn name(&self) -> &'static str {
        match self {
            OnError::Drop => "drop",
            OnError::DeadLetter { .. } => "dead_letter",
            OnError::Skip => "skip",
            OnError::Stop => "stop",
        }
    }
}

impl fmt::Display for OnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnError::DeadLetter {
                channel: Some(channel),
            } => write!(f, "dead_letter to `{channel}`"),
            other => f.write_str(other.name()),
        }
    }
}

const ON_ERROR_FORMS: &str =
    "write `drop`, `dead_letter`, `{ dead_letter: <channel> }`, `skip` or `stop`";

impl Serialize for OnError {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OnError::DeadLetter {
                channel: Some(channel),
            } => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("dead_letter", channel)?;
                m.end()
            }
            other => s.serialize_str(other.name()),
        }
    }
}

impl<'de> Deserialize<'de> for OnError {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OnError;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an on_error action: {ON_ERROR_FORMS}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OnError, E> {
                match v {
                    "drop" => Ok(OnError::Drop),
                    "dead_letter" => Ok(OnError::default()),
                    "skip" => Ok(OnError::Skip),
                    "stop" => Ok(OnError::Stop),
                    other => Err(E::custom(format_args!(
                        "unknown on_error `{other}`: {ON_ERROR_FORMS}"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OnError, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(format_args!(
                        "empty on_error map: {ON_ERROR_FORMS}"
                    )));
                };
                if key != "dead_letter" {
                    return Err(de::Error::custom(format_args!(
                        "unknown on_error `{key}` in a map: only `dead_letter` takes a value; {ON_ERROR_FORMS}"
                    )));
                }
                let channel: Option<String> = map.next_value()?;
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format_args!(
                        "on_error has a second key `{extra}`: give one action; {ON_ERROR_FORMS}"
                    )));
                }
                Ok(OnError::DeadLetter { channel })
            }
        }
        d.deserialize_any(V)
    }
}

/// The `policies` section of a configuration file: defaults for every
/// function, and policies by function name.
///
/// It reads from a map whose key `defaults` holds the defaults and whose
/// other keys are registered function names (a function registered as
/// `defaults` cannot be given a policy of its own: rename it with
/// `#[sync_function(name = "...")]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    /// `policies.defaults`: for every function of the flow.
    pub defaults: Policy,
    /// `policies.<name>`: for the function registered as `name`.
    pub functions: BTreeMap<String, Policy>,
}

/// The key of [`PolicySet::defaults`] in the `policies` map.
pub const DEFAULTS_KEY: &str = "defaults";

impl PolicySet {
    /// The policy `function` runs with: its own configuration over the
    /// configuration defaults over the defaults of its attribute.
    pub fn resolve(&self, function: &str, attribute: &Policy) -> Policy {
        let below = self.defaults.merged_over(attribute);
        match self.functions.get(function) {
            Some(own) => own.merged_over(&below),
            None => below,
        }
    }
}

impl Serialize for PolicySet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let defaults = !self.defaults.is_empty();
        let mut m = s.serialize_map(Some(self.functions.len() + usize::from(defaults)))?;
        if defaults {
            m.serialize_entry(DEFAULTS_KEY, &self.defaults)?;
        }
        for (name, policy) in &self.functions {
            m.serialize_entry(name, policy)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for PolicySet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PolicySet;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of function names (and `defaults`) to policies")
            }
            fn visit_unit<E: de::Error>(self) -> Result<PolicySet, E> {
                Ok(PolicySet::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PolicySet, A::Error> {
                let mut set = PolicySet::default();
                let mut saw_defaults = false;
                while let Some(name) = map.next_key::<String>()? {
                    // Name the function in errors: serde's own messages say
                    // which key is wrong, not under which function.
                    let policy: Policy = map
                        .next_value::<Option<Policy>>()
                        .map_err(|e: A::Error| {
                            <A::Error as de::Error>::custom(format_args!("policies.{name}: {e}"))
                        })?
                        .unwrap_or_default();
                    let duplicate = if name == DEFAULTS_KEY {
                        set.defaults = policy;
                        std::mem::replace(&mut saw_defaults, true)
                    } else {
                        set.functions.insert(name.clone(), policy).is_some()
                    };
                    if duplicate {
                        return Err(de::Error::custom(format_args!(
                            "policies.{name} is given twice: merge the two into one"
                        )));
                    }
                }
                Ok(set)
            }
        }
        // `any`, not `map`: a `policies:` key with nothing after it is null.
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(v: Value) -> Policy {
        serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"))
    }

    fn policy_err(v: Value) -> String {
        match serde_json::from_value::<Policy>(v.clone()) {
            Ok(p) => panic!("{v} was accepted as {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_policy_reads_and_round_trips() {
        let p = policy(json!({
            "retry": { "attempts": 4, "initial_backoff": "50ms", "max_backoff": "5s", "multiplier": 1.5, "jitter": "none" },
            "timeout": "2s",
            "concurrency": 8,
            "batch": { "size": 500, "linger": "20ms" },
            "rate_limit": { "rate": "100/min", "burst": 10 },
            "on_error": { "dead_letter": "parse-failures" }
        }));
        assert_eq!(
            p,
            Policy {
                retry: Some(
                    Retry::new(4)
                        .with_initial_backoff(ms(50))
                        .with_max_backoff(ms(5000))
                        .with_multiplier(1.5)
                        .with_jitter(Jitter::NONE)
                ),
                timeout: Some(ms(2000)),
                concurrency: NonZeroUsize::new(8),
                batch: Some(Batching::new(500).with_linger(ms(20))),
                rate_limit: Some(Rate::new(100, Duration::from_secs(60)).with_burst(10)),
                on_error: Some(OnError::DeadLetter {
                    channel: Some("parse-failures".into())
                }),
            }
        );
        let back = policy(serde_json::to_value(&p).expect("serialises"));
        assert_eq!(back, p);
        assert!(policy(json!({})).is_empty());
    }

    #[test]
    fn short_forms() {
        let p =
            policy(json!({ "retry": 3, "batch": 64, "rate_limit": "500/s", "on_error": "skip" }));
        assert_eq!(p.retry, Some(Retry::new(3)));
        assert_eq!(p.batch, Some(Batching::new(64)));
        assert_eq!(p.batch.as_ref().map(Batching::linger), Some(DEFAULT_LINGER));
        assert_eq!(p.rate_limit, Some(Rate::per_second(500)));
        assert_eq!(p.on_error(), OnError::Skip);
        for (text, expected) in [
            ("drop", OnError::Drop),
            ("dead_letter", OnError::DeadLetter { channel: None }),
            ("skip", OnError::Skip),
            ("stop", OnError::Stop),
        ] {
            assert_eq!(policy(json!({ "on_error": text })).on_error(), expected);
            assert_eq!(serde_json::to_value(&expected).expect("ser"), json!(text));
        }
        // Unset: the run's dead-letter output, as without policies.
        assert_eq!(
            Policy::default().on_error(),
            OnError::DeadLetter { channel: None }
        );
        // Nulls (a YAML key with nothing after it) read as unset.
        assert!(policy(json!({ "retry": null, "timeout": null, "concurrency": null })).is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_what_to_write() {
        for (value, expected) in [
            (
                json!({ "retries": 3 }),
                "unknown field `retries`, expected one of `retry`",
            ),
            (
                json!({ "retry": { "attempt": 3 } }),
                "unknown field `attempt`",
            ),
            (
                json!({ "batch": { "size": 3, "wait": "1s" } }),
                "unknown field `wait`",
            ),
            (json!({ "timeout": "2" }), "has no unit"),
            (json!({ "timeout": "-2s" }), "cannot be negative"),
            (
                json!({ "concurrency": 0 }),
                "concurrency 0 would never let a call run",
            ),
            (json!({ "concurrency": -2 }), "cannot be negative"),
            (json!({ "batch": -1 }), "batch size -1 cannot be negative"),
            (json!({ "rate_limit": "500" }), "write `<count>/<period>`"),
            (
                json!({ "on_error": "ignore" }),
                "unknown on_error `ignore`: write `drop`, `dead_letter`",
            ),
            (
                json!({ "on_error": { "retry": 3 } }),
                "only `dead_letter` takes a value",
            ),
            (
                json!({ "on_error": { "dead_letter": "a", "x": 1 } }),
                "second key `x`",
            ),
            (json!({ "on_error": {} }), "empty on_error map"),
        ] {
            let err = policy_err(value.clone());
            assert!(
                err.contains(expected),
                "{value}: `{err}` lacks `{expected}`"
            );
        }
    }

    #[test]
    fn merge_precedence_attribute_then_defaults_then_function() {
        let attribute = policy(json!({
            "retry": { "attempts": 2, "initial_backoff": "1s" },
            "timeout": "30s",
            "concurrency": 4,
            "on_error": "stop"
        }));
        let set: PolicySet = serde_json::from_value(json!({
            "defaults": { "timeout": "10s", "batch": { "linger": "5ms" }, "rate_limit": "100/s" },
            "parse": { "retry": 5, "batch": 50, "on_error": "drop" },
            "enrich": { "timeout": "1s", "rate_limit": "10/s" }
        }))
        .expect("valid set");

        let parse = set.resolve("parse", &attribute);
        // Function config wins key by key, field by field inside retry and batch.
        assert_eq!(
            parse.retry,
            Some(Retry::new(5).with_initial_backoff(Duration::from_secs(1)))
        );
        assert_eq!(parse.batch, Some(Batching::new(50).with_linger(ms(5))));
        assert_eq!(parse.on_error(), OnError::Drop);
        // Config defaults beat the attribute.
        assert_eq!(parse.timeout, Some(Duration::from_secs(10)));
        assert_eq!(parse.rate_limit, Some(Rate::per_second(100)));
        // Only the attribute says it: kept.
        assert_eq!(parse.concurrency, NonZeroUsize::new(4));

        let enrich = set.resolve("enrich", &attribute);
        assert_eq!(enrich.timeout, Some(Duration::from_secs(1)));
        assert_eq!(enrich.rate_limit, Some(Rate::per_second(10)));
        assert_eq!(enrich.retry, attribute.retry);
        assert_eq!(enrich.on_error(), OnError::Stop);

        // A function the configuration does not name gets defaults over attribute.
        let other = set.resolve("other", &attribute);
        assert_eq!(other, set.defaults.merged_over(&attribute));
        assert_eq!(other.timeout, Some(Duration::from_secs(10)));

        // Merging over an empty policy changes nothing, and nothing over a policy keeps it.
        assert_eq!(attribute.merged_over(&Policy::default()), attribute);
        assert_eq!(Policy::default().merged_over(&attribute), attribute);
    }

    #[test]
    fn policy_set_reads_errors_name_the_function_and_round_trips() {
        let err = serde_json::from_value::<PolicySet>(json!({
            "parse": { "retry": 3 },
            "enrich": { "timeuot": "1s" }
        }))
        .expect_err("typo");
        let text = err.to_string();
        assert!(
            text.starts_with("policies.enrich: unknown field `timeuot`"),
            "{text}"
        );

        let set: PolicySet = serde_json::from_value(json!({
            "defaults": { "timeout": "5s" },
            "parse": { "on_error": { "dead_letter": "bad" } },
            "idle": null
        }))
        .expect("valid");
        assert_eq!(set.defaults.timeout, Some(Duration::from_secs(5)));
        assert_eq!(set.functions.len(), 2);
        assert!(set.functions["idle"].is_empty());
        let back: PolicySet =
            serde_json::from_value(serde_json::to_value(&set).expect("ser")).expect("de");
        assert_eq!(back, set);
        let empty: PolicySet = serde_json::from_value(json!(null)).expect("null section");
        assert_eq!(empty, PolicySet::default());
    }
}
