//! Supervised training of binary and multi-label classifiers on the shared engine
//! ([`deeprecog_train`]): the [`ClassifierStep`] (one model, one optimizer, binary cross-entropy
//! on logits, optional class weights), [`fit`] with the usual callbacks, and [`evaluate`] for
//! test-set predictions.
//!
//! A run folder holds what the engine writes (`last/`, `best/`, `history.json`, `curves.png`,
//! `skipped.json`); the checkpoints' run files carry the model's typed configuration when the
//! step was given one ([`ClassifierStep::config`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, VarMap};
use deeprecog_dataset::loader::{Batch, Loader};
use deeprecog_dataset::transforms::Normalization;
use deeprecog_dataset::{Dataset, Sample};
use deeprecog_metrics::multilabel::MultiLabelReport;
use deeprecog_nn::optim::{BoxedOptimizer, OptimizerConfig};
use deeprecog_nn::schedule::Schedule;
use deeprecog_train::callbacks::{BestCheckpoint, CurvesPlot, EarlyStopping, Progress};
use deeprecog_train::{
    Checkpointable, Engine, EngineConfig, Error, History, Monitor, Result, StepContext, StepOutput,
    TrainStep, ValidStep,
};
use serde::{Deserialize, Serialize};

/// Predictions on a whole dataset, for test-set reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Evaluation {
    /// Number of labels per sample.
    pub labels_per_sample: usize,
    /// Row-major `n x labels_per_sample` ground truth.
    pub labels: Vec<bool>,
    /// Row-major `n x labels_per_sample` sigmoid probabilities.
    pub scores: Vec<f64>,
    /// Row-major `n x labels_per_sample` logits (what temperature scaling is fitted on: the
    /// probabilities saturate to 0 or 1 in `f32` long before the logits do).
    pub logits: Vec<f64>,
    /// Sample ids, one per row.
    pub ids: Vec<String>,
    /// Sample groups, one per row.
    pub groups: Vec<Option<String>>,
    /// Mean (unweighted) binary cross-entropy.
    pub loss: f64,
    /// Samples the loader skipped, with their errors (naming the files).
    pub skipped: Vec<deeprecog_dataset::loader::SkippedSample>,
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

    /// Logits of column `k`.
    pub fn logit_column(&self, k: usize) -> Vec<f64> {
        let step = self.labels_per_sample.max(1);
        self.logits.iter().skip(k).step_by(step).copied().collect()
    }

    /// Per-label and aggregate metrics at threshold 0.5.
    ///
    /// # Errors
    /// When the names do not match the labels per sample.
    pub fn report<S: AsRef<str>>(&self, names: &[S]) -> Result<MultiLabelReport> {
        Ok(MultiLabelReport::new(&self.labels, &self.scores, names, 0.5)?)
    }

    fn extend(&mut self, part: Evaluation, loss_sum: &mut f64) {
        *loss_sum += part.loss * part.len() as f64;
        self.labels_per_sample = part.labels_per_sample;
        self.labels.extend(part.labels);
        self.scores.extend(part.scores);
        self.logits.extend(part.logits);
        self.ids.extend(part.ids);
        self.groups.extend(part.groups);
    }
}

/// Batch targets as `f32 (N, K)`: class indices (`u32 (N,)`) become one 0/1 column.
fn targets_f32(targets: &Tensor) -> Result<Tensor> {
    let t = targets.to_dtype(DType::F32)?;
    Ok(if t.rank() == 1 { t.unsqueeze(1)? } else { t })
}

/// The training loss of a [`ClassifierStep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loss {
    /// Binary cross-entropy on the logits (numerically stable form).
    #[default]
    Bce,
    /// Squared error between the sigmoid probability and the 0/1 target (the DFDC report's L2
    /// loss): bounded, so a confidently wrong sample cannot dominate a batch as it does under
    /// cross-entropy.
    L2,
}

impl std::str::FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Loss> {
        match s.trim().to_ascii_lowercase().as_str() {
            "bce" => Ok(Loss::Bce),
            "l2" | "mse" => Ok(Loss::L2),
            other => Err(Error::InvalidConfig(format!("unknown loss {other:?}: use bce or l2"))),
        }
    }
}

fn loss_of(
    logits: &Tensor,
    targets: &Tensor,
    weights: Option<&[f32]>,
    loss: Loss,
) -> Result<Tensor> {
    if logits.dims() != targets.dims() {
        return Err(Error::InvalidConfig(format!(
            "the model outputs {:?} but the targets are {:?}",
            logits.dims(),
            targets.dims()
        )));
    }
    let weights = match weights {
        None => None,
        Some([neg, pos]) => Some((f64::from(*neg), f64::from(*pos))),
        Some(w) => {
            return Err(Error::InvalidConfig(format!(
                "class weights need [negative, positive], got {w:?}"
            )))
        }
    };
    match (loss, weights) {
        (Loss::Bce, None) => Ok(deeprecog_nn::loss::bce_with_logits(logits, targets)?),
        (Loss::Bce, Some((neg, pos))) => {
            Ok(deeprecog_nn::loss::weighted_bce_with_logits(logits, targets, neg, pos)?)
        }
        (Loss::L2, weights) => {
            let squared = candle_nn::ops::sigmoid(logits)?.sub(targets)?.sqr()?;
            let squared = match weights {
                None => squared,
                // w = neg + (pos - neg) * y for 0/1 targets.
                Some((neg, pos)) => squared.mul(&targets.affine(pos - neg, neg)?)?,
            };
            Ok(squared.mean_all()?)
        }
    }
}

/// Counts correct 0.5-threshold predictions (logit >= 0 means probability >= 0.5).
fn correct(logits: &Tensor, targets: &Tensor) -> Result<f64> {
    let predicted = logits.ge(0.0)?.to_dtype(DType::F32)?;
    let truth = targets.ge(0.5)?.to_dtype(DType::F32)?;
    Ok(f64::from(predicted.eq(&truth)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?))
}

fn eval_batch<M: ModuleT>(
    model: &M,
    batch: &Batch,
    normalization: &Normalization,
    device: &Device,
) -> Result<Evaluation> {
    let x = normalization.apply(&batch.images.to_device(device)?)?;
    let y = targets_f32(&batch.targets.to_device(device)?)?;
    let logits = model.forward_t(&x, false)?;
    let loss = loss_of(&logits, &y, None, Loss::Bce)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let probs = candle_nn::ops::sigmoid(&logits)?.to_dtype(DType::F64)?.flatten_all()?;
    let raw = logits.to_dtype(DType::F64)?.flatten_all()?;
    let labels = y.flatten_all()?.to_vec1::<f32>()?;
    Ok(Evaluation {
        labels_per_sample: y.dim(1)?,
        labels: labels.iter().map(|&v| v >= 0.5).collect(),
        scores: probs.to_vec1::<f64>()?,
        logits: raw.to_vec1::<f64>()?,
        ids: batch.ids.clone(),
        groups: batch.groups.clone(),
        loss,
        skipped: Vec::new(),
    })
}

/// Runs `model` in evaluation mode over every batch of `loader`.
///
/// # Errors
/// Loader and tensor errors; a model whose outputs do not match the targets.
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
        if !batch.is_empty() {
            eval.extend(eval_batch(model, &batch, normalization, device)?, &mut loss_sum);
        }
    }
    eval.skipped = epoch.report().skipped;
    if !eval.is_empty() {
        eval.loss = loss_sum / eval.len() as f64;
    }
    Ok(eval)
}

/// One model, one optimizer, binary cross-entropy on logits: the training step of binary and
/// multi-label classifiers.
pub struct ClassifierStep<'m, M> {
    model: &'m M,
    varmap: &'m VarMap,
    optimizer: BoxedOptimizer,
    normalization: Normalization,
    class_weights: Option<Vec<f32>>,
    loss: Loss,
    device: Device,
    config: serde_json::Value,
}

impl<'m, M: ModuleT> ClassifierStep<'m, M> {
    /// Trains `model` (its variables in `varmap`), updating `trainable` with `optimizer`; input
    /// batches of `u8` are normalised with `normalization` on `device`. Keep `trainable` in a
    /// stable order (e.g. sorted by name): the optimizer's saved state is keyed by position.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] without trainable variables; invalid optimizer settings.
    pub fn new(
        model: &'m M,
        varmap: &'m VarMap,
        trainable: Vec<Var>,
        optimizer: &OptimizerConfig,
        normalization: Normalization,
        device: &Device,
    ) -> Result<Self> {
        if trainable.is_empty() {
            return Err(Error::InvalidConfig("no trainable parameters".into()));
        }
        Ok(ClassifierStep {
            model,
            varmap,
            optimizer: optimizer.build(trainable)?,
            normalization,
            class_weights: None,
            loss: Loss::Bce,
            device: device.clone(),
            config: serde_json::Value::Null,
        })
    }

    /// Loss weights `[negative, positive]` for every label (e.g. from
    /// [`deeprecog_dataset::balance::class_weights`]).
    pub fn class_weights(mut self, weights: Option<Vec<f32>>) -> Self {
        self.class_weights = weights;
        self
    }

    /// The training loss ([`Loss::Bce`] unless set).
    pub fn loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// The model's configuration, recorded in every checkpoint's run file.
    pub fn config(mut self, config: serde_json::Value) -> Self {
        self.config = config;
        self
    }
}

impl<M> Checkpointable for ClassifierStep<'_, M> {
    fn models(&self) -> Vec<(String, &VarMap)> {
        vec![("model".to_string(), self.varmap)]
    }

    fn optimizers(&mut self) -> Vec<(String, &mut BoxedOptimizer)> {
        vec![("optimizer".to_string(), &mut self.optimizer)]
    }

    fn config(&self) -> serde_json::Value {
        self.config.clone()
    }
}

impl<M: ModuleT> TrainStep<Batch> for ClassifierStep<'_, M> {
    fn step(&mut self, batch: &Batch, _ctx: &StepContext) -> Result<StepOutput> {
        if batch.is_empty() {
            return Ok(StepOutput::new(0));
        }
        let x = self.normalization.apply(&batch.images.to_device(&self.device)?)?;
        let y = targets_f32(&batch.targets.to_device(&self.device)?)?;
        let logits = self.model.forward_t(&x, true)?;
        let loss = loss_of(&logits, &y, self.class_weights.as_deref(), self.loss)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        // A NaN loss must not reach the weights: the engine stops on the reported value.
        if value.is_finite() {
            self.optimizer.backward_step(&loss)?;
        }
        Ok(StepOutput::new(batch.len()).mean("loss", value).ratio(
            "accuracy",
            correct(&logits, &y)?,
            y.elem_count() as f64,
        ))
    }
}

impl<M: ModuleT> ValidStep<Batch> for ClassifierStep<'_, M> {
    type Output = Evaluation;

    fn valid_step(&mut self, batch: &Batch) -> Result<Evaluation> {
        if batch.is_empty() {
            return Ok(Evaluation::default());
        }
        eval_batch(self.model, batch, &self.normalization, &self.device)
    }

    fn valid_metrics(&mut self, outputs: Vec<Evaluation>) -> Result<BTreeMap<String, f64>> {
        let mut eval = Evaluation::default();
        let mut loss_sum = 0.0;
        for part in outputs.into_iter().filter(|p| !p.is_empty()) {
            eval.extend(part, &mut loss_sum);
        }
        if eval.is_empty() {
            return Err(Error::EmptySource { split: "valid".into(), epoch: 0 });
        }
        eval.loss = loss_sum / eval.len() as f64;
        let names: Vec<String> = (0..eval.labels_per_sample).map(|k| format!("label{k}")).collect();
        let report = eval.report(&names)?;
        let mut metrics = BTreeMap::from([
            ("loss".to_string(), eval.loss),
            ("accuracy".to_string(), report.mean_accuracy),
            ("exact_match".to_string(), report.exact_match_accuracy),
        ]);
        if let Some(auc) = report.mean_roc_auc {
            metrics.insert("auc".to_string(), auc);
        }
        Ok(metrics)
    }
}

/// Everything [`fit`] needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Epochs to train (in total, counting epochs done before a resume).
    pub epochs: usize,
    /// The optimizer with all of its settings (learning rate, betas, decay...).
    pub optimizer: OptimizerConfig,
    /// An optional learning-rate schedule over epochs.
    pub schedule: Option<Schedule>,
    /// Optional early stopping; its monitor also picks the best checkpoint (else `val_loss`).
    pub early_stopping: Option<EarlyStopping>,
    /// Loss weights `[negative, positive]` applied to every label.
    pub class_weights: Option<Vec<f32>>,
    /// The training loss (the validation loss is always binary cross-entropy, so runs with
    /// different losses compare on one scale).
    #[serde(default)]
    pub loss: Loss,
    /// The run's seed, saved with every checkpoint.
    pub seed: u64,
    /// Where checkpoints, history and curves go.
    pub out_dir: PathBuf,
    /// Save `last/` after every epoch (else only `best/` and the final epoch).
    pub checkpoint_every_epoch: bool,
    /// Show progress (a bar on a terminal, a line per epoch otherwise) under this label.
    pub progress: Option<String>,
}

impl Default for TrainConfig {
    /// 10 epochs of PyTorch's Adam (1e-3), seed 0, into `runs/train`, no progress output.
    fn default() -> Self {
        TrainConfig {
            epochs: 10,
            optimizer: OptimizerConfig::default(),
            schedule: None,
            early_stopping: None,
            class_weights: None,
            loss: Loss::Bce,
            seed: 0,
            out_dir: PathBuf::from("runs/train"),
            checkpoint_every_epoch: true,
            progress: None,
        }
    }
}

impl TrainConfig {
    /// The metric of the best checkpoint: early stopping's, else the validation loss.
    pub fn monitor(&self) -> Monitor {
        self.early_stopping.as_ref().map_or(Monitor::min("val_loss"), |e| e.monitor.clone())
    }

    /// The engine configuration this run uses.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            epochs: self.epochs,
            seed: self.seed,
            out_dir: self.out_dir.clone(),
            schedule: self.schedule.clone(),
            monitor: self.monitor(),
            checkpoint_every_epoch: self.checkpoint_every_epoch,
            ..Default::default()
        }
    }
}

/// Trains `model` (variables in `varmap`, `trainable` updated) on `train`, validating on
/// `valid` after every epoch, with the best checkpoint, early stopping (when configured),
/// learning curves and progress; resumes from `out_dir/last` when it exists. `model_config` is
/// recorded in every checkpoint.
///
/// # Errors
/// Loader, tensor, checkpoint and I/O errors; [`Error::NonFinite`] naming the batch's sample ids
/// when the loss is NaN or infinite (earlier checkpoints are kept).
#[allow(clippy::too_many_arguments)]
pub fn fit<M, D, E>(
    model: &M,
    varmap: &VarMap,
    trainable: Vec<Var>,
    normalization: Normalization,
    model_config: serde_json::Value,
    config: &TrainConfig,
    train: &Loader<D>,
    valid: &Loader<E>,
    device: &Device,
) -> Result<History>
where
    M: ModuleT,
    D: Dataset<Item = Sample> + 'static,
    E: Dataset<Item = Sample> + 'static,
{
    let mut step =
        ClassifierStep::new(model, varmap, trainable, &config.optimizer, normalization, device)?
            .class_weights(config.class_weights.clone())
            .loss(config.loss)
            .config(model_config);
    let mut engine = Engine::new(config.engine())
        .device(device.clone())
        .callback(BestCheckpoint)
        .callback(CurvesPlot::new("model"));
    if let Some(es) = &config.early_stopping {
        engine = engine.callback(es.clone());
    }
    if let Some(label) = &config.progress {
        engine = engine.callback(Progress::new(label));
    }
    engine.fit_validated(&mut step, train, valid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scalar(t: Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// Reference values by hand: sigmoid(0) = 0.5, sigmoid(2) = 0.8807970779778823, so the
    /// squared errors against targets 1 and 0 are 0.25 and 0.7758034940...; weights [2, 0.5]
    /// (negative, positive) scale them to 0.125 and 1.5516069880....
    #[test]
    fn l2_loss_is_the_squared_probability_error() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[0.0f32], [2.0]], &dev).unwrap();
        let targets = Tensor::new(&[[1.0f32], [0.0]], &dev).unwrap();
        let p2 = 0.880_797_077_977_882_3_f64;
        let plain = scalar(loss_of(&logits, &targets, None, Loss::L2).unwrap());
        assert!((plain - (0.25 + p2 * p2) / 2.0).abs() < 1e-6, "{plain}");
        let weighted = scalar(loss_of(&logits, &targets, Some(&[2.0, 0.5]), Loss::L2).unwrap());
        assert!((weighted - (0.5 * 0.25 + 2.0 * p2 * p2) / 2.0).abs() < 1e-6, "{weighted}");
        let bce = scalar(loss_of(&logits, &targets, None, Loss::Bce).unwrap());
        assert!(bce > plain, "cross-entropy punishes the confident error harder");
        assert_eq!("L2".parse::<Loss>().unwrap(), Loss::L2);
        assert!("hinge".parse::<Loss>().is_err());
    }
}
