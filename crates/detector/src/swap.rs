//! Classical face swap, as FaceForensics++'s "FaceSwap" method (the graphics-based one, after
//! Marek Kowalski's FaceSwap): align the source face to the target's landmarks, warp it into
//! the target's frame, match its colours to the target's face, and blend it in through an
//! eroded, feathered face mask.
//!
//! Why here: a detector evaluated only on learned fakes never sees the older, graphics-based
//! manipulations; this builds them from the faces that ship as assets, with the mask of where
//! the manipulation is ([`swap_mask`]) for localisation labels.
//!
//! FaceForensics++ fits a 3-D model to 68 landmarks; BlazeFace gives 6 keypoints, so the
//! alignment here is a least-squares similarity (scale, rotation, translation) between the
//! eyes, nose and mouth of the two faces, and the mask is the inner-face outline of
//! [`face_outline`] (the same rule as the self-blends of [`crate::sbi`]). The pose therefore
//! has to be similar in both faces: a similarity cannot turn a profile into a frontal face.
//!
//! ```
//! use deeprecog_dataset::face::FaceBox;
//! use deeprecog_dataset::Image;
//! use deeprecog_detector::swap::{swap_face, SwapConfig};
//! use deeprecog_detector::Detection;
//!
//! let keypoints = vec![[30.0, 30.0], [50.0, 30.0], [40.0, 40.0], [40.0, 50.0]];
//! let face = Detection { bbox: FaceBox::new(20.0, 15.0, 40.0, 50.0), score: 1.0, keypoints };
//! let target = Image::filled(80, 80, 3, 100).unwrap();
//! let source = Image::filled(80, 80, 3, 200).unwrap();
//! let config = SwapConfig { color_transfer: false, ..SwapConfig::default() };
//! let fake = swap_face(&target, &face, &source, &face, &config).unwrap();
//! assert_eq!(fake.pixel(40, 45), Some(&[200, 200, 200][..]));
//! assert_eq!(fake.pixel(2, 2), Some(&[100, 100, 100][..]));
//! ```

use deeprecog_dataset::Image;
use serde::{Deserialize, Serialize};

use crate::blend::{
    alpha_blend, color_transfer, face_outline, valid_region, warp_similarity, Mask, Similarity,
};
use crate::face::Detection;
use crate::{Error, Result};

/// The keypoints the alignment uses: eyes, nose tip and mouth centre (BlazeFace's first 4).
pub const ALIGN_KEYPOINTS: usize = 4;

/// How a face swap is done.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwapConfig {
    /// Match the warped source's colours to the target's face (Reinhard, in Lab) before
    /// blending; without it skin tones rarely agree and the seam shows.
    pub color_transfer: bool,
    /// The mask's Gaussian feathering sigma as a fraction of the face size (the larger side of
    /// the face outline's box).
    pub feather: f32,
    /// How far the mask is eroded before feathering, as a fraction of the face size: keeps the
    /// seam inside the face, away from hair and background.
    pub erode: f32,
    /// Blend strength in `[0, 1]` (1: the source face replaces the target's).
    pub strength: f32,
}

impl Default for SwapConfig {
    /// Colour transfer on, 4% feathering, 5% erosion, full strength.
    fn default() -> Self {
        SwapConfig { color_transfer: true, feather: 0.04, erode: 0.05, strength: 1.0 }
    }
}

impl SwapConfig {
    /// Checks that feather and erode are finite and >= 0 and the strength is in `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidConfig { what: "swap config", reason });
        if !(self.feather.is_finite() && self.feather >= 0.0) {
            return bad(format!("feather {} is not a number >= 0", self.feather));
        }
        if !(self.erode.is_finite() && self.erode >= 0.0) {
            return bad(format!("erode {} is not a number >= 0", self.erode));
        }
        if !(0.0..=1.0).contains(&self.strength) {
            return bad(format!("strength {} is not in [0, 1]", self.strength));
        }
        Ok(())
    }
}

/// Where a swap onto `target_face` may change a `width` x `height` image: the face outline of
/// its keypoints, eroded by `erode` and feathered by `feather` (fractions of the face size).
/// The swap's own mask is this one times the warped source's valid region.
///
/// Fails on an invalid config or a face with fewer than 4 keypoints (see [`face_outline`]).
pub fn swap_mask(
    target_face: &Detection,
    width: u32,
    height: u32,
    config: &SwapConfig,
) -> Result<Mask> {
    config.validate()?;
    let outline =
        keypoints("target", target_face).and_then(|_| face_outline(&target_face.keypoints))?;
    let size = face_size(&outline);
    let erode = (config.erode * size).round() as u32;
    Ok(Mask::polygon(width, height, &outline).eroded(erode).blurred(config.feather * size))
}

/// The similarity that takes the source face's eyes, nose and mouth onto the target's (least
/// squares over the 4 points). Fails when either face has fewer than 4 keypoints.
pub fn alignment(target_face: &Detection, source_face: &Detection) -> Result<Similarity> {
    let to = keypoints("target", target_face)?;
    let from = keypoints("source", source_face)?;
    Similarity::fit(from, to)
}

/// `source_face` of `source` swapped onto `target_face` of `target`: the source aligned to the
/// target's keypoints ([`alignment`]), warped into the target's frame, colour-matched to the
/// target inside the mask (if [`SwapConfig::color_transfer`]) and alpha-blended through
/// [`swap_mask`] (restricted to where the warp had source pixels). The result has the
/// target's size; pixels where the mask is 0 are the target's bytes.
///
/// Fails on an invalid config, a face with fewer than 4 keypoints, degenerate keypoints (all
/// source points in one place), images whose channels differ, or an empty source.
pub fn swap_face(
    target: &Image,
    target_face: &Detection,
    source: &Image,
    source_face: &Detection,
    config: &SwapConfig,
) -> Result<Image> {
    if target.channels() != source.channels() {
        return Err(Error::InvalidConfig {
            what: "swap images",
            reason: format!(
                "the target has {} channel(s), the source {}",
                target.channels(),
                source.channels()
            ),
        });
    }
    let (w, h) = (target.width(), target.height());
    let transform = alignment(target_face, source_face)?;
    let mask = swap_mask(target_face, w, h, config)?.multiply(&valid_region(
        &transform,
        source.width(),
        source.height(),
        w,
        h,
    )?)?;
    let warped = warp_similarity(source, &transform, w, h)?;
    let warped = if config.color_transfer && target.channels() == 3 {
        color_transfer(&warped, target, &mask)?
    } else {
        warped
    };
    alpha_blend(target, &warped, &mask, config.strength)
}

/// The first 4 keypoints of `face`, or an error naming `which` face lacks them.
fn keypoints<'a>(which: &str, face: &'a Detection) -> Result<&'a [[f32; 2]]> {
    face.keypoints.get(..ALIGN_KEYPOINTS).ok_or_else(|| Error::InvalidConfig {
        what: "face keypoints",
        reason: format!(
            "the {which} face has {} keypoint(s); a swap needs the eyes, the nose and the mouth \
             ({ALIGN_KEYPOINTS}), which SeetaFace and whole-image detections do not give",
            face.keypoints.len()
        ),
    })
}

/// The larger side of the outline's bounding box.
fn face_size(outline: &[[f32; 2]]) -> f32 {
    let span = |k: usize| {
        let (lo, hi) =
            outline.iter().fold((f32::MAX, f32::MIN), |(lo, hi), p| (lo.min(p[k]), hi.max(p[k])));
        (hi - lo).max(0.0)
    };
    span(0).max(span(1)).max(1.0)
}

#[cfg(test)]
mod tests {
    use deeprecog_dataset::face::FaceBox;

    use super::*;
    use crate::blend::tests::pattern;

    /// A face-like detection centred at `(cx, cy)` with eye distance `d`.
    fn face(cx: f32, cy: f32, d: f32) -> Detection {
        let keypoints = vec![
            [cx - d / 2.0, cy - 0.3 * d],
            [cx + d / 2.0, cy - 0.3 * d],
            [cx, cy + 0.2 * d],
            [cx, cy + 0.7 * d],
            [cx - 1.1 * d, cy],
            [cx + 1.1 * d, cy],
        ];
        Detection { bbox: FaceBox::new(cx - d, cy - d, 2.0 * d, 2.2 * d), score: 1.0, keypoints }
    }

    /// A second, differently coloured picture.
    fn other(w: u32, h: u32) -> Image {
        let data = pattern(h, w).as_bytes().iter().map(|v| v.wrapping_mul(3) / 2 + 20).collect();
        Image::from_raw(w, h, 3, data).unwrap()
    }

    #[test]
    fn swapping_a_face_onto_itself_changes_almost_nothing() {
        let image = pattern(90, 70);
        let f = face(45.0, 32.0, 24.0);
        assert_eq!(alignment(&f, &f).unwrap(), Similarity::IDENTITY);
        let out = swap_face(&image, &f, &image, &f, &SwapConfig::default()).unwrap();
        let worst = out.as_bytes().iter().zip(image.as_bytes()).map(|(a, b)| a.abs_diff(*b)).max();
        assert!(worst <= Some(1), "{worst:?}");
        let plain = SwapConfig { color_transfer: false, ..SwapConfig::default() };
        assert_eq!(swap_face(&image, &f, &image, &f, &plain).unwrap(), image);
    }

    #[test]
    fn pixels_outside_the_mask_are_untouched_on_non_square_images() {
        let target = pattern(96, 64);
        let source = other(50, 72);
        let (tf, sf) = (face(40.0, 30.0, 20.0), face(25.0, 36.0, 14.0));
        let out = swap_face(&target, &tf, &source, &sf, &SwapConfig::default()).unwrap();
        assert_eq!((out.width(), out.height(), out.channels()), (96, 64, 3));
        let mask = swap_mask(&tf, 96, 64, &SwapConfig::default()).unwrap();
        let (mut inside, mut changed) = (0, 0);
        for y in 0..64 {
            for x in 0..96 {
                if mask.get(x, y) == 0.0 {
                    assert_eq!(out.pixel(x, y), target.pixel(x, y), "({x}, {y})");
                } else if mask.get(x, y) > 0.9 {
                    inside += 1;
                    changed += usize::from(out.pixel(x, y) != target.pixel(x, y));
                }
            }
        }
        assert!(inside > 200 && changed > inside / 2, "{changed} of {inside} changed");
        // The far corners are well outside the face.
        assert_eq!(mask.get(0, 0) + mask.get(95, 63) + mask.get(95, 0), 0.0);
    }

    #[test]
    fn alignment_recovers_a_known_transform_and_undoes_it() {
        let target = pattern(80, 64);
        let tf = face(40.0, 30.0, 20.0);
        // The source is the target moved by a known similarity; its face moved the same way.
        let known = Similarity::new(1.25, 0.2, 6.0, -4.0);
        let source = warp_similarity(&target, &known, 100, 90).unwrap();
        let sf = Detection {
            keypoints: tf.keypoints.iter().map(|&p| known.apply_f32(p)).collect(),
            ..tf.clone()
        };
        let fit = alignment(&tf, &sf).unwrap();
        let want = known.inverse().unwrap();
        for (got, want) in [(fit.a, want.a), (fit.b, want.b), (fit.tx, want.tx), (fit.ty, want.ty)]
        {
            assert!((got - want).abs() < 1e-4, "{fit:?} vs {want:?}");
        }
        // Swapping back lands the target's own face on it, up to two bilinear resamplings.
        let config = SwapConfig { color_transfer: false, ..SwapConfig::default() };
        let out = swap_face(&target, &tf, &source, &sf, &config).unwrap();
        let diff: f64 = out
            .as_bytes()
            .iter()
            .zip(target.as_bytes())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / out.as_bytes().len() as f64;
        assert!(diff < 1.0, "mean difference {diff}");
    }

    #[test]
    fn faces_without_keypoints_and_bad_settings_are_errors() {
        let image = pattern(40, 30);
        let good = face(20.0, 14.0, 10.0);
        let bare = Detection::new(FaceBox::new(5.0, 5.0, 20.0, 20.0), 0.9);
        let config = SwapConfig::default();
        let err = swap_face(&image, &good, &image, &bare, &config).unwrap_err().to_string();
        assert!(err.contains("source face has 0 keypoint"), "{err}");
        let err = swap_face(&image, &bare, &image, &good, &config).unwrap_err().to_string();
        assert!(err.contains("target face"), "{err}");
        assert!(swap_mask(&bare, 40, 30, &config).is_err());
        let bad = SwapConfig { strength: 1.5, ..config };
        assert!(swap_face(&image, &good, &image, &good, &bad).is_err());
        let grey = Image::filled(40, 30, 1, 9).unwrap();
        assert!(swap_face(&image, &good, &grey, &good, &config).is_err());
    }
}
