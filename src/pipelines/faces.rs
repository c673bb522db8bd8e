//! Faces in images and videos, and face-crop datasets made from them: what the `deepfake`
//! example's `faces` and `prepare` commands and the quickstart's "Faces in videos" stage share
//! above [`crate::detector`]. Choosing the inputs ([`Input`]), turning command-line crop
//! options into a [`PrepareConfig`] ([`CropOptions`]), readable summaries of a scan and of a
//! preparation, drawing a scanned frame, encoding folders of frames into videos, per-label
//! counts of a prepared set, and a scan that times decoding and detection apart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::fsutil::write_atomically;
use deeprecog_dataset::transforms::{Filter, Resize};
use deeprecog_dataset::Image;
use deeprecog_detector::crop::{CropConfig, FaceSelection, Margin};
use deeprecog_detector::dfdc::{Label, METADATA_FILE};
use deeprecog_detector::draw::draw_detections;
use deeprecog_detector::prepare::{
    self, CropFormat, CropRow, PrepareConfig, PrepareSummary, Source, SourceKind,
};
#[cfg(test)]
use deeprecog_detector::scan::FaceRecord;
use deeprecog_detector::scan::{detect_frames, DetectorKind, FrameFaces, InputKind, ScanResult};
use deeprecog_detector::{video, Detection, FaceDetector};
use rayon::prelude::*;

use super::{Error, Result};

/// Where the sources of a face-crop dataset come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Every video under a folder, labelled by a `real` / `fake` folder on its path.
    Videos(PathBuf),
    /// A DFDC root: `metadata.json` files label the videos and group fakes with their sources.
    Dfdc(PathBuf),
    /// Every JPEG or PNG under a folder, labelled like [`Input::Videos`].
    Images(PathBuf),
}

impl Input {
    /// The one input given among the three options.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when none or several are given.
    pub fn choose(
        videos: Option<PathBuf>,
        dfdc: Option<PathBuf>,
        images: Option<PathBuf>,
    ) -> Result<Input> {
        match (videos, dfdc, images) {
            (Some(dir), None, None) => Ok(Input::Videos(dir)),
            (None, Some(dir), None) => Ok(Input::Dfdc(dir)),
            (None, None, Some(dir)) => Ok(Input::Images(dir)),
            _ => Err(Error::invalid("input", "give exactly one of --videos, --dfdc, --images")),
        }
    }

    /// The sources: `frames` frames per video; in a DFDC root the rarer class gets
    /// `minority_factor` times as many ([`prepare::sources_from_dfdc`]).
    ///
    /// # Errors
    /// The folder cannot be listed, or a DFDC metadata file is missing or malformed.
    pub fn sources(&self, frames: usize, minority_factor: f32) -> Result<Vec<Source>> {
        Ok(match self {
            Input::Videos(dir) => prepare::sources_from_videos(dir, frames)?,
            Input::Dfdc(dir) => prepare::sources_from_dfdc(dir, frames, minority_factor)?,
            Input::Images(dir) => prepare::sources_from_images(dir)?,
        })
    }
}

/// The crop settings the command line offers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropOptions {
    /// Side of the square crops in pixels.
    pub size: u32,
    /// How far the crop reaches past the detector's box.
    pub margin: Margin,
    /// Rotate each crop so that the eyes are level.
    pub align_eyes: bool,
    /// Crop every face of a frame instead of the largest.
    pub all_faces: bool,
    /// PNG or JPEG crops.
    pub format: CropFormat,
    /// Ignore detections scoring below this.
    pub min_score: f32,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

impl Default for CropOptions {
    /// 224-pixel PNG crops of the largest face in a 1.3x square box, unrotated, no progress bar.
    fn default() -> Self {
        CropOptions {
            size: 224,
            margin: Margin::Scale(1.3),
            align_eyes: false,
            all_faces: false,
            format: CropFormat::Png,
            min_score: 0.0,
            progress: false,
        }
    }
}

impl CropOptions {
    /// The preparation settings: square crops resized to `size`.
    pub fn config(&self) -> PrepareConfig {
        PrepareConfig {
            crop: CropConfig {
                margin: self.margin,
                square: true,
                size: Some(self.size),
                align_eyes: self.align_eyes,
            },
            selection: if self.all_faces { FaceSelection::All } else { FaceSelection::Largest },
            min_score: self.min_score,
            progress: self.progress,
            image_format: self.format,
        }
    }
}

/// A scan as text: a header line, then one line per frame with its faces' boxes and scores.
pub fn scan_text(result: &ScanResult) -> String {
    let kind = match result.kind {
        InputKind::Image => "image",
        InputKind::Video => "video",
    };
    let mut lines = vec![format!(
        "{} ({kind}): faces in {} of {} frames",
        result.input,
        result.frames_with_faces(),
        result.frames.len()
    )];
    for frame in &result.frames {
        let faces: Vec<String> = frame
            .faces
            .iter()
            .map(|f| {
                let [x, y, w, h] = f.bbox;
                format!("[{x:.0},{y:.0} {w:.0}x{h:.0} score {:.2}]", f.score)
            })
            .collect();
        let found = match faces.len() {
            0 => "no face".to_string(),
            1 => format!("1 face {}", faces.join(" ")),
            n => format!("{n} faces {}", faces.join(" ")),
        };
        lines.push(format!("frame {} at {:.2} s: {found}", frame.index, frame.time_s));
    }
    lines.join("\n")
}

/// What [`prepare::prepare`] did, as text, ending with where the manifest is.
pub fn prepare_text(summary: &PrepareSummary, out: &Path) -> String {
    let mut lines = vec![
        format!(
            "{} sources ({} processed now, {} done by an earlier run): {} frames, {} without a face; {} crops written",
            summary.sources,
            summary.processed,
            summary.resumed,
            summary.frames,
            summary.frames_without_face,
            summary.crops
        ),
        format!(
            "skipped: {} sources without a face, {} unreadable (listed in {})",
            summary.faceless_sources,
            summary.failed.len(),
            out.join(prepare::SKIPPED_FILE).display()
        ),
    ];
    for (path, reason) in summary.failed.iter().take(5) {
        lines.push(format!("  {}: {reason}", path.display()));
    }
    if summary.failed.len() > 5 {
        lines.push(format!("  ... and {} more", summary.failed.len() - 5));
    }
    lines.push(format!("manifest: {}", out.join(prepare::MANIFEST_FILE).display()));
    lines.join("\n")
}

/// The detections a scan recorded for one frame.
pub fn detections(frame: &FrameFaces) -> Vec<Detection> {
    frame.faces.iter().map(Detection::from).collect()
}

/// Frame `index` of `input`: the image itself (any index) or that frame of the video, as RGB.
///
/// # Errors
/// The file cannot be read or decoded, or the video has no such frame.
pub fn frame_image(input: &Path, kind: InputKind, index: u64) -> Result<Image> {
    Ok(match kind {
        InputKind::Image => Image::open(input)?.to_rgb(),
        InputKind::Video => video::read_frame(&video::probe(input)?, index)?.image,
    })
}

/// `faces` drawn on `image` ([`draw_detections`]); a picture whose longer side is under
/// `min_side` pixels is enlarged first (by a whole factor, bilinear) so that the outlines stay
/// thin next to the face.
///
/// # Errors
/// Only an empty image.
pub fn render(image: &Image, faces: &[Detection], min_side: u32) -> Result<Image> {
    let longer = image.width().max(image.height()).max(1);
    let factor = min_side.div_ceil(longer).max(1);
    if factor == 1 {
        return Ok(draw_detections(image, faces));
    }
    let resize =
        Resize::new(image.width() * factor, image.height() * factor).with_filter(Filter::Bilinear);
    let large = resize.resize(image)?;
    let s = factor as f32;
    let scaled: Vec<Detection> = faces
        .iter()
        .map(|d| Detection {
            bbox: FaceBox::new(d.bbox.x * s, d.bbox.y * s, d.bbox.width * s, d.bbox.height * s),
            score: d.score,
            keypoints: d.keypoints.iter().map(|&[x, y]| [x * s, y * s]).collect(),
        })
        .collect();
    Ok(draw_detections(&large, &scaled))
}

/// Writes the first scanned frame of `result` with its detections drawn to `out` (PNG, or
/// JPEG by extension), at the frame's own size.
///
/// # Errors
/// The scan has no frame, the frame cannot be read again or `out` cannot be written.
pub fn draw_first_frame(result: &ScanResult, out: &Path) -> Result<()> {
    let frame = result
        .frames
        .first()
        .ok_or_else(|| Error::invalid("scan", format!("{} has no frame to draw", result.input)))?;
    let image = frame_image(Path::new(&result.input), result.kind, frame.index)?;
    render(&image, &detections(frame), 0)?.save(out)?;
    Ok(())
}

/// A detector by name with its weights from `assets`, on the GPU when there is one.
///
/// # Errors
/// No device, or the weights are missing or unreadable.
pub fn open_detector(kind: DetectorKind, assets: &Path) -> Result<Box<dyn FaceDetector>> {
    let device = deeprecog_nn::device::select(deeprecog_nn::device::DeviceChoice::Auto)?;
    Ok(deeprecog_detector::scan::open_detector(kind, assets, &device)?)
}

/// What `deepfake faces` prints for a scan: the JSON object, or [`scan_text`]; with `draw`,
/// the first frame with its detections is written there too ([`draw_first_frame`]).
///
/// # Errors
/// The frame cannot be drawn or written.
pub fn scan_output(result: &ScanResult, json: bool, draw: Option<&Path>) -> Result<String> {
    if let Some(out) = draw {
        draw_first_frame(result, out)?;
    }
    if json {
        return serde_json::to_string(result)
            .map_err(|e| Error::invalid("scan", format!("{}: {e}", result.input)));
    }
    let drawn = draw.map(|out| format!("\ndrawn: {}", out.display())).unwrap_or_default();
    Ok(format!("{}{drawn}", scan_text(result)))
}

/// `deepfake prepare`: the sources of `input`, their face crops written under `out` by
/// `detector` ([`prepare`]), and the summary text ([`prepare_text`]).
///
/// # Errors
/// The input cannot be listed, or an error that stops [`prepare`] (inputs that fail are listed
/// in `skipped.csv` instead).
pub fn prepare_dataset(
    input: &Input,
    frames: usize,
    minority_factor: f32,
    options: &CropOptions,
    detector: &dyn FaceDetector,
    out: &Path,
) -> Result<String> {
    let sources = input.sources(frames, minority_factor)?;
    let summary = prepare::prepare(&sources, detector, &options.config(), out)?;
    Ok(prepare_text(&summary, out))
}

/// The images of a folder of frames (sorted by name) as video frames at `fps`.
///
/// # Errors
/// The folder cannot be listed; an image cannot be decoded (named).
pub fn frame_folder(dir: &Path, fps: f64) -> Result<Vec<video::Frame>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io { path: dir.to_path_buf(), reason: e.to_string() })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| deeprecog_dataset::is_image_file(p))
        .collect();
    paths.sort();
    paths
        .iter()
        .enumerate()
        .map(|(k, p)| {
            Ok(video::Frame {
                index: k as u64,
                time_s: k as f64 / fps,
                image: Image::open(p)?.to_rgb(),
            })
        })
        .collect()
}

/// Encodes every subfolder of `frames_root` that holds images (sorted by name) into
/// `out/<subfolder>.mp4` at `fps` ([`video::encode_frames`]) and copies `frames_root`'s
/// `metadata.json`, when there is one, beside the videos; the videos, sorted.
///
/// # Errors
/// A folder cannot be listed, a video cannot be encoded or the metadata cannot be copied.
pub fn encode_frame_folders(frames_root: &Path, out: &Path, fps: f64) -> Result<Vec<PathBuf>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| Error::Io { path, reason: e.to_string() }
    };
    let mut folders: Vec<PathBuf> = std::fs::read_dir(frames_root)
        .map_err(io(frames_root))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    // One ffmpeg per folder, several at a time: each spends much of its time starting up.
    let videos: Vec<Option<PathBuf>> = folders
        .par_iter()
        .map(|folder| -> Result<Option<PathBuf>> {
            let mut frames: Vec<PathBuf> = std::fs::read_dir(folder)
                .map_err(io(folder))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| deeprecog_dataset::is_image_file(p))
                .collect();
            if frames.is_empty() {
                return Ok(None);
            }
            frames.sort();
            let name =
                folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let target = out.join(format!("{name}.mp4"));
            video::encode_frames(&frames, fps, &target)?;
            Ok(Some(target))
        })
        .collect::<Result<_>>()?;
    let videos: Vec<PathBuf> = videos.into_iter().flatten().collect();
    let metadata = frames_root.join(METADATA_FILE);
    if metadata.is_file() {
        let bytes = std::fs::read(&metadata).map_err(io(&metadata))?;
        write_atomically(&out.join(METADATA_FILE), &bytes)
            .map_err(deeprecog_dataset::Error::from)?;
    }
    Ok(videos)
}

/// The sources and frames of one label in a prepared set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelCounts {
    /// The label (`None`: unlabelled sources).
    pub label: Option<Label>,
    /// Sources with this label.
    pub sources: usize,
    /// Frames sampled from them (one per image; a video that cannot be probed counts 0).
    pub frames: usize,
    /// Frames with at least one crop in the manifest.
    pub frames_with_face: usize,
}

impl LabelCounts {
    /// The columns of [`LabelCounts::row`].
    pub const COLUMNS: [&'static str; 4] = ["label", "sources", "frames", "frames with a face"];

    /// One table row.
    pub fn row(&self) -> Vec<String> {
        vec![
            self.label.map_or("unlabelled", Label::as_str).to_string(),
            self.sources.to_string(),
            self.frames.to_string(),
            self.frames_with_face.to_string(),
        ]
    }
}

/// Per-label counts of the sources given to [`prepare::prepare`] and the manifest rows it
/// wrote (real, then fake, then unlabelled; labels without sources are left out). Videos are
/// probed again to know how many frames were sampled from them.
pub fn label_counts(sources: &[Source], rows: &[CropRow]) -> Vec<LabelCounts> {
    let with_face: BTreeSet<(&str, u64)> =
        rows.iter().map(|r| (r.source.as_str(), r.frame_index)).collect();
    let labels = [Some(Label::Real), Some(Label::Fake), None];
    labels
        .into_iter()
        .filter_map(|label| {
            let mine: Vec<&Source> = sources.iter().filter(|s| s.label == label).collect();
            if mine.is_empty() {
                return None;
            }
            let frames = mine
                .iter()
                .map(|s| match s.kind {
                    SourceKind::Image => 1,
                    SourceKind::Video => video::probe(&s.path)
                        .map_or(0, |info| video::frame_indices(info.frames, s.frames).len()),
                })
                .sum();
            let keys: BTreeSet<String> =
                mine.iter().map(|s| s.path.to_string_lossy().into_owned()).collect();
            let frames_with_face =
                with_face.iter().filter(|(source, _)| keys.contains(*source)).count();
            Some(LabelCounts { label, sources: mine.len(), frames, frames_with_face })
        })
        .collect()
}

/// A video scan with its decoding and detection times apart.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedScan {
    /// What was found, as [`deeprecog_detector::scan::scan`] reports it.
    pub result: ScanResult,
    /// Seconds spent probing and decoding the frames.
    pub decode_s: f64,
    /// Seconds spent in the detector (all frames in one batch).
    pub detect_s: f64,
}

impl TimedScan {
    /// Detection time per frame, in milliseconds.
    pub fn detect_ms_per_frame(&self) -> f64 {
        1e3 * self.detect_s / self.result.frames.len().max(1) as f64
    }
}

/// Detects faces in `frames` frames spread over a video ([`video::sample_frames`], which
/// seeks or decodes in one pass, whichever decodes less), timing decoding and detection apart.
///
/// # Errors
/// The video cannot be probed or decoded, or the detector fails.
pub fn timed_scan(path: &Path, detector: &dyn FaceDetector, frames: usize) -> Result<TimedScan> {
    let started = Instant::now();
    let (_, sampled) = video::sample_frames(path, frames)?;
    let decode_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let frames = detect_frames(detector, sampled)?;
    let detect_s = started.elapsed().as_secs_f64();
    let result = ScanResult { input: path.display().to_string(), kind: InputKind::Video, frames };
    Ok(TimedScan { result, decode_s, detect_s })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_input() {
        let dir = || Some(PathBuf::from("d"));
        assert_eq!(Input::choose(dir(), None, None).unwrap(), Input::Videos("d".into()));
        assert_eq!(Input::choose(None, dir(), None).unwrap(), Input::Dfdc("d".into()));
        assert_eq!(Input::choose(None, None, dir()).unwrap(), Input::Images("d".into()));
        assert!(Input::choose(None, None, None).is_err());
        assert!(Input::choose(dir(), dir(), None).is_err());
    }

    #[test]
    fn crop_options_become_the_prepare_config() {
        let config = CropOptions::default().config();
        assert_eq!(config.crop.size, Some(224));
        assert_eq!(config.crop.margin, Margin::Scale(1.3));
        assert!(config.crop.square && !config.crop.align_eyes && !config.progress);
        assert_eq!(config.selection, FaceSelection::Largest);
        let options = CropOptions {
            margin: Margin::PerSide(0.3),
            all_faces: true,
            format: CropFormat::Jpg,
            ..CropOptions::default()
        };
        let config = options.config();
        assert_eq!(config.crop.margin, Margin::PerSide(0.3));
        assert_eq!(config.selection, FaceSelection::All);
        assert_eq!(config.image_format, CropFormat::Jpg);
    }

    #[test]
    fn scan_text_has_a_line_per_frame() {
        let face = FaceRecord { bbox: [1.0, 2.0, 30.0, 40.0], score: 0.875, keypoints: vec![] };
        let result = ScanResult {
            input: "clip.mp4".into(),
            kind: InputKind::Video,
            frames: vec![
                FrameFaces { index: 0, time_s: 0.0, faces: vec![face.clone()] },
                FrameFaces { index: 9, time_s: 0.75, faces: vec![] },
                FrameFaces { index: 18, time_s: 1.5, faces: vec![face.clone(), face] },
            ],
        };
        let text = scan_text(&result);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "clip.mp4 (video): faces in 2 of 3 frames");
        assert_eq!(lines[1], "frame 0 at 0.00 s: 1 face [1,2 30x40 score 0.88]");
        assert_eq!(lines[2], "frame 9 at 0.75 s: no face");
        assert!(lines[3].starts_with("frame 18 at 1.50 s: 2 faces ["), "{}", lines[3]);
        assert_eq!(detections(&result.frames[0])[0].bbox, FaceBox::new(1.0, 2.0, 30.0, 40.0));
    }

    #[test]
    fn render_enlarges_small_pictures_and_scales_the_boxes() {
        let image = Image::filled(96, 64, 3, 50).unwrap();
        let face = Detection::new(FaceBox::new(10.0, 10.0, 20.0, 20.0), 0.9);
        let drawn = render(&image, std::slice::from_ref(&face), 288).unwrap();
        assert_eq!((drawn.width(), drawn.height()), (288, 192));
        assert_eq!(drawn.pixel(30, 60), Some(&deeprecog_detector::draw::BOX_COLOUR[..]));
        assert_eq!(drawn.pixel(32, 60), Some(&[50, 50, 50][..]));
        let same = render(&image, &[face], 0).unwrap();
        assert_eq!((same.width(), same.height()), (96, 64));
    }

    #[test]
    fn frame_folders_become_videos_with_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("frames");
        for (name, n) in [("b", 3u8), ("a", 2)] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            for i in 0..n {
                let path = root.join(name).join(format!("frame_{i:04}.png"));
                Image::filled(16, 16, 3, i * 50).unwrap().save(&path).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join(METADATA_FILE), b"{}").unwrap();
        let out = dir.path().join("videos");
        let videos = encode_frame_folders(&root, &out, 12.0).unwrap();
        assert_eq!(videos, [out.join("a.mp4"), out.join("b.mp4")]);
        assert_eq!(video::probe(&videos[1]).unwrap().frames, 3);
        assert_eq!(std::fs::read(out.join(METADATA_FILE)).unwrap(), b"{}");

        let sources = vec![
            Source::video(&videos[0], Some(Label::Real), "a", 4),
            Source::video(&videos[1], Some(Label::Fake), "a", 2),
        ];
        let row = |source: &Path, frame_index: u64| CropRow {
            path: "x.png".into(),
            label: None,
            group: "a".into(),
            source: source.to_string_lossy().into_owned(),
            frame_index,
            time_s: 0.0,
            bbox: FaceBox::new(0.0, 0.0, 1.0, 1.0),
            score: 1.0,
        };
        let rows = [row(&videos[1], 0), row(&videos[1], 0), row(&videos[1], 2)];
        let counts = label_counts(&sources, &rows);
        assert_eq!(counts.len(), 2);
        assert_eq!(
            (counts[0].label, counts[0].frames, counts[0].frames_with_face),
            (Some(Label::Real), 2, 0)
        );
        assert_eq!(
            (counts[1].label, counts[1].frames, counts[1].frames_with_face),
            (Some(Label::Fake), 2, 2)
        );
        assert_eq!(counts[1].row(), ["fake", "1", "2", "2"]);
    }
}
