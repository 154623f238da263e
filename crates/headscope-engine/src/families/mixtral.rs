//! Mixtral: Mistral attention with a sparse mixture-of-experts feed-forward (`block_sparse_moe`):
//! `num_local_experts` experts, each token routed to the top `num_experts_per_tok` by a softmax router
//! whose chosen weights are renormalised.

use crate::error::Result;
use crate::spec::{fields::*, ModelSpec, MoeSpec};
use serde_json::Value;

/// Reads a Mixtral config.json.
pub fn spec(v: &Value) -> Result<ModelSpec> {
    let mut s = super::common(v, "mixtral", 1_000_000.0)?;
    s.sliding_windows = super::uniform_window(v, s.layers)?;
    s.moe = Some(MoeSpec {
        experts: usize_req(v, "num_local_experts")?,
        experts_per_token: usize_opt(v, "num_experts_per_tok")?.unwrap_or(2),
        renormalize: true,
        layers: vec![true; s.layers],
    });
    Ok(s)
}
