//! Geometric transforms: resize, centre crop, horizontal flip, random affine.

use std::cell::RefCell;

use fast_image_resize as fir;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{check_probability, check_range, clamp_u8, rebuild, uniform, ChaCha8Rng, Transform};
use crate::{Error, Image, Result};

/// The resampling filter of [`Resize`].
///
/// Every filter except [`Filter::Nearest`] is a convolution whose support grows with the
/// downscale factor (antialiasing), as Pillow's `resize` does; torchvision's `antialias=True`
/// matches it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Filter {
    /// Nearest neighbour (Pillow `NEAREST`).
    Nearest,
    /// Triangle filter (Pillow `BILINEAR`).
    #[default]
    Bilinear,
    /// Catmull-Rom cubic, `a = -0.5` (Pillow `BICUBIC`).
    Bicubic,
    /// Lanczos with 3 lobes (Pillow `LANCZOS`).
    Lanczos3,
    /// Box / area average (Pillow `BOX`).
    Box,
}

impl Filter {
    fn algorithm(self) -> fir::ResizeAlg {
        match self {
            Filter::Nearest => fir::ResizeAlg::Nearest,
            Filter::Bilinear => fir::ResizeAlg::Convolution(fir::FilterType::Bilinear),
            Filter::Bicubic => fir::ResizeAlg::Convolution(fir::FilterType::CatmullRom),
            Filter::Lanczos3 => fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3),
            Filter::Box => fir::ResizeAlg::Convolution(fir::FilterType::Box),
        }
    }
}

/// Resizes to exactly `width` x `height` (the aspect ratio is not kept; crop first for that).
///
/// Uses `fast_image_resize` (SIMD, fixed point) with one resizer per thread so its scratch
/// buffers are reused across images. Against Pillow's `resize` the result differs by at most 1
/// per value (the two quantise their fixed-point weights differently; nearest is exact), as the
/// golden test checks; bicubic and Lanczos run their two passes in Pillow's order for that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Resampling filter.
    pub filter: Filter,
}

impl Resize {
    /// Resize to `width` x `height` with the default (bilinear) filter.
    pub fn new(width: u32, height: u32) -> Resize {
        Resize { width, height, filter: Filter::default() }
    }

    /// The same resize with another filter.
    #[must_use]
    pub fn with_filter(mut self, filter: Filter) -> Resize {
        self.filter = filter;
        self
    }

    /// Resizes `image` (no randomness involved).
    pub fn resize(&self, image: &Image) -> Result<Image> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::Config(format!(
                "Resize: target size {}x{} has a zero side",
                self.width, self.height
            )));
        }
        if image.width() == 0 || image.height() == 0 {
            return Err(bad_image(image, "cannot resize an empty image"));
        }
        if (image.width(), image.height()) == (self.width, self.height) {
            return Ok(image.clone());
        }
        let pixel_type =
            if image.channels() == 1 { fir::PixelType::U8 } else { fir::PixelType::U8x3 };
        let options = fir::ResizeOptions::new().resize_alg(self.filter.algorithm());
        // fast_image_resize runs the vertical pass first for u8 images, Pillow the horizontal
        // one, and both round and clamp the intermediate to u8. Filters with negative lobes
        // (bicubic, Lanczos) overshoot at sharp edges, so there the order shows (up to ~16
        // levels on a synthetic pattern); two single-axis calls reproduce Pillow's order at
        // ~25% more resize time. Non-negative filters never clamp the intermediate, so the
        // faster single call stays within 1 of Pillow.
        let ringing = matches!(self.filter, Filter::Bicubic | Filter::Lanczos3);
        let two_pass = ringing && self.width != image.width() && self.height != image.height();
        let data = if two_pass {
            let across = fir_resize(image, pixel_type, self.width, image.height(), &options)?;
            let across = rebuild(self.width, image.height(), image.channels(), across)?;
            fir_resize(&across, pixel_type, self.width, self.height, &options)?
        } else {
            fir_resize(image, pixel_type, self.width, self.height, &options)?
        };
        rebuild(self.width, self.height, image.channels(), data)
    }
}

/// One `fast_image_resize` call with this thread's resizer (its scratch buffers are reused).
fn fir_resize(
    image: &Image,
    pixel_type: fir::PixelType,
    width: u32,
    height: u32,
    options: &fir::ResizeOptions,
) -> Result<Vec<u8>> {
    let src =
        fir::images::ImageRef::new(image.width(), image.height(), image.as_bytes(), pixel_type)
            .map_err(|e| bad_image(image, &format!("resize source: {e}")))?;
    let mut dst = fir::images::Image::new(width, height, pixel_type);
    thread_local! {
        static RESIZER: RefCell<fir::Resizer> = RefCell::new(fir::Resizer::new());
    }
    // A fresh resizer is the fallback if the thread-local one is unavailable (thread teardown,
    // or re-entrance), so this can never panic.
    let status = RESIZER
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut resizer) => resizer.resize(&src, &mut dst, options),
            Err(_) => fir::Resizer::new().resize(&src, &mut dst, options),
        })
        .unwrap_or_else(|_| fir::Resizer::new().resize(&src, &mut dst, options));
    status.map_err(|e| bad_image(image, &format!("resize: {e}")))?;
    Ok(dst.into_vec())
}

impl Transform for Resize {
    fn apply(&self, image: Image, _rng: &mut ChaCha8Rng) -> Result<Image> {
        if (image.width(), image.height()) == (self.width, self.height) && self.width > 0 {
            return Ok(image);
        }
        self.resize(&image)
    }
}

/// Crops the central `width` x `height` region, with torchvision's `center_crop` semantics.
///
/// - The crop starts at `round((size - crop) / 2)` with Python's round-half-to-even, so odd
///   margins split exactly as torchvision splits them (a margin of 1 puts the crop at 0, a
///   margin of 3 at 2).
/// - When the crop is larger than the image along an axis, that axis is padded with `fill`
///   (`(crop - size) / 2` before, the rest after) instead of failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CenterCrop {
    /// Output width in pixels.
    pub width: u32,
    /// Output height in pixels.
    pub height: u32,
    /// Padding value (every channel) when the crop is larger than the image.
    pub fill: u8,
}

impl CenterCrop {
    /// A centre crop to `width` x `height`, padding with black.
    pub fn new(width: u32, height: u32) -> CenterCrop {
        CenterCrop { width, height, fill: 0 }
    }

    /// Crops `image` (no randomness involved).
    pub fn crop(&self, image: &Image) -> Result<Image> {
        if self.width == 0 || self.height == 0 {
            return Err(Error::Config(format!(
                "CenterCrop: size {}x{} has a zero side",
                self.width, self.height
            )));
        }
        let ox = crop_origin(image.width(), self.width);
        let oy = crop_origin(image.height(), self.height);
        crop_region(image, ox, oy, self.width, self.height, self.fill)
    }
}

impl Transform for CenterCrop {
    fn apply(&self, image: Image, _rng: &mut ChaCha8Rng) -> Result<Image> {
        if (image.width(), image.height()) == (self.width, self.height) {
            return Ok(image);
        }
        self.crop(&image)
    }
}

/// Where a centred crop of `crop` starts along an axis of `size` (negative: padding).
fn crop_origin(size: u32, crop: u32) -> i64 {
    if crop > size {
        -(i64::from(crop - size) / 2)
    } else {
        let margin = i64::from(size - crop);
        let half = margin / 2;
        // Half to even, as Python's `round` (which torchvision uses) does.
        if margin % 2 == 1 {
            half + (half & 1)
        } else {
            half
        }
    }
}

/// Copies the `width` x `height` window at (`ox`, `oy`) (which may stick out) into a new image,
/// filling what lies outside with `fill`.
fn crop_region(
    image: &Image,
    ox: i64,
    oy: i64,
    width: u32,
    height: u32,
    fill: u8,
) -> Result<Image> {
    let c = usize::from(image.channels());
    let src = image.as_bytes();
    let (sw, sh) = (i64::from(image.width()), i64::from(image.height()));
    let row_len = width as usize * c;
    let mut out = vec![fill; row_len * height as usize];
    // The horizontal overlap is the same for every row.
    let x_lo = ox.max(0);
    let x_hi = (ox + i64::from(width)).min(sw);
    if x_lo < x_hi {
        let dst_x = ((x_lo - ox) as usize) * c;
        let len = ((x_hi - x_lo) as usize) * c;
        for (y, dst_row) in out.chunks_exact_mut(row_len).enumerate() {
            let sy = oy + y as i64;
            if sy < 0 || sy >= sh {
                continue;
            }
            let start = (sy as usize * sw as usize + x_lo as usize) * c;
            if let (Some(s), Some(d)) =
                (src.get(start..start + len), dst_row.get_mut(dst_x..dst_x + len))
            {
                d.copy_from_slice(s);
            }
        }
    }
    rebuild(width, height, image.channels(), out)
}

/// Mirrors the image left-right with probability `p`.
///
/// One uniform number is always drawn, whatever `p`, so the stream seen by later transforms
/// does not depend on `p`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HorizontalFlip {
    /// Probability of flipping, in `[0, 1]`.
    pub p: f64,
}

impl HorizontalFlip {
    /// Flips with probability `p`.
    pub fn new(p: f64) -> HorizontalFlip {
        HorizontalFlip { p }
    }

    /// Mirrors `image` unconditionally.
    pub fn flip(image: Image) -> Image {
        let (w, c) = (image.width() as usize, usize::from(image.channels()));
        let mut image = image;
        if w > 1 {
            for row in image.as_bytes_mut().chunks_exact_mut(w * c) {
                // Reversing the bytes reverses the pixel order and each pixel's channels; the
                // second pass puts the channels back.
                row.reverse();
                if c > 1 {
                    for px in row.chunks_exact_mut(c) {
                        px.reverse();
                    }
                }
            }
        }
        image
    }
}

impl Default for HorizontalFlip {
    fn default() -> Self {
        HorizontalFlip { p: 0.5 }
    }
}

impl Transform for HorizontalFlip {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        check_probability("HorizontalFlip", self.p)?;
        if rng.random::<f64>() < self.p {
            Ok(HorizontalFlip::flip(image))
        } else {
            Ok(image)
        }
    }
}

/// Random rotation, translation and scaling about the image centre (torchvision
/// `RandomAffine` without shear).
///
/// Parameters are drawn as torchvision draws them: angle uniform in `[-degrees, degrees]`
/// (positive turns counter-clockwise on screen), translation uniform in
/// `[-fx * width, fx * width]` x `[-fy * height, fy * height]` rounded to whole pixels, scale
/// uniform in `[min, max]`. Each output pixel is mapped back through the inverse transform and
/// sampled bilinearly; neighbours outside the source count as `fill`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RandomAffine {
    /// Largest rotation in degrees (`>= 0`).
    pub degrees: f64,
    /// Largest translation as fractions of width and height, each in `[0, 1]`.
    pub translate: (f64, f64),
    /// Scale range `(min, max)`, `0 < min <= max`.
    pub scale: (f64, f64),
    /// Value (every channel) of pixels mapped from outside the image.
    pub fill: u8,
}

impl RandomAffine {
    /// An affine augmentation filling with black.
    pub fn new(degrees: f64, translate: (f64, f64), scale: (f64, f64)) -> RandomAffine {
        RandomAffine { degrees, translate, scale, fill: 0 }
    }

    fn validate(&self) -> Result<()> {
        check_range("RandomAffine degrees", (0.0, self.degrees), 0.0)?;
        let (fx, fy) = self.translate;
        if !((0.0..=1.0).contains(&fx) && (0.0..=1.0).contains(&fy)) {
            return Err(Error::Config(format!(
                "RandomAffine: translate ({fx}, {fy}) must lie in [0, 1]"
            )));
        }
        check_range("RandomAffine scale", self.scale, f64::MIN_POSITIVE)
    }

    /// Applies a fixed affine map: `angle` degrees, translation (`tx`, `ty`) pixels, `scale`.
    pub fn warp(
        &self,
        image: &Image,
        angle: f64,
        (tx, ty): (f64, f64),
        scale: f64,
    ) -> Result<Image> {
        if !(scale > 0.0
            && scale.is_finite()
            && angle.is_finite()
            && tx.is_finite()
            && ty.is_finite())
        {
            return Err(Error::Config(format!(
                "RandomAffine: angle {angle}, translation ({tx}, {ty}), scale {scale} must be finite with scale > 0"
            )));
        }
        let (w, h, c) =
            (image.width() as usize, image.height() as usize, usize::from(image.channels()));
        let src = image.as_bytes();
        let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
        let (sin, cos) = angle.to_radians().sin_cos();
        // Inverse map: source = c + R(-angle) (dst - c - t) / scale, with y pointing down.
        let (a, b) = (cos / scale, -sin / scale);
        let (d, e) = (sin / scale, cos / scale);
        let fill = f64::from(self.fill);
        let mut out = vec![self.fill; src.len()];
        let mut acc = [0f64; 3];
        for y in 0..h {
            let dy = y as f64 - cy - ty;
            for x in 0..w {
                let dx = x as f64 - cx - tx;
                let sx = cx + a * dx + b * dy;
                let sy = cy + d * dx + e * dy;
                let (x0, y0) = (sx.floor(), sy.floor());
                let (fx, fy) = (sx - x0, sy - y0);
                if x0 < -1.0 || y0 < -1.0 || x0 >= w as f64 || y0 >= h as f64 {
                    continue;
                }
                let (x0, y0) = (x0 as i64, y0 as i64);
                acc[..c].fill(0.0);
                for (ny, wy) in [(y0, 1.0 - fy), (y0 + 1, fy)] {
                    for (nx, wx) in [(x0, 1.0 - fx), (x0 + 1, fx)] {
                        let wgt = wx * wy;
                        if wgt == 0.0 {
                            continue;
                        }
                        let inside = nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h;
                        let base = (ny.max(0) as usize * w + nx.max(0) as usize) * c;
                        for (k, slot) in acc[..c].iter_mut().enumerate() {
                            let v = if inside {
                                src.get(base + k).map_or(fill, |&v| f64::from(v))
                            } else {
                                fill
                            };
                            *slot += wgt * v;
                        }
                    }
                }
                let o = (y * w + x) * c;
                if let Some(dst) = out.get_mut(o..o + c) {
                    for (slot, v) in dst.iter_mut().zip(&acc) {
                        *slot = clamp_u8(*v as f32);
                    }
                }
            }
        }
        rebuild(image.width(), image.height(), image.channels(), out)
    }
}

impl Default for RandomAffine {
    /// The identity (no rotation, translation or scaling).
    fn default() -> Self {
        RandomAffine::new(0.0, (0.0, 0.0), (1.0, 1.0))
    }
}

impl Transform for RandomAffine {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        self.validate()?;
        let angle = uniform(rng, -self.degrees, self.degrees);
        let max_dx = self.translate.0 * f64::from(image.width());
        let max_dy = self.translate.1 * f64::from(image.height());
        let tx = uniform(rng, -max_dx, max_dx).round();
        let ty = uniform(rng, -max_dy, max_dy).round();
        let scale = uniform(rng, self.scale.0, self.scale.1);
        if angle == 0.0 && tx == 0.0 && ty == 0.0 && scale == 1.0 {
            return Ok(image);
        }
        self.warp(&image, angle, (tx, ty), scale)
    }
}

fn bad_image(image: &Image, message: &str) -> Error {
    Error::BadSample {
        id: format!("{}x{}x{} image", image.width(), image.height(), image.channels()),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample_rng;
    use super::super::testutil::{golden_cases, image_from_json, max_abs_diff, pattern};
    use super::*;

    fn filter_named(name: &str) -> Filter {
        match name {
            "nearest" => Filter::Nearest,
            "bilinear" => Filter::Bilinear,
            "bicubic" => Filter::Bicubic,
            "lanczos3" => Filter::Lanczos3,
            "box" => Filter::Box,
            other => panic!("unknown filter {other}"),
        }
    }

    /// fast_image_resize and Pillow both resample with fixed-point coefficients, but quantise
    /// and round them differently, so values may differ by one; nearest must agree exactly.
    #[test]
    fn resize_matches_pillow_within_one() {
        let cases = golden_cases("resize");
        assert!(cases.len() >= 20);
        let mut worst = std::collections::BTreeMap::new();
        for case in cases {
            let input = image_from_json(&case["input"]);
            let expected = image_from_json(&case["expected"]);
            let filter = filter_named(case["filter"].as_str().unwrap());
            let out = Resize::new(expected.width(), expected.height())
                .with_filter(filter)
                .apply(input, &mut sample_rng(0, 0, 0))
                .unwrap();
            let diff = max_abs_diff(&out, &expected);
            let name = case["name"].as_str().unwrap().to_string();
            let limit = if filter == Filter::Nearest { 0 } else { 1 };
            assert!(diff <= limit, "{name}: max abs diff {diff}");
            let off =
                out.as_bytes().iter().zip(expected.as_bytes()).filter(|(a, b)| a != b).count();
            let e = worst.entry(format!("{filter:?}")).or_insert((0u8, 0usize, 0usize));
            *e = (e.0.max(diff), e.1 + off, e.2 + out.as_bytes().len());
        }
        eprintln!("resize vs Pillow per filter (max abs diff, values off, values): {worst:?}");
    }

    #[test]
    fn resize_shapes_non_square() {
        for c in [1u8, 3] {
            let img = pattern(7, 5, c);
            for filter in
                [Filter::Nearest, Filter::Bilinear, Filter::Bicubic, Filter::Lanczos3, Filter::Box]
            {
                let out = Resize::new(4, 6).with_filter(filter).resize(&img).unwrap();
                assert_eq!((out.width(), out.height(), out.channels()), (4, 6, c));
            }
        }
        assert!(Resize::new(0, 3).resize(&pattern(7, 5, 3)).is_err());
        assert!(Resize::new(4, 3).resize(&Image::filled(0, 5, 3, 0).unwrap()).is_err());
    }

    #[test]
    fn center_crop_matches_torchvision() {
        let cases = golden_cases("center_crop");
        assert!(cases.len() >= 5);
        for case in cases {
            let input = image_from_json(&case["input"]);
            let expected = image_from_json(&case["expected"]);
            let out = CenterCrop::new(expected.width(), expected.height())
                .apply(input, &mut sample_rng(0, 0, 0))
                .unwrap();
            assert_eq!(out, expected, "{}", case["name"]);
        }
        assert!(CenterCrop::new(0, 2).crop(&pattern(7, 5, 3)).is_err());
    }

    #[test]
    fn flip_matches_pillow_and_is_an_involution() {
        for case in golden_cases("hflip") {
            let input = image_from_json(&case["input"]);
            let expected = image_from_json(&case["expected"]);
            let out =
                HorizontalFlip::new(1.0).apply(input.clone(), &mut sample_rng(0, 0, 0)).unwrap();
            assert_eq!(out, expected, "{}", case["name"]);
            assert_eq!(HorizontalFlip::flip(out), input);
        }
        let img = pattern(7, 5, 3);
        let kept = HorizontalFlip::new(0.0).apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap();
        assert_eq!(kept, img);
        assert!(HorizontalFlip::new(-0.1).apply(img, &mut sample_rng(0, 0, 0)).is_err());
    }

    #[test]
    fn flip_probability_is_seeded() {
        let img = pattern(7, 5, 3);
        let flips = |seed| -> Vec<bool> {
            (0..64)
                .map(|i| {
                    let out = HorizontalFlip::default()
                        .apply(img.clone(), &mut sample_rng(seed, 0, i))
                        .unwrap();
                    out != img
                })
                .collect()
        };
        let a = flips(1);
        assert_eq!(a, flips(1));
        assert_ne!(a, flips(2));
        let n = a.iter().filter(|f| **f).count();
        assert!((16..=48).contains(&n), "{n} flips out of 64");
    }

    #[test]
    fn affine_identity_and_determinism() {
        let img = pattern(7, 5, 3);
        let id = RandomAffine::default().apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap();
        assert_eq!(id, img);
        // The explicit warp path with identity parameters must also reproduce the input.
        let warped = RandomAffine::default().warp(&img, 0.0, (0.0, 0.0), 1.0).unwrap();
        assert!(max_abs_diff(&warped, &img) <= 1);
        // A full turn is the identity up to floating-point error.
        let turned = RandomAffine::default().warp(&img, 360.0, (0.0, 0.0), 1.0).unwrap();
        assert!(max_abs_diff(&turned, &img) <= 1);

        let aff = RandomAffine::new(20.0, (0.1, 0.2), (0.8, 1.2));
        let a = aff.apply(img.clone(), &mut sample_rng(5, 1, 2)).unwrap();
        let b = aff.apply(img.clone(), &mut sample_rng(5, 1, 2)).unwrap();
        let c = aff.apply(img.clone(), &mut sample_rng(6, 1, 2)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!((a.width(), a.height(), a.channels()), (7, 5, 3));
        assert!(RandomAffine::new(-1.0, (0.0, 0.0), (1.0, 1.0))
            .apply(img.clone(), &mut sample_rng(0, 0, 0))
            .is_err());
        assert!(RandomAffine::new(0.0, (0.0, 0.0), (0.0, 1.0))
            .apply(img, &mut sample_rng(0, 0, 0))
            .is_err());
    }

    #[test]
    fn affine_geometry_non_square() {
        // A single bright pixel right of centre on a 9x5 gray image.
        let mut img = Image::filled(9, 5, 1, 0).unwrap();
        img.pixel_mut(6, 2).unwrap()[0] = 200;
        let aff = RandomAffine { fill: 0, ..RandomAffine::default() };
        // +90 degrees (counter-clockwise on screen) moves (cx + 2, cy) to (cx, cy - 2).
        let rot = aff.warp(&img, 90.0, (0.0, 0.0), 1.0).unwrap();
        assert_eq!(rot.get(4, 0, 0), Some(200));
        assert_eq!(rot.as_bytes().iter().map(|&v| u32::from(v)).sum::<u32>(), 200);
        // A whole-pixel translation is an exact shift; fill enters from the left.
        let shifted = RandomAffine { fill: 9, ..aff }.warp(&img, 0.0, (1.0, -1.0), 1.0).unwrap();
        assert_eq!(shifted.get(7, 1, 0), Some(200));
        assert_eq!(shifted.get(0, 2, 0), Some(9));
        assert_eq!(shifted.get(3, 4, 0), Some(9));
    }
}
