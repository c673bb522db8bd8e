//! Face detection on the real photos and videos that `scripts/fetch-assets.sh` downloads
//! (skipped with a printed reason when they are absent, failing when `CI` is set): the
//! BlazeFace port against onnxruntime's outputs, and detection counts on single-face photos,
//! a group photo and talking-head videos.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use deeprecog_dataset::Image;
use deeprecog_detector::blazeface::{BlazeFace, BlazeFaceConfig, Variant};
use deeprecog_detector::FaceDetector;
use serde_json::Value;

fn asset(name: &str) -> Option<PathBuf> {
    deeprecog_nn::assets::for_test(Path::new(env!("CARGO_MANIFEST_DIR")), name)
}

fn model_path(variant: Variant) -> Option<PathBuf> {
    asset(match variant {
        Variant::Front => "blazeface/face_detection_front_128x128.onnx",
        Variant::Back => "blazeface/face_detection_back_256x256.onnx",
    })
}

/// The golden script's input: the photo's centre square averaged over k x k blocks, in [-1, 1]
/// (see tests/golden/blazeface_onnxruntime.py), as NCHW.
fn golden_input(photo: &Path, side: usize) -> (Tensor, f64) {
    let image = Image::open(photo).unwrap().to_rgb();
    let (w, h) = (image.width() as usize, image.height() as usize);
    let s = w.min(h);
    let (top, left) = ((h - s) / 2, (w - s) / 2);
    let k = s / side;
    let bytes = image.as_bytes();
    let mut planes = vec![0f32; 3 * side * side];
    let mut sum = 0f64;
    for y in 0..side {
        for x in 0..side {
            for c in 0..3 {
                let mut acc = 0f32;
                for dy in 0..k {
                    for dx in 0..k {
                        let (py, px) = (top + y * k + dy, left + x * k + dx);
                        acc += bytes[(py * w + px) * 3 + c] as f32;
                    }
                }
                let v = (acc / (k * k) as f32) / 127.5 - 1.0;
                planes[c * side * side + y * side + x] = v;
                sum += v as f64;
            }
        }
    }
    (Tensor::from_vec(planes, (1, 3, side, side), &Device::Cpu).unwrap(), sum)
}

#[test]
fn blazeface_raw_outputs_match_onnxruntime() {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/blazeface_onnxruntime.json"),
        )
        .unwrap(),
    )
    .unwrap();
    for (variant, name, config) in [
        (Variant::Front, "front", BlazeFaceConfig::front()),
        (Variant::Back, "back", BlazeFaceConfig::back()),
    ] {
        let Some(model) = model_path(variant) else { return };
        let net = BlazeFace::load(&model, config, &Device::Cpu).unwrap();
        for photo in ["astronaut.png", "faces/group_1927.png"] {
            let Some(path) = asset(photo) else { return };
            let want = &golden[format!("{photo}/{name}")];
            let (x, input_sum) = golden_input(&path, variant.input_size());
            let want_sum = want["input_sum"].as_f64().unwrap();
            assert!(
                (input_sum - want_sum).abs() < 0.5,
                "{photo}: decoded input differs from the golden's ({input_sum} vs {want_sum})"
            );
            let raw = net.forward_raw(&x).unwrap();
            let scores: Vec<f32> = raw.scores.flatten_all().unwrap().to_vec1().unwrap();
            let regs: Vec<Vec<f32>> = raw.regressors.squeeze(0).unwrap().to_vec2().unwrap();
            let want_scores = want["scores"].as_array().unwrap();
            assert_eq!(scores.len(), want_scores.len());
            let mut worst = 0f32;
            for (got, w) in scores.iter().zip(want_scores) {
                let w = w.as_f64().unwrap() as f32;
                worst = worst.max((got - w).abs() / (1.0 + w.abs()));
            }
            assert!(worst < 1e-3, "{photo} {name}: score logits off by {worst} (relative)");
            for top in want["top"].as_array().unwrap() {
                let a = top["anchor"].as_u64().unwrap() as usize;
                for (got, w) in regs[a].iter().zip(top["regressors"].as_array().unwrap()) {
                    let w = w.as_f64().unwrap() as f32;
                    assert!(
                        (got - w).abs() < 1e-3 * (1.0 + w.abs()),
                        "{photo} {name} anchor {a}: regressor {got} vs {w}"
                    );
                }
            }
            let sum: f64 = regs.iter().flatten().map(|&v| v as f64).sum();
            let abs: f64 = regs.iter().flatten().map(|&v| v.abs() as f64).sum();
            let (ws, wa) = (
                want["regressor_sum"].as_f64().unwrap(),
                want["regressor_abs_sum"].as_f64().unwrap(),
            );
            assert!((sum - ws).abs() < 1e-4 * wa, "{photo} {name}: regressor sum {sum} vs {ws}");
            assert!((abs - wa).abs() < 1e-4 * wa, "{photo} {name}: |regressor| sum {abs} vs {wa}");
            eprintln!("{photo} {name}: worst relative score error {worst:.2e}");
        }
    }
}

fn detector(config: BlazeFaceConfig) -> Option<BlazeFace> {
    let model = model_path(config.variant)?;
    Some(BlazeFace::load(model, config, &Device::Cpu).unwrap())
}

fn photo(name: &str) -> Option<Image> {
    Some(Image::open(&asset(name)?).unwrap().to_rgb())
}

#[test]
fn explore_counts() {
    use deeprecog_detector::blazeface::Tiling;
    use deeprecog_detector::FaceDetector;
    let configs = [
        ("front", BlazeFaceConfig::front()),
        ("back", BlazeFaceConfig::back()),
        ("front+tiles", BlazeFaceConfig::front().with_tiling(Tiling::default())),
        ("back+tiles", BlazeFaceConfig::back().with_tiling(Tiling::default())),
    ];
    for (label, config) in configs {
        let Some(det) = detector(config) else { return };
        for name in [
            "astronaut.png",
            "grace_hopper.jpg",
            "faces/obama.jpg",
            "faces/obama2.jpg",
            "faces/obama3.jpg",
            "faces/biden.jpg",
            "faces/obama_partial_face.jpg",
            "faces/obama_partial_face2.jpg",
            "faces/group_1927.png",
        ] {
            let Some(img) = photo(name) else { return };
            let t = std::time::Instant::now();
            let faces = det.detect(&img).unwrap();
            eprintln!(
                "{label:12} {name:32} {} faces {:?} in {:.0} ms",
                faces.len(),
                faces.iter().map(|f| (f.score * 100.0).round() as i32).collect::<Vec<_>>(),
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    let fixture = Image::open(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data-fixtures/deepfakes/videos/ecqm0007/frame_0000.png"
    )))
    .unwrap()
    .to_rgb();
    let det = detector(BlazeFaceConfig::front()).unwrap();
    eprintln!("fixture: {:?}", det.detect(&fixture).unwrap());
}
