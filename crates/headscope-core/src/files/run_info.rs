//! `run.json`: what produced a run's results (model, tokenizer, prompt format, inputs, masks, version),
//! so results can be trusted, reproduced, and never mixed with those of a different setup on resume.

use super::write_atomic;
use crate::error::{CoreError, Result};
use crate::head::HeadId;
use crate::sweep::Shard;
use std::path::Path;

/// The model a run used.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    /// The model directory as given.
    pub dir: String,
    /// Content hash of the model directory (config, tokenizer, weights' headers and sizes).
    pub hash: String,
    /// `model_type` from config.json.
    pub model_type: String,
    /// Number of layers.
    pub layers: usize,
    /// Query heads per layer.
    pub heads: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// Weight dtype the run computed in.
    pub dtype: String,
    /// Device the run computed on.
    pub device: String,
    /// For a hybrid (Jamba), the model layers that attend, in order: row `l` of the head grid (head
    /// `l-h`) is layer `attention_layers[l]`. Absent when every layer attends (then row `l` is layer `l`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_layers: Option<Vec<usize>>,
}

/// The heads a run masked, and how.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MaskInfo {
    /// How the heads were chosen (`top-K from FILE`, `random-K seed S`, `list`).
    pub plan: String,
    /// The masked heads.
    pub heads: Vec<HeadId>,
    /// `uniform` or `zero`.
    pub mode: String,
    /// `decode` or `all`.
    pub scope: String,
}

/// Provenance of one output directory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// HeadScope version that wrote the run.
    pub headscope_version: String,
    /// The subcommand (`detect`, `niah`).
    pub command: String,
    /// The model.
    pub model: ModelInfo,
    /// Hash of tokenizer.json.
    pub tokenizer_hash: String,
    /// `plain` or `chat`.
    pub prompt_format: String,
    /// Hash of the needles.
    pub needles_hash: String,
    /// Hash of the haystack text.
    pub haystack_hash: String,
    /// Most tokens generated per test.
    pub max_new_tokens: usize,
    /// The masked heads, if any.
    pub mask: Option<MaskInfo>,
    /// Seed of any random choice in the run.
    pub seed: Option<u64>,
    /// The head scores the run writes (`eq1`, `official`; see [`crate::ScoreKind`]) when more than
    /// eq. 1's `head_scores.json`; absent for eq. 1 alone. Scores are computed from the records at the
    /// end of a run, so a resumed run may ask for others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<String>,
    /// The head-level KV-cache policy the run decoded under (`window:W`, `heads:FILE:K`, `random:K:SEED`
    /// with its sink and window, and how many KV heads kept everything); absent: the whole cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache: Option<String>,
    /// How tokens were chosen when not greedily (`decore:FILE:K[:CAP]`: DeCoRe contrasting the model
    /// with a copy that masks FILE's top-K heads); absent: greedy decoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode: Option<String>,
    /// Set when the run is one part of a sweep split over machines (`--shard I/N`); absent: the
    /// whole plan. `headscope merge` joins the parts into the run one machine would have written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
}

/// What a shard's run.json keeps beyond an unsharded one's: which part it is, the whole plan it is a
/// part of, and the settings that turn records into the run's other files. An unsharded run.json
/// keeps neither (a resumed run may extend the grid or change the gate), but `headscope merge` has
/// only the shards' folders to check coverage against and to write those files from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ShardInfo {
    /// Which part of how many, `I/N`.
    pub shard: Shard,
    /// Needles in the plan.
    pub needles: usize,
    /// The plan's context lengths.
    pub lengths: Vec<usize>,
    /// The plan's needle depths in percent.
    pub depths: Vec<f64>,
    /// The model's name in figure titles.
    pub model_name: String,
    /// `detect --gate`: the recall a test needs to be scored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<f64>,
    /// `detect --threshold`: the mean score that makes a retrieval head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// `niah --pass`: the recall an answer needs to pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<f64>,
}

impl RunInfo {
    /// The fields whose change makes earlier results incomparable, with their values, for resume checks.
    fn identity(&self) -> Vec<(&'static str, String)> {
        vec![
            ("command", self.command.clone()),
            ("model hash", self.model.hash.clone()),
            ("dtype", self.model.dtype.clone()),
            ("tokenizer", self.tokenizer_hash.clone()),
            ("prompt format", self.prompt_format.clone()),
            ("needles", self.needles_hash.clone()),
            ("haystack", self.haystack_hash.clone()),
            ("max new tokens", self.max_new_tokens.to_string()),
            ("mask", format!("{:?}", self.mask)),
            ("KV cache", self.kv_cache.clone().unwrap_or_else(|| "full".into())),
            ("decoding", self.decode.clone().unwrap_or_else(|| "greedy".into())),
            ("shard", self.shard.as_ref().map_or_else(|| "the whole plan".into(), |s| s.shard.to_string())),
        ]
    }

    /// How this run differs from `other` in what decides whether their records belong to one sweep:
    /// everything a resume checks but the shard's index, the head scores written, the plan and the
    /// settings that turn records into files. Empty: shards of one sweep. Each entry names the field
    /// with both values.
    pub fn differences_as_shards(&self, other: &RunInfo) -> Vec<String> {
        let fields = |r: &RunInfo| {
            let mut f: Vec<(&'static str, String)> = r.identity().into_iter().filter(|(name, _)| *name != "shard").collect();
            f.push(("head scores", format!("{:?}", r.scores)));
            match &r.shard {
                None => f.push(("shard", "none (not run with --shard)".into())),
                Some(s) => f.extend([
                    ("number of shards", s.shard.count.to_string()),
                    ("needles in the plan", s.needles.to_string()),
                    ("lengths", format!("{:?}", s.lengths)),
                    ("depths", format!("{:?}", s.depths)),
                    ("model name", s.model_name.clone()),
                    ("gate", format!("{:?}", s.gate)),
                    ("threshold", format!("{:?}", s.threshold)),
                    ("pass", format!("{:?}", s.pass)),
                ]),
            }
            f
        };
        fields(self)
            .into_iter()
            .zip(fields(other))
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("{}: {} against {}", a.0, a.1, b.1))
            .collect()
    }

    /// Checks that a run directory's existing `run.json` (if any) describes the same setup, then writes
    /// this one. Sweep sizes may differ: a rerun may add lengths or depths to a finished run.
    pub fn check_and_write(&self, path: &Path) -> Result<()> {
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
            let old: RunInfo = serde_json::from_str(&text).map_err(|e| CoreError::malformed(path, e.to_string()))?;
            let differ: Vec<String> = old
                .identity()
                .into_iter()
                .zip(self.identity())
                .filter(|(a, b)| a.1 != b.1)
                .map(|(a, b)| format!("{}: was {}, now {}", a.0, a.1, b.1))
                .collect();
            if !differ.is_empty() {
                return Err(CoreError::invalid(format!(
                    "{} belongs to a different run ({}); use another --out directory to keep both",
                    path.parent().unwrap_or(path).display(),
                    differ.join("; ")
                )));
            }
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| CoreError::invalid(e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }
}

/// Hex SHA-256 prefix (16 hex digits) of some bytes: the short hashes in provenance.
pub fn short_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            headscope_version: "0".into(),
            command: "detect".into(),
            model: ModelInfo {
                dir: "m".into(),
                hash: "h".into(),
                model_type: "llama".into(),
                layers: 2,
                heads: 4,
                kv_heads: 2,
                dtype: "f32".into(),
                device: "cpu".into(),
                attention_layers: None,
            },
            tokenizer_hash: "t".into(),
            prompt_format: "plain".into(),
            needles_hash: "n".into(),
            haystack_hash: "s".into(),
            max_new_tokens: 20,
            mask: None,
            seed: None,
            scores: Vec::new(),
            kv_cache: None,
            decode: None,
            shard: None,
        }
    }

    #[test]
    fn resume_accepts_same_setup_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run.json");
        info().check_and_write(&p).unwrap();
        info().check_and_write(&p).unwrap();
        let mut other = info();
        other.model.hash = "different".into();
        let e = other.check_and_write(&p).unwrap_err().to_string();
        assert!(e.contains("model hash") && e.contains("another --out"), "{e}");
    }
}
