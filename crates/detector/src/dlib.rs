//! dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`, the model
//! behind `face_recognition` and `dlib.face_recognition_model_v1`) ported to candle: a
//! 150x150 RGB face chip in, a 128-float descriptor out; two chips show the same person when
//! their Euclidean distance is below [`MATCH_THRESHOLD`].
//!
//! The weights are read straight from dlib's own serialization format (no conversion step):
//! the network structure is built here and every record of the file is checked against it,
//! so a corrupt, truncated or different network is an [`Error::Weights`] naming the layer.
//!
//! ```no_run
//! use std::path::Path;
//! use candle_core::Device;
//! use deeprecog_dataset::Image;
//! use deeprecog_detector::dlib::{distance, DlibFaceNet, MATCH_THRESHOLD};
//!
//! let net = DlibFaceNet::load(
//!     Path::new("assets/dlib/dlib_face_recognition_resnet_model_v1.dat"),
//!     &Device::Cpu,
//! )?;
//! let a = Image::open(Path::new("a_chip.png"))?.to_rgb();
//! let b = Image::open(Path::new("b_chip.png"))?.to_rgb();
//! let d = net.embed(&[a, b])?;
//! println!("same person: {}", distance(&d[0], &d[1]) < MATCH_THRESHOLD);
//! # Ok::<(), deeprecog_detector::Error>(())
//! ```

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use deeprecog_dataset::Image;
use deeprecog_nn::conv::{conv2d, Conv2dParams};

use crate::{Error, Result};

/// Side of the square RGB face chips the network takes (dlib's `input_rgb_image_sized<150>`).
pub const CHIP_SIZE: u32 = 150;

/// Euclidean distance under which two descriptors are the same person (dlib's documented
/// threshold for this model: 99.38% on LFW).
pub const MATCH_THRESHOLD: f32 = 0.6;

/// Length of a descriptor.
const DIM: usize = 128;

/// Euclidean distance between two descriptors.
pub fn distance(a: &[f32; 128], b: &[f32; 128]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
}

/// One layer of the network as dlib lists it, top (output) first.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Spec {
    Fc,
    AvgAll,
    Relu,
    AddPrev1,
    AddPrev2,
    AvgPool2,
    Skip1,
    Tag1,
    Tag2,
    Affine,
    Con { n: usize, k: usize, stride: usize, pad: usize },
    MaxPool,
}

impl Spec {
    /// Tags and skips are bookkeeping layers: dlib stores a version for them but no record.
    fn is_bookkeeping(self) -> bool {
        matches!(self, Spec::Tag1 | Spec::Tag2 | Spec::Skip1)
    }
}

/// A residual block's two convolutions, top-down (`affine, con, relu, affine, con`).
fn block(n: usize, stride: usize) -> [Spec; 5] {
    // dlib's con_ pads by k/2 only at stride 1; the stride-2 convolutions are unpadded.
    let pad = if stride == 1 { 1 } else { 0 };
    [
        Spec::Affine,
        Spec::Con { n, k: 3, stride: 1, pad: 1 },
        Spec::Relu,
        Spec::Affine,
        Spec::Con { n, k: 3, stride, pad },
    ]
}

/// `ares`: relu(x + block(x)).
fn ares(net: &mut Vec<Spec>, n: usize) {
    net.extend([Spec::Relu, Spec::AddPrev1]);
    net.extend(block(n, 1));
    net.push(Spec::Tag1);
}

/// `ares_down`: relu(avgpool(x) + block_stride2(x)).
fn ares_down(net: &mut Vec<Spec>, n: usize) {
    net.extend([Spec::Relu, Spec::AddPrev2, Spec::AvgPool2, Spec::Skip1, Spec::Tag2]);
    net.extend(block(n, 2));
    net.push(Spec::Tag1);
}

/// The whole network below the loss, top-down, exactly as dlib's example
/// `dnn_face_recognition_ex.cpp` declares it.
fn structure() -> Vec<Spec> {
    let mut net = vec![Spec::Fc, Spec::AvgAll];
    ares_down(&mut net, 256);
    for (n, count) in [(256, 2), (128, 2), (64, 3)] {
        for _ in 0..count {
            ares(&mut net, n);
        }
        // Top-down, each level's plain blocks sit above the block that down-sampled into it.
        ares_down(&mut net, n);
    }
    for _ in 0..3 {
        ares(&mut net, 32);
    }
    net.extend([
        Spec::MaxPool,
        Spec::Relu,
        Spec::Affine,
        Spec::Con { n: 32, k: 7, stride: 2, pad: 0 },
    ]);
    net
}

/// Reads dlib's serialization primitives with bounds checks; errors are plain reasons that
/// the loader prefixes with the file and the layer.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

/// dlib's 4-d tensor header.
type Dims = [i64; 4];

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!(
                "file ends at byte {} while reading {n} bytes at {}",
                self.bytes.len(),
                self.pos
            )
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// An integer: a control byte (low 4 bits: byte count 1..8; 0x80: negative), then the
    /// magnitude little-endian.
    fn int(&mut self) -> Result<i64, String> {
        let at = self.pos;
        let c = self.take(1)?[0];
        let n = usize::from(c & 0x0f);
        if !(1..=8).contains(&n) || c & 0x70 != 0 {
            return Err(format!("bad integer control byte {c:#04x} at byte {at}"));
        }
        let mut magnitude = 0u64;
        for (i, &b) in self.take(n)?.iter().enumerate() {
            magnitude |= u64::from(b) << (8 * i);
        }
        let v = i64::try_from(magnitude).map_err(|_| format!("integer at byte {at} overflows"))?;
        Ok(if c & 0x80 != 0 { -v } else { v })
    }

    /// A non-negative integer that is a size or count.
    fn size(&mut self) -> Result<usize, String> {
        let at = self.pos;
        let v = self.int()?;
        usize::try_from(v).map_err(|_| format!("negative size {v} at byte {at}"))
    }

    /// A float: mantissa and base-2 exponent, both integers.
    fn float(&mut self) -> Result<f64, String> {
        let at = self.pos;
        let m = self.int()?;
        let e = self.int()?;
        // dlib marks inf/nan with exponents from 32000 up; no weight file needs them.
        if e.abs() >= 32000 {
            return Err(format!("non-finite or out-of-range float at byte {at}"));
        }
        Ok(m as f64 * 2f64.powi(e as i32))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.size()?;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    fn bool(&mut self) -> Result<bool, String> {
        let at = self.pos;
        match self.take(1)?[0] {
            b'1' => Ok(true),
            b'0' => Ok(false),
            c => Err(format!("bad bool byte {c:#04x} at byte {at}")),
        }
    }

    fn dims(&mut self, version: i64, what: &str) -> Result<Dims, String> {
        let at = self.pos;
        let v = self.int()?;
        if v != version {
            return Err(format!("{what} version {v} at byte {at}, expected {version}"));
        }
        Ok([self.int()?, self.int()?, self.int()?, self.int()?])
    }

    /// A tensor: version 2, (n, k, nr, nc), then the values as little-endian f32.
    fn tensor(&mut self) -> Result<Vec<f32>, String> {
        let at = self.pos;
        let dims = self.dims(2, "tensor")?;
        let count = dims
            .iter()
            .try_fold(1usize, |acc, &d| usize::try_from(d).ok().and_then(|d| acc.checked_mul(d)))
            .ok_or_else(|| format!("bad tensor shape {dims:?} at byte {at}"))?;
        let bytes = self.take(count.checked_mul(4).ok_or("tensor too large")?)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    }

    /// An alias tensor: version 1 and its shape (its offset is implicit).
    fn alias(&mut self) -> Result<Dims, String> {
        self.dims(1, "alias_tensor")
    }

    fn expect_name(&mut self, want: &str) -> Result<(), String> {
        let at = self.pos;
        let got = self.string()?;
        if got != want {
            return Err(format!("record \"{got}\" at byte {at}, expected \"{want}\""));
        }
        Ok(())
    }
}

/// One layer ready to run, bottom-up.
enum Op {
    Conv { w: Tensor, b: Tensor, stride: usize, pad: usize },
    Affine { gamma: Tensor, beta: Tensor },
    Relu,
    MaxPool,
    AvgPool2,
    AvgAll,
    Fc { w: Tensor, b: Option<Tensor> },
    Tag1,
    Tag2,
    Skip1,
    AddPrev1,
    AddPrev2,
}

/// dlib's face-recognition ResNet (29 convolutions, 128-float descriptors).
pub struct DlibFaceNet {
    ops: Vec<Op>,
    /// Per-channel means subtracted from the input pixels (R, G, B).
    avg: [f32; 3],
    device: Device,
}

impl std::fmt::Debug for DlibFaceNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlibFaceNet")
            .field("layers", &self.ops.len())
            .field("avg", &self.avg)
            .finish()
    }
}

/// Checks a read value against the structure.
fn want<T: PartialEq + std::fmt::Debug>(what: &str, got: T, expected: T) -> Result<(), String> {
    if got == expected {
        Ok(())
    } else {
        Err(format!("{what} is {got:?}, expected {expected:?}"))
    }
}

impl DlibFaceNet {
    /// Reads `dlib_face_recognition_resnet_model_v1.dat` onto `device`.
    pub fn load(path: &Path, device: &Device) -> Result<DlibFaceNet> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path, device)
    }

    fn from_bytes(bytes: &[u8], path: &Path, device: &Device) -> Result<DlibFaceNet> {
        let fail = |at: &str, reason: String| Error::Weights {
            path: PathBuf::from(path),
            reason: format!("{at}: {reason}"),
        };
        let net = structure();
        let mut r = Reader::new(bytes);
        // Header: the loss layer, then (serialization recurses before the details) one version
        // per layer top-down, then the input layer.
        let mut versions = Vec::with_capacity(net.len());
        let header = (|| -> Result<[f32; 3], String> {
            want("loss layer version", r.int()?, 1)?;
            r.expect_name("loss_metric_2")?;
            let _margin = r.float()?;
            let _distance_threshold = r.float()?;
            for (i, spec) in net.iter().take(net.len() - 1).enumerate() {
                let v = r.int()?;
                let expected = if spec.is_bookkeeping() { 1 } else { 2 };
                want(&format!("layer {i} ({spec:?}) version"), v, expected)?;
                versions.push(v);
            }
            want("bottom layer version", r.int()?, 3)?;
            r.expect_name("input_rgb_image_sized")?;
            let avg = [r.float()? as f32, r.float()? as f32, r.float()? as f32];
            want("input rows", r.size()?, CHIP_SIZE as usize)?;
            want("input columns", r.size()?, CHIP_SIZE as usize)?;
            Ok(avg)
        })();
        let avg = header.map_err(|e| fail("header", e))?;

        let mut ops = Vec::with_capacity(net.len());
        let (mut ch, mut tag1, mut tag2) = (3usize, 3usize, 3usize);
        for i in (0..net.len()).rev() {
            let spec = net[i];
            let bottom = i == net.len() - 1;
            let at = format!("layer {i} ({spec:?}, counted from the output)");
            let mut layer = || -> Result<Op, String> {
                let op = match spec {
                    Spec::Tag1 => {
                        tag1 = ch;
                        return Ok(Op::Tag1);
                    }
                    Spec::Tag2 => {
                        tag2 = ch;
                        return Ok(Op::Tag2);
                    }
                    Spec::Skip1 => {
                        ch = tag1;
                        return Ok(Op::Skip1);
                    }
                    Spec::Con { n, k, stride, pad } => {
                        r.expect_name("con_4")?;
                        let params = r.tensor()?;
                        want("num_filters", r.size()?, n)?;
                        want("kernel rows", r.size()?, k)?;
                        want("kernel columns", r.size()?, k)?;
                        want("stride y", r.size()?, stride)?;
                        want("stride x", r.size()?, stride)?;
                        want("padding y", r.size()?, pad)?;
                        want("padding x", r.size()?, pad)?;
                        let dims = |v: [usize; 4]| v.map(|d| d as i64);
                        want("filters shape", r.alias()?, dims([n, ch, k, k]))?;
                        want("biases shape", r.alias()?, dims([1, n, 1, 1]))?;
                        for _ in 0..4 {
                            r.float()?;
                        }
                        let nw = n * ch * k * k;
                        want("parameter count", params.len(), nw + n)?;
                        let w = Tensor::from_slice(&params[..nw], (n, ch, k, k), device);
                        let b = Tensor::from_slice(&params[nw..], (1, n, 1, 1), device);
                        ch = n;
                        Op::Conv {
                            w: w.map_err(|e| e.to_string())?,
                            b: b.map_err(|e| e.to_string())?,
                            stride,
                            pad,
                        }
                    }
                    Spec::Affine => {
                        r.expect_name("affine_")?;
                        let params = r.tensor()?;
                        r.alias()?;
                        r.alias()?;
                        let _mode = r.int()?;
                        want("parameter count (gamma, beta)", params.len(), 2 * ch)?;
                        let gamma = Tensor::from_slice(&params[..ch], (1, ch, 1, 1), device);
                        let beta = Tensor::from_slice(&params[ch..], (1, ch, 1, 1), device);
                        Op::Affine {
                            gamma: gamma.map_err(|e| e.to_string())?,
                            beta: beta.map_err(|e| e.to_string())?,
                        }
                    }
                    Spec::Relu => {
                        r.expect_name("relu_")?;
                        Op::Relu
                    }
                    Spec::MaxPool | Spec::AvgPool2 | Spec::AvgAll => {
                        let (name, window, stride, op) = match spec {
                            Spec::MaxPool => ("max_pool_2", 3, 2, Op::MaxPool),
                            Spec::AvgPool2 => ("avg_pool_2", 2, 2, Op::AvgPool2),
                            _ => ("avg_pool_2", 0, 1, Op::AvgAll),
                        };
                        r.expect_name(name)?;
                        want("window rows", r.size()?, window)?;
                        want("window columns", r.size()?, window)?;
                        want("stride y", r.size()?, stride)?;
                        want("stride x", r.size()?, stride)?;
                        want("padding y", r.size()?, 0)?;
                        want("padding x", r.size()?, 0)?;
                        op
                    }
                    Spec::AddPrev1 | Spec::AddPrev2 => {
                        r.expect_name("add_prev_")?;
                        ch = ch.max(if spec == Spec::AddPrev1 { tag1 } else { tag2 });
                        if spec == Spec::AddPrev1 {
                            Op::AddPrev1
                        } else {
                            Op::AddPrev2
                        }
                    }
                    Spec::Fc => {
                        r.expect_name("fc_2")?;
                        want("num_outputs", r.size()?, DIM)?;
                        want("num_inputs", r.size()?, ch)?;
                        let params = r.tensor()?;
                        r.alias()?;
                        r.alias()?;
                        let _bias_mode = r.int()?;
                        for _ in 0..4 {
                            r.float()?;
                        }
                        // Weights are stored [inputs][outputs]; a bias, when present, is one
                        // more row.
                        let nw = ch * DIM;
                        let has_bias = params.len() == nw + DIM;
                        if !has_bias {
                            want("parameter count", params.len(), nw)?;
                        }
                        let w = Tensor::from_slice(&params[..nw], (ch, DIM), device)
                            .map_err(|e| e.to_string())?;
                        let b = if has_bias {
                            Some(
                                Tensor::from_slice(&params[nw..], (1, DIM), device)
                                    .map_err(|e| e.to_string())?,
                            )
                        } else {
                            None
                        };
                        Op::Fc { w, b }
                    }
                };
                // add_layer's state after the details: three flags and the training-time
                // tensors (gradients, cached output), empty in a saved model but skipped
                // whatever their size.
                for _ in 0..3 {
                    r.bool()?;
                }
                r.tensor()?;
                r.tensor()?;
                if bottom || versions.get(i).copied().unwrap_or(2) >= 2 {
                    r.tensor()?;
                }
                if bottom {
                    let _sample_expansion_factor = r.int()?;
                }
                Ok(op)
            };
            ops.push(layer().map_err(|e| fail(&at, e))?);
        }
        if r.pos != bytes.len() {
            return Err(fail(
                "end",
                format!("{} trailing bytes after the last layer", bytes.len() - r.pos),
            ));
        }
        Ok(DlibFaceNet { ops, avg, device: device.clone() })
    }

    /// Descriptors of 150x150 RGB face chips (aligned as dlib's `get_face_chip` cuts them),
    /// one per chip, not normalised.
    pub fn embed(&self, chips: &[Image]) -> Result<Vec<[f32; 128]>> {
        if chips.is_empty() {
            return Ok(Vec::new());
        }
        let side = CHIP_SIZE as usize;
        let plane = side * side;
        let mut input = vec![0f32; chips.len() * 3 * plane];
        for (i, chip) in chips.iter().enumerate() {
            if chip.width() != CHIP_SIZE || chip.height() != CHIP_SIZE || chip.channels() != 3 {
                return Err(Error::InvalidConfig {
                    what: "dlib face chip",
                    reason: format!(
                        "chip {i} is {}x{} with {} channels, expected {CHIP_SIZE}x{CHIP_SIZE} RGB",
                        chip.width(),
                        chip.height(),
                        chip.channels()
                    ),
                });
            }
            let out = &mut input[i * 3 * plane..(i + 1) * 3 * plane];
            for (p, px) in chip.as_bytes().chunks_exact(3).enumerate() {
                for c in 0..3 {
                    // dlib's input layer: (pixel - mean) / 256, planar.
                    out[c * plane + p] = (f32::from(px[c]) - self.avg[c]) / 256.0;
                }
            }
        }
        let x = Tensor::from_vec(input, (chips.len(), 3, side, side), &self.device)?;
        let out = self.forward(&x)?.to_vec2::<f32>()?;
        out.into_iter()
            .map(|row| {
                <[f32; 128]>::try_from(row).map_err(|row| Error::InvalidConfig {
                    what: "dlib descriptor",
                    reason: format!("network produced {} values, expected {DIM}", row.len()),
                })
            })
            .collect()
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (mut x, mut t1, mut t2) = (x.clone(), x.clone(), x.clone());
        for op in &self.ops {
            x = match op {
                Op::Conv { w, b, stride, pad } => {
                    let params =
                        Conv2dParams { stride: *stride, padding: *pad, ..Default::default() };
                    conv2d(&x, w, Some(b), params)?
                }
                Op::Affine { gamma, beta } => x.broadcast_mul(gamma)?.broadcast_add(beta)?,
                Op::Relu => x.relu()?,
                Op::MaxPool => x.max_pool2d_with_stride(3, 2)?,
                Op::AvgPool2 => x.avg_pool2d_with_stride(2, 2)?,
                Op::AvgAll => x.mean_keepdim(3)?.mean_keepdim(2)?,
                Op::Fc { w, b } => {
                    let y = x.flatten_from(1)?.matmul(w)?;
                    match b {
                        Some(b) => y.broadcast_add(b)?,
                        None => y,
                    }
                }
                Op::Tag1 => {
                    t1 = x.clone();
                    x
                }
                Op::Tag2 => {
                    t2 = x.clone();
                    x
                }
                Op::Skip1 => t1.clone(),
                Op::AddPrev1 => zpad_add(&x, &t1)?,
                Op::AddPrev2 => zpad_add(&x, &t2)?,
            };
        }
        Ok(x)
    }
}

/// dlib's `add_prev` on differently shaped inputs: both are zero-padded at the end of the
/// channel, row and column axes to the larger of each, then added (the down-sampling blocks
/// add a 64-channel 17x17 shortcut to a 128-channel 8x8 branch this way, for instance).
fn zpad_add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (mut a, mut b) = (a.clone(), b.clone());
    for d in 1..4 {
        let (da, db) = (a.dim(d)?, b.dim(d)?);
        let n = da.max(db);
        if da < n {
            a = a.pad_with_zeros(d, 0, n - da)?;
        }
        if db < n {
            b = b.pad_with_zeros(d, 0, n - db)?;
        }
    }
    Ok((a + b)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn int(bytes: &[u8]) -> i64 {
        let mut r = Reader::new(bytes);
        let v = r.int().unwrap();
        assert_eq!(r.pos, bytes.len());
        v
    }

    #[test]
    fn integers_decode() {
        assert_eq!(int(&[0x01, 0x01]), 1);
        assert_eq!(int(&[0x01, 0x96]), 150);
        assert_eq!(int(&[0x02, 0x80, 0x12]), 4736);
        assert_eq!(int(&[0x81, 0x1c]), -28);
        assert_eq!(int(&[0x01, 0x00]), 0);
        // Truncated and malformed ones are errors, not panics.
        assert!(Reader::new(&[0x02, 0x80]).int().is_err());
        assert!(Reader::new(&[0x00]).int().is_err());
        assert!(Reader::new(&[0x19, 0x00]).int().is_err());
        assert!(Reader::new(&[]).int().is_err());
    }

    #[test]
    fn floats_decode() {
        let bytes = [0x03, 0x0a, 0xd7, 0xa3, 0x81, 0x1c];
        let mut r = Reader::new(&bytes);
        let v = r.float().unwrap();
        assert_eq!(v, f64::from(0xA3D70A) * 2f64.powi(-28));
        assert!((v - 0.04).abs() < 1e-7, "{v}");
        assert_eq!(r.pos, bytes.len());
    }

    #[test]
    fn structure_has_29_convolutions_and_129_versions() {
        let net = structure();
        assert_eq!(net.len() - 1, 129);
        assert_eq!(net.iter().filter(|s| matches!(s, Spec::Con { .. })).count(), 29);
    }

    #[test]
    fn zpad_add_anchors_both_at_zero() {
        let dev = Device::Cpu;
        // a: 1 channel 1x1 = [5]; b: 2 channels 2x2 of ones.
        let a = Tensor::from_vec(vec![5f32], (1, 1, 1, 1), &dev).unwrap();
        let b = Tensor::ones((1, 2, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let s = zpad_add(&a, &b).unwrap();
        assert_eq!(s.dims(), &[1, 2, 2, 2]);
        let v: Vec<f32> = s.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![6., 1., 1., 1., 1., 1., 1., 1.]);
        // Mixed: a is larger in channels, b in space.
        let a = Tensor::from_vec(vec![1f32, 2.], (1, 2, 1, 1), &dev).unwrap();
        let b = Tensor::from_vec(vec![10f32, 20.], (1, 1, 1, 2), &dev).unwrap();
        let v: Vec<f32> = zpad_add(&a, &b).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![11., 20., 2., 0.]);
    }

    #[test]
    fn garbage_is_an_error() {
        let err = DlibFaceNet::from_bytes(&[0x01, 0x01, 0x05], Path::new("x.dat"), &Device::Cpu)
            .unwrap_err();
        assert!(err.to_string().contains("x.dat"), "{err}");
    }
}
