//! The compositions the example binaries run, above the crates: each takes typed settings,
//! composes datasets, models, the training engine and metrics, and writes its outputs into a
//! run folder. Applications can call them directly; the examples are thin command-line front
//! ends over them.
//!
//! | pipeline | what |
//! |---|---|
//! | [`attractiveness`] | CelebA attribute classifiers: train one model, the layer sweep, model comparison with paired bootstrap differences |
//! | [`quickstart`] | the README's main job: every pipeline on the fixtures, one Markdown report |
//! | [`predictions`] | every binary metric of a predictions file, with video and group breakdowns and plots |
//! | [`deepfake`] | deepfake detectors: training on face crops against the baselines, verdicts on images and videos, Grad-CAM |
//! | [`gan`] | GAN face synthesis: training on a filtered CelebA subset, sampling, FID / KID, attribute hit rates |
//! | [`faces`] | face detection on images and videos, face-crop datasets, drawn detections, frames encoded into videos |
//! | [`throughput`] | images per second of any zoo model (inference or a training step) or GAN iteration |

pub mod attractiveness;
pub mod deepfake;
pub mod faces;
pub mod gan;
pub mod predictions;
pub mod quickstart;
pub mod throughput;

use std::path::PathBuf;

/// Errors of the pipelines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Training failed.
    #[error(transparent)]
    Train(#[from] deeprecog_train::Error),
    /// Building or loading a model failed.
    #[error(transparent)]
    Classifiers(#[from] deeprecog_classifiers::Error),
    /// Reading the data failed.
    #[error(transparent)]
    Dataset(#[from] deeprecog_dataset::Error),
    /// A metric or plot failed.
    #[error(transparent)]
    Metrics(#[from] deeprecog_metrics::Error),
    /// A checkpoint or tensor operation failed.
    #[error(transparent)]
    Nn(#[from] deeprecog_nn::Error),
    /// Face detection, video decoding or encoding, or a face-crop dataset failed.
    #[error(transparent)]
    Detector(#[from] deeprecog_detector::Error),
    /// GAN training, sampling or scoring failed.
    #[error(transparent)]
    Gan(#[from] deeprecog_gan::Error),
    /// A setting that cannot work, named.
    #[error("invalid {what}: {reason}")]
    InvalidArgument {
        /// The setting.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file that could not be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn invalid(what: &str, reason: impl Into<String>) -> Error {
        Error::InvalidArgument { what: what.to_string(), reason: reason.into() }
    }
}

/// The result type of the pipelines.
pub type Result<T, E = Error> = std::result::Result<T, E>;
