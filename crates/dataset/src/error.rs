//! The dataset crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while reading, transforming or loading data.
///
/// Variants carry the file, line or sample that failed so that a message alone is enough to
/// find the problem.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A required file is absent.
    #[error("{}: required file is missing", path.display())]
    MissingFile {
        /// Where the file was expected.
        path: PathBuf,
    },
    /// A line of a text annotation file (or a CSV row) is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The annotation file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// Two annotation files disagree (an image listed in one but not the other, counts that
    /// do not match).
    #[error("{}: {message}", path.display())]
    Inconsistent {
        /// The file where the disagreement was noticed.
        path: PathBuf,
        /// What disagreed.
        message: String,
    },
    /// An image could not be decoded or encoded.
    #[error("{}: {source}", path.display())]
    Image {
        /// The image file (or a description of the in-memory source).
        path: PathBuf,
        /// The decoder's error.
        source: image::ImageError,
    },
    /// An image the strict decoder rejects: truncated, corrupt, or beyond the size limit (see
    /// [`Strictness`](crate::Strictness)).
    #[error("{}: {message}", path.display())]
    Decode {
        /// The image file (or a description of the in-memory source).
        path: PathBuf,
        /// What was wrong, in the decoder's words.
        message: String,
    },
    /// A sample index past the end of a dataset.
    #[error("sample index {index} out of range for a dataset of {len}")]
    IndexOutOfRange {
        /// The requested index.
        index: usize,
        /// The dataset's length.
        len: usize,
    },
    /// A sample that cannot go where it was sent (wrong size for its batch, wrong channels).
    #[error("sample {id}: {message}")]
    BadSample {
        /// The sample's id (usually its file name).
        id: String,
        /// What was wrong with it.
        message: String,
    },
    /// A configuration value that cannot work (ratios that do not sum to one, zero sizes).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing or reading JSON failed.
    #[error("{}: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// An atomic write failed (the error names the destination file).
    #[error(transparent)]
    Write(#[from] crate::fsutil::AtomicWriteError),
}

/// The dataset crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }

    /// A parse error at `line` (one-based) of `path`.
    pub fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Error {
        Error::Parse { path: path.into(), line, message: message.into() }
    }
}
