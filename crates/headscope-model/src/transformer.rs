//! The instrumented Llama-family decoder: embedding, layers of (RMSNorm, [`Attention`], RMSNorm,
//! [`FeedForward`]), final norm and LM head, with a preallocated KV cache. Inference runs as a chunked
//! [`Transformer::prefill`] followed by [`Transformer::step`]s, each of which reports every query head's
//! argmax position; [`Transformer::forward_sequence`] runs whole sequences without a cache (training,
//! evaluation). The model remembers which token ids its cache holds, so that
//! [`Transformer::prefill_reusing`] computes only what a new prompt does not share with the last one.

use crate::attention::{Attention, AttentionControl, LayerCache, MaskCache};
use crate::error::{ModelError, Result};
use crate::kv_window::WindowedHeads;
use crate::mamba::{MambaMixer, MambaState};
use crate::mask::{HeadMask, MaskMode, MaskScope};
use crate::mlp::FeedForward;
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::spec::{LayerKind, ModelSpec, TensorNames};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use headscope_core::HeadId;
use headscope_engine::prefix::CachedPrefix;
use headscope_engine::KvPlan;

pub use headscope_engine::{AttentionRow, Probe};

/// The result of one decode step.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Next-token logits `[vocab]`, f32, on the model's device.
    pub logits: Tensor,
    /// For every query head (layer-major), the context position its attention peaked at.
    pub argmax_position: Vec<u32>,
    /// The rows asked for in the [`Probe`].
    pub attention_rows: Vec<AttentionRow>,
}

impl StepOutput {
    /// The greedy next token.
    pub fn greedy_token(&self) -> Result<u32> {
        Ok(self.logits.argmax(0)?.to_scalar::<u32>()?)
    }
}

/// What mixes a layer's tokens.
#[derive(Debug, Clone)]
enum Mixer {
    /// Self-attention; `index` counts the attention layers before it (its row in the head grid and its
    /// KV cache).
    Attention { attention: Attention, index: usize },
    /// A Mamba block (Jamba); `index` counts the Mamba layers before it (its state).
    Mamba { mamba: MambaMixer, index: usize },
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: RmsNorm,
    mixer: Mixer,
    post_attention_norm: RmsNorm,
    feed_forward: FeedForward,
    /// Gemma's norms before and after the MLP; with them, `post_attention_norm` normalises the
    /// attention output instead of preceding the MLP.
    feed_forward_norms: Option<(RmsNorm, RmsNorm)>,
    /// Which of the model's RoPEs the layer rotates with (on the layer's device).
    rope: usize,
    /// Which of the model's devices holds the layer (its weights, cache and states).
    device: usize,
}

impl Layer {
    /// The residual stream after this layer's attention output `a` and its feed-forward block, the
    /// norms placed as the family places them.
    fn finish(&self, x: &Tensor, a: Tensor, differentiable: bool) -> Result<Tensor> {
        let norm = |n: &RmsNorm, t: &Tensor| if differentiable { n.forward_differentiable(t) } else { n.forward(t) };
        match &self.feed_forward_norms {
            None => {
                let x = (x + a)?;
                let h = norm(&self.post_attention_norm, &x)?;
                Ok((&x + self.feed_forward.forward(&h)?)?)
            }
            Some((pre, post)) => {
                let x = (x + norm(&self.post_attention_norm, &a)?)?;
                let h = norm(pre, &x)?;
                Ok((&x + norm(post, &self.feed_forward.forward(&h)?)?)?)
            }
        }
    }
}

/// The states that cannot be rewound, at a position.
#[derive(Debug, Clone)]
struct Snapshot {
    position: usize,
    mamba: Vec<MambaState>,
    /// Per attention layer, its windowed heads' ring (deep copies).
    rings: Vec<Option<WindowedHeads>>,
}

/// What the cached positions were computed under: the mask effect, and whether LongRoPE's long factors
/// rotated them (a prompt rotated with the other set cannot reuse them).
type CacheKey = (Option<MaskEffect>, bool);

/// A mask as applied: per layer, the `[1, heads, 1, 1]` keep vector of layers that have masked heads.
#[derive(Debug, Clone)]
struct ActiveMask {
    mask: HeadMask,
    keep: Vec<Option<Tensor>>,
    /// What the keep vectors do wherever they apply, in a form that compares equal exactly when two
    /// masks compute the same thing (None: no head is masked, the mask changes nothing).
    effect: Option<MaskEffect>,
}

/// What a mask does to the positions it applies to: the sorted, distinct masked heads and the mode. The
/// scope only says where it applies, so it is not part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MaskEffect {
    heads: Vec<HeadId>,
    mode: MaskMode,
}

/// What `mask` does to the positions of a decode step (`decoding`) or a prefill (None: nothing).
fn effect_of(mask: &Option<ActiveMask>, decoding: bool) -> Option<&MaskEffect> {
    match mask {
        Some(m) if decoding || m.mask.scope == MaskScope::All => m.effect.as_ref(),
        _ => None,
    }
}

/// The instrumented transformer. A clone shares the weights and the cache's storage; see
/// [`Transformer::fork`] for one with a cache of its own.
#[derive(Clone)]
pub struct Transformer {
    spec: ModelSpec,
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Linear,
    /// The model's RoPEs: the global one, and the sliding layers' own where it differs (Gemma-3).
    ropes: Vec<Rope>,
    /// What the embeddings are multiplied by, in the weights' dtype (Gemma), or None.
    embedding_scale: Option<Tensor>,
    cache: Vec<LayerCache>,
    position: usize,
    /// What the cache holds, for [`Transformer::prefill_reusing`]; the effect is that of the mask a
    /// prefill ran under (None: no mask, or one of scope `decode`).
    contents: CachedPrefix<CacheKey>,
    /// The Mamba layers' states at the current position (empty for transformers).
    mamba_states: Vec<MambaState>,
    /// The states that cannot be rewound (Mamba states, windowed KV heads' rings) where the last prefill
    /// ended: [`Transformer::truncate`] goes back only to there (where several decodes start from one
    /// prefilled prompt) or to 0.
    snapshot: Option<Snapshot>,
    /// The head-level KV plan in effect (None: every head keeps the whole cache).
    kv_plan: Option<KvPlan>,
    mask: Option<ActiveMask>,
    prefill_chunk: Option<usize>,
    score_budget: usize,
    fused_attention: bool,
    device: Device,
    /// Every device the layers are split over, the first being `device` (one entry: no split).
    devices: Vec<Device>,
    dtype: DType,
}

/// Queries per prefill chunk when unset: bounds the score block at chunk x context per head.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;

/// Queries per prefill chunk when unset and the fused CUDA kernel computes attention ([`crate::flash`]):
/// no score block to bound, so chunks only bound the activations, and longer ones keep the GPU busier.
pub const DEFAULT_FLASH_PREFILL_CHUNK: usize = 4096;

/// Bytes of f32 attention scores one prefill chunk may hold (all heads) when unset: long contexts get
/// shorter chunks, so the transient memory of a chunk (scores, mask, softmax: a few times this) stays
/// flat as the context grows instead of growing with it.
pub const DEFAULT_PREFILL_SCORE_BUDGET: usize = 1 << 30;

impl Transformer {
    /// Builds the model from weights named as in Hugging Face checkpoints (`vb` at the root).
    pub fn new(spec: &ModelSpec, vb: VarBuilder) -> Result<Self> {
        let layers = 0..spec.layers;
        Self::new_split(spec, &[vb], &[layers])
    }

    /// Builds the model with its decoder layers split over devices: `vbs[d]` loads onto device `d` the
    /// layers of `blocks[d]` (contiguous, in order, covering every layer once; see
    /// [`crate::split::plan_layer_split`]). The embeddings go to the first device, the final norm and
    /// LM head to the last.
    pub fn new_split(spec: &ModelSpec, vbs: &[VarBuilder], blocks: &[std::ops::Range<usize>]) -> Result<Self> {
        let covered = blocks.len() == vbs.len()
            && blocks.first().is_some_and(|b| b.start == 0)
            && blocks.last().is_some_and(|b| b.end == spec.layers)
            && blocks.windows(2).all(|w| w[0].end == w[1].start)
            && (blocks.len() == 1 || blocks.iter().all(|b| !b.is_empty()));
        if !covered {
            return Err(ModelError::Invalid(format!(
                "a layer split needs one non-empty contiguous block per device covering layers 0..{}: got {blocks:?} for {} devices",
                spec.layers,
                vbs.len()
            )));
        }
        let vb = vbs[0].clone();
        let last_vb = vbs[vbs.len() - 1].clone();
        let devices: Vec<Device> = vbs.iter().map(|v| v.device().clone()).collect();
        let device_of = |layer: usize| blocks.iter().position(|b| b.contains(&layer)).unwrap_or(0);
        let device = vb.device().clone();
        let dtype = vb.dtype();
        // The decoder's prefix: the family's, or where transformers 5 saves Gemma-3's text model.
        let prefix = [spec.weight_prefix.as_str(), "model.language_model"]
            .into_iter()
            .find(|p| vb.contains_tensor(&format!("{p}.embed_tokens.weight")))
            .unwrap_or(&spec.weight_prefix);
        let m = vb.pp(prefix);
        let ms: Vec<VarBuilder> = vbs.iter().map(|v| v.pp(prefix)).collect();
        let embed = candle_nn::embedding(spec.vocab_size, spec.hidden_size, m.pp("embed_tokens"))?;
        let (eps, style) = (spec.rms_norm_eps, spec.norm_style);
        let global_rope = spec.global_rope();
        // One RoPE per (spec, device): each layer rotates with tables on its own device.
        let mut rope_specs = vec![(global_rope.clone(), 0)];
        let mut layers = Vec::with_capacity(spec.layers);
        let (mut attention_layers, mut mamba_layers) = (0, 0);
        let post_attention_name = match spec.tensor_names {
            TensorNames::Llama => "post_attention_layernorm",
            TensorNames::Jamba => "pre_ff_layernorm",
        };
        for i in 0..spec.layers {
            let d = device_of(i);
            let l = ms[d].pp("layers").pp(i);
            let layer_rope = (spec.rope_of_layer(i), d);
            let rope = match rope_specs.iter().position(|r| *r == layer_rope) {
                Some(r) => r,
                None => {
                    rope_specs.push(layer_rope);
                    rope_specs.len() - 1
                }
            };
            let feed_forward_norms = if spec.sandwich_norms {
                Some((
                    RmsNorm::load(&l.pp("pre_feedforward_layernorm"), spec.hidden_size, eps, style)?,
                    RmsNorm::load(&l.pp("post_feedforward_layernorm"), spec.hidden_size, eps, style)?,
                ))
            } else {
                None
            };
            let mixer = match spec.layer_kinds.get(i).copied().unwrap_or_default() {
                LayerKind::Attention => {
                    attention_layers += 1;
                    Mixer::Attention { attention: Attention::new(spec, i, l.pp("self_attn"))?, index: attention_layers - 1 }
                }
                LayerKind::Mamba => {
                    mamba_layers += 1;
                    Mixer::Mamba { mamba: MambaMixer::new(spec, l.pp("mamba"))?, index: mamba_layers - 1 }
                }
            };
            layers.push(Layer {
                input_norm: RmsNorm::load(&l.pp("input_layernorm"), spec.hidden_size, eps, style)?,
                mixer,
                post_attention_norm: RmsNorm::load(&l.pp(post_attention_name), spec.hidden_size, eps, style)?,
                feed_forward: FeedForward::new(spec, i, &l)?,
                feed_forward_norms,
                rope,
                device: d,
            });
        }
        let final_norm = match spec.tensor_names {
            TensorNames::Llama => "norm",
            TensorNames::Jamba => "final_layernorm",
        };
        let norm = RmsNorm::load(&ms[ms.len() - 1].pp(final_norm), spec.hidden_size, eps, style)?;
        // Gemma-3's multimodal checkpoints (transformers 4) keep the head beside the text model.
        let head_names = ["lm_head", "language_model.lm_head"];
        let head = head_names.into_iter().find(|n| vb.contains_tensor(&format!("{n}.weight")));
        let lm_head = match head {
            // Tied to the embeddings: a copy where the head sits on another device than they do.
            None if spec.tie_word_embeddings => Linear::new(embed.embeddings().to_device(last_vb.device())?, None),
            // A head the checkpoint holds is used even where the config says tied.
            name => candle_nn::linear_no_bias(spec.hidden_size, spec.vocab_size, last_vb.pp(name.unwrap_or("lm_head")))?,
        };
        let ropes = rope_specs
            .iter()
            .map(|(r, d)| Rope::of(r, spec.rotary_dim, spec.head_dim, 0, dtype, &devices[*d]))
            .collect::<Result<Vec<_>>>()?;
        // transformers multiplies by the scale cast to the weights' dtype (Gemma in bf16: 55.5, not 55.43).
        let embedding_scale = spec.embedding_scale.map(|f| Tensor::new(f as f32, &device)?.to_dtype(dtype)).transpose()?;
        Ok(Transformer {
            spec: spec.clone(),
            embed,
            layers,
            norm,
            lm_head,
            ropes,
            embedding_scale,
            cache: Vec::new(),
            position: 0,
            contents: CachedPrefix::default(),
            mamba_states: Vec::new(),
            snapshot: None,
            kv_plan: None,
            mask: None,
            prefill_chunk: None,
            fused_attention: true,
            score_budget: DEFAULT_PREFILL_SCORE_BUDGET,
            device,
            devices,
            dtype,
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device the weights live on; with the layers split, the first (embeddings, and where logits
    /// and argmax positions are returned).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every device the decoder layers are split over, in order (one: no split).
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// Per device of [`Transformer::devices`], the decoder layers it holds.
    pub fn layer_blocks(&self) -> Vec<std::ops::Range<usize>> {
        (0..self.devices.len())
            .map(|d| {
                let start = self.layers.iter().position(|l| l.device == d).unwrap_or(0);
                let end = self.layers.iter().rposition(|l| l.device == d).map_or(start, |e| e + 1);
                start..end
            })
            .collect()
    }

    /// Whether the layers are split over several devices.
    fn is_split(&self) -> bool {
        self.devices.len() > 1
    }

    /// The device of the layer that mixes with attention layer `a` (or Mamba layer `a`, `mamba`).
    fn mixer_device(&self, a: usize, mamba: bool) -> &Device {
        let layer = self.layers.iter().find(|l| match &l.mixer {
            Mixer::Attention { index, .. } => !mamba && *index == a,
            Mixer::Mamba { index, .. } => mamba && *index == a,
        });
        &self.devices[layer.map_or(0, |l| l.device)]
    }

    /// The dtype of weights and cache.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Positions already in the cache (the next token's position).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Sets how many prompt tokens one prefill chunk processes (memory: chunk x context scores per head
    /// on the chunked path). Unset, it is [`DEFAULT_PREFILL_CHUNK`], or [`DEFAULT_FLASH_PREFILL_CHUNK`]
    /// where the fused kernel runs.
    pub fn set_prefill_chunk(&mut self, chunk: usize) {
        self.prefill_chunk = Some(chunk.max(1));
    }

    /// Whether attention runs in HeadScope's CUDA kernels ([`crate::flash`]): the fused prefill and the
    /// decode-step kernels (CUDA, bf16/f16, head dim 64 or 128, unless turned off with
    /// [`Transformer::set_fused_attention`]).
    pub fn uses_fused_attention(&self) -> bool {
        self.fused_attention && crate::flash::supported_for(&self.device, self.dtype, self.spec.head_dim)
    }

    /// Allows (the default) or forbids HeadScope's CUDA attention kernels; forbidden, attention takes the
    /// plain path everywhere (chunked prefill, batched matmuls at decode steps), for comparisons.
    pub fn set_fused_attention(&mut self, enabled: bool) {
        self.fused_attention = enabled;
    }

    /// Prompt tokens per prefill chunk (see [`Transformer::set_prefill_chunk`]).
    pub fn prefill_chunk(&self) -> usize {
        match self.prefill_chunk {
            Some(chunk) => chunk,
            None if self.uses_fused_attention() => DEFAULT_FLASH_PREFILL_CHUNK,
            None => DEFAULT_PREFILL_CHUNK,
        }
    }

    /// Sets how many bytes of f32 scores a prefill chunk may hold (see [`DEFAULT_PREFILL_SCORE_BUDGET`]).
    pub fn set_prefill_score_budget(&mut self, bytes: usize) {
        self.score_budget = bytes.max(1);
    }

    /// Queries in the next prefill chunk at the current position, `remaining` prompt tokens left: at most
    /// the prefill chunk, and on the chunked path fewer when its `heads x chunk x keys` f32 scores would
    /// pass the budget (the fused kernel holds no scores).
    pub fn prefill_chunk_at(&self, remaining: usize) -> usize {
        let chunk = self.prefill_chunk();
        if self.uses_fused_attention() {
            return chunk.min(remaining);
        }
        let keys = self.position + chunk.min(remaining);
        let per_query = (self.spec.heads * keys * 4).max(1);
        (self.score_budget / per_query).clamp(1, chunk).min(remaining)
    }

    /// Frees the KV cache (the next prefill or [`Transformer::reserve`] allocates it again): memory
    /// probes that tried a context too long for the device start over from here.
    pub fn release_cache(&mut self) {
        self.cache.clear();
        self.position = 0;
        self.contents.forget();
    }

    /// Moves to `position` without computing anything: the cache entries before it keep whatever they
    /// hold (zeros after [`Transformer::reserve`]). Only for memory probes, which need the shapes of a
    /// long context's last chunk and decode step but not its values. The cache's content counts as
    /// unknown afterwards: nothing of it is reused.
    pub fn pretend_filled(&mut self, position: usize) -> Result<()> {
        let have = self.cache.first().map_or(0, LayerCache::capacity);
        if position > have {
            return Err(ModelError::TooLong(format!("position {position} is past the KV cache ({have} positions): reserve it first")));
        }
        self.position = position;
        self.contents.forget();
        Ok(())
    }

    /// Allocates the KV cache (and RoPE tables) for `capacity` positions and empties it. Call once with
    /// the run's longest context: later sequences reuse the buffers.
    pub fn reserve(&mut self, capacity: usize) -> Result<()> {
        self.check_fits(capacity)?;
        if self.cache.first().is_none_or(|c| c.capacity() < capacity) {
            self.cache.clear();
            for a in 0..self.spec.head_shape().layers {
                self.cache.push(self.new_cache(a, capacity)?);
            }
        }
        for rope in &mut self.ropes {
            rope.ensure(capacity)?;
        }
        self.position = 0;
        self.contents.forget();
        Ok(())
    }

    /// Empties the cache (keeping its buffers) for a new sequence; nothing of it is reused.
    pub fn reset(&mut self) {
        self.position = 0;
        self.contents.forget();
    }

    /// Forgets every position from `position` on and keeps the cache before it, so that several decodes
    /// (with different masks) can start from one prefilled prompt. Only prompts prefilled without a mask,
    /// or with a mask of scope `decode`, are the same for every such decode.
    ///
    /// A hybrid's Mamba layers hold a state, not a cache, and it cannot be rewound: such a model goes
    /// back only to where its last prefill ended, or to 0.
    pub fn truncate(&mut self, position: usize) -> Result<()> {
        if position > self.position {
            return Err(ModelError::Invalid(format!(
                "cannot truncate to position {position}: the cache holds {} positions",
                self.position
            )));
        }
        if self.rolling_state() && position != self.position && position != 0 {
            match &self.snapshot {
                Some(snap) if snap.position == position => {
                    self.mamba_states = snap.mamba.clone();
                    // Copies: the snapshot stays intact for the next return to it.
                    for (cache, ring) in self.cache.iter_mut().zip(&snap.rings) {
                        cache.windowed = ring.as_ref().map(WindowedHeads::deep_copy).transpose()?;
                    }
                }
                _ => {
                    let what = if self.has_mamba() { "a Mamba layer's state" } else { "a windowed KV head's ring" };
                    return Err(ModelError::Invalid(format!(
                        "cannot go back to position {position}: {what} can return only to where the last prefill ended{} or to 0",
                        self.snapshot.as_ref().map(|s| format!(" ({})", s.position)).unwrap_or_default()
                    )));
                }
            }
        }
        self.position = position;
        self.contents.truncate(position);
        Ok(())
    }

    /// Token ids of the leading cache positions that [`Transformer::prefill_reusing`] may reuse: those
    /// whose ids are known and that were all computed under one mask effect (at most
    /// [`Transformer::position`] of them).
    pub fn cached_ids(&self) -> &[u32] {
        self.contents.ids()
    }

    /// How many leading positions of `ids` the cache already holds as a prefill of `ids` under the
    /// current mask would compute them: the longest common prefix of [`Transformer::cached_ids`] and
    /// `ids`, or 0 when the cache was computed under another mask effect than a prefill applies now (a
    /// mask of scope `all` changes the prefill; one of scope `decode`, or none, does not).
    pub fn reusable_prefix(&self, ids: &[u32]) -> usize {
        let shared = self.contents.reusable(ids, &(effect_of(&self.mask, false).cloned(), self.long_rope_for(ids.len())));
        if !self.rolling_state() {
            return shared;
        }
        // Mamba states and rings exist only where the cache ends and where the last prefill ended.
        match &self.snapshot {
            _ if shared >= self.position => self.position,
            Some(snap) if shared >= snap.position => snap.position,
            _ => 0,
        }
    }

    /// A second model over the same weights (shared, not copied) with a copy of this one's cache and
    /// states: both go on from here independently (DeCoRe decodes a masked copy beside the model).
    pub fn fork(&self) -> Result<Transformer> {
        let mut other = self.clone();
        other.cache = self.cache.iter().map(LayerCache::deep_copy).collect::<Result<_>>()?;
        Ok(other)
    }

    /// Whether some state cannot be rewound to an arbitrary position: Mamba layers, or KV heads a plan
    /// windows.
    fn rolling_state(&self) -> bool {
        self.has_mamba() || self.kv_plan.is_some()
    }

    /// The KV cache of attention layer `a` for `capacity` positions, under the plan in effect.
    fn new_cache(&self, a: usize, capacity: usize) -> Result<LayerCache> {
        match &self.kv_plan {
            Some(plan) => {
                LayerCache::planned(&self.spec, capacity, self.dtype, self.mixer_device(a, false), &plan.full[a], plan.sink, plan.window)
            }
            None => LayerCache::new(&self.spec, capacity, self.dtype, self.mixer_device(a, false)),
        }
    }

    /// Keeps the whole KV cache only for the KV heads `plan` names, the others a sink and a window of
    /// recent positions (their memory is all that is allocated); None: every head keeps everything. The
    /// cache is emptied. Layers with a sliding window of their own refuse a plan.
    pub fn set_kv_plan(&mut self, plan: Option<KvPlan>) -> Result<()> {
        if let Some(p) = &plan {
            p.check(&self.spec).map_err(|e| ModelError::Invalid(e.to_string()))?;
            if self.spec.sliding_windows.iter().any(Option::is_some) && !p.is_full() {
                return Err(ModelError::Invalid(format!(
                    "`{}` has sliding-window layers, which keep their own window: a KV plan applies to models whose layers see the whole context",
                    self.spec.model_type
                )));
            }
        }
        self.kv_plan = plan.filter(|p| !p.is_full());
        self.release_cache();
        self.snapshot = None;
        Ok(())
    }

    /// The KV plan in effect (None also when the plan set kept every head whole).
    pub fn kv_plan(&self) -> Option<&KvPlan> {
        self.kv_plan.as_ref()
    }

    /// Bytes the KV cache's tensors take now (whole heads at the reserved capacity, windowed heads
    /// their ring).
    pub fn kv_cache_bytes(&self) -> usize {
        self.cache.iter().map(LayerCache::bytes).sum()
    }

    /// Whether some layer is a Mamba block (Jamba).
    fn has_mamba(&self) -> bool {
        self.spec.layer_kinds.contains(&LayerKind::Mamba)
    }

    /// At position 0, zero states for the Mamba layers and empty rings for windowed KV heads (a new
    /// sequence starts).
    fn start_sequence_states(&mut self) -> Result<()> {
        if self.position != 0 {
            return Ok(());
        }
        for ring in self.cache.iter_mut().filter_map(|c| c.windowed.as_mut()) {
            ring.clear();
        }
        if !self.has_mamba() {
            return Ok(());
        }
        let Some(shape) = self.spec.mamba.clone() else { return Ok(()) };
        let count = self.spec.layer_kinds.iter().filter(|k| **k == LayerKind::Mamba).count();
        self.mamba_states =
            (0..count).map(|m| MambaState::zeros(&shape, 1, self.dtype, self.mixer_device(m, true))).collect::<Result<_>>()?;
        Ok(())
    }

    /// [`Transformer::prefill`] of `ids` as a new sequence, computing only what the cache does not
    /// already hold: keeps the cached positions of [`Transformer::reusable_prefix`], forgets the rest and
    /// prefills the remaining ids. Returns how many positions were reused (all of `ids` is possible:
    /// then nothing is computed). The result is a fresh prefill's, up to the float rounding of where
    /// chunks start; in a NIAH sweep, tests of one needle and length at different depths share the
    /// haystack up to the shallower needle, and only the rest is computed.
    pub fn prefill_reusing(&mut self, ids: &[u32]) -> Result<usize> {
        self.check_ids(ids)?;
        headscope_engine::block_on(headscope_engine::Engine::prefill_reusing(self, ids))
    }

    fn check_fits(&self, positions: usize) -> Result<()> {
        if positions > self.spec.max_position_embeddings {
            return Err(ModelError::TooLong(format!(
                "{positions} positions exceed the model's context of {} tokens (max_position_embeddings)",
                self.spec.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// Makes room for `extra` more positions, growing the cache (copying what it holds) if needed.
    fn make_room(&mut self, extra: usize) -> Result<()> {
        let need = self.position + extra;
        self.check_fits(need)?;
        let have = self.cache.first().map_or(0, LayerCache::capacity);
        if need > have {
            let capacity = need.max(have * 2).min(self.spec.max_position_embeddings).max(need);
            tracing::debug!("growing the KV cache from {have} to {capacity} positions");
            let keep = self.position;
            self.cache = if self.cache.is_empty() {
                (0..self.spec.head_shape().layers).map(|a| self.new_cache(a, capacity)).collect::<Result<_>>()?
            } else {
                self.cache.iter().map(|c| c.grown(&self.spec, capacity, keep)).collect::<Result<_>>()?
            };
        }
        for rope in &mut self.ropes {
            rope.ensure(need)?;
        }
        Ok(())
    }

    /// Whether a forward call reaching `length` tokens rotates with LongRoPE's long factors.
    fn long_rope_for(&self, length: usize) -> bool {
        self.ropes.iter().any(|r| r.long_for(length))
    }

    /// Picks every RoPE's tables for a forward call reaching `length` tokens.
    fn select_ropes(&mut self, length: usize) {
        for rope in &mut self.ropes {
            rope.select(length);
        }
    }

    /// The embeddings of `ids` (`[batch, seq]`), scaled where the family scales them.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let x = self.embed.forward(ids)?;
        Ok(match &self.embedding_scale {
            Some(scale) => x.broadcast_mul(scale)?,
            None => x,
        })
    }

    /// Final-norm output `[.., hidden]` to f32 logits, soft-capped where the family caps them.
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let logits = self.lm_head.forward(x)?.to_dtype(DType::F32)?;
        Ok(match self.spec.final_logit_softcap {
            Some(cap) => ((logits / cap)?.tanh()? * cap)?,
            None => logits,
        })
    }

    /// Applies `mask` to subsequent calls (`None` removes it). Unknown heads are an error.
    /// The cache remembers which mask each position was computed under, so no reuse crosses masks that
    /// compute differently.
    pub fn set_mask(&mut self, mask: Option<HeadMask>) -> Result<()> {
        let Some(mask) = mask else {
            self.mask = None;
            return Ok(());
        };
        let shape = self.spec.head_shape();
        shape.check(&mask.heads).map_err(|e| ModelError::Invalid(e.to_string()))?;
        // One keep vector per row of the head grid: per attention layer.
        let mut keep = Vec::with_capacity(shape.layers);
        for layer in 0..shape.layers {
            let masked: Vec<usize> = mask.heads.iter().filter(|h| h.layer == layer).map(|h| h.head).collect();
            keep.push(if masked.is_empty() {
                None
            } else {
                let v: Vec<f32> = (0..self.spec.heads).map(|h| if masked.contains(&h) { 0.0 } else { 1.0 }).collect();
                Some(Tensor::from_vec(v, (1, self.spec.heads, 1, 1), self.mixer_device(layer, false))?.to_dtype(self.dtype)?)
            });
        }
        let mut heads = mask.heads.clone();
        heads.sort_unstable();
        heads.dedup();
        let effect = (!heads.is_empty()).then_some(MaskEffect { heads, mode: mask.mode });
        self.mask = Some(ActiveMask { mask, keep, effect });
        Ok(())
    }

    /// The mask in effect.
    pub fn mask(&self) -> Option<&HeadMask> {
        self.mask.as_ref().map(|m| &m.mask)
    }

    /// The keep vector and mode that apply to `layer` in a decode step (`decoding`) or a prefill.
    fn keep_for(&self, layer: usize, decoding: bool) -> (Option<Tensor>, MaskMode) {
        match &self.mask {
            Some(m) if decoding || m.mask.scope == MaskScope::All => (m.keep[layer].clone(), m.mask.mode),
            _ => (None, MaskMode::Uniform),
        }
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.spec.vocab_size) {
            return Err(ModelError::Invalid(format!("token id {bad} is outside the vocabulary ({} tokens)", self.spec.vocab_size)));
        }
        Ok(())
    }

    /// Runs `ids` through the model in chunks, filling the cache; produces no logits. The prompt's last
    /// token should go to [`Transformer::step`] instead, so that its attention is observed.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        self.check_ids(ids)?;
        self.make_room(ids.len())?;
        // transformers prefills in one call, whose length decides LongRoPE's factors for all of it.
        let end = self.position + ids.len();
        self.select_ropes(end);
        self.start_sequence_states()?;
        // Should the prefill fail part-way, no snapshot claims a position it did not reach.
        self.snapshot = None;
        let key = (effect_of(&self.mask, false).cloned(), self.long_rope_for(end));
        let mut masks = self.mask_caches();
        let mut rest = ids;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(self.prefill_chunk_at(rest.len()));
            let x = self.embed(&Tensor::new(chunk, &self.device)?.unsqueeze(0)?)?;
            self.run_layers(x, false, &mut masks, &[])?;
            // Chunk by chunk, so that a prefill that fails part-way still knows what it computed.
            self.contents.written(self.position, chunk, &key);
            self.position += chunk.len();
            rest = tail;
        }
        if self.rolling_state() {
            let rings = self.cache.iter().map(|c| c.windowed.as_ref().map(WindowedHeads::deep_copy).transpose()).collect::<Result<_>>()?;
            self.snapshot = Some(Snapshot { position: self.position, mamba: self.mamba_states.clone(), rings });
        }
        Ok(())
    }

    /// Feeds one token, observes attention, and returns the next-token logits and per-head argmax positions.
    pub fn step(&mut self, id: u32, probe: &Probe) -> Result<StepOutput> {
        self.check_ids(&[id])?;
        self.make_room(1)?;
        let shape = self.spec.head_shape();
        shape.check(&probe.rows).map_err(|e| ModelError::Invalid(e.to_string()))?;
        self.select_ropes(self.position + 1);
        self.start_sequence_states()?;
        let x = self.embed(&Tensor::new(&[id], &self.device)?.unsqueeze(0)?)?;
        let mut masks = self.mask_caches();
        let (x, observed) = self.run_layers(x, true, &mut masks, &probe.rows)?;
        // A step computes its position as a prefill under the same mask effect would: a later prompt that
        // continues with this token may reuse it. Under a decode-scope mask it was not computed as a
        // prefill computes it, so the known run ends before it.
        let key = (effect_of(&self.mask, true).cloned(), self.long_rope_for(self.position + 1));
        self.contents.written(self.position, &[id], &key);
        self.position += 1;
        let logits = self.logits(&self.norm.forward(&x)?)?.flatten_all()?;
        // Split: the LM head ran on the last device; callers find the logits on the model's device.
        let logits = if self.is_split() { logits.to_device(&self.device)? } else { logits };
        // One device-to-host copy for every layer's argmax.
        let (argmax_tensors, first_keys, rows): (Vec<Tensor>, Vec<usize>, Vec<AttentionRow>) = observed;
        let raw = Tensor::cat(&argmax_tensors, 0)?.to_vec1::<u32>()?;
        let heads = self.spec.heads;
        let argmax_position = raw.iter().enumerate().map(|(i, &a)| a + first_keys[i / heads] as u32).collect();
        Ok(StepOutput { logits, argmax_position, attention_rows: rows })
    }

    /// Runs the layers over `x` at the current position, filling the cache; decoding, also returns the
    /// last layer's output and what the attention probes observed. A prefill chunk (`decoding` false)
    /// stops at the last layer's cache: the hidden state it returns is not the model's output.
    #[allow(clippy::type_complexity)]
    fn run_layers(
        &mut self,
        mut x: Tensor,
        decoding: bool,
        masks: &mut [MaskCache],
        rows: &[HeadId],
    ) -> Result<(Tensor, (Vec<Tensor>, Vec<usize>, Vec<AttentionRow>))> {
        let mut argmax = Vec::new();
        let mut first_keys = Vec::new();
        let mut out_rows = Vec::new();
        let position = self.position;
        let split = self.is_split();
        for i in 0..self.layers.len() {
            let layer = &self.layers[i];
            if split {
                // Pipeline: the hidden state follows the layers to their device (a no-op within a block).
                x = x.to_device(&self.devices[layer.device])?;
            }
            let masks = &mut masks[layer.device];
            let h = layer.input_norm.forward(&x)?;
            let last_of_prefill = !decoding && i + 1 == self.layers.len();
            let (attention, a) = match &layer.mixer {
                Mixer::Mamba { mamba, index } => {
                    let out = mamba.forward(&h, &mut self.mamba_states[*index])?;
                    if last_of_prefill {
                        break; // the state is advanced; no one reads the output
                    }
                    x = layer.finish(&x, out, false)?;
                    continue;
                }
                Mixer::Attention { attention, index } => (attention, *index),
            };
            let (keep, mode) = self.keep_for(a, decoding);
            let layer_rows: Vec<usize> = rows.iter().filter(|h| h.layer == a).map(|h| h.head).collect();
            let control = AttentionControl {
                keep: keep.as_ref(),
                mode,
                argmax: decoding,
                rows: &layer_rows,
                differentiable: false,
                fused: self.fused_attention,
            };
            let rope = &self.ropes[layer.rope];
            if last_of_prefill {
                // A prefill makes no logits, so no one reads the last layer's output: only its keys
                // and values are needed (a thirty-second of a 7B model's prefill).
                attention.fill_cache(&h, position, &mut self.cache[a], rope)?;
                break;
            }
            let (out, probe) = attention.forward_cached(&h, position, &mut self.cache[a], rope, masks, &control)?;
            x = layer.finish(&x, out, false)?;
            if let Some(p) = probe {
                if let Some(a) = p.argmax {
                    // Gathered on the first device, so that one copy to the host reads them all.
                    argmax.push(if split { a.to_device(&self.device)? } else { a });
                    first_keys.push(p.first_key);
                }
                for (head, w) in p.rows {
                    let mut weights = vec![0f32; p.first_key];
                    weights.extend(w);
                    out_rows.push(AttentionRow { head: HeadId::new(a, head), weights });
                }
            }
        }
        Ok((x, (argmax, first_keys, out_rows)))
    }

    /// Logits `[batch, seq, vocab]` (f32) for whole sequences `ids` (`[batch, seq]` u32), causal, no cache.
    /// A mask with scope `all` applies; one with scope `decode` does not (there is no decoding here).
    pub fn forward_sequence(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_sequence_with(ids, false)
    }

    /// [`Transformer::forward_sequence`] built only from ops autograd can differentiate, for training.
    pub fn forward_sequence_differentiable(&self, ids: &Tensor) -> Result<Tensor> {
        self.forward_sequence_with(ids, true)
    }

    fn forward_sequence_with(&self, ids: &Tensor, differentiable: bool) -> Result<Tensor> {
        let norm = |n: &RmsNorm, t: &Tensor| if differentiable { n.forward_differentiable(t) } else { n.forward(t) };
        let (_, t) = ids.dims2()?;
        self.check_fits(t)?;
        let mut ropes = self.ropes.clone();
        for rope in &mut ropes {
            rope.ensure(t)?;
            rope.select(t);
        }
        let mut masks = self.mask_caches();
        let mut x = self.embed(ids)?;
        for layer in &self.layers {
            if self.is_split() {
                x = x.to_device(&self.devices[layer.device])?;
            }
            let masks = &mut masks[layer.device];
            let h = norm(&layer.input_norm, &x)?;
            let out = match &layer.mixer {
                Mixer::Attention { attention, index } => {
                    let (keep, mode) = self.keep_for(*index, false);
                    let control = AttentionControl { keep: keep.as_ref(), mode, differentiable, ..Default::default() };
                    attention.forward_sequence(&h, &ropes[layer.rope], masks, &control)?
                }
                Mixer::Mamba { mamba, .. } => {
                    // A fresh state per call: these sequences start at position 0.
                    let mut state = MambaState::zeros(mamba.shape(), h.dims()[0], self.dtype, &self.devices[layer.device])?;
                    mamba.forward(&h, &mut state)?
                }
            };
            x = layer.finish(&x, out, differentiable)?;
        }
        let logits = self.logits(&norm(&self.norm, &x)?)?;
        Ok(if self.is_split() { logits.to_device(&self.device)? } else { logits })
    }

    /// One cache of attention masks per device: a mask is built on the device that uses it.
    fn mask_caches(&self) -> Vec<MaskCache> {
        self.devices.iter().map(|_| MaskCache::default()).collect()
    }
}
