//! Fuzzes `deeprecog_dataset::celeba::parse_attributes` with arbitrary bytes (lossy UTF-8): it must
//! return `Ok` or `Err`, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = deeprecog_dataset::celeba::parse_attributes(&text, Path::new("fuzz/celeba_attributes.txt"));
});
