//! Classification heads that go on top of a backbone's pooled features.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::{SeedHead, SeedHeadConfig};
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let head = SeedHead::new(&SeedHeadConfig { in_features: 1280, ..Default::default() }, vb)?;
//! let pooled = Tensor::zeros((4, 1280), DType::F32, &Device::Cpu)?;
//! assert_eq!(head.forward_t(&pooled, false)?.dims(), &[4, 1]);
//! # Ok::<(), deeprecog_classifiers::Error>(())
//! ```

use candle_core::{Module, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use deeprecog_nn::dropout::SeededDropout;
use deeprecog_nn::layers::Linear;
use serde::{Deserialize, Serialize};

use crate::backbone::{batch_norm, Backbone};
use crate::layers::BatchNorm;
use crate::{Error, Result, Task};

/// Configuration of [`SeedHead`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedHeadConfig {
    /// Size of the input features (a backbone's [`Backbone::num_features`]).
    pub in_features: usize,
    /// Units of the hidden layers, one Linear/BatchNorm/ReLU/Dropout block each.
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden block.
    pub dropout: f32,
    /// The task, which fixes the number of outputs.
    pub task: Task,
    /// Seeds the dropout masks (candle's own dropout cannot be seeded), so that a training run
    /// repeats exactly. The weights are seeded by the `VarBuilder` (see
    /// `deeprecog_nn::init::seeded_var_builder`).
    pub seed: u64,
}

impl Default for SeedHeadConfig {
    /// The report's head: hidden `[512, 256, 128]`, dropout 0.5, binary, on 1280 features
    /// (MobileNetV2's), seed 0.
    fn default() -> Self {
        SeedHeadConfig {
            in_features: 1280,
            hidden: vec![512, 256, 128],
            dropout: 0.5,
            task: Task::Binary,
            seed: 0,
        }
    }
}

/// The attractiveness report's transfer head: per hidden size, Linear -> BatchNorm1d -> ReLU ->
/// Dropout, then a Linear to the task's outputs (logits).
///
/// Parameters: `blocks.{i}.linear.*`, `blocks.{i}.bn.*`, `out.*`.
#[derive(Debug, Clone)]
pub struct SeedHead {
    blocks: Vec<(Linear, BatchNorm)>,
    dropout: SeededDropout,
    out: Linear,
}

impl SeedHead {
    /// Builds the head under `vb`'s prefix.
    pub fn new(config: &SeedHeadConfig, vb: VarBuilder) -> Result<SeedHead> {
        if config.in_features == 0 || config.task.outputs() == 0 || config.hidden.contains(&0) {
            return Err(Error::config(
                "SeedHeadConfig",
                format!("inputs, outputs and hidden sizes must be positive, got {config:?}"),
            ));
        }
        let mut blocks = Vec::with_capacity(config.hidden.len());
        let mut inp = config.in_features;
        for (i, &units) in config.hidden.iter().enumerate() {
            let bvb = vb.pp(format!("blocks.{i}"));
            let linear = deeprecog_nn::layers::linear(inp, units, bvb.pp("linear"))?;
            blocks.push((linear, batch_norm(units, bvb.pp("bn"))?));
            inp = units;
        }
        let out = deeprecog_nn::layers::linear(inp, config.task.outputs(), vb.pp("out"))?;
        // Keyed by the prefix so that two heads of one model draw independent masks.
        let key = crate::layers::dropout_key(&vb);
        let dropout = SeededDropout::new(config.dropout, config.seed, &key)?;
        Ok(SeedHead { blocks, dropout, out })
    }
}

impl ModuleT for SeedHead {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = xs.clone();
        for (linear, bn) in &self.blocks {
            x = bn.forward_relu_t(&linear.forward(&x)?, train)?;
            x = self.dropout.forward_t(&x, train)?;
        }
        self.out.forward(&x)
    }
}

/// A backbone's pooled features (`forward_head` with `pre_logits`) fed to a separate head: the
/// report's transfer-learning model. Build the backbone with `num_classes: 0` (or reset its
/// classifier to 0) and the head under its own prefix, e.g. `head`.
#[derive(Debug, Clone)]
pub struct TransferModel<B, H> {
    /// The feature extractor.
    pub backbone: B,
    /// The head on the pooled features.
    pub head: H,
}

impl<B: Backbone, H: ModuleT> TransferModel<B, H> {
    /// The backbone's last feature map `(N, num_features, H', W')` ([`Backbone::forward_features`]),
    /// before global pooling (timm's split; `forward_t(x) == forward_head(forward_features(x))`).
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.backbone.forward_features(xs, train)
    }

    /// The logits from [`TransferModel::forward_features`]' output: the backbone's pooling
    /// (`forward_head` with `pre_logits`), then the head.
    pub fn forward_head(&self, features: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let pooled = self.backbone.forward_head(features, train, true)?;
        self.head.forward_t(&pooled, train)
    }
}

impl<B: Backbone, H: ModuleT> ModuleT for TransferModel<B, H> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_head(&self.forward_features(xs, train)?, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::test_util::{assert_all_grads, max_abs_diff, names, randn, vb};
    use crate::backbone::{apply_freeze, trainable_vars_except, Freeze};
    use crate::{MobileNetV2, MobileNetV2Config};
    use candle_core::{DType, Device};
    use candle_nn::{Optimizer, VarMap};
    use deeprecog_attributes::Attribute;

    #[test]
    fn names_shapes_gradients_and_modes() {
        let varmap = VarMap::new();
        let task = Task::MultiLabel(vec![Attribute::Smiling, Attribute::Male]);
        let cfg =
            SeedHeadConfig { in_features: 24, hidden: vec![16, 8, 4], task, dropout: 0.5, seed: 0 };
        let head = SeedHead::new(&cfg, vb(&varmap, 0)).unwrap();
        let names = names(&varmap);
        assert_eq!(names.len(), 3 * 6 + 2);
        assert!(names.contains(&"blocks.2.bn.running_var".to_string()));
        assert!(names.contains(&"out.weight".to_string()));
        let x = randn(1, (5, 24));
        let eval = head.forward_t(&x, false).unwrap();
        let train = head.forward_t(&x, true).unwrap();
        assert_eq!(train.dims(), &[5, 2]);
        assert!(max_abs_diff(&eval, &train) > 1e-6);
        assert_all_grads(&varmap, &train.sqr().unwrap().sum_all().unwrap(), &[]);
    }

    #[test]
    fn config_round_trips_through_json_and_bad_sizes_are_errors() {
        let cfg = SeedHeadConfig {
            in_features: 24,
            hidden: vec![16, 8],
            dropout: 0.25,
            task: Task::MultiClass(3),
            seed: 9,
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<SeedHeadConfig>(&json).unwrap(), cfg);
        let bad = SeedHeadConfig { hidden: vec![16, 0], ..cfg };
        assert!(matches!(
            SeedHead::new(&bad, vb(&VarMap::new(), 0)),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn seeded_head_repeats_its_training_forward() {
        // Seeded weights and seeded dropout: the same train-mode output twice over.
        let x = Tensor::arange(0f32, 48.0, &Device::Cpu).unwrap().reshape((2, 24)).unwrap();
        let run = |seed| {
            let varmap = VarMap::new();
            let cfg =
                SeedHeadConfig { in_features: 24, hidden: vec![32], seed, ..Default::default() };
            let head = SeedHead::new(&cfg, vb(&varmap, 1).pp("head")).unwrap();
            head.forward_t(&x, true).unwrap().to_vec2::<f32>().unwrap()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    /// Correct predictions of `logits` (> 0 for label 1) against `y`.
    fn correct(logits: &Tensor, y: &Tensor) -> f32 {
        let pred = logits.gt(0f32).unwrap().to_dtype(DType::F32).unwrap();
        pred.eq(y).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap().to_scalar().unwrap()
    }

    /// Trains a [`SeedHead`] on 16 fixed feature vectors; returns (eval correct, eval loss).
    fn head_overfit(seed: u64) -> (f32, f32) {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let cfg = SeedHeadConfig {
            in_features: 32,
            hidden: vec![64, 32, 16],
            seed,
            ..Default::default()
        };
        let head = SeedHead::new(&cfg, vb(&varmap, seed)).unwrap();
        let x = randn(seed, (16, 32));
        let labels: Vec<f32> = (0..16).map(|i| (i % 2) as f32).collect();
        let y = Tensor::from_vec(labels, (16, 1), &dev).unwrap();
        let vars = trainable_vars_except(&varmap, &[]).unwrap();
        let params = candle_nn::ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() };
        let mut opt = candle_nn::AdamW::new(vars, params).unwrap();
        for _ in 0..150 {
            let logits = head.forward_t(&x, true).unwrap();
            let loss = deeprecog_nn::loss::bce_with_logits(&logits, &y).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let logits = head.forward_t(&x, false).unwrap();
        let loss = deeprecog_nn::loss::bce_with_logits(&logits, &y).unwrap();
        (correct(&logits, &y), loss.to_scalar::<f32>().unwrap())
    }

    #[test]
    fn overfits_fixed_features() {
        for seed in 0..2 {
            let (correct, loss) = head_overfit(seed);
            assert_eq!(correct, 16.0, "seed {seed}: eval loss {loss}");
            assert!(loss < 0.2, "seed {seed}: eval loss {loss}");
        }
    }

    /// A frozen random MobileNetV2 with a trained [`SeedHead`] on 8 fixed images, trained until
    /// the train-mode loss is below 0.01 (at most 400 steps); returns the eval-mode (correct,
    /// loss) and the train-mode loss of the last step.
    ///
    /// The test once got 7 of 8 right in CI (unseeded weights and inputs, a fixed 100 steps).
    /// Training fits the 8 images in train mode, but the check runs in eval mode, where the
    /// head's three BatchNorms use running statistics instead of the batch's: statistics that
    /// trail the weights they were gathered under (momentum 0.1), with a variance larger by
    /// n / (n - 1) = 8/7 (unbiased). A sample fitted with a small margin can land on the other
    /// side. Measured over seeds 0..100 (`overfit_seed_sweep`): stopping at a train loss of
    /// 0.05 leaves 89 seeds with an eval-mode mistake, 6 after 30 train-mode passes at the final
    /// weights; stopping at 0.01 leaves 18, and none after the 30 passes (eval loss at most
    /// 0.028), which is what this test does.
    fn transfer_overfit(seed: u64, recalibration_passes: usize) -> (f32, f32, f32) {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let mcfg = MobileNetV2Config { width_mult: 0.25, num_classes: 0, ..Default::default() };
        let mut backbone = MobileNetV2::new(&mcfg, vb(&varmap, seed)).unwrap();
        let x = randn(seed, (8, 3, 24, 40));
        // A random backbone in eval mode with BatchNorm's initial statistics (mean 0, var 1)
        // lets the activations die out; a few train-mode passes set the statistics as
        // pretrained weights would have them.
        for _ in 0..40 {
            backbone.forward_features(&x, true).unwrap();
        }
        let trainable_backbone = apply_freeze(&mut backbone, &varmap, &Freeze::Backbone).unwrap();
        assert!(trainable_backbone.is_empty());
        // Without dropout the check is about the wiring, not about how noisy eight samples are.
        let hcfg =
            SeedHeadConfig { hidden: vec![32, 16, 8], dropout: 0.0, seed, ..Default::default() };
        let head = SeedHead::new(&hcfg, vb(&varmap, seed).pp("head")).unwrap();
        let model = TransferModel { backbone, head };
        let frozen: Vec<String> = (0..19).map(|i| format!("features.{i}")).collect();
        let vars = trainable_vars_except(&varmap, &frozen).unwrap();
        assert_eq!(vars.len(), 3 * 4 + 2);
        let y = Tensor::new(&[[0f32], [1.], [0.], [1.], [1.], [0.], [0.], [1.]], &dev).unwrap();
        let params = candle_nn::ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() };
        let mut opt = candle_nn::AdamW::new(vars, params).unwrap();
        let first = model.forward_t(&x, true).unwrap();
        assert_eq!(first.dims(), &[8, 1]);
        let mut train_loss = f32::INFINITY;
        for _ in 0..400 {
            let logits = model.forward_t(&x, true).unwrap();
            let loss = deeprecog_nn::loss::bce_with_logits(&logits, &y).unwrap();
            train_loss = loss.to_scalar::<f32>().unwrap();
            if train_loss < 0.01 {
                break;
            }
            opt.backward_step(&loss).unwrap();
        }
        // Bring the head's BatchNorm running statistics up to date with the final weights, as
        // the last epoch of a fine-tuning run would (see above).
        for _ in 0..recalibration_passes {
            model.forward_t(&x, true).unwrap();
        }
        let logits = model.forward_t(&x, false).unwrap();
        let loss = deeprecog_nn::loss::bce_with_logits(&logits, &y).unwrap();
        (correct(&logits, &y), loss.to_scalar::<f32>().unwrap(), train_loss)
    }

    #[test]
    fn transfer_model_on_frozen_mobilenet_overfits() {
        for seed in 0..2 {
            let (correct, loss, train_loss) = transfer_overfit(seed, 30);
            assert_eq!(correct, 8.0, "seed {seed}: eval loss {loss}, train loss {train_loss}");
        }
    }

    /// `SEEDS=n cargo test -p deeprecog-classifiers --lib head::tests::overfit_seed_sweep --
    /// --ignored --nocapture`: both overfit tests over seeds `0..n` (default 50), and how many
    /// seeds the transfer test would fail without bringing the BatchNorm statistics up to date.
    #[test]
    #[ignore = "a sweep over many seeds; run on demand"]
    fn overfit_seed_sweep() {
        let n = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(50u64);
        let (mut failed, mut stale) = (Vec::new(), Vec::new());
        for seed in 0..n {
            let (c1, l1) = head_overfit(seed);
            let (c2, l2, t2) = transfer_overfit(seed, 30);
            let (c3, l3, _) = transfer_overfit(seed, 0);
            eprintln!(
                "seed {seed}: head {c1}/16 loss {l1:.4}; transfer {c2}/8 eval loss {l2:.4} \
                 train loss {t2:.4}; without recalibration {c3}/8 eval loss {l3:.4}"
            );
            if c1 != 16.0 || l1 >= 0.2 || c2 != 8.0 {
                failed.push(seed);
            }
            if c3 != 8.0 {
                stale.push(seed);
            }
        }
        eprintln!("without recalibration {} of {n} seeds fail: {stale:?}", stale.len());
        assert!(failed.is_empty(), "failed seeds: {failed:?}");
    }
}
