//! Training checkpoints: the weights of one or several models, the optimizer states, and the
//! run configuration that rebuilds the models and resumes the run, in one folder.
//!
//! A checkpoint folder holds one safetensors file per named part and a run file:
//!
//! | file | content |
//! |------|---------|
//! | `{model}.safetensors` | every var of that model's `VarMap`, by name ([`WEIGHTS_FILE`] for a single model named `model`) |
//! | `{optimizer}.safetensors` | an [`OptimizerState`] ([`OPTIMIZER_FILE`] for a single optimizer named `optimizer`) |
//! | [`RUN_FILE`] | [`RunConfig`] as JSON: seed, epochs and steps done, configs, metrics, engine state, and which parts the folder holds |
//!
//! A save is atomic as a whole, not file by file: everything is written (and synced) into a
//! fresh staging folder next to `dir`, which then replaces `dir` by rename. A crash at any point
//! leaves either the old checkpoint or the new one; in the narrow window between the two
//! renames the old one waits under a `.previous` name, and [`load_parts`], [`exists`] and
//! [`read_run`] find it there.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{Init, VarMap};
//! use deeprecog_nn::checkpoint::{self, RunConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (generator, discriminator) = (VarMap::new(), VarMap::new());
//! generator.get((2, 3), "fc.weight", Init::Const(0.5), DType::F32, &Device::Cpu)?;
//! discriminator.get(4, "fc.bias", Init::Const(0.1), DType::F32, &Device::Cpu)?;
//! let run = RunConfig { seed: 7, epoch: 3, ..Default::default() };
//! let parts = [("generator", &generator), ("discriminator", &discriminator)];
//! checkpoint::save_parts(dir.path().join("last"), &parts, &[], &run)?;
//!
//! let (g, d) = (VarMap::new(), VarMap::new());
//! g.get((2, 3), "fc.weight", Init::Const(0.0), DType::F32, &Device::Cpu)?;
//! d.get(4, "fc.bias", Init::Const(0.0), DType::F32, &Device::Cpu)?;
//! let loaded =
//!     checkpoint::load_parts(dir.path().join("last"), &[("generator", &g), ("discriminator", &d)], &Device::Cpu)?;
//! assert_eq!(loaded.run.epoch, 3);
//! assert_eq!(loaded.run.parts.models, ["generator", "discriminator"]);
//! # Ok::<(), deeprecog_nn::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::optim::OptimizerState;
use crate::{Error, Result};

/// Name of the weights file of a single-model checkpoint (the part named `model`).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the optimizer-state file of a single-optimizer checkpoint (the part named
/// `optimizer`).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Name of the run-configuration file inside a checkpoint folder.
pub const RUN_FILE: &str = "run.json";

/// The named parts a checkpoint folder holds, recorded in its run file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Parts {
    /// Model names: each is a `{name}.safetensors` file of variables.
    pub models: Vec<String>,
    /// Optimizer names: each is a `{name}.safetensors` file of optimizer state.
    pub optimizers: Vec<String>,
}

/// What is saved next to the weights: enough to rebuild the models and resume the run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunConfig {
    /// The seed of the run (initialisation, shuffling, augmentation).
    pub seed: u64,
    /// Epochs completed when the checkpoint was taken (training resumes at this epoch index).
    pub epoch: usize,
    /// Optimisation steps completed when the checkpoint was taken (over the whole run).
    #[serde(default)]
    pub step: u64,
    /// The model configuration(s), as the caller serialises them (typed configs rebuild the
    /// models from this alone).
    #[serde(default)]
    pub model: serde_json::Value,
    /// The training configuration, as the caller serialises it.
    #[serde(default)]
    pub training: serde_json::Value,
    /// Metrics at the time of the checkpoint (validation loss, accuracy...).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// Whatever else a resumed run needs to continue exactly: the training engine's position
    /// inside an epoch, its history, random-stream positions, scheduler state.
    #[serde(default)]
    pub state: serde_json::Value,
    /// The parts the folder holds (filled in by [`save_parts`]).
    #[serde(default)]
    pub parts: Parts,
}

/// A single-model checkpoint read back by [`load`].
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The run configuration.
    pub run: RunConfig,
    /// The optimizer state, when the checkpoint has one.
    pub optimizer: Option<OptimizerState>,
}

/// A checkpoint read back by [`load_parts`].
#[derive(Debug, Clone)]
pub struct LoadedParts {
    /// The run configuration.
    pub run: RunConfig,
    /// Every optimizer state of the checkpoint, by name.
    pub optimizers: BTreeMap<String, OptimizerState>,
}

fn checkpoint_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason: reason.to_string() }
}

fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Shape("the VarMap's lock is poisoned".to_string()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect())
}

/// The file of part `name` inside a checkpoint folder.
pub fn part_file(dir: impl AsRef<Path>, name: &str) -> PathBuf {
    dir.as_ref().join(format!("{name}.safetensors"))
}

fn check_part_names<'a>(names: impl Iterator<Item = &'a str>, dir: &Path) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        let ok = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(checkpoint_err(dir, format!("part name {name:?}: use [A-Za-z0-9_-]+")));
        }
        if !seen.insert(name) {
            return Err(checkpoint_err(dir, format!("part name {name:?} is used twice")));
        }
    }
    Ok(())
}

fn sibling(dir: &Path, suffix: &str) -> Result<PathBuf> {
    let name = dir
        .file_name()
        .ok_or_else(|| checkpoint_err(dir, "a checkpoint folder needs a name"))?
        .to_string_lossy();
    Ok(dir.with_file_name(format!(".{name}.{suffix}")))
}

fn write_synced(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    write(path)?;
    let file = std::fs::File::open(path).map_err(|e| checkpoint_err(path, e))?;
    file.sync_all().map_err(|e| checkpoint_err(path, e))
}

/// Saves a checkpoint with several named parts into `dir` (see the [module docs](self)):
/// every var of each model, each optimizer state, and `run` (whose [`RunConfig::parts`] is set
/// from the names). The previous content of `dir` is replaced as a whole.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file that could not be written, or a part name that is not
/// `[A-Za-z0-9_-]+` or is used twice.
pub fn save_parts(
    dir: impl AsRef<Path>,
    models: &[(&str, &VarMap)],
    optimizers: &[(&str, &OptimizerState)],
    run: &RunConfig,
) -> Result<()> {
    let dir = dir.as_ref();
    check_part_names(models.iter().map(|m| m.0).chain(optimizers.iter().map(|o| o.0)), dir)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| checkpoint_err(&parent, e))?;
    let staging = sibling(dir, "staging")?;
    if staging.exists() {
        // Left by a save that was interrupted: it never became the checkpoint.
        std::fs::remove_dir_all(&staging).map_err(|e| checkpoint_err(&staging, e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| checkpoint_err(&staging, e))?;
    for (name, varmap) in models {
        let path = part_file(&staging, name);
        let tensors = varmap_tensors(varmap)?;
        write_synced(&path, |p| {
            candle_core::safetensors::save(&tensors, p).map_err(|e| checkpoint_err(p, e))
        })?;
    }
    for (name, state) in optimizers {
        let path = part_file(&staging, name);
        let tensors = state.to_tensors()?;
        write_synced(&path, |p| {
            candle_core::safetensors::save(&tensors, p).map_err(|e| checkpoint_err(p, e))
        })?;
    }
    let mut run = run.clone();
    run.parts = Parts {
        models: models.iter().map(|m| m.0.to_string()).collect(),
        optimizers: optimizers.iter().map(|o| o.0.to_string()).collect(),
    };
    let run_path = staging.join(RUN_FILE);
    let json = serde_json::to_vec_pretty(&run).map_err(|e| checkpoint_err(&run_path, e))?;
    write_synced(&run_path, |p| std::fs::write(p, &json).map_err(|e| checkpoint_err(p, e)))?;

    let previous = sibling(dir, "previous")?;
    if previous.exists() {
        std::fs::remove_dir_all(&previous).map_err(|e| checkpoint_err(&previous, e))?;
    }
    if dir.exists() {
        std::fs::rename(dir, &previous).map_err(|e| checkpoint_err(dir, e))?;
    }
    std::fs::rename(&staging, dir).map_err(|e| checkpoint_err(dir, e))?;
    if let Ok(d) = std::fs::File::open(&parent) {
        // Makes the renames durable; not every platform can sync a folder, so it is best effort.
        let _ = d.sync_all();
    }
    if previous.exists() {
        std::fs::remove_dir_all(&previous).map_err(|e| checkpoint_err(&previous, e))?;
    }
    Ok(())
}

/// Saves a single-model checkpoint into `dir`: the part `model` ([`WEIGHTS_FILE`]), the part
/// `optimizer` ([`OPTIMIZER_FILE`]) when given, and `run`.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file that could not be written.
pub fn save(
    dir: impl AsRef<Path>,
    varmap: &VarMap,
    run: &RunConfig,
    optimizer: Option<&OptimizerState>,
) -> Result<()> {
    let optimizers: Vec<(&str, &OptimizerState)> =
        optimizer.map(|o| ("optimizer", o)).into_iter().collect();
    save_parts(dir, &[("model", varmap)], &optimizers, run)
}

/// The folder that holds the complete checkpoint saved at `dir`: `dir` itself, or its
/// `.previous` copy when a save was interrupted between its two renames.
fn resolve(dir: &Path) -> Option<PathBuf> {
    if dir.join(RUN_FILE).is_file() {
        return Some(dir.to_path_buf());
    }
    let previous = sibling(dir, "previous").ok()?;
    previous.join(RUN_FILE).is_file().then_some(previous)
}

/// Whether `dir` holds a complete checkpoint.
pub fn exists(dir: impl AsRef<Path>) -> bool {
    resolve(dir.as_ref()).is_some()
}

/// Reads the run configuration of the checkpoint in `dir`.
///
/// # Errors
/// [`Error::Checkpoint`] naming the run file when it is missing or not valid JSON.
pub fn read_run(dir: impl AsRef<Path>) -> Result<RunConfig> {
    let dir = resolve(dir.as_ref()).unwrap_or_else(|| dir.as_ref().to_path_buf());
    let path = dir.join(RUN_FILE);
    let text = std::fs::read(&path).map_err(|e| checkpoint_err(&path, e))?;
    serde_json::from_slice(&text).map_err(|e| checkpoint_err(&path, e))
}

/// Copies the tensors of `path` into the vars of `varmap` (every var must be in the file, with
/// its shape); checks everything before changing anything.
fn load_varmap(path: &Path, varmap: &VarMap, device: &Device) -> Result<()> {
    let tensors =
        candle_core::safetensors::load(path, device).map_err(|e| checkpoint_err(path, e))?;
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Shape("the VarMap's lock is poisoned".to_string()))?;
    for (name, var) in data.iter() {
        let t = tensors
            .get(name)
            .ok_or_else(|| checkpoint_err(path, format!("missing tensor `{name}`")))?;
        if t.dims() != var.dims() {
            return Err(checkpoint_err(
                path,
                format!("`{name}` has shape {:?}, the model has {:?}", t.dims(), var.dims()),
            ));
        }
    }
    for (name, var) in data.iter() {
        if let Some(t) = tensors.get(name) {
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
    }
    Ok(())
}

/// Loads the checkpoint in `dir`: copies each named model's weights into its `VarMap` and
/// returns the run configuration with every optimizer state.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file that is missing, corrupt or does not fit its model, or a
/// model the checkpoint does not hold.
pub fn load_parts(
    dir: impl AsRef<Path>,
    models: &[(&str, &VarMap)],
    device: &Device,
) -> Result<LoadedParts> {
    let dir = resolve(dir.as_ref()).unwrap_or_else(|| dir.as_ref().to_path_buf());
    let run = read_run(&dir)?;
    // Checkpoints written before parts were recorded hold `model` and maybe `optimizer`.
    let (model_names, optimizer_names) = if run.parts == Parts::default() {
        let opt = part_file(&dir, "optimizer").exists();
        (vec!["model".to_string()], if opt { vec!["optimizer".to_string()] } else { vec![] })
    } else {
        (run.parts.models.clone(), run.parts.optimizers.clone())
    };
    for (name, varmap) in models {
        if !model_names.iter().any(|m| m == name) {
            return Err(checkpoint_err(
                &dir,
                format!("no model part `{name}` (it holds {model_names:?})"),
            ));
        }
        load_varmap(&part_file(&dir, name), varmap, device)?;
    }
    let mut optimizers = BTreeMap::new();
    for name in optimizer_names {
        let path = part_file(&dir, &name);
        let state = OptimizerState::load_safetensors(&path, device)
            .map_err(|e| checkpoint_err(&path, e))?;
        optimizers.insert(name, state);
    }
    Ok(LoadedParts { run, optimizers })
}

/// Loads the single-model checkpoint in `dir` (see [`save`]): copies its weights into the vars
/// of `varmap` (every var must be in the file, with the same shape) and returns the run
/// configuration and optimizer state.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file that is missing, corrupt or does not fit the model.
pub fn load(dir: impl AsRef<Path>, varmap: &VarMap, device: &Device) -> Result<Loaded> {
    let mut loaded = load_parts(dir, &[("model", varmap)], device)?;
    let optimizer = loaded.optimizers.remove("optimizer");
    Ok(Loaded { run: loaded.run, optimizer })
}
