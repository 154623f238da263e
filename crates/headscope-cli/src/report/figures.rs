//! The report's figures: each reduces its sub-runs to numbers (core), draws them (the plot crate), writes
//! them as PNG, SVG, JSON and CSV under `figures/`, and adds its section to the page.

use super::page::{esc, percent, table, Html};
use super::{Masked, Plan, ReportArgs};
use crate::qa::QaSummary;
use anyhow::{bail, Context, Result};
use headscope_core::analysis::{
    always_active, correlation_matrix, head_activity, judge_record, ranking_stability, score_distribution, spread, CorrelationMatrix,
    FailureClass, FailureCounts, FailureJudgement, HeadActivity, ScoreDistribution, Spread, SINK_TOKENS,
};
use headscope_core::files::read_head_scores;
use headscope_core::files::{in_plan_order, write_atomic, TestLog, TestRecord};
use headscope_core::niah::{read_needles_jsonl, Needle, NiahBuilder};
use headscope_core::{HeadId, HeadScores, ScoreKind};
use headscope_model::ModelDir;
use headscope_plot::{Band, Bars, Series};
use std::collections::HashMap;
use std::path::Path;

/// Writes `value` as pretty JSON to `figures/{stem}.json`.
fn write_json(figures: &Path, stem: &str, value: &impl serde::Serialize) -> Result<()> {
    write_atomic(&figures.join(format!("{stem}.json")), serde_json::to_string_pretty(value)?.as_bytes()).map_err(Into::into)
}

/// Writes rows (first the header) as CSV to `figures/{stem}.csv`.
fn write_csv(figures: &Path, stem: &str, rows: &[Vec<String>]) -> Result<()> {
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| csv_field(c)).collect();
        text.push_str(&cells.join(","));
        text.push('\n');
    }
    write_atomic(&figures.join(format!("{stem}.csv")), text.as_bytes()).map_err(Into::into)
}

/// A CSV cell: quoted (quotes doubled) when it holds a comma, quote or line break.
pub(super) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Draws a figure as PNG and SVG with `draw(path)`; returns the SVG text for the page.
fn draw_both(figures: &Path, stem: &str, draw: impl Fn(&Path) -> Result<(), headscope_plot::PlotError>) -> Result<String> {
    for ext in ["png", "svg"] {
        let path = figures.join(format!("{stem}.{ext}"));
        draw(&path).with_context(|| format!("drawing {}", path.display()))?;
    }
    let svg = figures.join(format!("{stem}.svg"));
    std::fs::read_to_string(&svg).with_context(|| format!("reading {}", svg.display()))
}

/// Fig. 3: how heads spread over the score bands.
pub(super) fn fig3(figures: &Path, scores: &HeadScores, model: &str, html: &mut Html) -> Result<()> {
    let stem = "fig3-score-bands";
    let d = score_distribution(scores);
    let shares = d.shares();
    let bands: Vec<String> = ScoreDistribution::BANDS.iter().map(|b| b.to_string()).collect();
    let json = serde_json::json!({
        "model": model, "heads": d.heads, "scored_tests": scores.tests(),
        "bands": bands.iter().zip(d.counts()).zip(shares).map(|((b, c), s)| serde_json::json!({"band": b, "heads": c, "share": s})).collect::<Vec<_>>(),
    });
    write_json(figures, stem, &json)?;
    let mut rows = vec![vec!["band".into(), "heads".into(), "share".into()]];
    rows.extend(bands.iter().zip(d.counts()).zip(shares).map(|((b, c), s)| vec![b.clone(), c.to_string(), s.to_string()]));
    write_csv(figures, stem, &rows)?;
    let bars = [Bars { name: "share of heads".into(), values: shares.to_vec() }];
    let title = format!("Mean retrieval score bands: {model} ({} heads)", d.heads);
    let svg = draw_both(figures, stem, |p| {
        headscope_plot::save_bar_chart(p, &bands, &bars, false, &title, "mean retrieval score", "share of heads")
    })?;
    let table = table(
        &["band", "heads", "share"],
        rows[1..].iter().map(|r| vec![r[0].clone(), r[1].clone(), percent(r[2].parse().unwrap_or(0.0))]).collect(),
    );
    html.section(
        "Fig. 3: how retrieval scores spread over heads",
        &format!(
            "Share of the {} heads by mean retrieval score over {} scored tests; heads above 0.1 are retrieval heads.{table}",
            d.heads,
            scores.tests()
        ),
        Some(&svg),
        &[stem],
    );
    Ok(())
}

/// Fig. 4: every head's mean score and activation frequency, strongest first.
pub(super) fn fig4(figures: &Path, scores: &HeadScores, model: &str, html: &mut Html) -> Result<()> {
    let stem = "fig4-head-activity";
    let activity: Vec<HeadActivity> = head_activity(scores);
    let always = always_active(scores);
    write_json(
        figures,
        stem,
        &serde_json::json!({"model": model, "scored_tests": scores.tests(), "always_active": always, "heads": activity}),
    )?;
    let mut rows = vec![vec!["rank".into(), "head".into(), "mean".into(), "activation_frequency".into()]];
    rows.extend(
        activity
            .iter()
            .enumerate()
            .map(|(i, h)| vec![(i + 1).to_string(), h.head.to_string(), h.mean.to_string(), h.activation_frequency.to_string()]),
    );
    write_csv(figures, stem, &rows)?;
    let names: Vec<String> = activity.iter().map(|h| h.head.to_string()).collect();
    let means: Vec<f64> = activity.iter().map(|h| h.mean).collect();
    let freq: Vec<f64> = activity.iter().map(|h| h.activation_frequency).collect();
    let title = format!("Heads by mean retrieval score: {model} ({always} always active)");
    let svg = draw_both(figures, stem, |p| headscope_plot::save_head_activity(p, &names, &means, &freq, &title))?;
    let top: Vec<Vec<String>> =
        activity.iter().take(8).map(|h| vec![h.head.to_string(), format!("{:.3}", h.mean), percent(h.activation_frequency)]).collect();
    html.section(
        "Fig. 4: activation frequency",
        &format!(
            "Heads sorted by mean retrieval score (bars), with the share of scored tests in which each head copied at least one answer token (dots). <b>{always}</b> of {} heads fired in every scored test.{}",
            scores.shape().count(),
            table(&["head", "mean score", "activation frequency"], top)
        ),
        Some(&svg),
        &[stem],
    );
    Ok(())
}

/// Fig. 5: the layers x heads heatmap.
pub(super) fn fig5(figures: &Path, scores: &HeadScores, attention_rows: Option<&[usize]>, model: &str, html: &mut Html) -> Result<()> {
    let stem = "fig5-heatmap";
    let shape = scores.shape();
    write_json(
        figures,
        stem,
        &serde_json::json!({"model": model, "layers": shape.layers, "heads": shape.heads, "mean": scores.mean_grid()}),
    )?;
    let mut rows = vec![vec!["layer".into(), "head".into(), "mean".into(), "activation_frequency".into()]];
    rows.extend(
        shape
            .iter()
            .map(|h| vec![h.layer.to_string(), h.head.to_string(), scores.mean(h).to_string(), scores.activation_frequency(h).to_string()]),
    );
    write_csv(figures, stem, &rows)?;
    let title = format!("Retrieval scores: {model}");
    let grid = crate::outputs::head_grid(scores, attention_rows);
    let svg = draw_both(figures, stem, |p| headscope_plot::save_head_heatmap(p, &grid, &title))?;
    html.section(
        "Fig. 5: retrieval scores by layer and head",
        "Mean retrieval score of every head (layer 0 at the top).",
        Some(&svg),
        &[stem],
    );
    Ok(())
}

/// Fig. 6: correlations with other models' head scores (only with `--compare`).
pub(super) fn fig6(figures: &Path, model: &str, scores: &HeadScores, others: Vec<(String, HeadScores)>, html: &mut Html) -> Result<()> {
    let title = "Fig. 6: do models share their retrieval heads?";
    if others.is_empty() {
        html.section(title, "No other models given: pass <code>--compare A.json B.json ...</code> (head-score files of models with the same layers and heads) to correlate them with this model.", None, &[]);
        return Ok(());
    }
    let stem = "fig6-correlation";
    let mut models = vec![(model.to_owned(), scores.clone())];
    models.extend(others);
    // With this model's scores all alike (no head ever retrieved), its correlations are undefined; the
    // others are still compared with each other.
    let (matrix, note): (Option<CorrelationMatrix>, String) = match correlation_matrix(&models) {
        Ok(m) => (Some(m), String::new()),
        Err(e) if models.len() > 2 => match correlation_matrix(&models[1..]) {
            Ok(m) => (Some(m), format!("{e}; {model} is left out.")),
            Err(e2) => (None, format!("{e}; without {model}: {e2}.")),
        },
        Err(e) => (None, format!("{e}.")),
    };
    write_json(figures, stem, &serde_json::json!({"matrix": matrix, "note": note}))?;
    let Some(m) = matrix else {
        write_csv(figures, stem, &[vec!["a".into(), "b".into(), "pearson".into(), "spearman".into()]])?;
        html.section(title, &format!("Not drawn: {}", esc(&note)), None, &[stem]);
        return Ok(());
    };
    let mut rows = vec![vec!["a".into(), "b".into(), "pearson".into(), "spearman".into()]];
    for i in 0..m.names.len() {
        for j in 0..m.names.len() {
            rows.push(vec![m.names[i].clone(), m.names[j].clone(), m.pearson[i][j].to_string(), m.spearman[i][j].to_string()]);
        }
    }
    write_csv(figures, stem, &rows)?;
    let svg = draw_both(figures, stem, |p| {
        headscope_plot::save_correlation_matrix(p, &m.names, &m.pearson, "Pearson r of mean retrieval scores")
    })?;
    let mut header = vec!["Spearman rho".to_owned()];
    header.extend(m.names.iter().cloned());
    let spearman: Vec<Vec<String>> = m
        .names
        .iter()
        .zip(&m.spearman)
        .map(|(n, row)| std::iter::once(n.clone()).chain(row.iter().map(|v| format!("{v:.2}"))).collect())
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    html.section(
        title,
        &format!("Pearson correlation of per-head mean scores (heads paired by layer-head). {}{}", esc(&note), table(&header, spearman)),
        Some(&svg),
        &[stem],
    );
    Ok(())
}

/// A sub-run's pass rate as its summary.json gives it.
fn summary_pass_rate(dir: &Path) -> Result<f64> {
    let path = dir.join("summary.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
    v["pass_rate"].as_f64().with_context(|| format!("{} has no pass_rate", path.display()))
}

/// One point of a masking curve.
#[derive(Debug, serde::Serialize)]
struct RatePoint {
    k: usize,
    pass_rate: f64,
    run: String,
}

/// Random-K at one K: the seeds' pass rates and their spread.
#[derive(Debug, serde::Serialize)]
struct RandomPoint {
    k: usize,
    spread: Spread,
    seeds: Vec<SeedPoint>,
}

/// One seed's pass rate.
#[derive(Debug, serde::Serialize)]
struct SeedPoint {
    seed: u64,
    pass_rate: f64,
    run: String,
}

/// Fig. 7: NIAH pass rate as more heads are masked, top-K against random-K.
pub(super) fn fig7(figures: &Path, out: &Path, masked: &[Masked], pass: f64, model: &str, html: &mut Html) -> Result<()> {
    let stem = "fig7-masking";
    let run_dir = |m: &Masked| out.join("mask").join(&m.name);
    let rel = |m: &Masked| format!("mask/{}", m.name);
    let mut top = Vec::new();
    let mut by_k: std::collections::BTreeMap<usize, Vec<SeedPoint>> = Default::default();
    for m in masked {
        let rate = summary_pass_rate(&run_dir(m))?;
        match m.kind {
            "random" => by_k.entry(m.k).or_default().push(SeedPoint { seed: m.seed.unwrap_or(0), pass_rate: rate, run: rel(m) }),
            _ => top.push(RatePoint { k: m.k, pass_rate: rate, run: rel(m) }),
        }
    }
    let none = top.first().map(|p| p.pass_rate).unwrap_or(0.0);
    let random: Vec<RandomPoint> = by_k
        .into_iter()
        .filter_map(|(k, seeds)| {
            spread(&seeds.iter().map(|s| s.pass_rate).collect::<Vec<_>>()).map(|spread| RandomPoint { k, spread, seeds })
        })
        .collect();
    write_json(figures, stem, &serde_json::json!({"model": model, "pass_threshold": pass, "top": top, "random": random}))?;
    let mut rows = vec![vec!["kind".into(), "k".into(), "seed".into(), "pass_rate".into(), "run".into()]];
    rows.extend(top.iter().map(|p| {
        vec![if p.k == 0 { "none" } else { "top" }.into(), p.k.to_string(), String::new(), p.pass_rate.to_string(), p.run.clone()]
    }));
    for r in &random {
        rows.extend(
            r.seeds.iter().map(|s| vec!["random".into(), r.k.to_string(), s.seed.to_string(), s.pass_rate.to_string(), s.run.clone()]),
        );
    }
    write_csv(figures, stem, &rows)?;
    let top_series = Series { name: "top-K heads masked".into(), points: top.iter().map(|p| (p.k as f64, p.pass_rate)).collect() };
    // Random-K starts from the same unmasked point.
    let mut random_points = vec![(0.0, none)];
    random_points.extend(random.iter().map(|r| (r.k as f64, r.spread.mean)));
    let random_series = Series { name: "random-K (mean over seeds, range shaded)".into(), points: random_points };
    let mut band_points = vec![(0.0, none, none)];
    band_points.extend(random.iter().map(|r| (r.k as f64, r.spread.min, r.spread.max)));
    let bands = [Band { series: 1, points: band_points }];
    let title = format!("NIAH pass rate with K heads masked: {model}");
    let svg = draw_both(figures, stem, |p| {
        headscope_plot::save_line_chart_with_bands(
            p,
            &[top_series.clone(), random_series.clone()],
            &bands,
            Some((0.0, 1.0)),
            &title,
            "K (heads masked)",
            "pass rate",
        )
    })?;
    let rows: Vec<Vec<String>> = top
        .iter()
        .map(|p| {
            let r = random.iter().find(|r| r.k == p.k);
            vec![
                p.k.to_string(),
                percent(p.pass_rate),
                r.map_or_else(
                    || if p.k == 0 { percent(none) } else { "-".into() },
                    |r| format!("{} ({}-{})", percent(r.spread.mean), percent(r.spread.min), percent(r.spread.max)),
                ),
            ]
        })
        .collect();
    html.section(
        "Fig. 7: masking retrieval heads breaks retrieval",
        &format!(
            "NIAH pass rate (ROUGE-1 recall &ge; {pass}) over the detection grid with the K strongest heads masked, against K random non-retrieval heads (mean and range over seeds).{}",
            table(&["K", "top-K", "random-K mean (min-max)"], rows)
        ),
        Some(&svg),
        &[stem],
    );
    Ok(())
}

/// Which score is causal: for each score, the NIAH pass rate with its K best heads masked (the same
/// grid, mode and scope as fig. 7), beside random-K; and the scores' rank correlations over heads.
pub(super) fn fig_scores(
    figures: &Path,
    out: &Path,
    kinds: &[ScoreKind],
    masked: &[Masked],
    pass: f64,
    model: &str,
    html: &mut Html,
) -> Result<()> {
    let stem = "fig-scores-causal";
    let rate = |m: &Masked| summary_pass_rate(&out.join("mask").join(&m.name));
    let none = masked.iter().find(|m| m.kind == "none").map(rate).transpose()?.unwrap_or(0.0);
    let mut curves: Vec<(ScoreKind, Vec<RatePoint>)> = Vec::new();
    for &kind in kinds {
        let mut points = vec![RatePoint { k: 0, pass_rate: none, run: "mask/none".into() }];
        for m in masked.iter().filter(|m| m.kind == "top" && m.score == kind.name()) {
            points.push(RatePoint { k: m.k, pass_rate: rate(m)?, run: format!("mask/{}", m.name) });
        }
        curves.push((kind, points));
    }
    let mut by_k: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
    for m in masked.iter().filter(|m| m.kind == "random") {
        by_k.entry(m.k).or_default().push(rate(m)?);
    }
    let random: Vec<(usize, Spread)> = by_k.into_iter().filter_map(|(k, v)| spread(&v).map(|s| (k, s))).collect();
    // Rank correlations of the scores' per-head means; a score with every head alike has none.
    let detect = out.join("detect");
    let mut named = Vec::new();
    for &kind in kinds {
        named.push((kind.name().to_string(), read_head_scores(&detect.join(kind.file_name()))?));
    }
    let (matrix, note) = match correlation_matrix(&named) {
        Ok(m) => (Some(m), String::new()),
        Err(e) => (None, format!("No correlation matrix: {e}.")),
    };
    let json_curves: serde_json::Map<String, serde_json::Value> =
        curves.iter().map(|(k, p)| (k.name().to_string(), serde_json::json!(p))).collect();
    let json_random: Vec<serde_json::Value> = random.iter().map(|(k, s)| serde_json::json!({"k": k, "spread": s})).collect();
    write_json(
        figures,
        stem,
        &serde_json::json!({"model": model, "pass_threshold": pass, "top": json_curves, "random": json_random, "correlation": matrix, "note": note}),
    )?;
    let mut rows = vec![vec!["score".into(), "k".into(), "pass_rate".into(), "run".into()]];
    for (kind, points) in &curves {
        rows.extend(points.iter().map(|p| vec![kind.name().into(), p.k.to_string(), p.pass_rate.to_string(), p.run.clone()]));
    }
    rows.extend(random.iter().map(|(k, s)| vec!["random".into(), k.to_string(), s.mean.to_string(), String::new()]));
    write_csv(figures, stem, &rows)?;
    let mut series: Vec<Series> = curves
        .iter()
        .map(|(kind, points)| Series {
            name: format!("top-K of {}", kind.name()),
            points: points.iter().map(|p| (p.k as f64, p.pass_rate)).collect(),
        })
        .collect();
    let mut random_points = vec![(0.0, none)];
    random_points.extend(random.iter().map(|(k, s)| (*k as f64, s.mean)));
    series.push(Series { name: "random-K (mean over seeds, range shaded)".into(), points: random_points });
    let mut band_points = vec![(0.0, none, none)];
    band_points.extend(random.iter().map(|(k, s)| (*k as f64, s.min, s.max)));
    let bands = [Band { series: series.len() - 1, points: band_points }];
    let title = format!("Pass rate with each score's top-K heads masked: {model}");
    let svg = draw_both(figures, stem, |p| {
        headscope_plot::save_line_chart_with_bands(p, &series, &bands, Some((0.0, 1.0)), &title, "K (heads masked)", "pass rate")
    })?;
    let max_k = curves.iter().map(|(_, p)| p.len()).max().unwrap_or(1);
    let mut header: Vec<String> = vec!["K".into()];
    header.extend(curves.iter().map(|(k, _)| format!("top-K of {}", k.name())));
    header.push("random-K mean".into());
    let table_rows: Vec<Vec<String>> = (0..max_k)
        .map(|i| {
            let k = curves[0].1.get(i).map_or(i, |p| p.k);
            let mut row = vec![k.to_string()];
            row.extend(curves.iter().map(|(_, p)| p.get(i).map_or("-".into(), |p| percent(p.pass_rate))));
            row.push(if k == 0 {
                percent(none)
            } else {
                random.iter().find(|(rk, _)| *rk == k).map_or("-".into(), |(_, s)| percent(s.mean))
            });
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    html.section(
        "Which score is causal? Masking each score's best heads",
        &format!(
            "NIAH pass rate (ROUGE-1 recall &ge; {pass}) over the detection grid with the K best heads of each score masked (scores defined in the README), against K random non-retrieval heads of eq. 1. The score whose curve falls first names the heads the answers need.{}",
            table(&header, table_rows)
        ),
        Some(&svg),
        &[stem],
    );
    let corr_stem = "fig-scores-correlation";
    match matrix {
        Some(m) => {
            let svg = draw_both(figures, corr_stem, |p| {
                headscope_plot::save_correlation_matrix(p, &m.names, &m.spearman, "Spearman rho of per-head mean scores")
            })?;
            let mut header = vec!["Spearman rho".to_owned()];
            header.extend(m.names.iter().cloned());
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let body: Vec<Vec<String>> = m
                .names
                .iter()
                .zip(&m.spearman)
                .map(|(n, row)| std::iter::once(n.clone()).chain(row.iter().map(|v| format!("{v:.2}"))).collect())
                .collect();
            let mut rows = vec![vec!["a".into(), "b".into(), "pearson".into(), "spearman".into()]];
            for i in 0..m.names.len() {
                for j in 0..m.names.len() {
                    rows.push(vec![m.names[i].clone(), m.names[j].clone(), m.pearson[i][j].to_string(), m.spearman[i][j].to_string()]);
                }
            }
            write_csv(figures, corr_stem, &rows)?;
            write_json(figures, corr_stem, &m)?;
            html.section(
                "How alike are the scores?",
                &format!(
                    "Rank correlation (Spearman) of the per-head mean of each score, heads paired by layer-head.{}",
                    table(&header, body)
                ),
                Some(&svg),
                &[corr_stem],
            );
        }
        None => html.section("How alike are the scores?", &esc(&note), None, &[]),
    }
    Ok(())
}

/// Fig. 8: extractive QA F1 with no mask, top-K and random-K.
pub(super) fn fig8(figures: &Path, runs: &[Masked], summaries: &[QaSummary], k: usize, model: &str, html: &mut Html) -> Result<()> {
    let stem = "fig8-qa";
    let f1 = |kind: &str| runs.iter().zip(summaries).filter(|(m, _)| m.kind == kind).collect::<Vec<_>>();
    let none = f1("none").first().map(|(_, s)| s.mean_f1).unwrap_or(0.0);
    let top = f1("top").first().map(|(_, s)| s.mean_f1);
    let random: Vec<(u64, f64)> = f1("random").iter().map(|(m, s)| (m.seed.unwrap_or(0), s.mean_f1)).collect();
    let random_spread = spread(&random.iter().map(|r| r.1).collect::<Vec<_>>());
    let items = summaries.first().map_or(0, |s| s.items);
    let runs_json: Vec<serde_json::Value> = runs
        .iter()
        .zip(summaries)
        .map(|(m, s)| serde_json::json!({"kind": m.kind, "k": m.k, "seed": m.seed, "mean_f1": s.mean_f1, "items": s.items, "masked_heads": s.masked_heads, "run": format!("qa/{}", m.name)}))
        .collect();
    write_json(
        figures,
        stem,
        &serde_json::json!({"model": model, "k": k, "items": items, "none": none, "top": top, "random": random_spread, "runs": runs_json}),
    )?;
    let mut rows = vec![vec!["kind".into(), "k".into(), "seed".into(), "mean_f1".into(), "items".into(), "run".into()]];
    rows.extend(runs.iter().zip(summaries).map(|(m, s)| {
        vec![
            m.kind.into(),
            m.k.to_string(),
            m.seed.map(|s| s.to_string()).unwrap_or_default(),
            s.mean_f1.to_string(),
            s.items.to_string(),
            format!("qa/{}", m.name),
        ]
    }));
    write_csv(figures, stem, &rows)?;
    let mut categories = vec!["no mask".to_owned()];
    let mut values = vec![none];
    if let Some(t) = top {
        categories.push(format!("top-{k}"));
        values.push(t);
    }
    if let Some(r) = random_spread {
        categories.push(format!("random-{k} (mean of {})", r.n));
        values.push(r.mean);
    }
    let bars = [Bars { name: "mean token F1".into(), values }];
    let title = format!("Extractive QA with {k} heads masked: {model}");
    let svg = draw_both(figures, stem, |p| {
        headscope_plot::save_bar_chart(p, &categories, &bars, false, &title, "heads masked", "mean token F1")
    })?;
    let random_text =
        random_spread.map_or_else(|| "-".to_owned(), |r| format!("{:.3} (range {:.3}-{:.3} over {} seeds)", r.mean, r.min, r.max, r.n));
    html.section(
        "Fig. 8: extractive QA with heads masked",
        &format!(
            "Mean SQuAD token F1 over {items} questions whose answers are spans of their passage, with no heads masked, the {k} strongest heads masked, and {k} random non-retrieval heads masked.{}",
            table(&["mask", "mean F1"], vec![
                vec!["none".into(), format!("{none:.3}")],
                vec![format!("top-{k}"), top.map_or_else(|| "-".into(), |t| format!("{t:.3}"))],
                vec![format!("random-{k}"), random_text],
            ])
        ),
        Some(&svg),
        &[stem],
    );
    Ok(())
}

/// Rebuilds test prompts (deterministic: tokenization only) to know the text each model saw.
struct Contexts<'a> {
    builder: NiahBuilder<'a, headscope_model::HfTokenizer>,
    needles: Vec<Needle>,
    cache: HashMap<String, String>,
}

impl Contexts<'_> {
    /// The prompt text of `r`, checked against the prompt hash the run recorded.
    fn of(&mut self, r: &TestRecord) -> Result<&str> {
        if !self.cache.contains_key(&r.id) {
            let needle = self
                .needles
                .get(r.needle_index)
                .with_context(|| format!("test {}: needle {} is not in the needles file", r.id, r.needle_index))?;
            let test = self.builder.build(needle, r.length, r.depth_percent).with_context(|| format!("rebuilding test {}", r.id))?;
            if test.prompt_hash() != r.prompt_hash {
                bail!("test {}: the rebuilt prompt differs from the one the run recorded (hash {} vs {}): were the needles or haystack changed?", r.id, test.prompt_hash(), r.prompt_hash);
            }
            self.cache.insert(r.id.clone(), test.prompt_text);
        }
        Ok(&self.cache[&r.id])
    }
}

/// Counts of one masking sub-run.
#[derive(Debug, serde::Serialize)]
struct FailureRow {
    kind: &'static str,
    k: usize,
    seed: Option<u64>,
    run: String,
    counts: FailureCounts,
}

const CLASSES: [(FailureClass, &str); 4] = [
    (FailureClass::IncompleteRetrieval, "incomplete retrieval"),
    (FailureClass::Hallucination, "hallucination"),
    (FailureClass::WrongExtraction, "wrong extraction"),
    (FailureClass::Empty, "empty answer"),
];

fn class_name(c: FailureClass) -> &'static str {
    CLASSES.iter().find(|(k, _)| *k == c).map_or("passed", |(_, n)| n)
}

/// Fig. 9: every failed masked test classified, counted per K, with the sink note.
pub(super) fn fig9(
    a: &ReportArgs,
    figures: &Path,
    model_dir: &ModelDir,
    plan: &Plan,
    logs: &[(Masked, TestLog)],
    model: &str,
    html: &mut Html,
) -> Result<()> {
    let stem = "fig9-failures";
    let haystack = a
        .haystack
        .iter()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading haystack {}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let mut contexts = Contexts {
        builder: NiahBuilder::new(&model_dir.tokenizer, model_dir.prompt_format(a.run.plain), &haystack)?,
        needles: read_needles_jsonl(&a.needles)?,
        cache: HashMap::new(),
    };
    let mut rows = Vec::new();
    let mut tests = vec![vec![
        "run".into(),
        "kind".into(),
        "k".into(),
        "seed".into(),
        "test".into(),
        "class".into(),
        "watched_heads_on_sink".into(),
        "recall".into(),
        "answer".into(),
        "expected".into(),
    ]];
    let mut examples: Vec<(usize, String, FailureJudgement, String)> = Vec::new();
    for (m, log) in logs {
        let mut counts = FailureCounts::default();
        // Plan order, not the order the sweep wrote them in: the CSV rows and the examples picked below
        // stay the same however the run was scheduled or resumed.
        for r in in_plan_order(log.records()) {
            let expected = contexts
                .needles
                .get(r.needle_index)
                .map(|n| n.real_needle.clone())
                .with_context(|| format!("test {}: no needle {}", r.id, r.needle_index))?;
            // Passing answers need no context (their class is settled by recall), so their prompts are not rebuilt.
            let context = if r.recall >= a.pass { String::new() } else { contexts.of(r)?.to_owned() };
            let j = judge_record(r, &expected, &context, a.pass, &plan.watch, SINK_TOKENS);
            counts.add(&j);
            if j.class != FailureClass::Passed {
                tests.push(vec![
                    format!("mask/{}", m.name),
                    m.kind.into(),
                    m.k.to_string(),
                    m.seed.map(|s| s.to_string()).unwrap_or_default(),
                    r.id.clone(),
                    class_name(j.class).into(),
                    j.on_sink.map(|b| b.to_string()).unwrap_or_default(),
                    r.recall.to_string(),
                    r.answer.trim().to_owned(),
                    expected.clone(),
                ]);
                if m.kind != "random" && examples.iter().filter(|e| e.2.class == j.class).count() < 2 && m.k == plan.k_max {
                    examples.push((m.k, r.answer.trim().to_owned(), j, expected));
                }
            }
        }
        rows.push(FailureRow { kind: m.kind, k: m.k, seed: m.seed, run: format!("mask/{}", m.name), counts });
    }
    let watched: Vec<String> = plan.watch.iter().map(HeadId::to_string).collect();
    write_json(
        figures,
        stem,
        &serde_json::json!({"model": model, "pass_threshold": a.pass, "sink_tokens": SINK_TOKENS, "watched_heads": watched, "runs": rows}),
    )?;
    write_csv(figures, stem, &tests)?;
    let curve: Vec<&FailureRow> = rows.iter().filter(|r| r.kind != "random").collect();
    let categories: Vec<String> = curve.iter().map(|r| r.k.to_string()).collect();
    let bars: Vec<Bars> = CLASSES
        .iter()
        .map(|(c, name)| Bars {
            name: name.to_string(),
            values: curve
                .iter()
                .map(|r| match c {
                    FailureClass::IncompleteRetrieval => r.counts.incomplete_retrieval,
                    FailureClass::Hallucination => r.counts.hallucination,
                    FailureClass::WrongExtraction => r.counts.wrong_extraction,
                    _ => r.counts.empty,
                } as f64)
                .collect(),
        })
        .collect();
    let title = format!("Failed NIAH tests by kind, top-K heads masked: {model}");
    let svg = draw_both(figures, stem, |p| {
        headscope_plot::save_bar_chart(p, &categories, &bars, true, &title, "K (top heads masked)", "failed tests")
    })?;
    let sink = |c: &FailureCounts| {
        if c.hallucination_sink_known == 0 {
            "-".to_owned()
        } else {
            format!("{} of {}", c.hallucination_on_sink, c.hallucination_sink_known)
        }
    };
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let c = &r.counts;
            vec![
                r.run.clone(),
                format!("{}/{}", c.failed(), c.tests),
                c.incomplete_retrieval.to_string(),
                c.hallucination.to_string(),
                c.wrong_extraction.to_string(),
                c.empty.to_string(),
                sink(c),
            ]
        })
        .collect();
    let example_rows: Vec<Vec<String>> = examples
        .iter()
        .map(|(k, answer, j, expected)| {
            vec![
                k.to_string(),
                class_name(j.class).into(),
                answer.clone(),
                expected.clone(),
                j.on_sink.map_or_else(|| "-".into(), |b| if b { "yes" } else { "no" }.into()),
            ]
        })
        .collect();
    html.section(
        "Fig. 9: why masked tests fail",
        &format!(
            "Every failed test of the masking runs, classified from its answer: <i>incomplete retrieval</i> (part of the expected answer), <i>hallucination</i> (none of it, and mostly words not in the context), <i>wrong extraction</i> (none of it, mostly words copied from elsewhere in the context), or an empty answer. The last column counts hallucinations during which the watched heads ({}) that were not masked mostly looked at the first {SINK_TOKENS} prompt tokens (the attention sink).{}<p>Examples at K = {}:</p>{}",
            esc(&watched.join(", ")),
            table(&["run", "failed", "incomplete", "hallucination", "wrong extraction", "empty", "hallucinations on the sink"], table_rows),
            plan.k_max,
            table(&["K", "class", "answer", "expected", "on the sink"], example_rows)
        ),
        Some(&svg),
        &[stem],
    );
    Ok(())
}

/// Fig. 13: how soon the ranking of the strongest heads settles as tests accumulate.
pub(super) fn fig13(
    figures: &Path,
    scores: &HeadScores,
    records: &[TestRecord],
    gate: f64,
    plan: &Plan,
    model: &str,
    html: &mut Html,
) -> Result<()> {
    let stem = "fig13-ranking-stability";
    let count = scores.shape().count();
    let r = plan.retrieval.len().max(1);
    let mut ks: Vec<usize> = [r, 2 * r].into_iter().filter(|&k| k <= count).collect();
    ks.dedup();
    let mut curves = Vec::new();
    for &k in &ks {
        curves.push((k, ranking_stability(records, scores.shape(), gate, k)?));
    }
    let json: Vec<serde_json::Value> = curves
        .iter()
        .map(|(k, pts)| serde_json::json!({"k": k, "points": pts.iter().map(|(t, s)| serde_json::json!({"tests": t, "share": s})).collect::<Vec<_>>()}))
        .collect();
    write_json(figures, stem, &serde_json::json!({"model": model, "gate": gate, "curves": json}))?;
    let mut rows = vec![vec!["k".into(), "tests".into(), "share".into()]];
    for (k, pts) in &curves {
        rows.extend(pts.iter().map(|(t, s)| vec![k.to_string(), t.to_string(), s.to_string()]));
    }
    write_csv(figures, stem, &rows)?;
    let series: Vec<Series> = curves
        .iter()
        .filter(|(_, pts)| !pts.is_empty())
        .map(|(k, pts)| Series { name: format!("top-{k}"), points: pts.iter().map(|&(t, s)| (t as f64, s)).collect() })
        .collect();
    let text = "Share of the final top-k heads already in the running top-k after each scored detection test (in the order the tests ran).";
    if series.is_empty() {
        html.section(
            "Fig. 13: how soon the head ranking settles",
            &format!("{text} No test reached the gate (recall &ge; {gate}): nothing to draw."),
            None,
            &[stem],
        );
        return Ok(());
    }
    let title = format!("Ranking stability: {model}");
    let svg = draw_both(figures, stem, |p| {
        headscope_plot::save_line_chart_with_bands(
            p,
            &series,
            &[],
            Some((0.0, 1.05)),
            &title,
            "scored tests",
            "share of final top-k in running top-k",
        )
    })?;
    html.section("Fig. 13: how soon the head ranking settles", text, Some(&svg), &[stem]);
    Ok(())
}

// ---- the page ----------------------------------------------------------------------------------------
