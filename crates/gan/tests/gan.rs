//! The GAN crate's contract: shapes, gradients reaching every parameter, updates that touch one
//! network only, training through the engine with mosaics, and a resume that repeats the
//! uninterrupted run exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use deeprecog_attributes::Attribute;
use deeprecog_dataset::{Image, InMemory, Sample, Target};
use deeprecog_gan::models::{latents, Arch};
use deeprecog_gan::train::{diversity, fixed_batch};
use deeprecog_gan::{train_gan, GanConfig, GanModel, GanOptim, GanStep, GanTrainConfig};
use deeprecog_train::StepContext;

fn dev() -> Device {
    Device::Cpu
}

fn small(config: GanConfig) -> GanConfig {
    match config.arch {
        Arch::Seed => config.with_widths(8, 8),
        Arch::Dcgan => config.with_widths(4, 4),
    }
}

fn snapshot(vars: &VarMap) -> HashMap<String, Vec<f32>> {
    let data = vars.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

fn images(n: usize, size: usize, seed: u64) -> Tensor {
    // Seeded stand-ins for real images in [-1, 1].
    latents(n, 3 * size * size, seed, "images", &dev())
        .unwrap()
        .tanh()
        .unwrap()
        .reshape((n, 3, size, size))
        .unwrap()
}

fn ctx(step: u64) -> StepContext {
    StepContext { epoch: 0, batch: step as usize, step, seed: 5 }
}

#[test]
fn shapes_of_every_architecture() {
    let cases = [
        small(GanConfig::seed(32)),
        small(GanConfig::seed(24)),
        small(GanConfig::dcgan(32)),
        small(GanConfig::dcgan(64)),
        small(GanConfig::dcgan(128)),
        small(GanConfig::conditional(32, vec![Attribute::Male, Attribute::Smiling])),
    ];
    for config in cases {
        let step = GanStep::new(&config, &GanOptim::recipe(config.arch), 1, &dev()).unwrap();
        let z = latents(3, config.latent_dim, 0, "z", &dev()).unwrap();
        let y = config
            .is_conditional()
            .then(|| Tensor::new(&[[1f32, -1.0], [-1.0, 1.0], [1.0, 1.0]], &dev()).unwrap());
        let x = step.generator().forward(&z, y.as_ref(), true).unwrap();
        let s = config.image_size;
        assert_eq!(x.dims(), &[3, 3, s, s], "{config:?}");
        let (lo, hi) = (
            x.min_all().unwrap().to_scalar::<f32>().unwrap(),
            x.max_all().unwrap().to_scalar::<f32>().unwrap(),
        );
        assert!(lo >= -1.0 && hi <= 1.0, "tanh range");
        let logits = step.discriminator().forward(&x, y.as_ref(), true).unwrap();
        assert_eq!(logits.dims(), &[3], "{config:?}");
        // A condition where none is expected (or the reverse) is an error, not a panic.
        let wrong = if y.is_some() {
            None
        } else {
            Some(Tensor::ones((3, 2), DType::F32, &dev()).unwrap())
        };
        assert!(step.generator().forward(&z, wrong.as_ref(), true).is_err());
    }
    assert!(GanConfig::dcgan(48).validate().is_err());
    assert!(GanConfig::seed(15).validate().is_err());
    assert!(GanConfig::from_arch_name("dcgan128").unwrap().image_size == 128);
    assert!(GanConfig::from_arch_name("stylegan").is_err());
}

#[test]
fn dcgan_parameter_names_are_pytorch_examples() {
    let step =
        GanStep::new(&GanConfig::dcgan(64), &GanOptim::recipe(Arch::Dcgan), 0, &dev()).unwrap();
    let g = snapshot(step.generator_vars());
    let d = snapshot(step.discriminator_vars());
    // netG: ConvTranspose2d(100, 512, 4, 1, 0) ... ConvTranspose2d(64, 3, 4, 2, 1).
    assert_eq!(g["main.0.weight"].len(), 100 * 512 * 16);
    assert_eq!(g["main.1.running_var"].len(), 512);
    assert_eq!(g["main.12.weight"].len(), 64 * 3 * 16);
    assert!(!g.contains_key("main.12.bias"), "DCGAN's convolutions have no bias");
    // netD: Conv2d(3, 64, 4, 2, 1) ... Conv2d(512, 1, 4, 1, 0).
    assert_eq!(d["main.0.weight"].len(), 64 * 3 * 16);
    assert_eq!(d["main.3.weight"].len(), 128);
    assert_eq!(d["main.11.weight"].len(), 512 * 16);
    let total: usize = g.values().map(Vec::len).sum();
    // pytorch/examples' netG has 3,576,704 parameters plus 2 x 960 running statistics.
    assert_eq!(total, 3_576_704 + 2 * 960);
}

/// Seed, DCGAN, conditional and spectral-norm DCGAN, small.
fn every_kind() -> [GanConfig; 4] {
    [
        small(GanConfig::seed(24)),
        small(GanConfig::dcgan(32)),
        small(GanConfig::conditional(32, vec![Attribute::Eyeglasses])),
        GanConfig { spectral_norm: true, ..small(GanConfig::dcgan(32)) },
    ]
}

/// Four seeded latents, and conditions where `config` takes them.
fn four_inputs(config: &GanConfig) -> (Tensor, Option<Tensor>) {
    let y = config
        .is_conditional()
        .then(|| Tensor::new(&[[1f32], [-1.0], [1.0], [-1.0]], &dev()).unwrap());
    (latents(4, config.latent_dim, 0, "z", &dev()).unwrap(), y)
}

#[test]
fn every_parameter_gets_a_gradient() {
    for config in every_kind() {
        let step = GanStep::new(&config, &GanOptim::recipe(config.arch), 2, &dev()).unwrap();
        let (z, y) = four_inputs(&config);
        let fake = step.generator().forward(&z, y.as_ref(), true).unwrap();
        let loss = step
            .discriminator()
            .forward(&fake, y.as_ref(), true)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for vars in [step.generator_vars(), step.discriminator_vars()] {
            let data = vars.data().lock().unwrap();
            for (name, var) in data.iter() {
                if name.ends_with("running_mean") || name.ends_with("running_var") {
                    continue;
                }
                let g = grads
                    .get(var.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient ({config:?})"));
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm > 0.0 && norm.is_finite(), "{name}: gradient norm {norm}");
            }
        }
    }
}

#[test]
fn a_frozen_discriminator_passes_the_same_gradients_to_the_generator() {
    for config in every_kind() {
        let (z, y) = four_inputs(&config);
        // Two identically seeded steps: a training-mode pass moves the spectral-norm vectors.
        let run = |frozen: bool| {
            let step = GanStep::new(&config, &GanOptim::recipe(config.arch), 2, &dev()).unwrap();
            let fake = step.generator().forward(&z, y.as_ref(), true).unwrap();
            let d = step.discriminator();
            let logits = if frozen {
                d.forward_frozen(&fake, y.as_ref(), true).unwrap()
            } else {
                d.forward(&fake, y.as_ref(), true).unwrap()
            };
            let grads = logits.sqr().unwrap().mean_all().unwrap().backward().unwrap();
            let of = |vars: &VarMap| -> Vec<(String, usize, Option<Vec<f32>>)> {
                let data = vars.data().lock().unwrap();
                let mut v: Vec<_> = data
                    .iter()
                    .map(|(name, var)| {
                        let g = grads
                            .get(var.as_tensor())
                            .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap());
                        (name.clone(), var.as_tensor().rank(), g)
                    })
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            };
            let logits = logits.to_vec1::<f32>().unwrap();
            (logits, of(step.generator_vars()), of(step.discriminator_vars()))
        };
        let (logits, g_grads, d_grads) = run(false);
        let (frozen_logits, frozen_g_grads, frozen_d_grads) = run(true);
        assert_eq!(logits, frozen_logits, "{config:?}");
        assert_eq!(g_grads, frozen_g_grads, "{config:?}");
        for ((name, rank, g), (_, _, frozen)) in d_grads.iter().zip(&frozen_d_grads) {
            // Convolution, dense and embedding weights are 2-D or 4-D.
            if *rank >= 2 {
                assert!(g.is_some(), "{name}: no gradient when trained ({config:?})");
                assert!(frozen.is_none(), "{name}: a gradient while frozen ({config:?})");
            }
        }
    }
}

#[test]
fn each_update_touches_its_own_network_only() {
    for config in [small(GanConfig::seed(24)), small(GanConfig::dcgan(32))] {
        let mut step = GanStep::new(&config, &GanOptim::recipe(config.arch), 3, &dev()).unwrap();
        let real = images(4, config.image_size, 1);
        let (g0, d0) = (snapshot(step.generator_vars()), snapshot(step.discriminator_vars()));
        let d = step.discriminator_step(&real, None, &ctx(0)).unwrap();
        let (g1, d1) = (snapshot(step.generator_vars()), snapshot(step.discriminator_vars()));
        // The generator's BatchNorm running statistics follow its training-mode forward pass.
        let params = |m: &HashMap<String, Vec<f32>>| -> Vec<(String, Vec<f32>)> {
            let mut v: Vec<_> = m
                .iter()
                .filter(|(k, _)| !k.contains("running_"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        assert_eq!(params(&g0), params(&g1), "a discriminator step changed the generator");
        assert_ne!(params(&d0), params(&d1), "the discriminator did not move");
        step.generator_step(&d, &ctx(0)).unwrap();
        let (g2, d2) = (snapshot(step.generator_vars()), snapshot(step.discriminator_vars()));
        assert_eq!(params(&d1), params(&d2), "a generator step changed the discriminator");
        assert_ne!(params(&g1), params(&g2), "the generator did not move");
        assert!(d.loss.is_finite() && (0.0..=1.0).contains(&d.real_probability));
    }
}

/// 24 seeded 20x24 RGB images (not square: the training transform crops them).
fn dataset(conditional: bool) -> InMemory<Sample> {
    let samples = (0..24)
        .map(|i| {
            let bytes: Vec<u8> = (0..20 * 24 * 3).map(|p| ((p * 7 + i * 31) % 251) as u8).collect();
            let target = if conditional {
                Target::Labels(vec![(i % 2) as f32])
            } else {
                Target::Labels(vec![])
            };
            Sample {
                id: format!("{i:03}.png"),
                image: Image::from_raw(20, 24, 3, bytes).unwrap(),
                target,
                group: None,
            }
        })
        .collect();
    InMemory(samples)
}

fn config(gan: GanConfig, iterations: u64) -> GanTrainConfig {
    GanTrainConfig {
        iterations,
        batch_size: 8,
        mosaic_every: 2,
        checkpoint_every: 100,
        seed: 11,
        workers: 1,
        ..GanTrainConfig::new(gan)
    }
}

#[test]
fn resume_repeats_the_uninterrupted_run() {
    for gan in
        [small(GanConfig::seed(24)), small(GanConfig::conditional(32, vec![Attribute::Smiling]))]
    {
        let cond = gan.is_conditional();
        let whole = tempfile::tempdir().unwrap();
        let full =
            train_gan(dataset(cond), &config(gan.clone(), 5), whole.path(), &dev(), false).unwrap();
        let parts = tempfile::tempdir().unwrap();
        let first =
            train_gan(dataset(cond), &config(gan.clone(), 2), parts.path(), &dev(), false).unwrap();
        assert_eq!(first.iterations, 2);
        let resumed =
            train_gan(dataset(cond), &config(gan.clone(), 5), parts.path(), &dev(), false).unwrap();
        assert_eq!(resumed.iterations, 5);
        assert_eq!(full.trace, resumed.trace, "the iteration log differs after a resume");
        let weights = |dir: &std::path::Path| {
            candle_core::safetensors::load(dir.join("generator/generator.safetensors"), &dev())
                .unwrap()
        };
        let (a, b) = (weights(whole.path()), weights(parts.path()));
        for (name, t) in &a {
            let (x, y) = (
                t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            );
            assert_eq!(x, y, "{name} differs after a resume");
        }
        // Mosaics at 0, 2, 4 (the first run's 0 and 2; the resumed run's 4).
        for i in [0, 2, 4] {
            assert!(whole.path().join(format!("mosaic_{i}.png")).is_file());
            assert!(parts.path().join(format!("mosaic_{i}.png")).is_file());
        }
        assert!(
            whole.path().join("losses.png").is_file()
                && whole.path().join("iterations.json").is_file()
        );
        let mosaic = image::open(whole.path().join("mosaic_4.png")).unwrap();
        let side = gan.image_size as u32;
        assert_eq!(mosaic.width(), 6 * side + 7 * 2);
        // The export samples what training's generator generates for the same latents.
        let model = GanModel::load(whole.path(), &dev()).unwrap();
        // The training checkpoint holds the same generator.
        let from_last = GanModel::load(&whole.path().join("last"), &dev()).unwrap();
        let (x, y) = (
            model.sample(2, 4, cond.then_some(&[true][..])).unwrap(),
            from_last.sample(2, 4, cond.then_some(&[true][..])).unwrap(),
        );
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        assert!(GanModel::load(whole.path().join("nothing").as_path(), &dev()).is_err());
        let cond_values = cond.then_some(&[true][..]);
        let sampled = model.sample(4, 9, cond_values).unwrap();
        assert_eq!(sampled.dims(), &[4, 3, gan.image_size, gan.image_size]);
        let grid = model.interpolate(2, 5, 1, cond_values).unwrap();
        assert_eq!(grid.dim(0).unwrap(), 10);
        assert!(model.sample(2, 0, if cond { None } else { Some(&[true][..]) }).is_err());
    }
}

#[test]
fn diversity_and_fixed_batches() {
    let a = images(6, 8, 1);
    let one = a.narrow(0, 0, 1).unwrap();
    let same = Tensor::cat(&vec![one; 6], 0).unwrap();
    assert!(diversity(&a).unwrap() > 0.3);
    assert_eq!(diversity(&same).unwrap(), 0.0);
    let cond = GanConfig::conditional(32, vec![Attribute::Male, Attribute::Smiling]);
    let (z, y) = fixed_batch(&cond, 0, &dev()).unwrap();
    assert_eq!(z.dims(), &[36, 100]);
    let y = y.unwrap().to_vec2::<f32>().unwrap();
    // Row 0: neither; row 1: Male; row 2: Smiling; row 3: both; row 4 starts over.
    assert_eq!(
        (y[0].clone(), y[6].clone(), y[12].clone(), y[18].clone(), y[24].clone()),
        (vec![-1.0, -1.0], vec![1.0, -1.0], vec![-1.0, 1.0], vec![1.0, 1.0], vec![-1.0, -1.0])
    );
}
