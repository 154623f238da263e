//! Qwen2 (and Qwen1.5, which uses the same `model_type`): biases on the q/k/v projections; a sliding
//! window only when `use_sliding_window` is true, and then only from layer `max_window_layers` on
//! (as Hugging Face's `layer_types` default does); transformers 5 writes that `layer_types` list out.

use crate::error::Result;
use crate::spec::{fields::*, ModelSpec};
use serde_json::Value;

/// Reads a Qwen2 config.json.
pub fn spec(v: &Value) -> Result<ModelSpec> {
    let mut s = super::common(v, "qwen2", 10_000.0)?;
    s.qkv_bias = true;
    s.sliding_windows = windows(v, s.layers)?;
    Ok(s)
}

/// Qwen's per-layer windows (Qwen2 and Qwen3 alike): transformers 5's `layer_types`, else a window
/// from layer `max_window_layers` on when `use_sliding_window` is true, else none.
pub(crate) fn windows(v: &Value, layers: usize) -> Result<Vec<Option<usize>>> {
    if let Some(windows) = super::layer_types_windows(v, layers)? {
        // transformers 5 spells the per-layer choice out; it is derived from the fields below.
        return Ok(windows);
    }
    if bool_or(v, "use_sliding_window", false)? {
        let window = usize_opt(v, "sliding_window")?;
        let from = usize_opt(v, "max_window_layers")?.unwrap_or(layers);
        return Ok((0..layers).map(|i| if i >= from { window } else { None }).collect());
    }
    Ok(vec![None; layers])
}
