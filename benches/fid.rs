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

use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode};
use deeprecog::metrics::fid::{frechet_distance, FeatureStats};

/// A deterministic, full-rank covariance with a decaying spectrum, as pool features have:
/// `B B^T / m + diag(0.01 .. 1)` with `B` a `d x m` xorshift matrix, `m = d / 4`; and a mean.
fn stats(d: usize, seed: u64) -> FeatureStats {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD134_2543_DE82_EF95);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let m = (d / 4).max(1);
    let b: Vec<f64> = (0..d * m).map(|_| next()).collect();
    let mut cov = vec![0.0; d * d];
    for i in 0..d {
        let bi = &b[i * m..(i + 1) * m];
        for j in i..d {
            let bj = &b[j * m..(j + 1) * m];
            let v = bi.iter().zip(bj).map(|(x, y)| x * y).sum::<f64>() / m as f64;
            cov[i * d + j] = v;
            cov[j * d + i] = v;
        }
        cov[i * d + i] += 0.01 + 0.99 * (-(i as f64) / (d as f64 / 8.0)).exp();
    }
    let mean = (0..d).map(|_| next()).collect();
    match FeatureStats::from_parts(mean, cov, 10_000) {
        Ok(s) => s,
        Err(e) => unreachable!("bench statistics are finite: {e}"),
    }
}

fn bench(c: &mut Criterion) {
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
