//! Building a face-crop dataset: every source (an image, or frames sampled from a video) goes
//! through a [`FaceDetector`], its faces are cut out ([`crop::crop_faces`]) and written as
//! image files, and a CSV manifest lists every crop with its label, group, source, frame and
//! box.
//!
//! The output folder holds:
//!
//! | File | Content |
//! |---|---|
//! | `crops/<group>/<stem>_f<frame>_<k>.png` | the `k`-th face kept in frame `frame` (0 for an image) of the source whose file stem is `stem`; `.jpg` with [`CropFormat::Jpg`] |
//! | `manifest.csv` | `path,label,group,source,frame_index,time_s,x,y,w,h,score`: one [`CropRow`] per crop; `path` is relative to the output folder, `label` is `real`, `fake` or empty, the box is the detection in the source's pixels. The first three columns are what `deeprecog_dataset::manifest::Manifest` reads |
//! | `skipped.csv` | `source,reason`: sources without any face, and inputs that could not be read (the error's message) |
//! | `done.txt` | one JSON object per finished source (its path, outcome and counts): the resume log |
//! | `summary.json` | the [`PrepareSummary`] |
//!
//! A run can be killed and started again with the same arguments: a source counts as done only
//! once its line is in `done.txt`, which is appended after its manifest and skipped rows are
//! written and synced. On start, rows of sources missing from `done.txt` (and a torn last line
//! of any of the three files) are dropped, and done sources are not processed again. At the
//! end the manifest and the skipped list are rewritten sorted, so a resumed run leaves the same
//! files as an uninterrupted one. Crop files of an unfinished source may stay behind when its
//! second attempt keeps fewer faces; the manifest is what lists the dataset. Only one run may
//! use an output folder at a time, and the output folder should not lie inside the input
//! folders (the source constructors would pick the crops up as inputs next time).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::fsutil::write_atomically;
use deeprecog_dataset::Image;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::crop::{self, CropConfig, FaceSelection};
use crate::dfdc::{self, Label};
use crate::{video, Error, FaceDetector, Result};

/// The manifest's file name in the output folder.
pub const MANIFEST_FILE: &str = "manifest.csv";
/// The skipped sources' file name in the output folder.
pub const SKIPPED_FILE: &str = "skipped.csv";
/// The resume log's file name in the output folder.
pub const DONE_FILE: &str = "done.txt";
/// The summary's file name in the output folder.
pub const SUMMARY_FILE: &str = "summary.json";
/// The folder (inside the output folder) that holds the crops.
pub const CROPS_DIR: &str = "crops";
/// The manifest's columns, in order.
pub const MANIFEST_COLUMNS: [&str; 11] =
    ["path", "label", "group", "source", "frame_index", "time_s", "x", "y", "w", "h", "score"];
/// JPEG quality of [`CropFormat::Jpg`] crops.
pub const JPEG_QUALITY: u8 = 95;

const SKIPPED_COLUMNS: [&str; 2] = ["source", "reason"];

/// Whether a source is a still image or a video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A video: frames are sampled with ffmpeg ([`video::sample_frames`]).
    Video,
    /// A JPEG or PNG image, decoded strictly.
    Image,
}

/// One input of [`prepare`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Image or video.
    pub kind: SourceKind,
    /// Real or fake, when known; crops of an unlabelled source get an empty label.
    pub label: Option<Label>,
    /// The group that keeps related crops on one side of a split (the source video of a DFDC
    /// fake, the file stem otherwise); it also names the crops' folder.
    pub group: String,
    /// Frames to sample from a video (ignored for an image, which is one frame).
    pub frames: usize,
}

impl Source {
    /// An image source.
    pub fn image(
        path: impl Into<PathBuf>,
        label: Option<Label>,
        group: impl Into<String>,
    ) -> Source {
        Source { path: path.into(), kind: SourceKind::Image, label, group: group.into(), frames: 1 }
    }

    /// A video source sampling `frames` frames.
    pub fn video(
        path: impl Into<PathBuf>,
        label: Option<Label>,
        group: impl Into<String>,
        frames: usize,
    ) -> Source {
        Source { path: path.into(), kind: SourceKind::Video, label, group: group.into(), frames }
    }
}

/// The label a path implies: the folder nearest to the file that is named `real` or `fake`
/// (any case), or `None`. The file's own name does not count.
pub fn label_from_path(path: &Path) -> Option<Label> {
    let parent = path.parent()?;
    parent.components().rev().find_map(|c| match c {
        Component::Normal(name) => name.to_str().and_then(|n| n.parse::<Label>().ok()),
        _ => None,
    })
}

/// Every video under `dir` (recursively, by [`video::is_video_file`]), sorted by path, each
/// sampling `frames` frames; label by [`label_from_path`], group = the file stem.
///
/// Hidden files and folders (names starting with `.`) are skipped and symbolic links to
/// folders are not followed.
pub fn sources_from_videos(dir: &Path, frames: usize) -> Result<Vec<Source>> {
    let files = walk(dir, &video::is_video_file)?;
    Ok(files
        .into_iter()
        .map(|path| {
            let group = stem(&path);
            Source::video(path.clone(), label_from_path(&path), group, frames)
        })
        .collect())
}

/// Every JPEG or PNG under `dir` (recursively, by `deeprecog_dataset::is_image_file`), sorted
/// by path; label by [`label_from_path`], group = the file stem. Hidden entries are skipped
/// and folder links not followed, as in [`sources_from_videos`].
pub fn sources_from_images(dir: &Path) -> Result<Vec<Source>> {
    let files = walk(dir, &deeprecog_dataset::is_image_file)?;
    Ok(files
        .into_iter()
        .map(|path| {
            let group = stem(&path);
            Source::image(path.clone(), label_from_path(&path), group)
        })
        .collect())
}

/// The videos of a DFDC root ([`dfdc::scan`]) with their labels and groups (a fake is grouped
/// with its source video) and [`dfdc::frames_per_video`] frames each: `frames`, or
/// `round(frames * minority_factor)` for the rarer class. Videos the metadata lists but the
/// folder lacks are included (unlabelled, grouped by their stem, after the present ones) so
/// that [`prepare`] reports them as failures rather than dropping them silently.
pub fn sources_from_dfdc(root: &Path, frames: usize, minority_factor: f32) -> Result<Vec<Source>> {
    let set = dfdc::scan(root)?;
    let counts = dfdc::frames_per_video(&set.entries, frames, minority_factor)?;
    let mut sources: Vec<Source> = set
        .entries
        .iter()
        .zip(counts)
        .map(|(e, n)| Source::video(e.file.clone(), Some(e.label), e.group(), n))
        .collect();
    sources.extend(set.missing.into_iter().map(|path| {
        let group = stem(&path);
        Source::video(path, None, group, frames)
    }));
    Ok(sources)
}

/// The image format of the crops.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum CropFormat {
    /// Lossless PNG (the default: a detector trained on crops should not learn JPEG artefacts
    /// that the preparation added).
    #[default]
    Png,
    /// JPEG at quality [`JPEG_QUALITY`]: several times smaller.
    Jpg,
}

impl CropFormat {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            CropFormat::Png => "png",
            CropFormat::Jpg => "jpg",
        }
    }
}

impl std::fmt::Display for CropFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

impl FromStr for CropFormat {
    type Err = Error;

    /// `png`, `jpg` or `jpeg`, any case.
    fn from_str(s: &str) -> Result<CropFormat> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Ok(CropFormat::Png),
            "jpg" | "jpeg" => Ok(CropFormat::Jpg),
            _ => Err(Error::InvalidConfig {
                what: "crop format",
                reason: format!("{s:?} is not png or jpg"),
            }),
        }
    }
}

/// How [`prepare`] crops.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PrepareConfig {
    /// Margin, shape, size and alignment of the crops.
    pub crop: CropConfig,
    /// Which faces of a frame become crops.
    pub selection: FaceSelection,
    /// Detections scoring below this are ignored (0 by default: the detector's own threshold
    /// decides).
    pub min_score: f32,
    /// Whether to draw a progress bar on stderr.
    pub progress: bool,
    /// The crops' file format.
    pub image_format: CropFormat,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            crop: CropConfig::default(),
            selection: FaceSelection::Largest,
            min_score: 0.0,
            progress: false,
            image_format: CropFormat::Png,
        }
    }
}

/// One row of a crop manifest.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CropRow {
    /// The crop file, relative to the manifest's folder, with `/` separators.
    pub path: String,
    /// The source's label, when known.
    pub label: Option<Label>,
    /// The source's group.
    pub group: String,
    /// The source file as it was given to [`prepare`].
    pub source: String,
    /// The frame's index in the video (0 for an image).
    pub frame_index: u64,
    /// The frame's time in seconds (0 for an image).
    pub time_s: f64,
    /// The detection's box in the source's pixels (columns `x,y,w,h`).
    pub bbox: FaceBox,
    /// The detector's score.
    pub score: f32,
}

/// What [`prepare`] did. Counts cover every source of the list, those finished by an earlier
/// run included (taken from `done.txt`), so a resumed run reports what an uninterrupted one
/// would; `resumed` and `processed` tell the two apart.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrepareSummary {
    /// Sources given.
    pub sources: usize,
    /// Sources an earlier run had finished.
    pub resumed: usize,
    /// Sources finished by this run.
    pub processed: usize,
    /// Crops written.
    pub crops: u64,
    /// Frames decoded (one per image).
    pub frames: u64,
    /// Decoded frames in which no face was kept.
    pub frames_without_face: u64,
    /// Sources decoded fine without a single face kept.
    pub faceless_sources: usize,
    /// Sources that could not be read, with the reason, sorted by path.
    #[serde(serialize_with = "serialize_failed")]
    pub failed: Vec<(PathBuf, String)>,
}

/// Paths as (lossy) strings: JSON cannot hold a path that is not UTF-8.
fn serialize_failed<S: serde::Serializer>(
    failed: &[(PathBuf, String)],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = serializer.serialize_seq(Some(failed.len()))?;
    for (path, reason) in failed {
        seq.serialize_element(&(path.to_string_lossy(), reason))?;
    }
    seq.end()
}

/// How a source ended, as the resume log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Outcome {
    Cropped,
    Faceless,
    Failed,
}

/// One line of `done.txt`. JSON rather than a bare path so that the counts of finished sources
/// survive a restart (the summary covers them) and any path fits on one line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct DoneRecord {
    source: String,
    outcome: Outcome,
    frames: u64,
    frames_without_face: u64,
    crops: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Detects, crops and writes every source; see the [module docs](self) for the output folder.
///
/// Detections scoring below `config.min_score`, and boxes that cannot be cropped (empty, not
/// finite, or entirely outside the frame), are ignored; `config.selection` then picks among the
/// rest.
///
/// Sources run in parallel. A source that cannot be read (a missing or corrupt file, a video
/// ffmpeg cannot decode) or that has no face is listed in `skipped.csv` and the run goes on;
/// errors of the detector, of cropping, of writing the output or a missing ffmpeg stop the
/// run (everything finished so far stays recorded, so it can be resumed).
///
/// # Errors
/// [`Error::InvalidConfig`] for a source listed twice, a video sampling 0 frames, invalid
/// crop settings or a `min_score` that is not a number; [`Error::Io`] / [`Error::Dataset`]
/// when the output cannot be written; [`Error::Parse`] when the files of an earlier run are
/// malformed; the detector's and [`crop::crop_faces`]' errors.
pub fn prepare(
    sources: &[Source],
    detector: &dyn FaceDetector,
    config: &PrepareConfig,
    out: &Path,
) -> Result<PrepareSummary> {
    check(sources, config)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let done = resume(out)?;
    let stems = crop_stems(sources);

    let mut totals = Totals { sources: sources.len(), ..Totals::default() };
    let mut pending = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        match done.get(&key(&source.path)) {
            Some(record) => totals.add(&source.path, record, true),
            None => pending.push(i),
        }
    }

    let resumed_crops = totals.crops;
    let open = |name: &str| {
        let path = out.join(name);
        std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(path, e))
    };
    let sink = Mutex::new(Sink {
        out: out.to_path_buf(),
        manifest: open(MANIFEST_FILE)?,
        skipped: open(SKIPPED_FILE)?,
        done: open(DONE_FILE)?,
        totals,
    });
    let bar = progress_bar(config.progress, sources.len(), sources.len() - pending.len());
    bar.set_message(format!("{resumed_crops} crops"));
    let result = pending.par_iter().try_for_each(|&i| -> Result<()> {
        let source = &sources[i];
        let stem = stems.get(i).map(String::as_str).unwrap_or("source");
        let processed = process(source, stem, detector, config, out)?;
        // Whatever a panicking holder left behind is at worst rows without a resume record,
        // which the next run drops, so a poisoned lock is still safe to use.
        let mut sink = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        sink.record(source, processed)?;
        bar.inc(1);
        bar.set_message(format!("{} crops", sink.totals.crops));
        Ok(())
    });
    bar.finish_and_clear();
    result?;

    let sink = sink.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let Sink { manifest, skipped, done: done_file, totals, .. } = sink;
    drop((manifest, skipped, done_file));
    finish(out)?;
    let summary = totals.into_summary();
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| Error::io(out.join(SUMMARY_FILE), std::io::Error::other(e)))?;
    write_atomically(&out.join(SUMMARY_FILE), &json).map_err(deeprecog_dataset::Error::from)?;
    Ok(summary)
}

/// Reads a crop manifest written by [`prepare`] ([`parse_manifest`]).
pub fn read_manifest(path: &Path) -> Result<Vec<CropRow>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_manifest(&bytes, path)
}

/// Parses crop-manifest bytes; `path` names the file in errors.
///
/// Strict: the header must name all of [`MANIFEST_COLUMNS`] (in any order; other columns are
/// ignored), every row must have as many fields as the header, paths, groups and sources must
/// not be empty, labels are `real`, `fake` (any case) or empty, the frame index is an unsigned
/// integer and the time, box and score are finite numbers (the time and the box size not
/// negative). Errors are [`Error::Parse`] with the row's 1-based line.
pub fn parse_manifest(bytes: &[u8], path: &Path) -> Result<Vec<CropRow>> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
    let columns = header_columns(&mut reader, &MANIFEST_COLUMNS, path)?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(&e, path))?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let field = |i: usize| columns.get(i).and_then(|&c| record.get(c)).unwrap_or_default();
        let err = |reason: String| Error::parse(path, line, reason);
        let text = |i: usize| -> Result<String> {
            let value = field(i);
            if value.is_empty() {
                return Err(err(format!("empty {}", MANIFEST_COLUMNS[i])));
            }
            Ok(value.to_string())
        };
        let number = |i: usize, non_negative: bool| -> Result<f64> {
            let raw = field(i);
            match raw.parse::<f64>() {
                Ok(v) if v.is_finite() && (v >= 0.0 || !non_negative) => Ok(v),
                _ => Err(err(format!(
                    "{} {raw:?} is not a finite{} number",
                    MANIFEST_COLUMNS[i],
                    if non_negative { " non-negative" } else { "" }
                ))),
            }
        };
        let label = match field(1) {
            "" => None,
            raw => Some(
                raw.parse::<Label>()
                    .map_err(|_| err(format!("label {raw:?} is not real, fake or empty")))?,
            ),
        };
        let frame_index = field(4)
            .parse::<u64>()
            .map_err(|_| err(format!("frame_index {:?} is not an unsigned integer", field(4))))?;
        // f32 columns are parsed as f32 directly so that values written from f32 read back
        // bit-exact; the f64 pass above only validates.
        let single = |i: usize, non_negative: bool| -> Result<f32> {
            number(i, non_negative)?;
            field(i).parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| {
                err(format!("{} {:?} does not fit a 32-bit float", MANIFEST_COLUMNS[i], field(i)))
            })
        };
        rows.push(CropRow {
            path: text(0)?,
            label,
            group: text(2)?,
            source: text(3)?,
            frame_index,
            time_s: number(5, true)?,
            bbox: FaceBox::new(
                single(6, false)?,
                single(7, false)?,
                single(8, true)?,
                single(9, true)?,
            ),
            score: single(10, false)?,
        });
    }
    Ok(rows)
}

/// Rejects what would make the output ambiguous before anything is written.
fn check(sources: &[Source], config: &PrepareConfig) -> Result<()> {
    config.crop.validate()?;
    if !config.min_score.is_finite() {
        return Err(Error::InvalidConfig {
            what: "min score",
            reason: format!("{} is not a number", config.min_score),
        });
    }
    let mut seen = HashSet::new();
    for source in sources {
        if !seen.insert(key(&source.path)) {
            return Err(Error::InvalidConfig {
                what: "sources",
                reason: format!("{} is listed twice", source.path.display()),
            });
        }
        if source.kind == SourceKind::Video && source.frames == 0 {
            return Err(Error::InvalidConfig {
                what: "sources",
                reason: format!("{} samples 0 frames", source.path.display()),
            });
        }
    }
    Ok(())
}

/// The resume log's (and the manifest's) key for a source: its path as text.
fn key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// Brings the output folder of an earlier run into a consistent state and returns its finished
/// sources: torn last lines are cut, rows of unfinished sources are dropped, and missing files
/// are created with their headers.
fn resume(out: &Path) -> Result<HashMap<String, DoneRecord>> {
    let done_path = out.join(DONE_FILE);
    let done_bytes = read_if_exists(&done_path)?;
    let complete = complete_lines(&done_bytes);
    let mut done = HashMap::new();
    for (i, line) in complete.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record: DoneRecord = serde_json::from_slice(line)
            .map_err(|e| Error::parse(&done_path, i + 1, format!("not a resume record: {e}")))?;
        done.insert(record.source.clone(), record);
    }
    if complete.len() != done_bytes.len() || done_bytes.is_empty() {
        write_atomically(&done_path, complete).map_err(deeprecog_dataset::Error::from)?;
    }

    let manifest_path = out.join(MANIFEST_FILE);
    let manifest_bytes = read_if_exists(&manifest_path)?;
    let rows = match complete_lines(&manifest_bytes) {
        [] => Vec::new(),
        complete => parse_manifest(complete, &manifest_path)?,
    };
    let kept: Vec<CropRow> = rows.into_iter().filter(|r| done.contains_key(&r.source)).collect();
    let fresh = manifest_bytes_of(&kept, true, &manifest_path)?;
    if fresh != manifest_bytes {
        write_atomically(&manifest_path, &fresh).map_err(deeprecog_dataset::Error::from)?;
    }

    let skipped_path = out.join(SKIPPED_FILE);
    let skipped_bytes = read_if_exists(&skipped_path)?;
    let skipped = match complete_lines(&skipped_bytes) {
        [] => Vec::new(),
        complete => parse_skipped(complete, &skipped_path)?,
    };
    let kept: Vec<(String, String)> =
        skipped.into_iter().filter(|(source, _)| done.contains_key(source)).collect();
    let fresh = skipped_bytes_of(&kept, true, &skipped_path)?;
    if fresh != skipped_bytes {
        write_atomically(&skipped_path, &fresh).map_err(deeprecog_dataset::Error::from)?;
    }
    Ok(done)
}

/// Rewrites the manifest and the skipped list sorted, so that the files do not depend on the
/// order in which parallel workers finished.
fn finish(out: &Path) -> Result<()> {
    let manifest_path = out.join(MANIFEST_FILE);
    let mut rows = read_manifest(&manifest_path)?;
    rows.sort_by(|a, b| {
        (&a.source, a.frame_index, &a.path).cmp(&(&b.source, b.frame_index, &b.path))
    });
    let bytes = manifest_bytes_of(&rows, true, &manifest_path)?;
    write_atomically(&manifest_path, &bytes).map_err(deeprecog_dataset::Error::from)?;

    let skipped_path = out.join(SKIPPED_FILE);
    let bytes = std::fs::read(&skipped_path).map_err(|e| Error::io(&skipped_path, e))?;
    let mut skipped = parse_skipped(&bytes, &skipped_path)?;
    skipped.sort();
    let bytes = skipped_bytes_of(&skipped, true, &skipped_path)?;
    write_atomically(&skipped_path, &bytes).map_err(deeprecog_dataset::Error::from)?;
    Ok(())
}

fn read_if_exists(path: &Path) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The bytes up to and including the last line break: a last line without one was cut short
/// by a kill.
fn complete_lines(bytes: &[u8]) -> &[u8] {
    match bytes.iter().rposition(|&b| b == b'\n') {
        Some(i) => bytes.split_at(i + 1).0,
        None => &[],
    }
}

/// Looks up `wanted` in the header; every one must be there.
fn header_columns<R: std::io::Read>(
    reader: &mut csv::Reader<R>,
    wanted: &[&str],
    path: &Path,
) -> Result<Vec<usize>> {
    let headers = reader.headers().map_err(|e| csv_error(&e, path))?.clone();
    wanted
        .iter()
        .map(|name| {
            headers
                .iter()
                .position(|h| h == *name)
                .ok_or_else(|| Error::parse(path, 1, format!("header has no `{name}` column")))
        })
        .collect()
}

fn csv_error(e: &csv::Error, path: &Path) -> Error {
    let line = e.position().map_or(1, |p| p.line() as usize);
    Error::parse(path, line, e.to_string())
}

fn parse_skipped(bytes: &[u8], path: &Path) -> Result<Vec<(String, String)>> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
    let columns = header_columns(&mut reader, &SKIPPED_COLUMNS, path)?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(&e, path))?;
        let field = |i: usize| columns.get(i).and_then(|&c| record.get(c)).unwrap_or_default();
        if field(0).is_empty() {
            let line = record.position().map_or(0, |p| p.line() as usize);
            return Err(Error::parse(path, line, "empty source"));
        }
        rows.push((field(0).to_string(), field(1).to_string()));
    }
    Ok(rows)
}

fn csv_bytes<I, R>(header: Option<&[&str]>, records: I, path: &Path) -> Result<Vec<u8>>
where
    I: IntoIterator<Item = R>,
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let write = || -> std::result::Result<Vec<u8>, csv::Error> {
        let mut writer = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
        if let Some(header) = header {
            writer.write_record(header)?;
        }
        for record in records {
            writer.write_record(record)?;
        }
        writer.into_inner().map_err(|e| csv::Error::from(e.into_error()))
    };
    write().map_err(|e| Error::io(path, std::io::Error::other(e)))
}

fn manifest_bytes_of(rows: &[CropRow], header: bool, path: &Path) -> Result<Vec<u8>> {
    let fields = rows.iter().map(|r| {
        [
            r.path.clone(),
            r.label.map(Label::as_str).unwrap_or_default().to_string(),
            r.group.clone(),
            r.source.clone(),
            r.frame_index.to_string(),
            r.time_s.to_string(),
            r.bbox.x.to_string(),
            r.bbox.y.to_string(),
            r.bbox.width.to_string(),
            r.bbox.height.to_string(),
            r.score.to_string(),
        ]
    });
    csv_bytes(header.then_some(&MANIFEST_COLUMNS[..]), fields, path)
}

fn skipped_bytes_of(rows: &[(String, String)], header: bool, path: &Path) -> Result<Vec<u8>> {
    let fields = rows.iter().map(|(s, r)| [s.as_str(), r.as_str()]);
    csv_bytes(header.then_some(&SKIPPED_COLUMNS[..]), fields, path)
}

/// Running totals, kept under the sink's lock.
#[derive(Debug, Default)]
struct Totals {
    sources: usize,
    resumed: usize,
    processed: usize,
    crops: u64,
    frames: u64,
    frames_without_face: u64,
    faceless_sources: usize,
    failed: Vec<(PathBuf, String)>,
}

impl Totals {
    fn add(&mut self, path: &Path, record: &DoneRecord, resumed: bool) {
        if resumed {
            self.resumed += 1;
        } else {
            self.processed += 1;
        }
        self.crops += record.crops;
        self.frames += record.frames;
        self.frames_without_face += record.frames_without_face;
        match record.outcome {
            Outcome::Cropped => {}
            Outcome::Faceless => self.faceless_sources += 1,
            Outcome::Failed => {
                self.failed.push((path.to_path_buf(), record.reason.clone().unwrap_or_default()))
            }
        }
    }

    fn into_summary(mut self) -> PrepareSummary {
        self.failed.sort();
        PrepareSummary {
            sources: self.sources,
            resumed: self.resumed,
            processed: self.processed,
            crops: self.crops,
            frames: self.frames,
            frames_without_face: self.frames_without_face,
            faceless_sources: self.faceless_sources,
            failed: self.failed,
        }
    }
}

/// The three append-only files and the totals.
struct Sink {
    out: PathBuf,
    manifest: std::fs::File,
    skipped: std::fs::File,
    done: std::fs::File,
    totals: Totals,
}

impl Sink {
    /// Appends a finished source: its rows (synced, so that they reach the disk before the
    /// resume log says the source is done), then its resume record. Each file gets one write.
    fn record(&mut self, source: &Source, processed: Processed) -> Result<()> {
        let manifest_path = self.out.join(MANIFEST_FILE);
        let skipped_path = self.out.join(SKIPPED_FILE);
        let done_path = self.out.join(DONE_FILE);
        let source_key = key(&source.path);
        if !processed.rows.is_empty() {
            let bytes = manifest_bytes_of(&processed.rows, false, &manifest_path)?;
            append(&mut self.manifest, &bytes, &manifest_path)?;
        }
        let (outcome, reason) = match processed.failure {
            Some(reason) => (Outcome::Failed, Some(reason)),
            None if processed.rows.is_empty() => (
                Outcome::Faceless,
                Some(format!(
                    "no face found in {} frame{}",
                    processed.frames,
                    if processed.frames == 1 { "" } else { "s" }
                )),
            ),
            None => (Outcome::Cropped, None),
        };
        if let Some(reason) = &reason {
            let bytes =
                skipped_bytes_of(&[(source_key.clone(), reason.clone())], false, &skipped_path)?;
            append(&mut self.skipped, &bytes, &skipped_path)?;
        }
        let record = DoneRecord {
            source: source_key,
            outcome,
            frames: processed.frames,
            frames_without_face: processed.frames_without_face,
            crops: processed.rows.len() as u64,
            reason,
        };
        let mut line = serde_json::to_vec(&record)
            .map_err(|e| Error::io(&done_path, std::io::Error::other(e)))?;
        line.push(b'\n');
        self.done.write_all(&line).map_err(|e| Error::io(&done_path, e))?;
        self.totals.add(&source.path, &record, false);
        Ok(())
    }
}

fn append(file: &mut std::fs::File, bytes: &[u8], path: &Path) -> Result<()> {
    file.write_all(bytes).and_then(|()| file.sync_data()).map_err(|e| Error::io(path, e))
}

/// What one source yielded.
struct Processed {
    rows: Vec<CropRow>,
    frames: u64,
    frames_without_face: u64,
    /// Why the source could not be read.
    failure: Option<String>,
}

impl Processed {
    fn failed(reason: String) -> Processed {
        Processed { rows: Vec::new(), frames: 0, frames_without_face: 0, failure: Some(reason) }
    }
}

/// Whether an error is about the input file (skip the source) rather than about the detector,
/// the configuration, the output or the tools (stop the run: every further source would fail
/// the same way and be recorded as done).
fn is_input_error(error: &Error) -> bool {
    matches!(error, Error::Video { .. } | Error::Dataset(_) | Error::Io { .. })
}

/// Decodes a source into (frame index, time, RGB image) triples.
fn load(source: &Source) -> Result<Vec<(u64, f64, Image)>> {
    if !source.path.is_file() {
        return Err(Error::io(
            &source.path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "file is missing"),
        ));
    }
    let rgb = |image: Image| if image.channels() == 3 { image } else { image.to_rgb() };
    match source.kind {
        SourceKind::Image => Ok(vec![(0, 0.0, rgb(Image::open(&source.path)?))]),
        SourceKind::Video => {
            let (_, frames) = video::sample_frames(&source.path, source.frames)?;
            Ok(frames.into_iter().map(|f| (f.index, f.time_s, rgb(f.image))).collect())
        }
    }
}

fn process(
    source: &Source,
    stem: &str,
    detector: &dyn FaceDetector,
    config: &PrepareConfig,
    out: &Path,
) -> Result<Processed> {
    let frames = match load(source) {
        Ok(frames) => frames,
        Err(e) if is_input_error(&e) => return Ok(Processed::failed(e.to_string())),
        Err(e) => return Err(e),
    };
    let (meta, images): (Vec<(u64, f64)>, Vec<Image>) =
        frames.into_iter().map(|(index, time, image)| ((index, time), image)).unzip();
    let detections = detector.detect_batch(&images)?;
    if detections.len() != images.len() {
        return Err(Error::InvalidConfig {
            what: "face detector",
            reason: format!(
                "{} returned {} results for {} images",
                detector.name(),
                detections.len(),
                images.len()
            ),
        });
    }
    let folder = safe_component(&source.group);
    let source_text = key(&source.path);
    let mut processed = Processed {
        rows: Vec::new(),
        frames: images.len() as u64,
        frames_without_face: 0,
        failure: None,
    };
    for ((image, faces), (frame_index, time_s)) in images.iter().zip(detections).zip(meta) {
        // A box that is empty, not finite or entirely outside the frame cannot be cropped;
        // it is dropped like a low score rather than failing the run (the crop settings were
        // validated up front, so this is the only way cropping can reject a detection).
        let faces: Vec<_> = faces
            .into_iter()
            .filter(|d| d.score >= config.min_score)
            .filter(|d| crop::crop_region(d, image.width(), image.height(), &config.crop).is_ok())
            .collect();
        let crops = if faces.is_empty() {
            Vec::new()
        } else {
            crop::crop_faces(image, &faces, config.selection, &config.crop)?
        };
        if crops.is_empty() {
            processed.frames_without_face += 1;
        }
        for (k, crop) in crops.into_iter().enumerate() {
            let name = format!("{stem}_f{frame_index}_{k}.{}", config.image_format.extension());
            let relative = format!("{CROPS_DIR}/{folder}/{name}");
            let file = out.join(CROPS_DIR).join(&folder).join(&name);
            let bytes = match config.image_format {
                CropFormat::Png => crop.image.encode_png(&file)?,
                CropFormat::Jpg => crop.image.encode_jpeg(JPEG_QUALITY, &file)?,
            };
            write_atomically(&file, &bytes).map_err(deeprecog_dataset::Error::from)?;
            processed.rows.push(CropRow {
                path: relative,
                label: source.label,
                group: source.group.clone(),
                source: source_text.clone(),
                frame_index,
                time_s,
                bbox: crop.detection.bbox,
                score: crop.detection.score,
            });
        }
    }
    Ok(processed)
}

/// The file-name stem of every source's crops: the file stem, made unique within its group
/// folder (two `a.png` in `real/` and `fake/` with group `a`) by a hash of the source path.
/// The hash is stable across runs, so a resumed run names crops the same way.
fn crop_stems(sources: &[Source]) -> Vec<String> {
    let base: Vec<(String, String)> = sources
        .iter()
        .map(|s| (safe_component(&s.group), safe_component(&stem(&s.path))))
        .collect();
    let mut counts: HashMap<&(String, String), usize> = HashMap::new();
    for b in &base {
        *counts.entry(b).or_default() += 1;
    }
    base.iter()
        .zip(sources)
        .map(|(b, s)| {
            if counts.get(b).copied().unwrap_or(0) > 1 {
                format!("{}-{:016x}", b.1, fnv1a(key(&s.path).as_bytes()))
            } else {
                b.1.clone()
            }
        })
        .collect()
}

/// FNV-1a: a fixed hash (std's hasher is seeded per process, and names must not change
/// between runs).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A group or stem as one safe path component: separators and control characters become `_`,
/// and empty, `.` and `..` become `_`.
fn safe_component(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if matches!(c, '/' | '\\' | ':') || c.is_control() { '_' } else { c })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".to_string(),
        _ => cleaned,
    }
}

/// The files under `dir` that `keep` accepts, sorted.
fn walk(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for item in std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))? {
            let item = item.map_err(|e| Error::io(&folder, e))?;
            if item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = item.path();
            let kind = item.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_dir() {
                folders.push(path);
            } else if keep(&path) && path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn progress_bar(enabled: bool, len: usize, position: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) =
        ProgressStyle::with_template("prepare [{bar:30}] {pos}/{len} sources, {msg}, eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(position as u64);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Detection;
    use std::collections::BTreeSet;

    /// Finds one "face" per image: the bounding box of the pixels brighter than 200 in every
    /// channel (the test images draw a white square on black), none when there are none.
    struct BrightSquare;

    impl FaceDetector for BrightSquare {
        fn name(&self) -> &str {
            "bright-square"
        }

        fn detect(&self, image: &Image) -> Result<Vec<Detection>> {
            let mut bounds: Option<(u32, u32, u32, u32)> = None;
            for y in 0..image.height() {
                for x in 0..image.width() {
                    if image.pixel(x, y).is_some_and(|p| p.iter().all(|&v| v > 200)) {
                        let (x0, y0, x1, y1) = bounds.unwrap_or((x, y, x, y));
                        bounds = Some((x0.min(x), y0.min(y), x1.max(x), y1.max(y)));
                    }
                }
            }
            Ok(bounds
                .map(|(x0, y0, x1, y1)| {
                    let bbox = FaceBox::new(
                        x0 as f32,
                        y0 as f32,
                        (x1 - x0 + 1) as f32,
                        (y1 - y0 + 1) as f32,
                    );
                    Detection::new(bbox, 0.9)
                })
                .into_iter()
                .collect())
        }
    }

    /// A black `w` x `h` image with a white square of side `side` at (`x`, `y`).
    fn square(w: u32, h: u32, x: u32, y: u32, side: u32) -> Image {
        let mut image = Image::filled(w, h, 3, 0).unwrap();
        for yy in y..y + side {
            for xx in x..x + side {
                image.pixel_mut(xx, yy).unwrap().copy_from_slice(&[255, 255, 255]);
            }
        }
        image
    }

    fn save(image: &Image, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image.save(path).unwrap();
    }

    /// real/a.png, real/sub/b.png, real/blank.png (no face), fake/c.png, fake/a.png (same stem
    /// as real/a.png), fake/broken.png (truncated) and an unlabelled other/d.png.
    fn image_tree(root: &Path) {
        save(&square(32, 24, 8, 6, 10), &root.join("real/a.png"));
        save(&square(32, 24, 2, 3, 12), &root.join("real/sub/b.png"));
        save(&Image::filled(32, 24, 3, 0).unwrap(), &root.join("real/blank.png"));
        save(&square(40, 30, 20, 10, 8), &root.join("fake/c.png"));
        save(&square(32, 24, 10, 10, 6), &root.join("fake/a.png"));
        save(&square(32, 24, 1, 1, 5), &root.join("other/d.png"));
        let png = square(32, 24, 8, 6, 10).encode_png(Path::new("x.png")).unwrap();
        std::fs::write(root.join("fake/broken.png"), &png[..png.len() / 2]).unwrap();
        std::fs::write(root.join("fake/notes.txt"), b"not an image").unwrap();
        std::fs::write(root.join("fake/.hidden.png"), b"junk").unwrap();
    }

    fn rows_set(path: &Path) -> BTreeSet<String> {
        std::fs::read_to_string(path).unwrap().lines().skip(1).map(str::to_string).collect()
    }

    #[test]
    fn prepare_sources_from_folders() {
        let dir = tempfile::tempdir().unwrap();
        image_tree(dir.path());
        let sources = sources_from_images(dir.path()).unwrap();
        let names: Vec<String> = sources
            .iter()
            .map(|s| s.path.strip_prefix(dir.path()).unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "fake/a.png",
                "fake/broken.png",
                "fake/c.png",
                "other/d.png",
                "real/a.png",
                "real/blank.png",
                "real/sub/b.png"
            ]
        );
        let labels: Vec<Option<Label>> = sources.iter().map(|s| s.label).collect();
        let (r, f) = (Some(Label::Real), Some(Label::Fake));
        assert_eq!(labels, [f, f, f, None, r, r, r]);
        assert!(sources.iter().all(|s| s.kind == SourceKind::Image));
        assert_eq!(sources[6].group, "b");
        assert_eq!(label_from_path(Path::new("/x/REAL/fake/clip.mp4")), Some(Label::Fake));
        assert_eq!(label_from_path(Path::new("/x/Fake/y/clip.mp4")), Some(Label::Fake));
        assert_eq!(label_from_path(Path::new("/x/reals/real.mp4")), None);
        assert!(sources_from_images(&dir.path().join("missing")).is_err());
        assert_eq!("JPEG".parse::<CropFormat>().unwrap(), CropFormat::Jpg);
        assert!("gif".parse::<CropFormat>().is_err());
        // Same stem and group in two folders: the crop names differ.
        let stems = crop_stems(&sources);
        assert_ne!(stems[0], stems[4]);
        assert!(stems[0].starts_with("a-") && stems[2] == "c");
        assert_eq!(safe_component("../x"), ".._x");
        assert_eq!(safe_component(".."), "_");
    }

    #[test]
    fn prepare_images_writes_crops_manifest_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let out = dir.path().join("out");
        image_tree(&input);
        let sources = sources_from_images(&input).unwrap();
        let summary = prepare(&sources, &BrightSquare, &PrepareConfig::default(), &out).unwrap();
        assert_eq!(summary.sources, 7);
        assert_eq!((summary.resumed, summary.processed), (0, 7));
        assert_eq!(summary.crops, 5);
        assert_eq!(summary.frames, 6);
        assert_eq!(summary.frames_without_face, 1);
        assert_eq!(summary.faceless_sources, 1);
        assert_eq!(summary.failed.len(), 1);
        assert_eq!(summary.failed[0].0, input.join("fake/broken.png"));
        assert!(summary.failed[0].1.contains("truncated PNG"), "{}", summary.failed[0].1);
        let written: PrepareSummary =
            serde_json::from_slice(&std::fs::read(out.join(SUMMARY_FILE)).unwrap()).unwrap();
        assert_eq!(written, summary);

        // skipped.csv: the corrupt file with the decoder's reason, the face-less one.
        let skipped =
            parse_skipped(&std::fs::read(out.join(SKIPPED_FILE)).unwrap(), Path::new("s")).unwrap();
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].0, key(&input.join("fake/broken.png")));
        assert!(skipped[0].1.contains("broken.png") && skipped[0].1.contains("truncated"));
        assert_eq!(skipped[1].0, key(&input.join("real/blank.png")));
        assert!(skipped[1].1.contains("no face found in 1 frame"), "{}", skipped[1].1);

        // The manifest: typed rows with the detection boxes, crops that exist and decode.
        let rows = read_manifest(&out.join(MANIFEST_FILE)).unwrap();
        assert_eq!(rows.len(), 5);
        let a = rows.iter().find(|r| r.source == key(&input.join("real/a.png"))).unwrap();
        assert_eq!(a.bbox, FaceBox::new(8.0, 6.0, 10.0, 10.0));
        assert_eq!(
            (a.label, a.group.as_str(), a.frame_index, a.time_s),
            (Some(Label::Real), "a", 0, 0.0)
        );
        assert_eq!(a.score, 0.9);
        assert!(a.path.starts_with("crops/a/a") && a.path.ends_with("_f0_0.png"), "{}", a.path);
        for row in &rows {
            let crop = Image::open(&out.join(&row.path)).unwrap();
            assert!(crop.width() > 0 && crop.height() > 0);
        }
        let d = rows.iter().find(|r| r.source.ends_with("d.png")).unwrap();
        assert_eq!(d.label, None);
        let text = std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
        assert!(text.starts_with("path,label,group,source,frame_index,time_s,x,y,w,h,score\n"));
        // Rows are sorted by source.
        let order: Vec<&str> = rows.iter().map(|r| r.source.as_str()).collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(order, sorted);

        // The dataset crate reads the labelled part (the unlabelled row aside).
        let labelled: Vec<&str> = text.lines().filter(|l| !l.contains("/other/d.png")).collect();
        std::fs::write(out.join("labelled.csv"), labelled.join("\n") + "\n").unwrap();
        let manifest =
            deeprecog_dataset::manifest::Manifest::open(out.join("labelled.csv")).unwrap();
        assert_eq!(manifest.entries().len(), 4);
        let mut pairs: Vec<(u32, String)> =
            manifest.entries().iter().map(|e| (e.label, e.group.clone().unwrap())).collect();
        pairs.sort();
        let expected = [(0, "a"), (0, "b"), (1, "a"), (1, "c")];
        assert_eq!(pairs, expected.map(|(l, g)| (l, g.to_string())));
        use deeprecog_dataset::Dataset;
        assert_eq!(manifest.get(0).unwrap().image.channels(), 3);

        // JPEG crops and a score threshold above the detector's.
        let out_jpg = dir.path().join("out_jpg");
        let config = PrepareConfig { image_format: CropFormat::Jpg, ..PrepareConfig::default() };
        let summary = prepare(&sources[..1], &BrightSquare, &config, &out_jpg).unwrap();
        assert_eq!(summary.crops, 1);
        let rows = read_manifest(&out_jpg.join(MANIFEST_FILE)).unwrap();
        assert!(rows[0].path.ends_with(".jpg"));
        assert!(Image::open(&out_jpg.join(&rows[0].path)).is_ok());
        let strict = PrepareConfig { min_score: 0.95, ..PrepareConfig::default() };
        let summary =
            prepare(&sources[2..3], &BrightSquare, &strict, &dir.path().join("o3")).unwrap();
        assert_eq!((summary.crops, summary.faceless_sources), (0, 1));
    }

    #[test]
    fn prepare_rejects_bad_inputs_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let a = Source::image(dir.path().join("a.png"), None, "a");
        let out = dir.path().join("out");
        let twice =
            prepare(&[a.clone(), a.clone()], &BrightSquare, &PrepareConfig::default(), &out);
        assert!(matches!(twice, Err(Error::InvalidConfig { .. })));
        let zero = Source::video(dir.path().join("v.mp4"), None, "v", 0);
        assert!(prepare(&[zero], &BrightSquare, &PrepareConfig::default(), &out).is_err());
        let nan = PrepareConfig { min_score: f32::NAN, ..PrepareConfig::default() };
        assert!(prepare(std::slice::from_ref(&a), &BrightSquare, &nan, &out).is_err());
        // A missing file is a failure, not an error.
        let summary = prepare(&[a], &BrightSquare, &PrepareConfig::default(), &out).unwrap();
        assert_eq!(summary.failed.len(), 1);
        assert!(summary.failed[0].1.contains("missing"), "{:?}", summary.failed);
    }

    #[test]
    fn prepare_resumes_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let out = dir.path().join("out");
        image_tree(&input);
        let sources = sources_from_images(&input).unwrap();
        let config = PrepareConfig::default();
        let first = prepare(&sources, &BrightSquare, &config, &out).unwrap();
        let manifest_before = rows_set(&out.join(MANIFEST_FILE));
        let skipped_before = rows_set(&out.join(SKIPPED_FILE));

        // Rerunning a finished build does nothing and reports the same totals.
        let again = prepare(&sources, &BrightSquare, &config, &out).unwrap();
        assert_eq!((again.resumed, again.processed), (7, 0));
        assert_eq!(PrepareSummary { resumed: 0, processed: 7, ..again.clone() }, first);

        // A kill: the last source that had crops never reached done.txt (its rows did reach
        // the manifest), the last source of all neither, and the kill tore a line in each file.
        let done_text = std::fs::read_to_string(out.join(DONE_FILE)).unwrap();
        let mut lines: Vec<&str> = done_text.lines().collect();
        let cropped = lines.iter().rposition(|l| l.contains("\"cropped\"")).unwrap();
        lines.remove(cropped);
        let last_skipped = lines.iter().rposition(|l| l.contains("\"faceless\"")).unwrap();
        lines.remove(last_skipped);
        let torn = "{\"source\":\"/half";
        std::fs::write(out.join(DONE_FILE), lines.join("\n") + "\n" + torn).unwrap();
        let mut manifest =
            std::fs::OpenOptions::new().append(true).open(out.join(MANIFEST_FILE)).unwrap();
        manifest.write_all(b"crops/a/a_f0_0.png,real,a,/x").unwrap();
        let mut skipped =
            std::fs::OpenOptions::new().append(true).open(out.join(SKIPPED_FILE)).unwrap();
        skipped.write_all(b"\"/in/half").unwrap();

        let resumed = prepare(&sources, &BrightSquare, &config, &out).unwrap();
        assert_eq!((resumed.resumed, resumed.processed), (5, 2));
        assert_eq!(PrepareSummary { resumed: 0, processed: 7, ..resumed.clone() }, first);
        assert_eq!(rows_set(&out.join(MANIFEST_FILE)), manifest_before);
        assert_eq!(rows_set(&out.join(SKIPPED_FILE)), skipped_before);
        let rows = read_manifest(&out.join(MANIFEST_FILE)).unwrap();
        assert_eq!(rows.len(), manifest_before.len());
        let done_lines = std::fs::read_to_string(out.join(DONE_FILE)).unwrap();
        assert_eq!(done_lines.lines().count(), 7);
        assert!(done_lines.ends_with('\n') && !done_lines.contains("/half"));

        // A malformed resume log in the middle is an error naming its line.
        std::fs::write(out.join(DONE_FILE), "{}\nnot json\n").unwrap();
        let err = prepare(&sources, &BrightSquare, &config, &out).unwrap_err();
        assert!(matches!(err, Error::Parse { line: 1, .. }), "{err}");
    }

    #[test]
    fn prepare_manifest_parser_is_strict() {
        let path = Path::new("out/manifest.csv");
        let header = "path,label,group,source,frame_index,time_s,x,y,w,h,score\n";
        let good =
            format!("{header}crops/g/a_f3_0.png,fake,g,\"/v/a,b.mp4\",3,0.3,1.5,-2,10,12,0.75\n");
        let rows = parse_manifest(good.as_bytes(), path).unwrap();
        assert_eq!(rows[0].source, "/v/a,b.mp4");
        assert_eq!(rows[0].bbox, FaceBox::new(1.5, -2.0, 10.0, 12.0));
        assert_eq!((rows[0].frame_index, rows[0].time_s, rows[0].score), (3, 0.3, 0.75));
        // Written back byte for byte.
        assert_eq!(manifest_bytes_of(&rows, true, path).unwrap(), good.as_bytes());
        // Reordered and extra columns.
        let reordered = "score,extra,h,w,y,x,time_s,frame_index,source,group,label,path\n0.5,?,1,1,0,0,0,0,s,g,,p\n";
        let rows = parse_manifest(reordered.as_bytes(), path).unwrap();
        assert_eq!((rows[0].label, rows[0].path.as_str()), (None, "p"));

        let line_of = |text: String| match parse_manifest(text.as_bytes(), path) {
            Err(Error::Parse { line, reason, .. }) => (line, reason),
            other => panic!("expected a parse error, got {other:?}"),
        };
        let ok_row = "p,real,g,s,0,0,0,0,1,1,1\n";
        for (row, needle) in [
            ("p,maybe,g,s,0,0,0,0,1,1,1\n", "label"),
            ("p,real,,s,0,0,0,0,1,1,1\n", "empty group"),
            (",real,g,s,0,0,0,0,1,1,1\n", "empty path"),
            ("p,real,g,s,-1,0,0,0,1,1,1\n", "frame_index"),
            ("p,real,g,s,0,-0.5,0,0,1,1,1\n", "time_s"),
            ("p,real,g,s,0,0,0,0,-1,1,1\n", "w"),
            ("p,real,g,s,0,0,NaN,0,1,1,1\n", "x"),
            ("p,real,g,s,0,0,0,0,1,1,1e39\n", "score"),
            ("p,real,g,s,0,0,0,0,1,1\n", "fields"),
        ] {
            let (line, reason) = line_of(format!("{header}{ok_row}{ok_row}{row}"));
            assert_eq!(line, 4, "{row}: {reason}");
            assert!(reason.contains(needle), "{row}: {reason}");
        }
        let (line, reason) = line_of("path,label,group\np,real,g\n".to_string());
        assert_eq!(line, 1);
        assert!(reason.contains("source"), "{reason}");
        assert!(parse_manifest(b"", path).is_err());
        assert!(parse_manifest(b"\xff\xfe,\n", path).is_err());
        assert_eq!(parse_manifest(header.as_bytes(), path).unwrap(), Vec::new());
        let missing = read_manifest(Path::new("/nonexistent/manifest.csv")).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
    }

    fn ffmpeg(args: &[&str]) {
        let status = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(args)
            .status()
            .expect("ffmpeg runs (install ffmpeg)");
        assert!(status.success(), "ffmpeg {args:?}");
    }

    #[test]
    fn prepare_videos_samples_frames() {
        let dir = tempfile::tempdir().unwrap();
        let videos = dir.path().join("videos");
        std::fs::create_dir_all(videos.join("real")).unwrap();
        std::fs::create_dir_all(videos.join("fake")).unwrap();
        let color = "color=c=black:size=64x48:rate=10:duration=1";
        let clip = videos.join("real/clip.mp4");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            color,
            "-vf",
            "drawbox=x=20:y=10:w=20:h=20:color=white:t=fill",
            "-pix_fmt",
            "yuv420p",
            clip.to_str().unwrap(),
        ]);
        // The box only in the first half: some sampled frames have no face.
        let half = videos.join("fake/half.mp4");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            color,
            "-vf",
            "drawbox=x=20:y=10:w=20:h=20:color=white:t=fill:enable='lt(t,0.5)'",
            "-pix_fmt",
            "yuv420p",
            half.to_str().unwrap(),
        ]);
        std::fs::write(videos.join("fake/broken.mp4"), b"not a video at all").unwrap();

        let sources = sources_from_videos(&videos, 4).unwrap();
        let names: Vec<&str> = sources.iter().map(|s| s.group.as_str()).collect();
        assert_eq!(names, ["broken", "half", "clip"]);
        assert_eq!(sources[2].label, Some(Label::Real));
        assert_eq!(sources[1].label, Some(Label::Fake));
        assert!(sources.iter().all(|s| s.kind == SourceKind::Video && s.frames == 4));

        let out = dir.path().join("out");
        let summary = prepare(&sources, &BrightSquare, &PrepareConfig::default(), &out).unwrap();
        assert_eq!(summary.frames, 8, "{summary:?}");
        assert_eq!(summary.failed.len(), 1);
        assert_eq!(summary.failed[0].0, videos.join("fake/broken.mp4"));
        assert!(summary.frames_without_face > 0 && summary.frames_without_face < 4, "{summary:?}");
        assert_eq!(summary.crops, 8 - summary.frames_without_face);
        assert_eq!(summary.faceless_sources, 0);

        let rows = read_manifest(&out.join(MANIFEST_FILE)).unwrap();
        let clip_rows: Vec<&CropRow> = rows.iter().filter(|r| r.group == "clip").collect();
        assert_eq!(clip_rows.len(), 4);
        let expected = video::frame_indices(10, 4);
        let indices: Vec<u64> = clip_rows.iter().map(|r| r.frame_index).collect();
        assert_eq!(indices, expected);
        for row in &clip_rows {
            // Compression blurs the edges by a pixel at most.
            let b = row.bbox;
            assert!((b.x - 20.0).abs() <= 1.0 && (b.y - 10.0).abs() <= 1.0, "{b:?}");
            assert!((b.width - 20.0).abs() <= 2.0 && (b.height - 20.0).abs() <= 2.0, "{b:?}");
            assert!((row.time_s - row.frame_index as f64 / 10.0).abs() < 1e-6, "{row:?}");
            assert_eq!(row.label, Some(Label::Real));
            assert!(row.path.starts_with("crops/clip/clip_f"));
            assert!(out.join(&row.path).is_file());
        }
        let half_rows = rows.iter().filter(|r| r.group == "half").count() as u64;
        assert_eq!(half_rows, 4 - summary.frames_without_face);
    }

    #[test]
    fn prepare_dfdc_sources_report_missing_videos() {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("dfdc_train_part_0");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(
            part.join(dfdc::METADATA_FILE),
            r#"{"f1.mp4": {"label": "FAKE", "original": "r.mp4"},
                "f2.mp4": {"label": "FAKE", "original": "r.mp4"},
                "r.mp4": {"label": "REAL", "original": null},
                "gone.mp4": {"label": "FAKE", "original": "r.mp4"}}"#,
        )
        .unwrap();
        for name in ["f1.mp4", "f2.mp4", "r.mp4"] {
            std::fs::write(part.join(name), b"placeholder").unwrap();
        }
        let sources = sources_from_dfdc(dir.path(), 2, 4.0).unwrap();
        let view: Vec<(&str, Option<Label>, usize)> =
            sources.iter().map(|s| (s.group.as_str(), s.label, s.frames)).collect();
        assert_eq!(
            view,
            [
                ("r.mp4", Some(Label::Fake), 2),
                ("r.mp4", Some(Label::Fake), 2),
                ("r.mp4", Some(Label::Real), 8),
                ("gone", None, 2),
            ]
        );
        assert_eq!(sources[3].path, part.join("gone.mp4"));
        // Only the missing video goes through prepare here (the others are not videos).
        let out = dir.path().join("out");
        let summary =
            prepare(&sources[3..], &BrightSquare, &PrepareConfig::default(), &out).unwrap();
        assert_eq!(summary.failed.len(), 1);
        assert!(
            summary.failed[0].1.contains("gone.mp4") && summary.failed[0].1.contains("missing")
        );
        // Crops of a fake land in its source's group folder.
        assert_eq!(safe_component(&sources[0].group), "r.mp4");
    }
}
