//! Fuzzes `deeprecog_dataset::manifest::parse_manifest` with arbitrary bytes (the parser takes
//! raw bytes, so invalid UTF-8 reaches the CSV reader as-is): it must return `Ok` or `Err`,
//! never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = deeprecog_dataset::manifest::parse_manifest(data, Path::new("fuzz/manifest.csv"));
});
