//! Image operations that face manipulations share: soft masks (polygons, ellipses, feathering,
//! erosion and dilation), alpha blending, Reinhard colour transfer, a least-squares similarity
//! transform between point sets and warping by it.
//!
//! Both the self-blended images of [`crate::sbi`] and the classical face swap of
//! [`crate::swap`] are "paste a face region of one image onto another through a soft mask";
//! these are the pieces, kept free of randomness so each can be tested on its own.
//!
//! Coordinates are continuous pixel coordinates, as the detectors' boxes and keypoints: pixel
//! `(i, j)` covers `[i, i + 1) x [j, j + 1)`, so its centre is `(i + 0.5, j + 0.5)`.
//!
//! ```
//! use deeprecog_dataset::Image;
//! use deeprecog_detector::blend::{alpha_blend, Mask};
//!
//! let target = Image::filled(8, 6, 3, 0).unwrap();
//! let source = Image::filled(8, 6, 3, 200).unwrap();
//! let mask = Mask::convex_polygon(8, 6, &[[2.0, 1.0], [6.0, 1.0], [6.0, 5.0], [2.0, 5.0]]);
//! let out = alpha_blend(&target, &source, &mask, 0.5).unwrap();
//! assert_eq!(out.pixel(3, 2), Some(&[100, 100, 100][..]));
//! assert_eq!(out.pixel(0, 0), Some(&[0, 0, 0][..]));
//! ```

use deeprecog_dataset::Image;

use crate::{Error, Result};

/// A soft mask: one weight in `[0, 1]` per pixel, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height` weights, row by row.
    pub data: Vec<f32>,
}

impl Mask {
    /// A mask of one value everywhere (clamped to `[0, 1]`).
    pub fn filled(width: u32, height: u32, value: f32) -> Mask {
        let value = if value.is_nan() { 0.0 } else { value.clamp(0.0, 1.0) };
        Mask { width, height, data: vec![value; width as usize * height as usize] }
    }

    /// An all-zero mask.
    pub fn zeros(width: u32, height: u32) -> Mask {
        Mask::filled(width, height, 0.0)
    }

    /// The weight at `(x, y)`; 0 outside the mask.
    pub fn get(&self, x: u32, y: u32) -> f32 {
        if x >= self.width || y >= self.height {
            return 0.0;
        }
        self.data.get(y as usize * self.width as usize + x as usize).copied().unwrap_or(0.0)
    }

    /// The largest weight (0 for an empty mask).
    pub fn max(&self) -> f32 {
        self.data.iter().copied().fold(0.0, f32::max)
    }

    /// The smallest whole-pixel box `(left, top, right, bottom)` (right and bottom exclusive)
    /// holding every non-zero weight; `None` when all are 0.
    pub fn bounds(&self) -> Option<(u32, u32, u32, u32)> {
        let w = self.width as usize;
        let mut b: Option<(u32, u32, u32, u32)> = None;
        for (i, _) in self.data.iter().enumerate().filter(|(_, v)| **v > 0.0) {
            let (x, y) = ((i % w) as u32, (i / w) as u32);
            b = Some(match b {
                None => (x, y, x + 1, y + 1),
                Some((l, t, r, bt)) => (l.min(x), t.min(y), r.max(x + 1), bt.max(y + 1)),
            });
        }
        b
    }

    /// The filled polygon through `points` in order (even-odd rule): 1 for pixels whose centre
    /// lies inside, 0 elsewhere. Fewer than 3 points or a non-finite point give an empty mask.
    pub fn polygon(width: u32, height: u32, points: &[[f32; 2]]) -> Mask {
        let mut mask = Mask::zeros(width, height);
        let finite = points.iter().all(|p| p[0].is_finite() && p[1].is_finite());
        if points.len() < 3 || !finite {
            return mask;
        }
        let w = width as usize;
        let mut crossings = Vec::with_capacity(points.len());
        for (y, row) in mask.data.chunks_exact_mut(w.max(1)).enumerate() {
            let yc = y as f64 + 0.5;
            crossings.clear();
            for (i, p) in points.iter().enumerate() {
                let q = points[(i + 1) % points.len()];
                let (py, qy) = (f64::from(p[1]), f64::from(q[1]));
                if (py <= yc) != (qy <= yc) {
                    let t = (yc - py) / (qy - py);
                    crossings.push(f64::from(p[0]) + t * f64::from(q[0] - p[0]));
                }
            }
            crossings.sort_by(f64::total_cmp);
            for pair in crossings.chunks_exact(2) {
                // Pixels whose centre x + 0.5 lies in [x0, x1).
                let first = (pair[0] - 0.5).ceil().clamp(0.0, w as f64) as usize;
                let end = (pair[1] - 0.5).ceil().clamp(0.0, w as f64) as usize;
                row.iter_mut().take(end).skip(first).for_each(|v| *v = 1.0);
            }
        }
        mask
    }

    /// The filled convex hull of `points` (see [`convex_hull`] and [`Mask::polygon`]).
    pub fn convex_polygon(width: u32, height: u32, points: &[[f32; 2]]) -> Mask {
        Mask::polygon(width, height, &convex_hull(points))
    }

    /// The filled axis-aligned ellipse centred at `(cx, cy)` with radii `rx`, `ry`: 1 for pixels
    /// whose centre lies inside. Radii that are not positive give an empty mask.
    pub fn ellipse(width: u32, height: u32, cx: f32, cy: f32, rx: f32, ry: f32) -> Mask {
        let mut mask = Mask::zeros(width, height);
        if !(rx > 0.0 && ry > 0.0 && cx.is_finite() && cy.is_finite()) {
            return mask;
        }
        let w = width as usize;
        for (i, v) in mask.data.iter_mut().enumerate() {
            let dx = ((i % w) as f32 + 0.5 - cx) / rx;
            let dy = ((i / w) as f32 + 0.5 - cy) / ry;
            if dx * dx + dy * dy <= 1.0 {
                *v = 1.0;
            }
        }
        mask
    }

    /// The mask blurred with a Gaussian of standard deviation `sigma` pixels (separable, taps
    /// out to 3 sigma, edges clamped): the feathering that hides a blend's seam. A `sigma`
    /// that is not positive returns a copy.
    pub fn blurred(&self, sigma: f32) -> Mask {
        if !(sigma > 0.0 && sigma.is_finite()) || self.data.is_empty() {
            return self.clone();
        }
        let radius = (3.0 * sigma).ceil() as i64;
        let mut kernel: Vec<f32> =
            (-radius..=radius).map(|i| (-0.5 * (i as f32 / sigma).powi(2)).exp()).collect();
        let total: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= total);
        let reduce = |line: &[f32], out: &mut [f32]| {
            let last = line.len() as i64 - 1;
            for (i, o) in out.iter_mut().enumerate() {
                *o = kernel
                    .iter()
                    .zip(-radius..=radius)
                    .map(|(k, d)| k * line[(i as i64 + d).clamp(0, last) as usize])
                    .sum::<f32>()
                    .clamp(0.0, 1.0);
            }
        };
        self.separable(reduce)
    }

    /// Grey-level erosion by a `(2 radius + 1)`-pixel square (each weight becomes the minimum
    /// of its window, the window cut at the image's edges so a face touching the border is not
    /// eaten from there): shrinks the mask by `radius` pixels.
    pub fn eroded(&self, radius: u32) -> Mask {
        self.morph(radius, f32::min)
    }

    /// Grey-level dilation by a `(2 radius + 1)`-pixel square (window maxima): grows the mask
    /// by `radius` pixels.
    pub fn dilated(&self, radius: u32) -> Mask {
        self.morph(radius, f32::max)
    }

    /// Every weight times `factor`, clamped to `[0, 1]`.
    pub fn scaled(&self, factor: f32) -> Mask {
        let data = self.data.iter().map(|v| (v * factor).clamp(0.0, 1.0)).collect();
        Mask { width: self.width, height: self.height, data }
    }

    /// The product of two masks of the same size (their intersection, for binary ones).
    pub fn multiply(&self, other: &Mask) -> Result<Mask> {
        same_size("mask", (self.width, self.height), (other.width, other.height))?;
        let data = self.data.iter().zip(&other.data).map(|(a, b)| a * b).collect();
        Ok(Mask { width: self.width, height: self.height, data })
    }

    fn morph(&self, radius: u32, pick: fn(f32, f32) -> f32) -> Mask {
        if radius == 0 || self.data.is_empty() {
            return self.clone();
        }
        let r = radius as usize;
        let reduce = |line: &[f32], out: &mut [f32]| {
            for (i, o) in out.iter_mut().enumerate() {
                let window = &line[i.saturating_sub(r)..(i + r + 1).min(line.len())];
                *o = window.iter().copied().reduce(pick).unwrap_or(0.0);
            }
        };
        self.separable(reduce)
    }

    /// Runs a 1-D filter along every row, then along every column.
    fn separable(&self, reduce: impl Fn(&[f32], &mut [f32])) -> Mask {
        let (w, h) = (self.width as usize, self.height as usize);
        let mut rows = vec![0.0; w * h];
        for (src, dst) in self.data.chunks_exact(w).zip(rows.chunks_exact_mut(w)) {
            reduce(src, dst);
        }
        let (mut column, mut filtered) = (vec![0.0; h], vec![0.0; h]);
        let mut data = vec![0.0; w * h];
        for x in 0..w {
            column.iter_mut().enumerate().for_each(|(y, c)| *c = rows[y * w + x]);
            reduce(&column, &mut filtered);
            filtered.iter().enumerate().for_each(|(y, v)| data[y * w + x] = *v);
        }
        Mask { width: self.width, height: self.height, data }
    }
}

/// The convex hull of `points`, counter-clockwise in a y-up frame (Andrew's monotone chain);
/// collinear points are dropped. Non-finite points are ignored.
pub fn convex_hull(points: &[[f32; 2]]) -> Vec<[f32; 2]> {
    let mut pts: Vec<[f32; 2]> =
        points.iter().copied().filter(|p| p[0].is_finite() && p[1].is_finite()).collect();
    pts.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    pts.dedup();
    if pts.len() < 3 {
        return pts;
    }
    let cross = |o: [f32; 2], a: [f32; 2], b: [f32; 2]| {
        f64::from(a[0] - o[0]) * f64::from(b[1] - o[1])
            - f64::from(a[1] - o[1]) * f64::from(b[0] - o[0])
    };
    let mut hull: Vec<[f32; 2]> = Vec::with_capacity(2 * pts.len());
    for pass in [pts.clone(), pts.iter().rev().copied().collect()] {
        let floor = hull.len();
        for p in pass {
            while hull.len() >= floor + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0
            {
                hull.pop();
            }
            hull.push(p);
        }
        // Each chain's last point starts the other chain.
        hull.pop();
    }
    hull
}

/// The outline of the inner face from a detector's keypoints: the convex hull of the eyes,
/// nose and mouth (the first 4 keypoints, BlazeFace's order) extended to brows, cheeks, jaw
/// and chin, which BlazeFace does not give.
///
/// With `e` the mid-point of the eyes, `d` the eye distance, `u` the unit vector from the
/// subject's right eye to the left one and `D = mouth - e` (length `|D|`, direction `v`):
/// the chin is `mouth + 0.9 D`; brows are the eyes pushed `0.3 |D|` up and `0.15 d` out; the
/// temples `0.45 d` out of each eye; the jaw `0.7 d` either side of the mouth and `0.4 d`
/// either side of a point `0.15 |D|` above the chin. The ear tragions (keypoints 5 and 6) are
/// not used: a hull through them would take in hair and ears, which the inner face that face
/// swaps and self-blends replace does not include.
///
/// Fails when fewer than 4 keypoints are given, one is not finite or the eyes coincide.
pub fn face_outline(keypoints: &[[f32; 2]]) -> Result<Vec<[f32; 2]>> {
    let [right, left, nose, mouth] = match keypoints {
        [r, l, n, m, ..] => [*r, *l, *n, *m],
        _ => {
            return Err(Error::InvalidConfig {
                what: "face keypoints",
                reason: format!(
                "{} keypoints given; the face outline needs the eyes, the nose and the mouth (4)",
                keypoints.len()
            ),
            })
        }
    };
    let bad = |reason: String| Error::InvalidConfig { what: "face keypoints", reason };
    if ![right, left, nose, mouth].iter().flatten().all(|v| v.is_finite()) {
        return Err(bad(format!("{:?} are not all finite", &keypoints[..4])));
    }
    let eyes = [left[0] - right[0], left[1] - right[1]];
    let d = eyes[0].hypot(eyes[1]);
    if d <= f32::EPSILON {
        return Err(bad(format!("the eyes {right:?} and {left:?} coincide")));
    }
    let u = [eyes[0] / d, eyes[1] / d];
    let mid = [(right[0] + left[0]) / 2.0, (right[1] + left[1]) / 2.0];
    let down = [mouth[0] - mid[0], mouth[1] - mid[1]];
    let len = down[0].hypot(down[1]);
    // A mouth on the eye line (a degenerate detection) still gets a face below the eyes.
    let v = if len > f32::EPSILON { [down[0] / len, down[1] / len] } else { [-u[1], u[0]] };
    let len = len.max(0.5 * d);
    let at = |p: [f32; 2], across: f32, along: f32| {
        [p[0] + across * u[0] + along * v[0], p[1] + across * u[1] + along * v[1]]
    };
    let chin = at(mouth, 0.0, 0.9 * len);
    let points = [
        right,
        left,
        nose,
        mouth,
        chin,
        at(right, -0.15 * d, -0.3 * len),
        at(left, 0.15 * d, -0.3 * len),
        at(right, -0.45 * d, 0.0),
        at(left, 0.45 * d, 0.0),
        at(mouth, -0.7 * d, 0.0),
        at(mouth, 0.7 * d, 0.0),
        at(chin, -0.4 * d, -0.15 * len),
        at(chin, 0.4 * d, -0.15 * len),
    ];
    Ok(convex_hull(&points))
}

/// `source * m * strength + target * (1 - m * strength)` per pixel (`m` the mask's weight),
/// rounded to 8 bits. Where the weight is 0 the target's bytes come back unchanged, where
/// `m * strength` is 1 the source's.
///
/// Fails when the images' sizes or channels differ or the mask's size is not theirs.
pub fn alpha_blend(target: &Image, source: &Image, mask: &Mask, strength: f32) -> Result<Image> {
    same_image_shape(target, source)?;
    same_size("mask", (target.width(), target.height()), (mask.width, mask.height))?;
    let channels = usize::from(target.channels());
    let mut out = target.clone();
    let pixels = out.as_bytes_mut().chunks_exact_mut(channels);
    for ((t, s), m) in pixels.zip(source.as_bytes().chunks_exact(channels)).zip(&mask.data) {
        let a = (m * strength).clamp(0.0, 1.0);
        if a == 0.0 {
            continue;
        }
        for (t, s) in t.iter_mut().zip(s) {
            *t = (f32::from(*s) * a + f32::from(*t) * (1.0 - a)).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(out)
}

/// Reinhard et al.'s colour transfer: `source` recoloured so that, weighted by `mask`, its
/// per-channel mean and standard deviation match `target`'s.
///
/// The matching is done in CIE L\*a\*b\* (sRGB -> linear -> XYZ, D65 -> Lab) rather than per RGB
/// channel: RGB channels are strongly correlated, so matching them one by one shifts hues;
/// Lab separates lightness from two opponent colour axes, which is what Reinhard's lαβ space
/// is for, and is the space the FaceSwap tools use. A channel without spread in the source
/// keeps its spread (only its mean moves). An all-zero mask returns the source unchanged.
///
/// Fails when the images differ in size or channels, are not RGB, or the mask's size is not
/// theirs.
pub fn color_transfer(source: &Image, target: &Image, mask: &Mask) -> Result<Image> {
    same_image_shape(target, source)?;
    same_size("mask", (target.width(), target.height()), (mask.width, mask.height))?;
    if source.channels() != 3 {
        return Err(Error::InvalidConfig {
            what: "colour transfer",
            reason: format!("needs RGB images, got {} channel(s)", source.channels()),
        });
    }
    let src_lab: Vec<[f64; 3]> = source.as_bytes().chunks_exact(3).map(rgb_to_lab).collect();
    let tgt_lab: Vec<[f64; 3]> = target.as_bytes().chunks_exact(3).map(rgb_to_lab).collect();
    let (Some(s), Some(t)) = (weighted_stats(&src_lab, mask), weighted_stats(&tgt_lab, mask))
    else {
        return Ok(source.clone());
    };
    let mut data = Vec::with_capacity(source.as_bytes().len());
    for lab in &src_lab {
        let mut moved = [0.0; 3];
        for k in 0..3 {
            let (mean_s, std_s) = s[k];
            let (mean_t, std_t) = t[k];
            let gain = if std_s > 1e-6 { std_t / std_s } else { 1.0 };
            moved[k] = (lab[k] - mean_s) * gain + mean_t;
        }
        data.extend(lab_to_rgb(moved));
    }
    Ok(Image::from_raw(source.width(), source.height(), 3, data)?)
}

/// Per-channel (mean, standard deviation) weighted by the mask; `None` when the weights sum
/// to (almost) nothing.
fn weighted_stats(lab: &[[f64; 3]], mask: &Mask) -> Option<[(f64, f64); 3]> {
    let total: f64 = mask.data.iter().map(|&m| f64::from(m)).sum();
    if total < 1e-6 {
        return None;
    }
    let mut out = [(0.0, 0.0); 3];
    for (k, o) in out.iter_mut().enumerate() {
        let mean =
            lab.iter().zip(&mask.data).map(|(p, &m)| p[k] * f64::from(m)).sum::<f64>() / total;
        let var = lab
            .iter()
            .zip(&mask.data)
            .map(|(p, &m)| (p[k] - mean).powi(2) * f64::from(m))
            .sum::<f64>()
            / total;
        *o = (mean, var.sqrt());
    }
    Some(out)
}

const WHITE: [f64; 3] = [0.950_47, 1.0, 1.088_83];
const DELTA: f64 = 6.0 / 29.0;

fn rgb_to_lab(p: &[u8]) -> [f64; 3] {
    let lin = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.040_45 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(p[0]), lin(p[1]), lin(p[2]));
    let xyz = [
        0.412_456_4 * r + 0.357_576_1 * g + 0.180_437_5 * b,
        0.212_672_9 * r + 0.715_152_2 * g + 0.072_175 * b,
        0.019_333_9 * r + 0.119_192 * g + 0.950_304_1 * b,
    ];
    let f =
        |t: f64| if t > DELTA.powi(3) { t.cbrt() } else { t / (3.0 * DELTA * DELTA) + 4.0 / 29.0 };
    let [fx, fy, fz] = [f(xyz[0] / WHITE[0]), f(xyz[1] / WHITE[1]), f(xyz[2] / WHITE[2])];
    [116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)]
}

fn lab_to_rgb(lab: [f64; 3]) -> [u8; 3] {
    let fy = (lab[0] + 16.0) / 116.0;
    let (fx, fz) = (fy + lab[1] / 500.0, fy - lab[2] / 200.0);
    let finv = |t: f64| if t > DELTA { t.powi(3) } else { 3.0 * DELTA * DELTA * (t - 4.0 / 29.0) };
    let (x, y, z) = (finv(fx) * WHITE[0], finv(fy) * WHITE[1], finv(fz) * WHITE[2]);
    let rgb = [
        3.240_454_2 * x - 1.537_138_5 * y - 0.498_531_4 * z,
        -0.969_266 * x + 1.876_010_8 * y + 0.041_556 * z,
        0.055_643_4 * x - 0.204_025_9 * y + 1.057_225_2 * z,
    ];
    rgb.map(|c| {
        let c = c.clamp(0.0, 1.0);
        let s = if c <= 0.003_130_8 { 12.92 * c } else { 1.055 * c.powf(1.0 / 2.4) - 0.055 };
        (s * 255.0).round().clamp(0.0, 255.0) as u8
    })
}

/// A 2-D similarity transform (uniform scale, rotation, translation) in continuous pixel
/// coordinates: `(x, y) -> (a x - b y + tx, b x + a y + ty)`, with `a = s cos t`, `b = s sin t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    /// `scale * cos(angle)`.
    pub a: f64,
    /// `scale * sin(angle)`.
    pub b: f64,
    /// Translation along x.
    pub tx: f64,
    /// Translation along y.
    pub ty: f64,
}

impl Similarity {
    /// The transform that moves nothing.
    pub const IDENTITY: Similarity = Similarity { a: 1.0, b: 0.0, tx: 0.0, ty: 0.0 };

    /// Scale by `scale` and turn by `angle` radians (y pointing down: positive turns clockwise
    /// on screen) about the origin, then translate by `(tx, ty)`.
    pub fn new(scale: f64, angle: f64, tx: f64, ty: f64) -> Similarity {
        let (sin, cos) = angle.sin_cos();
        Similarity { a: scale * cos, b: scale * sin, tx, ty }
    }

    /// Scale by `scale` about `centre`, then translate by `(tx, ty)`.
    pub fn scale_about(centre: [f64; 2], scale: f64, tx: f64, ty: f64) -> Similarity {
        Similarity {
            a: scale,
            b: 0.0,
            tx: centre[0] * (1.0 - scale) + tx,
            ty: centre[1] * (1.0 - scale) + ty,
        }
    }

    /// The least-squares similarity taking `from[i]` to `to[i]` (Umeyama's method; in 2-D,
    /// without reflections, it is the closed form below: centre both sets, then the complex
    /// ratio `sum conj(p) q / sum |p|^2` gives scale and rotation).
    ///
    /// Fails when the sets differ in length, hold fewer than 2 points, a point is not finite,
    /// or all `from` points coincide.
    pub fn fit(from: &[[f32; 2]], to: &[[f32; 2]]) -> Result<Similarity> {
        let bad = |reason: String| Error::InvalidConfig { what: "similarity fit", reason };
        if from.len() != to.len() || from.len() < 2 {
            return Err(bad(format!(
                "needs two sets of the same length >= 2, got {} and {}",
                from.len(),
                to.len()
            )));
        }
        if !from.iter().chain(to).flatten().all(|v| v.is_finite()) {
            return Err(bad("a point is not finite".to_string()));
        }
        let centroid = |pts: &[[f32; 2]]| {
            let n = pts.len() as f64;
            let sum = pts
                .iter()
                .fold([0.0, 0.0], |s, p| [s[0] + f64::from(p[0]), s[1] + f64::from(p[1])]);
            [sum[0] / n, sum[1] / n]
        };
        let (cf, ct) = (centroid(from), centroid(to));
        let (mut re, mut im, mut norm) = (0.0, 0.0, 0.0);
        for (p, q) in from.iter().zip(to) {
            let (px, py) = (f64::from(p[0]) - cf[0], f64::from(p[1]) - cf[1]);
            let (qx, qy) = (f64::from(q[0]) - ct[0], f64::from(q[1]) - ct[1]);
            re += px * qx + py * qy;
            im += px * qy - py * qx;
            norm += px * px + py * py;
        }
        if norm < 1e-12 {
            return Err(bad("the source points all coincide".to_string()));
        }
        let (a, b) = (re / norm, im / norm);
        Ok(Similarity {
            a,
            b,
            tx: ct[0] - (a * cf[0] - b * cf[1]),
            ty: ct[1] - (b * cf[0] + a * cf[1]),
        })
    }

    /// Where `p` goes.
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [self.a * p[0] - self.b * p[1] + self.tx, self.b * p[0] + self.a * p[1] + self.ty]
    }

    /// Where `p` goes, in `f32` (for keypoints).
    pub fn apply_f32(&self, p: [f32; 2]) -> [f32; 2] {
        let [x, y] = self.apply([f64::from(p[0]), f64::from(p[1])]);
        [x as f32, y as f32]
    }

    /// The scale factor.
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }

    /// The rotation angle in radians.
    pub fn angle(&self) -> f64 {
        self.b.atan2(self.a)
    }

    /// The transform that undoes this one; fails when the scale is 0 or a value is not finite.
    pub fn inverse(&self) -> Result<Similarity> {
        let det = self.a * self.a + self.b * self.b;
        if !(det > 1e-18 && det.is_finite() && self.tx.is_finite() && self.ty.is_finite()) {
            return Err(Error::InvalidConfig {
                what: "similarity transform",
                reason: format!("{self:?} cannot be inverted"),
            });
        }
        let (a, b) = (self.a / det, -self.b / det);
        Ok(Similarity { a, b, tx: -(a * self.tx - b * self.ty), ty: -(b * self.tx + a * self.ty) })
    }
}

/// `image` moved by `transform` (image coordinates -> output coordinates) into an
/// `out_width` x `out_height` frame, by inverse mapping with bilinear sampling; where the
/// inverse lands outside the image the nearest edge pixel is used (see [`valid_region`] for
/// where that happened).
///
/// Fails on an empty image or a transform that cannot be inverted.
pub fn warp_similarity(
    image: &Image,
    transform: &Similarity,
    out_width: u32,
    out_height: u32,
) -> Result<Image> {
    let inverse = transform.inverse()?;
    let (w, h) = (image.width() as i64, image.height() as i64);
    if w == 0 || h == 0 {
        return Err(Error::InvalidConfig {
            what: "warp source",
            reason: format!("the image is {w}x{h}"),
        });
    }
    let channels = usize::from(image.channels());
    let src = image.as_bytes();
    let texel = |x: i64, y: i64, c: usize| {
        let at = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1)) as usize * channels + c;
        src.get(at).map_or(0.0, |v| f64::from(*v))
    };
    let mut data = Vec::with_capacity(out_width as usize * out_height as usize * channels);
    for y in 0..out_height {
        for x in 0..out_width {
            let [sx, sy] = inverse.apply([f64::from(x) + 0.5, f64::from(y) + 0.5]);
            // Pixel-index space: centres on integers.
            crate::crop::bilinear_into(&texel, sx - 0.5, sy - 0.5, channels, &mut data);
        }
    }
    Ok(Image::from_raw(out_width, out_height, image.channels(), data)?)
}

/// The output pixels of [`warp_similarity`] whose centre maps back inside the
/// `width` x `height` source (1) rather than onto its clamped edge (0).
pub fn valid_region(
    transform: &Similarity,
    width: u32,
    height: u32,
    out_width: u32,
    out_height: u32,
) -> Result<Mask> {
    let inverse = transform.inverse()?;
    let mut mask = Mask::zeros(out_width, out_height);
    let ow = out_width as usize;
    for (i, v) in mask.data.iter_mut().enumerate() {
        let [sx, sy] = inverse.apply([(i % ow) as f64 + 0.5, (i / ow) as f64 + 0.5]);
        if (0.0..=f64::from(width)).contains(&sx) && (0.0..=f64::from(height)).contains(&sy) {
            *v = 1.0;
        }
    }
    Ok(mask)
}

fn same_image_shape(a: &Image, b: &Image) -> Result<()> {
    if (a.width(), a.height(), a.channels()) != (b.width(), b.height(), b.channels()) {
        return Err(Error::InvalidConfig {
            what: "blend images",
            reason: format!(
                "{}x{}x{} and {}x{}x{} differ",
                a.width(),
                a.height(),
                a.channels(),
                b.width(),
                b.height(),
                b.channels()
            ),
        });
    }
    Ok(())
}

fn same_size(what: &'static str, image: (u32, u32), other: (u32, u32)) -> Result<()> {
    if image != other {
        return Err(Error::InvalidConfig {
            what,
            reason: format!(
                "{}x{} does not match the image's {}x{}",
                other.0, other.1, image.0, image.1
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A smooth RGB pattern with some texture, `w` x `h`.
    pub(crate) fn pattern(w: u32, h: u32) -> Image {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.push((40 + (x * 150) / w.max(1)) as u8);
                data.push((60 + (y * 120) / h.max(1)) as u8);
                data.push((90 + ((x * 7 + y * 13) % 50)) as u8);
            }
        }
        Image::from_raw(w, h, 3, data).unwrap()
    }

    fn area(mask: &Mask) -> f32 {
        mask.data.iter().sum()
    }

    #[test]
    fn polygon_fills_pixel_centres_inside() {
        let square = [[2.0, 1.0], [6.0, 1.0], [6.0, 4.0], [2.0, 4.0]];
        let mask = Mask::polygon(10, 7, &square);
        assert_eq!(area(&mask), 12.0);
        assert_eq!(mask.bounds(), Some((2, 1, 6, 4)));
        // The hull of shuffled points with an interior one is the same square.
        let cloud = [[6.0, 4.0], [2.0, 1.0], [4.0, 2.0], [2.0, 4.0], [6.0, 1.0]];
        assert_eq!(Mask::convex_polygon(10, 7, &cloud), mask);
        assert_eq!(convex_hull(&cloud).len(), 4);
        assert_eq!(area(&Mask::polygon(10, 7, &[[0.0, 0.0], [f32::NAN, 1.0], [3.0, 3.0]])), 0.0);
    }

    #[test]
    fn ellipse_area_is_close_to_pi_r_squared() {
        let mask = Mask::ellipse(60, 40, 30.0, 20.0, 15.0, 10.0);
        let expected = std::f32::consts::PI * 150.0;
        assert!((area(&mask) - expected).abs() < 0.03 * expected, "{}", area(&mask));
        assert_eq!(mask.bounds(), Some((15, 10, 45, 30)));
    }

    #[test]
    fn blur_keeps_constants_and_spreads_edges() {
        let ones = Mask::filled(9, 5, 1.0);
        assert!(ones.blurred(2.0).data.iter().all(|v| (v - 1.0).abs() < 1e-5));
        let mask = Mask::polygon(20, 10, &[[5.0, 0.0], [15.0, 0.0], [15.0, 10.0], [5.0, 10.0]]);
        let soft = mask.blurred(1.5);
        assert!(soft.get(4, 5) > 0.0 && soft.get(4, 5) < 0.5);
        assert!(soft.get(10, 5) > 0.99);
        assert!((area(&soft) - area(&mask)).abs() < 0.5);
    }

    #[test]
    fn erosion_and_dilation_move_the_edge_by_the_radius() {
        let mask = Mask::polygon(20, 16, &[[5.0, 4.0], [15.0, 4.0], [15.0, 12.0], [5.0, 12.0]]);
        assert_eq!(mask.eroded(2).bounds(), Some((7, 6, 13, 10)));
        assert_eq!(mask.dilated(3).bounds(), Some((2, 1, 18, 15)));
        // The border does not erode a mask that touches it.
        assert_eq!(Mask::filled(6, 4, 1.0).eroded(2), Mask::filled(6, 4, 1.0));
    }

    #[test]
    fn alpha_blend_extremes_and_shape_errors() {
        let (t, s) = (pattern(12, 7), Image::filled(12, 7, 3, 9).unwrap());
        let zero = Mask::zeros(12, 7);
        assert_eq!(alpha_blend(&t, &s, &zero, 1.0).unwrap(), t);
        assert_eq!(alpha_blend(&t, &s, &Mask::filled(12, 7, 1.0), 1.0).unwrap(), s);
        assert!(alpha_blend(&t, &s, &Mask::zeros(7, 12), 1.0).is_err());
        assert!(alpha_blend(&t, &pattern(7, 12), &zero, 1.0).is_err());
    }

    #[test]
    fn lab_round_trip_is_within_one_level() {
        for (r, g, b) in [(0, 0, 0), (255, 255, 255), (12, 200, 77), (250, 3, 128), (128, 128, 128)]
        {
            let back = lab_to_rgb(rgb_to_lab(&[r, g, b]));
            for (x, y) in back.iter().zip([r, g, b]) {
                assert!(x.abs_diff(y) <= 1, "{:?} -> {back:?}", (r, g, b));
            }
        }
        // Reference white: L = 100, a = b = 0.
        let white = rgb_to_lab(&[255, 255, 255]);
        assert!((white[0] - 100.0).abs() < 1e-3 && white[1].abs() < 1e-2 && white[2].abs() < 1e-2);
    }

    #[test]
    fn color_transfer_matches_the_target_statistics() {
        let source = pattern(16, 10);
        let target = Image::from_raw(
            16,
            10,
            3,
            source.as_bytes().iter().map(|&v| (v / 2).saturating_add(60)).collect(),
        )
        .unwrap();
        let mask = Mask::filled(16, 10, 1.0);
        let moved = color_transfer(&source, &target, &mask).unwrap();
        let lab = |im: &Image| im.as_bytes().chunks_exact(3).map(rgb_to_lab).collect::<Vec<_>>();
        let (m, t) = (
            weighted_stats(&lab(&moved), &mask).unwrap(),
            weighted_stats(&lab(&target), &mask).unwrap(),
        );
        for k in 0..3 {
            assert!((m[k].0 - t[k].0).abs() < 0.5, "mean {k}: {m:?} vs {t:?}");
            assert!((m[k].1 - t[k].1).abs() < 0.5, "std {k}: {m:?} vs {t:?}");
        }
        // Onto itself it changes at most a rounding step; with no mask, not at all.
        let same = color_transfer(&source, &source, &mask).unwrap();
        assert!(same.as_bytes().iter().zip(source.as_bytes()).all(|(a, b)| a.abs_diff(*b) <= 1));
        assert_eq!(color_transfer(&source, &target, &Mask::zeros(16, 10)).unwrap(), source);
        let gray = Image::filled(16, 10, 1, 3).unwrap();
        assert!(color_transfer(&gray, &gray, &mask).is_err());
    }

    #[test]
    fn similarity_fit_recovers_a_known_transform() {
        let truth = Similarity::new(1.37, 0.42, -12.5, 30.25);
        let from = [[10.0, 12.0], [40.0, 15.0], [25.0, 30.0], [26.0, 45.0], [3.0, 50.0]];
        let to: Vec<[f32; 2]> = from.iter().map(|&p| truth.apply_f32(p)).collect();
        let fit = Similarity::fit(&from, &to).unwrap();
        for (got, want) in
            [(fit.a, truth.a), (fit.b, truth.b), (fit.tx, truth.tx), (fit.ty, truth.ty)]
        {
            assert!((got - want).abs() < 1e-4, "{fit:?} vs {truth:?}");
        }
        assert!((fit.scale() - 1.37).abs() < 1e-5 && (fit.angle() - 0.42).abs() < 1e-5);
        let back = fit.inverse().unwrap().apply(fit.apply([3.0, -7.0]));
        assert!((back[0] - 3.0).abs() < 1e-9 && (back[1] + 7.0).abs() < 1e-9);
        assert!(Similarity::fit(&from[..1], &to[..1]).is_err());
        assert!(Similarity::fit(&[[1.0, 1.0], [1.0, 1.0]], &[[0.0, 0.0], [1.0, 0.0]]).is_err());
        assert!(Similarity::new(0.0, 0.0, 0.0, 0.0).inverse().is_err());
    }

    #[test]
    fn warp_identity_copies_and_shift_moves_non_square_images() {
        let image = pattern(13, 7);
        assert_eq!(warp_similarity(&image, &Similarity::IDENTITY, 13, 7).unwrap(), image);
        // Moved 2 right and 1 down into a larger, non-square frame.
        let shift = Similarity::new(1.0, 0.0, 2.0, 1.0);
        let out = warp_similarity(&image, &shift, 17, 9).unwrap();
        assert_eq!((out.width(), out.height()), (17, 9));
        assert_eq!(out.pixel(2 + 5, 1 + 3), image.pixel(5, 3));
        assert_eq!(out.pixel(0, 0), image.pixel(0, 0));
        let valid = valid_region(&shift, 13, 7, 17, 9).unwrap();
        assert_eq!(valid.bounds(), Some((2, 1, 15, 8)));
    }

    #[test]
    fn face_outline_covers_the_keypoints_and_the_chin() {
        let kp =
            [[40.0, 40.0], [60.0, 40.0], [50.0, 52.0], [50.0, 62.0], [30.0, 45.0], [70.0, 45.0]];
        let outline = face_outline(&kp).unwrap();
        let mask = Mask::polygon(100, 120, &outline);
        for p in &kp[..4] {
            assert_eq!(mask.get(p[0] as u32, p[1] as u32), 1.0, "{p:?}");
        }
        // Chin at mouth + 0.9 * 22 = 81.8; the ears stay outside.
        assert_eq!(mask.get(50, 80), 1.0);
        assert_eq!(mask.get(50, 84), 0.0);
        assert_eq!(mask.get(30, 45), 0.0);
        assert!(face_outline(&kp[..3]).is_err());
        assert!(face_outline(&[[1.0, 1.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]).is_err());
    }
}
