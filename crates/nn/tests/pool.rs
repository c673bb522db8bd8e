#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pooling forward and backward against naive loops and finite differences.

use candle_core::{Device, Tensor, Var};
use deeprecog_nn::pool::{avg_pool2d, max_pool2d, AvgPool2d, MaxPool2d};

/// Deterministic values with deliberate ties (quantised to 0.25).
fn input(shape: (usize, usize, usize, usize), seed: u64) -> Vec<f64> {
    let n = shape.0 * shape.1 * shape.2 * shape.3;
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % 16) as f64 * 0.25 - 2.0
        })
        .collect()
}

struct Naive {
    out: Vec<f64>,
    argmax: Vec<usize>,
    oh: usize,
    ow: usize,
}

/// PyTorch's definition written as plainly as possible.
fn naive(
    x: &[f64],
    (n, c, h, w): (usize, usize, usize, usize),
    k: usize,
    s: usize,
    p: usize,
    max: bool,
    include_pad: bool,
) -> Naive {
    let oh = (h + 2 * p - k) / s + 1;
    let ow = (w + 2 * p - k) / s + 1;
    let mut out = vec![];
    let mut argmax = vec![];
    for b in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let (mut best, mut arg, mut sum, mut cnt) = (f64::NEG_INFINITY, usize::MAX, 0.0, 0);
                for ky in 0..k {
                    for kx in 0..k {
                        let y = (oy * s + ky) as isize - p as isize;
                        let xx = (ox * s + kx) as isize - p as isize;
                        if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                            continue;
                        }
                        let i = b * h * w + y as usize * w + xx as usize;
                        if x[i] > best {
                            best = x[i];
                            arg = i;
                        }
                        sum += x[i];
                        cnt += 1;
                    }
                }
                argmax.push(arg);
                out.push(if max {
                    best
                } else {
                    sum / if include_pad { (k * k) as f64 } else { cnt as f64 }
                });
            }
        }
    }
    Naive { out, argmax, oh, ow }
}

const CASES: [(usize, usize, usize); 4] = [(3, 2, 1), (2, 2, 0), (3, 1, 0), (3, 1, 1)];

#[test]
fn max_pool_matches_naive_forward_and_backward() {
    let shape = (2, 3, 7, 9);
    let x = input(shape, 7);
    for (k, s, p) in CASES {
        let want = naive(&x, shape, k, s, p, true, false);
        let var = Var::from_vec(x.clone(), shape, &Device::Cpu).unwrap();
        let y = max_pool2d(var.as_tensor(), k, s, p).unwrap();
        assert_eq!(y.dims(), [2, 3, want.oh, want.ow]);
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), want.out, "k{k} s{s} p{p}");
        // d(sum(y * g))/dx: g scattered to the first argmax of each window.
        let g: Vec<f64> = (0..want.out.len()).map(|i| 1.0 + i as f64).collect();
        let gt = Tensor::from_vec(g.clone(), y.shape(), &Device::Cpu).unwrap();
        let grads = (y * gt).unwrap().sum_all().unwrap().backward().unwrap();
        let dx = grads.get(&var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let mut want_dx = vec![0.0; x.len()];
        for (o, &a) in want.argmax.iter().enumerate() {
            want_dx[a] += g[o];
        }
        assert_eq!(dx, want_dx, "k{k} s{s} p{p}");
    }
}

#[test]
fn avg_pool_matches_naive_forward_and_backward() {
    let shape = (2, 3, 7, 9);
    let x = input(shape, 11);
    for include_pad in [true, false] {
        for (k, s, p) in CASES {
            let want = naive(&x, shape, k, s, p, false, include_pad);
            let var = Var::from_vec(x.clone(), shape, &Device::Cpu).unwrap();
            let y = avg_pool2d(var.as_tensor(), k, s, p, include_pad).unwrap();
            let got = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (a, b) in got.iter().zip(&want.out) {
                assert!((a - b).abs() < 1e-12, "k{k} s{s} p{p} pad{include_pad}: {a} vs {b}");
            }
            // Finite differences are exact for a linear map: check every input.
            let g: Vec<f64> = (0..want.out.len()).map(|i| (i % 5) as f64 - 2.0).collect();
            let gt = Tensor::from_vec(g.clone(), y.shape(), &Device::Cpu).unwrap();
            let grads = (y * gt).unwrap().sum_all().unwrap().backward().unwrap();
            let dx = grads.get(&var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let f = |xs: &[f64]| {
                let o = naive(xs, shape, k, s, p, false, include_pad).out;
                o.iter().zip(&g).map(|(a, b)| a * b).sum::<f64>()
            };
            let eps = 1e-3;
            for i in 0..x.len() {
                let mut hi = x.clone();
                hi[i] += eps;
                let mut lo = x.clone();
                lo[i] -= eps;
                let fd = (f(&hi) - f(&lo)) / (2.0 * eps);
                assert!((fd - dx[i]).abs() < 1e-8, "k{k} s{s} p{p} i{i}: {fd} vs {}", dx[i]);
            }
        }
    }
}

#[test]
fn max_pool_gradient_matches_finite_differences_without_ties() {
    let shape = (1, 2, 5, 6);
    // Distinct values so the max is locally smooth.
    let x: Vec<f64> = (0..60).map(|i| ((i * 37) % 61) as f64 * 0.1).collect();
    let var = Var::from_vec(x.clone(), shape, &Device::Cpu).unwrap();
    let y = max_pool2d(var.as_tensor(), 3, 2, 1).unwrap();
    let y2 = (y.sqr().unwrap().sum_all().unwrap()).backward().unwrap();
    let dx = y2.get(&var).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let f = |xs: &[f64]| -> f64 {
        naive(xs, shape, 3, 2, 1, true, false).out.iter().map(|v| v * v).sum()
    };
    for i in 0..x.len() {
        let eps = 1e-4;
        let mut hi = x.clone();
        hi[i] += eps;
        let mut lo = x.clone();
        lo[i] -= eps;
        let fd = (f(&hi) - f(&lo)) / (2.0 * eps);
        assert!((fd - dx[i]).abs() < 1e-6, "i{i}: {fd} vs {}", dx[i]);
    }
}

#[test]
fn ties_go_to_the_first_maximum() {
    let x = Var::from_vec(vec![1f32; 16], (1, 1, 4, 4), &Device::Cpu).unwrap();
    let y = max_pool2d(x.as_tensor(), 2, 2, 0).unwrap();
    let dx = y.sum_all().unwrap().backward().unwrap();
    let dx = dx.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let mut want = vec![0f32; 16];
    for i in [0, 2, 8, 10] {
        want[i] = 1.0;
    }
    assert_eq!(dx, want);
}

/// A NaN in a window is its maximum and takes the gradient, as in PyTorch; on the 2x2 fast
/// path and the general one.
#[test]
fn nan_wins_its_window() {
    let mut v: Vec<f32> = (0..16).map(|i| i as f32).collect();
    v[5] = f32::NAN; // window (0, 0) of 2x2 / 2; windows (0..2, 0..2) of 3x3 / 2 padded
    for (k, s, p) in [(2, 2, 0), (3, 2, 1)] {
        let x = Var::from_vec(v.clone(), (1, 1, 4, 4), &Device::Cpu).unwrap();
        let y = max_pool2d(x.as_tensor(), k, s, p).unwrap();
        let first = y.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!(first.is_nan(), "kernel {k}: {first}");
        let dx = y.sum_all().unwrap().backward().unwrap();
        let dx = dx.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(dx[5] >= 1.0, "kernel {k}: the NaN gets the gradient, {dx:?}");
    }
}

#[test]
fn f32_layers_and_errors() {
    let x =
        Tensor::arange(0f32, 2.0 * 7.0 * 9.0, &Device::Cpu).unwrap().reshape((1, 2, 7, 9)).unwrap();
    let m = candle_core::Module::forward(&MaxPool2d::new(3, 2, 1), &x).unwrap();
    assert_eq!(m.dims(), [1, 2, 4, 5]);
    let a = candle_core::Module::forward(&AvgPool2d::new(2, 2, 0), &x).unwrap();
    assert_eq!(a.dims(), [1, 2, 3, 4]);
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0], 5.0);
    // A transposed (non-contiguous) input is handled.
    let xt = x.transpose(2, 3).unwrap();
    let mt = max_pool2d(&xt, 3, 2, 1).unwrap();
    let want = max_pool2d(&xt.contiguous().unwrap(), 3, 2, 1).unwrap();
    assert_eq!(
        mt.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    assert!(max_pool2d(&x, 3, 2, 2).is_err(), "padding above half the kernel");
    assert!(max_pool2d(&x, 0, 1, 0).is_err());
    assert!(max_pool2d(&x.flatten_all().unwrap(), 2, 2, 0).is_err());
    assert!(max_pool2d(&x.to_dtype(candle_core::DType::U8).unwrap(), 2, 2, 0).is_err());
}

/// An input that tracks no gradient takes the maxima-only kernel: the same values as the
/// tracked op (which also finds the indices), NaNs included, on every window shape, on planes
/// narrower and wider than a vector.
#[test]
fn untracked_inputs_get_the_same_maxima() {
    let windows = [(2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 0), (3, 3, 0), (5, 2, 2)];
    for (shape, seed) in [((2, 3, 7, 8), 5), ((1, 2, 9, 37), 6)] {
        let mut x: Vec<f32> = input(shape, seed).iter().map(|&v| v as f32).collect();
        x[10] = f32::NAN;
        x[200] = f32::NAN;
        for (k, s, p) in windows {
            let plain = Tensor::from_vec(x.clone(), shape, &Device::Cpu).unwrap();
            let var = Var::from_vec(x.clone(), shape, &Device::Cpu).unwrap();
            assert!(!plain.track_op() && var.as_tensor().track_op());
            let fast = max_pool2d(&plain, k, s, p).unwrap();
            let full = max_pool2d(var.as_tensor(), k, s, p).unwrap();
            assert_eq!(fast.dims(), full.dims());
            let values = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let bits = |t: &Tensor| -> Vec<u32> { values(t).iter().map(|v| v.to_bits()).collect() };
            assert_eq!(bits(&fast), bits(&full), "{shape:?} k{k} s{s} p{p}");
            assert!(values(&fast).iter().any(|v| v.is_nan()), "{shape:?} k{k} s{s} p{p}");
        }
    }
}
