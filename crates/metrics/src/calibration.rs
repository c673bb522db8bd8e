//! Calibration: expected calibration error, reliability-diagram data and temperature scaling.
//!
//! Binning follows scikit-learn's `calibration_curve(strategy="uniform")` and Guo et al.
//! (2017): `B` equal-width bins on the positive-class probability with edges
//! `e_k = k * (1 / B)` (computed like `numpy.linspace(0, 1, B + 1)`, last edge exactly 1);
//! bin `k` holds `(e_k, e_{k+1}]`, and the first bin also holds `p = 0`. A probability that
//! sits exactly on an edge therefore belongs to the lower bin.

use serde::Serialize;

use crate::binary::{check_inputs, check_probabilities};
use crate::{Error, Result};

/// One equal-width bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// The lower edge of the bin.
    pub lower: f64,
    /// The upper edge of the bin.
    pub upper: f64,
    /// The number of samples in the bin.
    pub count: usize,
    /// The mean predicted probability in the bin; `None` when empty.
    pub mean_predicted: Option<f64>,
    /// The fraction of positive labels in the bin; `None` when empty.
    pub fraction_positive: Option<f64>,
}

/// Reliability-diagram data with the calibration errors it implies.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// All `n_bins` bins, empty ones included, from low to high probability.
    pub bins: Vec<ReliabilityBin>,
    /// Expected calibration error: `sum_k (n_k / n) |fraction_positive_k - mean_predicted_k|`.
    pub ece: f64,
    /// Maximum calibration error: the largest gap over the non-empty bins.
    pub mce: f64,
}

/// The bin edges `0, 1/B, 2/B, ..., 1`, rounded exactly as `numpy.linspace` rounds them, so
/// that probabilities on an edge land in the same bin as in scikit-learn.
fn bin_edges(n_bins: usize) -> Vec<f64> {
    let step = 1.0 / n_bins as f64;
    let mut edges: Vec<f64> = (0..=n_bins).map(|k| k as f64 * step).collect();
    if let Some(last) = edges.last_mut() {
        *last = 1.0;
    }
    edges
}

/// The bin of `p`: how many interior edges lie strictly below it (numpy's
/// `searchsorted(edges[1:-1], p, side="left")`).
fn bin_index(p: f64, interior_edges: &[f64]) -> usize {
    interior_edges.partition_point(|&e| e < p)
}

/// Bins probabilities into `n_bins` equal-width bins and measures the calibration gap.
///
/// # Errors
/// Input errors, [`Error::InvalidValue`] for a probability outside `[0, 1]`, or
/// [`Error::InvalidArgument`] when `n_bins` is zero.
pub fn calibration(labels: &[bool], probs: &[f64], n_bins: usize) -> Result<Calibration> {
    check_probabilities(labels, probs)?;
    if n_bins == 0 {
        return Err(Error::InvalidArgument { name: "n_bins", reason: "must be at least 1".into() });
    }
    let mut counts = vec![0usize; n_bins];
    let mut prob_sums = vec![0.0f64; n_bins];
    let mut positives = vec![0usize; n_bins];
    let edges = bin_edges(n_bins);
    let interior = edges.get(1..n_bins).unwrap_or(&[]);
    for (&y, &p) in labels.iter().zip(probs) {
        let k = bin_index(p, interior);
        if let (Some(c), Some(s), Some(pos)) =
            (counts.get_mut(k), prob_sums.get_mut(k), positives.get_mut(k))
        {
            *c += 1;
            *s += p;
            *pos += usize::from(y);
        }
    }
    let n = labels.len() as f64;
    let mut bins = Vec::with_capacity(n_bins);
    let (mut ece, mut mce) = (0.0f64, 0.0f64);
    for (k, ((&count, &sum), &pos)) in counts.iter().zip(&prob_sums).zip(&positives).enumerate() {
        let (mean_predicted, fraction_positive) = if count > 0 {
            let mean = sum / count as f64;
            let frac = pos as f64 / count as f64;
            let gap = (frac - mean).abs();
            ece += count as f64 / n * gap;
            mce = mce.max(gap);
            (Some(mean), Some(frac))
        } else {
            (None, None)
        };
        bins.push(ReliabilityBin {
            lower: edges.get(k).copied().unwrap_or(0.0),
            upper: edges.get(k + 1).copied().unwrap_or(1.0),
            count,
            mean_predicted,
            fraction_positive,
        });
    }
    Ok(Calibration { bins, ece, mce })
}

/// The expected calibration error with `n_bins` equal-width bins (15 is a common choice).
///
/// # Errors
/// As [`calibration`].
pub fn expected_calibration_error(labels: &[bool], probs: &[f64], n_bins: usize) -> Result<f64> {
    Ok(calibration(labels, probs, n_bins)?.ece)
}

/// A numerically stable logistic function.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Temperature scaling (Guo et al., 2017): `p = sigmoid(logit / T)` with one scalar `T > 0`
/// fitted on held-out logits by minimising the negative log-likelihood.
///
/// `T > 1` softens over-confident outputs; the ranking (and so ROC-AUC) never changes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TemperatureScaling {
    /// The fitted temperature.
    pub temperature: f64,
}

impl TemperatureScaling {
    /// Fits the temperature on validation `logits` (pre-sigmoid scores) and their labels.
    ///
    /// The NLL is convex in `a = 1 / T`; its derivative `sum z (sigmoid(a z) - y)` is
    /// increasing, so the minimum is bracketed and then found by safeguarded Newton steps to
    /// full double precision.
    ///
    /// # Errors
    /// Input errors; [`Error::Undefined`] when no positive temperature minimises the NLL
    /// (the logits are uninformative or anti-correlated with the labels, or separate the
    /// classes perfectly, which drives `T` to zero).
    pub fn fit(labels: &[bool], logits: &[f64]) -> Result<Self> {
        check_inputs(labels, logits)?;
        let gradient = |a: f64| -> (f64, f64) {
            let mut g = 0.0;
            let mut h = 0.0;
            for (&y, &z) in labels.iter().zip(logits) {
                let s = sigmoid(a * z);
                g += z * (s - f64::from(u8::from(y)));
                h += z * z * s * (1.0 - s);
            }
            (g, h)
        };
        let (g0, _) = gradient(0.0);
        if g0 >= 0.0 {
            return Err(Error::Undefined {
                metric: "temperature scaling",
                reason: "the logits do not rank positives above negatives",
            });
        }
        if labels.iter().zip(logits).all(|(&y, &z)| if y { z >= 0.0 } else { z <= 0.0 }) {
            return Err(Error::Undefined {
                metric: "temperature scaling",
                reason: "the logits separate the classes perfectly (temperature -> 0)",
            });
        }
        // Bracket the root of the gradient in (lo, hi].
        let mut lo = 0.0;
        let mut hi = 1.0;
        loop {
            let (g, _) = gradient(hi);
            if g >= 0.0 {
                break;
            }
            lo = hi;
            hi *= 2.0;
            if hi > 1e12 {
                return Err(Error::Undefined {
                    metric: "temperature scaling",
                    reason: "the logits separate the classes perfectly (temperature -> 0)",
                });
            }
        }
        let mut a = (lo + hi) / 2.0;
        for _ in 0..200 {
            let (g, h) = gradient(a);
            if g == 0.0 {
                break;
            }
            if g > 0.0 {
                hi = a;
            } else {
                lo = a;
            }
            let newton = a - g / h;
            // Fall back to bisection whenever Newton leaves the bracket.
            let next = if h > 0.0 && newton > lo && newton < hi { newton } else { (lo + hi) / 2.0 };
            if (next - a).abs() <= 4.0 * f64::EPSILON * a.abs() {
                a = next;
                break;
            }
            a = next;
        }
        Ok(Self { temperature: 1.0 / a })
    }

    /// The calibrated probability of one logit.
    pub fn probability(&self, logit: f64) -> f64 {
        sigmoid(logit / self.temperature)
    }

    /// The calibrated probabilities of many logits.
    pub fn probabilities(&self, logits: &[f64]) -> Vec<f64> {
        logits.iter().map(|&z| self.probability(z)).collect()
    }
}
