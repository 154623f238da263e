//! The one chart both public charts are made of: a title, a grid of coloured cells with row and
//! column labels, two axis names and a vertical colour bar on the right.
//!
//! [`Layout::compute`] places everything in pixels (the drawing and the tests use the same
//! numbers); [`render`] draws it.

use crate::colormap::MISSING_COLOR;
use crate::error::PlotError;
use crate::font::{ensure_font, FONT_FAMILY};
use crate::grid::Grid;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontTransform;

const PAD: i32 = 10;
const TITLE_PX: f64 = 24.0;
const TICK_PX: f64 = 15.0;
const NAME_PX: f64 = 17.0;
const TICK_LEN: i32 = 4;
const BAR_GAP: i32 = 16;
const BAR_W: i32 = 16;
const SWATCH: i32 = 12;
const NO_DATA: &str = "no data";

/// The words a grid chart writes besides its title and tick labels: the axis names and the legend's
/// caption. The constants are the English ones the CLI's files use; a page in another language
/// passes its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisNames<'a> {
    /// Under the x axis.
    pub x: &'a str,
    /// Beside the y axis.
    pub y: &'a str,
    /// Beside the y axis of a head grid whose rows are a hybrid's attention layers ([`Grid::row_numbers`]).
    pub y_attention: &'a str,
    /// Over the colour bar.
    pub legend: &'a str,
}

impl AxisNames<'static> {
    /// The NIAH grid's.
    pub const NIAH: AxisNames<'static> =
        AxisNames { x: "context length (tokens)", y: "needle depth", y_attention: "needle depth", legend: "recall" };
    /// A head heatmap of retrieval scores.
    pub const HEAD_SCORES: AxisNames<'static> = AxisNames { x: "head", y: "layer", y_attention: "attention layer", legend: "score" };
    /// A head heatmap of a change between two runs.
    pub const HEAD_CHANGE: AxisNames<'static> = AxisNames { x: "head", y: "layer", y_attention: "attention layer", legend: "change" };
}
const TEXT: RGBColor = RGBColor(0x20, 0x20, 0x20);
const FRAME: RGBColor = RGBColor(0x60, 0x60, 0x60);

/// The colour bar: its range, labelled ticks and caption.
pub(crate) struct Legend {
    /// Value at the bottom of the bar.
    pub min: f64,
    /// Value at the top of the bar.
    pub max: f64,
    /// Labelled tick values, bottom to top.
    pub ticks: Vec<(f64, String)>,
    /// Word written above the bar.
    pub caption: String,
}

/// Everything a cell chart shows, independent of where it is drawn.
pub(crate) struct ChartSpec<'a> {
    pub title: &'a str,
    pub grid: &'a Grid,
    /// Name of the x axis, written under the column labels.
    pub x_name: &'a str,
    /// Name of the y axis, written (rotated) left of the row labels.
    pub y_name: &'a str,
    /// One label per column.
    pub col_labels: Vec<String>,
    /// One label per row; row 0 is drawn at the top.
    pub row_labels: Vec<String>,
    pub legend: Legend,
    /// Colour of a finite value (missing cells are [`MISSING_COLOR`]).
    pub color: &'a dyn Fn(f64) -> RGBColor,
}

/// A pixel rectangle, `x1`/`y1` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
}

impl Rect {
    pub fn width(&self) -> i32 {
        self.x1 - self.x0
    }
    pub fn height(&self) -> i32 {
        self.y1 - self.y0
    }
}

/// Where every part of a cell chart goes, in pixels of the drawing area.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Layout {
    pub width: i32,
    pub height: i32,
    pub rows: usize,
    pub cols: usize,
    /// The cells.
    pub plot: Rect,
    /// The colour bar.
    pub bar: Rect,
    /// Every `row_step`-th row (from row 0) is labelled.
    pub row_step: usize,
    /// Every `col_step`-th column (from column 0) is labelled.
    pub col_step: usize,
    /// White gap between neighbouring cells (0 when cells are small).
    pub gap: i32,
    /// Baseline-free top of the title line (None: no title).
    pub title_y: Option<i32>,
    /// The title as drawn, fitted to the width ([`fit_title`]), and its font size.
    pub title: String,
    pub title_px: f64,
    /// Vertical centre of the x-axis name (and of the "no data" swatch).
    pub x_name_y: i32,
    /// Horizontal centre of the rotated y-axis name.
    pub y_name_x: i32,
    /// Top of the column labels.
    pub col_label_y: i32,
    /// Right edge of the row labels.
    pub row_label_x: i32,
    /// Whether to draw the "no data" swatch.
    pub swatch: bool,
    /// Which legend ticks are labelled (indices into `Legend::ticks`).
    pub legend_ticks: Vec<usize>,
}

fn font(px: f64) -> TextStyle<'static> {
    (FONT_FAMILY, px).into_font().color(&TEXT)
}

/// Width and height of `text` in `style` as the backend will draw it.
fn measure<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, style: &TextStyle) -> Result<(i32, i32), PlotError> {
    if text.is_empty() {
        return Ok((0, 0));
    }
    let (w, h) = area.estimate_text_size(text, style).map_err(PlotError::drawing)?;
    Ok((w as i32, h as i32))
}

/// Smallest font size a title shrinks to before it is cut.
const MIN_TITLE_PX: f64 = 14.0;

/// `title` as it fits in `max_width` pixels: at [`TITLE_PX`], else at a smaller size down to
/// [`MIN_TITLE_PX`], else cut with an ellipsis at that size. A title never runs off the chart's edges
/// (a narrow heatmap of a few heads has room for little).
fn fit_title<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, title: &str, max_width: i32) -> Result<(String, f64), PlotError> {
    let mut px = TITLE_PX;
    loop {
        if measure(area, title, &font(px))?.0 <= max_width {
            return Ok((title.to_string(), px));
        }
        if px <= MIN_TITLE_PX {
            break;
        }
        px = (px - 2.0).max(MIN_TITLE_PX);
    }
    let chars: Vec<char> = title.chars().collect();
    for keep in (0..chars.len()).rev() {
        let cut = format!("{}…", chars[..keep].iter().collect::<String>().trim_end());
        if measure(area, &cut, &font(px))?.0 <= max_width {
            return Ok((cut, px));
        }
    }
    Ok((String::new(), px))
}

fn max_size<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, texts: &[String], style: &TextStyle) -> Result<(i32, i32), PlotError> {
    let mut m = (0, 0);
    for t in texts {
        let (w, h) = measure(area, t, style)?;
        m = (m.0.max(w), m.1.max(h));
    }
    Ok(m)
}

/// The smallest step of 1, 2, 4, 8, ... such that `step` cells of `cell` pixels hold `need` pixels.
fn label_step(cell: f64, need: i32, count: usize) -> usize {
    let mut step = 1usize;
    while (step as f64) * cell < need as f64 && step < count {
        step *= 2;
    }
    step
}

/// Checks that `grid` is drawable with one label per row and column.
pub(crate) fn check_shape(grid: &Grid, row_labels: usize, col_labels: usize) -> Result<(), PlotError> {
    let (rows, cols) = (grid.rows, grid.cols);
    if rows == 0 || cols == 0 {
        return Err(PlotError::shape(rows, cols, "the grid is empty, there is nothing to draw"));
    }
    let cells = rows.checked_mul(cols).ok_or_else(|| PlotError::shape(rows, cols, "too many cells"))?;
    if grid.values.len() != cells {
        return Err(PlotError::shape(rows, cols, format!("values holds {} cells, expected rows x cols = {cells}", grid.values.len())));
    }
    if row_labels != rows {
        return Err(PlotError::shape(rows, cols, format!("{row_labels} row labels given for {rows} rows")));
    }
    if col_labels != cols {
        return Err(PlotError::shape(rows, cols, format!("{col_labels} column labels given for {cols} columns")));
    }
    Ok(())
}

impl Layout {
    /// Places `spec` on `area` (checks the grid shape first).
    pub fn compute<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, spec: &ChartSpec) -> Result<Layout, PlotError> {
        check_shape(spec.grid, spec.row_labels.len(), spec.col_labels.len())?;
        ensure_font()?;
        let (rows, cols) = (spec.grid.rows, spec.grid.cols);
        let (w, h) = area.dim_in_pixel();
        let (width, height) = (w as i32, h as i32);

        let tick = font(TICK_PX);
        let name = font(NAME_PX);
        let (title, title_px) = fit_title(area, spec.title, width - 2 * PAD)?;
        let title_h = measure(area, &title, &font(title_px))?.1;
        let (row_w, row_h) = max_size(area, &spec.row_labels, &tick)?;
        let (col_w, col_h) = max_size(area, &spec.col_labels, &tick)?;
        let legend_labels: Vec<String> = spec.legend.ticks.iter().map(|(_, s)| s.clone()).collect();
        let (leg_w, leg_h) = max_size(area, &legend_labels, &tick)?;
        let (cap_w, cap_h) = measure(area, &spec.legend.caption, &tick)?;
        let x_name_h = measure(area, spec.x_name, &name)?.1;
        let y_name_h = measure(area, spec.y_name, &name)?.1;
        let swatch = spec.grid.has_missing();
        let no_data_w = if swatch { SWATCH + 4 + measure(area, NO_DATA, &tick)?.0 } else { 0 };

        let title_y = (!spec.title.is_empty()).then_some(PAD);
        let top = PAD + if spec.title.is_empty() { 0 } else { title_h + 8 } + cap_h + 8;
        let left = PAD + y_name_h + 8 + row_w + 4 + TICK_LEN;
        let bottom = TICK_LEN + 3 + col_h + 8 + x_name_h.max(SWATCH) + PAD;
        let bar_right = BAR_W + TICK_LEN + 3 + leg_w;
        let right = BAR_GAP + bar_right.max(no_data_w).max(BAR_W / 2 + cap_w / 2) + PAD;

        let plot = Rect { x0: left, y0: top, x1: width - right, y1: height - bottom };
        if plot.width() < 1 || plot.height() < 1 {
            return Err(PlotError::Drawing(format!(
                "the drawing area {width}x{height} is too small for a chart (needs about {}x{} pixels)",
                left + right + cols as i32,
                top + bottom + rows as i32
            )));
        }
        let cell_w = plot.width() as f64 / cols as f64;
        let cell_h = plot.height() as f64 / rows as f64;
        let gap = if cell_w >= 10.0 && cell_h >= 10.0 { 1 } else { 0 };
        let col_step = label_step(cell_w, col_w + 8, cols);
        let row_step = label_step(cell_h, row_h + 2, rows);

        let bar = Rect { x0: plot.x1 + BAR_GAP, y0: plot.y0, x1: plot.x1 + BAR_GAP + BAR_W, y1: plot.y1 };
        // Label every tick the bar has room for; otherwise every 2nd, 3rd, ... tick from 0.
        let n = spec.legend.ticks.len();
        let mut legend_ticks: Vec<usize> = (0..n).collect();
        let mut stride = 1;
        while n > 2 && stride < n {
            let spacing = (bar.height() - 1) as f64 * stride as f64 / (n - 1) as f64;
            if spacing >= (leg_h + 3) as f64 {
                break;
            }
            stride += 1;
        }
        if stride > 1 {
            legend_ticks = (0..n).filter(|i| i % stride == 0).collect();
        }

        Ok(Layout {
            width,
            height,
            rows,
            cols,
            plot,
            bar,
            row_step,
            col_step,
            gap,
            title_y,
            title,
            title_px,
            x_name_y: height - PAD - x_name_h.max(SWATCH) / 2,
            y_name_x: PAD + y_name_h / 2,
            col_label_y: plot.y1 + TICK_LEN + 3,
            row_label_x: plot.x0 - TICK_LEN - 4,
            swatch,
            legend_ticks,
        })
    }

    /// Pixel span `[start, end)` of cell `i` of `n` along `0..len` from `origin`.
    fn span(origin: i32, len: i32, i: usize, n: usize) -> (i32, i32) {
        let at = |k: usize| origin + (k as i64 * len as i64 / n as i64) as i32;
        (at(i), at(i + 1))
    }

    /// The pixels of cell (`r`, `c`), `x1`/`y1` exclusive; row 0 is the top row.
    pub fn cell_rect(&self, r: usize, c: usize) -> Rect {
        let (x0, x1) = Self::span(self.plot.x0, self.plot.width(), c, self.cols);
        let (y0, y1) = Self::span(self.plot.y0, self.plot.height(), r, self.rows);
        Rect { x0, y0, x1, y1 }
    }

    /// The centre pixel of cell (`r`, `c`).
    pub fn cell_center(&self, r: usize, c: usize) -> (i32, i32) {
        let rect = self.cell_rect(r, c);
        ((rect.x0 + rect.x1 - 1) / 2, (rect.y0 + rect.y1 - 1) / 2)
    }

    /// The bar pixel row that shows `v`.
    fn bar_y(&self, legend: &Legend, v: f64) -> i32 {
        let span = legend.max - legend.min;
        let t = if span > 0.0 { ((v - legend.min) / span).clamp(0.0, 1.0) } else { 0.0 };
        self.bar.y1 - 1 - (t * (self.bar.height() - 1) as f64).round() as i32
    }
}

/// Where the cells of a drawn chart lie, in pixels of its drawing area: for mapping a click to a cell
/// and for marking cells on top of a drawing (the web page outlines selected and masked heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellMap {
    /// Left edge of the cell block.
    pub x0: i32,
    /// Top edge of the cell block.
    pub y0: i32,
    /// Right edge (exclusive).
    pub x1: i32,
    /// Bottom edge (exclusive).
    pub y1: i32,
    /// Rows of cells (row 0 at the top).
    pub rows: usize,
    /// Columns of cells.
    pub cols: usize,
}

impl CellMap {
    fn layout(&self) -> Layout {
        Layout {
            width: self.x1,
            height: self.y1,
            rows: self.rows,
            cols: self.cols,
            plot: Rect { x0: self.x0, y0: self.y0, x1: self.x1, y1: self.y1 },
            bar: Rect { x0: 0, y0: 0, x1: 0, y1: 0 },
            row_step: 1,
            col_step: 1,
            gap: 0,
            title_y: None,
            title: String::new(),
            title_px: TITLE_PX,
            x_name_y: 0,
            y_name_x: 0,
            col_label_y: 0,
            row_label_x: 0,
            swatch: false,
            legend_ticks: vec![],
        }
    }

    /// The `(row, column)` of the cell under pixel (`x`, `y`), if any.
    pub fn cell_at(&self, x: i32, y: i32) -> Option<(usize, usize)> {
        if x < self.x0 || x >= self.x1 || y < self.y0 || y >= self.y1 {
            return None;
        }
        let layout = self.layout();
        let r = (0..self.rows).find(|&r| y < layout.cell_rect(r, 0).y1)?;
        let c = (0..self.cols).find(|&c| x < layout.cell_rect(0, c).x1)?;
        Some((r, c))
    }

    /// The pixels `(x0, y0, x1, y1)` of cell (`r`, `c`), `x1`/`y1` exclusive, as the chart drew it.
    pub fn cell_rect(&self, r: usize, c: usize) -> (i32, i32, i32, i32) {
        let rect = self.layout().cell_rect(r, c);
        (rect.x0, rect.y0, rect.x1, rect.y1)
    }
}

impl From<&Layout> for CellMap {
    fn from(l: &Layout) -> Self {
        CellMap { x0: l.plot.x0, y0: l.plot.y0, x1: l.plot.x1, y1: l.plot.y1, rows: l.rows, cols: l.cols }
    }
}

/// Draws `spec` onto `area` at the places `layout` gives.
pub(crate) fn render<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, spec: &ChartSpec, layout: &Layout) -> Result<(), PlotError> {
    let d = PlotError::drawing;
    area.fill(&WHITE).map_err(d)?;
    let grid = spec.grid;

    // Cells.
    for r in 0..layout.rows {
        for c in 0..layout.cols {
            let rect = layout.cell_rect(r, c);
            // Filled rectangles end exclusive on the bitmap, SVG and canvas backends.
            let (x1, y1) = (rect.x1 - layout.gap, rect.y1 - layout.gap);
            if x1 <= rect.x0 || y1 <= rect.y0 {
                continue;
            }
            let color = grid.finite(r, c).map_or(MISSING_COLOR, spec.color);
            area.draw(&Rectangle::new([(rect.x0, rect.y0), (x1, y1)], color.filled())).map_err(d)?;
        }
    }
    let p = layout.plot;
    area.draw(&Rectangle::new([(p.x0 - 1, p.y0 - 1), (p.x1, p.y1)], FRAME.stroke_width(1))).map_err(d)?;

    // Title.
    if let Some(y) = layout.title_y {
        let style = font(layout.title_px).pos(Pos::new(HPos::Center, VPos::Top));
        area.draw(&Text::new(layout.title.clone(), (layout.width / 2, y), style)).map_err(d)?;
    }

    // Column ticks and labels.
    let tick = font(TICK_PX);
    let col_style = tick.pos(Pos::new(HPos::Center, VPos::Top));
    for c in (0..layout.cols).step_by(layout.col_step) {
        let (x, _) = layout.cell_center(0, c);
        area.draw(&PathElement::new(vec![(x, p.y1), (x, p.y1 + TICK_LEN)], FRAME)).map_err(d)?;
        area.draw(&Text::new(spec.col_labels[c].clone(), (x, layout.col_label_y), col_style.clone())).map_err(d)?;
    }
    // Row ticks and labels.
    let row_style = tick.pos(Pos::new(HPos::Right, VPos::Center));
    for r in (0..layout.rows).step_by(layout.row_step) {
        let (_, y) = layout.cell_center(r, 0);
        area.draw(&PathElement::new(vec![(p.x0 - 1 - TICK_LEN, y), (p.x0 - 1, y)], FRAME)).map_err(d)?;
        area.draw(&Text::new(spec.row_labels[r].clone(), (layout.row_label_x, y), row_style.clone())).map_err(d)?;
    }

    // Axis names.
    let name = font(NAME_PX);
    let x_name = name.pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(spec.x_name.to_string(), ((p.x0 + p.x1) / 2, layout.x_name_y), x_name)).map_err(d)?;
    let y_name = name.transform(FontTransform::Rotate270).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new(spec.y_name.to_string(), (layout.y_name_x, (p.y0 + p.y1) / 2), y_name)).map_err(d)?;

    // Colour bar: one line per pixel row, top = legend max.
    let legend = &spec.legend;
    let b = layout.bar;
    let bar_h = (b.height() - 1).max(1) as f64;
    for y in b.y0..b.y1 {
        let t = (b.y1 - 1 - y) as f64 / bar_h;
        let v = legend.min + t * (legend.max - legend.min);
        area.draw(&Rectangle::new([(b.x0, y), (b.x1, y + 1)], (spec.color)(v).filled())).map_err(d)?;
    }
    area.draw(&Rectangle::new([(b.x0 - 1, b.y0 - 1), (b.x1, b.y1)], FRAME.stroke_width(1))).map_err(d)?;
    let leg_style = tick.pos(Pos::new(HPos::Left, VPos::Center));
    for &i in &layout.legend_ticks {
        let (v, label) = &legend.ticks[i];
        let y = layout.bar_y(legend, *v);
        area.draw(&PathElement::new(vec![(b.x1, y), (b.x1 + TICK_LEN, y)], FRAME)).map_err(d)?;
        area.draw(&Text::new(label.clone(), (b.x1 + TICK_LEN + 3, y), leg_style.clone())).map_err(d)?;
    }
    let cap_style = tick.pos(Pos::new(HPos::Center, VPos::Bottom));
    area.draw(&Text::new(legend.caption.clone(), ((b.x0 + b.x1) / 2, b.y0 - 6), cap_style)).map_err(d)?;

    // "No data" swatch, level with the x-axis name.
    if layout.swatch {
        let (x, y) = (b.x0, layout.x_name_y - SWATCH / 2);
        area.draw(&Rectangle::new([(x, y), (x + SWATCH, y + SWATCH)], MISSING_COLOR.filled())).map_err(d)?;
        area.draw(&Rectangle::new([(x, y), (x + SWATCH - 1, y + SWATCH - 1)], FRAME.stroke_width(1))).map_err(d)?;
        let style = tick.pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(NO_DATA, (x + SWATCH + 4, layout.x_name_y), style)).map_err(d)?;
    }
    Ok(())
}

/// "Nice" legend ticks from 0 to `max` (about five steps of 1, 2, 2.5 or 5 x 10^k), labelled with
/// as many decimals as the step needs.
pub(crate) fn nice_ticks(max: f64) -> Vec<(f64, String)> {
    if !(max.is_finite() && max > 0.0) {
        return vec![(0.0, "0".to_string())];
    }
    let raw = max / 5.0;
    let base = 10f64.powf(raw.log10().floor());
    let m = raw / base;
    let nice = match m {
        m if m <= 1.0 + 1e-9 => 1.0,
        m if m <= 2.0 + 1e-9 => 2.0,
        m if m <= 2.5 + 1e-9 => 2.5,
        m if m <= 5.0 + 1e-9 => 5.0,
        _ => 10.0,
    };
    let step = nice * base;
    let decimals = (0..9usize)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.max(1.0)
        })
        .unwrap_or(9);
    let mut ticks = Vec::new();
    let mut k = 0u32;
    while k as f64 * step <= max * (1.0 + 1e-9) && k <= 20 {
        let v = k as f64 * step;
        ticks.push((v, format!("{v:.decimals$}")));
        k += 1;
    }
    ticks
}
