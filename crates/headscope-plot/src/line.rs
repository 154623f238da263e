//! Line charts (training-loss curves): one or more named series of (x, y) points.

use crate::error::PlotError;
use crate::font::ensure_font;
use crate::FONT_FAMILY;
use plotters::coord::Shift;
use plotters::prelude::*;

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
}

/// Default size of a line chart.
pub const LINE_CHART_SIZE: (u32, u32) = (900, 500);

const PALETTE: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

/// Draws `series` with axis labels and a legend; non-finite points are skipped.
pub fn draw_line_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(), PlotError> {
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().filter(finite).copied()).collect();
    if all.is_empty() {
        return Err(PlotError::shape(series.len(), 0, "no finite points to draw"));
    }
    ensure_font()?;
    let (x0, x1) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
    area.fill(&WHITE).map_err(PlotError::drawing)?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT_FAMILY, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(PlotError::drawing)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT_FAMILY, 13))
        .axis_desc_style((FONT_FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(PlotError::drawing)?;
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(s.points.iter().filter(finite).copied(), colour.stroke_width(2)))
            .map_err(PlotError::drawing)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .label_font((FONT_FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(PlotError::drawing)?;
    Ok(())
}
