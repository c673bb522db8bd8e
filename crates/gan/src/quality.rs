//! What generated faces look like to an attribute classifier: the hit rate of an attribute (the
//! fraction of generated faces a trained classifier calls positive), and the difference between
//! two generators' hit rates with a bootstrap interval (the synthesis report's untested
//! hypothesis: does a GAN trained on attractive faces only generate attractive faces?).

use std::path::Path;

use candle_core::{DType, Device, ModuleT, Tensor};
use deeprecog_attributes::Attribute;
use deeprecog_classifiers::zoo::{self, Loaded, ZooModel};
use deeprecog_classifiers::Task;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::Serialize;

use crate::{Error, Result};

/// A trained zoo classifier (a run folder of the attractiveness pipeline) scoring generated
/// images.
#[derive(Debug)]
pub struct AttributeScorer {
    loaded: Loaded,
    /// The loaded classifier over constant weights.
    model: ZooModel,
    attributes: Vec<Attribute>,
}

impl AttributeScorer {
    /// Loads the classifier of a training run (its `best/` checkpoint, else `last/`).
    ///
    /// # Errors
    /// Checkpoint errors naming the folder; [`Error::Config`] for a classifier that does not
    /// predict attributes.
    pub fn load(run_dir: &Path, device: &Device) -> Result<AttributeScorer> {
        let loaded = zoo::load(run_dir, device)?;
        let attributes = match &loaded.config.task {
            Task::MultiLabel(a) => a.clone(),
            Task::Binary => vec![Attribute::Attractive],
            Task::MultiClass(_) => {
                return Err(Error::Config(format!(
                    "{}: a multi-class model does not predict attributes",
                    run_dir.display()
                )))
            }
        };
        let model = zoo::inference_model(&loaded.config, &loaded.varmap, device)?;
        Ok(AttributeScorer { loaded, model, attributes })
    }

    /// The attributes it predicts, in output order.
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }

    /// Probabilities `(N, K)` (row-major) of each attribute for images in `[-1, 1]`, resized to
    /// the classifier's input (bilinear) and collapsed to gray for a one-channel model.
    ///
    /// # Errors
    /// Tensor errors.
    pub fn probabilities(&self, images: &Tensor) -> Result<Vec<Vec<f32>>> {
        let (c, h, w) = self.loaded.config.input;
        let device = images.device();
        let mut x = ((images.to_dtype(DType::F32)?.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?;
        let (_, _, ih, iw) = x.dims4()?;
        if (ih, iw) != (h, w) {
            x = resize_bilinear(&x, h, w)?;
        }
        if c == 1 {
            let luma = Tensor::new(&[0.299f32, 0.587, 0.114], device)?.reshape((1, 3, 1, 1))?;
            x = x.broadcast_mul(&luma)?.sum_keepdim(1)?;
        }
        let input = self.loaded.normalization.apply(&x)?;
        let logits = self.model.forward_t(&input, false)?;
        let probs = candle_nn::ops::sigmoid(&logits.reshape((logits.dim(0)?, ()))?)?;
        Ok(probs.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
    }

    /// Whether each image shows `attribute` (probability >= 0.5).
    ///
    /// # Errors
    /// [`Error::Config`] when the classifier does not predict `attribute`; tensor errors.
    pub fn hits(&self, images: &Tensor, attribute: Attribute) -> Result<Vec<bool>> {
        let k =
            self.attributes.iter().position(|a| *a == attribute).ok_or_else(|| {
                Error::Config(format!("the classifier does not predict {attribute}"))
            })?;
        Ok(self.probabilities(images)?.iter().map(|row| row[k] >= 0.5).collect())
    }
}

/// Resizes `(N, C, H, W)` to `(N, C, h, w)` with bilinear interpolation (half-pixel centres,
/// as `F.interpolate(align_corners=False)`).
fn resize_bilinear(x: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (n, c, ih, iw) = x.dims4()?;
    let src = x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let axis = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        (0..out)
            .map(|o| {
                let s = ((o as f32 + 0.5) * inp as f32 / out as f32 - 0.5).max(0.0);
                let i0 = (s.floor() as usize).min(inp - 1);
                let i1 = (i0 + 1).min(inp - 1);
                (i0, i1, s - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(h, ih), axis(w, iw));
    let mut out = Vec::with_capacity(n * c * h * w);
    for plane in src.chunks_exact(ih * iw) {
        for &(y0, y1, fy) in &ys {
            for &(x0, x1, fx) in &xs {
                let p = |y: usize, x: usize| plane[y * iw + x];
                let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                let bottom = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    Ok(Tensor::from_vec(out, (n, c, h, w), x.device())?)
}

/// Two hit rates and their difference with a percentile bootstrap interval (each sample
/// resampled on its own: the two generators' images are independent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateDifference {
    /// The first sample's hit rate.
    pub a: f64,
    /// The second sample's hit rate.
    pub b: f64,
    /// `a - b`.
    pub difference: f64,
    /// The interval's lower end.
    pub low: f64,
    /// The interval's upper end.
    pub high: f64,
    /// Its confidence level (0.95).
    pub level: f64,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// The sample sizes.
    pub n: (usize, usize),
}

fn rate(hits: &[bool]) -> f64 {
    hits.iter().filter(|&&h| h).count() as f64 / hits.len().max(1) as f64
}

/// The difference of hit rates `a - b` with a seeded 95% percentile bootstrap interval over
/// `resamples` resamples.
///
/// # Errors
/// [`Error::Config`] for an empty sample or no resamples.
pub fn rate_difference(
    a: &[bool],
    b: &[bool],
    resamples: usize,
    seed: u64,
) -> Result<RateDifference> {
    if a.is_empty() || b.is_empty() || resamples == 0 {
        return Err(Error::Config(
            "a rate difference needs two non-empty samples and resamples".into(),
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut draw = |hits: &[bool]| -> f64 {
        let n = hits.len() as u64;
        let count = (0..n).filter(|_| hits[(rng.next_u64() % n) as usize]).count();
        count as f64 / n as f64
    };
    let mut diffs: Vec<f64> = (0..resamples).map(|_| draw(a) - draw(b)).collect();
    diffs.sort_by(f64::total_cmp);
    let level = 0.95;
    let at = |q: f64| diffs[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    Ok(RateDifference {
        a: rate(a),
        b: rate(b),
        difference: rate(a) - rate(b),
        low: at((1.0 - level) / 2.0),
        high: at(1.0 - (1.0 - level) / 2.0),
        level,
        resamples,
        n: (a.len(), b.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_difference_interval_covers_the_difference() {
        let a: Vec<bool> = (0..200).map(|i| i % 4 != 0).collect(); // 0.75
        let b: Vec<bool> = (0..300).map(|i| i % 2 == 0).collect(); // 0.5
        let d = rate_difference(&a, &b, 2000, 1).unwrap();
        assert!((d.difference - 0.25).abs() < 1e-12);
        assert!(d.low < 0.25 && d.high > 0.25, "{d:?}");
        // Normal approximation: se = sqrt(.75*.25/200 + .25/300) = 0.0449; the interval is about
        // +-0.088 wide on each side.
        assert!((d.high - d.low - 2.0 * 1.96 * 0.0449).abs() < 0.03, "{d:?}");
        assert!(rate_difference(&[], &b, 10, 1).is_err());
        let same = rate_difference(&b, &b, 500, 2).unwrap();
        assert!(same.low <= 0.0 && same.high >= 0.0);
    }

    #[test]
    fn bilinear_resize_keeps_constants_and_halves_exactly() {
        let x = Tensor::from_vec(
            (0..16).map(|v| v as f32).collect::<Vec<_>>(),
            (1, 1, 4, 4),
            &Device::Cpu,
        )
        .unwrap();
        let y = resize_bilinear(&x, 2, 2).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Half-pixel centres: output (0, 0) samples (0.5, 0.5), the mean of the top-left 2x2.
        assert_eq!(y, vec![2.5, 4.5, 10.5, 12.5]);
    }
}
