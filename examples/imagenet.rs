//! Classifies a photo with torchvision's ImageNet weights and prints the top classes.
//!
//! ```text
//! scripts/fetch-assets.sh
//! cargo run --release --example imagenet -- --model mobilenetv2 \
//!     --weights assets/mobilenet_v2-b0353104.pth --image assets/grace_hopper.jpg \
//!     [--top 5] [--classes assets/imagenet_classes.txt]
//! ```
//!
//! `--weights` takes the torchvision `.pth` directly or its `.safetensors` conversion (`convert`
//! example). Preprocessing is torchvision's evaluation preset: shorter side to 256, centre crop
//! 224, ImageNet mean / std.

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder};
use deeprecog::classifiers::{Backbone, MobileNetV2, MobileNetV2Config};
use deeprecog::cli::Args;
use deeprecog::dataset::transforms::{to_chw, ImageNetEval, Normalization};
use deeprecog::dataset::Image;
use deeprecog::nn::import::{load_pytorch, load_safetensors};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: imagenet --model mobilenetv2 --weights FILE(.safetensors|.pth) \
                     --image FILE [--top 5] [--classes assets/imagenet_classes.txt]";

fn run(args: &Args) -> AnyResult<()> {
    let model_name: String = args.require("model")?;
    let weights: String = args.require("weights")?;
    let image: String = args.require("image")?;
    let top: usize = args.get("top")?.unwrap_or(5);
    let classes = args.value("classes").unwrap_or("assets/imagenet_classes.txt");
    if model_name != "mobilenetv2" {
        return Err(format!("unknown --model {model_name:?} (known: mobilenetv2)").into());
    }

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

    let names = std::fs::read_to_string(classes)
        .map_err(|e| format!("{classes}: {e} (scripts/fetch-assets.sh writes it)"))?;
    let names: Vec<&str> = names.lines().collect();
    if names.len() != spec.num_classes {
        return Err(
            format!("{classes}: {} names for {} classes", names.len(), spec.num_classes).into()
        );
    }

    let (_, crop, _) = spec.input_size;
    let img = ImageNetEval { resize: 256, crop: crop as u32 }
        .preprocess(&Image::open(Path::new(&image))?)?;
    let x = Tensor::from_vec(to_chw(&img), (1, 3, crop, crop), &dev)?;
    let norm = Normalization::MeanStd { mean: spec.mean.to_vec(), std: spec.std.to_vec() };
    let logits = model.forward_t(&norm.apply(&x)?, false)?;
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
    let args = Args::from_env(&["help"]);
    if args.flag("help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let unknown = args.unknown(&["help", "model", "weights", "image", "top", "classes"]);
    if !unknown.is_empty() || !args.positional().is_empty() {
        eprintln!("error: unexpected arguments {unknown:?} {:?}; {USAGE}", args.positional());
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
