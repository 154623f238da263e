//! The needle-in-a-haystack pass grid (after Greg Kamradt's plots).

use crate::chart::{nice_ticks, render, AxisNames, CellMap, ChartSpec, Layout, Legend};
use crate::colormap::{recall_color, RecallPalette};
use crate::error::PlotError;
use crate::grid::Grid;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Pixel size `(width, height)` of a saved NIAH grid.
pub const NIAH_SIZE: (u32, u32) = (900, 500);

/// A depth label: `25%`, or `12.5%` when the depth is not a whole percent.
fn depth_label(d: f64) -> String {
    if (d - d.round()).abs() < 1e-9 {
        format!("{d:.0}%")
    } else {
        format!("{d:.1}%")
    }
}

/// Builds the chart description of a NIAH grid (after checking the label counts) and hands it to `f`.
fn with_spec<T>(
    grid: &Grid,
    lengths: &[usize],
    depths: &[f64],
    title: &str,
    palette: RecallPalette,
    names: &AxisNames,
    f: impl FnOnce(&ChartSpec) -> Result<T, PlotError>,
) -> Result<T, PlotError> {
    let color = |v: f64| recall_color(v, palette);
    let spec = ChartSpec {
        title,
        grid,
        x_name: names.x,
        y_name: names.y,
        col_labels: lengths.iter().map(|l| l.to_string()).collect(),
        row_labels: depths.iter().map(|&d| depth_label(d)).collect(),
        legend: Legend { min: 0.0, max: 1.0, ticks: nice_ticks(1.0), caption: names.legend.to_string() },
        color: &color,
    };
    f(&spec)
}

/// Where a NIAH grid goes on `area` (the same layout [`draw_niah_grid`] uses).
pub(crate) fn niah_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    grid: &Grid,
    lengths: &[usize],
    depths: &[f64],
    title: &str,
    names: &AxisNames,
) -> Result<Layout, PlotError> {
    with_spec(grid, lengths, depths, title, RecallPalette::Niah, names, |spec| Layout::compute(area, spec))
}

/// NIAH pass grid like Greg Kamradt's needle-in-a-haystack plots: x = context length in tokens
/// (`lengths`, one per column), y = needle depth in percent (`depths`, one per row, row 0 at the
/// top, so give them ascending for 0% at top); value = answer recall 0..1 coloured red (0) ->
/// yellow (0.5) -> green (1), missing/NaN = light grey; colour bar; title.
pub fn draw_niah_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    grid: &Grid,
    lengths: &[usize],
    depths: &[f64],
    title: &str,
) -> Result<(), PlotError> {
    draw_niah_grid_in(area, grid, lengths, depths, title, RecallPalette::Niah, &AxisNames::NIAH)
}

/// [`draw_niah_grid`] in another palette, with the axis and legend words of `names` (the layout is
/// the same for the same words).
pub fn draw_niah_grid_in<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    grid: &Grid,
    lengths: &[usize],
    depths: &[f64],
    title: &str,
    palette: RecallPalette,
    names: &AxisNames,
) -> Result<(), PlotError> {
    with_spec(grid, lengths, depths, title, palette, names, |spec| {
        let layout = Layout::compute(area, spec)?;
        render(area, spec, &layout)
    })
}

/// Where the cells of [`draw_niah_grid_in`] with `names` lie on `area`: row = depth, column = length.
pub fn niah_grid_cells<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    grid: &Grid,
    lengths: &[usize],
    depths: &[f64],
    title: &str,
    names: &AxisNames,
) -> Result<CellMap, PlotError> {
    niah_layout(area, grid, lengths, depths, title, names).map(|l| CellMap::from(&l))
}
