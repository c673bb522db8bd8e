//! Which convolution algorithm wins on which shape: each 3x3 stride-1 layer of the zoo's
//! benchmark models (the scratch CNN's first, with 3 input channels, always by GEMM) timed by Winograd F(2x2, 3x3) and by `im2col` + GEMM
//! ([`deeprecog_nn::conv::set_winograd`]), forward alone (inference) and forward + backward
//! (a training step's share), on all threads.
//!
//! `cargo run --release -p deeprecog-nn --example conv_algorithms` prints one line per shape:
//! milliseconds per call (median of 25 timings after warm-up) and the direct convolution's
//! GFLOP/s for each algorithm.

mod common;

use candle_core::{Result, Var};
use common::{median_ms, seeded};
use deeprecog_nn::conv::{conv2d_relu, set_winograd, Conv2dParams};

/// Timings per median (after two warm-up calls).
const TIMINGS: usize = 25;

fn main() -> Result<()> {
    // (what, batch, in channels, out channels, side)
    let shapes = [
        ("scratch3 conv1", 1, 3, 32, 128),
        ("scratch3 conv2", 1, 32, 64, 64),
        ("scratch3 conv3", 1, 64, 128, 32),
        ("scratch3 conv2", 32, 32, 64, 64),
        ("scratch3 conv3", 32, 64, 128, 32),
        ("resnet layer1", 1, 64, 64, 56),
        ("resnet layer2", 1, 128, 128, 28),
        ("resnet layer3", 1, 256, 256, 14),
        ("resnet layer4", 1, 512, 512, 7),
        ("resnet layer1", 8, 64, 64, 56),
        ("resnet layer2", 8, 128, 128, 28),
        ("resnet layer3", 8, 256, 256, 14),
        ("resnet layer4", 8, 512, 512, 7),
        ("resnet 128px layer2", 32, 128, 128, 16),
        ("resnet 128px layer4", 32, 512, 512, 4),
    ];
    let p = Conv2dParams { padding: 1, ..Default::default() };
    println!(
        "{:<22} {:>5} {:>4} {:>4} {:>4} | infer ms (GFLOP/s): winograd, gemm | train ms: winograd, gemm",
        "layer", "batch", "C", "O", "side"
    );
    for (i, &(what, n, c, o, side)) in shapes.iter().enumerate() {
        let x = Var::from_tensor(&seeded((n, c, side, side), 2 * i as u64)?)?;
        let w = Var::from_tensor(&(seeded((o, c, 3, 3), 2 * i as u64 + 1)? * 0.1)?)?;
        let flop = 2.0 * (n * o * c * 9 * side * side) as f64;
        let mut row = Vec::new();
        for train in [false, true] {
            for winograd in [true, false] {
                set_winograd(winograd);
                let ms = median_ms(TIMINGS, || {
                    if train {
                        let y = conv2d_relu(x.as_tensor(), w.as_tensor(), None, p)?;
                        y.sum_all()?.backward()?;
                    } else {
                        conv2d_relu(&x.as_tensor().detach(), &w.as_tensor().detach(), None, p)?;
                    }
                    Ok(())
                })?;
                // A training step's convolution work is the forward and two gradients.
                let passes = if train { 3.0 } else { 1.0 };
                row.push(format!("{ms:8.2} ({:5.1})", passes * flop / ms / 1e6));
            }
        }
        println!(
            "{what:<22} {n:>5} {c:>4} {o:>4} {side:>4} | {} {} | {} {}",
            row[0], row[1], row[2], row[3]
        );
    }
    Ok(())
}
