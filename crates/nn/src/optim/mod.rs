//! Optimizers candle lacks, with PyTorch semantics, and a checkpointable optimizer state.
//!
//! Every optimizer implements [`candle_nn::Optimizer`] (so `new(vars, config)`, `step(&grads)`,
//! `learning_rate`, `set_learning_rate` and `backward_step` work as for candle's own) and
//! [`Stateful`], which exports and imports its running state for checkpoint resume.
//!
//! | optimizer | PyTorch counterpart | config |
//! |-----------|---------------------|--------|
//! | [`Adam`]  | `torch.optim.Adam` (L2 `weight_decay` added to the gradient, `amsgrad`) | [`AdamConfig`] |
//! | [`AdamW`] | `torch.optim.AdamW` (decoupled decay, `amsgrad`) | [`AdamWConfig`] |
//! | [`Sgd`]   | `torch.optim.SGD` (momentum, dampening, Nesterov, weight decay) | [`SgdConfig`] |
//! | [`RmsProp`] | `torch.optim.RMSprop` (centered, momentum); [`RmsProp::keras`] preset | [`RmsPropConfig`] |
//! | [`NAdam`] | `torch.optim.NAdam` (momentum decay) | [`NAdamConfig`] |
//!
//! Conventions shared by all of them:
//!
//! - **Parameters are identified by position** in the `vars` list given to `new`: the state of the
//!   `i`-th var is stored under keys ending in `.{i}` (e.g. `exp_avg.3`). Non-float vars are
//!   ignored but still count for the numbering, so the positions stay those of the caller's list.
//! - **Frozen parameters cost nothing**: a var with no gradient in the `GradStore` is skipped, and
//!   its state is only allocated the first time it receives a gradient (as PyTorch does lazily).
//! - **Step counts are per parameter**, as in PyTorch: a parameter that was frozen for the first
//!   `k` steps starts its bias correction at 1 when it is unfrozen. They are exported as
//!   `step.{i}` (a 0-dim `F64` tensor); a parameter without a `step.{i}` entry has no state yet.
//! - Arithmetic runs in each var's own dtype; for bit-for-bit PyTorch comparisons use `F64` vars.
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use candle_nn::Optimizer;
//! use deeprecog_nn::optim::{AdamW, AdamWConfig, Stateful};
//!
//! let w = Var::zeros(3, DType::F32, &Device::Cpu)?;
//! let mut opt = AdamW::new(vec![w.clone()], AdamWConfig { lr: 0.1, ..Default::default() })?;
//! let target = Tensor::new(&[1.0f32, -2.0, 3.0], &Device::Cpu)?;
//! for _ in 0..200 {
//!     let loss = w.as_tensor().sub(&target)?.sqr()?.sum_all()?;
//!     opt.backward_step(&loss)?;
//! }
//! let state = opt.state()?; // step count, learning rate, exp_avg.0, exp_avg_sq.0, step.0
//! assert_eq!(state.step, 200);
//! assert!(state.tensors.contains_key("exp_avg_sq.0"));
//! # Ok::<(), deeprecog_nn::Error>(())
//! ```

mod adam;
mod config;
mod nadam;
mod rmsprop;
mod sgd;

pub use adam::{Adam, AdamConfig, AdamW, AdamWConfig};
pub use config::{BoxedOptimizer, DynOptimizer, OptimizerConfig};
pub use nadam::{NAdam, NAdamConfig};
pub use rmsprop::{RmsProp, RmsPropConfig};
pub use sgd::{Sgd, SgdConfig};

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use crate::{Error, Result};

/// Key of the optimizer-wide step count in [`OptimizerState::save_safetensors`] files.
pub const STEP_KEY: &str = "meta.step";
/// Key of the learning rate in [`OptimizerState::save_safetensors`] files.
pub const LR_KEY: &str = "meta.lr";

/// A snapshot of an optimizer's running state, enough to resume training exactly.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// How many times `step` has been called on the optimizer.
    pub step: u64,
    /// The learning rate at the time of the snapshot (restored by [`Stateful::load_state`], as
    /// PyTorch's `load_state_dict` restores a param group's `lr`).
    pub learning_rate: f64,
    /// Named state tensors, keyed `"{name}.{i}"` where `i` is the var's position in the list the
    /// optimizer was built from (e.g. `exp_avg.0`, `momentum_buffer.2`, `step.1`).
    pub tensors: HashMap<String, Tensor>,
}

impl OptimizerState {
    /// All of the state as one flat tensor map (the step count and learning rate become 0-dim `F64`
    /// tensors under [`STEP_KEY`] and [`LR_KEY`]), ready for a safetensors file.
    pub fn to_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = self.tensors.clone();
        // f64 holds every step count a training run can reach exactly (< 2^53).
        out.insert(STEP_KEY.to_string(), Tensor::new(self.step as f64, &Device::Cpu)?);
        out.insert(LR_KEY.to_string(), Tensor::new(self.learning_rate, &Device::Cpu)?);
        Ok(out)
    }

    /// The inverse of [`OptimizerState::to_tensors`].
    pub fn from_tensors(mut tensors: HashMap<String, Tensor>) -> Result<Self> {
        let step = take_scalar(&mut tensors, STEP_KEY)?;
        let learning_rate = take_scalar(&mut tensors, LR_KEY)?;
        if !(step >= 0.0 && step.fract() == 0.0) {
            return Err(Error::OptimizerState(format!(
                "{STEP_KEY} must be a non-negative integer, got {step}"
            )));
        }
        Ok(Self { step: step as u64, learning_rate, tensors })
    }

    /// Writes the state to a safetensors file.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        candle_core::safetensors::save(&self.to_tensors()?, path)?;
        Ok(())
    }

    /// Reads a state written by [`OptimizerState::save_safetensors`] onto `device`.
    pub fn load_safetensors(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::from_tensors(candle_core::safetensors::load(path, device)?)
    }
}

fn take_scalar(tensors: &mut HashMap<String, Tensor>, key: &str) -> Result<f64> {
    let t = tensors.remove(key).ok_or_else(|| Error::OptimizerState(format!("missing `{key}`")))?;
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.get(0)?.to_scalar()?)
}

/// Optimizers whose running state can be exported and re-imported (checkpoint resume).
pub trait Stateful {
    /// A snapshot of the state. The tensors are immutable values: later steps do not change them.
    fn state(&self) -> Result<OptimizerState>;

    /// Replaces the state with `state` (taken from an optimizer of the same kind built over vars
    /// of the same shapes, in the same order). Tensors are converted to each var's dtype and
    /// device. A parameter without a `step.{i}` entry starts fresh; one with it must have all of
    /// its state tensors, with the var's shape, or an [`Error::OptimizerState`] names what is
    /// wrong (and the optimizer is left unchanged).
    fn load_state(&mut self, state: OptimizerState) -> Result<()>;
}

/// One parameter with its position in the caller's list.
#[derive(Debug)]
pub(crate) struct Param<S> {
    pub index: usize,
    pub var: Var,
    /// Per-parameter step count and buffers; `None` until the first gradient arrives.
    pub state: Option<(u64, S)>,
}

/// Keeps the float vars, remembering their positions.
pub(crate) fn params<S>(vars: Vec<Var>) -> Vec<Param<S>> {
    vars.into_iter()
        .enumerate()
        .filter(|(_, v)| v.dtype().is_float())
        .map(|(index, var)| Param { index, var, state: None })
        .collect()
}

pub(crate) fn state_key(name: &str, index: usize) -> String {
    format!("{name}.{index}")
}

/// Reads the per-parameter step count of var `index`, if it has state.
pub(crate) fn load_step(state: &OptimizerState, index: usize) -> Result<Option<u64>> {
    let key = state_key("step", index);
    match state.tensors.get(&key) {
        None => Ok(None),
        Some(t) => {
            let s: f64 = t.to_dtype(DType::F64)?.flatten_all()?.get(0)?.to_scalar()?;
            if !(s >= 1.0 && s.fract() == 0.0) {
                return Err(Error::OptimizerState(format!(
                    "`{key}` must be a positive integer, got {s}"
                )));
            }
            Ok(Some(s as u64))
        }
    }
}

/// Reads state tensor `name` of var `index`, checked against the var's shape and converted to its
/// dtype and device; copied so that nothing the caller still holds aliases optimizer state.
pub(crate) fn load_tensor(
    state: &OptimizerState,
    name: &str,
    index: usize,
    var: &Var,
) -> Result<Tensor> {
    let key = state_key(name, index);
    let t =
        state.tensors.get(&key).ok_or_else(|| Error::OptimizerState(format!("missing `{key}`")))?;
    if t.dims() != var.dims() {
        return Err(Error::OptimizerState(format!(
            "`{key}` has shape {:?}, the var has {:?}",
            t.dims(),
            var.dims()
        )));
    }
    Ok(t.to_device(var.device())?.to_dtype(var.dtype())?.copy()?)
}

/// Writes the per-parameter step count of var `index`.
pub(crate) fn save_step(
    out: &mut HashMap<String, Tensor>,
    index: usize,
    step: u64,
    device: &Device,
) -> Result<()> {
    out.insert(state_key("step", index), Tensor::new(step as f64, device)?);
    Ok(())
}

/// Exports the state of every parameter that has one: `step.{i}` and the named buffers that
/// `buffers` gives for it.
pub(crate) fn export_state<S>(
    params: &[Param<S>],
    step: u64,
    learning_rate: f64,
    buffers: impl Fn(&S, &Var) -> Result<Vec<(&'static str, Tensor)>>,
) -> Result<OptimizerState> {
    let mut tensors = HashMap::new();
    for p in params {
        if let Some((t, s)) = &p.state {
            save_step(&mut tensors, p.index, *t, p.var.device())?;
            for (name, tensor) in buffers(s, &p.var)? {
                tensors.insert(state_key(name, p.index), tensor);
            }
        }
    }
    Ok(OptimizerState { step, learning_rate, tensors })
}

/// Replaces every parameter's state from `state`, all or nothing: a parameter with a `step.{i}`
/// entry gets the buffers `load` reads for it, the others start fresh.
pub(crate) fn import_state<S>(
    params: &mut [Param<S>],
    state: &OptimizerState,
    load: impl Fn(&OptimizerState, usize, &Var) -> Result<S>,
) -> Result<()> {
    let mut loaded = Vec::with_capacity(params.len());
    for p in params.iter() {
        loaded.push(match load_step(state, p.index)? {
            None => None,
            Some(t) => Some((t, load(state, p.index, &p.var)?)),
        });
    }
    for (p, s) in params.iter_mut().zip(loaded) {
        p.state = s;
    }
    Ok(())
}

/// Rejects hyper-parameters PyTorch would reject, with candle's error type since
/// `Optimizer::new` returns it.
pub(crate) fn check(ok: bool, what: &str) -> candle_core::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(candle_core::Error::Msg(format!("invalid optimizer config: {what}")))
    }
}

/// The parameter and gradient after weight decay, as PyTorch applies it: decoupled (AdamW,
/// NAdam's `decoupled_weight_decay`) shrinks the parameter by `1 - lr * weight_decay`, coupled
/// adds `weight_decay * param` to the gradient.
pub(crate) fn decayed(
    theta: Tensor,
    grad: Tensor,
    lr: f64,
    weight_decay: f64,
    decoupled: bool,
) -> candle_core::Result<(Tensor, Tensor)> {
    if weight_decay == 0.0 {
        Ok((theta, grad))
    } else if decoupled {
        Ok((theta.affine(1.0 - lr * weight_decay, 0.0)?, grad))
    } else {
        let grad = (grad + theta.affine(weight_decay, 0.0)?)?;
        Ok((theta, grad))
    }
}
