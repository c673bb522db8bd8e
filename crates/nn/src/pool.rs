//! 2-D max and average pooling whose backward pass is right for any kernel, stride and padding.
//!
//! candle's own pooling backward assumes `kernel == stride`, which breaks ResNet's 3x3 stride-2
//! pad-1 stem pool. These ops follow PyTorch's semantics (`ceil_mode = false`): max pooling pads
//! with `-inf`, a tie goes to the first maximum in row-major window order, NaN wins, and the
//! padding may be at most half the kernel so that every window sees a real element.
//!
//! Both directions run as candle custom ops on CPU for f32, f64, f16 and bf16, NCHW layout. The
//! backward of max pooling is a `scatter_add` of the output gradient to the argmax positions and
//! the backward of average pooling is its adjoint op, so the backward is itself differentiable.
//! There is no CUDA kernel yet: on a CUDA tensor candle's default `cuda_fwd` returns a clean
//! "no cuda implementation" error; the kernel lands with the GPU issue.
//!
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use deeprecog_nn::pool::MaxPool2d;
//!
//! let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((1, 1, 4, 4))?;
//! let y = MaxPool2d::new(3, 2, 1).forward(&x)?;
//! assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [5.0, 7.0, 13.0, 15.0]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::backend::BackendStorage;
use candle_core::{
    bail, CpuStorage, CustomOp1, DType, Layout, Module, Result, Shape, Tensor, WithDType,
};

use rayon::prelude::*;

use crate::cpu::{contiguous, dispatch_float, own_kernels};

/// A height/width pair; a single `usize` means the same value for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size2 {
    /// Along the height (rows).
    pub h: usize,
    /// Along the width (columns).
    pub w: usize,
}

impl From<usize> for Size2 {
    fn from(v: usize) -> Self {
        Size2 { h: v, w: v }
    }
}

impl From<(usize, usize)> for Size2 {
    fn from((h, w): (usize, usize)) -> Self {
        Size2 { h, w }
    }
}

/// The geometry shared by every op here, checked once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    kernel: Size2,
    stride: Size2,
    padding: Size2,
}

impl Geometry {
    fn new(kernel: Size2, stride: Size2, padding: Size2) -> Result<Self> {
        if kernel.h == 0 || kernel.w == 0 || stride.h == 0 || stride.w == 0 {
            bail!("pool2d: kernel {kernel:?} and stride {stride:?} must be positive");
        }
        // PyTorch's rule; it guarantees every window holds at least one real element.
        if padding.h > kernel.h / 2 || padding.w > kernel.w / 2 {
            bail!("pool2d: padding {padding:?} must be at most half the kernel {kernel:?}");
        }
        Ok(Geometry { kernel, stride, padding })
    }

    fn out_len(input: usize, k: usize, s: usize, p: usize) -> Result<usize> {
        let padded = input + 2 * p;
        if padded < k {
            bail!("pool2d: input length {input} (+2x{p} padding) is smaller than the kernel {k}");
        }
        Ok((padded - k) / s + 1)
    }

    fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        Ok((
            Self::out_len(h, self.kernel.h, self.stride.h, self.padding.h)?,
            Self::out_len(w, self.kernel.w, self.stride.w, self.padding.w)?,
        ))
    }

    /// The window of output position `o` along one axis, clipped to the input: `[start, end)`.
    fn window(o: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
        let start = (o * s).saturating_sub(p);
        let end = (o * s + k).saturating_sub(p).min(len);
        (start, end)
    }
}

#[cfg(feature = "cuda")]
impl Geometry {
    /// The window over `h x w` planes, as the CUDA kernels take it.
    fn cuda(&self, h: usize, w: usize) -> Result<crate::cuda::PoolGeometry> {
        let (oh, ow) = self.out_hw(h, w)?;
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("pool2d: {v} too large")))
        };
        Ok(crate::cuda::PoolGeometry {
            h: int(h)?,
            w: int(w)?,
            oh: int(oh)?,
            ow: int(ow)?,
            kh: int(self.kernel.h)?,
            kw: int(self.kernel.w)?,
            sh: int(self.stride.h)?,
            sw: int(self.stride.w)?,
            ph: int(self.padding.h)?,
            pw: int(self.padding.w)?,
        })
    }
}

fn dims4(layout: &Layout) -> Result<(usize, usize, usize, usize)> {
    match layout.shape().dims() {
        &[n, c, h, w] => Ok((n, c, h, w)),
        d => bail!("pool2d: expected an NCHW tensor, got shape {d:?}"),
    }
}

/// Per output element, the flat `h * W + w` index of its (first) maximum inside its plane and
/// (when `values` is given) the maximum itself; parallel over planes.
/// 2x2 windows at stride 2 over one `? x w` plane: two rows at a time, the four candidates
/// compared in PyTorch's order. Compiled for AVX-512 / AVX2 and picked at run time.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn pair_plane<T: WithDType>(plane: &[T], w: usize, ow: usize, dst: &mut [u32], val: &mut [T]) {
    for (oy, (d_row, v_row)) in
        dst.chunks_exact_mut(ow.max(1)).zip(val.chunks_exact_mut(ow.max(1))).enumerate()
    {
        let top = &plane[2 * oy * w..2 * oy * w + 2 * ow];
        let bottom = &plane[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
        for (ox, (d, o)) in d_row.iter_mut().zip(v_row).enumerate() {
            let cand = [top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1]];
            // Sequential strict `>` keeps the first maximum; a NaN is taken and then kept.
            // Branch-free selects, so the row loop vectorises.
            let (mut best, mut k) = (cand[0], 0usize);
            for (j, &v) in cand.iter().enumerate().skip(1) {
                #[allow(clippy::eq_op)]
                let take = (v > best || v != v) && best == best;
                best = if take { v } else { best };
                k = if take { j } else { k };
            }
            *o = best;
            *d = ((2 * oy + k / 2) * w + 2 * ox + k % 2) as u32;
        }
    }
}

fn argmax<T: WithDType>(
    x: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
    g: &Geometry,
    values: Option<&mut Vec<T>>,
) -> Result<Vec<u32>> {
    let (oh, ow) = g.out_hw(h, w)?;
    if h * w > u32::MAX as usize {
        bail!("max_pool2d: a {h}x{w} plane is too large for u32 indices");
    }
    if x.len() < n * c * h * w {
        bail!("max_pool2d: {} values for a {n}x{c}x{h}x{w} input", x.len());
    }
    let cols: Vec<(usize, usize)> =
        (0..ow).map(|ox| Geometry::window(ox, g.kernel.w, g.stride.w, g.padding.w, w)).collect();
    let rows: Vec<(usize, usize)> =
        (0..oh).map(|oy| Geometry::window(oy, g.kernel.h, g.stride.h, g.padding.h, h)).collect();
    let mut idx = vec![0u32; n * c * oh * ow];
    let mut scratch = Vec::new();
    let vals = match values {
        Some(v) => {
            v.resize(n * c * oh * ow, T::zero());
            v
        }
        // Unused: one value per plane keeps the zip below uniform.
        None => {
            scratch.resize(n * c * oh * ow, T::zero());
            &mut scratch
        }
    };
    let out_plane = (oh * ow).max(1);
    let pair = (g.kernel.h, g.kernel.w, g.stride.h, g.stride.w, g.padding.h, g.padding.w)
        == (2, 2, 2, 2, 0, 0);
    idx.par_chunks_mut(out_plane)
        .zip(vals.par_chunks_mut(out_plane))
        .zip(x.par_chunks_exact(h * w))
        .for_each(|((dst, val), plane)| {
            if pair {
                pair_plane(plane, w, ow, dst, val);
                return;
            }
            for (oy, &(y0, y1)) in rows.iter().enumerate() {
                let dst_row = &mut dst[oy * ow..(oy + 1) * ow];
                let val_row = &mut val[oy * ow..(oy + 1) * ow];
                for ((d, o), &(x0, x1)) in dst_row.iter_mut().zip(val_row).zip(&cols) {
                    let mut best_i = y0 * w + x0;
                    let mut best = plane[best_i];
                    // Strict `>` keeps the first of equal maxima; a NaN wins and stays, as in
                    // PyTorch (`v != v` is the NaN test for any float type).
                    #[allow(clippy::eq_op)]
                    for yy in y0..y1 {
                        let line = &plane[yy * w + x0..yy * w + x1];
                        for (xx, &v) in line.iter().enumerate() {
                            if (v > best || v != v) && best == best {
                                best = v;
                                best_i = yy * w + x0 + xx;
                            }
                        }
                    }
                    *d = best_i as u32;
                    *o = best;
                }
            }
        });
    Ok(idx)
}

/// The indices op (u32, shape `[N, C, OH*OW]`) that the backward scatters to. It has no
/// gradient of its own: the indices are piecewise constant in the input.
struct MaxPoolArgmax(Geometry);

impl CustomOp1 for MaxPoolArgmax {
    fn name(&self) -> &'static str {
        "deeprecog-max-pool2d-argmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(layout)?;
        let (oh, ow) = self.0.out_hw(dims.2, dims.3)?;
        let idx = match storage {
            CpuStorage::F32(d) => argmax(contiguous(d, layout)?, dims, &self.0, None)?,
            CpuStorage::F64(d) => argmax(contiguous(d, layout)?, dims, &self.0, None)?,
            CpuStorage::F16(d) => argmax(contiguous(d, layout)?, dims, &self.0, None)?,
            CpuStorage::BF16(d) => argmax(contiguous(d, layout)?, dims, &self.0, None)?,
            other => bail!("max_pool2d: unsupported dtype {:?}", other.dtype()),
        };
        Ok((CpuStorage::U32(idx), Shape::from((dims.0, dims.1, oh * ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (n, c, h, w) = dims4(layout)?;
        let g = self.0.cuda(h, w)?;
        let (_, idx) = crate::cuda::max_pool((storage, layout), g, true)?;
        let Some(idx) = idx else { bail!("max_pool2d: the kernel returned no indices") };
        let shape = Shape::from((n, c, (g.oh * g.ow) as usize));
        Ok((crate::cuda::storage(idx, storage.device()), shape))
    }
}

/// Max pooling forward: the values at the argmax positions; its backward scatters the
/// gradient to those positions with `scatter_add`, itself differentiable w.r.t. the gradient.
/// The forward keeps its indices for the backward (as PyTorch saves them; on CUDA in device
/// memory), so the windows are searched once per step.
#[derive(Debug)]
struct MaxPool {
    geometry: Geometry,
    indices: std::sync::Mutex<Option<Vec<u32>>>,
    #[cfg(feature = "cuda")]
    cuda_indices:
        std::sync::Mutex<Option<candle_core::cuda_backend::cudarc::driver::CudaSlice<u32>>>,
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "deeprecog-max-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(layout)?;
        let (n, c, h, w) = dims;
        let (oh, ow) = self.geometry.out_hw(h, w)?;
        let indices;
        let out = dispatch_float!(storage, layout, "max_pool2d", |s| {
            let mut values = Vec::new();
            indices = argmax(s, dims, &self.geometry, Some(&mut values))?;
            values
        });
        if let Ok(mut slot) = self.indices.lock() {
            *slot = Some(indices);
        }
        Ok((out, Shape::from((n, c, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (n, c, h, w) = dims4(layout)?;
        let g = self.geometry.cuda(h, w)?;
        let (values, indices) = crate::cuda::max_pool((storage, layout), g, true)?;
        if let Ok(mut slot) = self.cuda_indices.lock() {
            *slot = indices;
        }
        let shape = Shape::from((n, c, g.oh as usize, g.ow as usize));
        Ok((crate::cuda::storage(values, storage.device()), shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (n, c, h, w) = arg.dims4()?;
        let (oh, ow) = self.geometry.out_hw(h, w)?;
        #[cfg(feature = "cuda")]
        if let candle_core::Device::Cuda(dev) = arg.device() {
            let saved = self.cuda_indices.lock().ok().and_then(|mut slot| slot.take());
            if let Some(idx) = saved.filter(|i| i.len() == n * c * oh * ow) {
                let idx = Tensor::from_storage(
                    candle_core::Storage::Cuda(crate::cuda::storage(idx, dev)),
                    (n, c, oh * ow),
                    candle_core::op::BackpropOp::none(),
                    false,
                );
                return self.scatter(grad_res, &idx, (n, c, h, w)).map(Some);
            }
        }
        let saved = self.indices.lock().ok().and_then(|slot| slot.clone());
        let idx = match saved {
            Some(v) if v.len() == n * c * oh * ow => {
                Tensor::from_vec(v, (n, c, oh * ow), arg.device())?
            }
            _ => arg.detach().contiguous()?.apply_op1_no_bwd(&MaxPoolArgmax(self.geometry))?,
        };
        self.scatter(grad_res, &idx, (n, c, h, w)).map(Some)
    }
}

impl MaxPool {
    /// The input gradient: `grad_res` added at the maxima `idx` of each plane.
    fn scatter(
        &self,
        grad_res: &Tensor,
        idx: &Tensor,
        (n, c, h, w): (usize, usize, usize, usize),
    ) -> Result<Tensor> {
        let src = grad_res.contiguous()?.reshape(idx.shape())?;
        let own = src.device().is_cpu() || (src.dtype() == DType::F32 && own_kernels(src.device()));
        if !own {
            let zeros = Tensor::zeros((n, c, h * w), grad_res.dtype(), grad_res.device())?;
            return zeros.scatter_add(idx, &src, 2)?.reshape((n, c, h, w));
        }
        src.apply_op2(idx, ScatterPlanes { hw: (h, w), geometry: self.geometry })
    }
}

/// `(grad (N, C, P), indices (N, C, P))` to `(N, C, H, W)`: each gradient added at its index
/// within its plane, parallel over planes (candle's `scatter_add` runs on one thread). Its own
/// gradient is the gather at the same indices.
struct ScatterPlanes {
    hw: (usize, usize),
    /// The pooling window (the CUDA kernel gathers, per input position, from the windows
    /// that cover it).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    geometry: Geometry,
}

fn scatter_planes<T: WithDType>(
    g: &[T],
    idx: &[u32],
    (h, w): (usize, usize),
    p: usize,
) -> Result<Vec<T>> {
    let planes = g.len() / p.max(1);
    if idx.len() != g.len() || idx.iter().any(|&i| i as usize >= h * w) {
        bail!("max_pool2d backward: indices do not fit {h}x{w} planes");
    }
    let mut out = vec![T::zero(); planes * h * w];
    out.par_chunks_mut((h * w).max(1))
        .zip(g.par_chunks(p.max(1)))
        .zip(idx.par_chunks(p.max(1)))
        .for_each(|((dst, g), idx)| {
            for (&v, &i) in g.iter().zip(idx) {
                dst[i as usize] += v;
            }
        });
    Ok(out)
}

impl candle_core::CustomOp2 for ScatterPlanes {
    fn name(&self) -> &'static str {
        "deeprecog-max-pool2d-scatter"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        is: &CpuStorage,
        il: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let &[n, c, p] = gl.shape().dims() else {
            bail!("max_pool2d backward: gradient {:?}", gl.shape())
        };
        let CpuStorage::U32(id) = is else { bail!("max_pool2d backward: u32 indices expected") };
        let idx = contiguous(id, il)?;
        let out =
            dispatch_float!(gs, gl, "max_pool2d backward", |s| scatter_planes(s, idx, self.hw, p)?);
        Ok((out, Shape::from((n, c, self.hw.0, self.hw.1))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        is: &candle_core::CudaStorage,
        il: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let &[n, c, _] = gl.shape().dims() else {
            bail!("max_pool2d backward: gradient {:?}", gl.shape())
        };
        let g = self.geometry.cuda(self.hw.0, self.hw.1)?;
        let out = crate::cuda::max_pool_backward((gs, gl), (is, il), g)?;
        let shape = Shape::from((n, c, self.hw.0, self.hw.1));
        Ok((crate::cuda::storage(out, gs.device()), shape))
    }

    fn bwd(
        &self,
        _grad: &Tensor,
        idx: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = grad_res.dims4()?;
        let gathered = grad_res.contiguous()?.reshape((n, c, h * w))?.gather(idx, 2)?;
        Ok((Some(gathered), None))
    }
}

/// The window maxima alone, for inputs that no gradient will reach: no indices to find, keep
/// or write (NaN wins, as in the tracked op).
struct MaxPoolValues(Geometry);

/// One output row of 2x2 stride-2 maxima from its two input rows (a NaN wins, as in PyTorch).
/// Compiled for AVX-512 / AVX2 and picked at run time.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn pair_max_row<T: WithDType>(row: &mut [T], top: &[T], bottom: &[T]) {
    #[allow(clippy::eq_op)]
    let max = |a: T, b: T| if a > b || a != a { a } else { b };
    for ((o, t), b) in row.iter_mut().zip(top.chunks_exact(2)).zip(bottom.chunks_exact(2)) {
        *o = max(max(t[0], t[1]), max(b[0], b[1]));
    }
}

/// `acc[i] = max(acc[i], row[i])` (a NaN wins). Compiled for AVX-512 / AVX2 and picked at run
/// time.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
fn max_into<T: WithDType>(acc: &mut [T], row: &[T]) {
    #[allow(clippy::eq_op)]
    let max = |a: T, b: T| if a > b || a != a { a } else { b };
    for (a, &r) in acc.iter_mut().zip(row) {
        *a = max(*a, r);
    }
}

/// The window maxima of every plane. A window is separable: each output row first takes the
/// maximum of its window's input rows across the whole width (vector loops), then each output
/// the maximum of its window's columns in that row. ResNet's 3x3 stride-2 pooling over
/// `8x64x112x112` took 5.3 ms window by window, 1.8% of its inference at batch 8
/// (`benches/NOTES.md`, seventeenth pass).
fn max_values<T: WithDType>(
    x: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
    g: &Geometry,
) -> Result<Vec<T>> {
    let (oh, ow) = g.out_hw(h, w)?;
    if x.len() < n * c * h * w {
        bail!("max_pool2d: {} values for a {n}x{c}x{h}x{w} input", x.len());
    }
    #[allow(clippy::eq_op)]
    let max = |a: T, b: T| if a > b || a != a { a } else { b };
    let rows: Vec<(usize, usize)> =
        (0..oh).map(|oy| Geometry::window(oy, g.kernel.h, g.stride.h, g.padding.h, h)).collect();
    let cols: Vec<(usize, usize)> =
        (0..ow).map(|ox| Geometry::window(ox, g.kernel.w, g.stride.w, g.padding.w, w)).collect();
    let pair = (g.kernel.h, g.kernel.w, g.stride.h, g.stride.w, g.padding.h, g.padding.w)
        == (2, 2, 2, 2, 0, 0);
    let mut out = vec![T::zero(); n * c * oh * ow];
    out.par_chunks_mut((oh * ow).max(1)).zip(x.par_chunks_exact((h * w).max(1))).for_each_init(
        || vec![T::zero(); w],
        |column_max, (dst, plane)| {
            for (oy, row) in dst.chunks_exact_mut(ow.max(1)).enumerate() {
                if pair {
                    let top = &plane[2 * oy * w..2 * oy * w + 2 * ow];
                    let bottom = &plane[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
                    pair_max_row(row, top, bottom);
                    continue;
                }
                // Every window holds at least one input row and column (`Geometry::new`
                // keeps the padding under the kernel).
                let (y0, y1) = rows[oy];
                column_max.copy_from_slice(&plane[y0 * w..(y0 + 1) * w]);
                for yy in y0 + 1..y1 {
                    max_into(column_max, &plane[yy * w..(yy + 1) * w]);
                }
                for (o, &(x0, x1)) in row.iter_mut().zip(&cols) {
                    *o = column_max[x0 + 1..x1].iter().fold(column_max[x0], |m, &v| max(m, v));
                }
            }
        },
    );
    Ok(out)
}

impl CustomOp1 for MaxPoolValues {
    fn name(&self) -> &'static str {
        "deeprecog-max-pool2d-values"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(layout)?;
        let (oh, ow) = self.0.out_hw(dims.2, dims.3)?;
        let out = dispatch_float!(storage, layout, "max_pool2d", |s| max_values(s, dims, &self.0)?);
        Ok((out, Shape::from((dims.0, dims.1, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        max_values_cuda(storage, layout, &self.0)
    }
}

/// The window maxima on CUDA.
#[cfg(feature = "cuda")]
fn max_values_cuda(
    storage: &candle_core::CudaStorage,
    layout: &Layout,
    geometry: &Geometry,
) -> Result<(candle_core::CudaStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    let (n, c, h, w) = dims4(layout)?;
    let g = geometry.cuda(h, w)?;
    let (values, _) = crate::cuda::max_pool((storage, layout), g, false)?;
    let shape = Shape::from((n, c, g.oh as usize, g.ow as usize));
    Ok((crate::cuda::storage(values, storage.device()), shape))
}

/// Whether the pooling ops here have kernels on `device`: the CPU always, CUDA when the crate
/// is built with its `cuda` feature. Elsewhere they fail; callers pool another way.
pub fn has_kernels(device: &candle_core::Device) -> bool {
    own_kernels(device)
}

/// Max pooling over an NCHW tensor with PyTorch's semantics (`-inf` padding, first maximum).
/// An input that tracks no gradient (no variable behind it) takes a maxima-only kernel.
pub fn max_pool2d(
    x: &Tensor,
    kernel: impl Into<Size2>,
    stride: impl Into<Size2>,
    padding: impl Into<Size2>,
) -> Result<Tensor> {
    let (kernel, stride, padding) = (kernel.into(), stride.into(), padding.into());
    let g = Geometry::new(kernel, stride, padding)?;
    x.dims4()?;
    if x.device().is_cuda() && x.dtype() != DType::F32 {
        // The CUDA kernels take f32.
        return max_pool2d(&x.to_dtype(DType::F32)?, kernel, stride, padding)?.to_dtype(x.dtype());
    }
    if !x.track_op() && own_kernels(x.device()) {
        return x.contiguous()?.apply_op1_no_bwd(&MaxPoolValues(g));
    }
    x.contiguous()?.apply_op1(MaxPool {
        geometry: g,
        indices: Default::default(),
        #[cfg(feature = "cuda")]
        cuda_indices: Default::default(),
    })
}

fn avg_forward<T: WithDType>(
    x: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
    g: &Geometry,
    count_include_pad: bool,
) -> Result<Vec<T>> {
    let (oh, ow) = g.out_hw(h, w)?;
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in x.chunks_exact(h * w).take(n * c) {
        for oy in 0..oh {
            let (y0, y1) = Geometry::window(oy, g.kernel.h, g.stride.h, g.padding.h, h);
            for ox in 0..ow {
                let (x0, x1) = Geometry::window(ox, g.kernel.w, g.stride.w, g.padding.w, w);
                let mut sum = 0f64;
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        sum += plane.get(yy * w + xx).map_or(0.0, |v| v.to_f64());
                    }
                }
                out.push(T::from_f64(sum / divisor(g, count_include_pad, y0, y1, x0, x1)));
            }
        }
    }
    Ok(out)
}

/// With `ceil_mode = false` a window never reaches past the padding, so the padded count is
/// always the full kernel area.
fn divisor(g: &Geometry, include_pad: bool, y0: usize, y1: usize, x0: usize, x1: usize) -> f64 {
    if include_pad {
        (g.kernel.h * g.kernel.w) as f64
    } else {
        ((y1 - y0) * (x1 - x0)).max(1) as f64
    }
}

/// The adjoint of [`avg_forward`]: spreads each output gradient over its window.
fn avg_backward<T: WithDType>(
    grad: &[T],
    (n, c, h, w): (usize, usize, usize, usize),
    g: &Geometry,
    count_include_pad: bool,
) -> Result<Vec<T>> {
    let (oh, ow) = g.out_hw(h, w)?;
    let mut acc = vec![0f64; n * c * h * w];
    if oh * ow == 0 {
        return Ok(acc.into_iter().map(T::from_f64).collect());
    }
    for (gplane, plane) in grad.chunks_exact(oh * ow).zip(acc.chunks_exact_mut(h * w)) {
        for oy in 0..oh {
            let (y0, y1) = Geometry::window(oy, g.kernel.h, g.stride.h, g.padding.h, h);
            for ox in 0..ow {
                let (x0, x1) = Geometry::window(ox, g.kernel.w, g.stride.w, g.padding.w, w);
                let gv = gplane.get(oy * ow + ox).map_or(0.0, |v| v.to_f64())
                    / divisor(g, count_include_pad, y0, y1, x0, x1);
                for yy in y0..y1 {
                    for xx in x0..x1 {
                        if let Some(a) = plane.get_mut(yy * w + xx) {
                            *a += gv;
                        }
                    }
                }
            }
        }
    }
    Ok(acc.into_iter().map(T::from_f64).collect())
}

/// Average pooling forward; its gradient is [`AvgPoolBackward`].
#[derive(Debug, Clone, Copy)]
struct AvgPool {
    g: Geometry,
    count_include_pad: bool,
}

/// The gradient of [`AvgPool`] given the input's spatial size; its own gradient is [`AvgPool`]
/// again, the two being adjoint linear maps.
#[derive(Debug, Clone, Copy)]
struct AvgPoolBackward {
    g: Geometry,
    count_include_pad: bool,
    in_h: usize,
    in_w: usize,
}

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        "deeprecog-avg-pool2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = dims4(layout)?;
        let (oh, ow) = self.g.out_hw(dims.2, dims.3)?;
        let out = dispatch_float!(storage, layout, "avg_pool2d", |s| avg_forward(
            s,
            dims,
            &self.g,
            self.count_include_pad
        )?);
        Ok((out, Shape::from((dims.0, dims.1, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (n, c, h, w) = dims4(layout)?;
        let g = self.g.cuda(h, w)?;
        let out = crate::cuda::avg_pool((storage, layout), g, self.count_include_pad, false)?;
        let shape = Shape::from((n, c, g.oh as usize, g.ow as usize));
        Ok((crate::cuda::storage(out, storage.device()), shape))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (_, _, h, w) = arg.dims4()?;
        let op = AvgPoolBackward {
            g: self.g,
            count_include_pad: self.count_include_pad,
            in_h: h,
            in_w: w,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1(op)?))
    }
}

impl CustomOp1 for AvgPoolBackward {
    fn name(&self) -> &'static str {
        "deeprecog-avg-pool2d-backward"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, gh, gw) = dims4(layout)?;
        let expect = self.g.out_hw(self.in_h, self.in_w)?;
        if (gh, gw) != expect {
            bail!("avg_pool2d backward: gradient is {gh}x{gw}, expected {expect:?}");
        }
        let dims = (n, c, self.in_h, self.in_w);
        let out = dispatch_float!(storage, layout, "avg_pool2d backward", |s| avg_backward(
            s,
            dims,
            &self.g,
            self.count_include_pad
        )?);
        Ok((out, Shape::from(dims)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (n, c, gh, gw) = dims4(layout)?;
        let g = self.g.cuda(self.in_h, self.in_w)?;
        if (gh, gw) != (g.oh as usize, g.ow as usize) {
            bail!("avg_pool2d backward: gradient is {gh}x{gw}, expected {}x{}", g.oh, g.ow);
        }
        let out = crate::cuda::avg_pool((storage, layout), g, self.count_include_pad, true)?;
        let shape = Shape::from((n, c, self.in_h, self.in_w));
        Ok((crate::cuda::storage(out, storage.device()), shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let op = AvgPool { g: self.g, count_include_pad: self.count_include_pad };
        Ok(Some(grad_res.contiguous()?.apply_op1(op)?))
    }
}

/// Average pooling over an NCHW tensor with PyTorch's semantics (zero padding; the divisor is
/// the kernel area when `count_include_pad`, else the number of real elements in the window).
pub fn avg_pool2d(
    x: &Tensor,
    kernel: impl Into<Size2>,
    stride: impl Into<Size2>,
    padding: impl Into<Size2>,
    count_include_pad: bool,
) -> Result<Tensor> {
    let (kernel, stride, padding) = (kernel.into(), stride.into(), padding.into());
    let g = Geometry::new(kernel, stride, padding)?;
    x.dims4()?;
    if x.device().is_cuda() && x.dtype() != DType::F32 {
        // The CUDA kernels take f32.
        let y = avg_pool2d(&x.to_dtype(DType::F32)?, kernel, stride, padding, count_include_pad)?;
        return y.to_dtype(x.dtype());
    }
    x.contiguous()?.apply_op1(AvgPool { g, count_include_pad })
}

/// [`max_pool2d`] as a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Window size.
    pub kernel: Size2,
    /// Step between windows.
    pub stride: Size2,
    /// Implicit `-inf` border.
    pub padding: Size2,
}

impl MaxPool2d {
    /// A max pool layer (ResNet's stem is `MaxPool2d::new(3, 2, 1)`).
    pub fn new(
        kernel: impl Into<Size2>,
        stride: impl Into<Size2>,
        padding: impl Into<Size2>,
    ) -> Self {
        MaxPool2d { kernel: kernel.into(), stride: stride.into(), padding: padding.into() }
    }
}

impl Module for MaxPool2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        max_pool2d(xs, self.kernel, self.stride, self.padding)
    }
}

/// [`avg_pool2d`] as a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    /// Window size.
    pub kernel: Size2,
    /// Step between windows.
    pub stride: Size2,
    /// Implicit zero border.
    pub padding: Size2,
    /// Whether padded positions count in the divisor (PyTorch's default is `true`).
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// An average pool layer with PyTorch's default `count_include_pad = true`.
    pub fn new(
        kernel: impl Into<Size2>,
        stride: impl Into<Size2>,
        padding: impl Into<Size2>,
    ) -> Self {
        AvgPool2d {
            kernel: kernel.into(),
            stride: stride.into(),
            padding: padding.into(),
            count_include_pad: true,
        }
    }
}

impl Module for AvgPool2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        avg_pool2d(xs, self.kernel, self.stride, self.padding, self.count_include_pad)
    }
}
