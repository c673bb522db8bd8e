//! Turns a [`Plan`] into pixels.
//!
//! Faces are described in face units: the origin is the midpoint between the eyes, one unit is
//! the distance between the eyes, v grows downwards. A similarity transform places that frame
//! in the image, which is how alignment (eyes at a fixed height, face centred, as in
//! img_align_celeba), pose jitter and other framings (the square deepfake crops) all come from
//! one description.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::{uni, Beard, HairLength, HairTexture, Identity, Plan};
use crate::raster::{curve, mix, shade, Canvas, Paint, Shape, Xform, P};
use crate::{Image, Result};

/// Where the face-unit frame sits in an image of a given size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Framing {
    pub w: usize,
    pub h: usize,
    pub eye_x: f32,
    pub eye_y: f32,
    pub ied: f32,
}

impl Framing {
    /// img_align_celeba's framing scaled to `w` x `h`: at 178x218 the eyes sit near y 111 and
    /// 38 pixels apart.
    pub fn aligned(w: u32, h: u32) -> Framing {
        let k = (w as f32 / 178.0).min(h as f32 / 218.0);
        Framing {
            w: w as usize,
            h: h as usize,
            eye_x: w as f32 / 2.0,
            eye_y: h as f32 * 111.0 / 218.0,
            ied: 38.0 * k,
        }
    }

    /// A tight square face crop, as face-forensics detectors see it.
    pub fn square(size: u32) -> Framing {
        let s = size as f32;
        Framing {
            w: size as usize,
            h: size as usize,
            eye_x: s / 2.0,
            eye_y: s * 0.42,
            ied: s * 0.25,
        }
    }
}

/// Where the renderer put things, in pixels.
#[derive(Debug, Clone)]
pub(crate) struct Geometry {
    pub xf: Xform,
    /// Left eye, right eye, nose tip, left and right mouth corners (image left first).
    pub landmarks: [P; 5],
    /// Face box `[x0, y0, x1, y1]` (forehead to chin, cheek to cheek).
    pub bbox: [f32; 4],
}

/// Feature positions in face units after pose, yaw and asymmetry.
struct Layout {
    w_left: f32,
    w_right: f32,
    eye_l: P,
    eye_r: P,
    eye_scale_l: f32,
    eye_scale_r: f32,
    nose: P,
    mouth_l: P,
    mouth_r: P,
    mouth_v: f32,
    mid: f32,
}

fn layout(plan: &Plan) -> Layout {
    let id = &plan.id;
    let yaw = plan.pose.yaw;
    let mouth_v = 1.08 + (id.chin_v - 1.74) * 0.3;
    let lift = -0.09 * plan.smile;
    let tilt = id.asym[1];
    let mw = id.mouth_w * (1.0 + 0.08 * plan.smile);
    Layout {
        w_left: id.cheek_w * (1.0 - 0.08 * yaw),
        w_right: id.cheek_w * (1.0 + 0.08 * yaw),
        eye_l: (-id.eye_half + yaw * 0.13, id.asym[0]),
        eye_r: (id.eye_half + yaw * 0.13, -id.asym[0]),
        eye_scale_l: 1.0 + 0.5 * yaw.min(0.0),
        eye_scale_r: 1.0 - 0.5 * yaw.max(0.0),
        nose: (yaw * 0.3 + id.asym[2], 0.62 * id.nose_len),
        mouth_l: (-mw + yaw * 0.17, mouth_v + lift + tilt),
        mouth_r: (mw + yaw * 0.17, mouth_v + lift - tilt),
        mouth_v,
        mid: yaw * 0.05,
    }
}

const SKULL_TOP: f32 = -1.72;

/// Half-width of the head at height `v` (before yaw).
fn half_width(id: &Identity, v: f32) -> f32 {
    let w = id.cheek_w;
    let (c0, c1, chin) = (-0.25, 0.45, id.chin_v);
    if v <= SKULL_TOP {
        0.0
    } else if v < c0 {
        let k = (v - c0) / (SKULL_TOP - c0);
        w * (1.0 - k * k).max(0.0).sqrt()
    } else if v < c1 {
        w
    } else if v < chin {
        let t = (v - c1) / (chin - c1);
        id.chin_w + (w - id.chin_w) * (1.0 - t.powf(id.jaw_p)).max(0.0).sqrt()
    } else {
        id.chin_w
    }
}

fn side_x(id: &Identity, l: &Layout, v: f32, right: bool, grow: f32) -> f32 {
    let hw = half_width(id, v) / id.cheek_w;
    if right {
        l.mid + hw * (l.w_right + grow)
    } else {
        l.mid - hw * (l.w_left + grow)
    }
}

/// The head outline (skull top to chin), grown outwards by `grow` face units.
fn outline(id: &Identity, l: &Layout, grow: f32) -> Vec<P> {
    let n = 22;
    let chin = id.chin_v + grow;
    let vs: Vec<f32> = (0..=n)
        .map(|i| {
            // Denser sampling near the skull top, where the outline turns fastest.
            let t = i as f32 / n as f32;
            let t = t * t * (3.0 - 2.0 * t) * 0.5 + t * 0.5;
            SKULL_TOP - grow + (chin - SKULL_TOP + grow) * t
        })
        .collect();
    let mut pts: Vec<P> =
        vs.iter().map(|&v| (side_x(id, l, v.min(id.chin_v), true, grow), v)).collect();
    pts.push((l.mid + l.nose.0 * 0.2, chin + 0.06));
    pts.extend(vs.iter().rev().map(|&v| (side_x(id, l, v.min(id.chin_v), false, grow), v)));
    pts
}

fn px(xf: &Xform, face_units: f32) -> f32 {
    face_units * xf.s
}

fn superellipse(c: P, a: f32, b: f32, n: f32, k: usize) -> Vec<P> {
    (0..k)
        .map(|i| {
            let t = i as f32 / k as f32 * std::f32::consts::TAU;
            let (cs, sn) = (t.cos(), t.sin());
            (
                c.0 + a * cs.signum() * cs.abs().powf(2.0 / n),
                c.1 + b * sn.signum() * sn.abs().powf(2.0 / n),
            )
        })
        .collect()
}

/// Places the face-unit frame and the features of `plan` in the image.
fn place(plan: &Plan, fr: &Framing) -> (Layout, Vec<P>, Geometry) {
    let pose = &plan.pose;
    let xf = Xform::new(
        fr.eye_x + pose.dx * fr.ied,
        fr.eye_y + pose.dy * fr.ied,
        fr.ied * pose.scale,
        pose.rot,
    );
    let l = layout(plan);
    let head = outline(&plan.id, &l, 0.0);
    let landmarks = [l.eye_l, l.eye_r, l.nose, l.mouth_l, l.mouth_r].map(|p| xf.to_px(p));
    let mut bbox = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for p in head.iter().filter(|p| p.1 >= -0.95) {
        let (x, y) = xf.to_px(*p);
        bbox = [bbox[0].min(x), bbox[1].min(y), bbox[2].max(x), bbox[3].max(y)];
    }
    (l, head, Geometry { xf, landmarks, bbox })
}

/// Where [`render`] would put the landmarks and the face box, without drawing.
pub(crate) fn geometry(plan: &Plan, fr: &Framing) -> Geometry {
    place(plan, fr).2
}

/// Renders the face before the camera effects of [`finish`] (blur, noise, quantisation).
pub(crate) fn render(plan: &Plan, fr: &Framing) -> (Canvas, Geometry) {
    let (l, head, geo) = place(plan, fr);
    let xf = geo.xf;
    let id = &plan.id;
    let mut rng =
        ChaCha8Rng::seed_from_u64(u64::from(id.seed) ^ (u64::from(plan.background.seed) << 32));
    let mut c = Canvas::new(fr.w, fr.h, plan.background.c0);

    background(&mut c, plan, fr);
    back_hair(&mut c, &xf, plan, &l, &mut rng);
    torso(&mut c, &xf, plan, &l);
    ears(&mut c, &xf, plan, &l);
    face(&mut c, &xf, plan, &l, &head);
    skin_marks(&mut c, &xf, plan, &l, &mut rng);
    facial_hair(&mut c, &xf, plan, &l, &head);
    eyes(&mut c, &xf, plan, &l);
    brows(&mut c, &xf, plan, &l, &mut rng);
    nose(&mut c, &xf, plan, &l);
    mouth(&mut c, &xf, plan, &l);
    mustache(&mut c, &xf, plan, &l);
    front_hair(&mut c, &xf, plan, &l, &mut rng);
    earrings(&mut c, &xf, plan, &l);
    hat(&mut c, &xf, plan, &l);
    glasses(&mut c, &xf, plan, &l);
    lighting(&mut c, plan);
    (c, geo)
}

/// Camera effects: blur, sensor noise, 8-bit quantisation.
pub(crate) fn finish(
    mut c: Canvas,
    plan: &Plan,
    scale: f32,
    rng: &mut ChaCha8Rng,
) -> Result<Image> {
    c.blur(plan.blur * scale);
    if plan.noise > 0.001 {
        let sigma = plan.noise;
        // Irwin-Hall approximations of normals: sensor noise needs the shape, not the tails.
        let mut gauss = || {
            let s: f32 = (0..4).map(|_| rng.random::<f32>()).sum();
            (s - 2.0) * 1.732
        };
        c.map(|_, _, p| {
            let n = sigma * gauss();
            let (r, b) = (0.3 * sigma * gauss(), 0.3 * sigma * gauss());
            [p[0] + n + r, p[1] + n, p[2] + n + b]
        });
    }
    c.to_image()
}

fn background(c: &mut Canvas, plan: &Plan, fr: &Framing) {
    let bg = &plan.background;
    let id = Xform::identity();
    let all = Shape::Half { at: (0.0, -1e6), n: (0.0, -1.0) };
    let (w, h) = (fr.w as f32, fr.h as f32);
    let mut rng = ChaCha8Rng::seed_from_u64(u64::from(bg.seed));
    match bg.kind {
        0 => c.fill(
            &id,
            &all,
            &Paint::Textured { base: bg.c0, amp: 0.25, freq: 0.05, seed: bg.seed },
            1.0,
            1.0,
        ),
        1 => {
            let (cs, sn) = (bg.angle.cos(), bg.angle.sin());
            let (cx, cy) = (w / 2.0, h / 2.0);
            let r = w.max(h) * 0.6;
            let paint = Paint::Linear {
                a: (cx - cs * r, cy - sn * r),
                b: (cx + cs * r, cy + sn * r),
                c0: bg.c0,
                c1: bg.c1,
            };
            c.fill(&id, &all, &paint, 1.0, 1.0);
        }
        2 => {
            for _ in 0..7 {
                let centre = (uni(&mut rng, 0.0, w), uni(&mut rng, 0.0, h));
                let r = uni(&mut rng, 0.08, 0.3) * w;
                let col = mix(bg.c0, bg.c1, rng_unit(&mut rng));
                c.fill(&id, &Shape::circle(centre, r), &Paint::Solid(col), 0.7, r * 0.5);
            }
        }
        _ => {
            let mut x = 0.0;
            while x < w {
                let bw = uni(&mut rng, 0.1, 0.4) * w;
                let col = mix(bg.c0, bg.c1, rng_unit(&mut rng));
                let rect = Shape::Polygon(vec![
                    (x, -1.0),
                    (x + bw, -1.0),
                    (x + bw, h + 1.0),
                    (x, h + 1.0),
                ]);
                c.fill(&id, &rect, &Paint::Solid(col), 1.0, 2.0);
                x += bw;
            }
        }
    }
    // Backgrounds are out of focus behind a portrait.
    c.blur(1.2 * fr.ied / 38.0);
}

fn rng_unit(rng: &mut ChaCha8Rng) -> f32 {
    uni(rng, 0.0, 1.0)
}

fn skin_paint(id: &Identity, centre: P, r: f32) -> Paint {
    Paint::Radial { c: centre, r, c0: shade(id.skin, 1.05), c1: shade(id.skin, 0.86) }
}

fn back_hair(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout, rng: &mut ChaCha8Rng) {
    let id = &plan.id;
    if id.bald || id.hair_len == HairLength::Short {
        return;
    }
    let len_v = if id.hair_len == HairLength::Long { 3.0 } else { 1.55 };
    let rx = id.cheek_w + id.volume + 0.1;
    let ry = 1.45 + id.volume;
    let wave = if id.texture == HairTexture::Wavy { 0.06 } else { 0.015 };
    let phase = uni(rng, 0.0, 6.0);
    let mut pts = vec![(l.mid + rx + 0.25, len_v)];
    for i in 0..=20 {
        let t = i as f32 / 20.0 * std::f32::consts::PI;
        let k = 1.0 + wave * (t * 9.0 + phase).sin();
        pts.push((l.mid + rx * t.cos() * k, -0.3 - ry * t.sin() * k));
    }
    pts.push((l.mid - rx - 0.25, len_v));
    for i in 1..8 {
        let u = l.mid - rx - 0.25 + (2.0 * rx + 0.5) * i as f32 / 8.0;
        pts.push((u, len_v + 0.12 * (u * 7.0 + phase).sin() - 0.1 * (i % 2) as f32));
    }
    let shape = Shape::Polygon(pts);
    c.fill(
        xf,
        &shape,
        &Paint::Textured { base: shade(id.hair, 0.8), amp: 0.25, freq: 6.0, seed: id.seed },
        1.0,
        1.0,
    );
}

fn torso(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    let id = &plan.id;
    let m = l.mid;
    let neck =
        Shape::Polygon(vec![(m - 0.45, 1.2), (m + 0.45, 1.2), (m + 0.52, 2.5), (m - 0.52, 2.5)]);
    c.fill(xf, &neck, &Paint::Solid(shade(id.skin, 0.84)), 1.0, 1.0);
    let shoulders = Shape::Polygon(vec![
        (m - 3.2, 4.5),
        (m - 3.2, 2.95),
        (m - 1.7, 2.45),
        (m - 0.55, 2.22),
        (m + 0.55, 2.22),
        (m + 1.7, 2.45),
        (m + 3.2, 2.95),
        (m + 3.2, 4.5),
    ]);
    let cloth = Paint::Textured { base: plan.clothes, amp: 0.12, freq: 3.0, seed: id.seed ^ 7 };
    c.fill(xf, &shoulders, &cloth, 1.0, 1.0);
    let skin = Paint::Solid(shade(id.skin, 0.86));
    match plan.neckline {
        0 => c.fill(xf, &Shape::ellipse((m, 2.22), 0.7, 0.42), &skin, 1.0, 1.0),
        1 => c.fill(
            xf,
            &Shape::Polygon(vec![(m - 0.62, 2.2), (m + 0.62, 2.2), (m, 3.0)]),
            &skin,
            1.0,
            1.0,
        ),
        2 => {
            let white = Paint::Solid(if chance_from(id.seed, 3) {
                [0.93, 0.93, 0.95]
            } else {
                [0.7, 0.78, 0.9]
            });
            c.fill(
                xf,
                &Shape::Polygon(vec![(m - 0.6, 2.2), (m, 2.35), (m - 0.05, 2.75), (m - 0.7, 2.5)]),
                &white,
                1.0,
                1.0,
            );
            c.fill(
                xf,
                &Shape::Polygon(vec![(m + 0.6, 2.2), (m, 2.35), (m + 0.05, 2.75), (m + 0.7, 2.5)]),
                &white,
                1.0,
                1.0,
            );
        }
        _ => {}
    }
    // The chin shades the neck.
    c.fill(
        xf,
        &Shape::ellipse((m, id.chin_v + 0.05), 0.5, 0.22),
        &Paint::Solid(shade(id.skin, 0.6)),
        0.5,
        px(xf, 0.12),
    );
    if plan.tie {
        let tie_col = mix(shade(plan.clothes, 0.5), [0.6, 0.1, 0.15], 0.6);
        let tie = Paint::Textured { base: tie_col, amp: 0.2, freq: 12.0, seed: id.seed ^ 11 };
        c.fill(
            xf,
            &Shape::Polygon(vec![
                (m - 0.11, 2.3),
                (m + 0.11, 2.3),
                (m + 0.08, 2.5),
                (m - 0.08, 2.5),
            ]),
            &tie,
            1.0,
            1.0,
        );
        c.fill(
            xf,
            &Shape::Polygon(vec![
                (m - 0.08, 2.5),
                (m + 0.08, 2.5),
                (m + 0.17, 3.3),
                (m, 3.5),
                (m - 0.17, 3.3),
            ]),
            &tie,
            1.0,
            1.0,
        );
    }
    if plan.necklace {
        let col = if chance_from(id.seed, 5) { [0.85, 0.7, 0.3] } else { [0.9, 0.9, 0.92] };
        let chain = curve((m - 0.5, 2.0), (m, 2.42), (m + 0.5, 2.0), 12);
        c.fill(xf, &Shape::stroke(chain, 0.016, 0.016), &Paint::Solid(col), 1.0, 1.0);
        c.fill(xf, &Shape::circle((m, 2.48), 0.055), &Paint::Solid(shade(col, 1.05)), 1.0, 1.0);
    }
}

/// A deterministic coin from an identity seed, for choices that must not consume the plan RNG.
fn chance_from(seed: u32, salt: u32) -> bool {
    crate::raster::hash2(seed as i32, salt as i32, 0x51) < 0.5
}

fn ears(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    let id = &plan.id;
    for (sign, w) in [(-1.0f32, l.w_left), (1.0, l.w_right)] {
        let centre = (l.mid + sign * (w + 0.02), 0.22);
        c.fill(
            xf,
            &Shape::ellipse_rot(centre, 0.12, 0.26, sign * 0.15),
            &Paint::Solid(shade(id.skin, 0.9)),
            1.0,
            1.0,
        );
        c.fill(
            xf,
            &Shape::ellipse((centre.0 + sign * 0.02, 0.22), 0.05, 0.15),
            &Paint::Solid(shade(id.skin, 0.7)),
            0.6,
            px(xf, 0.04),
        );
    }
}

fn face(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout, head: &[P]) {
    let id = &plan.id;
    if id.double_chin {
        c.fill(
            xf,
            &Shape::ellipse((l.mid, id.chin_v + 0.02), id.chin_w + 0.3, 0.2),
            &Paint::Solid(shade(id.skin, 0.9)),
            1.0,
            1.0,
        );
    }
    let light = (-0.25 * plan.light.angle.cos(), 0.1 - 0.25 * plan.light.angle.sin());
    c.fill(xf, &Shape::Polygon(head.to_vec()), &skin_paint(id, light, 1.9), 1.0, 1.0);
    if id.double_chin {
        let fold = curve(
            (l.mid - id.chin_w - 0.15, id.chin_v - 0.02),
            (l.mid, id.chin_v + 0.12),
            (l.mid + id.chin_w + 0.15, id.chin_v - 0.02),
            10,
        );
        c.fill(
            xf,
            &Shape::stroke(fold, 0.012, 0.012),
            &Paint::Solid(shade(id.skin, 0.7)),
            0.6,
            px(xf, 0.03),
        );
    }
    // The cheeks of a chubby face catch light and fold at the mouth.
    if id.chubby {
        for s in [-1.0f32, 1.0] {
            c.fill(
                xf,
                &Shape::ellipse((l.mid + s * 0.62, 0.75), 0.32, 0.26),
                &Paint::Solid(shade(id.skin, 1.08)),
                0.35,
                px(xf, 0.15),
            );
        }
    }
}

fn skin_marks(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout, rng: &mut ChaCha8Rng) {
    let id = &plan.id;
    let age_k = ((id.age - 35.0) / 35.0).clamp(0.0, 1.0);
    let line = shade(id.skin, 0.68);
    let soft = px(xf, 0.025);
    if !plan.makeup {
        // Blemishes: what "skin clarity" looks like; foundation hides them.
        let n = ((1.0 - id.clarity) * 14.0) as usize;
        for _ in 0..n {
            let p = (uni(rng, -0.9, 0.9), uni(rng, -0.8, 1.4));
            if p.1 > 0.7 && p.0.abs() < 0.5 {
                continue;
            }
            let col = mix(id.skin, [0.6, 0.25, 0.2], 0.5);
            c.fill(
                xf,
                &Shape::circle(p, uni(rng, 0.015, 0.035)),
                &Paint::Solid(col),
                0.55,
                px(xf, 0.02),
            );
        }
    }
    if age_k > 0.0 {
        for k in 0..3 {
            let v = -0.6 - 0.14 * k as f32;
            let pts =
                curve((l.mid - 0.5, v + 0.03), (l.mid, v - 0.03), (l.mid + 0.5, v + 0.03), 10);
            c.fill(xf, &Shape::stroke(pts, 0.008, 0.008), &Paint::Solid(line), 0.45 * age_k, soft);
        }
        for (e, s) in [(l.eye_l, -1.0f32), (l.eye_r, 1.0)] {
            for k in -1..=1 {
                let a = (e.0 + s * 0.27, e.1 + 0.03 * k as f32);
                let b = (e.0 + s * 0.4, e.1 + 0.08 * k as f32);
                c.fill(
                    xf,
                    &Shape::stroke(vec![a, b], 0.007, 0.004),
                    &Paint::Solid(line),
                    0.5 * age_k,
                    soft,
                );
            }
        }
    }
    let fold_k = (age_k * 0.6 + plan.smile * 0.45).min(1.0);
    if fold_k > 0.05 {
        for (m, s) in [(l.mouth_l, -1.0f32), (l.mouth_r, 1.0)] {
            let a = (l.nose.0 + s * 0.2, l.nose.1 + 0.02);
            let b = (m.0 + s * 0.07, m.1 + 0.08);
            let pts = curve(a, ((a.0 + b.0) / 2.0 + s * 0.1, (a.1 + b.1) / 2.0), b, 10);
            c.fill(
                xf,
                &Shape::stroke(pts, 0.012, 0.006),
                &Paint::Solid(line),
                0.4 * fold_k,
                px(xf, 0.04),
            );
        }
    }
    if id.bags {
        for e in [l.eye_l, l.eye_r] {
            let pts =
                curve((e.0 - 0.17, e.1 + 0.1), (e.0, e.1 + 0.19), (e.0 + 0.17, e.1 + 0.1), 10);
            c.fill(
                xf,
                &Shape::stroke(pts, 0.02, 0.02),
                &Paint::Solid(shade(id.skin, 0.72)),
                0.5,
                px(xf, 0.04),
            );
        }
    }
    if plan.cheekbones {
        for s in [-1.0f32, 1.0] {
            let hi = (l.mid + s * 0.62, 0.36 - 0.08 * plan.smile);
            c.fill(
                xf,
                &Shape::ellipse(hi, 0.26, 0.12),
                &Paint::Solid(shade(id.skin, 1.15)),
                0.35,
                px(xf, 0.1),
            );
            let pts = curve(
                (l.mid + s * 0.95, 0.55),
                (l.mid + s * 0.78, 0.72),
                (l.mid + s * 0.55, 0.8),
                8,
            );
            c.fill(
                xf,
                &Shape::stroke(pts, 0.05, 0.02),
                &Paint::Solid(shade(id.skin, 0.78)),
                0.3,
                px(xf, 0.08),
            );
        }
    }
    if plan.rosy {
        for s in [-1.0f32, 1.0] {
            c.fill(
                xf,
                &Shape::ellipse((l.mid + s * 0.62, 0.55), 0.24, 0.15),
                &Paint::Solid([0.88, 0.35, 0.35]),
                0.4,
                px(xf, 0.14),
            );
        }
    }
    if plan.makeup {
        for s in [-1.0f32, 1.0] {
            c.fill(
                xf,
                &Shape::ellipse((l.mid + s * 0.65, 0.45), 0.22, 0.13),
                &Paint::Solid([0.9, 0.45, 0.5]),
                0.3,
                px(xf, 0.12),
            );
        }
    }
}

fn beard_zone(l: &Layout, id: &Identity, upper: bool) -> Shape {
    let m = l.mid;
    let top = if upper { l.nose.1 + 0.12 } else { l.mouth_v + 0.18 };
    let mut pts = vec![(m - id.cheek_w - 0.2, 0.3), (m - 0.62, 0.72)];
    if upper {
        pts.extend([(m - 0.3, top), (m + 0.3, top)]);
    } else {
        pts.extend([
            (l.mouth_l.0 - 0.1, l.mouth_l.1),
            (m - 0.2, top),
            (m + 0.2, top),
            (l.mouth_r.0 + 0.1, l.mouth_r.1),
        ]);
    }
    pts.extend([
        (m + 0.62, 0.72),
        (m + id.cheek_w + 0.2, 0.3),
        (m + id.cheek_w + 0.2, 2.6),
        (m - id.cheek_w - 0.2, 2.6),
    ]);
    Shape::Polygon(pts)
}

fn facial_hair(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout, head: &[P]) {
    let id = &plan.id;
    let hair_col = shade(id.hair, 0.75);
    let face = Shape::Polygon(head.to_vec());
    if plan.sideburns {
        for (s, w) in [(-1.0f32, l.w_left), (1.0, l.w_right)] {
            let x = l.mid + s * w;
            let strip = Shape::Polygon(vec![
                (x, -0.2),
                (x - s * 0.17, -0.2),
                (x - s * 0.2, 0.7),
                (x, 0.75),
            ]);
            c.fill(
                xf,
                &strip.and(face.clone()),
                &Paint::Textured { base: hair_col, amp: 0.3, freq: 14.0, seed: id.seed },
                0.95,
                1.5,
            );
        }
    }
    match plan.beard {
        Beard::Stubble => {
            let zone = beard_zone(l, id, true).and(face.clone());
            c.fill(
                xf,
                &zone,
                &Paint::Solid(mix(id.skin, [0.25, 0.27, 0.3], 0.5)),
                0.3,
                px(xf, 0.08),
            );
            c.fill(
                xf,
                &zone,
                &Paint::Stipple { color: shade(hair_col, 0.6), density: 0.25, seed: id.seed },
                0.3,
                1.0,
            );
        }
        Beard::Full => {
            let grown = Shape::Polygon(outline(id, l, 0.07));
            let zone = beard_zone(l, id, false).and(grown);
            c.fill(
                xf,
                &zone,
                &Paint::Textured { base: hair_col, amp: 0.35, freq: 12.0, seed: id.seed },
                1.0,
                px(xf, 0.04),
            );
        }
        Beard::Goatee => {
            let g = Shape::ellipse((l.mid + l.nose.0 * 0.3, l.mouth_v + 0.42), 0.26, 0.32)
                .minus(Shape::ellipse((l.mid, l.mouth_v), 0.35, 0.14));
            c.fill(
                xf,
                &g.and(face),
                &Paint::Textured { base: hair_col, amp: 0.35, freq: 12.0, seed: id.seed },
                1.0,
                px(xf, 0.04),
            );
        }
        Beard::None => {}
    }
}

fn eyes(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    let id = &plan.id;
    let open = plan.eye_open
        * if id.narrow || plan.squint { 0.55 } else { 1.0 }
        * (1.0 - 0.15 * plan.smile);
    for (e, k) in [(l.eye_l, l.eye_scale_l), (l.eye_r, l.eye_scale_r)] {
        let rx = 0.19 * id.eye_size * k;
        let ry = (0.085 * id.eye_size * open).max(0.006);
        // Eye sockets are in shadow.
        c.fill(
            xf,
            &Shape::ellipse((e.0, e.1 - 0.04), 0.27 * k, 0.15),
            &Paint::Solid(shade(id.skin, 0.82)),
            0.35,
            px(xf, 0.08),
        );
        if plan.makeup {
            c.fill(
                xf,
                &Shape::ellipse((e.0, e.1 - 0.09), 0.25 * k, 0.12),
                &Paint::Solid(id.eyeshadow),
                0.6,
                px(xf, 0.06),
            );
        }
        let sclera = Shape::ellipse(e, rx, ry);
        c.fill(xf, &sclera, &Paint::Solid([0.92, 0.9, 0.87]), 1.0, 1.0);
        let iris_c = (e.0 + plan.gaze, e.1);
        c.fill(
            xf,
            &Shape::circle(iris_c, 0.075 * id.eye_size).and(sclera.clone()),
            &Paint::Solid(id.iris),
            1.0,
            1.0,
        );
        c.fill(
            xf,
            &Shape::circle(iris_c, 0.033 * id.eye_size).and(sclera.clone()),
            &Paint::Solid([0.03, 0.03, 0.03]),
            1.0,
            1.0,
        );
        c.fill(
            xf,
            &Shape::circle((iris_c.0 + 0.022, iris_c.1 - 0.022), 0.014).and(sclera),
            &Paint::Solid([1.0; 3]),
            0.9,
            1.0,
        );
        let lid: Vec<P> = (0..=12)
            .map(|i| {
                let t = std::f32::consts::PI * (1.0 + i as f32 / 12.0);
                (e.0 + rx * t.cos(), e.1 + ry * t.sin())
            })
            .collect();
        let liner = if plan.makeup { 0.03 } else { 0.015 };
        c.fill(
            xf,
            &Shape::stroke_fn(lid.clone(), |t| {
                liner * (0.6 + 0.6 * (t * std::f32::consts::PI).sin())
            }),
            &Paint::Solid([0.08, 0.06, 0.05]),
            1.0,
            1.0,
        );
        let crease: Vec<P> = lid.iter().map(|p| (p.0, p.1 - 0.06)).collect();
        c.fill(
            xf,
            &Shape::stroke(crease, 0.008, 0.008),
            &Paint::Solid(shade(id.skin, 0.7)),
            0.5,
            px(xf, 0.02),
        );
        let lower: Vec<P> = (0..=10)
            .map(|i| {
                let t = std::f32::consts::PI * (i as f32 / 10.0);
                (e.0 + rx * t.cos(), e.1 + ry * t.sin())
            })
            .collect();
        c.fill(
            xf,
            &Shape::stroke(lower, 0.007, 0.007),
            &Paint::Solid(shade(id.skin, 0.55)),
            0.45,
            1.0,
        );
    }
}

fn brows(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout, rng: &mut ChaCha8Rng) {
    let id = &plan.id;
    let arch = if plan.arched { id.brow_arch.max(0.09) } else { id.brow_arch };
    let col = if id.hair_kind == crate::model::HairColor::Blond {
        shade(id.hair, 0.6)
    } else {
        shade(id.hair, 0.8)
    };
    let col = if plan.makeup { shade(col, 0.8) } else { col };
    for (e, s, dy) in [(l.eye_l, -1.0f32, id.asym[3]), (l.eye_r, 1.0, -id.asym[3])] {
        let raise = 0.03 * plan.smile;
        let inner = (e.0 - s * 0.26, e.1 - 0.23 + dy - raise);
        let peak_shift = if plan.arched { 0.08 } else { 0.02 };
        let peak = (e.0 + s * peak_shift, e.1 - 0.3 - arch + dy - raise);
        let outer = (e.0 + s * 0.29, e.1 - 0.22 + dy - raise);
        let pts = curve(inner, peak, outer, 12);
        let w = id.brow_w;
        c.fill(
            xf,
            &Shape::stroke_fn(pts.clone(), |t| w * (1.0 - 0.55 * t)),
            &Paint::Solid(col),
            0.95,
            1.0,
        );
        if id.bushy {
            for _ in 0..6 {
                let o = (uni(rng, -0.25, 0.25), uni(rng, -0.03, 0.03));
                let hair: Vec<P> = pts.iter().map(|p| (p.0 + o.0 * 0.1, p.1 + o.1)).collect();
                c.fill(
                    xf,
                    &Shape::stroke(hair, 0.012, 0.006),
                    &Paint::Solid(shade(col, 0.7)),
                    0.6,
                    1.0,
                );
            }
        }
    }
}

fn nose(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    let id = &plan.id;
    let (nx, nv) = l.nose;
    let nw = id.nose_w;
    let dark = Paint::Solid(shade(id.skin, 0.66));
    for s in [-1.0f32, 1.0] {
        let bridge = vec![(nx * 0.4 + s * 0.1, 0.05), (nx * 0.8 + s * 0.12 * nw, nv - 0.12)];
        c.fill(xf, &Shape::stroke(bridge, 0.02, 0.03), &dark, 0.16, px(xf, 0.05));
        let wing = curve(
            (nx + s * 0.06 * nw, nv - 0.06),
            (nx + s * 0.16 * nw, nv + 0.02),
            (nx + s * 0.07 * nw, nv + 0.08),
            8,
        );
        c.fill(xf, &Shape::stroke(wing, 0.012, 0.01), &dark, 0.5, px(xf, 0.02));
        c.fill(
            xf,
            &Shape::ellipse_rot((nx + s * 0.085 * nw, nv + 0.065), 0.045 * nw, 0.022, s * 0.3),
            &Paint::Solid(shade(id.skin, 0.35)),
            0.85,
            1.0,
        );
    }
    let (tip_rx, tip_ry) = if id.pointy { (0.045, 0.07) } else { (0.07 * nw, 0.05) };
    c.fill(
        xf,
        &Shape::ellipse((nx, nv - 0.04), tip_rx, tip_ry),
        &Paint::Solid(shade(id.skin, 1.12)),
        0.45,
        px(xf, 0.04),
    );
    let shadow_ry = if id.pointy { 0.03 } else { 0.04 };
    c.fill(xf, &Shape::ellipse((nx, nv + 0.13), 0.13 * nw, shadow_ry), &dark, 0.35, px(xf, 0.03));
}

fn mouth(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    let id = &plan.id;
    let (lc, rc) = (l.mouth_l, l.mouth_r);
    let cx = (lc.0 + rc.0) / 2.0;
    let base = (lc.1 + rc.1) / 2.0;
    let sag = 0.07 * plan.smile;
    let gap = if plan.open > 0.3 { 0.04 + 0.12 * plan.open } else { 0.008 * plan.open };
    let (ul, ll) = (id.lip_u, id.lip_l);
    let lip_col = plan.lipstick.unwrap_or(id.lip_color);
    let top: Vec<P> = {
        let mut v = curve(
            lc,
            (cx - 0.2, base - ul - 0.01 + sag * 0.3),
            (cx, base - ul * 0.7 + sag * 0.3),
            6,
        );
        v.extend(
            curve(
                (cx, base - ul * 0.7 + sag * 0.3),
                (cx + 0.2, base - ul - 0.01 + sag * 0.3),
                rc,
                6,
            )
            .into_iter()
            .skip(1),
        );
        v
    };
    let upper_in = curve(lc, (cx, base + sag - gap / 2.0), rc, 12);
    let lower_in = curve(lc, (cx, base + sag + gap / 2.0), rc, 12);
    let bottom = curve(lc, (cx, base + sag + gap / 2.0 + ll * 1.6), rc, 12);
    if gap > 0.02 {
        let mut inside = upper_in.clone();
        inside.extend(lower_in.iter().rev());
        let inside = Shape::Polygon(inside);
        c.fill(xf, &inside, &Paint::Solid([0.22, 0.05, 0.06]), 1.0, 1.0);
        if plan.teeth {
            let teeth_edge: Vec<P> = upper_in.iter().map(|p| (p.0, p.1 + 0.07)).collect();
            let mut band = upper_in.clone();
            band.extend(teeth_edge.iter().rev());
            c.fill(
                xf,
                &Shape::Polygon(band).and(inside.clone()),
                &Paint::Solid([0.94, 0.92, 0.86]),
                1.0,
                1.0,
            );
            for k in -2..=2 {
                let x = cx + 0.09 * k as f32;
                let seam = vec![(x, base + sag - gap / 2.0), (x, base + sag - gap / 2.0 + 0.07)];
                c.fill(
                    xf,
                    &Shape::stroke(seam, 0.004, 0.004).and(inside.clone()),
                    &Paint::Solid([0.7, 0.66, 0.6]),
                    0.6,
                    1.0,
                );
            }
        }
    }
    let mut upper = top;
    upper.extend(upper_in.iter().rev());
    c.fill(xf, &Shape::Polygon(upper), &Paint::Solid(shade(lip_col, 0.9)), 1.0, 1.0);
    let mut lower = lower_in.clone();
    lower.extend(bottom.iter().rev());
    c.fill(xf, &Shape::Polygon(lower), &Paint::Solid(lip_col), 1.0, 1.0);
    if plan.lipstick.is_some() {
        c.fill(
            xf,
            &Shape::ellipse((cx + 0.05, base + sag + gap / 2.0 + ll * 0.5), 0.1, 0.02),
            &Paint::Solid([1.0; 3]),
            0.35,
            px(xf, 0.02),
        );
    }
    c.fill(
        xf,
        &Shape::stroke(upper_in, 0.008, 0.008),
        &Paint::Solid(shade(lip_col, 0.45)),
        0.8,
        1.0,
    );
}

fn mustache(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    if !plan.mustache {
        return;
    }
    let id = &plan.id;
    let (lc, rc) = (l.mouth_l, l.mouth_r);
    let top = ((lc.0 + rc.0) / 2.0, l.nose.1 + 0.2);
    let pts = curve((lc.0 - 0.05, lc.1 + 0.04), top, (rc.0 + 0.05, rc.1 + 0.04), 14);
    let shape = Shape::stroke_fn(pts, |t| 0.025 + 0.045 * (t * std::f32::consts::PI).sin());
    c.fill(
        xf,
        &shape,
        &Paint::Textured { base: shade(id.hair, 0.7), amp: 0.3, freq: 14.0, seed: id.seed },
        1.0,
        px(xf, 0.02),
    );
}

fn hairline(plan: &Plan, l: &Layout, u: f32, phase: f32) -> f32 {
    let id = &plan.id;
    let wn = (u - l.mid) / id.cheek_w;
    if plan.bangs {
        -0.37 + 0.08 * wn * wn - 0.12 * id.part * wn + 0.035 * (u * 22.0 + phase).sin().abs()
    } else if id.receding {
        let r = (-(((u - l.mid).abs() - 0.42) / 0.17).powi(2)).exp();
        -1.18 + 0.4 * wn * wn - 0.22 * r
    } else {
        -0.98 + 0.45 * wn * wn + 0.05 * (id.part - wn).abs().min(0.3)
    }
}

fn front_hair(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout, rng: &mut ChaCha8Rng) {
    let id = &plan.id;
    let phase = uni(rng, 0.0, 6.0);
    if id.bald {
        // A horseshoe fringe and a shiny scalp.
        if id.age > 35.0 {
            let band =
                Shape::Polygon(outline(id, l, 0.05)).minus(Shape::Polygon(outline(id, l, -0.06)));
            let zone = band.and(Shape::below(-0.55)).and(Shape::above(0.15));
            c.fill(
                xf,
                &zone,
                &Paint::Textured { base: id.hair, amp: 0.3, freq: 10.0, seed: id.seed },
                0.9,
                1.5,
            );
        }
        c.fill(
            xf,
            &Shape::ellipse((l.mid - 0.2, -1.25), 0.3, 0.15),
            &Paint::Solid(shade(id.skin, 1.25)),
            0.4,
            px(xf, 0.12),
        );
        return;
    }
    let vol = id.volume;
    let (side_bottom, flare) = match id.hair_len {
        HairLength::Short => (0.0, 0.02),
        HairLength::Medium => (0.9, 0.14),
        HairLength::Long => (1.6, 0.25),
    };
    let rx = id.cheek_w + vol;
    let ry = 1.42 + vol;
    let wave = if id.texture == HairTexture::Wavy { 0.045 } else { 0.01 };
    let mut pts = vec![(l.mid + rx + flare, side_bottom)];
    let mut arc = Vec::new();
    for i in 0..=24 {
        let t = i as f32 / 24.0 * std::f32::consts::PI;
        let k = 1.0 + wave * (t * 11.0 + phase).sin();
        arc.push((l.mid + rx * t.cos() * k, -0.3 - ry * t.sin() * k));
    }
    pts.extend(arc.iter().copied());
    pts.push((l.mid - rx - flare, side_bottom));
    let inset = 0.05;
    let edge_u = |right: bool| side_x(id, l, -0.4, right, -inset);
    let v_left = hairline(plan, l, edge_u(false), phase);
    let v_right = hairline(plan, l, edge_u(true), phase);
    let inner_side = |v: f32, right: bool| {
        let x = side_x(id, l, v, right, -inset);
        let hang = if right { l.mid + id.cheek_w * 0.92 } else { l.mid - id.cheek_w * 0.92 };
        if v > 0.45 && id.hair_len != HairLength::Short {
            if right {
                x.max(hang)
            } else {
                x.min(hang)
            }
        } else {
            x
        }
    };
    let steps = 10;
    for i in 0..=steps {
        let v = side_bottom + (v_left - side_bottom) * i as f32 / steps as f32;
        pts.push((inner_side(v, false), v));
    }
    let (u0, u1) = (edge_u(false), edge_u(true));
    for i in 1..24 {
        let u = u0 + (u1 - u0) * i as f32 / 24.0;
        pts.push((u, hairline(plan, l, u, phase)));
    }
    for i in 0..=steps {
        let v = v_right + (side_bottom - v_right) * i as f32 / steps as f32;
        pts.push((inner_side(v, true), v));
    }
    let shape = Shape::Polygon(pts);
    c.fill(
        xf,
        &shape,
        &Paint::Textured { base: id.hair, amp: 0.22, freq: 7.0, seed: id.seed },
        1.0,
        1.0,
    );

    // Strands from the crown to the edges show the texture.
    let crown = (l.mid + id.part * 0.5, -1.55);
    let targets: Vec<P> = arc
        .iter()
        .step_by(2)
        .copied()
        .chain((0..12).map(|i| {
            let u = u0 + (u1 - u0) * (i as f32 + 0.5) / 12.0;
            (u, hairline(plan, l, u, phase))
        }))
        .collect();
    for (i, t) in targets.iter().enumerate() {
        let (dx, dy) = (t.0 - crown.0, t.1 - crown.1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-3);
        let (nx, ny) = (-dy / len, dx / len);
        let n = 14;
        let strand: Vec<P> = (0..=n)
            .map(|k| {
                let s = 0.1 + 0.8 * k as f32 / n as f32;
                let off = match id.texture {
                    HairTexture::Wavy => 0.05 * (s * 16.0 + phase + i as f32).sin(),
                    HairTexture::Straight => 0.0,
                    HairTexture::Plain => 0.015 * (s * 9.0 + i as f32 * 1.7).sin(),
                };
                (crown.0 + dx * s + nx * off, crown.1 + dy * s + ny * off)
            })
            .collect();
        let col =
            if i % 3 == 0 { shade(id.hair, 1.35).map(|v| v.min(1.0)) } else { shade(id.hair, 0.6) };
        c.fill(xf, &Shape::stroke(strand, 0.014, 0.01), &Paint::Solid(col), 0.4, 1.0);
    }
    if id.texture == HairTexture::Straight {
        let sheen = curve((l.mid - rx * 0.7, -1.1), (l.mid, -1.45), (l.mid + rx * 0.7, -1.1), 12);
        c.fill(
            xf,
            &Shape::stroke(sheen, 0.07, 0.07).and(shape),
            &Paint::Solid(shade(id.hair, 1.5).map(|v| v.min(1.0))),
            0.3,
            px(xf, 0.08),
        );
    }
}

fn earrings(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    if !plan.earrings {
        return;
    }
    let id = &plan.id;
    let hoop = chance_from(id.seed, 9);
    for (s, w) in [(-1.0f32, l.w_left), (1.0, l.w_right)] {
        let centre = (l.mid + s * (w + 0.03), 0.55);
        if hoop {
            let ring = Shape::circle((centre.0, centre.1 + 0.08), 0.1)
                .minus(Shape::circle((centre.0, centre.1 + 0.08), 0.075));
            c.fill(xf, &ring, &Paint::Solid(id.earring_color), 1.0, 1.0);
        } else {
            c.fill(xf, &Shape::circle(centre, 0.055), &Paint::Solid(id.earring_color), 1.0, 1.0);
            c.fill(
                xf,
                &Shape::circle((centre.0 - 0.015, centre.1 - 0.015), 0.018),
                &Paint::Solid([1.0; 3]),
                0.7,
                1.0,
            );
        }
    }
}

fn hat(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    let Some(hat) = plan.hat else {
        return;
    };
    let id = &plan.id;
    let paint = Paint::Textured { base: hat.color, amp: 0.15, freq: 8.0, seed: id.seed ^ 3 };
    let w = id.cheek_w + id.volume * 0.5;
    let crown = Shape::ellipse((l.mid, hat.line - 0.1), w + 0.2, 1.2).and(Shape::above(hat.line));
    match hat.kind {
        0 => {
            c.fill(xf, &crown, &paint, 1.0, 1.0);
            let band = Shape::ellipse((l.mid, hat.line - 0.1), w + 0.22, 1.22)
                .and(Shape::above(hat.line))
                .and(Shape::below(hat.line - 0.22));
            c.fill(xf, &band, &Paint::Solid(shade(hat.color, 0.8)), 1.0, 1.0);
        }
        1 => {
            let tall = Shape::Polygon(vec![
                (l.mid - w + 0.05, hat.line),
                (l.mid - w + 0.15, hat.line - 1.1),
                (l.mid, hat.line - 1.2),
                (l.mid + w - 0.15, hat.line - 1.1),
                (l.mid + w - 0.05, hat.line),
            ]);
            c.fill(xf, &tall, &paint, 1.0, 1.0);
            c.fill(
                xf,
                &Shape::ellipse((l.mid, hat.line), w + 0.6, 0.15),
                &Paint::Solid(shade(hat.color, 0.85)),
                1.0,
                1.0,
            );
            c.fill(
                xf,
                &Shape::ellipse((l.mid, hat.line + 0.2), w, 0.18),
                &Paint::Solid([0.0; 3]),
                0.3,
                px(xf, 0.12),
            );
        }
        _ => {
            c.fill(xf, &crown, &paint, 1.0, 1.0);
            let peak = Shape::ellipse((l.mid + l.nose.0 * 0.5, hat.line), 0.9, 0.24)
                .and(Shape::below(hat.line - 0.02));
            c.fill(
                xf,
                &Shape::ellipse((l.mid, hat.line + 0.28), 0.9, 0.16),
                &Paint::Solid([0.0; 3]),
                0.3,
                px(xf, 0.12),
            );
            c.fill(xf, &peak, &Paint::Solid(shade(hat.color, 0.85)), 1.0, 1.0);
        }
    }
}

fn glasses(c: &mut Canvas, xf: &Xform, plan: &Plan, l: &Layout) {
    let Some(sun) = plan.glasses else {
        return;
    };
    let id = &plan.id;
    let frame = Paint::Solid(id.frame_color);
    let t = if sun { 0.035 } else { 0.024 };
    let (a, b) = (0.27, 0.19);
    for (e, k) in [(l.eye_l, l.eye_scale_l), (l.eye_r, l.eye_scale_r)] {
        let c0 = (e.0, e.1 + 0.015);
        let outer = Shape::Polygon(superellipse(c0, a * k + t, b + t, id.frame_round, 40));
        let inner = Shape::Polygon(superellipse(c0, a * k, b, id.frame_round, 40));
        if sun {
            c.fill(xf, &inner, &Paint::Solid([0.07, 0.07, 0.09]), 0.88, 1.0);
        } else {
            c.fill(xf, &inner, &Paint::Solid([0.85, 0.9, 1.0]), 0.1, 1.0);
            let glare = Shape::stroke(
                vec![(c0.0 - 0.12 * k, c0.1 + 0.08), (c0.0 + 0.05 * k, c0.1 - 0.12)],
                0.02,
                0.02,
            )
            .and(inner.clone());
            c.fill(xf, &glare, &Paint::Solid([1.0; 3]), 0.25, 1.0);
        }
        c.fill(xf, &outer.minus(inner), &frame, 1.0, 1.0);
    }
    let bridge = curve(
        (l.eye_l.0 + a * l.eye_scale_l, l.eye_l.1 - 0.02),
        ((l.eye_l.0 + l.eye_r.0) / 2.0, (l.eye_l.1 + l.eye_r.1) / 2.0 - 0.08),
        (l.eye_r.0 - a * l.eye_scale_r, l.eye_r.1 - 0.02),
        8,
    );
    c.fill(xf, &Shape::stroke(bridge, t * 0.6, t * 0.6), &frame, 1.0, 1.0);
    for (e, k, s, w) in
        [(l.eye_l, l.eye_scale_l, -1.0f32, l.w_left), (l.eye_r, l.eye_scale_r, 1.0, l.w_right)]
    {
        let arm = vec![(e.0 + s * (a * k + t * 0.5), e.1 - 0.03), (l.mid + s * (w + 0.02), 0.02)];
        c.fill(xf, &Shape::stroke(arm, t * 0.55, t * 0.5), &frame, 1.0, 1.0);
    }
}

fn lighting(c: &mut Canvas, plan: &Plan) {
    let lt = &plan.light;
    let (cs, sn) = (lt.angle.cos(), lt.angle.sin());
    let (cx, cy) = (c.w as f32 / 2.0, c.h as f32 / 2.0);
    let half = (c.w.max(c.h) as f32 / 2.0).max(1.0);
    c.map(|x, y, p| {
        let d = ((x as f32 - cx) * cs + (y as f32 - cy) * sn) / half;
        let k = lt.brightness * (1.0 + lt.strength * d);
        let f = |v: f32, ch: f32| ((v * k * ch - 0.5) * lt.contrast + 0.5).clamp(0.0, 1.0);
        [f(p[0], lt.cast[0]), f(p[1], lt.cast[1]), f(p[2], lt.cast[2])]
    });
}

/// Renders `plan` and applies the camera effects with noise drawn from `rng`.
pub(crate) fn render_image(
    plan: &Plan,
    fr: &Framing,
    rng: &mut ChaCha8Rng,
) -> Result<(Image, Geometry)> {
    let (canvas, geo) = render(plan, fr);
    let img = finish(canvas, plan, fr.ied / 38.0, rng)?;
    Ok((img, geo))
}
