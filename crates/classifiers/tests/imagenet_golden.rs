#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! torchvision's ImageNet MobileNetV2 weights, loaded from the `.pth` by our importer, against
//! the independent NumPy forward pass of `tests/golden/mobilenetv2_reference.py` and against
//! torchvision itself (`tests/golden/mobilenetv2_torch_reference.py`: torch 2.15.0,
//! torchvision 0.29.2, the same `.pth` and input A, logits in float32 and float64).
//!
//! Needs the files of `scripts/fetch-assets.sh`; without them the tests say so and pass.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use deeprecog_classifiers::{MobileNetV2, MobileNetV2Config};
use deeprecog_dataset::transforms::{to_chw, CenterCrop, ImageNetEval, Normalization};
use deeprecog_dataset::Image;

const REFERENCE: &str = include_str!("golden/mobilenetv2_reference.json");
const TORCH_REFERENCE: &str = include_str!("golden/mobilenetv2_torch_reference.json");
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

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f64, f64::max)
}

/// The requirement: the converted MobileNetV2 reproduces torchvision's logits on a real
/// photo within 1e-4. Needs no PyTorch at test time: torchvision's logits are in the JSON.
#[test]
fn astronaut_logits_match_torchvision_within_1e_4() {
    let torch: serde_json::Value = serde_json::from_str(TORCH_REFERENCE).unwrap();
    let torch32 = floats(&torch["a"]["logits_float32"]);
    let torch64 = floats(&torch["a"]["logits_float64"]);
    assert_eq!((torch32.len(), torch64.len()), (1000, 1000));
    // Both references saw the same weights and pixels, and agree: torchvision's float64 forward
    // pass is the NumPy one to rounding.
    let reference = reference();
    for file in ["mobilenet_v2-b0353104.pth", "astronaut.png"] {
        assert_eq!(torch["sha256"][file], reference["sha256"][file], "{file}");
    }
    let numpy = floats(&reference["a"]["logits"]);
    assert!(max_abs_diff(&torch64, &numpy) < 1e-9);

    let Some(assets) = assets() else { return };
    let image = Image::open(&assets.join("astronaut.png")).unwrap();
    let crop = CenterCrop::new(224, 224).crop(&image).unwrap();
    let ours32 = logits(&model(&assets, DType::F32), &batch(&crop, DType::F32));
    let ours64 = logits(&model(&assets, DType::F64), &batch(&crop, DType::F64));
    let d32_32 = max_abs_diff(&ours32, &torch32);
    let d32_64 = max_abs_diff(&ours32, &torch64);
    let d64_64 = max_abs_diff(&ours64, &torch64);
    eprintln!("F32 vs torchvision float32: max |diff| = {d32_32:.3e}");
    eprintln!("F32 vs torchvision float64: max |diff| = {d32_64:.3e}");
    eprintln!("F64 vs torchvision float64: max |diff| = {d64_64:.3e}");
    assert!(d32_32 < 1e-4, "F32 vs torchvision float32: {d32_32:e}");
    assert!(d32_64 < 1e-4, "F32 vs torchvision float64: {d32_64:e}");
    assert!(d64_64 < 1e-9, "F64 vs torchvision float64: {d64_64:e}");
    let top5_torch: Vec<usize> = torch["a"]["top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(top5(&ours32), top5_torch);
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
