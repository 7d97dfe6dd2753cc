//! Monitoring: one [`Monitor`] watches every step of a flow.
//!
//! `flow!` calls the monitor's hooks around each step; the hooks are generic
//! (no `dyn`), so a flow with [`NoMonitor`] compiles to the bare calls. The
//! default monitor, [`Metrics`], counts messages in / out / filtered / failed
//! per step in plain per-worker integers, samples latency on one call in
//! [`Metrics::SAMPLE_EVERY`], and publishes to shared atomics once per batch.
//! A user's own monitor is written once and attached to every step with
//! `Flow::with_monitor`; it runs next to the default one.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::function::{Shape, StepInfo};

/// Which step of which flow a hook is about.
#[derive(Debug, Clone, Copy)]
pub struct StepRef {
    /// Position of the step in the flow, from 0.
    pub index: usize,
    /// The step's static description.
    pub info: &'static StepInfo,
}

/// Watches the steps of a flow. Write one, attach it to any flow.
///
/// Each worker of a running flow owns its own monitor, made with
/// [`Monitor::fork`], so hooks take `&mut self` and need no locking.
/// Hooks are called on the message path: keep them to a few nanoseconds,
/// and do slow work (exporting, logging) in [`Monitor::flush`], which is
/// called once per batch.
pub trait Monitor: Send + 'static {
    /// What [`Monitor::enter`] hands to [`Monitor::exit`] (e.g. a start time).
    type Timer: Send;
    /// Called once per message, before its first step. Returns whether
    /// [`Monitor::enter`] and [`Monitor::exit`] are called around the steps
    /// of this message: a monitor that times one message in N returns
    /// `true` for those only, and the other messages run without the
    /// timing hooks. `emitted` and `failed` are always called.
    #[inline(always)]
    fn begin(&mut self) -> bool {
        true
    }
    /// Called before a step is called (for messages [`Monitor::begin`] chose).
    fn enter(&mut self, step: StepRef) -> Self::Timer;
    /// Called when the step's call returned, successfully or not (for
    /// messages [`Monitor::begin`] chose).
    fn exit(&mut self, step: StepRef, timer: Self::Timer);
    /// Called after a successful call with the number of messages it emitted
    /// (0 means the message was filtered out).
    fn emitted(&mut self, step: StepRef, items: usize);
    /// Called when the step failed for the current message.
    fn failed(&mut self, step: StepRef, error: &dyn fmt::Display);
    /// Called once at the end of each batch (and when a worker stops).
    fn flush(&mut self) {}
    /// A monitor for one more worker of the same flow.
    fn fork(&self) -> Self
    where
        Self: Sized;
}

/// The monitor that watches nothing and costs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMonitor;

impl Monitor for NoMonitor {
    type Timer = ();
    #[inline(always)]
    fn begin(&mut self) -> bool {
        false
    }
    #[inline(always)]
    fn enter(&mut self, _: StepRef) {}
    #[inline(always)]
    fn exit(&mut self, _: StepRef, _: ()) {}
    #[inline(always)]
    fn emitted(&mut self, _: StepRef, _: usize) {}
    #[inline(always)]
    fn failed(&mut self, _: StepRef, _: &dyn fmt::Display) {}
    fn fork(&self) -> Self {
        NoMonitor
    }
}

/// Two monitors side by side (the default metrics and a user's monitor).
impl<A: Monitor, B: Monitor> Monitor for (A, B) {
    type Timer = (A::Timer, B::Timer);
    #[inline(always)]
    fn begin(&mut self) -> bool {
        let a = self.0.begin();
        let b = self.1.begin();
        a | b
    }
    #[inline(always)]
    fn enter(&mut self, step: StepRef) -> Self::Timer {
        (self.0.enter(step), self.1.enter(step))
    }
    #[inline(always)]
    fn exit(&mut self, step: StepRef, timer: Self::Timer) {
        self.0.exit(step, timer.0);
        self.1.exit(step, timer.1);
    }
    #[inline(always)]
    fn emitted(&mut self, step: StepRef, items: usize) {
        self.0.emitted(step, items);
        self.1.emitted(step, items);
    }
    #[inline(always)]
    fn failed(&mut self, step: StepRef, error: &dyn fmt::Display) {
        self.0.failed(step, error);
        self.1.failed(step, error);
    }
    fn flush(&mut self) {
        self.0.flush();
        self.1.flush();
    }
    fn fork(&self) -> Self {
        (self.0.fork(), self.1.fork())
    }
}

/// Number of latency buckets: bucket `b` holds durations in `[2^(b-1), 2^b)` ns.
const BUCKETS: usize = 40;

/// Shared, per-step totals of one flow, published by every worker.
#[derive(Debug)]
pub struct StepTotals {
    /// The step.
    pub info: &'static StepInfo,
    calls: AtomicU64,
    out: AtomicU64,
    filtered: AtomicU64,
    failed: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

/// A point-in-time copy of one step's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStats {
    /// Registered name of the step.
    pub name: &'static str,
    /// Messages the step was called with.
    pub calls: u64,
    /// Messages the step emitted.
    pub out: u64,
    /// Calls that emitted nothing (filtered out).
    pub filtered: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Number of calls whose latency was sampled.
    pub sampled: u64,
    /// Median latency of the sampled calls, in nanoseconds (bucket upper bound).
    pub p50_ns: u64,
    /// 99th percentile latency of the sampled calls, in nanoseconds (bucket upper bound).
    pub p99_ns: u64,
}

/// Per-step totals of a flow, shared by all workers; read it any time.
#[derive(Debug)]
pub struct FlowStats {
    /// The flow's name.
    pub flow: &'static str,
    steps: Vec<StepTotals>,
}

impl FlowStats {
    fn new(flow: &'static str, steps: &[&'static StepInfo]) -> Self {
        FlowStats {
            flow,
            steps: steps
                .iter()
                .map(|info| StepTotals {
                    info,
                    calls: AtomicU64::new(0),
                    out: AtomicU64::new(0),
                    filtered: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    latency: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
        }
    }

    /// A copy of every step's totals, in flow order.
    pub fn snapshot(&self) -> Vec<StepStats> {
        self.steps
            .iter()
            .map(|s| {
                let hist: Vec<u64> = s.latency.iter().map(|b| b.load(Relaxed)).collect();
                let sampled = hist.iter().sum();
                StepStats {
                    name: s.info.name,
                    calls: s.calls.load(Relaxed),
                    out: s.out.load(Relaxed),
                    filtered: s.filtered.load(Relaxed),
                    failed: s.failed.load(Relaxed),
                    sampled,
                    p50_ns: quantile(&hist, sampled, 0.50),
                    p99_ns: quantile(&hist, sampled, 0.99),
                }
            })
            .collect()
    }
}

fn quantile(hist: &[u64], total: u64, q: f64) -> u64 {
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (b, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return 1u64 << b;
        }
    }
    1u64 << (BUCKETS - 1)
}

/// One step's counts in one worker, between two flushes. Calls are not
/// counted on the message path: step 0 is called once per message
/// ([`Monitor::begin`] counts those), and step `k` once per message that
/// step `k - 1` emitted. `out` is counted only for fan-out steps; for the
/// others it is derived at flush from calls, filtered and failed.
#[derive(Debug, Clone, Copy, Default)]
struct Local {
    out: u64,
    filtered: u64,
    failed: u64,
}

/// Steps whose counters live in a fixed-size array: generated code indexes
/// them with constants, which then need no bounds check.
const INLINE_STEPS: usize = 32;

/// Per-step counters of one worker.
#[derive(Debug, Clone)]
struct Counts {
    head: Box<[Local; INLINE_STEPS]>,
    tail: Vec<Local>,
    len: usize,
}

impl Counts {
    fn new(len: usize) -> Self {
        Counts {
            head: Box::new([Local::default(); INLINE_STEPS]),
            tail: vec![Local::default(); len.saturating_sub(INLINE_STEPS)],
            len,
        }
    }

    #[inline(always)]
    fn get(&mut self, step: usize) -> Option<&mut Local> {
        if step < INLINE_STEPS {
            Some(&mut self.head[step])
        } else {
            self.tail.get_mut(step - INLINE_STEPS)
        }
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = &mut Local> {
        self.head
            .iter_mut()
            .chain(self.tail.iter_mut())
            .take(self.len)
    }
}

/// The default monitor: per-step counters and sampled latency.
///
/// Counting is done in plain integers owned by the worker and published to
/// the shared [`FlowStats`] at [`Monitor::flush`]; only one call in
/// [`Metrics::SAMPLE_EVERY`] reads the clock.
#[derive(Debug)]
pub struct Metrics {
    shared: Arc<FlowStats>,
    local: Counts,
    samples: Vec<[u64; BUCKETS]>,
    /// Messages to go until the next timed one (1: the next message).
    until_sample: u64,
    /// Messages begun since the last flush (the calls of step 0).
    messages: u64,
    /// Whether the current message's steps are being timed.
    sampling: bool,
}

impl Metrics {
    /// One message in this many has the latency of each of its steps
    /// measured (the first message of a worker always is).
    pub const SAMPLE_EVERY: u64 = 256;

    /// Metrics for a flow with the given steps.
    pub fn new(flow: &'static str, steps: &[&'static StepInfo]) -> Self {
        Metrics {
            shared: Arc::new(FlowStats::new(flow, steps)),
            local: Counts::new(steps.len()),
            samples: vec![[0; BUCKETS]; steps.len()],
            until_sample: 1,
            messages: 0,
            sampling: false,
        }
    }

    /// The shared totals (published at each flush).
    pub fn stats(&self) -> Arc<FlowStats> {
        self.shared.clone()
    }
}

/// Reads the clock for a sampled message: kept out of line so that the
/// message path stays small.
#[cold]
#[inline(never)]
fn start_sample() -> Option<Instant> {
    Some(Instant::now())
}

impl Metrics {
    #[cold]
    #[inline(never)]
    fn record_sample(&mut self, step: usize, start: Instant) {
        let ns = start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        let bucket = (64 - ns.leading_zeros() as usize).min(BUCKETS - 1);
        if let Some(samples) = self.samples.get_mut(step) {
            samples[bucket] += 1;
        }
    }
}

/// Whether a step of this shape can emit more than one message per call,
/// so that [`Metrics`] has to count what it emitted.
fn counts_out(shape: Shape) -> bool {
    matches!(shape, Shape::FanOut | Shape::FallibleFanOut)
}

impl Monitor for Metrics {
    type Timer = Option<Instant>;

    #[inline(always)]
    fn begin(&mut self) -> bool {
        self.messages += 1;
        self.until_sample -= 1;
        self.sampling = self.until_sample == 0;
        if self.sampling {
            self.until_sample = Self::SAMPLE_EVERY;
        }
        self.sampling
    }

    #[inline(always)]
    fn enter(&mut self, _: StepRef) -> Option<Instant> {
        // Also called for unsampled messages when another monitor beside
        // this one asked for timing.
        if self.sampling { start_sample() } else { None }
    }

    #[inline(always)]
    fn exit(&mut self, step: StepRef, timer: Option<Instant>) {
        if let Some(start) = timer {
            self.record_sample(step.index, start);
        }
    }

    #[inline(always)]
    fn emitted(&mut self, step: StepRef, items: usize) {
        // Only what cannot be derived is counted: a step's calls are known
        // (see `flush`), so a step that emits at most one message needs
        // only its filtered count (`out = calls - filtered - failed`), and
        // a message that passes a map or fallible map costs nothing here.
        // `step.info` is a constant, so the match folds away.
        match step.info.shape {
            Shape::Map | Shape::Fallible => {}
            Shape::Filter | Shape::FallibleFilter => {
                if items == 0
                    && let Some(local) = self.local.get(step.index)
                {
                    local.filtered += 1;
                }
            }
            Shape::FanOut | Shape::FallibleFanOut => {
                if let Some(local) = self.local.get(step.index) {
                    if items == 0 {
                        local.filtered += 1;
                    } else {
                        local.out += items as u64;
                    }
                }
            }
        }
    }

    #[inline(always)]
    fn failed(&mut self, step: StepRef, _: &dyn fmt::Display) {
        if let Some(local) = self.local.get(step.index) {
            local.failed += 1;
        }
    }

    fn flush(&mut self) {
        // Calls of step k: the messages begun for step 0, else what step k-1 emitted.
        let mut calls = std::mem::take(&mut self.messages);
        for ((local, samples), total) in self
            .local
            .iter_mut()
            .zip(self.samples.iter_mut())
            .zip(self.shared.steps.iter())
        {
            let mut l = std::mem::take(local);
            if !counts_out(total.info.shape) {
                // At most one message out per call: what was not filtered
                // or failed went on.
                l.out = calls.saturating_sub(l.filtered + l.failed);
            }
            let step_calls = std::mem::replace(&mut calls, l.out);
            for (counter, n) in [
                (&total.calls, step_calls),
                (&total.out, l.out),
                (&total.filtered, l.filtered),
                (&total.failed, l.failed),
            ] {
                if n != 0 {
                    counter.fetch_add(n, Relaxed);
                }
            }
            for (b, n) in samples.iter_mut().enumerate() {
                if *n != 0 {
                    total.latency[b].fetch_add(std::mem::take(n), Relaxed);
                }
            }
            if tracing::enabled!(tracing::Level::TRACE) && step_calls != 0 {
                tracing::trace!(
                    flow = self.shared.flow,
                    step = total.info.name,
                    calls = step_calls,
                    out = l.out,
                    filtered = l.filtered,
                    failed = l.failed,
                    "step totals for batch"
                );
            }
        }
    }

    fn fork(&self) -> Self {
        Metrics {
            shared: self.shared.clone(),
            local: Counts::new(self.local.len),
            samples: vec![[0; BUCKETS]; self.samples.len()],
            until_sample: 1,
            messages: 0,
            sampling: false,
        }
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static INFO: StepInfo = StepInfo {
        name: "step",
        fn_name: "step",
        module: "tests",
        doc: "",
        file: file!(),
        line: line!(),
        is_async: false,
        shape: Shape::FanOut,
        input: || "u32",
        output: || "u32",
    };

    #[test]
    fn counts_steps_beyond_the_inline_array() {
        let steps = vec![&INFO; INLINE_STEPS + 8];
        let mut m = Metrics::new("long", &steps);
        assert!(m.begin(), "the first message is timed");
        for index in [0, INLINE_STEPS - 1, INLINE_STEPS, INLINE_STEPS + 7] {
            let step = StepRef { index, info: &INFO };
            m.emitted(step, 2);
            m.emitted(step, 0);
            m.failed(step, &"boom");
        }
        m.flush();
        let stats = m.stats().snapshot();
        assert_eq!(stats.len(), INLINE_STEPS + 8);
        for index in [0, INLINE_STEPS - 1, INLINE_STEPS, INLINE_STEPS + 7] {
            let s = &stats[index];
            assert_eq!((s.out, s.filtered, s.failed), (2, 1, 1), "step {index}");
        }
        assert_eq!(stats[1].out, 0);
        // Calls: one message entered step 0; step k was called once per
        // message step k-1 emitted.
        assert_eq!(stats[0].calls, 1);
        assert_eq!(stats[INLINE_STEPS].calls, 2);
        assert_eq!(stats[INLINE_STEPS + 1].calls, 2);
    }

    #[test]
    fn derives_out_of_single_output_steps() {
        static MAP: StepInfo = StepInfo {
            shape: Shape::Map,
            ..INFO
        };
        static FILTER: StepInfo = StepInfo {
            shape: Shape::Filter,
            ..INFO
        };
        static FALLIBLE: StepInfo = StepInfo {
            shape: Shape::Fallible,
            ..INFO
        };
        static FAN: StepInfo = StepInfo {
            shape: Shape::FanOut,
            ..INFO
        };
        let steps = [&MAP, &FILTER, &FALLIBLE, &FAN, &MAP];
        let mut m = Metrics::new("derived", &steps);
        let at = |index| StepRef {
            index,
            info: steps[index],
        };
        // 10 messages: all pass the map; 3 are filtered, 2 fail, the other 5
        // fan out into 2 each, of which the last map sees 10.
        for i in 0..10 {
            m.begin();
            m.emitted(at(0), 1);
            if i < 3 {
                m.emitted(at(1), 0);
                continue;
            }
            m.emitted(at(1), 1);
            if i < 5 {
                m.failed(at(2), &"boom");
                continue;
            }
            m.emitted(at(2), 1);
            m.emitted(at(3), 2);
            m.emitted(at(4), 1);
            m.emitted(at(4), 1);
        }
        m.flush();
        let got: Vec<_> = m
            .stats()
            .snapshot()
            .iter()
            .map(|s| (s.calls, s.out, s.filtered, s.failed))
            .collect();
        assert_eq!(
            got,
            [
                (10, 10, 0, 0),
                (10, 7, 3, 0),
                (7, 5, 0, 2),
                (5, 10, 0, 0),
                (10, 10, 0, 0),
            ]
        );
    }

    #[test]
    fn one_message_in_sample_every_is_timed() {
        let mut m = Metrics::new("t", &[&INFO]);
        let timed = (0..3 * Metrics::SAMPLE_EVERY).filter(|_| m.begin()).count();
        assert_eq!(timed, 3);
    }
}
