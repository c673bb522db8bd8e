//! The generators and discriminators: the synthesis report's Keras GAN ([`Arch::Seed`]) and
//! DCGAN ([`Arch::Dcgan`], the pytorch/examples recipe at 64x64, 128x128 or any power of two
//! from 32), optionally conditioned on CelebA attributes.
//!
//! Parameter names follow the reference implementations so their checkpoints load: DCGAN's
//! `main.<index>` of pytorch/examples' `nn.Sequential` (`main.0.weight`, `main.1.running_mean`,
//! ...), and for the seed GAN the Keras layer order under descriptive names. A conditional DCGAN
//! adds `embed.weight` to each network: in the generator the attribute vector is appended to the
//! latent (the first transposed convolution sees `latent + attributes` channels, so its weight is
//! `main.0.weight` of that width), and the discriminator is a projection discriminator (Miyato
//! and Koyama, 2018): its logit gains `<embed(y), sum_hw phi(x)>`, `y` the attributes in
//! `{-1, +1}`.
//!
//! Both networks return logits for the discriminator and `tanh` images in `[-1, 1]` for the
//! generator; the losses ([`crate::step`]) are the numerically stable logit forms.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, IndexOp, Module, ModuleT, Tensor, D};
use candle_nn::{Init, VarBuilder};
use deeprecog_attributes::Attribute;
use deeprecog_nn::conv::{Conv2dParams, ConvTranspose2dParams};
use deeprecog_nn::dropout::SeededDropout;
use deeprecog_nn::layers::Linear;
use deeprecog_nn::layers::{Conv2d, ConvTranspose2d};
use deeprecog_nn::norm::{BatchNorm, BatchNormConfig};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which network family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The synthesis report's Keras GAN (after Chollet's *Deep Learning with Python*): Dense ->
    /// Reshape -> Conv2D / Conv2DTranspose with LeakyReLU -> tanh; Conv2D + LeakyReLU, Flatten,
    /// Dropout, Dense.
    Seed,
    /// DCGAN (Radford et al.; pytorch/examples' `dcgan`), transposed convolutions + BatchNorm.
    Dcgan,
}

/// Everything that fixes the two networks' shapes (saved with every checkpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GanConfig {
    /// The network family.
    pub arch: Arch,
    /// Generated image side, in pixels (seed: even, at least 24; DCGAN: a power of two >= 32).
    pub image_size: usize,
    /// Image channels (3).
    pub channels: usize,
    /// Latent dimension (the report's 32; DCGAN's `nz` 100).
    pub latent_dim: usize,
    /// Generator width: the seed's convolution channels (256; its Dense reshapes to half), or
    /// DCGAN's `ngf` (64).
    pub g_width: usize,
    /// Discriminator width: the seed's channels (128), or DCGAN's `ndf` (64).
    pub d_width: usize,
    /// Attributes the model is conditioned on (empty: unconditional). DCGAN only.
    #[serde(default)]
    pub conditions: Vec<Attribute>,
    /// Spectral normalisation of every discriminator weight (Miyato et al., 2018).
    #[serde(default)]
    pub spectral_norm: bool,
    /// The seed discriminator's dropout before its Dense layer (Keras: 0.4).
    #[serde(default = "default_dropout")]
    pub dropout: f32,
    /// LeakyReLU's negative slope: Keras's default 0.3 for the seed, 0.2 for DCGAN.
    pub leaky_slope: f64,
}

fn default_dropout() -> f32 {
    0.4
}

impl GanConfig {
    /// The report's GAN at `image_size` (Chollet's recipe is 32x32): latent 32, widths 256/128.
    pub fn seed(image_size: usize) -> GanConfig {
        GanConfig {
            arch: Arch::Seed,
            image_size,
            channels: 3,
            latent_dim: 32,
            g_width: 256,
            d_width: 128,
            conditions: Vec::new(),
            spectral_norm: false,
            dropout: 0.4,
            leaky_slope: 0.3,
        }
    }

    /// pytorch/examples' DCGAN at `image_size` (64 is the original): nz 100, ngf = ndf = 64.
    pub fn dcgan(image_size: usize) -> GanConfig {
        GanConfig {
            arch: Arch::Dcgan,
            image_size,
            channels: 3,
            latent_dim: 100,
            g_width: 64,
            d_width: 64,
            conditions: Vec::new(),
            spectral_norm: false,
            dropout: 0.0,
            leaky_slope: 0.2,
        }
    }

    /// A DCGAN conditioned on `attributes` (generator input + projection discriminator).
    pub fn conditional(image_size: usize, attributes: Vec<Attribute>) -> GanConfig {
        GanConfig { conditions: attributes, ..GanConfig::dcgan(image_size) }
    }

    /// The same networks at other widths (CPU-sized runs use narrower ones).
    pub fn with_widths(mut self, g_width: usize, d_width: usize) -> GanConfig {
        self.g_width = g_width;
        self.d_width = d_width;
        self
    }

    /// Parses the command line's `seed | dcgan64 | dcgan128 | dcgan<N> | cond | cond<N>`
    /// (`cond` is a 64x64 conditional DCGAN; its attributes are set afterwards).
    ///
    /// # Errors
    /// [`Error::Config`] for any other name.
    pub fn from_arch_name(name: &str) -> Result<GanConfig> {
        let size = |digits: &str, default: usize| -> Result<usize> {
            if digits.is_empty() {
                return Ok(default);
            }
            digits.parse().map_err(|_| Error::Config(format!("architecture `{name}`")))
        };
        let config = if let Some(rest) = name.strip_prefix("seed") {
            GanConfig::seed(size(rest, 32)?)
        } else if let Some(rest) = name.strip_prefix("dcgan") {
            GanConfig::dcgan(size(rest, 64)?)
        } else if let Some(rest) = name.strip_prefix("cond") {
            GanConfig::conditional(size(rest, 64)?, Vec::new())
        } else {
            return Err(Error::Config(format!(
                "unknown architecture `{name}` (seed, dcgan64, dcgan128, cond)"
            )));
        };
        config.validate()?;
        Ok(config)
    }

    /// Whether the networks take an attribute vector.
    pub fn is_conditional(&self) -> bool {
        !self.conditions.is_empty()
    }

    /// Checks sizes and combinations.
    ///
    /// # Errors
    /// [`Error::Config`] naming what does not fit.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.channels == 0 || self.latent_dim == 0 || self.g_width == 0 || self.d_width == 0 {
            return bad("channels, latent_dim and widths must be positive".into());
        }
        match self.arch {
            Arch::Seed => {
                if self.image_size < 24 || !self.image_size.is_multiple_of(2) {
                    return bad(format!(
                        "the seed GAN needs an even image size >= 24 (its discriminator has four valid convolutions), got {}",
                        self.image_size
                    ));
                }
                if self.is_conditional() {
                    return bad("conditioning is implemented for DCGAN (arch cond)".into());
                }
                if self.g_width < 2 {
                    return bad("the seed generator needs g_width >= 2".into());
                }
            }
            Arch::Dcgan => {
                if self.image_size < 32 || !self.image_size.is_power_of_two() {
                    return bad(format!(
                        "DCGAN needs a power-of-two image size >= 32, got {}",
                        self.image_size
                    ));
                }
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} outside [0, 1)", self.dropout));
        }
        Ok(())
    }

    /// DCGAN's number of stride-2 stages between 4x4 and the image size.
    fn dcgan_stages(&self) -> usize {
        (self.image_size / 4).trailing_zeros() as usize
    }
}

fn leaky(x: &Tensor, slope: f64) -> Result<Tensor> {
    Ok(deeprecog_nn::activation::leaky_relu(x, slope)?)
}

/// Attribute targets `{0, 1}` (as datasets give them) to the `{-1, +1}` the networks take.
pub fn signed_conditions(targets: &Tensor) -> Result<Tensor> {
    Ok(targets.to_dtype(DType::F32)?.affine(2.0, -1.0)?)
}

/// The generator: latent `(N, latent_dim)` (and attributes `(N, K)` in `{-1, +1}` when
/// conditional) to images `(N, channels, size, size)` in `[-1, 1]`.
#[derive(Debug, Clone)]
pub struct Generator {
    config: GanConfig,
    body: GeneratorBody,
}

#[derive(Debug, Clone)]
enum GeneratorBody {
    Seed { dense: Linear, convs: Vec<Conv2d>, deconv: ConvTranspose2d, out: Conv2d },
    Dcgan { deconvs: Vec<ConvTranspose2d>, norms: Vec<BatchNorm> },
}

fn bn(channels: usize, vb: VarBuilder) -> Result<BatchNorm> {
    // PyTorch's defaults; the weight starts at N(1, 0.02) as DCGAN's weights_init sets it.
    let weight = vb.get_with_hints(channels, "weight", Init::Randn { mean: 1.0, stdev: 0.02 })?;
    let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
    let mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
    let var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
    Ok(BatchNorm::new(weight, bias, mean, var, BatchNormConfig::default())?)
}

const DCGAN_INIT: Init = Init::Randn { mean: 0.0, stdev: 0.02 };

fn deconv(
    cin: usize,
    cout: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<ConvTranspose2d> {
    let weight = vb.get_with_hints((cin, cout, 4, 4), "weight", DCGAN_INIT)?;
    let cfg = ConvTranspose2dParams { stride, padding, ..Default::default() };
    Ok(ConvTranspose2d::new(weight, None, cfg))
}

/// Keras's default initialisers: Glorot-uniform kernels, zero biases.
fn glorot(fan_in: usize, fan_out: usize) -> Init {
    let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

fn keras_conv(
    cin: usize,
    cout: usize,
    k: usize,
    cfg: Conv2dParams,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let weight =
        vb.get_with_hints((cout, cin, k, k), "weight", glorot(cin * k * k, cout * k * k))?;
    let bias = vb.get_with_hints(cout, "bias", Init::Const(0.0))?;
    Ok(Conv2d::new(weight, Some(bias), cfg))
}

fn same(k: usize) -> Conv2dParams {
    Conv2dParams { padding: k / 2, ..Default::default() }
}

impl Generator {
    /// Builds the generator of `config` (variables under `vb`, PyTorch names).
    ///
    /// # Errors
    /// An invalid configuration, or variables of the wrong shape in `vb`.
    pub fn new(config: &GanConfig, vb: VarBuilder) -> Result<Generator> {
        config.validate()?;
        let c = config;
        let body = match c.arch {
            Arch::Seed => {
                let half = c.image_size / 2;
                let dense_ch = c.g_width / 2;
                let units = dense_ch * half * half;
                let dense = {
                    let vb = vb.pp("dense");
                    let w = vb.get_with_hints(
                        (units, c.latent_dim),
                        "weight",
                        glorot(c.latent_dim, units),
                    )?;
                    let b = vb.get_with_hints(units, "bias", Init::Const(0.0))?;
                    Linear::new(w, Some(b))
                };
                let conv1 = keras_conv(dense_ch, c.g_width, 5, same(5), vb.pp("conv1"))?;
                let deconv = {
                    let vb = vb.pp("deconv");
                    let (cin, cout) = (c.g_width, c.g_width);
                    let w = vb.get_with_hints(
                        (cin, cout, 4, 4),
                        "weight",
                        glorot(cout * 16, cin * 16),
                    )?;
                    let b = vb.get_with_hints(cout, "bias", Init::Const(0.0))?;
                    let cfg = ConvTranspose2dParams { stride: 2, padding: 1, ..Default::default() };
                    ConvTranspose2d::new(w, Some(b), cfg)
                };
                let conv2 = keras_conv(c.g_width, c.g_width, 5, same(5), vb.pp("conv2"))?;
                let conv3 = keras_conv(c.g_width, c.g_width, 5, same(5), vb.pp("conv3"))?;
                let out = keras_conv(c.g_width, c.channels, 7, same(7), vb.pp("out"))?;
                GeneratorBody::Seed { dense, convs: vec![conv1, conv2, conv3], deconv, out }
            }
            Arch::Dcgan => {
                let stages = c.dcgan_stages();
                let vb = vb.pp("main");
                let mut deconvs = Vec::new();
                let mut norms = Vec::new();
                let mut cin = c.latent_dim + c.conditions.len();
                let mut cout = c.g_width << (stages - 1);
                for i in 0..stages {
                    let (stride, padding) = if i == 0 { (1, 0) } else { (2, 1) };
                    deconvs.push(deconv(cin, cout, stride, padding, vb.pp(3 * i))?);
                    norms.push(bn(cout, vb.pp(3 * i + 1))?);
                    cin = cout;
                    cout /= 2;
                }
                deconvs.push(deconv(cin, c.channels, 2, 1, vb.pp(3 * stages))?);
                GeneratorBody::Dcgan { deconvs, norms }
            }
        };
        Ok(Generator { config: config.clone(), body })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &GanConfig {
        &self.config
    }

    /// Generates images from `latent` (and `conditions` in `{-1, +1}` when conditional);
    /// `train` selects BatchNorm's batch statistics (and updates the running ones).
    ///
    /// # Errors
    /// Wrong input shapes, a missing or unexpected condition.
    pub fn forward(
        &self,
        latent: &Tensor,
        conditions: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let c = &self.config;
        let (n, d) = latent.dims2()?;
        if d != c.latent_dim {
            return Err(Error::Config(format!(
                "latent of width {d}, the model takes {}",
                c.latent_dim
            )));
        }
        let input = match (c.is_conditional(), conditions) {
            (false, None) => latent.clone(),
            (true, Some(y)) => {
                let (ny, k) = y.dims2()?;
                if ny != n || k != c.conditions.len() {
                    return Err(Error::Config(format!(
                        "conditions {:?} for {n} latents of a model with {} attributes",
                        y.dims(),
                        c.conditions.len()
                    )));
                }
                Tensor::cat(&[latent, &y.to_dtype(latent.dtype())?], 1)?
            }
            (false, Some(_)) => {
                return Err(Error::Config("conditions given to an unconditional generator".into()))
            }
            (true, None) => {
                return Err(Error::Config("a conditional generator needs conditions".into()))
            }
        };
        match &self.body {
            GeneratorBody::Seed { dense, convs, deconv, out } => {
                let half = c.image_size / 2;
                let mut x = leaky(&dense.forward(&input)?, c.leaky_slope)?;
                x = x.reshape((n, c.g_width / 2, half, half))?;
                x = leaky(&convs[0].forward(&x)?, c.leaky_slope)?;
                x = leaky(&deconv.forward(&x)?, c.leaky_slope)?;
                x = leaky(&convs[1].forward(&x)?, c.leaky_slope)?;
                x = leaky(&convs[2].forward(&x)?, c.leaky_slope)?;
                Ok(out.forward(&x)?.tanh()?)
            }
            GeneratorBody::Dcgan { deconvs, norms } => {
                let mut x = input.reshape((n, input.dim(1)?, 1, 1))?;
                for (dc, norm) in deconvs.iter().zip(norms) {
                    x = norm.forward_relu_t(&dc.forward(&x)?, train)?;
                }
                let last = deconvs.last().ok_or_else(|| Error::Config("empty generator".into()))?;
                Ok(last.forward(&x)?.tanh()?)
            }
        }
    }
}

/// A convolution whose weight is optionally divided by its spectral norm, estimated by one
/// power iteration per training forward pass (PyTorch's `spectral_norm`: `weight_orig`, with
/// `u` and `v` kept outside the optimizer).
#[derive(Debug, Clone)]
struct SnConv {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dParams,
    power: Option<Arc<Mutex<(Tensor, Tensor)>>>,
}

impl SnConv {
    fn new(
        shape: (usize, usize, usize, usize),
        init: Init,
        bias: bool,
        config: Conv2dParams,
        spectral: bool,
        vb: VarBuilder,
    ) -> Result<SnConv> {
        let weight =
            vb.get_with_hints(shape, if spectral { "weight_orig" } else { "weight" }, init)?;
        let bias =
            if bias { Some(vb.get_with_hints(shape.0, "bias", Init::Const(0.0))?) } else { None };
        let power = if spectral {
            // Deterministic unit start vectors; the iteration forgets them within a few steps.
            let rows = shape.0;
            let cols = shape.1 * shape.2 * shape.3;
            let u = Tensor::ones(rows, DType::F32, weight.device())?
                .affine(1.0 / (rows as f64).sqrt(), 0.0)?;
            let v = Tensor::ones(cols, DType::F32, weight.device())?
                .affine(1.0 / (cols as f64).sqrt(), 0.0)?;
            Some(Arc::new(Mutex::new((u, v))))
        } else {
            None
        };
        Ok(SnConv { weight, bias, config, power })
    }

    fn effective_weight(&self, train: bool) -> Result<Tensor> {
        let Some(power) = &self.power else { return Ok(self.weight.clone()) };
        let rows = self.weight.dim(0)?;
        let w = self.weight.reshape((rows, ()))?;
        let mut guard =
            power.lock().map_err(|_| Error::Config("poisoned spectral-norm state".into()))?;
        if train {
            let wd = w.detach();
            let (u, _) = &*guard;
            let v = normalize(&wd.t()?.matmul(&u.unsqueeze(1)?)?.squeeze(1)?)?;
            let u = normalize(&wd.matmul(&v.unsqueeze(1)?)?.squeeze(1)?)?;
            *guard = (u, v);
        }
        let (u, v) = &*guard;
        let sigma = u.unsqueeze(0)?.matmul(&w.matmul(&v.unsqueeze(1)?)?)?.reshape(())?;
        Ok(self.weight.broadcast_div(&sigma)?)
    }

    /// With `frozen` the weight enters as a constant: the backward pass computes no gradient
    /// for it (see [`Discriminator::forward_frozen`]).
    fn forward(&self, x: &Tensor, train: bool, frozen: bool) -> Result<Tensor> {
        let w = self.effective_weight(train)?;
        let w = if frozen { w.detach() } else { w };
        let conv = Conv2d::new(w, self.bias.clone(), self.config);
        Ok(conv.forward(x)?)
    }

    fn power_state(&self) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        let Some(power) = &self.power else { return Ok(None) };
        let guard =
            power.lock().map_err(|_| Error::Config("poisoned spectral-norm state".into()))?;
        Ok(Some((guard.0.to_vec1()?, guard.1.to_vec1()?)))
    }

    fn set_power_state(&self, u: &[f32], v: &[f32]) -> Result<()> {
        let Some(power) = &self.power else { return Ok(()) };
        let mut guard =
            power.lock().map_err(|_| Error::Config("poisoned spectral-norm state".into()))?;
        if u.len() != guard.0.elem_count() || v.len() != guard.1.elem_count() {
            return Err(Error::Config("spectral-norm state of the wrong size".into()));
        }
        let device = self.weight.device();
        *guard = (Tensor::new(u, device)?, Tensor::new(v, device)?);
        Ok(())
    }
}

fn normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_all()?.sqrt()?.affine(1.0, 1e-12)?;
    Ok(x.broadcast_div(&norm)?)
}

/// The discriminator: images `(N, channels, size, size)` in `[-1, 1]` (and attributes in
/// `{-1, +1}` when conditional) to logits `(N,)`.
#[derive(Debug, Clone)]
pub struct Discriminator {
    config: GanConfig,
    convs: Vec<SnConv>,
    norms: Vec<Option<BatchNorm>>,
    dense: Option<(Tensor, Tensor)>,
    dropout: Option<SeededDropout>,
    embed: Option<Tensor>,
}

impl Discriminator {
    /// Builds the discriminator of `config`; `seed` keys the seed GAN's dropout stream.
    ///
    /// # Errors
    /// An invalid configuration, or variables of the wrong shape in `vb`.
    pub fn new(config: &GanConfig, seed: u64, vb: VarBuilder) -> Result<Discriminator> {
        config.validate()?;
        let c = config;
        let sn = c.spectral_norm;
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        let mut dense = None;
        let mut dropout = None;
        let mut embed = None;
        match c.arch {
            Arch::Seed => {
                let w = c.d_width;
                let valid = Conv2dParams::default();
                let s2 = Conv2dParams { stride: 2, ..Default::default() };
                let specs = [(c.channels, 3, valid), (w, 4, s2), (w, 4, s2), (w, 4, s2)];
                let mut side = c.image_size;
                for (i, (cin, k, cfg)) in specs.into_iter().enumerate() {
                    let init = glorot(cin * k * k, w * k * k);
                    convs.push(SnConv::new(
                        (w, cin, k, k),
                        init,
                        true,
                        cfg,
                        sn,
                        vb.pp(format!("conv{}", i + 1)),
                    )?);
                    norms.push(None);
                    side = (side - k) / cfg.stride + 1;
                }
                let flat = w * side * side;
                let vbd = vb.pp("dense");
                let weight = vbd.get_with_hints((1, flat), "weight", glorot(flat, 1))?;
                let bias = vbd.get_with_hints(1, "bias", Init::Const(0.0))?;
                dense = Some((weight, bias));
                if c.dropout > 0.0 {
                    dropout = Some(SeededDropout::new(c.dropout, seed, "discriminator.dropout")?);
                }
            }
            Arch::Dcgan => {
                let stages = c.dcgan_stages();
                let vbm = vb.pp("main");
                let s2 = Conv2dParams { stride: 2, padding: 1, ..Default::default() };
                convs.push(SnConv::new(
                    (c.d_width, c.channels, 4, 4),
                    DCGAN_INIT,
                    false,
                    s2,
                    sn,
                    vbm.pp(0),
                )?);
                norms.push(None);
                let mut cin = c.d_width;
                for i in 1..stages {
                    let cout = cin * 2;
                    convs.push(SnConv::new(
                        (cout, cin, 4, 4),
                        DCGAN_INIT,
                        false,
                        s2,
                        sn,
                        vbm.pp(3 * i - 1),
                    )?);
                    // Spectral normalisation replaces BatchNorm in the discriminator.
                    norms.push(if sn { None } else { Some(bn(cout, vbm.pp(3 * i))?) });
                    cin = cout;
                }
                let last = Conv2dParams::default();
                convs.push(SnConv::new(
                    (1, cin, 4, 4),
                    DCGAN_INIT,
                    false,
                    last,
                    sn,
                    vbm.pp(3 * stages - 1),
                )?);
                norms.push(None);
                if c.is_conditional() {
                    let k = c.conditions.len();
                    embed = Some(vb.pp("embed").get_with_hints(
                        (cin, k),
                        "weight",
                        Init::Randn { mean: 0.0, stdev: 0.02 },
                    )?);
                }
            }
        }
        Ok(Discriminator { config: config.clone(), convs, norms, dense, dropout, embed })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &GanConfig {
        &self.config
    }

    /// The logits `(N,)` of `images` being real.
    ///
    /// # Errors
    /// Wrong input shapes, a missing or unexpected condition.
    pub fn forward(
        &self,
        images: &Tensor,
        conditions: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        self.logits(images, conditions, train, false)
    }

    /// [`Discriminator::forward`] with the convolution, dense and embedding weights entering as
    /// constants: a backward pass from these logits reaches `images` (and through them the
    /// generator) but computes no gradient for those weights. The generator's step discards
    /// them, and on DCGAN's shapes they are half of the discriminator's backward pass
    /// (PyTorch users get the same saving with `requires_grad_(False)` around that step).
    /// Logits, input gradients, BatchNorm statistics and spectral-norm power iterations are
    /// those of `forward`, bit for bit.
    ///
    /// # Errors
    /// As [`Discriminator::forward`].
    pub fn forward_frozen(
        &self,
        images: &Tensor,
        conditions: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        self.logits(images, conditions, train, true)
    }

    fn logits(
        &self,
        images: &Tensor,
        conditions: Option<&Tensor>,
        train: bool,
        frozen: bool,
    ) -> Result<Tensor> {
        let constant = |t: &Tensor| if frozen { t.detach() } else { t.clone() };
        let c = &self.config;
        let (n, ch, h, w) = images.dims4()?;
        if ch != c.channels || h != c.image_size || w != c.image_size {
            return Err(Error::Config(format!(
                "images {:?}, the discriminator takes (N, {}, {}, {})",
                images.dims(),
                c.channels,
                c.image_size,
                c.image_size
            )));
        }
        if c.is_conditional() != conditions.is_some() {
            return Err(Error::Config(if c.is_conditional() {
                "a conditional discriminator needs conditions".into()
            } else {
                "conditions given to an unconditional discriminator".into()
            }));
        }
        let slope = c.leaky_slope;
        let mut x = images.clone();
        match c.arch {
            Arch::Seed => {
                for conv in &self.convs {
                    x = leaky(&conv.forward(&x, train, frozen)?, slope)?;
                }
                x = x.flatten_from(1)?;
                if let Some(d) = &self.dropout {
                    x = d.forward_t(&x, train)?;
                }
                let (weight, bias) =
                    self.dense.as_ref().ok_or_else(|| Error::Config("no dense layer".into()))?;
                let (weight, bias) = (constant(weight), constant(bias));
                Ok(x.matmul(&weight.t()?)?.broadcast_add(&bias)?.squeeze(1)?)
            }
            Arch::Dcgan => {
                let last = self.convs.len() - 1;
                for (conv, norm) in self.convs[..last].iter().zip(&self.norms) {
                    x = conv.forward(&x, train, frozen)?;
                    x = match norm {
                        Some(norm) => norm.forward_leaky_relu_t(&x, train, slope)?,
                        None => leaky(&x, slope)?,
                    };
                }
                let mut logits = self.convs[last].forward(&x, train, frozen)?.reshape(n)?;
                if let (Some(embed), Some(y)) = (&self.embed, conditions) {
                    let features = x.sum((2, 3))?;
                    let projected = y.to_dtype(x.dtype())?.matmul(&constant(embed).t()?)?;
                    logits = (logits + (features * projected)?.sum(D::Minus1)?)?;
                }
                Ok(logits)
            }
        }
    }

    /// The seed dropout's stream position and the spectral-norm vectors: what a resume needs
    /// beyond the variables.
    pub(crate) fn state(&self) -> Result<serde_json::Value> {
        let dropout = match &self.dropout {
            Some(d) => Some(d.position()?.to_string()),
            None => None,
        };
        let mut power = Vec::new();
        for conv in &self.convs {
            power.push(conv.power_state()?);
        }
        Ok(serde_json::json!({ "dropout": dropout, "spectral_norm": power }))
    }

    pub(crate) fn load_state(&self, state: &serde_json::Value) -> Result<()> {
        if let (Some(d), Some(pos)) = (&self.dropout, state["dropout"].as_str()) {
            let pos: u128 =
                pos.parse().map_err(|_| Error::Config(format!("dropout position `{pos}`")))?;
            d.set_position(pos)?;
        }
        if let Some(items) = state["spectral_norm"].as_array() {
            for (conv, item) in self.convs.iter().zip(items) {
                if let Ok(Some((u, v))) =
                    serde_json::from_value::<Option<(Vec<f32>, Vec<f32>)>>(item.clone())
                {
                    conv.set_power_state(&u, &v)?;
                }
            }
        }
        Ok(())
    }
}

/// Draws `n` latent vectors `N(0, 1)` from the stream of `(seed, name)`: the same on every
/// device and run.
pub fn latents(n: usize, dim: usize, seed: u64, name: &str, device: &Device) -> Result<Tensor> {
    let normal = Init::Randn { mean: 0.0, stdev: 1.0 };
    Ok(deeprecog_nn::init::init_tensor(normal, &(n, dim).into(), seed, name, DType::F32, device)?)
}

/// Linear interpolation grid: `rows` pairs of latents, `cols` steps from one end to the other,
/// `(rows * cols, dim)` in row-major order (one row per pair).
///
/// # Errors
/// Fewer than two columns, or shapes that do not match.
pub fn interpolation_grid(start: &Tensor, end: &Tensor, cols: usize) -> Result<Tensor> {
    if cols < 2 {
        return Err(Error::Config("an interpolation needs at least 2 columns".into()));
    }
    let (rows, dim) = start.dims2()?;
    if end.dims() != [rows, dim] {
        return Err(Error::Config("interpolation ends of different shapes".into()));
    }
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let (a, b) = (start.i(r)?, end.i(r)?);
        for c in 0..cols {
            let t = c as f64 / (cols - 1) as f64;
            out.push(((&a * (1.0 - t))? + (&b * t)?)?);
        }
    }
    Ok(Tensor::stack(&out, 0)?)
}
