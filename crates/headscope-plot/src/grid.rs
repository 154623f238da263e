//! The data every chart draws: a dense grid of optional values.

/// A dense 2-D grid of optional values, row-major (None = no data, drawn grey).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Grid {
    /// Number of rows (layers for a head heatmap, needle depths for a NIAH grid).
    pub rows: usize,
    /// Number of columns (heads for a head heatmap, context lengths for a NIAH grid).
    pub cols: usize,
    /// `rows * cols` cells, row by row; `values[r * cols + c]` is row `r`, column `c`.
    pub values: Vec<Option<f64>>,
    /// What each row is labelled where it is not its index: a hybrid model's head grid has a row per
    /// attention layer, and these are those layers' numbers in the model (Jamba-v0.1: 4, 12, 20, 28).
    pub row_numbers: Option<Vec<usize>>,
}

impl Grid {
    /// A `rows` x `cols` grid with every cell empty (None).
    pub fn new(rows: usize, cols: usize) -> Self {
        Grid { rows, cols, values: vec![None; rows.saturating_mul(cols)], row_numbers: None }
    }

    /// Labels the rows with `numbers` where given, else 0..rows (see [`Grid::row_numbers`]).
    pub fn with_row_numbers(mut self, numbers: Option<Vec<usize>>) -> Self {
        self.row_numbers = numbers;
        self
    }

    /// The value at row `r`, column `c`; None when the cell is empty or outside the grid.
    pub fn get(&self, r: usize, c: usize) -> Option<f64> {
        if r >= self.rows || c >= self.cols {
            return None;
        }
        self.values.get(r * self.cols + c).copied().flatten()
    }

    /// Stores `v` at row `r`, column `c` (NaN may be stored; charts draw it as missing).
    ///
    /// # Panics
    /// When `r` or `c` lies outside the grid, or `values` is shorter than `rows * cols`.
    pub fn set(&mut self, r: usize, c: usize, v: f64) {
        assert!(r < self.rows && c < self.cols, "Grid::set({r}, {c}) is outside the {}x{} grid", self.rows, self.cols);
        let i = r * self.cols + c;
        let len = self.values.len();
        let cell = self.values.get_mut(i).unwrap_or_else(|| panic!("Grid::set({r}, {c}): values holds only {len} cells"));
        *cell = Some(v);
    }

    /// The value at `r`, `c` if it is a finite number (NaN and infinities count as missing).
    pub(crate) fn finite(&self, r: usize, c: usize) -> Option<f64> {
        self.get(r, c).filter(|v| v.is_finite())
    }

    /// The largest finite value, if any cell holds one.
    pub(crate) fn finite_max(&self) -> Option<f64> {
        self.values.iter().flatten().copied().filter(|v| v.is_finite()).reduce(f64::max)
    }

    /// Whether some cell is empty, NaN or infinite (so the legend shows the "no data" swatch).
    pub(crate) fn has_missing(&self) -> bool {
        (0..self.rows).any(|r| (0..self.cols).any(|c| self.finite(r, c).is_none()))
    }
}
