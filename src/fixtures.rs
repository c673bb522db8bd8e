//! The committed `data-fixtures/`: which generator settings make them, so the example that
//! writes them and the test that checks them byte for byte share one definition.

use std::path::Path;

use deeprecog_dataset::split::Ratios;
use deeprecog_synthetic::deepfakes::{Deepfakes, DeepfakesConfig, DeepfakesSummary};
use deeprecog_synthetic::faces::{Faces, FacesConfig, FacesSummary};

/// The CelebA-format fixture: 1000 faces of 400 people at CelebA's 178x218. Its identities
/// are split 70/10/20 rather than CelebA's 80/10/10 so that the test side (about 200 images
/// of 80 people) is large enough for bootstrap intervals to separate models.
pub fn faces_config() -> FacesConfig {
    FacesConfig {
        images: 1000,
        identities: 400,
        seed: 2024,
        partition: Ratios { train: 0.7, valid: 0.1, test: 0.2 },
        ..FacesConfig::default()
    }
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

/// The best accuracy any model can reach on `Attractive` over the images `indices` of
/// `celeba`, when `celeba` is the committed fixture: the generator knows the probability its
/// hidden rule gave each image before the label was drawn, and `max(p, 1 - p)` averaged over
/// the images is the Bayes ceiling. `None` when `celeba` is not this fixture (any file name or
/// `Attractive` label differs from what [`faces_config`] generates).
pub fn attractive_ceiling(
    celeba: &deeprecog_dataset::celeba::CelebA,
    indices: &[usize],
) -> Option<f64> {
    use deeprecog_attributes::Attribute;
    use deeprecog_synthetic::faces::FaceGenerator;

    let config = faces_config();
    let records = celeba.records();
    if records.len() != config.images || indices.is_empty() {
        return None;
    }
    let generator = FaceGenerator::new(&config).ok()?;
    let mut total = 0.0;
    for (i, record) in records.iter().enumerate() {
        let truth = generator.record(i).ok()?;
        let label = Attribute::Attractive;
        if truth.file_name != record.file
            || truth.attributes.contains(label) != record.attributes.contains(label)
        {
            return None;
        }
        if indices.contains(&i) {
            let p = f64::from(truth.attractive_probability);
            total += p.max(1.0 - p);
        }
    }
    Some(total / indices.len() as f64)
}
