//! torchvision's ResNet-18/34 (BasicBlock) and ResNet-50 (Bottleneck, stride on the 3x3 conv as
//! in torchvision's "v1.5") with the exact `state_dict` names.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::{Backbone, ResNet, ResNetConfig, ResNetDepth};
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let varmap = VarMap::new();
//! let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let config = ResNetConfig { depth: ResNetDepth::R18, base_channels: 8, num_classes: 1 };
//! let model = ResNet::new(&config, vb)?;
//! let x = Tensor::zeros((1, 3, 64, 96), DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward_features(&x, false)?.dims(), &[1, 64, 2, 3]);
//! assert_eq!(model.forward_t(&x, false)?.dims(), &[1, 1]);
//! # Ok::<(), deeprecog_classifiers::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use deeprecog_nn::layers::Linear;
use serde::{Deserialize, Serialize};

use crate::backbone::{batch_norm, global_avg_pool, Backbone, FrozenStages, PretrainedSpec};
use crate::layers::{BatchNorm, Conv};
use crate::Error;
use deeprecog_nn::activation::add_act;
use deeprecog_nn::conv::Activation;

/// Which ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResNetDepth {
    /// ResNet-18: BasicBlocks `[2, 2, 2, 2]`.
    R18,
    /// ResNet-34: BasicBlocks `[3, 4, 6, 3]`.
    R34,
    /// ResNet-50: Bottlenecks `[3, 4, 6, 3]`.
    R50,
}

impl ResNetDepth {
    fn blocks(self) -> [usize; 4] {
        match self {
            ResNetDepth::R18 => [2, 2, 2, 2],
            ResNetDepth::R34 | ResNetDepth::R50 => [3, 4, 6, 3],
        }
    }

    fn expansion(self) -> usize {
        match self {
            ResNetDepth::R18 | ResNetDepth::R34 => 1,
            ResNetDepth::R50 => 4,
        }
    }

    /// torchvision's IMAGENET1K_V1 weights for this depth.
    pub fn source(self) -> &'static str {
        match self {
            ResNetDepth::R18 => "https://download.pytorch.org/models/resnet18-f37072fd.pth",
            ResNetDepth::R34 => "https://download.pytorch.org/models/resnet34-b627a593.pth",
            ResNetDepth::R50 => "https://download.pytorch.org/models/resnet50-0676ba61.pth",
        }
    }
}

/// Configuration of [`ResNet`]; the default is torchvision's `resnet18()`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Which ResNet.
    pub depth: ResNetDepth,
    /// Channels of the stem and of `layer1` (64 for the pretrained weights; the stages use
    /// 1x, 2x, 4x, 8x this). Smaller values only make quick experiments cheaper.
    pub base_channels: usize,
    /// Outputs of `fc` (1000 for ImageNet; 0 for no classifier).
    pub num_classes: usize,
}

impl Default for ResNetConfig {
    /// ResNet-18, 64 base channels, 1000 classes.
    fn default() -> Self {
        ResNetConfig { depth: ResNetDepth::R18, base_channels: 64, num_classes: 1000 }
    }
}

fn conv(cin: usize, cout: usize, k: usize, stride: usize, vb: VarBuilder) -> Result<Conv> {
    Conv::new(cin, cout, k, stride, k / 2, vb)
}

/// `downsample.0` (1x1 conv) and `downsample.1` (BatchNorm) on the shortcut.
#[derive(Debug, Clone)]
struct Downsample {
    conv: Conv,
    bn: BatchNorm,
}

impl ModuleT for Downsample {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.conv.forward_bn_t(x, &self.bn, train, Activation::Identity)
    }
}

/// One residual block; `conv3`/`bn3` exist for Bottleneck only.
#[derive(Debug, Clone)]
struct Block {
    convs: Vec<(Conv, BatchNorm)>,
    downsample: Option<Downsample>,
}

impl Block {
    fn new(
        depth: ResNetDepth,
        cin: usize,
        planes: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Block> {
        let cout = planes * depth.expansion();
        // (in, out, kernel, stride) per conv. Bottleneck puts the stride on the 3x3 conv
        // (torchvision "v1.5"), not on the first 1x1 as the original paper did.
        let shapes: Vec<(usize, usize, usize, usize)> = match depth {
            ResNetDepth::R18 | ResNetDepth::R34 => {
                vec![(cin, planes, 3, stride), (planes, planes, 3, 1)]
            }
            ResNetDepth::R50 => {
                vec![(cin, planes, 1, 1), (planes, planes, 3, stride), (planes, cout, 1, 1)]
            }
        };
        let mut convs = Vec::with_capacity(shapes.len());
        for (i, (a, b, k, s)) in shapes.into_iter().enumerate() {
            let c = conv(a, b, k, s, vb.pp(format!("conv{}", i + 1)))?;
            convs.push((c, batch_norm(b, vb.pp(format!("bn{}", i + 1)))?));
        }
        let downsample = if stride != 1 || cin != cout {
            let vb = vb.pp("downsample");
            Some(Downsample {
                conv: conv(cin, cout, 1, stride, vb.pp(0))?,
                bn: batch_norm(cout, vb.pp(1))?,
            })
        } else {
            None
        };
        Ok(Block { convs, downsample })
    }
}

impl ModuleT for Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shortcut = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        let Some(((last, last_bn), convs)) = self.convs.split_last() else {
            return add_act(x, &shortcut, Activation::Relu);
        };
        let mut y = x.clone();
        for (c, bn) in convs {
            y = c.forward_bn_t(&y, bn, train, Activation::Relu)?;
        }
        // The shortcut is added in the last convolution's epilogue where nothing records
        // gradients (inference), else by a separate op: the same values either way.
        last.forward_bn_residual_t(&y, last_bn, train, &shortcut, Activation::Relu)
    }
}

/// The stem's 3x3, stride 2, padding 1 max-pool, with a backward pass.
///
/// candle's own `max_pool2d_with_stride` has no backward when kernel != stride. On the CPU (and
/// on CUDA with the `cuda` feature) this uses `deeprecog_nn::pool::max_pool2d`; devices without
/// its kernels take the pool separably as the element-wise maximum of strided views, which candle differentiates
/// everywhere. Zero padding equals torch's -inf padding there because the input comes out of a
/// ReLU (every window holds at least one real element, which is >= 0).
fn stem_max_pool(x: &Tensor) -> Result<Tensor> {
    if deeprecog_nn::pool::has_kernels(x.device()) {
        deeprecog_nn::pool::max_pool2d(x, 3, 2, 1)
    } else {
        separable_stem_max_pool(x)
    }
}

fn separable_stem_max_pool(x: &Tensor) -> Result<Tensor> {
    let x = pool_dim(x, 3)?;
    pool_dim(&x, 2)
}

fn pool_dim(x: &Tensor, dim: usize) -> Result<Tensor> {
    let n = x.dim(dim)?;
    let out = (n + 2 - 3) / 2 + 1;
    let xp = x.pad_with_zeros(dim, 1, 1)?;
    let mut acc: Option<Tensor> = None;
    for start in 0..3 {
        let idx: Vec<u32> = (0..out).map(|i| (start + 2 * i) as u32).collect();
        let view = xp.index_select(&Tensor::new(idx.as_slice(), x.device())?, dim)?;
        acc = Some(match acc {
            None => view,
            Some(a) => a.maximum(&view)?,
        });
    }
    match acc {
        Some(a) => Ok(a),
        None => candle_core::bail!("max-pool over an empty window"),
    }
}

/// One freezable stage of a [`ResNet`].
#[derive(Debug, Clone)]
enum Stage {
    /// `conv1`, the 7x7 stride-2 stem.
    Stem(Conv),
    /// `bn1`, with the ReLU and the 3x3 stride-2 max-pool after it.
    StemBn(BatchNorm),
    /// `layer1` ... `layer4`.
    Layer(Vec<Block>),
}

impl ModuleT for Stage {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Stage::Stem(c) => c.forward(x),
            Stage::StemBn(bn) => stem_max_pool(&bn.forward_relu_t(x, train)?),
            Stage::Layer(blocks) => {
                let mut x = x.clone();
                for block in blocks {
                    x = block.forward_t(&x, train)?;
                }
                Ok(x)
            }
        }
    }
}

/// ResNet (He et al. 2016) as torchvision builds it. Stages for freezing, in order: `conv1`,
/// `bn1` (with the ReLU and the max-pool), `layer1` ... `layer4`; classifier `fc`.
#[derive(Debug, Clone)]
pub struct ResNet {
    stages: Vec<Stage>,
    fc: Option<Linear>,
    depth: ResNetDepth,
    num_features: usize,
    frozen: FrozenStages,
}

impl ResNet {
    /// Builds the model under `vb`'s prefix.
    pub fn new(config: &ResNetConfig, vb: VarBuilder) -> crate::Result<ResNet> {
        let base = config.base_channels;
        if base == 0 {
            return Err(Error::config("ResNetConfig", "base_channels must be positive"));
        }
        let depth = config.depth;
        let mut stages = vec![
            Stage::Stem(conv(3, base, 7, 2, vb.pp("conv1"))?),
            Stage::StemBn(batch_norm(base, vb.pp("bn1"))?),
        ];
        let mut cin = base;
        for (i, n) in depth.blocks().into_iter().enumerate() {
            let planes = base << i;
            let stride = if i == 0 { 1 } else { 2 };
            let lvb = vb.pp(format!("layer{}", i + 1));
            let mut blocks = Vec::with_capacity(n);
            for j in 0..n {
                blocks.push(Block::new(
                    depth,
                    cin,
                    planes,
                    if j == 0 { stride } else { 1 },
                    lvb.pp(j),
                )?);
                cin = planes * depth.expansion();
            }
            stages.push(Stage::Layer(blocks));
        }
        let fc = Self::classifier(cin, config.num_classes, vb)?;
        Ok(ResNet { stages, fc, depth, num_features: cin, frozen: FrozenStages::default() })
    }

    fn classifier(inp: usize, classes: usize, vb: VarBuilder) -> Result<Option<Linear>> {
        if classes == 0 {
            return Ok(None);
        }
        Ok(Some(deeprecog_nn::layers::linear(inp, classes, vb.pp("fc"))?))
    }

    /// Which ResNet this is.
    pub fn depth(&self) -> ResNetDepth {
        self.depth
    }
}

impl Backbone for ResNet {
    fn forward_features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.frozen.forward(&self.stages, x, train)
    }

    fn forward_head(&self, features: &Tensor, _train: bool, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(features)?;
        match (&self.fc, pre_logits) {
            (Some(fc), false) => fc.forward(&pooled),
            _ => Ok(pooled),
        }
    }

    fn num_features(&self) -> usize {
        self.num_features
    }

    fn num_classes(&self) -> usize {
        self.fc.as_ref().map_or(0, |fc| fc.weight().dims()[0])
    }

    fn reset_classifier(&mut self, num_classes: usize, vb: VarBuilder) -> crate::Result<()> {
        self.fc = Self::classifier(self.num_features, num_classes, vb)?;
        Ok(())
    }

    fn pretrained_spec(&self) -> PretrainedSpec {
        PretrainedSpec::imagenet(self.depth.source())
    }

    fn stage_names(&self) -> Vec<String> {
        let mut names = vec!["conv1".to_string(), "bn1".to_string()];
        names.extend((1..=self.stages.len() - 2).map(|i| format!("layer{i}")));
        names
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

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_head(&self.forward_features(x, train)?, train, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::test_util::{assert_all_grads, max_abs_diff, names, randn, var_names, vb};
    use crate::backbone::{apply_freeze, has_prefix, replace_classifier, Freeze};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(depth: ResNetDepth, base: usize, classes: usize, varmap: &VarMap) -> ResNet {
        let cfg = ResNetConfig { depth, base_channels: base, num_classes: classes };
        ResNet::new(&cfg, vb(varmap, 0)).unwrap()
    }

    fn input() -> Tensor {
        randn(1, (2, 3, 40, 56))
    }

    #[test]
    fn stem_pools_agree_forward_and_backward() {
        let x = randn(2, (2, 3, 9, 12)).relu().unwrap();
        let x = candle_core::Var::from_tensor(&x).unwrap();
        let nn = stem_max_pool(&x).unwrap();
        let ours = separable_stem_max_pool(&x).unwrap();
        let padded = x.pad_with_zeros(2, 1, 1).unwrap().pad_with_zeros(3, 1, 1).unwrap();
        let candle = padded.max_pool2d_with_stride(3, 2).unwrap();
        assert_eq!(ours.dims(), &[2, 3, 5, 6]);
        assert_eq!(nn.dims(), candle.dims());
        assert!(max_abs_diff(&ours, &candle) < 1e-7);
        assert!(max_abs_diff(&nn, &candle) < 1e-7);
        // Random inputs have no ties among positive values, so both backward passes route
        // each gradient to the same argmax (the zeros from the ReLU only tie at zero output).
        let w = randn(3, (2, 3, 5, 6));
        let g_nn = nn.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let g_ours = ours.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (g_nn.get(&x).unwrap(), g_ours.get(&x).unwrap());
        let pos = x.gt(0f32).unwrap().to_dtype(DType::F32).unwrap();
        let (a, b) = (a.mul(&pos).unwrap(), b.mul(&pos).unwrap());
        assert!(max_abs_diff(&a, &b) < 1e-6);
    }

    /// Expected variable count, derived from torchvision's module tree: 6 entries per
    /// conv+BN pair (weight + 5 BN entries) minus `num_batches_tracked`.
    #[test]
    fn torchvision_names_and_counts() {
        // (depth, state_dict entries incl. num_batches_tracked, BatchNorms)
        // R18: stem 6 + 8 blocks x 12 + 3 downsamples x 6 + fc 2 = 122, 1 + 16 + 3 = 20 BNs.
        // R34: 6 + 16 x 12 + 18 + 2 = 218, 1 + 32 + 3 = 36 BNs.
        // R50: 6 + 16 x 18 + 4 x 6 + 2 = 320, 1 + 48 + 4 = 53 BNs.
        for (depth, entries, bns) in
            [(ResNetDepth::R18, 122, 20), (ResNetDepth::R34, 218, 36), (ResNetDepth::R50, 320, 53)]
        {
            let varmap = VarMap::new();
            let model = build(depth, 64, 1000, &varmap);
            let names = names(&varmap);
            assert_eq!(names.len(), entries - bns, "{depth:?}");
            assert_eq!(names.iter().filter(|n| n.ends_with("running_var")).count(), bns);
            let data = varmap.data().lock().unwrap();
            let shape = |n: &str| data.get(n).map(|v| v.dims().to_vec());
            assert_eq!(shape("conv1.weight"), Some(vec![64, 3, 7, 7]));
            assert_eq!(shape("bn1.running_mean"), Some(vec![64]));
            assert_eq!(shape("layer1.0.conv1.weight").map(|s| s[0]), Some(64));
            assert_eq!(
                shape("layer2.0.downsample.1.weight").map(|s| s[0]),
                Some(128 * depth.expansion())
            );
            let fc_in = 512 * depth.expansion();
            assert_eq!(shape("fc.weight"), Some(vec![1000, fc_in]));
            assert_eq!(shape("fc.bias"), Some(vec![1000]));
            assert_eq!(model.num_features(), fc_in);
            if depth == ResNetDepth::R50 {
                assert_eq!(shape("layer1.0.downsample.0.weight"), Some(vec![256, 64, 1, 1]));
                assert_eq!(shape("layer2.0.conv2.weight"), Some(vec![128, 128, 3, 3]));
                assert_eq!(shape("layer4.2.conv3.weight"), Some(vec![2048, 512, 1, 1]));
                assert_eq!(shape("layer3.5.bn3.running_var"), Some(vec![1024]));
            } else {
                assert!(shape("layer1.0.downsample.0.weight").is_none());
                assert_eq!(shape("layer4.1.conv2.weight"), Some(vec![512, 512, 3, 3]));
                assert!(shape("layer1.0.conv3.weight").is_none());
            }
        }
    }

    #[test]
    fn shapes_gradients_and_modes() {
        for depth in [ResNetDepth::R18, ResNetDepth::R34, ResNetDepth::R50] {
            let varmap = VarMap::new();
            let model = build(depth, 4, 5, &varmap);
            let x = input();
            let f = model.forward_features(&x, false).unwrap();
            // 40x56 -> conv 20x28 -> pool 10x14 -> 10x14, 5x7, 3x4, 2x2.
            assert_eq!(f.dims(), &[2, 32 * depth.expansion(), 2, 2], "{depth:?}");
            let x2 = randn(2, (1, 3, 64, 32));
            assert_eq!(model.forward_features(&x2, false).unwrap().dims()[2..], [2, 1]);
            let eval = model.forward_t(&x, false).unwrap();
            let train = model.forward_t(&x, true).unwrap();
            assert_eq!(train.dims(), &[2, 5]);
            assert!(max_abs_diff(&eval, &train) > 1e-6);
            assert_all_grads(&varmap, &train.sqr().unwrap().sum_all().unwrap(), &[]);
        }
    }

    #[test]
    fn tiny_resnet18_overfits_eight_images() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let model = build(ResNetDepth::R18, 4, 1, &varmap);
        let x = randn(4, (8, 3, 24, 40));
        let y = Tensor::new(&[[1f32], [0.], [0.], [1.], [0.], [1.], [1.], [0.]], &dev).unwrap();
        let vars = crate::backbone::trainable_vars(&varmap, &model, &Freeze::None).unwrap();
        let params = candle_nn::ParamsAdamW { lr: 1e-2, weight_decay: 0.0, ..Default::default() };
        let mut opt = <candle_nn::AdamW as candle_nn::Optimizer>::new(vars, params).unwrap();
        let mut first = None;
        let mut last = f32::MAX;
        for _ in 0..60 {
            let logits = model.forward_t(&x, true).unwrap();
            let loss = deeprecog_nn::loss::bce_with_logits(&logits, &y).unwrap();
            last = loss.to_scalar::<f32>().unwrap();
            first.get_or_insert(last);
            candle_nn::Optimizer::backward_step(&mut opt, &loss).unwrap();
        }
        assert!(last < 0.05, "loss {first:?} -> {last}");
    }

    #[test]
    fn reset_classifier_to_binary() {
        let varmap = VarMap::new();
        let mut model = build(ResNetDepth::R18, 8, 1000, &varmap);
        replace_classifier(&mut model, 1, &varmap, 0, DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward_t(&input(), true).unwrap().dims(), &[2, 1]);
        assert_eq!(
            model
                .forward_head(&model.forward_features(&input(), false).unwrap(), false, true)
                .unwrap()
                .dims(),
            &[2, 64]
        );
    }

    #[test]
    fn frozen_stages_are_excluded_and_get_no_gradient() {
        let varmap = VarMap::new();
        let mut model = build(ResNetDepth::R18, 4, 1, &varmap);
        let trainable =
            apply_freeze(&mut model, &varmap, &Freeze::UpToStage("layer2".into())).unwrap();
        assert_eq!(model.frozen_stages(), 4);
        let trainable = var_names(&varmap, &trainable);
        let frozen = ["conv1", "bn1", "layer1", "layer2"];
        assert!(trainable.iter().all(|n| !frozen.iter().any(|p| has_prefix(n, p))));
        assert!(trainable.iter().any(|n| n.starts_with("layer3.")));
        assert!(trainable.iter().all(|n| !n.contains("running_")));
        assert!(trainable.contains(&"fc.weight".to_string()));

        let loss = model.forward_t(&input(), true).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        for (name, var) in data.iter() {
            if frozen.iter().any(|p| has_prefix(name, p)) {
                assert!(grads.get(var.as_tensor()).is_none(), "{name} got a gradient");
            } else if !name.contains("running_") {
                assert!(grads.get(var.as_tensor()).is_some(), "{name} got no gradient");
            }
        }
        drop(data);

        // Freezing the whole backbone leaves only fc.
        let all = apply_freeze(&mut model, &varmap, &Freeze::Backbone).unwrap();
        assert_eq!(var_names(&varmap, &all), vec!["fc.bias".to_string(), "fc.weight".to_string()]);
    }
}
