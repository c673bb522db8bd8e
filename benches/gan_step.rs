//! One DCGAN64 iteration on the CPU (pytorch/examples' networks, nz 100, ngf = ndf = 64): the
//! discriminator's update on a real and a generated batch, then the generator's update through
//! it, at batch 16 (the synthesis report's) and 128 (DCGAN's).
//!
//! `cargo bench --bench gan_step`. A batch-128 iteration takes many seconds on the 2-core build
//! machine, hence the minimum sample size.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use deeprecog::gan::models::latents;
use deeprecog::gan::{GanConfig, GanOptim, GanStep};
use deeprecog::train::StepContext;

fn bench(c: &mut Criterion) {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let device = Device::Cpu;
    let config = GanConfig::dcgan(64);
    let mut group = c.benchmark_group("dcgan64_iteration");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(30));
    for batch in [16usize, 128] {
        let mut step = GanStep::new(&config, &GanOptim::recipe(config.arch), 0, &device).unwrap();
        // Stand-in real images in [-1, 1]: the cost does not depend on pixel values.
        let real = latents(batch, 3 * 64 * 64, 1, "real", &device)
            .unwrap()
            .tanh()
            .unwrap()
            .reshape((batch, 3, 64, 64))
            .unwrap();
        let mut i = 0u64;
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch{batch}"), |b| {
            b.iter(|| {
                let ctx = StepContext { epoch: 0, batch: 0, step: i, seed: 0 };
                step.iterate(&real, None, &ctx).unwrap();
                i += 1;
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
