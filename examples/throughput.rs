//! Images per second of any zoo model on this machine: inference (evaluation mode, no
//! gradients) or a training step (forward, `bce_with_logits`, backward, Adam), the median over
//! timed iterations after two warm-up ones. The last line printed is `images/s: X`, for scripts
//! that compare the project with its anchors.
//!
//! ```text
//! cargo run --release --example throughput -- --model scratch3 --input 128 --batch 32 --train [--iters 10] [--freeze layer1]
//! cargo run --release --example throughput -- --model mobilenetv2 --input 224 --batch 1
//! ```

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{Init, Optimizer, VarMap};
use clap::Parser;
use deeprecog::classifiers::zoo::{self, ModelName, ZooConfig};
use deeprecog::classifiers::Freeze;
use deeprecog::nn::init::init_tensor;
use deeprecog::nn::loss::bce_with_logits;
use deeprecog::nn::optim::{Adam, AdamConfig};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Throughput of one zoo model, inference or training.
#[derive(Parser)]
struct Cli {
    /// A zoo model (scratch3, lenet, meso4, resnet18/34/50, mobilenetv2, xception, vgg16, ...).
    #[arg(long)]
    model: ModelName,
    /// Input side (square, 3 channels).
    #[arg(long, default_value_t = 128)]
    input: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Time training steps instead of inference.
    #[arg(long)]
    train: bool,
    /// Freeze the backbone up to this stage (e.g. layer1 for ResNet), for transfer training.
    #[arg(long, value_name = "STAGE")]
    freeze: Option<String>,
    /// Timed iterations (after two warm-up ones).
    #[arg(long, default_value_t = 10)]
    iters: usize,
}

fn run(cli: &Cli) -> AnyResult<f64> {
    let device = Device::Cpu;
    let config = ZooConfig {
        input: (3, cli.input, cli.input),
        freeze: cli.freeze.clone().map_or(Freeze::None, Freeze::UpToStage),
        ..ZooConfig::new(cli.model.clone())
    };
    let varmap = VarMap::new();
    let built = zoo::build(&config, &varmap, &device)?;
    let shape = (cli.batch, 3, cli.input, cli.input);
    let x = init_tensor(
        Init::Randn { mean: 0.0, stdev: 1.0 },
        &shape.into(),
        0,
        "x",
        DType::F32,
        &device,
    )?;
    let outputs = config.task.outputs();
    let y = Tensor::ones((cli.batch, outputs), DType::F32, &device)?;
    let mut adam = Adam::new(built.trainable.clone(), AdamConfig::default())?;
    let mut times = Vec::with_capacity(cli.iters);
    for i in 0..cli.iters + 2 {
        let started = Instant::now();
        if cli.train {
            let logits = built.model.forward_t(&x, true)?;
            let loss = bce_with_logits(&logits.reshape((cli.batch, outputs))?, &y)?;
            adam.step(&loss.backward()?)?;
        } else {
            let logits = built.model.forward_t(&x, false)?;
            // Materialise the result so lazily scheduled work is inside the timing.
            logits.flatten_all()?.to_vec1::<f32>()?;
        }
        if i >= 2 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{} {}x{} batch {} {}: median {:.1} ms over {} iterations",
        cli.model,
        cli.input,
        cli.input,
        cli.batch,
        if cli.train { "training step" } else { "inference" },
        median * 1e3,
        times.len()
    );
    Ok(cli.batch as f64 / median)
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    let cli = Cli::parse();
    if cli.iters == 0 || cli.batch == 0 {
        eprintln!("error: --iters and --batch must be positive");
        return ExitCode::FAILURE;
    }
    match run(&cli) {
        Ok(rate) => {
            println!("images/s: {rate:.2}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
