//! Scores that need no learning, reported next to every trained detector so that a model is
//! shown to learn more than they do: the variance of the Laplacian of a face crop (a sharpness
//! measure: swapped faces are often blurrier than the frame around them), and the frame-to-frame
//! change of a video's face crops (the DFDC report's temporal cue: a manipulation that is
//! re-done every frame flickers).
//!
//! ```
//! use deeprecog_dataset::Image;
//! use deeprecog_detector::baseline::laplacian_variance;
//!
//! let flat = Image::filled(16, 12, 3, 90)?;
//! assert_eq!(laplacian_variance(&flat), 0.0);
//! # Ok::<(), deeprecog_dataset::Error>(())
//! ```

use deeprecog_dataset::Image;

/// Luma of every pixel (ITU-R BT.601 weights, as OpenCV's and Pillow's greyscale use), in
/// `f64` without rounding, row-major.
fn luma(image: &Image) -> Vec<f64> {
    let c = usize::from(image.channels()).max(1);
    image
        .as_bytes()
        .chunks_exact(c)
        .map(|p| match p {
            [r, g, b, ..] => 0.299 * f64::from(*r) + 0.587 * f64::from(*g) + 0.114 * f64::from(*b),
            [v, ..] => f64::from(*v),
            [] => 0.0,
        })
        .collect()
}

/// Index of `i + d` reflected at the borders without repeating the edge (OpenCV's default
/// `BORDER_REFLECT_101`: `-1 -> 1`, `n -> n - 2`).
fn reflect101(i: usize, d: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let j = i as isize + d;
    let last = n as isize - 1;
    let j = if j < 0 {
        -j
    } else if j > last {
        2 * last - j
    } else {
        j
    };
    j.clamp(0, last) as usize
}

/// Variance of the 4-neighbour Laplacian (`[[0,1,0],[1,-4,1],[0,1,0]]`) of the image's luma,
/// with OpenCV's reflected borders: `cv2.Laplacian(gray, cv2.CV_64F).var()` on an unrounded
/// greyscale. Higher is sharper; 0 for a flat image.
pub fn laplacian_variance(image: &Image) -> f64 {
    let (w, h) = (image.width() as usize, image.height() as usize);
    if w == 0 || h == 0 {
        return 0.0;
    }
    let y = luma(image);
    let at = |x: usize, yy: usize| y[yy * w + x];
    let mut sum = 0.0;
    let mut sum_sq = 0.0;
    for row in 0..h {
        let (up, down) = (reflect101(row, -1, h), reflect101(row, 1, h));
        for col in 0..w {
            let (left, right) = (reflect101(col, -1, w), reflect101(col, 1, w));
            let v =
                at(col, up) + at(col, down) + at(left, row) + at(right, row) - 4.0 * at(col, row);
            sum += v;
            sum_sq += v * v;
        }
    }
    let n = (w * h) as f64;
    let mean = sum / n;
    (sum_sq / n - mean * mean).max(0.0)
}

/// Mean absolute difference between two images of one size, scaled to `[0, 1]`; `None` when
/// the sizes or channel counts differ.
pub fn mean_abs_change(a: &Image, b: &Image) -> Option<f64> {
    if (a.width(), a.height(), a.channels()) != (b.width(), b.height(), b.channels()) {
        return None;
    }
    let n = a.as_bytes().len();
    if n == 0 {
        return None;
    }
    let total: u64 =
        a.as_bytes().iter().zip(b.as_bytes()).map(|(&x, &y)| u64::from(x.abs_diff(y))).sum();
    Some(total as f64 / (n as f64 * 255.0))
}

/// The temporal score of a video: the mean [`mean_abs_change`] between consecutive face crops
/// (in frame order, all resized to one size by the caller). `None` with fewer than two crops.
pub fn temporal_change(crops: &[Image]) -> Option<f64> {
    let changes: Vec<f64> =
        crops.windows(2).filter_map(|pair| mean_abs_change(&pair[0], &pair[1])).collect();
    if changes.is_empty() {
        None
    } else {
        Some(changes.iter().sum::<f64>() / changes.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Golden values from `tests/golden/laplacian_variance.py` (NumPy, OpenCV's kernel and
    /// reflect-101 borders written out independently), on the deterministic 7x5 RGB pattern
    /// `p[y][x][c] = (x * 37 + y * 91 + c * 53) % 256`.
    #[test]
    fn matches_the_numpy_reference() {
        let (w, h) = (7u32, 5u32);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3u32 {
                    data.push(((x * 37 + y * 91 + c * 53) % 256) as u8);
                }
            }
        }
        let image = Image::from_raw(w, h, 3, data).unwrap();
        let v = laplacian_variance(&image);
        let golden: f64 =
            include_str!("../tests/golden/laplacian_variance.txt").trim().parse().unwrap();
        assert!((v - golden).abs() < 1e-9 * golden.max(1.0), "{v} vs {golden}");
    }

    #[test]
    fn blur_lowers_it_and_flat_images_have_none() {
        let sharp = Image::from_raw(
            8,
            8,
            1,
            (0..64).map(|i| if (i / 8 + i % 8) % 2 == 0 { 200 } else { 20 }).collect(),
        )
        .unwrap();
        let blurred = deeprecog_dataset::transforms::GaussianBlur::new(5, (1.5, 1.5))
            .blur(&sharp, 1.5)
            .unwrap();
        assert!(laplacian_variance(&sharp) > 10.0 * laplacian_variance(&blurred));
        assert_eq!(laplacian_variance(&Image::filled(3, 1, 3, 7).unwrap()), 0.0);
        assert_eq!(laplacian_variance(&Image::filled(1, 1, 1, 7).unwrap()), 0.0);
    }

    #[test]
    fn temporal_change_is_the_mean_step() {
        let a = Image::filled(2, 2, 1, 0).unwrap();
        let b = Image::filled(2, 2, 1, 255).unwrap();
        let c = Image::filled(2, 2, 1, 255).unwrap();
        assert_eq!(temporal_change(&[a.clone(), b, c]), Some(0.5));
        assert_eq!(temporal_change(std::slice::from_ref(&a)), None);
        assert_eq!(mean_abs_change(&a, &Image::filled(3, 2, 1, 0).unwrap()), None);
    }
}
