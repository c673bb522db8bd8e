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
/// dashed reference line at 0.5 (a perfectly balanced attribute). The image is
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
            .build_cartesian_2d(0.0f64..1.0f64, (0..n - 1).into_segmented())
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_labels(11)
            .y_labels(names.len())
            .x_label_formatter(&|x| format!("{:.0}%", x * 100.0))
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
            .position(SeriesLabelPosition::LowerRight)
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
