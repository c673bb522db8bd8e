//! Depthwise 2-D convolution for inference: one `k x k` filter per channel, any stride, and
//! asymmetric zero padding (TensorFlow's SAME on even sides pads only after).
//!
//! candle runs a grouped convolution as one convolution per group, each through im2col and a
//! GEMM, which for depthwise layers (groups = channels) costs far more than the arithmetic: the
//! MediaPipe BlazeFace network spent most of its time there. On CPU f32 this op is a direct
//! loop over output rows, parallel over (image, channel) planes, each plane zero-bordered once
//! so the inner loops need no bounds checks (3x3 stride 1, the common case, is one fused pass).
//! Other devices and dtypes take candle's grouped convolution after explicit padding, so
//! results agree everywhere.
//!
//! [`im2col`], the patch gathering of a dense convolution, is here for the same reason: for a
//! stem with few input channels candle's own gathering costs more than the GEMM after it.
//!
//! [`depthwise_conv2d`] is differentiable: its input and weight gradients are direct loops of
//! the same shape (a scatter over the taps, and a per-channel sum of products). [`im2col`] is
//! forward-only.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use deeprecog_nn::depthwise::{depthwise_conv2d, Padding};
//!
//! let x = Tensor::ones((1, 2, 4, 4), candle_core::DType::F32, &Device::Cpu)?;
//! let w = Tensor::ones((2, 1, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let y = depthwise_conv2d(&x, &w, 1, Padding::same(1))?;
//! assert_eq!(y.dims(), [1, 2, 4, 4]);
//! // A corner sees 4 of the 9 taps, the centre all 9.
//! assert_eq!(y.get(0)?.get(0)?.to_vec2::<f32>()?[0][0], 4.0);
//! assert_eq!(y.get(0)?.get(0)?.to_vec2::<f32>()?[1][1], 9.0);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{bail, CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::conv::Activation;

/// Zero padding per side, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    /// Rows before the first.
    pub top: usize,
    /// Columns before the first.
    pub left: usize,
    /// Rows after the last.
    pub bottom: usize,
    /// Columns after the last.
    pub right: usize,
}

impl Padding {
    /// The same padding on every side (PyTorch's `padding=p`).
    pub fn same(p: usize) -> Padding {
        Padding { top: p, left: p, bottom: p, right: p }
    }
}

#[derive(Debug, Clone, Copy)]
struct Depthwise {
    stride: usize,
    padding: Padding,
    /// Applied, after the bias, to each output row as it is written.
    act: Activation,
}

impl Depthwise {
    fn out_size(&self, h: usize, w: usize, k: usize) -> Result<(usize, usize)> {
        let ph = h + self.padding.top + self.padding.bottom;
        let pw = w + self.padding.left + self.padding.right;
        if ph < k || pw < k {
            bail!("depthwise_conv2d: padded input {ph}x{pw} is smaller than the {k}x{k} kernel");
        }
        Ok(((ph - k) / self.stride + 1, (pw - k) / self.stride + 1))
    }
}

/// A zero-bordered plane with its columns split by phase modulo the stride: row `y` of phase
/// `r` holds padded columns `r, r + s, r + 2s, ...`, so that the input under tap `kx` for
/// outputs `0..ow` is the contiguous run `[kx / s, kx / s + ow)` of phase `kx % s`, and every
/// inner loop below is a plain vectorisable pass whatever the stride.
#[derive(Debug, Clone, Copy)]
struct Phased {
    s: usize,
    ph: usize,
    /// Columns per phase row.
    pws: usize,
    pad: Padding,
    w: usize,
}

impl Phased {
    fn new(h: usize, w: usize, pad: Padding, s: usize) -> Phased {
        let (ph, pw) = (h + pad.top + pad.bottom, w + pad.left + pad.right);
        Phased { s, ph, pws: pw.div_ceil(s), pad, w }
    }

    fn len(&self) -> usize {
        self.s * self.ph * self.pws
    }

    fn at(&self, phase: usize, y: usize) -> usize {
        (phase * self.ph + y) * self.pws
    }

    /// The row of `phase` at padded row `y`, from column `from` on.
    fn row<'a>(&self, buf: &'a [f32], phase: usize, y: usize, from: usize) -> &'a [f32] {
        &buf[self.at(phase, y) + from..self.at(phase, y) + self.pws]
    }

    fn row_mut<'a>(
        &self,
        buf: &'a mut [f32],
        phase: usize,
        y: usize,
        from: usize,
    ) -> &'a mut [f32] {
        let a = self.at(phase, y);
        &mut buf[a + from..a + self.pws]
    }

    /// `buf` = the `h x w` plane `src`, zero-bordered and phase-split. Every element is written
    /// once (the borders as zeros), so a reused buffer needs no clearing first.
    fn fill(&self, src: &[f32], buf: &mut [f32]) {
        let (top, left, w) = (self.pad.top, self.pad.left, self.w);
        let h = src.len() / w.max(1);
        for phase in 0..self.s {
            for y in 0..self.ph {
                let row = &mut buf[self.at(phase, y)..self.at(phase, y) + self.pws];
                let Some(line) = y.checked_sub(top).filter(|&r| r < h).map(|r| &src[r * w..][..w])
                else {
                    row.fill(0.0);
                    continue;
                };
                if self.s == 1 {
                    let end = (left + w).min(row.len());
                    row[..left].fill(0.0);
                    row[left..end].copy_from_slice(&line[..end - left]);
                    row[end..].fill(0.0);
                    continue;
                }
                // Padded column `j s + phase` is source column `j s + phase - left`: zeros
                // before the first that exists, a strided copy, zeros after the last.
                let first = left.saturating_sub(phase).div_ceil(self.s);
                let start = (first * self.s + phase).saturating_sub(left);
                let (head, tail) = row.split_at_mut(first.min(row.len()));
                head.fill(0.0);
                let mut copied = 0;
                for (d, &v) in tail.iter_mut().zip(line.iter().skip(start).step_by(self.s)) {
                    *d = v;
                    copied += 1;
                }
                tail[copied..].fill(0.0);
            }
        }
    }

    /// The interior of a phase-split `buf` back into an `h x w` plane.
    fn interior(&self, buf: &[f32], dst: &mut [f32]) {
        for (row, line) in dst.chunks_exact_mut(self.w).enumerate() {
            let y = row + self.pad.top;
            if self.s == 1 {
                let at = self.at(0, y) + self.pad.left;
                line.copy_from_slice(&buf[at..at + self.w]);
                continue;
            }
            for (col, d) in line.iter_mut().enumerate() {
                let pc = col + self.pad.left;
                *d = buf[self.at(pc % self.s, y) + pc / self.s];
            }
        }
    }
}

impl Depthwise {
    /// The forward pass over `(x, weight)` and an optional `bias`.
    fn forward(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = f32_pair(xs, xl, ws, wl, "depthwise_conv2d")?;
        let (n, c, h, wd) = xl.shape().dims4()?;
        let bias = match bias {
            Some((bs, bl)) if bl.shape().elem_count() == c => {
                Some(crate::cpu::f32_slice(bs, bl, "depthwise_conv2d")?)
            }
            Some((_, bl)) => bail!("depthwise_conv2d: bias {:?} for {c} channels", bl.dims()),
            None => None,
        };
        let act = self.act;
        let epilogue = bias.is_some() || act != Activation::Identity;
        let k = wl.shape().dims4()?.2;
        let (oh, ow) = self.out_size(h, wd, k)?;
        let s = self.stride;
        let p = self.padding;
        let len = n * c * oh * ow;
        let planes = |plane_fn: &PlaneKernel| {
            crate::cpu::par_blocks(
                len,
                oh * ow,
                || (),
                |_, plane, dst| {
                    let ch = plane % c;
                    let src = &x[plane * h * wd..(plane + 1) * h * wd];
                    let taps: [f32; 9] = std::array::from_fn(|i| w[ch * 9 + i]);
                    plane_fn(src, &taps, dst);
                    if epilogue {
                        crate::simd::bias_act(dst, bias.map_or(0.0, |b| b[ch]), act);
                    }
                },
            )
        };
        let shape = Shape::from((n, c, oh, ow));
        #[cfg(target_arch = "x86_64")]
        if k == 3
            && s <= 2
            && p == Padding::same(1)
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            // Whole rows of 16 lanes (or a small plane's values as one run), the plane's
            // border as masked loads, the bias and activation before the only store: nothing
            // cleared, no second pass.
            let plan = wide::Same3::new((h, wd), s);
            let out = crate::cpu::par_fill(len, (oh * ow).max(1), |start, dst| {
                let plane = start / (oh * ow).max(1);
                let ch = plane % c;
                let src = &x[plane * h * wd..(plane + 1) * h * wd];
                let taps: [f32; 9] = std::array::from_fn(|i| w[ch * 9 + i]);
                let finish = epilogue.then(|| (bias.map_or(0.0, |b| b[ch]), act));
                // SAFETY: the CPU has AVX-512F (checked above), all these functions need.
                #[allow(unsafe_code)]
                unsafe {
                    plan.plane(src, &taps, finish, dst)
                }
            })?;
            return Ok((CpuStorage::F32(out), shape));
        }
        if k == 3 && s == 1 && p == Padding::same(1) && wd >= 2 {
            // The common case reads the planes in place: rows outside the plane are a zero
            // row, the two edge columns are computed apart.
            let zeros = vec![0f32; wd];
            let out = planes(&|src, taps, dst| same3_plane(src, wd, &zeros, taps, dst));
            return Ok((CpuStorage::F32(out), shape));
        }
        if k == 3 && s == 2 && p == Padding::same(1) && wd >= 2 && h >= 2 {
            let zeros = vec![0f32; wd];
            let out = planes(&|src, taps, dst| same3_s2_plane(src, wd, &zeros, taps, dst, ow));
            return Ok((CpuStorage::F32(out), shape));
        }
        // Otherwise each plane is copied once into a zero-bordered, phase-split scratch, so
        // that every tap is a dense pass over an output row without bounds checks.
        let layout = Phased::new(h, wd, p, s);
        let out = crate::cpu::par_blocks(
            len,
            oh * ow,
            || vec![0f32; layout.len()],
            |padded, plane, dst| {
                let ch = plane % c;
                layout.fill(&x[plane * h * wd..(plane + 1) * h * wd], padded);
                let taps = &w[ch * k * k..(ch + 1) * k * k];
                let shift = bias.map_or(0.0, |b| b[ch]);
                forward_plane(&layout, padded, taps, k, dst, ow);
                if epilogue {
                    crate::simd::bias_act(dst, shift, act);
                }
            },
        );
        Ok((CpuStorage::F32(out), shape))
    }

    /// The output gradient through the activation, and the input and weight gradients of the
    /// operands that carry autograd history (see [`crate::cpu::needs_grad`]).
    fn grads(
        &self,
        x: &Tensor,
        weight: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<crate::cpu::ConvGrads> {
        let grad = self.act.mask(&grad.contiguous()?, res)?.contiguous()?;
        let (_, _, h, w) = x.dims4()?;
        let dx = crate::cpu::needs_grad(x, || {
            let weight = weight.contiguous()?;
            grad.apply_op2_no_bwd(&weight, &DepthwiseGradInput { op: *self, h, w })
        })?;
        let dw = crate::cpu::needs_grad(weight, || {
            let k = weight.dim(2)?;
            x.contiguous()?.apply_op2_no_bwd(&grad, &DepthwiseGradWeight { op: *self, k })
        })?;
        Ok((grad, dx, dw))
    }
}

/// A 3x3 kernel over one input plane, its nine taps and its output plane.
type PlaneKernel<'a> = dyn Fn(&[f32], &[f32; 9], &mut [f32]) + Sync + 'a;

/// One output plane `dst` (rows of `ow`) of a depthwise convolution with the `k x k` `taps`
/// over a filled phase-split plane. Compiled for AVX-512, AVX2 + FMA and the baseline, chosen
/// at run time.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn forward_plane(
    layout: &Phased,
    padded: &[f32],
    taps: &[f32],
    k: usize,
    dst: &mut [f32],
    ow: usize,
) {
    let s = layout.s;
    let t3: [f32; 9] = std::array::from_fn(|i| taps.get(i).copied().unwrap_or(0.0));
    for (oy, out_row) in dst.chunks_exact_mut(ow.max(1)).enumerate() {
        if k == 3 {
            // Nine equally long runs (a phase row holds each tap's inputs contiguously
            // whatever the stride): with the lengths known equal the bounds checks go and the
            // loop vectorises.
            let n = out_row.len();
            let view = |ky: usize, kx: usize| &layout.row(padded, kx % s, oy * s + ky, kx / s)[..n];
            let rows = [
                [view(0, 0), view(0, 1), view(0, 2)],
                [view(1, 0), view(1, 1), view(1, 2)],
                [view(2, 0), view(2, 1), view(2, 2)],
            ];
            taps3(out_row, rows, &t3);
        } else {
            out_row.fill(0.0);
            for ky in 0..k {
                for kx in 0..k {
                    let tap = taps[ky * k + kx];
                    let line = layout.row(padded, kx % s, oy * s + ky, kx / s);
                    for (o, &v) in out_row.iter_mut().zip(&line[..ow]) {
                        *o = tap.mul_add(v, *o);
                    }
                }
            }
        }
    }
}

/// `out[i] = sum over (ky, kx) of t[3 ky + kx] * views[ky][kx][i]` for `i < out.len()`, the
/// nine products added in row-major tap order.
#[inline(always)]
fn taps3(out: &mut [f32], views: [[&[f32]; 3]; 3], t: &[f32; 9]) {
    let n = out.len();
    // Nine equally long runs: with the lengths known equal the bounds checks go and the loop
    // vectorises.
    let [[a0, a1, a2], [b0, b1, b2], [c0, c1, c2]] = views;
    let (a0, a1, a2) = (&a0[..n], &a1[..n], &a2[..n]);
    let (b0, b1, b2) = (&b0[..n], &b1[..n], &b2[..n]);
    let (c0, c1, c2) = (&c0[..n], &c1[..n], &c2[..n]);
    for i in 0..n {
        out[i] = chain(&[
            (t[0], a0[i]),
            (t[1], a1[i]),
            (t[2], a2[i]),
            (t[3], b0[i]),
            (t[4], b1[i]),
            (t[5], b2[i]),
            (t[6], c0[i]),
            (t[7], c1[i]),
            (t[8], c2[i]),
        ]);
    }
}

/// `t0 v0 + t1 v1 + ...` in that order, each term after the first a fused multiply-add (one
/// rounding): the order and roundings [`wide`]'s vectors take, so every path gives the same
/// bits.
#[inline(always)]
fn chain(terms: &[(f32, f32)]) -> f32 {
    let Some(((t, v), rest)) = terms.split_first() else { return 0.0 };
    rest.iter().fold(t * v, |s, &(t, v)| t.mul_add(v, s))
}

/// An output whose window starts one column left of the rows `r` (columns 0 and 1 under the
/// centre and right taps; the left taps read padding).
#[inline(always)]
fn left_edge(t: &[f32; 9], [r0, r1, r2]: [&[f32]; 3]) -> f32 {
    chain(&[
        (t[1], r0[0]),
        (t[2], r0[1]),
        (t[4], r1[0]),
        (t[5], r1[1]),
        (t[7], r2[0]),
        (t[8], r2[1]),
    ])
}

/// An output whose window ends one column right of the rows `r` (columns `e` and `e + 1`
/// under the left and centre taps; the right taps read padding).
#[inline(always)]
fn right_edge(t: &[f32; 9], [r0, r1, r2]: [&[f32]; 3], e: usize) -> f32 {
    chain(&[
        (t[0], r0[e]),
        (t[1], r0[e + 1]),
        (t[3], r1[e]),
        (t[4], r1[e + 1]),
        (t[6], r2[e]),
        (t[7], r2[e + 1]),
    ])
}

/// The three runs of `n` values of `row` starting at columns 0, 1 and 2.
#[inline(always)]
fn shifted(row: &[f32], n: usize) -> [&[f32]; 3] {
    [&row[..n], &row[1..n + 1], &row[2..n + 2]]
}

/// A 3x3 stride-1 convolution padded by 1 of the `h x w` plane `src` (`w >= 2`) into `dst`
/// (same size), reading `src` in place: `zeros` (at least `w` long) stands for the rows above
/// and below, the interior columns are one vectorised pass per row and the two edge columns,
/// whose outside taps would read zeros, are summed apart.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn same3_plane(src: &[f32], w: usize, zeros: &[f32], t: &[f32; 9], dst: &mut [f32]) {
    let h = src.len() / w;
    for (oy, out_row) in dst.chunks_exact_mut(w).enumerate() {
        let r0 = if oy > 0 { &src[(oy - 1) * w..oy * w] } else { &zeros[..w] };
        let r1 = &src[oy * w..(oy + 1) * w];
        let r2 = if oy + 1 < h { &src[(oy + 1) * w..(oy + 2) * w] } else { &zeros[..w] };
        out_row[0] = left_edge(t, [r0, r1, r2]);
        let e = w - 2;
        out_row[w - 1] = right_edge(t, [r0, r1, r2], e);
        taps3(&mut out_row[1..w - 1], [shifted(r0, e), shifted(r1, e), shifted(r2, e)], t);
    }
}

/// A 3x3 stride-2 convolution padded by 1 of the `h x w` plane `src` (`h, w >= 2`) into `dst`
/// (`ow` wide), reading `src` in place as [`same3_plane`] does: output column `i` reads input
/// columns `2i - 1 ..= 2i + 1`; the first (whose left tap is padding) and, for an odd `w`,
/// the last (whose right tap is) are summed apart.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn same3_s2_plane(src: &[f32], w: usize, zeros: &[f32], t: &[f32; 9], dst: &mut [f32], ow: usize) {
    let h = src.len() / w;
    let row = |y: usize| if y < h { &src[y * w..(y + 1) * w] } else { &zeros[..w] };
    // Output columns 1..inner read whole windows.
    let inner = if w % 2 == 1 { ow - 1 } else { ow };
    let half = w.div_ceil(2);
    let mut split = vec![0f32; 6 * half];
    for (oy, out_row) in dst.chunks_exact_mut(ow).enumerate() {
        let r0 = if oy > 0 { row(2 * oy - 1) } else { &zeros[..w] };
        let (r1, r2) = (row(2 * oy), row(2 * oy + 1));
        out_row[0] = left_edge(t, [r0, r1, r2]);
        if inner < ow {
            out_row[ow - 1] = right_edge(t, [r0, r1, r2], w - 2);
        }
        let n = inner.saturating_sub(1);
        // Columns 1 ..= 2n + 1 of each row as its even and odd columns apart: output column
        // 1 + i reads odd i, even i + 1 and odd i + 1, three dense runs per row that
        // vectorise as the stride-1 case does (read in place, the stride-2 windows do not).
        let (b0, rest) = split.split_at_mut(2 * half);
        let (b1, b2) = rest.split_at_mut(2 * half);
        let (r0, r1, r2) = (split_views(r0, b0, n), split_views(r1, b1, n), split_views(r2, b2, n));
        taps3(&mut out_row[1..1 + n], [r0, r1, r2], t);
    }
}

/// The 3x3 depthwise planes padded by 1 (strides 1 and 2) as AVX-512 code: each output row in
/// steps of 16 columns, the plane's border read as masked loads (lanes outside the plane load
/// zero, the padding's value), the nine products summed in [`taps3`]'s order, so that the
/// results are those of [`same3_plane`] and [`same3_s2_plane`] followed by
/// [`crate::simd::bias_act`]. Rows of 14 columns, where those loops ran scalar, are one masked
/// step; stride-1 planes up to 13 columns wide (MobileNetV2's 7x7) are swept as one flat run of
/// vectors instead.
#[cfg(target_arch = "x86_64")]
mod wide {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use crate::conv::Activation;

    /// The mask of lanes `0..n`.
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// The lanes `i` of a load at column `x` of a `w`-wide row that fall inside it.
    fn inside(x: isize, w: usize) -> __mmask16 {
        let end = (w as isize - x).clamp(0, 16) as usize;
        lanes(end) & !lanes(x.min(0).unsigned_abs())
    }

    /// `row[x + i]` in the lanes `i` of `mask` (which [`inside`] gave for `x` and the row's
    /// length, or fewer), zero elsewhere and everywhere for a row outside the plane.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn load(row: Option<&[f32]>, x: isize, mask: __mmask16) -> __m512 {
        let Some(row) = row else { return _mm512_setzero_ps() };
        debug_assert_eq!(mask & !inside(x, row.len()), 0);
        // SAFETY: the enabled lanes `i` are `row[x + i]` with `0 <= x + i < row.len()` (the
        // mask is within `inside(x, row.len())`), inside the slice; masked-off lanes are not
        // accessed, so the base pointer may lie outside it (hence `wrapping_offset`).
        #[allow(unsafe_code)]
        unsafe {
            _mm512_maskz_loadu_ps(mask, row.as_ptr().wrapping_offset(x))
        }
    }

    /// `act(x + shift)`, the epilogue when there is one.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn finished(x: __m512, finish: Option<(f32, Activation)>) -> __m512 {
        let Some((shift, act)) = finish else { return x };
        let (zero, x) = (_mm512_setzero_ps(), _mm512_add_ps(x, _mm512_set1_ps(shift)));
        match act {
            Activation::Identity => x,
            // `max(x, 0)` is 0 for a NaN `x`, as `f32::max`; `clamp` keeps a NaN, as
            // `f32::clamp` does (`max`/`min` return their second operand when unordered).
            Activation::Relu => _mm512_max_ps(x, zero),
            Activation::Relu6 => _mm512_min_ps(_mm512_set1_ps(6.0), _mm512_max_ps(zero, x)),
        }
    }

    /// Widest stride-1 plane swept as one run of values ([`flat`]) rather than row by row:
    /// rows narrower than a vector leave lanes idle and pay a row's setup per few outputs.
    /// Measured on MobileNetV2's layers, one thread (`benches/NOTES.md`): 960 7x7 planes took
    /// 0.055 ms by rows, 0.037 flat; 576 14x14 planes 0.053 by rows, 0.066 flat.
    const FLAT_MAX_WIDTH: usize = 13;

    /// Vectors of [`flat`] summed side by side: independent chains of nine dependent steps.
    const FLAT_GROUP: usize = 4;

    /// How the planes of one `(h, w)` shape go through a 3x3 window with padding 1 at stride
    /// 1 or 2: row by row ([`plane`]), or for narrow stride-1 planes as one flat run, each
    /// vector's taps read at fixed offsets under masks computed once here.
    pub(super) struct Same3 {
        h: usize,
        w: usize,
        stride: usize,
        /// Per vector of 16 outputs of a flat plane, per tap, the lanes whose input lies
        /// inside the plane (and whose output does); a multiple of [`FLAT_GROUP`] vectors,
        /// those past the plane with no lane on.
        flat: Option<Vec<[__mmask16; 9]>>,
    }

    impl Same3 {
        /// The plan for `(h, w)` input planes at `stride` (1, or 2 for anything larger).
        pub(super) fn new((h, w): (usize, usize), stride: usize) -> Same3 {
            // Whether tap offset `d` (0..3, the window's first row or column at -1) from
            // position `at` lands inside an axis of `n` positions.
            let tap_within =
                |at: usize, d: usize, n: usize| (at + d).checked_sub(1).is_some_and(|i| i < n);
            let flat = (stride == 1 && w <= FLAT_MAX_WIDTH).then(|| {
                let len = h * w;
                (0..len.div_ceil(16).next_multiple_of(FLAT_GROUP))
                    .map(|v| {
                        std::array::from_fn(|tap| {
                            let mut mask: __mmask16 = 0;
                            for lane in 0..16 {
                                let j = 16 * v + lane;
                                let (y, x) = (j / w.max(1), j % w.max(1));
                                if j < len && tap_within(y, tap / 3, h) && tap_within(x, tap % 3, w)
                                {
                                    mask |= 1 << lane;
                                }
                            }
                            mask
                        })
                    })
                    .collect()
            });
            Same3 { h, w, stride, flat }
        }

        /// One plane `src` through the 3x3 `taps` into `dst` (`ceil(h / s) x ceil(w / s)`),
        /// every value of which it writes; returns how many.
        #[target_feature(enable = "avx512f")]
        pub(super) fn plane(
            &self,
            src: &[f32],
            taps: &[f32; 9],
            finish: Option<(f32, Activation)>,
            dst: &mut [MaybeUninit<f32>],
        ) -> usize {
            let mut t = [_mm512_setzero_ps(); 9];
            for i in 0..9 {
                t[i] = _mm512_set1_ps(taps[i]);
            }
            let (h, w) = (self.h, self.w);
            match (&self.flat, self.stride) {
                (Some(masks), _) => flat(&src[..h * w], w, masks, &t, finish, dst),
                (None, 1) => plane::<1>(src, (h, w), &t, finish, dst),
                (None, _) => plane::<2>(src, (h, w), &t, finish, dst),
            }
        }
    }

    /// A stride-1 plane `src` (rows of `w`) as one run of `src.len()` values, 16 outputs per
    /// vector, [`FLAT_GROUP`] vectors at a time: tap `(ky, kx)` of output `j` reads
    /// `src[j + (ky - 1) w + kx - 1]`, a contiguous load whose lanes outside the plane (rows
    /// above and below, the neighbouring row's values at the edge columns) `masks` switch
    /// off, so that they read zero, the padding. The nine products are added in [`plane`]'s
    /// order with the same zeros, so the values are the same.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn flat(
        src: &[f32],
        w: usize,
        masks: &[[__mmask16; 9]],
        t: &[__m512; 9],
        finish: Option<(f32, Activation)>,
        dst: &mut [MaybeUninit<f32>],
    ) -> usize {
        let len = src.len();
        let out = dst[..len].as_mut_ptr().cast::<f32>();
        let w = w as isize;
        for (group, m) in masks.chunks_exact(FLAT_GROUP).enumerate() {
            let first = group * FLAT_GROUP;
            let at = |g: usize, tap: usize| {
                16 * (first + g) as isize + (tap / 3) as isize * w - w + (tap % 3) as isize - 1
            };
            let mut s = [_mm512_setzero_ps(); FLAT_GROUP];
            for g in 0..FLAT_GROUP {
                s[g] = _mm512_mul_ps(t[0], load(Some(src), at(g, 0), m[g][0]));
            }
            for tap in 1..9 {
                for g in 0..FLAT_GROUP {
                    let x = load(Some(src), at(g, tap), m[g][tap]);
                    s[g] = _mm512_fmadd_ps(t[tap], x, s[g]);
                }
            }
            for g in 0..FLAT_GROUP {
                let v = first + g;
                let y = finished(s[g], finish);
                // SAFETY: the enabled lanes are `dst[16 v..min(16 v + 16, len)]` (none for a
                // vector past the plane), inside `dst[..len]`; masked-off lanes are not
                // accessed, so the pointer may lie past it.
                #[allow(unsafe_code)]
                unsafe {
                    _mm512_mask_storeu_ps(
                        out.wrapping_add(16 * v),
                        lanes(len.saturating_sub(16 * v)),
                        y,
                    )
                };
            }
        }
        len
    }

    /// [`Same3::plane`]'s rows at stride `S`, four output rows at a time at stride 1 and two at
    /// stride 2: independent chains of sums (each is nine dependent steps) and the input rows
    /// they share loaded once. Two rows at a time left the stride-1 sums waiting on each
    /// step's latency (`benches/NOTES.md`: 144 56x56 planes 0.169 -> 0.146 ms, one thread).
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn plane<const S: usize>(
        src: &[f32],
        (h, w): (usize, usize),
        t: &[__m512; 9],
        finish: Option<(f32, Activation)>,
        dst: &mut [MaybeUninit<f32>],
    ) -> usize {
        let (oh, ow) = (h.div_ceil(S), w.div_ceil(S));
        let dst = &mut dst[..oh * ow];
        let mut oy = 0;
        if S == 1 {
            while oy + 4 <= oh {
                band::<S, 4>(src, (h, w), oy, t, finish, &mut dst[oy * ow..(oy + 4) * ow]);
                oy += 4;
            }
        }
        while oy + 2 <= oh {
            band::<S, 2>(src, (h, w), oy, t, finish, &mut dst[oy * ow..(oy + 2) * ow]);
            oy += 2;
        }
        if oy < oh {
            band::<S, 1>(src, (h, w), oy, t, finish, &mut dst[oy * ow..(oy + 1) * ow]);
        }
        dst.len()
    }

    /// Output rows `oy..oy + R` (`out`, `R` rows of `ceil(w / S)`) of [`plane`].
    // Input rows and taps by constant index (loops the compiler unrolls), so that the vectors
    // stay in registers.
    #[allow(clippy::needless_range_loop)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn band<const S: usize, const R: usize>(
        src: &[f32],
        (h, w): (usize, usize),
        oy: usize,
        t: &[__m512; 9],
        finish: Option<(f32, Activation)>,
        out: &mut [MaybeUninit<f32>],
    ) {
        let ow = w.div_ceil(S);
        // Input rows `top..top + inputs`, those outside the plane as `None` (zeros).
        let (top, inputs) = ((oy * S) as isize - 1, (R - 1) * S + 3);
        let mut rows: [Option<&[f32]>; 6] = [None; 6];
        for i in 0..6 {
            let y = top + i as isize;
            if i < inputs && (0..h as isize).contains(&y) {
                rows[i] = Some(&src[y as usize * w..(y as usize + 1) * w]);
            }
        }
        // Even and odd lanes of a pair of vectors: a stride-2 row's centre and right taps.
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        // Each input row's previous odd columns, whose last is the left tap of the next first.
        let mut carry = [_mm512_setzero_ps(); 6];
        let mut x = 0;
        while x < ow {
            // Per input row, the left, centre and right taps' inputs of 16 output columns.
            let mut v = [[_mm512_setzero_ps(); 3]; 6];
            if S == 1 {
                let at = x as isize;
                let masks = [inside(at - 1, w), inside(at, w), inside(at + 1, w)];
                for i in 0..6 {
                    if i < inputs {
                        for kx in 0..3 {
                            v[i][kx] = load(rows[i], at + kx as isize - 1, masks[kx]);
                        }
                    }
                }
            } else {
                let at = 2 * x as isize;
                let masks = [inside(at, w), inside(at + 16, w)];
                for i in 0..6 {
                    if i < inputs {
                        let (lo, hi) =
                            (load(rows[i], at, masks[0]), load(rows[i], at + 16, masks[1]));
                        let o = _mm512_permutex2var_ps(lo, odd, hi);
                        // Lane 0 from the carry's lane 15, lanes 1.. from `o`'s 0..15.
                        let left = _mm512_alignr_epi32(
                            _mm512_castps_si512(o),
                            _mm512_castps_si512(carry[i]),
                            15,
                        );
                        v[i] = [_mm512_castsi512_ps(left), _mm512_permutex2var_ps(lo, even, hi), o];
                        carry[i] = o;
                    }
                }
            }
            // Each row's nine products added left to right, each after the first fused, as
            // [`super::chain`] does; the rows' sums step by step side by side, independent
            // chains that keep the multiply-add units busy through each step's latency.
            let mut sums = [_mm512_setzero_ps(); R];
            for r in 0..R {
                sums[r] = _mm512_mul_ps(t[0], v[r * S][0]);
            }
            for tap in 1..9 {
                for r in 0..R {
                    sums[r] = _mm512_fmadd_ps(t[tap], v[r * S + tap / 3][tap % 3], sums[r]);
                }
            }
            for r in 0..R {
                let y = finished(sums[r], finish);
                let at = r * ow + x;
                // SAFETY: the enabled lanes are `out[at..at + min(16, ow - x)]`, inside row `r`
                // of `out` (`R` rows of `ow`).
                #[allow(unsafe_code)]
                unsafe {
                    _mm512_mask_storeu_ps(out[at..].as_mut_ptr().cast::<f32>(), lanes(ow - x), y)
                };
            }
            x += 16;
        }
    }
}

/// `row` split into its even and odd columns in `buf` (two halves), as the three runs of `n`
/// that output columns `1..=n` of a 3-wide stride-2 window read: odd `0..n`, even `1..=n`,
/// odd `1..=n`.
#[inline(always)]
fn split_views<'a>(row: &[f32], buf: &'a mut [f32], n: usize) -> [&'a [f32]; 3] {
    let half = buf.len() / 2;
    let (even, odd) = buf.split_at_mut(half);
    deinterleave(row, even, odd);
    let (even, odd) = (&*even, &*odd);
    [&odd[..n], &even[1..n + 1], &odd[1..n + 1]]
}

/// `even[j] = row[2j]` and `odd[j] = row[2j + 1]` for every column of `row`.
#[inline(always)]
fn deinterleave(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let (pairs, last) = row.as_chunks::<2>();
    for ((p, e), o) in pairs.iter().zip(even.iter_mut()).zip(odd.iter_mut()) {
        *e = p[0];
        *o = p[1];
    }
    if let (Some(&v), Some(e)) = (last.first(), even.get_mut(pairs.len())) {
        *e = v;
    }
}

crate::cpu::conv_custom_ops!(Depthwise, "depthwise-conv2d", "depthwise-conv2d-bias");

#[cfg(feature = "cudnn")]
impl Depthwise {
    /// On CUDA a depthwise convolution is cuDNN's grouped one (same padding on every side).
    fn cuda_forward(
        &self,
        x: (&candle_core::CudaStorage, &Layout),
        w: (&candle_core::CudaStorage, &Layout),
        bias: Option<(&candle_core::CudaStorage, &Layout)>,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let p = self.padding;
        if p != Padding::same(p.top) {
            bail!("depthwise_conv2d: padding {p:?} differs between sides; CUDA takes one value");
        }
        let c = x.1.dims().get(1).copied().unwrap_or(0);
        let params = crate::conv::Conv2dParams {
            stride: self.stride,
            padding: p.top,
            dilation: 1,
            groups: c,
        };
        let op = crate::gemm_conv::GemmConv::new(params, self.act, false);
        op.cuda_forward(x, w, bias)
    }
}

/// The contiguous f32 slices of two CPU storages.
fn f32_pair<'a>(
    a: &'a CpuStorage,
    al: &Layout,
    b: &'a CpuStorage,
    bl: &Layout,
    name: &str,
) -> Result<(&'a [f32], &'a [f32])> {
    Ok((crate::cpu::f32_slice(a, al, name)?, crate::cpu::f32_slice(b, bl, name)?))
}

/// The input gradient: every output gradient spread back over the taps that produced it, into
/// a zero-bordered plane whose interior is then the gradient. Parallel over (image, channel).
struct DepthwiseGradInput {
    op: Depthwise,
    h: usize,
    w: usize,
}

/// Every output gradient of one plane (`grad`, rows of `ow`) spread over the taps that produced
/// it, into the zeroed phase-split `padded`. Compiled per instruction set as
/// [`forward_plane`].
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn grad_input_plane(
    layout: &Phased,
    padded: &mut [f32],
    taps: &[f32],
    k: usize,
    grad: &[f32],
    ow: usize,
) {
    let s = layout.s;
    for (oy, grow) in grad.chunks_exact(ow.max(1)).enumerate() {
        for ky in 0..k {
            for kx in 0..k {
                let tap = taps[ky * k + kx];
                let line = layout.row_mut(padded, kx % s, oy * s + ky, kx / s);
                for (l, &v) in line[..ow].iter_mut().zip(grow) {
                    *l += tap * v;
                }
            }
        }
    }
}

/// One plane's weight-gradient products added into `lanes` (`k * k` rows of `ow` per-column
/// running sums): `lanes[t][j] += input under tap t at column j * grad`. Compiled per
/// instruction set as [`forward_plane`].
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn grad_weight_lanes(
    layout: &Phased,
    padded: &[f32],
    lanes: &mut [f32],
    k: usize,
    grad: &[f32],
    ow: usize,
) {
    let s = layout.s;
    for (oy, grow) in grad.chunks_exact(ow.max(1)).enumerate() {
        for ky in 0..k {
            for kx in 0..k {
                let t = ky * k + kx;
                let line = layout.row(padded, kx % s, oy * s + ky, kx / s);
                for ((l, &a), &b) in
                    lanes[t * ow..(t + 1) * ow].iter_mut().zip(&line[..ow]).zip(grow)
                {
                    *l += a * b;
                }
            }
        }
    }
}

impl CustomOp2 for DepthwiseGradInput {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, w) = f32_pair(gs, gl, ws, wl, self.name())?;
        let (n, c, oh, ow) = gl.shape().dims4()?;
        let k = wl.shape().dims4()?.2;
        let (h, wd) = (self.h, self.w);
        if self.op.out_size(h, wd, k)? != (oh, ow) {
            bail!("depthwise_conv2d backward: gradient {oh}x{ow} does not fit a {h}x{wd} input");
        }
        let (s, p) = (self.op.stride, self.op.padding);
        let layout = Phased::new(h, wd, p, s);
        let mut out = crate::cpu::zeroed(n * c * h * wd);
        out.par_chunks_mut((h * wd).max(1)).enumerate().for_each_init(
            || vec![0f32; layout.len()],
            |padded, (plane, dst)| {
                padded.fill(0.0);
                let ch = plane % c;
                let taps = &w[ch * k * k..(ch + 1) * k * k];
                let src = &g[plane * oh * ow..(plane + 1) * oh * ow];
                grad_input_plane(&layout, padded, taps, k, src, ow);
                layout.interior(padded, dst);
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, wd))))
    }
}

/// The weight gradient: per channel, the sum over images and output positions of the output
/// gradient times the input under each tap. Parallel over channels.
struct DepthwiseGradWeight {
    op: Depthwise,
    k: usize,
}

impl CustomOp2 for DepthwiseGradWeight {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = f32_pair(xs, xl, gs, gl, self.name())?;
        let (n, c, h, wd) = xl.shape().dims4()?;
        let k = self.k;
        let (oh, ow) = self.op.out_size(h, wd, k)?;
        if gl.shape().dims4()? != (n, c, oh, ow) {
            bail!(
                "depthwise_conv2d backward: gradient {:?} does not fit {:?}",
                gl.shape(),
                xl.shape()
            );
        }
        let (s, p) = (self.op.stride, self.op.padding);
        let layout = Phased::new(h, wd, p, s);
        let mut out = vec![0f32; c * k * k];
        out.par_chunks_mut(k * k).enumerate().for_each_init(
            || (vec![0f32; layout.len()], vec![0f32; k * k * ow]),
            |(padded, lanes), (ch, taps)| {
                // Per tap, one running sum per output column (element-wise, so it vectorises),
                // reduced once per image into f64: a tap's gradient adds up batch x height x
                // width products.
                let mut acc = vec![0f64; k * k];
                for img in 0..n {
                    let plane = img * c + ch;
                    layout.fill(&x[plane * h * wd..(plane + 1) * h * wd], padded);
                    lanes.fill(0.0);
                    let grad = &g[plane * oh * ow..(plane + 1) * oh * ow];
                    grad_weight_lanes(&layout, padded, lanes, k, grad, ow);
                    for (a, lane) in acc.iter_mut().zip(lanes.chunks_exact(ow.max(1))) {
                        *a += lane.iter().map(|&v| f64::from(v)).sum::<f64>();
                    }
                }
                for (t, a) in taps.iter_mut().zip(acc) {
                    *t = a as f32;
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((c, 1, k, k))))
    }
}

/// Depthwise convolution of `x` (`[n, c, h, w]`) with `weight` (`[c, 1, k, k]`), no bias.
///
/// # Errors
/// A weight that does not fit the input, a zero stride, a kernel larger than the padded input.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: Padding,
) -> Result<Tensor> {
    depthwise_conv2d_act(x, weight, None, stride, padding, Activation::Identity)
}

/// [`depthwise_conv2d`] plus a per-channel `bias` and then `act`; on the CPU in f32 both are
/// applied to each output row as it is written, and the backward pass masks the gradient by
/// the output first.
///
/// # Errors
/// As [`depthwise_conv2d`], and a bias whose length is not the channel count.
pub fn depthwise_conv2d_act(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: Padding,
    act: Activation,
) -> Result<Tensor> {
    let (_, c, _, _) = x.dims4()?;
    let (wc, one, k, k2) = weight.dims4()?;
    if wc != c || one != 1 || k != k2 || k == 0 || stride == 0 {
        bail!(
            "depthwise_conv2d: weight {:?} does not fit input {:?} (stride {stride})",
            weight.dims(),
            x.dims()
        );
    }
    if let Some(b) = bias.filter(|b| b.elem_count() != c) {
        bail!("depthwise_conv2d: bias {:?} for {c} channels", b.dims());
    }
    let op = Depthwise { stride, padding, act };
    let all_f32 = [Some(x), Some(weight), bias].iter().flatten().all(|t| t.dtype() == DType::F32);
    let symmetric = padding == Padding::same(padding.top);
    if x.device().is_cuda() && all_f32 && crate::cpu::own_conv(x.device()) && symmetric {
        let params =
            crate::conv::Conv2dParams { stride, padding: padding.top, dilation: 1, groups: c };
        return crate::conv::conv2d_act(x, weight, bias, params, act);
    }
    if matches!(x.device(), Device::Cpu) && all_f32 {
        let (x, weight) = (x.contiguous()?, weight.contiguous()?);
        return match bias {
            Some(b) => x.apply_op3(&weight, &b.flatten_all()?.contiguous()?, op),
            None => x.apply_op2(&weight, op),
        };
    }
    let padded = x.pad_with_zeros(2, padding.top, padding.bottom)?.pad_with_zeros(
        3,
        padding.left,
        padding.right,
    )?;
    let y = padded.conv2d(weight, 0, stride, 1, c)?;
    let y = match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, c, 1, 1))?.to_dtype(y.dtype())?)?,
        None => y,
    };
    act.tensor(y)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Against candle's grouped convolution on explicitly padded input, over strides 1-3,
    /// kernels 1-5 and asymmetric paddings.
    #[test]
    fn matches_grouped_convolution() {
        let dev = Device::Cpu;
        for (k, stride, pad) in [
            (3, 1, Padding::same(1)),
            (3, 2, Padding { top: 0, left: 0, bottom: 1, right: 1 }),
            (3, 2, Padding::same(1)),
            (5, 1, Padding { top: 1, left: 2, bottom: 2, right: 1 }),
            (1, 1, Padding::default()),
            (3, 3, Padding { top: 2, left: 0, bottom: 0, right: 2 }),
        ] {
            // Even and odd sides, and the narrowest planes the in-place 3x3 paths take.
            for (h, w) in [(9, 8), (7, 7), (2, 2), (3, 3), (1, 5), (4, 1), (5, 37), (4, 17)] {
                let (n, c) = (2, 3);
                if h + pad.top + pad.bottom < k || w + pad.left + pad.right < k {
                    continue;
                }
                let xv: Vec<f32> =
                    (0..n * c * h * w).map(|i| ((i * 37 % 29) as f32 - 14.0) / 9.0).collect();
                let wv: Vec<f32> =
                    (0..c * k * k).map(|i| ((i * 11 % 13) as f32 - 6.0) / 5.0).collect();
                let x = Tensor::from_vec(xv, (n, c, h, w), &dev).unwrap();
                let wt = Tensor::from_vec(wv, (c, 1, k, k), &dev).unwrap();
                let got = depthwise_conv2d(&x, &wt, stride, pad).unwrap();
                let want = x
                    .pad_with_zeros(2, pad.top, pad.bottom)
                    .unwrap()
                    .pad_with_zeros(3, pad.left, pad.right)
                    .unwrap()
                    .conv2d(&wt, 0, stride, 1, c)
                    .unwrap();
                assert_eq!(got.dims(), want.dims(), "k {k} stride {stride} {pad:?}");
                let diff = (got - want)
                    .unwrap()
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(diff < 1e-5, "k {k} stride {stride} {pad:?} {h}x{w}: {diff}");
            }
        }
    }

    /// The AVX-512 planes against the portable path (the phase-split copy, `forward_plane`,
    /// `bias_act`): the same sums in the same order, so equal values, over widths around the
    /// 16-lane steps, one-row and one-column planes, both strides and every epilogue.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn wide_planes_equal_the_portable_path() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            return;
        }
        let taps: [f32; 9] = std::array::from_fn(|i| ((i * 7 % 9) as f32 - 4.0) / 3.0);
        for (h, w) in [
            (1, 1),
            (1, 5),
            (4, 1),
            (2, 2),
            (7, 7),
            (14, 14),
            (2, 9),
            (5, 15),
            (6, 16),
            (3, 17),
            (5, 33),
            (9, 47),
            (8, 64),
        ] {
            let src: Vec<f32> = (0..h * w).map(|i| ((i * 37 % 29) as f32 - 14.0) / 4.0).collect();
            for stride in [1, 2] {
                for finish in [
                    None,
                    Some((0.75, Activation::Relu6)),
                    Some((-0.5, Activation::Relu)),
                    Some((0.25, Activation::Identity)),
                ] {
                    let layout = Phased::new(h, w, Padding::same(1), stride);
                    let mut padded = vec![0f32; layout.len()];
                    layout.fill(&src, &mut padded);
                    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
                    let mut want = vec![0f32; oh * ow];
                    forward_plane(&layout, &padded, &taps, 3, &mut want, ow);
                    if let Some((shift, act)) = finish {
                        crate::simd::bias_act(&mut want, shift, act);
                    }
                    // A destination longer than the plane: the kernel writes its plane only.
                    let mut got = vec![f32::NAN; oh * ow + 3];
                    // SAFETY: AVX-512F is present (checked above).
                    #[allow(unsafe_code)]
                    let written = unsafe {
                        wide::Same3::new((h, w), stride).plane(
                            &src,
                            &taps,
                            finish,
                            crate::planes::uninit(&mut got),
                        )
                    };
                    assert_eq!(written, oh * ow);
                    assert_eq!(got[..oh * ow], want[..], "{h}x{w} stride {stride} {finish:?}");
                    assert!(got[oh * ow..].iter().all(|v| v.is_nan()), "{h}x{w}: past the plane");
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &dev).unwrap();
        assert!(depthwise_conv2d(&x, &w, 1, Padding::same(1)).is_err());
        let w = Tensor::zeros((2, 1, 7, 7), DType::F32, &dev).unwrap();
        assert!(depthwise_conv2d(&x, &w, 1, Padding::default()).is_err());
        let w = Tensor::zeros((2, 1, 3, 3), DType::F32, &dev).unwrap();
        assert!(depthwise_conv2d(&x, &w, 0, Padding::default()).is_err());
    }
}

/// Patches of `x` (`[n, c, h, w]`) for a `k x k` convolution: `[n, c*k*k, oh*ow]`, rows in
/// PyTorch's weight order (channel, then kernel row, then column), zeros where a patch reaches
/// into the padding. A convolution is then `weight.reshape((out, c*k*k)).broadcast_matmul(..)`,
/// one GEMM per batch: what candle's CPU convolution does too, but its patch gathering costs
/// more than the GEMM for small-channel stems.
///
/// CPU f32 only, forward only.
pub fn im2col(x: &Tensor, k: usize, stride: usize, padding: Padding) -> Result<Tensor> {
    if k == 0 || stride == 0 {
        bail!("im2col: kernel {k} and stride {stride} must be positive");
    }
    x.contiguous()?.apply_op1_no_bwd(&Im2Col {
        k,
        geometry: Depthwise { stride, padding, act: Activation::Identity },
    })
}

#[derive(Debug, Clone, Copy)]
struct Im2Col {
    k: usize,
    geometry: Depthwise,
}

impl candle_core::CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(xs) = xs else {
            bail!("im2col: the CPU kernel takes f32");
        };
        let Some((xa, xb)) = xl.contiguous_offsets() else {
            bail!("im2col: input must be contiguous");
        };
        let x = &xs[xa..xb];
        let (n, c, h, wd) = xl.shape().dims4()?;
        let k = self.k;
        let (oh, ow) = self.geometry.out_size(h, wd, k)?;
        let s = self.geometry.stride;
        let (pt, pl) = (self.geometry.padding.top as isize, self.geometry.padding.left as isize);
        let mut out = vec![0f32; n * c * k * k * oh * ow];
        // One output row per (image, channel, ky, kx): parallel and independent.
        out.par_chunks_mut(oh * ow).enumerate().for_each(|(row, dst)| {
            let kx = row % k;
            let ky = (row / k) % k;
            let plane = row / (k * k);
            let src = &x[plane * h * wd..(plane + 1) * h * wd];
            for oy in 0..oh {
                let iy = (oy * s + ky) as isize - pt;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                let line = &src[iy as usize * wd..(iy as usize + 1) * wd];
                let out_line = &mut dst[oy * ow..(oy + 1) * ow];
                for (ox, o) in out_line.iter_mut().enumerate() {
                    let ix = (ox * s + kx) as isize - pl;
                    if ix >= 0 && ix < wd as isize {
                        *o = line[ix as usize];
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c * k * k, oh * ow))))
    }
}

#[cfg(test)]
mod im2col_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn patches_times_weights_is_the_convolution() {
        let dev = Device::Cpu;
        let (n, c, h, w, o, k) = (2, 3, 11, 10, 4, 5);
        let xv: Vec<f32> =
            (0..n * c * h * w).map(|i| ((i * 37 % 29) as f32 - 14.0) / 9.0).collect();
        let wv: Vec<f32> = (0..o * c * k * k).map(|i| ((i * 11 % 13) as f32 - 6.0) / 5.0).collect();
        let x = Tensor::from_vec(xv, (n, c, h, w), &dev).unwrap();
        let wt = Tensor::from_vec(wv, (o, c, k, k), &dev).unwrap();
        let pad = Padding { top: 1, left: 1, bottom: 2, right: 2 };
        let cols = im2col(&x, k, 2, pad).unwrap();
        let (oh, ow) = ((h + 3 - k) / 2 + 1, (w + 3 - k) / 2 + 1);
        assert_eq!(cols.dims(), [n, c * k * k, oh * ow]);
        let got = wt.reshape((o, c * k * k)).unwrap().broadcast_matmul(&cols).unwrap();
        let want = x
            .pad_with_zeros(2, 1, 2)
            .unwrap()
            .pad_with_zeros(3, 1, 2)
            .unwrap()
            .conv2d(&wt, 0, 2, 1, 1)
            .unwrap()
            .reshape((n, o, oh * ow))
            .unwrap();
        let diff =
            (got - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff < 1e-4, "{diff}");
    }
}
