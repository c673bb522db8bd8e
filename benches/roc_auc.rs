//! ROC-AUC on 1M scores: one sort plus a linear pass, so O(n log n).
//!
//! ```text
//! cargo bench --bench roc_auc
//! ```
//!
//! Also times 100k scores, to show the growth is close to linear.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use deeprecog::metrics::binary::{average_precision, roc_auc};

/// Deterministic labels and scores (a xorshift generator, to keep the bench dependency-free),
/// rounded to 1e-4 so that ties are frequent, as with real quantised model outputs.
fn data(n: usize) -> (Vec<bool>, Vec<f64>) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut labels = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    for _ in 0..n {
        let y = next() < 0.3;
        let s = (0.6 * next() + if y { 0.3 } else { 0.1 }).min(1.0);
        labels.push(y);
        scores.push((s * 1e4).round() / 1e4);
    }
    (labels, scores)
}

fn bench(c: &mut Criterion) {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let mut group = c.benchmark_group("roc_auc");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(10));
    for n in [100_000usize, 1_000_000] {
        let (y, s) = data(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("roc_auc", n), &n, |b, _| {
            b.iter(|| roc_auc(&y, &s))
        });
        group.bench_with_input(BenchmarkId::new("average_precision", n), &n, |b, _| {
            b.iter(|| average_precision(&y, &s))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
