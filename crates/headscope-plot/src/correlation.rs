//! The model x model correlation matrix of retrieval scores (paper fig. 6): which models share their
//! retrieval heads. Core computes the correlations (`headscope_core::analysis`); this draws them.

use crate::chart::{render, ChartSpec, Layout, Legend};
use crate::colormap::correlation_color;
use crate::error::PlotError;
use crate::font::FONT_FAMILY;
use crate::grid::Grid;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Pixels a name's character may take at the tick-label size, rounded up so that sized images never
/// have to thin out name labels (DejaVu Sans averages about 7.5 px at that size).
const PX_PER_CHAR: usize = 9;
/// Largest text size of the printed cell values.
const VALUE_PX: f64 = 15.0;
/// Dark text for light cells; light cells are those with |r| at most this.
const LIGHT_CELL_MAX: f64 = 0.55;
const DARK_TEXT: RGBColor = RGBColor(0x20, 0x20, 0x20);

/// Pixel size `(width, height)` of a saved correlation matrix: wide enough that every model name fits
/// under its column, at least 480x400 and at most 4000x4000.
pub fn correlation_matrix_size(names: &[String]) -> (u32, u32) {
    let chars = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let label = chars.saturating_mul(PX_PER_CHAR);
    let cell_w = (label + 16).max(64);
    let n = names.len();
    let w = n.saturating_mul(cell_w).saturating_add(label).saturating_add(200);
    let h = n.saturating_mul(60).saturating_add(200);
    (w.clamp(480, 4000) as u32, h.clamp(400, 4000) as u32)
}

/// Checks that `matrix` is `names.len()` square and turns it into a grid.
pub(crate) fn to_grid(names: &[String], matrix: &[Vec<f64>]) -> Result<Grid, PlotError> {
    let n = names.len();
    let cols = matrix.first().map_or(0, Vec::len);
    if matrix.len() != n || matrix.iter().any(|row| row.len() != n) {
        return Err(PlotError::shape(
            matrix.len(),
            cols,
            format!("a correlation matrix of {n} models needs {n} rows of {n} values, one per name"),
        ));
    }
    let mut grid = Grid::new(n, n);
    for (r, row) in matrix.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            grid.set(r, c, v);
        }
    }
    Ok(grid)
}

/// Builds the chart description of a correlation matrix and hands it to `f`.
fn with_spec<T>(
    names: &[String],
    matrix: &[Vec<f64>],
    title: &str,
    f: impl FnOnce(&ChartSpec) -> Result<T, PlotError>,
) -> Result<T, PlotError> {
    let grid = to_grid(names, matrix)?;
    let color = |v: f64| correlation_color(v);
    let ticks = [-1.0, -0.5, 0.0, 0.5, 1.0].map(|v: f64| (v, format!("{v}"))).to_vec();
    let spec = ChartSpec {
        title,
        grid: &grid,
        x_name: "model",
        y_name: "model",
        col_labels: names.to_vec(),
        row_labels: names.to_vec(),
        legend: Legend { min: -1.0, max: 1.0, ticks, caption: "r".to_string() },
        color: &color,
    };
    f(&spec)
}

/// Where a correlation matrix goes on `area` (the same layout [`draw_correlation_matrix`] uses).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn correlation_layout<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    names: &[String],
    matrix: &[Vec<f64>],
    title: &str,
) -> Result<Layout, PlotError> {
    with_spec(names, matrix, title, |spec| Layout::compute(area, spec))
}

/// Model x model correlation heatmap (paper fig. 6): `matrix[i][j]` is the correlation of model
/// `names[i]` (row `i`, from the top) with model `names[j]` (column `j`); colour = diverging
/// blue (-1) - white (0) - red (+1) ([`correlation_color`]), each cell's value printed in it with two
/// decimals (when it fits), names on both axes, a colour bar from -1 to 1; NaN cells are grey.
pub fn draw_correlation_matrix<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    names: &[String],
    matrix: &[Vec<f64>],
    title: &str,
) -> Result<(), PlotError> {
    with_spec(names, matrix, title, |spec| {
        let layout = Layout::compute(area, spec)?;
        render(area, spec, &layout)?;
        draw_values(area, spec.grid, &layout)
    })
}

/// Prints every finite value in its cell, in a size that fits the cells, skipping all of them when
/// even the widest does not fit (a crowded canvas then shows colours only).
fn draw_values<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, grid: &Grid, layout: &Layout) -> Result<(), PlotError> {
    let cell = layout.cell_rect(0, 0);
    let px = VALUE_PX.min(cell.height() as f64 * 0.45);
    let style = TextStyle::from((FONT_FAMILY, px).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    let (w, h) = area.estimate_text_size("-0.00", &style).map_err(PlotError::drawing)?;
    if w as i32 + 4 > cell.width() - layout.gap || h as i32 + 2 > cell.height() - layout.gap {
        return Ok(());
    }
    for r in 0..grid.rows {
        for c in 0..grid.cols {
            let Some(v) = grid.finite(r, c) else { continue };
            let color = if v.abs() <= LIGHT_CELL_MAX { DARK_TEXT } else { WHITE };
            let rect = layout.cell_rect(r, c);
            // Centre of the coloured part of the cell (the gap is cut from its right and bottom).
            let at = ((rect.x0 + rect.x1 - layout.gap) / 2, (rect.y0 + rect.y1 - layout.gap) / 2);
            let text = match format!("{v:.2}") {
                // A tiny negative value would print as "-0.00".
                t if t == "-0.00" => "0.00".to_owned(),
                t => t,
            };
            area.draw(&Text::new(text, at, style.color(&color))).map_err(PlotError::drawing)?;
        }
    }
    Ok(())
}
