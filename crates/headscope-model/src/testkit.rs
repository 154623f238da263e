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
    /// A 2-layer GQA model (4 query heads over 2 KV heads) of `arch`.
    pub fn new(arch: TinyArch) -> Self {
        TinyModel {
            arch,
            seed: 0,
            layers: 2,
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
        let model_type = match self.arch {
            TinyArch::Llama => "llama",
            TinyArch::Mistral(_) => "mistral",
            TinyArch::Qwen2 => "qwen2",
            TinyArch::Mixtral => "mixtral",
        };
        let mut c = serde_json::json!({
            "model_type": model_type,
            "architectures": [format!("{}ForCausalLM", match self.arch { TinyArch::Llama => "Llama", TinyArch::Mistral(_) => "Mistral", TinyArch::Qwen2 => "Qwen2", TinyArch::Mixtral => "Mixtral" })],
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
            "tie_word_embeddings": matches!(self.arch, TinyArch::Qwen2),
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
        w.put("model.embed_tokens.weight", &[self.vocab, h], 0.0, 1.0)?;
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            // Norm weights around 1, not 0.
            w.put(&format!("{p}.input_layernorm.weight"), &[h], 1.0, 0.1)?;
            w.put(&format!("{p}.post_attention_layernorm.weight"), &[h], 1.0, 0.1)?;
            // Queries and keys larger than usual, so attention is peaked rather than near uniform.
            w.put(&format!("{p}.self_attn.q_proj.weight"), &[q, h], 0.0, 3.0 * lin(h))?;
            w.put(&format!("{p}.self_attn.k_proj.weight"), &[kv, h], 0.0, 3.0 * lin(h))?;
            w.put(&format!("{p}.self_attn.v_proj.weight"), &[kv, h], 0.0, lin(h))?;
            w.put(&format!("{p}.self_attn.o_proj.weight"), &[h, q], 0.0, lin(q))?;
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
            } else {
                w.put(&format!("{p}.mlp.gate_proj.weight"), &[i, h], 0.0, lin(h))?;
                w.put(&format!("{p}.mlp.up_proj.weight"), &[i, h], 0.0, lin(h))?;
                w.put(&format!("{p}.mlp.down_proj.weight"), &[h, i], 0.0, lin(i))?;
            }
        }
        w.put("model.norm.weight", &[h], 1.0, 0.0)?;
        if self.arch != TinyArch::Qwen2 {
            w.put("lm_head.weight", &[self.vocab, h], 0.0, lin(h))?;
        }
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
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| mean + self.rng.normal() * std).collect();
        self.out.insert(name.to_owned(), Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(self.dtype)?);
        Ok(())
    }
}

/// Text the tiny tokenizer is trained on, and the default haystack (written for this project; it is
/// `public/haystacks/village.txt`).
pub const TINY_TEXT: &str = include_str!("../../../public/haystacks/village.txt");
