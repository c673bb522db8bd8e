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
//! ```no_run
//! use deeprecog_dataset::synthetic::{Faces, FacesConfig};
//!
//! let config = FacesConfig { images: 300, identities: 30, ..FacesConfig::default() };
//! let summary = Faces::generate(&config, "data/synthetic-celeba".as_ref())?;
//! println!("{} images of {} people", summary.images, summary.identities);
//! # Ok::<(), deeprecog_dataset::Error>(())
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
pub use faces::{
    FaceBox, FaceGenerator, FaceRecord, Faces, FacesConfig, FacesSummary, Landmarks,
    PartitionRatios,
};

use rand::SeedableRng;
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

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The random stream of object `index` of kind `stream` under `seed`.
pub(crate) fn rng_for(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    let mut h = splitmix(seed);
    h = splitmix(h ^ (stream as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    h = splitmix(h ^ index);
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        h = splitmix(h);
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    ChaCha8Rng::from_seed(bytes)
}
