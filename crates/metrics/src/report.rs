//! Every binary metric of a set of probabilistic predictions in one serialisable struct.

use serde::Serialize;

use crate::binary::{
    average_precision, best_f1_threshold, best_youden_threshold, check_probabilities, eer,
    log_loss, majority_baseline_accuracy, roc_auc, BinaryConfusion, Eer, ThresholdChoice,
};
use crate::calibration::expected_calibration_error;
use crate::subgroup::is_undefined;
use crate::{Error, Result};

/// The number of equal-width bins [`BinaryReport`] uses for the ECE.
pub const DEFAULT_ECE_BINS: usize = 15;

/// All binary metrics of probabilities of class 1; undefined ones are `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinaryReport {
    /// The number of samples.
    pub n: usize,
    /// The number of positive labels.
    pub positives: usize,
    /// The decision threshold (predict positive when `p >= threshold`).
    pub threshold: f64,
    /// The confusion counts at the threshold.
    pub confusion: BinaryConfusion,
    /// Accuracy at the threshold.
    pub accuracy: f64,
    /// Accuracy of always predicting the majority class.
    pub majority_baseline: f64,
    /// Balanced accuracy at the threshold.
    pub balanced_accuracy: Option<f64>,
    /// Precision at the threshold.
    pub precision: Option<f64>,
    /// Recall at the threshold.
    pub recall: Option<f64>,
    /// Specificity at the threshold.
    pub specificity: Option<f64>,
    /// F1 at the threshold.
    pub f1: Option<f64>,
    /// ROC-AUC.
    pub roc_auc: Option<f64>,
    /// Average precision.
    pub average_precision: Option<f64>,
    /// Log-loss clipped at [`crate::binary::LOG_LOSS_EPS`].
    pub log_loss: f64,
    /// The equal error rate.
    pub eer: Option<Eer>,
    /// Expected calibration error with [`DEFAULT_ECE_BINS`] bins.
    pub ece: f64,
    /// The threshold maximising F1.
    pub best_f1: Option<ThresholdChoice>,
    /// The threshold maximising Youden's J.
    pub best_youden: Option<ThresholdChoice>,
}

fn optional<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_undefined(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

impl BinaryReport {
    /// Computes every metric of `probs` (probabilities of class 1) against `labels`.
    ///
    /// # Errors
    /// Input errors, or [`Error::InvalidValue`] for a probability outside `[0, 1]`;
    /// undefined metrics are `None`, not errors.
    pub fn new(labels: &[bool], probs: &[f64], threshold: f64) -> Result<Self> {
        check_probabilities(labels, probs)?;
        let confusion = BinaryConfusion::from_scores(labels, probs, threshold)?;
        Ok(Self {
            n: labels.len(),
            positives: labels.iter().filter(|&&y| y).count(),
            threshold,
            accuracy: confusion.accuracy().ok_or(Error::Empty { what: "labels" })?,
            majority_baseline: majority_baseline_accuracy(labels)?,
            balanced_accuracy: confusion.balanced_accuracy(),
            precision: confusion.precision(),
            recall: confusion.recall(),
            specificity: confusion.specificity(),
            f1: confusion.f1(),
            confusion,
            roc_auc: optional(roc_auc(labels, probs))?,
            average_precision: optional(average_precision(labels, probs))?,
            log_loss: log_loss(labels, probs)?,
            eer: optional(eer(labels, probs))?,
            ece: expected_calibration_error(labels, probs, DEFAULT_ECE_BINS)?,
            best_f1: optional(best_f1_threshold(labels, probs))?,
            best_youden: optional(best_youden_threshold(labels, probs))?,
        })
    }
}
