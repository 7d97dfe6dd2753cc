//! W2: the same 5- and 12-step chains of small steps over an order record as
//! `flow!` without monitoring, `flow!` with the default `Metrics`, the same
//! functions called by hand, and a `Vec<Box<dyn Fn>>`; per-message times.
//!
//! `cargo bench -p syncflow --bench w2_chain`. For ratios with PASS/FAIL
//! against the targets, run `cargo bench -p syncflow --bench compare`.

mod common;

use std::hint::black_box;

use common::w2::{self, BATCH, Kind, Sink};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let mut chains = w2::chains();
    let template = w2::orders(BATCH, 1);
    for steps in [5, 12] {
        let mut group = c.benchmark_group(format!("w2_{steps}_steps"));
        group.throughput(Throughput::Elements(BATCH as u64));
        for kind in Kind::ALL {
            group.bench_function(kind.key(), |b| {
                b.iter_batched(
                    || (black_box(template.clone()), Sink::new()),
                    |(batch, mut sink)| {
                        chains.run(steps, kind, batch, &mut sink);
                        sink
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
