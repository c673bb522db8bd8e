//! Images as the pipeline carries them: 8-bit, interleaved, 1 or 3 channels.
//!
//! Data stays `u8` until it reaches the device: 200k CelebA images at 128x128x3 are 9.8 GB as
//! `u8` and four times that as `f32`.

use std::path::Path;

use crate::{Error, Result};

/// Largest width or height [`Image::decode`] accepts by default (bigger files are an error,
/// not an allocation of gigabytes).
pub const MAX_SIDE: u32 = 16_384;

/// What the decoder does with a damaged file.
///
/// The `image` crate, like a browser, renders whatever a truncated JPEG still holds and fills
/// the rest in grey, so a CelebA file cut to its first 3,000 bytes "decodes" into a half-grey
/// face. Training on such images silently is worse than skipping them, so decoding is
/// [`Strictness::Strict`] unless a caller opts in to [`Strictness::AcceptDamaged`].
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Strictness {
    /// A truncated or corrupt file is an error ([`Error::Decode`] or [`Error::Image`],
    /// naming the file). JPEG: every scan must be complete and consistent (the decoder runs in
    /// strict mode) and the end-of-image marker must be present. PNG: every chunk must be
    /// complete up to and including `IEND`, besides the decoder's own checks.
    #[default]
    Strict,
    /// Decode what can be decoded: a truncated image is completed by the decoder (grey for
    /// JPEG) and only unreadable files are errors. For salvaging damaged collections.
    AcceptDamaged,
}

/// How images are decoded; every reader of this crate takes one (the default is strict).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct DecodeOptions {
    /// What to do with truncated or corrupt files.
    pub strictness: Strictness,
    /// Largest width or height accepted.
    pub max_side: u32,
}

impl Default for DecodeOptions {
    /// Strict, at most [`MAX_SIDE`] pixels a side.
    fn default() -> Self {
        DecodeOptions { strictness: Strictness::Strict, max_side: MAX_SIDE }
    }
}

impl DecodeOptions {
    /// Default options that accept damaged files ([`Strictness::AcceptDamaged`]).
    pub fn accept_damaged() -> Self {
        DecodeOptions { strictness: Strictness::AcceptDamaged, ..DecodeOptions::default() }
    }
}

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

    /// Decodes a JPEG or PNG file (format sniffed from the content, not the extension) into
    /// RGB, strictly: a truncated or corrupt file is an error naming it (see [`Strictness`]).
    pub fn open(path: &Path) -> Result<Image> {
        Image::open_with(path, &DecodeOptions::default())
    }

    /// [`Image::open`] with explicit [`DecodeOptions`] (to accept damaged files, say).
    pub fn open_with(path: &Path, options: &DecodeOptions) -> Result<Image> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile { path: path.to_path_buf() },
            _ => Error::io(path, e),
        })?;
        Image::decode_with(&bytes, path, options)
    }

    /// Decodes JPEG or PNG bytes into RGB, strictly; `origin` names the source in errors.
    pub fn decode(bytes: &[u8], origin: &Path) -> Result<Image> {
        Image::decode_with(bytes, origin, &DecodeOptions::default())
    }

    /// Decodes JPEG or PNG bytes into RGB with explicit [`DecodeOptions`]; `origin` names the
    /// source in errors.
    pub fn decode_with(bytes: &[u8], origin: &Path, options: &DecodeOptions) -> Result<Image> {
        let err = |source| Error::Image { path: origin.to_path_buf(), source };
        let damaged = |message: String| Error::Decode { path: origin.to_path_buf(), message };
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| err(e.into()))?;
        let format = reader.format();
        if options.strictness == Strictness::Strict {
            match format {
                Some(image::ImageFormat::Jpeg) => {
                    let img = strict::decode_jpeg(bytes, options.max_side).map_err(damaged)?;
                    return Ok(img);
                }
                Some(image::ImageFormat::Png) => strict::check_png(bytes).map_err(damaged)?,
                _ => {}
            }
        }
        // The decoder's own allocation limit does not cover the RGB conversion below, so cap
        // the dimensions of what a (possibly hostile) file may claim.
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(options.max_side);
        limits.max_image_height = Some(options.max_side);
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
        Ok(crate::fsutil::write_atomically(path, &bytes)?)
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

/// The checks behind [`Strictness::Strict`].
mod strict {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;

    use super::Image;

    /// Decodes a JPEG with zune-jpeg in strict mode (the `image` crate runs the same decoder
    /// leniently: a scan that runs out of data is then filled in rather than an error), then
    /// requires the end-of-image marker.
    pub(super) fn decode_jpeg(bytes: &[u8], max_side: u32) -> Result<Image, String> {
        let options = DecoderOptions::default()
            .set_strict_mode(true)
            .jpeg_set_out_colorspace(ColorSpace::RGB)
            .set_max_width(max_side as usize)
            .set_max_height(max_side as usize);
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        let pixels =
            decoder.decode().map_err(|e| format!("damaged JPEG: {}", e.to_string().trim()))?;
        let (width, height) =
            decoder.dimensions().ok_or_else(|| "damaged JPEG: no frame header".to_string())?;
        if !jpeg_is_complete(bytes) {
            return Err("truncated JPEG: no end-of-image marker after the last scan".into());
        }
        let (width, height) = (
            u32::try_from(width).map_err(|_| "JPEG too wide".to_string())?,
            u32::try_from(height).map_err(|_| "JPEG too tall".to_string())?,
        );
        Image::from_raw(width, height, 3, pixels).map_err(|e| format!("damaged JPEG: {e}"))
    }

    /// Whether the marker structure of a JPEG reaches its end-of-image marker: segments are
    /// skipped by their lengths, entropy-coded data up to the next marker that is neither a
    /// stuffed `FF 00` nor a restart marker. Bytes after the end-of-image marker are allowed.
    pub(super) fn jpeg_is_complete(bytes: &[u8]) -> bool {
        if bytes.get(..2) != Some(&[0xFF, 0xD8]) {
            return false;
        }
        let mut pos = 2;
        loop {
            // A marker is one or more 0xFF fill bytes and a code.
            if bytes.get(pos) != Some(&0xFF) {
                return false;
            }
            while bytes.get(pos) == Some(&0xFF) {
                pos += 1;
            }
            let Some(&code) = bytes.get(pos) else { return false };
            pos += 1;
            match code {
                0xD9 => return true,
                // Markers without a length: TEM, RST0-7 (and a stray SOI).
                0x01 | 0xD0..=0xD8 => continue,
                _ => {}
            }
            let Some(len) =
                bytes.get(pos..pos + 2).map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            else {
                return false;
            };
            if len < 2 {
                return false;
            }
            pos += len;
            if pos > bytes.len() {
                return false;
            }
            if code == 0xDA {
                // Entropy-coded data follows a scan header.
                loop {
                    match bytes.get(pos..pos + 2) {
                        None => return false,
                        Some([0xFF, next]) if *next != 0x00 && !(0xD0..=0xD7).contains(next) => {
                            break
                        }
                        Some(_) => pos += 1,
                    }
                }
            }
        }
    }

    /// Whether a PNG's chunks are all complete up to and including `IEND` (the `png` crate
    /// accepts a file whose `IEND` lacks its checksum).
    pub(super) fn check_png(bytes: &[u8]) -> Result<(), String> {
        const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        if bytes.get(..8) != Some(&SIGNATURE[..]) {
            return Err("damaged PNG: bad signature".into());
        }
        let mut pos = 8usize;
        while let Some(header) = bytes.get(pos..pos + 8) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let end = pos.saturating_add(12).saturating_add(len);
            if end > bytes.len() {
                let kind = String::from_utf8_lossy(&header[4..8]).into_owned();
                return Err(format!(
                    "truncated PNG: chunk {kind} at byte {pos} needs {} bytes, the file ends after {}",
                    len + 12,
                    bytes.len() - pos
                ));
            }
            if &header[4..8] == b"IEND" {
                return Ok(());
            }
            pos = end;
        }
        Err(format!("truncated PNG: no IEND chunk in {} bytes", bytes.len()))
    }
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
