//! Face datasets for training and evaluating deeprecog models.
//!
//! - [`Dataset`]: a random-access collection (`len`, `get -> Result`) with composable
//!   wrappers ([`DatasetExt::subset`], [`DatasetExt::shuffled`], [`DatasetExt::map`]).
//! - Readers: [`celeba::CelebA`] (the real on-disk format, every annotation file),
//!   [`folder::ImageFolder`] (one sub-folder per class), [`manifest::Manifest`] (a CSV of
//!   path, label and group).
//! - [`split`] (official partition, seeded ratios, group-disjoint) and [`balance`]
//!   (undersample, oversample, class weights).
//! - [`transforms`]: seeded resize / crop / grayscale / augmentations on `u8` images, and
//!   normalisation on the device.
//! - [`loader::Loader`]: batches of `u8` tensors with parallel decoding and prefetch;
//!   [`cache::U8Cache`]: memory-mapped preprocessed shards.
//! - [`stats`]: attribute frequencies (the chart is drawn by `deeprecog-metrics`).
//! - [`face`]: face boxes and landmarks, shared with the synthetic generator and detectors.
//! - Images decode strictly ([`DecodeOptions`], [`Strictness`]): a truncated or corrupt file
//!   is an error naming it, unless a reader is told to accept damaged files.
//! - [`fsutil`]: the atomic file write every writer uses; [`seed`]: splitmix64 and seeded
//!   random streams.
//!
//! Procedural CelebA-format faces and deepfakes live in the `deeprecog-synthetic` crate.
//!
//! ```no_run
//! use deeprecog_attributes::Attribute;
//! use deeprecog_dataset::celeba::{CelebA, CelebAConfig};
//! use deeprecog_dataset::{Dataset, DatasetExt};
//!
//! let celeba = CelebA::open("data/celeba", &CelebAConfig::targets(vec![Attribute::Attractive]))?;
//! let train = celeba.partition(deeprecog_dataset::split::Partition::Train);
//! let sample = celeba.get(train[0])?;
//! println!("{} is {}x{}", sample.id, sample.image.width(), sample.image.height());
//! # Ok::<(), deeprecog_dataset::Error>(())
//! ```

pub mod balance;
pub mod cache;
pub mod celeba;
mod dataset;
mod error;
pub mod face;
pub mod folder;
pub mod fsutil;
mod image;
pub mod loader;
pub mod manifest;
pub mod seed;
pub mod split;
pub mod stats;
pub mod transforms;

pub use crate::dataset::{
    Dataset, DatasetExt, InMemory, Mapped, Sample, SampleOrigin, Subset, Target,
};
pub use crate::error::{Error, Result};
pub use crate::image::{is_image_file, DecodeOptions, Image, Strictness, MAX_SIDE};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
