//! Every classifier of the crate by name, from a serde configuration ([`ZooConfig`]): built
//! fresh ([`build`], optionally from ImageNet weights, with freezing) or rebuilt from a training
//! run's checkpoint ([`load`]).
//!
//! | name | model | outputs |
//! |------|-------|---------|
//! | `scratch3`, `scratchN` | [`ScratchCnn`] with N blocks | the task's |
//! | `lenet` | [`LeNetLike`] | the task's |
//! | `fakeapp` | [`FakeAppCnn`] | the task's |
//! | `meso4`, `mesoinception4` | [`Meso4`], [`MesoInception4`] | the task's |
//! | `resnet18`, `resnet34`, `resnet50` | [`ResNet`] features + [`SeedHead`] | the head's |
//! | `mobilenetv2` | [`MobileNetV2`] features + [`SeedHead`] | the head's |
//! | `xception` | [`Xception`] features + [`SeedHead`] | the head's |
//! | `vgg16`, `vgg16bn` | [`Vgg`] features and hidden layers + [`SeedHead`] | the head's |
//!
//! The input normalisation follows from the weights, never from the caller: a backbone started
//! from ImageNet weights ([`ZooConfig::weights`]) gets its [`Backbone::pretrained_spec`]'s
//! (ImageNet mean / std for torchvision's weights, `[-1, 1]` for Xception's), anything trained
//! from scratch gets min-max (`x / 255`). [`Built::normalization`] and [`Loaded::normalization`]
//! carry it to the data pipeline.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::zoo::{self, ModelName, ZooConfig};
//! use deeprecog_dataset::transforms::Normalization;
//!
//! let varmap = VarMap::new();
//! let cfg = ZooConfig { input: (3, 32, 48), ..ZooConfig::new("scratch2".parse()?) };
//! let built = zoo::build(&cfg, &varmap, &Device::Cpu)?;
//! let y = built.model.forward_t(&Tensor::zeros((2, 3, 32, 48), DType::F32, &Device::Cpu)?, false)?;
//! assert_eq!(y.dims(), &[2, 1]);
//! assert_eq!(built.normalization, Normalization::MinMax);
//! // The configuration that rebuilds it, as a training run saves it.
//! let json = serde_json::to_value(&built.config)?;
//! assert_eq!(json["name"], "scratch2");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use deeprecog_dataset::transforms::Normalization;
use deeprecog_nn::checkpoint::{self, RunConfig, RUN_FILE};
use deeprecog_nn::init::seeded_var_builder;
use serde::{Deserialize, Serialize};

use crate::backbone::{
    apply_freeze, has_prefix, lock_err, trainable_vars_except, Backbone, Freeze,
};
use crate::{
    Error, FakeAppCnn, FakeAppCnnConfig, LeNetLike, LeNetLikeConfig, Meso4, MesoConfig,
    MesoInception4, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig, ResNetDepth, Result,
    ScratchCnn, ScratchCnnConfig, SeedHead, SeedHeadConfig, Task, TransferModel, Vgg, VggConfig,
    Xception, XceptionConfig,
};

/// A model architecture by name; serialises as its name (`"scratch3"`, `"mobilenetv2"`, ...),
/// which [`FromStr`] parses and [`Display`](std::fmt::Display) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ModelName {
    /// `scratchN`: the report's scratch CNN with this many blocks.
    Scratch(usize),
    /// `lenet`: the FakeApp report's [`LeNetLike`].
    LeNet,
    /// `fakeapp`: the FakeApp report's custom [`FakeAppCnn`].
    FakeApp,
    /// `meso4`: MesoNet's [`Meso4`].
    Meso4,
    /// `mesoinception4`: MesoNet's [`MesoInception4`].
    MesoInception4,
    /// `resnet18`, `resnet34`, `resnet50`: a ResNet's features with a [`SeedHead`].
    ResNet(ResNetDepth),
    /// `mobilenetv2`: MobileNetV2 (width 1.0) features with a [`SeedHead`].
    MobileNetV2,
    /// `xception`: Xception (timm's legacy port) features with a [`SeedHead`].
    Xception,
    /// `vgg16`: VGG-16 features and hidden layers with a [`SeedHead`].
    Vgg16,
    /// `vgg16bn`: VGG-16-BN features and hidden layers with a [`SeedHead`].
    Vgg16Bn,
}

impl ModelName {
    /// Every name the zoo builds, for command-line help (`scratchN` stands for `scratch1`,
    /// `scratch2`, ...).
    pub const ALL_NAMES: [&'static str; 12] = [
        "scratchN",
        "lenet",
        "fakeapp",
        "meso4",
        "mesoinception4",
        "resnet18",
        "resnet34",
        "resnet50",
        "mobilenetv2",
        "xception",
        "vgg16",
        "vgg16bn",
    ];

    /// One of each architecture, in the order of [`ModelName::ALL_NAMES`] (the scratch CNN with
    /// the report's 3 blocks).
    pub const ALL: [ModelName; 12] = [
        ModelName::Scratch(3),
        ModelName::LeNet,
        ModelName::FakeApp,
        ModelName::Meso4,
        ModelName::MesoInception4,
        ModelName::ResNet(ResNetDepth::R18),
        ModelName::ResNet(ResNetDepth::R34),
        ModelName::ResNet(ResNetDepth::R50),
        ModelName::MobileNetV2,
        ModelName::Xception,
        ModelName::Vgg16,
        ModelName::Vgg16Bn,
    ];

    /// Whether this is an ImageNet backbone (features + [`SeedHead`], ImageNet weights
    /// loadable, freezable); the others are standalone models with the task's outputs.
    pub fn is_backbone(self) -> bool {
        matches!(
            self,
            ModelName::ResNet(_)
                | ModelName::MobileNetV2
                | ModelName::Xception
                | ModelName::Vgg16
                | ModelName::Vgg16Bn
        )
    }

    /// The smallest height and width the architecture accepts.
    fn min_side(self) -> usize {
        match self {
            ModelName::Scratch(blocks) => 1usize.checked_shl(blocks as u32).unwrap_or(usize::MAX),
            ModelName::LeNet => 16,
            // Three 2x2 poolings of the default filters.
            ModelName::FakeApp => 8,
            ModelName::Xception | ModelName::Vgg16 | ModelName::Vgg16Bn => 32,
            ModelName::Meso4
            | ModelName::MesoInception4
            | ModelName::ResNet(_)
            | ModelName::MobileNetV2 => 1,
        }
    }
}

impl FromStr for ModelName {
    type Err = Error;
    fn from_str(s: &str) -> Result<ModelName> {
        let name = match s {
            "lenet" => Some(ModelName::LeNet),
            "fakeapp" => Some(ModelName::FakeApp),
            "meso4" => Some(ModelName::Meso4),
            "mesoinception4" => Some(ModelName::MesoInception4),
            "resnet18" => Some(ModelName::ResNet(ResNetDepth::R18)),
            "resnet34" => Some(ModelName::ResNet(ResNetDepth::R34)),
            "resnet50" => Some(ModelName::ResNet(ResNetDepth::R50)),
            "mobilenetv2" => Some(ModelName::MobileNetV2),
            "xception" => Some(ModelName::Xception),
            "vgg16" => Some(ModelName::Vgg16),
            "vgg16bn" | "vgg16_bn" => Some(ModelName::Vgg16Bn),
            // Digits only (no sign), so that the name round-trips.
            _ => s
                .strip_prefix("scratch")
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0)
                .map(ModelName::Scratch),
        };
        name.ok_or_else(|| Error::UnknownModel {
            name: s.to_string(),
            known: ModelName::ALL_NAMES.map(String::from).into(),
        })
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelName::Scratch(n) => write!(f, "scratch{n}"),
            ModelName::LeNet => f.write_str("lenet"),
            ModelName::FakeApp => f.write_str("fakeapp"),
            ModelName::Meso4 => f.write_str("meso4"),
            ModelName::MesoInception4 => f.write_str("mesoinception4"),
            ModelName::ResNet(ResNetDepth::R18) => f.write_str("resnet18"),
            ModelName::ResNet(ResNetDepth::R34) => f.write_str("resnet34"),
            ModelName::ResNet(ResNetDepth::R50) => f.write_str("resnet50"),
            ModelName::MobileNetV2 => f.write_str("mobilenetv2"),
            ModelName::Xception => f.write_str("xception"),
            ModelName::Vgg16 => f.write_str("vgg16"),
            ModelName::Vgg16Bn => f.write_str("vgg16bn"),
        }
    }
}

impl From<ModelName> for String {
    fn from(name: ModelName) -> String {
        name.to_string()
    }
}

impl TryFrom<String> for ModelName {
    type Error = Error;
    fn try_from(s: String) -> Result<ModelName> {
        s.parse()
    }
}

fn default_task() -> Task {
    Task::Binary
}

fn default_input() -> (usize, usize, usize) {
    (3, 128, 128)
}

fn default_head_hidden() -> Vec<usize> {
    vec![512, 256, 128]
}

fn default_head_dropout() -> f32 {
    0.5
}

/// What to build: the architecture and everything that fixes its variables and their initial
/// values. Saved as the `"model"` of a checkpoint's `run.json`, it rebuilds the model
/// ([`load`]). Fields other than `name` may be left out of the JSON (they take
/// [`ZooConfig::new`]'s values).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooConfig {
    /// The architecture.
    pub name: ModelName,
    /// The task (fixes the number of outputs).
    #[serde(default = "default_task")]
    pub task: Task,
    /// Input `(channels, height, width)`. Backbones take 3 channels; the standalone models any.
    #[serde(default = "default_input")]
    pub input: (usize, usize, usize),
    /// ImageNet weights to start a backbone from (`.safetensors` or a PyTorch `.pth`, e.g.
    /// torchvision's file as it is): every backbone variable must be in the file, extra tensors
    /// (the ImageNet classifier) are ignored, and the model's normalisation becomes the
    /// weights' ([`Backbone::pretrained_spec`]). For a standalone model, a file holding every
    /// variable. [`load`] does not read it: the checkpoint holds the trained weights.
    #[serde(default)]
    pub weights: Option<PathBuf>,
    /// Which backbone stages stay fixed; must be [`Freeze::None`] for standalone models.
    #[serde(default)]
    pub freeze: Freeze,
    /// Hidden sizes of the backbones' [`SeedHead`] (the report's `[512, 256, 128]`).
    #[serde(default = "default_head_hidden")]
    pub head_hidden: Vec<usize>,
    /// Dropout of the backbones' [`SeedHead`] (0.5). The standalone models use their papers'
    /// dropout.
    #[serde(default = "default_head_dropout")]
    pub head_dropout: f32,
    /// Seeds the initial weights of every variable not loaded from `weights`, and every
    /// dropout mask: the same config builds bit-identical initial weights on every run, which
    /// candle's own unseedable initialisation cannot give. Set it to the training seed.
    #[serde(default)]
    pub seed: u64,
}

impl ZooConfig {
    /// Binary task, 3x128x128 input, no weights, nothing frozen, the report's head, seed 0.
    pub fn new(name: ModelName) -> ZooConfig {
        ZooConfig {
            name,
            task: default_task(),
            input: default_input(),
            weights: None,
            freeze: Freeze::None,
            head_hidden: default_head_hidden(),
            head_dropout: default_head_dropout(),
            seed: 0,
        }
    }
}

/// A model of any architecture the zoo builds.
#[derive(Debug, Clone)]
pub enum ZooModel {
    /// See [`ScratchCnn`].
    Scratch(ScratchCnn),
    /// See [`LeNetLike`].
    LeNet(LeNetLike),
    /// See [`FakeAppCnn`].
    FakeApp(FakeAppCnn),
    /// See [`Meso4`].
    Meso4(Meso4),
    /// See [`MesoInception4`].
    MesoInception4(MesoInception4),
    /// See [`ResNet`].
    ResNet(TransferModel<ResNet, SeedHead>),
    /// See [`MobileNetV2`].
    MobileNetV2(TransferModel<MobileNetV2, SeedHead>),
    /// See [`Xception`].
    Xception(TransferModel<Xception, SeedHead>),
    /// See [`Vgg`] (`vgg16` and `vgg16bn`).
    Vgg(TransferModel<Vgg, SeedHead>),
}

impl ZooModel {
    /// The backbone of a transfer model (`None` for the standalone ones).
    pub fn backbone_mut(&mut self) -> Option<&mut dyn Backbone> {
        match self {
            ZooModel::ResNet(m) => Some(&mut m.backbone),
            ZooModel::MobileNetV2(m) => Some(&mut m.backbone),
            ZooModel::Xception(m) => Some(&mut m.backbone),
            ZooModel::Vgg(m) => Some(&mut m.backbone),
            ZooModel::Scratch(_)
            | ZooModel::LeNet(_)
            | ZooModel::FakeApp(_)
            | ZooModel::Meso4(_)
            | ZooModel::MesoInception4(_) => None,
        }
    }

    /// The last spatial feature map `(N, C, H', W')`: the last conv stage's output, before
    /// global pooling or flattening (timm's split, what Grad-CAM differentiates against).
    /// `forward_t(x, train)` is exactly `forward_head(&forward_features(x, train)?, train)`.
    pub fn forward_features(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            ZooModel::Scratch(m) => m.forward_features(xs, train),
            ZooModel::LeNet(m) => m.forward_features(xs, train),
            ZooModel::FakeApp(m) => m.forward_features(xs, train),
            ZooModel::Meso4(m) => m.forward_features(xs, train),
            ZooModel::MesoInception4(m) => m.forward_features(xs, train),
            ZooModel::ResNet(m) => m.forward_features(xs, train),
            ZooModel::MobileNetV2(m) => m.forward_features(xs, train),
            ZooModel::Xception(m) => m.forward_features(xs, train),
            ZooModel::Vgg(m) => m.forward_features(xs, train),
        }
    }

    /// The logits `(N, outputs)` from [`ZooModel::forward_features`]' output: pooling or
    /// flattening and the fully connected layers (a backbone's pooling and hidden layers, then
    /// its [`SeedHead`]).
    pub fn forward_head(&self, features: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            ZooModel::Scratch(m) => m.forward_head(features, train),
            ZooModel::LeNet(m) => m.forward_head(features, train),
            ZooModel::FakeApp(m) => m.forward_head(features, train),
            ZooModel::Meso4(m) => m.forward_head(features, train),
            ZooModel::MesoInception4(m) => m.forward_head(features, train),
            ZooModel::ResNet(m) => m.forward_head(features, train),
            ZooModel::MobileNetV2(m) => m.forward_head(features, train),
            ZooModel::Xception(m) => m.forward_head(features, train),
            ZooModel::Vgg(m) => m.forward_head(features, train),
        }
    }
}

impl ModuleT for ZooModel {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.forward_head(&self.forward_features(xs, train)?, train)
    }
}

/// A built model with what training needs.
#[derive(Debug)]
pub struct Built {
    /// The model; its variables are in the `VarMap` given to [`build`].
    pub model: ZooModel,
    /// The variables to optimise, sorted by name (a stable order for optimizer checkpoints):
    /// all but BatchNorm running statistics and the frozen stages.
    pub trainable: Vec<Var>,
    /// The input normalisation the weights expect: the backbone's
    /// [`PretrainedSpec`](crate::PretrainedSpec) when started from ImageNet weights, min-max
    /// otherwise.
    pub normalization: Normalization,
    /// The configuration it was built from: save it (`serde_json::to_value`) as the run's
    /// `"model"` and [`load`] rebuilds the model.
    pub config: ZooConfig,
}

/// Reads a weight file: `.safetensors` as is, anything else as a PyTorch checkpoint.
pub fn read_weights(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    Ok(if is_safetensors {
        deeprecog_nn::import::load_safetensors(path, device)?
    } else {
        deeprecog_nn::import::load_pytorch(path, device)?
    })
}

/// Copies `tensors` into the variables of `varmap` of the same name, except those under the
/// `skip` prefixes; every other variable must be present with its shape. Checks everything
/// before changing anything. Returns how many variables were set.
///
/// # Errors
/// [`Error::MissingTensor`] or [`Error::ShapeMismatch`] naming the variable and `source`.
pub fn load_into(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    skip: &[&str],
    source: &Path,
) -> Result<usize> {
    let data = varmap.data().lock().map_err(lock_err)?;
    let mut todo = Vec::new();
    for (name, var) in data.iter() {
        if skip.iter().any(|p| has_prefix(name, p)) {
            continue;
        }
        let t = tensors.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.clone(),
            file: source.to_path_buf(),
        })?;
        if t.dims() != var.dims() {
            return Err(Error::ShapeMismatch {
                name: name.clone(),
                expected: var.dims().to_vec(),
                found: t.dims().to_vec(),
                file: source.to_path_buf(),
            });
        }
        todo.push((var, t));
    }
    for (var, t) in &todo {
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(todo.len())
}

/// Builds `config`'s model with its variables in `varmap` on `device` (F32), loads the weights
/// and applies the freezing. New variables are initialised from `config.seed` (see
/// [`deeprecog_nn::init::seeded_var_builder`]); variables already in `varmap` are kept.
///
/// # Errors
/// [`Error::MissingTensor`] / [`Error::ShapeMismatch`] naming the weight file when a variable
/// is missing from it or has another shape; [`Error::InputTooSmall`] and
/// [`Error::InvalidConfig`] for a configuration the architecture cannot take.
pub fn build(config: &ZooConfig, varmap: &VarMap, device: &Device) -> Result<Built> {
    match &config.weights {
        Some(path) => {
            let tensors = read_weights(path, device)?;
            assemble(config, Some((path, &tensors)), varmap, device)
        }
        None => assemble(config, None, varmap, device),
    }
}

/// [`build`] with the weight file already read (`None`: leave the initial weights, as [`load`]
/// does before it copies the checkpoint in). The normalisation follows `config.weights`, not
/// whether tensors were given.
fn assemble(
    config: &ZooConfig,
    weights: Option<(&Path, &HashMap<String, Tensor>)>,
    varmap: &VarMap,
    device: &Device,
) -> Result<Built> {
    let vb = seeded_var_builder(varmap, config.seed, DType::F32, device);
    let mut model = construct(config, vb)?;
    let (trainable, normalization) = match model.backbone_mut() {
        // Standalone models: every variable trains (BatchNorm statistics aside), weights (if
        // any) must hold all of them, min-max normalisation.
        None => {
            if let Some((path, tensors)) = weights {
                load_into(varmap, tensors, &[], path)?;
            }
            (trainable_vars_except(varmap, &[])?, Normalization::MinMax)
        }
        // Backbones: ImageNet weights for everything but the head, freezing, the weights'
        // normalisation.
        Some(backbone) => {
            if let Some((path, tensors)) = weights {
                load_into(varmap, tensors, &["head"], path)?;
            }
            let trainable = apply_freeze(backbone, varmap, &config.freeze)?;
            let normalization = match config.weights {
                Some(_) => backbone.pretrained_spec().normalization,
                None => Normalization::MinMax,
            };
            (trainable, normalization)
        }
    };
    Ok(Built { model, trainable, normalization, config: config.clone() })
}

/// `config`'s model over constant copies of `varmap`'s variables (those of a model [`build`]
/// or [`load`] made from the same configuration), for inference: `forward_t(x, false)` gives
/// the same values as the model over the variables to float rounding, but no operation is
/// recorded for autograd, so each activation is freed as soon as the next layer has read it.
/// Later changes to the variables do not reach it. (The rounding: a constant 3x3 layer keeps
/// its Winograd transform between calls, so it takes Winograd's algorithm at smaller outputs
/// than a layer over variables, which transforms its weight on every call.)
///
/// # Errors
/// [`Error::Candle`] naming a variable the architecture needs that `varmap` lacks or holds with
/// another shape; the configuration errors of [`build`].
pub fn inference_model(config: &ZooConfig, varmap: &VarMap, device: &Device) -> Result<ZooModel> {
    let constants = {
        let data = varmap.data().lock().map_err(lock_err)?;
        data.iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().detach().copy()?)))
            .collect::<candle_core::Result<HashMap<_, _>>>()?
    };
    construct(config, VarBuilder::from_tensors(constants, DType::F32, device))
}

/// `config`'s architecture over `vb`, before weights and freezing.
fn construct(config: &ZooConfig, vb: VarBuilder) -> Result<ZooModel> {
    let name = config.name;
    let (c, h, w) = config.input;
    let min = name.min_side();
    if h < min || w < min {
        return Err(Error::too_small(
            name.to_string(),
            config.input,
            format!("at least {min}x{min}"),
        ));
    }
    if name.is_backbone() && c != 3 {
        return Err(Error::config(
            format!("input of {name}"),
            format!("the backbone takes RGB (3 channels), got {c}"),
        ));
    }
    if !name.is_backbone() && config.freeze != Freeze::None {
        return Err(Error::config(
            format!("freeze of {name}"),
            format!("{:?}: only backbones freeze stages", config.freeze),
        ));
    }
    let (task, input, seed) = (config.task.clone(), config.input, config.seed);
    let head = |in_features| -> Result<SeedHead> {
        let cfg = SeedHeadConfig {
            in_features,
            hidden: config.head_hidden.clone(),
            dropout: config.head_dropout,
            task: config.task.clone(),
            seed,
        };
        SeedHead::new(&cfg, vb.pp("head"))
    };
    macro_rules! backbone {
        ($variant:ident, $backbone:expr) => {{
            let backbone = $backbone;
            let head = head(backbone.num_features())?;
            ZooModel::$variant(TransferModel { backbone, head })
        }};
    }
    Ok(match name {
        ModelName::Scratch(blocks) => {
            let cfg = ScratchCnnConfig { blocks, task, input, ..Default::default() };
            ZooModel::Scratch(ScratchCnn::new(&cfg, vb.clone())?)
        }
        ModelName::LeNet => {
            let cfg = LeNetLikeConfig { input, task };
            ZooModel::LeNet(LeNetLike::new(&cfg, vb.clone())?)
        }
        ModelName::FakeApp => {
            let cfg = FakeAppCnnConfig { input, task, seed, ..Default::default() };
            ZooModel::FakeApp(FakeAppCnn::new(&cfg, vb.clone())?)
        }
        ModelName::Meso4 => {
            let cfg = MesoConfig { input, task, seed, ..Default::default() };
            ZooModel::Meso4(Meso4::new(&cfg, vb.clone())?)
        }
        ModelName::MesoInception4 => {
            let cfg = MesoConfig { input, task, seed, ..Default::default() };
            ZooModel::MesoInception4(MesoInception4::new(&cfg, vb.clone())?)
        }
        ModelName::ResNet(depth) => {
            let cfg = ResNetConfig { depth, num_classes: 0, ..Default::default() };
            backbone!(ResNet, ResNet::new(&cfg, vb.clone())?)
        }
        ModelName::MobileNetV2 => {
            let cfg = MobileNetV2Config { num_classes: 0, seed, ..Default::default() };
            backbone!(MobileNetV2, MobileNetV2::new(&cfg, vb.clone())?)
        }
        ModelName::Xception => {
            let cfg = XceptionConfig { num_classes: 0, seed, ..Default::default() };
            backbone!(Xception, Xception::new(&cfg, vb.clone())?)
        }
        ModelName::Vgg16 | ModelName::Vgg16Bn => {
            let batch_norm = name == ModelName::Vgg16Bn;
            let cfg = VggConfig { batch_norm, num_classes: 0, seed, ..Default::default() };
            backbone!(Vgg, Vgg::new(&cfg, vb.clone())?)
        }
    })
}

/// A trained model rebuilt by [`load`], ready for inference (`forward_t(x, false)` on
/// `normalization.apply(u8_batch)`).
pub struct Loaded {
    /// The model with the checkpoint's weights.
    pub model: ZooModel,
    /// Its variables.
    pub varmap: VarMap,
    /// The input normalisation it was trained with (see [`Built::normalization`]).
    pub normalization: Normalization,
    /// The configuration it was built from (the run file's `"model"`).
    pub config: ZooConfig,
    /// The checkpoint folder the weights came from.
    pub checkpoint: PathBuf,
    /// The checkpoint's run file: seed, epoch, metrics, training configuration.
    pub run: RunConfig,
}

impl std::fmt::Debug for Loaded {
    // `VarMap` has no `Debug`; its variable count stands for it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let vars = self.varmap.data().lock().map(|d| d.len()).ok();
        f.debug_struct("Loaded")
            .field("model", &self.model)
            .field("vars", &vars)
            .field("normalization", &self.normalization)
            .field("config", &self.config)
            .field("checkpoint", &self.checkpoint)
            .field("run", &self.run)
            .finish()
    }
}

/// The checkpoint folder [`load`] reads for `dir`: `dir` itself when it holds a checkpoint,
/// otherwise its `best/`, otherwise its `last/`.
///
/// # Errors
/// [`Error::Checkpoint`] when none of the three holds one.
pub fn checkpoint_dir(dir: &Path) -> Result<PathBuf> {
    [dir.to_path_buf(), dir.join("best"), dir.join("last")]
        .into_iter()
        .find(|d| checkpoint::exists(d))
        .ok_or_else(|| Error::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("no checkpoint here, in best/ or in last/ (no {RUN_FILE})"),
        })
}

/// Rebuilds a trained model with its weights and normalisation from a run folder (its `best/`
/// checkpoint, else `last/`) or from a checkpoint folder itself.
///
/// The checkpoint's `run.json` must hold the [`ZooConfig`] as its `"model"` (what [`build`]
/// returned as [`Built::config`]) and its `model.safetensors` every variable (see
/// [`deeprecog_nn::checkpoint`]). The model is built from the configuration alone, without
/// reading [`ZooConfig::weights`] (so no ImageNet file or `assets/` is needed), then the
/// checkpoint's weights are copied in.
///
/// # Errors
/// [`Error::Checkpoint`] when no checkpoint is found or its `"model"` is not a zoo
/// configuration; [`Error::Nn`] naming the file when the weights are missing, corrupt or do not
/// fit the model.
pub fn load(run_dir: &Path, device: &Device) -> Result<Loaded> {
    let dir = checkpoint_dir(run_dir)?;
    let run = checkpoint::read_run(&dir)?;
    let config: ZooConfig =
        serde_json::from_value(run.model.clone()).map_err(|e| Error::Checkpoint {
            path: dir.join(RUN_FILE),
            reason: format!("its \"model\" is not a zoo configuration: {e}"),
        })?;
    let varmap = VarMap::new();
    let built = assemble(&config, None, &varmap, device)?;
    let loaded = checkpoint::load(&dir, &varmap, device)?;
    Ok(Loaded {
        model: built.model,
        varmap,
        normalization: built.normalization,
        config,
        checkpoint: dir,
        run: loaded.run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::test_util::randn;
    use deeprecog_attributes::Attribute;

    fn weights(cfg: &ZooConfig) -> Vec<(String, Vec<u32>)> {
        let varmap = VarMap::new();
        build(cfg, &varmap, &Device::Cpu).unwrap();
        let data = varmap.data().lock().unwrap();
        let mut all: Vec<(String, Vec<u32>)> = data
            .iter()
            .map(|(k, v)| {
                let v = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (k.clone(), v.into_iter().map(f32::to_bits).collect())
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn the_seed_fixes_the_initial_weights() {
        let cfg = ZooConfig { input: (3, 32, 32), ..ZooConfig::new(ModelName::Scratch(3)) };
        let a = weights(&ZooConfig { seed: 17, ..cfg.clone() });
        assert!(a.iter().any(|(k, _)| k.ends_with("weight")));
        assert_eq!(a, weights(&ZooConfig { seed: 17, ..cfg.clone() }));
        let b = weights(&ZooConfig { seed: 18, ..cfg });
        let names = |w: &[(String, Vec<u32>)]| w.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b));
        // Every randomly initialised variable differs (BatchNorm's constants do not).
        for ((name, wa), (_, wb)) in a.iter().zip(&b) {
            let constant = wa.iter().all(|&x| x == wa[0]);
            assert!(constant || wa != wb, "{name} did not change with the seed");
        }
        assert!(a.iter().zip(&b).any(|((_, wa), (_, wb))| wa != wb));
    }

    #[test]
    fn names_parse_print_and_serialise() {
        assert_eq!(ModelName::ALL.len(), ModelName::ALL_NAMES.len());
        for (name, text) in ModelName::ALL.into_iter().zip(ModelName::ALL_NAMES) {
            let shown = name.to_string();
            assert_eq!(shown.parse::<ModelName>().unwrap(), name);
            assert_eq!(serde_json::to_string(&name).unwrap(), format!("\"{shown}\""));
            assert_eq!(serde_json::from_str::<ModelName>(&format!("\"{shown}\"")).unwrap(), name);
            let pattern = match name {
                ModelName::Scratch(_) => "scratchN".to_string(),
                _ => shown.clone(),
            };
            assert_eq!(pattern, text);
        }
        assert_eq!("scratch12".parse::<ModelName>().unwrap(), ModelName::Scratch(12));
        assert_eq!("vgg16_bn".parse::<ModelName>().unwrap(), ModelName::Vgg16Bn);
        for bad in ["scratch0", "scratch", "scratch+3", "resnet101", "", "MobileNetV2"] {
            match bad.parse::<ModelName>() {
                Err(Error::UnknownModel { name, known }) => {
                    assert_eq!(name, bad);
                    assert!(known.contains(&"mesoinception4".to_string()));
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        assert!(serde_json::from_str::<ModelName>("\"resnet101\"").is_err());
        let backbones: Vec<_> = ModelName::ALL.into_iter().filter(|n| n.is_backbone()).collect();
        assert_eq!(backbones.len(), 7);
    }

    #[test]
    fn configs_round_trip_through_json() {
        let full = ZooConfig {
            name: ModelName::ResNet(ResNetDepth::R34),
            task: Task::MultiLabel(vec![Attribute::Male, Attribute::Smiling]),
            input: (3, 96, 128),
            weights: Some(PathBuf::from("assets/resnet34.pth")),
            freeze: Freeze::UpToStage("layer2".into()),
            head_hidden: vec![64, 32],
            head_dropout: 0.25,
            seed: 42,
        };
        let json = serde_json::to_value(&full).unwrap();
        assert_eq!(json["name"], "resnet34");
        assert_eq!(json["input"], serde_json::json!([3, 96, 128]));
        assert_eq!(serde_json::from_value::<ZooConfig>(json).unwrap(), full);
        for freeze in [Freeze::None, Freeze::FirstLayers(3), Freeze::Backbone] {
            let cfg = ZooConfig { freeze, task: Task::MultiClass(5), ..full.clone() };
            let text = serde_json::to_string(&cfg).unwrap();
            assert_eq!(serde_json::from_str::<ZooConfig>(&text).unwrap(), cfg);
        }
        // Only the name is required.
        let short: ZooConfig = serde_json::from_str(r#"{"name": "meso4"}"#).unwrap();
        assert_eq!(short, ZooConfig::new(ModelName::Meso4));
        let err = serde_json::from_str::<ZooConfig>(r#"{"name": "alexnet"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown model \"alexnet\""), "{err}");
    }

    #[test]
    fn the_model_configs_round_trip_through_json() {
        fn round_trip<T>(value: T)
        where
            T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
        {
            let json = serde_json::to_string(&value).unwrap();
            assert_eq!(serde_json::from_str::<T>(&json).unwrap(), value, "{json}");
        }
        round_trip(ResNetConfig { depth: ResNetDepth::R50, base_channels: 16, num_classes: 3 });
        round_trip(MobileNetV2Config {
            width_mult: 0.35,
            num_classes: 0,
            dropout: 0.1,
            round_nearest: 4,
            seed: 5,
        });
        round_trip(XceptionConfig { num_classes: 10, drop_rate: 0.3, seed: 2 });
        round_trip(VggConfig {
            batch_norm: true,
            base_channels: 8,
            hidden: 32,
            num_classes: 1,
            dropout: 0.45,
            seed: 1,
        });
        round_trip(Freeze::UpToStage("features.7".into()));
        round_trip(ResNetDepth::R18);
    }

    /// Every architecture by name, on a small non-square input where it allows one: the forward
    /// pass gives the task's outputs (a standalone model's own layer, a backbone's head).
    #[test]
    fn builds_every_model_by_name() {
        let task = Task::MultiClass(3);
        for name in ModelName::ALL {
            let input = match name {
                ModelName::LeNet | ModelName::FakeApp => (1, 40, 56),
                _ => (3, 40, 56),
            };
            let cfg = ZooConfig {
                task: task.clone(),
                input,
                head_hidden: vec![16, 8],
                ..ZooConfig::new(name)
            };
            let varmap = VarMap::new();
            let built = build(&cfg, &varmap, &Device::Cpu).unwrap();
            assert_eq!(built.config, cfg);
            assert_eq!(built.normalization, Normalization::MinMax, "{name}");
            let x = randn(1, (2, input.0, input.1, input.2));
            let y = built.model.forward_t(&x, false).unwrap();
            assert_eq!(y.dims(), &[2, 3], "{name}");
            let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(y.iter().all(|v| v.is_finite()), "{name}: {y:?}");
            assert!(!built.trainable.is_empty());
            let data = varmap.data().lock().unwrap();
            // The backbones' SeedHead (the standalone models' own last layer may be `head`).
            let seed_head = data.keys().any(|k| k.starts_with("head.out."));
            assert_eq!(seed_head, name.is_backbone(), "{name}");
        }
    }

    /// `forward_head(forward_features(x))` against `forward_t(x)` in eval mode, on one
    /// `(1, 3, h, w)` input: exactly equal, features of rank 4.
    fn check_split(name: &str, model: &ZooModel, (h, w): (usize, usize), outputs: usize) {
        let x = randn(2, (1, 3, h, w));
        let whole = model.forward_t(&x, false).unwrap();
        let features = model.forward_features(&x, false).unwrap();
        assert_eq!(features.rank(), 4, "{name}: {:?}", features.dims());
        assert_eq!(features.dims()[0], 1, "{name}");
        let split = model.forward_head(&features, false).unwrap();
        assert_eq!(split.dims(), &[1, outputs], "{name}");
        let diff = (whole - split).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name}");
    }

    /// timm's split reproduces the forward pass exactly for every architecture, on a small
    /// non-square input (32x40, or the architecture's `min_side` and 8 more where larger).
    ///
    /// VGG-16 is checked through the same [`ZooModel::Vgg`] with narrow layers (base 8
    /// channels, 32 hidden units): `zoo::build` gives it torchvision's 4096-unit hidden layers,
    /// whose 120M seeded weights take ~5 s each to draw (`builds_every_model_by_name` builds
    /// those); the split code is the same.
    #[test]
    fn forward_features_then_head_is_forward_t() {
        let side = |name: ModelName| name.min_side().max(32);
        for name in ModelName::ALL
            .into_iter()
            .filter(|n| !matches!(n, ModelName::Vgg16 | ModelName::Vgg16Bn))
        {
            let (h, w) = (side(name), side(name) + 8);
            let cfg = ZooConfig {
                task: Task::MultiClass(2),
                input: (3, h, w),
                head_hidden: vec![8],
                seed: 3,
                ..ZooConfig::new(name)
            };
            let built = build(&cfg, &VarMap::new(), &Device::Cpu).unwrap();
            check_split(&name.to_string(), &built.model, (h, w), 2);
        }
        for batch_norm in [false, true] {
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
            let cfg = VggConfig {
                batch_norm,
                base_channels: 8,
                hidden: 32,
                num_classes: 0,
                seed: 3,
                ..Default::default()
            };
            let backbone = Vgg::new(&cfg, vb.clone()).unwrap();
            let hcfg = SeedHeadConfig {
                in_features: 32,
                hidden: vec![8],
                task: Task::MultiClass(2),
                ..Default::default()
            };
            let head = SeedHead::new(&hcfg, vb.pp("head")).unwrap();
            let model = ZooModel::Vgg(TransferModel { backbone, head });
            check_split(&format!("vgg16 (batch_norm {batch_norm})"), &model, (32, 40), 2);
        }
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        let too_small = ZooConfig { input: (3, 16, 64), ..ZooConfig::new(ModelName::Xception) };
        let err = build(&too_small, &VarMap::new(), &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::InputTooSmall { input: (3, 16, 64), .. }), "{err}");
        let gray = ZooConfig { input: (1, 64, 64), ..ZooConfig::new(ModelName::MobileNetV2) };
        assert!(matches!(
            build(&gray, &VarMap::new(), &Device::Cpu),
            Err(Error::InvalidConfig { .. })
        ));
        let frozen_scratch = ZooConfig {
            input: (3, 32, 32),
            freeze: Freeze::Backbone,
            ..ZooConfig::new(ModelName::Scratch(2))
        };
        assert!(matches!(
            build(&frozen_scratch, &VarMap::new(), &Device::Cpu),
            Err(Error::InvalidConfig { .. })
        ));
        let bad_stage = ZooConfig {
            input: (3, 32, 32),
            freeze: Freeze::UpToStage("layer9".into()),
            ..ZooConfig::new(ModelName::ResNet(ResNetDepth::R18))
        };
        assert!(matches!(
            build(&bad_stage, &VarMap::new(), &Device::Cpu),
            Err(Error::InvalidConfig { .. })
        ));
    }
}
