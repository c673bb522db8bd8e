//! Images per second on this machine: a zoo model's inference (evaluation mode over constant
//! weights, [`zoo::inference_model`]) or training step (forward, `bce_with_logits`, backward,
//! Adam), or one GAN iteration (a discriminator step on real and generated images, then a
//! generator step); the median over timed iterations after two warm-up ones. What
//! `examples/throughput` prints and `benches/compare_cpu.sh` sets against PyTorch and
//! onnxruntime.
//!
//! ```
//! use deeprecog::pipelines::throughput::{measure, Workload};
//!
//! let workload = Workload::Model {
//!     name: "scratch2".parse()?,
//!     input: 32,
//!     freeze: None,
//!     train: true,
//! };
//! let m = measure(&workload, 2, 1)?;
//! assert!(m.images_per_second > 0.0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{Init, Optimizer, VarMap};
use deeprecog_classifiers::zoo::{self, ModelName, ZooConfig};
use deeprecog_classifiers::Freeze;
use deeprecog_gan::models::latents;
use deeprecog_gan::{GanConfig, GanOptim, GanStep};
use deeprecog_nn::init::init_tensor;
use deeprecog_nn::loss::bce_with_logits;
use deeprecog_nn::optim::{Adam, AdamConfig};
use deeprecog_train::StepContext;

use super::{Error, Result};

/// What one timed iteration runs.
#[derive(Debug, Clone)]
pub enum Workload {
    /// A zoo model on square `input x input` RGB images (seeded weights and inputs).
    Model {
        /// The architecture.
        name: ModelName,
        /// Image side.
        input: usize,
        /// Stages frozen up to and including this one (backbones only).
        freeze: Option<String>,
        /// A training step instead of inference.
        train: bool,
    },
    /// A GAN iteration of this architecture (`dcgan64`, `seed`, ...).
    Gan {
        /// The architecture name.
        arch: String,
    },
}

/// A measured rate.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What ran, with the median step time, for people.
    pub description: String,
    /// Batch size over the median step time.
    pub images_per_second: f64,
}

/// Runs `workload` on batches of `batch`, `iters` timed iterations after two warm-up ones, on
/// the CPU.
///
/// # Errors
/// [`Error::InvalidArgument`] for a zero batch or iteration count; model, GAN and tensor
/// errors.
pub fn measure(workload: &Workload, batch: usize, iters: usize) -> Result<Measurement> {
    measure_on(workload, batch, iters, &Device::Cpu)
}

/// [`measure`] on `device`; each timed step ends with the device synchronised, so a GPU step
/// is its kernels' time, not their launch.
///
/// # Errors
/// As [`measure`].
pub fn measure_on(
    workload: &Workload,
    batch: usize,
    iters: usize,
    device: &Device,
) -> Result<Measurement> {
    if batch == 0 || iters == 0 {
        return Err(Error::invalid("throughput", "the batch and iteration count must be positive"));
    }
    let (what, median) = match workload {
        Workload::Model { name, input, freeze, train } => {
            model_step(name, *input, freeze.as_deref(), *train, batch, iters, device)?
        }
        Workload::Gan { arch } => gan_step(arch, batch, iters, device)?,
    };
    Ok(Measurement {
        description: format!(
            "{what} batch {batch}: median {:.2} ms over {iters} iterations",
            median * 1e3
        ),
        images_per_second: batch as f64 / median,
    })
}

/// The median wall time of `step` (then a synchronisation of `device`) over `iters` calls
/// after two untimed ones, each run on rayon's workers ([`deeprecog_nn::device::on_cpu_workers`];
/// with `spin`, [`deeprecog_nn::device::on_cpu_workers_spinning`], as latency-bound inference
/// is served and as onnxruntime's pool runs).
fn median_seconds(
    iters: usize,
    device: &Device,
    spin: bool,
    mut step: impl FnMut(u64) -> Result<()> + Send,
) -> Result<f64> {
    let mut times = Vec::with_capacity(iters);
    device.synchronize().map_err(deeprecog_nn::Error::from)?;
    for i in 0..iters + 2 {
        let started = Instant::now();
        if spin {
            deeprecog_nn::device::on_cpu_workers_spinning(|| step(i as u64))?;
        } else {
            deeprecog_nn::device::on_cpu_workers(|| step(i as u64))?;
        }
        device.synchronize().map_err(deeprecog_nn::Error::from)?;
        if i >= 2 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn model_step(
    name: &ModelName,
    input: usize,
    freeze: Option<&str>,
    train: bool,
    batch: usize,
    iters: usize,
    device: &Device,
) -> Result<(String, f64)> {
    let config = ZooConfig {
        input: (3, input, input),
        freeze: freeze.map_or(Freeze::None, |s| Freeze::UpToStage(s.to_string())),
        ..ZooConfig::new(*name)
    };
    let varmap = VarMap::new();
    let built = zoo::build(&config, &varmap, device)?;
    let nn = deeprecog_nn::Error::from;
    let randn = Init::Randn { mean: 0.0, stdev: 1.0 };
    let shape = (batch, 3, input, input).into();
    let x = init_tensor(randn, &shape, 0, "x", DType::F32, device).map_err(nn)?;
    let outputs = config.task.outputs();
    let y = Tensor::ones((batch, outputs), DType::F32, device).map_err(nn)?;
    let median = if train {
        let mut adam = Adam::new(built.trainable.clone(), AdamConfig::default()).map_err(nn)?;
        median_seconds(iters, device, false, |_| {
            let logits = built.model.forward_t(&x, true).map_err(nn)?;
            let logits = logits.reshape((batch, outputs)).map_err(nn)?;
            let loss = bce_with_logits(&logits, &y)?;
            adam.step(&loss.backward().map_err(nn)?).map_err(nn)?;
            Ok(())
        })?
    } else {
        // Constant copies of the weights, as a deployed model runs.
        let model = zoo::inference_model(&config, &varmap, device)?;
        median_seconds(iters, device, true, |_| {
            let logits = model.forward_t(&x, false).map_err(nn)?;
            logits.flatten_all().and_then(|l| l.to_vec1::<f32>()).map_err(nn)?;
            Ok(())
        })?
    };
    let mode = if train { "training step" } else { "inference" };
    Ok((format!("{name} {input}x{input} {mode}"), median))
}

fn gan_step(arch: &str, batch: usize, iters: usize, device: &Device) -> Result<(String, f64)> {
    let config = GanConfig::from_arch_name(arch)?;
    let mut step = GanStep::new(&config, &GanOptim::recipe(config.arch), 0, device)?;
    let s = config.image_size;
    let nn = deeprecog_nn::Error::from;
    let real = latents(batch, 3 * s * s, 1, "real", device)?
        .tanh()
        .and_then(|r| r.reshape((batch, 3, s, s)))
        .map_err(nn)?;
    let median = median_seconds(iters, device, false, |i| {
        let ctx = StepContext { epoch: 0, batch: 0, step: i, seed: 0 };
        step.iterate(&real, None, &ctx)?;
        Ok(())
    })?;
    Ok((format!("{arch} {s}x{s} GAN iteration"), median))
}
