//! deeprecog: face attribute recognition, GAN face synthesis and deepfake detection on candle.
//!
//! This facade re-exports the workspace's crates so that examples, benches and integration
//! tests (and applications that want everything) depend on one package:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`attributes`] | `deeprecog-attributes` | the 40 CelebA attributes as types |
//! | [`dataset`] | `deeprecog-dataset` | readers, splits, transforms, loaders, caches, synthetic data |
//! | [`metrics`] | `deeprecog-metrics` | classification / calibration / FID metrics and plots |
//! | [`nn`] | `deeprecog-nn` | losses, optimizers, custom ops, checkpoints, devices |
//! | [`classifiers`] | `deeprecog-classifiers` | CNNs, backbones, heads, training |
//! | [`gan`] | `deeprecog-gan` | generators, discriminators, GAN training, mosaics |
//! | [`detector`] | `deeprecog-detector` | face detection, image and video verdicts |
//!
//! ```
//! use deeprecog::attributes::Attribute;
//! assert_eq!(Attribute::ALL.len(), 40);
//! ```

pub mod cli;
pub mod fixtures;
pub mod report;

pub use deeprecog_attributes as attributes;
pub use deeprecog_classifiers as classifiers;
pub use deeprecog_dataset as dataset;
pub use deeprecog_detector as detector;
pub use deeprecog_gan as gan;
pub use deeprecog_metrics as metrics;
pub use deeprecog_nn as nn;
