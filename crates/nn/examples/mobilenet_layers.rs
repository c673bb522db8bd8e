//! Where a MobileNetV2 inference at batch 1 (224x224) spends its time, layer by layer: every
//! convolution of torchvision's network (the stem, each block's expansion, depthwise and
//! projection layers, the last 1x1) with a bias and its activation, as the BatchNorm-folded
//! inference path runs them, on all threads.
//!
//! `cargo run --release -p deeprecog-nn --example mobilenet_layers [-- --each]` prints, per kind
//! of layer, the milliseconds per image (the median of 25 timings of each layer, after warm-up,
//! summed over the layers of that kind), its share of the sum and its GFLOP/s; with `--each`,
//! every layer first. The layers are constant [`Conv2d`]s, as an inference model's are: their
//! weights are packed once, not on every call.

mod common;

use candle_core::Result;
use common::{median_ms, seeded};
use deeprecog_nn::conv::{Activation, Conv2dParams};
use deeprecog_nn::layers::Conv2d;

// The allocator the project's binaries use: outputs reuse freed blocks instead of fresh pages.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Timings per median (after two warm-up calls).
const TIMINGS: usize = 15;

/// One convolution of the network: (kind, in channels, out channels, input side, kernel, stride).
type Layer = (&'static str, usize, usize, usize, usize, usize);

/// torchvision's MobileNetV2 at 224x224 as its list of convolutions.
fn layers() -> Vec<Layer> {
    // (expansion t, output channels c, repeats n, first stride s), as in the paper's table.
    let blocks = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut out = vec![("stem 3x3 s2", 3, 32, 224, 3, 2)];
    let (mut c, mut side) = (32, 112);
    for (t, cout, n, s) in blocks {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = c * t;
            if t != 1 {
                out.push(("expand 1x1", c, hidden, side, 1, 1));
            }
            let kind = if stride == 1 { "depthwise s1" } else { "depthwise s2" };
            out.push((kind, hidden, hidden, side, 3, stride));
            side /= stride;
            out.push(("project 1x1", hidden, cout, side, 1, 1));
            c = cout;
        }
    }
    out.push(("last 1x1", c, 1280, side, 1, 1));
    out
}

fn main() -> Result<()> {
    let each = std::env::args().any(|a| a == "--each");
    let mut kinds: Vec<(&str, f64, usize, f64)> = Vec::new();
    for (i, &(kind, c, o, side, k, stride)) in layers().iter().enumerate() {
        let x = seeded((1, c, side, side), 3 * i as u64)?;
        let groups = if kind.starts_with("depthwise") { c } else { 1 };
        let w = (seeded((o, c / groups, k, k), 3 * i as u64 + 1)? * 0.1)?;
        let b = seeded((1, 1, 1, o), 3 * i as u64 + 2)?.flatten_all()?;
        let p = Conv2dParams { stride, padding: k / 2, groups, ..Default::default() };
        let conv = Conv2d::new(w, Some(b), p);
        // Projections are linear (the bottleneck); everything else ends in ReLU6.
        let act =
            if kind.starts_with("project") { Activation::Identity } else { Activation::Relu6 };
        let ms = median_ms(TIMINGS, || conv.forward_act(&x, act).map(|_| ()))?;
        let out_side = side.div_ceil(stride);
        let flops = 2.0 * (o * (c / groups) * k * k * out_side * out_side) as f64;
        if each {
            let gflops = flops / ms / 1e6;
            println!("{kind:<14} {c:>4} -> {o:>4} at {side:>3}: {ms:7.3} ms {gflops:6.1} GFLOP/s");
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
            "{kind:<14} {count:>3} layers {ms:8.3} ms  {:5.1}%  {gflops:6.1} GFLOP/s",
            100.0 * ms / total
        );
    }
    println!(
        "{:<14} {:>3} layers {total:8.3} ms  {:.1} GFLOP/s",
        "all",
        layers().len(),
        all_flops / total / 1e6
    );
    Ok(())
}
