//! FID statistics: feature means and covariances, and the Frechet distance between two
//! Gaussians fitted to them.
//!
//! The distance needs `tr sqrt(S1 S2)`. `S1 S2` is not symmetric, and a general matrix square
//! root (scipy's `sqrtm`, used by pytorch-fid) can return complex parts and needs an `eps`
//! fudge on near-singular covariances. Here the same trace is computed from symmetric matrices
//! only: with `S1 = W W^T`, `W = V diag(sqrt(lambda))` from the eigen-decomposition of `S1`,
//! `S1 S2 = W (W^T S2)` has the eigenvalues of `W^T S2 W`, which is symmetric PSD, so
//! `tr sqrt(S1 S2) = sum_i sqrt(max(mu_i, 0))` over them. (`W^T S2 W = V^T (R S2 R) V` with
//! `R = sqrt(S1)`, the usual formulation, without forming `R`.)
//!
//! Eigen-decompositions use Householder tridiagonalisation followed by the implicit symmetric
//! QR algorithm with Wilkinson shifts (backward stable: eigenvalues within a few ulps of
//! `|S|`, even for singular matrices). The distance costs one decomposition with
//! eigenvectors (~10 d^3 flops), one without (~2 d^3) and ~3 d^3 of products: about 15 d^3
//! flops in all, ~0.2 s at d = 512 and ~15 s at d = 2048 on one core of the build machine
//! (the former cyclic Jacobi took ~34 s at d = 512; see `benches/NOTES.md`).
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
    /// The eigenvalues, in ascending order.
    pub values: Vec<f64>,
    /// The orthonormal eigenvectors as columns of a `d x d` row-major matrix: column `k`
    /// belongs to `values[k]`.
    pub vectors: Vec<f64>,
}

/// Checks a `dim x dim` row-major matrix and returns its symmetric part `(A + A^T) / 2`.
fn symmetrised(matrix: &[f64], dim: usize) -> Result<Vec<f64>> {
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
    Ok(a)
}

/// The eigen-decomposition of a symmetric `dim x dim` row-major matrix: Householder reduction
/// to tridiagonal form, then the implicit symmetric QR algorithm with Wilkinson shifts, with
/// the eigenvectors accumulated (Golub & Van Loan, *Matrix Computations*, 8.3). About
/// `10 d^3` flops. Only the upper triangle's symmetry is assumed, not checked: the matrix is
/// symmetrised as `(A + A^T) / 2` first.
///
/// # Errors
/// [`Error::InvalidArgument`] for `dim == 0`, [`Error::LengthMismatch`] for a wrong size,
/// [`Error::InvalidValue`] for a non-finite entry, [`Error::Matrix`] if the QR iteration does
/// not converge (not seen in practice: Wilkinson's shift converges globally).
pub fn symmetric_eigen(matrix: &[f64], dim: usize) -> Result<SymmetricEigen> {
    let a = symmetrised(matrix, dim)?;
    let (values, rows) = eigen_rows(a, dim)?;
    let d = dim;
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut vectors = vec![0.0; d * d];
    for (col, &k) in order.iter().enumerate() {
        for (i, &x) in rows[k * d..(k + 1) * d].iter().enumerate() {
            vectors[i * d + col] = x;
        }
    }
    Ok(SymmetricEigen { values: order.iter().map(|&k| values[k]).collect(), vectors })
}

/// Eigenvalues (unsorted) and eigenvectors as *rows* (row `k` belongs to value `k`) of the
/// symmetric, finite, `d x d` matrix `a`, which is overwritten.
fn eigen_rows(mut a: Vec<f64>, d: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let Some(scale) = power_of_two_scale(&mut a) else {
        return Ok((vec![0.0; d], identity(d)));
    };
    let mut t = tridiagonalise(&mut a, d);
    let mut rows = reflectors_transposed(&a, &t.beta, d);
    tridiagonal_qr(&mut t.diag, &mut t.off, Some(&mut rows))?;
    Ok((t.diag.iter().map(|x| x * scale).collect(), rows))
}

/// The eigenvalues (unsorted) of the symmetric, finite, `d x d` matrix `a`, which is
/// overwritten: as [`eigen_rows`] without the eigenvectors, so about `2 d^3` flops.
fn eigenvalues(mut a: Vec<f64>, d: usize) -> Result<Vec<f64>> {
    let Some(scale) = power_of_two_scale(&mut a) else {
        return Ok(vec![0.0; d]);
    };
    let mut t = tridiagonalise(&mut a, d);
    tridiagonal_qr(&mut t.diag, &mut t.off, None)?;
    Ok(t.diag.iter().map(|x| x * scale).collect())
}

/// Divides `a` by the power of two nearest above its largest magnitude (exact, so no rounding)
/// and returns that factor; `None` for the zero matrix. Keeps the squares taken by the
/// reduction far from overflow and underflow.
fn power_of_two_scale(a: &mut [f64]) -> Option<f64> {
    let max = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    if max == 0.0 {
        return None;
    }
    let exponent = (max.log2().ceil() as i32).clamp(-1000, 1000);
    let scale = 2.0f64.powi(exponent);
    let inv = 2.0f64.powi(-exponent);
    for x in a.iter_mut() {
        *x *= inv;
    }
    Some(scale)
}

fn identity(d: usize) -> Vec<f64> {
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        m[i * d + i] = 1.0;
    }
    m
}

/// A dot product with four partial sums, so that the compiler can vectorise it.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (a4, b4) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = a4.remainder().iter().zip(b4.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a4.zip(b4) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `T = Q^T A Q`, tridiagonal: `diag` (d values) and `off` (`off[k]` couples `k` and `k + 1`).
/// `Q = P_0 P_1 ... P_{d-2}`, with `P_k = I - beta[k] v v^T` acting on indices `k + 1..d`
/// and `v` stored in row `k` of the reduced matrix, columns `k + 1..d` (`beta[k] == 0` for
/// an identity step).
struct Tridiagonal {
    diag: Vec<f64>,
    off: Vec<f64>,
    beta: Vec<f64>,
}

/// Householder reduction of the symmetric `a` (both triangles stored) to tridiagonal form;
/// `a` is left holding the Householder vectors. `2 d^3` flops, all on contiguous rows.
///
/// Step `k` reflects the trailing block: `A22 <- P A22 P = A22 - v w^T - w v^T` with
/// `p = beta A22 v` and `w = p - (beta p.v / 2) v`. That update is applied lazily, row by row,
/// during the next step's pass (which needs the updated row `k + 1` first, then every other
/// row once for `A22 v`), so each step reads the trailing block once instead of twice.
fn tridiagonalise(a: &mut [f64], d: usize) -> Tridiagonal {
    let steps = d.saturating_sub(1);
    let mut diag = vec![0.0; d];
    let mut off = vec![0.0; steps];
    let mut beta = vec![0.0; steps];
    // The pending update: `v` in row `lo - 1` (columns `lo..d`) and `w` in `w_pending`, both
    // indexed from `lo`.
    let mut pending: Option<usize> = None;
    let mut w_pending = vec![0.0; d];
    let mut w_next = vec![0.0; d];
    for k in 0..steps {
        let lo = k + 1;
        let (head, trailing) = a.split_at_mut(lo * d);
        let (before, row_k) = head.split_at_mut(k * d);
        let update = pending.map(|p| (p, &before[(p - 1) * d + p..p * d], &w_pending[..d - p]));
        if let Some((p, v, w)) = update {
            rank2_update(&mut row_k[p..], v[0], w[0], v, w);
        }
        diag[k] = row_k[k];
        // The column below the diagonal equals the row right of it (symmetry).
        let x = &mut row_k[lo..];
        let tail_sq: f64 = x[1..].iter().map(|x| x * x).sum();
        if tail_sq == 0.0 {
            off[k] = x[0];
            if let Some((p, v, w)) = update {
                for (i, row) in trailing.chunks_exact_mut(d).enumerate() {
                    let r = lo + i - p;
                    rank2_update(&mut row[p..], v[r], w[r], v, w);
                }
            }
            pending = None;
            continue;
        }
        let norm = (x[0] * x[0] + tail_sq).sqrt();
        // Reflect x onto alpha e_1 with alpha of the opposite sign to x_0, so that
        // v_0 = x_0 - alpha does not cancel.
        let alpha = if x[0] >= 0.0 { -norm } else { norm };
        x[0] -= alpha;
        let b = 2.0 / (x[0] * x[0] + tail_sq);
        off[k] = alpha;
        beta[k] = b;
        let x = &*x;
        let p_next = &mut w_next[..d - lo];
        for ((i, row), pi) in trailing.chunks_exact_mut(d).enumerate().zip(p_next.iter_mut()) {
            if let Some((p, v, w)) = update {
                let r = lo + i - p;
                rank2_update(&mut row[p..], v[r], w[r], v, w);
            }
            *pi = b * dot(&row[lo..], x);
        }
        let half = 0.5 * b * dot(p_next, x);
        for (wi, &vi) in p_next.iter_mut().zip(x) {
            *wi -= half * vi;
        }
        std::mem::swap(&mut w_pending, &mut w_next);
        pending = Some(lo);
    }
    // The last step (x of length 1) never reflects, so it has flushed the pending update.
    if d > 0 {
        diag[d - 1] = a[d * d - 1];
    }
    Tridiagonal { diag, off, beta }
}

/// `row -= vi w + wi v`: one row of a symmetric rank-2 update.
fn rank2_update(row: &mut [f64], vi: f64, wi: f64, v: &[f64], w: &[f64]) {
    for (r, (&vj, &wj)) in row.iter_mut().zip(v.iter().zip(w)) {
        *r -= vi * wj + wi * vj;
    }
}

/// `Q^T = P_{d-2} ... P_1 P_0` from the Householder vectors [`tridiagonalise`] left in `a`,
/// built by right-multiplication from the last reflector (each step then touches only the
/// trailing block): `4/3 d^3` flops, row by row.
fn reflectors_transposed(a: &[f64], beta: &[f64], d: usize) -> Vec<f64> {
    let mut q = identity(d);
    for (k, &b) in beta.iter().enumerate().rev() {
        if b == 0.0 {
            continue;
        }
        let lo = k + 1;
        let v = &a[k * d + lo..(k + 1) * d];
        for row in q[lo * d..].chunks_exact_mut(d) {
            let s = b * dot(&row[lo..], v);
            for (r, &vj) in row[lo..].iter_mut().zip(v) {
                *r -= s * vj;
            }
        }
    }
    q
}

/// Diagonalises the symmetric tridiagonal matrix (`diag`, `off`) in place by implicit QR
/// steps with Wilkinson shifts, chasing the bulge with Givens rotations; `diag` ends up
/// holding the eigenvalues. When `rows` (`d x d`) is given, each rotation is applied to its
/// rows too, so rows that held `Q^T` end up holding the eigenvectors of `Q T Q^T` as rows.
fn tridiagonal_qr(diag: &mut [f64], off: &mut [f64], mut rows: Option<&mut [f64]>) -> Result<()> {
    let n = diag.len();
    if n < 2 {
        return Ok(());
    }
    // Wilkinson's shift converges globally and, in practice, in about two steps per
    // eigenvalue; the limit only guards against an endless loop.
    let max_steps = 30 * n;
    let mut steps = 0;
    let mut rotations: Vec<(f64, f64)> = Vec::with_capacity(n);
    let negligible = |diag: &[f64], off: &[f64], i: usize| {
        let e = off[i].abs();
        e <= f64::EPSILON * (diag[i].abs() + diag[i + 1].abs()) || e < f64::MIN_POSITIVE
    };
    let mut hi = n - 1;
    while hi > 0 {
        if negligible(diag, off, hi - 1) {
            off[hi - 1] = 0.0;
            hi -= 1;
            continue;
        }
        // The unreduced block lo..=hi.
        let mut lo = hi - 1;
        while lo > 0 && !negligible(diag, off, lo - 1) {
            lo -= 1;
        }
        if lo > 0 {
            off[lo - 1] = 0.0;
        }
        if steps == max_steps {
            return Err(Error::Matrix(format!(
                "symmetric QR iteration on a {n}x{n} tridiagonal matrix did not converge in \
                 {max_steps} steps"
            )));
        }
        steps += 1;
        // Wilkinson's shift: the eigenvalue of the trailing 2x2 block nearer its last entry.
        let t = 0.5 * (diag[hi - 1] - diag[hi]);
        let e = off[hi - 1];
        let r = t.hypot(e);
        let mu = diag[hi] - e * (e / (t + if t >= 0.0 { r } else { -r }));
        // The first rotation is that of the shifted QR step; the rest chase the bulge down.
        let mut x = diag[lo] - mu;
        let mut z = off[lo];
        rotations.clear();
        for k in lo..hi {
            let r = x.hypot(z);
            let (c, s) = if r == 0.0 { (1.0, 0.0) } else { (x / r, z / r) };
            if k > lo {
                off[k - 1] = r;
            }
            let (p, q, o) = (diag[k], diag[k + 1], off[k]);
            let (cc, ss, cs) = (c * c, s * s, c * s);
            diag[k] = cc * p + 2.0 * cs * o + ss * q;
            diag[k + 1] = ss * p - 2.0 * cs * o + cc * q;
            off[k] = cs * (q - p) + (cc - ss) * o;
            if k + 1 < hi {
                x = off[k];
                z = s * off[k + 1];
                off[k + 1] *= c;
            }
            rotations.push((c, s));
        }
        if let Some(rows) = rows.as_deref_mut() {
            apply_rotations(rows, n, lo, &rotations);
        }
    }
    Ok(())
}

/// Applies rotation `j`, `(c, s)`, to rows `lo + j` and `lo + j + 1` of the `d x d` matrix:
/// `r_k <- c r_k + s r_{k+1}`, `r_{k+1} <- c r_{k+1} - s r_k`.
fn apply_rotations(rows: &mut [f64], d: usize, lo: usize, rotations: &[(f64, f64)]) {
    for (j, &(c, s)) in rotations.iter().enumerate() {
        let k = lo + j;
        let (upper, lower) = rows.split_at_mut((k + 1) * d);
        let row_k = &mut upper[k * d..];
        let row_next = &mut lower[..d];
        for (a, b) in row_k.iter_mut().zip(row_next.iter_mut()) {
            let (x, y) = (*a, *b);
            *a = c * x + s * y;
            *b = c * y - s * x;
        }
    }
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
    // sqrt(A) = V diag(roots) V^T = Y V^T with Y = V diag(roots).
    let mut scaled = eig.vectors.clone();
    for row in scaled.chunks_exact_mut(d) {
        for (x, &r) in row.iter_mut().zip(&roots) {
            *x *= r;
        }
    }
    Ok(mul_transposed_symmetric(&scaled, &eig.vectors, d))
}

/// `A B^T` for `d x d` row-major matrices whose product is known to be symmetric: only the
/// upper triangle is computed (row-by-row dot products, blocked over rows of `B` so that the
/// block stays in cache) and mirrored.
fn mul_transposed_symmetric(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    const BLOCK: usize = 32;
    let mut out = vec![0.0; d * d];
    for j0 in (0..d).step_by(BLOCK) {
        let j1 = (j0 + BLOCK).min(d);
        for i in 0..j1 {
            let a_row = &a[i * d..(i + 1) * d];
            for j in j0.max(i)..j1 {
                out[i * d + j] = dot(a_row, &b[j * d..(j + 1) * d]);
            }
        }
    }
    for i in 0..d {
        for j in 0..i {
            out[i * d + j] = out[j * d + i];
        }
    }
    out
}

/// `A * B` for `d x d` row-major matrices: i-k-j order (contiguous rows of `B` and of the
/// output), blocked over `k` and `j` so that a block of `B` stays in cache for every row of
/// `A`. Each output is still summed over `k` in ascending order.
fn matmul(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    const K_BLOCK: usize = 64;
    const J_BLOCK: usize = 256;
    let mut out = vec![0.0; d * d];
    for j0 in (0..d).step_by(J_BLOCK) {
        let j1 = (j0 + J_BLOCK).min(d);
        for k0 in (0..d).step_by(K_BLOCK) {
            let k1 = (k0 + K_BLOCK).min(d);
            for (out_row, a_row) in out.chunks_exact_mut(d).zip(a.chunks_exact(d)) {
                let out_block = &mut out_row[j0..j1];
                for (k, &aik) in a_row.iter().enumerate().take(k1).skip(k0) {
                    for (o, &bkj) in out_block.iter_mut().zip(&b[k * d + j0..k * d + j1]) {
                        *o += aik * bkj;
                    }
                }
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
    let cov_a = symmetrised(&a.covariance, d)?;
    let cov_b = symmetrised(&b.covariance, d)?;
    let mean_term: f64 = a.mean.iter().zip(&b.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace = |m: &[f64]| (0..d).map(|i| m[i * d + i]).sum::<f64>();
    // S1 = W W^T with W = V diag(sqrt(max(lambda, 0))); the rows of `w_t` are W's columns.
    let (values, mut w_t) = eigen_rows(cov_a.clone(), d)?;
    for (row, &l) in w_t.chunks_exact_mut(d).zip(&values) {
        let root = l.max(0.0).sqrt();
        for x in row {
            *x *= root;
        }
    }
    // S1 S2 = W (W^T S2) has the eigenvalues of (W^T S2) W, which is symmetric PSD.
    let inner = mul_transposed_symmetric(&matmul(&w_t, &cov_b, d), &w_t, d);
    let trace_sqrt: f64 = eigenvalues(inner, d)?.iter().map(|&l| l.max(0.0).sqrt()).sum();
    let distance = mean_term + trace(&cov_a) + trace(&cov_b) - 2.0 * trace_sqrt;
    Ok(distance.max(0.0))
}

/// The squared Frechet distance between the Gaussians fitted to two sets of row-major
/// features (`dim` columns, `f32` or `f64`): the same value as [`frechet_distance`] of their
/// [`FeatureStats::from_rows`], computed without `d x d` matrices when both sets have at most
/// `dim` rows (the usual case for small evaluation sets with 2048-d Inception features).
///
/// With centred rows `A1` (`n1 x d`) and `A2`, `S1 S2 = A1^T (A1 A2^T) A2 / c` with
/// `c = (n1 - 1)(n2 - 1)`, whose non-zero eigenvalues are those of `C C^T / c`,
/// `C = A1 A2^T` (`n1 x n2`, cyclic invariance); so `tr sqrt(S1 S2)` is `C`'s nuclear norm
/// over `sqrt(c)`, and the traces are `|A|_F^2 / (n - 1)`. That costs about
/// `n1 n2 d + n1^2 n2 + 2 n1^3` flops instead of ~`15 d^3` (at n = 50, d = 2048: ~0.01 s instead
/// of ~15 s). With more rows than `dim` on either side it falls back to the statistics.
///
/// # Errors
/// As [`FeatureStats::from_rows`] for each set, and [`frechet_distance`].
pub fn frechet_distance_from_rows<T: Copy + Into<f64>>(
    a: &[T],
    b: &[T],
    dim: usize,
) -> Result<f64> {
    let wide = |x: &[T]| x.iter().map(|&v| v.into()).collect::<Vec<f64>>();
    let (a, b) = (wide(a), wide(b));
    let (sa, sb) = (FeatureStats::from_rows(&a, dim)?, FeatureStats::from_rows(&b, dim)?);
    if sa.count > dim || sb.count > dim {
        return frechet_distance(&sa, &sb);
    }
    // The smaller side indexes the Gram matrix, so it is `k x k` with `k = min(n1, n2)`.
    let (small, large) =
        if sa.count <= sb.count { ((&a, &sa), (&b, &sb)) } else { ((&b, &sb), (&a, &sa)) };
    let centred = |(x, s): (&Vec<f64>, &FeatureStats)| -> Vec<f64> {
        x.chunks_exact(dim).flat_map(|row| row.iter().zip(&s.mean).map(|(v, m)| v - m)).collect()
    };
    let (p, q) = (centred(small), centred(large));
    let (k, l) = (small.1.count, large.1.count);
    // C = P Q^T (k x l), then C C^T (k x k).
    let mut c = vec![0.0; k * l];
    for (i, pi) in p.chunks_exact(dim).enumerate() {
        for (j, qj) in q.chunks_exact(dim).enumerate() {
            c[i * l + j] = dot(pi, qj);
        }
    }
    let mut cct = vec![0.0; k * k];
    for i in 0..k {
        for j in i..k {
            let v = dot(&c[i * l..(i + 1) * l], &c[j * l..(j + 1) * l]);
            cct[i * k + j] = v;
            cct[j * k + i] = v;
        }
    }
    let scale = ((k - 1) as f64 * (l - 1) as f64).sqrt();
    let nuclear: f64 = eigenvalues(cct, k)?.iter().map(|&x| x.max(0.0).sqrt()).sum();
    let trace = |x: &[f64], n: usize| x.iter().map(|v| v * v).sum::<f64>() / (n - 1) as f64;
    let mean_term: f64 = sa.mean.iter().zip(&sb.mean).map(|(x, y)| (x - y) * (x - y)).sum();
    let distance = mean_term + trace(&p, k) + trace(&q, l) - 2.0 * nuclear / scale;
    Ok(distance.max(0.0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn random_symmetric(rng: &mut ChaCha8Rng, d: usize) -> Vec<f64> {
        let mut a = vec![0.0; d * d];
        for i in 0..d {
            for j in i..d {
                let x = rng.random::<f64>() * 2.0 - 1.0;
                a[i * d + j] = x;
                a[j * d + i] = x;
            }
        }
        a
    }

    fn max_abs(a: &[f64]) -> f64 {
        a.iter().fold(0.0f64, |m, x| m.max(x.abs()))
    }

    /// max |V diag(w) V^T - A| / max |A| (or absolute for the zero matrix).
    fn reconstruction_error(a: &[f64], eig: &SymmetricEigen, d: usize) -> f64 {
        let mut err = 0.0f64;
        for i in 0..d {
            for j in 0..d {
                let v: f64 = (0..d)
                    .map(|k| eig.vectors[i * d + k] * eig.values[k] * eig.vectors[j * d + k])
                    .sum();
                err = err.max((v - a[i * d + j]).abs());
            }
        }
        err / max_abs(a).max(f64::MIN_POSITIVE).max(if max_abs(a) == 0.0 { 1.0 } else { 0.0 })
    }

    /// max |V^T V - I|.
    fn orthonormality_error(eig: &SymmetricEigen, d: usize) -> f64 {
        let mut err = 0.0f64;
        for k in 0..d {
            for l in 0..d {
                let v: f64 = (0..d).map(|i| eig.vectors[i * d + k] * eig.vectors[i * d + l]).sum();
                err = err.max((v - f64::from(u8::from(k == l))).abs());
            }
        }
        err
    }

    fn assert_ascending(values: &[f64]) {
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "not ascending: {values:?}");
    }

    /// Checks reconstruction, orthonormality and order; returns the two errors.
    fn check(a: &[f64], d: usize) -> (SymmetricEigen, f64, f64) {
        let eig = symmetric_eigen(a, d).unwrap();
        assert_eq!(eig.values.len(), d);
        assert_eq!(eig.vectors.len(), d * d);
        assert_ascending(&eig.values);
        let rec = reconstruction_error(a, &eig, d);
        let orth = orthonormality_error(&eig, d);
        assert!(rec <= 1e-12, "d = {d}: reconstruction error {rec:e}");
        assert!(orth <= 1e-12, "d = {d}: orthonormality error {orth:e}");
        (eig, rec, orth)
    }

    #[test]
    fn random_symmetric_matrices_decompose() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for d in [1usize, 2, 3, 17, 100] {
            for trial in 0..3 {
                let a = random_symmetric(&mut rng, d);
                let (eig, rec, orth) = check(&a, d);
                // The trace is the sum of the eigenvalues.
                let trace: f64 = (0..d).map(|i| a[i * d + i]).sum();
                let sum: f64 = eig.values.iter().sum();
                assert!((trace - sum).abs() <= 1e-12 * d as f64, "trace {trace} vs {sum}");
                eprintln!(
                    "d = {d:3} trial {trial}: reconstruction {rec:.1e}, orthonormality {orth:.1e}"
                );
            }
        }
    }

    #[test]
    fn two_by_two_closed_form() {
        // [[2, 1], [1, 2]]: eigenvalues 1 and 3, eigenvectors (1, -1) / sqrt 2 and (1, 1) / sqrt 2.
        let (eig, _, _) = check(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((eig.values[0] - 1.0).abs() < 1e-15 && (eig.values[1] - 3.0).abs() < 1e-15);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((eig.vectors[0].abs() - h).abs() < 1e-15);
        assert!((eig.vectors[0] + eig.vectors[2]).abs() < 1e-15, "(1, -1) direction");
    }

    #[test]
    fn diagonal_and_zero_matrices() {
        let d = 6;
        let entries = [3.0, -1.0, 0.0, 7.5, -1.0, 2.0];
        let mut a = vec![0.0; d * d];
        for (i, &x) in entries.iter().enumerate() {
            a[i * d + i] = x;
        }
        let (eig, _, _) = check(&a, d);
        let mut want = entries.to_vec();
        want.sort_by(f64::total_cmp);
        assert_eq!(eig.values, want, "a diagonal matrix's eigenvalues are exact");

        let zero = vec![0.0; d * d];
        let (eig, rec, _) = check(&zero, d);
        assert!(eig.values.iter().all(|&x| x == 0.0));
        assert_eq!(rec, 0.0);
        assert_eq!(sqrt_psd(&zero, d).unwrap(), zero);
    }

    /// `Q diag(values) Q^T` with `Q` a product of three random Householder reflections.
    fn with_spectrum(rng: &mut ChaCha8Rng, values: &[f64]) -> Vec<f64> {
        let d = values.len();
        let mut q = identity(d);
        for _ in 0..3 {
            let u: Vec<f64> = (0..d).map(|_| rng.random::<f64>() - 0.5).collect();
            let uu: f64 = u.iter().map(|x| x * x).sum();
            let h: Vec<f64> = (0..d * d)
                .map(|ij| {
                    let (i, j) = (ij / d, ij % d);
                    f64::from(u8::from(i == j)) - 2.0 * u[i] * u[j] / uu
                })
                .collect();
            q = matmul(&q, &h, d);
        }
        let mut scaled = q.clone();
        for row in scaled.chunks_exact_mut(d) {
            for (x, &l) in row.iter_mut().zip(values) {
                *x *= l;
            }
        }
        mul_transposed_symmetric(&scaled, &q, d)
    }

    #[test]
    fn repeated_eigenvalues() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let spectrum = [1.0, 1.0, 1.0, 2.0, 2.0, 5.0, -3.0, -3.0, 0.0, 0.0, 0.0, 0.0];
        let a = with_spectrum(&mut rng, &spectrum);
        let d = spectrum.len();
        let (eig, rec, orth) = check(&a, d);
        let mut want = spectrum.to_vec();
        want.sort_by(f64::total_cmp);
        for (got, want) in eig.values.iter().zip(&want) {
            assert!((got - want).abs() < 1e-13, "{got} vs {want}");
        }
        eprintln!("repeated: reconstruction {rec:.1e}, orthonormality {orth:.1e}");
        // Identity times a constant: every vector is an eigenvector.
        let mut c = vec![0.0; 9];
        for i in 0..3 {
            c[i * 3 + i] = 4.0;
        }
        let (eig, _, _) = check(&c, 3);
        assert_eq!(eig.values, vec![4.0; 3]);
    }

    #[test]
    fn rank_deficient_covariance() {
        // 5 samples in 20 dimensions: rank 4.
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let d = 20;
        let x: Vec<f64> = (0..5 * d).map(|_| rng.random::<f64>() * 4.0 - 2.0).collect();
        let s = FeatureStats::from_rows(&x, d).unwrap();
        let (eig, rec, orth) = check(&s.covariance, d);
        let top = eig.values[d - 1];
        assert!(eig.values[..d - 4].iter().all(|l| l.abs() <= 1e-14 * top), "{:?}", eig.values);
        assert!(eig.values[d - 4] > 1e-3 * top);
        let root = sqrt_psd(&s.covariance, d).unwrap();
        let square = matmul(&root, &root, d);
        let err = square.iter().zip(&s.covariance).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-12 * max_abs(&s.covariance), "sqrt^2 error {err:e}");
        eprintln!(
            "rank 4 of 20: reconstruction {rec:.1e}, orthonormality {orth:.1e}, sqrt^2 {err:.1e}"
        );
    }

    #[test]
    fn badly_scaled_matrices() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        for scale in [1e-200, 1e-20, 1e20, 1e200] {
            let a: Vec<f64> = random_symmetric(&mut rng, 9).iter().map(|x| x * scale).collect();
            check(&a, 9);
        }
        // Graded: entries spanning 40 orders of magnitude.
        let d = 8;
        let a: Vec<f64> =
            (0..d * d).map(|ij| 10f64.powi(-((ij / d + ij % d) as i32) * 3)).collect();
        check(&a, d);
    }

    #[test]
    fn invalid_input_is_an_error() {
        assert!(matches!(
            symmetric_eigen(&[1.0, f64::NAN, 0.0, 1.0], 2),
            Err(Error::InvalidValue { .. })
        ));
        assert!(matches!(symmetric_eigen(&[f64::INFINITY], 1), Err(Error::InvalidValue { .. })));
        assert!(matches!(symmetric_eigen(&[1.0, 2.0, 3.0], 2), Err(Error::LengthMismatch { .. })));
        assert!(symmetric_eigen(&[], 0).is_err());
        assert!(sqrt_psd(&[f64::NEG_INFINITY, 0.0, 0.0, 1.0], 2).is_err());
        let mut s = FeatureStats::from_parts(vec![0.0; 2], vec![1.0, 0.0, 0.0, 1.0], 3).unwrap();
        let t = s.clone();
        s.covariance[1] = f64::NAN;
        assert!(matches!(frechet_distance(&s, &t), Err(Error::InvalidValue { .. })));
        assert!(matches!(frechet_distance(&t, &s), Err(Error::InvalidValue { .. })));
    }

    #[test]
    fn blocked_products_match_naive() {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let d = 70; // not a multiple of any block size
        let a: Vec<f64> = (0..d * d).map(|_| rng.random::<f64>() - 0.5).collect();
        let b: Vec<f64> = (0..d * d).map(|_| rng.random::<f64>() - 0.5).collect();
        let c = matmul(&a, &b, d);
        let s = mul_transposed_symmetric(&a, &a, d);
        for i in 0..d {
            for j in 0..d {
                let ab: f64 = (0..d).map(|k| a[i * d + k] * b[k * d + j]).sum();
                let aat: f64 = (0..d).map(|k| a[i * d + k] * a[j * d + k]).sum();
                assert!((c[i * d + j] - ab).abs() < 1e-13);
                assert!((s[i * d + j] - aat).abs() < 1e-13);
            }
        }
    }

    #[test]
    fn low_rank_path_matches_the_statistics_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(16);
        let d = 40;
        for (n1, n2) in [(7usize, 12usize), (12, 7), (40, 40), (2, 3)] {
            let a: Vec<f64> = (0..n1 * d).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
            let b: Vec<f64> = (0..n2 * d).map(|_| rng.random::<f64>() * 3.0 - 1.2).collect();
            let want = frechet_distance(
                &FeatureStats::from_rows(&a, d).unwrap(),
                &FeatureStats::from_rows(&b, d).unwrap(),
            )
            .unwrap();
            let got = frechet_distance_from_rows(&a, &b, d).unwrap();
            let rel = (got - want).abs() / want;
            eprintln!("n = {n1}, {n2}: rows {got} vs stats {want}: relative {rel:.1e}");
            assert!(rel < 1e-7, "n = {n1}, {n2}: {got} vs {want}");
        }
        // More rows than dimensions: the statistics path, the same number exactly.
        let a: Vec<f32> = (0..50 * 4).map(|i| ((i * 37) % 11) as f32).collect();
        let b: Vec<f32> = (0..60 * 4).map(|i| ((i * 13) % 7) as f32).collect();
        let want = frechet_distance(
            &FeatureStats::from_rows_f32(&a, 4).unwrap(),
            &FeatureStats::from_rows_f32(&b, 4).unwrap(),
        )
        .unwrap();
        assert_eq!(frechet_distance_from_rows(&a, &b, 4).unwrap(), want);
        assert!(frechet_distance_from_rows(&a[..4], &b, 4).is_err());
    }
}
