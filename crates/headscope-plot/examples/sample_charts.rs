//! Writes sample charts (small and large head heatmaps, a NIAH grid) as PNG and SVG into a folder,
//! for eyeballing the layout: `cargo run -p headscope-plot --example sample_charts -- OUT_DIR`.

use headscope_plot::{save_head_heatmap, save_niah_grid, Grid};
use std::path::PathBuf;

/// A deterministic, sparse-ish score pattern: most heads near 0, a few strong retrieval heads.
fn scores(rows: usize, cols: usize) -> Grid {
    let mut g = Grid::new(rows, cols);
    for r in 0..rows {
        for c in 0..cols {
            let h = (r * 131 + c * 71 + 17) % 97;
            let v = if h < 4 { 0.3 + h as f64 * 0.15 } else { (h % 10) as f64 / 200.0 };
            g.set(r, c, v);
        }
    }
    g
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "plot-samples".into()));
    std::fs::create_dir_all(&out)?;
    for (rows, cols, name) in [(2, 4, "tiny"), (32, 32, "llama"), (64, 64, "large")] {
        let g = scores(rows, cols);
        for ext in ["png", "svg"] {
            let title = format!("Retrieval heads ({rows} layers x {cols} heads)");
            save_head_heatmap(&out.join(format!("heads-{name}.{ext}")), &g, &title)?;
        }
    }
    let lengths = [1000, 2000, 4000, 8000, 16000, 24000, 32000, 48000, 64000, 96000, 128000];
    let depths: Vec<f64> = (0..=10).map(|i| i as f64 * 10.0).collect();
    let mut g = Grid::new(depths.len(), lengths.len());
    for (r, _) in depths.iter().enumerate() {
        for (c, &len) in lengths.iter().enumerate() {
            if c == lengths.len() - 1 && r % 4 == 1 {
                continue; // not run
            }
            let v = if len <= 32000 { 1.0 } else { 1.0 - ((r * 3 + c) % 5) as f64 / 4.0 };
            g.set(r, c, v);
        }
    }
    for ext in ["png", "svg"] {
        save_niah_grid(&out.join(format!("niah.{ext}")), &g, &lengths, &depths, "Needle in a haystack: tiny-llama")?;
    }
    println!("wrote samples to {}", out.display());
    Ok(())
}
