//! HeadScope's charts: retrieval-head heatmaps, needle-in-a-haystack pass grids, model x model
//! correlation matrices, and the line, bar and sorted-heads charts of the paper's other figures.
//!
//! Where this sits in the data flow: **core computes scores** (`headscope-core`) -> **plot draws
//! them** (this crate) -> the CLI writes them to PNG/SVG files ([`save_head_heatmap`],
//! [`save_niah_grid`], [`save_correlation_matrix`]) and the web app shows them on an HTML canvas
//! (plotters' `CanvasBackend` passed to [`draw_head_heatmap`] / [`draw_niah_grid`] /
//! [`draw_correlation_matrix`], which are generic over any
//! [`DrawingBackend`](plotters::prelude::DrawingBackend)).
//!
//! Text uses the embedded DejaVu Sans font ([`FONT_TTF`], registered with plotters' `ab_glyph`
//! support before the first drawing), so PNGs look the same on every machine. SVG and canvas
//! output name the font family [`FONT_FAMILY`]; the web app should load [`FONT_TTF`] under that
//! name (a CSS `@font-face` or the `FontFace` API) so browsers render the same glyphs.
//!
//! PNG text is rasterised by this crate (glyph placement in plotters' own `ab_glyph` path is
//! uneven); everything else, and all SVG/canvas output, is plain plotters. The crate knows nothing
//! of models or tensors: callers fill a [`Grid`].

#![warn(missing_docs)]

mod bars;
mod chart;
pub mod colormap;
mod correlation;
mod error;
mod font;
mod grid;
mod heatmap;
mod line;
mod niah;
mod save;
#[cfg(not(target_arch = "wasm32"))]
mod text;

#[cfg(test)]
mod tests;

pub use bars::{draw_bar_chart, draw_head_activity, Bars, BAR_CHART_SIZE};
pub use chart::{AxisNames, CellMap};
pub use colormap::{correlation_color, pass_color, recall_color, score_color, RecallPalette};
pub use correlation::{correlation_matrix_size, draw_correlation_matrix};
pub use error::PlotError;
pub use font::{FONT_FAMILY, FONT_TTF};
pub use grid::Grid;
pub use heatmap::{draw_head_difference, draw_head_heatmap, draw_head_heatmap_named, head_heatmap_cells, head_heatmap_size};
pub use line::{draw_line_chart, draw_line_chart_with_bands, Band, Series, LINE_CHART_SIZE};
pub use niah::{draw_niah_grid, draw_niah_grid_in, niah_grid_cells, NIAH_SIZE};
pub use save::{
    save_bar_chart, save_correlation_matrix, save_head_activity, save_head_heatmap, save_line_chart, save_line_chart_with_bands,
    save_niah_grid,
};

/// The plotters version the drawing functions take, so callers name the same `DrawingArea` type.
pub use plotters;
