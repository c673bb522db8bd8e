//! Procedural data with known ground truth, for tests, examples and pipelines that must run
//! without downloading CelebA or DFDC.
//!
//! - [`faces`]: cartoon-like but structured faces with all 40 CelebA attributes, written in
//!   CelebA's exact on-disk format (`img_align_celeba/000001.jpg`, `list_attr_celeba.txt`,
//!   `list_eval_partition.txt`, `identity_CelebA.txt`, `list_landmarks_align_celeba.txt`,
//!   `list_bbox_celeba.txt`), so the real reader, splits and loaders run on them unchanged.
//!   [`FaceGenerator`] renders the same faces in memory.
//! - [`deepfakes`]: real faces and face swaps (an image-folder dataset with a manifest) and
//!   short frame sequences with DFDC-style `metadata.json`.
//!
//! Everything is drawn by a small anti-aliased rasteriser of this crate and is byte-for-byte
//! reproducible from the configuration and seed: every image has its own random stream derived
//! from (seed, image index), so the output does not depend on the number of threads.
//!
//! The crate uses `deeprecog-dataset`'s [`Image`], [`Error`] and atomic file write, so
//! everything it writes is read back by that crate's readers unchanged; face boxes and
//! landmarks are [`deeprecog_dataset::face`]'s.
//!
//! ```
//! use deeprecog_synthetic::{FaceGenerator, Faces, FacesConfig};
//!
//! // In memory: the image and its ground truth (attributes, identity, landmarks, box).
//! let config = FacesConfig { images: 4, identities: 2, seed: 7, ..FacesConfig::default() };
//! let generator = FaceGenerator::new(&config)?;
//! let (image, record) = generator.render(0)?;
//! assert_eq!((image.width(), image.height()), (178, 218));
//! assert!(record.landmarks.left_eye[0] < record.landmarks.right_eye[0]);
//!
//! // On disk, in CelebA's format, read back by the real reader.
//! let dir = tempfile::tempdir()?;
//! let summary = Faces::generate(&config, dir.path())?;
//! let celeba = deeprecog_dataset::celeba::CelebA::open(dir.path(), &Default::default())?;
//! assert_eq!(celeba.records().len(), summary.images);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod deepfakes;
mod draw;
pub mod faces;
mod model;
mod raster;

pub use deepfakes::{
    DeepfakeGenerator, DeepfakeRecord, Deepfakes, DeepfakesConfig, DeepfakesSummary, SwapPair,
    VideoRecord,
};
pub use deeprecog_dataset::face::{FaceBox, Landmarks};
pub use deeprecog_dataset::split::Ratios;
pub use deeprecog_dataset::{Error, Image, Result};
pub use faces::{
    partition_counts, FaceGenerator, FaceRecord, Faces, FacesConfig, FacesSummary, CELEBA_PARTITION,
};

use rand_chacha::ChaCha8Rng;

/// Independent random streams, so adding draws to one kind of object never shifts another.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Stream {
    Split = 1,
    Identity = 2,
    Image = 3,
    Camera = 4,
    DeepfakeIdentity = 11,
    DeepfakeImage = 12,
    DeepfakeCamera = 13,
    Video = 14,
    VideoName = 15,
    Frame = 16,
    Flicker = 17,
    DeepfakeSplit = 18,
}

/// The random stream of object `index` of kind `stream` under `seed`.
pub(crate) fn rng_for(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    deeprecog_dataset::seed::rng_for(seed, stream as u64, index)
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
