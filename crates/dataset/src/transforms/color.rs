//! Colour transforms: grayscale conversion and colour jitter.

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_range, clamp_u8, rebuild, uniform, ChaCha8Rng, Transform};
use crate::{Error, Image, Result};

/// Pillow's `convert("L")`: ITU-R 601-2 luma `L = R*299/1000 + G*587/1000 + B*114/1000`,
/// evaluated as Pillow does, in 16-bit fixed point with rounding (bit-exact for all 2^24
/// colours; a plain `/ 1000` floors and disagrees on about half of them).
#[inline]
pub(crate) fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// Converts RGB to luma, as Pillow's `convert("L")` does, bit for bit.
///
/// `output_channels` is 1 (a gray image) or 3 (the luma repeated in R, G and B, like
/// torchvision's `Grayscale(num_output_channels=3)`, for models that expect RGB input). A
/// 1-channel input is passed through (or replicated to 3 channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grayscale {
    /// 1 or 3.
    pub output_channels: u8,
}

impl Grayscale {
    /// Converts to a 1-channel image.
    pub fn new() -> Grayscale {
        Grayscale { output_channels: 1 }
    }

    /// Converts to gray but keeps 3 (equal) channels.
    pub fn keep_rgb() -> Grayscale {
        Grayscale { output_channels: 3 }
    }

    /// Converts `image` (no randomness involved).
    pub fn convert(&self, image: Image) -> Result<Image> {
        let (w, h) = (image.width(), image.height());
        match (image.channels(), self.output_channels) {
            (1, 1) => Ok(image),
            (1, 3) => Ok(image.to_rgb()),
            (3, 1) => {
                let data = image.as_bytes().chunks_exact(3).map(px_luma).collect();
                rebuild(w, h, 1, data)
            }
            (3, 3) => {
                let mut image = image;
                for p in image.as_bytes_mut().chunks_exact_mut(3) {
                    let l = px_luma(p);
                    p.fill(l);
                }
                Ok(image)
            }
            (_, n) => {
                Err(Error::Config(format!("Grayscale: output_channels must be 1 or 3, not {n}")))
            }
        }
    }
}

#[inline]
fn px_luma(p: &[u8]) -> u8 {
    match *p {
        [r, g, b] => luma(r, g, b),
        _ => 0,
    }
}

impl Default for Grayscale {
    fn default() -> Self {
        Grayscale::new()
    }
}

impl Transform for Grayscale {
    fn apply(&self, image: Image, _rng: &mut ChaCha8Rng) -> Result<Image> {
        self.convert(image)
    }
}

/// Random brightness, contrast, saturation and hue changes (torchvision `ColorJitter`).
///
/// Factors are drawn as torchvision draws them: brightness, contrast and saturation uniform in
/// `[max(0, 1 - v), 1 + v]`, hue shift uniform in `[-hue, hue]` (fraction of a turn,
/// `hue <= 0.5`). The four adjustments run in a random order (a seeded permutation, as
/// torchvision does).
///
/// - brightness: `x * f`;
/// - contrast: blend with the mean luma of the whole image, `f * x + (1 - f) * mean`;
/// - saturation: blend with the pixel's own luma;
/// - hue: rotate the HSV hue.
///
/// Unlike torchvision on `u8` tensors, the intermediate results stay in `f32` (clamped to
/// `[0, 255]` after each step, as torchvision clamps) and are rounded once at the end, so
/// chaining adjustments does not accumulate truncation. On 1-channel images saturation and hue
/// are no-ops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ColorJitter {
    /// Brightness strength, `>= 0`.
    pub brightness: f32,
    /// Contrast strength, `>= 0`.
    pub contrast: f32,
    /// Saturation strength, `>= 0`.
    pub saturation: f32,
    /// Largest hue shift as a fraction of a full turn, in `[0, 0.5]`.
    pub hue: f32,
}

impl ColorJitter {
    /// A jitter with the four strengths.
    pub fn new(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> ColorJitter {
        ColorJitter { brightness, contrast, saturation, hue }
    }

    fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            check_range(&format!("ColorJitter {name}"), (0.0, f64::from(v)), 0.0)?;
        }
        if !(0.0..=0.5).contains(&self.hue) {
            return Err(Error::Config(format!("ColorJitter: hue {} is not in [0, 0.5]", self.hue)));
        }
        Ok(())
    }

    /// Applies fixed factors in a fixed order (brightness, contrast, saturation, hue).
    pub fn adjust(
        image: Image,
        brightness: f32,
        contrast: f32,
        saturation: f32,
        hue: f32,
    ) -> Result<Image> {
        Self::adjust_in_order(image, [0, 1, 2, 3], [brightness, contrast, saturation, hue])
    }

    fn adjust_in_order(image: Image, order: [usize; 4], factors: [f32; 4]) -> Result<Image> {
        let [b, c, s, h] = factors;
        if b == 1.0 && c == 1.0 && s == 1.0 && h == 0.0 {
            return Ok(image);
        }
        let (w, hgt, ch) = (image.width(), image.height(), image.channels());
        let mut buf: Vec<f32> = image.as_bytes().iter().map(|&v| f32::from(v)).collect();
        let rgb = ch == 3;
        for step in order {
            match step {
                0 if b != 1.0 => buf.iter_mut().for_each(|v| *v = (*v * b).clamp(0.0, 255.0)),
                1 if c != 1.0 => {
                    let mean = mean_luma(&buf, rgb);
                    buf.iter_mut().for_each(|v| *v = (c * *v + (1.0 - c) * mean).clamp(0.0, 255.0));
                }
                2 if rgb && s != 1.0 => {
                    for p in buf.chunks_exact_mut(3) {
                        let l = luma_f(p);
                        p.iter_mut().for_each(|v| *v = (s * *v + (1.0 - s) * l).clamp(0.0, 255.0));
                    }
                }
                3 if rgb && h != 0.0 => buf.chunks_exact_mut(3).for_each(|p| shift_hue(p, h)),
                _ => {}
            }
        }
        rebuild(w, hgt, ch, buf.into_iter().map(clamp_u8).collect())
    }
}

/// Luma with the same weights as [`luma`], in floating point (for intermediate values).
#[inline]
fn luma_f(p: &[f32]) -> f32 {
    match *p {
        [r, g, b] => 0.299 * r + 0.587 * g + 0.114 * b,
        _ => 0.0,
    }
}

fn mean_luma(buf: &[f32], rgb: bool) -> f32 {
    if buf.is_empty() {
        return 0.0;
    }
    // Summing in f64 keeps the mean exact enough for large images.
    if rgb {
        let sum: f64 = buf.chunks_exact(3).map(|p| f64::from(luma_f(p))).sum();
        (sum / (buf.len() / 3) as f64) as f32
    } else {
        let sum: f64 = buf.iter().map(|&v| f64::from(v)).sum();
        (sum / buf.len() as f64) as f32
    }
}

/// Rotates the hue of one RGB pixel (values in `[0, 255]`) by `shift` turns.
fn shift_hue(p: &mut [f32], shift: f32) {
    let [r, g, b] = match *p {
        [r, g, b] => [r, g, b],
        _ => return,
    };
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    if delta <= 0.0 {
        return; // gray: no hue to rotate
    }
    let hue6 = if max == r {
        ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    };
    let h = (hue6 / 6.0 + shift).rem_euclid(1.0) * 6.0;
    // V = max and C = delta are unchanged by a hue rotation.
    let x = delta * (1.0 - ((h % 2.0) - 1.0).abs());
    let (r1, g1, b1) = match h as u32 {
        0 => (delta, x, 0.0),
        1 => (x, delta, 0.0),
        2 => (0.0, delta, x),
        3 => (0.0, x, delta),
        4 => (x, 0.0, delta),
        _ => (delta, 0.0, x),
    };
    p.copy_from_slice(&[r1 + min, g1 + min, b1 + min]);
}

impl Transform for ColorJitter {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        self.validate()?;
        // torchvision draws the permutation first, then the factors.
        let mut order = [0usize, 1, 2, 3];
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let factor = |rng: &mut ChaCha8Rng, v: f32| {
            uniform(rng, f64::from((1.0 - v).max(0.0)), f64::from(1.0 + v)) as f32
        };
        let b = factor(rng, self.brightness);
        let c = factor(rng, self.contrast);
        let s = factor(rng, self.saturation);
        let h = uniform(rng, -f64::from(self.hue), f64::from(self.hue)) as f32;
        ColorJitter::adjust_in_order(image, order, [b, c, s, h])
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample_rng;
    use super::super::testutil::{golden_cases, image_from_json, max_abs_diff, pattern};
    use super::*;

    #[test]
    fn grayscale_matches_pillow_exactly() {
        let cases = golden_cases("grayscale");
        assert_eq!(cases.len(), 2);
        for case in cases {
            let input = image_from_json(&case["input"]);
            let expected = image_from_json(&case["expected"]);
            let out = Grayscale::new().apply(input.clone(), &mut sample_rng(0, 0, 0)).unwrap();
            assert_eq!(out, expected, "{}", case["name"]);
            let rgb = Grayscale::keep_rgb().apply(input, &mut sample_rng(0, 0, 0)).unwrap();
            assert_eq!(rgb, expected.to_rgb());
        }
    }

    #[test]
    fn grayscale_channels() {
        let gray = pattern(7, 5, 1);
        assert_eq!(Grayscale::new().convert(gray.clone()).unwrap(), gray);
        assert_eq!(Grayscale::keep_rgb().convert(gray.clone()).unwrap().channels(), 3);
        assert!(Grayscale { output_channels: 2 }.convert(gray).is_err());
    }

    #[test]
    fn jitter_zero_is_identity_and_seeded() {
        let img = pattern(7, 5, 3);
        let out = ColorJitter::default().apply(img.clone(), &mut sample_rng(3, 0, 0)).unwrap();
        assert_eq!(out, img);
        let j = ColorJitter::new(0.4, 0.4, 0.4, 0.1);
        let a = j.apply(img.clone(), &mut sample_rng(3, 0, 0)).unwrap();
        assert_eq!(a, j.apply(img.clone(), &mut sample_rng(3, 0, 0)).unwrap());
        assert_ne!(a, j.apply(img.clone(), &mut sample_rng(4, 0, 0)).unwrap());
        assert_eq!((a.width(), a.height(), a.channels()), (7, 5, 3));
        assert!(ColorJitter::new(0.0, 0.0, 0.0, 0.6)
            .apply(img.clone(), &mut sample_rng(0, 0, 0))
            .is_err());
        assert!(ColorJitter::new(-0.1, 0.0, 0.0, 0.0)
            .apply(img, &mut sample_rng(0, 0, 0))
            .is_err());
        let gray = pattern(7, 5, 1);
        let g = j.apply(gray, &mut sample_rng(3, 0, 0)).unwrap();
        assert_eq!(g.channels(), 1);
    }

    #[test]
    fn jitter_fixed_factors_hand_checked() {
        let img = Image::from_raw(2, 1, 3, vec![100, 50, 200, 10, 20, 30]).unwrap();
        // Brightness 1.5: each value times 1.5, clamped.
        let out = ColorJitter::adjust(img.clone(), 1.5, 1.0, 1.0, 0.0).unwrap();
        assert_eq!(out.as_bytes(), &[150, 75, 255, 15, 30, 45]);
        // Saturation 0: every pixel becomes its luma.
        let out = ColorJitter::adjust(img.clone(), 1.0, 1.0, 0.0, 0.0).unwrap();
        let gray = Grayscale::keep_rgb().convert(img.clone()).unwrap();
        assert!(max_abs_diff(&out, &gray) <= 1);
        // Contrast 0: every value becomes the mean luma (0.299, 0.587, 0.114 weights).
        let mean = (0.299 * 100.0
            + 0.587 * 50.0
            + 0.114 * 200.0
            + 0.299 * 10.0
            + 0.587 * 20.0
            + 0.114 * 30.0)
            / 2.0;
        let out = ColorJitter::adjust(img.clone(), 1.0, 0.0, 1.0, 0.0).unwrap();
        assert!(out.as_bytes().iter().all(|&v| v == (mean as f32).round() as u8));
        // Hue: a half turn maps pure red to cyan, a third of a turn red to green.
        let red = Image::from_raw(1, 1, 3, vec![255, 0, 0]).unwrap();
        assert_eq!(
            ColorJitter::adjust(red.clone(), 1.0, 1.0, 1.0, 0.5).unwrap().as_bytes(),
            &[0, 255, 255]
        );
        assert_eq!(
            ColorJitter::adjust(red.clone(), 1.0, 1.0, 1.0, 1.0 / 3.0).unwrap().as_bytes(),
            &[0, 255, 0]
        );
        assert_eq!(
            ColorJitter::adjust(red, 1.0, 1.0, 1.0, -1.0 / 3.0).unwrap().as_bytes(),
            &[0, 0, 255]
        );
        // A full hue turn is the identity for any colour.
        let out = ColorJitter::adjust(img.clone(), 1.0, 1.0, 1.0, 0.5).unwrap();
        let back = ColorJitter::adjust(out, 1.0, 1.0, 1.0, -0.5).unwrap();
        assert!(max_abs_diff(&back, &img) <= 1);
    }
}
