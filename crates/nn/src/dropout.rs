//! Dropout with its own seeded generator, so that training from a seed repeats exactly.
//!
//! candle's `Dropout` draws its masks with `Tensor::rand`, which on the CPU uses an unseedable
//! generator. [`SeededDropout`] has PyTorch's semantics (in training each element is zeroed with
//! probability `p` and the survivors are scaled by `1 / (1 - p)`; in evaluation it is the
//! identity) and draws its masks from a ChaCha8 stream keyed by a seed and a name, like
//! [`crate::init::SeededVarMap`].
//!
//! The masks are drawn on the host and copied to the input's device: cheap for the small
//! activations of a classification head, a per-step cost for large feature maps on a GPU.
//!
//! ```
//! use candle_core::{Device, ModuleT, Tensor};
//! use deeprecog_nn::dropout::SeededDropout;
//!
//! let x = Tensor::ones((2, 4), candle_core::DType::F32, &Device::Cpu)?;
//! let a = SeededDropout::new(0.5, 42, "head.dropout")?.forward_t(&x, true)?;
//! let b = SeededDropout::new(0.5, 42, "head.dropout")?.forward_t(&x, true)?;
//! assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?); // every kept value is 2.0
//! # Ok::<(), candle_core::Error>(())
//! ```

use std::sync::{Arc, Mutex};

use candle_core::{bail, Device, ModuleT, Result, Tensor};
use rand_chacha::ChaCha8Rng;

use crate::init::{stream, unit};

/// Dropout whose masks come from a seeded generator; see the [module docs](self).
///
/// Clones share the generator, as the clones of one model would share candle's: a cloned
/// model goes on drawing fresh masks rather than repeating the original's.
#[derive(Debug, Clone)]
pub struct SeededDropout {
    p: f64,
    rng: Arc<Mutex<ChaCha8Rng>>,
}

impl SeededDropout {
    /// Dropout with probability `p` in `[0, 1]`, its masks drawn from the stream of `(seed,
    /// name)`. Give each dropout layer of a model its own name (e.g. its `VarBuilder` prefix) so
    /// that their masks are independent.
    ///
    /// # Errors
    /// When `p` is outside `[0, 1]` or not a number.
    pub fn new(p: f32, seed: u64, name: &str) -> Result<SeededDropout> {
        if !(0.0..=1.0).contains(&p) {
            bail!("dropout probability has to be in [0, 1], got {p}")
        }
        Ok(SeededDropout { p: f64::from(p), rng: Arc::new(Mutex::new(stream(seed, name))) })
    }

    /// The drop probability.
    pub fn p(&self) -> f32 {
        self.p as f32
    }

    /// How far the generator has advanced, in 32-bit words: save it with a checkpoint and give
    /// it back to [`SeededDropout::set_position`] so a resumed run draws the masks an
    /// uninterrupted one would have.
    ///
    /// # Errors
    /// When the generator's lock is poisoned.
    pub fn position(&self) -> Result<u128> {
        Ok(self.lock()?.get_word_pos())
    }

    /// Moves the generator to `position` (from [`SeededDropout::position`]).
    ///
    /// # Errors
    /// When the generator's lock is poisoned.
    pub fn set_position(&self, position: u128) -> Result<()> {
        self.lock()?.set_word_pos(position);
        Ok(())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, ChaCha8Rng>> {
        self.rng
            .lock()
            .map_err(|_| candle_core::Error::Msg("the dropout generator's lock is poisoned".into()))
    }
}

impl ModuleT for SeededDropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        // p = 0 draws nothing, so it leaves the stream where it was, like evaluation.
        if !train || self.p == 0.0 {
            return Ok(xs.clone());
        }
        if self.p == 1.0 {
            return xs.zeros_like();
        }
        let scale = 1.0 / (1.0 - self.p);
        let mask: Vec<f64> = {
            let mut rng = self.lock()?;
            (0..xs.elem_count())
                .map(|_| if unit(&mut rng) < self.p { 0.0 } else { scale })
                .collect()
        };
        let mask = Tensor::from_vec(mask, xs.shape(), &Device::Cpu)?
            .to_dtype(xs.dtype())?
            .to_device(xs.device())?;
        xs * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Var};

    fn ones(n: usize) -> Tensor {
        Tensor::ones(n, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn same_seed_and_name_same_masks() {
        let x = ones(64);
        let run = |seed, name| {
            let d = SeededDropout::new(0.5, seed, name).unwrap();
            let a = d.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap();
            let b = d.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap();
            (a, b)
        };
        let (a, b) = run(1, "d");
        assert_eq!((a.clone(), b.clone()), run(1, "d"));
        // Successive calls draw fresh masks; other seeds and names other masks.
        assert_ne!(a, b);
        assert_ne!(a, run(2, "d").0);
        assert_ne!(a, run(1, "e").0);
    }

    #[test]
    fn torch_semantics() {
        let n = 100_000;
        let x = ones(n);
        let d = SeededDropout::new(0.3, 0, "d").unwrap();
        assert_eq!(d.forward_t(&x, false).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; n]);
        let y = d.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap();
        let kept = (1.0 / 0.7) as f32;
        assert!(y.iter().all(|&v| v == 0.0 || (v - kept).abs() < 1e-6));
        let dropped = y.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        assert!((dropped - 0.3).abs() < 0.01, "{dropped}");
        // The expectation is kept.
        let mean = y.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");

        let zero = SeededDropout::new(0.0, 0, "d").unwrap();
        assert_eq!(zero.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; n]);
        let all = SeededDropout::new(1.0, 0, "d").unwrap();
        assert_eq!(all.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap(), vec![0.0; n]);
        assert!(SeededDropout::new(1.5, 0, "d").is_err());
        assert!(SeededDropout::new(f32::NAN, 0, "d").is_err());
    }

    #[test]
    fn gradient_is_the_mask() {
        let x = Var::from_tensor(&Tensor::arange(1f32, 9.0, &Device::Cpu).unwrap()).unwrap();
        let d = SeededDropout::new(0.5, 3, "d").unwrap();
        let y = d.forward_t(x.as_tensor(), true).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let y = y.to_vec1::<f32>().unwrap();
        for (i, (&gi, &yi)) in g.iter().zip(&y).enumerate() {
            assert_eq!(gi * (i as f32 + 1.0), yi);
            assert!(gi == 0.0 || gi == 2.0);
        }
    }

    #[test]
    fn position_resumes_the_stream() {
        let x = ones(32);
        let d = SeededDropout::new(0.5, 7, "d").unwrap();
        d.forward_t(&x, true).unwrap();
        let pos = d.position().unwrap();
        let next = d.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap();
        let resumed = SeededDropout::new(0.5, 7, "d").unwrap();
        resumed.set_position(pos).unwrap();
        assert_eq!(resumed.forward_t(&x, true).unwrap().to_vec1::<f32>().unwrap(), next);
        // Clones share the generator.
        let before = d.position().unwrap();
        let c = d.clone();
        c.forward_t(&x, true).unwrap();
        assert_ne!(d.position().unwrap(), before);
    }
}
