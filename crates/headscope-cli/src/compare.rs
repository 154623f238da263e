//! `headscope compare`: how alike several models' retrieval heads are (paper fig. 6). Reads head-score
//! files, has core correlate their per-head mean scores (`headscope_core::analysis`), prints the
//! Pearson and Spearman matrices (or JSON for scripts) and optionally draws the Pearson matrix.

use anyhow::{bail, Context, Result};
use clap::Args;
use headscope_core::analysis::correlation_matrix;
use headscope_core::files::read_head_scores;
use std::path::{Path, PathBuf};

/// Flags of `headscope compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Head-score files in the official format (`{"layer-head": [scores]}`), at least two, all of models
    /// with the same layers and heads. Each is named by its file stem.
    #[arg(value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print only the matrices, as JSON: {"names": [...], "pearson": [[...]], "spearman": [[...]]}.
    #[arg(long)]
    json: bool,
    /// Also draw the Pearson matrix as a heatmap to this file (.png or .svg).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

/// Runs `compare`.
pub fn compare(a: &CompareArgs) -> Result<()> {
    if a.files.len() < 2 {
        bail!("compare needs at least two head-score files, {} given", a.files.len());
    }
    let names = names_of(&a.files);
    let mut models = Vec::with_capacity(a.files.len());
    for (path, name) in a.files.iter().zip(names) {
        models.push((name, read_head_scores(path)?));
    }
    // Checked here as well as in core so that the message names the files, not just their stems.
    let (first, s0) = (&a.files[0], models[0].1.shape());
    for (path, (_, s)) in a.files.iter().zip(&models).skip(1) {
        if s.shape() != s0 {
            bail!(
                "{} has {} layers x {} heads but {} has {} layers x {} heads: heads are paired by layer-head, so every file must come from models with the same grid",
                path.display(),
                s.shape().layers,
                s.shape().heads,
                first.display(),
                s0.layers,
                s0.heads
            );
        }
    }
    let matrix = correlation_matrix(&models)?;
    if let Some(plot) = &a.plot {
        headscope_plot::save_correlation_matrix(plot, &matrix.names, &matrix.pearson, "Pearson r of mean retrieval scores")
            .with_context(|| format!("drawing {}", plot.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&matrix)?);
        return Ok(());
    }
    println!("Pearson r of per-head mean retrieval scores ({} models, {} layers x {} heads)", matrix.names.len(), s0.layers, s0.heads);
    print_table(&matrix.names, &matrix.pearson);
    println!();
    println!("Spearman rho of per-head mean retrieval scores (tied heads share their average rank)");
    print_table(&matrix.names, &matrix.spearman);
    if let Some(plot) = &a.plot {
        println!();
        println!("wrote {}", plot.display());
    }
    Ok(())
}

/// A name per file: its stem, or, where two files share a stem (`runs/a/head_scores.json`,
/// `runs/b/head_scores.json`), the path as given, so no two rows look alike.
pub(crate) fn names_of(files: &[PathBuf]) -> Vec<String> {
    let stem = |p: &Path| p.file_stem().map_or_else(|| p.display().to_string(), |s| s.to_string_lossy().into_owned());
    let stems: Vec<String> = files.iter().map(|p| stem(p)).collect();
    files
        .iter()
        .zip(&stems)
        .map(|(p, s)| if stems.iter().filter(|t| *t == s).count() > 1 { p.display().to_string() } else { s.clone() })
        .collect()
}

/// Prints a square matrix with row and column names, two decimals, columns right-aligned.
fn print_table(names: &[String], m: &[Vec<f64>]) {
    let row_w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let col_w: Vec<usize> = names.iter().map(|n| n.chars().count().max(5)).collect();
    let mut header = " ".repeat(row_w);
    for (name, w) in names.iter().zip(&col_w) {
        header.push_str(&format!("  {name:>w$}"));
    }
    println!("{}", header.trim_end());
    for (name, row) in names.iter().zip(m) {
        let mut line = format!("{name:<row_w$}");
        for (v, w) in row.iter().zip(&col_w) {
            line.push_str(&format!("  {:>w$}", two_decimals(*v)));
        }
        println!("{line}");
    }
}

/// `v` with two decimals, without the "-0.00" that a tiny negative value would print as.
fn two_decimals(v: f64) -> String {
    match format!("{v:.2}") {
        s if s == "-0.00" => "0.00".to_owned(),
        s => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headscope_core::analysis::CorrelationMatrix;

    #[test]
    fn names_are_stems_unless_two_files_share_one() {
        let files: Vec<PathBuf> = ["refs/Mistral.json", "runs/a/head_scores.json", "runs/b/head_scores.json"].map(PathBuf::from).to_vec();
        assert_eq!(names_of(&files), vec!["Mistral", "runs/a/head_scores.json", "runs/b/head_scores.json"]);
    }

    #[test]
    fn json_has_exactly_names_pearson_spearman_and_no_minus_zero() {
        let m = CorrelationMatrix { names: vec!["a".into()], pearson: vec![vec![1.0]], spearman: vec![vec![1.0]] };
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"names":["a"],"pearson":[[1.0]],"spearman":[[1.0]]}"#);
        assert_eq!(two_decimals(-0.001), "0.00");
        assert_eq!(two_decimals(-0.0095), "-0.01");
    }
}
