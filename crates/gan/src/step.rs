//! One GAN iteration as a [`TrainStep`] of the shared engine: two models, two optimizers,
//! alternating updates.
//!
//! 1. The discriminator: real images (targets 1, or `1 - label_smoothing`) and generated ones
//!    (target 0), the generated batch detached so the generator is untouched; only the
//!    discriminator's optimizer steps. The seed GAN scores one concatenated batch (its Keras
//!    `train_on_batch`, loss = mean over both halves, targets jittered by up to
//!    `label_noise`); DCGAN scores the halves separately (BatchNorm statistics per half) and
//!    adds their losses, as pytorch/examples does.
//! 2. The generator, through the discriminator with all-real targets (the non-saturating loss);
//!    only the generator's optimizer steps, and the discriminator runs with its weights as
//!    constants ([`Discriminator::forward_frozen`](crate::Discriminator::forward_frozen)).
//!    The seed GAN draws fresh latents for it; DCGAN reuses the batch just generated.
//!
//! Every random draw (latents, label jitter, instance noise, the conditions given to generated
//! images) comes from the stream of `(seed, step, name)`, so a resumed run repeats the
//! uninterrupted one exactly.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarMap};
use deeprecog_dataset::loader::Batch;
use deeprecog_nn::init::{init_tensor, seeded_var_builder};
use deeprecog_nn::loss::bce_with_logits;
use deeprecog_nn::optim::{AdamConfig, BoxedOptimizer, OptimizerConfig, RmsPropConfig};
use deeprecog_train::{Checkpointable, StepContext, StepOutput, TrainStep};
use serde::{Deserialize, Serialize};

use crate::models::{latents, signed_conditions, Arch, Discriminator, GanConfig, Generator};
use crate::{Error, Result};

/// Loss settings and optional stabilisers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GanLoss {
    /// One-sided label smoothing: real targets become `1 - label_smoothing` (Salimans et al.).
    pub label_smoothing: f32,
    /// Targets jittered towards the other class by `U(0, label_noise)` (the seed's 0.05).
    pub label_noise: f32,
    /// Instance noise: `N(0, s^2)` added to every discriminator input, `s` annealed linearly
    /// from this value to 0 over [`GanLoss::instance_noise_steps`].
    pub instance_noise: f32,
    /// Steps over which the instance noise decays to 0.
    pub instance_noise_steps: u64,
}

impl Default for GanLoss {
    fn default() -> Self {
        GanLoss {
            label_smoothing: 0.0,
            label_noise: 0.0,
            instance_noise: 0.0,
            instance_noise_steps: 1000,
        }
    }
}

/// How a GAN is optimised: losses and the two optimizers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanOptim {
    /// Loss settings.
    pub loss: GanLoss,
    /// The generator's optimizer.
    pub generator: OptimizerConfig,
    /// The discriminator's optimizer.
    pub discriminator: OptimizerConfig,
}

impl GanOptim {
    /// The recipe each architecture was published with: the seed's Keras RMSprop (D 8e-4,
    /// G 4e-4, label noise 0.05; Keras's `clipvalue` is not reproduced), DCGAN's Adam (2e-4,
    /// beta1 0.5) for both.
    pub fn recipe(arch: Arch) -> GanOptim {
        match arch {
            Arch::Seed => GanOptim {
                loss: GanLoss { label_noise: 0.05, ..Default::default() },
                generator: OptimizerConfig::RmsProp(RmsPropConfig {
                    lr: 4e-4,
                    ..RmsPropConfig::keras()
                }),
                discriminator: OptimizerConfig::RmsProp(RmsPropConfig {
                    lr: 8e-4,
                    ..RmsPropConfig::keras()
                }),
            },
            Arch::Dcgan => {
                let adam = OptimizerConfig::Adam(AdamConfig {
                    lr: 2e-4,
                    beta1: 0.5,
                    beta2: 0.999,
                    ..Default::default()
                });
                GanOptim { loss: GanLoss::default(), generator: adam, discriminator: adam }
            }
        }
    }
}

/// One iteration's numbers, as `iterations.json` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    /// The iteration, from 1.
    pub iteration: u64,
    /// The discriminator's loss.
    pub d_loss: f64,
    /// The generator's loss.
    pub g_loss: f64,
    /// Mean `D(x)` (probability) on the real batch, before the discriminator's update.
    pub d_real: f64,
    /// Mean `D(G(z))` on the generated batch, before the discriminator's update.
    pub d_fake: f64,
}

/// What [`GanStep::discriminator_step`] did, and the generated batch the generator's step
/// goes on with.
#[derive(Debug, Clone)]
pub struct DiscriminatorStep {
    /// The discriminator's loss.
    pub loss: f64,
    /// Mean `D(x)` on the real batch, before the update.
    pub real_probability: f64,
    /// Mean `D(G(z))` on the generated batch, before the update.
    pub fake_probability: f64,
    /// The generated batch (still attached to the generator's graph).
    pub fake: Tensor,
    /// The `{-1, +1}` conditions it was generated with (conditional models).
    pub conditions: Option<Tensor>,
}

/// Variables an optimizer may change: all but BatchNorm running statistics.
fn trainable(varmap: &VarMap) -> Result<Vec<candle_core::Var>> {
    let data = varmap.data().lock().map_err(|_| Error::Config("poisoned variable map".into()))?;
    let mut named: Vec<_> = data
        .iter()
        .filter(|(name, _)| !name.ends_with("running_mean") && !name.ends_with("running_var"))
        .collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    Ok(named.into_iter().map(|(_, v)| v.clone()).collect())
}

/// A GAN being trained: both networks, their variables and optimizers, and the iteration log.
pub struct GanStep {
    config: GanConfig,
    optim: GanOptim,
    g_vars: VarMap,
    d_vars: VarMap,
    generator: Generator,
    discriminator: Discriminator,
    g_opt: BoxedOptimizer,
    d_opt: BoxedOptimizer,
    trace: Vec<IterationRecord>,
    device: Device,
}

impl GanStep {
    /// Fresh networks (weights drawn from `seed`) and optimizers.
    ///
    /// # Errors
    /// An invalid configuration or optimizer.
    pub fn new(
        config: &GanConfig,
        optim: &GanOptim,
        seed: u64,
        device: &Device,
    ) -> Result<GanStep> {
        let g_vars = VarMap::new();
        let d_vars = VarMap::new();
        let generator =
            Generator::new(config, seeded_var_builder(&g_vars, seed, DType::F32, device))?;
        let discriminator = Discriminator::new(
            config,
            seed,
            seeded_var_builder(&d_vars, seed ^ 0xD15C, DType::F32, device),
        )?;
        let g_opt = optim.generator.build(trainable(&g_vars)?)?;
        let d_opt = optim.discriminator.build(trainable(&d_vars)?)?;
        Ok(GanStep {
            config: config.clone(),
            optim: optim.clone(),
            g_vars,
            d_vars,
            generator,
            discriminator,
            g_opt,
            d_opt,
            trace: Vec::new(),
            device: device.clone(),
        })
    }

    /// The network configuration.
    pub fn config(&self) -> &GanConfig {
        &self.config
    }

    /// The generator.
    pub fn generator(&self) -> &Generator {
        &self.generator
    }

    /// The discriminator.
    pub fn discriminator(&self) -> &Discriminator {
        &self.discriminator
    }

    /// The generator's variables (what an export saves).
    pub fn generator_vars(&self) -> &VarMap {
        &self.g_vars
    }

    /// The discriminator's variables.
    pub fn discriminator_vars(&self) -> &VarMap {
        &self.d_vars
    }

    /// Every iteration so far (restored on resume).
    pub fn trace(&self) -> &[IterationRecord] {
        &self.trace
    }

    /// The device the networks live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn noise_std(&self, step: u64) -> f64 {
        let l = &self.optim.loss;
        if l.instance_noise <= 0.0 || l.instance_noise_steps == 0 {
            return 0.0;
        }
        f64::from(l.instance_noise) * (1.0 - step as f64 / l.instance_noise_steps as f64).max(0.0)
    }

    fn with_noise(&self, x: &Tensor, ctx: &StepContext, name: &str) -> Result<Tensor> {
        let std = self.noise_std(ctx.step);
        if std == 0.0 {
            return Ok(x.clone());
        }
        let noise = init_tensor(
            Init::Randn { mean: 0.0, stdev: std },
            x.shape(),
            ctx.seed,
            &format!("instance_noise.{name}.{}", ctx.step),
            DType::F32,
            x.device(),
        )?;
        Ok((x + noise)?)
    }

    /// Targets for `n` samples of class `real`: smoothed and jittered as configured.
    fn targets(&self, n: usize, real: bool, ctx: &StepContext, name: &str) -> Result<Tensor> {
        let l = &self.optim.loss;
        let base = if real { 1.0 - f64::from(l.label_smoothing) } else { 0.0 };
        let t = Tensor::full(base as f32, n, &self.device)?;
        if l.label_noise <= 0.0 {
            return Ok(t);
        }
        let jitter = init_tensor(
            Init::Uniform { lo: 0.0, up: f64::from(l.label_noise) },
            &n.into(),
            ctx.seed,
            &format!("label_noise.{name}.{}", ctx.step),
            DType::F32,
            &self.device,
        )?;
        Ok(if real { (t - jitter)? } else { (t + jitter)? })
    }

    /// Conditions for generated images: the real batch's, in a seeded random order, so the
    /// generated side follows the data's attribute distribution.
    fn fake_conditions(&self, real: &Option<Tensor>, ctx: &StepContext) -> Result<Option<Tensor>> {
        let Some(y) = real else { return Ok(None) };
        let n = y.dim(0)?;
        let keys = init_tensor(
            Init::Uniform { lo: 0.0, up: 1.0 },
            &n.into(),
            ctx.seed,
            &format!("conditions.{}", ctx.step),
            DType::F32,
            &Device::Cpu,
        )?
        .to_vec1::<f32>()?;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by(|&a, &b| keys[a as usize].total_cmp(&keys[b as usize]));
        let index = Tensor::new(order.as_slice(), y.device())?;
        Ok(Some(y.index_select(&index, 0)?))
    }

    /// Images in `[-1, 1]` from a batch of `u8` images.
    pub fn real_images(&self, images: &Tensor) -> Result<Tensor> {
        Ok(images.to_device(&self.device)?.to_dtype(DType::F32)?.affine(1.0 / 127.5, -1.0)?)
    }

    /// One iteration on `real` images in `[-1, 1]` with their attribute targets (`{0, 1}`,
    /// `(N, K)`; ignored unless the model is conditional): [`GanStep::discriminator_step`] then
    /// [`GanStep::generator_step`].
    ///
    /// # Errors
    /// Shape errors, tensor errors.
    pub fn iterate(
        &mut self,
        real: &Tensor,
        targets: Option<&Tensor>,
        ctx: &StepContext,
    ) -> Result<IterationRecord> {
        let d = self.discriminator_step(real, targets, ctx)?;
        let g_loss = self.generator_step(&d, ctx)?;
        let record = IterationRecord {
            iteration: ctx.step + 1,
            d_loss: d.loss,
            g_loss,
            d_real: d.real_probability,
            d_fake: d.fake_probability,
        };
        self.trace.push(record);
        Ok(record)
    }

    /// The discriminator's update alone (the generator's variables are not touched).
    ///
    /// # Errors
    /// Shape errors, tensor errors.
    pub fn discriminator_step(
        &mut self,
        real: &Tensor,
        targets: Option<&Tensor>,
        ctx: &StepContext,
    ) -> Result<DiscriminatorStep> {
        let n = real.dim(0)?;
        let y_real = match (self.config.is_conditional(), targets) {
            (true, Some(t)) => Some(signed_conditions(&t.to_device(&self.device)?)?),
            (true, None) => {
                return Err(Error::Config("a conditional GAN needs attribute targets".into()))
            }
            (false, _) => None,
        };
        let y_fake = self.fake_conditions(&y_real, ctx)?;
        let z = latents(
            n,
            self.config.latent_dim,
            ctx.seed,
            &format!("latent.d.{}", ctx.step),
            &self.device,
        )?;
        let fake = self.generator.forward(&z, y_fake.as_ref(), true)?;
        let real_in = self.with_noise(real, ctx, "real")?;
        let fake_in = self.with_noise(&fake.detach(), ctx, "fake")?;
        let t_real = self.targets(n, true, ctx, "real")?;
        let t_fake = self.targets(n, false, ctx, "fake")?;
        let d = &self.discriminator;
        let (real_logits, fake_logits, loss) = match self.config.arch {
            Arch::Seed => {
                let both = Tensor::cat(&[&real_in, &fake_in], 0)?;
                let logits = d.forward(&both, None, true)?;
                let targets = Tensor::cat(&[&t_real, &t_fake], 0)?;
                let loss = bce_with_logits(&logits, &targets)?;
                (logits.narrow(0, 0, n)?, logits.narrow(0, n, n)?, loss)
            }
            Arch::Dcgan => {
                let rl = d.forward(&real_in, y_real.as_ref(), true)?;
                let fl = d.forward(&fake_in, y_fake.as_ref(), true)?;
                let loss = (bce_with_logits(&rl, &t_real)? + bce_with_logits(&fl, &t_fake)?)?;
                (rl, fl, loss)
            }
        };
        self.d_opt.backward_step(&loss)?;
        let mean_probability = |logits: &Tensor| -> Result<f64> {
            Ok(f64::from(candle_nn::ops::sigmoid(logits)?.mean_all()?.to_scalar::<f32>()?))
        };
        Ok(DiscriminatorStep {
            loss: f64::from(loss.to_scalar::<f32>()?),
            real_probability: mean_probability(&real_logits)?,
            fake_probability: mean_probability(&fake_logits)?,
            fake,
            conditions: y_fake,
        })
    }

    /// The generator's update alone, through the discriminator with all-real targets (the
    /// discriminator's variables are not touched, though its BatchNorm running statistics
    /// follow the batch as in PyTorch). DCGAN reuses `d.fake`; the seed GAN draws new latents.
    /// Returns the generator's loss.
    ///
    /// # Errors
    /// Shape errors, tensor errors.
    pub fn generator_step(&mut self, d: &DiscriminatorStep, ctx: &StepContext) -> Result<f64> {
        let n = d.fake.dim(0)?;
        let fake = match self.config.arch {
            Arch::Seed => {
                let name = format!("latent.g.{}", ctx.step);
                let z = latents(n, self.config.latent_dim, ctx.seed, &name, &self.device)?;
                self.generator.forward(&z, d.conditions.as_ref(), true)?
            }
            Arch::Dcgan => d.fake.clone(),
        };
        let fake_in = self.with_noise(&fake, ctx, "generator")?;
        // The discriminator's weight gradients would be computed and dropped here.
        let logits = self.discriminator.forward_frozen(&fake_in, d.conditions.as_ref(), true)?;
        let ones = Tensor::ones(n, DType::F32, &self.device)?;
        let loss = bce_with_logits(&logits, &ones)?;
        self.g_opt.backward_step(&loss)?;
        Ok(f64::from(loss.to_scalar::<f32>()?))
    }

    /// Generates from `latent` (and `{-1, +1}` conditions) in evaluation mode: BatchNorm's
    /// running statistics, no dropout, nothing updated.
    ///
    /// # Errors
    /// As [`Generator::forward`].
    pub fn generate(&self, latent: &Tensor, conditions: Option<&Tensor>) -> Result<Tensor> {
        self.generator.forward(latent, conditions, false)
    }
}

impl Checkpointable for GanStep {
    fn models(&self) -> Vec<(String, &VarMap)> {
        vec![("generator".into(), &self.g_vars), ("discriminator".into(), &self.d_vars)]
    }

    fn optimizers(&mut self) -> Vec<(String, &mut BoxedOptimizer)> {
        vec![("g_optimizer".into(), &mut self.g_opt), ("d_optimizer".into(), &mut self.d_opt)]
    }

    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "gan": self.config, "optim": self.optim })
    }

    fn state(&self) -> deeprecog_train::Result<serde_json::Value> {
        let d = self.discriminator.state().map_err(train_err)?;
        Ok(serde_json::json!({ "discriminator": d, "trace": self.trace }))
    }

    fn load_state(&mut self, state: &serde_json::Value) -> deeprecog_train::Result<()> {
        self.discriminator.load_state(&state["discriminator"]).map_err(train_err)?;
        self.trace = serde_json::from_value(state["trace"].clone())
            .map_err(|e| deeprecog_train::Error::InvalidConfig(format!("GAN trace: {e}")))?;
        Ok(())
    }
}

fn train_err(e: Error) -> deeprecog_train::Error {
    deeprecog_train::Error::Step(Box::new(e))
}

impl TrainStep<Batch> for GanStep {
    fn step(&mut self, batch: &Batch, ctx: &StepContext) -> deeprecog_train::Result<StepOutput> {
        let real = self.real_images(&batch.images).map_err(train_err)?;
        let targets = self.config.is_conditional().then_some(&batch.targets);
        let r = self.iterate(&real, targets, ctx).map_err(train_err)?;
        Ok(StepOutput::new(batch.len())
            .mean("d_loss", r.d_loss)
            .mean("g_loss", r.g_loss)
            .mean("d_real", r.d_real)
            .mean("d_fake", r.d_fake))
    }
}

impl TrainStep<Tensor> for GanStep {
    fn step(&mut self, batch: &Tensor, ctx: &StepContext) -> deeprecog_train::Result<StepOutput> {
        let r = self.iterate(batch, None, ctx).map_err(train_err)?;
        Ok(StepOutput::new(batch.dim(0)?)
            .mean("d_loss", r.d_loss)
            .mean("g_loss", r.g_loss)
            .mean("d_real", r.d_real)
            .mean("d_fake", r.d_fake))
    }
}
