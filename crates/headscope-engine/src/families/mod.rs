//! One module per Hugging Face model family: each reads its own `config.json` fields and quirks into a
//! [`ModelSpec`]. The fields every Llama-family config shares are read once, by [`common`].

pub mod llama;
pub mod mistral;
pub mod mixtral;
pub mod qwen2;

use crate::error::{EngineError, Result};
use crate::spec::{fields::*, ModelSpec, RopeScaling};
use serde_json::Value;

/// The fields all supported families share, with `rope_theta_default` for configs that omit it.
pub(crate) fn common(v: &Value, model_type: &str, rope_theta_default: f64) -> Result<ModelSpec> {
    let hidden_size = usize_req(v, "hidden_size")?;
    let heads = usize_req(v, "num_attention_heads")?;
    let layers = usize_req(v, "num_hidden_layers")?;
    if heads == 0 {
        return Err(EngineError::Invalid("`num_attention_heads` must be positive".into()));
    }
    Ok(ModelSpec {
        model_type: model_type.to_owned(),
        vocab_size: usize_req(v, "vocab_size")?,
        hidden_size,
        intermediate_size: usize_req(v, "intermediate_size")?,
        layers,
        heads,
        kv_heads: usize_opt(v, "num_key_value_heads")?.unwrap_or(heads),
        head_dim: usize_opt(v, "head_dim")?.unwrap_or(hidden_size / heads),
        rms_norm_eps: f64_or(v, "rms_norm_eps", 1e-6)?,
        rope_theta: rope_theta(v, rope_theta_default)?,
        rope_scaling: rope_scaling(v)?,
        max_position_embeddings: usize_opt(v, "max_position_embeddings")?.unwrap_or(4096),
        sliding_windows: vec![None; layers],
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        tie_word_embeddings: bool_or(v, "tie_word_embeddings", false)?,
        moe: None,
        bos_token_id: usize_opt(v, "bos_token_id")?.map(|x| x as u32),
        eos_token_ids: token_ids(v, "eos_token_id"),
        torch_dtype: str_opt(v, "torch_dtype").or_else(|| str_opt(v, "dtype")),
    })
}

/// The RoPE settings object: `rope_scaling` (transformers 4), else `rope_parameters` (transformers 5
/// writes this one, with `rope_theta` inside and no top-level `rope_theta` or `rope_scaling`).
fn rope_object(v: &Value) -> Option<&Value> {
    v.get("rope_scaling").filter(|x| !x.is_null()).or_else(|| v.get("rope_parameters").filter(|x| !x.is_null()))
}

/// `rope_theta` at the top level, else inside `rope_parameters`, else the family's default: a
/// transformers 5 config read for its top-level field alone would silently get the default base.
fn rope_theta(v: &Value, default: f64) -> Result<f64> {
    match v.get("rope_theta").filter(|x| !x.is_null()) {
        Some(_) => f64_or(v, "rope_theta", default),
        None => match v.get("rope_parameters").filter(|x| !x.is_null()) {
            Some(rp) => f64_or(rp, "rope_theta", default),
            None => Ok(default),
        },
    }
}

/// `rope_scaling` / `rope_parameters`: absent/null/default, `linear`, or `llama3`; anything else is
/// refused by name.
fn rope_scaling(v: &Value) -> Result<RopeScaling> {
    let Some(rs) = rope_object(v) else {
        return Ok(RopeScaling::None);
    };
    let kind = str_opt(rs, "rope_type").or_else(|| str_opt(rs, "type")).unwrap_or_default();
    let factor = || f64_or(rs, "factor", 1.0);
    match kind.as_str() {
        "" | "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear { factor: factor()? }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: f64_or(rs, "low_freq_factor", 1.0)?,
            high_freq_factor: f64_or(rs, "high_freq_factor", 4.0)?,
            original_max_position_embeddings: usize_opt(rs, "original_max_position_embeddings")?.unwrap_or(8192),
        }),
        other => Err(EngineError::Unsupported(format!("rope_scaling type `{other}` is not supported (supported: linear, llama3)"))),
    }
}

/// A sliding window read from `sliding_window` (null = none) for every layer.
pub(crate) fn uniform_window(v: &Value, layers: usize) -> Result<Vec<Option<usize>>> {
    Ok(vec![usize_opt(v, "sliding_window")?; layers])
}

/// Per layer windows from transformers 5's `layer_types` (`sliding_attention` layers get
/// `sliding_window`, `full_attention` layers none), or `None` when the config has no such list.
pub(crate) fn layer_types_windows(v: &Value, layers: usize) -> Result<Option<Vec<Option<usize>>>> {
    let Some(list) = v.get("layer_types").filter(|x| !x.is_null()) else {
        return Ok(None);
    };
    let list = list.as_array().ok_or_else(|| EngineError::Invalid("`layer_types` is not a list".into()))?;
    if list.len() != layers {
        return Err(EngineError::Invalid(format!("`layer_types` has {} entries for {layers} layers", list.len())));
    }
    let window = usize_opt(v, "sliding_window")?;
    list.iter()
        .map(|t| match t.as_str() {
            Some("full_attention") => Ok(None),
            Some("sliding_attention") => window
                .map(Some)
                .ok_or_else(|| EngineError::Invalid("`layer_types` has sliding layers but `sliding_window` is not set".into())),
            _ => Err(EngineError::Invalid(format!("`layer_types` entry {t} is not full_attention or sliding_attention"))),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
