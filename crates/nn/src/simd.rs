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
