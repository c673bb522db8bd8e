//! Converts PyTorch weights (zip `.pth`, legacy pickle `.pth`/`.pt`, TorchScript) to safetensors
//! without PyTorch.
//!
//! ```text
//! cargo run --release --example convert -- INPUT.pth OUTPUT.safetensors
//! ```
//!
//! A training checkpoint's `state_dict` (or `model_state_dict`, `model`, `net`) entry is picked
//! automatically; tensor names stay exactly as in the state dict.

use std::process::ExitCode;

use deeprecog::cli::Args;
use deeprecog::nn::import::convert;

const USAGE: &str = "usage: convert INPUT(.pth|.pt) OUTPUT.safetensors";

fn main() -> ExitCode {
    let args = Args::from_env(&["help"]);
    if args.flag("help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let unknown = args.unknown(&["help"]);
    let [input, output] = args.positional() else {
        eprintln!("error: expected two paths; {USAGE}");
        return ExitCode::from(2);
    };
    if !unknown.is_empty() {
        eprintln!("error: unknown options {unknown:?}; {USAGE}");
        return ExitCode::from(2);
    }
    match convert(input, output) {
        Ok(s) => {
            let picked = s
                .picked
                .map(|k| format!(" (from the checkpoint's {k:?} entry)"))
                .unwrap_or_default();
            println!(
                "{output}: {} tensors, {} parameters, {} bytes, from a {:?} checkpoint{picked}",
                s.tensors, s.elements, s.bytes, s.format
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
