//! What every face detector returns ([`Detection`]) and the trait they share
//! ([`FaceDetector`]); [`WholeImage`], the "detector" for inputs that are face crops already.

use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::Image;

use crate::Result;

/// One face found in an image, in the image's pixel coordinates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    /// The face box (left, top, width, height), in pixels; may reach past the image's edges
    /// when the face does.
    pub bbox: FaceBox,
    /// The detector's confidence in [0, 1].
    pub score: f32,
    /// Keypoints in pixels, in the detector's order (BlazeFace: the subject's right eye, left
    /// eye, nose tip, mouth centre, right ear tragion, left ear tragion; none for SeetaFace).
    pub keypoints: Vec<[f32; 2]>,
}

impl Detection {
    /// A detection without keypoints.
    pub fn new(bbox: FaceBox, score: f32) -> Detection {
        Detection { bbox, score, keypoints: Vec::new() }
    }

    /// The two eyes as (subject's right eye, subject's left eye) when the detector gives them.
    /// In an upright, unmirrored photo the subject's right eye is on the image's left.
    pub fn eyes(&self) -> Option<([f32; 2], [f32; 2])> {
        match self.keypoints.as_slice() {
            [right, left, ..] => Some((*right, *left)),
            _ => None,
        }
    }

    /// The box's area in square pixels (what "largest face" compares).
    pub fn area(&self) -> f32 {
        self.bbox.area()
    }
}

/// A face detector: RGB image in, faces out (best score first).
///
/// Implementations are `Send + Sync` so that one detector serves a parallel dataset build.
pub trait FaceDetector: Send + Sync {
    /// A short name for reports and manifests (`blazeface-front`, `seeta`, `whole-image`).
    fn name(&self) -> &str;

    /// The faces in one RGB image (3 channels).
    fn detect(&self, image: &Image) -> Result<Vec<Detection>>;

    /// The faces in several images; detectors that batch (BlazeFace) override this.
    fn detect_batch(&self, images: &[Image]) -> Result<Vec<Vec<Detection>>> {
        images.iter().map(|image| self.detect(image)).collect()
    }
}

/// The "detector" for inputs that are face crops already: one face, the whole image, score 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct WholeImage;

impl FaceDetector for WholeImage {
    fn name(&self) -> &str {
        "whole-image"
    }

    fn detect(&self, image: &Image) -> Result<Vec<Detection>> {
        let bbox = FaceBox::new(0.0, 0.0, image.width() as f32, image.height() as f32);
        Ok(vec![Detection::new(bbox, 1.0)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_image_is_one_face_covering_everything() {
        let image = Image::filled(40, 30, 3, 7).unwrap();
        let faces = WholeImage.detect(&image).unwrap();
        assert_eq!(faces.len(), 1);
        assert_eq!(faces[0].bbox, FaceBox::new(0.0, 0.0, 40.0, 30.0));
        assert_eq!(faces[0].score, 1.0);
        assert!(faces[0].eyes().is_none());
        let batch = WholeImage.detect_batch(&[image.clone(), image]).unwrap();
        assert_eq!(batch.len(), 2);
    }
}
