//! Golden tests against scikit-learn: `tests/golden/sklearn_reference.py` wrote the inputs and
//! expected outputs into `sklearn_reference.json`.
//!
//! Tolerance: 1e-12, absolute for values in [0, 1] and relative for larger ones (log-loss).
//! Exceptions, each explained where it is used: temperature (1e-10, an iterative fit on both
//! sides) and the Frechet distance (1e-10 relative, eigen-decompositions on both sides).
#![allow(clippy::unwrap_used, clippy::panic)]

use deeprecog_metrics::binary::{self, BinaryConfusion, PrCurve, RocCurve};
use deeprecog_metrics::calibration::{self, TemperatureScaling};
use deeprecog_metrics::fid::{frechet_distance, FeatureAccumulator, FeatureStats};
use deeprecog_metrics::multilabel::MultiLabelReport;
use deeprecog_metrics::video::{aggregate_by_video, Aggregation};
use deeprecog_metrics::Error;
use serde_json::Value;

const TOL: f64 = 1e-12;

fn reference() -> Value {
    serde_json::from_str(include_str!("golden/sklearn_reference.json")).unwrap()
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    let scale = want.abs().max(1.0);
    assert!(
        (got - want).abs() <= tol * scale,
        "{what}: got {got:e}, want {want:e} (diff {:e})",
        (got - want).abs()
    );
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap() == 1).collect()
}

fn close_opt(got: Option<f64>, want: &Value, what: &str) {
    match (got, want.as_f64()) {
        (Some(g), Some(w)) => close(g, w, TOL, what),
        (None, None) => {}
        (g, _) => panic!("{what}: got {g:?}, want {want}"),
    }
}

fn close_vec(got: &[f64], want: &Value, what: &str) {
    let want: Vec<Option<f64>> = want.as_array().unwrap().iter().map(Value::as_f64).collect();
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        match w {
            Some(w) => close(*g, *w, TOL, &format!("{what}[{i}]")),
            // JSON null stands for +inf (the first ROC threshold).
            None => assert_eq!(*g, f64::INFINITY, "{what}[{i}]"),
        }
    }
}

/// Thresholds are input scores, so they must match exactly.
fn exact_vec(got: &[f64], want: &Value, what: &str) {
    let want: Vec<f64> =
        want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap_or(f64::INFINITY)).collect();
    assert_eq!(got, want.as_slice(), "{what}");
}

fn check_roc(curve: &RocCurve, want: &Value, what: &str) {
    close_vec(&curve.fpr, &want["fpr"], &format!("{what}.fpr"));
    close_vec(&curve.tpr, &want["tpr"], &format!("{what}.tpr"));
    exact_vec(&curve.thresholds, &want["thresholds"], &format!("{what}.thresholds"));
}

#[test]
fn binary_cases_match_sklearn() {
    let r = reference();
    let cases = r["binary"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let y = bools(&case["labels"]);
        let s = floats(&case["scores"]);
        let t = f(&case["threshold"]);
        let c = BinaryConfusion::from_scores(&y, &s, t).unwrap();
        let want = &case["confusion"];
        assert_eq!(
            (c.tp, c.fp, c.tn, c.fn_),
            (
                want["tp"].as_u64().unwrap(),
                want["fp"].as_u64().unwrap(),
                want["tn"].as_u64().unwrap(),
                want["fn"].as_u64().unwrap()
            ),
            "{name}: confusion"
        );
        close(
            binary::accuracy(&y, &s, t).unwrap(),
            f(&case["accuracy"]),
            TOL,
            &format!("{name}: accuracy"),
        );
        close_opt(c.precision(), &case["precision"], &format!("{name}: precision"));
        close_opt(c.recall(), &case["recall"], &format!("{name}: recall"));
        close_opt(c.f1(), &case["f1"], &format!("{name}: f1"));
        close_opt(c.f_beta(2.0), &case["f2"], &format!("{name}: f2"));
        close_opt(
            c.balanced_accuracy(),
            &case["balanced_accuracy"],
            &format!("{name}: balanced accuracy"),
        );
        close(
            binary::majority_baseline_accuracy(&y).unwrap(),
            f(&case["majority_baseline"]),
            TOL,
            &format!("{name}: majority baseline"),
        );

        if case["roc"].is_null() {
            assert!(matches!(binary::roc_auc(&y, &s), Err(Error::SingleClass { .. })));
            assert!(RocCurve::new(&y, &s).is_err(), "{name}");
            assert!(binary::eer(&y, &s).is_err(), "{name}");
            assert!(binary::best_youden_threshold(&y, &s).is_err(), "{name}");
        } else {
            check_roc(&RocCurve::new(&y, &s).unwrap(), &case["roc"], name);
            let simplified = RocCurve::simplified(&y, &s).unwrap();
            check_roc(&simplified, &case["roc_simplified"], &format!("{name} simplified"));
            let auc = binary::roc_auc(&y, &s).unwrap();
            close(auc, f(&case["roc_auc"]), TOL, &format!("{name}: roc_auc"));
            close(simplified.auc(), auc, TOL, &format!("{name}: trapezoid auc"));
            let eer = binary::eer(&y, &s).unwrap();
            close(eer.rate, f(&case["eer"]["rate"]), TOL, &format!("{name}: eer"));
            assert_eq!(eer.threshold, f(&case["eer"]["threshold"]), "{name}: eer threshold");
            let j = binary::best_youden_threshold(&y, &s).unwrap();
            assert_eq!(j.threshold, f(&case["best_youden"]["threshold"]), "{name}: J thr");
            close(j.value, f(&case["best_youden"]["value"]), TOL, &format!("{name}: J"));
        }

        if case["pr"].is_null() {
            assert!(PrCurve::new(&y, &s).is_err(), "{name}");
            assert!(binary::average_precision(&y, &s).is_err(), "{name}");
            assert!(binary::best_f1_threshold(&y, &s).is_err(), "{name}");
        } else {
            let pr = PrCurve::new(&y, &s).unwrap();
            close_vec(&pr.precision, &case["pr"]["precision"], &format!("{name}: PR precision"));
            close_vec(&pr.recall, &case["pr"]["recall"], &format!("{name}: PR recall"));
            exact_vec(&pr.thresholds, &case["pr"]["thresholds"], &format!("{name}: PR thr"));
            close(
                binary::average_precision(&y, &s).unwrap(),
                f(&case["average_precision"]),
                TOL,
                &format!("{name}: average precision"),
            );
            let best = binary::best_f1_threshold(&y, &s).unwrap();
            assert_eq!(best.threshold, f(&case["best_f1"]["threshold"]), "{name}: F1 thr");
            close(best.value, f(&case["best_f1"]["value"]), TOL, &format!("{name}: best F1"));
        }

        if case["log_loss"].is_null() {
            assert!(binary::log_loss(&y, &s).is_err(), "{name}: scores are not probabilities");
        } else {
            close(
                binary::log_loss(&y, &s).unwrap(),
                f(&case["log_loss"]),
                TOL,
                &format!("{name}: log loss"),
            );
            close(
                binary::log_loss_with_eps(&y, &s, binary::DFDC_LOG_LOSS_EPS).unwrap(),
                f(&case["log_loss_dfdc"]),
                TOL,
                &format!("{name}: DFDC log loss"),
            );
            let cal = calibration::calibration(&y, &s, 15).unwrap();
            close(cal.ece, f(&case["ece15"]), TOL, &format!("{name}: ECE"));
            close(cal.mce, f(&case["mce15"]), TOL, &format!("{name}: MCE"));
            // scikit-learn's calibration_curve lists the non-empty bins only.
            let cal10 = calibration::calibration(&y, &s, 10).unwrap();
            let non_empty: Vec<_> = cal10.bins.iter().filter(|b| b.count > 0).collect();
            let frac: Vec<f64> = non_empty.iter().map(|b| b.fraction_positive.unwrap()).collect();
            let mean: Vec<f64> = non_empty.iter().map(|b| b.mean_predicted.unwrap()).collect();
            let want = &case["calibration_curve10"];
            close_vec(&frac, &want["fraction_positive"], &format!("{name}: reliability frac"));
            close_vec(&mean, &want["mean_predicted"], &format!("{name}: reliability mean"));
        }
    }
}

#[test]
fn log_loss_eps_is_sklearns() {
    let r = reference();
    assert_eq!(binary::LOG_LOSS_EPS, f(&r["log_loss_eps"]));
}

#[test]
fn multilabel_matches_sklearn() {
    let r = reference();
    let m = &r["multilabel"];
    let k = m["k"].as_u64().unwrap() as usize;
    let names: Vec<String> = (0..k).map(|j| format!("label{j}")).collect();
    let report =
        MultiLabelReport::new(&bools(&m["labels"]), &floats(&m["scores"]), &names, 0.5).unwrap();
    assert_eq!(report.n, m["n"].as_u64().unwrap() as usize);
    for (j, (got, want)) in
        report.per_label.iter().zip(m["per_label"].as_array().unwrap()).enumerate()
    {
        close(got.accuracy, f(&want["accuracy"]), TOL, &format!("label {j} accuracy"));
        close_opt(got.f1, &want["f1"], &format!("label {j} f1"));
        close_opt(got.roc_auc, &want["roc_auc"], &format!("label {j} auc"));
    }
    close(report.mean_accuracy, f(&m["mean_accuracy"]), TOL, "mean accuracy");
    close(1.0 - report.mean_accuracy, f(&m["hamming_loss"]), TOL, "hamming loss");
    close(report.exact_match_accuracy, f(&m["exact_match_accuracy"]), TOL, "exact match");
}

#[test]
fn video_aggregation_matches_numpy() {
    let r = reference();
    let v = &r["video"];
    let ids: Vec<String> =
        v["videos"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    let y = bools(&v["labels"]);
    let s = floats(&v["scores"]);
    let mean = aggregate_by_video(&ids, &y, &s, Aggregation::Mean).unwrap();
    let order: Vec<&str> =
        v["video_order"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    assert_eq!(mean.ids, order);
    assert_eq!(mean.labels, bools(&v["video_labels"]));
    close_vec(&mean.scores, &v["video_mean_scores"], "video means");
    let median = aggregate_by_video(&ids, &y, &s, Aggregation::Median).unwrap();
    close_vec(&median.scores, &v["video_median_scores"], "video medians");
    close(
        binary::roc_auc(&mean.labels, &mean.scores).unwrap(),
        f(&v["video_roc_auc"]),
        TOL,
        "video AUC",
    );
    close(binary::roc_auc(&y, &s).unwrap(), f(&v["frame_roc_auc"]), TOL, "frame AUC");
}

#[test]
fn temperature_matches_scipy_root() {
    let r = reference();
    let t = &r["temperature"];
    let fit = TemperatureScaling::fit(&bools(&t["labels"]), &floats(&t["logits"])).unwrap();
    // Both sides find the root of the same gradient iteratively; the gradient is a sum of
    // 300 terms, so its rounding moves the root by ~1e-13 relative. 1e-10 leaves a margin.
    close(fit.temperature, f(&t["temperature"]), 1e-10, "temperature");
    assert!(fit.temperature > 1.0, "an over-confident model gets T > 1");
}

#[test]
fn fid_matches_numpy_and_scipy() {
    let r = reference();
    let g = &r["fid"];
    let d = g["dim"].as_u64().unwrap() as usize;
    let a = FeatureStats::from_rows(&floats(&g["a"]), d).unwrap();
    let b = FeatureStats::from_rows(&floats(&g["b"]), d).unwrap();
    close_vec(&a.mean, &g["mean_a"], "mean");
    close_vec(&a.covariance, &g["cov_a"], "covariance");
    let fid = frechet_distance(&a, &b).unwrap();
    // Eigen-decompositions (Householder + implicit QR here, LAPACK in numpy) agree to
    // ~1e-14 relative per eigenvalue; the distance subtracts traces, so allow 1e-10 relative.
    close(fid, f(&g["frechet_distance"]), 1e-10, "Frechet distance");
    close(fid, f(&g["frechet_distance_sqrtm"]), 1e-9, "Frechet distance vs sqrtm");
    // The streaming accumulator gives the same statistics.
    let rows: Vec<f32> = floats(&g["a"]).iter().map(|&x| x as f32).collect();
    let mut acc = FeatureAccumulator::new(d).unwrap();
    acc.push_batch(&rows[..6 * d]).unwrap();
    acc.push_batch(&rows[6 * d..]).unwrap();
    let streamed = acc.finish().unwrap();
    let batch = FeatureStats::from_rows_f32(&rows, d).unwrap();
    for (x, y) in streamed.covariance.iter().zip(&batch.covariance) {
        close(*x, *y, 1e-12, "streamed covariance");
    }
    for (x, y) in streamed.mean.iter().zip(&batch.mean) {
        close(*x, *y, 1e-12, "streamed mean");
    }
}
