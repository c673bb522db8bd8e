//! A face-swap evaluation set made from *real* footage: classical FaceSwap fakes (the
//! graphics-based method of FaceForensics++, [`crate::swap`]) built from the face photos and
//! talking-head clips that ship as assets, written with their labels so that a detector can be
//! tested on real faces rather than only on the project's procedural fixtures.
//!
//! Layout under the output folder:
//!
//! ```text
//! videos/metadata.json              DFDC format, split "test" for every entry
//! videos/<clip>.mp4                 REAL: the clip's sampled frames, re-encoded
//! videos/<clip>__<photo>.mp4        FAKE: the same frames with the photo's face swapped in
//! images/real/<photo>.png           REAL: the photos (single-face and group photos)
//! images/fake/<target>__<source>.png       FAKE: photo-to-photo swaps between identities
//! images/fake/<group>__swap<K>.png  FAKE: one face of a group photo given a neighbour's face
//! images/manifest.csv               path,label,group (label 0 real / 1 fake; paths from images/)
//! summary.json                      SwapSetSummary: counts, skipped inputs, every written item
//! ```
//!
//! Every entry's split is `"test"`: a few identities in a handful of clips are an evaluation
//! set, far too small and too correlated to train on. `videos/` reads back with
//! [`crate::prepare::sources_from_dfdc`] (the metadata sits in the root, as DFDC's parts do).
//!
//! Why the real clips are re-encoded: the fakes are necessarily encoded by us, and a real clip
//! kept in its original codec would let a detector tell real from fake by compression alone;
//! both go through [`crate::video::encode_frames`] from lossless PNG frames.
//!
//! Photo identities come from the file stem with trailing digits and `_partial_face` removed
//! ([`identity_of`]: `obama2` and `obama_partial_face2` are both `obama`), and swaps are only
//! made between different identities (a swap of Obama onto Obama is not a fake anyone would
//! make). The build is deterministic: no randomness, inputs processed in the order given.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::Image;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dfdc::{Label, METADATA_FILE};
use crate::face::{Detection, FaceDetector};
use crate::swap::{swap_face, SwapConfig, ALIGN_KEYPOINTS};
use crate::video::{self, Frame};
use crate::{Error, Result};

/// The split every entry of the set carries: it is meant for evaluation only.
pub const SPLIT: &str = "test";

/// How the set is built.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SwapSetConfig {
    /// Frames taken from each target clip, spread evenly over its first `seconds`.
    pub frames: usize,
    /// How much of each clip's start the frames are spread over, in seconds (long clips such as
    /// a 200 s interview would otherwise give frames seconds apart, which no longer play as a
    /// video).
    pub seconds: f64,
    /// Frame rate of the written videos.
    pub fps: f64,
    /// How each face is swapped.
    pub swap: SwapConfig,
    /// Faces scoring below this are ignored (half faces at a photo's edge score low and align
    /// badly).
    pub min_score: f32,
    /// How many fakes to make from each group photo (each swaps one pair of faces).
    pub group_swaps: usize,
}

impl Default for SwapSetConfig {
    /// 24 frames over the first 8 s, written at 8 fps; default swap; faces scoring >= 0.8;
    /// 4 swaps per group photo.
    fn default() -> Self {
        SwapSetConfig {
            frames: 24,
            seconds: 8.0,
            fps: 8.0,
            swap: SwapConfig::default(),
            min_score: 0.8,
            group_swaps: 4,
        }
    }
}

impl SwapSetConfig {
    /// Checks that frames >= 1, seconds and fps are positive numbers, min_score is in `[0, 1]`
    /// and the swap config is valid.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::InvalidConfig { what: "swap set config", reason });
        if self.frames == 0 {
            return bad("frames must be at least 1".into());
        }
        if !(self.seconds.is_finite() && self.seconds > 0.0) {
            return bad(format!("seconds {} is not a positive number", self.seconds));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return bad(format!("fps {} is not a positive number", self.fps));
        }
        if !(0.0..=1.0).contains(&self.min_score) {
            return bad(format!("min_score {} is not in [0, 1]", self.min_score));
        }
        self.swap.validate()
    }
}

/// An input left out of the set, or a part of one that could not be made, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The input file (or, for a fake that could not be made, its target).
    pub input: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// Whether an item is a still image or a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// A PNG under `images/`.
    Image,
    /// An mp4 under `videos/`.
    Video,
}

/// One file the set holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapItem {
    /// Path relative to the output folder, with `/` separators.
    pub path: String,
    /// Image or video.
    pub kind: ItemKind,
    /// Real or fake.
    pub label: Label,
    /// The target's identity (photos), file stem (group photos) or real clip's file name
    /// (videos): what a leak-free split keeps together.
    pub group: String,
    /// The input the picture comes from (for a fake, the one whose face was replaced).
    pub target: PathBuf,
    /// For a fake, the input whose face was swapped in.
    pub source: Option<PathBuf>,
    /// For a fake image, the target face's box: outside the swap mask (which lies inside the
    /// keypoints' face outline, well within this box) the fake keeps the target's bytes.
    pub face: Option<FaceBox>,
    /// For a fake video, how many of its frames had a face swapped.
    pub frames_swapped: Option<usize>,
}

/// What [`build_swap_set`] wrote (also saved as `summary.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwapSetSummary {
    /// Real clips written under `videos/`.
    pub real_videos: usize,
    /// Fake clips written under `videos/`.
    pub fake_videos: usize,
    /// Real pictures under `images/real/`.
    pub real_images: usize,
    /// Fake pictures under `images/fake/`.
    pub fake_images: usize,
    /// Frames of fake clips whose face was replaced.
    pub frames_swapped: usize,
    /// Frames of fake clips written unchanged because no usable face was found in them.
    pub frames_without_face: usize,
    /// Frames of fake clips written unchanged because the swap failed (degenerate keypoints).
    pub frames_failed: usize,
    /// Inputs (or fakes) that were left out, with the reason.
    pub skipped: Vec<Skipped>,
    /// Every written picture and clip, in writing order.
    pub items: Vec<SwapItem>,
}

/// The identity a photo's file stem names: trailing digits and a `_partial_face` suffix
/// removed (repeatedly, then trailing `_`, `-`, spaces), so `obama`, `obama2` and
/// `obama_partial_face2` are one person. A stem that would become empty is its own identity.
pub fn identity_of(stem: &str) -> String {
    let mut s = stem;
    loop {
        let before = s.len();
        s = s.trim_end_matches(|c: char| c.is_ascii_digit());
        s = s.strip_suffix("_partial_face").unwrap_or(s);
        s = s.trim_end_matches(['_', '-', ' ']);
        if s.len() == before {
            break;
        }
    }
    if s.is_empty() {
        stem.to_string()
    } else {
        s.to_string()
    }
}

/// Builds the set from `photos` (one face each), `videos` (talking heads) with `detector`, into
/// `out`; see the module documentation for the layout. Every photo's face is swapped onto every
/// photo of another identity, and onto each sampled frame of every clip (one fake clip per
/// clip and identity, using that identity's most complete face photo).
///
/// Equivalent to [`build_swap_set_with_groups`] without group photos.
pub fn build_swap_set(
    photos: &[PathBuf],
    videos: &[PathBuf],
    detector: &dyn FaceDetector,
    out: &Path,
    config: &SwapSetConfig,
) -> Result<SwapSetSummary> {
    build_swap_set_with_groups(photos, &[], videos, detector, detector, out, config)
}

/// [`build_swap_set`] plus `group_photos`, searched with `group_detector` (small faces want
/// BlazeFace's back model with tiling, [`crate::scan::DetectorKind::BlazeFaceBack`]): each is
/// written as real, and up to [`SwapSetConfig::group_swaps`] fakes are made from it, fake K
/// giving face 2K (faces by score, best first) the face 2K+1.
///
/// Existing files of the same names under `out` are replaced; other files there are left as
/// they are (start from an empty folder for counts that match the folder).
///
/// # Errors
/// An unreadable, corrupt or faceless input is not an error: it is listed in
/// [`SwapSetSummary::skipped`]. Errors are: an invalid config; ffmpeg missing; an output that
/// cannot be written; and a set without a single fake ([`Error::InvalidConfig`] naming the
/// skipped inputs; `summary.json` is still written).
pub fn build_swap_set_with_groups(
    photos: &[PathBuf],
    group_photos: &[PathBuf],
    videos: &[PathBuf],
    detector: &dyn FaceDetector,
    group_detector: &dyn FaceDetector,
    out: &Path,
    config: &SwapSetConfig,
) -> Result<SwapSetSummary> {
    config.validate()?;
    let images_dir = out.join("images");
    for dir in [images_dir.join("real"), images_dir.join("fake")] {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    let mut summary = SwapSetSummary::default();
    let mut stems = HashSet::new();

    let singles = load_photos(photos, detector, config, false, &mut stems, &mut summary);
    let groups = load_photos(group_photos, group_detector, config, true, &mut stems, &mut summary);

    for photo in singles.iter().chain(&groups) {
        let rel = format!("images/real/{}.png", photo.stem);
        photo.image.save(&out.join(&rel))?;
        summary.real_images += 1;
        summary.items.push(SwapItem {
            path: rel,
            kind: ItemKind::Image,
            label: Label::Real,
            group: photo.group.clone(),
            target: photo.path.clone(),
            source: None,
            face: None,
            frames_swapped: None,
        });
    }
    photo_fakes(&singles, out, config, &mut summary)?;
    group_fakes(&groups, out, config, &mut summary)?;
    write_manifest(&images_dir.join("manifest.csv"), &summary.items)?;

    let sources = best_photo_per_identity(&singles);
    let mut metadata = BTreeMap::new();
    let mut video_stems = HashSet::new();
    for path in videos {
        video_fakes(
            path,
            &sources,
            detector,
            out,
            config,
            &mut video_stems,
            &mut metadata,
            &mut summary,
        )?;
    }
    if !metadata.is_empty() {
        let file = out.join("videos").join(METADATA_FILE);
        write_json(&file, &metadata)?;
    }

    write_json(&out.join("summary.json"), &summary)?;
    if summary.fake_images + summary.fake_videos == 0 {
        let skipped: Vec<String> = summary
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.input.display(), s.reason))
            .collect();
        return Err(Error::InvalidConfig {
            what: "swap set",
            reason: format!(
                "no fake could be made from {} photo(s), {} group photo(s) and {} video(s) \
                 (swaps need faces of two different identities){}{}",
                photos.len(),
                group_photos.len(),
                videos.len(),
                if skipped.is_empty() { "" } else { "; skipped: " },
                skipped.join("; ")
            ),
        });
    }
    Ok(summary)
}

/// A photo with its usable faces, best first.
struct Photo {
    path: PathBuf,
    stem: String,
    group: String,
    image: Image,
    faces: Vec<Detection>,
}

impl Photo {
    fn face(&self) -> Option<&Detection> {
        self.faces.first()
    }
}

/// Faces a swap can use: enough keypoints to align and a score of at least `min_score`,
/// best score first (stable, so equal scores keep the detector's order).
fn usable_faces(faces: Vec<Detection>, min_score: f32) -> Vec<Detection> {
    let mut faces: Vec<Detection> = faces
        .into_iter()
        .filter(|f| f.score >= min_score && f.keypoints.len() >= ALIGN_KEYPOINTS)
        .collect();
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    faces
}

fn file_stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Opens and searches the photos; a photo that cannot be read, has no usable face (fewer than
/// two for a group photo) or repeats a stem already taken is skipped.
fn load_photos(
    paths: &[PathBuf],
    detector: &dyn FaceDetector,
    config: &SwapSetConfig,
    group: bool,
    stems: &mut HashSet<String>,
    summary: &mut SwapSetSummary,
) -> Vec<Photo> {
    let mut photos = Vec::new();
    for path in paths {
        let mut skip = |reason: String| {
            summary.skipped.push(Skipped { input: path.clone(), reason });
        };
        let stem = file_stem(path);
        if stem.is_empty() {
            skip("no file name".into());
            continue;
        }
        if stems.contains(&stem) {
            skip(format!("another input already has the file stem {stem:?}"));
            continue;
        }
        let image = match Image::open(path) {
            Ok(image) => image.to_rgb(),
            Err(e) => {
                skip(format!("unreadable: {e}"));
                continue;
            }
        };
        let found = match detector.detect(&image) {
            Ok(found) => found,
            Err(e) => {
                skip(format!("face detection failed: {e}"));
                continue;
            }
        };
        let best = found.iter().map(|f| f.score).fold(f32::NAN, f32::max);
        let faces = usable_faces(found, config.min_score);
        let needed = if group { 2 } else { 1 };
        if faces.len() < needed {
            skip(format!(
                "{} usable face(s) (score >= {} with >= {ALIGN_KEYPOINTS} keypoints; best score \
                 {best:.3}), {needed} needed",
                faces.len(),
                config.min_score
            ));
            continue;
        }
        stems.insert(stem.clone());
        let group = if group { stem.clone() } else { identity_of(&stem) };
        photos.push(Photo { path: path.clone(), stem, group, image, faces });
    }
    photos
}

/// Every single-face photo's face on every photo of another identity.
fn photo_fakes(
    photos: &[Photo],
    out: &Path,
    config: &SwapSetConfig,
    summary: &mut SwapSetSummary,
) -> Result<()> {
    let pairs: Vec<(&Photo, &Photo)> = photos
        .iter()
        .flat_map(|t| photos.iter().map(move |s| (t, s)))
        .filter(|(t, s)| t.group != s.group)
        .collect();
    let swapped: Vec<(&Photo, &Photo, Result<Image>)> = pairs
        .into_par_iter()
        .map(|(t, s)| {
            let fake = match (t.face(), s.face()) {
                (Some(tf), Some(sf)) => swap_face(&t.image, tf, &s.image, sf, &config.swap),
                _ => Err(Error::InvalidConfig { what: "swap", reason: "no face".into() }),
            };
            (t, s, fake)
        })
        .collect();
    for (t, s, fake) in swapped {
        let fake = match fake {
            Ok(fake) => fake,
            Err(e) => {
                let reason = format!("swapping in the face of {}: {e}", s.path.display());
                summary.skipped.push(Skipped { input: t.path.clone(), reason });
                continue;
            }
        };
        let rel = format!("images/fake/{}__{}.png", t.stem, s.stem);
        fake.save(&out.join(&rel))?;
        summary.fake_images += 1;
        summary.items.push(SwapItem {
            path: rel,
            kind: ItemKind::Image,
            label: Label::Fake,
            group: t.group.clone(),
            target: t.path.clone(),
            source: Some(s.path.clone()),
            face: t.face().map(|f| f.bbox),
            frames_swapped: None,
        });
    }
    Ok(())
}

/// Swaps inside each group photo: fake K gives face 2K the face 2K+1 (disjoint pairs, so every
/// fake changes exactly one face and the faces of different fakes never overlap).
fn group_fakes(
    groups: &[Photo],
    out: &Path,
    config: &SwapSetConfig,
    summary: &mut SwapSetSummary,
) -> Result<()> {
    for photo in groups {
        let n = config.group_swaps.min(photo.faces.len() / 2);
        let fakes: Vec<(usize, Result<Image>)> = (0..n)
            .into_par_iter()
            .map(|k| {
                let (t, s) = (&photo.faces[2 * k], &photo.faces[2 * k + 1]);
                (k, swap_face(&photo.image, t, &photo.image, s, &config.swap))
            })
            .collect();
        for (k, fake) in fakes {
            let fake = match fake {
                Ok(fake) => fake,
                Err(e) => {
                    let reason = format!("swap {k} inside the group photo: {e}");
                    summary.skipped.push(Skipped { input: photo.path.clone(), reason });
                    continue;
                }
            };
            let rel = format!("images/fake/{}__swap{k}.png", photo.stem);
            fake.save(&out.join(&rel))?;
            summary.fake_images += 1;
            summary.items.push(SwapItem {
                path: rel,
                kind: ItemKind::Image,
                label: Label::Fake,
                group: photo.group.clone(),
                target: photo.path.clone(),
                source: Some(photo.path.clone()),
                face: Some(photo.faces[2 * k].bbox),
                frames_swapped: None,
            });
        }
    }
    Ok(())
}

/// How much of a face box lies inside the image, in `[0, 1]`: a half face cut by the photo's
/// edge scores about 0.5 and makes a poor source.
fn inside_fraction(face: &Detection, image: &Image) -> f32 {
    let b = &face.bbox;
    let w = (b.right().min(image.width() as f32) - b.x.max(0.0)).max(0.0);
    let h = (b.bottom().min(image.height() as f32) - b.y.max(0.0)).max(0.0);
    if b.area() > 0.0 {
        w * h / b.area()
    } else {
        0.0
    }
}

/// One photo per identity, in order of first appearance: the one whose face lies most inside
/// the picture, then the best score (the first on ties).
fn best_photo_per_identity(photos: &[Photo]) -> Vec<&Photo> {
    let mut best: Vec<&Photo> = Vec::new();
    let rank =
        |p: &Photo| p.face().map(|f| (inside_fraction(f, &p.image), f.score)).unwrap_or((0.0, 0.0));
    for photo in photos {
        match best.iter_mut().find(|b| b.group == photo.group) {
            Some(b) => {
                let (new, old) = (rank(photo), rank(b));
                if new.0 > old.0 || (new.0 == old.0 && new.1 > old.1) {
                    *b = photo;
                }
            }
            None => best.push(photo),
        }
    }
    best
}

/// One entry of `videos/metadata.json`.
#[derive(Debug, Serialize)]
struct MetadataEntry {
    label: &'static str,
    split: &'static str,
    original: Option<String>,
}

/// `frames` frames spread over the first `seconds` of the clip at `path`.
fn sample_start(path: &Path, config: &SwapSetConfig) -> Result<Vec<Frame>> {
    let info = video::probe(path)?;
    let span = ((config.seconds * info.fps).ceil() as u64).clamp(1, info.frames.max(1));
    video::frame_indices(span, config.frames)
        .into_par_iter()
        .map(|index| video::read_frame(&info, index))
        .collect()
}

/// Writes `images` as PNGs named `<prefix>_<i>.png` into `dir` and encodes them into `out`.
fn encode_images(images: &[Image], dir: &Path, prefix: &str, fps: f64, out: &Path) -> Result<()> {
    let files: Vec<PathBuf> =
        (0..images.len()).map(|i| dir.join(format!("{prefix}_{i:05}.png"))).collect();
    images.par_iter().zip(&files).try_for_each(|(image, file)| image.save(file))?;
    video::encode_frames(&files, fps, out)?;
    for file in &files {
        // The staging folder goes with its tempdir anyway; removing early only bounds disk use.
        let _ = std::fs::remove_file(file);
    }
    Ok(())
}

/// The real clip at `path` re-encoded, and one fake per source identity. An unreadable clip is
/// skipped; ffmpeg missing and unwritable outputs are errors.
#[allow(clippy::too_many_arguments)]
fn video_fakes(
    path: &Path,
    sources: &[&Photo],
    detector: &dyn FaceDetector,
    out: &Path,
    config: &SwapSetConfig,
    stems: &mut HashSet<String>,
    metadata: &mut BTreeMap<String, MetadataEntry>,
    summary: &mut SwapSetSummary,
) -> Result<()> {
    let mut skip = |reason: String| {
        summary.skipped.push(Skipped { input: path.to_path_buf(), reason });
    };
    let stem = file_stem(path);
    if stem.is_empty() || !stems.insert(stem.clone()) {
        skip(format!("another video already has the file stem {stem:?}"));
        return Ok(());
    }
    let frames = match sample_start(path, config) {
        Ok(frames) if !frames.is_empty() => frames,
        Ok(_) => {
            skip("no frames".into());
            return Ok(());
        }
        Err(e @ Error::FfmpegMissing { .. }) => return Err(e),
        Err(e) => {
            skip(format!("unreadable: {e}"));
            return Ok(());
        }
    };
    let images: Vec<Image> = frames.into_iter().map(|f| f.image).collect();
    let faces: Vec<Option<Detection>> = match detector.detect_batch(&images) {
        Ok(found) => found
            .into_iter()
            .map(|f| usable_faces(f, config.min_score).into_iter().next())
            .collect(),
        Err(e) => {
            skip(format!("face detection failed: {e}"));
            return Ok(());
        }
    };

    let dir = out.join("videos");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".swapset-frames.")
        .tempdir_in(&dir)
        .map_err(|e| Error::io(&dir, e))?;
    let real_name = format!("{stem}.mp4");
    encode_images(&images, staging.path(), "real", config.fps, &dir.join(&real_name))?;
    summary.real_videos += 1;
    summary.items.push(SwapItem {
        path: format!("videos/{real_name}"),
        kind: ItemKind::Video,
        label: Label::Real,
        group: real_name.clone(),
        target: path.to_path_buf(),
        source: None,
        face: None,
        frames_swapped: None,
    });
    metadata
        .insert(real_name.clone(), MetadataEntry { label: "REAL", split: SPLIT, original: None });

    for source in sources {
        let Some(source_face) = source.face() else { continue };
        // Unchanged frame, swapped frame, or the swap's error (the frame then stays unchanged).
        let swapped: Vec<(Image, Option<std::result::Result<(), String>>)> = images
            .par_iter()
            .zip(&faces)
            .map(|(frame, face)| match face {
                None => (frame.clone(), None),
                Some(face) => {
                    match swap_face(frame, face, &source.image, source_face, &config.swap) {
                        Ok(fake) => (fake, Some(Ok(()))),
                        Err(e) => (frame.clone(), Some(Err(e.to_string()))),
                    }
                }
            })
            .collect();
        let done = swapped.iter().filter(|(_, r)| matches!(r, Some(Ok(())))).count();
        let failed: Vec<String> = swapped
            .iter()
            .filter_map(|(_, r)| r.as_ref().and_then(|r| r.as_ref().err()).cloned())
            .collect();
        let without = swapped.iter().filter(|(_, r)| r.is_none()).count();
        let name = format!("{stem}__{}.mp4", source.stem);
        if let Some(first) = failed.first() {
            summary.skipped.push(Skipped {
                input: path.to_path_buf(),
                reason: format!(
                    "{name}: {} frame(s) kept unchanged, the swap failed (first: {first})",
                    failed.len()
                ),
            });
        }
        if done == 0 {
            // A "fake" without a single changed frame would be a mislabelled real clip.
            summary.skipped.push(Skipped {
                input: path.to_path_buf(),
                reason: format!("{name} not written: no frame had a face that could be swapped"),
            });
            continue;
        }
        let frames: Vec<Image> = swapped.into_iter().map(|(image, _)| image).collect();
        encode_images(&frames, staging.path(), &source.stem, config.fps, &dir.join(&name))?;
        summary.fake_videos += 1;
        summary.frames_swapped += done;
        summary.frames_without_face += without;
        summary.frames_failed += failed.len();
        summary.items.push(SwapItem {
            path: format!("videos/{name}"),
            kind: ItemKind::Video,
            label: Label::Fake,
            group: real_name.clone(),
            target: path.to_path_buf(),
            source: Some(source.path.clone()),
            face: None,
            frames_swapped: Some(done),
        });
        metadata.insert(
            name,
            MetadataEntry { label: "FAKE", split: SPLIT, original: Some(real_name.clone()) },
        );
    }
    staging.close().map_err(|e| Error::io(&dir, e))?;
    Ok(())
}

/// `images/manifest.csv`: the image items, paths relative to `images/`.
fn write_manifest(file: &Path, items: &[SwapItem]) -> Result<()> {
    let mut csv = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::io(file, std::io::Error::other(e.to_string()));
    csv.write_record(["path", "label", "group"]).map_err(csv_err)?;
    for item in items.iter().filter(|i| i.kind == ItemKind::Image) {
        let path = item.path.strip_prefix("images/").unwrap_or(&item.path);
        let label = item.label.index().to_string();
        csv.write_record([path, label.as_str(), item.group.as_str()]).map_err(csv_err)?;
    }
    let bytes =
        csv.into_inner().map_err(|e| Error::io(file, std::io::Error::other(e.to_string())))?;
    std::fs::write(file, bytes).map_err(|e| Error::io(file, e))
}

fn write_json(file: &Path, value: &impl Serialize) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::io(file, std::io::Error::other(e.to_string())))?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(file, bytes).map_err(|e| Error::io(file, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_strip_digits_and_partial_faces() {
        for (stem, want) in [
            ("obama", "obama"),
            ("obama2", "obama"),
            ("obama3", "obama"),
            ("obama_partial_face", "obama"),
            ("obama_partial_face2", "obama"),
            ("biden", "biden"),
            ("face_01", "face"),
            ("123", "123"),
        ] {
            assert_eq!(identity_of(stem), want, "{stem}");
        }
    }

    #[test]
    fn config_validation_names_the_setting() {
        assert!(SwapSetConfig::default().validate().is_ok());
        for (config, word) in [
            (SwapSetConfig { frames: 0, ..Default::default() }, "frames"),
            (SwapSetConfig { seconds: f64::NAN, ..Default::default() }, "seconds"),
            (SwapSetConfig { fps: 0.0, ..Default::default() }, "fps"),
            (SwapSetConfig { min_score: 1.5, ..Default::default() }, "min_score"),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(word), "{err}");
        }
    }

    #[test]
    fn usable_faces_drop_low_scores_and_missing_keypoints() {
        let kp = vec![[1.0, 1.0], [3.0, 1.0], [2.0, 2.0], [2.0, 3.0]];
        let face = |score, keypoints: &Vec<[f32; 2]>| Detection {
            bbox: FaceBox::new(0.0, 0.0, 4.0, 4.0),
            score,
            keypoints: keypoints.clone(),
        };
        let faces = vec![face(0.7, &kp), face(0.95, &vec![]), face(0.85, &kp), face(0.9, &kp)];
        let kept: Vec<f32> = usable_faces(faces, 0.8).iter().map(|f| f.score).collect();
        assert_eq!(kept, vec![0.9, 0.85]);
    }
}
