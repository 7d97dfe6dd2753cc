//! `dedupe`: drops messages whose key was seen within a time window.
//!
//! # Memory and eviction
//!
//! The operator remembers a 64-bit hash of each key (SipHash with keys drawn
//! at random per process, so inputs cannot be crafted to collide) and its
//! expiry time: about 40 bytes per key, held in a hash map and a queue in
//! arrival order. At most `max_entries` keys are remembered. Expired keys are
//! forgotten first; when the table is still full, the oldest key is evicted
//! to make room, and [`Dedupe::evicted`] counts it. An evicted key seen
//! again within its window passes as new: under memory pressure duplicates
//! may pass, but a distinct message is never dropped (except on a 64-bit hash
//! collision, about one chance in 10^14 per message with 100 000 keys held).
//!
//! # Time
//!
//! The caller passes the current time in milliseconds from any fixed origin
//! (a monotonic clock, or event time). A key's window starts when it is first
//! accepted and is not extended by repeats. If time goes backwards, keys
//! expire late, never early.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::Value;

use super::{Expr, ToolError, ToolOutcome};

/// The default for [`DedupeArgs::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;

/// Arguments of `dedupe`.
///
/// ```yaml
/// - dedupe: { key: 'order_id', ttl: 10m, max_entries: 100000 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupeArgs {
    /// Expression whose result (any JSON value) identifies a message.
    pub key: String,
    /// How long a key is remembered: `500ms`, `30s`, `10m`, `1h`, `1d`, or
    /// a sum such as `1h30m`.
    #[serde(deserialize_with = "deserialize_ttl")]
    pub ttl: Duration,
    /// How many keys are remembered at most (default 100 000).
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
}

fn default_max_entries() -> usize {
    DEFAULT_MAX_ENTRIES
}

/// Drops messages whose key was already seen within the window.
pub struct Dedupe {
    key: Expr,
    ttl: Duration,
    ttl_ms: u64,
    max_entries: usize,
    /// Key hash → expiry (ms).
    seen: HashMap<u64, u64>,
    /// (key hash, expiry) in arrival order, hence in expiry order.
    order: VecDeque<(u64, u64)>,
    hasher: RandomState,
    evicted: u64,
}

impl fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedupe")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .field("keys", &self.seen.len())
            .field("evicted", &self.evicted)
            .finish()
    }
}

impl Dedupe {
    /// The operator's name in flow files.
    pub const NAME: &'static str = "dedupe";

    /// Compiles the key expression and checks the limits.
    pub fn new(args: DedupeArgs) -> Result<Dedupe, ToolError> {
        let key = Expr::compile(&args.key).map_err(|error| ToolError::Expr {
            tool: Self::NAME,
            at: "key".into(),
            error,
        })?;
        if args.ttl.is_zero() {
            return Err(ToolError::Args {
                tool: Self::NAME,
                message: "`ttl` is zero: give the window to remember keys for, such as `10m`"
                    .into(),
            });
        }
        if args.max_entries == 0 {
            return Err(ToolError::Args {
                tool: Self::NAME,
                message: "`max_entries` is 0: give how many keys to remember, such as 100000"
                    .into(),
            });
        }
        Ok(Dedupe {
            key,
            ttl: args.ttl,
            ttl_ms: u64::try_from(args.ttl.as_millis()).unwrap_or(u64::MAX),
            max_entries: args.max_entries,
            seen: HashMap::new(),
            order: VecDeque::new(),
            hasher: RandomState::new(),
            evicted: 0,
        })
    }

    /// The operator's name, `dedupe`.
    pub fn name(&self) -> &'static str {
        Self::NAME
    }

    /// One line for listings: `dedupe: drop repeats of id within 10m`.
    pub fn describe(&self) -> String {
        format!(
            "dedupe: drop repeats of {} within {} (at most {} keys)",
            self.key,
            format_ttl(self.ttl),
            self.max_entries
        )
    }

    /// Whether `message` is new at time `now_ms`, remembering its key if so.
    pub fn check(&mut self, message: &Value, now_ms: u64) -> Result<bool, ToolError> {
        let key = self.key.eval(message).map_err(|error| ToolError::Eval {
            tool: Self::NAME,
            error,
        })?;
        let mut state = self.hasher.build_hasher();
        hash_json(&key, &mut state);
        let hash = state.finish();

        self.expire(now_ms);
        if self.seen.contains_key(&hash) {
            return Ok(false);
        }
        while self.seen.len() >= self.max_entries {
            let Some((old, expiry)) = self.order.pop_front() else {
                break;
            };
            if self.seen.get(&old) == Some(&expiry) {
                self.seen.remove(&old);
                self.evicted += 1;
            }
        }
        let expiry = now_ms.saturating_add(self.ttl_ms);
        self.seen.insert(hash, expiry);
        self.order.push_back((hash, expiry));
        Ok(true)
    }

    /// Passes `message` on if it is new at `now_ms`, else drops it.
    pub fn apply(&mut self, message: Value, now_ms: u64) -> Result<ToolOutcome, ToolError> {
        Ok(if self.check(&message, now_ms)? {
            ToolOutcome::One(message)
        } else {
            ToolOutcome::Drop
        })
    }

    /// How many keys are remembered now (expired ones included until the
    /// next message).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// How many keys were forgotten before their window ended, to stay within
    /// `max_entries`.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(&(hash, expiry)) = self.order.front() {
            if expiry > now_ms {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&hash) == Some(&expiry) {
                self.seen.remove(&hash);
            }
        }
    }
}

/// Hashes a JSON value by content: numbers by value (`1` and `1.0` are the
/// same key), object fields in key order whatever the map's order.
fn hash_json(value: &Value, state: &mut impl Hasher) {
    match value {
        Value::Null => state.write_u8(0),
        Value::Bool(b) => {
            state.write_u8(1);
            b.hash(state);
        }
        Value::Number(n) => {
            state.write_u8(2);
            let float = n.as_f64();
            match (n.as_i64(), n.as_u64(), float) {
                (Some(i), _, _) => i128::from(i).hash(state),
                (None, Some(u), _) => i128::from(u).hash(state),
                (None, None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => {
                    // Exactly integral and in range: the same key as the integer.
                    i128::from(f as i64).hash(state);
                }
                (None, None, f) => {
                    state.write_u8(3);
                    f.unwrap_or(f64::NAN).to_bits().hash(state);
                }
            }
        }
        Value::String(s) => {
            state.write_u8(4);
            s.hash(state);
        }
        Value::Array(items) => {
            state.write_u8(5);
            state.write_usize(items.len());
            for item in items {
                hash_json(item, state);
            }
        }
        Value::Object(fields) => {
            state.write_u8(6);
            state.write_usize(fields.len());
            let mut entries: Vec<(&String, &Value)> = fields.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, item) in entries {
                key.hash(state);
                hash_json(item, state);
            }
        }
    }
}

/// Parses `500ms`, `30s`, `10m`, `1h`, `2d`, or sums such as `1h30m`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let hint = "write a number and a unit: ms, s, m, h or d (such as `30s`, `10m`, `1h30m`)";
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("the duration is empty: {hint}"));
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}` is not a duration: {hint}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: the number is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let millis = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}` has a number without a unit: {hint}")),
            other => return Err(format!("`{text}`: unknown unit `{other}`: {hint}")),
        };
        let part = number
            .checked_mul(millis)
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        total = total
            .checked_add(Duration::from_millis(part))
            .ok_or_else(|| format!("`{text}` is too long a duration"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn format_ttl(ttl: Duration) -> String {
    let ms = ttl.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn deserialize_ttl<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct Ttl;
    impl Visitor<'_> for Ttl {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as `30s` or `10m`")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse_ttl(text).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "`{n}` has no unit: write `{n}s`, `{n}m` or `{n}ms`"
            )))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Duration, E> {
            Err(E::custom(format!(
                "`{n}` is not a duration: write one such as `30s`"
            )))
        }
    }
    deserializer.deserialize_any(Ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dedupe(key: &str, ttl: &str, max: usize) -> Dedupe {
        Dedupe::new(DedupeArgs {
            key: key.into(),
            ttl: parse_ttl(ttl).unwrap(),
            max_entries: max,
        })
        .unwrap()
    }

    #[test]
    fn repeats_within_the_window_are_dropped() {
        let mut d = dedupe("id", "10s", 100);
        assert!(d.check(&json!({"id": 1}), 0).unwrap());
        assert!(!d.check(&json!({"id": 1, "other": "x"}), 5_000).unwrap());
        assert!(d.check(&json!({"id": 2}), 5_000).unwrap());
        assert_eq!(d.apply(json!({"id": 2}), 6_000).unwrap(), ToolOutcome::Drop);
        assert_eq!(
            d.apply(json!({"id": 3}), 6_000).unwrap(),
            ToolOutcome::One(json!({"id": 3}))
        );
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn keys_expire_after_the_ttl_from_first_sight() {
        let mut d = dedupe("id", "10s", 100);
        assert!(d.check(&json!({"id": 1}), 1_000).unwrap());
        // A repeat does not extend the window.
        assert!(!d.check(&json!({"id": 1}), 10_999).unwrap());
        assert!(
            d.check(&json!({"id": 1}), 11_000).unwrap(),
            "expired at 1s + 10s"
        );
        assert!(
            !d.check(&json!({"id": 1}), 11_001).unwrap(),
            "a new window started"
        );
        // Expired keys are forgotten, not just ignored.
        assert!(d.check(&json!({"id": 2}), 100_000).unwrap());
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn the_table_is_bounded_and_evicts_the_oldest() {
        let mut d = dedupe("id", "1h", 3);
        for id in 0..5 {
            assert!(d.check(&json!({ "id": id }), id * 10).unwrap());
        }
        assert_eq!(d.len(), 3, "never more than max_entries");
        assert_eq!(d.evicted(), 2);
        // 0 and 1 were evicted: they pass again; 2, 3, 4 are still known.
        assert!(!d.check(&json!({"id": 4}), 100).unwrap());
        assert!(!d.check(&json!({"id": 2}), 100).unwrap());
        assert!(d.check(&json!({"id": 0}), 100).unwrap());
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn keys_are_compared_by_json_content() {
        let mut d = dedupe("{'a': a, 'b': b}", "1m", 100);
        assert!(d.check(&json!({"a": 1, "b": "x"}), 0).unwrap());
        assert!(
            !d.check(&json!({"b": "x", "a": 1.0}), 0).unwrap(),
            "1 == 1.0"
        );
        assert!(d.check(&json!({"a": 1, "b": "y"}), 0).unwrap());
        assert!(
            d.check(&json!({"a": "1", "b": "x"}), 0).unwrap(),
            "\"1\" != 1"
        );
        let mut d = dedupe("tags", "1m", 100);
        assert!(d.check(&json!({"tags": [1, 2]}), 0).unwrap());
        assert!(
            d.check(&json!({"tags": [2, 1]}), 0).unwrap(),
            "lists keep order"
        );
        assert!(d.check(&json!({"tags": [[1, 2]]}), 0).unwrap());
        assert!(!d.check(&json!({"tags": [1, 2]}), 0).unwrap());
    }

    #[test]
    fn errors_and_arguments() {
        let mut d = dedupe("id", "1m", 10);
        let err = d.check(&json!({"x": 1}), 0).unwrap_err().to_string();
        assert!(
            err.starts_with("dedupe: expression `id`: field `id`"),
            "{err}"
        );
        assert!(d.is_empty(), "a failed key is not remembered");

        let args: DedupeArgs = serde_json::from_str(r#"{"key": "id", "ttl": "1h30m"}"#).unwrap();
        assert_eq!(args.ttl, Duration::from_secs(5_400));
        assert_eq!(args.max_entries, DEFAULT_MAX_ENTRIES);
        let err = serde_json::from_str::<DedupeArgs>(r#"{"key": "id", "ttl": 30}"#).unwrap_err();
        assert!(
            err.to_string().contains("`30` has no unit: write `30s`"),
            "{err}"
        );
        let err = serde_json::from_str::<DedupeArgs>(r#"{"key": "id", "ttl": "5x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown unit `x`"), "{err}");
        let err = serde_json::from_str::<DedupeArgs>(r#"{"key": "id", "ttl": "1m", "max": 1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `max`"), "{err}");
        let zero = DedupeArgs {
            key: "id".into(),
            ttl: Duration::ZERO,
            max_entries: 1,
        };
        assert!(Dedupe::new(zero).is_err());
        let err = Dedupe::new(DedupeArgs {
            key: "id ==".into(),
            ttl: Duration::from_secs(1),
            max_entries: 1,
        })
        .err()
        .unwrap();
        assert!(
            err.to_string().starts_with("dedupe: key: column 6"),
            "{err}"
        );
        assert_eq!(
            dedupe("id", "90s", 5).describe(),
            "dedupe: drop repeats of id within 90s (at most 5 keys)"
        );
        assert_eq!(format_ttl(parse_ttl("2h").unwrap()), "2h");
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_ttl("1m30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "10", "m", "1y", "1.5h", "-1s"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
