//! The crate's error type: what failed, and where (the tensor, the file, the model).

use std::path::PathBuf;

/// Errors of building, loading and freezing classifiers.
///
/// Tensor operations inside a model's forward pass stay `candle_core::Result` (the
/// `candle_nn::ModuleT` signature); this type covers everything around them: constructors,
/// weight files, checkpoints, configurations. It converts into `candle_core::Error` (the
/// [`Error::Candle`] variant unwrapped, any other wrapped), so `?` keeps working inside code that
/// returns candle's result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An import, loss, optimizer or checkpoint operation of `deeprecog-nn` failed.
    #[error(transparent)]
    Nn(#[from] deeprecog_nn::Error),
    /// A normalisation or dataset operation failed.
    #[error(transparent)]
    Dataset(#[from] deeprecog_dataset::Error),
    /// A weight file lacks a variable the model needs.
    #[error("{}: no tensor `{name}`", file.display())]
    MissingTensor {
        /// The variable's name (torchvision's `state_dict` name).
        name: String,
        /// The weight file.
        file: PathBuf,
    },
    /// A weight file holds a variable with another shape than the model's.
    #[error("{}: `{name}` has shape {found:?}, the model has {expected:?}", file.display())]
    ShapeMismatch {
        /// The variable's name.
        name: String,
        /// The model's shape.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
        /// The weight file.
        file: PathBuf,
    },
    /// A model name the zoo does not know.
    #[error("unknown model {name:?}; known: {}", known.join(", "))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The names the zoo builds (see `ModelName::ALL_NAMES`).
        known: Vec<String>,
    },
    /// An input too small for the model's downsampling (or with the wrong channel count).
    #[error("input {input:?} (channels, height, width) is too small for {model}: {need}")]
    InputTooSmall {
        /// The model.
        model: String,
        /// The configured input `(channels, height, width)`.
        input: (usize, usize, usize),
        /// What the model needs.
        need: String,
    },
    /// A configuration value that cannot work (zero widths, an out-of-range dropout, a freeze
    /// naming a stage the model does not have, ...).
    #[error("invalid {what}: {reason}")]
    InvalidConfig {
        /// The model, field or setting concerned.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or folder that could not be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A run or checkpoint folder that does not hold what `zoo::load` needs.
    #[error("{}: {reason}", path.display())]
    Checkpoint {
        /// The folder or run file concerned.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A metric (FID, KID) could not be computed from the features.
    #[error(transparent)]
    Metrics(#[from] deeprecog_metrics::Error),
    /// An image file that cannot be read or decoded (FID feature extraction).
    #[error("{}: unusable image ({source})", path.display())]
    ImageFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be used (the decoder's error).
        #[source]
        source: Box<deeprecog_dataset::Error>,
    },
    /// A folder that holds no image with a supported extension.
    #[error("{}: no image files found", dir.display())]
    NoImages {
        /// The folder searched (recursively).
        dir: PathBuf,
    },
    /// Input data of the wrong size or shape (an image buffer that does not match its
    /// dimensions, a zero output size).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// What was passed.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `VarMap`'s lock was poisoned by a thread that panicked while holding it.
    #[error("the VarMap's lock is poisoned")]
    PoisonedLock,
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> candle_core::Error {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

impl Error {
    /// An [`Error::InvalidConfig`].
    pub(crate) fn config(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidConfig { what: what.into(), reason: reason.into() }
    }

    /// An [`Error::InputTooSmall`].
    pub(crate) fn too_small(
        model: impl Into<String>,
        input: (usize, usize, usize),
        need: impl Into<String>,
    ) -> Error {
        Error::InputTooSmall { model: model.into(), input, need: need.into() }
    }
}
