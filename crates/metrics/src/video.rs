//! Video-level aggregation: frame scores are pooled per video before computing metrics.

use std::collections::HashMap;

use serde::Serialize;

use crate::binary::check_inputs;
use crate::{Error, Result};

/// How the frame scores of one video become the video's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Aggregation {
    /// The mean frame score (the default).
    #[default]
    Mean,
    /// The median frame score (the mean of the two middle ones for an even count).
    Median,
    /// The highest frame score: one convincing fake frame flags the video.
    Max,
}

/// Per-video labels and scores, in order of each video's first frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoScores {
    /// The video ids.
    pub ids: Vec<String>,
    /// The video labels.
    pub labels: Vec<bool>,
    /// The aggregated scores.
    pub scores: Vec<f64>,
    /// The number of frames per video.
    pub frames: Vec<usize>,
}

/// Groups frames by video id and aggregates their scores.
///
/// # Errors
/// Input errors, [`Error::LengthMismatch`] when `video_ids` is not parallel to the labels, or
/// [`Error::InconsistentLabels`] when frames of one video carry different labels.
pub fn aggregate_by_video<S: AsRef<str>>(
    video_ids: &[S],
    labels: &[bool],
    scores: &[f64],
    aggregation: Aggregation,
) -> Result<VideoScores> {
    check_inputs(labels, scores)?;
    if video_ids.len() != labels.len() {
        return Err(Error::LengthMismatch {
            what: "video ids",
            expected: labels.len(),
            got: video_ids.len(),
        });
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut ids: Vec<String> = Vec::new();
    let mut video_labels: Vec<bool> = Vec::new();
    let mut frame_scores: Vec<Vec<f64>> = Vec::new();
    for ((id, &y), &s) in video_ids.iter().zip(labels).zip(scores) {
        let id = id.as_ref();
        let slot = *index.entry(id).or_insert_with(|| {
            ids.push(id.to_string());
            video_labels.push(y);
            frame_scores.push(Vec::new());
            ids.len() - 1
        });
        if video_labels.get(slot) != Some(&y) {
            return Err(Error::InconsistentLabels { video: id.to_string() });
        }
        if let Some(v) = frame_scores.get_mut(slot) {
            v.push(s);
        }
    }
    let frames = frame_scores.iter().map(Vec::len).collect();
    let scores = frame_scores.into_iter().map(|mut v| aggregate(&mut v, aggregation)).collect();
    Ok(VideoScores { ids, labels: video_labels, scores, frames })
}

/// Aggregates a non-empty list of finite scores (reordering it for the median).
fn aggregate(values: &mut [f64], aggregation: Aggregation) -> f64 {
    match aggregation {
        Aggregation::Mean => values.iter().sum::<f64>() / values.len().max(1) as f64,
        Aggregation::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregation::Median => {
            values.sort_unstable_by(f64::total_cmp);
            let mid = values.len() / 2;
            match (
                values.len() % 2,
                values.get(mid),
                mid.checked_sub(1).and_then(|m| values.get(m)),
            ) {
                (1, Some(&m), _) => m,
                (_, Some(&hi), Some(&lo)) => (lo + hi) / 2.0,
                _ => 0.0,
            }
        }
    }
}
