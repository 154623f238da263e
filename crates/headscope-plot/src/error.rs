//! What can go wrong while drawing or saving a chart.

use std::path::PathBuf;

/// Why a chart could not be drawn or saved.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing backend (bitmap, SVG, canvas) or the font failed.
    #[error("drawing failed: {0}")]
    Drawing(String),
    /// The grid or its labels do not fit together (or there is nothing to draw).
    #[error("grid shape {rows}x{cols}: {reason}")]
    Shape {
        /// Rows of the grid that was given.
        rows: usize,
        /// Columns of the grid that was given.
        cols: usize,
        /// What is wrong with it, in words.
        reason: String,
    },
    /// The output file name has an extension other than .png or .svg.
    #[error("cannot tell the image format of {path}: extension {ext:?} is neither .png nor .svg")]
    UnknownFormat {
        /// The path that was given.
        path: PathBuf,
        /// Its extension ("" when it has none).
        ext: String,
    },
    /// The output file could not be written.
    // Not a `#[source]`: the message holds it, and `{:#}` would print it twice.
    #[error("cannot write {path}: {error}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}

impl PlotError {
    /// A `Shape` error for `rows` x `cols` with `reason`.
    pub(crate) fn shape(rows: usize, cols: usize, reason: impl Into<String>) -> Self {
        PlotError::Shape { rows, cols, reason: reason.into() }
    }

    /// Wraps any plotters drawing-area error.
    pub(crate) fn drawing(e: impl std::fmt::Display) -> Self {
        PlotError::Drawing(e.to_string())
    }
}
