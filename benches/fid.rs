//! The Frechet distance (FID) between two Gaussian feature statistics at d = 512 and d = 2048
//! (Inception pool features): one eigen-decomposition with vectors, one without, and the
//! `O(d^3)` products between them.
//!
//! ```text
//! cargo bench --bench fid
//! ```
//!
//! Flat sampling, 10 samples of one call each: about 4 minutes in all on the 2-core build
//! machine, nearly all of it d = 2048 (see `benches/NOTES.md`).
//!
//! `FID_BENCH_ONCE=512,1024 cargo bench --bench fid` times one call per listed dimension
//! instead of running criterion (how the former cyclic-Jacobi version, ~34 s at d = 512, was
//! timed).

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode};
use deeprecog::metrics::fid::frechet_distance;

// The statistics of the metrics crate's d = 256 golden test (numpy rebuilds them there).
#[path = "../crates/metrics/tests/common/fid_stats.rs"]
mod fid_stats;

use fid_stats::xorshift_stats as stats;

fn bench(c: &mut Criterion) {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let mut group = c.benchmark_group("frechet_distance");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(std::time::Duration::from_secs(5));
    for d in [512usize, 2048] {
        let (a, b) = (stats(d, 1), stats(d, 2));
        group.bench_with_input(BenchmarkId::from_parameter(d), &d, |bench, _| {
            bench.iter(|| frechet_distance(&a, &b))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);

fn main() {
    if let Ok(dims) = std::env::var("FID_BENCH_ONCE") {
        for d in dims.split(',').filter_map(|s| s.trim().parse::<usize>().ok()) {
            let (a, b) = (stats(d, 1), stats(d, 2));
            let start = Instant::now();
            let fid = frechet_distance(&a, &b);
            println!("d = {d}: {:.3} s, fid = {fid:?}", start.elapsed().as_secs_f64());
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
