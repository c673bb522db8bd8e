//! PNG charts drawn with plotters into an in-memory RGB buffer and saved with `image`.
//!
//! Text is rendered with the DejaVu Sans font embedded by the `dejavu` crate, so charts look the
//! same on every machine and no system font lookup (fontconfig) is needed.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::{Error, Result};

/// The font family name charts ask plotters for; the DejaVu fonts are registered under it.
const FONT: &str = "sans-serif";

/// Registers the embedded fonts once per process; later calls return the first outcome.
fn ensure_fonts() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let regular = dejavu::sans::regular();
            let bold = dejavu::sans::bold();
            plotters::style::register_font(FONT, FontStyle::Normal, regular)
                .and_then(|()| plotters::style::register_font(FONT, FontStyle::Bold, bold))
                .map_err(|_| "the embedded DejaVu font could not be parsed".to_string())
        })
        .clone()
        .map_err(Error::Plot)
}

/// Converts any plotters error into the crate's error.
fn plot_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Plot(e.to_string())
}

/// The drawing area handed to the chart-specific closures.
pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Allocates a white RGB canvas, lets `draw` fill it and writes it to `path` as PNG.
pub(crate) fn render<F>(path: &Path, (width, height): (u32, u32), draw: F) -> Result<()>
where
    F: FnOnce(&Area<'_>) -> Result<()>,
{
    ensure_fonts()?;
    let len = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| Error::Plot(format!("canvas {width}x{height} is too large")))?;
    let mut buffer = vec![0u8; len];
    {
        // `with_buffer` would panic on a size mismatch; this variant reports it instead.
        let backend = BitMapBackend::with_buffer_and_format(&mut buffer, (width, height))
            .map_err(plot_err)?;
        let root = backend.into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    image::save_buffer_with_format(
        path,
        &buffer,
        width,
        height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|source| Error::Image { path: path.to_path_buf(), source })
}

fn text_style(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

fn title_style(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().style(FontStyle::Bold).color(&BLACK)
}

/// The width of an attribute distribution chart in pixels.
pub const ATTRIBUTE_DISTRIBUTION_WIDTH: u32 = 1000;

/// The height in pixels of [`attribute_distribution`]'s chart for `bars` attributes.
pub fn attribute_distribution_height(bars: usize) -> u32 {
    let rows = u32::try_from(bars).unwrap_or(u32::MAX / 32);
    (130 + 24 * rows).max(320)
}

/// Draws a horizontal bar chart of the fraction of positive samples per attribute.
///
/// One bar per name, the first name at the top, each bar labelled with its percentage, and a
/// dashed reference line at 0.5 (a perfectly balanced attribute). The dataset crate counts the
/// numbers (`deeprecog_dataset::stats::AttributeStats::named_fractions`, unzipped into names and
/// fractions) and leaves the drawing here, so it stays free of plotting. The image is
/// [`ATTRIBUTE_DISTRIBUTION_WIDTH`] by [`attribute_distribution_height`]`(names.len())` pixels.
///
/// # Errors
/// [`Error::Empty`] without names, [`Error::LengthMismatch`] when the slices differ in length,
/// [`Error::InvalidValue`] for a fraction outside `[0, 1]`, and plotting or saving errors.
pub fn attribute_distribution(
    path: &Path,
    names: &[&str],
    positive_fractions: &[f64],
    title: &str,
) -> Result<()> {
    if names.is_empty() {
        return Err(Error::Empty { what: "names" });
    }
    if names.len() != positive_fractions.len() {
        return Err(Error::LengthMismatch {
            what: "positive_fractions",
            expected: names.len(),
            got: positive_fractions.len(),
        });
    }
    for (index, &value) in positive_fractions.iter().enumerate() {
        if !(0.0..=1.0).contains(&value) {
            return Err(Error::InvalidValue { what: "positive fraction", index, value });
        }
    }
    let n = i32::try_from(names.len())
        .map_err(|_| Error::InvalidArgument { name: "names", reason: "too many bars".into() })?;
    let size = (ATTRIBUTE_DISTRIBUTION_WIDTH, attribute_distribution_height(names.len()));
    // Row 0 is drawn at the bottom by plotters, so the first name gets the highest row.
    let row_of = |i: usize| n - 1 - i32::try_from(i).unwrap_or(n - 1);
    let name_of_row = |row: i32| -> String {
        usize::try_from(n - 1 - row)
            .ok()
            .and_then(|i| names.get(i))
            .map(|s| s.to_string())
            .unwrap_or_default()
    };
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    let label_width = u32::try_from(longest).unwrap_or(40).min(40) * 9 + 20;
    render(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, title_style(24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(label_width)
            .build_cartesian_2d(0.0f64..1.1f64, (0..n - 1).into_segmented())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(12)
            .max_light_lines(1)
            .y_labels(names.len())
            // The axis runs past 100% only to leave room for the value labels.
            .x_label_formatter(&|x| {
                if *x <= 1.0 + 1e-9 {
                    format!("{:.0}%", x * 100.0)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(row) => name_of_row(*row),
                _ => String::new(),
            })
            .x_desc("fraction of positive samples")
            .label_style(text_style(15))
            .axis_desc_style(text_style(17))
            .draw()
            .map_err(plot_err)?;
        let bar = RGBColor(66, 133, 196);
        chart
            .draw_series(positive_fractions.iter().enumerate().map(|(i, &frac)| {
                let row = row_of(i);
                let mut rect = Rectangle::new(
                    [(0.0, SegmentValue::Exact(row)), (frac, SegmentValue::Exact(row + 1))],
                    bar.filled(),
                );
                rect.set_margin(3, 3, 0, 0);
                rect
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(positive_fractions.iter().enumerate().map(|(i, &frac)| {
                Text::new(
                    format!("{:.1}%", frac * 100.0),
                    (frac + 0.005, SegmentValue::CenterOf(row_of(i))),
                    text_style(13).pos(text_anchor_left_center()),
                )
            }))
            .map_err(plot_err)?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.5, SegmentValue::Exact(0)), (0.5, SegmentValue::Last)],
                8,
                5,
                RED.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("balanced (50%)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font(text_style(15))
            .draw()
            .map_err(plot_err)?;
        Ok(())
    })
}

fn text_anchor_left_center() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Left, VPos::Center)
}

/// Colours for several series on one chart (colour-blind friendly, after Okabe and Ito).
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

fn series_color(i: usize) -> RGBColor {
    PALETTE.get(i % PALETTE.len()).copied().unwrap_or(BLACK)
}

/// The size in pixels of the square ROC, precision-recall and reliability charts.
pub const CURVE_SIZE: (u32, u32) = (800, 800);
/// The size in pixels of the confusion-matrix chart.
pub const CONFUSION_SIZE: (u32, u32) = (700, 640);
/// The size in pixels of the learning-curves chart (accuracy and loss side by side).
pub const LEARNING_CURVES_SIZE: (u32, u32) = (1400, 600);

fn check_nonempty<T>(items: &[T], what: &'static str) -> Result<()> {
    if items.is_empty() {
        return Err(Error::Empty { what });
    }
    Ok(())
}

fn check_curve(x: &[f64], y: &[f64], what: &'static str) -> Result<()> {
    if x.len() != y.len() {
        return Err(Error::LengthMismatch { what, expected: x.len(), got: y.len() });
    }
    if x.is_empty() {
        return Err(Error::Empty { what });
    }
    Ok(())
}

/// A unit-square chart with a caption, axis descriptions and a light grid.
fn unit_chart<'a, 'b>(
    root: &'a Area<'b>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
) -> Result<
    ChartContext<
        'a,
        BitMapBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, title_style(24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0f64..1.0f64, 0.0f64..1.02f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_labels(11)
        .y_labels(11)
        .max_light_lines(1)
        .x_label_formatter(&|v| format!("{v:.1}"))
        .y_label_formatter(&|v| format!("{v:.1}"))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(text_style(15))
        .axis_desc_style(text_style(18))
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(text_style(16))
        .draw()
        .map_err(plot_err)
}

/// Draws one or more ROC curves with their AUC in the legend and the chance diagonal.
///
/// Each entry is `(name, curve)`, e.g. `("frame", &roc)` and `("video", &video_roc)`. The
/// image is [`CURVE_SIZE`].
///
/// # Errors
/// [`Error::Empty`] without curves, plotting or saving errors.
pub fn roc_curves(
    path: &Path,
    curves: &[(&str, &crate::binary::RocCurve)],
    title: &str,
) -> Result<()> {
    check_nonempty(curves, "ROC curves")?;
    for (_, c) in curves {
        check_curve(&c.fpr, &c.tpr, "ROC curve tpr")?;
    }
    render(path, CURVE_SIZE, |root| {
        let mut chart = unit_chart(root, title, "false positive rate", "true positive rate")?;
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                RGBColor(150, 150, 150).stroke_width(1),
            ))
            .map_err(plot_err)?
            .label("chance (AUC 0.5)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RGBColor(150, 150, 150)));
        for (i, (name, curve)) in curves.iter().enumerate() {
            let color = series_color(i);
            let points: Vec<(f64, f64)> =
                curve.fpr.iter().copied().zip(curve.tpr.iter().copied()).collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(3)))
                .map_err(plot_err)?
                .label(format!("{name} (AUC {:.4})", curve.auc()))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// Draws a video's per-frame fake probabilities over time (points joined by a line), the
/// decision threshold as a dashed line, and the video's aggregated probability in the title.
/// Frames without a score (no face) are left out. The image is [`CURVE_SIZE`].
///
/// # Errors
/// [`Error::LengthMismatch`], [`Error::Empty`] without a finite score, plotting or saving
/// errors.
pub fn frame_scores(
    path: &Path,
    times_s: &[f64],
    scores: &[f64],
    threshold: f64,
    title: &str,
) -> Result<()> {
    check_curve(times_s, scores, "frame scores")?;
    let points: Vec<(f64, f64)> = times_s
        .iter()
        .copied()
        .zip(scores.iter().copied())
        .filter(|(t, s)| t.is_finite() && s.is_finite())
        .collect();
    if points.is_empty() {
        return Err(Error::Empty { what: "finite frame scores" });
    }
    let t_max = points.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-3);
    render(path, CURVE_SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, title_style(22))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0f64..t_max * 1.02, 0.0f64..1.02f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .max_light_lines(1)
            .x_desc("time (s)")
            .y_desc("fake probability")
            .label_style(text_style(15))
            .axis_desc_style(text_style(18))
            .draw()
            .map_err(plot_err)?;
        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, threshold), (t_max * 1.02, threshold)],
                6,
                4,
                grey.stroke_width(1),
            ))
            .map_err(plot_err)?
            .label(format!("threshold {threshold:.3}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
        let color = series_color(0);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label("frame (most fake face)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(plot_err)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Draws one or more precision-recall curves (as steps, the way average precision integrates
/// them) with their average precision in the legend; a dashed line marks each curve's
/// positive rate, the precision of a random classifier.
///
/// Each entry is `(name, curve, positive_rate)`. The image is [`CURVE_SIZE`].
///
/// # Errors
/// [`Error::Empty`] without curves, plotting or saving errors.
pub fn pr_curves(
    path: &Path,
    curves: &[(&str, &crate::binary::PrCurve, f64)],
    title: &str,
) -> Result<()> {
    check_nonempty(curves, "precision-recall curves")?;
    for (_, c, _) in curves {
        check_curve(&c.recall, &c.precision, "precision-recall curve precision")?;
    }
    render(path, CURVE_SIZE, |root| {
        let mut chart = unit_chart(root, title, "recall", "precision")?;
        for (i, (name, curve, base_rate)) in curves.iter().enumerate() {
            let color = series_color(i);
            // Recall decreases along the arrays; walk it from recall 0 upwards as steps.
            let mut points = Vec::with_capacity(curve.recall.len() * 2);
            let mut ap = 0.0;
            let mut prev_recall = 0.0;
            for (&r, &p) in curve.recall.iter().zip(&curve.precision).rev() {
                points.push((prev_recall, p));
                points.push((r, p));
                ap += (r - prev_recall) * p;
                prev_recall = r;
            }
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(3)))
                .map_err(plot_err)?
                .label(format!("{name} (AP {ap:.4})"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            let base = base_rate.clamp(0.0, 1.0);
            chart
                .draw_series(DashedLineSeries::new(
                    [(0.0, base), (1.0, base)],
                    6,
                    4,
                    color.mix(0.6).stroke_width(1),
                ))
                .map_err(plot_err)?
                .label(format!("{name}: chance (positive rate {base:.2})"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.mix(0.6)));
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerLeft)
    })
}

/// Draws a 2x2 confusion matrix as a heat map with counts and row percentages.
///
/// `class_names` are `[negative, positive]`, e.g. `["real", "fake"]`; rows are the true
/// class, columns the predicted one. The image is [`CONFUSION_SIZE`].
///
/// # Errors
/// Plotting or saving errors.
pub fn confusion_matrix(
    path: &Path,
    confusion: &crate::binary::BinaryConfusion,
    class_names: [&str; 2],
    title: &str,
) -> Result<()> {
    // cells[row = true class][col = predicted class]
    let cells = [[confusion.tn, confusion.fp], [confusion.fn_, confusion.tp]];
    let max = cells.iter().flatten().copied().max().unwrap_or(0).max(1);
    render(path, CONFUSION_SIZE, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, title_style(24))
            .margin(30)
            .x_label_area_size(60)
            .y_label_area_size(110)
            .build_cartesian_2d((0..1).into_segmented(), (0..1).into_segmented())
            .map_err(plot_err)?;
        let name = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => usize::try_from(*i)
                .ok()
                .and_then(|i| class_names.get(i))
                .map(|s| s.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        };
        // The true class runs top to bottom, so row 0 (negative) is drawn at y = 1.
        let y_name = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(i) => name(&SegmentValue::CenterOf(1 - i)),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2)
            .y_labels(2)
            .x_label_formatter(&name)
            .y_label_formatter(&y_name)
            .x_desc("predicted class")
            .y_desc("true class")
            .label_style(text_style(18))
            .axis_desc_style(text_style(18))
            .draw()
            .map_err(plot_err)?;
        for (row, counts) in cells.iter().enumerate() {
            let row_total: u64 = counts.iter().sum();
            for (col, &count) in counts.iter().enumerate() {
                let (x, y) = (col as i32, 1 - row as i32);
                let intensity = count as f64 / max as f64;
                let shade = (235.0 - 190.0 * intensity) as u8;
                let fill = RGBColor(shade, (shade as f64 * 0.9 + 25.0) as u8, 250);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                        ],
                        fill.filled(),
                    )))
                    .map_err(plot_err)?;
                let share = if row_total > 0 {
                    format!("{:.1}% of row", 100.0 * count as f64 / row_total as f64)
                } else {
                    "-".to_string()
                };
                let text_color = if intensity > 0.6 { WHITE } else { BLACK };
                let big =
                    (FONT, 34).into_font().style(FontStyle::Bold).color(&text_color).pos(center());
                let small = (FONT, 17).into_font().color(&text_color).pos(center());
                chart
                    .draw_series([Text::new(
                        count.to_string(),
                        (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                        big,
                    )])
                    .map_err(plot_err)?;
                let (px, py) =
                    chart.backend_coord(&(SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)));
                root.draw(&Text::new(share, (px, py + 36), small)).map_err(plot_err)?;
            }
        }
        Ok(())
    })
}

fn center() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Center)
}

/// Draws a reliability diagram: the fraction of positives per probability bin as bars, the
/// mean predicted probability per bin as points, the diagonal of perfect calibration, and
/// the ECE in the legend. The image is [`CURVE_SIZE`].
///
/// # Errors
/// [`Error::Empty`] without bins, plotting or saving errors.
pub fn reliability_diagram(
    path: &Path,
    calibration: &crate::calibration::Calibration,
    title: &str,
) -> Result<()> {
    check_nonempty(&calibration.bins, "reliability bins")?;
    let total: usize = calibration.bins.iter().map(|b| b.count).sum();
    render(path, CURVE_SIZE, |root| {
        let mut chart = unit_chart(root, title, "predicted probability", "fraction of positives")?;
        let bar = RGBColor(66, 133, 196);
        chart
            .draw_series(calibration.bins.iter().filter_map(|b| {
                let frac = b.fraction_positive?;
                let mut rect =
                    Rectangle::new([(b.lower, 0.0), (b.upper, frac)], bar.mix(0.8).filled());
                rect.set_margin(0, 0, 1, 1);
                Some(rect)
            }))
            .map_err(plot_err)?
            .label(format!("observed (ECE {:.4}, n = {total})", calibration.ece))
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], bar.filled()));
        chart
            .draw_series(calibration.bins.iter().filter_map(|b| {
                Some(Circle::new((b.mean_predicted?, b.fraction_positive?), 5, RED.filled()))
            }))
            .map_err(plot_err)?
            .label("mean predicted vs observed")
            .legend(|(x, y)| Circle::new((x + 10, y), 5, RED.filled()));
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                BLACK.stroke_width(2),
            ))
            .map_err(plot_err)?
            .label("perfectly calibrated")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// One training run's per-epoch history for [`learning_curves`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LearningCurve {
    /// The legend entry, e.g. `"custom CNN (val)"`.
    pub name: String,
    /// Accuracy per epoch (epoch 1 first); may be empty. Non-finite values are skipped.
    pub accuracy: Vec<f64>,
    /// Loss per epoch (epoch 1 first); may be empty. Non-finite values are skipped.
    pub loss: Vec<f64>,
}

fn finite_points(values: &[f64]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| ((i + 1) as f64, v))
        .collect()
}

/// Draws accuracy (left) and loss (right) per epoch for several runs on one image, one
/// colour per run. The image is [`LEARNING_CURVES_SIZE`].
///
/// # Errors
/// [`Error::Empty`] without runs or without a single finite value, plotting or saving errors.
pub fn learning_curves(path: &Path, runs: &[LearningCurve], title: &str) -> Result<()> {
    check_nonempty(runs, "learning curves")?;
    let epochs = runs.iter().map(|r| r.accuracy.len().max(r.loss.len())).max().unwrap_or(0).max(2);
    let all_loss: Vec<f64> =
        runs.iter().flat_map(|r| r.loss.iter().copied()).filter(|v| v.is_finite()).collect();
    let all_acc: Vec<f64> =
        runs.iter().flat_map(|r| r.accuracy.iter().copied()).filter(|v| v.is_finite()).collect();
    if all_loss.is_empty() && all_acc.is_empty() {
        return Err(Error::Empty { what: "learning curve values" });
    }
    let loss_max = all_loss.iter().copied().fold(0.0f64, f64::max);
    let loss_min = all_loss.iter().copied().fold(loss_max, f64::min).min(0.0);
    let loss_top = if loss_max > loss_min { loss_max * 1.05 } else { loss_min + 1.0 };
    let acc_min = all_acc.iter().copied().fold(1.0f64, f64::min).min(0.5);
    let acc_bottom = (acc_min * 20.0).floor() / 20.0;
    render(path, LEARNING_CURVES_SIZE, |root| {
        let root = root.titled(title, title_style(26)).map_err(plot_err)?;
        let (left, right) = root.split_horizontally(LEARNING_CURVES_SIZE.0 / 2);
        let panels: [(&Area<'_>, &str, f64, f64, bool); 2] = [
            (&left, "accuracy", acc_bottom, 1.0, true),
            (&right, "loss", loss_min, loss_top, false),
        ];
        for (area, name, lo, hi, is_acc) in panels {
            let mut chart = ChartBuilder::on(area)
                .caption(name, text_style(20))
                .margin(15)
                .x_label_area_size(50)
                .y_label_area_size(70)
                .build_cartesian_2d(1.0f64..epochs as f64, lo..hi)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .max_light_lines(1)
                .x_labels(epochs.min(12))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| {
                    if is_acc {
                        format!("{:.0}%", v * 100.0)
                    } else {
                        format!("{v:.3}")
                    }
                })
                .x_desc("epoch")
                .y_desc(name)
                .label_style(text_style(15))
                .axis_desc_style(text_style(17))
                .draw()
                .map_err(plot_err)?;
            for (i, run) in runs.iter().enumerate() {
                let color = series_color(i);
                let points = finite_points(if is_acc { &run.accuracy } else { &run.loss });
                if points.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
                    .map_err(plot_err)?
                    .label(run.name.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                    });
                chart
                    .draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))
                    .map_err(plot_err)?;
            }
            draw_legend(
                &mut chart,
                if is_acc {
                    SeriesLabelPosition::LowerRight
                } else {
                    SeriesLabelPosition::UpperRight
                },
            )?;
        }
        Ok(())
    })
}

/// One panel of [`series_panels`]: a title, axis names and named lines of `(x, y)` points.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SeriesPanel {
    /// The panel's caption.
    pub title: String,
    /// The x axis's name.
    pub x_desc: String,
    /// The y axis's name.
    pub y_desc: String,
    /// `(legend entry, points)` per line; non-finite points are skipped.
    pub lines: Vec<(String, Vec<(f64, f64)>)>,
}

/// Size of a [`series_panels`] image per panel.
pub const SERIES_PANEL_SIZE: (u32, u32) = (700, 450);

/// Draws panels of line series side by side (e.g. a GAN's losses on the left and `D(x)`,
/// `D(G(z))` on the right), one colour per line.
///
/// # Errors
/// [`Error::Empty`] without panels or without a finite point in a panel, plotting or saving
/// errors.
pub fn series_panels(path: &Path, panels: &[SeriesPanel], title: &str) -> Result<()> {
    check_nonempty(panels, "series panels")?;
    let mut ranges = Vec::with_capacity(panels.len());
    for panel in panels {
        let pts: Vec<(f64, f64)> = panel
            .lines
            .iter()
            .flat_map(|(_, p)| p.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if pts.is_empty() {
            return Err(Error::Empty { what: "finite series points" });
        }
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in pts {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let pad = if y1 > y0 { (y1 - y0) * 0.05 } else { 0.5 };
        ranges.push((x0, x1, y0 - pad, y1 + pad));
    }
    let width = SERIES_PANEL_SIZE.0 * panels.len() as u32;
    render(path, (width, SERIES_PANEL_SIZE.1 + 40), |root| {
        let root = root.titled(title, title_style(24)).map_err(plot_err)?;
        let areas = root.split_evenly((1, panels.len()));
        for ((panel, area), &(x0, x1, y0, y1)) in panels.iter().zip(&areas).zip(&ranges) {
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, title_style(18))
                .margin(15)
                .x_label_area_size(45)
                .y_label_area_size(60)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(plot_err)?;
            chart
                .configure_mesh()
                .max_light_lines(1)
                .x_desc(panel.x_desc.as_str())
                .y_desc(panel.y_desc.as_str())
                .label_style(text_style(14))
                .axis_desc_style(text_style(16))
                .draw()
                .map_err(plot_err)?;
            for (i, (name, points)) in panel.lines.iter().enumerate() {
                let color = series_color(i);
                let finite: Vec<(f64, f64)> = points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(finite, color.stroke_width(2)))
                    .map_err(plot_err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            draw_legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    })
}
