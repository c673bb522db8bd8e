#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! torchvision's ImageNet MobileNetV2 weights, loaded from the `.pth` by our importer, against
//! the independent NumPy forward pass of `tests/golden/mobilenetv2_reference.py`.
//!
//! Needs the files of `scripts/fetch-assets.sh`; without them the tests say so and pass.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use deeprecog_classifiers::{MobileNetV2, MobileNetV2Config};
use deeprecog_dataset::transforms::{to_chw, CenterCrop, ImageNetEval, Normalization};
use deeprecog_dataset::Image;

const REFERENCE: &str = include_str!("golden/mobilenetv2_reference.json");
const WEIGHTS: &str = "mobilenet_v2-b0353104.pth";

fn reference() -> serde_json::Value {
    serde_json::from_str(REFERENCE).unwrap()
}

/// The assets folder when every file the tests need is there.
fn assets() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets");
    let missing: Vec<&str> = [WEIGHTS, "astronaut.png", "grace_hopper.jpg"]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if missing.is_empty() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {missing:?} not in {}; run scripts/fetch-assets.sh to get them",
            dir.display()
        );
        None
    }
}

fn model(assets: &Path, dtype: DType) -> MobileNetV2 {
    let dev = Device::Cpu;
    let mut tensors = deeprecog_nn::import::load_pytorch(assets.join(WEIGHTS), &dev).unwrap();
    tensors.retain(|name, _| !name.ends_with("num_batches_tracked"));
    assert_eq!(tensors.len(), 262);
    let vb = VarBuilder::from_tensors(tensors, dtype, &dev);
    MobileNetV2::new(&MobileNetV2Config::default(), vb).unwrap()
}

/// The `(1, 3, H, W)` batch of one RGB image, normalised as the pipeline does (in f32) or, for
/// `F64`, in float64 from the reference's decimal constants, so that the F64 comparison measures
/// the network alone.
fn batch(image: &Image, dtype: DType) -> Tensor {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let x = Tensor::from_vec(to_chw(image), (1, 3, h, w), &Device::Cpu).unwrap();
    if dtype != DType::F64 {
        return Normalization::ImageNet.apply(&x).unwrap().to_dtype(dtype).unwrap();
    }
    let mean = Tensor::new(&[0.485f64, 0.456, 0.406], &Device::Cpu).unwrap().reshape((1, 3, 1, 1));
    let std = Tensor::new(&[0.229f64, 0.224, 0.225], &Device::Cpu).unwrap().reshape((1, 3, 1, 1));
    let x = (x.to_dtype(DType::F64).unwrap() / 255.0).unwrap();
    x.broadcast_sub(&mean.unwrap()).unwrap().broadcast_div(&std.unwrap()).unwrap()
}

fn logits(model: &MobileNetV2, x: &Tensor) -> Vec<f64> {
    let y = model.forward_t(x, false).unwrap();
    y.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn top5(z: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..z.len()).collect();
    idx.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
    idx.truncate(5);
    idx
}

#[test]
fn astronaut_logits_match_numpy_within_1e_4() {
    let Some(assets) = assets() else { return };
    let expected: Vec<f64> = reference()["a"]["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(expected.len(), 1000);
    // Lossless PNG and a crop without resampling: both sides see exactly the same pixels.
    let image = Image::open(&assets.join("astronaut.png")).unwrap();
    assert_eq!((image.width(), image.height()), (512, 512));
    let crop = CenterCrop::new(224, 224).crop(&image).unwrap();
    for (dtype, tolerance) in [(DType::F32, 1e-4), (DType::F64, 1e-9)] {
        let ours = logits(&model(&assets, dtype), &batch(&crop, dtype));
        let max_diff =
            ours.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0f64, f64::max);
        eprintln!("{dtype:?}: max |logit - numpy float64| = {max_diff:.3e}");
        assert!(max_diff < tolerance, "{dtype:?}: max logit difference {max_diff:e}");
        assert_eq!(top5(&ours), top5(&expected));
    }
}

#[test]
fn grace_hopper_top5_matches_numpy() {
    let Some(assets) = assets() else { return };
    let reference = reference();
    let b = &reference["b"];
    let image = Image::open(&assets.join("grace_hopper.jpg")).unwrap();
    let crop = ImageNetEval::default().preprocess(&image).unwrap();
    assert_eq!((crop.width(), crop.height()), (224, 224));
    // The decoders and resizers differ by a few levels per pixel, not by whole regions.
    let n = (224 * 224) as f64;
    for (c, want) in b["channel_mean"].as_array().unwrap().iter().enumerate() {
        let mean =
            crop.as_bytes().iter().skip(c).step_by(3).map(|&v| f64::from(v)).sum::<f64>() / n;
        let want = want.as_f64().unwrap();
        assert!((mean - want).abs() < 1.0, "channel {c}: mean {mean} vs Pillow {want}");
    }

    let ours = logits(&model(&assets, DType::F32), &batch(&crop, DType::F32));
    let probs = softmax(&ours);
    let want: Vec<(usize, f64)> = b["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["index"].as_u64().unwrap() as usize, t["probability"].as_f64().unwrap()))
        .collect();
    let got = top5(&ours);
    eprintln!("ours:  {:?}", got.iter().map(|&i| (i, probs[i])).collect::<Vec<_>>());
    eprintln!("numpy: {want:?}");
    assert_eq!(got[0], want[0].0, "top-1 differs");
    let mut got_sorted = got.clone();
    got_sorted.sort_unstable();
    let mut want_sorted: Vec<usize> = want.iter().map(|w| w.0).collect();
    want_sorted.sort_unstable();
    assert_eq!(got_sorted, want_sorted, "top-5 sets differ");
    // Measured: 0.4905 here against 0.5082 from Pillow. Feeding our 224x224 crop to the NumPy
    // network gives 0.4905 too, so the whole gap is preprocessing: image-rs and libjpeg decode
    // up to 4 levels apart, and fast_image_resize and Pillow round 18% of the resized values
    // one level apart (no bias either way). Bow tie (457) against military uniform (652) is a
    // close call for this network, so those one-level differences move it by ~0.02.
    assert!((probs[got[0]] - want[0].1).abs() < 0.02, "top-1 probability {}", probs[got[0]]);
    // "military uniform", the usual answer for this photo, is torchvision's class 652 (653 when
    // counting from 1); for MobileNetV2 it comes second.
    assert!(got[..2].contains(&652));
}
