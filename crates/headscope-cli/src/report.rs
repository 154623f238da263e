//! `headscope report`: the paper's figures for one model from one command. It runs (or resumes) the
//! sub-runs the figures need inside `--out`, then has core reduce them to the figures' numbers, the plot
//! crate draw them, and writes one self-contained HTML page with every figure inline.
//!
//! Sub-runs, each a directory laid out as the command that makes it would lay it out:
//! - `detect/`: `headscope detect` (head scores, figs. 3, 4, 5, 13);
//! - `mask/none`, `mask/top-K`, `mask/random-K-sS`: `headscope niah` with the K best heads or K random
//!   non-retrieval heads (seed S) masked, all over the detect grid (figs. 7 and 9);
//! - `qa/none`, `qa/top-K`, `qa/random-K-sS`: extractive QA under the same kinds of masks (fig. 8).
//!
//! Every sub-run resumes from what it finished, so a second invocation does no model work and only
//! redraws. Figures go to `figures/` as PNG, SVG, JSON and CSV, and all together into `report.html`.

use crate::qa::{run_qa, QaRun, QaSetup, QaSummary};
use crate::sweep::{self, MaskChoice, MaskRun};
use crate::{ModelArgs, SweepArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use headscope_core::analysis::{
    always_active, correlation_matrix, head_activity, judge_record, ranking_stability, score_distribution, spread, CorrelationMatrix,
    FailureClass, FailureCounts, FailureJudgement, HeadActivity, ScoreDistribution, Spread, SINK_TOKENS,
};
use headscope_core::files::{in_plan_order, read_head_scores, write_atomic, TestLog, TestRecord};
use headscope_core::niah::{read_needles_jsonl, Needle, NiahBuilder};
use headscope_core::qa::read_qa_jsonl;
use headscope_core::{masking, HeadId, HeadScores, RETRIEVAL_THRESHOLD};
use headscope_model::{HeadMask, MaskMode, MaskScope, ModelDir};
use headscope_plot::{Band, Bars, Series};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Flags of `headscope report`. The defaults make a report of the bundled lab model in a few minutes on
/// two CPU cores; every grid flag scales it up.
#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub run: ModelArgs,
    /// Report directory: sub-runs, figures/ and report.html. Rerunning resumes; finished runs are reused.
    #[arg(long)]
    pub out: PathBuf,
    /// Needles JSONL of the NIAH tests.
    #[arg(long, default_value = "public/needles/heldout.jsonl")]
    pub needles: PathBuf,
    /// Haystack text files, joined and repeated to length.
    #[arg(long, num_args = 1.., default_values = ["public/haystacks/kjv-john.txt"])]
    pub haystack: Vec<PathBuf>,
    /// Prompt lengths in tokens: MIN:MAX:N (N evenly spaced) or one length.
    #[arg(long, default_value = "256:1024:3")]
    pub lengths: String,
    /// Number of needle depths, evenly spaced over 0-100 %.
    #[arg(long, default_value_t = 5)]
    pub depths: usize,
    /// Most tokens to generate per NIAH test.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Detection scores only tests whose answer has at least this ROUGE-1 recall (0 scores every test).
    #[arg(long, default_value_t = 0.5)]
    pub gate: f64,
    /// A head whose mean score exceeds this is a retrieval head.
    #[arg(long, default_value_t = RETRIEVAL_THRESHOLD)]
    pub threshold: f64,
    /// NIAH answers with at least this ROUGE-1 recall pass.
    #[arg(long, default_value_t = 0.5)]
    pub pass: f64,
    /// Largest K of the masking curves (default: twice the number of retrieval heads, at least 2).
    #[arg(long)]
    pub k_max: Option<usize>,
    /// Random-K draws per K (seeds 0..N).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// uniform: a masked head attends uniformly (the paper); zero: its output is zeroed.
    #[arg(long, default_value = "uniform", value_parser = crate::parse_mode)]
    pub mask_mode: MaskMode,
    /// decode: mask decode steps only (the paper); all: the prompt too.
    #[arg(long, default_value = "decode", value_parser = crate::parse_scope)]
    pub mask_scope: MaskScope,
    /// Extractive QA file (`context`, `question`, `answers` per line) for fig. 8.
    #[arg(long, default_value = "public/qa/john-qa.jsonl")]
    pub qa: PathBuf,
    /// Leave out the QA experiment (fig. 8).
    #[arg(long)]
    pub no_qa: bool,
    /// Heads masked in the QA experiment (default: the number of retrieval heads, at least 1).
    #[arg(long)]
    pub qa_k: Option<usize>,
    /// Most tokens per QA answer.
    #[arg(long, default_value_t = 16)]
    pub qa_max_new_tokens: usize,
    /// Other models' head-score files (same layers x heads) to correlate with this model (fig. 6).
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub compare: Vec<PathBuf>,
}

impl ReportArgs {
    /// The sweep flags of a sub-run writing to `out`.
    fn sweep_args(&self, out: PathBuf) -> SweepArgs {
        SweepArgs {
            run: self.run.clone(),
            out,
            needles: Some(self.needles.clone()),
            haystack: self.haystack.clone(),
            lengths: self.lengths.clone(),
            depths: self.depths,
            max_new_tokens: self.max_new_tokens,
            save_prompts: false,
        }
    }

    /// Checks the numbers and that the input files are there, before any work.
    fn check(&self) -> Result<()> {
        for (name, v) in [("--gate", self.gate), ("--pass", self.pass), ("--threshold", self.threshold)] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be between 0 and 1, not {v}");
            }
        }
        if self.seeds == 0 {
            bail!("--seeds must be at least 1 (random-K is the control of top-K)");
        }
        if self.k_max == Some(0) {
            bail!("--k-max must be at least 1");
        }
        if self.qa_k == Some(0) {
            bail!("--qa-k must be at least 1");
        }
        let mut inputs: Vec<(&str, &Path)> = vec![("--needles", &self.needles)];
        inputs.extend(self.haystack.iter().map(|p| ("--haystack", p.as_path())));
        if !self.no_qa {
            inputs.push(("--qa", &self.qa));
        }
        for (flag, path) in inputs {
            if !path.is_file() {
                bail!(
                    "{flag} {}: no such file (the defaults are relative to the repository root: run from there, or pass {flag})",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// Where the figures go inside the report directory.
const FIGURES: &str = "figures";

/// The heads masked by each sub-run of the masking curves.
struct Plan {
    /// Largest K of the curves.
    k_max: usize,
    /// Largest K random-K can draw (non-retrieval heads available).
    k_random: usize,
    /// K of the QA experiment.
    qa_k: usize,
    /// The retrieval heads (mean above the threshold), strongest first.
    retrieval: Vec<(HeadId, f64)>,
    /// Heads whose argmax every masked test keeps, for the sink note: the retrieval heads, or the
    /// strongest head when there are none.
    watch: Vec<HeadId>,
}

impl Plan {
    fn new(a: &ReportArgs, scores: &HeadScores) -> Plan {
        let retrieval = scores.retrieval_heads(a.threshold);
        let count = scores.shape().count();
        let r = retrieval.len().max(1);
        let k_max = a.k_max.unwrap_or(2 * r).min(count);
        let pool = scores.shape().iter().filter(|&h| scores.mean(h) <= a.threshold).count();
        let watch = scores.ranked().into_iter().take(r).map(|(h, _)| h).collect();
        Plan { k_max, k_random: k_max.min(pool), qa_k: a.qa_k.unwrap_or(r).min(count), retrieval, watch }
    }
}

/// A masked sub-run: which kind, its K and seed, and its directory name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Masked {
    kind: &'static str,
    k: usize,
    seed: Option<u64>,
    /// Directory name under `mask/` or `qa/`.
    name: String,
}

impl Masked {
    fn none() -> Masked {
        Masked { kind: "none", k: 0, seed: None, name: "none".into() }
    }
    fn top(k: usize) -> Masked {
        Masked { kind: "top", k, seed: None, name: format!("top-{k}") }
    }
    fn random(k: usize, seed: u64) -> Masked {
        Masked { kind: "random", k, seed: Some(seed), name: format!("random-{k}-s{seed}") }
    }

    /// The mask choice of this sub-run, from the detect run's scores at `scores`.
    fn choice(&self, scores: &Path, threshold: f64) -> Option<MaskChoice> {
        match (self.kind, self.seed) {
            ("top", _) => Some(MaskChoice::Top { k: self.k, scores: scores.to_owned() }),
            ("random", Some(seed)) => Some(MaskChoice::Random { k: self.k, seed, threshold, scores: scores.to_owned() }),
            _ => None,
        }
    }

    /// The plan's name in run.json, naming the score file relative to the report directory.
    fn plan_name(&self, threshold: f64) -> String {
        match (self.kind, self.seed) {
            ("top", _) => format!("top-{} of detect/head_scores.json", self.k),
            ("random", Some(seed)) => format!("random-{} seed {seed} of detect/head_scores.json (mean <= {threshold})", self.k),
            _ => String::new(),
        }
    }
}

/// The masked sub-runs of the masking curves: none, top-1..k_max, random-1..k_random for every seed.
fn mask_runs(plan: &Plan, seeds: u64) -> Vec<Masked> {
    let mut runs = vec![Masked::none()];
    runs.extend((1..=plan.k_max).map(Masked::top));
    for k in 1..=plan.k_random {
        runs.extend((0..seeds).map(|s| Masked::random(k, s)));
    }
    runs
}

/// `headscope report`.
pub fn report(a: &ReportArgs) -> Result<()> {
    a.check()?;
    let out = &a.out;
    let model_dir = sweep::open_model(&a.sweep_args(out.join("detect")))?;
    let shape = model_dir.spec.head_shape();
    let qa_items = if a.no_qa { None } else { Some(read_qa_jsonl(&a.qa)?) };
    let mut others = Vec::with_capacity(a.compare.len());
    for (path, name) in a.compare.iter().zip(crate::compare::names_of(&a.compare)) {
        let s = read_head_scores(path)?;
        if s.shape() != shape {
            bail!(
                "--compare {} has {} layers x {} heads but the model has {} x {}: heads are paired by layer-head, so the files must come from models with the same grid",
                path.display(),
                s.shape().layers,
                s.shape().heads,
                shape.layers,
                shape.heads
            );
        }
        others.push((name, s));
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;

    eprintln!("report 1/3: detection ({})", out.join("detect").display());
    sweep::detect(&a.sweep_args(out.join("detect")), a.gate, a.threshold)?;
    let scores_path = out.join("detect").join("head_scores.json");
    let scores = read_head_scores(&scores_path)?;
    let plan = Plan::new(a, &scores);

    let masked = mask_runs(&plan, a.seeds);
    eprintln!(
        "report 2/3: masking, {} runs (none, top-1..{}, random-1..{} x {} seeds) in {}",
        masked.len(),
        plan.k_max,
        plan.k_random,
        a.seeds,
        out.join("mask").display()
    );
    let runs: Vec<MaskRun> = masked
        .iter()
        .map(|m| MaskRun {
            out: out.join("mask").join(&m.name),
            choice: m.choice(&scores_path, a.threshold),
            plan_name: Some(m.plan_name(a.threshold)),
        })
        .collect();
    sweep::niah_batch(&a.sweep_args(out.join("mask")), &runs, a.mask_mode, a.mask_scope, a.pass, &plan.watch)?;

    let qa = match &qa_items {
        None => None,
        Some(items) => {
            eprintln!("report 3/3: extractive QA, {} items, K = {} ({})", items.len(), plan.qa_k, out.join("qa").display());
            Some(qa_runs(a, &model_dir, &scores, &plan, items)?)
        }
    };

    let figures = out.join(FIGURES);
    std::fs::create_dir_all(&figures).with_context(|| format!("creating {}", figures.display()))?;
    let model_name = sweep::model_name(&model_dir.dir);
    let detect_log = TestLog::open(&out.join("detect").join("tests.jsonl"))?;
    let mut html = Html::new(a, &model_dir, &model_name, &scores, &plan, detect_log.records());
    fig3(&figures, &scores, &model_name, &mut html)?;
    fig4(&figures, &scores, &model_name, &mut html)?;
    fig5(&figures, &scores, &model_name, &mut html)?;
    fig6(&figures, &model_name, &scores, others, &mut html)?;
    let mask_logs = masked
        .iter()
        .map(|m| Ok((m.clone(), TestLog::open(&out.join("mask").join(&m.name).join("tests.jsonl"))?)))
        .collect::<Result<Vec<_>>>()?;
    fig7(&figures, out, &masked, a.pass, &model_name, &mut html)?;
    match &qa {
        Some((runs, summaries)) => fig8(&figures, runs, summaries, plan.qa_k, &model_name, &mut html)?,
        None => html.section("Fig. 8: extractive QA with heads masked", "Left out (<code>--no-qa</code>).", None, &[]),
    }
    fig9(a, &figures, &model_dir, &plan, &mask_logs, &model_name, &mut html)?;
    fig13(&figures, &scores, detect_log.records(), a.gate, &plan, &model_name, &mut html)?;
    let page = out.join("report.html");
    write_atomic(&page, html.finish().as_bytes())?;
    println!("wrote {} (figures and their data in {})", page.display(), figures.display());
    Ok(())
}

/// The QA sub-runs: none, top-K and random-K per seed (K = `plan.qa_k`), answered and summarised.
fn qa_runs(
    a: &ReportArgs,
    model_dir: &ModelDir,
    scores: &HeadScores,
    plan: &Plan,
    items: &[headscope_core::qa::QaItem],
) -> Result<(Vec<Masked>, Vec<QaSummary>)> {
    let k = plan.qa_k;
    let mut kinds = vec![Masked::none(), Masked::top(k)];
    let pool = scores.shape().iter().filter(|&h| scores.mean(h) <= a.threshold).count();
    if k <= pool {
        kinds.extend((0..a.seeds).map(|s| Masked::random(k, s)));
    }
    let mut runs = Vec::with_capacity(kinds.len());
    for m in &kinds {
        let heads = match (m.kind, m.seed) {
            ("top", _) => masking::top_k(scores, m.k)?,
            ("random", Some(seed)) => masking::random_k(scores, m.k, seed, a.threshold)?,
            _ => vec![],
        };
        let mask = (!heads.is_empty()).then_some(HeadMask { heads, mode: a.mask_mode, scope: a.mask_scope });
        runs.push(QaRun { out: a.out.join("qa").join(&m.name), mask, plan: m.plan_name(a.threshold), seed: m.seed });
    }
    let (options, wgpu) = sweep::engine_options(&a.run)?;
    let setup = QaSetup {
        model_dir,
        options,
        wgpu,
        device: a.run.device.clone(),
        plain: a.run.plain,
        max_new_tokens: a.qa_max_new_tokens,
        prefill_chunk: a.run.prefill_chunk,
    };
    let summaries = run_qa(&setup, items, &runs)?;
    Ok((kinds, summaries))
}

// ---- writing figures -------------------------------------------------------------------------------

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
fn csv_field(s: &str) -> String {
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
fn fig3(figures: &Path, scores: &HeadScores, model: &str, html: &mut Html) -> Result<()> {
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
fn fig4(figures: &Path, scores: &HeadScores, model: &str, html: &mut Html) -> Result<()> {
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
fn fig5(figures: &Path, scores: &HeadScores, model: &str, html: &mut Html) -> Result<()> {
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
    let svg = draw_both(figures, stem, |p| {
        let mut grid = headscope_plot::Grid::new(shape.layers, shape.heads);
        for h in shape.iter() {
            grid.set(h.layer, h.head, scores.mean(h));
        }
        headscope_plot::save_head_heatmap(p, &grid, &title)
    })?;
    html.section(
        "Fig. 5: retrieval scores by layer and head",
        "Mean retrieval score of every head (layer 0 at the top).",
        Some(&svg),
        &[stem],
    );
    Ok(())
}

/// Fig. 6: correlations with other models' head scores (only with `--compare`).
fn fig6(figures: &Path, model: &str, scores: &HeadScores, others: Vec<(String, HeadScores)>, html: &mut Html) -> Result<()> {
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
fn fig7(figures: &Path, out: &Path, masked: &[Masked], pass: f64, model: &str, html: &mut Html) -> Result<()> {
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

/// Fig. 8: extractive QA F1 with no mask, top-K and random-K.
fn fig8(figures: &Path, runs: &[Masked], summaries: &[QaSummary], k: usize, model: &str, html: &mut Html) -> Result<()> {
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
fn fig9(
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
fn fig13(figures: &Path, scores: &HeadScores, records: &[TestRecord], gate: f64, plan: &Plan, model: &str, html: &mut Html) -> Result<()> {
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

/// The command that made the report, as typed (program name shortened to `headscope`).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect();
    format!("headscope {}", args.join(" "))
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn percent(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// A small HTML table (cells escaped).
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = String::from("<table><tr>");
    for h in header {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr>");
    for row in rows {
        t.push_str("<tr>");
        for c in row {
            let _ = write!(t, "<td>{}</td>", esc(&c));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

/// The report page, built section by section. Figures are inline SVG, so the one file is the whole
/// report (it can be mailed); links to the data files work next to the report directory.
struct Html {
    body: String,
    title: String,
}

impl Html {
    fn new(a: &ReportArgs, md: &ModelDir, model: &str, scores: &HeadScores, plan: &Plan, detect: &[TestRecord]) -> Html {
        let passed = detect.iter().filter(|r| r.recall >= a.pass).count();
        let heads: Vec<String> = plan.retrieval.iter().map(|(h, m)| format!("{h} ({m:.3})")).collect();
        let spec = &md.spec;
        let mut body = String::new();
        let _ = write!(
            body,
            "<h1>Retrieval heads of {model}</h1><p>Model <code>{}</code> ({}, {} layers x {} query heads, {} KV heads; hash {}). \
             NIAH grid: lengths {}, {} depths, needles <code>{}</code>, haystack <code>{}</code>; {} tests, pass rate {} (ROUGE-1 recall &ge; {}). \
             {} scored tests (recall &ge; {}); <b>{} retrieval heads</b> (mean score &gt; {}){}.</p>\
             <p>Made by <code>{}</code> (HeadScope {}). Masks: {} mode, {} scope; top-K for K = 1..{}, random-K from non-retrieval heads for K = 1..{} with {} seeds.</p>",
            esc(&md.dir.display().to_string()),
            esc(&spec.model_type),
            spec.layers,
            spec.heads,
            spec.kv_heads,
            esc(&md.hash),
            esc(&a.lengths),
            a.depths,
            esc(&a.needles.display().to_string()),
            esc(&a.haystack.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
            detect.len(),
            percent(if detect.is_empty() { 0.0 } else { passed as f64 / detect.len() as f64 }),
            a.pass,
            scores.tests(),
            a.gate,
            plan.retrieval.len(),
            a.threshold,
            if heads.is_empty() { String::new() } else { format!(": {}", esc(&heads.join(", "))) },
            esc(&command_line()),
            headscope_core::VERSION,
            a.mask_mode,
            a.mask_scope,
            plan.k_max,
            plan.k_random,
            a.seeds,
        );
        Html { body, title: format!("HeadScope report: {model}") }
    }

    /// Adds a section: heading, text (HTML), the figure's SVG inline, links to its files.
    fn section(&mut self, heading: &str, text: &str, svg: Option<&str>, stems: &[&str]) {
        let _ = write!(self.body, "<section><h2>{}</h2><p>{text}</p>", esc(heading));
        if let Some(svg) = svg {
            let start = svg.find("<svg").unwrap_or(0);
            let _ = write!(self.body, "<div class=\"fig\">{}</div>", &svg[start..]);
        }
        if !stems.is_empty() {
            let links: Vec<String> = stems
                .iter()
                .flat_map(|s| ["png", "svg", "json", "csv"].map(|e| format!("<a href=\"{FIGURES}/{s}.{e}\">{s}.{e}</a>")))
                .collect();
            let _ = write!(self.body, "<p class=\"files\">Files: {}</p>", links.join(" "));
        }
        self.body.push_str("</section>");
    }

    fn finish(self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
             body{{font-family:'DejaVu Sans',sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#202020;line-height:1.4}}\
             h1{{font-size:1.6em}}h2{{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}}\
             .fig svg{{max-width:100%;height:auto}}table{{border-collapse:collapse;margin:.8em 0;font-size:.9em}}\
             td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}th{{background:#f3f3f3}}.files{{font-size:.8em;color:#666}}\
             code{{background:#f3f3f3;padding:0 .2em}}</style></head><body>\n{}\n</body></html>\n",
            esc(&self.title),
            self.body
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a, b"), "\"a, b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(esc("<b>&\"</b>"), "&lt;b&gt;&amp;&quot;&lt;/b&gt;");
    }

    #[test]
    fn mask_runs_cover_none_top_and_random_per_seed() {
        let plan = Plan { k_max: 3, k_random: 2, qa_k: 1, retrieval: vec![], watch: vec![] };
        let names: Vec<String> = mask_runs(&plan, 2).into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["none", "top-1", "top-2", "top-3", "random-1-s0", "random-1-s1", "random-2-s0", "random-2-s1"]);
        assert_eq!(Masked::top(2).plan_name(0.1), "top-2 of detect/head_scores.json");
        assert!(Masked::none().choice(Path::new("s.json"), 0.1).is_none());
    }
}
