//! Video frames through ffmpeg: [`probe`] reads a video's size, frame rate, frame count and
//! rotation with `ffprobe`; [`read_frame`] seeks to one frame and decodes exactly that frame;
//! [`sample_frames`] decodes frames spread evenly over the video, one `ffmpeg` process per frame
//! and several at a time; [`read_all_frames`] decodes the whole video in one pass;
//! [`encode_frames`] goes the other way, image files into an H.264 mp4.
//!
//! ffmpeg runs as a subprocess (`ffmpeg` and `ffprobe` from `PATH`, or the programs named by
//! `DEEPRECOG_FFMPEG` / `DEEPRECOG_FFPROBE`), which keeps its C libraries and licence out of
//! the build. Frames come out as RGB in the orientation the video is meant to be displayed in.
//!
//! ```no_run
//! use deeprecog_detector::video;
//! use std::path::Path;
//!
//! // 32 frames spread over the whole clip, as the DFDC pipelines sample them.
//! let (info, frames) = video::sample_frames(Path::new("clip.mp4"), 32)?;
//! println!("{}x{} at {} fps, {} frames", info.width, info.height, info.fps, info.frames);
//! for frame in &frames {
//!     println!("frame {} at {:.2} s", frame.index, frame.time_s);
//! }
//! # Ok::<(), deeprecog_detector::Error>(())
//! ```

use std::ffi::OsString;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use deeprecog_dataset::Image;
use rayon::prelude::*;

use crate::{Error, Result};

/// Extensions [`is_video_file`] accepts (compared case-insensitively).
pub const VIDEO_EXTENSIONS: [&str; 12] =
    ["mp4", "m4v", "mov", "avi", "mkv", "webm", "mpg", "mpeg", "wmv", "flv", "3gp", "ts"];

/// What ffprobe says about a video's first video stream.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// The video file.
    pub path: PathBuf,
    /// Width as displayed, after rotation.
    pub width: u32,
    /// Height as displayed, after rotation.
    pub height: u32,
    /// Width of the stored (coded) pictures.
    pub coded_width: u32,
    /// Height of the stored (coded) pictures.
    pub coded_height: u32,
    /// Frames per second (the average rate; the nominal rate when there is none).
    pub fps: f64,
    /// Number of frames.
    pub frames: u64,
    /// Duration in seconds.
    pub duration_s: f64,
    /// Degrees to rotate the stored pictures clockwise to display them: 0, 90, 180 or 270.
    pub rotation: i32,
    /// When the video stream starts, in seconds after the file's start (non-zero when another
    /// stream, audio say, starts earlier).
    pub start_s: f64,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// 0-based frame number.
    pub index: u64,
    /// `index / fps`, in seconds from the video stream's start.
    pub time_s: f64,
    /// The picture: RGB, in displayed orientation.
    pub image: Image,
}

/// Whether `path` looks like a video by its extension (see [`VIDEO_EXTENSIONS`]).
pub fn is_video_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| VIDEO_EXTENSIONS.iter().any(|v| v.eq_ignore_ascii_case(e)))
}

/// `n` frame numbers spread evenly over `0..frames`, as `numpy.linspace(0, frames - 1, n)`
/// rounded (half to even, as numpy rounds) and deduplicated; every frame when `n >= frames`.
pub fn frame_indices(frames: u64, n: usize) -> Vec<u64> {
    if n as u64 >= frames {
        return (0..frames).collect();
    }
    if n <= 1 {
        return vec![0; n];
    }
    // Same arithmetic as numpy (i * step, last value exactly the end) so ties round alike.
    let step = (frames - 1) as f64 / (n - 1) as f64;
    let mut out: Vec<u64> =
        (0..n - 1).map(|i| (i as f64 * step).round_ties_even() as u64).collect();
    out.push(frames - 1);
    out.dedup();
    out
}

/// Reads a video's first video stream's properties with ffprobe.
///
/// A missing file is [`Error::Io`]; a file ffprobe cannot read, one without a video stream or
/// without frames is [`Error::Video`]; no ffprobe is [`Error::FfmpegMissing`].
pub fn probe(path: &Path) -> Result<VideoInfo> {
    std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let entries = "stream=width,height,r_frame_rate,avg_frame_rate,nb_frames,duration,start_time\
                   :stream_side_data=rotation:stream_tags=rotate:format=duration,start_time";
    let parsed = ffprobe(path, &["-show_entries", entries])?;
    let stream =
        parsed.streams.into_iter().next().ok_or_else(|| Error::video(path, "no video stream"))?;
    let (coded_width, coded_height) = match (stream.width, stream.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err(Error::video(path, "the video stream has no picture size")),
    };
    let fps = [&stream.avg_frame_rate, &stream.r_frame_rate]
        .into_iter()
        .find_map(|r| r.as_deref().and_then(parse_rate))
        .ok_or_else(|| Error::video(path, "the video stream has no frame rate"))?;
    let format = parsed.format.unwrap_or_default();
    let duration = parse_f64(&stream.duration).or_else(|| parse_f64(&format.duration));
    let mut frames =
        stream.nb_frames.as_deref().and_then(|s| s.parse::<u64>().ok()).filter(|&n| n > 0);
    if frames.is_none() {
        // Containers such as WebM and MKV store no frame count: count the packets instead.
        let counted =
            ffprobe(path, &["-count_packets", "-show_entries", "stream=nb_read_packets"])?;
        frames = counted.streams.first().and_then(|s| s.nb_read_packets.as_deref()?.parse().ok());
    }
    let frames = frames
        .filter(|&n| n > 0)
        .or_else(|| duration.map(|d| (d * fps).round() as u64))
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::video(path, "the video stream has no frames"))?;
    let rotation = clockwise_rotation(
        stream.side_data_list.iter().find_map(|s| s.rotation),
        stream.tags.rotate.as_deref().and_then(|s| s.trim().parse().ok()),
    );
    let (width, height) = if rotation % 180 == 90 {
        (coded_height, coded_width)
    } else {
        (coded_width, coded_height)
    };
    let start_s = match (parse_f64(&stream.start_time), parse_f64(&format.start_time)) {
        (Some(s), Some(f)) => (s - f).max(0.0),
        _ => 0.0,
    };
    Ok(VideoInfo {
        path: path.to_path_buf(),
        width,
        height,
        coded_width,
        coded_height,
        fps,
        frames,
        duration_s: duration.unwrap_or(frames as f64 / fps),
        rotation,
        start_s,
    })
}

/// Decodes frame `index` (0-based) of a probed video.
///
/// ffmpeg seeks in the input (fast) and then decodes up to the first frame at or after the
/// seek time (exact), so the seek goes half a frame before the wanted one. An index past
/// `info.frames`, or a frame the file does not hold (a truncated file), is [`Error::Video`].
pub fn read_frame(info: &VideoInfo, index: u64) -> Result<Frame> {
    let time_s = index as f64 / info.fps;
    let fail = |reason: &str| {
        Error::video(
            &info.path,
            format!("frame {index} at {time_s:.3} s could not be decoded: {reason}"),
        )
    };
    if index >= info.frames {
        return Err(fail(&format!("the video has {} frames", info.frames)));
    }
    let seek = ((index as f64 - 0.5) / info.fps + info.start_s).max(0.0);
    let mut cmd = Command::new(program("DEEPRECOG_FFMPEG", "ffmpeg"));
    cmd.args(["-nostdin", "-v", "error", "-threads", "1", "-filter_threads", "1", "-ss"])
        .arg(format!("{seek:.6}"))
        .arg("-i")
        .arg(&info.path)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn", "-frames:v", "1", "-f", "image2pipe"])
        .args(["-vcodec", "ppm", "-pix_fmt", "rgb24", "-"]);
    let out = run(cmd, "DEEPRECOG_FFMPEG", "ffmpeg")?;
    if !out.status.success() || out.stdout.is_empty() {
        let reason = first_line(&out.stderr).unwrap_or_else(|| "ffmpeg produced no frame".into());
        return Err(fail(&reason));
    }
    let image = parse_ppm(&out.stdout).map_err(|e| fail(&format!("ffmpeg's output: {e}")))?;
    Ok(Frame { index, time_s, image })
}

/// How [`sample_frames_with`] reaches the frames it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sampling {
    /// Whichever decodes fewer frames, judged from the keyframe positions: seeking for long
    /// videos with sparse samples, one pass for short clips (a seek decodes from the keyframe
    /// before the frame, and a 10 s clip may be a single group of pictures).
    #[default]
    Auto,
    /// One ffmpeg process per frame, seeking to it ([`read_frame`]), several at a time.
    Seek,
    /// One ffmpeg process decoding up to the last wanted frame, keeping the wanted ones.
    OnePass,
}

/// Probes a video and decodes `n` frames spread evenly over it ([`frame_indices`]), choosing
/// between seeking and one pass ([`Sampling::Auto`]); the frames come back in index order.
pub fn sample_frames(path: &Path, n: usize) -> Result<(VideoInfo, Vec<Frame>)> {
    sample_frames_with(path, n, Sampling::Auto)
}

/// [`sample_frames`] with the decoding strategy chosen by the caller.
pub fn sample_frames_with(
    path: &Path,
    n: usize,
    sampling: Sampling,
) -> Result<(VideoInfo, Vec<Frame>)> {
    let info = probe(path)?;
    let indices = frame_indices(info.frames, n);
    let one_pass = match sampling {
        Sampling::Seek => false,
        Sampling::OnePass => true,
        Sampling::Auto => indices.len() > 1 && one_pass_is_cheaper(&indices, &keyframes(&info)?),
    };
    let frames = if one_pass {
        read_frames_in_one_pass(&info, &indices)?
    } else {
        indices.into_par_iter().map(|index| read_frame(&info, index)).collect::<Result<_>>()?
    };
    Ok((info, frames))
}

/// What starting an ffmpeg process and seeking costs, in decoded frames (measured: ~0.1 s of
/// process start-up against ~1 ms per decoded 360p frame).
const PROCESS_COST_FRAMES: u64 = 60;

/// Whether decoding frames 0..=last once costs less than a seek per frame, each decoding from
/// the keyframe at or before it (seeks run two at a time).
fn one_pass_is_cheaper(indices: &[u64], keyframes: &[u64]) -> bool {
    let seek: u64 = indices
        .iter()
        .map(|&i| {
            let key = keyframes.iter().rev().find(|&&k| k <= i).copied().unwrap_or(0);
            i - key + 1 + PROCESS_COST_FRAMES
        })
        .sum::<u64>()
        / 2;
    let pass = indices.last().map_or(0, |&last| last + 1 + PROCESS_COST_FRAMES);
    pass < seek
}

/// Indices of the video stream's keyframes (packet order, which is frame order for the
/// streams without reordering that this estimate needs to be right for).
fn keyframes(info: &VideoInfo) -> Result<Vec<u64>> {
    let mut cmd = Command::new(program("DEEPRECOG_FFPROBE", "ffprobe"));
    cmd.args(["-v", "error", "-select_streams", "v:0", "-show_entries", "packet=flags"])
        .args(["-of", "csv=p=0"])
        .arg(&info.path);
    let out = run(cmd, "DEEPRECOG_FFPROBE", "ffprobe")?;
    if !out.status.success() {
        let reason = first_line(&out.stderr).unwrap_or_else(|| "ffprobe failed".into());
        return Err(Error::video(&info.path, reason));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .enumerate()
        .filter(|(_, flags)| flags.starts_with('K'))
        .map(|(i, _)| i as u64)
        .collect())
}

/// Decodes frames 0..=last in one ffmpeg process whose `select` filter passes only the wanted
/// indices; a file that ends before them is [`Error::Video`].
fn read_frames_in_one_pass(info: &VideoInfo, indices: &[u64]) -> Result<Vec<Frame>> {
    let Some(&last) = indices.last() else { return Ok(Vec::new()) };
    if last >= info.frames {
        return Err(Error::video(
            &info.path,
            format!("frame {last} asked of a video with {} frames", info.frames),
        ));
    }
    let wanted: Vec<String> = indices.iter().map(|i| format!("eq(n\\,{i})")).collect();
    let wanted = balanced_sum(&wanted);
    let mut cmd = Command::new(program("DEEPRECOG_FFMPEG", "ffmpeg"));
    cmd.args(["-nostdin", "-v", "error", "-threads", "1", "-i"])
        .arg(&info.path)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn", "-vf"])
        .arg(format!("select='{wanted}'"))
        .args(["-fps_mode", "passthrough", "-frames:v"])
        .arg(indices.len().to_string())
        .args(["-f", "image2pipe", "-vcodec", "ppm", "-pix_fmt", "rgb24", "-"]);
    let out = run(cmd, "DEEPRECOG_FFMPEG", "ffmpeg")?;
    let mut rest = &out.stdout[..];
    let mut frames = Vec::with_capacity(indices.len());
    for &index in indices {
        let time_s = index as f64 / info.fps;
        let fail = |reason: String| {
            Error::video(
                &info.path,
                format!("frame {index} at {time_s:.3} s could not be decoded: {reason}"),
            )
        };
        if rest.is_empty() {
            let reason =
                first_line(&out.stderr).unwrap_or_else(|| "the file ends before it".into());
            return Err(fail(reason));
        }
        let size = ppm_size(rest).map_err(|e| fail(format!("ffmpeg's output: {e}")))?;
        let image = parse_ppm(&rest[..size]).map_err(|e| fail(format!("ffmpeg's output: {e}")))?;
        rest = &rest[size..];
        frames.push(Frame { index, time_s, image });
    }
    Ok(frames)
}

/// The byte length of the first PPM in a stream of them (header plus pixels).
fn ppm_size(bytes: &[u8]) -> std::result::Result<usize, String> {
    let rest = bytes.strip_prefix(b"P6").ok_or("not a binary PPM (no P6 magic)")?;
    let (width, rest) = ppm_number(rest, "width")?;
    let (height, rest) = ppm_number(rest, "height")?;
    let (_, rest) = ppm_number(rest, "maxval")?;
    let header = bytes.len() - rest.len() + 1;
    let total = header as u128 + width as u128 * height as u128 * 3;
    if total > bytes.len() as u128 {
        return Err(format!("{width}x{height} image cut short"));
    }
    Ok(total as usize)
}

/// `terms` joined by `+` as a balanced tree of parentheses: ffmpeg's expression parser
/// recurses once per operator of a flat chain and gives up near 100 terms, while a balanced
/// tree nests only log2(n) deep.
fn balanced_sum(terms: &[String]) -> String {
    match terms {
        [] => "0".to_string(),
        [one] => one.clone(),
        _ => {
            let (left, right) = terms.split_at(terms.len() / 2);
            format!("({}+{})", balanced_sum(left), balanced_sum(right))
        }
    }
}

/// Decodes the whole video in one ffmpeg pass and keeps every `every`-th frame (0, `every`,
/// 2 `every`, ...). Faster than [`sample_frames`] when most frames are wanted; frame times
/// assume a constant frame rate. A file that holds fewer frames than [`probe`] reported is
/// [`Error::Video`].
pub fn read_all_frames(path: &Path, every: u64) -> Result<(VideoInfo, Vec<Frame>)> {
    if every == 0 {
        return Err(Error::InvalidConfig {
            what: "frame step",
            reason: "must be at least 1".into(),
        });
    }
    let info = probe(path)?;
    let mut cmd = Command::new(program("DEEPRECOG_FFMPEG", "ffmpeg"));
    cmd.args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| missing("DEEPRECOG_FFMPEG", "ffmpeg", e))?;
    // Drained on the side: ffmpeg blocks once a full stderr pipe meets an unread one.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        })
    });
    // Streamed frame by frame: a whole 1080p clip would be gigabytes of RGB.
    let size = info.width as usize * info.height as usize * 3;
    let (mut frames, mut buf, mut decoded, mut partial) = (Vec::new(), vec![0; size], 0u64, 0);
    if let Some(mut stdout) = child.stdout.take() {
        loop {
            let filled = fill(&mut stdout, &mut buf).map_err(|e| Error::io(path, e))?;
            if filled < size {
                partial = filled;
                break;
            }
            if decoded % every == 0 {
                let image = Image::from_raw(info.width, info.height, 3, buf.clone())?;
                frames.push(Frame { index: decoded, time_s: decoded as f64 / info.fps, image });
            }
            decoded += 1;
        }
    }
    let status = child.wait().map_err(|e| Error::io(path, e))?;
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    let why = first_line(&stderr).map(|l| format!(" ({l})")).unwrap_or_default();
    let reason = if !status.success() {
        format!("ffmpeg {status}{why}")
    } else if partial > 0 {
        format!("ffmpeg's output ends inside a {}x{} frame", info.width, info.height)
    } else if decoded < info.frames {
        format!("only {decoded} of {} frames could be decoded{why}", info.frames)
    } else {
        return Ok((info, frames));
    };
    Err(Error::video(path, reason))
}

/// Encodes image files, in the order given, into an H.264 mp4 at `fps` frames per second:
/// `yuv420p` (what every player decodes), the index in front (`-movflags +faststart`) and odd
/// sizes padded by one black row or column to even ones, which 4:2:0 chroma needs.
///
/// The frames are linked under numbered names into a temporary folder and read with ffmpeg's
/// `image2` demuxer, which decodes them by extension, so they must share one format (`.jpg`
/// and `.jpeg` count as one). The video is written to a temporary name beside `out` and
/// renamed, so `out` is never left half written; `out`'s folder is created when missing.
///
/// # Errors
/// [`Error::InvalidConfig`] for no frames, a rate that is not a positive number or frames of
/// several formats; [`Error::Io`] naming a frame that cannot be read or the output when it
/// cannot be written; [`Error::Video`] naming `out` when ffmpeg fails (a corrupt frame, frames
/// of different sizes, no H.264 encoder); [`Error::FfmpegMissing`] without ffmpeg.
pub fn encode_frames(frames: &[PathBuf], fps: f64, out: &Path) -> Result<()> {
    let invalid = |reason: String| Error::InvalidConfig { what: "frames to encode", reason };
    if !(fps.is_finite() && fps > 0.0) {
        return Err(invalid(format!("the frame rate {fps} is not a positive number")));
    }
    let Some(first) = frames.first() else {
        return Err(invalid(format!("no frames for {}", out.display())));
    };
    let format = |path: &Path| {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
        match ext.to_ascii_lowercase().as_str() {
            "jpeg" => "jpg".to_string(),
            other => other.to_string(),
        }
    };
    let ext = format(first);
    if let Some(other) = frames.iter().find(|f| format(f) != ext) {
        return Err(invalid(format!(
            "{} is not a .{ext} file like {}: all frames must share one format",
            other.display(),
            first.display()
        )));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let staging = tempfile::Builder::new()
        .prefix(".deeprecog-frames.")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    for (i, frame) in frames.iter().enumerate() {
        // Absolute, so that the link resolves from inside the staging folder; this also
        // reports a missing frame by its own name.
        let target = frame.canonicalize().map_err(|e| Error::io(frame, e))?;
        let link = staging.path().join(format!("{i:06}.{ext}"));
        link_or_copy(&target, &link).map_err(|e| Error::io(frame, e))?;
    }
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let part = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".part")
        .tempfile_in(parent)
        .map_err(|e| Error::io(out, e))?;
    let mut cmd = Command::new(program("DEEPRECOG_FFMPEG", "ffmpeg"));
    cmd.args(["-nostdin", "-v", "error", "-y", "-f", "image2", "-framerate"])
        .arg(format!("{fps}"))
        .args(["-start_number", "0", "-i"])
        .arg(staging.path().join(format!("%06d.{ext}")))
        .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-crf", "18"])
        .args(["-pix_fmt", "yuv420p", "-movflags", "+faststart", "-an", "-f", "mp4"])
        .arg(part.path());
    let result = run(cmd, "DEEPRECOG_FFMPEG", "ffmpeg")?;
    if !result.status.success() {
        let reason =
            first_line(&result.stderr).unwrap_or_else(|| format!("ffmpeg {}", result.status));
        return Err(Error::video(
            out,
            format!("encoding {} frames failed: {reason}", frames.len()),
        ));
    }
    // Temporary files are private to their owner; a video is as readable as any other output.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o644);
        std::fs::set_permissions(part.path(), mode).map_err(|e| Error::io(out, e))?;
    }
    part.persist(out).map_err(|e| Error::io(out, e.error))?;
    Ok(())
}

/// A symbolic link at `link` to `target`, or a copy where links cannot be made.
fn link_or_copy(target: &Path, link: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if std::os::unix::fs::symlink(target, link).is_ok() {
        return Ok(());
    }
    std::fs::copy(target, link).map(|_| ())
}

/// Reads until `buf` is full or the stream ends; returns how many bytes were read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Parses one binary PPM image (`P6`, maxval 255), as ffmpeg writes them, into an RGB image.
///
/// Strict: the header is `P6`, width, height and maxval separated by whitespace (comments from
/// `#` to the end of a line allowed between them), one whitespace byte, then exactly
/// `width * height * 3` bytes. Anything else is an error message, never a panic.
pub fn parse_ppm(bytes: &[u8]) -> std::result::Result<Image, String> {
    let rest = bytes.strip_prefix(b"P6").ok_or("not a binary PPM (no P6 magic)")?;
    let (width, rest) = ppm_number(rest, "width")?;
    let (height, rest) = ppm_number(rest, "height")?;
    let (maxval, rest) = ppm_number(rest, "maxval")?;
    if maxval != 255 {
        return Err(format!("maxval {maxval} (only 8-bit, 255, is supported)"));
    }
    let data = match rest.split_first() {
        Some((c, data)) if c.is_ascii_whitespace() => data,
        _ => return Err("no whitespace after the header".into()),
    };
    if width == 0 || height == 0 {
        return Err(format!("empty image ({width}x{height})"));
    }
    // u128: two u32 sides times 3 overflow u64.
    let expected = width as u128 * height as u128 * 3;
    if data.len() as u128 != expected {
        return Err(format!("{width}x{height} image needs {expected} bytes, got {}", data.len()));
    }
    Image::from_raw(width, height, 3, data.to_vec()).map_err(|e| e.to_string())
}

/// Skips whitespace and comments, then reads one decimal header number.
fn ppm_number<'a>(mut bytes: &'a [u8], what: &str) -> std::result::Result<(u32, &'a [u8]), String> {
    let before = bytes.len();
    loop {
        match bytes.first() {
            Some(c) if c.is_ascii_whitespace() => bytes = &bytes[1..],
            Some(b'#') => {
                let end = bytes.iter().position(|&c| c == b'\n' || c == b'\r');
                bytes = end.map_or(&[][..], |e| &bytes[e..]);
            }
            _ => break,
        }
    }
    if bytes.len() == before {
        return Err(format!("no whitespace before the {what}"));
    }
    let digits = bytes.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return Err(format!("missing {what}"));
    }
    let value = std::str::from_utf8(&bytes[..digits])
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| format!("{what} out of range"))?;
    Ok((value, &bytes[digits..]))
}

/// The fields of ffprobe's JSON that [`probe`] reads.
#[derive(Debug, Default, serde::Deserialize)]
struct ProbeOutput {
    #[serde(default)]
    streams: Vec<ProbeStream>,
    format: Option<ProbeFormat>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ProbeStream {
    width: Option<u32>,
    height: Option<u32>,
    r_frame_rate: Option<String>,
    avg_frame_rate: Option<String>,
    nb_frames: Option<String>,
    nb_read_packets: Option<String>,
    duration: Option<String>,
    start_time: Option<String>,
    #[serde(default)]
    tags: ProbeTags,
    #[serde(default)]
    side_data_list: Vec<ProbeSideData>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ProbeTags {
    rotate: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ProbeSideData {
    rotation: Option<f64>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ProbeFormat {
    duration: Option<String>,
    start_time: Option<String>,
}

/// Runs ffprobe on the first video stream with extra arguments and parses its JSON.
fn ffprobe(path: &Path, args: &[&str]) -> Result<ProbeOutput> {
    let mut cmd = Command::new(program("DEEPRECOG_FFPROBE", "ffprobe"));
    cmd.args(["-v", "error", "-select_streams", "v:0"]).args(args).args(["-of", "json"]).arg(path);
    let out = run(cmd, "DEEPRECOG_FFPROBE", "ffprobe")?;
    if !out.status.success() {
        let reason = first_line(&out.stderr).unwrap_or_else(|| format!("ffprobe {}", out.status));
        return Err(Error::video(path, reason));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::video(path, format!("unreadable ffprobe output: {e}")))
}

/// The program to run: the environment variable's value when set, else `default`.
fn program(var: &str, default: &str) -> OsString {
    std::env::var_os(var).filter(|v| !v.is_empty()).unwrap_or_else(|| default.into())
}

/// Runs a command to completion; failing to start it at all is [`Error::FfmpegMissing`].
fn run(mut cmd: Command, var: &str, default: &str) -> Result<Output> {
    cmd.stdin(Stdio::null()).output().map_err(|source| missing(var, default, source))
}

/// The error for a program that could not be started.
fn missing(var: &str, default: &str, source: std::io::Error) -> Error {
    let name = program(var, default).to_string_lossy().into_owned();
    let program =
        if source.kind() == ErrorKind::NotFound { format!("{name} (or set {var})") } else { name };
    Error::FfmpegMissing { program, source }
}

/// The first non-empty line of a program's stderr, trimmed and without the
/// `[h264 @ 0x55d5d9aa8f00] ` prefix that names ffmpeg's internal context.
fn first_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = match line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
        Some((context, rest)) if context.contains(" @ 0x") && !rest.trim().is_empty() => {
            rest.trim()
        }
        _ => line,
    };
    Some(line.to_owned())
}

/// `"30000/1001"` (or a plain number) as frames per second; `None` for `0/0` and the like.
fn parse_rate(s: &str) -> Option<f64> {
    let rate = match s.split_once('/') {
        Some((n, d)) => n.trim().parse::<f64>().ok()? / d.trim().parse::<f64>().ok()?,
        None => s.trim().parse().ok()?,
    };
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

fn parse_f64(s: &Option<String>) -> Option<f64> {
    s.as_deref()?.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Clockwise display rotation, a multiple of 90 in `0..360`, from the display matrix's
/// counter-clockwise angle (what ffprobe prints) or else the legacy clockwise `rotate` tag.
fn clockwise_rotation(matrix_ccw: Option<f64>, tag_cw: Option<f64>) -> i32 {
    let cw = matrix_ccw.map(|r| -r).into_iter().chain(tag_cw).find(|r| r.is_finite());
    let cw = cw.unwrap_or(0.0);
    (((cw / 90.0).round() as i64).rem_euclid(4) * 90) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// Runs ffmpeg (the tests need it: CI installs it, and a missing one fails them loudly).
    fn ffmpeg(args: &[&str]) {
        let out = Command::new(program("DEEPRECOG_FFMPEG", "ffmpeg"))
            .args(["-nostdin", "-v", "error", "-y"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// 3 s of 64x48 test pattern at 10 fps whose hue turns 12 degrees a frame, so every frame
    /// differs clearly from its neighbours.
    fn make_video(dir: &TempDir, name: &str, extra: &[&str]) -> PathBuf {
        let path = dir.path().join(name);
        let src = "testsrc=size=64x48:rate=10:duration=3,hue=h=t*120";
        let mut args = vec!["-f", "lavfi", "-i", src, "-pix_fmt", "yuv420p"];
        args.extend_from_slice(extra);
        args.push(path.to_str().unwrap());
        ffmpeg(&args);
        path
    }

    /// The first `fraction` of a file's bytes, written to `name`.
    fn truncate(src: &Path, fraction: f64, dir: &TempDir, name: &str) -> PathBuf {
        let bytes = std::fs::read(src).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..(bytes.len() as f64 * fraction) as usize]).unwrap();
        path
    }

    fn mean_abs_diff(a: &Image, b: &Image) -> f64 {
        assert_eq!((a.width(), a.height()), (b.width(), b.height()));
        let sum: u64 =
            a.as_bytes().iter().zip(b.as_bytes()).map(|(&x, &y)| x.abs_diff(y) as u64).sum();
        sum as f64 / a.as_bytes().len() as f64
    }

    /// Rotates an RGB image 90 degrees clockwise.
    fn rotate_cw(img: &Image) -> Image {
        let (w, h) = (img.width(), img.height());
        let mut data = Vec::with_capacity(img.as_bytes().len());
        for y in 0..w {
            for x in 0..h {
                data.extend_from_slice(img.pixel(y, h - 1 - x).unwrap());
            }
        }
        Image::from_raw(h, w, 3, data).unwrap()
    }

    fn assert_video_error(err: Error, path: &Path) {
        match &err {
            Error::Video { path: p, reason } => assert!(p == path && !reason.is_empty(), "{err}"),
            other => panic!("expected a video error, got {other:?}"),
        }
    }

    #[test]
    fn frame_indices_follow_numpy_linspace() {
        assert_eq!(frame_indices(30, 5), [0, 7, 14, 22, 29]); // 14.5 rounds to even
        assert_eq!(frame_indices(10, 3), [0, 4, 9]);
        assert_eq!(frame_indices(100, 2), [0, 99]);
        assert_eq!(frame_indices(300, 4), [0, 100, 199, 299]);
        assert_eq!(frame_indices(30, 1), [0]);
        assert_eq!(frame_indices(5, 5), [0, 1, 2, 3, 4]);
        assert_eq!(frame_indices(5, 50), [0, 1, 2, 3, 4]);
        assert_eq!(frame_indices(1, 1), [0]);
        assert_eq!(frame_indices(1, 7), [0]);
        assert!(frame_indices(30, 0).is_empty() && frame_indices(0, 5).is_empty());
    }

    #[test]
    fn select_expressions_nest_logarithmically() {
        let terms: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        assert_eq!(balanced_sum(&terms), "((t0+t1)+(t2+(t3+t4)))");
        assert_eq!(balanced_sum(&terms[..1]), "t0");
        assert_eq!(balanced_sum(&[]), "0");
        let many: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let e = balanced_sum(&many);
        let mut depth = 0usize;
        let mut deepest = 0;
        for c in e.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            deepest = deepest.max(depth);
        }
        assert_eq!(deepest, 10, "ceil(log2(1000))");
    }

    /// More frames than ffmpeg's parser takes in a flat `eq(n,a)+eq(n,b)+...` chain.
    #[test]
    fn one_pass_sampling_takes_many_frames() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("long.mp4");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=32x24:rate=50:duration=3",
            "-pix_fmt",
            "yuv420p",
            path.to_str().unwrap(),
        ]);
        let (info, frames) = sample_frames_with(&path, 120, Sampling::OnePass).unwrap();
        assert_eq!(info.frames, 150);
        let got: Vec<u64> = frames.iter().map(|f| f.index).collect();
        assert_eq!(got, frame_indices(150, 120));
    }

    #[test]
    fn video_extensions() {
        assert!(is_video_file(Path::new("a/b.MP4")) && is_video_file(Path::new("x.webm")));
        assert!(is_video_file(Path::new("x.ts")) && is_video_file(Path::new("x.3gp")));
        assert!(!is_video_file(Path::new("x.jpg")) && !is_video_file(Path::new("mp4")));
    }

    #[test]
    fn rotation_is_normalised_to_clockwise_quarters() {
        assert_eq!(clockwise_rotation(Some(-90.0), None), 90);
        assert_eq!(clockwise_rotation(Some(90.0), Some(90.0)), 270);
        assert_eq!(clockwise_rotation(Some(-180.0), None), 180);
        assert_eq!(clockwise_rotation(Some(-89.9), None), 90);
        assert_eq!(clockwise_rotation(None, Some(270.0)), 270);
        assert_eq!(clockwise_rotation(None, Some(-90.0)), 270);
        assert_eq!(clockwise_rotation(None, None), 0);
        assert_eq!(clockwise_rotation(Some(f64::NAN), Some(90.0)), 90);
        assert!([0, 90, 180, 270].contains(&clockwise_rotation(Some(-1e300), None)));
    }

    #[test]
    fn probe_reads_size_rate_count_and_duration() {
        let dir = TempDir::new().unwrap();
        let info = probe(&make_video(&dir, "x.mp4", &[])).unwrap();
        assert_eq!(
            (info.width, info.height, info.coded_width, info.coded_height),
            (64, 48, 64, 48)
        );
        assert_eq!((info.fps, info.frames, info.rotation), (10.0, 30, 0));
        assert!((info.duration_s - 3.0).abs() < 1e-3 && info.start_s == 0.0, "{info:?}");
        // WebM stores no frame count: the packets are counted.
        let info = probe(&make_video(&dir, "x.webm", &[])).unwrap();
        assert_eq!((info.width, info.height, info.fps, info.frames), (64, 48, 10.0, 30));
    }

    #[test]
    fn sample_frames_spreads_frames_evenly() {
        let dir = TempDir::new().unwrap();
        let (info, frames) = sample_frames(&make_video(&dir, "x.mp4", &[]), 5).unwrap();
        assert_eq!(info.frames, 30);
        let indices: Vec<u64> = frames.iter().map(|f| f.index).collect();
        assert_eq!(indices, [0, 7, 14, 22, 29]);
        for f in &frames {
            assert!((f.time_s - f.index as f64 / 10.0).abs() < 1e-9);
            assert_eq!((f.image.width(), f.image.height(), f.image.channels()), (64, 48, 3));
        }
    }

    #[test]
    fn read_frame_lands_on_the_exact_frame() {
        let dir = TempDir::new().unwrap();
        let path = make_video(&dir, "x.mp4", &[]);
        let (info, all) = read_all_frames(&path, 1).unwrap();
        assert_eq!(all.len(), 30);
        for index in [0, 1, 2, 9, 10, 14, 15, 28, 29] {
            let frame = read_frame(&info, index).unwrap();
            let own = mean_abs_diff(&frame.image, &all[index as usize].image);
            assert!(own < 2.0, "frame {index}: {own} from the sequential decode");
            for n in [index.wrapping_sub(1), index + 1].into_iter().filter(|&n| n < 30) {
                let other = mean_abs_diff(&frame.image, &all[n as usize].image);
                assert!(other > own + 5.0, "frame {index} vs {n}: {other} (own {own})");
            }
        }
        let every: Vec<u64> =
            read_all_frames(&path, 7).unwrap().1.iter().map(|f| f.index).collect();
        assert_eq!(every, [0, 7, 14, 21, 28]);
        assert!(matches!(read_all_frames(&path, 0), Err(Error::InvalidConfig { .. })));
        let err = read_frame(&info, 30).unwrap_err();
        assert!(err.to_string().contains("frame 30 at 3.000 s"), "{err}");
    }

    #[test]
    fn one_pass_and_seeking_give_the_same_frames() {
        let dir = TempDir::new().unwrap();
        let path = make_video(&dir, "x.mp4", &[]);
        let (_, seek) = sample_frames_with(&path, 6, Sampling::Seek).unwrap();
        let (_, pass) = sample_frames_with(&path, 6, Sampling::OnePass).unwrap();
        assert_eq!(seek.len(), 6);
        for (a, b) in seek.iter().zip(&pass) {
            assert_eq!((a.index, a.time_s), (b.index, b.time_s));
            assert!(mean_abs_diff(&a.image, &b.image) < 2.0, "frame {}", a.index);
        }
        // One group of pictures: a seek per frame decodes far more than one pass.
        assert!(one_pass_is_cheaper(&[0, 100, 200, 249], &[0]));
        // A long video sampled sparsely, a keyframe every 250 frames: seeking wins.
        let keys: Vec<u64> = (0..20).map(|k| k * 250).collect();
        assert!(!one_pass_is_cheaper(&[0, 1600, 3200, 4799], &keys));
    }

    #[test]
    fn rotated_videos_come_out_upright() {
        let dir = TempDir::new().unwrap();
        let plain = make_video(&dir, "x.mp4", &[]);
        let rotated = dir.path().join("r.mp4");
        let (p, r) = (plain.to_str().unwrap(), rotated.to_str().unwrap());
        // Newer ffmpeg sets the display matrix with -display_rotation (counter-clockwise
        // degrees); 5.x only has the legacy tag, which 5.1 writes as the opposite angle.
        let out = Command::new(program("DEEPRECOG_FFMPEG", "ffmpeg"))
            .args([
                "-nostdin",
                "-v",
                "error",
                "-y",
                "-display_rotation",
                "-90",
                "-i",
                p,
                "-c",
                "copy",
                r,
            ])
            .output()
            .unwrap();
        if !out.status.success() {
            ffmpeg(&["-i", p, "-c", "copy", "-metadata:s:v", "rotate=270", r]);
        }
        let info = probe(&rotated).unwrap();
        assert_eq!((info.rotation, info.width, info.height), (90, 48, 64), "{info:?}");
        assert_eq!((info.coded_width, info.coded_height, info.frames), (64, 48, 30));
        let upright = read_frame(&info, 3).unwrap().image;
        let stored = read_frame(&probe(&plain).unwrap(), 3).unwrap().image;
        let cw = rotate_cw(&stored);
        let ccw = rotate_cw(&rotate_cw(&cw));
        assert!(mean_abs_diff(&upright, &cw) < 2.0);
        assert!(mean_abs_diff(&upright, &ccw) > 10.0);
    }

    #[test]
    fn broken_files_are_errors_naming_the_file() {
        let dir = TempDir::new().unwrap();
        // Default mp4 muxing puts the index (moov) at the end: 40 % of the file has none.
        let full = make_video(&dir, "x.mp4", &[]);
        let cut = truncate(&full, 0.4, &dir, "cut.mp4");
        assert_video_error(probe(&cut).unwrap_err(), &cut);
        assert_video_error(sample_frames(&cut, 4).unwrap_err(), &cut);

        let garbage = dir.path().join("garbage.mp4");
        std::fs::write(&garbage, b"this is not a video, just some bytes".repeat(50)).unwrap();
        assert_video_error(probe(&garbage).unwrap_err(), &garbage);
        let empty = dir.path().join("empty.mp4");
        std::fs::write(&empty, b"").unwrap();
        assert_video_error(probe(&empty).unwrap_err(), &empty);

        let audio = dir.path().join("audio.mp4");
        ffmpeg(&["-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", audio.to_str().unwrap()]);
        let err = probe(&audio).unwrap_err();
        assert!(err.to_string().contains("no video stream"), "{err}");

        let missing = dir.path().join("missing.mp4");
        match probe(&missing).unwrap_err() {
            Error::Io { path, .. } => assert_eq!(path, missing),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        let err =
            run(Command::new("deeprecog-no-such-ffmpeg"), "DEEPRECOG_NO_SUCH_VAR", "no-ffmpeg");
        assert!(matches!(err, Err(Error::FfmpegMissing { .. })));
    }

    #[test]
    fn frames_past_a_cut_are_errors() {
        let dir = TempDir::new().unwrap();
        // With the index in front, the cut file still probes, but its last frames are gone.
        let full = make_video(&dir, "x.mp4", &["-movflags", "+faststart"]);
        let cut = truncate(&full, 0.6, &dir, "cut.mp4");
        match probe(&cut) {
            Err(err) => assert_video_error(err, &cut),
            Ok(info) => {
                assert_video_error(read_frame(&info, info.frames - 1).unwrap_err(), &cut);
                assert_video_error(sample_frames(&cut, 30).unwrap_err(), &cut);
                let one_pass = sample_frames_with(&cut, 30, Sampling::OnePass).unwrap_err();
                assert_video_error(one_pass, &cut);
                assert_video_error(read_all_frames(&cut, 1).unwrap_err(), &cut);
            }
        }
    }

    #[test]
    fn encode_frames_writes_an_even_sized_h264_mp4() {
        let dir = TempDir::new().unwrap();
        let frames: Vec<PathBuf> = (0..6u8)
            .map(|i| {
                let path = dir.path().join(format!("frame_{i}.png"));
                let colour = image::Rgb([i * 40, 200 - i * 30, 90]);
                image::RgbImage::from_pixel(33, 20, colour).save(&path).unwrap();
                path
            })
            .collect();
        let out = dir.path().join("sub/clip.mp4");
        encode_frames(&frames, 12.0, &out).unwrap();
        let info = probe(&out).unwrap();
        // 33 wide is padded to 34 for 4:2:0 chroma.
        assert_eq!((info.width, info.height, info.frames, info.fps), (34, 20, 6, 12.0), "{info:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers, ["clip.mp4"]);
        // The frames keep their order and roughly their colours.
        let (_, decoded) = read_all_frames(&out, 1).unwrap();
        for (i, frame) in decoded.iter().enumerate() {
            let red = frame.image.pixel(10, 10).unwrap()[0] as i32;
            assert!((red - i as i32 * 40).abs() < 12, "frame {i}: red {red}");
        }

        assert!(matches!(encode_frames(&[], 12.0, &out), Err(Error::InvalidConfig { .. })));
        assert!(matches!(encode_frames(&frames, 0.0, &out), Err(Error::InvalidConfig { .. })));
        let mixed = [frames[0].clone(), dir.path().join("x.jpg")];
        assert!(matches!(encode_frames(&mixed, 12.0, &out), Err(Error::InvalidConfig { .. })));
        let missing = [frames[0].clone(), dir.path().join("gone.png")];
        match encode_frames(&missing, 12.0, &out).unwrap_err() {
            Error::Io { path, .. } => assert_eq!(path, missing[1]),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        let corrupt = dir.path().join("corrupt.png");
        std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let err = encode_frames(&[corrupt], 12.0, &dir.path().join("bad.mp4")).unwrap_err();
        assert_video_error(err, &dir.path().join("bad.mp4"));
        assert!(!dir.path().join("bad.mp4").exists());
        // The earlier video survived every failed attempt.
        assert_eq!(probe(&out).unwrap().frames, 6);
    }

    #[test]
    fn parse_ppm_is_strict() {
        let pixels: Vec<u8> = (0..18).collect();
        let ppm = |header: &str, data: &[u8]| [header.as_bytes(), data].concat();
        let img = parse_ppm(&ppm("P6\n3 2\n255\n", &pixels)).unwrap();
        assert_eq!((img.width(), img.height(), img.as_bytes()), (3, 2, &pixels[..]));
        let commented = ppm("P6 # made by ffmpeg\n3\t# wide\r\n 2 255 ", &pixels);
        assert_eq!(parse_ppm(&commented).unwrap(), img);
        for bad in [
            ppm("", &[]),
            ppm("P6", &[]),
            ppm("P6\n3 2", &[]),
            ppm("P6\n3 2\n255", &[]),
            ppm("P5\n3 2\n255\n", &pixels[..6]),
            ppm("P6\n3 2\n65535\n", &pixels),
            ppm("P6\n3 2\n1\n", &pixels),
            ppm("P6\n3 2\n255\n", &pixels[..17]),
            ppm("P6\n3 2\n255\n", &[&pixels[..], &[0]].concat()),
            ppm("P6\n0 2\n255\n", &[]),
            ppm("P6\n-3 2\n255\n", &pixels),
            ppm("P63 2 255\n", &pixels),
            ppm("P6\n3 2 255x", &pixels),
            ppm("P6\n99999999999 2\n255\n", &pixels),
            ppm("P6\n4294967295 4294967295\n255\n", &pixels),
        ] {
            assert!(parse_ppm(&bad).is_err(), "{:?}", String::from_utf8_lossy(&bad));
        }
        let good = ppm("P6\n3 2\n255\n", &pixels);
        for end in 0..good.len() {
            assert!(parse_ppm(&good[..end]).is_err());
        }
    }
}
