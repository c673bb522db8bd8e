//! The attractiveness pipeline end to end on a CelebA folder: split, load, build a model from
//! the [`zoo`] (by name), train on the shared engine, reload the best epoch, evaluate on the test
//! side and write `report.json` (per attribute, exact match, subgroup breakdown by a chosen
//! attribute); the report's layer sweep over the scratch CNN's block count ([`sweep_blocks`],
//! `sweep.json`); the comparison of models at equal epochs ([`compare_models`]); and the
//! dataset's attribute statistics as a table and a chart ([`celeba_stats`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use candle_nn::VarMap;
use deeprecog_attributes::Attribute;
use deeprecog_classifiers::report::{attribute_report, AttributeReport, REPORT_BOOTSTRAP};
use deeprecog_classifiers::supervised::{self, evaluate, Evaluation, TrainConfig};
use deeprecog_classifiers::zoo::{self, ModelName, ZooConfig};
use deeprecog_classifiers::{Freeze, Task};
use deeprecog_dataset::celeba::{CelebA, CelebAConfig};
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::split::{self, Ratios, Splits};
use deeprecog_dataset::stats::AttributeStats;
use deeprecog_dataset::transforms::{Compose, HorizontalFlip, Resize};
use deeprecog_dataset::DatasetExt;
use deeprecog_metrics::bootstrap::{bootstrap_indices, ConfidenceInterval};
use deeprecog_metrics::plot::{attribute_distribution, learning_curves, LearningCurve};
use deeprecog_nn::checkpoint;
use deeprecog_train::search::{search, SearchStrategy};
use deeprecog_train::{write_json, History, Monitor, BEST_DIR};
use serde::Serialize;

use super::{Error, Result};
use crate::report::markdown_table;

/// Which split of CelebA to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitChoice {
    /// `list_eval_partition.txt`.
    Official,
    /// A seeded random split with these fractions.
    Ratios(Ratios),
}

impl std::str::FromStr for SplitChoice {
    type Err = Error;
    /// `official` or `train/valid/test` percentages such as `60/20/20`.
    fn from_str(s: &str) -> Result<SplitChoice> {
        if s == "official" {
            return Ok(SplitChoice::Official);
        }
        let parts: Vec<f64> = s.split('/').filter_map(|p| p.trim().parse().ok()).collect();
        match parts[..] {
            [train, valid, test] => {
                let total = train + valid + test;
                Ok(SplitChoice::Ratios(Ratios {
                    train: train / total,
                    valid: valid / total,
                    test: test / total,
                }))
            }
            _ => Err(Error::invalid("split", format!("{s:?}: use official or e.g. 60/20/20"))),
        }
    }
}

/// One attribute-classifier run.
#[derive(Debug, Clone)]
pub struct AttributeRun {
    /// The attributes to predict (one: binary; several: independent sigmoids).
    pub attributes: Vec<Attribute>,
    /// The model (its `task`, `input` and `seed` are set from `attributes`, `size` and the
    /// training seed).
    pub model: ZooConfig,
    /// Training settings.
    pub train: TrainConfig,
    /// The attribute whose two values split the test report into subgroups (e.g. `Male`).
    pub subgroup: Option<Attribute>,
    /// Images are resized to `size x size`.
    pub size: usize,
    /// Samples per batch.
    pub batch_size: usize,
    /// The split.
    pub split: SplitChoice,
    /// Random horizontal flips on the training side.
    pub augment: bool,
}

/// What [`run_celeba`] returns (the report is also written to `out_dir/report.json`).
#[derive(Debug, Clone)]
pub struct AttributeOutcome {
    /// Per-epoch history.
    pub history: History,
    /// Test-set report of the best epoch's weights.
    pub report: AttributeReport,
    /// The split's sizes `[train, valid, test]`.
    pub split_sizes: [usize; 3],
    /// The test-set predictions behind `report`.
    pub evaluation: Evaluation,
}

/// Runs `run` on `celeba` (opened with `run.attributes` as targets) on `device`.
///
/// # Errors
/// Split, loader, model, training and I/O errors.
pub fn run_celeba(
    celeba: Arc<CelebA>,
    run: &AttributeRun,
    device: &Device,
) -> Result<AttributeOutcome> {
    let splits = run_splits(&celeba, run)?;
    let (history, eval) = fit_and_test(&celeba, run, &splits, Test::BestEpoch, device)?;
    let eval = eval.ok_or_else(|| Error::invalid("run", "no test evaluation"))?;
    let report = test_report(&celeba, run, &eval)?;
    write_json(&run.train.out_dir.join("report.json"), &report)?;
    Ok(AttributeOutcome {
        history,
        report,
        split_sizes: [splits.train.len(), splits.valid.len(), splits.test.len()],
        evaluation: eval,
    })
}

/// The test report of `eval`, broken down by `run.subgroup` when set.
fn test_report(celeba: &CelebA, run: &AttributeRun, eval: &Evaluation) -> Result<AttributeReport> {
    let Some(attribute) = run.subgroup else {
        return Ok(attribute_report(eval, &run.attributes, None)?);
    };
    let by_file: HashMap<&str, bool> = celeba
        .records()
        .iter()
        .map(|r| (r.file.as_str(), r.attributes.contains(attribute)))
        .collect();
    let groups: Vec<String> = eval
        .ids
        .iter()
        .map(|id| match by_file.get(id.as_str()) {
            Some(true) => attribute.name().to_string(),
            Some(false) => format!("not {}", attribute.name()),
            None => "unknown".to_string(),
        })
        .collect();
    Ok(attribute_report(eval, &run.attributes, Some((attribute.name(), &groups)))?)
}

impl AttributeOutcome {
    /// The split sizes, one line per attribute (test accuracy, majority baseline, AUC) and the
    /// mean and exact-match accuracies, as plain text.
    pub fn summary(&self) -> String {
        let r = &self.report;
        let mut out = format!("split train/valid/test: {:?}\n", self.split_sizes);
        for a in &r.attributes {
            out.push_str(&format!(
                "{:<20} test accuracy {:.4} (majority {:.4}), AUC {}\n",
                a.attribute,
                a.accuracy,
                a.majority_baseline,
                a.roc_auc.map_or("n/a".into(), |v| format!("{v:.4}"))
            ));
        }
        out.push_str(&format!(
            "mean accuracy {:.4}, exact match {:.4}",
            r.mean_accuracy, r.exact_match_accuracy
        ));
        out
    }
}

/// Every attribute's positive count and fraction, most balanced first, under a line naming
/// the image count and `root`, as a plain-text table.
pub fn stats_table(stats: &AttributeStats, root: &Path) -> String {
    let mut out = format!("{} images in {}\n", stats.images(), root.display());
    out.push_str(&format!("{:<22} {:>9} {:>9}", "attribute", "positive", "fraction"));
    for (attribute, fraction) in stats.balance_ranking() {
        out.push_str(&format!(
            "\n{:<22} {:>9} {:>9.4}",
            attribute.name(),
            stats.positive(attribute),
            fraction
        ));
    }
    out
}

/// The `stats` command: opens the CelebA folder `root`, draws the distribution chart into
/// `plot` when given, and returns the text to print: [`AttributeStats::to_json`] when `json`,
/// else [`stats_table`] (and the chart's path).
///
/// # Errors
/// Reading the annotations; plotting.
pub fn celeba_stats(root: &Path, json: bool, plot: Option<&Path>) -> Result<String> {
    let stats = CelebA::open(root, &CelebAConfig::default())?.stats();
    if let Some(plot) = plot {
        plot_stats(&stats, plot, &format!("CelebA attributes ({} images)", stats.images()))?;
    }
    Ok(match (json, plot) {
        (true, _) => stats.to_json().to_string(),
        (false, None) => stats_table(&stats, root),
        (false, Some(plot)) => format!("{}\nchart: {}", stats_table(&stats, root), plot.display()),
    })
}

/// Draws the positive fraction of every attribute as a bar chart PNG (the report's Figure 1).
///
/// # Errors
/// Plotting and I/O errors.
pub fn plot_stats(stats: &AttributeStats, path: &Path, title: &str) -> Result<()> {
    let (names, fractions): (Vec<&str>, Vec<f64>) = stats.named_fractions().into_iter().unzip();
    attribute_distribution(path, &names, &fractions, title)?;
    Ok(())
}

/// `run.train.progress` relabelled for one model of a sweep or comparison.
fn progress_as(run: &AttributeRun, label: &str) -> Option<String> {
    run.train.progress.as_ref().map(|_| label.to_string())
}

fn run_splits(celeba: &CelebA, run: &AttributeRun) -> Result<Splits> {
    Ok(match run.split {
        SplitChoice::Official => celeba.official_splits(),
        SplitChoice::Ratios(r) => split::by_ratios(celeba.records().len(), r, run.train.seed)?,
    })
}

/// Which weights [`fit_and_test`] evaluates on the test side, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    /// None: sweep candidates are judged on the validation side only.
    Skip,
    /// The best validation epoch's.
    BestEpoch,
    /// The last epoch's, for fits whose validation side is inside the training side.
    LastEpoch,
}

/// Trains `run`'s model on `splits.train`, following `splits.valid`, and evaluates on
/// `splits.test` as `test` says.
fn fit_and_test(
    celeba: &Arc<CelebA>,
    run: &AttributeRun,
    splits: &Splits,
    test_with: Test,
    device: &Device,
) -> Result<(History, Option<Evaluation>)> {
    if celeba.targets() != run.attributes.as_slice() {
        return Err(Error::invalid(
            "attributes",
            format!(
                "the dataset's targets {:?} are not the run's attributes {:?}",
                celeba.targets(),
                run.attributes
            ),
        ));
    }
    let px = u32::try_from(run.size).map_err(|_| Error::invalid("size", "too large"))?;
    let loader = |indices: &[usize], train: bool| -> Result<_> {
        let mut pipeline = Compose::new().then(Resize::new(px, px));
        if train && run.augment {
            pipeline = pipeline.then(HorizontalFlip::new(0.5));
        }
        let mut l = Loader::new(Arc::clone(celeba).subset(indices.to_vec())?)
            .batch_size(run.batch_size)
            .seed(run.train.seed)
            .transform(pipeline);
        if train {
            l = l.shuffle(run.train.seed);
        }
        Ok(l)
    };
    let (train, valid, test) =
        (loader(&splits.train, true)?, loader(&splits.valid, false)?, loader(&splits.test, false)?);

    let task = match run.attributes.len() {
        1 => Task::Binary,
        _ => Task::MultiLabel(run.attributes.clone()),
    };
    let model_cfg = ZooConfig {
        task,
        input: (3, run.size, run.size),
        seed: run.train.seed,
        ..run.model.clone()
    };
    let varmap = VarMap::new();
    let built = zoo::build(&model_cfg, &varmap, device)?;
    let model_json = serde_json::to_value(&built.config)
        .map_err(|e| Error::invalid("model config", e.to_string()))?;
    let history = supervised::fit(
        &built.model,
        &varmap,
        built.trainable.clone(),
        built.normalization.clone(),
        model_json,
        &run.train,
        &train,
        &valid,
        device,
    )?;
    // Model selection on the validation side: the test set sees the best epoch only.
    if test_with == Test::Skip {
        return Ok((history, None));
    }
    let best = run.train.out_dir.join(BEST_DIR);
    if test_with == Test::BestEpoch && checkpoint::exists(&best) {
        checkpoint::load(&best, &varmap, device)?;
    }
    let eval = evaluate(&built.model, &test, &built.normalization, device)?;
    Ok((history, Some(eval)))
}

/// One block count of a [`sweep_blocks`] run, scored on the validation side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// Convolution blocks of the scratch CNN.
    pub blocks: usize,
    /// Mean validation accuracy at the best epoch (by validation accuracy); `None` when no
    /// epoch had a finite value.
    pub val_accuracy: Option<f64>,
    /// Mean validation ROC-AUC at that epoch; `None` when undefined.
    pub val_auc: Option<f64>,
    /// That epoch (from 1).
    pub best_epoch: Option<usize>,
}

/// What [`sweep_blocks`] returns (also written to `out_dir/sweep.json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// One row per block count, in the order asked for.
    pub rows: Vec<SweepRow>,
    /// The block count with the highest validation accuracy (ties: higher AUC, then the
    /// first).
    pub best_blocks: usize,
    /// Epochs the final model trained for: the best candidate's best epoch.
    pub final_epochs: usize,
    /// Test-set report of the best block count retrained on train + validation (broken down
    /// by `run.subgroup` when set).
    pub test: AttributeReport,
    /// The split's sizes `[train, valid, test]`.
    pub split_sizes: [usize; 3],
}

impl SweepReport {
    /// The validation table (`blocks | validation accuracy | validation AUC`) in Markdown,
    /// followed by the final model's test line per attribute.
    pub fn table(&self) -> String {
        let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.4}"));
        let mut out = String::from("| blocks | validation accuracy | validation AUC |\n");
        out.push_str("|---|---|---|\n");
        for r in &self.rows {
            let mark = if r.blocks == self.best_blocks { " (best)" } else { "" };
            out.push_str(&format!(
                "| {}{mark} | {} | {} |\n",
                r.blocks,
                fmt(r.val_accuracy),
                fmt(r.val_auc)
            ));
        }
        for a in &self.test.attributes {
            out.push_str(&format!(
                "\nscratch{} on train+valid, epochs {}, {}: test accuracy {:.4} (majority {:.4}), AUC {}",
                self.best_blocks,
                self.final_epochs,
                a.attribute,
                a.accuracy,
                a.majority_baseline,
                fmt(a.roc_auc)
            ));
        }
        out
    }
}

/// Parses a comma-separated list of CelebA attribute names such as `Attractive,Male`, or `all`
/// for the 40 in file order.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first unknown attribute.
pub fn parse_attributes(s: &str) -> Result<Vec<Attribute>> {
    if s.trim().eq_ignore_ascii_case("all") {
        return Ok(Attribute::ALL.to_vec());
    }
    s.split(',')
        .map(|a| {
            a.trim().parse::<Attribute>().map_err(|e| Error::invalid("attribute", e.to_string()))
        })
        .collect()
}

/// Parses a comma-separated list of block counts such as `1,2,3,4` (repeats dropped).
///
/// # Errors
/// [`Error::InvalidArgument`] for a zero or a non-number (an empty string is one).
pub fn parse_blocks(s: &str) -> Result<Vec<usize>> {
    let blocks = s
        .split(',')
        .map(|b| match b.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::invalid("block count", format!("{b:?}: use e.g. 1,2,3,4"))),
        })
        .collect::<Result<Vec<_>>>()?;
    // A repeated count would resume its own finished run: keep the first mention only.
    let mut unique = Vec::with_capacity(blocks.len());
    for b in blocks {
        if !unique.contains(&b) {
            unique.push(b);
        }
    }
    Ok(unique)
}

/// Parses an attribute name, or `none` for no attribute (e.g. no subgroup breakdown).
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown attribute.
pub fn parse_subgroup(s: &str) -> Result<Option<Attribute>> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    s.trim().parse().map(Some).map_err(|e| Error::invalid("attribute", format!("{e}")))
}

/// Parses `MODEL=FILE` (a zoo name and a weights file), as in `mobilenetv2=weights.pth`.
///
/// # Errors
/// [`Error::InvalidArgument`] without `=` or for an unknown model name.
pub fn parse_model_weights(s: &str) -> Result<(ModelName, std::path::PathBuf)> {
    let (name, file) = s
        .split_once('=')
        .ok_or_else(|| Error::invalid("weights", format!("{s:?}: use MODEL=FILE")))?;
    let name = name.trim().parse().map_err(|e| Error::invalid("model", format!("{e}")))?;
    Ok((name, file.trim().into()))
}

fn blocks_param(params: &BTreeMap<String, serde_json::Value>) -> Option<usize> {
    params.get("blocks")?.as_u64().and_then(|n| usize::try_from(n).ok())
}

/// The attractiveness report's layer sweep: trains the scratch CNN with each of `blocks` on the
/// train side (into `out_dir/blocksN`, resuming like [`run_celeba`]), scores each on the
/// validation side, then retrains the best block count on train + validation (into
/// `out_dir/final`) for the best candidate's best epoch count and reports it on the test side.
/// `run.model` is ignored but for its head settings; the table goes to `out_dir/sweep.json`.
///
/// # Errors
/// Split, loader, model, training and I/O errors; [`Error::InvalidArgument`] for no block counts.
pub fn sweep_blocks(
    celeba: Arc<CelebA>,
    run: &AttributeRun,
    blocks: &[usize],
    device: &Device,
) -> Result<SweepReport> {
    let splits = run_splits(&celeba, run)?;
    let space = vec![("blocks".to_string(), blocks.iter().map(|&b| b.into()).collect())];
    let candidate = |params: &BTreeMap<String, serde_json::Value>| {
        let n = blocks_param(params).ok_or_else(|| {
            deeprecog_train::Error::InvalidConfig("sweep candidate without a block count".into())
        })?;
        let candidate = AttributeRun {
            model: ZooConfig { name: ModelName::Scratch(n), ..run.model.clone() },
            train: TrainConfig {
                out_dir: run.train.out_dir.join(format!("blocks{n}")),
                progress: progress_as(run, &format!("scratch{n}")),
                ..run.train.clone()
            },
            ..run.clone()
        };
        fit_and_test(&celeba, &candidate, &splits, Test::Skip, device)
            .map(|(history, _)| history)
            .map_err(|e| deeprecog_train::Error::Step(Box::new(e)))
    };
    let results = search(&space, SearchStrategy::Grid, &Monitor::max("val_accuracy"), candidate)?;
    let mut rows: Vec<SweepRow> = results
        .iter()
        .filter_map(|r| {
            let record = r.best_epoch.and_then(|e| r.history.epochs.iter().find(|x| x.epoch == e));
            Some(SweepRow {
                blocks: blocks_param(&r.params)?,
                val_accuracy: r.score,
                val_auc: record.and_then(|x| x.get("val_auc")),
                best_epoch: r.best_epoch,
            })
        })
        .collect();
    rows.sort_by_key(|r| blocks.iter().position(|&b| b == r.blocks));
    // Ties in accuracy are common on small validation sets: AUC separates them, then the
    // smaller network wins by coming first.
    let key = |r: &SweepRow| (r.val_accuracy.unwrap_or(f64::MIN), r.val_auc.unwrap_or(f64::MIN));
    let best = rows
        .iter()
        .fold(None::<&SweepRow>, |best, r| match best {
            Some(b) if key(r) <= key(b) => Some(b),
            _ => Some(r),
        })
        .ok_or_else(|| Error::invalid("blocks", "no block counts"))?;
    let (best_blocks, best_epoch) = (best.blocks, best.best_epoch);
    let final_epochs = best_epoch.unwrap_or(run.train.epochs).max(1);

    // The validation side joins the training side; it stays the monitored set only because the
    // trainer needs one, and the last epoch (not the "best" on seen data) is tested.
    let final_splits = Splits {
        train: splits.train.iter().chain(&splits.valid).copied().collect(),
        valid: splits.valid.clone(),
        test: splits.test.clone(),
    };
    let final_run = AttributeRun {
        model: ZooConfig { name: ModelName::Scratch(best_blocks), ..run.model.clone() },
        train: TrainConfig {
            epochs: final_epochs,
            out_dir: run.train.out_dir.join("final"),
            progress: progress_as(run, &format!("scratch{best_blocks} (final)")),
            ..run.train.clone()
        },
        ..run.clone()
    };
    let (_, eval) = fit_and_test(&celeba, &final_run, &final_splits, Test::LastEpoch, device)?;
    let eval = eval.ok_or_else(|| Error::invalid("sweep", "no test evaluation"))?;
    let test = test_report(&celeba, run, &eval)?;
    let report = SweepReport {
        rows,
        best_blocks,
        final_epochs,
        test,
        split_sizes: [splits.train.len(), splits.valid.len(), splits.test.len()],
    };
    write_json(&run.train.out_dir.join("sweep.json"), &report)?;
    Ok(report)
}

/// One model of a [`compare_models`] run.
#[derive(Debug, Clone)]
pub struct Contender {
    /// The name used in tables, charts and as its output folder (after [`slug`]).
    pub label: String,
    /// The model, its weights and what is frozen.
    pub model: ZooConfig,
}

impl Contender {
    /// The report's two kinds of contender: `name` trained from scratch when `weights` is
    /// `None`, otherwise loaded from `weights` with the whole backbone frozen and a fresh head
    /// trained (the seed's transfer setup). Labelled e.g. `scratch3` or
    /// `mobilenetv2 (pretrained, frozen)`.
    pub fn new(name: ModelName, weights: Option<std::path::PathBuf>) -> Contender {
        let label = match weights {
            Some(_) => format!("{name} (pretrained, frozen)"),
            None => name.to_string(),
        };
        let freeze = if weights.is_some() { Freeze::Backbone } else { Freeze::None };
        Contender { label, model: ZooConfig { weights, freeze, ..ZooConfig::new(name) } }
    }

    /// One [`Contender::new`] per model of `models`, with the weights `weights` names for it
    /// (the first pair naming that model), if any.
    pub fn all(
        models: &[ModelName],
        weights: &[(ModelName, std::path::PathBuf)],
    ) -> Vec<Contender> {
        let file = |m: &ModelName| weights.iter().find(|(n, _)| n == m).map(|(_, f)| f.clone());
        models.iter().map(|m| Contender::new(*m, file(m))).collect()
    }
}

/// The accuracy difference of two models on the same test images, bootstrapped in pairs (each
/// resample draws images, and both models are scored on the same draw).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairedDifference {
    /// The attribute.
    pub attribute: String,
    /// The contender measured.
    pub model: String,
    /// The contender it is measured against (the first one).
    pub reference: String,
    /// `accuracy(model) - accuracy(reference)` with its 95% interval: `lower > 0` means the
    /// model is better beyond test-set noise.
    pub accuracy_difference: ConfidenceInterval,
}

/// One trained contender of a [`Comparison`].
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonEntry {
    /// The contender's label.
    pub label: String,
    /// Wall-clock training + evaluation time in seconds.
    pub seconds: f64,
    /// Its test report (best validation epoch).
    pub report: AttributeReport,
    /// Its per-epoch history.
    pub history: History,
}

/// What [`compare_models`] returns (also written to `out_dir/comparison.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// One entry per contender, in the order given.
    pub entries: Vec<ComparisonEntry>,
    /// Every later contender against the first, per attribute.
    pub differences: Vec<PairedDifference>,
    /// The split's sizes `[train, valid, test]`.
    pub split_sizes: [usize; 3],
}

impl Comparison {
    /// The column names of [`Comparison::difference_rows`].
    pub const DIFFERENCE_COLUMNS: [&'static str; 4] =
        ["model", "against", "attribute", "accuracy difference (95% CI)"];

    /// The split sizes, every contender's test report ([`AttributeReport::COLUMNS`]) and the
    /// paired differences ([`Comparison::DIFFERENCE_COLUMNS`]) as Markdown tables.
    pub fn table(&self) -> String {
        let rows: Vec<Vec<String>> =
            self.entries.iter().flat_map(|e| e.report.rows(&e.label)).collect();
        format!(
            "split train/valid/test: {:?}\n{}\n{}",
            self.split_sizes,
            markdown_table(&AttributeReport::COLUMNS, &rows),
            markdown_table(&Self::DIFFERENCE_COLUMNS, &self.difference_rows())
        )
    }

    /// One row per paired difference (columns [`Comparison::DIFFERENCE_COLUMNS`]).
    pub fn difference_rows(&self) -> Vec<Vec<String>> {
        self.differences
            .iter()
            .map(|d| {
                let ci = &d.accuracy_difference;
                vec![
                    d.model.clone(),
                    d.reference.clone(),
                    d.attribute.clone(),
                    format!("{:+.3} ({:+.3} to {:+.3})", ci.estimate, ci.lower, ci.upper),
                ]
            })
            .collect()
    }
}

/// A label as a folder name: lower case, runs of anything but letters and digits as one `-`.
pub fn slug(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "model".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The report's comparison (e.g. scratch CNN vs frozen ImageNet backbone): trains every
/// contender with the same split, epochs, size and seed as `run` (whose own `model` is
/// ignored), each into `out_dir/<slug of its label>` (resuming like [`run_celeba`]), tests each
/// at its best validation epoch, bootstraps every contender's accuracy difference to the first
/// on the same test images, and writes `comparison.json` and `curves.png` (validation accuracy
/// and loss of all contenders on one chart) into `out_dir`.
///
/// # Errors
/// [`Error::InvalidArgument`] without contenders or with two labels sharing a folder; the errors
/// of [`run_celeba`]; plotting and I/O errors.
pub fn compare_models(
    celeba: Arc<CelebA>,
    run: &AttributeRun,
    contenders: &[Contender],
    device: &Device,
) -> Result<Comparison> {
    if contenders.is_empty() {
        return Err(Error::invalid("models", "no models to compare"));
    }
    let folders: Vec<String> = contenders.iter().map(|c| slug(&c.label)).collect();
    for (i, f) in folders.iter().enumerate() {
        if folders[..i].contains(f) {
            return Err(Error::invalid(
                "models",
                format!("two contenders would share the folder {f:?}: give them distinct labels"),
            ));
        }
    }
    let mut entries = Vec::with_capacity(contenders.len());
    let mut evaluations = Vec::with_capacity(contenders.len());
    let mut split_sizes = [0; 3];
    for (contender, folder) in contenders.iter().zip(&folders) {
        let started = std::time::Instant::now();
        let one = AttributeRun {
            model: contender.model.clone(),
            train: TrainConfig {
                out_dir: run.train.out_dir.join(folder),
                progress: progress_as(run, &contender.label),
                ..run.train.clone()
            },
            ..run.clone()
        };
        let outcome = run_celeba(Arc::clone(&celeba), &one, device)?;
        split_sizes = outcome.split_sizes;
        evaluations.push(outcome.evaluation);
        entries.push(ComparisonEntry {
            label: contender.label.clone(),
            seconds: started.elapsed().as_secs_f64(),
            report: outcome.report,
            history: outcome.history,
        });
    }
    let mut differences = Vec::new();
    if let Some((reference, others)) = evaluations.split_first() {
        for (entry, eval) in entries.iter().skip(1).zip(others) {
            if eval.ids != reference.ids {
                return Err(Error::invalid(
                    "comparison",
                    format!(
                        "{} and {} were tested on different images",
                        entries[0].label, entry.label
                    ),
                ));
            }
            for (k, attribute) in run.attributes.iter().enumerate() {
                let (labels, ref_scores) = reference.column(k);
                let (_, scores) = eval.column(k);
                let correct = |s: &[f64]| -> Vec<f64> {
                    s.iter()
                        .zip(&labels)
                        .map(|(p, y)| f64::from(u8::from((*p >= 0.5) == *y)))
                        .collect()
                };
                let (a, b) = (correct(&scores), correct(&ref_scores));
                let accuracy_difference =
                    bootstrap_indices(labels.len(), REPORT_BOOTSTRAP, |idx| {
                        let sum: f64 = idx.iter().map(|&i| a[i] - b[i]).sum();
                        Ok(sum / idx.len() as f64)
                    })?;
                differences.push(PairedDifference {
                    attribute: attribute.name().to_string(),
                    model: entry.label.clone(),
                    reference: entries[0].label.clone(),
                    accuracy_difference,
                });
            }
        }
    }
    let curves: Vec<LearningCurve> =
        entries.iter().map(|e| e.history.curves(&e.label)[1].clone()).collect();
    let title = format!("Validation, {}", attribute_names(&run.attributes));
    learning_curves(&run.train.out_dir.join("curves.png"), &curves, &title)?;
    let comparison = Comparison { entries, differences, split_sizes };
    write_json(&run.train.out_dir.join("comparison.json"), &comparison)?;
    Ok(comparison)
}

fn attribute_names(attributes: &[Attribute]) -> String {
    attributes.iter().map(|a| a.name()).collect::<Vec<_>>().join(" + ")
}
