//! Test-set reports for attribute classifiers: accuracy against the majority baseline,
//! ROC-AUC, per-attribute and exact-match accuracy, and a subgroup breakdown.

use deeprecog_attributes::Attribute;
use deeprecog_metrics::binary::{accuracy, majority_baseline_accuracy, roc_auc};
use deeprecog_metrics::bootstrap::{bootstrap_ci, BootstrapConfig, ConfidenceInterval};
use deeprecog_metrics::multilabel::MultiLabelReport;
use deeprecog_metrics::subgroup::{subgroup_breakdown, SubgroupReport};
use serde::Serialize;

use deeprecog_train::{Error, Result};

use crate::supervised::Evaluation;

/// One attribute's test metrics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeResult {
    /// The attribute's CelebA name.
    pub attribute: String,
    /// Accuracy at threshold 0.5.
    pub accuracy: f64,
    /// Accuracy of always predicting the test set's majority class.
    pub majority_baseline: f64,
    /// Bootstrap 95% interval of the accuracy (1000 resamples of the test set, seed 0).
    pub accuracy_ci: ConfidenceInterval,
    /// Bootstrap 95% interval of accuracy minus the majority baseline, both computed on the
    /// same resample: the model beats the baseline beyond test-set noise when `lower > 0`.
    pub margin_over_majority_ci: ConfidenceInterval,
    /// ROC-AUC; `None` when the test set holds one class.
    pub roc_auc: Option<f64>,
    /// Accuracy per subgroup (e.g. Male vs not), when groups were given.
    pub subgroups: Option<SubgroupReport>,
}

/// A test-set report, serialisable as `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttributeReport {
    /// Test samples.
    pub n: usize,
    /// Mean binary cross-entropy.
    pub loss: f64,
    /// One entry per attribute, in output order.
    pub attributes: Vec<AttributeResult>,
    /// Mean per-attribute accuracy (the accuracy itself for one attribute).
    pub mean_accuracy: f64,
    /// Fraction of samples with every attribute right.
    pub exact_match_accuracy: f64,
    /// Name of the subgroup split (e.g. `"Male"`), when given.
    pub subgroup_by: Option<String>,
}

/// The resampling behind the report's intervals: fixed, so a report is reproducible.
pub const REPORT_BOOTSTRAP: BootstrapConfig =
    BootstrapConfig { resamples: 1000, confidence: 0.95, seed: 0 };

fn defined(r: deeprecog_metrics::Result<f64>) -> Result<Option<f64>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(deeprecog_metrics::Error::SingleClass { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Builds the report of `eval` for `attributes` (its output columns). `groups`, when given, is
/// a name and one group label per sample (e.g. `("Male", ["Male", "not Male", ...])`).
///
/// # Errors
/// [`Error::InvalidConfig`] when the columns or groups do not fit the evaluation, metric errors.
pub fn attribute_report(
    eval: &Evaluation,
    attributes: &[Attribute],
    groups: Option<(&str, &[String])>,
) -> Result<AttributeReport> {
    if attributes.len() != eval.labels_per_sample {
        return Err(Error::InvalidConfig(format!(
            "{} attributes for {} model outputs",
            attributes.len(),
            eval.labels_per_sample
        )));
    }
    if let Some((_, g)) = groups {
        if g.len() != eval.len() {
            return Err(Error::InvalidConfig(format!(
                "{} group labels for {} samples",
                g.len(),
                eval.len()
            )));
        }
    }
    let multi = MultiLabelReport::for_attributes(&eval.labels, &eval.scores, attributes, 0.5)?;
    let mut results = Vec::with_capacity(attributes.len());
    for (k, attribute) in attributes.iter().enumerate() {
        let (labels, scores) = eval.column(k);
        let subgroups = match groups {
            Some((_, g)) => {
                Some(subgroup_breakdown(g, &labels, &scores, |y, s| accuracy(y, s, 0.5))?)
            }
            None => None,
        };
        let margin =
            |y: &[bool], s: &[f64]| Ok(accuracy(y, s, 0.5)? - majority_baseline_accuracy(y)?);
        results.push(AttributeResult {
            attribute: attribute.name().to_string(),
            accuracy: accuracy(&labels, &scores, 0.5)?,
            majority_baseline: majority_baseline_accuracy(&labels)?,
            accuracy_ci: bootstrap_ci(&labels, &scores, REPORT_BOOTSTRAP, |y, s| {
                accuracy(y, s, 0.5)
            })?,
            margin_over_majority_ci: bootstrap_ci(&labels, &scores, REPORT_BOOTSTRAP, margin)?,
            roc_auc: defined(roc_auc(&labels, &scores))?,
            subgroups,
        });
    }
    Ok(AttributeReport {
        n: eval.len(),
        loss: eval.loss,
        attributes: results,
        mean_accuracy: multi.mean_accuracy,
        exact_match_accuracy: multi.exact_match_accuracy,
        subgroup_by: groups.map(|(name, _)| name.to_string()),
    })
}

impl AttributeReport {
    /// The column names of [`AttributeReport::rows`].
    pub const COLUMNS: [&'static str; 7] = [
        "model",
        "attribute",
        "test accuracy",
        "95% CI",
        "majority baseline",
        "margin over majority (95% CI)",
        "ROC-AUC",
    ];

    /// One table row per attribute (columns [`AttributeReport::COLUMNS`]), formatted to three
    /// decimals.
    pub fn rows(&self, model: &str) -> Vec<Vec<String>> {
        self.attributes
            .iter()
            .map(|a| {
                vec![
                    model.to_string(),
                    a.attribute.clone(),
                    format!("{:.3}", a.accuracy),
                    format!("{:.3} to {:.3}", a.accuracy_ci.lower, a.accuracy_ci.upper),
                    format!("{:.3}", a.majority_baseline),
                    format!(
                        "{:+.3} ({:+.3} to {:+.3})",
                        a.margin_over_majority_ci.estimate,
                        a.margin_over_majority_ci.lower,
                        a.margin_over_majority_ci.upper
                    ),
                    a.roc_auc.map_or("n/a".into(), |v| format!("{v:.3}")),
                ]
            })
            .collect()
    }
}
