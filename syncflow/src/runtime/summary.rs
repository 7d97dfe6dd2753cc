//! What a run did: [`RunSummary`].

use std::fmt;
use std::time::Duration;

use super::StopReason;
use crate::monitor::StepStats;

/// The totals of a finished run; `Display` prints them as a table.
///
/// For flows without fan-out, `input = output + filtered + failed + malformed`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunSummary {
    /// The flow's name.
    pub flow: String,
    /// The source's name.
    pub source: String,
    /// Why the run ended.
    pub stop: StopReason,
    /// Records read from the source (malformed ones included).
    pub input: u64,
    /// Messages emitted by the flow (and written to every sink).
    pub output: u64,
    /// Input messages that produced no output and no failure.
    pub filtered: u64,
    /// Input messages for which a step failed.
    pub failed: u64,
    /// Records that could not be decoded into the flow's input type.
    pub malformed: u64,
    /// Entries written to the dead-letter output (0 without one).
    pub dead_lettered: u64,
    /// Source batches acknowledged (their position committed).
    pub batches: u64,
    /// Records processed by each worker.
    pub workers: Vec<u64>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Per-step counters (empty when the flow runs without monitoring).
    pub steps: Vec<StepStats>,
    /// What the policies of each step that has some did (flows from flow
    /// files; empty otherwise).
    pub policies: Vec<(String, crate::policy::PolicyCounts)>,
}

impl RunSummary {
    /// Input records per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.input as f64 / secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.stop {
            StopReason::EndOfInput => "end of input",
            StopReason::Shutdown => "stopped on request (in-flight batches finished)",
            StopReason::Failed => "stopped by an error",
        };
        writeln!(f, "flow `{}` from `{}`: {why}", self.flow, self.source)?;
        let row = |f: &mut fmt::Formatter<'_>, label: &str, n: u64, note: &str| {
            writeln!(
                f,
                "  {label:<10} {n:>12}{}",
                if note.is_empty() {
                    String::new()
                } else {
                    format!("  {note}")
                }
            )
        };
        row(f, "in", self.input, "")?;
        row(f, "out", self.output, "")?;
        row(f, "filtered", self.filtered, "")?;
        let dl = |n: u64| {
            if n == 0 {
                String::new()
            } else if self.dead_lettered > 0 {
                "dead-lettered".to_string()
            } else {
                "logged (no dead-letter output configured)".to_string()
            }
        };
        row(f, "failed", self.failed, &dl(self.failed))?;
        row(f, "malformed", self.malformed, &dl(self.malformed))?;
        row(
            f,
            "committed",
            self.batches,
            "source batches whose position was committed (a restart resumes after them)",
        )?;
        writeln!(
            f,
            "  {:<10} {:>12}",
            "elapsed",
            format_duration(self.elapsed)
        )?;
        writeln!(f, "  {:<10} {:>12.0} msg/s", "rate", self.rate())?;
        if self.workers.len() > 1 {
            let per: Vec<String> = self.workers.iter().map(u64::to_string).collect();
            writeln!(
                f,
                "  {:<10} {:>12}  ({})",
                "workers",
                self.workers.len(),
                per.join(" / ")
            )?;
        }
        if !self.steps.is_empty() {
            let width = self
                .steps
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            writeln!(f)?;
            writeln!(
                f,
                "  {:>2} {:<width$} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
                "#", "step", "calls", "out", "filtered", "failed", "p50", "p99"
            )?;
            for (i, s) in self.steps.iter().enumerate() {
                let (p50, p99) = if s.sampled > 0 {
                    (format_ns(s.p50_ns), format_ns(s.p99_ns))
                } else {
                    ("-".to_string(), "-".to_string())
                };
                writeln!(
                    f,
                    "  {:>2} {:<width$} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
                    i, s.name, s.calls, s.out, s.filtered, s.failed, p50, p99
                )?;
            }
        }
        if !self.policies.is_empty() {
            let width = self
                .policies
                .iter()
                .map(|(name, _)| name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            writeln!(f)?;
            writeln!(
                f,
                "     {:<width$} {:>10} {:>10} {:>10} {:>14}",
                "policies", "retries", "gave up", "timeouts", "rate waits"
            )?;
            for (name, p) in &self.policies {
                writeln!(
                    f,
                    "     {:<width$} {:>10} {:>10} {:>10} {:>14}",
                    name,
                    p.retries,
                    p.gave_up,
                    p.timeouts,
                    format!("{} ({})", p.rate_limited, format_ns(p.rate_limited_ns))
                )?;
            }
        }
        Ok(())
    }
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else {
        format!("{:.1} ms", secs * 1000.0)
    }
}

fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} µs", ns as f64 / 1e3),
        _ => format!("{:.1} ms", ns as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_a_readable_table() {
        let s = RunSummary {
            policies: Vec::new(),
            flow: "orders".into(),
            source: "in.jsonl".into(),
            stop: StopReason::EndOfInput,
            input: 10,
            output: 7,
            filtered: 1,
            failed: 1,
            malformed: 1,
            dead_lettered: 2,
            batches: 1,
            workers: vec![6, 4],
            elapsed: Duration::from_millis(500),
            steps: vec![StepStats {
                name: "parse",
                calls: 9,
                out: 8,
                filtered: 0,
                failed: 1,
                sampled: 1,
                p50_ns: 256,
                p99_ns: 2048,
            }],
        };
        let text = s.to_string();
        assert!(
            text.starts_with("flow `orders` from `in.jsonl`: end of input\n"),
            "{text}"
        );
        assert!(text.contains("  in                   10\n"), "{text}");
        assert!(
            text.contains("failed                1  dead-lettered"),
            "{text}"
        );
        assert!(text.contains("20 msg/s"), "{text}");
        assert!(text.contains("(6 / 4)"), "{text}");
        assert!(text.contains("parse"), "{text}");
        assert!(text.contains("2.0 µs"), "{text}");
    }
}
