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

/// `lhs x rhs` as a new row-major matrix, written by the product itself: unlike a zeroed
/// vector passed to [`matmul`], the output is not cleared first (a full extra pass).
///
/// # Errors
/// As [`matmul`].
pub(crate) fn matmul_new(lhs: Mat<'_>, rhs: Mat<'_>, parallel: bool) -> Result<Vec<f32>> {
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    let len = m * n;
    let chained = rhs.rows == k;
    let inside = in_bounds(lhs.data.len(), m, k, lhs.rs, lhs.cs)
        && in_bounds(rhs.data.len(), k, n, rhs.rs, rhs.cs);
    if k == 0 || len == 0 || !chained || !inside {
        // Nothing to multiply, or an error: `matmul` zeroes or reports it.
        let mut out = vec![0f32; len];
        matmul(MatMut::rows(&mut out, m, n), lhs, rhs, false, parallel)?;
        return Ok(out);
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    // SAFETY: `out` has capacity for the `m x n` row-major destination (row stride n, column
    // stride 1), whose elements are distinct; `lhs` and `rhs` were checked above to stay inside
    // their slices and chain (k > 0). Without accumulation gemm never reads the destination
    // and writes every one of its `m * n` elements, so after the call all `len` values are
    // initialised; `f32` needs no drop.
    #[allow(unsafe_code)]
    unsafe {
        product_at(out.as_mut_ptr(), (n, 1), lhs, rhs, false, parallel);
        out.set_len(len);
    }
    Ok(out)
}

/// `lhs x rhs` as a new row-major matrix, computed in blocks of `block_rows` rows, one rayon
/// task per block (each product on its own thread), and `finish(first_row, block)` applied to
/// each block as soon as it is written, while it is still in that core's cache. One parallel
/// region instead of the product's and then the epilogue's; like [`matmul_new`], the output is
/// not cleared first.
///
/// # Errors
/// As [`matmul`].
pub(crate) fn matmul_new_blocks(
    lhs: Mat<'_>,
    rhs: Mat<'_>,
    block_rows: usize,
    finish: impl Fn(usize, &mut [f32]) + Sync,
) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
    let len = m * n;
    let block_rows = block_rows.max(1);
    let chained = rhs.rows == k;
    let inside = in_bounds(lhs.data.len(), m, k, lhs.rs, lhs.cs)
        && in_bounds(rhs.data.len(), k, n, rhs.rs, rhs.cs);
    if k == 0 || len == 0 || !chained || !inside {
        let mut out = matmul_new(lhs, rhs, false)?;
        for (i, block) in out.chunks_mut(block_rows * n.max(1)).enumerate() {
            finish(i * block_rows, block);
        }
        return Ok(out);
    }
    let mut out: Vec<f32> = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(block_rows * n).enumerate().for_each(
        |(i, dst)| {
            let (first, rows) = (i * block_rows, dst.len() / n);
            let lhs = Mat { data: &lhs.data[first * lhs.rs..], rows, ..lhs };
            // SAFETY: `dst` is this block's `rows x n` row-major part of the output, exclusive
            // to this task (row stride n, column stride 1, elements distinct). Rows
            // `first..first + rows` of `lhs` lie inside its slice (the whole view was checked
            // above, and the block view starts at its row `first`), `rhs` was checked whole,
            // and k > 0. Without accumulation gemm never reads `dst` and writes all of its
            // `rows * n` elements, so the slice is initialised when it is viewed as `f32`
            // below; `f32` needs no drop and has the layout of `MaybeUninit<f32>`.
            #[allow(unsafe_code)]
            let block = unsafe {
                let ptr = dst.as_mut_ptr().cast::<f32>();
                product_at(ptr, (n, 1), lhs, rhs, false, false);
                std::slice::from_raw_parts_mut(ptr, dst.len())
            };
            finish(first, block);
        },
    );
    // SAFETY: the first `len` slots were split into blocks that the tasks above each wrote in
    // full (for_each returns only after every task ran); the capacity is at least `len`.
    #[allow(unsafe_code)]
    unsafe {
        out.set_len(len);
    }
    Ok(out)
}

/// A band of columns of a row-major destination, handed to one task by [`par_column_bands`]:
/// its `rows x cols` elements (row stride `rs`) belong to it alone.
pub(crate) struct ColumnBand<'a> {
    ptr: *mut f32,
    rows: usize,
    cols: usize,
    rs: usize,
    _dst: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: a band is a set of elements no other band or reference touches (see
// `par_column_bands`), so moving its pointer to another thread shares nothing.
#[allow(unsafe_code)]
unsafe impl Send for ColumnBand<'_> {}

impl ColumnBand<'_> {
    /// Rows `first..first + lhs.rows` of the band `= lhs x rhs` (`rhs` has the band's columns).
    ///
    /// # Errors
    /// Shapes that do not chain or do not fit the band, a view outside its slice.
    pub fn product(&mut self, first: usize, lhs: Mat<'_>, rhs: Mat<'_>) -> Result<()> {
        let (m, n, k) = (lhs.rows, rhs.cols, lhs.cols);
        if rhs.rows != k || n != self.cols || first + m > self.rows {
            bail!(
                "matmul: rows {first}.. of a {}x{} band = {m}x{k} x {}x{n}",
                self.rows,
                self.cols,
                rhs.rows
            );
        }
        if !in_bounds(lhs.data.len(), m, k, lhs.rs, lhs.cs)
            || !in_bounds(rhs.data.len(), k, n, rhs.rs, rhs.cs)
        {
            bail!("matmul: a {m}x{k} x {k}x{n} product reaches outside its buffers");
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            self.for_each_row(|r, row| {
                if (first..first + m).contains(&r) {
                    row.fill(0.0);
                }
            });
            return Ok(());
        }
        // SAFETY: rows `first..first + m` of the band are inside it (checked above) and its
        // elements are this band's alone (`par_column_bands`), distinct in row-major order;
        // `lhs` and `rhs` chain and stay inside their slices (checked above), k > 0.
        #[allow(unsafe_code)]
        unsafe {
            let at = self.ptr.add(first * self.rs);
            product_at(at, (self.rs, 1), lhs, rhs, false, false);
        }
        Ok(())
    }

    /// `f(row, values)` over the band's rows, each as a slice of its `cols` values.
    pub fn for_each_row(&mut self, mut f: impl FnMut(usize, &mut [f32])) {
        for r in 0..self.rows {
            // SAFETY: row r's `cols` values lie inside the destination (checked when the band
            // was made) and belong to this band alone; `&mut self` keeps this the only view
            // of them while `f` runs.
            #[allow(unsafe_code)]
            let row =
                unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.rs), self.cols) };
            f(r, row);
        }
    }
}

/// Cuts a row-major `dst` (column stride 1) into the column `bands` (sorted, disjoint, inside
/// its columns) and runs `f(band index, band)` for each, one rayon task per band: products
/// that write straight into their columns of every row (an image's output planes cut into
/// bands of output rows) instead of into separate blocks copied in afterwards.
///
/// # Errors
/// A destination that is not row-major or is outside its slice, bands out of order or range;
/// the first error of `f`.
pub(crate) fn par_column_bands(
    dst: MatMut<'_>,
    bands: &[std::ops::Range<usize>],
    f: impl Fn(usize, ColumnBand<'_>) -> Result<()> + Sync,
) -> Result<()> {
    use rayon::prelude::*;
    if dst.cs != 1 || dst.rs < dst.cols || !in_bounds(dst.data.len(), dst.rows, dst.cols, dst.rs, 1)
    {
        bail!(
            "matmul: a {}x{} destination of row stride {} cannot be cut into column bands",
            dst.rows,
            dst.cols,
            dst.rs
        );
    }
    let ordered = bands.windows(2).all(|w| w[0].end <= w[1].start);
    if !ordered || bands.iter().any(|b| b.start > b.end || b.end > dst.cols) {
        bail!("matmul: column bands {bands:?} of {} columns overlap or leave them", dst.cols);
    }
    let base = dst.data.as_mut_ptr();
    let (rows, rs) = (dst.rows, dst.rs);
    let views: Vec<ColumnBand<'_>> = bands
        .iter()
        .map(|b| ColumnBand {
            // SAFETY: with rows, `b.start <= cols <= len` (checked above), so the offset stays
            // within (or one past) the destination's allocation; without, nothing is ever
            // read or written through the pointer.
            #[allow(unsafe_code)]
            ptr: if rows == 0 { base } else { unsafe { base.add(b.start) } },
            rows,
            cols: b.len(),
            rs,
            _dst: std::marker::PhantomData,
        })
        .collect();
    views.into_par_iter().enumerate().try_for_each(|(i, band)| f(i, band))
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
    fn block_products_match_a_naive_product_and_finish_each_block() {
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * 7919 + seed * 104_729) % 211) as f32 / 105.0 - 1.0).collect()
        };
        for (m, k, n, block) in [(7, 5, 9, 3), (24, 16, 33, 12), (5, 1, 1, 8), (3, 0, 4, 2)] {
            let (a, b) = (vals(m * k, 1), vals(k * n, 2));
            let (a, b) = (Mat::rows(&a, m, k), Mat::rows(&b, k, n));
            let got = matmul_new_blocks(a, b, block, |first, rows| {
                for (i, row) in rows.chunks_mut(n).enumerate() {
                    row.iter_mut().for_each(|v| *v += (first + i) as f32);
                }
            })
            .unwrap();
            let want = naive(a, b);
            for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                let w = w + (idx / n) as f32;
                assert!((g - w).abs() < 1e-4, "{m}x{k}x{n}: {g} vs {w}");
            }
            assert_eq!(got.len(), m * n);
        }
    }

    /// Column bands of a padded row-major destination, each the product of the whole `lhs`
    /// with that band's columns of `rhs` (as a band's `im2col` would give them), in two row
    /// groups (a grouped convolution's): equal to the whole product, padding untouched, every
    /// row visited once per band; overlapping or unordered bands refused.
    #[test]
    fn column_bands_write_their_columns_of_the_product() {
        let vals = |n: usize, seed: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * 7919 + seed * 104_729) % 211) as f32 / 105.0 - 1.0).collect()
        };
        for (m, k, n, bands) in [
            (6, 5, 10, vec![0..3, 3..7, 7..10]),
            (4, 3, 9, vec![0..4, 4..9]),
            (2, 0, 4, vec![0..1, 1..4]),
            (5, 4, 7, vec![0..2, 2..2, 2..7]),
        ] {
            let (a, b) = (vals(m * k, 3), vals(k * n, 4));
            let rs = n + 2;
            let mut dst = vec![f32::NAN; m * rs];
            let visits = std::sync::atomic::AtomicUsize::new(0);
            let view = MatMut { data: &mut dst, rows: m, cols: n, rs, cs: 1 };
            par_column_bands(view, &bands, |i, mut band| {
                let cols = bands[i].clone();
                let rhs: Vec<f32> =
                    (0..k).flat_map(|r| b[r * n + cols.start..r * n + cols.end].to_vec()).collect();
                let half = m / 2;
                band.product(0, Mat::rows(&a, half, k), Mat::rows(&rhs, k, cols.len()))?;
                band.product(
                    half,
                    Mat::rows(&a[half * k..], m - half, k),
                    Mat::rows(&rhs, k, cols.len()),
                )?;
                band.for_each_row(|_, row| {
                    assert_eq!(row.len(), cols.len());
                    visits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
                Ok(())
            })
            .unwrap();
            assert_eq!(visits.into_inner(), m * bands.len());
            let want = naive(Mat::rows(&a, m, k), Mat::rows(&b, k, n));
            for r in 0..m {
                for c in 0..rs {
                    let g = dst[r * rs + c];
                    if c < n {
                        assert!((g - want[r * n + c]).abs() < 1e-4, "{m}x{k}x{n} ({r}, {c}): {g}");
                    } else {
                        assert!(g.is_nan(), "padding ({r}, {c}) written");
                    }
                }
            }
        }
        let mut dst = vec![0f32; 12];
        for bands in [vec![0..3, 2..4], vec![2..4, 0..2], vec![0..2, 3..5]] {
            let view = MatMut::rows(&mut dst, 3, 4);
            assert!(par_column_bands(view, &bands, |_, _| Ok(())).is_err(), "{bands:?}");
        }
    }

    #[test]
    fn new_products_match_a_naive_product() {
        let a: Vec<f32> = (0..35).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..40).map(|i| (i as f32 * 0.11).cos()).collect();
        let (am, bm) = (Mat::rows(&a, 5, 7), Mat::rows(&b, 8, 5));
        let want = naive(am.t(), bm.t());
        for parallel in [false, true] {
            let got = matmul_new(am.t(), bm.t(), parallel).unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
        // An empty inner dimension is a zero matrix; shapes that do not chain are errors.
        assert_eq!(matmul_new(Mat::rows(&a, 3, 0), Mat::rows(&b, 0, 2), false).unwrap(), [0.0; 6]);
        assert!(matmul_new(Mat::rows(&a, 5, 7), Mat::rows(&b, 8, 5), false).is_err());
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
