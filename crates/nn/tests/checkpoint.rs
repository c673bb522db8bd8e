#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Checkpoint save / load / resume.

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, Optimizer, VarMap};
use deeprecog_nn::checkpoint::{self, RunConfig, OPTIMIZER_FILE, RUN_FILE, WEIGHTS_FILE};
use deeprecog_nn::optim::{Adam, AdamConfig, Stateful};
use deeprecog_nn::Error;

fn model(init: Init) -> VarMap {
    let varmap = VarMap::new();
    varmap.get((3, 2), "fc.weight", init, DType::F32, &Device::Cpu).unwrap();
    varmap.get(3, "fc.bias", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
    varmap
}

fn vars(varmap: &VarMap) -> Vec<candle_core::Var> {
    // A fixed order, since the optimizer identifies parameters by position.
    let data = varmap.data().lock().unwrap();
    vec![data["fc.weight"].clone(), data["fc.bias"].clone()]
}

fn step(varmap: &VarMap, opt: &mut Adam, i: usize) {
    let x = Tensor::new(&[[1.0f32, (i as f32).sin()]], &Device::Cpu).unwrap();
    let v = vars(varmap);
    let y = x.matmul(&v[0].as_tensor().t().unwrap()).unwrap().broadcast_add(v[1].as_tensor());
    let loss = y.unwrap().sqr().unwrap().sum_all().unwrap();
    opt.backward_step(&loss).unwrap();
}

fn values(varmap: &VarMap) -> Vec<f32> {
    vars(varmap)
        .iter()
        .flat_map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

#[test]
fn round_trip_restores_weights_config_and_optimizer() {
    let dir = tempfile::tempdir().unwrap();
    let a = model(Init::Randn { mean: 0.0, stdev: 1.0 });
    let mut opt = Adam::new(vars(&a), AdamConfig { lr: 0.01, ..Default::default() }).unwrap();
    step(&a, &mut opt, 0);
    let run = RunConfig {
        seed: 42,
        epoch: 5,
        model: serde_json::json!({"blocks": 3}),
        training: serde_json::json!({"lr": 0.01}),
        metrics: serde_json::json!({"val_accuracy": 0.8}),
        ..Default::default()
    };
    checkpoint::save(dir.path(), &a, &run, Some(&opt.state().unwrap())).unwrap();
    for f in [WEIGHTS_FILE, OPTIMIZER_FILE, RUN_FILE] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);

    let b = model(Init::Const(0.0));
    let loaded = checkpoint::load(dir.path(), &b, &Device::Cpu).unwrap();
    assert_eq!(loaded.run.parts.models, ["model"]);
    assert_eq!(loaded.run.parts.optimizers, ["optimizer"]);
    assert_eq!(RunConfig { parts: Default::default(), ..loaded.run }, run);
    assert_eq!(values(&a), values(&b));
    let state = loaded.optimizer.unwrap();
    assert_eq!(state.step, 1);
    assert!(state.tensors.contains_key("exp_avg.0"));
}

#[test]
fn resume_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = AdamConfig { lr: 0.05, ..Default::default() };
    let reference = model(Init::Const(0.3));
    let mut opt = Adam::new(vars(&reference), cfg).unwrap();
    for i in 0..10 {
        step(&reference, &mut opt, i);
    }

    let first = model(Init::Const(0.3));
    let mut opt = Adam::new(vars(&first), cfg).unwrap();
    for i in 0..4 {
        step(&first, &mut opt, i);
    }
    let run = RunConfig { epoch: 4, ..Default::default() };
    checkpoint::save(dir.path(), &first, &run, Some(&opt.state().unwrap())).unwrap();
    drop((first, opt));

    let resumed = model(Init::Const(-1.0));
    let loaded = checkpoint::load(dir.path(), &resumed, &Device::Cpu).unwrap();
    let mut opt = Adam::new(vars(&resumed), cfg).unwrap();
    opt.load_state(loaded.optimizer.unwrap()).unwrap();
    for i in loaded.run.epoch..10 {
        step(&resumed, &mut opt, i);
    }
    assert_eq!(values(&reference), values(&resumed));
}

#[test]
fn corrupt_or_mismatched_files_are_typed_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = model(Init::Const(1.0));
    checkpoint::save(dir.path(), &a, &RunConfig::default(), None).unwrap();
    assert!(!dir.path().join(OPTIMIZER_FILE).exists());

    std::fs::write(dir.path().join(WEIGHTS_FILE), b"not a safetensors file").unwrap();
    let b = model(Init::Const(0.0));
    match checkpoint::load(dir.path(), &b, &Device::Cpu) {
        Err(Error::Checkpoint { path, .. }) => assert!(path.ends_with(WEIGHTS_FILE)),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }

    std::fs::write(dir.path().join(RUN_FILE), b"{ truncated").unwrap();
    let err = checkpoint::load(dir.path(), &b, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains(RUN_FILE), "{err}");

    // A model of another shape is refused and left untouched.
    checkpoint::save(dir.path(), &a, &RunConfig::default(), None).unwrap();
    let other = VarMap::new();
    other.get((4, 2), "fc.weight", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
    other.get(3, "fc.bias", Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
    let err = checkpoint::load(dir.path(), &other, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    assert!(err.to_string().contains("fc.weight"), "{err}");
}

#[test]
fn an_interrupted_save_leaves_a_complete_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("last");
    let a = model(Init::Const(1.0));
    checkpoint::save(&dir, &a, &RunConfig { epoch: 1, ..Default::default() }, None).unwrap();

    // A save killed while writing its staging folder: the old checkpoint stays, and the next
    // save clears the leftover.
    let staging = root.path().join(".last.staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join(WEIGHTS_FILE), b"half written").unwrap();
    assert_eq!(checkpoint::read_run(&dir).unwrap().epoch, 1);
    checkpoint::save(&dir, &a, &RunConfig { epoch: 2, ..Default::default() }, None).unwrap();
    assert!(!staging.exists());
    assert_eq!(checkpoint::read_run(&dir).unwrap().epoch, 2);

    // Killed between its two renames: the old checkpoint waits under `.last.previous`.
    std::fs::rename(&dir, root.path().join(".last.previous")).unwrap();
    assert!(checkpoint::exists(&dir));
    let b = model(Init::Const(0.0));
    assert_eq!(checkpoint::load(&dir, &b, &Device::Cpu).unwrap().run.epoch, 2);
    assert_eq!(values(&a), values(&b));
}

#[test]
fn part_names_are_checked() {
    let root = tempfile::tempdir().unwrap();
    let a = model(Init::Const(1.0));
    let run = RunConfig::default();
    for bad in [[("g", &a), ("g", &a)], [("../x", &a), ("d", &a)]] {
        let err = checkpoint::save_parts(root.path().join("c"), &bad, &[], &run).unwrap_err();
        assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
    }
    checkpoint::save_parts(root.path().join("c"), &[("g", &a), ("d", &a)], &[], &run).unwrap();
    let err = checkpoint::load_parts(root.path().join("c"), &[("e", &a)], &Device::Cpu);
    assert!(err.unwrap_err().to_string().contains("no model part `e`"));
}
