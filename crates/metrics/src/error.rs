//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while computing a metric, reading predictions or drawing a plot.
///
/// Undefined metrics (for example ROC-AUC when only one class is present) are errors rather
/// than `NaN`, so a report can never silently print `NaN`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input that must hold at least one element was empty.
    #[error("{what} is empty")]
    Empty {
        /// Which input was empty.
        what: &'static str,
    },
    /// Two inputs that must be parallel have different lengths.
    #[error("length mismatch: {what} has {got} elements, expected {expected}")]
    LengthMismatch {
        /// Which input had the wrong length.
        what: &'static str,
        /// The expected length.
        expected: usize,
        /// The actual length.
        got: usize,
    },
    /// The metric needs both classes among the labels but only one is present.
    #[error("{metric} is undefined: only one class is present in the labels")]
    SingleClass {
        /// The metric that could not be computed.
        metric: &'static str,
    },
    /// The metric is undefined for this input (for example a zero denominator).
    #[error("{metric} is undefined: {reason}")]
    Undefined {
        /// The metric that could not be computed.
        metric: &'static str,
        /// Why it is undefined.
        reason: &'static str,
    },
    /// A value was NaN or infinite, or outside its allowed range.
    #[error("invalid {what} at index {index}: {value}")]
    InvalidValue {
        /// What kind of value it is (score, probability, logit, ...).
        what: &'static str,
        /// Its position in the input slice.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A parameter (bin count, beta, eps, ...) is out of range.
    #[error("invalid argument {name}: {reason}")]
    InvalidArgument {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Frames of one video carry different labels, so the video has no single label.
    #[error("frames of video {video:?} have different labels")]
    InconsistentLabels {
        /// The video id.
        video: String,
    },
    /// A matrix computation (square root, Frechet distance) failed to converge or got a
    /// matrix of the wrong shape.
    #[error("matrix error: {0}")]
    Matrix(String),
    /// A predictions file has a bad row or header.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file being read.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// plotters failed while drawing a chart.
    #[error("plot drawing failed: {0}")]
    Plot(String),
    /// Encoding or saving a PNG failed.
    #[error("saving image {}: {source}", path.display())]
    Image {
        /// The image file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: image::ImageError,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
