//! Deepfake detection: turning per-frame fake probabilities into one verdict per video, and
//! (as the crate grows) face detection, face crops and image / video detectors.
//!
//! ```
//! use deeprecog_detector::Aggregation;
//!
//! // Half the frames are obviously fake, the rest look clean: the mean sits on the fence,
//! // the DFDC winner's confident rule does not.
//! let frames = [0.95, 0.9, 0.97, 0.92, 0.9, 0.05, 0.05, 0.05, 0.05, 0.05];
//! let mean = Aggregation::Mean.aggregate(&frames).unwrap();
//! let confident = Aggregation::confident().aggregate(&frames).unwrap();
//! assert!(mean < 0.5 && confident > 0.9);
//! ```

use std::str::FromStr;

/// Errors of the detector crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A shared model piece failed.
    #[error(transparent)]
    Nn(#[from] deeprecog_nn::Error),
    /// An aggregation name that is not known.
    #[error("unknown aggregation {0:?} (mean, median, max, topk:K, confident)")]
    UnknownAggregation(String),
}

/// The detector crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How per-frame fake probabilities of one video become the video's probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    /// Mean of all frames (the common default).
    Mean,
    /// Median of all frames (robust to a few failed face crops).
    Median,
    /// Highest frame score (one obvious frame decides).
    Max,
    /// Mean of the `k` highest frame scores.
    TopKMean(usize),
    /// The DFDC winner's rule: when more than `fake_share` of frames exceed `high`, the mean of
    /// those frames; else when more than `real_share` of frames are below `low`, the mean of
    /// those; else the mean of all frames.
    Confident {
        /// Score above which a frame counts as confidently fake.
        high: f32,
        /// Share of confident-fake frames that makes the video fake.
        fake_share: f32,
        /// Score below which a frame counts as confidently real.
        low: f32,
        /// Share of confident-real frames that makes the video real.
        real_share: f32,
    },
}

impl Aggregation {
    /// [`Aggregation::Confident`] with the DFDC winner's thresholds: 0.8 / 40% and 0.2 / 90%.
    pub fn confident() -> Aggregation {
        Aggregation::Confident { high: 0.8, fake_share: 0.4, low: 0.2, real_share: 0.9 }
    }

    /// The video's score, or `None` when there are no finite frame scores (a video where no
    /// face was found has no verdict rather than a made-up one). NaN frame scores are ignored.
    pub fn aggregate(&self, frames: &[f32]) -> Option<f32> {
        let mut s: Vec<f32> = frames.iter().copied().filter(|v| v.is_finite()).collect();
        if s.is_empty() {
            return None;
        }
        let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() as f32 / v.len() as f32;
        s.sort_by(f32::total_cmp);
        let n = s.len();
        Some(match *self {
            Aggregation::Mean => mean(&s),
            Aggregation::Median => {
                let mid = n / 2;
                if n % 2 == 1 {
                    s[mid]
                } else {
                    (s[mid - 1] + s[mid]) / 2.0
                }
            }
            Aggregation::Max => s[n - 1],
            Aggregation::TopKMean(k) => mean(&s[n - k.clamp(1, n)..]),
            Aggregation::Confident { high, fake_share, low, real_share } => {
                let fakes: Vec<f32> = s.iter().copied().filter(|&x| x > high).collect();
                let reals: Vec<f32> = s.iter().copied().filter(|&x| x < low).collect();
                if fakes.len() as f32 > fake_share * n as f32 {
                    mean(&fakes)
                } else if reals.len() as f32 > real_share * n as f32 {
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

    /// Parses `mean`, `median`, `max`, `topk:K` or `confident`.
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
                .ok_or_else(|| Error::UnknownAggregation(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule() {
        let f = [0.1f32, 0.9, 0.5, 0.3];
        assert!((Aggregation::Mean.aggregate(&f).unwrap() - 0.45).abs() < 1e-6);
        assert!((Aggregation::Median.aggregate(&f).unwrap() - 0.4).abs() < 1e-6);
        assert_eq!(Aggregation::Median.aggregate(&[0.2, 0.7, 0.1]), Some(0.2));
        assert_eq!(Aggregation::Max.aggregate(&f), Some(0.9));
        assert!((Aggregation::TopKMean(2).aggregate(&f).unwrap() - 0.7).abs() < 1e-6);
        assert!((Aggregation::TopKMean(99).aggregate(&f).unwrap() - 0.45).abs() < 1e-6);
        assert_eq!(Aggregation::Mean.aggregate(&[]), None);
        assert_eq!(Aggregation::Mean.aggregate(&[f32::NAN]), None);
        assert_eq!(Aggregation::Max.aggregate(&[f32::NAN, 0.3]), Some(0.3));
    }

    #[test]
    fn confident_rule_branches() {
        let c = Aggregation::confident();
        // 5 of 10 above 0.8: mean of those.
        let fake = [0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1];
        assert!((c.aggregate(&fake).unwrap() - 0.9).abs() < 1e-6);
        // All below 0.2: mean of those.
        let real = [0.1f32; 10];
        assert!((c.aggregate(&real).unwrap() - 0.1).abs() < 1e-6);
        // Neither: plain mean.
        let unsure = [0.5, 0.6, 0.1, 0.85];
        assert!((c.aggregate(&unsure).unwrap() - 0.5125).abs() < 1e-6);
    }

    #[test]
    fn parsing() {
        assert_eq!("topk:3".parse::<Aggregation>().unwrap(), Aggregation::TopKMean(3));
        assert_eq!("Confident".parse::<Aggregation>().unwrap(), Aggregation::confident());
        assert!("topk:0".parse::<Aggregation>().is_err());
        assert!("vote".parse::<Aggregation>().is_err());
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
