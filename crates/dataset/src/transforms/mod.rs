//! Seeded image transforms on `u8` images, and normalisation on the device.
//!
//! Geometry, colour and degradation transforms run on the CPU on [`Image`]s (8-bit, HWC), so a
//! batch stays `u8` until it reaches the device; [`Normalization`] then turns a `u8` NCHW
//! tensor into `f32` there.
//!
//! Every random transform draws from the [`ChaCha8Rng`] it is handed. The loader builds that
//! generator with [`sample_rng`] from `(seed, epoch, index)`, so a sample's augmentation depends
//! only on those three numbers, never on which worker thread ran it or in what order.
//!
//! | transform | reference semantics |
//! |---|---|
//! | [`Resize`] | Pillow `resize` (antialiased convolution; `fast_image_resize` does the work) |
//! | [`CenterCrop`] | torchvision `center_crop` (pads when the crop is larger) |
//! | [`ImageNetEval`] | torchvision ImageNet eval: shorter side to 256, centre crop 224 |
//! | [`Grayscale`] | Pillow `convert("L")`, bit-exact |
//! | [`HorizontalFlip`], [`RandomAffine`], [`ColorJitter`], [`GaussianBlur`] | torchvision |
//! | [`JpegRecompress`], [`GaussianNoise`], [`Cutout`] | common deepfake-detection augmentations |
//!
//! ```
//! use deeprecog_dataset::transforms::{
//!     sample_rng, to_chw, CenterCrop, Compose, HorizontalFlip, Normalization, Resize, Transform,
//! };
//! use deeprecog_dataset::Image;
//!
//! // A CelebA-shaped (178 wide, 218 high) image.
//! let image = Image::filled(178, 218, 3, 128)?;
//! let pipeline = Compose::new()
//!     .then(CenterCrop::new(178, 178))
//!     .then(Resize::new(64, 64))
//!     .then(HorizontalFlip::new(0.5));
//! let mut rng = sample_rng(42, 0, 7);
//! let out = pipeline.apply(image, &mut rng)?;
//! assert_eq!((out.width(), out.height(), out.channels()), (64, 64, 3));
//!
//! // The loader stacks CHW bytes into a u8 batch; normalisation happens on the device.
//! let chw = to_chw(&out);
//! let batch = candle_core::Tensor::from_vec(chw, (1, 3, 64, 64), &candle_core::Device::Cpu)?;
//! let x = Normalization::ImageNet.apply(&batch)?;
//! assert_eq!(x.dims(), &[1, 3, 64, 64]);
//! # Ok::<(), deeprecog_dataset::Error>(())
//! ```

mod color;
mod degrade;
mod geometry;
mod normalize;
mod presets;

pub use color::{ColorJitter, Grayscale};
pub use degrade::{Cutout, GaussianBlur, GaussianNoise, JpegRecompress};
pub use geometry::{CenterCrop, Filter, HorizontalFlip, RandomAffine, Resize};
pub use normalize::Normalization;
pub use presets::ImageNetEval;
pub use rand_chacha::ChaCha8Rng;

use rand::{Rng, SeedableRng};

use crate::{Error, Image, Result};

/// One step of an image pipeline.
///
/// Implementations must take all their randomness from `rng` so that a sample's output is a
/// function of its [`sample_rng`] seed alone. Closures `Fn(Image, &mut ChaCha8Rng) ->
/// Result<Image>` are transforms too.
pub trait Transform: Send + Sync {
    /// Transforms `image`, drawing any random parameters from `rng`.
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image>;
}

impl<F> Transform for F
where
    F: Fn(Image, &mut ChaCha8Rng) -> Result<Image> + Send + Sync,
{
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        self(image, rng)
    }
}

impl Transform for Box<dyn Transform> {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        (**self).apply(image, rng)
    }
}

impl Transform for std::sync::Arc<dyn Transform> {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        (**self).apply(image, rng)
    }
}

/// Transforms applied one after the other, in the order they were added.
#[derive(Default)]
pub struct Compose(Vec<Box<dyn Transform>>);

impl Compose {
    /// An empty pipeline (the identity).
    pub fn new() -> Compose {
        Compose(Vec::new())
    }

    /// Appends `transform` and returns the pipeline, for chaining.
    #[must_use]
    pub fn then(mut self, transform: impl Transform + 'static) -> Compose {
        self.0.push(Box::new(transform));
        self
    }

    /// Appends `transform` in place.
    pub fn push(&mut self, transform: impl Transform + 'static) {
        self.0.push(Box::new(transform));
    }

    /// How many transforms the pipeline holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the pipeline is the identity.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Compose {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compose({} transforms)", self.0.len())
    }
}

impl Transform for Compose {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        self.0.iter().try_fold(image, |image, t| t.apply(image, rng))
    }
}

/// Applies the inner transform with probability `p`, else passes the image through.
///
/// A uniform number is drawn whether or not the transform runs, so `p` never shifts the random
/// stream of the transforms that follow.
pub struct RandomApply<T> {
    /// Probability of applying `transform`, in `[0, 1]`.
    pub p: f64,
    /// The transform to apply.
    pub transform: T,
}

impl<T: Transform> RandomApply<T> {
    /// Applies `transform` with probability `p`.
    pub fn new(p: f64, transform: T) -> RandomApply<T> {
        RandomApply { p, transform }
    }
}

impl<T: Transform> Transform for RandomApply<T> {
    fn apply(&self, image: Image, rng: &mut ChaCha8Rng) -> Result<Image> {
        check_probability("RandomApply", self.p)?;
        if rng.random::<f64>() < self.p {
            self.transform.apply(image, rng)
        } else {
            Ok(image)
        }
    }
}

/// The random generator for sample `index` of `epoch` in a run seeded with `seed`.
///
/// The three numbers fill the 256-bit ChaCha key directly (plus a fixed domain tag), so distinct
/// triples give distinct keys, hence independent streams, with no hashing collisions; the result
/// does not depend on thread scheduling because nothing is shared between samples.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    const DOMAIN: u64 = u64::from_le_bytes(*b"dr-xform");
    let mut key = [0u8; 32];
    for (chunk, word) in key.chunks_exact_mut(8).zip([seed, epoch, index, DOMAIN]) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// The image's bytes in planar CHW order (what a `(C, H, W)` `u8` tensor holds).
pub fn to_chw(image: &Image) -> Vec<u8> {
    let mut out = vec![0u8; image.as_bytes().len()];
    write_chw(image, &mut out);
    out
}

/// Writes the image in planar CHW order into `out`, which must hold exactly
/// `width * height * channels` bytes: the loader uses this to fill its batch buffer in place.
pub fn to_chw_into(image: &Image, out: &mut [u8]) -> Result<()> {
    if out.len() != image.as_bytes().len() {
        return Err(Error::Config(format!(
            "to_chw_into: {}x{}x{} image needs {} bytes, the buffer holds {}",
            image.width(),
            image.height(),
            image.channels(),
            image.as_bytes().len(),
            out.len()
        )));
    }
    write_chw(image, out);
    Ok(())
}

fn write_chw(image: &Image, out: &mut [u8]) {
    let src = image.as_bytes();
    if image.channels() != 3 {
        out.copy_from_slice(src);
        return;
    }
    let plane = src.len() / 3;
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    // Zipped exact chunks let the compiler drop bounds checks and vectorise the shuffle.
    for (((px, r), g), b) in src.chunks_exact(3).zip(r).zip(g).zip(b) {
        if let [pr, pg, pb] = *px {
            *r = pr;
            *g = pg;
            *b = pb;
        }
    }
}

/// A uniform draw in `[lo, hi]`; always consumes one number so that parameter values never
/// change how much of the stream later transforms see.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    let u: f64 = rng.random();
    lo + (hi - lo) * u
}

pub(crate) fn check_probability(what: &str, p: f64) -> Result<()> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(Error::Config(format!("{what}: probability {p} is not in [0, 1]")))
    }
}

pub(crate) fn check_range(what: &str, (lo, hi): (f64, f64), min: f64) -> Result<()> {
    if lo.is_finite() && hi.is_finite() && lo >= min && lo <= hi {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{what}: range ({lo}, {hi}) must be finite, ordered and >= {min}"
        )))
    }
}

/// Rebuilds an image from bytes this module produced; a length mismatch would be a bug here, so
/// it is reported with the image's geometry rather than a panic.
pub(crate) fn rebuild(width: u32, height: u32, channels: u8, data: Vec<u8>) -> Result<Image> {
    Image::from_raw(width, height, channels, data)
}

pub(crate) fn clamp_u8(v: f32) -> u8 {
    // `as` saturates and maps NaN to 0, so this cannot produce garbage on odd floats.
    v.round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::Image;

    /// The golden file produced by `tests/golden/transforms_reference.py`.
    pub const GOLDEN: &str = include_str!("../../tests/golden/transforms_golden.json");

    pub fn golden_cases(op: &str) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(GOLDEN).unwrap();
        v["cases"].as_array().unwrap().iter().filter(|c| c["op"] == op).cloned().collect()
    }

    pub fn image_from_json(v: &serde_json::Value) -> Image {
        let data: Vec<u8> =
            v["data"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect();
        Image::from_raw(
            v["width"].as_u64().unwrap() as u32,
            v["height"].as_u64().unwrap() as u32,
            v["channels"].as_u64().unwrap() as u8,
            data,
        )
        .unwrap()
    }

    /// A non-square pattern with distinct values, (w, h, c).
    pub fn pattern(w: u32, h: u32, c: u8) -> Image {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for k in 0..c as u32 {
                    data.push(((x * 37 + y * 53 + k * 91 + x * y * 11) % 256) as u8);
                }
            }
        }
        Image::from_raw(w, h, c, data).unwrap()
    }

    pub fn max_abs_diff(a: &Image, b: &Image) -> u8 {
        assert_eq!((a.width(), a.height(), a.channels()), (b.width(), b.height(), b.channels()));
        a.as_bytes().iter().zip(b.as_bytes()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::pattern;
    use super::*;

    #[test]
    fn sample_rng_is_deterministic_and_distinct() {
        let a: u64 = sample_rng(1, 2, 3).random();
        let b: u64 = sample_rng(1, 2, 3).random();
        assert_eq!(a, b);
        let others: Vec<u64> = [(2, 2, 3), (1, 3, 3), (1, 2, 4), (3, 2, 1)]
            .iter()
            .map(|&(s, e, i)| sample_rng(s, e, i).random())
            .collect();
        assert!(others.iter().all(|&o| o != a));
    }

    #[test]
    fn chw_layout_non_square() {
        let img = pattern(4, 3, 3);
        let chw = to_chw(&img);
        for c in 0..3u8 {
            for y in 0..3u32 {
                for x in 0..4u32 {
                    let i = (c as usize * 3 + y as usize) * 4 + x as usize;
                    assert_eq!(chw[i], img.get(x, y, c).unwrap(), "c={c} y={y} x={x}");
                }
            }
        }
        let gray = pattern(4, 3, 1);
        assert_eq!(to_chw(&gray), gray.as_bytes());
        let mut small = vec![0u8; 5];
        assert!(to_chw_into(&img, &mut small).is_err());
    }

    #[test]
    fn compose_closures_and_random_apply() {
        let add_one = |img: Image, _: &mut ChaCha8Rng| -> Result<Image> {
            let data = img.as_bytes().iter().map(|v| v.saturating_add(1)).collect();
            Image::from_raw(img.width(), img.height(), img.channels(), data)
        };
        let pipeline = Compose::new().then(add_one).then(add_one);
        assert_eq!(pipeline.len(), 2);
        let img = Image::filled(5, 3, 1, 10).unwrap();
        let out = pipeline.apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap();
        assert!(out.as_bytes().iter().all(|&v| v == 12));
        let never = RandomApply::new(0.0, add_one);
        assert_eq!(never.apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap(), img);
        let always = RandomApply::new(1.0, add_one);
        assert_ne!(always.apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap(), img);
        assert!(RandomApply::new(1.5, add_one).apply(img, &mut sample_rng(0, 0, 0)).is_err());
    }
}
