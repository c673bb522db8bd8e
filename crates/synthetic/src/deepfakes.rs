//! Real and face-swapped synthetic faces, as still images and as short frame sequences.
//!
//! A fake is made the way face-swap pipelines make them: the inner face (brows, eyes, nose,
//! mouth; an elliptical mask) of another identity, rendered in the target's pose, expression
//! and lighting, is pasted onto the target with a feathered seam. The paste carries the
//! typical traces, scaled by a per-fake severity: a skin-tone mismatch that colour correction
//! only partly removes, the blur of a low-resolution generator (down- and up-sampling), a
//! slight misalignment, and sometimes a second JPEG compression of the pasted region. Mild
//! fakes are hard to see; severe ones are obvious.
//!
//! Files written by [`Deepfakes::generate`] under the output folder:
//!
//! | path | content |
//! |---|---|
//! | `images/real/000001.png`, `images/fake/000201.png` ... | square face crops; a few are `.jpg` / `.JPG` |
//! | `images/manifest.csv` | `path,label,group`: path relative to `images/`, 0 real / 1 fake, target identity (`id0007`) |
//! | `videos/<video>/frame_0000.png` ... | one folder of frames per video |
//! | `videos/metadata.json` | DFDC style: `{"abcd0001.mp4": {"label": "FAKE", "split": "train", "original": "abcd0000.mp4"}}` |
//! | `videos/videos.csv` | `video,label,group,frames` |
//!
//! Videos are folders of PNG frames, but `metadata.json` keys them as `<video>.mp4`, as DFDC
//! does, so a reader can map the key to the folder by dropping the extension. Every fake video
//! is derived from a real one of the same target identity with the same motion (its
//! `original`), and the manipulation flickers: the mask position and feather, the colour
//! correction and the blending strength change from frame to frame. `split` is train, valid or
//! test, identity-disjoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use deeprecog_dataset::fsutil::write_atomically;
use deeprecog_dataset::split::Ratios;

use crate::draw::{self, Framing};
use crate::faces::{partition_counts, CELEBA_PARTITION};
use crate::model::{chance, normal, uni, Identity, Plan};
use crate::raster::{mix, Canvas, Rgb, Shape, Xform, P};
use crate::{rng_for, Stream};
use crate::{Error, Image, Result};

/// What to generate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeepfakesConfig {
    /// Number of real still images.
    pub real_images: usize,
    /// Number of face-swapped still images.
    pub fake_images: usize,
    /// Number of videos (real and fake together).
    pub videos: usize,
    /// Share of the videos that are fake (DFDC's training set is about 0.8).
    pub fake_video_fraction: f32,
    /// Frames per video.
    pub frames_per_video: usize,
    /// Side of the square images and frames.
    pub size: u32,
    /// Number of distinct people.
    pub identities: usize,
    /// Seed of everything.
    pub seed: u64,
    /// Share of still images written as JPEG (quality 90) instead of PNG, in both classes.
    pub jpg_fraction: f32,
    /// Range of the manipulation severity (0 invisible .. 1 crude).
    pub severity: (f32, f32),
    /// Identity-disjoint shares of the video `split` field (they must sum to 1).
    pub partition: Ratios,
}

impl Default for DeepfakesConfig {
    fn default() -> Self {
        DeepfakesConfig {
            real_images: 200,
            fake_images: 200,
            videos: 8,
            fake_video_fraction: 0.5,
            frames_per_video: 16,
            size: 128,
            identities: 40,
            seed: 0,
            jpg_fraction: 0.1,
            severity: (0.15, 1.0),
            partition: CELEBA_PARTITION,
        }
    }
}

impl DeepfakesConfig {
    /// Rejects configurations that cannot work.
    pub fn validate(&self) -> Result<()> {
        if self.identities < 2 {
            return Err(Error::Config("synthetic deepfakes need at least 2 identities".into()));
        }
        if self.size < 32 {
            return Err(Error::Config(format!(
                "synthetic deepfakes: size must be at least 32, got {}",
                self.size
            )));
        }
        let (lo, hi) = self.severity;
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
            return Err(Error::Config(format!(
                "severity must be a range within 0..=1, got {lo}..{hi}"
            )));
        }
        if !(0.0..=1.0).contains(&self.fake_video_fraction)
            || !(0.0..=1.0).contains(&self.jpg_fraction)
        {
            return Err(Error::Config(
                "fake_video_fraction and jpg_fraction must be within 0..=1".into(),
            ));
        }
        if self.videos > 0 && self.frames_per_video == 0 {
            return Err(Error::Config("frames_per_video must be at least 1".into()));
        }
        partition_counts(&self.partition, self.identities).map(|_| ())
    }
}

/// Ground truth of one still image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeepfakeRecord {
    /// Zero-based index over real then fake images.
    pub index: usize,
    /// Path relative to `images/`, e.g. `fake/000201.png`.
    pub path: String,
    /// 0 real, 1 fake.
    pub label: u8,
    /// The target identity as a group name (`id0007`), for group-disjoint splits.
    pub group: String,
    /// One-based target identity.
    pub target_identity: u32,
    /// One-based identity whose face was pasted (fakes only).
    pub source_identity: Option<u32>,
    /// Manipulation severity (0 for real images).
    pub severity: f32,
}

/// A fake still image with the real image of the same target and the blending mask.
#[derive(Debug, Clone)]
pub struct SwapPair {
    /// The target without manipulation (same pose, lighting and camera noise).
    pub real: Image,
    /// The manipulated image.
    pub fake: Image,
    /// Blending weight per pixel (1 channel, 255 = fully pasted).
    pub mask: Image,
    /// The fake's ground truth.
    pub record: DeepfakeRecord,
}

/// Ground truth of one video.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VideoRecord {
    /// Folder name, e.g. `kqzv0003` (the metadata key is this plus `.mp4`).
    pub id: String,
    /// 0 real, 1 fake.
    pub label: u8,
    /// Target identity group (`id0007`).
    pub group: String,
    /// `train`, `valid` or `test`.
    pub split: String,
    /// The real video a fake was made from.
    pub original: Option<String>,
    /// Number of frames.
    pub frames: usize,
    /// One-based identity whose face was pasted (fakes only).
    pub source_identity: Option<u32>,
}

/// How one paste is done.
#[derive(Debug, Clone, Copy)]
struct Swap {
    mask_c: P,
    mask_r: P,
    mask_rot: f32,
    /// Seam width in face units.
    feather: f32,
    /// Misalignment of the pasted face in pixels.
    shift: P,
    scale: f32,
    /// Down-sampling factor of the generator (1 = none).
    down: f32,
    /// How much of the mean colour difference colour correction removes.
    color_match: f32,
    /// Relative gain per channel left by imperfect colour correction.
    color_shift: Rgb,
    jpeg: Option<u8>,
    alpha: f32,
}

impl Swap {
    fn sample(rng: &mut ChaCha8Rng, severity: f32) -> Swap {
        Swap {
            mask_c: (0.03 * normal(rng), 0.5 + 0.03 * normal(rng)),
            mask_r: (uni(rng, 0.74, 0.88), uni(rng, 0.9, 1.04)),
            mask_rot: 0.05 * normal(rng),
            feather: (0.28 - 0.22 * severity) * uni(rng, 0.8, 1.2),
            shift: (1.5 * severity * normal(rng), 1.5 * severity * normal(rng)),
            scale: 1.0 + 0.03 * severity * normal(rng),
            down: 1.0 + severity * uni(rng, 0.5, 2.5),
            color_match: 1.0 - severity * uni(rng, 0.3, 1.0),
            color_shift: [0, 1, 2].map(|_| 0.05 * severity * normal(rng)),
            jpeg: chance(rng, 0.3).then(|| rng.random_range(40..80u8)),
            alpha: 1.0,
        }
    }

    /// This paste perturbed for one video frame: the flicker of per-frame face swapping.
    fn jitter(&self, rng: &mut ChaCha8Rng, severity: f32) -> Swap {
        let mut s = *self;
        s.mask_c = (s.mask_c.0 + 0.04 * normal(rng), s.mask_c.1 + 0.04 * normal(rng));
        s.feather *= uni(rng, 0.7, 1.3);
        s.shift = (s.shift.0 + 0.7 * normal(rng), s.shift.1 + 0.7 * normal(rng));
        let brightness = (0.015 + 0.035 * severity) * normal(rng);
        s.color_shift = [0, 1, 2].map(|i| {
            s.color_shift.get(i).copied().unwrap_or(0.0) + brightness + 0.008 * normal(rng)
        });
        s.alpha = if chance(rng, 0.2) { uni(rng, 0.3, 0.7) } else { 1.0 };
        s
    }
}

/// Pastes the inner face of `source` onto `target`; returns the result and the mask.
fn composite(
    target: &Canvas,
    source: &Canvas,
    xf: &Xform,
    sw: &Swap,
) -> Result<(Canvas, Vec<f32>)> {
    let mut src = source.down_up(sw.down);
    if let Some(q) = sw.jpeg {
        let origin = Path::new("<face swap>");
        let bytes = src.to_image()?.encode_jpeg(q, origin)?;
        src = Canvas::from_image(&Image::decode(&bytes, origin)?);
    }
    let shape = Shape::ellipse_rot(sw.mask_c, sw.mask_r.0, sw.mask_r.1, sw.mask_rot);
    let mask: Vec<f32> =
        target.coverage(xf, &shape, sw.feather * xf.s).into_iter().map(|m| m * sw.alpha).collect();
    let mut sums = [[0.0f64; 3]; 2];
    let mut weight = 0.0f64;
    for ((m, t), s) in mask.iter().zip(&target.px).zip(&src.px) {
        let m = f64::from(*m);
        for ch in 0..3 {
            sums[0][ch] += m * f64::from(t[ch]);
            sums[1][ch] += m * f64::from(s[ch]);
        }
        weight += m;
    }
    let weight = weight.max(1e-6);
    let correction: Rgb = [0, 1, 2].map(|ch| {
        let diff = (sums[0][ch] - sums[1][ch]) / weight;
        diff as f32 * sw.color_match
    });
    let centre = xf.to_px(sw.mask_c);
    let mut out = target.clone();
    let w = target.w.max(1);
    for (i, (o, m)) in out.px.iter_mut().zip(&mask).enumerate() {
        if *m <= 0.0 {
            continue;
        }
        let (x, y) = ((i % w) as f32 + 0.5, (i / w) as f32 + 0.5);
        let sx = centre.0 + (x - centre.0 - sw.shift.0) / sw.scale;
        let sy = centre.1 + (y - centre.1 - sw.shift.1) / sw.scale;
        let s = src.sample(sx, sy);
        let s = [0, 1, 2].map(|ch| {
            let v = s.get(ch).copied().unwrap_or(0.0) + correction.get(ch).copied().unwrap_or(0.0);
            v * (1.0 + sw.color_shift.get(ch).copied().unwrap_or(0.0))
        });
        *o = mix(*o, s, *m);
    }
    Ok((out, mask))
}

fn group_name(identity: usize) -> String {
    format!("id{:04}", identity + 1)
}

/// One still image's choices.
struct StillPlan {
    plan: Plan,
    target: usize,
    /// Source identity, severity and paste for fakes.
    fake: Option<(usize, f32, Swap)>,
    ext: &'static str,
}

/// Renders synthetic deepfake data in memory; [`Deepfakes::generate`] writes it to disk.
#[derive(Debug, Clone)]
pub struct DeepfakeGenerator {
    config: DeepfakesConfig,
    identities: Vec<Identity>,
    split_of: Vec<u8>,
    framing: Framing,
    real_videos: usize,
    fake_videos: usize,
}

impl DeepfakeGenerator {
    /// Draws the identities and the video layout.
    pub fn new(config: &DeepfakesConfig) -> Result<DeepfakeGenerator> {
        config.validate()?;
        let identities: Vec<Identity> = (0..config.identities)
            .map(|k| {
                Identity::sample(&mut rng_for(config.seed, Stream::DeepfakeIdentity, k as u64))
            })
            .collect();
        let counts = partition_counts(&config.partition, config.identities)?;
        let mut order: Vec<usize> = (0..config.identities).collect();
        rand::seq::SliceRandom::shuffle(
            order.as_mut_slice(),
            &mut rng_for(config.seed, Stream::DeepfakeSplit, 0),
        );
        let mut split_of = vec![0u8; config.identities];
        for (rank, k) in order.iter().enumerate() {
            if let Some(s) = split_of.get_mut(*k) {
                *s = if rank < counts[0] {
                    0
                } else if rank < counts[0] + counts[1] {
                    1
                } else {
                    2
                };
            }
        }
        let mut fake_videos = (config.videos as f32 * config.fake_video_fraction).round() as usize;
        fake_videos = fake_videos.min(config.videos);
        if fake_videos == config.videos && config.videos > 0 {
            // Every fake needs a real original.
            fake_videos -= 1;
        }
        Ok(DeepfakeGenerator {
            config: config.clone(),
            identities,
            split_of,
            framing: Framing::square(config.size),
            real_videos: config.videos - fake_videos,
            fake_videos,
        })
    }

    /// The configuration this generator was built from.
    pub fn config(&self) -> &DeepfakesConfig {
        &self.config
    }

    /// Number of still images (real then fake).
    pub fn image_count(&self) -> usize {
        self.config.real_images + self.config.fake_images
    }

    /// Number of videos (real then fake).
    pub fn video_count(&self) -> usize {
        self.real_videos + self.fake_videos
    }

    fn identity(&self, k: usize) -> Result<&Identity> {
        self.identities
            .get(k)
            .ok_or(Error::IndexOutOfRange { index: k, len: self.identities.len() })
    }

    /// A source for `target`: mostly the same sex, as swap pipelines pair similar faces.
    fn pick_source(&self, rng: &mut ChaCha8Rng, target: usize) -> usize {
        let n = self.identities.len();
        let male = self.identities.get(target).map(|i| i.male);
        let mut candidate = (target + 1) % n;
        for _ in 0..8 {
            let c = rng.random_range(0..n);
            if c == target {
                continue;
            }
            candidate = c;
            if self.identities.get(c).map(|i| i.male) == male || chance(rng, 0.15) {
                break;
            }
        }
        candidate
    }

    fn still(&self, index: usize) -> Result<StillPlan> {
        if index >= self.image_count() {
            return Err(Error::IndexOutOfRange { index, len: self.image_count() });
        }
        let mut rng = rng_for(self.config.seed, Stream::DeepfakeImage, index as u64);
        let target = rng.random_range(0..self.identities.len());
        let mut plan = Plan::sample(self.identity(target)?, &mut rng);
        // Strong blur would hide every trace; detectors are not asked to see through it.
        plan.blur = plan.blur.min(1.2);
        let r = rng.random::<f32>();
        let ext = if r < self.config.jpg_fraction * 0.8 {
            "jpg"
        } else if r < self.config.jpg_fraction {
            "JPG"
        } else {
            "png"
        };
        let fake = if index >= self.config.real_images {
            let source = self.pick_source(&mut rng, target);
            let severity = uni(&mut rng, self.config.severity.0, self.config.severity.1);
            Some((source, severity, Swap::sample(&mut rng, severity)))
        } else {
            None
        };
        Ok(StillPlan { plan, target, fake, ext })
    }

    fn record_of(&self, index: usize, sp: &StillPlan) -> DeepfakeRecord {
        let label = u8::from(sp.fake.is_some());
        let folder = if label == 1 { "fake" } else { "real" };
        DeepfakeRecord {
            index,
            path: format!("{folder}/{:06}.{}", index + 1, sp.ext),
            label,
            group: group_name(sp.target),
            target_identity: sp.target as u32 + 1,
            source_identity: sp.fake.map(|(s, _, _)| s as u32 + 1),
            severity: sp.fake.map_or(0.0, |(_, s, _)| s),
        }
    }

    fn camera_scale(&self) -> f32 {
        self.framing.ied / 38.0
    }

    /// Renders still image `index` (real for `index < real_images`, fake after).
    pub fn render_image(&self, index: usize) -> Result<(Image, DeepfakeRecord)> {
        let sp = self.still(index)?;
        let record = self.record_of(index, &sp);
        let mut camera = rng_for(self.config.seed, Stream::DeepfakeCamera, index as u64);
        let (target, geo) = draw::render(&sp.plan, &self.framing);
        let canvas = match sp.fake {
            Some((source, _, swap)) => {
                let mut src_plan = sp.plan.clone();
                src_plan.id = sp.plan.id.swapped_with(self.identity(source)?);
                let (src, _) = draw::render(&src_plan, &self.framing);
                composite(&target, &src, &geo.xf, &swap)?.0
            }
            None => target,
        };
        let img = draw::finish(canvas, &sp.plan, self.camera_scale(), &mut camera)?;
        Ok((img, record))
    }

    /// For fake image `index`: the fake, the unmanipulated target with the same camera noise,
    /// and the blending mask. Fails for real images.
    pub fn swap_pair(&self, index: usize) -> Result<SwapPair> {
        let sp = self.still(index)?;
        let Some((source, _, swap)) = sp.fake else {
            return Err(Error::Config(format!("image {index} is real, not a face swap")));
        };
        let record = self.record_of(index, &sp);
        let (target, geo) = draw::render(&sp.plan, &self.framing);
        let mut src_plan = sp.plan.clone();
        src_plan.id = sp.plan.id.swapped_with(self.identity(source)?);
        let (src, _) = draw::render(&src_plan, &self.framing);
        let (fake, mask) = composite(&target, &src, &geo.xf, &swap)?;
        let cam = || rng_for(self.config.seed, Stream::DeepfakeCamera, index as u64);
        let real = draw::finish(target, &sp.plan, self.camera_scale(), &mut cam())?;
        let fake = draw::finish(fake, &sp.plan, self.camera_scale(), &mut cam())?;
        let mask_bytes = mask.iter().map(|m| (m.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
        let mask = Image::from_raw(self.config.size, self.config.size, 1, mask_bytes)?;
        Ok(SwapPair { real, fake, mask, record })
    }

    /// The real video a video index renders, its motion and target.
    fn video_base(&self, real_index: usize) -> Result<(Plan, usize, Motion)> {
        let mut rng = rng_for(self.config.seed, Stream::Video, real_index as u64);
        let target = rng.random_range(0..self.identities.len());
        let mut plan = Plan::sample(self.identity(target)?, &mut rng);
        plan.blur = plan.blur.min(1.0);
        let motion = Motion::sample(&mut rng, self.config.frames_per_video);
        Ok((plan, target, motion))
    }

    fn video_name(&self, v: usize) -> String {
        let mut rng = rng_for(self.config.seed, Stream::VideoName, v as u64);
        let letters: String =
            (0..4).map(|_| char::from(b'a' + rng.random_range(0..26u8))).collect();
        format!("{letters}{v:04}")
    }

    /// The ground truth of video `v` (real videos first, then fakes).
    pub fn video_record(&self, v: usize) -> Result<VideoRecord> {
        if v >= self.video_count() {
            return Err(Error::IndexOutOfRange { index: v, len: self.video_count() });
        }
        let original = self.original_of(v);
        let (_, target, _) = self.video_base(original)?;
        let split = match self.split_of.get(target) {
            Some(1) => "valid",
            Some(2) => "test",
            _ => "train",
        };
        let source = if v >= self.real_videos {
            Some(self.video_fake(v, target)?.0 as u32 + 1)
        } else {
            None
        };
        Ok(VideoRecord {
            id: self.video_name(v),
            label: u8::from(v >= self.real_videos),
            group: group_name(target),
            split: split.to_string(),
            original: (v >= self.real_videos).then(|| self.video_name(original)),
            frames: self.config.frames_per_video,
            source_identity: source,
        })
    }

    fn original_of(&self, v: usize) -> usize {
        if v < self.real_videos {
            v
        } else {
            (v - self.real_videos) % self.real_videos.max(1)
        }
    }

    fn video_fake(&self, v: usize, target: usize) -> Result<(usize, f32, Swap)> {
        let mut rng = rng_for(self.config.seed, Stream::Video, (1u64 << 40) | v as u64);
        let source = self.pick_source(&mut rng, target);
        let severity = uni(&mut rng, self.config.severity.0, self.config.severity.1);
        Ok((source, severity, Swap::sample(&mut rng, severity)))
    }

    /// Renders every frame of video `v`.
    pub fn render_video(&self, v: usize) -> Result<(Vec<Image>, VideoRecord)> {
        let record = self.video_record(v)?;
        let original = self.original_of(v);
        let (base, target, motion) = self.video_base(original)?;
        let fake = if v >= self.real_videos { Some(self.video_fake(v, target)?) } else { None };
        let source_id = match fake {
            Some((s, _, _)) => Some(base.id.swapped_with(self.identity(s)?)),
            None => None,
        };
        let mut frames = Vec::with_capacity(self.config.frames_per_video);
        for t in 0..self.config.frames_per_video {
            let plan = motion.apply(&base, t);
            let (canvas, geo) = draw::render(&plan, &self.framing);
            let canvas = match (fake, &source_id) {
                (Some((_, severity, swap)), Some(sid)) => {
                    let mut flicker =
                        rng_for(self.config.seed, Stream::Flicker, ((v as u64) << 20) | t as u64);
                    let swap_t = swap.jitter(&mut flicker, severity);
                    let mut src_plan = plan.clone();
                    src_plan.id = sid.clone();
                    let (src, _) = draw::render(&src_plan, &self.framing);
                    composite(&canvas, &src, &geo.xf, &swap_t)?.0
                }
                _ => canvas,
            };
            // Real and fake share the camera noise of the original's frame.
            let mut camera =
                rng_for(self.config.seed, Stream::Frame, ((original as u64) << 20) | t as u64);
            frames.push(draw::finish(canvas, &plan, self.camera_scale(), &mut camera)?);
        }
        Ok((frames, record))
    }
}

/// A talking head: smooth sway, nodding, turning, mouth movement and blinks.
#[derive(Debug, Clone)]
struct Motion {
    amp: [f32; 5],
    freq: [f32; 5],
    phase: [f32; 5],
    blinks: Vec<usize>,
}

impl Motion {
    fn sample(rng: &mut ChaCha8Rng, frames: usize) -> Motion {
        let amp = [0.04, 0.03, 0.03, 0.1, 0.5].map(|a| a * uni(rng, 0.5, 1.2));
        let freq = [0.15, 0.2, 0.17, 0.12, 0.9].map(|f| f * uni(rng, 0.7, 1.3));
        let phase = [0; 5].map(|_| uni(rng, 0.0, std::f32::consts::TAU));
        let blinks = (0..frames).filter(|_| chance(rng, 0.06)).collect();
        Motion { amp, freq, phase, blinks }
    }

    fn apply(&self, base: &Plan, t: usize) -> Plan {
        let w = |i: usize| {
            let (a, f, p) = (self.amp.get(i), self.freq.get(i), self.phase.get(i));
            match (a, f, p) {
                (Some(a), Some(f), Some(p)) => a * (f * t as f32 + p).sin(),
                _ => 0.0,
            }
        };
        let mut plan = base.clone();
        plan.pose.rot += w(0);
        plan.pose.dx += w(1);
        plan.pose.dy += w(2) * 0.5;
        plan.pose.yaw = (plan.pose.yaw + w(3)).clamp(-0.3, 0.3);
        plan.open = (base.open + w(4)).clamp(0.0, 1.0);
        plan.teeth = base.teeth && plan.open > 0.3;
        if self.blinks.contains(&t) {
            plan.eye_open = 0.1;
        }
        plan
    }
}

/// What [`Deepfakes::generate`] wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeepfakesSummary {
    /// The output folder.
    pub out_dir: PathBuf,
    /// `images/`.
    pub images_dir: PathBuf,
    /// `images/manifest.csv`.
    pub manifest: PathBuf,
    /// `videos/`.
    pub videos_dir: PathBuf,
    /// `videos/metadata.json`.
    pub metadata: PathBuf,
    /// `videos/videos.csv`.
    pub videos_csv: PathBuf,
    /// Real still images written.
    pub real_images: usize,
    /// Fake still images written.
    pub fake_images: usize,
    /// Real videos written.
    pub real_videos: usize,
    /// Fake videos written.
    pub fake_videos: usize,
    /// Frames written over all videos.
    pub frames: usize,
}

/// Writes synthetic deepfake data.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deepfakes;

#[derive(serde::Serialize)]
struct MetadataEntry {
    label: &'static str,
    split: String,
    original: Option<String>,
}

impl Deepfakes {
    /// Renders the images and videos in parallel and writes them under `out_dir`.
    pub fn generate(config: &DeepfakesConfig, out_dir: &Path) -> Result<DeepfakesSummary> {
        let g = DeepfakeGenerator::new(config)?;
        let images_dir = out_dir.join("images");
        let videos_dir = out_dir.join("videos");
        for d in [images_dir.join("real"), images_dir.join("fake"), videos_dir.clone()] {
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        }
        let records = (0..g.image_count())
            .into_par_iter()
            .map(|i| {
                let (img, rec) = g.render_image(i)?;
                let path = images_dir.join(&rec.path);
                let bytes = if rec.path.ends_with(".png") {
                    img.encode_png(&path)?
                } else {
                    img.encode_jpeg(90, &path)?
                };
                write_atomically(&path, &bytes)?;
                Ok(rec)
            })
            .collect::<Result<Vec<DeepfakeRecord>>>()?;
        let mut manifest = String::from("path,label,group\n");
        for r in &records {
            let _ = writeln!(manifest, "{},{},{}", r.path, r.label, r.group);
        }
        let manifest_path = images_dir.join("manifest.csv");
        write_atomically(&manifest_path, manifest.as_bytes())?;

        let videos = (0..g.video_count())
            .into_par_iter()
            .map(|v| {
                let (frames, rec) = g.render_video(v)?;
                let dir = videos_dir.join(&rec.id);
                for (t, frame) in frames.iter().enumerate() {
                    let path = dir.join(format!("frame_{t:04}.png"));
                    write_atomically(&path, &frame.encode_png(&path)?)?;
                }
                Ok(rec)
            })
            .collect::<Result<Vec<VideoRecord>>>()?;
        let metadata: BTreeMap<String, MetadataEntry> = videos
            .iter()
            .map(|v| {
                let entry = MetadataEntry {
                    label: if v.label == 1 { "FAKE" } else { "REAL" },
                    split: v.split.clone(),
                    original: v.original.as_ref().map(|o| format!("{o}.mp4")),
                };
                (format!("{}.mp4", v.id), entry)
            })
            .collect();
        let metadata_path = videos_dir.join("metadata.json");
        let json = serde_json::to_vec_pretty(&metadata)
            .map_err(|source| Error::Json { path: metadata_path.clone(), source })?;
        write_atomically(&metadata_path, &json)?;
        let mut csv = String::from("video,label,group,frames\n");
        for v in &videos {
            let _ = writeln!(csv, "{},{},{},{}", v.id, v.label, v.group, v.frames);
        }
        let videos_csv = videos_dir.join("videos.csv");
        write_atomically(&videos_csv, csv.as_bytes())?;

        Ok(DeepfakesSummary {
            out_dir: out_dir.to_path_buf(),
            images_dir,
            manifest: manifest_path,
            videos_dir,
            metadata: metadata_path,
            videos_csv,
            real_images: records.iter().filter(|r| r.label == 0).count(),
            fake_images: records.iter().filter(|r| r.label == 1).count(),
            real_videos: videos.iter().filter(|v| v.label == 0).count(),
            fake_videos: videos.iter().filter(|v| v.label == 1).count(),
            frames: videos.iter().map(|v| v.frames).sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> DeepfakesConfig {
        DeepfakesConfig {
            real_images: 6,
            fake_images: 6,
            videos: 4,
            frames_per_video: 6,
            size: 64,
            identities: 6,
            jpg_fraction: 0.3,
            ..DeepfakesConfig::default()
        }
    }

    #[test]
    fn fakes_differ_only_inside_the_mask() {
        let g = DeepfakeGenerator::new(&DeepfakesConfig { size: 96, ..small() }).unwrap();
        assert!(g.swap_pair(0).is_err());
        for i in 6..12 {
            let pair = g.swap_pair(i).unwrap();
            let (fake, _) = g.render_image(i).unwrap();
            assert_eq!(fake, pair.fake);
            let n = 96i64;
            let inside = |x: i64, y: i64| -> bool {
                // The mask dilated by the camera blur's reach.
                let r = 6;
                (-r..=r).any(|dy| {
                    (-r..=r).any(|dx| {
                        let (xx, yy) = (x + dx, y + dy);
                        xx >= 0
                            && yy >= 0
                            && xx < n
                            && yy < n
                            && pair.mask.get(xx as u32, yy as u32, 0).unwrap() > 0
                    })
                })
            };
            let mut changed_inside = 0;
            for y in 0..n {
                for x in 0..n {
                    let same =
                        pair.real.pixel(x as u32, y as u32) == pair.fake.pixel(x as u32, y as u32);
                    if !inside(x, y) {
                        assert!(same, "image {i}: pixel ({x}, {y}) changed outside the mask");
                    } else if !same {
                        changed_inside += 1;
                    }
                }
            }
            assert!(changed_inside > 200, "image {i}: only {changed_inside} pixels changed");
        }
    }

    fn mean_abs_diff(a: &Image, b: &Image) -> f64 {
        let s: u64 =
            a.as_bytes().iter().zip(b.as_bytes()).map(|(x, y)| u64::from(x.abs_diff(*y))).sum();
        s as f64 / a.as_bytes().len() as f64
    }

    #[test]
    fn fake_videos_flicker() {
        let cfg = DeepfakesConfig { videos: 6, frames_per_video: 10, size: 64, ..small() };
        let g = DeepfakeGenerator::new(&cfg).unwrap();
        let (real_n, fake_n) = (g.real_videos, g.fake_videos);
        assert_eq!((real_n, fake_n), (3, 3));
        for v in real_n..real_n + fake_n {
            let (fake, rec) = g.render_video(v).unwrap();
            let orig = g.original_of(v);
            let (real, orig_rec) = g.render_video(orig).unwrap();
            assert_eq!(rec.original.as_deref(), Some(orig_rec.id.as_str()));
            assert_eq!(rec.group, orig_rec.group);
            // How far each fake frame is from its real frame varies over time...
            let per_frame: Vec<f64> =
                fake.iter().zip(&real).map(|(f, r)| mean_abs_diff(f, r)).collect();
            let mean = per_frame.iter().sum::<f64>() / per_frame.len() as f64;
            let var =
                per_frame.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / per_frame.len() as f64;
            assert!(mean > 0.3 && var.sqrt() > 0.05 * mean, "video {v}: {per_frame:?}");
            // ...and consecutive fake frames differ more than consecutive real ones.
            let temporal = |frames: &[Image]| {
                frames.windows(2).map(|w| mean_abs_diff(&w[0], &w[1])).sum::<f64>()
                    / (frames.len() - 1) as f64
            };
            assert!(
                temporal(&fake) > temporal(&real),
                "video {v}: {} vs {}",
                temporal(&fake),
                temporal(&real)
            );
        }
    }

    #[test]
    fn writes_image_folder_manifest_and_dfdc_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let s = Deepfakes::generate(&small(), dir.path()).unwrap();
        assert_eq!((s.real_images, s.fake_images, s.real_videos, s.fake_videos), (6, 6, 2, 2));
        let manifest = std::fs::read_to_string(&s.manifest).unwrap();
        let mut lines = manifest.lines();
        assert_eq!(lines.next(), Some("path,label,group"));
        let mut exts = std::collections::HashSet::new();
        for line in lines {
            let cols: Vec<&str> = line.split(',').collect();
            assert_eq!(cols.len(), 3);
            let label: u8 = cols[1].parse().unwrap();
            assert!(cols[0].starts_with(if label == 1 { "fake/" } else { "real/" }));
            assert!(cols[2].starts_with("id") && cols[2].len() == 6);
            let img = Image::open(&s.images_dir.join(cols[0])).unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
            exts.insert(cols[0].rsplit('.').next().unwrap().to_string());
        }
        assert!(exts.contains("png"));

        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&s.metadata).unwrap()).unwrap();
        let meta = meta.as_object().unwrap();
        assert_eq!(meta.len(), 4);
        for (key, entry) in meta {
            assert!(key.ends_with(".mp4"));
            let folder = s.videos_dir.join(key.trim_end_matches(".mp4"));
            assert!(
                folder.join("frame_0000.png").is_file() && folder.join("frame_0005.png").is_file()
            );
            match entry["label"].as_str().unwrap() {
                "FAKE" => {
                    let original = entry["original"].as_str().unwrap();
                    assert_eq!(meta[original]["label"], "REAL");
                    assert_eq!(meta[original]["split"], entry["split"]);
                }
                "REAL" => assert!(entry["original"].is_null()),
                other => panic!("label {other}"),
            }
        }
        let csv = std::fs::read_to_string(&s.videos_csv).unwrap();
        assert!(csv.starts_with("video,label,group,frames\n"));
        assert_eq!(csv.lines().count(), 5);

        let again = tempfile::tempdir().unwrap();
        Deepfakes::generate(&small(), again.path()).unwrap();
        assert_eq!(
            manifest,
            std::fs::read_to_string(again.path().join("images/manifest.csv")).unwrap()
        );
        let first = manifest.lines().nth(7).unwrap().split(',').next().unwrap().to_string();
        assert_eq!(
            std::fs::read(s.images_dir.join(&first)).unwrap(),
            std::fs::read(again.path().join("images").join(&first)).unwrap()
        );
    }
}
