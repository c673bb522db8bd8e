//! Regenerates `data-fixtures/` (byte for byte, from the settings in `deeprecog::fixtures`).
//!
//! ```text
//! cargo run --release --example make_fixtures [-- OUT_DIR]
//! ```

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

/// Regenerates the committed data fixtures byte for byte.
#[derive(Parser)]
struct Cli {
    /// Where to write them (celeba/ and deepfakes/ inside).
    #[arg(default_value = "data-fixtures", value_name = "OUT_DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let out = Cli::parse().out;
    let started = Instant::now();
    match deeprecog::fixtures::generate(&out) {
        Ok((faces, fakes)) => {
            println!("{faces:?}");
            println!("{fakes:?}");
            println!("wrote {} in {:.1} s", out.display(), started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
