//! Xception (Chollet 2017) with the parameter names of timm's legacy `xception` model
//! (`timm/models/xception.py`, the port of the Keras ImageNet weights; `legacy_xception` in
//! recent timm), so its `state_dict` loads unchanged.
//!
//! Names, relative to the model's `VarBuilder`:
//!
//! * entry stem: `conv1` (3x3, stride 2, no padding), `bn1`, `conv2` (3x3, no padding), `bn2`;
//! * `block1` ... `block12`: `skip` (1x1 conv) and `skipbn` where the shape changes (blocks 1, 2,
//!   3, 12), and `rep.{i}`, timm's `nn.Sequential` of ReLU / `SeparableConv2d` / BatchNorm
//!   (/ final max-pool), whose parameter-free ReLUs and pool still take indices. A separable conv
//!   holds `rep.{i}.conv1.weight` (the depthwise 3x3, `(C, 1, 3, 3)`) and
//!   `rep.{i}.pointwise.weight` (`(C_out, C, 1, 1)`), both without bias. `block1` starts without
//!   ReLU, so its entries are `rep.0`, `rep.1`, `rep.3`, `rep.4`; the other blocks' are `rep.1`,
//!   `rep.2`, `rep.4`, `rep.5` (and `rep.7`, `rep.8` for the three-conv middle blocks);
//! * exit: `conv3` and `conv4` (separable: `conv3.conv1`, `conv3.pointwise`), `bn3`, `bn4`,
//!   then `fc`.
//!
//! That is 276 `state_dict` entries, 40 of them BatchNorm `num_batches_tracked` (which candle
//! does not keep): 236 variables, 22,855,952 trainable weights with the 1000-class `fc`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::{Backbone, Xception, XceptionConfig};
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let model = Xception::new(&XceptionConfig { num_classes: 1, ..Default::default() }, vb)?;
//! let x = Tensor::zeros((1, 3, 32, 40), DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward_features(&x, false)?.dims(), &[1, 2048, 1, 2]);
//! assert_eq!(model.forward_t(&x, false)?.dims(), &[1, 1]);
//! # Ok::<(), deeprecog_classifiers::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use deeprecog_dataset::transforms::Normalization;
use deeprecog_nn::activation::add_act;
use deeprecog_nn::conv::Activation;
use deeprecog_nn::dropout::SeededDropout;
use deeprecog_nn::layers::Linear;
use serde::{Deserialize, Serialize};

use crate::backbone::{batch_norm, global_avg_pool, Backbone, FrozenStages, PretrainedSpec};
use crate::layers::{dropout_key, max_pool, BatchNorm, Conv};

/// Where the weights of timm's legacy `xception` come from (the Keras ImageNet weights).
pub const XCEPTION_SOURCE: &str = "https://huggingface.co/timm/legacy_xception.tf_in1k";

/// What the legacy Xception weights expect: 299x299 RGB scaled to `[-1, 1]` (mean and std 0.5,
/// which is [`Normalization::Tanh`]'s `x / 127.5 - 1`).
pub const XCEPTION_SPEC: PretrainedSpec = PretrainedSpec {
    normalization: Normalization::Tanh,
    input_size: (3, 299, 299),
    num_classes: 1000,
    source: XCEPTION_SOURCE,
};

/// Configuration of [`Xception`]; the default is timm's `xception` (1000 classes, no dropout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct XceptionConfig {
    /// Outputs of `fc` (1000 for ImageNet; 0 for no classifier).
    pub num_classes: usize,
    /// Dropout probability before `fc` (timm's `drop_rate`, 0 by default).
    pub drop_rate: f32,
    /// Seeds the dropout masks (candle's own dropout cannot be seeded).
    #[serde(default)]
    pub seed: u64,
}

impl Default for XceptionConfig {
    /// 1000 classes, no dropout, seed 0.
    fn default() -> Self {
        XceptionConfig { num_classes: 1000, drop_rate: 0.0, seed: 0 }
    }
}

/// timm's `SeparableConv2d`: a 3x3 depthwise conv (`conv1`, padding 1) then a 1x1 conv
/// (`pointwise`), neither with bias.
#[derive(Debug, Clone)]
struct SeparableConv2d {
    depthwise: Conv,
    pointwise: Conv,
}

impl SeparableConv2d {
    fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<SeparableConv2d> {
        Ok(SeparableConv2d {
            depthwise: Conv::depthwise(cin, 3, 1, 1, vb.pp("conv1"))?,
            pointwise: Conv::new(cin, cout, 1, 1, 0, vb.pp("pointwise"))?,
        })
    }
}

impl Module for SeparableConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.pointwise.forward(&self.depthwise.forward(x)?)
    }
}

/// One entry of a block's `rep` Sequential.
#[derive(Debug, Clone)]
enum Rep {
    Relu,
    Sep(SeparableConv2d),
    Bn(BatchNorm),
    Pool,
}

/// timm's Xception `Block`: `rep` plus an identity or `skip`/`skipbn` shortcut.
#[derive(Debug, Clone)]
struct Block {
    rep: Vec<Rep>,
    skip: Option<(Conv, BatchNorm)>,
}

impl Block {
    fn new(
        cin: usize,
        cout: usize,
        reps: usize,
        stride: usize,
        start_with_relu: bool,
        grow_first: bool,
        vb: VarBuilder,
    ) -> Result<Block> {
        let skip = if cout != cin || stride != 1 {
            Some((
                Conv::new(cin, cout, 1, stride, 0, vb.pp("skip"))?,
                batch_norm(cout, vb.pp("skipbn"))?,
            ))
        } else {
            None
        };
        let rvb = vb.pp("rep");
        let mut rep = Vec::with_capacity(3 * reps + 1);
        for i in 0..reps {
            // grow_first widens on the first conv; otherwise the last conv does.
            let (inc, outc) = if grow_first {
                (if i == 0 { cin } else { cout }, cout)
            } else {
                (cin, if i + 1 < reps { cin } else { cout })
            };
            if i > 0 || start_with_relu {
                rep.push(Rep::Relu);
            }
            rep.push(Rep::Sep(SeparableConv2d::new(inc, outc, rvb.pp(rep.len()))?));
            rep.push(Rep::Bn(batch_norm(outc, rvb.pp(rep.len()))?));
        }
        if stride != 1 {
            rep.push(Rep::Pool);
        }
        Ok(Block { rep, skip })
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for r in &self.rep {
            y = match r {
                Rep::Relu => y.relu()?,
                Rep::Sep(s) => s.forward(&y)?,
                Rep::Bn(bn) => bn.forward_t(&y, train)?,
                Rep::Pool => max_pool(&y, 3, 2, 1)?,
            };
        }
        let shortcut = match &self.skip {
            Some((conv, bn)) => bn.forward_t(&conv.forward(x)?, train)?,
            None => x.clone(),
        };
        add_act(&y, &shortcut, Activation::Identity)
    }
}

/// One freezable stage, in timm's module order.
#[derive(Debug, Clone)]
enum Stage {
    Conv(Conv),
    Sep(SeparableConv2d),
    /// BatchNorm followed by ReLU (timm's `act1` ... `act4`).
    BnRelu(BatchNorm),
    Block(Box<Block>),
}

impl ModuleT for Stage {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Stage::Conv(c) => c.forward(x),
            Stage::Sep(s) => s.forward(x),
            Stage::BnRelu(bn) => bn.forward_relu_t(x, train),
            Stage::Block(b) => b.forward_t(x, train),
        }
    }
}

/// Xception as timm's legacy `xception`: entry flow (stem, blocks 1-3 at 128, 256, 728
/// channels, each halving the resolution), middle flow (blocks 4-11, 728 channels, three
/// separable convs each), exit flow (block 12 to 1024 channels, separable convs to 1536 and
/// 2048), global average pool, optional dropout, `fc`.
///
/// Any input of at least 32x32 works (the paper and the weights use 299x299, giving a 10x10
/// feature map). Stages for freezing, in order: `conv1`, `bn1`, `conv2`, `bn2`, `block1` ...
/// `block12`, `conv3`, `bn3`, `conv4`, `bn4`; classifier `fc`.
#[derive(Debug, Clone)]
pub struct Xception {
    stages: Vec<(String, Stage)>,
    dropout: SeededDropout,
    fc: Option<Linear>,
    frozen: FrozenStages,
}

/// Channels of the last feature map.
const NUM_FEATURES: usize = 2048;

impl Xception {
    /// Builds the model under `vb`'s prefix.
    pub fn new(config: &XceptionConfig, vb: VarBuilder) -> crate::Result<Xception> {
        let mut stages = vec![
            ("conv1".to_string(), Stage::Conv(Conv::new(3, 32, 3, 2, 0, vb.pp("conv1"))?)),
            ("bn1".to_string(), Stage::BnRelu(batch_norm(32, vb.pp("bn1"))?)),
            ("conv2".to_string(), Stage::Conv(Conv::new(32, 64, 3, 1, 0, vb.pp("conv2"))?)),
            ("bn2".to_string(), Stage::BnRelu(batch_norm(64, vb.pp("bn2"))?)),
        ];
        // (in, out, reps, stride, start_with_relu, grow_first) of blocks 1 to 12.
        let mut blocks = vec![
            (64, 128, 2, 2, false, true),
            (128, 256, 2, 2, true, true),
            (256, 728, 2, 2, true, true),
        ];
        blocks.extend([(728, 728, 3, 1, true, true); 8]);
        blocks.push((728, 1024, 2, 2, true, false));
        for (i, (cin, cout, reps, stride, relu, grow)) in blocks.into_iter().enumerate() {
            let name = format!("block{}", i + 1);
            let block = Block::new(cin, cout, reps, stride, relu, grow, vb.pp(&name))?;
            stages.push((name, Stage::Block(Box::new(block))));
        }
        stages.extend([
            ("conv3".to_string(), Stage::Sep(SeparableConv2d::new(1024, 1536, vb.pp("conv3"))?)),
            ("bn3".to_string(), Stage::BnRelu(batch_norm(1536, vb.pp("bn3"))?)),
            (
                "conv4".to_string(),
                Stage::Sep(SeparableConv2d::new(1536, NUM_FEATURES, vb.pp("conv4"))?),
            ),
            ("bn4".to_string(), Stage::BnRelu(batch_norm(NUM_FEATURES, vb.pp("bn4"))?)),
        ]);
        Ok(Xception {
            stages,
            dropout: SeededDropout::new(config.drop_rate, config.seed, &dropout_key(&vb))?,
            fc: Self::classifier(config.num_classes, vb)?,
            frozen: FrozenStages::default(),
        })
    }

    fn classifier(classes: usize, vb: VarBuilder) -> Result<Option<Linear>> {
        if classes == 0 {
            return Ok(None);
        }
        Ok(Some(deeprecog_nn::layers::linear(NUM_FEATURES, classes, vb.pp("fc"))?))
    }
}

impl Backbone for Xception {
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.frozen.forward(self.stages.iter().map(|(_, stage)| stage), x, train)
    }

    fn forward_head(&self, features: &Tensor, train: bool, pre_logits: bool) -> Result<Tensor> {
        let pooled = self.dropout.forward_t(&global_avg_pool(features)?, train)?;
        match (&self.fc, pre_logits) {
            (Some(fc), false) => fc.forward(&pooled),
            _ => Ok(pooled),
        }
    }

    fn num_features(&self) -> usize {
        NUM_FEATURES
    }

    fn num_classes(&self) -> usize {
        self.fc.as_ref().map_or(0, |fc| fc.weight().dims()[0])
    }

    fn reset_classifier(&mut self, num_classes: usize, vb: VarBuilder) -> crate::Result<()> {
        self.fc = Self::classifier(num_classes, vb)?;
        Ok(())
    }

    fn pretrained_spec(&self) -> PretrainedSpec {
        XCEPTION_SPEC
    }

    fn stage_names(&self) -> Vec<String> {
        self.stages.iter().map(|(name, _)| name.clone()).collect()
    }

    fn classifier_prefix(&self) -> &'static str {
        "fc"
    }

    fn frozen(&self) -> &FrozenStages {
        &self.frozen
    }

    fn frozen_mut(&mut self) -> &mut FrozenStages {
        &mut self.frozen
    }
}

impl ModuleT for Xception {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(x, train)?, train, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::test_util::{assert_all_grads, max_abs_diff, names, randn, var_names, vb};
    use crate::backbone::{apply_freeze, has_prefix, is_buffer, replace_classifier, Freeze};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(varmap: &VarMap, num_classes: usize, drop_rate: f32) -> Xception {
        Xception::new(&XceptionConfig { num_classes, drop_rate, seed: 0 }, vb(varmap, 0)).unwrap()
    }

    fn input() -> Tensor {
        randn(1, (2, 3, 40, 56))
    }

    #[test]
    fn timm_names_and_counts() {
        // state_dict entries: stem 2 x (1 + 5) = 12; blocks 1-3 and 12: 2 x (2 + 5) + 1 + 5
        // = 20 each; blocks 4-11: 3 x (2 + 5) = 21 each; exit 2 x (2 + 5) = 14; fc 2.
        // 12 + 4 x 20 + 8 x 21 + 14 + 2 = 276, with 2 + 4 x 3 + 8 x 3 + 2 = 40 BatchNorms.
        let varmap = VarMap::new();
        let model = build(&varmap, 1000, 0.0);
        let names = names(&varmap);
        assert_eq!(names.len(), 276 - 40);
        assert_eq!(names.iter().filter(|n| n.ends_with("running_mean")).count(), 40);
        let trainable: usize = {
            let data = varmap.data().lock().unwrap();
            data.iter().filter(|(n, _)| !is_buffer(n)).map(|(_, v)| v.elem_count()).sum()
        };
        // Keras' Xception summary: 22,855,952 trainable parameters.
        assert_eq!(trainable, 22_855_952);
        let data = varmap.data().lock().unwrap();
        let shape = |n: &str| data.get(n).map(|v| v.dims().to_vec());
        assert_eq!(shape("conv1.weight"), Some(vec![32, 3, 3, 3]));
        assert_eq!(shape("bn2.running_var"), Some(vec![64]));
        assert_eq!(shape("block1.skip.weight"), Some(vec![128, 64, 1, 1]));
        assert_eq!(shape("block1.skipbn.bias"), Some(vec![128]));
        assert_eq!(shape("block1.rep.0.conv1.weight"), Some(vec![64, 1, 3, 3]));
        assert_eq!(shape("block1.rep.0.pointwise.weight"), Some(vec![128, 64, 1, 1]));
        assert_eq!(shape("block1.rep.1.weight"), Some(vec![128]));
        assert_eq!(shape("block1.rep.3.pointwise.weight"), Some(vec![128, 128, 1, 1]));
        assert_eq!(shape("block1.rep.4.running_mean"), Some(vec![128]));
        assert_eq!(shape("block2.rep.1.conv1.weight"), Some(vec![128, 1, 3, 3]));
        assert_eq!(shape("block2.rep.5.weight"), Some(vec![256]));
        assert_eq!(shape("block3.rep.4.pointwise.weight"), Some(vec![728, 728, 1, 1]));
        assert_eq!(shape("block4.rep.7.pointwise.weight"), Some(vec![728, 728, 1, 1]));
        assert_eq!(shape("block11.rep.8.running_var"), Some(vec![728]));
        assert_eq!(shape("block4.skip.weight"), None);
        assert_eq!(shape("block12.rep.1.pointwise.weight"), Some(vec![728, 728, 1, 1]));
        assert_eq!(shape("block12.rep.4.pointwise.weight"), Some(vec![1024, 728, 1, 1]));
        assert_eq!(shape("block12.skip.weight"), Some(vec![1024, 728, 1, 1]));
        assert_eq!(shape("conv3.conv1.weight"), Some(vec![1024, 1, 3, 3]));
        assert_eq!(shape("conv3.pointwise.weight"), Some(vec![1536, 1024, 1, 1]));
        assert_eq!(shape("conv4.pointwise.weight"), Some(vec![2048, 1536, 1, 1]));
        assert_eq!(shape("bn4.weight"), Some(vec![2048]));
        assert_eq!(shape("fc.weight"), Some(vec![1000, 2048]));
        assert_eq!(shape("fc.bias"), Some(vec![1000]));
        let stages = model.stage_names();
        assert_eq!(stages.len(), 20);
        assert!(names
            .iter()
            .all(|n| n.starts_with("fc.") || stages.iter().any(|s| has_prefix(n, s))));
        assert_eq!(model.pretrained_spec().input_size, (3, 299, 299));
    }

    #[test]
    fn shapes_gradients_modes_reset_and_freeze() {
        let varmap = VarMap::new();
        let mut model = build(&varmap, 1000, 0.2);
        let x = input();
        // 40x56 -> conv1 19x27 -> conv2 17x25 -> blocks 1, 2, 3, 12 halve (ceil): 2x2.
        let f = model.forward_features(&x, false).unwrap();
        assert_eq!(f.dims(), &[2, 2048, 2, 2]);
        assert_eq!(model.forward_head(&f, false, true).unwrap().dims(), &[2, 2048]);
        replace_classifier(&mut model, 1, &varmap, 0, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.num_classes(), 1);
        let eval = model.forward_t(&x, false).unwrap();
        let train = model.forward_t(&x, true).unwrap();
        assert_eq!(train.dims(), &[2, 1]);
        assert!(max_abs_diff(&eval, &train) > 1e-6);
        assert_all_grads(&varmap, &train.sqr().unwrap().sum_all().unwrap(), &[]);

        let trainable =
            apply_freeze(&mut model, &varmap, &Freeze::UpToStage("block11".into())).unwrap();
        assert_eq!(model.frozen_stages(), 15);
        let trainable = var_names(&varmap, &trainable);
        assert!(trainable.iter().all(|n| ["block12.", "conv3.", "bn3.", "conv4.", "bn4.", "fc."]
            .iter()
            .any(|p| n.starts_with(p))));
        let loss = model.forward_t(&x, true).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert!(grads.get(data["block11.rep.7.pointwise.weight"].as_tensor()).is_none());
        assert!(grads.get(data["block12.rep.1.conv1.weight"].as_tensor()).is_some());
    }
}
