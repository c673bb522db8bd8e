//! GAN face synthesis: generators and discriminators (the synthesis report's Keras GAN, DCGAN,
//! a conditional DCGAN), their training on the shared engine with mosaics and exact resume,
//! sampling, and attribute hit rates of generated faces.
//!
//! | module | what |
//! |---|---|
//! | [`models`] | [`GanConfig`], [`Generator`], [`Discriminator`], seeded latents, interpolation |
//! | [`step`] | [`GanStep`]: one iteration (D then G) as a `deeprecog_train::TrainStep` |
//! | [`train`] | [`train_gan`] on any image `Dataset`, mosaics, generator export, [`GanModel`] |
//! | [`quality`] | attribute hit rates and their difference with a bootstrap interval |
//! | [`plot`] | the loss curves |
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use deeprecog_gan::mosaic;
//!
//! // 36 generated 3x8x6 images in [-1, 1] (a tanh output) become one 6x6 grid.
//! let fakes = Tensor::rand(-1f32, 1.0, (36, 3, 8, 6), &Device::Cpu)?;
//! let grid = mosaic(&fakes, 6, 1)?;
//! assert_eq!(grid.dims(), &[3, 6 * 8 + 7, 6 * 6 + 7]);
//! # Ok::<(), deeprecog_gan::Error>(())
//! ```

pub mod models;
pub mod plot;
pub mod quality;
pub mod step;
pub mod train;

pub use models::{Arch, Discriminator, GanConfig, Generator};
pub use step::{DiscriminatorStep, GanLoss, GanOptim, GanStep, IterationRecord};
pub use train::{train_gan, GanModel, GanRun, GanTrainConfig};

use candle_core::{DType, Tensor};

/// Errors of the gan crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A shared model piece failed.
    #[error(transparent)]
    Nn(#[from] deeprecog_nn::Error),
    /// A mosaic request that cannot be drawn.
    #[error("mosaic: {0}")]
    Mosaic(String),
    /// A network configuration or input that does not fit.
    #[error("GAN: {0}")]
    Config(String),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] deeprecog_train::Error),
    /// Reading the data failed.
    #[error(transparent)]
    Dataset(#[from] deeprecog_dataset::Error),
    /// Loading or running a classifier failed.
    #[error(transparent)]
    Classifiers(#[from] deeprecog_classifiers::Error),
    /// A plot or metric failed.
    #[error(transparent)]
    Metrics(#[from] deeprecog_metrics::Error),
    /// A file could not be read or written.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The gan crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Lays out a batch `(N, C, H, W)` of images in `[-1, 1]` as a `u8` grid `(C, rows*H + gaps,
/// cols*W + gaps)` with `cols` images per row and `padding` black pixels around each, the way
/// the synthesis report saved its 6x6 mosaics. Missing cells of the last row stay black.
pub fn mosaic(images: &Tensor, cols: usize, padding: usize) -> Result<Tensor> {
    let (n, c, h, w) = images.dims4()?;
    if n == 0 || cols == 0 {
        return Err(Error::Mosaic(format!("{n} images in {cols} columns")));
    }
    let rows = n.div_ceil(cols);
    let (gh, gw) = (rows * h + (rows + 1) * padding, cols * w + (cols + 1) * padding);
    let pixels = ((images.to_dtype(DType::F32)?.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
        .round()?
        .to_dtype(DType::U8)?
        .to_device(&candle_core::Device::Cpu)?;
    let src = pixels.flatten_all()?.to_vec1::<u8>()?;
    let mut grid = vec![0u8; c * gh * gw];
    for (i, image) in src.chunks_exact(c * h * w).enumerate() {
        let (top, left) =
            ((i / cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding);
        for (ch, plane) in image.chunks_exact(h * w).enumerate() {
            for (y, row) in plane.chunks_exact(w).enumerate() {
                let start = ch * gh * gw + (top + y) * gw + left;
                if let Some(dst) = grid.get_mut(start..start + w) {
                    dst.copy_from_slice(row);
                }
            }
        }
    }
    Ok(Tensor::from_vec(grid, (c, gh, gw), &candle_core::Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn places_each_image_in_its_cell() {
        // 5 images of 1x2x3 with constant values; 2 columns -> 3 rows, last row half empty.
        let vals = [-1.0f32, -0.5, 0.0, 0.5, 1.0];
        let data: Vec<f32> = vals.iter().flat_map(|v| [*v; 6]).collect();
        let t = Tensor::from_vec(data, (5, 1, 2, 3), &Device::Cpu).unwrap();
        let g = mosaic(&t, 2, 1).unwrap();
        assert_eq!(g.dims(), &[1, 3 * 2 + 4, 2 * 3 + 3]);
        let g = g.get(0).unwrap().to_vec2::<u8>().unwrap();
        // Image 3 (value 0.5 -> 191) sits in row 1, column 1: top 1*(2+1)+1 = 4, left 1*(3+1)+1 = 5.
        assert_eq!(g[4][5], 191);
        assert_eq!(g[5][7], 191);
        assert_eq!(g[4][4], 0, "padding stays black");
        assert_eq!(g[1][1], 0, "value -1 maps to 0");
        assert_eq!(g[7][1], 255, "image 4 (value 1) in row 2");
        assert_eq!(g[7][5], 0, "missing cell stays black");
        assert_eq!(g[1][5], 64, "-0.5 -> 63.75 rounds to 64");
        assert!(mosaic(&t, 0, 1).is_err());
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
