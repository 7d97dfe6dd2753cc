//! Rate limits: `"500/s"`, `"100/min"`, with an optional burst, enforced by
//! a token bucket ([`RateLimiter`]).
//!
//! The bucket holds up to `burst` tokens (by default the rate's count, so
//! `100/min` allows 100 calls at once after a quiet minute) and refills
//! continuously at `count` tokens per `per`. It is kept as one number, the
//! time at which the bucket will be full again (the "theoretical arrival
//! time" of the generic cell rate algorithm), in exact integer arithmetic:
//! an acquisition is a clock read, a few multiplications and one
//! uncontended lock.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::{self, Human};

/// How often a function may be called: `count` calls per `per`, with bursts
/// of up to `burst` calls.
///
/// In configuration: `"500/s"`, `"100/min"`, `"5/10s"`, or a map
/// `{ rate: "500/s", burst: 50 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls allowed per [`Rate::per`] (at least 1).
    pub count: u32,
    /// The period (positive).
    pub per: Duration,
    /// Calls allowed at once after a quiet period; `None` means `count`.
    pub burst: Option<u32>,
}

/// A rate string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate `{input}`: {reason}; write `<count>/<period>` such as `500/s`, `100/min`, `3600/h` or `5/10s`"
)]
pub struct RateError {
    /// The input.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Rate {
    /// `count` calls per `per`, burst `count`.
    pub const fn new(count: u32, per: Duration) -> Rate {
        Rate {
            count,
            per,
            burst: None,
        }
    }
    /// `count` calls per second.
    pub const fn per_second(count: u32) -> Rate {
        Rate::new(count, Duration::from_secs(1))
    }
    /// Sets the burst.
    pub const fn with_burst(mut self, burst: u32) -> Rate {
        self.burst = Some(burst);
        self
    }
    /// The burst: calls allowed at once (the count when unset).
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.count)
    }

    /// Parses `"<count>/<period>"`: the period is a unit (`ms`, `s`, `sec`,
    /// `second`, `m`, `min`, `minute`, `h`, `hour`, `d`, `day`) or a
    /// duration (`10s`, `1m30s`).
    pub fn parse(input: &str) -> Result<Rate, RateError> {
        let err = |reason: String| RateError {
            input: input.to_owned(),
            reason,
        };
        let Some((count, per)) = input.split_once('/') else {
            return Err(err("no `/` between the count and the period".into()));
        };
        let (count, per) = (count.trim(), per.trim());
        if count.starts_with('-') {
            return Err(err("the count cannot be negative".into()));
        }
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(format!("the count `{count}` is not a whole number")));
        }
        let count: u32 = count
            .parse()
            .map_err(|_| err(format!("the count `{count}` is too large")))?;
        let per = match per {
            "ms" => Duration::from_millis(1),
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => duration::parse(other).map_err(|e| {
                err(format!(
                    "the period `{other}` is neither a unit nor a duration ({e})"
                ))
            })?,
        };
        Ok(Rate::new(count, per))
    }
}

impl std::str::FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Rate, RateError> {
        Rate::parse(s)
    }
}

/// Shows the rate part as [`Rate::parse`] reads it: `500/s`, `100/min`, `5/10s`
/// (the burst is not shown).
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "",
        };
        if self.per.subsec_nanos() == 0 && !unit.is_empty() {
            write!(f, "{}/{unit}", self.count)
        } else {
            write!(f, "{}/{}", self.count, Human(self.per))
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match self.burst {
            None => s.collect_str(self),
            Some(burst) => {
                let mut m = s.serialize_struct("Rate", 2)?;
                m.serialize_field("rate", &self.to_string())?;
                m.serialize_field("burst", &burst)?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            rate: String,
            #[serde(default)]
            burst: Option<u32>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate such as \"500/s\" or \"100/min\", or a map { rate: \"500/s\", burst: 50 }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rate, E> {
                Rate::parse(v).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Rate, A::Error> {
                let long = Long::deserialize(de::value::MapAccessDeserializer::new(map))?;
                let rate = Rate::parse(&long.rate).map_err(de::Error::custom)?;
                Ok(Rate {
                    burst: long.burst,
                    ..rate
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a [`RateLimiter`] reads the time: a monotonic time since some origin.
pub trait Clock: Send + Sync + 'static {
    /// The time elapsed since this clock's origin.
    fn now(&self) -> Duration;
}

/// Tokio's clock (`tokio::time::Instant`), which `tokio::time::pause()`
/// freezes and advances in tests. The default.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to, for tests. Clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at its origin.
    pub fn new() -> Self {
        ManualClock::default()
    }
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(by, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// A token bucket enforcing a [`Rate`], shared by every worker that calls
/// the limited function (share it in an `Arc`).
///
/// Times are kept in "scaled nanoseconds" (nanoseconds × `count`), in which
/// one token costs exactly `per` in nanoseconds, so no rounding ever
/// accumulates.
#[derive(Debug)]
pub struct RateLimiter<C = TokioClock> {
    clock: C,
    count: u128,
    /// Cost of one token, in scaled ns (= `per` in ns).
    cost: u128,
    /// The bucket's capacity in tokens.
    burst: u128,
    /// When the bucket is full again, in scaled ns since the clock's origin.
    full_at: Mutex<u128>,
}

impl RateLimiter<TokioClock> {
    /// A limiter for `rate` on tokio's clock, its bucket full.
    pub fn new(rate: Rate) -> Self {
        RateLimiter::with_clock(rate, TokioClock::new())
    }
}

impl<C: Clock> RateLimiter<C> {
    /// A limiter for `rate` on `clock`, its bucket full. A count, period or
    /// burst of 0 (which validation reports) is taken as 1, 1ns and 1.
    pub fn with_clock(rate: Rate, clock: C) -> Self {
        let now = scaled(clock.now(), u128::from(rate.count.max(1)));
        RateLimiter {
            count: u128::from(rate.count.max(1)),
            cost: rate.per.as_nanos().max(1),
            burst: u128::from(rate.burst().max(1)),
            full_at: Mutex::new(now),
            clock,
        }
    }

    /// The clock the limiter reads.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The bucket's capacity in tokens.
    pub fn burst(&self) -> u64 {
        u64::try_from(self.burst).unwrap_or(u64::MAX)
    }

    /// Takes `n` tokens now, or tells how long to wait until they are there
    /// (taking nothing). A request larger than the burst is granted when the
    /// bucket is full, and borrows the rest from the future: the calls after
    /// it wait for the refill.
    pub fn try_acquire(&self, n: u32) -> Result<(), Duration> {
        let now = scaled(self.clock.now(), self.count);
        let mut full_at = lock(&self.full_at);
        let (wait, next) = self.plan(*full_at, now, n);
        if wait == 0 {
            *full_at = next;
            Ok(())
        } else {
            Err(self.unscale(wait))
        }
    }

    /// Takes `n` tokens, waiting (tokio time) until they are there, and
    /// returns how long it waited. Callers are served in the order they
    /// call: the tokens are reserved at once, so a caller that drops the
    /// future while it waits still uses them up.
    pub async fn acquire(&self, n: u32) -> Duration {
        let wait = {
            let now = scaled(self.clock.now(), self.count);
            let mut full_at = lock(&self.full_at);
            let (wait, next) = self.plan(*full_at, now, n);
            *full_at = next;
            self.unscale(wait)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
    }

    /// Tokens available now (whole ones), at most the burst.
    pub fn available(&self) -> u64 {
        let now = scaled(self.clock.now(), self.count);
        let full_at = *lock(&self.full_at);
        let missing = full_at.saturating_sub(now);
        let room = (self.burst * self.cost).saturating_sub(missing);
        u64::try_from(room / self.cost).unwrap_or(u64::MAX)
    }

    /// For `n` tokens at `now` with the bucket full at `full_at`: how long
    /// to wait (scaled ns) and when the bucket is full after taking them.
    fn plan(&self, full_at: u128, now: u128, n: u32) -> (u128, u128) {
        let n = u128::from(n);
        let start = full_at.max(now);
        let next = start.saturating_add(n.saturating_mul(self.cost));
        // Allowed once `start + min(n, burst) × cost ≤ now + burst × cost`.
        let due = start.saturating_add(n.min(self.burst) * self.cost);
        let wait = due.saturating_sub(now.saturating_add(self.burst * self.cost));
        (wait, next)
    }

    /// Scaled ns to a duration, rounded up so that the wait is enough.
    fn unscale(&self, scaled: u128) -> Duration {
        let nanos = scaled.div_ceil(self.count);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn scaled(t: Duration, count: u128) -> u128 {
    t.as_nanos().saturating_mul(count)
}

/// The lock holds a plain number that no panic can leave half-written.
fn lock(m: &Mutex<u128>) -> std::sync::MutexGuard<'_, u128> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_rates() {
        assert_eq!(Rate::parse("500/s"), Ok(Rate::per_second(500)));
        assert_eq!(
            Rate::parse("100/min"),
            Ok(Rate::new(100, Duration::from_secs(60)))
        );
        assert_eq!(
            Rate::parse("100 / minute"),
            Ok(Rate::new(100, Duration::from_secs(60)))
        );
        assert_eq!(
            Rate::parse("3600/h"),
            Ok(Rate::new(3600, Duration::from_secs(3600)))
        );
        assert_eq!(
            Rate::parse("5/10s"),
            Ok(Rate::new(5, Duration::from_secs(10)))
        );
        assert_eq!(
            Rate::parse("1/1m30s"),
            Ok(Rate::new(1, Duration::from_secs(90)))
        );
        assert_eq!(Rate::parse("2/ms"), Ok(Rate::new(2, ms(1))));
        for text in ["500/s", "100/min", "3600/h", "5/10s", "7/250ms"] {
            let rate = Rate::parse(text).expect(text);
            assert_eq!(rate.to_string(), text);
        }
    }

    #[test]
    fn rejects_bad_rates_with_the_accepted_forms() {
        for (input, expected) in [
            ("500", "no `/`"),
            ("-5/s", "cannot be negative"),
            ("1.5/s", "`1.5` is not a whole number"),
            ("/s", "`` is not a whole number"),
            ("99999999999/s", "too large"),
            (
                "5/fortnight",
                "the period `fortnight` is neither a unit nor a duration",
            ),
            ("5/10", "the period `10` is neither a unit nor a duration"),
        ] {
            let err = Rate::parse(input).expect_err(input).to_string();
            assert!(err.contains(expected), "`{input}`: {err}");
            assert!(
                err.contains("such as `500/s`, `100/min`"),
                "`{input}`: {err}"
            );
        }
    }

    #[test]
    fn serde_short_and_long_forms() {
        let r: Rate = serde_json::from_value(json!("100/min")).expect("short");
        assert_eq!(r, Rate::new(100, Duration::from_secs(60)));
        assert_eq!(r.burst(), 100);
        let r: Rate = serde_json::from_value(json!({"rate": "500/s", "burst": 20})).expect("long");
        assert_eq!(r, Rate::per_second(500).with_burst(20));
        assert_eq!(
            serde_json::to_value(r).expect("ser"),
            json!({"rate": "500/s", "burst": 20})
        );
        assert_eq!(
            serde_json::to_value(Rate::per_second(9)).expect("ser"),
            json!("9/s")
        );
        let err =
            serde_json::from_value::<Rate>(json!({"rate": "5/s", "brust": 2})).expect_err("typo");
        assert!(err.to_string().contains("unknown field `brust`"), "{err}");
        let err = serde_json::from_value::<Rate>(json!(500)).expect_err("number");
        assert!(
            err.to_string().contains("a rate such as \"500/s\""),
            "{err}"
        );
    }

    #[test]
    fn bucket_starts_full_and_refills_at_the_rate() {
        let clock = ManualClock::new();
        // 10 per second: a token every 100ms, burst 3.
        let limiter = RateLimiter::with_clock(Rate::per_second(10).with_burst(3), clock.clone());
        assert_eq!(limiter.available(), 3);
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(1), Ok(()));
        }
        assert_eq!(limiter.try_acquire(1), Err(ms(100)));
        clock.advance(ms(40));
        assert_eq!(limiter.try_acquire(1), Err(ms(60)));
        clock.advance(ms(60));
        assert_eq!(limiter.try_acquire(1), Ok(()));
        assert_eq!(limiter.try_acquire(1), Err(ms(100)));
        // After a long pause the bucket holds the burst, no more.
        clock.advance(Duration::from_secs(60));
        assert_eq!(limiter.available(), 3);
        assert_eq!(limiter.try_acquire(2), Ok(()));
        assert_eq!(limiter.try_acquire(2), Err(ms(100)));
        assert_eq!(limiter.try_acquire(1), Ok(()));
    }

    #[test]
    fn uneven_periods_do_not_drift() {
        let clock = ManualClock::new();
        // 3 per second: 333.33…ms per token, burst 1.
        let limiter = RateLimiter::with_clock(Rate::per_second(3).with_burst(1), clock.clone());
        let mut granted = 0;
        // Step through 10 seconds in 1ms ticks.
        for _ in 0..10_000 {
            while limiter.try_acquire(1).is_ok() {
                granted += 1;
            }
            clock.advance(ms(1));
        }
        // The first token is there at the start; then exactly 3 per second.
        assert_eq!(granted, 1 + 3 * 10 - 1);
    }

    #[test]
    fn waiting_the_returned_time_is_always_enough() {
        let clock = ManualClock::new();
        // 3 per second: waits are 333_333_333.3…ns, not whole nanoseconds.
        let limiter = RateLimiter::with_clock(Rate::per_second(3).with_burst(1), clock.clone());
        for round in 0..10 {
            assert_eq!(limiter.try_acquire(1), Ok(()), "round {round}");
            let wait = limiter.try_acquire(1).expect_err("empty");
            assert!(
                wait >= Duration::from_nanos(333_333_333),
                "round {round}: {wait:?}"
            );
            clock.advance(wait);
        }
    }

    #[test]
    fn requests_above_the_burst_wait_for_a_full_bucket_then_borrow() {
        let clock = ManualClock::new();
        let limiter = RateLimiter::with_clock(Rate::per_second(10).with_burst(2), clock.clone());
        assert_eq!(limiter.try_acquire(1), Ok(()));
        // Not full: wait until it is.
        assert_eq!(limiter.try_acquire(5), Err(ms(100)));
        clock.advance(ms(100));
        assert_eq!(limiter.try_acquire(5), Ok(()));
        // Five tokens taken from a bucket of two: 300ms in debt, then 100ms for one.
        assert_eq!(limiter.try_acquire(1), Err(ms(400)));
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_under_paused_time_and_serves_in_order() {
        let limiter = Arc::new(RateLimiter::new(Rate::per_second(4).with_burst(2)));
        let start = tokio::time::Instant::now();
        assert_eq!(limiter.acquire(1).await, Duration::ZERO);
        assert_eq!(limiter.acquire(1).await, Duration::ZERO);
        // Empty: the next token is 250ms away.
        assert_eq!(limiter.acquire(1).await, ms(250));
        assert_eq!(start.elapsed(), ms(250));
        // Two callers at once: reserved in order, 250ms apart.
        let a = tokio::spawn({
            let l = limiter.clone();
            async move { l.acquire(1).await }
        });
        let b = tokio::spawn({
            let l = limiter.clone();
            async move { l.acquire(1).await }
        });
        let (a, b) = (a.await.expect("task a"), b.await.expect("task b"));
        let mut waits = [a, b];
        waits.sort();
        assert_eq!(waits, [ms(250), ms(500)]);
        assert_eq!(start.elapsed(), ms(750));
        // A quiet second refills the burst, and no more.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(limiter.available(), 2);
        assert_eq!(limiter.try_acquire(2), Ok(()));
        assert_eq!(limiter.try_acquire(1), Err(ms(250)));
    }
}
