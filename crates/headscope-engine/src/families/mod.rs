//! One module per Hugging Face model family: each reads its own `config.json` fields and quirks into a
//! [`ModelSpec`]. The fields every Llama-family config shares are read once, by [`common`].

pub mod gemma;
pub mod jamba;
pub mod llama;
pub mod mistral;
pub mod mixtral;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;

use crate::error::{EngineError, Result};
use crate::spec::{fields::*, Activation, LayerKind, ModelSpec, NormStyle, RopeScaling, TensorNames};
use serde_json::Value;

/// The fields all supported families share, with `rope_theta_default` for configs that omit it.
pub(crate) fn common(v: &Value, model_type: &str, rope_theta_default: f64) -> Result<ModelSpec> {
    let hidden_size = usize_req(v, "hidden_size")?;
    let heads = usize_req(v, "num_attention_heads")?;
    let layers = usize_req(v, "num_hidden_layers")?;
    if heads == 0 {
        return Err(EngineError::Invalid("`num_attention_heads` must be positive".into()));
    }
    let head_dim = usize_opt(v, "head_dim")?.unwrap_or(hidden_size / heads);
    let max_position_embeddings = usize_opt(v, "max_position_embeddings")?.unwrap_or(4096);
    Ok(ModelSpec {
        model_type: model_type.to_owned(),
        vocab_size: usize_req(v, "vocab_size")?,
        hidden_size,
        intermediate_size: usize_req(v, "intermediate_size")?,
        layers,
        heads,
        kv_heads: usize_opt(v, "num_key_value_heads")?.unwrap_or(heads),
        head_dim,
        rms_norm_eps: f64_or(v, "rms_norm_eps", 1e-6)?,
        rope_theta: rope_theta(v, rope_theta_default)?,
        rope_scaling: rope_scaling(v, rope_object(v), max_position_embeddings)?,
        max_position_embeddings,
        sliding_windows: vec![None; layers],
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
        tie_word_embeddings: bool_or(v, "tie_word_embeddings", false)?,
        moe: None,
        bos_token_id: usize_opt(v, "bos_token_id")?.map(|x| x as u32),
        eos_token_ids: token_ids(v, "eos_token_id"),
        torch_dtype: str_opt(v, "torch_dtype").or_else(|| str_opt(v, "dtype")),
        rotary_dim: rotary_dim(v, head_dim)?,
        sliding_rope: None,
        qk_norm: false,
        norm_style: NormStyle::Plain,
        embedding_scale: None,
        attention_scale: 1.0 / (head_dim as f64).sqrt(),
        attention_softcap: None,
        final_logit_softcap: None,
        activation: Activation::Silu,
        sandwich_norms: false,
        fused_projections: false,
        weight_prefix: "model".into(),
        layer_kinds: vec![LayerKind::Attention; layers],
        mamba: None,
        tensor_names: TensorNames::Llama,
    })
}

/// The rotated width: `partial_rotary_factor` (inside the RoPE settings, or at the top level as
/// transformers 4 wrote it) times `head_dim`, rounded down as transformers does; all of it when absent.
fn rotary_dim(v: &Value, head_dim: usize) -> Result<usize> {
    let inner = rope_object(v).and_then(|r| r.get("partial_rotary_factor")).filter(|x| !x.is_null());
    let factor = match inner {
        Some(_) => f64_or(rope_object(v).unwrap_or(v), "partial_rotary_factor", 1.0)?,
        None => f64_or(v, "partial_rotary_factor", 1.0)?,
    };
    if !(factor > 0.0 && factor <= 1.0) {
        return Err(EngineError::Invalid(format!("`partial_rotary_factor` = {factor} must be in (0, 1]")));
    }
    Ok((head_dim as f64 * factor) as usize)
}

/// The RoPE settings object: `rope_scaling` (transformers 4), else `rope_parameters` (transformers 5
/// writes this one, with `rope_theta` inside and no top-level `rope_theta` or `rope_scaling`).
pub(crate) fn rope_object(v: &Value) -> Option<&Value> {
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

/// The scaling of the RoPE settings object `rs` (`rope_scaling` / `rope_parameters`, or one layer
/// type's entry of Gemma-3's): absent/null/default, `linear`, `llama3` or `longrope` (`su`); anything
/// else is refused by name. `v` is the whole config, where transformers 4 kept LongRoPE's pre-training
/// length.
pub(crate) fn rope_scaling(v: &Value, rs: Option<&Value>, max_position_embeddings: usize) -> Result<RopeScaling> {
    let Some(rs) = rs else {
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
        "longrope" | "su" => {
            let original = match usize_opt(rs, "original_max_position_embeddings")? {
                Some(o) => o,
                None => usize_opt(v, "original_max_position_embeddings")?.ok_or_else(|| {
                    EngineError::Invalid("LongRoPE scaling needs `original_max_position_embeddings` (the pre-training context)".into())
                })?,
            };
            let factors = |key: &str| -> Result<Vec<f64>> {
                let list = rs
                    .get(key)
                    .and_then(Value::as_array)
                    .ok_or_else(|| EngineError::Invalid(format!("LongRoPE scaling needs a `{key}` list")))?;
                list.iter()
                    .map(|x| x.as_f64().filter(|f| f.is_finite() && *f > 0.0))
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(|| EngineError::Invalid(format!("`{key}` holds something other than positive numbers")))
            };
            // transformers: the factor defaults to the context's growth, and the attention factor to
            // sqrt(1 + ln(factor) / ln(original)) when the context grew.
            let factor = match rs.get("factor").filter(|x| !x.is_null()) {
                Some(_) => factor()?,
                None => max_position_embeddings as f64 / original.max(1) as f64,
            };
            let attention_factor = match rs.get("attention_factor").filter(|x| !x.is_null()) {
                Some(_) => f64_or(rs, "attention_factor", 1.0)?,
                None if factor <= 1.0 => 1.0,
                None => (1.0 + factor.ln() / (original as f64).ln()).sqrt(),
            };
            Ok(RopeScaling::LongRope {
                short_factor: factors("short_factor")?,
                long_factor: factors("long_factor")?,
                original_max_position_embeddings: original,
                attention_factor,
            })
        }
        other => {
            Err(EngineError::Unsupported(format!("rope_scaling type `{other}` is not supported (supported: linear, llama3, longrope)")))
        }
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
