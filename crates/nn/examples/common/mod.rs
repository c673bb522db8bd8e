//! What the layer-timing examples share: a median timer and seeded inputs (candle's CPU RNG
//! cannot be seeded).

use std::time::Instant;

use candle_core::{Device, Result, Shape, Tensor};

/// Median milliseconds of `f` over `timings` calls, after two warm-up calls.
pub fn median_ms(timings: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    f()?;
    let mut times = Vec::with_capacity(timings);
    for _ in 0..timings.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// A tensor of `shape` with values uniform in [-0.5, 0.5) from an xorshift stream of `seed`.
pub fn seeded(shape: impl Into<Shape>, seed: u64) -> Result<Tensor> {
    let shape = shape.into();
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let v: Vec<f32> = (0..shape.elem_count())
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}
