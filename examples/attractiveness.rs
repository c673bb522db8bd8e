//! The attractiveness pipeline (CelebA attribute recognition).
//!
//! ```text
//! cargo run --release --example attractiveness -- stats --celeba DIR [--json] [--plot FILE]
//! cargo run --release --example attractiveness -- train --celeba DIR --attributes Attractive[,Male...]
//!     [--model scratch3|scratchN|mobilenetv2|resnet18|resnet34|resnet50] [--weights FILE]
//!     [--freeze N] [--epochs E] [--size PX] [--batch B] [--lr LR] [--split official|60/20/20]
//!     [--out DIR]
//! cargo run --release --example attractiveness -- sweep --celeba DIR --blocks 1,2,3,4
//!     [--attributes Attractive] [--epochs E] [--size PX] [--batch B] [--lr LR] [--split S]
//!     [--out DIR]
//! cargo run --release --example attractiveness -- compare --celeba DIR --attributes A[,B..]
//!     --models scratch3,mobilenetv2 [--weights mobilenetv2=FILE[,resnet50=FILE]]
//!     [--epochs E] [--size PX] [--batch B] [--lr LR] [--split S] [--out DIR]
//! ```
//!
//! `stats` prints every attribute's positive count and fraction (most balanced first), or with
//! `--json` exactly one JSON object; `--plot` also draws the distribution chart.
//!
//! `train` trains on the split's train side, keeps the best epoch on the validation side and
//! writes checkpoints (`last/`, `best/`), `history.json`, `curves.png` and `report.json` (test
//! accuracy, AUC, per attribute, exact match, by `Male`) into `--out`; it resumes if `--out`
//! already holds a checkpoint.
//!
//! `sweep` trains `scratchN` for each block count on the train side, prints and writes
//! (`sweep.json`) validation accuracy and AUC per block count, then retrains the best on
//! train + validation and prints its test accuracy against the majority baseline.
//!
//! `compare` trains every model of `--models` with the same split, epochs and seed (a model
//! named in `--weights` starts from those weights with its backbone frozen, the others from
//! scratch), prints each one's test accuracy with a bootstrap 95% interval, the majority
//! baseline, and every model's paired accuracy difference to the first, and writes
//! `comparison.json` and `curves.png` (all validation curves on one chart) into `--out`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use deeprecog::attributes::Attribute;
use deeprecog::classifiers::pipeline::{
    compare_models, parse_attributes, parse_blocks, run_celeba, sweep_blocks, AttributeRun,
    Contender, SplitChoice,
};
use deeprecog::classifiers::report::AttributeReport;
use deeprecog::classifiers::train::TrainConfig;
use deeprecog::classifiers::zoo::{ModelName, ZooConfig};
use deeprecog::classifiers::Freeze;
use deeprecog::cli::Args;
use deeprecog::dataset::celeba::{CelebA, CelebAConfig};
use deeprecog::nn::device::DeviceChoice;

const USAGE: &str = "usage: attractiveness stats --celeba DIR [--json] [--plot FILE]
       attractiveness train --celeba DIR --attributes A[,B..] [--model NAME] [--weights FILE]
           [--freeze N] [--epochs E] [--size PX] [--batch B] [--lr LR] [--split S] [--out DIR]
       attractiveness sweep --celeba DIR --blocks 1,2,3,4 [--attributes A] [--epochs E]
           [--size PX] [--batch B] [--lr LR] [--split S] [--out DIR]
       attractiveness compare --celeba DIR --attributes A[,B..] --models M1,M2[,..]
           [--weights M=FILE[,M=FILE..]] [--epochs E] [--size PX] [--batch B] [--lr LR]
           [--split S] [--out DIR]";

/// The settings `train`, `sweep` and `compare` share: `--epochs` (10), `--lr` (1e-3), `--size`
/// (128), `--batch` (32), `--split` (official) and `--out`, with flips on the training side.
fn run_settings(
    args: &Args,
    attributes: Vec<Attribute>,
    model: ZooConfig,
    default_out: &str,
) -> Result<AttributeRun, String> {
    Ok(AttributeRun {
        attributes,
        model,
        train: TrainConfig {
            epochs: args.get("epochs")?.unwrap_or(10),
            lr: args.get("lr")?.unwrap_or(1e-3),
            out_dir: args.get("out")?.unwrap_or_else(|| PathBuf::from(default_out)),
            progress: true,
            ..Default::default()
        },
        size: args.get("size")?.unwrap_or(128),
        batch_size: args.get("batch")?.unwrap_or(32),
        split: args.get("split")?.unwrap_or(SplitChoice::Official),
        augment: true,
    })
}

fn compare(args: &Args) -> Result<(), String> {
    let known = ["celeba", "attributes", "models", "weights", "epochs", "size", "batch", "lr"];
    let unknown = args.unknown(&[&known[..], &["split", "out"]].concat());
    if !unknown.is_empty() {
        return Err(format!("unknown option(s) --{}\n{USAGE}", unknown.join(", --")));
    }
    let root: PathBuf = args.require("celeba")?;
    let attributes = parse_attributes(&args.require::<String>("attributes")?);
    let attributes = attributes.map_err(|e| e.to_string())?;
    let mut weights: Vec<(ModelName, PathBuf)> = Vec::new();
    for pair in args.get::<String>("weights")?.iter().flat_map(|w| w.split(',')) {
        let (name, file) =
            pair.split_once('=').ok_or_else(|| format!("--weights {pair:?}: use MODEL=FILE"))?;
        weights.push((name.trim().parse().map_err(|e| format!("{e}"))?, file.trim().into()));
    }
    let mut contenders = Vec::new();
    for name in args.require::<String>("models")?.split(',') {
        let name: ModelName = name.trim().parse().map_err(|e| format!("{e}"))?;
        let file = weights.iter().find(|(n, _)| *n == name).map(|(_, f)| f.clone());
        contenders.push(Contender::new(name, file));
    }
    let celeba = CelebA::open(&root, &CelebAConfig::targets(attributes.clone()))
        .map_err(|e| e.to_string())?;
    let run =
        run_settings(args, attributes, ZooConfig::new(ModelName::Scratch(3)), "runs/compare")?;
    let out = run.train.out_dir.clone();
    let device = deeprecog::nn::device::select(DeviceChoice::Auto).map_err(|e| e.to_string())?;
    let comparison =
        compare_models(Arc::new(celeba), &run, &contenders, &device).map_err(|e| e.to_string())?;
    println!("split train/valid/test: {:?}", comparison.split_sizes);
    let rows: Vec<Vec<String>> =
        comparison.entries.iter().flat_map(|e| e.report.rows(&e.label)).collect();
    print_table(&AttributeReport::COLUMNS, &rows);
    println!();
    print_table(
        &deeprecog::classifiers::pipeline::Comparison::DIFFERENCE_COLUMNS,
        &comparison.difference_rows(),
    );
    println!("outputs in {}", out.display());
    Ok(())
}

/// A Markdown table on stdout.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for r in rows {
        println!("| {} |", r.join(" | "));
    }
}

fn train(args: &Args) -> Result<(), String> {
    let known = ["celeba", "attributes", "model", "weights", "freeze", "epochs", "size", "batch"];
    let unknown = args.unknown(&[&known[..], &["lr", "split", "out"]].concat());
    if !unknown.is_empty() {
        return Err(format!("unknown option(s) --{}\n{USAGE}", unknown.join(", --")));
    }
    let root: PathBuf = args.require("celeba")?;
    let attributes = parse_attributes(&args.require::<String>("attributes")?);
    let attributes = attributes.map_err(|e| e.to_string())?;
    let celeba = CelebA::open(&root, &CelebAConfig::targets(attributes.clone()))
        .map_err(|e| e.to_string())?;
    let mut model = ZooConfig::new(args.get("model")?.unwrap_or(ModelName::Scratch(3)));
    model.weights = args.get("weights")?;
    model.freeze = args.get::<usize>("freeze")?.map_or(Freeze::None, Freeze::FirstLayers);
    let run = run_settings(args, attributes, model, "runs/attractiveness")?;
    let out = run.train.out_dir.clone();
    let device = deeprecog::nn::device::select(DeviceChoice::Auto).map_err(|e| e.to_string())?;
    let outcome = run_celeba(Arc::new(celeba), &run, &device).map_err(|e| e.to_string())?;
    let r = &outcome.report;
    println!("split train/valid/test: {:?}", outcome.split_sizes);
    for a in &r.attributes {
        let auc = a.roc_auc.map_or("n/a".into(), |v| format!("{v:.4}"));
        println!(
            "{:<20} test accuracy {:.4} (majority {:.4}), AUC {auc}",
            a.attribute, a.accuracy, a.majority_baseline
        );
    }
    println!("mean accuracy {:.4}, exact match {:.4}", r.mean_accuracy, r.exact_match_accuracy);
    println!("outputs in {}", out.display());
    Ok(())
}

fn sweep(args: &Args) -> Result<(), String> {
    let known = ["celeba", "blocks", "attributes", "epochs", "size", "batch", "lr", "split"];
    let unknown = args.unknown(&[&known[..], &["out"]].concat());
    if !unknown.is_empty() {
        return Err(format!("unknown option(s) --{}\n{USAGE}", unknown.join(", --")));
    }
    let root: PathBuf = args.require("celeba")?;
    let blocks = parse_blocks(&args.require::<String>("blocks")?).map_err(|e| e.to_string())?;
    let names: String = args.get("attributes")?.unwrap_or_else(|| "Attractive".into());
    let attributes = parse_attributes(&names).map_err(|e| e.to_string())?;
    let celeba = CelebA::open(&root, &CelebAConfig::targets(attributes.clone()))
        .map_err(|e| e.to_string())?;
    let run = run_settings(args, attributes, ZooConfig::new(ModelName::Scratch(3)), "runs/sweep")?;
    let out = run.train.out_dir.clone();
    let device = deeprecog::nn::device::select(DeviceChoice::Auto).map_err(|e| e.to_string())?;
    let report =
        sweep_blocks(Arc::new(celeba), &run, &blocks, &device).map_err(|e| e.to_string())?;
    println!("split train/valid/test: {:?}\n{}", report.split_sizes, report.table());
    println!("outputs in {}", out.display());
    Ok(())
}

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
        Some("train") => train(&args),
        Some("sweep") => sweep(&args),
        Some("compare") => compare(&args),
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
