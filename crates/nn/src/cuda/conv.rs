//! Convolutions on CUDA through cuDNN: the forward pass and both gradients of a grouped 2-D
//! convolution (depthwise included: `groups = C`), NCHW f32. Each (pass, shapes, window)
//! picks its algorithm once from cuDNN's heuristics and keeps it for the process.
//!
//! Like PyTorch (`torch.backends.cudnn.allow_tf32`, on by default), f32 convolutions may run
//! on TF32 tensor cores; [`set_allow_tf32`] turns that off for full f32 products.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use candle_core::cuda_backend::cudarc::cudnn::safe::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, CudnnDataType,
    FilterDescriptor, TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::{DType, Result, WithDType};

use crate::conv::Conv2dParams;

static ALLOW_TF32: AtomicBool = AtomicBool::new(true);
static AUTOCAST_BF16: AtomicBool = AtomicBool::new(false);

/// Mixed precision for CUDA convolutions (off by default): f32 convolutions cast their input
/// and weight to bf16, run cuDNN's bf16 product (f32 accumulation, tensor cores) and cast the
/// result back to f32 before the bias and activation, so parameters stay f32 (the master
/// copy the optimizer updates), BatchNorm and the loss run in f32, and gradients flow back
/// through the casts. Process-wide, like PyTorch's `autocast` region around a step.
pub fn set_autocast_bf16(enabled: bool) {
    AUTOCAST_BF16.store(enabled, Ordering::Relaxed);
}

/// See [`set_autocast_bf16`].
pub fn autocast_bf16() -> bool {
    AUTOCAST_BF16.load(Ordering::Relaxed)
}

/// What the cuDNN calls here take: f32 or bf16 values (f32 scaling and accumulation).
pub(crate) trait Element:
    CudnnDataType + DeviceRepr + ValidAsZeroBits + WithDType + candle_core::cuda_backend::CudaDType
{
}

impl Element for f32 {}
impl Element for half::bf16 {}

/// Whether cuDNN may run f32 convolutions on TF32 tensor cores (default: yes, as PyTorch).
/// Process-wide; read when a convolution's algorithm is picked and at every launch.
pub fn set_allow_tf32(allow: bool) {
    ALLOW_TF32.store(allow, Ordering::Relaxed);
}

/// See [`set_allow_tf32`].
pub fn allow_tf32() -> bool {
    ALLOW_TF32.load(Ordering::Relaxed)
}

/// Which product of the convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Pass {
    /// `y = conv(x, w)`.
    Forward,
    /// `dx` from `dy` and `w`.
    Input,
    /// `dw` from `x` and `dy`.
    Weight,
}

/// The shapes of one convolution: input `(N, C, H, W)`, weight `(O, C/G, kh, kw)`, output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Shapes {
    pub x: [usize; 4],
    pub w: [usize; 4],
    pub y: [usize; 4],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    device: DeviceId,
    pass: Pass,
    shapes: Shapes,
    window: (usize, usize, usize, usize),
    tf32: bool,
    dtype: DType,
}

#[derive(Debug, Clone, Copy)]
enum Algo {
    Forward(sys::cudnnConvolutionFwdAlgo_t),
    Input(sys::cudnnConvolutionBwdDataAlgo_t),
    Weight(sys::cudnnConvolutionBwdFilterAlgo_t),
}

static ALGOS: LazyLock<Mutex<HashMap<Key, Algo>>> = LazyLock::new(Default::default);

thread_local! {
    // cuDNN handles are neither Send nor Sync: one per thread and device.
    static HANDLES: RefCell<HashMap<DeviceId, Arc<Cudnn>>> = RefCell::new(HashMap::new());
}

fn handle(dev: &CudaDevice) -> Result<Arc<Cudnn>> {
    HANDLES.with(|h| {
        if let Some(c) = h.borrow().get(&dev.id()) {
            return Ok(c.clone());
        }
        let c = Cudnn::new(dev.cuda_stream())?;
        h.borrow_mut().insert(dev.id(), c.clone());
        Ok(c)
    })
}

fn dims(d: [usize; 4]) -> [i32; 4] {
    d.map(|v| v as i32)
}

/// The descriptors of one convolution over `T` values, computed in f32.
struct Descriptors<T> {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
}

fn descriptors<T: Element>(
    cudnn: &Arc<Cudnn>,
    s: &Shapes,
    p: Conv2dParams,
) -> Result<Descriptors<T>> {
    let (pad, stride, dil) = (p.padding as i32, p.stride as i32, p.dilation as i32);
    let mut conv = cudnn.create_conv2d::<f32>(
        [pad, pad],
        [stride, stride],
        [dil, dil],
        sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
    )?;
    conv.set_group_count(p.groups as i32)?;
    let math = if allow_tf32() {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
    } else {
        sys::cudnnMathType_t::CUDNN_FMA_MATH
    };
    conv.set_math_type(math)?;
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    Ok(Descriptors {
        conv,
        x: cudnn.create_4d_tensor::<T>(nchw, dims(s.x))?,
        w: cudnn.create_4d_filter::<T>(nchw, dims(s.w))?,
        y: cudnn.create_4d_tensor::<T>(nchw, dims(s.y))?,
    })
}

fn key<T: Element>(dev: &CudaDevice, pass: Pass, shapes: Shapes, p: Conv2dParams) -> Key {
    Key {
        dtype: T::DTYPE,
        device: dev.id(),
        pass,
        shapes,
        window: (p.stride, p.padding, p.dilation, p.groups),
        tf32: allow_tf32(),
    }
}

/// The algorithm kept for `k`, else `pick`'s, kept from then on. `into` / `from` map the pass's
/// algorithm type to and from [`Algo`].
fn algorithm<A: Copy>(
    k: Key,
    pick: impl FnOnce() -> Result<A>,
    into: fn(A) -> Algo,
    from: fn(Algo) -> Option<A>,
) -> Result<A> {
    if let Some(a) = ALGOS.lock().ok().and_then(|m| m.get(&k).copied()).and_then(from) {
        return Ok(a);
    }
    let a = pick()?;
    if let Ok(mut m) = ALGOS.lock() {
        m.insert(k, into(a));
    }
    Ok(a)
}

/// A zeroed workspace of `bytes` (none for zero).
fn workspace(dev: &CudaDevice, bytes: usize) -> Result<Option<CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    Ok(Some(dev.alloc_zeros::<u8>(bytes)?))
}

fn len(d: [usize; 4]) -> usize {
    d.iter().product()
}

/// `y = conv(x, w)` into a new `(N, O, OH, OW)` buffer.
fn forward<T: Element>(
    dev: &CudaDevice,
    x: &CudaView<'_, T>,
    w: &CudaView<'_, T>,
    s: Shapes,
    p: Conv2dParams,
) -> Result<CudaSlice<T>> {
    let cudnn = handle(dev)?;
    let d = descriptors::<T>(&cudnn, &s, p)?;
    let op = ConvForward { conv: &d.conv, x: &d.x, w: &d.w, y: &d.y };
    let from = |a| if let Algo::Forward(a) = a { Some(a) } else { None };
    let k = key::<T>(dev, Pass::Forward, s, p);
    let algo = algorithm(k, || Ok(op.pick_algorithm()?), Algo::Forward, from)?;
    let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
    let mut y = dev.alloc_zeros::<T>(len(s.y).max(1))?;
    // SAFETY: `x`, `w` and `y` hold the f32 NCHW values the descriptors describe (the caller
    // checked the shapes), the workspace is as large as cuDNN asked for.
    unsafe { op.launch(algo, ws.as_mut(), (T::from_f64(1.0), T::from_f64(0.0)), x, w, &mut y) }?;
    Ok(y)
}

/// The input gradient `dx (N, C, H, W)` from `dy` and `w`.
fn input_grad<T: Element>(
    dev: &CudaDevice,
    dy: &CudaView<'_, T>,
    w: &CudaView<'_, T>,
    s: Shapes,
    p: Conv2dParams,
) -> Result<CudaSlice<T>> {
    let cudnn = handle(dev)?;
    let d = descriptors::<T>(&cudnn, &s, p)?;
    let op = ConvBackwardData { conv: &d.conv, dx: &d.x, w: &d.w, dy: &d.y };
    let from = |a| if let Algo::Input(a) = a { Some(a) } else { None };
    let k = key::<T>(dev, Pass::Input, s, p);
    let algo = algorithm(k, || Ok(op.pick_algorithm()?), Algo::Input, from)?;
    let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
    let mut dx = dev.alloc_zeros::<T>(len(s.x).max(1))?;
    // SAFETY: as in `forward`, with `dy` the output's shape and `dx` the input's.
    unsafe { op.launch(algo, ws.as_mut(), (T::from_f64(1.0), T::from_f64(0.0)), &mut dx, w, dy) }?;
    Ok(dx)
}

/// The weight gradient `dw (O, C/G, kh, kw)` from `x` and `dy`.
fn weight_grad<T: Element>(
    dev: &CudaDevice,
    x: &CudaView<'_, T>,
    dy: &CudaView<'_, T>,
    s: Shapes,
    p: Conv2dParams,
) -> Result<CudaSlice<T>> {
    let cudnn = handle(dev)?;
    let d = descriptors::<T>(&cudnn, &s, p)?;
    let op = ConvBackwardFilter { conv: &d.conv, x: &d.x, dw: &d.w, dy: &d.y };
    let from = |a| if let Algo::Weight(a) = a { Some(a) } else { None };
    let k = key::<T>(dev, Pass::Weight, s, p);
    let algo = algorithm(k, || Ok(op.pick_algorithm()?), Algo::Weight, from)?;
    let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
    let mut dw = dev.alloc_zeros::<T>(len(s.w).max(1))?;
    // SAFETY: as in `forward`, with `dw` the weight's shape.
    unsafe { op.launch(algo, ws.as_mut(), (T::from_f64(1.0), T::from_f64(0.0)), x, &mut dw, dy) }?;
    Ok(dw)
}

/// `pass` of the convolution over operands `a`, `b` (`(x, w)` forward, `(dy, w)` input
/// gradient, `(x, dy)` weight gradient), f32 or bf16 (both the same), into new storage.
pub(crate) fn product(
    pass: Pass,
    (a, al): (&candle_core::CudaStorage, &candle_core::Layout),
    (b, bl): (&candle_core::CudaStorage, &candle_core::Layout),
    s: Shapes,
    p: Conv2dParams,
) -> Result<candle_core::CudaStorage> {
    use candle_core::backend::BackendStorage;
    fn run<T: Element>(
        pass: Pass,
        (a, al): (&candle_core::CudaStorage, &candle_core::Layout),
        (b, bl): (&candle_core::CudaStorage, &candle_core::Layout),
        s: Shapes,
        p: Conv2dParams,
    ) -> Result<candle_core::CudaStorage> {
        let dev = a.device();
        let (av, bv) = (super::view::<T>(a, al, "conv2d")?, super::view::<T>(b, bl, "conv2d")?);
        let out = match pass {
            Pass::Forward => forward(dev, &av, &bv, s, p)?,
            Pass::Input => input_grad(dev, &av, &bv, s, p)?,
            Pass::Weight => weight_grad(dev, &av, &bv, s, p)?,
        };
        Ok(super::storage(out, dev))
    }
    if a.dtype() != b.dtype() {
        candle_core::bail!("conv2d: operands of {:?} and {:?}", a.dtype(), b.dtype());
    }
    match a.dtype() {
        DType::F32 => run::<f32>(pass, (a, al), (b, bl), s, p),
        DType::BF16 => run::<half::bf16>(pass, (a, al), (b, bl), s, p),
        d => candle_core::bail!("conv2d: cuDNN path for f32 and bf16, got {d:?}"),
    }
}
