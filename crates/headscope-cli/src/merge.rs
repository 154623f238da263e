//! `headscope merge`: joins the folders of a sweep split with `--shard I/N` into the folder one machine
//! would have written. Core checks the shards and orders the records ([`merge_shards`]); the files are
//! then written by the same functions a sweep finishes with ([`outputs::finish_detect`],
//! [`outputs::finish_niah`]).

use crate::outputs;
use anyhow::{bail, Context, Result};
use clap::Args;
use headscope_core::files::{merge_shards, read_records, write_atomic, RunInfo, ShardRun};
use headscope_core::{HeadShape, ScoreKind};
use std::path::{Path, PathBuf};

/// Flags of `headscope merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The merged run folder (new, or without a run in it).
    #[arg(long)]
    pub out: PathBuf,
    /// The shard folders (the --out of each `detect --shard I/N` or `niah --shard I/N` of one sweep).
    #[arg(value_name = "SHARD_DIR")]
    pub shards: Vec<PathBuf>,
    /// Merge even when some of the plan's tests are in no shard (a shard not finished or not given):
    /// the merged folder then holds what there is, and the unsharded command rerun with it as --out
    /// runs the rest.
    #[arg(long)]
    pub allow_missing: bool,
}

/// `headscope merge`.
pub fn merge(a: &MergeArgs) -> Result<()> {
    if a.shards.is_empty() {
        bail!("no shard folders given: headscope merge --out DIR SHARD_DIR... (the folders of `--shard I/N` runs of one sweep)");
    }
    let runs = a.shards.iter().map(|dir| read_shard(dir)).collect::<Result<Vec<_>>>()?;
    let merged = merge_shards(&runs, a.allow_missing)?;
    for r in &runs {
        if r.dir.canonicalize().ok() == a.out.canonicalize().ok() {
            bail!("--out {} is one of the shard folders: merge into a new folder", a.out.display());
        }
        // Counted from rebuilt prompts, which merge cannot do without the model; sweeps refuse to
        // split such runs, so only a hand-made folder gets here.
        if std::fs::read_to_string(r.dir.join("summary.json")).is_ok_and(|t| t.contains("\"distractors\"")) {
            bail!("{}: the shard counted distractor answers, which merge does not recount", r.dir.display());
        }
    }
    for name in ["tests.jsonl", "run.json"] {
        if a.out.join(name).exists() {
            bail!("--out {} already holds a run ({name}): merge into a new folder", a.out.display());
        }
    }
    let info = &merged.info;
    // A hybrid's head grid has a row per attention layer only.
    let rows = info.model.attention_layers.as_ref().map_or(info.model.layers, Vec::len);
    let shape = HeadShape::new(rows, info.model.heads);
    let (first, count) = (&runs[0].dir, merged.shard.shard.count);
    // Checked before anything is written: what the command's files need, and a detect run's data-free
    // scores, which come from one of the shards.
    let s = &merged.shard;
    let finish = match info.command.as_str() {
        "detect" => Finish::Detect {
            gate: s.gate.context("the shards' run.json lacks detect's gate")?,
            threshold: s.threshold.context("the shards' run.json lacks detect's threshold")?,
        },
        "niah" => Finish::Niah { pass: s.pass.context("the shards' run.json lacks niah's pass threshold")? },
        other => bail!("merge joins detect and niah runs; these shards are of `{other}`"),
    };
    let kinds = score_kinds(info)?;
    let data_free: Vec<ScoreKind> = kinds.iter().copied().filter(|k| !k.from_records()).collect();
    for kind in &data_free {
        if !first.join(kind.file_name()).is_file() {
            bail!("{}: no {} (the {} score): was that shard finished?", first.display(), kind.file_name(), kind.name());
        }
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut lines = String::new();
    for r in &merged.records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    write_atomic(&a.out.join("tests.jsonl"), lines.as_bytes())?;
    info.check_and_write(&a.out.join("run.json"))?;
    let records = &merged.records;
    match finish {
        Finish::Detect { gate, threshold } => {
            // One pass over random tokens, the same on every machine: the first shard's is the run's.
            for kind in &data_free {
                std::fs::copy(first.join(kind.file_name()), a.out.join(kind.file_name()))
                    .with_context(|| format!("copying {} from {}", kind.file_name(), first.display()))?;
            }
            outputs::finish_detect(
                &a.out,
                shape,
                info.model.attention_layers.as_deref(),
                records,
                &kinds,
                gate,
                threshold,
                &s.model_name,
                0,
            )?;
        }
        Finish::Niah { pass } => {
            let (heads, plan, mode) = match &info.mask {
                Some(m) => (m.heads.clone(), m.plan.clone(), m.mode.clone()),
                None => (Vec::new(), String::new(), String::new()),
            };
            outputs::finish_niah(&a.out, records, &s.model_name, &heads, &plan, &mode, pass)?;
        }
    }
    let missing = if merged.missing.is_empty() {
        String::new()
    } else {
        format!(
            "; {} tests of the plan are in no shard (rerun the unsharded command with --out {} to run them)",
            merged.missing.len(),
            a.out.display()
        )
    };
    println!("merged {} shards of {count} ({} tests) into {}{missing}", runs.len(), records.len(), a.out.display());
    Ok(())
}

/// How the merged records become the run's other files, with the settings the shards recorded.
enum Finish {
    Detect { gate: f64, threshold: f64 },
    Niah { pass: f64 },
}

/// A shard folder's run.json and records, each error naming the folder.
fn read_shard(dir: &Path) -> Result<ShardRun> {
    if !dir.is_dir() {
        bail!("{}: no such folder (expected the --out of a `--shard I/N` run)", dir.display());
    }
    let path = dir.join("run.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: not a run folder: cannot read run.json", dir.display()))?;
    let info: RunInfo = serde_json::from_str(&text).with_context(|| format!("{}: malformed", path.display()))?;
    let records = read_records(&dir.join("tests.jsonl")).with_context(|| format!("{}: cannot read its tests", dir.display()))?;
    Ok(ShardRun { dir: dir.to_owned(), info, records })
}

/// The head scores a detect run writes, as its run.json lists them (none listed: eq. 1 alone).
fn score_kinds(info: &RunInfo) -> Result<Vec<ScoreKind>> {
    if info.scores.is_empty() {
        return Ok(vec![ScoreKind::Eq1]);
    }
    ScoreKind::parse_list(&info.scores.join(",")).context("the shards' run.json lists head scores")
}
