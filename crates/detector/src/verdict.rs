//! Verdicts on new inputs: a trained detector folder ([`crate::training`]) loaded as a
//! [`DeepfakeModel`], and [`detect`] on an image or a video: faces found, cut as in training,
//! classified, calibrated (`sigmoid(logit / T)`), and combined into one [`Verdict`] (an image
//! is fake when any of its faces is; a video's frame probabilities go through the model's
//! [`Aggregation`](crate::Aggregation)), with a temporal score and the time spent in each part.
//!
//! ```no_run
//! use deeprecog_detector::scan::open_detector;
//! use deeprecog_detector::verdict::{detect, DeepfakeModel};
//!
//! let device = candle_core::Device::Cpu;
//! let model = DeepfakeModel::load("runs/deepfake".as_ref(), &device)?;
//! let faces = open_detector(model.card().face_detector, "assets".as_ref(), &device)?;
//! let found = detect("clip.mp4".as_ref(), &model, faces.as_ref(), 32)?;
//! println!("{}", serde_json::to_string(&found.verdict).unwrap());
//! # Ok::<(), deeprecog_detector::Error>(())
//! ```

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::ModuleT;
use deeprecog_classifiers::zoo::{self, ZooModel};
use deeprecog_dataset::transforms::{to_chw, Normalization, Resize};
use deeprecog_dataset::Image;
use deeprecog_metrics::calibration::sigmoid;
use serde::{Deserialize, Serialize};

use crate::baseline::temporal_change;
use crate::crop::{crop_faces, FaceSelection};
use crate::face::FaceDetector;
use crate::scan::InputKind;
use crate::training::{ModelCard, MODEL_CARD};
use crate::video::{self, Frame};
use crate::{Error, Result};

/// Crops classified per forward pass.
const BATCH: usize = 32;

/// A trained detector: the classifier with its weights, its input normalisation and the model
/// card (size, threshold, temperature, aggregation, face detector, crop settings).
pub struct DeepfakeModel {
    model: ZooModel,
    normalization: Normalization,
    card: ModelCard,
    device: Device,
}

impl std::fmt::Debug for DeepfakeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepfakeModel").field("card", &self.card).finish_non_exhaustive()
    }
}

impl DeepfakeModel {
    /// Loads a `train --out` folder: its [`MODEL_CARD`] and the best checkpoint's weights.
    ///
    /// # Errors
    /// A missing or malformed card (naming the file), checkpoint errors.
    pub fn load(dir: &Path, device: &Device) -> Result<DeepfakeModel> {
        let card_path = dir.join(MODEL_CARD);
        let text = std::fs::read_to_string(&card_path).map_err(|e| Error::io(&card_path, e))?;
        let card: ModelCard = serde_json::from_str(&text).map_err(|e| {
            Error::parse(&card_path, e.line(), format!("not a detector model card: {e}"))
        })?;
        if !(card.temperature.is_finite() && card.temperature > 0.0) || card.size == 0 {
            return Err(Error::parse(
                &card_path,
                0,
                format!("temperature {} and size {} must be positive", card.temperature, card.size),
            ));
        }
        let loaded = zoo::load(dir, device)?;
        Ok(DeepfakeModel {
            model: zoo::inference_model(&loaded.config, &loaded.varmap, device)?,
            normalization: loaded.normalization,
            card,
            device: device.clone(),
        })
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The classifier.
    pub fn model(&self) -> &ZooModel {
        &self.model
    }

    /// The device it runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Crops resized to the input size, stacked and normalised as in training: `(N, 3, S, S)`.
    ///
    /// # Errors
    /// Resize and tensor errors.
    pub fn input(&self, crops: &[Image]) -> Result<Tensor> {
        let side = u32::try_from(self.card.size)
            .map_err(|_| Error::InvalidConfig { what: "size", reason: "too large".into() })?;
        let resize = Resize::new(side, side);
        let mut bytes = Vec::with_capacity(crops.len() * 3 * self.card.size * self.card.size);
        for crop in crops {
            bytes.extend(to_chw(&resize.resize(&crop.to_rgb())?));
        }
        let batch = Tensor::from_vec(
            bytes,
            (crops.len(), 3, self.card.size, self.card.size),
            &Device::Cpu,
        )?
        .to_device(&self.device)?;
        Ok(self.normalization.apply(&batch)?)
    }

    /// Raw logits (fake > 0 before calibration) of `crops`.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn logits(&self, crops: &[Image]) -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(BATCH) {
            let x = self.input(chunk)?;
            let logits = deeprecog_nn::device::on_cpu_workers(|| self.model.forward_t(&x, false))?;
            out.extend(logits.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?);
        }
        Ok(out)
    }

    /// Calibrated fake probabilities of `crops`.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn probabilities(&self, crops: &[Image]) -> Result<Vec<f64>> {
        Ok(self.logits(crops)?.into_iter().map(|z| self.calibrate(z)).collect())
    }

    /// `sigmoid(logit / T)`.
    pub fn calibrate(&self, logit: f64) -> f64 {
        sigmoid(logit / self.card.temperature)
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// Probability below the threshold.
    Real,
    /// Probability at or above the threshold.
    Fake,
    /// No face anywhere: nothing to judge.
    NoFace,
}

/// One face's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceVerdict {
    /// Left, top, width, height in the input's pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
    /// The face detector's confidence.
    pub score: f32,
    /// Calibrated fake probability of the face crop.
    pub fake_probability: f64,
}

/// One frame's faces (an image is frame 0 at 0 s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameVerdict {
    /// Frame index.
    pub index: u64,
    /// Time in seconds.
    pub time_s: f64,
    /// Faces, best detection first.
    pub faces: Vec<FaceVerdict>,
}

impl FrameVerdict {
    /// The frame's probability: its most fake face (`None` without faces).
    pub fn fake_probability(&self) -> Option<f64> {
        self.faces.iter().map(|f| f.fake_probability).reduce(f64::max)
    }
}

/// Seconds spent in each part of [`detect`].
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Reading and decoding the image or the sampled frames.
    pub decode_s: f64,
    /// Face detection.
    pub faces_s: f64,
    /// Cutting, resizing and classifying the crops.
    pub classify_s: f64,
}

impl Timings {
    /// All parts together.
    pub fn total_s(&self) -> f64 {
        self.decode_s + self.faces_s + self.classify_s
    }
}

/// The verdict on one input. Serialises to the `detect --json` object: `input`, `kind`,
/// `label`, `fake_probability` and `frames` (the counts, temporal score and timings are for
/// callers and the human-readable output).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The input as given.
    pub input: String,
    /// Image or video.
    pub kind: InputKind,
    /// Real, fake, or no face.
    pub label: Label,
    /// Calibrated probability that the input is fake (`None` without faces).
    pub fake_probability: Option<f64>,
    /// Every frame looked at, with its faces.
    pub frames: Vec<FrameVerdict>,
    /// Faces classified.
    #[serde(skip)]
    pub faces: usize,
    /// Mean change between consecutive crops of the best face (videos with two or more
    /// frames with a face): manipulations re-done every frame flicker.
    #[serde(skip)]
    pub temporal_score: Option<f64>,
    /// Time per part.
    #[serde(skip)]
    pub timings: Timings,
}

/// A verdict with the crops behind it (for explanations).
#[derive(Debug, Clone)]
pub struct Detected {
    /// The verdict.
    pub verdict: Verdict,
    /// `(frame position in verdict.frames, face position, crop)` for every face classified.
    pub crops: Vec<(usize, usize, Image)>,
}

impl Detected {
    /// The crop with the highest fake probability.
    pub fn most_fake(&self) -> Option<&(usize, usize, Image)> {
        self.crops.iter().max_by(|a, b| {
            let p =
                |c: &(usize, usize, Image)| self.verdict.frames[c.0].faces[c.1].fake_probability;
            p(a).total_cmp(&p(b))
        })
    }
}

/// Runs the detector on an image, or on `frames` frames spread over a video (by extension).
///
/// # Errors
/// Unreadable, corrupt or truncated inputs (the error names the file), face detector and
/// model errors. An input without faces is a [`Label::NoFace`] verdict, not an error.
pub fn detect(
    path: &Path,
    model: &DeepfakeModel,
    faces: &dyn FaceDetector,
    frames: usize,
) -> Result<Detected> {
    let mut timings = Timings::default();
    let start = Instant::now();
    let (kind, decoded) = if video::is_video_file(path) {
        let (_, sampled) = video::sample_frames(path, frames)?;
        (InputKind::Video, sampled)
    } else {
        if !path.exists() {
            return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let image = Image::open(path)?.to_rgb();
        (InputKind::Image, vec![Frame { index: 0, time_s: 0.0, image }])
    };
    timings.decode_s = start.elapsed().as_secs_f64();
    let (mut verdict, crops) = judge_frames(decoded, model, faces, &mut timings)?;
    verdict.input = path.display().to_string();
    verdict.kind = kind;
    verdict.timings = timings;
    Ok(Detected { verdict, crops })
}

/// The verdict on decoded frames (a single frame for an image).
///
/// # Errors
/// Face detector and model errors.
pub fn detect_frames(
    decoded: Vec<Frame>,
    model: &DeepfakeModel,
    faces: &dyn FaceDetector,
    kind: InputKind,
) -> Result<Detected> {
    let mut timings = Timings::default();
    let (mut verdict, crops) = judge_frames(decoded, model, faces, &mut timings)?;
    verdict.kind = kind;
    verdict.timings = timings;
    Ok(Detected { verdict, crops })
}

type Judged = (Verdict, Vec<(usize, usize, Image)>);

fn judge_frames(
    decoded: Vec<Frame>,
    model: &DeepfakeModel,
    faces: &dyn FaceDetector,
    timings: &mut Timings,
) -> Result<Judged> {
    let start = Instant::now();
    let (stamps, images): (Vec<(u64, f64)>, Vec<Image>) =
        decoded.into_iter().map(|f| ((f.index, f.time_s), f.image)).unzip();
    let detections = faces.detect_batch(&images)?;
    timings.faces_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut crops: Vec<(usize, usize, Image)> = Vec::new();
    let mut frames_out: Vec<FrameVerdict> = Vec::with_capacity(images.len());
    for (k, ((image, &(index, time_s)), found)) in
        images.iter().zip(&stamps).zip(&detections).enumerate()
    {
        let cut = crop_faces(image, found, FaceSelection::All, &model.card.crop)?;
        let mut faces_out = Vec::with_capacity(cut.len());
        for (j, c) in cut.into_iter().enumerate() {
            let b = c.detection.bbox;
            faces_out.push(FaceVerdict {
                bbox: [b.x, b.y, b.width, b.height],
                score: c.detection.score,
                fake_probability: f64::NAN,
            });
            crops.push((k, j, c.image));
        }
        frames_out.push(FrameVerdict { index, time_s, faces: faces_out });
    }
    let crop_images: Vec<Image> = crops.iter().map(|(_, _, c)| c.clone()).collect();
    let probs = model.probabilities(&crop_images)?;
    for ((k, j, _), p) in crops.iter().zip(&probs) {
        frames_out[*k].faces[*j].fake_probability = *p;
    }
    // The best detection of each frame, in frame order, for the flicker score.
    let side = u32::try_from(model.card.size).unwrap_or(u32::MAX);
    let resize = Resize::new(side, side);
    let best: Vec<Image> = crops
        .iter()
        .filter(|(_, j, _)| *j == 0)
        .map(|(_, _, c)| resize.resize(&c.to_rgb()))
        .collect::<std::result::Result<_, _>>()?;
    timings.classify_s = start.elapsed().as_secs_f64();

    let frame_probs: Vec<f64> =
        frames_out.iter().filter_map(FrameVerdict::fake_probability).collect();
    let fake_probability = if images.len() == 1 {
        frame_probs.first().copied()
    } else {
        model.card.aggregation.aggregate(&frame_probs)
    };
    let label = match fake_probability {
        None => Label::NoFace,
        Some(p) if p >= model.card.threshold => Label::Fake,
        Some(_) => Label::Real,
    };
    let verdict = Verdict {
        input: String::new(),
        kind: InputKind::Image,
        label,
        fake_probability,
        frames: frames_out,
        faces: crops.len(),
        temporal_score: temporal_change(&best),
        timings: Timings::default(),
    };
    Ok((verdict, crops))
}
