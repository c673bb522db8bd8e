//! The fully connected layers of the zoo's models at inference batch sizes: the project's
//! [`deeprecog_nn::linear::linear`] (which transposes the weight on each call of a batch of
//! more than four rows) and its layer over constant tensors (which keeps that transpose)
//! against candle's `matmul` + bias (what candle-nn's `Linear` runs), same inputs, same
//! threads.
//!
//! `cargo run --release -p deeprecog-nn --example linear_shapes` prints, per shape, the median
//! microseconds of 200 calls of each, after warm-up, and candle's time over each of ours.

mod common;

use candle_core::{Module, Result};
use common::{median_ms, seeded};
use deeprecog_nn::linear::linear;

/// Median microseconds of `f` over 200 timings, after two warm-up calls.
fn median_us(f: impl FnMut() -> Result<()>) -> Result<f64> {
    Ok(median_ms(200, f)? * 1e3)
}

fn main() -> Result<()> {
    println!(
        "{:<34} {:>10} {:>10} {:>10} {:>7} {:>7}",
        "shape (batch x in -> out)", "ours us", "layer us", "candle us", "ratio", "layer"
    );
    for (name, batch, inp, out) in [
        ("scratch3 fc", 1, 32768, 128),
        ("scratch3 fc", 32, 32768, 128),
        ("scratch3 head", 1, 128, 1),
        ("mobilenetv2 classifier", 1, 1280, 1000),
        ("resnet50 fc", 8, 2048, 1000),
    ] {
        let x = seeded((batch, inp), 1)?;
        let w = seeded((out, inp), 2)?;
        let b = seeded((1, out), 3)?.flatten_all()?;
        let candle = candle_nn::Linear::new(w.clone(), Some(b.clone()));
        let layer = deeprecog_nn::layers::Linear::new(w.clone(), Some(b.clone()));
        let ours = median_us(|| linear(&x, &w, Some(&b)).map(drop))?;
        let kept = median_us(|| layer.forward(&x).map(drop))?;
        let theirs = median_us(|| candle.forward(&x).map(drop))?;
        let label = format!("{name} {batch}x{inp}->{out}");
        let (r, rk) = (theirs / ours, theirs / kept);
        println!("{label:<34} {ours:>10.1} {kept:>10.1} {theirs:>10.1} {r:>7.2} {rk:>7.2}");
    }
    Ok(())
}
