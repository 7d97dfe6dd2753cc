//! The progress line of `run`: live counts and rates of each flow, and a
//! bar when a flow's source knows how much work is left (a snapshot, a
//! file).
//!
//! Drawn on standard error: redrawn in place every second on a terminal,
//! one line every 10 s otherwise (logs), or as often as `--progress-every`
//! says. The text is made by pure functions ([`bar`], [`flow_part`]) so
//! that it can be tested without a terminal.

use std::future::Future;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::connector::{Phase, SourceStatus, Unit};
use crate::runtime::{Counts, Progress};

/// Cells of the bar between the brackets.
const BAR_CELLS: usize = 20;

/// When and where progress is shown.
#[derive(Debug, Clone, Copy)]
pub(super) struct ProgressOptions {
    /// Redraw in place (standard error is a terminal) or print lines.
    pub(super) tty: bool,
    /// How often; `None`: never.
    pub(super) every: Option<Duration>,
}

impl ProgressOptions {
    /// `--progress-every` if given, else 1 s on a terminal and 10 s
    /// otherwise. `tty`: standard error is a terminal. `shared`: the run
    /// also writes its outputs to that terminal (standard output), where a
    /// redrawn line would garble them: then no progress unless asked for,
    /// and lines, not redraws, when asked for.
    pub(super) fn new(tty: bool, shared: bool, every: Option<Every>) -> Self {
        let every = match every {
            Some(Every::Off) => None,
            Some(Every::Each(d)) => Some(d),
            None if shared => None,
            None => Some(Duration::from_secs(if tty { 1 } else { 10 })),
        };
        ProgressOptions {
            tty: tty && !shared,
            every,
        }
    }
}

/// The value of `--progress-every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Every {
    Off,
    Each(Duration),
}

/// Parses `--progress-every`: a duration (`200ms`, `5s`, `1m`), or `off`/`0`.
pub(super) fn parse_every(s: &str) -> Result<Every, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") || s == "0" {
        return Ok(Every::Off);
    }
    match crate::policy::duration::parse(s) {
        Ok(d) if d.is_zero() => Ok(Every::Off),
        Ok(d) if d < Duration::from_millis(10) => Err(format!(
            "`{s}` is too short for a progress line: give at least 10ms, or `off` to hide it"
        )),
        Ok(d) => Ok(Every::Each(d)),
        Err(e) => Err(format!("{e}; or `off` to hide the progress line")),
    }
}

/// The source's work is measured this often (or at each line, if lines
/// come more often) and its rate smoothed, so that a line every 10 s has a
/// steady ETA from the first line on.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Awaits `run` while showing the progress of `flows` on `err`; returns
/// what `run` returns. On a terminal the line is cleared at the end, so
/// that the summary follows on a clean line.
pub(super) async fn show_while<T>(
    run: impl Future<Output = T>,
    flows: Vec<(String, Progress)>,
    options: ProgressOptions,
    err: &mut dyn Write,
) -> T {
    let Some(every) = options.every else {
        return run.await;
    };
    tokio::pin!(run);
    let sample = every.min(SAMPLE_EVERY);
    // Samples per line (a line every `every`, give or take a sample).
    let per_line = (every.as_secs_f64() / sample.as_secs_f64())
        .round()
        .max(1.0) as u64;
    let mut view = View::new(flows, Instant::now());
    let mut tick = tokio::time::interval(sample);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut samples = 0u64;
    let mut drawn = false;
    loop {
        tokio::select! {
            biased;
            out = &mut run => {
                if drawn {
                    let _ = write!(err, "\r\x1b[2K");
                    let _ = err.flush();
                }
                return out;
            }
            _ = tick.tick() => {
                view.sample(Instant::now());
                samples += 1;
                if !samples.is_multiple_of(per_line) {
                    continue;
                }
                let line = view.line(Instant::now(), options.tty);
                if options.tty {
                    let width = terminal_width().unwrap_or(100);
                    let _ = write!(err, "\r\x1b[2K{}", clip(&line, width.saturating_sub(1)));
                    drawn = true;
                } else {
                    let _ = writeln!(err, "progress: {line}");
                }
                let _ = err.flush();
            }
        }
    }
}

/// What the progress line knows of each flow: the last readings and the
/// smoothed rates.
struct View {
    flows: Vec<Tracked>,
}

struct Tracked {
    name: String,
    progress: Progress,
    /// When the last sample was taken, and the counters then.
    at: Instant,
    counts: Counts,
    /// When the last line was made, and the records read then: the rate
    /// of input shown is over the time between two lines.
    line_at: Instant,
    line_input: u64,
    /// The source's report at the last sample, and the smoothed rate of
    /// its work (rows or bytes per second) in its phase.
    source: Option<SourceStatus>,
    work_rate: Rate,
}

/// A rate smoothed over the last samples.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Rate(Option<f64>);

impl Rate {
    /// Adds the rate of the last interval. Exponential smoothing: steady
    /// ETAs, without hiding a change of pace for long.
    fn add(&mut self, now: f64) {
        self.0 = Some(match self.0 {
            Some(before) => 0.7 * before + 0.3 * now,
            None => now,
        });
    }
}

impl View {
    fn new(flows: Vec<(String, Progress)>, now: Instant) -> Self {
        View {
            flows: flows
                .into_iter()
                .map(|(name, progress)| Tracked {
                    name,
                    progress,
                    at: now,
                    counts: Counts::default(),
                    line_at: now,
                    line_input: 0,
                    source: None,
                    work_rate: Rate::default(),
                })
                .collect(),
        }
    }

    fn sample(&mut self, now: Instant) {
        for flow in &mut self.flows {
            let (counts, source) = (flow.progress.counts(), flow.progress.source());
            flow.sample(now, counts, source);
        }
    }

    /// The line for every flow, ` | `-separated, from the last samples.
    fn line(&mut self, now: Instant, with_bar: bool) -> String {
        let parts: Vec<String> = self
            .flows
            .iter_mut()
            .map(|f| {
                let secs = now.saturating_duration_since(f.line_at).as_secs_f64();
                let input_rate = if secs > 0.0 {
                    f.counts.input.saturating_sub(f.line_input) as f64 / secs
                } else {
                    0.0
                };
                (f.line_at, f.line_input) = (now, f.counts.input);
                let text = flow_part(
                    &f.counts,
                    input_rate,
                    f.source.as_ref(),
                    f.work_rate.0,
                    with_bar,
                );
                format!("{}: {text}", f.name)
            })
            .collect();
        parts.join(" | ")
    }
}

impl Tracked {
    fn sample(&mut self, now: Instant, counts: Counts, source: Option<SourceStatus>) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        self.at = now;
        self.counts = counts;
        // The work's rate starts over with a new phase, or when the work
        // starts over (a snapshot restarted after a lost connection).
        let before = self.source.take();
        match (&before, &source) {
            (Some(b), Some(s)) if (b.phase, b.unit) == (s.phase, s.unit) && s.done >= b.done => {
                self.work_rate.add((s.done - b.done) as f64 / secs);
            }
            _ => self.work_rate = Rate::default(),
        }
        self.source = source;
    }
}

/// One flow's part of the line (without its name): a bar when its source
/// is in a snapshot or backfill with a known total, the live counts
/// otherwise (`streaming, ` first when the source says it follows changes).
pub(super) fn flow_part(
    counts: &Counts,
    input_rate: f64,
    source: Option<&SourceStatus>,
    work_rate: Option<f64>,
    with_bar: bool,
) -> String {
    let failed = counts.failed + counts.malformed;
    let failures = if failed > 0 {
        format!(", {failed} failed")
    } else {
        String::new()
    };
    let live = format!(
        "{} in ({}/s), {} out{failures}",
        group(counts.input),
        group(input_rate.round() as u64),
        group(counts.output)
    );
    let Some(status) = source else {
        return live;
    };
    match status.phase {
        Phase::Snapshot | Phase::Backfill if status.total.is_some() => {
            format!("{}{failures}", bar(status, work_rate, with_bar))
        }
        Phase::Snapshot | Phase::Backfill => format!(
            "{} of {}: {} {}, {live}",
            status.phase,
            status.what,
            amount(status.done, status.unit),
            unit_word(status.unit),
        ),
        Phase::Streaming => format!("streaming, {live}"),
        _ => format!("{}, {live}", status.phase),
    }
}

/// `[########............] 42% 420 000/1 000 000 rows of test.orders, 85 000/s, ETA 7s`:
/// the bar (without it when `with_bar` is off), the share done, the
/// amounts, what they are of, the rate and the time left at that rate.
pub(super) fn bar(status: &SourceStatus, rate: Option<f64>, with_bar: bool) -> String {
    let fraction = status.fraction().unwrap_or(0.0);
    let mut out = String::new();
    if with_bar {
        let filled = ((fraction * BAR_CELLS as f64).floor() as usize).min(BAR_CELLS);
        out.push('[');
        out.extend(std::iter::repeat_n('#', filled));
        out.extend(std::iter::repeat_n('.', BAR_CELLS - filled));
        out.push_str("] ");
    }
    let percent = (fraction * 100.0).floor() as u64;
    out.push_str(&format!("{percent}% "));
    let total = status.total.unwrap_or(0);
    match status.unit {
        Unit::Bytes => out.push_str(&format!(
            "{}/{} of {}",
            bytes(status.done),
            bytes(total),
            status.what
        )),
        _ => out.push_str(&format!(
            "{}/{} {} of {}",
            group(status.done),
            group(total),
            unit_word(status.unit),
            status.what
        )),
    }
    if let Some(rate) = rate {
        out.push_str(&format!(", {}/s", amount(rate.round() as u64, status.unit)));
        let left = total.saturating_sub(status.done);
        if rate >= 0.5 && left > 0 {
            out.push_str(&format!(", ETA {}", eta(left as f64 / rate)));
        }
    }
    out
}

fn unit_word(unit: Unit) -> &'static str {
    match unit {
        Unit::Bytes => "bytes",
        _ => "rows",
    }
}

fn amount(n: u64, unit: Unit) -> String {
    match unit {
        Unit::Bytes => bytes(n),
        _ => group(n),
    }
}

/// `1 234 567`: digits in groups of three.
pub(super) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// `512 B`, `1.5 kB`, `42.0 MB`, `3.2 GB` (decimal units, like file sizes).
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `7s`, `2m05s`, `1h02m`, `3d04h`.
pub(super) fn eta(seconds: f64) -> String {
    let s = seconds.ceil().max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// At most `width` characters of `line` (a redrawn line must not wrap).
fn clip(line: &str, width: usize) -> &str {
    match line.char_indices().nth(width) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// The width of the terminal on standard error.
#[cfg(unix)]
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct it is given,
    // which lives on this stack frame for the whole call.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0).then_some(size.ws_col as usize)
}

/// The width of the terminal on standard error (`COLUMNS`, where there is
/// no ioctl to ask).
#[cfg(not(unix))]
fn terminal_width() -> Option<usize> {
    std::env::var("COLUMNS").ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn status(phase: Phase, done: u64, total: Option<u64>, unit: Unit) -> SourceStatus {
        SourceStatus {
            phase,
            what: Arc::from("test.orders"),
            done,
            total,
            unit,
        }
    }

    #[test]
    fn the_bar_shows_share_amounts_rate_and_eta() {
        let s = status(Phase::Snapshot, 420_000, Some(1_000_000), Unit::Rows);
        assert_eq!(
            bar(&s, Some(85_000.0), true),
            "[########............] 42% 420 000/1 000 000 rows of test.orders, 85 000/s, ETA 7s"
        );
        assert_eq!(
            bar(&s, Some(85_000.0), false),
            "42% 420 000/1 000 000 rows of test.orders, 85 000/s, ETA 7s"
        );
    }

    #[test]
    fn the_bar_without_a_rate_has_no_eta_and_is_full_and_clamped_at_the_end() {
        let s = status(Phase::Snapshot, 0, Some(10), Unit::Rows);
        assert_eq!(
            bar(&s, None, true),
            "[....................] 0% 0/10 rows of test.orders"
        );
        // More rows than the estimate: full, and no ETA (nothing left).
        let s = status(Phase::Snapshot, 12, Some(10), Unit::Rows);
        assert_eq!(
            bar(&s, Some(3.0), true),
            "[####################] 100% 12/10 rows of test.orders, 3/s"
        );
        // A stalled rate gives no ETA rather than an absurd one.
        let s = status(Phase::Snapshot, 5, Some(10), Unit::Rows);
        assert_eq!(
            bar(&s, Some(0.0), false),
            "50% 5/10 rows of test.orders, 0/s"
        );
    }

    #[test]
    fn a_file_backfill_counts_bytes() {
        let s = SourceStatus {
            what: Arc::from("data/orders.jsonl"),
            ..status(Phase::Backfill, 21_000_000, Some(84_000_000), Unit::Bytes)
        };
        assert_eq!(
            bar(&s, Some(12_500_000.0), true),
            "[#####...............] 25% 21.0 MB/84.0 MB of data/orders.jsonl, 12.5 MB/s, ETA 6s"
        );
    }

    #[test]
    fn a_flow_part_is_a_bar_then_live_counts_when_streaming() {
        let counts = Counts {
            input: 1500,
            output: 1400,
            failed: 2,
            malformed: 1,
            ..Counts::default()
        };
        let s = status(Phase::Snapshot, 1500, Some(3000), Unit::Rows);
        assert_eq!(
            flow_part(&counts, 750.0, Some(&s), Some(750.0), false),
            "50% 1 500/3 000 rows of test.orders, 750/s, ETA 2s, 3 failed"
        );
        let s = status(Phase::Streaming, 3000, Some(3000), Unit::Rows);
        assert_eq!(
            flow_part(&counts, 12.4, Some(&s), None, true),
            "streaming, 1 500 in (12/s), 1 400 out, 3 failed"
        );
        // A source that reports nothing: the live counts alone.
        assert_eq!(
            flow_part(&Counts::default(), 0.0, None, None, true),
            "0 in (0/s), 0 out"
        );
        // A bounded phase without a total: how much so far.
        let s = status(Phase::Snapshot, 42, None, Unit::Rows);
        assert_eq!(
            flow_part(&Counts::default(), 0.0, Some(&s), None, true),
            "snapshot of test.orders: 42 rows, 0 in (0/s), 0 out"
        );
        let s = status(Phase::Starting, 0, None, Unit::Rows);
        assert_eq!(
            flow_part(&Counts::default(), 0.0, Some(&s), None, true),
            "starting, 0 in (0/s), 0 out"
        );
    }

    #[test]
    fn numbers_are_grouped_and_sized() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1 000");
        assert_eq!(group(1_234_567), "1 234 567");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1000), "1.0 kB");
        assert_eq!(bytes(999_960), "1.0 MB");
        assert_eq!(bytes(3_200_000_000), "3.2 GB");
        assert_eq!(eta(0.2), "1s");
        assert_eq!(eta(59.0), "59s");
        assert_eq!(eta(125.0), "2m05s");
        assert_eq!(eta(3720.0), "1h02m");
        assert_eq!(eta(100_000.0), "1d03h");
    }

    #[test]
    fn rates_are_smoothed_and_the_work_rate_starts_over_with_a_new_phase() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut view = View::new(vec![("f".into(), Progress::new())], t0);
        let f = &mut view.flows[0];
        let s = |done| Some(status(Phase::Snapshot, done, Some(1000), Unit::Rows));
        let input = |input| Counts {
            input,
            ..Counts::default()
        };
        f.sample(at(1000), input(100), s(100));
        assert_eq!(f.work_rate, Rate(None), "no rate at the first report");
        f.sample(at(2000), input(300), s(300));
        assert_eq!(f.work_rate, Rate(Some(200.0)));
        f.sample(at(2500), input(300), s(400));
        assert_eq!(f.work_rate, Rate(Some(0.7 * 200.0 + 0.3 * 200.0)));
        // The snapshot started over: no rate until the next sample.
        f.sample(at(3000), input(300), s(10));
        assert_eq!(f.work_rate, Rate(None));
        f.sample(at(4000), input(300), s(110));
        assert_eq!(f.work_rate, Rate(Some(100.0)));
        let streaming = Some(status(Phase::Streaming, 110, Some(1000), Unit::Rows));
        f.sample(at(5000), input(300), streaming);
        assert_eq!(f.work_rate, Rate(None));
        // The rate of input is over the time since the last line.
        assert_eq!(
            view.line(at(5000), true),
            "f: streaming, 300 in (60/s), 0 out"
        );
        view.flows[0].sample(at(6000), input(400), None);
        assert_eq!(view.line(at(7000), true), "f: 400 in (50/s), 0 out");
    }

    #[test]
    fn progress_every_takes_durations_and_off() {
        assert_eq!(
            parse_every("200ms"),
            Ok(Every::Each(Duration::from_millis(200)))
        );
        assert_eq!(parse_every("off"), Ok(Every::Off));
        assert_eq!(parse_every("0"), Ok(Every::Off));
        assert!(parse_every("1ms").unwrap_err().contains("at least 10ms"));
        assert!(parse_every("5").unwrap_err().contains("off"));
        let o = ProgressOptions::new(false, false, None);
        assert_eq!((o.tty, o.every), (false, Some(Duration::from_secs(10))));
        let o = ProgressOptions::new(true, false, None);
        assert_eq!((o.tty, o.every), (true, Some(Duration::from_secs(1))));
        let off = ProgressOptions::new(true, false, Some(Every::Off));
        assert_eq!(off.every, None);
        // Outputs on the same terminal: nothing, unless asked, then lines.
        assert_eq!(ProgressOptions::new(true, true, None).every, None);
        let asked = ProgressOptions::new(true, true, Some(Every::Each(Duration::from_secs(5))));
        assert_eq!(
            (asked.tty, asked.every),
            (false, Some(Duration::from_secs(5)))
        );
    }

    #[test]
    fn clip_cuts_at_characters() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("a→bc", 2), "a→");
    }
}
