//! Files that carry results between runs and tools: the official head-score format, DuoAttention's
//! head file, HeadScope's per-test records (`tests.jsonl`) and run provenance (`run.json`).

pub mod duo_tsv;
pub mod head_scores;
pub mod jsonl;
pub mod records;
pub mod run_info;
pub mod shards;

pub use duo_tsv::{read_duo_tsv, write_duo_tsv};
pub use head_scores::{read_head_scores, write_head_scores};
pub use jsonl::JsonlLog;
pub use records::{head_scores_from_records, head_scores_of_kind, in_plan_order, read_records, TestLog, TestRecord};
pub use run_info::{short_hash, MaskInfo, ModelInfo, RunInfo, ShardInfo};
pub use shards::{merge_shards, MergedRun, ShardRun};

use crate::error::{CoreError, Result};
use std::path::Path;

/// Writes `bytes` to `path` atomically (temp file + rename), so a crash never leaves half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    std::fs::write(&tmp, bytes).map_err(|e| CoreError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| CoreError::io(path, e))
}
