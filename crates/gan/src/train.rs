//! Training a GAN on an image dataset through the shared engine, and using the result.
//!
//! [`train_gan`] writes into its output folder:
//!
//! | path | what |
//! |---|---|
//! | `mosaic_<iteration>.png` | a 6x6 grid from the fixed evaluation latents (`mosaic_0.png`: the untrained generator), every `mosaic_every` iterations |
//! | `last/` | generator, discriminator, both optimizers, the position and the iteration log: `--resume` continues from it exactly |
//! | `history.json` | the engine's per-epoch means (`train_d_loss`, `train_g_loss`, `train_d_real`, `train_d_fake`) |
//! | `iterations.json` | every iteration's losses and `D(x)`, `D(G(z))` |
//! | `losses.png` | those curves |
//! | `generator/` | the generator alone (`generator.safetensors` + `gan.json`) for [`GanModel::load`] |
//!
//! A mode-collapse warning is printed (and listed in [`GanRun::warnings`]) when the fixed
//! batch's diversity (mean pairwise RMS distance between its images) falls below half of its
//! best value so far.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::transforms::{Compose, Resize};
use deeprecog_dataset::{Dataset, Image, Sample};
use deeprecog_train::callbacks::{Every, Progress};
use deeprecog_train::{Engine, EngineConfig, Monitor};
use serde::{Deserialize, Serialize};

use crate::models::{interpolation_grid, latents, GanConfig, Generator};
use crate::step::{GanOptim, GanStep, IterationRecord};
use crate::{mosaic, Error, Result};

/// Side of the mosaics: 6x6 images, as the synthesis report saved them.
pub const MOSAIC_SIDE: usize = 6;
/// The generator export's folder inside a run.
pub const GENERATOR_DIR: &str = "generator";
/// The generator's configuration file in an export.
pub const GAN_CONFIG_FILE: &str = "gan.json";
/// The generator's weights in an export.
pub const GENERATOR_FILE: &str = "generator.safetensors";

/// How long and how a GAN trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanTrainConfig {
    /// The networks.
    pub gan: GanConfig,
    /// Losses and optimizers.
    pub optim: GanOptim,
    /// Iterations in total (the report: 1000), counting those before a resume.
    pub iterations: u64,
    /// Images per batch (the report: 16; DCGAN: 128).
    pub batch_size: usize,
    /// A mosaic every this many iterations (the report: 50).
    pub mosaic_every: u64,
    /// Save `last/` every this many iterations (also at the end).
    pub checkpoint_every: u64,
    /// Seed of weights, batch order and every random draw.
    pub seed: u64,
    /// Continue from `out/last` when it exists.
    pub resume: bool,
    /// Decoding threads of the loader (0: the loader's default).
    pub workers: usize,
}

impl GanTrainConfig {
    /// The published recipe of `gan`'s architecture: 1000 iterations of 16, a mosaic every 50.
    pub fn new(gan: GanConfig) -> GanTrainConfig {
        let optim = GanOptim::recipe(gan.arch);
        GanTrainConfig {
            gan,
            optim,
            iterations: 1000,
            batch_size: 16,
            mosaic_every: 50,
            checkpoint_every: 200,
            seed: 0,
            resume: true,
            workers: 0,
        }
    }
}

/// What a training run produced.
#[derive(Debug, Clone, Serialize)]
pub struct GanRun {
    /// The output folder.
    pub out: PathBuf,
    /// Iterations done in total.
    pub iterations: u64,
    /// The mosaics written by this run, in order.
    pub mosaics: Vec<PathBuf>,
    /// Every iteration's numbers (including those before a resume).
    pub trace: Vec<IterationRecord>,
    /// Mode-collapse warnings raised.
    pub warnings: Vec<String>,
    /// The exported generator's folder.
    pub generator: PathBuf,
    /// Training time of this run, in seconds.
    pub seconds: f64,
}

/// Crops the central square and resizes it to `size`: DCGAN's CelebA preprocessing
/// (`Resize(size)` + `CenterCrop(size)`), in the other order, which is the same picture.
pub fn square_transform(size: usize) -> Compose {
    let crop =
        |image: Image, _: &mut rand_chacha::ChaCha8Rng| -> deeprecog_dataset::Result<Image> {
            let (w, h) = (image.width(), image.height());
            let side = w.min(h);
            deeprecog_dataset::transforms::CenterCrop::new(side, side).crop(&image)
        };
    Compose::new().then(crop).then(Resize::new(size as u32, size as u32))
}

/// The fixed evaluation batch: 36 latents from the run's seed and, for a conditional model,
/// every combination of its attributes in turn (row `r` of the mosaic shows combination
/// `r mod 2^K`, attribute `k` positive when bit `k` is set).
///
/// # Errors
/// Tensor errors.
pub fn fixed_batch(
    config: &GanConfig,
    seed: u64,
    device: &Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let n = MOSAIC_SIDE * MOSAIC_SIDE;
    let z = latents(n, config.latent_dim, seed, "fixed", device)?;
    if !config.is_conditional() {
        return Ok((z, None));
    }
    let k = config.conditions.len();
    let mut y = Vec::with_capacity(n * k);
    for i in 0..n {
        let combination = (i / MOSAIC_SIDE) % (1usize << k.min(16));
        y.extend((0..k).map(|b| if combination >> b & 1 == 1 { 1f32 } else { -1.0 }));
    }
    Ok((z, Some(Tensor::from_vec(y, (n, k), device)?)))
}

/// Writes a `(N, C, H, W)` batch in `[-1, 1]` as one PNG grid, `cols` per row.
///
/// # Errors
/// Tensor errors, [`Error::Io`] naming the file.
pub fn save_mosaic(images: &Tensor, cols: usize, path: &Path) -> Result<()> {
    let grid = mosaic(images, cols, 2)?;
    let (c, h, w) = grid.dims3()?;
    let hwc = grid.permute((1, 2, 0))?.flatten_all()?.to_vec1::<u8>()?;
    let image = Image::from_raw(w as u32, h as u32, c as u8, hwc)?;
    image.save(path).map_err(|e| Error::Io { path: path.to_path_buf(), reason: e.to_string() })
}

/// Mean pairwise root-mean-square distance between the images of a batch: a collapse of the
/// generator onto a few outputs drives it towards 0.
///
/// # Errors
/// Tensor errors.
pub fn diversity(images: &Tensor) -> Result<f64> {
    let n = images.dim(0)?;
    let flat = images.flatten_from(1)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for i in 0..n {
        for j in i + 1..n {
            let d: f64 = flat[i].iter().zip(&flat[j]).map(|(a, b)| (a - b) * (a - b)).sum();
            sum += (d / flat[i].len() as f64).sqrt();
            pairs += 1;
        }
    }
    Ok(if pairs == 0 { 0.0 } else { sum / pairs as f64 })
}

/// Trains a GAN on `data` (images of any size: the central square is resized to the model's
/// size; for a conditional model the samples' targets are its attributes, `{0, 1}`).
///
/// # Errors
/// Configuration, data, training and file errors; bad images are skipped and counted by the
/// engine (`skipped.json`), not fatal.
pub fn train_gan<D>(
    data: D,
    config: &GanTrainConfig,
    out: &Path,
    device: &Device,
    verbose: bool,
) -> Result<GanRun>
where
    D: Dataset<Item = Sample> + 'static,
{
    config.gan.validate()?;
    if config.batch_size == 0 || config.iterations == 0 {
        return Err(Error::Config("batch size and iterations must be positive".into()));
    }
    if data.len() < config.batch_size {
        return Err(Error::Config(format!(
            "{} images for batches of {}: at least one full batch is needed",
            data.len(),
            config.batch_size
        )));
    }
    std::fs::create_dir_all(out)
        .map_err(|e| Error::Io { path: out.to_path_buf(), reason: e.to_string() })?;
    let mut loader = Loader::new(data)
        .batch_size(config.batch_size)
        .shuffle(config.seed)
        .seed(config.seed)
        .drop_last(true)
        .transform(square_transform(config.gan.image_size));
    if config.workers > 0 {
        loader = loader.workers(config.workers);
    }
    let batches = loader.num_batches().max(1) as u64;
    let mut step = GanStep::new(&config.gan, &config.optim, config.seed, device)?;
    let engine_config = EngineConfig {
        epochs: config.iterations.div_ceil(batches) as usize + 1,
        max_steps: Some(config.iterations),
        seed: config.seed,
        out_dir: out.to_path_buf(),
        schedule: None,
        monitor: Monitor::min("train_g_loss"),
        checkpoint_every_epoch: false,
        checkpoint_every_steps: Some(config.checkpoint_every.max(1)),
        resume: config.resume,
    };
    let (fixed_z, fixed_y) = fixed_batch(&config.gan, config.seed, device)?;
    let mut mosaics = Vec::new();
    let mut warnings = Vec::new();
    let started = std::time::Instant::now();
    {
        let mut best_diversity = 0f64;
        let mut snapshot = |step: &GanStep, iteration: u64| -> Result<()> {
            let images = step.generate(&fixed_z, fixed_y.as_ref())?;
            let path = out.join(format!("mosaic_{iteration}.png"));
            save_mosaic(&images, MOSAIC_SIDE, &path)?;
            mosaics.push(path);
            let div = diversity(&images)?;
            if iteration > 0 && best_diversity > 0.0 && div < 0.5 * best_diversity {
                let w = format!(
                    "possible mode collapse at iteration {iteration}: diversity of the fixed batch {div:.3}, best so far {best_diversity:.3}"
                );
                if verbose {
                    eprintln!("warning: {w}");
                }
                warnings.push(w);
            }
            best_diversity = best_diversity.max(div);
            Ok(())
        };
        if !config.resume || !deeprecog_nn::checkpoint::exists(out.join(deeprecog_train::LAST_DIR))
        {
            snapshot(&step, 0)?;
        }
        let every = config.mosaic_every.max(1);
        let mut engine = Engine::new(engine_config).device(device.clone()).callback(Every::steps(
            every,
            move |ctx: &mut deeprecog_train::RunContext<'_, GanStep>| {
                snapshot(ctx.step, ctx.position.step)
                    .map_err(|e| deeprecog_train::Error::Step(Box::new(e)))
            },
        ));
        if verbose {
            engine = engine.callback(Progress::new("gan"));
        }
        engine.fit(&mut step, &loader)?;
    }
    let trace = step.trace().to_vec();
    deeprecog_train::write_json(&out.join("iterations.json"), &trace)?;
    if trace.len() >= 2 {
        crate::plot::losses(&trace, &out.join("losses.png"))?;
    }
    let generator = out.join(GENERATOR_DIR);
    export_generator(&config.gan, step.generator_vars(), &generator)?;
    Ok(GanRun {
        out: out.to_path_buf(),
        iterations: trace.last().map_or(0, |r| r.iteration),
        mosaics,
        trace,
        warnings,
        generator,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Saves the generator alone: `generator.safetensors` and `gan.json` in `dir`.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn export_generator(config: &GanConfig, vars: &VarMap, dir: &Path) -> Result<()> {
    let io = |p: &Path, e: &dyn std::fmt::Display| Error::Io {
        path: p.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, &e))?;
    let weights = dir.join(GENERATOR_FILE);
    vars.save(&weights).map_err(|e| io(&weights, &e))?;
    deeprecog_train::write_json(&dir.join(GAN_CONFIG_FILE), config)?;
    Ok(())
}

/// A trained generator, for sampling.
#[derive(Debug, Clone)]
pub struct GanModel {
    generator: Generator,
    device: Device,
}

impl GanModel {
    /// Loads a generator from an export folder, a training run (its `generator/`), or a run's
    /// `last/` checkpoint folder.
    ///
    /// # Errors
    /// [`Error::Io`] for missing or unreadable files, [`Error::Config`] for a configuration that
    /// does not match the weights.
    pub fn load(dir: &Path, device: &Device) -> Result<GanModel> {
        if dir.join(deeprecog_nn::checkpoint::RUN_FILE).is_file()
            && dir.join(GENERATOR_FILE).is_file()
        {
            // A training checkpoint (`last/`): the configuration is the run file's model.
            let run = deeprecog_nn::checkpoint::read_run(dir)?;
            let config: GanConfig =
                serde_json::from_value(run.model["gan"].clone()).map_err(|e| Error::Io {
                    path: dir.join(deeprecog_nn::checkpoint::RUN_FILE),
                    reason: format!("not a GAN checkpoint: {e}"),
                })?;
            return GanModel::from_weights(&config, &dir.join(GENERATOR_FILE), device);
        }
        let (config_path, weights) = if dir.join(GAN_CONFIG_FILE).is_file() {
            (dir.join(GAN_CONFIG_FILE), dir.join(GENERATOR_FILE))
        } else if dir.join(GENERATOR_DIR).join(GAN_CONFIG_FILE).is_file() {
            (
                dir.join(GENERATOR_DIR).join(GAN_CONFIG_FILE),
                dir.join(GENERATOR_DIR).join(GENERATOR_FILE),
            )
        } else {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                reason: format!(
                    "no {GAN_CONFIG_FILE} here or in {GENERATOR_DIR}/ (not a GAN run or export)"
                ),
            });
        };
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| Error::Io { path: config_path.clone(), reason: e.to_string() })?;
        let config: GanConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Io { path: config_path.clone(), reason: e.to_string() })?;
        GanModel::from_weights(&config, &weights, device)
    }

    /// A generator of `config` with the weights of a safetensors file.
    ///
    /// # Errors
    /// [`Error::Io`] naming the file when it is missing or does not fit the configuration.
    pub fn from_weights(config: &GanConfig, weights: &Path, device: &Device) -> Result<GanModel> {
        let mut vars = VarMap::new();
        let generator = Generator::new(
            config,
            deeprecog_nn::init::seeded_var_builder(&vars, 0, DType::F32, device),
        )?;
        vars.load(weights)
            .map_err(|e| Error::Io { path: weights.to_path_buf(), reason: e.to_string() })?;
        Ok(GanModel { generator, device: device.clone() })
    }

    /// The network configuration.
    pub fn config(&self) -> &GanConfig {
        self.generator.config()
    }

    /// `n` images in `[-1, 1]` from the latents of `seed`; `conditions` (`{0, 1}` or booleans
    /// per attribute of the model, the same for every image) for a conditional model.
    ///
    /// # Errors
    /// A condition vector of the wrong length, tensor errors.
    pub fn sample(&self, n: usize, seed: u64, conditions: Option<&[bool]>) -> Result<Tensor> {
        let c = self.config();
        let z = latents(n, c.latent_dim, seed, "sample", &self.device)?;
        let y = self.conditions(n, conditions)?;
        self.generator.forward(&z, y.as_ref(), false)
    }

    fn conditions(&self, n: usize, conditions: Option<&[bool]>) -> Result<Option<Tensor>> {
        let c = self.config();
        match (c.is_conditional(), conditions) {
            (false, None) => Ok(None),
            (false, Some(_)) => Err(Error::Config("this generator is not conditional".into())),
            (true, None) => Err(Error::Config(format!(
                "this generator is conditioned on {:?}: give a value for each",
                c.conditions.iter().map(|a| a.to_string()).collect::<Vec<_>>()
            ))),
            (true, Some(v)) if v.len() != c.conditions.len() => Err(Error::Config(format!(
                "{} condition values for {} attributes",
                v.len(),
                c.conditions.len()
            ))),
            (true, Some(v)) => {
                let row: Vec<f32> = v.iter().map(|&b| if b { 1.0 } else { -1.0 }).collect();
                let rows: Vec<f32> = (0..n).flat_map(|_| row.iter().copied()).collect();
                Ok(Some(Tensor::from_vec(rows, (n, v.len()), &self.device)?))
            }
        }
    }

    /// A latent interpolation grid: `rows` pairs of random latents, `cols` images from one to
    /// the other, `(rows * cols, C, H, W)`.
    ///
    /// # Errors
    /// As [`GanModel::sample`].
    pub fn interpolate(
        &self,
        rows: usize,
        cols: usize,
        seed: u64,
        conditions: Option<&[bool]>,
    ) -> Result<Tensor> {
        let d = self.config().latent_dim;
        let a = latents(rows, d, seed, "interpolate.start", &self.device)?;
        let b = latents(rows, d, seed, "interpolate.end", &self.device)?;
        let z = interpolation_grid(&a, &b, cols)?;
        let y = self.conditions(rows * cols, conditions)?;
        self.generator.forward(&z, y.as_ref(), false)
    }
}

/// Exports the generator a run of `config` starts from (its seed's initial weights): the
/// untrained baseline of an FID comparison.
///
/// # Errors
/// As [`export_generator`].
pub fn export_initial_generator(
    config: &GanTrainConfig,
    dir: &Path,
    device: &Device,
) -> Result<()> {
    let step = GanStep::new(&config.gan, &config.optim, config.seed, device)?;
    export_generator(&config.gan, step.generator_vars(), dir)
}
