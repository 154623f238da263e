//! Tiny random models in the real Hugging Face layout, for tests and demos: config.json,
//! model.safetensors (or shards + index), tokenizer.json (byte-level BPE trained on [`TINY_TEXT`]),
//! tokenizer_config.json and generation_config.json. Loading them goes through the real loader.
//! Weights come from a fixed-sequence generator, so a seed always gives the same model.

use crate::error::{ModelError, Result};
use crate::tokenizer::train_byte_level_bpe;
use candle_core::{DType, Device, Tensor};
use headscope_core::rng::SplitMix64;
use std::collections::HashMap;
use std::path::Path;

/// The first CUDA device, or `None` (saying why) where the build has no CUDA or the machine no GPU:
/// GPU tests call it and skip without one.
pub fn cuda_device() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipping: no CUDA device ({e})");
            None
        }
    }
}

/// Which family's config and tensor names to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TinyArch {
    /// `llama`.
    Llama,
    /// `mistral` with a sliding window of the given size (None = full attention).
    Mistral(Option<usize>),
    /// `qwen2` (q/k/v biases, tied embeddings).
    Qwen2,
    /// `mixtral` with 4 experts, 2 per token.
    Mixtral,
    /// `qwen3` (q/k norms, tied embeddings).
    Qwen3,
    /// `phi3` (fused projections, half of each head rotated, LongRoPE from 256 tokens on, a window of 512).
    Phi3,
    /// `gemma2` (norms of 1 + weight around both blocks, GeGLU, soft-capping, alternating window of 64).
    Gemma2,
    /// `gemma3_text` (Gemma-2's layout with q/k norms and a second RoPE for the sliding layers).
    Gemma3,
    /// `jamba` with 4 layers: Mamba, attention, Mamba, attention; 4 experts (top 2) in layers 1 and 3.
    Jamba,
}

impl TinyArch {
    /// The `--arch` names of `headscope tiny-model`, with the family each makes.
    pub const NAMES: [(&'static str, TinyArch); 9] = [
        ("llama", TinyArch::Llama),
        ("mistral", TinyArch::Mistral(None)),
        ("qwen2", TinyArch::Qwen2),
        ("mixtral", TinyArch::Mixtral),
        ("qwen3", TinyArch::Qwen3),
        ("phi3", TinyArch::Phi3),
        ("gemma2", TinyArch::Gemma2),
        ("gemma3", TinyArch::Gemma3),
        ("jamba", TinyArch::Jamba),
    ];

    /// The family named `name` (see [`TinyArch::NAMES`]).
    pub fn from_name(name: &str) -> Option<TinyArch> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }

    /// `model_type` and the architecture class of config.json.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            TinyArch::Llama => ("llama", "LlamaForCausalLM"),
            TinyArch::Mistral(_) => ("mistral", "MistralForCausalLM"),
            TinyArch::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            TinyArch::Mixtral => ("mixtral", "MixtralForCausalLM"),
            TinyArch::Qwen3 => ("qwen3", "Qwen3ForCausalLM"),
            TinyArch::Phi3 => ("phi3", "Phi3ForCausalLM"),
            TinyArch::Gemma2 => ("gemma2", "Gemma2ForCausalLM"),
            TinyArch::Gemma3 => ("gemma3_text", "Gemma3ForCausalLM"),
            TinyArch::Jamba => ("jamba", "JambaForCausalLM"),
        }
    }

    /// Whether the LM head is the embedding matrix.
    fn tied(self) -> bool {
        matches!(self, TinyArch::Qwen2 | TinyArch::Qwen3 | TinyArch::Gemma2 | TinyArch::Gemma3)
    }

    /// Gemma's norms (weights applied as 1 + weight) and layout.
    fn gemma(self) -> bool {
        matches!(self, TinyArch::Gemma2 | TinyArch::Gemma3)
    }
}

/// The shape and files of a tiny model.
#[derive(Debug, Clone)]
pub struct TinyModel {
    /// Family.
    pub arch: TinyArch,
    /// Seed of the weights.
    pub seed: u64,
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
    /// MLP width.
    pub intermediate: usize,
    /// Tokenizer vocabulary to train.
    pub vocab: usize,
    /// max_position_embeddings.
    pub max_positions: usize,
    /// Stored weight dtype.
    pub dtype: DType,
    /// Split the weights into this many shards with an index (1 = a single model.safetensors).
    pub shards: usize,
    /// Write a chat template into tokenizer_config.json.
    pub chat_template: bool,
}

impl TinyModel {
    /// A 2-layer (Jamba: 4-layer) GQA model (4 query heads over 2 KV heads) of `arch`.
    pub fn new(arch: TinyArch) -> Self {
        TinyModel {
            arch,
            seed: 0,
            layers: if arch == TinyArch::Jamba { 4 } else { 2 },
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            intermediate: 96,
            vocab: 384,
            max_positions: 2048,
            dtype: DType::F32,
            shards: 1,
            chat_template: false,
        }
    }

    fn hidden(&self) -> usize {
        self.heads * self.head_dim
    }

    /// The config.json this model is described by.
    pub fn config_json(&self) -> serde_json::Value {
        let (model_type, class) = self.arch.names();
        let mut c = serde_json::json!({
            "model_type": model_type,
            "architectures": [class],
            "vocab_size": self.vocab,
            "hidden_size": self.hidden(),
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "hidden_act": "silu",
            "tie_word_embeddings": self.arch.tied(),
            "torch_dtype": match self.dtype { DType::F16 => "float16", DType::BF16 => "bfloat16", _ => "float32" },
        });
        match self.arch {
            TinyArch::Mistral(w) => c["sliding_window"] = serde_json::json!(w),
            TinyArch::Qwen2 => {
                c["use_sliding_window"] = serde_json::json!(false);
                c["sliding_window"] = serde_json::json!(self.max_positions);
                c["max_window_layers"] = serde_json::json!(self.layers);
            }
            TinyArch::Mixtral => {
                c["num_local_experts"] = serde_json::json!(4);
                c["num_experts_per_tok"] = serde_json::json!(2);
                c["sliding_window"] = serde_json::Value::Null;
                c["router_aux_loss_coef"] = serde_json::json!(0.02);
            }
            TinyArch::Qwen3 => {
                c["attention_bias"] = serde_json::json!(false);
                c["head_dim"] = serde_json::json!(self.head_dim);
                c["use_sliding_window"] = serde_json::json!(false);
            }
            TinyArch::Phi3 => {
                let pairs = self.head_dim / 4;
                c["partial_rotary_factor"] = serde_json::json!(0.5);
                c["sliding_window"] = serde_json::json!(512);
                c["original_max_position_embeddings"] = serde_json::json!(256);
                c["rope_scaling"] = serde_json::json!({
                    "type": "longrope",
                    "short_factor": (0..pairs).map(|p| 1.0 + 0.25 * p as f64).collect::<Vec<_>>(),
                    "long_factor": (0..pairs).map(|p| 1.0 + 2.0 * p as f64).collect::<Vec<_>>(),
                });
            }
            TinyArch::Gemma2 | TinyArch::Gemma3 => {
                c["attention_bias"] = serde_json::json!(false);
                c["head_dim"] = serde_json::json!(self.head_dim);
                c["hidden_activation"] = serde_json::json!("gelu_pytorch_tanh");
                // Gemma-2 2B and 9B scale by 1/sqrt(head_dim), as candle-transformers' Gemma-2 always does
                // (the reference test compares with it); Gemma-3 by another scale, as the 27B models do.
                let scalar = if self.arch == TinyArch::Gemma2 { self.head_dim } else { self.head_dim * 2 };
                c["query_pre_attn_scalar"] = serde_json::json!(scalar);
                c["sliding_window"] = serde_json::json!(64);
                if self.arch == TinyArch::Gemma2 {
                    c["attn_logit_softcapping"] = serde_json::json!(50.0);
                    c["final_logit_softcapping"] = serde_json::json!(30.0);
                } else {
                    c["sliding_window_pattern"] = serde_json::json!(2);
                    c["rope_theta"] = serde_json::json!(1_000_000.0);
                    c["rope_local_base_freq"] = serde_json::json!(10_000.0);
                    c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 8.0});
                }
            }
            TinyArch::Jamba => {
                for (k, v) in [
                    ("attn_layer_period", 2),
                    ("attn_layer_offset", 1),
                    ("expert_layer_period", 2),
                    ("expert_layer_offset", 1),
                    ("num_experts", 4),
                    ("num_experts_per_tok", 2),
                    ("mamba_d_state", 8),
                    ("mamba_d_conv", 4),
                    ("mamba_expand", 2),
                    ("mamba_dt_rank", 8),
                ] {
                    c[k] = serde_json::json!(v);
                }
                c["mamba_conv_bias"] = serde_json::json!(true);
                c["mamba_proj_bias"] = serde_json::json!(false);
            }
            TinyArch::Llama => {}
        }
        c
    }

    /// Random weights named as in the Hugging Face checkpoint.
    pub fn weights(&self) -> Result<HashMap<String, Tensor>> {
        let mut w = WeightWriter { rng: SplitMix64::new(self.seed), out: HashMap::new(), dtype: self.dtype };
        let h = self.hidden();
        let (q, kv, i) = (self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate);
        let lin = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        // Embeddings of std 1 (Gemma multiplies them by sqrt(hidden): 1/sqrt(hidden) there).
        let embed_std = if self.arch.gemma() { lin(h) } else { 1.0 };
        w.put("model.embed_tokens.weight", &[self.vocab, h], 0.0, embed_std)?;
        // Norm weights around 1, not 0 (Gemma's apply as 1 + weight: around 0 there).
        let norm_mean = if self.arch.gemma() { 0.0 } else { 1.0 };
        if self.arch == TinyArch::Jamba {
            return self.jamba_weights(w);
        }
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            w.put(&format!("{p}.input_layernorm.weight"), &[h], norm_mean, 0.1)?;
            w.put(&format!("{p}.post_attention_layernorm.weight"), &[h], norm_mean, 0.1)?;
            if self.arch.gemma() {
                w.put(&format!("{p}.pre_feedforward_layernorm.weight"), &[h], norm_mean, 0.1)?;
                w.put(&format!("{p}.post_feedforward_layernorm.weight"), &[h], norm_mean, 0.1)?;
            }
            // Queries and keys larger than usual, so attention is peaked rather than near uniform.
            if self.arch == TinyArch::Phi3 {
                // q, k and v rows in one matrix, each block drawn as the separate ones are.
                let mut rows = Vec::new();
                for (n, std) in [(q, 3.0 * lin(h)), (kv, 3.0 * lin(h)), (kv, lin(h))] {
                    rows.push(w.draw(&[n, h], 0.0, std)?);
                }
                w.insert(&format!("{p}.self_attn.qkv_proj.weight"), Tensor::cat(&rows, 0)?)?;
            } else {
                w.put(&format!("{p}.self_attn.q_proj.weight"), &[q, h], 0.0, 3.0 * lin(h))?;
                w.put(&format!("{p}.self_attn.k_proj.weight"), &[kv, h], 0.0, 3.0 * lin(h))?;
                w.put(&format!("{p}.self_attn.v_proj.weight"), &[kv, h], 0.0, lin(h))?;
            }
            w.put(&format!("{p}.self_attn.o_proj.weight"), &[h, q], 0.0, lin(q))?;
            if matches!(self.arch, TinyArch::Qwen3 | TinyArch::Gemma3) {
                w.put(&format!("{p}.self_attn.q_norm.weight"), &[self.head_dim], norm_mean, 0.1)?;
                w.put(&format!("{p}.self_attn.k_norm.weight"), &[self.head_dim], norm_mean, 0.1)?;
            }
            if self.arch == TinyArch::Qwen2 {
                w.put(&format!("{p}.self_attn.q_proj.bias"), &[q], 0.0, 0.1)?;
                w.put(&format!("{p}.self_attn.k_proj.bias"), &[kv], 0.0, 0.1)?;
                w.put(&format!("{p}.self_attn.v_proj.bias"), &[kv], 0.0, 0.1)?;
            }
            if self.arch == TinyArch::Mixtral {
                w.put(&format!("{p}.block_sparse_moe.gate.weight"), &[4, h], 0.0, lin(h))?;
                for e in 0..4 {
                    let ep = format!("{p}.block_sparse_moe.experts.{e}");
                    w.put(&format!("{ep}.w1.weight"), &[i, h], 0.0, lin(h))?;
                    w.put(&format!("{ep}.w3.weight"), &[i, h], 0.0, lin(h))?;
                    w.put(&format!("{ep}.w2.weight"), &[h, i], 0.0, lin(i))?;
                }
            } else if self.arch == TinyArch::Phi3 {
                let gate_up = w.draw(&[2 * i, h], 0.0, lin(h))?;
                w.insert(&format!("{p}.mlp.gate_up_proj.weight"), gate_up)?;
                w.put(&format!("{p}.mlp.down_proj.weight"), &[h, i], 0.0, lin(i))?;
            } else {
                w.put(&format!("{p}.mlp.gate_proj.weight"), &[i, h], 0.0, lin(h))?;
                w.put(&format!("{p}.mlp.up_proj.weight"), &[i, h], 0.0, lin(h))?;
                w.put(&format!("{p}.mlp.down_proj.weight"), &[h, i], 0.0, lin(i))?;
            }
        }
        w.put("model.norm.weight", &[h], norm_mean, 0.0)?;
        if !self.arch.tied() {
            w.put("lm_head.weight", &[self.vocab, h], 0.0, lin(h))?;
        }
        Ok(w.out)
    }

    /// Jamba's tensors: odd layers attend, even layers are Mamba blocks; odd layers route to experts.
    fn jamba_weights(&self, mut w: WeightWriter) -> Result<HashMap<String, Tensor>> {
        let h = self.hidden();
        let (q, kv, i) = (self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate);
        let (e, n, r, k) = (2 * h, 8, 8, 4);
        let lin = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            w.put(&format!("{p}.input_layernorm.weight"), &[h], 1.0, 0.1)?;
            w.put(&format!("{p}.pre_ff_layernorm.weight"), &[h], 1.0, 0.1)?;
            if l % 2 == 1 {
                w.put(&format!("{p}.self_attn.q_proj.weight"), &[q, h], 0.0, 3.0 * lin(h))?;
                w.put(&format!("{p}.self_attn.k_proj.weight"), &[kv, h], 0.0, 3.0 * lin(h))?;
                w.put(&format!("{p}.self_attn.v_proj.weight"), &[kv, h], 0.0, lin(h))?;
                w.put(&format!("{p}.self_attn.o_proj.weight"), &[h, q], 0.0, lin(q))?;
                w.put(&format!("{p}.feed_forward.router.weight"), &[4, h], 0.0, lin(h))?;
                for x in 0..4 {
                    let ep = format!("{p}.feed_forward.experts.{x}");
                    w.put(&format!("{ep}.gate_proj.weight"), &[i, h], 0.0, lin(h))?;
                    w.put(&format!("{ep}.up_proj.weight"), &[i, h], 0.0, lin(h))?;
                    w.put(&format!("{ep}.down_proj.weight"), &[h, i], 0.0, lin(i))?;
                }
            } else {
                let m = format!("{p}.mamba");
                w.put(&format!("{m}.in_proj.weight"), &[2 * e, h], 0.0, lin(h))?;
                w.put(&format!("{m}.conv1d.weight"), &[e, 1, k], 0.0, lin(k))?;
                w.put(&format!("{m}.conv1d.bias"), &[e], 0.0, 0.1)?;
                w.put(&format!("{m}.x_proj.weight"), &[r + 2 * n, e], 0.0, lin(e))?;
                w.put(&format!("{m}.dt_proj.weight"), &[e, r], 0.0, lin(r))?;
                w.put(&format!("{m}.dt_proj.bias"), &[e], -2.0, 0.5)?;
                // A_log = log(1..=n) per channel, as Mamba initialises it, plus noise.
                let a_log: Vec<f32> = (0..e * n).map(|j| ((j % n + 1) as f32).ln() + 0.1 * w.rng.normal()).collect();
                w.insert(&format!("{m}.A_log"), Tensor::from_vec(a_log, (e, n), &Device::Cpu)?)?;
                w.put(&format!("{m}.D"), &[e], 1.0, 0.1)?;
                w.put(&format!("{m}.out_proj.weight"), &[h, e], 0.0, lin(e))?;
                w.put(&format!("{m}.dt_layernorm.weight"), &[r], 1.0, 0.1)?;
                w.put(&format!("{m}.b_layernorm.weight"), &[n], 1.0, 0.1)?;
                w.put(&format!("{m}.c_layernorm.weight"), &[n], 1.0, 0.1)?;
                w.put(&format!("{p}.feed_forward.gate_proj.weight"), &[i, h], 0.0, lin(h))?;
                w.put(&format!("{p}.feed_forward.up_proj.weight"), &[i, h], 0.0, lin(h))?;
                w.put(&format!("{p}.feed_forward.down_proj.weight"), &[h, i], 0.0, lin(i))?;
            }
        }
        w.put("model.final_layernorm.weight", &[h], 1.0, 0.0)?;
        w.put("lm_head.weight", &[self.vocab, h], 0.0, lin(h))?;
        Ok(w.out)
    }

    /// Writes the model directory (created if needed).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| ModelError::Io { path: dir.to_owned(), error: e };
        std::fs::create_dir_all(dir).map_err(io)?;
        let write_json = |name: &str, v: &serde_json::Value| -> Result<()> {
            std::fs::write(dir.join(name), serde_json::to_string_pretty(v).expect("JSON values serialise")).map_err(io)
        };
        write_json("config.json", &self.config_json())?;
        let tokenizer = train_byte_level_bpe(&[TINY_TEXT.to_string()], self.vocab, &["<unk>", "<s>", "</s>"], Some("<s>"))?;
        tokenizer.save(dir.join("tokenizer.json"), false).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let mut tc = serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true});
        if self.chat_template {
            tc["chat_template"] = serde_json::json!("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}");
        }
        write_json("tokenizer_config.json", &tc)?;
        write_json("generation_config.json", &serde_json::json!({"bos_token_id": 1, "eos_token_id": 2}))?;
        let weights = self.weights()?;
        if self.shards <= 1 {
            candle_core::safetensors::save(&weights, dir.join("model.safetensors"))?;
        } else {
            let mut names: Vec<&String> = weights.keys().collect();
            names.sort();
            let mut map = serde_json::Map::new();
            let per = names.len().div_ceil(self.shards);
            for (s, chunk) in names.chunks(per).enumerate() {
                let file = format!("model-{:05}-of-{:05}.safetensors", s + 1, self.shards);
                let part: HashMap<String, Tensor> = chunk.iter().map(|n| ((*n).clone(), weights[*n].clone())).collect();
                candle_core::safetensors::save(&part, dir.join(&file))?;
                for n in chunk {
                    map.insert((*n).clone(), serde_json::json!(file));
                }
            }
            write_json("model.safetensors.index.json", &serde_json::json!({"metadata": {}, "weight_map": map}))?;
        }
        Ok(())
    }
}

/// Draws named tensors from one generator in a fixed order.
struct WeightWriter {
    rng: SplitMix64,
    out: HashMap<String, Tensor>,
    dtype: DType,
}

impl WeightWriter {
    fn put(&mut self, name: &str, shape: &[usize], mean: f32, std: f32) -> Result<()> {
        let t = self.draw(shape, mean, std)?;
        self.insert(name, t)
    }

    /// The next `shape` of values, f32.
    fn draw(&mut self, shape: &[usize], mean: f32, std: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| mean + self.rng.normal() * std).collect();
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    }

    fn insert(&mut self, name: &str, t: Tensor) -> Result<()> {
        self.out.insert(name.to_owned(), t.to_dtype(self.dtype)?);
        Ok(())
    }
}

/// Text the tiny tokenizer is trained on, and the default haystack (written for this project; it is
/// `public/haystacks/village.txt`).
pub const TINY_TEXT: &str = include_str!("../../../public/haystacks/village.txt");
