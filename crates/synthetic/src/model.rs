//! What a synthetic face is made of: fixed traits per identity, variations per image, and the
//! attribute labels that follow from them.
//!
//! Priors follow CelebA's attribute frequencies and its strongest correlations (make-up and
//! lipstick are mostly female, facial hair only male, gray hair and bags under the eyes mostly
//! old, high cheekbones mostly smiling), so models trained on the synthetic data meet the same
//! imbalance and confounders as on the real data.

use deeprecog_attributes::{Attribute as A, AttributeSet};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::raster::{mix, Rgb};

/// Uniform in `a..b`; never panics on an empty range.
pub(crate) fn uni(rng: &mut ChaCha8Rng, a: f32, b: f32) -> f32 {
    a + (b - a) * rng.random::<f32>()
}

/// True with probability `p` (clamped to 0..=1).
pub(crate) fn chance(rng: &mut ChaCha8Rng, p: f32) -> bool {
    rng.random::<f32>() < p
}

/// A standard normal draw (Box-Muller).
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1 = rng.random::<f32>().max(1e-7);
    let u2 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// One of `items` drawn with the given weights (the first when all weights are zero).
pub(crate) fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[(T, f32)]) -> Option<T> {
    let total: f32 = items.iter().map(|(_, w)| w.max(0.0)).sum();
    let mut r = rng.random::<f32>() * total;
    for (item, w) in items {
        if r < w.max(0.0) {
            return Some(*item);
        }
        r -= w.max(0.0);
    }
    items.first().map(|(item, _)| *item)
}

fn jitter(rng: &mut ChaCha8Rng, c: Rgb, amount: f32) -> Rgb {
    let k = 1.0 + amount * normal(rng);
    [
        (c[0] * k + amount * 0.5 * normal(rng)).clamp(0.0, 1.0),
        (c[1] * k + amount * 0.5 * normal(rng)).clamp(0.0, 1.0),
        (c[2] * k + amount * 0.5 * normal(rng)).clamp(0.0, 1.0),
    ]
}

/// Hair colour as drawn; three of the kinds carry no CelebA colour label, as many real
/// images do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HairColor {
    Black,
    Blond,
    Brown,
    Gray,
    Auburn,
    DarkBrown,
    LightBrown,
}

impl HairColor {
    fn rgb(self) -> Rgb {
        match self {
            HairColor::Black => [0.07, 0.06, 0.06],
            HairColor::Blond => [0.86, 0.72, 0.45],
            HairColor::Brown => [0.38, 0.24, 0.14],
            HairColor::Gray => [0.70, 0.69, 0.68],
            HairColor::Auburn => [0.52, 0.22, 0.12],
            HairColor::DarkBrown => [0.19, 0.12, 0.08],
            HairColor::LightBrown => [0.58, 0.43, 0.28],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HairLength {
    Short,
    Medium,
    Long,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HairTexture {
    Straight,
    Wavy,
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beard {
    None,
    Stubble,
    Goatee,
    Full,
}

/// Traits fixed for one person.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub male: bool,
    pub age: f32,
    pub skin: Rgb,
    pub pale: bool,
    pub cheek_w: f32,
    pub chin_w: f32,
    pub chin_v: f32,
    pub jaw_p: f32,
    pub chubby: bool,
    pub double_chin: bool,
    pub oval: bool,
    pub high_cheekbones: bool,
    pub eye_half: f32,
    pub eye_size: f32,
    pub iris: Rgb,
    pub narrow: bool,
    pub brow_w: f32,
    pub brow_arch: f32,
    pub bushy: bool,
    pub arched: bool,
    pub nose_w: f32,
    pub nose_len: f32,
    pub big_nose: bool,
    pub pointy: bool,
    pub lip_u: f32,
    pub lip_l: f32,
    pub mouth_w: f32,
    pub lip_color: Rgb,
    pub big_lips: bool,
    pub hair_kind: HairColor,
    pub hair: Rgb,
    pub hair_len: HairLength,
    pub texture: HairTexture,
    pub bald: bool,
    pub receding: bool,
    pub bangs_pref: bool,
    pub volume: f32,
    pub part: f32,
    pub beard: Beard,
    pub mustache: bool,
    pub sideburns: bool,
    pub glasses_p: f32,
    pub frame_color: Rgb,
    pub frame_round: f32,
    pub makeup_p: f32,
    pub lipstick: Rgb,
    pub eyeshadow: Rgb,
    pub earrings_p: f32,
    pub earring_color: Rgb,
    pub necklace_p: f32,
    pub tie_p: f32,
    pub smile_p: f32,
    pub rosy_p: f32,
    pub bags: bool,
    pub symmetry: f32,
    pub clarity: f32,
    /// Eye height difference, mouth tilt, nose offset, brow height difference (face units).
    pub asym: [f32; 4],
    /// The part of attractiveness no attribute explains.
    pub charm: f32,
    pub seed: u32,
}

const SKIN_TONES: [Rgb; 4] =
    [[0.93, 0.77, 0.66], [0.82, 0.62, 0.48], [0.66, 0.47, 0.34], [0.42, 0.28, 0.20]];

fn skin_tone(t: f32) -> Rgb {
    let x = t.clamp(0.0, 1.0) * 3.0;
    let i = (x.floor() as usize).min(2);
    match (SKIN_TONES.get(i), SKIN_TONES.get(i + 1)) {
        (Some(a), Some(b)) => mix(*a, *b, x - i as f32),
        _ => SKIN_TONES[0],
    }
}

impl Identity {
    pub fn is_young(&self) -> bool {
        self.age < 38.0
    }

    pub fn sample(rng: &mut ChaCha8Rng) -> Identity {
        let male = chance(rng, 0.42);
        let young = chance(rng, 0.77);
        let age = if young { uni(rng, 18.0, 36.0) } else { uni(rng, 41.0, 75.0) };
        let pale = chance(rng, 0.045);
        let skin = if pale {
            jitter(rng, [0.97, 0.87, 0.82], 0.015)
        } else {
            let t = 0.05 + 0.95 * rng.random::<f32>().powf(2.2);
            jitter(rng, skin_tone(t), 0.02)
        };

        let chubby = chance(rng, if male { 0.07 } else { 0.035 } + if young { 0.0 } else { 0.05 });
        let oval = chance(rng, if male { 0.18 } else { 0.36 });
        let mut cheek_w = if male { 1.1 } else { 1.03 } + 0.035 * normal(rng);
        let mut chin_w = if male { uni(rng, 0.28, 0.38) } else { uni(rng, 0.15, 0.25) };
        let mut jaw_p = if male { uni(rng, 2.4, 3.4) } else { uni(rng, 1.4, 2.2) };
        let mut chin_v = 1.74 + 0.035 * normal(rng);
        if chubby {
            cheek_w += 0.13;
            chin_w += 0.08;
            jaw_p += 0.6;
        }
        if oval {
            chin_v += 0.1;
            cheek_w -= 0.03;
            jaw_p = jaw_p.min(1.7);
        }
        let double_chin = if chubby { chance(rng, 0.45) } else { !young && chance(rng, 0.05) };

        let bushy = chance(rng, if male { 0.26 } else { 0.05 });
        let arched = chance(rng, if male { 0.06 } else { 0.4 });
        let brow_w = if bushy {
            uni(rng, 0.058, 0.068)
        } else if male {
            uni(rng, 0.036, 0.044)
        } else {
            uni(rng, 0.024, 0.032)
        };
        let brow_arch = if arched { uni(rng, 0.09, 0.13) } else { uni(rng, 0.01, 0.04) };

        let big_nose = chance(rng, if male { 0.36 } else { 0.11 } + if young { 0.0 } else { 0.1 });
        let pointy = !big_nose && chance(rng, if male { 0.2 } else { 0.4 });
        let big_lips = chance(rng, 0.24);
        let lip_u = if big_lips { uni(rng, 0.085, 0.1) } else { uni(rng, 0.045, 0.065) };

        let bald = male && chance(rng, if young { 0.02 } else { 0.15 });
        let receding = !bald
            && if male { chance(rng, if young { 0.06 } else { 0.3 }) } else { chance(rng, 0.015) };
        let hair_kind = if !young && chance(rng, 0.2) {
            HairColor::Gray
        } else {
            use HairColor::*;
            let weights: [(HairColor, f32); 6] = if male {
                [
                    (Black, 0.33),
                    (Blond, 0.04),
                    (Brown, 0.2),
                    (Auburn, 0.03),
                    (DarkBrown, 0.3),
                    (LightBrown, 0.1),
                ]
            } else {
                [
                    (Black, 0.24),
                    (Blond, 0.27),
                    (Brown, 0.24),
                    (Auburn, 0.06),
                    (DarkBrown, 0.11),
                    (LightBrown, 0.08),
                ]
            };
            pick(rng, &weights).unwrap_or(Black)
        };
        let hair = jitter(rng, hair_kind.rgb(), 0.05);
        let hair_len = {
            use HairLength::*;
            let w = if male {
                [(Short, 0.82), (Medium, 0.14), (Long, 0.04)]
            } else {
                [(Short, 0.06), (Medium, 0.22), (Long, 0.72)]
            };
            pick(rng, &w).unwrap_or(Short)
        };
        let texture = {
            use HairTexture::*;
            let w = if male {
                [(Straight, 0.13), (Wavy, 0.2), (Plain, 0.67)]
            } else {
                [(Straight, 0.27), (Wavy, 0.42), (Plain, 0.31)]
            };
            pick(rng, &w).unwrap_or(Plain)
        };
        let bangs_pref = !bald && !receding && chance(rng, if male { 0.1 } else { 0.24 });

        let (beard, mustache, sideburns) = if male {
            let beard = pick(
                rng,
                &[
                    (Beard::Full, if young { 0.17 } else { 0.28 }),
                    (Beard::Goatee, 0.15),
                    (Beard::Stubble, 0.26),
                    (Beard::None, 0.42),
                ],
            )
            .unwrap_or(Beard::None);
            let mustache = match beard {
                Beard::Full => chance(rng, 0.3),
                Beard::Goatee => chance(rng, 0.25),
                Beard::Stubble => chance(rng, 0.02),
                Beard::None => chance(rng, 0.04),
            };
            let sideburns = chance(rng, if beard == Beard::Full { 0.4 } else { 0.06 });
            (beard, mustache, sideburns)
        } else {
            (Beard::None, false, false)
        };

        let glasses_p =
            if chance(rng, if young { 0.08 } else { 0.2 }) { uni(rng, 0.6, 0.95) } else { 0.0 };
        let frame_color =
            *[[0.05, 0.05, 0.05], [0.3, 0.18, 0.1], [0.78, 0.65, 0.3], [0.75, 0.75, 0.78]]
                .get(rng.random_range(0..4usize))
                .unwrap_or(&[0.05; 3]);
        let makeup_p =
            if male { 0.01 } else { rng.random::<f32>().powf(if young { 0.45 } else { 0.9 }) };
        let lipstick = *[
            [0.72, 0.08, 0.13],
            [0.85, 0.33, 0.48],
            [0.5, 0.05, 0.1],
            [0.88, 0.38, 0.33],
            [0.65, 0.25, 0.35],
        ]
        .get(rng.random_range(0..5usize))
        .unwrap_or(&[0.72, 0.08, 0.13]);
        let eyeshadow = *[
            [0.45, 0.3, 0.25],
            [0.4, 0.3, 0.5],
            [0.3, 0.38, 0.55],
            [0.55, 0.4, 0.35],
            [0.2, 0.15, 0.15],
        ]
        .get(rng.random_range(0..5usize))
        .unwrap_or(&[0.45, 0.3, 0.25]);
        let earrings_p = if male {
            if chance(rng, 0.04) {
                0.6
            } else {
                0.0
            }
        } else if chance(rng, 0.55) {
            uni(rng, 0.45, 0.9)
        } else {
            0.0
        };
        let earring_color = if chance(rng, 0.6) { [0.86, 0.7, 0.3] } else { [0.82, 0.82, 0.86] };
        let necklace_p = if male { 0.01 } else { uni(rng, 0.0, 0.42) };
        let tie_p = if male && chance(rng, 0.27) { uni(rng, 0.3, 0.8) } else { 0.0 };
        let symmetry = rng.random::<f32>();
        let clarity = rng.random::<f32>();
        let a = (1.0 - symmetry) * 0.05;
        let asym = [a * normal(rng), a * normal(rng), a * normal(rng), a * normal(rng)];
        let iris_base = *[
            [0.28, 0.17, 0.1],
            [0.42, 0.28, 0.15],
            [0.45, 0.4, 0.2],
            [0.35, 0.5, 0.7],
            [0.35, 0.5, 0.38],
            [0.45, 0.5, 0.55],
        ]
        .get(rng.random_range(0..6usize))
        .unwrap_or(&[0.28, 0.17, 0.1]);
        let iris = jitter(rng, iris_base, 0.05);
        let lip_base = if male { [0.7, 0.42, 0.4] } else { [0.78, 0.42, 0.42] };
        Identity {
            male,
            age,
            skin,
            pale,
            cheek_w,
            chin_w,
            chin_v,
            jaw_p,
            chubby,
            double_chin,
            oval,
            high_cheekbones: chance(rng, 0.28),
            eye_half: uni(rng, 0.47, 0.53),
            eye_size: uni(rng, 0.9, 1.08) + if male { 0.0 } else { 0.05 },
            iris,
            narrow: chance(rng, 0.07),
            brow_w,
            brow_arch,
            bushy,
            arched,
            nose_w: if big_nose { uni(rng, 1.3, 1.5) } else { uni(rng, 0.88, 1.08) },
            nose_len: if big_nose { uni(rng, 1.05, 1.12) } else { uni(rng, 0.94, 1.03) },
            big_nose,
            pointy,
            lip_u,
            lip_l: lip_u * uni(rng, 1.2, 1.45),
            mouth_w: uni(rng, 0.4, 0.46) + if big_lips { 0.03 } else { 0.0 },
            lip_color: mix(skin, lip_base, 0.55),
            big_lips,
            hair_kind,
            hair,
            hair_len,
            texture,
            bald,
            receding,
            bangs_pref,
            volume: uni(rng, 0.07, 0.2) + if hair_len == HairLength::Long { 0.07 } else { 0.0 },
            part: uni(rng, -0.45, 0.45),
            beard,
            mustache,
            sideburns,
            glasses_p,
            frame_color,
            frame_round: uni(rng, 2.0, 5.0),
            makeup_p,
            lipstick,
            eyeshadow,
            earrings_p,
            earring_color,
            necklace_p,
            tie_p,
            smile_p: uni(rng, 0.25, 0.72),
            rosy_p: if male { uni(rng, 0.0, 0.06) } else { uni(rng, 0.0, 0.2) },
            bags: chance(rng, if young { 0.12 } else { 0.45 }),
            symmetry,
            clarity,
            asym,
            charm: normal(rng),
            seed: rng.random::<u32>(),
        }
    }

    /// This identity with the inner-face appearance (skin, eyes, brows, nose, lips, age marks)
    /// of `source`: what a face-swap model pastes, while hair and head shape stay the target's.
    pub fn swapped_with(&self, source: &Identity) -> Identity {
        let mut out = self.clone();
        out.skin = source.skin;
        out.iris = source.iris;
        out.eye_size = source.eye_size;
        out.eye_half = source.eye_half;
        out.narrow = source.narrow;
        out.brow_w = source.brow_w;
        out.brow_arch = source.brow_arch;
        out.nose_w = source.nose_w;
        out.nose_len = source.nose_len;
        out.pointy = source.pointy;
        out.lip_u = source.lip_u;
        out.lip_l = source.lip_l;
        out.mouth_w = source.mouth_w;
        out.lip_color = source.lip_color;
        out.age = source.age;
        out.bags = source.bags;
        out.clarity = source.clarity;
        out.asym = source.asym;
        out.seed = source.seed;
        out
    }
}

/// Head pose in face units (shift) and radians (roll); yaw is a signed turn in -0.3..0.3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pose {
    pub rot: f32,
    pub dx: f32,
    pub dy: f32,
    pub scale: f32,
    pub yaw: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Hat {
    pub color: Rgb,
    pub kind: u8,
    pub line: f32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Background {
    pub kind: u8,
    pub c0: Rgb,
    pub c1: Rgb,
    pub angle: f32,
    pub seed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Light {
    pub angle: f32,
    pub strength: f32,
    pub brightness: f32,
    pub contrast: f32,
    pub cast: Rgb,
}

/// Everything needed to draw one image of one identity.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub id: Identity,
    pub pose: Pose,
    /// 0 neutral .. 1 broad smile.
    pub smile: f32,
    /// 0 closed .. 1 open.
    pub open: f32,
    pub teeth: bool,
    /// 1 open .. 0 closed (blinks in videos).
    pub eye_open: f32,
    pub gaze: f32,
    pub squint: bool,
    pub arched: bool,
    pub cheekbones: bool,
    pub glasses: Option<bool>,
    pub hat: Option<Hat>,
    pub earrings: bool,
    pub necklace: bool,
    pub tie: bool,
    pub clothes: Rgb,
    pub neckline: u8,
    pub lipstick: Option<Rgb>,
    pub makeup: bool,
    pub rosy: bool,
    pub bangs: bool,
    pub beard: Beard,
    pub mustache: bool,
    pub sideburns: bool,
    pub background: Background,
    pub light: Light,
    pub blur: f32,
    pub noise: f32,
    pub attrs: AttributeSet,
}

fn random_color(rng: &mut ChaCha8Rng, sat: (f32, f32), val: (f32, f32)) -> Rgb {
    let h = rng.random::<f32>() * 6.0;
    let s = uni(rng, sat.0, sat.1);
    let v = uni(rng, val.0, val.1);
    let f = h - h.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match h as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Plan {
    /// Draws the per-image variations of `id` and the labels that follow from them.
    pub fn sample(id: &Identity, rng: &mut ChaCha8Rng) -> Plan {
        let pose = Pose {
            rot: (0.05 * normal(rng)).clamp(-0.13, 0.13),
            dx: (0.035 * normal(rng)).clamp(-0.1, 0.1),
            dy: (0.035 * normal(rng)).clamp(-0.1, 0.1),
            scale: uni(rng, 0.94, 1.06),
            yaw: (0.11 * normal(rng)).clamp(-0.3, 0.3),
        };
        let smiling = chance(rng, id.smile_p);
        let open = chance(rng, if smiling { 0.62 } else { 0.34 });
        let smile = if smiling { uni(rng, 0.6, 1.0) } else { uni(rng, 0.0, 0.25) };
        let open_amount = if open { uni(rng, 0.45, 1.0) } else { uni(rng, 0.0, 0.12) };
        let teeth = smiling && open && chance(rng, 0.85);
        let squint = smiling && chance(rng, 0.1);
        let makeup = chance(rng, id.makeup_p);
        let lipstick_on = if id.male {
            chance(rng, 0.005)
        } else if makeup {
            chance(rng, 0.97)
        } else {
            chance(rng, 0.5)
        };
        let glasses = chance(rng, id.glasses_p).then(|| chance(rng, 0.15));
        let hat = chance(rng, if id.male { 0.06 } else { 0.04 }).then(|| Hat {
            color: random_color(rng, (0.1, 0.7), (0.12, 0.85)),
            kind: rng.random_range(0..3u8),
            line: uni(rng, -0.8, -0.62),
        });
        let earrings = chance(rng, id.earrings_p);
        let necklace = chance(rng, id.necklace_p);
        let tie = chance(rng, id.tie_p);
        let neckline = if tie {
            2
        } else if necklace {
            rng.random_range(0..2u8)
        } else {
            rng.random_range(0..4u8)
        };
        let rosy = chance(rng, id.rosy_p);
        let bangs = if id.bangs_pref { chance(rng, 0.88) } else { false };
        let beard = match id.beard {
            Beard::Stubble if chance(rng, 0.1) => Beard::None,
            Beard::None if id.male && chance(rng, 0.05) => Beard::Stubble,
            b => b,
        };
        let cheekbones = id.high_cheekbones || (smiling && chance(rng, 0.55));
        let arched = id.arched || (makeup && chance(rng, 0.3));
        let blurry = chance(rng, 0.05);
        let background = Background {
            kind: rng.random_range(0..4u8),
            c0: random_color(rng, (0.05, 0.5), (0.2, 0.95)),
            c1: random_color(rng, (0.05, 0.5), (0.2, 0.95)),
            angle: uni(rng, 0.0, std::f32::consts::TAU),
            seed: rng.random::<u32>(),
        };
        let light = Light {
            angle: uni(rng, 0.0, std::f32::consts::TAU),
            strength: uni(rng, 0.0, 0.3),
            brightness: uni(rng, 0.86, 1.12),
            contrast: uni(rng, 0.85, 1.15),
            cast: [1.0 + 0.03 * normal(rng), 1.0 + 0.02 * normal(rng), 1.0 + 0.03 * normal(rng)],
        };
        let blur = if blurry { uni(rng, 1.6, 2.6) } else { uni(rng, 0.0, 0.6) };
        let noise = uni(rng, 0.0, 0.02);
        let mut plan = Plan {
            id: id.clone(),
            pose,
            smile,
            open: open_amount,
            teeth,
            eye_open: 1.0,
            gaze: 0.02 * normal(rng),
            squint,
            arched,
            cheekbones,
            glasses,
            hat,
            earrings,
            necklace,
            tie,
            clothes: random_color(rng, (0.0, 0.7), (0.08, 0.9)),
            neckline,
            lipstick: lipstick_on.then_some(id.lipstick),
            makeup,
            rosy,
            bangs,
            beard,
            mustache: id.mustache,
            sideburns: id.sideburns,
            background,
            light,
            blur,
            noise,
            attrs: AttributeSet::EMPTY,
        };
        plan.attrs = plan.labels(rng);
        plan
    }

    /// The 40 labels of this image; `rng` draws the noise of the subjective `Attractive`.
    fn labels(&self, rng: &mut ChaCha8Rng) -> AttributeSet {
        let id = &self.id;
        let hair_visible = !id.bald;
        let mut s = AttributeSet::EMPTY;
        s.set(A::FiveOClockShadow, self.beard == Beard::Stubble);
        s.set(A::ArchedEyebrows, self.arched);
        s.set(A::BagsUnderEyes, id.bags);
        s.set(A::Bald, id.bald);
        s.set(A::Bangs, self.bangs);
        s.set(A::BigLips, id.big_lips);
        s.set(A::BigNose, id.big_nose);
        s.set(A::BlackHair, hair_visible && id.hair_kind == HairColor::Black);
        s.set(A::BlondHair, hair_visible && id.hair_kind == HairColor::Blond);
        s.set(A::Blurry, self.blur > 1.4);
        s.set(A::BrownHair, hair_visible && id.hair_kind == HairColor::Brown);
        s.set(A::BushyEyebrows, id.bushy);
        s.set(A::Chubby, id.chubby);
        s.set(A::DoubleChin, id.double_chin);
        s.set(A::Eyeglasses, self.glasses.is_some());
        s.set(A::Goatee, self.beard == Beard::Goatee);
        s.set(A::GrayHair, hair_visible && id.hair_kind == HairColor::Gray);
        s.set(A::HeavyMakeup, self.makeup);
        s.set(A::HighCheekbones, self.cheekbones);
        s.set(A::Male, id.male);
        s.set(A::MouthSlightlyOpen, self.open > 0.3);
        s.set(A::Mustache, self.mustache);
        s.set(A::NarrowEyes, id.narrow || self.squint);
        s.set(A::NoBeard, !matches!(self.beard, Beard::Full | Beard::Goatee));
        s.set(A::OvalFace, id.oval);
        s.set(A::PaleSkin, id.pale);
        s.set(A::PointyNose, id.pointy);
        s.set(A::RecedingHairline, id.receding);
        s.set(A::RosyCheeks, self.rosy);
        s.set(A::Sideburns, self.sideburns);
        s.set(A::Smiling, self.smile > 0.5);
        s.set(A::StraightHair, hair_visible && id.texture == HairTexture::Straight);
        s.set(A::WavyHair, hair_visible && id.texture == HairTexture::Wavy);
        s.set(A::WearingEarrings, self.earrings);
        s.set(A::WearingHat, self.hat.is_some());
        s.set(A::WearingLipstick, self.lipstick.is_some());
        s.set(A::WearingNecklace, self.necklace);
        s.set(A::WearingNecktie, self.tie);
        s.set(A::Young, id.is_young());
        s.set(A::Attractive, chance(rng, self.attractive_probability(s)));
        s
    }

    /// The hidden rule behind `Attractive`: a logistic function of the labelled features
    /// ([`attractive_score_from_labels`]) plus the identity's symmetry and skin clarity (drawn,
    /// but subtle) and an unexplained charm. The Bernoulli draw on top is the annotator
    /// disagreement that keeps the label from being perfectly learnable.
    pub fn attractive_probability(&self, s: AttributeSet) -> f32 {
        let z = attractive_score_from_labels(s)
            + ATTRACTIVE_SYMMETRY * (self.id.symmetry - 0.5)
            + ATTRACTIVE_CLARITY * (self.id.clarity - 0.5)
            + ATTRACTIVE_CHARM * self.id.charm;
        sigmoid(ATTRACTIVE_SLOPE * z)
    }
}

/// Steepness of the `Attractive` logistic: how often annotators agree with the rule.
const ATTRACTIVE_SLOPE: f32 = 2.5;
/// Weight of the identity's symmetry (uniform in 0..1) in the `Attractive` rule.
const ATTRACTIVE_SYMMETRY: f32 = 1.0;
/// Weight of the identity's skin clarity (uniform in 0..1) in the `Attractive` rule.
const ATTRACTIVE_CLARITY: f32 = 0.8;
/// Weight of the identity's charm (standard normal, invisible) in the `Attractive` rule.
const ATTRACTIVE_CHARM: f32 = 0.25;

/// The part of the `Attractive` rule that the other 39 labels explain (its offset centres the
/// whole rule so that about half the faces are attractive).
pub(crate) fn attractive_score_from_labels(s: AttributeSet) -> f32 {
    let f = |a: A| if s.contains(a) { 1.0 } else { 0.0 };
    1.0 * f(A::Young) + 0.9 * (1.0 - f(A::Male)) + 0.8 * f(A::HeavyMakeup) + 0.45 * f(A::Smiling)
        - 0.8 * f(A::Eyeglasses)
        - 0.9 * f(A::Chubby)
        - 0.5 * f(A::DoubleChin)
        - 0.45 * f(A::BagsUnderEyes)
        - 0.5 * f(A::BigNose)
        - 0.6 * f(A::Bald)
        - 0.9 * f(A::Blurry)
        - 0.3 * f(A::GrayHair)
        + 0.3 * f(A::OvalFace)
        + 0.25 * f(A::WavyHair)
        - 1.5
}
