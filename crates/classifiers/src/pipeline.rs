//! The attractiveness pipeline end to end on a CelebA folder: split, load, build a model from
//! the [`crate::zoo`] (by name), train, reload the best epoch, evaluate on the test side and write
//! `report.json` (per attribute, exact match, subgroup breakdown by `Male`).

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::Device;
use candle_nn::VarMap;
use deeprecog_attributes::Attribute;
use deeprecog_dataset::celeba::CelebA;
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::split::{self, Ratios, Splits};
use deeprecog_dataset::transforms::{Compose, HorizontalFlip, Resize};
use deeprecog_dataset::DatasetExt;
use deeprecog_nn::checkpoint;

use crate::report::{attribute_report, AttributeReport};
use crate::train::{evaluate, History, Result, TrainConfig, TrainError, Trainer};
use crate::zoo::{self, ZooConfig};
use crate::Task;

/// Which split of CelebA to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SplitChoice {
    /// `list_eval_partition.txt`.
    Official,
    /// A seeded random split with these fractions.
    Ratios(Ratios),
}

impl std::str::FromStr for SplitChoice {
    type Err = TrainError;
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
            _ => Err(TrainError::Config(format!("split {s:?}: use official or e.g. 60/20/20"))),
        }
    }
}

/// One attribute-classifier run.
#[derive(Debug, Clone)]
pub struct AttributeRun {
    /// The attributes to predict (one: binary; several: independent sigmoids).
    pub attributes: Vec<Attribute>,
    /// The model (its `task` and `input` are set from `attributes` and `size`).
    pub model: ZooConfig,
    /// Training settings (its normalisation is set to what the model expects).
    pub train: TrainConfig,
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
    if celeba.targets() != run.attributes.as_slice() {
        return Err(TrainError::Config(format!(
            "the dataset's targets {:?} are not the run's attributes {:?}",
            celeba.targets(),
            run.attributes
        )));
    }
    let splits: Splits = match run.split {
        SplitChoice::Official => celeba.official_splits(),
        SplitChoice::Ratios(r) => split::by_ratios(celeba.records().len(), r, run.train.seed)?,
    };
    let px = u32::try_from(run.size).map_err(|_| TrainError::Config("size too large".into()))?;
    let loader = |indices: &[usize], train: bool| -> Result<_> {
        let mut pipeline = Compose::new().then(Resize::new(px, px));
        if train && run.augment {
            pipeline = pipeline.then(HorizontalFlip::new(0.5));
        }
        let mut l = Loader::new(Arc::clone(&celeba).subset(indices.to_vec())?)
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
    let model_cfg = ZooConfig { task, input: (3, run.size, run.size), ..run.model.clone() };
    let varmap = VarMap::new();
    let built = zoo::build(&model_cfg, &varmap, device)?;
    let cfg = TrainConfig {
        normalization: built.normalization.clone(),
        model_config: built.config.clone(),
        ..run.train.clone()
    };
    let trainer = Trainer::new(cfg).device(device.clone());
    let history = trainer.fit(&built.model, built.trainable.clone(), &varmap, &train, &valid)?;
    // Model selection on the validation side: the test set sees the best epoch only.
    if checkpoint::exists(trainer.best_dir()) {
        checkpoint::load(trainer.best_dir(), &varmap, device)?;
    }
    let eval = evaluate(&built.model, &test, &trainer.config().normalization, device)?;
    let by_file: HashMap<&str, bool> = celeba
        .records()
        .iter()
        .map(|r| (r.file.as_str(), r.attributes.contains(Attribute::Male)))
        .collect();
    let groups: Vec<String> = eval
        .ids
        .iter()
        .map(|id| match by_file.get(id.as_str()) {
            Some(true) => "Male".to_string(),
            Some(false) => "not Male".to_string(),
            None => "unknown".to_string(),
        })
        .collect();
    let report = attribute_report(&eval, &run.attributes, Some(("Male", &groups)))?;
    let path = run.train.out_dir.join("report.json");
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| TrainError::Io { path: path.clone(), reason: e.to_string() })?;
    checkpoint::write_atomically(&path, &json)?;
    Ok(AttributeOutcome {
        history,
        report,
        split_sizes: [splits.train.len(), splits.valid.len(), splits.test.len()],
    })
}
