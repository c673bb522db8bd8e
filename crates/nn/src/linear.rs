//! `y = x W^T + b` (PyTorch's `nn.functional.linear`) as one op: on the CPU in f32 the
//! project's kernel, elsewhere candle's matrix product.
//!
//! A few input rows (inference on one image, a classifier head) make the product a
//! matrix-vector one whose cost is reading `W` once: the kernel runs one vectorised dot
//! product per output, the outputs split over rayon's threads, and writes the result without
//! zeroing it first. Larger batches go to the `gemm` crate's blocked product. candle's own
//! `matmul` would also look up the thread count on every call (reading `/proc/cpuinfo`) and
//! zero its destination, which at batch 1 costs as much as the product of a small head.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use deeprecog_nn::linear::linear;
//!
//! let x = Tensor::new(&[[1f32, 2.0, 3.0]], &Device::Cpu)?;
//! let w = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 1.0]], &Device::Cpu)?;
//! let b = Tensor::new(&[0.5f32, -1.0], &Device::Cpu)?;
//! assert_eq!(linear(&x, &w, Some(&b))?.to_vec2::<f32>()?, [[1.5, 4.0]]);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{
    bail, CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Result, Shape, Tensor,
};
use rayon::prelude::*;

use crate::sgemm::{matmul_new, Mat};

/// Input rows up to which the product runs as dot products (each output reads its weight row
/// once for all of them, from cache after the first).
const DOT_ROWS: usize = 4;

/// Multiply-adds below which the product stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 16;

/// `x W^T + b` for `x (..., in)`, `weight (out, in)` and an optional `bias (out)`: the output
/// is `(..., out)`. Differentiable in all three.
///
/// # Errors
/// A weight that is not 2-D, an input whose last dimension is not the weight's, a bias whose
/// length is not the weight's rows, a scalar input.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let (out, inp) = weight.dims2()?;
    let dims = x.dims();
    let Some((&last, lead)) = dims.split_last() else {
        bail!("linear: a scalar input cannot be multiplied by a {out}x{inp} weight");
    };
    if last != inp {
        bail!("linear: input {dims:?} does not fit a weight of {out}x{inp}");
    }
    if let Some(b) = bias.filter(|b| b.elem_count() != out) {
        bail!("linear: bias {:?} for {out} outputs", b.dims());
    }
    let rows = lead.iter().product::<usize>();
    let mut shape = lead.to_vec();
    shape.push(out);
    let x2 = x.reshape((rows, inp))?;
    let all_f32 = [Some(x), Some(weight), bias].iter().flatten().all(|t| t.dtype() == DType::F32);
    let y = if matches!(x.device(), Device::Cpu) && all_f32 {
        let (x2, w) = (x2.contiguous()?, weight.contiguous()?);
        match bias {
            Some(b) => x2.apply_op3(&w, &b.flatten_all()?.contiguous()?, Linear)?,
            None => x2.apply_op2(&w, Linear)?,
        }
    } else {
        let y = x2.matmul(&weight.t()?)?;
        match bias {
            Some(b) => y.broadcast_add(&b.flatten_all()?)?,
            None => y,
        }
    };
    y.reshape(shape)
}

/// The op over `(x (m, k), weight (n, k))` and an optional `bias (n)`.
#[derive(Clone, Copy)]
struct Linear;

impl Linear {
    fn forward(
        (xs, xl): (&CpuStorage, &Layout),
        (ws, wl): (&CpuStorage, &Layout),
        bias: Option<(&CpuStorage, &Layout)>,
    ) -> Result<(CpuStorage, Shape)> {
        let x = crate::cpu::f32_slice(xs, xl, "linear")?;
        let w = crate::cpu::f32_slice(ws, wl, "linear")?;
        let (m, k) = xl.shape().dims2()?;
        let (n, wk) = wl.shape().dims2()?;
        let bias = match bias {
            Some((bs, bl)) => Some(crate::cpu::f32_slice(bs, bl, "linear")?),
            None => None,
        };
        if wk != k || x.len() != m * k || w.len() != n * k || bias.is_some_and(|b| b.len() != n) {
            bail!("linear: input {m}x{k}, weight {n}x{wk}, bias {:?}", bias.map(<[f32]>::len));
        }
        let parallel = m * n * k >= PARALLEL_WORK;
        let y = if m <= DOT_ROWS && k > 0 {
            dot_products(x, w, bias, m, n, k, parallel)?
        } else {
            let mut y = matmul_new(Mat::rows(x, m, k), Mat::rows(w, n, k).t(), parallel)?;
            if let Some(b) = bias {
                let add = |row: &mut [f32]| row.iter_mut().zip(b).for_each(|(v, &b)| *v += b);
                if parallel {
                    y.par_chunks_mut(n.max(1)).for_each(add);
                } else {
                    y.chunks_mut(n.max(1)).for_each(add);
                }
            }
            y
        };
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    /// The gradients of `x`, `weight` and the bias from the output's `grad (m, n)`, each only
    /// when that operand carries autograd history (see [`crate::cpu::needs_grad`]).
    fn grads(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, grad: &Tensor) -> Result<Grads> {
        use crate::cpu::needs_grad;
        let grad = grad.contiguous()?;
        let dx = needs_grad(x, || grad.matmul(weight))?;
        let dw = needs_grad(weight, || grad.t()?.matmul(x))?;
        let db = match bias {
            Some(b) => needs_grad(b, || grad.sum(0))?,
            None => None,
        };
        Ok((dx, dw, db))
    }
}

/// The gradients of a linear layer's input, weight and bias.
type Grads = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// `y (m, n)` with `y[i][j] = dot(x_i, w_j) + b_j` for few rows `m`: outputs in blocks over
/// the threads, each weight row read once for all `m` input rows.
fn dot_products(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    n: usize,
    k: usize,
    parallel: bool,
) -> Result<Vec<f32>> {
    // Column-major `(n, m)` while computing (one weight row per block element), transposed
    // below when m > 1.
    let value = |t: usize| {
        let (j, i) = (t / m, t % m);
        crate::simd::dot(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k])
            + bias.map_or(0.0, |b| b[j])
    };
    let len = m * n;
    let block = if parallel { len.div_ceil(4 * rayon::current_num_threads()).max(1) } else { len };
    let by_output = crate::cpu::par_collect(len, block, |r| r.map(value))?;
    if m == 1 {
        return Ok(by_output);
    }
    let mut y = vec![0f32; len];
    for (j, col) in by_output.chunks_exact(m).enumerate() {
        for (i, &v) in col.iter().enumerate() {
            y[i * n + j] = v;
        }
    }
    Ok(y)
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Linear::forward((xs, xl), (ws, wl), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = Linear::grads(x, weight, None, grad)?;
        Ok((dx, dw))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Linear::forward((xs, xl), (ws, wl), Some((bs, bl)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads> {
        Linear::grads(x, weight, Some(bias), grad)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Var;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// `x W^T + b` summed naively in f64.
    fn naive(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum();
                y[i * n + j] = (s + b.map_or(0.0, |b| b[j] as f64)) as f32;
            }
        }
        y
    }

    #[test]
    fn forward_and_gradients_match_a_naive_product() {
        let dev = Device::Cpu;
        // Dot-product rows (1..=4, with and without threads), the gemm path, tails shorter
        // than the vector width, and a 3-D input.
        for (lead, n, k, with_bias) in [
            (vec![1], 7, 5, true),
            (vec![1], 300, 301, true),
            (vec![3], 5, 70, false),
            (vec![4], 129, 600, true),
            (vec![9], 6, 33, true),
            (vec![2, 5], 17, 40, false),
            (vec![1], 1, 1, true),
        ] {
            let m: usize = lead.iter().product();
            let xv = values(m * k, 1 + n as u64);
            let wv = values(n * k, 2 + k as u64);
            let bv = values(n, 3);
            let mut xdims = lead.clone();
            xdims.push(k);
            let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), xdims, &dev).unwrap()).unwrap();
            let w = Var::from_tensor(&Tensor::from_vec(wv.clone(), (n, k), &dev).unwrap()).unwrap();
            let b = Var::from_tensor(&Tensor::from_vec(bv.clone(), n, &dev).unwrap()).unwrap();
            let y = linear(&x, &w, with_bias.then_some(b.as_tensor())).unwrap();
            let mut ydims = lead.clone();
            ydims.push(n);
            assert_eq!(y.dims(), ydims.as_slice());
            let want = naive(&xv, &wv, with_bias.then_some(&bv), m, n, k);
            let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() <= 1e-5 * (1.0 + e.abs()), "{lead:?} {n} {k}: {g} vs {e}");
            }
            // d(sum(y * c))/dx = c W, /dW = c^T x, /db = column sums of c.
            let cv = values(m * n, 4);
            let c = Tensor::from_vec(cv.clone(), (m, n), &dev).unwrap().reshape(ydims).unwrap();
            let grads = (y * c).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = grads.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let dw = grads.get(&w).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for i in 0..m {
                for t in 0..k {
                    let e: f64 = (0..n).map(|j| cv[i * n + j] as f64 * wv[j * k + t] as f64).sum();
                    assert!((dx[i * k + t] as f64 - e).abs() < 1e-4, "dx {lead:?} {n} {k}");
                }
            }
            for j in 0..n {
                for t in 0..k {
                    let e: f64 = (0..m).map(|i| cv[i * n + j] as f64 * xv[i * k + t] as f64).sum();
                    assert!((dw[j * k + t] as f64 - e).abs() < 1e-4, "dw {lead:?} {n} {k}");
                }
            }
            if with_bias {
                let db = grads.get(&b).unwrap().to_vec1::<f32>().unwrap();
                for j in 0..n {
                    let e: f64 = (0..m).map(|i| cv[i * n + j] as f64).sum();
                    assert!((db[j] as f64 - e).abs() < 1e-4, "db {lead:?} {n} {k}");
                }
            }
        }
    }

    #[test]
    fn strided_inputs_and_candle_agree() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(values(6 * 10, 9), (10, 6), &dev).unwrap().t().unwrap();
        let w = Tensor::from_vec(values(8 * 10, 8), (8, 10), &dev).unwrap();
        let b = Tensor::from_vec(values(8, 7), 8, &dev).unwrap();
        let ours = linear(&x, &w, Some(&b)).unwrap();
        let theirs = candle_nn::Linear::new(w, Some(b));
        let theirs = candle_core::Module::forward(&theirs, &x).unwrap();
        let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }

    #[test]
    fn shapes_that_do_not_fit_are_errors() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((3, 4), DType::F32, &dev).unwrap();
        assert!(linear(&Tensor::zeros((2, 5), DType::F32, &dev).unwrap(), &w, None).is_err());
        let b = Tensor::zeros(2, DType::F32, &dev).unwrap();
        assert!(linear(&Tensor::zeros((2, 4), DType::F32, &dev).unwrap(), &w, Some(&b)).is_err());
        let one = Tensor::new(1f32, &dev).unwrap();
        assert!(linear(&one, &w, None).is_err());
    }
}
