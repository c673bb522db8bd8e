//! Fuzzes `deeprecog_dataset::celeba::parse_identity` with arbitrary bytes (lossy UTF-8): it must
//! return `Ok` or `Err`, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = deeprecog_dataset::celeba::parse_identity(&text, Path::new("fuzz/celeba_identity.txt"));
});
