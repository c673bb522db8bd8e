//! The fully connected layers of the zoo's models at inference batch sizes: the project's
//! [`deeprecog_nn::linear::linear`] (which transposes the weight on each call of a batch of
//! more than four rows) and its layer over constant tensors (which keeps that transpose)
//! against candle's `matmul` + bias (what candle-nn's `Linear` runs), same inputs, same
//! threads.
//!
//! `cargo run --release -p deeprecog-nn --example linear_shapes` prints, per shape, the median
//! microseconds of 200 calls of each, after warm-up, and candle's time over each of ours.

use std::time::Instant;

use candle_core::{Device, Module, Result, Tensor};
use deeprecog_nn::linear::linear;

/// Median microseconds of `f` over 200 timings, after five warm-up calls.
fn median_us(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..5 {
        f()?;
    }
    let mut times = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[100])
}

fn seeded(rows: usize, cols: usize, seed: u64) -> Result<Tensor> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Tensor::from_vec(v, (rows, cols), &Device::Cpu)
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
        let x = seeded(batch, inp, 1)?;
        let w = seeded(out, inp, 2)?;
        let b = seeded(1, out, 3)?.flatten_all()?;
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
