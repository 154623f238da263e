//! The candle model as an [`Engine`], and HeadScope's greedy decode loop ([`headscope_engine::decode`])
//! run synchronously on it: the prompt's last token is fed as the first decode step, so the attention
//! that produces the first answer token is observed too.

use crate::error::{ModelError, Result};
use crate::transformer::{Probe, Transformer};
use headscope_engine::{block_on, Engine, HeadMask, ModelSpec, Step};

pub use headscope_engine::DecodeTrace;

impl Engine for Transformer {
    type Error = ModelError;

    fn spec(&self) -> &ModelSpec {
        Transformer::spec(self)
    }

    fn position(&self) -> usize {
        Transformer::position(self)
    }

    async fn reserve(&mut self, capacity: usize) -> Result<()> {
        Transformer::reserve(self, capacity)
    }

    fn reset(&mut self) {
        Transformer::reset(self)
    }

    fn truncate(&mut self, position: usize) -> Result<()> {
        Transformer::truncate(self, position)
    }

    fn set_mask(&mut self, mask: Option<HeadMask>) -> Result<()> {
        Transformer::set_mask(self, mask)
    }

    async fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        Transformer::prefill(self, ids)
    }

    fn reusable_prefix(&self, ids: &[u32]) -> usize {
        Transformer::reusable_prefix(self, ids)
    }

    async fn step(&mut self, id: u32, probe: &Probe) -> Result<Step> {
        let out = Transformer::step(self, id, probe)?;
        Ok(Step { token: out.greedy_token()?, argmax_position: out.argmax_position, attention_rows: out.attention_rows })
    }
}

/// [`headscope_engine::greedy_decode`] on the candle model: greedily decodes up to `max_new_tokens`
/// after `prompt`, stopping after any token of `stop`. `on_token` sees each new token and may return
/// `false` to stop early (cancellation).
pub fn greedy_decode(
    model: &mut Transformer,
    prompt: &[u32],
    max_new_tokens: usize,
    stop: &[u32],
    probe: &Probe,
    on_token: impl FnMut(u32) -> bool,
) -> Result<DecodeTrace> {
    block_on(headscope_engine::greedy_decode(model, prompt, max_new_tokens, stop, probe, on_token))
}

/// [`headscope_engine::greedy_decode_from`] on the candle model: the decode half of [`greedy_decode`],
/// after a prefill the caller did. With [`Transformer::truncate`] back to the prefilled length, one
/// prefill serves several decodes under different decode-scope masks. `prefill_seconds` is left 0.
pub fn greedy_decode_from(
    model: &mut Transformer,
    last: u32,
    max_new_tokens: usize,
    stop: &[u32],
    probe: &Probe,
    on_token: impl FnMut(u32) -> bool,
) -> Result<DecodeTrace> {
    block_on(headscope_engine::greedy_decode_from(model, last, max_new_tokens, stop, probe, on_token))
}
