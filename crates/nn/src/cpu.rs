//! What the custom ops' CPU kernels share: the contiguous slice a layout covers, and a dispatch
//! over the float storage types.

use candle_core::{bail, CpuStorage, Layout, Result};

/// The contiguous slice a layout covers; the public functions make inputs contiguous first.
pub(crate) fn contiguous<'a, T>(data: &'a [T], layout: &Layout) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((a, b)) => match data.get(a..b) {
            Some(s) => Ok(s),
            None => bail!("custom op: layout out of the storage's bounds"),
        },
        None => bail!("custom op: input must be contiguous"),
    }
}

/// Runs `$f::<T>(slice, ...)` for each float storage type, wrapping the result back.
macro_rules! dispatch_float {
    ($storage:expr, $layout:expr, $name:expr, |$s:ident| $body:expr) => {
        match $storage {
            CpuStorage::F32(d) => {
                let $s = contiguous(d, $layout)?;
                CpuStorage::F32($body)
            }
            CpuStorage::F64(d) => {
                let $s = contiguous(d, $layout)?;
                CpuStorage::F64($body)
            }
            CpuStorage::F16(d) => {
                let $s = contiguous(d, $layout)?;
                CpuStorage::F16($body)
            }
            CpuStorage::BF16(d) => {
                let $s = contiguous(d, $layout)?;
                CpuStorage::BF16($body)
            }
            other => bail!("{}: unsupported dtype {:?}", $name, other.dtype()),
        }
    };
}

pub(crate) use dispatch_float;

/// The contiguous f32 slice of a CPU storage, for kernels that take f32 only.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, name: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(d) = s else { bail!("{name}: the CPU kernel takes f32") };
    match l.contiguous_offsets().and_then(|(a, b)| d.get(a..b)) {
        Some(d) => Ok(d),
        None => bail!("{name}: input must be contiguous"),
    }
}

/// `(N, C, S...)` as `(n, c, s)`: batch, channels, and the product of the rest.
pub(crate) fn ncs(layout: &Layout) -> Result<(usize, usize, usize)> {
    let dims = layout.shape().dims();
    if dims.len() < 2 {
        bail!("expected an (N, C, ...) tensor, got shape {dims:?}");
    }
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}
