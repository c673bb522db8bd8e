//! 2-D convolution as `im2col` + matrix product, with a backward pass that is the same two
//! pieces transposed.
//!
//! candle's CPU convolution computes its weight and input gradients with a generic transposed
//! convolution, which makes training steps several times slower than PyTorch on the same cores.
//! Here a convolution is three differentiable steps:
//!
//! 1. [`im2col`]: a custom op copying every receptive field of the NCHW input into a column,
//!    `(C*kh*kw, N*OH*OW)`, the whole batch side by side (a 1x1 stride-1 unpadded convolution
//!    only moves the channels first). Its backward is [`col2im`], which adds each column back to
//!    the pixels it came from (and whose backward is `im2col` again).
//! 2. One matrix product per group for the whole batch, the weight viewed as
//!    `(O, C/g*kh*kw)`: candle's `matmul`, i.e. the `gemm` crate's blocked kernels. Its
//!    backward is two more products, and the weight gradient needs no sum over the batch
//!    (a per-image product broadcast over the batch would leave one).
//! 3. `(O, N, OH, OW)` transposed to `(N, O, OH, OW)`, plus the bias ([`add_channel_bias`]).
//!
//! So the input gradient is `col2im(W^T dY)` and the weight gradient `dY col^T`, both products
//! of the same cost as the forward, instead of transposed convolutions. Any stride, padding,
//! dilation and group count; f32, f64, f16 and bf16 on the CPU. In f32 the three steps run as
//! one custom op (forward, input gradient, weight gradient), on chunks of images with reused
//! per-thread buffers and products written straight into NCHW, with the bias and an
//! [`Activation`] applied as each output block is written ([`conv2d_act`]). A 3x3 stride-1
//! convolution with at least 16 channels in and out computes its forward pass and input
//! gradient by Winograd's F(2x2, 3x3) instead where it has at least 64 2x2 output tiles over
//! the batch, or as many as channels when that is fewer (32 for a constant layer, whose
//! transformed weight is kept; 2.25x fewer multiplications; [`set_winograd`] turns it off).
//! A 4x4 stride-2 convolution with 16 or more channels each way and at least 64 2x2 output
//! tiles (DCGAN's discriminator, and as input gradients its generator) splits into four 2x2
//! stride-1 convolutions by the parity of its taps and runs them by F(2x2, 2x2) (1.78x fewer
//! multiplications), forward, input gradient and, with 256 or more tiles per thread, weight
//! gradient. The custom ops have no CUDA
//! kernel yet (candle reports "no cuda implementation"); [`conv2d`] falls back to candle's own
//! convolution on other devices.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use deeprecog_nn::conv::{conv2d, Conv2dParams};
//!
//! let x = Tensor::arange(0f32, 32.0, &Device::Cpu)?.reshape((1, 2, 4, 4))?;
//! let w = Tensor::ones((3, 2, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
//! let ours = conv2d(&x, &w, None, Conv2dParams { padding: 1, ..Default::default() })?;
//! let candle = x.conv2d(&w, 1, 1, 1, 1)?;
//! assert_eq!(ours.flatten_all()?.to_vec1::<f32>()?, candle.flatten_all()?.to_vec1::<f32>()?);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cpu::{contiguous, dispatch_float, ncs};
use crate::depthwise::Padding;
use crate::memo::KeptBuffer;

#[cfg(feature = "cudnn")]
pub use crate::cuda::conv::{allow_tf32, autocast_bf16, set_allow_tf32, set_autocast_bf16};

static WINOGRAD: AtomicBool = AtomicBool::new(true);

/// Whether f32 CPU convolutions use Winograd's minimal filtering where it applies (the
/// default): 3x3 stride-1 layers (16 or more channels in and out) F(2x2, 3x3) for their
/// forward pass and input gradient, 4x4 stride-2 layers (DCGAN's) F(2x2, 2x2) over the
/// stride's phases for their forward pass, input gradient and, with enough tiles, weight
/// gradient; or the direct and `im2col` + GEMM kernels like every other shape, process-wide.
/// For comparing the two, and for bit-for-bit agreement with a run made before Winograd was
/// the default.
pub fn set_winograd(enabled: bool) {
    WINOGRAD.store(enabled, Ordering::Relaxed);
}

/// See [`set_winograd`].
pub fn winograd_enabled() -> bool {
    WINOGRAD.load(Ordering::Relaxed)
}

/// A clipping activation fused into the op before it (the output's sign and ceiling are all
/// its backward needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// None.
    #[default]
    Identity,
    /// `max(y, 0)`.
    Relu,
    /// `min(max(y, 0), 6)` (MobileNetV2's).
    Relu6,
}

impl Activation {
    /// The upper bound of the clipping (the lower is 0), `None` for no activation.
    pub fn ceiling(self) -> Option<f32> {
        match self {
            Activation::Identity => None,
            Activation::Relu => Some(f32::INFINITY),
            Activation::Relu6 => Some(6.0),
        }
    }

    /// The activation of one value.
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Activation::Identity => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    /// The activation as candle ops (any dtype, any device).
    ///
    /// # Errors
    /// Tensor errors.
    pub fn tensor(self, y: Tensor) -> Result<Tensor> {
        match self {
            Activation::Identity => Ok(y),
            Activation::Relu => y.relu(),
            Activation::Relu6 => y.clamp(0f32, 6f32),
        }
    }

    /// The gradient through the activation, from the output (CPU f32).
    pub(crate) fn mask(self, grad: &Tensor, res: &Tensor) -> Result<Tensor> {
        match self.ceiling() {
            None => Ok(grad.clone()),
            Some(max) => grad.contiguous()?.apply_op2_no_bwd(&res.contiguous()?, &ClipMask { max }),
        }
    }
}

/// Stride, padding, dilation and groups of a 2-D convolution (PyTorch's `Conv2d` arguments;
/// the same value along height and width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dParams {
    /// Step between receptive fields.
    pub stride: usize,
    /// Zeros added on every side.
    pub padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups (`C` and `O` divisible by it; `C` groups is a depthwise convolution).
    pub groups: usize,
}

impl Default for Conv2dParams {
    fn default() -> Self {
        Conv2dParams { stride: 1, padding: 0, dilation: 1, groups: 1 }
    }
}

/// The window geometry of [`im2col`] / [`col2im`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
}

impl Window {
    /// Output height and width for an `h x w` input.
    ///
    /// # Errors
    /// A zero kernel, stride or dilation, or a window larger than the padded input.
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let (kh, kw) = self.kernel;
        if kh == 0 || kw == 0 || self.stride == 0 || self.dilation == 0 {
            bail!(
                "conv2d: kernel {:?}, stride {} and dilation {} must be positive",
                self.kernel,
                self.stride,
                self.dilation
            );
        }
        let span_h = self.dilation * (kh - 1) + 1;
        let span_w = self.dilation * (kw - 1) + 1;
        let (ph, pw) = (h + 2 * self.padding, w + 2 * self.padding);
        if span_h > ph || span_w > pw {
            bail!("conv2d: a {kh}x{kw} kernel (dilation {}) does not fit a {h}x{w} input padded by {}", self.dilation, self.padding);
        }
        Ok(((ph - span_h) / self.stride + 1, (pw - span_w) / self.stride + 1))
    }

    /// For each output position along one axis and each kernel tap, the input index (or none
    /// in the padding): `taps[o * k + i]`.
    fn taps(&self, input: usize, output: usize, k: usize) -> Vec<Option<usize>> {
        let mut taps = Vec::with_capacity(output * k);
        for o in 0..output {
            for i in 0..k {
                let pos = (o * self.stride + i * self.dilation) as isize - self.padding as isize;
                taps.push((pos >= 0 && (pos as usize) < input).then_some(pos as usize));
            }
        }
        taps
    }

    /// For each kernel tap along one axis, the output positions `a..b` whose source lies inside
    /// the input (an interval, since sources grow with the position) and the source of the
    /// first, `a`'s; later ones follow `stride` apart.
    fn runs(&self, input: usize, output: usize, k: usize) -> Vec<(usize, usize, usize)> {
        let taps = self.taps(input, output, k);
        (0..k)
            .map(|i| {
                let src = |o: usize| taps[o * k + i];
                let a = (0..output).find(|&o| src(o).is_some());
                let b = (0..output).rev().find(|&o| src(o).is_some());
                match (a, b) {
                    (Some(a), Some(b)) => (a, b + 1, src(a).unwrap_or(0)),
                    _ => (0, 0, 0),
                }
            })
            .collect()
    }
}

/// `(N, C, H, W)` to `(C*kh*kw, N*OH*OW)`: every row is one (channel, tap) pair across the
/// whole batch, so a convolution is one GEMM.
fn im2col_cpu<T: WithDType>(
    x: &[T],
    dims: (usize, usize, usize, usize),
    win: &Window,
) -> Result<Vec<T>> {
    let (n, c, h, w) = dims;
    let (oh, ow) = win.out_hw(h, w)?;
    let mut out = vec![T::zero(); c * win.kernel.0 * win.kernel.1 * n * oh * ow];
    im2col_into(x, dims, win, 0..oh, &mut out, true)?;
    Ok(out)
}

/// [`im2col_cpu`] for the output rows `ys` into a caller's buffer of
/// `C*kh*kw * N*ys.len()*OW` values, every one of them written (padding as zeros), so a reused
/// buffer needs no clearing. Parallel over rows when `parallel`.
pub(crate) fn im2col_into<T: WithDType>(
    x: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
    win: &Window,
    ys: Range<usize>,
    out: &mut [T],
    parallel: bool,
) -> Result<()> {
    let (oh, ow) = win.out_hw(h, w)?;
    let (kh, kw) = win.kernel;
    let ty = win.taps(h, oh, kh);
    if ys.start > ys.end || ys.end > oh {
        bail!("im2col: output rows {ys:?} of {oh}");
    }
    let p = ys.len() * ow;
    if out.len() != c * kh * kw * n * p || x.len() != n * c * h * w {
        bail!("im2col: buffers of {} and {} values for {n}x{c}x{h}x{w}", x.len(), out.len());
    }
    if out.is_empty() {
        return Ok(());
    }
    let taps = kh * kw;
    if win.stride == 2
        && win.dilation == 1
        && ow >= STRIDE2_ROWS
        // With fewer taps than phases, most of the padded copy would go unread (a 1x1 stride-2
        // shortcut reads a quarter of its input).
        && taps >= 4
        // The work is split by channel: a 3-channel stem on all threads would leave one idle.
        && (!parallel || c >= 4 * rayon::current_num_threads())
        && as_f32(x).is_some()
        && crate::simd::stride2_rows_vectorised()
    {
        // The input rows the band's windows cover, of each image's plane, copied once into a
        // zero-padded block, after which every tap's output row is the de-interleave of one
        // run of it. Only the band's rows: a band of a few output rows of a large plane would
        // otherwise copy all of it each time.
        let (pad, pw) = (win.padding, w + 2 * win.padding);
        let rows_in = 2 * (ys.len() - 1) + kh;
        let fill_channel = |(ch, dst): (usize, &mut [T])| {
            let mut padded = vec![0f32; rows_in * pw];
            for img in 0..n {
                let src = &x[(img * c + ch) * h * w..(img * c + ch + 1) * h * w];
                let src = as_f32(src).unwrap_or_default();
                for (r, row) in padded.chunks_exact_mut(pw).enumerate() {
                    // Padded row `2 * ys.start + r` is input row `2 * ys.start + r - pad`.
                    let sy = (2 * ys.start + r).checked_sub(pad).filter(|&sy| sy < h);
                    if let Some(sy) = sy {
                        crate::simd::copy_short(&mut row[pad..pad + w], &src[sy * w..(sy + 1) * w]);
                    }
                }
                for (tap, row) in dst.chunks_exact_mut(n * p).enumerate() {
                    let (i, j) = (tap / kw, tap % kw);
                    let block = as_f32_mut(&mut row[img * p..(img + 1) * p]).unwrap_or_default();
                    crate::simd::gather_rows_stride2(block, &padded, (i * pw + j, 2 * pw, ow));
                }
            }
        };
        each_chunk(out, taps * n * p, parallel, fill_channel);
        return Ok(());
    }
    if ow <= NARROW_OUTPUT && h * w < u32::MAX as usize - 1 {
        let table = SourceTable::new(win, w, (ow, kw), &ty, ys.clone());
        // A channel's taps together: each image's plane is copied once behind a zero, which
        // the padding's sources (0) read, so that every value is one unconditional load.
        let fill_channel = |(ch, dst): (usize, &mut [T])| {
            let mut plane = vec![T::zero(); h * w + 1];
            for img in 0..n {
                let src = &x[(img * c + ch) * h * w..(img * c + ch + 1) * h * w];
                crate::simd::copy_short(&mut plane[1..], src);
                for (tap, row) in dst.chunks_exact_mut(n * p).enumerate() {
                    let block = &mut row[img * p..(img + 1) * p];
                    if let (Some(block), Some(plane)) = (as_f32_mut(block), as_f32(&plane)) {
                        crate::simd::gather_table(block, plane, table.tap(tap));
                        continue;
                    }
                    for (d, &at) in block.iter_mut().zip(table.tap(tap)) {
                        *d = plane[at as usize];
                    }
                }
            }
        };
        each_chunk(out, taps * n * p, parallel, fill_channel);
        return Ok(());
    }
    let runs = win.runs(w, ow, kw);
    let fill_row = |(row, dst): (usize, &mut [T])| {
        let (ch, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
        // The output columns of this tap whose source lies inside the image.
        let (a, b, sx) = runs[j];
        for (img, block) in dst.chunks_exact_mut(p).enumerate() {
            let plane = &x[(img * c + ch) * h * w..(img * c + ch + 1) * h * w];
            for (y, out_row) in (ys.start..).zip(block.chunks_exact_mut(ow)) {
                let Some(sy) = ty[y * kh + i].filter(|_| a < b) else {
                    out_row.fill(T::zero());
                    continue;
                };
                let line = &plane[sy * w + sx..(sy + 1) * w];
                out_row[..a].fill(T::zero());
                out_row[b..].fill(T::zero());
                if win.stride == 1 {
                    crate::simd::copy_short(&mut out_row[a..b], &line[..b - a]);
                } else {
                    let (run, st) = (&mut out_row[a..b], win.stride);
                    crate::simd::gather_strided(run, &line[..(run.len() - 1) * st + 1], st);
                }
            }
        }
    };
    each_chunk(out, n * p, parallel, fill_row);
    Ok(())
}

/// Output widths from which a stride-2 `im2col` copies rows by de-interleaving: below, a row
/// is too short for a vector of its own and the table's gathers are as fast.
const STRIDE2_ROWS: usize = 8;

/// `values` as `f32`s when `T` is `f32`.
fn as_f32<T: WithDType>(values: &[T]) -> Option<&[f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: `T` is `f32` (the same type id), so the slice already is an `[f32]`.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(values.as_ptr().cast::<f32>(), values.len())
        }
    })
}

/// [`as_f32`] for a mutable slice.
fn as_f32_mut<T: WithDType>(values: &mut [T]) -> Option<&mut [f32]> {
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()).then(|| {
        // SAFETY: as in `as_f32`; the returned slice borrows `values` exclusively.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<f32>(), values.len())
        }
    })
}

/// Output rows at most this wide are gathered (`im2col`) and scattered (`col2im`) through a
/// [`SourceTable`] a whole plane at a time rather than row by row: the 4x4 stride-2 layers of
/// DCGAN's discriminator and generator have outputs 4 to 16 wide, and per-row work (a run's
/// bounds, a dispatched strided copy of 4 values) cost more than the copying. (`im2col` at
/// stride 2 takes de-interleaved rows instead from [`STRIDE2_ROWS`] wide.)
pub(crate) const NARROW_OUTPUT: usize = 16;

/// For every kernel tap and output position of rows `ys`, one past the index of its source in
/// an input plane, or 0 in the padding: `tap(t)[y * OW + x]`.
struct SourceTable {
    sources: Vec<u32>,
    per_tap: usize,
}

impl SourceTable {
    fn new(
        win: &Window,
        w: usize,
        (ow, kw): (usize, usize),
        ty: &[Option<usize>],
        ys: Range<usize>,
    ) -> SourceTable {
        let kh = win.kernel.0;
        let tx = win.taps(w, ow, kw);
        let per_tap = ys.len() * ow;
        let mut sources = Vec::with_capacity(kh * kw * per_tap);
        for i in 0..kh {
            for j in 0..kw {
                for y in ys.clone() {
                    for x in 0..ow {
                        // One past the source (0 in the padding); the callers keep planes below
                        // u32::MAX values.
                        let at = match (ty[y * kh + i], tx[x * kw + j]) {
                            (Some(sy), Some(sx)) => (1 + sy * w + sx) as u32,
                            _ => 0,
                        };
                        sources.push(at);
                    }
                }
            }
        }
        SourceTable { sources, per_tap }
    }

    /// The sources of tap `t` (`i * kw + j`).
    fn tap(&self, t: usize) -> &[u32] {
        &self.sources[t * self.per_tap..(t + 1) * self.per_tap]
    }
}

/// The adjoint of [`im2col_cpu`]: `(C*kh*kw, N*OH*OW)` added back into `(N, C, H, W)`.
fn col2im_cpu<T: WithDType>(
    cols_data: &[T],
    dims: (usize, usize, usize, usize),
    win: &Window,
) -> Result<Vec<T>> {
    let (n, c, h, w) = dims;
    let (oh, _) = win.out_hw(h, w)?;
    let mut out = vec![T::zero(); n * c * h * w];
    col2im_into(cols_data, dims, win, 0..oh, &mut out, true)?;
    Ok(out)
}

/// [`col2im_cpu`] of the columns of output rows `ys` (`C*kh*kw * N*ys.len()*OW` values),
/// adding into a caller's `(N, C, H, W)` buffer. Parallel over (image, channel) planes when
/// `parallel`.
pub(crate) fn col2im_into<T: WithDType>(
    cols_data: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
    win: &Window,
    ys: Range<usize>,
    out: &mut [T],
    parallel: bool,
) -> Result<()> {
    let (oh, ow) = win.out_hw(h, w)?;
    let (kh, kw) = win.kernel;
    let ty = win.taps(h, oh, kh);
    if ys.start > ys.end || ys.end > oh {
        bail!("col2im: output rows {ys:?} of {oh}");
    }
    let p = ys.len() * ow;
    let rows = c * kh * kw;
    if cols_data.len() != rows * n * p || out.len() != n * c * h * w {
        bail!("col2im: {} values for {rows} x {n} x {p}", cols_data.len());
    }
    if out.is_empty() {
        return Ok(());
    }
    if ow <= NARROW_OUTPUT && h * w < u32::MAX as usize - 1 {
        let table = SourceTable::new(win, w, (ow, kw), &ty, ys.clone());
        let add_plane = |(plane_idx, plane): (usize, &mut [T])| {
            let (img, ch) = (plane_idx / c, plane_idx % c);
            for tap in 0..kh * kw {
                let row = ch * kh * kw + tap;
                let src = &cols_data[row * n * p + img * p..][..p];
                for (&v, &at) in src.iter().zip(table.tap(tap)) {
                    if let Some(d) = (at as usize).checked_sub(1).and_then(|i| plane.get_mut(i)) {
                        *d += v;
                    }
                }
            }
        };
        each_chunk(out, h * w, parallel, add_plane);
        return Ok(());
    }
    let runs = win.runs(w, ow, kw);
    let add_plane = |(plane_idx, plane): (usize, &mut [T])| {
        let (img, ch) = (plane_idx / c, plane_idx % c);
        for i in 0..kh {
            for (j, &(a, b, sx)) in runs.iter().enumerate() {
                let row = (ch * kh + i) * kw + j;
                let src = &cols_data[row * n * p + img * p..][..p];
                for (y, row) in ys.clone().zip((0..).step_by(ow)) {
                    let Some(sy) = ty[y * kh + i].filter(|_| a < b) else { continue };
                    let line = &mut plane[sy * w + sx..(sy + 1) * w];
                    crate::simd::add_strided(line, &src[row + a..row + b], win.stride);
                }
            }
        }
    };
    each_chunk(out, h * w, parallel, add_plane);
    Ok(())
}

/// [`im2col_into`]'s transpose for f32: one row of `C*kh*kw` values per output position of
/// rows `ys` (images outermost), `(N*ys.len()*OW, C*kh*kw)` row-major, every value written.
/// The weight gradient's product `dY cols^T` reads this layout as its right operand row by row,
/// where `im2col`'s makes the matrix product gather each packed panel across rows.
/// Parallel over output rows when `parallel`.
pub(crate) fn im2row_into(
    x: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    win: &Window,
    ys: Range<usize>,
    out: &mut [f32],
    parallel: bool,
) -> Result<()> {
    let (kh, kw) = win.kernel;
    let RowTaps { ty, tx, inside, ow, k } = RowTaps::new("im2row", (c, h, w), win, &ys)?;
    if out.len() != n * ys.len() * ow * k || x.len() != n * c * h * w {
        bail!("im2row: buffers of {} and {} values for {n}x{c}x{h}x{w}", x.len(), out.len());
    }
    if out.is_empty() {
        return Ok(());
    }
    let rows = ys.len();
    if win.dilation == 1 {
        // Every tap's `kw` values are one run of a zero-padded copy of the plane: no bounds
        // to look up per run.
        let pad = win.padding;
        let (hp, wp) = (h + 2 * pad, w + 2 * pad);
        let padded = padded_planes(x, (n * c, h, w), pad, parallel);
        let s = win.stride;
        let fill = |(r, block): (usize, &mut [f32])| {
            let (img, y) = (r / rows, ys.start + r % rows);
            let image = &padded[img * c * hp * wp..(img + 1) * c * hp * wp];
            for (xo, row) in block.chunks_exact_mut(k).enumerate() {
                for (plane, row) in image.chunks_exact(hp * wp).zip(row.chunks_exact_mut(kh * kw)) {
                    for (i, dst) in row.chunks_exact_mut(kw).enumerate() {
                        let at = (y * s + i) * wp + xo * s;
                        let src = &plane[at..at + kw];
                        // Fixed-size copies for the common widths: a slice copy of 3 or 4
                        // values is a call to `memcpy`.
                        if let (Ok(d), Ok(v)) =
                            (<&mut [f32; 4]>::try_from(&mut *dst), <&[f32; 4]>::try_from(src))
                        {
                            *d = *v;
                        } else if let (Ok(d), Ok(v)) =
                            (<&mut [f32; 3]>::try_from(&mut *dst), <&[f32; 3]>::try_from(src))
                        {
                            *d = *v;
                        } else {
                            crate::simd::copy_short(dst, src);
                        }
                    }
                }
            }
        };
        each_chunk(out, ow * k, parallel, fill);
        return Ok(());
    }
    let fill = |(r, block): (usize, &mut [f32])| {
        let (img, y) = (r / rows, ys.start + r % rows);
        let image = &x[img * c * h * w..(img + 1) * c * h * w];
        let sources = &ty[y * kh..(y + 1) * kh];
        for (xo, row) in block.chunks_exact_mut(k).enumerate() {
            let taps = &tx[xo * kw..(xo + 1) * kw];
            for (plane, row) in image.chunks_exact(h * w).zip(row.chunks_exact_mut(kh * kw)) {
                for (&sy, dst) in sources.iter().zip(row.chunks_exact_mut(kw)) {
                    let Some(sy) = sy else {
                        dst.fill(0.0);
                        continue;
                    };
                    let line = &plane[sy * w..(sy + 1) * w];
                    // Fixed-size copies for the common widths: a slice copy of 3 or 4
                    // values is a call to `memcpy`.
                    let src = inside[xo].and_then(|sx| line.get(sx..sx + kw));
                    if let (Ok(d), Some(Ok(s))) =
                        (<&mut [f32; 4]>::try_from(&mut *dst), src.map(<&[f32; 4]>::try_from))
                    {
                        *d = *s;
                    } else if let (Ok(d), Some(Ok(s))) =
                        (<&mut [f32; 3]>::try_from(&mut *dst), src.map(<&[f32; 3]>::try_from))
                    {
                        *d = *s;
                    } else {
                        for (d, &t) in dst.iter_mut().zip(taps) {
                            *d = t.map_or(0.0, |sx| line[sx]);
                        }
                    }
                }
            }
        }
    };
    each_chunk(out, ow * k, parallel, fill);
    Ok(())
}

/// Columns `cols` of [`im2row_into`]'s rows (whole kernel rows: both ends multiples of `kw`)
/// for every output position of `n` images, each row `width` values long (zeros past
/// `cols.len()`), read from the images' planes zero-padded by the window's padding (`padded`:
/// `(n*c, h + 2 pad, w + 2 pad)`, from [`pad_planes_into`]). A panel of the weight gradient's
/// right operand, which its product reads as rows `width` apart, one after the other, where
/// whole `im2row` rows (`C*kh*kw` values apart, a multiple of 4 KiB for 4x4 windows) put
/// every depth step of a column block on another page and in the same L1 set. Dilation 1.
pub(crate) fn im2row_panel_into(
    padded: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    win: &Window,
    cols: Range<usize>,
    width: usize,
    out: &mut [f32],
) -> Result<()> {
    let (kh, kw) = win.kernel;
    let (oh, ow) = win.out_hw(h, w)?;
    let (hp, wp) = (h + 2 * win.padding, w + 2 * win.padding);
    let k = c * kh * kw;
    if win.dilation != 1
        || !cols.start.is_multiple_of(kw)
        || !cols.end.is_multiple_of(kw)
        || cols.start > cols.end
        || cols.end > k
        || width < cols.len()
    {
        bail!("im2row panel: columns {cols:?} of {k} in rows of {width}, window {win:?}");
    }
    if padded.len() != n * c * hp * wp || out.len() != n * oh * ow * width {
        bail!(
            "im2row panel: buffers of {} and {} values for {n}x{c}x{h}x{w}",
            padded.len(),
            out.len()
        );
    }
    // Where each kernel row of the panel starts in an image's padded planes.
    let starts: Vec<usize> =
        (cols.start / kw..cols.end / kw).map(|q| (q / kh) * hp * wp + (q % kh) * wp).collect();
    let s = win.stride;
    let live = cols.len();
    let mut rows = out.chunks_exact_mut(width.max(1));
    for image in padded.chunks_exact((c * hp * wp).max(1)).take(n) {
        for y in 0..oh {
            for xo in 0..ow {
                let Some(row) = rows.next() else { return Ok(()) };
                let at = y * s * wp + xo * s;
                let (taps, rest) = row.split_at_mut(live);
                for (dst, &start) in taps.chunks_exact_mut(kw).zip(&starts) {
                    let src = &image[at + start..at + start + kw];
                    // Fixed-size copies for the common widths, as in `im2row_into`.
                    if let (Ok(d), Ok(v)) =
                        (<&mut [f32; 4]>::try_from(&mut *dst), <&[f32; 4]>::try_from(src))
                    {
                        *d = *v;
                    } else if let (Ok(d), Ok(v)) =
                        (<&mut [f32; 3]>::try_from(&mut *dst), <&[f32; 3]>::try_from(src))
                    {
                        *d = *v;
                    } else {
                        dst.copy_from_slice(src);
                    }
                }
                crate::simd::zero_short(rest);
            }
        }
    }
    Ok(())
}

/// `(P, H, W)` planes zero-padded by `pad` on every side into `out` (`(P, H + 2 pad, W + 2
/// pad)`, every value written), on the calling thread.
pub(crate) fn pad_planes_into(
    x: &[f32],
    (planes, h, w): (usize, usize, usize),
    pad: usize,
    out: &mut [f32],
) -> Result<()> {
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    if x.len() != planes * h * w || out.len() != planes * hp * wp {
        bail!(
            "pad planes: {} and {} values for {planes}x{h}x{w} padded by {pad}",
            x.len(),
            out.len()
        );
    }
    if pad == 0 {
        out.copy_from_slice(x);
        return Ok(());
    }
    pad_planes_margins_into(x, (planes, h, w), [pad; 4], out);
    Ok(())
}

/// `(P, H, W)` planes into `out` with zero margins `[top, bottom, left, right]` around each
/// (`(P, H + top + bottom, W + left + right)`, every value of the first `P` planes written), on
/// the calling thread: a transposed convolution's output gradient by stride phase takes
/// uneven margins.
pub(crate) fn pad_planes_margins_into(
    x: &[f32],
    (planes, h, w): (usize, usize, usize),
    margins: [usize; 4],
    out: &mut [f32],
) {
    let [top, bottom, left, right] = margins;
    let wp = w + left + right;
    let plane = (h + top + bottom) * wp;
    for (src, dst) in
        x.chunks_exact((h * w).max(1)).zip(out.chunks_exact_mut(plane.max(1))).take(planes)
    {
        crate::simd::zero_short(&mut dst[..top * wp]);
        crate::simd::zero_short(&mut dst[(top + h) * wp..]);
        for (row, line) in
            src.chunks_exact(w.max(1)).zip(dst[top * wp..].chunks_exact_mut(wp.max(1)))
        {
            crate::simd::zero_short(&mut line[..left]);
            crate::simd::copy_short(&mut line[left..left + w], row);
            crate::simd::zero_short(&mut line[left + w..]);
        }
    }
}

/// `planes` `(P, H, W)` planes zero-padded by `pad` on every side (`(P, H + 2 pad, W + 2 pad)`),
/// or the planes themselves without padding.
fn padded_planes<T: WithDType>(
    x: &[T],
    (planes, h, w): (usize, usize, usize),
    pad: usize,
    parallel: bool,
) -> std::borrow::Cow<'_, [T]> {
    if pad == 0 {
        return std::borrow::Cow::Borrowed(x);
    }
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let mut out = vec![T::zero(); planes * hp * wp];
    let copy = |(i, dst): (usize, &mut [T])| {
        let src = &x[i * h * w..(i + 1) * h * w];
        for (y, row) in src.chunks_exact(w).enumerate() {
            let at = (y + pad) * wp + pad;
            crate::simd::copy_short(&mut dst[at..at + w], row);
        }
    };
    each_chunk(&mut out, (hp * wp).max(1), parallel, copy);
    std::borrow::Cow::Owned(out)
}

/// The adjoint of [`im2row_into`]: rows of `C*kh*kw` values, one per output position of rows
/// `ys` (images outermost), added back into a caller's `(N, C, H, W)` buffer; [`col2im_into`]
/// of their transpose. Parallel over (image, channel) planes when `parallel`.
pub(crate) fn row2im_into(
    rows_data: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    win: &Window,
    ys: Range<usize>,
    out: &mut [f32],
    parallel: bool,
) -> Result<()> {
    let (kh, kw) = win.kernel;
    let RowTaps { ty, tx, inside, ow, k } = RowTaps::new("row2im", (c, h, w), win, &ys)?;
    let p = ys.len() * ow;
    if rows_data.len() != n * p * k || out.len() != n * c * h * w {
        bail!("row2im: {} values for {n} x {p} rows of {k}", rows_data.len());
    }
    if out.is_empty() {
        return Ok(());
    }
    let add_plane = |(plane_idx, plane): (usize, &mut [f32])| {
        let (img, ch) = (plane_idx / c, plane_idx % c);
        let image_rows = &rows_data[img * p * k..(img + 1) * p * k];
        for (y, band) in ys.clone().zip(image_rows.chunks_exact(ow * k)) {
            for (xo, row) in band.chunks_exact(k).enumerate() {
                let taps = &tx[xo * kw..(xo + 1) * kw];
                let fields = row[ch * kh * kw..(ch + 1) * kh * kw].chunks_exact(kw);
                for (&sy, src) in ty[y * kh..(y + 1) * kh].iter().zip(fields) {
                    let Some(sy) = sy else { continue };
                    let line = &mut plane[sy * w..(sy + 1) * w];
                    let dst = inside[xo].and_then(|sx| line.get_mut(sx..sx + kw));
                    // Fixed-size adds for the common widths (see `im2row_into`).
                    match dst {
                        Some(d) if kw == 4 => add_fixed::<4>(d, src),
                        Some(d) if kw == 3 => add_fixed::<3>(d, src),
                        _ => {
                            for (&v, &t) in src.iter().zip(taps) {
                                if let Some(d) = t.and_then(|sx| line.get_mut(sx)) {
                                    *d += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    each_chunk(out, h * w, parallel, add_plane);
    Ok(())
}

/// `dst += src` for slices of `N` values (a no-op for other lengths, which callers exclude).
fn add_fixed<const N: usize>(dst: &mut [f32], src: &[f32]) {
    if let (Ok(d), Ok(s)) = (<&mut [f32; N]>::try_from(dst), <&[f32; N]>::try_from(src)) {
        for (d, s) in d.iter_mut().zip(s) {
            *d += s;
        }
    }
}

/// `f((index, chunk))` for each `size`-long chunk of `out`, on rayon's threads when `parallel`.
fn each_chunk<T: Send>(
    out: &mut [T],
    size: usize,
    parallel: bool,
    f: impl Fn((usize, &mut [T])) + Send + Sync,
) {
    if parallel {
        out.par_chunks_mut(size).enumerate().for_each(f);
    } else {
        out.chunks_mut(size).enumerate().for_each(f);
    }
}

/// What [`im2row_into`] and [`row2im_into`] look up for output rows `ys` of `(C, H, W)` images.
struct RowTaps {
    /// The source row of each (output row, kernel row), `None` in the padding.
    ty: Vec<Option<usize>>,
    /// The source column of each (output column, kernel column).
    tx: Vec<Option<usize>>,
    /// For each output column, the first of its `kw` sources when they are all inside the
    /// input and adjacent (dilation 1): where a row's values are one contiguous piece.
    inside: Vec<Option<usize>>,
    /// Output width.
    ow: usize,
    /// Values per row: `C*kh*kw`.
    k: usize,
}

impl RowTaps {
    fn new(
        op: &str,
        (c, h, w): (usize, usize, usize),
        win: &Window,
        ys: &Range<usize>,
    ) -> Result<Self> {
        let (oh, ow) = win.out_hw(h, w)?;
        let (kh, kw) = win.kernel;
        if ys.start > ys.end || ys.end > oh {
            bail!("{op}: output rows {ys:?} of {oh}");
        }
        let tx = win.taps(w, ow, kw);
        let inside = (0..ow)
            .map(|xo| {
                let taps = &tx[xo * kw..(xo + 1) * kw];
                let adjacent = win.dilation == 1 && taps.iter().all(Option::is_some);
                taps[0].filter(|_| adjacent)
            })
            .collect();
        Ok(Self { ty: win.taps(h, oh, kh), tx, inside, ow, k: c * kh * kw })
    }
}

fn dims4(layout: &Layout) -> Result<(usize, usize, usize, usize)> {
    match layout.shape().dims() {
        &[n, c, h, w] => Ok((n, c, h, w)),
        d => bail!("conv2d: expected an NCHW tensor, got shape {d:?}"),
    }
}

struct Im2Col(Window);

/// `col2im` knows the image it writes into.
struct Col2Im {
    win: Window,
    dims: (usize, usize, usize, usize),
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "deeprecog-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(layout)?;
        let (oh, ow) = self.0.out_hw(dims.2, dims.3)?;
        let out = dispatch_float!(storage, layout, "im2col", |s| im2col_cpu(s, dims, &self.0)?);
        let rows = dims.1 * self.0.kernel.0 * self.0.kernel.1;
        Ok((out, Shape::from((rows, dims.0 * oh * ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let dims = arg.dims4()?;
        Ok(Some(grad_res.contiguous()?.apply_op1(Col2Im { win: self.0, dims })?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "deeprecog-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.dims;
        let (oh, ow) = self.win.out_hw(h, w)?;
        let rows = c * self.win.kernel.0 * self.win.kernel.1;
        if layout.shape().dims() != [rows, n * oh * ow] {
            bail!(
                "col2im: columns {:?}, expected {:?}",
                layout.shape().dims(),
                [rows, n * oh * ow]
            );
        }
        let out =
            dispatch_float!(storage, layout, "col2im", |s| col2im_cpu(s, self.dims, &self.win)?);
        Ok((out, Shape::from(self.dims)))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1(Im2Col(self.win))?))
    }
}

/// Every receptive field of an NCHW tensor as a column: `(C*kh*kw, N*OH*OW)`, rows ordered
/// channel-major then kernel row then column (the order of a `(O, C, kh, kw)` weight's
/// flattening), columns image-major then output row then column, so that a whole batch's
/// convolution is one matrix product. Differentiable; padding reads as zeros.
///
/// # Errors
/// A non-4-D input, a window that does not fit, a non-float dtype, a non-CPU tensor.
pub fn im2col(x: &Tensor, win: Window) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Im2Col(win))
}

/// The adjoint of [`im2col`]: columns `(C*kh*kw, N*OH*OW)` added back into an `(N, C, H, W)`
/// image (`dims`). Differentiable.
///
/// # Errors
/// Columns that do not match `dims` and the window, a non-float dtype, a non-CPU tensor.
pub fn col2im(cols: &Tensor, win: Window, dims: (usize, usize, usize, usize)) -> Result<Tensor> {
    cols.contiguous()?.apply_op1(Col2Im { win, dims })
}

/// A 2-D convolution of `x (N, C, H, W)` with `weight (O, C/groups, kh, kw)` and an optional
/// `bias (O)`, PyTorch's `F.conv2d`: `im2col`, a matrix product per group, a reshape. On the CPU
/// its backward pass is two matrix products and a `col2im`; elsewhere it is candle's
/// convolution.
///
/// # Errors
/// Shapes that do not fit together, a window that does not fit the input.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
) -> Result<Tensor> {
    conv2d_act(x, weight, bias, p, Activation::Identity)
}

/// The gradient of [`conv2d`] (no bias) with respect to its input of shape `input`, given the
/// gradient `grad (N, O, OH, OW)` of its output and `weight (O, C/groups, kh, kw)`: PyTorch's
/// `torch.nn.grad.conv2d_input`: the kernel [`conv2d`]'s backward pass runs (called directly
/// in f32 on the CPU and on CUDA with `cudnn`, through autograd elsewhere and for a depthwise
/// layer on the CPU). Its result has no autograd history.
///
/// # Errors
/// Shapes that do not fit together, a window that does not fit the input.
pub fn conv2d_input_grad(
    grad: &Tensor,
    weight: &Tensor,
    input: (usize, usize, usize, usize),
    p: Conv2dParams,
) -> Result<Tensor> {
    let f32s = (grad.dtype(), weight.dtype()) == (DType::F32, DType::F32);
    if backward_on_gemm_conv(input.1, weight.dims4()?, p, grad.device(), f32s) {
        return crate::gemm_conv::gradient(grad, weight, p, input, true);
    }
    let x = candle_core::Var::zeros(input, weight.dtype(), weight.device())?;
    let y = conv2d(x.as_tensor(), &weight.detach(), None, p)?;
    let grads = (y * grad.detach())?.sum_all()?.backward()?;
    match grads.get(x.as_tensor()) {
        Some(g) => Ok(g.detach()),
        None => bail!("conv2d_input_grad: no gradient reached the input"),
    }
}

/// The gradient of [`conv2d`] (no bias) with respect to its weight of shape `weight`, given
/// its input `x (N, C, H, W)` and the gradient `grad (N, O, OH, OW)` of its output: PyTorch's
/// `torch.nn.grad.conv2d_weight`, computed as [`conv2d_input_grad`] is.
///
/// # Errors
/// As [`conv2d_input_grad`].
pub fn conv2d_weight_grad(
    x: &Tensor,
    grad: &Tensor,
    weight: (usize, usize, usize, usize),
    p: Conv2dParams,
) -> Result<Tensor> {
    let f32s = (x.dtype(), grad.dtype()) == (DType::F32, DType::F32);
    if backward_on_gemm_conv(x.dim(1)?, weight, p, x.device(), f32s) {
        return crate::gemm_conv::gradient(x, grad, p, weight, false);
    }
    let w = candle_core::Var::zeros(weight, x.dtype(), x.device())?;
    let y = conv2d(&x.detach(), w.as_tensor(), None, p)?;
    let grads = (y * grad.detach())?.sum_all()?.backward()?;
    match grads.get(w.as_tensor()) {
        Some(g) => Ok(g.detach()),
        None => bail!("conv2d_weight_grad: no gradient reached the weight"),
    }
}

/// Whether [`conv2d`]'s backward pass over `c` input channels and a weight of `weight`'s shape
/// runs on the `gemm_conv` kernels (as [`conv2d_act_kept`] dispatches): f32 operands on a
/// device with its own convolutions, other than a depthwise layer on the CPU.
fn backward_on_gemm_conv(
    c: usize,
    (o, _, kh, kw): (usize, usize, usize, usize),
    p: Conv2dParams,
    device: &candle_core::Device,
    f32s: bool,
) -> bool {
    let depthwise = p.groups == c && o == c && p.dilation == 1 && kh == kw;
    f32s && crate::cpu::own_conv(device) && !(depthwise && device.is_cpu())
}

/// [`conv2d`] followed by a ReLU; on the CPU in f32 the bias and the ReLU are applied to each
/// output block as the product writes it, and the backward pass masks the gradient first.
///
/// # Errors
/// As [`conv2d`].
pub fn conv2d_relu(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
) -> Result<Tensor> {
    conv2d_act(x, weight, bias, p, Activation::Relu)
}

/// [`conv2d`] followed by `act`, fused as in [`conv2d_relu`].
///
/// # Errors
/// As [`conv2d`].
pub fn conv2d_act(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    act: Activation,
) -> Result<Tensor> {
    conv2d_act_kept(x, weight, bias, p, act, None)
}

/// [`conv2d_act`], a Winograd layer's transformed weight kept in `transformed` (a constant
/// weight's; see [`crate::layers::Conv2d`]).
pub(crate) fn conv2d_act_kept(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    act: Activation,
    transformed: Option<&KeptBuffer>,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (o, cg, kh, kw) = weight.dims4()?;
    let g = p.groups;
    if g == 0 || c % g != 0 || o % g != 0 || cg != c / g {
        bail!("conv2d: input of {c} channels, weight {:?}, {g} groups", weight.dims());
    }
    let depthwise = g == c && o == c && p.dilation == 1 && kh == kw;
    let all_f32 = [Some(x), Some(weight), bias].iter().flatten().all(|t| t.dtype() == DType::F32);
    // (`backward_on_gemm_conv` follows this dispatch.)
    let own = crate::cpu::own_conv(x.device()) && all_f32;
    #[cfg(feature = "cudnn")]
    if own && x.device().is_cuda() && autocast_bf16() {
        // Mixed precision: the product in bf16, everything around it in f32.
        let op = crate::gemm_conv::GemmConv::new(p, Activation::Identity, false);
        let (xb, wb) = (x.to_dtype(DType::BF16)?, weight.to_dtype(DType::BF16)?);
        let y = xb.contiguous()?.apply_op2(&wb.contiguous()?, op)?.to_dtype(DType::F32)?;
        return match bias {
            Some(b) => channel_bias(&y, b, act),
            None => act.tensor(y),
        };
    }
    if own && (!depthwise || x.device().is_cuda()) {
        let op = crate::gemm_conv::GemmConv {
            transformed: transformed.cloned(),
            ..crate::gemm_conv::GemmConv::new(p, act, false)
        };
        let (x, weight) = (x.contiguous()?, weight.contiguous()?);
        return match bias {
            Some(b) => x.apply_op3(&weight, &b.flatten_all()?.contiguous()?, op),
            None => x.apply_op2(&weight, op),
        };
    }
    if x.device().is_cpu() && all_f32 && depthwise {
        // Depthwise: one k*k dot product per output, a direct loop beats c tiny GEMMs.
        let pad = Padding::same(p.padding);
        return crate::depthwise::depthwise_conv2d_act(x, weight, bias, p.stride, pad, act);
    }
    let out = if !x.device().is_cpu() {
        x.conv2d(weight, p.padding, p.stride, p.dilation, g)?
    } else {
        let win =
            Window { kernel: (kh, kw), stride: p.stride, padding: p.padding, dilation: p.dilation };
        let (oh, ow) = win.out_hw(h, w)?;
        let cols = if (kh, kw, p.stride, p.padding) == (1, 1, 1, 0) {
            // A 1x1 convolution's columns are the input with channels first.
            x.reshape((n, c, h * w))?.transpose(0, 1)?.contiguous()?.reshape((c, n * h * w))?
        } else {
            im2col(x, win)?
        };
        let k = cg * kh * kw;
        let og = o / g;
        // One GEMM for the whole batch (per group): (O/G, K) x (K, N*P).
        let y = if g == 1 {
            weight.reshape((o, k))?.matmul(&cols)?
        } else {
            weight.reshape((g, og, k))?.matmul(&cols.reshape((g, k, n * oh * ow))?)?
        };
        y.reshape((o, n, oh, ow))?.transpose(0, 1)?.contiguous()?
    };
    match bias {
        Some(b) => channel_bias(&out, b, act),
        None => act.tensor(out),
    }
}

/// `act(conv2d(x, weight) + bias + residual)`: a residual block's last convolution and its
/// addition. When nothing records gradients (constants, as in an inference model) on the CPU
/// in f32, the residual is added in the convolution's epilogue, with no separate pass over the
/// output: the same values, bit for bit, as [`conv2d_act`] with no activation followed by
/// [`crate::activation::add_act`], which is what runs otherwise.
///
/// # Errors
/// As [`conv2d`], and a residual of another shape than the convolution's output.
pub fn conv2d_residual_act(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
    p: Conv2dParams,
    act: Activation,
) -> Result<Tensor> {
    conv2d_residual_act_kept(x, weight, bias, residual, p, act, None)
}

/// [`conv2d_residual_act`], a constant weight's packing kept in `transformed`.
pub(crate) fn conv2d_residual_act_kept(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    residual: &Tensor,
    p: Conv2dParams,
    act: Activation,
    transformed: Option<&KeptBuffer>,
) -> Result<Tensor> {
    let operands = [Some(x), Some(weight), bias, Some(residual)];
    let constant_f32 = operands.iter().flatten().all(|t| t.dtype() == DType::F32 && !t.track_op());
    let (c, (o, _, kh, kw)) = (x.dim(1)?, weight.dims4()?);
    // As `conv2d_act_kept` routes it: depthwise layers have their own kernels.
    let depthwise = p.groups == c && o == c && p.dilation == 1 && kh == kw;
    if x.device().is_cpu()
        && constant_f32
        && !depthwise
        && crate::gemm_conv::ResidualConv::applies(
            x.dims(),
            weight.dims(),
            p,
            transformed.is_some(),
        )?
    {
        let op = crate::gemm_conv::ResidualConv {
            params: p,
            act,
            bias: bias.map(|b| b.flatten_all()?.to_vec1::<f32>()).transpose()?,
            transformed: transformed.cloned(),
        };
        let (x, weight, residual) = (x.contiguous()?, weight.contiguous()?, residual.contiguous()?);
        return x.apply_op3(&weight, &residual, op);
    }
    let y = conv2d_act_kept(x, weight, bias, p, Activation::Identity, transformed)?;
    crate::activation::add_act(&y, residual, act)
}

/// [`conv2d_act`] followed by a 2x2 stride-2 max-pool ([`crate::pool::max_pool2d`] with kernel
/// 2, stride 2, no padding): the block of the scratch CNN and VGG. When nothing records
/// gradients (the input, weight and bias are constants, as in an inference model) on the CPU in
/// f32, the pooling runs on each chunk of the convolution's output while it is in cache
/// (Winograd tiles are pooling windows), and the full-resolution activation is never stored:
/// the same values, bit for bit, as the two ops. Otherwise it is the two ops.
///
/// # Errors
/// As [`conv2d`], and a convolution output smaller than the 2x2 pooling window.
pub fn conv2d_act_max_pool2(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    act: Activation,
) -> Result<Tensor> {
    conv2d_act_max_pool2_kept(x, weight, bias, p, act, None)
}

/// [`conv2d_act_max_pool2`], a Winograd layer's transformed weight kept in `transformed`.
pub(crate) fn conv2d_act_max_pool2_kept(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: Conv2dParams,
    act: Activation,
    transformed: Option<&KeptBuffer>,
) -> Result<Tensor> {
    let (c, o) = (x.dim(1)?, weight.dim(0)?);
    let depthwise = p.groups == c && o == c;
    let operands = [Some(x), Some(weight), bias];
    let fused = x.device().is_cpu()
        && !depthwise
        && operands.iter().flatten().all(|t| t.dtype() == DType::F32 && !t.track_op());
    if !fused {
        let y = conv2d_act_kept(x, weight, bias, p, act, transformed)?;
        return crate::pool::max_pool2d(&y, 2, 2, 0);
    }
    let (_, _, h, w) = x.dims4()?;
    let (kh, kw) = (weight.dim(2)?, weight.dim(3)?);
    let win =
        Window { kernel: (kh, kw), stride: p.stride, padding: p.padding, dilation: p.dilation };
    let (oh, ow) = win.out_hw(h, w)?;
    if oh < 2 || ow < 2 {
        bail!("max_pool2d: a {oh}x{ow} convolution output is smaller than the 2x2 pooling window");
    }
    let op = crate::gemm_conv::GemmConv {
        transformed: transformed.cloned(),
        ..crate::gemm_conv::GemmConv::new(p, act, true)
    };
    let (x, weight) = (x.contiguous()?, weight.contiguous()?);
    match bias {
        Some(b) => x.apply_op3_no_bwd(&weight, &b.flatten_all()?.contiguous()?, &op),
        None => x.apply_op2_no_bwd(&weight, &op),
    }
}

/// Stride, padding, output padding, dilation and groups of a transposed 2-D convolution
/// (PyTorch's `ConvTranspose2d` arguments; the same value along height and width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvTranspose2dParams {
    /// Step between the input pixels' footprints in the output.
    pub stride: usize,
    /// Rows and columns cropped from every side of the full output.
    pub padding: usize,
    /// Extra rows and columns at the bottom and right (below `stride`), to pick among the
    /// output sizes that a strided convolution maps to the same input size.
    pub output_padding: usize,
    /// Spacing between kernel taps.
    pub dilation: usize,
    /// Channel groups.
    pub groups: usize,
}

impl Default for ConvTranspose2dParams {
    fn default() -> Self {
        ConvTranspose2dParams { stride: 1, padding: 0, output_padding: 0, dilation: 1, groups: 1 }
    }
}

/// A transposed 2-D convolution (the gradient of [`conv2d`] with respect to its input) of
/// `x (N, C, H, W)` with `weight (C, O/groups, kh, kw)` and an optional `bias (O)`: PyTorch's
/// `F.conv_transpose2d`, output `(H - 1) * stride - 2 * padding + dilation * (kh - 1) +
/// output_padding + 1` high. On the CPU it is a matrix product per group followed by
/// [`col2im`], so its backward is an `im2col` and two products; elsewhere candle's.
///
/// # Errors
/// Shapes that do not fit together, an output padding not below the stride (or the
/// dilation), an empty output.
pub fn conv_transpose2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    p: ConvTranspose2dParams,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (wc, og, kh, kw) = weight.dims4()?;
    let g = p.groups;
    if g == 0 || wc != c || c % g != 0 || p.stride == 0 || p.dilation == 0 {
        bail!("conv_transpose2d: input of {c} channels, weight {:?}, {p:?}", weight.dims());
    }
    if p.output_padding >= p.stride.max(p.dilation) {
        bail!(
            "conv_transpose2d: output padding {} must be below the stride or dilation",
            p.output_padding
        );
    }
    let o = og * g;
    let full =
        |i: usize, k: usize| (i - 1) * p.stride + p.dilation * (k - 1) + p.output_padding + 1;
    let (fh, fw) = (full(h, kh), full(w, kw));
    if fh <= 2 * p.padding || fw <= 2 * p.padding {
        bail!("conv_transpose2d: padding {} leaves no output of a {h}x{w} input", p.padding);
    }
    let (oh, ow) = (fh - 2 * p.padding, fw - 2 * p.padding);
    let f32s = x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    let out = if crate::cpu::own_conv(x.device()) && f32s {
        let params =
            Conv2dParams { stride: p.stride, padding: p.padding, dilation: p.dilation, groups: g };
        let op = crate::gemm_conv::GemmConvTranspose { params, out: (n, o, oh, ow) };
        #[cfg(feature = "cudnn")]
        if x.device().is_cuda() && autocast_bf16() {
            let (xb, wb) = (x.to_dtype(DType::BF16)?, weight.to_dtype(DType::BF16)?);
            let y = xb.contiguous()?.apply_op2(&wb.contiguous()?, op)?.to_dtype(DType::F32)?;
            return match bias {
                Some(b) => add_channel_bias(&y, b),
                None => Ok(y),
            };
        }
        x.contiguous()?.apply_op2(&weight.contiguous()?, op)?
    } else if !x.device().is_cpu() {
        if g != 1 {
            bail!("conv_transpose2d: groups need the CPU path");
        }
        let cfg = (p.padding, p.output_padding, p.stride, p.dilation);
        x.conv_transpose2d(weight, cfg.0, cfg.1, cfg.2, cfg.3)?
    } else {
        let cg = c / g;
        let k = og * kh * kw;
        // (G, O/G*kh*kw, C/G) x (G, C/G, N*H*W): every output window's columns for the whole
        // batch in one GEMM per group, which col2im adds into place.
        let xc = x.reshape((n, c, h * w))?.transpose(0, 1)?.contiguous()?;
        let wt = weight.reshape((g, cg, k))?.transpose(1, 2)?;
        let cols =
            wt.matmul(&xc.reshape((g, cg, n * h * w))?)?.reshape((o * kh * kw, n * h * w))?;
        let win =
            Window { kernel: (kh, kw), stride: p.stride, padding: p.padding, dilation: p.dilation };
        if win.out_hw(oh, ow)? != (h, w) {
            bail!("conv_transpose2d: {oh}x{ow} output does not map back to {h}x{w}");
        }
        col2im(&cols, win, (n, o, oh, ow))?
    };
    match bias {
        Some(b) => add_channel_bias(&out, b),
        None => Ok(out),
    }
}

/// `x (N, C, ...) + bias (C)` broadcast over every other dimension. On the CPU in f32 its
/// backward sums the gradient per channel in one parallel pass (candle's generic reduction
/// over dimensions 0, 2 and 3 of an NCHW tensor is one of the slowest steps of a training step
/// otherwise); elsewhere it is a broadcast add.
///
/// # Errors
/// A bias whose length is not `x`'s dimension 1.
pub fn add_channel_bias(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let c = x.dim(1)?;
    if bias.elem_count() != c {
        bail!("bias of shape {:?} for {c} channels", bias.dims());
    }
    channel_bias(x, bias, Activation::Identity)
}

/// `relu(x + bias)`, [`add_channel_bias`] and a ReLU in one pass forward and one backward (the
/// mask is the output's sign) on the CPU in f32.
///
/// # Errors
/// A bias whose length is not `x`'s dimension 1.
pub fn add_channel_bias_relu(x: &Tensor, bias: &Tensor) -> Result<Tensor> {
    channel_bias(x, bias, Activation::Relu)
}

fn channel_bias(x: &Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
    let c = x.dim(1)?;
    if bias.elem_count() != c {
        bail!("bias of shape {:?} for {c} channels", bias.dims());
    }
    let own = crate::cpu::own_kernels(x.device());
    if own && x.dtype() == DType::F32 && bias.dtype() == DType::F32 {
        let op = ChannelBias { act };
        return x.contiguous()?.apply_op2(&bias.flatten_all()?.contiguous()?, op);
    }
    let mut shape = vec![1usize; x.rank()];
    shape[1] = c;
    act.tensor(x.broadcast_add(&bias.reshape(shape)?)?)
}

struct ChannelBias {
    act: Activation,
}

impl candle_core::CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "deeprecog-channel-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(xd), CpuStorage::F32(bd)) = (xs, bs) else {
            bail!("channel bias: the CPU kernel takes f32");
        };
        let (x, b) = (contiguous(xd, xl)?, contiguous(bd, bl)?);
        let (_, c, sp) = ncs(xl)?;
        let mut out = x.to_vec();
        out.par_chunks_mut(sp.max(1)).enumerate().for_each(|(plane, dst)| {
            crate::simd::bias_act(dst, b[plane % c], self.act);
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        bs: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::bias_act((xs, xl), Some((bs, bl)), self.act)
    }

    fn bwd(
        &self,
        x: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = self.act.mask(grad, res)?;
        let db = crate::cpu::needs_grad(bias, || grad.contiguous()?.apply_op1_no_bwd(&ChannelSum))?;
        Ok((x.track_op().then_some(grad), db))
    }
}

/// Per-channel sums of an `(N, C, S...)` f32 tensor, accumulated in f64 across planes.
pub(crate) struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "deeprecog-channel-sum"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(d) = storage else { bail!("channel sum: the CPU kernel takes f32") };
        let x = contiguous(d, layout)?;
        let (n, c, sp) = ncs(layout)?;
        let sums: Vec<f32> = (0..c)
            .into_par_iter()
            .map(|ch| {
                (0..n)
                    .map(|i| f64::from(crate::simd::sum(&x[(i * c + ch) * sp..][..sp])))
                    .sum::<f64>() as f32
            })
            .collect();
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::channel_sum(storage, layout)
    }
}

/// The gradient of a clipping activation from its output: kept where `0 < y < max` (a ReLU
/// is `max = inf`, ReLU6 `max = 6`), zero elsewhere, as PyTorch's `threshold_backward` and
/// `hardtanh_backward`. Inputs `(grad, output)`, f32.
pub(crate) struct ClipMask {
    pub max: f32,
}

impl candle_core::CustomOp2 for ClipMask {
    fn name(&self) -> &'static str {
        "deeprecog-clip-mask"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(gd), CpuStorage::F32(yd)) = (gs, ys) else {
            bail!("clip mask: the CPU kernel takes f32");
        };
        let (g, y) = (contiguous(gd, gl)?, contiguous(yd, yl)?);
        if g.len() != y.len() {
            bail!("clip mask: gradient {:?} for output {:?}", gl.shape(), yl.shape());
        }
        let max = self.max;
        let out = crate::cpu::par_fill(g.len(), 1 << 14, |start, o| {
            crate::simd::clip_mask(o, &g[start..], &y[start..], max)
        })?;
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::clip_mask((gs, gl), (ys, yl), self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bands of output rows through each path of `im2col_into` (row runs, the table, stride-2
    /// rows), on one thread and on several, against the definition.
    #[test]
    fn im2col_bands_match_the_definition() {
        // (N, C, H, W), kernel, stride, padding, output rows.
        let cases = [
            ((2, 3, 12, 32), (4, 4), 2, 1, 2..5),
            ((1, 2, 9, 27), (3, 3), 2, 1, 1..4),
            ((2, 2, 8, 8), (4, 4), 2, 1, 1..3),
            ((1, 2, 9, 40), (3, 3), 2, 1, 3..5),
            ((2, 1, 7, 30), (1, 1), 2, 0, 0..4),
            // Enough channels for the stride-2 rows to be split over the threads as well.
            ((1, 8, 9, 32), (4, 4), 2, 1, 0..3),
        ];
        for ((n, c, h, w), kernel, stride, padding, ys) in cases {
            let win = Window { kernel, stride, padding, dilation: 1 };
            let x: Vec<f32> = (0..n * c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
            let (_, ow) = win.out_hw(h, w).unwrap();
            let (kh, kw) = kernel;
            let p = ys.len() * ow;
            for parallel in [false, true] {
                let mut cols = vec![f32::NAN; c * kh * kw * n * p];
                im2col_into(&x, (n, c, h, w), &win, ys.clone(), &mut cols, parallel).unwrap();
                for (row, values) in cols.chunks_exact(n * p).enumerate() {
                    let (ch, i, j) = (row / (kh * kw), row / kw % kh, row % kw);
                    for (col, &got) in values.iter().enumerate() {
                        let (img, y, xx) = (col / p, ys.start + col % p / ow, col % ow);
                        let sy = (y * stride + i).checked_sub(padding).filter(|&v| v < h);
                        let sx = (xx * stride + j).checked_sub(padding).filter(|&v| v < w);
                        let want = match (sy, sx) {
                            (Some(sy), Some(sx)) => x[((img * c + ch) * h + sy) * w + sx],
                            _ => 0.0,
                        };
                        assert_eq!(got.to_bits(), want.to_bits(), "{win:?} {ys:?}: {row} {col}");
                    }
                }
            }
        }
    }

    /// Panels of `im2row`'s columns, from padded planes, hold `im2row_into`'s values bit for
    /// bit, then zeros to the panel's width.
    #[test]
    fn im2row_panels_are_column_ranges_of_its_rows() {
        // (N, C, H, W), kernel, stride, padding, panel columns, panel width.
        let cases = [
            ((2, 3, 9, 7), (4, 4), 2, 1, 16..48, 48),
            ((1, 6, 8, 8), (3, 3), 1, 1, 48..54, 16),
            ((3, 2, 6, 11), (3, 2), 2, 0, 0..12, 16),
            ((1, 3, 7, 7), (5, 5), 3, 2, 30..75, 48),
            ((2, 4, 5, 5), (1, 1), 2, 0, 1..4, 16),
        ];
        for ((n, c, h, w), kernel, stride, padding, cols, width) in cases {
            let win = Window { kernel, stride, padding, dilation: 1 };
            let x: Vec<f32> = (0..n * c * h * w).map(|i| (i as f32 * 0.43).sin() + 0.2).collect();
            let (oh, ow) = win.out_hw(h, w).unwrap();
            let k = c * kernel.0 * kernel.1;
            let mut rows = vec![f32::NAN; n * oh * ow * k];
            im2row_into(&x, (n, c, h, w), &win, 0..oh, &mut rows, false).unwrap();
            let (hp, wp) = (h + 2 * padding, w + 2 * padding);
            let mut padded = vec![f32::NAN; n * c * hp * wp];
            pad_planes_into(&x, (n * c, h, w), padding, &mut padded).unwrap();
            let mut panel = vec![f32::NAN; n * oh * ow * width];
            im2row_panel_into(&padded, (n, c, h, w), &win, cols.clone(), width, &mut panel)
                .unwrap();
            for (r, (got, want)) in panel.chunks_exact(width).zip(rows.chunks_exact(k)).enumerate()
            {
                for (j, &v) in got.iter().enumerate() {
                    let want = if j < cols.len() { want[cols.start + j] } else { 0.0 };
                    assert_eq!(
                        v.to_bits(),
                        want.to_bits(),
                        "{win:?} {cols:?}: row {r}, column {j}"
                    );
                }
            }
        }
        // Columns that split a kernel row, a panel narrower than its columns, dilation.
        let win = Window { kernel: (3, 3), stride: 1, padding: 1, dilation: 1 };
        let padded = vec![0f32; 2 * 6 * 6];
        let mut panel = vec![0f32; 16 * 16];
        for (cols, width, win) in [
            (1..6, 16, win),
            (0..18, 16, win),
            (0..9, 16, Window { dilation: 2, padding: 2, ..win }),
        ] {
            let padded = if win.dilation == 2 { vec![0f32; 2 * 8 * 8] } else { padded.clone() };
            let res =
                im2row_panel_into(&padded, (1, 2, 4, 4), &win, cols.clone(), width, &mut panel);
            assert!(res.is_err(), "{cols:?} in {width} with {win:?}");
        }
    }

    #[test]
    fn rows_are_the_transposed_columns() {
        // (N, C, H, W), kernel, stride, padding, dilation, output rows.
        let cases = [
            ((2, 3, 9, 7), (4, 4), 2, 1, 1, 0..4),
            ((1, 2, 8, 8), (3, 3), 1, 1, 1, 2..7),
            ((3, 1, 6, 11), (3, 2), 2, 0, 1, 0..2),
            ((1, 2, 10, 9), (3, 3), 1, 2, 2, 0..10),
            ((2, 2, 5, 5), (1, 1), 1, 0, 1, 1..4),
            ((1, 1, 4, 4), (4, 4), 1, 0, 1, 0..1),
            ((1, 3, 7, 7), (5, 5), 3, 2, 1, 1..3),
        ];
        for ((n, c, h, w), kernel, stride, padding, dilation, ys) in cases {
            let win = Window { kernel, stride, padding, dilation };
            let x: Vec<f32> = (0..n * c * h * w).map(|i| (i as f32 * 0.61).sin() + 0.1).collect();
            let (_, ow) = win.out_hw(h, w).unwrap();
            let k = c * kernel.0 * kernel.1;
            let p = n * ys.len() * ow;
            let mut cols = vec![f32::NAN; k * p];
            im2col_into(&x, (n, c, h, w), &win, ys.clone(), &mut cols, false).unwrap();
            // The adjoints: the transposed columns added back give col2im's sums.
            let base: Vec<f32> = (0..x.len()).map(|i| (i as f32 * 0.23).cos()).collect();
            let mut want = base.clone();
            col2im_into(&cols, (n, c, h, w), &win, ys.clone(), &mut want, false).unwrap();
            let transposed: Vec<f32> = (0..k * p).map(|i| cols[(i % k) * p + i / k]).collect();
            for parallel in [false, true] {
                let mut got = base.clone();
                let dims = (n, c, h, w);
                row2im_into(&transposed, dims, &win, ys.clone(), &mut got, parallel).unwrap();
                // Up to rounding: the two add a pixel's contributions in different orders.
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-5, "{win:?} {ys:?}: pixel {i}: {g} vs {w}");
                }
            }
            for parallel in [false, true] {
                let mut rows = vec![f32::NAN; k * p];
                im2row_into(&x, (n, c, h, w), &win, ys.clone(), &mut rows, parallel).unwrap();
                for (i, row) in rows.chunks_exact(k).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        let want = cols[j * p + i];
                        assert_eq!(v.to_bits(), want.to_bits(), "{win:?} {ys:?}: ({i}, {j})");
                    }
                }
            }
        }
    }
}
