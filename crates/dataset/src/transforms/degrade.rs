//! Degradations used as augmentations: blur, JPEG recompression, noise, cutout.

use std::path::Path;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_range, clamp_u8, rebuild, uniform, ChaCha8Rng, Transform};
use crate::{Error, Image, Result};

/// Gaussian blur with a random sigma (torchvision `GaussianBlur`).
///
/// Sigma is drawn uniformly in `[min, max]`; the `kernel_size`-tap kernel (odd) samples the
/// Gaussian at integer offsets and is normalised to sum 1. The blur is separable (a horizontal
/// then a vertical pass in `f32`, rounded once) and borders are reflected without repeating the
/// edge pixel, like torchvision's `reflect` padding.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianBlur {
    /// Sigma range `(min, max)`, `0 < min <= max`.
    pub sigma: (f64, f64),
    /// Taps per axis; odd and positive.
    pub kernel_size: u32,
}

impl GaussianBlur {
    /// A blur with `kernel_size` taps and sigma drawn in `sigma`.
    pub fn new(kernel_size: u32, sigma: (f64, f64)) -> GaussianBlur {
        GaussianBlur { sigma, kernel_size }
    }

    /// Blurs `image` with a fixed `sigma`.
    pub fn blur(&self, image: &Image, sigma: f64) -> Result<Image> {
        if self.kernel_size.is_multiple_of(2) {
            return Err(Error::Config(format!(
                "GaussianBlur: kernel_size {} must be odd and positive",
                self.kernel_size
            )));
        }
        if !(sigma > 0.0 && sigma.is_finite()) {
            return Err(Error::Config(format!("GaussianBlur: sigma {sigma} must be positive")));
        }
        let (w, h, c) =
            (image.width() as usize, image.height() as usize, usize::from(image.channels()));
        if w == 0 || h == 0 {
            return Ok(image.clone());
        }
        let radius = (self.kernel_size / 2) as i64;
        let mut kernel: Vec<f32> =
            (-radius..=radius).map(|i| (-0.5 * (i as f64 / sigma).powi(2)).exp() as f32).collect();
        let total: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= total);

        // Reflected source indices per output position, so the inner loops stay branch-free.
        let taps = |n: usize| -> Vec<usize> {
            (0..n as i64).flat_map(|i| (-radius..=radius).map(move |o| reflect(i + o, n))).collect()
        };
        let (xs, ys) = (taps(w), taps(h));
        let k = kernel.len();
        let src = image.as_bytes();

        let mut tmp = vec![0f32; src.len()];
        for (src_row, tmp_row) in src.chunks_exact(w * c).zip(tmp.chunks_exact_mut(w * c)) {
            for (idx, out_px) in xs.chunks_exact(k).zip(tmp_row.chunks_exact_mut(c)) {
                for (&sx, &kw) in idx.iter().zip(&kernel) {
                    let px = src_row.get(sx * c..sx * c + c).unwrap_or(&[]);
                    for (o, &v) in out_px.iter_mut().zip(px) {
                        *o += kw * f32::from(v);
                    }
                }
            }
        }
        let row_len = w * c;
        let mut acc = vec![0f32; row_len];
        let mut out = vec![0u8; src.len()];
        for (idx, out_row) in ys.chunks_exact(k).zip(out.chunks_exact_mut(row_len)) {
            acc.fill(0.0);
            for (&sy, &kw) in idx.iter().zip(&kernel) {
                let row = tmp.get(sy * row_len..(sy + 1) * row_len).unwrap_or(&[]);
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += kw * v;
                }
            }
            for (o, &a) in out_row.iter_mut().zip(&acc) {
                *o = clamp_u8(a);
            }
        }
        rebuild(image.width(), image.height(), image.channels(), out)
    }
}

/// Reflects `i` into `0..n` without repeating the edge (`-1 -> 1`, `n -> n - 2`).
fn reflect(i: i64, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let period = 2 * (n as i64 - 1);
    let m = i.rem_euclid(period);
    (if m >= n as i64 { period - m } else { m }) as usize
}

impl Default for GaussianBlur {
    /// 5 taps, sigma in `[0.1, 2.0]` (torchvision's default sigma range).
    fn default() -> Self {
        GaussianBlur::new(5, (0.1, 2.0))
    }
}

impl Transform for GaussianBlur {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        check_range("GaussianBlur sigma", self.sigma, f64::MIN_POSITIVE)?;
        let sigma = uniform(rng, self.sigma.0, self.sigma.1);
        self.blur(&image, sigma)
    }
}

/// Encodes as JPEG at a random quality and decodes again, keeping size and channels.
///
/// The standard deepfake-detector augmentation: it teaches the model to ignore compression
/// artefacts, which otherwise separate real and fake sources for the wrong reason. Quality is
/// an integer drawn uniformly in `[min, max]` (both in `1..=100`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JpegRecompress {
    /// Quality range `(min, max)`, inclusive.
    pub quality: (u8, u8),
}

impl JpegRecompress {
    /// Recompression at a quality drawn in `[min, max]`.
    pub fn new(min: u8, max: u8) -> JpegRecompress {
        JpegRecompress { quality: (min, max) }
    }

    /// Recompresses `image` at a fixed `quality`.
    pub fn recompress(image: &Image, quality: u8) -> Result<Image> {
        let origin = Path::new("<JpegRecompress>");
        let bytes = image.encode_jpeg(quality, origin)?;
        let decoded = image::load_from_memory(&bytes)
            .map_err(|source| Error::Image { path: origin.to_path_buf(), source })?;
        let out = if image.channels() == 1 {
            Image::from(decoded.into_luma8())
        } else {
            Image::from(decoded.into_rgb8())
        };
        if (out.width(), out.height()) != (image.width(), image.height()) {
            return Err(Error::BadSample {
                id: format!("{}x{} image", image.width(), image.height()),
                message: format!("JPEG round trip came back {}x{}", out.width(), out.height()),
            });
        }
        Ok(out)
    }
}

impl Default for JpegRecompress {
    /// Qualities 60 to 100, the range common in deepfake-detection training recipes.
    fn default() -> Self {
        JpegRecompress::new(60, 100)
    }
}

impl Transform for JpegRecompress {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        let (lo, hi) = self.quality;
        if lo == 0 || lo > hi || hi > 100 {
            return Err(Error::Config(format!(
                "JpegRecompress: quality range ({lo}, {hi}) must be ordered within 1..=100"
            )));
        }
        let quality = rng.random_range(lo..=hi);
        JpegRecompress::recompress(&image, quality)
    }
}

/// Adds independent Gaussian noise to every value, then rounds and clamps to `[0, 255]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaussianNoise {
    /// Standard deviation in `u8` units (0 to 255), `>= 0`.
    pub std: f32,
}

impl GaussianNoise {
    /// Noise with standard deviation `std` (in `u8` units).
    pub fn new(std: f32) -> GaussianNoise {
        GaussianNoise { std }
    }
}

impl Default for GaussianNoise {
    /// `std = 5`, mild sensor-like noise.
    fn default() -> Self {
        GaussianNoise::new(5.0)
    }
}

impl Transform for GaussianNoise {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        if !(self.std >= 0.0 && self.std.is_finite()) {
            return Err(Error::Config(format!("GaussianNoise: std {} must be >= 0", self.std)));
        }
        if self.std == 0.0 {
            return Ok(image);
        }
        let std = self.std;
        let mut image = image;
        // Box-Muller yields two independent normals per pair of uniforms.
        for pair in image.as_bytes_mut().chunks_mut(2) {
            let u1 = 1.0 - rng.random::<f32>(); // in (0, 1], so ln is finite
            let u2: f32 = rng.random();
            let r = (-2.0 * u1.ln()).sqrt() * std;
            let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
            for (v, n) in pair.iter_mut().zip([r * c, r * s]) {
                *v = clamp_u8(f32::from(*v) + n);
            }
        }
        Ok(image)
    }
}

/// Fills `holes` random `size` x `size` squares with `fill` (DeVries & Taylor's cutout).
///
/// Each square lies wholly inside the image (its top-left corner is uniform over the valid
/// positions; a side longer than the image is cut to the image), so one hole always covers
/// exactly `min(size, w) * min(size, h)` pixels. Holes may overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cutout {
    /// Number of squares.
    pub holes: u32,
    /// Side of each square in pixels.
    pub size: u32,
    /// Value written to every channel inside a square.
    pub fill: u8,
}

impl Cutout {
    /// `holes` black squares of side `size`.
    pub fn new(holes: u32, size: u32) -> Cutout {
        Cutout { holes, size, fill: 0 }
    }
}

impl Default for Cutout {
    /// One black 16x16 square.
    fn default() -> Self {
        Cutout::new(1, 16)
    }
}

impl Transform for Cutout {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        let (w, h) = (image.width(), image.height());
        if w == 0 || h == 0 || self.size == 0 {
            return Ok(image);
        }
        let (sw, sh) = (self.size.min(w), self.size.min(h));
        let c = usize::from(image.channels());
        let mut image = image;
        let data = image.as_bytes_mut();
        for _ in 0..self.holes {
            let x0 = rng.random_range(0..=w - sw) as usize;
            let y0 = rng.random_range(0..=h - sh) as usize;
            for y in y0..y0 + sh as usize {
                let start = (y * w as usize + x0) * c;
                if let Some(span) = data.get_mut(start..start + sw as usize * c) {
                    span.fill(self.fill);
                }
            }
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample_rng;
    use super::super::testutil::{max_abs_diff, pattern};
    use super::*;

    #[test]
    fn blur_keeps_constant_and_shape() {
        for c in [1u8, 3] {
            let img = Image::filled(7, 5, c, 173).unwrap();
            let out = GaussianBlur::new(5, (0.5, 3.0))
                .apply(img.clone(), &mut sample_rng(0, 0, 1))
                .unwrap();
            assert_eq!(out, img);
            // A kernel wider than the image still reflects correctly.
            let out = GaussianBlur::new(11, (2.0, 2.0))
                .apply(img.clone(), &mut sample_rng(0, 0, 1))
                .unwrap();
            assert_eq!(out, img);
        }
        let img = pattern(7, 5, 3);
        let blur = GaussianBlur::default();
        let a = blur.apply(img.clone(), &mut sample_rng(1, 0, 0)).unwrap();
        assert_eq!(a, blur.apply(img.clone(), &mut sample_rng(1, 0, 0)).unwrap());
        assert_ne!(a, blur.apply(img.clone(), &mut sample_rng(2, 0, 0)).unwrap());
        assert_eq!((a.width(), a.height(), a.channels()), (7, 5, 3));
        assert!(GaussianBlur::new(4, (1.0, 1.0))
            .apply(img.clone(), &mut sample_rng(0, 0, 0))
            .is_err());
        assert!(GaussianBlur::new(3, (0.0, 1.0)).apply(img, &mut sample_rng(0, 0, 0)).is_err());
    }

    #[test]
    fn blur_hand_checked_weights() {
        // A 1-pixel-high impulse: a 3-tap kernel with sigma 1 has weights
        // e^-0.5 / (1 + 2 e^-0.5) = 0.274068 beside and 0.451862 in the centre.
        let img = Image::from_raw(5, 1, 1, vec![0, 0, 200, 0, 0]).unwrap();
        let out = GaussianBlur::new(3, (1.0, 1.0)).blur(&img, 1.0).unwrap();
        assert_eq!(out.as_bytes(), &[0, 55, 90, 55, 0]);
        // Reflection at the border: the value at -1 is the value at 1.
        let img = Image::from_raw(3, 1, 1, vec![0, 100, 0]).unwrap();
        let out = GaussianBlur::new(3, (1.0, 1.0)).blur(&img, 1.0).unwrap();
        assert_eq!(out.as_bytes(), &[55, 45, 55]);
        assert_eq!(reflect(-1, 5), 1);
        assert_eq!(reflect(5, 5), 3);
        assert_eq!(reflect(-7, 3), 1);
    }

    #[test]
    fn jpeg_keeps_size_and_channels() {
        for c in [1u8, 3] {
            let img = pattern(7, 5, c);
            let j = JpegRecompress::new(20, 90);
            let out = j.apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap();
            assert_eq!((out.width(), out.height(), out.channels()), (7, 5, c));
            assert_eq!(out, j.apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap());
        }
        // High quality on a smooth image is close to lossless.
        let smooth = Image::filled(16, 8, 3, 120).unwrap();
        let out = JpegRecompress::recompress(&smooth, 100).unwrap();
        assert!(max_abs_diff(&out, &smooth) <= 2);
        assert!(JpegRecompress::new(0, 50)
            .apply(smooth.clone(), &mut sample_rng(0, 0, 0))
            .is_err());
        assert!(JpegRecompress::new(80, 50).apply(smooth, &mut sample_rng(0, 0, 0)).is_err());
    }

    #[test]
    fn noise_statistics_and_determinism() {
        let img = Image::filled(64, 48, 3, 128).unwrap();
        let noise = GaussianNoise::new(10.0);
        let a = noise.apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap();
        assert_eq!(a, noise.apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap());
        assert_ne!(a, noise.apply(img.clone(), &mut sample_rng(0, 0, 1)).unwrap());
        let n = a.as_bytes().len() as f64;
        let mean = a.as_bytes().iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = a.as_bytes().iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
        assert!((mean - 128.0).abs() < 0.5, "mean {mean}");
        assert!((var.sqrt() - 10.0).abs() < 0.5, "std {}", var.sqrt());
        assert_eq!(
            GaussianNoise::new(0.0).apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap(),
            img
        );
        assert!(GaussianNoise::new(-1.0).apply(img, &mut sample_rng(0, 0, 0)).is_err());
    }

    #[test]
    fn cutout_changes_exactly_one_square() {
        let img = Image::filled(9, 7, 3, 100).unwrap();
        for i in 0..20 {
            let out = Cutout::new(1, 3).apply(img.clone(), &mut sample_rng(0, 0, i)).unwrap();
            let changed: Vec<(u32, u32)> = (0..7)
                .flat_map(|y| (0..9).map(move |x| (x, y)))
                .filter(|&(x, y)| out.pixel(x, y).unwrap() != img.pixel(x, y).unwrap())
                .collect();
            assert_eq!(changed.len(), 9);
            assert!(changed.iter().all(|&(x, y)| out.pixel(x, y).unwrap() == [0, 0, 0]));
            let (xs, ys): (Vec<u32>, Vec<u32>) = changed.iter().copied().unzip();
            assert_eq!(xs.iter().max().unwrap() - xs.iter().min().unwrap(), 2);
            assert_eq!(ys.iter().max().unwrap() - ys.iter().min().unwrap(), 2);
        }
        // A hole larger than the image is cut to it: taller than 7 rows here.
        let out = Cutout { holes: 1, size: 8, fill: 7 }
            .apply(img.clone(), &mut sample_rng(0, 0, 0))
            .unwrap();
        assert_eq!(out.as_bytes().iter().filter(|&&v| v == 7).count(), 8 * 7 * 3);
        let a = Cutout::new(3, 2).apply(img.clone(), &mut sample_rng(1, 0, 0)).unwrap();
        assert_eq!(a, Cutout::new(3, 2).apply(img.clone(), &mut sample_rng(1, 0, 0)).unwrap());
        assert_ne!(a, Cutout::new(3, 2).apply(img, &mut sample_rng(2, 0, 0)).unwrap());
    }
}
