//! Callbacks: what runs around the steps without being part of them. The engine calls
//! [`Callback::on_start`] once, [`Callback::on_step`] after every step, [`Callback::on_epoch`]
//! after every epoch (validation done, record in the history) and [`Callback::on_end`] once.
//!
//! | callback | does |
//! |---|---|
//! | [`BestCheckpoint`] | saves `best/` whenever the monitored metric improves |
//! | [`EarlyStopping`] | stops after `patience` epochs without improvement (Keras's rule) |
//! | [`CurvesPlot`] | redraws `curves.png` (accuracy and loss, train and validation) every epoch |
//! | [`Progress`] | an `indicatif` bar per epoch on a terminal, plain lines otherwise, and a closing line on skipped samples |
//! | [`Every`] | runs a closure every k steps or epochs (mosaics, FID, anything periodic) |

use std::io::IsTerminal;

use deeprecog_metrics::plot::learning_curves;
use deeprecog_nn::checkpoint::RunConfig;
use indicatif::{ProgressBar, ProgressStyle};

use crate::engine::{save_checkpoint, EngineConfig, Position, BEST_DIR};
use crate::history::{EpochRecord, History, Monitor};
use crate::step::{Checkpointable, StepContext, StepOutput};
use crate::Result;

/// Whether the run goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this step or epoch (the `last/` checkpoint is still saved).
    Stop,
}

/// One finished step, as callbacks see it.
#[derive(Debug, Clone, Copy)]
pub struct StepEvent<'a> {
    /// Where the step happened.
    pub context: StepContext,
    /// What it reported.
    pub output: &'a StepOutput,
    /// Batches per epoch.
    pub batches: usize,
}

/// What a callback can reach: the step (its models, to sample or save them), the history so far,
/// the engine's configuration and the position.
pub struct RunContext<'r, S: ?Sized> {
    /// The step being trained.
    pub step: &'r mut S,
    /// Every completed epoch so far.
    pub history: &'r History,
    /// The engine's configuration (`out_dir` is where callbacks write).
    pub config: &'r EngineConfig,
    /// Steps and epochs done.
    pub position: &'r Position,
}

impl<'r, S: ?Sized> RunContext<'r, S> {
    pub(crate) fn new(
        step: &'r mut S,
        history: &'r History,
        config: &'r EngineConfig,
        position: &'r Position,
    ) -> Self {
        RunContext { step, history, config, position }
    }
}

/// Something that runs around the steps; every method defaults to doing nothing.
pub trait Callback<S: ?Sized> {
    /// Once, before the first step (after a resume has restored the state).
    fn on_start(&mut self, _ctx: &mut RunContext<'_, S>) -> Result<()> {
        Ok(())
    }

    /// After every step.
    fn on_step(&mut self, _event: &StepEvent<'_>, _ctx: &mut RunContext<'_, S>) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// After every epoch; `record` is already the last entry of `ctx.history`.
    fn on_epoch(&mut self, _record: &EpochRecord, _ctx: &mut RunContext<'_, S>) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// Once, when the run ends (also after an early stop or a step limit).
    fn on_end(&mut self, _ctx: &mut RunContext<'_, S>) -> Result<()> {
        Ok(())
    }
}

/// Saves the models (no optimizer state) into `out_dir/best` whenever the epoch just finished
/// is the best by the engine's monitor.
#[derive(Debug, Clone, Default)]
pub struct BestCheckpoint;

impl<S: Checkpointable + ?Sized> Callback<S> for BestCheckpoint {
    fn on_epoch(&mut self, record: &EpochRecord, ctx: &mut RunContext<'_, S>) -> Result<Control> {
        if ctx.history.best_epoch == Some(record.epoch) {
            let run = RunConfig {
                seed: ctx.config.seed,
                epoch: record.epoch,
                step: ctx.position.step,
                model: ctx.step.config(),
                training: serde_json::to_value(ctx.config).unwrap_or_default(),
                metrics: serde_json::to_value(&record.metrics).unwrap_or_default(),
                ..Default::default()
            };
            save_checkpoint(&ctx.config.out_dir.join(BEST_DIR), ctx.step, &run, false)?;
        }
        Ok(Control::Continue)
    }
}

/// Stops when `monitor` has not improved for `patience` epochs (Keras's `EarlyStopping`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// The metric followed.
    pub monitor: Monitor,
}

impl EarlyStopping {
    /// Whether `patience` epochs have passed since the best one.
    pub fn should_stop(&self, records: &[EpochRecord]) -> bool {
        match (self.monitor.best_epoch(records), records.last()) {
            (Some(best), Some(last)) => last.epoch - best >= self.patience,
            _ => false,
        }
    }
}

impl<S: ?Sized> Callback<S> for EarlyStopping {
    fn on_epoch(&mut self, _record: &EpochRecord, ctx: &mut RunContext<'_, S>) -> Result<Control> {
        Ok(if self.should_stop(&ctx.history.epochs) { Control::Stop } else { Control::Continue })
    }
}

/// Redraws `out_dir/curves.png` (training and validation accuracy and loss) after every epoch.
#[derive(Debug, Clone)]
pub struct CurvesPlot {
    /// The series' name in the legend.
    pub name: String,
    /// The chart's title.
    pub title: String,
}

impl CurvesPlot {
    /// Curves named `name` under the title "learning curves".
    pub fn new(name: &str) -> CurvesPlot {
        CurvesPlot { name: name.to_string(), title: "learning curves".to_string() }
    }
}

impl<S: ?Sized> Callback<S> for CurvesPlot {
    fn on_epoch(&mut self, _record: &EpochRecord, ctx: &mut RunContext<'_, S>) -> Result<Control> {
        let curves = ctx.history.curves(&self.name);
        learning_curves(&ctx.config.out_dir.join("curves.png"), &curves, &self.title)?;
        Ok(Control::Continue)
    }
}

/// Progress: on a terminal, an `indicatif` bar per epoch with the running loss and throughput;
/// otherwise one plain line per epoch. Either way, one summary line per epoch and, at the end,
/// how many samples were skipped and where their list is.
#[derive(Debug)]
pub struct Progress {
    label: String,
    bar: Option<ProgressBar>,
    terminal: bool,
    started: std::time::Instant,
}

impl Progress {
    /// Progress on stderr, each line prefixed with `label` (e.g. the model's name).
    pub fn new(label: &str) -> Progress {
        Progress {
            label: label.to_string(),
            bar: None,
            terminal: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

fn fmt_metrics(record: &EpochRecord) -> String {
    record.metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

impl<S: ?Sized> Callback<S> for Progress {
    fn on_start(&mut self, ctx: &mut RunContext<'_, S>) -> Result<()> {
        self.started = std::time::Instant::now();
        if ctx.position.step > 0 {
            self.line(&format!(
                "{}: resuming after {} steps (epoch {}, batch {})",
                self.label,
                ctx.position.step,
                ctx.position.epoch + 1,
                ctx.position.batch
            ));
        }
        Ok(())
    }

    fn on_step(&mut self, event: &StepEvent<'_>, ctx: &mut RunContext<'_, S>) -> Result<Control> {
        if !self.terminal {
            return Ok(Control::Continue);
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(event.batches as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        });
        bar.set_prefix(format!(
            "{} epoch {}/{}",
            self.label,
            event.context.epoch + 1,
            ctx.config.epochs
        ));
        bar.set_position(event.context.batch as u64 + 1);
        if let Some(loss) = event.output.value("loss") {
            bar.set_message(format!("loss {loss:.4}"));
        }
        Ok(Control::Continue)
    }

    fn on_epoch(&mut self, record: &EpochRecord, ctx: &mut RunContext<'_, S>) -> Result<Control> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.line(&format!(
            "{} epoch {}/{}: {} | {:.0} img/s, {:.1} s",
            self.label,
            record.epoch,
            ctx.config.epochs,
            fmt_metrics(record),
            record.images_per_sec,
            record.seconds
        ));
        Ok(Control::Continue)
    }

    fn on_end(&mut self, ctx: &mut RunContext<'_, S>) -> Result<()> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let h = ctx.history;
        if h.skipped > 0 {
            let file = h.skipped_file.as_ref().map_or(String::new(), |p| p.display().to_string());
            self.line(&format!(
                "{}: {} samples were skipped (unreadable or bad); the list with each error is in {file}",
                self.label, h.skipped
            ));
        }
        if h.stopped_early {
            self.line(&format!("{}: stopped early after epoch {}", self.label, h.epochs.len()));
        }
        Ok(())
    }
}

type Periodic<'a, S> = Box<dyn FnMut(&mut RunContext<'_, S>) -> Result<()> + 'a>;

/// Runs a closure every `k` steps or every `k` epochs: sample mosaics, FID, exports.
pub struct Every<'a, S: ?Sized> {
    steps: Option<u64>,
    epochs: Option<usize>,
    action: Periodic<'a, S>,
}

impl<'a, S: ?Sized> Every<'a, S> {
    /// Runs `action` after every `k`-th step of the run (k >= 1).
    pub fn steps(k: u64, action: impl FnMut(&mut RunContext<'_, S>) -> Result<()> + 'a) -> Self {
        Every { steps: Some(k.max(1)), epochs: None, action: Box::new(action) }
    }

    /// Runs `action` after every `k`-th epoch (k >= 1).
    pub fn epochs(k: usize, action: impl FnMut(&mut RunContext<'_, S>) -> Result<()> + 'a) -> Self {
        Every { steps: None, epochs: Some(k.max(1)), action: Box::new(action) }
    }
}

impl<S: ?Sized> Callback<S> for Every<'_, S> {
    fn on_step(&mut self, _event: &StepEvent<'_>, ctx: &mut RunContext<'_, S>) -> Result<Control> {
        if self.steps.is_some_and(|k| ctx.position.step.is_multiple_of(k)) {
            (self.action)(ctx)?;
        }
        Ok(Control::Continue)
    }

    fn on_epoch(&mut self, record: &EpochRecord, ctx: &mut RunContext<'_, S>) -> Result<Control> {
        if self.epochs.is_some_and(|k| record.epoch.is_multiple_of(k)) {
            (self.action)(ctx)?;
        }
        Ok(Control::Continue)
    }
}
