//! The architecture of a checkpoint in one shape: every supported Hugging Face family's `config.json`
//! is read by its own module in [`crate::families`] and described here, so one transformer
//! implementation (the candle model and the wgpu model) runs them all.

use crate::error::{EngineError, Result};
use std::path::Path;

/// How rotary position embeddings are scaled (the `rope_scaling` of config.json).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Positions divided by `factor` (Hugging Face "linear").
    Linear {
        /// The factor.
        factor: f64,
    },
    /// Llama 3's frequency-dependent scaling.
    Llama3 {
        /// Overall factor.
        factor: f64,
        /// Wavelengths above `original / low_freq_factor` are scaled fully.
        low_freq_factor: f64,
        /// Wavelengths below `original / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The pre-training context.
        original_max_position_embeddings: usize,
    },
    /// LongRoPE (Phi-3's `longrope`, formerly `su`): per rotary pair, the wavelength is stretched by a
    /// factor from `short_factor` while the sequence is within the pre-training length and from
    /// `long_factor` past it, and cos/sin are multiplied by `attention_factor`. Which set applies is
    /// decided per forward call by the longest position it reaches, as transformers decides it: keys
    /// cached before the switch keep their rotation.
    LongRope {
        /// Per rotary pair, the stretch within the pre-training length.
        short_factor: Vec<f64>,
        /// Per rotary pair, the stretch past it.
        long_factor: Vec<f64>,
        /// The pre-training context.
        original_max_position_embeddings: usize,
        /// The factor cos and sin are multiplied by.
        attention_factor: f64,
    },
}

impl RopeScaling {
    /// The sequence length past which LongRoPE's long factors apply (None for other scalings).
    pub fn long_from(&self) -> Option<usize> {
        match self {
            RopeScaling::LongRope { original_max_position_embeddings, .. } => Some(*original_max_position_embeddings),
            _ => None,
        }
    }
}

/// The rotary embedding of a group of layers: base and scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    /// RoPE base.
    pub theta: f64,
    /// Scaling.
    pub scaling: RopeScaling,
}

/// How an RMSNorm applies its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NormStyle {
    /// `weight * x_normed` (Llama).
    #[default]
    Plain,
    /// `(1 + weight) * x_normed`, computed in f32 and cast back (Gemma).
    OffsetByOne,
}

/// The feed-forward gate's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// SiLU (SwiGLU: Llama, Mistral, Qwen, Phi-3).
    #[default]
    Silu,
    /// GELU, tanh approximation (GeGLU: Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

/// Mixture-of-experts feed-forward settings (Mixtral, Jamba).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeSpec {
    /// Number of experts per layer.
    pub experts: usize,
    /// Experts each token is routed to.
    pub experts_per_token: usize,
    /// Whether the chosen experts' router probabilities are rescaled to sum to 1 (Mixtral) or used as
    /// they are (Jamba).
    pub renormalize: bool,
    /// Per layer, whether its feed-forward block is the mixture (Jamba: every other layer; Mixtral: all).
    pub layers: Vec<bool>,
}

/// What mixes the tokens in a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerKind {
    /// Self-attention (every layer of a transformer).
    #[default]
    Attention,
    /// A Mamba selective state-space mixer (Jamba): no attention, so no heads to score or mask.
    Mamba,
}

/// A Mamba mixer's shape (Jamba's `mamba_*` fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MambaSpec {
    /// State size per channel (`mamba_d_state`).
    pub state: usize,
    /// Width of the causal depthwise convolution (`mamba_d_conv`).
    pub conv: usize,
    /// Inner channels (`mamba_expand` x hidden_size).
    pub inner: usize,
    /// Rank of the time-step projection (`mamba_dt_rank`).
    pub dt_rank: usize,
    /// Whether the convolution has a bias (`mamba_conv_bias`).
    pub conv_bias: bool,
    /// Whether the in and out projections have biases (`mamba_proj_bias`).
    pub proj_bias: bool,
}

/// How a checkpoint names its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TensorNames {
    /// The Llama family's: `post_attention_layernorm`, `mlp` (Mixtral: `block_sparse_moe`), `norm`.
    #[default]
    Llama,
    /// Jamba's: `pre_ff_layernorm`, `feed_forward` (with `router` and `experts`), `mamba`, `final_layernorm`.
    Jamba,
}

/// Everything the forward pass needs to know about an architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// `model_type` from config.json.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// Feed-forward width (per expert for MoE).
    pub intermediate_size: usize,
    /// Number of layers.
    pub layers: usize,
    /// Query heads per layer.
    pub heads: usize,
    /// Key/value heads per layer (GQA: fewer than `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// RoPE scaling.
    pub rope_scaling: RopeScaling,
    /// Longest context the model was built for.
    pub max_position_embeddings: usize,
    /// Per layer, the sliding attention window (`None` = full attention).
    pub sliding_windows: Vec<Option<usize>>,
    /// Whether q/k/v projections have biases.
    pub qkv_bias: bool,
    /// Whether the output projection has a bias.
    pub o_bias: bool,
    /// Whether the MLP projections have biases.
    pub mlp_bias: bool,
    /// Whether the LM head shares the embedding matrix.
    pub tie_word_embeddings: bool,
    /// Mixture-of-experts settings, for MoE models.
    pub moe: Option<MoeSpec>,
    /// `bos_token_id` from config.json.
    pub bos_token_id: Option<u32>,
    /// `eos_token_id` from config.json (may be several).
    pub eos_token_ids: Vec<u32>,
    /// `torch_dtype` (or `dtype`) from config.json.
    pub torch_dtype: Option<String>,
    /// Width of the rotated part of each head (Phi-3's `partial_rotary_factor` rotates only the first
    /// part; every other family rotates all of `head_dim`).
    pub rotary_dim: usize,
    /// The rotary embedding of the sliding-window layers where it differs from the others' (Gemma-3:
    /// base 10000 there, 1e6 with scaling on its global layers).
    pub sliding_rope: Option<RopeSpec>,
    /// Whether queries and keys are RMS-normalised per head before the rotation (Qwen3, Gemma-3:
    /// `self_attn.q_norm` / `k_norm`).
    pub qk_norm: bool,
    /// How every RMSNorm applies its weight.
    pub norm_style: NormStyle,
    /// What the embeddings are multiplied by (Gemma: sqrt(hidden_size), rounded to the weights' dtype).
    pub embedding_scale: Option<f64>,
    /// What query-key products are multiplied by before the softmax: 1/sqrt(head_dim), or Gemma's
    /// 1/sqrt(query_pre_attn_scalar).
    pub attention_scale: f64,
    /// Attention scores soft-capped to (-cap, cap) by `cap * tanh(score / cap)` (Gemma-2).
    pub attention_softcap: Option<f64>,
    /// Output logits soft-capped likewise (Gemma-2, and Gemma-3 where the config sets it).
    pub final_logit_softcap: Option<f64>,
    /// The feed-forward gate's activation.
    pub activation: Activation,
    /// Gemma-2/3's norms around both blocks: the attention output is normalised
    /// (`post_attention_layernorm`) before the residual add, and the MLP sits between
    /// `pre_feedforward_layernorm` and `post_feedforward_layernorm`.
    pub sandwich_norms: bool,
    /// Phi-3's fused projections: `self_attn.qkv_proj` (q, k, v rows in that order) and
    /// `mlp.gate_up_proj` (gate rows, then up rows).
    pub fused_projections: bool,
    /// The prefix of the decoder's tensors (`model`; Gemma-3's multimodal checkpoints keep the text
    /// model under `language_model.model` or, saved by transformers 5, `model.language_model`).
    pub weight_prefix: String,
    /// Per layer, what mixes its tokens (all attention but in Jamba).
    pub layer_kinds: Vec<LayerKind>,
    /// The Mamba mixers' shape, for models that have them.
    pub mamba: Option<MambaSpec>,
    /// How the checkpoint names its tensors.
    pub tensor_names: TensorNames,
}

/// The architectures HeadScope runs, by `model_type`.
pub const SUPPORTED_MODEL_TYPES: [&str; 10] =
    ["llama", "mistral", "qwen2", "mixtral", "qwen3", "phi3", "gemma2", "gemma3_text", "gemma3", "jamba"];

/// The largest size of any one dimension (vocabulary, widths, layers, heads, context) a config may
/// declare: 2^26, 67 M (the largest released: vocabularies of 256 K, contexts of 10 M).
pub const MAX_DIMENSION: usize = 1 << 26;

/// The most experts per layer a mixture-of-experts config may declare.
pub const MAX_EXPERTS: usize = 1 << 12;

/// The most query heads, over all layers, a config may declare (Llama-3-405B has 126 x 128 = 16 K).
pub const MAX_QUERY_HEADS: usize = 1 << 20;

impl ModelSpec {
    /// Parameters of a model as its config describes them: the checkpoint's tensors, counted (biases,
    /// MoE routers and an untied LM head included).
    pub fn parameter_count(&self) -> u64 {
        let (h, v) = (self.hidden_size as u64, self.vocab_size as u64);
        let (q, kv) = ((self.heads * self.head_dim) as u64, (self.kv_heads * self.head_dim) as u64);
        let i = self.intermediate_size as u64;
        let mut attention = h * q + 2 * h * kv + q * h;
        if self.qkv_bias {
            attention += q + 2 * kv;
        }
        if self.o_bias {
            attention += h;
        }
        let dense = 3 * h * i + if self.mlp_bias { 2 * i + h } else { 0 };
        if self.qk_norm {
            attention += 2 * self.head_dim as u64;
        }
        let mamba = self.mamba.as_ref().map_or(0, |m| {
            let (e, n, r, k) = (m.inner as u64, m.state as u64, m.dt_rank as u64, m.conv as u64);
            let bias = |b: bool, n: u64| if b { n } else { 0 };
            // in_proj, conv, x_proj, dt_proj, A_log, D, out_proj, and the dt/B/C norms.
            h * 2 * e
                + bias(m.proj_bias, 2 * e)
                + e * k
                + bias(m.conv_bias, e)
                + e * (r + 2 * n)
                + r * e
                + e
                + e * n
                + e
                + e * h
                + bias(m.proj_bias, h)
                + r
                + 2 * n
        });
        let norms = if self.sandwich_norms { 4 * h } else { 2 * h };
        let layers: u64 = (0..self.layers)
            .map(|l| {
                let ffn = match &self.moe {
                    Some(m) if m.layers.get(l).copied().unwrap_or(true) => m.experts as u64 * 3 * h * i + h * m.experts as u64,
                    _ => dense,
                };
                let mixer = match self.layer_kinds.get(l) {
                    Some(LayerKind::Mamba) => mamba,
                    _ => attention,
                };
                norms + mixer + ffn
            })
            .sum();
        let lm_head = if self.tie_word_embeddings { 0 } else { v * h };
        v * h + layers + h + lm_head
    }

    /// Reads config.json and describes its architecture.
    pub fn from_config_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::Io { path: path.to_owned(), error: e })?;
        Self::from_config_json(&text, path)
    }

    /// Describes the architecture of config.json text (`origin` names it in errors).
    pub fn from_config_json(text: &str, origin: &Path) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| EngineError::config(origin, format!("not JSON: {e}")))?;
        let model_type = value.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
        let spec = match model_type {
            "llama" => crate::families::llama::spec(&value),
            "mistral" => crate::families::mistral::spec(&value),
            "qwen2" => crate::families::qwen2::spec(&value),
            "mixtral" => crate::families::mixtral::spec(&value),
            "qwen3" => crate::families::qwen3::spec(&value),
            "phi3" => crate::families::phi3::spec(&value),
            "gemma2" => crate::families::gemma::gemma2(&value),
            "gemma3_text" => crate::families::gemma::gemma3_text(&value),
            "gemma3" => crate::families::gemma::gemma3(&value),
            "jamba" => crate::families::jamba::spec(&value),
            "" => return Err(EngineError::config(origin, "no `model_type`: is this a Hugging Face config.json?")),
            other => {
                return Err(EngineError::Unsupported(format!(
                    "{}: model_type `{other}` is not supported; HeadScope runs {}",
                    origin.display(),
                    SUPPORTED_MODEL_TYPES.join(", ")
                )))
            }
        }
        .map_err(|e| match e {
            EngineError::Invalid(m) => EngineError::config(origin, m),
            other => other,
        })?;
        spec.validate().map_err(|m| EngineError::config(origin, m))?;
        Ok(spec)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.layers),
            ("num_attention_heads", self.heads),
            ("num_key_value_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{name}` must be positive"));
        }
        // Far beyond any released checkpoint, and small enough that no product of them (buffer sizes,
        // head counts) overflows: a corrupted number is named here, not met as an allocation failure.
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v > MAX_DIMENSION) {
            return Err(format!("`{name}` = {v} is larger than any model HeadScope can run (at most {MAX_DIMENSION})"));
        }
        if self.layers * self.heads > MAX_QUERY_HEADS {
            return Err(format!(
                "{} layers x {} heads: more query heads than HeadScope can track (at most {MAX_QUERY_HEADS})",
                self.layers, self.heads
            ));
        }
        if self.heads * self.head_dim > MAX_DIMENSION {
            return Err(format!("{} heads x head_dim {} is wider than any model HeadScope can run", self.heads, self.head_dim));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(format!("num_attention_heads ({}) is not a multiple of num_key_value_heads ({})", self.heads, self.kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!("head_dim {} is odd: rotary embeddings need an even width", self.head_dim));
        }
        if self.rotary_dim > self.head_dim || !self.rotary_dim.is_multiple_of(2) {
            return Err(format!(
                "the rotated width {} (partial_rotary_factor x head_dim) must be even and within head_dim {}",
                self.rotary_dim, self.head_dim
            ));
        }
        let ropes = std::iter::once(&self.rope_scaling).chain(self.sliding_rope.as_ref().map(|r| &r.scaling));
        for scaling in ropes {
            if let RopeScaling::LongRope { short_factor, long_factor, original_max_position_embeddings, .. } = scaling {
                let pairs = self.rotary_dim / 2;
                if short_factor.len() != pairs || long_factor.len() != pairs {
                    return Err(format!(
                        "LongRoPE needs one short and one long factor per rotary pair ({pairs}); the config has {} and {}",
                        short_factor.len(),
                        long_factor.len()
                    ));
                }
                if *original_max_position_embeddings == 0 {
                    return Err("LongRoPE's original_max_position_embeddings must be positive".into());
                }
            }
        }
        let caps = [("attn_logit_softcapping", self.attention_softcap), ("final_logit_softcapping", self.final_logit_softcap)];
        if let Some((name, cap)) = caps.iter().find(|(_, c)| c.is_some_and(|c| !(c.is_finite() && c > 0.0))) {
            return Err(format!("`{name}` = {} must be a positive number", cap.unwrap_or_default()));
        }
        if !(self.attention_scale.is_finite() && self.attention_scale > 0.0) {
            return Err(format!("the attention scale {} (1/sqrt(query_pre_attn_scalar)) must be a positive number", self.attention_scale));
        }
        if let Some(m) = &self.moe {
            if m.experts == 0 || m.experts_per_token == 0 || m.experts_per_token > m.experts || m.experts > MAX_EXPERTS {
                return Err(format!("{} experts per token of {} experts", m.experts_per_token, m.experts));
            }
            if m.layers.len() != self.layers {
                return Err(format!("mixture-of-experts flags for {} layers in a model of {}", m.layers.len(), self.layers));
            }
        }
        if self.layer_kinds.len() != self.layers {
            return Err(format!("layer kinds for {} layers in a model of {}", self.layer_kinds.len(), self.layers));
        }
        if self.layer_kinds.contains(&LayerKind::Mamba) {
            let Some(m) = &self.mamba else {
                return Err("Mamba layers without Mamba settings".into());
            };
            let sizes = [
                ("mamba_d_state", m.state),
                ("mamba_d_conv", m.conv),
                ("mamba_expand x hidden_size", m.inner),
                ("mamba_dt_rank", m.dt_rank),
            ];
            if let Some((name, v)) = sizes.iter().find(|(_, v)| *v == 0 || *v > MAX_DIMENSION) {
                return Err(format!("`{name}` = {v} must be positive and at most {MAX_DIMENSION}"));
            }
        }
        if self.attention_layers().is_empty() {
            return Err("no attention layer: HeadScope scores attention heads, and this model has none".into());
        }
        Ok(())
    }

    /// The RoPE of the global (non-sliding) layers.
    pub fn global_rope(&self) -> RopeSpec {
        RopeSpec { theta: self.rope_theta, scaling: self.rope_scaling.clone() }
    }

    /// The RoPE layer `layer` rotates with: the sliding layers' own where the model has one.
    pub fn rope_of_layer(&self, layer: usize) -> RopeSpec {
        match (&self.sliding_rope, self.sliding_windows.get(layer).copied().flatten()) {
            (Some(local), Some(_)) => local.clone(),
            _ => self.global_rope(),
        }
    }

    /// Whether every layer rotates with the same RoPE.
    pub fn one_rope(&self) -> bool {
        (0..self.layers).all(|l| self.rope_of_layer(l) == self.global_rope())
    }

    /// The layers that attend (all but a hybrid's Mamba layers), in order. The head grid counts these
    /// only: head `l-h` is query head h of the l-th attention layer.
    pub fn attention_layers(&self) -> Vec<usize> {
        (0..self.layers).filter(|&l| self.layer_kinds.get(l).copied().unwrap_or_default() == LayerKind::Attention).collect()
    }

    /// The model layers the head grid's rows stand for where they are not 0..layers: a hybrid's
    /// attention layers (run.json's `attention_layers`, the heatmaps' row labels); None otherwise.
    pub fn hybrid_attention_layers(&self) -> Option<Vec<usize>> {
        let attending = self.attention_layers();
        (attending.len() != self.layers).then_some(attending)
    }

    /// Query heads that share one key/value head.
    pub fn group_size(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// The grid of query heads, in the core crate's terms.
    pub fn head_shape(&self) -> headscope_core::HeadShape {
        headscope_core::HeadShape::new(self.attention_layers().len(), self.heads)
    }
}

/// Token ids of a config field given as a number or a list of numbers (`eos_token_id`).
pub use fields::token_ids;

/// Helpers the family modules share to read config.json fields.
pub(crate) mod fields {
    use crate::error::{EngineError, Result};
    use serde_json::Value;

    /// A required unsigned field.
    pub fn usize_req(v: &Value, key: &str) -> Result<usize> {
        usize_opt(v, key)?.ok_or_else(|| EngineError::Invalid(format!("`{key}` is missing or not a whole number")))
    }

    /// An optional unsigned field (absent or null gives `None`). Every such field is a size, a count or
    /// a token id, so a value above [`super::MAX_DIMENSION`] is an error: a corrupted number is named
    /// here rather than met later as an allocation of its size (or, on wasm32, silently wrapped).
    pub fn usize_opt(v: &Value, key: &str) -> Result<Option<usize>> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => {
                let n = x.as_u64().ok_or_else(|| EngineError::Invalid(format!("`{key}` is not a whole number")))?;
                match usize::try_from(n) {
                    Ok(n) if n <= super::MAX_DIMENSION => Ok(Some(n)),
                    _ => Err(EngineError::Invalid(format!(
                        "`{key}` = {n} is larger than any model HeadScope can run (at most {})",
                        super::MAX_DIMENSION
                    ))),
                }
            }
        }
    }

    /// A float field with a default.
    pub fn f64_or(v: &Value, key: &str, default: f64) -> Result<f64> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_f64().ok_or_else(|| EngineError::Invalid(format!("`{key}` is not a number"))),
        }
    }

    /// A boolean field with a default.
    pub fn bool_or(v: &Value, key: &str, default: bool) -> Result<bool> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(x) => x.as_bool().ok_or_else(|| EngineError::Invalid(format!("`{key}` is not true/false"))),
        }
    }

    /// Token ids given as a number or a list of numbers.
    pub fn token_ids(v: &Value, key: &str) -> Vec<u32> {
        match v.get(key) {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|x| x as u32).collect(),
            _ => vec![],
        }
    }

    /// A string field.
    pub fn str_opt(v: &Value, key: &str) -> Option<String> {
        v.get(key).and_then(Value::as_str).map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_counted_by_hand() {
        let config = r#"{"model_type":"qwen2","vocab_size":10,"hidden_size":4,"intermediate_size":6,"num_hidden_layers":2,
            "num_attention_heads":2,"num_key_value_heads":1,"max_position_embeddings":32,"tie_word_embeddings":true}"#;
        let spec = ModelSpec::from_config_json(config, Path::new("config.json")).unwrap();
        assert!(spec.qkv_bias, "qwen2 has q/k/v biases");
        // head_dim 2: q 4, kv 2. Attention 4x4 + 2(4x2) + 4x4 = 48, biases 4 + 2 + 2 = 8; MLP 3x4x6 = 72;
        // two norms 8. Per layer 136; embedding 40, final norm 4, tied head 0.
        assert_eq!(spec.parameter_count(), 40 + 2 * 136 + 4);
        let untied = ModelSpec { tie_word_embeddings: false, ..spec.clone() };
        assert_eq!(untied.parameter_count(), spec.parameter_count() + 40);
        let moe =
            ModelSpec { moe: Some(MoeSpec { experts: 3, experts_per_token: 2, renormalize: true, layers: vec![true; 2] }), ..spec.clone() };
        // Three experts and a 4x3 router replace the one MLP.
        assert_eq!(moe.parameter_count(), spec.parameter_count() + 2 * (2 * 72 + 12));
    }
}
