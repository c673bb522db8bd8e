//! Fuzzes `deeprecog_metrics::predictions::parse_csv` (the reader behind `read_csv`, used by
//! `examples/evaluate.rs`) with arbitrary bytes (lossy UTF-8): it must return `Ok` or `Err`,
//! never panic. On `Ok`, the parallel columns must have one entry per row.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = deeprecog_metrics::predictions::parse_csv(&text, Path::new("fuzz/predictions.csv")) {
        let n = p.ids.len();
        assert!(n > 0);
        assert_eq!(p.labels.len(), n);
        assert_eq!(p.scores.len(), n);
        assert!(p.scores.iter().all(|s| (0.0..=1.0).contains(s)));
        assert!(p.videos.as_ref().is_none_or(|v| v.len() == n));
        assert!(p.groups.as_ref().is_none_or(|g| g.len() == n));
    }
});
