//! Writing charts to PNG or SVG files (what the CLI uses).

use crate::bars::{check_bars, check_heads, draw_bar_chart, draw_head_activity, Bars, BAR_CHART_SIZE};
use crate::correlation::{correlation_matrix_size, draw_correlation_matrix};
use crate::error::PlotError;
use crate::grid::Grid;
use crate::heatmap::{draw_head_heatmap, head_heatmap_size};
use crate::line::{check_lines, draw_line_chart, draw_line_chart_with_bands, Band, Series, LINE_CHART_SIZE};
use crate::niah::{draw_niah_grid, NIAH_SIZE};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// What PNG files are drawn on: the bitmap backend with text rasterised from the embedded font.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type PngBackend<'a> = crate::text::EmbeddedText<BitMapBackend<'a>>;
/// On wasm32 no PNG is written; the plain bitmap backend only keeps the signatures alike.
#[cfg(target_arch = "wasm32")]
pub(crate) type PngBackend<'a> = BitMapBackend<'a>;
#[cfg(not(target_arch = "wasm32"))]
use crate::text::EmbeddedText;

/// The file formats the save helpers write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Png,
    Svg,
}

/// The format `path`'s extension names (case-insensitive), or an error naming the extension.
fn format_of(path: &Path) -> Result<Format, PlotError> {
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    match ext.to_ascii_lowercase().as_str() {
        "png" => Ok(Format::Png),
        "svg" => Ok(Format::Svg),
        _ => Err(PlotError::UnknownFormat { path: path.to_path_buf(), ext }),
    }
}

/// Draws with `draw` into a `size` image and writes it to `path` as PNG or SVG.
fn save_with(
    path: &Path,
    size: (u32, u32),
    draw_png: impl FnOnce(&DrawingArea<PngBackend, Shift>) -> Result<(), PlotError>,
    draw_svg: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    let io = |source| PlotError::Io { path: path.to_path_buf(), error: source };
    match format_of(path)? {
        Format::Svg => {
            let mut svg = String::new();
            {
                let area = SVGBackend::with_string(&mut svg, size).into_drawing_area();
                draw_svg(&area)?;
                area.present().map_err(PlotError::drawing)?;
            }
            std::fs::write(path, svg).map_err(io)
        }
        Format::Png => save_png(path, size, draw_png),
    }
}

/// Renders into memory, then encodes the PNG to `path` (failing early, as an I/O error, when the
/// file cannot be created).
#[cfg(not(target_arch = "wasm32"))]
fn save_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<PngBackend, Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    std::fs::File::create(path).map_err(|source| PlotError::Io { path: path.to_path_buf(), error: source })?;
    let result = {
        let area = EmbeddedText::new(BitMapBackend::new(path, size)).into_drawing_area();
        draw(&area).and_then(|()| area.present().map_err(PlotError::drawing))
    };
    if result.is_err() {
        // Leave no half-drawn file behind (the backend is dropped, so it wrote whatever it had).
        let _ = std::fs::remove_file(path);
    }
    result
}

/// PNG files cannot be encoded on wasm32 (plotters has no encoder there): draw on a canvas instead.
#[cfg(target_arch = "wasm32")]
fn save_png(
    path: &Path,
    _size: (u32, u32),
    _draw: impl FnOnce(&DrawingArea<PngBackend, Shift>) -> Result<(), PlotError>,
) -> Result<(), PlotError> {
    Err(PlotError::Drawing(format!("cannot write {}: PNG encoding is not available on wasm32", path.display())))
}

/// Saves [`draw_head_heatmap`] to `path`, PNG or SVG by extension, sized by [`head_heatmap_size`]
/// (width grows with heads, at least 640x480).
pub fn save_head_heatmap(path: &Path, scores: &Grid, title: &str) -> Result<(), PlotError> {
    crate::chart::check_shape(scores, scores.row_numbers.as_ref().map_or(scores.rows, Vec::len), scores.cols)?;
    format_of(path)?;
    save_with(path, head_heatmap_size(scores), |a| draw_head_heatmap(a, scores, title), |a| draw_head_heatmap(a, scores, title))
}

/// Saves [`draw_niah_grid`] to `path`, PNG or SVG by extension, [`NIAH_SIZE`] (900x500).
pub fn save_niah_grid(path: &Path, grid: &Grid, lengths: &[usize], depths: &[f64], title: &str) -> Result<(), PlotError> {
    crate::chart::check_shape(grid, depths.len(), lengths.len())?;
    format_of(path)?;
    save_with(path, NIAH_SIZE, |a| draw_niah_grid(a, grid, lengths, depths, title), |a| draw_niah_grid(a, grid, lengths, depths, title))
}

/// Saves [`draw_correlation_matrix`] to `path`, PNG or SVG by extension, sized by
/// [`correlation_matrix_size`] (wide enough for every name).
pub fn save_correlation_matrix(path: &Path, names: &[String], matrix: &[Vec<f64>], title: &str) -> Result<(), PlotError> {
    // A matrix that does not fit the names (or no names at all) fails before any file is created.
    crate::chart::check_shape(&crate::correlation::to_grid(names, matrix)?, names.len(), names.len())?;
    format_of(path)?;
    let size = correlation_matrix_size(names);
    save_with(path, size, |a| draw_correlation_matrix(a, names, matrix, title), |a| draw_correlation_matrix(a, names, matrix, title))
}

/// Writes a line chart ([`draw_line_chart`]) to `path` (PNG or SVG by extension).
pub fn save_line_chart(path: &Path, series: &[Series], title: &str, x_label: &str, y_label: &str) -> Result<(), PlotError> {
    save_with(
        path,
        LINE_CHART_SIZE,
        |a| draw_line_chart(a, series, title, x_label, y_label),
        |a| draw_line_chart(a, series, title, x_label, y_label),
    )
}

/// Writes a line chart with bands ([`draw_line_chart_with_bands`]) to `path` (PNG or SVG by extension),
/// [`LINE_CHART_SIZE`]; bad input fails before any file is created.
pub fn save_line_chart_with_bands(
    path: &Path,
    series: &[Series],
    bands: &[Band],
    y_range: Option<(f64, f64)>,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(), PlotError> {
    check_lines(series, bands, y_range)?;
    format_of(path)?;
    save_with(
        path,
        LINE_CHART_SIZE,
        |a| draw_line_chart_with_bands(a, series, bands, y_range, title, x_label, y_label),
        |a| draw_line_chart_with_bands(a, series, bands, y_range, title, x_label, y_label),
    )
}

/// Writes a bar chart ([`draw_bar_chart`]) to `path` (PNG or SVG by extension), [`BAR_CHART_SIZE`];
/// bad input fails before any file is created.
pub fn save_bar_chart(
    path: &Path,
    categories: &[String],
    bars: &[Bars],
    stacked: bool,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(), PlotError> {
    check_bars(categories, bars)?;
    format_of(path)?;
    save_with(
        path,
        BAR_CHART_SIZE,
        |a| draw_bar_chart(a, categories, bars, stacked, title, x_label, y_label),
        |a| draw_bar_chart(a, categories, bars, stacked, title, x_label, y_label),
    )
}

/// Writes the sorted-heads chart ([`draw_head_activity`]) to `path` (PNG or SVG by extension),
/// [`BAR_CHART_SIZE`]; bad input fails before any file is created.
pub fn save_head_activity(path: &Path, heads: &[String], scores: &[f64], frequencies: &[f64], title: &str) -> Result<(), PlotError> {
    check_heads(heads, scores, frequencies)?;
    format_of(path)?;
    save_with(
        path,
        BAR_CHART_SIZE,
        |a| draw_head_activity(a, heads, scores, frequencies, title),
        |a| draw_head_activity(a, heads, scores, frequencies, title),
    )
}
