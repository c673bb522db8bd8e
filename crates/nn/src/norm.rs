//! Batch normalisation as one fused op per pass: PyTorch's `BatchNorm1d/2d` semantics (batch
//! statistics in training with the biased variance, running statistics updated with the unbiased
//! one and PyTorch's momentum convention, running statistics in evaluation), optionally fused
//! with the ReLU (or ReLU6) that follows it.
//!
//! candle-nn's `BatchNorm` builds the training pass from generic ops: a transpose to channels
//! first, a contiguous copy, two strided reductions, four broadcast element-wise ops, a
//! transpose back, and as many again in the backward pass, each a full pass over the
//! activations. Here training on the CPU (f32) is one statistics pass and one normalisation
//! pass forward, and one reduction pass plus one gradient pass backward, parallel over
//! channels; the ReLU, when fused, costs nothing extra (its mask is the output's sign).
//! Other dtypes and devices compute the same formulas from candle ops.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarBuilder, VarMap};
//! use deeprecog_nn::norm::{batch_norm, BatchNormConfig};
//!
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! let bn = batch_norm(2, BatchNormConfig::default(), vb.pp("bn"))?;
//! let x = Tensor::arange(0f32, 16.0, &Device::Cpu)?.reshape((2, 2, 2, 2))?;
//! let y = bn.forward_t(&x, true)?;
//! // Each channel of the output has mean 0 in training.
//! let mean = y.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?.flatten_all()?;
//! assert!(mean.abs()?.max(0)?.to_scalar::<f32>()? < 1e-6);
//! # Ok::<(), candle_core::Error>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp3, DType, Layout, ModuleT, Result, Shape, Tensor,
    TensorId, Var,
};
use candle_nn::{Init, VarBuilder};
use rayon::prelude::*;

use crate::conv::Activation;
use crate::memo::Memo;
use crate::simd::{self, After, BnGrad};

use crate::cpu::{f32_slice, ncs};

/// `eps` and `momentum` of a batch normalisation (PyTorch's defaults: 1e-5 and 0.1, the weight
/// of the new batch in the running statistics).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormConfig {
    /// Added to the variance before the square root.
    pub eps: f64,
    /// Weight of each batch's statistics in the running ones.
    pub momentum: f64,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig { eps: 1e-5, momentum: 0.1 }
    }
}

/// A batch normalisation layer over dimension 1 of an `(N, C, ...)` input, with PyTorch's
/// parameter names (`weight`, `bias`, `running_mean`, `running_var`).
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    config: BatchNormConfig,
    /// No tensor was given as a variable, so only this layer's own training passes change its
    /// state (counted in `updates`): what lets an inference path cache the folded constants.
    constant: bool,
    updates: Arc<AtomicU64>,
    eval_constants: Memo<EvalKey, (Tensor, Tensor)>,
}

/// What the evaluation-mode constants of a [`BatchNorm`] with constant tensors depend on: the
/// layer (its weight's and running mean's ids) and how many training passes it has run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EvalKey {
    weight: TensorId,
    running_mean: TensorId,
    updates: u64,
}

/// A [`BatchNorm`] over `channels` channels: weight 1, bias 0, running mean 0 and variance 1
/// (or the values the builder already holds).
///
/// # Errors
/// A negative `eps`, a `momentum` outside `[0, 1]`, variables of the wrong shape.
pub fn batch_norm(channels: usize, config: BatchNormConfig, vb: VarBuilder) -> Result<BatchNorm> {
    if config.eps < 0.0 || !(0.0..=1.0).contains(&config.momentum) {
        bail!(
            "batch norm: eps {} must be >= 0 and momentum {} in [0, 1]",
            config.eps,
            config.momentum
        );
    }
    let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.))?;
    let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.))?;
    let weight = vb.get_with_hints(channels, "weight", Init::Const(1.))?;
    let bias = vb.get_with_hints(channels, "bias", Init::Const(0.))?;
    BatchNorm::new(weight, bias, running_mean, running_var, config)
}

impl BatchNorm {
    /// A layer over existing tensors; the running statistics are updated in place when they
    /// are variables (as a `VarMap`'s are).
    ///
    /// # Errors
    /// Tensors that are not all of the same length.
    pub fn new(
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        config: BatchNormConfig,
    ) -> Result<BatchNorm> {
        let c = weight.elem_count();
        for (name, t) in
            [("bias", &bias), ("running_mean", &running_mean), ("running_var", &running_var)]
        {
            if t.dims() != [c] {
                bail!("batch norm: {name} has shape {:?}, expected [{c}]", t.dims());
            }
        }
        let constant =
            ![&weight, &bias, &running_mean, &running_var].iter().any(|t| t.is_variable());
        Ok(BatchNorm {
            weight: weight.reshape(c)?,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            config,
            constant,
            updates: Arc::new(AtomicU64::new(0)),
            eval_constants: Memo::default(),
        })
    }

    /// The per-channel scale.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The per-channel shift.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The running mean.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// The running (unbiased) variance.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// `eps` and `momentum`.
    pub fn config(&self) -> BatchNormConfig {
        self.config
    }

    /// The evaluation-mode affine map as `(scale, shift)`, each `(C)`: `y = x * scale + shift`.
    /// What an inference path folds into the preceding convolution.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn eval_scale_shift(&self) -> Result<(Tensor, Tensor)> {
        match self.eval_key() {
            Some(key) => self.eval_constants.get_or_try(key, || self.compute_scale_shift()),
            None => self.compute_scale_shift(),
        }
    }

    fn compute_scale_shift(&self) -> Result<(Tensor, Tensor)> {
        // The running statistics are variables (updated in place) that never take a gradient:
        // detached, a model whose weights are constants records nothing for autograd.
        let (mean, var) = (self.running_mean().detach(), self.running_var().detach());
        let scale = (var + self.config.eps)?.sqrt()?.recip()?.mul(&self.weight)?;
        let shift = (&self.bias - mean.mul(&scale)?)?;
        Ok((scale, shift))
    }

    /// The key under which [`BatchNorm::eval_scale_shift`]'s values may be cached: `None`
    /// when a tensor is a variable (an optimizer step or a checkpoint load can change it
    /// unseen).
    pub(crate) fn eval_key(&self) -> Option<EvalKey> {
        self.constant.then(|| EvalKey {
            weight: self.weight.id(),
            running_mean: self.running_mean.as_tensor().id(),
            updates: self.updates.load(Ordering::Acquire),
        })
    }

    /// Batch normalisation followed by a ReLU, in one pass when training on the CPU.
    ///
    /// # Errors
    /// An input whose dimension 1 is not the channel count; a training batch with one value
    /// per channel (its variance is undefined).
    pub fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, Activation::Relu)
    }

    /// Batch normalisation followed by a ReLU6 (`min(max(y, 0), 6)`, MobileNetV2's activation),
    /// in one pass when training on the CPU; candle's `clamp` is two broadcast ops forward and
    /// a dozen backward.
    ///
    /// # Errors
    /// As [`BatchNorm::forward_relu_t`].
    pub fn forward_relu6_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, Activation::Relu6)
    }

    /// Batch normalisation followed by `act`, fused as above.
    ///
    /// # Errors
    /// As [`BatchNorm::forward_relu_t`].
    pub fn forward_act_t(&self, x: &Tensor, train: bool, act: Activation) -> Result<Tensor> {
        self.forward_impl(x, train, act)
    }

    /// Batch normalisation followed by a LeakyReLU of `slope` (DCGAN's discriminator), in one
    /// pass forward and backward when training in f32 on the CPU, with the same values as
    /// [`ModuleT::forward_t`] then [`crate::activation::leaky_relu`] (a gradient's zero may
    /// differ in sign), which is what runs elsewhere.
    ///
    /// # Errors
    /// As [`BatchNorm::forward_relu_t`]; a non-finite or negative slope.
    pub fn forward_leaky_relu_t(&self, x: &Tensor, train: bool, slope: f64) -> Result<Tensor> {
        if !(slope.is_finite() && slope >= 0.0) {
            bail!("leaky_relu: slope {slope} must be finite and >= 0");
        }
        if train && x.device().is_cpu() {
            return self.forward_after(x, train, After::Leaky(slope as f32));
        }
        crate::activation::leaky_relu(&self.forward_impl(x, train, Activation::Identity)?, slope)
    }

    fn forward_impl(&self, x: &Tensor, train: bool, clip: Activation) -> Result<Tensor> {
        self.forward_after(x, train, After::Clip(clip))
    }

    /// `after` is a clip anywhere, a LeakyReLU only in training on the CPU.
    fn forward_after(&self, x: &Tensor, train: bool, after: After) -> Result<Tensor> {
        let c = self.weight.elem_count();
        if x.rank() < 2 || x.dim(1)? != c {
            bail!("batch norm over {c} channels: input of shape {:?}", x.dims());
        }
        let mut bshape = vec![1usize; x.rank()];
        bshape[1] = c;
        if !train {
            let (scale, shift) = self.eval_scale_shift()?;
            let own = crate::cpu::own_kernels(x.device());
            if own && x.dtype() == DType::F32 && scale.dtype() == DType::F32 {
                let x = x.contiguous()?;
                if let After::Clip(clip) = after {
                    return x.apply_op3(&scale, &shift, ChannelAffine { clip });
                }
            }
            let y = x
                .broadcast_mul(&scale.reshape(bshape.as_slice())?.to_dtype(x.dtype())?)?
                .broadcast_add(&shift.reshape(bshape.as_slice())?.to_dtype(x.dtype())?)?;
            return after_tensor(after, y);
        }
        let m = x.elem_count() / c;
        if m < 2 {
            bail!(
                "batch norm: training needs more than one value per channel, got input {:?}",
                x.dims()
            );
        }
        let fused = crate::cpu::own_kernels(x.device()) && x.dtype() == DType::F32;
        let (y, mean, var) = if fused {
            let x3 = x.contiguous()?;
            let stats = x3.apply_op1_no_bwd(&ChannelStats)?;
            let affine = Tensor::stack(&[&self.weight, &self.bias], 0)?.to_dtype(DType::F32)?;
            let op = Normalize { eps: self.config.eps, after };
            let y = x3.apply_op3(&stats, &affine, op)?;
            (y, stats.get(0)?, stats.get(1)?)
        } else {
            let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
            // Half precisions are normalised in f32, as PyTorch does.
            let inner = match x.dtype() {
                DType::F16 | DType::BF16 => DType::F32,
                d => d,
            };
            let xf = x.to_dtype(inner)?;
            let mean = xf.mean_keepdim(dims.as_slice())?;
            let centred = xf.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(dims.as_slice())?;
            let inv = (&var + self.config.eps)?.sqrt()?.recip()?;
            let y = centred
                .broadcast_mul(&inv)?
                .broadcast_mul(&self.weight.reshape(bshape.as_slice())?.to_dtype(inner)?)?
                .broadcast_add(&self.bias.reshape(bshape.as_slice())?.to_dtype(inner)?)?;
            let y = after_tensor(after, y)?;
            (y.to_dtype(x.dtype())?, mean.flatten_all()?.detach(), var.flatten_all()?.detach())
        };
        let mom = self.config.momentum;
        let dtype = self.running_mean.dtype();
        let new_mean =
            ((self.running_mean.as_tensor() * (1.0 - mom))? + (mean.to_dtype(dtype)? * mom)?)?;
        let unbiased = (var.to_dtype(dtype)? * (m as f64 / (m as f64 - 1.0)))?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - mom))? + (unbiased * mom)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)?;
        self.updates.fetch_add(1, Ordering::Release);
        Ok(y)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_impl(x, train, Activation::Identity)
    }
}

/// `after` applied by separate ops (the unfused paths).
fn after_tensor(after: After, y: Tensor) -> Result<Tensor> {
    match after {
        After::Clip(clip) => clip.tensor(y),
        After::Leaky(slope) => crate::activation::leaky_relu(&y, f64::from(slope)),
    }
}

/// Per-channel mean and biased variance, `(2, C)`, accumulated in f64 (two passes: the mean,
/// then the squared deviations, as PyTorch's CPU kernel).
struct ChannelStats;

impl CustomOp1 for ChannelStats {
    fn name(&self) -> &'static str {
        "deeprecog-bn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let (n, c, sp) = ncs(l)?;
        let m = (n * sp) as f64;
        let stats: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let planes = (0..n).map(|i| &x[(i * c + ch) * sp..(i * c + ch + 1) * sp]);
                let sum: f64 = planes.clone().map(|p| f64::from(simd::sum(p))).sum();
                let mean = sum / m;
                let mf = mean as f32;
                let sq: f64 = planes.map(|p| f64::from(simd::sum_sq_dev(p, mf))).sum();
                (mean as f32, (sq / m) as f32)
            })
            .collect();
        let mut out: Vec<f32> = stats.iter().map(|s| s.0).collect();
        out.extend(stats.iter().map(|s| s.1));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::bn_stats(s, l)
    }
}

/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, optionally ReLU'd; inputs
/// `(x, stats (2, C), affine (2, C))`. Its backward treats the statistics as functions of `x`
/// (the batch-statistics gradient), so `stats` itself gets none.
#[derive(Debug, Clone, Copy)]
struct Normalize {
    eps: f64,
    after: After,
}

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "deeprecog-bn-normalize"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let stats = f32_slice(ss, sl, self.name())?;
        let affine = f32_slice(as_, al, self.name())?;
        let (_, c, sp) = ncs(xl)?;
        let y = crate::cpu::par_fill(x.len(), sp, |at, dst| {
            let ch = at / sp % c;
            let inv = 1.0 / (f64::from(stats[c + ch]) + self.eps).sqrt();
            let scale = (inv * f64::from(affine[ch])) as f32;
            let shift = affine[c + ch] - stats[ch] * scale;
            simd::affine_act(dst, &x[at..], scale, shift, self.after)
        })?;
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
        as_: &candle_core::CudaStorage,
        al: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let After::Clip(clip) = self.after else {
            bail!("batch norm: a fused LeakyReLU runs on the CPU only");
        };
        crate::cuda::bn_normalize((xs, xl), (ss, sl), (as_, al), self.eps, clip)
    }

    fn bwd(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return self.cuda_backward(x, stats, affine, res, grad);
        }
        let c = stats.dim(1)?;
        let stats = stats.flatten_all()?.to_vec1::<f32>()?;
        let affine = affine.flatten_all()?.to_vec1::<f32>()?;
        let inv_std: Vec<f32> =
            (0..c).map(|ch| (1.0 / (f64::from(stats[c + ch]) + self.eps).sqrt()) as f32).collect();
        let channel = Channel { mean: stats[..c].to_vec(), inv_std, after: self.after };
        let grad = grad.contiguous()?;
        let res = res.contiguous()?;
        // sums[0] = sum(dy * xhat) = d weight, sums[1] = sum(dy) = d bias.
        let sums = x.apply_op3_no_bwd(&grad, &res, &GradSums(channel.clone()))?;
        let sv = sums.flatten_all()?.to_vec1::<f32>()?;
        let m = (x.elem_count() / c) as f32;
        let coef: Vec<[f32; 3]> = (0..c)
            .map(|ch| [affine[ch] * channel.inv_std[ch], sv[c + ch] / m, sv[ch] / m])
            .collect();
        let dx = x.apply_op3_no_bwd(&grad, &res, &GradInput { channel, coef })?;
        Ok((Some(dx), None, Some(sums)))
    }
}

/// What the backward kernels need per channel.
#[derive(Debug, Clone)]
struct Channel {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    after: After,
}

#[cfg(feature = "cuda")]
impl Normalize {
    /// The backward pass on CUDA with every per-channel constant kept on the device (no copy
    /// to the host, so no synchronisation): the gradient through the activation first, then
    /// the sums, then the input gradient from `[stats, affine, sums]`.
    fn cuda_backward(
        &self,
        x: &Tensor,
        stats: &Tensor,
        affine: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let After::Clip(clip) = self.after else {
            bail!("batch norm: a fused LeakyReLU runs on the CPU only");
        };
        let g = clip.mask(&grad.contiguous()?, res)?.contiguous()?;
        let (x, stats) = (x.contiguous()?, stats.contiguous()?);
        let sums = x.apply_op3_no_bwd(&g, &stats, &CudaBackward { eps: self.eps, sums: true })?;
        let consts = Tensor::cat(&[&stats, &affine.contiguous()?, &sums], 0)?;
        let dx = x.apply_op3_no_bwd(&g, &consts, &CudaBackward { eps: self.eps, sums: false })?;
        Ok((Some(dx), None, Some(sums)))
    }
}

/// BatchNorm's backward kernels on CUDA, over `(x, g, stats (2, C))` to the sums `(2, C)` or
/// over `(x, g, consts (6, C))` to `dx`. There is no CPU kernel: the CPU backward is
/// [`GradSums`] and [`GradInput`].
#[cfg(feature = "cuda")]
struct CudaBackward {
    eps: f64,
    sums: bool,
}

#[cfg(feature = "cuda")]
impl CustomOp3 for CudaBackward {
    fn name(&self) -> &'static str {
        "deeprecog-bn-backward-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("{}: a CUDA kernel; the CPU backward is GradSums and GradInput", self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
        ks: &candle_core::CudaStorage,
        kl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        if self.sums {
            crate::cuda::bn_grad_sums_dev((xs, xl), (gs, gl), (ks, kl), self.eps)
        } else {
            crate::cuda::bn_grad_input_dev((xs, xl), (gs, gl), (ks, kl), self.eps)
        }
    }
}

/// `(x, dy, y)` to `(2, C)`: `sum(dy * xhat)` and `sum(dy)` per channel, in f64 across planes.
struct GradSums(Channel);

impl CustomOp3 for GradSums {
    fn name(&self) -> &'static str {
        "deeprecog-bn-grad-sums"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let g = f32_slice(gs, gl, self.name())?;
        let y = f32_slice(ys, yl, self.name())?;
        let (n, c, sp) = ncs(xl)?;
        if g.len() != x.len() || y.len() != x.len() {
            bail!("batch norm backward: gradient {:?} for input {:?}", gl.shape(), xl.shape());
        }
        let ch = &self.0;
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|k| {
                let (mut sg, mut sgx) = (0f64, 0f64);
                for i in 0..n {
                    let at = (i * c + k) * sp;
                    let (xp, gp, yp) = (&x[at..at + sp], &g[at..at + sp], &y[at..at + sp]);
                    let (a, b) = simd::grad_sums(xp, gp, yp, ch.mean[k], ch.after);
                    sg += f64::from(a);
                    sgx += f64::from(b);
                }
                ((sgx * f64::from(ch.inv_std[k])) as f32, sg as f32)
            })
            .collect();
        let mut out: Vec<f32> = sums.iter().map(|s| s.0).collect();
        out.extend(sums.iter().map(|s| s.1));
        Ok((CpuStorage::F32(out), Shape::from((2, c))))
    }
}

/// `(x, dy, y)` to `dx = weight * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))`,
/// parallel over planes. `coef[c] = [weight * inv_std, mean(dy), mean(dy * xhat)]`.
struct GradInput {
    channel: Channel,
    coef: Vec<[f32; 3]>,
}

impl CustomOp3 for GradInput {
    fn name(&self) -> &'static str {
        "deeprecog-bn-grad-input"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let g = f32_slice(gs, gl, self.name())?;
        let y = f32_slice(ys, yl, self.name())?;
        let (_, c, sp) = ncs(xl)?;
        let ch = &self.channel;
        let dx = crate::cpu::par_fill(x.len(), sp, |at, dst| {
            let k = at / sp % c;
            let [scale, mean_g, mean_gx] = self.coef[k];
            let consts =
                BnGrad { mean: ch.mean[k], inv_std: ch.inv_std[k], scale, mean_g, mean_gx };
            let (xs, gs, ys) = (&x[at..at + sp], &g[at..at + sp], &y[at..at + sp]);
            simd::bn_grad_input(dst, xs, gs, ys, consts, ch.after)
        })?;
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// Evaluation-mode normalisation, `y = x * scale + shift` per channel (optionally clipped), one
/// pass; inputs `(x, scale (C), shift (C))`, all three differentiable.
#[derive(Debug, Clone, Copy)]
struct ChannelAffine {
    clip: Activation,
}

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "deeprecog-channel-affine"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(xs, xl, self.name())?;
        let scale = f32_slice(ss, sl, self.name())?;
        let shift = f32_slice(ts, tl, self.name())?;
        let (_, c, sp) = ncs(xl)?;
        if scale.len() != c || shift.len() != c {
            bail!("batch norm: {} scales for {c} channels", scale.len());
        }
        let y = crate::cpu::par_fill(x.len(), sp.max(1), |at, dst| {
            let ch = at / sp.max(1) % c;
            simd::affine_act(dst, &x[at..], scale[ch], shift[ch], After::Clip(self.clip))
        })?;
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        xs: &candle_core::CudaStorage,
        xl: &Layout,
        ss: &candle_core::CudaStorage,
        sl: &Layout,
        ts: &candle_core::CudaStorage,
        tl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::channel_affine((xs, xl), (ss, sl), (ts, tl), self.clip)
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = scale.elem_count();
        let mut bshape = vec![1usize; x.rank()];
        bshape[1] = c;
        let grad = self.clip.mask(grad, res)?;
        let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let dx = grad.broadcast_mul(&scale.reshape(bshape.as_slice())?)?;
        let dscale = (&grad * x)?.sum(dims.as_slice())?;
        let dshift = grad.sum(dims.as_slice())?;
        Ok((Some(dx), Some(dscale), Some(dshift)))
    }
}
