//! Extractive QA with heads masked (the paper's fig. 8), for `headscope report`: every item of a QA file
//! is answered greedily under each mask, its answer scored by token F1 (core's `qa` module), and each
//! mask's answers appended to its own `qa.jsonl`, so that a rerun only answers what is missing.
//!
//! Like the NIAH batch, one prefill of an item's prompt serves every decode-scope mask.

use crate::sweep::{load_wgpu, model_info};
use anyhow::{bail, Context, Result};
use headscope_core::files::{short_hash, write_atomic, JsonlLog, MaskInfo, RunInfo};
use headscope_core::qa::{mean_f1, prediction, QaItem, QaRecord};
use headscope_core::{HeadId, TextTokenizer};
use headscope_engine::{block_on, greedy_decode_from, Engine};
use headscope_model::{HeadMask, LoadOptions, ModelDir, Probe};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One QA run: where it goes, what it masks, and how the mask was chosen (for run.json).
#[derive(Debug, Clone)]
pub struct QaRun {
    /// Output directory: qa.jsonl, summary.json, run.json.
    pub out: PathBuf,
    /// The mask (None: no heads masked).
    pub mask: Option<HeadMask>,
    /// How the heads were chosen (`top-K of ...`, `random-K seed S of ...`); empty without a mask.
    pub plan: String,
    /// Seed of a random choice.
    pub seed: Option<u64>,
}

/// How the model runs: the same settings as a sweep's.
pub struct QaSetup<'a> {
    /// The model directory.
    pub model_dir: &'a ModelDir,
    /// Dtype and device of the candle engine.
    pub options: LoadOptions,
    /// Answer on the wgpu engine (the page's WGSL forward) instead of candle.
    pub wgpu: bool,
    /// The device as the user named it (for run.json).
    pub device: String,
    /// Use the plain prompt even if the model has a chat template.
    pub plain: bool,
    /// Most tokens per answer.
    pub max_new_tokens: usize,
    /// Prompt tokens per prefill chunk (the model's default when unset).
    pub prefill_chunk: Option<usize>,
}

/// A QA run's `qa.jsonl` ([`JsonlLog`]) and the items it already answered.
struct QaLog {
    log: JsonlLog<QaRecord>,
    done: HashSet<usize>,
}

impl QaLog {
    fn open(path: &Path) -> Result<QaLog> {
        let log = JsonlLog::open(path)?;
        let done = log.records().iter().map(|r: &QaRecord| r.index).collect();
        Ok(QaLog { log, done })
    }

    fn append(&mut self, record: QaRecord) -> Result<()> {
        let key = record.index;
        self.log.append(record)?;
        self.done.insert(key);
        Ok(())
    }
}

/// The outcome of one QA run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QaSummary {
    /// The run's directory.
    pub out: PathBuf,
    /// Items answered.
    pub items: usize,
    /// Mean token F1.
    pub mean_f1: f64,
    /// The masked heads.
    pub masked_heads: Vec<HeadId>,
}

/// The provenance of a QA run: a run.json like a sweep's, where the QA items' questions and answers take
/// the needles' place and their contexts the haystack's.
fn run_info(setup: &QaSetup, items: &[QaItem], run: &QaRun) -> Result<RunInfo> {
    let md = setup.model_dir;
    let questions: Vec<(&str, &[String])> = items.iter().map(|i| (i.question.as_str(), i.answers.as_slice())).collect();
    let contexts: Vec<&str> = items.iter().map(|i| i.context.as_str()).collect();
    Ok(RunInfo {
        headscope_version: headscope_core::VERSION.to_string(),
        command: "qa".into(),
        model: model_info(md, &setup.options, &setup.device),
        tokenizer_hash: md.tokenizer_hash.clone(),
        prompt_format: md.prompt_format(setup.plain).name().to_string(),
        needles_hash: short_hash(serde_json::to_string(&questions)?.as_bytes()),
        haystack_hash: short_hash(serde_json::to_string(&contexts)?.as_bytes()),
        max_new_tokens: setup.max_new_tokens,
        mask: run.mask.as_ref().map(|m| MaskInfo {
            plan: run.plan.clone(),
            heads: m.heads.clone(),
            mode: m.mode.to_string(),
            scope: m.scope.to_string(),
        }),
        seed: run.seed,
        scores: Vec::new(),
        kv_cache: None,
        decode: None,
        shard: None,
    })
}

/// Answers every item under every run's mask that its `qa.jsonl` lacks, writes each run's summary.json,
/// and returns the summaries (in the order of `runs`).
pub fn run_qa(setup: &QaSetup, items: &[QaItem], runs: &[QaRun]) -> Result<Vec<QaSummary>> {
    if setup.max_new_tokens == 0 {
        bail!("the QA answers need at least one new token");
    }
    let md = setup.model_dir;
    let format = md.prompt_format(setup.plain);
    // Prompts first: a QA file the model cannot take fails before anything is written or loaded.
    let mut prompts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let rendered = format.render(&item.message())?;
        let ids = md.tokenizer.encode(&rendered.text, rendered.add_special_tokens)?.ids;
        let need = ids.len() + setup.max_new_tokens;
        if ids.len() < 2 || need > md.spec.max_position_embeddings {
            bail!(
                "QA item {} needs {need} positions ({} prompt tokens + {} new), the model's context is {} tokens",
                i + 1,
                ids.len(),
                setup.max_new_tokens,
                md.spec.max_position_embeddings
            );
        }
        prompts.push(ids);
    }
    let mut logs = Vec::with_capacity(runs.len());
    for run in runs {
        std::fs::create_dir_all(&run.out).with_context(|| format!("creating {}", run.out.display()))?;
        let log = QaLog::open(&run.out.join("qa.jsonl"))?;
        let run_json = run.out.join("run.json");
        if log.log.records().is_empty() && run_json.exists() {
            std::fs::remove_file(&run_json).with_context(|| format!("replacing {}", run_json.display()))?;
        }
        run_info(setup, items, run)?.check_and_write(&run_json)?;
        logs.push(log);
    }
    let pending: usize = logs.iter().map(|l| (0..items.len()).filter(|i| !l.done.contains(i)).count()).sum();
    if pending == 0 {
        eprintln!("all {} QA items of the {} QA runs are already answered: nothing to run", items.len(), runs.len());
    } else {
        eprintln!("answering {pending} QA questions ({} items x {} masks, those not yet answered)", items.len(), runs.len());
        if setup.wgpu {
            answer_all(&mut load_wgpu(md)?, setup, items, &prompts, runs, &mut logs)?;
        } else {
            let mut model = md.load_weights(&setup.options)?;
            if let Some(chunk) = setup.prefill_chunk {
                model.set_prefill_chunk(chunk);
            }
            answer_all(&mut model, setup, items, &prompts, runs, &mut logs)?;
        }
    }
    let mut summaries = Vec::with_capacity(runs.len());
    for (run, log) in runs.iter().zip(&logs) {
        // Only the items of this QA file count (a log may hold no others: run.json pins the file).
        let records: Vec<QaRecord> = log.log.records().iter().filter(|r| r.index < items.len()).cloned().collect();
        let summary = QaSummary {
            out: run.out.clone(),
            items: records.len(),
            mean_f1: mean_f1(&records),
            masked_heads: run.mask.as_ref().map(|m| m.heads.clone()).unwrap_or_default(),
        };
        let json = serde_json::json!({
            "items": summary.items, "mean_f1": summary.mean_f1, "masked_heads": summary.masked_heads,
            "mask_plan": run.plan, "max_new_tokens": setup.max_new_tokens,
        });
        write_atomic(&run.out.join("summary.json"), serde_json::to_string_pretty(&json)?.as_bytes())?;
        summaries.push(summary);
    }
    Ok(summaries)
}

/// Answers every item that a run's log lacks on `engine`, under each run's mask: one prefill per item
/// and mask, each reusing what the cache already holds (the same prompt under another decode-scope
/// mask computes nothing). Each record is appended as it ends.
fn answer_all<E: Engine>(
    engine: &mut E,
    setup: &QaSetup,
    items: &[QaItem],
    prompts: &[Vec<u32>],
    runs: &[QaRun],
    logs: &mut [QaLog],
) -> Result<()>
where
    E::Error: std::error::Error + Send + Sync + 'static,
{
    let md = setup.model_dir;
    block_on(engine.reserve(prompts.iter().map(Vec::len).max().unwrap_or(0) + setup.max_new_tokens))?;
    for (index, (item, ids)) in items.iter().zip(prompts).enumerate() {
        let (&last, context) = ids.split_last().context("empty prompt")?;
        let item_context = || format!("QA item {}", index + 1);
        for (run, log) in runs.iter().zip(logs.iter_mut()) {
            if log.done.contains(&index) {
                continue;
            }
            let started = std::time::Instant::now();
            engine.set_mask(run.mask.clone()).with_context(item_context)?;
            block_on(engine.prefill_reusing(context)).with_context(item_context)?;
            let prefill_seconds = started.elapsed().as_secs_f64();
            let trace = block_on(greedy_decode_from(engine, last, setup.max_new_tokens, &md.eos_token_ids, &Probe::default(), |_| true))
                .with_context(item_context)?;
            let answer = md.tokenizer.decode(&trace.tokens)?;
            let pred = prediction(&answer);
            let f1 = headscope_core::metrics::token_f1(&pred, &item.answers);
            log.append(QaRecord {
                index,
                question: item.question.clone(),
                answers: item.answers.clone(),
                prompt_tokens: ids.len(),
                generated_ids: trace.tokens.clone(),
                answer,
                prediction: pred,
                f1,
                masked_heads: run.mask.as_ref().map(|m| m.heads.clone()).unwrap_or_default(),
                seconds: prefill_seconds + trace.decode_seconds,
            })?;
        }
    }
    Ok(())
}
