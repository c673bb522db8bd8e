//! MesoNet (Afchar et al. 2018, "MesoNet: a Compact Facial Video Forgery Detection Network"):
//! [`Meso4`] and [`MesoInception4`], layer for layer as the authors' Keras code builds them.
//!
//! Faithful to the reference: every conv has a bias and is followed by ReLU *then* BatchNorm;
//! BatchNorm uses Keras' defaults (epsilon 1e-3, moving-average momentum 0.99, i.e. candle's
//! momentum 0.01); max-pooling is Keras' `padding="same"` (`ceil(n / k)` outputs). The paper
//! feeds 256x256 RGB; other sizes work, the first dense layer's input being computed from the
//! configured size. Our flatten is NCHW (Keras flattens NHWC), which only matters when porting
//! Keras weights. Parameter names are ours, in PyTorch style (see each model).
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::{Meso4, MesoConfig};
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let model = Meso4::new(&MesoConfig { input: (3, 64, 48), ..Default::default() }, vb)?;
//! let x = Tensor::zeros((2, 3, 64, 48), DType::F32, &Device::Cpu)?;
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

use crate::layers::{keras_same_max_pool, keras_same_out, BatchNorm};
use crate::{Error, Task};

/// Configuration of [`Meso4`] and [`MesoInception4`]; the default is the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MesoConfig {
    /// Input `(channels, height, width)` (3x256x256 in the paper).
    pub input: (usize, usize, usize),
    /// Dropout probability of both dropout layers (0.5).
    pub dropout: f32,
    /// The task, which fixes the number of outputs (binary: one logit; the sigmoid lives in the
    /// loss).
    pub task: Task,
    /// Seeds the dropout masks (candle's own dropout cannot be seeded), so that training
    /// repeats exactly.
    #[serde(default)]
    pub seed: u64,
}

impl Default for MesoConfig {
    /// 3x256x256, dropout 0.5, binary, seed 0.
    fn default() -> Self {
        MesoConfig { input: (3, 256, 256), dropout: 0.5, task: Task::Binary, seed: 0 }
    }
}

fn check_channels(config: &MesoConfig) -> crate::Result<usize> {
    match config.input.0 {
        0 => Err(Error::config("MesoConfig", "the input needs at least one channel")),
        c => Ok(c),
    }
}

/// Keras' `BatchNormalization()` defaults.
fn keras_batch_norm(channels: usize, vb: VarBuilder) -> crate::Result<BatchNorm> {
    BatchNorm::new(channels, 1e-3, 0.01, vb)
}

/// Keras' `Conv2D(cout, k, padding="same", dilation_rate=d)` with bias (odd `k`).
fn same_conv(cin: usize, cout: usize, k: usize, d: usize, vb: VarBuilder) -> Result<Conv2d> {
    let config = Conv2dParams { padding: d * (k - 1) / 2, dilation: d, ..Default::default() };
    conv2d(cin, cout, k, config, vb)
}

/// The later "meso" stages shared by both models: conv (+ ReLU) + BatchNorm + same max-pool.
#[derive(Debug, Clone)]
struct ConvStage {
    conv: Conv2d,
    bn: BatchNorm,
    pool: usize,
}

impl ConvStage {
    fn new(
        cin: usize,
        cout: usize,
        k: usize,
        pool: usize,
        i: usize,
        vb: &VarBuilder,
    ) -> Result<Self> {
        Ok(ConvStage {
            conv: same_conv(cin, cout, k, 1, vb.pp(format!("conv{i}")))?,
            bn: keras_batch_norm(cout, vb.pp(format!("bn{i}")))?,
            pool,
        })
    }
}

impl ModuleT for ConvStage {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn.forward_t(&self.conv.forward_relu(x)?, train)?;
        keras_same_max_pool(&y, self.pool)
    }
}

/// Flatten, dropout, dense 16, LeakyReLU(0.1), dropout, output dense: `fc1.*`, `fc2.*`.
#[derive(Debug, Clone)]
struct MesoHead {
    dropout: SeededDropout,
    fc1: Linear,
    fc2: Linear,
}

impl MesoHead {
    /// `channels` of the last stage; the four poolings (2, 2, 2, 4) fix its spatial size.
    fn new(channels: usize, config: &MesoConfig, vb: &VarBuilder) -> crate::Result<MesoHead> {
        let (_, h, w) = config.input;
        if h == 0 || w == 0 {
            return Err(Error::too_small("MesoNet", config.input, "a non-empty image"));
        }
        let pooled = |n: usize| [2, 2, 2, 4].into_iter().fold(n, keras_same_out);
        let flat = channels * pooled(h) * pooled(w);
        Ok(MesoHead {
            dropout: SeededDropout::new(
                config.dropout,
                config.seed,
                &crate::layers::dropout_key(vb),
            )?,
            fc1: deeprecog_nn::layers::linear(flat, 16, vb.pp("fc1"))?,
            fc2: deeprecog_nn::layers::linear(16, config.task.outputs(), vb.pp("fc2"))?,
        })
    }
}

impl ModuleT for MesoHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.dropout.forward_t(&x.flatten_from(1)?, train)?;
        let x = self.fc1.forward(&x)?;
        let x = x.maximum(&(&x * 0.1)?)?;
        self.fc2.forward(&self.dropout.forward_t(&x, train)?)
    }
}

/// Meso-4: conv 8 3x3, conv 8 5x5, conv 16 5x5, conv 16 5x5 (each + ReLU + BatchNorm +
/// max-pool 2, 2, 2, 4), then [`MesoConfig`]'s head. Parameters: `conv{1..4}.{weight,bias}`,
/// `bn{1..4}.*`, `fc1.*`, `fc2.*` (28 variables; 27,977 trainable weights at 256x256).
#[derive(Debug, Clone)]
pub struct Meso4 {
    stages: Vec<ConvStage>,
    head: MesoHead,
}

impl Meso4 {
    /// Builds the model.
    pub fn new(config: &MesoConfig, vb: VarBuilder) -> crate::Result<Meso4> {
        let c = check_channels(config)?;
        let stages = vec![
            ConvStage::new(c, 8, 3, 2, 1, &vb)?,
            ConvStage::new(8, 8, 5, 2, 2, &vb)?,
            ConvStage::new(8, 16, 5, 2, 3, &vb)?,
            ConvStage::new(16, 16, 5, 4, 4, &vb)?,
        ];
        Ok(Meso4 { stages, head: MesoHead::new(16, config, &vb)? })
    }
}

impl Meso4 {
    /// The fourth stage's output `(N, 16, H', W')` (after its 4x4 pooling), before the flatten
    /// (timm's split; `forward_t(x) == forward_head(forward_features(x))`).
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = xs.clone();
        for stage in &self.stages {
            x = stage.forward_t(&x, train)?;
        }
        Ok(x)
    }

    /// The logits from [`Meso4::forward_features`]' output: flatten, dropout, dense 16,
    /// LeakyReLU, dropout, output dense.
    pub fn forward_head(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        self.head.forward_t(features, train)
    }
}

impl ModuleT for Meso4 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(xs, train)?, train)
    }
}

/// MesoNet's inception module: four ReLU branches concatenated on channels, `branch1` a 1x1
/// conv (`branch1.0`), the others a 1x1 conv (`.0`) then a 3x3 conv (`.1`) of dilation 1, 2
/// and 3.
#[derive(Debug, Clone)]
struct Inception {
    branches: Vec<Vec<Conv2d>>,
}

impl Inception {
    fn new(cin: usize, [a, b, c, d]: [usize; 4], vb: VarBuilder) -> Result<Inception> {
        let mut branches = vec![vec![same_conv(cin, a, 1, 1, vb.pp("branch1.0"))?]];
        for (i, (width, dilation)) in [(b, 1), (c, 2), (d, 3)].into_iter().enumerate() {
            let vb = vb.pp(format!("branch{}", i + 2));
            branches.push(vec![
                same_conv(cin, width, 1, 1, vb.pp(0))?,
                same_conv(width, width, 3, dilation, vb.pp(1))?,
            ]);
        }
        Ok(Inception { branches })
    }
}

impl Module for Inception {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut outs = Vec::with_capacity(self.branches.len());
        for branch in &self.branches {
            let mut y = x.clone();
            for conv in branch {
                y = conv.forward_relu(&y)?;
            }
            outs.push(y);
        }
        Tensor::cat(&outs, 1)
    }
}

/// MesoInception-4: inception (1, 4, 4, 2) and inception (2, 4, 4, 2), each + BatchNorm +
/// max-pool 2, then Meso-4's conv 16 5x5 stages (pools 2 and 4) and head. Parameters:
/// `inception{1,2}.branch{1..4}.{0,1}.*`, `bn{1..4}.*`, `conv{3,4}.*`, `fc1.*`, `fc2.*`.
#[derive(Debug, Clone)]
pub struct MesoInception4 {
    inceptions: Vec<(Inception, BatchNorm)>,
    stages: Vec<ConvStage>,
    head: MesoHead,
}

impl MesoInception4 {
    /// Builds the model.
    pub fn new(config: &MesoConfig, vb: VarBuilder) -> crate::Result<MesoInception4> {
        let c = check_channels(config)?;
        let inceptions = vec![
            (
                Inception::new(c, [1, 4, 4, 2], vb.pp("inception1"))?,
                keras_batch_norm(11, vb.pp("bn1"))?,
            ),
            (
                Inception::new(11, [2, 4, 4, 2], vb.pp("inception2"))?,
                keras_batch_norm(12, vb.pp("bn2"))?,
            ),
        ];
        let stages =
            vec![ConvStage::new(12, 16, 5, 2, 3, &vb)?, ConvStage::new(16, 16, 5, 4, 4, &vb)?];
        Ok(MesoInception4 { inceptions, stages, head: MesoHead::new(16, config, &vb)? })
    }
}

impl MesoInception4 {
    /// The last conv stage's output `(N, 16, H', W')` (after its 4x4 pooling), before the
    /// flatten (timm's split; `forward_t(x) == forward_head(forward_features(x))`).
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = xs.clone();
        for (inception, bn) in &self.inceptions {
            x = keras_same_max_pool(&bn.forward_t(&inception.forward(&x)?, train)?, 2)?;
        }
        for stage in &self.stages {
            x = stage.forward_t(&x, train)?;
        }
        Ok(x)
    }

    /// The logits from [`MesoInception4::forward_features`]' output (Meso-4's head).
    pub fn forward_head(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        self.head.forward_t(features, train)
    }
}

impl ModuleT for MesoInception4 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(xs, train)?, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::test_util::{assert_all_grads, max_abs_diff, names, randn, vb};
    use crate::lenet::tests::overfit;
    use candle_nn::VarMap;

    fn trainable_weights(varmap: &VarMap) -> usize {
        let data = varmap.data().lock().unwrap();
        data.iter()
            .filter(|(n, _)| !crate::backbone::is_buffer(n))
            .map(|(_, v)| v.elem_count())
            .sum()
    }

    fn check<M: ModuleT>(model: &M, varmap: &VarMap) {
        // 40x56 -> pools 2, 2, 2 -> 5x7 -> pool 4 (same) -> 2x2.
        let x = randn(1, (2, 3, 40, 56));
        let train = model.forward_t(&x, true).unwrap();
        let eval = model.forward_t(&x, false).unwrap();
        assert_eq!(train.dims(), &[2, 1]);
        assert_eq!(eval.dims(), &[2, 1]);
        assert!(max_abs_diff(&train, &eval) > 1e-6);
        assert_all_grads(varmap, &train.sqr().unwrap().sum_all().unwrap(), &[]);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["fc1.weight"].dims(), &[16, 16 * 2 * 2]);
    }

    #[test]
    fn meso4_shapes_names_modes_and_gradients() {
        let varmap = VarMap::new();
        let cfg = MesoConfig { input: (3, 40, 56), ..Default::default() };
        let model = Meso4::new(&cfg, vb(&varmap, 0)).unwrap();
        check(&model, &varmap);
        // 4 convs x 2 + 4 BNs x 4 + 2 dense x 2.
        assert_eq!(names(&varmap).len(), 28);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["conv1.weight"].dims(), &[8, 3, 3, 3]);
        assert_eq!(data["conv2.weight"].dims(), &[8, 8, 5, 5]);
        assert_eq!(data["conv4.bias"].dims(), &[16]);
        assert_eq!(data["bn3.running_mean"].dims(), &[16]);
        assert_eq!(data["fc2.weight"].dims(), &[1, 16]);
    }

    #[test]
    fn paper_sizes_match_the_keras_summary() {
        // The reference Meso4 at 256x256 has 27,977 trainable parameters (MesoInception4
        // 28,615, both as in the paper; BatchNorm's gamma and beta included, moving statistics
        // excluded): 8x8x16 flatten -> 1024 x 16 dense.
        let varmap = VarMap::new();
        Meso4::new(&MesoConfig::default(), vb(&varmap, 0)).unwrap();
        assert_eq!(trainable_weights(&varmap), 27_977);
        let varmap = VarMap::new();
        MesoInception4::new(&MesoConfig::default(), vb(&varmap, 0)).unwrap();
        assert_eq!(trainable_weights(&varmap), 28_615);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["fc1.weight"].dims(), &[16, 1024]);
        assert_eq!(data["inception1.branch3.1.weight"].dims(), &[4, 4, 3, 3]);
    }

    #[test]
    fn meso_inception4_shapes_names_modes_and_gradients() {
        let varmap = VarMap::new();
        let cfg = MesoConfig { input: (3, 40, 56), ..Default::default() };
        let model = MesoInception4::new(&cfg, vb(&varmap, 0)).unwrap();
        check(&model, &varmap);
        // 2 inceptions x 7 convs x 2 + 4 BNs x 4 + 2 convs x 2 + 2 dense x 2.
        assert_eq!(names(&varmap).len(), 28 + 16 + 4 + 4);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["inception1.branch1.0.weight"].dims(), &[1, 3, 1, 1]);
        assert_eq!(data["inception2.branch4.1.weight"].dims(), &[2, 2, 3, 3]);
        assert_eq!(data["bn1.weight"].dims(), &[11]);
        assert_eq!(data["bn2.weight"].dims(), &[12]);
        assert_eq!(data["conv3.weight"].dims(), &[16, 12, 5, 5]);
    }

    #[test]
    fn config_round_trips_and_dropout_is_seeded() {
        let cfg = MesoConfig { input: (3, 40, 56), dropout: 0.5, task: Task::Binary, seed: 7 };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<MesoConfig>(&json).unwrap(), cfg);
        // A config written before the seed existed still reads (seed 0).
        let old = r#"{"input":[3,40,56],"dropout":0.5,"task":"Binary"}"#;
        assert_eq!(serde_json::from_str::<MesoConfig>(old).unwrap().seed, 0);
        let x = randn(1, (2, 3, 40, 56));
        let run = |cfg: &MesoConfig| {
            let model = Meso4::new(cfg, vb(&VarMap::new(), 0)).unwrap();
            model.forward_t(&x, true).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(&cfg), run(&cfg));
        assert_ne!(run(&cfg), run(&MesoConfig { seed: 8, ..cfg.clone() }));
    }

    fn meso4_overfit(seed: u64) -> crate::lenet::tests::Overfit {
        let varmap = VarMap::new();
        let cfg = MesoConfig { input: (3, 32, 40), dropout: 0.0, task: Task::Binary, seed };
        let model = Meso4::new(&cfg, vb(&varmap, seed)).unwrap();
        overfit(&model, &varmap, (3, 32, 40), seed, 300, 1e-2)
    }

    /// Meso4 once failed here with a NaN loss (CI, a fresh clone, second run of the suite). The
    /// cause was the loss, not the model: the helper used candle's
    /// `binary_cross_entropy_with_logit`, which is NaN as soon as a positive sample's logit
    /// exceeds 16.64 (see `lenet::tests::overfit`). Meso4 gets there easily because of its Keras
    /// layer order, conv -> ReLU -> BatchNorm: a channel that the ReLU leaves active at only a
    /// few of the N x H x W positions of a small batch is normalised to spikes of up to
    /// sqrt(N H W), and one Adam step that makes such a channel sparser makes its spike larger.
    /// In a 200-seed sweep with candle's loss, seed 128 had 40 of 2560 positions of `bn2`'s
    /// channel 2 active (spike 29.6) at step 0, and one step of lr 1e-2 moved sample 7's logit
    /// from -1.57 to 22.45: a right answer, loss 0.110 by the stable formula, NaN by candle's.
    /// That seed went NaN, 6 more peaked between 13.4 and 16.2. With the stable loss, 200 of 200
    /// seeds of this test converge within 8 steps (one seed's largest logit is 20.9, harmless).
    /// The model is the paper's and stays as it is.
    #[test]
    fn meso4_overfits_eight_samples() {
        for seed in 0..3 {
            let run = meso4_overfit(seed);
            assert!(run.last < 0.1, "seed {seed}: {run:?}");
        }
    }

    /// `SEEDS=n cargo test -p deeprecog-classifiers --lib meso::tests::meso4_overfit_seed_sweep
    /// -- --ignored --nocapture`: [`meso4_overfits_eight_samples`] over seeds `0..n` (default
    /// 100).
    #[test]
    #[ignore = "a sweep over many seeds; run on demand"]
    fn meso4_overfit_seed_sweep() {
        let n = std::env::var("SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(100u64);
        let mut failed = Vec::new();
        for seed in 0..n {
            let run = meso4_overfit(seed);
            eprintln!("seed {seed}: {run:?}");
            if run.last.is_nan() || run.last >= 0.1 {
                failed.push(seed);
            }
        }
        assert!(failed.is_empty(), "failed seeds: {failed:?}");
    }
}
