//! Face crops as the DFDC and FakeApp pipelines cut them: the detector's box grown by a margin,
//! made square, kept inside the image, optionally rotated so the eyes are level, and resized.
//!
//! ```
//! use deeprecog_dataset::face::FaceBox;
//! use deeprecog_dataset::Image;
//! use deeprecog_detector::crop::{crop_face, crop_region, CropConfig, Margin};
//! use deeprecog_detector::Detection;
//!
//! let image = Image::filled(200, 100, 3, 128).unwrap();
//! let face = Detection::new(FaceBox::new(80.0, 30.0, 40.0, 40.0), 0.9);
//! // The common "1.3x box": a 52-pixel square around the box's centre.
//! let region = crop_region(&face, 200, 100, &CropConfig::default()).unwrap();
//! assert_eq!(region, FaceBox::new(74.0, 24.0, 52.0, 52.0));
//! // Resized to 224 x 224 for a classifier.
//! let config = CropConfig { size: Some(224), ..CropConfig::default() };
//! let crop = crop_face(&image, &face, &config).unwrap();
//! assert_eq!((crop.image.width(), crop.image.height()), (224, 224));
//! // The DFDC winner's +30% on each side, not squared.
//! let dfdc = CropConfig { margin: Margin::PerSide(0.3), square: false, ..CropConfig::default() };
//! let region = crop_region(&face, 200, 100, &dfdc).unwrap();
//! assert_eq!(region, FaceBox::new(68.0, 18.0, 64.0, 64.0));
//! ```

use std::fmt;
use std::str::FromStr;

use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::transforms::Resize;
use deeprecog_dataset::Image;
use serde::{Deserialize, Serialize};

use crate::face::Detection;
use crate::{Error, Result};

/// How far a crop reaches past the detector's box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Margin {
    /// The crop side is this multiple of the box's larger side, centred on the box (1.3 = the
    /// common "1.3x box"). Without [`CropConfig::square`], each side is scaled by it instead.
    Scale(f32),
    /// Each side of the box is pushed out by this fraction of the box's size, as the DFDC
    /// winner's crops (+30%: 0.3); with [`CropConfig::square`] the longer result is then used
    /// for both sides.
    PerSide(f32),
}

impl Margin {
    fn validate(self) -> Result<()> {
        match self {
            Margin::Scale(s) if !(s.is_finite() && s > 0.0) => Err(Error::InvalidConfig {
                what: "crop margin",
                reason: format!("scale {s} is not a positive number"),
            }),
            Margin::PerSide(f) if !(f.is_finite() && f >= 0.0) => Err(Error::InvalidConfig {
                what: "crop margin",
                reason: format!("per-side margin {f} is not a number >= 0"),
            }),
            _ => Ok(()),
        }
    }

    /// The crop's size before clamping, for a box of `width` x `height`.
    fn grow(self, width: f64, height: f64, square: bool) -> (f64, f64) {
        let (w, h) = match self {
            Margin::Scale(s) if square => {
                let side = f64::from(s) * width.max(height);
                (side, side)
            }
            Margin::Scale(s) => (f64::from(s) * width, f64::from(s) * height),
            Margin::PerSide(f) => {
                let grow = 1.0 + 2.0 * f64::from(f);
                (width * grow, height * grow)
            }
        };
        if square {
            let side = w.max(h);
            (side, side)
        } else {
            (w, h)
        }
    }
}

/// How face crops are cut.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CropConfig {
    /// The margin around the detector's box.
    pub margin: Margin,
    /// Square crops (the box's centre stays the centre while the crop fits in the image).
    pub square: bool,
    /// The output side in pixels (the output is square, stretched if the crop is not);
    /// `None` keeps the crop's own size.
    pub size: Option<u32>,
    /// Rotate each crop about its centre so the eyes are level, for detectors that give eyes
    /// ([`Detection::eyes`]); crops of faces without eyes are cut unrotated.
    pub align_eyes: bool,
}

impl Default for CropConfig {
    /// The 1.3x square box at its own size, unrotated.
    fn default() -> Self {
        CropConfig { margin: Margin::Scale(1.3), square: true, size: None, align_eyes: false }
    }
}

impl CropConfig {
    /// Checks the margin (finite, scale > 0, per-side >= 0) and the output size (not 0).
    pub fn validate(&self) -> Result<()> {
        self.margin.validate()?;
        if self.size == Some(0) {
            return Err(Error::InvalidConfig {
                what: "crop size",
                reason: "the output side is 0".to_string(),
            });
        }
        Ok(())
    }
}

/// Which of an image's faces become crops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaceSelection {
    /// The face with the largest box (the subject, in a DFDC video).
    #[default]
    Largest,
    /// Every face.
    All,
    /// The face the detector is most sure of.
    Best,
}

impl FromStr for FaceSelection {
    type Err = Error;

    /// `largest`, `all` or `best`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "largest" => Ok(FaceSelection::Largest),
            "all" => Ok(FaceSelection::All),
            "best" => Ok(FaceSelection::Best),
            _ => Err(Error::InvalidConfig {
                what: "face selection",
                reason: format!("{s:?} is not one of largest, all, best"),
            }),
        }
    }
}

impl fmt::Display for FaceSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaceSelection::Largest => "largest",
            FaceSelection::All => "all",
            FaceSelection::Best => "best",
        })
    }
}

/// One face cut from an image.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceCrop {
    /// The crop (the source's channels).
    pub image: Image,
    /// The detection it was cut for.
    pub detection: Detection,
    /// The region cut from the source, in source pixels, after clamping (whole pixels). An
    /// eye-aligned crop is this region turned about its centre by the eyes' angle.
    pub region: FaceBox,
}

/// The faces `selection` keeps, in the order given (detectors give the best first). Ties go
/// to the earlier face; a NaN area or score never wins (if all are NaN, the first face does).
pub fn select(detections: &[Detection], selection: FaceSelection) -> Vec<&Detection> {
    let first_max = |key: fn(&Detection) -> f32| {
        let mut best: Option<(&Detection, f32)> = None;
        for d in detections {
            let k = key(d);
            if !k.is_nan() && best.is_none_or(|(_, b)| k > b) {
                best = Some((d, k));
            }
        }
        best.map(|(d, _)| d).or(detections.first()).into_iter().collect()
    };
    match selection {
        FaceSelection::All => detections.iter().collect(),
        FaceSelection::Largest => first_max(Detection::area),
        FaceSelection::Best => first_max(|d| d.score),
    }
}

/// The region a crop of `detection` takes from an `image_width` x `image_height` image:
/// the box grown by the margin around its centre, made square, then kept inside the image.
/// A crop that does not fit is shifted inside first; only a crop larger than the image is
/// shrunk (a square one to the image's shorter side, so it stays square). The result is in
/// whole pixels, at least 1 x 1.
///
/// Fails on an invalid config, an empty image, and a box that is not finite, is empty, or
/// lies entirely outside the image.
pub fn crop_region(
    detection: &Detection,
    image_width: u32,
    image_height: u32,
    config: &CropConfig,
) -> Result<FaceBox> {
    config.validate()?;
    let b = detection.bbox;
    if image_width == 0 || image_height == 0 {
        return Err(Error::InvalidConfig {
            what: "crop source",
            reason: format!("the image is {image_width}x{image_height}"),
        });
    }
    if ![b.x, b.y, b.width, b.height].iter().all(|v| v.is_finite())
        || b.width <= 0.0
        || b.height <= 0.0
    {
        return Err(Error::InvalidConfig {
            what: "face box",
            reason: format!("{b:?} is not a finite, non-empty box"),
        });
    }
    let (iw, ih) = (f64::from(image_width), f64::from(image_height));
    let (x, y, w, h) = (f64::from(b.x), f64::from(b.y), f64::from(b.width), f64::from(b.height));
    if x >= iw || y >= ih || x + w <= 0.0 || y + h <= 0.0 {
        return Err(Error::InvalidConfig {
            what: "face box",
            reason: format!("{b:?} lies outside the {image_width}x{image_height} image"),
        });
    }
    let (grown_w, grown_h) = config.margin.grow(w, h, config.square);
    let (mut cw, mut ch) = (grown_w.round().max(1.0), grown_h.round().max(1.0));
    if config.square {
        let side = cw.min(iw).min(ih);
        (cw, ch) = (side, side);
    } else {
        (cw, ch) = (cw.min(iw), ch.min(ih));
    }
    let place =
        |centre: f64, side: f64, limit: f64| (centre - side / 2.0).round().clamp(0.0, limit - side);
    let left = place(x + w / 2.0, cw, iw);
    let top = place(y + h / 2.0, ch, ih);
    Ok(FaceBox::new(left as f32, top as f32, cw as f32, ch as f32))
}

/// Cuts the crop of `detection` from `image` (see [`crop_region`] and [`CropConfig`]).
pub fn crop_face(image: &Image, detection: &Detection, config: &CropConfig) -> Result<FaceCrop> {
    let region = crop_region(detection, image.width(), image.height(), config)?;
    let eyes = if config.align_eyes { detection.eyes() } else { None };
    let cut = match eyes {
        Some((right, left)) => {
            if !right.iter().chain(&left).all(|v| v.is_finite()) {
                return Err(Error::InvalidConfig {
                    what: "eye keypoints",
                    reason: format!("{right:?} and {left:?} are not finite"),
                });
            }
            // From the subject's right eye (the image's left, upright) to the left one: turning
            // the crop by this angle levels them and keeps the right eye on the crop's left.
            let angle = f64::from(left[1] - right[1]).atan2(f64::from(left[0] - right[0]));
            rotated_region(image, &region, angle)
        }
        None => cut_region(image, &region),
    }?;
    // Turned crops are sampled at the region's own resolution and resized here like plain
    // ones: bilinear sampling straight to a much smaller size would alias, the resize does not.
    let image = match config.size {
        Some(side) if (cut.width(), cut.height()) != (side, side) => {
            Resize::new(side, side).resize(&cut)?
        }
        _ => cut,
    };
    Ok(FaceCrop { image, detection: detection.clone(), region })
}

/// The crops of the faces `selection` keeps, in the detections' order.
pub fn crop_faces(
    image: &Image,
    detections: &[Detection],
    selection: FaceSelection,
    config: &CropConfig,
) -> Result<Vec<FaceCrop>> {
    select(detections, selection).into_iter().map(|d| crop_face(image, d, config)).collect()
}

/// Copies the whole-pixel `region` (inside the image, as [`crop_region`] makes it).
fn cut_region(image: &Image, region: &FaceBox) -> Result<Image> {
    let (left, top) = (region.x as usize, region.y as usize);
    let (width, height) = (region.width as usize, region.height as usize);
    let channels = usize::from(image.channels());
    let stride = image.width() as usize * channels;
    let row_len = width * channels;
    let mut data = Vec::with_capacity(row_len * height);
    // The region is inside the image by construction; a short row would make `from_raw`
    // fail below rather than panic here.
    for row in image.as_bytes().chunks_exact(stride).skip(top).take(height) {
        let start = left * channels;
        data.extend_from_slice(row.get(start..start + row_len).unwrap_or_default());
    }
    Ok(Image::from_raw(width as u32, height as u32, image.channels(), data)?)
}

/// The `region`'s size sampled from `image` with the region turned by `angle` (radians, the
/// image's y axis pointing down) about its centre, bilinearly; outside the image is black.
///
/// Output pixel `(u, v)` sits at offset `(u + 0.5 - w / 2, v + 0.5 - h / 2)` from the centre
/// along the turned axes; sample positions are in continuous coordinates where pixel `(i, j)`
/// covers `[i, i + 1) x [j, j + 1)`.
fn rotated_region(image: &Image, region: &FaceBox, angle: f64) -> Result<Image> {
    let (width, height) = (region.width as u32, region.height as u32);
    let channels = usize::from(image.channels());
    let (src_w, src_h) = (image.width() as i64, image.height() as i64);
    let src = image.as_bytes();
    let (cx, cy) = (
        f64::from(region.x) + f64::from(region.width) / 2.0,
        f64::from(region.y) + f64::from(region.height) / 2.0,
    );
    let (sin, cos) = angle.sin_cos();
    let texel = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= src_w || y >= src_h {
            return 0.0;
        }
        let at = (y as usize * src_w as usize + x as usize) * channels + c;
        src.get(at).map_or(0.0, |v| f64::from(*v))
    };
    let mut data = Vec::with_capacity(width as usize * height as usize * channels);
    for v in 0..height {
        let dv = f64::from(v) + 0.5 - f64::from(height) / 2.0;
        for u in 0..width {
            let du = f64::from(u) + 0.5 - f64::from(width) / 2.0;
            // Back to the source's pixel-index space (centres on integers).
            let sx = cx + du * cos - dv * sin - 0.5;
            let sy = cy + du * sin + dv * cos - 0.5;
            bilinear_into(&texel, sx, sy, channels, &mut data);
        }
    }
    Ok(Image::from_raw(width, height, image.channels(), data)?)
}

/// Appends the bilinear sample at `(sx, sy)` (pixel-index space: centres on integers) of every
/// channel, rounded to `u8`; `texel(x, y, c)` says what lies at and beyond the borders.
pub(crate) fn bilinear_into(
    texel: &impl Fn(i64, i64, usize) -> f64,
    sx: f64,
    sy: f64,
    channels: usize,
    out: &mut Vec<u8>,
) {
    let (x0, y0) = (sx.floor(), sy.floor());
    let (fx, fy) = (sx - x0, sy - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    for c in 0..channels {
        let top = texel(x0, y0, c) * (1.0 - fx) + texel(x0 + 1, y0, c) * fx;
        let bottom = texel(x0, y0 + 1, c) * (1.0 - fx) + texel(x0 + 1, y0 + 1, c) * fx;
        out.push((top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, w: f32, h: f32) -> Detection {
        Detection::new(FaceBox::new(x, y, w, h), 0.9)
    }

    fn region(d: &Detection, w: u32, h: u32, config: &CropConfig) -> [f32; 4] {
        let r = crop_region(d, w, h, config).unwrap();
        [r.x, r.y, r.width, r.height]
    }

    /// An image whose every pixel encodes its position, to check what a crop copied.
    fn gradient(width: u32, height: u32) -> Image {
        let data = (0..height)
            .flat_map(|y| (0..width).flat_map(move |x| [x as u8, y as u8, (x + y) as u8]))
            .collect();
        Image::from_raw(width, height, 3, data).unwrap()
    }

    #[test]
    fn centred_box_grows_around_its_centre() {
        let config = CropConfig::default();
        assert_eq!(
            region(&face(80.0, 80.0, 40.0, 40.0), 200, 200, &config),
            [74.0, 74.0, 52.0, 52.0]
        );
        // The larger side sets the square; the centre stays.
        assert_eq!(
            region(&face(80.0, 70.0, 40.0, 60.0), 200, 200, &config),
            [61.0, 61.0, 78.0, 78.0]
        );
        let stretch = CropConfig { square: false, ..config };
        assert_eq!(
            region(&face(80.0, 70.0, 40.0, 60.0), 200, 200, &stretch),
            [74.0, 61.0, 52.0, 78.0]
        );
    }

    #[test]
    fn boxes_near_an_edge_are_shifted_inside_and_stay_square() {
        let config = CropConfig::default();
        let cases = [
            (face(0.0, 80.0, 40.0, 40.0), [0.0, 74.0, 52.0, 52.0]),
            (face(-5.0, 80.0, 40.0, 40.0), [0.0, 74.0, 52.0, 52.0]),
            (face(165.0, 80.0, 40.0, 40.0), [148.0, 74.0, 52.0, 52.0]),
            (face(80.0, 0.0, 40.0, 40.0), [74.0, 0.0, 52.0, 52.0]),
            (face(80.0, 170.0, 40.0, 40.0), [74.0, 148.0, 52.0, 52.0]),
            (face(-10.0, -10.0, 40.0, 40.0), [0.0, 0.0, 52.0, 52.0]),
            (face(170.0, 170.0, 40.0, 40.0), [148.0, 148.0, 52.0, 52.0]),
        ];
        for (d, expected) in cases {
            assert_eq!(region(&d, 200, 200, &config), expected, "{d:?}");
        }
    }

    #[test]
    fn a_crop_larger_than_the_image_is_clamped() {
        let d = face(-10.0, -10.0, 120.0, 100.0);
        // 1.3 x 120 = 156 > 100 x 80: the square shrinks to the shorter side, centred on the
        // box as far as the image allows.
        assert_eq!(region(&d, 100, 80, &CropConfig::default()), [10.0, 0.0, 80.0, 80.0]);
        let stretch = CropConfig { square: false, ..CropConfig::default() };
        assert_eq!(region(&d, 100, 80, &stretch), [0.0, 0.0, 100.0, 80.0]);
        // Wider than the image one way only: shrink that way, keep square.
        assert_eq!(
            region(&face(40.0, 40.0, 60.0, 60.0), 300, 60, &CropConfig::default()),
            [40.0, 0.0, 60.0, 60.0]
        );
    }

    #[test]
    fn per_side_margin_matches_the_dfdc_numbers() {
        let d = face(50.0, 60.0, 100.0, 80.0);
        let dfdc =
            CropConfig { margin: Margin::PerSide(0.3), square: false, ..CropConfig::default() };
        // 30% of 100 and of 80 on each side.
        assert_eq!(region(&d, 400, 400, &dfdc), [20.0, 36.0, 160.0, 128.0]);
        let square = CropConfig { square: true, ..dfdc };
        assert_eq!(region(&d, 400, 400, &square), [20.0, 20.0, 160.0, 160.0]);
        let none = CropConfig { margin: Margin::PerSide(0.0), ..dfdc };
        assert_eq!(region(&d, 400, 400, &none), [50.0, 60.0, 100.0, 80.0]);
    }

    #[test]
    fn crops_copy_the_region_and_resize_to_the_output_size() {
        let image = gradient(200, 150);
        let d = face(80.0, 50.0, 40.0, 40.0);
        let crop = crop_face(&image, &d, &CropConfig::default()).unwrap();
        assert_eq!(crop.region, FaceBox::new(74.0, 44.0, 52.0, 52.0));
        assert_eq!((crop.image.width(), crop.image.height()), (52, 52));
        assert_eq!(crop.image.pixel(0, 0).unwrap(), image.pixel(74, 44).unwrap());
        assert_eq!(crop.image.pixel(51, 51).unwrap(), image.pixel(125, 95).unwrap());
        assert_eq!(crop.detection, d);

        let sized = CropConfig { size: Some(224), ..CropConfig::default() };
        let crop = crop_face(&image, &d, &sized).unwrap();
        assert_eq!((crop.image.width(), crop.image.height()), (224, 224));
        let stretch = CropConfig { square: false, size: Some(64), ..CropConfig::default() };
        let crop = crop_face(&image, &face(80.0, 50.0, 20.0, 60.0), &stretch).unwrap();
        assert_eq!((crop.image.width(), crop.image.height()), (64, 64));
        assert_eq!((crop.region.width, crop.region.height), (26.0, 78.0));

        let gray = Image::filled(50, 50, 1, 9).unwrap();
        let crop = crop_face(&gray, &face(10.0, 10.0, 20.0, 20.0), &sized).unwrap();
        assert_eq!((crop.image.width(), crop.image.channels()), (224, 1));
        assert!(crop.image.as_bytes().iter().all(|&v| v == 9));
    }

    #[test]
    fn selection_picks_largest_best_or_all() {
        let faces = [
            Detection::new(FaceBox::new(0.0, 0.0, 10.0, 10.0), 0.99),
            Detection::new(FaceBox::new(0.0, 0.0, 30.0, 30.0), 0.7),
            Detection::new(FaceBox::new(0.0, 0.0, 30.0, 30.0), 0.8),
            Detection::new(FaceBox::new(0.0, 0.0, 20.0, 20.0), f32::NAN),
        ];
        let pick = |s| select(&faces, s).into_iter().cloned().collect::<Vec<_>>();
        // Ties go to the earlier face.
        assert_eq!(pick(FaceSelection::Largest), [faces[1].clone()]);
        assert_eq!(pick(FaceSelection::Best), [faces[0].clone()]);
        assert_eq!(select(&faces, FaceSelection::All).len(), 4);
        assert!(select(&[], FaceSelection::Largest).is_empty());
        let unscored = [Detection::new(FaceBox::new(0.0, 0.0, 5.0, 5.0), f32::NAN)];
        assert_eq!(select(&unscored, FaceSelection::Best).len(), 1);

        let image = gradient(64, 64);
        let crops =
            crop_faces(&image, &faces[..3], FaceSelection::All, &CropConfig::default()).unwrap();
        assert_eq!(crops.len(), 3);
        let crops = crop_faces(&image, &faces[..3], FaceSelection::Largest, &CropConfig::default())
            .unwrap();
        assert_eq!(crops.len(), 1);
        assert_eq!(crops[0].detection.score, 0.7);

        for (name, s) in [
            ("largest", FaceSelection::Largest),
            ("ALL", FaceSelection::All),
            ("Best", FaceSelection::Best),
        ] {
            assert_eq!(name.parse::<FaceSelection>().unwrap(), s);
            assert_eq!(s.to_string().parse::<FaceSelection>().unwrap(), s);
        }
        assert!(matches!("first".parse::<FaceSelection>(), Err(Error::InvalidConfig { .. })));
        assert_eq!(serde_json::to_string(&FaceSelection::Best).unwrap(), "\"best\"");
    }

    /// Centroid (continuous coordinates) of the bright pixels in columns `from..to`.
    fn centroid(image: &Image, from: u32, to: u32) -> (f64, f64) {
        let (mut sx, mut sy, mut total) = (0.0, 0.0, 0.0);
        for y in 0..image.height() {
            for x in from..to {
                let v = f64::from(image.get(x, y, 0).unwrap());
                sx += v * (f64::from(x) + 0.5);
                sy += v * (f64::from(y) + 0.5);
                total += v;
            }
        }
        assert!(total > 0.0, "no dot in columns {from}..{to}");
        (sx / total, sy / total)
    }

    #[test]
    fn aligned_crops_level_the_eyes() {
        // Two 2x2 dots centred on (80, 110) and (120, 90): eyes on a line tilted by
        // atan(-20 / 40), around the box centre (100, 100).
        let mut image = Image::filled(200, 200, 3, 0).unwrap();
        for (ex, ey) in [(80, 110), (120, 90)] {
            for (x, y) in [(ex - 1, ey - 1), (ex, ey - 1), (ex - 1, ey), (ex, ey)] {
                image.pixel_mut(x, y).unwrap().copy_from_slice(&[255, 255, 255]);
            }
        }
        let mut d = face(60.0, 60.0, 80.0, 80.0);
        d.keypoints = vec![[80.0, 110.0], [120.0, 90.0], [100.0, 105.0]];
        let config =
            CropConfig { margin: Margin::Scale(1.0), align_eyes: true, ..CropConfig::default() };
        let crop = crop_face(&image, &d, &config).unwrap();
        assert_eq!(crop.region, FaceBox::new(60.0, 60.0, 80.0, 80.0));
        assert_eq!((crop.image.width(), crop.image.height()), (80, 80));
        let (rx, ry) = centroid(&crop.image, 0, 40);
        let (lx, ly) = centroid(&crop.image, 40, 80);
        // Level, mirrored about the centre, half the eye distance (sqrt(2000) / 2) from it.
        assert!((ry - ly).abs() < 1.0, "rows {ry} and {ly}");
        assert!((ry - 40.0).abs() < 1.0, "row {ry}");
        assert!((rx + lx - 80.0).abs() < 1.0, "columns {rx} and {lx}");
        assert!((lx - 40.0 - 2000f64.sqrt() / 2.0).abs() < 1.0, "column {lx}");
        // Unaligned, the dots are where they were.
        let plain = crop_face(&image, &d, &CropConfig { align_eyes: false, ..config }).unwrap();
        let (_, ry) = centroid(&plain.image, 0, 40);
        let (_, ly) = centroid(&plain.image, 40, 80);
        assert!((ry - ly - 20.0).abs() < 1e-9);

        // Resized after turning.
        let small = crop_face(&image, &d, &CropConfig { size: Some(40), ..config }).unwrap();
        assert_eq!((small.image.width(), small.image.height()), (40, 40));
        let (_, ry) = centroid(&small.image, 0, 20);
        let (_, ly) = centroid(&small.image, 20, 40);
        assert!((ry - ly).abs() < 0.5);
    }

    #[test]
    fn alignment_corners_outside_the_image_are_black_and_level_eyes_copy_exactly() {
        let image = gradient(100, 100);
        let mut d = face(30.0, 30.0, 40.0, 40.0);
        d.keypoints = vec![[40.0, 45.0], [60.0, 45.0]];
        let config = CropConfig { align_eyes: true, ..CropConfig::default() };
        let aligned = crop_face(&image, &d, &config).unwrap();
        let plain = crop_face(&image, &d, &CropConfig { align_eyes: false, ..config }).unwrap();
        assert_eq!(aligned.image, plain.image);
        // Without eyes, alignment falls back to the plain crop.
        let no_eyes = crop_face(&image, &face(30.0, 30.0, 40.0, 40.0), &config).unwrap();
        assert_eq!(no_eyes.image, plain.image);
        // A 45-degree turn of the whole image leaves its corners black.
        let mut d = face(0.0, 0.0, 100.0, 100.0);
        d.keypoints = vec![[40.0, 40.0], [60.0, 60.0]];
        let turned =
            crop_face(&image, &d, &CropConfig { margin: Margin::Scale(1.0), ..config }).unwrap();
        assert_eq!(turned.image.pixel(0, 0).unwrap(), [0, 0, 0]);
        assert_eq!(turned.image.pixel(99, 99).unwrap(), [0, 0, 0]);
        assert_ne!(turned.image.pixel(50, 50).unwrap(), [0, 0, 0]);
    }

    #[test]
    fn invalid_configs_and_degenerate_boxes_are_errors() {
        let image = gradient(100, 100);
        let d = face(30.0, 30.0, 40.0, 40.0);
        let bad_configs = [
            CropConfig { margin: Margin::Scale(0.0), ..CropConfig::default() },
            CropConfig { margin: Margin::Scale(-1.3), ..CropConfig::default() },
            CropConfig { margin: Margin::Scale(f32::NAN), ..CropConfig::default() },
            CropConfig { margin: Margin::Scale(f32::INFINITY), ..CropConfig::default() },
            CropConfig { margin: Margin::PerSide(-0.1), ..CropConfig::default() },
            CropConfig { margin: Margin::PerSide(f32::NAN), ..CropConfig::default() },
            CropConfig { size: Some(0), ..CropConfig::default() },
        ];
        for config in bad_configs {
            let err = crop_face(&image, &d, &config).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{config:?}: {err}");
        }
        let bad_boxes = [
            face(100.0, 10.0, 20.0, 20.0),
            face(-20.0, 10.0, 20.0, 20.0),
            face(10.0, 150.0, 20.0, 20.0),
            face(10.0, -30.0, 20.0, 20.0),
            face(10.0, 10.0, 0.0, 20.0),
            face(10.0, 10.0, 20.0, -1.0),
            face(f32::NAN, 10.0, 20.0, 20.0),
            face(10.0, 10.0, f32::INFINITY, 20.0),
        ];
        for d in bad_boxes {
            let err = crop_face(&image, &d, &CropConfig::default()).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { what: "face box", .. }), "{d:?}: {err}");
        }
        let empty = Image::from_raw(0, 0, 3, Vec::new()).unwrap();
        assert!(crop_face(&empty, &d, &CropConfig::default()).is_err());
        let mut nan_eyes = d.clone();
        nan_eyes.keypoints = vec![[f32::NAN, 40.0], [60.0, 40.0]];
        let config = CropConfig { align_eyes: true, ..CropConfig::default() };
        assert!(matches!(crop_face(&image, &nan_eyes, &config), Err(Error::InvalidConfig { .. })));
        // Huge but finite margins clamp to the image.
        let huge = CropConfig { margin: Margin::Scale(1e30), ..CropConfig::default() };
        assert_eq!(region(&d, 100, 100, &huge), [0.0, 0.0, 100.0, 100.0]);
        // A tiny box still gives a pixel.
        assert_eq!(region(&face(10.0, 10.0, 0.01, 0.01), 100, 100, &CropConfig::default())[2], 1.0);
    }

    #[test]
    fn configs_roundtrip_through_serde() {
        let config = CropConfig {
            margin: Margin::PerSide(0.3),
            square: false,
            size: Some(224),
            align_eyes: true,
        };
        let json = serde_json::to_string(&config).unwrap();
        assert!(json.contains("\"per_side\":0.3"), "{json}");
        assert_eq!(serde_json::from_str::<CropConfig>(&json).unwrap(), config);
        let partial: CropConfig = serde_json::from_str(r#"{"size": 128}"#).unwrap();
        assert_eq!(partial, CropConfig { size: Some(128), ..CropConfig::default() });
    }
}
