//! The FakeApp report's two small real/fake CNNs for 96x96 grayscale face crops:
//! [`LeNetLike`] and [`FakeAppCnn`].
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::{LeNetLike, LeNetLikeConfig};
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let model = LeNetLike::new(&LeNetLikeConfig::default(), vb)?;
//! let x = Tensor::zeros((2, 1, 96, 96), DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward_t(&x, false)?.dims(), &[2, 1]);
//! # Ok::<(), deeprecog_classifiers::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use deeprecog_nn::conv::Conv2dParams;
use deeprecog_nn::dropout::SeededDropout;
use deeprecog_nn::layers::Linear;
use deeprecog_nn::layers::{conv2d, Conv2d};
use serde::{Deserialize, Serialize};

use crate::backbone::batch_norm;
use crate::layers::{max_pool, BatchNorm};
use crate::{Error, Task};

/// Configuration of [`LeNetLike`]; the default is the report's 1x96x96 binary model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub fn new(config: &LeNetLikeConfig, vb: VarBuilder) -> crate::Result<LeNetLike> {
        let (c, h, w) = config.input;
        let out = |n: usize| conv_pool(n, 5).and_then(|v| conv_pool(v, 5));
        let (Some(h2), Some(w2)) = (out(h), out(w)) else {
            let need = "two 5x5 valid convs and 2x2 poolings (at least 16x16)";
            return Err(Error::too_small("LeNetLike", config.input, need));
        };
        if c == 0 {
            return Err(Error::config("LeNetLikeConfig", "the input needs at least one channel"));
        }
        let cfg = Conv2dParams::default();
        Ok(LeNetLike {
            conv1: conv2d(c, 6, 5, cfg, vb.pp("conv1"))?,
            conv2: conv2d(6, 16, 5, cfg, vb.pp("conv2"))?,
            fc1: deeprecog_nn::layers::linear(16 * h2 * w2, 120, vb.pp("fc1"))?,
            fc2: deeprecog_nn::layers::linear(120, 84, vb.pp("fc2"))?,
            fc3: deeprecog_nn::layers::linear(84, config.task.outputs(), vb.pp("fc3"))?,
        })
    }
}

impl LeNetLike {
    /// The second conv/pool stage's output `(N, 16, H', W')`, before the flatten (timm's split;
    /// `forward_t(x) == forward_head(forward_features(x))`). No BatchNorm or Dropout, so
    /// `train` changes nothing.
    pub fn forward_features(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        let x = max_pool(&self.conv1.forward_relu(xs)?, 2, 2, 0)?;
        max_pool(&self.conv2.forward_relu(&x)?, 2, 2, 0)
    }

    /// The logits from [`LeNetLike::forward_features`]' output: flatten, fc1, fc2, fc3.
    pub fn forward_head(&self, features: &Tensor, _train: bool) -> Result<Tensor> {
        let x = self.fc1.forward(&features.flatten_from(1)?)?.relu()?;
        self.fc3.forward(&self.fc2.forward(&x)?.relu()?)
    }
}

impl ModuleT for LeNetLike {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(xs, train)?, train)
    }
}

/// Configuration of [`FakeAppCnn`].
///
/// The FakeApp report names its "custom CNN" (conv blocks with BatchNorm and max-pooling,
/// dropout, a dense layer) but gives no exact layer sizes; the defaults are our choice: three
/// blocks of 32, 64 and 128 3x3 "same" filters, dropout 0.5, 128 dense units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Seeds the dropout masks (candle's own dropout cannot be seeded), so that training
    /// repeats exactly.
    #[serde(default)]
    pub seed: u64,
}

impl Default for FakeAppCnnConfig {
    /// 1x96x96, filters 32/64/128, 128 dense units, dropout 0.5, binary, seed 0.
    fn default() -> Self {
        FakeAppCnnConfig {
            input: (1, 96, 96),
            filters: vec![32, 64, 128],
            dense: 128,
            dropout: 0.5,
            task: Task::Binary,
            seed: 0,
        }
    }
}

/// The FakeApp report's custom CNN (sizes: see [`FakeAppCnnConfig`]): per block a 3x3 "same"
/// conv, BatchNorm, ReLU and a 2x2 max-pool; then flatten, dropout, dense + ReLU, dropout,
/// output logits. Parameters: `features.{i}.conv.*`, `features.{i}.bn.*`, `fc.*`, `head.*`.
#[derive(Debug, Clone)]
pub struct FakeAppCnn {
    blocks: Vec<(Conv2d, BatchNorm)>,
    dropout: SeededDropout,
    fc: Linear,
    head: Linear,
}

impl FakeAppCnn {
    /// Builds the model; fails when the input is too small for the poolings.
    pub fn new(config: &FakeAppCnnConfig, vb: VarBuilder) -> crate::Result<FakeAppCnn> {
        let (mut c, mut h, mut w) = config.input;
        let n = config.filters.len();
        if c == 0 || config.dense == 0 || config.filters.contains(&0) {
            return Err(Error::config(
                "FakeAppCnnConfig",
                "channels, filters and dense units must be positive",
            ));
        }
        if n >= usize::BITS as usize || (h >> n) == 0 || (w >> n) == 0 {
            return Err(Error::too_small("FakeAppCnn", config.input, format!("{n} 2x2 poolings")));
        }
        let conv_cfg = Conv2dParams { padding: 1, ..Default::default() };
        let mut blocks = Vec::with_capacity(config.filters.len());
        for (i, &out) in config.filters.iter().enumerate() {
            let vb = vb.pp(format!("features.{i}"));
            let conv = conv2d(c, out, 3, conv_cfg, vb.pp("conv"))?;
            blocks.push((conv, batch_norm(out, vb.pp("bn"))?));
            c = out;
            h /= 2;
            w /= 2;
        }
        Ok(FakeAppCnn {
            blocks,
            dropout: SeededDropout::new(
                config.dropout,
                config.seed,
                &crate::layers::dropout_key(&vb),
            )?,
            fc: deeprecog_nn::layers::linear(c * h * w, config.dense, vb.pp("fc"))?,
            head: deeprecog_nn::layers::linear(config.dense, config.task.outputs(), vb.pp("head"))?,
        })
    }
}

impl FakeAppCnn {
    /// The last conv block's output `(N, filters.last(), H', W')`, before the flatten (timm's
    /// split; `forward_t(x) == forward_head(forward_features(x))`).
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = xs.clone();
        for (conv, bn) in &self.blocks {
            x = max_pool(&bn.forward_relu_t(&conv.forward(&x)?, train)?, 2, 2, 0)?;
        }
        Ok(x)
    }

    /// The logits from [`FakeAppCnn::forward_features`]' output: flatten, dropout, dense +
    /// ReLU, dropout, output layer.
    pub fn forward_head(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.dropout.forward_t(&features.flatten_from(1)?, train)?;
        let x = self.dropout.forward_t(&self.fc.forward(&x)?.relu()?, train)?;
        self.head.forward(&x)
    }
}

impl ModuleT for FakeAppCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(xs, train)?, train)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backbone::test_util::{assert_all_grads, max_abs_diff, names, randn, vb};
    use candle_core::Device;
    use candle_nn::{Optimizer, VarMap};

    /// What [`overfit`] saw.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Overfit {
        /// The last training loss.
        pub last: f32,
        /// Steps taken (it stops early below 0.05).
        pub steps: usize,
        /// The largest |logit| of any step.
        pub max_logit: f32,
    }

    /// Trains `model` with Adam on 8 fixed samples of shape `dims` drawn from `seed` (label =
    /// sample index parity) until the loss falls below 0.05 or after `steps` steps.
    ///
    /// The loss is `deeprecog_nn::loss::bce_with_logits` (`max(x, 0) - x t + log(1 + e^-|x|)`),
    /// the one training uses, and NOT candle's `binary_cross_entropy_with_logit`, which this
    /// helper used when `meso4_overfits_eight_samples` failed with a NaN loss: candle computes
    /// `t log(sigmoid(x)) + (1 - t) log(1 - sigmoid(x))`, and in f32 `sigmoid(x)` rounds to
    /// exactly 1 for x > 16.64, so a positive sample predicted confidently (and correctly) gives
    /// `0 * log(0) = 0 * -inf = NaN`; the NaN gradient then turns every weight into NaN. Meso4
    /// reaches such logits within a step or two (see `meso.rs`), the other models rarely.
    pub(crate) fn overfit<M: ModuleT>(
        model: &M,
        varmap: &VarMap,
        dims: (usize, usize, usize),
        seed: u64,
        steps: usize,
        lr: f64,
    ) -> Overfit {
        let dev = Device::Cpu;
        let x = randn(seed, (8, dims.0, dims.1, dims.2));
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
        let mut out = Overfit { last: f32::INFINITY, steps: 0, max_logit: 0.0 };
        for _ in 0..steps {
            let logits = model.forward_t(&x, true).unwrap();
            let m = logits.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            out.max_logit = out.max_logit.max(m);
            let loss = deeprecog_nn::loss::bce_with_logits(&logits, &y).unwrap();
            opt.backward_step(&loss).unwrap();
            out.last = loss.to_scalar::<f32>().unwrap();
            out.steps += 1;
            if out.last < 0.05 || !out.last.is_finite() {
                break;
            }
        }
        out
    }

    #[test]
    fn lenet_shapes_names_and_gradients() {
        let varmap = VarMap::new();
        let task = Task::MultiClass(3);
        let model =
            LeNetLike::new(&LeNetLikeConfig { input: (1, 48, 40), task }, vb(&varmap, 0)).unwrap();
        let x = randn(1, (2, 1, 48, 40));
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
        let err = LeNetLike::new(&tiny, vb(&VarMap::new(), 0)).unwrap_err();
        assert!(matches!(err, Error::InputTooSmall { input: (1, 12, 40), .. }), "{err}");
    }

    #[test]
    fn lenet_default_flattens_96x96() {
        let varmap = VarMap::new();
        LeNetLike::new(&LeNetLikeConfig::default(), vb(&varmap, 0)).unwrap();
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["fc1.weight"].dims(), &[120, 16 * 21 * 21]);
    }

    #[test]
    fn lenet_overfits_eight_samples() {
        for seed in 0..2 {
            let varmap = VarMap::new();
            let cfg = LeNetLikeConfig { input: (1, 24, 20), task: Task::Binary };
            let model = LeNetLike::new(&cfg, vb(&varmap, seed)).unwrap();
            let run = overfit(&model, &varmap, (1, 24, 20), seed, 300, 3e-3);
            assert!(run.last < 0.1, "seed {seed}: {run:?}");
        }
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
        let model = FakeAppCnn::new(&cfg, vb(&varmap, 0)).unwrap();
        let x = randn(1, (2, 1, 48, 40));
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
        drop(data);
        let tiny = FakeAppCnnConfig { input: (1, 7, 40), ..cfg };
        assert!(matches!(
            FakeAppCnn::new(&tiny, vb(&VarMap::new(), 0)),
            Err(Error::InputTooSmall { .. })
        ));
    }

    #[test]
    fn fakeapp_dropout_is_seeded() {
        let cfg = FakeAppCnnConfig {
            input: (1, 16, 24),
            filters: vec![4, 8],
            dense: 8,
            seed: 3,
            ..Default::default()
        };
        let x = randn(1, (2, 1, 16, 24));
        let run = |cfg: &FakeAppCnnConfig| {
            let model = FakeAppCnn::new(cfg, vb(&VarMap::new(), 0)).unwrap();
            model.forward_t(&x, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(&cfg), run(&cfg));
        assert_ne!(run(&cfg), run(&FakeAppCnnConfig { seed: 4, ..cfg.clone() }));
    }

    #[test]
    fn configs_round_trip_through_json() {
        let lenet = LeNetLikeConfig { input: (1, 48, 40), task: Task::MultiClass(3) };
        let json = serde_json::to_string(&lenet).unwrap();
        assert_eq!(serde_json::from_str::<LeNetLikeConfig>(&json).unwrap(), lenet);
        let fakeapp = FakeAppCnnConfig {
            input: (3, 64, 48),
            filters: vec![8, 16],
            dense: 32,
            dropout: 0.3,
            task: Task::Binary,
            seed: 11,
        };
        let json = serde_json::to_string(&fakeapp).unwrap();
        assert_eq!(serde_json::from_str::<FakeAppCnnConfig>(&json).unwrap(), fakeapp);
    }
}
