//! Training a deepfake classifier on face crops through the shared engine, and the report
//! that judges it: any zoo model with a binary head, a group-disjoint split (a video's crops,
//! and a fake's original, never straddle two sides), class balancing, the augmentations that
//! matter for deepfakes, optional self-blended training ([`crate::sbi`]), temperature scaling
//! and a decision threshold fitted on the validation side, test metrics at frame and video
//! level, and the no-learning baselines next to them.
//!
//! The output folder is a *detector*: the engine's checkpoints (`best/`, `last/`),
//! `history.json`, `curves.png`, plus [`MODEL_CARD`] (`detector.json`: model, input size,
//! threshold, temperature, aggregation, face detector and crop settings), `report.json`
//! ([`TrainReport`]), `roc.png` and `reliability.png`. [`crate::verdict::DeepfakeModel::load`]
//! reads it back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use candle_nn::VarMap;
use deeprecog_classifiers::supervised::{self, evaluate, Evaluation, TrainConfig};
use deeprecog_classifiers::zoo::{self, ZooConfig};
use deeprecog_classifiers::Task;
use deeprecog_dataset::balance::{self, Balance};
use deeprecog_dataset::folder::ImageFolder;
use deeprecog_dataset::loader::{Loader, SkippedSample};
use deeprecog_dataset::manifest::Manifest;
use deeprecog_dataset::split::{self, Ratios, Splits};
use deeprecog_dataset::transforms::{
    Compose, GaussianBlur, GaussianNoise, HorizontalFlip, JpegRecompress, RandomApply, Resize,
};
use deeprecog_dataset::{Dataset, DatasetExt, Image, Sample};
use deeprecog_metrics::binary::{self, RocCurve};
use deeprecog_metrics::calibration::{self, TemperatureScaling};
use deeprecog_metrics::video::aggregate_by_video;
use deeprecog_metrics::{plot, Aggregation};
use deeprecog_train::write_json;
use serde::{Deserialize, Serialize};

use crate::baseline::{laplacian_variance, temporal_change};
use crate::crop::CropConfig;
use crate::prepare::read_manifest;
use crate::sbi::{SbiConfig, SelfBlended};
use crate::scan::DetectorKind;
use crate::{Error, Result};

/// The model card's file name inside a detector folder.
pub const MODEL_CARD: &str = "detector.json";

/// Bins of the reliability diagrams and of the ECE.
pub const ECE_BINS: usize = 10;

/// A labelled set of face crops: a `prepare` folder (its `manifest.csv`, with the source video
/// and frame of every crop), any manifest CSV (`path,label[,group]`), or an image folder with
/// `real/` and `fake/` sub-folders.
pub struct FaceSet {
    dataset: Arc<dyn Dataset<Item = Sample>>,
    labels: Vec<u32>,
    groups: Vec<Option<String>>,
    videos: Vec<Option<(String, u64)>>,
    origin: PathBuf,
}

impl std::fmt::Debug for FaceSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceSet")
            .field("origin", &self.origin)
            .field("len", &self.labels.len())
            .finish_non_exhaustive()
    }
}

impl FaceSet {
    /// Opens `path`: a CSV file, a folder with `manifest.csv`, or a folder with `real/` and
    /// `fake/`. Labels other than real (0) and fake (1) are errors naming the file.
    ///
    /// # Errors
    /// Missing or malformed files (the error names the file and line).
    pub fn open(path: &Path) -> Result<FaceSet> {
        let manifest = if path.is_dir() { path.join("manifest.csv") } else { path.to_path_buf() };
        let set = if manifest.is_file() {
            Self::from_manifest(&manifest)?
        } else if path.join("real").is_dir() && path.join("fake").is_dir() {
            let folder = ImageFolder::with_classes(path, &["real", "fake"])?;
            let labels = folder.labels();
            let n = labels.len();
            FaceSet {
                dataset: Arc::new(folder),
                labels,
                groups: vec![None; n],
                videos: vec![None; n],
                origin: path.to_path_buf(),
            }
        } else {
            return Err(Error::InvalidConfig {
                what: "data",
                reason: format!(
                    "{}: neither a manifest CSV, a folder with manifest.csv, nor a folder with \
                     real/ and fake/",
                    path.display()
                ),
            });
        };
        if let Some(i) = set.labels.iter().position(|&l| l > 1) {
            return Err(Error::parse(
                &set.origin,
                0,
                format!(
                    "sample {i} has class {}; a deepfake set has 0 (real) and 1 (fake)",
                    set.labels[i]
                ),
            ));
        }
        Ok(set)
    }

    fn from_manifest(path: &Path) -> Result<FaceSet> {
        let manifest = Manifest::open(path)?;
        let labels = manifest.labels();
        let groups = manifest.groups();
        // A `prepare` manifest also says which video and frame each crop came from.
        let header = std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, e))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let videos = if header.split(',').any(|c| c.trim() == "source") {
            read_manifest(path)?
                .into_iter()
                .map(|row| is_video_source(&row.source).then_some((row.source, row.frame_index)))
                .collect()
        } else {
            vec![None; labels.len()]
        };
        Ok(FaceSet {
            dataset: Arc::new(manifest),
            labels,
            groups,
            videos,
            origin: path.to_path_buf(),
        })
    }

    /// A set over samples already in memory or any other dataset, with their labels, groups
    /// and (for video frames) `(video, frame index)`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] when the lengths differ.
    pub fn from_parts(
        dataset: Arc<dyn Dataset<Item = Sample>>,
        labels: Vec<u32>,
        groups: Vec<Option<String>>,
        videos: Vec<Option<(String, u64)>>,
    ) -> Result<FaceSet> {
        let n = dataset.len();
        if labels.len() != n || groups.len() != n || videos.len() != n {
            return Err(Error::InvalidConfig {
                what: "face set",
                reason: format!(
                    "{n} samples but {} labels, {} groups, {} video entries",
                    labels.len(),
                    groups.len(),
                    videos.len()
                ),
            });
        }
        Ok(FaceSet { dataset, labels, groups, videos, origin: PathBuf::from("<memory>") })
    }

    /// Number of crops.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no crops.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// 0 real / 1 fake per crop.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Group (identity, or original video) per crop.
    pub fn groups(&self) -> &[Option<String>] {
        &self.groups
    }

    /// `(video, frame index)` per crop, for crops cut from videos.
    pub fn videos(&self) -> &[Option<(String, u64)>] {
        &self.videos
    }

    /// The crops as a dataset.
    pub fn dataset(&self) -> Arc<dyn Dataset<Item = Sample>> {
        Arc::clone(&self.dataset)
    }

    /// Where it was read from.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// The split used for training: group-disjoint (crops without a group are their own).
    ///
    /// # Errors
    /// Invalid ratios.
    pub fn split(&self, ratios: Ratios, seed: u64) -> Result<Splits> {
        // Video crops without a group still must not straddle sides: their video is the group.
        let groups: Vec<Option<String>> = self
            .groups
            .iter()
            .zip(&self.videos)
            .map(|(g, v)| g.clone().or_else(|| v.as_ref().map(|(video, _)| video.clone())))
            .collect();
        Ok(split::group_disjoint(&groups, ratios, seed)?)
    }
}

fn is_video_source(source: &str) -> bool {
    crate::video::is_video_file(Path::new(source))
}

/// Random degradations of training crops, each applied with its own probability (after the
/// resize to the model's input): the ones that matter for deepfakes, since real footage is
/// re-encoded, blurred and noisy in ways the fakes of a training set may not be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augmentations {
    /// Probability of a horizontal flip.
    pub flip: f64,
    /// Probability of a JPEG re-compression, and its quality range.
    pub jpeg: (f64, u8, u8),
    /// Probability of a Gaussian blur, and its sigma range (kernel 5).
    pub blur: (f64, f64, f64),
    /// Probability of additive Gaussian noise, and its standard deviation in pixel levels.
    pub noise: (f64, f32),
}

impl Default for Augmentations {
    /// Flip 0.5; JPEG q60-95 with p 0.3; blur sigma 0.2-1.2 with p 0.2; noise std 4 with p 0.2.
    fn default() -> Self {
        Augmentations { flip: 0.5, jpeg: (0.3, 60, 95), blur: (0.2, 0.2, 1.2), noise: (0.2, 4.0) }
    }
}

impl Augmentations {
    fn push_into(&self, mut pipeline: Compose) -> Compose {
        if self.flip > 0.0 {
            pipeline = pipeline.then(HorizontalFlip::new(self.flip));
        }
        let (p, lo, hi) = self.jpeg;
        if p > 0.0 {
            pipeline = pipeline.then(RandomApply::new(p, JpegRecompress::new(lo, hi)));
        }
        let (p, lo, hi) = self.blur;
        if p > 0.0 {
            pipeline = pipeline.then(RandomApply::new(p, GaussianBlur::new(5, (lo, hi))));
        }
        let (p, std) = self.noise;
        if p > 0.0 {
            pipeline = pipeline.then(RandomApply::new(p, GaussianNoise::new(std)));
        }
        pipeline
    }
}

/// Everything [`train_detector`] needs besides the data.
#[derive(Debug, Clone)]
pub struct DetectorTrainConfig {
    /// The classifier (its `task`, `input` and `seed` are set from `size` and the training
    /// seed).
    pub model: ZooConfig,
    /// Crops are resized to `size x size`.
    pub size: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// Epochs, optimizer, loss (BCE or the DFDC report's L2), seed, output folder, progress.
    pub train: TrainConfig,
    /// Group-disjoint split fractions.
    pub ratios: Ratios,
    /// How the training side's classes are evened out.
    pub balance: Balance,
    /// Training augmentations (`None`: resize only).
    pub augment: Option<Augmentations>,
    /// Train on real crops and their self-blended pseudo-fakes only (the set's fakes are seen
    /// by the test side alone); validation likewise, so the threshold and temperature never
    /// see a real fake either.
    pub sbi: Option<SbiConfig>,
    /// How frame probabilities become a video's, for the video rows and for `detect`.
    pub aggregation: Aggregation,
    /// The face detector `detect` uses on new inputs.
    pub face_detector: DetectorKind,
    /// How `detect` cuts faces (should match how the training crops were cut).
    pub crop: CropConfig,
}

impl DetectorTrainConfig {
    /// The zoo model `name` at `size` with the defaults: batch 32, 70/15/15, class weights,
    /// default augmentations, mean aggregation, BlazeFace, the default crop.
    pub fn new(model: ZooConfig, size: usize, train: TrainConfig) -> DetectorTrainConfig {
        DetectorTrainConfig {
            model,
            size,
            batch_size: 32,
            train,
            ratios: Ratios { train: 0.7, valid: 0.15, test: 0.15 },
            balance: Balance::ClassWeights,
            augment: Some(Augmentations::default()),
            sbi: None,
            aggregation: Aggregation::Mean,
            face_detector: DetectorKind::BlazeFace,
            crop: CropConfig::default(),
        }
    }
}

/// What a detector folder's [`MODEL_CARD`] holds: enough to rebuild the model and to turn its
/// logits into calibrated verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// The classifier's configuration (the checkpoint's `run.json` holds it too).
    pub model: ZooConfig,
    /// Input side in pixels.
    pub size: usize,
    /// Fake when the calibrated probability is at least this (Youden's J on validation).
    pub threshold: f64,
    /// `p = sigmoid(logit / temperature)`.
    pub temperature: f64,
    /// Frame probabilities -> video probability.
    pub aggregation: Aggregation,
    /// The face detector for new inputs.
    pub face_detector: DetectorKind,
    /// How faces are cut for the classifier.
    pub crop: CropConfig,
    /// Whether it was trained on self-blended pseudo-fakes.
    pub sbi: bool,
    /// The training data it saw.
    pub trained_on: String,
}

/// Binary metrics of one side; `None` where a metric is undefined (one class only, or a score
/// that is not a probability).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// Accuracy at the chosen threshold.
    pub accuracy: f64,
    /// Area under the ROC curve.
    pub roc_auc: Option<f64>,
    /// Average precision (fake is the positive class).
    pub average_precision: Option<f64>,
    /// Mean binary cross-entropy of the probabilities.
    pub log_loss: Option<f64>,
    /// Equal error rate.
    pub eer: Option<f64>,
    /// Expected calibration error ([`ECE_BINS`] bins).
    pub ece: Option<f64>,
    /// Samples.
    pub n: usize,
    /// Fakes among them.
    pub fakes: usize,
}

impl BinaryMetrics {
    /// Metrics of probabilities `probs` at `threshold`.
    ///
    /// # Errors
    /// Empty or mismatched inputs.
    pub fn of_probabilities(labels: &[bool], probs: &[f64], threshold: f64) -> Result<Self> {
        let mut m = Self::of_scores(labels, probs, threshold)?;
        m.log_loss = Some(binary::log_loss(labels, probs)?);
        m.ece = Some(calibration::expected_calibration_error(labels, probs, ECE_BINS)?);
        Ok(m)
    }

    /// Ranking metrics of any score (higher = more fake) and the accuracy of `score >=
    /// threshold`; no log loss or ECE.
    ///
    /// # Errors
    /// Empty or mismatched inputs.
    pub fn of_scores(labels: &[bool], scores: &[f64], threshold: f64) -> Result<Self> {
        Ok(BinaryMetrics {
            accuracy: binary::accuracy(labels, scores, threshold)?,
            roc_auc: binary::roc_auc(labels, scores).ok(),
            average_precision: binary::average_precision(labels, scores).ok(),
            log_loss: None,
            eer: binary::eer(labels, scores).ok().map(|e| e.rate),
            ece: None,
            n: labels.len(),
            fakes: labels.iter().filter(|&&y| y).count(),
        })
    }
}

/// A no-learning score evaluated like a model: its direction and threshold chosen on the
/// validation side, its metrics on the test side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    /// `1` when a higher raw value means fake, `-1` when a lower one does (chosen on
    /// validation).
    pub direction: f64,
    /// Threshold on `direction * raw` (Youden's J on validation).
    pub threshold: f64,
    /// Test metrics.
    pub test: BinaryMetrics,
}

/// The baselines of one level (frames or videos).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baselines {
    /// Always the training side's majority class (probability: its training prevalence).
    pub majority: BinaryMetrics,
    /// The variance of the Laplacian of the crop (video level: its mean over frames).
    pub laplacian_variance: Option<BaselineResult>,
    /// Video level only: the mean frame-to-frame change of the face crop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporal_change: Option<BaselineResult>,
    /// Frame level, when asked for: the face-match distance ([`crate::facematch`]) of the
    /// crops whose group has other real crops, fake above dlib's 0.6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_match: Option<BinaryMetrics>,
}

/// Video-level results of one aggregation rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoRow {
    /// The rule (`mean`, `median`, `max`, `topk:3`, `confident`).
    pub aggregation: String,
    /// Test metrics of the aggregated calibrated probabilities at the model's threshold.
    pub test: BinaryMetrics,
}

/// Video-level results, when the test crops come from videos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoReport {
    /// One row per aggregation rule; the model card's rule first.
    pub rows: Vec<VideoRow>,
    /// The baselines at video level.
    pub baselines: Baselines,
}

/// What temperature scaling did on the test side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// Test ECE of `sigmoid(logit)`.
    pub ece_before: f64,
    /// Test ECE of `sigmoid(logit / T)`.
    pub ece_after: f64,
    /// Test log loss before.
    pub log_loss_before: f64,
    /// Test log loss after.
    pub log_loss_after: f64,
    /// Why `T = 1` was kept, when the fit was not possible (validation perfectly separated,
    /// say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `report.json` of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Frame (crop) level test metrics of the calibrated probabilities at `threshold`.
    pub test: BinaryMetrics,
    /// The same on the validation side (where threshold and temperature were fitted).
    pub valid: BinaryMetrics,
    /// The decision threshold on calibrated probabilities.
    pub threshold: f64,
    /// The fitted temperature.
    pub temperature: f64,
    /// Frame-level baselines.
    pub baselines: Baselines,
    /// Temperature scaling's effect on the test side.
    pub calibration: CalibrationReport,
    /// Video-level rows when the test crops come from videos.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoReport>,
    /// The model name.
    pub model: String,
    /// Whether training saw self-blended pseudo-fakes instead of the set's fakes.
    pub sbi: bool,
    /// Whether the test side's fakes are self-blends too (the set had no fakes there).
    pub test_on_self_blends: bool,
    /// Crops per side `[train, valid, test]` (before balancing or self-blending).
    pub split: [usize; 3],
    /// The epoch whose weights were kept (1-based), and the epochs run.
    pub best_epoch: usize,
    /// Epochs run.
    pub epochs: usize,
    /// Crops the evaluation could not read (named, with the error).
    pub skipped: Vec<SkippedSample>,
}

/// What [`train_detector`] returns; everything is also written to the output folder.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The report.
    pub report: TrainReport,
    /// The model card.
    pub card: ModelCard,
    /// Test-side predictions (calibrated probabilities) with ids and labels.
    pub test: Evaluation,
}

fn indices_with_label(indices: &[usize], labels: &[u32], label: u32) -> Vec<usize> {
    indices.iter().copied().filter(|&i| labels.get(i) == Some(&label)).collect()
}

/// The training or validation side as a dataset: the set's crops, or real crops plus their
/// self-blends.
fn side(
    set: &FaceSet,
    indices: &[usize],
    sbi: Option<&SbiConfig>,
    seed: u64,
) -> Result<(Arc<dyn Dataset<Item = Sample>>, Vec<u32>)> {
    match sbi {
        None => {
            let labels = indices.iter().map(|&i| set.labels[i]).collect();
            Ok((Arc::new(set.dataset().subset(indices.to_vec())?), labels))
        }
        Some(config) => {
            let reals = indices_with_label(indices, &set.labels, 0);
            let n = reals.len();
            let blended = SelfBlended::new(set.dataset().subset(reals)?, config.clone(), seed);
            let labels = std::iter::repeat_n(0, n).chain(std::iter::repeat_n(1, n)).collect();
            Ok((Arc::new(blended), labels))
        }
    }
}

/// Trains, calibrates and evaluates a deepfake classifier on `set`; writes the detector
/// folder (`config.train.out_dir`). Resumes from `out_dir/last` when it exists.
///
/// # Errors
/// A side without both classes, loader, model, training, plotting and I/O errors.
pub fn train_detector(
    set: &FaceSet,
    config: &DetectorTrainConfig,
    device: &Device,
) -> Result<TrainOutcome> {
    train_detector_with(set, config, None, device)
}

/// [`train_detector`] with the face-match baseline on the test side as well: each test crop's
/// identity-embedding distance to the other real test crops of its group, fake above dlib's
/// same-person threshold ([`crate::dlib::MATCH_THRESHOLD`]).
///
/// # Errors
/// As [`train_detector`]; face detector and embedding errors.
pub fn train_detector_with(
    set: &FaceSet,
    config: &DetectorTrainConfig,
    face_match: Option<&crate::facematch::FaceMatcher<'_>>,
    device: &Device,
) -> Result<TrainOutcome> {
    let seed = config.train.seed;
    let splits = set.split(config.ratios, seed)?;
    for (name, side) in [("train", &splits.train), ("valid", &splits.valid), ("test", &splits.test)]
    {
        // With self-blending, only real crops are needed: a test side without fakes is scored
        // on its own self-blends (and the report says so).
        let needs_fakes = config.sbi.is_none();
        let reals = indices_with_label(side, &set.labels, 0).len();
        if reals == 0 || (needs_fakes && reals == side.len()) {
            return Err(Error::InvalidConfig {
                what: "data",
                reason: format!(
                    "the {name} side of {} has {} crops, {reals} of them real: it needs both \
                     classes (more crops or groups, or other split ratios)",
                    set.origin.display(),
                    side.len()
                ),
            });
        }
    }
    let sbi = config.sbi.as_ref();
    let (train_set, train_labels) = side(set, &splits.train, sbi, seed)?;
    let (valid_set, _) = side(set, &splits.valid, sbi, seed.wrapping_add(1))?;
    let test_on_self_blends =
        sbi.is_some() && indices_with_label(&splits.test, &set.labels, 1).is_empty();
    let test_set: Arc<dyn Dataset<Item = Sample>> = if test_on_self_blends {
        side(set, &splits.test, sbi, seed.wrapping_add(2))?.0
    } else {
        Arc::new(set.dataset().subset(splits.test.clone())?)
    };

    let mut train_config = config.train.clone();
    let train_order: Vec<usize> = (0..train_labels.len()).collect();
    let train_order = match config.balance {
        Balance::ClassWeights => {
            let w = balance::class_weights(&train_labels);
            if let [neg, pos] = w[..] {
                train_config.class_weights = Some(vec![neg, pos]);
            }
            train_order
        }
        other => balance::rebalance(&train_order, &train_labels, other, seed)?,
    };
    let train_set: Arc<dyn Dataset<Item = Sample>> = Arc::new(train_set.subset(train_order)?);

    let px = u32::try_from(config.size)
        .map_err(|_| Error::InvalidConfig { what: "size", reason: "too large".into() })?;
    let loader = |data: Arc<dyn Dataset<Item = Sample>>, train: bool| {
        let mut pipeline = Compose::new().then(Resize::new(px, px));
        if let (true, Some(aug)) = (train, &config.augment) {
            pipeline = aug.push_into(pipeline);
        }
        let l = Loader::new(data).batch_size(config.batch_size).seed(seed).transform(pipeline);
        if train {
            l.shuffle(seed)
        } else {
            l
        }
    };
    let model_cfg = ZooConfig {
        task: Task::Binary,
        input: (3, config.size, config.size),
        seed,
        ..config.model.clone()
    };
    let varmap = VarMap::new();
    let built = zoo::build(&model_cfg, &varmap, device)?;
    let model_json = serde_json::to_value(&built.config)
        .map_err(|e| Error::InvalidConfig { what: "model", reason: e.to_string() })?;
    let history = supervised::fit(
        &built.model,
        &varmap,
        built.trainable.clone(),
        built.normalization.clone(),
        model_json,
        &train_config,
        &loader(Arc::clone(&train_set), true),
        &loader(Arc::clone(&valid_set), false),
        device,
    )?;
    drop(built);

    // Model selection happened on validation; the test side sees the kept epoch only.
    let out = &config.train.out_dir;
    let best = zoo::load(out, device)?;
    let valid_eval =
        evaluate(&best.model, &loader(Arc::clone(&valid_set), false), &best.normalization, device)?;
    let mut test_eval =
        evaluate(&best.model, &loader(Arc::clone(&test_set), false), &best.normalization, device)?;

    let (valid_y, _) = valid_eval.column(0);
    let (test_y, raw_test_p) = test_eval.column(0);
    let (temperature, note) = match TemperatureScaling::fit(&valid_y, &valid_eval.logit_column(0)) {
        Ok(t) => (t.temperature, None),
        Err(e) => (1.0, Some(format!("temperature kept at 1: {e}"))),
    };
    let scaling = TemperatureScaling { temperature };
    let valid_p = scaling.probabilities(&valid_eval.logit_column(0));
    let test_p = scaling.probabilities(&test_eval.logit_column(0));
    let threshold = binary::best_youden_threshold(&valid_y, &valid_p)?.threshold;
    let test = BinaryMetrics::of_probabilities(&test_y, &test_p, threshold)?;
    let valid = BinaryMetrics::of_probabilities(&valid_y, &valid_p, threshold)?;
    let calibration = CalibrationReport {
        ece_before: calibration::expected_calibration_error(&test_y, &raw_test_p, ECE_BINS)?,
        ece_after: test.ece.unwrap_or(f64::NAN),
        log_loss_before: binary::log_loss(&test_y, &raw_test_p)?,
        log_loss_after: test.log_loss.unwrap_or(f64::NAN),
        note,
    };

    // Baselines: the same sides, resized like the model's input.
    let prevalence =
        train_labels.iter().filter(|&&l| l == 1).count() as f64 / train_labels.len().max(1) as f64;
    let resize = Resize::new(px, px);
    let valid_side = sharpness(&valid_set, &resize)?;
    let test_side = sharpness(&test_set, &resize)?;
    let baselines = Baselines {
        majority: majority_metrics(&test_y, prevalence)?,
        laplacian_variance: fit_baseline(
            &valid_side.labels,
            &valid_side.values,
            &test_side.labels,
            &test_side.values,
        ),
        temporal_change: None,
        face_match: None,
    };
    let mut baselines = baselines;
    if let (Some(matcher), false) = (face_match, test_on_self_blends) {
        let test_part = FaceSet::from_parts(
            Arc::clone(&test_set),
            splits.test.iter().map(|&i| set.labels[i]).collect(),
            splits.test.iter().map(|&i| set.groups[i].clone()).collect(),
            splits.test.iter().map(|&i| set.videos[i].clone()).collect(),
        )?;
        let (scores, _) = crate::facematch::face_match_scores(&test_part, matcher)?;
        let (y, d): (Vec<bool>, Vec<f64>) = scores
            .iter()
            .zip(test_part.labels())
            .filter_map(|(s, &l)| Some((l == 1, (*s)?)))
            .unzip();
        baselines.face_match =
            BinaryMetrics::of_scores(&y, &d, f64::from(crate::dlib::MATCH_THRESHOLD)).ok();
    }
    // Self-blends have no video of their own: video rows would describe the real clips alone.
    let video = if test_on_self_blends {
        None
    } else {
        video_report(
            set,
            &splits,
            config.aggregation,
            threshold,
            prevalence,
            (&test_eval.ids, &test_p),
            (&valid_side, &test_side),
        )?
    };

    // Plots: ROC of the model and the sharpness baseline, reliability after calibration.
    let mut curves: Vec<(String, RocCurve)> =
        vec![("model, frames".into(), RocCurve::new(&test_y, &test_p)?)];
    if let Some(b) = &baselines.laplacian_variance {
        let oriented: Vec<f64> = test_side.values.iter().map(|v| b.direction * v).collect();
        if let Ok(c) = RocCurve::new(&test_side.labels, &oriented) {
            curves.push(("Laplacian variance, frames".into(), c));
        }
    }
    if let Some(v) = &video {
        if let Ok(c) = RocCurve::new(&v.curve.0, &v.curve.1) {
            curves.push((format!("model, videos ({})", config.aggregation), c));
        }
    }
    let named: Vec<(&str, &RocCurve)> = curves.iter().map(|(n, c)| (n.as_str(), c)).collect();
    plot::roc_curves(&out.join("roc.png"), &named, "deepfake detection, test side")?;
    plot::reliability_diagram(
        &out.join("reliability.png"),
        &calibration::calibration(&test_y, &test_p, ECE_BINS)?,
        &format!("test side after temperature scaling (T = {temperature:.3})"),
    )?;

    let card = ModelCard {
        model: best.config.clone(),
        size: config.size,
        threshold,
        temperature,
        aggregation: config.aggregation,
        face_detector: config.face_detector,
        crop: config.crop,
        sbi: config.sbi.is_some(),
        trained_on: set.origin.display().to_string(),
    };
    write_json(&out.join(MODEL_CARD), &card)?;
    let mut skipped = valid_eval.skipped.clone();
    skipped.extend(test_eval.skipped.iter().cloned());
    let report = TrainReport {
        test,
        valid,
        threshold,
        temperature,
        baselines,
        calibration,
        video: video.map(|v| v.report),
        model: best.config.name.to_string(),
        sbi: config.sbi.is_some(),
        test_on_self_blends,
        split: [splits.train.len(), splits.valid.len(), splits.test.len()],
        best_epoch: history.best().map_or(0, |r| r.epoch),
        epochs: history.epochs.len(),
        skipped,
    };
    write_json(&out.join("report.json"), &report)?;
    test_eval.scores = test_p;
    Ok(TrainOutcome { report, card, test: test_eval })
}

fn majority_metrics(test_y: &[bool], prevalence: f64) -> Result<BinaryMetrics> {
    let p = vec![prevalence; test_y.len()];
    // Every sample gets the training prevalence: fake for all when fakes were the majority.
    let threshold = if prevalence >= 0.5 { prevalence } else { 1.0 };
    BinaryMetrics::of_probabilities(test_y, &p, threshold)
}

/// Sharpness of every readable sample of a side (position in the side, sample id, label,
/// value), and the resized crops for the temporal score.
struct SideValues {
    ids: Vec<String>,
    labels: Vec<bool>,
    values: Vec<f64>,
    images: Vec<Image>,
}

impl SideValues {
    fn position(&self) -> BTreeMap<&str, usize> {
        self.ids.iter().enumerate().map(|(k, id)| (id.as_str(), k)).collect()
    }
}

fn sharpness(data: &Arc<dyn Dataset<Item = Sample>>, resize: &Resize) -> Result<SideValues> {
    use rayon::prelude::*;
    let rows: Vec<Option<(String, bool, f64, Image)>> = (0..data.len())
        .into_par_iter()
        .map(|i| -> Result<Option<(String, bool, f64, Image)>> {
            // Unreadable crops were already reported by the evaluation; skip them here.
            let Ok(sample) = data.get(i) else { return Ok(None) };
            let image = resize.resize(&sample.image)?;
            let fake = matches!(sample.target, deeprecog_dataset::Target::Class(1));
            Ok(Some((sample.id, fake, laplacian_variance(&image), image)))
        })
        .collect::<Result<_>>()?;
    let mut out = SideValues { ids: vec![], labels: vec![], values: vec![], images: vec![] };
    for (id, y, v, image) in rows.into_iter().flatten() {
        out.ids.push(id);
        out.labels.push(y);
        out.values.push(v);
        out.images.push(image);
    }
    Ok(out)
}

/// Direction and threshold of a raw score chosen on validation, metrics on test; `None` when
/// either side lacks a class.
fn fit_baseline(
    valid_y: &[bool],
    valid_raw: &[f64],
    test_y: &[bool],
    test_raw: &[f64],
) -> Option<BaselineResult> {
    let auc = binary::roc_auc(valid_y, valid_raw).ok()?;
    let direction = if auc >= 0.5 { 1.0 } else { -1.0 };
    let oriented = |raw: &[f64]| raw.iter().map(|v| direction * v).collect::<Vec<_>>();
    let threshold = binary::best_youden_threshold(valid_y, &oriented(valid_raw)).ok()?.threshold;
    let test = BinaryMetrics::of_scores(test_y, &oriented(test_raw), threshold).ok()?;
    Some(BaselineResult { direction, threshold, test })
}

/// `(frame index, position)` of one video's crops.
type FramePositions = Vec<(u64, usize)>;

/// Per-video values of one side: label, mean sharpness and temporal change of the crops in
/// frame order, and the video's id; only crops cut from videos count.
struct VideoValues {
    ids: Vec<String>,
    labels: Vec<bool>,
    sharpness: Vec<f64>,
    flicker: Vec<f64>,
}

fn video_values(set: &FaceSet, indices: &[usize], side: &SideValues) -> VideoValues {
    let position = side.position();
    let mut per_video: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
    for &i in indices {
        let (Some((video, frame)), Some(origin)) = (&set.videos[i], set.dataset.origin(i)) else {
            continue;
        };
        if let Some(&k) = position.get(origin.id.as_str()) {
            per_video.entry(video.as_str()).or_default().push((*frame, k));
        }
    }
    let mut out = VideoValues { ids: vec![], labels: vec![], sharpness: vec![], flicker: vec![] };
    for (video, mut crops) in per_video {
        crops.sort_unstable();
        let n = crops.len() as f64;
        let images: Vec<Image> = crops.iter().map(|&(_, k)| side.images[k].clone()).collect();
        out.ids.push(video.to_string());
        out.labels.push(crops.iter().any(|&(_, k)| side.labels[k]));
        out.sharpness.push(crops.iter().map(|&(_, k)| side.values[k]).sum::<f64>() / n);
        out.flicker.push(temporal_change(&images).unwrap_or(0.0));
    }
    out
}

/// The rules every video report lists: `first` (the model's), then the others once each.
fn aggregation_rules(first: Aggregation) -> Vec<Aggregation> {
    let mut rules = vec![first];
    for rule in [
        Aggregation::Mean,
        Aggregation::Median,
        Aggregation::Max,
        Aggregation::TopKMean(3),
        Aggregation::confident(),
    ] {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    rules
}

struct VideoOutcome {
    report: VideoReport,
    curve: (Vec<bool>, Vec<f64>),
}

/// Video-level rows over the test crops cut from videos (`None` when there are none).
fn video_report(
    set: &FaceSet,
    splits: &Splits,
    aggregation: Aggregation,
    threshold: f64,
    prevalence: f64,
    test: (&[String], &[f64]),
    sides: (&SideValues, &SideValues),
) -> Result<Option<VideoOutcome>> {
    let video_of: BTreeMap<String, (&str, bool)> = splits
        .test
        .iter()
        .filter_map(|&i| {
            let (video, _) = set.videos[i].as_ref()?;
            Some((set.dataset.origin(i)?.id, (video.as_str(), set.labels[i] == 1)))
        })
        .collect();
    let (mut ids, mut labels, mut probs) = (Vec::new(), Vec::new(), Vec::new());
    for (id, &p) in test.0.iter().zip(test.1) {
        if let Some(&(video, fake)) = video_of.get(id) {
            ids.push(video);
            labels.push(fake);
            probs.push(p);
        }
    }
    if ids.is_empty() {
        return Ok(None);
    }
    let rules = aggregation_rules(aggregation);
    let mut rows = Vec::new();
    let mut curve = None;
    for rule in rules {
        let v = aggregate_by_video(&ids, &labels, &probs, rule)?;
        if curve.is_none() {
            curve = Some((v.labels.clone(), v.scores.clone()));
        }
        rows.push(VideoRow {
            aggregation: rule.to_string(),
            test: BinaryMetrics::of_probabilities(&v.labels, &v.scores, threshold)?,
        });
    }
    let curve = curve.unwrap_or_default();
    let valid = video_values(set, &splits.valid, sides.0);
    let test = video_values(set, &splits.test, sides.1);
    let baselines = Baselines {
        majority: majority_metrics(&curve.0, prevalence)?,
        laplacian_variance: fit_baseline(
            &valid.labels,
            &valid.sharpness,
            &test.labels,
            &test.sharpness,
        ),
        temporal_change: fit_baseline(&valid.labels, &valid.flicker, &test.labels, &test.flicker),
        face_match: None,
    };
    Ok(Some(VideoOutcome { report: VideoReport { rows, baselines }, curve }))
}

/// A trained detector scored on another labelled set (a different domain, say): what
/// [`evaluate_detector`] returns and `deepfake evaluate` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetEvaluation {
    /// The set.
    pub data: String,
    /// Frame (crop) metrics of the calibrated probabilities at the model's threshold.
    pub frames: BinaryMetrics,
    /// Video rows (the model's aggregation first) when crops come from videos.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub videos: Vec<VideoRow>,
    /// ROC-AUC of the negated Laplacian variance (blurrier = fake) on the same crops: nothing
    /// is fitted on this set, so only the ranking is reported.
    pub laplacian_variance_auc: Option<f64>,
    /// Video-level ROC-AUC of the temporal change of the crops (more change = fake).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporal_change_auc: Option<f64>,
    /// ROC-AUC of the face-match distance ([`crate::facematch`]) where it was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub face_match_auc: Option<f64>,
    /// Crops that could not be read, with the error.
    pub skipped: Vec<SkippedSample>,
}

/// Scores every crop of `set` with `model` (calibrated, at its threshold), at frame level and,
/// for crops cut from videos, at video level with every aggregation rule.
///
/// # Errors
/// A set without both classes, model errors. Unreadable crops are skipped and listed.
pub fn evaluate_detector(
    model: &crate::verdict::DeepfakeModel,
    set: &FaceSet,
) -> Result<SetEvaluation> {
    use rayon::prelude::*;
    let side = u32::try_from(model.card().size)
        .map_err(|_| Error::InvalidConfig { what: "size", reason: "too large".into() })?;
    let resize = Resize::new(side, side);
    let data = set.dataset();
    let read: Vec<std::result::Result<(usize, Image), SkippedSample>> = (0..set.len())
        .into_par_iter()
        .map(|i| {
            data.get(i)
                .and_then(|s| resize.resize(&s.image.to_rgb()))
                .map(|image| (i, image))
                .map_err(|e| SkippedSample::new(&data, i, e.to_string()))
        })
        .collect();
    let mut skipped = Vec::new();
    let mut kept: Vec<(usize, Image)> = Vec::new();
    for r in read {
        match r {
            Ok(v) => kept.push(v),
            Err(s) => skipped.push(s),
        }
    }
    let (kept, images): (Vec<usize>, Vec<Image>) = kept.into_iter().unzip();
    let probs = model.probabilities(&images)?;
    let labels: Vec<bool> = kept.iter().map(|&i| set.labels[i] == 1).collect();
    let threshold = model.card().threshold;
    let frames = BinaryMetrics::of_probabilities(&labels, &probs, threshold)?;
    let blur: Vec<f64> = images.iter().map(|im| -laplacian_variance(im)).collect();
    let laplacian_variance_auc = binary::roc_auc(&labels, &blur).ok();

    let mut videos = Vec::new();
    let mut temporal_change_auc = None;
    let from_videos: Vec<usize> =
        (0..kept.len()).filter(|&k| set.videos[kept[k]].is_some()).collect();
    if !from_videos.is_empty() {
        let ids: Vec<&str> = from_videos
            .iter()
            .filter_map(|&k| set.videos[kept[k]].as_ref().map(|(v, _)| v.as_str()))
            .collect();
        let y: Vec<bool> = from_videos.iter().map(|&k| labels[k]).collect();
        let p: Vec<f64> = from_videos.iter().map(|&k| probs[k]).collect();
        for rule in aggregation_rules(model.card().aggregation) {
            let v = aggregate_by_video(&ids, &y, &p, rule)?;
            videos.push(VideoRow {
                aggregation: rule.to_string(),
                test: BinaryMetrics::of_probabilities(&v.labels, &v.scores, threshold)?,
            });
        }
        let mut per_video: BTreeMap<&str, (bool, FramePositions)> = BTreeMap::new();
        for &k in &from_videos {
            if let Some((video, frame)) = &set.videos[kept[k]] {
                per_video.entry(video.as_str()).or_insert((labels[k], vec![])).1.push((*frame, k));
            }
        }
        let (mut vy, mut flicker) = (Vec::new(), Vec::new());
        for (label, mut crops) in per_video.into_values() {
            crops.sort_unstable();
            let seq: Vec<Image> = crops.iter().map(|&(_, k)| images[k].clone()).collect();
            vy.push(label);
            flicker.push(temporal_change(&seq).unwrap_or(0.0));
        }
        temporal_change_auc = binary::roc_auc(&vy, &flicker).ok();
    }
    Ok(SetEvaluation {
        data: set.origin.display().to_string(),
        frames,
        videos,
        laplacian_variance_auc,
        temporal_change_auc,
        face_match_auc: None,
        skipped,
    })
}
