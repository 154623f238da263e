//! Probes and masks: the argmax report, attention rows, and what each mask mode and scope does.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use headscope_core::HeadId;
use headscope_model::attention::{Attention, AttentionControl, LayerCache, MaskCache};
use headscope_model::rope::Rope;
use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{greedy_decode, greedy_decode_from, HeadMask, LoadOptions, LoadedModel, MaskMode, MaskScope, ModelSpec, Probe};
use std::collections::HashMap;
use std::path::Path;

fn load(arch: TinyArch) -> (tempfile::TempDir, LoadedModel, TinyModel) {
    let dir = tempfile::tempdir().unwrap();
    let tiny = TinyModel { seed: 3, ..TinyModel::new(arch) };
    tiny.write(dir.path()).unwrap();
    let m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    (dir, m, tiny)
}

fn ids(n: usize) -> Vec<u32> {
    let mut r = headscope_core::rng::SplitMix64::new(9);
    (0..n).map(|_| 3 + r.below(300) as u32).collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

#[test]
fn argmax_positions_are_the_peaks_of_the_attention_rows() {
    let (_d, mut m, tiny) = load(TinyArch::Llama);
    let all: Vec<HeadId> = m.spec.head_shape().iter().collect();
    let prompt = ids(30);
    m.model.prefill(&prompt[..29]).unwrap();
    let out = m.model.step(prompt[29], &Probe { rows: all.clone(), ..Probe::default() }).unwrap();
    assert_eq!(out.attention_rows.len(), tiny.layers * tiny.heads);
    for (i, row) in out.attention_rows.iter().enumerate() {
        assert_eq!(row.head, all[i]);
        assert_eq!(row.weights.len(), 30, "a row covers every context position");
        let sum: f32 = row.weights.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "row of {} sums to {sum}", row.head);
        assert_eq!(out.argmax_position[i] as usize, argmax(&row.weights), "head {}", row.head);
    }
    // Random weights with peaked queries: not every head looks at the same place.
    let distinct: std::collections::HashSet<u32> = out.argmax_position.iter().copied().collect();
    assert!(distinct.len() > 1);
}

#[test]
fn uniform_mask_flattens_exactly_the_masked_query_head() {
    // Heads 1-2 and 1-3 share a KV head (GQA groups of 2): masking 1-2 must flatten 1-2 alone.
    let (_d, mut m, _) = load(TinyArch::Llama);
    let target = HeadId::new(1, 2);
    m.model.set_mask(Some(HeadMask { heads: vec![target], mode: MaskMode::Uniform, scope: MaskScope::Decode })).unwrap();
    let prompt = ids(25);
    m.model.prefill(&prompt[..24]).unwrap();
    let all: Vec<HeadId> = m.spec.head_shape().iter().collect();
    let out = m.model.step(prompt[24], &Probe { rows: all, ..Probe::default() }).unwrap();
    for row in &out.attention_rows {
        let uniform = row.weights.iter().all(|&w| (w - 1.0 / 25.0).abs() < 1e-6);
        assert_eq!(uniform, row.head == target, "head {}: uniform={uniform}", row.head);
    }
}

#[test]
fn uniform_mode_output_is_the_mean_of_values_and_zero_mode_is_zero() {
    // One attention layer whose output projection is the identity, so head outputs are visible.
    let cfg = r#"{"model_type":"llama","vocab_size":16,"hidden_size":8,"intermediate_size":8,"num_hidden_layers":1,
                 "num_attention_heads":4,"num_key_value_heads":2,"max_position_embeddings":64}"#;
    let spec = ModelSpec::from_config_json(cfg, Path::new("config.json")).unwrap();
    let dev = Device::Cpu;
    let mut r = headscope_core::rng::SplitMix64::new(1);
    let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| (r.below(2000) as f32 / 1000.0) - 1.0).collect() };
    let (h, d) = (8, 2);
    let mut w = HashMap::new();
    w.insert("q_proj.weight".to_string(), Tensor::from_vec(rand(8 * h), (8, h), &dev).unwrap());
    w.insert("k_proj.weight".to_string(), Tensor::from_vec(rand(4 * h), (4, h), &dev).unwrap());
    let wv = Tensor::from_vec(rand(4 * h), (4, h), &dev).unwrap();
    w.insert("v_proj.weight".to_string(), wv.clone());
    w.insert("o_proj.weight".to_string(), Tensor::eye(8, DType::F32, &dev).unwrap());
    let attn = Attention::new(&spec, 0, VarBuilder::from_tensors(w, DType::F32, &dev)).unwrap();
    let rope = Rope::new(&spec, 64, DType::F32, &dev).unwrap();
    let t = 9;
    let x = Tensor::from_vec(rand(t * h), (1, t, h), &dev).unwrap();
    let values = candle_nn::Linear::new(wv, None).forward(&x).unwrap().get(0).unwrap(); // [t, kv*d]

    for (masked, mode) in [(2usize, MaskMode::Uniform), (1, MaskMode::Zero)] {
        let keep: Vec<f32> = (0..4).map(|i| if i == masked { 0.0 } else { 1.0 }).collect();
        let keep = Tensor::from_vec(keep, (1, 4, 1, 1), &dev).unwrap();
        let mut cache = LayerCache::new(&spec, 64, DType::F32, &dev).unwrap();
        let mut masks = MaskCache::default();
        let none = AttentionControl::default();
        attn.forward_cached(&x.narrow(1, 0, t - 1).unwrap(), 0, &mut cache, &rope, &mut masks, &none).unwrap();
        let control = AttentionControl { keep: Some(&keep), mode, ..Default::default() };
        let (y, _) = attn.forward_cached(&x.narrow(1, t - 1, 1).unwrap(), t - 1, &mut cache, &rope, &mut masks, &control).unwrap();
        let y = y.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = &y[masked * d..(masked + 1) * d];
        let expect: Vec<f32> = match mode {
            // Query head 2 reads KV head 1 (heads 2, 3 share it): the mean of that head's values.
            MaskMode::Uniform => {
                let kv = masked / 2;
                let v = values.narrow(1, kv * d, d).unwrap().mean(0).unwrap();
                v.to_vec1::<f32>().unwrap()
            }
            MaskMode::Zero => vec![0.0; d],
        };
        for (a, b) in got.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-5, "{mode:?}: head output {got:?}, expected {expect:?}");
        }
    }
}

#[test]
fn decode_scope_leaves_prefill_alone_and_all_scope_does_not() {
    let (_d, mut m, _) = load(TinyArch::Llama);
    let prompt = ids(20);
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let clean = m.model.forward_sequence(&input).unwrap();
    let heads = vec![HeadId::new(0, 0), HeadId::new(0, 1), HeadId::new(1, 3)];
    let diff = |a: &Tensor, b: &Tensor| {
        (a - b).unwrap().abs().unwrap().max_keepdim(0).unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    };

    m.model.set_mask(Some(HeadMask { heads: heads.clone(), mode: MaskMode::Uniform, scope: MaskScope::Decode })).unwrap();
    assert_eq!(diff(&m.model.forward_sequence(&input).unwrap(), &clean), 0.0, "decode scope must not touch a prefill");
    // ... but it changes decode steps.
    m.model.prefill(&prompt[..19]).unwrap();
    let masked_step = m.model.step(prompt[19], &Probe::default()).unwrap();
    let clean_last = clean.get(0).unwrap().get(19).unwrap();
    assert!(diff(&masked_step.logits, &clean_last) > 1e-3);

    for mode in [MaskMode::Uniform, MaskMode::Zero] {
        m.model.set_mask(Some(HeadMask { heads: heads.clone(), mode, scope: MaskScope::All })).unwrap();
        assert!(diff(&m.model.forward_sequence(&input).unwrap(), &clean) > 1e-3, "{mode:?}/all must change the prefill");
    }
    m.model.set_mask(None).unwrap();
    assert_eq!(diff(&m.model.forward_sequence(&input).unwrap(), &clean), 0.0);
    let bad = m.model.set_mask(Some(HeadMask { heads: vec![HeadId::new(2, 0)], ..Default::default() }));
    assert!(bad.unwrap_err().to_string().contains("does not exist"));
}

#[test]
fn sliding_window_hides_keys_older_than_the_window() {
    let window = 6;
    let (_d, mut m, _) = load(TinyArch::Mistral(Some(window)));
    let prompt = ids(20);
    m.model.set_prefill_chunk(4);
    m.model.prefill(&prompt[..19]).unwrap();
    let all: Vec<HeadId> = m.spec.head_shape().iter().collect();
    let out = m.model.step(prompt[19], &Probe { rows: all, ..Probe::default() }).unwrap();
    for (i, row) in out.attention_rows.iter().enumerate() {
        // Position 19 sees keys 14..=19 (the last `window` positions, itself included), as Hugging Face does.
        assert!(row.weights[..14].iter().all(|&w| w == 0.0), "head {} looked outside its window", row.head);
        assert!(row.weights[14..].iter().all(|&w| w > 0.0));
        assert!((14..20).contains(&(out.argmax_position[i] as usize)));
    }
    // With the window the chunked prefill still equals the whole-sequence forward.
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let all_logits = m.model.forward_sequence(&input).unwrap().get(0).unwrap().get(19).unwrap();
    let d = (all_logits - &out.logits).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "{d}");
}

#[test]
fn greedy_decode_reports_one_argmax_set_per_generated_token() {
    let (_d, mut m, tiny) = load(TinyArch::Qwen2);
    let prompt = ids(16);
    let trace = greedy_decode(&mut m.model, &prompt, 6, &[], &Probe::default(), |_| true).unwrap();
    assert_eq!(trace.tokens.len(), 6);
    assert_eq!(trace.argmax_position.len(), 6);
    assert!(trace.argmax_position.iter().all(|a| a.len() == tiny.layers * tiny.heads));
    // The first step sits at the last prompt position: it can see the prompt only.
    assert!(trace.argmax_position[0].iter().all(|&p| p < 16));
    assert!(trace.argmax_position[5].iter().all(|&p| p < 21));
    // Greedy: the same prompt gives the same tokens; a stop token ends early.
    let again = greedy_decode(&mut m.model, &prompt, 6, &[], &Probe::default(), |_| true).unwrap();
    assert_eq!(again.tokens, trace.tokens);
    let stopped = greedy_decode(&mut m.model, &prompt, 6, &[trace.tokens[2]], &Probe::default(), |_| true).unwrap();
    assert!(stopped.tokens.len() <= 3);
    assert!(greedy_decode(&mut m.model, &[], 6, &[], &Probe::default(), |_| true).is_err());
}

/// One prefill, several decodes: truncating back to the prefilled prompt and decoding under another
/// decode-scope mask gives exactly what a fresh prefill and decode under that mask gives.
#[test]
fn decodes_from_one_shared_prefill_equal_fresh_decodes() {
    let (_d, mut m, _) = load(TinyArch::Llama);
    let prompt = ids(24);
    let masks = [
        None,
        Some(HeadMask { heads: vec![HeadId::new(0, 1), HeadId::new(1, 2)], mode: MaskMode::Uniform, scope: MaskScope::Decode }),
        Some(HeadMask { heads: vec![HeadId::new(1, 0)], mode: MaskMode::Zero, scope: MaskScope::Decode }),
        None,
    ];
    let fresh: Vec<_> = masks
        .iter()
        .map(|mask| {
            m.model.set_mask(mask.clone()).unwrap();
            greedy_decode(&mut m.model, &prompt, 8, &[], &Probe::default(), |_| true).unwrap()
        })
        .collect();
    assert_ne!(fresh[0].argmax_position, fresh[1].argmax_position, "the masks must change something for this test to mean anything");
    m.model.set_mask(None).unwrap();
    m.model.reset();
    m.model.prefill(&prompt[..23]).unwrap();
    for (mask, want) in masks.iter().zip(&fresh) {
        m.model.truncate(23).unwrap();
        m.model.set_mask(mask.clone()).unwrap();
        let got = greedy_decode_from(&mut m.model, prompt[23], 8, &[], &Probe::default(), |_| true).unwrap();
        assert_eq!((&got.tokens, &got.argmax_position), (&want.tokens, &want.argmax_position), "{mask:?}");
    }
    assert_eq!(m.model.position(), 23 + 8, "each of the 8 steps fed one token");
    assert!(m.model.truncate(40).unwrap_err().to_string().contains("holds 31 positions"));
}

#[test]
fn contexts_past_the_model_maximum_are_refused() {
    let (_d, mut m, tiny) = load(TinyArch::Llama);
    let long = vec![5u32; tiny.max_positions + 1];
    let e = m.model.prefill(&long).unwrap_err().to_string();
    assert!(e.contains("exceed the model's context"), "{e}");
    assert!(m.model.prefill(&[100_000]).unwrap_err().to_string().contains("outside the vocabulary"));
}

/// Long contexts get shorter prefill chunks (the score budget), and how a prompt is chunked never
/// changes what the model computes.
#[test]
fn prefill_chunks_shrink_with_the_context_and_give_the_same_result() {
    let (_d, mut m, tiny) = load(TinyArch::Mistral(Some(7)));
    let prompt = ids(40);
    m.model.reserve(41).unwrap();
    let whole = greedy_decode(&mut m.model, &prompt, 4, &[], &Probe::default(), |_| true).unwrap();
    // Chunks of at most 8 queries, and room for 60 query-key scores per chunk: 7 queries (over 8 keys)
    // at the start, one query past position 30.
    m.model.set_prefill_chunk(8);
    m.model.set_prefill_score_budget(tiny.heads * 60 * 4);
    m.model.reset();
    assert_eq!(m.model.prefill_chunk_at(40), 7);
    assert_eq!(m.model.prefill_chunk_at(3), 3, "never more than the prompt has left");
    m.model.prefill(&prompt[..30]).unwrap();
    assert_eq!(m.model.prefill_chunk_at(10), 1);
    m.model.reset();
    let chunked = greedy_decode(&mut m.model, &prompt, 4, &[], &Probe::default(), |_| true).unwrap();
    assert_eq!(chunked.tokens, whole.tokens);
    assert_eq!(chunked.argmax_position, whole.argmax_position);
}

/// A memory probe: reserve a context, jump to its end without computing it, run a step there; too
/// long a jump is refused, and a released cache is allocated again by the next reserve.
#[test]
fn memory_probe_jumps_to_the_end_of_a_reserved_context() {
    let (_d, mut m, tiny) = load(TinyArch::Llama);
    m.model.reserve(64).unwrap();
    assert!(m.model.pretend_filled(65).unwrap_err().to_string().contains("past the KV cache"));
    m.model.pretend_filled(60).unwrap();
    m.model.prefill(&ids(3)).unwrap();
    let out = m.model.step(5, &Probe::default()).unwrap();
    assert_eq!(m.model.position(), 64);
    assert_eq!(out.argmax_position.len(), tiny.layers * tiny.heads);
    assert!(out.argmax_position.iter().all(|&p| p < 64));
    m.model.release_cache();
    assert!(m.model.pretend_filled(1).is_err(), "no cache after release");
    m.model.reserve(8).unwrap();
    m.model.pretend_filled(8).unwrap();
}
