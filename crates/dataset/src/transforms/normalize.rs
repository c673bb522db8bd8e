//! Normalisation of `u8` batches on the device.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// ITU-R 601-2 luma weights, used to collapse 3-channel statistics onto 1 channel.
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How pixel values become model inputs: `(x / 255 - mean[c]) / std[c]` per channel.
///
/// [`Normalization::apply`] takes a `u8` (or any float) batch, NCHW or CHW, on any device and
/// returns `f32` of the same shape on the same device, so batches cross to the device as `u8`
/// (a quarter of the bytes) and are normalised there.
///
/// Channel counts: 3-channel statistics applied to a 1-channel batch are collapsed with the
/// luma weights (0.299, 0.587, 0.114), because a gray image is exactly that weighted sum of the
/// RGB channels: the collapsed mean is then the true mean of the gray channel, and the
/// collapsed std the same weighted average of the stds (an approximation; ImageNet gives
/// mean 0.4590, std 0.2256). One-value statistics apply to every channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Normalization {
    /// `x / 255`, into `[0, 1]`.
    MinMax,
    /// ImageNet statistics: mean `[0.485, 0.456, 0.406]`, std `[0.229, 0.224, 0.225]` after
    /// `/ 255` (what torchvision and timm weights expect).
    ImageNet,
    /// `x / 127.5 - 1`, into `[-1, 1]` (GAN generators ending in `tanh`).
    Tanh,
    /// Custom per-channel statistics, in `[0, 1]` units (applied after `/ 255`).
    MeanStd {
        /// Per-channel (or single) means.
        mean: Vec<f32>,
        /// Per-channel (or single) standard deviations, all non-zero.
        std: Vec<f32>,
    },
}

impl Normalization {
    /// The nominal statistics in `[0, 1]` units: three values for the built-in variants, the
    /// given vectors for [`Normalization::MeanStd`]. `MinMax` is mean 0, std 1; `Tanh` is
    /// mean 0.5, std 0.5.
    pub fn mean_std(&self) -> (Vec<f32>, Vec<f32>) {
        match self {
            Normalization::MinMax => (vec![0.0; 3], vec![1.0; 3]),
            Normalization::ImageNet => (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()),
            Normalization::Tanh => (vec![0.5; 3], vec![0.5; 3]),
            Normalization::MeanStd { mean, std } => (mean.clone(), std.clone()),
        }
    }

    /// The statistics resolved for a batch with `channels` channels (see the type's docs for
    /// 1-channel batches); fails when they cannot apply or a std is zero or not finite.
    pub fn mean_std_for(&self, channels: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mean, std) = self.mean_std();
        if mean.len() != std.len() || mean.is_empty() {
            return Err(Error::Config(format!(
                "Normalization: {} means for {} stds",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s != 0.0)) {
            return Err(Error::Config(format!(
                "Normalization: std {s} must be finite and non-zero"
            )));
        }
        if mean.iter().any(|m| !m.is_finite()) {
            return Err(Error::Config(format!("Normalization: means {mean:?} must be finite")));
        }
        let collapse = |v: &[f32]| vec![v.iter().zip(LUMA).map(|(x, w)| x * w).sum::<f32>()];
        match (mean.len(), channels) {
            (n, c) if n == c => Ok((mean, std)),
            (1, c) => Ok((vec![mean[0]; c], vec![std[0]; c])),
            (3, 1) => Ok((collapse(&mean), collapse(&std))),
            (n, c) => Err(Error::Config(format!(
                "Normalization: {n} channel statistics cannot normalise {c} channels"
            ))),
        }
    }

    fn channel_dim(batch: &Tensor) -> Result<usize> {
        match batch.rank() {
            4 => Ok(1),
            3 => Ok(0),
            r => Err(Error::Config(format!(
                "Normalization expects an NCHW or CHW tensor, got rank {r} with shape {:?}",
                batch.dims()
            ))),
        }
    }

    /// Per-channel `(scale, shift)` such that `out = x * scale + shift` for `x` in `0..=255`.
    fn scale_shift(&self, channels: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mean, std) = self.mean_std_for(channels)?;
        Ok(mean.iter().zip(&std).map(|(m, s)| (1.0 / (255.0 * s), -m / s)).unzip())
    }

    fn stats_shape(batch: &Tensor, channels: usize) -> Vec<usize> {
        if batch.rank() == 4 {
            vec![1, channels, 1, 1]
        } else {
            vec![channels, 1, 1]
        }
    }

    /// Normalises a `u8` (or float, still in `0..=255`) NCHW / CHW batch into `f32` on the same
    /// device.
    pub fn apply(&self, batch: &Tensor) -> Result<Tensor> {
        let cdim = Normalization::channel_dim(batch)?;
        let channels = batch.dim(cdim)?;
        let x = batch.to_dtype(DType::F32)?;
        match self {
            // One fused affine op, no broadcast tensors to build.
            Normalization::MinMax => Ok(x.affine(1.0 / 255.0, 0.0)?),
            Normalization::Tanh => Ok(x.affine(1.0 / 127.5, -1.0)?),
            _ => {
                let (scale, shift) = self.scale_shift(channels)?;
                let shape = Normalization::stats_shape(batch, channels);
                let scale = Tensor::from_vec(scale, shape.as_slice(), batch.device())?;
                let shift = Tensor::from_vec(shift, shape.as_slice(), batch.device())?;
                Ok(x.broadcast_mul(&scale)?.broadcast_add(&shift)?)
            }
        }
    }

    /// Undoes [`Normalization::apply`]: `f32` model outputs back to a `u8` batch (rounded and
    /// clamped), e.g. to save generator samples.
    pub fn to_u8(&self, normalized: &Tensor) -> Result<Tensor> {
        let cdim = Normalization::channel_dim(normalized)?;
        let channels = normalized.dim(cdim)?;
        let x = normalized.to_dtype(DType::F32)?;
        let pixels = match self {
            Normalization::MinMax => x.affine(255.0, 0.0)?,
            Normalization::Tanh => x.affine(127.5, 127.5)?,
            _ => {
                let (scale, shift) = self.scale_shift(channels)?;
                // Inverse of x * scale + shift.
                let (inv_scale, inv_shift): (Vec<f32>, Vec<f32>) =
                    scale.iter().zip(&shift).map(|(a, b)| (1.0 / a, -b / a)).unzip();
                let shape = Normalization::stats_shape(normalized, channels);
                let a = Tensor::from_vec(inv_scale, shape.as_slice(), normalized.device())?;
                let b = Tensor::from_vec(inv_shift, shape.as_slice(), normalized.device())?;
                x.broadcast_mul(&a)?.broadcast_add(&b)?
            }
        };
        Ok(pixels.clamp(0f32, 255f32)?.round()?.to_dtype(DType::U8)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::golden_cases;
    use super::*;
    use candle_core::Device;

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}");
        }
    }

    #[test]
    fn matches_numpy_golden() {
        let cases = golden_cases("normalize");
        assert_eq!(cases.len(), 3);
        for case in cases {
            let shape: Vec<usize> = case["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let input: Vec<u8> = case["input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
                .collect();
            let expected: Vec<f32> = case["expected"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let norm = match case["name"].as_str().unwrap() {
                "minmax" => Normalization::MinMax,
                "imagenet" => Normalization::ImageNet,
                "tanh" => Normalization::Tanh,
                other => panic!("unknown {other}"),
            };
            let batch = Tensor::from_vec(input.clone(), shape.as_slice(), &Device::Cpu).unwrap();
            let out = norm.apply(&batch).unwrap();
            assert_eq!(out.dtype(), DType::F32);
            assert_eq!(out.dims(), shape.as_slice());
            assert_close(&out.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &expected, 1e-5);
            // Float input in 0..=255 gives the same numbers, and to_u8 inverts exactly.
            let out_f = norm.apply(&batch.to_dtype(DType::F32).unwrap()).unwrap();
            assert_close(&out_f.flatten_all().unwrap().to_vec1::<f32>().unwrap(), &expected, 1e-5);
            let back = norm.to_u8(&out).unwrap().flatten_all().unwrap().to_vec1::<u8>().unwrap();
            assert_eq!(back, input);
        }
    }

    #[test]
    fn hand_computed_values_non_square() {
        // N=1, C=3, H=1, W=2: channel planes [0, 255], [51, 102], [255, 0].
        let x =
            Tensor::from_vec(vec![0u8, 255, 51, 102, 255, 0], (1, 3, 1, 2), &Device::Cpu).unwrap();
        let get = |t: Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_close(
            &get(Normalization::MinMax.apply(&x).unwrap()),
            &[0.0, 1.0, 0.2, 0.4, 1.0, 0.0],
            1e-6,
        );
        assert_close(
            &get(Normalization::Tanh.apply(&x).unwrap()),
            &[-1.0, 1.0, -0.6, -0.2, 1.0, -1.0],
            1e-6,
        );
        // (0 - 0.485) / 0.229 = -2.117904, (1 - 0.485) / 0.229 = 2.248908,
        // (0.2 - 0.456) / 0.224 = -1.142857, (0.4 - 0.456) / 0.224 = -0.25,
        // (1 - 0.406) / 0.225 = 2.64, (0 - 0.406) / 0.225 = -1.804444.
        assert_close(
            &get(Normalization::ImageNet.apply(&x).unwrap()),
            &[-2.117904, 2.248908, -1.142857, -0.25, 2.64, -1.804444],
            1e-5,
        );
        // CHW input and a single-value MeanStd.
        let chw = x.squeeze(0).unwrap();
        let ms = Normalization::MeanStd { mean: vec![0.5], std: vec![0.25] };
        let out = ms.apply(&chw).unwrap();
        assert_eq!(out.dims(), &[3, 1, 2]);
        assert_close(&get(out), &[-2.0, 2.0, -1.2, -0.4, 2.0, -2.0], 1e-6);
    }

    #[test]
    fn one_channel_and_errors() {
        let (m, s) = Normalization::ImageNet.mean_std_for(1).unwrap();
        assert!((m[0] - 0.458_971).abs() < 1e-5, "{m:?}");
        assert!((s[0] - 0.225_609).abs() < 1e-5, "{s:?}");
        let gray =
            Tensor::from_vec(vec![0u8, 255, 128, 64, 32, 16], (2, 1, 1, 3), &Device::Cpu).unwrap();
        let out = Normalization::ImageNet.apply(&gray).unwrap();
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - (0.0 - m[0]) / s[0]).abs() < 1e-5);
        assert!((v[1] - (1.0 - m[0]) / s[0]).abs() < 1e-5);

        let two = Tensor::zeros((1, 2, 2, 3), DType::U8, &Device::Cpu).unwrap();
        assert!(Normalization::ImageNet.apply(&two).is_err());
        let flat = Tensor::zeros((4, 3), DType::U8, &Device::Cpu).unwrap();
        assert!(Normalization::MinMax.apply(&flat).is_err());
        let zero_std = Normalization::MeanStd { mean: vec![0.5; 3], std: vec![0.5, 0.0, 0.5] };
        assert!(zero_std
            .apply(&Tensor::zeros((1, 3, 2, 3), DType::U8, &Device::Cpu).unwrap())
            .is_err());
        let mismatched = Normalization::MeanStd { mean: vec![0.5; 3], std: vec![0.5; 2] };
        assert!(mismatched.mean_std_for(3).is_err());
        assert_eq!(Normalization::Tanh.mean_std(), (vec![0.5; 3], vec![0.5; 3]));
    }
}
