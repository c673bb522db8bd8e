//! The training loop: epochs of steps, validation, the learning-rate schedule, the `last/`
//! checkpoint with exact resume, `history.json`, the list of skipped samples, and callbacks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use deeprecog_nn::checkpoint::{self, RunConfig};
use deeprecog_nn::optim::OptimizerState;
use deeprecog_nn::schedule::{PlateauConfig, PlateauMode, ReduceOnPlateau, Schedule};
use serde::{Deserialize, Serialize};

use crate::callbacks::{Callback, Control, RunContext, StepEvent};
use crate::history::{EpochRecord, Goal, History, Monitor};
use crate::source::{BatchSource, SkippedSample};
use crate::step::{Checkpointable, StepContext, StepOutput, TrainStep, ValidStep};
use crate::{Error, Result};

/// Name of the history file in the output folder.
pub const HISTORY_FILE: &str = "history.json";
/// Name of the skipped-samples list in the output folder (written when a sample is skipped).
pub const SKIPPED_FILE: &str = "skipped.json";
/// The checkpoint folder of the latest state, inside the output folder.
pub const LAST_DIR: &str = "last";
/// The checkpoint folder of the best epoch (see [`crate::callbacks::BestCheckpoint`]).
pub const BEST_DIR: &str = "best";

/// Everything the loop needs besides the step and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Epochs to train, in total (counting those done before a resume).
    pub epochs: usize,
    /// Stop after this many steps in total (GAN "iterations"); the `last/` checkpoint is saved
    /// there, so a later run with a larger limit continues exactly.
    pub max_steps: Option<u64>,
    /// The run's seed (handed to every step; recorded in checkpoints).
    pub seed: u64,
    /// Where `last/`, `history.json` and `skipped.json` go (callbacks add their own files).
    pub out_dir: PathBuf,
    /// Learning-rate schedule over epochs, relative to each optimizer's configured rate.
    pub schedule: Option<Schedule>,
    /// The metric that defines the best epoch (and drives a plateau schedule).
    pub monitor: Monitor,
    /// Save `last/` after every epoch (else only when the run ends or stops).
    pub checkpoint_every_epoch: bool,
    /// Also save `last/` every this many steps, inside epochs.
    pub checkpoint_every_steps: Option<u64>,
    /// Continue from `out_dir/last` when it holds a checkpoint.
    pub resume: bool,
}

impl Default for EngineConfig {
    /// 10 epochs, seed 0, `runs/train`, no schedule, best by `val_loss`, `last/` every epoch,
    /// resume on.
    fn default() -> Self {
        EngineConfig {
            epochs: 10,
            max_steps: None,
            seed: 0,
            out_dir: PathBuf::from("runs/train"),
            schedule: None,
            monitor: Monitor::min("val_loss"),
            checkpoint_every_epoch: true,
            checkpoint_every_steps: None,
            resume: true,
        }
    }
}

/// Running sums of the epoch in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Accumulator {
    sums: BTreeMap<String, (f64, f64)>,
    samples: usize,
    train_seconds: f64,
}

impl Accumulator {
    fn add(&mut self, out: &StepOutput) {
        self.samples += out.samples;
        for (name, &(s, w)) in &out.metrics {
            let e = self.sums.entry(name.clone()).or_insert((0.0, 0.0));
            e.0 += s;
            e.1 += w;
        }
    }
}

/// Where the run stands; saved in every `last/` checkpoint so a resume continues exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The epoch in progress (or next), from 0.
    pub epoch: usize,
    /// Batches of that epoch already done.
    pub batch: usize,
    /// Steps done in the whole run.
    pub step: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct EngineState {
    position: Position,
    accumulator: Accumulator,
    history: History,
    skipped: Vec<SkippedSample>,
    plateau: Option<ReduceOnPlateau>,
}

/// The training engine; see the [crate docs](crate).
pub struct Engine<'a, S> {
    config: EngineConfig,
    device: Device,
    callbacks: Vec<Box<dyn Callback<S> + 'a>>,
}

impl<'a, S: Checkpointable> Engine<'a, S> {
    /// An engine on the CPU with no callbacks.
    pub fn new(config: EngineConfig) -> Self {
        Engine { config, device: Device::Cpu, callbacks: Vec::new() }
    }

    /// Checkpoints are loaded onto `device` (where the step's variables live).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Adds a callback; callbacks run in the order they were added.
    pub fn callback(mut self, callback: impl Callback<S> + 'a) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The `last/` checkpoint folder.
    pub fn last_dir(&self) -> PathBuf {
        self.config.out_dir.join(LAST_DIR)
    }

    /// Trains `step` on `train` with no validation (a GAN, or a run that follows training
    /// metrics only).
    ///
    /// # Errors
    /// Step, source, checkpoint and I/O errors; [`Error::NonFinite`] when a step's metric is NaN
    /// or infinite (earlier checkpoints are kept).
    pub fn fit<B, T>(&mut self, step: &mut S, train: &T) -> Result<History>
    where
        S: TrainStep<B>,
        T: BatchSource<B> + ?Sized,
    {
        self.run(step, train, None::<&mut dyn FnMut(&mut S) -> Result<Validation>>)
    }

    /// Trains `step` on `train` and validates it on `valid` after every epoch; validation
    /// metrics are recorded as `val_{name}`.
    ///
    /// # Errors
    /// As [`Engine::fit`], and the validation step's errors.
    pub fn fit_validated<B, VB, T, V>(
        &mut self,
        step: &mut S,
        train: &T,
        valid: &V,
    ) -> Result<History>
    where
        S: TrainStep<B> + ValidStep<VB>,
        T: BatchSource<B> + ?Sized,
        V: BatchSource<VB> + ?Sized,
    {
        let mut validate = |step: &mut S| -> Result<Validation> { validate(step, valid) };
        self.run(step, train, Some(&mut validate))
    }

    fn run<B, T, F>(
        &mut self,
        step: &mut S,
        train: &T,
        mut validate: Option<&mut F>,
    ) -> Result<History>
    where
        S: TrainStep<B>,
        T: BatchSource<B> + ?Sized,
        F: FnMut(&mut S) -> Result<Validation> + ?Sized,
    {
        let cfg = self.config.clone();
        let out = cfg.out_dir.clone();
        std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
        if step.optimizers().is_empty() {
            return Err(Error::InvalidConfig("the step has no optimizer".into()));
        }
        // Schedules are relative to the rates the optimizers were built with.
        let bases: Vec<f64> = step.optimizers().iter().map(|(_, o)| o.learning_rate()).collect();
        let mut st = EngineState::default();
        if cfg.resume && checkpoint::exists(self.last_dir()) {
            st = self.restore(step)?;
            st.history.resumed_from_step = Some(st.position.step);
        }
        if st.plateau.is_none() {
            if let Some(Schedule::Plateau(p)) = &cfg.schedule {
                let mode = match cfg.monitor.goal {
                    Goal::Min => PlateauMode::Min,
                    Goal::Max => PlateauMode::Max,
                };
                st.plateau = Some(ReduceOnPlateau::new(1.0, PlateauConfig { mode, ..*p }));
            }
        }
        let mut callbacks = std::mem::take(&mut self.callbacks);
        let result = self.epochs(step, train, &mut validate, &mut callbacks, &bases, &mut st);
        self.callbacks = callbacks;
        result?;
        let mut callbacks = std::mem::take(&mut self.callbacks);
        for cb in callbacks.iter_mut() {
            let mut ctx = RunContext::new(step, &st.history, &cfg, &st.position);
            cb.on_end(&mut ctx)?;
        }
        self.callbacks = callbacks;
        st.history.save(&out.join(HISTORY_FILE))?;
        Ok(st.history)
    }

    #[allow(clippy::too_many_arguments)]
    fn epochs<B, T, F>(
        &self,
        step: &mut S,
        train: &T,
        validate: &mut Option<&mut F>,
        callbacks: &mut [Box<dyn Callback<S> + 'a>],
        bases: &[f64],
        st: &mut EngineState,
    ) -> Result<()>
    where
        S: TrainStep<B>,
        T: BatchSource<B> + ?Sized,
        F: FnMut(&mut S) -> Result<Validation> + ?Sized,
    {
        let cfg = &self.config;
        for cb in callbacks.iter_mut() {
            cb.on_start(&mut RunContext::new(step, &st.history, cfg, &st.position))?;
        }
        let batches = train.num_batches();
        while st.position.epoch < cfg.epochs {
            if cfg.max_steps.is_some_and(|m| st.position.step >= m) {
                break;
            }
            let epoch = st.position.epoch;
            let factor = st.plateau.as_ref().map_or(1.0, |p| p.current_lr());
            let mut lrs = Vec::with_capacity(bases.len());
            for ((_, opt), &base) in step.optimizers().into_iter().zip(bases) {
                let lr = cfg.schedule.as_ref().map_or(base, |s| s.lr(base, epoch)) * factor;
                opt.set_learning_rate(lr);
                lrs.push(lr);
            }
            let started = Instant::now();
            let mut stop = false;
            let mut interrupted = false;
            let mut iter = train.epoch(epoch)?;
            for (i, batch) in iter.by_ref().enumerate() {
                let batch = batch?;
                // Fast-forward over the batches a resumed epoch has already done: the order
                // depends only on the seed and the epoch.
                if i < st.position.batch {
                    continue;
                }
                let ctx = StepContext { epoch, batch: i, step: st.position.step, seed: cfg.seed };
                let output = step.step(&batch, &ctx)?;
                if let Some((metric, &(s, w))) =
                    output.metrics.iter().find(|(_, (s, w))| !(s / w).is_finite() && *w != 0.0)
                {
                    return Err(Error::NonFinite {
                        epoch: epoch + 1,
                        batch: i,
                        metric: metric.clone(),
                        value: s / w,
                        ids: train.ids(&batch),
                    });
                }
                st.accumulator.add(&output);
                st.position.batch = i + 1;
                st.position.step += 1;
                let event = StepEvent { context: ctx, output: &output, batches };
                for cb in callbacks.iter_mut() {
                    let mut rc = RunContext::new(step, &st.history, cfg, &st.position);
                    if cb.on_step(&event, &mut rc)? == Control::Stop {
                        stop = true;
                    }
                }
                if cfg
                    .checkpoint_every_steps
                    .is_some_and(|k| k > 0 && st.position.step.is_multiple_of(k))
                {
                    // The epoch's time so far is not in this snapshot's accumulator: a run
                    // resumed from it under-reports that epoch's seconds, nothing else.
                    self.save_last(step, st)?;
                }
                if cfg.max_steps.is_some_and(|m| st.position.step >= m)
                    && st.position.batch < batches
                {
                    interrupted = true;
                    break;
                }
                if stop {
                    break;
                }
            }
            st.accumulator.train_seconds += started.elapsed().as_secs_f64();
            if interrupted || (stop && st.position.batch < batches) {
                // Part of an epoch: saved so that a later run continues inside it.
                self.save_last(step, st)?;
                break;
            }
            let skipped_train = iter.skipped();
            drop(iter);
            let acc = std::mem::take(&mut st.accumulator);
            if acc.samples == 0 {
                return Err(Error::EmptySource { split: "train".into(), epoch: epoch + 1 });
            }
            let mut metrics: BTreeMap<String, f64> = acc
                .sums
                .iter()
                .map(|(k, &(s, w))| (format!("train_{k}"), s / w))
                .filter(|(_, v)| v.is_finite())
                .collect();
            let mut skipped_valid = Vec::new();
            let valid_started = Instant::now();
            if let Some(validate) = validate.as_mut() {
                let v = validate(step)?;
                metrics.extend(
                    v.metrics
                        .into_iter()
                        .filter(|(_, x)| x.is_finite())
                        .map(|(k, x)| (format!("val_{k}"), x)),
                );
                skipped_valid = v.skipped;
            }
            let record = EpochRecord {
                epoch: epoch + 1,
                lr: lrs.first().copied().unwrap_or(0.0),
                metrics,
                samples: acc.samples,
                images_per_sec: acc.samples as f64 / acc.train_seconds.max(1e-9),
                seconds: acc.train_seconds + valid_started.elapsed().as_secs_f64(),
                skipped_train: skipped_train.len(),
                skipped_valid: skipped_valid.len(),
            };
            self.note_skipped(st, epoch + 1, "train", skipped_train)?;
            self.note_skipped(st, epoch + 1, "valid", skipped_valid)?;
            if let (Some(p), Some(v)) = (st.plateau.as_mut(), cfg.monitor.value(&record)) {
                p.observe(v);
            }
            st.history.epochs.push(record.clone());
            st.history.best_epoch = cfg.monitor.best_epoch(&st.history.epochs);
            st.position.epoch += 1;
            st.position.batch = 0;
            for cb in callbacks.iter_mut() {
                let mut rc = RunContext::new(step, &st.history, cfg, &st.position);
                if cb.on_epoch(&record, &mut rc)? == Control::Stop {
                    stop = true;
                }
            }
            let finished = st.position.epoch == cfg.epochs
                || cfg.max_steps.is_some_and(|m| st.position.step >= m);
            if stop && !finished {
                st.history.stopped_early = true;
            }
            if cfg.checkpoint_every_epoch || finished || stop {
                self.save_last(step, st)?;
            }
            st.history.save(&cfg.out_dir.join(HISTORY_FILE))?;
            if stop {
                break;
            }
        }
        Ok(())
    }

    fn note_skipped(
        &self,
        st: &mut EngineState,
        epoch: usize,
        split: &str,
        skipped: Vec<deeprecog_dataset::loader::SkippedSample>,
    ) -> Result<()> {
        if skipped.is_empty() {
            return Ok(());
        }
        st.history.skipped += skipped.len();
        st.skipped.extend(skipped.into_iter().map(|s| SkippedSample {
            epoch,
            split: split.to_string(),
            index: s.index,
            id: s.id,
            path: s.path,
            error: s.error,
        }));
        let path = self.config.out_dir.join(SKIPPED_FILE);
        crate::write_json(&path, &st.skipped)?;
        st.history.skipped_file = Some(path);
        Ok(())
    }

    fn save_last(&self, step: &mut S, st: &EngineState) -> Result<()> {
        let state = serde_json::json!({
            "engine": serde_json::to_value(st).map_err(|e| Error::InvalidConfig(e.to_string()))?,
            "step": step.state()?,
        });
        let run = RunConfig {
            seed: self.config.seed,
            epoch: st.position.epoch,
            step: st.position.step,
            model: step.config(),
            training: serde_json::to_value(&self.config)
                .map_err(|e| Error::InvalidConfig(e.to_string()))?,
            metrics: st.history.last().map_or(serde_json::Value::Null, |r| {
                serde_json::to_value(&r.metrics).unwrap_or(serde_json::Value::Null)
            }),
            state,
            ..Default::default()
        };
        save_checkpoint(&self.last_dir(), step, &run, true)
    }

    fn restore(&self, step: &mut S) -> Result<EngineState> {
        let dir = self.last_dir();
        let loaded = {
            let models = step.models();
            let parts: Vec<(&str, &candle_nn::VarMap)> =
                models.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            checkpoint::load_parts(&dir, &parts, &self.device)?
        };
        let mut states = loaded.optimizers;
        for (name, opt) in step.optimizers() {
            let state: OptimizerState = states.remove(&name).ok_or_else(|| Error::Checkpoint {
                path: dir.clone(),
                reason: format!("no optimizer part `{name}`"),
            })?;
            opt.load_state(state)?;
        }
        let state = &loaded.run.state;
        step.load_state(&state["step"])?;
        serde_json::from_value(state["engine"].clone())
            .map_err(|e| Error::Checkpoint { path: dir, reason: format!("engine state: {e}") })
    }
}

/// Saves the step's models (and, with `optimizers`, its optimizer states) with `run` into
/// `dir`, atomically.
///
/// # Errors
/// Checkpoint errors naming the file.
pub fn save_checkpoint<S: Checkpointable + ?Sized>(
    dir: &Path,
    step: &mut S,
    run: &RunConfig,
    optimizers: bool,
) -> Result<()> {
    let states: Vec<(String, OptimizerState)> = if optimizers {
        step.optimizers().into_iter().map(|(n, o)| Ok((n, o.state()?))).collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let models = step.models();
    let parts: Vec<(&str, &candle_nn::VarMap)> =
        models.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let opts: Vec<(&str, &OptimizerState)> = states.iter().map(|(n, s)| (n.as_str(), s)).collect();
    checkpoint::save_parts(dir, &parts, &opts, run)?;
    Ok(())
}

/// What a validation pass gives the engine.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// Metrics by name (without the `val_` prefix).
    pub metrics: BTreeMap<String, f64>,
    /// Samples skipped.
    pub skipped: Vec<deeprecog_dataset::loader::SkippedSample>,
}

fn validate<S, VB, V>(step: &mut S, valid: &V) -> Result<Validation>
where
    S: ValidStep<VB>,
    V: BatchSource<VB> + ?Sized,
{
    let mut outputs = Vec::with_capacity(valid.num_batches());
    let mut iter = valid.epoch(0)?;
    for batch in iter.by_ref() {
        outputs.push(step.valid_step(&batch?)?);
    }
    let skipped = iter.skipped();
    drop(iter);
    let metrics = step.valid_metrics(outputs)?;
    Ok(Validation { metrics, skipped })
}
