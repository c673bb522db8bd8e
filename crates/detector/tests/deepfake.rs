//! Training a deepfake detector end to end on a tiny generated set, then verdicts from the
//! folder it wrote: the model card, report and plots exist, the model learns the planted
//! artefact, and `detect` gives labels, JSON of the documented shape, `no_face` and errors
//! that name the file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use deeprecog_classifiers::supervised::TrainConfig;
use deeprecog_classifiers::zoo::ZooConfig;
use deeprecog_dataset::split::Ratios;
use deeprecog_dataset::{Image, InMemory, Sample, Target};
use deeprecog_detector::scan::DetectorKind;
use deeprecog_detector::training::{
    evaluate_detector, train_detector, DetectorTrainConfig, FaceSet, MODEL_CARD,
};
use deeprecog_detector::verdict::{detect, DeepfakeModel, Label};
use deeprecog_detector::{Detection, FaceDetector, WholeImage};
use deeprecog_nn::optim::OptimizerConfig;

/// A 20x20 face-like image: a seeded smooth gradient; fakes carry a bright blotch.
fn image(k: u32, fake: bool) -> Image {
    let mut data = Vec::new();
    for y in 0..20u32 {
        for x in 0..20u32 {
            let inside = fake && (6..14).contains(&x) && (6..14).contains(&y);
            for c in 0..3u32 {
                let base = (x * 5 + y * 3 + c * 40 + k * 17) % 120 + 40;
                data.push(if inside { 250 - (c * 20) as u8 } else { base as u8 });
            }
        }
    }
    Image::from_raw(20, 20, 3, data).unwrap()
}

fn write_set(root: &Path) {
    for (class, fake) in [("real", false), ("fake", true)] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for k in 0..24 {
            image(k, fake).save(&root.join(class).join(format!("{k:03}.png"))).unwrap();
        }
    }
}

struct NoFaces;

impl FaceDetector for NoFaces {
    fn name(&self) -> &str {
        "no faces"
    }

    fn detect(&self, _: &Image) -> deeprecog_detector::Result<Vec<Detection>> {
        Ok(Vec::new())
    }
}

#[test]
fn trains_calibrates_and_judges() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_set(&data);
    let set = FaceSet::open(&data).unwrap();
    assert_eq!(set.len(), 48);
    let out = dir.path().join("detector");
    let train = TrainConfig {
        epochs: 4,
        optimizer: OptimizerConfig::default().with_lr(3e-3),
        seed: 3,
        out_dir: out.clone(),
        ..Default::default()
    };
    let mut config =
        DetectorTrainConfig::new(ZooConfig::new("scratch1".parse().unwrap()), 16, train);
    config.batch_size = 8;
    config.ratios = Ratios { train: 0.5, valid: 0.25, test: 0.25 };
    config.augment = None;
    config.face_detector = DetectorKind::WholeImage;
    let outcome = train_detector(&set, &config, &Device::Cpu).unwrap();
    let r = &outcome.report;
    assert_eq!(r.split.iter().sum::<usize>(), 48);
    assert_eq!(r.test.n, r.split[2]);
    assert!(r.test.roc_auc.unwrap() > 0.9, "the blotch is easy: {:?}", r.test);
    assert!(r.temperature > 0.0 && (0.0..=1.0).contains(&r.threshold));
    assert!((r.baselines.majority.roc_auc.unwrap() - 0.5).abs() < 1e-12);
    for file in [MODEL_CARD, "report.json", "roc.png", "reliability.png", "history.json"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for key in ["accuracy", "roc_auc", "average_precision", "log_loss", "eer", "ece", "n"] {
        assert!(json["test"].get(key).is_some(), "test.{key}");
        assert!(json["valid"].get(key).is_some(), "valid.{key}");
    }
    assert!(json["threshold"].is_number() && json["temperature"].is_number());
    assert!(json["baselines"]["laplacian_variance"].is_object());

    let model = DeepfakeModel::load(&out, &Device::Cpu).unwrap();
    let whole = evaluate_detector(&model, &set).unwrap();
    assert_eq!(whole.frames.n, 48);
    assert!(whole.frames.roc_auc.unwrap() > 0.9, "{:?}", whole.frames);
    assert!(whole.videos.is_empty() && whole.skipped.is_empty());

    // Crops from videos: 3 real and 3 fake clips of 4 frames; the fakes' frames differ more.
    let mut samples = Vec::new();
    let (mut labels, mut groups, mut videos) = (Vec::new(), Vec::new(), Vec::new());
    for v in 0..6u32 {
        let fake = v >= 3;
        for f in 0..4u32 {
            samples.push(Sample {
                id: format!("v{v}/f{f}"),
                image: image(v * 10 + if fake { f * 3 } else { 0 }, fake),
                target: Target::Class(u32::from(fake)),
                group: None,
            });
            labels.push(u32::from(fake));
            groups.push(Some(format!("v{v}")));
            videos.push(Some((format!("v{v}.mp4"), u64::from(f))));
        }
    }
    let clips = FaceSet::from_parts(Arc::new(InMemory(samples)), labels, groups, videos).unwrap();
    let e = evaluate_detector(&model, &clips).unwrap();
    assert_eq!(e.frames.n, 24);
    assert_eq!(e.videos.len(), 5, "{:?}", e.videos);
    assert_eq!(e.videos[0].aggregation, "mean");
    assert_eq!(e.videos[0].test.n, 6);
    assert_eq!(e.temporal_change_auc, Some(1.0));
    let fake_path = dir.path().join("fake.png");
    image(99, true).save(&fake_path).unwrap();
    let real_path = dir.path().join("real.png");
    image(99, false).save(&real_path).unwrap();
    let fake = detect(&fake_path, &model, &WholeImage, 8).unwrap();
    let real = detect(&real_path, &model, &WholeImage, 8).unwrap();
    assert_eq!(fake.verdict.label, Label::Fake, "{:?}", fake.verdict);
    assert_eq!(real.verdict.label, Label::Real, "{:?}", real.verdict);
    assert_eq!(fake.verdict.faces, 1);

    let json = serde_json::to_value(&fake.verdict).unwrap();
    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["input", "kind", "label", "fake_probability", "frames"]);
    assert_eq!(json["kind"], "image");
    assert_eq!(json["label"], "fake");
    let face = &json["frames"][0]["faces"][0];
    assert_eq!(face["box"], serde_json::json!([0.0, 0.0, 20.0, 20.0]));
    assert!(face["fake_probability"].as_f64().unwrap() >= model.card().threshold);

    let nothing = detect(&fake_path, &model, &NoFaces, 8).unwrap();
    assert_eq!(nothing.verdict.label, Label::NoFace);
    let json = serde_json::to_value(&nothing.verdict).unwrap();
    assert_eq!(json["label"], "no_face");
    assert!(json["fake_probability"].is_null());

    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\ntruncated").unwrap();
    let err = detect(&broken, &model, &WholeImage, 8).unwrap_err().to_string();
    assert!(err.contains("broken.png"), "{err}");
    let err = detect(&dir.path().join("gone.jpg"), &model, &WholeImage, 8).unwrap_err().to_string();
    assert!(err.contains("gone.jpg"), "{err}");
    let err = DeepfakeModel::load(dir.path(), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains(MODEL_CARD), "{err}");
}

#[test]
fn self_blended_training_never_sees_a_fake() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_set(&data);
    let set = FaceSet::open(&data).unwrap();
    let out = dir.path().join("sbi");
    let train = TrainConfig { epochs: 1, seed: 1, out_dir: out.clone(), ..Default::default() };
    let mut config =
        DetectorTrainConfig::new(ZooConfig::new("scratch1".parse().unwrap()), 16, train);
    config.batch_size = 8;
    config.ratios = Ratios { train: 0.5, valid: 0.25, test: 0.25 };
    config.sbi = Some(Default::default());
    let outcome = train_detector(&set, &config, &Device::Cpu).unwrap();
    assert!(outcome.report.sbi && outcome.card.sbi);
    // Epochs are numbered from 1: the only epoch run is the one kept.
    assert_eq!((outcome.report.best_epoch, outcome.report.epochs), (1, 1));
    // The test side is the set's own crops, fakes included.
    assert_eq!(outcome.report.test.n, outcome.report.split[2]);
    assert!(outcome.report.test.fakes > 0 && !outcome.report.test_on_self_blends);

    // Real crops only: the test side is scored on its own self-blends, and says so.
    std::fs::remove_dir_all(data.join("fake")).unwrap();
    std::fs::create_dir_all(data.join("fake")).unwrap();
    let reals = FaceSet::open(&data).unwrap();
    assert_eq!(reals.len(), 24);
    config.train.out_dir = dir.path().join("sbi-reals");
    let outcome = train_detector(&reals, &config, &Device::Cpu).unwrap();
    assert!(outcome.report.test_on_self_blends);
    assert_eq!(outcome.report.test.n, 2 * outcome.report.split[2]);
    assert_eq!(outcome.report.test.fakes, outcome.report.split[2]);
    config.sbi = None;
    config.train.out_dir = dir.path().join("no-fakes");
    let err = train_detector(&reals, &config, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("both classes"), "{err}");
}

#[test]
fn face_sets_reject_what_they_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let err = FaceSet::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("real/ and fake/"), "{err}");
    let csv = dir.path().join("m.csv");
    std::fs::write(&csv, "path,label,group\na.png,0,g\nb.png,banana,g\n").unwrap();
    let err = FaceSet::open(&csv).unwrap_err().to_string();
    assert!(err.contains("m.csv") && err.contains('3'), "{err}");
    std::fs::write(&csv, "path,label\na.png,0\nb.png,2\n").unwrap();
    let err = FaceSet::open(&csv).unwrap_err().to_string();
    assert!(err.contains("class 2"), "{err}");
}
