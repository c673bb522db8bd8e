//! NAdam (`torch.optim.NAdam`).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::{
    check, decayed, export_state, import_state, load_tensor, params, state_key, OptimizerState,
    Param, Stateful,
};
use crate::{Error, Result};

/// Configuration of [`NAdam`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NAdamConfig {
    /// Learning rate (PyTorch: 2e-3).
    pub lr: f64,
    /// Decay of the first-moment average (PyTorch: 0.9).
    pub beta1: f64,
    /// Decay of the second-moment average (PyTorch: 0.999).
    pub beta2: f64,
    /// Added to the bias-corrected root second moment (PyTorch: 1e-8).
    pub eps: f64,
    /// Weight decay, L2 (added to the gradient) unless `decoupled_weight_decay` (PyTorch: 0).
    pub weight_decay: f64,
    /// The `psi` of the momentum schedule `mu_t = beta1 * (1 - 0.5 * 0.96^(t * psi))`
    /// (PyTorch: 4e-3).
    pub momentum_decay: f64,
    /// Decay the param by `1 - lr * weight_decay` before the update, as AdamW does (PyTorch:
    /// false).
    pub decoupled_weight_decay: bool,
}

impl Default for NAdamConfig {
    fn default() -> Self {
        Self {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum_decay: 4e-3,
            decoupled_weight_decay: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// `mu_1 * ... * mu_t` for this parameter's own step count `t`.
    mu_product: f64,
}

/// NAdam with PyTorch semantics:
///
/// ```text
/// mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)),  P_t = mu_1 * ... * mu_t
/// m = beta1 * m + (1 - beta1) * g;  v = beta2 * v + (1 - beta2) * g^2
/// d = sqrt(v / (1 - beta2^t)) + eps
/// param -= lr * (1 - mu_t) / (1 - P_t) * g / d + lr * mu_{t+1} / (1 - P_{t+1}) * m / d
/// ```
///
/// State keys: `exp_avg.{i}`, `exp_avg_sq.{i}`, `mu_product.{i}` (0-dim `F64`), `step.{i}`.
#[derive(Debug)]
pub struct NAdam {
    params: Vec<Param<Moments>>,
    step: u64,
    config: NAdamConfig,
}

impl Optimizer for NAdam {
    type Config = NAdamConfig;

    fn new(vars: Vec<Var>, config: NAdamConfig) -> candle_core::Result<Self> {
        check(config.lr >= 0.0, "lr must be >= 0")?;
        check((0.0..1.0).contains(&config.beta1), "beta1 must be in [0, 1)")?;
        check((0.0..1.0).contains(&config.beta2), "beta2 must be in [0, 1)")?;
        check(config.eps >= 0.0, "eps must be >= 0")?;
        check(config.weight_decay >= 0.0, "weight_decay must be >= 0")?;
        check(config.momentum_decay >= 0.0, "momentum_decay must be >= 0")?;
        Ok(Self { params: params(vars), step: 0, config })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step += 1;
        let c = self.config;
        for p in self.params.iter_mut() {
            let Some(grad) = grads.get(&p.var) else {
                continue;
            };
            let (theta, g) = decayed(
                p.var.as_detached_tensor(),
                grad.detach(),
                c.lr,
                c.weight_decay,
                c.decoupled_weight_decay,
            )?;
            let (t, prev) = match p.state.take() {
                Some((t, m)) => (t + 1, m),
                None => (
                    1,
                    Moments {
                        exp_avg: g.zeros_like()?,
                        exp_avg_sq: g.zeros_like()?,
                        mu_product: 1.0,
                    },
                ),
            };
            let tf = t as f64;
            let mu = c.beta1 * (1.0 - 0.5 * 0.96f64.powf(tf * c.momentum_decay));
            let mu_next = c.beta1 * (1.0 - 0.5 * 0.96f64.powf((tf + 1.0) * c.momentum_decay));
            let mu_product = prev.mu_product * mu;
            let mu_product_next = mu_product * mu_next;
            let exp_avg = (prev.exp_avg.affine(c.beta1, 0.0)? + g.affine(1.0 - c.beta1, 0.0)?)?;
            let exp_avg_sq =
                (prev.exp_avg_sq.affine(c.beta2, 0.0)? + g.sqr()?.affine(1.0 - c.beta2, 0.0)?)?;
            let bc2 = 1.0 - c.beta2.powi(t as i32);
            let denom = exp_avg_sq.affine(1.0 / bc2, 0.0)?.sqrt()?.affine(1.0, c.eps)?;
            let grad_part = g.div(&denom)?.affine(c.lr * (1.0 - mu) / (1.0 - mu_product), 0.0)?;
            let mom_part =
                exp_avg.div(&denom)?.affine(c.lr * mu_next / (1.0 - mu_product_next), 0.0)?;
            p.var.set(&theta.sub(&grad_part)?.sub(&mom_part)?)?;
            p.state = Some((t, Moments { exp_avg, exp_avg_sq, mu_product }));
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

impl Stateful for NAdam {
    fn state(&self) -> Result<OptimizerState> {
        export_state(&self.params, self.step, self.config.lr, |m, var| {
            Ok(vec![
                ("exp_avg", m.exp_avg.clone()),
                ("exp_avg_sq", m.exp_avg_sq.clone()),
                ("mu_product", Tensor::new(m.mu_product, var.device())?),
            ])
        })
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        import_state(&mut self.params, &state, |state, i, var| {
            let key = state_key("mu_product", i);
            let mu_product: f64 = state
                .tensors
                .get(&key)
                .ok_or_else(|| Error::OptimizerState(format!("missing `{key}`")))?
                .to_dtype(DType::F64)?
                .flatten_all()?
                .get(0)?
                .to_scalar()?;
            Ok(Moments {
                exp_avg: load_tensor(state, "exp_avg", i, var)?,
                exp_avg_sq: load_tensor(state, "exp_avg_sq", i, var)?,
                mu_product,
            })
        })?;
        self.step = state.step;
        self.config.lr = state.learning_rate;
        Ok(())
    }
}
