//! The Kernel Inception Distance (Binkowski et al., *Demystifying MMD GANs*, 2018): the
//! unbiased estimate of the squared maximum mean discrepancy between two feature sets with the
//! cubic polynomial kernel `k(x, y) = (x . y / d + 1)^3`, averaged over random subsets of
//! equal size, as torch-fidelity and clean-fid compute it.
//!
//! Unlike FID, the estimate is unbiased, so it can be compared across sample sizes and is
//! meaningful (and may be slightly negative) for small sets. Everything is computed in `f64`.
//!
//! Subsets are drawn without replacement, independently on each side, by a seeded ChaCha8
//! generator (the same seed gives the same value). NumPy's generator cannot be reproduced, so
//! a value matches torch-fidelity's only in distribution; the expectation over subsets is the
//! full-set [`mmd2_unbiased`] on both.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::fid::dot;
use crate::{Error, Result};

/// How the subsets of [`kernel_inception_distance`] are drawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KidConfig {
    /// Number of subsets averaged.
    pub subsets: usize,
    /// Largest subset size; the size used is `min(subset_size, n_real, n_fake)`.
    pub subset_size: usize,
    /// The seed of the subset sampler.
    pub seed: u64,
}

impl Default for KidConfig {
    /// torch-fidelity's defaults: 100 subsets of at most 1000 features; seed 0.
    fn default() -> Self {
        KidConfig { subsets: 100, subset_size: 1000, seed: 0 }
    }
}

/// The KID estimate over subsets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Kid {
    /// The mean of the subsets' unbiased MMD² (torch-fidelity's
    /// `kernel_inception_distance_mean`).
    pub mean: f64,
    /// Their standard deviation (population, `numpy.std`'s default, as torch-fidelity
    /// reports it).
    pub std: f64,
    /// The number of subsets averaged.
    pub subsets: usize,
    /// The subset size used.
    pub subset_size: usize,
}

/// Above this many rows in the two sets together, kernel values are computed per subset
/// instead of once for every pair (the cache holds `rows^2` f64, 32 MiB at this size).
const GRAM_CACHE_ROWS: usize = 2048;

/// The cubic polynomial kernel `(x . y / d + 1)^3`, `d = x.len()`.
pub fn polynomial_kernel(x: &[f64], y: &[f64]) -> f64 {
    let d = x.len().max(1) as f64;
    let t = dot(x, y) / d + 1.0;
    t * t * t
}

/// Checks one row-major feature set and widens it to f64; returns the row count.
fn rows_f64<T: Copy + Into<f64>>(
    features: &[T],
    dim: usize,
    what: &'static str,
) -> Result<(Vec<f64>, usize)> {
    if dim == 0 {
        return Err(Error::InvalidArgument { name: "dim", reason: "must be at least 1".into() });
    }
    if !features.len().is_multiple_of(dim) {
        return Err(Error::LengthMismatch {
            what,
            expected: features.len().div_ceil(dim) * dim,
            got: features.len(),
        });
    }
    let wide: Vec<f64> = features.iter().map(|&x| x.into()).collect();
    if let Some((index, &value)) = wide.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidValue { what: "feature", index, value });
    }
    let rows = wide.len() / dim;
    if rows < 2 {
        return Err(Error::Empty {
            what: "features (the unbiased MMD needs at least two rows a side)",
        });
    }
    Ok((wide, rows))
}

/// The unbiased MMD² between two whole feature sets (row-major, `dim` columns) with
/// [`polynomial_kernel`]; the sets may differ in size:
/// `sum_{i != j} k(x_i, x_j) / (n (n - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
///  - 2 sum_{i, j} k(x_i, y_j) / (n m)`.
///
/// # Errors
/// [`Error::InvalidArgument`] for `dim == 0`, [`Error::LengthMismatch`] when a length is not
/// a multiple of `dim`, [`Error::Empty`] with fewer than two rows a side,
/// [`Error::InvalidValue`] for a non-finite feature.
pub fn mmd2_unbiased<T: Copy + Into<f64>>(x: &[T], y: &[T], dim: usize) -> Result<f64> {
    let (x, n) = rows_f64(x, dim, "x (not a multiple of dim)")?;
    let (y, m) = rows_f64(y, dim, "y (not a multiple of dim)")?;
    let kernel = |a: &[f64], i: usize, b: &[f64], j: usize| {
        polynomial_kernel(&a[i * dim..(i + 1) * dim], &b[j * dim..(j + 1) * dim])
    };
    let xi: Vec<usize> = (0..n).collect();
    let yi: Vec<usize> = (0..m).collect();
    let within = |a: &[f64], idx: &[usize]| off_diagonal_sum(idx, |i, j| kernel(a, i, a, j));
    let kxx = within(&x, &xi);
    let kyy = within(&y, &yi);
    let kxy = cross_sum(&xi, &yi, |i, j| kernel(&x, i, &y, j));
    let (nf, mf) = (n as f64, m as f64);
    Ok(kxx / (nf * (nf - 1.0)) + kyy / (mf * (mf - 1.0)) - 2.0 * kxy / (nf * mf))
}

/// `sum_{i != j} k(idx[i], idx[j])` for a symmetric kernel: twice the upper triangle.
fn off_diagonal_sum(idx: &[usize], k: impl Fn(usize, usize) -> f64) -> f64 {
    let mut total = 0.0;
    for (a, &i) in idx.iter().enumerate() {
        let mut row = 0.0;
        for &j in &idx[a + 1..] {
            row += k(i, j);
        }
        total += row;
    }
    2.0 * total
}

/// `sum_{i, j} k(xs[i], ys[j])`.
fn cross_sum(xs: &[usize], ys: &[usize], k: impl Fn(usize, usize) -> f64) -> f64 {
    let mut total = 0.0;
    for &i in xs {
        let mut row = 0.0;
        for &j in ys {
            row += k(i, j);
        }
        total += row;
    }
    total
}

/// The KID between `real` and `fake` (row-major, `dim` columns; `f32` or `f64`): the mean and
/// standard deviation of the unbiased MMD² ([`mmd2_unbiased`] on equal sizes) over
/// `config.subsets` subsets of `min(subset_size, n_real, n_fake)` rows drawn without
/// replacement on each side.
///
/// When the sets are no larger than the subset size every subset is the whole set (in some
/// order), and the result is exactly the full-set estimate.
///
/// Cost: with at most 2048 rows in all, each kernel value is computed once (`(n + m)^2 d / 2`
/// multiply-adds); beyond that, `2 s^2 d` per subset of size `s` (about 4e9 for torch-fidelity's
/// `s = 1000` on 2048-d features).
///
/// # Errors
/// [`Error::InvalidArgument`] for `subsets == 0` or `subset_size < 2`, and the errors of
/// [`mmd2_unbiased`].
pub fn kernel_inception_distance<T: Copy + Into<f64>>(
    real: &[T],
    fake: &[T],
    dim: usize,
    config: &KidConfig,
) -> Result<Kid> {
    if config.subsets == 0 {
        return Err(Error::InvalidArgument {
            name: "subsets",
            reason: "must be at least 1".into(),
        });
    }
    if config.subset_size < 2 {
        return Err(Error::InvalidArgument {
            name: "subset_size",
            reason: format!("{} is below 2, the unbiased MMD's minimum", config.subset_size),
        });
    }
    let (x, n) = rows_f64(real, dim, "real features (not a multiple of dim)")?;
    let (y, m) = rows_f64(fake, dim, "fake features (not a multiple of dim)")?;
    let s = config.subset_size.min(n).min(m);
    // The two sets as one: rows 0..n are real, n..n + m fake.
    let all = [x, y].concat();
    let row = |i: usize| &all[i * dim..(i + 1) * dim];
    let total = n + m;
    let gram = if total <= GRAM_CACHE_ROWS {
        let mut g = vec![0.0; total * total];
        for i in 0..total {
            for j in i..total {
                let v = polynomial_kernel(row(i), row(j));
                g[i * total + j] = v;
                g[j * total + i] = v;
            }
        }
        Some(g)
    } else {
        None
    };
    let kernel = |i: usize, j: usize| match &gram {
        Some(g) => g[i * total + j],
        None => polynomial_kernel(row(i), row(j)),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let sf = s as f64;
    let mut values = Vec::with_capacity(config.subsets);
    for _ in 0..config.subsets {
        let xs = rand::seq::index::sample(&mut rng, n, s).into_vec();
        let ys: Vec<usize> =
            rand::seq::index::sample(&mut rng, m, s).into_iter().map(|j| j + n).collect();
        let kxx = off_diagonal_sum(&xs, kernel);
        let kyy = off_diagonal_sum(&ys, kernel);
        let kxy = cross_sum(&xs, &ys, kernel);
        values.push((kxx + kyy) / (sf * (sf - 1.0)) - 2.0 * kxy / (sf * sf));
    }
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / count).sqrt();
    Ok(Kid { mean, std, subsets: config.subsets, subset_size: s })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::Rng;

    fn random(rng: &mut ChaCha8Rng, rows: usize, dim: usize, shift: f64) -> Vec<f64> {
        (0..rows * dim).map(|_| rng.random::<f64>() - 0.5 + shift).collect()
    }

    #[test]
    fn kernel_is_the_cubic_polynomial() {
        // x . y = 4, d = 2: (4 / 2 + 1)^3 = 27.
        assert_eq!(polynomial_kernel(&[1.0, 2.0], &[2.0, 1.0]), 27.0);
    }

    #[test]
    fn identical_sets_give_a_value_near_zero_and_shifted_sets_a_positive_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = random(&mut rng, 40, 8, 0.0);
        // The same set on both sides: the estimate is exactly 2 (mean off-diagonal k - mean
        // diagonal k) / n, an O(1 / n) value; subsets as large as the set reproduce it.
        let full = mmd2_unbiased(&x, &x, 8).unwrap();
        let n = 40usize;
        let k =
            |i: usize, j: usize| polynomial_kernel(&x[i * 8..(i + 1) * 8], &x[j * 8..(j + 1) * 8]);
        let diag = (0..n).map(|i| k(i, i)).sum::<f64>() / n as f64;
        let off = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| k(i, j))
            .sum::<f64>()
            / (n * (n - 1)) as f64;
        let closed = 2.0 * (off - diag) / n as f64;
        assert!((full - closed).abs() <= 1e-13, "{full} vs closed form {closed}");
        assert!(full.abs() < 0.05, "identical sets: {full}");
        let kid = kernel_inception_distance(
            &x,
            &x,
            8,
            &KidConfig { subsets: 5, subset_size: 1000, seed: 1 },
        )
        .unwrap();
        assert_eq!(kid.subset_size, 40);
        assert!((kid.mean - full).abs() <= 1e-13, "{} vs {full}", kid.mean);
        assert!(kid.std <= 1e-13, "every subset is the whole set: std {}", kid.std);
        let y = random(&mut rng, 40, 8, 0.5);
        let apart = mmd2_unbiased(&x, &y, 8).unwrap();
        assert!(apart > 10.0 * full.abs() && apart > 0.05, "shifted sets: {apart}");
    }

    #[test]
    fn subsets_are_seeded() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let x = random(&mut rng, 30, 4, 0.0);
        let y = random(&mut rng, 25, 4, 0.1);
        let c = KidConfig { subsets: 20, subset_size: 10, seed: 9 };
        let a = kernel_inception_distance(&x, &y, 4, &c).unwrap();
        let b = kernel_inception_distance(&x, &y, 4, &c).unwrap();
        assert_eq!(a, b);
        let other = kernel_inception_distance(&x, &y, 4, &KidConfig { seed: 10, ..c }).unwrap();
        assert_ne!(a.mean, other.mean);
        assert_eq!(a.subset_size, 10);
    }

    #[test]
    fn bad_input_is_an_error() {
        let c = KidConfig::default();
        assert!(matches!(
            kernel_inception_distance(&[1.0f32, 2.0], &[1.0, 2.0], 2, &c),
            Err(Error::Empty { .. })
        ));
        assert!(matches!(
            mmd2_unbiased(&[1.0, 2.0, 3.0], &[1.0, 2.0], 2),
            Err(Error::LengthMismatch { .. })
        ));
        assert!(matches!(
            mmd2_unbiased(&[1.0, f64::NAN, 0.0, 1.0], &[1.0, 2.0, 0.0, 0.0], 2),
            Err(Error::InvalidValue { .. })
        ));
        assert!(mmd2_unbiased::<f64>(&[], &[], 0).is_err());
        let x = [0.0, 1.0, 2.0, 3.0];
        for bad in [KidConfig { subsets: 0, ..c.clone() }, KidConfig { subset_size: 1, ..c }] {
            assert!(matches!(
                kernel_inception_distance(&x, &x, 2, &bad),
                Err(Error::InvalidArgument { .. })
            ));
        }
    }
}
