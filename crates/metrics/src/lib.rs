//! Classification, calibration and FID metrics with PNG plots.
//!
//! Plain Rust over slices: labels are `&[bool]` (`true` = class 1), scores `&[f64]`. Metrics
//! that are undefined for the input (ROC-AUC with one class, precision with no positive
//! prediction) are an [`Error`] or `None`, never `NaN`. The ranking metrics reproduce
//! scikit-learn, ties included, and are checked against it by golden tests.
//!
//! - [`binary`]: accuracy, confusion matrix, precision / recall / F-beta, balanced accuracy,
//!   ROC curve and AUC, precision-recall curve and average precision, clipped log-loss, EER,
//!   best F1 / Youden thresholds, majority baseline;
//! - [`calibration`](mod@calibration): ECE, reliability bins, temperature scaling;
//! - [`multilabel`]: per-attribute metrics with both mean and exact-match accuracy;
//! - [`video`]: frame scores aggregated per video;
//! - [`subgroup`]: any metric per group, with the gap between groups;
//! - [`bootstrap`]: seeded confidence intervals for any scalar metric;
//! - [`fid`]: feature statistics and the Frechet distance;
//! - [`kid`]: the Kernel Inception Distance (unbiased polynomial-kernel MMD² over subsets);
//! - [`report`]: everything binary in one serialisable struct;
//! - [`predictions`]: the `id,label,score[,video][,group]` CSV format;
//! - [`plot`]: ROC, precision-recall, confusion matrix, reliability, learning curves and
//!   attribute distribution charts as PNG.
//!
//! ```
//! use deeprecog_metrics::binary::{roc_auc, BinaryConfusion};
//!
//! let labels = [false, false, true, true];
//! let scores = [0.1, 0.4, 0.35, 0.8];
//! assert_eq!(roc_auc(&labels, &scores)?, 0.75);
//!
//! let confusion = BinaryConfusion::from_scores(&labels, &scores, 0.5)?;
//! assert_eq!(confusion.precision(), Some(1.0));
//! assert_eq!(confusion.recall(), Some(0.5));
//!
//! // One class only: AUC is undefined, and says so.
//! assert!(roc_auc(&[true, true], &[0.2, 0.9]).is_err());
//! # Ok::<(), deeprecog_metrics::Error>(())
//! ```
#![deny(missing_docs)]

pub mod binary;
pub mod bootstrap;
pub mod calibration;
mod error;
pub mod fid;
pub mod kid;
pub mod multilabel;
pub mod plot;
pub mod predictions;
pub mod report;
pub mod subgroup;
pub mod video;

pub use binary::{
    accuracy, average_precision, eer, log_loss, roc_auc, BinaryConfusion, PrCurve, RocCurve,
};
pub use bootstrap::{bootstrap_ci, BootstrapConfig, ConfidenceInterval};
pub use calibration::{calibration, expected_calibration_error, Calibration, TemperatureScaling};
pub use error::{Error, Result};
pub use fid::{frechet_distance, frechet_distance_from_rows, FeatureAccumulator, FeatureStats};
pub use kid::{kernel_inception_distance, mmd2_unbiased, Kid, KidConfig};
pub use multilabel::MultiLabelReport;
pub use report::BinaryReport;
pub use subgroup::{subgroup_breakdown, SubgroupReport};
pub use video::{aggregate_by_video, Aggregation, VideoScores};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
