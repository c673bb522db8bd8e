//! 4x4 stride-2 convolutions (DCGAN's discriminator), their input gradients (DCGAN's
//! generator, a transposed convolution) and their weight gradients by Winograd's minimal
//! filtering F(2x2, 2x2).
//!
//! A 4x4 stride-2 window splits by the parity of its taps into four 2x2 windows: with
//! `ky = 2a + p`, `kx = 2b + q`, the output is `y[i, j] = sum_(c, p, q) sum_(a, b)
//! w[o, c, 2a + p, 2b + q] x[c, 2(i + a) + p - pad, 2(j + b) + q - pad]`, a stride-1 2x2
//! convolution over the `4 C` planes `x[c, 2u + p - pad, 2v + q - pad]` (space-to-depth). The
//! input gradient splits the other way: the input positions of one parity `(p, q)` of
//! `r + pad` read the output gradient through the two taps of that parity per axis, a stride-1
//! 2x2 correlation of `dy` with those taps reversed, one for each of the four phases.
//!
//! Each 2x2 stride-1 convolution runs as F(2x2, 2x2) (Lavin and Gray, 2016): a 2x2 block of
//! outputs from a 3x3 input tile through 9 products instead of 16, the matrix products 1.78x
//! smaller, `B^T = [[1, -1, 0], [0, 1, 0], [0, -1, 1]]`, `G = [[1, 0], [1, 1], [0, 1]]`,
//! `A^T = [[1, 1, 0], [0, 1, 1]]`. Every coefficient is 0 or +-1: the transforms add and
//! subtract, and the rounding stays at the direct sums' level.
//!
//! The batch is cut into groups of up to [`LANES`] images, one group per task. A group's
//! source planes are transposed so that its images lie side by side (the transforms' vectors
//! run along them: a DCGAN layer's 4x4 plane has only four tiles); then chunk by chunk of tile
//! positions its tiles are transformed (`V = B^T d B`), multiplied by the transformed weights
//! (`U = G g G^T`, per call) in 9 products `(rows, K) x (K, tiles)` on [`crate::planes`], and
//! transformed back (`Y = A^T M A`, the bias and activation applied on the way) into the
//! group's output, which is transposed back into NCHW at the end. The weight gradient
//! ([`weight_grad`]) runs the same tiles with the output gradient's as the filters.

use candle_core::{bail, Result};
use multiversion::multiversion;
use rayon::prelude::*;

use crate::conv::{Activation, Window};
use crate::cpu::with_scratch;
use crate::sgemm::{matmul, Mat, MatMut};

/// Transformed positions per tile (3x3).
const POS: usize = 9;

/// Tiles per chunk, at least (the products' column count).
const MIN_TILES: usize = 128;

/// Images per task, at least, where the batch has them: the transforms' vectors run along
/// the images (a DCGAN layer's 4x4 plane has only 4 tiles).
const LANES: usize = 32;

/// Values of one chunk's transformed inputs and products together (1 MiB), sized for L2.
const BLOCK_VALUES: usize = 256 * 1024;

/// The products' column counts are padded to a multiple of this (one AVX-512 register of
/// f32): [`crate::planes`]' vector loops then have no column tail.
const COL_ALIGN: usize = 16;

/// Fewest input and output channels: the products are `(O, 4 C) x (4 C, tiles)` forward and
/// `(C, O) x (O, tiles)` for the input gradient, thin for DCGAN's 3-channel image layers.
const MIN_CHANNELS: usize = 16;

/// Fewest output tiles (2x2 blocks of the pass with the most) over the batch: the weight is
/// transformed on every call (`9 O 4 C` values, as many as the products take per tile).
const MIN_BATCH_TILES: usize = 64;

/// Whether a convolution of `c` to `o` channels through `win` with `groups` groups, an
/// `(oh, ow)` output and an `(h, w)` input, over `n` images, is computed here: a 4x4 kernel,
/// stride 2, dilation 1, one group, padding at most 3, and enough channels and tiles.
pub(crate) fn applies(
    (n, c, h, w): (usize, usize, usize, usize),
    (o, oh, ow): (usize, usize, usize),
    win: &Window,
    groups: usize,
) -> bool {
    win.kernel == (4, 4)
        && win.stride == 2
        && win.dilation == 1
        && win.padding <= 3
        && groups == 1
        && c.min(o) >= MIN_CHANNELS
        && n * oh.div_ceil(2) * ow.div_ceil(2) >= MIN_BATCH_TILES
        && h.min(w) >= 2
}

/// Where one source channel of a pass is read: its plane, and the source position of output
/// `(0, 0)`'s window origin (possibly outside the plane, which reads as zeros).
#[derive(Debug, Clone, Copy)]
struct Source {
    plane: usize,
    origin: (isize, isize),
}

/// One stride-1 2x2 convolution: output `(m, n)` of output channel `r` is
/// `sum_(k, a, b) g[r, k, a, b] s_k(m + a, n + b)`, where `s_k(u, v)` is the source value at
/// `origin_k + step (u, v)`, and lands in the destination plane at `dst_origin + dst_step (m, n)`.
#[derive(Debug)]
struct Pass {
    sources: Vec<Source>,
    step: usize,
    /// Outputs per image.
    out: (usize, usize),
    dst_origin: (usize, usize),
    dst_step: usize,
    /// The 9 transformed `(rows, K)` matrices, each as [`crate::planes::pack`] lays it out.
    u: Vec<f32>,
}

impl Pass {
    fn tiles(&self) -> (usize, usize) {
        (self.out.0.div_ceil(2), self.out.1.div_ceil(2))
    }
}

/// A layer's passes over a batch: `n` images of `src_planes (h, w)` planes into `rows` planes
/// of `dst_hw` each.
#[derive(Debug)]
struct Plan {
    n: usize,
    src_planes: usize,
    src_hw: (usize, usize),
    rows: usize,
    dst_hw: (usize, usize),
    passes: Vec<Pass>,
}

/// Most rows of a register block of [`crate::planes`] (its lanes here).
const BLOCK_LANES: usize = 8;

/// `U = G g G^T` of a `(rows, groups * phases.len())` matrix of 2x2 kernels, as 9 matrices in
/// the layout [`crate::planes::pack`] gives them, written there directly: column
/// `k = group * phases.len() + i` of row `r` takes taps `(2a + p, 2b + q)` of the 4x4 kernel
/// `kernel(r, group)` (`(p, q) = phases[i]`; with `flip`, `(2 (1 - a) + p, 2 (1 - b) + q)`).
/// One register block of rows per task; the block's kernels of a group are read once,
/// transposed so that the rows are the lanes, and each column's 9 values written as runs of
/// the block's rows (a tap at a time per row and column ran at about 1 ns a value).
fn transform_weight<'w>(
    rows: usize,
    groups: usize,
    phases: &[(usize, usize)],
    flip: bool,
    kernel: impl Fn(usize, usize) -> &'w [f32] + Sync,
) -> Result<Vec<f32>> {
    let cols = groups * phases.len();
    let block = crate::planes::block_rows();
    let per = crate::planes::packed_len(rows, cols);
    if block > BLOCK_LANES {
        bail!("stride-2 winograd: register blocks of {block} rows, more than {BLOCK_LANES}");
    }
    let mut u = spare_buffer(POS * per);
    if per == 0 {
        return Ok(u);
    }
    let mut parts: Vec<Vec<&mut [f32]>> =
        (0..per / (block * cols)).map(|_| Vec::with_capacity(POS)).collect();
    for matrix in u.chunks_exact_mut(per) {
        for (part, values) in parts.iter_mut().zip(matrix.chunks_exact_mut(block * cols)) {
            part.push(values);
        }
    }
    let at = |a: usize, p: usize| if flip { 2 * (1 - a) + p } else { 2 * a + p };
    parts.par_iter_mut().enumerate().for_each(|(b, part)| {
        let live = block.min(rows - b * block);
        // Tap t of the block's row l in taps[t][l], zeros past the live rows.
        let mut taps = [[0f32; BLOCK_LANES]; 16];
        #[allow(clippy::needless_range_loop)]
        for group in 0..groups {
            for l in 0..live {
                for (t, &value) in kernel(b * block + l, group)[..16].iter().enumerate() {
                    taps[t][l] = value;
                }
            }
            for (i, &(p, q)) in phases.iter().enumerate() {
                let k = group * phases.len() + i;
                let g = |a: usize, bb: usize| &taps[at(a, p) * 4 + at(bb, q)];
                let (g00, g01, g10, g11) = (g(0, 0), g(0, 1), g(1, 0), g(1, 1));
                let mut out = [[0f32; BLOCK_LANES]; POS];
                for l in 0..BLOCK_LANES {
                    // G g: rows g0, g0 + g1, g1; then (G g) G^T along the columns.
                    let gg =
                        [[g00[l], g01[l]], [g00[l] + g10[l], g01[l] + g11[l]], [g10[l], g11[l]]];
                    for (r, row) in gg.iter().enumerate() {
                        out[r * 3][l] = row[0];
                        out[r * 3 + 1][l] = row[0] + row[1];
                        out[r * 3 + 2][l] = row[1];
                    }
                }
                for (matrix, values) in part.iter_mut().zip(&out) {
                    matrix[k * block..(k + 1) * block].copy_from_slice(&values[..block]);
                }
            }
        }
    });
    Ok(u)
}

/// The forward pass's `4 C` source channels `k = (c, p, q)`: plane `c` at rows `2u + p - pad`
/// and columns `2v + q - pad`.
fn phase_sources(c: usize, pad: usize) -> Vec<Source> {
    (0..4 * c)
        .map(|k| {
            let (plane, p, q) = (k / 4, (k / 2) % 2, k % 2);
            Source { plane, origin: (p as isize - pad as isize, q as isize - pad as isize) }
        })
        .collect()
}

thread_local! {
    /// Transformed weights' and weight-gradient sums' buffers from earlier calls on this
    /// thread: at DCGAN's sizes a fresh one is 19 MB of new pages, whose page faults cost more
    /// than the transform itself. They stay allocated for the thread's life: at most
    /// [`SPARE_BUFFERS`], none larger than the largest layer's (9 x 512 x 1024 values, 19 MB,
    /// for DCGAN's 512-channel layer).
    static SPARE: std::cell::RefCell<Vec<Vec<f32>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most buffers [`SPARE`] keeps per thread: an input gradient takes four at once (a phase
/// each).
const SPARE_BUFFERS: usize = 8;

/// A buffer of `len` values, contents unspecified: the spare one of this thread's with the
/// least room that is enough, else the roomiest, grown. A training step's layers take buffers
/// of several sizes in turn, and taking whichever came last regrew them on every call.
fn spare_buffer(len: usize) -> Vec<f32> {
    let mut buffer = SPARE
        .with(|s| {
            let mut spare = s.borrow_mut();
            let fits = spare
                .iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= len)
                .min_by_key(|(_, b)| b.capacity())
                .map(|(i, _)| i);
            let roomiest =
                || spare.iter().enumerate().max_by_key(|(_, b)| b.capacity()).map(|(i, _)| i);
            let pick = fits.or_else(roomiest)?;
            Some(spare.swap_remove(pick))
        })
        .unwrap_or_default();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    buffer.truncate(len);
    buffer
}

/// Returns buffers to this thread's spares, keeping the [`SPARE_BUFFERS`] roomiest.
fn give_back(buffers: impl IntoIterator<Item = Vec<f32>>) {
    SPARE.with(|s| {
        let mut spare = s.borrow_mut();
        spare.extend(buffers);
        spare.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        spare.truncate(SPARE_BUFFERS);
    });
}

impl Drop for Plan {
    fn drop(&mut self) {
        give_back(self.passes.iter_mut().map(|p| std::mem::take(&mut p.u)));
    }
}

impl Plan {
    /// The convolution of `n` images `(c, h, w)` by `wt (o, c, 4, 4)`, stride 2, padding `pad`.
    fn conv(
        n: usize,
        (c, h, w): (usize, usize, usize),
        wt: &[f32],
        o: usize,
        pad: usize,
    ) -> Result<Plan> {
        let (oh, ow) = ((h + 2 * pad - 4) / 2 + 1, (w + 2 * pad - 4) / 2 + 1);
        let sources = phase_sources(c, pad);
        // Column k = (c, p, q) of row o: taps (2a + p, 2b + q) of kernel (o, c).
        let phases = [(0, 0), (0, 1), (1, 0), (1, 1)];
        let u = transform_weight(o, c, &phases, false, |r, ic| &wt[(r * c + ic) * 16..])?;
        let pass = Pass { sources, step: 2, out: (oh, ow), dst_origin: (0, 0), dst_step: 1, u };
        Ok(Plan { n, src_planes: c, src_hw: (h, w), rows: o, dst_hw: (oh, ow), passes: vec![pass] })
    }

    /// The input gradient of that convolution: `n` output gradients `(o, oh, ow)` into
    /// `(c, h, w)` inputs.
    fn input_grad(
        n: usize,
        (c, h, w): (usize, usize, usize),
        wt: &[f32],
        (o, oh, ow): (usize, usize, usize),
        pad: usize,
    ) -> Result<Plan> {
        // Per axis and parity p of `r + pad`: the first input position, how many there are,
        // and the output-gradient position `R0 - 1` of the first one's window origin, where
        // `R = (r + pad - p) / 2` and input `r` reads `dy[R - 1]` through tap `2 + p` and
        // `dy[R]` through tap `p`.
        let axis = |len: usize, p: usize| {
            let first = (p as isize - pad as isize).rem_euclid(2) as usize;
            let count = if first < len { (len - first).div_ceil(2) } else { 0 };
            let r0 = (first + pad - p) / 2;
            (first, count, r0 as isize - 1)
        };
        let mut passes = Vec::with_capacity(4);
        for p in 0..2 {
            for q in 0..2 {
                let (row_first, rows, row_origin) = axis(h, p);
                let (col_first, cols, col_origin) = axis(w, q);
                if rows == 0 || cols == 0 {
                    continue;
                }
                let sources = (0..o)
                    .map(|plane| Source { plane, origin: (row_origin, col_origin) })
                    .collect();
                // Row ic, column oc: window tap (a, b) reads `dy[R - 1 + a]`, kernel tap
                // `2 (1 - a) + p`.
                let u =
                    transform_weight(c, o, &[(p, q)], true, |ic, oc| &wt[(oc * c + ic) * 16..])?;
                passes.push(Pass {
                    sources,
                    step: 1,
                    out: (rows, cols),
                    dst_origin: (row_first, col_first),
                    dst_step: 2,
                    u,
                });
            }
        }
        Ok(Plan { n, src_planes: o, src_hw: (oh, ow), rows: c, dst_hw: (h, w), passes })
    }

    /// Images per task: at least [`LANES`] (the transforms' vectors run along them), more
    /// where one image has fewer than [`MIN_TILES`] tiles, at most an even share of the batch
    /// per thread.
    fn images_per_task(&self) -> usize {
        let tiles = self.passes.iter().map(|p| p.tiles().0 * p.tiles().1).max().unwrap_or(1);
        let threads = rayon::current_num_threads().max(1);
        MIN_TILES.div_ceil(tiles.max(1)).max(LANES).clamp(1, self.n.div_ceil(threads).max(1))
    }

    /// Runs the passes over `src` (`n` images of `src_planes` planes) into a new
    /// `(n, rows, dst_hw)` output, `act(value + bias)`.
    fn run(&self, src: &[f32], bias: Option<&[f32]>, act: Activation) -> Result<Vec<f32>> {
        let (h, w) = self.src_hw;
        if src.len() != self.n * self.src_planes * h * w
            || bias.is_some_and(|b| b.len() != self.rows)
        {
            bail!("stride-2 winograd: buffers do not fit the plan {self:?}");
        }
        let src_image = self.src_planes * h * w;
        let dst_image = self.rows * self.dst_hw.0 * self.dst_hw.1;
        let mut out = crate::cpu::zeroed(self.n * dst_image);
        let per_task = self.images_per_task();
        let most_sources = self.passes.iter().map(|p| p.sources.len()).max().unwrap_or(0);
        out.par_chunks_mut((per_task * dst_image).max(1)).enumerate().for_each(|(t, dst)| {
            let g = dst.len() / dst_image.max(1);
            let first = t * per_task;
            let positions = self.positions_per_chunk(most_sources, g);
            let tp = (positions * g).next_multiple_of(COL_ALIGN);
            let scratch = g * src_image + POS * (most_sources + self.rows) * tp;
            with_scratch(scratch, 4 * tp + g + dst.len(), |a, work| {
                // The images side by side: value `(plane, y, x)` of image `i` at
                // `((plane * h + y) * w + x) * g + i`.
                let (lanes, vm) = a.split_at_mut(g * src_image);
                transpose(&src[first * src_image..(first + g) * src_image], (g, src_image), lanes);
                // The output the same way, written back image by image at the end.
                let (work, staged) = work.split_at_mut(4 * tp + g);
                for pass in &self.passes {
                    let (th, tw) = pass.tiles();
                    for start in (0..th * tw).step_by(positions) {
                        let chunk = start..(start + positions).min(th * tw);
                        let job = Job { pass, lanes, g, chunk, bias, act };
                        self.chunk(&job, vm, work, staged);
                    }
                }
                transpose(staged, (dst_image, g), dst);
            });
        });
        Ok(out)
    }

    /// Tile positions per chunk of a task of `g` images: a chunk's transformed inputs and
    /// products about [`BLOCK_VALUES`], and at least [`MIN_TILES`] tiles.
    fn positions_per_chunk(&self, sources: usize, g: usize) -> usize {
        let tiles = (BLOCK_VALUES / (POS * (sources + self.rows)).max(1)).max(MIN_TILES);
        tiles.div_ceil(g.max(1)).max(1)
    }

    /// One chunk of tile positions of one pass, for a task's images, written into their
    /// output `dst`, the images side by side (value `(r, y, x)` of image `i` at
    /// `((r * dh + y) * dw + x) * g + i`).
    fn chunk(&self, job: &Job<'_>, vm: &mut [f32], work: &mut [f32], dst: &mut [f32]) {
        let Job { pass, lanes, g, ref chunk, bias, act } = *job;
        let (_, tw) = pass.tiles();
        let tiles = chunk.len() * g;
        if tiles == 0 {
            return;
        }
        let tp = tiles.next_multiple_of(COL_ALIGN);
        let (k, rows) = (pass.sources.len(), self.rows);
        let (v, rest) = vm.split_at_mut(POS * k * tp);
        let m = &mut rest[..POS * rows * tp];
        let (y, zeros) = work.split_at_mut(4 * tp);
        let zeros = &mut zeros[..g];
        zeros.fill(0.0);
        let (h, w) = self.src_hw;
        for (kk, s) in pass.sources.iter().enumerate() {
            let plane = &lanes[s.plane * h * w * g..(s.plane + 1) * h * w * g];
            let mut runs = position_runs(v, kk, k, tp);
            let geometry = (h, w, pass.step, tw, g);
            input_transform(plane, geometry, s.origin, chunk.clone(), zeros, &mut runs);
            for run in runs {
                run[tiles..].fill(0.0);
            }
        }
        let per = pass.u.len() / POS;
        let none = crate::planes::Epilogue::new(None, Activation::Identity);
        for xi in 0..POS {
            let mut products: Vec<_> = m[xi * rows * tp..(xi + 1) * rows * tp]
                .chunks_exact_mut(tp)
                .map(crate::planes::uninit)
                .collect();
            let vx = &v[xi * k * tp..(xi + 1) * k * tp];
            let u = &pass.u[xi * per..(xi + 1) * per];
            crate::planes::product(&mut products, u, vx, (tp, k, tp), none);
        }
        let (dh, dw) = self.dst_hw;
        let dst_plane = dh * dw;
        for r in 0..rows {
            let shift = bias.map_or(0.0, |b| b[r]);
            output_transform(m, r * tp, rows * tp, tiles, shift, act, y);
            for (j, position) in chunk.clone().enumerate() {
                let (ti, tj) = (position / tw, position % tw);
                for (a, b) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (mm, nn) = (2 * ti + a, 2 * tj + b);
                    if mm < pass.out.0 && nn < pass.out.1 {
                        let row = pass.dst_origin.0 + pass.dst_step * mm;
                        let col = pass.dst_origin.1 + pass.dst_step * nn;
                        let at = (r * dst_plane + row * dw + col) * g;
                        let from = (2 * a + b) * tp + j * g;
                        dst[at..at + g].copy_from_slice(&y[from..from + g]);
                    }
                }
            }
        }
    }
}

/// A chunk of one pass's tile positions for a task's `g` images, `lanes` their source planes
/// with the images side by side.
struct Job<'a> {
    pass: &'a Pass,
    lanes: &'a [f32],
    g: usize,
    chunk: std::ops::Range<usize>,
    bias: Option<&'a [f32]>,
    act: Activation,
}

/// `dst (cols, rows) = src (rows, cols)^T`: blocks of 16 x 16 transposed in registers where
/// the CPU has AVX-512, the rest value by value (which ran at about 2.5 ns a value for a
/// DCGAN layer's output gradient).
fn transpose(src: &[f32], (rows, cols): (usize, usize), dst: &mut [f32]) {
    let (whole_rows, whole_cols) = (rows / 16 * 16, cols / 16 * 16);
    let mut done = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if crate::direct::available() {
        for i0 in (0..whole_rows).step_by(16) {
            for j0 in (0..whole_cols).step_by(16) {
                let from = &src[i0 * cols + j0..];
                crate::direct::transpose16(from, cols, &mut dst[j0 * rows + i0..], rows);
            }
        }
        done = (whole_rows, whole_cols);
    }
    for i in 0..rows {
        let first = if i < done.0 { done.1 } else { 0 };
        for j in first..cols {
            dst[j * rows + i] = src[i * cols + j];
        }
    }
}

/// `B^T d B` of tile positions `chunk` (of `tw` per tile row) of one source for a run of `g`
/// images: the source `plane` holds the images side by side (value `(y, x)` of image `i` at
/// `(y * w + x) * g + i`), tile `(ti, tj)`'s input `(u, v)` lies at `origin + step (2 ti + u,
/// 2 tj + v)` (zeros outside the `(h, w)` plane), and its position `xi` goes to
/// `runs[xi][j * g + i]` for the chunk's `j`-th position.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn input_transform(
    plane: &[f32],
    (h, w, step, tw, g): (usize, usize, usize, usize, usize),
    origin: (isize, isize),
    chunk: std::ops::Range<usize>,
    zeros: &[f32],
    runs: &mut [&mut [f32]; POS],
) {
    for (j, position) in chunk.enumerate() {
        let (ti, tj) = (position / tw, position % tw);
        let input = |u: usize, v: usize| -> &[f32] {
            let y = origin.0 + (step * (2 * ti + u)) as isize;
            let x = origin.1 + (step * (2 * tj + v)) as isize;
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                return &zeros[..g];
            }
            let at = (y as usize * w + x as usize) * g;
            &plane[at..at + g]
        };
        let (d00, d01, d02) = (input(0, 0), input(0, 1), input(0, 2));
        let (d10, d11, d12) = (input(1, 0), input(1, 1), input(1, 2));
        let (d20, d21, d22) = (input(2, 0), input(2, 1), input(2, 2));
        // The nine runs sliced here, not by a helper returning an array of them: through
        // `each_mut().map(..)` the loop below ran 1.5x slower (`dcgan_layers 64`, forward sum
        // 104 -> 156-163 ms), its stores no longer known apart from its loads.
        let [v00, v01, v02, v10, v11, v12, v20, v21, v22] = runs;
        let out = j * g..(j + 1) * g;
        let (v00, v01, v02) = (&mut v00[out.clone()], &mut v01[out.clone()], &mut v02[out.clone()]);
        let (v10, v11, v12) = (&mut v10[out.clone()], &mut v11[out.clone()], &mut v12[out.clone()]);
        let (v20, v21, v22) = (&mut v20[out.clone()], &mut v21[out.clone()], &mut v22[out]);
        for i in 0..g {
            // B^T d: rows d0 - d1, d1, d2 - d1; then columns e0 - e1, e1, e2 - e1.
            let (a0, a1, a2) = (d00[i] - d10[i], d01[i] - d11[i], d02[i] - d12[i]);
            let (c0, c1, c2) = (d20[i] - d10[i], d21[i] - d11[i], d22[i] - d12[i]);
            v00[i] = a0 - a1;
            v01[i] = a1;
            v02[i] = a2 - a1;
            v10[i] = d10[i] - d11[i];
            v11[i] = d11[i];
            v12[i] = d12[i] - d11[i];
            v20[i] = c0 - c1;
            v21[i] = c1;
            v22[i] = c2 - c1;
        }
    }
}

/// `A^T m A` of every tile for one output channel, then `act(value + shift)`: tile `t`'s
/// position `xi` is `m[base + xi * stride + t]`; `y` receives the four outputs (top left, top
/// right, bottom left, bottom right) as four runs of `y.len() / 4` values.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn output_transform(
    m: &[f32],
    base: usize,
    stride: usize,
    tiles: usize,
    shift: f32,
    act: Activation,
    y: &mut [f32],
) {
    let run = y.len() / 4;
    let (top, bottom) = y.split_at_mut(2 * run);
    let (y00, y01) = top.split_at_mut(run);
    let (y10, y11) = bottom.split_at_mut(run);
    let at = |xi: usize| &m[base + xi * stride..base + xi * stride + tiles];
    let (m0, m1, m2, m3, m4, m5, m6, m7, m8) =
        (at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7), at(8));
    for t in 0..tiles {
        // A^T m: rows m0 + m1 (of the 3x3 rows), m1 + m2; then along the columns.
        let (s0, s1, s2) = (m0[t] + m3[t], m1[t] + m4[t], m2[t] + m5[t]);
        let (d0, d1, d2) = (m3[t] + m6[t], m4[t] + m7[t], m5[t] + m8[t]);
        y00[t] = s0 + s1 + shift;
        y01[t] = s1 + s2 + shift;
        y10[t] = d0 + d1 + shift;
        y11[t] = d1 + d2 + shift;
    }
    if let Some(ceiling) = act.ceiling() {
        for y in [y00, y01, y10, y11] {
            y[..tiles].iter_mut().for_each(|v| *v = v.clamp(0.0, ceiling));
        }
    }
}

/// The convolution of `x (n, c, h, w)` by `wt (o, c, 4, 4)` at stride 2, padded by `pad`, then
/// `act(value + bias)`.
pub(crate) fn conv(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    wt: &[f32],
    o: usize,
    pad: usize,
    bias: Option<&[f32]>,
    act: Activation,
) -> Result<Vec<f32>> {
    if wt.len() != o * c * 16 || h + 2 * pad < 4 || w + 2 * pad < 4 {
        bail!("stride-2 winograd: a weight of {} values, {c}x{h}x{w} padded by {pad}", wt.len());
    }
    Plan::conv(n, (c, h, w), wt, o, pad)?.run(x, bias, act)
}

/// That convolution's input gradient: from `gy (n, o, oh, ow)` to the `(n, c, h, w)` input's.
pub(crate) fn input_grad(
    gy: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    wt: &[f32],
    (o, oh, ow): (usize, usize, usize),
    pad: usize,
) -> Result<Vec<f32>> {
    if wt.len() != o * c * 16 || h + 2 * pad < 4 || w + 2 * pad < 4 {
        bail!("stride-2 winograd: a weight of {} values, {c}x{h}x{w} padded by {pad}", wt.len());
    }
    let want = ((h + 2 * pad - 4) / 2 + 1, (w + 2 * pad - 4) / 2 + 1);
    if want != (oh, ow) {
        bail!("stride-2 winograd: an output gradient of {oh}x{ow} for {h}x{w} padded by {pad}");
    }
    Plan::input_grad(n, (c, h, w), wt, (o, oh, ow), pad)?.run(gy, None, Activation::Identity)
}

/// Tiles per chunk of the weight gradient, at least: its products are `(O, tiles) x (tiles,
/// 4 C)`, accumulated over the chunks, so the tiles are their depth.
const MIN_GRAD_TILES: usize = 512;

/// Fewest output tiles per task for the weight gradient: each task's sums are `9 O 4 C`
/// values, added up after the tasks; with fewer tiles than this to sum over, reading them
/// back costs what the products save. DCGAN's 512-channel layer at batch 64 (128 tiles a task
/// on two threads) ran 22.9 against 22.7 ms on `planes` in a training step, its 256-channel
/// one (512 tiles) 17.5 against 21.7.
const MIN_GRAD_TASK_TILES: usize = 256;

/// Whether [`weight_grad`] takes a layer that [`applies`] with `n` images of `(oh, ow)`
/// outputs: enough tiles per task.
pub(crate) fn weight_grad_applies(n: usize, (oh, ow): (usize, usize)) -> bool {
    grad_images_per_task(n) * oh.div_ceil(2) * ow.div_ceil(2) >= MIN_GRAD_TASK_TILES
}

/// Images per task of [`weight_grad`]: [`LANES`], at most an even share of `n` per thread.
fn grad_images_per_task(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    LANES.clamp(1, n.div_ceil(threads).max(1))
}

/// That convolution's weight gradient: from `x (n, c, h, w)` and `gy (n, o, oh, ow)` to
/// `(o, c, 4, 4)`. Over the forward pass's `4 C` phase planes `s_k` each 2x2 output tile of
/// `gy` contributes `dW[o, k, a, b] += sum_(i, j) gy[2 ti + i, 2 tj + j] s_k(2 ti + i + a,
/// 2 tj + j + b)`, a 2x2 correlation of a 3x3 input tile with a 2x2 one: F(2x2, 2x2) again, with
/// the output gradient's tile as the filter. Each task (a group of images) sums
/// `M_xi = E_xi V_xi^T` over its tiles (`E = G e G^T` of the output gradient's tiles,
/// `V = B^T d B` of the input's) on `planes` (on `gemm` where `O` is not a multiple of 16);
/// the tasks' sums are added in task order and `A^T M A` gives the gradient.
pub(crate) fn weight_grad(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    gy: &[f32],
    (o, oh, ow): (usize, usize, usize),
    pad: usize,
) -> Result<Vec<f32>> {
    if h + 2 * pad < 4 || w + 2 * pad < 4 {
        bail!("stride-2 winograd: {c}x{h}x{w} padded by {pad} is smaller than the window");
    }
    let want = ((h + 2 * pad - 4) / 2 + 1, (w + 2 * pad - 4) / 2 + 1);
    if want != (oh, ow) || x.len() != n * c * h * w || gy.len() != n * o * oh * ow {
        bail!("stride-2 winograd: {n}x{c}x{h}x{w} and an output gradient of {o}x{oh}x{ow}");
    }
    let sources = phase_sources(c, pad);
    let k = 4 * c;
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let per_task = grad_images_per_task(n);
    let (x_image, gy_image) = (c * h * w, o * oh * ow);
    let tasks: Vec<usize> = (0..n).step_by(per_task).collect();
    // The tasks' sums come from this thread's spares and go back to them: taken on the
    // workers, they would be returned to this thread, never to the worker that takes a fresh
    // one (19 MB at DCGAN's 512-channel layer) on its next call.
    let mut sums: Vec<Vec<f32>> = tasks.iter().map(|_| spare_buffer(POS * o * k)).collect();
    let done: Vec<Result<()>> = tasks
        .par_iter()
        .zip(sums.par_iter_mut())
        .map(|(&first, sum)| {
            let g = per_task.min(n - first);
            let positions = MIN_GRAD_TILES.div_ceil(g).clamp(1, th * tw);
            let tp = (positions * g).next_multiple_of(COL_ALIGN);
            let scratch = g * (x_image + gy_image) + POS * (k + o) * tp;
            with_scratch(scratch, g + tp * o, |a, b| {
                let (zeros, et) = b.split_at_mut(g);
                let (x_lanes, rest) = a.split_at_mut(g * x_image);
                let (gy_lanes, rest) = rest.split_at_mut(g * gy_image);
                let (v, e) = rest.split_at_mut(POS * k * tp);
                transpose(&x[first * x_image..(first + g) * x_image], (g, x_image), x_lanes);
                transpose(&gy[first * gy_image..(first + g) * gy_image], (g, gy_image), gy_lanes);
                zeros.fill(0.0);
                for (index, start) in (0..th * tw).step_by(positions).enumerate() {
                    let chunk = start..(start + positions).min(th * tw);
                    let tiles = chunk.len() * g;
                    for (kk, s) in sources.iter().enumerate() {
                        let plane = &x_lanes[s.plane * h * w * g..(s.plane + 1) * h * w * g];
                        let mut runs = position_runs(v, kk, k, tp);
                        let geometry = (h, w, 2, tw, g);
                        input_transform(plane, geometry, s.origin, chunk.clone(), zeros, &mut runs);
                        runs.iter_mut().for_each(|run| run[tiles..].fill(0.0));
                    }
                    for oc in 0..o {
                        let plane = &gy_lanes[oc * oh * ow * g..(oc + 1) * oh * ow * g];
                        let mut runs = position_runs(e, oc, o, tp);
                        let geometry = (oh, ow, tw, g);
                        filter_transform(plane, geometry, chunk.clone(), zeros, &mut runs);
                        runs.iter_mut().for_each(|run| run[tiles..].fill(0.0));
                    }
                    for xi in 0..POS {
                        let m = &mut sum[xi * o * k..(xi + 1) * o * k];
                        let vx = &v[xi * k * tp..(xi + 1) * k * tp];
                        let ex = &e[xi * o * tp..(xi + 1) * o * tp];
                        if !o.is_multiple_of(16) {
                            let dst = MatMut::rows(m, k, o);
                            let rhs = Mat::rows(ex, o, tp).t();
                            matmul(dst, Mat::rows(vx, k, tp), rhs, index > 0, false)?;
                            continue;
                        }
                        // `M^T (4 C, O) = V (4 C, tiles) E^T (tiles, O)` on `planes`.
                        transpose(ex, (o, tp), et);
                        let packed = crate::planes::pack(vx, (k, tp));
                        let mut rows: Vec<&mut [f32]> = m.chunks_exact_mut(o).collect();
                        if index == 0 {
                            let mut rows: Vec<_> =
                                rows.iter_mut().map(|r| crate::planes::uninit(r)).collect();
                            let none = crate::planes::Epilogue::new(None, Activation::Identity);
                            crate::planes::product(&mut rows, &packed, et, (o, tp, o), none);
                        } else {
                            crate::planes::accumulate(&mut rows, &packed, et, (o, tp, o));
                        }
                    }
                }
                Ok::<_, candle_core::Error>(())
            })?;
            Ok(())
        })
        .collect();
    done.into_iter().collect::<Result<Vec<_>>>()?;
    let mut dw = vec![0f32; o * c * 16];
    // Blocks of output channels, so that the sums' rows (`M^T`, output channels along them)
    // are read in runs: one channel at a time read them 512 values apart, 24 ms for DCGAN's
    // 512-channel layer.
    const BLOCK: usize = 16;
    dw.par_chunks_mut(BLOCK * c * 16).enumerate().for_each(|(block, kernels)| {
        let first = block * BLOCK;
        let live = kernels.len() / (c * 16);
        for kk in 0..k {
            let (ic, p, q) = (kk / 4, (kk / 2) % 2, kk % 2);
            let mut m = [[0f32; BLOCK]; POS];
            for sum in &sums {
                for (xi, values) in m.iter_mut().enumerate() {
                    let at = (xi * k + kk) * o + first;
                    for (value, &add) in values.iter_mut().zip(&sum[at..at + live]) {
                        *value += add;
                    }
                }
            }
            for (l, kernel) in kernels.chunks_exact_mut(c * 16).enumerate() {
                let m: [f32; POS] = std::array::from_fn(|xi| m[xi][l]);
                // A^T m A: rows m0 + m1, m1 + m2 (of the 3x3), then along the columns.
                let s = [m[0] + m[3], m[1] + m[4], m[2] + m[5]];
                let d = [m[3] + m[6], m[4] + m[7], m[5] + m[8]];
                let out = [[s[0] + s[1], s[1] + s[2]], [d[0] + d[1], d[1] + d[2]]];
                for (a, row) in out.iter().enumerate() {
                    for (b, &value) in row.iter().enumerate() {
                        kernel[(ic * 4 + 2 * a + p) * 4 + 2 * b + q] = value;
                    }
                }
            }
        }
    });
    give_back(sums);
    Ok(dw)
}

/// Position `xi`'s run of row `row` of a transformed block `(POS, rows, tp)`:
/// `v[xi * rows * tp + row * tp..][..tp]`.
fn position_runs(v: &mut [f32], row: usize, rows: usize, tp: usize) -> [&mut [f32]; POS] {
    let mut runs: [&mut [f32]; POS] = Default::default();
    let mut rest = &mut v[row * tp..];
    for (xi, run) in runs.iter_mut().enumerate() {
        let take = if xi + 1 < POS { rows * tp } else { tp };
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(take);
        *run = &mut head[..tp];
        rest = tail;
    }
    runs
}

/// `G e G^T` of tile positions `chunk` (of `tw` per tile row) of one output-gradient plane for
/// a run of `g` images (value `(y, x)` of image `i` at `(y * w + x) * g + i`): tile `(ti, tj)`
/// is `e[u][v] = plane(2 ti + u, 2 tj + v)` (zeros past the `(h, w)` plane); position `xi` goes
/// to `runs[xi][j * g + i]` for the chunk's `j`-th position.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn filter_transform(
    plane: &[f32],
    (h, w, tw, g): (usize, usize, usize, usize),
    chunk: std::ops::Range<usize>,
    zeros: &[f32],
    runs: &mut [&mut [f32]; POS],
) {
    for (j, position) in chunk.enumerate() {
        let (ti, tj) = (position / tw, position % tw);
        let input = |u: usize, v: usize| -> &[f32] {
            let (y, x) = (2 * ti + u, 2 * tj + v);
            if y >= h || x >= w {
                return &zeros[..g];
            }
            &plane[(y * w + x) * g..(y * w + x + 1) * g]
        };
        let (e00, e01, e10, e11) = (input(0, 0), input(0, 1), input(1, 0), input(1, 1));
        let [u00, u01, u02, u10, u11, u12, u20, u21, u22] = runs;
        let out = j * g..(j + 1) * g;
        let (u00, u01, u02) = (&mut u00[out.clone()], &mut u01[out.clone()], &mut u02[out.clone()]);
        let (u10, u11, u12) = (&mut u10[out.clone()], &mut u11[out.clone()], &mut u12[out.clone()]);
        let (u20, u21, u22) = (&mut u20[out.clone()], &mut u21[out.clone()], &mut u22[out]);
        for i in 0..g {
            // G e: rows e0, e0 + e1, e1; then the same along the columns.
            let (s0, s1) = (e00[i] + e10[i], e01[i] + e11[i]);
            u00[i] = e00[i];
            u01[i] = e00[i] + e01[i];
            u02[i] = e01[i];
            u10[i] = s0;
            u11[i] = s0 + s1;
            u12[i] = s1;
            u20[i] = e10[i];
            u21[i] = e10[i] + e11[i];
            u22[i] = e11[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 1001.0).collect()
    }

    /// The three passes against f64 loops over the definition, over odd and even sizes, every
    /// padding, and bias with a clipping activation.
    #[test]
    fn matches_the_direct_sums() {
        for &(n, c, o, h, w, pad) in &[
            (2, 16, 16, 8, 8, 1),
            (1, 17, 19, 9, 7, 1),
            (3, 16, 20, 6, 11, 0),
            (2, 18, 16, 7, 8, 2),
            (1, 16, 16, 5, 5, 3),
            // 576 tiles: the weight gradient's sums over two chunks (the second accumulated).
            (1, 16, 16, 96, 96, 1),
        ] {
            let (oh, ow) = ((h + 2 * pad - 4) / 2 + 1, (w + 2 * pad - 4) / 2 + 1);
            let x = values(n * c * h * w, 1);
            let wt = values(o * c * 16, 2);
            let bias = values(o, 3);
            let gy = values(n * o * oh * ow, 4);
            let at = |yy: usize, t: usize| (yy * 2 + t) as isize - pad as isize;
            let mut y = vec![0f64; n * o * oh * ow];
            let mut dx = vec![0f64; n * c * h * w];
            let mut dw = vec![0f64; o * c * 16];
            for i in 0..n {
                for oc in 0..o {
                    for yy in 0..oh {
                        for xx in 0..ow {
                            let mut s = 0f64;
                            let g = f64::from(gy[((i * o + oc) * oh + yy) * ow + xx]);
                            for ic in 0..c {
                                for ky in 0..4 {
                                    for kx in 0..4 {
                                        let (r, q) = (at(yy, ky), at(xx, kx));
                                        if r < 0 || q < 0 || r >= h as isize || q >= w as isize {
                                            continue;
                                        }
                                        let xi = ((i * c + ic) * h + r as usize) * w + q as usize;
                                        let wi = ((oc * c + ic) * 4 + ky) * 4 + kx;
                                        let wv = f64::from(wt[wi]);
                                        s += wv * f64::from(x[xi]);
                                        dx[xi] += wv * g;
                                        dw[wi] += f64::from(x[xi]) * g;
                                    }
                                }
                            }
                            y[((i * o + oc) * oh + yy) * ow + xx] =
                                (s + f64::from(bias[oc])).clamp(0.0, 6.0);
                        }
                    }
                }
            }
            let got = conv(&x, (n, c, h, w), &wt, o, pad, Some(&bias), Activation::Relu6).unwrap();
            let got_dx = input_grad(&gy, (n, c, h, w), &wt, (o, oh, ow), pad).unwrap();
            let got_dw = weight_grad(&x, (n, c, h, w), &gy, (o, oh, ow), pad).unwrap();
            let checks =
                [("forward", got, y), ("input grad", got_dx, dx), ("weight grad", got_dw, dw)];
            for (name, got, want) in checks {
                let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
                assert_eq!(got.len(), want.len());
                for (j, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(*a) - b).abs() <= 1e-5 * scale,
                        "{name} {n}x{c}x{h}x{w} -> {o}, pad {pad}, at {j}: {a} vs {b}"
                    );
                }
            }
        }
    }
}
