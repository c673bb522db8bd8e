//! The FakeApp report's two small real/fake CNNs for 96x96 grayscale face crops:
//! [`LeNetLike`] and [`FakeAppCnn`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarBuilder, VarMap};
//! use deeprecog_classifiers::{LeNetLike, LeNetLikeConfig};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = LeNetLike::new(&LeNetLikeConfig::default(), vb)?;
//! let x = Tensor::zeros((2, 1, 96, 96), DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward_t(&x, false)?.dims(), &[2, 1]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Dropout, Linear, ModuleT, VarBuilder};

use crate::backbone::batch_norm;
use crate::layers::max_pool;
use crate::Task;

/// Configuration of [`LeNetLike`]; the default is the report's 1x96x96 binary model.
#[derive(Debug, Clone, PartialEq)]
pub struct LeNetLikeConfig {
    /// Input `(channels, height, width)`; 1 channel for the report's grayscale crops.
    pub input: (usize, usize, usize),
    /// The task, which fixes the number of outputs.
    pub task: Task,
}

impl Default for LeNetLikeConfig {
    /// 1x96x96 grayscale, binary.
    fn default() -> Self {
        LeNetLikeConfig { input: (1, 96, 96), task: Task::Binary }
    }
}

/// LeNet-5's layout (LeCun et al. 1998) with ReLU and max-pooling: conv 5x5 (6, no padding),
/// ReLU, 2x2 max-pool, conv 5x5 (16), ReLU, 2x2 max-pool, fc 120, ReLU, fc 84, ReLU, output
/// logits. Parameters: `conv1.*`, `conv2.*`, `fc1.*`, `fc2.*`, `fc3.*` (the usual PyTorch
/// LeNet names). No BatchNorm or Dropout, so train and eval modes agree.
#[derive(Debug, Clone)]
pub struct LeNetLike {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

/// Spatial size after a valid `k`x`k` conv and a 2x2 floor max-pool; `None` when too small.
fn conv_pool(n: usize, k: usize) -> Option<usize> {
    n.checked_sub(k - 1).map(|v| v / 2).filter(|v| *v > 0)
}

impl LeNetLike {
    /// Builds the model; fails when the input is too small for the two conv/pool stages.
    pub fn new(config: &LeNetLikeConfig, vb: VarBuilder) -> Result<LeNetLike> {
        let (c, h, w) = config.input;
        let out = |n: usize| conv_pool(n, 5).and_then(|v| conv_pool(v, 5));
        let (Some(h2), Some(w2)) = (out(h), out(w)) else {
            candle_core::bail!("input {:?} is too small for LeNetLike", config.input);
        };
        let cfg = Conv2dConfig::default();
        Ok(LeNetLike {
            conv1: candle_nn::conv2d(c, 6, 5, cfg, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(6, 16, 5, cfg, vb.pp("conv2"))?,
            fc1: candle_nn::linear(16 * h2 * w2, 120, vb.pp("fc1"))?,
            fc2: candle_nn::linear(120, 84, vb.pp("fc2"))?,
            fc3: candle_nn::linear(84, config.task.outputs(), vb.pp("fc3"))?,
        })
    }
}

impl ModuleT for LeNetLike {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        let x = max_pool(&self.conv1.forward(xs)?.relu()?, 2, 2, 0)?;
        let x = max_pool(&self.conv2.forward(&x)?.relu()?, 2, 2, 0)?;
        let x = self.fc1.forward(&x.flatten_from(1)?)?.relu()?;
        self.fc3.forward(&self.fc2.forward(&x)?.relu()?)
    }
}

/// Configuration of [`FakeAppCnn`].
///
/// The FakeApp report names its "custom CNN" (conv blocks with BatchNorm and max-pooling,
/// dropout, a dense layer) but gives no exact layer sizes; the defaults are our choice: three
/// blocks of 32, 64 and 128 3x3 "same" filters, dropout 0.5, 128 dense units.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeAppCnnConfig {
    /// Input `(channels, height, width)`; 1 channel for the report's grayscale crops.
    pub input: (usize, usize, usize),
    /// Filters of each conv block, in order.
    pub filters: Vec<usize>,
    /// Units of the hidden dense layer.
    pub dense: usize,
    /// Dropout probability before the dense layer and before the output layer.
    pub dropout: f32,
    /// The task, which fixes the number of outputs.
    pub task: Task,
}

impl Default for FakeAppCnnConfig {
    /// 1x96x96, filters 32/64/128, 128 dense units, dropout 0.5, binary.
    fn default() -> Self {
        FakeAppCnnConfig {
            input: (1, 96, 96),
            filters: vec![32, 64, 128],
            dense: 128,
            dropout: 0.5,
            task: Task::Binary,
        }
    }
}

/// The FakeApp report's custom CNN (sizes: see [`FakeAppCnnConfig`]): per block a 3x3 "same"
/// conv, BatchNorm, ReLU and a 2x2 max-pool; then flatten, dropout, dense + ReLU, dropout,
/// output logits. Parameters: `features.{i}.conv.*`, `features.{i}.bn.*`, `fc.*`, `head.*`.
#[derive(Debug, Clone)]
pub struct FakeAppCnn {
    blocks: Vec<(Conv2d, BatchNorm)>,
    dropout: Dropout,
    fc: Linear,
    head: Linear,
}

impl FakeAppCnn {
    /// Builds the model; fails when the input is too small for the poolings.
    pub fn new(config: &FakeAppCnnConfig, vb: VarBuilder) -> Result<FakeAppCnn> {
        let (mut c, mut h, mut w) = config.input;
        let conv_cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let mut blocks = Vec::with_capacity(config.filters.len());
        for (i, &out) in config.filters.iter().enumerate() {
            let vb = vb.pp(format!("features.{i}"));
            let conv = candle_nn::conv2d(c, out, 3, conv_cfg, vb.pp("conv"))?;
            blocks.push((conv, batch_norm(out, vb.pp("bn"))?));
            c = out;
            h /= 2;
            w /= 2;
        }
        if h == 0 || w == 0 {
            candle_core::bail!("input {:?} is too small for {} blocks", config.input, blocks.len());
        }
        Ok(FakeAppCnn {
            blocks,
            dropout: Dropout::new(config.dropout),
            fc: candle_nn::linear(c * h * w, config.dense, vb.pp("fc"))?,
            head: candle_nn::linear(config.dense, config.task.outputs(), vb.pp("head"))?,
        })
    }
}

impl ModuleT for FakeAppCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = xs.clone();
        for (conv, bn) in &self.blocks {
            x = max_pool(&bn.forward_t(&conv.forward(&x)?, train)?.relu()?, 2, 2, 0)?;
        }
        let x = self.dropout.forward_t(&x.flatten_from(1)?, train)?;
        let x = self.dropout.forward_t(&self.fc.forward(&x)?.relu()?, train)?;
        self.head.forward(&x)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backbone::test_util::{assert_all_grads, max_abs_diff, names};
    use candle_core::{DType, Device};
    use candle_nn::{Optimizer, VarMap};

    /// Trains `model` with Adam on 8 fixed samples of shape `dims` (label = sample index parity)
    /// and returns the final binary cross-entropy.
    pub(crate) fn overfit<M: ModuleT>(
        model: &M,
        varmap: &VarMap,
        dims: (usize, usize, usize),
        steps: usize,
        lr: f64,
    ) -> f32 {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (8, dims.0, dims.1, dims.2), &dev).unwrap();
        let y = Tensor::new(&[[0f32], [1.], [0.], [1.], [0.], [1.], [0.], [1.]], &dev).unwrap();
        let vars: Vec<_> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| !crate::backbone::is_buffer(n))
            .map(|(_, v)| v.clone())
            .collect();
        let params = candle_nn::ParamsAdamW { lr, weight_decay: 0.0, ..Default::default() };
        let mut opt = candle_nn::AdamW::new(vars, params).unwrap();
        let mut last = f32::INFINITY;
        for _ in 0..steps {
            let logits = model.forward_t(&x, true).unwrap();
            let loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, &y).unwrap();
            opt.backward_step(&loss).unwrap();
            last = loss.to_scalar::<f32>().unwrap();
            if last < 0.05 {
                break;
            }
        }
        last
    }

    fn vb(varmap: &VarMap) -> VarBuilder<'_> {
        VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu)
    }

    #[test]
    fn lenet_shapes_names_and_gradients() {
        let varmap = VarMap::new();
        let task = Task::MultiClass(3);
        let model =
            LeNetLike::new(&LeNetLikeConfig { input: (1, 48, 40), task }, vb(&varmap)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 48, 40), &Device::Cpu).unwrap();
        let y = model.forward_t(&x, true).unwrap();
        assert_eq!(y.dims(), &[2, 3]);
        // No BatchNorm or Dropout: both modes agree.
        assert!(max_abs_diff(&y, &model.forward_t(&x, false).unwrap()) < 1e-7);
        assert_all_grads(&varmap, &y.sqr().unwrap().sum_all().unwrap(), &[]);
        let names = names(&varmap);
        assert_eq!(names.len(), 10);
        let data = varmap.data().lock().unwrap();
        // 48x40 -> 44x36 -> 22x18 -> 18x14 -> 9x7.
        assert_eq!(data["fc1.weight"].dims(), &[120, 16 * 9 * 7]);
        assert_eq!(data["conv1.weight"].dims(), &[6, 1, 5, 5]);
        assert_eq!(data["fc3.bias"].dims(), &[3]);
        drop(data);
        let tiny = LeNetLikeConfig { input: (1, 12, 40), task: Task::Binary };
        assert!(LeNetLike::new(&tiny, vb(&VarMap::new())).is_err());
    }

    #[test]
    fn lenet_default_flattens_96x96() {
        let varmap = VarMap::new();
        LeNetLike::new(&LeNetLikeConfig::default(), vb(&varmap)).unwrap();
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["fc1.weight"].dims(), &[120, 16 * 21 * 21]);
    }

    #[test]
    fn lenet_overfits_eight_samples() {
        let varmap = VarMap::new();
        let cfg = LeNetLikeConfig { input: (1, 24, 20), task: Task::Binary };
        let model = LeNetLike::new(&cfg, vb(&varmap)).unwrap();
        let loss = overfit(&model, &varmap, (1, 24, 20), 300, 3e-3);
        assert!(loss < 0.1, "loss stayed at {loss}");
    }

    #[test]
    fn fakeapp_shapes_names_modes_and_gradients() {
        let varmap = VarMap::new();
        let cfg = FakeAppCnnConfig {
            input: (1, 48, 40),
            filters: vec![4, 8, 16],
            dense: 8,
            ..Default::default()
        };
        let model = FakeAppCnn::new(&cfg, vb(&varmap)).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 1, 48, 40), &Device::Cpu).unwrap();
        let train = model.forward_t(&x, true).unwrap();
        let eval = model.forward_t(&x, false).unwrap();
        assert_eq!(train.dims(), &[2, 1]);
        assert_eq!(eval.dims(), &[2, 1]);
        assert!(max_abs_diff(&train, &eval) > 1e-6);
        assert_all_grads(&varmap, &train.sqr().unwrap().sum_all().unwrap(), &[]);
        // 3 x (conv 2 + BN 4) + fc 2 + head 2.
        assert_eq!(names(&varmap).len(), 22);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["features.2.conv.weight"].dims(), &[16, 8, 3, 3]);
        assert_eq!(data["features.0.bn.running_var"].dims(), &[4]);
        assert_eq!(data["fc.weight"].dims(), &[8, 16 * 6 * 5]);
        assert_eq!(data["head.weight"].dims(), &[1, 8]);
    }
}
