//! A bounds-checked f32 matrix product over strided slices, on the `gemm` crate's kernels (the
//! ones candle's `matmul` runs, with their AVX-512 / AVX2 / NEON micro-kernels chosen at run
//! time). The convolution kernels call it directly so that products read and write NCHW
//! buffers in place (a row stride per image plane, a transposed weight as a column stride)
//! instead of going through candle tensors, transposes and copies.

use candle_core::{bail, Result};

/// A read-only `rows x cols` matrix: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A writable `rows x cols` matrix: element `(r, c)` is `data[r * rs + c * cs]`.
pub(crate) struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl Mat<'_> {
    /// A row-major matrix over a contiguous slice.
    pub fn rows(data: &[f32], rows: usize, cols: usize) -> Mat<'_> {
        Mat { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, as a view.
    pub fn t(self) -> Self {
        Mat { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }
}

impl MatMut<'_> {
    /// A row-major matrix over a contiguous slice.
    pub fn rows(data: &mut [f32], rows: usize, cols: usize) -> MatMut<'_> {
        MatMut { data, rows, cols, rs: cols, cs: 1 }
    }
}

/// The largest index a strided matrix touches lies within its slice.
fn in_bounds(len: usize, rows: usize, cols: usize, rs: usize, cs: usize) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let last = (rows - 1).checked_mul(rs).zip((cols - 1).checked_mul(cs));
    matches!(last.and_then(|(a, b)| a.checked_add(b)), Some(i) if i < len)
}

/// `dst = lhs x rhs`, or `dst += lhs x rhs` with `accumulate`; the product itself runs on all
/// of rayon's threads when `parallel`, on the calling thread otherwise.
///
/// # Errors
/// Shapes that do not chain, a view outside its slice, a destination whose elements overlap.
pub(crate) fn matmul(
    dst: MatMut<'_>,
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    accumulate: bool,
    parallel: bool,
) -> Result<()> {
    let (m, n, k) = (dst.rows, dst.cols, lhs.cols);
    if lhs.rows != m || rhs.rows != k || rhs.cols != n {
        bail!(
            "matmul: {}x{} = {}x{} x {}x{}",
            dst.rows,
            dst.cols,
            lhs.rows,
            lhs.cols,
            rhs.rows,
            rhs.cols
        );
    }
    // Distinct destination elements (row-major or column-major, possibly padded), so that
    // gemm's threads never write the same address.
    let disjoint = (dst.cs == 1 && dst.rs >= n) || (dst.rs == 1 && dst.cs >= m);
    if !disjoint && m > 1 && n > 1 {
        bail!("matmul: destination strides ({}, {}) overlap", dst.rs, dst.cs);
    }
    if !in_bounds(dst.data.len(), m, n, dst.rs, dst.cs)
        || !in_bounds(lhs.data.len(), m, k, lhs.rs, lhs.cs)
        || !in_bounds(rhs.data.len(), k, n, rhs.rs, rhs.cs)
    {
        bail!("matmul: a {m}x{k} x {k}x{n} product reaches outside its buffers");
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                for c in 0..n {
                    dst.data[r * dst.rs + c * dst.cs] = 0.0;
                }
            }
        }
        return Ok(());
    }
    // SAFETY: the three views were checked above to stay inside their slices for every
    // (row, column) the product visits and to chain; `dst` is borrowed mutably and its
    // elements are distinct, so no other reference reads or writes them while gemm runs;
    // `lhs` and `rhs` are shared borrows that cannot alias the exclusive `dst`.
    #[allow(unsafe_code)]
    unsafe {
        product_at(dst.data.as_mut_ptr(), (dst.rs, dst.cs), lhs, rhs, accumulate, parallel);
    }
    Ok(())
}

/// gemm's product of `lhs (m x k)` and `rhs (k x n)` into the `m x n` destination at `dst`,
/// element `(r, c)` at `dst + r * rs + c * cs`, added to what is there with `accumulate`;
/// on all of rayon's threads when `parallel`.
///
/// # Safety
/// `lhs` and `rhs` chain and stay inside their slices for every element the product reads;
/// `dst` is valid for writes (and with `accumulate` reads) of every `(r, c)`, those elements
/// are distinct, and nothing else reads or writes them during the call. Without `accumulate`
/// gemm never reads `dst` (alpha is ignored, as its documentation states) and writes every
/// element.
#[allow(unsafe_code)]
unsafe fn product_at(
    dst: *mut f32,
    (rs, cs): (usize, usize),
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    accumulate: bool,
    parallel: bool,
) {
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // Strides fit `isize`: every view indexes inside a slice, whose length does.
    let s = |v: usize| v as isize;
    // SAFETY: the caller's contract above.
    unsafe {
        gemm::gemm(
            lhs.rows,
            rhs.cols,
            lhs.cols,
            dst,
            s(cs),
            s(rs),
            accumulate,
            lhs.data.as_ptr(),
            s(lhs.cs),
            s(lhs.rs),
            rhs.data.as_ptr(),
            s(rhs.cs),
            s(rhs.rs),
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn naive(a: Mat<'_>, b: Mat<'_>) -> Vec<f32> {
        let mut out = vec![0f32; a.rows * b.cols];
        for r in 0..a.rows {
            for c in 0..b.cols {
                out[r * b.cols + c] = (0..a.cols)
                    .map(|i| a.data[r * a.rs + i * a.cs] * b.data[i * b.rs + c * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_views_match_a_naive_product() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..40).map(|i| (i as f32 * 0.11).cos()).collect();
        // a as 5x7 row-major, b as the transpose of an 8x5 row-major matrix (5x8).
        let (am, bm) = (Mat::rows(&a, 5, 7), Mat::rows(&b, 8, 5));
        let want = naive(am.t(), bm.t());
        for parallel in [false, true] {
            let mut got = vec![0f32; 7 * 8];
            matmul(MatMut::rows(&mut got, 7, 8), am.t(), bm.t(), false, parallel).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
            // Accumulating adds the same product again.
            matmul(MatMut::rows(&mut got, 7, 8), am.t(), bm.t(), true, parallel).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() < 1e-5, "{g} vs {w}");
            }
        }
    }

    #[test]
    fn views_outside_their_slices_are_refused() {
        let a = vec![1f32; 6];
        let mut d = vec![0f32; 4];
        let short = Mat { data: &a[..5], rows: 2, cols: 3, rs: 3, cs: 1 };
        let b = Mat::rows(&a, 3, 2);
        assert!(matmul(MatMut::rows(&mut d, 2, 2), short, b, false, false).is_err());
        let overlapping = MatMut { data: &mut d, rows: 2, cols: 2, rs: 1, cs: 1 };
        assert!(matmul(overlapping, Mat::rows(&a, 2, 3), b, false, false).is_err());
        assert!(matmul(MatMut::rows(&mut d, 2, 2), b, b, false, false).is_err());
    }
}
