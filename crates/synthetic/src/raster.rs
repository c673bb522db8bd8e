//! A small anti-aliased rasteriser on a floating-point RGB canvas.
//!
//! Shapes are described by signed distance functions in "face units" (one unit is the distance
//! between the eyes) and mapped to pixels through a similarity transform, so the same face
//! description renders at any pose, scale or image size. Coverage comes from the signed distance
//! in pixels, which gives anti-aliased edges for free and soft (feathered) edges for make-up,
//! shading and blending masks by widening the transition.

use crate::{Image, Result};

/// A point or vector (x or u first).
pub(crate) type P = (f32, f32);
/// A colour with channels in 0..=1 (sRGB values, not linear light).
pub(crate) type Rgb = [f32; 3];

/// `a + (b - a) * t` per channel.
pub(crate) fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

/// Every channel multiplied by `k`.
pub(crate) fn shade(a: Rgb, k: f32) -> Rgb {
    [a[0] * k, a[1] * k, a[2] * k]
}

/// A similarity transform from face units to pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Xform {
    /// Pixel position of the face-unit origin.
    pub cx: f32,
    /// Pixel position of the face-unit origin.
    pub cy: f32,
    /// Pixels per face unit.
    pub s: f32,
    cos: f32,
    sin: f32,
}

impl Xform {
    /// Origin at (`cx`, `cy`), `s` pixels per unit, rotated by `angle` radians (clockwise on
    /// screen, since y grows downwards).
    pub fn new(cx: f32, cy: f32, s: f32, angle: f32) -> Xform {
        Xform { cx, cy, s: s.max(1e-3), cos: angle.cos(), sin: angle.sin() }
    }

    /// Pixel coordinates are face units.
    pub fn identity() -> Xform {
        Xform::new(0.0, 0.0, 1.0, 0.0)
    }

    /// Face units to pixels.
    pub fn to_px(self, p: P) -> P {
        (
            self.cx + self.s * (self.cos * p.0 - self.sin * p.1),
            self.cy + self.s * (self.sin * p.0 + self.cos * p.1),
        )
    }

    /// Pixels to face units.
    pub fn to_face(self, x: f32, y: f32) -> P {
        let (dx, dy) = (x - self.cx, y - self.cy);
        ((self.cos * dx + self.sin * dy) / self.s, (-self.sin * dx + self.cos * dy) / self.s)
    }
}

/// A region of the plane given by a signed distance function (negative inside).
#[derive(Debug, Clone)]
pub(crate) enum Shape {
    /// An ellipse with centre, radii and rotation.
    Ellipse { c: P, r: P, rot: f32 },
    /// A simple polygon (even-odd inside test).
    Polygon(Vec<P>),
    /// A polyline thickened by a half-width that varies linearly between vertices.
    Stroke { pts: Vec<P>, half: Vec<f32> },
    /// Points inside both.
    And(Box<Shape>, Box<Shape>),
    /// Points inside the first and outside the second.
    Minus(Box<Shape>, Box<Shape>),
    /// The half-plane where `dot(p - at, n) < 0` (`n` unit length).
    Half { at: P, n: P },
    /// A polygon restricted to one neighbourhood: the inside test uses every vertex, the
    /// distance only the edges near it (see [`Shape::localize`]).
    Local { pts: Vec<P>, near: Vec<(P, P)> },
}

impl Shape {
    pub fn ellipse(c: P, rx: f32, ry: f32) -> Shape {
        Shape::Ellipse { c, r: (rx.max(1e-4), ry.max(1e-4)), rot: 0.0 }
    }

    pub fn ellipse_rot(c: P, rx: f32, ry: f32, rot: f32) -> Shape {
        Shape::Ellipse { c, r: (rx.max(1e-4), ry.max(1e-4)), rot }
    }

    pub fn circle(c: P, r: f32) -> Shape {
        Shape::ellipse(c, r, r)
    }

    /// A stroke whose half-width goes from `w0` at the first vertex to `w1` at the last.
    pub fn stroke(pts: Vec<P>, w0: f32, w1: f32) -> Shape {
        let n = pts.len().max(2) - 1;
        let half = (0..pts.len()).map(|i| w0 + (w1 - w0) * i as f32 / n as f32).collect();
        Shape::Stroke { pts, half }
    }

    /// A stroke whose half-width follows `f(t)` for t in 0..=1 along the vertices.
    pub fn stroke_fn(pts: Vec<P>, f: impl Fn(f32) -> f32) -> Shape {
        let n = pts.len().max(2) - 1;
        let half = (0..pts.len()).map(|i| f(i as f32 / n as f32)).collect();
        Shape::Stroke { pts, half }
    }

    /// The half-plane below (larger v than) the horizontal line `v = at`.
    pub fn below(v: f32) -> Shape {
        Shape::Half { at: (0.0, v), n: (0.0, -1.0) }
    }

    /// The half-plane above (smaller v than) the horizontal line `v = at`.
    pub fn above(v: f32) -> Shape {
        Shape::Half { at: (0.0, v), n: (0.0, 1.0) }
    }

    pub fn and(self, other: Shape) -> Shape {
        Shape::And(Box::new(self), Box::new(other))
    }

    pub fn minus(self, other: Shape) -> Shape {
        Shape::Minus(Box::new(self), Box::new(other))
    }

    /// Bounding box `[u0, v0, u1, v1]` in face units; `None` when unbounded.
    pub fn bbox(&self) -> Option<[f32; 4]> {
        match self {
            Shape::Ellipse { c, r, rot } => {
                let (cs, sn) = (rot.cos().abs(), rot.sin().abs());
                let ex = r.0 * cs + r.1 * sn;
                let ey = r.0 * sn + r.1 * cs;
                Some([c.0 - ex, c.1 - ey, c.0 + ex, c.1 + ey])
            }
            Shape::Polygon(pts) => points_box(pts, 0.0),
            Shape::Stroke { pts, half } => {
                let w = half.iter().fold(0.0f32, |a, b| a.max(*b));
                points_box(pts, w)
            }
            Shape::And(a, b) => match (a.bbox(), b.bbox()) {
                (Some(x), Some(y)) => {
                    Some([x[0].max(y[0]), x[1].max(y[1]), x[2].min(y[2]), x[3].min(y[3])])
                }
                (Some(x), None) | (None, Some(x)) => Some(x),
                (None, None) => None,
            },
            Shape::Minus(a, _) => a.bbox(),
            Shape::Half { .. } => None,
            Shape::Local { pts, .. } => points_box(pts, 0.0),
        }
    }

    /// Signed distance (negative inside) in face units; exact for polygons and strokes, a
    /// first-order approximation for ellipses, a bound for the boolean combinations, which is
    /// all anti-aliasing needs near edges.
    pub fn sdf(&self, p: P) -> f32 {
        match self {
            Shape::Ellipse { c, r, rot } => {
                let (dx, dy) = (p.0 - c.0, p.1 - c.1);
                let (cs, sn) = (rot.cos(), rot.sin());
                let lx = cs * dx + sn * dy;
                let ly = -sn * dx + cs * dy;
                let f = (lx / r.0).powi(2) + (ly / r.1).powi(2) - 1.0;
                let gx = lx / (r.0 * r.0);
                let gy = ly / (r.1 * r.1);
                let g = 2.0 * (gx * gx + gy * gy).sqrt();
                if g < 1e-6 {
                    -r.0.min(r.1)
                } else {
                    f / g
                }
            }
            Shape::Polygon(pts) => polygon_sdf(pts, p),
            Shape::Stroke { pts, half } => {
                let mut best = f32::INFINITY;
                for (seg, w) in pts.windows(2).zip(half.windows(2)) {
                    if let ([a, b], [wa, wb]) = (seg, w) {
                        let (d, t) = segment_distance(p, *a, *b);
                        best = best.min(d - (wa + (wb - wa) * t));
                    }
                }
                if let ([only], [w]) = (pts.as_slice(), half.as_slice()) {
                    best = dist(p, *only) - w;
                }
                best
            }
            Shape::And(a, b) => a.sdf(p).max(b.sdf(p)),
            Shape::Minus(a, b) => a.sdf(p).max(-b.sdf(p)),
            Shape::Half { at, n } => (p.0 - at.0) * n.0 + (p.1 - at.1) * n.1,
            Shape::Local { pts, near } => {
                let best2 = near
                    .iter()
                    .map(|(a, b)| segment_distance2(p, *a, *b))
                    .fold(f32::INFINITY, f32::min);
                let d = best2.sqrt();
                if polygon_contains(pts, p) {
                    -d
                } else {
                    d
                }
            }
        }
    }

    /// A copy whose [`Shape::sdf`] is exact wherever the true distance to the edge of a
    /// polygon is below `radius - dist(p, centre)`, with polygons reduced to their edges near
    /// `centre`: most of the cost of a polygon is distances to edges that cannot be nearest.
    pub fn localize(&self, centre: P, radius: f32) -> Shape {
        match self {
            Shape::Polygon(pts) => {
                let next = pts.iter().cycle().skip(1);
                let r2 = radius * radius;
                let near = pts
                    .iter()
                    .zip(next)
                    .filter(|(a, b)| segment_distance2(centre, **a, **b) <= r2)
                    .map(|(a, b)| (*a, *b))
                    .collect();
                Shape::Local { pts: pts.clone(), near }
            }
            Shape::And(a, b) => Shape::And(
                Box::new(a.localize(centre, radius)),
                Box::new(b.localize(centre, radius)),
            ),
            Shape::Minus(a, b) => Shape::Minus(
                Box::new(a.localize(centre, radius)),
                Box::new(b.localize(centre, radius)),
            ),
            other => other.clone(),
        }
    }

    fn has_polygon(&self) -> bool {
        match self {
            Shape::Polygon(_) => true,
            Shape::And(a, b) | Shape::Minus(a, b) => a.has_polygon() || b.has_polygon(),
            _ => false,
        }
    }
}

fn polygon_contains(pts: &[P], p: P) -> bool {
    let mut inside = false;
    for (a, b) in pts.iter().zip(pts.iter().cycle().skip(1)) {
        if (a.1 > p.1) != (b.1 > p.1) {
            let x = a.0 + (p.1 - a.1) / (b.1 - a.1) * (b.0 - a.0);
            if p.0 < x {
                inside = !inside;
            }
        }
    }
    inside
}

impl Shape {
    /// A conservative signed distance: when positive the point is at least that far outside,
    /// when negative at least that far inside, zero when unknown. Exact for the shapes whose
    /// [`Shape::sdf`] is exact; ellipses use their inscribed and circumscribed circles.
    pub fn bound(&self, p: P) -> f32 {
        match self {
            Shape::Ellipse { c, r, .. } => {
                let d = dist(p, *c);
                let (lo, hi) = (r.0.min(r.1), r.0.max(r.1));
                if d > hi {
                    d - hi
                } else if d < lo {
                    d - lo
                } else {
                    0.0
                }
            }
            Shape::And(a, b) => a.bound(p).max(b.bound(p)),
            Shape::Minus(a, b) => a.bound(p).max(-b.bound(p)),
            _ => self.sdf(p),
        }
    }
}

fn points_box(pts: &[P], pad: f32) -> Option<[f32; 4]> {
    if pts.is_empty() {
        return Some([0.0, 0.0, 0.0, 0.0]);
    }
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for p in pts {
        b = [b[0].min(p.0), b[1].min(p.1), b[2].max(p.0), b[3].max(p.1)];
    }
    Some([b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad])
}

fn dist(a: P, b: P) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// Distance from `p` to segment `ab` and the parameter of the closest point.
fn segment_distance(p: P, a: P, b: P) -> (f32, f32) {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let len2 = abx * abx + aby * aby;
    let t = if len2 < 1e-12 {
        0.0
    } else {
        (((p.0 - a.0) * abx + (p.1 - a.1) * aby) / len2).clamp(0.0, 1.0)
    };
    (dist(p, (a.0 + abx * t, a.1 + aby * t)), t)
}

fn segment_distance2(p: P, a: P, b: P) -> f32 {
    let (abx, aby) = (b.0 - a.0, b.1 - a.1);
    let (apx, apy) = (p.0 - a.0, p.1 - a.1);
    let len2 = abx * abx + aby * aby;
    let t = if len2 < 1e-12 { 0.0 } else { ((apx * abx + apy * aby) / len2).clamp(0.0, 1.0) };
    let (dx, dy) = (apx - abx * t, apy - aby * t);
    dx * dx + dy * dy
}

fn polygon_sdf(pts: &[P], p: P) -> f32 {
    let mut best2 = f32::INFINITY;
    let mut inside = false;
    let next = pts.iter().cycle().skip(1);
    for (a, b) in pts.iter().zip(next) {
        best2 = best2.min(segment_distance2(p, *a, *b));
        if (a.1 > p.1) != (b.1 > p.1) {
            let x = a.0 + (p.1 - a.1) / (b.1 - a.1) * (b.0 - a.0);
            if p.0 < x {
                inside = !inside;
            }
        }
    }
    let best = best2.sqrt();
    if inside {
        -best
    } else {
        best
    }
}

/// Points of the quadratic Bezier curve from `a` to `b` that passes through `m` at its middle.
pub(crate) fn curve(a: P, m: P, b: P, n: usize) -> Vec<P> {
    let c = (2.0 * m.0 - 0.5 * (a.0 + b.0), 2.0 * m.1 - 0.5 * (a.1 + b.1));
    let n = n.max(2);
    (0..=n)
        .map(|i| {
            let t = i as f32 / n as f32;
            let (k0, k1, k2) = ((1.0 - t) * (1.0 - t), 2.0 * (1.0 - t) * t, t * t);
            (k0 * a.0 + k1 * c.0 + k2 * b.0, k0 * a.1 + k1 * c.1 + k2 * b.1)
        })
        .collect()
}

/// A deterministic hash of integer coordinates to 0..1.
pub(crate) fn hash2(x: i32, y: i32, seed: u32) -> f32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343)
        ^ (y as u32).wrapping_mul(0xd816_3841)
        ^ seed.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    h = h.wrapping_mul(0x297a_2d39);
    h ^= h >> 15;
    (h >> 8) as f32 / (1u32 << 24) as f32
}

/// Smooth value noise in 0..1 with features about one unit wide.
pub(crate) fn value_noise(x: f32, y: f32, seed: u32) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i32, fy as i32);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = hash2(ix, iy, seed);
    let b = hash2(ix + 1, iy, seed);
    let c = hash2(ix, iy + 1, seed);
    let d = hash2(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// How a filled shape is coloured.
#[derive(Debug, Clone)]
pub(crate) enum Paint {
    /// One colour.
    Solid(Rgb),
    /// Linear gradient from `c0` at `a` to `c1` at `b` (face units).
    Linear { a: P, b: P, c0: Rgb, c1: Rgb },
    /// Radial gradient from `c0` at `c` to `c1` at distance `r` (face units).
    Radial { c: P, r: f32, c0: Rgb, c1: Rgb },
    /// A colour modulated by value noise of the given frequency (per face unit) and amplitude.
    Textured { base: Rgb, amp: f32, freq: f32, seed: u32 },
    /// Sparse pixel-sized dots: `density` of the pixels get the colour, with random strength.
    Stipple { color: Rgb, density: f32, seed: u32 },
}

impl Paint {
    fn at(&self, p: P, x: i32, y: i32) -> (Rgb, f32) {
        match self {
            Paint::Solid(c) => (*c, 1.0),
            Paint::Linear { a, b, c0, c1 } => {
                let (dx, dy) = (b.0 - a.0, b.1 - a.1);
                let len2 = (dx * dx + dy * dy).max(1e-9);
                let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0);
                (mix(*c0, *c1, t), 1.0)
            }
            Paint::Radial { c, r, c0, c1 } => {
                let t = (dist(p, *c) / r.max(1e-6)).clamp(0.0, 1.0);
                (mix(*c0, *c1, t), 1.0)
            }
            Paint::Textured { base, amp, freq, seed } => {
                let n = value_noise(p.0 * freq, p.1 * freq, *seed)
                    + 0.5 * value_noise(p.0 * freq * 2.3, p.1 * freq * 2.3, seed ^ 0x5bd1);
                (shade(*base, 1.0 + amp * (n / 1.5 - 0.5) * 2.0), 1.0)
            }
            Paint::Stipple { color, density, seed } => {
                let h = hash2(x, y, *seed);
                let keep = 1.0 - density.clamp(0.0, 1.0);
                let a = if h > keep { (h - keep) / (1.0 - keep).max(1e-6) } else { 0.0 };
                (*color, a.sqrt())
            }
        }
    }
}

/// The pixel rectangle `[x0, x1) x [y0, y1)` of a `w` x `h` image that `shape` can touch.
fn pixel_box(
    w: usize,
    h: usize,
    xf: &Xform,
    shape: &Shape,
    pad: f32,
) -> Option<(usize, usize, usize, usize)> {
    let Some(b) = shape.bbox() else {
        return Some((0, 0, w, h));
    };
    if b[0] > b[2] || b[1] > b[3] {
        return None;
    }
    let corners = [(b[0], b[1]), (b[2], b[1]), (b[0], b[3]), (b[2], b[3])];
    let mut r = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for c in corners {
        let (x, y) = xf.to_px(c);
        r = [r[0].min(x), r[1].min(y), r[2].max(x), r[3].max(y)];
    }
    let clampx = |v: f32| v.clamp(0.0, w as f32) as usize;
    let clampy = |v: f32| v.clamp(0.0, h as f32) as usize;
    let (x0, y0) = (clampx((r[0] - pad).floor()), clampy((r[1] - pad).floor()));
    let (x1, y1) = (clampx((r[2] + pad).ceil()), clampy((r[3] + pad).ceil()));
    (x0 < x1 && y0 < y1).then_some((x0, y0, x1, y1))
}

const TILE: usize = 8;

/// Calls `f(x, y, face_point, coverage)` for every pixel with positive coverage. Pixels are
/// visited in 8x8 tiles: a conservative distance at the tile centre settles whole tiles as
/// outside or fully inside, so the exact distance is only evaluated near edges.
fn for_covered(
    w: usize,
    h: usize,
    xf: &Xform,
    shape: &Shape,
    feather: f32,
    mut f: impl FnMut(usize, usize, P, f32),
) {
    let feather = feather.max(0.75);
    let Some((x0, y0, x1, y1)) = pixel_box(w, h, xf, shape, feather * 1.5 + 2.0) else {
        return;
    };
    let reach = TILE as f32 * std::f32::consts::FRAC_1_SQRT_2 + feather * 0.5 + 0.5;
    for ty in (y0..y1).step_by(TILE) {
        for tx in (x0..x1).step_by(TILE) {
            let (tx1, ty1) = ((tx + TILE).min(x1), (ty + TILE).min(y1));
            let centre = xf.to_face((tx + tx1) as f32 / 2.0, (ty + ty1) as f32 / 2.0);
            let b = shape.bound(centre) * xf.s;
            if b > reach {
                continue;
            }
            let solid = b < -reach;
            // Pixels of an edge tile whose coverage is not settled lie within `reach` of an
            // edge, so their nearest edge is within `|b| + 2 * tile radius` of the centre.
            let local;
            let shape_here = if !solid && shape.has_polygon() {
                let r = (b.abs() + 2.0 * reach + 1.0) / xf.s;
                local = shape.localize(centre, r);
                &local
            } else {
                shape
            };
            for y in ty..ty1 {
                for x in tx..tx1 {
                    let p = xf.to_face(x as f32 + 0.5, y as f32 + 0.5);
                    let cov = if solid {
                        1.0
                    } else {
                        (0.5 - shape_here.sdf(p) * xf.s / feather).clamp(0.0, 1.0)
                    };
                    if cov > 0.0 {
                        f(x, y, p, cov);
                    }
                }
            }
        }
    }
}

/// A floating-point RGB canvas.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Canvas {
    pub w: usize,
    pub h: usize,
    pub px: Vec<Rgb>,
}

impl Canvas {
    pub fn new(w: usize, h: usize, color: Rgb) -> Canvas {
        Canvas { w, h, px: vec![color; w * h] }
    }

    /// The pixel at (`x`, `y`) clamped to the canvas.
    pub fn at_clamped(&self, x: i64, y: i64) -> Rgb {
        let xc = x.clamp(0, self.w as i64 - 1).max(0) as usize;
        let yc = y.clamp(0, self.h as i64 - 1).max(0) as usize;
        self.px.get(yc * self.w + xc).copied().unwrap_or([0.0; 3])
    }

    /// Bilinear sample at pixel-centre coordinates (`x`, `y`), clamped at the borders.
    pub fn sample(&self, x: f32, y: f32) -> Rgb {
        let (gx, gy) = (x - 0.5, y - 0.5);
        let (fx, fy) = (gx.floor(), gy.floor());
        let (tx, ty) = (gx - fx, gy - fy);
        let (ix, iy) = (fx as i64, fy as i64);
        let top = mix(self.at_clamped(ix, iy), self.at_clamped(ix + 1, iy), tx);
        let bottom = mix(self.at_clamped(ix, iy + 1), self.at_clamped(ix + 1, iy + 1), tx);
        mix(top, bottom, ty)
    }

    /// Fills `shape` (in the face units of `xf`) with `paint` at `opacity`; `feather` is the
    /// width in pixels of the edge transition (1 is a crisp anti-aliased edge).
    pub fn fill(&mut self, xf: &Xform, shape: &Shape, paint: &Paint, opacity: f32, feather: f32) {
        if opacity <= 0.0 {
            return;
        }
        let w = self.w;
        let px = &mut self.px;
        for_covered(w, self.h, xf, shape, feather, |x, y, p, cov| {
            let (col, a) = paint.at(p, x as i32, y as i32);
            let a = (cov * a * opacity).clamp(0.0, 1.0);
            if let Some(dst) = px.get_mut(y * w + x) {
                *dst = mix(*dst, col, a);
            }
        });
    }

    /// Coverage of `shape` per pixel (0..1), with the same edge model as [`Canvas::fill`].
    pub fn coverage(&self, xf: &Xform, shape: &Shape, feather: f32) -> Vec<f32> {
        let mut out = vec![0.0; self.w * self.h];
        let w = self.w;
        for_covered(w, self.h, xf, shape, feather, |x, y, _, cov| {
            if let Some(o) = out.get_mut(y * w + x) {
                *o = cov;
            }
        });
        out
    }

    /// Applies `f(x, y, colour)` to every pixel.
    pub fn map(&mut self, mut f: impl FnMut(usize, usize, Rgb) -> Rgb) {
        let w = self.w.max(1);
        for (i, p) in self.px.iter_mut().enumerate() {
            *p = f(i % w, i / w, *p);
        }
    }

    /// Separable Gaussian blur with standard deviation `sigma` pixels (no-op below 0.2).
    pub fn blur(&mut self, sigma: f32) {
        if sigma < 0.2 || self.w == 0 || self.h == 0 {
            return;
        }
        let radius = (sigma * 3.0).ceil() as i64;
        let mut kernel: Vec<f32> =
            (-radius..=radius).map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp()).collect();
        let total: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= total);
        let mut tmp = vec![[0.0f32; 3]; self.px.len()];
        for y in 0..self.h {
            for x in 0..self.w {
                let mut acc = [0.0f32; 3];
                for (k, wgt) in kernel.iter().enumerate() {
                    let c = self.at_clamped(x as i64 + k as i64 - radius, y as i64);
                    acc = [acc[0] + c[0] * wgt, acc[1] + c[1] * wgt, acc[2] + c[2] * wgt];
                }
                if let Some(t) = tmp.get_mut(y * self.w + x) {
                    *t = acc;
                }
            }
        }
        let horizontal = Canvas { w: self.w, h: self.h, px: tmp };
        for y in 0..self.h {
            for x in 0..self.w {
                let mut acc = [0.0f32; 3];
                for (k, wgt) in kernel.iter().enumerate() {
                    let c = horizontal.at_clamped(x as i64, y as i64 + k as i64 - radius);
                    acc = [acc[0] + c[0] * wgt, acc[1] + c[1] * wgt, acc[2] + c[2] * wgt];
                }
                if let Some(p) = self.px.get_mut(y * self.w + x) {
                    *p = acc;
                }
            }
        }
    }

    /// Box-filters down by `factor` and resamples back up bilinearly: the blur and blockiness
    /// left by a low-resolution face generator.
    pub fn down_up(&self, factor: f32) -> Canvas {
        if factor <= 1.05 {
            return self.clone();
        }
        let sw = ((self.w as f32 / factor).round() as usize).max(2);
        let sh = ((self.h as f32 / factor).round() as usize).max(2);
        let mut small = Canvas::new(sw, sh, [0.0; 3]);
        let (fx, fy) = (self.w as f32 / sw as f32, self.h as f32 / sh as f32);
        for y in 0..sh {
            for x in 0..sw {
                let (x0, x1) = ((x as f32 * fx) as usize, (((x + 1) as f32 * fx) as usize).max(1));
                let (y0, y1) = ((y as f32 * fy) as usize, (((y + 1) as f32 * fy) as usize).max(1));
                let mut acc = [0.0f32; 3];
                let mut n = 0.0f32;
                for yy in y0..y1.min(self.h) {
                    for xx in x0..x1.min(self.w) {
                        let c = self.at_clamped(xx as i64, yy as i64);
                        acc = [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]];
                        n += 1.0;
                    }
                }
                if let Some(p) = small.px.get_mut(y * sw + x) {
                    *p = shade(acc, 1.0 / n.max(1.0));
                }
            }
        }
        let mut out = Canvas::new(self.w, self.h, [0.0; 3]);
        out.map(|x, y, _| small.sample((x as f32 + 0.5) / fx, (y as f32 + 0.5) / fy));
        out
    }

    /// Quantises to an 8-bit RGB image.
    pub fn to_image(&self) -> Result<Image> {
        let data = self
            .px
            .iter()
            .flat_map(|c| c.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
            .collect();
        Image::from_raw(self.w as u32, self.h as u32, 3, data)
    }

    /// Converts an RGB image back to a canvas (gray images are replicated).
    pub fn from_image(img: &Image) -> Canvas {
        let rgb = img.to_rgb();
        let px = rgb
            .as_bytes()
            .chunks_exact(3)
            .map(|c| match c {
                [r, g, b] => [*r as f32 / 255.0, *g as f32 / 255.0, *b as f32 / 255.0],
                _ => [0.0; 3],
            })
            .collect();
        Canvas { w: rgb.width() as usize, h: rgb.height() as usize, px }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdf_signs_and_coverage() {
        let e = Shape::ellipse((0.0, 0.0), 2.0, 1.0);
        assert!(e.sdf((0.0, 0.0)) < 0.0);
        assert!((e.sdf((3.0, 0.0)) - 1.0).abs() < 0.3);
        let sq = Shape::Polygon(vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]);
        assert!((sq.sdf((0.5, 0.5)) + 0.5).abs() < 1e-5);
        assert!((sq.sdf((2.0, 0.5)) - 1.0).abs() < 1e-5);
        let st = Shape::stroke(vec![(0.0, 0.0), (10.0, 0.0)], 1.0, 1.0);
        assert!((st.sdf((5.0, 3.0)) - 2.0).abs() < 1e-5);
        let hole = sq.clone().minus(Shape::circle((0.5, 0.5), 0.2));
        assert!(hole.sdf((0.5, 0.5)) > 0.0);

        let mut c = Canvas::new(20, 20, [0.0; 3]);
        let xf = Xform::new(10.0, 10.0, 5.0, 0.3);
        c.fill(&xf, &Shape::circle((0.0, 0.0), 1.0), &Paint::Solid([1.0; 3]), 1.0, 1.0);
        let lit: f32 = c.px.iter().map(|p| p[0]).sum();
        // Area of a radius-5 disc, within anti-aliasing error.
        assert!((lit - std::f32::consts::PI * 25.0).abs() < 3.0, "{lit}");
    }

    #[test]
    fn transform_roundtrip_and_blur_preserves_mean() {
        let xf = Xform::new(30.0, 40.0, 12.0, 0.2);
        let (x, y) = xf.to_px((0.7, -1.3));
        let (u, v) = xf.to_face(x, y);
        assert!((u - 0.7).abs() < 1e-4 && (v + 1.3).abs() < 1e-4);
        let mut c = Canvas::new(16, 16, [0.2; 3]);
        c.fill(
            &Xform::identity(),
            &Shape::circle((8.0, 8.0), 3.0),
            &Paint::Solid([1.0; 3]),
            1.0,
            1.0,
        );
        let before: f32 = c.px.iter().map(|p| p[1]).sum();
        c.blur(1.0);
        let after: f32 = c.px.iter().map(|p| p[1]).sum();
        assert!((before - after).abs() / before < 0.02);
        let d = c.down_up(2.0);
        assert_eq!((d.w, d.h), (16, 16));
    }
}
