//! What the custom ops' CPU kernels share: the contiguous slice a layout covers, and a dispatch
//! over the float storage types.

use std::cell::RefCell;

use candle_core::{bail, CpuStorage, Layout, Result};

/// The contiguous slice a layout covers; the public functions make inputs contiguous first.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => match data.get(a..b) {
            Some(s) => Ok(s),
            None => bail!("custom op: layout out of the storage's bounds"),
        },
        None => bail!("custom op: input must be contiguous"),
    }
}

/// Runs `$f::<T>(slice, ...)` for each float storage type, wrapping the result back.
macro_rules! dispatch_float {
    ($storage:expr, $layout:expr, $name:expr, |$s:ident| $body:expr) => {
        match $storage {
            CpuStorage::F32(d) => {
                let $s = contiguous(d, $layout)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(d) => {
                let $s = contiguous(d, $layout)?;
                CpuStorage::F64($body)
            }
            CpuStorage::F16(d) => {
                let $s = contiguous(d, $layout)?;
                CpuStorage::F16($body)
            }
            CpuStorage::BF16(d) => {
                let $s = contiguous(d, $layout)?;
                CpuStorage::BF16($body)
            }
            other => bail!("{}: unsupported dtype {:?}", $name, other.dtype()),
        }
    };
}

pub(crate) use dispatch_float;

/// `len` values produced block by block on rayon's threads: block `i` (values
/// `i * block..`, the last one shorter) is filled from `values(range)`, which must yield one
/// value per index of the range. The output is written once, without zeroing it first (a
/// zeroed allocation is a full extra pass that the allocator's `memset` makes on every call).
///
/// # Errors
/// An iterator that yields fewer values than its block holds.
pub(crate) fn par_collect<I: Iterator<Item = f32>>(
    len: usize,
    block: usize,
    values: impl Fn(std::ops::Range<usize>) -> I + Sync,
) -> Result<Vec<f32>> {
    par_fill(len, block, |start, dst| {
        let mut written = 0;
        let n = dst.len();
        for (d, v) in dst.iter_mut().zip(values(start..start + n)) {
            d.write(v);
            written += 1;
        }
        written
    })
}

/// `len` values written block by block on rayon's threads by `fill(start, part)`, which
/// initialises a prefix of `part` (values `start..start + part.len()`) and returns its length:
/// for kernels that write a whole block in one vectorised pass, where [`par_collect`]'s
/// iterator is consumed one value at a time. Nothing is zeroed first.
///
/// # Errors
/// A `fill` that leaves part of its block unwritten.
pub(crate) fn par_fill(
    len: usize,
    block: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) -> usize + Sync,
) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let block = block.max(1);
    let mut out = Vec::with_capacity(len);
    let complete = out.spare_capacity_mut()[..len]
        .par_chunks_mut(block)
        .enumerate()
        .all(|(i, part)| fill(i * block, part) == part.len());
    if !complete {
        bail!("par_fill: a block was left partly unwritten");
    }
    // SAFETY: every block of the first `len` slots reported all of its slots initialised
    // (`all` is true only if every block ran and did); `f32` needs no drop, and the capacity
    // is at least `len`.
    #[allow(unsafe_code)]
    unsafe {
        out.set_len(len);
    }
    Ok(out)
}

/// A `len`-long output written block by block on rayon's threads: each `block`-long part (the
/// last one shorter) is zeroed by the task that then hands it to `fill(state, index, part)`,
/// `state` made by `init` once per worker. The zeroing runs in parallel on memory the task is
/// about to write anyway, instead of the single-threaded pass (and fresh-page faults) of an
/// allocator's zeroed vector before the parallel work starts.
pub(crate) fn par_blocks<T>(
    len: usize,
    block: usize,
    init: impl Fn() -> T + Sync + Send,
    fill: impl Fn(&mut T, usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    use rayon::prelude::*;
    let block = block.max(1);
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len].par_chunks_mut(block).enumerate().for_each_init(
        init,
        |state, (i, part)| {
            // SAFETY: `part` is `part.len()` writable `MaybeUninit<f32>` slots (a chunk of the
            // vector's spare capacity); all-zero bytes are the f32 0.0, so after the memset
            // every element is initialised, and `MaybeUninit<f32>` has the layout of `f32`.
            // (A memset: an element-wise loop compiled to 16-byte stores, 4.6% of MobileNetV2's
            // batch-1 inference in `perf`.)
            #[allow(unsafe_code)]
            let part = unsafe {
                std::ptr::write_bytes(part.as_mut_ptr(), 0, part.len());
                std::slice::from_raw_parts_mut(part.as_mut_ptr().cast::<f32>(), part.len())
            };
            fill(state, i, part);
        },
    );
    // SAFETY: the first `len` slots were split into blocks that the tasks above each wrote in
    // full (each block is zeroed before `fill` sees it; for_each returns only after
    // every task ran); `f32` needs no drop, and the capacity is at least `len`.
    #[allow(unsafe_code)]
    unsafe {
        out.set_len(len);
    }
    out
}

/// Tiles of [`transpose_into`]: 16 source rows (a destination row's 64-byte line, written
/// whole) by 256 source columns (16 KiB read as 16 streams), so that a tile's reads and
/// writes sit in L1 together.
const TILE_ROWS: usize = 16;
const TILE_COLS: usize = 256;

/// `dst (cols, rows) = src (rows, cols)^T`, tile by tile, the destination's blocks of
/// [`TILE_COLS`] rows in parallel.
pub(crate) fn transpose_into(src: &[f32], (rows, cols): (usize, usize), dst: &mut [f32]) {
    if rows == 0 || cols == 0 {
        return;
    }
    use rayon::prelude::*;
    dst[..rows * cols].par_chunks_mut(TILE_COLS * rows).enumerate().for_each(|(b, block)| {
        let first = b * TILE_COLS;
        let width = block.len() / rows;
        for r0 in (0..rows).step_by(TILE_ROWS) {
            for i in r0..(r0 + TILE_ROWS).min(rows) {
                let row = &src[i * cols + first..i * cols + first + width];
                for (p, &v) in row.iter().enumerate() {
                    block[p * rows + i] = v;
                }
            }
        }
    });
}

/// The contiguous f32 slice of a CPU storage, for kernels that take f32 only.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, name: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(d) = s else { bail!("{name}: the CPU kernel takes f32") };
    match l.contiguous_offsets().and_then(|(a, b)| d.get(a..b)) {
        Some(d) => Ok(d),
        None => bail!("{name}: input must be contiguous"),
    }
}

/// `(N, C, S...)` as `(n, c, s)`: batch, channels, and the product of the rest.
pub(crate) fn ncs(layout: &Layout) -> Result<(usize, usize, usize)> {
    let dims = layout.shape().dims();
    if dims.len() < 2 {
        bail!("expected an (N, C, ...) tensor, got shape {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

/// Whether the crate's own kernels run on `device`: the CPU always, CUDA with the `cuda`
/// feature (cuDNN convolutions need `cudnn`).
pub(crate) fn own_kernels(device: &candle_core::Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cuda") && device.is_cuda())
}

/// [`own_kernels`] for convolutions.
pub(crate) fn own_conv(device: &candle_core::Device) -> bool {
    device.is_cpu() || (cfg!(feature = "cudnn") && device.is_cuda())
}

/// `CustomOp2` over `(x, weight)` and `CustomOp3` over `(x, weight, bias)` for a convolution op
/// with `forward(&self, (x storage, layout), (weight ...), Option<(bias ...)>)` and
/// `grads(&self, x, weight, res, grad) -> ConvGrads`; the bias
/// gradient is the masked gradient's per-channel sum. With the `cudnn` feature the op also
/// needs `cuda_forward`, the same signature over CUDA storage.
macro_rules! conv_custom_ops {
    ($ty:ty, $name:literal, $name_bias:literal) => {
        impl candle_core::CustomOp2 for $ty {
            fn name(&self) -> &'static str {
                $name
            }

            fn cpu_fwd(
                &self,
                xs: &candle_core::CpuStorage,
                xl: &candle_core::Layout,
                ws: &candle_core::CpuStorage,
                wl: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.forward((xs, xl), (ws, wl), None)
            }

            #[cfg(feature = "cudnn")]
            fn cuda_fwd(
                &self,
                xs: &candle_core::CudaStorage,
                xl: &candle_core::Layout,
                ws: &candle_core::CudaStorage,
                wl: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
                self.cuda_forward((xs, xl), (ws, wl), None)
            }

            fn bwd(
                &self,
                x: &candle_core::Tensor,
                w: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(Option<candle_core::Tensor>, Option<candle_core::Tensor>)>
            {
                let (_, dx, dw) = self.grads(x, w, res, grad)?;
                Ok((dx, dw))
            }
        }

        impl candle_core::CustomOp3 for $ty {
            fn name(&self) -> &'static str {
                $name_bias
            }

            fn cpu_fwd(
                &self,
                xs: &candle_core::CpuStorage,
                xl: &candle_core::Layout,
                ws: &candle_core::CpuStorage,
                wl: &candle_core::Layout,
                bs: &candle_core::CpuStorage,
                bl: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
                self.forward((xs, xl), (ws, wl), Some((bs, bl)))
            }

            #[cfg(feature = "cudnn")]
            fn cuda_fwd(
                &self,
                xs: &candle_core::CudaStorage,
                xl: &candle_core::Layout,
                ws: &candle_core::CudaStorage,
                wl: &candle_core::Layout,
                bs: &candle_core::CudaStorage,
                bl: &candle_core::Layout,
            ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
                self.cuda_forward((xs, xl), (ws, wl), Some((bs, bl)))
            }

            #[allow(clippy::type_complexity)]
            fn bwd(
                &self,
                x: &candle_core::Tensor,
                w: &candle_core::Tensor,
                bias: &candle_core::Tensor,
                res: &candle_core::Tensor,
                grad: &candle_core::Tensor,
            ) -> candle_core::Result<(
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
                Option<candle_core::Tensor>,
            )> {
                let (grad, dx, dw) = self.grads(x, w, res, grad)?;
                let db = crate::cpu::needs_grad(bias, || {
                    grad.apply_op1_no_bwd(&crate::conv::ChannelSum)
                })?;
                Ok((dx, dw, db))
            }
        }
    };
}

pub(crate) use conv_custom_ops;

/// A convolution's output gradient through its activation, and the input and weight gradients
/// (`None` for an operand without autograd history).
pub(crate) type ConvGrads =
    (candle_core::Tensor, Option<candle_core::Tensor>, Option<candle_core::Tensor>);

/// `grad()` when `operand` carries autograd history (a variable, or computed from one), else
/// `None`: candle's backward pass asks an op for every operand's gradient but only follows
/// those of tracked operands, so the rest (a frozen backbone's detached features, a batch of
/// images, a constant weight) would be computed and dropped.
pub(crate) fn needs_grad(
    operand: &candle_core::Tensor,
    grad: impl FnOnce() -> candle_core::Result<candle_core::Tensor>,
) -> candle_core::Result<Option<candle_core::Tensor>> {
    if operand.track_op() {
        grad().map(Some)
    } else {
        Ok(None)
    }
}

thread_local! {
    /// Per-thread buffers (columns, gathered output, transformed tiles) reused across calls,
    /// so that the hot loop neither allocates nor clears memory it is about to overwrite.
    static SCRATCH: RefCell<[Vec<f32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `f` with two scratch buffers of the given lengths (contents unspecified). A nested call
/// on the same thread gets fresh buffers instead of the borrowed ones.
pub(crate) fn with_scratch<R>(
    len_a: usize,
    len_b: usize,
    f: impl FnOnce(&mut [f32], &mut [f32]) -> R,
) -> R {
    let [mut a, mut b] = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    a.resize(len_a.max(a.len()), 0.0);
    b.resize(len_b.max(b.len()), 0.0);
    let out = f(&mut a[..len_a], &mut b[..len_b]);
    SCRATCH.with(|s| *s.borrow_mut() = [a, b]);
    out
}

/// Values from which [`zeroed`] clears a new buffer on all threads: below, one thread's
/// `memset` takes a few microseconds.
const PARALLEL_ZERO: usize = 1 << 16;

/// A vector of `len` zeros for an op's output, cleared on all of rayon's threads when large:
/// `vec![0; len]` clears it on the calling thread while the others wait for the op's parallel
/// part (`memset` was 5-8% of ResNet50 b8 and MobileNetV2 b1 inference samples).
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    if len < PARALLEL_ZERO {
        return vec![0f32; len];
    }
    // Blocks of `PARALLEL_ZERO` values, each a `memset`.
    let clear = |_, part: &mut [std::mem::MaybeUninit<f32>]| {
        part.fill(std::mem::MaybeUninit::new(0.0));
        part.len()
    };
    match par_fill(len, PARALLEL_ZERO, clear) {
        Ok(v) => v,
        // Unreachable (every block is written whole); the plain allocation is still right.
        Err(_) => vec![0f32; len],
    }
}

#[cfg(test)]
mod tests {
    use std::mem::MaybeUninit;

    /// Both sides of the parallel threshold, after buffers of non-zero values were freed.
    #[test]
    fn zeroed_buffers_hold_zeros() {
        for len in
            [0, 5, super::PARALLEL_ZERO - 1, super::PARALLEL_ZERO, 3 * super::PARALLEL_ZERO + 7]
        {
            drop(vec![1.5f32; len]);
            let v = super::zeroed(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x.to_bits() == 0), "{len}");
        }
    }

    /// Against the definition, on shapes that fill no tile, part of one, and several tiles
    /// each way with partial ones at the ends.
    #[test]
    fn transpose_matches_its_definition() {
        for (rows, cols) in [(1, 1), (3, 5), (16, 256), (17, 257), (40, 700), (0, 4)] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols + 3];
            super::transpose_into(&src, (rows, cols), &mut dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(dst[j * rows + i], src[i * cols + j], "{rows}x{cols} ({i}, {j})");
                }
            }
            assert!(dst[rows * cols..].iter().all(|v| v.is_nan()), "{rows}x{cols}: wrote past");
        }
    }

    /// Every block lands at its offset; a block left partly unwritten is an error, not
    /// uninitialised output.
    #[test]
    fn par_fill_writes_each_block_at_its_offset() {
        let fill = |start: usize, part: &mut [MaybeUninit<f32>]| {
            for (i, v) in part.iter_mut().enumerate() {
                v.write((start + i) as f32);
            }
            part.len()
        };
        for (len, block) in [(0, 4), (1, 4), (10, 3), (64, 64), (100, 7)] {
            let out = super::par_fill(len, block, fill).unwrap();
            assert_eq!(out, (0..len).map(|i| i as f32).collect::<Vec<_>>(), "{len} by {block}");
        }
        let short = |start: usize, part: &mut [MaybeUninit<f32>]| {
            let n = if start == 6 { part.len() - 1 } else { part.len() };
            part[..n].iter_mut().for_each(|v| {
                v.write(0.0);
            });
            n
        };
        assert!(super::par_fill(10, 3, short).is_err());
    }
}
