//! Images per second of any zoo model on this machine: inference (evaluation mode, no
//! gradients) or a training step (forward, `bce_with_logits`, backward, Adam), the median over
//! timed iterations after two warm-up ones. The last line printed is `images/s: X`, for scripts
//! that compare the project with its anchors.
//!
//! ```text
//! cargo run --release --example throughput -- --model scratch3 --input 128 --batch 32 --train [--iters 10] [--freeze layer1]
//! cargo run --release --example throughput -- --model mobilenetv2 --input 224 --batch 1
//! cargo run --release --example throughput -- --gan dcgan64 --batch 64
//! ```
//!
//! With `--gan ARCH` (`dcgan64`, `seed`, ...) a step is one GAN iteration: a discriminator step
//! on real and generated images, then a generator step.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{Init, Optimizer, VarMap};
use clap::Parser;
use deeprecog::classifiers::zoo::{self, ModelName, ZooConfig};
use deeprecog::classifiers::Freeze;
use deeprecog::gan::models::latents;
use deeprecog::gan::{GanConfig, GanOptim, GanStep};
use deeprecog::nn::init::init_tensor;
use deeprecog::nn::loss::bce_with_logits;
use deeprecog::nn::optim::{Adam, AdamConfig};
use deeprecog::train::StepContext;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Throughput of one zoo model, inference or training.
#[derive(Parser)]
struct Cli {
    /// A zoo model (scratch3, lenet, meso4, resnet18/34/50, mobilenetv2, xception, vgg16, ...).
    #[arg(long, required_unless_present = "gan")]
    model: Option<ModelName>,
    /// Time GAN iterations of this architecture (dcgan64, dcgan128, seed, ...) instead.
    #[arg(long, conflicts_with_all = ["model", "freeze"])]
    gan: Option<String>,
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

/// The median of the timed iterations (after two warm-up ones) of `step`.
fn median_seconds(iters: usize, mut step: impl FnMut(u64) -> AnyResult<()>) -> AnyResult<f64> {
    let mut times = Vec::with_capacity(iters);
    for i in 0..iters + 2 {
        let started = Instant::now();
        step(i as u64)?;
        if i >= 2 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn run_gan(cli: &Cli, arch: &str) -> AnyResult<f64> {
    let device = Device::Cpu;
    let config = GanConfig::from_arch_name(arch)?;
    let mut step = GanStep::new(&config, &GanOptim::recipe(config.arch), 0, &device)?;
    let s = config.image_size;
    // Stand-in real images in [-1, 1]: the cost does not depend on pixel values.
    let real =
        latents(cli.batch, 3 * s * s, 1, "real", &device)?.tanh()?.reshape((cli.batch, 3, s, s))?;
    let median = median_seconds(cli.iters, |i| {
        let ctx = StepContext { epoch: 0, batch: 0, step: i, seed: 0 };
        step.iterate(&real, None, &ctx)?;
        Ok(())
    })?;
    println!(
        "{arch} {s}x{s} batch {} GAN iteration: median {:.1} ms over {} iterations",
        cli.batch,
        median * 1e3,
        cli.iters
    );
    Ok(cli.batch as f64 / median)
}

fn run(cli: &Cli, model: &ModelName) -> AnyResult<f64> {
    let device = Device::Cpu;
    let config = ZooConfig {
        input: (3, cli.input, cli.input),
        freeze: cli.freeze.clone().map_or(Freeze::None, Freeze::UpToStage),
        ..ZooConfig::new(*model)
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
    // Inference runs on constant copies of the weights, as a deployed model would.
    let frozen =
        if cli.train { None } else { Some(zoo::inference_model(&config, &varmap, &device)?) };
    let median = median_seconds(cli.iters, |_| {
        if cli.train {
            let logits = built.model.forward_t(&x, true)?;
            let loss = bce_with_logits(&logits.reshape((cli.batch, outputs))?, &y)?;
            adam.step(&loss.backward()?)?;
        } else {
            let logits = frozen.as_ref().unwrap_or(&built.model).forward_t(&x, false)?;
            // Materialise the result so lazily scheduled work is inside the timing.
            logits.flatten_all()?.to_vec1::<f32>()?;
        }
        Ok(())
    })?;
    println!(
        "{} {}x{} batch {} {}: median {:.1} ms over {} iterations",
        model,
        cli.input,
        cli.input,
        cli.batch,
        if cli.train { "training step" } else { "inference" },
        median * 1e3,
        cli.iters
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
    let result = match (&cli.gan, &cli.model) {
        (Some(arch), _) => run_gan(&cli, arch),
        (None, Some(model)) => run(&cli, model),
        (None, None) => Err("--model or --gan is required".into()),
    };
    match result {
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
