//! What one training or validation step is: the traits a model family implements to be trained
//! by the [`crate::Engine`].

use std::collections::BTreeMap;

use candle_nn::VarMap;
use deeprecog_nn::optim::BoxedOptimizer;

use crate::Result;

/// Where a step happens in the run, handed to [`TrainStep::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepContext {
    /// The epoch, from 0.
    pub epoch: usize,
    /// The batch's index within the epoch, from 0.
    pub batch: usize,
    /// Steps completed in the whole run before this one (the step's own index, from 0). A step
    /// that needs randomness (GAN noise, augmentation on device) should derive it from
    /// `(seed, step)`: a counter-based stream needs no state to resume exactly.
    pub step: u64,
    /// The run's seed.
    pub seed: u64,
}

/// What one step reports: the samples it consumed and named running means.
///
/// Each metric is a `(sum, weight)` pair; the epoch's value is the sum of sums over the sum of
/// weights, so a per-sample mean and a ratio such as "correct labels / labels" both aggregate
/// exactly, whatever the batch sizes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepOutput {
    /// Samples consumed by the step.
    pub samples: usize,
    /// Metric name to `(sum, weight)`.
    pub metrics: BTreeMap<String, (f64, f64)>,
}

impl StepOutput {
    /// An output for a step over `samples` samples, with no metric yet.
    pub fn new(samples: usize) -> StepOutput {
        StepOutput { samples, metrics: BTreeMap::new() }
    }

    /// Adds a per-sample mean (`value` is the batch mean, weighted by the batch's samples).
    pub fn mean(mut self, name: &str, value: f64) -> StepOutput {
        let n = self.samples as f64;
        self.metrics.insert(name.to_string(), (value * n, n));
        self
    }

    /// Adds a ratio `numerator / denominator` that aggregates as total over total.
    pub fn ratio(mut self, name: &str, numerator: f64, denominator: f64) -> StepOutput {
        self.metrics.insert(name.to_string(), (numerator, denominator));
        self
    }

    /// The batch value of metric `name`.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).map(|&(s, w)| s / w)
    }
}

/// The parts that make up a trained state: what a checkpoint saves and a resume restores.
pub trait Checkpointable {
    /// The models whose variables a checkpoint holds, by part name (`[A-Za-z0-9_-]+`, unique
    /// across models and optimizers).
    fn models(&self) -> Vec<(String, &VarMap)>;

    /// The optimizers, by part name; the engine saves and restores their state and applies the
    /// learning-rate schedule to each (relative to the rate it was built with).
    fn optimizers(&mut self) -> Vec<(String, &mut BoxedOptimizer)>;

    /// Configuration worth recording with every checkpoint (typed model configs, so that the
    /// run file rebuilds the models).
    fn config(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Extra state a resumed run needs beyond variables and optimizer states (e.g. the position
    /// of a seeded dropout stream).
    fn state(&self) -> Result<serde_json::Value> {
        Ok(serde_json::Value::Null)
    }

    /// Restores what [`Checkpointable::state`] returned.
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
}

/// One optimisation step over a batch of type `B`. A supervised classifier (one model, one
/// optimizer) and a GAN (two models, two optimizers, alternating updates) are both
/// implementations.
pub trait TrainStep<B>: Checkpointable {
    /// Runs forward and backward passes and updates the parameters. Non-finite metrics stop the
    /// run with [`crate::Error::NonFinite`] naming the batch's samples.
    fn step(&mut self, batch: &B, ctx: &StepContext) -> Result<StepOutput>;
}

/// Evaluation over a validation source, batch by batch, then summarised: metrics such as
/// ROC-AUC need every prediction, not a mean of per-batch values.
pub trait ValidStep<B> {
    /// What one batch yields (predictions, labels, ids...).
    type Output;

    /// Evaluates one batch (models in evaluation mode, no update).
    fn valid_step(&mut self, batch: &B) -> Result<Self::Output>;

    /// The epoch's validation metrics from every batch's output (names without a prefix: the
    /// engine records them as `val_{name}`). Undefined metrics are left out.
    fn valid_metrics(&mut self, outputs: Vec<Self::Output>) -> Result<BTreeMap<String, f64>>;
}
