//! Face attribute and real/fake classifiers on candle.
//!
//! This first piece holds the task definitions and the attractiveness report's scratch CNN;
//! backbones (ResNet, MobileNetV2, Xception, ...), heads, freezing and the trainer build on it.
//!
//! ```
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//! use deeprecog_classifiers::{ScratchCnn, ScratchCnnConfig, Task};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let config = ScratchCnnConfig { blocks: 2, input: (3, 24, 32), ..Default::default() };
//! let model = ScratchCnn::new(&config, vb)?;
//! let logits = candle_nn::ModuleT::forward_t(&model, &Tensor::zeros((2, 3, 24, 32), DType::F32, &Device::Cpu)?, false)?;
//! assert_eq!(logits.dims(), &[2, 1]);
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod backbone;
pub mod head;
mod layers;
pub mod lenet;
pub mod meso;
pub mod mobilenetv2;
pub mod pipeline;
pub mod report;
pub mod resnet;
pub mod train;
pub mod vgg;
pub mod xception;
pub mod zoo;

pub use backbone::{
    apply_freeze, replace_classifier, trainable_vars, trainable_vars_except, Backbone, Freeze,
    PretrainedSpec,
};
pub use head::{SeedHead, SeedHeadConfig, TransferModel};
pub use lenet::{FakeAppCnn, FakeAppCnnConfig, LeNetLike, LeNetLikeConfig};
pub use meso::{Meso4, MesoConfig, MesoInception4};
pub use mobilenetv2::{MobileNetV2, MobileNetV2Config};
pub use resnet::{ResNet, ResNetConfig, ResNetDepth};
pub use vgg::{Vgg, VggConfig};
pub use xception::{Xception, XceptionConfig};

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, ModuleT, VarBuilder};
use deeprecog_attributes::Attribute;

/// What a classifier predicts.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq)]
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
        let conv_cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let mut convs = Vec::with_capacity(config.blocks);
        for i in 0..config.blocks {
            let out = config.base_filters << i;
            convs.push(candle_nn::conv2d(c, out, 3, conv_cfg, vb.pp(format!("features.{i}")))?);
            c = out;
            h /= 2;
            w /= 2;
        }
        if h == 0 || w == 0 {
            candle_core::bail!(
                "input {:?} is too small for {} pooling blocks",
                config.input,
                config.blocks
            );
        }
        let fc = candle_nn::linear(c * h * w, config.fc, vb.pp("fc"))?;
        let head = candle_nn::linear(config.fc, config.task.outputs(), vb.pp("head"))?;
        Ok(ScratchCnn { convs, fc, head })
    }
}

impl ModuleT for ScratchCnn {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Result<Tensor> {
        let mut x = xs.clone();
        for conv in &self.convs {
            // candle's own max_pool2d backward scales the gradient by 1/k² (see layers::max_pool).
            x = crate::layers::max_pool(&conv.forward(&x)?.relu()?, 2, 2, 0)?;
        }
        self.head.forward(&self.fc.forward(&x.flatten_from(1)?)?.relu()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn shapes_on_non_square_input_and_gradients_everywhere() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let task = Task::MultiLabel(vec![Attribute::Male, Attribute::Smiling, Attribute::Young]);
        let cfg = ScratchCnnConfig { blocks: 3, base_filters: 4, fc: 8, task, input: (3, 16, 40) };
        let model = ScratchCnn::new(&cfg, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 16, 40), &Device::Cpu).unwrap();
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
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let cfg = ScratchCnnConfig { blocks: 4, input: (3, 8, 64), ..Default::default() };
        assert!(ScratchCnn::new(&cfg, vb).is_err());
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
