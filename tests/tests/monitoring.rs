//! Monitoring: the default per-step metrics, a monitor of one's own on every
//! step, and flows without any monitor.

use std::fmt;

use syncflow::monitor::StepStats;
use syncflow::prelude::*;
use syncflow_tests::{Event, Recorder};

#[derive(Debug)]
pub struct Odd(u32);

impl fmt::Display for Odd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is odd", self.0)
    }
}

#[sync_function]
fn split(n: u32) -> Vec<u32> {
    vec![n; (n % 3) as usize]
}

#[sync_function]
fn even(n: u32) -> Result<u32, Odd> {
    if n.is_multiple_of(2) {
        Ok(n / 2)
    } else {
        Err(Odd(n))
    }
}

#[sync_function]
async fn nonzero(n: u32) -> Option<u32> {
    (n != 0).then_some(n)
}

fn counts(stats: &[StepStats]) -> Vec<(&'static str, u64, u64, u64, u64)> {
    stats
        .iter()
        .map(|s| (s.name, s.calls, s.out, s.filtered, s.failed))
        .collect()
}

#[tokio::test]
async fn default_metrics_count_each_step() {
    let flow = flow!(split -> even -> nonzero);
    // 2 -> [2, 2] -> 1, 1; 3 -> [] filtered; 1 -> [1] -> odd; 4 -> [4] -> 2
    let done = flow.run_collect([2, 3, 1, 4]).await.unwrap();
    assert_eq!(done.outputs, [1, 1, 2]);
    let stats = flow.stats().unwrap();
    assert_eq!(stats.flow, "split->even->nonzero");
    let snapshot = stats.snapshot();
    assert_eq!(
        counts(&snapshot),
        [
            ("split", 4, 4, 1, 0),
            ("even", 4, 3, 0, 1),
            ("nonzero", 3, 3, 0, 0),
        ]
    );
    // The first message is timed at every step it reaches: one call of
    // `split`, and two each of `even` and `nonzero` (it fans out to two).
    let sampled: Vec<_> = snapshot.iter().map(|s| (s.name, s.sampled)).collect();
    assert_eq!(sampled, [("split", 1), ("even", 2), ("nonzero", 2)]);
    for s in &snapshot {
        assert!(s.p50_ns >= 1 && s.p99_ns >= s.p50_ns, "{s:?}");
    }
    // A second run adds to the same totals.
    flow.run_collect([0]).await.unwrap();
    assert_eq!(flow.stats().unwrap().snapshot()[0].calls, 5);
    assert_eq!(flow.stats().unwrap().snapshot()[0].filtered, 2);
}

#[tokio::test]
async fn a_custom_monitor_sees_every_step() {
    let recorder = Recorder::new();
    let flow = flow!(split -> even -> nonzero).with_monitor(recorder.clone());
    let done = flow.run_collect([2, 1, 3]).await.unwrap();
    assert_eq!(done.outputs, [1, 1]);
    use Event::*;
    assert_eq!(
        recorder.events(),
        [
            // 2 -> [2, 2]: each item through the rest of the flow.
            Enter("split", 0, 1),
            Exit("split", 0, 1),
            Enter("even", 1, 2),
            Exit("even", 1, 2),
            Enter("nonzero", 2, 3),
            Exit("nonzero", 2, 3),
            Emitted("nonzero", 2, 1),
            Emitted("even", 1, 1),
            Enter("even", 1, 4),
            Exit("even", 1, 4),
            Enter("nonzero", 2, 5),
            Exit("nonzero", 2, 5),
            Emitted("nonzero", 2, 1),
            Emitted("even", 1, 1),
            Emitted("split", 0, 2),
            // 1 -> [1] -> odd
            Enter("split", 0, 6),
            Exit("split", 0, 6),
            Enter("even", 1, 7),
            Exit("even", 1, 7),
            Failed("even", 1, "1 is odd".into()),
            Emitted("split", 0, 1),
            // 3 -> []
            Enter("split", 0, 8),
            Exit("split", 0, 8),
            Emitted("split", 0, 0),
            // end of the batch
            Flush,
        ]
    );
    // The default metrics still count next to it.
    assert_eq!(
        counts(&flow.stats().unwrap().snapshot()),
        [
            ("split", 3, 3, 1, 0),
            ("even", 3, 2, 0, 1),
            ("nonzero", 2, 2, 0, 0),
        ]
    );
}

#[tokio::test]
async fn monitors_stack_and_can_be_removed() {
    let first = Recorder::new();
    let second = Recorder::new();
    let flow = flow!(even)
        .with_monitor(first.clone())
        .with_monitor(second.clone());
    flow.run_collect([3]).await.unwrap();
    assert_eq!(first.events(), second.events());
    assert!(
        first
            .events()
            .contains(&Event::Failed("even", 0, "3 is odd".into()))
    );

    let flow = flow!(split -> even).without_monitoring();
    assert!(flow.stats().is_none());
    let done = flow.run_collect([2, 1]).await.unwrap();
    assert_eq!(done.outputs, [1, 1]);
    assert_eq!(done.failures.len(), 1);

    // Dropping monitoring also drops monitors attached before.
    let recorder = Recorder::new();
    let flow = flow!(even)
        .with_monitor(recorder.clone())
        .without_monitoring();
    flow.run_collect([2]).await.unwrap();
    assert!(recorder.events().is_empty());
}

#[tokio::test]
async fn flow_names_and_steps() {
    let flow = flow!(split -> even);
    assert_eq!(flow.name(), "split->even");
    let named = flow!(name = "halves", split -> even);
    assert_eq!(named.name(), "halves");
    assert_eq!(named.stats().unwrap().flow, "halves");
    let steps: Vec<_> = named.steps().iter().map(|s| s.name).collect();
    assert_eq!(steps, ["split", "even"]);
    let debug = format!("{named:?}");
    assert!(
        debug.contains("halves") && debug.contains("even"),
        "{debug}"
    );
}
