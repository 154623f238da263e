//! Mutated model files get errors, never panics (issue 22): an outside fuzzer found a panic inside the
//! tokenizers crate on a mutated tokenizer.json and a capacity overflow on a mutated config.json. Each
//! mutation here is loaded through the real loader under `catch_unwind`; a panic fails the test with the
//! mutation that caused it.

use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{HfTokenizer, LoadOptions, LoadedModel};
use serde_json::{json, Value};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

fn load_catching(dir: &Path, what: &str) -> Result<(), String> {
    match catch_unwind(AssertUnwindSafe(|| LoadedModel::load(dir, &LoadOptions::default()).map(|_| ()))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("loading panicked on {what}"),
    }
}

#[test]
fn extreme_config_numbers_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel::new(TinyArch::Llama).write(dir.path()).unwrap();
    let original: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    let fields: Vec<String> = original.as_object().unwrap().iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k.clone()).collect();
    assert!(fields.len() >= 8, "{fields:?}");
    let values = [
        json!(0),
        json!(1),
        json!(3),
        json!(1u64 << 31),
        json!(1u64 << 32),
        json!(1u64 << 53),
        json!(u64::MAX),
        json!(-1),
        json!(1.5),
        json!(1e300),
        json!("12"),
        Value::Null,
    ];
    let mut refused = 0;
    for field in &fields {
        for value in &values {
            let mut config = original.clone();
            config[field.as_str()] = value.clone();
            std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
            if let Err(e) = load_catching(dir.path(), &format!("{field} = {value}")) {
                assert!(!e.is_empty());
                refused += 1;
            }
        }
    }
    // Most of these cannot load (the weights no longer match); each said why.
    assert!(refused > fields.len() * values.len() / 2, "{refused}");
    // The limits name the field.
    let mut config = original.clone();
    config["num_hidden_layers"] = json!(1u64 << 40);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let e = load_catching(dir.path(), "huge layers").unwrap_err();
    assert!(e.contains("num_hidden_layers"), "{e}");
}

/// Deterministic mutations of the tiny tokenizer.json: truncations, byte flips, a lone surrogate in the
/// decoder section (what made the tokenizers crate panic), deep nesting.
#[test]
fn mutated_tokenizer_json_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel::new(TinyArch::Llama).write(dir.path()).unwrap();
    let good = std::fs::read(dir.path().join("tokenizer.json")).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    let mut mutants: Vec<(String, Vec<u8>)> = Vec::new();
    let decoder = text.find("\"decoder\"").expect("the tiny tokenizer has a decoder");
    let mut bad = text.clone();
    bad.insert_str(decoder, "\"decoder\": {\"type\": \"ByteLevel\", \"x\": \"\\ud800\"}, \"_\": ");
    mutants.push(("a lone surrogate in the decoder".into(), bad.into_bytes()));
    let mut bad = text.clone();
    bad.insert_str(decoder, &format!("\"decoder\": {}1{}, \"_\": ", "[".repeat(200), "]".repeat(200)));
    mutants.push(("deep nesting in the decoder".into(), bad.into_bytes()));
    let mut bad = text.clone();
    bad.insert_str(decoder, "\"decoder\": {\"type\": \"ByteLevel\", \"x\": 1e999}, \"_\": ");
    mutants.push(("a number out of range in the decoder".into(), bad.into_bytes()));
    for cut in (0..good.len()).step_by(good.len() / 40 + 1) {
        mutants.push((format!("truncated at {cut}"), good[..cut].to_vec()));
    }
    let mut rng = headscope_core::rng::SplitMix64::new(7);
    for i in 0..200 {
        let mut m = good.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(m.len() as u64) as usize;
            m[at] = b"{}[]\":,0\\ae"[rng.below(11) as usize];
        }
        mutants.push((format!("byte mutation {i}"), m));
    }
    for (what, bytes) in &mutants {
        let r = catch_unwind(|| HfTokenizer::from_bytes(bytes, None).map(|_| ()));
        assert!(r.is_ok(), "the tokenizer loader panicked on {what}");
    }
    for (what, bytes) in mutants.iter().take(3) {
        let e = HfTokenizer::from_bytes(bytes, None).err().unwrap_or_else(|| panic!("{what} was accepted")).to_string();
        assert!(e.contains("tokenizer.json"), "{what}: {e}");
    }
}

/// What `scripts/fuzz.sh` found: a template post-processor that names a special token it does not define
/// (or sequence B in the single template) loads in the tokenizers crate and panics on the first encode.
/// Such files are now refused by name, and an encode of each accepted variant returns.
#[test]
fn a_template_post_processor_naming_an_undefined_token_is_an_error_not_a_panic() {
    let template = |single: &str, specials: &str| {
        format!(
            r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,
            "post_processor":{{"type":"TemplateProcessing","single":{single},"pair":[{{"Sequence":{{"id":"A","type_id":0}}}},{{"Sequence":{{"id":"B","type_id":1}}}}],
            "special_tokens":{specials}}},"decoder":null,
            "model":{{"type":"WordLevel","vocab":{{"<unk>":0,"<s>":1,"a":2}},"unk_token":"<unk>"}}}}"#
        )
    };
    let defined = r#"{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}"#;
    let cases = [
        (
            "an undefined special token",
            template(r#"[{"SpecialToken":{"id":"</s","type_id":0}},{"Sequence":{"id":"A","type_id":0}}]"#, defined),
            false,
        ),
        ("sequence B in the single template", template(r#"[{"Sequence":{"id":"B","type_id":0}}]"#, defined), false),
        (
            "ids and tokens of different lengths",
            template(r#"[{"SpecialToken":{"id":"<s>","type_id":0}}]"#, r#"{"<s>":{"id":"<s>","ids":[1,2],"tokens":["<s>"]}}"#),
            false,
        ),
        (
            "a misspelt type and a token stored under another id",
            template(r#"[{"SpecialToken":{"id":"<s>","type_id":0}}]"#, r#"{"<q>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}"#)
                .replace("TemplateProcessing", "TemplateProcussing"),
            false,
        ),
        ("a valid template", template(r#"[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}]"#, defined), true),
    ];
    for (what, json, valid) in cases {
        let loaded = std::panic::catch_unwind(|| HfTokenizer::from_bytes(json.as_bytes(), None))
            .unwrap_or_else(|_| panic!("{what}: loading panicked"));
        match loaded {
            Ok(t) => {
                assert!(valid, "{what} was accepted");
                let ids = std::panic::catch_unwind(AssertUnwindSafe(|| headscope_core::TextTokenizer::encode(&t, "a", true)))
                    .unwrap_or_else(|_| panic!("{what}: encoding panicked"))
                    .unwrap();
                assert_eq!(ids.ids, vec![1, 2]);
            }
            Err(e) => {
                assert!(!valid, "{what}: {e}");
                assert!(e.to_string().contains("post_processor"), "{what}: {e}");
            }
        }
    }
}
