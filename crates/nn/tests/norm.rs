//! `norm::BatchNorm` against candle-nn's `BatchNorm` (an independent implementation of
//! PyTorch's formulas, built from generic ops): training output, running statistics, and the
//! input / weight / bias gradients, with and without the fused ReLU, on odd shapes, batch 1 and
//! 1-D inputs; evaluation mode; the f64 (composed-op) path against the f32 kernels.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, ModuleT, Tensor, Var};
use deeprecog_nn::norm::{BatchNorm, BatchNormConfig};

mod common;
use common::max_diff;

fn randn(shape: &[usize], name: &str, dtype: DType) -> Tensor {
    common::randn(11, shape, name, dtype)
}

struct Run {
    y: Tensor,
    dx: Tensor,
    dw: Tensor,
    db: Tensor,
    mean: Tensor,
    var: Tensor,
}

/// One training forward + backward of `sum(y * r)` with weight / bias / statistics from `tag`.
fn ours(x: &Tensor, r: &Tensor, relu: bool, dtype: DType, tag: &str) -> Run {
    let c = x.dim(1).unwrap();
    let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
    let w = Var::from_tensor(&(randn(&[c], &format!("{tag}w"), dtype) + 1.0).unwrap()).unwrap();
    let b = Var::from_tensor(&randn(&[c], &format!("{tag}b"), dtype)).unwrap();
    let rm = randn(&[c], &format!("{tag}m"), dtype);
    let rv = (randn(&[c], &format!("{tag}v"), dtype).abs().unwrap() + 0.5).unwrap();
    let cfg = BatchNormConfig { eps: 1e-3, momentum: 0.3 };
    let bn = BatchNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), rm, rv, cfg).unwrap();
    let y = if relu {
        bn.forward_relu_t(x.as_tensor(), true).unwrap()
    } else {
        bn.forward_t(x.as_tensor(), true).unwrap()
    };
    let grads = (&y * r.to_dtype(dtype).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    Run {
        dx: grads.get(x.as_tensor()).unwrap().clone(),
        dw: grads.get(w.as_tensor()).unwrap().clone(),
        db: grads.get(b.as_tensor()).unwrap().clone(),
        y,
        mean: bn.running_mean().clone(),
        var: bn.running_var().clone(),
    }
}

fn candle(x: &Tensor, r: &Tensor, relu: bool, tag: &str) -> Run {
    let c = x.dim(1).unwrap();
    let dtype = DType::F64;
    let x = Var::from_tensor(&x.to_dtype(dtype).unwrap()).unwrap();
    let w = Var::from_tensor(&(randn(&[c], &format!("{tag}w"), dtype) + 1.0).unwrap()).unwrap();
    let b = Var::from_tensor(&randn(&[c], &format!("{tag}b"), dtype)).unwrap();
    let rm = randn(&[c], &format!("{tag}m"), dtype);
    let rv = (randn(&[c], &format!("{tag}v"), dtype).abs().unwrap() + 0.5).unwrap();
    let cfg = candle_nn::BatchNormConfig { eps: 1e-3, momentum: 0.3, ..Default::default() };
    let bn = candle_nn::BatchNorm::new_with_momentum(
        c,
        rm,
        rv,
        w.as_tensor().clone(),
        b.as_tensor().clone(),
        cfg.eps,
        cfg.momentum,
    )
    .unwrap();
    let y = bn.forward_t(x.as_tensor(), true).unwrap();
    let y = if relu { y.relu().unwrap() } else { y };
    let grads = (&y * r.to_dtype(dtype).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
    Run {
        dx: grads.get(x.as_tensor()).unwrap().clone(),
        dw: grads.get(w.as_tensor()).unwrap().clone(),
        db: grads.get(b.as_tensor()).unwrap().clone(),
        y,
        mean: bn.running_mean().clone(),
        var: bn.running_var().clone(),
    }
}

#[test]
fn training_matches_candle_nn_forward_backward_and_statistics() {
    let shapes: [&[usize]; 5] = [&[2, 3, 5, 4], &[1, 4, 3, 3], &[5, 3], &[3, 2, 7], &[4, 6, 2, 3]];
    for (i, shape) in shapes.iter().enumerate() {
        // Shifted and scaled so the statistics are far from 0 / 1.
        let x = ((randn(shape, &format!("x{i}"), DType::F32) * 3.0).unwrap() + 2.0).unwrap();
        for relu in [false, true] {
            let r = randn(shape, &format!("r{i}"), DType::F32);
            let tag = format!("p{i}");
            let want = candle(&x, &r, relu, &tag);
            for (dtype, tol) in [(DType::F32, 2e-4), (DType::F64, 1e-9)] {
                let got = ours(&x, &r, relu, dtype, &tag);
                let case = format!("shape {shape:?} relu {relu} {dtype:?}");
                for (what, a, b) in [
                    ("output", &got.y, &want.y),
                    ("input gradient", &got.dx, &want.dx),
                    ("weight gradient", &got.dw, &want.dw),
                    ("bias gradient", &got.db, &want.db),
                    ("running mean", &got.mean, &want.mean),
                    ("running variance", &got.var, &want.var),
                ] {
                    let scale = b.abs().unwrap().max_all().unwrap().to_dtype(DType::F64).unwrap();
                    let scale = scale.to_scalar::<f64>().unwrap().max(1.0);
                    let d = max_diff(a, b) / scale;
                    assert!(d < tol, "{case}: {what} differs by {d:e}");
                }
            }
        }
    }
}

#[test]
fn evaluation_uses_running_statistics_and_scale_shift() {
    let x = randn(&[2, 3, 4, 5], "ex", DType::F32);
    let w = (randn(&[3], "ew", DType::F32) + 1.0).unwrap();
    let b = randn(&[3], "eb", DType::F32);
    let rm = randn(&[3], "em", DType::F32);
    let rv = (randn(&[3], "ev", DType::F32).abs().unwrap() + 0.5).unwrap();
    let cfg = BatchNormConfig::default();
    let bn = BatchNorm::new(w.clone(), b.clone(), rm.clone(), rv.clone(), cfg).unwrap();
    let theirs = candle_nn::BatchNorm::new(3, rm.clone(), rv.clone(), w, b, cfg.eps).unwrap();
    let got = bn.forward_t(&x, false).unwrap();
    let want = theirs.forward_t(&x, false).unwrap();
    assert!(max_diff(&got, &want) < 1e-5);
    let relu = bn.forward_relu_t(&x, false).unwrap();
    assert!(max_diff(&relu, &want.relu().unwrap()) < 1e-5);
    // Gradients in evaluation mode (a frozen-statistics fine-tune) against the same formula
    // from candle ops in f64.
    for relu in [false, true] {
        let xv = Var::from_tensor(&x).unwrap();
        let wv = Var::from_tensor(bn.weight()).unwrap();
        let bv = Var::from_tensor(bn.bias()).unwrap();
        let layer = BatchNorm::new(
            wv.as_tensor().clone(),
            bv.as_tensor().clone(),
            rm.clone(),
            rv.clone(),
            cfg,
        )
        .unwrap();
        let y = if relu {
            layer.forward_relu_t(xv.as_tensor(), false).unwrap()
        } else {
            layer.forward_t(xv.as_tensor(), false).unwrap()
        };
        let r = randn(y.dims(), "er", DType::F32);
        let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let f64v = |t: &Tensor| Var::from_tensor(&t.to_dtype(DType::F64).unwrap()).unwrap();
        let (x64, w64, b64) = (f64v(&x), f64v(bn.weight()), f64v(bn.bias()));
        let inv =
            (rv.to_dtype(DType::F64).unwrap() + cfg.eps).unwrap().sqrt().unwrap().recip().unwrap();
        let scale = (w64.as_tensor() * &inv).unwrap();
        let shift =
            (b64.as_tensor() - (rm.to_dtype(DType::F64).unwrap() * &scale).unwrap()).unwrap();
        let want = x64
            .as_tensor()
            .broadcast_mul(&scale.reshape((1, 3, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&shift.reshape((1, 3, 1, 1)).unwrap())
            .unwrap();
        let want = if relu { want.relu().unwrap() } else { want };
        let r64 = r.to_dtype(DType::F64).unwrap();
        let g64 = (&want * &r64).unwrap().sum_all().unwrap().backward().unwrap();
        for (a, b) in [(&xv, &x64), (&wv, &w64), (&bv, &b64)] {
            let d = max_diff(g.get(a.as_tensor()).unwrap(), g64.get(b.as_tensor()).unwrap());
            assert!(d < 1e-4, "relu {relu}: evaluation-mode gradient differs by {d}");
        }
    }
    // Evaluation leaves the running statistics alone.
    assert_eq!(max_diff(bn.running_mean(), &rm), 0.0);
    assert_eq!(max_diff(bn.running_var(), &rv), 0.0);
}

#[test]
fn one_value_per_channel_and_wrong_channels_are_errors() {
    let bn = BatchNorm::new(
        Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(),
        BatchNormConfig::default(),
    )
    .unwrap();
    let one = Tensor::ones((1, 3, 1, 1), DType::F32, &Device::Cpu).unwrap();
    assert!(bn.forward_t(&one, true).is_err());
    assert!(bn.forward_t(&one, false).is_ok());
    let four = Tensor::ones((2, 4, 3, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(bn.forward_t(&four, true).is_err());
}

/// `forward(layer, x)` for a layer over variables of `[x, w, b]` and running statistics
/// `rm`, `rv`, then the gradients of `sum(y * r)` (`r` seeded by `tag`) with respect to the
/// three variables: the output, those gradients and the layer's new running mean.
fn run_layer(
    [x, w, b]: [&Tensor; 3],
    [rm, rv]: [&Tensor; 2],
    tag: &str,
    forward: impl Fn(&BatchNorm, &Tensor) -> Tensor,
) -> (Tensor, Vec<Tensor>, Tensor) {
    let vars = [x, w, b].map(|t| Var::from_tensor(t).unwrap());
    let cfg = BatchNormConfig { eps: 1e-5, momentum: 0.1 };
    let [xv, wv, bv] = &vars;
    let (w, b) = (wv.as_tensor().clone(), bv.as_tensor().clone());
    let bn = BatchNorm::new(w, b, rm.clone(), rv.clone(), cfg).unwrap();
    let y = forward(&bn, xv.as_tensor());
    let r = randn(y.dims(), tag, DType::F32);
    let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect();
    (y, grads, bn.running_mean().clone())
}

/// `forward_relu6_t` (the clip fused into the normalisation) against the plain layer followed
/// by candle's `clamp(0, 6)`, in training and evaluation mode: output and the input, weight and
/// bias gradients. A weight of about 4 puts a good share of the outputs above 6.
#[test]
fn fused_relu6_matches_a_separate_clamp() {
    for train in [true, false] {
        let x = randn(&[3, 5, 4, 3], "r6x", DType::F32);
        let w = (randn(&[5], "r6w", DType::F32) + 4.0).unwrap();
        let b = (randn(&[5], "r6b", DType::F32) + 1.0).unwrap();
        let rm = randn(&[5], "r6m", DType::F32);
        let rv = (randn(&[5], "r6v", DType::F32).abs().unwrap() + 0.5).unwrap();
        let run = |fused: bool| {
            let (y, grads, _) = run_layer([&x, &w, &b], [&rm, &rv], "r6r", |bn, x| {
                if fused {
                    bn.forward_relu6_t(x, train).unwrap()
                } else {
                    bn.forward_t(x, train).unwrap().clamp(0f32, 6f32).unwrap()
                }
            });
            (y, grads)
        };
        let ((y1, g1), (y2, g2)) = (run(true), run(false));
        let clipped = y2.ge(6f32).unwrap().to_dtype(DType::F32).unwrap().sum_all().unwrap();
        assert!(clipped.to_scalar::<f32>().unwrap() > 5.0, "some outputs reach the ceiling");
        assert!(max_diff(&y1, &y2) < 1e-5, "train {train}: outputs differ");
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            let d = max_diff(a, b);
            assert!(d < 1e-4, "train {train}: gradient {i} differs by {d}");
        }
    }
}

/// `forward_leaky_relu_t` (the LeakyReLU fused into the normalisation on the CPU in training)
/// against the plain layer followed by `activation::leaky_relu`, in training and evaluation mode,
/// at DCGAN's slope and at 0: the same output and input, weight and bias gradients (as values:
/// the two paths may differ in the sign of a zero). A negative slope is refused.
#[test]
fn fused_leaky_relu_matches_the_separate_ops() {
    use deeprecog_nn::activation::leaky_relu;
    let cfg = BatchNormConfig { eps: 1e-5, momentum: 0.1 };
    let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (train, slope) in [(true, 0.2), (true, 0.0), (false, 0.2)] {
        let x = randn(&[3, 5, 4, 3], "lkx", DType::F32);
        let w = (randn(&[5], "lkw", DType::F32) + 1.0).unwrap();
        let b = randn(&[5], "lkb", DType::F32);
        let rm = randn(&[5], "lkm", DType::F32);
        let rv = (randn(&[5], "lkv", DType::F32).abs().unwrap() + 0.5).unwrap();
        let run = |fused: bool| {
            run_layer([&x, &w, &b], [&rm, &rv], "lkr", |bn, x| {
                if fused {
                    bn.forward_leaky_relu_t(x, train, slope).unwrap()
                } else {
                    leaky_relu(&bn.forward_t(x, train).unwrap(), slope).unwrap()
                }
            })
        };
        let ((y1, g1, m1), (y2, g2, m2)) = (run(true), run(false));
        let negative = values(&y2).iter().filter(|&&v| v < 0.0).count();
        assert!(slope == 0.0 || negative > 10, "some outputs on the leaky side: {negative}");
        assert_eq!(values(&y1), values(&y2), "train {train}, slope {slope}: outputs");
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            assert_eq!(values(a), values(b), "train {train}, slope {slope}: gradient {i}");
        }
        assert_eq!(values(&m1), values(&m2), "train {train}, slope {slope}: running mean");
    }
    let bn = BatchNorm::new(
        Tensor::ones(2, DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        Tensor::ones(2, DType::F32, &Device::Cpu).unwrap(),
        cfg,
    )
    .unwrap();
    let x = randn(&[2, 2, 3, 3], "lkn", DType::F32);
    assert!(bn.forward_leaky_relu_t(&x, true, -0.1).is_err());
}
