//! One convolution's forward + backward (input and weight gradients) on the CPU: candle's
//! `Tensor::conv2d` against `deeprecog_nn::conv::conv2d` (im2col + gemm both ways), at the
//! shapes of the seed scratch CNN at 128x128, batch 32, and a ResNet-style stride-2 layer.
//!
//! `cargo bench --bench conv`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::time::Duration;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::Init;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use deeprecog::nn::conv::{conv2d, Conv2dParams};
use deeprecog::nn::init::init_tensor;

fn randn(shape: &[usize], name: &str) -> Tensor {
    let init = Init::Randn { mean: 0.0, stdev: 1.0 };
    init_tensor(init, &shape.into(), 0, name, DType::F32, &Device::Cpu).unwrap()
}

fn bench(c: &mut Criterion) {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    // (label, n, c, h, o, k, stride, padding)
    let cases = [
        ("b32_3x128x128_to_32_k3", 32, 3, 128, 32, 3, 1, 1),
        ("b32_32x64x64_to_64_k3", 32, 32, 64, 64, 3, 1, 1),
        ("b32_64x32x32_to_128_k3", 32, 64, 32, 128, 3, 1, 1),
        ("b32_64x32x32_to_128_k3_s2", 32, 64, 32, 128, 3, 2, 1),
    ];
    let mut group = c.benchmark_group("conv2d_fwd_bwd");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for (label, n, ch, h, o, k, stride, padding) in cases {
        let x = Var::from_tensor(&randn(&[n, ch, h, h], "x")).unwrap();
        let w = Var::from_tensor(&randn(&[o, ch, k, k], "w")).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("candle/{label}"), |b| {
            b.iter(|| {
                let y = x.as_tensor().conv2d(w.as_tensor(), padding, stride, 1, 1).unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
        let p = Conv2dParams { stride, padding, ..Default::default() };
        group.bench_function(format!("im2col_gemm/{label}"), |b| {
            b.iter(|| {
                let y = conv2d(x.as_tensor(), w.as_tensor(), None, p).unwrap();
                y.sum_all().unwrap().backward().unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
