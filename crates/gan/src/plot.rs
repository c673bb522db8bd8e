//! The training curves of a GAN run.

use std::path::Path;

use deeprecog_metrics::plot::{series_panels, SeriesPanel};

use crate::step::IterationRecord;
use crate::Result;

/// Draws `losses.png`: the two losses (left) and the discriminator's mean outputs on real and
/// generated images (right) per iteration.
///
/// # Errors
/// An empty trace, plotting or saving errors.
pub fn losses(trace: &[IterationRecord], path: &Path) -> Result<()> {
    let line = |name: &str, f: fn(&IterationRecord) -> f64| {
        (name.to_string(), trace.iter().map(|r| (r.iteration as f64, f(r))).collect())
    };
    let panels = [
        SeriesPanel {
            title: "losses".into(),
            x_desc: "iteration".into(),
            y_desc: "binary cross-entropy".into(),
            lines: vec![line("discriminator", |r| r.d_loss), line("generator", |r| r.g_loss)],
        },
        SeriesPanel {
            title: "discriminator outputs".into(),
            x_desc: "iteration".into(),
            y_desc: "mean probability of real".into(),
            lines: vec![line("D(x), real", |r| r.d_real), line("D(G(z)), generated", |r| r.d_fake)],
        },
    ];
    Ok(series_panels(path, &panels, "GAN training")?)
}
