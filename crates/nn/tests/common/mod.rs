#![allow(dead_code)]
//! Helpers shared by the tests: where the goldens live, an independent decoding of the bytes
//! the importer returns, seeded random tensors and their largest difference.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::Init;
use deeprecog_nn::import::{ImportedTensor, TorchDType};
use deeprecog_nn::init::init_tensor;

/// A standard normal tensor drawn from the seeded initialiser (`seed`, `name` pick the stream).
pub fn randn(seed: u64, shape: &[usize], name: &str, dtype: DType) -> Tensor {
    init_tensor(
        Init::Randn { mean: 0.0, stdev: 1.0 },
        &shape.into(),
        seed,
        name,
        dtype,
        &Device::Cpu,
    )
    .unwrap()
}

/// The largest absolute element-wise difference of two tensors of the same shape, in f64.
pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims());
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

/// A file of `tests/golden/`.
pub fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// The tensor's little-endian bytes as numbers, decoded here rather than by the importer.
pub fn values(t: &ImportedTensor) -> Vec<f64> {
    let c = |n: usize| t.data.chunks_exact(n);
    match t.dtype {
        TorchDType::F64 => c(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect(),
        TorchDType::F32 => c(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        TorchDType::F16 => {
            c(2).map(|b| half::f16::from_le_bytes(b.try_into().unwrap()).to_f64()).collect()
        }
        TorchDType::BF16 => {
            c(2).map(|b| half::bf16::from_le_bytes(b.try_into().unwrap()).to_f64()).collect()
        }
        TorchDType::I64 => c(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        TorchDType::I32 => c(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        TorchDType::I16 => c(2).map(|b| i16::from_le_bytes(b.try_into().unwrap()) as f64).collect(),
        TorchDType::I8 => t.data.iter().map(|&b| b as i8 as f64).collect(),
        TorchDType::U8 | TorchDType::Bool => t.data.iter().map(|&b| b as f64).collect(),
    }
}

/// The dtype as the goldens spell it.
pub fn dtype_name(d: TorchDType) -> &'static str {
    match d {
        TorchDType::F64 => "f64",
        TorchDType::F32 => "f32",
        TorchDType::F16 => "f16",
        TorchDType::BF16 => "bf16",
        TorchDType::I64 => "i64",
        TorchDType::I32 => "i32",
        TorchDType::I16 => "i16",
        TorchDType::I8 => "i8",
        TorchDType::U8 => "u8",
        TorchDType::Bool => "bool",
    }
}
