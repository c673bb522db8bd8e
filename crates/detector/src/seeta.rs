//! SeetaFace's frontal face detector (a funnel-structured cascade: LAB boosted stages, then
//! SURF + MLP stages) through the pure-Rust `rustface` port.
//!
//! The cascade needs no accelerator and no ONNX runtime; it finds upright, roughly frontal faces
//! and gives boxes only (no keypoints, so eye alignment falls back to plain crops). The model file
//! is `seeta_fd_frontal_v1.0.bin`, shipped inside the `rustface` crate package
//! (`scripts/fetch-assets.sh` copies it to `assets/seeta/`).

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::transforms::Resize;
use deeprecog_dataset::Image;
use serde::{Deserialize, Serialize};

use crate::face::{Detection, FaceDetector};
use crate::{Error, Result};

/// The side of the cascade's sliding window at the pyramid's first scale: a face this size
/// (in the image the cascade sees) is the smallest it finds.
const WINDOW: u32 = 40;

/// Settings of [`Seeta`]. The defaults are those of SeetaFace's and `rustface`'s demos.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SeetaConfig {
    /// The smallest face to find, in pixels (at least 20). The cascade's window is 40 pixels,
    /// so below 40 the image is upscaled by `40 / min_face_size` first (SeetaFace's own
    /// `max_scale`, which `rustface` 0.1.7 leaves out) and above 40 it is downscaled: time and
    /// memory grow with the square of `40 / min_face_size` (the default's 2x upscale costs
    /// about 4x the time of 40; for video frames whose faces are larger, 40 or more is the
    /// better choice).
    pub min_face_size: u32,
    /// The cascade's raw score a face must reach (> 0). SeetaFace suggests 0.95, 2.8 or 4.5;
    /// lower finds more faces and more false ones.
    pub score_threshold: f64,
    /// The ratio between adjacent scales of the image pyramid, in [0.01, 0.99]; closer to 1 is
    /// slower and misses fewer faces between scales.
    pub pyramid_scale_factor: f32,
    /// The sliding window's step in pixels, both directions (at least 1).
    pub slide_window_step: u32,
}

impl Default for SeetaConfig {
    fn default() -> Self {
        SeetaConfig {
            min_face_size: 20,
            score_threshold: 2.0,
            pyramid_scale_factor: 0.8,
            slide_window_step: 4,
        }
    }
}

impl SeetaConfig {
    /// Checks the ranges `rustface` accepts (it panics outside them).
    pub fn validate(&self) -> Result<()> {
        let invalid = |what, reason: String| Err(Error::InvalidConfig { what, reason });
        if self.min_face_size < 20 {
            return invalid(
                "seeta min_face_size",
                format!("{} is below the cascade's minimum of 20", self.min_face_size),
            );
        }
        if !(self.score_threshold.is_finite() && self.score_threshold > 0.0) {
            return invalid(
                "seeta score_threshold",
                format!("{} is not a positive number", self.score_threshold),
            );
        }
        if !(0.01..=0.99).contains(&self.pyramid_scale_factor) {
            return invalid(
                "seeta pyramid_scale_factor",
                format!("{} is outside [0.01, 0.99]", self.pyramid_scale_factor),
            );
        }
        if self.slide_window_step == 0 {
            return invalid("seeta slide_window_step", "0 is not a step".to_string());
        }
        Ok(())
    }
}

/// One face as the cascade reports it: the box and the raw, unbounded score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RawFace {
    /// The face box in the input image's pixels (square, as the cascade's windows are).
    pub bbox: FaceBox,
    /// The last stage's score summed over the windows merged into this face: unbounded,
    /// at least [`SeetaConfig::score_threshold`]. [`Seeta::probability`] maps it to [0, 1].
    pub raw_score: f64,
}

/// SeetaFace's frontal face detector.
///
/// `rustface`'s detector needs `&mut self` and keeps per-image scratch buffers, so every call
/// builds its own from the parsed model (cloning the model costs far less than the smallest
/// detection): concurrent callers never wait for each other and no buffer outlives its call.
#[derive(Clone)]
pub struct Seeta {
    model: Arc<rustface::Model>,
    config: SeetaConfig,
}

impl std::fmt::Debug for Seeta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seeta").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Seeta {
    /// Loads `seeta_fd_frontal_v1.0.bin`; a missing file is [`Error::Io`], a corrupt or
    /// truncated one [`Error::Weights`], both naming the file.
    pub fn from_file(path: &Path, config: SeetaConfig) -> Result<Seeta> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Seeta::parse(&bytes, path, config)
    }

    /// Loads the model from its bytes (errors name it `<SeetaFace model bytes>`).
    pub fn from_bytes(bytes: &[u8], config: SeetaConfig) -> Result<Seeta> {
        Seeta::parse(bytes, Path::new("<SeetaFace model bytes>"), config)
    }

    fn parse(bytes: &[u8], origin: &Path, config: SeetaConfig) -> Result<Seeta> {
        config.validate()?;
        let weights = |reason: String| Error::Weights { path: origin.to_path_buf(), reason };
        // rustface's reader trusts the file: counts size allocations, an unknown classifier
        // kind panics, and the detector later indexes raw pointers with the model's numbers.
        // The structure is checked here first, so only a model the detector can run gets in.
        check_model(bytes).map_err(weights)?;
        let model = catch_unwind(|| rustface::read_model(Cursor::new(bytes)))
            .map_err(|_| weights("the model reader gave up on the file".to_string()))?
            .map_err(|e| weights(format!("cannot read the SeetaFace model: {e}")))?;
        Ok(Seeta { model: Arc::new(model), config })
    }

    /// The same model with other settings (the model is shared, not copied).
    pub fn with_config(&self, config: SeetaConfig) -> Result<Seeta> {
        config.validate()?;
        Ok(Seeta { model: Arc::clone(&self.model), config })
    }

    /// The settings in use.
    pub fn config(&self) -> &SeetaConfig {
        &self.config
    }

    /// Maps a raw cascade score to [0, 1]: `1 / (1 + exp(-(raw - 2) / 2))`, a logistic centred
    /// on the demos' threshold of 2, so the default threshold keeps faces from 0.5 up and
    /// scores compare across settings. Monotone: sorting by either gives the same order.
    pub fn probability(raw_score: f64) -> f32 {
        (1.0 / (1.0 + (-(raw_score - 2.0) / 2.0).exp())) as f32
    }

    /// The faces in `image` (RGB or gray) with the cascade's raw scores, best first.
    pub fn detect_raw(&self, image: &Image) -> Result<Vec<RawFace>> {
        let (width, height) = (image.width(), image.height());
        if width == 0 || height == 0 {
            return Ok(Vec::new());
        }
        let gray = to_gray(image)?;
        // The cascade's pyramid starts at the image's own size with a 40-pixel window; scaling
        // the image by 40 / min_face_size first is SeetaFace's way of honouring the setting.
        let factor = f64::from(WINDOW) / f64::from(self.config.min_face_size);
        let scaled_w = (f64::from(width) * factor).round().max(1.0) as u32;
        let scaled_h = (f64::from(height) * factor).round().max(1.0) as u32;
        // A scaled image smaller than the window has no place for a face; rustface would not
        // scan it either, but its pyramid arithmetic is not meant for it.
        if scaled_w.min(scaled_h) < WINDOW {
            return Ok(Vec::new());
        }
        let gray = if (scaled_w, scaled_h) == (width, height) {
            gray
        } else {
            Resize::new(scaled_w, scaled_h).resize(&gray)?
        };
        let (sx, sy) =
            (f64::from(width) / f64::from(scaled_w), f64::from(height) / f64::from(scaled_h));

        // The minimum face size is left at the port's default: it ignores it (the scaling
        // above does its work).
        let mut detector = rustface::create_detector_with_model((*self.model).clone());
        detector.set_score_thresh(self.config.score_threshold);
        detector.set_pyramid_scale_factor(self.config.pyramid_scale_factor);
        detector
            .set_slide_window_step(self.config.slide_window_step, self.config.slide_window_step);
        let data = rustface::ImageData::new(gray.as_bytes(), gray.width(), gray.height());
        // The model was checked at load time; this guards the port's own arithmetic on odd
        // image sizes, so that a bad frame is an error and not a crashed worker.
        let found = catch_unwind(AssertUnwindSafe(|| detector.detect(&data))).map_err(|_| {
            Error::InvalidConfig {
                what: "seeta input image",
                reason: format!(
                    "the cascade failed on a {width}x{height} image (scaled to {}x{}); with \
                     overflow checks on, rustface's 32-bit integral images overflow on large \
                     images: build it with `overflow-checks = false`",
                    gray.width(),
                    gray.height()
                ),
            }
        })?;
        let mut faces: Vec<RawFace> = found
            .iter()
            .map(|face| {
                let b = face.bbox();
                RawFace {
                    bbox: FaceBox::new(
                        (f64::from(b.x()) * sx) as f32,
                        (f64::from(b.y()) * sy) as f32,
                        (f64::from(b.width()) * sx) as f32,
                        (f64::from(b.height()) * sy) as f32,
                    ),
                    raw_score: face.score(),
                }
            })
            .collect();
        faces.sort_by(|a, b| b.raw_score.total_cmp(&a.raw_score));
        Ok(faces)
    }
}

impl FaceDetector for Seeta {
    fn name(&self) -> &str {
        "seeta"
    }

    fn detect(&self, image: &Image) -> Result<Vec<Detection>> {
        Ok(self
            .detect_raw(image)?
            .into_iter()
            .map(|face| Detection::new(face.bbox, Seeta::probability(face.raw_score)))
            .collect())
    }
}

/// Luma with the BT.601 weights (0.299, 0.587, 0.114) that OpenCV's grayscale conversion, and
/// so SeetaFace's own demo, uses; rounded to nearest.
fn to_gray(image: &Image) -> Result<Image> {
    if image.channels() == 1 {
        return Ok(image.clone());
    }
    let data = image
        .as_bytes()
        .chunks_exact(3)
        .map(|p| {
            let sum = 299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]);
            ((sum + 500) / 1000) as u8
        })
        .collect();
    Ok(Image::from_raw(image.width(), image.height(), 1, data)?)
}

/// The number of SURF features rustface's feature pool holds (40x40 samples, patches from 16
/// pixels growing by 1 and moving by 16, five patch formats of 2x2 cells).
fn surf_pool_size() -> usize {
    const FORMATS: [(usize, usize); 5] = [(1, 1), (1, 2), (2, 1), (2, 3), (3, 2)];
    let positions = |side: usize| (0..=40 - side).step_by(16).count();
    FORMATS
        .iter()
        .map(|&(fw, fh)| {
            (16..=40usize)
                .filter(|h| h % 2 == 0 && h % fh == 0)
                .map(|h| (h / fh * fw, h))
                .filter(|&(w, _)| w % 2 == 0 && (16..=40).contains(&w))
                .map(|(w, h)| positions(h) * positions(w))
                .sum::<usize>()
        })
        .sum()
}

/// Every SURF feature of the pool has 2x2 cells of 8 channels.
const SURF_FEATURE_DIM: usize = 32;

/// A little-endian reader over the model bytes that reports where it ran out.
struct ModelCursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl ModelCursor<'_> {
    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let end = self.at + 4;
        let word = self.bytes.get(self.at..end).ok_or_else(|| {
            format!("truncated: {what} expected at byte {} of {}", self.at, self.bytes.len())
        })?;
        self.at = end;
        Ok(i32::from_le_bytes([word[0], word[1], word[2], word[3]]))
    }

    /// A count in `min..=max` whose `per_item` 4-byte words still fit in the file.
    fn count(&mut self, what: &str, min: i32, max: i32, per_item: usize) -> Result<usize, String> {
        let at = self.at;
        let n = self.i32(what)?;
        if n < min || n > max {
            return Err(format!("{what} is {n} at byte {at}, expected {min}..={max}"));
        }
        let n = n.max(0) as usize;
        let needed = n.saturating_mul(per_item).saturating_mul(4);
        if needed > self.bytes.len() - self.at {
            return Err(format!("truncated: {what} {n} at byte {at} runs past the end"));
        }
        Ok(n)
    }

    /// `n` 4-byte floats, all finite (a NaN weight would turn into a zero-size box that the
    /// detector then reads through).
    fn floats(&mut self, n: usize, what: &str) -> Result<(), String> {
        let end = n.checked_mul(4).and_then(|b| b.checked_add(self.at));
        let words = match end {
            Some(end) if end <= self.bytes.len() => &self.bytes[self.at..end],
            _ => return Err(format!("truncated: {what} at byte {} runs past the end", self.at)),
        };
        if let Some(bad) = words
            .chunks_exact(4)
            .position(|w| !f32::from_le_bytes([w[0], w[1], w[2], w[3]]).is_finite())
        {
            return Err(format!("{what}: not a finite number at byte {}", self.at + 4 * bad));
        }
        self.at += words.len();
        Ok(())
    }
}

/// Checks that `bytes` is a SeetaFace funnel cascade the `rustface` detector can run: the
/// layout its reader expects, every count backed by data, and the invariants the detector
/// relies on without checking (first-level stages are LAB, SURF feature ids inside the
/// feature pool and filling the MLP's input exactly, window sources naming first-level
/// windows, finite weights, nothing after the end). This catches damaged files, not files
/// crafted to mislead the port.
fn check_model(bytes: &[u8]) -> Result<(), String> {
    let pool = surf_pool_size();
    let mut r = ModelCursor { bytes, at: 0 };
    let hierarchies = r.count("hierarchy count", 1, i32::MAX, 1)?;
    let mut first_size = 0;
    for h in 0..hierarchies {
        let max_size = if h == 0 { i32::MAX } else { first_size as i32 };
        let size = r.count("hierarchy size", 1, max_size, 1)?;
        if h == 0 {
            first_size = size;
        }
        for _ in 0..size {
            // The detector runs exactly one classifier per first-level window.
            let max_stages = if h == 0 { 1 } else { i32::MAX };
            let stages = r.count("stage count", 1, max_stages, 1)?;
            for _ in 0..stages {
                let kind_at = r.at;
                match r.i32("classifier kind")? {
                    0 => check_lab(&mut r)?,
                    1 if h > 0 => check_surf(&mut r, pool)?,
                    1 => {
                        return Err(format!(
                            "SURF classifier at byte {kind_at} in the first level, which runs \
                             LAB classifiers only"
                        ))
                    }
                    kind => {
                        return Err(format!("unknown classifier kind {kind} at byte {kind_at}"))
                    }
                }
            }
            // First-level windows have no sources; the file stores -1 there and the reader
            // takes any count below 1 as none.
            let sources = if h == 0 {
                r.count("window source count", i32::MIN, i32::MAX, 1)?
            } else {
                r.count("window source count", 1, i32::MAX, 1)?
            };
            for _ in 0..sources {
                let at = r.at;
                let id = r.i32("window source")?;
                if h > 0 && !(0..first_size as i32).contains(&id) {
                    return Err(format!(
                        "window source {id} at byte {at} is not one of the {first_size} \
                         first-level windows"
                    ));
                }
            }
        }
    }
    if r.at != bytes.len() {
        return Err(format!("{} unexpected bytes after the cascade's end", bytes.len() - r.at));
    }
    Ok(())
}

/// One LAB boosted classifier: feature offsets inside the 40-pixel window's 32x32 LAB map,
/// groups of 10 (the classifier checks its threshold every 10), a weight per LAB code.
fn check_lab(r: &mut ModelCursor<'_>) -> Result<(), String> {
    let at = r.at;
    let n = r.count("LAB classifier count", 1, i32::MAX, 3)?;
    if n % 10 != 0 {
        return Err(format!("{n} LAB classifiers at byte {at}, not a multiple of 10"));
    }
    let bins = r.count("LAB bin count", 255, i32::MAX - 1, 0)?;
    for _ in 0..n * 2 {
        let at = r.at;
        let offset = r.i32("LAB feature offset")?;
        if !(0..=31).contains(&offset) {
            return Err(format!("LAB feature offset {offset} at byte {at} is outside the window"));
        }
    }
    r.floats(n, "LAB thresholds")?;
    r.floats(n.saturating_mul(bins + 1), "LAB weights")
}

/// One SURF + MLP classifier: feature ids inside the pool, an input layer as wide as the
/// features, and at least 4 outputs (score and box regression).
fn check_surf(r: &mut ModelCursor<'_>, pool: usize) -> Result<(), String> {
    let layers = r.count("MLP layer count", 2, i32::MAX, 1)?;
    let features = r.count("SURF feature count", 1, i32::MAX, 1)?;
    for _ in 0..features {
        let at = r.at;
        let id = r.i32("SURF feature id")?;
        // The classifier reads feature `id - 1` and the width of feature `id`.
        if id < 1 || id as usize >= pool {
            return Err(format!("SURF feature id {id} at byte {at} is outside 1..{pool}"));
        }
    }
    r.floats(1, "MLP threshold")?;
    let at = r.at;
    let mut input = r.count("MLP input size", 1, i32::MAX, 0)?;
    if input != features * SURF_FEATURE_DIM {
        return Err(format!(
            "MLP input size {input} at byte {at} does not match {features} SURF features of \
             {SURF_FEATURE_DIM}"
        ));
    }
    for _ in 1..layers {
        let output = r.count("MLP layer size", 1, i32::MAX, 1)?;
        r.floats(input.saturating_mul(output), "MLP weights")?;
        r.floats(output, "MLP biases")?;
        input = output;
    }
    if input < 4 {
        return Err(format!("the MLP ends with {input} outputs, the detector reads 4"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn asset(name: &str) -> Option<std::path::PathBuf> {
        deeprecog_nn::assets::for_test(Path::new(env!("CARGO_MANIFEST_DIR")), name)
    }

    fn model_bytes() -> Option<Vec<u8>> {
        Some(std::fs::read(asset("seeta/seeta_fd_frontal_v1.0.bin")?).unwrap())
    }

    fn photo(name: &str) -> Option<Image> {
        Some(Image::open(&asset(name)?).unwrap().to_rgb())
    }

    fn put_i32(bytes: &mut [u8], at: usize, value: i32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn config_ranges_are_checked() {
        assert!(SeetaConfig::default().validate().is_ok());
        let bad = [
            SeetaConfig { min_face_size: 19, ..SeetaConfig::default() },
            SeetaConfig { score_threshold: 0.0, ..SeetaConfig::default() },
            SeetaConfig { score_threshold: f64::NAN, ..SeetaConfig::default() },
            SeetaConfig { pyramid_scale_factor: 0.005, ..SeetaConfig::default() },
            SeetaConfig { pyramid_scale_factor: 1.0, ..SeetaConfig::default() },
            SeetaConfig { pyramid_scale_factor: f32::NAN, ..SeetaConfig::default() },
            SeetaConfig { slide_window_step: 0, ..SeetaConfig::default() },
        ];
        for config in bad {
            assert!(matches!(config.validate(), Err(Error::InvalidConfig { .. })), "{config:?}");
            // Checked before the model is even read.
            assert!(matches!(Seeta::from_bytes(&[], config), Err(Error::InvalidConfig { .. })));
        }
        let partial: SeetaConfig = serde_json::from_str(r#"{"min_face_size": 40}"#).unwrap();
        assert_eq!(partial, SeetaConfig { min_face_size: 40, ..SeetaConfig::default() });
        assert_eq!(surf_pool_size(), 56);
    }

    #[test]
    fn scores_map_monotonically_into_the_unit_interval() {
        assert_eq!(Seeta::probability(2.0), 0.5);
        let raws = [-1e9, -5.0, 0.0, 2.0, 4.0, 10.0, 40.0, 1e9];
        let mapped: Vec<f32> = raws.iter().map(|&r| Seeta::probability(r)).collect();
        assert!(mapped.windows(2).all(|w| w[0] <= w[1]), "{mapped:?}");
        assert!(mapped.iter().all(|p| (0.0..=1.0).contains(p)));
        assert!(Seeta::probability(4.0) > 0.7 && Seeta::probability(10.0) > 0.98);
    }

    #[test]
    fn missing_and_corrupt_models_are_errors() {
        let missing = Path::new("/nonexistent/seeta_fd_frontal_v1.0.bin");
        let err = Seeta::from_file(missing, SeetaConfig::default()).unwrap_err();
        assert!(
            matches!(err, Error::Io { .. }) && err.to_string().contains("nonexistent"),
            "{err}"
        );

        let mut state = 0x2545_f491_4f6c_dd1du64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        for bytes in [&[][..], &[1, 0, 0][..], &random[..], &[0, 0, 0, 0][..], &[255; 64][..]] {
            let err = Seeta::from_bytes(bytes, SeetaConfig::default()).unwrap_err();
            assert!(matches!(err, Error::Weights { .. }), "{err}");
        }

        let Some(good) = model_bytes() else { return };
        assert!(Seeta::from_bytes(&good, SeetaConfig::default()).is_ok());
        // Truncated copies, cut inside every kind of record.
        for len in [4, 12, 20, 1000, 155_424, 466_290, 518_900, 1_000_000, good.len() - 1] {
            let err = Seeta::from_bytes(&good[..len], SeetaConfig::default()).unwrap_err();
            assert!(err.to_string().contains("truncated"), "{len}: {err}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Seeta::from_bytes(&longer, SeetaConfig::default()).is_err());
        // Damaged structure, at positions of records in seeta_fd_frontal_v1.0.bin: hierarchy
        // count, first classifier kind, LAB classifier and bin counts, a LAB feature offset,
        // a SURF feature id, an MLP input size, a window source; then a NaN weight.
        let damage = [
            (0, -1),
            (0, 1 << 30),
            (12, 7),
            (12, 1),
            (16, 151),
            (20, 3),
            (24, 40),
            (466_288, 56),
            (466_288, 0),
            (466_308, 127),
            (518_812 + 4, 3),
            (1000, f32::NAN.to_bits() as i32),
        ];
        for (at, value) in damage {
            let mut bytes = good.clone();
            put_i32(&mut bytes, at, value);
            let err = Seeta::from_bytes(&bytes, SeetaConfig::default()).unwrap_err();
            assert!(matches!(err, Error::Weights { .. }), "{at}={value}: {err}");
        }
        // From a file, the error names it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seeta_fd_frontal_v1.0.bin");
        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let err = Seeta::from_file(&path, SeetaConfig::default()).unwrap_err();
        assert!(matches!(err, Error::Weights { .. }), "{err}");
        assert!(err.to_string().contains("seeta_fd_frontal_v1.0.bin"), "{err}");
    }

    #[test]
    fn group_photo_faces() {
        let Some(bytes) = model_bytes() else { return };
        let Some(image) = photo("faces/group_1927.png") else { return };
        let seeta = Seeta::from_bytes(&bytes, SeetaConfig::default()).unwrap();
        let native =
            seeta.with_config(SeetaConfig { min_face_size: 40, ..*seeta.config() }).unwrap();
        for detector in [&seeta, &native] {
            let start = Instant::now();
            let raw = detector.detect_raw(&image).unwrap();
            eprintln!(
                "group_1927: {} faces with {:?} in {:?}",
                raw.len(),
                detector.config(),
                start.elapsed()
            );
            // The photo has 29 faces.
            assert!(raw.len().abs_diff(29) <= 1, "{} faces", raw.len());
            assert!(raw.windows(2).all(|w| w[0].raw_score >= w[1].raw_score));
            for face in &raw {
                let b = face.bbox;
                assert!(face.raw_score >= detector.config().score_threshold);
                assert!(b.x >= -b.width / 2.0 && b.right() <= 1666.0 + b.width / 2.0, "{b:?}");
                assert!((30.0..100.0).contains(&b.width) && b.width == b.height, "{b:?}");
            }
            // No face found twice.
            for (i, a) in raw.iter().enumerate() {
                assert!(raw[i + 1..].iter().all(|b| a.bbox.iou(&b.bbox) < 0.3));
            }
        }
        let faces = native.detect(&image).unwrap();
        let raw = native.detect_raw(&image).unwrap();
        assert_eq!(faces.len(), raw.len());
        for (face, raw) in faces.iter().zip(&raw) {
            assert_eq!(face.bbox, raw.bbox);
            assert_eq!(face.score, Seeta::probability(raw.raw_score));
            assert!(face.keypoints.is_empty());
        }
        assert_eq!(native.name(), "seeta");
    }

    /// Portraits at the cascade's own scale (`min_face_size` 40: every face here is over 90
    /// pixels, and the default's 2x upscale of the largest photos overflows rustface's 32-bit
    /// integral images in builds with overflow checks).
    #[test]
    fn single_face_photos_give_one_face() {
        let Some(bytes) = model_bytes() else { return };
        let config = SeetaConfig { min_face_size: 40, ..SeetaConfig::default() };
        let seeta = Seeta::from_bytes(&bytes, config).unwrap();
        let names = [
            "astronaut.png",
            "grace_hopper.jpg",
            "faces/obama.jpg",
            "faces/obama2.jpg",
            "faces/obama3.jpg",
            "faces/biden.jpg",
        ];
        let mut wrong = Vec::new();
        for name in names {
            let Some(image) = photo(name) else { return };
            let start = Instant::now();
            let faces = seeta.detect(&image).unwrap();
            eprintln!("{name}: {} face(s) in {:?}", faces.len(), start.elapsed());
            if faces.len() != 1 {
                wrong.push((name, faces.len()));
            }
        }
        assert!(wrong.is_empty(), "not one face: {wrong:?}");
    }

    #[test]
    fn concurrent_callers_share_one_detector() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Seeta>();
        let Some(bytes) = model_bytes() else { return };
        let Some(image) = photo("astronaut.png") else { return };
        let config = SeetaConfig { min_face_size: 40, ..SeetaConfig::default() };
        let seeta = Seeta::from_bytes(&bytes, config).unwrap();
        let alone = seeta.detect(&image).unwrap();
        let together: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                (0..3).map(|_| scope.spawn(|| seeta.detect(&image).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(together.iter().all(|faces| *faces == alone));
        assert_eq!(
            seeta.detect_batch(&[image.clone(), image]).unwrap(),
            vec![alone.clone(), alone]
        );
    }

    #[test]
    fn small_empty_and_gray_images_do_not_panic() {
        let Some(bytes) = model_bytes() else { return };
        let seeta = Seeta::from_bytes(&bytes, SeetaConfig::default()).unwrap();
        for (w, h) in [(0, 0), (1, 1), (19, 300), (20, 20), (41, 41), (300, 2)] {
            let image = Image::filled(w, h, 3, 128).unwrap();
            assert!(seeta.detect(&image).unwrap().is_empty(), "{w}x{h}");
        }
        let Some(image) = photo("astronaut.png") else { return };
        let native =
            seeta.with_config(SeetaConfig { min_face_size: 40, ..*seeta.config() }).unwrap();
        let gray = to_gray(&image).unwrap();
        assert_eq!(gray.channels(), 1);
        assert_eq!(native.detect(&gray).unwrap(), native.detect(&image).unwrap());
    }
}
