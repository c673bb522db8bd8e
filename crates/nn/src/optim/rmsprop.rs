//! RMSprop (`torch.optim.RMSprop`) and a Keras preset.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::{
    check, decayed, export_state, import_state, load_tensor, params, OptimizerState, Param,
    Stateful,
};
use crate::Result;

/// Configuration of [`RmsProp`]; `Default` is PyTorch's, [`RmsPropConfig::keras`] is Keras's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RmsPropConfig {
    /// Learning rate (PyTorch: 1e-2; Keras: 1e-3).
    pub lr: f64,
    /// Decay of the squared-gradient average (PyTorch `alpha`: 0.99; Keras `rho`: 0.9).
    pub alpha: f64,
    /// Numerical-stability term (PyTorch: 1e-8; Keras: 1e-7); where it goes depends on
    /// `eps_inside_sqrt`.
    pub eps: f64,
    /// L2 penalty added to the gradient (PyTorch: 0).
    pub weight_decay: f64,
    /// Momentum factor (PyTorch: 0).
    pub momentum: f64,
    /// Normalise by the estimated variance instead of the second moment (PyTorch: false).
    pub centered: bool,
    /// `false` (PyTorch): divide by `sqrt(v) + eps`. `true` (Keras): divide by `sqrt(v + eps)`.
    pub eps_inside_sqrt: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            eps_inside_sqrt: false,
        }
    }
}

impl RmsPropConfig {
    /// Keras's `keras.optimizers.RMSprop` defaults: lr 1e-3, rho 0.9, epsilon 1e-7, no momentum,
    /// not centered, and epsilon added INSIDE the square root.
    ///
    /// Keras 3 (`keras/src/optimizers/rmsprop.py`) computes
    /// `increment = lr * g / sqrt(velocity + epsilon)` (centered:
    /// `sqrt(velocity - avg_grad^2 + epsilon)`), and tf.keras 2.x (`ApplyRMSProp`) does the same;
    /// only the old standalone Keras 2.2 used `sqrt(v) + epsilon` like PyTorch. With momentum,
    /// Keras accumulates `lr`-scaled increments in its buffer where PyTorch scales the buffer by
    /// `lr`; the two agree while `lr` is constant, and this type follows PyTorch.
    pub fn keras() -> Self {
        Self {
            lr: 1e-3,
            alpha: 0.9,
            eps: 1e-7,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
            eps_inside_sqrt: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Buffers {
    square_avg: Tensor,
    /// Only when centered.
    grad_avg: Option<Tensor>,
    /// Only with momentum.
    momentum_buffer: Option<Tensor>,
}

/// RMSprop with PyTorch semantics:
///
/// ```text
/// g = grad + weight_decay * param
/// v = alpha * v + (1 - alpha) * g^2
/// centered: a = alpha * a + (1 - alpha) * g;  w = v - a^2   (else w = v)
/// d = sqrt(w) + eps            (eps_inside_sqrt: d = sqrt(w + eps))
/// momentum > 0: b = momentum * b + g / d;  param -= lr * b   (b starts at zero)
/// else:         param -= lr * g / d
/// ```
///
/// State keys: `square_avg.{i}`, `grad_avg.{i}` (centered), `momentum_buffer.{i}` (momentum),
/// `step.{i}`.
#[derive(Debug)]
pub struct RmsProp {
    params: Vec<Param<Buffers>>,
    step: u64,
    config: RmsPropConfig,
}

impl RmsProp {
    /// An RMSprop over `vars` with [`RmsPropConfig::keras`].
    pub fn keras(vars: Vec<Var>) -> candle_core::Result<Self> {
        Self::new(vars, RmsPropConfig::keras())
    }
}

impl Optimizer for RmsProp {
    type Config = RmsPropConfig;

    fn new(vars: Vec<Var>, config: RmsPropConfig) -> candle_core::Result<Self> {
        check(config.lr >= 0.0, "lr must be >= 0")?;
        check(config.alpha >= 0.0, "alpha must be >= 0")?;
        check(config.eps >= 0.0, "eps must be >= 0")?;
        check(config.momentum >= 0.0, "momentum must be >= 0")?;
        check(config.weight_decay >= 0.0, "weight_decay must be >= 0")?;
        Ok(Self { params: params(vars), step: 0, config })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let c = self.config;
        for p in self.params.iter_mut() {
            let Some(grad) = grads.get(&p.var) else {
                continue;
            };
            let (theta, g) =
                decayed(p.var.as_detached_tensor(), grad.detach(), c.lr, c.weight_decay, false)?;
            let (t, prev) = match p.state.take() {
                Some((t, b)) => (t + 1, b),
                None => (
                    1,
                    Buffers {
                        square_avg: g.zeros_like()?,
                        grad_avg: if c.centered { Some(g.zeros_like()?) } else { None },
                        momentum_buffer: if c.momentum > 0.0 {
                            Some(g.zeros_like()?)
                        } else {
                            None
                        },
                    },
                ),
            };
            let square_avg =
                (prev.square_avg.affine(c.alpha, 0.0)? + g.sqr()?.affine(1.0 - c.alpha, 0.0)?)?;
            let (var_est, grad_avg) = match (&prev.grad_avg, c.centered) {
                (Some(a), true) => {
                    let a = (a.affine(c.alpha, 0.0)? + g.affine(1.0 - c.alpha, 0.0)?)?;
                    ((&square_avg - a.sqr()?)?, Some(a))
                }
                (None, true) => {
                    let a = g.affine(1.0 - c.alpha, 0.0)?;
                    ((&square_avg - a.sqr()?)?, Some(a))
                }
                _ => (square_avg.clone(), None),
            };
            let denom = if c.eps_inside_sqrt {
                var_est.affine(1.0, c.eps)?.sqrt()?
            } else {
                var_est.sqrt()?.affine(1.0, c.eps)?
            };
            let scaled = g.div(&denom)?;
            let (update, momentum_buffer) = if c.momentum > 0.0 {
                let b = match &prev.momentum_buffer {
                    Some(b) => (b.affine(c.momentum, 0.0)? + scaled)?,
                    None => scaled,
                };
                (b.clone(), Some(b))
            } else {
                (scaled, None)
            };
            p.var.set(&theta.sub(&update.affine(c.lr, 0.0)?)?)?;
            p.state = Some((t, Buffers { square_avg, grad_avg, momentum_buffer }));
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

impl Stateful for RmsProp {
    fn state(&self) -> Result<OptimizerState> {
        export_state(&self.params, self.step, self.config.lr, |b, _| {
            let mut out = vec![("square_avg", b.square_avg.clone())];
            if let Some(a) = &b.grad_avg {
                out.push(("grad_avg", a.clone()));
            }
            if let Some(m) = &b.momentum_buffer {
                out.push(("momentum_buffer", m.clone()));
            }
            Ok(out)
        })
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        let c = self.config;
        import_state(&mut self.params, &state, |state, i, var| {
            Ok(Buffers {
                square_avg: load_tensor(state, "square_avg", i, var)?,
                grad_avg: if c.centered {
                    Some(load_tensor(state, "grad_avg", i, var)?)
                } else {
                    None
                },
                momentum_buffer: if c.momentum > 0.0 {
                    Some(load_tensor(state, "momentum_buffer", i, var)?)
                } else {
                    None
                },
            })
        })?;
        self.step = state.step;
        self.config.lr = state.learning_rate;
        Ok(())
    }
}
