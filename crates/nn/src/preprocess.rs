//! Batches of decoded images to network input in one pass: crop, optional horizontal flip,
//! `u8 -> f32`, per-channel normalisation and HWC -> CHW, on the device the images are on. On
//! CUDA (feature `cuda`) it is one kernel over the whole batch, so the loader ships `u8` (a
//! quarter of the bytes of f32) and the augmentation runs on the card; on the CPU the same
//! arithmetic in a loop, which the CUDA kernel is tested against.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use deeprecog_nn::preprocess::{crop_flip_normalize, Crop, Normalization};
//!
//! # fn main() -> candle_core::Result<()> {
//! let pixels: Vec<u8> = (0..2 * 4 * 4 * 3).map(|v| v as u8).collect();
//! let images = Tensor::from_vec(pixels, (2, 4, 4, 3), &Device::Cpu)?;
//! let crops = [Crop { top: 0, left: 1, flip: false }, Crop { top: 1, left: 0, flip: true }];
//! let x = crop_flip_normalize(&images, &crops, (3, 3), Normalization::IMAGENET)?;
//! assert_eq!(x.dims(), &[2, 3, 3, 3]);
//! # Ok(())
//! # }
//! ```

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

/// Where one image's output window starts, and whether it is mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Crop {
    /// First source row.
    pub top: usize,
    /// First source column.
    pub left: usize,
    /// Mirror the window horizontally (output column `x` reads window column `w - 1 - x`).
    pub flip: bool,
}

/// `(v / 255 - mean[c]) / std[c]` per channel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalization {
    /// Per-channel mean (RGB) of the `[0, 1]` values.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB).
    pub std: [f32; 3],
}

impl Normalization {
    /// torchvision's ImageNet statistics.
    pub const IMAGENET: Normalization =
        Normalization { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
    /// `[0, 1]` values unchanged.
    pub const UNIT: Normalization = Normalization { mean: [0.0; 3], std: [1.0; 3] };
    /// `[-1, 1]` (GANs' range).
    pub const SYMMETRIC: Normalization = Normalization { mean: [0.5; 3], std: [0.5; 3] };
}

/// `images (N, H, W, 3)` u8 to `(N, 3, OH, OW)` f32: image `i`'s window of `out` pixels at
/// `crops[i]`, flipped where asked, normalised by `norm`. The result is on the images' device.
///
/// # Errors
/// Not u8 `(N, H, W, 3)`, a crop count other than `N`, a window that leaves the image, a zero
/// standard deviation, a device without the kernel.
pub fn crop_flip_normalize(
    images: &Tensor,
    crops: &[Crop],
    out: (usize, usize),
    norm: Normalization,
) -> Result<Tensor> {
    let (n, h, w, c) = images.dims4()?;
    if images.dtype() != DType::U8 || c != 3 {
        bail!(
            "preprocess: expected u8 (N, H, W, 3) images, got {:?} {:?}",
            images.dtype(),
            images.dims()
        );
    }
    if crops.len() != n {
        bail!("preprocess: {} crops for {n} images", crops.len());
    }
    let (oh, ow) = out;
    if let Some((i, k)) = crops.iter().enumerate().find(|(_, k)| k.top + oh > h || k.left + ow > w)
    {
        bail!("preprocess: image {i}'s {oh}x{ow} window at {k:?} leaves its {h}x{w} frame");
    }
    if norm.std.iter().any(|&s| s == 0.0 || !s.is_finite()) {
        bail!("preprocess: standard deviations {:?} must be finite and non-zero", norm.std);
    }
    let op = Preprocess { crops: crops.to_vec(), hw: (h, w), out, norm };
    images.contiguous()?.apply_op1_no_bwd(&op)
}

/// The op: `u8` images in, f32 batch out, no gradient (the input is data).
struct Preprocess {
    crops: Vec<Crop>,
    hw: (usize, usize),
    out: (usize, usize),
    norm: Normalization,
}

impl CustomOp1 for Preprocess {
    fn name(&self) -> &'static str {
        "deeprecog-preprocess"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::U8(data) = storage else { bail!("preprocess: u8 images expected") };
        let Some((a, b)) = layout.contiguous_offsets() else {
            bail!("preprocess: the images must be contiguous");
        };
        let src = &data[a..b];
        let ((h, w), (oh, ow), norm) = (self.hw, self.out, self.norm);
        let n = self.crops.len();
        let mut dst = Vec::with_capacity(n * 3 * oh * ow);
        for (i, k) in self.crops.iter().enumerate() {
            for ch in 0..3 {
                let inv = 1.0 / norm.std[ch];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let sx = if k.flip { ow - 1 - ox } else { ox };
                        let v = src[((i * h + k.top + oy) * w + k.left + sx) * 3 + ch];
                        dst.push((f32::from(v) / 255.0 - norm.mean[ch]) * inv);
                    }
                }
            }
        }
        Ok((CpuStorage::F32(dst), Shape::from((n, 3, oh, ow))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        crate::cuda::preprocess((storage, layout), &self.crops, self.hw, self.out, self.norm)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

    /// Pixel `(y, x)` channel `c` of image `i` holds `100 i + 10 y + x + c` (all below 256).
    fn images(n: usize, h: usize, w: usize) -> Tensor {
        let mut v = Vec::new();
        for i in 0..n {
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        v.push((100 * i + 10 * y + x + c) as u8);
                    }
                }
            }
        }
        Tensor::from_vec(v, (n, h, w, 3), &Device::Cpu).unwrap()
    }

    #[test]
    fn crops_flips_and_normalises_each_image() {
        let x = images(2, 3, 4);
        let crops = [Crop { top: 1, left: 1, flip: false }, Crop { top: 0, left: 2, flip: true }];
        let norm = Normalization { mean: [0.5, 0.25, 0.0], std: [0.5, 2.0, 1.0] };
        let y = crop_flip_normalize(&x, &crops, (2, 2), norm).unwrap();
        assert_eq!(y.dims(), &[2, 3, 2, 2]);
        let got = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let f = |v: u32, c: usize| (v as f32 / 255.0 - norm.mean[c]) / norm.std[c];
        // Image 0: rows 1-2, columns 1-2. Image 1: rows 0-1, columns 3 then 2 (mirrored).
        let mut want = Vec::new();
        for c in 0..3u32 {
            for (y, x) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
                want.push(f(10 * y + x + c, c as usize));
            }
        }
        for c in 0..3u32 {
            for (y, x) in [(0, 3), (0, 2), (1, 3), (1, 2)] {
                want.push(f(100 + 10 * y + x + c, c as usize));
            }
        }
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{got:?} != {want:?}");
        }
    }

    #[test]
    fn rejects_bad_batches_windows_and_constants() {
        let x = images(1, 3, 3);
        let one = [Crop::default()];
        assert!(crop_flip_normalize(&x, &[], (2, 2), Normalization::UNIT).is_err());
        let outside = [Crop { top: 2, left: 0, flip: false }];
        assert!(crop_flip_normalize(&x, &outside, (2, 2), Normalization::UNIT).is_err());
        let zero = Normalization { mean: [0.0; 3], std: [1.0, 0.0, 1.0] };
        assert!(crop_flip_normalize(&x, &one, (2, 2), zero).is_err());
        let floats = x.to_dtype(DType::F32).unwrap();
        assert!(crop_flip_normalize(&floats, &one, (2, 2), Normalization::UNIT).is_err());
    }
}
