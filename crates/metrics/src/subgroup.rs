//! Subgroup breakdowns: any metric computed separately per group, with the gap between groups.
//!
//! Example: Attractive accuracy for `Male` versus not-`Male` faces, or detector AUC per
//! compression level.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::binary::check_inputs;
use crate::{Error, Result};

/// A metric's value in one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupValue {
    /// The group's name.
    pub group: String,
    /// The number of samples in the group.
    pub n: usize,
    /// The number of positive labels in the group.
    pub positives: usize,
    /// The metric's value; `None` when the metric is undefined in this group (for example
    /// ROC-AUC in a group holding one class).
    pub value: Option<f64>,
}

/// A metric broken down by group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubgroupReport {
    /// The metric over all samples; `None` when undefined.
    pub overall: Option<f64>,
    /// One entry per group, sorted by group name.
    pub groups: Vec<GroupValue>,
    /// The largest minus the smallest defined group value; `None` with fewer than two.
    pub gap: Option<f64>,
}

/// Whether an error means "undefined for this data" rather than a caller mistake.
pub(crate) fn is_undefined(e: &Error) -> bool {
    matches!(e, Error::SingleClass { .. } | Error::Undefined { .. } | Error::Empty { .. })
}

/// Maps "undefined" errors to `None` and keeps the others.
pub(crate) fn defined(r: Result<f64>) -> Result<Option<f64>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_undefined(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Computes `metric(labels, scores)` overall and per group.
///
/// `metric` is any function of labels and scores, e.g.
/// `|y: &[bool], s: &[f64]| deeprecog_metrics::binary::accuracy(y, s, 0.5)`.
///
/// # Errors
/// Input errors, [`Error::LengthMismatch`] when `groups` is not parallel to the labels, and
/// any error of `metric` other than an undefined-metric one.
pub fn subgroup_breakdown<S, F>(
    groups: &[S],
    labels: &[bool],
    scores: &[f64],
    metric: F,
) -> Result<SubgroupReport>
where
    S: AsRef<str>,
    F: Fn(&[bool], &[f64]) -> Result<f64>,
{
    check_inputs(labels, scores)?;
    if groups.len() != labels.len() {
        return Err(Error::LengthMismatch {
            what: "groups",
            expected: labels.len(),
            got: groups.len(),
        });
    }
    let mut members: BTreeMap<&str, (Vec<bool>, Vec<f64>)> = BTreeMap::new();
    for ((g, &y), &s) in groups.iter().zip(labels).zip(scores) {
        let entry = members.entry(g.as_ref()).or_default();
        entry.0.push(y);
        entry.1.push(s);
    }
    let overall = defined(metric(labels, scores))?;
    let mut out = Vec::with_capacity(members.len());
    for (group, (ys, ss)) in &members {
        out.push(GroupValue {
            group: group.to_string(),
            n: ys.len(),
            positives: ys.iter().filter(|&&y| y).count(),
            value: defined(metric(ys, ss))?,
        });
    }
    let values: Vec<f64> = out.iter().filter_map(|g| g.value).collect();
    let gap = (values.len() >= 2).then(|| {
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        max - min
    });
    Ok(SubgroupReport { overall, groups: out, gap })
}
