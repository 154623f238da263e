//! Qwen3 (dense): Qwen2's layout without q/k/v biases (`attention_bias`, default false, also sets the
//! output projection's), and with an RMSNorm over each head's queries and keys before the rotation
//! (`self_attn.q_norm` / `k_norm`, weights of `head_dim`). `head_dim` is its own field (128 in every
//! released size, whatever hidden_size / heads is). Windows as in Qwen2.

use crate::error::Result;
use crate::spec::{fields::bool_or, ModelSpec};
use serde_json::Value;

/// Reads a Qwen3 config.json.
pub fn spec(v: &Value) -> Result<ModelSpec> {
    let mut s = super::common(v, "qwen3", 10_000.0)?;
    let bias = bool_or(v, "attention_bias", false)?;
    s.qkv_bias = bias;
    s.o_bias = bias;
    s.qk_norm = true;
    s.sliding_windows = super::qwen2::windows(v, s.layers)?;
    Ok(s)
}
