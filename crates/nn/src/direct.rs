//! Strided convolutions with small outputs, straight from the zero-padded input planes: vectors
//! along the output channels, the input values broadcast where they lie (oneDNN's blocking for
//! these shapes).
//!
//! The `im2col` + [`crate::planes`] path copies every input value `kh * kw / stride^2` times
//! (four times for DCGAN's 4x4 stride-2 layers) into columns that a product then reads once
//! per register block; at outputs of 8x8 and 4x4 that copy was 11% of a layer. Here each image
//! is padded once, and a register block of 4 output pixels by 96 output channels walks the
//! depth `(input channel, tap)`, broadcasting 4 input values and loading 6 packed weight
//! vectors per step: 24 multiply-adds, as many as the `planes` tile.
//!
//! The input gradient of such a layer (a transposed convolution: DCGAN's generator) runs on
//! the same register blocks, one pass per phase of the stride: the output positions whose
//! residues modulo the stride are the same read the padded output gradient through the same
//! taps, a stride-1 window of the kernel's taps of that phase.

use std::ops::Range;

use candle_core::{bail, Result};
use rayon::prelude::*;

use crate::conv::{Activation, Window};

/// Output pixels per register block.
const PIX: usize = 4;

/// Output channels per register block: six AVX-512 vectors (a block of 8 pixels by 48
/// channels measured the same or slower, `benches/NOTES.md`).
const CH: usize = 96;

/// Depth steps (source channel, tap) per depth block: 1,024 steps by 96 output channels are
/// 384 KiB of packed weights, an L2-resident block that every image of a thread's run sweeps.
const DEPTH_STEPS: usize = 1024;

/// A layer's work for the register blocks: `n` images of `depth` source planes `src`
/// (zero-padded by `margins`: top, bottom, left, right) into `o` output planes of `p` pixels,
/// in passes of output pixels that share their taps: a convolution is one pass, the input
/// gradient of a strided one (a transposed convolution) one pass per phase of the stride.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    n: usize,
    depth: usize,
    src: (usize, usize),
    margins: [usize; 4],
    o: usize,
    p: usize,
    passes: Vec<Pass>,
    /// The weight is the convolution's `(depth, o, kh, kw)` (an input gradient's), not its
    /// `(o, depth, kh, kw)`.
    transposed: bool,
    /// `kh * kw`.
    kernel_taps: usize,
}

/// Output pixels that read their source through the same taps.
#[derive(Debug, Clone)]
struct Pass {
    /// Each tap's offset in a padded source plane from a window's origin, and its index among
    /// the kernel's `kh * kw` taps.
    taps: Vec<(usize, usize)>,
    /// Each output pixel, and its window's origin in a padded source plane.
    pixels: Vec<(usize, usize)>,
}

/// One phase of one axis: taps `(offset, index)`, and positions with their windows' origins.
type AxisPhase = (Vec<(usize, usize)>, Vec<(usize, isize)>);

/// One axis of a strided convolution's input gradient, by phase `r` of the stride: the taps
/// `(offset, index)` that reach positions `i` with `(i + padding) % stride == r`, and those
/// positions with their windows' origins (in output-gradient positions, possibly negative).
fn axis_phases(
    len: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
) -> Vec<AxisPhase> {
    let (s, pad, d) = (stride as isize, padding as isize, dilation as isize);
    (0..s)
        .map(|r| {
            // Output position y = u + e for input position i = s u + r - padding, where tap k
            // has e = (r - k d) / s, exact for the taps of this phase.
            let taps: Vec<(isize, usize)> = (0..kernel)
                .filter(|&k| (r - k as isize * d).rem_euclid(s) == 0)
                .map(|k| ((r - k as isize * d).div_euclid(s), k))
                .collect();
            let low = taps.iter().map(|t| t.0).min().unwrap_or(0);
            let pixels = (0..len)
                .filter(|&i| (i as isize + pad).rem_euclid(s) == r)
                .map(|i| (i, (i as isize + pad - r).div_euclid(s) + low))
                .collect();
            let taps = taps.into_iter().map(|(e, k)| ((e - low) as usize, k)).collect();
            (taps, pixels)
        })
        .collect()
}

impl Plan {
    /// The convolution of `n` images `(c, h, w)` by an `(o, c, kh, kw)` weight through `win`.
    ///
    /// # Errors
    /// A window that does not fit the input.
    pub(crate) fn conv(
        n: usize,
        (c, h, w): (usize, usize, usize),
        o: usize,
        win: &Window,
    ) -> Result<Plan> {
        let (oh, ow) = win.out_hw(h, w)?;
        let (s, pad, d) = (win.stride, win.padding, win.dilation);
        let wp = w + 2 * pad;
        let (kh, kw) = win.kernel;
        let taps = (0..kh * kw).map(|t| ((t / kw) * d * wp + (t % kw) * d, t)).collect();
        let pixels = (0..oh * ow).map(|q| (q, (q / ow) * s * wp + (q % ow) * s)).collect();
        Ok(Plan {
            n,
            depth: c,
            src: (h, w),
            margins: [pad; 4],
            o,
            p: oh * ow,
            passes: vec![Pass { taps, pixels }],
            transposed: false,
            kernel_taps: kh * kw,
        })
    }

    /// The input gradient of that convolution: `n` output gradients `(o, oh, ow)` into
    /// `(c, h, w)`, one pass per phase of the stride (a phase no tap reaches gets zeros).
    ///
    /// # Errors
    /// A window that does not fit the input.
    pub(crate) fn conv_input_grad(
        n: usize,
        (c, h, w): (usize, usize, usize),
        o: usize,
        win: &Window,
    ) -> Result<Plan> {
        let (oh, ow) = win.out_hw(h, w)?;
        let (kh, kw) = win.kernel;
        let rows = axis_phases(h, kh, win.stride, win.padding, win.dilation);
        let cols = axis_phases(w, kw, win.stride, win.padding, win.dilation);
        // Margins that hold every window: origins below 0, reaches past the last position.
        let margin = |phases: &[AxisPhase], len: usize| {
            let mut before = 0isize;
            let mut after = 0isize;
            for (taps, pixels) in phases {
                let reach = taps.iter().map(|t| t.0 as isize).max().unwrap_or(0);
                for &(_, origin) in pixels {
                    before = before.max(-origin);
                    after = after.max(origin + reach - (len as isize - 1));
                }
            }
            (before as usize, after as usize)
        };
        let (top, bottom) = margin(&rows, oh);
        let (left, right) = margin(&cols, ow);
        let wp = ow + left + right;
        let mut passes = Vec::with_capacity(rows.len() * cols.len());
        for (row_taps, row_pixels) in &rows {
            for (col_taps, col_pixels) in &cols {
                let taps = row_taps
                    .iter()
                    .flat_map(|&(dy, ty)| {
                        col_taps.iter().map(move |&(dx, tx)| (dy * wp + dx, ty * kw + tx))
                    })
                    .collect();
                let pixels = row_pixels
                    .iter()
                    .flat_map(|&(i, y)| {
                        col_pixels.iter().map(move |&(j, x)| {
                            let origin =
                                (y + top as isize) as usize * wp + (x + left as isize) as usize;
                            (i * w + j, origin)
                        })
                    })
                    .collect();
                passes.push(Pass { taps, pixels });
            }
        }
        Ok(Plan {
            n,
            depth: o,
            src: (oh, ow),
            margins: [top, bottom, left, right],
            o: c,
            p: h * w,
            passes,
            transposed: true,
            kernel_taps: kh * kw,
        })
    }

    fn padded(&self) -> (usize, usize) {
        let [top, bottom, left, right] = self.margins;
        (self.src.0 + top + bottom, self.src.1 + left + right)
    }

    fn plane(&self) -> usize {
        let (hp, wp) = self.padded();
        hp * wp
    }

    /// Where pass `i`'s packed weights start.
    fn pass_start(&self, i: usize) -> usize {
        self.passes[..i].iter().map(|p| self.o * self.depth * p.taps.len()).sum()
    }

    /// Values of [`Plan::pack`]'s output.
    pub(crate) fn packed_len(&self) -> usize {
        self.pass_start(self.passes.len())
    }

    /// The weight (`(o, depth, kh, kw)`, or `(depth, o, kh, kw)` for an input gradient), `o` a
    /// multiple of 16, as each pass's blocks of 96 output channels (the last one 16 to 96
    /// wide), each block's values ordered by source channel, then the pass's tap, then output
    /// channel: one row of vectors per depth step.
    ///
    /// # Errors
    /// A weight of another size, `o` not a multiple of 16.
    pub(crate) fn pack(&self, wt: &[f32]) -> Result<Vec<f32>> {
        let (o, depth, k_all) = (self.o, self.depth, self.kernel_taps);
        if !o.is_multiple_of(16) || wt.len() != o * depth * k_all {
            bail!("direct conv: {} weight values for {o} x {depth} x {k_all} ({o} not a multiple of 16)", wt.len());
        }
        let len = self.packed_len();
        let mut packed = Vec::with_capacity(len);
        if len == 0 {
            return Ok(packed);
        }
        // A convolution's plan is one pass over all of the kernel's taps, in order.
        if !self.transposed {
            // Each block on its own task, 16 rows by 16 steps at a time transposed in registers:
            // a 512 x 4096 weight packed on one thread, all of a block's rows read in step, took
            // as long as an eighth of the product, and element by element on two a sixteenth.
            let k = depth * k_all;
            let whole = if available() { k / 16 * 16 } else { 0 };
            packed.spare_capacity_mut()[..len].par_chunks_mut(CH * k).enumerate().for_each(
                |(b, dst)| {
                    let width = dst.len() / k;
                    let rows = &wt[b * CH * k..(b * CH + width) * k];
                    for (v, src) in rows.chunks_exact(16 * k).enumerate() {
                        for p in (0..whole).step_by(16) {
                            let to = &mut dst[p * width + 16 * v..];
                            // SAFETY: AVX-512F was detected (`whole` is 0 otherwise).
                            #[allow(unsafe_code)]
                            unsafe {
                                wide::transpose16(&src[p..], k, to, width)
                            };
                        }
                        for p in whole..k {
                            let step = &mut dst[p * width + 16 * v..p * width + 16 * v + 16];
                            for (r, d) in step.iter_mut().enumerate() {
                                d.write(src[r * k + p]);
                            }
                        }
                    }
                },
            );
            // SAFETY: the blocks cover the first `len` slots (`len` is `o * k`), and each
            // block's `width / 16` runs of 16 rows wrote all `width` values of each of its `k`
            // steps (`transpose16` 16 values of 16 steps, the loop after it the rest); `f32`
            // needs no drop.
            #[allow(unsafe_code)]
            unsafe {
                packed.set_len(len);
            }
            return Ok(packed);
        }
        // An input gradient's weight with each source channel's `(o, taps)` block transposed
        // to `(taps, o)`, so that every packed step is a contiguous run of it (read element by
        // element, 16 values apart, this packing and the forward epilogue's loop were together
        // 3.3% of the DCGAN step's samples, `benches/NOTES.md`).
        let mut turned = TURNED.with(|b| std::mem::take(&mut *b.borrow_mut()));
        turned.resize(wt.len(), 0.0);
        let block = (o * k_all).max(1);
        turned.par_chunks_mut(block).zip(wt.par_chunks(block)).for_each(|(dst, src)| {
            transpose(src, (o, k_all, k_all), crate::planes::uninit(dst));
        });
        // One task per block of each pass: a block's values are contiguous.
        let mut regions = Vec::new();
        let mut rest = &mut packed.spare_capacity_mut()[..len];
        for pass in &self.passes {
            for start in (0..o).step_by(CH) {
                let width = CH.min(o - start);
                let (region, tail) = rest.split_at_mut(width * depth * pass.taps.len());
                regions.push((pass, start, width, region));
                rest = tail;
            }
        }
        regions.into_par_iter().for_each(|(pass, start, width, region)| {
            let mut steps = region.chunks_exact_mut(width.max(1));
            for dc in 0..depth {
                for &(_, t) in &pass.taps {
                    let Some(step) = steps.next() else { return };
                    let src = &turned[(dc * k_all + t) * o + start..][..width];
                    for (d, &v) in step.iter_mut().zip(src) {
                        d.write(v);
                    }
                }
            }
        });
        TURNED.with(|b| *b.borrow_mut() = turned);
        // SAFETY: the regions partition the first `len` slots (`len` is the sum of their
        // lengths), and each region's `depth * taps` steps of `width` values were all written
        // (`steps` yields exactly that many); `f32` needs no drop.
        #[allow(unsafe_code)]
        unsafe {
            packed.set_len(len);
        }
        Ok(packed)
    }
}

/// `dst[i * ds + j] = src[j * ss + i]` for `i, j < 16`, in registers; `None` (nothing
/// written) without AVX-512F.
///
/// # Panics
/// If `src` or `dst` is shorter than 15 strides and 16 values.
pub(crate) fn transpose16(src: &[f32], ss: usize, dst: &mut [f32], ds: usize) -> Option<()> {
    if !available() {
        return None;
    }
    // SAFETY: AVX-512F was detected above.
    #[allow(unsafe_code)]
    unsafe {
        wide::transpose16(src, ss, crate::planes::uninit(dst), ds)
    };
    Some(())
}

/// Whether this CPU runs the kernel (AVX-512F).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// `act(sum + bias)` of the plan, its weight packed by [`Plan::pack`], from `n` images of source
/// planes `x` (NCHW) into a new NCHW vector; images split over rayon's threads in runs. Needs
/// [`available`].
///
/// # Errors
/// Operands of other sizes than the plan's, a plan whose windows leave the padded planes.
pub(crate) fn forward(
    plan: &Plan,
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Result<Vec<f32>> {
    let (p, o) = (plan.p, plan.o);
    if !available() {
        bail!("direct conv: needs AVX-512F");
    }
    let (h, w) = plan.src;
    if x.len() != plan.n * plan.depth * h * w
        || packed.len() != plan.packed_len()
        || bias.is_some_and(|b| b.len() != o)
        || !o.is_multiple_of(16)
    {
        bail!(
            "direct conv: {} input values, {} packed weight values for {plan:?}",
            x.len(),
            packed.len()
        );
    }
    let plane = plan.plane();
    let fits = plan.passes.iter().all(|pass| {
        let reach = pass.taps.iter().map(|t| t.0).max().unwrap_or(0);
        pass.pixels.iter().all(|&(q, origin)| q < p && origin + reach < plane)
    });
    let covered = plan.passes.iter().map(|pass| pass.pixels.len()).sum::<usize>() == p;
    if !fits || !covered {
        bail!("direct conv: windows outside the padded planes, or pixels left out: {plan:?}");
    }
    let threads = rayon::current_num_threads().max(1);
    let per_run = plan.n.div_ceil(threads).max(1);
    let len = plan.n * o * p;
    let mut out = Vec::with_capacity(len);
    let chw = plan.depth * h * w;
    out.spare_capacity_mut()[..len]
        .par_chunks_mut((per_run * o * p).max(1))
        .enumerate()
        .try_for_each(|(i, out)| {
            let imgs = i * per_run..(i * per_run + per_run).min(plan.n);
            run(plan, &x[imgs.start * chw..imgs.end * chw], imgs.len(), packed, bias, act, out)
        })?;
    // SAFETY: the runs cover the first `len` slots and `run` writes every value of its block
    // or fails (and then `?` returned before this point); `f32` needs no drop.
    #[allow(unsafe_code)]
    unsafe {
        out.set_len(len);
    }
    Ok(out)
}

thread_local! {
    /// A run's padded source planes and its sums, pixel-major.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    /// An input gradient's weight, each source channel's block transposed ([`Plan::pack`]).
    static TURNED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst[c * rows + r] = src[r * stride + c]` for `r < rows`, `c < cols`: whole 16x16 blocks
/// transposed in registers where AVX-512F runs, the edges value by value.
fn transpose(
    src: &[f32],
    (rows, cols, stride): (usize, usize, usize),
    dst: &mut [std::mem::MaybeUninit<f32>],
) {
    let vector = available();
    for r0 in (0..rows).step_by(16) {
        for c0 in (0..cols).step_by(16) {
            if vector && r0 + 16 <= rows && c0 + 16 <= cols {
                let (from, to) = (&src[r0 * stride + c0..], &mut dst[c0 * rows + r0..]);
                // SAFETY: AVX-512F was detected.
                #[allow(unsafe_code)]
                unsafe {
                    wide::transpose16(from, stride, to, rows)
                };
                continue;
            }
            for r in r0..(r0 + 16).min(rows) {
                for c in c0..(c0 + 16).min(cols) {
                    dst[c * rows + r].write(src[r * stride + c]);
                }
            }
        }
    }
}

/// `images` images' source planes `x` (NCHW) into their NCHW block `out`, every value written.
fn run(
    plan: &Plan,
    x: &[f32],
    images: usize,
    packed: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [std::mem::MaybeUninit<f32>],
) -> Result<()> {
    let (p, o, depth, plane) = (plan.p, plan.o, plan.depth, plan.plane());
    let (h, w) = plan.src;
    let (mut padded, mut sums) = SCRATCH.with(|b| std::mem::take(&mut *b.borrow_mut()));
    padded.resize(images * depth * plane, 0.0);
    sums.resize(images * p * o, 0.0);
    let chw = depth * h * w;
    for (img, dst) in
        x.chunks_exact(chw.max(1)).zip(padded.chunks_exact_mut((depth * plane).max(1)))
    {
        crate::conv::pad_planes_margins_into(img, (depth, h, w), plan.margins, dst);
    }
    for (i, pass) in plan.passes.iter().enumerate() {
        let (first, nt) = (plan.pass_start(i), pass.taps.len());
        let taps: Vec<usize> = pass.taps.iter().map(|t| t.0).collect();
        // Depth blocks of about `DEPTH_STEPS` steps: 64 channels of 16 taps, 1,024 of one.
        let per_block = (DEPTH_STEPS / nt.max(1)).max(1);
        for c0 in (0..depth).step_by(per_block) {
            let block_depth = c0..(c0 + per_block).min(depth);
            for start in (0..o).step_by(CH) {
                let width = CH.min(o - start);
                let at = first + start * depth * nt + c0 * nt * width;
                let block = &packed[at..at + block_depth.len() * nt * width];
                for img in 0..images {
                    let planes = &padded
                        [(img * depth + c0) * plane..(img * depth + block_depth.end) * plane];
                    let sums = &mut sums[img * p * o..(img + 1) * p * o];
                    for pixels in pass.pixels.chunks(PIX) {
                        let at = Tile { pixels, channels: start..start + width, load: c0 > 0 };
                        tile(o, plane, planes, &taps, block, block_depth.len(), sums, at);
                    }
                }
            }
        }
    }
    // The bias and activation along each pixel's channels, then the planes transposed out.
    for (img, dst) in out.chunks_exact_mut(o * p).enumerate().take(images) {
        let sums = &mut sums[img * p * o..(img + 1) * p * o];
        if bias.is_some() || act != Activation::Identity {
            for pixel in sums.chunks_exact_mut(o) {
                match bias {
                    Some(b) => pixel.iter_mut().zip(b).for_each(|(v, &b)| *v = act.apply(*v + b)),
                    None => pixel.iter_mut().for_each(|v| *v = act.apply(*v)),
                }
            }
        }
        transpose(sums, (p, o, o), dst);
    }
    SCRATCH.with(|b| *b.borrow_mut() = (padded, sums));
    Ok(())
}

/// Which sums a register block computes: output pixels (with their windows' origins) and
/// channels, and whether it adds to what the sums hold (past the first depth block).
struct Tile<'a> {
    pixels: &'a [(usize, usize)],
    channels: Range<usize>,
    load: bool,
}

/// One register block: `sums[px * o + oc]` (+)= the block's depth of the product, for its
/// pixels and channels. `planes` holds the depth block's padded source planes (`plane` values
/// each), `block` its packed weights (`channels.len()` values per depth step).
#[allow(clippy::too_many_arguments)]
fn tile(
    o: usize,
    plane: usize,
    planes: &[f32],
    taps: &[usize],
    block: &[f32],
    channels: usize,
    sums: &mut [f32],
    at: Tile,
) {
    let width = at.channels.len();
    let live = at.pixels.len();
    // Absent pixels of a last partial block repeat the last one (computed, never stored).
    let pick = |i: usize| at.pixels[i.min(live - 1)];
    let windows: [usize; PIX] = std::array::from_fn(|i| pick(i).1);
    let rows: [usize; PIX] = std::array::from_fn(|i| pick(i).0 * o + at.channels.start);
    let reach = taps.iter().copied().max().unwrap_or(0);
    assert!(
        live > 0
            && planes.len() >= channels * plane
            && block.len() >= channels * taps.len() * width
            && windows.iter().all(|&w| w + reach < plane)
            && rows.iter().all(|&r| r + width <= sums.len())
            && at.channels.end <= o
            && width.is_multiple_of(16)
            && width <= CH,
        "direct conv: a register block outside its operands"
    );
    // SAFETY: `forward` checked AVX-512F; the assertion above bounds every index the kernel
    // forms: source values at `c * plane + window + tap` (`c < channels`), weights at
    // `(c * taps + t) * width + 16 v`, sums at `row + 16 v` for the live pixels' rows.
    #[allow(unsafe_code)]
    unsafe {
        let args = (planes.as_ptr(), plane, taps, &windows, block.as_ptr(), channels);
        let dst = (sums.as_mut_ptr(), &rows, live, at.load);
        match width / 16 {
            6 => wide::tile::<6>(args, dst),
            5 => wide::tile::<5>(args, dst),
            4 => wide::tile::<4>(args, dst),
            3 => wide::tile::<3>(args, dst),
            2 => wide::tile::<2>(args, dst),
            _ => wide::tile::<1>(args, dst),
        }
    }
}

mod wide {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::PIX;

    /// `dst[i * ds + j] = src[j * ss + i]` for `i, j < 16`: 16 rows of 16 values transposed in
    /// registers (unpacks of 32- and 64-bit pairs, then two rounds of 128-bit lane shuffles).
    ///
    /// # Panics
    /// If `src` or `dst` is shorter than 15 strides and 16 values.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn transpose16(src: &[f32], ss: usize, dst: &mut [MaybeUninit<f32>], ds: usize) {
        assert!(src.len() >= 15 * ss + 16 && dst.len() >= 15 * ds + 16, "transpose16: short");
        // SAFETY: the assertion bounds the 16 loads (`j * ss + 16 <= src.len()`) and the 16
        // stores (`i * ds + 16 <= dst.len()`).
        #[allow(unsafe_code)]
        unsafe {
            let r: [__m512; 16] =
                std::array::from_fn(|j| _mm512_loadu_ps(src.as_ptr().add(j * ss)));
            // Lane L of t[2i]: rows 2i, 2i+1 at columns 4L, 4L+1, interleaved; of t[2i+1] at
            // 4L+2, 4L+3.
            let t: [__m512; 16] = std::array::from_fn(|k| {
                let (a, b) = (r[k & !1], r[k | 1]);
                if k % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            // Lane L of u[4i + m]: column 4L + m, rows 4i..4i+3.
            let u: [__m512; 16] = std::array::from_fn(|k| {
                let (i, m) = (k / 4, k % 4);
                let (a, b) =
                    (_mm512_castps_pd(t[4 * i + m / 2]), _mm512_castps_pd(t[4 * i + 2 + m / 2]));
                _mm512_castpd_ps(if m % 2 == 0 {
                    _mm512_unpacklo_pd(a, b)
                } else {
                    _mm512_unpackhi_pd(a, b)
                })
            });
            for m in 0..4 {
                // Lanes 0, 2 (p) and 1, 3 (q) of rows 0-7 and 8-15, then column 4L + m's four
                // lanes from them.
                let p = _mm512_shuffle_f32x4::<0x88>(u[m], u[4 + m]);
                let q = _mm512_shuffle_f32x4::<0xDD>(u[m], u[4 + m]);
                let p2 = _mm512_shuffle_f32x4::<0x88>(u[8 + m], u[12 + m]);
                let q2 = _mm512_shuffle_f32x4::<0xDD>(u[8 + m], u[12 + m]);
                let columns = [
                    _mm512_shuffle_f32x4::<0x88>(p, p2),
                    _mm512_shuffle_f32x4::<0x88>(q, q2),
                    _mm512_shuffle_f32x4::<0xDD>(p, p2),
                    _mm512_shuffle_f32x4::<0xDD>(q, q2),
                ];
                for (l, c) in columns.into_iter().enumerate() {
                    _mm512_storeu_ps(dst.as_mut_ptr().add((4 * l + m) * ds).cast::<f32>(), c);
                }
            }
        }
    }

    /// `PIX` pixels by `16 NV` channels over `channels` input channels of `taps` each.
    ///
    /// The caller guarantees what [`super::tile`] asserts: every input value at
    /// `x + c * plane + windows[i] + t`, weight at `w + (c * taps.len() + t) * 16 NV + 16 v` and
    /// sum at `sums + rows[i] + 16 v` (`i < live`) lies inside its operand.
    // Pixels and vectors by constant index, so that the accumulators stay in registers.
    #[allow(clippy::needless_range_loop, clippy::type_complexity)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn tile<const NV: usize>(
        (x, plane, taps, windows, w, channels): (
            *const f32,
            usize,
            &[usize],
            &[usize; PIX],
            *const f32,
            usize,
        ),
        (sums, rows, live, load): (*mut f32, &[usize; PIX], usize, bool),
    ) {
        // SAFETY: the bounds above, which the caller asserted.
        #[allow(unsafe_code)]
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; PIX];
            if load {
                for i in 0..PIX {
                    if i < live {
                        for v in 0..NV {
                            acc[i][v] = _mm512_loadu_ps(sums.add(rows[i] + 16 * v));
                        }
                    }
                }
            }
            let mut wp = w;
            for c in 0..channels {
                let xc = x.add(c * plane);
                for &t in taps {
                    let xt = xc.add(t);
                    let wv: [__m512; NV] = std::array::from_fn(|v| _mm512_loadu_ps(wp.add(16 * v)));
                    wp = wp.add(16 * NV);
                    for i in 0..PIX {
                        let s = _mm512_set1_ps(*xt.add(windows[i]));
                        for v in 0..NV {
                            acc[i][v] = _mm512_fmadd_ps(s, wv[v], acc[i][v]);
                        }
                    }
                }
            }
            for i in 0..PIX {
                if i < live {
                    for v in 0..NV {
                        _mm512_storeu_ps(sums.add(rows[i] + 16 * v), acc[i][v]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(kernel: (usize, usize), stride: usize, padding: usize, dilation: usize) -> Window {
        Window { kernel, stride, padding, dilation }
    }

    /// Blocks of 96 output channels (the last 32 wide here), each step's channels side by side
    /// in the order input channel, tap; an input gradient's from the `(depth, o, kh, kw)`
    /// weight, phase by phase.
    #[test]
    fn packing_lays_out_blocks_of_output_channels_step_by_step() {
        let (o, c) = (128, 3);
        let wt: Vec<f32> = (0..o * c * 2).map(|v| v as f32).collect();
        let plan = Plan::conv(1, (c, 5, 5), o, &window((1, 2), 2, 0, 1)).unwrap();
        let packed = plan.pack(&wt).unwrap();
        assert_eq!(packed.len(), plan.packed_len());
        for oc in 0..o {
            let (block, width) = if oc < 96 { (0, 96) } else { (96, 32) };
            for ci in 0..c {
                for t in 0..2 {
                    let at = block * c * 2 + (ci * 2 + t) * width + oc - block;
                    assert_eq!(packed[at], wt[(oc * c + ci) * 2 + t], "channel {oc}, {ci}, {t}");
                }
            }
        }
        // The input gradient from `o` = 128 to `c` = 16 channels: 16 output channels, `o`
        // source channels; with a 1x2 kernel at stride 2, phases (0, 0) and (0, 1) take one
        // tap each (0, then 1) and the others none.
        let ig = Plan::conv_input_grad(1, (16, 5, 5), o, &window((1, 2), 2, 0, 1)).unwrap();
        let wt: Vec<f32> = (0..o * 16 * 2).map(|v| v as f32).collect();
        let packed = ig.pack(&wt).unwrap();
        assert_eq!(packed.len(), o * 16 * 2);
        let taps: Vec<usize> = ig.passes.iter().map(|p| p.taps.len()).collect();
        assert_eq!(taps, [1, 1, 0, 0]);
        for (pass, t) in [(0, 0), (1, 1)] {
            for dc in 0..o {
                for oc in 0..16 {
                    let at = ig.pass_start(pass) + dc * 16 + oc;
                    assert_eq!(packed[at], wt[(dc * 16 + oc) * 2 + t], "pass {pass}, {dc}, {oc}");
                }
            }
        }
        assert!(Plan::conv(1, (c, 5, 5), 8, &window((1, 2), 2, 0, 1))
            .unwrap()
            .pack(&wt[..48])
            .is_err());
        assert!(plan.pack(&wt[1..o * c * 2]).is_err(), "a value short");
    }

    /// The register transpose against its definition, at strides wider than 16; and a packed
    /// weight whose depth (`c * taps` = 40) takes two transposed steps of 16 and 8 single ones.
    #[test]
    fn transposes_in_registers_match_their_definition() {
        if !available() {
            return;
        }
        let src: Vec<f32> = (0..16 * 21).map(|v| v as f32).collect();
        let mut dst = vec![std::mem::MaybeUninit::new(-1f32); 15 * 19 + 16];
        // SAFETY: AVX-512F was detected above.
        #[allow(unsafe_code)]
        unsafe {
            wide::transpose16(&src, 21, &mut dst, 19)
        };
        for i in 0..16 {
            for j in 0..16 {
                // SAFETY: every slot was initialised above.
                #[allow(unsafe_code)]
                let v = unsafe { dst[i * 19 + j].assume_init() };
                assert_eq!(v, src[j * 21 + i], "({i}, {j})");
            }
        }
        let (o, c, taps) = (112, 5, 8);
        let wt: Vec<f32> = (0..o * c * taps).map(|v| v as f32).collect();
        let plan = Plan::conv(1, (c, 9, 9), o, &window((2, 4), 2, 0, 1)).unwrap();
        let packed = plan.pack(&wt).unwrap();
        for oc in 0..o {
            let (block, width) = if oc < 96 { (0, 96) } else { (96, 16) };
            for p in 0..c * taps {
                let at = block * c * taps + p * width + oc - block;
                assert_eq!(packed[at], wt[oc * c * taps + p], "channel {oc}, step {p}");
            }
        }
    }

    /// Every input position of a strided window is in exactly one phase, and each phase's taps
    /// are those whose outputs reach it: the pairs (position, output) a phase yields are the
    /// convolution's own.
    #[test]
    fn phases_pair_each_position_with_the_outputs_it_feeds() {
        for (len, k, s, pad, d) in
            [(8, 4, 2, 1, 1), (9, 3, 2, 1, 1), (11, 3, 3, 2, 2), (6, 1, 2, 0, 1)]
        {
            let out = (len + 2 * pad - d * (k - 1) - 1) / s + 1;
            let mut seen = vec![0; len];
            let mut pairs = Vec::new();
            for (taps, pixels) in axis_phases(len, k, s, pad, d) {
                for &(i, origin) in &pixels {
                    seen[i] += 1;
                    for &(off, tap) in &taps {
                        let y = origin + off as isize;
                        if (0..out as isize).contains(&y) {
                            pairs.push((i, y as usize, tap));
                        }
                    }
                }
            }
            assert!(seen.iter().all(|&v| v == 1), "{len} {k} {s}: positions {seen:?}");
            let mut want = Vec::new();
            for i in 0..len {
                for y in 0..out {
                    for tap in 0..k {
                        if y * s + tap * d == i + pad {
                            want.push((i, y, tap));
                        }
                    }
                }
            }
            pairs.sort_unstable();
            assert_eq!(pairs, want, "{len} {k} {s} {pad} {d}");
        }
    }
}
