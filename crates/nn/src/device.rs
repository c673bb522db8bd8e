//! Choosing where tensors live: the CPU by default, a CUDA GPU when the crate is built with the
//! `cuda` feature and one is present.

use std::str::FromStr;

use candle_core::Device;

use crate::{Error, Result};

/// Which device to run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// CUDA GPU with this ordinal.
    Cuda(usize),
    /// The first CUDA GPU when available, else the CPU.
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = Error;

    /// Parses `cpu`, `cuda`, `cuda:N` or `auto`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" | "gpu" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| Error::DeviceUnavailable {
                    requested: other.to_string(),
                    reason: "expected cpu, cuda, cuda:N or auto".into(),
                }),
        }
    }
}

/// Whether this build can use CUDA at all (compiled with the `cuda` feature).
pub fn cuda_compiled() -> bool {
    candle_core::utils::cuda_is_available()
}

/// The device for `choice`; asking for CUDA in a build without it, or with no GPU, is an error,
/// while [`DeviceChoice::Auto`] falls back to the CPU.
pub fn select(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(ordinal) => {
            if !cuda_compiled() {
                return Err(Error::DeviceUnavailable {
                    requested: format!("cuda:{ordinal}"),
                    reason: "built without the `cuda` feature".into(),
                });
            }
            Device::new_cuda(ordinal).map_err(|e| Error::DeviceUnavailable {
                requested: format!("cuda:{ordinal}"),
                reason: e.to_string(),
            })
        }
        DeviceChoice::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
    }
}

/// Runs `f` on one of rayon's worker threads and returns its result: a forward pass (or a
/// training step) called this way starts each op's parallel loops from inside the pool, by
/// work stealing, instead of handing every loop to the pool from outside and putting the
/// calling thread to sleep until it ends. With dozens of short ops per image that hand-over
/// (a wake-up of the caller per op) is a measurable share of a batch-1 inference on the CPU
/// (`benches/NOTES.md`); at large batches it makes no difference. `f` must not block on work
/// that needs a free worker (a channel fed by other rayon tasks, say).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use deeprecog_nn::device::on_cpu_workers;
///
/// let x = Tensor::ones((2, 3), candle_core::DType::F32, &Device::Cpu)?;
/// let y = on_cpu_workers(|| (&x * 2.0)?.sum_all()?.to_scalar::<f32>())?;
/// assert_eq!(y, 12.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn on_cpu_workers<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_selects() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("cuda:1".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(1));
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert!("tpu".parse::<DeviceChoice>().is_err());
        assert!(select(DeviceChoice::Cpu).unwrap().is_cpu());
        assert!(select(DeviceChoice::Auto).is_ok());
        if !cuda_compiled() {
            let err = select(DeviceChoice::Cuda(0)).unwrap_err();
            assert!(err.to_string().contains("cuda"), "{err}");
        }
    }
}
