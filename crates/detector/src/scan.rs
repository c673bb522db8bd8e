//! Face detection on a file, image or video, as one serialisable result (what the `deepfake
//! faces --json` command prints), and detectors chosen by name with their weights looked up
//! in the assets folder.
//!
//! ```no_run
//! use deeprecog_detector::scan::{open_detector, scan, DetectorKind};
//!
//! let detector = open_detector(DetectorKind::BlazeFace, "assets".as_ref(), &candle_core::Device::Cpu)?;
//! let result = scan("assets/videos/carphone_pristine.mp4".as_ref(), detector.as_ref(), 8)?;
//! println!("{}", serde_json::to_string(&result).unwrap());
//! # Ok::<(), deeprecog_detector::Error>(())
//! ```

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use candle_core::Device;
use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::Image;

use crate::blazeface::{BlazeFace, BlazeFaceConfig, Tiling};
use crate::face::{Detection, FaceDetector, WholeImage};
use crate::seeta::{Seeta, SeetaConfig};
use crate::video::{self, Frame};
use crate::{Error, Result};

/// The detectors that can be named on a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DetectorKind {
    /// BlazeFace front model on the whole image: fast, for faces that fill much of the view.
    BlazeFace,
    /// BlazeFace back model with tiling: slower, for group photos and small faces.
    BlazeFaceBack,
    /// SeetaFace's cascade through `rustface`, pure CPU.
    Seeta,
    /// The whole image is the face (inputs that are face crops already).
    WholeImage,
}

impl DetectorKind {
    /// Every kind, in command-line spelling order.
    pub const ALL: [DetectorKind; 4] = [
        DetectorKind::BlazeFace,
        DetectorKind::BlazeFaceBack,
        DetectorKind::Seeta,
        DetectorKind::WholeImage,
    ];

    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::BlazeFace => "blazeface",
            DetectorKind::BlazeFaceBack => "blazeface-back",
            DetectorKind::Seeta => "seeta",
            DetectorKind::WholeImage => "whole-image",
        }
    }

    /// The weights file inside the assets folder (none for the whole-image detector).
    pub fn weights(self) -> Option<&'static str> {
        match self {
            DetectorKind::BlazeFace => Some("blazeface/face_detection_front_128x128.onnx"),
            DetectorKind::BlazeFaceBack => Some("blazeface/face_detection_back_256x256.onnx"),
            DetectorKind::Seeta => Some("seeta/seeta_fd_frontal_v1.0.bin"),
            DetectorKind::WholeImage => None,
        }
    }
}

impl fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DetectorKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        DetectorKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            Error::InvalidConfig {
                what: "detector",
                reason: format!(
                    "unknown detector {s:?}; known: {}",
                    DetectorKind::ALL.map(|k| k.as_str()).join(", ")
                ),
            }
        })
    }
}

/// Opens a detector with its default settings, its weights taken from `assets` (the folder
/// `scripts/fetch-assets.sh` fills).
pub fn open_detector(
    kind: DetectorKind,
    assets: &Path,
    device: &Device,
) -> Result<Box<dyn FaceDetector>> {
    let weights = kind.weights().map(|w| assets.join(w));
    if let Some(w) = &weights {
        if !w.is_file() {
            return Err(Error::Weights {
                path: w.clone(),
                reason: "missing; run scripts/fetch-assets.sh".into(),
            });
        }
    }
    Ok(match (kind, weights) {
        (DetectorKind::BlazeFace, Some(w)) => {
            Box::new(BlazeFace::load(w, BlazeFaceConfig::front(), device)?)
        }
        (DetectorKind::BlazeFaceBack, Some(w)) => Box::new(BlazeFace::load(
            w,
            BlazeFaceConfig::back().with_tiling(Tiling::default()),
            device,
        )?),
        (DetectorKind::Seeta, Some(w)) => Box::new(Seeta::from_file(&w, SeetaConfig::default())?),
        _ => Box::new(WholeImage),
    })
}

/// Whether a scanned input was a still image or a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// A still image.
    Image,
    /// A video file.
    Video,
}

/// One face as the JSON output spells it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaceRecord {
    /// Left, top, width, height in pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The detector's confidence in [0, 1].
    pub score: f32,
    /// Keypoints in pixels (empty for detectors without them).
    pub keypoints: Vec<[f32; 2]>,
}

impl From<&Detection> for FaceRecord {
    fn from(d: &Detection) -> Self {
        FaceRecord {
            bbox: [d.bbox.x, d.bbox.y, d.bbox.width, d.bbox.height],
            score: d.score,
            keypoints: d.keypoints.clone(),
        }
    }
}

impl From<&FaceRecord> for Detection {
    fn from(f: &FaceRecord) -> Self {
        let [x, y, w, h] = f.bbox;
        Detection { bbox: FaceBox::new(x, y, w, h), score: f.score, keypoints: f.keypoints.clone() }
    }
}

/// The faces of one frame (an image is frame 0 at time 0).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FrameFaces {
    /// Frame index in the video.
    pub index: u64,
    /// Presentation time in seconds.
    pub time_s: f64,
    /// The faces, best first.
    pub faces: Vec<FaceRecord>,
}

/// Everything [`scan`] found in one file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScanResult {
    /// The file as given.
    pub input: String,
    /// Image or video.
    pub kind: InputKind,
    /// One entry per frame looked at.
    pub frames: Vec<FrameFaces>,
}

impl ScanResult {
    /// Frames with at least one face.
    pub fn frames_with_faces(&self) -> usize {
        self.frames.iter().filter(|f| !f.faces.is_empty()).count()
    }
}

/// The faces of decoded video frames, detected in one batch.
pub fn detect_frames(detector: &dyn FaceDetector, frames: Vec<Frame>) -> Result<Vec<FrameFaces>> {
    let (stamps, images): (Vec<(u64, f64)>, Vec<Image>) =
        frames.into_iter().map(|f| ((f.index, f.time_s), f.image)).unzip();
    let found = detector.detect_batch(&images)?;
    Ok(stamps
        .into_iter()
        .zip(found)
        .map(|((index, time_s), faces)| FrameFaces {
            index,
            time_s,
            faces: faces.iter().map(FaceRecord::from).collect(),
        })
        .collect())
}

/// Detects faces in an image, or in `frames` frames spread evenly over a video (chosen by the
/// file's extension). Unreadable, corrupt or truncated files are errors naming the file; an
/// input without faces is a result with empty face lists.
pub fn scan(path: &Path, detector: &dyn FaceDetector, frames: usize) -> Result<ScanResult> {
    let input = path.display().to_string();
    if video::is_video_file(path) {
        let (_, sampled) = video::sample_frames(path, frames)?;
        let frames = detect_frames(detector, sampled)?;
        return Ok(ScanResult { input, kind: InputKind::Video, frames });
    }
    if !path.exists() {
        return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
    }
    let image = Image::open(path)?.to_rgb();
    let faces = detector.detect(&image)?;
    Ok(ScanResult {
        input,
        kind: InputKind::Image,
        frames: vec![FrameFaces {
            index: 0,
            time_s: 0.0,
            faces: faces.iter().map(FaceRecord::from).collect(),
        }],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kinds_parse_and_unknown_names_list_the_known_ones() {
        for k in DetectorKind::ALL {
            assert_eq!(k.as_str().parse::<DetectorKind>().unwrap(), k);
        }
        assert_eq!(" Seeta ".parse::<DetectorKind>().unwrap(), DetectorKind::Seeta);
        let err = "mtcnn".parse::<DetectorKind>().unwrap_err().to_string();
        assert!(err.contains("mtcnn") && err.contains("blazeface-back"), "{err}");
    }

    #[test]
    fn json_has_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("face.png");
        image::RgbImage::from_pixel(20, 10, image::Rgb([9, 9, 9])).save(&path).unwrap();
        let result = scan(&path, &WholeImage, 4).unwrap();
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["kind"], "image");
        assert_eq!(json["frames"][0]["index"], 0);
        assert_eq!(json["frames"][0]["faces"][0]["box"], serde_json::json!([0.0, 0.0, 20.0, 10.0]));
        assert_eq!(json["frames"][0]["faces"][0]["keypoints"], serde_json::json!([]));
        let missing = scan(&dir.path().join("nope.jpg"), &WholeImage, 4).unwrap_err().to_string();
        assert!(missing.contains("nope.jpg"), "{missing}");
        std::fs::write(dir.path().join("bad.png"), b"\x89PNG\r\n\x1a\nxx").unwrap();
        let bad = scan(&dir.path().join("bad.png"), &WholeImage, 4).unwrap_err().to_string();
        assert!(bad.contains("bad.png"), "{bad}");
    }
}
