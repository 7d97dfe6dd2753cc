//! Every W2 and W1 variant, interleaved over several rounds; prints the
//! median time per message and the median of the per-round ratios to the
//! hand-written baseline, with PASS/FAIL against the targets.
//!
//! ```text
//! cargo bench -p syncflow --bench compare                 # timings (~1 min)
//! cargo bench -p syncflow --bench compare -- --quick      # fewer rounds
//! cargo bench -p syncflow --bench compare -- --callgrind  # instructions per message
//! cargo bench -p syncflow --bench compare -- --w1         # W1 only
//! ```
//!
//! W1 rows also give the CPU time of the whole process (user + system, all
//! threads) per line and its ratio to the baseline's: the runtime runs its
//! reader, worker and sink on several threads, so its wall-clock time can
//! be below its CPU time.
//!
//! `--callgrind` re-runs this binary under `valgrind --tool=callgrind` once
//! per variant, collecting only inside that variant's `#[inline(never)]`
//! batch function (`--toggle-collect`), and divides by the messages it saw:
//! the stable figure on a noisy machine. Exit status 1 if a target is missed
//! (timings only; callgrind figures are informative).

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{w1, w2};

/// Batches of [`w2::BATCH`] orders per W2 measurement.
const W2_BATCHES: usize = 64;
/// Lines of W1 input.
const W1_LINES: u64 = 100_000;

struct Opts {
    rounds: usize,
    callgrind: bool,
    /// W1 only.
    w1_only: bool,
    /// Lines of W1 input for `--only` (default [`CG_W1_LINES`]).
    lines: u64,
    /// Internal: run one variant for callgrind (`w2:<steps>:<kind>` or `w1:<kind>`).
    only: Option<String>,
}

fn opts() -> Opts {
    let mut o = Opts {
        rounds: 21,
        callgrind: false,
        w1_only: false,
        lines: CG_W1_LINES,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.rounds = 7,
            "--rounds" => {
                o.rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds takes a number")
            }
            "--callgrind" => o.callgrind = true,
            "--w1" => o.w1_only = true,
            "--only" => o.only = args.next(),
            "--lines" => {
                o.lines = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--lines takes a number")
            }
            // Passed by `cargo bench`; filters are not supported.
            _ => {}
        }
    }
    o
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One row of the report.
struct Row {
    workload: String,
    label: &'static str,
    /// Median time per message, ns.
    ns: f64,
    /// Median of per-round (variant / baseline) time ratios.
    ratio: f64,
    /// `Some((bound, is_upper_bound_on_time))`.
    target: Option<(f64, bool)>,
    /// W1: median CPU time per message (ns) and median per-round CPU ratio.
    cpu: Option<(f64, f64)>,
}

impl Row {
    fn pass(&self) -> Option<bool> {
        self.target.map(|(bound, time)| {
            if time {
                self.ratio <= bound
            } else {
                1.0 / self.ratio >= bound
            }
        })
    }
}

fn time_w2<F5, F12>(
    chains: &mut w2::Chains<F5, F12>,
    steps: usize,
    kind: w2::Kind,
    template: &[w2::Order],
) -> Duration
where
    F5: syncflow::flow::FlowDef<Input = w2::Order, Output = w2::Order>,
    F12: syncflow::flow::FlowDef<Input = w2::Order, Output = w2::Order>,
{
    let mut total = Duration::ZERO;
    for _ in 0..W2_BATCHES {
        let batch = black_box(template.to_vec());
        let mut sink = w2::Sink::new();
        let start = Instant::now();
        chains.run(steps, kind, batch, &mut sink);
        total += start.elapsed();
        black_box(&sink);
    }
    total
}

/// CPU time of the whole process so far (user + system, every thread).
fn cpu_time() -> Duration {
    // SAFETY: `getrusage` only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn run_timings(rounds: usize, w1_only: bool) -> Vec<Row> {
    let mut rows = Vec::new();
    if !w1_only {
        run_w2(rounds, &mut rows);
    }
    run_w1(rounds, &mut rows);
    rows
}

fn run_w2(rounds: usize, rows: &mut Vec<Row>) {
    let mut chains = w2::chains();
    let template = w2::orders(w2::BATCH, 1);
    let messages = (W2_BATCHES * w2::BATCH) as f64;
    for steps in [5, 12] {
        let kinds = w2::Kind::ALL;
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
        // Warm up.
        for kind in kinds {
            time_w2(&mut chains, steps, kind, &template);
        }
        for round in 0..rounds {
            let mut this = [0.0; 4];
            // Rotate the order so that no variant always runs first.
            for j in 0..kinds.len() {
                let i = (j + round) % kinds.len();
                this[i] = time_w2(&mut chains, steps, kinds[i], &template).as_secs_f64();
            }
            for i in 0..kinds.len() {
                times[i].push(this[i] * 1e9 / messages);
                ratios[i].push(this[i] / this[0]);
            }
        }
        for (i, kind) in kinds.iter().enumerate() {
            rows.push(Row {
                workload: format!("W2 {steps} steps"),
                label: kind.label(),
                ns: median(&mut times[i]),
                ratio: median(&mut ratios[i]),
                target: kind.target().map(|t| (t, true)),
                cpu: None,
            });
        }
    }
}

fn run_w1(rounds: usize, rows: &mut Vec<Row>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let input = dir.path().join("w1.ndjson");
    w1::generate(&input, W1_LINES).expect("W1 input written");
    let mut variants = w1::variants();
    let kinds = w1::Kind::ALL;
    let outputs: Vec<PathBuf> = kinds
        .iter()
        .map(|k| dir.path().join(format!("{}.out", k.key())))
        .collect();
    for (kind, out) in kinds.iter().zip(&outputs) {
        variants.run(*kind, &input, out).expect("W1 run");
    }
    check_same_output(&kinds.map(|k| k.label()), &outputs);
    let n = kinds.len();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut cpu_ratios: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..rounds {
        let mut this = [0.0; w1::Kind::ALL.len()];
        let mut cpu = [0.0; w1::Kind::ALL.len()];
        for j in 0..n {
            let i = (j + round) % n;
            let (start, cpu_start) = (Instant::now(), cpu_time());
            variants.run(kinds[i], &input, &outputs[i]).expect("W1 run");
            this[i] = start.elapsed().as_secs_f64();
            cpu[i] = (cpu_time() - cpu_start).as_secs_f64();
        }
        for i in 0..n {
            times[i].push(this[i] * 1e9 / W1_LINES as f64);
            ratios[i].push(this[i] / this[0]);
            cpus[i].push(cpu[i] * 1e9 / W1_LINES as f64);
            cpu_ratios[i].push(cpu[i] / cpu[0]);
        }
    }
    // The YAML flow against the same flow built with `flow!`, both run
    // by the runtime without fsync: per-round ratios, like the others.
    let position = |k: w1::Kind| kinds.iter().position(|x| *x == k).expect("a W1 kind");
    let (yaml, runtime) = (position(w1::Kind::Yaml), position(w1::Kind::Runtime));
    let mut yaml_vs_flow: Vec<f64> = ratios[yaml]
        .iter()
        .zip(&ratios[runtime])
        .map(|(y, r)| y / r)
        .collect();
    let yaml_ns = median(&mut times[yaml].clone());
    for (i, kind) in kinds.iter().enumerate() {
        rows.push(Row {
            workload: format!("W1 {}k lines", W1_LINES / 1000),
            label: kind.label(),
            ns: median(&mut times[i]),
            ratio: median(&mut ratios[i]),
            target: kind.target().map(|t| (t, false)),
            cpu: Some((median(&mut cpus[i]), median(&mut cpu_ratios[i]))),
        });
    }
    rows.push(Row {
        workload: "W1 YAML÷flow!".to_string(),
        label: "YAML flow vs the same flow!",
        ns: yaml_ns,
        ratio: median(&mut yaml_vs_flow),
        target: Some((1.15, true)),
        cpu: None,
    });
}

fn check_same_output(labels: &[&str], outputs: &[PathBuf]) {
    let expected = std::fs::read(&outputs[0]).expect("baseline output");
    for (label, out) in labels.iter().zip(outputs).skip(1) {
        let got = std::fs::read(out).expect("output");
        assert!(
            got == expected,
            "W1 `{label}` wrote different bytes than `{}`",
            labels[0]
        );
    }
    println!(
        "W1 outputs byte-identical across {} variants ({} bytes)",
        labels.len(),
        expected.len()
    );
}

fn print_rows(rows: &[Row]) -> bool {
    println!(
        "\n{:<14} {:<30} {:>10} {:>8} {:>8} {:>12}  {:<6} {:>10} {:>6}",
        "workload",
        "variant",
        "ns/msg",
        "time×",
        "thrpt×",
        "target",
        "result",
        "cpu ns/msg",
        "cpu×"
    );
    let mut ok = true;
    for r in rows {
        let target = match r.target {
            Some((t, true)) => format!("time ≤ {t:.2}×"),
            Some((t, false)) => format!("thrpt ≥ {t:.2}×"),
            None => String::new(),
        };
        let verdict = match r.pass() {
            Some(true) => "PASS",
            Some(false) => {
                ok = false;
                "FAIL"
            }
            None => "",
        };
        let cpu = match r.cpu {
            Some((ns, ratio)) => format!("{ns:>10.1} {ratio:>6.2}"),
            None => String::new(),
        };
        println!(
            "{:<14} {:<30} {:>10.1} {:>8.3} {:>8.3} {:>12}  {:<6} {}",
            r.workload,
            r.label,
            r.ns,
            r.ratio,
            1.0 / r.ratio,
            target,
            verdict,
            cpu
        );
    }
    println!(
        "\ntime× / thrpt×: median over rounds of the ratio to the hand-written baseline measured in the same round (wall clock)"
    );
    println!(
        "cpu: process CPU time (user + system, all threads) per message; cpu×: its median per-round ratio to the baseline"
    );
    ok
}

// ---------------------------------------------------------------- callgrind

/// Messages processed by one `--only` run (W2: batches × BATCH; W1: lines).
const CG_W2_BATCHES: usize = 16;
const CG_W1_LINES: u64 = 20_000;

/// Runs one variant, for callgrind. Returns the messages it processed.
fn run_only(spec: &str, lines: u64) -> u64 {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        ["w2", steps, key] => {
            let steps: usize = steps.parse().expect("w2 steps");
            let kind = *w2::Kind::ALL
                .iter()
                .find(|k| k.key() == *key)
                .expect("w2 kind");
            let mut chains = w2::chains();
            let template = w2::orders(w2::BATCH, 1);
            for _ in 0..CG_W2_BATCHES {
                let mut sink = w2::Sink::new();
                chains.run(steps, kind, black_box(template.clone()), &mut sink);
                black_box(&sink);
            }
            (CG_W2_BATCHES * w2::BATCH) as u64
        }
        ["w1", "setup"] => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            w1::generate(&dir.path().join("w1.ndjson"), lines).expect("W1 input written");
            black_box(w1::variants());
            0
        }
        ["w1", key] => {
            let kind = *w1::Kind::ALL
                .iter()
                .find(|k| k.key() == *key)
                .expect("w1 kind");
            let dir = tempfile::tempdir().expect("a temporary directory");
            let input = dir.path().join("w1.ndjson");
            w1::generate(&input, lines).expect("W1 input written");
            let mut variants = w1::variants();
            variants
                .run(kind, &input, &dir.path().join("out"))
                .expect("W1 run");
            lines
        }
        _ => panic!("--only w2:<5|12>:<kind> or w1:<kind>"),
    }
}

/// The name of the `#[inline(never)]` function that holds a variant's work.
fn hot_fn(spec: &str) -> String {
    let parts: Vec<&str> = spec.split(':').collect();
    match parts.as_slice() {
        ["w2", steps, "hand"] => format!("w2_hand{steps}"),
        ["w2", _, "dyn"] => "w2_dyn".into(),
        ["w2", steps, _] => format!("w2_flow{steps}"),
        ["w1", "hand"] => "w1_hand".into(),
        ["w1", "hand-zc"] => "w1_hand_zero_copy".into(),
        ["w1", "runtime" | "runtime-fsync" | "yaml" | "setup"] => String::new(),
        ["w1", _] => "w1_flow_worker".into(),
        _ => unreachable!(),
    }
}

/// Collect only inside the variant's function, except for the runtime, whose
/// work runs on other threads: the whole process is counted, and a run that
/// only sets up is subtracted.
fn toggles(spec: &str) -> Vec<String> {
    let f = hot_fn(spec);
    if f.is_empty() {
        Vec::new()
    } else {
        vec![
            format!("--toggle-collect=*::{f}"),
            format!("--toggle-collect=*::{f}<*"),
        ]
    }
}

fn callgrind_ir(exe: &Path, spec: &str, dir: &Path) -> Option<u64> {
    let out = dir.join(format!("cg.{}", spec.replace(':', "_")));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        // Only inside the variant's function (and what it calls); the
        // pattern is matched against demangled names, so end it with `<`/`(`
        // free wildcards: `w1_hand` must not also match `w1_hand_zero_copy`.
        .args(toggles(spec))
        .arg("--quiet")
        .arg(exe)
        .args(["--only", spec])
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(&out).ok()?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn run_callgrind() {
    let exe = std::env::current_exe().expect("own path");
    let dir = tempfile::tempdir().expect("a temporary directory");
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind is not installed: `apt-get install valgrind`");
        std::process::exit(2);
    }
    println!(
        "{:<14} {:<30} {:>12} {:>8}",
        "workload", "variant", "Ir/msg", "ratio"
    );
    for steps in [5usize, 12] {
        let mut base = None;
        for kind in w2::Kind::ALL {
            let spec = format!("w2:{steps}:{}", kind.key());
            let messages = (CG_W2_BATCHES * w2::BATCH) as f64;
            report(
                &format!("W2 {steps} steps"),
                kind.label(),
                callgrind_ir(&exe, &spec, dir.path()).map(|ir| ir as f64 / messages),
                &mut base,
            );
        }
    }
    let mut base = None;
    let setup = callgrind_ir(&exe, "w1:setup", dir.path());
    for kind in w1::Kind::ALL {
        let spec = format!("w1:{}", kind.key());
        let mut ir = callgrind_ir(&exe, &spec, dir.path());
        if matches!(
            kind,
            w1::Kind::Runtime | w1::Kind::RuntimeFsync | w1::Kind::Yaml
        ) {
            ir = ir.zip(setup).map(|(ir, setup)| ir.saturating_sub(setup));
        }
        report(
            "W1 (per line)",
            kind.label(),
            ir.map(|ir| ir as f64 / CG_W1_LINES as f64),
            &mut base,
        );
    }
    println!(
        "\nIr/msg: instructions executed inside the variant's batch function, per input message"
    );
}

fn report(workload: &str, label: &str, per_msg: Option<f64>, base: &mut Option<f64>) {
    match per_msg {
        Some(v) => {
            let b = *base.get_or_insert(v);
            println!("{workload:<14} {label:<30} {v:>12.1} {:>8.3}", v / b);
        }
        None => println!("{workload:<14} {label:<30} {:>12}", "(valgrind failed)"),
    }
}

fn main() {
    let o = opts();
    if let Some(spec) = &o.only {
        black_box(run_only(spec, o.lines));
        return;
    }
    if o.callgrind {
        run_callgrind();
        return;
    }
    let start = Instant::now();
    let rows = run_timings(o.rounds, o.w1_only);
    let ok = print_rows(&rows);
    println!(
        "{} rounds in {:.1} s",
        o.rounds,
        start.elapsed().as_secs_f64()
    );
    if !ok {
        std::process::exit(1);
    }
}
