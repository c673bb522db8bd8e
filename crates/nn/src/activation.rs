//! Element-wise activations as single custom ops on the CPU.
//!
//! candle-nn's `leaky_relu` is `max(x, 0) + min(x, 0) * slope`: five ops forward (a zeroed
//! tensor among them) and a dozen backward, which made it a visible share of a DCGAN step.
//! [`leaky_relu`] is one pass each way in f32 on the CPU, with PyTorch's gradient at 0 (the
//! slope; candle's composition gives `1 + slope` there), and candle's composition elsewhere.
//!
//! [`add_act`] is the residual connection's `act(a + b)` (ResNet's `relu(y + shortcut)`,
//! MobileNetV2's `y + x`) as one pass each way, where candle makes two ops and two
//! allocations forward.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use deeprecog_nn::activation::leaky_relu;
//!
//! let x = Tensor::new(&[-2f32, 0.0, 3.0], &Device::Cpu)?;
//! assert_eq!(leaky_relu(&x, 0.2)?.to_vec1::<f32>()?, [-0.4, 0.0, 3.0]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use crate::conv::Activation;
use crate::cpu::f32_slice;

/// Values per parallel task.
const BLOCK: usize = 1 << 14;

/// `x` where `x > 0`, `slope * x` elsewhere (PyTorch's `F.leaky_relu`).
///
/// # Errors
/// A non-finite or negative slope; tensor errors.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    if !(slope.is_finite() && slope >= 0.0) {
        bail!("leaky_relu: slope {slope} must be finite and >= 0");
    }
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        return x.contiguous()?.apply_op1(LeakyRelu { slope: slope as f32 });
    }
    candle_nn::ops::leaky_relu(x, slope)
}

/// `act(a + b)` for two tensors of the same shape: one pass on the CPU in f32 (forward and
/// backward, whose gradient, the same for both inputs, is masked by the output), candle's ops
/// elsewhere.
///
/// # Errors
/// Tensors of different shapes; tensor errors.
pub fn add_act(a: &Tensor, b: &Tensor, act: Activation) -> Result<Tensor> {
    if a.dims() != b.dims() {
        bail!("add_act: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    if a.device().is_cpu() && a.dtype() == DType::F32 && b.dtype() == DType::F32 {
        return a.contiguous()?.apply_op2(&b.contiguous()?, AddAct { act });
    }
    act.tensor((a + b)?)
}

struct AddAct {
    act: Activation,
}

impl CustomOp2 for AddAct {
    fn name(&self) -> &'static str {
        "deeprecog-add-act"
    }

    fn cpu_fwd(
        &self,
        a_s: &CpuStorage,
        a_l: &Layout,
        b_s: &CpuStorage,
        b_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (f32_slice(a_s, a_l, self.name())?, f32_slice(b_s, b_l, self.name())?);
        if a.len() != b.len() {
            bail!("add_act: shapes {:?} and {:?} differ", a_l.shape(), b_l.shape());
        }
        let act = self.act;
        let sum = |start: usize, dst: &mut [std::mem::MaybeUninit<f32>]| {
            let end = start + dst.len();
            crate::simd::add_act(dst, &a[start..end], &b[start..end], act)
        };
        Ok((CpuStorage::F32(crate::cpu::par_fill(a.len(), BLOCK, sum)?), a_l.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = self.act.mask(grad, res)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

struct LeakyRelu {
    slope: f32,
}

impl CustomOp1 for LeakyRelu {
    fn name(&self) -> &'static str {
        "deeprecog-leaky-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, self.name())?;
        let y = crate::cpu::par_fill(x.len(), BLOCK, |start, y| {
            crate::simd::leaky(y, &x[start..], self.slope)
        })?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(grad.apply_op2_no_bwd(x, &LeakyReluGrad { slope: self.slope })?))
    }
}

/// `(dy, x)` to `dy` where `x > 0`, `slope * dy` elsewhere.
struct LeakyReluGrad {
    slope: f32,
}

impl CustomOp2 for LeakyReluGrad {
    fn name(&self) -> &'static str {
        "deeprecog-leaky-relu-grad"
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        xs: &CpuStorage,
        xl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(gs, gl, self.name())?;
        let x = f32_slice(xs, xl, self.name())?;
        if g.len() != x.len() {
            bail!("leaky_relu backward: gradient {:?} for input {:?}", gl.shape(), xl.shape());
        }
        let dx = crate::cpu::par_fill(x.len(), BLOCK, |start, d| {
            crate::simd::leaky_grad(d, &g[start..], &x[start..], self.slope)
        })?;
        Ok((CpuStorage::F32(dx), gl.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{Device, Var};

    /// Against candle-nn's composition, forward and backward, away from 0 (where the gradients
    /// differ by design), in f32 and through the f64 fallback.
    #[test]
    fn matches_candle_nn_away_from_zero() {
        let values: Vec<f32> = (0..5000).map(|i| ((i * 37 % 1001) as f32 - 500.5) / 97.0).collect();
        for dtype in [DType::F32, DType::F64] {
            let x = Tensor::from_vec(values.clone(), (5, 1000), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let x = Var::from_tensor(&x).unwrap();
            let w = (x.as_tensor().cos().unwrap() + 2.0).unwrap();
            let ours = leaky_relu(x.as_tensor(), 0.2).unwrap();
            let theirs = candle_nn::ops::leaky_relu(x.as_tensor(), 0.2).unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                (a - b).unwrap().abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap()
            };
            assert_eq!(diff(&ours, &theirs).to_scalar::<f64>().unwrap(), 0.0, "{dtype:?}");
            let g1 = (&ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (g1, g2) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
            assert_eq!(diff(g1, g2).to_scalar::<f64>().unwrap(), 0.0, "{dtype:?} gradient");
        }
    }

    /// `add_act` against candle's `act(a + b)`, forward and both gradients, bit for bit; over
    /// more values than one parallel block holds, and shapes that differ are errors.
    #[test]
    fn add_act_matches_candle_ops() {
        let n = BLOCK + 777;
        let wave =
            |f: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 0.5) * f).sin() * 8.0).collect() };
        let a = Var::from_vec(wave(0.37), n, &Device::Cpu).unwrap();
        let b = Var::from_vec(wave(0.11), n, &Device::Cpu).unwrap();
        let r = Tensor::from_vec(wave(0.05), n, &Device::Cpu).unwrap();
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            let ours = add_act(a.as_tensor(), b.as_tensor(), act).unwrap();
            let theirs = act.tensor((a.as_tensor() + b.as_tensor()).unwrap()).unwrap();
            assert_eq!(ours.to_vec1::<f32>().unwrap(), theirs.to_vec1::<f32>().unwrap(), "{act:?}");
            let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&theirs * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&a, &b] {
                let (x, y) = (g1.get(v.as_tensor()).unwrap(), g2.get(v.as_tensor()).unwrap());
                assert_eq!(x.to_vec1::<f32>().unwrap(), y.to_vec1::<f32>().unwrap(), "{act:?}");
            }
        }
        let short = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        assert!(add_act(a.as_tensor(), &short, Activation::Relu).is_err());
    }

    #[test]
    fn the_gradient_at_zero_is_the_slope_and_bad_slopes_are_errors() {
        let x = Var::new(&[0f32, -1.0, 1.0], &Device::Cpu).unwrap();
        let y = leaky_relu(x.as_tensor(), 0.25).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), [0.25, 0.25, 1.0]);
        assert!(leaky_relu(x.as_tensor(), -0.1).is_err());
        assert!(leaky_relu(x.as_tensor(), f64::NAN).is_err());
    }
}
