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
