//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016): each 2x2 block of outputs comes from a
//! 4x4 input tile through 16 products instead of 36, so the matrix products shrink 2.25x for
//! the price of two cheap linear transforms.
//!
//! The batch's output is cut into tiles of 2x2 pixels, and the rows of tiles into blocks that
//! run in parallel, each on one thread: the block's input tiles are transformed
//! (`V = B^T d B`, 16 values per tile and channel), multiplied by the transformed weights
//! (`U = G g G^T`, computed once per call) in 16 matrix products `M_xi = U_xi V_xi` of
//! `(O, C) x (C, tiles)`, and transformed back (`Y = A^T M A`) with the bias and activation
//! applied while the values are in cache. Blocks are sized so that `V` and `M` stay in L2.
//! The same routine computes a 3x3 stride-1 convolution's input gradient: the convolution of
//! the output gradient with the weight rotated by 180 degrees and its channels swapped, padded
//! by `2 - padding`.
//!
//! The transforms' coefficients (0, +-1, +-1/2) are exact in floating point; the rounding
//! differs from a direct convolution's by a few units in the last place of the sums.

use std::ops::Range;

use candle_core::{bail, Result};
use multiversion::multiversion;
use rayon::prelude::*;

use crate::conv::Activation;
use crate::cpu::with_scratch;
use crate::sgemm::{matmul, Mat, MatMut};

/// Transformed positions per tile (4x4).
const POS: usize = 16;

/// Values of one block's transformed inputs and products together (1 MiB), sized for L2.
const BLOCK_VALUES: usize = 256 * 1024;

/// Tiles per block, at least (the products' column count: narrower ones starve the GEMM's
/// micro-kernel) and at most.
const MIN_TILES: usize = 128;
const MAX_TILES: usize = 512;

/// Fewest input and output channels for which the transformed products beat `im2col` + GEMM:
/// with few input channels the 16 products are `(O, C) x (C, tiles)` with a tiny `C`, which
/// runs at memory speed, where `im2col` multiplies over `9 C`.
const MIN_CHANNELS: usize = 16;

/// Fewest output tiles per channel (of the larger side): the transformed weights (`16 O C`
/// values, 1.8x the kernel's) are computed on every call and read once per block, and few
/// tiles per block leave the products thin. Measured with the `conv_algorithms` example
/// (`benches/NOTES.md`): ResNet's 512-channel 7x7 layer at batch 8 (128 tiles) ran at half the
/// GEMM's speed, its 64-channel 56x56 layer at batch 1 (784 tiles) 1.3-1.6x faster.
const MIN_TILES_PER_CHANNEL: usize = 2;

/// Whether a convolution of `c` to `o` channels with this window and `tiles` 2x2 output tiles
/// (over the batch) is computed here: a 3x3 kernel, stride and dilation 1, one group, padding
/// at most 2 (so that the input gradient's padding `2 - padding` exists), and enough channels
/// and tiles.
#[allow(clippy::too_many_arguments)]
pub(crate) fn applies(
    c: usize,
    o: usize,
    kernel: (usize, usize),
    stride: usize,
    dilation: usize,
    groups: usize,
    padding: usize,
    tiles: usize,
) -> bool {
    kernel == (3, 3)
        && stride == 1
        && dilation == 1
        && groups == 1
        && padding <= 2
        && c.min(o) >= MIN_CHANNELS
        && tiles >= MIN_TILES_PER_CHANNEL * c.max(o)
}

/// `G g G^T` of one 3x3 kernel (row-major), `G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2],
/// [0, 0, 1]]`.
fn transform_kernel(g: &[f32; 9]) -> [f32; POS] {
    let apply = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    let mut cols = [[0f32; 4]; 3];
    for (j, col) in cols.iter_mut().enumerate() {
        *col = apply(g[j], g[3 + j], g[6 + j]);
    }
    let mut u = [0f32; POS];
    for i in 0..4 {
        let row = apply(cols[0][i], cols[1][i], cols[2][i]);
        u[i * 4..i * 4 + 4].copy_from_slice(&row);
    }
    u
}

/// The transformed weights of `wt (O, C, 3, 3)` as 16 matrices: `(16, O, C)`, or with
/// `adjoint` those of the input gradient's convolution (the kernel rotated by 180 degrees,
/// channels swapped): `(16, C, O)`.
pub(crate) fn transform_weight(wt: &[f32], o: usize, c: usize, adjoint: bool) -> Result<Vec<f32>> {
    if wt.len() != o * c * 9 {
        bail!("winograd: {} weight values for {o}x{c}x3x3", wt.len());
    }
    let (rows, cols) = if adjoint { (c, o) } else { (o, c) };
    let mut u = vec![0f32; POS * o * c];
    for (oc, kernels) in wt.chunks_exact(c * 9).enumerate() {
        for (ic, g) in kernels.chunks_exact(9).enumerate() {
            let mut k = [0f32; 9];
            for (t, v) in k.iter_mut().enumerate() {
                *v = if adjoint { g[8 - t] } else { g[t] };
            }
            let (r, col) = if adjoint { (ic, oc) } else { (oc, ic) };
            for (xi, v) in transform_kernel(&k).into_iter().enumerate() {
                u[(xi * rows + r) * cols + col] = v;
            }
        }
    }
    Ok(u)
}

/// A convolution of `x (N, C, H, W)` with transformed weights `u (16, O, C)`, zero padding `pad`
/// on every side: the `(N, O, H + 2 pad - 2, W + 2 pad - 2)` output, then `bias` and `act`, and
/// with `pool` a 2x2 stride-2 max-pool of that (floor; a NaN wins), each tile being one pooling
/// window.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    u: &[f32],
    o: usize,
    pad: usize,
    bias: Option<&[f32]>,
    act: Activation,
    pool: bool,
) -> Result<Vec<f32>> {
    if h + 2 * pad < 3 || w + 2 * pad < 3 {
        bail!("winograd: a {h}x{w} input padded by {pad} is smaller than the 3x3 kernel");
    }
    if x.len() != n * c * h * w || u.len() != POS * o * c || bias.is_some_and(|b| b.len() != o) {
        bail!("winograd: buffers do not fit {n}x{c}x{h}x{w} to {o} channels");
    }
    let shape = Tiling::new((n, c, h, w), o, pad, pool);
    let blocks = shape.blocks();
    let (rows_out, cols_out) = shape.out_hw();
    let plane_len = rows_out * cols_out;
    let mut out = vec![0f32; n * o * plane_len];
    // Every output plane cut at the blocks' boundaries, so that each block writes its own
    // pieces: block b's are those of its images' planes, image by image, channel by channel.
    let mut pieces: Vec<Vec<&mut [f32]>> = blocks.iter().map(|_| Vec::new()).collect();
    let mut first = 0;
    for (plane, mut rest) in out.chunks_mut(plane_len.max(1)).enumerate() {
        let image = (plane / o) * shape.th..(plane / o + 1) * shape.th;
        while blocks[first].end <= image.start {
            first += 1;
        }
        for (b, rows) in blocks.iter().enumerate().skip(first) {
            if rows.start >= image.end {
                break;
            }
            let covered = shape.out_rows(
                rows.start.max(image.start) - image.start,
                rows.end.min(image.end) - image.start,
            );
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(covered.len() * cols_out);
            pieces[b].push(piece);
            rest = tail;
        }
    }
    blocks
        .par_iter()
        .zip(pieces.par_iter_mut())
        .try_for_each(|(rows, pieces)| shape.block(x, u, rows.clone(), pieces, bias, act))?;
    Ok(out)
}

/// How a convolution's output is cut into tiles and blocks of tile rows.
struct Tiling {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    pad: usize,
    oh: usize,
    ow: usize,
    /// A 2x2 max-pool follows.
    pool: bool,
    /// Tile rows and columns per image.
    th: usize,
    tw: usize,
    /// Tile rows of the whole batch.
    rows: usize,
}

impl Tiling {
    fn new((n, c, h, w): (usize, usize, usize, usize), o: usize, pad: usize, pool: bool) -> Self {
        let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
        let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
        Tiling { c, h, w, o, pad, oh, ow, pool, th, tw, rows: n * th }
    }

    /// Height and width of what is written: the convolution's output, or its pooling.
    fn out_hw(&self) -> (usize, usize) {
        if self.pool {
            (self.oh / 2, self.ow / 2)
        } else {
            (self.oh, self.ow)
        }
    }

    /// The rows written for tile rows `a..b` of one image.
    fn out_rows(&self, a: usize, b: usize) -> Range<usize> {
        let (rows, per) = if self.pool { (self.oh / 2, 1) } else { (self.oh, 2) };
        (per * a).min(rows)..(per * b).min(rows)
    }

    /// Ranges of tile rows (over the whole batch, image after image), one block each: about
    /// [`BLOCK_VALUES`] of transformed values, and at least one block per thread when there
    /// are rows enough.
    fn blocks(&self) -> Vec<Range<usize>> {
        let threads = rayon::current_num_threads().max(1);
        let tiles = (BLOCK_VALUES / (POS * (self.c + self.o))).clamp(MIN_TILES, MAX_TILES);
        let per_block = (tiles / self.tw).max(1).min(self.rows.div_ceil(threads)).max(1);
        (0..self.rows).step_by(per_block).map(|r| r..(r + per_block).min(self.rows)).collect()
    }

    /// One block of tile rows, written into `pieces`: the rows of output planes it covers,
    /// image by image and, within an image, channel by channel.
    fn block(
        &self,
        x: &[f32],
        u: &[f32],
        rows: Range<usize>,
        pieces: &mut [&mut [f32]],
        bias: Option<&[f32]>,
        act: Activation,
    ) -> Result<()> {
        let (c, o, tw, ow) = (self.c, self.o, self.tw, self.ow);
        let cols_out = self.out_hw().1;
        let tiles = rows.len() * tw;
        // Per input row of a tile row: the padded row, its column combinations, and their even
        // and odd halves; the output transform reuses it for two output rows and its work.
        let line = 2 * tw + 2;
        with_scratch(POS * (c + o) * tiles, 8 * line + 2 * ow, |vm, buf| {
            let (v, m) = vm.split_at_mut(POS * c * tiles);
            let plane = self.h * self.w;
            for (k, r) in rows.clone().enumerate() {
                let (img, ty) = (r / self.th, r % self.th);
                for ic in 0..c {
                    let src = &x[(img * c + ic) * plane..(img * c + ic + 1) * plane];
                    self.padded_rows(src, ty, &mut buf[..4 * line]);
                    let (padded, work) = buf.split_at_mut(4 * line);
                    input_transform(padded, work, tw, v, ic * tiles + k * tw, c * tiles);
                }
            }
            for xi in 0..POS {
                matmul(
                    MatMut::rows(&mut m[xi * o * tiles..(xi + 1) * o * tiles], o, tiles),
                    Mat::rows(&u[xi * o * c..(xi + 1) * o * c], o, c),
                    Mat::rows(&v[xi * c * tiles..(xi + 1) * c * tiles], c, tiles),
                    false,
                    false,
                )?;
            }
            let (two_rows, work) = buf.split_at_mut(2 * ow);
            let first_image = rows.start / self.th;
            for (k, r) in rows.clone().enumerate() {
                let (img, ty) = (r / self.th, r % self.th);
                // The piece's first tile row: the block's, or the image's when it starts later.
                let top = rows.start.max(img * self.th) - img * self.th;
                let at = self.out_rows(top, ty).len() * cols_out;
                let lines = self.out_rows(ty, ty + 1).len();
                if lines == 0 {
                    continue;
                }
                for oc in 0..o {
                    output_transform(m, oc * tiles + k * tw, o * tiles, tw, two_rows, work);
                    let shift = bias.map_or(0.0, |b| b[oc]);
                    let dst = &mut pieces[(img - first_image) * o + oc][at..at + lines * cols_out];
                    if self.pool {
                        // The activation first, then the maxima: the same values, in the same
                        // order, as the separate layers.
                        crate::simd::bias_act(two_rows, shift, act);
                        let (top_row, bottom_row) = two_rows.split_at(ow);
                        crate::pool::pair_max_row(dst, top_row, bottom_row);
                    } else {
                        dst.copy_from_slice(&two_rows[..lines * ow]);
                        crate::simd::bias_act(dst, shift, act);
                    }
                }
            }
            Ok::<_, candle_core::Error>(())
        })
    }

    /// The four input rows under tile row `ty` of one channel's `(H, W)` plane, each
    /// `2 * tw + 2` values from column `-pad`, zero outside the image.
    fn padded_rows(&self, plane: &[f32], ty: usize, out: &mut [f32]) {
        let line = 2 * self.tw + 2;
        for (i, row) in out.chunks_exact_mut(line).enumerate() {
            let y = (2 * ty + i).checked_sub(self.pad).filter(|&y| y < self.h);
            let Some(y) = y else {
                row.fill(0.0);
                continue;
            };
            let lead = self.pad.min(line);
            let inside = self.w.min(line - lead);
            row[..lead].fill(0.0);
            row[lead..lead + inside].copy_from_slice(&plane[y * self.w..y * self.w + inside]);
            row[lead + inside..].fill(0.0);
        }
    }
}

/// `B^T d B` of every tile along a tile row, `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0],
/// [0, 1, 0, -1]]`: `padded` holds the four input rows (`2 tw + 2` values each), `work` at least
/// two more rows' worth; tile `t`'s position `xi` goes to `v[base + xi * stride + t]`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn input_transform(
    padded: &[f32],
    work: &mut [f32],
    tw: usize,
    v: &mut [f32],
    base: usize,
    stride: usize,
) {
    let line = 2 * tw + 2;
    let (r0, rest) = padded.split_at(line);
    let (r1, rest) = rest.split_at(line);
    let (r2, r3) = rest.split_at(line);
    let (t, halves) = work.split_at_mut(line);
    let (even, odd) = halves.split_at_mut(tw + 1);
    let odd = &mut odd[..tw + 1];
    for i in 0..4 {
        // Row i of B^T d across every column, then its even and odd columns apart.
        let (a, b, sign) = match i {
            0 => (r0, r2, -1.0f32),
            1 => (r1, r2, 1.0),
            2 => (r2, r1, -1.0),
            _ => (r1, r3, -1.0),
        };
        for ((d, &a), &b) in t.iter_mut().zip(a).zip(b) {
            *d = a + sign * b;
        }
        for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(t.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
        // Row i of (B^T d) B: columns 2t..2t+4 of the row are even[t], odd[t], even[t+1],
        // odd[t+1].
        let at = |j: usize| base + (i * 4 + j) * stride;
        for ((d, &a), &b) in v[at(0)..at(0) + tw].iter_mut().zip(&even[..tw]).zip(&even[1..]) {
            *d = a - b;
        }
        for ((d, &a), &b) in v[at(1)..at(1) + tw].iter_mut().zip(&odd[..tw]).zip(&even[1..]) {
            *d = a + b;
        }
        for ((d, &a), &b) in v[at(2)..at(2) + tw].iter_mut().zip(&even[1..]).zip(&odd[..tw]) {
            *d = a - b;
        }
        for ((d, &a), &b) in v[at(3)..at(3) + tw].iter_mut().zip(&odd[..tw]).zip(&odd[1..]) {
            *d = a - b;
        }
    }
}

/// `A^T m A` of every tile along a tile row, `A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]`: tile `t`'s
/// position `xi` is `m[base + xi * stride + t]`; `out` receives the two output rows (`2 ow`
/// values, `ow` being `2 tw` or `2 tw - 1`); `work` holds at least `8 tw` values.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn output_transform(
    m: &[f32],
    base: usize,
    stride: usize,
    tw: usize,
    out: &mut [f32],
    work: &mut [f32],
) {
    let ow = out.len() / 2;
    let (sums, diffs) = work[..8 * tw].split_at_mut(4 * tw);
    // Rows 0 and 1 of A^T m, column by column: m0 + m1 + m2 and m1 - m2 - m3.
    for (j, (s, d)) in sums.chunks_exact_mut(tw).zip(diffs.chunks_exact_mut(tw)).enumerate() {
        let row = |i: usize| &m[base + (i * 4 + j) * stride..base + (i * 4 + j) * stride + tw];
        let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3));
        for ((s, d), ((&a, &b), (&c, &e))) in
            s.iter_mut().zip(d.iter_mut()).zip(m0.iter().zip(m1).zip(m2.iter().zip(m3)))
        {
            *s = a + b + c;
            *d = b - c - e;
        }
    }
    let (top, bottom) = out.split_at_mut(ow);
    for (dst, src) in [(top, &*sums), (bottom, &*diffs)] {
        let (x0, rest) = src.split_at(tw);
        let (x1, rest) = rest.split_at(tw);
        let (x2, x3) = rest.split_at(tw);
        for (pair, ((&a, &b), (&c, &e))) in
            dst.chunks_exact_mut(2).zip(x0.iter().zip(x1).zip(x2.iter().zip(x3)))
        {
            pair[0] = a + b + c;
            pair[1] = b - c - e;
        }
        if ow % 2 == 1 {
            let t = tw - 1;
            dst[ow - 1] = x0[t] + x1[t] + x2[t];
        }
    }
}
