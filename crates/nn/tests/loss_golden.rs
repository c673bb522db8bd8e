#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Losses against real PyTorch / torchvision (`golden/loss_torch_reference.py`, float64):
//! `F.binary_cross_entropy_with_logits` (unreduced and mean, logits up to +-1000),
//! its `weight=` and `pos_weight=` forms, `torchvision.ops.sigmoid_focal_loss`,
//! `F.cross_entropy` and `F.mse_loss`; both the values and torch autograd's gradients with
//! respect to the logits (predictions for mse) are checked.

use candle_core::{DType, Device, Tensor, Var};
use deeprecog_nn::loss;
use serde_json::Value;

const GOLDEN: &str = include_str!("golden/loss_torch_golden.json");

fn golden() -> Value {
    serde_json::from_str(GOLDEN).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn tensor(v: &Value, dtype: DType) -> Tensor {
    Tensor::new(f64s(v).as_slice(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

fn scalar(t: Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// f64: 1e-12 relative (absolute below 1); f32: 1e-6 relative (absolute below 1), the inputs
/// themselves being rounded to f32 first.
fn tol(dtype: DType, b: f64) -> f64 {
    let rel = if dtype == DType::F64 { 1e-12 } else { 1e-6 };
    rel * b.abs().max(1.0)
}

/// Checks `got` against torch's `want`, keeping the largest absolute difference.
fn check(what: &str, dtype: DType, got: f64, want: f64, worst: &mut f64) {
    assert!(got.is_finite(), "{what} ({dtype:?}): {got}");
    *worst = worst.max((got - want).abs());
    assert!((got - want).abs() <= tol(dtype, want), "{what} ({dtype:?}): got {got}, torch {want}");
}

/// Backpropagates `f(x)` and compares d f / d x with torch's gradient `case["grad"]`. Skipped:
/// null entries (torch's own f64 gradient is not finite) and, in f32, the entries listed in
/// `case["grad_f32_nonfinite"]` (torch's f32 gradient is not finite there either). Returns how
/// many entries were compared.
fn check_grad(
    what: &str,
    dtype: DType,
    x: &Tensor,
    f: impl Fn(&Tensor) -> Tensor,
    case: &Value,
    worst: &mut f64,
) -> usize {
    let skip_f32: Vec<u64> = case["grad_f32_nonfinite"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let want = &case["grad"];
    let var = Var::from_tensor(x).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let got = grads.get(var.as_tensor()).unwrap();
    let got: Vec<f64> = got.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    let want = want.as_array().unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    let mut n = 0;
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        if dtype == DType::F32 && skip_f32.contains(&(i as u64)) {
            continue;
        }
        if let Some(b) = b.as_f64() {
            check(&format!("{what} grad {i}"), dtype, *a, b, worst);
            n += 1;
        }
    }
    n
}

fn run(dtype: DType) {
    let g = golden();
    assert!(g["_comment"].as_str().unwrap().contains("torch 2."));
    let name = |c: &Value| c["name"].as_str().unwrap().to_string();

    let (mut worst, mut worst_grad) = (0.0, 0.0);
    let cases = g["bce"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let (x, t) = (tensor(&c["logits"], dtype), tensor(&c["targets"], dtype));
        let el = loss::bce_with_logits_elementwise(&x, &t).unwrap();
        let el: Vec<f64> = el.to_dtype(DType::F64).unwrap().to_vec1().unwrap();
        let want = f64s(&c["elementwise"]);
        assert_eq!(el.len(), want.len());
        for (i, (a, b)) in el.iter().zip(&want).enumerate() {
            check(&format!("bce {} element {i}", name(c)), dtype, *a, *b, &mut worst);
        }
        let mean = scalar(loss::bce_with_logits(&x, &t).unwrap());
        check(
            &format!("bce {} mean", name(c)),
            dtype,
            mean,
            c["mean"].as_f64().unwrap(),
            &mut worst,
        );
        let f = |x: &Tensor| loss::bce_with_logits(x, &t).unwrap();
        check_grad(&format!("bce {}", name(c)), dtype, &x, f, c, &mut worst_grad);
    }
    eprintln!("bce ({dtype:?}): max abs diff {worst:e}, gradient {worst_grad:e}");

    let (mut worst, mut worst_grad) = (0.0, 0.0);
    let cases = g["weighted_bce"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for c in cases {
        let (x, t) = (tensor(&c["logits"], dtype), tensor(&c["targets"], dtype));
        let (neg, pos) = (c["neg_weight"].as_f64().unwrap(), c["pos_weight"].as_f64().unwrap());
        let f = |x: &Tensor| loss::weighted_bce_with_logits(x, &t, neg, pos).unwrap();
        check(
            &format!("weighted {}", name(c)),
            dtype,
            scalar(f(&x)),
            c["mean"].as_f64().unwrap(),
            &mut worst,
        );
        check_grad(&format!("weighted {}", name(c)), dtype, &x, f, c, &mut worst_grad);
    }
    eprintln!("weighted bce ({dtype:?}): max abs diff {worst:e}, gradient {worst_grad:e}");

    let (mut worst, mut worst_grad) = (0.0, 0.0);
    let mut compared = 0;
    let cases = g["focal"].as_array().unwrap();
    assert_eq!(cases.len(), 15);
    for c in cases {
        let (x, t) = (tensor(&c["logits"], dtype), tensor(&c["targets"], dtype));
        let (alpha, gamma) = (c["alpha"].as_f64().unwrap(), c["gamma"].as_f64().unwrap());
        let f = |x: &Tensor| loss::focal_loss_with_logits(x, &t, alpha, gamma).unwrap();
        check(
            &format!("focal {}", name(c)),
            dtype,
            scalar(f(&x)),
            c["mean"].as_f64().unwrap(),
            &mut worst,
        );
        compared += check_grad(&format!("focal {}", name(c)), dtype, &x, f, c, &mut worst_grad);
    }
    // 15 cases of 8 or 16 logits; torch's own gradient is NaN at 6 entries in f64 and at 8 in
    // f32 (gamma = 0.5 at saturated correct predictions).
    assert_eq!(compared, 5 * (16 + 8 + 16) - if dtype == DType::F64 { 6 } else { 8 });
    eprintln!("focal ({dtype:?}): max abs diff {worst:e}, gradient {worst_grad:e}");

    let (mut worst, mut worst_grad) = (0.0, 0.0);
    let cases = g["cross_entropy"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let rows: Vec<Vec<f64>> = c["logits"].as_array().unwrap().iter().map(f64s).collect();
        let logits = Tensor::new(rows, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
        let classes: Vec<u32> = c["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| u32::try_from(v.as_u64().unwrap()).unwrap())
            .collect();
        let classes = Tensor::new(classes.as_slice(), &Device::Cpu).unwrap();
        let f = |x: &Tensor| loss::cross_entropy(x, &classes).unwrap();
        check(
            &format!("ce {}", name(c)),
            dtype,
            scalar(f(&logits)),
            c["mean"].as_f64().unwrap(),
            &mut worst,
        );
        check_grad(&format!("ce {}", name(c)), dtype, &logits, f, c, &mut worst_grad);
    }
    eprintln!("cross entropy ({dtype:?}): max abs diff {worst:e}, gradient {worst_grad:e}");

    let (mut worst, mut worst_grad) = (0.0, 0.0);
    let cases = g["mse"].as_array().unwrap();
    assert_eq!(cases.len(), 2);
    for c in cases {
        let (p, t) = (tensor(&c["predictions"], dtype), tensor(&c["targets"], dtype));
        let f = |x: &Tensor| loss::mse(x, &t).unwrap();
        check(
            &format!("mse {}", name(c)),
            dtype,
            scalar(f(&p)),
            c["mean"].as_f64().unwrap(),
            &mut worst,
        );
        check_grad(&format!("mse {}", name(c)), dtype, &p, f, c, &mut worst_grad);
    }
    eprintln!("mse ({dtype:?}): max abs diff {worst:e}, gradient {worst_grad:e}");
}

#[test]
fn losses_match_torch_in_f64() {
    run(DType::F64);
}

#[test]
fn losses_match_torch_in_f32() {
    run(DType::F32);
}

/// The golden's two weighted forms agree where they should, so the `pos_weight` cases really
/// test the same function as the `weight` ones.
#[test]
fn golden_weighted_cases_are_consistent() {
    let g = golden();
    let cases = g["weighted_bce"].as_array().unwrap();
    let pos: Vec<&Value> = cases.iter().filter(|c| c["torch_call"] == "pos_weight=pos").collect();
    assert_eq!(pos.len(), 2);
    for c in pos {
        assert_eq!(c["neg_weight"], 1.0);
        assert!(f64s(&c["targets"]).iter().all(|&t| t == 0.0 || t == 1.0));
    }
}

/// Regression: with gamma = 0 the focal loss is (alpha-weighted) BCE, and its gradient must stay
/// finite at saturated correct predictions, where 1 - p_t is exactly 0 (it was NaN: powf's
/// backward gives 0 * 0^-1). torch's gradient there is 0 (see the golden's focal `_g0.0` cases).
#[test]
fn focal_gamma_zero_gradient_is_bce_gradient_at_saturated_logits() {
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::new(&[1000.0f64, -1000.0, 60.0, -60.0, 17.0, 0.5], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let t = Tensor::new(&[1.0f64, 0.0, 1.0, 0.0, 1.0, 0.0], &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        let grad = |f: &dyn Fn(&Tensor) -> Tensor| -> Vec<f64> {
            let v = Var::from_tensor(&x).unwrap();
            let g = f(v.as_tensor()).backward().unwrap();
            g.get(v.as_tensor()).unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
        };
        let focal = grad(&|x| loss::focal_loss_with_logits(x, &t, -1.0, 0.0).unwrap());
        let bce = grad(&|x| loss::bce_with_logits(x, &t).unwrap());
        assert!(focal.iter().all(|g| g.is_finite()), "{dtype:?}: {focal:?}");
        assert_eq!(focal, bce, "{dtype:?}");
        assert!(focal[5] > 0.0, "{focal:?}");
    }
}
