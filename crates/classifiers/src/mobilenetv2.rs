//! torchvision's `mobilenet_v2()` with its exact `state_dict` names.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::{Backbone, MobileNetV2, MobileNetV2Config};
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let config = MobileNetV2Config { width_mult: 0.25, num_classes: 1, ..Default::default() };
//! let model = MobileNetV2::new(&config, vb)?;
//! let x = Tensor::zeros((1, 3, 32, 48), DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward_t(&x, false)?.dims(), &[1, 1]);
//! assert_eq!(model.forward_features(&x, false)?.dims(), &[1, 1280, 1, 2]);
//! # Ok::<(), deeprecog_classifiers::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, ModuleT, VarBuilder};
use deeprecog_nn::dropout::SeededDropout;
use deeprecog_nn::layers::Linear;
use serde::{Deserialize, Serialize};

use deeprecog_nn::conv::Activation;

use crate::backbone::{batch_norm, global_avg_pool, Backbone, FrozenStages, PretrainedSpec};
use crate::layers::{dropout_key, BatchNorm, Conv};
use crate::Error;

/// torchvision's ImageNet weights for `mobilenet_v2()` (IMAGENET1K_V1).
pub const MOBILENET_V2_SOURCE: &str =
    "https://download.pytorch.org/models/mobilenet_v2-b0353104.pth";

/// `(expansion t, channels c, repeats n, first stride s)` per group of inverted residuals, from
/// the MobileNetV2 paper (table 2) as torchvision writes it.
const INVERTED_RESIDUAL_SETTING: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// Configuration of [`MobileNetV2`]; the default is torchvision's `mobilenet_v2()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MobileNetV2Config {
    /// Channel multiplier (1.0 for the pretrained weights; smaller for quick experiments).
    pub width_mult: f64,
    /// Outputs of the classifier (1000 for ImageNet; 0 for no classifier).
    pub num_classes: usize,
    /// Dropout probability before the classifier.
    pub dropout: f32,
    /// Channel counts are rounded to multiples of this.
    pub round_nearest: usize,
    /// Seeds the dropout masks (candle's own dropout cannot be seeded).
    #[serde(default)]
    pub seed: u64,
}

impl Default for MobileNetV2Config {
    /// Width 1.0, 1000 classes, dropout 0.2, rounding to 8, seed 0.
    fn default() -> Self {
        MobileNetV2Config {
            width_mult: 1.0,
            num_classes: 1000,
            dropout: 0.2,
            round_nearest: 8,
            seed: 0,
        }
    }
}

/// torchvision's `_make_divisible`: rounds to a multiple of `divisor` without going more than
/// 10% below `v`.
fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor.max(1) as f64;
    let mut new_v = (((v + d / 2.0) / d).floor() * d).max(d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// torchvision's `Conv2dNormActivation` with ReLU6: names `{prefix}.0.weight`, `{prefix}.1.*`.
#[derive(Debug, Clone)]
struct ConvBnRelu6 {
    conv: Conv,
    bn: BatchNorm,
}

impl ConvBnRelu6 {
    fn dense(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let conv = Conv::new(cin, cout, k, stride, (k - 1) / 2, vb.pp("0"))?;
        Ok(ConvBnRelu6 { conv, bn: batch_norm(cout, vb.pp("1"))? })
    }

    fn depthwise(channels: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let conv = Conv::depthwise(channels, 3, stride, 1, vb.pp("0"))?;
        Ok(ConvBnRelu6 { conv, bn: batch_norm(channels, vb.pp("1"))? })
    }
}

impl ModuleT for ConvBnRelu6 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.conv.forward_bn_t(x, &self.bn, train, Activation::Relu6)
    }
}

/// torchvision's `InvertedResidual`: optional 1x1 expansion, 3x3 depthwise, linear 1x1
/// projection, identity shortcut when shapes allow.
#[derive(Debug, Clone)]
struct InvertedResidual {
    expand: Option<ConvBnRelu6>,
    depthwise: ConvBnRelu6,
    project: Conv,
    project_bn: BatchNorm,
    residual: bool,
}

impl InvertedResidual {
    fn new(cin: usize, cout: usize, stride: usize, t: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = cin * t;
        let vb = vb.pp("conv");
        // torchvision's `conv` Sequential has no expansion entry when t == 1, so the indices
        // of the later layers shift down by one.
        let (expand, first) = if t != 1 {
            (Some(ConvBnRelu6::dense(cin, hidden, 1, 1, vb.pp("0"))?), 1)
        } else {
            (None, 0)
        };
        let depthwise = ConvBnRelu6::depthwise(hidden, stride, vb.pp(first))?;
        let project = Conv::new(hidden, cout, 1, 1, 0, vb.pp(first + 1))?;
        let project_bn = batch_norm(cout, vb.pp(first + 2))?;
        Ok(InvertedResidual {
            expand,
            depthwise,
            project,
            project_bn,
            residual: stride == 1 && cin == cout,
        })
    }
}

impl ModuleT for InvertedResidual {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = match &self.expand {
            Some(e) => e.forward_t(x, train)?,
            None => x.clone(),
        };
        y = self.depthwise.forward_t(&y, train)?;
        let (project, bn) = (&self.project, &self.project_bn);
        if self.residual {
            // The shortcut added in the projection's epilogue (evaluation over constants).
            return project.forward_bn_residual_t(&y, bn, train, x, Activation::Identity);
        }
        project.forward_bn_t(&y, bn, train, Activation::Identity)
    }
}

#[derive(Debug, Clone)]
enum Stage {
    Conv(ConvBnRelu6),
    Block(Box<InvertedResidual>),
}

impl ModuleT for Stage {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Stage::Conv(c) => c.forward_t(x, train),
            Stage::Block(b) => b.forward_t(x, train),
        }
    }
}

/// MobileNetV2 (Sandler et al. 2018) exactly as torchvision's `mobilenet_v2()`: stages
/// `features.0` (3x3 stem) to `features.18` (1x1 to 1280), global average pool, then
/// `classifier` = Dropout + Linear (`classifier.1`). The 262 variables (torchvision's 314
/// `state_dict` entries less the 52 `num_batches_tracked`) carry torchvision's names.
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    features: Vec<Stage>,
    dropout: SeededDropout,
    classifier: Option<Linear>,
    num_features: usize,
    frozen: FrozenStages,
}

impl MobileNetV2 {
    /// Builds the model under `vb`'s prefix.
    pub fn new(config: &MobileNetV2Config, vb: VarBuilder) -> crate::Result<MobileNetV2> {
        if !(config.width_mult.is_finite() && config.width_mult > 0.0) {
            return Err(Error::config(
                "MobileNetV2Config",
                format!("width_mult must be positive, is {}", config.width_mult),
            ));
        }
        let div = config.round_nearest;
        let mut cin = make_divisible(32.0 * config.width_mult, div);
        let last = make_divisible(1280.0 * config.width_mult.max(1.0), div);
        let fvb = vb.pp("features");
        let mut features = vec![Stage::Conv(ConvBnRelu6::dense(3, cin, 3, 2, fvb.pp(0))?)];
        for (t, c, n, s) in INVERTED_RESIDUAL_SETTING {
            let cout = make_divisible(c as f64 * config.width_mult, div);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let block = InvertedResidual::new(cin, cout, stride, t, fvb.pp(features.len()))?;
                features.push(Stage::Block(Box::new(block)));
                cin = cout;
            }
        }
        features.push(Stage::Conv(ConvBnRelu6::dense(cin, last, 1, 1, fvb.pp(features.len()))?));
        let dropout = SeededDropout::new(config.dropout, config.seed, &dropout_key(&vb))?;
        let classifier = Self::classifier(last, config.num_classes, vb)?;
        Ok(MobileNetV2 {
            features,
            dropout,
            classifier,
            num_features: last,
            frozen: FrozenStages::default(),
        })
    }

    /// torchvision initialises this Linear with N(0, 0.01) and a zero bias.
    fn classifier(inp: usize, classes: usize, vb: VarBuilder) -> Result<Option<Linear>> {
        if classes == 0 {
            return Ok(None);
        }
        let vb = vb.pp("classifier.1");
        let w =
            vb.get_with_hints((classes, inp), "weight", Init::Randn { mean: 0., stdev: 0.01 })?;
        let b = vb.get_with_hints(classes, "bias", Init::Const(0.))?;
        Ok(Some(Linear::new(w, Some(b))))
    }
}

impl Backbone for MobileNetV2 {
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.frozen.forward(&self.features, x, train)
    }

    fn forward_head(&self, features: &Tensor, train: bool, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(features)?;
        match (&self.classifier, pre_logits) {
            (Some(fc), false) => fc.forward(&self.dropout.forward_t(&pooled, train)?),
            _ => Ok(pooled),
        }
    }

    fn num_features(&self) -> usize {
        self.num_features
    }

    fn num_classes(&self) -> usize {
        self.classifier.as_ref().map_or(0, |fc| fc.weight().dims()[0])
    }

    fn reset_classifier(&mut self, num_classes: usize, vb: VarBuilder) -> crate::Result<()> {
        self.classifier = Self::classifier(self.num_features, num_classes, vb)?;
        Ok(())
    }

    fn pretrained_spec(&self) -> PretrainedSpec {
        PretrainedSpec::imagenet(MOBILENET_V2_SOURCE)
    }

    fn stage_names(&self) -> Vec<String> {
        (0..self.features.len()).map(|i| format!("features.{i}")).collect()
    }

    fn classifier_prefix(&self) -> &'static str {
        "classifier.1"
    }

    fn frozen(&self) -> &FrozenStages {
        &self.frozen
    }

    fn frozen_mut(&mut self) -> &mut FrozenStages {
        &mut self.frozen
    }
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(x, train)?, train, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::test_util::{assert_all_grads, max_abs_diff, names, randn, var_names, vb};
    use crate::backbone::{apply_freeze, replace_classifier, Freeze};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn tiny(varmap: &VarMap, classes: usize) -> MobileNetV2 {
        let cfg =
            MobileNetV2Config { width_mult: 0.25, num_classes: classes, ..Default::default() };
        MobileNetV2::new(&cfg, vb(varmap, 0)).unwrap()
    }

    fn input() -> Tensor {
        randn(1, (2, 3, 40, 56))
    }

    #[test]
    fn make_divisible_matches_torchvision() {
        assert_eq!(make_divisible(32.0, 8), 32);
        assert_eq!(make_divisible(8.0, 8), 8);
        assert_eq!(make_divisible(4.0, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(96.0 * 0.35, 8), 32);
        assert_eq!(make_divisible(160.0 * 0.75, 8), 120);
    }

    #[test]
    fn torchvision_names_and_count() {
        // Full width: the names and shapes of the real checkpoint (checked against
        // mobilenet_v2-b0353104.pth: 314 entries, 52 of them `num_batches_tracked`).
        let varmap = VarMap::new();
        let model = MobileNetV2::new(&MobileNetV2Config::default(), vb(&varmap, 0)).unwrap();
        let names = names(&varmap);
        assert_eq!(names.len(), 314 - 52);
        let data = varmap.data().lock().unwrap();
        let shape = |n: &str| data.get(n).map(|v| v.dims().to_vec());
        assert_eq!(shape("features.0.0.weight"), Some(vec![32, 3, 3, 3]));
        assert_eq!(shape("features.0.1.running_var"), Some(vec![32]));
        assert_eq!(shape("features.1.conv.0.0.weight"), Some(vec![32, 1, 3, 3]));
        assert_eq!(shape("features.1.conv.1.weight"), Some(vec![16, 32, 1, 1]));
        assert_eq!(shape("features.1.conv.2.bias"), Some(vec![16]));
        assert_eq!(shape("features.2.conv.0.0.weight"), Some(vec![96, 16, 1, 1]));
        assert_eq!(shape("features.2.conv.1.0.weight"), Some(vec![96, 1, 3, 3]));
        assert_eq!(shape("features.2.conv.2.weight"), Some(vec![24, 96, 1, 1]));
        assert_eq!(shape("features.2.conv.3.running_mean"), Some(vec![24]));
        assert_eq!(shape("features.17.conv.2.weight"), Some(vec![320, 960, 1, 1]));
        assert_eq!(shape("features.18.0.weight"), Some(vec![1280, 320, 1, 1]));
        assert_eq!(shape("features.18.1.weight"), Some(vec![1280]));
        assert_eq!(shape("classifier.1.weight"), Some(vec![1000, 1280]));
        assert_eq!(shape("classifier.1.bias"), Some(vec![1000]));
        assert!(names.iter().all(|n| n.starts_with("features.") || n.starts_with("classifier.1.")));
        assert_eq!(model.stage_names().len(), 19);
        assert_eq!(model.num_features(), 1280);
        assert_eq!(model.pretrained_spec().input_size, (3, 224, 224));
    }

    /// Loads torchvision's real checkpoint when `scripts/fetch-assets.sh` has fetched it: every
    /// tensor of the file except `num_batches_tracked` is one of ours, with our shape.
    #[test]
    fn loads_the_torchvision_checkpoint_unchanged() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../assets/mobilenet_v2-b0353104.pth");
        if !path.exists() {
            eprintln!("skipped: {} is not there", path.display());
            return;
        }
        let dev = Device::Cpu;
        let weights = deeprecog_nn::import::load_pytorch(&path, &dev).unwrap();
        assert_eq!(weights.len(), 314);
        let varmap = VarMap::new();
        MobileNetV2::new(&MobileNetV2Config::default(), vb(&varmap, 0)).unwrap();
        let ours = names(&varmap);
        let mut theirs: Vec<String> =
            weights.keys().filter(|n| !n.ends_with("num_batches_tracked")).cloned().collect();
        theirs.sort();
        assert_eq!(ours, theirs);
        {
            let data = varmap.data().lock().unwrap();
            for (name, var) in data.iter() {
                assert_eq!(var.dims(), weights[name].dims(), "{name}");
            }
        }

        // The fine-tuning path: pretrained everything, then a fresh binary classifier.
        let pretrained = VarBuilder::from_tensors(weights, DType::F32, &dev);
        let mut model = MobileNetV2::new(&MobileNetV2Config::default(), pretrained).unwrap();
        let x = randn(2, (1, 3, 64, 96));
        let logits = model.forward_t(&x, false).unwrap();
        assert_eq!(logits.dims(), &[1, 1000]);
        let logits = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(logits.iter().all(|v| v.is_finite()));
        let head = VarMap::new();
        model.reset_classifier(1, vb(&head, 0)).unwrap();
        assert_eq!(model.forward_t(&x, false).unwrap().dims(), &[1, 1]);
        assert_eq!(names(&head), ["classifier.1.bias", "classifier.1.weight"]);
    }

    #[test]
    fn shapes_on_non_square_input() {
        let varmap = VarMap::new();
        let model = tiny(&varmap, 7);
        let x = input();
        let f = model.forward_features(&x, false).unwrap();
        // Five stride-2 stages: 40x56 -> 2x2 (ceil at each step for padded 3x3 convs).
        assert_eq!(f.dims(), &[2, 1280, 2, 2]);
        assert_eq!(model.forward_head(&f, false, true).unwrap().dims(), &[2, 1280]);
        assert_eq!(model.forward_t(&x, false).unwrap().dims(), &[2, 7]);
        let x = randn(2, (1, 3, 64, 32));
        assert_eq!(model.forward_features(&x, false).unwrap().dims(), &[1, 1280, 2, 1]);
    }

    #[test]
    fn every_parameter_gets_a_gradient_and_modes_differ() {
        let varmap = VarMap::new();
        let model = tiny(&varmap, 3);
        let x = input();
        let eval = model.forward_t(&x, false).unwrap();
        let train = model.forward_t(&x, true).unwrap();
        assert!(max_abs_diff(&eval, &train) > 1e-6);
        assert_all_grads(&varmap, &train.sqr().unwrap().sum_all().unwrap(), &[]);
    }

    #[test]
    fn reset_classifier_to_binary() {
        let varmap = VarMap::new();
        let mut model = tiny(&varmap, 1000);
        replace_classifier(&mut model, 1, &varmap, 0, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.num_classes(), 1);
        assert_eq!(model.forward_t(&input(), false).unwrap().dims(), &[2, 1]);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data.get("classifier.1.weight").map(|v| v.dims().to_vec()), Some(vec![1, 1280]));
        drop(data);
        replace_classifier(&mut model, 0, &varmap, 0, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward_t(&input(), false).unwrap().dims(), &[2, 1280]);
    }

    #[test]
    fn frozen_stages_are_excluded_and_get_no_gradient() {
        let varmap = VarMap::new();
        let mut model = tiny(&varmap, 1);
        let freeze = Freeze::UpToStage("features.10".into());
        let trainable = apply_freeze(&mut model, &varmap, &freeze).unwrap();
        assert_eq!(model.frozen_stages(), 11);
        let trainable = var_names(&varmap, &trainable);
        assert!(trainable.iter().all(|n| !n.contains("running_")));
        assert!(!trainable.iter().any(|n| n.starts_with("features.10.")));
        assert!(trainable.iter().any(|n| n.starts_with("features.11.")));
        assert!(trainable.contains(&"classifier.1.weight".to_string()));

        let loss = model.forward_t(&input(), true).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            let frozen =
                (0..11).any(|i| crate::backbone::has_prefix(name, &format!("features.{i}")));
            if frozen {
                assert!(grads.get(var.as_tensor()).is_none(), "{name} got a gradient");
            } else if !name.contains("running_") {
                assert!(grads.get(var.as_tensor()).is_some(), "{name} got no gradient");
            }
        }
    }
}
