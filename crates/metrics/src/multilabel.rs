//! Multi-label metrics: one binary problem per attribute, plus exact-match accuracy.
//!
//! Papers and reports quote "multi-label accuracy" meaning either the mean of per-attribute
//! accuracies or the fraction of samples with every attribute right (subset accuracy). The two
//! differ hugely with 40 attributes, so [`MultiLabelReport`] always carries both.

use serde::Serialize;

use deeprecog_attributes::Attribute;

use crate::binary::{roc_auc, BinaryConfusion};
use crate::{Error, Result};

/// Metrics of one label (attribute) column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelMetrics {
    /// The column's name.
    pub name: String,
    /// The number of positive labels.
    pub positives: usize,
    /// The confusion counts at the report's threshold.
    pub confusion: BinaryConfusion,
    /// Accuracy at the threshold.
    pub accuracy: f64,
    /// F1 at the threshold; `None` without positive labels or predictions.
    pub f1: Option<f64>,
    /// ROC-AUC; `None` when the column holds one class only.
    pub roc_auc: Option<f64>,
}

/// Per-label and aggregate metrics of a multi-label classifier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultiLabelReport {
    /// The number of samples.
    pub n: usize,
    /// One entry per label column, in column order.
    pub per_label: Vec<LabelMetrics>,
    /// The mean of the per-label accuracies.
    pub mean_accuracy: f64,
    /// The fraction of samples with every label predicted correctly (subset accuracy).
    pub exact_match_accuracy: f64,
    /// The mean F1 over the labels where F1 is defined; `None` if it is defined for none.
    pub mean_f1: Option<f64>,
    /// The mean ROC-AUC over the labels where it is defined; `None` if defined for none.
    pub mean_roc_auc: Option<f64>,
}

fn mean_defined(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let (sum, count) = values.flatten().fold((0.0, 0usize), |(s, c), v| (s + v, c + 1));
    (count > 0).then(|| sum / count as f64)
}

impl MultiLabelReport {
    /// Computes the report from row-major `labels` and `scores` of shape `n x names.len()`;
    /// a label is predicted positive when its score is `>= threshold`.
    ///
    /// # Errors
    /// [`Error::Empty`] without samples or names, [`Error::LengthMismatch`] when a matrix is
    /// not `n x names.len()`, [`Error::InvalidValue`] for a non-finite score.
    pub fn new<S: AsRef<str>>(
        labels: &[bool],
        scores: &[f64],
        names: &[S],
        threshold: f64,
    ) -> Result<Self> {
        let k = names.len();
        if k == 0 {
            return Err(Error::Empty { what: "names" });
        }
        if labels.is_empty() {
            return Err(Error::Empty { what: "labels" });
        }
        if !labels.len().is_multiple_of(k) {
            return Err(Error::LengthMismatch {
                what: "labels (not a multiple of the label count)",
                expected: labels.len().div_ceil(k) * k,
                got: labels.len(),
            });
        }
        if scores.len() != labels.len() {
            return Err(Error::LengthMismatch {
                what: "scores",
                expected: labels.len(),
                got: scores.len(),
            });
        }
        if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
            return Err(Error::InvalidValue { what: "score", index, value });
        }
        let n = labels.len() / k;
        let mut per_label = Vec::with_capacity(k);
        for (j, name) in names.iter().enumerate() {
            let col_labels: Vec<bool> = labels.iter().skip(j).step_by(k).copied().collect();
            let col_scores: Vec<f64> = scores.iter().skip(j).step_by(k).copied().collect();
            let confusion = BinaryConfusion::from_scores(&col_labels, &col_scores, threshold)?;
            let auc = match roc_auc(&col_labels, &col_scores) {
                Ok(v) => Some(v),
                Err(Error::SingleClass { .. }) => None,
                Err(e) => return Err(e),
            };
            per_label.push(LabelMetrics {
                name: name.as_ref().to_string(),
                positives: col_labels.iter().filter(|&&y| y).count(),
                accuracy: confusion.accuracy().unwrap_or(0.0),
                f1: confusion.f1(),
                roc_auc: auc,
                confusion,
            });
        }
        let exact = labels
            .chunks_exact(k)
            .zip(scores.chunks_exact(k))
            .filter(|(ys, ss)| ys.iter().zip(ss.iter()).all(|(&y, &s)| (s >= threshold) == y))
            .count();
        Ok(Self {
            n,
            mean_accuracy: per_label.iter().map(|m| m.accuracy).sum::<f64>() / k as f64,
            exact_match_accuracy: exact as f64 / n as f64,
            mean_f1: mean_defined(per_label.iter().map(|m| m.f1)),
            mean_roc_auc: mean_defined(per_label.iter().map(|m| m.roc_auc)),
            per_label,
        })
    }

    /// [`MultiLabelReport::new`] for CelebA attribute columns, named after the attributes.
    ///
    /// # Errors
    /// As [`MultiLabelReport::new`].
    pub fn for_attributes(
        labels: &[bool],
        scores: &[f64],
        attributes: &[Attribute],
        threshold: f64,
    ) -> Result<Self> {
        let names: Vec<String> = attributes.iter().map(|a| a.to_string()).collect();
        Self::new(labels, scores, &names, threshold)
    }
}
