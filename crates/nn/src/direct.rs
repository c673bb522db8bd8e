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

use std::ops::Range;

use candle_core::{bail, Result};
use rayon::prelude::*;

use crate::conv::Activation;

/// Output pixels per register block.
const PIX: usize = 4;

/// Output channels per register block: six AVX-512 vectors (a block of 8 pixels by 48
/// channels measured the same or slower, `benches/NOTES.md`).
const CH: usize = 96;

/// Input channels per depth block: 64 channels of 4x4 taps by 96 output channels are 384 KiB
/// of packed weights, an L2-resident block that every image of a thread's run sweeps.
const DEPTH_CHANNELS: usize = 64;

/// The shapes of one convolution: input `(n, c, h, w)`, weight `(o, c, kh, kw)`, one group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub out: (usize, usize),
}

impl Shape {
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.padding, self.w + 2 * self.padding)
    }

    fn plane(&self) -> usize {
        let (hp, wp) = self.padded();
        hp * wp
    }

    /// Taps of the kernel: `kh * kw`.
    pub fn taps(&self) -> usize {
        self.kernel.0 * self.kernel.1
    }

    fn p(&self) -> usize {
        self.out.0 * self.out.1
    }

    /// Offsets of the kernel's taps in a padded plane, from a window's first value.
    fn tap_offsets(&self) -> Vec<usize> {
        let wp = self.padded().1;
        let d = self.dilation;
        let (kh, kw) = self.kernel;
        (0..kh).flat_map(|i| (0..kw).map(move |j| i * d * wp + j * d)).collect()
    }

    /// Offset of output pixel `p`'s window in a padded plane.
    fn window(&self, p: usize) -> usize {
        let wp = self.padded().1;
        let (y, x) = (p / self.out.1, p % self.out.1);
        y * self.stride * wp + x * self.stride
    }
}

/// Whether this CPU runs the kernel (AVX-512F).
pub(crate) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Values of [`pack`]'s output for `o` output channels over depth `c * taps`.
pub(crate) fn packed_len((o, c, taps): (usize, usize, usize)) -> usize {
    o * c * taps
}

/// `(O, C, kh, kw)` weights (`O` a multiple of 16) as blocks of 96 output channels (the last
/// one 16 to 96 wide), each block's values ordered by input channel, then tap, then output
/// channel: one row of vectors per depth step. Block `b` starts at `96 b * C * taps`.
pub(crate) fn pack(wt: &[f32], (o, c, taps): (usize, usize, usize)) -> Result<Vec<f32>> {
    let k = c * taps;
    if !o.is_multiple_of(16) || wt.len() != o * k {
        bail!(
            "direct conv: {} weight values for {o} x {c} x {taps} ({o} not a multiple of 16)",
            wt.len()
        );
    }
    let len = packed_len((o, c, taps));
    let mut packed = Vec::with_capacity(len);
    if len == 0 {
        return Ok(packed);
    }
    // Each block on its own task, 16 rows read in step at a time: a 512 x 4096 weight packed
    // on one thread, all of a block's rows in step, took as long as an eighth of the product.
    packed.spare_capacity_mut()[..len].par_chunks_mut(CH * k).enumerate().for_each(|(b, dst)| {
        let width = dst.len() / k;
        let rows = &wt[b * CH * k..(b * CH + width) * k];
        for (v, src) in rows.chunks_exact(16 * k).enumerate() {
            for (p, step) in dst.chunks_exact_mut(width).enumerate() {
                for (r, d) in step[16 * v..16 * v + 16].iter_mut().enumerate() {
                    d.write(src[r * k + p]);
                }
            }
        }
    });
    // SAFETY: the blocks cover the first `len` slots, and each block's `width / 16` runs of 16
    // rows wrote all `width` values of each of its `k` steps; `f32` needs no drop.
    #[allow(unsafe_code)]
    unsafe {
        packed.set_len(len);
    }
    Ok(packed)
}

/// `act(conv(x, weight) + bias)` into a new NCHW vector, the weight packed by [`pack`]; images
/// split over rayon's threads in runs. Needs [`available`].
pub(crate) fn forward(
    s: &Shape,
    x: &[f32],
    packed: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
) -> Result<Vec<f32>> {
    let (p, o) = (s.p(), s.o);
    if !available() {
        bail!("direct conv: needs AVX-512F");
    }
    if x.len() != s.n * s.c * s.h * s.w
        || packed.len() != packed_len((o, s.c, s.taps()))
        || bias.is_some_and(|b| b.len() != o)
        || !o.is_multiple_of(16)
    {
        bail!(
            "direct conv: {} input values, {} packed weight values for {s:?}",
            x.len(),
            packed.len()
        );
    }
    let (hp, wp) = s.padded();
    let last_window = s.window(p.saturating_sub(1)) + s.tap_offsets().last().copied().unwrap_or(0);
    if p == 0 || last_window >= hp * wp {
        bail!("direct conv: output {:?} does not fit the padded input {hp}x{wp}", s.out);
    }
    let threads = rayon::current_num_threads().max(1);
    let per_run = s.n.div_ceil(threads).max(1);
    let len = s.n * o * p;
    let mut out = Vec::with_capacity(len);
    let chw = s.c * s.h * s.w;
    out.spare_capacity_mut()[..len].par_chunks_mut(per_run * o * p).enumerate().try_for_each(
        |(i, out)| {
            let imgs = i * per_run..(i * per_run + per_run).min(s.n);
            run(s, &x[imgs.start * chw..imgs.end * chw], imgs.len(), packed, bias, act, out)
        },
    )?;
    // SAFETY: the runs cover the first `len` slots and `run` writes every value of its block
    // or fails (and then `?` returned before this point); `f32` needs no drop.
    #[allow(unsafe_code)]
    unsafe {
        out.set_len(len);
    }
    Ok(out)
}

thread_local! {
    /// A run's padded input planes and its sums, pixel-major.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// `images` images `x` (NCHW) into their NCHW block `out`, every value written.
fn run(
    s: &Shape,
    x: &[f32],
    images: usize,
    packed: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut [std::mem::MaybeUninit<f32>],
) -> Result<()> {
    let (p, o, c, taps, plane) = (s.p(), s.o, s.c, s.taps(), s.plane());
    let (mut padded, mut sums) = SCRATCH.with(|b| std::mem::take(&mut *b.borrow_mut()));
    padded.resize(images * c * plane, 0.0);
    sums.resize(images * p * o, 0.0);
    let chw = c * s.h * s.w;
    for (img, dst) in x.chunks_exact(chw.max(1)).zip(padded.chunks_exact_mut((c * plane).max(1))) {
        crate::conv::pad_planes_into(img, (c, s.h, s.w), s.padding, dst)?;
    }
    let tap_offsets = s.tap_offsets();
    for c0 in (0..c).step_by(DEPTH_CHANNELS) {
        let depth = c0..(c0 + DEPTH_CHANNELS).min(c);
        for start in (0..o).step_by(CH) {
            let width = CH.min(o - start);
            let block =
                &packed[start * c * taps + c0 * taps * width..][..depth.len() * taps * width];
            for img in 0..images {
                let planes = &padded[(img * c + c0) * plane..(img * c + depth.end) * plane];
                let sums = &mut sums[img * p * o..(img + 1) * p * o];
                for first in (0..p).step_by(PIX) {
                    let pixels = first..(first + PIX).min(p);
                    let at = Tile { pixels, channels: start..start + width, load: c0 > 0 };
                    tile(s, planes, &tap_offsets, block, depth.len(), sums, at);
                }
            }
        }
    }
    for (img, dst) in out.chunks_exact_mut(o * p).enumerate().take(images) {
        let sums = &sums[img * p * o..(img + 1) * p * o];
        for (oc, plane) in dst.chunks_exact_mut(p).enumerate() {
            let shift = bias.map_or(0.0, |b| b[oc]);
            for (px, v) in plane.iter_mut().enumerate() {
                v.write(act.apply(sums[px * o + oc] + shift));
            }
        }
    }
    SCRATCH.with(|b| *b.borrow_mut() = (padded, sums));
    Ok(())
}

/// Which sums a register block computes: output pixels and channels, and whether it adds to
/// what the sums hold (past the first depth block).
struct Tile {
    pixels: Range<usize>,
    channels: Range<usize>,
    load: bool,
}

/// One register block: `sums[px * o + oc]` (+)= the block's depth of the product, for its
/// pixels and channels. `planes` holds the depth block's padded input planes, `block` its
/// packed weights (`channels.len()` values per depth step).
fn tile(
    s: &Shape,
    planes: &[f32],
    taps: &[usize],
    block: &[f32],
    channels: usize,
    sums: &mut [f32],
    at: Tile,
) {
    let (o, plane) = (s.o, s.plane());
    let width = at.channels.len();
    let last = at.pixels.end - 1;
    // Absent pixels of a last partial block repeat the last one (computed, never stored).
    let windows: [usize; PIX] = std::array::from_fn(|i| s.window((at.pixels.start + i).min(last)));
    assert!(
        planes.len() >= channels * plane
            && block.len() >= channels * taps.len() * width
            && windows[PIX - 1] + taps.last().copied().unwrap_or(0) < plane
            && sums.len() >= (last + 1) * o
            && at.channels.end <= o
            && width.is_multiple_of(16)
            && width <= CH,
        "direct conv: a register block outside its operands"
    );
    let first_sum = at.pixels.start * o + at.channels.start;
    let live = at.pixels.len();
    // SAFETY: `forward` checked AVX-512F; the assertion above bounds every index the kernel
    // forms: input values at `c * plane + window + tap` (`c < channels`), weights at
    // `(c * taps + t) * width + 16 v`, sums at `first_sum + i * o + 16 v` for `i < live`.
    #[allow(unsafe_code)]
    unsafe {
        let args = (planes.as_ptr(), plane, taps, &windows, block.as_ptr(), channels);
        let dst = (sums.as_mut_ptr().add(first_sum), o, live, at.load);
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

    use super::PIX;

    /// `PIX` pixels by `16 NV` channels over `channels` input channels of `taps` each.
    ///
    /// The caller guarantees what [`super::tile`] asserts: every input value at
    /// `x + c * plane + windows[i] + t`, weight at `w + (c * taps.len() + t) * 16 NV + 16 v` and
    /// sum at `sums + i * o + 16 v` (`i < live`) lies inside its operand.
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
        (sums, o, live, load): (*mut f32, usize, usize, bool),
    ) {
        // SAFETY: the bounds above, which the caller asserted.
        #[allow(unsafe_code)]
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; PIX];
            if load {
                for i in 0..PIX {
                    if i < live {
                        for v in 0..NV {
                            acc[i][v] = _mm512_loadu_ps(sums.add(i * o + 16 * v));
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
                        _mm512_storeu_ps(sums.add(i * o + 16 * v), acc[i][v]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of 96 output channels (the last 32 wide here), each step's channels side by side
    /// in the order input channel, tap.
    #[test]
    fn packing_lays_out_blocks_of_output_channels_step_by_step() {
        let (o, c, taps) = (128, 3, 2);
        let wt: Vec<f32> = (0..o * c * taps).map(|v| v as f32).collect();
        let packed = pack(&wt, (o, c, taps)).unwrap();
        assert_eq!(packed.len(), packed_len((o, c, taps)));
        for oc in 0..o {
            let (block, width) = if oc < 96 { (0, 96) } else { (96, 32) };
            for ci in 0..c {
                for t in 0..taps {
                    let at = block * c * taps + (ci * taps + t) * width + oc - block;
                    assert_eq!(packed[at], wt[(oc * c + ci) * taps + t], "channel {oc}, {ci}, {t}");
                }
            }
        }
        assert!(pack(&wt[..8 * c * taps], (8, c, taps)).is_err(), "8 channels, not 16");
        assert!(pack(&wt[1..], (o, c, taps)).is_err(), "a value short");
    }
}
