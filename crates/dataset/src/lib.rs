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
//! - [`stats`]: attribute frequencies and the distribution chart.
//! - [`synthetic`]: procedural faces in CelebA's exact format and deepfake-style data.
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
pub mod folder;
pub mod fsutil;
mod image;
pub mod loader;
pub mod manifest;
pub mod split;
pub mod stats;
pub mod synthetic;
pub mod transforms;

pub use crate::dataset::{Dataset, DatasetExt, InMemory, Mapped, Sample, Subset, Target};
pub use crate::error::{Error, Result};
pub use crate::image::{is_image_file, Image};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
