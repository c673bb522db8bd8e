//! CUDA paths of the crate's ops (feature `cuda`; the convolutions need `cudnn` too).
//!
//! The element-wise, reduction and pooling kernels are the project's own (`kernels.cu`,
//! compiled to PTX by the build script and loaded once per device); each mirrors a CPU kernel
//! of the crate: same formulas, sums accumulated in f64 where the CPU's are, reductions in a
//! fixed order (no atomics), so a run is repeatable. Convolutions and their two gradients go
//! through cuDNN ([`conv`]), with the algorithm picked once per shape and cached.
//!
//! Operands are f32 and contiguous (the ops make them so before dispatch); anything else is an
//! error that names the op, never a silent copy to the host.
#![allow(unsafe_code)]

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{bail, Layout, Result, Shape};

use crate::conv::Activation;

#[cfg(feature = "cudnn")]
pub(crate) mod conv;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/deeprecog_nn_kernels.ptx"));
const MODULE: &str = "deeprecog_nn_kernels";

/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;
/// Threads per block of the per-channel reductions (a power of two, for `block_sum`).
const REDUCE_THREADS: u32 = 512;
/// Most blocks of an element-wise launch; the kernels stride over the rest.
const MAX_BLOCKS: usize = 1 << 16;

/// The kernel's code for `act` (see `kernels.cu`).
fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Identity => 0,
        Activation::Relu => 1,
        Activation::Relu6 => 2,
    }
}

fn elementwise(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

fn per_channel(c: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (c.max(1) as u32, 1, 1),
        block_dim: (REDUCE_THREADS, 1, 1),
        shared_mem_bytes: REDUCE_THREADS * 8,
    }
}

/// Kernel `name` of the crate's module, loaded on `dev` (once per device).
fn kernel(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(dev.get_or_load_custom_func(name, MODULE, PTX)?.into_cuda_function())
}

/// Launches a kernel whose arguments `args` holds.
fn run(mut args: LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: every caller pushes the arguments `kernels.cu` declares for the kernel, in order,
    // with device buffers at least as long as the element counts it passes.
    unsafe { args.launch(cfg) }.w()?;
    Ok(())
}

/// The f32 values of a contiguous operand.
pub(crate) fn f32_view<'a>(s: &'a CudaStorage, l: &Layout, op: &str) -> Result<CudaView<'a, f32>> {
    view::<f32>(s, l, op)
}

/// The `T` values of a contiguous operand.
pub(crate) fn view<'a, T: candle_core::cuda_backend::CudaDType + candle_core::WithDType>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &str,
) -> Result<CudaView<'a, T>> {
    let slice = s.as_cuda_slice::<T>().map_err(|_| {
        candle_core::Error::Msg(format!(
            "{op}: the CUDA kernel takes {:?}, got {:?}",
            T::DTYPE,
            s.dtype()
        ))
    })?;
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op}: the CUDA kernel takes a contiguous operand, got strides {:?}", l.stride());
    };
    Ok(slice.slice(a..b))
}

/// A new device buffer of `len` values, every one of which the caller's kernel writes.
fn output<T: DeviceRepr>(dev: &CudaDevice, len: usize) -> Result<CudaSlice<T>> {
    // SAFETY: the kernel launched next writes all `len` values before anything reads them.
    unsafe { dev.alloc::<T>(len.max(1)) }
}

fn wrap(out: CudaSlice<f32>, dev: &CudaDevice, shape: impl Into<Shape>) -> (CudaStorage, Shape) {
    (CudaStorage::wrap_cuda_slice(out, dev.clone()), shape.into())
}

/// `act(x + bias[channel])` (the bias optional) of an `(N, C, ...)` tensor.
pub(crate) fn bias_act(
    (xs, xl): (&CudaStorage, &Layout),
    bias: Option<(&CudaStorage, &Layout)>,
    act: Activation,
) -> Result<(CudaStorage, Shape)> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "channel bias")?;
    let (_, c, sp) = crate::cpu::ncs(xl)?;
    let b = match bias {
        Some((bs, bl)) => {
            if bl.shape().elem_count() != c {
                bail!("channel bias: {:?} for {c} channels", bl.dims());
            }
            Some(f32_view(bs, bl, "channel bias")?)
        }
        None => None,
    };
    let n = xl.shape().elem_count();
    let out = output::<f32>(dev, n)?;
    let code = act_code(act);
    let null = 0u64;
    let (func, stream) = (kernel(dev, "bias_act_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&out);
    match &b {
        Some(b) => a.arg(b),
        None => a.arg(&null),
    };
    a.arg(&code).arg(&c).arg(&sp).arg(&n);
    run(a, elementwise(n))?;
    Ok(wrap(out, dev, xl.shape().clone()))
}

/// An output `y` of `(N, C, ...)` given as device memory, with `act` and the bias applied in
/// place (after a cuDNN convolution wrote it).
pub(crate) fn bias_act_in_place(
    dev: &CudaDevice,
    y: &mut CudaSlice<f32>,
    bias: Option<CudaView<'_, f32>>,
    act: Activation,
    (c, sp): (usize, usize),
) -> Result<()> {
    if bias.is_none() && act == Activation::Identity {
        return Ok(());
    }
    let n = y.len();
    let code = act_code(act);
    let null = 0u64;
    let (func, stream) = (kernel(dev, "bias_act_in_place_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(y);
    match &bias {
        Some(b) => a.arg(b),
        None => a.arg(&null),
    };
    a.arg(&code).arg(&c).arg(&sp).arg(&n);
    run(a, elementwise(n))
}

/// The gradient through a clipping activation, from its output.
pub(crate) fn clip_mask(
    (gs, gl): (&CudaStorage, &Layout),
    (ys, yl): (&CudaStorage, &Layout),
    max: f32,
) -> Result<(CudaStorage, Shape)> {
    let dev = gs.device();
    let (g, y) = (f32_view(gs, gl, "clip mask")?, f32_view(ys, yl, "clip mask")?);
    let n = gl.shape().elem_count();
    if yl.shape().elem_count() != n {
        bail!("clip mask: gradient {:?} for output {:?}", gl.shape(), yl.shape());
    }
    let code = if max.is_finite() { act_code(Activation::Relu6) } else { 1 };
    if max.is_finite() && max != 6.0 {
        bail!("clip mask: the CUDA kernel clips at 6 or infinity, not {max}");
    }
    let out = output::<f32>(dev, n)?;
    let (func, stream) = (kernel(dev, "clip_mask_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&g).arg(&y).arg(&out).arg(&code).arg(&n);
    run(a, elementwise(n))?;
    Ok(wrap(out, dev, gl.shape().clone()))
}

/// Per-channel sums of an `(N, C, ...)` tensor, `(C)`.
pub(crate) fn channel_sum(xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "channel sum")?;
    let (n, c, sp) = crate::cpu::ncs(xl)?;
    let out = output::<f32>(dev, c)?;
    let (func, stream) = (kernel(dev, "channel_sum_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&out).arg(&n).arg(&c).arg(&sp);
    run(a, per_channel(c))?;
    Ok(wrap(out, dev, c))
}

/// BatchNorm's batch statistics, `(2, C)`: mean and biased variance.
pub(crate) fn bn_stats(xs: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "batch norm")?;
    let (n, c, sp) = crate::cpu::ncs(xl)?;
    let out = output::<f32>(dev, 2 * c)?;
    let (func, stream) = (kernel(dev, "bn_stats_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&out).arg(&n).arg(&c).arg(&sp);
    run(a, per_channel(c))?;
    Ok(wrap(out, dev, (2, c)))
}

/// BatchNorm's training output from `stats (2, C)` and `affine = [weight, bias] (2, C)`.
pub(crate) fn bn_normalize(
    (xs, xl): (&CudaStorage, &Layout),
    (ss, sl): (&CudaStorage, &Layout),
    (as_, al): (&CudaStorage, &Layout),
    eps: f64,
    act: Activation,
) -> Result<(CudaStorage, Shape)> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "batch norm")?;
    let stats = f32_view(ss, sl, "batch norm")?;
    let affine = f32_view(as_, al, "batch norm")?;
    let (_, c, sp) = crate::cpu::ncs(xl)?;
    if sl.shape().elem_count() != 2 * c || al.shape().elem_count() != 2 * c {
        bail!("batch norm: statistics {:?} for {c} channels", sl.dims());
    }
    let n = xl.shape().elem_count();
    let out = output::<f32>(dev, n)?;
    let code = act_code(act);
    let (func, stream) = (kernel(dev, "bn_normalize_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&stats).arg(&affine).arg(&out).arg(&eps).arg(&code);
    a.arg(&c).arg(&sp).arg(&n);
    run(a, elementwise(n))?;
    Ok(wrap(out, dev, xl.shape().clone()))
}

/// BatchNorm backward's per-channel sums `(2, C)` from the gradient through the activation
/// `g` and the forward statistics `stats (2, C)`, all on the device.
pub(crate) fn bn_grad_sums_dev(
    (xs, xl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    (ss, sl): (&CudaStorage, &Layout),
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "batch norm backward")?;
    let g = f32_view(gs, gl, "batch norm backward")?;
    let stats = f32_view(ss, sl, "batch norm backward")?;
    let (n, c, sp) = crate::cpu::ncs(xl)?;
    if gl.shape() != xl.shape() || sl.shape().elem_count() != 2 * c {
        bail!("batch norm backward: gradient {:?}, statistics {:?}", gl.dims(), sl.dims());
    }
    let out = output::<f32>(dev, 2 * c)?;
    let (func, stream) = (kernel(dev, "bn_grad_sums_dev_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&g).arg(&stats).arg(&out).arg(&eps).arg(&n).arg(&c).arg(&sp);
    run(a, per_channel(c))?;
    Ok(wrap(out, dev, (2, c)))
}

/// BatchNorm's input gradient from `g` (through the activation) and `consts (6, C)` = `[mean,
/// var, weight, bias, sum(g * xhat), sum(g)]`, all on the device.
pub(crate) fn bn_grad_input_dev(
    (xs, xl): (&CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    (ks, kl): (&CudaStorage, &Layout),
    eps: f64,
) -> Result<(CudaStorage, Shape)> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "batch norm backward")?;
    let g = f32_view(gs, gl, "batch norm backward")?;
    let consts = f32_view(ks, kl, "batch norm backward")?;
    let (_, c, sp) = crate::cpu::ncs(xl)?;
    if gl.shape() != xl.shape() || kl.shape().elem_count() != 6 * c {
        bail!("batch norm backward: gradient {:?}, constants {:?}", gl.dims(), kl.dims());
    }
    let n = xl.shape().elem_count();
    let m = (n / c.max(1)) as f32;
    let out = output::<f32>(dev, n)?;
    let (func, stream) = (kernel(dev, "bn_grad_input_dev_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&g).arg(&consts).arg(&out).arg(&eps).arg(&m).arg(&c).arg(&sp).arg(&n);
    run(a, elementwise(n))?;
    Ok(wrap(out, dev, xl.shape().clone()))
}

/// `act(x * scale[channel] + shift[channel])`.
pub(crate) fn channel_affine(
    (xs, xl): (&CudaStorage, &Layout),
    (ss, sl): (&CudaStorage, &Layout),
    (ts, tl): (&CudaStorage, &Layout),
    act: Activation,
) -> Result<(CudaStorage, Shape)> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "batch norm")?;
    let scale = f32_view(ss, sl, "batch norm")?;
    let shift = f32_view(ts, tl, "batch norm")?;
    let (_, c, sp) = crate::cpu::ncs(xl)?;
    if sl.shape().elem_count() != c || tl.shape().elem_count() != c {
        bail!("batch norm: {:?} scales for {c} channels", sl.dims());
    }
    let n = xl.shape().elem_count();
    let out = output::<f32>(dev, n)?;
    let code = act_code(act);
    let (func, stream) = (kernel(dev, "channel_affine_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&scale).arg(&shift).arg(&out).arg(&code).arg(&c).arg(&sp).arg(&n);
    run(a, elementwise(n))?;
    Ok(wrap(out, dev, xl.shape().clone()))
}

/// A pooling window and the plane sizes around it, as the kernels take it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolGeometry {
    pub h: i32,
    pub w: i32,
    pub oh: i32,
    pub ow: i32,
    pub kh: i32,
    pub kw: i32,
    pub sh: i32,
    pub sw: i32,
    pub ph: i32,
    pub pw: i32,
}

// SAFETY: a `repr(C)` struct of ten `i32`, the layout of `struct Pool` in `kernels.cu`.
unsafe impl DeviceRepr for PoolGeometry {}

impl PoolGeometry {
    fn planes(&self, len: usize, per: i32, op: &str) -> Result<usize> {
        let per = per.max(0) as usize;
        if per == 0 || !len.is_multiple_of(per) {
            bail!("{op}: {len} values are not whole {}x{} planes", self.h, self.w);
        }
        Ok(len / per)
    }
}

/// Max pooling: the window maxima and, with `indices`, each maximum's flat index in its plane.
pub(crate) fn max_pool(
    (xs, xl): (&CudaStorage, &Layout),
    p: PoolGeometry,
    indices: bool,
) -> Result<(CudaSlice<f32>, Option<CudaSlice<u32>>)> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "max_pool2d")?;
    let planes = p.planes(xl.shape().elem_count(), p.h * p.w, "max_pool2d")?;
    let n = planes * (p.oh * p.ow) as usize;
    let out = output::<f32>(dev, n)?;
    let idx = if indices { Some(output::<u32>(dev, n)?) } else { None };
    let null = 0u64;
    let (func, stream) = (kernel(dev, "max_pool_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&out);
    match &idx {
        Some(i) => a.arg(i),
        None => a.arg(&null),
    };
    a.arg(&p).arg(&planes);
    run(a, elementwise(n))?;
    Ok((out, idx))
}

/// Max pooling's input gradient from the output gradient and the maxima's indices.
pub(crate) fn max_pool_backward(
    (gs, gl): (&CudaStorage, &Layout),
    (is, il): (&CudaStorage, &Layout),
    p: PoolGeometry,
) -> Result<CudaSlice<f32>> {
    let dev = gs.device();
    let g = f32_view(gs, gl, "max_pool2d backward")?;
    let Some((a, b)) = il.contiguous_offsets() else {
        bail!("max_pool2d backward: indices must be contiguous");
    };
    let idx = is.as_cuda_slice::<u32>()?.slice(a..b);
    let planes = p.planes(gl.shape().elem_count(), p.oh * p.ow, "max_pool2d backward")?;
    if il.shape().elem_count() != gl.shape().elem_count() {
        bail!("max_pool2d backward: {:?} indices for gradient {:?}", il.dims(), gl.dims());
    }
    let n = planes * (p.h * p.w) as usize;
    let out = output::<f32>(dev, n)?;
    let (func, stream) = (kernel(dev, "max_pool_backward_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&g).arg(&idx).arg(&out).arg(&p).arg(&planes);
    run(a, elementwise(n))?;
    Ok(out)
}

/// Average pooling, or (with `backward`) its adjoint from the output gradient.
pub(crate) fn avg_pool(
    (xs, xl): (&CudaStorage, &Layout),
    p: PoolGeometry,
    include_pad: bool,
    backward: bool,
) -> Result<CudaSlice<f32>> {
    let dev = xs.device();
    let x = f32_view(xs, xl, "avg_pool2d")?;
    let (src, dst) = if backward { (p.oh * p.ow, p.h * p.w) } else { (p.h * p.w, p.oh * p.ow) };
    let planes = p.planes(xl.shape().elem_count(), src, "avg_pool2d")?;
    let n = planes * dst.max(0) as usize;
    let out = output::<f32>(dev, n)?;
    let pad = i32::from(include_pad);
    let name = if backward { "avg_pool_backward_f32" } else { "avg_pool_f32" };
    let (func, stream) = (kernel(dev, name)?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&x).arg(&out).arg(&p).arg(&pad).arg(&planes);
    run(a, elementwise(n))?;
    Ok(out)
}

/// Wraps a kernel's output as candle storage on `dev`.
pub(crate) fn storage<T: candle_core::cuda_backend::CudaDType>(
    out: CudaSlice<T>,
    dev: &CudaDevice,
) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(out, dev.clone())
}

/// [`crate::preprocess::crop_flip_normalize`] on CUDA (arguments checked by it): one kernel
/// over the batch; the crops and constants go up as four small copies.
pub(crate) fn preprocess(
    (s, l): (&CudaStorage, &Layout),
    crops: &[crate::preprocess::Crop],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    norm: crate::preprocess::Normalization,
) -> Result<(CudaStorage, Shape)> {
    let dev = s.device();
    let int = |v: usize| {
        i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("preprocess: {v} too large")))
    };
    let (hi, wi, ohi, owi) = (int(h)?, int(w)?, int(oh)?, int(ow)?);
    let top: Vec<u32> = crops.iter().map(|k| k.top as u32).collect();
    let left: Vec<u32> = crops.iter().map(|k| k.left as u32).collect();
    let flip: Vec<u8> = crops.iter().map(|k| u8::from(k.flip)).collect();
    let inv = norm.std.map(|s| 1.0 / s);
    let consts: Vec<f32> = norm.mean.iter().chain(&inv).copied().collect();
    let (top, left) = (dev.clone_htod(&top)?, dev.clone_htod(&left)?);
    let (flip, consts) = (dev.clone_htod(&flip)?, dev.clone_htod(&consts)?);
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("preprocess: the images must be contiguous");
    };
    let src = s.as_cuda_slice::<u8>()?.slice(a..b);
    let batch = crops.len();
    let n = batch * 3 * oh * ow;
    let out = output::<f32>(dev, n)?;
    let (func, stream) = (kernel(dev, "preprocess_u8_f32")?, dev.cuda_stream());
    let mut args = stream.launch_builder(&func);
    args.arg(&src).arg(&out).arg(&top).arg(&left).arg(&flip).arg(&consts);
    args.arg(&hi).arg(&wi).arg(&ohi).arg(&owi).arg(&batch);
    run(args, elementwise(n))?;
    Ok(wrap(out, dev, (batch, 3, oh, ow)))
}

/// Adam's per-step constants, as `struct AdamConsts` in `kernels.cu` takes them.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamConsts {
    decay: f32,
    l2: f32,
    beta1: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
    step_size: f32,
    use_decay: i32,
    use_l2: i32,
}

// SAFETY: a `repr(C)` struct of nine `f32` and two `i32`, the layout of `AdamConsts` in
// `kernels.cu`.
unsafe impl DeviceRepr for AdamConsts {}

impl From<crate::simd::AdamStep> for AdamConsts {
    fn from(k: crate::simd::AdamStep) -> Self {
        AdamConsts {
            decay: k.decay.unwrap_or(1.0),
            l2: k.l2.unwrap_or(0.0),
            beta1: k.beta1,
            one_minus_beta1: k.one_minus_beta1,
            beta2: k.beta2,
            one_minus_beta2: k.one_minus_beta2,
            inv_sqrt_bc2: k.inv_sqrt_bc2,
            eps: k.eps,
            step_size: k.step_size,
            use_decay: i32::from(k.decay.is_some()),
            use_l2: i32::from(k.l2.is_some()),
        }
    }
}

/// The f32 values of a contiguous operand, writable.
fn f32_view_mut<'a>(
    s: &'a mut CudaStorage,
    l: &Layout,
    op: &str,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaViewMut<'a, f32>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        bail!("{op}: the CUDA kernel takes a contiguous operand, got strides {:?}", l.stride());
    };
    Ok(s.as_cuda_slice_mut::<f32>()?.slice_mut(a..b))
}

/// Adam's first (or, with `second`, second) moment updated in place from the gradient `g`
/// and the parameter `theta` (for the L2 term).
pub(crate) fn adam_moment(
    (ms, ml): (&mut CudaStorage, &Layout),
    (gs, gl): (&CudaStorage, &Layout),
    (ts, tl): (&CudaStorage, &Layout),
    k: AdamConsts,
    second: bool,
) -> Result<()> {
    let dev = ms.device().clone();
    let n = ml.shape().elem_count();
    if gl.shape().elem_count() != n || tl.shape().elem_count() != n {
        bail!("adam: moment {:?}, gradient {:?}, parameter {:?}", ml.dims(), gl.dims(), tl.dims());
    }
    let g = f32_view(gs, gl, "adam")?;
    let theta = f32_view(ts, tl, "adam")?;
    let mut m = f32_view_mut(ms, ml, "adam")?;
    let second = i32::from(second);
    let (func, stream) = (kernel(&dev, "adam_moment_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&mut m).arg(&g).arg(&theta).arg(&k).arg(&second).arg(&n);
    run(a, elementwise(n))
}

/// The parameter `theta` stepped in place from the updated moments.
pub(crate) fn adam_update(
    (ts, tl): (&mut CudaStorage, &Layout),
    (ms, ml): (&CudaStorage, &Layout),
    (vs, vl): (&CudaStorage, &Layout),
    k: AdamConsts,
) -> Result<()> {
    let dev = ts.device().clone();
    let n = tl.shape().elem_count();
    if ml.shape().elem_count() != n || vl.shape().elem_count() != n {
        bail!("adam: parameter {:?}, moments {:?} and {:?}", tl.dims(), ml.dims(), vl.dims());
    }
    let m = f32_view(ms, ml, "adam")?;
    let v = f32_view(vs, vl, "adam")?;
    let mut theta = f32_view_mut(ts, tl, "adam")?;
    let (func, stream) = (kernel(&dev, "adam_update_f32")?, dev.cuda_stream());
    let mut a = stream.launch_builder(&func);
    a.arg(&mut theta).arg(&m).arg(&v).arg(&k).arg(&n);
    run(a, elementwise(n))
}
