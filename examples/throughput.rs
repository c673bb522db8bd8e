//! Images per second of any zoo model on this machine: inference (evaluation mode over
//! constant weights) or a training step (forward, `bce_with_logits`, backward, Adam), the
//! median over timed iterations after two warm-up ones. The last line printed is
//! `images/s: X`, for scripts that compare the project with its anchors
//! (`deeprecog::pipelines::throughput`).
//!
//! ```text
//! cargo run --release --example throughput -- --model scratch3 --input 128 --batch 32 --train [--iters 10] [--freeze layer1]
//! cargo run --release --example throughput -- --model mobilenetv2 --input 224 --batch 1
//! cargo run --release --example throughput -- --gan dcgan64 --batch 64
//! cargo run --release --example throughput -- --model resnet50 --input 224 --batch 8 --no-winograd
//! cargo run --release --features cudnn --example throughput -- --model resnet34 --input 224 --batch 64 --device cuda
//! cargo run --release --features cudnn --example throughput -- --model scratch3 --batch 256 --train --device cuda --bf16
//! ```
//!
//! With `--gan ARCH` (`dcgan64`, `seed`, ...) a step is one GAN iteration: a discriminator step
//! on real and generated images, then a generator step.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use deeprecog::classifiers::zoo::ModelName;
use deeprecog::nn::device::DeviceChoice;
use deeprecog::pipelines::throughput::{measure_on, Workload};

#[derive(Parser)]
struct Cli {
    /// A zoo model (`scratch3`, `resnet50`, `mobilenetv2`, ...).
    #[arg(long, required_unless_present = "gan")]
    model: Option<ModelName>,
    /// A GAN architecture instead (`dcgan64`, `seed`, ...).
    #[arg(long, conflicts_with_all = ["model", "freeze"])]
    gan: Option<String>,
    /// Image side.
    #[arg(long, default_value_t = 128)]
    input: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// A training step instead of inference.
    #[arg(long)]
    train: bool,
    /// Freeze stages up to and including this one (backbones).
    #[arg(long, value_name = "STAGE")]
    freeze: Option<String>,
    /// Timed iterations.
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Compute 3x3 stride-1 convolutions by `im2col` + GEMM instead of Winograd F(2x2, 3x3).
    #[arg(long)]
    no_winograd: bool,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: DeviceChoice,
    /// Mixed precision on CUDA: convolutions in bf16, parameters and the rest in f32
    /// (`nn::conv::set_autocast_bf16`; needs `--features cudnn`).
    #[arg(long)]
    bf16: bool,
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let cli = Cli::parse();
    deeprecog::nn::conv::set_winograd(!cli.no_winograd);
    let workload = match (cli.gan, cli.model) {
        (Some(arch), _) => Workload::Gan { arch },
        (None, Some(name)) => {
            Workload::Model { name, input: cli.input, freeze: cli.freeze, train: cli.train }
        }
        (None, None) => {
            eprintln!("error: --model or --gan is required");
            return ExitCode::FAILURE;
        }
    };
    if cli.bf16 {
        #[cfg(feature = "cudnn")]
        deeprecog::nn::conv::set_autocast_bf16(true);
        #[cfg(not(feature = "cudnn"))]
        {
            eprintln!("error: --bf16 needs a build with --features cudnn");
            return ExitCode::FAILURE;
        }
    }
    let device = match deeprecog::nn::device::select(cli.device) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match measure_on(&workload, cli.batch, cli.iters, &device) {
        Ok(m) => {
            println!("{}", m.description);
            println!("images/s: {:.2}", m.images_per_second);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
