//! Every binary metric of a predictions file (`id,label,score[,video][,group]`, see
//! [`deeprecog_metrics::predictions`]): the per-row [`BinaryReport`], the video-level report
//! when the file names videos (frame scores averaged per video), the per-group breakdown when
//! it names groups, as one serialisable [`PredictionsReport`], as text, and as plots.
//!
//! ```
//! use deeprecog::metrics::predictions::Predictions;
//! use deeprecog::pipelines::predictions::PredictionsReport;
//!
//! let p = Predictions {
//!     ids: vec!["a".into(), "b".into(), "c".into(), "d".into()],
//!     labels: vec![false, false, true, true],
//!     scores: vec![0.1, 0.4, 0.35, 0.8],
//!     videos: None,
//!     groups: Some(vec!["x".into(), "y".into(), "x".into(), "y".into()]),
//! };
//! let report = PredictionsReport::new(&p, 0.5)?;
//! assert_eq!(report.frames.roc_auc, Some(0.75));
//! let json = serde_json::to_value(&report).unwrap();
//! assert_eq!(json["accuracy"], 0.75);
//! assert_eq!(json["groups"]["accuracy"]["groups"][0]["group"], "x");
//! # Ok::<(), deeprecog::pipelines::Error>(())
//! ```

use std::fmt::Write as _;
use std::path::Path;

use deeprecog_metrics::binary::{self, PrCurve, RocCurve};
use deeprecog_metrics::predictions::Predictions;
use deeprecog_metrics::report::DEFAULT_ECE_BINS;
use deeprecog_metrics::{
    aggregate_by_video, calibration, plot, subgroup_breakdown, Aggregation, BinaryConfusion,
    BinaryReport, SubgroupReport, VideoScores,
};
use serde::Serialize;

use super::{Error, Result};

/// Accuracy, F1 and ROC-AUC per group at one threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BinaryBreakdown {
    /// Accuracy per group (at the report's threshold).
    pub accuracy: SubgroupReport,
    /// F1 per group (at the report's threshold).
    pub f1: SubgroupReport,
    /// ROC-AUC per group.
    pub roc_auc: SubgroupReport,
}

impl BinaryBreakdown {
    /// Breaks `labels` / `scores` down by `groups` (parallel to them).
    ///
    /// # Errors
    /// Input errors of [`subgroup_breakdown`].
    pub fn new<S: AsRef<str>>(
        groups: &[S],
        labels: &[bool],
        scores: &[f64],
        threshold: f64,
    ) -> Result<BinaryBreakdown> {
        let accuracy =
            subgroup_breakdown(groups, labels, scores, |y, s| binary::accuracy(y, s, threshold))?;
        let f1 = subgroup_breakdown(groups, labels, scores, |y, s| {
            BinaryConfusion::from_scores(y, s, threshold)?
                .f1()
                .ok_or(deeprecog_metrics::Error::Undefined { metric: "F1", reason: "no positives" })
        })?;
        let roc_auc = subgroup_breakdown(groups, labels, scores, binary::roc_auc)?;
        Ok(BinaryBreakdown { accuracy, f1, roc_auc })
    }
}

/// The video-level side of a [`PredictionsReport`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoReport {
    /// How frame scores became one score per video.
    pub aggregation: Aggregation,
    /// Number of videos.
    pub videos: usize,
    /// Every binary metric over videos.
    #[serde(flatten)]
    pub report: BinaryReport,
    /// The per-video labels and scores (not serialised).
    #[serde(skip)]
    pub scores: VideoScores,
}

/// Everything [`PredictionsReport::new`] measures. Serialises as the per-row report's fields
/// with `videos` and `groups` next to them when the file has those columns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionsReport {
    /// Every binary metric over the rows (frames or images).
    #[serde(flatten)]
    pub frames: BinaryReport,
    /// The same over videos (mean of frame scores), when the file has a `video` column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub videos: Option<VideoReport>,
    /// Per-group accuracy, F1 and ROC-AUC, when the file has a `group` column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<BinaryBreakdown>,
}

impl PredictionsReport {
    /// Measures `p` at `threshold`.
    ///
    /// # Errors
    /// Metric input errors (a score outside `[0, 1]`, a video with frames of both labels).
    pub fn new(p: &Predictions, threshold: f64) -> Result<PredictionsReport> {
        let frames = BinaryReport::new(&p.labels, &p.scores, threshold)?;
        let videos = match &p.videos {
            Some(ids) => {
                let aggregation = Aggregation::Mean;
                let scores = aggregate_by_video(ids, &p.labels, &p.scores, aggregation)?;
                let report = BinaryReport::new(&scores.labels, &scores.scores, threshold)?;
                Some(VideoReport { aggregation, videos: scores.ids.len(), report, scores })
            }
            None => None,
        };
        let groups = match &p.groups {
            Some(g) => Some(BinaryBreakdown::new(g, &p.labels, &p.scores, threshold)?),
            None => None,
        };
        Ok(PredictionsReport { frames, videos, groups })
    }

    /// The report as aligned text: frames, videos, groups.
    pub fn text(&self) -> String {
        let mut out = binary_report_text("frames", &self.frames);
        if let Some(v) = &self.videos {
            let title = format!(
                "videos ({} of frame scores, {} videos)",
                aggregation(v.aggregation),
                v.videos
            );
            out.push_str(&binary_report_text(&title, &v.report));
        }
        if let Some(b) = &self.groups {
            let gaps = (optional(b.accuracy.gap), optional(b.roc_auc.gap));
            let _ = writeln!(out, "== groups (accuracy gap {}, ROC-AUC gap {}) ==", gaps.0, gaps.1);
            let rows = b.accuracy.groups.iter().zip(&b.f1.groups).zip(&b.roc_auc.groups);
            for ((a, f), u) in rows {
                let _ = writeln!(
                    out,
                    "{:<16} n {:<7} accuracy {}  F1 {}  ROC-AUC {}",
                    a.group,
                    a.n,
                    optional(a.value),
                    optional(f.value),
                    optional(u.value)
                );
            }
        }
        out
    }

    /// Writes `roc.png` (frames and videos), `pr.png`, `confusion.png` and `reliability.png`
    /// for `p` (the predictions this report measured) into `dir`; the ROC and PR charts are
    /// left out when undefined (one class only).
    ///
    /// # Errors
    /// Plotting and I/O errors.
    pub fn plots(&self, p: &Predictions, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io { path: dir.to_path_buf(), reason: e.to_string() })?;
        if let Ok(roc) = RocCurve::simplified(&p.labels, &p.scores) {
            let mut curves = vec![("frame", roc)];
            if let Some(v) = &self.videos {
                let video = RocCurve::simplified(&v.scores.labels, &v.scores.scores);
                curves.extend(video.map(|r| ("video", r)));
            }
            let refs: Vec<(&str, &RocCurve)> = curves.iter().map(|(n, c)| (*n, c)).collect();
            plot::roc_curves(&dir.join("roc.png"), &refs, "ROC curve")?;
        }
        if let Ok(pr) = PrCurve::new(&p.labels, &p.scores) {
            let rate = self.frames.positives as f64 / self.frames.n as f64;
            plot::pr_curves(
                &dir.join("pr.png"),
                &[("frame", &pr, rate)],
                "Precision-recall curve",
            )?;
        }
        let title = format!("Confusion matrix at {}", self.frames.threshold);
        plot::confusion_matrix(
            &dir.join("confusion.png"),
            &self.frames.confusion,
            ["0", "1"],
            &title,
        )?;
        let cal = calibration(&p.labels, &p.scores, 10)?;
        plot::reliability_diagram(&dir.join("reliability.png"), &cal, "Reliability diagram")?;
        Ok(())
    }
}

fn aggregation(a: Aggregation) -> String {
    format!("{a:?}").to_lowercase()
}

fn optional(v: Option<f64>) -> String {
    v.map_or_else(|| "undefined".into(), |v| format!("{v:.6}"))
}

/// One [`BinaryReport`] as aligned text under a `== title (n, positives) ==` line.
pub fn binary_report_text(title: &str, r: &BinaryReport) -> String {
    let c = &r.confusion;
    let (f1, j) = (r.best_f1.map(|b| b.threshold), r.best_youden.map(|b| b.threshold));
    let lines = [
        format!("== {title} (n = {}, positives = {}) ==", r.n, r.positives),
        format!(
            "accuracy@{:<5}        {:.6}   (majority baseline {:.6})",
            r.threshold, r.accuracy, r.majority_baseline
        ),
        format!("balanced accuracy     {}", optional(r.balanced_accuracy)),
        format!("precision / recall    {} / {}", optional(r.precision), optional(r.recall)),
        format!("specificity / F1      {} / {}", optional(r.specificity), optional(r.f1)),
        format!("confusion             tp {} fp {} tn {} fn {}", c.tp, c.fp, c.tn, c.fn_),
        format!("ROC-AUC               {}", optional(r.roc_auc)),
        format!("average precision     {}", optional(r.average_precision)),
        format!("log-loss              {:.6}", r.log_loss),
        format!("EER                   {}", optional(r.eer.map(|e| e.rate))),
        format!("ECE ({DEFAULT_ECE_BINS} bins)         {:.6}", r.ece),
        format!("best F1 / J threshold {} / {}", optional(f1), optional(j)),
    ];
    lines.iter().fold(String::new(), |out, l| out + l + "\n")
}
