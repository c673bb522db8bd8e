//! Fuzzes `deeprecog_detector::dfdc::parse_metadata` (DFDC `metadata.json`) with arbitrary
//! bytes: it must return `Ok` or `Err`, never panic. On `Ok`, every entry must have a plain,
//! non-empty file name joined to the metadata's folder, a fake must name its original, and the
//! group must not be empty.
#![no_main]

use std::path::Path;

use deeprecog_detector::dfdc::{parse_metadata, Label};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz/part/metadata.json");
    if let Ok(entries) = parse_metadata(data, path) {
        for e in &entries {
            assert!(!e.name.is_empty() && !e.name.contains('/'));
            assert_eq!(e.file, Path::new("fuzz/part").join(&e.name));
            assert!(e.label == Label::Real || e.original.is_some());
            assert!(!e.group().is_empty());
        }
    }
});
