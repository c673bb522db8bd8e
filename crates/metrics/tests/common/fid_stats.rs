//! Deterministic FID statistics shared by the d = 256 golden test (`tests/fid_golden.rs`) and
//! the FID bench (`benches/fid.rs` of the workspace root, which includes this file by path).
//! `tests/golden/fid_xorshift.py` rebuilds the same numbers in numpy, so the stream must stay
//! this xorshift64 generator bit for bit.

use deeprecog_metrics::fid::FeatureStats;

/// A full-rank covariance with a decaying spectrum, as pool features have:
/// `B B^T / m + diag(0.01 .. 1)` with `B` a `d x m` xorshift64 matrix, `m = d / 4`, and a
/// xorshift64 mean.
pub fn xorshift_stats(d: usize, seed: u64) -> FeatureStats {
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
        Err(e) => unreachable!("xorshift statistics are finite: {e}"),
    }
}
