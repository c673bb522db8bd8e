//! 3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast
//! Algorithms for Convolutional Neural Networks", 2016): each 2x2 block of outputs comes from a
//! 4x4 input tile through 16 products instead of 36, so the matrix products shrink 2.25x for
//! the price of two cheap linear transforms.
//!
//! The batch's output is cut into tiles of 2x2 pixels, and the rows of tiles into blocks that
//! run in parallel, each on one thread: the block's input tiles are transformed
//! (`V = B^T d B`, 16 values per tile and channel), multiplied by the transformed weights
//! (`U = G g G^T`, computed once per call, or once per constant weight: `memo::KeptBuffer`)
//! in 16 matrix products `M_xi = U_xi V_xi` of
//! `(O, C) x (C, tiles)`, and transformed back (`Y = A^T M A`) with the bias and activation
//! applied while the values are in cache. A block's `V` and `M` take about 1 MiB (L2-sized),
//! or more where 128 tiles, the fewest that keep the products from being thin, need it.
//! The same routine computes a 3x3 stride-1 convolution's input gradient: the convolution of
//! the output gradient with the weight rotated by 180 degrees and its channels swapped, padded
//! by `2 - padding`.
//!
//! The transforms' coefficients (0, +-1, +-1/2) are exact in floating point, and the rounding
//! stays at the direct sums' level: the convolution tests hold both paths to 1e-5 of the
//! largest output against f64 loops.

use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::{bail, Result};
use multiversion::multiversion;
use rayon::prelude::*;

use crate::conv::Activation;
use crate::cpu::with_scratch;

/// Transformed positions per tile (4x4).
pub(crate) const POS: usize = 16;

/// Values of one block's transformed inputs and products together (1 MiB), sized for L2.
const BLOCK_VALUES: usize = 256 * 1024;

/// Tiles per block, at least (the products' column count: narrower ones starve the GEMM's
/// micro-kernel) and at most.
const MIN_TILES: usize = 128;
const MAX_TILES: usize = 512;

/// The products' column counts are padded to a multiple of this (one AVX-512 register of
/// f32, two AVX2 ones): [`crate::planes`]' vector loops then have no column tail.
const COL_ALIGN: usize = 16;

/// Fewest input and output channels for which the transformed products beat `im2col` + GEMM:
/// with few input channels the 16 products are `(O, C) x (C, tiles)` with a tiny `C`, which
/// runs at memory speed, where `im2col` multiplies over `9 C`.
const MIN_CHANNELS: usize = 16;

/// Fewest output tiles (over the batch) for a layer that transforms its weight on every call
/// (a trained one), or as many as its larger channel count when that is fewer. The transform
/// writes `16 O C` values and the products save `20 O C` multiply-adds per tile, so the
/// break-even tile count does not grow with the channels. `conv_algorithms` (`benches/NOTES.md`,
/// eighteenth pass), ResNet's 512-channel 3x3 layer trained at 128 tiles: 30.1-30.7 ms against
/// GEMM's 33.7-35.0 at 7x7 batch 8, 35.9-36.2 against 42.6-43.5 at 4x4 batch 32; at 32 tiles
/// (batch 2) it lost, 4.27 against 3.71 ms for the forward pass.
const MIN_TRAINED_TILES: usize = 64;

/// Fewest output tiles (over the batch) for a constant layer, whose transformed weight is kept
/// between calls: with the transform paid once, only the products' width is left to bound.
/// `resnet_layers` with constant weights (`benches/NOTES.md`, seventeenth pass): the 512-channel
/// 7x7 layer ran 6.0 against 8.8 ms at batch 8 (128 tiles), 1.48 against 2.26 at batch 2 (32
/// tiles), and lost at batch 1 (16 tiles, 1.39 against 1.16); the 256-channel 14x14 layer at
/// batch 1 (49 tiles) 0.80 against 1.68.
const MIN_KEPT_TILES: usize = 32;

/// Whether a convolution of `c` to `o` channels with this window and `tiles` 2x2 output tiles
/// (over the batch) is computed here: a 3x3 kernel, stride and dilation 1, one group, padding
/// at most 2 (so that the input gradient's padding `2 - padding` exists), and enough channels
/// and tiles (fewer for a `kept` weight, transformed once for every call).
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
    kept: bool,
) -> bool {
    kernel == (3, 3)
        && stride == 1
        && dilation == 1
        && groups == 1
        && padding <= 2
        && c.min(o) >= MIN_CHANNELS
        && tiles >= if kept { MIN_KEPT_TILES } else { MIN_TRAINED_TILES.min(c.max(o)) }
}

/// The transformed weights of `wt (O, C, 3, 3)` as 16 matrices: `(16, O, C)`, or with
/// `adjoint` those of the input gradient's convolution (the kernel rotated by 180 degrees,
/// channels swapped): `(16, C, O)`; each matrix packed as [`crate::planes::pack`] lays it out
/// ([`transformed_len`] values in all). `U = G g G^T`, `G = [[1, 0, 0], [1/2, 1/2, 1/2],
/// [1/2, -1/2, 1/2], [0, 0, 1]]`. Written straight into the packed layout, one register block of
/// matrix rows per task (the blocks in parallel), the block's rows side by side as the lanes of
/// one vector per column: each column's 16 results are 16 contiguous runs of the block's rows.
/// Transforming into row-major matrices, packing each and concatenating them took three passes
/// over 16 MB and three fresh buffers per call for 512 x 512 channels.
pub(crate) fn transform_weight(wt: &[f32], o: usize, c: usize, adjoint: bool) -> Result<Vec<f32>> {
    if wt.len() != o * c * 9 {
        bail!("winograd: {} weight values for {o}x{c}x3x3", wt.len());
    }
    let (rows, cols) = if adjoint { (c, o) } else { (o, c) };
    let len = transformed_len(rows, cols);
    if len == 0 {
        return Ok(Vec::new());
    }
    let block = crate::planes::block_rows();
    if block > BLOCK_LANES {
        bail!("winograd: register blocks of {block} rows, more than {BLOCK_LANES}");
    }
    let per_matrix = len / POS;
    let mut u = Vec::with_capacity(len);
    // Task `b` holds block `b`'s `block * cols` values of each of the 16 matrices.
    let blocks = per_matrix / (block * cols);
    let mut parts: Vec<Vec<&mut [MaybeUninit<f32>]>> =
        (0..blocks).map(|_| Vec::with_capacity(POS)).collect();
    for matrix in u.spare_capacity_mut()[..len].chunks_exact_mut(per_matrix) {
        for (part, values) in parts.iter_mut().zip(matrix.chunks_exact_mut(block * cols)) {
            part.push(values);
        }
    }
    parts.par_iter_mut().enumerate().for_each(|(b, part)| {
        let live = block.min(rows - b * block);
        transform_block(wt, c, (b * block, live, block), adjoint, part);
    });
    // SAFETY: the tasks' slices partition the first `len` slots (16 matrices of `blocks`
    // blocks of `block * cols` values, `per_matrix = blocks * block * cols`), and
    // `transform_block` writes every value of its slices (`block` lanes of each of `cols`
    // columns, zeros past the live rows); `f32` needs no drop and the capacity is `len`.
    #[allow(unsafe_code)]
    unsafe {
        u.set_len(len);
    }
    Ok(u)
}

/// Most rows of a register block [`transform_block`] takes (its vectors' lanes).
const BLOCK_LANES: usize = 8;

/// Values of [`transform_weight`]'s result for `rows x cols` matrices.
pub(crate) fn transformed_len(rows: usize, cols: usize) -> usize {
    if rows * cols == 0 {
        return 0;
    }
    POS * crate::planes::packed_len(rows, cols)
}

/// The register block of matrix rows `first..first + live` (of `block` rows; the rest are
/// zeros), written into its slice of each of the 16 packed matrices (`dst`, `block * cols`
/// values each: column after column, the block's rows side by side): row `r` holds the
/// kernels of output channel `r` (or with `adjoint` of input channel `r`, rotated).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn transform_block(
    wt: &[f32],
    c: usize,
    (first, live, block): (usize, usize, usize),
    adjoint: bool,
    dst: &mut [&mut [MaybeUninit<f32>]],
) {
    const LANES: usize = BLOCK_LANES;
    let cols = dst.first().map_or(0, |m| m.len() / block.max(1));
    for col in 0..cols {
        // Tap t of row first + l's kernel in g[t][l].
        let mut g = [[0f32; LANES]; 9];
        for l in 0..live.min(LANES) {
            let (oc, ic) = if adjoint { (col, first + l) } else { (first + l, col) };
            let k = &wt[(oc * c + ic) * 9..(oc * c + ic) * 9 + 9];
            for (t, taps) in g.iter_mut().enumerate() {
                taps[l] = if adjoint { k[8 - t] } else { k[t] };
            }
        }
        // G g (4 x 3), then (G g) G^T (4 x 4), lane by lane.
        let mut gg = [[[0f32; LANES]; 3]; 4];
        for j in 0..3 {
            for l in 0..LANES {
                let (a, b, e) = (g[j][l], g[3 + j][l], g[6 + j][l]);
                gg[0][j][l] = a;
                gg[1][j][l] = 0.5 * (a + b + e);
                gg[2][j][l] = 0.5 * (a - b + e);
                gg[3][j][l] = e;
            }
        }
        for (i, row) in gg.iter().enumerate() {
            let mut out = [[0f32; LANES]; 4];
            for l in 0..LANES {
                let (a, b, e) = (row[0][l], row[1][l], row[2][l]);
                out[0][l] = a;
                out[1][l] = 0.5 * (a + b + e);
                out[2][l] = 0.5 * (a - b + e);
                out[3][l] = e;
            }
            for (j, values) in out.iter().enumerate() {
                let run = &mut dst[i * 4 + j][col * block..(col + 1) * block];
                for (d, &v) in run.iter_mut().zip(values) {
                    d.write(v);
                }
            }
        }
    }
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
    if x.len() != n * c * h * w
        || u.len() != transformed_len(o, c)
        || bias.is_some_and(|b| b.len() != o)
    {
        bail!("winograd: buffers do not fit {n}x{c}x{h}x{w} to {o} channels");
    }
    let shape = Tiling::new((n, c, h, w), o, pad, pool);
    let blocks = shape.blocks();
    let (rows_out, cols_out) = shape.out_hw();
    let plane_len = rows_out * cols_out;
    let mut out = crate::cpu::zeroed(n * o * plane_len);
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
    /// [`BLOCK_VALUES`] of transformed values, at least one block per thread when there are
    /// rows enough, and a block count that is a multiple of the threads, the rows shared
    /// evenly (7 blocks of 5, 5, 5, 5, 5, 5 and 2 rows kept one thread busy with 20 rows while
    /// the other had 12).
    fn blocks(&self) -> Vec<Range<usize>> {
        let threads = rayon::current_num_threads().max(1);
        let tiles = (BLOCK_VALUES / (POS * (self.c + self.o))).clamp(MIN_TILES, MAX_TILES);
        let per_block = (tiles / self.tw).max(1).min(self.rows.div_ceil(threads)).max(1);
        let count = self.rows.div_ceil(per_block).next_multiple_of(threads).min(self.rows).max(1);
        let per_block = self.rows.div_ceil(count).max(1);
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
        // The transformed inputs and products keep a whole number of vectors per row (the
        // products read them in place); the padding columns are zeros in and ignored out.
        let tp = tiles.next_multiple_of(COL_ALIGN);
        // Per input row of a tile row: the padded row, its column combinations, and their even
        // and odd halves; the output transform reuses it for two output rows and its work.
        let line = 2 * tw + 2;
        with_scratch(POS * (c + o) * tp, (12 * tiles).max(6 * line), |vm, buf| {
            let (v, m) = vm.split_at_mut(POS * c * tp);
            let plane = self.h * self.w;
            // The block's tile rows image by image: each channel's plane transformed in one
            // call per image.
            let mut k = 0;
            while k < rows.len() {
                let (img, ty) = ((rows.start + k) / self.th, (rows.start + k) % self.th);
                let n_rows = (self.th - ty).min(rows.len() - k);
                for ic in 0..c {
                    let src = &x[(img * c + ic) * plane..(img * c + ic + 1) * plane];
                    let at = ic * tp + k * tw;
                    let geometry = (self.h, self.w, self.pad, tw);
                    input_transform(src, geometry, ty..ty + n_rows, buf, v, at, c * tp);
                }
                k += n_rows;
            }
            if tp > tiles {
                v.chunks_exact_mut(tp).for_each(|row| row[tiles..].fill(0.0));
            }
            let per = transformed_len(o, c) / POS;
            let mut products: Vec<_> = m.chunks_exact_mut(tp).map(crate::planes::uninit).collect();
            let none = crate::planes::Epilogue::new(None, Activation::Identity);
            for (xi, (v, m)) in v.chunks_exact(c * tp).zip(products.chunks_exact_mut(o)).enumerate()
            {
                crate::planes::product(m, &u[xi * per..(xi + 1) * per], v, (tp, c, tp), none);
            }
            drop(products);
            let (y, work) = buf.split_at_mut(4 * tiles);
            let first_image = rows.start / self.th;
            for oc in 0..o {
                let shift = bias.map_or(0.0, |b| b[oc]);
                output_transform(m, oc * tp, o * tp, tiles, shift, act, self.pool, y, work);
                let (y0, rest) = y.split_at(tiles);
                let (y1, rest) = rest.split_at(tiles);
                let (y2, y3) = rest.split_at(tiles);
                for (k, r) in rows.clone().enumerate() {
                    let (img, ty) = (r / self.th, r % self.th);
                    // The piece's first tile row: the block's, or the image's when it starts
                    // later.
                    let top = rows.start.max(img * self.th) - img * self.th;
                    let at = self.out_rows(top, ty).len() * cols_out;
                    let lines = self.out_rows(ty, ty + 1).len();
                    let dst = &mut pieces[(img - first_image) * o + oc][at..at + lines * cols_out];
                    let t = k * tw..(k + 1) * tw;
                    if self.pool {
                        dst.copy_from_slice(&y0[t.start..t.start + dst.len()]);
                    } else {
                        let (top_row, bottom_row) = dst.split_at_mut(ow.min(dst.len()));
                        interleave(top_row, &y0[t.clone()], &y1[t.clone()]);
                        interleave(bottom_row, &y2[t.clone()], &y3[t]);
                    }
                }
            }
            Ok::<_, candle_core::Error>(())
        })
    }
}

/// `B^T d B` of every tile of tile rows `tys` of one channel's `(H, W)` plane (`geometry`:
/// `H`, `W`, padding, tiles per row), `B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0],
/// [0, 1, 0, -1]]`: tile `t` (counted from the first row's first) has position `xi` written to
/// `v[base + xi * stride + t]`. `work` holds at least `6 (2 tw + 2)` values.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn input_transform(
    plane: &[f32],
    (h, w, pad, tw): (usize, usize, usize, usize),
    tys: Range<usize>,
    work: &mut [f32],
    v: &mut [f32],
    base: usize,
    stride: usize,
) {
    let line = 2 * tw + 2;
    let (padded, rest) = work.split_at_mut(4 * line);
    let (t, halves) = rest.split_at_mut(line);
    let (even, odd) = halves[..line].split_at_mut(tw + 1);
    for (k, ty) in tys.enumerate() {
        // The four input rows under the tile row, from column -pad, zero outside the image.
        for (i, row) in padded.chunks_exact_mut(line).enumerate() {
            match (2 * ty + i).checked_sub(pad).filter(|&y| y < h) {
                None => row.fill(0.0),
                Some(y) => {
                    let lead = pad.min(line);
                    let inside = w.min(line - lead);
                    row[..lead].fill(0.0);
                    row[lead..lead + inside].copy_from_slice(&plane[y * w..y * w + inside]);
                    row[lead + inside..].fill(0.0);
                }
            }
        }
        let (r0, rest) = padded.split_at(line);
        let (r1, rest) = rest.split_at(line);
        let (r2, r3) = rest.split_at(line);
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
            let at = |j: usize| base + (i * 4 + j) * stride + k * tw;
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
}

/// `A^T m A` of every tile of a block for one output channel, `A^T = [[1, 1, 1, 0],
/// [0, 1, -1, -1]]`, then `act(value + shift)`: tile `t`'s position `xi` is
/// `m[base + xi * stride + t]`; `y` receives the tiles' four outputs (top left, top right,
/// bottom left, bottom right) as four runs of `tiles` values, or with `pool` their maximum (a
/// NaN wins, in the pooling op's order) in the first run. `work` holds at least `8 tiles`.
#[allow(clippy::too_many_arguments)]
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn output_transform(
    m: &[f32],
    base: usize,
    stride: usize,
    tiles: usize,
    shift: f32,
    act: Activation,
    pool: bool,
    y: &mut [f32],
    work: &mut [f32],
) {
    let (sums, diffs) = work[..8 * tiles].split_at_mut(4 * tiles);
    // Rows 0 and 1 of A^T m, column by column: m0 + m1 + m2 and m1 - m2 - m3.
    for (j, (s, d)) in sums.chunks_exact_mut(tiles).zip(diffs.chunks_exact_mut(tiles)).enumerate() {
        let row = |i: usize| &m[base + (i * 4 + j) * stride..base + (i * 4 + j) * stride + tiles];
        let (m0, m1, m2, m3) = (row(0), row(1), row(2), row(3));
        for ((s, d), ((&a, &b), (&c, &e))) in
            s.iter_mut().zip(d.iter_mut()).zip(m0.iter().zip(m1).zip(m2.iter().zip(m3)))
        {
            *s = a + b + c;
            *d = b - c - e;
        }
    }
    let y = &mut y[..4 * tiles];
    let (top, bottom) = y.split_at_mut(2 * tiles);
    for (out, src) in [(top, &*sums), (bottom, &*diffs)] {
        let (left, right) = out.split_at_mut(tiles);
        let (x0, rest) = src.split_at(tiles);
        let (x1, rest) = rest.split_at(tiles);
        let (x2, x3) = rest.split_at(tiles);
        for ((l, r), ((&a, &b), (&c, &e))) in
            left.iter_mut().zip(right.iter_mut()).zip(x0.iter().zip(x1).zip(x2.iter().zip(x3)))
        {
            *l = a + b + c;
            *r = b - c - e;
        }
    }
    match act {
        Activation::Identity => y.iter_mut().for_each(|v| *v += shift),
        Activation::Relu => y.iter_mut().for_each(|v| *v = (*v + shift).max(0.0)),
        Activation::Relu6 => y.iter_mut().for_each(|v| *v = (*v + shift).clamp(0.0, 6.0)),
    }
    if pool {
        #[allow(clippy::eq_op)]
        let max = |a: f32, b: f32| if a > b || a != a { a } else { b };
        let (y0, rest) = y.split_at_mut(tiles);
        let (y1, rest) = rest.split_at(tiles);
        let (y2, y3) = rest.split_at(tiles);
        for (p, ((&b, &c), &d)) in y0.iter_mut().zip(y1.iter().zip(y2).zip(y3)) {
            *p = max(max(*p, b), max(c, d));
        }
    }
}

/// `dst[2i] = a[i]`, `dst[2i + 1] = b[i]` over `dst`'s length (odd: the last `b` is dropped).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn interleave(dst: &mut [f32], a: &[f32], b: &[f32]) {
    let pairs = dst.len() / 2;
    for (pair, (&a, &b)) in dst.chunks_exact_mut(2).zip(a.iter().zip(b)) {
        pair[0] = a;
        pair[1] = b;
    }
    if dst.len() % 2 == 1 {
        dst[2 * pairs] = a[pairs];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `G g G^T` of every kernel in f64 by its definition, as 16 row-major `rows x cols`
    /// matrices, each then packed by `planes::pack`: what [`transform_weight`] writes straight
    /// into the packed layout, over block edges (rows past a register block) and both
    /// directions.
    #[test]
    fn transformed_weights_are_the_packed_products_g_g_gt() {
        let g = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        for (o, c) in [(1, 1), (5, 3), (8, 16), (17, 9), (24, 7)] {
            let wt: Vec<f32> =
                (0..o * c * 9).map(|i| ((i * 37 % 41) as f32 - 20.0) / 8.0).collect();
            for adjoint in [false, true] {
                let (rows, cols) = if adjoint { (c, o) } else { (o, c) };
                let mut matrices = vec![vec![0f32; rows * cols]; POS];
                for r in 0..rows {
                    for col in 0..cols {
                        let (oc, ic) = if adjoint { (col, r) } else { (r, col) };
                        let k = &wt[(oc * c + ic) * 9..(oc * c + ic) * 9 + 9];
                        let tap = |y: usize, x: usize| {
                            f64::from(if adjoint { k[8 - (3 * y + x)] } else { k[3 * y + x] })
                        };
                        for i in 0..4 {
                            for j in 0..4 {
                                let mut v = 0f64;
                                for y in 0..3 {
                                    for x in 0..3 {
                                        v += g[i][y] * tap(y, x) * g[j][x];
                                    }
                                }
                                matrices[i * 4 + j][r * cols + col] = v as f32;
                            }
                        }
                    }
                }
                let want: Vec<f32> =
                    matrices.iter().flat_map(|m| crate::planes::pack(m, (rows, cols))).collect();
                let got = transform_weight(&wt, o, c, adjoint).unwrap();
                assert_eq!(got.len(), transformed_len(rows, cols));
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                        "{o}x{c} {adjoint} at {i}: {a} vs {b}"
                    );
                }
            }
        }
        assert!(transform_weight(&[0.0; 8], 1, 1, false).is_err());
    }
}
