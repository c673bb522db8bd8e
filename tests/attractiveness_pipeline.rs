#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The attractiveness pipeline (and the zoo it builds from) on the committed fixture.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarMap};
use deeprecog::attributes::Attribute;
use deeprecog::classifiers::supervised::TrainConfig;
use deeprecog::classifiers::zoo::{self, ModelName, ZooConfig};
use deeprecog::classifiers::{Error as ModelError, Freeze, ResNetDepth, Task};
use deeprecog::dataset::celeba::{CelebA, CelebAConfig};
use deeprecog::pipelines::attractiveness::{
    compare_models, parse_attributes, parse_blocks, run_celeba, slug, sweep_blocks, AttributeRun,
    Contender, SplitChoice,
};
use deeprecog::pipelines::Error;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn asset(name: &str) -> Option<PathBuf> {
    deeprecog::nn::assets::for_test(&root(), name)
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
        assert!(matches!(bad.parse::<ModelName>(), Err(ModelError::UnknownModel { .. })), "{bad}");
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
        ModelError::MissingTensor { name, file: path } => {
            assert_eq!(path, file);
            assert!(
                name.starts_with("features.") || name.starts_with("fc") || name.starts_with("head"),
                "{name}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn frozen_pretrained_mobilenet_trains_only_its_head() {
    let Some(weights) = asset("mobilenet_v2-b0353104.pth") else { return };
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
        subgroup: Some(Attribute::Male),
    };
    let outcome = run_celeba(Arc::new(celeba), &run, &Device::Cpu).unwrap();
    assert_eq!(outcome.split_sizes, [600, 200, 200]);
    assert_eq!(outcome.history.epochs.len(), 1);
    let report = &outcome.report;
    assert_eq!(report.n, 200);
    assert_eq!(report.attributes.len(), 2);
    assert_eq!(report.attributes[1].attribute, "Male");
    let groups = report.attributes[0].subgroups.as_ref().unwrap();
    assert_eq!(groups.groups.len(), 2);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["n"], 200);
    assert!(out.path().join("best/model.safetensors").is_file());

    // The run folder alone rebuilds the trained model, with its normalisation.
    let loaded = zoo::load(out.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.config.name, ModelName::Scratch(1));
    assert_eq!(loaded.config.input, (3, 16, 16));
    assert_eq!(loaded.normalization, deeprecog::dataset::transforms::Normalization::MinMax);
    let x = Tensor::zeros((2, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(loaded.model.forward_t(&x, false).unwrap().dims(), &[2, 2]);
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
        subgroup: None,
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
    assert_eq!(report.split_sizes, [600, 200, 200]);
    let test = &report.test.attributes[0];
    assert_eq!(report.test.n, 200);
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

#[test]
fn comparison_on_the_fixture_pairs_the_test_images() {
    let attributes = vec![Attribute::Attractive, Attribute::Male];
    let celeba = Arc::new(
        CelebA::open(
            root().join("data-fixtures/celeba"),
            &CelebAConfig::targets(attributes.clone()),
        )
        .unwrap(),
    );
    let out = tempfile::tempdir().unwrap();
    let run = AttributeRun {
        attributes,
        model: ZooConfig::new(ModelName::Scratch(3)),
        train: TrainConfig { epochs: 1, out_dir: out.path().to_path_buf(), ..Default::default() },
        size: 16,
        batch_size: 64,
        split: SplitChoice::Official,
        augment: false,
        subgroup: None,
    };
    let contenders =
        [Contender::new(ModelName::Scratch(1), None), Contender::new(ModelName::Scratch(2), None)];
    let cmp = compare_models(Arc::clone(&celeba), &run, &contenders, &Device::Cpu).unwrap();
    assert_eq!(cmp.entries.len(), 2);
    assert_eq!(cmp.entries[1].label, "scratch2");
    assert_eq!(cmp.split_sizes[2], cmp.entries[0].report.n);
    // One paired difference per attribute, against the first contender.
    assert_eq!(cmp.differences.len(), 2);
    for (d, attribute) in cmp.differences.iter().zip(["Attractive", "Male"]) {
        assert_eq!((d.model.as_str(), d.reference.as_str()), ("scratch2", "scratch1"));
        assert_eq!(d.attribute, attribute);
        let a = |i: usize| {
            cmp.entries[i].report.attributes.iter().find(|r| r.attribute == attribute).unwrap()
        };
        let ci = d.accuracy_difference;
        assert!((ci.estimate - (a(1).accuracy - a(0).accuracy)).abs() < 1e-12, "{d:?}");
        assert!(ci.lower <= ci.estimate && ci.estimate <= ci.upper, "{d:?}");
        // Each accuracy's own interval and the margin over the majority class are consistent.
        let r = a(0);
        assert!(r.accuracy_ci.lower <= r.accuracy && r.accuracy <= r.accuracy_ci.upper);
        let margin = r.margin_over_majority_ci.estimate;
        assert!((margin - (r.accuracy - r.majority_baseline)).abs() < 1e-12);
    }
    for file in ["comparison.json", "curves.png", "scratch1/report.json", "scratch2/history.json"] {
        assert!(out.path().join(file).is_file(), "{file}");
    }
    assert_eq!(cmp.difference_rows().len(), 2);

    // Labels must give distinct folders; an empty list is an error.
    let twins = [
        Contender { label: "A b".into(), ..Contender::new(ModelName::Scratch(1), None) },
        Contender { label: "a-B".into(), ..Contender::new(ModelName::Scratch(1), None) },
    ];
    assert!(matches!(
        compare_models(Arc::clone(&celeba), &run, &twins, &Device::Cpu),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(compare_models(celeba, &run, &[], &Device::Cpu).is_err());
}

#[test]
fn labels_become_folder_names_and_all_means_forty() {
    assert_eq!(slug("mobilenetv2 (pretrained, frozen)"), "mobilenetv2-pretrained-frozen");
    assert_eq!(slug("  "), "model");
    let pretrained = Contender::new(ModelName::MobileNetV2, Some("w.pth".into()));
    assert_eq!(pretrained.model.freeze, Freeze::Backbone);
    assert_eq!(Contender::new(ModelName::Scratch(3), None).model.freeze, Freeze::None);
    assert_eq!(parse_attributes("all").unwrap().len(), 40);
    assert_eq!(parse_attributes("Male, Smiling").unwrap(), [Attribute::Male, Attribute::Smiling]);
    assert!(parse_attributes("Male,Handsome").is_err());
}

#[test]
fn the_same_seed_repeats_a_run_exactly() {
    let attributes = vec![Attribute::Male];
    let celeba = Arc::new(
        CelebA::open(
            root().join("data-fixtures/celeba"),
            &CelebAConfig::targets(attributes.clone()),
        )
        .unwrap(),
    );
    let run_with = |seed: u64| {
        let out = tempfile::tempdir().unwrap();
        let run = AttributeRun {
            attributes: attributes.clone(),
            model: ZooConfig::new(ModelName::Scratch(1)),
            train: TrainConfig {
                epochs: 1,
                seed,
                out_dir: out.path().to_path_buf(),
                ..Default::default()
            },
            size: 16,
            batch_size: 64,
            split: SplitChoice::Official,
            augment: true,
            subgroup: None,
        };
        let outcome = run_celeba(Arc::clone(&celeba), &run, &Device::Cpu).unwrap();
        (outcome.history.epochs[0].get("train_loss").unwrap(), outcome.evaluation.scores)
    };
    // Initial weights, shuffling and augmentation all follow the seed.
    let (loss_a, scores_a) = run_with(7);
    let (loss_b, scores_b) = run_with(7);
    assert_eq!(loss_a.to_bits(), loss_b.to_bits());
    assert_eq!(scores_a, scores_b);
    let (loss_c, _) = run_with(8);
    assert_ne!(loss_a.to_bits(), loss_c.to_bits());
}
