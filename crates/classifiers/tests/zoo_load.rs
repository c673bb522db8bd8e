#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `zoo::load` against checkpoints written by `deeprecog_nn::checkpoint::save` (the format of
//! the training engine's `best/` and `last/` folders): the rebuilt model gives the saved model's
//! logits bit for bit, with the normalisation its weights imply, and needs no weight file.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, ModuleT, VarMap};
use deeprecog_attributes::Attribute;
use deeprecog_classifiers::zoo::{self, ModelName, ZooConfig};
use deeprecog_classifiers::{Error, Freeze, MobileNetV2, MobileNetV2Config, Task};
use deeprecog_dataset::transforms::Normalization;
use deeprecog_nn::checkpoint::{self, RunConfig};
use deeprecog_nn::init::{init_tensor, seeded_var_builder};

fn randn(seed: u64, shape: &[usize], name: &str, std: f64) -> Tensor {
    let init = Init::Randn { mean: 0.0, stdev: std };
    init_tensor(init, &shape.into(), seed, name, DType::F32, &Device::Cpu).unwrap()
}

/// Moves every variable away from its initial value (as training would), seeded; BatchNorm
/// running variances stay positive.
fn perturb(varmap: &VarMap, seed: u64) {
    let data = varmap.data().lock().unwrap();
    for (name, var) in data.iter() {
        let noise = randn(seed, var.dims(), name, 0.1);
        let noise = if name.ends_with("running_var") { noise.abs().unwrap() } else { noise };
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
}

fn logits(model: &impl ModuleT, x: &Tensor) -> Vec<f32> {
    model.forward_t(x, false).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn bits(model: &impl ModuleT, x: &Tensor) -> Vec<u32> {
    logits(model, x).into_iter().map(f32::to_bits).collect()
}

/// Saves `varmap` as a checkpoint of `config` in `dir`, as the training engine does.
fn save(dir: &Path, varmap: &VarMap, config: &ZooConfig, epoch: usize) {
    let run = RunConfig {
        seed: config.seed,
        epoch,
        model: serde_json::to_value(config).unwrap(),
        ..Default::default()
    };
    checkpoint::save(dir, varmap, &run, None).unwrap();
}

#[test]
fn a_scratch_run_reloads_bit_for_bit_from_best() {
    let dir = tempfile::tempdir().unwrap();
    let task = Task::MultiLabel(vec![Attribute::Male, Attribute::Smiling]);
    let cfg =
        ZooConfig { task, input: (3, 24, 40), seed: 3, ..ZooConfig::new(ModelName::Scratch(2)) };
    let varmap = VarMap::new();
    let built = zoo::build(&cfg, &varmap, &Device::Cpu).unwrap();
    perturb(&varmap, 1);
    save(&dir.path().join("best"), &varmap, &built.config, 4);
    // An older `last/` must not be preferred over `best/`.
    perturb(&varmap, 2);
    save(&dir.path().join("last"), &varmap, &built.config, 6);
    let last = bits(&built.model, &randn(7, &[3, 3, 24, 40], "x", 1.0));
    perturb(&varmap, 3); // back to neither
    let x = randn(7, &[3, 3, 24, 40], "x", 1.0);

    let loaded = zoo::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.checkpoint, dir.path().join("best"));
    assert_eq!(loaded.config, cfg);
    assert_eq!(loaded.normalization, Normalization::MinMax);
    assert_eq!(loaded.run.epoch, 4);
    let best = bits(&loaded.model, &x);
    assert_ne!(best, last);
    assert_eq!(best.len(), 3 * 2);

    // The checkpoint folder itself works too.
    let from_last = zoo::load(&dir.path().join("last"), &Device::Cpu).unwrap();
    assert_eq!(from_last.run.epoch, 6);
    assert_eq!(bits(&from_last.model, &x), last);
}

#[test]
fn the_loaded_model_gives_the_saved_logits_bit_for_bit() {
    // Meso4 has BatchNorm running statistics: eval mode depends on them, so they must come back.
    for name in [ModelName::Meso4, ModelName::FakeApp] {
        let dir = tempfile::tempdir().unwrap();
        let input = if name == ModelName::FakeApp { (1, 32, 48) } else { (3, 32, 48) };
        let cfg = ZooConfig { input, seed: 5, ..ZooConfig::new(name) };
        let varmap = VarMap::new();
        let built = zoo::build(&cfg, &varmap, &Device::Cpu).unwrap();
        perturb(&varmap, 1);
        let x = randn(8, &[4, input.0, input.1, input.2], "x", 1.0);
        let expected = bits(&built.model, &x);
        save(&dir.path().join("last"), &varmap, &built.config, 1);
        let loaded = zoo::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(bits(&loaded.model, &x), expected, "{name}");
        assert_eq!(loaded.checkpoint, dir.path().join("last"));
    }
}

#[test]
fn a_fine_tuned_backbone_reloads_with_imagenet_normalisation_and_no_weight_file() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    // "ImageNet" weights: a full MobileNetV2 with its 1000-class classifier, as torchvision's
    // file holds it.
    let pretrained = VarMap::new();
    let full = MobileNetV2Config::default();
    MobileNetV2::new(&full, seeded_var_builder(&pretrained, 99, DType::F32, &dev)).unwrap();
    let weights = dir.path().join("mobilenet_v2.safetensors");
    pretrained.save(&weights).unwrap();

    let cfg = ZooConfig {
        input: (3, 40, 56),
        weights: Some(weights.clone()),
        freeze: Freeze::Backbone,
        head_hidden: vec![16],
        seed: 1,
        ..ZooConfig::new(ModelName::MobileNetV2)
    };
    let varmap = VarMap::new();
    let built = zoo::build(&cfg, &varmap, &dev).unwrap();
    assert_eq!(built.normalization, Normalization::ImageNet);
    // Frozen backbone: only the head trains.
    assert_eq!(built.trainable.len(), 2 + 2 + 2);
    perturb(&varmap, 4);
    let x = randn(2, &[2, 3, 40, 56], "x", 1.0);
    let expected = bits(&built.model, &x);
    let run_dir = dir.path().join("run");
    save(&run_dir.join("best"), &varmap, &built.config, 2);
    std::fs::remove_file(&weights).unwrap();

    let loaded = zoo::load(&run_dir, &dev).unwrap();
    assert_eq!(loaded.normalization, Normalization::ImageNet);
    assert_eq!(loaded.config.weights.as_deref(), Some(weights.as_path()));
    assert_eq!(bits(&loaded.model, &x), expected);
}

#[test]
fn what_cannot_be_loaded_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    match zoo::load(dir.path(), &Device::Cpu) {
        Err(Error::Checkpoint { path, reason }) => {
            assert_eq!(path, dir.path());
            assert!(reason.contains("best/"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // A run file whose model is not a zoo configuration.
    let varmap = VarMap::new();
    let cfg = ZooConfig { input: (3, 16, 16), ..ZooConfig::new(ModelName::Scratch(1)) };
    zoo::build(&cfg, &varmap, &Device::Cpu).unwrap();
    let run = RunConfig { model: serde_json::json!({"generator": "dcgan"}), ..Default::default() };
    checkpoint::save(dir.path().join("best"), &varmap, &run, None).unwrap();
    match zoo::load(dir.path(), &Device::Cpu) {
        Err(Error::Checkpoint { path, reason }) => {
            assert!(path.ends_with("best/run.json"), "{}", path.display());
            assert!(reason.contains("not a zoo configuration"), "{reason}");
        }
        other => panic!("{other:?}"),
    }

    // Weights of another model: the checkpoint loader names the file and the tensor.
    let other = ZooConfig { input: (3, 16, 16), ..ZooConfig::new(ModelName::Scratch(2)) };
    save(&dir.path().join("best"), &varmap, &other, 1);
    let err = zoo::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Nn(_)), "{err:?}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn inference_models_give_the_same_logits_and_record_nothing() {
    let x = randn(5, &[2, 3, 40, 36], "x", 1.0);
    for name in
        [ModelName::Scratch(2), "resnet18".parse::<ModelName>().unwrap(), ModelName::MobileNetV2]
    {
        let cfg = ZooConfig { input: (3, 40, 36), seed: 4, ..ZooConfig::new(name) };
        let varmap = VarMap::new();
        let built = zoo::build(&cfg, &varmap, &Device::Cpu).unwrap();
        perturb(&varmap, 6);
        let frozen = zoo::inference_model(&cfg, &varmap, &Device::Cpu).unwrap();
        // To float rounding: ResNet-18's 64-channel 10x9 layers (50 output tiles) take
        // Winograd's algorithm over constants and `im2col` + GEMM over variables.
        let (want, got) = (logits(&built.model, &x), logits(&frozen, &x));
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = want.iter().zip(&got).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-5 * scale, "{name}: logits differ by {worst} (largest {scale})");
        assert!(built.model.forward_t(&x, false).unwrap().track_op(), "{name}: variables");
        assert!(!frozen.forward_t(&x, false).unwrap().track_op(), "{name}: recorded for autograd");
        // A copy: later training steps do not reach it.
        let before = bits(&frozen, &x);
        perturb(&varmap, 7);
        assert_eq!(bits(&frozen, &x), before, "{name}: follows the variables");
    }
    // A variable map from another architecture is refused, naming what is missing.
    let varmap = VarMap::new();
    zoo::build(&ZooConfig::new(ModelName::Scratch(2)), &varmap, &Device::Cpu).unwrap();
    let other = ZooConfig::new("resnet18".parse::<ModelName>().unwrap());
    let err = zoo::inference_model(&other, &varmap, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("conv1"), "{err}");
}
