//! The FakeApp report's face-match baseline: how far a face's identity embedding lies from its
//! identity's reference. A swapped face carries another person's inner face, so its embedding
//! moves away from the target's real faces; no deepfake training is involved.
//!
//! Faces are found with any [`FaceDetector`] that gives eye, nose and mouth keypoints
//! (BlazeFace), aligned into dlib's 150x150 chip by a similarity fitted to dlib's mean face
//! shape, and embedded with dlib's ResNet ([`crate::dlib::DlibFaceNet`]). dlib aligns with its
//! own 5-point landmark model (eye corners and nose base); fitting BlazeFace's eye centres, nose
//! tip and mouth to the same mean shape is an approximation of that, and edge pixels are
//! repeated where dlib writes zeros.

use deeprecog_dataset::Image;

use crate::blend::{warp_similarity, Similarity};
use crate::dlib::{DlibFaceNet, CHIP_SIZE};
use crate::face::FaceDetector;
use crate::training::FaceSet;
use crate::{Error, Result};

/// Where the image-left eye centre, the image-right eye centre, the nose tip and the mouth
/// centre of dlib's 68-point mean face land in a 150-pixel chip with dlib's default padding
/// (0.25): the means of points 36-41 and 42-47, point 30, and the mean of points 48-67.
pub const CHIP_TEMPLATE: [[f32; 2]; 4] =
    [[47.549, 46.599], [100.476, 46.599], [74.013, 76.562], [74.013, 105.422]];

/// The 150x150 chip of the face whose keypoints (BlazeFace order: the two eyes, nose tip,
/// mouth centre, ...) are given in `image`'s pixels.
///
/// # Errors
/// [`Error::InvalidConfig`] with fewer than 4 keypoints or degenerate ones.
pub fn face_chip(image: &Image, keypoints: &[[f32; 2]]) -> Result<Image> {
    let [a, b, nose, mouth, ..] = keypoints else {
        return Err(Error::InvalidConfig {
            what: "face keypoints",
            reason: format!("{} given; the eyes, nose and mouth are needed", keypoints.len()),
        });
    };
    // The template's first eye is the one on the image's left, whichever eye the detector
    // lists first.
    let (left, right) = if a[0] <= b[0] { (a, b) } else { (b, a) };
    let transform = Similarity::fit(&[*left, *right, *nose, *mouth], &CHIP_TEMPLATE)?;
    warp_similarity(&image.to_rgb(), &transform, CHIP_SIZE, CHIP_SIZE)
}

/// dlib's face embedding behind a keypoint face detector.
pub struct FaceMatcher<'a> {
    net: &'a DlibFaceNet,
    detector: &'a dyn FaceDetector,
}

impl<'a> FaceMatcher<'a> {
    /// Faces found by `detector` (it must give keypoints), embedded by `net`.
    pub fn new(net: &'a DlibFaceNet, detector: &'a dyn FaceDetector) -> FaceMatcher<'a> {
        FaceMatcher { net, detector }
    }

    /// The embedding of the best face of each image (`None` where no face with keypoints is
    /// found).
    ///
    /// # Errors
    /// Detector and network errors.
    pub fn embed(&self, images: &[Image]) -> Result<Vec<Option<[f32; 128]>>> {
        let found = self.detector.detect_batch(images)?;
        let mut chips = Vec::new();
        let mut slots = Vec::with_capacity(images.len());
        for (image, faces) in images.iter().zip(&found) {
            match faces.first().filter(|d| d.keypoints.len() >= 4) {
                Some(face) => {
                    slots.push(Some(chips.len()));
                    chips.push(face_chip(image, &face.keypoints)?);
                }
                None => slots.push(None),
            }
        }
        let embedded = if chips.is_empty() { Vec::new() } else { self.net.embed(&chips)? };
        Ok(slots.into_iter().map(|s| s.and_then(|k| embedded.get(k).copied())).collect())
    }
}

/// Face-match scores: the Euclidean distance of each embedding to the mean embedding of the
/// *real* samples of its group (identity), leaving the sample itself out of its own reference.
/// `None` where the sample has no embedding, no group, or its group no other real embedding.
pub fn identity_distances(
    embeddings: &[Option<[f32; 128]>],
    groups: &[Option<String>],
    fake: &[bool],
) -> Vec<Option<f64>> {
    use std::collections::HashMap;
    let mut sums: HashMap<&str, ([f64; 128], usize)> = HashMap::new();
    for ((e, g), &f) in embeddings.iter().zip(groups).zip(fake) {
        if let (Some(e), Some(g), false) = (e, g, f) {
            let entry = sums.entry(g.as_str()).or_insert(([0.0; 128], 0));
            for (s, v) in entry.0.iter_mut().zip(e) {
                *s += f64::from(*v);
            }
            entry.1 += 1;
        }
    }
    embeddings
        .iter()
        .zip(groups)
        .zip(fake)
        .map(|((e, g), &f)| {
            let (e, g) = (e.as_ref()?, g.as_ref()?);
            let (sum, n) = sums.get(g.as_str())?;
            // A real sample's own embedding is part of the sum: take it out.
            let (mut reference, count) = (*sum, if f { *n } else { n - 1 });
            if count == 0 {
                return None;
            }
            if !f {
                for (r, v) in reference.iter_mut().zip(e) {
                    *r -= f64::from(*v);
                }
            }
            let d2: f64 = reference
                .iter()
                .zip(e)
                .map(|(r, v)| {
                    let d = r / count as f64 - f64::from(*v);
                    d * d
                })
                .sum();
            Some(d2.sqrt())
        })
        .collect()
}

/// The face-match score of every sample of `set` ([`identity_distances`] over its groups),
/// with the ROC-AUC of those that have one (fake = farther from the identity's real faces).
/// Unreadable samples get no score.
///
/// # Errors
/// Detector and network errors.
pub fn face_match_scores(
    set: &FaceSet,
    matcher: &FaceMatcher<'_>,
) -> Result<(Vec<Option<f64>>, Option<f64>)> {
    let data = set.dataset();
    let fake: Vec<bool> = set.labels().iter().map(|&l| l == 1).collect();
    let mut embeddings = Vec::with_capacity(set.len());
    let indices: Vec<usize> = (0..set.len()).collect();
    for chunk in indices.chunks(64) {
        let read: Vec<Option<Image>> =
            chunk.iter().map(|&i| data.get(i).ok().map(|s| s.image.to_rgb())).collect();
        let present: Vec<Image> = read.iter().flatten().cloned().collect();
        let mut embedded = matcher.embed(&present)?.into_iter();
        for r in &read {
            embeddings.push(if r.is_some() { embedded.next().flatten() } else { None });
        }
    }
    let scores = identity_distances(&embeddings, set.groups(), &fake);
    let (y, s): (Vec<bool>, Vec<f64>) =
        scores.iter().zip(&fake).filter_map(|(s, &f)| Some((f, (*s)?))).unzip();
    let auc = deeprecog_metrics::binary::roc_auc(&y, &s).ok();
    Ok((scores, auc))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn one_hot(k: usize, scale: f32) -> Option<[f32; 128]> {
        let mut e = [0.0; 128];
        e[k] = scale;
        Some(e)
    }

    #[test]
    fn distances_leave_the_sample_out_of_its_reference() {
        let g = |s: &str| Some(s.to_string());
        let embeddings = [one_hot(0, 1.0), one_hot(0, 3.0), one_hot(1, 1.0), one_hot(0, 1.0), None];
        let groups = [g("a"), g("a"), g("a"), g("b"), g("a")];
        let fake = [false, false, true, false, false];
        let d = identity_distances(&embeddings, &groups, &fake);
        // Real 0 against real 1 alone: |1 - 3| = 2; real 1 against real 0: 2.
        assert!((d[0].unwrap() - 2.0).abs() < 1e-12 && (d[1].unwrap() - 2.0).abs() < 1e-12);
        // The fake against the mean of both reals, (2, 0, ...): sqrt(4 + 1).
        assert!((d[2].unwrap() - 5f64.sqrt()).abs() < 1e-12);
        // The only real of its group has no reference; no embedding, no score.
        assert_eq!((d[3], d[4]), (None, None));
    }

    #[test]
    fn a_face_on_the_template_is_cut_unmoved() {
        let data: Vec<u8> = (0..200u32 * 180 * 3).map(|i| (i % 251) as u8).collect();
        let image = Image::from_raw(200, 180, 3, data).unwrap();
        let keypoints: Vec<[f32; 2]> = CHIP_TEMPLATE.to_vec();
        let chip = face_chip(&image, &keypoints).unwrap();
        assert_eq!((chip.width(), chip.height()), (CHIP_SIZE, CHIP_SIZE));
        for (x, y) in [(0, 0), (10, 120), (149, 149)] {
            assert_eq!(chip.pixel(x, y), image.pixel(x, y), "({x}, {y})");
        }
        // The eyes listed the other way round give the same chip.
        let swapped = [keypoints[1], keypoints[0], keypoints[2], keypoints[3]];
        assert_eq!(face_chip(&image, &swapped).unwrap(), chip);
        assert!(face_chip(&image, &keypoints[..3]).is_err());
    }
}
