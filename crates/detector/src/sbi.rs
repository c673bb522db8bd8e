//! Self-Blended Images (Shiohara & Yamasaki, CVPR 2022, "Detecting Deepfakes with Self-Blended
//! Images"): pseudo-fakes made from ONE real face, by blending a slightly altered copy of the
//! face back onto itself through a soft face mask.
//!
//! Why: a detector trained on the fakes of a few generators learns their fingerprints and
//! fails on new ones; the blending boundary, the colour mismatch and the small misalignment
//! that every face swap leaves are generator-independent, and self-blends teach exactly those
//! from real faces alone (no fake footage needed).
//!
//! The recipe follows the paper and its official code (`src/utils/sbi.py`, `blend.py`):
//!
//! 1. source = a copy of the face, colour-perturbed (RGB shift, hue / saturation / value
//!    shift, brightness / contrast) and then either sharpened or down- and up-scaled;
//! 2. the source is resized about the face centre by a factor in `[0.95, 1 / 0.95]` and moved
//!    by up to 3% (x) and 1.5% (y) of the face size;
//! 3. mask = the face outline ([`FaceRegion`]), moved with the source, deformed, eroded or
//!    dilated and blurred by random amounts, scaled by a ratio drawn from
//!    `{0.25, 0.5, 0.75, 1, 1, 1}`;
//! 4. output = `source * mask + face * (1 - mask)`.
//!
//! Differences from the official code, on purpose:
//! - landmarks: the paper uses 68/81 dlib points; BlazeFace gives 6, so the outline is the
//!   extended keypoint hull of [`face_outline`] (eyes, nose, mouth extended to brows, jaw and
//!   chin = mouth + 0.9 (mouth - eye mid-point)), or an ellipse when there are no keypoints;
//! - deformation: the official elastic deformation of the mask is replaced by a smooth random
//!   radial jitter of the outline's vertices (a low-frequency wobble of the boundary, which is
//!   what the elastic transform does to a filled hull);
//! - the colour / quality perturbation always goes to the source (the official code gives it
//!   to the target half the time), so a self-blend differs from its real face only inside the
//!   mask: the real/fake pair then differs in nothing but the blend.
//!
//! Randomness comes from the caller's [`ChaCha8Rng`]; equal generator states give identical
//! bytes.
//!
//! ```
//! use deeprecog_dataset::transforms::sample_rng;
//! use deeprecog_dataset::Image;
//! use deeprecog_detector::crop::CropConfig;
//! use deeprecog_detector::sbi::{self_blend, FaceRegion, SbiConfig};
//!
//! let face = Image::filled(64, 48, 3, 120).unwrap();
//! let region = FaceRegion::for_crop(64, 48, &CropConfig::default()).unwrap();
//! let fake = self_blend(&face, &region, &SbiConfig::default(), &mut sample_rng(7, 0, 0)).unwrap();
//! assert_eq!((fake.width(), fake.height()), (64, 48));
//! ```

use deeprecog_dataset::seed::mix;
use deeprecog_dataset::transforms::{sample_rng, ChaCha8Rng, Filter, Resize};
use deeprecog_dataset::{Dataset, Image, Sample, SampleOrigin, Target};
use serde::{Deserialize, Serialize};

use crate::blend::{alpha_blend, face_outline, warp_similarity, Mask, Similarity};
use crate::crop::{CropConfig, Margin};
use crate::{Error, Result};

/// How self-blended images are made; `Default` is the official code's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SbiConfig {
    /// Probability of shifting each RGB channel (0.3).
    pub rgb_shift_p: f32,
    /// The RGB shift's limit in 8-bit levels, per channel, drawn in `[-limit, limit]` (20).
    pub rgb_shift: f32,
    /// Hue shift limit in degrees (0.6: the official 0.3 in OpenCV's half-degree units).
    pub hue_shift: f32,
    /// Saturation shift limit in 8-bit levels (0.3, as the official code: nearly nothing).
    pub saturation_shift: f32,
    /// Value shift limit in 8-bit levels (0.3, as the official code).
    pub value_shift: f32,
    /// Brightness limit: `beta` in `[-limit, limit]`, `out = alpha x + 255 beta` (0.1).
    pub brightness: f32,
    /// Contrast limit: `alpha = 1 + [-limit, limit]` (0.1).
    pub contrast: f32,
    /// Probability of the quality step, a sharpen or a down- and up-scale, 50/50 (1.0).
    pub quality_p: f32,
    /// The sharpen's blend with the sharpened image, drawn in `[min, max]` ((0.2, 0.5)).
    pub sharpen_alpha: (f32, f32),
    /// The sharpen's lightness, drawn in `[min, max]` ((0.5, 1.0)).
    pub sharpen_lightness: (f32, f32),
    /// Down-scale factors, one drawn per image ([2, 4]); nearest down, bilinear back up.
    pub downscale: Vec<u32>,
    /// Source resize factor range about the face centre ((0.95, 1 / 0.95)).
    pub scale: (f32, f32),
    /// Largest source shift as a fraction of the face size, (x, y) ((0.03, 0.015)).
    pub translate: (f32, f32),
    /// Radial jitter of the mask's outline: each vertex moves by up to this fraction of its
    /// distance to the centre (0.1).
    pub mask_jitter: f32,
    /// Largest erosion (negative draws) or dilation of the mask, as a fraction of the face
    /// size (0.03).
    pub mask_morph: f32,
    /// The mask's Gaussian blur sigma range, as a fraction of the face size ((0.01, 0.04)).
    pub mask_blur: (f32, f32),
    /// Blend ratios, one drawn uniformly per image ([0.25, 0.5, 0.75, 1, 1, 1]).
    pub blend_ratios: Vec<f32>,
}

impl Default for SbiConfig {
    fn default() -> Self {
        SbiConfig {
            rgb_shift_p: 0.3,
            rgb_shift: 20.0,
            hue_shift: 0.6,
            saturation_shift: 0.3,
            value_shift: 0.3,
            brightness: 0.1,
            contrast: 0.1,
            quality_p: 1.0,
            sharpen_alpha: (0.2, 0.5),
            sharpen_lightness: (0.5, 1.0),
            downscale: vec![2, 4],
            scale: (0.95, 1.0 / 0.95),
            translate: (0.03, 0.015),
            mask_jitter: 0.1,
            mask_morph: 0.03,
            mask_blur: (0.01, 0.04),
            blend_ratios: vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0],
        }
    }
}

impl SbiConfig {
    /// No perturbation at all (source = face, mask not moved or deformed, ratio 1): the
    /// blend then returns the face unchanged; a base for tests and ablations.
    pub fn identity() -> SbiConfig {
        SbiConfig {
            rgb_shift_p: 0.0,
            hue_shift: 0.0,
            saturation_shift: 0.0,
            value_shift: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            quality_p: 0.0,
            scale: (1.0, 1.0),
            translate: (0.0, 0.0),
            mask_jitter: 0.0,
            mask_morph: 0.0,
            mask_blur: (0.0, 0.0),
            blend_ratios: vec![1.0],
            ..SbiConfig::default()
        }
    }

    /// Checks every setting: finite, limits >= 0, probabilities in `[0, 1]`, ranges ordered,
    /// scales > 0, down-scale factors >= 1, blend ratios in `(0, 1]` and at least one.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidConfig { what: "self-blend config", reason });
        for (name, p) in [("rgb_shift_p", self.rgb_shift_p), ("quality_p", self.quality_p)] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("{name} {p} is not a probability"));
            }
        }
        let limits = [
            ("rgb_shift", self.rgb_shift),
            ("hue_shift", self.hue_shift),
            ("saturation_shift", self.saturation_shift),
            ("value_shift", self.value_shift),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("translate.0", self.translate.0),
            ("translate.1", self.translate.1),
            ("mask_jitter", self.mask_jitter),
            ("mask_morph", self.mask_morph),
        ];
        if let Some((name, v)) = limits.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return bad(format!("{name} {v} is not a number >= 0"));
        }
        let ranges = [
            ("sharpen_alpha", self.sharpen_alpha, 0.0),
            ("sharpen_lightness", self.sharpen_lightness, 0.0),
            ("scale", self.scale, f32::MIN_POSITIVE),
            ("mask_blur", self.mask_blur, 0.0),
        ];
        for (name, (lo, hi), floor) in ranges {
            if !(lo.is_finite() && hi.is_finite() && lo >= floor && lo <= hi) {
                return bad(format!("{name} ({lo}, {hi}) is not an ordered range >= {floor}"));
            }
        }
        if self.downscale.contains(&0) || (self.quality_p > 0.0 && self.downscale.is_empty()) {
            return bad(format!("downscale {:?} needs factors >= 1", self.downscale));
        }
        if self.blend_ratios.is_empty() || !self.blend_ratios.iter().all(|r| *r > 0.0 && *r <= 1.0)
        {
            return bad(format!("blend_ratios {:?} need values in (0, 1]", self.blend_ratios));
        }
        Ok(())
    }
}

/// Where the face is in an image, for the blend mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FaceRegion {
    /// A detector's keypoints in pixels, BlazeFace's order (at least the eyes, the nose and the
    /// mouth); the outline is [`face_outline`]'s.
    Keypoints(Vec<[f32; 2]>),
    /// An axis-aligned ellipse: centre and radii in pixels.
    Ellipse {
        /// Centre x.
        cx: f32,
        /// Centre y.
        cy: f32,
        /// Half-width.
        rx: f32,
        /// Half-height.
        ry: f32,
    },
}

/// Vertices of the polygon an ellipse becomes, enough for a smooth outline and its jitter.
const ELLIPSE_VERTICES: usize = 48;

impl FaceRegion {
    /// The ellipse inscribed in the face box that a `width` x `height` crop cut with `crop`
    /// implies: the crop is the box grown by the margin around its centre (see
    /// [`crate::crop::crop_region`]), so the box is the crop's centre part, the crop's sides
    /// divided by the margin's factor (`Scale(s)`: `s`; `PerSide(f)`: `1 + 2f`), capped at the
    /// crop. The detector's box is assumed square (BlazeFace's are) and the crop not shifted
    /// by an image edge, which cannot be known from the crop alone.
    ///
    /// Fails on an invalid crop config or an empty crop.
    pub fn for_crop(width: u32, height: u32, crop: &CropConfig) -> Result<FaceRegion> {
        crop.validate()?;
        if width == 0 || height == 0 {
            return Err(Error::InvalidConfig {
                what: "self-blend crop",
                reason: format!("the crop is {width}x{height}"),
            });
        }
        let factor = match crop.margin {
            Margin::Scale(s) => s,
            Margin::PerSide(f) => 1.0 + 2.0 * f,
        }
        .max(1.0);
        let (w, h) = (width as f32, height as f32);
        Ok(FaceRegion::Ellipse {
            cx: w / 2.0,
            cy: h / 2.0,
            rx: w / (2.0 * factor),
            ry: h / (2.0 * factor),
        })
    }

    /// The region's outline as a polygon (the keypoint hull, or the ellipse as a 48-gon).
    pub fn outline(&self) -> Result<Vec<[f32; 2]>> {
        match self {
            FaceRegion::Keypoints(points) => face_outline(points),
            &FaceRegion::Ellipse { cx, cy, rx, ry } => {
                if ![cx, cy, rx, ry].iter().all(|v| v.is_finite()) || rx <= 0.0 || ry <= 0.0 {
                    return Err(Error::InvalidConfig {
                        what: "face ellipse",
                        reason: format!("centre ({cx}, {cy}), radii ({rx}, {ry})"),
                    });
                }
                Ok((0..ELLIPSE_VERTICES)
                    .map(|i| {
                        let t = std::f32::consts::TAU * i as f32 / ELLIPSE_VERTICES as f32;
                        [cx + rx * t.cos(), cy + ry * t.sin()]
                    })
                    .collect())
            }
        }
    }

    /// The filled outline, unblurred, in a `width` x `height` mask.
    pub fn mask(&self, width: u32, height: u32) -> Result<Mask> {
        Ok(Mask::polygon(width, height, &self.outline()?))
    }
}

/// A self-blended pseudo-fake of `image` (see the module docs), the same size and channels.
pub fn self_blend(
    image: &Image,
    region: &FaceRegion,
    config: &SbiConfig,
    rng: &mut ChaCha8Rng,
) -> Result<Image> {
    Ok(self_blend_with_mask(image, region, config, rng)?.0)
}

/// [`self_blend`], also returning the final blend mask (weights after the blend ratio): the
/// output equals `image` wherever the mask is 0.
pub fn self_blend_with_mask(
    image: &Image,
    region: &FaceRegion,
    config: &SbiConfig,
    rng: &mut ChaCha8Rng,
) -> Result<(Image, Mask)> {
    config.validate()?;
    let (w, h) = (image.width(), image.height());
    if w == 0 || h == 0 {
        return Err(Error::InvalidConfig {
            what: "self-blend image",
            reason: format!("the image is {w}x{h}"),
        });
    }
    let outline = region.outline()?;
    let (centre, size) = extent(&outline);
    let mut draws = Draws::new(rng);

    let source = perturb_colour(image, config, &mut draws)?;
    let source = perturb_quality(source, config, &mut draws)?;
    let scale = draws.uniform(config.scale.0, config.scale.1);
    let tx = draws.uniform(-config.translate.0, config.translate.0) * size;
    let ty = draws.uniform(-config.translate.1, config.translate.1) * size;
    let moved = Similarity::scale_about(
        [f64::from(centre[0]), f64::from(centre[1])],
        f64::from(scale),
        f64::from(tx),
        f64::from(ty),
    );
    let source = if moved == Similarity::IDENTITY {
        source
    } else {
        warp_similarity(&source, &moved, w, h)?
    };

    // The mask follows the moved source, as the official code moves both together.
    let outline =
        jitter(&densify(&outline, ELLIPSE_VERTICES), centre, config.mask_jitter, &mut draws);
    let outline: Vec<[f32; 2]> = outline.iter().map(|&p| moved.apply_f32(p)).collect();
    let mask = blend_mask(Mask::polygon(w, h, &outline), size, config, &mut draws);
    let blended = alpha_blend(image, &source, &mask, 1.0)?;
    Ok((blended, mask))
}

/// The outline's bounding-box centre and larger side (the "face size").
fn extent(outline: &[[f32; 2]]) -> ([f32; 2], f32) {
    let init = ([f32::MAX, f32::MAX], [f32::MIN, f32::MIN]);
    let (lo, hi) = outline.iter().fold(init, |(lo, hi), p| {
        ([lo[0].min(p[0]), lo[1].min(p[1])], [hi[0].max(p[0]), hi[1].max(p[1])])
    });
    ([(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0], (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1.0))
}

/// Morphology, blur, normalisation and ratio of the filled outline.
fn blend_mask(mask: Mask, size: f32, config: &SbiConfig, draws: &mut Draws) -> Mask {
    let morph = (draws.uniform(-config.mask_morph, config.mask_morph) * size).round();
    let mask = if morph < 0.0 { mask.eroded(-morph as u32) } else { mask.dilated(morph as u32) };
    let mask = mask.blurred(draws.uniform(config.mask_blur.0, config.mask_blur.1) * size);
    let ratio = draws.pick(&config.blend_ratios).unwrap_or(1.0);
    // As the official code, the blurred mask is brought back to a peak of 1 before the ratio,
    // so a small face's mask still reaches full strength in its middle.
    let peak = mask.max();
    mask.scaled(if peak > 0.0 { ratio / peak } else { 0.0 })
}

/// The polygon with its edges subdivided until it has at least `min_vertices` vertices, so
/// that a jitter deforms the boundary smoothly rather than moving a few corners.
fn densify(outline: &[[f32; 2]], min_vertices: usize) -> Vec<[f32; 2]> {
    let n = outline.len();
    if n == 0 || n >= min_vertices {
        return outline.to_vec();
    }
    let per_edge = min_vertices.div_ceil(n);
    let mut out = Vec::with_capacity(per_edge * n);
    for (i, p) in outline.iter().enumerate() {
        let q = outline[(i + 1) % n];
        for k in 0..per_edge {
            let t = k as f32 / per_edge as f32;
            out.push([p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])]);
        }
    }
    out
}

/// Knots of the smooth radial noise around the outline (a few bumps per face, as the
/// official elastic deformation's sigma gives).
const JITTER_KNOTS: usize = 8;

/// Each vertex moved radially from `centre` by `1 + amount * n(i)`, `n` a periodic,
/// piecewise-linear noise in `[-1, 1]` through a few random knots: a star-shaped outline
/// stays star-shaped, so the polygon stays simple.
fn jitter(outline: &[[f32; 2]], centre: [f32; 2], amount: f32, draws: &mut Draws) -> Vec<[f32; 2]> {
    if amount == 0.0 || outline.is_empty() {
        return outline.to_vec();
    }
    let knots: Vec<f32> = (0..JITTER_KNOTS).map(|_| draws.uniform(-1.0, 1.0)).collect();
    let n = outline.len() as f32;
    outline
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = i as f32 / n * JITTER_KNOTS as f32;
            let k = at.floor() as usize % JITTER_KNOTS;
            let t = at - at.floor();
            let noise = knots[k] * (1.0 - t) + knots[(k + 1) % JITTER_KNOTS] * t;
            let f = 1.0 + amount * noise;
            [centre[0] + f * (p[0] - centre[0]), centre[1] + f * (p[1] - centre[1])]
        })
        .collect()
}

/// RGB shift, HSV shift, brightness / contrast, in that order (albumentations' order in the
/// official code), in floating point with a clip after each step and one rounding at the end.
fn perturb_colour(image: &Image, config: &SbiConfig, draws: &mut Draws) -> Result<Image> {
    let channels = usize::from(image.channels());
    let mut buf: Vec<f32> = image.as_bytes().iter().map(|&v| f32::from(v)).collect();
    if draws.chance(config.rgb_shift_p) {
        let shift: Vec<f32> =
            (0..channels).map(|_| draws.uniform(-config.rgb_shift, config.rgb_shift)).collect();
        for px in buf.chunks_exact_mut(channels) {
            px.iter_mut().zip(&shift).for_each(|(v, s)| *v = (*v + s).clamp(0.0, 255.0));
        }
    }
    let hue = draws.uniform(-config.hue_shift, config.hue_shift);
    let sat = draws.uniform(-config.saturation_shift, config.saturation_shift);
    let val = draws.uniform(-config.value_shift, config.value_shift);
    if channels == 3 && (hue, sat, val) != (0.0, 0.0, 0.0) {
        buf.chunks_exact_mut(3).for_each(|px| shift_hsv(px, hue, sat, val));
    }
    let alpha = 1.0 + draws.uniform(-config.contrast, config.contrast);
    let beta = 255.0 * draws.uniform(-config.brightness, config.brightness);
    if (alpha, beta) != (1.0, 0.0) {
        buf.iter_mut().for_each(|v| *v = (*v * alpha + beta).clamp(0.0, 255.0));
    }
    let data = buf.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect();
    Ok(Image::from_raw(image.width(), image.height(), image.channels(), data)?)
}

/// Shifts one RGB pixel (0..255) in HSV: hue by `dh` degrees, saturation and value by `ds`,
/// `dv` levels (of 255).
fn shift_hsv(px: &mut [f32], dh: f32, ds: f32, dv: f32) {
    let (r, g, b) = (px[0], px[1], px[2]);
    let max = r.max(g).max(b);
    let chroma = max - r.min(g).min(b);
    let hue = if chroma == 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / chroma).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / chroma + 2.0)
    } else {
        60.0 * ((r - g) / chroma + 4.0)
    };
    let sat = if max == 0.0 { 0.0 } else { 255.0 * chroma / max };
    let (h, s, v) =
        ((hue + dh).rem_euclid(360.0), (sat + ds).clamp(0.0, 255.0), (max + dv).clamp(0.0, 255.0));
    let c = v * s / 255.0;
    let x = c * (1.0 - ((h / 60.0).rem_euclid(2.0) - 1.0).abs());
    let (r1, g1, b1) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    px[0] = r1 + m;
    px[1] = g1 + m;
    px[2] = b1 + m;
}

/// The source-target quality gap: a sharpen or a down- and up-scale (the paper's
/// "source-target augmentation"), with probability `quality_p`.
fn perturb_quality(image: Image, config: &SbiConfig, draws: &mut Draws) -> Result<Image> {
    if !draws.chance(config.quality_p) {
        return Ok(image);
    }
    if draws.chance(0.5) {
        let alpha = draws.uniform(config.sharpen_alpha.0, config.sharpen_alpha.1);
        let lightness = draws.uniform(config.sharpen_lightness.0, config.sharpen_lightness.1);
        sharpen(&image, alpha, lightness)
    } else {
        let factor = draws.pick(&config.downscale).unwrap_or(1);
        downscale(&image, factor)
    }
}

/// albumentations' `Sharpen`: a 3x3 kernel `(1 - alpha) I + alpha K`, where `K` has -1 around
/// and `8 + lightness` in the middle; edges clamped.
fn sharpen(image: &Image, alpha: f32, lightness: f32) -> Result<Image> {
    let (w, h, c) = (image.width() as i64, image.height() as i64, usize::from(image.channels()));
    let src = image.as_bytes();
    let at = |x: i64, y: i64, k: usize| {
        let i = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize * c + k;
        src.get(i).map_or(0.0, |v| f32::from(*v))
    };
    let centre = (1.0 - alpha) + alpha * (8.0 + lightness);
    let mut data = Vec::with_capacity(src.len());
    for y in 0..h {
        for x in 0..w {
            for k in 0..c {
                let mut ring = 0.0;
                for (dx, dy) in
                    [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)]
                {
                    ring += at(x + dx, y + dy, k);
                }
                let v = centre * at(x, y, k) - alpha * ring;
                data.push(v.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    Ok(Image::from_raw(image.width(), image.height(), image.channels(), data)?)
}

/// Nearest down-scale by `factor`, bilinear back to the original size (the official
/// `RandomDownScale`).
fn downscale(image: &Image, factor: u32) -> Result<Image> {
    if factor <= 1 {
        return Ok(image.clone());
    }
    let (w, h) = (image.width(), image.height());
    let small = Resize::new((w / factor).max(1), (h / factor).max(1))
        .with_filter(Filter::Nearest)
        .resize(image)?;
    Ok(Resize::new(w, h).with_filter(Filter::Bilinear).resize(&small)?)
}

/// Uniform draws from the caller's ChaCha generator.
///
/// The detector crate does not depend on `rand`, so `RngCore` is out of reach; this hashes the
/// generator's key, stream and position (splitmix64, via [`mix`]) and advances the position by
/// the two 32-bit words a `u64` takes, which makes every draw a deterministic function of the
/// generator's state and leaves the generator moved past what was used.
struct Draws<'a> {
    rng: &'a mut ChaCha8Rng,
    key: u64,
}

impl<'a> Draws<'a> {
    fn new(rng: &'a mut ChaCha8Rng) -> Draws<'a> {
        let key = rng.get_seed().chunks_exact(8).fold(0u64, |h, chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            mix(h, u64::from_le_bytes(word), 0)
        });
        Draws { rng, key }
    }

    fn next_u64(&mut self) -> u64 {
        let pos = self.rng.get_word_pos();
        self.rng.set_word_pos(pos.wrapping_add(2));
        mix(self.key, self.rng.get_stream(), pos as u64)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`; exactly `lo` when the range is empty.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = self.unit() as f32;
        if hi > lo {
            lo + (hi - lo) * u
        } else {
            lo
        }
    }

    fn chance(&mut self, p: f32) -> bool {
        self.unit() < f64::from(p)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let i = (self.unit() * items.len() as f64) as usize;
        items.get(i.min(items.len().saturating_sub(1))).copied()
    }
}

/// Real face crops and their self-blends, for training a real/fake detector from real faces
/// only: index `i < n` is real sample `i` (class 0), index `n + i` its self-blend (class 1, id
/// `"<id>#sbi"`, same group). Each self-blend uses `sample_rng(seed, 0, i)`, so the dataset is
/// fixed: the same fakes every epoch and on every run with the same seed.
///
/// The mask comes from [`FaceRegion::for_crop`] with the crop rule given by
/// [`SelfBlended::with_crop`] (default: [`CropConfig::default`], the 1.3x square box). A real
/// sample whose target is not `Class(0)` is an error naming it, in both halves: a fake must
/// neither be self-blended nor pass as real.
#[derive(Debug, Clone)]
pub struct SelfBlended<D> {
    reals: D,
    config: SbiConfig,
    seed: u64,
    crop: CropConfig,
}

impl<D: Dataset<Item = Sample>> SelfBlended<D> {
    /// Real faces `reals` and their self-blends made with `config`, seeded by `seed`.
    pub fn new(reals: D, config: SbiConfig, seed: u64) -> SelfBlended<D> {
        SelfBlended { reals, config, seed, crop: CropConfig::default() }
    }

    /// How the crops were cut, for the face ellipse.
    #[must_use]
    pub fn with_crop(mut self, crop: CropConfig) -> SelfBlended<D> {
        self.crop = crop;
        self
    }

    /// The real faces.
    pub fn reals(&self) -> &D {
        &self.reals
    }

    fn blend(&self, sample: Sample, index: usize) -> Result<Sample> {
        let (w, h) = (sample.image.width(), sample.image.height());
        let region = FaceRegion::for_crop(w, h, &self.crop)?;
        let mut rng = sample_rng(self.seed, 0, index as u64);
        let image = self_blend(&sample.image, &region, &self.config, &mut rng)?;
        Ok(Sample {
            id: format!("{}#sbi", sample.id),
            image,
            target: Target::Class(1),
            group: sample.group,
        })
    }
}

impl<D: Dataset<Item = Sample>> Dataset for SelfBlended<D> {
    type Item = Sample;

    fn len(&self) -> usize {
        2 * self.reals.len()
    }

    fn get(&self, index: usize) -> deeprecog_dataset::Result<Sample> {
        let n = self.reals.len();
        if index >= 2 * n {
            return Err(deeprecog_dataset::Error::IndexOutOfRange { index, len: 2 * n });
        }
        let real = index % n.max(1);
        let sample = self.reals.get(real)?;
        if sample.target != Target::Class(0) {
            return Err(deeprecog_dataset::Error::BadSample {
                id: sample.id,
                message: format!(
                    "target {:?} is not class 0 (real): only real faces may be self-blended",
                    sample.target
                ),
            });
        }
        if index < n {
            return Ok(sample);
        }
        let id = sample.id.clone();
        self.blend(sample, real)
            .map_err(|e| deeprecog_dataset::Error::BadSample { id, message: e.to_string() })
    }

    fn origin(&self, index: usize) -> Option<SampleOrigin> {
        let n = self.reals.len();
        let origin = self.reals.origin(index.checked_rem(n)?)?;
        match index {
            i if i < n => Some(origin),
            i if i < 2 * n => Some(SampleOrigin { id: format!("{}#sbi", origin.id), ..origin }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use deeprecog_dataset::InMemory;

    use super::*;
    use crate::blend::tests::pattern;

    fn rng(i: u64) -> ChaCha8Rng {
        sample_rng(11, 0, i)
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let face = pattern(64, 64);
        let region = FaceRegion::for_crop(64, 64, &CropConfig::default()).unwrap();
        let config = SbiConfig::default();
        let a = self_blend(&face, &region, &config, &mut rng(3)).unwrap();
        let b = self_blend(&face, &region, &config, &mut rng(3)).unwrap();
        assert_eq!(a, b);
        let others: Vec<Image> =
            (4..8).map(|i| self_blend(&face, &region, &config, &mut rng(i)).unwrap()).collect();
        assert!(others.iter().any(|o| *o != a));
        assert!(others.iter().any(|o| *o != face));
    }

    #[test]
    fn changes_stay_inside_the_dilated_mask() {
        let face = pattern(72, 72);
        let region = FaceRegion::for_crop(72, 72, &CropConfig::default()).unwrap();
        let config = SbiConfig { rgb_shift_p: 1.0, ..SbiConfig::default() };
        // The furthest the mask can reach past the ellipse: jitter, scale, shift, dilation and
        // three blur sigmas, all as fractions of the face size (55 px here).
        let FaceRegion::Ellipse { cx, cy, rx, ry } = region else { unreachable!() };
        let size = 2.0 * rx.max(ry);
        let reach =
            size * (0.1 / 2.0 + 0.03 + 0.03 + 0.03 + 3.0 * 0.04) + rx * (1.0 / 0.95 - 1.0) + 2.0;
        let outer = Mask::ellipse(72, 72, cx, cy, rx + reach, ry + reach);
        for i in 0..6 {
            let (out, mask) = self_blend_with_mask(&face, &region, &config, &mut rng(i)).unwrap();
            let mut changed = 0;
            for y in 0..72 {
                for x in 0..72 {
                    if out.pixel(x, y) != face.pixel(x, y) {
                        changed += 1;
                        assert!(mask.get(x, y) > 0.0, "({x}, {y}) changed outside the mask");
                        assert_eq!(outer.get(x, y), 1.0, "({x}, {y}) changed far from the face");
                    }
                }
            }
            assert!(changed > 100, "draw {i}: only {changed} pixels changed");
        }
    }

    #[test]
    fn identity_perturbation_returns_the_input() {
        let face = pattern(40, 40);
        let kp =
            FaceRegion::Keypoints(vec![[14.0, 16.0], [26.0, 16.0], [20.0, 22.0], [20.0, 28.0]]);
        let ellipse = FaceRegion::for_crop(40, 40, &CropConfig::default()).unwrap();
        for region in [kp, ellipse] {
            let (out, mask) =
                self_blend_with_mask(&face, &region, &SbiConfig::identity(), &mut rng(0)).unwrap();
            assert_eq!(out, face);
            assert_eq!(mask.max(), 1.0);
        }
    }

    #[test]
    fn non_square_and_grey_images_keep_their_shape() {
        let face = pattern(50, 34);
        let region = FaceRegion::for_crop(50, 34, &CropConfig::default()).unwrap();
        let out = self_blend(&face, &region, &SbiConfig::default(), &mut rng(1)).unwrap();
        assert_eq!((out.width(), out.height(), out.channels()), (50, 34, 3));
        let grey = Image::filled(50, 34, 1, 90).unwrap();
        let out = self_blend(&grey, &region, &SbiConfig::default(), &mut rng(2)).unwrap();
        assert_eq!((out.width(), out.height(), out.channels()), (50, 34, 1));
        let FaceRegion::Ellipse { cx, cy, rx, ry } = region else { unreachable!() };
        assert_eq!((cx, cy), (25.0, 17.0));
        assert!((rx - 50.0 / 2.6).abs() < 1e-4 && (ry - 34.0 / 2.6).abs() < 1e-4);
    }

    #[test]
    fn invalid_settings_are_errors() {
        let face = pattern(20, 20);
        let region = FaceRegion::for_crop(20, 20, &CropConfig::default()).unwrap();
        for config in [
            SbiConfig { blend_ratios: vec![], ..SbiConfig::default() },
            SbiConfig { scale: (1.1, 0.9), ..SbiConfig::default() },
            SbiConfig { rgb_shift_p: 2.0, ..SbiConfig::default() },
            SbiConfig { downscale: vec![0], ..SbiConfig::default() },
        ] {
            assert!(self_blend(&face, &region, &config, &mut rng(0)).is_err(), "{config:?}");
        }
        let few = FaceRegion::Keypoints(vec![[1.0, 1.0], [5.0, 1.0]]);
        assert!(self_blend(&face, &few, &SbiConfig::default(), &mut rng(0)).is_err());
        assert!(FaceRegion::for_crop(0, 20, &CropConfig::default()).is_err());
    }

    fn sample(id: &str, class: u32, group: Option<&str>) -> Sample {
        Sample {
            id: id.to_string(),
            image: pattern(48, 40),
            target: Target::Class(class),
            group: group.map(str::to_string),
        }
    }

    #[test]
    fn self_blended_dataset_labels_ids_and_groups() {
        let reals = InMemory(vec![sample("a.png", 0, Some("v1")), sample("b.png", 0, None)]);
        let data = SelfBlended::new(reals, SbiConfig::default(), 5);
        assert_eq!(data.len(), 4);
        let got: Vec<Sample> = (0..4).map(|i| data.get(i).unwrap()).collect();
        let ids: Vec<&str> = got.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["a.png", "b.png", "a.png#sbi", "b.png#sbi"]);
        let classes: Vec<Target> = got.iter().map(|s| s.target.clone()).collect();
        assert_eq!(classes, [0, 0, 1, 1].map(Target::Class));
        assert_eq!(got[2].group.as_deref(), Some("v1"));
        assert_eq!(got[3].group, None);
        assert_eq!(got[0].image, pattern(48, 40));
        assert_ne!(got[2].image, got[0].image);
        // The blend of sample i is seeded by (seed, 0, i): the same bytes as a direct call.
        let region = FaceRegion::for_crop(48, 40, &CropConfig::default()).unwrap();
        let direct =
            self_blend(&pattern(48, 40), &region, &SbiConfig::default(), &mut sample_rng(5, 0, 1));
        assert_eq!(got[3].image, direct.unwrap());
        assert!(data.get(4).is_err());
        let origin = data.origin(3);
        assert!(origin.is_none() || origin.is_some_and(|o| o.id == "b.png#sbi"));
    }

    #[test]
    fn a_fake_in_the_reals_is_an_error_naming_it() {
        let reals = InMemory(vec![sample("ok.png", 0, None), sample("fake_07.png", 1, None)]);
        let data = SelfBlended::new(reals, SbiConfig::default(), 0);
        assert!(data.get(0).is_ok() && data.get(2).is_ok());
        for i in [1, 3] {
            let err = data.get(i).unwrap_err().to_string();
            assert!(err.contains("fake_07.png") && err.contains("class 0"), "{err}");
        }
    }
}
