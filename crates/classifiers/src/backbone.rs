//! The timm-like [`Backbone`] trait, the [`PretrainedSpec`] that keeps preprocessing in line
//! with the weights, and freezing for transfer learning ([`Freeze`], [`trainable_vars`],
//! [`apply_freeze`]).
//!
//! Freezing works on two levels:
//!
//! * the optimizer level: [`trainable_vars`] leaves the variables of frozen stages (and every
//!   BatchNorm running statistic) out of the list handed to the optimizer, so they are never
//!   updated;
//! * the graph level: [`Backbone::set_frozen_stages`] (called by [`apply_freeze`]) makes
//!   `forward_features` run the frozen stages in eval mode and `detach()` the activation after
//!   the last of them. No backward pass then flows into the frozen stages, so candle does not
//!   even compute their gradients, and their BatchNorm statistics stay those of the weights.
//!
//! Using only the first level still works, but candle then computes (and throws away) the
//! gradients of the frozen stages, which costs about as much as training them.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use deeprecog_dataset::transforms::Normalization;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What the pretrained weights of a backbone expect, so preprocessing always matches them.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainedSpec {
    /// The input normalisation the weights were trained with (ImageNet statistics for
    /// torchvision's weights, `[-1, 1]` for the Keras Xception port); the statistics themselves
    /// live once, in `deeprecog_dataset::transforms::Normalization`.
    pub normalization: Normalization,
    /// Input `(channels, height, width)` the weights were trained at.
    pub input_size: (usize, usize, usize),
    /// Number of classes of the pretrained classifier.
    pub num_classes: usize,
    /// Where the weights come from (the torchvision download address).
    pub source: &'static str,
}

impl PretrainedSpec {
    /// The torchvision ImageNet-1k spec (ImageNet mean / std, 224x224 RGB, 1000 classes) for
    /// weights at `source`.
    pub const fn imagenet(source: &'static str) -> PretrainedSpec {
        PretrainedSpec {
            normalization: Normalization::ImageNet,
            input_size: (3, 224, 224),
            num_classes: 1000,
            source,
        }
    }
}

/// Which leading stages of a backbone are frozen, and the forward pass that honours it: the
/// freezing logic every [`Backbone`] shares, written once.
///
/// A backbone keeps one of these, hands it out through [`Backbone::frozen`] /
/// [`Backbone::frozen_mut`], and runs its stages through [`FrozenStages::forward`] (or, for
/// stages it cannot hold in one list, [`FrozenStages::train_mode`] and [`FrozenStages::cut`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrozenStages {
    n: usize,
}

impl FrozenStages {
    /// How many leading stages are frozen.
    pub fn count(&self) -> usize {
        self.n
    }

    /// Freezes the first `n` of `stages` stages; fails when `n > stages`.
    pub fn set(&mut self, n: usize, stages: usize) -> Result<()> {
        if n > stages {
            return Err(Error::config("freeze", format!("cannot freeze {n} of {stages} stages")));
        }
        self.n = n;
        Ok(())
    }

    /// Whether stage `i` runs in train mode: only when the pass does and the stage is not
    /// frozen (a frozen stage's BatchNorm statistics stay those of the weights).
    pub fn train_mode(&self, i: usize, train: bool) -> bool {
        train && i >= self.n
    }

    /// The output of stage `i`, detached when it is the last frozen one, so that the backward
    /// pass stops there and candle computes no gradient for the frozen stages.
    pub fn cut(&self, i: usize, x: Tensor) -> Tensor {
        if i + 1 == self.n {
            x.detach()
        } else {
            x
        }
    }

    /// Runs `stages` in order on `x`, each in [`FrozenStages::train_mode`] and cut after the
    /// last frozen one.
    pub fn forward<'a, S: ModuleT + 'a>(
        &self,
        stages: impl IntoIterator<Item = &'a S>,
        x: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (i, stage) in stages.into_iter().enumerate() {
            x = self.cut(i, stage.forward_t(&x, self.train_mode(i, train))?);
        }
        Ok(x)
    }
}

/// A classification backbone in timm's shape: a feature extractor made of named stages, a
/// global pool and a replaceable classifier.
///
/// Variable names follow torchvision's `state_dict`, relative to the `VarBuilder` the model was
/// built from. `forward_t(x, train)` equals `forward_head(forward_features(x, train), train,
/// false)`.
pub trait Backbone: ModuleT {
    /// The last feature map, `(N, num_features, H', W')`.
    fn forward_features(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor>;

    /// Pools `features` globally; returns the pooled `(N, num_features)` when `pre_logits`,
    /// otherwise the classifier's logits (the pooled features when the classifier was reset to
    /// zero classes).
    fn forward_head(
        &self,
        features: &Tensor,
        train: bool,
        pre_logits: bool,
    ) -> candle_core::Result<Tensor>;

    /// Channels of the feature map (the classifier's input size).
    fn num_features(&self) -> usize;

    /// Outputs of the current classifier (0: no classifier).
    fn num_classes(&self) -> usize;

    /// Replaces the final Linear by a fresh one with `num_classes` outputs (0 removes it).
    ///
    /// `vb` is the model's root builder: the layer is created under the torchvision name
    /// ([`Backbone::classifier_prefix`]). A `VarMap` refuses a second variable of the same name
    /// with another shape: use [`replace_classifier`] for models that live in a `VarMap`.
    fn reset_classifier(&mut self, num_classes: usize, vb: VarBuilder) -> Result<()>;

    /// The spec of the ImageNet weights for this architecture.
    fn pretrained_spec(&self) -> PretrainedSpec;

    /// Variable-name prefixes of the feature stages, in forward order (`features.0`, ... for
    /// MobileNetV2; `conv1`, `bn1`, `layer1`, ... for ResNet).
    fn stage_names(&self) -> Vec<String>;

    /// Variable-name prefix of the classifier (`classifier.1`, `fc`).
    fn classifier_prefix(&self) -> &'static str;

    /// The model's freezing state.
    fn frozen(&self) -> &FrozenStages;

    /// The model's freezing state, to change.
    fn frozen_mut(&mut self) -> &mut FrozenStages;

    /// Makes the first `n` stages run in eval mode on the graph's side branch: their output is
    /// detached, so no gradient reaches them. Fails when `n` exceeds the number of stages.
    fn set_frozen_stages(&mut self, n: usize) -> Result<()> {
        let stages = self.stage_names().len();
        self.frozen_mut().set(n, stages)
    }

    /// How many leading stages are frozen (see [`Backbone::set_frozen_stages`]).
    fn frozen_stages(&self) -> usize {
        self.frozen().count()
    }
}

/// Which part of a backbone transfer learning keeps fixed.
///
/// Serialises as `"None"`, `{"FirstLayers": 2}`, `{"UpToStage": "layer2"}`, `"Backbone"`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Freeze {
    /// Train everything.
    #[default]
    None,
    /// Freeze the first `n` stages of [`Backbone::stage_names`].
    FirstLayers(usize),
    /// Freeze every stage up to and including the one with this name (`"layer2"`,
    /// `"features.7"`).
    UpToStage(String),
    /// Freeze every feature stage; only the classifier (and any head outside the backbone)
    /// trains.
    Backbone,
}

impl Freeze {
    /// Number of leading stages this setting freezes among `stages`.
    pub fn frozen_stage_count(&self, stages: &[String]) -> Result<usize> {
        match self {
            Freeze::None => Ok(0),
            Freeze::FirstLayers(n) if *n <= stages.len() => Ok(*n),
            Freeze::FirstLayers(n) => Err(Error::config(
                "freeze",
                format!("cannot freeze {n} stages of a model with {}", stages.len()),
            )),
            Freeze::UpToStage(name) => match stages.iter().position(|s| s == name) {
                Some(i) => Ok(i + 1),
                None => Err(Error::config(
                    "freeze",
                    format!("unknown stage {name:?}; stages are {stages:?}"),
                )),
            },
            Freeze::Backbone => Ok(stages.len()),
        }
    }

    /// Variable-name prefixes this setting freezes for `model`.
    pub fn frozen_prefixes<B: Backbone + ?Sized>(&self, model: &B) -> Result<Vec<String>> {
        let stages = model.stage_names();
        let n = self.frozen_stage_count(&stages)?;
        Ok(stages.into_iter().take(n).collect())
    }
}

/// Whether a variable is a BatchNorm running statistic: those are updated by the forward pass,
/// never by an optimizer.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// Whether `name` lies under `prefix` as a whole dotted component (`features.1` holds
/// `features.1.conv.0.0.weight` but not `features.10.conv.0.0.weight`).
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    name == prefix
        || (name.len() > prefix.len()
            && name.starts_with(prefix)
            && name.as_bytes()[prefix.len()] == b'.')
}

pub(crate) fn lock_err<T>(_: T) -> Error {
    Error::PoisonedLock
}

/// The variables of `varmap` an optimizer should see, sorted by name: all but BatchNorm running
/// statistics and the stages `freeze` fixes for `model`.
pub fn trainable_vars<B: Backbone + ?Sized>(
    varmap: &VarMap,
    model: &B,
    freeze: &Freeze,
) -> Result<Vec<Var>> {
    let frozen = freeze.frozen_prefixes(model)?;
    trainable_vars_except(varmap, &frozen)
}

/// Like [`trainable_vars`], with explicit frozen prefixes (for models that are not a
/// [`Backbone`], or a backbone held under a prefix inside a larger model).
pub fn trainable_vars_except(varmap: &VarMap, frozen_prefixes: &[String]) -> Result<Vec<Var>> {
    let data = varmap.data().lock().map_err(lock_err)?;
    let mut named: Vec<(&String, &Var)> = data
        .iter()
        .filter(|(name, _)| {
            !is_buffer(name) && !frozen_prefixes.iter().any(|p| has_prefix(name, p))
        })
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    Ok(named.into_iter().map(|(_, v)| v.clone()).collect())
}

/// Freezes `model` on both levels (see the module docs) and returns the variables of `varmap`
/// left to train.
pub fn apply_freeze<B: Backbone + ?Sized>(
    model: &mut B,
    varmap: &VarMap,
    freeze: &Freeze,
) -> Result<Vec<Var>> {
    let n = freeze.frozen_stage_count(&model.stage_names())?;
    model.set_frozen_stages(n)?;
    trainable_vars(varmap, model, freeze)
}

/// Removes the variables under `prefix` from `varmap`; returns how many went.
pub fn remove_vars(varmap: &VarMap, prefix: &str) -> Result<usize> {
    let mut data = varmap.data().lock().map_err(lock_err)?;
    let before = data.len();
    data.retain(|name, _| !has_prefix(name, prefix));
    Ok(before - data.len())
}

/// [`Backbone::reset_classifier`] for a model whose variables live in `varmap`: drops the old
/// classifier's variables first, so the new layer can take the same torchvision names with
/// another shape. The new layer's initial weights are drawn from `seed` (see
/// [`deeprecog_nn::init::seeded_var_builder`]).
pub fn replace_classifier<B: Backbone + ?Sized>(
    model: &mut B,
    num_classes: usize,
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<()> {
    remove_vars(varmap, model.classifier_prefix())?;
    let vb = deeprecog_nn::init::seeded_var_builder(varmap, seed, dtype, device);
    model.reset_classifier(num_classes, vb)
}

/// Global average pooling, `(N, C, H, W) -> (N, C)`.
pub(crate) fn global_avg_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    x.flatten_from(2)?.mean(2)
}

/// BatchNorm with torch's defaults (eps 1e-5, momentum 0.1).
pub(crate) fn batch_norm(channels: usize, vb: VarBuilder) -> Result<crate::layers::BatchNorm> {
    crate::layers::BatchNorm::new(channels, 1e-5, 0.1, vb)
}

#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{DType, Device, Shape, Tensor, Var};
    use candle_nn::{Init, VarBuilder, VarMap};

    /// A seeded `VarBuilder::from_varmap` (F32, CPU): the tests' weights repeat exactly.
    pub fn vb(varmap: &VarMap, seed: u64) -> VarBuilder<'static> {
        deeprecog_nn::init::seeded_var_builder(varmap, seed, DType::F32, &Device::Cpu)
    }

    /// A seeded `Tensor::randn(0, 1, shape)` (F32, CPU), drawn from the stream of
    /// `(seed, "input")`.
    pub fn randn(seed: u64, shape: impl Into<Shape>) -> Tensor {
        let init = Init::Randn { mean: 0.0, stdev: 1.0 };
        deeprecog_nn::init::init_tensor(
            init,
            &shape.into(),
            seed,
            "input",
            DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    }

    /// [`randn`] as a `Var` (for gradients with respect to the input).
    pub fn randn_var(seed: u64, shape: impl Into<Shape>) -> Var {
        Var::from_tensor(&randn(seed, shape)).unwrap()
    }

    /// Asserts every non-buffer variable of `varmap` outside `skip` got a finite gradient.
    pub fn assert_all_grads(varmap: &VarMap, loss: &Tensor, skip: &[&str]) {
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        let mut checked = 0;
        for (name, var) in data.iter() {
            if super::is_buffer(name) || skip.iter().any(|p| super::has_prefix(name, p)) {
                continue;
            }
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(g.iter().all(|x| x.is_finite()), "non-finite gradient for {name}");
            checked += 1;
        }
        assert!(checked > 0);
    }

    pub fn names(varmap: &VarMap) -> Vec<String> {
        let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    pub fn var_names(varmap: &VarMap, vars: &[Var]) -> Vec<String> {
        let data = varmap.data().lock().unwrap();
        let mut out = Vec::new();
        for v in vars {
            for (name, w) in data.iter() {
                if w.as_tensor().id() == v.as_tensor().id() {
                    out.push(name.clone());
                }
            }
        }
        out.sort();
        out
    }

    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_components() {
        assert!(has_prefix("features.1.conv.0.0.weight", "features.1"));
        assert!(!has_prefix("features.10.conv.0.0.weight", "features.1"));
        assert!(has_prefix("fc", "fc"));
        assert!(!has_prefix("fc2.weight", "fc"));
        assert!(is_buffer("bn1.running_var") && !is_buffer("bn1.weight"));
    }

    #[test]
    fn freeze_resolves_stage_counts() {
        let stages: Vec<String> = ["conv1", "bn1", "layer1", "layer2"].map(String::from).into();
        assert_eq!(Freeze::None.frozen_stage_count(&stages).unwrap(), 0);
        assert_eq!(Freeze::FirstLayers(2).frozen_stage_count(&stages).unwrap(), 2);
        assert!(Freeze::FirstLayers(5).frozen_stage_count(&stages).is_err());
        let up_to = Freeze::UpToStage("layer1".into());
        assert_eq!(up_to.frozen_stage_count(&stages).unwrap(), 3);
        assert!(Freeze::UpToStage("layer9".into()).frozen_stage_count(&stages).is_err());
        assert_eq!(Freeze::Backbone.frozen_stage_count(&stages).unwrap(), 4);
    }
}
