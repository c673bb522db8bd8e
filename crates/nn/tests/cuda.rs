//! The CUDA paths of `nn`'s ops against their CPU paths (themselves tested against direct
//! loops and PyTorch) on seeded random shapes: odd sizes, stride 2, padding, groups,
//! depthwise, batch 1, every activation; forward and every gradient. Built with the `cuda`
//! feature only (convolutions with `cudnn`), and run on a machine with a CUDA device: without
//! one, every test fails at `Device::new_cuda`.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, Var};
use deeprecog_nn::conv::Activation;
use deeprecog_nn::norm::{BatchNorm, BatchNormConfig};
use deeprecog_nn::pool::{avg_pool2d, max_pool2d};

mod common;

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests need a CUDA device")
}

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    common::randn(seed, shape, "cuda", DType::F32)
}

/// Largest difference relative to the CPU value's largest magnitude (at least 1).
fn rel(cpu: &Tensor, cuda: &Tensor) -> f64 {
    let a = cpu.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let b = cuda
        .to_device(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert_eq!(a.len(), b.len(), "lengths differ");
    let scale = a.iter().fold(1f64, |m, v| m.max(v.abs()));
    a.iter().zip(&b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn close(what: &str, cpu: &Tensor, cuda: &Tensor, tol: f64) {
    assert_eq!(cpu.dims(), cuda.dims(), "{what}: shapes differ");
    let d = rel(cpu, cuda);
    assert!(d <= tol, "{what}: relative difference {d:e} above {tol:e}");
}

/// `f` applied on both devices to variables made from `inputs`; the outputs and the gradients
/// of `sum(y * r)` (a fixed random `r`) compared.
fn compare(
    what: &str,
    inputs: &[Tensor],
    tol: f64,
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) {
    let run = |dev: &Device| {
        let vars: Vec<Var> =
            inputs.iter().map(|t| Var::from_tensor(&t.to_device(dev).unwrap()).unwrap()).collect();
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = f(&ts).unwrap();
        let r = randn(99, y.dims()).to_device(dev).unwrap();
        let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<Tensor> =
            vars.iter().map(|v| grads.get(v).expect("a gradient").clone()).collect();
        (y, g)
    };
    let (yc, gc) = run(&Device::Cpu);
    let (yg, gg) = run(&gpu());
    close(&format!("{what}: output"), &yc, &yg, tol);
    for (i, (a, b)) in gc.iter().zip(&gg).enumerate() {
        close(&format!("{what}: gradient of input {i}"), a, b, tol);
    }
}

/// (n, c, h, w, o, k, stride, padding, dilation, groups)
type Case = (usize, usize, usize, usize, usize, usize, usize, usize, usize, usize);

const CONVS: [Case; 9] = [
    (2, 3, 7, 9, 4, 3, 1, 1, 1, 1),
    (1, 4, 8, 8, 6, 3, 2, 1, 1, 2),
    (3, 6, 5, 6, 6, 3, 1, 1, 1, 6),
    (2, 5, 9, 7, 4, 1, 2, 0, 1, 1),
    (2, 2, 11, 10, 3, 3, 1, 2, 2, 1),
    (1, 3, 13, 13, 8, 7, 2, 3, 1, 1),
    (4, 8, 6, 5, 8, 3, 2, 1, 1, 8),
    (1, 16, 13, 11, 17, 3, 1, 1, 1, 1),
    (5, 32, 16, 16, 24, 4, 2, 1, 1, 1),
];

#[test]
fn conv2d_matches_the_cpu_forward_and_backward() {
    #[cfg(feature = "cudnn")]
    deeprecog_nn::conv::set_allow_tf32(false);
    for (i, &(n, c, h, w, o, k, stride, padding, dilation, groups)) in CONVS.iter().enumerate() {
        let p = deeprecog_nn::conv::Conv2dParams { stride, padding, dilation, groups };
        let x = randn(i as u64, &[n, c, h, w]);
        let wt = randn(100 + i as u64, &[o, c / groups, k, k]);
        let b = randn(200 + i as u64, &[o]);
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            compare(&format!("conv {i} {act:?}"), &[x.clone(), wt.clone(), b.clone()], 1e-5, |t| {
                deeprecog_nn::conv::conv2d_act(&t[0], &t[1], Some(&t[2]), p, act)
            });
        }
        compare(&format!("conv {i} without bias"), &[x.clone(), wt.clone()], 1e-5, |t| {
            deeprecog_nn::conv::conv2d(&t[0], &t[1], None, p)
        });
    }
    // Mixed precision (process-wide, so here rather than in a test of its own that could run
    // beside this one): bf16 products, f32 around them; bf16 keeps 8 bits of mantissa.
    #[cfg(feature = "cudnn")]
    {
        deeprecog_nn::conv::set_autocast_bf16(true);
        for (i, &(n, c, h, w, o, k, stride, padding, dilation, groups)) in CONVS.iter().enumerate()
        {
            let p = deeprecog_nn::conv::Conv2dParams { stride, padding, dilation, groups };
            let x = randn(i as u64, &[n, c, h, w]);
            let wt = randn(100 + i as u64, &[o, c / groups, k, k]);
            let b = randn(200 + i as u64, &[o]);
            compare(&format!("bf16 conv {i}"), &[x, wt, b], 5e-2, |t| {
                deeprecog_nn::conv::conv2d_act(&t[0], &t[1], Some(&t[2]), p, Activation::Relu)
            });
        }
        deeprecog_nn::conv::set_autocast_bf16(false);
    }
}

#[test]
fn conv_transpose2d_matches_the_cpu() {
    #[cfg(feature = "cudnn")]
    deeprecog_nn::conv::set_allow_tf32(false);
    // The DCGAN generator's 4x4 stride-2 layers, and odd ones.
    let cases =
        [(2, 8, 4, 4, 6, 4, 2, 1, 0), (1, 5, 3, 5, 3, 3, 2, 1, 1), (3, 4, 5, 5, 4, 3, 1, 0, 0)];
    for (i, &(n, c, h, w, o, k, stride, padding, output_padding)) in cases.iter().enumerate() {
        let p = deeprecog_nn::conv::ConvTranspose2dParams {
            stride,
            padding,
            output_padding,
            ..Default::default()
        };
        let x = randn(300 + i as u64, &[n, c, h, w]);
        let wt = randn(400 + i as u64, &[c, o, k, k]);
        let b = randn(500 + i as u64, &[o]);
        compare(&format!("conv_transpose {i}"), &[x, wt, b], 1e-5, |t| {
            deeprecog_nn::conv::conv_transpose2d(&t[0], &t[1], Some(&t[2]), p)
        });
    }
}

#[test]
fn pooling_matches_the_cpu_bit_for_bit() {
    // (n, c, h, w, kernel, stride, padding): ResNet's stem pool, the 2x2 block pool, odd ones.
    let cases = [
        (2, 3, 9, 8, 3, 2, 1),
        (1, 4, 8, 8, 2, 2, 0),
        (3, 2, 7, 5, 3, 1, 1),
        (2, 5, 6, 9, 5, 3, 2),
    ];
    for (i, &(n, c, h, w, k, s, p)) in cases.iter().enumerate() {
        let x = randn(600 + i as u64, &[n, c, h, w]);
        compare(&format!("max_pool {i}"), std::slice::from_ref(&x), 0.0, |t| {
            max_pool2d(&t[0], k, s, p)
        });
        // Constants take the maxima-only kernel.
        let yc = max_pool2d(&x, k, s, p).unwrap();
        let yg = max_pool2d(&x.to_device(&gpu()).unwrap(), k, s, p).unwrap();
        close(&format!("max_pool values {i}"), &yc, &yg, 0.0);
        for include_pad in [true, false] {
            compare(&format!("avg_pool {i} {include_pad}"), std::slice::from_ref(&x), 1e-6, |t| {
                avg_pool2d(&t[0], k, s, p, include_pad)
            });
        }
    }
    // A NaN wins its windows on both devices.
    let mut v = randn(700, &[1, 1, 4, 4]).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    v[5] = f32::NAN;
    let x = Tensor::from_vec(v, (1, 1, 4, 4), &Device::Cpu).unwrap();
    let yc = max_pool2d(&x, 3, 1, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let yg = max_pool2d(&x.to_device(&gpu()).unwrap(), 3, 1, 1).unwrap();
    let yg = yg.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let nan = |v: &[f32]| v.iter().map(|x| x.is_nan()).collect::<Vec<_>>();
    assert_eq!(nan(&yc), nan(&yg));
}

#[test]
fn batch_norm_matches_the_cpu_in_training_and_evaluation() {
    for (i, &(n, c, h, w)) in [(4, 3, 5, 7), (1, 8, 6, 6), (16, 2, 3, 1)].iter().enumerate() {
        let x = randn(800 + i as u64, &[n, c, h, w]);
        let weight = (randn(900, &[c]) + 1.0).unwrap();
        let bias = randn(901, &[c]);
        let mean = (randn(902, &[c]) * 0.1).unwrap();
        let var = (randn(903, &[c]).abs().unwrap() + 0.5).unwrap();
        let bn = |t: &[Tensor]| {
            let dev = t[0].device();
            let (m, v) = (mean.to_device(dev).unwrap(), var.to_device(dev).unwrap());
            BatchNorm::new(t[1].clone(), t[2].clone(), m, v, BatchNormConfig::default())
        };
        for act in [Activation::Identity, Activation::Relu, Activation::Relu6] {
            for train in [true, false] {
                let what = format!("batch norm {i} {act:?} train={train}");
                let inputs = [x.clone(), weight.clone(), bias.clone()];
                compare(&what, &inputs, 1e-5, |t| bn(t)?.forward_act_t(&t[0], train, act));
                // The running statistics' update.
                let on = |dev: &Device| {
                    let t: Vec<Tensor> = inputs.iter().map(|t| t.to_device(dev).unwrap()).collect();
                    let b = bn(&t).unwrap();
                    b.forward_act_t(&t[0], train, act).unwrap();
                    (b.running_mean().clone(), b.running_var().clone())
                };
                let ((mc, vc), (mg, vg)) = (on(&Device::Cpu), on(&gpu()));
                close(&format!("{what}: running mean"), &mc, &mg, 1e-6);
                close(&format!("{what}: running var"), &vc, &vg, 1e-6);
            }
        }
    }
}

#[test]
fn channel_bias_matches_the_cpu() {
    let x = randn(1000, &[3, 5, 4, 6]);
    let b = randn(1001, &[5]);
    compare("bias", &[x.clone(), b.clone()], 1e-6, |t| {
        deeprecog_nn::conv::add_channel_bias(&t[0], &t[1])
    });
    compare("bias relu", &[x, b], 1e-6, |t| {
        deeprecog_nn::conv::add_channel_bias_relu(&t[0], &t[1])
    });
}

#[test]
fn preprocessing_matches_the_cpu_bit_for_bit() {
    use deeprecog_nn::preprocess::{crop_flip_normalize, Crop, Normalization};
    let (n, h, w) = (5, 37, 41);
    let pixels: Vec<u8> = (0..n * h * w * 3).map(|i| ((i * 7919) % 251) as u8).collect();
    let images = Tensor::from_vec(pixels, (n, h, w, 3), &Device::Cpu).unwrap();
    let crops: Vec<Crop> =
        (0..n).map(|i| Crop { top: (i * 3) % 6, left: (i * 5) % 8, flip: i % 2 == 1 }).collect();
    for norm in [Normalization::IMAGENET, Normalization::SYMMETRIC] {
        let cpu = crop_flip_normalize(&images, &crops, (31, 33), norm).unwrap();
        let cuda = crop_flip_normalize(&images.to_device(&gpu()).unwrap(), &crops, (31, 33), norm)
            .unwrap();
        close("preprocess", &cpu, &cuda, 0.0);
    }
}

#[test]
fn adam_and_adamw_steps_match_the_cpu() {
    use candle_nn::Optimizer;
    use deeprecog_nn::optim::{Adam, AdamConfig, AdamW, AdamWConfig};
    let start = randn(1100, &[7, 5, 3]);
    let grads: Vec<Tensor> = (0..4).map(|i| randn(1200 + i, &[7, 5, 3])).collect();
    // Loss `sum(theta * g_step)`: its gradient is `g_step`.
    fn run<O: Optimizer>(dev: &Device, start: &Tensor, grads: &[Tensor], cfg: O::Config) -> Tensor {
        let var = Var::from_tensor(&start.to_device(dev).unwrap()).unwrap();
        let mut opt = O::new(vec![var.clone()], cfg).unwrap();
        for g in grads {
            let loss = (var.as_tensor() * g.to_device(dev).unwrap()).unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
        }
        var.as_tensor().clone()
    }
    for wd in [0.0, 0.1] {
        let cfg = AdamConfig { lr: 0.05, weight_decay: wd, ..Default::default() };
        let (c, g) = (
            run::<Adam>(&Device::Cpu, &start, &grads, cfg),
            run::<Adam>(&gpu(), &start, &grads, cfg),
        );
        close(&format!("adam wd={wd}"), &c, &g, 1e-6);
        let cfg = AdamWConfig { lr: 0.05, weight_decay: wd, ..Default::default() };
        let (c, g) = (
            run::<AdamW>(&Device::Cpu, &start, &grads, cfg),
            run::<AdamW>(&gpu(), &start, &grads, cfg),
        );
        close(&format!("adamw wd={wd}"), &c, &g, 1e-6);
    }
}
