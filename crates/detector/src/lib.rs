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

/// Errors of the detector crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A shared model piece failed.
    #[error(transparent)]
    Nn(#[from] deeprecog_nn::Error),
    /// A metric or an aggregation failed (an unknown aggregation name, say).
    #[error(transparent)]
    Metrics(#[from] deeprecog_metrics::Error),
}

/// The detector crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How per-frame fake probabilities of one video become the video's probability: the
/// metrics crate's aggregation (mean, median, max, top-k mean, the DFDC winner's confident
/// rule), re-exported so that the verdicts and the video-level metrics use the same rules.
pub use deeprecog_metrics::video::Aggregation;

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules are tested in the metrics crate; here, that names parse through the
    /// re-export and a bad one is a detector error.
    #[test]
    fn unknown_names_are_detector_errors() {
        fn parse(s: &str) -> Result<Aggregation> {
            Ok(s.parse::<Aggregation>()?)
        }
        assert_eq!(parse("topk:3").unwrap(), Aggregation::TopKMean(3));
        assert_eq!(parse("Confident").unwrap(), Aggregation::confident());
        let err = parse("vote").unwrap_err();
        assert!(matches!(err, Error::Metrics(_)) && err.to_string().contains("vote"), "{err}");
        assert!(parse("topk:0").is_err());
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
