//! Procedural faces with known attributes, written in CelebA's exact on-disk format.
//!
//! Each identity has fixed traits (sex, age, skin tone, face shape, hair, nose, lips, eyes,
//! facial hair, how often it wears glasses or make-up); each image varies pose, lighting,
//! background, expression, accessories, blur and noise. All 40 attributes get a value; most are
//! drawn (see the [crate docs](crate)), the rest follow CelebA-like priors and correlations.
//! `Attractive` is a noisy hidden function of other features: learnable, never trivially. The
//! other 39 labels explain most of it (reading them perfectly gives about 0.8 accuracy, close
//! to published CelebA results), subtle drawn traits and an invisible charm the rest, and each
//! record carries the rule's probability so the Bayes ceiling of any split can be computed.
//!
//! Files written by [`Faces::generate`] under the output folder:
//!
//! | file | format |
//! |---|---|
//! | `img_align_celeba/000001.jpg` ... | `width` x `height` JPEG (178x218 by default), eyes near y 111 |
//! | `list_attr_celeba.txt` | count line; the 40 names (trailing space); rows `000001.jpg -1  1 ...` |
//! | `list_eval_partition.txt` | `000001.jpg 0` (0 train, 1 valid, 2 test; identity-disjoint) |
//! | `identity_CelebA.txt` | `000001.jpg 17` (1-based identity) |
//! | `list_landmarks_align_celeba.txt` | count; header; eyes, nose, mouth corners as rendered |
//! | `list_bbox_celeba.txt` | count; header; `x_1 y_1 width height` |
//!
//! Unlike the real dataset, whose boxes refer to the unaligned in-the-wild photos, the boxes
//! here are the face box (forehead to chin, cheek to cheek) in the generated aligned image.
//! As in the official files, images are ordered by partition: all training images first, then
//! validation, then test.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use deeprecog_attributes::{Attribute, AttributeSet};
use rand::seq::SliceRandom;
use rayon::prelude::*;

use deeprecog_dataset::face::{FaceBox, Landmarks};
use deeprecog_dataset::fsutil::write_atomically;
use deeprecog_dataset::split::Ratios;

use crate::draw::{self, Framing};
use crate::model::{uni, Identity, Plan};
use crate::{rng_for, Stream};
use crate::{Error, Image, Result};

/// CelebA's official split is close to 80/10/10 (the default share of identities per
/// partition for [`FacesConfig`] and [`DeepfakesConfig`](crate::DeepfakesConfig)).
pub const CELEBA_PARTITION: Ratios = Ratios { train: 0.8, valid: 0.1, test: 0.1 };

/// How many of `n` groups (identities) go to each partition: [`Ratios::sizes`], then every
/// partition with a positive share gets at least one group, taken from the largest, when
/// there are enough groups (so a small fixture still has a test side).
pub fn partition_counts(ratios: &Ratios, n: usize) -> Result<[usize; 3]> {
    let mut counts = ratios.sizes(n)?;
    let shares = [ratios.train, ratios.valid, ratios.test];
    for i in 0..3 {
        if shares.get(i).copied().unwrap_or(0.0) > 0.0 && counts.get(i) == Some(&0) {
            let donor = (0..3).max_by_key(|j| counts.get(*j).copied().unwrap_or(0));
            if let Some(d) = donor.filter(|d| counts.get(*d).copied().unwrap_or(0) > 1) {
                if let Some(dc) = counts.get_mut(d) {
                    *dc -= 1;
                }
                if let Some(c) = counts.get_mut(i) {
                    *c += 1;
                }
            }
        }
    }
    Ok(counts)
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FacesConfig {
    /// Number of images.
    pub images: usize,
    /// Number of distinct people (at most `images`); each appears at least once.
    pub identities: usize,
    /// Seed of everything; the output is a pure function of the configuration.
    pub seed: u64,
    /// Image width (178 in img_align_celeba).
    pub width: u32,
    /// Image height (218 in img_align_celeba).
    pub height: u32,
    /// JPEG quality of the written images.
    pub jpeg_quality: u8,
    /// Identity-disjoint partition shares (they must sum to 1).
    pub partition: Ratios,
}

impl Default for FacesConfig {
    fn default() -> Self {
        FacesConfig {
            images: 2000,
            identities: 100,
            seed: 0,
            width: 178,
            height: 218,
            jpeg_quality: 90,
            partition: CELEBA_PARTITION,
        }
    }
}

impl FacesConfig {
    /// Rejects configurations that cannot work (no images, more people than images, tiny
    /// images).
    pub fn validate(&self) -> Result<()> {
        if self.images == 0 {
            return Err(Error::Config("synthetic faces: images must be at least 1".into()));
        }
        if self.identities == 0 || self.identities > self.images {
            return Err(Error::Config(format!(
                "synthetic faces: identities must be between 1 and images ({}), got {}",
                self.images, self.identities
            )));
        }
        if self.width < 32 || self.height < 32 {
            return Err(Error::Config(format!(
                "synthetic faces: images must be at least 32x32, got {}x{}",
                self.width, self.height
            )));
        }
        partition_counts(&self.partition, self.identities).map(|_| ())
    }
}

/// Ground truth of one generated image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FaceRecord {
    /// Zero-based image index (the file is `index + 1`).
    pub index: usize,
    /// `000001.jpg` style file name.
    pub file_name: String,
    /// One-based identity, as in `identity_CelebA.txt`.
    pub identity: u32,
    /// 0 train, 1 valid, 2 test, as in `list_eval_partition.txt`.
    pub partition: u8,
    /// The positive attributes.
    pub attributes: AttributeSet,
    /// The probability of `Attractive` under the hidden rule, before the annotator's coin flip
    /// drew the label: `max(p, 1 - p)` averaged over a split is the best accuracy any model can
    /// reach there (the Bayes ceiling a report can quote next to the majority baseline).
    pub attractive_probability: f32,
    /// Where the renderer put eyes, nose and mouth corners.
    pub landmarks: Landmarks,
    /// The face box in whole pixels, clipped to the image.
    pub bbox: FaceBox,
}

/// Renders synthetic faces in memory; [`Faces::generate`] writes them to disk.
#[derive(Debug, Clone)]
pub struct FaceGenerator {
    config: FacesConfig,
    identities: Vec<Identity>,
    /// Per image: identity (zero-based) and partition.
    assignment: Vec<(usize, u8)>,
    framing: Framing,
}

impl FaceGenerator {
    /// Draws the identities and assigns images to identities and identities to partitions.
    pub fn new(config: &FacesConfig) -> Result<FaceGenerator> {
        config.validate()?;
        let identities = (0..config.identities)
            .map(|k| Identity::sample(&mut rng_for(config.seed, Stream::Identity, k as u64)))
            .collect();
        let assignment = assign(config.images, config.identities, &config.partition, config.seed)?;
        Ok(FaceGenerator {
            config: config.clone(),
            identities,
            assignment,
            framing: Framing::aligned(config.width, config.height),
        })
    }

    /// The configuration this generator was built from.
    pub fn config(&self) -> &FacesConfig {
        &self.config
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.assignment.len()
    }

    /// Whether there are no images (never true for a validated configuration).
    pub fn is_empty(&self) -> bool {
        self.assignment.is_empty()
    }

    pub(crate) fn plan(&self, index: usize) -> Result<(Plan, usize, u8)> {
        let (identity, partition) = *self
            .assignment
            .get(index)
            .ok_or(Error::IndexOutOfRange { index, len: self.assignment.len() })?;
        let id = self
            .identities
            .get(identity)
            .ok_or(Error::IndexOutOfRange { index: identity, len: self.identities.len() })?;
        let plan = Plan::sample(id, &mut rng_for(self.config.seed, Stream::Image, index as u64));
        Ok((plan, identity, partition))
    }

    fn record_from(
        &self,
        index: usize,
        plan: &Plan,
        identity: usize,
        partition: u8,
        geo: &draw::Geometry,
    ) -> FaceRecord {
        let [le, re, no, lm, rm] = geo.landmarks;
        let (w, h) = (self.config.width as f32, self.config.height as f32);
        let x0 = geo.bbox[0].clamp(0.0, w - 1.0).round();
        let y0 = geo.bbox[1].clamp(0.0, h - 1.0).round();
        let x1 = geo.bbox[2].clamp(0.0, w).round();
        let y1 = geo.bbox[3].clamp(0.0, h).round();
        FaceRecord {
            index,
            file_name: format!("{:06}.jpg", index + 1),
            identity: identity as u32 + 1,
            partition,
            attributes: plan.attrs,
            attractive_probability: plan.attractive_probability(plan.attrs),
            landmarks: Landmarks {
                left_eye: [le.0, le.1],
                right_eye: [re.0, re.1],
                nose: [no.0, no.1],
                left_mouth: [lm.0, lm.1],
                right_mouth: [rm.0, rm.1],
            },
            bbox: FaceBox::new(x0, y0, (x1 - x0).max(1.0), (y1 - y0).max(1.0)),
        }
    }

    /// The ground truth of image `index` without rendering it.
    pub fn record(&self, index: usize) -> Result<FaceRecord> {
        let (plan, identity, partition) = self.plan(index)?;
        let geo = draw::geometry(&plan, &self.framing);
        Ok(self.record_from(index, &plan, identity, partition, &geo))
    }

    /// Renders image `index` (zero-based) and returns it with its ground truth. The image is
    /// what [`Faces::generate`] encodes as JPEG.
    pub fn render(&self, index: usize) -> Result<(Image, FaceRecord)> {
        let (plan, identity, partition) = self.plan(index)?;
        let mut camera = rng_for(self.config.seed, Stream::Camera, index as u64);
        let (img, geo) = draw::render_image(&plan, &self.framing, &mut camera)?;
        Ok((img, self.record_from(index, &plan, identity, partition, &geo)))
    }
}

/// Images to identities (each at least once, then weighted so counts vary as in CelebA),
/// identities to partitions, and images ordered by partition like the official files.
fn assign(
    images: usize,
    identities: usize,
    ratios: &Ratios,
    seed: u64,
) -> Result<Vec<(usize, u8)>> {
    let mut rng = rng_for(seed, Stream::Split, 0);
    let mut order: Vec<usize> = (0..identities).collect();
    order.shuffle(&mut rng);
    let counts = partition_counts(ratios, identities)?;
    let mut partition_of = vec![0u8; identities];
    let (n_train, n_valid) = (counts[0], counts[1]);
    for (rank, k) in order.iter().enumerate() {
        let p = if rank < n_train {
            0
        } else if rank < n_train + n_valid {
            1
        } else {
            2
        };
        if let Some(slot) = partition_of.get_mut(*k) {
            *slot = p;
        }
    }
    let weights: Vec<f32> = (0..identities).map(|_| uni(&mut rng, 0.3, 1.7)).collect();
    let cumulative: Vec<f32> = weights
        .iter()
        .scan(0.0f32, |acc, w| {
            *acc += w;
            Some(*acc)
        })
        .collect();
    let total = cumulative.last().copied().unwrap_or(1.0);
    let mut owners: Vec<usize> = (0..identities).collect();
    for _ in identities..images {
        let r = uni(&mut rng, 0.0, total);
        let k = cumulative.partition_point(|c| *c <= r).min(identities - 1);
        owners.push(k);
    }
    owners.shuffle(&mut rng);
    let mut out: Vec<(usize, u8)> =
        owners.into_iter().map(|k| (k, partition_of.get(k).copied().unwrap_or(0))).collect();
    out.sort_by_key(|(_, p)| *p);
    Ok(out)
}

/// What [`Faces::generate`] wrote.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FacesSummary {
    /// The output folder.
    pub out_dir: PathBuf,
    /// `img_align_celeba/`.
    pub image_dir: PathBuf,
    /// `list_attr_celeba.txt`.
    pub attr_file: PathBuf,
    /// `list_eval_partition.txt`.
    pub partition_file: PathBuf,
    /// `identity_CelebA.txt`.
    pub identity_file: PathBuf,
    /// `list_landmarks_align_celeba.txt`.
    pub landmarks_file: PathBuf,
    /// `list_bbox_celeba.txt`.
    pub bbox_file: PathBuf,
    /// Number of images.
    pub images: usize,
    /// Number of identities.
    pub identities: usize,
    /// Images in train, valid, test.
    pub partition_counts: [usize; 3],
    /// Positive images per attribute, in file order.
    pub positives: Vec<(Attribute, usize)>,
}

impl FacesSummary {
    /// Fraction of images where `attribute` is positive.
    pub fn positive_fraction(&self, attribute: Attribute) -> f64 {
        let n = self.positives.iter().find(|(a, _)| *a == attribute).map_or(0, |(_, n)| *n);
        n as f64 / self.images.max(1) as f64
    }
}

/// Writes synthetic CelebA.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faces;

impl Faces {
    /// Renders `config.images` faces in parallel and writes images and the five annotation
    /// files under `out_dir` (created if needed; existing files of the same names are
    /// replaced).
    pub fn generate(config: &FacesConfig, out_dir: &Path) -> Result<FacesSummary> {
        let generator = FaceGenerator::new(config)?;
        let image_dir = out_dir.join("img_align_celeba");
        std::fs::create_dir_all(&image_dir).map_err(|e| Error::io(&image_dir, e))?;
        let records = (0..generator.len())
            .into_par_iter()
            .map(|i| {
                let (img, rec) = generator.render(i)?;
                let path = image_dir.join(&rec.file_name);
                write_atomically(&path, &img.encode_jpeg(config.jpeg_quality, &path)?)?;
                Ok(rec)
            })
            .collect::<Result<Vec<FaceRecord>>>()?;

        let summary = FacesSummary {
            out_dir: out_dir.to_path_buf(),
            image_dir,
            attr_file: out_dir.join("list_attr_celeba.txt"),
            partition_file: out_dir.join("list_eval_partition.txt"),
            identity_file: out_dir.join("identity_CelebA.txt"),
            landmarks_file: out_dir.join("list_landmarks_align_celeba.txt"),
            bbox_file: out_dir.join("list_bbox_celeba.txt"),
            images: records.len(),
            identities: config.identities,
            partition_counts: [0u8, 1, 2]
                .map(|p| records.iter().filter(|r| r.partition == p).count()),
            positives: Attribute::ALL
                .iter()
                .map(|a| (*a, records.iter().filter(|r| r.attributes.contains(*a)).count()))
                .collect(),
        };
        write_atomically(&summary.attr_file, attr_text(&records).as_bytes())?;
        write_atomically(&summary.partition_file, partition_text(&records).as_bytes())?;
        write_atomically(&summary.identity_file, identity_text(&records).as_bytes())?;
        write_atomically(&summary.landmarks_file, landmarks_text(&records).as_bytes())?;
        write_atomically(&summary.bbox_file, bbox_text(&records).as_bytes())?;
        Ok(summary)
    }
}

/// `list_attr_celeba.txt`: count, names with a trailing space, rows of width-2 signs.
pub(crate) fn attr_text(records: &[FaceRecord]) -> String {
    let mut s = format!("{}\n", records.len());
    for a in Attribute::ALL {
        s.push_str(a.name());
        s.push(' ');
    }
    s.push('\n');
    for r in records {
        s.push_str(&r.file_name);
        for v in r.attributes.to_signs() {
            let _ = write!(s, " {v:>2}");
        }
        s.push('\n');
    }
    s
}

fn partition_text(records: &[FaceRecord]) -> String {
    records.iter().map(|r| format!("{} {}\n", r.file_name, r.partition)).collect()
}

fn identity_text(records: &[FaceRecord]) -> String {
    records.iter().map(|r| format!("{} {}\n", r.file_name, r.identity)).collect()
}

fn landmarks_text(records: &[FaceRecord]) -> String {
    let mut s = format!(
        "{}\nlefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y\n",
        records.len()
    );
    for r in records {
        s.push_str(&r.file_name);
        for (i, v) in r.landmarks.rounded().iter().enumerate() {
            let _ = if i == 0 { write!(s, " {v:>5}") } else { write!(s, " {v:>4}") };
        }
        s.push('\n');
    }
    s
}

fn bbox_text(records: &[FaceRecord]) -> String {
    let mut s = format!("{}\nimage_id x_1 y_1 width height\n", records.len());
    for r in records {
        let [x, y, width, height] = r.bbox.rounded();
        let _ = writeln!(s, "{} {:>5} {:>3} {:>3} {:>3}", r.file_name, x, y, width, height);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    fn small(images: usize, identities: usize, seed: u64) -> FacesConfig {
        FacesConfig { images, identities, seed, ..FacesConfig::default() }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_differs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        Faces::generate(&small(12, 4, 7), &a).unwrap();
        // A different thread count must not change anything.
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        pool.install(|| Faces::generate(&small(12, 4, 7), &b)).unwrap();
        Faces::generate(&small(12, 4, 8), &c).unwrap();
        for name in [
            "list_attr_celeba.txt",
            "list_landmarks_align_celeba.txt",
            "img_align_celeba/000007.jpg",
        ] {
            let x = std::fs::read(a.join(name)).unwrap();
            assert_eq!(x, std::fs::read(b.join(name)).unwrap(), "{name}");
            assert_ne!(x, std::fs::read(c.join(name)).unwrap(), "{name}");
        }
    }

    fn rows(path: &Path, header_lines: usize) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(!text.contains('\r'));
        text.lines()
            .skip(header_lines)
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn files_parse_back_in_celeba_format() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = small(30, 6, 3);
        let summary = Faces::generate(&cfg, dir.path()).unwrap();
        assert_eq!(summary.images, 30);

        let attr = std::fs::read_to_string(&summary.attr_file).unwrap();
        let mut lines = attr.lines();
        assert_eq!(lines.next(), Some("30"));
        let names = lines.next().unwrap();
        assert!(names.ends_with("Young "));
        assert_eq!(names.split_whitespace().count(), 40);
        assert_eq!(names.split_whitespace().next(), Some("5_o_Clock_Shadow"));
        let first = lines.next().unwrap();
        assert!(first.starts_with("000001.jpg "));
        assert!(first.contains("  1") || first.contains(" -1 -1"));
        for (i, row) in rows(&summary.attr_file, 2).iter().enumerate() {
            assert_eq!(row.len(), 41);
            assert_eq!(row[0], format!("{:06}.jpg", i + 1));
            assert!(row[1..].iter().all(|v| v == "1" || v == "-1"));
        }

        let parts = rows(&summary.partition_file, 0);
        let ids = rows(&summary.identity_file, 0);
        assert_eq!((parts.len(), ids.len()), (30, 30));
        let mut part_of_id: HashMap<String, String> = HashMap::new();
        let mut prev = 0;
        for (p, id) in parts.iter().zip(&ids) {
            assert_eq!(p[0], id[0]);
            let part: u8 = p[1].parse().unwrap();
            assert!(part >= prev, "images are ordered by partition");
            prev = part;
            let old = part_of_id.insert(id[1].clone(), p[1].clone());
            assert!(
                old.is_none() || old.as_ref() == Some(&p[1]),
                "identity split across partitions"
            );
        }
        assert_eq!(part_of_id.len(), 6);
        assert!(part_of_id.values().collect::<HashSet<_>>().len() == 3);

        let lm_text = std::fs::read_to_string(&summary.landmarks_file).unwrap();
        assert!(lm_text.lines().nth(1).unwrap().starts_with("lefteye_x lefteye_y"));
        for row in rows(&summary.landmarks_file, 2) {
            assert_eq!(row.len(), 11);
            let v: Vec<i32> = row[1..].iter().map(|x| x.parse().unwrap()).collect();
            for xy in v.chunks(2) {
                assert!((0..178).contains(&xy[0]) && (0..218).contains(&xy[1]), "{row:?}");
            }
            assert!(v[0] < v[2], "left eye is on the image's left");
            assert!((95..125).contains(&v[1]), "eyes near y 111: {row:?}");
            assert!(v[5] > v[1] && v[7] > v[5], "nose below eyes, mouth below nose");
        }
        let first_lm = lm_text.lines().nth(2).unwrap();
        assert!(first_lm.starts_with("000001.jpg    ") || first_lm.starts_with("000001.jpg   1"));
        for row in rows(&summary.bbox_file, 2) {
            let v: Vec<i64> = row[1..].iter().map(|x| x.parse().unwrap()).collect();
            assert_eq!(v.len(), 4);
            assert!(
                v[0] >= 0 && v[1] >= 0 && v[0] + v[2] <= 178 && v[1] + v[3] <= 218 && v[2] > 40
            );
        }

        for i in 1..=30 {
            let img = Image::open(&summary.image_dir.join(format!("{i:06}.jpg"))).unwrap();
            assert_eq!((img.width(), img.height()), (178, 218));
        }
    }

    #[test]
    fn partition_counts_give_every_side_a_group() {
        let r = |train, valid, test| Ratios { train, valid, test };
        assert_eq!(partition_counts(&r(0.7, 0.1, 0.2), 400).unwrap(), [280, 40, 80]);
        assert_eq!(partition_counts(&CELEBA_PARTITION, 30).unwrap(), [24, 3, 3]);
        assert_eq!(partition_counts(&CELEBA_PARTITION, 3).unwrap(), [1, 1, 1]);
        assert_eq!(partition_counts(&CELEBA_PARTITION, 2).unwrap(), [1, 1, 0]);
        assert_eq!(partition_counts(&r(1.0, 0.0, 0.0), 5).unwrap(), [5, 0, 0]);
        assert!(partition_counts(&r(0.7, 0.7, 0.2), 10).is_err());
        assert!(partition_counts(&r(-0.1, 0.9, 0.2), 10).is_err());
    }

    #[test]
    fn in_memory_matches_records_and_identities_repeat() {
        let g = FaceGenerator::new(&small(20, 5, 11)).unwrap();
        let mut seen = HashMap::new();
        for i in 0..20 {
            let rec = g.record(i).unwrap();
            let (img, rec2) = g.render(i).unwrap();
            assert_eq!(rec, rec2);
            assert_eq!((img.width(), img.height()), (178, 218));
            *seen.entry(rec.identity).or_insert(0) += 1;
            assert!(
                rec.attributes.contains(Attribute::NoBeard)
                    || rec.attributes.contains(Attribute::Male)
            );
            assert!(
                !(rec.attributes.contains(Attribute::Goatee)
                    && rec.attributes.contains(Attribute::NoBeard))
            );
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.values().any(|n| *n > 1));
        assert!(g.render(20).is_err());
        assert!(FaceGenerator::new(&small(3, 5, 0)).is_err());
    }

    #[test]
    fn priors_are_celeba_like() {
        let g = FaceGenerator::new(&small(2000, 400, 5)).unwrap();
        let recs: Vec<FaceRecord> = (0..2000).map(|i| g.record(i).unwrap()).collect();
        let frac =
            |a: Attribute| recs.iter().filter(|r| r.attributes.contains(a)).count() as f64 / 2000.0;
        let attractive = frac(Attribute::Attractive);
        assert!((0.35..0.65).contains(&attractive), "Attractive {attractive}");
        assert!((0.3..0.55).contains(&frac(Attribute::Male)));
        assert!((0.6..0.9).contains(&frac(Attribute::Young)));
        assert!((0.7..0.95).contains(&frac(Attribute::NoBeard)));
        assert!((0.02..0.15).contains(&frac(Attribute::Eyeglasses)));
        let makeup_male = recs
            .iter()
            .filter(|r| {
                r.attributes.contains(Attribute::HeavyMakeup)
                    && r.attributes.contains(Attribute::Male)
            })
            .count();
        assert!(makeup_male < 10);
    }

    #[test]
    fn attractive_is_learnable_but_not_determined_by_the_pixels() {
        let g = FaceGenerator::new(&small(400, 160, 2024)).unwrap();
        let records: Vec<FaceRecord> = (0..400).map(|i| g.record(i).unwrap()).collect();
        let p = |r: &FaceRecord| f64::from(r.attractive_probability);
        let ceiling = records.iter().map(|r| p(r).max(1.0 - p(r))).sum::<f64>() / 400.0;
        // Far above the ~51% majority class, yet the annotator's coin flip keeps a real gap
        // to 100%.
        assert!((0.75..0.92).contains(&ceiling), "Bayes ceiling {ceiling}");
        let agree = records
            .iter()
            .filter(|r| (p(r) > 0.5) == r.attributes.contains(Attribute::Attractive))
            .count();
        let realized = agree as f64 / 400.0;
        assert!((ceiling - realized).abs() < 0.06, "realized {realized} vs expected {ceiling}");
        let from_labels = records
            .iter()
            .filter(|r| {
                let s = crate::model::attractive_score_from_labels(r.attributes);
                (s > 0.0) == r.attributes.contains(Attribute::Attractive)
            })
            .count() as f64
            / 400.0;
        // A perfect reader of the other labels gets close to the published ~0.81 on CelebA.
        assert!((0.74..0.88).contains(&from_labels), "from the other labels: {from_labels}");
    }

    #[test]
    fn attractive_fraction_over_300_rendered_images() {
        let g = FaceGenerator::new(&small(300, 60, 21)).unwrap();
        let pos = (0..300)
            .filter(|i| g.record(*i).unwrap().attributes.contains(Attribute::Attractive))
            .count();
        let f = pos as f64 / 300.0;
        assert!((0.35..0.65).contains(&f), "{f}");
    }

    /// Mean of channel-averaged pixels in a rectangle.
    fn mean_region(img: &Image, x0: u32, y0: u32, x1: u32, y1: u32) -> f64 {
        let mut s = 0.0;
        let mut n = 0.0;
        for y in y0..y1 {
            for x in x0..x1 {
                let p = img.pixel(x, y).unwrap();
                s += (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0;
                n += 1.0;
            }
        }
        s / n
    }

    #[test]
    fn attributes_are_visible() {
        let g = FaceGenerator::new(&small(400, 200, 2)).unwrap();
        let (mut glasses, mut plain) = (Vec::new(), Vec::new());
        let (mut blond, mut black) = (Vec::new(), Vec::new());
        for i in 0..400 {
            let rec = g.record(i).unwrap();
            let a = rec.attributes;
            let wants_glasses = a.contains(Attribute::Eyeglasses) && glasses.len() < 12;
            let wants_plain = !a.contains(Attribute::Eyeglasses) && plain.len() < 12;
            let wants_blond = a.contains(Attribute::BlondHair)
                && !a.contains(Attribute::WearingHat)
                && blond.len() < 12;
            let wants_black = a.contains(Attribute::BlackHair)
                && !a.contains(Attribute::WearingHat)
                && black.len() < 12;
            if !(wants_glasses || wants_plain || wants_blond || wants_black) {
                continue;
            }
            let (img, _) = g.render(i).unwrap();
            // Frames are thin: measure the edge energy of the eye band, which they add.
            let lm = rec.landmarks;
            let (ex, ey) = (lm.left_eye[0] as i64, lm.left_eye[1] as i64);
            let mut edges = 0.0;
            for y in (ey - 10).max(1)..(ey + 10) {
                for x in (ex - 16).max(1)..(ex + 16) {
                    let v = |x: i64, y: i64| img.get(x as u32, y as u32, 1).unwrap() as f64;
                    edges += (v(x, y) - v(x - 1, y)).abs() + (v(x, y) - v(x, y - 1)).abs();
                }
            }
            if wants_glasses {
                glasses.push(edges);
            }
            if wants_plain {
                plain.push(edges);
            }
            // The top of the head, above the hairline.
            let top = mean_region(&img, 70, 30, 108, 45);
            if wants_blond {
                blond.push(top);
            }
            if wants_black {
                black.push(top);
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        assert!(glasses.len() >= 5 && blond.len() >= 5 && black.len() >= 5);
        assert!(mean(&glasses) > mean(&plain) * 1.2, "{} vs {}", mean(&glasses), mean(&plain));
        assert!(mean(&blond) > mean(&black) + 50.0, "{} vs {}", mean(&blond), mean(&black));
    }
}
