//! Training checkpoints: a model's weights, the run configuration that rebuilds it, and the
//! optimizer state, in one folder.
//!
//! A checkpoint folder holds three files:
//!
//! | file | content |
//! |------|---------|
//! | [`WEIGHTS_FILE`] | every var of the `VarMap`, by name (safetensors) |
//! | [`OPTIMIZER_FILE`] | [`OptimizerState::save_safetensors`] (absent when none was given) |
//! | [`RUN_FILE`] | [`RunConfig`] as JSON: seed, epochs done, model config, metrics |
//!
//! Each file is written to a temporary file in the same folder and renamed over the old one, so
//! an interrupted save never leaves a torn file. The run file is written last: it is the commit
//! marker, and its `epoch` says which weights the folder holds.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::{Init, VarMap};
//! use deeprecog_nn::checkpoint::{self, RunConfig};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let varmap = VarMap::new();
//! varmap.get((2, 3), "fc.weight", Init::Const(0.5), DType::F32, &Device::Cpu)?;
//! let run = RunConfig { seed: 7, epoch: 3, ..Default::default() };
//! checkpoint::save(dir.path(), &varmap, &run, None)?;
//!
//! let restored = VarMap::new();
//! restored.get((2, 3), "fc.weight", Init::Const(0.0), DType::F32, &Device::Cpu)?;
//! let loaded = checkpoint::load(dir.path(), &restored, &Device::Cpu)?;
//! assert_eq!(loaded.run.epoch, 3);
//! # Ok::<(), deeprecog_nn::Error>(())
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::optim::OptimizerState;
use crate::{Error, Result};

/// Name of the weights file inside a checkpoint folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the optimizer-state file inside a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// Name of the run-configuration file inside a checkpoint folder.
pub const RUN_FILE: &str = "run.json";

/// What is saved next to the weights: enough to rebuild the model and resume the run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RunConfig {
    /// The seed of the run (initialisation, shuffling, augmentation).
    pub seed: u64,
    /// Epochs completed when the checkpoint was taken (training resumes at this epoch index).
    pub epoch: usize,
    /// The model's configuration, as the caller serialises it.
    #[serde(default)]
    pub model: serde_json::Value,
    /// The training configuration, as the caller serialises it.
    #[serde(default)]
    pub training: serde_json::Value,
    /// Metrics at the time of the checkpoint (validation loss, accuracy...).
    #[serde(default)]
    pub metrics: serde_json::Value,
}

/// A checkpoint read back by [`load`].
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The run configuration.
    pub run: RunConfig,
    /// The optimizer state, when the checkpoint has one.
    pub optimizer: Option<OptimizerState>,
}

fn checkpoint_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason: reason.to_string() }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_in(path)?;
    tmp.write_all(bytes).map_err(|e| checkpoint_err(path, e))?;
    tmp.as_file().sync_all().map_err(|e| checkpoint_err(path, e))?;
    tmp.persist(path).map_err(|e| checkpoint_err(path, e.error))?;
    Ok(())
}

fn temp_in(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::Builder::new()
        .prefix(".ckpt-")
        .suffix(".part")
        .tempfile_in(&dir)
        .map_err(|e| checkpoint_err(path, e))
}

/// Saves `tensors` as a safetensors file at `path`, atomically.
pub fn save_tensors_atomically(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = temp_in(path)?;
    candle_core::safetensors::save(tensors, tmp.path()).map_err(|e| checkpoint_err(path, e))?;
    tmp.persist(path).map_err(|e| checkpoint_err(path, e.error))?;
    Ok(())
}

fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Shape("the VarMap's lock is poisoned".to_string()))?;
    Ok(data.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect())
}

/// Saves a checkpoint into `dir` (created if needed): the weights of every var in `varmap`, the
/// optimizer state when given, and `run` last.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file that could not be written.
pub fn save(
    dir: impl AsRef<Path>,
    varmap: &VarMap,
    run: &RunConfig,
    optimizer: Option<&OptimizerState>,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| checkpoint_err(dir, e))?;
    save_tensors_atomically(&dir.join(WEIGHTS_FILE), &varmap_tensors(varmap)?)?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    match optimizer {
        Some(state) => save_tensors_atomically(&opt_path, &state.to_tensors()?)?,
        // A stale state from an earlier save must not be paired with these weights.
        None if opt_path.exists() => {
            std::fs::remove_file(&opt_path).map_err(|e| checkpoint_err(&opt_path, e))?
        }
        None => {}
    }
    let run_path = dir.join(RUN_FILE);
    let json = serde_json::to_vec_pretty(run).map_err(|e| checkpoint_err(&run_path, e))?;
    write_atomically(&run_path, &json)
}

/// Whether `dir` holds a complete checkpoint (its run file exists).
pub fn exists(dir: impl AsRef<Path>) -> bool {
    dir.as_ref().join(RUN_FILE).is_file()
}

/// Reads the run configuration of the checkpoint in `dir`.
///
/// # Errors
/// [`Error::Checkpoint`] naming the run file when it is missing or not valid JSON.
pub fn read_run(dir: impl AsRef<Path>) -> Result<RunConfig> {
    let path = dir.as_ref().join(RUN_FILE);
    let text = std::fs::read(&path).map_err(|e| checkpoint_err(&path, e))?;
    serde_json::from_slice(&text).map_err(|e| checkpoint_err(&path, e))
}

/// Loads the checkpoint in `dir`: copies its weights into the vars of `varmap` (every var must be
/// in the file, with the same shape) and returns the run configuration and optimizer state.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file that is missing, corrupt or does not fit the model.
pub fn load(dir: impl AsRef<Path>, varmap: &VarMap, device: &Device) -> Result<Loaded> {
    let dir = dir.as_ref();
    let run = read_run(dir)?;
    let weights_path = dir.join(WEIGHTS_FILE);
    let tensors = candle_core::safetensors::load(&weights_path, device)
        .map_err(|e| checkpoint_err(&weights_path, e))?;
    {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Shape("the VarMap's lock is poisoned".to_string()))?;
        // Check everything before changing anything, so a bad file leaves the model untouched.
        for (name, var) in data.iter() {
            let t = tensors
                .get(name)
                .ok_or_else(|| checkpoint_err(&weights_path, format!("missing tensor `{name}`")))?;
            if t.dims() != var.dims() {
                return Err(checkpoint_err(
                    &weights_path,
                    format!("`{name}` has shape {:?}, the model has {:?}", t.dims(), var.dims()),
                ));
            }
        }
        for (name, var) in data.iter() {
            if let Some(t) = tensors.get(name) {
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
            }
        }
    }
    let opt_path = dir.join(OPTIMIZER_FILE);
    let optimizer = if opt_path.exists() {
        Some(
            OptimizerState::load_safetensors(&opt_path, device)
                .map_err(|e| checkpoint_err(&opt_path, e))?,
        )
    } else {
        None
    };
    Ok(Loaded { run, optimizer })
}
