//! Fuzzes `deeprecog_detector::prepare::parse_manifest` (the face-crop manifest that
//! `prepare` writes and resumes from) with arbitrary bytes: it must return `Ok` or `Err`, never
//! panic. On `Ok`, text columns must be non-empty and every number finite, the time and the box
//! size not negative.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz/manifest.csv");
    if let Ok(rows) = deeprecog_detector::prepare::parse_manifest(data, path) {
        for r in &rows {
            assert!(!r.path.is_empty() && !r.group.is_empty() && !r.source.is_empty());
            assert!(r.time_s.is_finite() && r.time_s >= 0.0);
            let b = r.bbox;
            assert!(b.x.is_finite() && b.y.is_finite() && r.score.is_finite());
            assert!(
                b.width.is_finite() && b.width >= 0.0 && b.height.is_finite() && b.height >= 0.0
            );
        }
    }
});
