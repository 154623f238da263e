//! `headscope kv`: what the retrieval heads buy in KV memory. For each window W, the same NIAH grid
//! runs with the KV heads of the top-K retrieval heads keeping the whole cache (the others a sink and
//! the last W positions), with as many randomly chosen KV heads kept whole instead (several seeds),
//! with every KV head windowed, and once with the whole cache; each run is an ordinary `niah` run in
//! its own folder (resumable). Pass rate against KV memory goes to kv.png, kv.json and kv.csv.
//!
//! A windowed head still sees a needle that lies in the sink or in the last W positions, so the pass
//! rate over the whole grid mixes tests a window cannot lose with those it can. Each windowed point
//! therefore also reports the tests whose needle lies wholly beyond its window (after the sink, ending
//! at least W positions before the prompt's end), and the whole cache's pass rate on those same tests.

use crate::sweep::{self, open_model, read_scores_for};
use crate::SweepArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use headscope_core::files::{write_atomic, TestRecord};
use headscope_core::{masking, RETRIEVAL_THRESHOLD};
use headscope_engine::KvPlan;
use headscope_model::{MaskMode, MaskScope};
use headscope_plot::{Band, Series};
use std::path::{Path, PathBuf};

/// Flags of `headscope kv`.
#[derive(Args, Debug)]
pub struct KvArgs {
    #[command(flatten)]
    pub sweep: SweepArgs,
    /// Head scores (a `detect` run's head_scores.json) whose top heads' KV heads keep the whole cache.
    #[arg(long)]
    pub scores: PathBuf,
    /// How many top heads, comma-separated for several (each with its random controls): default, the
    /// retrieval heads (mean score above --threshold).
    #[arg(long, value_name = "K,...")]
    pub top: Option<String>,
    /// A head whose mean score exceeds this is a retrieval head (for the default --top).
    #[arg(long, default_value_t = RETRIEVAL_THRESHOLD)]
    pub threshold: f64,
    /// Windows W to try, comma-separated (recent positions a windowed KV head keeps).
    #[arg(long, default_value = "64,128,256,512")]
    pub windows: String,
    /// Random plans per window (seeds 1..N), each keeping as many KV heads whole as the retrieval plan.
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Answers with at least this ROUGE-1 recall pass.
    #[arg(long, default_value_t = 0.5)]
    pub pass: f64,
}

/// One run of the sweep: its folder, policy, window, top-K (0 where none), what family of plan it is,
/// and the plan itself (None: the whole cache), for its memory.
struct KvRun {
    dir: PathBuf,
    policy: String,
    window: usize,
    top: usize,
    family: &'static str,
    plan: Option<KvPlan>,
}

/// `headscope kv`.
pub fn kv(a: &KvArgs) -> Result<()> {
    if let Some(shard) = a.sweep.shard {
        // Its chart compares whole runs against each other; parts of them would be compared instead.
        bail!(
            "--shard {shard}: headscope kv cannot be split over machines; split `headscope niah --kv-cache ... --shard I/N` runs instead"
        );
    }
    if a.sweep.kv.kv_cache != "full" {
        bail!("headscope kv chooses the KV policies itself: leave --kv-cache out");
    }
    let windows: Vec<usize> = a
        .windows
        .split(',')
        .map(|w| w.trim().parse::<usize>().with_context(|| format!("--windows: `{w}` is not a whole number")))
        .collect::<Result<_>>()?;
    if windows.is_empty() || windows.contains(&0) {
        bail!("--windows needs positive windows");
    }
    let md = open_model(&a.sweep)?;
    let spec = md.spec.clone();
    let scores = read_scores_for(&a.scores, spec.head_shape(), spec.group_size())?;
    let tops: Vec<usize> = match &a.top {
        Some(list) => list
            .split(',')
            .map(|k| k.trim().parse::<usize>().with_context(|| format!("--top: `{k}` is not a whole number")))
            .collect::<Result<_>>()?,
        None => vec![scores.retrieval_heads(a.threshold).len()],
    };
    if tops.is_empty() || tops.contains(&0) {
        bail!("{}: no head's mean score is above {} (or a top-K of 0): give --top K", a.scores.display(), a.threshold);
    }
    let retrieval_plan =
        |k: usize, w: usize| -> Result<KvPlan> { Ok(KvPlan::keeping_heads(&spec, &masking::top_k(&scores, k)?, a.sweep.kv.kv_sink, w)?) };
    let total = spec.head_shape().layers * spec.kv_heads;
    let whole_of: Vec<usize> = tops.iter().map(|&k| retrieval_plan(k, windows[0]).map(|p| p.full_heads())).collect::<Result<_>>()?;
    for (k, whole) in tops.iter().zip(&whole_of) {
        eprintln!("the top {k} heads of {} read {whole} of the {total} KV heads", a.scores.display());
    }
    let scores_path = std::fs::canonicalize(&a.scores).unwrap_or_else(|_| a.scores.clone());
    let mut runs = vec![KvRun { dir: a.sweep.out.join("full"), policy: "full".into(), window: 0, top: 0, family: "full", plan: None }];
    // A single top-K keeps the short folder names.
    let tag = |k: usize| if tops.len() == 1 { String::new() } else { format!("k{k}-") };
    for &w in &windows {
        for (&k, &whole) in tops.iter().zip(&whole_of) {
            let policy = format!("heads:{}:{k}", scores_path.display());
            let dir = a.sweep.out.join(format!("retrieval-{}w{w}", tag(k)));
            runs.push(KvRun { dir, policy, window: w, top: k, family: "retrieval", plan: Some(retrieval_plan(k, w)?) });
            for seed in 1..=a.seeds {
                let dir = a.sweep.out.join(format!("random-{}w{w}-s{seed}", tag(k)));
                let plan = Some(KvPlan::random(&spec, whole, seed, a.sweep.kv.kv_sink, w)?);
                runs.push(KvRun { dir, policy: format!("random:{whole}:{seed}"), window: w, top: k, family: "random", plan });
            }
        }
        runs.push(KvRun {
            dir: a.sweep.out.join(format!("window-w{w}")),
            policy: format!("window:{w}"),
            window: w,
            top: 0,
            family: "window",
            plan: Some(KvPlan::all_windowed(&spec, a.sweep.kv.kv_sink, w)?),
        });
    }
    for (i, run) in runs.iter().enumerate() {
        eprintln!("kv run {}/{}: {} (window {}) -> {}", i + 1, runs.len(), run.policy, run.window, run.dir.display());
        let args = SweepArgs {
            out: run.dir.clone(),
            kv: crate::KvCacheArgs { kv_cache: run.policy.clone(), kv_window: run.window.max(1), ..a.sweep.kv.clone() },
            ..a.sweep.clone()
        };
        sweep::niah(&args, None, MaskMode::Uniform, MaskScope::Decode, a.pass)?;
    }

    // Memory at the longest prompt of the grid, as a share of the whole cache.
    let full_records = records(&runs[0].dir)?;
    let longest = longest_positions(&full_records)?;
    let full_bytes = crate::bench::kv_bytes_per_token(&spec, 2) * longest as u64;
    let mut points = Vec::new();
    for run in &runs {
        let rate = pass_rate(&run.dir)?;
        let whole = run.plan.as_ref().map_or(total, KvPlan::full_heads);
        let bytes = run.plan.as_ref().map_or(full_bytes, |p| p.cache_bytes(&spec, longest, 2));
        let mut point = serde_json::json!({
            "family": run.family, "policy": run.policy, "window": run.window, "top": run.top, "whole_kv_heads": whole,
            "pass_rate": rate, "kv_share": bytes as f64 / full_bytes as f64, "kv_bytes_bf16": bytes, "dir": run.dir.display().to_string(),
        });
        if run.plan.is_some() {
            let beyond = |r: &TestRecord| beyond_window(r, a.sweep.kv.kv_sink, run.window);
            let here = records(&run.dir)?;
            let (tests, rate) = beyond_rate(&here, &beyond, a.pass);
            let (_, full_rate) = beyond_rate(&full_records, &beyond, a.pass);
            point["beyond_window"] = serde_json::json!({ "tests": tests, "pass_rate": rate, "full_cache_pass_rate": full_rate });
        }
        points.push(point);
    }
    let summary = serde_json::json!({
        "model": md.dir.display().to_string(), "scores": a.scores.display().to_string(), "tops": tops,
        "whole_kv_heads": whole_of, "kv_heads": total, "sink": a.sweep.kv.kv_sink, "longest_prompt": longest, "points": points,
    });
    write_atomic(&a.sweep.out.join("kv.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    let mut csv = String::from(
        "family,policy,window,top,whole_kv_heads,pass_rate,kv_share,beyond_window_tests,beyond_window_pass_rate,beyond_window_full_cache_pass_rate\n",
    );
    for p in &points {
        let text = |k: &str| p[k].as_str().unwrap_or("").to_string();
        // Empty where the point has no window (the whole cache) or no test lies beyond it.
        let beyond = |k: &str| if p["beyond_window"][k].is_null() { String::new() } else { p["beyond_window"][k].to_string() };
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            text("family"),
            text("policy"),
            p["window"],
            p["top"],
            p["whole_kv_heads"],
            p["pass_rate"],
            p["kv_share"],
            beyond("tests"),
            beyond("pass_rate"),
            beyond("full_cache_pass_rate")
        ));
    }
    write_atomic(&a.sweep.out.join("kv.csv"), csv.as_bytes())?;
    draw(&a.sweep.out.join("kv.png"), &points, total)?;
    for p in &points {
        let b = &p["beyond_window"];
        let beyond = match (b["tests"].as_u64(), b["pass_rate"].as_f64(), b["full_cache_pass_rate"].as_f64()) {
            (Some(n), Some(r), Some(f)) if n > 0 => {
                format!("; needle beyond the window: {:>5.1}% of {n} tests (whole cache {:.1}%)", 100.0 * r, 100.0 * f)
            }
            (Some(0), ..) => "; no needle beyond the window".to_string(),
            _ => String::new(),
        };
        println!(
            "{:<9} window {:>4}, {:>3} of {total} KV heads whole: pass rate {:>5.1}% with {:>5.1}% of the KV memory{beyond}",
            p["family"].as_str().unwrap_or(""),
            p["window"],
            p["whole_kv_heads"],
            100.0 * p["pass_rate"].as_f64().unwrap_or(0.0),
            100.0 * p["kv_share"].as_f64().unwrap_or(0.0)
        );
    }
    println!("wrote {}/{{kv.png, kv.json, kv.csv}}", a.sweep.out.display());
    Ok(())
}

/// The pass rate a finished `niah` run wrote into its summary.json.
fn pass_rate(dir: &Path) -> Result<f64> {
    let path = dir.join("summary.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)?;
    v["pass_rate"].as_f64().with_context(|| format!("{}: no pass_rate", path.display()))
}

/// A run's test records.
fn records(dir: &Path) -> Result<Vec<TestRecord>> {
    Ok(headscope_core::files::TestLog::open(&dir.join("tests.jsonl"))?.records().to_vec())
}

/// Whether a test's needle lies wholly where a windowed KV head cannot see it when the answer starts:
/// after the `sink` leading positions and before the prompt's last `window` positions.
fn beyond_window(r: &TestRecord, sink: usize, window: usize) -> bool {
    let [start, end] = r.needle_tokens;
    start >= sink && end + window <= r.prompt_tokens
}

/// How many of `records` `chosen` picks, and the share of those that pass (None where it picks none).
fn beyond_rate(records: &[TestRecord], chosen: &dyn Fn(&TestRecord) -> bool, pass: f64) -> (usize, Option<f64>) {
    let picked: Vec<&TestRecord> = records.iter().filter(|r| chosen(r)).collect();
    let passed = picked.iter().filter(|r| r.recall >= pass).count();
    (picked.len(), (!picked.is_empty()).then(|| passed as f64 / picked.len() as f64))
}

/// The longest prompt plus answer budget of a run's tests (its records' prompt lengths).
fn longest_positions(records: &[TestRecord]) -> Result<usize> {
    records.iter().map(|r| r.length + r.generated_ids.len()).max().context("the full-cache run has no records")
}

/// The random plans of one (window, top-K): their (memory %, pass rate %) points, one per seed.
type RandomGroup = ((u64, u64), Vec<(f64, f64)>);

/// Pass rate (y) against KV memory as a share of the whole cache (x): one line per family through its
/// plans (windows, and top-K for the retrieval and random ones); random's points are means over seeds,
/// their range shaded; the whole cache one point.
fn draw(path: &Path, points: &[serde_json::Value], total: usize) -> Result<()> {
    let xy = |p: &serde_json::Value| (100.0 * p["kv_share"].as_f64().unwrap_or(0.0), 100.0 * p["pass_rate"].as_f64().unwrap_or(0.0));
    let of = |family: &str| -> Vec<&serde_json::Value> { points.iter().filter(|p| p["family"] == family).collect() };
    let sorted = |mut l: Vec<(f64, f64)>| {
        l.sort_by(|a, b| a.0.total_cmp(&b.0));
        l
    };
    // Random plans: one point per (window, top), the mean over seeds, and the seeds' range.
    let mut groups: Vec<RandomGroup> = Vec::new();
    for p in of("random") {
        let key = (p["window"].as_u64().unwrap_or(0), p["top"].as_u64().unwrap_or(0));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(xy(p)),
            None => groups.push((key, vec![xy(p)])),
        }
    }
    let mean =
        |v: &[(f64, f64)]| (v.iter().map(|p| p.0).sum::<f64>() / v.len() as f64, v.iter().map(|p| p.1).sum::<f64>() / v.len() as f64);
    let mut band: Vec<(f64, f64, f64)> = groups
        .iter()
        .map(|(_, v)| {
            (mean(v).0, v.iter().map(|p| p.1).fold(f64::INFINITY, f64::min), v.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max))
        })
        .collect();
    band.sort_by(|a, b| a.0.total_cmp(&b.0));
    let series = vec![
        Series {
            name: "the KV heads of the top retrieval heads whole".into(),
            points: sorted(of("retrieval").into_iter().map(xy).collect()),
        },
        Series {
            name: "as many random KV heads whole (mean over seeds)".into(),
            points: sorted(groups.iter().map(|(_, v)| mean(v)).collect()),
        },
        Series { name: "every KV head windowed".into(), points: sorted(of("window").into_iter().map(xy).collect()) },
        Series { name: format!("whole cache ({total} KV heads)"), points: of("full").into_iter().map(xy).collect() },
    ];
    headscope_plot::save_line_chart_with_bands(
        path,
        &series,
        &[Band { series: 1, points: band }],
        Some((0.0, 100.0)),
        "NIAH pass rate against KV-cache memory",
        "KV memory at the longest prompt (% of the whole cache)",
        "pass rate (%)",
    )?;
    Ok(())
}
