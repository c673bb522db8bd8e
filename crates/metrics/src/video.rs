//! Video-level aggregation: frame scores are pooled per video before computing metrics.

use std::collections::HashMap;

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::binary::check_inputs;
use crate::{Error, Result};

/// How the frame scores of one video become the video's score: the one aggregation of the
/// workspace, used by [`aggregate_by_video`] for metrics and by the detector for verdicts.
///
/// ```
/// use deeprecog_metrics::video::Aggregation;
///
/// // Half the frames are obviously fake, the rest look clean: the mean sits on the fence,
/// // the DFDC winner's confident rule does not.
/// let frames = [0.95, 0.9, 0.97, 0.92, 0.9, 0.05, 0.05, 0.05, 0.05, 0.05];
/// let mean = Aggregation::Mean.aggregate(&frames).unwrap();
/// let confident = Aggregation::confident().aggregate(&frames).unwrap();
/// assert!(mean < 0.5 && confident > 0.9);
/// assert_eq!("topk:2".parse::<Aggregation>()?, Aggregation::TopKMean(2));
/// # Ok::<(), deeprecog_metrics::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum Aggregation {
    /// The mean frame score (the default).
    #[default]
    Mean,
    /// The median frame score (the mean of the two middle ones for an even count): robust to
    /// a few failed face crops.
    Median,
    /// The highest frame score: one convincing fake frame flags the video.
    Max,
    /// The mean of the `k` highest frame scores (all of them when there are fewer; `k = 0`
    /// counts as 1).
    TopKMean(usize),
    /// The DFDC winner's rule: when more than `fake_share` of frames exceed `high`, the mean of
    /// those frames; else when more than `real_share` of frames are below `low`, the mean of
    /// those; else the mean of all frames.
    Confident {
        /// Score above which a frame counts as confidently fake.
        high: f64,
        /// Share of confident-fake frames that makes the video fake.
        fake_share: f64,
        /// Score below which a frame counts as confidently real.
        low: f64,
        /// Share of confident-real frames that makes the video real.
        real_share: f64,
    },
}

impl Aggregation {
    /// [`Aggregation::Confident`] with the DFDC winner's thresholds: 0.8 / 40% and 0.2 / 90%.
    pub fn confident() -> Aggregation {
        Aggregation::Confident { high: 0.8, fake_share: 0.4, low: 0.2, real_share: 0.9 }
    }

    /// The video's score from its frame scores, or `None` when there are no finite frame
    /// scores (a video where no face was found has no verdict rather than a made-up one).
    /// Non-finite frame scores are ignored.
    pub fn aggregate(&self, frames: &[f64]) -> Option<f64> {
        let mut s: Vec<f64> = frames.iter().copied().filter(|v| v.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        s.sort_unstable_by(f64::total_cmp);
        let n = s.len();
        let top = |k: usize| s.get(n - k.clamp(1, n)..).unwrap_or(&[]);
        Some(match *self {
            Aggregation::Mean => mean(&s),
            Aggregation::Median => {
                let mid = n / 2;
                match (n % 2, s.get(mid), mid.checked_sub(1).and_then(|m| s.get(m))) {
                    (1, Some(&m), _) => m,
                    (_, Some(&hi), Some(&lo)) => (lo + hi) / 2.0,
                    _ => return None,
                }
            }
            Aggregation::Max => *s.last()?,
            Aggregation::TopKMean(k) => mean(top(k)),
            Aggregation::Confident { high, fake_share, low, real_share } => {
                let fakes: Vec<f64> = s.iter().copied().filter(|&x| x > high).collect();
                let reals: Vec<f64> = s.iter().copied().filter(|&x| x < low).collect();
                if fakes.len() as f64 > fake_share * n as f64 {
                    mean(&fakes)
                } else if reals.len() as f64 > real_share * n as f64 {
                    mean(&reals)
                } else {
                    mean(&s)
                }
            }
        })
    }
}

impl FromStr for Aggregation {
    type Err = Error;

    /// Parses `mean`, `median`, `max`, `topk:K` (K at least 1) or `confident` (the DFDC
    /// thresholds), in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mean" => Ok(Aggregation::Mean),
            "median" => Ok(Aggregation::Median),
            "max" => Ok(Aggregation::Max),
            "confident" => Ok(Aggregation::confident()),
            other => other
                .strip_prefix("topk:")
                .and_then(|k| k.parse::<usize>().ok())
                .filter(|&k| k > 0)
                .map(Aggregation::TopKMean)
                .ok_or_else(|| Error::InvalidArgument {
                    name: "aggregation",
                    reason: format!("unknown {s:?} (mean, median, max, topk:K, confident)"),
                }),
        }
    }
}

impl std::fmt::Display for Aggregation {
    /// The spelling [`FromStr`] reads (`confident` with other thresholds spells them out).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Aggregation::Mean => f.write_str("mean"),
            Aggregation::Median => f.write_str("median"),
            Aggregation::Max => f.write_str("max"),
            Aggregation::TopKMean(k) => write!(f, "topk:{k}"),
            c if *c == Aggregation::confident() => f.write_str("confident"),
            Aggregation::Confident { high, fake_share, low, real_share } => {
                write!(f, "confident(high {high}, fake share {fake_share}, low {low}, real share {real_share})")
            }
        }
    }
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
    // Every video has at least one frame and every score is finite (checked above).
    let scores =
        frame_scores.iter().map(|v| aggregation.aggregate(v).unwrap_or(f64::NAN)).collect();
    Ok(VideoScores { ids, labels: video_labels, scores, frames })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule() {
        let f = [0.1, 0.9, 0.5, 0.3];
        assert!((Aggregation::Mean.aggregate(&f).unwrap() - 0.45).abs() < 1e-12);
        assert!((Aggregation::Median.aggregate(&f).unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(Aggregation::Median.aggregate(&[0.2, 0.7, 0.1]), Some(0.2));
        assert_eq!(Aggregation::Max.aggregate(&f), Some(0.9));
        assert!((Aggregation::TopKMean(2).aggregate(&f).unwrap() - 0.7).abs() < 1e-12);
        assert!((Aggregation::TopKMean(99).aggregate(&f).unwrap() - 0.45).abs() < 1e-12);
        assert_eq!(Aggregation::TopKMean(0).aggregate(&f), Some(0.9));
        assert_eq!(Aggregation::Mean.aggregate(&[]), None);
        assert_eq!(Aggregation::Mean.aggregate(&[f64::NAN]), None);
        assert_eq!(Aggregation::Max.aggregate(&[f64::NAN, 0.3, f64::INFINITY]), Some(0.3));
        assert_eq!(Aggregation::default(), Aggregation::Mean);
    }

    #[test]
    fn confident_rule_branches() {
        let c = Aggregation::confident();
        // 5 of 10 above 0.8: mean of those.
        let fake = [0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1];
        assert!((c.aggregate(&fake).unwrap() - 0.9).abs() < 1e-12);
        // All below 0.2: mean of those.
        let real = [0.1; 10];
        assert!((c.aggregate(&real).unwrap() - 0.1).abs() < 1e-12);
        // Neither: plain mean.
        let unsure = [0.5, 0.6, 0.1, 0.85];
        assert!((c.aggregate(&unsure).unwrap() - 0.5125).abs() < 1e-12);
    }

    #[test]
    fn parsing() {
        assert_eq!("topk:3".parse::<Aggregation>().unwrap(), Aggregation::TopKMean(3));
        assert_eq!(" Confident ".parse::<Aggregation>().unwrap(), Aggregation::confident());
        assert_eq!("MEDIAN".parse::<Aggregation>().unwrap(), Aggregation::Median);
        assert!("topk:0".parse::<Aggregation>().is_err());
        let err = "vote".parse::<Aggregation>().unwrap_err().to_string();
        assert!(err.contains("vote") && err.contains("topk:K"), "{err}");
        for rule in [
            Aggregation::Mean,
            Aggregation::Median,
            Aggregation::Max,
            Aggregation::TopKMean(5),
            Aggregation::confident(),
        ] {
            assert_eq!(rule.to_string().parse::<Aggregation>().unwrap(), rule);
        }
    }

    #[test]
    fn per_video_uses_the_same_rules() {
        let ids = ["a", "a", "a", "b", "b"];
        let labels = [true, true, true, false, false];
        let scores = [0.9, 0.85, 0.1, 0.3, 0.2];
        let top = aggregate_by_video(&ids, &labels, &scores, Aggregation::TopKMean(2)).unwrap();
        assert_eq!(top.ids, ["a", "b"]);
        assert!((top.scores[0] - 0.875).abs() < 1e-12 && (top.scores[1] - 0.25).abs() < 1e-12);
        let c = aggregate_by_video(&ids, &labels, &scores, Aggregation::confident()).unwrap();
        assert!((c.scores[0] - 0.875).abs() < 1e-12, "2 of 3 frames above 0.8");
    }
}
