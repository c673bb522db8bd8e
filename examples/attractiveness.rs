//! The attractiveness pipeline (CelebA attribute recognition) on the command line: `stats`,
//! `train`, `sweep`, `compare` (see `--help` of each, and the README). The work is done by
//! [`deeprecog::pipelines::attractiveness`].

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser};
use deeprecog::attributes::Attribute;
use deeprecog::classifiers::supervised::TrainConfig;
use deeprecog::classifiers::zoo::{ModelName, ZooConfig};
use deeprecog::classifiers::Freeze;
use deeprecog::dataset::celeba::{CelebA, CelebAConfig};
use deeprecog::nn::device::{select, DeviceChoice};
use deeprecog::nn::optim::OptimizerConfig;
use deeprecog::pipelines::attractiveness::{self as pipeline, AttributeRun, Contender};
use deeprecog::pipelines::attractiveness::{parse_model_weights, parse_subgroup};

type List<T> = Vec<T>; // an alias: clap hands the whole comma-separated value to the parser
type Subgroup = Option<Attribute>; // an alias: clap hands `none` to the parser
type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;
type Data = Arc<CelebA>;

/// CelebA attribute classifiers: statistics, training, the layer sweep, model comparison.
#[derive(Parser)]
enum Cli {
    /// Every attribute's positive count and fraction, most balanced first.
    Stats {
        /// The CelebA folder (img_align_celeba/ and the annotation files).
        #[arg(long, value_name = "DIR")]
        celeba: PathBuf,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Also draw the distribution chart into this PNG.
        #[arg(long, value_name = "FILE")]
        plot: Option<PathBuf>,
    },
    /// Train one model: checkpoints, history.json, curves.png, report.json (resumes from --out).
    Train {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, default_value = "scratch3", value_name = "NAME", help = models_help())]
        model: ModelName,
        /// Start from these weights (.safetensors or PyTorch .pth).
        #[arg(long, value_name = "FILE")]
        weights: Option<PathBuf>,
        /// Freeze the first N backbone stages.
        #[arg(long, value_name = "N")]
        freeze: Option<usize>,
    },
    /// The layer sweep: scratchN per block count, the best retrained on train + valid and tested.
    Sweep {
        #[command(flatten)]
        run: RunArgs,
        /// Block counts to try.
        #[arg(long, value_parser = pipeline::parse_blocks, value_name = "1,2,3,4")]
        blocks: List<usize>,
    },
    /// Models at equal epochs, with paired bootstrap differences to the first.
    Compare {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, required = true, value_delimiter = ',', help = models_help())]
        models: Vec<ModelName>,
        /// Pretrained weights per model, as MODEL=FILE,.. (that model's backbone is then frozen).
        #[arg(long, value_delimiter = ',', value_parser = parse_model_weights)]
        weights: Vec<(ModelName, PathBuf)>,
    },
}

/// The settings `train`, `sweep` and `compare` share.
#[derive(Args)]
struct RunArgs {
    /// The CelebA folder (img_align_celeba/ and the annotation files).
    #[arg(long, value_name = "DIR")]
    celeba: PathBuf,
    /// Attributes to predict, comma-separated (several: independent sigmoids), or all.
    #[arg(long, default_value = "Attractive", value_parser = pipeline::parse_attributes)]
    attributes: List<Attribute>,
    /// The attribute whose two values split the test report, or none.
    #[arg(long, default_value = "Male", value_parser = parse_subgroup, value_name = "ATTRIBUTE")]
    subgroup: Subgroup,
    /// Epochs in total (counting those before a resume).
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// Images are resized to PX x PX.
    #[arg(long, default_value_t = 128, value_name = "PX")]
    size: usize,
    /// Samples per batch.
    #[arg(long = "batch", default_value_t = 32, value_name = "BATCH")]
    batch_size: usize,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// official, or seeded train/valid/test percentages such as 60/20/20.
    #[arg(long, default_value = "official")]
    split: pipeline::SplitChoice,
    /// No random horizontal flips on the training side.
    #[arg(long = "no-augment", action = clap::ArgAction::SetFalse)]
    augment: bool,
    /// The run folder [default: runs/attractiveness, runs/sweep, runs/compare].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn models_help() -> String {
    format!("Models of the zoo: {}", ModelName::ALL_NAMES.join(", "))
}

impl RunArgs {
    /// The run (progress under `label`, outputs in --out or `runs/<cmd>`) and the CelebA
    /// folder opened with its attributes as targets.
    fn open(self, model: ZooConfig, cmd: &str, label: &str) -> AnyResult<(AttributeRun, Data)> {
        let celeba = CelebA::open(&self.celeba, &CelebAConfig::targets(self.attributes.clone()))?;
        let train = TrainConfig {
            epochs: self.epochs,
            optimizer: OptimizerConfig::default().with_lr(self.lr),
            out_dir: self.out.unwrap_or_else(|| format!("runs/{cmd}").into()),
            progress: Some(label.to_string()),
            ..Default::default()
        };
        let RunArgs { attributes, subgroup, size, batch_size, split, augment, .. } = self;
        let run =
            AttributeRun { attributes, model, train, subgroup, size, batch_size, split, augment };
        Ok((run, Arc::new(celeba)))
    }
}

fn run(cli: Cli) -> AnyResult<()> {
    let scratch3 = || ZooConfig::new(ModelName::Scratch(3));
    let device = || select(DeviceChoice::Auto);
    let out = match cli {
        Cli::Stats { celeba, json, plot } => {
            println!("{}", pipeline::celeba_stats(&celeba, json, plot.as_deref())?);
            return Ok(());
        }
        Cli::Train { run, model, weights, freeze } => {
            let freeze = freeze.map_or(Freeze::None, Freeze::FirstLayers);
            let zoo = ZooConfig { weights, freeze, ..ZooConfig::new(model) };
            let (run, celeba) = run.open(zoo, "attractiveness", &model.to_string())?;
            println!("{}", pipeline::run_celeba(celeba, &run, &device()?)?.summary());
            run.train.out_dir
        }
        Cli::Sweep { run, blocks } => {
            let (run, celeba) = run.open(scratch3(), "sweep", "sweep")?;
            let report = pipeline::sweep_blocks(celeba, &run, &blocks, &device()?)?;
            println!("split train/valid/test: {:?}\n{}", report.split_sizes, report.table());
            run.train.out_dir
        }
        Cli::Compare { run, models, weights } => {
            let contenders = Contender::all(&models, &weights);
            let (run, celeba) = run.open(scratch3(), "compare", "compare")?;
            let comparison = pipeline::compare_models(celeba, &run, &contenders, &device()?)?;
            println!("{}", comparison.table());
            run.train.out_dir
        }
    };
    println!("outputs in {}", out.display());
    Ok(())
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let Err(e) = run(Cli::parse()) else { return ExitCode::SUCCESS };
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
