//! The README's main job: every pipeline that exists, on the committed fixtures, on the CPU,
//! in a few minutes, writing a report (markdown + PNGs) into a run folder.
//!
//! ```text
//! cargo run --release --example quickstart [-- --data data-fixtures --out runs/quickstart --epochs 3]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use deeprecog::attributes::Attribute;
use deeprecog::classifiers::pipeline::{
    compare_models, AttributeRun, Comparison, Contender, SplitChoice,
};
use deeprecog::classifiers::report::AttributeReport;
use deeprecog::classifiers::train::TrainConfig;
use deeprecog::classifiers::zoo::{ModelName, ZooConfig};
use deeprecog::cli::Args;
use deeprecog::dataset::celeba::{CelebA, CelebAConfig};
use deeprecog::dataset::folder::ImageFolder;
use deeprecog::dataset::loader::Loader;
use deeprecog::dataset::split::{self, Partition};
use deeprecog::dataset::transforms::{Compose, Resize};
use deeprecog::dataset::Dataset;
use deeprecog::report::Report;

fn run(args: &Args) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let data: PathBuf = args.get("data")?.unwrap_or_else(|| "data-fixtures".into());
    let out: PathBuf = args.get("out")?.unwrap_or_else(|| "runs/quickstart".into());
    let mut report = Report::create(&out, "deeprecog quickstart")?;
    report.text(&format!("Data: `{}`.", data.display()));

    // Stage 1: CelebA-format attribute statistics (the report's Figure 1).
    let celeba = CelebA::open(data.join("celeba"), &CelebAConfig::default())?;
    let stats = celeba.stats();
    stats.plot(&report.file("attribute_distribution.png"), "Attribute distribution (fixture)")?;
    let splits = celeba.official_splits();
    let ids = celeba.identities();
    let sides = |p: Partition| -> std::collections::BTreeSet<u32> {
        splits.get(p).iter().filter_map(|&i| ids[i]).collect()
    };
    let shared = sides(Partition::Train).intersection(&sides(Partition::Test)).count();
    report
        .section("Dataset statistics")
        .text(&format!(
            "{} images, {} identities; official split {}/{}/{} (train/valid/test), identities shared by train and test: {shared}.",
            stats.images(),
            ids.iter().flatten().collect::<std::collections::BTreeSet<_>>().len(),
            splits.train.len(),
            splits.valid.len(),
            splits.test.len()
        ))
        .image("attribute_distribution.png", "Positive fraction of the 40 attributes");
    let rows: Vec<Vec<String>> = stats
        .balance_ranking()
        .into_iter()
        .take(8)
        .map(|(a, f)| vec![a.name().to_string(), stats.positive(a).to_string(), format!("{f:.3}")])
        .collect();
    report.text("Most balanced attributes:").table(&["attribute", "positive", "fraction"], &rows);
    report.save()?;
    println!("stage 1: {} CelebA-format images, attribute chart written", stats.images());

    // Stage 2: the deepfake image set through the loader (decode + resize, batched).
    let fakes = ImageFolder::with_classes(data.join("deepfakes/images"), &["real", "fake"])?;
    let labels = fakes.labels();
    let group_split = split::by_ratios(fakes.len(), split::Ratios::default(), 0)?;
    let started = Instant::now();
    let loader = Loader::new(fakes)
        .batch_size(32)
        .shuffle(0)
        .transform(Compose::new().then(Resize::new(96, 96)));
    let mut epoch = loader.epoch(0)?;
    let mut batches = 0;
    for batch in epoch.by_ref() {
        batch?;
        batches += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = epoch.report();
    report.section("Deepfake images").text(&format!(
        "{} real and {} fake images; 60/20/20 split {}/{}/{}; one loader epoch: {batches} batches of 96x96, {} samples in {seconds:.2} s ({:.0} images/s), {} skipped.",
        labels.iter().filter(|&&l| l == 0).count(),
        labels.iter().filter(|&&l| l == 1).count(),
        group_split.train.len(),
        group_split.valid.len(),
        group_split.test.len(),
        done.delivered,
        done.delivered as f64 / seconds.max(1e-9),
        done.skipped.len()
    ));
    report.save()?;
    println!("stage 2: {} deepfake-set images loaded", done.delivered);

    // Stage 3: Attractive + Male (independent sigmoids): scratch CNN vs frozen MobileNetV2,
    // equal epochs, same split and seed.
    let targets = vec![Attribute::Attractive, Attribute::Male];
    let celeba =
        Arc::new(CelebA::open(data.join("celeba"), &CelebAConfig::targets(targets.clone()))?);
    let weights = PathBuf::from("assets/mobilenet_v2-b0353104.pth");
    let mut contenders = vec![Contender::new(ModelName::Scratch(3), None)];
    if weights.is_file() {
        contenders.push(Contender::new(ModelName::MobileNetV2, Some(weights)));
    } else {
        println!(
            "stage 3: {} missing (scripts/fetch-assets.sh): scratch CNN only",
            weights.display()
        );
    }
    let epochs = args.get("epochs")?.unwrap_or(3);
    let run = AttributeRun {
        attributes: targets,
        model: ZooConfig::new(ModelName::Scratch(3)),
        train: TrainConfig { epochs, out_dir: out.join("attractiveness"), ..Default::default() },
        size: 64,
        batch_size: 32,
        split: SplitChoice::Official,
        augment: true,
    };
    let comparison = compare_models(Arc::clone(&celeba), &run, &contenders, &Device::Cpu)?;
    let mut rows = Vec::new();
    for entry in &comparison.entries {
        println!(
            "stage 3: {} trained in {:.0} s, exact match {:.3}",
            entry.label, entry.seconds, entry.report.exact_match_accuracy
        );
        rows.extend(entry.report.rows(&entry.label));
    }
    let test = celeba.official_splits().test;
    let ceiling = deeprecog::fixtures::attractive_ceiling(&celeba, &test).map_or(String::new(), |c| {
        format!(" On this fixture the best accuracy any model can expect on Attractive over the test images is {c:.3} (the Bayes ceiling: the generator's hidden rule leaves the rest to the annotator's coin flip).")
    });
    report
        .section("Attractiveness")
        .text(&format!("Attractive and Male predicted together (two independent sigmoids) at 64x64, {epochs} epochs for every model on the official split of the fixture ({} test images); test accuracy of the best validation epoch with bootstrap 95% intervals, against the majority-class baseline.{ceiling} Per-run outputs (checkpoints, history, report.json with the Male subgroup breakdown, comparison.json) are in `attractiveness/`.", test.len()))
        .table(&AttributeReport::COLUMNS, &rows)
        .text("Paired accuracy differences (same test images, bootstrapped together):")
        .table(&Comparison::DIFFERENCE_COLUMNS, &comparison.difference_rows())
        .image("attractiveness/curves.png", "Validation accuracy and loss per epoch");
    report.save()?;
    Ok(out)
}

fn main() -> ExitCode {
    match run(&Args::from_env(&[])) {
        Ok(out) => {
            println!("report: {}", out.join("report.md").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
