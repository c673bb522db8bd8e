//! Seeded weight initialisation: the same seed gives bit-identical initial weights.
//!
//! candle's CPU random number generator cannot be seeded, so `VarBuilder::from_varmap` draws
//! different initial weights on every run and a training run from scratch cannot be repeated
//! even though its seed is recorded. [`SeededVarMap`] is a drop-in backend for the same
//! [`VarMap`]: it draws every new variable's initial values from a ChaCha8 stream keyed by the
//! seed *and the variable's name*, so the values do not depend on the order in which layers are
//! built, and adding or renaming one layer leaves every other layer's values unchanged. It
//! implements every [`Init`] variant with the distributions of candle's `Init::var`.
//!
//! Values are drawn in `f64` on the host and then cast to the requested dtype and moved to the
//! requested device, so the same seed gives the same weights on the CPU and on a GPU.
//!
//! ```
//! use candle_core::{DType, Device};
//! use candle_nn::VarMap;
//! use deeprecog_nn::init::seeded_var_builder;
//!
//! let (a, b) = (VarMap::new(), VarMap::new());
//! let la = candle_nn::linear(4, 3, seeded_var_builder(&a, 7, DType::F32, &Device::Cpu))?;
//! let lb = candle_nn::linear(4, 3, seeded_var_builder(&b, 7, DType::F32, &Device::Cpu))?;
//! assert_eq!(la.weight().to_vec2::<f32>()?, lb.weight().to_vec2::<f32>()?);
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A [`VarMap`] whose new variables are initialised from a seeded generator instead of candle's
/// unseeded one.
///
/// Clones (and the `VarMap` it wraps) share storage: variables created through it are in the
/// `VarMap` given to [`SeededVarMap::new`], ready for `all_vars`, `save` and `load`. A variable
/// already in the map is returned as is (after a shape check), as `VarMap` does, so loading
/// weights before or after building works the same.
#[derive(Clone)]
pub struct SeededVarMap {
    varmap: VarMap,
    seed: u64,
}

impl std::fmt::Debug for SeededVarMap {
    // `VarMap` has no `Debug`; the seed and the variable count are what identify the state.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.varmap.data().lock().map(|d| d.len()).ok();
        f.debug_struct("SeededVarMap").field("seed", &self.seed).field("vars", &len).finish()
    }
}

impl SeededVarMap {
    /// Wraps `varmap` (sharing its storage) with `seed`.
    pub fn new(varmap: &VarMap, seed: u64) -> SeededVarMap {
        SeededVarMap { varmap: varmap.clone(), seed }
    }

    /// The seed new variables are drawn with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The wrapped map.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// A `VarBuilder` over this map: the seeded replacement for `VarBuilder::from_varmap`.
    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }
}

/// A `VarBuilder` that creates its variables in `varmap` with initial values drawn from `seed`:
/// the seeded replacement for `VarBuilder::from_varmap(varmap, dtype, device)`.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    SeededVarMap::new(varmap, seed).into_var_builder(dtype, device)
}

/// The tensor `init` gives for `shape`, drawn from the stream of `(seed, name)`: what
/// [`SeededVarMap`] puts in the map for a new variable. Deterministic for any dtype and device.
pub fn init_tensor(
    init: Init,
    shape: &Shape,
    seed: u64,
    name: &str,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n = shape.elem_count();
    let values = match init {
        // Constants need no stream; built like candle's so `Const(0)` and `Const(1)` are exact.
        Init::Const(0.0) => return Tensor::zeros(shape, dtype, device),
        Init::Const(1.0) => return Tensor::ones(shape, dtype, device),
        Init::Const(v) => return Tensor::ones(shape, dtype, device)?.affine(v, 0.0),
        Init::Uniform { lo, up } => uniform(&mut stream(seed, name), n, lo, up),
        Init::Randn { mean, stdev } => normal(&mut stream(seed, name), n, mean, stdev),
        Init::Kaiming { dist, fan, non_linearity } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(&mut stream(seed, name), n, -bound, bound)
                }
                NormalOrUniform::Normal => normal(&mut stream(seed, name), n, 0.0, std),
            }
        }
    };
    // Cast on the host so the device only receives the final dtype (half the bytes for F32).
    Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                bail!("shape mismatch on {name}: {s:?} <> {:?}", var.shape())
            }
            return Ok(var.as_tensor().clone());
        }
        let var = Var::from_tensor(&init_tensor(h, &s, self.seed, name, dtype, dev)?)?;
        let tensor = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        // Without a shape nothing can be created; an existing variable can still be handed out.
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("the VarMap's lock is poisoned".into()))?;
        match data.get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => {
                bail!("no variable {name} in the VarMap, and `get_unchecked` cannot create one")
            }
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        // A poisoned lock still guards a readable map; membership is all that is asked.
        let data = self.varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        data.contains_key(name)
    }
}

/// The generator of one variable: ChaCha8 with the seed as its key and a hash of the name as
/// its stream, so every variable has its own stream whatever order they are created in.
///
/// Part of the reproducibility contract (recorded seeds must keep meaning the same weights):
/// changing the key layout or the hash changes every seeded model.
pub(crate) fn stream(seed: u64, name: &str) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(fnv1a(name.as_bytes()));
    rng
}

/// 64-bit FNV-1a: tiny and fixed forever, unlike `std`'s `DefaultHasher`, whose output may
/// change between Rust releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A uniform draw in `[0, 1)` from the top 53 bits of one word (every value a multiple of
/// 2^-53, so the result is exact in `f64`).
pub(crate) fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f64, up: f64) -> Vec<f64> {
    (0..n).map(|_| lo + (up - lo) * unit(rng)).collect()
}

/// Box-Muller, both outputs of each pair used: exact normals with no dependency whose
/// algorithm could change under us.
fn normal(rng: &mut ChaCha8Rng, n: usize, mean: f64, std: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let r = (-2.0 * (1.0 - unit(rng)).ln()).sqrt();
        let theta = std::f64::consts::TAU * unit(rng);
        out.push(mean + std * r * theta.cos());
        out.push(mean + std * r * theta.sin());
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::init::{FanInOut, NonLinearity, DEFAULT_KAIMING_NORMAL};
    use candle_nn::{Module, Optimizer};

    fn values(varmap: &VarMap, name: &str) -> Vec<f32> {
        let data = varmap.data().lock().unwrap();
        data[name].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn mean_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    fn build(varmap: &VarMap, seed: u64, order: &[&str]) {
        let vb = seeded_var_builder(varmap, seed, DType::F32, &Device::Cpu);
        for name in order {
            vb.get_with_hints((8, 5), name, DEFAULT_KAIMING_NORMAL).unwrap();
        }
    }

    #[test]
    fn same_seed_same_bits_other_seed_other_values() {
        let (a, b, c) = (VarMap::new(), VarMap::new(), VarMap::new());
        build(&a, 3, &["w"]);
        build(&b, 3, &["w"]);
        build(&c, 4, &["w"]);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(values(&a, "w")), bits(values(&b, "w")));
        assert_ne!(values(&a, "w"), values(&c, "w"));
    }

    #[test]
    fn values_depend_on_the_name_not_on_the_creation_order() {
        let (ab, ba) = (VarMap::new(), VarMap::new());
        build(&ab, 1, &["a", "b"]);
        build(&ba, 1, &["b", "a"]);
        assert_eq!(values(&ab, "a"), values(&ba, "a"));
        assert_eq!(values(&ab, "b"), values(&ba, "b"));
        // Two names under one seed are not the same stream.
        assert_ne!(values(&ab, "a"), values(&ab, "b"));
        // Adding a layer leaves the others alone.
        let abc = VarMap::new();
        build(&abc, 1, &["c", "a", "b"]);
        assert_eq!(values(&abc, "a"), values(&ab, "a"));
    }

    #[test]
    fn kaiming_uniform_has_the_right_spread() {
        // Conv weight (out 64, in 32, 3x3): fan_in 288, fan_out 576. ReLU gain sqrt(2).
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let init = Init::Kaiming {
            dist: NormalOrUniform::Uniform,
            fan: FanInOut::FanIn,
            non_linearity: NonLinearity::ReLU,
        };
        let w = vb.get_with_hints((64, 32, 3, 3), "conv", init).unwrap();
        let v = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = 2f64.sqrt() / 288f64.sqrt();
        let (mean, std) = mean_std(&v);
        assert!(mean.abs() < 0.05 * want, "mean {mean}");
        // 18432 samples: the std is within 2% (fan_out would be 29% off, no gain 41%).
        assert!((std / want - 1.0).abs() < 0.02, "std {std} vs {want}");
        let bound = 3f64.sqrt() * want;
        assert!(v.iter().all(|&x| f64::from(x).abs() <= bound + 1e-6));
        // Near the bound on both sides: uniform, not normal or half the range.
        let max = v.iter().fold(f32::MIN, |m, &x| m.max(x));
        let min = v.iter().fold(f32::MAX, |m, &x| m.min(x));
        assert!(f64::from(max) > 0.99 * bound && f64::from(min) < -0.99 * bound);

        // Normal Kaiming on fan_out with tanh's gain.
        let init = Init::Kaiming {
            dist: NormalOrUniform::Normal,
            fan: FanInOut::FanOut,
            non_linearity: NonLinearity::Tanh,
        };
        let w = vb.get_with_hints((64, 32, 3, 3), "conv_out", init).unwrap();
        let (mean, std) = mean_std(&w.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        let want = 5.0 / 3.0 / 576f64.sqrt();
        assert!(mean.abs() < 0.05 * want && (std / want - 1.0).abs() < 0.02, "{mean} {std}");
    }

    #[test]
    fn randn_uniform_and_constants() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 9, DType::F32, &Device::Cpu);
        let n = 100_001; // odd: the last Box-Muller pair is cut
        let init = Init::Randn { mean: 2.0, stdev: 0.5 };
        let v = vb.get_with_hints(n, "randn", init).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v.len(), n);
        let (mean, std) = mean_std(&v);
        assert!((mean - 2.0).abs() < 0.01 && (std - 0.5).abs() < 0.01, "{mean} {std}");
        // Normal, not uniform: about 68.3% within one standard deviation.
        let within = v.iter().filter(|&&x| (f64::from(x) - 2.0).abs() < 0.5).count();
        assert!((within as f64 / n as f64 - 0.683).abs() < 0.01);

        let init = Init::Uniform { lo: -1.0, up: 3.0 };
        let v = vb.get_with_hints(n, "uniform", init).unwrap().to_vec1::<f32>().unwrap();
        let (mean, std) = mean_std(&v);
        assert!(v.iter().all(|&x| (-1.0..3.0).contains(&x)));
        assert!((mean - 1.0).abs() < 0.02 && (std - 4.0 / 12f64.sqrt()).abs() < 0.02);

        for (c, name) in [(0.0, "zero"), (1.0, "one"), (-2.5, "c")] {
            let v = vb.get_with_hints(7, name, Init::Const(c)).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(v, vec![c as f32; 7]);
        }
    }

    #[test]
    fn existing_variables_are_reused_or_rejected_by_shape() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let first = vb.get_with_hints((2, 3), "w", DEFAULT_KAIMING_NORMAL).unwrap();
        // Same name and shape: the same variable, not a fresh draw.
        let again = vb.get_with_hints((2, 3), "w", Init::Const(5.0)).unwrap();
        assert_eq!(first.id(), again.id());
        let err = vb.get_with_hints((3, 2), "w", DEFAULT_KAIMING_NORMAL).unwrap_err();
        assert!(err.to_string().contains("w"), "{err}");
        assert!(err.to_string().contains("shape mismatch"), "{err}");
        assert!(vb.contains_tensor("w") && !vb.contains_tensor("v"));
        assert_eq!(varmap.all_vars().len(), 1);
    }

    #[test]
    fn builds_real_layers_reproducibly_and_trains_them() {
        let make = |seed| {
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
            let l1 = candle_nn::linear(6, 4, vb.pp("l1")).unwrap();
            let l2 = candle_nn::linear(4, 2, vb.pp("l2")).unwrap();
            (varmap, l1, l2)
        };
        let (m1, a1, a2) = make(11);
        let (m2, b1, b2) = make(11);
        let x = Tensor::arange(0f32, 12.0, &Device::Cpu).unwrap().reshape((2, 6)).unwrap();
        let ya = a2.forward(&a1.forward(&x).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let yb = b2.forward(&b1.forward(&x).unwrap()).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(ya, yb);
        for name in ["l1.weight", "l1.bias", "l2.weight", "l2.bias"] {
            assert_eq!(values(&m1, name), values(&m2, name), "{name}");
        }
        // The bias is drawn too (candle's linear uses a uniform bias init), and differs per seed.
        let (m3, _, _) = make(12);
        assert_ne!(values(&m1, "l1.bias"), values(&m3, "l1.bias"));
        // The variables are real `Var`s of the map: an optimizer step moves them.
        let loss = a2.forward(&a1.forward(&x).unwrap()).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut sgd = candle_nn::SGD::new(m1.all_vars(), 0.1).unwrap();
        sgd.step(&grads).unwrap();
        assert_ne!(values(&m1, "l2.bias"), values(&m2, "l2.bias"));
    }

    #[test]
    fn dtypes_are_casts_of_the_same_draw() {
        let shape = Shape::from((4, 4));
        let f64s =
            init_tensor(DEFAULT_KAIMING_NORMAL, &shape, 5, "w", DType::F64, &Device::Cpu).unwrap();
        let f32s =
            init_tensor(DEFAULT_KAIMING_NORMAL, &shape, 5, "w", DType::F32, &Device::Cpu).unwrap();
        assert_eq!(f64s.dtype(), DType::F64);
        assert_eq!(
            f64s.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(),
            f32s.to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn the_stream_is_pinned() {
        // Recorded seeds must keep meaning the same weights: a change here is a breaking change.
        let mut rng = stream(0, "w");
        assert_eq!(rng.next_u64(), 7_149_102_246_395_886_057);
        let mut rng = stream(42, "blocks.0.linear.weight");
        assert_eq!(rng.next_u64(), 7_989_071_982_570_538_275);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
