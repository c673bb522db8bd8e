//! Face detection on the real photos and videos that `scripts/fetch-assets.sh` downloads
//! (skipped with a printed reason when they are absent, failing when `CI` is set): the
//! BlazeFace port against onnxruntime's outputs, and detection counts on single-face photos,
//! a group photo and talking-head videos.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use deeprecog_dataset::Image;
use deeprecog_detector::blazeface::{BlazeFace, BlazeFaceConfig, Tiling, Variant};
use deeprecog_detector::scan::scan;
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

/// Every single-face photo (two of them show half a face) gives exactly one face, with the
/// subject's right eye left of the left eye and both inside the box, for both models.
#[test]
fn single_face_photos_have_exactly_one_face() {
    for config in [BlazeFaceConfig::front(), BlazeFaceConfig::back()] {
        let Some(det) = detector(config.clone()) else { return };
        for name in SINGLE_FACE_PHOTOS {
            let Some(img) = photo(name) else { return };
            let faces = det.detect(&img).unwrap();
            assert_eq!(faces.len(), 1, "{name} ({:?}): {faces:?}", config.variant);
            let (right, left) = faces[0].eyes().unwrap();
            let b = faces[0].bbox;
            assert!(right[0] < left[0], "{name}: eyes {right:?} {left:?}");
            for p in [right, left] {
                assert!(p[0] > b.x && p[0] < b.right() && p[1] > b.y && p[1] < b.bottom());
            }
        }
    }
}

const SINGLE_FACE_PHOTOS: [&str; 8] = [
    "astronaut.png",
    "grace_hopper.jpg",
    "faces/obama.jpg",
    "faces/obama2.jpg",
    "faces/obama3.jpg",
    "faces/biden.jpg",
    "faces/obama_partial_face.jpg",
    "faces/obama_partial_face2.jpg",
];

/// The 1927 group photo of rustface's package: 29 faces of about 50 pixels in a 1666x1136
/// image. The whole-image pass alone sees none (each face is 4 pixels of the 256 view); the
/// back model over two levels of tiles finds them.
#[test]
fn group_photo_count_is_right_within_one() {
    let config = BlazeFaceConfig::back().with_tiling(Tiling::default());
    let Some(det) = detector(config) else { return };
    let Some(img) = photo("faces/group_1927.png") else { return };
    let faces = det.detect(&img).unwrap();
    assert!((28..=30).contains(&faces.len()), "{} faces", faces.len());
    // Every face box is face-sized: no box over a group of people or a patch of pavement.
    for f in &faces {
        assert!(f.bbox.width > 30.0 && f.bbox.width < 80.0, "{f:?}");
        assert!(f.bbox.y < 400.0, "faces are in the top rows of the photo: {f:?}");
    }
    let whole = detector(BlazeFaceConfig::back()).unwrap().detect(&img).unwrap();
    assert!(whole.len() < 5, "without tiles: {}", whole.len());
}

/// Talking-head videos: a face in nearly every sampled frame, always one, at a steady place.
#[test]
fn talking_head_videos_have_a_face_in_nearly_every_frame() {
    let Some(det) = detector(BlazeFaceConfig::front()) else { return };
    for (name, frames) in [("videos/franck.mp4", 24), ("videos/carphone_pristine.mp4", 16)] {
        let Some(path) = asset(name) else { return };
        let result = scan(&path, &det, frames).unwrap();
        assert_eq!(result.frames.len(), frames, "{name}");
        let with_face = result.frames_with_faces();
        assert!(with_face * 10 >= frames * 9, "{name}: faces in {with_face} of {frames} frames");
        for f in &result.frames {
            assert!(f.faces.len() <= 1, "{name} frame {}: {} faces", f.index, f.faces.len());
        }
        eprintln!("{name}: a face in {with_face} of {frames} sampled frames");
    }
}

/// A clip without any face (ffmpeg's test pattern and a fractal) gives no faces, as a result.
#[test]
fn a_faceless_clip_gives_no_faces_not_an_error() {
    let Some(det) = detector(BlazeFaceConfig::front()) else { return };
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in [
        ("testsrc.mp4", "testsrc=size=320x240:rate=10:duration=2"),
        ("mandelbrot.mp4", "mandelbrot=size=320x240:rate=10"),
    ] {
        let path = dir.path().join(name);
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", source, "-t", "2"])
            .args(["-pix_fmt", "yuv420p"])
            .arg(&path)
            .status()
            .expect("ffmpeg runs (CI installs it)");
        assert!(status.success());
        let result = scan(&path, &det, 8).unwrap();
        assert_eq!(result.frames.len(), 8);
        assert_eq!(result.frames_with_faces(), 0, "{name}: {:?}", result.frames);
    }
}
