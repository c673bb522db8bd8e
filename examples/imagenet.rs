//! Classifies a photo with torchvision's ImageNet weights and prints the top classes.
//!
//! ```text
//! scripts/fetch-assets.sh
//! cargo run --release --example imagenet -- --model mobilenetv2 \
//!     --weights assets/mobilenet_v2-b0353104.pth --image assets/grace_hopper.jpg \
//!     [--top 5] [--classes FILE]
//! ```
//!
//! `--weights` takes the torchvision `.pth` directly or its `.safetensors` conversion (`convert`
//! example). Preprocessing is torchvision's evaluation preset: shorter side to 256, centre crop
//! 224, then the normalisation of the weights' `PretrainedSpec` (ImageNet mean / std). The class
//! names ship with the library (`deeprecog::classifiers::IMAGENET_CLASSES`, torchvision's
//! order); `--classes` reads another list instead.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use clap::Parser;
use deeprecog::classifiers::{Backbone, MobileNetV2, MobileNetV2Config, IMAGENET_CLASSES};
use deeprecog::dataset::transforms::{to_chw, ImageNetEval};
use deeprecog::dataset::Image;
use deeprecog::nn::import::{load_pytorch, load_safetensors};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

/// Classifies a photo with torchvision's ImageNet weights and prints the top classes.
#[derive(Parser)]
struct Cli {
    /// The architecture (mobilenetv2).
    #[arg(long, value_parser = ["mobilenetv2"])]
    model: String,
    /// The weights: torchvision's .pth or its .safetensors conversion.
    #[arg(long, value_name = "FILE")]
    weights: String,
    /// The photo.
    #[arg(long, value_name = "FILE")]
    image: String,
    /// How many classes to print.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Other class names, one per line in logit order (default: the ImageNet-1k names that
    /// ship with the library).
    #[arg(long, value_name = "FILE")]
    classes: Option<String>,
}

fn run(args: Cli) -> AnyResult<()> {
    let Cli { model: model_name, weights, image, top, classes } = args;

    let dev = Device::Cpu;
    let mut tensors: HashMap<String, Tensor> = if weights.ends_with(".safetensors") {
        load_safetensors(&weights, &dev)?
    } else {
        load_pytorch(&weights, &dev)?
    };
    // A BatchNorm step counter, not a weight.
    tensors.retain(|name, _| !name.ends_with("num_batches_tracked"));
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
    let model = MobileNetV2::new(&MobileNetV2Config::default(), vb)?;
    let spec = model.pretrained_spec();

    let text = match &classes {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?),
        None => None,
    };
    let names: Vec<&str> = match &text {
        Some(text) => text.lines().collect(),
        None => IMAGENET_CLASSES.to_vec(),
    };
    if names.len() != spec.num_classes {
        let source = classes.as_deref().unwrap_or("IMAGENET_CLASSES");
        return Err(
            format!("{source}: {} names for {} classes", names.len(), spec.num_classes).into()
        );
    }

    let (_, crop, _) = spec.input_size;
    let img = ImageNetEval { resize: 256, crop: crop as u32 }
        .preprocess(&Image::open(Path::new(&image))?)?;
    let x = Tensor::from_vec(to_chw(&img), (1, 3, crop, crop), &dev)?;
    let logits = model.forward_t(&spec.normalization.apply(&x)?, false)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits)?.squeeze(0)?.to_vec1::<f32>()?;

    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    println!("{image} ({model_name}):");
    for &i in order.iter().take(top) {
        println!("{:>4}  {:.4}  {}", i, probs[i], names[i]);
    }
    Ok(())
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let Err(e) = run(Cli::parse()) else { return ExitCode::SUCCESS };
    eprintln!("error: {e}");
    ExitCode::FAILURE
}
