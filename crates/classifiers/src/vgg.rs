//! torchvision's VGG-16 (`vgg16()`) and VGG-16-BN (`vgg16_bn()`) with the exact `state_dict`
//! names: `features.{i}.weight/bias` (and `features.{i}.running_*` for BatchNorm) and
//! `classifier.{0,3,6}.weight/bias`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::{Backbone, Vgg, VggConfig};
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let config = VggConfig { base_channels: 4, hidden: 16, num_classes: 1, ..Default::default() };
//! let model = Vgg::new(&config, vb)?;
//! let x = Tensor::zeros((2, 3, 64, 96), DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward_features(&x, false)?.dims(), &[2, 32, 2, 3]);
//! assert_eq!(model.forward_t(&x, false)?.dims(), &[2, 1]);
//! # Ok::<(), deeprecog_classifiers::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, ModuleT, VarBuilder};
use deeprecog_nn::conv::Conv2dParams;
use deeprecog_nn::dropout::SeededDropout;
use deeprecog_nn::layers::Conv2d;
use deeprecog_nn::layers::Linear;
use serde::{Deserialize, Serialize};

use crate::backbone::{batch_norm, Backbone, FrozenStages, PretrainedSpec};
use crate::layers::{adaptive_avg_pool2d, dropout_key, kaiming_fan_out, max_pool, BatchNorm};
use crate::Error;

/// torchvision's ImageNet weights for `vgg16()` (IMAGENET1K_V1).
pub const VGG16_SOURCE: &str = "https://download.pytorch.org/models/vgg16-397923af.pth";
/// torchvision's ImageNet weights for `vgg16_bn()` (IMAGENET1K_V1).
pub const VGG16_BN_SOURCE: &str = "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth";

/// VGG-16's configuration "D": channel multiples of `base_channels` per conv, 0 for a max-pool.
const VGG16_LAYOUT: [usize; 18] = [1, 1, 0, 2, 2, 0, 4, 4, 4, 0, 8, 8, 8, 0, 8, 8, 8, 0];

/// Side of the adaptive average pool before the classifier (torchvision's 7x7).
const POOL: usize = 7;

/// Configuration of [`Vgg`]; the default is torchvision's `vgg16()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VggConfig {
    /// BatchNorm after every conv (`vgg16_bn()`), which shifts the `features` indices.
    pub batch_norm: bool,
    /// Channels of the first conv block (64 for the pretrained weights; the blocks use 1x, 2x,
    /// 4x, 8x, 8x this). Smaller values only make quick experiments cheaper; names stay.
    pub base_channels: usize,
    /// Units of the two hidden classifier layers (4096 for the pretrained weights).
    pub hidden: usize,
    /// Outputs of `classifier.6` (1000 for ImageNet; 0 for no final layer).
    pub num_classes: usize,
    /// Dropout probability of `classifier.2` and `classifier.5`.
    pub dropout: f32,
    /// Seeds the dropout masks (candle's own dropout cannot be seeded).
    #[serde(default)]
    pub seed: u64,
}

impl Default for VggConfig {
    /// VGG-16 without BatchNorm, 64 base channels, 4096 hidden units, 1000 classes, dropout 0.5,
    /// seed 0.
    fn default() -> Self {
        VggConfig {
            batch_norm: false,
            base_channels: 64,
            hidden: 4096,
            num_classes: 1000,
            dropout: 0.5,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone)]
enum Layer {
    Conv(Conv2d),
    Bn(BatchNorm),
    Relu,
    Pool,
}

impl ModuleT for Layer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Layer::Conv(c) => c.forward(x),
            Layer::Bn(bn) => bn.forward_t(x, train),
            Layer::Relu => x.relu(),
            Layer::Pool => max_pool(x, 2, 2, 0),
        }
    }
}

/// torchvision's Linear initialisation for VGG: N(0, 0.01) weights, zero bias.
fn linear(inp: usize, out: usize, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints((out, inp), "weight", Init::Randn { mean: 0., stdev: 0.01 })?;
    let b = vb.get_with_hints(out, "bias", Init::Const(0.))?;
    Ok(Linear::new(w, Some(b)))
}

/// VGG-16 (Simonyan & Zisserman 2015) as torchvision builds it: `features` (13 3x3 convs with
/// ReLU, optional BatchNorm, five 2x2 max-pools), a 7x7 adaptive average pool (so any input of
/// at least 32x32 works), then `classifier` = Linear (`.0`), ReLU, Dropout, Linear (`.3`), ReLU,
/// Dropout, Linear (`.6`).
///
/// As a [`Backbone`]: the stages are the `features.{i}` modules; the replaceable classifier is
/// `classifier.6`, so [`Backbone::num_features`] is its input size (`hidden`, 4096), not the
/// 512 channels of the feature map, and `forward_head(.., pre_logits = true)` returns the output
/// of `classifier.5`. `classifier.0` and `classifier.3` always train with the head.
#[derive(Debug, Clone)]
pub struct Vgg {
    features: Vec<Layer>,
    fc1: Linear,
    fc2: Linear,
    dropout: SeededDropout,
    classifier: Option<Linear>,
    hidden: usize,
    batch_norm: bool,
    frozen: FrozenStages,
}

impl Vgg {
    /// Builds the model under `vb`'s prefix.
    pub fn new(config: &VggConfig, vb: VarBuilder) -> crate::Result<Vgg> {
        if config.base_channels == 0 || config.hidden == 0 {
            return Err(Error::config("VggConfig", "base_channels and hidden must be positive"));
        }
        let fvb = vb.pp("features");
        let conv_cfg = Conv2dParams { padding: 1, ..Default::default() };
        let mut features = Vec::new();
        let mut cin = 3;
        for multiple in VGG16_LAYOUT {
            if multiple == 0 {
                features.push(Layer::Pool);
                continue;
            }
            let cout = config.base_channels * multiple;
            let vb = fvb.pp(features.len());
            let w = vb.get_with_hints((cout, cin, 3, 3), "weight", kaiming_fan_out())?;
            let b = vb.get_with_hints(cout, "bias", Init::Const(0.))?;
            features.push(Layer::Conv(Conv2d::new(w, Some(b), conv_cfg)));
            if config.batch_norm {
                features.push(Layer::Bn(batch_norm(cout, fvb.pp(features.len()))?));
            }
            features.push(Layer::Relu);
            cin = cout;
        }
        let cvb = vb.pp("classifier");
        let fc1 = linear(cin * POOL * POOL, config.hidden, cvb.pp(0))?;
        let fc2 = linear(config.hidden, config.hidden, cvb.pp(3))?;
        let dropout = SeededDropout::new(config.dropout, config.seed, &dropout_key(&vb))?;
        let classifier = Self::classifier(config.hidden, config.num_classes, vb)?;
        Ok(Vgg {
            features,
            fc1,
            fc2,
            dropout,
            classifier,
            hidden: config.hidden,
            batch_norm: config.batch_norm,
            frozen: FrozenStages::default(),
        })
    }

    fn classifier(inp: usize, classes: usize, vb: VarBuilder) -> Result<Option<Linear>> {
        if classes == 0 {
            return Ok(None);
        }
        Ok(Some(linear(inp, classes, vb.pp("classifier.6"))?))
    }
}

impl Backbone for Vgg {
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.frozen.forward(&self.features, x, train)
    }

    fn forward_head(&self, features: &Tensor, train: bool, pre_logits: bool) -> Result<Tensor> {
        let x = adaptive_avg_pool2d(features, (POOL, POOL))?.flatten_from(1)?;
        let x = self.dropout.forward_t(&self.fc1.forward(&x)?.relu()?, train)?;
        let x = self.dropout.forward_t(&self.fc2.forward(&x)?.relu()?, train)?;
        match (&self.classifier, pre_logits) {
            (Some(fc), false) => fc.forward(&x),
            _ => Ok(x),
        }
    }

    fn num_features(&self) -> usize {
        self.hidden
    }

    fn num_classes(&self) -> usize {
        self.classifier.as_ref().map_or(0, |fc| fc.weight().dims()[0])
    }

    fn reset_classifier(&mut self, num_classes: usize, vb: VarBuilder) -> crate::Result<()> {
        self.classifier = Self::classifier(self.hidden, num_classes, vb)?;
        Ok(())
    }

    fn pretrained_spec(&self) -> PretrainedSpec {
        PretrainedSpec::imagenet(if self.batch_norm { VGG16_BN_SOURCE } else { VGG16_SOURCE })
    }

    fn stage_names(&self) -> Vec<String> {
        (0..self.features.len()).map(|i| format!("features.{i}")).collect()
    }

    fn classifier_prefix(&self) -> &'static str {
        "classifier.6"
    }

    fn frozen(&self) -> &FrozenStages {
        &self.frozen
    }

    fn frozen_mut(&mut self) -> &mut FrozenStages {
        &mut self.frozen
    }
}

impl ModuleT for Vgg {
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

    fn tiny(varmap: &VarMap, batch_norm: bool, classes: usize) -> Vgg {
        let cfg = VggConfig {
            batch_norm,
            base_channels: 4,
            hidden: 16,
            num_classes: classes,
            ..Default::default()
        };
        Vgg::new(&cfg, vb(varmap, 0)).unwrap()
    }

    fn input() -> Tensor {
        randn(1, (2, 3, 40, 56))
    }

    #[test]
    fn torchvision_names_and_counts() {
        // vgg16: 13 convs x 2 + 3 Linear x 2 = 32 entries. vgg16_bn: 13 x (2 + 5 BN entries)
        // + 6 = 97, of which 13 are num_batches_tracked. Narrow widths keep the names.
        let varmap = VarMap::new();
        let model = tiny(&varmap, false, 1000);
        let plain = names(&varmap);
        assert_eq!(plain.len(), 32);
        let convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
        for i in convs {
            assert!(plain.contains(&format!("features.{i}.weight")), "features.{i}");
            assert!(plain.contains(&format!("features.{i}.bias")), "features.{i}");
        }
        for i in [0, 3, 6] {
            assert!(plain.contains(&format!("classifier.{i}.weight")));
        }
        assert_eq!(model.stage_names().len(), 31);
        assert_eq!(model.num_features(), 16);
        assert_eq!(model.pretrained_spec().source, VGG16_SOURCE);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["features.28.weight"].dims(), &[32, 32, 3, 3]);
        assert_eq!(data["classifier.0.weight"].dims(), &[16, 32 * 49]);
        assert_eq!(data["classifier.6.weight"].dims(), &[1000, 16]);
        drop(data);

        let varmap = VarMap::new();
        let model = tiny(&varmap, true, 1000);
        let bn = names(&varmap);
        assert_eq!(bn.len(), 97 - 13);
        assert_eq!(bn.iter().filter(|n| n.ends_with("running_var")).count(), 13);
        assert!(bn.contains(&"features.1.running_mean".to_string()));
        assert!(bn.contains(&"features.40.weight".to_string()));
        assert!(bn.contains(&"features.41.running_var".to_string()));
        assert_eq!(model.stage_names().len(), 44);
        assert_eq!(model.pretrained_spec().source, VGG16_BN_SOURCE);
    }

    #[test]
    fn shapes_on_non_square_batches() {
        for bn in [false, true] {
            let varmap = VarMap::new();
            let model = tiny(&varmap, bn, 5);
            let x = input();
            let f = model.forward_features(&x, false).unwrap();
            assert_eq!(f.dims(), &[2, 32, 1, 1]);
            assert_eq!(model.forward_head(&f, false, true).unwrap().dims(), &[2, 16]);
            assert_eq!(model.forward_t(&x, false).unwrap().dims(), &[2, 5]);
            let x = randn(2, (3, 3, 96, 64));
            assert_eq!(model.forward_features(&x, false).unwrap().dims(), &[3, 32, 3, 2]);
            assert_eq!(model.forward_t(&x, false).unwrap().dims(), &[3, 5]);
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient_and_modes_differ() {
        for bn in [false, true] {
            let varmap = VarMap::new();
            let model = tiny(&varmap, bn, 3);
            let x = input();
            let eval = model.forward_t(&x, false).unwrap();
            let train = model.forward_t(&x, true).unwrap();
            assert!(max_abs_diff(&eval, &train) > 1e-6);
            assert_all_grads(&varmap, &train.sqr().unwrap().sum_all().unwrap(), &[]);
        }
    }

    #[test]
    fn reset_and_freeze() {
        let varmap = VarMap::new();
        let mut model = tiny(&varmap, true, 1000);
        replace_classifier(&mut model, 1, &varmap, 0, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.num_classes(), 1);
        assert_eq!(model.forward_t(&input(), false).unwrap().dims(), &[2, 1]);
        let trainable = apply_freeze(&mut model, &varmap, &Freeze::Backbone).unwrap();
        let trainable = var_names(&varmap, &trainable);
        assert_eq!(trainable.len(), 6);
        assert!(trainable.iter().all(|n| n.starts_with("classifier.")));
        let loss = model.forward_t(&input(), true).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert!(grads.get(data["features.0.weight"].as_tensor()).is_none());
        assert!(grads.get(data["classifier.0.weight"].as_tensor()).is_some());
    }
}
