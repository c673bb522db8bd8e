//! Deepfake detectors end to end: training one on face crops ([`train`], what `deepfake train`
//! runs) with a readable summary against the baselines, and verdicts on images and videos
//! ([`detect`]: the `deepfake detect` output, the per-frame plot and Grad-CAM explanations).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use candle_core::Device;
use deeprecog_classifiers::supervised::{Loss, TrainConfig};
use deeprecog_classifiers::zoo::{ModelName, ZooConfig};
use deeprecog_classifiers::Freeze;
use deeprecog_detector::dlib::DlibFaceNet;
use deeprecog_detector::facematch::{face_match_scores, FaceMatcher};
use deeprecog_detector::gradcam::{grad_cam, overlay};
use deeprecog_detector::sbi::SbiConfig;
use deeprecog_detector::scan::{open_detector, DetectorKind};
use deeprecog_detector::swapset::{build_swap_set, SwapSetConfig};
use deeprecog_detector::training::{
    evaluate_detector, train_detector, train_detector_with, BinaryMetrics, DetectorTrainConfig,
    FaceSet, SetEvaluation, TrainOutcome, TrainReport,
};
use deeprecog_detector::verdict::{self, DeepfakeModel, Detected, Label};
use deeprecog_metrics::plot;
use deeprecog_metrics::Aggregation;
use deeprecog_nn::optim::OptimizerConfig;

use super::{Error, Result};
use crate::report::markdown_table;

/// The settings of `deepfake train`.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// A `prepare` folder, a manifest CSV, or a folder with `real/` and `fake/`.
    pub data: PathBuf,
    /// The zoo model.
    pub model: ModelName,
    /// ImageNet weights for a backbone.
    pub weights: Option<PathBuf>,
    /// Backbone stages kept fixed.
    pub freeze: Freeze,
    /// Epochs.
    pub epochs: usize,
    /// Input side.
    pub size: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// BCE or the DFDC report's L2.
    pub loss: Loss,
    /// Train on self-blended pseudo-fakes of the real crops instead of the set's fakes.
    pub sbi: bool,
    /// Seed of everything.
    pub seed: u64,
    /// Output folder (the detector).
    pub out: PathBuf,
    /// Frame -> video rule.
    pub aggregation: Aggregation,
    /// The face detector recorded for `detect`.
    pub detector: DetectorKind,
    /// Progress label (`None`: quiet).
    pub progress: Option<String>,
    /// Also the face-match baseline on the test side, with BlazeFace and dlib's network from
    /// this assets folder.
    pub face_match_assets: Option<PathBuf>,
}

impl TrainOptions {
    /// Defaults for `data`, `model` and `out`: 10 epochs at 128 px, batch 32, Adam 1e-3, BCE,
    /// seed 0, mean aggregation, BlazeFace.
    pub fn new(data: PathBuf, model: ModelName, out: PathBuf) -> TrainOptions {
        TrainOptions {
            data,
            model,
            weights: None,
            freeze: Freeze::None,
            epochs: 10,
            size: 128,
            batch_size: 32,
            learning_rate: 1e-3,
            loss: Loss::Bce,
            sbi: false,
            seed: 0,
            out,
            aggregation: Aggregation::Mean,
            detector: DetectorKind::BlazeFace,
            progress: None,
            face_match_assets: None,
        }
    }
}

/// Trains a detector as `options` say; everything lands in `options.out`.
///
/// # Errors
/// Data, model, training and I/O errors.
pub fn train(options: &TrainOptions, device: &Device) -> Result<TrainOutcome> {
    let set = FaceSet::open(&options.data)?;
    let model = ZooConfig {
        weights: options.weights.clone(),
        freeze: options.freeze.clone(),
        ..ZooConfig::new(options.model)
    };
    let train = TrainConfig {
        epochs: options.epochs,
        optimizer: OptimizerConfig::default().with_lr(options.learning_rate),
        loss: options.loss,
        seed: options.seed,
        out_dir: options.out.clone(),
        progress: options.progress.clone(),
        ..Default::default()
    };
    let mut config = DetectorTrainConfig::new(model, options.size, train);
    config.batch_size = options.batch_size;
    config.aggregation = options.aggregation;
    config.face_detector = options.detector;
    config.sbi = options.sbi.then(SbiConfig::default);
    match &options.face_match_assets {
        None => Ok(train_detector(&set, &config, device)?),
        Some(assets) => {
            let net = DlibFaceNet::load(&assets.join(DLIB_FACE_NET), device)?;
            let faces = open_detector(DetectorKind::BlazeFace, assets, device)?;
            let matcher = FaceMatcher::new(&net, faces.as_ref());
            Ok(train_detector_with(&set, &config, Some(&matcher), device)?)
        }
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

fn metrics_row(name: &str, m: &BinaryMetrics) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{:.3}", m.accuracy),
        opt(m.roc_auc),
        opt(m.average_precision),
        opt(m.eer),
        opt(m.log_loss),
        opt(m.ece),
        m.n.to_string(),
    ]
}

/// The report as Markdown tables: the model against the baselines at frame level, and the
/// video rows when there are any.
pub fn report_markdown(report: &TrainReport) -> String {
    let header = ["", "accuracy", "ROC-AUC", "AP", "EER", "log loss", "ECE", "n"];
    let mut rows = vec![
        metrics_row(&format!("{} (test)", report.model), &report.test),
        metrics_row(&format!("{} (valid)", report.model), &report.valid),
        metrics_row("majority class", &report.baselines.majority),
    ];
    if let Some(b) = &report.baselines.laplacian_variance {
        rows.push(metrics_row("Laplacian variance", &b.test));
    }
    if let Some(m) = &report.baselines.face_match {
        rows.push(metrics_row("face-match distance", m));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Frames (face crops), test side; threshold {:.3} and temperature {:.3} fitted on \
         validation{}:\n",
        report.threshold,
        report.temperature,
        match (report.sbi, report.test_on_self_blends) {
            (true, true) =>
                ", training on self-blended real faces only; the test fakes are self-blends too",
            (true, false) => ", training on self-blended real faces only",
            _ => "",
        }
    );
    out.push_str(&markdown_table(&header, &rows));
    let c = &report.calibration;
    let _ = writeln!(
        out,
        "\nTemperature scaling on the test side: ECE {:.3} -> {:.3}, log loss {:.3} -> {:.3}{}.",
        c.ece_before,
        c.ece_after,
        c.log_loss_before,
        c.log_loss_after,
        c.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
    );
    if let Some(video) = &report.video {
        let mut rows: Vec<Vec<String>> = video
            .rows
            .iter()
            .map(|r| metrics_row(&format!("model, {}", r.aggregation), &r.test))
            .collect();
        rows.push(metrics_row("majority class", &video.baselines.majority));
        for (name, b) in [
            ("Laplacian variance", &video.baselines.laplacian_variance),
            ("temporal change", &video.baselines.temporal_change),
        ] {
            if let Some(b) = b {
                rows.push(metrics_row(name, &b.test));
            }
        }
        let _ = writeln!(out, "\nVideos, test side:\n");
        out.push_str(&markdown_table(&header, &rows));
    }
    out
}

/// dlib's face-embedding network inside the assets folder (`scripts/fetch-assets.sh`).
pub const DLIB_FACE_NET: &str = "dlib/dlib_face_recognition_resnet_model_v1.dat";

/// Scores a trained detector on another labelled set (`deepfake evaluate`); with
/// `face_match_assets`, also the face-match baseline (BlazeFace + dlib's ResNet from that
/// assets folder; groups are the identities).
///
/// # Errors
/// Data and model errors; missing face-match weights.
pub fn evaluate(
    model_dir: &Path,
    data: &Path,
    face_match_assets: Option<&Path>,
    device: &Device,
) -> Result<SetEvaluation> {
    let model = DeepfakeModel::load(model_dir, device)?;
    let set = FaceSet::open(data)?;
    let mut evaluation = evaluate_detector(&model, &set)?;
    if let Some(assets) = face_match_assets {
        let net = DlibFaceNet::load(&assets.join(DLIB_FACE_NET), device)?;
        let faces = open_detector(DetectorKind::BlazeFace, assets, device)?;
        let (_, auc) = face_match_scores(&set, &FaceMatcher::new(&net, faces.as_ref()))?;
        evaluation.face_match_auc = auc;
    }
    Ok(evaluation)
}

/// An evaluation as Markdown: frame metrics, video rows, the no-fit baselines' ranking.
pub fn evaluation_markdown(e: &SetEvaluation) -> String {
    let header = ["", "accuracy", "ROC-AUC", "AP", "EER", "log loss", "ECE", "n"];
    let mut rows = vec![metrics_row("frames (crops)", &e.frames)];
    rows.extend(
        e.videos.iter().map(|r| metrics_row(&format!("videos, {}", r.aggregation), &r.test)),
    );
    let mut out = markdown_table(&header, &rows);
    let _ = write!(
        out,
        "\nNo-fit rankings on the same crops: Laplacian variance ROC-AUC {}",
        opt(e.laplacian_variance_auc)
    );
    if let Some(t) = e.temporal_change_auc {
        let _ = write!(out, ", temporal change (videos) ROC-AUC {t:.3}");
    }
    if let Some(f) = e.face_match_auc {
        let _ = write!(out, ", face-match distance ROC-AUC {f:.3}");
    }
    if !e.skipped.is_empty() {
        let _ = write!(out, "; {} crops could not be read", e.skipped.len());
    }
    out.push('.');
    out
}

/// The face photos and talking-head clips (inside the assets folder) that the real-footage
/// face-swap set is made from. The 1927 group photo is left out: its copy has detection boxes
/// drawn on it, which a swap would carry.
pub const SWAP_PHOTOS: [&str; 6] = [
    "faces/obama.jpg",
    "faces/obama2.jpg",
    "faces/obama3.jpg",
    "faces/obama_partial_face.jpg",
    "faces/obama_partial_face2.jpg",
    "faces/biden.jpg",
];
/// See [`SWAP_PHOTOS`].
pub const SWAP_VIDEOS: [&str; 2] = ["videos/franck.mp4", "videos/carphone_pristine.mp4"];

/// Builds the real-footage face-swap evaluation set (`deepfake swaps`) from the assets with
/// BlazeFace; returns a readable summary.
///
/// # Errors
/// Missing BlazeFace weights or ffmpeg, I/O errors, a set without fakes.
pub fn build_swaps(assets: &Path, out: &Path, config: &SwapSetConfig) -> Result<String> {
    let detector = open_detector(DetectorKind::BlazeFace, assets, &Device::Cpu)?;
    let photos: Vec<PathBuf> = SWAP_PHOTOS.iter().map(|p| assets.join(p)).collect();
    let videos: Vec<PathBuf> = SWAP_VIDEOS.iter().map(|p| assets.join(p)).collect();
    let s = build_swap_set(&photos, &videos, detector.as_ref(), out, config)?;
    let mut text = format!(
        "{}: {} real and {} fake videos ({} frames swapped, {} without a face), {} real and {} fake images",
        out.display(),
        s.real_videos,
        s.fake_videos,
        s.frames_swapped,
        s.frames_without_face,
        s.real_images,
        s.fake_images
    );
    for skipped in &s.skipped {
        let _ = write!(text, "\nskipped {}: {}", skipped.input.display(), skipped.reason);
    }
    Ok(text)
}

/// The settings of `deepfake detect`.
#[derive(Debug, Clone)]
pub struct DetectOptions {
    /// A `train --out` folder.
    pub model: PathBuf,
    /// Frames sampled from a video.
    pub frames: usize,
    /// Face detector instead of the model card's.
    pub detector: Option<DetectorKind>,
    /// Where the face detectors' weights are.
    pub assets: PathBuf,
}

/// Runs the detector on one input.
///
/// # Errors
/// Unreadable inputs (named), model and face detector errors.
pub fn detect(
    path: &Path,
    options: &DetectOptions,
    device: &Device,
) -> Result<(Detected, DeepfakeModel)> {
    let model = DeepfakeModel::load(&options.model, device)?;
    let kind = options.detector.unwrap_or(model.card().face_detector);
    let faces = open_detector(kind, &options.assets, device)?;
    let detected = verdict::detect(path, &model, faces.as_ref(), options.frames)?;
    Ok((detected, model))
}

/// `detect`'s output: the JSON object, or a line per frame and the verdict with timings.
///
/// # Errors
/// JSON serialisation errors.
pub fn detect_output(detected: &Detected, json: bool) -> Result<String> {
    let v = &detected.verdict;
    if json {
        return serde_json::to_string(v).map_err(|e| Error::invalid("verdict", e.to_string()));
    }
    let mut out = String::new();
    for f in &v.frames {
        let faces: Vec<String> = f
            .faces
            .iter()
            .map(|face| {
                let [x, y, w, h] = face.bbox;
                format!("[{x:.0},{y:.0} {w:.0}x{h:.0}] p(fake) {:.3}", face.fake_probability)
            })
            .collect();
        let faces = if faces.is_empty() { "no face".to_string() } else { faces.join(", ") };
        let _ = writeln!(out, "frame {:>5} at {:>7.2} s: {faces}", f.index, f.time_s);
    }
    let label = match v.label {
        Label::Real => "REAL",
        Label::Fake => "FAKE",
        Label::NoFace => "NO FACE",
    };
    let p = v.fake_probability.map_or_else(|| "-".into(), |p| format!("{p:.3}"));
    let _ = write!(out, "{}: {label} (p(fake) {p}, {} faces", v.input, v.faces);
    if let Some(t) = v.temporal_score {
        let _ = write!(out, ", temporal change {t:.4}");
    }
    let t = v.timings;
    let _ = write!(
        out,
        "); {:.2} s: decoding {:.2} s ({:.0}%), faces {:.2} s ({:.0}%), classifier {:.2} s ({:.0}%)",
        t.total_s(),
        t.decode_s,
        100.0 * t.decode_s / t.total_s().max(1e-9),
        t.faces_s,
        100.0 * t.faces_s / t.total_s().max(1e-9),
        t.classify_s,
        100.0 * t.classify_s / t.total_s().max(1e-9),
    );
    Ok(out)
}

/// Writes the per-frame probabilities over time with the threshold (`--plot`).
///
/// # Errors
/// No frame with a face; plotting errors.
pub fn write_frame_plot(detected: &Detected, threshold: f64, path: &Path) -> Result<()> {
    let v = &detected.verdict;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::Io { path: parent.to_path_buf(), reason: e.to_string() })?;
    }
    let (times, scores): (Vec<f64>, Vec<f64>) =
        v.frames.iter().filter_map(|f| Some((f.time_s, f.fake_probability()?))).unzip();
    let title = format!(
        "{}: p(fake) {}",
        Path::new(&v.input)
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        v.fake_probability.map_or_else(|| "-".into(), |p| format!("{p:.3}"))
    );
    Ok(plot::frame_scores(path, &times, &scores, threshold, &title)?)
}

/// Writes Grad-CAM heatmaps over the most fake face crop (`--explain DIR`): the crop, the
/// overlay, and the heatmap's numbers as JSON. Returns the overlay's path, `None` without faces.
///
/// # Errors
/// Model, image and I/O errors.
pub fn explain(detected: &Detected, model: &DeepfakeModel, dir: &Path) -> Result<Option<PathBuf>> {
    let Some((frame, face, crop)) = detected.most_fake() else { return Ok(None) };
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Io { path: dir.to_path_buf(), reason: e.to_string() })?;
    let input = model.input(std::slice::from_ref(crop))?;
    let cam = grad_cam(model.model(), &input, 0)?;
    let frame_index = detected.verdict.frames[*frame].index;
    let stem = format!("frame{frame_index:05}_face{face}");
    crop.save(&dir.join(format!("{stem}_crop.png")))?;
    let out = dir.join(format!("{stem}_gradcam.png"));
    overlay(crop, &cam, 0.5)?.save(&out)?;
    Ok(Some(out))
}
