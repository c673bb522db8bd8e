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

use crate::memo::{KeptBuffer, KeptLayout};
use crate::sgemm::{matmul, Mat, MatMut};

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
    linear_kept(x, weight, bias, None)
}

/// [`linear`], the weight's transpose (what batches of more than a few rows multiply by) kept
/// in `transposed` (a constant weight's; see [`crate::layers::Linear`]).
pub(crate) fn linear_kept(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    transposed: Option<&KeptBuffer>,
) -> Result<Tensor> {
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
        let op = Linear { transposed: transposed.cloned() };
        match bias {
            Some(b) => x2.apply_op3(&w, &b.flatten_all()?.contiguous()?, op)?,
            None => x2.apply_op2(&w, op)?,
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
#[derive(Clone)]
struct Linear {
    /// Where a constant weight keeps its transpose between calls.
    transposed: Option<KeptBuffer>,
}

impl Linear {
    fn forward(
        &self,
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
            let mut y = product_with_transposed_weight(
                x,
                w,
                (m, n, k),
                parallel,
                self.transposed.as_ref(),
            )?;
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

/// `x (m, k) W^T` for `W (n, k)` as `x` times `W^T` laid out `(k, n)` row-major: the kept
/// transpose of a constant weight, or one made now in scratch. The `gemm` crate, handed `W`
/// itself as either operand (`x W^T` with `W^T` a strided view, or `(W x^T)^T`), reads it
/// one strided element at a time while packing, rows `k` (a power of two here) apart: the
/// scratch CNN's 32x32768 -> 128 layer took 19.5 ms (14 GFLOP/s) and ResNet50's
/// 8x2048 -> 1000 4.4 ms (`examples/linear_shapes`); on the transpose 3-5 ms and 0.6 ms.
fn product_with_transposed_weight(
    x: &[f32],
    w: &[f32],
    (m, n, k): (usize, usize, usize),
    parallel: bool,
    kept: Option<&KeptBuffer>,
) -> Result<Vec<f32>> {
    let mut y = vec![0f32; m * n];
    let product = |wt: &[f32], y: &mut [f32]| {
        matmul(MatMut::rows(y, m, n), Mat::rows(x, m, k), Mat::rows(wt, k, n), false, parallel)
    };
    match kept {
        Some(kept) => {
            let wt = kept.get(KeptLayout::Transpose, k * n, || {
                let mut wt = vec![0f32; k * n];
                crate::cpu::transpose_into(w, (n, k), &mut wt);
                Ok(wt)
            })?;
            product(&wt, &mut y)?;
        }
        None => crate::cpu::with_scratch(k * n, 0, |wt, _| {
            crate::cpu::transpose_into(w, (n, k), wt);
            product(wt, &mut y)
        })?,
    }
    Ok(y)
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
        self.forward((xs, xl), (ws, wl), None)
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
        self.forward((xs, xl), (ws, wl), Some((bs, bl)))
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

    /// A `layers::Linear` over a constant weight keeps the weight's transpose after its first
    /// batched call (not after a single row, which multiplies by the weight itself), and
    /// every call equals the free function's bit for bit; over a variable it keeps nothing
    /// and follows the variable's updates.
    #[test]
    fn kept_transpose_matches_a_fresh_one() {
        use crate::layers::Linear as Layer;
        use candle_core::Module;
        let dev = Device::Cpu;
        let (m, n, k) = (7, 19, 300);
        let x = Tensor::from_vec(values(m * k, 11), (m, k), &dev).unwrap();
        let w = Tensor::from_vec(values(n * k, 12), (n, k), &dev).unwrap();
        let b = Tensor::from_vec(values(n, 13), n, &dev).unwrap();
        let layer = Layer::new(w.clone(), Some(b.clone()));
        let kept = |l: &Layer| format!("{l:?}").contains("KeptBuffer(\"Transpose\")");
        let diff = |a: &Tensor, e: &Tensor| {
            let d = (a - e).unwrap().abs().unwrap().flatten_all().unwrap();
            d.max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        let one = x.narrow(0, 0, 1).unwrap();
        let y1 = layer.forward(&one).unwrap();
        assert_eq!(diff(&y1, &linear(&one, &w, Some(&b)).unwrap()), 0.0);
        assert!(!kept(&layer), "a single row does not use the transpose");
        let fresh = linear(&x, &w, Some(&b)).unwrap();
        for call in 0..2 {
            assert_eq!(diff(&layer.forward(&x).unwrap(), &fresh), 0.0, "call {call}");
            assert!(kept(&layer), "call {call}: the transpose should be kept");
        }
        let var = Var::from_tensor(&w).unwrap();
        let trained = Layer::new(var.as_tensor().clone(), Some(b.clone()));
        assert_eq!(diff(&trained.forward(&x).unwrap(), &fresh), 0.0);
        assert!(!kept(&trained), "a variable's transpose is not kept");
        let w2 = Tensor::from_vec(values(n * k, 14), (n, k), &dev).unwrap();
        var.set(&w2).unwrap();
        let d = diff(&trained.forward(&x).unwrap(), &linear(&x, &w2, Some(&b)).unwrap());
        assert_eq!(d, 0.0, "after the variable's update");
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
            // The weight transposed in several tiles both ways, none of them full.
            (vec![6], 37, 700, true),
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
