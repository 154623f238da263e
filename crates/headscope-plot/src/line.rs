//! Line charts: one or more named series of (x, y) points (training-loss curves), optionally with a
//! shaded band per series (the spread of random-K masking over seeds, fig. 7) and a fixed y range.

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

/// A shaded range around one series: at each x, from `low` to `high` (e.g. the smallest and largest
/// value over seeds).
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    /// Index of the series (in the series list) whose colour the band takes.
    pub series: usize,
    /// `(x, low, high)` in x order.
    pub points: Vec<(f64, f64, f64)>,
}

/// A series with more points than this is drawn as a line alone, without dots.
const MAX_DOTS: usize = 40;

/// Default size of a line chart.
pub const LINE_CHART_SIZE: (u32, u32) = (900, 500);

/// Series colours, in order (matplotlib's "tab10").
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws `series` with axis labels and a legend; non-finite points are skipped.
pub fn draw_line_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(), PlotError> {
    draw_lines(area, series, &[], None, false, (title, x_label, y_label))
}

/// Draws `series` as lines with a dot at every point (series of at most 40 points), each band shaded in its series' colour under the
/// lines, with axis labels and a legend. `y_range` fixes the y axis (pass rates: `Some((0.0, 1.0))`);
/// None fits it to the data. Non-finite points are skipped; a band naming a series that does not exist
/// is a shape error.
pub fn draw_line_chart_with_bands<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    bands: &[Band],
    y_range: Option<(f64, f64)>,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(), PlotError> {
    draw_lines(area, series, bands, y_range, true, (title, x_label, y_label))
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    series: &[Series],
    bands: &[Band],
    y_range: Option<(f64, f64)>,
    dots: bool,
    (title, x_label, y_label): (&str, &str, &str),
) -> Result<(), PlotError> {
    check_lines(series, bands, y_range)?;
    ensure_font()?;
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let band_finite = |p: &&(f64, f64, f64)| p.0.is_finite() && p.1.is_finite() && p.2.is_finite();
    let mut all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().filter(finite).copied()).collect();
    for b in bands {
        all.extend(b.points.iter().filter(band_finite).flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]));
    }
    let (x0, x1) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = match y_range {
        Some(r) => r,
        None => {
            let (y0, y1) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
            let pad = ((y1 - y0) * 0.05).max(1e-9);
            (y0 - pad, y1 + pad)
        }
    };
    // A single x (one point) still needs a non-empty axis; dots get a little room at both ends.
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (x0 - 0.5, x0 + 0.5) };
    let xpad = if dots { (x1 - x0) * 0.03 } else { 0.0 };
    area.fill(&WHITE).map_err(PlotError::drawing)?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT_FAMILY, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((x0 - xpad)..(x1 + xpad), y0..y1)
        .map_err(PlotError::drawing)?;
    // Whole-number x (K heads, test counts) over a short range: a label at every whole number, none between.
    let whole = all.iter().all(|p| p.0.fract() == 0.0) && x1 - x0 <= 24.0;
    let x_format = |v: &f64| if whole && v.fract() != 0.0 { String::new() } else { short_number(v) };
    chart
        .configure_mesh()
        .x_labels(if whole { (x1 - x0) as usize + 1 } else { 10 })
        .x_label_formatter(&x_format)
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT_FAMILY, 13))
        .axis_desc_style((FONT_FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(PlotError::drawing)?;
    for b in bands {
        let colour = PALETTE[b.series % PALETTE.len()];
        let pts: Vec<(f64, f64, f64)> = b.points.iter().filter(band_finite).copied().collect();
        if pts.len() >= 2 {
            let outline: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.2)).chain(pts.iter().rev().map(|p| (p.0, p.1))).collect();
            chart.draw_series(std::iter::once(Polygon::new(outline, colour.mix(0.18).filled()))).map_err(PlotError::drawing)?;
        }
        // Whiskers show the range at each x, also where a lone point makes no area.
        chart
            .draw_series(pts.iter().map(|&(x, lo, hi)| PathElement::new(vec![(x, lo), (x, hi)], colour.mix(0.6).stroke_width(1))))
            .map_err(PlotError::drawing)?;
    }
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().filter(finite).copied().collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
            .map_err(PlotError::drawing)?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        // Dots mark the measured points where they are few enough to tell apart.
        if dots && pts.len() <= MAX_DOTS {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, colour.filled()))).map_err(PlotError::drawing)?;
        }
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

/// An axis value without trailing zeros: `3`, `0.25`, `1000` (at most three decimals).
pub(crate) fn short_number(v: &f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// Checks that there is something to draw, that bands name existing series and that a y range is one.
pub(crate) fn check_lines(series: &[Series], bands: &[Band], y_range: Option<(f64, f64)>) -> Result<(), PlotError> {
    let finite = series.iter().flat_map(|s| &s.points).filter(|p| p.0.is_finite() && p.1.is_finite()).count();
    if finite == 0 {
        return Err(PlotError::shape(series.len(), 0, "no finite points to draw"));
    }
    if let Some(b) = bands.iter().find(|b| b.series >= series.len()) {
        return Err(PlotError::shape(
            series.len(),
            0,
            format!("a band belongs to series {} but there are {} series", b.series, series.len()),
        ));
    }
    if let Some((lo, hi)) = y_range {
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(PlotError::shape(series.len(), 0, format!("the y range {lo}..{hi} is empty or not finite")));
        }
    }
    Ok(())
}
