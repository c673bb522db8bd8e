//! Grad-CAM: where in the image a classifier looked for its answer.
//!
//! Gradient-weighted Class Activation Mapping (Selvaraju et al. 2017, "Grad-CAM: Visual
//! Explanations from Deep Networks via Gradient-based Localization", ICCV,
//! arXiv:1610.02391) weighs each channel `k` of the last convolutional feature map `A` by how
//! much the chosen output's logit `y` depends on it, averaged over the map,
//! `alpha_k = mean_ij dy / dA_k[i, j]`, and keeps the positive evidence:
//! `cam = ReLU(sum_k alpha_k A_k)`. The coarse map (the feature map's `H' x W'`) is upsampled
//! bilinearly to the input size (PyTorch's `F.interpolate(mode="bilinear",
//! align_corners=False)`) and scaled to `[0, 1]`.
//!
//! Every [`ZooModel`] works: the feature map is its [`ZooModel::forward_features`] and the
//! logit comes from [`ZooModel::forward_head`] (timm's split), both in eval mode.
//! [`overlay`] draws the map over the image in the jet colour map, for a `gradcam.png`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use deeprecog_classifiers::zoo::{self, ModelName, ZooConfig};
//! use deeprecog_dataset::Image;
//! use deeprecog_detector::gradcam::{grad_cam, overlay};
//!
//! let cfg = ZooConfig { input: (3, 32, 48), ..ZooConfig::new(ModelName::Scratch(2)) };
//! let built = zoo::build(&cfg, &VarMap::new(), &Device::Cpu)?;
//! let x = Tensor::rand(0f32, 1.0, (1, 3, 32, 48), &Device::Cpu)?;
//! let cam = grad_cam(&built.model, &x, 0)?;
//! assert_eq!((cam.width, cam.height, cam.heatmap.len()), (48, 32, 32 * 48));
//! assert!(cam.heatmap.iter().all(|v| (0.0..=1.0).contains(v)));
//! let picture = overlay(&Image::filled(48, 32, 3, 128)?, &cam, 0.4)?;
//! assert_eq!((picture.width(), picture.height(), picture.channels()), (48, 32, 3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{DType, Tensor, Var};
use deeprecog_classifiers::zoo::ZooModel;
use deeprecog_dataset::Image;

use crate::{Error, Result};

/// A Grad-CAM heat map at the input's size.
#[derive(Debug, Clone, PartialEq)]
pub struct GradCam {
    /// Row-major `height x width` values in `[0, 1]`: 1 where the evidence for the output is
    /// strongest. All zero when no location speaks for it (the ReLU removed everything); all
    /// one when the evidence is the same everywhere (a 1x1 feature map, say).
    pub heatmap: Vec<f32>,
    /// Width of the map (the input's).
    pub width: usize,
    /// Height of the map (the input's).
    pub height: usize,
    /// The explained output's logit, `forward_t(input, false)[0, output]`.
    pub logit: f32,
}

/// The coarse map before upsampling: `cam` is row-major `height x width` (the feature map's
/// size), not normalised.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LowResCam {
    pub(crate) cam: Vec<f32>,
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) logit: f32,
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidConfig { what: "Grad-CAM input", reason: reason.into() }
}

/// Grad-CAM of `model`'s output `output` for one image.
///
/// `input` is the normalised `(1, C, H, W)` batch the model takes (the model's own
/// normalisation applied). The model runs in eval mode. The map explains the raw logit: for a
/// binary model, output 0 shows the evidence for the positive class ("fake"); the evidence for
/// the other class is not the complement of this map.
///
/// # Errors
/// [`Error::InvalidConfig`] when `input` is not one image of rank 4, when `output` is not one
/// of the model's outputs, or when the feature map or its gradient are not finite;
/// [`Error::Candle`] when the model's forward or backward pass fails.
pub fn grad_cam(model: &ZooModel, input: &Tensor, output: usize) -> Result<GradCam> {
    let (_, _, height, width) = input.dims4().map_err(|_| {
        invalid(format!("expected a (1, C, H, W) batch, got shape {:?}", input.dims()))
    })?;
    let low = low_res_cam(model, input, output)?;
    let up = upsample_bilinear(&low.cam, (low.height, low.width), (height, width));
    Ok(GradCam { heatmap: normalise(up), width, height, logit: low.logit })
}

/// The feature map, the gradient of the logit with respect to it, and the coarse map from them.
pub(crate) fn low_res_cam(model: &ZooModel, input: &Tensor, output: usize) -> Result<LowResCam> {
    let dims = input.dims();
    if dims.len() != 4 || dims[0] != 1 {
        return Err(invalid(format!("expected a (1, C, H, W) batch, got shape {dims:?}")));
    }
    let features = model.forward_features(input, false)?;
    let (_, channels, height, width) = features.dims4().map_err(|_| {
        invalid(format!("the model's feature map has shape {:?}, not rank 4", features.dims()))
    })?;
    // A leaf of its own, so that the backward pass stops at the feature map.
    let var = Var::from_tensor(&features.detach())?;
    let logits = model.forward_head(var.as_tensor(), false)?;
    let outputs = match logits.dims() {
        [1, n] => *n,
        other => return Err(invalid(format!("the model's logits have shape {other:?}"))),
    };
    if output >= outputs {
        return Err(invalid(format!("output {output} of a model with {outputs} outputs")));
    }
    let logit = logits.get(0)?.get(output)?;
    let grads = logit.backward()?;
    let to_vec = |t: &Tensor| -> Result<Vec<f32>> {
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    };
    let a = to_vec(var.as_tensor())?;
    // No gradient: the logit does not depend on the feature map at all.
    let da = match grads.get(var.as_tensor()) {
        Some(g) => to_vec(g)?,
        None => vec![0.0; a.len()],
    };
    if !a.iter().chain(&da).all(|v| v.is_finite()) {
        return Err(invalid("the feature map or its gradient holds NaN or infinite values"));
    }
    let logit = logit.to_dtype(DType::F32)?.to_scalar::<f32>()?;
    let cam = weighted_sum(&a, &da, channels, height * width);
    Ok(LowResCam { cam, width, height, logit })
}

/// `ReLU(sum_k alpha_k A_k)` with `alpha_k` the mean of channel `k`'s gradient; `a` and `da`
/// are `channels x positions`, row-major. Sums in f64.
fn weighted_sum(a: &[f32], da: &[f32], channels: usize, positions: usize) -> Vec<f32> {
    let mut cam = vec![0f64; positions];
    if positions == 0 {
        return Vec::new();
    }
    for k in 0..channels {
        let range = k * positions..(k + 1) * positions;
        let (Some(ak), Some(gk)) = (a.get(range.clone()), da.get(range)) else {
            break;
        };
        let alpha = gk.iter().map(|&g| f64::from(g)).sum::<f64>() / positions as f64;
        for (c, &v) in cam.iter_mut().zip(ak) {
            *c += alpha * f64::from(v);
        }
    }
    cam.into_iter().map(|v| v.max(0.0) as f32).collect()
}

/// The source coordinate of output index `dst` with PyTorch's `align_corners=False`: the
/// centre of output pixel `dst` in input pixels, clamped at 0 (torch's
/// `area_pixel_compute_source_index`), as (lower index, upper index, weight of the upper).
fn source_index(dst: usize, in_len: usize, out_len: usize) -> (usize, usize, f32) {
    let scale = in_len as f64 / out_len as f64;
    let src = (scale * (dst as f64 + 0.5) - 0.5).max(0.0);
    let last = in_len.saturating_sub(1);
    let i0 = (src.floor() as usize).min(last);
    let i1 = (i0 + 1).min(last);
    (i0, i1, (src - i0 as f64) as f32)
}

/// Bilinear resampling of a row-major `(h, w)` map to `(out_h, out_w)`, as PyTorch's
/// `F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)` (without
/// antialiasing). An empty source gives zeros.
pub(crate) fn upsample_bilinear(
    src: &[f32],
    (h, w): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Vec<f32> {
    if h == 0 || w == 0 || src.len() < h * w {
        return vec![0.0; out_h * out_w];
    }
    let cols: Vec<_> = (0..out_w).map(|x| source_index(x, w, out_w)).collect();
    let mut out = Vec::with_capacity(out_h * out_w);
    for y in 0..out_h {
        let (y0, y1, ly) = source_index(y, h, out_h);
        for &(x0, x1, lx) in &cols {
            let at = |yy: usize, xx: usize| src[yy * w + xx];
            let top = (1.0 - lx) * at(y0, x0) + lx * at(y0, x1);
            let bottom = (1.0 - lx) * at(y1, x0) + lx * at(y1, x1);
            out.push((1.0 - ly) * top + ly * bottom);
        }
    }
    out
}

/// Min-max scaling to `[0, 1]`; a constant map becomes all zero when it is zero, all one when
/// it is positive.
fn normalise(mut map: Vec<f32>) -> Vec<f32> {
    let (min, max) =
        map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if map.is_empty() || max <= 0.0 {
        map.iter_mut().for_each(|v| *v = 0.0);
    } else if max - min <= f32::EPSILON * max {
        map.iter_mut().for_each(|v| *v = 1.0);
    } else {
        map.iter_mut().for_each(|v| *v = ((*v - min) / (max - min)).clamp(0.0, 1.0));
    }
    map
}

/// The jet colour map (as MATLAB's and matplotlib's `jet`, piecewise linear): dark blue at 0,
/// cyan, yellow, dark red at 1. Values outside `[0, 1]` are clamped.
pub fn jet(value: f32) -> [u8; 3] {
    let v = if value.is_finite() { value.clamp(0.0, 1.0) } else { 0.0 };
    let channel = |centre: f32| ((1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0) * 255.0).round();
    [channel(3.0) as u8, channel(2.0) as u8, channel(1.0) as u8]
}

/// `image` (as RGB) with `cam`'s heat map in the [`jet`] colour map blended over it:
/// `(1 - alpha) * image + alpha * jet(heat)`. The heat map is resized bilinearly to the image
/// when their sizes differ (a crop shown at another size, say).
///
/// # Errors
/// [`Error::InvalidConfig`] when `alpha` is not in `[0, 1]` or the heat map does not hold
/// `width * height` values.
pub fn overlay(image: &Image, cam: &GradCam, alpha: f32) -> Result<Image> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidConfig {
            what: "Grad-CAM overlay alpha",
            reason: format!("{alpha} is not in [0, 1]"),
        });
    }
    if cam.width == 0 || cam.height == 0 || cam.heatmap.len() != cam.width * cam.height {
        return Err(Error::InvalidConfig {
            what: "Grad-CAM heat map",
            reason: format!("{} values for a {}x{} map", cam.heatmap.len(), cam.width, cam.height),
        });
    }
    let rgb = image.to_rgb();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let resized;
    let heat = if (w, h) == (cam.width, cam.height) {
        &cam.heatmap
    } else {
        resized = upsample_bilinear(&cam.heatmap, (cam.height, cam.width), (h, w));
        &resized
    };
    let mut data = rgb.into_bytes();
    for (pixel, &v) in data.chunks_exact_mut(3).zip(heat) {
        for (p, c) in pixel.iter_mut().zip(jet(v)) {
            let blended = (1.0 - alpha) * f32::from(*p) + alpha * f32::from(c);
            *p = blended.round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(Image::from_raw(w as u32, h as u32, 3, data)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{ModuleT, VarMap};
    use deeprecog_classifiers::zoo::{self, ModelName, ZooConfig};
    use deeprecog_classifiers::{ResNetDepth, Task};

    fn randn(shape: (usize, usize, usize, usize)) -> Tensor {
        // A fixed, input-like pattern (no RNG needed): smooth stripes plus a ramp.
        let (n, c, h, w) = shape;
        let data: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i as f32) * 0.37).sin() + (i % w) as f32 / w as f32 - 0.5)
            .collect();
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// (a) MobileNetV2 features with a head that is global average pooling and one Linear
    /// (`head_hidden: []`): `dy/dA_k[i, j] = w[output, k] / (H' W')`, so Grad-CAM is
    /// `ReLU(sum_k w[output, k] / (H' W') * A_k)` and follows from the features and the final
    /// weight alone, computed here in plain Rust.
    #[test]
    fn matches_the_closed_form_for_a_pooling_and_linear_head() {
        let dev = Device::Cpu;
        let (h, w) = (64, 96);
        let cfg = ZooConfig {
            input: (3, h, w),
            task: Task::MultiClass(3),
            head_hidden: vec![],
            seed: 5,
            ..ZooConfig::new(ModelName::MobileNetV2)
        };
        let varmap = VarMap::new();
        let built = zoo::build(&cfg, &varmap, &dev).unwrap();
        let x = randn((1, 3, h, w));
        // A random network in eval mode with BatchNorm's initial statistics lets the
        // activations die out; a few train-mode passes give it statistics of its own.
        for _ in 0..5 {
            built.model.forward_t(&x, true).unwrap();
        }
        let features = built.model.forward_features(&x, false).unwrap();
        let (_, k, fh, fw) = features.dims4().unwrap();
        assert_eq!((fh, fw), (2, 3));
        let a = features.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let weight = varmap.data().lock().unwrap()["head.out.weight"].as_tensor().clone();
        assert_eq!(weight.dims(), &[3, k]);
        let logits = built.model.forward_t(&x, false).unwrap().to_vec2::<f32>().unwrap();
        let mut some_positive = false;
        for (output, &logit) in logits[0].iter().enumerate() {
            let wk = weight.get(output).unwrap().to_vec1::<f32>().unwrap();
            let expected: Vec<f32> = (0..fh * fw)
                .map(|p| {
                    let s: f64 = (0..k)
                        .map(|c| {
                            f64::from(wk[c]) / (fh * fw) as f64 * f64::from(a[c * fh * fw + p])
                        })
                        .sum();
                    s.max(0.0) as f32
                })
                .collect();
            let low = low_res_cam(&built.model, &x, output).unwrap();
            assert_eq!((low.height, low.width), (fh, fw));
            for (got, want) in low.cam.iter().zip(&expected) {
                assert!(
                    (got - want).abs() < 1e-5,
                    "output {output}: {:?} vs {expected:?}",
                    low.cam
                );
            }
            assert!((low.logit - logit).abs() < 1e-5);
            some_positive |= expected.iter().any(|&v| v > 1e-4);
        }
        assert!(some_positive, "the features died out: the check would be vacuous");
    }

    /// (b) PyTorch's bilinear resampling with `align_corners=False`. The expected numbers are
    /// torch's: `F.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
    /// mode="bilinear", align_corners=False)`, likewise `[[0, 1, 2], [3, 4, 5]]` to size
    /// `(3, 5)` and `[[1, 2, 3, 4]]` to `(1, 2)`; by hand, output index `d` samples
    /// `max(0, in / out * (d + 0.5) - 0.5)`, e.g. 3 -> 5 columns: 0, 0.4, 1.0, 1.6, 2.2 (-> 2).
    #[test]
    fn bilinear_matches_torch_without_aligned_corners() {
        let close = |got: Vec<f32>, want: &[f32]| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        };
        close(
            upsample_bilinear(&[1., 2., 3., 4.], (2, 2), (4, 4)),
            &[
                1.0, 1.25, 1.75, 2.0, //
                1.5, 1.75, 2.25, 2.5, //
                2.5, 2.75, 3.25, 3.5, //
                3.0, 3.25, 3.75, 4.0,
            ],
        );
        close(
            upsample_bilinear(&[0., 1., 2., 3., 4., 5.], (2, 3), (3, 5)),
            &[
                0.0, 0.4, 1.0, 1.6, 2.0, //
                1.5, 1.9, 2.5, 3.1, 3.5, //
                3.0, 3.4, 4.0, 4.6, 5.0,
            ],
        );
        close(upsample_bilinear(&[1., 2., 3., 4.], (1, 4), (1, 2)), &[1.5, 3.5]);
        // Same size: the identity.
        close(upsample_bilinear(&[1., 2., 3.], (1, 3), (1, 3)), &[1., 2., 3.]);
    }

    #[test]
    fn normalisation_and_colour_map() {
        assert_eq!(normalise(vec![0.0, 2.0, 1.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(normalise(vec![0.0; 4]), vec![0.0; 4]);
        assert_eq!(normalise(vec![0.3; 3]), vec![1.0; 3]);
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(f32::NAN), jet(0.0));
        // Hand-checked coarse map: alpha = (mean gradient) = (1, -0.5); cam = ReLU(A0 - A1/2).
        let a = [1.0, 2.0, 0.0, 4.0, 2.0, 2.0];
        let da = [1.0, 1.0, 1.0, -0.5, -0.5, -0.5];
        assert_eq!(weighted_sum(&a, &da, 2, 3), vec![0.0, 1.0, 0.0]);
    }

    /// (c) Shapes on a non-square input, for a standalone model and a backbone; the logit is
    /// the model's; bad inputs are errors.
    #[test]
    fn shapes_on_a_non_square_input() {
        let dev = Device::Cpu;
        for name in [ModelName::Scratch(2), ModelName::Meso4, ModelName::ResNet(ResNetDepth::R18)] {
            let (h, w) = (40, 56);
            let cfg = ZooConfig {
                input: (3, h, w),
                task: Task::MultiClass(2),
                head_hidden: vec![8],
                seed: 1,
                ..ZooConfig::new(name)
            };
            let built = zoo::build(&cfg, &VarMap::new(), &dev).unwrap();
            let x = randn((1, 3, h, w));
            let cam = grad_cam(&built.model, &x, 1).unwrap();
            assert_eq!((cam.width, cam.height, cam.heatmap.len()), (w, h, w * h), "{name}");
            assert!(cam.heatmap.iter().all(|v| (0.0..=1.0).contains(v)), "{name}");
            let logits = built.model.forward_t(&x, false).unwrap();
            let want = logits.get(0).unwrap().get(1).unwrap().to_scalar::<f32>().unwrap();
            assert!((cam.logit - want).abs() < 1e-6, "{name}");
            let err = grad_cam(&built.model, &x, 2).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
            let two = Tensor::cat(&[&x, &x], 0).unwrap();
            let err = grad_cam(&built.model, &two, 0).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
            let flat = x.flatten_from(1).unwrap();
            assert!(matches!(grad_cam(&built.model, &flat, 0), Err(Error::InvalidConfig { .. })));
        }
    }

    /// (d) The overlay has the image's size and three channels, whatever the map's size and
    /// the image's channels; alpha 0 leaves the image, alpha 1 is the colour map.
    #[test]
    fn overlay_sizes_and_blending() {
        let cam = GradCam {
            heatmap: vec![0.0, 0.5, 1.0, 0.0, 0.5, 1.0],
            width: 3,
            height: 2,
            logit: 0.0,
        };
        let gray = Image::filled(30, 20, 1, 100).unwrap();
        let out = overlay(&gray, &cam, 0.5).unwrap();
        assert_eq!((out.width(), out.height(), out.channels()), (30, 20, 3));
        assert_eq!(overlay(&gray, &cam, 0.0).unwrap(), gray.to_rgb());
        let rgb = Image::filled(3, 2, 3, 7).unwrap();
        let full = overlay(&rgb, &cam, 1.0).unwrap();
        assert_eq!(full.pixel(0, 0), Some(&jet(0.0)[..]));
        assert_eq!(full.pixel(2, 1), Some(&jet(1.0)[..]));
        let half = overlay(&rgb, &cam, 0.5).unwrap();
        assert_eq!(half.pixel(1, 0), Some(&[68, 131, 68][..]));
        for bad in [-0.1, 1.5, f32::NAN] {
            assert!(matches!(overlay(&rgb, &cam, bad), Err(Error::InvalidConfig { .. })));
        }
        let broken = GradCam { heatmap: vec![0.0; 5], ..cam };
        assert!(matches!(overlay(&rgb, &broken, 0.5), Err(Error::InvalidConfig { .. })));
    }
}
