//! The GAN networks against their reference implementations, with the same formula-filled
//! weights on both sides: pytorch/examples' DCGAN in evaluation and training mode (BatchNorm
//! batch statistics and running-statistic updates; tests/golden/reference.py), and the seed GAN
//! against its PyTorch transcription and against Keras itself (tests/golden/keras_reference.py).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use deeprecog_gan::{Discriminator, GanConfig, Generator};
use deeprecog_nn::init::seeded_var_builder;

/// golden/reference.py's `fill`.
fn fill(name: &str, n: usize) -> Vec<f32> {
    let k = name.bytes().map(u32::from).sum::<u32>() % 97;
    (0..n)
        .map(|i| {
            let v = 0.05 * (0.37 * i as f64 + 0.11 * f64::from(k)).sin();
            (if name.ends_with("running_var") { 1.0 + 10.0 * v * v } else { v }) as f32
        })
        .collect()
}

fn wave(n: usize, a: f64, b: f64) -> Vec<f32> {
    (0..n).map(|i| (b * (a * i as f64).sin()) as f32).collect()
}

fn set_weights(vars: &VarMap) {
    let data = vars.data().lock().unwrap();
    for (name, var) in data.iter() {
        let t = var.as_tensor();
        let v = Tensor::from_vec(fill(name, t.elem_count()), t.shape(), t.device()).unwrap();
        var.set(&v).unwrap();
    }
}

fn reference() -> serde_json::Value {
    load("reference.json")
}

fn load(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Compares a tensor with the reference summary; returns the largest relative difference.
fn check(t: &Tensor, r: &serde_json::Value, what: &str) -> f64 {
    let shape: Vec<usize> = serde_json::from_value(r["shape"].clone()).unwrap();
    assert_eq!(t.dims(), shape.as_slice(), "{what}: shape");
    let v = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let scale = r["abs_sum"].as_f64().unwrap() / v.len() as f64;
    let mut worst = 0f64;
    let mut rel = |a: f64, b: f64| {
        let d = (a - b).abs() / scale.max(1e-12);
        worst = worst.max(d);
    };
    rel(v.iter().sum::<f64>() / v.len() as f64, r["sum"].as_f64().unwrap() / v.len() as f64);
    rel(v.iter().map(|x| x.abs()).sum::<f64>() / v.len() as f64, scale);
    for (a, b) in v.iter().zip(r["head"].as_array().unwrap()) {
        rel(*a, b.as_f64().unwrap());
    }
    eprintln!("{what}: largest difference {worst:.2e} of the mean magnitude {scale:.3e}");
    assert!(worst < 1e-4, "{what}: {worst:e} relative to the mean magnitude");
    worst
}

#[test]
fn dcgan_matches_pytorch_examples() {
    let r = reference();
    let dev = Device::Cpu;
    let config = GanConfig { latent_dim: 16, ..GanConfig::dcgan(64).with_widths(8, 8) };
    let n = 4;
    let z = Tensor::from_vec(wave(n * 16, 0.7, 1.0), (n, 16), &dev).unwrap();
    let x = Tensor::from_vec(wave(n * 3 * 64 * 64, 0.013, 0.9), (n, 3, 64, 64), &dev).unwrap();
    for mode in ["eval", "train"] {
        let (gv, dv) = (VarMap::new(), VarMap::new());
        let g = Generator::new(&config, seeded_var_builder(&gv, 0, DType::F32, &dev)).unwrap();
        let d =
            Discriminator::new(&config, 0, seeded_var_builder(&dv, 0, DType::F32, &dev)).unwrap();
        set_weights(&gv);
        set_weights(&dv);
        let train = mode == "train";
        check(
            &g.forward(&z, None, train).unwrap(),
            &r[format!("dcgan_g_{mode}")],
            &format!("DCGAN G ({mode})"),
        );
        check(
            &d.forward(&x, None, train).unwrap(),
            &r[format!("dcgan_d_{mode}")],
            &format!("DCGAN D ({mode})"),
        );
        if train {
            let mean = gv.data().lock().unwrap()["main.1.running_mean"].as_tensor().clone();
            check(
                &mean,
                &r["dcgan_g_running_mean_after"],
                "DCGAN G running mean after a training pass",
            );
        }
    }
}

#[test]
fn seed_gan_matches_its_pytorch_transcription() {
    let r = reference();
    let dev = Device::Cpu;
    let config =
        GanConfig { latent_dim: 16, dropout: 0.0, ..GanConfig::seed(32).with_widths(8, 8) };
    let n = 4;
    let (gv, dv) = (VarMap::new(), VarMap::new());
    let g = Generator::new(&config, seeded_var_builder(&gv, 0, DType::F32, &dev)).unwrap();
    let d = Discriminator::new(&config, 0, seeded_var_builder(&dv, 0, DType::F32, &dev)).unwrap();
    set_weights(&gv);
    set_weights(&dv);
    let z = Tensor::from_vec(wave(n * 16, 0.7, 1.0), (n, 16), &dev).unwrap();
    let x = Tensor::from_vec(wave(n * 3 * 32 * 32, 0.013, 0.9), (n, 3, 32, 32), &dev).unwrap();
    let (gen, logits) = (g.forward(&z, None, true).unwrap(), d.forward(&x, None, false).unwrap());
    check(&gen, &r["seed_g"], "seed G (PyTorch)");
    check(&logits, &r["seed_d"], "seed D (PyTorch)");
    // The report's own framework (golden/keras_reference.py, Keras 3 on TensorFlow): the same
    // weights in Keras's layouts, channels-last order permuted to channels-first.
    let keras = load("keras_reference.json");
    check(&gen, &keras["seed_g"], "seed G (Keras)");
    check(&logits, &keras["seed_d"], "seed D (Keras)");
}
