#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Our ResNet-18/34/50, MobileNetV2, VGG-16(-BN) and Xception against the REAL torchvision /
//! timm models: the same `state_dict` names and shapes, and the same logits for the same
//! weights and input.
//!
//! `tests/golden/torchvision_reference.json` was written by
//! `tests/golden/torchvision_reference.py` with torch 2.15.0, torchvision 0.29.2 and timm 1.0.31
//! (`legacy_xception`); to regenerate it:
//!
//! ```sh
//! /tmp/torchenv/bin/pip install torch torchvision timm   # any venv with them
//! /tmp/torchenv/bin/python crates/classifiers/tests/golden/torchvision_reference.py
//! ```
//!
//! No weight file is committed: the script overwrites every `state_dict` entry of a freshly
//! built model (`weights=None`, 10 classes) with values given by a formula of the entry's name
//! and element index (FNV-1a of the name seeding splitmix64, see the script's docstring), and
//! records the names, shapes and float64 logits on a 2x3x64x80 input made by the same formula.
//! This file reproduces the formula bit for bit in f64, loads the tensors through a
//! `VarBuilder` that records what each model asks for, and checks
//!
//! - the set of (name, shape) our model requests equals torchvision's `state_dict` less the
//!   integer `num_batches_tracked` counters (candle's BatchNorm keeps none);
//! - the logits in F64 within 1e-9 of torch's float64 ones, and in F32 within 1e-4 of them
//!   relative to the largest logit (or absolute when that is below 1);
//! - the zoo's transfer models load a torchvision `state_dict` file unchanged.
//!
//! Measured (CPU): every F64 difference is below 2e-14, every F32 one below 8e-6. A BatchNorm eps
//! of 1e-3 instead of 1e-5 in ResNet-18 moves torch's logits by 0.045, zero instead of -inf
//! padding in Xception's max-pools by 0.13, so the tolerances leave no room for such slips.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, ModuleT, VarBuilder};
use deeprecog_classifiers::zoo::{self, ZooConfig, ZooModel};
use deeprecog_classifiers::{
    Backbone, MobileNetV2, MobileNetV2Config, ResNet, ResNetConfig, ResNetDepth, Vgg, VggConfig,
    Xception, XceptionConfig,
};
use deeprecog_dataset::seed::{splitmix64, GOLDEN_GAMMA};

const REFERENCE: &str = include_str!("golden/torchvision_reference.json");

fn reference() -> serde_json::Value {
    serde_json::from_str(REFERENCE).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The formula of `torchvision_reference.py`.

fn fnv1a64(name: &str) -> u64 {
    name.bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Uniform values in (-1, 1) with 24 significant bits, element `i` from `(name, i)`.
///
/// The script's `z = mix(seed + (i + 1) * GAMMA)` (its `splitmix64` is the finaliser alone) is
/// the workspace's [`splitmix64`] of `seed + i * GAMMA`, which first adds `GAMMA` itself.
fn uniform(name: &str, numel: usize) -> Vec<f64> {
    let seed = fnv1a64(name);
    let two24 = f64::from(1u32 << 24);
    (0..numel as u64)
        .map(|i| {
            let z = splitmix64(seed.wrapping_add(i.wrapping_mul(GOLDEN_GAMMA)));
            (2.0 * (z >> 40) as f64 + 1.0 - two24) / two24
        })
        .collect()
}

/// The f64 values of the tensor `name` of this `shape`.
fn formula(name: &str, shape: &[usize], gain: f64) -> Vec<f64> {
    let numel = shape.iter().product();
    let u = uniform(name, numel);
    let leaf = name.rsplit('.').next().unwrap();
    let affine = |scale: f64, offset: f64| -> Vec<f64> {
        if offset == 0.0 {
            u.iter().map(|v| scale * v).collect()
        } else {
            u.iter().map(|v| scale * v + offset).collect()
        }
    };
    match (leaf, shape.len()) {
        ("weight", r) if r >= 2 => {
            let fan_in = shape[1..].iter().product::<usize>() as f64;
            affine((3.0 * gain / fan_in).sqrt(), 0.0)
        }
        ("weight", _) => affine(0.25, 1.0),
        ("bias" | "running_mean", _) => affine(0.1, 0.0),
        ("running_var", _) => affine(0.5, 1.25),
        _ => panic!("no formula for {name}"),
    }
}

#[test]
fn formula_matches_python_on_known_values() {
    // The first values for "input", printed by the script's `uniform("input", 3)`.
    let u = uniform("input", 3);
    let want = reference()["input_first_values"].clone();
    let want: Vec<f64> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(u, want);
    assert_eq!(fnv1a64(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64("a"), 0xaf63_dc4c_8601_ec8c);
}

// ---------------------------------------------------------------------------------------------
// A VarBuilder backend that serves the formula tensors and records every request.

type Requests = Arc<Mutex<BTreeMap<String, Vec<usize>>>>;

struct Recording {
    tensors: HashMap<String, Tensor>,
    requested: Requests,
}

impl SimpleBackend for Recording {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.requested.lock().unwrap().insert(name.to_string(), s.dims().to_vec());
        match self.tensors.get(name) {
            Some(t) if t.dims() == s.dims() => {
                SimpleBackend::get(&self.tensors, s, name, h, dtype, dev)
            }
            // Not in torch's state_dict, or another shape: zeros, so that the model still builds
            // and the comparison of the recorded requests reports every difference at once.
            _ => Tensor::zeros(s, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.requested.lock().unwrap().insert(name.to_string(), vec![]);
        SimpleBackend::get_unchecked(&self.tensors, name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

struct Golden {
    name: String,
    /// torchvision's `state_dict` less `num_batches_tracked`: name -> shape.
    state_dict: BTreeMap<String, Vec<usize>>,
    gain: f64,
    logits: Vec<Vec<f64>>,
}

fn golden(model: &str) -> Golden {
    let r = reference();
    let m = &r["models"][model];
    assert!(m.is_object(), "{model} not in the reference");
    let state_dict = m["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let shape = e[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize);
            (e[0].as_str().unwrap().to_string(), shape.collect())
        })
        .collect();
    let not_compared = m["not_compared"].as_array().unwrap();
    assert!(not_compared.iter().all(|n| n.as_str().unwrap().ends_with("num_batches_tracked")));
    let logits = m["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect())
        .collect();
    Golden { name: model.to_string(), state_dict, gain: m["gain"].as_f64().unwrap(), logits }
}

fn input(dtype: DType) -> Tensor {
    let shape: Vec<usize> = reference()["input_shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(shape, [2, 3, 64, 80]);
    let x = uniform("input", shape.iter().product());
    Tensor::from_vec(x, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// The formula tensors of a whole torchvision `state_dict` (less `num_batches_tracked`), F64.
fn formula_tensors(g: &Golden) -> HashMap<String, Tensor> {
    g.state_dict
        .iter()
        .map(|(name, shape)| {
            let values = formula(name, shape, g.gain);
            (name.clone(), Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap())
        })
        .collect()
}

/// Builds the model with `build` from the formula tensors (in `dtype`), checks it asked for
/// exactly torchvision's names and shapes, runs it in eval mode and compares the logits.
fn check<M: ModuleT>(model: &str, build: impl Fn(VarBuilder) -> deeprecog_classifiers::Result<M>) {
    let g = golden(model);
    let dev = Device::Cpu;
    let tensors = formula_tensors(&g);
    for (dtype, tolerance) in [(DType::F64, 1e-9), (DType::F32, 1e-4)] {
        let requested = Requests::default();
        let backend = Recording { tensors: tensors.clone(), requested: requested.clone() };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, dev.clone());
        let net = build(vb).unwrap_or_else(|e| panic!("{}: building in {dtype:?}: {e}", g.name));
        let requested = requested.lock().unwrap().clone();
        let missing: Vec<_> = g.state_dict.keys().filter(|k| !requested.contains_key(*k)).collect();
        let extra: Vec<_> = requested.keys().filter(|k| !g.state_dict.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{}: not requested {missing:?}, not in torch {extra:?}",
            g.name
        );
        assert_eq!(requested, g.state_dict, "{}: shapes differ", g.name);

        let y = net.forward_t(&input(dtype), false).unwrap();
        assert_eq!(y.dims(), &[2, 10], "{}", g.name);
        let ours = y.to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        let scale = g.logits.iter().flatten().fold(1.0f64, |m, v| m.max(v.abs()));
        let diff = ours
            .iter()
            .flatten()
            .zip(g.logits.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f64, f64::max);
        eprintln!(
            "{}: {dtype:?} max |logit - torch float64| = {diff:.3e} (largest logit {scale:.3})",
            g.name
        );
        let allowed = if dtype == DType::F64 { tolerance } else { tolerance * scale };
        assert!(
            diff < allowed,
            "{} {dtype:?}: logits differ by {diff:e}\nours  {ours:?}\ntorch {:?}",
            g.name,
            g.logits
        );
    }
}

fn resnet(depth: ResNetDepth) -> impl Fn(VarBuilder) -> deeprecog_classifiers::Result<ResNet> {
    move |vb| ResNet::new(&ResNetConfig { depth, base_channels: 64, num_classes: 10 }, vb)
}

#[test]
fn resnet18_matches_torchvision() {
    check("resnet18", resnet(ResNetDepth::R18));
}

#[test]
fn resnet34_matches_torchvision() {
    check("resnet34", resnet(ResNetDepth::R34));
}

#[test]
fn resnet50_matches_torchvision() {
    check("resnet50", resnet(ResNetDepth::R50));
}

#[test]
fn mobilenet_v2_matches_torchvision() {
    check("mobilenet_v2", |vb| {
        MobileNetV2::new(&MobileNetV2Config { num_classes: 10, ..Default::default() }, vb)
    });
}

#[test]
fn vgg16_matches_torchvision() {
    check("vgg16", |vb| Vgg::new(&VggConfig { num_classes: 10, ..Default::default() }, vb));
}

#[test]
fn vgg16_bn_matches_torchvision() {
    check("vgg16_bn", |vb| {
        Vgg::new(&VggConfig { batch_norm: true, num_classes: 10, ..Default::default() }, vb)
    });
}

#[test]
fn xception_matches_timm_legacy_xception() {
    check("legacy_xception", |vb| {
        Xception::new(&XceptionConfig { num_classes: 10, drop_rate: 0.0, seed: 0 }, vb)
    });
}

/// The zoo's transfer models take a torchvision `state_dict` file as it is (the ImageNet
/// classifier in it is ignored): every backbone variable is in it with its shape, and the loaded
/// backbone computes the same features as the model checked against torchvision above.
#[test]
fn zoo_backbones_load_torchvision_state_dicts() {
    let dir = tempfile::tempdir().unwrap();
    let dev = Device::Cpu;
    let x = input(DType::F32);
    for (zoo_name, torch_name, classifier) in [
        ("resnet18", "resnet18", "fc."),
        ("resnet50", "resnet50", "fc."),
        ("mobilenetv2", "mobilenet_v2", "classifier."),
    ] {
        let g = golden(torch_name);
        let tensors: HashMap<String, Tensor> = formula_tensors(&g)
            .into_iter()
            .map(|(k, t)| (k, t.to_dtype(DType::F32).unwrap()))
            .collect();
        let path = dir.path().join(format!("{torch_name}.safetensors"));
        candle_core::safetensors::save(&tensors, &path).unwrap();

        let varmap = candle_nn::VarMap::new();
        let cfg = ZooConfig {
            input: (3, 64, 80),
            weights: Some(path),
            ..ZooConfig::new(zoo_name.parse().unwrap())
        };
        let built = zoo::build(&cfg, &varmap, &dev).unwrap();
        let ours: Vec<String> = varmap
            .data()
            .lock()
            .unwrap()
            .keys()
            .filter(|k| !k.starts_with("head."))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let theirs: Vec<String> =
            g.state_dict.keys().filter(|k| !k.starts_with(classifier)).cloned().collect();
        assert_eq!(ours, theirs, "{zoo_name}");

        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let (zoo_features, features) = match built.model {
            ZooModel::ResNet(m) => {
                let depth = m.backbone.depth();
                let reference = resnet(depth)(vb).unwrap();
                (m.backbone.forward_features(&x, false), reference.forward_features(&x, false))
            }
            ZooModel::MobileNetV2(m) => {
                let cfg = MobileNetV2Config { num_classes: 10, ..Default::default() };
                let reference = MobileNetV2::new(&cfg, vb).unwrap();
                (m.backbone.forward_features(&x, false), reference.forward_features(&x, false))
            }
            other => unreachable!("{other:?}"),
        };
        // The same values to float rounding: the reference's constant 3x3 layers keep their
        // Winograd transforms and take that algorithm at smaller outputs than the zoo model's
        // variables do. A weight loaded wrongly moves the features by orders more.
        let (a, b) = (zoo_features.unwrap(), features.unwrap());
        let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-5 * scale, "{zoo_name}: features differ by {diff} (largest {scale})");
    }
}
