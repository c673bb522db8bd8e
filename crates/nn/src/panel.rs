//! A register-blocked f32 product for row-major operands whose column count is a multiple of
//! [`COL_ALIGN`], read in place: `dst (m, n) = a (m, k) b (k, n)`.
//!
//! The Winograd convolution runs sixteen such products per block of tiles, each a few
//! microseconds long, over operands its transforms have just written. Through the `gemm` crate
//! every one of them paid for the general driver (blocking decisions, a thread-local workspace)
//! and a copy of the transformed input into the micro-kernel's packed layout: `perf` put that
//! at 15% of scratch3's batch-32 inference, against 51% in the micro-kernels themselves. Here
//! the caller pads the column count to a multiple of 16 instead, so that every row of `b` is
//! read as whole vectors where it lies, and `a`'s values are broadcast from their rows.

use std::ops::Range;

use multiversion::multiversion;

/// Rows of `b` per pass over a column panel: 128 rows of 48 columns are 24 KiB, so the panel
/// stays in a 32 KiB L1 cache while every row block of `a` sweeps it.
const DEPTH: usize = 128;

/// The column count of `b` and `dst` must be a multiple of this (16 f32 lanes: one AVX-512
/// register, two AVX2 ones).
pub(crate) const COL_ALIGN: usize = 16;

/// `dst (m, n) = a (m, k) b (k, n)`, all row-major and contiguous, `n` a multiple of
/// [`COL_ALIGN`]. Single-threaded: the callers run one product per block on each thread.
///
/// # Panics
/// Never for consistent sizes; debug assertions check them (the callers own the buffers).
pub(crate) fn product(dst: &mut [f32], a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize)) {
    debug_assert!(n.is_multiple_of(COL_ALIGN));
    debug_assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return product_wide(dst, a, b, (m, n, k));
    }
    product_narrow(dst, a, b, (m, n, k));
}

/// Four rows by 48 columns per register block: twelve 16-lane accumulators, three loads of `b`
/// and four broadcasts of `a` per twelve multiply-adds (32 vector registers on AVX-512).
#[multiversion(targets("x86_64+avx512f+avx512vl"))]
fn product_wide(dst: &mut [f32], a: &[f32], b: &[f32], mnk: (usize, usize, usize)) {
    blocks::<4, 48>(dst, a, b, mnk);
}

/// Six rows by 16 columns: twelve 8-lane accumulators, two loads of `b` and a broadcast, 15 of
/// AVX2's sixteen registers. (Two rows by 48 columns, the same twelve accumulators, needed six
/// registers for `b`: the compiler kept four accumulators on the stack, reloaded and stored
/// every step.)
#[multiversion(targets("x86_64+avx2+fma"))]
fn product_narrow(dst: &mut [f32], a: &[f32], b: &[f32], mnk: (usize, usize, usize)) {
    blocks::<6, 16>(dst, a, b, mnk);
}

/// The product in column panels of up to `W_MAX` (48, then 32 or 16), each swept by blocks of
/// `R` rows and then smaller ones; `k` runs innermost so the accumulators stay in registers.
#[inline(always)]
fn blocks<const R: usize, const W_MAX: usize>(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
) {
    let mut j = 0;
    while j < n {
        j += match n - j {
            w if W_MAX >= 48 && w >= 48 => panel::<R, 48>(dst, a, b, (m, n, k), j),
            32 if W_MAX >= 32 => panel::<R, 32>(dst, a, b, (m, n, k), j),
            _ => panel::<R, 16>(dst, a, b, (m, n, k), j),
        };
    }
}

/// Columns `j..j + W` of every row; returns `W`.
#[inline(always)]
fn panel<const R: usize, const W: usize>(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    j: usize,
) -> usize {
    let mut p = 0;
    while p < k {
        let depth = p..(p + DEPTH).min(k);
        let mut i = 0;
        while i + R <= m {
            tile::<R, W>(dst, a, b, (n, k), (i, j), depth.clone());
            i += R;
        }
        // The rows left over in blocks of 4 and 2 where they fit: a single row has too few
        // accumulators to hide the multiply-add's latency (two chains where eight are needed).
        if R > 4 && i + 4 <= m {
            tile::<4, W>(dst, a, b, (n, k), (i, j), depth.clone());
            i += 4;
        }
        if R > 2 && i + 2 <= m {
            tile::<2, W>(dst, a, b, (n, k), (i, j), depth.clone());
            i += 2;
        }
        while i < m {
            tile::<1, W>(dst, a, b, (n, k), (i, j), depth.clone());
            i += 1;
        }
        p = depth.end;
    }
    W
}

/// The `R x W` block of `dst` at `(i, j)`: the products over `depth` added to it, or written
/// when `depth` starts at 0.
#[inline(always)]
fn tile<const R: usize, const W: usize>(
    dst: &mut [f32],
    a: &[f32],
    b: &[f32],
    (n, k): (usize, usize),
    (i, j): (usize, usize),
    depth: Range<usize>,
) {
    let mut acc = [[0f32; W]; R];
    if depth.start > 0 {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            let at = (i + r) * n + j;
            acc_row.copy_from_slice(&dst[at..at + W]);
        }
    }
    let rows: [&[f32]; R] = std::array::from_fn(|r| &a[(i + r) * k + depth.start..(i + r + 1) * k]);
    let panel = &b[depth.start * n..];
    for p in 0..depth.len() {
        let Some(b_block) = panel.get(p * n + j..p * n + j + W) else { return };
        for (acc_row, a_row) in acc.iter_mut().zip(&rows) {
            let s = a_row[p];
            for (v, &x) in acc_row.iter_mut().zip(b_block) {
                *v = s.mul_add(x, *v);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        let at = (i + r) * n + j;
        dst[at..at + W].copy_from_slice(acc_row);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    #[test]
    fn products_match_an_f64_triple_loop() {
        // Row counts around the 4- and 6-row blocks, every panel width mix (16 .. 112), k from 1
        // to past one depth block.
        for (case, &(m, n, k)) in [
            (1, 16, 1),
            (3, 32, 5),
            (4, 48, 7),
            (5, 64, 16),
            (7, 80, 3),
            (9, 96, 33),
            (16, 112, 64),
            (2, 160, 9),
            (13, 48, 150),
        ]
        .iter()
        .enumerate()
        {
            let a = values(m * k, 2 * case as u64 + 1);
            let b = values(k * n, 2 * case as u64 + 2);
            let mut dst = vec![f32::NAN; m * n];
            product(&mut dst, &a, &b, (m, n, k));
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        (0..k).map(|p| f64::from(a[i * k + p]) * f64::from(b[p * n + j])).sum();
                    let got = f64::from(dst[i * n + j]);
                    assert!((got - want).abs() < 1e-5 * (1.0 + k as f64), "{m}x{n}x{k} ({i}, {j})");
                }
            }
            // Both instruction sets' blockings where this machine has them.
            let mut narrow = vec![f32::NAN; m * n];
            product_narrow(&mut narrow, &a, &b, (m, n, k));
            assert_eq!(narrow, dst, "{m}x{n}x{k}: the 6-row blocking agrees bit for bit");
        }
    }
}
