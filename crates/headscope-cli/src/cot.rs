//! `headscope cot`: the paper's chain-of-thought experiment (section 4.3, fig. 10). Every task of the
//! task files is asked twice, for the answer alone and for step-by-step reasoning ending in "The answer
//! is ...", with no heads masked, the K best heads of a head-score file masked, and K random
//! non-retrieval heads masked (per seed). Core lays out the prompts and scores the answers by exact
//! match (`headscope_core::cot`); each masked variant's records go to `<out>/<variant>/cot.jsonl` as
//! they are made, so a rerun answers only what is missing; `summary.json` and `fig10-cot.{png,svg}`
//! give accuracy per task kind, mode and mask.

use crate::sweep::{engine_options, load_wgpu, model_info, open_model_dir};
use crate::ModelArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use headscope_core::cot::{accuracy, read_cot_jsonl, CotMode, CotRecord, CotTask};
use headscope_core::files::{read_head_scores, short_hash, write_atomic, JsonlLog, MaskInfo, RunInfo};
use headscope_core::{masking, TextTokenizer, RETRIEVAL_THRESHOLD};
use headscope_engine::sweep::decode_prompt;
use headscope_engine::{block_on, Engine};
use headscope_model::{HeadMask, MaskMode, MaskScope, ModelDir, Probe};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Flags of `headscope cot`.
#[derive(Args, Debug)]
pub struct CotArgs {
    #[command(flatten)]
    pub run: ModelArgs,
    /// Output directory: one folder per mask (none, top-K, random-K-sS), summary.json, fig10-cot.*.
    #[arg(long)]
    pub out: PathBuf,
    /// Task files (`id`, `kind`, `context`, `question`, `answer`, `reasoning` per line).
    #[arg(long, num_args = 1.., default_values = ["public/cot/word-problems.jsonl", "public/cot/two-hop.jsonl"])]
    pub tasks: Vec<PathBuf>,
    /// Head-score file whose top-K heads (and K random heads outside its retrieval heads) are masked;
    /// without it only the unmasked answers are made.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Heads masked (default: the retrieval heads of --scores, at least 1).
    #[arg(long)]
    pub k: Option<usize>,
    /// Random-K draws (seeds 0..N).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// A head whose mean score exceeds this is a retrieval head (never drawn by random-K).
    #[arg(long, default_value_t = RETRIEVAL_THRESHOLD)]
    pub threshold: f64,
    /// uniform: a masked head attends uniformly (the paper); zero: its output is zeroed.
    #[arg(long, default_value = "uniform", value_parser = crate::parse_mode)]
    pub mask_mode: MaskMode,
    /// decode: mask decode steps only (the paper); all: the prompt too.
    #[arg(long, default_value = "decode", value_parser = crate::parse_scope)]
    pub mask_scope: MaskScope,
    /// Most tokens of a direct answer.
    #[arg(long, default_value_t = 24)]
    pub max_new_tokens_direct: usize,
    /// Most tokens of a step-by-step answer.
    #[arg(long, default_value_t = 192)]
    pub max_new_tokens_step: usize,
}

/// One masked variant: its folder name, mask, and how the heads were chosen.
struct Variant {
    name: String,
    mask: Option<HeadMask>,
    plan: String,
    seed: Option<u64>,
}

/// A variant's `cot.jsonl` ([`JsonlLog`]) and the (task, mode) pairs it already answered.
struct CotLog {
    log: JsonlLog<CotRecord>,
    done: HashSet<(String, CotMode)>,
}

impl CotLog {
    fn open(path: &Path) -> Result<CotLog> {
        let log = JsonlLog::open(path)?;
        let done = log.records().iter().map(|r: &CotRecord| (r.id.clone(), r.mode)).collect();
        Ok(CotLog { log, done })
    }

    fn append(&mut self, record: CotRecord) -> Result<()> {
        let key = (record.id.clone(), record.mode);
        self.log.append(record)?;
        self.done.insert(key);
        Ok(())
    }
}

/// Runs `cot`.
pub fn cot(a: &CotArgs) -> Result<()> {
    if a.seeds == 0 || a.k == Some(0) || a.max_new_tokens_direct == 0 || a.max_new_tokens_step == 0 {
        bail!("--seeds, --k and the --max-new-tokens flags must be at least 1");
    }
    let mut tasks: Vec<CotTask> = Vec::new();
    for path in &a.tasks {
        for t in read_cot_jsonl(path)? {
            if tasks.iter().any(|o| o.id == t.id) {
                bail!("{}: task id {:?} is used by an earlier task file too", path.display(), t.id);
            }
            tasks.push(t);
        }
    }
    let md = open_model_dir(&a.run)?;
    let variants = variants(a, &md)?;
    let format = md.prompt_format(a.run.plain);
    // Prompts first: a task the model cannot take fails before anything is written or loaded.
    let mut prompts = Vec::with_capacity(tasks.len() * 2);
    for t in &tasks {
        for mode in CotMode::ALL {
            let ids = t.prompt_ids(mode, &format, &md.tokenizer, max_new_tokens(a, mode), md.spec.max_position_embeddings)?;
            prompts.push((t, mode, ids));
        }
    }
    let (options, wgpu) = engine_options(&a.run)?;
    let tasks_hash = short_hash(serde_json::to_string(&tasks)?.as_bytes());
    let mut logs = Vec::with_capacity(variants.len());
    for v in &variants {
        let dir = a.out.join(&v.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let info = RunInfo {
            headscope_version: headscope_core::VERSION.to_string(),
            command: "cot".into(),
            model: model_info(&md, &options, &a.run.device),
            tokenizer_hash: md.tokenizer_hash.clone(),
            prompt_format: format.name().to_string(),
            needles_hash: tasks_hash.clone(),
            haystack_hash: String::new(),
            max_new_tokens: a.max_new_tokens_step,
            mask: v.mask.as_ref().map(|m| MaskInfo {
                plan: v.plan.clone(),
                heads: m.heads.clone(),
                mode: m.mode.to_string(),
                scope: m.scope.to_string(),
            }),
            seed: v.seed,
            scores: Vec::new(),
            kv_cache: None,
            decode: None,
            shard: None,
        };
        info.check_and_write(&dir.join("run.json"))?;
        logs.push(CotLog::open(&dir.join("cot.jsonl"))?);
    }
    let pending: usize = logs.iter().map(|l| prompts.iter().filter(|(t, m, _)| !l.done.contains(&(t.id.clone(), *m))).count()).sum();
    if pending == 0 {
        eprintln!("all {} answers of the {} masks are already in {}: nothing to run", prompts.len(), variants.len(), a.out.display());
    } else {
        eprintln!("answering {pending} of {} ({} tasks x 2 modes x {} masks)", prompts.len() * variants.len(), tasks.len(), variants.len());
        if wgpu {
            answer_all(&mut load_wgpu(&md)?, a, &md, &prompts, &variants, &mut logs)?;
        } else {
            let mut model = md.load_weights(&options)?;
            if let Some(chunk) = a.run.prefill_chunk {
                model.set_prefill_chunk(chunk);
            }
            answer_all(&mut model, a, &md, &prompts, &variants, &mut logs)?;
        }
    }
    summarise(a, &tasks, &variants, &logs)
}

fn max_new_tokens(a: &CotArgs, mode: CotMode) -> usize {
    match mode {
        CotMode::Direct => a.max_new_tokens_direct,
        CotMode::StepByStep => a.max_new_tokens_step,
    }
}

/// No mask; with --scores also top-K and random-K per seed.
fn variants(a: &CotArgs, md: &ModelDir) -> Result<Vec<Variant>> {
    let mut out = vec![Variant { name: "none".into(), mask: None, plan: String::new(), seed: None }];
    let Some(path) = &a.scores else { return Ok(out) };
    let scores = read_head_scores(path)?;
    if scores.shape() != md.spec.head_shape() {
        bail!("{}: scores for {:?}, but the model has {:?}", path.display(), scores.shape(), md.spec.head_shape());
    }
    let k = a.k.unwrap_or_else(|| scores.retrieval_heads(a.threshold).len().max(1));
    let mask = |heads| Some(HeadMask { heads, mode: a.mask_mode, scope: a.mask_scope });
    out.push(Variant {
        name: format!("top-{k}"),
        mask: mask(masking::top_k(&scores, k)?),
        plan: format!("top-{k} of {}", path.display()),
        seed: None,
    });
    for seed in 0..a.seeds {
        let heads = masking::random_k(&scores, k, seed, a.threshold)?;
        let plan = format!("random-{k} seed {seed} of {} (mean <= {})", path.display(), a.threshold);
        out.push(Variant { name: format!("random-{k}-s{seed}"), mask: mask(heads), plan, seed: Some(seed) });
    }
    Ok(out)
}

/// Answers every prompt a variant's log lacks; one prefill per prompt serves every decode-scope mask.
fn answer_all<E: Engine>(
    engine: &mut E,
    a: &CotArgs,
    md: &ModelDir,
    prompts: &[(&CotTask, CotMode, Vec<u32>)],
    variants: &[Variant],
    logs: &mut [CotLog],
) -> Result<()>
where
    E::Error: std::error::Error + Send + Sync + 'static,
{
    let longest = prompts.iter().map(|(_, m, ids)| ids.len() + max_new_tokens(a, *m)).max().unwrap_or(0);
    block_on(engine.reserve(longest))?;
    for (task, mode, ids) in prompts {
        for (v, log) in variants.iter().zip(logs.iter_mut()) {
            if log.done.contains(&(task.id.clone(), *mode)) {
                continue;
            }
            let what = || format!("task {} ({}, {})", task.id, mode.name(), v.name);
            let max_new = max_new_tokens(a, *mode);
            let (trace, _) = block_on(decode_prompt(engine, ids, v.mask.clone(), &Probe::default(), max_new, &md.eos_token_ids, |_| true))
                .with_context(what)?;
            let text = md.tokenizer.decode(&trace.tokens)?;
            let record = CotRecord::scored(task, *mode, text, ids.len(), trace.tokens.len());
            eprintln!("{}: {:?} -> {:?} ({})", what(), task.answer, record.predicted, if record.correct { "right" } else { "wrong" });
            log.append(record)?;
        }
    }
    Ok(())
}

/// summary.json (accuracy per mask, kind and mode, random-K's seeds pooled) and fig10-cot.{png,svg}.
fn summarise(a: &CotArgs, tasks: &[CotTask], variants: &[Variant], logs: &[CotLog]) -> Result<()> {
    let ids: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let mut kinds: Vec<&str> = Vec::new();
    for t in tasks {
        if !kinds.contains(&t.kind.as_str()) {
            kinds.push(&t.kind);
        }
    }
    let groups: Vec<(&str, Vec<&CotLog>)> = [("none", "none"), ("top-K", "top-"), ("random-K", "random-")]
        .into_iter()
        .map(|(label, prefix)| (label, variants.iter().zip(logs).filter(|(v, _)| v.name.starts_with(prefix)).map(|(_, l)| l).collect()))
        .filter(|(_, l): &(&str, Vec<&CotLog>)| !l.is_empty())
        .collect();
    let mut rows = Vec::new();
    let mut categories = Vec::new();
    let mut bars: Vec<headscope_plot::Bars> =
        groups.iter().map(|(g, _)| headscope_plot::Bars { name: g.to_string(), values: vec![] }).collect();
    for kind in &kinds {
        for mode in CotMode::ALL {
            categories.push(format!("{kind}, {}", mode.name()));
            for (i, (group, group_logs)) in groups.iter().enumerate() {
                let records: Vec<&CotRecord> = group_logs
                    .iter()
                    .flat_map(|l| l.log.records())
                    .filter(|r| ids.contains(r.id.as_str()) && r.kind == *kind && r.mode == mode)
                    .collect();
                let acc = accuracy(records.iter().copied());
                bars[i].values.push(acc);
                rows.push(serde_json::json!({"kind": kind, "mode": mode.name(), "mask": group, "answers": records.len(), "accuracy": acc}));
                println!("{kind:>13} {:>13} {group:>9}: {:5.1} % of {}", mode.name(), 100.0 * acc, records.len());
            }
        }
    }
    let masks: Vec<serde_json::Value> = variants
        .iter()
        .map(|v| serde_json::json!({"name": v.name, "plan": v.plan, "heads": v.mask.as_ref().map(|m| m.heads.clone()).unwrap_or_default()}))
        .collect();
    let summary = serde_json::json!({"tasks": tasks.len(), "masks": masks, "accuracy": rows});
    write_atomic(&a.out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    for ext in ["png", "svg"] {
        let path = a.out.join(format!("fig10-cot.{ext}"));
        headscope_plot::save_bar_chart(
            &path,
            &categories,
            &bars,
            false,
            "Exact match with heads masked",
            "task kind, how asked",
            "accuracy",
        )
        .with_context(|| format!("drawing {}", path.display()))?;
    }
    println!("wrote {}/{{summary.json, fig10-cot.png, fig10-cot.svg}}", a.out.display());
    Ok(())
}
