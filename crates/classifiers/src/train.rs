//! The training loop for binary and multi-label classifiers: optimizers, schedules, early
//! stopping, per-epoch validation, checkpoints with resume, `history.json` and `curves.png`,
//! test-set evaluation and hyper-parameter search.
//!
//! Every output lives in [`TrainConfig::out_dir`]:
//!
//! | path | what |
//! |------|------|
//! | `last/` | the checkpoint of the latest epoch ([`deeprecog_nn::checkpoint`]) |
//! | `best/` | the checkpoint of the best epoch by the early-stopping (or validation-loss) metric |
//! | `history.json` | [`History`], rewritten after every epoch |
//! | `curves.png` | train and validation accuracy and loss per epoch |
//!
//! When `last/` exists, [`Trainer::fit`] resumes from it: weights, optimizer state and history
//! are restored, and since the loader's order depends only on its seed and the epoch number,
//! the resumed run sees the same batches as an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, Optimizer, VarMap};
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::transforms::Normalization;
use deeprecog_dataset::{Dataset, Sample};
use deeprecog_metrics::multilabel::MultiLabelReport;
use deeprecog_metrics::plot::{learning_curves, LearningCurve};
use deeprecog_nn::checkpoint::{self, RunConfig};
use deeprecog_nn::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, NAdam, NAdamConfig, OptimizerState, RmsProp,
    RmsPropConfig, Sgd, SgdConfig, Stateful,
};
use deeprecog_nn::schedule::{CosineAnnealingLr, ExponentialLr, LrSchedule, StepLr};
use serde::{Deserialize, Serialize};

/// Errors of training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
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
    /// The loss became NaN or infinite; the checkpoints of earlier epochs are kept.
    #[error("non-finite loss {loss} at epoch {epoch}, batch {batch}; sample ids: {ids:?}")]
    NonFiniteLoss {
        /// The epoch index (from 0).
        epoch: usize,
        /// The batch index within the epoch (from 0).
        batch: usize,
        /// The loss value.
        loss: f64,
        /// The ids of the batch's samples.
        ids: Vec<String>,
    },
    /// A configuration or input that cannot work.
    #[error("invalid training setup: {0}")]
    Config(String),
}

/// The result type of this module.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Which optimizer trains the model (all with PyTorch semantics, see [`deeprecog_nn::optim`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum OptimizerKind {
    /// Adam with L2 weight decay.
    Adam,
    /// AdamW (decoupled weight decay).
    AdamW,
    /// SGD with optional (Nesterov) momentum.
    Sgd {
        /// Momentum factor.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// RMSprop, PyTorch defaults (eps outside the square root).
    RmsProp,
    /// RMSprop with Keras defaults (rho 0.9, eps 1e-7 inside the square root), as the reports.
    RmsPropKeras,
    /// NAdam.
    NAdam,
}

/// A learning-rate schedule over epochs, starting from [`TrainConfig::lr`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// Multiply by `gamma` every `step_size` epochs.
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Multiply by `gamma` every epoch.
    Exponential {
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing down to `eta_min` over `t_max` epochs.
    Cosine {
        /// Half period, in epochs.
        t_max: usize,
        /// Final learning rate.
        eta_min: f64,
    },
}

impl Schedule {
    fn lr(&self, base: f64, epoch: usize) -> f64 {
        match *self {
            Schedule::Step { step_size, gamma } => StepLr::new(base, step_size, gamma).lr(epoch),
            Schedule::Exponential { gamma } => ExponentialLr::new(base, gamma).lr(epoch),
            Schedule::Cosine { t_max, eta_min } => {
                CosineAnnealingLr::new(base, t_max, eta_min).lr(epoch)
            }
        }
    }
}

/// The validation metric that early stopping, the best checkpoint and [`search`] follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Metric {
    /// Mean per-label validation accuracy (higher is better).
    ValAccuracy,
    /// Validation loss (lower is better).
    ValLoss,
    /// Mean per-label validation ROC-AUC (higher is better).
    ValAuc,
}

impl Metric {
    /// The metric's value in one epoch's record (`None` when undefined, e.g. AUC on one class).
    pub fn value(&self, record: &EpochRecord) -> Option<f64> {
        let v = match self {
            Metric::ValAccuracy => Some(record.val_accuracy),
            Metric::ValLoss => Some(record.val_loss),
            Metric::ValAuc => record.val_auc,
        };
        v.filter(|x| x.is_finite())
    }

    /// Whether `a` is strictly better than `b`.
    pub fn better(&self, a: f64, b: f64) -> bool {
        match self {
            Metric::ValLoss => a < b,
            _ => a > b,
        }
    }
}

/// Stop when the metric has not improved for `patience` epochs (Keras's `EarlyStopping`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The metric followed.
    pub metric: Metric,
}

/// Everything a training run needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs to train (in total, counting epochs done before a resume).
    pub epochs: usize,
    /// The optimizer.
    pub optimizer: OptimizerKind,
    /// The base learning rate.
    pub lr: f64,
    /// Weight decay (L2, or decoupled for AdamW).
    pub weight_decay: f64,
    /// An optional learning-rate schedule over epochs.
    pub schedule: Option<Schedule>,
    /// Optional early stopping.
    pub early_stopping: Option<EarlyStopping>,
    /// Loss weights `[negative, positive]` applied to every label (e.g. from
    /// [`deeprecog_dataset::balance::class_weights`]).
    pub class_weights: Option<Vec<f32>>,
    /// How `u8` batches become model inputs.
    pub normalization: Normalization,
    /// The run's seed, saved with every checkpoint.
    pub seed: u64,
    /// Where checkpoints, history and curves go.
    pub out_dir: PathBuf,
    /// Save `last/` after every epoch (else only `best/` and the final epoch).
    pub checkpoint_every_epoch: bool,
    /// Print a progress line per batch on stderr (an epoch summary is always printed).
    pub progress: bool,
    /// The model's configuration, saved with every checkpoint so the model can be rebuilt.
    pub model_config: serde_json::Value,
}

impl Default for TrainConfig {
    /// 10 epochs of Adam at 1e-3, min-max normalisation, seed 0, into `runs/train`.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            schedule: None,
            early_stopping: None,
            class_weights: None,
            normalization: Normalization::MinMax,
            seed: 0,
            out_dir: PathBuf::from("runs/train"),
            checkpoint_every_epoch: true,
            progress: false,
            model_config: serde_json::Value::Null,
        }
    }
}

/// What happened in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch number, from 1.
    pub epoch: usize,
    /// The learning rate used.
    pub lr: f64,
    /// Mean training loss (over samples).
    pub train_loss: f64,
    /// Mean per-label training accuracy (threshold 0.5, measured while training).
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub val_loss: f64,
    /// Mean per-label validation accuracy.
    pub val_accuracy: f64,
    /// Mean per-label validation ROC-AUC; `None` when undefined.
    pub val_auc: Option<f64>,
    /// Fraction of validation samples with every label right (equals accuracy for one label).
    pub val_exact_match: f64,
    /// Training throughput.
    pub images_per_sec: f64,
    /// Wall time of the epoch (training and validation).
    pub seconds: f64,
    /// Training samples skipped by the loader (unreadable files).
    pub skipped_train: usize,
    /// Validation samples skipped by the loader.
    pub skipped_valid: usize,
}

/// The per-epoch record of a run, as written to `history.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    /// One record per completed epoch.
    pub epochs: Vec<EpochRecord>,
    /// The best epoch (from 1) by the followed metric, if any.
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// The epoch (from 1) the run resumed after, if it resumed.
    pub resumed_from: Option<usize>,
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

    /// Training and validation curves, named `"{name} (train)"` and `"{name} (val)"`.
    pub fn curves(&self, name: &str) -> [LearningCurve; 2] {
        [
            LearningCurve {
                name: format!("{name} (train)"),
                accuracy: self.epochs.iter().map(|r| r.train_accuracy).collect(),
                loss: self.epochs.iter().map(|r| r.train_loss).collect(),
            },
            LearningCurve {
                name: format!("{name} (val)"),
                accuracy: self.epochs.iter().map(|r| r.val_accuracy).collect(),
                loss: self.epochs.iter().map(|r| r.val_loss).collect(),
            },
        ]
    }

    /// Reads a `history.json`.
    pub fn load(path: &Path) -> Result<History> {
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| io_err(path, e))
    }

    /// Writes `history.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| io_err(path, e))?;
        Ok(checkpoint::write_atomically(path, &json)?)
    }
}

/// Predictions on a whole dataset, for test-set reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    /// Number of labels per sample.
    pub labels_per_sample: usize,
    /// Row-major `n x labels_per_sample` ground truth.
    pub labels: Vec<bool>,
    /// Row-major `n x labels_per_sample` sigmoid probabilities.
    pub scores: Vec<f64>,
    /// Sample ids, one per row.
    pub ids: Vec<String>,
    /// Sample groups, one per row.
    pub groups: Vec<Option<String>>,
    /// Mean (unweighted) binary cross-entropy.
    pub loss: f64,
    /// Samples the loader skipped.
    pub skipped: usize,
}

impl Evaluation {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Labels and scores of column `k`.
    pub fn column(&self, k: usize) -> (Vec<bool>, Vec<f64>) {
        let step = self.labels_per_sample.max(1);
        (
            self.labels.iter().skip(k).step_by(step).copied().collect(),
            self.scores.iter().skip(k).step_by(step).copied().collect(),
        )
    }

    /// Per-label and aggregate metrics at threshold 0.5, with generic names for the labels.
    pub fn report<S: AsRef<str>>(&self, names: &[S]) -> Result<MultiLabelReport> {
        Ok(MultiLabelReport::new(&self.labels, &self.scores, names, 0.5)?)
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

/// One optimizer of any kind, so the loop can hold whichever the config names.
enum AnyOptimizer {
    Adam(Adam),
    AdamW(AdamW),
    Sgd(Sgd),
    RmsProp(RmsProp),
    NAdam(NAdam),
}

impl AnyOptimizer {
    fn new(kind: OptimizerKind, vars: Vec<Var>, lr: f64, wd: f64) -> Result<Self> {
        Ok(match kind {
            OptimizerKind::Adam => AnyOptimizer::Adam(Adam::new(
                vars,
                AdamConfig { lr, weight_decay: wd, ..Default::default() },
            )?),
            OptimizerKind::AdamW => AnyOptimizer::AdamW(AdamW::new(
                vars,
                AdamWConfig { lr, weight_decay: wd, ..Default::default() },
            )?),
            OptimizerKind::Sgd { momentum, nesterov } => AnyOptimizer::Sgd(Sgd::new(
                vars,
                SgdConfig { lr, momentum, nesterov, weight_decay: wd, ..Default::default() },
            )?),
            OptimizerKind::RmsProp => AnyOptimizer::RmsProp(RmsProp::new(
                vars,
                RmsPropConfig { lr, weight_decay: wd, ..Default::default() },
            )?),
            OptimizerKind::RmsPropKeras => AnyOptimizer::RmsProp(RmsProp::new(
                vars,
                RmsPropConfig { lr, weight_decay: wd, ..RmsPropConfig::keras() },
            )?),
            OptimizerKind::NAdam => AnyOptimizer::NAdam(NAdam::new(
                vars,
                NAdamConfig { lr, weight_decay: wd, ..Default::default() },
            )?),
        })
    }

    fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        match self {
            AnyOptimizer::Adam(o) => o.step(grads)?,
            AnyOptimizer::AdamW(o) => o.step(grads)?,
            AnyOptimizer::Sgd(o) => o.step(grads)?,
            AnyOptimizer::RmsProp(o) => o.step(grads)?,
            AnyOptimizer::NAdam(o) => o.step(grads)?,
        }
        Ok(())
    }

    fn set_lr(&mut self, lr: f64) {
        match self {
            AnyOptimizer::Adam(o) => o.set_learning_rate(lr),
            AnyOptimizer::AdamW(o) => o.set_learning_rate(lr),
            AnyOptimizer::Sgd(o) => o.set_learning_rate(lr),
            AnyOptimizer::RmsProp(o) => o.set_learning_rate(lr),
            AnyOptimizer::NAdam(o) => o.set_learning_rate(lr),
        }
    }

    fn state(&self) -> Result<OptimizerState> {
        Ok(match self {
            AnyOptimizer::Adam(o) => o.state()?,
            AnyOptimizer::AdamW(o) => o.state()?,
            AnyOptimizer::Sgd(o) => o.state()?,
            AnyOptimizer::RmsProp(o) => o.state()?,
            AnyOptimizer::NAdam(o) => o.state()?,
        })
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        match self {
            AnyOptimizer::Adam(o) => o.load_state(state)?,
            AnyOptimizer::AdamW(o) => o.load_state(state)?,
            AnyOptimizer::Sgd(o) => o.load_state(state)?,
            AnyOptimizer::RmsProp(o) => o.load_state(state)?,
            AnyOptimizer::NAdam(o) => o.load_state(state)?,
        }
        Ok(())
    }
}

/// Batch targets as `f32 (N, K)`: class indices (`u32 (N,)`) become one 0/1 column.
fn targets_f32(targets: &Tensor) -> Result<Tensor> {
    let t = targets.to_dtype(DType::F32)?;
    Ok(if t.rank() == 1 { t.unsqueeze(1)? } else { t })
}

fn loss_of(logits: &Tensor, targets: &Tensor, weights: Option<&[f32]>) -> Result<Tensor> {
    if logits.dims() != targets.dims() {
        return Err(TrainError::Config(format!(
            "the model outputs {:?} but the targets are {:?}",
            logits.dims(),
            targets.dims()
        )));
    }
    match weights {
        None => Ok(deeprecog_nn::loss::bce_with_logits(logits, targets)?),
        Some(w) => {
            let (neg, pos) = match w {
                [neg, pos, ..] => (f64::from(*neg), f64::from(*pos)),
                _ => {
                    return Err(TrainError::Config(format!(
                        "class weights need [negative, positive], got {w:?}"
                    )))
                }
            };
            Ok(deeprecog_nn::loss::weighted_bce_with_logits(logits, targets, neg, pos)?)
        }
    }
}

/// Counts correct 0.5-threshold predictions (logit >= 0 means probability >= 0.5).
fn correct(logits: &Tensor, targets: &Tensor) -> Result<f64> {
    let predicted = logits.ge(0.0)?.to_dtype(DType::F32)?;
    let truth = targets.ge(0.5)?.to_dtype(DType::F32)?;
    Ok(f64::from(predicted.eq(&truth)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?))
}

/// Runs `model` in evaluation mode over every batch of `loader`.
pub fn evaluate<M, D>(
    model: &M,
    loader: &Loader<D>,
    normalization: &Normalization,
    device: &Device,
) -> Result<Evaluation>
where
    M: ModuleT,
    D: Dataset<Item = Sample> + 'static,
{
    let mut eval = Evaluation::default();
    let mut loss_sum = 0.0;
    let mut epoch = loader.epoch(0)?;
    for batch in epoch.by_ref() {
        let batch = batch?;
        if batch.is_empty() {
            continue;
        }
        let x = normalization.apply(&batch.images.to_device(device)?)?;
        let y = targets_f32(&batch.targets.to_device(device)?)?;
        let logits = model.forward_t(&x, false)?;
        let loss = loss_of(&logits, &y, None)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        loss_sum += loss * batch.len() as f64;
        eval.labels_per_sample = y.dim(1)?;
        let probs = candle_nn::ops::sigmoid(&logits)?.to_dtype(DType::F64)?.flatten_all()?;
        eval.scores.extend(probs.to_vec1::<f64>()?);
        let labels = y.flatten_all()?.to_vec1::<f32>()?;
        eval.labels.extend(labels.iter().map(|&v| v >= 0.5));
        eval.ids.extend(batch.ids);
        eval.groups.extend(batch.groups);
    }
    eval.skipped = epoch.report().skipped.len();
    if !eval.is_empty() {
        eval.loss = loss_sum / eval.len() as f64;
    }
    Ok(eval)
}

/// Trains binary and multi-label classifiers (see the module docs).
#[derive(Debug, Clone)]
pub struct Trainer {
    config: TrainConfig,
    device: Device,
}

impl Trainer {
    /// A trainer on the CPU.
    pub fn new(config: TrainConfig) -> Trainer {
        Trainer { config, device: Device::Cpu }
    }

    /// Trains on `device` (the model's vars must live there).
    pub fn device(mut self, device: Device) -> Trainer {
        self.device = device;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Where the checkpoint of the latest epoch goes.
    pub fn last_dir(&self) -> PathBuf {
        self.config.out_dir.join("last")
    }

    /// Where the checkpoint of the best epoch goes.
    pub fn best_dir(&self) -> PathBuf {
        self.config.out_dir.join("best")
    }

    /// The metric the best checkpoint follows: early stopping's, else validation loss.
    fn metric(&self) -> Metric {
        self.config.early_stopping.map(|e| e.metric).unwrap_or(Metric::ValLoss)
    }

    fn run_config(&self, record: &EpochRecord) -> Result<RunConfig> {
        Ok(RunConfig {
            seed: self.config.seed,
            epoch: record.epoch,
            model: self.config.model_config.clone(),
            training: to_value(&self.config)?,
            metrics: to_value(record)?,
        })
    }

    /// Trains `model` whose parameters live in `varmap`, updating only `trainable` (their order
    /// must be the same across resumes: the optimizer state is keyed by position). Validates on
    /// `valid` after every epoch. Resumes from `out_dir/last` when it exists.
    ///
    /// # Errors
    /// [`TrainError::NonFiniteLoss`] naming the batch's sample ids when the loss is NaN or
    /// infinite (earlier checkpoints are kept), loader, tensor, checkpoint and I/O errors.
    pub fn fit<M, D, E>(
        &self,
        model: &M,
        trainable: Vec<Var>,
        varmap: &VarMap,
        train: &Loader<D>,
        valid: &Loader<E>,
    ) -> Result<History>
    where
        M: ModuleT,
        D: Dataset<Item = Sample> + 'static,
        E: Dataset<Item = Sample> + 'static,
    {
        let cfg = &self.config;
        if trainable.is_empty() {
            return Err(TrainError::Config("no trainable parameters".into()));
        }
        let out = &cfg.out_dir;
        std::fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
        let history_path = out.join("history.json");
        let mut opt = AnyOptimizer::new(cfg.optimizer, trainable, cfg.lr, cfg.weight_decay)?;
        let mut history = History::default();
        if checkpoint::exists(self.last_dir()) {
            let loaded = checkpoint::load(self.last_dir(), varmap, &self.device)?;
            if let Some(state) = loaded.optimizer {
                opt.load_state(state)?;
            }
            let done = loaded.run.epoch;
            if history_path.is_file() {
                history = History::load(&history_path)?;
            }
            history.epochs.retain(|r| r.epoch <= done);
            history.best_epoch = best_epoch(&history.epochs, self.metric());
            history.resumed_from = Some(done);
            eprintln!("resuming from {} after epoch {done}", self.last_dir().display());
        }
        let metric = self.metric();
        let start = history.epochs.len();
        for epoch in start..cfg.epochs {
            if let Some(es) = cfg.early_stopping {
                if should_stop(&history.epochs, es) {
                    history.stopped_early = true;
                    break;
                }
            }
            let lr = cfg.schedule.map(|s| s.lr(cfg.lr, epoch)).unwrap_or(cfg.lr);
            opt.set_lr(lr);
            let started = Instant::now();
            let (train_loss, train_accuracy, seen, skipped_train) =
                self.train_epoch(model, &mut opt, train, epoch)?;
            let train_secs = started.elapsed().as_secs_f64();
            let eval = evaluate(model, valid, &cfg.normalization, &self.device)?;
            if eval.is_empty() {
                return Err(TrainError::Config("the validation loader yielded no samples".into()));
            }
            let names: Vec<String> =
                (0..eval.labels_per_sample).map(|k| format!("label{k}")).collect();
            let report = eval.report(&names)?;
            let record = EpochRecord {
                epoch: epoch + 1,
                lr,
                train_loss,
                train_accuracy,
                val_loss: eval.loss,
                val_accuracy: report.mean_accuracy,
                val_auc: report.mean_roc_auc,
                val_exact_match: report.exact_match_accuracy,
                images_per_sec: seen as f64 / train_secs.max(1e-9),
                seconds: started.elapsed().as_secs_f64(),
                skipped_train,
                skipped_valid: eval.skipped,
            };
            eprintln!(
                "epoch {}/{}: loss {:.4} acc {:.4} | val loss {:.4} acc {:.4} auc {} | {:.0} img/s",
                record.epoch,
                cfg.epochs,
                record.train_loss,
                record.train_accuracy,
                record.val_loss,
                record.val_accuracy,
                record.val_auc.map_or("n/a".to_string(), |a| format!("{a:.4}")),
                record.images_per_sec
            );
            let improved =
                match (metric.value(&record), history.best().and_then(|b| metric.value(b))) {
                    (Some(v), Some(best)) => metric.better(v, best),
                    (Some(_), None) => true,
                    _ => false,
                };
            let run = self.run_config(&record)?;
            history.epochs.push(record);
            if improved {
                history.best_epoch = Some(epoch + 1);
                checkpoint::save(self.best_dir(), varmap, &run, None)?;
            }
            let last_epoch = epoch + 1 == cfg.epochs;
            if cfg.checkpoint_every_epoch || last_epoch {
                checkpoint::save(self.last_dir(), varmap, &run, Some(&opt.state()?))?;
            }
            history.save(&history_path)?;
            let curves = history.curves("model");
            learning_curves(&out.join("curves.png"), &curves, "learning curves")?;
        }
        if let Some(es) = cfg.early_stopping {
            if !history.stopped_early && history.epochs.len() < cfg.epochs {
                history.stopped_early = should_stop(&history.epochs, es);
            }
        }
        history.save(&history_path)?;
        Ok(history)
    }

    /// One pass over `train`: returns mean loss, mean accuracy, samples seen and skipped.
    fn train_epoch<M, D>(
        &self,
        model: &M,
        opt: &mut AnyOptimizer,
        train: &Loader<D>,
        epoch: usize,
    ) -> Result<(f64, f64, usize, usize)>
    where
        M: ModuleT,
        D: Dataset<Item = Sample> + 'static,
    {
        let cfg = &self.config;
        let batches = train.num_batches();
        let started = Instant::now();
        let (mut loss_sum, mut correct_sum, mut seen, mut cells) = (0.0, 0.0, 0usize, 0usize);
        let mut iter = train.epoch(epoch as u64)?;
        for (i, batch) in iter.by_ref().enumerate() {
            let batch = batch?;
            if batch.is_empty() {
                continue;
            }
            let x = cfg.normalization.apply(&batch.images.to_device(&self.device)?)?;
            let y = targets_f32(&batch.targets.to_device(&self.device)?)?;
            let logits = model.forward_t(&x, true)?;
            let loss = loss_of(&logits, &y, cfg.class_weights.as_deref())?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if !value.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    batch: i,
                    loss: value,
                    ids: batch.ids,
                });
            }
            let grads = loss.backward()?;
            opt.step(&grads)?;
            loss_sum += value * batch.len() as f64;
            correct_sum += correct(&logits, &y)?;
            seen += batch.len();
            cells += y.elem_count();
            if cfg.progress {
                let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
                eprint!(
                    "\repoch {} batch {}/{batches} loss {:.4} {rate:.0} img/s   ",
                    epoch + 1,
                    i + 1,
                    loss_sum / seen as f64
                );
            }
        }
        if cfg.progress {
            eprintln!();
        }
        if seen == 0 {
            return Err(TrainError::Config("the training loader yielded no samples".into()));
        }
        let skipped = iter.report().skipped.len();
        Ok((loss_sum / seen as f64, correct_sum / cells.max(1) as f64, seen, skipped))
    }
}

fn to_value<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| TrainError::Config(e.to_string()))
}

fn best_epoch(records: &[EpochRecord], metric: Metric) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for r in records {
        if let Some(v) = metric.value(r) {
            if best.is_none_or(|(_, b)| metric.better(v, b)) {
                best = Some((r.epoch, v));
            }
        }
    }
    best.map(|(e, _)| e)
}

/// Whether `patience` epochs have passed since the best one.
fn should_stop(records: &[EpochRecord], es: EarlyStopping) -> bool {
    match (best_epoch(records, es.metric), records.last()) {
        (Some(best), Some(last)) => last.epoch - best >= es.patience,
        _ => false,
    }
}

/// How [`search`] picks candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchStrategy {
    /// Every combination of the values.
    Grid,
    /// `trials` distinct combinations drawn with `seed`.
    Random {
        /// How many combinations to try.
        trials: usize,
        /// The seed of the draw.
        seed: u64,
    },
}

/// One tried combination of hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    /// Hyper-parameter name to value.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The metric at the candidate's best epoch; `None` when it was never defined.
    pub score: Option<f64>,
    /// The candidate's best epoch.
    pub best_epoch: Option<usize>,
    /// The run's full history.
    pub history: History,
}

/// Hyper-parameter search: trains one model per candidate with `run` (which builds and fits a
/// model for the given values) and ranks the candidates by `metric` at their best epoch, best
/// first; candidates without a score come last.
///
/// # Errors
/// The first error of `run`, or [`TrainError::Config`] for an empty space.
pub fn search<F>(
    space: &[(String, Vec<serde_json::Value>)],
    strategy: SearchStrategy,
    metric: Metric,
    mut run: F,
) -> Result<Vec<SearchResult>>
where
    F: FnMut(&BTreeMap<String, serde_json::Value>) -> Result<History>,
{
    if space.is_empty() || space.iter().any(|(_, v)| v.is_empty()) {
        return Err(TrainError::Config("search space has an empty dimension".into()));
    }
    let total: usize = space.iter().map(|(_, v)| v.len()).product();
    let mut picks: Vec<usize> = (0..total).collect();
    if let SearchStrategy::Random { trials, seed } = strategy {
        // Fisher-Yates with splitmix64: a seeded draw without a rand dependency.
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for i in (1..picks.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            picks.swap(i, j);
        }
        picks.truncate(trials.min(total));
    }
    let mut results = Vec::with_capacity(picks.len());
    for pick in picks {
        let mut rest = pick;
        let mut params = BTreeMap::new();
        for (name, values) in space {
            if let Some(v) = values.get(rest % values.len()) {
                params.insert(name.clone(), v.clone());
            }
            rest /= values.len();
        }
        let history = run(&params)?;
        let best = best_epoch(&history.epochs, metric);
        let score = best
            .and_then(|b| history.epochs.iter().find(|r| r.epoch == b))
            .and_then(|r| metric.value(r));
        results.push(SearchResult { params, score, best_epoch: best, history });
    }
    results.sort_by(|a, b| match (a.score, b.score) {
        (Some(x), Some(y)) => {
            let ord = x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal);
            if metric == Metric::ValLoss {
                ord
            } else {
                ord.reverse()
            }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(results)
}
