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

/// The environment variable through which candle 0.11 sets how long its element-wise workers
/// spin after each op before they sleep (25,000 pauses by default).
const CANDLE_SPIN_LIMIT: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Lets candle's own element-wise worker threads sleep as soon as an op ends instead of spinning.
///
/// candle 0.11 runs large element-wise CPU ops (`a + b`, `a * b`: a gradient summed in the
/// backward pass, a loss) on a pool of its own threads beside rayon's, and after each op those
/// threads poll for the next one for about half a millisecond. The project's convolutions run
/// on rayon's workers, one per core, so that spinning takes a core from the next convolution
/// while it lasts: on 2 cores a DCGAN training step went from 67.3 to 69.9 images/s with them
/// parked at once (`benches/NOTES.md`, twelfth pass). The next element-wise op wakes them.
///
/// Sets `CANDLE_BARRIER_POOL_SPIN_LIMIT=0` unless the environment already sets it. candle
/// reads it when its pool starts (its first large element-wise op), so call this first thing
/// in `main`, before any thread is started, as the project's binaries do.
pub fn park_candle_workers() {
    if std::env::var_os(CANDLE_SPIN_LIMIT).is_none() {
        std::env::set_var(CANDLE_SPIN_LIMIT, "0");
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

/// [`on_cpu_workers`], with the pool's other workers polling for `f`'s parallel work until it
/// returns instead of going to sleep between its ops: for latency-bound CPU inference at small
/// batches, where each of a network's ~100 ops is a parallel loop of tens of microseconds and
/// waking a sleeping worker for each costs a share of it (onnxruntime's thread pool spins the
/// same way by default). The price is that the other cores stay busy while `f` runs serial
/// code. The same caveat as [`on_cpu_workers`]; called from a worker it is `f()`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use deeprecog_nn::device::on_cpu_workers_spinning;
///
/// let x = Tensor::ones((64, 64), candle_core::DType::F32, &Device::Cpu)?;
/// let y = on_cpu_workers_spinning(|| x.matmul(&x)?.sum_all()?.to_scalar::<f32>())?;
/// assert_eq!(y, 64.0 * 64.0 * 64.0);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn on_cpu_workers_spinning<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            s.spawn(move |_| {
                // Popped by `f`'s own thread while it waits inside a join: spinning there would
                // never let `f` finish.
                if rayon::current_thread_index() == owner {
                    return;
                }
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        // A pause between polls, so that stealing attempts do not keep
                        // bouncing the owner's deque between the cores.
                        for _ in 0..16 {
                            std::hint::spin_loop();
                        }
                    }
                }
            });
        }
        let out = f();
        done.store(true, Ordering::Release);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nested parallel work inside the spinning scope completes with the right result, from
    /// outside the pool and from inside it.
    #[test]
    fn spinning_workers_run_the_work_and_stop() {
        use rayon::prelude::*;
        let work = || {
            (0..50)
                .map(|round| (0..10_000u64).into_par_iter().map(|i| i * round).sum::<u64>())
                .sum::<u64>()
        };
        let want: u64 = (0..50u64).map(|r| r * (0..10_000u64).sum::<u64>()).sum();
        assert_eq!(on_cpu_workers_spinning(work), want);
        assert_eq!(rayon::scope(|_| on_cpu_workers_spinning(work)), want);
        assert_eq!(on_cpu_workers_spinning(|| on_cpu_workers_spinning(work)), want);
    }

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
