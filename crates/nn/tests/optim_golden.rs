#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Optimizers against two independent goldens: the float64 NumPy reference in
//! `golden/optim_reference.py` (written from the PyTorch documentation) and the trajectories of
//! real `torch.optim` in `golden/optim_torch_reference.py` (same cases, same JSON layout, Keras
//! RMSprop left out); plus frozen parameters, state round trips and convergence.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Optimizer;
use deeprecog_nn::optim::{
    Adam, AdamConfig, AdamW, AdamWConfig, NAdam, NAdamConfig, OptimizerState, RmsProp,
    RmsPropConfig, Sgd, SgdConfig, Stateful,
};
use serde_json::Value;

const GOLDEN: &str = include_str!("golden/optim_golden.json");
const TORCH_GOLDEN: &str = include_str!("golden/optim_torch_golden.json");

/// Object-safe view of an optimizer, so the tests can loop over kinds.
trait Opt {
    fn dyn_step(&mut self, grads: &GradStore);
    fn dyn_state(&self) -> OptimizerState;
    fn dyn_load(&mut self, s: OptimizerState);
}

impl<T: Optimizer + Stateful> Opt for T {
    fn dyn_step(&mut self, grads: &GradStore) {
        Optimizer::step(self, grads).unwrap();
    }
    fn dyn_state(&self) -> OptimizerState {
        Stateful::state(self).unwrap()
    }
    fn dyn_load(&mut self, s: OptimizerState) {
        Stateful::load_state(self, s).unwrap();
    }
}

fn build(kind: &str, config: &Value, vars: Vec<Var>) -> Box<dyn Opt> {
    let c = config.clone();
    match kind {
        "adam" => {
            Box::new(Adam::new(vars, serde_json::from_value::<AdamConfig>(c).unwrap()).unwrap())
        }
        "adamw" => {
            Box::new(AdamW::new(vars, serde_json::from_value::<AdamWConfig>(c).unwrap()).unwrap())
        }
        "sgd" => Box::new(Sgd::new(vars, serde_json::from_value::<SgdConfig>(c).unwrap()).unwrap()),
        "rmsprop" => Box::new(
            RmsProp::new(vars, serde_json::from_value::<RmsPropConfig>(c).unwrap()).unwrap(),
        ),
        "nadam" => {
            Box::new(NAdam::new(vars, serde_json::from_value::<NAdamConfig>(c).unwrap()).unwrap())
        }
        other => panic!("unknown optimizer kind {other}"),
    }
}

fn golden() -> Value {
    serde_json::from_str(GOLDEN).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Gradients whose value is exactly `g` for each var: loss = sum_k sum(var_k * g_k).
fn grads_for(vars: &[&Var], gs: &[&[f64]]) -> GradStore {
    let mut loss: Option<Tensor> = None;
    for (v, g) in vars.iter().zip(gs) {
        let g = Tensor::new(*g, v.device()).unwrap().to_dtype(v.dtype()).unwrap();
        let term = v.as_tensor().mul(&g).unwrap().sum_all().unwrap();
        loss = Some(match loss {
            None => term,
            Some(l) => (l + term).unwrap(),
        });
    }
    loss.unwrap().backward().unwrap()
}

fn values(v: &Var) -> Vec<f64> {
    v.as_tensor().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
}

/// Runs every case of one golden file; returns the largest `|got - reference|` seen.
fn run_golden(text: &str, dtype: DType, tol: impl Fn(f64) -> f64) -> f64 {
    let g: Value = serde_json::from_str(text).unwrap();
    let theta0 = f64s(&g["theta0"]);
    let grads: Vec<Vec<f64>> = g["grads"].as_array().unwrap().iter().map(f64s).collect();
    let cases = g["optimizers"].as_array().unwrap();
    assert!(cases.len() >= 15);
    let mut worst = 0.0f64;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let var = Var::from_tensor(
            &Tensor::new(theta0.as_slice(), &Device::Cpu).unwrap().to_dtype(dtype).unwrap(),
        )
        .unwrap();
        let mut opt = build(case["kind"].as_str().unwrap(), &case["config"], vec![var.clone()]);
        let expected = case["params_after_step"].as_array().unwrap();
        assert_eq!(expected.len(), grads.len());
        for (t, (gr, exp)) in grads.iter().zip(expected).enumerate() {
            opt.dyn_step(&grads_for(&[&var], &[gr]));
            let got = values(&var);
            let exp = f64s(exp);
            assert_eq!(got.len(), exp.len(), "{name}");
            for (k, (a, b)) in got.iter().zip(exp).enumerate() {
                worst = worst.max((a - b).abs());
                assert!(
                    (a - b).abs() <= tol(b),
                    "{name} ({dtype:?}) step {} param {k}: got {a}, reference {b}",
                    t + 1
                );
            }
        }
    }
    worst
}

#[test]
fn golden_f64_matches_reference_to_1e12() {
    let worst = run_golden(GOLDEN, DType::F64, |b| 1e-12 * b.abs().max(1.0));
    eprintln!("numpy golden, f64: max abs diff {worst:e}");
}

#[test]
fn golden_f32_matches_reference_to_2e6() {
    let worst = run_golden(GOLDEN, DType::F32, |b| 2e-6 * b.abs().max(1.0));
    eprintln!("numpy golden, f32: max abs diff {worst:e}");
}

#[test]
fn torch_golden_f64_matches_real_torch_to_1e12() {
    let worst = run_golden(TORCH_GOLDEN, DType::F64, |b| 1e-12 * b.abs().max(1.0));
    eprintln!("torch golden, f64: max abs diff {worst:e}");
}

#[test]
fn torch_golden_f32_matches_real_torch_to_2e6() {
    let worst = run_golden(TORCH_GOLDEN, DType::F32, |b| 2e-6 * b.abs().max(1.0));
    eprintln!("torch golden, f32: max abs diff {worst:e}");
}

/// The two goldens describe the same experiment: same start, same gradients, the same cases with
/// the same configs (torch lacks only Keras' RMSprop), and trajectories that agree.
#[test]
fn torch_and_numpy_goldens_cover_the_same_cases() {
    let numpy = golden();
    let torch: Value = serde_json::from_str(TORCH_GOLDEN).unwrap();
    assert!(torch["_comment"].as_str().unwrap().contains("torch 2."));
    assert_eq!(numpy["theta0"], torch["theta0"]);
    assert_eq!(numpy["grads"], torch["grads"]);
    let tcases = torch["optimizers"].as_array().unwrap();
    let mut matched = 0;
    for n in numpy["optimizers"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        let Some(t) = tcases.iter().find(|t| t["name"] == n["name"]) else {
            assert!(name.starts_with("rmsprop_keras"), "{name} is missing from the torch golden");
            assert_eq!(n["config"]["eps_inside_sqrt"], true, "{name}");
            continue;
        };
        matched += 1;
        assert_eq!(n["kind"], t["kind"], "{name}");
        assert_eq!(n["config"], t["config"], "{name}");
        let steps = |v: &Value| -> Vec<Vec<f64>> {
            v["params_after_step"].as_array().unwrap().iter().map(f64s).collect()
        };
        for (a, b) in steps(n).iter().flatten().zip(steps(t).iter().flatten()) {
            assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{name}: numpy {a} vs torch {b}");
        }
    }
    assert_eq!(matched, tcases.len());
    assert_eq!(matched, 18);
}

fn all_configs() -> Vec<(String, String, Value)> {
    golden()["optimizers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["kind"].as_str().unwrap().to_string(),
                c["config"].clone(),
            )
        })
        .collect()
}

#[test]
fn params_without_gradient_are_untouched_and_get_no_state() {
    for (name, kind, config) in all_configs() {
        let a = Var::new(&[0.5f64, -1.0, 2.0], &Device::Cpu).unwrap();
        let frozen = Var::new(&[3.0f64, -4.0], &Device::Cpu).unwrap();
        // Position 1 is a non-float var: ignored, but it keeps its place in the numbering.
        let ints = Var::from_tensor(&Tensor::new(&[1u32, 2], &Device::Cpu).unwrap()).unwrap();
        let mut opt = build(&kind, &config, vec![a.clone(), ints, frozen.clone()]);
        for _ in 0..3 {
            opt.dyn_step(&grads_for(&[&a], &[&[0.1, -0.2, 0.3]]));
        }
        assert_eq!(values(&frozen), vec![3.0, -4.0], "{name}: frozen var moved");
        assert_ne!(values(&a), vec![0.5, -1.0, 2.0], "{name}: trained var did not move");
        let state = opt.dyn_state();
        assert_eq!(state.step, 3);
        assert!(
            state.tensors.keys().all(|k| k.ends_with(".0")),
            "{name}: {:?}",
            state.tensors.keys()
        );
        assert!(state.tensors.contains_key("step.0"), "{name}");

        // Unfrozen later, its own step count starts at 1: same as a fresh optimizer's first step.
        let g = [0.7, -0.05];
        opt.dyn_step(&grads_for(&[&a, &frozen], &[&[0.1, -0.2, 0.3], &g]));
        let fresh = Var::new(&[3.0f64, -4.0], &Device::Cpu).unwrap();
        let mut fresh_opt = build(&kind, &config, vec![fresh.clone()]);
        fresh_opt.dyn_step(&grads_for(&[&fresh], &[&g]));
        assert_eq!(values(&frozen), values(&fresh), "{name}: unfrozen var");
    }
}

#[test]
fn state_round_trip_through_safetensors_resumes_identically() {
    let dir = tempfile::tempdir().unwrap();
    let g = golden();
    let grads: Vec<Vec<f64>> = g["grads"].as_array().unwrap().iter().map(f64s).collect();
    for (name, kind, config) in all_configs() {
        let init = [0.5f32, -1.25, 2.0, 0.0, -0.3];
        let second = [[1.0f32, 2.0], [-3.0, 0.5]];
        let mk =
            || (Var::new(&init, &Device::Cpu).unwrap(), Var::new(&second, &Device::Cpu).unwrap());
        let step = |opt: &mut Box<dyn Opt>, a: &Var, b: &Var, t: usize| {
            let ga: Vec<f32> = grads[t].iter().map(|&x| x as f32).collect();
            let gb = Tensor::new(&[[0.3f32, -0.1], [0.2, 0.4]], &Device::Cpu)
                .unwrap()
                .affine(t as f64 - 2.0, 0.0)
                .unwrap();
            let ga = Tensor::new(ga.as_slice(), &Device::Cpu).unwrap();
            let loss = (a.as_tensor().mul(&ga).unwrap().sum_all().unwrap()
                + b.as_tensor().mul(&gb).unwrap().sum_all().unwrap())
            .unwrap();
            opt.dyn_step(&loss.backward().unwrap());
        };

        let (a1, b1) = mk();
        let mut straight = build(&kind, &config, vec![a1.clone(), b1.clone()]);
        for t in 0..6 {
            step(&mut straight, &a1, &b1, t);
        }

        let (a2, b2) = mk();
        let mut first = build(&kind, &config, vec![a2.clone(), b2.clone()]);
        for t in 0..3 {
            step(&mut first, &a2, &b2, t);
        }
        let path = dir.path().join(format!("{name}.safetensors"));
        first.dyn_state().save_safetensors(&path).unwrap();
        drop(first);
        // A new process would rebuild the vars from the model checkpoint.
        let a3 = Var::from_tensor(&a2.as_tensor().copy().unwrap()).unwrap();
        let b3 = Var::from_tensor(&b2.as_tensor().copy().unwrap()).unwrap();
        let mut resumed = build(&kind, &config, vec![a3.clone(), b3.clone()]);
        let state = OptimizerState::load_safetensors(&path, &Device::Cpu).unwrap();
        assert_eq!(state.step, 3, "{name}");
        resumed.dyn_load(state);
        for t in 3..6 {
            step(&mut resumed, &a3, &b3, t);
        }
        assert_eq!(values(&a1), values(&a3), "{name}: a after resume");
        let flat =
            |v: &Var| -> Vec<f32> { v.as_tensor().flatten_all().unwrap().to_vec1().unwrap() };
        assert_eq!(flat(&b1), flat(&b3), "{name}: b after resume");
        assert_eq!(resumed.dyn_state().step, 6);
    }
}

#[test]
fn load_state_rejects_mismatched_shapes_and_missing_tensors() {
    let v = Var::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).unwrap();
    let mut opt = Adam::new(vec![v.clone()], AdamConfig::default()).unwrap();
    opt.backward_step(&v.as_tensor().sum_all().unwrap()).unwrap();
    let good = opt.state().unwrap();

    let other = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
    let mut wrong_shape = Adam::new(vec![other], AdamConfig::default()).unwrap();
    let err = wrong_shape.load_state(good.clone()).unwrap_err().to_string();
    assert!(err.contains("exp_avg") && err.contains("shape"), "{err}");

    let mut missing = good.clone();
    missing.tensors.remove("exp_avg_sq.0");
    let mut fresh = Adam::new(vec![v.clone()], AdamConfig::default()).unwrap();
    let err = fresh.load_state(missing).unwrap_err().to_string();
    assert!(err.contains("exp_avg_sq.0"), "{err}");
    // A failed load leaves the optimizer as it was.
    assert_eq!(fresh.state().unwrap().step, 0);

    let mut ams = Adam::new(vec![v], AdamConfig { amsgrad: true, ..Default::default() }).unwrap();
    let err = ams.load_state(good).unwrap_err().to_string();
    assert!(err.contains("max_exp_avg_sq.0"), "{err}");
}

#[test]
fn invalid_configs_are_errors() {
    let v = Var::new(&[1.0f32], &Device::Cpu).unwrap();
    let nesterov_no_momentum = SgdConfig { nesterov: true, ..Default::default() };
    assert!(Sgd::new(vec![v.clone()], nesterov_no_momentum).is_err());
    let nesterov_dampening =
        SgdConfig { nesterov: true, momentum: 0.9, dampening: 0.1, ..Default::default() };
    assert!(Sgd::new(vec![v.clone()], nesterov_dampening).is_err());
    assert!(Adam::new(vec![v.clone()], AdamConfig { beta1: 1.0, ..Default::default() }).is_err());
    assert!(NAdam::new(vec![v], NAdamConfig { lr: -1.0, ..Default::default() }).is_err());
}

#[test]
fn defaults_are_pytorch_and_keras_and_serde_round_trips() {
    let a = AdamWConfig::default();
    assert_eq!((a.lr, a.beta1, a.beta2, a.eps, a.weight_decay), (1e-3, 0.9, 0.999, 1e-8, 1e-2));
    assert_eq!(AdamConfig::default().weight_decay, 0.0);
    let r = RmsPropConfig::default();
    assert_eq!((r.lr, r.alpha, r.eps, r.eps_inside_sqrt), (1e-2, 0.99, 1e-8, false));
    let k = RmsPropConfig::keras();
    assert_eq!((k.lr, k.alpha, k.eps, k.eps_inside_sqrt), (1e-3, 0.9, 1e-7, true));
    let n = NAdamConfig::default();
    assert_eq!((n.lr, n.momentum_decay), (2e-3, 4e-3));
    let json = serde_json::to_string(&k).unwrap();
    assert_eq!(serde_json::from_str::<RmsPropConfig>(&json).unwrap(), k);
    // Missing fields take the PyTorch defaults.
    let partial: SgdConfig = serde_json::from_str(r#"{"momentum": 0.9}"#).unwrap();
    assert_eq!(partial, SgdConfig { momentum: 0.9, ..Default::default() });
    let v = Var::new(&[1.0f32], &Device::Cpu).unwrap();
    assert_eq!(RmsProp::keras(vec![v]).unwrap().learning_rate(), 1e-3);
}

#[test]
fn set_learning_rate_is_used_by_the_next_step() {
    let v = Var::new(&[1.0f64], &Device::Cpu).unwrap();
    let mut opt = Sgd::new(vec![v.clone()], SgdConfig { lr: 0.1, ..Default::default() }).unwrap();
    opt.set_learning_rate(0.5);
    assert_eq!(opt.learning_rate(), 0.5);
    opt.step(&grads_for(&[&v], &[&[2.0]])).unwrap();
    assert_eq!(values(&v), vec![0.0]);
}

type MakeOpt = Box<dyn Fn(Vec<Var>) -> Box<dyn Opt>>;

/// Least squares y = X w* + b*: every optimizer must fit it.
#[test]
fn tiny_regression_converges_with_each_optimizer() {
    let dev = Device::Cpu;
    let n = 32;
    let xs: Vec<f32> = (0..n * 3).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    let x = Tensor::from_vec(xs, (n, 3), &dev).unwrap();
    let w_true = Tensor::new(&[[1.5f32], [-2.0], [0.5]], &dev).unwrap();
    let y = (x.matmul(&w_true).unwrap() + 0.3).unwrap();
    let cases: Vec<(&str, MakeOpt)> = vec![
        (
            "adam",
            Box::new(|v| {
                Box::new(Adam::new(v, AdamConfig { lr: 0.05, ..Default::default() }).unwrap())
            }),
        ),
        (
            "adamw",
            Box::new(|v| {
                Box::new(
                    AdamW::new(
                        v,
                        AdamWConfig { lr: 0.05, weight_decay: 1e-4, ..Default::default() },
                    )
                    .unwrap(),
                )
            }),
        ),
        (
            "sgd",
            Box::new(|v| {
                Box::new(Sgd::new(v, SgdConfig { lr: 0.1, ..Default::default() }).unwrap())
            }),
        ),
        (
            "sgd_nesterov",
            Box::new(|v| {
                Box::new(
                    Sgd::new(
                        v,
                        SgdConfig { lr: 0.05, momentum: 0.9, nesterov: true, ..Default::default() },
                    )
                    .unwrap(),
                )
            }),
        ),
        (
            "rmsprop",
            Box::new(|v| {
                Box::new(RmsProp::new(v, RmsPropConfig { lr: 0.01, ..Default::default() }).unwrap())
            }),
        ),
        (
            "rmsprop_centered_momentum",
            Box::new(|v| {
                Box::new(
                    RmsProp::new(
                        v,
                        RmsPropConfig {
                            lr: 0.005,
                            centered: true,
                            momentum: 0.5,
                            ..Default::default()
                        },
                    )
                    .unwrap(),
                )
            }),
        ),
        (
            "rmsprop_keras",
            Box::new(|v| {
                Box::new(
                    RmsProp::new(v, RmsPropConfig { lr: 0.01, ..RmsPropConfig::keras() }).unwrap(),
                )
            }),
        ),
        (
            "nadam",
            Box::new(|v| {
                Box::new(NAdam::new(v, NAdamConfig { lr: 0.05, ..Default::default() }).unwrap())
            }),
        ),
    ];
    for (name, make) in cases {
        let w = Var::zeros((3, 1), DType::F32, &dev).unwrap();
        let b = Var::zeros(1, DType::F32, &dev).unwrap();
        let mut opt = make(vec![w.clone(), b.clone()]);
        let mse = || {
            let pred = x.matmul(w.as_tensor()).unwrap().broadcast_add(b.as_tensor()).unwrap();
            pred.sub(&y).unwrap().sqr().unwrap().mean_all().unwrap()
        };
        let initial = mse().to_scalar::<f32>().unwrap();
        for _ in 0..400 {
            opt.dyn_step(&mse().backward().unwrap());
        }
        let fin = mse().to_scalar::<f32>().unwrap();
        assert!(fin < 1e-3 * initial, "{name}: loss {initial} -> {fin}");
    }
}
