//! What a run leaves behind besides tests.jsonl: head scores, heatmaps and printed summaries, all made
//! from the records. A sweep finishes with [`finish_detect`] or [`finish_niah`], and `headscope merge`
//! calls the same on the shards' records, so a merged run's files are those of one unsharded run.

use anyhow::{Context, Result};
use headscope_core::files::{self, in_plan_order, write_atomic, TestRecord};
use headscope_core::{HeadId, HeadScores, HeadShape, ScoreKind};
use headscope_plot::Grid;
use std::collections::BTreeMap;
use std::path::Path;

/// Writes what `detect` makes of its records in `out`: the head scores of every kind in `kinds` that
/// comes from records (eq. 1's head_scores.json always), heads.png, niah.png and summary.json, and
/// prints the summary (`ran`: tests run by this invocation). `rows`: a hybrid's attention layers, the
/// heatmap's row labels. Returns eq. 1's scores.
#[allow(clippy::too_many_arguments)]
pub fn finish_detect(
    out: &Path,
    shape: HeadShape,
    rows: Option<&[usize]>,
    records: &[TestRecord],
    kinds: &[ScoreKind],
    gate: f64,
    threshold: f64,
    model_name: &str,
    ran: usize,
) -> Result<HeadScores> {
    let scores = files::head_scores_from_records(shape, records, gate)?;
    files::write_head_scores(&out.join(ScoreKind::Eq1.file_name()), &scores)?;
    for &kind in kinds.iter().filter(|&&k| k != ScoreKind::Eq1 && k.from_records()) {
        let other = files::head_scores_of_kind(shape, records, gate, kind)?;
        let path = out.join(kind.file_name());
        files::write_head_scores(&path, &other)?;
        println!("{} scores: {}", kind.name(), path.display());
    }
    save_head_heatmap(&out.join("heads.png"), &scores, rows, &format!("retrieval scores: {model_name}"))?;
    save_niah(&out.join("niah.png"), records, &format!("NIAH: {model_name}"))?;
    print_detect_summary(out, records, ran, &scores, gate, threshold)?;
    Ok(scores)
}

/// Writes what `niah` makes of its records in `out` (niah.png, summary.json) and prints the pass rate:
/// `masked` are the heads masked by `plan` in `mode`.
pub fn finish_niah(
    out: &Path,
    records: &[TestRecord],
    model_name: &str,
    masked: &[HeadId],
    plan: &str,
    mode: &str,
    pass: f64,
) -> Result<()> {
    let title = if masked.is_empty() {
        format!("NIAH: {model_name}")
    } else {
        format!("NIAH: {model_name}, {} heads masked ({mode})", masked.len())
    };
    save_niah(&out.join("niah.png"), records, &title)?;
    print_niah_summary(out, records, pass, masked, plan)
}

/// Layers x heads heatmap of mean retrieval scores, its rows labelled with `rows` where given (a
/// hybrid's attention layers).
pub fn save_head_heatmap(path: &Path, scores: &HeadScores, rows: Option<&[usize]>, title: &str) -> Result<()> {
    headscope_plot::save_head_heatmap(path, &head_grid(scores, rows), title).with_context(|| format!("drawing {}", path.display()))
}

/// The plot grid of `scores`' means, its rows labelled with `rows` where given.
pub fn head_grid(scores: &HeadScores, rows: Option<&[usize]>) -> Grid {
    let shape = scores.shape();
    let mut grid = Grid::new(shape.layers, shape.heads);
    for h in shape.iter() {
        grid.set(h.layer, h.head, scores.mean(h));
    }
    grid.with_row_numbers(rows.map(<[usize]>::to_vec))
}

/// The NIAH grid of the records: mean answer recall per (depth, length) cell over needles.
pub fn niah_grid(records: &[TestRecord]) -> (Grid, Vec<usize>, Vec<f64>) {
    let mut lengths: Vec<usize> = records.iter().map(|r| r.length).collect();
    lengths.sort_unstable();
    lengths.dedup();
    let mut depths: Vec<f64> = records.iter().map(|r| r.depth_percent).collect();
    depths.sort_by(f64::total_cmp);
    depths.dedup();
    let mut sums: BTreeMap<(usize, usize), (f64, usize)> = BTreeMap::new();
    for r in in_plan_order(records) {
        let c = lengths.binary_search(&r.length).unwrap_or(0);
        let d = depths.iter().position(|&x| x == r.depth_percent).unwrap_or(0);
        let e = sums.entry((d, c)).or_default();
        e.0 += r.recall;
        e.1 += 1;
    }
    let mut grid = Grid::new(depths.len(), lengths.len());
    for ((d, c), (sum, n)) in sums {
        grid.set(d, c, sum / n as f64);
    }
    (grid, lengths, depths)
}

/// Draws the NIAH grid of `records` (nothing to draw without records).
pub fn save_niah(path: &Path, records: &[TestRecord], title: &str) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let (grid, lengths, depths) = niah_grid(records);
    headscope_plot::save_niah_grid(path, &grid, &lengths, &depths, title).with_context(|| format!("drawing {}", path.display()))
}

fn pass_rate(records: &[TestRecord], pass: f64) -> (usize, usize) {
    (records.iter().filter(|r| r.recall >= pass).count(), records.len())
}

/// Prints the outcome of `detect` and writes summary.json beside the results.
pub fn print_detect_summary(out: &Path, records: &[TestRecord], ran: usize, scores: &HeadScores, gate: f64, threshold: f64) -> Result<()> {
    let (passed, total) = pass_rate(records, 0.5);
    let retrieval = scores.retrieval_heads(threshold);
    let summary = serde_json::json!({
        "tests": total, "passed": passed, "pass_threshold": 0.5, "pass_rate": percent(passed, total) / 100.0,
        "scored_tests": scores.tests(), "gate": gate, "threshold": threshold, "heads": scores.shape().count(),
        "retrieval_heads": retrieval.iter().map(|(h, m)| serde_json::json!({"head": h, "mean": m, "activation_frequency": scores.activation_frequency(*h)})).collect::<Vec<_>>(),
    });
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    println!(
        "{total} tests ({ran} run now, {} from earlier runs); NIAH pass rate {:.1}% ({passed}/{total}, recall >= 0.5)",
        total - ran,
        percent(passed, total)
    );
    let scored = scores.tests();
    if scored == 0 {
        println!("no test reached the gate (recall >= {gate}): no head scores; lower --gate (0 scores every test)");
        return Ok(());
    }
    println!(
        "{scored} tests scored (recall >= {gate}); {} of {} heads are retrieval heads (mean score > {threshold})",
        retrieval.len(),
        scores.shape().count()
    );
    let top: Vec<String> = scores
        .ranked()
        .into_iter()
        .take(10)
        .map(|(h, m)| format!("{h} {m:.3} (active {:.0}%)", 100.0 * scores.activation_frequency(h)))
        .collect();
    println!("strongest heads: {}", top.join(", "));
    Ok(())
}

/// Prints the outcome of `niah` and writes summary.json beside the results.
pub fn print_niah_summary(out: &Path, records: &[TestRecord], pass: f64, masked: &[HeadId], plan: &str) -> Result<()> {
    let (passed, total) = pass_rate(records, pass);
    let rate = percent(passed, total);
    if masked.is_empty() {
        println!("NIAH pass rate {rate:.1}% ({passed}/{total} tests with recall >= {pass}), no heads masked");
    } else {
        let names: Vec<String> = masked.iter().map(HeadId::to_string).collect();
        println!(
            "NIAH pass rate {rate:.1}% ({passed}/{total} tests with recall >= {pass}), {} heads masked ({plan}): {}",
            masked.len(),
            names.join(",")
        );
    }
    // Summed in plan order, so that the figure does not depend on the order the sweep ran the tests in.
    let mean_recall = if total == 0 { 0.0 } else { in_plan_order(records).iter().map(|r| r.recall).sum::<f64>() / total as f64 };
    let summary = serde_json::json!({
        "tests": total, "passed": passed, "pass_threshold": pass, "pass_rate": rate / 100.0,
        "mean_recall": mean_recall, "masked_heads": masked, "mask_plan": plan,
    });
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(())
}

fn percent(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}
