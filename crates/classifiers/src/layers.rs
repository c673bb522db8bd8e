//! Building blocks shared by the models of this crate: torchvision-initialised convolutions on
//! the project's kernels ([`Conv`], dense or depthwise) and the pooling variants the architectures need
//! (torch-semantics max-pool with a correct backward, Keras' "same" max-pool, adaptive average
//! pooling).

use candle_core::{Module, Result, Tensor};
use candle_nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use candle_nn::{Init, VarBuilder};
use deeprecog_nn::conv::{Activation, Conv2dParams};
use deeprecog_nn::layers::Conv2d;

/// A bias-free 2-D convolution, initialised as torchvision does (Kaiming normal, fan-out, ReLU
/// gain) so models trained from scratch start like their PyTorch counterparts.
#[derive(Debug, Clone)]
pub(crate) struct Conv {
    conv: Conv2d,
}

impl Conv {
    pub(crate) fn new(
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Conv> {
        let weight = vb.get_with_hints((cout, cin, kernel, kernel), "weight", kaiming_fan_out())?;
        let params = Conv2dParams { padding, stride: stride.max(1), ..Default::default() };
        Ok(Conv { conv: Conv2d::new(weight, None, params) })
    }

    /// The `(out, in, k, k)` weight.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> &Tensor {
        self.conv.weight()
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(x)
    }
}

impl Conv {
    /// The convolution, `bn` and `act`; in evaluation mode `bn` folded into the convolution
    /// ([`Conv2d::forward_bn_t`]).
    pub(crate) fn forward_bn_t(
        &self,
        x: &Tensor,
        bn: &BatchNorm,
        train: bool,
        act: Activation,
    ) -> Result<Tensor> {
        if train {
            let y = self.conv.forward(x)?;
            BatchNorm::check(&y, train)?;
            return bn.0.forward_act_t(&y, train, act);
        }
        self.conv.forward_bn_t(x, &bn.0, train, act)
    }

    /// `act(bn(conv(x)) + residual)`, in evaluation mode as one pass
    /// ([`Conv2d::forward_bn_residual_t`]).
    pub(crate) fn forward_bn_residual_t(
        &self,
        x: &Tensor,
        bn: &BatchNorm,
        train: bool,
        residual: &Tensor,
        act: Activation,
    ) -> Result<Tensor> {
        if train {
            let y = self.forward_bn_t(x, bn, train, Activation::Identity)?;
            return deeprecog_nn::activation::add_act(&y, residual, act);
        }
        self.conv.forward_bn_residual_t(x, &bn.0, train, residual, act)
    }
}

pub(crate) fn kaiming_fan_out() -> Init {
    Init::Kaiming {
        dist: NormalOrUniform::Normal,
        fan: FanInOut::FanOut,
        non_linearity: NonLinearity::ReLU,
    }
}

impl Conv {
    /// A depthwise convolution (one 2-D filter per channel, torchvision's `groups = channels`)
    /// with the weight layout `(C, 1, k, k)` of a grouped `Conv2d`, without bias: the project's
    /// direct depthwise kernel forward and backward (candle runs a grouped convolution as one
    /// convolution per group, hundreds of tiny im2col calls in MobileNetV2).
    pub(crate) fn depthwise(
        channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Conv> {
        let weight =
            vb.get_with_hints((channels, 1, kernel, kernel), "weight", kaiming_fan_out())?;
        let params =
            Conv2dParams { stride: stride.max(1), padding, groups: channels, ..Default::default() };
        Ok(Conv { conv: Conv2d::new(weight, None, params) })
    }
}

/// The project's fused BatchNorm (`deeprecog_nn::norm`), refusing to train on one value per
/// channel as PyTorch does, with a hint at the usual cause.
///
/// With one value per channel the batch variance is 0 and the unbiased running variance
/// `0 * n / (n - 1)` undefined. A `SeedHead` (BatchNorm1d) meets it when an epoch ends on a
/// batch of one sample (`Loader::drop_last(true)` avoids it), a backbone when a batch of one
/// image reaches a 1x1 feature map.
#[derive(Debug, Clone)]
pub(crate) struct BatchNorm(deeprecog_nn::norm::BatchNorm);

impl BatchNorm {
    pub(crate) fn new(
        channels: usize,
        eps: f64,
        momentum: f64,
        vb: VarBuilder,
    ) -> crate::Result<BatchNorm> {
        let config = deeprecog_nn::norm::BatchNormConfig { eps, momentum };
        Ok(BatchNorm(deeprecog_nn::norm::batch_norm(channels, config, vb)?))
    }

    fn check(x: &Tensor, train: bool) -> Result<()> {
        if train && x.rank() >= 2 && x.elem_count() <= x.dim(1)? {
            candle_core::bail!(
                "BatchNorm: training needs more than one value per channel, got input {:?} \
                 (an epoch's last batch of one sample? use the loader's drop_last)",
                x.dims()
            );
        }
        Ok(())
    }

    /// BatchNorm then ReLU, fused into one pass when training on the CPU.
    pub(crate) fn forward_relu_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Self::check(x, train)?;
        self.0.forward_relu_t(x, train)
    }
}

impl candle_nn::ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Self::check(x, train)?;
        self.0.forward_t(x, train)
    }
}

/// The name a model's dropout stream is keyed by: `dropout` under the builder's prefix.
pub(crate) fn dropout_key(vb: &VarBuilder) -> String {
    let prefix = vb.prefix();
    if prefix.is_empty() {
        "dropout".to_string()
    } else {
        format!("{prefix}.dropout")
    }
}

/// torch's `MaxPool2d(kernel, stride, padding)` (floor mode) for inputs of any sign, with a
/// correct backward pass.
///
/// candle's own `max_pool2d` scales the gradient of a window's maximum by (number of maxima) /
/// k^2 instead of 1 / (number of maxima), so a lone maximum of a 2x2 window gets a quarter of its
/// gradient; it is not used here. On the CPU (and on CUDA when built with the `cuda` feature)
/// this is `deeprecog_nn::pool::max_pool2d` (`-inf` padding, first maximum). Devices without
/// its kernels take the maximum of strided views over an edge-replicated input: with `padding < kernel` every window that
/// reaches into the padding also holds the edge element it replicates, so the maximum is
/// torch's, and candle differentiates element-wise maxima.
pub(crate) fn max_pool(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    if padding >= kernel.max(1) {
        candle_core::bail!("max-pool padding {padding} must be below the kernel {kernel}");
    }
    if deeprecog_nn::pool::has_kernels(x.device()) {
        deeprecog_nn::pool::max_pool2d(x, kernel, stride, padding)
    } else {
        let x = replicated_pool_dim(x, 3, kernel, stride, padding)?;
        replicated_pool_dim(&x, 2, kernel, stride, padding)
    }
}

/// `count` elements of `dim` starting at `start`, `stride` apart.
fn strided(x: &Tensor, dim: usize, start: usize, count: usize, stride: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, start, count);
    }
    let idx: Vec<u32> = (0..count).map(|i| (start + i * stride) as u32).collect();
    x.index_select(&Tensor::new(idx.as_slice(), x.device())?, dim)
}

fn replicated_pool_dim(x: &Tensor, dim: usize, k: usize, s: usize, p: usize) -> Result<Tensor> {
    let n = x.dim(dim)? + 2 * p;
    if n < k {
        candle_core::bail!("max-pool: input {:?} smaller than kernel {k}", x.dims());
    }
    let s = s.max(1);
    let out = (n - k) / s + 1;
    let xp = if p > 0 { x.pad_with_same(dim, p, p)? } else { x.clone() };
    let mut acc = strided(&xp, dim, 0, out, s)?;
    for start in 1..k {
        acc = acc.maximum(&strided(&xp, dim, start, out, s)?)?;
    }
    Ok(acc)
}

/// Keras' `MaxPooling2D(pool_size=k, padding="same")`: `ceil(n / k)` outputs per axis.
///
/// Keras pads `k * ceil(n / k) - n` positions, half (rounded down) before and the rest after,
/// and ignores them. Replicating the edge element gives the same maximum (each padded window
/// also holds that element) and the same gradient (the first maximum, or the copy whose
/// gradient the padding's backward adds back to the edge element).
pub(crate) fn keras_same_max_pool(x: &Tensor, k: usize) -> Result<Tensor> {
    let mut x = x.clone();
    for dim in [2, 3] {
        let n = x.dim(dim)?;
        let total = n.div_ceil(k) * k - n;
        if total > 0 {
            x = x.pad_with_same(dim, total / 2, total - total / 2)?;
        }
    }
    max_pool(&x, k, k, 0)
}

/// Output size along one axis of Keras' "same" max-pool.
pub(crate) fn keras_same_out(n: usize, k: usize) -> usize {
    n.div_ceil(k)
}

/// torch's `AdaptiveAvgPool2d((oh, ow))`: bin `i` of an axis of length `n` averages
/// `floor(i * n / o) .. ceil((i + 1) * n / o)`. The bins are products of per-axis intervals, so
/// averaging rows first and columns second gives each bin's mean exactly.
pub(crate) fn adaptive_avg_pool2d(x: &Tensor, (oh, ow): (usize, usize)) -> Result<Tensor> {
    let x = adaptive_avg_dim(x, 2, oh)?;
    adaptive_avg_dim(&x, 3, ow)
}

fn adaptive_avg_dim(x: &Tensor, dim: usize, out: usize) -> Result<Tensor> {
    let n = x.dim(dim)?;
    if n == out {
        return Ok(x.clone());
    }
    if out == 0 || n == 0 {
        candle_core::bail!("adaptive pool from {n} to {out} along dim {dim}");
    }
    let mut bins = Vec::with_capacity(out);
    for i in 0..out {
        let start = i * n / out;
        let end = ((i + 1) * n).div_ceil(out);
        bins.push(x.narrow(dim, start, end - start)?.mean_keepdim(dim)?);
    }
    Tensor::cat(&bins, dim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::test_util::{max_abs_diff, randn, randn_var, vb};
    use candle_core::Device;
    use candle_nn::VarMap;

    #[test]
    fn depthwise_matches_grouped_conv() {
        let varmap = VarMap::new();
        let vb = vb(&varmap, 0);
        for (stride, (h, w)) in [(1, (7, 9)), (2, (7, 9)), (2, (8, 6))] {
            let dw = Conv::depthwise(5, 3, stride, 1, vb.pp(format!("s{stride}{h}"))).unwrap();
            let x = randn(stride as u64, (2, 5, h, w));
            let ours = dw.forward(&x).unwrap();
            let theirs = x.conv2d(dw.weight(), 1, stride, 1, 5).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_abs_diff(&ours, &theirs) < 1e-5);
        }
    }

    #[test]
    fn strided_conv_matches_candle_and_has_a_backward_on_odd_shapes() {
        let varmap = VarMap::new();
        let vb = vb(&varmap, 0);
        for (k, p, (h, w)) in [(3, 1, (5, 6)), (3, 1, (6, 5)), (1, 0, (3, 4)), (7, 3, (9, 12))] {
            let conv = Conv::new(2, 4, k, 2, p, vb.pp(format!("c{k}{h}{w}"))).unwrap();
            let x = randn_var((h * w) as u64, (2, 2, h, w));
            let ours = conv.forward(&x).unwrap();
            let theirs = x.conv2d(conv.weight(), p, 2, 1, 1).unwrap();
            assert_eq!(ours.dims(), theirs.dims());
            assert!(max_abs_diff(&ours, &theirs) < 1e-5);
            let grads = ours.sum_all().unwrap().backward().unwrap();
            assert_eq!(grads.get(&x).unwrap().dims(), x.dims());
        }
    }

    #[test]
    fn max_pools_match_their_references() {
        let x = randn_var(1, (2, 3, 7, 10));
        for (k, s, p) in [(3, 2, 1), (2, 2, 0), (3, 1, 1)] {
            let a = max_pool(&x, k, s, p).unwrap();
            let b = replicated_pool_dim(&x, 3, k, s, p).unwrap();
            let b = replicated_pool_dim(&b, 2, k, s, p).unwrap();
            assert_eq!(a.dims(), b.dims());
            assert!(max_abs_diff(&a, &b) < 1e-7);
        }
        assert_eq!(max_pool(&x, 3, 2, 1).unwrap().dims(), &[2, 3, 4, 5]);
        // Keras "same": 7x10 at k=4 -> 2x3, each output the max of its (clipped) window.
        let y = keras_same_max_pool(&x, 4).unwrap();
        assert_eq!(y.dims(), &[2, 3, 2, 3]);
        let plane = x.get(1).unwrap().get(2).unwrap().to_vec2::<f32>().unwrap();
        let out = y.get(1).unwrap().get(2).unwrap().to_vec2::<f32>().unwrap();
        // Rows pad 0 before and 1 after, columns 1 and 1.
        let win = |r0: i64, c0: i64| {
            let mut m = f32::NEG_INFINITY;
            for r in r0..r0 + 4 {
                for c in c0..c0 + 4 {
                    if (0..7).contains(&r) && (0..10).contains(&c) {
                        m = m.max(plane[r as usize][c as usize]);
                    }
                }
            }
            m
        };
        for (i, row) in out.iter().enumerate() {
            for (j, v) in row.iter().enumerate() {
                assert_eq!(*v, win(4 * i as i64, 4 * j as i64 - 1));
            }
        }
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(&x).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!((g - 36.0).abs() < 1e-4);
        assert_eq!(keras_same_out(7, 4), 2);
    }

    /// Pins the candle 0.11 behaviour `max_pool` works around: its max-pool backward hands a
    /// lone maximum 1/k^2 of its gradient. When this fails, candle was fixed.
    #[test]
    fn candle_max_pool_backward_is_scaled() {
        let x = randn_var(1, (1, 2, 4, 6));
        let total = |y: Tensor| {
            let g = y.sum_all().unwrap().backward().unwrap();
            g.get(&x).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()
        };
        assert!((total(max_pool(&x, 2, 2, 0).unwrap()) - 12.0).abs() < 1e-5);
        assert!((total(x.max_pool2d(2).unwrap()) - 3.0).abs() < 1e-5);
    }

    /// Pins the candle 0.11 behaviour `BatchNorm` guards against: training on one value per
    /// channel leaves NaN running variances. When this fails, candle was fixed.
    #[test]
    fn batch_norm_refuses_one_value_per_channel() {
        use candle_nn::ModuleT;
        let varmap = VarMap::new();
        let bn = BatchNorm::new(3, 1e-5, 0.1, vb(&varmap, 0)).unwrap();
        let one = randn(1, (1, 3));
        let err = bn.forward_t(&one, true).unwrap_err();
        assert!(err.to_string().contains("more than one value per channel"), "{err}");
        assert!(bn.forward_t(&one, false).is_ok());
        assert!(bn.forward_t(&randn(1, (2, 3)), true).is_ok());
        assert!(bn.forward_t(&randn(1, (1, 3, 1, 2)), true).is_ok());
        assert!(bn.forward_t(&randn(1, (1, 3, 1, 1)), true).is_err());

        let candle = candle_nn::batch_norm(3, 1e-5, vb(&varmap, 0).pp("candle")).unwrap();
        candle.forward_t(&one, true).unwrap();
        let var = candle.running_var().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(var.iter().all(|v| v.is_nan()), "{var:?}");
    }

    #[test]
    fn adaptive_pool_matches_torch_bins() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 5.0, &dev).unwrap().reshape((1, 1, 5, 1)).unwrap();
        let y = adaptive_avg_pool2d(&x, (3, 2)).unwrap();
        assert_eq!(y.dims(), &[1, 1, 3, 2]);
        // Bins of 5 -> 3: [0, 2), [1, 4), [3, 5).
        let v = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, [0.5, 0.5, 2.0, 2.0, 3.5, 3.5]);
    }
}
