#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Supervised training through the engine on a tiny synthetic task: bright (label 1) vs dark
//! (label 0) 12x16 images. Weights and inputs are seeded: every run is the same.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{ModuleT, VarMap};
use deeprecog_classifiers::supervised::{evaluate, fit, TrainConfig};
use deeprecog_classifiers::{ScratchCnn, ScratchCnnConfig};
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::transforms::Normalization;
use deeprecog_dataset::{Image, InMemory, Sample, Target};
use deeprecog_nn::init::seeded_var_builder;
use deeprecog_nn::optim::{OptimizerConfig, SgdConfig};
use deeprecog_train::callbacks::EarlyStopping;
use deeprecog_train::search::{search, SearchStrategy};
use deeprecog_train::{Error, History, Monitor};

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
    let vb = seeded_var_builder(varmap, 11, DType::F32, &Device::Cpu);
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
        optimizer: OptimizerConfig::default().with_lr(1e-2),
        out_dir: out.to_path_buf(),
        ..Default::default()
    }
}

/// The model's vars sorted by name: the optimizer's state is keyed by position.
fn vars(varmap: &VarMap) -> Vec<Var> {
    let data = varmap.data().lock().unwrap();
    let mut named: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named.into_iter().map(|(_, v)| v).collect()
}

fn train_model<M: ModuleT>(
    m: &M,
    varmap: &VarMap,
    cfg: &TrainConfig,
) -> deeprecog_train::Result<History> {
    let (train, valid) = loaders();
    let model_config = serde_json::json!({"blocks": 1});
    fit(
        m,
        varmap,
        vars(varmap),
        Normalization::Tanh,
        model_config,
        cfg,
        &train,
        &valid,
        &Device::Cpu,
    )
}

fn bits(varmap: &VarMap) -> Vec<u32> {
    vars(varmap)
        .iter()
        .flat_map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn learns_bright_vs_dark_and_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let m = model(&varmap);
    let history = train_model(&m, &varmap, &config(dir.path(), 5)).unwrap();
    assert_eq!(history.epochs.len(), 5);
    let last = history.last().unwrap();
    let get = |k: &str| last.get(k).unwrap();
    assert!(get("train_accuracy") > 0.9, "{history:?}");
    assert!(get("val_accuracy") > 0.9, "{history:?}");
    assert!(get("val_auc") > 0.95);
    assert!(last.images_per_sec > 0.0);
    for f in ["history.json", "curves.png", "last/model.safetensors", "best/run.json"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    let best = deeprecog_nn::checkpoint::read_run(dir.path().join("best")).unwrap();
    assert_eq!(best.model, serde_json::json!({"blocks": 1}));

    let (_, valid) = loaders();
    let eval = evaluate(&m, &valid, &Normalization::Tanh, &Device::Cpu).unwrap();
    assert_eq!(eval.len(), 32);
    assert_eq!(eval.scores.len(), 32);
    assert!(eval.scores.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!((eval.loss - get("val_loss")).abs() < 1e-12);
    let report = eval.report(&["bright"]).unwrap();
    assert!((report.mean_accuracy - get("val_accuracy")).abs() < 1e-12);
}

#[test]
fn early_stopping_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let m = model(&varmap);
    let cfg = TrainConfig {
        // A zero learning rate freezes the validation loss, so it never improves.
        optimizer: OptimizerConfig::Sgd(SgdConfig {
            lr: 0.0,
            momentum: 0.9,
            nesterov: true,
            ..Default::default()
        }),
        early_stopping: Some(EarlyStopping { patience: 2, monitor: Monitor::min("val_loss") }),
        ..config(dir.path(), 10)
    };
    let history = train_model(&m, &varmap, &cfg).unwrap();
    assert!(history.stopped_early);
    assert_eq!(history.epochs.len(), 3);
    assert_eq!(history.best_epoch, Some(1));
}

#[test]
fn resume_after_interruption_continues_bit_for_bit() {
    let whole = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let m = model(&varmap);
    let reference = train_model(&m, &varmap, &config(whole.path(), 4)).unwrap();
    let reference_bits = bits(&varmap);

    let parts = tempfile::tempdir().unwrap();
    let varmap = VarMap::new();
    let m = model(&varmap);
    let first = train_model(&m, &varmap, &config(parts.path(), 2)).unwrap();
    assert_eq!(first.epochs.len(), 2);
    drop((varmap, m));

    // A new process starts from a freshly built model; the checkpoint restores it.
    let varmap = VarMap::new();
    let m = model(&varmap);
    let resumed = train_model(&m, &varmap, &config(parts.path(), 4)).unwrap();
    assert_eq!(resumed.resumed_from_step, Some(16));
    assert_eq!(resumed.epochs.len(), 4);
    for (a, b) in reference.epochs.iter().zip(&resumed.epochs) {
        assert_eq!(a.metrics, b.metrics, "epoch {}", a.epoch);
    }
    assert_eq!(reference_bits, bits(&varmap));
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
    let varmap = VarMap::new();
    // 8 batches per epoch: the poison hits epoch 2, batch 3.
    let m = Poisoned { inner: model(&varmap), calls: AtomicUsize::new(0), after: 10 };
    let err = train_model(&m, &varmap, &config(dir.path(), 5)).unwrap_err();
    match err {
        Error::NonFinite { epoch, batch, ids, metric, .. } => {
            assert_eq!((epoch, batch, metric.as_str()), (2, 2, "loss"));
            assert_eq!(ids.len(), 8);
            assert!(ids.iter().all(|id| id.starts_with("img1_")));
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
    let run = deeprecog_nn::checkpoint::read_run(dir.path().join("last")).unwrap();
    assert_eq!(run.epoch, 1);
}

#[test]
fn search_ranks_candidates() {
    let root = tempfile::tempdir().unwrap();
    let space = vec![("lr".to_string(), vec![serde_json::json!(0.0), serde_json::json!(0.02)])];
    let results = search(&space, SearchStrategy::Grid, &Monitor::max("val_accuracy"), |p| {
        let lr = p["lr"].as_f64().unwrap();
        let varmap = VarMap::new();
        let m = model(&varmap);
        let cfg = TrainConfig {
            optimizer: OptimizerConfig::default().with_lr(lr),
            ..config(&root.path().join(format!("lr{lr}")), 2)
        };
        train_model(&m, &varmap, &cfg)
    })
    .unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].params["lr"], serde_json::json!(0.02));
    let random = search(
        &space,
        SearchStrategy::Random { trials: 1, seed: 9 },
        &Monitor::min("val_loss"),
        |_| Ok(Default::default()),
    )
    .unwrap();
    assert_eq!(random.len(), 1);
    assert_eq!(random[0].score, None);
}

/// A manifest of real fixture images plus a truncated JPEG, a truncated PNG, a garbage file and
/// a missing file: the run finishes, and each bad file is listed with its error in
/// `skipped.json` (every epoch, training and validation side).
#[test]
fn bad_images_are_skipped_listed_by_name_and_the_run_finishes() {
    use deeprecog_dataset::manifest::Manifest;
    use deeprecog_dataset::transforms::{Compose, Resize};
    use deeprecog_train::SkippedSample;

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures");
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::from("path,label\n");
    for (k, class) in ["real", "fake"].iter().enumerate() {
        let src = fixtures.join("deepfakes/images").join(class);
        let mut names: Vec<_> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names.iter().take(6) {
            let file = format!("{class}_{name}");
            std::fs::copy(src.join(name), dir.path().join(&file)).unwrap();
            rows.push_str(&format!("{file},{k}\n"));
        }
    }
    let jpeg = std::fs::read(fixtures.join("celeba/img_align_celeba/000001.jpg")).unwrap();
    std::fs::write(dir.path().join("cut.jpg"), &jpeg[..3000]).unwrap();
    let png = std::fs::read(fixtures.join("deepfakes/images/real/000001.png")).unwrap();
    std::fs::write(dir.path().join("cut.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(dir.path().join("garbage.jpg"), b"this is not an image at all").unwrap();
    rows.push_str("cut.jpg,0\ncut.png,1\ngarbage.jpg,0\nmissing.png,1\n");
    let csv = dir.path().join("manifest.csv");
    std::fs::write(&csv, rows).unwrap();

    let loader = || {
        Loader::new(Manifest::open(&csv).unwrap())
            .batch_size(4)
            .workers(1)
            .transform(Compose::new().then(Resize::new(16, 12)))
    };
    let (train, valid) = (loader().shuffle(1), loader());
    let varmap = VarMap::new();
    let m = model(&varmap);
    let out = dir.path().join("run");
    let cfg = config(&out, 2);
    let history = fit(
        &m,
        &varmap,
        vars(&varmap),
        Normalization::MinMax,
        serde_json::Value::Null,
        &cfg,
        &train,
        &valid,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(history.epochs.len(), 2);
    assert_eq!(history.epochs[0].samples, 12);
    assert_eq!((history.epochs[0].skipped_train, history.epochs[0].skipped_valid), (4, 4));
    assert_eq!(history.skipped, 16);
    let file = history.skipped_file.clone().unwrap();
    let listed: Vec<SkippedSample> =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(listed.len(), 16);
    for bad in ["cut.jpg", "cut.png", "garbage.jpg", "missing.png"] {
        let hits = listed.iter().filter(|s| s.error.contains(bad)).count();
        assert_eq!(hits, 4, "{bad} in {listed:?}");
        let named = listed.iter().filter(|s| s.path.as_ref().is_some_and(|p| p.ends_with(bad)));
        assert_eq!(named.count(), 4, "{bad}: the list names the file");
    }
}
