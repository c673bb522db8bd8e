//! Where a DCGAN training step at 64x64 spends its convolution time: each convolution of
//! pytorch/examples' network (nz 100, ngf = ndf = 64) at batch 64, timed forward, input
//! gradient and weight gradient, on all threads. The PyTorch anchor is
//! `benches/torch_dcgan_layers.py`, which prints the same lines.
//!
//! `cargo run --release -p deeprecog-nn --example dcgan_layers [-- BATCH [NAME]]` prints, per
//! layer (those whose name contains NAME), the milliseconds of each pass (the median of 15
//! timings after warm-up; the gradients by [`conv2d_input_grad`] and [`conv2d_weight_grad`],
//! the kernels the backward pass runs) and the direct convolution's GFLOP/s.

mod common;

use candle_core::{Result, Tensor};
use common::{median_ms, seeded};
use deeprecog_nn::conv::{
    conv2d, conv2d_input_grad, conv2d_weight_grad, conv_transpose2d, Conv2dParams,
    ConvTranspose2dParams,
};

// The allocator the project's binaries use: outputs reuse freed blocks instead of fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// (name, transposed, in channels, out channels, input side, stride, padding); kernel 4.
const LAYERS: [(&str, bool, usize, usize, usize, usize, usize); 10] = [
    ("D conv1 3->64", false, 3, 64, 64, 2, 1),
    ("D conv2 64->128", false, 64, 128, 32, 2, 1),
    ("D conv3 128->256", false, 128, 256, 16, 2, 1),
    ("D conv4 256->512", false, 256, 512, 8, 2, 1),
    ("D conv5 512->1", false, 512, 1, 4, 1, 0),
    ("G convT1 100->512", true, 100, 512, 1, 1, 0),
    ("G convT2 512->256", true, 512, 256, 4, 2, 1),
    ("G convT3 256->128", true, 256, 128, 8, 2, 1),
    ("G convT4 128->64", true, 128, 64, 16, 2, 1),
    ("G convT5 64->3", true, 64, 3, 32, 2, 1),
];

const TIMINGS: usize = 15;

fn main() -> Result<()> {
    let batch = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let only = std::env::args().nth(2).unwrap_or_default();
    let mut total = [0.0; 3];
    for (i, &(name, transposed, c, o, side, stride, padding)) in LAYERS.iter().enumerate() {
        if !name.contains(&only) {
            continue;
        }
        let seed = 4 * i as u64;
        let x = seeded((batch, c, side, side), seed)?;
        let wdims = if transposed { (c, o, 4, 4) } else { (o, c, 4, 4) };
        let w = (seeded(wdims, seed + 1)? * 0.04)?;
        let conv_params = Conv2dParams { stride, padding, ..Default::default() };
        let conv = |x: &Tensor, w: &Tensor| {
            if transposed {
                let p = ConvTranspose2dParams { stride, padding, ..Default::default() };
                conv_transpose2d(x, w, None, p)
            } else {
                conv2d(x, w, None, conv_params)
            }
        };
        let y = conv(&x, &w)?;
        let gy = seeded(y.dims(), seed + 2)?;
        let out_side = y.dim(3)?;
        // Multiply-adds of the direct convolution (the smaller side's pixels for a transposed
        // one).
        let pixels = if transposed { side * side } else { out_side * out_side };
        let flops = 2.0 * (batch * pixels * c * o * 16) as f64;
        let forward = median_ms(TIMINGS, || conv(&x, &w).map(|_| ()))?;
        // A transposed convolution's gradients are those of the convolution it is the adjoint
        // of, from its output to its input: the input gradient that convolution's forward pass.
        let input_grad = median_ms(TIMINGS, || {
            if transposed {
                conv2d(&gy, &w, None, conv_params).map(|_| ())
            } else {
                conv2d_input_grad(&gy, &w, x.dims4()?, conv_params).map(|_| ())
            }
        })?;
        let weight_grad = median_ms(TIMINGS, || {
            if transposed {
                conv2d_weight_grad(&gy, &x, w.dims4()?, conv_params).map(|_| ())
            } else {
                conv2d_weight_grad(&x, &gy, w.dims4()?, conv_params).map(|_| ())
            }
        })?;
        let gflops = |ms: f64| flops / ms / 1e6;
        for (t, ms) in total.iter_mut().zip([forward, input_grad, weight_grad]) {
            *t += ms;
        }
        println!(
            "{name:20} forward {forward:7.2} ms {:6.1} GFLOP/s  input grad {input_grad:7.2} ms \
             {:6.1}  weight grad {weight_grad:7.2} ms {:6.1}",
            gflops(forward),
            gflops(input_grad),
            gflops(weight_grad)
        );
    }
    println!(
        "{:20} forward {:7.2} ms  input grad {:7.2} ms  weight grad {:7.2} ms",
        "sum", total[0], total[1], total[2]
    );
    Ok(())
}
