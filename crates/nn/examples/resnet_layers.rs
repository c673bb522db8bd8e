//! Where a ResNet50 inference at batch 8 (224x224) spends its time, layer by layer: every
//! convolution of torchvision's network (the 7x7 stem, each bottleneck's 1x1 reduction, 3x3
//! and 1x1 expansion, the downsampling shortcuts) as a [`Conv2d`] over constant tensors with
//! the folded BatchNorm's bias and its activation, plus the residual additions, on all
//! threads.
//!
//! `cargo run --release -p deeprecog-nn --example resnet_layers [-- BATCH [--each]]` prints,
//! per kind of layer, the milliseconds per batch (the median of 15 timings of each layer,
//! after warm-up, summed over the layers of that kind), its share of the sum and the direct
//! convolution's GFLOP/s; with `--each`, every layer first.

mod common;

use candle_core::Result;
use common::{median_ms, seeded};
use deeprecog_nn::activation::add_act;
use deeprecog_nn::conv::{Activation, Conv2dParams};
use deeprecog_nn::layers::Conv2d;

// The allocator the project's binaries use: outputs reuse freed blocks instead of fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Timings per median (after two warm-up calls).
const TIMINGS: usize = 15;

/// One convolution of the network: (kind, in channels, out channels, input side, kernel,
/// stride); kind "residual" is the bottleneck's addition (`out` channels at `side`).
type Layer = (&'static str, usize, usize, usize, usize, usize);

/// torchvision's ResNet50 at 224x224 as its list of convolutions and residual additions.
fn layers() -> Vec<Layer> {
    let mut out = vec![("stem 7x7 s2", 3, 64, 224, 7, 2)];
    let (mut c, mut side) = (64, 56);
    for (width, blocks, stride) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)] {
        let expanded = 4 * width;
        for i in 0..blocks {
            let s = if i == 0 { stride } else { 1 };
            out.push(("1x1 reduce", c, width, side, 1, 1));
            out.push((if s == 1 { "3x3 s1" } else { "3x3 s2" }, width, width, side, 3, s));
            if i == 0 {
                let kind = if s == 1 { "1x1 shortcut" } else { "1x1 s2 shortcut" };
                out.push((kind, c, expanded, side, 1, s));
            }
            side /= s;
            out.push(("1x1 expand", width, expanded, side, 1, 1));
            out.push(("residual", expanded, expanded, side, 0, 1));
            c = expanded;
        }
    }
    out
}

fn main() -> Result<()> {
    let batch: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(8);
    let each = std::env::args().any(|a| a == "--each");
    let mut kinds: Vec<(&str, f64, usize, f64)> = Vec::new();
    for (i, &(kind, c, o, side, k, stride)) in layers().iter().enumerate() {
        let x = seeded((batch, c, side, side), 3 * i as u64)?;
        let (ms, flops) = if kind == "residual" {
            let shortcut = seeded((batch, c, side, side), 3 * i as u64 + 1)?;
            (median_ms(TIMINGS, || add_act(&x, &shortcut, Activation::Relu).map(|_| ()))?, 0.0)
        } else {
            let w = (seeded((o, c, k, k), 3 * i as u64 + 1)? * 0.05)?;
            let b = seeded((1, 1, 1, o), 3 * i as u64 + 2)?.flatten_all()?;
            let p = Conv2dParams { stride, padding: k / 2, ..Default::default() };
            let conv = Conv2d::new(w, Some(b), p);
            // Expansions end linear (the residual's ReLU follows); the others in ReLU.
            let act = if kind == "1x1 expand" || kind.contains("shortcut") {
                Activation::Identity
            } else {
                Activation::Relu
            };
            let out_side = (side + 2 * (k / 2) - k) / stride + 1;
            let flops = 2.0 * (batch * o * c * k * k * out_side * out_side) as f64;
            (median_ms(TIMINGS, || conv.forward_act(&x, act).map(|_| ()))?, flops)
        };
        if each {
            let gflops = flops / ms / 1e6;
            println!("{kind:<16} {c:>4} -> {o:>4} at {side:>3}: {ms:7.3} ms {gflops:6.1} GFLOP/s");
        }
        match kinds.iter_mut().find(|(name, ..)| *name == kind) {
            Some(entry) => {
                entry.1 += ms;
                entry.2 += 1;
                entry.3 += flops;
            }
            None => kinds.push((kind, ms, 1, flops)),
        }
    }
    let total: f64 = kinds.iter().map(|k| k.1).sum();
    let all_flops: f64 = kinds.iter().map(|k| k.3).sum();
    for (kind, ms, count, flops) in &kinds {
        let gflops = flops / ms / 1e6;
        println!(
            "{kind:<16} {count:>3} layers {ms:8.2} ms  {:5.1}%  {gflops:6.1} GFLOP/s",
            100.0 * ms / total
        );
    }
    println!(
        "{:<16} {:>3} layers {total:8.2} ms  {:.1} images/s  {:.1} GFLOP/s",
        "all",
        layers().len(),
        1e3 * batch as f64 / total,
        all_flops / total / 1e6
    );
    Ok(())
}
