//! Retries: exponential backoff with a cap and jitter, and [`retry_async`].
//!
//! The delay before retry `n` (`n = 1` is the wait before the second
//! attempt) is `min(initial_backoff × multiplierⁿ⁻¹, max_backoff)`, then
//! jittered: with a jitter fraction `f`, the delay actually waited is drawn
//! uniformly from `[(1 − f) × delay, delay]`. So `none` (f = 0) waits exactly
//! the backoff, `equal` (f = 0.5) between half of it and all of it, and
//! `full` (f = 1, the default) anything from zero to all of it, which spreads
//! the retries of many workers hitting the same failing service the most.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How many tries in all when `retry` is set without `attempts`.
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// The first delay when `retry` is set without `initial_backoff`.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The longest delay when `retry` is set without `max_backoff`.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The growth factor when `retry` is set without `multiplier`.
pub const DEFAULT_MULTIPLIER: f64 = 2.0;
/// The jitter when `retry` is set without `jitter`.
pub const DEFAULT_JITTER: Jitter = Jitter::FULL;

/// How much of each backoff delay is randomised: a fraction `f` in `0..=1`.
///
/// The delay waited is drawn uniformly from `[(1 − f) × delay, delay]`.
/// In configuration: `none` (0), `equal` (0.5), `full` (1), or a number.
/// A value outside `0..=1` is reported by validation and clamped when used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter(f64);

impl Jitter {
    /// No randomness: wait exactly the backoff.
    pub const NONE: Jitter = Jitter(0.0);
    /// Wait between half the backoff and all of it.
    pub const EQUAL: Jitter = Jitter(0.5);
    /// Wait between zero and the backoff (the default).
    pub const FULL: Jitter = Jitter(1.0);

    /// A jitter of `fraction` (meaningful in `0..=1`; see [`Jitter`]).
    pub const fn fraction(fraction: f64) -> Jitter {
        Jitter(fraction)
    }

    /// The fraction as given.
    pub const fn get(self) -> f64 {
        self.0
    }

    /// The fraction clamped to `0..=1` (NaN counts as 0).
    fn clamped(self) -> f64 {
        unit(self.0)
    }
}

impl Default for Jitter {
    fn default() -> Self {
        DEFAULT_JITTER
    }
}

impl fmt::Display for Jitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Jitter::NONE => f.write_str("none"),
            Jitter::EQUAL => f.write_str("equal"),
            Jitter::FULL => f.write_str("full"),
            Jitter(x) => write!(f, "{x}"),
        }
    }
}

impl Serialize for Jitter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Jitter::NONE | Jitter::EQUAL | Jitter::FULL => s.collect_str(self),
            Jitter(x) => s.serialize_f64(x),
        }
    }
}

impl<'de> Deserialize<'de> for Jitter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Jitter;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`none`, `equal`, `full`, or a fraction from 0 to 1")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Jitter, E> {
                match v {
                    "none" => Ok(Jitter::NONE),
                    "equal" => Ok(Jitter::EQUAL),
                    "full" => Ok(Jitter::FULL),
                    other => Err(E::custom(format_args!(
                        "unknown jitter `{other}`: write `none`, `equal`, `full`, or a fraction from 0 to 1"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Jitter, E> {
                Ok(Jitter(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Jitter, E> {
                Ok(Jitter(v as f64))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Jitter, E> {
                Ok(Jitter(v as f64))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `retry` policy: how often and how patiently a failing call is tried again.
///
/// Every field is optional so that a more specific configuration level can
/// override one field and keep the others (see [`Retry::merged_over`]); an
/// unset field reads as its `DEFAULT_*` constant through the getter of the
/// same name. In configuration, `retry: 3` is short for `retry: { attempts: 3 }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Retry {
    /// Tries in all, the first call included (at least 1; 1 means no retry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The delay before the first retry, before jitter.
    #[serde(
        default,
        with = "super::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub initial_backoff: Option<Duration>,
    /// The longest delay between two tries, before jitter.
    #[serde(
        default,
        with = "super::duration::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_backoff: Option<Duration>,
    /// How much each delay grows over the previous one (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// How much of each delay is randomised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Jitter>,
}

/// The long form of [`Retry`] as written, checked for unknown keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFields {
    #[serde(default)]
    attempts: Option<u32>,
    #[serde(default, with = "super::duration::option")]
    initial_backoff: Option<Duration>,
    #[serde(default, with = "super::duration::option")]
    max_backoff: Option<Duration>,
    #[serde(default)]
    multiplier: Option<f64>,
    #[serde(default)]
    jitter: Option<Jitter>,
}

impl<'de> Deserialize<'de> for Retry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Retry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of attempts (`retry: 3`) or a map with attempts, initial_backoff, max_backoff, multiplier, jitter")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Retry, E> {
                let attempts = u32::try_from(v).map_err(|_| {
                    E::custom(format_args!(
                        "retry {v}: too many attempts; write at most {}",
                        u32::MAX
                    ))
                })?;
                Ok(Retry::new(attempts))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Retry, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!(
                        "retry {v}: attempts cannot be negative; write the number of tries in all, at least 1"
                    ))),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Retry, A::Error> {
                let f = RetryFields::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Retry {
                    attempts: f.attempts,
                    initial_backoff: f.initial_backoff,
                    max_backoff: f.max_backoff,
                    multiplier: f.multiplier,
                    jitter: f.jitter,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Retry {
    /// A retry policy of `attempts` tries in all, other fields unset.
    pub fn new(attempts: u32) -> Retry {
        Retry {
            attempts: Some(attempts),
            ..Retry::default()
        }
    }
    /// Sets `initial_backoff`.
    pub fn with_initial_backoff(mut self, d: Duration) -> Retry {
        self.initial_backoff = Some(d);
        self
    }
    /// Sets `max_backoff`.
    pub fn with_max_backoff(mut self, d: Duration) -> Retry {
        self.max_backoff = Some(d);
        self
    }
    /// Sets `multiplier`.
    pub fn with_multiplier(mut self, m: f64) -> Retry {
        self.multiplier = Some(m);
        self
    }
    /// Sets `jitter`.
    pub fn with_jitter(mut self, j: Jitter) -> Retry {
        self.jitter = Some(j);
        self
    }

    /// Tries in all ([`DEFAULT_ATTEMPTS`] when unset).
    pub fn attempts(&self) -> u32 {
        self.attempts.unwrap_or(DEFAULT_ATTEMPTS)
    }
    /// The delay before the first retry ([`DEFAULT_INITIAL_BACKOFF`] when unset).
    pub fn initial_backoff(&self) -> Duration {
        self.initial_backoff.unwrap_or(DEFAULT_INITIAL_BACKOFF)
    }
    /// The longest delay ([`DEFAULT_MAX_BACKOFF`] when unset).
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF)
    }
    /// The growth factor ([`DEFAULT_MULTIPLIER`] when unset).
    pub fn multiplier(&self) -> f64 {
        self.multiplier.unwrap_or(DEFAULT_MULTIPLIER)
    }
    /// The jitter ([`DEFAULT_JITTER`] when unset).
    pub fn jitter(&self) -> Jitter {
        self.jitter.unwrap_or(DEFAULT_JITTER)
    }

    /// Field by field: what `self` sets, else what `base` sets.
    pub fn merged_over(&self, base: &Retry) -> Retry {
        Retry {
            attempts: self.attempts.or(base.attempts),
            initial_backoff: self.initial_backoff.or(base.initial_backoff),
            max_backoff: self.max_backoff.or(base.max_backoff),
            multiplier: self.multiplier.or(base.multiplier),
            jitter: self.jitter.or(base.jitter),
        }
    }

    /// The delay before the capped exponential growth is jittered, for retry
    /// `retry` (from 1: the wait before the second attempt; 0 counts as 1).
    pub fn base_delay(&self, retry: u32) -> Duration {
        let max = self.max_backoff();
        let initial = self.initial_backoff().as_secs_f64();
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let grown = initial * self.multiplier().powi(exponent);
        if !grown.is_finite() || grown >= max.as_secs_f64() {
            return max;
        }
        // `grown` is finite and below `max`; negative only for a negative
        // multiplier, which validation reports: treat it as no delay.
        Duration::try_from_secs_f64(grown.max(0.0)).unwrap_or(max)
    }

    /// The delay to wait before retry `retry` (from 1), jittered with `draw`,
    /// a number in `0..1` (from an RNG of your choice; clamped). The result
    /// lies in `[(1 − jitter) × base, base]` with `base` = [`Retry::base_delay`].
    pub fn delay_with(&self, retry: u32, draw: f64) -> Duration {
        let base = self.base_delay(retry);
        let cut = self.jitter().clamped() * unit(draw);
        base.mul_f64(1.0 - cut)
    }

    /// The delay to wait before retry `retry` (from 1), jittered with `rng`.
    pub fn delay(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        self.delay_with(retry, rng.f64())
    }

    /// The delays between the tries: `attempts − 1` of them, jittered with `rng`.
    pub fn backoff(&self, rng: fastrand::Rng) -> Backoff {
        Backoff {
            retry: self.clone(),
            next: 1,
            attempts: self.attempts(),
            rng,
        }
    }
}

/// Clamps to `0..=1`, NaN to 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// The delays between the tries of one call, from [`Retry::backoff`].
#[derive(Debug, Clone)]
pub struct Backoff {
    retry: Retry,
    next: u32,
    attempts: u32,
    rng: fastrand::Rng,
}

impl Iterator for Backoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if self.next >= self.attempts {
            return None;
        }
        let d = self.retry.delay(self.next, &mut self.rng);
        self.next += 1;
        Some(d)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.attempts.saturating_sub(self.next)).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Backoff {}

/// One failed try, as reported by [`retry_async`] to its callback.
#[derive(Debug)]
pub struct Attempt<'a, E> {
    /// Which try failed, from 1.
    pub number: u32,
    /// Tries allowed in all.
    pub attempts: u32,
    /// Its error.
    pub error: &'a E,
    /// `Some(delay)` when the call is tried again after `delay` (count it as
    /// a retry), `None` when [`retry_async`] gives up.
    pub next_delay: Option<Duration>,
}

/// Why [`retry_async`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// Every allowed try failed.
    Exhausted,
    /// The error was not retryable.
    NotRetryable,
}

/// [`retry_async`] gave up: the last error, with how many tries were made.
#[derive(Debug)]
pub struct RetryError<E> {
    /// The error of the last try.
    pub error: E,
    /// Tries made, the first call included.
    pub attempts: u32,
    /// Why no further try was made.
    pub reason: GaveUp,
}

impl<E: fmt::Display> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason {
            GaveUp::Exhausted if self.attempts <= 1 => write!(
                f,
                "{} (tried once: the retry policy allows 1 attempt; raise `retry.attempts` to try again)",
                self.error
            ),
            GaveUp::Exhausted => write!(
                f,
                "{} (gave up after {} attempts, all the retry policy allows; raise `retry.attempts` or fix the cause)",
                self.error, self.attempts
            ),
            GaveUp::NotRetryable => write!(
                f,
                "{} (not retried: the error is not retryable; attempt {})",
                self.error, self.attempts
            ),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Calls `op` until it succeeds, its error is not retryable, or the
/// policy's attempts are used up, sleeping (tokio time) the jittered
/// backoff between tries.
///
/// `on_failure` is called after every failed try, before any sleep, with
/// [`Attempt::next_delay`] telling whether a retry follows: count retries
/// and give-ups there. Dropping the returned future cancels the call and any
/// sleep.
///
/// ```
/// # use syncflow::policy::{Retry, retry_async};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut calls = 0;
/// let mut retries = 0;
/// let result = retry_async(
///     &Retry::new(3).with_initial_backoff(std::time::Duration::ZERO),
///     |e: &String| e.starts_with("busy"),
///     |a| if a.next_delay.is_some() { retries += 1 },
///     || { calls += 1; let n = calls; async move { if n < 2 { Err("busy".to_string()) } else { Ok(n) } } },
/// ).await;
/// assert_eq!(result.unwrap(), 2);
/// assert_eq!(retries, 1);
/// # }
/// ```
pub async fn retry_async<T, E, Fut>(
    retry: &Retry,
    mut is_retryable: impl FnMut(&E) -> bool,
    mut on_failure: impl FnMut(&Attempt<'_, E>),
    mut op: impl FnMut() -> Fut,
) -> Result<T, RetryError<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let attempts = retry.attempts().max(1);
    let mut backoff = retry.backoff(fastrand::Rng::new());
    let mut number = 1;
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let retryable = is_retryable(&error);
        // `backoff` yields `attempts − 1` delays: one per allowed retry.
        let next_delay = if retryable { backoff.next() } else { None };
        on_failure(&Attempt {
            number,
            attempts,
            error: &error,
            next_delay,
        });
        match next_delay {
            Some(delay) => {
                drop(error);
                tokio::time::sleep(delay).await;
                number += 1;
            }
            None => {
                return Err(RetryError {
                    error,
                    attempts: number,
                    reason: if retryable {
                        GaveUp::Exhausted
                    } else {
                        GaveUp::NotRetryable
                    },
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::Cell;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn short_and_long_forms() {
        let r: Retry = serde_json::from_value(json!(5)).expect("short form");
        assert_eq!(r, Retry::new(5));
        let r: Retry = serde_json::from_value(json!({
            "attempts": 4, "initial_backoff": "50ms", "max_backoff": "2s",
            "multiplier": 3, "jitter": "equal"
        }))
        .expect("long form");
        assert_eq!(
            r,
            Retry::new(4)
                .with_initial_backoff(ms(50))
                .with_max_backoff(ms(2000))
                .with_multiplier(3.0)
                .with_jitter(Jitter::EQUAL)
        );
        let r: Retry = serde_json::from_value(json!({"jitter": 0.25})).expect("fraction");
        assert_eq!(r.jitter(), Jitter::fraction(0.25));
        assert_eq!(r.attempts(), DEFAULT_ATTEMPTS);
        // Round trip through serialisation.
        let back: Retry =
            serde_json::from_value(serde_json::to_value(&r).expect("ser")).expect("de");
        assert_eq!(back, r);
    }

    #[test]
    fn bad_forms_say_what_to_write() {
        for (value, expected) in [
            (json!({"atempts": 3}), "unknown field `atempts`"),
            (json!(-1), "attempts cannot be negative"),
            (json!("3"), "a number of attempts (`retry: 3`)"),
            (json!({"jitter": "some"}), "write `none`, `equal`, `full`"),
            (json!({"initial_backoff": 100}), "such as `100s` or `100ms`"),
        ] {
            let err = serde_json::from_value::<Retry>(value.clone()).expect_err("invalid");
            assert!(err.to_string().contains(expected), "{value}: {err}");
        }
    }

    #[test]
    fn base_delay_grows_then_caps() {
        let r = Retry::new(10)
            .with_initial_backoff(ms(100))
            .with_max_backoff(ms(1000))
            .with_multiplier(2.0);
        let got: Vec<_> = (1..=6).map(|n| r.base_delay(n)).collect();
        assert_eq!(
            got,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(r.base_delay(0), ms(100));
        // Huge exponents saturate at the cap instead of overflowing.
        assert_eq!(r.base_delay(u32::MAX), ms(1000));
        let flat = r.clone().with_multiplier(1.0);
        assert_eq!(flat.base_delay(50), ms(100));
    }

    #[test]
    fn jitter_bounds_hold_over_many_samples() {
        let base = Retry::new(8)
            .with_initial_backoff(ms(100))
            .with_max_backoff(ms(3000));
        for jitter in [
            Jitter::NONE,
            Jitter::EQUAL,
            Jitter::FULL,
            Jitter::fraction(0.2),
        ] {
            let r = base.clone().with_jitter(jitter);
            let mut rng = fastrand::Rng::with_seed(7);
            for retry in 1..=8 {
                let full = r.base_delay(retry);
                let floor = full.mul_f64(1.0 - jitter.get());
                let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
                for _ in 0..2000 {
                    let d = r.delay(retry, &mut rng);
                    assert!(
                        d <= full && d >= floor,
                        "{jitter}: {d:?} outside [{floor:?}, {full:?}]"
                    );
                    lo = lo.min(d);
                    hi = hi.max(d);
                }
                if jitter == Jitter::NONE {
                    assert_eq!((lo, hi), (full, full));
                } else {
                    // The samples spread over most of the allowed range.
                    let span = full - floor;
                    assert!(
                        lo < floor + span / 10,
                        "{jitter} retry {retry}: lowest {lo:?}"
                    );
                    assert!(
                        hi > full - span / 10,
                        "{jitter} retry {retry}: highest {hi:?}"
                    );
                }
            }
        }
        // Extreme draws land on the ends of the range.
        let r = base.with_jitter(Jitter::EQUAL);
        assert_eq!(r.delay_with(1, 0.0), ms(100));
        assert_eq!(r.delay_with(1, 1.0), ms(50));
        assert_eq!(r.delay_with(1, f64::NAN), ms(100));
    }

    #[test]
    fn backoff_yields_one_delay_per_retry() {
        let r = Retry::new(4)
            .with_initial_backoff(ms(10))
            .with_jitter(Jitter::NONE);
        let b = r.backoff(fastrand::Rng::with_seed(1));
        assert_eq!(b.len(), 3);
        assert_eq!(b.collect::<Vec<_>>(), [ms(10), ms(20), ms(40)]);
        assert_eq!(Retry::new(1).backoff(fastrand::Rng::new()).count(), 0);
        // Same seed, same delays.
        let j = Retry::new(6);
        let a: Vec<_> = j.backoff(fastrand::Rng::with_seed(9)).collect();
        let b: Vec<_> = j.backoff(fastrand::Rng::with_seed(9)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn merge_is_field_by_field() {
        let base = Retry::new(5).with_initial_backoff(ms(1000));
        let top = Retry::default().with_max_backoff(ms(30_000));
        let m = top.merged_over(&base);
        assert_eq!(m.attempts(), 5);
        assert_eq!(m.initial_backoff(), ms(1000));
        assert_eq!(m.max_backoff(), ms(30_000));
        assert_eq!(Retry::new(2).merged_over(&base).attempts(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_async_retries_then_succeeds_after_the_backoff() {
        let r = Retry::new(5)
            .with_initial_backoff(ms(100))
            .with_jitter(Jitter::NONE);
        let calls = Cell::new(0u32);
        let mut reports = Vec::new();
        let start = tokio::time::Instant::now();
        let out = retry_async(
            &r,
            |_: &&str| true,
            |a| reports.push((a.number, a.next_delay)),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 3 { Err("busy") } else { Ok(n) } }
            },
        )
        .await;
        assert_eq!(out.expect("third try succeeds"), 3);
        assert_eq!(reports, [(1, Some(ms(100))), (2, Some(ms(200)))]);
        assert_eq!(start.elapsed(), ms(300));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_async_gives_up_after_attempts() {
        let r = Retry::new(3).with_initial_backoff(ms(10));
        let calls = Cell::new(0u32);
        let mut retries = 0;
        let mut gave_up = 0;
        let err = retry_async(
            &r,
            |_: &String| true,
            |a| match a.next_delay {
                Some(_) => retries += 1,
                None => gave_up += 1,
            },
            || {
                calls.set(calls.get() + 1);
                async { Err::<(), _>("down".to_string()) }
            },
        )
        .await
        .expect_err("always fails");
        assert_eq!(calls.get(), 3);
        assert_eq!((retries, gave_up), (2, 1));
        assert_eq!((err.attempts, err.reason), (3, GaveUp::Exhausted));
        let text = err.to_string();
        assert!(text.starts_with("down (gave up after 3 attempts"), "{text}");
        assert!(text.contains("raise `retry.attempts`"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_async_stops_at_a_non_retryable_error() {
        let calls = Cell::new(0u32);
        let start = tokio::time::Instant::now();
        let err = retry_async(
            &Retry::new(5),
            |e: &&str| *e != "fatal",
            |_| {},
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { Err::<(), _>(if n == 2 { "fatal" } else { "busy" }) }
            },
        )
        .await
        .expect_err("fatal");
        assert_eq!(calls.get(), 2);
        assert_eq!(
            (err.error, err.attempts, err.reason),
            ("fatal", 2, GaveUp::NotRetryable)
        );
        // Full jitter: the one sleep is at most the initial backoff.
        assert!(start.elapsed() <= DEFAULT_INITIAL_BACKOFF);
    }
}
