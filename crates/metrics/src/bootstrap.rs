//! Seeded bootstrap confidence intervals for any scalar metric.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::binary::check_inputs;
use crate::subgroup::is_undefined;
use crate::{Error, Result};

/// Settings of a percentile bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BootstrapConfig {
    /// The number of resamples (default 1000).
    pub resamples: usize,
    /// The two-sided confidence level in (0, 1) (default 0.95).
    pub confidence: f64,
    /// The seed of the resampling generator (ChaCha8); equal seeds give equal intervals.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self { resamples: 1000, confidence: 0.95, seed: 0 }
    }
}

/// A point estimate with a percentile bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConfidenceInterval {
    /// The metric on the original sample.
    pub estimate: f64,
    /// The lower bound.
    pub lower: f64,
    /// The upper bound.
    pub upper: f64,
    /// The confidence level.
    pub confidence: f64,
    /// The resamples where the metric was defined (e.g. AUC needs both classes); the interval
    /// comes from these only.
    pub resamples_used: usize,
}

/// The `q`-quantile of sorted values with linear interpolation (numpy's default method).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let pos = q.clamp(0.0, 1.0) * last as f64;
    let lo = pos.floor() as usize;
    let frac = pos - lo as f64;
    let a = *sorted.get(lo)?;
    let b = sorted.get(lo + 1).copied().unwrap_or(a);
    Some(a + frac * (b - a))
}

/// Bootstraps `metric` over `n` samples: `metric` receives the resampled indices (drawn with
/// replacement) and returns the statistic.
///
/// This is the general form; [`bootstrap_ci`] covers the labels-and-scores case.
///
/// # Errors
/// [`Error::Empty`] when `n` is zero, [`Error::InvalidArgument`] for a bad config, the
/// metric's error on the full sample, or [`Error::Undefined`] when it is undefined on every
/// resample.
pub fn bootstrap_indices<F>(
    n: usize,
    config: BootstrapConfig,
    metric: F,
) -> Result<ConfidenceInterval>
where
    F: Fn(&[usize]) -> Result<f64>,
{
    if n == 0 {
        return Err(Error::Empty { what: "samples" });
    }
    if config.resamples == 0 {
        return Err(Error::InvalidArgument {
            name: "resamples",
            reason: "must be at least 1".into(),
        });
    }
    if !(config.confidence > 0.0 && config.confidence < 1.0) {
        return Err(Error::InvalidArgument {
            name: "confidence",
            reason: format!("{} is not in (0, 1)", config.confidence),
        });
    }
    let all: Vec<usize> = (0..n).collect();
    let estimate = metric(&all)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut values = Vec::with_capacity(config.resamples);
    let mut indices = vec![0usize; n];
    for _ in 0..config.resamples {
        for slot in indices.iter_mut() {
            *slot = rng.random_range(0..n);
        }
        match metric(&indices) {
            Ok(v) if v.is_finite() => values.push(v),
            Ok(_) => {}
            Err(e) if is_undefined(&e) => {}
            Err(e) => return Err(e),
        }
    }
    values.sort_unstable_by(f64::total_cmp);
    let alpha = (1.0 - config.confidence) / 2.0;
    match (quantile(&values, alpha), quantile(&values, 1.0 - alpha)) {
        (Some(lower), Some(upper)) => Ok(ConfidenceInterval {
            estimate,
            lower,
            upper,
            confidence: config.confidence,
            resamples_used: values.len(),
        }),
        _ => Err(Error::Undefined {
            metric: "bootstrap interval",
            reason: "the metric is undefined on every resample",
        }),
    }
}

/// Bootstraps a metric of labels and scores, e.g.
/// `bootstrap_ci(&y, &s, cfg, deeprecog_metrics::binary::roc_auc)`.
///
/// Resamples where the metric is undefined (one class only) are skipped and counted out of
/// [`ConfidenceInterval::resamples_used`].
///
/// # Errors
/// Input errors and those of [`bootstrap_indices`].
pub fn bootstrap_ci<F>(
    labels: &[bool],
    scores: &[f64],
    config: BootstrapConfig,
    metric: F,
) -> Result<ConfidenceInterval>
where
    F: Fn(&[bool], &[f64]) -> Result<f64>,
{
    check_inputs(labels, scores)?;
    // The metric closure is `Fn`, so the reused resample buffers live in a RefCell.
    let buffers = std::cell::RefCell::new((
        Vec::with_capacity(labels.len()),
        Vec::with_capacity(labels.len()),
    ));
    bootstrap_indices(labels.len(), config, |idx| {
        let mut guard = buffers.borrow_mut();
        let (ys, ss) = &mut *guard;
        ys.clear();
        ss.clear();
        for &i in idx {
            if let (Some(&y), Some(&s)) = (labels.get(i), scores.get(i)) {
                ys.push(y);
                ss.push(s);
            }
        }
        metric(ys, ss)
    })
}
