//! Writes sample charts (small and large head heatmaps, a NIAH grid, bar, sorted-heads and banded line
//! charts) as PNG and SVG into a folder,
//! for eyeballing the layout: `cargo run -p headscope-plot --example sample_charts -- OUT_DIR`.

use headscope_plot::{
    save_bar_chart, save_head_activity, save_head_heatmap, save_line_chart_with_bands, save_niah_grid, Band, Bars, Grid, Series,
};
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
    let bands = ["0", "(0, 0.1]", "(0.1, 0.5]", "> 0.5"].map(String::from);
    let share = Bars { name: "share of heads".into(), values: vec![0.52, 0.44, 0.03, 0.01] };
    let ks: Vec<String> = (0..=8).map(|k| k.to_string()).collect();
    let classes = ["passed", "incomplete retrieval", "hallucination", "wrong extraction", "empty"];
    let stacks: Vec<Bars> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| Bars { name: c.to_string(), values: (0..=8).map(|k| ((k * 7 + i * 5) % 9) as f64).collect() })
        .collect();
    let heads: Vec<String> = (0..48).map(|i| format!("{}-{}", i / 8, i % 8)).collect();
    let scores: Vec<f64> = (0..48).map(|i| if i < 2 { 0.6 } else { 0.01 / i as f64 }).collect();
    let freq: Vec<f64> = (0..48).map(|i| if i < 2 { 1.0 } else { 0.5 / i as f64 }).collect();
    let top = Series { name: "top-K".into(), points: (0..=8).map(|k| (k as f64, 0.4 * (1.0 - k as f64 / 3.0).max(0.0))).collect() };
    let random = Series { name: "random-K".into(), points: (0..=8).map(|k| (k as f64, 0.4 - 0.01 * k as f64)).collect() };
    let band = Band { series: 1, points: random.points.iter().map(|&(x, y)| (x, y - 0.03, y + 0.02)).collect() };
    for ext in ["png", "svg"] {
        save_bar_chart(
            &out.join(format!("bands.{ext}")),
            &bands,
            std::slice::from_ref(&share),
            false,
            "Mean retrieval scores",
            "band",
            "share of heads",
        )?;
        save_bar_chart(&out.join(format!("failures.{ext}")), &ks, &stacks, true, "Failures by K", "K heads masked", "tests")?;
        save_head_activity(&out.join(format!("activity.{ext}")), &heads, &scores, &freq, "Heads by mean score")?;
        save_line_chart_with_bands(
            &out.join(format!("masking.{ext}")),
            &[top.clone(), random.clone()],
            std::slice::from_ref(&band),
            Some((0.0, 1.0)),
            "NIAH pass rate with K heads masked",
            "K",
            "pass rate",
        )?;
    }
    println!("wrote samples to {}", out.display());
    Ok(())
}
