//! The f32 CPU convolution as one custom op: forward, and its input and weight gradients, each
//! an `im2col` (or `col2im`) and a product per chunk of images, reading and writing NCHW
//! buffers in place.
//!
//! [`crate::conv::im2col`] + `matmul` + transpose as separate candle ops cost, per
//! convolution, the whole batch's columns in memory, a transpose of the output (and of its
//! gradient) between `(O, N*P)` and NCHW, and one autograd node per step, each of which candle's
//! backward pass accumulates into a fresh zeroed gradient. Here the batch is cut into chunks
//! of images whose columns (`C*kh*kw x B*OH*OW`) fit a per-thread scratch buffer; with one image
//! per chunk the product writes the image's `(O, OH*OW)` output plane block directly, with
//! several (small feature maps, where one image's columns would starve the micro-kernel) the
//! chunk's output is scattered back. A single image whose columns outgrow L2 is computed in
//! bands of output rows, each band's columns written and multiplied while still in cache.
//! Chunks run in parallel (one single-threaded product each) when there are at least as many
//! as threads, else one after the other with the product's rows split over the threads (a lone
//! image's bands side by side instead). The forward products run on [`crate::planes`] (the
//! weight packed once per call, or once for a constant weight; the bias and activation applied
//! in registers; the output never cleared), the gradients' on `gemm`, except strided layers'
//! input gradients, which [`crate::phases`] computes per stride phase on `planes`, and the
//! weight gradients of strided and narrow layers, which `planes` sums over groups of images,
//! one 48-column panel of their `im2row` at a time. Strided layers with small outputs (at most
//! 64 pixels: DCGAN's 4x4 and 8x8, ResNet's last stage) skip the columns altogether: their
//! forward passes, and the input gradients whose stride phases take as many taps each (up to
//! 256 output-gradient positions), run on [`crate::direct`] from the padded input with vectors
//! along the output channels. The weight gradient sums over chunks in a fixed partition and
//! order, so results do not depend on scheduling.

use std::borrow::Cow;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::conv::{
    col2im_into, im2col_into, im2row_into, row2im_into, Activation, Conv2dParams, Window,
    NARROW_OUTPUT,
};
use crate::cpu::{f32_slice, with_scratch, ConvGrads};
use crate::memo::{KeptBuffer, KeptLayout};
use crate::phases;
use crate::planes::{self, Epilogue};
use crate::sgemm::{matmul, Mat, MatMut};

/// Columns per GEMM below which images are grouped into one chunk: the AVX-512 micro-kernel
/// covers 48 x 6 (or 6 x 48) outputs at a time, and packing costs are paid per product.
const MIN_CHUNK_COLUMNS: usize = 256;

/// Output pixels per image up to which a strided layer's forward pass runs on
/// [`crate::direct`]: DCGAN's 4x4 and 8x8 outputs, ResNet's 7x7 and 4x4 (at 224 and 128
/// pixels). At 16x16 (ResNet's layer2 at 128 pixels) it measured slower than `planes`.
#[cfg(target_arch = "x86_64")]
const DIRECT_PIXELS: usize = 64;

/// Output-gradient positions per image up to which an input gradient whose phases take as
/// many taps each runs on [`crate::direct`]: DCGAN's 4x4 to 16x16 (its 16x16 ones measured
/// 4-5% faster than phases + `planes`).
#[cfg(target_arch = "x86_64")]
const DIRECT_GRAD_PIXELS: usize = 256;

/// Values in one band's columns (256 KiB): a single image whose columns are larger is cut into
/// bands of output rows, each band's `im2col` written and multiplied while it sits in the
/// core's L2 cache. Measured on AVX-512 (`benches/NOTES.md`), a 3x3 convolution's product over
/// a whole 64x64 image ran at 41-61 GFLOP/s on one core, over 256-column bands at 76-91.
const BAND_VALUES: usize = 64 * 1024;

/// Fewest columns in a band: the weight is packed once per product, so a band must be wide
/// enough for that to stay a small fraction of its work.
const MIN_BAND_COLUMNS: usize = 128;

/// The shapes of one convolution and how its batch is cut.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    groups: usize,
    win: Window,
    oh: usize,
    ow: usize,
    /// Images per chunk.
    per_chunk: usize,
    chunks: usize,
    /// Chunks in parallel (single-threaded GEMMs) rather than parallel GEMMs.
    parallel_chunks: bool,
    /// Output rows per band of a single-image chunk (`oh` when not banded).
    band_rows: usize,
}

impl Geometry {
    fn new(x: &[usize], wt: &[usize], p: Conv2dParams) -> Result<Geometry> {
        let (&[n, c, h, w], &[o, cg, kh, kw]) = (x, wt) else {
            bail!("conv2d: input {x:?} and weight {wt:?} must be 4-D");
        };
        let g = p.groups;
        if g == 0 || c % g != 0 || o % g != 0 || cg != c / g {
            bail!("conv2d: input of {c} channels, weight {wt:?}, {g} groups");
        }
        let win =
            Window { kernel: (kh, kw), stride: p.stride, padding: p.padding, dilation: p.dilation };
        let (oh, ow) = win.out_hw(h, w)?;
        let threads = rayon::current_num_threads().max(1);
        let plane = (oh * ow).max(1);
        let per_chunk = MIN_CHUNK_COLUMNS.div_ceil(plane).clamp(1, (n / threads).max(1));
        let chunks = n.div_ceil(per_chunk);
        let pointwise = (win.kernel, win.stride, win.padding) == ((1, 1), 1, 0);
        let band_rows = if per_chunk == 1 && !pointwise {
            let k = c * kh * kw;
            (BAND_VALUES / (k * ow).max(1)).max(MIN_BAND_COLUMNS.div_ceil(ow.max(1))).clamp(1, oh)
        } else {
            oh
        };
        Ok(Geometry {
            n,
            c,
            h,
            w,
            o,
            groups: g,
            win,
            oh,
            ow,
            per_chunk,
            chunks,
            parallel_chunks: chunks >= threads && threads > 1,
            band_rows,
        })
    }

    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Rows of one group's columns: `C/G * kh * kw`.
    fn k(&self) -> usize {
        self.c / self.groups * self.win.kernel.0 * self.win.kernel.1
    }

    /// Output channels per group.
    fn og(&self) -> usize {
        self.o / self.groups
    }

    /// A window that [`crate::winograd`] computes (when enabled), for a weight `kept`
    /// transformed between calls (a constant layer's forward pass) or transformed per call.
    fn winograd(&self, kept: bool) -> bool {
        let win = &self.win;
        crate::conv::winograd_enabled()
            && crate::winograd::applies(
                self.c,
                self.o,
                win.kernel,
                win.stride,
                win.dilation,
                self.groups,
                win.padding,
                self.n * self.oh.div_ceil(2) * self.ow.div_ceil(2),
                kept,
            )
    }

    /// A window that [`crate::stride2_winograd`] computes (when Winograd is enabled): 4x4,
    /// stride 2.
    fn stride2_winograd(&self) -> bool {
        crate::conv::winograd_enabled()
            && crate::stride2_winograd::applies(
                (self.n, self.c, self.h, self.w),
                (self.o, self.oh, self.ow),
                &self.win,
                self.groups,
            )
    }

    /// The input, weight and output shapes, as cuDNN takes them.
    #[cfg(feature = "cudnn")]
    fn cudnn_shapes(&self) -> crate::cuda::conv::Shapes {
        let (kh, kw) = self.win.kernel;
        crate::cuda::conv::Shapes {
            x: [self.n, self.c, self.h, self.w],
            w: [self.o, self.c / self.groups, kh, kw],
            y: [self.n, self.o, self.oh, self.ow],
        }
    }

    /// A 1x1 stride-1 unpadded window: an image's columns are its own `(C, H*W)` block.
    fn pointwise(&self) -> bool {
        (self.win.kernel, self.win.stride, self.win.padding) == ((1, 1), 1, 0)
    }

    /// Whether the backward passes lay their columns out as rows, one per output position:
    /// the weight gradient's [`im2row_into`] spares its product's packing a gather across
    /// rows, and the input gradient's [`row2im_into`] adds a row's taps four values at a time.
    /// Chosen where `im2col` / `col2im` move value by value anyway (narrow or strided outputs):
    /// wide stride-1 rows are contiguous runs for them but 3-value pieces for rows (scratch3's
    /// training step measured 7% slower with rows). Never for a 1x1 stride-1 layer: its columns
    /// are its input planes (copied whole, or not at all), where rows would transpose them
    /// (MobileNetV2's training step at batch 16: +28%).
    fn rows_layout(&self) -> bool {
        !self.pointwise() && (self.ow <= NARROW_OUTPUT || self.win.stride > 1)
    }

    /// Whether the weight gradient runs on [`weight_grad_panels`]: one group, a window whose
    /// rows tile a panel, dilation 1, images for every thread (below that, `gemm`'s products
    /// split over the threads instead), and products deep and wide enough for packing the
    /// output gradient to pay: DCGAN's first and last layers (48 columns) and its 1x1 -> 4x4
    /// layer (32 output positions per thread), ResNet's 1x1 stride-2 shortcuts (a panel row is
    /// 48 single values) and its last 3x3 stride-2 layer (a 4x4 output) measured slower on
    /// panels.
    fn panel_weight_grad(&self) -> bool {
        let threads = rayon::current_num_threads().max(1);
        self.groups == 1
            && self.rows_layout()
            && self.win.dilation == 1
            && PANEL.is_multiple_of(self.win.kernel.1)
            && self.parallel_chunks
            && self.win.kernel != (1, 1)
            && self.p() >= MIN_PANEL_POSITIONS
            && self.k() >= MIN_PANEL_COLUMNS
            && self.n.div_ceil(threads) * self.p() >= MIN_PANEL_DEPTH
    }

    /// A strided layer with small outputs: its forward pass (`out` = `o` channels of `pixels` =
    /// `P` pixels, up to [`DIRECT_PIXELS`]) or its input gradient (`c` channels, from `P` =
    /// `pixels` output positions, up to [`DIRECT_GRAD_PIXELS`]), computed by [`crate::direct`]
    /// (measured faster there than `im2col` or phases + `planes`, `benches/NOTES.md`): one
    /// group, a stride of 2 or more, a window larger than 1x1, `out` a multiple of 16, an image
    /// or more per thread, AVX-512F.
    #[cfg(target_arch = "x86_64")]
    fn direct(&self, out: usize, pixels: usize, limit: usize) -> bool {
        self.groups == 1
            && self.win.stride >= 2
            && self.win.kernel != (1, 1)
            && pixels <= limit
            && out.is_multiple_of(16)
            && self.n >= rayon::current_num_threads()
            && crate::direct::available()
    }

    /// The images of chunk `i`.
    fn images(&self, i: usize) -> std::ops::Range<usize> {
        i * self.per_chunk..((i + 1) * self.per_chunk).min(self.n)
    }

    /// Chunk `i`: its images and what its products need.
    fn chunk(&self, i: usize) -> Chunk {
        let imgs = self.images(i);
        let b = imgs.len();
        let direct = self.pointwise() && b == 1;
        let cols_n = b * self.p();
        // Scratch for the output gradient or product gathered as (O, B*P) (none for one image,
        // whose NCHW block already is).
        let tmp_len = if b == 1 { 0 } else { self.o * cols_n };
        Chunk { dims: (b, self.c, self.h, self.w), imgs, b, cols_n, direct, tmp_len }
    }

    /// The bands of output rows a single-image chunk is computed in (one for other chunks,
    /// or when not `split`).
    fn bands(&self, ch: &Chunk, split: bool) -> Vec<Range<usize>> {
        let step = if ch.b == 1 && split { self.band_rows.max(1) } else { self.oh.max(1) };
        (0..self.oh.max(1)).step_by(step).map(|y| y..(y + step).min(self.oh)).collect()
    }

    /// Scratch values for the columns of output rows `ys` (none when they are the input
    /// itself).
    fn cols_len(&self, ch: &Chunk, ys: &Range<usize>) -> usize {
        if ch.direct {
            0
        } else {
            self.k() * self.groups * ch.b * ys.len() * self.ow
        }
    }

    /// The chunk's `(C*kh*kw, B*ys.len()*OW)` columns of output rows `ys` of its input images
    /// `xs`: `xs` itself for a single-image pointwise chunk, else `im2col` into `buf`.
    fn columns<'a>(
        &self,
        ch: &Chunk,
        xs: &'a [f32],
        ys: Range<usize>,
        buf: &'a mut [f32],
        parallel: bool,
    ) -> Result<&'a [f32]> {
        if ch.direct {
            return Ok(xs);
        }
        im2col_into(xs, ch.dims, &self.win, ys, buf, parallel)?;
        Ok(buf)
    }

    /// The chunk's output gradient `gys` (NCHW) as `(O, B*P)`: itself for one image, else
    /// regrouped into `tmp`.
    fn gathered<'a>(&self, ch: &Chunk, gys: &'a [f32], tmp: &'a mut [f32]) -> &'a [f32] {
        if ch.b == 1 {
            return gys;
        }
        regroup(gys, tmp, (ch.b, self.o, self.p()));
        tmp
    }
}

/// One chunk of images, from [`Geometry::chunk`].
struct Chunk {
    /// `(B, C, H, W)` of its input.
    dims: (usize, usize, usize, usize),
    imgs: std::ops::Range<usize>,
    b: usize,
    /// Columns of its products: `B * OH * OW`.
    cols_n: usize,
    /// A single-image pointwise chunk: the input block is its columns.
    direct: bool,
    tmp_len: usize,
}

/// Runs `f(chunk index, chunk's slice of out, parallel GEMM?)` over the geometry's chunks, in
/// parallel when the geometry says so. `per_image` is the length of one image's block in `out`.
fn for_chunks<T: Send>(
    geo: &Geometry,
    out: &mut [T],
    per_image: usize,
    f: impl Fn(usize, &mut [T], bool) -> Result<()> + Sync,
) -> Result<()> {
    let chunk_len = (geo.per_chunk * per_image).max(1);
    if geo.parallel_chunks {
        out.par_chunks_mut(chunk_len).enumerate().try_for_each(|(i, o)| f(i, o, false))
    } else {
        out.chunks_mut(chunk_len).enumerate().try_for_each(|(i, o)| f(i, o, true))
    }
}

/// `(B, O, P)` (NCHW) into `(O, B*P)` (the GEMM's layout for a chunk).
fn regroup(src: &[f32], dst: &mut [f32], (b, o, p): (usize, usize, usize)) {
    for img in 0..b {
        for ch in 0..o {
            let (nchw, gemm) = ((img * o + ch) * p, ch * b * p + img * p);
            dst[gemm..gemm + p].copy_from_slice(&src[nchw..nchw + p]);
        }
    }
}

/// `dcols_g = W_g^T dY_g` for each group `g`: `dy` holds each group's `O/G` rows of `n` values,
/// `rs` apart, and `dcols` is `(G*K, n)`, or with `rows` its transpose `(n, G*K)` (for
/// [`row2im_into`]).
#[allow(clippy::too_many_arguments)]
fn transposed_product(
    geo: &Geometry,
    wt: &[f32],
    dy: &[f32],
    n: usize,
    rs: usize,
    dcols: &mut [f32],
    rows: bool,
    parallel: bool,
) -> Result<()> {
    let (k, og) = (geo.k(), geo.og());
    let gk = geo.groups * k;
    for g in 0..geo.groups {
        let w = Mat::rows(&wt[g * og * k..], og, k);
        let dy = Mat { data: &dy[g * og * rs..], rows: og, cols: n, rs, cs: 1 };
        if rows {
            let dst = MatMut { data: &mut dcols[g * k..], rows: n, cols: k, rs: gk, cs: 1 };
            matmul(dst, dy.t(), w, false, parallel)?;
        } else {
            matmul(MatMut::rows(&mut dcols[g * k * n..], k, n), w.t(), dy, false, parallel)?;
        }
    }
    Ok(())
}

/// Adds `dcols` (from [`transposed_product`], as rows or columns) back into the images.
fn scatter(
    geo: &Geometry,
    ch: &Chunk,
    dcols: &[f32],
    rows: bool,
    ys: Range<usize>,
    dx: &mut [f32],
    parallel: bool,
) -> Result<()> {
    if rows {
        row2im_into(dcols, ch.dims, &geo.win, ys, dx, parallel)
    } else {
        col2im_into(dcols, ch.dims, &geo.win, ys, dx, parallel)
    }
}

thread_local! {
    /// Per-thread buffer for a chunk's output before its max-pool.
    static UNPOOLED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The forward pass: `(N, C, H, W) * (O, C/G, kh, kw) (+ bias) (-> activation)`, and with
/// `pool` a 2x2 stride-2 max-pool of that, each chunk's output pooled while in cache; with
/// `residual` (the output's shape, not with `pool` or Winograd) `act(conv + bias + residual)`.
/// A constant layer keeps its Winograd transform or packed weight in `transformed`.
#[allow(clippy::too_many_arguments)]
fn forward(
    geo: &Geometry,
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    pool: bool,
    transformed: Option<&KeptBuffer>,
    residual: Option<&[f32]>,
) -> Result<Vec<f32>> {
    let winograd = geo.winograd(transformed.is_some());
    if residual.is_some() && (pool || winograd) {
        bail!("conv2d: a residual is added only by the product's epilogue");
    }
    if winograd {
        let transform = || crate::winograd::transform_weight(wt, geo.o, geo.c, false);
        let u = match transformed {
            Some(kept) => kept.get(
                KeptLayout::Winograd,
                crate::winograd::transformed_len(geo.o, geo.c),
                transform,
            )?,
            None => Cow::Owned(transform()?),
        };
        let dims = (geo.n, geo.c, geo.h, geo.w);
        return crate::winograd::conv(x, dims, &u, geo.o, geo.win.padding, bias, act, pool);
    }
    if residual.is_none() && !pool && geo.stride2_winograd() {
        let dims = (geo.n, geo.c, geo.h, geo.w);
        return crate::stride2_winograd::conv(x, dims, wt, geo.o, geo.win.padding, bias, act);
    }
    #[cfg(target_arch = "x86_64")]
    if residual.is_none() && !pool && geo.direct(geo.o, geo.p(), DIRECT_PIXELS) {
        let plan = crate::direct::Plan::conv(geo.n, (geo.c, geo.h, geo.w), geo.o, &geo.win)?;
        let pack = || plan.pack(wt);
        let packed = match transformed {
            Some(kept) => kept.get(KeptLayout::Direct, plan.packed_len(), pack)?,
            None => Cow::Owned(pack()?),
        };
        return crate::direct::forward(&plan, x, &packed, bias, act);
    }
    let (p, o, ow) = (geo.p(), geo.o, geo.ow);
    // The products run on `planes`, over the weight packed once per call (or once for a
    // constant weight, kept in `transformed`), group after group.
    let (k, og) = (geo.k(), geo.og());
    let per_group = planes::packed_len(og, k);
    let pack = || {
        let mut packed = Vec::with_capacity(geo.groups * per_group);
        for w in wt.chunks_exact((og * k).max(1)).take(geo.groups) {
            packed.extend(planes::pack(w, (og, k)));
        }
        Ok(packed)
    };
    let packed = match transformed {
        Some(kept) => kept.get(KeptLayout::Planes, geo.groups * per_group, pack)?,
        None => Cow::Owned(pack()?),
    };
    if geo.n == 1 && geo.groups == 1 && geo.pointwise() && !pool {
        // One image through a 1x1 layer: the input is the product's right operand and the
        // output planes its rows, split over the threads in whole register blocks.
        let threads = rayon::current_num_threads().max(1);
        let blocks = o.div_ceil(planes::block_rows());
        if threads > 1 && blocks % threads != 0 && p >= 2 * COLUMN_SPLIT * threads {
            // Register blocks that do not divide evenly (24 channels: two blocks against one)
            // leave a thread idle for part of the layer; wide planes split by columns instead.
            let width = p.div_ceil(threads).next_multiple_of(16);
            let columns: Vec<Range<usize>> =
                (0..p).step_by(width).map(|c| c..(c + width).min(p)).collect();
            let mut out = Vec::with_capacity(o * p);
            planes::par_column_bands(
                &mut out.spare_capacity_mut()[..o * p],
                (o, p, p),
                &columns,
                |i, mut band| {
                    let at = columns[i].clone();
                    let res: Option<Vec<&[f32]>> = residual.map(|r| {
                        (0..o).map(|row| &r[row * p + at.start..row * p + at.end]).collect()
                    });
                    let e = Epilogue { bias, residual: res.as_deref(), act };
                    planes::product(&mut band.rows(), &packed, &x[at.start..], (at.len(), k, p), e);
                    Ok(())
                },
            )?;
            // SAFETY: the bands cover every column of every row of the first `o * p` slots
            // (`columns` partitions `0..p`), and `par_column_bands` returned only after every
            // band's product wrote all of its values (`product` writes every `dst[i][j]`,
            // `j < n`); `f32` needs no drop and the capacity is `o * p`.
            #[allow(unsafe_code)]
            unsafe {
                out.set_len(o * p);
            }
            return Ok(out);
        }
        let block = o.div_ceil(threads).next_multiple_of(planes::block_rows()) * p.max(1);
        return crate::cpu::par_fill(o * p, block, |start, part| {
            let (first, len) = (start / p.max(1), part.len());
            let mut rows: Vec<_> = part.chunks_mut(p.max(1)).collect();
            let res: Option<Vec<&[f32]>> =
                residual.map(|r| r[start..start + len].chunks(p.max(1)).collect());
            let bias = bias.map(|b| &b[first..]);
            let e = Epilogue { bias, residual: res.as_deref(), act };
            planes::product(&mut rows, &packed[first * k..], x, (p, k, p), e);
            len
        });
    }
    if !pool {
        // Every value is written by a product (or copied from one), so nothing is cleared.
        let len = geo.n * o * p;
        let mut out = Vec::with_capacity(len);
        for_chunks(geo, &mut out.spare_capacity_mut()[..len], o * p, |ci, out, parallel| {
            let imgs = geo.chunk(ci).imgs;
            let res = residual.map(|r| &r[imgs.start * o * p..imgs.end * o * p]);
            forward_chunk(geo, ci, x, &packed, (bias, res, act), out, parallel)
        })?;
        // SAFETY: the chunks cover the first `len` slots and `forward_chunk` writes all of a
        // chunk's values or fails (and then `?` above returned before this point); `f32`
        // needs no drop and the capacity is at least `len`.
        #[allow(unsafe_code)]
        unsafe {
            out.set_len(len);
        }
        return Ok(out);
    }
    let (ph, pw) = (geo.oh / 2, ow / 2);
    let mut out = crate::cpu::zeroed(geo.n * o * ph * pw);
    if out.is_empty() {
        return Ok(out);
    }
    for_chunks(geo, &mut out, o * ph * pw, |ci, out, parallel| {
        let mut full = UNPOOLED.with(|b| std::mem::take(&mut *b.borrow_mut()));
        let len = geo.chunk(ci).b * o * p;
        full.resize(len.max(full.len()), 0.0);
        let unpooled = planes::uninit(&mut full[..len]);
        forward_chunk(geo, ci, x, &packed, (bias, None, act), unpooled, parallel)?;
        for (src, dst) in full[..len].chunks_exact(p).zip(out.chunks_exact_mut(ph * pw)) {
            for (y, row) in dst.chunks_exact_mut(pw).enumerate() {
                let (top, bottom) = src[2 * y * ow..(2 * y + 2) * ow].split_at(ow);
                crate::pool::pair_max_row(row, top, bottom);
            }
        }
        UNPOOLED.with(|b| *b.borrow_mut() = full);
        Ok(())
    })?;
    Ok(out)
}

/// Output pixels per image from which a chunk of several images runs one product per image
/// (written into its NCHW block) rather than one over the chunk's gathered columns: a product
/// that wide keeps the weight's streaming per column block a small share of its work.
const PER_IMAGE_COLUMNS: usize = 128;

/// Columns per thread below which a one-image 1x1 layer is not split by columns: a band should
/// hold whole 48-column register blocks.
const COLUMN_SPLIT: usize = 48;

/// Chunk `ci`'s output, `act(product + bias + residual)`, into its NCHW block `out`, every
/// value written. `packed` is the weight as [`planes::pack`] lays it out, group after group;
/// `residual` is the chunk's block of the residual input.
#[allow(clippy::type_complexity)]
fn forward_chunk(
    geo: &Geometry,
    ci: usize,
    x: &[f32],
    packed: &[f32],
    (bias, residual, act): (Option<&[f32]>, Option<&[f32]>, Activation),
    out: &mut [MaybeUninit<f32>],
    parallel: bool,
) -> Result<()> {
    let (p, o, ow) = (geo.p(), geo.o, geo.ow);
    let chw = geo.c * geo.h * geo.w;
    let ch = geo.chunk(ci);
    let xs = &x[ch.imgs.start * chw..ch.imgs.end * chw];
    let bands = geo.bands(&ch, true);
    let (k, og) = (geo.k(), geo.og());
    let per_group = planes::packed_len(og, k);
    // Group g's packed weight, bias and residual.
    let group = |g: usize| {
        let bias = bias.map(|b| &b[g * og..]);
        (&packed[g * per_group..], bias, residual.map(|r| &r[g * og * p..]))
    };
    if ch.b > 1 && p >= PER_IMAGE_COLUMNS {
        // Each image's product written straight into its NCHW block (its residual added and
        // its activation applied there), from its own columns: no gathered `(O, B*P)` copy to
        // scatter back, and a 1x1 layer reads its input where it lies.
        let (all, n) = (0..geo.oh, ch.cols_n);
        let pointwise = geo.pointwise();
        let len = if pointwise { 0 } else { geo.cols_len(&ch, &all) };
        return with_scratch(len, 0, |cols_buf, _| {
            let cols = if pointwise { xs } else { geo.columns(&ch, xs, all, cols_buf, parallel)? };
            for (img, out) in out.chunks_mut(o * p).enumerate().take(ch.b) {
                let res = residual.map(|r| &r[img * o * p..(img + 1) * o * p]);
                for g in 0..geo.groups {
                    let (w, bias, _) = group(g);
                    let (b, b_rs) = if pointwise {
                        (&cols[img * chw + g * k * p..], p)
                    } else {
                        (&cols[g * k * n + img * p..], n)
                    };
                    let e = (bias, res.map(|r| &r[g * og * p..]), act);
                    let dst = &mut out[g * og * p..];
                    planes::product_rows(dst, (og, p), 0..p, w, b, (k, b_rs), e, parallel);
                }
            }
            Ok(())
        });
    }
    if ch.b > 1 {
        let all = 0..geo.oh;
        let n = ch.cols_n;
        with_scratch(geo.cols_len(&ch, &all), ch.tmp_len, |cols_buf, tmp| {
            let cols = geo.columns(&ch, xs, all, cols_buf, parallel)?;
            // A residual (NCHW) is added, and the activation applied, as the product is
            // copied back.
            let in_product = if residual.is_some() { Activation::Identity } else { act };
            for g in 0..geo.groups {
                let (w, bias, _) = group(g);
                let dst = planes::uninit(&mut tmp[g * og * n..]);
                let b = &cols[g * k * n..];
                let e = (bias, None, in_product);
                planes::product_rows(dst, (og, n), 0..n, w, b, (k, n), e, parallel);
            }
            ungroup(tmp, out, (ch.b, o, p), residual.map(|r| (r, act)));
            Ok(())
        })
    } else if parallel && bands.len() > 1 {
        // One image on all threads: bands side by side, each band's single-threaded products
        // written straight into its columns of the output planes (rather than each band's
        // small product split across threads), with the bias and activation in registers.
        let columns: Vec<Range<usize>> =
            bands.iter().map(|ys| ys.start * ow..ys.end * ow).collect();
        planes::par_column_bands(out, (o, p, p), &columns, |i, mut band| {
            let ys = bands[i].clone();
            let n = ys.len() * ow;
            with_scratch(geo.cols_len(&ch, &ys), 0, |cols_buf, _| {
                let at = ys.start * ow..ys.end * ow;
                let cols = geo.columns(&ch, xs, ys, cols_buf, false)?;
                let mut rows = band.rows();
                for (g, rows) in rows.chunks_mut(og.max(1)).enumerate().take(geo.groups) {
                    let (w, bias, res) = group(g);
                    let res: Option<Vec<&[f32]>> = res
                        .map(|r| (0..og).map(|i| &r[i * p + at.start..i * p + at.end]).collect());
                    let e = Epilogue { bias, residual: res.as_deref(), act };
                    planes::product(rows, w, &cols[g * k * n..], (n, k, n), e);
                }
                Ok(())
            })
        })
    } else {
        // The product's rows are the image's output planes (`P` apart), a band at a time.
        for ys in bands {
            with_scratch(geo.cols_len(&ch, &ys), 0, |cols_buf, _| {
                let n = ys.len() * ow;
                let cols = geo.columns(&ch, xs, ys.clone(), cols_buf, parallel)?;
                let at = ys.start * ow..ys.end * ow;
                for g in 0..geo.groups {
                    let (w, bias, res) = group(g);
                    let dst = &mut out[g * og * p..];
                    let b = &cols[g * k * n..];
                    let e = (bias, res, act);
                    planes::product_rows(dst, (og, p), at.clone(), w, b, (k, n), e, parallel);
                }
                Ok::<_, candle_core::Error>(())
            })?;
        }
        Ok(())
    }
}

/// A chunk's `(O, B*P)` product back into its NCHW block `(B, O, P)`, with
/// `act(value + residual)` when given a residual (of the block's layout) and its activation.
fn ungroup(
    src: &[f32],
    dst: &mut [MaybeUninit<f32>],
    (b, o, p): (usize, usize, usize),
    residual: Option<(&[f32], Activation)>,
) {
    for img in 0..b {
        for ch in 0..o {
            let (nchw, gemm) = ((img * o + ch) * p, ch * b * p + img * p);
            let (dst, src) = (&mut dst[nchw..nchw + p], &src[gemm..gemm + p]);
            match residual {
                None => dst.iter_mut().zip(src).for_each(|(d, &v)| {
                    d.write(v);
                }),
                Some((res, act)) => {
                    let res = &res[nchw..nchw + p];
                    dst.iter_mut().zip(src.iter().zip(res)).for_each(|(d, (&v, &r))| {
                        d.write(act.apply(v + r));
                    })
                }
            }
        }
    }
}

/// The input gradient: per chunk (or band of one image's output rows) `dcols = W^T dY` and
/// `col2im` (for a single-image pointwise chunk the product writes the gradient block
/// directly).
fn input_grad(geo: &Geometry, gy: &[f32], wt: &[f32]) -> Result<Vec<f32>> {
    if geo.stride2_winograd() {
        let dims = (geo.n, geo.c, geo.h, geo.w);
        let out = (geo.o, geo.oh, geo.ow);
        return crate::stride2_winograd::input_grad(gy, dims, wt, out, geo.win.padding);
    }
    if geo.winograd(false) {
        // The input gradient of a 3x3 stride-1 convolution padded by p is the convolution of
        // the output gradient with the rotated, channel-swapped kernel, padded by 2 - p.
        let u = crate::winograd::transform_weight(wt, geo.o, geo.c, true)?;
        let dims = (geo.n, geo.o, geo.oh, geo.ow);
        let pad = 2 - geo.win.padding;
        return crate::winograd::conv(gy, dims, &u, geo.c, pad, None, Activation::Identity, false);
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (kh, kw) = geo.win.kernel;
        let even_phases = kh.is_multiple_of(geo.win.stride) && kw.is_multiple_of(geo.win.stride);
        if even_phases && geo.direct(geo.c, geo.p(), DIRECT_GRAD_PIXELS) {
            // Only where every phase of the stride takes as many taps (DCGAN's 4x4 stride 2):
            // a 3x3 stride-2 window's phases of 4, 2, 2 and 1 taps measured slower than
            // `phases` at 4x4 and 7x7 output gradients of 512 channels (`benches/NOTES.md`).
            let dims = (geo.c, geo.h, geo.w);
            let plan = crate::direct::Plan::conv_input_grad(geo.n, dims, geo.o, &geo.win)?;
            let packed = plan.pack(wt)?;
            return crate::direct::forward(&plan, gy, &packed, None, Activation::Identity);
        }
    }
    let (p, o, ow) = (geo.p(), geo.o, geo.ow);
    let chw = geo.c * geo.h * geo.w;
    let shapes = phases::Shapes {
        input: (geo.c, geo.h, geo.w),
        output: (o, geo.oh, ow),
        groups: geo.groups,
        win: geo.win,
    };
    if phases::applies(&shapes) {
        let phased = phases::PhasedWeight::new(shapes, wt);
        let len = geo.n * chw;
        let mut dx = Vec::with_capacity(len);
        for_chunks(geo, &mut dx.spare_capacity_mut()[..len], chw, |ci, dx, parallel| {
            let ch = geo.chunk(ci);
            let gys = &gy[ch.imgs.start * o * p..ch.imgs.end * o * p];
            let (cols_len, out_len) = phased.scratch_len(ch.b);
            with_scratch(cols_len, out_len, |cols, out| {
                phased.input_grad(gys, ch.b, dx, (cols, out), parallel)
            })
        })?;
        // SAFETY: the chunks partition the first `len` slots and each chunk's
        // `PhasedWeight::input_grad` returned `Ok` only after writing every value of its
        // images (its phases partition each image's positions; on an error we returned above
        // without setting the length); `f32` needs no drop and the capacity is `len`.
        #[allow(unsafe_code)]
        unsafe {
            dx.set_len(len);
        }
        return Ok(dx);
    }
    let mut dx = crate::cpu::zeroed(geo.n * chw);
    for_chunks(geo, &mut dx, chw, |ci, dx, parallel| {
        let ch = geo.chunk(ci);
        let gys = &gy[ch.imgs.start * o * p..ch.imgs.end * o * p];
        let bands = geo.bands(&ch, true);
        if ch.direct {
            return transposed_product(geo, wt, gys, p, p, dx, false, parallel);
        }
        let rows = geo.rows_layout();
        if ch.b > 1 {
            let all = 0..geo.oh;
            return with_scratch(geo.cols_len(&ch, &all), ch.tmp_len, |dcols, tmp| {
                let g_cols = geo.gathered(&ch, gys, tmp);
                let n = ch.cols_n;
                transposed_product(geo, wt, g_cols, n, n, dcols, rows, parallel)?;
                scatter(geo, &ch, dcols, rows, all, dx, parallel)
            });
        }
        if parallel && bands.len() > 1 {
            let parts = bands
                .par_iter()
                .map(|ys| {
                    let (n, dy) = (ys.len() * ow, &gys[ys.start * ow..]);
                    let mut dcols = vec![0f32; geo.cols_len(&ch, ys)];
                    transposed_product(geo, wt, dy, n, p, &mut dcols, rows, false)?;
                    Ok(dcols)
                })
                .collect::<Result<Vec<_>>>()?;
            for (ys, dcols) in bands.into_iter().zip(&parts) {
                scatter(geo, &ch, dcols, rows, ys, dx, true)?;
            }
            return Ok(());
        }
        for ys in bands {
            with_scratch(geo.cols_len(&ch, &ys), 0, |dcols, _| {
                let (n, dy) = (ys.len() * ow, &gys[ys.start * ow..]);
                transposed_product(geo, wt, dy, n, p, dcols, rows, parallel)?;
                scatter(geo, &ch, dcols, rows, ys, dx, parallel)
            })?;
        }
        Ok(())
    })?;
    Ok(dx)
}

/// `run(r)` for each of `runs` runs, on rayon's threads when there are several, in order.
fn each_run(runs: usize, run: impl Fn(usize) -> Result<Vec<f32>> + Sync) -> Result<Vec<Vec<f32>>> {
    if runs > 1 {
        (0..runs).into_par_iter().map(&run).collect()
    } else {
        Ok(vec![run(0)?])
    }
}

/// The weight gradient: `sum over chunks (and bands) of dY_chunk cols_chunk^T`, the chunks split
/// into one fixed contiguous run per thread, each run summed in order, the runs added in order.
fn weight_grad(geo: &Geometry, x: &[f32], gy: &[f32]) -> Result<Vec<f32>> {
    if geo.stride2_winograd()
        && crate::stride2_winograd::weight_grad_applies(geo.n, (geo.oh, geo.ow))
    {
        let dims = (geo.n, geo.c, geo.h, geo.w);
        let out = (geo.o, geo.oh, geo.ow);
        return crate::stride2_winograd::weight_grad(x, dims, gy, out, geo.win.padding);
    }
    if geo.panel_weight_grad() {
        return weight_grad_panels(geo, x, gy);
    }
    let (p, k, og, o, ow) = (geo.p(), geo.k(), geo.og(), geo.o, geo.ow);
    let chw = geo.c * geo.h * geo.w;
    let runs = if geo.parallel_chunks { rayon::current_num_threads().min(geo.chunks) } else { 1 };
    let parallel = !geo.parallel_chunks;
    let run = |r: usize| -> Result<Vec<f32>> {
        let mut acc = vec![0f32; o * k];
        let span = geo.chunks.div_ceil(runs);
        for ci in (r * span)..((r + 1) * span).min(geo.chunks) {
            let ch = geo.chunk(ci);
            let xs = &x[ch.imgs.start * chw..ch.imgs.end * chw];
            let gys = &gy[ch.imgs.start * o * p..ch.imgs.end * o * p];
            // Parallel products take the whole image: bands would split them thinly.
            let bands = geo.bands(&ch, !parallel);
            for ys in bands {
                with_scratch(geo.cols_len(&ch, &ys), ch.tmp_len, |cols_buf, tmp| {
                    let n = ch.b * ys.len() * ow;
                    let (dy, rs) = if ch.b == 1 {
                        (&gys[ys.start * ow..], p)
                    } else {
                        (geo.gathered(&ch, gys, tmp), n)
                    };
                    // The columns as `(n, G*K)` rows (`im2row`) where that is no dearer to
                    // write, else as `(G*K, n)`; a single pointwise image is its own columns.
                    let rows = !ch.direct && geo.rows_layout();
                    let cols = if rows {
                        im2row_into(xs, ch.dims, &geo.win, ys, cols_buf, parallel)?;
                        &*cols_buf
                    } else {
                        geo.columns(&ch, xs, ys, cols_buf, parallel)?
                    };
                    let gk = geo.groups * k;
                    for g in 0..geo.groups {
                        let rhs = if rows {
                            Mat { data: &cols[g * k..], rows: n, cols: k, rs: gk, cs: 1 }
                        } else {
                            Mat::rows(&cols[g * k * n..], k, n).t()
                        };
                        matmul(
                            MatMut::rows(&mut acc[g * og * k..], og, k),
                            Mat { data: &dy[g * og * rs..], rows: og, cols: n, rs, cs: 1 },
                            rhs,
                            true,
                            parallel,
                        )?;
                    }
                    Ok::<_, candle_core::Error>(())
                })?;
            }
        }
        Ok(acc)
    };
    let partial = each_run(runs, run)?;
    let mut parts = partial.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0f32; o * k]);
    for part in parts {
        total.iter_mut().zip(&part).for_each(|(t, v)| *t += v);
    }
    Ok(total)
}

/// Columns of the weight gradient per product in [`weight_grad_panels`]: one 48-wide register
/// block of [`planes`], three 4x4 kernels' taps.
const PANEL: usize = 48;

/// Depth (output positions, over several images) of one product in [`weight_grad_panels`]:
/// two of [`planes`]' depth blocks, so that each image group's output gradient is packed once
/// for many columns.
const PANEL_DEPTH: usize = 1024;

/// Fewest weight-gradient columns (`C*kh*kw`) for [`weight_grad_panels`].
const MIN_PANEL_COLUMNS: usize = 4 * PANEL;

/// Fewest output positions per image for [`weight_grad_panels`].
const MIN_PANEL_POSITIONS: usize = 64;

/// Fewest output positions per thread for [`weight_grad_panels`].
const MIN_PANEL_DEPTH: usize = 256;

/// The weight gradient `dY cols^T` on [`planes`]: each thread takes a contiguous run of images
/// and sums into its own `(O, K)` block, image group by image group (`PANEL_DEPTH` output
/// positions), each group's output gradient packed once as the left operand and its `im2row`
/// written one 48-column panel at a time (rows 48 values apart, in L1 and L2 while the product
/// reads them); the runs are added in order. Through `gemm`, each image's whole `im2row` block
/// (1 MiB for DCGAN's 64 -> 128 layer) was packed again by the library, and the product summed
/// over one image's positions at a time.
fn weight_grad_panels(geo: &Geometry, x: &[f32], gy: &[f32]) -> Result<Vec<f32>> {
    let (p, k, o, n) = (geo.p(), geo.k(), geo.o, geo.n);
    let kp = k.next_multiple_of(16);
    let (c, h, w, pad) = (geo.c, geo.h, geo.w, geo.win.padding);
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let chw = c * h * w;
    let runs = rayon::current_num_threads().clamp(1, n.max(1));
    let span = n.div_ceil(runs);
    let per_group = PANEL_DEPTH.div_ceil(p.max(1)).min(span).max(1);
    let run = |r: usize| -> Result<Vec<f32>> {
        let mut acc = vec![0f32; o * kp];
        let mut packed = Vec::new();
        let images = (r * span).min(n)..((r + 1) * span).min(n);
        for first in images.clone().step_by(per_group) {
            let g = per_group.min(images.end - first);
            planes::pack_planes_into(
                &gy[first * o * p..(first + g) * o * p],
                (g, o, p),
                &mut packed,
            );
            let padded_len = g * c * hp * wp;
            with_scratch(padded_len, g * p * PANEL, |padded, panel| {
                let xs = &x[first * chw..(first + g) * chw];
                crate::conv::pad_planes_into(xs, (g * c, h, w), pad, padded)?;
                for start in (0..kp).step_by(PANEL) {
                    let width = PANEL.min(kp - start);
                    let cols = start.min(k)..(start + width).min(k);
                    let panel = &mut panel[..g * p * width];
                    crate::conv::im2row_panel_into(
                        padded,
                        (g, c, h, w),
                        &geo.win,
                        cols,
                        width,
                        panel,
                    )?;
                    let mut rows: Vec<&mut [f32]> = acc
                        .chunks_exact_mut(kp)
                        .map(|row| &mut row[start..start + width])
                        .collect();
                    planes::accumulate(&mut rows, &packed, panel, (width, g * p, width));
                }
                Ok::<_, candle_core::Error>(())
            })?;
        }
        Ok(acc)
    };
    let partial = each_run(runs, run)?;
    let mut total = vec![0f32; o * k];
    for part in &partial {
        for (t, row) in total.chunks_exact_mut(k.max(1)).zip(part.chunks_exact(kp.max(1))) {
            t.iter_mut().zip(row).for_each(|(t, v)| *t += v);
        }
    }
    Ok(total)
}

/// `act(conv(x, weight) + bias + residual)` as one forward pass over `(x, weight, residual)`,
/// the residual added in the product's epilogue (no separate pass over the output): for
/// operands that record no gradients (the op has no backward pass).
pub(crate) struct ResidualConv {
    pub params: Conv2dParams,
    pub act: Activation,
    /// The bias, one value per output channel.
    pub bias: Option<Vec<f32>>,
    /// Where a constant weight keeps its packing between calls.
    pub transformed: Option<KeptBuffer>,
}

impl ResidualConv {
    /// Whether the op computes `(x, weight)`'s convolution, the weight `kept` transformed
    /// between calls or not: not a Winograd layer's (whose output transform has no residual).
    pub(crate) fn applies(
        x: &[usize],
        weight: &[usize],
        params: Conv2dParams,
        kept: bool,
    ) -> Result<bool> {
        Ok(!Geometry::new(x, weight, params)?.winograd(kept))
    }
}

impl candle_core::CustomOp3 for ResidualConv {
    fn name(&self) -> &'static str {
        "deeprecog-conv2d-residual"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let geo = Geometry::new(xl.dims(), wl.dims(), self.params)?;
        let shape = (geo.n, geo.o, geo.oh, geo.ow);
        if rl.dims() != [shape.0, shape.1, shape.2, shape.3] {
            bail!("conv2d: residual {:?} for an output of {shape:?}", rl.dims());
        }
        if self.bias.as_ref().is_some_and(|b| b.len() != geo.o) {
            bail!("conv2d: a bias of other than {} values", geo.o);
        }
        let x = f32_slice(xs, xl, "conv2d")?;
        let wt = f32_slice(ws, wl, "conv2d")?;
        let residual = Some(f32_slice(rs, rl, "conv2d residual")?);
        let (bias, kept) = (self.bias.as_deref(), self.transformed.as_ref());
        let out = forward(&geo, x, wt, bias, self.act, false, kept, residual)?;
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}

/// The convolution op: `(x, weight)` or `(x, weight, bias)`, with an optional clipping
/// activation after, and optionally a 2x2 stride-2 max-pool after that (an op without a
/// backward pass: applied only where nothing records gradients).
pub(crate) struct GemmConv {
    pub params: Conv2dParams,
    pub act: Activation,
    pub pool: bool,
    /// Where a constant weight keeps its Winograd transform between calls.
    pub transformed: Option<KeptBuffer>,
}

impl GemmConv {
    /// The op without a kept transform.
    pub(crate) fn new(params: Conv2dParams, act: Activation, pool: bool) -> Self {
        GemmConv { params, act, pool, transformed: None }
    }
}

impl GemmConv {
    fn forward(
        &self,
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let geo = Geometry::new(xl.dims(), wl.dims(), self.params)?;
        let x = f32_slice(xs, xl, "conv2d")?;
        let wt = f32_slice(ws, wl, "conv2d")?;
        let b = match bias {
            Some((bs, bl)) if bl.shape().elem_count() == geo.o => {
                Some(f32_slice(bs, bl, "conv2d")?)
            }
            Some((_, bl)) => bail!("conv2d: bias {:?} for {} channels", bl.dims(), geo.o),
            None => None,
        };
        let out = forward(&geo, x, wt, b, self.act, self.pool, self.transformed.as_ref(), None)?;
        let (oh, ow) = if self.pool { (geo.oh / 2, geo.ow / 2) } else { (geo.oh, geo.ow) };
        Ok((CpuStorage::F32(out), Shape::from((geo.n, geo.o, oh, ow))))
    }

    /// The forward pass on CUDA: cuDNN's product, then the bias and activation in one pass.
    #[cfg(feature = "cudnn")]
    pub(crate) fn cuda_forward(
        &self,
        (xs, xl): (&candle_core::CudaStorage, &Layout),
        (ws, wl): (&candle_core::CudaStorage, &Layout),
        bias: Option<(&candle_core::CudaStorage, &Layout)>,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        if self.pool {
            bail!("conv2d: the fused max-pool runs on the CPU only; compose the two ops");
        }
        let geo = Geometry::new(xl.dims(), wl.dims(), self.params)?;
        let dev = xs.device().clone();
        let b = match bias {
            Some((bs, bl)) if bl.shape().elem_count() == geo.o => {
                Some(crate::cuda::f32_view(bs, bl, "conv2d")?)
            }
            Some((_, bl)) => bail!("conv2d: bias {:?} for {} channels", bl.dims(), geo.o),
            None => None,
        };
        if xs.dtype() != candle_core::DType::F32
            && (b.is_some() || self.act != Activation::Identity)
        {
            bail!("conv2d: bias and activation are fused for f32 only; got {:?}", xs.dtype());
        }
        let pass = crate::cuda::conv::Pass::Forward;
        let mut y =
            crate::cuda::conv::product(pass, (xs, xl), (ws, wl), geo.cudnn_shapes(), self.params)?;
        if xs.dtype() == candle_core::DType::F32 {
            let out = y.as_cuda_slice_mut::<f32>()?;
            crate::cuda::bias_act_in_place(&dev, out, b, self.act, (geo.o, geo.p()))?;
        }
        Ok((y, Shape::from((geo.n, geo.o, geo.oh, geo.ow))))
    }

    /// The output gradient through the activation, and the input and weight gradients of the
    /// operands that carry autograd history (see [`crate::cpu::needs_grad`]).
    fn grads(&self, x: &Tensor, w: &Tensor, res: &Tensor, grad: &Tensor) -> Result<ConvGrads> {
        if self.pool {
            bail!("conv2d with a fused max-pool has no backward pass; compose the two ops");
        }
        let grad = self.act.mask(&grad.contiguous()?, res)?;
        let dx = crate::cpu::needs_grad(x, || {
            grad.apply_op2_no_bwd(
                w,
                &Grad { params: self.params, dims: x.dims4()?, wrt: Wrt::Input },
            )
        })?;
        let dw = crate::cpu::needs_grad(w, || {
            x.apply_op2_no_bwd(
                &grad,
                &Grad { params: self.params, dims: w.dims4()?, wrt: Wrt::Weight },
            )
        })?;
        Ok((grad, dx, dw))
    }
}

crate::cpu::conv_custom_ops!(GemmConv, "deeprecog-conv2d", "deeprecog-conv2d-bias");

/// A convolution's input gradient (`input`: from `(dY, weight)`) or weight gradient (from
/// `(x, dY)`) of shape `dims`, as the backward pass computes it, outside autograd.
pub(crate) fn gradient(
    a: &Tensor,
    b: &Tensor,
    params: Conv2dParams,
    dims: (usize, usize, usize, usize),
    input: bool,
) -> Result<Tensor> {
    let wrt = if input { Wrt::Input } else { Wrt::Weight };
    a.contiguous()?.apply_op2_no_bwd(&b.contiguous()?, &Grad { params, dims, wrt })
}

/// Which gradient a [`Grad`] op computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrt {
    /// `(dY, weight)` to the input gradient.
    Input,
    /// `(x, dY)` to the weight gradient.
    Weight,
}

/// A convolution's input or weight gradient; `dims` is the shape of what it returns.
struct Grad {
    params: Conv2dParams,
    dims: (usize, usize, usize, usize),
    wrt: Wrt,
}

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        match self.wrt {
            Wrt::Input => "deeprecog-conv2d-input-grad",
            Wrt::Weight => "deeprecog-conv2d-weight-grad",
        }
    }

    fn cpu_fwd(
        &self,
        a: &CpuStorage,
        al: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let geo = self.geometry(al, bl)?;
        let a = f32_slice(a, al, "conv2d backward")?;
        let b = f32_slice(b, bl, "conv2d backward")?;
        let out = match self.wrt {
            Wrt::Input => input_grad(&geo, a, b)?,
            Wrt::Weight => weight_grad(&geo, a, b)?,
        };
        Ok((CpuStorage::F32(out), Shape::from(self.dims)))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        a: &candle_core::CudaStorage,
        al: &Layout,
        b: &candle_core::CudaStorage,
        bl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let geo = self.geometry(al, bl)?;
        let pass = match self.wrt {
            Wrt::Input => crate::cuda::conv::Pass::Input,
            Wrt::Weight => crate::cuda::conv::Pass::Weight,
        };
        let out =
            crate::cuda::conv::product(pass, (a, al), (b, bl), geo.cudnn_shapes(), self.params)?;
        Ok((out, Shape::from(self.dims)))
    }
}

impl Grad {
    /// The convolution's geometry from the operands' layouts (`(dY, weight)` or `(x, dY)`),
    /// checking the output gradient's shape.
    fn geometry(&self, al: &Layout, bl: &Layout) -> Result<Geometry> {
        let d = [self.dims.0, self.dims.1, self.dims.2, self.dims.3];
        let (geo, gl) = match self.wrt {
            Wrt::Input => (Geometry::new(&d, bl.dims(), self.params)?, al),
            Wrt::Weight => (Geometry::new(al.dims(), &d, self.params)?, bl),
        };
        if gl.dims() != [geo.n, geo.o, geo.oh, geo.ow] {
            bail!("conv2d backward: gradient {:?} for a {:?} result", gl.dims(), self.dims);
        }
        Ok(geo)
    }
}

/// The transposed convolution of `x (N, C, H, W)` with `weight (C, O/G, kh, kw)` into an
/// `(N, O, OH, OW)` output: the input gradient of the convolution from `O` to `C` channels with
/// the same weight and window, so forward and backward are the three kernels above with roles
/// swapped (its input gradient is that convolution's forward, its weight gradient that
/// convolution's weight gradient with `x` as the output gradient).
pub(crate) struct GemmConvTranspose {
    /// The window of the convolution it is the adjoint of.
    pub params: Conv2dParams,
    /// The output `(N, O, OH, OW)`.
    pub out: (usize, usize, usize, usize),
}

impl CustomOp2 for GemmConvTranspose {
    fn name(&self) -> &'static str {
        "deeprecog-conv-transpose2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, o, oh, ow) = self.out;
        let geo = Geometry::new(&[n, o, oh, ow], wl.dims(), self.params)?;
        if xl.dims() != [n, geo.o, geo.oh, geo.ow] {
            bail!("conv_transpose2d: input {:?} does not map to output {:?}", xl.dims(), self.out);
        }
        let x = f32_slice(xs, xl, "conv_transpose2d")?;
        let wt = f32_slice(ws, wl, "conv_transpose2d")?;
        Ok((CpuStorage::F32(input_grad(&geo, x, wt)?), Shape::from(self.out)))
    }

    #[cfg(feature = "cudnn")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ws: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, o, oh, ow) = self.out;
        let geo = Geometry::new(&[n, o, oh, ow], wl.dims(), self.params)?;
        if xl.dims() != [n, geo.o, geo.oh, geo.ow] {
            bail!("conv_transpose2d: input {:?} does not map to output {:?}", xl.dims(), self.out);
        }
        let pass = crate::cuda::conv::Pass::Input;
        let out =
            crate::cuda::conv::product(pass, (xs, xl), (ws, wl), geo.cudnn_shapes(), self.params)?;
        Ok((out, Shape::from(self.out)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = crate::cpu::needs_grad(x, || {
            grad.apply_op2_no_bwd(w, &GemmConv::new(self.params, Activation::Identity, false))
        })?;
        let dw = crate::cpu::needs_grad(w, || {
            grad.apply_op2_no_bwd(
                x,
                &Grad { params: self.params, dims: w.dims4()?, wrt: Wrt::Weight },
            )
        })?;
        Ok((dx, dw))
    }
}
