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
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, FilterDescriptor,
    TensorDescriptor,
};
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::{CudaDevice, DeviceId};
use candle_core::Result;

use crate::conv::Conv2dParams;

static ALLOW_TF32: AtomicBool = AtomicBool::new(true);

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

/// The descriptors of one convolution.
struct Descriptors {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

fn descriptors(cudnn: &Arc<Cudnn>, s: &Shapes, p: Conv2dParams) -> Result<Descriptors> {
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
        x: cudnn.create_4d_tensor::<f32>(nchw, dims(s.x))?,
        w: cudnn.create_4d_filter::<f32>(nchw, dims(s.w))?,
        y: cudnn.create_4d_tensor::<f32>(nchw, dims(s.y))?,
    })
}

fn key(dev: &CudaDevice, pass: Pass, shapes: Shapes, p: Conv2dParams) -> Key {
    Key {
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
pub(crate) fn forward(
    dev: &CudaDevice,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    s: Shapes,
    p: Conv2dParams,
) -> Result<CudaSlice<f32>> {
    let cudnn = handle(dev)?;
    let d = descriptors(&cudnn, &s, p)?;
    let op = ConvForward { conv: &d.conv, x: &d.x, w: &d.w, y: &d.y };
    let from = |a| if let Algo::Forward(a) = a { Some(a) } else { None };
    let k = key(dev, Pass::Forward, s, p);
    let algo = algorithm(k, || Ok(op.pick_algorithm()?), Algo::Forward, from)?;
    let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
    let mut y = dev.alloc_zeros::<f32>(len(s.y).max(1))?;
    // SAFETY: `x`, `w` and `y` hold the f32 NCHW values the descriptors describe (the caller
    // checked the shapes), the workspace is as large as cuDNN asked for.
    unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), x, w, &mut y) }?;
    Ok(y)
}

/// The input gradient `dx (N, C, H, W)` from `dy` and `w`.
pub(crate) fn input_grad(
    dev: &CudaDevice,
    dy: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    s: Shapes,
    p: Conv2dParams,
) -> Result<CudaSlice<f32>> {
    let cudnn = handle(dev)?;
    let d = descriptors(&cudnn, &s, p)?;
    let op = ConvBackwardData { conv: &d.conv, dx: &d.x, w: &d.w, dy: &d.y };
    let from = |a| if let Algo::Input(a) = a { Some(a) } else { None };
    let k = key(dev, Pass::Input, s, p);
    let algo = algorithm(k, || Ok(op.pick_algorithm()?), Algo::Input, from)?;
    let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
    let mut dx = dev.alloc_zeros::<f32>(len(s.x).max(1))?;
    // SAFETY: as in `forward`, with `dy` the output's shape and `dx` the input's.
    unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), &mut dx, w, dy) }?;
    Ok(dx)
}

/// The weight gradient `dw (O, C/G, kh, kw)` from `x` and `dy`.
pub(crate) fn weight_grad(
    dev: &CudaDevice,
    x: &CudaView<'_, f32>,
    dy: &CudaView<'_, f32>,
    s: Shapes,
    p: Conv2dParams,
) -> Result<CudaSlice<f32>> {
    let cudnn = handle(dev)?;
    let d = descriptors(&cudnn, &s, p)?;
    let op = ConvBackwardFilter { conv: &d.conv, x: &d.x, dw: &d.w, dy: &d.y };
    let from = |a| if let Algo::Weight(a) = a { Some(a) } else { None };
    let k = key(dev, Pass::Weight, s, p);
    let algo = algorithm(k, || Ok(op.pick_algorithm()?), Algo::Weight, from)?;
    let mut ws = workspace(dev, op.get_workspace_size(algo)?)?;
    let mut dw = dev.alloc_zeros::<f32>(len(s.w).max(1))?;
    // SAFETY: as in `forward`, with `dw` the weight's shape.
    unsafe { op.launch(algo, ws.as_mut(), (1f32, 0f32), x, &mut dw, dy) }?;
    Ok(dw)
}
