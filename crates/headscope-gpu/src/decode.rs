//! The wgpu model as an [`Engine`], and HeadScope's one greedy decode loop
//! ([`headscope_engine::greedy_decode`]) on it: prefill `prompt[..n-1]`, then step `prompt[n-1]` so the
//! attention that produces the first answer token is observed, with the same [`DecodeTrace`] as the
//! candle model returns.

use crate::error::{GpuError, Result};
use crate::model::GpuModel;
use headscope_engine::{DecodeTrace, Engine, HeadMask, ModelSpec, Probe, Step};

impl Engine for GpuModel {
    type Error = GpuError;

    fn spec(&self) -> &ModelSpec {
        GpuModel::spec(self)
    }

    fn position(&self) -> usize {
        GpuModel::position(self)
    }

    async fn reserve(&mut self, capacity: usize) -> Result<()> {
        GpuModel::reserve(self, capacity)
    }

    fn reset(&mut self) {
        GpuModel::reset(self)
    }

    fn truncate(&mut self, position: usize) -> Result<()> {
        GpuModel::truncate(self, position)
    }

    fn set_mask(&mut self, mask: Option<HeadMask>) -> Result<()> {
        GpuModel::set_mask(self, mask)
    }

    async fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        GpuModel::prefill(self, ids).await
    }

    fn reusable_prefix(&self, ids: &[u32]) -> usize {
        GpuModel::reusable_prefix(self, ids)
    }

    async fn step(&mut self, id: u32, probe: &Probe) -> Result<Step> {
        let out = GpuModel::step(self, id, probe).await?;
        Ok(Step { token: out.greedy_token(), argmax_position: out.argmax_position, attention_rows: out.attention_rows })
    }
}

/// [`headscope_engine::greedy_decode`] on the wgpu model: greedily decodes up to `max_new_tokens` after
/// `prompt`, stopping after any token of `stop`. `on_token` sees each new token and may return `false` to
/// stop early (cancellation).
pub async fn greedy_decode(
    model: &mut GpuModel,
    prompt: &[u32],
    max_new_tokens: usize,
    stop: &[u32],
    probe: &Probe,
    on_token: impl FnMut(u32) -> bool,
) -> Result<DecodeTrace> {
    headscope_engine::greedy_decode(model, prompt, max_new_tokens, stop, probe, on_token).await
}
