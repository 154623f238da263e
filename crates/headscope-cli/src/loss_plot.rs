//! `headscope plot-loss`: training loss curves from the trainer's loss.csv files.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// `headscope plot-loss`: the loss curves of one or more training logs (loss.csv), one after another on
/// the step axis (stage 2 continues where stage 1 ended), each smoothed by a moving mean of `smooth` steps.
pub fn plot_loss(logs: &[PathBuf], out: &Path, smooth: usize) -> Result<()> {
    if logs.is_empty() {
        bail!("give at least one --log loss.csv");
    }
    let mut series = Vec::new();
    let mut offset = 0.0;
    for log in logs {
        let text = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
        let mut points = Vec::new();
        for (i, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let parse = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok());
            let (Some(step), Some(loss)) = (parse(0), parse(3)) else {
                bail!("{} line {}: expected step,tokens,rows,loss,... (a headscope train loss.csv)", log.display(), i + 1);
            };
            points.push((offset + step, loss));
        }
        if points.is_empty() {
            bail!("{} has no steps", log.display());
        }
        let w = smooth.max(1);
        let smoothed: Vec<(f64, f64)> = (0..points.len())
            .map(|i| {
                let from = i.saturating_sub(w - 1);
                let window = &points[from..=i];
                (points[i].0, window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64)
            })
            .collect();
        offset = points.last().map_or(offset, |p| p.0);
        let name = log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        series.push(headscope_plot::Series { name, points: smoothed });
    }
    let title = format!("training loss (mean of {smooth} steps)");
    headscope_plot::save_line_chart(out, &series, &title, "step", "loss (nats per token)")
        .with_context(|| format!("drawing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}
