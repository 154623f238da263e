//! Phi-3 and Phi-3.5 (`Phi3ForCausalLM`; also Phi-4-mini, which rotates only part of each head): the
//! Llama layout with fused projections (`self_attn.qkv_proj`: q, k, v rows in that order;
//! `mlp.gate_up_proj`: gate rows, then up rows), an optional `sliding_window` on every layer (the 4K
//! models: 2047), `partial_rotary_factor`, and LongRoPE (`longrope`, formerly `su`) for the 128K
//! models, whose short or long factors apply by the sequence's length. Phi-3-small (`phi3small`:
//! block-sparse attention) is another architecture and is refused by its model_type.

use crate::error::Result;
use crate::spec::ModelSpec;
use serde_json::Value;

/// Reads a Phi-3 config.json.
pub fn spec(v: &Value) -> Result<ModelSpec> {
    let mut s = super::common(v, "phi3", 10_000.0)?;
    s.fused_projections = true;
    s.sliding_windows = super::uniform_window(v, s.layers)?;
    Ok(s)
}
