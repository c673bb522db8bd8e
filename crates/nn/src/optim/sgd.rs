//! SGD with momentum (`torch.optim.SGD`).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::{
    check, export_state, import_state, load_tensor, params, OptimizerState, Param, Stateful,
};
use crate::Result;

/// Configuration of [`Sgd`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SgdConfig {
    /// Learning rate (PyTorch: 1e-3).
    pub lr: f64,
    /// Momentum factor (PyTorch: 0).
    pub momentum: f64,
    /// Dampening of the gradient added to the momentum buffer (PyTorch: 0).
    pub dampening: f64,
    /// L2 penalty added to the gradient (PyTorch: 0).
    pub weight_decay: f64,
    /// Nesterov momentum; needs `momentum > 0` and `dampening == 0` (PyTorch: false).
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

/// Stochastic gradient descent with PyTorch semantics:
///
/// ```text
/// g = grad + weight_decay * param
/// b = g                                   (first step of this param)
/// b = momentum * b + (1 - dampening) * g  (later steps)
/// g = g + momentum * b   if nesterov, else   g = b      (only when momentum != 0)
/// param = param - lr * g
/// ```
///
/// State keys: `momentum_buffer.{i}` and `step.{i}` (the latter only tells "has a buffer"; SGD's
/// update does not depend on it). Without momentum there is no per-parameter state.
#[derive(Debug)]
pub struct Sgd {
    params: Vec<Param<Option<Tensor>>>,
    step: u64,
    config: SgdConfig,
}

impl Optimizer for Sgd {
    type Config = SgdConfig;

    fn new(vars: Vec<Var>, config: SgdConfig) -> candle_core::Result<Self> {
        check(config.lr >= 0.0, "lr must be >= 0")?;
        check(config.momentum >= 0.0, "momentum must be >= 0")?;
        check(config.weight_decay >= 0.0, "weight_decay must be >= 0")?;
        check(
            !config.nesterov || (config.momentum > 0.0 && config.dampening == 0.0),
            "nesterov needs momentum > 0 and dampening == 0",
        )?;
        Ok(Self { params: params(vars), step: 0, config })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let c = self.config;
        for p in self.params.iter_mut() {
            let Some(grad) = grads.get(&p.var) else {
                continue;
            };
            let theta = p.var.as_detached_tensor();
            let mut g = grad.detach();
            if c.weight_decay != 0.0 {
                g = (g + theta.affine(c.weight_decay, 0.0)?)?;
            }
            if c.momentum != 0.0 {
                let (t, buf) = match p.state.take() {
                    Some((t, Some(b))) => {
                        (t + 1, (b.affine(c.momentum, 0.0)? + g.affine(1.0 - c.dampening, 0.0)?)?)
                    }
                    _ => (1, g.clone()),
                };
                g = if c.nesterov { (g + buf.affine(c.momentum, 0.0)?)? } else { buf.clone() };
                p.state = Some((t, Some(buf)));
            } else {
                let t = p.state.as_ref().map_or(0, |(t, _)| *t);
                p.state = Some((t + 1, None));
            }
            p.var.set(&theta.sub(&g.affine(c.lr, 0.0)?)?)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.config.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.config.lr = lr;
    }
}

impl Stateful for Sgd {
    fn state(&self) -> Result<OptimizerState> {
        export_state(&self.params, self.step, self.config.lr, |buf, _| {
            Ok(buf.iter().map(|b| ("momentum_buffer", b.clone())).collect())
        })
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        let momentum = self.config.momentum != 0.0;
        import_state(&mut self.params, &state, |state, i, var| {
            Ok(if momentum { Some(load_tensor(state, "momentum_buffer", i, var)?) } else { None })
        })?;
        self.step = state.step;
        self.config.lr = state.learning_rate;
        Ok(())
    }
}
