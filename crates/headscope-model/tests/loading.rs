//! The loader on good and bad model directories: every bad input is a clear error naming the problem.

use headscope_core::niah::{san_francisco_needle, NiahBuilder};
use headscope_core::prompt::PromptFormat;
use headscope_core::TextTokenizer;
use headscope_model::testkit::{TinyArch, TinyModel, TINY_TEXT};
use headscope_model::{LoadOptions, LoadedModel, ModelError};
use std::path::Path;

fn tiny_dir(arch: TinyArch) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    TinyModel::new(arch).write(dir.path()).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match LoadedModel::load(dir, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, v.to_string()).unwrap();
}

#[test]
fn missing_and_malformed_files_are_named() {
    let e = load_err(Path::new("/nonexistent/model"));
    assert!(e.contains("model directory"), "{e}");

    let d = tiny_dir(TinyArch::Llama);
    std::fs::remove_file(d.path().join("config.json")).unwrap();
    assert!(load_err(d.path()).contains("config.json"));

    let d = tiny_dir(TinyArch::Llama);
    std::fs::write(d.path().join("config.json"), "{ not json").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("config.json") && e.contains("not JSON"), "{e}");

    let d = tiny_dir(TinyArch::Llama);
    std::fs::remove_file(d.path().join("tokenizer.json")).unwrap();
    assert!(load_err(d.path()).contains("tokenizer.json"));

    let d = tiny_dir(TinyArch::Llama);
    std::fs::write(d.path().join("tokenizer.json"), "{}").unwrap();
    assert!(load_err(d.path()).contains("tokenizer.json"));

    let d = tiny_dir(TinyArch::Llama);
    std::fs::write(d.path().join("model.safetensors"), b"garbage bytes, not a safetensors file").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("weights"), "{e}");
}

#[test]
fn unsupported_architectures_list_what_is_supported() {
    let d = tiny_dir(TinyArch::Llama);
    edit_config(d.path(), |v| v["model_type"] = "gpt2".into());
    let e = load_err(d.path());
    assert!(e.contains("`gpt2` is not supported") && e.contains("llama, mistral, qwen2, mixtral"), "{e}");

    let d = tiny_dir(TinyArch::Llama);
    edit_config(d.path(), |v| v["rope_scaling"] = serde_json::json!({"type": "yarn", "factor": 4.0}));
    assert!(load_err(d.path()).contains("rope_scaling type `yarn`"));

    let d = tiny_dir(TinyArch::Llama);
    edit_config(d.path(), |v| v["num_key_value_heads"] = 3.into());
    assert!(load_err(d.path()).contains("not a multiple"));

    let d = tiny_dir(TinyArch::Llama);
    edit_config(d.path(), |v| {
        v.as_object_mut().unwrap().remove("hidden_size");
    });
    assert!(load_err(d.path()).contains("`hidden_size` is missing"));
}

#[test]
fn pickle_checkpoints_are_refused() {
    let d = tiny_dir(TinyArch::Llama);
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    std::fs::write(d.path().join("pytorch_model.bin"), b"pickle").unwrap();
    let e = load_err(d.path());
    assert!(e.contains("pickle") && e.contains("safe_serialization"), "{e}");
}

#[test]
fn missing_or_misshapen_tensors_are_named() {
    let d = tiny_dir(TinyArch::Llama);
    let tiny = TinyModel::new(TinyArch::Llama);
    let mut w = tiny.weights().unwrap();
    w.remove("model.layers.1.self_attn.k_proj.weight");
    candle_core::safetensors::save(&w, d.path().join("model.safetensors")).unwrap();
    let e = load_err(d.path());
    assert!(e.contains("model.layers.1.self_attn.k_proj.weight"), "{e}");

    let d = tiny_dir(TinyArch::Llama);
    edit_config(d.path(), |v| v["intermediate_size"] = 100.into());
    let e = load_err(d.path());
    assert!(e.contains("shape"), "{e}");
}

#[test]
fn sharded_index_pointing_at_a_missing_shard_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel { shards: 2, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model-00002-of-00002.safetensors") && e.contains("missing"), "{e}");
}

#[test]
fn chat_template_and_special_tokens_are_read() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel { chat_template: true, ..TinyModel::new(TinyArch::Mistral(None)) }.write(dir.path()).unwrap();
    let m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(m.eos_token_ids, vec![2]);
    let PromptFormat::Chat(t) = m.prompt_format(false) else { panic!("expected the chat template") };
    assert_eq!(t.bos_token.as_deref(), Some("<s>"));
    assert_eq!(m.prompt_format(true), PromptFormat::Plain);
    assert_eq!(m.hash.len(), 16);
    // A different seed is a different model, with a different hash.
    let other = tempfile::tempdir().unwrap();
    TinyModel { chat_template: true, seed: 1, ..TinyModel::new(TinyArch::Mistral(None)) }.write(other.path()).unwrap();
    assert_ne!(LoadedModel::load(other.path(), &LoadOptions::default()).unwrap().hash, m.hash);
    let _ = ModelError::Invalid(String::new());
}

/// NIAH prompts built with a real byte-level BPE tokenizer have exactly the requested length, one BOS,
/// and an answer span whose tokens decode to the answer.
#[test]
fn niah_prompts_are_exact_with_a_real_tokenizer() {
    for chat in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        TinyModel { chat_template: chat, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
        let m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
        let mut b = NiahBuilder::new(&m.tokenizer, m.prompt_format(false), &[TINY_TEXT.to_string()]).unwrap();
        let needle = san_francisco_needle();
        for len in [200, 257, 600, 1500] {
            for depth in [0.0, 37.5, 100.0] {
                let t = b.build(&needle, len, depth).unwrap();
                assert_eq!(t.prompt_ids.len(), len, "chat={chat} len={len} depth={depth}");
                assert_eq!(t.prompt_ids.iter().filter(|&&i| i == 1).count(), 1, "one BOS, none inside the needle");
                assert_eq!(t.prompt_ids[0], 1);
                let answer = m.tokenizer.decode(&t.prompt_ids[t.answer_tokens.clone()]).unwrap();
                assert_eq!(answer.trim(), needle.real_needle, "chat={chat} len={len} depth={depth}");
                let whole = m.tokenizer.decode(&t.prompt_ids[t.needle_tokens.clone()]).unwrap();
                assert_eq!(whole.trim(), needle.needle);
            }
        }
    }
}

/// A denser sweep: every length and depth of a detection grid reaches its exact length.
#[test]
fn niah_lengths_are_exact_across_a_dense_grid() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel::new(TinyArch::Llama).write(dir.path()).unwrap();
    let m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    let mut b = NiahBuilder::new(&m.tokenizer, PromptFormat::Plain, &[TINY_TEXT.to_string()]).unwrap();
    let needle = san_francisco_needle();
    let mut n = 0;
    for len in (150..1300).step_by(53) {
        for d in 0..=10 {
            let t = b.build(&needle, len, d as f64 * 10.0).unwrap();
            assert_eq!(t.prompt_ids.len(), len, "len={len} depth={}", d * 10);
            n += 1;
        }
    }
    assert_eq!(n, 22 * 11);
}

/// Every file of a model directory as `(name, bytes)`, as a browser hands over a picked folder.
fn dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| (format!("picked/{}", p.file_name().unwrap().to_string_lossy()), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn loading_from_bytes_equals_loading_the_directory() {
    use headscope_model::loader::ModelFiles;
    use headscope_model::Probe;
    for shards in [1, 3] {
        let dir = tempfile::tempdir().unwrap();
        TinyModel { shards, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
        let mut from_dir = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
        let files = ModelFiles::from_named("picked", dir_files(dir.path())).unwrap();
        assert_eq!(files.safetensors.len(), shards);
        let mut from_bytes = LoadedModel::from_files(&files, &LoadOptions::default()).unwrap();
        assert_eq!(from_bytes.hash, from_dir.hash, "same content hash as the directory");
        assert_eq!(from_bytes.tokenizer_hash, from_dir.tokenizer_hash);
        assert_eq!(from_bytes.eos_token_ids, from_dir.eos_token_ids);
        assert_eq!(from_bytes.spec, from_dir.spec);
        let ids = from_dir.tokenizer.encode(TINY_TEXT, true).unwrap().ids;
        let ids = &ids[..ids.len().min(40)];
        let mut outs = Vec::new();
        for m in [&mut from_dir, &mut from_bytes] {
            m.model.reset();
            m.model.prefill(&ids[..ids.len() - 1]).unwrap();
            let out = m.model.step(ids[ids.len() - 1], &Probe::default()).unwrap();
            outs.push((out.logits.to_vec1::<f32>().unwrap(), out.argmax_position));
        }
        assert_eq!(outs[0], outs[1], "shards {shards}: same logits and argmax positions");
    }
}

#[test]
fn bad_byte_models_are_named_errors() {
    use headscope_model::loader::ModelFiles;
    let dir = tiny_dir(TinyArch::Llama);
    let all = dir_files(dir.path());
    let without = |name: &str| all.iter().filter(|(n, _)| !n.ends_with(name)).cloned().collect::<Vec<_>>();
    for (files, expect) in [
        (without("config.json"), "config.json"),
        (without("/tokenizer.json"), "tokenizer.json"),
        (without(".safetensors"), "safetensors"),
        (vec![("x/notes.txt".to_string(), b"hello".to_vec())], "config.json"),
    ] {
        let e = ModelFiles::from_named("picked", files).unwrap_err().to_string();
        assert!(e.contains(expect), "{e}");
    }
    let mut pickle = without(".safetensors");
    pickle.push(("picked/pytorch_model.bin".into(), vec![0; 8]));
    assert!(ModelFiles::from_named("picked", pickle).unwrap_err().to_string().contains("pickle"));
    let mut broken = ModelFiles::from_named("picked", all.clone()).unwrap();
    broken.safetensors[0].1.truncate(100);
    let e = LoadedModel::from_files(&broken, &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("weights") && e.contains("picked"), "{e}");
    let mut broken = ModelFiles::from_named("picked", all).unwrap();
    broken.config_json = b"{ not json".to_vec();
    let e = LoadedModel::from_files(&broken, &LoadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
}

/// transformers 5 writes RoPE settings as `rope_parameters` (no top-level `rope_theta`) and Qwen2's
/// per-layer attention as `layer_types`: both must be read, not silently replaced by defaults.
#[test]
fn transformers_5_configs_keep_their_rope_base_scaling_and_layer_types() {
    use headscope_model::spec::RopeScaling;
    let origin = Path::new("config.json");
    let llama = r#"{"model_type":"llama","vocab_size":100,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
        "num_attention_heads":4,"num_key_value_heads":2,"rope_parameters":{"factor":4.0,"rope_theta":5000000.0,"rope_type":"linear"}}"#;
    let s = headscope_model::ModelSpec::from_config_json(llama, origin).unwrap();
    assert_eq!(s.rope_theta, 5_000_000.0);
    assert_eq!(s.rope_scaling, RopeScaling::Linear { factor: 4.0 });
    // The transformers 4 spelling still wins where both are present.
    let old = llama.replace(r#""rope_parameters""#, r#""rope_theta":20000.0,"rope_parameters""#);
    assert_eq!(headscope_model::ModelSpec::from_config_json(&old, origin).unwrap().rope_theta, 20_000.0);
    let qwen = r#"{"model_type":"qwen2","vocab_size":100,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,
        "num_attention_heads":4,"num_key_value_heads":2,"layer_types":["full_attention","sliding_attention"],"sliding_window":64,
        "use_sliding_window":true,"max_window_layers":1,"rope_parameters":{"rope_theta":1000000.0,"rope_type":"default"}}"#;
    let s = headscope_model::ModelSpec::from_config_json(qwen, origin).unwrap();
    assert_eq!(s.sliding_windows, vec![None, Some(64)]);
    assert_eq!((s.rope_theta, s.rope_scaling), (1_000_000.0, RopeScaling::None));
    let bad = qwen.replace(r#""sliding_attention"]"#, r#""local"]"#);
    let e = headscope_model::ModelSpec::from_config_json(&bad, origin).unwrap_err().to_string();
    assert!(e.contains("layer_types"), "{e}");
}
