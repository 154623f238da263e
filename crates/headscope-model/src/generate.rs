//! Greedy decoding with per-step observation: the loop the paper's detection runs. The prompt's last
//! token is fed as the first decode step (as the official code prefills `prompt[:-1]` and decodes
//! `prompt[-1]`), so the attention that produces the first answer token is observed too.

use crate::error::{ModelError, Result};
use crate::transformer::{AttentionRow, Probe, Transformer};
use std::time::Instant;

/// What a greedy decode produced and observed.
#[derive(Debug, Clone, Default)]
pub struct DecodeTrace {
    /// Generated token ids (a stop token, if reached, is the last one).
    pub tokens: Vec<u32>,
    /// Per step (aligned with `tokens`): each query head's argmax position, layer-major.
    pub argmax_position: Vec<Vec<u32>>,
    /// Per step: the probed heads' attention rows.
    pub attention_rows: Vec<Vec<AttentionRow>>,
    /// Seconds spent in prefill.
    pub prefill_seconds: f64,
    /// Seconds spent in decode steps.
    pub decode_seconds: f64,
}

/// Greedily decodes up to `max_new_tokens` after `prompt`, stopping after any token of `stop`.
/// `on_token` sees each new token and may return `false` to stop early (cancellation).
pub fn greedy_decode(
    model: &mut Transformer,
    prompt: &[u32],
    max_new_tokens: usize,
    stop: &[u32],
    probe: &Probe,
    on_token: impl FnMut(u32) -> bool,
) -> Result<DecodeTrace> {
    let (&last, context) = prompt.split_last().ok_or_else(|| ModelError::Invalid("the prompt is empty".into()))?;
    if max_new_tokens == 0 {
        return Err(ModelError::Invalid("max_new_tokens must be at least 1".into()));
    }
    model.reset();
    let t0 = Instant::now();
    model.prefill(context)?;
    let prefill_seconds = t0.elapsed().as_secs_f64();
    let mut trace = greedy_decode_from(model, last, max_new_tokens, stop, probe, on_token)?;
    trace.prefill_seconds = prefill_seconds;
    Ok(trace)
}

/// The decode half of [`greedy_decode`]: feeds `last` (the prompt's last token) at the model's current
/// position, after a prefill of the rest of the prompt that the caller did, and decodes greedily from
/// there. With [`Transformer::truncate`] back to the prefilled length, one prefill serves several
/// decodes under different decode-scope masks. `prefill_seconds` is left 0.
pub fn greedy_decode_from(
    model: &mut Transformer,
    last: u32,
    max_new_tokens: usize,
    stop: &[u32],
    probe: &Probe,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<DecodeTrace> {
    if max_new_tokens == 0 {
        return Err(ModelError::Invalid("max_new_tokens must be at least 1".into()));
    }
    let mut trace = DecodeTrace::default();
    let t1 = Instant::now();
    let mut input = last;
    for _ in 0..max_new_tokens {
        let out = model.step(input, probe)?;
        let next = out.greedy_token()?;
        trace.tokens.push(next);
        trace.argmax_position.push(out.argmax_position);
        trace.attention_rows.push(out.attention_rows);
        if stop.contains(&next) || !on_token(next) {
            break;
        }
        input = next;
    }
    trace.decode_seconds = t1.elapsed().as_secs_f64();
    Ok(trace)
}
