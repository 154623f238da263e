//! Greedy decoding on the GPU with per-step observation: the same loop as
//! [`headscope_model::greedy_decode`] (prefill `prompt[..n-1]`, then step `prompt[n-1]` so the attention
//! that produces the first answer token is observed), returning the same [`DecodeTrace`].

use crate::error::{GpuError, Result};
use crate::model::GpuModel;
use headscope_model::{DecodeTrace, Probe};

/// A monotonic clock in seconds where the platform has one; 0 in the browser's wasm32 (time the
/// promise with `performance.now()` there instead).
fn now() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    }
    #[cfg(target_arch = "wasm32")]
    {
        0.0
    }
}

/// Greedily decodes up to `max_new_tokens` after `prompt`, stopping after any token of `stop`.
/// `on_token` sees each new token and may return `false` to stop early (cancellation).
pub async fn greedy_decode(
    model: &mut GpuModel,
    prompt: &[u32],
    max_new_tokens: usize,
    stop: &[u32],
    probe: &Probe,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<DecodeTrace> {
    let (&last, context) = prompt.split_last().ok_or_else(|| GpuError::Invalid("the prompt is empty".into()))?;
    if max_new_tokens == 0 {
        return Err(GpuError::Invalid("max_new_tokens must be at least 1".into()));
    }
    model.reset();
    let mut trace = DecodeTrace::default();
    let t0 = now();
    model.prefill(context).await?;
    let t1 = now();
    trace.prefill_seconds = t1 - t0;
    let mut input = last;
    for _ in 0..max_new_tokens {
        let out = model.step(input, probe).await?;
        let next = out.greedy_token();
        trace.tokens.push(next);
        trace.argmax_position.push(out.argmax_position);
        trace.attention_rows.push(out.attention_rows);
        if stop.contains(&next) || !on_token(next) {
            break;
        }
        input = next;
    }
    trace.decode_seconds = now() - t1;
    Ok(trace)
}
