//! Bar charts: named categories with one or more sets of bars, side by side or stacked (the share of
//! heads per score band, fig. 3; failure classes per K, fig. 9; QA F1 per mask, fig. 8), and the
//! sorted-heads chart of fig. 4 (each head's mean score as a bar, its activation frequency as a dot).

use crate::error::PlotError;
use crate::font::ensure_font;
use crate::line::{short_number, PALETTE};
use crate::FONT_FAMILY;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

/// One named set of bars: one height per category.
#[derive(Debug, Clone, PartialEq)]
pub struct Bars {
    /// Legend name.
    pub name: String,
    /// One value per category, in category order; non-finite values draw no bar.
    pub values: Vec<f64>,
}

/// Default size of a bar chart and of a sorted-heads chart.
pub const BAR_CHART_SIZE: (u32, u32) = (900, 500);

/// Values are printed over the bars when there are at most this many bars.
const MAX_LABELLED_BARS: usize = 40;

/// Checks that every set of bars has one value per category and that there are categories.
pub(crate) fn check_bars(categories: &[String], bars: &[Bars]) -> Result<(), PlotError> {
    if categories.is_empty() || bars.is_empty() {
        return Err(PlotError::shape(bars.len(), categories.len(), "a bar chart needs at least one category and one set of bars"));
    }
    if let Some(b) = bars.iter().find(|b| b.values.len() != categories.len()) {
        return Err(PlotError::shape(
            bars.len(),
            categories.len(),
            format!("bars {:?} have {} values for {} categories", b.name, b.values.len(), categories.len()),
        ));
    }
    Ok(())
}

/// A value as printed over its bar: whole numbers plainly, others with two decimals.
fn value_label(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Bar chart with a category per x position: the sets of `bars` side by side in each category, or one on
/// top of the other when `stacked` (then the stack's total is printed over it). The y axis runs from 0
/// to a little above the tallest bar (or stack); values are printed over the bars when there are few;
/// a legend names the sets when there is more than one.
pub fn draw_bar_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    categories: &[String],
    bars: &[Bars],
    stacked: bool,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(), PlotError> {
    check_bars(categories, bars)?;
    ensure_font()?;
    let n = categories.len();
    let value = |b: &Bars, c: usize| b.values[c].max(0.0);
    let finite = |b: &Bars, c: usize| b.values[c].is_finite();
    let top = (0..n)
        .map(|c| {
            let vals = bars.iter().filter(|b| finite(b, c)).map(|b| value(b, c));
            if stacked {
                vals.sum::<f64>()
            } else {
                vals.fold(0.0, f64::max)
            }
        })
        .fold(0.0, f64::max);
    // Room above the tallest bar for its value, and for the legend when there is one.
    let headroom = if bars.len() > 1 { 1.12 + 0.07 * bars.len() as f64 } else { 1.12 };
    let y_max = if top > 0.0 { top * headroom } else { 1.0 };
    area.fill(&WHITE).map_err(PlotError::drawing)?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT_FAMILY, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(n as f64 - 0.5), 0.0..y_max)
        .map_err(PlotError::drawing)?;
    let label_of = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            categories[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.min(40))
        .x_label_formatter(&label_of)
        .y_label_formatter(&short_number)
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style((FONT_FAMILY, 13))
        .axis_desc_style((FONT_FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(PlotError::drawing)?;
    let sets = bars.len();
    let group = 0.8;
    let width = if stacked { group } else { group / sets as f64 };
    let labelled = n * if stacked { 1 } else { sets } <= MAX_LABELLED_BARS;
    let text = TextStyle::from((FONT_FAMILY, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    let mut base = vec![0.0; n];
    for (s, b) in bars.iter().enumerate() {
        let colour = PALETTE[s % PALETTE.len()];
        let mut rects = Vec::new();
        for (c, stack) in base.iter_mut().enumerate() {
            if !finite(b, c) {
                continue;
            }
            let v = value(b, c);
            let (x0, y0) = if stacked { (c as f64 - group / 2.0, *stack) } else { (c as f64 - group / 2.0 + s as f64 * width, 0.0) };
            rects.push(Rectangle::new([(x0, y0), (x0 + width, y0 + v)], colour.filled()));
            if stacked {
                *stack += v;
            } else if labelled {
                chart
                    .draw_series(std::iter::once(Text::new(value_label(b.values[c]), (x0 + width / 2.0, v), text.clone())))
                    .map_err(PlotError::drawing)?;
            }
        }
        chart
            .draw_series(rects)
            .map_err(PlotError::drawing)?
            .label(b.name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    if stacked && labelled {
        let totals = base.iter().enumerate().map(|(c, &t)| Text::new(value_label(t), (c as f64, t), text.clone()));
        chart.draw_series(totals).map_err(PlotError::drawing)?;
    }
    if sets > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT_FAMILY, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(PlotError::drawing)?;
    }
    Ok(())
}

/// Checks the sorted-heads chart's inputs: as many scores and frequencies as heads, at least one head.
pub(crate) fn check_heads(heads: &[String], scores: &[f64], frequencies: &[f64]) -> Result<(), PlotError> {
    if heads.is_empty() {
        return Err(PlotError::shape(0, 0, "no heads to draw"));
    }
    if scores.len() != heads.len() || frequencies.len() != heads.len() {
        return Err(PlotError::shape(
            heads.len(),
            2,
            format!("{} heads need as many scores and frequencies, got {} and {}", heads.len(), scores.len(), frequencies.len()),
        ));
    }
    Ok(())
}

/// Heads named over their bars: the strongest few (they are sorted strongest first).
const NAMED_HEADS: usize = 6;

/// The sorted-heads chart of fig. 4: heads in the order given (strongest first) along x, by rank from 1, each head's
/// mean retrieval score as a bar and its activation frequency (share of tests in which it hit) as a dot,
/// both on one 0-1 axis (higher if a score exceeds 1, as in the published files); the strongest heads
/// with a score above 0 are named over their bars.
pub fn draw_head_activity<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    heads: &[String],
    scores: &[f64],
    frequencies: &[f64],
    title: &str,
) -> Result<(), PlotError> {
    check_heads(heads, scores, frequencies)?;
    ensure_font()?;
    let n = heads.len();
    let top = scores.iter().chain(frequencies).copied().filter(|v| v.is_finite()).fold(1.0, f64::max);
    area.fill(&WHITE).map_err(PlotError::drawing)?;
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT_FAMILY, 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..(n as f64 + 0.5), 0.0..top * 1.12)
        .map_err(PlotError::drawing)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x: &f64| if x.fract() == 0.0 && *x >= 1.0 { format!("{x:.0}") } else { String::new() })
        .x_desc("head rank (by mean retrieval score)")
        .y_desc("score / frequency")
        .label_style((FONT_FAMILY, 13))
        .axis_desc_style((FONT_FAMILY, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(PlotError::drawing)?;
    let (bar, dot) = (PALETTE[0], PALETTE[1]);
    let half = 0.4;
    let rects = scores
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| Rectangle::new([(i as f64 + 1.0 - half, 0.0), (i as f64 + 1.0 + half, v.max(0.0))], bar.filled()));
    chart
        .draw_series(rects)
        .map_err(PlotError::drawing)?
        .label("mean retrieval score")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], bar.filled()));
    let radius = if n > 200 { 1 } else { 3 };
    let dots =
        frequencies.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| Circle::new((i as f64 + 1.0, v), radius, dot.filled()));
    chart
        .draw_series(dots)
        .map_err(PlotError::drawing)?
        .label("activation frequency")
        .legend(move |(x, y)| Circle::new((x + 6, y), 4, dot.filled()));
    // Written upwards from the bar's top, so that neighbouring names do not run into each other.
    let text = TextStyle::from((FONT_FAMILY, 12).into_font()).transform(FontTransform::Rotate270).pos(Pos::new(HPos::Left, VPos::Center));
    let named = (0..n.min(NAMED_HEADS))
        .filter(|&i| scores[i] > 0.0)
        .map(|i| Text::new(format!(" {}", heads[i]), (i as f64 + 1.0, scores[i]), text.clone()));
    chart.draw_series(named).map_err(PlotError::drawing)?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT_FAMILY, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(PlotError::drawing)?;
    Ok(())
}
