//! Detections drawn onto a copy of an image, for looking at what a detector found: each box as
//! a 2-pixel outline and each keypoint as a small filled square, nothing else (no labels or
//! scores, which would need a font).
//!
//! ```
//! use deeprecog_dataset::face::FaceBox;
//! use deeprecog_dataset::Image;
//! use deeprecog_detector::draw::{draw_detections, BOX_COLOUR};
//! use deeprecog_detector::Detection;
//!
//! let image = Image::filled(64, 48, 3, 0).unwrap();
//! let face = Detection::new(FaceBox::new(10.0, 8.0, 30.0, 30.0), 0.9);
//! let drawn = draw_detections(&image, &[face]);
//! assert_eq!(drawn.pixel(10, 20), Some(&BOX_COLOUR[..]));
//! assert_eq!(drawn.pixel(25, 20), Some(&[0, 0, 0][..]));
//! ```

use deeprecog_dataset::Image;

use crate::face::Detection;

/// The colour of the box outlines (bright green).
pub const BOX_COLOUR: [u8; 3] = [0, 255, 0];
/// The colour of the keypoints (magenta, distinct from the boxes and from skin).
pub const KEYPOINT_COLOUR: [u8; 3] = [255, 0, 255];
/// Thickness of the box outlines in pixels; the outline lies on and inside the box's edge.
pub const LINE_WIDTH: i64 = 2;

/// A copy of `image` as RGB (a gray image is replicated to three channels) with every face's
/// box and keypoints drawn on it.
///
/// Box edges are whole pixels: the outline covers the pixels the box touches, from
/// `floor(x)` to `ceil(x + width) - 1` (likewise vertically). Whatever lies outside the image
/// is left out, so a box partly or wholly outside it is fine; a box or keypoint whose
/// coordinates are not finite numbers is not drawn.
pub fn draw_detections(image: &Image, faces: &[Detection]) -> Image {
    let mut out = image.to_rgb();
    // Squares of 3 pixels on small frames, growing with the picture so they stay visible on a
    // 1080p one.
    let half = (i64::from(out.width().min(out.height())) / 200).max(1);
    for face in faces {
        let b = &face.bbox;
        let edges = [
            f64::from(b.x).floor(),
            f64::from(b.y).floor(),
            (f64::from(b.x) + f64::from(b.width)).ceil() - 1.0,
            (f64::from(b.y) + f64::from(b.height)).ceil() - 1.0,
        ];
        if edges.iter().all(|e| e.is_finite()) {
            // `as` saturates, so a box millions of pixels away stays far away.
            let [left, top, right, bottom] = edges.map(|e| e as i64);
            if right >= left && bottom >= top {
                let w = LINE_WIDTH - 1;
                fill(&mut out, left, top, right, top.saturating_add(w), BOX_COLOUR);
                fill(&mut out, left, bottom.saturating_sub(w), right, bottom, BOX_COLOUR);
                fill(&mut out, left, top, left.saturating_add(w), bottom, BOX_COLOUR);
                fill(&mut out, right.saturating_sub(w), top, right, bottom, BOX_COLOUR);
            }
        }
        for &[x, y] in &face.keypoints {
            if x.is_finite() && y.is_finite() {
                let (x, y) = (x.floor() as i64, y.floor() as i64);
                let (x0, y0) = (x.saturating_sub(half), y.saturating_sub(half));
                let (x1, y1) = (x.saturating_add(half), y.saturating_add(half));
                fill(&mut out, x0, y0, x1, y1, KEYPOINT_COLOUR);
            }
        }
    }
    out
}

/// Paints the rectangle from (`x0`, `y0`) to (`x1`, `y1`), both inclusive, clipped to the image.
fn fill(image: &mut Image, x0: i64, y0: i64, x1: i64, y1: i64, colour: [u8; 3]) {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    let (x0, x1) = (x0.max(0), x1.min(w - 1));
    let (y0, y1) = (y0.max(0), y1.min(h - 1));
    if x0 > x1 || y0 > y1 {
        return;
    }
    for y in y0..=y1 {
        for x in x0..=x1 {
            // In range by the clipping above, so the casts are lossless.
            if let Some(pixel) = image.pixel_mut(x as u32, y as u32) {
                pixel.copy_from_slice(&colour);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deeprecog_dataset::face::FaceBox;

    const GRAY: [u8; 3] = [100, 100, 100];

    fn face(x: f32, y: f32, w: f32, h: f32, keypoints: Vec<[f32; 2]>) -> Detection {
        Detection { bbox: FaceBox::new(x, y, w, h), score: 0.9, keypoints }
    }

    fn at(image: &Image, x: u32, y: u32) -> [u8; 3] {
        let p = image.pixel(x, y).unwrap();
        [p[0], p[1], p[2]]
    }

    #[test]
    fn outlines_and_keypoints_change_only_their_pixels() {
        let image = Image::filled(40, 40, 3, 100).unwrap();
        let drawn = draw_detections(&image, &[face(10.0, 10.0, 20.0, 20.0, vec![[20.0, 15.0]])]);
        assert_eq!((drawn.width(), drawn.height(), drawn.channels()), (40, 40, 3));
        // The box covers pixels 10..=29: its outline is columns / rows 10, 11, 28 and 29.
        for (x, y) in [(10, 20), (11, 20), (28, 20), (29, 20), (20, 10), (20, 11), (20, 29)] {
            assert_eq!(at(&drawn, x, y), BOX_COLOUR, "({x}, {y})");
        }
        for (x, y) in [(12, 20), (27, 20), (20, 25), (9, 20), (30, 20), (20, 30), (0, 0)] {
            assert_eq!(at(&drawn, x, y), GRAY, "({x}, {y})");
        }
        for (x, y) in [(19, 14), (20, 15), (21, 16)] {
            assert_eq!(at(&drawn, x, y), KEYPOINT_COLOUR, "({x}, {y})");
        }
        assert_eq!(at(&drawn, 23, 15), GRAY);
        // The input is untouched.
        assert_eq!(image, Image::filled(40, 40, 3, 100).unwrap());
    }

    #[test]
    fn boxes_outside_the_image_are_clipped_without_panicking() {
        let image = Image::filled(40, 30, 1, 100).unwrap();
        let far = [
            face(-50.0, -50.0, 10.0, 10.0, vec![[-100.0, 5.0], [5.0, 1e9]]),
            face(1000.0, 1000.0, 5.0, 5.0, vec![]),
            face(f32::MAX, f32::MIN, f32::MAX, 3.0, vec![[f32::MAX, f32::MIN]]),
            face(f32::NAN, 0.0, 10.0, f32::INFINITY, vec![[f32::NAN, 3.0]]),
            face(-1e30, -1e30, -5.0, 2.0, vec![]),
            // Encloses the whole image: every edge is outside.
            face(-10.0, -10.0, 100.0, 100.0, vec![]),
        ];
        let drawn = draw_detections(&image, &far);
        assert_eq!(drawn, Image::filled(40, 30, 3, 100).unwrap());

        // Partly outside: the visible left and top edges are drawn, the rest is clipped.
        let drawn = draw_detections(&image, &[face(35.0, 25.0, 20.0, 20.0, vec![[39.5, 29.5]])]);
        assert_eq!(at(&drawn, 35, 28), BOX_COLOUR);
        assert_eq!(at(&drawn, 37, 26), BOX_COLOUR);
        assert_eq!(at(&drawn, 38, 28), KEYPOINT_COLOUR);
        assert_eq!(at(&drawn, 37, 28), GRAY);
        assert_eq!(at(&drawn, 34, 28), GRAY);
    }
}
