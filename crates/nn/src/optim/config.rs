//! Any optimizer of this module, chosen by data: [`OptimizerConfig`] holds one optimizer's real
//! configuration (serde, so a run file records every hyper-parameter, beta1 included) and builds a
//! [`BoxedOptimizer`] that steps, changes its learning rate and exports its state whatever its
//! kind.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::{
    Adam, AdamConfig, AdamW, AdamWConfig, NAdam, NAdamConfig, OptimizerState, RmsProp,
    RmsPropConfig, Sgd, SgdConfig, Stateful,
};
use crate::Result;

/// One optimizer's configuration, tagged by kind in JSON:
/// `{"kind": "adam", "lr": 0.0002, "beta1": 0.5, ...}` (missing fields take PyTorch's defaults).
///
/// ```
/// use deeprecog_nn::optim::{AdamConfig, OptimizerConfig};
///
/// // The DCGAN recipe: Adam 2e-4, beta1 0.5.
/// let dcgan = OptimizerConfig::Adam(AdamConfig { lr: 2e-4, beta1: 0.5, ..Default::default() });
/// let json = serde_json::to_string(&dcgan).unwrap();
/// assert!(json.contains("\"kind\":\"adam\""));
/// let back: OptimizerConfig = serde_json::from_str(&json).unwrap();
/// assert_eq!(back, dcgan);
/// let keras: OptimizerConfig = serde_json::from_str(r#"{"kind": "rmsprop", "lr": 0.0001}"#).unwrap();
/// assert_eq!(keras.lr(), 1e-4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum OptimizerConfig {
    /// [`Adam`].
    Adam(AdamConfig),
    /// [`AdamW`].
    AdamW(AdamWConfig),
    /// [`Sgd`].
    Sgd(SgdConfig),
    /// [`RmsProp`] (PyTorch's by default; [`RmsPropConfig::keras`] for the reports' Keras one).
    RmsProp(RmsPropConfig),
    /// [`NAdam`].
    NAdam(NAdamConfig),
}

impl Default for OptimizerConfig {
    /// PyTorch's Adam.
    fn default() -> Self {
        OptimizerConfig::Adam(AdamConfig::default())
    }
}

impl OptimizerConfig {
    /// The configured learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::Adam(c) => c.lr,
            OptimizerConfig::AdamW(c) => c.lr,
            OptimizerConfig::Sgd(c) => c.lr,
            OptimizerConfig::RmsProp(c) => c.lr,
            OptimizerConfig::NAdam(c) => c.lr,
        }
    }

    /// The same configuration with learning rate `lr`.
    pub fn with_lr(mut self, lr: f64) -> Self {
        match &mut self {
            OptimizerConfig::Adam(c) => c.lr = lr,
            OptimizerConfig::AdamW(c) => c.lr = lr,
            OptimizerConfig::Sgd(c) => c.lr = lr,
            OptimizerConfig::RmsProp(c) => c.lr = lr,
            OptimizerConfig::NAdam(c) => c.lr = lr,
        }
        self
    }

    /// The same configuration with weight decay `wd` (L2, or decoupled for AdamW).
    pub fn with_weight_decay(mut self, wd: f64) -> Self {
        match &mut self {
            OptimizerConfig::Adam(c) => c.weight_decay = wd,
            OptimizerConfig::AdamW(c) => c.weight_decay = wd,
            OptimizerConfig::Sgd(c) => c.weight_decay = wd,
            OptimizerConfig::RmsProp(c) => c.weight_decay = wd,
            OptimizerConfig::NAdam(c) => c.weight_decay = wd,
        }
        self
    }

    /// The short name of the kind (`adam`, `adamw`, `sgd`, `rmsprop`, `nadam`).
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerConfig::Adam(_) => "adam",
            OptimizerConfig::AdamW(_) => "adamw",
            OptimizerConfig::Sgd(_) => "sgd",
            OptimizerConfig::RmsProp(_) => "rmsprop",
            OptimizerConfig::NAdam(_) => "nadam",
        }
    }

    /// Builds the optimizer over `vars` (their order keys the exported state; keep it stable).
    ///
    /// # Errors
    /// Hyper-parameters PyTorch would reject (negative learning rate, Nesterov without
    /// momentum, ...).
    pub fn build(&self, vars: Vec<Var>) -> Result<BoxedOptimizer> {
        fn boxed<O: DynOptimizer + 'static>(o: O) -> BoxedOptimizer {
            BoxedOptimizer(Box::new(o))
        }
        Ok(match *self {
            OptimizerConfig::Adam(c) => boxed(Adam::new(vars, c)?),
            OptimizerConfig::AdamW(c) => boxed(AdamW::new(vars, c)?),
            OptimizerConfig::Sgd(c) => boxed(Sgd::new(vars, c)?),
            OptimizerConfig::RmsProp(c) => boxed(RmsProp::new(vars, c)?),
            OptimizerConfig::NAdam(c) => boxed(NAdam::new(vars, c)?),
        })
    }
}

/// The object-safe part of an optimizer: what a training loop needs from one whose kind it does
/// not know. Every optimizer of this module implements it (candle's `Optimizer` is not
/// object-safe: its constructor returns `Self`).
pub trait DynOptimizer: Send {
    /// One update from the gradients in `grads` (vars without a gradient are left alone).
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The current learning rate.
    fn learning_rate(&self) -> f64;
    /// Sets the learning rate for the following steps.
    fn set_learning_rate(&mut self, lr: f64);
    /// A snapshot of the running state (see [`Stateful::state`]).
    fn state(&self) -> Result<OptimizerState>;
    /// Restores a snapshot (see [`Stateful::load_state`]).
    fn load_state(&mut self, state: OptimizerState) -> Result<()>;
}

impl<O: Optimizer + Stateful + Send> DynOptimizer for O {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        Ok(Optimizer::step(self, grads)?)
    }

    fn learning_rate(&self) -> f64 {
        Optimizer::learning_rate(self)
    }

    fn set_learning_rate(&mut self, lr: f64) {
        Optimizer::set_learning_rate(self, lr)
    }

    fn state(&self) -> Result<OptimizerState> {
        Stateful::state(self)
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        Stateful::load_state(self, state)
    }
}

/// An optimizer of any kind, built by [`OptimizerConfig::build`].
pub struct BoxedOptimizer(Box<dyn DynOptimizer>);

impl std::fmt::Debug for BoxedOptimizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxedOptimizer").field("lr", &self.0.learning_rate()).finish()
    }
}

impl BoxedOptimizer {
    /// One update from the gradients in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.0.step(grads)
    }

    /// Back-propagates `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.0.step(&grads)
    }

    /// The current learning rate.
    pub fn learning_rate(&self) -> f64 {
        self.0.learning_rate()
    }

    /// Sets the learning rate for the following steps.
    pub fn set_learning_rate(&mut self, lr: f64) {
        self.0.set_learning_rate(lr)
    }

    /// A snapshot of the running state.
    pub fn state(&self) -> Result<OptimizerState> {
        self.0.state()
    }

    /// Restores a snapshot taken from an optimizer of the same kind over the same vars.
    pub fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        self.0.load_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn fit(config: OptimizerConfig) -> Vec<f32> {
        let w = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let mut opt = config.build(vec![w.clone()]).unwrap();
        let target = Tensor::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        for _ in 0..5 {
            let loss = w.as_tensor().sub(&target).unwrap().sqr().unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        w.as_tensor().to_vec1().unwrap()
    }

    #[test]
    fn the_boxed_optimizer_steps_like_the_concrete_one() {
        let c = AdamConfig { lr: 0.1, beta1: 0.5, ..Default::default() };
        let w = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
        let mut adam = Adam::new(vec![w.clone()], c).unwrap();
        let target = Tensor::new(&[1.0f32, -2.0, 3.0], &Device::Cpu).unwrap();
        for _ in 0..5 {
            let loss = w.as_tensor().sub(&target).unwrap().sqr().unwrap().sum_all().unwrap();
            adam.backward_step(&loss).unwrap();
        }
        assert_eq!(fit(OptimizerConfig::Adam(c)), w.as_tensor().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn every_kind_round_trips_through_json_and_builds() {
        let all = [
            OptimizerConfig::Adam(AdamConfig { beta1: 0.5, amsgrad: true, ..Default::default() }),
            OptimizerConfig::AdamW(AdamWConfig::default()),
            OptimizerConfig::Sgd(SgdConfig { momentum: 0.9, nesterov: true, ..Default::default() }),
            OptimizerConfig::RmsProp(RmsPropConfig::keras()),
            OptimizerConfig::NAdam(NAdamConfig::default()),
        ];
        for c in all {
            let json = serde_json::to_string(&c).unwrap();
            let back: OptimizerConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c, "{json}");
            let moved = fit(c.with_lr(0.05));
            assert!(moved.iter().all(|v| v.is_finite() && *v != 0.0), "{} {moved:?}", c.kind());
        }
    }

    #[test]
    fn the_state_survives_a_rebuild() {
        let c = OptimizerConfig::NAdam(NAdamConfig { lr: 0.1, ..Default::default() });
        let w = Var::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let mut a = c.build(vec![w.clone()]).unwrap();
        let loss = w.as_tensor().sub(&Tensor::new(&[1f32, 2.], &Device::Cpu).unwrap()).unwrap();
        a.backward_step(&loss.sqr().unwrap().sum_all().unwrap()).unwrap();
        let mut b = c.build(vec![w]).unwrap();
        b.load_state(a.state().unwrap()).unwrap();
        assert_eq!(b.state().unwrap().step, 1);
        assert!(c.with_weight_decay(0.1) != c);
    }
}
