//! Converts PyTorch weights (zip `.pth`, legacy pickle `.pth`/`.pt`, TorchScript) to safetensors
//! without PyTorch.
//!
//! ```text
//! cargo run --release --example convert -- INPUT.pth OUTPUT.safetensors
//! ```
//!
//! A training checkpoint's `state_dict` (or `model_state_dict`, `model`, `net`) entry is picked
//! automatically; tensor names stay exactly as in the state dict.

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use deeprecog::nn::import::convert;

/// Converts PyTorch weights (.pth zip or legacy pickle, TorchScript .pt) to safetensors.
#[derive(Parser)]
struct Cli {
    /// The PyTorch file.
    #[arg(value_name = "INPUT(.pth|.pt)")]
    input: PathBuf,
    /// The safetensors file to write.
    #[arg(value_name = "OUTPUT.safetensors")]
    output: PathBuf,
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let Cli { input, output } = Cli::parse();
    match convert(&input, &output) {
        Ok(s) => {
            let picked = s
                .picked
                .map(|k| format!(" (from the checkpoint's {k:?} entry)"))
                .unwrap_or_default();
            println!(
                "{}: {} tensors, {} parameters, {} bytes, from a {:?} checkpoint{picked}",
                output.display(),
                s.tensors,
                s.elements,
                s.bytes,
                s.format
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
