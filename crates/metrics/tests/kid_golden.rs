//! KID against two independent NumPy implementations (torch-fidelity's and clean-fid's
//! formulas, and the U-statistic written from its definition): `tests/golden/kid_reference.py`
//! rebuilds the same xorshift features and wrote `tests/golden/kid_reference.json`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use deeprecog_metrics::kid::{kernel_inception_distance, mmd2_unbiased, KidConfig};

const REFERENCE: &str = include_str!("golden/kid_reference.json");
const D: usize = 16;

/// The 64-bit xorshift stream of `tests/common/fid_stats.rs` (and of the script).
fn xorshift(count: usize, seed: u64) -> Vec<f64> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed.wrapping_mul(0xD134_2543_DE82_EF95);
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect()
}

fn features() -> (Vec<f64>, Vec<f64>) {
    let x = xorshift(37 * D, 1);
    let y = xorshift(29 * D, 2).iter().map(|v| v * 1.2 + 0.1).collect();
    (x, y)
}

fn reference(key: &str) -> f64 {
    let v: serde_json::Value = serde_json::from_str(REFERENCE).unwrap();
    v[key].as_f64().unwrap()
}

fn assert_close(got: f64, want: f64, rel: f64, what: &str) {
    let err = (got - want).abs() / want.abs();
    eprintln!("{what}: {got} vs numpy {want}: relative {err:.1e}");
    assert!(err <= rel, "{what}: {got} vs {want}");
}

#[test]
fn full_set_mmd_matches_numpy() {
    let (x, y) = features();
    assert_close(
        mmd2_unbiased(&x, &y, D).unwrap(),
        reference("mmd2_unequal"),
        1e-12,
        "unequal sizes",
    );
    let x29 = &x[..29 * D];
    let equal = mmd2_unbiased(x29, &y, D).unwrap();
    assert_close(equal, reference("mmd2_equal_torch_fidelity"), 1e-12, "torch-fidelity");
    assert_close(equal, reference("mmd2_equal_clean_fid"), 1e-12, "clean-fid");
    // Subsets as large as the sets hold every row: KID is the full-set value for any seed.
    for seed in [0, 7] {
        let kid = kernel_inception_distance(
            x29,
            &y,
            D,
            &KidConfig { subsets: 3, subset_size: 1000, seed },
        )
        .unwrap();
        assert_eq!(kid.subset_size, 29);
        assert_close(kid.mean, reference("mmd2_equal_torch_fidelity"), 1e-12, "KID, full subsets");
        // f32 features (what a network returns) go through the same f64 arithmetic.
        let x32: Vec<f32> = x29.iter().map(|&v| v as f32).collect();
        let y32: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        let kid32 = kernel_inception_distance(
            &x32,
            &y32,
            D,
            &KidConfig { subsets: 1, subset_size: 1000, seed },
        )
        .unwrap();
        assert_close(kid32.mean, kid.mean, 1e-5, "KID of f32 features");
    }
}

/// A subset's unbiased MMD² is an unbiased estimate of the full sets' U-statistic, so the
/// mean over many seeded subsets converges to NumPy's unequal-size value.
#[test]
fn subset_average_converges_to_the_full_set_value() {
    let (x, y) = features();
    let config = KidConfig { subsets: 4000, subset_size: 8, seed: 5 };
    let kid = kernel_inception_distance(&x, &y, D, &config).unwrap();
    let want = reference("mmd2_unequal");
    let se = kid.std / (config.subsets as f64).sqrt();
    eprintln!(
        "4000 subsets of 8: mean {} (std {}, standard error {se:.2e}) vs full set {want}",
        kid.mean, kid.std
    );
    assert!((kid.mean - want).abs() < 4.0 * se, "{} vs {want} (se {se})", kid.mean);
}

/// Two samples of one distribution: KID near zero (unbiased), the FID-like bias absent.
#[test]
fn identical_distributions_give_near_zero() {
    let a = xorshift(200 * D, 11);
    let b = xorshift(200 * D, 12);
    let kid =
        kernel_inception_distance(&a, &b, D, &KidConfig { subsets: 50, subset_size: 100, seed: 1 })
            .unwrap();
    let apart: Vec<f64> = b.iter().map(|v| v + 0.3).collect();
    let far = kernel_inception_distance(
        &a,
        &apart,
        D,
        &KidConfig { subsets: 50, subset_size: 100, seed: 1 },
    )
    .unwrap();
    eprintln!(
        "same distribution: {:.2e} +- {:.1e}; shifted by 0.3: {:.3}",
        kid.mean, kid.std, far.mean
    );
    assert!(kid.mean.abs() < 3.0 * kid.std.max(1e-6), "{kid:?}");
    assert!(far.mean > 100.0 * kid.mean.abs(), "{far:?}");
}
