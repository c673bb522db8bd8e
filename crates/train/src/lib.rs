//! One training engine for every deeprecog pipeline: attribute classifiers, GANs and deepfake
//! detectors are all a [`TrainStep`] (what one optimisation step does, over however many models
//! and optimizers) driven by the same [`Engine`] (epochs, validation, schedules, checkpoints
//! with named parts, exact resume, history, skipped samples) and decorated by [`callbacks`]
//! (best checkpoint, early stopping, curves, progress bars, periodic artefacts).
//!
//! Every output lives in [`EngineConfig::out_dir`]:
//!
//! | path | what |
//! |------|------|
//! | `last/` | the latest state: every model and optimizer part, the position inside the epoch, the history ([`deeprecog_nn::checkpoint`]) |
//! | `best/` | the models at the best epoch, with [`callbacks::BestCheckpoint`] |
//! | `history.json` | [`History`], rewritten after every epoch |
//! | `skipped.json` | the samples left out, each with its error (only when some were) |
//! | `curves.png` | with [`callbacks::CurvesPlot`] |
//!
//! A resumed run continues bit for bit: batch order depends only on the seed and the epoch, the
//! position inside an epoch is saved, and steps draw their randomness from `(seed, step)`
//! ([`StepContext`]), so no generator state has to travel.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::{Init, VarMap};
//! use deeprecog_nn::optim::{BoxedOptimizer, OptimizerConfig, SgdConfig};
//! use deeprecog_train::{
//!     Checkpointable, Engine, EngineConfig, InMemoryBatches, StepContext, StepOutput, TrainStep,
//! };
//!
//! /// Least squares for y = 2x.
//! struct Fit { varmap: VarMap, w: candle_core::Var, opt: BoxedOptimizer }
//!
//! impl Checkpointable for Fit {
//!     fn models(&self) -> Vec<(String, &VarMap)> { vec![("model".into(), &self.varmap)] }
//!     fn optimizers(&mut self) -> Vec<(String, &mut BoxedOptimizer)> { vec![("optimizer".into(), &mut self.opt)] }
//! }
//!
//! impl TrainStep<(Tensor, Tensor)> for Fit {
//!     fn step(&mut self, (x, y): &(Tensor, Tensor), _: &StepContext) -> deeprecog_train::Result<StepOutput> {
//!         let loss = x.broadcast_mul(self.w.as_tensor())?.sub(y)?.sqr()?.mean_all()?;
//!         self.opt.backward_step(&loss)?;
//!         Ok(StepOutput::new(x.dim(0)?).mean("loss", loss.to_scalar::<f32>()? as f64))
//!     }
//! }
//!
//! let varmap = VarMap::new();
//! let w = varmap.get(1, "w", Init::Const(0.0), DType::F32, &Device::Cpu)?;
//! let w = varmap.data().lock().unwrap()["w"].clone();
//! let opt = OptimizerConfig::Sgd(SgdConfig { lr: 0.1, ..Default::default() }).build(vec![w.clone()])?;
//! let x = Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu)?;
//! let data = InMemoryBatches(vec![(x.clone(), (&x * 2.0)?)]);
//! let out = tempfile::tempdir().unwrap();
//! let config = EngineConfig { epochs: 30, out_dir: out.path().into(), ..Default::default() };
//! let history = Engine::new(config).fit(&mut Fit { varmap, w: w.clone(), opt }, &data)?;
//! assert!(history.last().unwrap().get("train_loss").unwrap() < 1e-3);
//! assert!(out.path().join("last/model.safetensors").is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod callbacks;
mod engine;
mod history;
pub mod search;
mod source;
mod step;

use std::path::{Path, PathBuf};

pub use callbacks::{Callback, Control, RunContext, StepEvent};
pub use engine::{
    save_checkpoint, Engine, EngineConfig, Position, Validation, BEST_DIR, HISTORY_FILE, LAST_DIR,
    SKIPPED_FILE,
};
pub use history::{EpochRecord, Goal, History, Monitor};
pub use source::{BatchSource, EpochBatches, InMemoryBatches, SkippedSample};
pub use step::{Checkpointable, StepContext, StepOutput, TrainStep, ValidStep};

/// Errors of training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A loss, optimizer or checkpoint operation failed.
    #[error(transparent)]
    Nn(#[from] deeprecog_nn::Error),
    /// Loading a batch failed.
    #[error(transparent)]
    Dataset(#[from] deeprecog_dataset::Error),
    /// A metric or plot failed.
    #[error(transparent)]
    Metrics(#[from] deeprecog_metrics::Error),
    /// A file could not be written or read.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A checkpoint that does not fit the step being resumed.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint folder.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// A step reported a NaN or infinite metric; the checkpoints of earlier epochs are kept.
    #[error("non-finite {metric} = {value} at epoch {epoch}, batch {batch}; sample ids: {ids:?}")]
    NonFinite {
        /// The epoch, from 1.
        epoch: usize,
        /// The batch index within the epoch, from 0.
        batch: usize,
        /// The metric's name.
        metric: String,
        /// Its value.
        value: f64,
        /// The ids of the batch's samples (when the source knows them).
        ids: Vec<String>,
    },
    /// A data source yielded no sample in an epoch.
    #[error("the {split} source yielded no sample in epoch {epoch}")]
    EmptySource {
        /// `train` or `valid`.
        split: String,
        /// The epoch, from 1.
        epoch: usize,
    },
    /// A configuration that cannot work.
    #[error("invalid training setup: {0}")]
    InvalidConfig(String),
    /// An error of a step implementation from another crate (a model's own error type).
    #[error(transparent)]
    Step(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: &Path, e: impl std::fmt::Display) -> Error {
        Error::Io { path: path.to_path_buf(), reason: e.to_string() }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes `value` as pretty JSON to `path`, atomically.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_json<T: serde::Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::io(path, e))?;
    deeprecog_dataset::fsutil::write_atomically(path, &json).map_err(|e| Error::io(path, e))
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
