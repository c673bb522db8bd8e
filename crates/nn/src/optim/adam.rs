//! Adam and AdamW (`torch.optim.Adam`, `torch.optim.AdamW`).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::Optimizer;
use serde::{Deserialize, Serialize};

use super::{
    check, decayed, export_state, import_state, load_tensor, params, OptimizerState, Param,
    Stateful,
};
use crate::simd::{self, AdamStep};
use crate::Result;

/// Configuration of [`Adam`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamConfig {
    /// Learning rate (PyTorch: 1e-3).
    pub lr: f64,
    /// Decay of the first-moment average (PyTorch: 0.9).
    pub beta1: f64,
    /// Decay of the second-moment average (PyTorch: 0.999).
    pub beta2: f64,
    /// Added to the bias-corrected root second moment (PyTorch: 1e-8).
    pub eps: f64,
    /// L2 penalty: `weight_decay * param` is added to the gradient before the moments (PyTorch:
    /// 0). For decoupled decay use [`AdamW`].
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (PyTorch: false).
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, amsgrad: false }
    }
}

/// Configuration of [`AdamW`]; `Default` is PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    /// Learning rate (PyTorch: 1e-3).
    pub lr: f64,
    /// Decay of the first-moment average (PyTorch: 0.9).
    pub beta1: f64,
    /// Decay of the second-moment average (PyTorch: 0.999).
    pub beta2: f64,
    /// Added to the bias-corrected root second moment (PyTorch: 1e-8).
    pub eps: f64,
    /// Decoupled decay: each step first multiplies the param by `1 - lr * weight_decay`
    /// (PyTorch: 1e-2).
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (PyTorch: false).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2, amsgrad: false }
    }
}

#[derive(Debug, Clone)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    /// Only with `amsgrad`.
    max_exp_avg_sq: Option<Tensor>,
}

/// What Adam and AdamW share; they differ only in where the weight decay goes.
#[derive(Debug)]
struct Core {
    params: Vec<Param<Moments>>,
    step: u64,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    amsgrad: bool,
    decoupled: bool,
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    fn new(
        vars: Vec<Var>,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
        amsgrad: bool,
        decoupled: bool,
    ) -> candle_core::Result<Self> {
        check(lr >= 0.0, "lr must be >= 0")?;
        check((0.0..1.0).contains(&beta1), "beta1 must be in [0, 1)")?;
        check((0.0..1.0).contains(&beta2), "beta2 must be in [0, 1)")?;
        check(eps >= 0.0, "eps must be >= 0")?;
        check(weight_decay >= 0.0, "weight_decay must be >= 0")?;
        Ok(Self {
            params: params(vars),
            step: 0,
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            amsgrad,
            decoupled,
        })
    }

    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.step += 1;
        for i in 0..self.params.len() {
            let Some(grad) = grads.get(&self.params[i].var) else {
                continue;
            };
            if self.amsgrad || !self.fused_step(i, grad)? {
                self.composed_step(i, grad)?;
            }
        }
        Ok(())
    }

    /// The step of parameter `i` as candle ops (any dtype and device; AMSGrad).
    fn composed_step(&mut self, i: usize, grad: &Tensor) -> candle_core::Result<()> {
        let p = &mut self.params[i];
        let (theta, g) = decayed(
            p.var.as_detached_tensor(),
            grad.detach(),
            self.lr,
            self.weight_decay,
            self.decoupled,
        )?;
        let (t, prev) = match p.state.take() {
            Some((t, m)) => (t + 1, m),
            None => (
                1,
                Moments {
                    exp_avg: g.zeros_like()?,
                    exp_avg_sq: g.zeros_like()?,
                    max_exp_avg_sq: if self.amsgrad { Some(g.zeros_like()?) } else { None },
                },
            ),
        };
        let exp_avg = (prev.exp_avg.affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?;
        let exp_avg_sq =
            (prev.exp_avg_sq.affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
        // PyTorch's implementation keeps the maximum of the raw (not bias-corrected) second
        // moment and bias-corrects it afterwards; some versions of its docs' pseudocode take
        // the maximum after bias correction, which differs once the correction changes.
        let max_exp_avg_sq = match (&prev.max_exp_avg_sq, self.amsgrad) {
            (Some(m), true) => Some(m.maximum(&exp_avg_sq)?),
            (None, true) => Some(exp_avg_sq.clone()),
            _ => None,
        };
        let bc1 = 1.0 - self.beta1.powi(t as i32);
        let bc2 = 1.0 - self.beta2.powi(t as i32);
        let second = max_exp_avg_sq.as_ref().unwrap_or(&exp_avg_sq);
        let denom = second.sqrt()?.affine(1.0 / bc2.sqrt(), self.eps)?;
        let update = exp_avg.div(&denom)?.affine(self.lr / bc1, 0.0)?;
        p.var.set(&theta.sub(&update)?)?;
        p.state = Some((t, Moments { exp_avg, exp_avg_sq, max_exp_avg_sq }));
        Ok(())
    }

    /// The f32 constants of step `t`.
    fn constants(&self, t: u64) -> AdamStep {
        let decay = self.weight_decay != 0.0;
        let bc1 = 1.0 - self.beta1.powi(t as i32);
        let bc2 = 1.0 - self.beta2.powi(t as i32);
        AdamStep {
            decay: (decay && self.decoupled).then_some((1.0 - self.lr * self.weight_decay) as f32),
            l2: (decay && !self.decoupled).then_some(self.weight_decay as f32),
            beta1: self.beta1 as f32,
            one_minus_beta1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            one_minus_beta2: (1.0 - self.beta2) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            eps: self.eps as f32,
            step_size: (self.lr / bc1) as f32,
        }
    }

    /// The step of parameter `i` as a single pass over its values, for f32 on the CPU (the
    /// composed ops above make a dozen passes and as many allocations); the same bits. On
    /// CUDA, three in-place kernels with the same arithmetic. Returns whether it applied.
    fn fused_step(&mut self, i: usize, grad: &Tensor) -> candle_core::Result<bool> {
        let p = &self.params[i];
        let theta = p.var.as_detached_tensor();
        #[cfg(feature = "cuda")]
        if theta.device().is_cuda() {
            return self.cuda_step(i, &theta, grad);
        }
        let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
        if !cpu_f32(&theta) || !cpu_f32(grad) || grad.dims() != theta.dims() {
            return Ok(false);
        }
        let flat = |x: &Tensor| x.flatten_all()?.to_vec1::<f32>();
        let n = theta.elem_count();
        let (t, mut m, mut v) = match &p.state {
            Some((t, prev)) => (t + 1, flat(&prev.exp_avg)?, flat(&prev.exp_avg_sq)?),
            None => (1, vec![0f32; n], vec![0f32; n]),
        };
        let mut values = flat(&theta)?;
        let g = flat(grad)?;
        let step = self.constants(t);
        simd::adam(&mut values, &g, &mut m, &mut v, step);
        let (shape, device) = (theta.shape(), theta.device());
        p.var.set(&Tensor::from_vec(values, shape, device)?)?;
        let exp_avg = Tensor::from_vec(m, shape, device)?;
        let exp_avg_sq = Tensor::from_vec(v, shape, device)?;
        self.params[i].state = Some((t, Moments { exp_avg, exp_avg_sq, max_exp_avg_sq: None }));
        Ok(true)
    }

    /// [`Core::fused_step`] on CUDA: the moments and the parameter updated in place.
    #[cfg(feature = "cuda")]
    fn cuda_step(&mut self, i: usize, theta: &Tensor, grad: &Tensor) -> candle_core::Result<bool> {
        let f32s = theta.dtype() == DType::F32 && grad.dtype() == DType::F32;
        if !f32s || grad.dims() != theta.dims() || !theta.is_contiguous() {
            return Ok(false);
        }
        let (t, m, v) = match &self.params[i].state {
            Some((t, prev)) => (t + 1, prev.exp_avg.contiguous()?, prev.exp_avg_sq.contiguous()?),
            None => (1, theta.zeros_like()?, theta.zeros_like()?),
        };
        let k = crate::cuda::AdamConsts::from(self.constants(t));
        let g = grad.contiguous()?;
        m.inplace_op3(&g, theta, &CudaAdam::Moment { k, second: false })?;
        v.inplace_op3(&g, theta, &CudaAdam::Moment { k, second: true })?;
        theta.inplace_op3(&m, &v, &CudaAdam::Update(k))?;
        let moments = Moments { exp_avg: m, exp_avg_sq: v, max_exp_avg_sq: None };
        self.params[i].state = Some((t, moments));
        Ok(true)
    }

    fn state(&self) -> Result<OptimizerState> {
        // Copies: on CUDA the moments are updated in place by the next step.
        export_state(&self.params, self.step, self.lr, |m, _| {
            let mut out =
                vec![("exp_avg", m.exp_avg.copy()?), ("exp_avg_sq", m.exp_avg_sq.copy()?)];
            if let Some(mx) = &m.max_exp_avg_sq {
                out.push(("max_exp_avg_sq", mx.copy()?));
            }
            Ok(out)
        })
    }

    fn load_state(&mut self, state: OptimizerState) -> Result<()> {
        let amsgrad = self.amsgrad;
        import_state(&mut self.params, &state, |state, i, var| {
            Ok(Moments {
                exp_avg: load_tensor(state, "exp_avg", i, var)?,
                exp_avg_sq: load_tensor(state, "exp_avg_sq", i, var)?,
                max_exp_avg_sq: if amsgrad {
                    Some(load_tensor(state, "max_exp_avg_sq", i, var)?)
                } else {
                    None
                },
            })
        })?;
        self.step = state.step;
        self.lr = state.learning_rate;
        Ok(())
    }
}

/// Adam's in-place CUDA kernels: a moment from `(gradient, parameter)`, or the parameter from
/// `(first moment, second moment)`. CPU steps are [`simd::adam`].
#[cfg(feature = "cuda")]
enum CudaAdam {
    Moment { k: crate::cuda::AdamConsts, second: bool },
    Update(crate::cuda::AdamConsts),
}

#[cfg(feature = "cuda")]
impl candle_core::InplaceOp3 for CudaAdam {
    fn name(&self) -> &'static str {
        "deeprecog-adam-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &mut candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        candle_core::bail!("{}: a CUDA kernel; the CPU step is simd::adam", self.name())
    }

    fn cuda_fwd(
        &self,
        a: &mut candle_core::CudaStorage,
        al: &candle_core::Layout,
        b: &candle_core::CudaStorage,
        bl: &candle_core::Layout,
        c: &candle_core::CudaStorage,
        cl: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        match *self {
            CudaAdam::Moment { k, second } => {
                crate::cuda::adam_moment((a, al), (b, bl), (c, cl), k, second)
            }
            CudaAdam::Update(k) => crate::cuda::adam_update((a, al), (b, bl), (c, cl), k),
        }
    }
}

/// `Optimizer` and `Stateful` for a newtype over [`Core`]; `$decoupled` picks AdamW's decay.
macro_rules! core_optimizer {
    ($name:ident, $config:ident, $decoupled:expr) => {
        impl Optimizer for $name {
            type Config = $config;

            fn new(vars: Vec<Var>, c: $config) -> candle_core::Result<Self> {
                let (lr, b1, b2, eps, wd) = (c.lr, c.beta1, c.beta2, c.eps, c.weight_decay);
                Core::new(vars, lr, b1, b2, eps, wd, c.amsgrad, $decoupled).map(Self)
            }

            fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
                self.0.step(grads)
            }

            fn learning_rate(&self) -> f64 {
                self.0.lr
            }

            fn set_learning_rate(&mut self, lr: f64) {
                self.0.lr = lr;
            }
        }

        impl Stateful for $name {
            fn state(&self) -> Result<OptimizerState> {
                self.0.state()
            }

            fn load_state(&mut self, state: OptimizerState) -> Result<()> {
                self.0.load_state(state)
            }
        }
    };
}

/// Adam with PyTorch semantics: optional L2 `weight_decay` added to the gradient, optional
/// AMSGrad. See the [module docs](super) for state keys (`exp_avg`, `exp_avg_sq`,
/// `max_exp_avg_sq`, `step`).
#[derive(Debug)]
pub struct Adam(Core);

core_optimizer!(Adam, AdamConfig, false);

/// AdamW with PyTorch semantics (decoupled weight decay applied before the Adam update, optional
/// AMSGrad). Unlike candle's `AdamW`, step counts are per parameter and the state is exportable.
/// State keys as for [`Adam`].
#[derive(Debug)]
pub struct AdamW(Core);

core_optimizer!(AdamW, AdamWConfig, true);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
    }

    fn values(n: usize, seed: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|i| (((i * 31 + seed * 17) % 23) as f32 - 11.0) * scale).collect()
    }

    /// The single-pass f32 step against the composed candle ops: the same bits for the
    /// parameters and both moments over several steps, with and without either decay (zero
    /// gradients and signed zeros included).
    #[test]
    fn fused_step_matches_the_composed_ops_bit_for_bit() {
        for (wd, decoupled) in [(0.0, false), (0.01, false), (0.05, true)] {
            let n = 37;
            let init = Tensor::from_vec(values(n, 1, 0.1), (n,), &Device::Cpu).unwrap();
            let new = |v: &Tensor| {
                Core::new(
                    vec![Var::from_tensor(v).unwrap()],
                    3e-3,
                    0.9,
                    0.999,
                    1e-8,
                    wd,
                    false,
                    decoupled,
                )
                .unwrap()
            };
            let (mut fused, mut composed) = (new(&init), new(&init));
            for step in 0..4 {
                let mut g = values(n, step + 2, 0.05);
                g[step] = 0.0;
                g[step + 5] = -0.0;
                let g = Tensor::from_vec(g, (n,), &Device::Cpu).unwrap();
                assert!(fused.fused_step(0, &g).unwrap());
                composed.composed_step(0, &g).unwrap();
                let (a, b) = (&fused.params[0], &composed.params[0]);
                assert_eq!(bits(a.var.as_tensor()), bits(b.var.as_tensor()), "step {step} wd {wd}");
                let ((ta, ma), (tb, mb)) = (a.state.as_ref().unwrap(), b.state.as_ref().unwrap());
                assert_eq!(ta, tb);
                assert_eq!(bits(&ma.exp_avg), bits(&mb.exp_avg), "first moment, step {step}");
                assert_eq!(
                    bits(&ma.exp_avg_sq),
                    bits(&mb.exp_avg_sq),
                    "second moment, step {step}"
                );
            }
        }
    }
}
