//! Analytic and property tests: FID identities, bootstrap, subgroups, predictions parsing,
//! temperature scaling and agreement of the O(n log n) AUC with the O(n^2) definition.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use deeprecog_metrics::binary::{self, BinaryConfusion};
use deeprecog_metrics::bootstrap::{bootstrap_ci, BootstrapConfig};
use deeprecog_metrics::calibration::{sigmoid, TemperatureScaling};
use deeprecog_metrics::fid::{frechet_distance, sqrt_psd, symmetric_eigen, FeatureStats};
use deeprecog_metrics::predictions::parse_csv;
use deeprecog_metrics::subgroup::subgroup_breakdown;
use deeprecog_metrics::video::{aggregate_by_video, Aggregation};
use deeprecog_metrics::Error;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_features(rng: &mut ChaCha8Rng, n: usize, d: usize, shift: f64) -> Vec<f64> {
    // Correlated features: x = z A + shift, with a fixed, well-conditioned mixing matrix A
    // (near-singular covariances make tr sqrt() ill-conditioned for any algorithm).
    let a: Vec<f64> = (0..d * d)
        .map(|i| f64::from(u8::from(i / d == i % d)) + ((i * 37 % 11) as f64 - 5.0) / 25.0)
        .collect();
    let mut out = Vec::with_capacity(n * d);
    for _ in 0..n {
        let z: Vec<f64> = (0..d).map(|_| rng.random::<f64>() * 2.0 - 1.0).collect();
        for j in 0..d {
            out.push((0..d).map(|k| z[k] * a[k * d + j]).sum::<f64>() + shift);
        }
    }
    out
}

#[test]
fn fid_identical_sets_is_zero() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = random_features(&mut rng, 200, 8, 0.0);
    let a = FeatureStats::from_rows(&x, 8).unwrap();
    let fid = frechet_distance(&a, &a).unwrap();
    let scale: f64 = (0..8).map(|i| a.covariance[i * 8 + i]).sum();
    assert!(fid <= 1e-12 * scale, "fid {fid} for identical statistics");
}

#[test]
fn fid_shifted_mean_adds_squared_shift() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let d = 6;
    let x = random_features(&mut rng, 300, d, 0.0);
    let a = FeatureStats::from_rows(&x, d).unwrap();
    let shifted: Vec<f64> = x.iter().map(|v| v + 0.5).collect();
    let b = FeatureStats::from_rows(&shifted, d).unwrap();
    // Same covariance, mean moved by 0.5 in every coordinate: d * 0.25.
    let fid = frechet_distance(&a, &b).unwrap();
    assert!((fid - d as f64 * 0.25).abs() < 1e-10, "{fid}");
}

#[test]
fn fid_is_symmetric_and_matches_diagonal_closed_form() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let a = FeatureStats::from_rows(&random_features(&mut rng, 150, 5, 0.0), 5).unwrap();
    let b = FeatureStats::from_rows(&random_features(&mut rng, 170, 5, 0.3), 5).unwrap();
    let ab = frechet_distance(&a, &b).unwrap();
    let ba = frechet_distance(&b, &a).unwrap();
    assert!((ab - ba).abs() <= 1e-12 * ab.max(1.0), "{ab} vs {ba}");
    assert!(ab > 0.1);

    // Diagonal covariances: sum (m1 - m2)^2 + (s1 - s2)^2 over standard deviations.
    let p = FeatureStats::from_parts(vec![0.0, 1.0, 2.0], diag(&[1.0, 4.0, 9.0]), 10).unwrap();
    let q = FeatureStats::from_parts(vec![1.0, 1.0, 0.0], diag(&[4.0, 4.0, 1.0]), 10).unwrap();
    let want = (1.0 + 0.0 + 4.0) + (1.0 + 0.0 + 4.0);
    assert!((frechet_distance(&p, &q).unwrap() - want).abs() < 1e-12);
    // A singular covariance is fine: no eps fudge is needed.
    let r = FeatureStats::from_parts(vec![0.0; 3], diag(&[0.0, 0.0, 1.0]), 10).unwrap();
    let fid = frechet_distance(&r, &r).unwrap();
    assert!(fid.abs() < 1e-15);
    let bad = FeatureStats::from_parts(vec![0.0; 2], diag(&[1.0, 1.0]), 10).unwrap();
    assert!(frechet_distance(&p, &bad).is_err());
}

fn diag(v: &[f64]) -> Vec<f64> {
    let d = v.len();
    let mut m = vec![0.0; d * d];
    for (i, &x) in v.iter().enumerate() {
        m[i * d + i] = x;
    }
    m
}

#[test]
fn eigen_and_sqrt_reconstruct() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let d = 7;
    let s = FeatureStats::from_rows(&random_features(&mut rng, 50, d, 0.0), d).unwrap();
    let eig = symmetric_eigen(&s.covariance, d).unwrap();
    for i in 0..d {
        for j in 0..d {
            let v: f64 = (0..d)
                .map(|k| eig.vectors[i * d + k] * eig.values[k] * eig.vectors[j * d + k])
                .sum();
            assert!((v - s.covariance[i * d + j]).abs() < 1e-12, "reconstruction");
        }
    }
    let r = sqrt_psd(&s.covariance, d).unwrap();
    for i in 0..d {
        for j in 0..d {
            let v: f64 = (0..d).map(|k| r[i * d + k] * r[k * d + j]).sum();
            assert!((v - s.covariance[i * d + j]).abs() < 1e-12, "sqrt^2");
        }
    }
}

#[test]
fn fast_auc_equals_pairwise_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for trial in 0..20 {
        let n = 50 + trial * 7;
        let y: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < 0.4).collect();
        // Few distinct values: many ties.
        let s: Vec<f64> = (0..n).map(|_| (rng.random::<f64>() * 6.0).floor()).collect();
        if y.iter().all(|&v| v) || y.iter().all(|&v| !v) {
            continue;
        }
        let mut wins = 0.0;
        let mut pairs = 0.0;
        for i in 0..n {
            for j in 0..n {
                if y[i] && !y[j] {
                    pairs += 1.0;
                    wins += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        let auc = binary::roc_auc(&y, &s).unwrap();
        assert!((auc - wins / pairs).abs() < 1e-15, "trial {trial}");
    }
}

#[test]
fn undefined_cases_are_errors_not_nan() {
    assert!(matches!(binary::roc_auc(&[], &[]), Err(Error::Empty { .. })));
    assert!(matches!(binary::roc_auc(&[true], &[0.1, 0.2]), Err(Error::LengthMismatch { .. })));
    assert!(matches!(
        binary::roc_auc(&[true, false], &[f64::NAN, 0.2]),
        Err(Error::InvalidValue { index: 0, .. })
    ));
    assert!(matches!(binary::log_loss(&[true], &[1.5]), Err(Error::InvalidValue { .. })));
    assert!(binary::log_loss_with_eps(&[true], &[0.5], 0.0).is_err());
    let c = BinaryConfusion::from_predictions(&[false, false], &[false, false]).unwrap();
    assert_eq!(c.precision(), None);
    assert_eq!(c.recall(), None);
    assert_eq!(c.f1(), None);
    assert_eq!(c.specificity(), Some(1.0));
    assert_eq!(c.f_beta(-1.0), None);
}

#[test]
fn extreme_log_loss_is_finite() {
    let eps = binary::LOG_LOSS_EPS;
    let ll = binary::log_loss(&[true, false], &[0.0, 1.0]).unwrap();
    assert!((ll + eps.ln()).abs() < 1e-12, "{ll}");
    let dfdc = binary::log_loss_with_eps(&[true], &[0.0], binary::DFDC_LOG_LOSS_EPS).unwrap();
    assert!((dfdc - 34.538776394910684).abs() < 1e-12, "{dfdc}");
}

#[test]
fn bootstrap_is_seeded_and_covers_the_estimate() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let n = 2000;
    let y: Vec<bool> = (0..n).map(|_| rng.random::<f64>() < 0.5).collect();
    let s: Vec<f64> = y
        .iter()
        .map(|&v| (if v { 0.6 } else { 0.4 } + 0.3 * (rng.random::<f64>() - 0.5)).clamp(0.0, 1.0))
        .collect();
    let cfg = BootstrapConfig { resamples: 500, confidence: 0.95, seed: 42 };
    let acc = |y: &[bool], s: &[f64]| binary::accuracy(y, s, 0.5);
    let a = bootstrap_ci(&y, &s, cfg, acc).unwrap();
    let b = bootstrap_ci(&y, &s, cfg, acc).unwrap();
    assert_eq!(a, b, "same seed, same interval");
    let c = bootstrap_ci(&y, &s, BootstrapConfig { seed: 7, ..cfg }, acc).unwrap();
    assert_ne!(a, c, "another seed, another interval");
    assert!(a.lower <= a.estimate && a.estimate <= a.upper);
    // Binomial standard error: the 95% width is about 2 * 1.96 * sqrt(p (1 - p) / n).
    let p = a.estimate;
    let width = 2.0 * 1.96 * (p * (1.0 - p) / n as f64).sqrt();
    assert!(((a.upper - a.lower) / width - 1.0).abs() < 0.25, "{a:?} vs width {width}");
    assert_eq!(a.resamples_used, 500);
    let auc = bootstrap_ci(&y[..6], &s[..6], cfg, binary::roc_auc);
    if let Ok(ci) = auc {
        assert!(ci.resamples_used < 500, "single-class resamples are skipped");
    }
    assert!(bootstrap_ci(&y, &s, BootstrapConfig { confidence: 1.0, ..cfg }, acc).is_err());
}

#[test]
fn subgroups_break_down_and_report_the_gap() {
    let groups = ["m", "m", "m", "m", "f", "f", "f", "f"];
    let y = [true, false, true, false, true, true, true, true];
    let s = [0.9, 0.1, 0.8, 0.7, 0.9, 0.2, 0.6, 0.7];
    let acc = subgroup_breakdown(&groups, &y, &s, |y, s| binary::accuracy(y, s, 0.5)).unwrap();
    assert_eq!(acc.groups.len(), 2);
    assert_eq!(acc.groups[0].group, "f");
    assert_eq!(acc.groups[0].value, Some(0.75));
    assert_eq!(acc.groups[1].value, Some(0.75));
    assert_eq!(acc.gap, Some(0.0));
    let auc = subgroup_breakdown(&groups, &y, &s, binary::roc_auc).unwrap();
    assert_eq!(auc.groups[0].value, None, "group f holds positives only");
    assert_eq!(auc.groups[1].value, Some(1.0));
    assert_eq!(auc.gap, None);
    assert!(subgroup_breakdown(&groups[..3], &y, &s, binary::roc_auc).is_err());
}

#[test]
fn video_aggregation_rejects_mixed_labels_and_supports_max() {
    let ids = ["a", "b", "a", "b"];
    let v = aggregate_by_video(
        &ids,
        &[true, false, true, false],
        &[0.2, 0.5, 0.9, 0.1],
        Aggregation::Max,
    )
    .unwrap();
    assert_eq!(v.ids, ["a", "b"]);
    assert_eq!(v.scores, [0.9, 0.5]);
    assert_eq!(v.frames, [2, 2]);
    let err = aggregate_by_video(
        &ids,
        &[true, false, false, false],
        &[0.2, 0.5, 0.9, 0.1],
        Aggregation::Mean,
    );
    assert!(matches!(err, Err(Error::InconsistentLabels { ref video }) if video == "a"));
}

#[test]
fn temperature_recovers_a_known_scale() {
    // Labels drawn from sigmoid(z), logits reported as 4 z: the fit should find T close to 4.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let n = 20_000;
    let z: Vec<f64> = (0..n).map(|_| (rng.random::<f64>() - 0.5) * 8.0).collect();
    let y: Vec<bool> = z.iter().map(|&z| rng.random::<f64>() < sigmoid(z)).collect();
    let logits: Vec<f64> = z.iter().map(|z| 4.0 * z).collect();
    let t = TemperatureScaling::fit(&y, &logits).unwrap();
    assert!((t.temperature - 4.0).abs() < 0.2, "{t:?}");
    assert!((t.probability(0.0) - 0.5).abs() < 1e-15);
    // Perfect separation: the NLL keeps falling as T -> 0.
    assert!(TemperatureScaling::fit(&[false, true], &[-1.0, 1.0]).is_err());
    // Anti-correlated logits: no positive temperature helps.
    assert!(TemperatureScaling::fit(&[true, false, true], &[-1.0, 1.0, -0.5]).is_err());
}

fn parse_err(text: &str) -> (usize, String) {
    match parse_csv(text, Path::new("p.csv")) {
        Err(Error::Parse { line, message, .. }) => (line, message),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn predictions_csv_parses_and_names_bad_lines() {
    let ok =
        parse_csv("id,label,score,video,group\na,1,0.9,v1,m\nb,0,0.1,v1,f\n", Path::new("p.csv"))
            .unwrap();
    assert_eq!(ok.labels, [true, false]);
    assert_eq!(ok.scores, [0.9, 0.1]);
    assert_eq!(ok.videos.as_deref(), Some(&["v1".to_string(), "v1".to_string()][..]));
    let minimal = parse_csv("score,id,label\n0.5,x,1\n", Path::new("p.csv")).unwrap();
    assert_eq!(minimal.ids, ["x"]);
    assert!(minimal.videos.is_none() && minimal.groups.is_none());

    assert_eq!(parse_err("id,label\na,1\n").0, 1);
    let (line, msg) = parse_err("id,label,score\na,1,0.5\nb,0\n");
    assert_eq!(line, 3, "{msg}");
    let (line, msg) = parse_err("id,label,score\na,1,0.5\nb,0,1.5\n");
    assert_eq!(line, 3);
    assert!(msg.contains("outside"), "{msg}");
    let (line, msg) = parse_err("id,label,score\na,1,0.5\nb,0,0.2\nc,1,abc\n");
    assert_eq!(line, 4);
    assert!(msg.contains("not a number"), "{msg}");
    let (line, msg) = parse_err("id,label,score\na,2,0.5\n");
    assert_eq!(line, 2);
    assert!(msg.contains("label"), "{msg}");
    let (line, _) = parse_err("id,label,score\na,1,NaN\n");
    assert_eq!(line, 2);
    assert!(matches!(parse_csv("id,label,score\n", Path::new("p.csv")), Err(Error::Empty { .. })));
    let shown =
        parse_csv("id,label,score\na,1,-0.1\n", Path::new("dir/p.csv")).unwrap_err().to_string();
    assert!(shown.starts_with("dir/p.csv:2:"), "{shown}");
}
