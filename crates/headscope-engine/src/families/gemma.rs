//! Gemma-2 and Gemma-3 (`Gemma2ForCausalLM`, `Gemma3ForCausalLM`, and the text model inside
//! `Gemma3ForConditionalGeneration`). What sets them apart from the Llama layout:
//! - RMSNorm weights apply as `1 + weight`, in f32; four norms a layer: the attention output and the
//!   MLP output are normalised before their residual adds, and a third norm precedes the MLP;
//! - embeddings multiplied by sqrt(hidden_size) (rounded to the weights' dtype, as transformers does);
//! - GeGLU (`gelu_pytorch_tanh`) instead of SwiGLU;
//! - scores scaled by 1/sqrt(query_pre_attn_scalar) rather than 1/sqrt(head_dim);
//! - sliding-window and global layers alternating (`layer_types`; Gemma-2 every other layer,
//!   Gemma-3 five of every six);
//! - Gemma-2: attention scores and output logits soft-capped (`cap * tanh(x / cap)`);
//! - Gemma-3: q/k norms per head, no attention soft-capping (transformers ignores the field), and a
//!   second RoPE for the sliding layers (base `rope_local_base_freq`, 10000), the global layers keeping
//!   `rope_theta` (1e6) with the checkpoint's scaling (linear x8 from 4B on).
//!
//! Fields a config leaves out take the defaults of transformers' config classes, as loading it in
//! Python would (Gemma-3's multimodal configs leave most of `text_config` out).

use crate::error::{EngineError, Result};
use crate::spec::{fields::*, Activation, ModelSpec, NormStyle, RopeSpec};
use serde_json::{json, Value};

/// Reads a Gemma-2 config.json.
pub fn gemma2(v: &Value) -> Result<ModelSpec> {
    let v = with_defaults(
        v,
        json!({"vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
               "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 8192,
               "query_pre_attn_scalar": 256, "sliding_window": 4096, "tie_word_embeddings": true,
               "final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "bos_token_id": 2, "eos_token_id": 1}),
    );
    let mut s = super::common(&v, "gemma2", 10_000.0)?;
    shared(&v, &mut s)?;
    s.attention_softcap = f64_opt(&v, "attn_logit_softcapping")?;
    s.sliding_windows = windows(&v, s.layers, 2)?;
    Ok(s)
}

/// Reads a Gemma-3 text config.json (`gemma3_text`: the 270M and 1B checkpoints).
pub fn gemma3_text(v: &Value) -> Result<ModelSpec> {
    gemma3_from(v, "gemma3_text")
}

/// Reads a Gemma-3 multimodal config.json (`gemma3`: 4B and up): its `text_config` describes the text
/// model that HeadScope runs (the vision tower's weights are not read); the text model's tensors sit
/// under `language_model.model` (or `model.language_model`, as transformers 5 saves them).
pub fn gemma3(v: &Value) -> Result<ModelSpec> {
    let text = v.get("text_config").filter(|t| t.is_object()).cloned().unwrap_or_else(|| json!({}));
    let mut s = gemma3_from(&text, "gemma3")?;
    s.weight_prefix = "language_model.model".into();
    // Token ids the text config leaves out are the top level's (Gemma-3-4B: eos [1, 106]) before they
    // are the class defaults.
    if text.get("eos_token_id").is_none() && v.get("eos_token_id").is_some() {
        s.eos_token_ids = token_ids(v, "eos_token_id");
    }
    if text.get("bos_token_id").is_none() && v.get("bos_token_id").is_some() {
        s.bos_token_id = usize_opt(v, "bos_token_id")?.map(|x| x as u32);
    }
    s.torch_dtype = s.torch_dtype.or_else(|| str_opt(v, "torch_dtype")).or_else(|| str_opt(v, "dtype"));
    Ok(s)
}

fn gemma3_from(v: &Value, model_type: &str) -> Result<ModelSpec> {
    let v = with_defaults(
        v,
        json!({"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
               "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "max_position_embeddings": 131072,
               "query_pre_attn_scalar": 256, "sliding_window": 4096, "tie_word_embeddings": true,
               "bos_token_id": 2, "eos_token_id": 1}),
    );
    let mut s = super::common(&v, model_type, 1_000_000.0)?;
    shared(&v, &mut s)?;
    s.qk_norm = true;
    let pattern = usize_opt(&v, "sliding_window_pattern")?.or(usize_opt(&v, "_sliding_window_pattern")?).unwrap_or(6);
    s.sliding_windows = windows(&v, s.layers, pattern)?;
    // transformers 5 keeps one RoPE settings object per layer type; transformers 4 wrote `rope_theta` and
    // `rope_scaling` for the global layers and `rope_local_base_freq` for the sliding ones.
    let per_type = v.get("rope_parameters").filter(|r| r.get("full_attention").is_some() || r.get("sliding_attention").is_some());
    let (global, local) = match per_type {
        Some(rp) => (rp.get("full_attention"), rp.get("sliding_attention")),
        None => (super::rope_object(&v), None),
    };
    let theta_of = |entry: Option<&Value>, top: &str, default: f64| -> Result<f64> {
        match entry.and_then(|e| e.get("rope_theta")).filter(|x| !x.is_null()) {
            Some(_) => f64_or(entry.unwrap_or(&Value::Null), "rope_theta", default),
            None => f64_or(&v, top, default),
        }
    };
    s.rope_theta = theta_of(global, "rope_theta", 1_000_000.0)?;
    s.rope_scaling = super::rope_scaling(&v, global, s.max_position_embeddings)?;
    s.sliding_rope = Some(RopeSpec {
        theta: theta_of(local, "rope_local_base_freq", 10_000.0)?,
        scaling: super::rope_scaling(&v, local, s.max_position_embeddings)?,
    });
    Ok(s)
}

/// What Gemma-2 and Gemma-3 share.
fn shared(v: &Value, s: &mut ModelSpec) -> Result<()> {
    let bias = bool_or(v, "attention_bias", false)?;
    s.qkv_bias = bias;
    s.o_bias = bias;
    s.norm_style = NormStyle::OffsetByOne;
    s.sandwich_norms = true;
    s.embedding_scale = Some((s.hidden_size as f64).sqrt());
    let scalar = f64_or(v, "query_pre_attn_scalar", 256.0)?;
    if !(scalar.is_finite() && scalar > 0.0) {
        return Err(EngineError::Invalid(format!("`query_pre_attn_scalar` = {scalar} must be positive")));
    }
    s.attention_scale = 1.0 / scalar.sqrt();
    s.final_logit_softcap = f64_opt(v, "final_logit_softcapping")?;
    let activation = str_opt(v, "hidden_activation").or_else(|| str_opt(v, "hidden_act")).unwrap_or_else(|| "gelu_pytorch_tanh".into());
    s.activation = match activation.as_str() {
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
        other => return Err(EngineError::Unsupported(format!("hidden_activation `{other}` is not supported (Gemma: gelu_pytorch_tanh)"))),
    };
    Ok(())
}

/// Per layer windows: `layer_types` where the config has it, else every `pattern`-th layer (1-based)
/// global and the others sliding, as transformers derives it.
fn windows(v: &Value, layers: usize, pattern: usize) -> Result<Vec<Option<usize>>> {
    if let Some(w) = super::layer_types_windows(v, layers)? {
        return Ok(w);
    }
    if pattern == 0 {
        return Err(EngineError::Invalid("`sliding_window_pattern` must be positive".into()));
    }
    let window = usize_opt(v, "sliding_window")?;
    Ok((0..layers).map(|i| if (i + 1) % pattern != 0 { window } else { None }).collect())
}

/// `v` with the keys of `defaults` that it lacks added (a key present as null stays null: for the
/// soft-capping fields that means "none").
fn with_defaults(v: &Value, defaults: Value) -> Value {
    let mut out = v.clone();
    if let (Some(map), Value::Object(d)) = (out.as_object_mut(), defaults) {
        for (k, x) in d {
            map.entry(k).or_insert(x);
        }
    }
    out
}

/// An optional float field: absent or null gives None.
fn f64_opt(v: &Value, key: &str) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_f64().map(Some).ok_or_else(|| EngineError::Invalid(format!("`{key}` is not a number"))),
    }
}
