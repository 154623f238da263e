//! The layers x heads retrieval-score heatmap (paper fig. 5).

use crate::chart::{nice_ticks, render, AxisNames, CellMap, ChartSpec, Layout, Legend};
use crate::colormap::{correlation_color, score_color};
use crate::error::PlotError;
use crate::grid::Grid;
use plotters::coord::Shift;
use plotters::prelude::*;

/// The colour scale never tops out below this, so an all-zero model does not stretch noise.
const MIN_SCALE: f64 = 0.1;

/// Pixel size `(width, height)` of a saved head heatmap: 240 + 14 px per head wide and
/// 140 + 10 px per layer high, at least 640x480 and at most 4000x4000.
pub fn head_heatmap_size(scores: &Grid) -> (u32, u32) {
    let grow = |base: usize, per: usize, n: usize, min: usize| base.saturating_add(per.saturating_mul(n)).clamp(min, 4000) as u32;
    (grow(240, 14, scores.cols, 640), grow(140, 10, scores.rows, 480))
}

/// Top of the colour scale: the largest finite score, at least [`MIN_SCALE`].
pub(crate) fn scale_max(scores: &Grid) -> f64 {
    scores.finite_max().unwrap_or(0.0).max(MIN_SCALE)
}

/// How a head grid's values map to colours.
#[derive(Clone, Copy)]
enum Scale {
    /// Viridis from 0 to the largest value (at least [`MIN_SCALE`]).
    FromZero,
    /// Blue-white-red, symmetric about 0 ([`difference_scale`]).
    Symmetric,
}

/// Builds the chart description of a layers x heads grid and hands it to `f`: the one layout every
/// head chart (scores, shares, score changes) shares.
fn head_spec<T>(values: &Grid, title: &str, names: &AxisNames, scale: Scale, f: impl FnOnce(&ChartSpec) -> T) -> T {
    let (legend, color): (Legend, Box<dyn Fn(f64) -> RGBColor>) = match scale {
        Scale::FromZero => {
            let max = scale_max(values);
            (Legend { min: 0.0, max, ticks: nice_ticks(max), caption: names.legend.to_string() }, Box::new(move |v| score_color(v, max)))
        }
        Scale::Symmetric => {
            let m = difference_scale(values);
            let up = nice_ticks(m);
            let mut ticks: Vec<(f64, String)> = up.iter().rev().filter(|(v, _)| *v > 0.0).map(|(v, l)| (-v, format!("-{l}"))).collect();
            ticks.extend(up);
            (Legend { min: -m, max: m, ticks, caption: names.legend.to_string() }, Box::new(move |v| correlation_color(v / m)))
        }
    };
    let spec = ChartSpec {
        title,
        grid: values,
        x_name: names.x,
        // A hybrid's rows are its attention layers, labelled with their numbers in the model.
        y_name: if values.row_numbers.is_some() { names.y_attention } else { names.y },
        col_labels: (0..values.cols).map(|c| c.to_string()).collect(),
        row_labels: row_labels(values),
        legend,
        color: &*color,
    };
    f(&spec)
}

/// A head grid's row labels: its layers' numbers ([`Grid::row_numbers`], a hybrid's attention
/// layers), or 0..rows.
pub(crate) fn row_labels(values: &Grid) -> Vec<String> {
    match &values.row_numbers {
        Some(numbers) => numbers.iter().map(|n| n.to_string()).collect(),
        None => (0..values.rows).map(|r| r.to_string()).collect(),
    }
}

/// Lays out and draws a head grid on `area`.
fn draw_head_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    values: &Grid,
    title: &str,
    names: &AxisNames,
    scale: Scale,
) -> Result<(), PlotError> {
    head_spec(values, title, names, scale, |spec| {
        let layout = Layout::compute(area, spec)?;
        render(area, spec, &layout)
    })
}

/// Where a head heatmap of `scores` goes on `area` (the same layout [`draw_head_heatmap`] uses).
#[cfg(test)]
pub(crate) fn heatmap_layout<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scores: &Grid, title: &str) -> Result<Layout, PlotError> {
    head_spec(scores, title, &AxisNames::HEAD_SCORES, Scale::FromZero, |spec| Layout::compute(area, spec))
}

/// Layers x heads heatmap of retrieval scores (paper fig. 5): y axis = layer (layer 0 at the TOP),
/// x axis = head, colour = viridis score from 0 to the grid max (at least 0.1 so an all-zero model
/// does not stretch noise), a colour bar legend with ticks, the caller's title, axis labels "head"
/// and "layer"; missing/NaN cells are grey.
pub fn draw_head_heatmap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, scores: &Grid, title: &str) -> Result<(), PlotError> {
    draw_head_grid(area, scores, title, &AxisNames::HEAD_SCORES, Scale::FromZero)
}

/// [`draw_head_heatmap`] of any per-head value (e.g. activation frequency) with the axis and legend
/// words of `names` (e.g. in the reader's language); the layout is the same for the same words.
pub fn draw_head_heatmap_named<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    values: &Grid,
    title: &str,
    names: &AxisNames,
) -> Result<(), PlotError> {
    draw_head_grid(area, values, title, names, Scale::FromZero)
}

/// Where the cells of [`draw_head_heatmap_named`] with `names` lie on `area`: row = layer, column = head.
pub fn head_heatmap_cells<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    scores: &Grid,
    title: &str,
    names: &AxisNames,
) -> Result<CellMap, PlotError> {
    head_spec(scores, title, names, Scale::FromZero, |spec| Layout::compute(area, spec)).map(|l| CellMap::from(&l))
}

/// The largest change [`draw_head_difference`] colours fully: the largest |value|, at least
/// [`MIN_SCALE`], so that noise between two runs is not stretched to full colour.
pub(crate) fn difference_scale(diff: &Grid) -> f64 {
    let m = diff.values.iter().flatten().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    m.max(MIN_SCALE)
}

/// Layers x heads heatmap of a change between two runs (`diff` = one run's scores minus
/// another's): blue where a head lost score, white where it kept it, red where it gained, on a scale
/// symmetric about 0 (ColorBrewer's RdBu, [`correlation_color`]); same layout as
/// [`draw_head_heatmap`].
pub fn draw_head_difference<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    diff: &Grid,
    title: &str,
    names: &AxisNames,
) -> Result<(), PlotError> {
    draw_head_grid(area, diff, title, names, Scale::Symmetric)
}
