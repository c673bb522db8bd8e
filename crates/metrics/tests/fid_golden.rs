//! FID at d = 256 on the bench's statistics against numpy, scipy and the former Jacobi
//! implementation (`tests/golden/fid_xorshift.py` rebuilds the statistics and prints the
//! references).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/fid_stats.rs"]
mod fid_stats;

use deeprecog_metrics::fid::frechet_distance;
use fid_stats::xorshift_stats;

#[test]
fn fid_d256_matches_jacobi_and_numpy() {
    let (a, b) = (xorshift_stats(256, 1), xorshift_stats(256, 2));
    let fid = frechet_distance(&a, &b).unwrap();
    // Printed by the previous cyclic-Jacobi implementation on the same statistics
    // (`FID_BENCH_ONCE=256 cargo bench --bench fid` before the change).
    let jacobi = 57.5460167226701;
    // numpy's eigh and scipy's sqrtm on the same statistics, rebuilt in float64 by
    // `tests/golden/fid_xorshift.py`.
    let numpy = 57.5460167226702;
    let sqrtm = 57.54601672267013;
    for (want, what) in [(jacobi, "Jacobi"), (numpy, "numpy"), (sqrtm, "sqrtm")] {
        let rel = (fid - want).abs() / want;
        eprintln!("d = 256 FID {fid} vs {what} {want}: relative {rel:.1e}");
        assert!(rel <= 1e-12, "{what}: {fid} vs {want}");
    }
}
