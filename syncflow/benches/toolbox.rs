//! Toolbox `filter` and `map` (CEL expressions) against the same logic
//! hand-written on the `serde_json::Value`, per message, on ~200-byte log
//! objects.
//!
//! ```text
//! cargo bench -p syncflow --bench toolbox                # criterion + summary
//! cargo bench -p syncflow --bench toolbox -- --summary   # summary only (~10 s)
//! ```
//!
//! Instructions per message, steady whatever the load: `--only I --rounds N`
//! runs variant `I` (0: filter hand-written, 1: filter toolbox, 2: map
//! moving, 3: map cloning, 4: map toolbox, 5: decode, 6: clone) N times
//! and prints nothing. Run it under `valgrind --tool=callgrind` with two
//! values of N and divide the difference of the instruction counts by
//! (difference of N × 10 × 1024). Variants 2 and 4 clone their input
//! untimed but not uncounted: subtract variant 6 from them.
//!
//! The summary interleaves the variants over several rounds and prints the
//! median ns/message and the median per-round ratio to the hand-written
//! code. For scale, decoding the same line with `serde_json` is printed too.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput};
use serde_json::{Map as JsonMap, Value};
use syncflow::toolbox::{Filter, FilterArgs, Map, MapArgs, ToolOutcome};

const BATCH: usize = 1024;
const FILTER: &str = r#"level != "debug""#;
const MAP: &str = r#"{"ts": ts, "level": level, "host": host, "status": status}"#;
const FIELDS: [&str; 4] = ["ts", "level", "host", "status"];

/// `BATCH` log lines of about 200 bytes: a quarter are `debug`.
fn lines() -> Vec<String> {
    const LEVELS: [&str; 4] = ["info", "warn", "error", "debug"];
    const STATUS: [u16; 5] = [200, 200, 200, 404, 500];
    (0..BATCH)
        .map(|i| {
            format!(
                r#"{{"ts":"2024-01-01T00:{:02}:{:02}Z","level":"{}","host":"web-{}","service":"api","status":{},"bytes":{},"path":"/api/v1/orders","msg":"GET /api/v1/orders/{} completed in {}ms for client 10.0.0.1"}}"#,
                (i / 60) % 60,
                i % 60,
                LEVELS[i % 4],
                i % 7,
                STATUS[i % 5],
                512 + i * 37 % 9000,
                10_000 + i,
                i % 90
            )
        })
        .collect()
}

fn messages() -> Vec<Value> {
    lines()
        .iter()
        .map(|l| serde_json::from_str(l).expect("generated JSON"))
        .collect()
}

fn hand_keep(message: &Value) -> bool {
    message.get("level").and_then(Value::as_str) != Some("debug")
}

/// The projection written by hand, moving the fields out of the message.
fn hand_map(message: Value) -> Result<Value, &'static str> {
    let Value::Object(mut fields) = message else {
        return Err("not an object");
    };
    let mut out = JsonMap::new();
    for key in FIELDS {
        let value = fields.remove(key).ok_or("missing field")?;
        out.insert(key.to_owned(), value);
    }
    Ok(Value::Object(out))
}

/// The projection written by hand from a borrowed message, cloning the
/// fields: the same data flow as the expression, which reads a `&Value`.
fn hand_map_ref(message: &Value) -> Result<Value, &'static str> {
    let mut out = JsonMap::new();
    for key in FIELDS {
        let value = message.get(key).ok_or("missing field")?;
        out.insert(key.to_owned(), value.clone());
    }
    Ok(Value::Object(out))
}

fn tools() -> (Filter, Map) {
    let filter = Filter::new(FilterArgs {
        expr: FILTER.into(),
    })
    .expect("filter compiles");
    let map = Map::new(MapArgs { expr: MAP.into() }).expect("map compiles");
    (filter, map)
}

fn criterion_benches(c: &mut Criterion) {
    let batch = messages();
    let text = lines();
    let (filter, map) = tools();

    let mut group = c.benchmark_group("toolbox_filter");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("hand", |b| {
        b.iter(|| batch.iter().filter(|m| hand_keep(black_box(m))).count())
    });
    group.bench_function("toolbox", |b| {
        b.iter(|| {
            batch
                .iter()
                .filter(|m| filter.keep(black_box(m)).unwrap_or(false))
                .count()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("toolbox_map");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("hand", |b| {
        b.iter_batched(
            || batch.clone(),
            |owned| {
                owned
                    .into_iter()
                    .map(hand_map)
                    .filter(Result::is_ok)
                    .count()
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("hand_ref", |b| {
        b.iter(|| batch.iter().map(hand_map_ref).filter(Result::is_ok).count())
    });
    group.bench_function("toolbox", |b| {
        b.iter_batched(
            || batch.clone(),
            |owned| {
                owned
                    .into_iter()
                    .map(|m| map.apply(m))
                    .filter(|o| matches!(o, Ok(ToolOutcome::One(_))))
                    .count()
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("toolbox_scale");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("serde_json_decode", |b| {
        b.iter(|| {
            text.iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .count()
        })
    });
    group.finish();
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Times `work` alone (the input clone made by `setup` is not timed).
fn timed<T>(setup: impl FnOnce() -> T, work: impl FnOnce(T) -> usize) -> Duration {
    let input = setup();
    let start = Instant::now();
    black_box(work(input));
    start.elapsed()
}

/// `only`: run just that variant (by index) `rounds` times and print
/// nothing, for instruction counts under `perf stat`.
fn summary(rounds: usize, only: Option<usize>) {
    const REPS: usize = 10;
    let batch = messages();
    let text = lines();
    let (filter, map) = tools();
    let bytes: usize = text.iter().map(String::len).sum();

    // The two sides compute the same thing, or the comparison means nothing.
    for message in &batch {
        let keep = filter.keep(message).expect("the filter evaluates");
        assert_eq!(keep, hand_keep(message), "filter disagrees on {message}");
        let mapped = match map.apply(message.clone()) {
            Ok(ToolOutcome::One(v)) => v,
            other => panic!("map failed on {message}: {other:?}"),
        };
        assert_eq!(
            Ok(&mapped),
            hand_map(message.clone()).as_ref(),
            "map disagrees"
        );
    }

    type Run<'a> = Box<dyn Fn() -> Duration + 'a>;
    let variants: Vec<(&str, Run)> = vec![
        (
            "filter: hand-written",
            Box::new(|| {
                timed(
                    || (),
                    |()| batch.iter().filter(|m| hand_keep(black_box(m))).count(),
                )
            }),
        ),
        (
            "filter: toolbox",
            Box::new(|| {
                timed(
                    || (),
                    |()| {
                        batch
                            .iter()
                            .filter(|m| filter.keep(black_box(m)).unwrap_or(false))
                            .count()
                    },
                )
            }),
        ),
        (
            "map: hand-written, moving fields",
            Box::new(|| {
                timed(
                    || batch.clone(),
                    |owned| {
                        owned
                            .into_iter()
                            .map(hand_map)
                            .filter(Result::is_ok)
                            .count()
                    },
                )
            }),
        ),
        (
            "map: hand-written, cloning fields",
            Box::new(|| {
                timed(
                    || (),
                    |()| batch.iter().map(hand_map_ref).filter(Result::is_ok).count(),
                )
            }),
        ),
        (
            "map: toolbox",
            Box::new(|| {
                timed(
                    || batch.clone(),
                    |owned| {
                        owned
                            .into_iter()
                            .map(|m| map.apply(m))
                            .filter(|o| matches!(o, Ok(ToolOutcome::One(_))))
                            .count()
                    },
                )
            }),
        ),
        (
            "scale: serde_json decode of the line",
            Box::new(|| {
                timed(
                    || (),
                    |()| {
                        text.iter()
                            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                            .count()
                    },
                )
            }),
        ),
        (
            "scale: clone and drop of the message",
            Box::new(|| timed(|| (), |()| batch.clone().len())),
        ),
    ];

    if let Some(index) = only {
        if let Some((_, run)) = variants.get(index) {
            for _ in 0..rounds {
                black_box(run());
            }
        }
        return;
    }
    // ns per message, per variant, per round; variants interleaved.
    let mut samples = vec![Vec::with_capacity(rounds); variants.len()];
    for _ in 0..rounds {
        for (i, (_, run)) in variants.iter().enumerate() {
            let total: Duration = (0..REPS).map(|_| run()).sum();
            samples[i].push(total.as_nanos() as f64 / (REPS * BATCH) as f64);
        }
    }
    let ratio = |of: usize, to: usize| {
        let mut r: Vec<f64> = samples[of]
            .iter()
            .zip(&samples[to])
            .map(|(a, b)| a / b)
            .collect();
        median(&mut r)
    };
    println!(
        "
toolbox: {BATCH} log objects of {} bytes on average; median of {rounds} rounds",
        bytes / BATCH
    );
    println!("  filter: {FILTER}\n  map:    {MAP}");
    for (i, (name, _)) in variants.iter().enumerate() {
        let ns = median(&mut samples[i].clone());
        let vs = match i {
            1 => format!("  {:.1}x hand-written", ratio(1, 0)),
            4 => format!("  {:.1}x moving, {:.1}x cloning", ratio(4, 2), ratio(4, 3)),
            _ => String::new(),
        };
        println!("  {name:38} {ns:8.1} ns/msg{vs}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<usize>().ok())
    };
    if let Some(index) = value("--only") {
        summary(value("--rounds").unwrap_or(100), Some(index));
        return;
    }
    if has("--test") {
        // `cargo test --benches`: one pass of everything, no timing.
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c);
        summary(1, None);
        return;
    }
    if !has("--summary") {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c);
        c.final_summary();
    }
    summary(31, None);
}
