//! Building a classifier by name, with optional pretrained weights and freezing: the glue the
//! example binaries share.
//!
//! | name | model |
//! |------|-------|
//! | `scratch3`, `scratchN` | [`ScratchCnn`] with N blocks |
//! | `mobilenetv2` | [`MobileNetV2`] features + [`SeedHead`] |
//! | `resnet18`, `resnet34`, `resnet50` | [`ResNet`] features + [`SeedHead`] |
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{ModuleT, VarMap};
//! use deeprecog_classifiers::zoo::{self, ModelName, ZooConfig};
//!
//! let varmap = VarMap::new();
//! let cfg = ZooConfig { input: (3, 32, 48), ..ZooConfig::new("scratch2".parse()?) };
//! let built = zoo::build(&cfg, &varmap, &Device::Cpu)?;
//! let y = built.model.forward_t(&Tensor::zeros((2, 3, 32, 48), DType::F32, &Device::Cpu)?, false)?;
//! assert_eq!(y.dims(), &[2, 1]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, VarMap};
use deeprecog_dataset::transforms::Normalization;
use deeprecog_nn::init::seeded_var_builder;

use crate::backbone::{apply_freeze, has_prefix, Backbone, Freeze};
use crate::train::{Result, TrainError};
use crate::{
    MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig, ResNetDepth, ScratchCnn,
    ScratchCnnConfig, SeedHead, SeedHeadConfig, Task, TransferModel,
};

/// A model architecture by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelName {
    /// The report's scratch CNN with this many blocks.
    Scratch(usize),
    /// MobileNetV2 (width 1.0) features with a [`SeedHead`].
    MobileNetV2,
    /// A ResNet's features with a [`SeedHead`].
    ResNet(ResNetDepth),
}

impl FromStr for ModelName {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<ModelName> {
        let unknown = || {
            TrainError::Config(format!(
                "unknown model {s:?}; use scratchN, mobilenetv2, resnet18, resnet34 or resnet50"
            ))
        };
        match s {
            "mobilenetv2" => Ok(ModelName::MobileNetV2),
            "resnet18" => Ok(ModelName::ResNet(ResNetDepth::R18)),
            "resnet34" => Ok(ModelName::ResNet(ResNetDepth::R34)),
            "resnet50" => Ok(ModelName::ResNet(ResNetDepth::R50)),
            _ => match s.strip_prefix("scratch").map(str::parse::<usize>) {
                Some(Ok(n)) if n > 0 => Ok(ModelName::Scratch(n)),
                _ => Err(unknown()),
            },
        }
    }
}

impl std::fmt::Display for ModelName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelName::Scratch(n) => write!(f, "scratch{n}"),
            ModelName::MobileNetV2 => f.write_str("mobilenetv2"),
            ModelName::ResNet(ResNetDepth::R18) => f.write_str("resnet18"),
            ModelName::ResNet(ResNetDepth::R34) => f.write_str("resnet34"),
            ModelName::ResNet(ResNetDepth::R50) => f.write_str("resnet50"),
        }
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct ZooConfig {
    /// The architecture.
    pub name: ModelName,
    /// The task (fixes the number of outputs).
    pub task: Task,
    /// Input `(channels, height, width)`.
    pub input: (usize, usize, usize),
    /// Weights to start from: `.safetensors` or a PyTorch `.pth`. Every variable of the model
    /// outside the head must be in the file; extra tensors (an ImageNet classifier) are ignored.
    pub weights: Option<PathBuf>,
    /// Which backbone stages stay fixed (ignored for the scratch CNN).
    pub freeze: Freeze,
    /// Hidden sizes of the [`SeedHead`] (the report's `[512, 256, 128]` by default).
    pub head_hidden: Vec<usize>,
    /// Dropout of the [`SeedHead`].
    pub head_dropout: f32,
    /// Seeds the initial weights of every variable not loaded from `weights` (and the head's
    /// dropout masks): the same config builds bit-identical initial weights on every run, which
    /// candle's own unseedable initialisation cannot give. Set it to the training seed.
    pub seed: u64,
}

impl ZooConfig {
    /// Binary task, 3x128x128 input, no weights, nothing frozen, the report's head, seed 0.
    pub fn new(name: ModelName) -> ZooConfig {
        ZooConfig {
            name,
            task: Task::Binary,
            input: (3, 128, 128),
            weights: None,
            freeze: Freeze::None,
            head_hidden: vec![512, 256, 128],
            head_dropout: 0.5,
            seed: 0,
        }
    }
}

/// A model of any architecture the zoo builds.
#[derive(Debug, Clone)]
pub enum ZooModel {
    /// See [`ScratchCnn`].
    Scratch(ScratchCnn),
    /// See [`MobileNetV2`].
    MobileNetV2(TransferModel<MobileNetV2, SeedHead>),
    /// See [`ResNet`].
    ResNet(TransferModel<ResNet, SeedHead>),
}

impl ModuleT for ZooModel {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            ZooModel::Scratch(m) => m.forward_t(xs, train),
            ZooModel::MobileNetV2(m) => m.forward_t(xs, train),
            ZooModel::ResNet(m) => m.forward_t(xs, train),
        }
    }
}

/// A built model with what training needs.
#[derive(Debug)]
pub struct Built {
    /// The model; its variables are in the `VarMap` given to [`build`].
    pub model: ZooModel,
    /// The variables to optimise, sorted by name (a stable order for optimizer checkpoints).
    pub trainable: Vec<Var>,
    /// The input normalisation the weights expect (min-max for the scratch CNN, ImageNet
    /// statistics for the backbones).
    pub normalization: Normalization,
    /// A JSON description for the run configuration.
    pub config: serde_json::Value,
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
/// `skip` prefixes; every other variable must be present with its shape. Returns how many
/// variables were set.
pub fn load_into(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    skip: &[&str],
    source: &Path,
) -> Result<usize> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Config("the VarMap's lock is poisoned".into()))?;
    let mut set = 0;
    for (name, var) in data.iter() {
        if skip.iter().any(|p| has_prefix(name, p)) {
            continue;
        }
        let t = tensors.get(name).ok_or_else(|| TrainError::Io {
            path: source.to_path_buf(),
            reason: format!("no tensor `{name}`"),
        })?;
        if t.dims() != var.dims() {
            return Err(TrainError::Io {
                path: source.to_path_buf(),
                reason: format!(
                    "`{name}` has shape {:?}, the model has {:?}",
                    t.dims(),
                    var.dims()
                ),
            });
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        set += 1;
    }
    Ok(set)
}

fn sorted_vars(vars: Vec<Var>, varmap: &VarMap) -> Result<Vec<Var>> {
    // Sorting by name makes the optimizer's positional state stable across processes.
    let data = varmap
        .data()
        .lock()
        .map_err(|_| TrainError::Config("the VarMap's lock is poisoned".into()))?;
    let mut named: Vec<(String, Var)> = data
        .iter()
        .filter(|(_, v)| vars.iter().any(|t| t.as_tensor().id() == v.as_tensor().id()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(named.into_iter().map(|(_, v)| v).collect())
}

/// Builds `config`'s model with its variables in `varmap` on `device` (F32), loads the weights
/// and applies the freezing. New variables are initialised from `config.seed` (see
/// [`deeprecog_nn::init::seeded_var_builder`]); variables already in `varmap` are kept.
///
/// # Errors
/// [`TrainError::Io`] naming the weight file when a variable is missing from it or has another
/// shape; model-construction errors (e.g. an input too small for the scratch CNN).
pub fn build(config: &ZooConfig, varmap: &VarMap, device: &Device) -> Result<Built> {
    let vb = seeded_var_builder(varmap, config.seed, DType::F32, device);
    let weights = match &config.weights {
        Some(p) => Some((p.as_path(), read_weights(p, device)?)),
        None => None,
    };
    let head_cfg = |in_features| SeedHeadConfig {
        in_features,
        hidden: config.head_hidden.clone(),
        dropout: config.head_dropout,
        task: config.task.clone(),
        seed: config.seed,
    };
    let describe = serde_json::json!({
        "model": config.name.to_string(),
        "outputs": config.task.outputs(),
        "input": [config.input.0, config.input.1, config.input.2],
        "freeze": format!("{:?}", config.freeze),
        "head_hidden": config.head_hidden,
        "seed": config.seed,
    });
    let imagenet = Normalization::ImageNet;
    match config.name {
        ModelName::Scratch(blocks) => {
            let cfg = ScratchCnnConfig {
                blocks,
                task: config.task.clone(),
                input: config.input,
                ..Default::default()
            };
            let model = ScratchCnn::new(&cfg, vb)?;
            if let Some((path, tensors)) = &weights {
                load_into(varmap, tensors, &[], path)?;
            }
            let trainable = sorted_vars(varmap.all_vars(), varmap)?;
            Ok(Built {
                model: ZooModel::Scratch(model),
                trainable,
                normalization: Normalization::MinMax,
                config: describe,
            })
        }
        ModelName::MobileNetV2 => {
            let cfg = MobileNetV2Config { num_classes: 0, ..Default::default() };
            let mut backbone = MobileNetV2::new(&cfg, vb.clone())?;
            let head = SeedHead::new(&head_cfg(backbone.num_features()), vb.pp("head"))?;
            if let Some((path, tensors)) = &weights {
                load_into(varmap, tensors, &["head"], path)?;
            }
            let trainable = apply_freeze(&mut backbone, varmap, &config.freeze)?;
            Ok(Built {
                model: ZooModel::MobileNetV2(TransferModel { backbone, head }),
                trainable: sorted_vars(trainable, varmap)?,
                normalization: imagenet,
                config: describe,
            })
        }
        ModelName::ResNet(depth) => {
            let cfg = ResNetConfig { depth, num_classes: 0, ..Default::default() };
            let mut backbone = ResNet::new(&cfg, vb.clone())?;
            let head = SeedHead::new(&head_cfg(backbone.num_features()), vb.pp("head"))?;
            if let Some((path, tensors)) = &weights {
                load_into(varmap, tensors, &["head"], path)?;
            }
            let trainable = apply_freeze(&mut backbone, varmap, &config.freeze)?;
            Ok(Built {
                model: ZooModel::ResNet(TransferModel { backbone, head }),
                trainable: sorted_vars(trainable, varmap)?,
                normalization: imagenet,
                config: describe,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
