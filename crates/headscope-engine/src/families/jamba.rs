//! Jamba (`JambaForCausalLM`, AI21's Jamba-v0.1): a hybrid of attention and Mamba layers. Layer `i`
//! attends when `i % attn_layer_period == attn_layer_offset` (Jamba-v0.1: 4 of 32 layers) and mixes
//! with a Mamba selective state-space block otherwise; its feed-forward block is a mixture of
//! `num_experts` experts (top `num_experts_per_tok`, router probabilities used as they are, not
//! renormalised) when `i % expert_layer_period == expert_layer_offset`, a dense SwiGLU otherwise. The
//! attention has no positional encoding (the Mamba layers carry position). Tensors are named
//! `mamba.*`, `feed_forward.*`, `pre_ff_layernorm` and `final_layernorm`.
//!
//! Retrieval heads exist only in the attention layers: the head grid counts those layers alone.

use crate::error::{EngineError, Result};
use crate::spec::{fields::*, LayerKind, MambaSpec, ModelSpec, MoeSpec, TensorNames};
use serde_json::Value;

/// Reads a Jamba config.json.
pub fn spec(v: &Value) -> Result<ModelSpec> {
    let mut s = super::common(v, "jamba", 10_000.0)?;
    let period = |key: &str, default: usize| -> Result<usize> {
        let p = usize_opt(v, key)?.unwrap_or(default);
        if p == 0 {
            return Err(EngineError::Invalid(format!("`{key}` must be positive")));
        }
        Ok(p)
    };
    let (attn_period, attn_offset) = (period("attn_layer_period", 8)?, usize_opt(v, "attn_layer_offset")?.unwrap_or(4));
    let (expert_period, expert_offset) = (period("expert_layer_period", 2)?, usize_opt(v, "expert_layer_offset")?.unwrap_or(1));
    s.layer_kinds = (0..s.layers).map(|i| if i % attn_period == attn_offset { LayerKind::Attention } else { LayerKind::Mamba }).collect();
    let experts = usize_opt(v, "num_experts")?.unwrap_or(16);
    let expert_layers: Vec<bool> = (0..s.layers).map(|i| experts > 1 && i % expert_period == expert_offset).collect();
    if expert_layers.contains(&true) {
        s.moe = Some(MoeSpec {
            experts,
            experts_per_token: usize_opt(v, "num_experts_per_tok")?.unwrap_or(2),
            renormalize: false,
            layers: expert_layers,
        });
    }
    let expand = usize_opt(v, "mamba_expand")?.unwrap_or(2);
    let inner = expand.checked_mul(s.hidden_size).ok_or_else(|| EngineError::Invalid("mamba_expand x hidden_size overflows".into()))?;
    let dt_rank = match v.get("mamba_dt_rank") {
        // "auto" in Mamba's own configs: ceil(hidden_size / 16).
        Some(Value::String(a)) if a == "auto" => s.hidden_size.div_ceil(16),
        _ => usize_opt(v, "mamba_dt_rank")?.unwrap_or(256),
    };
    s.mamba = Some(MambaSpec {
        state: usize_opt(v, "mamba_d_state")?.unwrap_or(16),
        conv: usize_opt(v, "mamba_d_conv")?.unwrap_or(4),
        inner,
        dt_rank,
        conv_bias: bool_or(v, "mamba_conv_bias", true)?,
        proj_bias: bool_or(v, "mamba_proj_bias", false)?,
    });
    let activation = str_opt(v, "hidden_act").unwrap_or_else(|| "silu".into());
    if activation != "silu" {
        return Err(EngineError::Unsupported(format!("Jamba with hidden_act `{activation}` (HeadScope runs silu)")));
    }
    // No rotary embedding: attention sees positions only through the Mamba layers.
    s.rotary_dim = 0;
    s.sliding_windows = super::uniform_window(v, s.layers)?;
    s.tensor_names = TensorNames::Jamba;
    Ok(s)
}
