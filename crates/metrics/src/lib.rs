//! Classification, calibration and FID metrics with PNG plots.
#![deny(missing_docs)]

mod error;
pub mod plot;

pub use error::{Error, Result};
