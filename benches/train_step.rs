//! One full CPU training step (forward, `bce_with_logits`, backward, Adam step) at 128x128,
//! batch 32: the seed scratch CNN (3 blocks) and ResNet50 in the transfer setting (conv1, bn1
//! and layer1 frozen, SeedHead with one output).
//!
//! `cargo bench --bench train_step`. ResNet50 steps take seconds on the 2-core build machine,
//! hence the minimum sample size and short measurement windows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, Optimizer, VarMap};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use deeprecog::classifiers::zoo::{self, ModelName, ZooConfig};
use deeprecog::classifiers::{Freeze, ResNetDepth};
use deeprecog::nn::loss::bce_with_logits;
use deeprecog::nn::optim::{Adam, AdamConfig};

const BATCH: usize = 32;
const SIZE: usize = 128;

fn bench_model(c: &mut Criterion, label: &str, cfg: &ZooConfig) {
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let built = zoo::build(cfg, &varmap, &device).unwrap();
    let mut opt =
        Adam::new(built.trainable.clone(), AdamConfig { lr: 1e-3, ..Default::default() }).unwrap();
    // Random inputs in the normalised range: the step's cost does not depend on pixel values.
    let x = Tensor::randn(0f32, 1.0, (BATCH, 3, SIZE, SIZE), &device).unwrap();
    let y = Tensor::ones((BATCH, 1), DType::F32, &device).unwrap();
    let mut group = c.benchmark_group("train_step_128_b32");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function(label, |b| {
        b.iter(|| {
            let logits = built.model.forward_t(&x, true).unwrap();
            let loss = bce_with_logits(&logits, &y).unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads).unwrap();
        })
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let scratch = ZooConfig::new(ModelName::Scratch(3));
    bench_model(c, "scratch3", &scratch);
    let resnet = ZooConfig {
        freeze: Freeze::UpToStage("layer1".to_string()),
        ..ZooConfig::new(ModelName::ResNet(ResNetDepth::R50))
    };
    bench_model(c, "resnet50_frozen_layer1_seedhead", &resnet);
}

criterion_group!(benches, bench);
criterion_main!(benches);
