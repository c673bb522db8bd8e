//! Renders every chart to a temp dir and checks the PNG decodes with the expected size.
#![allow(clippy::unwrap_used)]

use deeprecog_metrics::plot;

fn decode(path: &std::path::Path) -> (u32, u32) {
    let img = image::open(path).unwrap();
    (img.width(), img.height())
}

#[test]
fn attribute_distribution_renders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attrs.png");
    let names: Vec<String> = (0..40).map(|i| format!("Attribute_Name_{i}")).collect();
    let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let fr: Vec<f64> = (0..40).map(|i| (i as f64 * 0.37).fract()).collect();
    plot::attribute_distribution(&path, &names, &fr, "CelebA attribute distribution").unwrap();
    assert_eq!(
        decode(&path),
        (plot::ATTRIBUTE_DISTRIBUTION_WIDTH, plot::attribute_distribution_height(40))
    );
    if let Ok(dir) = std::env::var("DEEPRECOG_PLOT_DIR") {
        std::fs::copy(&path, std::path::Path::new(&dir).join("attrs.png")).unwrap();
    }
}

use deeprecog_metrics::binary::{BinaryConfusion, PrCurve, RocCurve};
use deeprecog_metrics::calibration::calibration;
use deeprecog_metrics::plot::LearningCurve;

fn keep(path: &std::path::Path, name: &str) {
    if let Ok(dir) = std::env::var("DEEPRECOG_PLOT_DIR") {
        std::fs::copy(path, std::path::Path::new(&dir).join(name)).unwrap();
    }
}

fn sample() -> (Vec<bool>, Vec<f64>) {
    // A deterministic, imperfect classifier without pulling in a random generator.
    let n = 400;
    let labels: Vec<bool> = (0..n).map(|i| (i * 7919) % 10 < 6).collect();
    let scores: Vec<f64> = (0..n)
        .map(|i| {
            let noise = ((i * 2654435761u64 as usize) % 1000) as f64 / 1000.0;
            let base = if labels[i] { 0.35 } else { 0.0 };
            (base + 0.65 * noise).clamp(0.0, 1.0)
        })
        .collect();
    (labels, scores)
}

#[test]
fn roc_and_pr_render() {
    let dir = tempfile::tempdir().unwrap();
    let (y, s) = sample();
    let roc = RocCurve::new(&y, &s).unwrap();
    let sq: Vec<f64> = s.iter().map(|v| v * v).collect();
    let roc2 = RocCurve::new(&y, &sq).unwrap();
    let path = dir.path().join("roc.png");
    plot::roc_curves(&path, &[("frame", &roc), ("video", &roc2)], "ROC curve").unwrap();
    assert_eq!(decode(&path), plot::CURVE_SIZE);
    keep(&path, "roc.png");

    let pr = PrCurve::new(&y, &s).unwrap();
    let rate = y.iter().filter(|&&v| v).count() as f64 / y.len() as f64;
    let path = dir.path().join("pr.png");
    plot::pr_curves(&path, &[("detector", &pr, rate)], "Precision-recall").unwrap();
    assert_eq!(decode(&path), plot::CURVE_SIZE);
    keep(&path, "pr.png");
}

#[test]
fn confusion_and_reliability_render() {
    let dir = tempfile::tempdir().unwrap();
    let (y, s) = sample();
    let c = BinaryConfusion::from_scores(&y, &s, 0.5).unwrap();
    let path = dir.path().join("confusion.png");
    plot::confusion_matrix(&path, &c, ["real", "fake"], "Confusion matrix at 0.5").unwrap();
    assert_eq!(decode(&path), plot::CONFUSION_SIZE);
    keep(&path, "confusion.png");

    let cal = calibration(&y, &s, 10).unwrap();
    let path = dir.path().join("reliability.png");
    plot::reliability_diagram(&path, &cal, "Reliability diagram").unwrap();
    assert_eq!(decode(&path), plot::CURVE_SIZE);
    keep(&path, "reliability.png");
}

#[test]
fn frame_scores_render_and_reject_empty_input() {
    let dir = tempfile::tempdir().unwrap();
    let times: Vec<f64> = (0..12).map(|i| f64::from(i) / 4.0).collect();
    let mut scores: Vec<f64> = (0..12).map(|i| if i % 3 == 0 { 0.9 } else { 0.2 }).collect();
    scores[5] = f64::NAN;
    let path = dir.path().join("frames.png");
    plot::frame_scores(&path, &times, &scores, 0.5, "video: 0.43").unwrap();
    assert_eq!(decode(&path), plot::CURVE_SIZE);
    keep(&path, "frames.png");
    let nothing = plot::frame_scores(&path, &[0.0], &[f64::NAN], 0.5, "none");
    assert!(nothing.is_err());
    assert!(plot::frame_scores(&path, &[0.0, 1.0], &[0.5], 0.5, "short").is_err());
}

#[test]
fn learning_curves_render() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, rate: f64| LearningCurve {
        name: name.to_string(),
        accuracy: (0..20).map(|e| 1.0 - 0.45 * (-(e as f64) * rate).exp()).collect(),
        loss: (0..20).map(|e| 0.7 * (-(e as f64) * rate).exp() + 0.05).collect(),
    };
    let mut diverged = run("lr 0.1 (diverged)", 0.05);
    diverged.loss[7] = f64::NAN;
    let path = dir.path().join("curves.png");
    plot::learning_curves(
        &path,
        &[run("custom CNN", 0.2), run("Xception transfer", 0.4), diverged],
        "Learning curves",
    )
    .unwrap();
    assert_eq!(decode(&path), plot::LEARNING_CURVES_SIZE);
    keep(&path, "curves.png");
}

#[test]
fn plots_reject_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.png");
    assert!(plot::attribute_distribution(&path, &[], &[], "t").is_err());
    assert!(plot::attribute_distribution(&path, &["a"], &[1.5], "t").is_err());
    assert!(plot::attribute_distribution(&path, &["a", "b"], &[0.5], "t").is_err());
    assert!(plot::roc_curves(&path, &[], "t").is_err());
    assert!(plot::learning_curves(&path, &[], "t").is_err());
    assert!(!path.exists());
}
