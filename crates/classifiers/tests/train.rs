#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The trainer on a tiny synthetic task: bright (label 1) vs dark (label 0) 12x16 images.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use deeprecog_classifiers::train::{
    evaluate, search, EarlyStopping, Metric, OptimizerKind, SearchStrategy, TrainConfig,
    TrainError, Trainer,
};
use deeprecog_classifiers::{ScratchCnn, ScratchCnnConfig};
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::transforms::Normalization;
use deeprecog_dataset::{Image, InMemory, Sample, Target};

fn samples(n: usize, seed: u64) -> Vec<Sample> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    (0..n)
        .map(|i| {
            let bright = i % 2 == 0;
            // Overlapping ranges so that single pixels are ambiguous, the mean is not.
            let data: Vec<u8> = (0..12 * 16 * 3)
                .map(|_| {
                    let noise = (next() % 140) as u8;
                    if bright {
                        90 + noise.min(165)
                    } else {
                        noise.saturating_add(20)
                    }
                })
                .collect();
            Sample {
                id: format!("img{seed}_{i}"),
                image: Image::from_raw(16, 12, 3, data).unwrap(),
                target: Target::Labels(vec![if bright { 1.0 } else { 0.0 }]),
                group: Some(if i % 3 == 0 { "a" } else { "b" }.to_string()),
            }
        })
        .collect()
}

fn loaders() -> (Loader<InMemory<Sample>>, Loader<InMemory<Sample>>) {
    let train = Loader::new(InMemory(samples(64, 1))).batch_size(8).shuffle(3).workers(1);
    let valid = Loader::new(InMemory(samples(32, 2))).batch_size(16).workers(1);
    (train, valid)
}

fn model(varmap: &VarMap) -> ScratchCnn {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, &Device::Cpu);
    let cfg = ScratchCnnConfig {
        blocks: 1,
        base_filters: 4,
        fc: 8,
        input: (3, 12, 16),
        ..Default::default()
    };
    ScratchCnn::new(&cfg, vb).unwrap()
}

fn config(out: &Path, epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        lr: 1e-2,
        out_dir: out.to_path_buf(),
        normalization: Normalization::Tanh,
        model_config: serde_json::json!({"blocks": 1}),
        ..Default::default()
    }
}

#[test]
fn learns_bright_vs_dark_and_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (train, valid) = loaders();
    let varmap = VarMap::new();
    let m = model(&varmap);
    let trainer = Trainer::new(config(dir.path(), 5));
    let history = trainer.fit(&m, varmap.all_vars(), &varmap, &train, &valid).unwrap();
    assert_eq!(history.epochs.len(), 5);
    let last = history.last().unwrap();
    assert!(last.train_accuracy > 0.9, "{history:?}");
    assert!(last.val_accuracy > 0.9, "{history:?}");
    assert!(last.val_auc.unwrap() > 0.95);
    assert!(last.images_per_sec > 0.0);
    for f in ["history.json", "curves.png", "last/model.safetensors", "best/run.json"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }

    let eval = evaluate(&m, &valid, &trainer.config().normalization, &Device::Cpu).unwrap();
    assert_eq!(eval.len(), 32);
    assert_eq!(eval.scores.len(), 32);
    assert!(eval.scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!((eval.loss - last.val_loss).abs() < 1e-6);
    let report = eval.report(&["bright"]).unwrap();
    assert!((report.mean_accuracy - last.val_accuracy).abs() < 1e-9);
}

#[test]
fn early_stopping_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let (train, valid) = loaders();
    let varmap = VarMap::new();
    let m = model(&varmap);
    let cfg = TrainConfig {
        // A zero learning rate freezes the validation loss, so it never improves.
        lr: 0.0,
        optimizer: OptimizerKind::Sgd { momentum: 0.9, nesterov: true },
        early_stopping: Some(EarlyStopping { patience: 2, metric: Metric::ValLoss }),
        ..config(dir.path(), 10)
    };
    let history = Trainer::new(cfg).fit(&m, varmap.all_vars(), &varmap, &train, &valid).unwrap();
    assert!(history.stopped_early);
    assert_eq!(history.epochs.len(), 3);
    assert_eq!(history.best_epoch, Some(1));
}

#[test]
fn resume_after_interruption_continues_from_the_saved_epoch() {
    let (train, valid) = loaders();
    let init = tempfile::tempdir().unwrap();
    let init_file = init.path().join("init.safetensors");
    let fresh = |load: bool| {
        let mut varmap = VarMap::new();
        let m = model(&varmap);
        if load {
            varmap.load(&init_file).unwrap();
        } else {
            varmap.save(&init_file).unwrap();
        }
        (varmap, m)
    };

    let whole = tempfile::tempdir().unwrap();
    let (varmap, m) = fresh(false);
    let reference = Trainer::new(config(whole.path(), 4))
        .fit(&m, varmap.all_vars(), &varmap, &train, &valid)
        .unwrap();

    let parts = tempfile::tempdir().unwrap();
    let (varmap, m) = fresh(true);
    // The order of the vars must be stable across runs: sort them by name.
    let vars = |vm: &VarMap| {
        let data = vm.data().lock().unwrap();
        let mut named: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
    };
    let first = Trainer::new(config(parts.path(), 2))
        .fit(&m, vars(&varmap), &varmap, &train, &valid)
        .unwrap();
    assert_eq!(first.epochs.len(), 2);
    drop((varmap, m));

    // A new process would start from a fresh model; the checkpoint restores it.
    let varmap = VarMap::new();
    let m = model(&varmap);
    let resumed = Trainer::new(config(parts.path(), 4))
        .fit(&m, vars(&varmap), &varmap, &train, &valid)
        .unwrap();
    assert_eq!(resumed.resumed_from, Some(2));
    assert_eq!(resumed.epochs.len(), 4);
    for (a, b) in reference.epochs.iter().zip(&resumed.epochs) {
        assert!((a.train_loss - b.train_loss).abs() < 1e-4, "{a:?} vs {b:?}");
        assert!((a.val_loss - b.val_loss).abs() < 1e-4, "{a:?} vs {b:?}");
    }
}

/// Wraps a model and turns its output into NaN from the `after`-th forward pass on.
struct Poisoned {
    inner: ScratchCnn,
    calls: AtomicUsize,
    after: usize,
}

impl ModuleT for Poisoned {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let y = self.inner.forward_t(xs, train)?;
        if train && self.calls.fetch_add(1, Ordering::SeqCst) >= self.after {
            return y.affine(f64::NAN, 0.0);
        }
        Ok(y)
    }
}

#[test]
fn nan_loss_is_reported_with_ids_and_checkpoints_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (train, valid) = loaders();
    let varmap = VarMap::new();
    // 8 batches per epoch: the poison hits epoch 2, batch 3.
    let m = Poisoned { inner: model(&varmap), calls: AtomicUsize::new(0), after: 10 };
    let err = Trainer::new(config(dir.path(), 5))
        .fit(&m, varmap.all_vars(), &varmap, &train, &valid)
        .unwrap_err();
    match err {
        TrainError::NonFiniteLoss { epoch, batch, ids, .. } => {
            assert_eq!((epoch, batch), (1, 2));
            assert_eq!(ids.len(), 8);
            assert!(ids.iter().all(|id| id.starts_with("img1_")));
        }
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
    let run = deeprecog_nn::checkpoint::read_run(dir.path().join("last")).unwrap();
    assert_eq!(run.epoch, 1);
}

#[test]
fn search_ranks_candidates() {
    let (train, valid) = loaders();
    let root = tempfile::tempdir().unwrap();
    let space = vec![("lr".to_string(), vec![serde_json::json!(0.0), serde_json::json!(0.02)])];
    let results = search(&space, SearchStrategy::Grid, Metric::ValAccuracy, |p| {
        let lr = p["lr"].as_f64().unwrap();
        let varmap = VarMap::new();
        let m = model(&varmap);
        let cfg = TrainConfig { lr, ..config(&root.path().join(format!("lr{lr}")), 2) };
        Trainer::new(cfg).fit(&m, varmap.all_vars(), &varmap, &train, &valid)
    })
    .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].params["lr"], serde_json::json!(0.02));
    let random =
        search(&space, SearchStrategy::Random { trials: 1, seed: 9 }, Metric::ValLoss, |_| {
            Ok(Default::default())
        })
        .unwrap();
    assert_eq!(random.len(), 1);
    assert_eq!(random[0].score, None);
}
