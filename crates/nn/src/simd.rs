//! Element-wise kernels compiled for AVX-512, AVX2 + FMA and the baseline, the widest the
//! running CPU supports chosen at run time (`multiversion`): without `-C target-cpu` the
//! compiler may only assume SSE2 on x86-64, four lanes where AVX-512 has sixteen. No fused
//! multiply-add is introduced (Rust does not contract `a * b + c`), so every version computes
//! the same bits.

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

/// `out[i] = g[i]` where `0 < y[i] < max`, else 0: the gradient through a clipping activation
/// from its output.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn clip_mask(out: &mut [f32], g: &[f32], y: &[f32], max: f32) {
    for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
        *o = if y > 0.0 && y < max { g } else { 0.0 };
    }
}

/// `dst[i * stride] += src[i]` over the common length.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2+fma"))]
pub(crate) fn add_strided<T: Copy + std::ops::AddAssign>(dst: &mut [T], src: &[T], stride: usize) {
    if stride == 1 {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d += v;
        }
    } else {
        for (d, &v) in dst.iter_mut().step_by(stride).zip(src) {
            *d += v;
        }
    }
}
