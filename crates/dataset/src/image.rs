//! Images as the pipeline carries them: 8-bit, interleaved, 1 or 3 channels.
//!
//! Data stays `u8` until it reaches the device: 200k CelebA images at 128x128x3 are 9.8 GB as
//! `u8` and four times that as `f32`.

use std::path::Path;

use crate::{Error, Result};

/// Largest width or height [`Image::decode`] accepts (bigger files are an error, not an
/// allocation of gigabytes).
pub const MAX_SIDE: u32 = 16_384;

/// An 8-bit image stored row-major, channels interleaved (HWC), with 1 (gray) or 3 (RGB)
/// channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    width: u32,
    height: u32,
    channels: u8,
    data: Vec<u8>,
}

impl Image {
    /// Wraps raw HWC bytes; fails when `data` does not hold `width * height * channels` bytes or
    /// `channels` is not 1 or 3.
    pub fn from_raw(width: u32, height: u32, channels: u8, data: Vec<u8>) -> Result<Image> {
        if channels != 1 && channels != 3 {
            return Err(Error::Config(format!("images have 1 or 3 channels, not {channels}")));
        }
        let expected = width as usize * height as usize * channels as usize;
        if data.len() != expected {
            return Err(Error::Config(format!(
                "{width}x{height}x{channels} image needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Image { width, height, channels, data })
    }

    /// A `width` x `height` image of one colour (`value` repeated in every channel).
    pub fn filled(width: u32, height: u32, channels: u8, value: u8) -> Result<Image> {
        Image::from_raw(
            width,
            height,
            channels,
            vec![value; width as usize * height as usize * channels as usize],
        )
    }

    /// Decodes a JPEG or PNG file (format sniffed from the content, not the extension) into RGB.
    pub fn open(path: &Path) -> Result<Image> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Image::decode(&bytes, path)
    }

    /// Decodes JPEG or PNG bytes into RGB; `origin` names the source in errors.
    pub fn decode(bytes: &[u8], origin: &Path) -> Result<Image> {
        let err = |source| Error::Image { path: origin.to_path_buf(), source };
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| err(e.into()))?;
        // The decoder's own allocation limit does not cover the RGB conversion below, so cap
        // the dimensions of what a (possibly hostile) file may claim.
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(MAX_SIDE);
        limits.max_image_height = Some(MAX_SIDE);
        reader.limits(limits);
        let img = reader.decode().map_err(err)?;
        Ok(Image::from(img.into_rgb8()))
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// 1 (gray) or 3 (RGB).
    pub fn channels(&self) -> u8 {
        self.channels
    }

    /// The HWC bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The HWC bytes, mutable.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Gives up the HWC bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// The value of channel `c` at (`x`, `y`); `None` outside the image.
    pub fn get(&self, x: u32, y: u32, c: u8) -> Option<u8> {
        if x >= self.width || y >= self.height || c >= self.channels {
            return None;
        }
        self.data.get(self.offset(x, y) + c as usize).copied()
    }

    /// The pixel at (`x`, `y`) as a slice of `channels` bytes; `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<&[u8]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let o = self.offset(x, y);
        self.data.get(o..o + self.channels as usize)
    }

    /// The pixel at (`x`, `y`), mutable; `None` outside the image.
    pub fn pixel_mut(&mut self, x: u32, y: u32) -> Option<&mut [u8]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let o = self.offset(x, y);
        let c = self.channels as usize;
        self.data.get_mut(o..o + c)
    }

    fn offset(&self, x: u32, y: u32) -> usize {
        (y as usize * self.width as usize + x as usize) * self.channels as usize
    }

    /// The image as a 3-channel RGB image (gray is replicated).
    pub fn to_rgb(&self) -> Image {
        if self.channels == 3 {
            return self.clone();
        }
        let data = self.data.iter().flat_map(|v| [*v, *v, *v]).collect();
        Image { width: self.width, height: self.height, channels: 3, data }
    }

    /// Converts to an `image` crate buffer (RGB or luma) for encoding or interop.
    pub fn to_dynamic(&self) -> image::DynamicImage {
        match self.channels {
            1 => image::GrayImage::from_raw(self.width, self.height, self.data.clone())
                .map(image::DynamicImage::ImageLuma8),
            _ => image::RgbImage::from_raw(self.width, self.height, self.data.clone())
                .map(image::DynamicImage::ImageRgb8),
        }
        // The constructors only fail on a length mismatch, which `Image` rules out.
        .unwrap_or_else(|| image::DynamicImage::new_rgb8(self.width, self.height))
    }

    /// Writes the image; the format follows the extension (`.png`, `.jpg`/`.jpeg` at quality 95).
    pub fn save(&self, path: &Path) -> Result<()> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let bytes = match ext.as_str() {
            "jpg" | "jpeg" => self.encode_jpeg(95, path)?,
            _ => self.encode_png(path)?,
        };
        crate::fsutil::write_atomic(path, &bytes)
    }

    /// Encodes as baseline JPEG at `quality` (1-100); `origin` names the image in errors.
    pub fn encode_jpeg(&self, quality: u8, origin: &Path) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let color = if self.channels == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
            .encode(&self.data, self.width, self.height, color)
            .map_err(|source| Error::Image { path: origin.to_path_buf(), source })?;
        Ok(out)
    }

    /// Encodes as PNG; `origin` names the image in errors.
    pub fn encode_png(&self, origin: &Path) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let color = if self.channels == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut out),
            &self.data,
            self.width,
            self.height,
            color,
        )
        .map_err(|source| Error::Image { path: origin.to_path_buf(), source })?;
        Ok(out)
    }
}

impl From<image::RgbImage> for Image {
    fn from(img: image::RgbImage) -> Image {
        let (width, height) = img.dimensions();
        Image { width, height, channels: 3, data: img.into_raw() }
    }
}

impl From<image::GrayImage> for Image {
    fn from(img: image::GrayImage) -> Image {
        let (width, height) = img.dimensions();
        Image { width, height, channels: 1, data: img.into_raw() }
    }
}

/// Whether a file name has an image extension the readers accept (jpg, jpeg, png; any case).
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_roundtrip_and_bounds() {
        let mut img = Image::filled(3, 2, 3, 7).unwrap();
        img.pixel_mut(2, 1).unwrap().copy_from_slice(&[1, 2, 3]);
        assert_eq!(img.get(2, 1, 2), Some(3));
        assert_eq!(img.get(3, 0, 0), None);
        assert_eq!(img.pixel(0, 2), None);
        assert!(Image::from_raw(3, 2, 3, vec![0; 17]).is_err());
        assert!(Image::from_raw(3, 2, 2, vec![0; 12]).is_err());
    }

    #[test]
    fn png_and_jpeg_roundtrip_non_square() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = Image::filled(5, 3, 3, 0).unwrap();
        img.pixel_mut(4, 2).unwrap().copy_from_slice(&[255, 10, 20]);
        let png = dir.path().join("a.png");
        img.save(&png).unwrap();
        let back = Image::open(&png).unwrap();
        assert_eq!(back, img);
        let jpg = dir.path().join("b.JPG");
        img.save(&jpg).unwrap();
        let back = Image::open(&jpg).unwrap();
        assert_eq!((back.width(), back.height(), back.channels()), (5, 3, 3));
    }

    #[test]
    fn corrupt_bytes_name_the_file() {
        let err =
            Image::decode(&[0xFF, 0xD8, 0xFF, 0x00, 0x01], Path::new("x/broken.jpg")).unwrap_err();
        assert!(err.to_string().contains("broken.jpg"), "{err}");
    }
}
