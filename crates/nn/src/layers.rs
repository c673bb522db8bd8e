//! Convolution layers on the project's own kernels ([`crate::conv`]): drop-in replacements for
//! candle-nn's `Conv2d` / `ConvTranspose2d` with the same parameter names (`weight`, `bias`),
//! the same shapes and, through the `conv2d*` / `conv_transpose2d*` builders, the same
//! initialisation, so a model switches by changing its imports. Every model of the workspace
//! builds its convolutions from here.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use deeprecog_nn::conv::Conv2dParams;
//! use deeprecog_nn::layers::conv2d;
//!
//! let vars = VarMap::new();
//! let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
//! let conv = conv2d(3, 8, 3, Conv2dParams { stride: 2, padding: 1, ..Default::default() }, vb.pp("c"))?;
//! let y = conv.forward(&Tensor::zeros((2, 3, 9, 7), DType::F32, &Device::Cpu)?)?;
//! assert_eq!(y.dims(), [2, 8, 5, 4]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::conv::{
    conv2d_act_kept, conv2d_act_max_pool2_kept, conv2d_residual_act_kept,
    conv_transpose2d as conv_transpose2d_op, Activation,
};
use crate::conv::{Conv2dParams, ConvTranspose2dParams};
use crate::memo::KeptBuffer;
use crate::memo::Memo;
use crate::norm::{BatchNorm, EvalKey};

/// A 2-D convolution layer: `weight (O, C/groups, kh, kw)`, optional `bias (O)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: Conv2dParams,
    /// Neither weight nor bias is a variable: nothing can change them, so the BatchNorm folded
    /// into them in evaluation is computed once per state of the BatchNorm, and a Winograd
    /// layer's transformed weight once per weight.
    constant: bool,
    folded: Memo<EvalKey, (Tensor, Tensor, KeptBuffer)>,
    transformed: KeptBuffer,
}

impl Conv2d {
    /// A layer over existing tensors. When neither is a variable (a model over constant
    /// copies of its weights, as an inference model is), [`Conv2d::forward_bn_t`] folds a
    /// constant BatchNorm into them once and reuses the result, and a 3x3 layer computed by
    /// Winograd's algorithm transforms its weight once rather than on every call.
    pub fn new(weight: Tensor, bias: Option<Tensor>, params: Conv2dParams) -> Conv2d {
        let constant = !weight.is_variable() && !bias.as_ref().is_some_and(Tensor::is_variable);
        let (folded, transformed) = (Memo::default(), KeptBuffer::default());
        Conv2d { weight, bias, params, constant, folded, transformed }
    }

    /// Where this layer keeps its weight's Winograd transform: only a constant weight's.
    fn kept(&self) -> Option<&KeptBuffer> {
        self.constant.then_some(&self.transformed)
    }

    /// The `(O, C/groups, kh, kw)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, dilation, groups.
    pub fn params(&self) -> Conv2dParams {
        self.params
    }
}

impl Conv2d {
    /// The convolution followed by a ReLU, the bias and the ReLU fused into one pass (forward
    /// and backward) on the CPU.
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Relu)
    }

    /// The convolution followed by `act`, fused as in [`Conv2d::forward_relu`].
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        conv2d_act_kept(x, &self.weight, self.bias.as_ref(), self.params, act, self.kept())
    }

    /// The convolution followed by `act` and a 2x2 stride-2 max-pool, fused where nothing
    /// records gradients: [`crate::conv::conv2d_act_max_pool2`].
    ///
    /// # Errors
    /// As [`Module::forward`].
    pub fn forward_act_max_pool2(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let (weight, bias, kept) = (&self.weight, self.bias.as_ref(), self.kept());
        conv2d_act_max_pool2_kept(x, weight, bias, self.params, act, kept)
    }

    /// The convolution, then `bn`, then `act`. In training the two layers run as they are
    /// (batch statistics, fused normalisation passes); in evaluation `bn`'s affine map is folded
    /// into the convolution (weight scaled per output channel, bias `bias * scale + shift`) and
    /// applied with the activation as the output is written: one pass over the activations
    /// instead of three. Over variables the folding is computed from candle ops on every call,
    /// so gradients still reach the weight and the BatchNorm's parameters (a frozen-statistics
    /// fine-tune) and an optimizer step is never missed; over constants (an inference model) it
    /// is computed once and kept.
    ///
    /// # Errors
    /// As [`Module::forward`], and a BatchNorm whose channel count is not this layer's output.
    pub fn forward_bn_t(
        &self,
        x: &Tensor,
        bn: &BatchNorm,
        train: bool,
        act: Activation,
    ) -> Result<Tensor> {
        let o = self.weight.dim(0)?;
        if bn.weight().elem_count() != o {
            candle_core::bail!(
                "batch norm over {} channels after a convolution with {o} outputs",
                bn.weight().elem_count()
            );
        }
        if train {
            return bn.forward_act_t(&self.forward(x)?, true, act);
        }
        if let Some(key) = bn.eval_key().filter(|_| self.constant) {
            let (weight, bias, kept) = self.folded.get_or_try(key, || {
                let (weight, bias) = self.fold(bn)?;
                Ok((weight, bias, KeptBuffer::default()))
            })?;
            return conv2d_act_kept(x, &weight, Some(&bias), self.params, act, Some(&kept));
        }
        let (weight, bias) = self.fold(bn)?;
        conv2d_act_kept(x, &weight, Some(&bias), self.params, act, None)
    }

    /// `act(bn(conv(x)) + residual)`: a residual block's last convolution, its BatchNorm and
    /// the addition of the shortcut. In evaluation over constants (an inference model) the
    /// BatchNorm is folded as in [`Conv2d::forward_bn_t`] and the residual added in the
    /// convolution's epilogue ([`crate::conv::conv2d_residual_act`]); otherwise it is
    /// [`Conv2d::forward_bn_t`] followed by [`crate::activation::add_act`], with the same
    /// values.
    ///
    /// # Errors
    /// As [`Conv2d::forward_bn_t`], and a residual of another shape than the output.
    pub fn forward_bn_residual_t(
        &self,
        x: &Tensor,
        bn: &BatchNorm,
        train: bool,
        residual: &Tensor,
        act: Activation,
    ) -> Result<Tensor> {
        let key = bn.eval_key().filter(|_| self.constant && !train);
        let o = self.weight.dim(0)?;
        match key {
            Some(key) if bn.weight().elem_count() == o => {
                let (weight, bias, kept) = self.folded.get_or_try(key, || {
                    let (weight, bias) = self.fold(bn)?;
                    Ok((weight, bias, KeptBuffer::default()))
                })?;
                let p = self.params;
                conv2d_residual_act_kept(x, &weight, Some(&bias), residual, p, act, Some(&kept))
            }
            _ => {
                let y = self.forward_bn_t(x, bn, train, Activation::Identity)?;
                crate::activation::add_act(&y, residual, act)
            }
        }
    }

    /// The weight scaled per output channel by `bn`'s evaluation scale, and the bias
    /// `bias * scale + shift`.
    fn fold(&self, bn: &BatchNorm) -> Result<(Tensor, Tensor)> {
        let o = self.weight.dim(0)?;
        let (scale, shift) = bn.eval_scale_shift()?;
        let (scale, shift) =
            (scale.to_dtype(self.weight.dtype())?, shift.to_dtype(self.weight.dtype())?);
        let weight = self.weight.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
        let bias = match &self.bias {
            Some(b) => ((b * &scale)? + &shift)?,
            None => shift,
        };
        Ok((weight, bias))
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }
}

/// A transposed 2-D convolution layer: `weight (C, O/groups, kh, kw)`, optional `bias (O)`.
#[derive(Debug, Clone)]
pub struct ConvTranspose2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: ConvTranspose2dParams,
}

impl ConvTranspose2d {
    /// A layer over existing tensors.
    pub fn new(weight: Tensor, bias: Option<Tensor>, params: ConvTranspose2dParams) -> Self {
        ConvTranspose2d { weight, bias, params }
    }

    /// The `(C, O/groups, kh, kw)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// Stride, padding, output padding, dilation, groups.
    pub fn params(&self) -> ConvTranspose2dParams {
        self.params
    }
}

impl Module for ConvTranspose2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        conv_transpose2d_op(x, &self.weight, self.bias.as_ref(), self.params)
    }
}

/// A `k x k` convolution with bias, initialised as candle-nn's `conv2d` (Kaiming normal
/// weight, bias uniform in `+-1/sqrt(in_channels)`).
///
/// # Errors
/// A variable of the same name with another shape.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    params: Conv2dParams,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let mut conv = conv2d_no_bias(in_channels, out_channels, kernel, params, vb.clone())?;
    let bound = 1. / (in_channels as f64).sqrt();
    conv.bias =
        Some(vb.get_with_hints(out_channels, "bias", Init::Uniform { lo: -bound, up: bound })?);
    Ok(conv)
}

/// A `k x k` convolution without bias, weight initialised as candle-nn's `conv2d_no_bias`.
///
/// # Errors
/// A variable of the same name with another shape; channels not divisible by the groups.
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    params: Conv2dParams,
    vb: VarBuilder,
) -> Result<Conv2d> {
    if params.groups == 0 || !in_channels.is_multiple_of(params.groups) {
        candle_core::bail!("conv2d: {in_channels} input channels in {} groups", params.groups);
    }
    let shape = (out_channels, in_channels / params.groups, kernel, kernel);
    let weight = vb.get_with_hints(shape, "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
    Ok(Conv2d::new(weight, None, params))
}

/// A `k x k` transposed convolution with bias, initialised as candle-nn's `conv_transpose2d`
/// (weight and bias uniform in `+-1/(sqrt(out_channels) k)`).
///
/// # Errors
/// A variable of the same name with another shape.
pub fn conv_transpose2d(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    params: ConvTranspose2dParams,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    let mut conv = conv_transpose2d_no_bias(in_channels, out_channels, kernel, params, vb.clone())?;
    conv.bias =
        Some(vb.get_with_hints(out_channels, "bias", transpose_init(out_channels, kernel))?);
    Ok(conv)
}

/// A `k x k` transposed convolution without bias, weight initialised as candle-nn's
/// `conv_transpose2d_no_bias`.
///
/// # Errors
/// A variable of the same name with another shape; channels not divisible by the groups.
pub fn conv_transpose2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    params: ConvTranspose2dParams,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    if params.groups == 0 || !out_channels.is_multiple_of(params.groups) {
        candle_core::bail!(
            "conv_transpose2d: {out_channels} output channels in {} groups",
            params.groups
        );
    }
    let shape = (in_channels, out_channels / params.groups, kernel, kernel);
    let weight = vb.get_with_hints(shape, "weight", transpose_init(out_channels, kernel))?;
    Ok(ConvTranspose2d::new(weight, None, params))
}

fn transpose_init(out_channels: usize, kernel: usize) -> Init {
    let bound = 1. / (out_channels as f64).sqrt() / kernel as f64;
    Init::Uniform { lo: -bound, up: bound }
}

/// A fully connected layer, `y = x W^T + b` over the last dimension ([`crate::linear::linear`]):
/// a drop-in for candle-nn's `Linear` with the same parameter names (`weight (out, in)`,
/// `bias (out)`).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// The weight is not a variable: its transpose (what batches of more than a few rows
    /// multiply by) is made once and kept.
    constant: bool,
    transposed: KeptBuffer,
}

impl Linear {
    /// A layer over existing tensors: `weight (out, in)`, optional `bias (out)`. When the
    /// weight is not a variable (an inference model's), the transpose that batched inputs
    /// multiply by is made on the first such call and kept.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        let constant = !weight.is_variable();
        Linear { weight, bias, constant, transposed: KeptBuffer::default() }
    }

    /// The `(out, in)` weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let kept = self.constant.then_some(&self.transposed);
        crate::linear::linear_kept(x, &self.weight, self.bias.as_ref(), kept)
    }
}

impl From<candle_nn::Linear> for Linear {
    fn from(layer: candle_nn::Linear) -> Linear {
        Linear::new(layer.weight().clone(), layer.bias().cloned())
    }
}

/// A fully connected layer with bias, initialised as candle-nn's `linear` (Kaiming normal
/// weight, bias uniform in `+-1/sqrt(in_dim)`): the same variables, drawn in the same order.
///
/// # Errors
/// A variable of the same name with another shape.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear(in_dim, out_dim, vb).map(Linear::from)
}

/// A fully connected layer without bias, initialised as candle-nn's `linear_no_bias`.
///
/// # Errors
/// A variable of the same name with another shape.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    candle_nn::linear_no_bias(in_dim, out_dim, vb).map(Linear::from)
}
