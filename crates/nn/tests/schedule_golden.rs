#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Learning-rate schedules against `golden/optim_reference.py` (PyTorch's documented formulas)
//! and against real `torch.optim.lr_scheduler` (`golden/optim_torch_reference.py`).

use deeprecog_nn::schedule::{
    CosineAnnealingLr, ExponentialLr, LrSchedule, MultiStepLr, PlateauConfig, ReduceOnPlateau,
    StepLr, Warmup,
};
use serde_json::Value;

const GOLDEN: &str = include_str!("golden/optim_golden.json");
const TORCH_GOLDEN: &str = include_str!("golden/optim_torch_golden.json");

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1e-300) + 1e-300
}

#[test]
fn schedules_match_reference() {
    let worst = check_schedules(GOLDEN);
    eprintln!("numpy golden: max abs diff {worst:e}");
}

#[test]
fn schedules_match_real_torch() {
    let worst = check_schedules(TORCH_GOLDEN);
    eprintln!("torch golden: max abs diff {worst:e}");
}

/// Both goldens run the same schedules on the same metrics.
#[test]
fn torch_and_numpy_schedule_goldens_agree_on_the_cases() {
    let a: Value = serde_json::from_str(GOLDEN).unwrap();
    let b: Value = serde_json::from_str(TORCH_GOLDEN).unwrap();
    let (a, b) = (a["schedules"].as_array().unwrap(), b["schedules"].as_array().unwrap());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        for key in ["name", "kind", "params", "metrics"] {
            assert_eq!(x[key], y[key], "{} {key}", x["name"]);
        }
        assert_eq!(x["lrs"].as_array().unwrap().len(), y["lrs"].as_array().unwrap().len());
    }
}

/// Checks every schedule of one golden file; returns the largest `|got - reference|`.
fn check_schedules(text: &str) -> f64 {
    let mut worst = 0.0f64;
    let g: Value = serde_json::from_str(text).unwrap();
    let scheds = g["schedules"].as_array().unwrap();
    assert_eq!(scheds.len(), 7);
    for s in scheds {
        let name = s["name"].as_str().unwrap();
        let p = &s["params"];
        let f = |k: &str| p[k].as_f64().unwrap();
        let u = |k: &str| p[k].as_u64().unwrap() as usize;
        let expected: Vec<f64> =
            s["lrs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let got: Vec<f64> = match s["kind"].as_str().unwrap() {
            "step" => {
                let sch = StepLr::new(f("base_lr"), u("step_size"), f("gamma"));
                (0..expected.len()).map(|e| sch.lr(e)).collect()
            }
            "multistep" => {
                let ms = p["milestones"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_u64().unwrap() as usize)
                    .collect();
                let sch = MultiStepLr::new(f("base_lr"), ms, f("gamma"));
                (0..expected.len()).map(|e| sch.lr(e)).collect()
            }
            "exponential" => {
                let sch = ExponentialLr::new(f("base_lr"), f("gamma"));
                (0..expected.len()).map(|e| sch.lr(e)).collect()
            }
            "cosine" => {
                let sch = CosineAnnealingLr::new(f("base_lr"), u("t_max"), f("eta_min"));
                (0..expected.len()).map(|e| sch.lr(e)).collect()
            }
            "warmup_cosine" => {
                let inner = CosineAnnealingLr::new(f("base_lr"), u("t_max"), f("eta_min"));
                let sch = Warmup::new(inner, u("warmup"), f("start_factor"));
                (0..expected.len()).map(|e| sch.lr(e)).collect()
            }
            "plateau" => {
                let mut cfg: PlateauConfig = serde_json::from_value(p.clone()).unwrap();
                cfg.eps = 1e-8;
                let mut sch = ReduceOnPlateau::new(f("initial_lr"), cfg);
                let metrics = s["metrics"].as_array().unwrap();
                let lrs: Vec<f64> =
                    metrics.iter().map(|m| sch.observe(m.as_f64().unwrap())).collect();
                assert_eq!(sch.lr(0), *lrs.last().unwrap());
                lrs
            }
            other => panic!("unknown schedule {other}"),
        };
        assert_eq!(got.len(), expected.len(), "{name}");
        for (e, (a, b)) in got.iter().zip(&expected).enumerate() {
            worst = worst.max((a - b).abs());
            assert!(close(*a, *b), "{name} index {e}: got {a}, reference {b}");
        }
    }
    worst
}

#[test]
fn plateau_defaults_are_pytorch() {
    let c = PlateauConfig::default();
    assert_eq!((c.factor, c.patience, c.threshold, c.cooldown, c.min_lr), (0.1, 10, 1e-4, 0, 0.0));
    let mut s = ReduceOnPlateau::new(1.0, c);
    // 1 improvement, then 10 bad epochs are tolerated; the 11th reduces.
    for _ in 0..11 {
        assert_eq!(s.observe(1.0), 1.0);
    }
    assert!((s.observe(1.0) - 0.1).abs() < 1e-15);
    assert!(s.observe(f64::NAN) > 0.0);
    assert_eq!(s.best(), 1.0);
}
