//! Fixed preprocessing pipelines that pretrained weights expect.

use super::{CenterCrop, ChaCha8Rng, Filter, Resize, Transform};
use crate::{Error, Image, Result};

/// torchvision's ImageNet evaluation preprocessing (`ImageClassification`): resize the shorter
/// side to `resize` keeping the aspect ratio (bilinear, antialiased as Pillow and torchvision's
/// `antialias=True` do), then crop the central `crop` x `crop` square.
///
/// Normalisation is left to [`super::Normalization::ImageNet`] on the device, as everywhere
/// else in the pipeline.
///
/// ```
/// use deeprecog_dataset::transforms::ImageNetEval;
/// use deeprecog_dataset::Image;
///
/// let preset = ImageNetEval::default();
/// // Grace Hopper's portrait, 512 wide and 600 high: torchvision resizes it to 256x300.
/// assert_eq!(preset.resized_size(512, 600)?, (256, 300));
/// let out = preset.preprocess(&Image::filled(512, 600, 3, 90)?)?;
/// assert_eq!((out.width(), out.height()), (224, 224));
/// # Ok::<(), deeprecog_dataset::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageNetEval {
    /// Target length of the shorter side after resizing.
    pub resize: u32,
    /// Side of the square centre crop taken from the resized image.
    pub crop: u32,
}

impl Default for ImageNetEval {
    /// The 256 / 224 of torchvision's ImageNet weights.
    fn default() -> Self {
        ImageNetEval { resize: 256, crop: 224 }
    }
}

impl ImageNetEval {
    /// Resize the shorter side to `resize`, then centre crop `crop` x `crop`.
    pub fn new(resize: u32, crop: u32) -> ImageNetEval {
        ImageNetEval { resize, crop }
    }

    /// The `(width, height)` the resize step produces for a `width` x `height` image.
    ///
    /// torchvision computes the longer side as `int(resize * long / short)`: truncation, which
    /// integer division reproduces exactly (the float quotient of such small integers never
    /// rounds across an integer).
    pub fn resized_size(&self, width: u32, height: u32) -> Result<(u32, u32)> {
        if self.resize == 0 || self.crop == 0 {
            return Err(Error::Config(format!(
                "ImageNetEval: resize {} and crop {} must be positive",
                self.resize, self.crop
            )));
        }
        if width == 0 || height == 0 {
            return Err(Error::Config(format!(
                "ImageNetEval: cannot resize an empty {width}x{height} image"
            )));
        }
        let (short, long) = (width.min(height), width.max(height));
        let new_long = u64::from(self.resize) * u64::from(long) / u64::from(short);
        let new_long = u32::try_from(new_long).map_err(|_| {
            Error::Config(format!(
                "ImageNetEval: resizing {width}x{height} to a short side of {} overflows",
                self.resize
            ))
        })?;
        Ok(if width <= height { (self.resize, new_long) } else { (new_long, self.resize) })
    }

    /// Applies the preset to `image` (no randomness involved).
    pub fn preprocess(&self, image: &Image) -> Result<Image> {
        let (w, h) = self.resized_size(image.width(), image.height())?;
        let resized = Resize::new(w, h).with_filter(Filter::Bilinear).resize(image)?;
        CenterCrop::new(self.crop, self.crop).crop(&resized)
    }
}

impl Transform for ImageNetEval {
    fn apply(&self, image: Image, _rng: &mut ChaCha8Rng) -> Result<Image> {
        self.preprocess(&image)
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample_rng;
    use super::super::testutil::pattern;
    use super::*;

    #[test]
    fn sizes_follow_torchvision() {
        let p = ImageNetEval::default();
        assert_eq!(p.resized_size(512, 600).unwrap(), (256, 300));
        // int(256 * 400 / 300) = int(341.33) = 341.
        assert_eq!(p.resized_size(400, 300).unwrap(), (341, 256));
        assert_eq!(p.resized_size(178, 218).unwrap(), (256, 313));
        assert_eq!(p.resized_size(100, 100).unwrap(), (256, 256));
        assert_eq!(p.resized_size(256, 1000).unwrap(), (256, 1000));
        assert!(p.resized_size(0, 10).is_err());
        assert!(ImageNetEval::new(0, 224).resized_size(10, 10).is_err());
    }

    #[test]
    fn non_square_equals_explicit_resize_then_crop() {
        for (w, h) in [(300u32, 200u32), (180, 330)] {
            let img = pattern(w, h, 3);
            let preset = ImageNetEval::new(64, 48);
            let out = preset.apply(img.clone(), &mut sample_rng(0, 0, 0)).unwrap();
            assert_eq!((out.width(), out.height(), out.channels()), (48, 48, 3));
            let (rw, rh) = preset.resized_size(w, h).unwrap();
            assert_eq!(rw.min(rh), 64);
            assert_eq!((rw * 10 / rh), (w * 10 / h), "aspect ratio kept for {w}x{h}");
            let expected =
                CenterCrop::new(48, 48).crop(&Resize::new(rw, rh).resize(&img).unwrap()).unwrap();
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn crop_of_a_left_right_ramp_keeps_the_centre() {
        // A horizontal ramp 400 wide, 200 high: resized to 128x64, the centre 64x64 crop
        // starts at x = 32, so its columns come from source x in [100, 300).
        let (w, h) = (400u32, 200u32);
        let mut data = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                data.push((x * 255 / (w - 1)) as u8);
            }
        }
        let img = Image::from_raw(w, h, 1, data).unwrap();
        let out = ImageNetEval::new(64, 64).preprocess(&img).unwrap();
        assert_eq!((out.width(), out.height()), (64, 64));
        let first = i32::from(out.get(0, 32, 0).unwrap());
        let last = i32::from(out.get(63, 32, 0).unwrap());
        assert!((first - 100 * 255 / 399).abs() <= 2, "first column {first}");
        assert!((last - 298 * 255 / 399).abs() <= 2, "last column {last}");
    }
}
