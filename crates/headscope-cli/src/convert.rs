//! `headscope convert-scores`: head scores from one file layout to another: the official JSON
//! (`{"layer-head": [score per test]}`) and DuoAttention's `full_attention_heads.tsv` (one gate per KV
//! head and layer). Either way the layout follows the extension (`.tsv` or anything else for JSON).
//! Between the two, the model's grouping of query heads into KV heads decides which query heads share a
//! gate; it comes from the model's config.json or from --heads-per-kv.

use crate::sweep::read_scores_file;
use anyhow::{bail, Context, Result};
use clap::Args;
use headscope_core::files::{write_duo_tsv, write_head_scores};
use headscope_engine::ModelSpec;
use std::path::{Path, PathBuf};

/// Flags of `headscope convert-scores`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The scores to read: an official head-score file (.json) or a DuoAttention head file (.tsv).
    #[arg(long = "from", value_name = "FILE")]
    from: PathBuf,
    /// The file to write, in the layout its extension names (.tsv: DuoAttention's, else the official).
    #[arg(long = "to", value_name = "FILE")]
    to: PathBuf,
    /// The model the scores belong to (its config.json gives the query heads per KV head).
    #[arg(long, value_name = "DIR", conflicts_with = "heads_per_kv")]
    model: Option<PathBuf>,
    /// Query heads per KV head (1 without grouped-query attention), when no --model is given.
    #[arg(long, value_name = "N")]
    heads_per_kv: Option<usize>,
}

fn is_tsv(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv"))
}

/// Runs `convert-scores`.
pub fn convert(a: &ConvertArgs) -> Result<()> {
    let needs_groups = is_tsv(&a.from) || is_tsv(&a.to);
    let (heads_per_kv, spec) = match (&a.model, a.heads_per_kv) {
        (Some(dir), _) => {
            let spec =
                ModelSpec::from_config_file(&dir.join("config.json")).with_context(|| format!("reading the model in {}", dir.display()))?;
            (spec.heads / spec.kv_heads, Some(spec))
        }
        (None, Some(n)) => (n, None),
        (None, None) if needs_groups => bail!("a DuoAttention file names KV heads: give --model DIR or --heads-per-kv N"),
        (None, None) => (1, None),
    };
    let scores = read_scores_file(&a.from, heads_per_kv)?;
    if let Some(spec) = spec {
        let want = spec.head_shape();
        if scores.shape() != want {
            bail!(
                "{}: scores for {} layers x {} heads, but the model has {} x {}",
                a.from.display(),
                scores.shape().layers,
                scores.shape().heads,
                want.layers,
                want.heads
            );
        }
    }
    if is_tsv(&a.to) {
        write_duo_tsv(&a.to, &scores, heads_per_kv)?;
    } else {
        write_head_scores(&a.to, &scores)?;
    }
    println!(
        "wrote {} ({} layers x {} heads, {} per KV head, {} tests)",
        a.to.display(),
        scores.shape().layers,
        scores.shape().heads,
        heads_per_kv,
        scores.tests()
    );
    Ok(())
}
