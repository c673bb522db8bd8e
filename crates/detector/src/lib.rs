//! Deepfake detection, first half: finding faces in images and videos (MediaPipe BlazeFace
//! ported to candle, SeetaFace through `rustface`, or a whole-image "detector" for inputs that
//! are face crops already), cutting face crops, sampling frames from videos with ffmpeg, reading
//! the DFDC layout and building a face-crop dataset, drawing detections and encoding frames
//! back into a video; and turning per-frame fake probabilities into one verdict per video.
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

use std::path::PathBuf;

pub mod baseline;
pub mod blazeface;
pub mod blend;
pub mod crop;
pub mod dfdc;
pub mod dlib;
pub mod draw;
pub mod face;
pub mod facematch;
pub mod gradcam;
pub mod prepare;
pub mod sbi;
pub mod scan;
pub mod seeta;
pub mod swap;
pub mod swapset;
pub mod training;
pub mod verdict;
pub mod video;

pub use face::{Detection, FaceDetector, WholeImage};

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
    /// An image could not be read or decoded, or a dataset file was malformed.
    #[error(transparent)]
    Dataset(#[from] deeprecog_dataset::Error),
    /// A classifier could not be built, loaded or evaluated.
    #[error(transparent)]
    Classifiers(#[from] deeprecog_classifiers::Error),
    /// Training failed (a loader, checkpoint or NaN-loss error naming its batch).
    #[error(transparent)]
    Train(#[from] deeprecog_train::Error),
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A video could not be probed or decoded: unreadable, truncated, without a video stream
    /// or without frames.
    #[error("{}: {reason}", path.display())]
    Video {
        /// The video file.
        path: PathBuf,
        /// What went wrong, in ffmpeg's words where it gave any.
        reason: String,
    },
    /// ffmpeg / ffprobe could not be run at all.
    #[error(
        "{program} could not be run ({source}); install ffmpeg (Debian: apt-get install ffmpeg)"
    )]
    FfmpegMissing {
        /// The program that was looked for.
        program: String,
        /// What the system said.
        source: std::io::Error,
    },
    /// A metadata, manifest or listing file is malformed.
    #[error("{}:{line}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when the problem is the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Model weights are missing a tensor, have a wrong shape or could not be read.
    #[error("{}: {reason}", path.display())]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid {what}: {reason}")]
    InvalidConfig {
        /// The setting.
        what: &'static str,
        /// Why it is rejected.
        reason: String,
    },
}

impl Error {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// A parse error at `line` (1-based) of `path`.
    pub fn parse(path: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> Error {
        Error::Parse { path: path.into(), line, reason: reason.into() }
    }

    /// A video error about `path`.
    pub fn video(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Video { path: path.into(), reason: reason.into() }
    }
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
