//! What every deeprecog model shares: numerically stable losses, device selection, and (as the
//! crate grows) optimizers candle lacks, custom ops with CPU and CUDA kernels, checkpoints and
//! weight import.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use deeprecog_nn::loss::bce_with_logits;
//!
//! let logits = Tensor::new(&[100.0f32, -100.0, 0.0], &Device::Cpu)?;
//! let targets = Tensor::new(&[0.0f32, 1.0, 1.0], &Device::Cpu)?;
//! // Finite where the naive formula overflows.
//! let loss = bce_with_logits(&logits, &targets)?.to_scalar::<f32>()?;
//! assert!((loss - (200.0 + std::f32::consts::LN_2) / 3.0).abs() < 1e-4);
//! # Ok::<(), deeprecog_nn::Error>(())
//! ```

pub mod activation;
pub mod assets;
pub mod checkpoint;
pub mod conv;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod depthwise;
pub mod device;
#[cfg(target_arch = "x86_64")]
mod direct;
pub mod dropout;
mod gemm_conv;
pub mod import;
pub mod init;
pub mod layers;
pub mod linear;
pub mod loss;
mod memo;
pub mod norm;
pub mod optim;
mod phases;
mod planes;
pub mod pool;
pub mod preprocess;
pub mod schedule;
mod sgemm;
mod simd;
mod stride2_winograd;
mod winograd;

/// Errors of the nn crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A device was asked for that this build or machine cannot provide.
    #[error("device {requested:?} is not available: {reason}")]
    DeviceUnavailable {
        /// What was asked for.
        requested: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A weight file that could not be imported: the file and what was wrong with it.
    #[error("{}: {source}", path.display())]
    Import {
        /// The file being read or written.
        path: std::path::PathBuf,
        /// What was unexpected.
        #[source]
        source: import::ImportError,
    },
    /// Tensors whose shapes cannot go together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A checkpoint file that could not be written or read back: the file and what was wrong.
    #[error("checkpoint {}: {reason}", path.display())]
    Checkpoint {
        /// The file (or folder) concerned.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// An optimizer state that does not fit the optimizer it is loaded into.
    #[error("optimizer state: {0}")]
    OptimizerState(String),
}

/// The nn crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
