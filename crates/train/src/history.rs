//! The record of a run: one [`EpochRecord`] per epoch, the best epoch by a [`Monitor`], and the
//! samples that were skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use deeprecog_metrics::plot::LearningCurve;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Whether a smaller or a larger value of a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy, an AUC).
    Max,
}

/// A metric of the [`EpochRecord`]s to follow (best checkpoint, early stopping, plateau
/// schedule, search), e.g. `val_loss` (min) or `val_auc` (max).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Monitor {
    /// The metric's name in [`EpochRecord::metrics`].
    pub metric: String,
    /// Which direction is better.
    pub goal: Goal,
}

impl Monitor {
    /// Follow `metric`, lower is better.
    pub fn min(metric: &str) -> Monitor {
        Monitor { metric: metric.to_string(), goal: Goal::Min }
    }

    /// Follow `metric`, higher is better.
    pub fn max(metric: &str) -> Monitor {
        Monitor { metric: metric.to_string(), goal: Goal::Max }
    }

    /// The metric's value in `record`, when present and finite.
    pub fn value(&self, record: &EpochRecord) -> Option<f64> {
        record.get(&self.metric).filter(|v| v.is_finite())
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self.goal {
            Goal::Min => a < b,
            Goal::Max => a > b,
        }
    }

    /// The epoch (from 1) with the best value among `records` (the first of equals).
    pub fn best_epoch(&self, records: &[EpochRecord]) -> Option<usize> {
        let mut best: Option<(usize, f64)> = None;
        for r in records {
            if let Some(v) = self.value(r) {
                if best.is_none_or(|(_, b)| self.better(v, b)) {
                    best = Some((r.epoch, v));
                }
            }
        }
        best.map(|(e, _)| e)
    }
}

/// What happened in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch number, from 1.
    pub epoch: usize,
    /// The learning rate of the first optimizer during the epoch.
    pub lr: f64,
    /// Metrics by name: the training step's as `train_{name}`, validation's as `val_{name}`.
    pub metrics: BTreeMap<String, f64>,
    /// Training samples consumed.
    pub samples: usize,
    /// Training throughput (samples per second of the training pass).
    pub images_per_sec: f64,
    /// Wall time of the epoch (training and validation; summed over a resume).
    pub seconds: f64,
    /// Training samples skipped (unreadable files...).
    pub skipped_train: usize,
    /// Validation samples skipped.
    pub skipped_valid: usize,
}

impl EpochRecord {
    /// The value of metric `name`, if recorded.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }
}

/// The per-epoch record of a run, as written to `history.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    /// One record per completed epoch.
    pub epochs: Vec<EpochRecord>,
    /// The best epoch (from 1) by the engine's monitor, if any.
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The number of steps the run resumed after, if it resumed.
    pub resumed_from_step: Option<u64>,
    /// Samples skipped over the whole run (training and validation).
    pub skipped: usize,
    /// Where the list of skipped samples with their errors is written, when any were skipped.
    pub skipped_file: Option<PathBuf>,
}

impl History {
    /// The record of the best epoch.
    pub fn best(&self) -> Option<&EpochRecord> {
        let best = self.best_epoch?;
        self.epochs.iter().find(|r| r.epoch == best)
    }

    /// The last record.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }

    /// Training and validation curves of accuracy and loss, named `"{name} (train)"` and
    /// `"{name} (val)"` (missing values are NaN, which the plot leaves out).
    pub fn curves(&self, name: &str) -> [LearningCurve; 2] {
        let series = |key: &str| -> Vec<f64> {
            self.epochs.iter().map(|r| r.get(key).unwrap_or(f64::NAN)).collect()
        };
        [
            LearningCurve {
                name: format!("{name} (train)"),
                accuracy: series("train_accuracy"),
                loss: series("train_loss"),
            },
            LearningCurve {
                name: format!("{name} (val)"),
                accuracy: series("val_accuracy"),
                loss: series("val_loss"),
            },
        ]
    }

    /// Reads a `history.json`.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn load(path: &Path) -> Result<History> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::io(path, e))
    }

    /// Writes `history.json` atomically.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::write_json(path, self)
    }
}
