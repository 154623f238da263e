//! The lab's work off the browser: the worker's test runner gives the same records as the model
//! crate's decode loop scored by core (what `headscope detect` does), its views agree with those
//! records, and bad inputs are named errors.

use headscope_core::niah::{san_francisco_needle, Needle, NiahBuilder};
use headscope_core::score::{retrieval_hits, DecodeStep};
use headscope_core::{HeadId, TextTokenizer};
use headscope_model::testkit::{TinyArch, TinyModel, TINY_TEXT};
use headscope_model::{greedy_decode, LoadOptions, LoadedModel, ModelFiles, Probe};
use headscope_web::lab::{self, LabError, LabModel};
use headscope_web::protocol::{MaskRequest, TestAt, TestSetup};
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Drives a future of the CPU path, which never waits on anything, to completion.
fn block_on<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("the CPU path's future did not complete");
}

fn files_of(dir: &Path, name: &str) -> ModelFiles {
    let files = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    ModelFiles::from_named(name, files).unwrap()
}

fn lab_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/models/lab")
}

fn kjv() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/haystacks/kjv-john.txt")).unwrap()
}

fn setup(needles: Vec<Needle>, haystack: String, max_new_tokens: usize) -> TestSetup {
    TestSetup { needles, haystack, max_new_tokens, plain: true }
}

#[test]
fn lab_records_equal_the_cli_pipeline_on_the_lab_model() {
    let dir = lab_dir();
    let mut model = LabModel::load_cpu(&files_of(&dir, "lab")).unwrap();
    let setup = setup(vec![san_francisco_needle()], kjv(), 24);
    let plan = lab::plan_sweep(&model, &setup, "200:300:2", 2).unwrap();
    assert_eq!(plan.keys.len(), 4);

    // The CLI's pipeline: the directory loader, the model crate's decode loop, core's scoring.
    let reference = LoadedModel::load(&dir, &LoadOptions::default()).unwrap();
    let mut transformer = reference.model;
    let format = headscope_core::prompt::PromptFormat::Plain;
    let mut builder = NiahBuilder::new(&reference.tokenizer, format, std::slice::from_ref(&setup.haystack)).unwrap();
    let shape = model.shape();
    let mut computed = 0;
    for key in &plan.keys {
        let at = TestAt { needle_index: key.needle_index, length: key.length, depth_percent: key.depth_percent };
        let out = block_on(lab::run_test(&mut model, &setup, at, None, &Probe::default(), &|| false)).unwrap();
        let r = &out.result.record;

        let test = builder.build(&setup.needles[0], key.length, key.depth_percent).unwrap();
        let trace = greedy_decode(&mut transformer, &test.prompt_ids, 24, &reference.eos_token_ids, &Probe::default(), |_| true).unwrap();
        let steps: Vec<DecodeStep> =
            trace.tokens.iter().zip(&trace.argmax_position).map(|(&token, a)| DecodeStep { token, argmax: a.clone() }).collect();
        let hits = retrieval_hits(shape, &test.prompt_ids, test.answer_tokens.clone(), &steps).unwrap();
        assert_eq!(r.id, key.id());
        assert_eq!(r.prompt_tokens, key.length, "exact prompt length");
        assert_eq!(r.prompt_hash, test.prompt_hash());
        assert_eq!(r.generated_ids, trace.tokens, "{}: same greedy tokens", r.id);
        assert_eq!(out.result.argmax, trace.argmax_position, "{}: same argmax at every step and head", r.id);
        assert_eq!(r.hits, hits.to_sparse());
        assert_eq!(r.answer, reference.tokenizer.decode(&trace.tokens).unwrap());
        assert_eq!(r.recall, headscope_core::metrics::rouge1_recall(&r.answer, &setup.needles[0].real_needle));

        // The answer's pieces spell the answer, and a piece is marked copied exactly when some head
        // made an eq. 1 hit at its step.
        let joined: String = out.result.answer.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(joined, r.answer);
        for (i, piece) in out.result.answer.iter().enumerate() {
            let one = retrieval_hits(shape, &test.prompt_ids, test.answer_tokens.clone(), &steps[i..=i]).unwrap();
            assert_eq!(piece.copied, !one.to_sparse().is_empty(), "{} step {i}", r.id);
        }
        assert!(r.hits.is_empty() || out.result.answer.iter().any(|t| t.copied), "{}: hits but no copied token", r.id);
        assert_eq!(out.result.decode_tokens, trace.tokens.len());
        // Computed prefill positions: all of the first prompt, then what the cache did not hold (the
        // tests share the haystack before the shallower needle).
        if key == &plan.keys[0] {
            assert_eq!(out.result.prefill_tokens, key.length - 1);
        } else {
            assert!(out.result.prefill_tokens < key.length);
        }
        computed += out.result.prefill_tokens;
    }
    assert!(computed < plan.keys.iter().map(|k| k.length - 1).sum::<usize>(), "the page's tests reuse the cache");
}

#[test]
fn head_view_shows_where_the_head_looked_at_every_step() {
    let mut model = LabModel::load_cpu(&files_of(&lab_dir(), "lab")).unwrap();
    let setup = setup(vec![san_francisco_needle()], kjv(), 16);
    let at = TestAt { needle_index: 0, length: 300, depth_percent: 50.0 };
    let plain = block_on(lab::run_test(&mut model, &setup, at, None, &Probe::default(), &|| false)).unwrap();
    let shape = model.shape();
    for head in [HeadId::new(0, 0), HeadId::new(shape.layers - 1, shape.heads - 1)] {
        let view = block_on(lab::head_view(&mut model, &setup, at, head, None, &|| false)).unwrap();
        let i = shape.index(head).unwrap();
        assert_eq!(view.steps.len(), plain.result.argmax.len(), "one entry per generated token");
        assert_eq!(view.context, 300);
        assert_eq!(view.answer_tokens, plain.result.record.answer_tokens);
        let hit_positions: Vec<u32> = view.steps.iter().filter(|s| s.hit).map(|s| s.argmax).collect();
        let recorded = plain.result.record.hits.get(&head).cloned().unwrap_or_default();
        for (s, step) in view.steps.iter().enumerate() {
            assert_eq!(step.argmax, plain.result.argmax[s][i], "probing rows does not change the argmax");
            assert!(step.window.iter().any(|(p, _)| *p == step.argmax), "the window holds the argmax");
            assert!(step.peak > 0.0 && step.peak <= 1.0);
            assert_eq!(step.strip.len(), 300usize.div_ceil(view.bin));
            let strip_max = step.strip.iter().copied().fold(0f32, f32::max);
            if (step.argmax as usize) < view.context {
                assert!(strip_max >= step.peak, "the strip keeps the peak (max pooling)");
            }
        }
        let mut distinct = hit_positions.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct, recorded, "hits in the view are the record's hits of {head}");
    }
    let e = block_on(lab::head_view(&mut model, &setup, at, HeadId::new(99, 0), None, &|| false)).err().unwrap();
    assert!(e.to_string().contains("99-0"), "{e}");
}

#[test]
fn masking_the_top_heads_changes_the_answer_only_where_masked() {
    let mut model = LabModel::load_cpu(&files_of(&lab_dir(), "lab")).unwrap();
    let setup = setup(vec![san_francisco_needle()], kjv(), 16);
    let at = TestAt { needle_index: 0, length: 256, depth_percent: 25.0 };
    let before = block_on(lab::run_test(&mut model, &setup, at, None, &Probe::default(), &|| false)).unwrap().result;
    let everything: Vec<HeadId> = model.shape().iter().collect();
    let mask = model.head_mask(&MaskRequest { heads: everything.clone(), mode: "zero".into(), scope: "decode".into() }).unwrap();
    let after = block_on(lab::run_test(&mut model, &setup, at, Some(mask), &Probe::default(), &|| false)).unwrap().result;
    assert_eq!(after.record.masked_heads, everything);
    assert_ne!(after.record.generated_ids, before.record.generated_ids, "zeroing every head's output must change the answer");
    // The mask stays with the run it was given to: the next unmasked run is the first one again.
    let again = block_on(lab::run_test(&mut model, &setup, at, None, &Probe::default(), &|| false)).unwrap().result;
    assert_eq!(again.record.generated_ids, before.record.generated_ids);
    for (req, expect) in [
        (MaskRequest { heads: vec![], mode: "uniform".into(), scope: "decode".into() }, "no heads"),
        (MaskRequest { heads: vec![HeadId::new(0, 99)], mode: "uniform".into(), scope: "decode".into() }, "0-99"),
        (MaskRequest { heads: vec![HeadId::new(0, 0)], mode: "blur".into(), scope: "decode".into() }, "blur"),
    ] {
        let e = model.head_mask(&req).err().unwrap().to_string();
        assert!(e.contains(expect), "{e}");
    }
}

#[test]
fn bad_inputs_are_named_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel::new(TinyArch::Llama).write(dir.path()).unwrap();
    let mut model = LabModel::load_cpu(&files_of(dir.path(), "tiny")).unwrap();
    let max = model.spec.max_position_embeddings;
    let good = setup(vec![san_francisco_needle()], TINY_TEXT.to_string(), 4);
    let err = |r: Result<lab::SweepPlan, LabError>| r.err().map(|e| e.to_string()).unwrap_or_default();

    let mut wrong = san_francisco_needle();
    wrong.real_needle = "ride a cable car".into();
    let e = err(lab::plan_sweep(&model, &setup(vec![wrong], TINY_TEXT.into(), 4), "100", 1));
    assert!(e.contains("not part of the needle"), "{e}");
    let e = err(lab::plan_sweep(&model, &good, &format!("{max}"), 1));
    assert!(e.contains("max_position_embeddings") && e.contains("tiny"), "{e}");
    let e = err(lab::plan_sweep(&model, &good, "5", 1));
    assert!(e.contains("too short"), "{e}");
    let e = err(lab::plan_sweep(&model, &good, "abc", 1));
    assert!(e.contains("lengths"), "{e}");
    let e = err(lab::plan_sweep(&model, &setup(vec![san_francisco_needle()], "  ".into(), 4), "100", 1));
    assert!(e.contains("haystack is empty"), "{e}");
    let e = err(lab::plan_sweep(&model, &setup(vec![], TINY_TEXT.into(), 4), "100", 1));
    assert!(e.contains("no needle"), "{e}");
    let e = err(lab::plan_sweep(&model, &setup(vec![san_francisco_needle()], TINY_TEXT.into(), 0), "100", 1));
    assert!(e.contains("at least 1"), "{e}");
    let at = TestAt { needle_index: 3, length: 100, depth_percent: 50.0 };
    let e = block_on(lab::run_test(&mut model, &good, at, None, &Probe::default(), &|| false)).err().unwrap().to_string();
    assert!(e.contains("needle 4"), "{e}");
    // Cancellation stops a test before its next step.
    let at = TestAt { needle_index: 0, length: 200, depth_percent: 50.0 };
    let e = block_on(lab::run_test(&mut model, &good, at, None, &Probe::default(), &|| true)).err().unwrap();
    assert!(matches!(e, LabError::Cancelled), "{e}");
}

#[test]
fn model_urls_and_shard_indexes() {
    assert_eq!(lab::model_base_url("https://huggingface.co/org/model/").unwrap(), "https://huggingface.co/org/model/resolve/main");
    assert_eq!(lab::model_base_url("https://huggingface.co/org/model/tree/v1").unwrap(), "https://huggingface.co/org/model/resolve/v1");
    assert_eq!(lab::model_base_url("http://localhost:8080/models/x").unwrap(), "http://localhost:8080/models/x");
    assert!(lab::model_base_url("  ").is_err());
    let index = br#"{"weight_map": {"a": "model-2.safetensors", "b": "model-1.safetensors", "c": "model-2.safetensors"}}"#;
    assert_eq!(lab::shard_names(index).unwrap(), vec!["model-1.safetensors", "model-2.safetensors"]);
    for (bad, expect) in
        [(&b"{}"[..], "weight_map"), (br#"{"weight_map": {"a": "../x.safetensors"}}"#, "not a safetensors"), (b"nope", "not JSON")]
    {
        let e = lab::shard_names(bad).unwrap_err().to_string();
        assert!(e.contains(expect), "{e}");
    }
}

#[test]
fn models_too_large_for_wasm_are_refused_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel::new(TinyArch::Llama).write(dir.path()).unwrap();
    let mut files = files_of(dir.path(), "huge");
    files.safetensors[0].1 = vec![0; lab::CPU_WEIGHT_BYTES_LIMIT / 2 + 1];
    let e = LabModel::load_cpu(&files).err().unwrap().to_string();
    assert!(e.contains("too large") && e.contains("huge"), "{e}");
    let mut files = files_of(dir.path(), "broken");
    files.safetensors[0].1.truncate(64);
    let e = LabModel::load_cpu(&files).err().unwrap().to_string();
    assert!(e.contains("broken"), "{e}");
}

/// The families the WGSL forward lacks load on the page's CPU path: a test runs, its record has the
/// model's head grid (a Jamba's attention layers only), the last head of the grid can be viewed and
/// masked, and the summary sizes the page's heat map by that grid.
#[test]
fn every_family_runs_on_the_pages_cpu_path() {
    for arch in [TinyArch::Qwen3, TinyArch::Phi3, TinyArch::Gemma2, TinyArch::Gemma3, TinyArch::Jamba] {
        let dir = tempfile::tempdir().unwrap();
        TinyModel::new(arch).write(dir.path()).unwrap();
        let mut model = LabModel::load_cpu(&files_of(dir.path(), "tiny")).unwrap();
        let shape = model.shape();
        let summary = model.summary(0.0);
        assert_eq!((summary.layers, summary.heads), (shape.layers, shape.heads), "{arch:?}");
        if arch == TinyArch::Jamba {
            assert_eq!((shape.layers, model.spec.layers), (2, 4), "two of Jamba's four layers attend");
        }
        let good = setup(vec![san_francisco_needle()], TINY_TEXT.to_string(), 4);
        let at = TestAt { needle_index: 0, length: 250, depth_percent: 50.0 };
        let plain = block_on(lab::run_test(&mut model, &good, at, None, &Probe::default(), &|| false)).unwrap().result;
        assert!(plain.argmax.iter().all(|step| step.len() == shape.count()), "{arch:?}: one argmax per head of the grid");
        let last = HeadId::new(shape.layers - 1, shape.heads - 1);
        let view = block_on(lab::head_view(&mut model, &good, at, last, None, &|| false)).unwrap();
        assert_eq!(view.steps.len(), plain.argmax.len(), "{arch:?}");
        let mask = model.head_mask(&MaskRequest { heads: shape.iter().collect(), mode: "zero".into(), scope: "decode".into() }).unwrap();
        let masked = block_on(lab::run_test(&mut model, &good, at, Some(mask), &Probe::default(), &|| false)).unwrap().result;
        assert_eq!(masked.record.masked_heads.len(), shape.count(), "{arch:?}");
    }
}

/// The page's chain-of-thought demo answers each task as an independent decode does (the whole prompt
/// through the model crate's greedy loop, masked the same way), cutting and scoring the answer as
/// `headscope cot` does, and a decode-scope mask changes nothing but the answer.
#[test]
fn the_cot_demo_answers_as_an_independent_decode_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tasks = headscope_core::cot::read_cot_jsonl(&root.join("public/cot/two-hop.jsonl")).unwrap();
    let tasks = &tasks[..2];
    let mut model = LabModel::load_cpu(&files_of(&lab_dir(), "lab")).unwrap();
    let prompts = lab::cot_prompts(&model, tasks, true, 12, 40).unwrap();
    assert_eq!(prompts.len(), 4, "each task directly and step by step");
    let reference = LoadedModel::load(&lab_dir(), &LoadOptions::default()).unwrap();
    let mut transformer = reference.model;
    let top = MaskRequest { heads: vec![HeadId::new(5, 0), HeadId::new(5, 1)], mode: "uniform".into(), scope: "decode".into() };
    for request in [None, Some(top)] {
        let mask = request.as_ref().map(|r| model.head_mask(r).unwrap());
        for p in &prompts {
            let task = &tasks[p.task];
            let record = block_on(lab::cot_answer(&mut model, task, p, mask.clone(), &|| false)).unwrap().unwrap();
            transformer.set_mask(mask.clone()).unwrap();
            let trace =
                greedy_decode(&mut transformer, &p.ids, p.max_new_tokens, &reference.eos_token_ids, &Probe::default(), |_| true).unwrap();
            let text = reference.tokenizer.decode(&trace.tokens).unwrap();
            let expected = headscope_core::cot::CotRecord::scored(task, p.mode, text, p.ids.len(), trace.tokens.len());
            assert_eq!(record, expected, "task {} ({}), mask {:?}", task.id, p.mode.name(), request.as_ref().map(|r| &r.heads));
        }
    }
    // Cancelled between tokens: no record.
    assert!(block_on(lab::cot_answer(&mut model, &tasks[0], &prompts[1], None, &|| true)).unwrap().is_none());
    // A task the context cannot hold is refused by name before anything runs.
    let e = lab::cot_prompts(&model, tasks, true, 12, 1_000_000).err().unwrap().to_string();
    assert!(e.contains(&tasks[0].id) && e.contains("positions"), "{e}");
    assert!(lab::cot_prompts(&model, &[], true, 12, 40).is_err());
}

/// The page's data-free scores are RazorAttention's on the CLI's sequence: one value per head, each
/// a mean attention weight in [0, 1] (a head's induction and echo weights lie on different positions,
/// so they sum to at most 1).
#[test]
fn the_pages_data_free_scores_are_the_clis() {
    let mut model = LabModel::load_cpu(&files_of(&lab_dir(), "lab")).unwrap();
    let (induction, echo, period) = block_on(lab::repeated_scores(&mut model)).unwrap();
    assert_eq!(period, headscope_core::score::REPEATED_PERIOD);
    let reference = LoadedModel::load(&lab_dir(), &LoadOptions::default()).unwrap();
    let spec = &reference.model.spec().clone();
    let seq = headscope_core::score::RepeatedTokens::for_model(spec.vocab_size, spec.max_position_embeddings, spec.bos_token_id).unwrap();
    let mut transformer = reference.model;
    let (i2, e2) = block_on(headscope_engine::repeated::induction_and_echo(&mut transformer, &seq)).unwrap();
    assert_eq!((induction.len(), echo.len()), (model.shape().count(), model.shape().count()));
    for (a, b) in induction.iter().zip(&i2).chain(echo.iter().zip(&e2)) {
        assert!((a - b).abs() < 1e-6 && (0.0..=1.0).contains(a), "{a} vs {b}");
    }
    for (i, e) in induction.iter().zip(&echo) {
        assert!(i + e <= 1.0 + 1e-6, "{i} + {e}");
    }
    assert!(echo.iter().any(|&e| e > 0.0), "some head looks back at the repeated tokens");
}

/// The page's KV rerun: a window that covers the whole context changes nothing, a small one saves the
/// memory the plan says (the whole heads grow with the context, the others stop at sink + window), and
/// the model keeps the whole cache afterwards.
#[test]
fn the_kv_rerun_keeps_what_its_plan_says() {
    use headscope_web::lab::{KvPolicy, KvRequest};
    let mut model = LabModel::load_cpu(&files_of(&lab_dir(), "lab")).unwrap();
    let setup = setup(vec![san_francisco_needle()], kjv(), 12);
    let at = TestAt { needle_index: 0, length: 400, depth_percent: 50.0 };
    let heads = vec![HeadId::new(5, 0), HeadId::new(5, 1)];
    let wide = KvRequest { policy: KvPolicy::Heads { heads: heads.clone() }, sink: 4, window: 1024 };
    let r = block_on(lab::kv_rerun(&mut model, &setup, at, &wide, &|| false)).unwrap();
    assert_eq!(r.after.record.generated_ids, r.before.record.generated_ids, "a window over everything is the whole cache");
    let spec = model.spec.clone();
    let per_position = 2 * spec.head_dim as u64 * 4;
    let kv_heads = (spec.head_shape().layers * spec.kv_heads) as u64;
    assert_eq!((r.positions, r.kv_heads as u64), (412, kv_heads));
    assert_eq!(r.full_bytes, per_position * kv_heads * 412);
    // Query heads 5-0 and 5-1 share one KV head (GQA).
    assert_eq!(r.full_kv_heads, 1);

    let narrow = KvRequest { policy: KvPolicy::Heads { heads: heads.clone() }, sink: 4, window: 32 };
    let r = block_on(lab::kv_rerun(&mut model, &setup, at, &narrow, &|| false)).unwrap();
    assert_eq!(r.plan_bytes, per_position * (412 + (kv_heads - 1) * 36));
    let random = KvRequest { policy: KvPolicy::Random { like: heads.clone(), seed: 3 }, sink: 4, window: 32 };
    let q = block_on(lab::kv_rerun(&mut model, &setup, at, &random, &|| false)).unwrap();
    assert_eq!((q.full_kv_heads, q.plan_bytes), (1, r.plan_bytes), "random keeps as many KV heads whole");
    let none = KvRequest { policy: KvPolicy::Window, sink: 4, window: 32 };
    let w = block_on(lab::kv_rerun(&mut model, &setup, at, &none, &|| false)).unwrap();
    assert_eq!((w.full_kv_heads, w.plan_bytes), (0, per_position * kv_heads * 36));
    // Afterwards the model runs with the whole cache again.
    let again = block_on(lab::run_test(&mut model, &setup, at, None, &Probe::default(), &|| false)).unwrap().result;
    assert_eq!(again.record.generated_ids, r.before.record.generated_ids);
    let bad = KvRequest { policy: KvPolicy::Window, sink: 4, window: 0 };
    assert!(block_on(lab::kv_rerun(&mut model, &setup, at, &bad, &|| false)).err().unwrap().to_string().contains("window"));
}
