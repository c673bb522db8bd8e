#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The model zoo and the CelebA pipeline on the committed fixture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarMap};
use deeprecog_attributes::Attribute;
use deeprecog_classifiers::pipeline::{
    parse_blocks, run_celeba, sweep_blocks, AttributeRun, SplitChoice,
};
use deeprecog_classifiers::train::{TrainConfig, TrainError};
use deeprecog_classifiers::zoo::{self, ModelName, ZooConfig};
use deeprecog_classifiers::{Freeze, ResNetDepth, Task};
use deeprecog_dataset::celeba::{CelebA, CelebAConfig};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn names_parse_and_print() {
    for (s, name) in [
        ("scratch3", ModelName::Scratch(3)),
        ("scratch12", ModelName::Scratch(12)),
        ("mobilenetv2", ModelName::MobileNetV2),
        ("resnet50", ModelName::ResNet(ResNetDepth::R50)),
    ] {
        assert_eq!(s.parse::<ModelName>().unwrap(), name);
        assert_eq!(name.to_string(), s);
    }
    for bad in ["scratch0", "scratch", "vgg99", ""] {
        assert!(matches!(bad.parse::<ModelName>(), Err(TrainError::Config(_))), "{bad}");
    }
    assert_eq!("official".parse::<SplitChoice>().unwrap(), SplitChoice::Official);
    match "60/20/20".parse::<SplitChoice>().unwrap() {
        SplitChoice::Ratios(r) => assert!((r.train - 0.6).abs() < 1e-12),
        other => panic!("{other:?}"),
    }
    assert!("60/40".parse::<SplitChoice>().is_err());
}

#[test]
fn builds_scratch_and_rejects_wrong_weights() {
    let varmap = VarMap::new();
    let task = Task::MultiLabel(vec![Attribute::Male, Attribute::Smiling]);
    let cfg = ZooConfig { task, input: (3, 24, 40), ..ZooConfig::new(ModelName::Scratch(2)) };
    let built = zoo::build(&cfg, &varmap, &Device::Cpu).unwrap();
    let y = built
        .model
        .forward_t(&Tensor::zeros((3, 3, 24, 40), DType::F32, &Device::Cpu).unwrap(), true);
    assert_eq!(y.unwrap().dims(), &[3, 2]);
    assert_eq!(built.trainable.len(), varmap.all_vars().len());

    // Weights of another model name the file and the missing tensor.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("other.safetensors");
    let other = VarMap::new();
    other.get(3, "unrelated", candle_nn::Init::Const(0.0), DType::F32, &Device::Cpu).unwrap();
    other.save(&file).unwrap();
    let cfg = ZooConfig { weights: Some(file.clone()), ..cfg };
    let err = zoo::build(&cfg, &VarMap::new(), &Device::Cpu).unwrap_err();
    match err {
        TrainError::Io { path, reason } => {
            assert_eq!(path, file);
            assert!(
                reason.contains("features.0.weight") || reason.contains("no tensor"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn frozen_pretrained_mobilenet_trains_only_its_head() {
    let weights = root().join("assets/mobilenet_v2-b0353104.pth");
    if !weights.is_file() {
        eprintln!("skipped: {} is missing", weights.display());
        return;
    }
    let varmap = VarMap::new();
    let cfg = ZooConfig {
        weights: Some(weights),
        freeze: Freeze::Backbone,
        input: (3, 32, 48),
        head_hidden: vec![16],
        ..ZooConfig::new(ModelName::MobileNetV2)
    };
    let built = zoo::build(&cfg, &varmap, &Device::Cpu).unwrap();
    // Linear + BatchNorm affine of one hidden block, then the output Linear.
    assert_eq!(built.trainable.len(), 6);
    let y = built
        .model
        .forward_t(&Tensor::zeros((2, 3, 32, 48), DType::F32, &Device::Cpu).unwrap(), false);
    assert_eq!(y.unwrap().dims(), &[2, 1]);
}

#[test]
fn celeba_fixture_end_to_end() {
    let attributes = vec![Attribute::Attractive, Attribute::Male];
    let celeba = CelebA::open(
        root().join("data-fixtures/celeba"),
        &CelebAConfig::targets(attributes.clone()),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = AttributeRun {
        attributes,
        model: ZooConfig::new(ModelName::Scratch(1)),
        train: TrainConfig { epochs: 1, out_dir: out.path().to_path_buf(), ..Default::default() },
        size: 16,
        batch_size: 64,
        split: "60/20/20".parse().unwrap(),
        augment: true,
    };
    let outcome = run_celeba(Arc::new(celeba), &run, &Device::Cpu).unwrap();
    assert_eq!(outcome.split_sizes, [300, 100, 100]);
    assert_eq!(outcome.history.epochs.len(), 1);
    let report = &outcome.report;
    assert_eq!(report.n, 100);
    assert_eq!(report.attributes.len(), 2);
    assert_eq!(report.attributes[1].attribute, "Male");
    let groups = report.attributes[0].subgroups.as_ref().unwrap();
    assert_eq!(groups.groups.len(), 2);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["n"], 100);
    assert!(out.path().join("best/model.safetensors").is_file());
}

#[test]
fn block_sweep_on_the_fixture() {
    let attributes = vec![Attribute::Attractive];
    let celeba = CelebA::open(
        root().join("data-fixtures/celeba"),
        &CelebAConfig::targets(attributes.clone()),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let run = AttributeRun {
        attributes,
        model: ZooConfig::new(ModelName::Scratch(3)),
        train: TrainConfig { epochs: 1, out_dir: out.path().to_path_buf(), ..Default::default() },
        size: 32,
        batch_size: 64,
        split: "60/20/20".parse().unwrap(),
        augment: false,
    };
    let blocks = parse_blocks("1, 2,1").unwrap();
    assert_eq!(blocks, [1, 2]);
    assert!(
        parse_blocks("1,0").is_err() && parse_blocks("x").is_err() && parse_blocks("").is_err()
    );
    let report = sweep_blocks(Arc::new(celeba), &run, &blocks, &Device::Cpu).unwrap();
    println!("{}", report.table());
    assert_eq!(report.rows.iter().map(|r| r.blocks).collect::<Vec<_>>(), [1, 2]);
    for r in &report.rows {
        let acc = r.val_accuracy.unwrap();
        assert!((0.0..=1.0).contains(&acc), "{r:?}");
        if let Some(auc) = r.val_auc {
            assert!((0.0..=1.0).contains(&auc), "{r:?}");
        }
        assert_eq!(r.best_epoch, Some(1));
    }
    let max = report.rows.iter().filter_map(|r| r.val_accuracy).fold(f64::MIN, f64::max);
    let best = report.rows.iter().find(|r| r.blocks == report.best_blocks).unwrap();
    assert_eq!(best.val_accuracy, Some(max));
    assert_eq!(report.final_epochs, 1);
    assert_eq!(report.split_sizes, [300, 100, 100]);
    let test = &report.test.attributes[0];
    assert_eq!(report.test.n, 100);
    assert!((0.0..=1.0).contains(&test.accuracy) && (0.5..=1.0).contains(&test.majority_baseline));
    let table = report.table();
    assert!(table.contains("| blocks | validation accuracy | validation AUC |"), "{table}");
    assert_eq!(table.lines().filter(|l| l.starts_with("| 1") || l.starts_with("| 2")).count(), 2);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("sweep.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 2);
    assert_eq!(json["best_blocks"], report.best_blocks);
    assert!(out.path().join("blocks1/history.json").is_file());
    assert!(out.path().join("final/last/model.safetensors").is_file());
}
