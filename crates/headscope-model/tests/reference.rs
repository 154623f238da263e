//! The instrumented forward must compute what candle-transformers' own implementations compute: same
//! random weights, loaded from the same Hugging Face directory, same logits. Also pins the cache paths
//! (chunked prefill + decode steps) against the cache-free whole-sequence forward.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{LoadOptions, LoadedModel, Probe};
use std::path::Path;

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut r = headscope_core::rng::SplitMix64::new(seed);
    (0..n).map(|_| 3 + r.below(vocab as u64 - 3) as u32).collect()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a.flatten_all().unwrap() - b.flatten_all().unwrap()).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Last-position logits from candle-transformers' implementation of the family, where it computes what
/// transformers does: its Gemma-3 ignores `rope_scaling` and its Phi-3 applies LongRoPE's factors
/// differently (multiplying frequencies, by position), so those two are checked against transformers
/// only (the hf-agreement fixture) and here only for their cache paths; its Gemma-2 scales scores by
/// 1/sqrt(head_dim) whatever `query_pre_attn_scalar` says, so the tiny Gemma-2 keeps the two equal.
fn reference_logits(arch: TinyArch, dir: &Path, ids: &[u32]) -> Option<Tensor> {
    let files = vec![dir.join("model.safetensors")];
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &Device::Cpu).unwrap() };
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let input = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    use candle_transformers::models as m;
    let logits = match arch {
        TinyArch::Llama => {
            let c: m::llama::LlamaConfig = serde_json::from_value(cfg).unwrap();
            let c = c.into_config(false);
            let model = m::llama::Llama::load(vb, &c).unwrap();
            let mut cache = m::llama::Cache::new(false, DType::F32, &c, &Device::Cpu).unwrap();
            model.forward(&input, 0, &mut cache).unwrap()
        }
        TinyArch::Mistral(_) => {
            let c: m::mistral::Config = serde_json::from_value(cfg).unwrap();
            m::mistral::Model::new(&c, vb).unwrap().forward(&input, 0).unwrap()
        }
        TinyArch::Qwen2 => {
            let c: m::qwen2::Config = serde_json::from_value(cfg).unwrap();
            m::qwen2::ModelForCausalLM::new(&c, vb).unwrap().forward(&input, 0).unwrap()
        }
        TinyArch::Mixtral => {
            // candle-transformers wants a number here; the sequences are shorter than any window.
            cfg["sliding_window"] = serde_json::json!(4096);
            cfg["use_flash_attn"] = serde_json::json!(false);
            let c: m::mixtral::Config = serde_json::from_value(cfg).unwrap();
            m::mixtral::Model::new(&c, vb).unwrap().forward(&input, 0).unwrap()
        }
        TinyArch::Qwen3 => {
            cfg["max_window_layers"] = serde_json::json!(2);
            let c: m::qwen3::Config = serde_json::from_value(cfg).unwrap();
            m::qwen3::ModelForCausalLM::new(&c, vb).unwrap().forward(&input, 0).unwrap()
        }
        TinyArch::Gemma2 => {
            let c: m::gemma2::Config = serde_json::from_value(cfg).unwrap();
            m::gemma2::Model::new(false, &c, vb).unwrap().forward(&input, 0).unwrap()
        }
        TinyArch::Phi3 | TinyArch::Gemma3 | TinyArch::Jamba => return None,
    };
    Some(logits.flatten_all().unwrap().to_dtype(DType::F32).unwrap())
}

fn check_family(arch: TinyArch) {
    let dir = tempfile::tempdir().unwrap();
    let tiny = TinyModel { seed: 11, ..TinyModel::new(arch) };
    tiny.write(dir.path()).unwrap();
    let mut loaded = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    let ids = tokens(37, tiny.vocab, 5);
    // Whole-sequence forward, last position.
    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let all = loaded.model.forward_sequence(&input).unwrap();
    let last = all.get(0).unwrap().get(ids.len() - 1).unwrap();
    let reference = reference_logits(arch, dir.path(), &ids).unwrap_or_else(|| last.clone());
    let d = max_abs_diff(&last, &reference);
    assert!(d < 1e-4, "{arch:?}: whole-sequence logits differ from candle-transformers by {d}");

    // Chunked prefill (odd chunk size) + one step.
    let model = &mut loaded.model;
    model.set_prefill_chunk(5);
    model.reserve(64).unwrap();
    model.prefill(&ids[..ids.len() - 1]).unwrap();
    let out = model.step(ids[ids.len() - 1], &Probe::default()).unwrap();
    let d = max_abs_diff(&out.logits, &reference);
    assert!(d < 1e-4, "{arch:?}: prefill+step logits differ from candle-transformers by {d}");
    assert_eq!(out.argmax_position.len(), model.spec().head_shape().count());
    assert!(out.argmax_position.iter().all(|&p| (p as usize) < ids.len()));

    // Decode steps agree with the whole-sequence forward at every position.
    model.reset();
    model.prefill(&ids[..20]).unwrap();
    for (k, &id) in ids[20..].iter().enumerate() {
        let out = model.step(id, &Probe::default()).unwrap();
        let expect = all.get(0).unwrap().get(20 + k).unwrap();
        let d = max_abs_diff(&out.logits, &expect);
        assert!(d < 1e-4, "{arch:?}: step at position {} differs by {d}", 20 + k);
    }
}

#[test]
fn llama_matches_candle_transformers() {
    check_family(TinyArch::Llama);
}

#[test]
fn mistral_matches_candle_transformers() {
    check_family(TinyArch::Mistral(None));
}

#[test]
fn qwen2_matches_candle_transformers() {
    check_family(TinyArch::Qwen2);
}

#[test]
fn mixtral_matches_candle_transformers() {
    check_family(TinyArch::Mixtral);
}

#[test]
fn qwen3_matches_candle_transformers() {
    check_family(TinyArch::Qwen3);
}

#[test]
fn gemma2_matches_candle_transformers() {
    check_family(TinyArch::Gemma2);
}

#[test]
fn phi3_and_gemma3_cache_paths_match_their_whole_sequence_forward() {
    check_family(TinyArch::Phi3);
    check_family(TinyArch::Gemma3);
}

/// Jamba's Mamba states carry across prefill chunks of 5 and decode steps as the whole-sequence
/// forward computes them (candle-transformers has no Jamba; the transformers fixture checks the values).
#[test]
fn jamba_cache_and_state_paths_match_its_whole_sequence_forward() {
    check_family(TinyArch::Jamba);
}

#[test]
fn half_precision_and_sharded_checkpoints_load() {
    for (dtype, shards) in [(DType::BF16, 3), (DType::F16, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let tiny = TinyModel { dtype, shards, ..TinyModel::new(TinyArch::Llama) };
        tiny.write(dir.path()).unwrap();
        if shards > 1 {
            assert!(dir.path().join("model.safetensors.index.json").exists());
        }
        let mut loaded = LoadedModel::load(dir.path(), &LoadOptions { dtype: Some(DType::F32), ..Default::default() }).unwrap();
        let ids = tokens(12, tiny.vocab, 1);
        loaded.model.prefill(&ids[..11]).unwrap();
        let out = loaded.model.step(ids[11], &Probe::default()).unwrap();
        assert!(out.logits.to_vec1::<f32>().unwrap().iter().all(|x| x.is_finite()));
        // Computing in the stored half precision also works.
        let mut half = LoadedModel::load(dir.path(), &LoadOptions { dtype: Some(dtype), ..Default::default() }).unwrap();
        half.model.prefill(&ids[..11]).unwrap();
        let h = half.model.step(ids[11], &Probe::default()).unwrap();
        let d = max_abs_diff(&h.logits, &out.logits);
        assert!(d < 0.1, "{dtype:?} logits differ from f32 by {d}");
    }
}
