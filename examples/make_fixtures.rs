//! Regenerates `data-fixtures/` (byte for byte, from the settings in `deeprecog::fixtures`).
//!
//! ```text
//! cargo run --release --example make_fixtures [-- OUT_DIR]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let out: PathBuf = std::env::args().nth(1).unwrap_or_else(|| "data-fixtures".into()).into();
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
