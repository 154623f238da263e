//! Llama (Llama-2/3, Yi, TinyLlama, SmolLM and the lab model): `LlamaForCausalLM` checkpoints.
//! Quirks: optional `attention_bias` / `mlp_bias`; rope scaling linear or llama3.

use crate::error::Result;
use crate::spec::{fields::bool_or, ModelSpec};
use serde_json::Value;

/// Reads a Llama config.json.
pub fn spec(v: &Value) -> Result<ModelSpec> {
    let mut s = super::common(v, "llama", 10_000.0)?;
    let attention_bias = bool_or(v, "attention_bias", false)?;
    s.qkv_bias = attention_bias;
    s.o_bias = attention_bias;
    s.mlp_bias = bool_or(v, "mlp_bias", false)?;
    Ok(s)
}
