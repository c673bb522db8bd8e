//! FID statistics: feature means and covariances, and the Frechet distance between two
//! Gaussians fitted to them.
//!
//! The distance needs `tr sqrt(S1 S2)`. `S1 S2` is not symmetric, and a general matrix square
//! root (scipy's `sqrtm`, used by pytorch-fid) can return complex parts and needs an `eps`
//! fudge on near-singular covariances. Here the same trace is computed from symmetric matrices
//! only: with `R = sqrt(S1)` (symmetric PSD), `S1 S2` is similar to `R S2 R`, which is
//! symmetric PSD, so `tr sqrt(S1 S2) = sum_i sqrt(max(mu_i, 0))` over the eigenvalues of
//! `R S2 R`. Both eigen-decompositions use the cyclic Jacobi method, which is slow (several
//! `O(d^3)` sweeps) but accurate to a few ulps even for singular matrices.
//!
//! One limit no algorithm avoids: `sqrt` is not Lipschitz at zero, so with near-singular
//! covariances (fewer samples than dimensions) an eigenvalue rounding error of `e` moves the
//! distance by about `sqrt(e)`; expect ~1e-8 relative agreement there instead of ~1e-14.

use serde::Serialize;

use crate::{Error, Result};

/// The mean and covariance of a set of feature vectors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureStats {
    /// The feature dimension `d`.
    pub dim: usize,
    /// The number of feature vectors.
    pub count: usize,
    /// The mean, `d` values.
    pub mean: Vec<f64>,
    /// The unbiased sample covariance (divided by `count - 1`, as `numpy.cov`), `d x d`
    /// row-major.
    pub covariance: Vec<f64>,
}

fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 {
        return Err(Error::InvalidArgument { name: "dim", reason: "must be at least 1".into() });
    }
    Ok(())
}

impl FeatureStats {
    /// Computes the statistics of row-major features, `count x dim`, with a two-pass
    /// (centred) covariance.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `dim == 0`, [`Error::LengthMismatch`] when the length is
    /// not a multiple of `dim`, [`Error::Empty`] with fewer than two rows, and
    /// [`Error::InvalidValue`] for a non-finite feature.
    pub fn from_rows(features: &[f64], dim: usize) -> Result<Self> {
        check_dim(dim)?;
        if !features.len().is_multiple_of(dim) {
            return Err(Error::LengthMismatch {
                what: "features (not a multiple of dim)",
                expected: features.len().div_ceil(dim) * dim,
                got: features.len(),
            });
        }
        let count = features.len() / dim;
        if count < 2 {
            return Err(Error::Empty { what: "features (a covariance needs at least two rows)" });
        }
        if let Some((index, &value)) = features.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidValue { what: "feature", index, value });
        }
        let mut mean = vec![0.0; dim];
        for row in features.chunks_exact(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += x;
            }
        }
        for m in &mut mean {
            *m /= count as f64;
        }
        let mut covariance = vec![0.0; dim * dim];
        let mut centred = vec![0.0; dim];
        for row in features.chunks_exact(dim) {
            for ((c, &x), &m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = x - m;
            }
            add_outer_upper(&mut covariance, &centred);
        }
        finish_covariance(&mut covariance, dim, count);
        Ok(Self { dim, count, mean, covariance })
    }

    /// [`FeatureStats::from_rows`] for `f32` features (what a network returns); the
    /// arithmetic is done in `f64`.
    ///
    /// # Errors
    /// As [`FeatureStats::from_rows`].
    pub fn from_rows_f32(features: &[f32], dim: usize) -> Result<Self> {
        let wide: Vec<f64> = features.iter().map(|&x| f64::from(x)).collect();
        Self::from_rows(&wide, dim)
    }

    /// Wraps a precomputed mean and covariance (e.g. published reference statistics).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty mean, [`Error::LengthMismatch`] unless the
    /// covariance is `d x d`, [`Error::InvalidValue`] for a non-finite entry.
    pub fn from_parts(mean: Vec<f64>, covariance: Vec<f64>, count: usize) -> Result<Self> {
        let dim = mean.len();
        check_dim(dim)?;
        if covariance.len() != dim * dim {
            return Err(Error::LengthMismatch {
                what: "covariance",
                expected: dim * dim,
                got: covariance.len(),
            });
        }
        if let Some((index, &value)) =
            mean.iter().chain(&covariance).enumerate().find(|(_, v)| !v.is_finite())
        {
            return Err(Error::InvalidValue { what: "statistic", index, value });
        }
        Ok(Self { dim, count, mean, covariance })
    }
}

/// Adds `x x^T` to the upper triangle of a `d x d` row-major matrix.
fn add_outer_upper(matrix: &mut [f64], x: &[f64]) {
    for (i, row) in matrix.chunks_exact_mut(x.len()).enumerate() {
        let xi = x.get(i).copied().unwrap_or(0.0);
        for (c, &xj) in row.iter_mut().zip(x).skip(i) {
            *c += xi * xj;
        }
    }
}

/// Divides the accumulated upper triangle by `count - 1` and mirrors it to the lower one.
fn finish_covariance(matrix: &mut [f64], dim: usize, count: usize) {
    let den = (count.saturating_sub(1)).max(1) as f64;
    for i in 0..dim {
        for j in i..dim {
            let v = matrix[i * dim + j] / den;
            matrix[i * dim + j] = v;
            matrix[j * dim + i] = v;
        }
    }
}

/// Streams feature vectors into [`FeatureStats`] without keeping them.
///
/// Sums are taken around the first vector (a shifted-data algorithm), which avoids most of
/// the cancellation of the naive `E[x x^T] - m m^T` formula.
#[derive(Debug, Clone)]
pub struct FeatureAccumulator {
    dim: usize,
    count: usize,
    shift: Vec<f64>,
    sum: Vec<f64>,
    outer: Vec<f64>,
    centred: Vec<f64>,
}

impl FeatureAccumulator {
    /// An empty accumulator for `dim`-dimensional features.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `dim == 0`.
    pub fn new(dim: usize) -> Result<Self> {
        check_dim(dim)?;
        Ok(Self {
            dim,
            count: 0,
            shift: Vec::new(),
            sum: vec![0.0; dim],
            outer: vec![0.0; dim * dim],
            centred: vec![0.0; dim],
        })
    }

    /// Adds every row of a row-major `f32` batch (`rows x dim`).
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] when the batch is not a multiple of `dim`,
    /// [`Error::InvalidValue`] for a non-finite feature (the batch is then not added).
    pub fn push_batch(&mut self, batch: &[f32]) -> Result<()> {
        if !batch.len().is_multiple_of(self.dim) {
            return Err(Error::LengthMismatch {
                what: "feature batch (not a multiple of dim)",
                expected: batch.len().div_ceil(self.dim) * self.dim,
                got: batch.len(),
            });
        }
        if let Some((index, &value)) = batch.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::InvalidValue { what: "feature", index, value: f64::from(value) });
        }
        for row in batch.chunks_exact(self.dim) {
            if self.shift.is_empty() {
                self.shift = row.iter().map(|&x| f64::from(x)).collect();
            }
            for ((c, &x), &s) in self.centred.iter_mut().zip(row).zip(&self.shift) {
                *c = f64::from(x) - s;
            }
            for (acc, &c) in self.sum.iter_mut().zip(&self.centred) {
                *acc += c;
            }
            add_outer_upper(&mut self.outer, &self.centred);
            self.count += 1;
        }
        Ok(())
    }

    /// The number of vectors added so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The statistics of everything added.
    ///
    /// # Errors
    /// [`Error::Empty`] with fewer than two vectors.
    pub fn finish(&self) -> Result<FeatureStats> {
        if self.count < 2 {
            return Err(Error::Empty { what: "features (a covariance needs at least two rows)" });
        }
        let n = self.count as f64;
        let d = self.dim;
        let mean_shifted: Vec<f64> = self.sum.iter().map(|s| s / n).collect();
        let mut covariance = self.outer.clone();
        for i in 0..d {
            for j in i..d {
                covariance[i * d + j] -= n * mean_shifted[i] * mean_shifted[j];
            }
        }
        finish_covariance(&mut covariance, d, self.count);
        let mean = mean_shifted.iter().zip(&self.shift).map(|(m, s)| m + s).collect();
        Ok(FeatureStats { dim: d, count: self.count, mean, covariance })
    }
}

/// Eigenvalues and eigenvectors of a symmetric matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetricEigen {
    /// The eigenvalues, in no particular order.
    pub values: Vec<f64>,
    /// The eigenvectors as columns of a `d x d` row-major matrix: column `k` belongs to
    /// `values[k]`.
    pub vectors: Vec<f64>,
}

/// The eigen-decomposition of a symmetric `dim x dim` row-major matrix by cyclic Jacobi
/// rotations. Only the upper triangle's symmetry is assumed, not checked: the matrix is
/// symmetrised as `(A + A^T) / 2` first.
///
/// # Errors
/// [`Error::LengthMismatch`] for a wrong size, [`Error::InvalidValue`] for a non-finite
/// entry, [`Error::Matrix`] if the rotations do not converge (not seen in practice).
pub fn symmetric_eigen(matrix: &[f64], dim: usize) -> Result<SymmetricEigen> {
    check_dim(dim)?;
    if matrix.len() != dim * dim {
        return Err(Error::LengthMismatch {
            what: "matrix",
            expected: dim * dim,
            got: matrix.len(),
        });
    }
    if let Some((index, &value)) = matrix.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::InvalidValue { what: "matrix entry", index, value });
    }
    let d = dim;
    let mut a = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            a[i * d + j] = (matrix[i * d + j] + matrix[j * d + i]) / 2.0;
        }
    }
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    const MAX_SWEEPS: usize = 100;
    for _ in 0..MAX_SWEEPS {
        let mut off = 0.0;
        for p in 0..d {
            for q in p + 1..d {
                off += a[p * d + q] * a[p * d + q];
            }
        }
        // Converged once the off-diagonal mass is at rounding level of the whole matrix.
        if off <= total * (f64::EPSILON * f64::EPSILON) || off == 0.0 {
            return Ok(SymmetricEigen {
                values: (0..d).map(|i| a[i * d + i]).collect(),
                vectors: v,
            });
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = a[p * d + q];
                if apq == 0.0 {
                    continue;
                }
                let app = a[p * d + p];
                let aqq = a[q * d + q];
                let theta = (aqq - app) / (2.0 * apq);
                // The smaller root of t^2 + 2 t theta - 1 = 0 keeps the rotation angle below
                // pi/4, which is what makes the sweep converge.
                let t = if theta.is_infinite() {
                    0.0
                } else {
                    theta.signum() / (theta.abs() + theta.hypot(1.0))
                };
                if t == 0.0 {
                    a[p * d + q] = 0.0;
                    a[q * d + p] = 0.0;
                    continue;
                }
                let c = 1.0 / t.hypot(1.0);
                let s = t * c;
                a[p * d + p] = app - t * apq;
                a[q * d + q] = aqq + t * apq;
                a[p * d + q] = 0.0;
                a[q * d + p] = 0.0;
                for r in 0..d {
                    if r != p && r != q {
                        let arp = a[r * d + p];
                        let arq = a[r * d + q];
                        let new_rp = c * arp - s * arq;
                        let new_rq = s * arp + c * arq;
                        a[r * d + p] = new_rp;
                        a[p * d + r] = new_rp;
                        a[r * d + q] = new_rq;
                        a[q * d + r] = new_rq;
                    }
                    let vrp = v[r * d + p];
                    let vrq = v[r * d + q];
                    v[r * d + p] = c * vrp - s * vrq;
                    v[r * d + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    Err(Error::Matrix(format!(
        "Jacobi eigen-decomposition of a {d}x{d} matrix did not converge in {MAX_SWEEPS} sweeps"
    )))
}

/// The symmetric square root of a symmetric positive semi-definite matrix; eigenvalues
/// that rounding made slightly negative are treated as zero.
///
/// # Errors
/// As [`symmetric_eigen`].
pub fn sqrt_psd(matrix: &[f64], dim: usize) -> Result<Vec<f64>> {
    let eig = symmetric_eigen(matrix, dim)?;
    let d = dim;
    let roots: Vec<f64> = eig.values.iter().map(|&l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; d * d];
    for i in 0..d {
        for j in i..d {
            let mut sum = 0.0;
            for (k, &r) in roots.iter().enumerate() {
                sum += eig.vectors[i * d + k] * r * eig.vectors[j * d + k];
            }
            out[i * d + j] = sum;
            out[j * d + i] = sum;
        }
    }
    Ok(out)
}

/// `A * B` for `d x d` row-major matrices.
fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let mut out = vec![0.0; d * d];
    for (out_row, a_row) in out.chunks_exact_mut(d).zip(a.chunks_exact(d)) {
        for (&aik, b_row) in a_row.iter().zip(b.chunks_exact(d)) {
            for (o, &bkj) in out_row.iter_mut().zip(b_row) {
                *o += aik * bkj;
            }
        }
    }
    out
}

/// The squared Frechet distance between the Gaussians `N(m1, S1)` and `N(m2, S2)`:
/// `|m1 - m2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))`. With Inception pool features this is
/// the FID.
///
/// The result is clamped at zero, since rounding can push the distance of (near-)identical
/// statistics a few ulps below it.
///
/// # Errors
/// [`Error::LengthMismatch`] when the dimensions differ, or the errors of
/// [`symmetric_eigen`].
pub fn frechet_distance(a: &FeatureStats, b: &FeatureStats) -> Result<f64> {
    let d = a.dim;
    if b.dim != d {
        return Err(Error::LengthMismatch {
            what: "second feature statistics",
            expected: d,
            got: b.dim,
        });
    }
    for s in [a, b] {
        if s.mean.len() != d || s.covariance.len() != d * d {
            return Err(Error::Matrix(format!(
                "statistics with dim {d} hold {} mean values and {} covariance entries",
                s.mean.len(),
                s.covariance.len()
            )));
        }
    }
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    let root_a = sqrt_psd(&a.covariance, d)?;
    let inner = matmul(&matmul(&root_a, &b.covariance, d), &root_a, d);
    let eig = symmetric_eigen(&inner, d)?;
    let trace_sqrt: f64 = eig.values.iter().map(|&l| l.max(0.0).sqrt()).sum();
    let distance = mean_term + trace(&a.covariance) + trace(&b.covariance) - 2.0 * trace_sqrt;
    Ok(distance.max(0.0))
}
