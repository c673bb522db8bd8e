//! Learning-rate schedules with `torch.optim.lr_scheduler` semantics.
//!
//! A schedule maps an epoch (or step) index, counted from 0, to a learning rate: the value PyTorch's
//! scheduler holds after `index` calls to `scheduler.step()`. Apply it with
//! `optimizer.set_learning_rate(schedule.lr(epoch))` before the epoch's steps.
//! [`ReduceOnPlateau`] is driven by metrics instead, through [`ReduceOnPlateau::observe`].
//!
//! ```
//! use deeprecog_nn::schedule::{CosineAnnealingLr, LrSchedule, Warmup};
//!
//! // 5 epochs of linear warmup from 0.1 * 1e-3, then a cosine over 45 epochs down to 1e-5.
//! let sched = Warmup::new(CosineAnnealingLr::new(1e-3, 45, 1e-5), 5, 0.1);
//! assert!((sched.lr(0) - 1e-4).abs() < 1e-12);
//! assert!((sched.lr(5) - 1e-3).abs() < 1e-12);
//! assert!((sched.lr(50) - 1e-5).abs() < 1e-12);
//! ```

use serde::{Deserialize, Serialize};

/// A learning rate as a function of the epoch (or step) index.
pub trait LrSchedule {
    /// The learning rate for epoch (or step) `index`, counted from 0.
    fn lr(&self, index: usize) -> f64;
}

fn powi(gamma: f64, n: usize) -> f64 {
    // i32 saturates far beyond any realistic epoch count.
    gamma.powi(i32::try_from(n).unwrap_or(i32::MAX))
}

/// `StepLR`: `base_lr * gamma^(index / step_size)` (integer division).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepLr {
    /// The learning rate at index 0.
    pub base_lr: f64,
    /// Decay every this many indices; 0 is treated as 1.
    pub step_size: usize,
    /// Multiplicative factor (PyTorch: 0.1).
    pub gamma: f64,
}

impl StepLr {
    /// A step schedule.
    pub fn new(base_lr: f64, step_size: usize, gamma: f64) -> Self {
        Self { base_lr, step_size, gamma }
    }
}

impl LrSchedule for StepLr {
    fn lr(&self, index: usize) -> f64 {
        self.base_lr * powi(self.gamma, index / self.step_size.max(1))
    }
}

/// `MultiStepLR`: `base_lr * gamma^k` where `k` is the number of milestones `<= index` (a repeated
/// milestone counts as often as it appears, as with PyTorch's `Counter`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiStepLr {
    /// The learning rate at index 0.
    pub base_lr: f64,
    /// Indices at which the rate is multiplied by `gamma`, in any order.
    pub milestones: Vec<usize>,
    /// Multiplicative factor (PyTorch: 0.1).
    pub gamma: f64,
}

impl MultiStepLr {
    /// A multi-step schedule.
    pub fn new(base_lr: f64, milestones: Vec<usize>, gamma: f64) -> Self {
        Self { base_lr, milestones, gamma }
    }
}

impl LrSchedule for MultiStepLr {
    fn lr(&self, index: usize) -> f64 {
        let k = self.milestones.iter().filter(|&&m| m <= index).count();
        self.base_lr * powi(self.gamma, k)
    }
}

/// `ExponentialLR`: `base_lr * gamma^index`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ExponentialLr {
    /// The learning rate at index 0.
    pub base_lr: f64,
    /// Multiplicative factor per index.
    pub gamma: f64,
}

impl ExponentialLr {
    /// An exponential schedule.
    pub fn new(base_lr: f64, gamma: f64) -> Self {
        Self { base_lr, gamma }
    }
}

impl LrSchedule for ExponentialLr {
    fn lr(&self, index: usize) -> f64 {
        self.base_lr * powi(self.gamma, index)
    }
}

/// `CosineAnnealingLR` in PyTorch's closed form:
/// `eta_min + (base_lr - eta_min) * (1 + cos(pi * index / t_max)) / 2`.
///
/// Past `t_max` the rate rises again (the cosine is periodic), as PyTorch's does; there is no
/// warm restart.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CosineAnnealingLr {
    /// The learning rate at index 0.
    pub base_lr: f64,
    /// Half period, in indices; 0 is treated as 1.
    pub t_max: usize,
    /// The learning rate at `t_max` (PyTorch: 0).
    pub eta_min: f64,
}

impl CosineAnnealingLr {
    /// A cosine schedule.
    pub fn new(base_lr: f64, t_max: usize, eta_min: f64) -> Self {
        Self { base_lr, t_max, eta_min }
    }
}

impl LrSchedule for CosineAnnealingLr {
    fn lr(&self, index: usize) -> f64 {
        let x = std::f64::consts::PI * index as f64 / self.t_max.max(1) as f64;
        self.eta_min + (self.base_lr - self.eta_min) * (1.0 + x.cos()) / 2.0
    }
}

/// Linear warmup in front of another schedule: for `index < warmup`,
/// `inner.lr(0) * (start_factor + (1 - start_factor) * index / warmup)`; afterwards
/// `inner.lr(index - warmup)`, so the inner schedule starts where the warmup ends.
///
/// This is PyTorch's `SequentialLR([LinearLR(start_factor, 1.0, total_iters=warmup), inner],
/// milestones=[warmup])`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warmup<S> {
    /// The schedule that follows the warmup.
    pub inner: S,
    /// Length of the warmup, in indices (0: no warmup).
    pub warmup: usize,
    /// Fraction of `inner.lr(0)` at index 0.
    pub start_factor: f64,
}

impl<S: LrSchedule> Warmup<S> {
    /// `warmup` indices of linear warmup from `start_factor * inner.lr(0)`, then `inner`.
    pub fn new(inner: S, warmup: usize, start_factor: f64) -> Self {
        Self { inner, warmup, start_factor }
    }
}

impl<S: LrSchedule> LrSchedule for Warmup<S> {
    fn lr(&self, index: usize) -> f64 {
        if index < self.warmup {
            let frac = index as f64 / self.warmup as f64;
            self.inner.lr(0) * (self.start_factor + (1.0 - self.start_factor) * frac)
        } else {
            self.inner.lr(index - self.warmup)
        }
    }
}

/// Whether a smaller or a larger metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// How `threshold` defines a significant improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdMode {
    /// Better than `best * (1 -/+ threshold)`.
    Rel,
    /// Better than `best -/+ threshold`.
    Abs,
}

/// Configuration of [`ReduceOnPlateau`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlateauConfig {
    /// Min or max (PyTorch: min).
    pub mode: PlateauMode,
    /// The rate is multiplied by this on a plateau (PyTorch: 0.1).
    pub factor: f64,
    /// Observations without improvement tolerated before a reduction (PyTorch: 10).
    pub patience: usize,
    /// Significance of an improvement (PyTorch: 1e-4).
    pub threshold: f64,
    /// Relative or absolute threshold (PyTorch: rel).
    pub threshold_mode: ThresholdMode,
    /// Observations to wait after a reduction before counting bad ones again (PyTorch: 0).
    pub cooldown: usize,
    /// Lower bound on the rate (PyTorch: 0).
    pub min_lr: f64,
    /// Reductions smaller than this are skipped (PyTorch: 1e-8).
    pub eps: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// `ReduceLROnPlateau`: lowers the rate when a metric stops improving.
///
/// Each [`observe`](ReduceOnPlateau::observe) counts the metric as an improvement or a bad
/// epoch; during cooldown bad epochs are not counted; once there are more than `patience` bad
/// epochs the rate becomes `max(lr * factor, min_lr)` (unless that changes it by no more than
/// `eps`) and the cooldown starts. A NaN metric is never an improvement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceOnPlateau {
    config: PlateauConfig,
    lr: f64,
    best: f64,
    num_bad_epochs: usize,
    cooldown_counter: usize,
}

impl ReduceOnPlateau {
    /// A plateau scheduler starting at `initial_lr`.
    pub fn new(initial_lr: f64, config: PlateauConfig) -> Self {
        Self {
            config,
            lr: initial_lr,
            best: match config.mode {
                PlateauMode::Min => f64::INFINITY,
                PlateauMode::Max => f64::NEG_INFINITY,
            },
            num_bad_epochs: 0,
            cooldown_counter: 0,
        }
    }

    fn is_better(&self, a: f64) -> bool {
        let c = &self.config;
        match (c.mode, c.threshold_mode) {
            (PlateauMode::Min, ThresholdMode::Rel) => a < self.best * (1.0 - c.threshold),
            (PlateauMode::Min, ThresholdMode::Abs) => a < self.best - c.threshold,
            (PlateauMode::Max, ThresholdMode::Rel) => a > self.best * (1.0 + c.threshold),
            (PlateauMode::Max, ThresholdMode::Abs) => a > self.best + c.threshold,
        }
    }

    /// Records one epoch's metric and returns the learning rate to use from now on.
    pub fn observe(&mut self, metric: f64) -> f64 {
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.config.patience {
            let new_lr = (self.lr * self.config.factor).max(self.config.min_lr);
            if self.lr - new_lr > self.config.eps {
                self.lr = new_lr;
            }
            self.cooldown_counter = self.config.cooldown;
            self.num_bad_epochs = 0;
        }
        self.lr
    }

    /// The current learning rate.
    pub fn current_lr(&self) -> f64 {
        self.lr
    }

    /// The best metric seen so far (±infinity before the first observation).
    pub fn best(&self) -> f64 {
        self.best
    }
}

impl LrSchedule for ReduceOnPlateau {
    /// The current rate, whatever the index: this schedule moves only through `observe`.
    fn lr(&self, _index: usize) -> f64 {
        self.lr
    }
}

/// A schedule chosen by data (serde, tagged by `kind`), relative to a base learning rate given
/// when it is evaluated: what a run file records and a training loop applies per epoch or step.
///
/// ```
/// use deeprecog_nn::schedule::Schedule;
///
/// let s: Schedule = serde_json::from_str(
///     r#"{"kind": "warmup", "warmup": 2, "start_factor": 0.5, "then": {"kind": "step", "step_size": 3, "gamma": 0.1}}"#,
/// ).unwrap();
/// assert_eq!(s.lr(1e-3, 0), 5e-4);
/// assert_eq!(s.lr(1e-3, 2), 1e-3);
/// assert!((s.lr(1e-3, 5) - 1e-4).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// [`StepLr`].
    Step {
        /// Indices between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// [`MultiStepLr`].
    MultiStep {
        /// Indices at which the rate is multiplied by `gamma`.
        milestones: Vec<usize>,
        /// Decay factor.
        gamma: f64,
    },
    /// [`ExponentialLr`].
    Exponential {
        /// Decay factor per index.
        gamma: f64,
    },
    /// [`CosineAnnealingLr`].
    Cosine {
        /// Half period, in indices.
        t_max: usize,
        /// Final learning rate.
        eta_min: f64,
    },
    /// [`Warmup`] in front of another schedule.
    Warmup {
        /// Length of the warmup, in indices.
        warmup: usize,
        /// Fraction of the rate at index 0.
        start_factor: f64,
        /// The schedule after the warmup.
        then: Box<Schedule>,
    },
    /// [`ReduceOnPlateau`]: driven by a monitored metric rather than the index, so [`Schedule::lr`]
    /// gives the base rate and the training loop feeds [`ReduceOnPlateau::observe`].
    Plateau(PlateauConfig),
}

impl Schedule {
    /// The learning rate at `index` (from 0) for base rate `base`.
    pub fn lr(&self, base: f64, index: usize) -> f64 {
        match self {
            Schedule::Constant | Schedule::Plateau(_) => base,
            Schedule::Step { step_size, gamma } => StepLr::new(base, *step_size, *gamma).lr(index),
            Schedule::MultiStep { milestones, gamma } => {
                MultiStepLr::new(base, milestones.clone(), *gamma).lr(index)
            }
            Schedule::Exponential { gamma } => ExponentialLr::new(base, *gamma).lr(index),
            Schedule::Cosine { t_max, eta_min } => {
                CosineAnnealingLr::new(base, *t_max, *eta_min).lr(index)
            }
            Schedule::Warmup { warmup, start_factor, then } => {
                if index < *warmup {
                    let frac = index as f64 / *warmup as f64;
                    then.lr(base, 0) * (start_factor + (1.0 - start_factor) * frac)
                } else {
                    then.lr(base, index - warmup)
                }
            }
        }
    }
}

#[cfg(test)]
mod schedule_enum_tests {
    use super::*;

    #[test]
    fn the_enum_agrees_with_the_schedule_types() {
        let cases: Vec<(Schedule, Box<dyn LrSchedule>)> = vec![
            (Schedule::Step { step_size: 3, gamma: 0.5 }, Box::new(StepLr::new(0.1, 3, 0.5))),
            (
                Schedule::MultiStep { milestones: vec![2, 5], gamma: 0.1 },
                Box::new(MultiStepLr::new(0.1, vec![2, 5], 0.1)),
            ),
            (Schedule::Exponential { gamma: 0.9 }, Box::new(ExponentialLr::new(0.1, 0.9))),
            (
                Schedule::Cosine { t_max: 7, eta_min: 1e-3 },
                Box::new(CosineAnnealingLr::new(0.1, 7, 1e-3)),
            ),
            (
                Schedule::Warmup {
                    warmup: 3,
                    start_factor: 0.1,
                    then: Box::new(Schedule::Cosine { t_max: 7, eta_min: 1e-3 }),
                },
                Box::new(Warmup::new(CosineAnnealingLr::new(0.1, 7, 1e-3), 3, 0.1)),
            ),
        ];
        for (s, reference) in cases {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
            for i in 0..12 {
                assert_eq!(s.lr(0.1, i).to_bits(), reference.lr(i).to_bits(), "{json} at {i}");
            }
        }
        assert_eq!(Schedule::Plateau(PlateauConfig::default()).lr(0.1, 9), 0.1);
    }
}
