//! The committed `data-fixtures/`: which generator settings make them, so the example that
//! writes them and the test that checks them byte for byte share one definition.

use std::path::Path;

use deeprecog_dataset::synthetic::deepfakes::{Deepfakes, DeepfakesConfig, DeepfakesSummary};
use deeprecog_dataset::synthetic::faces::{Faces, FacesConfig, FacesSummary};

/// The CelebA-format fixture: 500 faces of 60 people at CelebA's 178x218.
pub fn faces_config() -> FacesConfig {
    FacesConfig { images: 500, identities: 60, seed: 2024, ..FacesConfig::default() }
}

/// The deepfake fixture: 120 real and 120 face-swapped 96x96 images, 8 videos of 12 frames.
pub fn deepfakes_config() -> DeepfakesConfig {
    DeepfakesConfig {
        real_images: 120,
        fake_images: 120,
        videos: 8,
        frames_per_video: 12,
        size: 96,
        identities: 30,
        seed: 2025,
        ..DeepfakesConfig::default()
    }
}

/// Writes both fixtures under `root` (`root/celeba`, `root/deepfakes`).
pub fn generate(root: &Path) -> deeprecog_dataset::Result<(FacesSummary, DeepfakesSummary)> {
    let faces = Faces::generate(&faces_config(), &root.join("celeba"))?;
    let fakes = Deepfakes::generate(&deepfakes_config(), &root.join("deepfakes"))?;
    Ok((faces, fakes))
}
