//! W1: NDJSON log ETL file to file (`shared/bench/w1/README.md`): the
//! hand-written serde_json loop against the same work as a `flow!`.
//!
//! `cargo bench -p syncflow --bench w1_logs` (200k generated lines). For
//! ratios with PASS/FAIL against the targets, run
//! `cargo bench -p syncflow --bench compare`.

mod common;

use common::w1::{self, Kind};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LINES: u64 = 200_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let input = dir.path().join("w1.ndjson");
    w1::generate(&input, LINES).expect("W1 input written");
    let mut variants = w1::variants();

    // Every variant must write the same bytes.
    let reference = dir.path().join("reference.out");
    variants
        .run(Kind::Hand, &input, &reference)
        .expect("baseline run");
    let expected = std::fs::read(&reference).expect("baseline output");
    for kind in Kind::ALL {
        let out = dir.path().join(format!("{}.out", kind.key()));
        let counts = variants.run(kind, &input, &out).expect("W1 run");
        assert_eq!(counts.read, LINES, "{}", kind.label());
        assert_eq!(counts.written, LINES * 3 / 4, "{}", kind.label());
        assert!(
            std::fs::read(&out).expect("output") == expected,
            "{} wrote different bytes than the hand-written loop",
            kind.label()
        );
    }

    let mut group = c.benchmark_group("w1_logs");
    group.throughput(Throughput::Elements(LINES));
    group.sample_size(20);
    let output = dir.path().join("bench.out");
    for kind in Kind::ALL {
        group.bench_function(kind.key(), |b| {
            b.iter(|| variants.run(kind, &input, &output).expect("W1 run"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
