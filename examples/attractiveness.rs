//! The attractiveness pipeline (CelebA attribute recognition).
//!
//! ```text
//! cargo run --release --example attractiveness -- stats --celeba DIR [--json] [--plot FILE]
//! ```
//!
//! `stats` prints every attribute's positive count and fraction (most balanced first), or with
//! `--json` exactly one JSON object; `--plot` also draws the distribution chart.

use std::path::PathBuf;
use std::process::ExitCode;

use deeprecog::cli::Args;
use deeprecog::dataset::celeba::{CelebA, CelebAConfig};

const USAGE: &str = "usage: attractiveness stats --celeba DIR [--json] [--plot FILE]";

fn stats(args: &Args) -> Result<(), String> {
    let unknown = args.unknown(&["celeba", "json", "plot"]);
    if !unknown.is_empty() {
        return Err(format!("unknown option(s) --{}\n{USAGE}", unknown.join(", --")));
    }
    let root: PathBuf = args.require("celeba")?;
    let celeba = CelebA::open(&root, &CelebAConfig::default()).map_err(|e| e.to_string())?;
    let stats = celeba.stats();
    if let Some(plot) = args.value("plot") {
        stats
            .plot(plot.as_ref(), &format!("CelebA attributes ({} images)", stats.images()))
            .map_err(|e| e.to_string())?;
    }
    if args.flag("json") {
        println!("{}", stats.to_json());
        return Ok(());
    }
    println!("{} images in {}", stats.images(), root.display());
    println!("{:<22} {:>9} {:>9}", "attribute", "positive", "fraction");
    for (attribute, fraction) in stats.balance_ranking() {
        println!("{:<22} {:>9} {:>9.4}", attribute.name(), stats.positive(attribute), fraction);
    }
    if let Some(plot) = args.value("plot") {
        println!("chart: {plot}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::from_env(&["json"]);
    let result = match args.positional().first().map(String::as_str) {
        Some("stats") => stats(&args),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
