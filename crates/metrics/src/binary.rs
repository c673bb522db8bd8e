//! Binary classification metrics over parallel slices of labels and scores.
//!
//! Conventions shared by every function here:
//! - `labels[i]` is `true` for the positive class (class 1);
//! - `scores[i]` is any finite number that ranks samples (higher means more likely positive);
//!   functions that need probabilities say so and reject values outside `[0, 1]`;
//! - a sample is predicted positive when `score >= threshold` (scikit-learn's convention for
//!   curve thresholds);
//! - a metric that is undefined for the input (ROC-AUC with one class, precision with no
//!   positive prediction, ...) is an [`Error`] or `None`, never `NaN`.

use serde::Serialize;

use crate::{Error, Result};

/// Checks that labels and scores are parallel, non-empty and finite.
pub(crate) fn check_inputs(labels: &[bool], scores: &[f64]) -> Result<()> {
    if labels.is_empty() {
        return Err(Error::Empty { what: "labels" });
    }
    if labels.len() != scores.len() {
        return Err(Error::LengthMismatch {
            what: "scores",
            expected: labels.len(),
            got: scores.len(),
        });
    }
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(Error::InvalidValue { what: "score", index, value });
    }
    Ok(())
}

/// Like [`check_inputs`] and also requires every score to be a probability in `[0, 1]`.
pub(crate) fn check_probabilities(labels: &[bool], probs: &[f64]) -> Result<()> {
    check_inputs(labels, probs)?;
    if let Some((index, &value)) = probs.iter().enumerate().find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        return Err(Error::InvalidValue { what: "probability", index, value });
    }
    Ok(())
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Counts of a binary confusion matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct BinaryConfusion {
    /// Positives predicted positive.
    pub tp: u64,
    /// Negatives predicted positive.
    pub fp: u64,
    /// Negatives predicted negative.
    pub tn: u64,
    /// Positives predicted negative.
    pub fn_: u64,
}

impl BinaryConfusion {
    /// Counts hard predictions against labels.
    ///
    /// # Errors
    /// [`Error::Empty`] or [`Error::LengthMismatch`].
    pub fn from_predictions(labels: &[bool], predictions: &[bool]) -> Result<Self> {
        if labels.is_empty() {
            return Err(Error::Empty { what: "labels" });
        }
        if labels.len() != predictions.len() {
            return Err(Error::LengthMismatch {
                what: "predictions",
                expected: labels.len(),
                got: predictions.len(),
            });
        }
        let mut c = Self::default();
        for (&y, &p) in labels.iter().zip(predictions) {
            match (y, p) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
                (true, false) => c.fn_ += 1,
            }
        }
        Ok(c)
    }

    /// Counts the predictions `score >= threshold` against labels.
    ///
    /// # Errors
    /// [`Error::Empty`], [`Error::LengthMismatch`], or [`Error::InvalidValue`] for a
    /// non-finite score.
    pub fn from_scores(labels: &[bool], scores: &[f64], threshold: f64) -> Result<Self> {
        check_inputs(labels, scores)?;
        let predictions: Vec<bool> = scores.iter().map(|&s| s >= threshold).collect();
        Self::from_predictions(labels, &predictions)
    }

    /// The number of samples.
    pub fn n(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// The number of positive labels.
    pub fn positives(&self) -> u64 {
        self.tp + self.fn_
    }

    /// The number of negative labels.
    pub fn negatives(&self) -> u64 {
        self.tn + self.fp
    }

    /// The fraction of correct predictions; `None` only for an empty matrix.
    pub fn accuracy(&self) -> Option<f64> {
        ratio(self.tp + self.tn, self.n())
    }

    /// `tp / (tp + fp)`; `None` when nothing is predicted positive.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `tp / (tp + fn)` (sensitivity, true positive rate); `None` without positive labels.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// `tn / (tn + fp)` (true negative rate); `None` without negative labels.
    pub fn specificity(&self) -> Option<f64> {
        ratio(self.tn, self.tn + self.fp)
    }

    /// The F1 score, `2 tp / (2 tp + fp + fn)`.
    ///
    /// Written without precision and recall, so it stays defined (and equals scikit-learn's
    /// value, 0) when one of them is undefined; `None` only when there are neither positive
    /// labels nor positive predictions.
    pub fn f1(&self) -> Option<f64> {
        self.f_beta(1.0)
    }

    /// The F-beta score `(1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp)`; recall weighs `beta`
    /// times as much as precision.
    ///
    /// `None` when the denominator is zero or `beta` is not a positive finite number.
    pub fn f_beta(&self, beta: f64) -> Option<f64> {
        if !(beta.is_finite() && beta > 0.0) {
            return None;
        }
        let b2 = beta * beta;
        let tp = self.tp as f64;
        let den = (1.0 + b2) * tp + b2 * self.fn_ as f64 + self.fp as f64;
        (den > 0.0).then(|| (1.0 + b2) * tp / den)
    }

    /// The mean of recall and specificity, averaged over the classes present in the labels
    /// (scikit-learn's `balanced_accuracy_score`: with one class present it is that class's
    /// recall). `None` only for an empty matrix.
    pub fn balanced_accuracy(&self) -> Option<f64> {
        match (self.recall(), self.specificity()) {
            (Some(r), Some(s)) => Some((r + s) / 2.0),
            (Some(r), None) => Some(r),
            (None, Some(s)) => Some(s),
            (None, None) => None,
        }
    }
}

/// The fraction of samples whose prediction `score >= threshold` matches the label.
///
/// # Errors
/// [`Error::Empty`], [`Error::LengthMismatch`] or [`Error::InvalidValue`].
pub fn accuracy(labels: &[bool], scores: &[f64], threshold: f64) -> Result<f64> {
    let c = BinaryConfusion::from_scores(labels, scores, threshold)?;
    c.accuracy().ok_or(Error::Empty { what: "labels" })
}

/// The accuracy of always predicting the majority class: `max(P, N) / n`.
///
/// The floor any classifier must beat (80.75% on the DFDC data, ~80% fake).
///
/// # Errors
/// [`Error::Empty`] without labels.
pub fn majority_baseline_accuracy(labels: &[bool]) -> Result<f64> {
    if labels.is_empty() {
        return Err(Error::Empty { what: "labels" });
    }
    let pos = labels.iter().filter(|&&y| y).count();
    let neg = labels.len() - pos;
    Ok(pos.max(neg) as f64 / labels.len() as f64)
}

/// Cumulative counts at every distinct score, highest score first.
///
/// `tps[k]` and `fps[k]` count the positives and negatives with `score >= thresholds[k]`;
/// this is scikit-learn's `_binary_clf_curve`, computed with one O(n log n) sort.
#[derive(Debug, Clone)]
pub(crate) struct CurveCounts {
    pub thresholds: Vec<f64>,
    pub tps: Vec<u64>,
    pub fps: Vec<u64>,
}

impl CurveCounts {
    pub fn new(labels: &[bool], scores: &[f64]) -> Result<Self> {
        check_inputs(labels, scores)?;
        let mut pairs: Vec<(f64, bool)> =
            scores.iter().copied().zip(labels.iter().copied()).collect();
        // Order inside a run of tied scores is irrelevant: a run becomes a single point.
        pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut thresholds = Vec::new();
        let mut tps = Vec::new();
        let mut fps = Vec::new();
        let (mut tp, mut fp) = (0u64, 0u64);
        let mut iter = pairs.iter().peekable();
        while let Some(&(score, label)) = iter.next() {
            if label {
                tp += 1;
            } else {
                fp += 1;
            }
            // `==` also merges 0.0 and -0.0, as numpy's `diff` does.
            let run_continues = iter.peek().is_some_and(|next| next.0 == score);
            if !run_continues {
                thresholds.push(score);
                tps.push(tp);
                fps.push(fp);
            }
        }
        Ok(Self { thresholds, tps, fps })
    }

    pub fn positives(&self) -> u64 {
        self.tps.last().copied().unwrap_or(0)
    }

    pub fn negatives(&self) -> u64 {
        self.fps.last().copied().unwrap_or(0)
    }

    fn require_both_classes(&self, metric: &'static str) -> Result<(u64, u64)> {
        let (p, n) = (self.positives(), self.negatives());
        if p == 0 || n == 0 {
            return Err(Error::SingleClass { metric });
        }
        Ok((p, n))
    }
}

/// A receiver operating characteristic curve.
///
/// Points are ordered by decreasing threshold, starting at `(0, 0)` with threshold `+inf`
/// (scikit-learn >= 1.3 uses `inf` there too) and ending at `(1, 1)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RocCurve {
    /// False positive rates, non-decreasing.
    pub fpr: Vec<f64>,
    /// True positive rates, non-decreasing.
    pub tpr: Vec<f64>,
    /// The score thresholds, decreasing; point `k` predicts positive when `score >= thresholds[k]`.
    pub thresholds: Vec<f64>,
}

impl RocCurve {
    /// Computes the full curve: one point per distinct score plus the `(0, 0)` start.
    ///
    /// Equals scikit-learn's `roc_curve(..., drop_intermediate=False)`; tied scores form one
    /// point, so ties show up as diagonal segments.
    ///
    /// # Errors
    /// Input errors, or [`Error::SingleClass`] when the labels hold one class only.
    pub fn new(labels: &[bool], scores: &[f64]) -> Result<Self> {
        Self::from_counts(&CurveCounts::new(labels, scores)?, false)
    }

    /// Computes the curve without the points that lie inside a straight segment, which keeps
    /// its shape and area with fewer points (scikit-learn's default, `drop_intermediate=True`).
    ///
    /// # Errors
    /// As [`RocCurve::new`].
    pub fn simplified(labels: &[bool], scores: &[f64]) -> Result<Self> {
        Self::from_counts(&CurveCounts::new(labels, scores)?, true)
    }

    fn from_counts(counts: &CurveCounts, drop_intermediate: bool) -> Result<Self> {
        let (p, n) = counts.require_both_classes("ROC curve")?;
        let len = counts.thresholds.len();
        let mut curve = Self {
            fpr: Vec::with_capacity(len + 1),
            tpr: Vec::with_capacity(len + 1),
            thresholds: Vec::with_capacity(len + 1),
        };
        curve.fpr.push(0.0);
        curve.tpr.push(0.0);
        curve.thresholds.push(f64::INFINITY);
        for k in 0..len {
            // Collinearity is judged on the integer counts (their second difference), as
            // scikit-learn does, so rounding of the rates cannot keep or drop a point.
            let keep = !drop_intermediate
                || k == 0
                || k + 1 == len
                || match (counts.fps.get(k - 1..=k + 1), counts.tps.get(k - 1..=k + 1)) {
                    (Some(&[f0, f1, f2]), Some(&[t0, t1, t2])) => {
                        f2 - f1 != f1 - f0 || t2 - t1 != t1 - t0
                    }
                    _ => true,
                };
            if let (true, Some(&t), Some(&tp), Some(&fp)) =
                (keep, counts.thresholds.get(k), counts.tps.get(k), counts.fps.get(k))
            {
                curve.fpr.push(fp as f64 / n as f64);
                curve.tpr.push(tp as f64 / p as f64);
                curve.thresholds.push(t);
            }
        }
        Ok(curve)
    }

    /// The area under the curve by the trapezoidal rule.
    pub fn auc(&self) -> f64 {
        trapezoid(&self.fpr, &self.tpr)
    }
}

/// The area under a piecewise linear curve through `(x[k], y[k])`.
pub(crate) fn trapezoid(x: &[f64], y: &[f64]) -> f64 {
    x.windows(2)
        .zip(y.windows(2))
        .map(|(xs, ys)| match (xs, ys) {
            (&[x0, x1], &[y0, y1]) => (x1 - x0) * (y0 + y1) / 2.0,
            _ => 0.0,
        })
        .sum()
}

/// The area under the ROC curve, with tied scores counted as half (scikit-learn's
/// `roc_auc_score`, equal to the Mann-Whitney U statistic divided by `P * N`).
///
/// O(n log n): one sort, then the trapezoid area is accumulated in exact integer arithmetic
/// and divided once, so the result is the correctly rounded AUC.
///
/// # Errors
/// Input errors, or [`Error::SingleClass`] when the labels hold one class only.
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> Result<f64> {
    let counts = CurveCounts::new(labels, scores)?;
    let (p, n) = counts.require_both_classes("ROC-AUC")?;
    // Twice the area in units of (1/N) x (1/P): sum of dfp * (tp_prev + tp_cur).
    let mut twice_area: u128 = 0;
    let (mut prev_tp, mut prev_fp) = (0u64, 0u64);
    for (&tp, &fp) in counts.tps.iter().zip(&counts.fps) {
        twice_area += u128::from(fp - prev_fp) * u128::from(prev_tp + tp);
        prev_tp = tp;
        prev_fp = fp;
    }
    let den = 2 * u128::from(p) * u128::from(n);
    Ok(twice_area as f64 / den as f64)
}

/// A precision-recall curve in scikit-learn's layout.
///
/// Thresholds increase; `precision[k]` and `recall[k]` are those of `score >= thresholds[k]`;
/// the arrays carry one extra final point `(precision 1, recall 0)` with no threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrCurve {
    /// Precision per point.
    pub precision: Vec<f64>,
    /// Recall per point, non-increasing.
    pub recall: Vec<f64>,
    /// Score thresholds, increasing; one fewer than the points.
    pub thresholds: Vec<f64>,
}

impl PrCurve {
    /// Computes the curve at every distinct score (scikit-learn's `precision_recall_curve`).
    ///
    /// # Errors
    /// Input errors, or [`Error::Undefined`] without positive labels (recall is undefined).
    pub fn new(labels: &[bool], scores: &[f64]) -> Result<Self> {
        let counts = CurveCounts::new(labels, scores)?;
        let p = counts.positives();
        if p == 0 {
            return Err(Error::Undefined {
                metric: "precision-recall curve",
                reason: "no positive labels",
            });
        }
        let len = counts.thresholds.len();
        let mut precision = Vec::with_capacity(len + 1);
        let mut recall = Vec::with_capacity(len + 1);
        let mut thresholds = Vec::with_capacity(len);
        for ((&t, &tp), &fp) in counts.thresholds.iter().zip(&counts.tps).zip(&counts.fps).rev() {
            // tp + fp >= 1 at every point: each threshold is some sample's score.
            precision.push(tp as f64 / (tp + fp) as f64);
            recall.push(tp as f64 / p as f64);
            thresholds.push(t);
        }
        precision.push(1.0);
        recall.push(0.0);
        Ok(Self { precision, recall, thresholds })
    }
}

/// Average precision: `sum_k (R_k - R_{k-1}) P_k` over thresholds from high to low, without
/// interpolation (scikit-learn's `average_precision_score`).
///
/// # Errors
/// Input errors, or [`Error::Undefined`] without positive labels.
pub fn average_precision(labels: &[bool], scores: &[f64]) -> Result<f64> {
    let counts = CurveCounts::new(labels, scores)?;
    let p = counts.positives();
    if p == 0 {
        return Err(Error::Undefined { metric: "average precision", reason: "no positive labels" });
    }
    let mut sum = 0.0;
    let mut prev_tp = 0u64;
    for (&tp, &fp) in counts.tps.iter().zip(&counts.fps) {
        if tp > prev_tp {
            sum += (tp - prev_tp) as f64 * (tp as f64 / (tp + fp) as f64);
        }
        prev_tp = tp;
    }
    Ok(sum / p as f64)
}

/// The clipping used by [`log_loss`]: `f64::EPSILON` (2.22e-16), the value scikit-learn
/// >= 1.5 uses for float64 input (`eps="auto"`).
pub const LOG_LOSS_EPS: f64 = f64::EPSILON;

/// The clipping of the Kaggle Deepfake Detection Challenge scorer, `1e-15`.
pub const DFDC_LOG_LOSS_EPS: f64 = 1e-15;

/// Mean binary cross-entropy of probabilities, clipped to `[eps, 1 - eps]` with
/// [`LOG_LOSS_EPS`] so that a confident mistake costs a large but finite amount.
///
/// # Errors
/// Input errors, or [`Error::InvalidValue`] for a probability outside `[0, 1]`.
pub fn log_loss(labels: &[bool], probs: &[f64]) -> Result<f64> {
    log_loss_with_eps(labels, probs, LOG_LOSS_EPS)
}

/// [`log_loss`] with an explicit clipping `eps` (use [`DFDC_LOG_LOSS_EPS`] to reproduce the
/// DFDC leaderboard).
///
/// # Errors
/// As [`log_loss`], plus [`Error::InvalidArgument`] unless `0 < eps < 0.5`.
pub fn log_loss_with_eps(labels: &[bool], probs: &[f64], eps: f64) -> Result<f64> {
    check_probabilities(labels, probs)?;
    if !(eps > 0.0 && eps < 0.5) {
        return Err(Error::InvalidArgument {
            name: "eps",
            reason: format!("{eps} is not in (0, 0.5)"),
        });
    }
    let mut sum = 0.0;
    for (&y, &p) in labels.iter().zip(probs) {
        // Take 1 - p first and clip afterwards, in the order scikit-learn does.
        let q = if y { p } else { 1.0 - p };
        sum -= q.clamp(eps, 1.0 - eps).ln();
    }
    Ok(sum / labels.len() as f64)
}

/// The equal error rate: where the false positive rate equals the false negative rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Eer {
    /// The common error rate at the crossing, linearly interpolated on the ROC curve.
    pub rate: f64,
    /// The highest score threshold whose false negative rate does not exceed its false
    /// positive rate (the ROC point at or just after the crossing).
    pub threshold: f64,
}

/// The equal error rate, from the intersection of the (piecewise linear) ROC curve with the
/// line `tpr = 1 - fpr`.
///
/// # Errors
/// Input errors, or [`Error::SingleClass`].
pub fn eer(labels: &[bool], scores: &[f64]) -> Result<Eer> {
    let roc = RocCurve::new(labels, scores)?;
    // d = fpr - fnr goes from -1 at (0, 0) to +1 at (1, 1) and never decreases.
    let mut prev: Option<(f64, f64)> = None;
    for ((&fpr, &tpr), &threshold) in roc.fpr.iter().zip(&roc.tpr).zip(&roc.thresholds) {
        let fnr = 1.0 - tpr;
        let d = fpr - fnr;
        if d >= 0.0 {
            let rate = match prev {
                Some((prev_fpr, prev_d)) if d > prev_d => {
                    let t = -prev_d / (d - prev_d);
                    prev_fpr + t * (fpr - prev_fpr)
                }
                _ => (fpr + fnr) / 2.0,
            };
            return Ok(Eer { rate, threshold });
        }
        prev = Some((fpr, d));
    }
    Err(Error::Undefined { metric: "EER", reason: "the ROC curve never crosses fpr = fnr" })
}

/// A threshold chosen to maximise some criterion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdChoice {
    /// Predict positive when `score >= threshold`.
    pub threshold: f64,
    /// The criterion's value at that threshold.
    pub value: f64,
}

/// The threshold maximising `criterion(tp, fp, p, n)` over all distinct scores; ties go to the
/// highest threshold.
fn best_threshold<F>(counts: &CurveCounts, p: u64, n: u64, criterion: F) -> Option<ThresholdChoice>
where
    F: Fn(u64, u64, u64, u64) -> f64,
{
    let mut best: Option<ThresholdChoice> = None;
    for ((&t, &tp), &fp) in counts.thresholds.iter().zip(&counts.tps).zip(&counts.fps) {
        let value = criterion(tp, fp, p, n);
        if best.is_none_or(|b| value > b.value) {
            best = Some(ThresholdChoice { threshold: t, value });
        }
    }
    best
}

/// The score threshold with the highest F1 (highest threshold among equals).
///
/// # Errors
/// Input errors, or [`Error::Undefined`] without positive labels.
pub fn best_f1_threshold(labels: &[bool], scores: &[f64]) -> Result<ThresholdChoice> {
    let counts = CurveCounts::new(labels, scores)?;
    let (p, n) = (counts.positives(), counts.negatives());
    if p == 0 {
        return Err(Error::Undefined { metric: "best F1 threshold", reason: "no positive labels" });
    }
    best_threshold(&counts, p, n, |tp, fp, p, _| 2.0 * tp as f64 / (tp + fp + p) as f64)
        .ok_or(Error::Empty { what: "labels" })
}

/// The score threshold maximising Youden's J = TPR - FPR (highest threshold among equals).
///
/// # Errors
/// Input errors, or [`Error::SingleClass`].
pub fn best_youden_threshold(labels: &[bool], scores: &[f64]) -> Result<ThresholdChoice> {
    let counts = CurveCounts::new(labels, scores)?;
    let (p, n) = counts.require_both_classes("Youden's J")?;
    best_threshold(&counts, p, n, |tp, fp, p, n| tp as f64 / p as f64 - fp as f64 / n as f64)
        .ok_or(Error::Empty { what: "labels" })
}
