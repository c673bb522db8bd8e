//! Every binary metric of a predictions file, as text or one JSON object, with optional plots.
//!
//! ```text
//! cargo run --release --example evaluate -- --predictions FILE.csv [--json] [--plots DIR]
//!     [--threshold 0.5]
//! ```
//!
//! The CSV has the header `id,label,score` (label 0/1, score = probability of class 1) and
//! optional `video` (adds video-level metrics, frame scores averaged per video) and `group`
//! (adds a per-group breakdown) columns. The work is
//! [`deeprecog::pipelines::predictions::PredictionsReport`]; `--json` prints it serialised.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deeprecog::metrics::predictions::read_csv;
use deeprecog::pipelines::predictions::PredictionsReport;

/// Every binary metric of a predictions CSV (id,label,score[,video][,group]).
#[derive(Parser)]
struct Cli {
    /// The predictions CSV.
    #[arg(long, value_name = "FILE")]
    predictions: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Write roc.png, pr.png, confusion.png and reliability.png into this folder.
    #[arg(long, value_name = "DIR")]
    plots: Option<PathBuf>,
    /// Predict class 1 when the score is at least this.
    #[arg(long, default_value_t = 0.5, value_parser = probability)]
    threshold: f64,
}

fn probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        Ok(_) => Err("not in [0, 1]".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let predictions = read_csv(&cli.predictions)?;
    let report = PredictionsReport::new(&predictions, cli.threshold)?;
    if let Some(dir) = &cli.plots {
        report.plots(&predictions, dir)?;
    }
    if cli.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let Err(e) = run(&Cli::parse()) else { return ExitCode::SUCCESS };
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
