//! Element-wise kernels compiled for AVX-512, AVX2 + FMA and the baseline, the widest the
//! running CPU supports chosen at run time (`multiversion`): without `-C target-cpu` the
//! compiler may only assume SSE2 on x86-64, four lanes where AVX-512 has sixteen. No fused
//! multiply-add is introduced (Rust does not contract `a * b + c`), so every version computes
//! the same bits.

use std::mem::MaybeUninit;

use multiversion::multiversion;

use crate::conv::Activation;

/// `values[i] = act(values[i] + shift)`.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn bias_act(values: &mut [f32], shift: f32, act: Activation) {
    match act {
        Activation::Identity => values.iter_mut().for_each(|v| *v += shift),
        Activation::Relu => values.iter_mut().for_each(|v| *v = (*v + shift).max(0.0)),
        Activation::Relu6 => values.iter_mut().for_each(|v| *v = (*v + shift).clamp(0.0, 6.0)),
    }
}

/// `dst[i] = act(a[i] + b[i])` over the common length, which it returns (the number of `dst`
/// values initialised).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn add_act(
    dst: &mut [std::mem::MaybeUninit<f32>],
    a: &[f32],
    b: &[f32],
    act: Activation,
) -> usize {
    let n = dst.len().min(a.len()).min(b.len());
    let (dst, a, b) = (&mut dst[..n], &a[..n], &b[..n]);
    match act {
        Activation::Identity => {
            dst.iter_mut().zip(a.iter().zip(b)).for_each(|(d, (&x, &y))| {
                d.write(x + y);
            });
        }
        Activation::Relu => dst.iter_mut().zip(a.iter().zip(b)).for_each(|(d, (&x, &y))| {
            d.write((x + y).max(0.0));
        }),
        Activation::Relu6 => dst.iter_mut().zip(a.iter().zip(b)).for_each(|(d, (&x, &y))| {
            d.write((x + y).clamp(0.0, 6.0));
        }),
    }
    n
}

/// `out[i] = g[i]` where `0 < y[i] < max`, else 0: the gradient through a clipping activation
/// from its output. Returns the number of values written (the common length).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn clip_mask(out: &mut [MaybeUninit<f32>], g: &[f32], y: &[f32], max: f32) -> usize {
    let n = out.len().min(g.len()).min(y.len());
    for ((o, &g), &y) in out[..n].iter_mut().zip(g).zip(y) {
        o.write(if y > 0.0 && y < max { g } else { 0.0 });
    }
    n
}

/// `dst[i * stride] += src[i]` over the common length. At stride 2 the elements in between
/// get `+= 0` (a no-op but for `-0.0`, which becomes `+0.0`): with every element of
/// each pair stored, the loop vectorises as whole-register loads, shuffles and stores, where
/// a store to every other element stays scalar.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn add_strided<T: candle_core::WithDType>(dst: &mut [T], src: &[T], stride: usize) {
    if stride == 1 {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d += v;
        }
    } else if stride == 2 {
        let zero = T::from_f64(0.0);
        let (pairs, rest) = dst.as_chunks_mut::<2>();
        let n = pairs.len().min(src.len());
        for (p, &v) in pairs[..n].iter_mut().zip(&src[..n]) {
            p[0] += v;
            p[1] += zero;
        }
        if let (true, Some(d), Some(&v)) = (n == pairs.len(), rest.first_mut(), src.get(n)) {
            *d += v;
        }
    } else {
        for (d, &v) in dst.iter_mut().step_by(stride).zip(src) {
            *d += v;
        }
    }
}

/// Partial sums per reduction: lane `j` adds elements `j, j + LANES, ...`.
const LANES: usize = 16;

/// The lanes added in a fixed order (a balanced tree), then the tail in order. The order is
/// written out, not left to the compiler, so every CPU gets the same bits. Never inlined:
/// inlined, this tree of ever narrower adds led LLVM's SLP vectoriser to pack the callers'
/// accumulator loops two or four lanes wide instead of a full register.
#[inline(never)]
fn combine(mut acc: [f32; LANES], tail: f32) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            acc[j] += acc[j + width];
        }
        width /= 2;
    }
    acc[0] + tail
}

/// `sum(x)`, in [`LANES`] interleaved partial sums (vectorised, the same bits everywhere).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().sum::<f32>();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v);
    }
    combine(acc, tail)
}

/// `sum(a[i] * b[i])` over the common length, in `2 LANES` partial sums (two independent chains
/// per vector register keep the adds from waiting on each other), folded to [`LANES`].
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    // Fixed-size blocks: with the block length a constant the compiler keeps the partial
    // sums in full-width registers (over `chunks_exact` slices it packed them two lanes wide).
    let (ca, ra) = a[..n].as_chunks::<{ 2 * LANES }>();
    let (cb, rb) = b[..n].as_chunks::<{ 2 * LANES }>();
    let tail = ra.iter().zip(rb).map(|(&x, &y)| x * y).sum::<f32>();
    let mut acc = [0f32; 2 * LANES];
    for (x, y) in ca.iter().zip(cb) {
        for j in 0..2 * LANES {
            acc[j] += x[j] * y[j];
        }
    }
    let lo: [f32; LANES] = std::array::from_fn(|j| acc[j] + acc[LANES + j]);
    combine(lo, tail)
}

/// `sum((x - mean)^2)`, summed as [`sum`].
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += (v - mean) * (v - mean));
    }
    combine(acc, tail)
}

/// What a fused normalisation applies to its output: a clipping activation, or a LeakyReLU of a
/// non-negative slope (whose output is positive exactly where its input is, so the backward
/// pass can tell the two branches apart from the output as for a ReLU).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum After {
    /// [`Activation`]: none, ReLU or ReLU6.
    Clip(Activation),
    /// `y = z` where `z > 0`, `slope * z` elsewhere (as [`leaky`]).
    Leaky(f32),
}

/// BatchNorm's backward sums over one plane: `(sum(dy'), sum(dy' * (x - mean)))` where `dy'`
/// is `dy` through `after`'s gradient, read from its output `y` (zeroed where a clip cut it,
/// times the slope where a LeakyReLU's output is not positive); summed as [`sum`].
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn grad_sums(x: &[f32], g: &[f32], y: &[f32], mean: f32, after: After) -> (f32, f32) {
    match after {
        After::Clip(act) => match act.ceiling() {
            None => grad_sums_with(x, g, y, mean, |gv, _| gv),
            Some(max) => {
                grad_sums_with(x, g, y, mean, |gv, yv| if yv > 0.0 && yv < max { gv } else { 0.0 })
            }
        },
        After::Leaky(s) => {
            grad_sums_with(x, g, y, mean, |gv, yv| if yv > 0.0 { gv } else { gv * s })
        }
    }
}

/// [`grad_sums`] with the mask `pass(dy, y)` (inlined into each compiled version).
#[inline(always)]
fn grad_sums_with(
    x: &[f32],
    g: &[f32],
    y: &[f32],
    mean: f32,
    pass: impl Fn(f32, f32) -> f32,
) -> (f32, f32) {
    let n = x.len().min(g.len()).min(y.len());
    let (x, g, y) = (&x[..n], &g[..n], &y[..n]);
    let (mut a, mut b) = ([0f32; LANES], [0f32; LANES]);
    let (xc, gc, yc) = (x.chunks_exact(LANES), g.chunks_exact(LANES), y.chunks_exact(LANES));
    let (mut ta, mut tb) = (0f32, 0f32);
    for ((&xv, &gv), &yv) in xc.remainder().iter().zip(gc.remainder()).zip(yc.remainder()) {
        let gv = pass(gv, yv);
        ta += gv;
        tb += gv * (xv - mean);
    }
    for ((xs, gs), ys) in xc.zip(gc).zip(yc) {
        for ((((aj, bj), &xv), &gv), &yv) in a.iter_mut().zip(&mut b).zip(xs).zip(gs).zip(ys) {
            let gv = pass(gv, yv);
            *aj += gv;
            *bj += gv * (xv - mean);
        }
    }
    (combine(a, ta), combine(b, tb))
}

/// `dst = after(src * scale + shift)`; returns the number of values written (the common
/// length).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn affine_act(
    dst: &mut [MaybeUninit<f32>],
    src: &[f32],
    scale: f32,
    shift: f32,
    after: After,
) -> usize {
    let n = dst.len().min(src.len());
    let pairs = dst[..n].iter_mut().zip(src);
    match after {
        After::Clip(Activation::Identity) => {
            pairs.for_each(|(d, &v)| _ = d.write(v * scale + shift))
        }
        After::Clip(Activation::Relu) => {
            pairs.for_each(|(d, &v)| _ = d.write((v * scale + shift).max(0.0)))
        }
        After::Clip(Activation::Relu6) => {
            pairs.for_each(|(d, &v)| _ = d.write((v * scale + shift).clamp(0.0, 6.0)))
        }
        After::Leaky(s) => pairs.for_each(|(d, &v)| {
            let z = v * scale + shift;
            d.write(if z > 0.0 { z } else { z * s });
        }),
    }
    n
}

/// Per-channel constants of BatchNorm's input gradient.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BnGrad {
    pub mean: f32,
    pub inv_std: f32,
    /// `weight * inv_std`.
    pub scale: f32,
    /// `mean(dy')`.
    pub mean_g: f32,
    /// `mean(dy' * xhat)`.
    pub mean_gx: f32,
}

/// `dst = scale * (dy' - mean_g - xhat * mean_gx)` with `xhat = (x - mean) * inv_std` and `dy'`
/// as in [`grad_sums`]. Returns the number of values written (the common length).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn bn_grad_input(
    dst: &mut [MaybeUninit<f32>],
    x: &[f32],
    g: &[f32],
    y: &[f32],
    k: BnGrad,
    after: After,
) -> usize {
    match after {
        After::Clip(act) => match act.ceiling() {
            None => bn_grad_input_with(dst, x, g, y, k, |gv, _| gv),
            Some(max) => {
                bn_grad_input_with(
                    dst,
                    x,
                    g,
                    y,
                    k,
                    |gv, yv| if yv > 0.0 && yv < max { gv } else { 0.0 },
                )
            }
        },
        After::Leaky(s) => {
            bn_grad_input_with(dst, x, g, y, k, |gv, yv| if yv > 0.0 { gv } else { gv * s })
        }
    }
}

/// [`bn_grad_input`] with the mask `pass(dy, y)` (inlined into each compiled version).
#[inline(always)]
fn bn_grad_input_with(
    dst: &mut [MaybeUninit<f32>],
    x: &[f32],
    g: &[f32],
    y: &[f32],
    k: BnGrad,
    pass: impl Fn(f32, f32) -> f32,
) -> usize {
    let n = dst.len().min(x.len()).min(g.len()).min(y.len());
    for (((d, &xv), &gv), &yv) in dst[..n].iter_mut().zip(x).zip(g).zip(y) {
        let xhat = (xv - k.mean) * k.inv_std;
        d.write(k.scale * (pass(gv, yv) - k.mean_g - xhat * k.mean_gx));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + seed * 11) % 29) as f32 / 7.0 - 2.0).collect()
    }

    #[test]
    fn table_and_stride2_gathers_match_index_loops() {
        let src = values(500, 5);
        for n in [0, 1, 15, 16, 17, 40] {
            let idx: Vec<u32> = (0..n).map(|i| ((i * 97 + 13) % 500) as u32).collect();
            let mut dst = vec![f32::NAN; n];
            gather_table(&mut dst, &src, &idx);
            for (d, &i) in dst.iter().zip(&idx) {
                assert_eq!(d.to_bits(), src[i as usize].to_bits(), "{n} values");
            }
        }
        // Widths of one piece of 16 and of several, sources up to the last value of `src`.
        for w in (1..=16).chain([17, 20, 31, 32, 33]) {
            for (start, row_step, rows) in [(0, 2 * w, 1), (3, 40, 4), (7, 2 * w + 5, 6)] {
                let mut dst = vec![f32::NAN; rows * w];
                let last = start + (rows - 1) * row_step + 2 * (w - 1);
                let src = &src[..=last];
                gather_rows_stride2(&mut dst, src, (start, row_step, w));
                for (r, row) in dst.chunks_exact(w).enumerate() {
                    for (x, v) in row.iter().enumerate() {
                        let want = src[start + r * row_step + 2 * x];
                        assert_eq!(v.to_bits(), want.to_bits(), "width {w}, row {r}, {x}");
                    }
                }
            }
        }
    }

    /// Stride-2 scatters write every even slot from the source and leave the odd ones alone,
    /// for lengths around the vector pieces, into destinations of the least length and longer.
    #[test]
    fn stride2_scatters_fill_the_even_slots() {
        let src = values(80, 7);
        for n in (0..=17).chain([31, 32, 33, 40]) {
            for extra in [0, 1, 5] {
                let len = if n == 0 { extra } else { 2 * n - 1 + extra };
                let mut dst = vec![MaybeUninit::new(f32::NAN); len];
                scatter_stride2(&mut dst, &src[..n]);
                for (i, d) in dst.iter().enumerate() {
                    // SAFETY: every slot was initialised with NaN above.
                    #[allow(unsafe_code)]
                    let v = unsafe { d.assume_init() };
                    if i % 2 == 0 && i / 2 < n {
                        assert_eq!(v.to_bits(), src[i / 2].to_bits(), "{n} values, slot {i}");
                    } else {
                        assert!(v.is_nan(), "{n} values: slot {i} written");
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "scatter_stride2")]
    fn a_stride2_scatter_past_the_destination_panics() {
        let mut dst = vec![MaybeUninit::new(0.0); 30];
        scatter_stride2(&mut dst, &values(16, 1));
    }

    #[test]
    #[should_panic(expected = "gather_table")]
    fn a_table_index_past_the_source_panics() {
        let mut dst = vec![0.0; 16];
        let idx: Vec<u32> = (0..16).map(|i| if i == 9 { 100 } else { i }).collect();
        gather_table(&mut dst, &values(100, 1), &idx);
    }

    #[test]
    #[should_panic(expected = "gather_rows_stride2")]
    fn a_stride2_row_past_the_source_panics() {
        let mut dst = vec![0.0; 32];
        gather_rows_stride2(&mut dst, &values(60, 1), (0, 30, 16));
    }

    #[test]
    fn dot_matches_an_f64_sum() {
        for n in [0, 1, 7, 31, 32, 33, 64, 65, 1000] {
            let (a, b) = (values(n, 4), values(n, 5));
            let want: f64 = a.iter().zip(&b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
            let got = dot(&a, &b);
            assert!((f64::from(got) - want).abs() <= 1e-4 * want.abs().max(1.0), "{n}: {got}");
        }
    }

    /// Strided adds and gathers against plain index loops, for every stride path (1, 2 and
    /// more), odd and even lengths and a source shorter or longer than the strided run.
    #[test]
    fn strided_adds_and_gathers_match_index_loops() {
        for stride in 1..=3 {
            for (dst_len, src_len) in [(0, 3), (1, 1), (7, 4), (8, 4), (8, 3), (9, 9), (33, 11)] {
                let src = values(src_len, 6);
                let mut got = values(dst_len, 7);
                let mut want = got.clone();
                for (i, &v) in src.iter().enumerate().take(dst_len.div_ceil(stride)) {
                    want[i * stride] += v;
                }
                add_strided(&mut got, &src, stride);
                assert_eq!(got, want, "add, stride {stride}, {dst_len} <- {src_len}");
                let mut got = vec![0f32; src_len];
                let mut want = got.clone();
                let from = values(dst_len, 8);
                for (i, w) in want.iter_mut().enumerate().take(dst_len.div_ceil(stride)) {
                    *w = from[i * stride];
                }
                gather_strided(&mut got, &from, stride);
                assert_eq!(got, want, "gather, stride {stride}, {src_len} <- {dst_len}");
            }
        }
    }

    /// The lane reductions against f64 sums, for lengths around the lane count (tails of every
    /// size, empty input).
    #[test]
    fn reductions_match_f64_sums() {
        for n in [0, 1, 5, 15, 16, 17, 31, 32, 33, 100, 1000] {
            let (x, g, y) = (values(n, 1), values(n, 2), values(n, 3));
            let close = |a: f32, b: f64| (f64::from(a) - b).abs() <= 1e-4 * b.abs().max(1.0);
            let want: f64 = x.iter().map(|&v| f64::from(v)).sum();
            assert!(close(sum(&x), want), "sum of {n}: {} vs {want}", sum(&x));
            let want: f64 = x.iter().map(|&v| (f64::from(v) - 0.25).powi(2)).sum();
            assert!(close(sum_sq_dev(&x, 0.25), want), "squares of {n}");
            let clips =
                [Activation::Identity, Activation::Relu, Activation::Relu6].map(After::Clip);
            for after in clips.into_iter().chain([After::Leaky(0.2)]) {
                // The factor through the activation's gradient, read from its output.
                let factor = |i: usize| match after {
                    After::Clip(act) => match act.ceiling() {
                        None => 1.0,
                        Some(max) => f64::from(u8::from(y[i] > 0.0 && y[i] < max)),
                    },
                    After::Leaky(s) => {
                        if y[i] > 0.0 {
                            1.0
                        } else {
                            f64::from(s)
                        }
                    }
                };
                let ga: f64 = (0..n).map(|i| factor(i) * f64::from(g[i])).sum();
                let gb: f64 =
                    (0..n).map(|i| factor(i) * f64::from(g[i]) * (f64::from(x[i]) - 0.5)).sum();
                let (a, b) = grad_sums(&x, &g, &y, 0.5, after);
                assert!(close(a, ga) && close(b, gb), "grad sums of {n}, {after:?}");
            }
        }
    }
}

/// The constants of one Adam / AdamW step, as the f32 values candle's `affine` would use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamStep {
    /// Decoupled decay factor `1 - lr * weight_decay` (AdamW), or `None`.
    pub decay: Option<f32>,
    /// L2 penalty `weight_decay` added to the gradient (Adam), or `None`.
    pub l2: Option<f32>,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 / sqrt(1 - beta2^t)`.
    pub inv_sqrt_bc2: f32,
    pub eps: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
}

/// One Adam step over a parameter: `theta`, `m` and `v` updated in place from `g`, with exactly
/// the f32 operations (and their order) of the composed candle ops in `optim::adam`, so both
/// paths give the same bits.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn adam(theta: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: AdamStep) {
    for (((t, &g), m), v) in theta.iter_mut().zip(g).zip(m).zip(v) {
        let mut g = g;
        if let Some(d) = k.decay {
            *t = *t * d + 0.0;
        }
        if let Some(l2) = k.l2 {
            g += *t * l2 + 0.0;
        }
        *m = (*m * k.beta1 + 0.0) + (g * k.one_minus_beta1 + 0.0);
        *v = (*v * k.beta2 + 0.0) + ((g * g) * k.one_minus_beta2 + 0.0);
        let denom = v.sqrt() * k.inv_sqrt_bc2 + k.eps;
        *t -= (*m / denom) * k.step_size + 0.0;
    }
}

/// `dst` set to zeros: from a zero block for up to 16 values (a padded row's margins of one or
/// two values, where `fill` is a call to `memset` per margin), `fill` beyond.
pub(crate) fn zero_short(dst: &mut [f32]) {
    const ZEROS: [f32; 16] = [0.0; 16];
    match ZEROS.get(..dst.len()) {
        Some(zeros) => copy_short(dst, zeros),
        None => dst.fill(0.0),
    }
}

/// `y = x` where `x > 0`, `x * slope` elsewhere; returns the number of values written (the
/// common length).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn leaky(y: &mut [MaybeUninit<f32>], x: &[f32], slope: f32) -> usize {
    let n = y.len().min(x.len());
    for (y, &x) in y[..n].iter_mut().zip(x) {
        y.write(if x > 0.0 { x } else { x * slope });
    }
    n
}

/// `d = g` where `x > 0`, `g * slope` elsewhere; returns the number of values written (the
/// common length).
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn leaky_grad(d: &mut [MaybeUninit<f32>], g: &[f32], x: &[f32], slope: f32) -> usize {
    let n = d.len().min(g.len()).min(x.len());
    for ((d, &g), &x) in d[..n].iter_mut().zip(g).zip(x) {
        d.write(if x > 0.0 { g } else { g * slope });
    }
    n
}

/// `dst.copy_from_slice(src)` without a call to `memcpy`: eight values at a time, then one by
/// one. For short runs (a few to a few dozen values) the call costs more than the copy; for
/// runs of a few KiB glibc's `memcpy` uses `rep movsb`, which AMD's Zen cores run several
/// times slower when the destination's offset within a cache line differs from the source's
/// (a plane copied one value past its buffer's start: `benches/NOTES.md`, thirteenth pass).
pub(crate) fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    use std::sync::atomic::{compiler_fence, Ordering};
    let (d8, d_rest) = dst.as_chunks_mut::<8>();
    let (s8, s_rest) = src.as_chunks::<8>();
    for (d, s) in d8.iter_mut().zip(s8) {
        *d = *s;
        // Emits nothing; keeps LLVM from recognising the loop as a `memcpy` call.
        compiler_fence(Ordering::SeqCst);
    }
    for (d, s) in d_rest.iter_mut().zip(s_rest) {
        *d = *s;
        compiler_fence(Ordering::SeqCst);
    }
}

/// `dst[i] = src[i * stride]` (`src` holds at least `(dst.len() - 1) * stride + 1` values); the
/// stride-2 case (4x4 / 3x3 stride-2 `im2col`) as a de-interleave the compiler vectorises.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn gather_strided<T: Copy>(dst: &mut [T], src: &[T], stride: usize) {
    if stride == 2 {
        let (pairs, _) = src.as_chunks::<2>();
        let m = pairs.len();
        for (o, p) in dst.iter_mut().zip(pairs) {
            *o = p[0];
        }
        if let (Some(o), Some(&v)) = (dst.get_mut(m), src.get(2 * m)) {
            *o = v;
        }
    } else {
        for (o, &v) in dst.iter_mut().zip(src.iter().step_by(stride.max(1))) {
            *o = v;
        }
    }
}

/// `dst[i] = src[idx[i] as usize]` over the common length of `dst` and `idx`: on AVX-512, 16
/// values per gather instruction where a scalar loop spends a load of the index, a bounds check
/// and a load of the value on each (narrow `im2col`'s table-driven copy).
///
/// # Panics
/// An index outside `src`.
pub(crate) fn gather_table(dst: &mut [f32], src: &[f32], idx: &[u32]) {
    let n = dst.len().min(idx.len());
    let (dst, idx) = (&mut dst[..n], &idx[..n]);
    #[cfg(target_arch = "x86_64")]
    if n >= 16 && std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F is present (checked above).
        #[allow(unsafe_code)]
        unsafe {
            gather_table_avx512(dst, src, idx)
        };
        return;
    }
    gather_table_scalar(dst, src, idx);
}

/// [`gather_table`] value by value, with its panic.
fn gather_table_scalar(dst: &mut [f32], src: &[f32], idx: &[u32]) {
    for (d, &i) in dst.iter_mut().zip(idx) {
        let v = src.get(i as usize);
        assert!(v.is_some(), "gather_table: index {i} past {} values", src.len());
        *d = v.copied().unwrap_or_default();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gather_table_avx512(dst: &mut [f32], src: &[f32], idx: &[u32]) {
    use std::arch::x86_64::*;
    // Indices at or past this are outside `src` (a `src` of 2^32 values or more has none).
    let len = _mm512_set1_epi32(u32::try_from(src.len()).unwrap_or(u32::MAX) as i32);
    let (d16, d_rest) = dst.as_chunks_mut::<16>();
    let (i16, i_rest) = idx.as_chunks::<16>();
    for (d, i) in d16.iter_mut().zip(i16) {
        // SAFETY: `i` holds 16 `u32`s (one unaligned 512-bit load).
        #[allow(unsafe_code)]
        let at = unsafe { _mm512_loadu_si512(i.as_ptr().cast()) };
        let inside = _mm512_cmplt_epu32_mask(at, len);
        assert!(inside == 0xFFFF, "gather_table: an index past {} values", src.len());
        // SAFETY: every lane's index is below `src.len()` (checked just above), so each of the
        // 16 loads reads an element of `src`; `d` holds 16 values for the store.
        #[allow(unsafe_code)]
        unsafe {
            let v = _mm512_i32gather_ps::<4>(at, src.as_ptr());
            _mm512_storeu_ps(d.as_mut_ptr(), v);
        }
    }
    gather_table_scalar(d_rest, src, i_rest);
}

/// Whether [`gather_rows_stride2`] runs its AVX-512 code on this CPU (elsewhere it is a plain
/// loop, slower than [`gather_table`]'s for the same copy).
pub(crate) fn stride2_rows_vectorised() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst[r * w + x] = src[start + r * row_step + 2 * x]` for every row `r` of `dst` (`w`
/// values each): a stride-2 window's taps over a zero-padded plane, each 16 values of an output
/// row one de-interleave on AVX-512 (two masked loads, a two-source permute and a masked store)
/// where [`gather_table`] spends a gather on them and a row-by-row strided copy a call per row.
///
/// # Panics
/// `w` of 0, `dst` not whole rows, or a source past `src`.
pub(crate) fn gather_rows_stride2(
    dst: &mut [f32],
    src: &[f32],
    (start, row_step, w): (usize, usize, usize),
) {
    assert!(w > 0 && dst.len().is_multiple_of(w), "gather_rows_stride2: rows of {w}");
    let rows = dst.len() / w;
    if rows == 0 {
        return;
    }
    let last = start + (rows - 1) * row_step + 2 * (w - 1);
    assert!(last < src.len(), "gather_rows_stride2: source {last} of {}", src.len());
    #[cfg(target_arch = "x86_64")]
    if stride2_rows_vectorised() {
        // SAFETY: AVX-512F is present (checked just above); every source index is at most
        // `last`, inside `src` (asserted).
        #[allow(unsafe_code)]
        unsafe {
            stride2_rows_avx512(dst, src, (start, row_step, w))
        };
        return;
    }
    for (r, row) in dst.chunks_exact_mut(w).enumerate() {
        let from = start + r * row_step;
        for (x, d) in row.iter_mut().enumerate() {
            *d = src[from + 2 * x];
        }
    }
}

/// # Safety
/// AVX-512F present; `dst` whole rows of `w` (at least 1) values; every
/// `start + r * row_step + 2 * x` (`r` a row of `dst`, `x < w`) inside `src`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
unsafe fn stride2_rows_avx512(
    dst: &mut [f32],
    src: &[f32],
    (start, row_step, w): (usize, usize, usize),
) {
    use std::arch::x86_64::*;
    // Lane x takes element 2x of the 32 in (lo, hi).
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (r, row) in dst.chunks_exact_mut(w).enumerate() {
        for (piece, out) in row.chunks_mut(16).enumerate() {
            let n = out.len();
            // The piece's sources span `2n - 1` values: the first 16 in one register, the
            // rest in a second; the masks keep both loads inside them (masked-off lanes are
            // not read).
            let span = 2 * n - 1;
            let lo_mask: __mmask16 = if span >= 16 { 0xFFFF } else { (1u16 << span) - 1 };
            let hi_mask: __mmask16 = if span > 16 { (1u16 << (span - 16)) - 1 } else { 0 };
            let out_mask: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
            // SAFETY: the lanes the masks keep are the piece's sources, inside `src` (the
            // caller's contract); the store's `n` lanes are `out`'s values.
            unsafe {
                let p = src.as_ptr().add(start + r * row_step + 32 * piece);
                let lo = _mm512_maskz_loadu_ps(lo_mask, p);
                let hi = if hi_mask == 0 { lo } else { _mm512_maskz_loadu_ps(hi_mask, p.add(16)) };
                let v = _mm512_permutex2var_ps(lo, even, hi);
                _mm512_mask_storeu_ps(out.as_mut_ptr(), out_mask, v);
            }
        }
    }
}

/// `dst[2 i] = src[i]` for every `i < src.len()`, the odd slots between untouched: a stride-2
/// phase's row interleaved into its image's row (the other phase fills the odd slots). On
/// AVX-512, 16 values per pass as two permutes and two masked stores, where the value-by-value
/// loop was one scalar store per value.
///
/// # Panics
/// If `dst` is shorter than `2 * src.len() - 1`.
pub(crate) fn scatter_stride2(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    let n = src.len();
    assert!(n == 0 || dst.len() > 2 * (n - 1), "scatter_stride2: {n} values into {}", dst.len());
    #[cfg(target_arch = "x86_64")]
    if n >= 8 && stride2_rows_vectorised() {
        // SAFETY: AVX-512F is present (checked just above); `dst` holds slot `2 (n - 1)`
        // (asserted).
        #[allow(unsafe_code)]
        unsafe {
            scatter_stride2_avx512(dst, src)
        };
        return;
    }
    for (d, &v) in dst.iter_mut().step_by(2).zip(src) {
        d.write(v);
    }
}

/// # Safety
/// AVX-512F present; `dst.len() > 2 * (src.len() - 1)`, `src` not empty.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
unsafe fn scatter_stride2_avx512(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    use std::arch::x86_64::*;
    // Lanes 2x and 2x + 1 of the first output take value x of the piece, of the second value
    // 8 + x; the odd lanes are masked off.
    let low = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    let high = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
    let even: u32 = 0x5555;
    for (piece, values) in src.chunks(16).enumerate() {
        let n = values.len();
        let load: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
        // The piece's slots: 2n - 1 from `32 * piece`, split over the two stores.
        let span = 2 * n - 1;
        let first = if span >= 16 { 0xFFFF } else { (1u32 << span) - 1 };
        let second = if span > 16 { (1u32 << (span - 16)) - 1 } else { 0 };
        // SAFETY: the load's `n` lanes are `values`; the stores' kept lanes are slots
        // `32 * piece + 2 x` for `x < n`, at most `2 (src.len() - 1)`, inside `dst` (the
        // caller's contract).
        unsafe {
            let v = _mm512_maskz_loadu_ps(load, values.as_ptr());
            let out = dst.as_mut_ptr().cast::<f32>().add(32 * piece);
            _mm512_mask_storeu_ps(out, (first & even) as __mmask16, _mm512_permutexvar_ps(low, v));
            if second != 0 {
                let kept = (second & even) as __mmask16;
                _mm512_mask_storeu_ps(out.add(16), kept, _mm512_permutexvar_ps(high, v));
            }
        }
    }
}
