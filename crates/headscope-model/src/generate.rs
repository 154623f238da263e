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

/// DeCoRe decoding (Gema et al. 2024, "Decoding by Contrasting Retrieval Heads") as an [`Engine`],
/// so that the one decode loop and sweep runner run it: after each prefill, the first decode step forks
/// the model into a "hallucinating" copy with `heads` masked at decode steps (it keeps its own cache
/// from there); every step feeds both, and the next token is the argmax of `(1 + a) * base - a *
/// masked` logits, `a` the entropy in nats of the base model's next-token distribution, capped at
/// `alpha_cap` when given (DeCoRe's entropy variant, as its code computes it). Argmax positions and
/// attention rows are the base model's. A mask set on it applies to the base model.
pub struct Decore<'a> {
    model: &'a mut Transformer,
    heads: Vec<headscope_core::HeadId>,
    mode: crate::MaskMode,
    alpha_cap: Option<f64>,
    hallucinating: Option<Transformer>,
    /// Every step's contrast weight, in order.
    pub alphas: Vec<f64>,
}

impl<'a> Decore<'a> {
    /// DeCoRe over `model`, its hallucinating copy masking `heads` in `mode`.
    pub fn new(
        model: &'a mut Transformer,
        heads: Vec<headscope_core::HeadId>,
        mode: crate::MaskMode,
        alpha_cap: Option<f64>,
    ) -> Result<Self> {
        if heads.is_empty() {
            return Err(ModelError::Invalid("DeCoRe needs heads to mask (its hallucinating model)".into()));
        }
        model.spec().head_shape().check(&heads).map_err(|e| ModelError::Invalid(e.to_string()))?;
        if let Some(cap) = alpha_cap {
            if !(cap.is_finite() && cap >= 0.0) {
                return Err(ModelError::Invalid(format!("the DeCoRe alpha cap {cap} must be a non-negative number")));
            }
        }
        Ok(Decore { model, heads, mode, alpha_cap, hallucinating: None, alphas: Vec::new() })
    }
}

impl Engine for Decore<'_> {
    type Error = ModelError;

    fn spec(&self) -> &ModelSpec {
        self.model.spec()
    }

    fn position(&self) -> usize {
        self.model.position()
    }

    async fn reserve(&mut self, capacity: usize) -> Result<()> {
        self.hallucinating = None;
        self.model.reserve(capacity)
    }

    fn reset(&mut self) {
        self.hallucinating = None;
        self.model.reset()
    }

    fn truncate(&mut self, position: usize) -> Result<()> {
        self.hallucinating = None;
        self.model.truncate(position)
    }

    fn set_mask(&mut self, mask: Option<HeadMask>) -> Result<()> {
        self.model.set_mask(mask)
    }

    async fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        self.hallucinating = None;
        self.model.prefill(ids)
    }

    fn reusable_prefix(&self, ids: &[u32]) -> usize {
        self.model.reusable_prefix(ids)
    }

    async fn step(&mut self, id: u32, probe: &Probe) -> Result<Step> {
        use candle_core::{DType, D};
        if self.hallucinating.is_none() {
            let mut copy = self.model.fork()?;
            copy.set_mask(Some(HeadMask { heads: self.heads.clone(), mode: self.mode, scope: crate::MaskScope::Decode }))?;
            self.hallucinating = Some(copy);
        }
        let base = self.model.step(id, probe)?;
        let other = self.hallucinating.as_mut().expect("forked above").step(id, &Probe::default())?;
        let probs = candle_nn::ops::softmax_last_dim(&base.logits.to_dtype(DType::F32)?)?;
        // Entropy in nats (0 ln 0 counts 0).
        let entropy = -(probs.clone() * probs.clamp(1e-30f32, 1f32)?.log()?)?.sum_all()?.to_scalar::<f32>()? as f64;
        let alpha = self.alpha_cap.map_or(entropy, |cap| entropy.min(cap));
        let contrast = ((&base.logits * (1.0 + alpha))? - (&other.logits * alpha)?)?;
        self.alphas.push(alpha);
        Ok(Step {
            token: contrast.argmax(D::Minus1)?.to_scalar::<u32>()?,
            argmax_position: base.argmax_position,
            attention_rows: base.attention_rows,
        })
    }
}

/// What a DeCoRe decode produced: the trace (the base model's argmax positions at each step) and each
/// step's contrast weight.
#[derive(Debug, Clone, Default)]
pub struct DecoreTrace {
    /// Tokens and the base model's per-head argmax positions.
    pub trace: DecodeTrace,
    /// Per step, the weight alpha of the contrast.
    pub alphas: Vec<f64>,
}

/// [`Decore`] through the greedy decode loop: decodes up to `max_new_tokens` after `prompt` (prefilled
/// unmasked), stopping after any token of `stop`. The model ends unmasked.
pub fn decore_decode(
    model: &mut Transformer,
    masked: &[headscope_core::HeadId],
    mode: crate::MaskMode,
    prompt: &[u32],
    max_new_tokens: usize,
    stop: &[u32],
    alpha_cap: Option<f64>,
) -> Result<DecoreTrace> {
    model.set_mask(None)?;
    let mut engine = Decore::new(model, masked.to_vec(), mode, alpha_cap)?;
    let trace = block_on(headscope_engine::greedy_decode(&mut engine, prompt, max_new_tokens, stop, &Probe::default(), |_| true))?;
    Ok(DecoreTrace { trace, alphas: engine.alphas })
}
