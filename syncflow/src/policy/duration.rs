//! Human durations: `"250ms"`, `"2s"`, `"1m"`, `"1h30m"`.
//!
//! A duration is one or more components, each a number with a unit, from the
//! largest unit to the smallest, each unit at most once, optionally separated
//! by spaces: `"1h30m"`, `"1h 30m"`, `"2s500ms"`. Units: `d`, `h`, `m`
//! (minutes), `s`, `ms`, `us` (or `µs`), `ns`. The last component may have a
//! decimal fraction (`"1.5s"`, `"0.25s"`).
//!
//! Rejected, because they are ambiguous or meaningless as a policy value: a
//! bare number (`"250"`: seconds or milliseconds?), a trailing number without
//! a unit (`"1h30"`), a sign (`"-1s"`, `"+1s"`), units out of order or
//! repeated (`"30m1h"`, `"1s1s"`), a fraction before the last component, and
//! anything finer than a nanosecond.

use std::fmt;
use std::time::Duration;

/// What the error messages offer as the accepted forms.
const FORMS: &str = "write a number with a unit, such as `250ms`, `2s`, `1m`, `1h30m` or `1.5s` \
     (units: d, h, m, s, ms, us, ns; largest first)";

/// A duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration: {FORMS}")]
    Empty,
    /// The string starts with a minus sign.
    #[error("negative duration `{0}`: durations cannot be negative; {FORMS}")]
    Negative(String),
    /// A number has no unit after it.
    #[error("ambiguous duration `{input}`: the number `{number}` has no unit; {FORMS}")]
    MissingUnit {
        /// The whole input.
        input: String,
        /// The number without a unit.
        number: String,
    },
    /// A unit is not one of the accepted units.
    #[error("invalid duration `{input}`: unknown unit `{unit}`; {FORMS}")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit that is not known.
        unit: String,
    },
    /// Units are repeated or not from largest to smallest.
    #[error("ambiguous duration `{input}`: unit `{unit}` is repeated or out of order; {FORMS}")]
    UnitOrder {
        /// The whole input.
        input: String,
        /// The unit out of place.
        unit: String,
    },
    /// A fraction appears before the last component, or is malformed.
    #[error("invalid duration `{input}`: only the last number may have a fraction; {FORMS}")]
    Fraction {
        /// The whole input.
        input: String,
    },
    /// The string contains something that is neither a number nor a unit.
    #[error("invalid duration `{input}`: unexpected `{found}`; {FORMS}")]
    Syntax {
        /// The whole input.
        input: String,
        /// What was found where a number was expected.
        found: String,
    },
    /// The duration is finer than a nanosecond.
    #[error("invalid duration `{0}`: finer than a nanosecond; {FORMS}")]
    TooPrecise(String),
    /// The duration does not fit in a `std::time::Duration`.
    #[error("duration `{0}` is too large")]
    TooLarge(String),
}

/// A unit and its length in nanoseconds, largest first.
const UNITS: [(&str, u128); 9] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000), // Greek mu, as some keyboards type it
    ("ns", 1),
];

/// Parses a human duration such as `"250ms"` or `"1h30m"` (see the module docs).
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s.starts_with('-') {
        return Err(DurationError::Negative(input.to_owned()));
    }
    let mut rest = s;
    let mut total: u128 = 0;
    // Rank (index in UNITS) that the next unit must be below.
    let mut last_rank: Option<usize> = None;
    let mut saw_fraction = false;
    while !rest.is_empty() {
        if saw_fraction {
            return Err(DurationError::Fraction {
                input: input.to_owned(),
            });
        }
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_len];
        if number.is_empty() {
            let found: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            return Err(DurationError::Syntax {
                input: input.to_owned(),
                found,
            });
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        if unit.is_empty() {
            return Err(DurationError::MissingUnit {
                input: input.to_owned(),
                number: number.to_owned(),
            });
        }
        let Some(rank) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(DurationError::UnknownUnit {
                input: input.to_owned(),
                unit: unit.to_owned(),
            });
        };
        let unit_ns = UNITS[rank].1;
        // `us`, `µs` and `μs` share a rank: compare by length in ns.
        if let Some(prev) = last_rank
            && UNITS[prev].1 <= unit_ns
        {
            return Err(DurationError::UnitOrder {
                input: input.to_owned(),
                unit: unit.to_owned(),
            });
        }
        last_rank = Some(rank);
        let (whole, frac) = match number.split_once('.') {
            Some((w, f)) => {
                saw_fraction = true;
                (w, f)
            }
            None => (number, ""),
        };
        if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
            return Err(DurationError::Fraction {
                input: input.to_owned(),
            });
        }
        let too_large = || DurationError::TooLarge(input.to_owned());
        let whole_value: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let mut ns = whole_value.checked_mul(unit_ns).ok_or_else(too_large)?;
        if !frac.trim_end_matches('0').is_empty() {
            // Trailing zeros add nothing; past 20 digits even a day's
            // fraction is finer than a nanosecond.
            let frac = frac.trim_end_matches('0');
            if frac.len() > 20 {
                return Err(DurationError::TooPrecise(input.to_owned()));
            }
            let digits = u32::try_from(frac.len()).map_err(|_| too_large())?;
            let scale = 10u128.checked_pow(digits).ok_or_else(too_large)?;
            let frac_value: u128 = frac.parse().map_err(|_| too_large())?;
            let scaled = frac_value.checked_mul(unit_ns).ok_or_else(too_large)?;
            if scaled % scale != 0 {
                return Err(DurationError::TooPrecise(input.to_owned()));
            }
            ns = ns.checked_add(scaled / scale).ok_or_else(too_large)?;
        }
        total = total.checked_add(ns).ok_or_else(too_large)?;
    }
    let secs = u64::try_from(total / 1_000_000_000)
        .map_err(|_| DurationError::TooLarge(input.to_owned()))?;
    // The remainder is below 10^9 and fits in a u32.
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

/// Shows a duration the way [`parse`] reads it: `1h30m`, `250ms`, `1s500ms`, `0s`.
///
/// `parse(&Human(d).to_string()) == Ok(d)` for every duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Human(pub Duration);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_nanos();
        if rest == 0 {
            return f.write_str("0s");
        }
        // Days are shown as hours (a day is not always 24h to a reader); µs as `us`.
        const SHOWN: [(&str, u128); 6] = [
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ];
        for (unit, ns) in SHOWN {
            let n = rest / ns;
            if n > 0 {
                write!(f, "{n}{unit}")?;
                rest %= ns;
            }
        }
        Ok(())
    }
}

/// Serde support for `Option<Duration>` fields written as human strings.
pub(crate) mod option {
    use super::{Human, parse};
    use serde::de::{self, Visitor};
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt;
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.collect_str(&Human(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads a duration, or `None` for a null (a YAML key with no value).
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        struct Field(Duration);
        impl<'de> Deserialize<'de> for Field {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(DurationVisitor).map(Field)
            }
        }
        Ok(Option::<Field>::deserialize(d)?.map(|f| f.0))
    }

    /// Reads a duration from a string; explains why a number is refused.
    pub(crate) struct DurationVisitor;

    impl DurationVisitor {
        fn bare_number<E: de::Error>(n: impl fmt::Display) -> E {
            E::custom(format_args!(
                "ambiguous duration {n}: a bare number has no unit; write it as a string with a unit, such as `{n}s` or `{n}ms`"
            ))
        }
    }

    impl<'de> Visitor<'de> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"250ms\", \"2s\", \"1m\" or \"1h30m\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(Self::bare_number(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(Self::bare_number(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(Self::bare_number(v))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_single_units() {
        assert_eq!(parse("250ms"), Ok(ms(250)));
        assert_eq!(parse("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("3h"), Ok(Duration::from_secs(3 * 3600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("7us"), Ok(Duration::from_micros(7)));
        assert_eq!(parse("7µs"), Ok(Duration::from_micros(7)));
        assert_eq!(parse("15ns"), Ok(Duration::from_nanos(15)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_compound_fraction_and_spaces() {
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse(" 1h 30m "), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("2s500ms"), Ok(ms(2500)));
        assert_eq!(parse("1.5s"), Ok(ms(1500)));
        assert_eq!(parse(".25s"), Ok(ms(250)));
        assert_eq!(parse("1m0.5s"), Ok(ms(60_500)));
        assert_eq!(parse("0.000000001s"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse("2.500000000000000000000000000000s"), Ok(ms(2500)));
    }

    #[test]
    fn rejects_ambiguous_and_bad_input_with_the_accepted_forms() {
        let cases = [
            ("", "empty duration"),
            ("   ", "empty duration"),
            ("250", "the number `250` has no unit"),
            ("1h30", "the number `30` has no unit"),
            ("-1s", "cannot be negative"),
            ("+1s", "unexpected `+1s`"),
            ("30m1h", "unit `h` is repeated or out of order"),
            ("1s1s", "unit `s` is repeated or out of order"),
            ("1us1µs", "unit `µs` is repeated or out of order"),
            ("1.5m30s", "only the last number may have a fraction"),
            ("1..5s", "only the last number may have a fraction"),
            ("1.2.3s", "only the last number may have a fraction"),
            (".s", "only the last number may have a fraction"),
            ("2min", "unknown unit `min`"),
            ("2S", "unknown unit `S`"),
            ("s", "unexpected `s`"),
            ("0.5ns", "finer than a nanosecond"),
            (
                "0.0000000000000000000000000000001s",
                "finer than a nanosecond",
            ),
            ("99999999999999999999999999999999999999999d", "too large"),
            ("300000000000000d", "too large"),
        ];
        for (input, expected) in cases {
            let err = parse(input).expect_err(input).to_string();
            assert!(
                err.contains(expected),
                "`{input}`: `{err}` lacks `{expected}`"
            );
            if !err.contains("too large") {
                assert!(
                    err.contains("`250ms`, `2s`, `1m`, `1h30m`"),
                    "`{input}`: `{err}` lacks the forms"
                );
            }
        }
    }

    #[test]
    fn human_display_round_trips() {
        let samples = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(1500),
            ms(250),
            ms(1500),
            Duration::from_secs(60),
            Duration::from_secs(5400),
            Duration::from_secs(3 * 86_400 + 7),
            Duration::new(12_345, 678_901_234),
        ];
        for d in samples {
            let text = Human(d).to_string();
            assert_eq!(parse(&text), Ok(d), "{text}");
        }
        assert_eq!(Human(Duration::from_secs(5400)).to_string(), "1h30m");
        assert_eq!(Human(ms(1500)).to_string(), "1s500ms");
        assert_eq!(Human(Duration::ZERO).to_string(), "0s");
    }

    #[test]
    fn serde_field_refuses_bare_numbers() {
        #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
        struct T {
            #[serde(default, with = "super::option")]
            d: Option<Duration>,
        }
        let t: T = serde_json::from_value(serde_json::json!({"d": "1h30m"})).expect("valid");
        assert_eq!(t.d, Some(Duration::from_secs(5400)));
        assert_eq!(
            serde_json::to_value(&t).expect("serialises"),
            serde_json::json!({"d": "1h30m"})
        );
        let t: T = serde_json::from_value(serde_json::json!({})).expect("valid");
        assert_eq!(t.d, None);
        let err =
            serde_json::from_value::<T>(serde_json::json!({"d": 2})).expect_err("bare number");
        assert!(err.to_string().contains("such as `2s` or `2ms`"), "{err}");
        let err =
            serde_json::from_value::<T>(serde_json::json!({"d": "2"})).expect_err("bare number");
        assert!(err.to_string().contains("has no unit"), "{err}");
    }
}
