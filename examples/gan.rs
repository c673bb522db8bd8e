//! GAN face synthesis on the command line: training on a (filtered) CelebA folder, sampling,
//! and FID / KID with the standard Inception network.
//!
//! ```text
//! cargo run --release --example gan -- train --celeba data-fixtures/celeba --filter Attractive --arch dcgan64 --iterations 1000 --out runs/gan [--resume]
//! cargo run --release --example gan -- sample --checkpoint runs/gan --n 36 [--attributes Male,Smiling] --out faces.png
//! cargo run --release --example gan -- sample --checkpoint runs/gan --n 6 --interpolate 8 --out walk.png
//! cargo run --release --example gan -- fid --real DIR --fake DIR [--json]
//! cargo run --release --example gan -- fid --checkpoint runs/gan --real DIR [--n 500] [--json]
//! ```
//!
//! The work is [`deeprecog::pipelines::gan`]; this is its command line.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deeprecog::attributes::Filter;
use deeprecog::pipelines::gan::{self, Split, TrainOptions};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// GAN face synthesis: train, sample, FID.
#[derive(Parser)]
enum Cli {
    /// Trains a GAN: mosaic_<iteration>.png, checkpoints (last/), history.json,
    /// iterations.json, losses.png and the generator export in --out.
    Train {
        /// The CelebA folder.
        #[arg(long, value_name = "DIR")]
        celeba: PathBuf,
        /// Only images matching this attribute expression, e.g. `Attractive & !Eyeglasses`.
        #[arg(long, value_name = "EXPR")]
        filter: Option<Filter>,
        /// seed | dcgan64 | dcgan128 | cond (conditional DCGAN64; needs --attributes).
        #[arg(long, default_value = "seed")]
        arch: String,
        /// The attributes of a conditional GAN, comma-separated.
        #[arg(long, value_name = "A,B", value_parser = deeprecog::pipelines::attractiveness::parse_attributes)]
        attributes: Option<Vec<deeprecog::attributes::Attribute>>,
        /// Iterations in total (a resumed run goes on to this many).
        #[arg(long, default_value_t = 1000, value_name = "N")]
        iterations: u64,
        /// Images per batch.
        #[arg(long, default_value_t = 16, value_name = "N")]
        batch_size: usize,
        /// A 6x6 mosaic every this many iterations.
        #[arg(long, default_value_t = 50, value_name = "N")]
        mosaic_every: u64,
        /// Generator and discriminator widths (e.g. 32,32 for a CPU run).
        #[arg(long, value_name = "G,D", value_parser = parse_widths)]
        widths: Option<(usize, usize)>,
        /// train (the official training partition) or all.
        #[arg(long, default_value = "train")]
        split: Split,
        /// One-sided label smoothing of real targets.
        #[arg(long, default_value_t = 0.0)]
        label_smoothing: f32,
        /// Initial instance-noise std, annealed to 0 over the run.
        #[arg(long, default_value_t = 0.0)]
        instance_noise: f32,
        /// Spectral normalisation in the discriminator.
        #[arg(long)]
        spectral_norm: bool,
        /// The run's seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The run folder.
        #[arg(long, default_value = "runs/gan", value_name = "DIR")]
        out: PathBuf,
        /// Continue the run in --out (or in this run folder) from its last/ checkpoint.
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
        resume: Option<PathBuf>,
    },
    /// Generates faces into one grid PNG (or, with --interpolate, a latent interpolation grid).
    Sample {
        /// A run folder or generator export.
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
        /// Faces (with --interpolate: rows of the grid).
        #[arg(long, default_value_t = 36)]
        n: usize,
        /// Interpolate between pairs of latents in this many steps per row.
        #[arg(long, value_name = "STEPS")]
        interpolate: Option<usize>,
        /// For a conditional model: the attributes to switch on (`!Name` or absent: off).
        #[arg(long, value_name = "A,B")]
        attributes: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_name = "FILE.png")]
        out: PathBuf,
    },
    /// FID and KID between two image folders (any sizes, recursive), or a folder and a
    /// generator's faces.
    Fid {
        #[arg(long, value_name = "DIR")]
        real: PathBuf,
        #[arg(long, value_name = "DIR", required_unless_present = "checkpoint")]
        fake: Option<PathBuf>,
        /// Generate the fake side from this run folder or export.
        #[arg(long, value_name = "DIR", conflicts_with = "fake")]
        checkpoint: Option<PathBuf>,
        /// Faces to generate with --checkpoint.
        #[arg(long, default_value_t = 500)]
        n: usize,
        /// Print exactly one JSON object {"fid", "kid", "real", "fake"}.
        #[arg(long)]
        json: bool,
        /// Where the FID network is (fetched there when absent).
        #[arg(long, default_value = deeprecog::assets::DEFAULT_DIR, value_name = "DIR")]
        assets: PathBuf,
    },
}

fn parse_widths(s: &str) -> Result<(usize, usize), String> {
    let (g, d) = s.split_once(',').ok_or("expected G,D")?;
    Ok((g.trim().parse().map_err(|_| "bad G")?, d.trim().parse().map_err(|_| "bad D")?))
}

fn run(cli: Cli) -> AnyResult<()> {
    let device = deeprecog::nn::device::select(deeprecog::nn::device::DeviceChoice::Auto)?;
    match cli {
        Cli::Train {
            celeba,
            filter,
            arch,
            attributes,
            iterations,
            batch_size,
            mosaic_every,
            widths,
            split,
            label_smoothing,
            instance_noise,
            spectral_norm,
            seed,
            out,
            resume,
        } => {
            let out = resume.clone().filter(|p| !p.as_os_str().is_empty()).unwrap_or(out);
            let options = TrainOptions {
                filter,
                split,
                arch,
                widths,
                iterations,
                batch_size,
                mosaic_every,
                label_smoothing,
                instance_noise,
                spectral_norm,
                seed,
                conditions: attributes.unwrap_or_default(),
                resume: resume.is_some(),
                verbose: true,
                ..TrainOptions::new(celeba, out)
            };
            let run = gan::train(&options, &device)?;
            println!(
                "{} iterations in {:.0} s; {} mosaics, generator in {}",
                run.iterations,
                run.seconds,
                run.mosaics.len(),
                run.generator.display()
            );
            for w in &run.warnings {
                println!("warning: {w}");
            }
        }
        Cli::Sample { checkpoint, n, interpolate, attributes, seed, out } => {
            let path = match interpolate {
                Some(steps) => gan::interpolation(
                    &checkpoint,
                    n,
                    steps,
                    seed,
                    attributes.as_deref(),
                    &out,
                    &device,
                )?,
                None => gan::sample(&checkpoint, n, seed, attributes.as_deref(), &out, &device)?,
            };
            println!("{}", path.display());
        }
        Cli::Fid { real, fake, checkpoint, n, json, assets } => {
            let net = gan::fid_network(&assets, true, &device)?;
            let score = match (fake, checkpoint) {
                (Some(fake), _) => deeprecog::classifiers::fid::fid_from_folders(
                    &net,
                    &real,
                    &fake,
                    &Default::default(),
                )?,
                (None, Some(dir)) => gan::fid_generator(&net, &dir, &real, n, 0, &device)?,
                (None, None) => return Err("--fake or --checkpoint".into()),
            };
            if json {
                println!("{}", serde_json::to_string(&score)?);
            } else {
                println!(
                    "FID {:.3}  KID {:.5}  ({} real, {} fake images)",
                    score.fid, score.kid, score.real, score.fake
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
