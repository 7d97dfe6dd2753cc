//! What `#[sync_function]` and `flow!` do at run time: every outcome shape at
//! every position of a flow, sync and async, fan-out, failures, and the
//! default per-step counters, all checked against a plain-Rust model of the
//! same chain built from the user functions called directly.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::task::{Context as TaskContext, Poll, Waker};

use syncflow::flow::Failed;
use syncflow::prelude::*;
use tokio::task::yield_now;

/// The error of every fallible test function.
#[derive(Debug, Clone, PartialEq)]
pub struct Bad(String);

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// One function per outcome shape, sync (`s_`) and async (`a_`, awaiting
// before it answers), with the same meaning.

/// Map: adds one.
#[sync_function]
fn s_map(n: i64) -> i64 {
    n + 1
}
/// Filter: drops multiples of 3.
#[sync_function]
fn s_filter(n: i64) -> Option<i64> {
    (n % 3 != 0).then_some(n)
}
/// Fallible: fails on multiples of 5, else doubles.
#[sync_function]
fn s_fallible(n: i64) -> Result<i64, Bad> {
    if n % 5 == 0 {
        Err(Bad(format!("{n} is a multiple of 5")))
    } else {
        Ok(n * 2)
    }
}
/// Fallible filter: fails on negatives, drops odd numbers, halves the rest.
#[sync_function]
fn s_fallible_filter(n: i64) -> Result<Option<i64>, Bad> {
    if n < 0 {
        Err(Bad(format!("{n} is negative")))
    } else {
        Ok((n % 2 == 0).then_some(n / 2))
    }
}
/// Fan-out: 0, 1 or 2 items, by `n mod 3`.
#[sync_function]
fn s_fan_out(n: i64) -> Vec<i64> {
    (0..n.rem_euclid(3)).map(|i| n * 10 + i).collect()
}
/// Fallible fan-out: fails on multiples of 7, else `n` and `-n`.
#[sync_function]
fn s_fallible_fan_out(n: i64) -> Result<Vec<i64>, Bad> {
    if n % 7 == 0 {
        Err(Bad(format!("{n} is a multiple of 7")))
    } else {
        Ok(vec![n, -n])
    }
}

#[sync_function]
async fn a_map(n: i64) -> i64 {
    yield_now().await;
    s_map(n)
}
#[sync_function]
async fn a_filter(n: i64) -> Option<i64> {
    yield_now().await;
    s_filter(n)
}
#[sync_function]
async fn a_fallible(n: i64) -> Result<i64, Bad> {
    yield_now().await;
    s_fallible(n)
}
#[sync_function]
async fn a_fallible_filter(n: i64) -> Result<Option<i64>, Bad> {
    yield_now().await;
    s_fallible_filter(n)
}
#[sync_function]
async fn a_fan_out(n: i64) -> Vec<i64> {
    yield_now().await;
    s_fan_out(n)
}
#[sync_function]
async fn a_fallible_fan_out(n: i64) -> Result<Vec<i64>, Bad> {
    yield_now().await;
    s_fallible_fan_out(n)
}

// The model: each shape's value turned into "these items, or this error".

trait Norm {
    fn norm(self) -> Result<Vec<i64>, String>;
}
impl Norm for i64 {
    fn norm(self) -> Result<Vec<i64>, String> {
        Ok(vec![self])
    }
}
impl Norm for Option<i64> {
    fn norm(self) -> Result<Vec<i64>, String> {
        Ok(self.into_iter().collect())
    }
}
impl Norm for Vec<i64> {
    fn norm(self) -> Result<Vec<i64>, String> {
        Ok(self)
    }
}
impl<T: Norm> Norm for Result<T, Bad> {
    fn norm(self) -> Result<Vec<i64>, String> {
        self.map_err(|e| e.0)?.norm()
    }
}

type Model = fn(i64) -> Result<Vec<i64>, String>;

const MAP: Model = |n| s_map(n).norm();
const FILTER: Model = |n| s_filter(n).norm();
const FALLIBLE: Model = |n| s_fallible(n).norm();
const FALLIBLE_FILTER: Model = |n| s_fallible_filter(n).norm();
const FAN_OUT: Model = |n| s_fan_out(n).norm();
const FALLIBLE_FAN_OUT: Model = |n| s_fallible_fan_out(n).norm();

/// Inputs that reach every branch of every function at every position.
const INPUTS: [i64; 16] = [-14, -3, -1, 0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 12, 21, 35];

/// What a flow must produce: outputs, failures and per-step counters.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    outputs: Vec<i64>,
    /// (input index, step name, step index, error)
    failures: Vec<(usize, &'static str, usize, String)>,
    /// (name, calls, out, filtered, failed) per step
    stats: Vec<(&'static str, u64, u64, u64, u64)>,
}

fn model(inputs: &[i64], steps: &[(&'static str, Model)]) -> Expected {
    fn go(e: &mut Expected, steps: &[(&'static str, Model)], input: usize, k: usize, x: i64) {
        let Some(&(name, f)) = steps.get(k) else {
            e.outputs.push(x);
            return;
        };
        e.stats[k].1 += 1;
        match f(x) {
            Err(err) => {
                e.stats[k].4 += 1;
                e.failures.push((input, name, k, err));
            }
            Ok(items) => {
                if items.is_empty() {
                    e.stats[k].3 += 1;
                }
                e.stats[k].2 += items.len() as u64;
                for item in items {
                    go(e, steps, input, k + 1, item);
                }
            }
        }
    }
    let mut e = Expected {
        stats: steps.iter().map(|(n, _)| (*n, 0, 0, 0, 0)).collect(),
        ..Expected::default()
    };
    for (i, &x) in inputs.iter().enumerate() {
        go(&mut e, steps, i, 0, x);
    }
    e
}

fn observed<F: syncflow::flow::FlowDef<Input = i64, Output = i64>>(
    flow: &Flow<F>,
    outputs: Vec<i64>,
    failures: Vec<Failed>,
) -> Expected {
    Expected {
        outputs,
        failures: failures
            .into_iter()
            .map(|f| (f.input, f.step, f.step_index, f.error))
            .collect(),
        stats: flow
            .stats()
            .expect("the default monitor keeps stats")
            .snapshot()
            .into_iter()
            .map(|s| (s.name, s.calls, s.out, s.filtered, s.failed))
            .collect(),
    }
}

/// Runs `flow!(a -> b -> ...)` over [`INPUTS`] and compares everything it
/// produced with the model of the same chain.
macro_rules! check_flow {
    ($($step:ident = $model:expr),+ $(,)?) => {{
        let flow = flow!($($step)->+);
        let steps = [$((stringify!($step), $model)),+];
        let names: Vec<_> = flow.steps().iter().map(|s| s.name).collect();
        assert_eq!(names, steps.iter().map(|s| s.0).collect::<Vec<_>>());
        let done = flow.run_collect(INPUTS).await.expect("no resources needed");
        let expected = model(&INPUTS, &steps);
        assert_eq!(
            observed(&flow, done.outputs, done.failures),
            expected,
            "flow {}",
            flow.name()
        );
        expected
    }};
}

/// Puts a shape at the first, middle and last position of a three-step
/// flow, between map steps.
macro_rules! at_every_position {
    ($($test:ident: $step:ident = $model:expr;)*) => {$(
        #[tokio::test]
        async fn $test() {
            let runs = [
                check_flow!($step = $model, s_map = MAP, s_map = MAP),
                check_flow!(s_map = MAP, $step = $model, s_map = MAP),
                check_flow!(s_map = MAP, s_map = MAP, $step = $model),
            ];
            // Not vacuous: each run produced output, and the fallible
            // shapes failed somewhere.
            for run in &runs {
                assert!(!run.outputs.is_empty());
                if stringify!($step).contains("fallible") {
                    assert!(!run.failures.is_empty());
                }
            }
        }
    )*};
}

at_every_position! {
    map_at_every_position: s_map = MAP;
    filter_at_every_position: s_filter = FILTER;
    fallible_at_every_position: s_fallible = FALLIBLE;
    fallible_filter_at_every_position: s_fallible_filter = FALLIBLE_FILTER;
    fan_out_at_every_position: s_fan_out = FAN_OUT;
    fallible_fan_out_at_every_position: s_fallible_fan_out = FALLIBLE_FAN_OUT;
    async_map_at_every_position: a_map = MAP;
    async_filter_at_every_position: a_filter = FILTER;
    async_fallible_at_every_position: a_fallible = FALLIBLE;
    async_fallible_filter_at_every_position: a_fallible_filter = FALLIBLE_FILTER;
    async_fan_out_at_every_position: a_fan_out = FAN_OUT;
    async_fallible_fan_out_at_every_position: a_fallible_fan_out = FALLIBLE_FAN_OUT;
}

#[tokio::test]
async fn every_shape_in_one_flow_sync_and_async_mixed() {
    let run = check_flow!(
        s_fan_out = FAN_OUT,
        a_fallible_fan_out = FALLIBLE_FAN_OUT,
        s_map = MAP,
        a_filter = FILTER,
        s_fallible_filter = FALLIBLE_FILTER,
        a_fallible = FALLIBLE,
    );
    assert!(!run.outputs.is_empty() && !run.failures.is_empty());
    // Failures came from more than one step.
    let mut failing: Vec<_> = run.failures.iter().map(|f| f.2).collect();
    failing.dedup();
    assert!(failing.len() > 1, "{failing:?}");
}

/// The model itself, checked by hand once, on fan-out: each item goes
/// through the rest of the chain on its own, and a failure of one item
/// stops that item only.
#[tokio::test]
async fn fan_out_feeds_each_item_to_the_rest_of_the_chain() {
    let flow = flow!(s_fan_out -> s_fallible -> s_map);
    // 4 -> [40]; 3 -> [] (filtered); 2 -> [20, 21]; 7 -> [70]; 5 -> [50, 51]
    let done = flow.run_collect([4, 3, 2, 7, 5]).await.unwrap();
    assert_eq!(done.outputs, vec![43, 103]); // 21*2+1, 51*2+1
    let failed = |input, error: &str| Failed {
        input,
        step: "s_fallible",
        step_index: 1,
        error: error.to_string(),
    };
    assert_eq!(
        done.failures,
        vec![
            failed(0, "40 is a multiple of 5"),
            failed(2, "20 is a multiple of 5"),
            failed(3, "70 is a multiple of 5"),
            failed(4, "50 is a multiple of 5"),
        ]
    );
    let stats = flow.stats().unwrap().snapshot();
    let counts: Vec<_> = stats
        .iter()
        .map(|s| (s.name, s.calls, s.out, s.filtered, s.failed))
        .collect();
    assert_eq!(
        counts,
        vec![
            ("s_fan_out", 5, 6, 1, 0),
            ("s_fallible", 6, 2, 0, 4),
            ("s_map", 2, 2, 0, 0),
        ]
    );
}

#[tokio::test]
async fn failures_name_the_step_its_index_and_the_input() {
    let flow = flow!(s_map -> s_fallible_filter -> s_map -> s_fallible_fan_out);
    // -5 -> -4: fails at index 1; 6 -> 7: odd, dropped;
    // 13 -> 14 -> 7 -> 8 -> [8, -8]; 11 -> 12 -> 6 -> 7: fails at index 3.
    let done = flow.run_collect([-5, 6, 13, 11]).await.unwrap();
    assert_eq!(done.outputs, vec![8, -8]);
    assert_eq!(
        done.failures,
        vec![
            Failed {
                input: 0,
                step: "s_fallible_filter",
                step_index: 1,
                error: "-4 is negative".into()
            },
            Failed {
                input: 3,
                step: "s_fallible_fan_out",
                step_index: 3,
                error: "7 is a multiple of 7".into()
            },
        ]
    );
}

#[tokio::test]
async fn the_same_function_twice_is_two_steps() {
    let flow = flow!(s_fallible -> s_fallible);
    let done = flow.run_collect([1, 3, 5]).await.unwrap();
    // 1 -> 2 -> 4; 3 -> 6 -> 12; 5 fails at the first of the two.
    assert_eq!(done.outputs, vec![4, 12]);
    assert_eq!(done.failures[0].step_index, 0);
    let done = flow.run_collect([10]).await.unwrap();
    assert_eq!(done.failures[0].step_index, 0);
    assert_eq!(flow.name(), "s_fallible->s_fallible");
}

#[tokio::test]
async fn user_functions_stay_callable_as_written() {
    assert_eq!(s_map(1), 2);
    assert_eq!(s_filter(3), None);
    assert_eq!(s_fallible(5), Err(Bad("5 is a multiple of 5".into())));
    assert_eq!(s_fallible_filter(4), Ok(Some(2)));
    assert_eq!(s_fan_out(2), vec![20, 21]);
    assert_eq!(s_fallible_fan_out(3), Ok(vec![3, -3]));
    assert_eq!(a_map(1).await, 2);
    assert_eq!(
        a_fallible_fan_out(14).await,
        Err(Bad("14 is a multiple of 7".into()))
    );
    // And usable as plain function values.
    let f: fn(i64) -> i64 = s_map;
    assert_eq!([1, 2].map(f), [2, 3]);
}

/// An async step that awaits really suspends the flow (the flow's future is
/// pending after one poll), and the flow's future can move between threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_steps_suspend_the_flow_and_it_is_send() {
    let flow = flow!(s_map -> a_map -> s_map);
    {
        let mut fut = pin!(flow.run_collect([1]));
        let mut cx = TaskContext::from_waker(Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let done = fut.await.unwrap();
        assert_eq!(done.outputs, vec![4]);
    }
    let sync_only = flow!(s_map -> s_map);
    {
        let mut fut = pin!(sync_only.run_collect([1]));
        let mut cx = TaskContext::from_waker(Waker::noop());
        let Poll::Ready(done) = fut.as_mut().poll(&mut cx) else {
            panic!("a flow of sync steps completes in one poll");
        };
        assert_eq!(done.unwrap().outputs, vec![3]);
    }
    let handle = tokio::spawn(async move { flow.run_collect(0..100).await.unwrap().outputs });
    assert_eq!(handle.await.unwrap(), (3..103).collect::<Vec<_>>());
}

/// `Result<T>` aliases with the error type fixed, as `anyhow::Result` does.
mod aliased {
    use super::*;

    /// An error of its own.
    #[derive(Debug)]
    pub struct MyErr(pub i64);

    impl fmt::Display for MyErr {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "my error on {}", self.0)
        }
    }

    pub type Result<T> = std::result::Result<T, MyErr>;

    #[sync_function(name = "aliased_check")]
    pub fn check(n: i64) -> Result<i64> {
        if n < 0 { Err(MyErr(n)) } else { Ok(n) }
    }

    #[sync_function(name = "aliased_keep")]
    pub fn keep(n: i64) -> Result<Option<i64>> {
        if n == 13 {
            Err(MyErr(n))
        } else {
            Ok((n != 0).then_some(n))
        }
    }

    #[sync_function(name = "aliased_split")]
    pub async fn split(n: i64) -> Result<Vec<i64>> {
        if n == 7 {
            Err(MyErr(n))
        } else {
            Ok(vec![n; 2])
        }
    }
}

#[tokio::test]
async fn result_aliases_are_fallible_shapes() {
    let flow = flow!(aliased::check -> aliased::keep -> aliased::split);
    let shapes: Vec<_> = flow.steps().iter().map(|s| s.shape).collect();
    assert_eq!(
        shapes,
        [
            Shape::Fallible,
            Shape::FallibleFilter,
            Shape::FallibleFanOut
        ]
    );
    let done = flow.run_collect([-1, 0, 13, 7, 2]).await.unwrap();
    assert_eq!(done.outputs, vec![2, 2]);
    let failures: Vec<_> = done
        .failures
        .iter()
        .map(|f| (f.input, f.step, f.error.as_str()))
        .collect();
    assert_eq!(
        failures,
        [
            (0, "aliased_check", "my error on -1"),
            (2, "aliased_keep", "my error on 13"),
            (3, "aliased_split", "my error on 7"),
        ]
    );
    let stats = flow.stats().unwrap().snapshot();
    assert_eq!(stats[1].filtered, 1, "0 is filtered by aliased_keep");
}

#[test]
fn step_info_describes_each_function() {
    let shapes: Vec<(&StepInfo, Shape, bool)> = vec![
        (flow!(s_map).steps()[0], Shape::Map, false),
        (flow!(s_filter).steps()[0], Shape::Filter, false),
        (flow!(s_fallible).steps()[0], Shape::Fallible, false),
        (
            flow!(s_fallible_filter).steps()[0],
            Shape::FallibleFilter,
            false,
        ),
        (flow!(s_fan_out).steps()[0], Shape::FanOut, false),
        (
            flow!(s_fallible_fan_out).steps()[0],
            Shape::FallibleFanOut,
            false,
        ),
        (flow!(a_map).steps()[0], Shape::Map, true),
        (
            flow!(a_fallible_fan_out).steps()[0],
            Shape::FallibleFanOut,
            true,
        ),
    ];
    for (info, shape, is_async) in shapes {
        assert_eq!(info.shape, shape, "{}", info.name);
        assert_eq!(info.is_async, is_async, "{}", info.name);
        assert_eq!(info.input_type(), "i64", "{}", info.name);
        assert_eq!(info.output_type(), "i64", "{}", info.name);
        assert_eq!(info.module, "macros");
        assert!(info.file.ends_with("macros.rs"), "{}", info.file);
    }
    assert_eq!(
        flow!(s_filter).steps()[0].summary(),
        "Filter: drops multiples of 3."
    );
    assert_eq!(flow!(a_map).steps()[0].doc, "");
}
