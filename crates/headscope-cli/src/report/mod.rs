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

mod figures;
mod page;

use crate::qa::{run_qa, QaRun, QaSetup, QaSummary};
use crate::sweep::{self, MaskChoice, MaskRun};
use crate::{ModelArgs, SweepArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use figures::{fig13, fig3, fig4, fig5, fig6, fig7, fig8, fig9, fig_scores};
use headscope_core::files::{read_head_scores, write_atomic, TestLog};
use headscope_core::qa::read_qa_jsonl;
use headscope_core::{masking, HeadId, HeadScores, ScoreKind, RETRIEVAL_THRESHOLD};
use headscope_model::{HeadMask, MaskMode, MaskScope, ModelDir};
use page::Html;
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
    /// Head scores to set side by side (`eq1,soft,qr,induction,echo,official`; see detect --score): with
    /// more than eq1, the detection writes each, every score's top-K heads are masked like eq. 1's
    /// (K = 1..--k-max) and a figure shows which score's heads the answers need, with the scores'
    /// rank correlations.
    #[arg(long, value_name = "KINDS", default_value = "eq1")]
    pub scores: String,
    /// Not available: a report cannot be split over machines, because its masking runs need the head
    /// scores of the whole detection. Split the sweeps themselves (`detect --shard I/N`, `niah --shard
    /// I/N`, then `headscope merge`). Given, the report stops with that error.
    #[arg(long, value_name = "I/N", value_parser = crate::parse_shard)]
    pub shard: Option<headscope_core::sweep::Shard>,
}

impl ReportArgs {
    /// The sweep flags of a sub-run writing to `out`.
    fn sweep_args(&self, out: PathBuf) -> SweepArgs {
        SweepArgs {
            run: self.run.clone(),
            out,
            needles: Some(self.needles.clone()),
            haystack: self.haystack.clone(),
            haystack_start: None,
            lengths: self.lengths.clone(),
            depths: self.depths,
            max_new_tokens: self.max_new_tokens,
            save_prompts: false,
            watch_heads: None,
            // The report's figures are of the model as it is: the whole cache.
            kv: crate::KvCacheArgs { kv_cache: "full".into(), kv_sink: 4, kv_window: 256 },
            decode: "greedy".into(),
            shard: None,
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

/// A masked sub-run: which kind, its K and seed, the score whose heads it masks, and its directory name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Masked {
    kind: &'static str,
    k: usize,
    seed: Option<u64>,
    /// The score that ranks the heads ([`ScoreKind::name`]); random-K draws from eq. 1's non-retrieval heads.
    score: &'static str,
    /// Directory name under `mask/` or `qa/`.
    name: String,
}

impl Masked {
    fn none() -> Masked {
        Masked { kind: "none", k: 0, seed: None, score: ScoreKind::Eq1.name(), name: "none".into() }
    }
    fn top(k: usize) -> Masked {
        Masked::top_of(ScoreKind::Eq1, k)
    }
    /// The K best heads of `score`: `top-K` for eq. 1 (as always), `<score>-top-K` for the others.
    fn top_of(score: ScoreKind, k: usize) -> Masked {
        let name = if score == ScoreKind::Eq1 { format!("top-{k}") } else { format!("{}-top-{k}", score.name()) };
        Masked { kind: "top", k, seed: None, score: score.name(), name }
    }
    fn random(k: usize, seed: u64) -> Masked {
        Masked { kind: "random", k, seed: Some(seed), score: ScoreKind::Eq1.name(), name: format!("random-{k}-s{seed}") }
    }

    /// The head-score file this sub-run's heads come from, inside the detect run.
    fn scores_file(&self) -> String {
        ScoreKind::parse_list(self.score).map(|k| k[0].file_name()).unwrap_or_else(|_| ScoreKind::Eq1.file_name())
    }

    /// The mask choice of this sub-run, from the detect run's scores in `detect`.
    fn choice(&self, detect: &Path, threshold: f64) -> Option<MaskChoice> {
        let scores = detect.join(self.scores_file());
        match (self.kind, self.seed) {
            ("top", _) => Some(MaskChoice::Top { k: self.k, scores }),
            ("random", Some(seed)) => Some(MaskChoice::Random { k: self.k, seed, threshold, scores }),
            _ => None,
        }
    }

    /// The plan's name in run.json, naming the score file relative to the report directory.
    fn plan_name(&self, threshold: f64) -> String {
        let file = self.scores_file();
        match (self.kind, self.seed) {
            ("top", _) => format!("top-{} of detect/{file}", self.k),
            ("random", Some(seed)) => format!("random-{} seed {seed} of detect/{file} (mean <= {threshold})", self.k),
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
    if let Some(shard) = a.shard {
        bail!(
            "--shard {shard}: a report cannot be split over machines (its masking runs need the head scores of the whole detection); split its sweeps instead with `headscope detect --shard I/N` or `niah --shard I/N` and join them with `headscope merge`"
        );
    }
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
    let mut kinds = ScoreKind::parse_list(&a.scores).context("--scores")?;
    if !kinds.contains(&ScoreKind::Eq1) {
        kinds.insert(0, ScoreKind::Eq1);
    }
    let kind_list: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    sweep::detect(&a.sweep_args(out.join("detect")), a.gate, a.threshold, &kind_list.join(","))?;
    let detect_dir = out.join("detect");
    let scores = read_head_scores(&detect_dir.join(ScoreKind::Eq1.file_name()))?;
    let plan = Plan::new(a, &scores);

    let mut masked = mask_runs(&plan, a.seeds);
    let other_kinds: Vec<ScoreKind> = kinds.iter().copied().filter(|&k| k != ScoreKind::Eq1).collect();
    for &kind in &other_kinds {
        masked.extend((1..=plan.k_max).map(|k| Masked::top_of(kind, k)));
    }
    eprintln!(
        "report 2/3: masking, {} runs (none, top-1..{}, random-1..{} x {} seeds{}) in {}",
        masked.len(),
        plan.k_max,
        plan.k_random,
        a.seeds,
        other_kinds.iter().map(|k| format!(", {}-top-1..{}", k.name(), plan.k_max)).collect::<String>(),
        out.join("mask").display()
    );
    let runs: Vec<MaskRun> = masked
        .iter()
        .map(|m| MaskRun {
            out: out.join("mask").join(&m.name),
            choice: m.choice(&detect_dir, a.threshold),
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
    fig5(&figures, &scores, model_dir.spec.hybrid_attention_layers().as_deref(), &model_name, &mut html)?;
    fig6(&figures, &model_name, &scores, others, &mut html)?;
    let mask_logs = masked
        .iter()
        .filter(|m| m.score == ScoreKind::Eq1.name())
        .map(|m| Ok((m.clone(), TestLog::open(&out.join("mask").join(&m.name).join("tests.jsonl"))?)))
        .collect::<Result<Vec<_>>>()?;
    let eq1_runs: Vec<Masked> = masked.iter().filter(|m| m.score == ScoreKind::Eq1.name()).cloned().collect();
    fig7(&figures, out, &eq1_runs, a.pass, &model_name, &mut html)?;
    if !other_kinds.is_empty() {
        fig_scores(&figures, out, &kinds, &masked, a.pass, &model_name, &mut html)?;
    }
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

#[cfg(test)]
mod tests {
    use super::figures::csv_field;
    use super::page::esc;
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
