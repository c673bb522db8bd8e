//! Where a face is in an image: its box and its five landmarks, the one representation shared
//! by the CelebA reader, the synthetic generator and (later) face detectors and croppers.
//!
//! ```
//! use deeprecog_dataset::face::{FaceBox, Landmarks};
//!
//! // `list_bbox_celeba.txt` stores integers; they are exact in f32.
//! let a = FaceBox::new(95.0, 71.0, 226.0, 313.0);
//! assert_eq!(a.rounded(), [95, 71, 226, 313]);
//! assert_eq!((a.right(), a.bottom()), (321.0, 384.0));
//! let b = FaceBox::new(95.0, 71.0, 113.0, 313.0);
//! assert!((a.iou(&b) - 0.5).abs() < 1e-6);
//!
//! let lm = Landmarks::from_array([69.0, 109.0, 106.0, 113.0, 77.0, 142.0, 73.0, 152.0, 108.0, 154.0]);
//! assert_eq!(lm.nose, [77.0, 142.0]);
//! assert_eq!(lm.rounded()[9], 154);
//! ```

/// A face box in pixels: left and top edges, width and height.
///
/// Coordinates are `f32` rather than integers: detectors produce sub-pixel boxes (with a
/// score kept beside the box), crops are computed with margins and scales in floating point,
/// and the integer boxes of CelebA's `list_bbox_celeba.txt` are exact in `f32` (every integer
/// up to 2^24 is), so one type serves both without loss. [`FaceBox::rounded`] gives the
/// integers a file stores.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct FaceBox {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width.
    pub width: f32,
    /// Height.
    pub height: f32,
}

impl FaceBox {
    /// A box from its left and top edges and its size.
    pub fn new(x: f32, y: f32, width: f32, height: f32) -> FaceBox {
        FaceBox { x, y, width, height }
    }

    /// Right edge (`x + width`).
    pub fn right(&self) -> f32 {
        self.x + self.width
    }

    /// Bottom edge (`y + height`).
    pub fn bottom(&self) -> f32 {
        self.y + self.height
    }

    /// Area in square pixels (0 for a box with a negative side).
    pub fn area(&self) -> f32 {
        self.width.max(0.0) * self.height.max(0.0)
    }

    /// Intersection over union with `other` (0 when either box is empty).
    pub fn iou(&self, other: &FaceBox) -> f32 {
        let w = (self.right().min(other.right()) - self.x.max(other.x)).max(0.0);
        let h = (self.bottom().min(other.bottom()) - self.y.max(other.y)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union > 0.0 {
            inter / union
        } else {
            0.0
        }
    }

    /// `[x, y, width, height]` rounded to whole pixels, as `list_bbox_celeba.txt` stores them.
    pub fn rounded(&self) -> [i32; 4] {
        [self.x, self.y, self.width, self.height].map(|v| v.round() as i32)
    }
}

/// The five facial landmarks of `list_landmarks_align_celeba.txt`, in pixels, each `[x, y]`;
/// "left" is the image's left, as in CelebA. `f32` for the same reasons as [`FaceBox`]: the
/// renderer and detectors place them with sub-pixel precision, CelebA's integers are exact.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Landmarks {
    /// Centre of the eye on the image's left.
    pub left_eye: [f32; 2],
    /// Centre of the eye on the image's right.
    pub right_eye: [f32; 2],
    /// Nose tip.
    pub nose: [f32; 2],
    /// Mouth corner on the image's left.
    pub left_mouth: [f32; 2],
    /// Mouth corner on the image's right.
    pub right_mouth: [f32; 2],
}

impl Landmarks {
    /// From the ten coordinates in file order (`lefteye_x lefteye_y righteye_x ...`).
    pub fn from_array(v: [f32; 10]) -> Landmarks {
        Landmarks {
            left_eye: [v[0], v[1]],
            right_eye: [v[2], v[3]],
            nose: [v[4], v[5]],
            left_mouth: [v[6], v[7]],
            right_mouth: [v[8], v[9]],
        }
    }

    /// The five points in file order: left eye, right eye, nose, left and right mouth corner.
    pub fn points(&self) -> [[f32; 2]; 5] {
        [self.left_eye, self.right_eye, self.nose, self.left_mouth, self.right_mouth]
    }

    /// The ten coordinates in file order (`lefteye_x lefteye_y righteye_x ...`).
    pub fn to_array(&self) -> [f32; 10] {
        let [a, b, c, d, e] = self.points();
        [a[0], a[1], b[0], b[1], c[0], c[1], d[0], d[1], e[0], e[1]]
    }

    /// The ten coordinates rounded to whole pixels, as the file stores them.
    pub fn rounded(&self) -> [i32; 10] {
        self.to_array().map(|v| v.round() as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_and_landmarks_roundtrip() {
        let a = FaceBox::new(10.0, 20.0, 30.0, 40.0);
        assert_eq!(a.area(), 1200.0);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&FaceBox::new(100.0, 0.0, 5.0, 5.0)), 0.0);
        assert_eq!(FaceBox::default().iou(&FaceBox::default()), 0.0);
        assert_eq!(FaceBox::new(1.4, 1.6, 2.5, 3.0).rounded(), [1, 2, 3, 3]);
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.4];
        let lm = Landmarks::from_array(v);
        assert_eq!(lm.to_array(), v);
        assert_eq!(lm.right_mouth, [9.0, 10.4]);
        assert_eq!(lm.rounded(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    }
}
