//! Mistral: Llama layout with a sliding attention window when `sliding_window` is set (v0.1: 4096;
//! v0.2: null, full attention).

use crate::error::Result;
use crate::spec::ModelSpec;
use serde_json::Value;

/// Reads a Mistral config.json.
pub fn spec(v: &Value) -> Result<ModelSpec> {
    let mut s = super::common(v, "mistral", 10_000.0)?;
    s.sliding_windows = super::uniform_window(v, s.layers)?;
    Ok(s)
}
