//! One function per fuzz target: each takes arbitrary bytes as one outside input and runs it through the
//! same code the CLI and the page run on that input. None may panic, hang or allocate without bound;
//! errors are the right answer to most inputs. `fuzz/` wraps each in a cargo-fuzz target (nightly);
//! `tests/seeds.rs` runs every seed and thousands of mutants through them on stable, in CI.
//!
//! Each returns whether the input was accepted (parsed, loaded, planned), so that tests can check that
//! the seeds are valid inputs. Seeds come from the repository's own files ([`seeds`]).

use headscope_core::cot::{parse_cot_jsonl, CotMode, CotRecord};
use headscope_core::files::duo_tsv::{format_duo_tsv, parse_duo_tsv};
use headscope_core::files::head_scores::parse_head_scores;
use headscope_core::files::{RunInfo, TestLog};
use headscope_core::niah::{parse_needles_jsonl, Needle, NiahBuilder};
use headscope_core::prompt::PromptFormat;
use headscope_core::rng::SplitMix64;
use headscope_core::{HeadShape, ScoreKind, TextTokenizer};
use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{HfTokenizer, LoadOptions, LoadedModel, ModelFiles};
use headscope_web::lab::{self, LabModel};
use headscope_web::protocol::Request;
use headscope_web::protocol::{TestResult, TestSetup};
use headscope_web::session::{SavedModel, SavedRun, SavedSession};
use headscope_web::share::PageState;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A target: takes one input, says whether it was accepted.
pub type Target = fn(&[u8]) -> bool;

/// The targets, by name: `fuzz/fuzz_targets/NAME.rs` calls the function of that name.
pub const TARGETS: &[(&str, Target)] = &[
    ("config_json", config_json),
    ("safetensors", safetensors),
    ("tokenizer_json", tokenizer_json),
    ("tokenizer_config", tokenizer_config),
    ("generation_config", generation_config),
    ("needles_jsonl", needles_jsonl),
    ("haystack", haystack),
    ("head_scores", head_scores),
    ("duo_tsv", duo_tsv),
    ("cot_tasks", cot_tasks),
    ("tests_jsonl", tests_jsonl),
    ("run_json", run_json),
    ("recipe", recipe),
    ("worker_request", worker_request),
    ("share_state", share_state),
    ("saved_session", saved_session),
];

/// The repository root (for the seed files).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A tiny random Llama model's files, by name, made once.
pub fn tiny_files() -> &'static Vec<(String, Vec<u8>)> {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary folder");
        TinyModel::new(TinyArch::Llama).write(dir.path()).expect("the tiny model writes");
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .expect("the tiny model's folder")
            .map(|e| {
                let e = e.expect("a folder entry");
                (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("a tiny model file"))
            })
            .collect();
        files.sort();
        files
    })
}

/// Loads the tiny model with file `name` replaced by `data` (added if the model has none), through the
/// loader the page uses (in memory) and the CLI's checks.
fn load_with(name: &str, data: &[u8]) -> bool {
    let mut files: Vec<(String, Vec<u8>)> = tiny_files().iter().filter(|(n, _)| n != name).cloned().collect();
    files.push((name.to_owned(), data.to_vec()));
    let Ok(files) = ModelFiles::from_named("fuzz", files) else { return false };
    LoadedModel::from_files(&files, &LoadOptions::default()).is_ok()
}

/// `config.json` of a model: read into a spec, and loaded beside the tiny model's other files. Accepted
/// when the spec reads (a config of another family or size reads but does not fit the tiny weights).
pub fn config_json(data: &[u8]) -> bool {
    let spec =
        std::str::from_utf8(data).ok().map(|text| headscope_engine::spec::ModelSpec::from_config_json(text, Path::new("config.json")));
    let loaded = load_with("config.json", data);
    loaded || spec.is_some_and(|s| s.is_ok())
}

/// A `model.safetensors` file: its header, tensor table and data.
pub fn safetensors(data: &[u8]) -> bool {
    load_with("model.safetensors", data)
}

/// The lab model's tokenizer, made once (for the text targets).
fn lab_tokenizer() -> &'static HfTokenizer {
    static TOKENIZER: OnceLock<HfTokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| HfTokenizer::from_dir(&repo().join("public/models/lab")).expect("the lab model's tokenizer"))
}

/// `tokenizer.json`: loaded, then used to encode and decode.
pub fn tokenizer_json(data: &[u8]) -> bool {
    let Ok(t) = HfTokenizer::from_bytes(data, None) else { return false };
    let Ok(e) = t.encode("The best thing to do in San Francisco is to eat a sandwich.", true) else { return false };
    t.decode(&e.ids).is_ok()
}

/// `tokenizer_config.json`, chat template included: loaded beside a valid tokenizer, the template
/// rendered.
pub fn tokenizer_config(data: &[u8]) -> bool {
    let tokenizer = tiny_files().iter().find(|(n, _)| n == "tokenizer.json").map(|(_, b)| b.as_slice()).unwrap_or_default();
    let Ok(t) = HfTokenizer::from_bytes(tokenizer, Some(data)) else { return false };
    t.chat_template().is_none_or(|template| template.render_user_turn("Context. What is the answer?").is_ok())
}

/// `generation_config.json`.
pub fn generation_config(data: &[u8]) -> bool {
    load_with("generation_config.json", data)
}

/// A needles JSONL file: parsed, and each needle built into a prompt as a sweep's check does.
pub fn needles_jsonl(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Ok(needles) = parse_needles_jsonl(text, Path::new("needles.jsonl")) else { return false };
    let Ok(mut builder) = NiahBuilder::new(lab_tokenizer(), PromptFormat::Plain, &["A haystack of plain words. ".repeat(40)]) else {
        return false;
    };
    needles.iter().take(8).map(|n| n.answer_range().is_ok() & builder.build(n, 300, 50.0).is_ok()).fold(true, |a, b| a & b)
}

/// A haystack text (any bytes, read as the CLI reads a file: lossy UTF-8): a prompt built at two depths.
pub fn haystack(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data).into_owned();
    let needle = Needle {
        needle: "The best thing to do in San Francisco is eat a sandwich.".into(),
        question: "What is the best thing to do in San Francisco?".into(),
        real_needle: "eat a sandwich".into(),
    };
    let Ok(mut builder) = NiahBuilder::new(lab_tokenizer(), PromptFormat::Plain, &[text]) else { return false };
    [0.0, 61.0].iter().map(|&depth| builder.build(&needle, 200, depth).is_ok()).fold(true, |a, b| a & b)
}

/// A head-score JSON file (`{"layer-head": [score per test]}`).
pub fn head_scores(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    parse_head_scores(text, Path::new("head_scores.json")).map(|s| s.ranked()).is_ok()
}

/// A DuoAttention head file (`full_attention_heads.tsv`), read for KV groups of 1 and 2 query heads
/// and written back.
pub fn duo_tsv(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let mut accepted = true;
    for heads_per_kv in [1, 2] {
        match parse_duo_tsv(text, Path::new("full_attention_heads.tsv"), heads_per_kv) {
            Ok(s) => accepted &= format_duo_tsv(&s, heads_per_kv).is_ok(),
            Err(_) => accepted = false,
        }
    }
    accepted
}

/// A chain-of-thought task file: parsed, each task laid out in both modes, its reasoning cut and
/// scored as a generated answer would be.
pub fn cot_tasks(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let Ok(tasks) = parse_cot_jsonl(text, Path::new("tasks.jsonl")) else { return false };
    tasks.iter().take(16).all(|t| {
        CotMode::ALL.iter().all(|&m| !t.message(m).is_empty())
            && CotRecord::scored(t, CotMode::StepByStep, t.reasoning.clone(), 1, 1).correct
    })
}

/// The seed records with the fields of a run that measured every score (`repeat_hits`, `soft_mass`, `qr`).
fn seed_scored_records() -> Vec<u8> {
    let text = std::fs::read_to_string(repo().join("crates/headscope-fuzz/seeds/tests.jsonl")).expect("the records seed");
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut r: headscope_core::files::TestRecord = serde_json::from_str(line).expect("a seed record");
        let head = r.hits.keys().next().copied().unwrap_or(headscope_core::HeadId::new(0, 0));
        r.repeat_hits = Some(r.hits.keys().map(|&h| (h, 1)).collect());
        r.soft_mass = Some([(head, 0.75)].into_iter().collect());
        r.qr = Some([(head, -0.125)].into_iter().collect());
        out.push_str(&serde_json::to_string(&r).expect("a record"));
        out.push('\n');
    }
    out.into_bytes()
}

/// `tests.jsonl` as read back on resume, and each record's scores of every kind that records carry
/// over a 2 x 4 grid (eq. 1 and official from the hits and repeats, soft and qr from their values).
pub fn tests_jsonl(data: &[u8]) -> bool {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("tests.jsonl");
    std::fs::write(&path, data).expect("a temporary file");
    let Ok(log) = TestLog::open(&path) else { return false };
    let shape = HeadShape::new(2, 4);
    let kinds = [ScoreKind::Official, ScoreKind::Soft, ScoreKind::Qr];
    for r in log.records() {
        // Kinds a record was not measured for are errors; they must never panic.
        for kind in kinds {
            let _ = r.scores_of_kind(shape, kind);
        }
    }
    log.records().iter().map(|r| r.head_hits(shape).is_ok()).fold(true, |a, b| a & b)
}

/// `run.json` as a rerun reads it: compared with the run about to start.
pub fn run_json(data: &[u8]) -> bool {
    let Some(info) = seed_run_info() else { return false };
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("run.json");
    std::fs::write(&path, data).expect("a temporary file");
    let same_run = info.check_and_write(&path).is_ok();
    serde_json::from_slice::<RunInfo>(data).is_ok() && same_run
}

/// A training recipe (TOML).
pub fn recipe(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    headscope_train::check_recipe(text, Path::new("recipe.toml")).is_ok()
}

thread_local! {
    /// The page's model for the worker target: the tiny model, loaded on the CPU engine as the page loads one.
    static LAB: Option<LabModel> = ModelFiles::from_named("tiny", tiny_files().clone()).ok().and_then(|f| LabModel::load_cpu(&f).ok());
}

/// A message to the page's worker (JSON of [`Request`], as the page's structured clone carries it): a
/// sweep is planned, a mask and a test builder made, as the worker does before running anything; a
/// model source's URL or shard index is read.
pub fn worker_request(data: &[u8]) -> bool {
    let _ = lab::shard_names(data);
    let Ok(request) = serde_json::from_slice::<Request>(data) else { return false };
    LAB.with(|lab| {
        let Some(model) = lab else { return false };
        let mask_ok = |m: &Option<headscope_web::protocol::MaskRequest>| m.as_ref().is_none_or(|m| model.head_mask(m).is_ok());
        match &request {
            Request::Sweep { setup, lengths, depths, mask, .. } => lab::plan_sweep(model, setup, lengths, *depths).is_ok() & mask_ok(mask),
            Request::Cot { tasks, masks, plain, max_new_direct, max_new_step } => {
                let masks_ok = masks.iter().all(|m| mask_ok(&m.mask));
                lab::cot_prompts(model, tasks, *plain, *max_new_direct, *max_new_step).is_ok() & masks_ok
            }
            Request::KvRerun { setup, .. } => model.builder(&model.tokenizer, setup).is_ok(),
            Request::Rerun { setup, mask, .. } => model.head_mask(mask).is_ok() & model.builder(&model.tokenizer, setup).is_ok(),
            Request::HeadView { setup, mask, head, .. } => {
                model.shape().check(std::slice::from_ref(head)).is_ok() & mask_ok(mask) & model.builder(&model.tokenizer, setup).is_ok()
            }
            Request::LoadModel { source: headscope_web::protocol::ModelSource::Url { url }, .. } => lab::model_base_url(url).is_ok(),
            _ => true,
        }
    })
}

/// The page's state as a shared link's fragment carries it (compressed, base64url) or as the browser
/// stores it (JSON, when the input opens with `{`). An accepted state must survive its own link.
pub fn share_state(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else { return false };
    let read = if text.starts_with('{') { PageState::from_json(text) } else { PageState::from_link_text(text) };
    let Ok(state) = read else { return false };
    let (link, dropped) = state.to_link_text();
    let expected = if dropped { PageState { haystack: None, ..state.clone() } } else { state.clone() };
    assert_eq!(PageState::from_link_text(&link).as_ref(), Ok(&expected), "a state does not survive its own link");
    true
}

/// A session file as the page opens it ("Open a saved session"). An accepted session must fit a
/// model of its own shape and be written back to a file that opens again.
pub fn saved_session(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let Ok(session) = SavedSession::from_json("session.json", &text) else { return false };
    assert!(session.fits(session.model.layers, session.model.heads, &session.model.hash) == Ok(true));
    assert!(SavedSession::from_json("again.json", &session.to_json()).is_ok(), "a session does not open from its own file");
    true
}

/// A saved session of the seed `tests.jsonl` (the tiny model, 2 layers x 4 heads): an unmasked run
/// and a masked one, as the seed of [`saved_session`].
fn seed_session() -> SavedSession {
    let text = std::fs::read_to_string(repo().join("crates/headscope-fuzz/seeds/tests.jsonl")).unwrap_or_default();
    let results: Vec<TestResult> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .map(|record: headscope_core::files::TestRecord| TestResult {
            answer: vec![],
            argmax: vec![vec![0; 8]; record.generated_ids.len()],
            prefill_tokens: record.prompt_tokens,
            prefill_seconds: 0.01,
            decode_tokens: record.generated_ids.len(),
            decode_seconds: 0.01,
            record,
        })
        .collect();
    let state = seed_page_state();
    let setup = TestSetup {
        needles: vec![Needle { needle: state.needle.clone(), question: state.question.clone(), real_needle: state.answer.clone() }],
        haystack: "A short haystack. ".repeat(20),
        max_new_tokens: 24,
        plain: true,
    };
    let run = SavedRun {
        origin: String::new(),
        name: "run 1: no heads masked".into(),
        setup,
        lengths: vec![200],
        depths: vec![0.0, 100.0],
        total: results.len(),
        haystack_tokens: 80,
        mask: None,
        results,
        started: 0.0,
        done: Some(serde_json::json!({"seconds": 1.0})),
    };
    let masked = SavedRun {
        origin: "top-2".into(),
        name: "run 2: 2 heads masked (top-2; uniform)".into(),
        mask: Some(headscope_web::protocol::MaskRequest {
            heads: vec![headscope_core::HeadId::new(1, 0), headscope_core::HeadId::new(1, 1)],
            mode: "uniform".into(),
            scope: "decode".into(),
        }),
        ..run.clone()
    };
    let model = SavedModel { name: "tiny".into(), hash: "0123".into(), layers: 2, heads: 4 };
    let state = PageState { masked: vec!["1-0".into()], selected_head: Some("1-1".into()), ..state };
    SavedSession::new(model, state, vec![run, masked], 1, Some(0))
}

/// A page state with every field set, as the seeds of [`share_state`].
fn seed_page_state() -> PageState {
    PageState {
        needle: "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.".into(),
        question: "What is the best thing to do in San Francisco?".into(),
        answer: "eat a sandwich and sit in Dolores Park on a sunny day".into(),
        haystack: Some(
            String::from_utf8_lossy(&std::fs::read(repo().join("public/haystacks/village.txt")).unwrap_or_default()).into_owned(),
        ),
        lengths: "256:1024:3".into(),
        depths: "5".into(),
        max_new: "24".into(),
        gate: "0.5".into(),
        masked: vec!["5-0".into(), "5-1".into()],
        mask_origin: "top-2".into(),
        mask_mode: "uniform".into(),
        mask_scope: "decode".into(),
        mask_k: "2".into(),
        random_k: "2".into(),
        seed: "0".into(),
        selected_head: Some("5-0".into()),
        ..PageState::default()
    }
}

/// The seed `run.json`, parsed once: the run a rerun compares every input with.
fn seed_run_info() -> Option<&'static RunInfo> {
    static INFO: OnceLock<Option<RunInfo>> = OnceLock::new();
    INFO.get_or_init(|| serde_json::from_slice(&seed_run_json()).ok()).as_ref()
}

/// The `run.json` of a `detect` run of the tiny model (`seeds/run.json`).
fn seed_run_json() -> Vec<u8> {
    std::fs::read(repo().join("crates/headscope-fuzz/seeds/run.json")).unwrap_or_default()
}

/// The seed inputs of target `name`: the repository's own files of that kind.
pub fn seeds(name: &str) -> Vec<Vec<u8>> {
    let read = |rel: &str| std::fs::read(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let tiny = |file: &str| tiny_files().iter().find(|(n, _)| n == file).map(|(_, b)| b.clone()).unwrap_or_default();
    match name {
        "config_json" => {
            // Besides the tiny Llama, a published config of each family with its own fields (LongRoPE's
            // factor lists, Gemma's defaults and per-layer RoPE, Gemma-3's nested text_config, Jamba's
            // periods and Mamba shapes).
            let mut configs = vec![tiny("config.json")];
            for family in ["qwen3-8b", "phi-3-128k", "gemma-2-9b", "gemma-3-4b", "jamba-v0.1"] {
                configs.push(read(&format!("bench/configs/{family}/config.json")));
            }
            configs
        }
        "safetensors" => vec![tiny("model.safetensors")],
        "tokenizer_json" => vec![tiny("tokenizer.json")],
        "tokenizer_config" => vec![
            tiny("tokenizer_config.json"),
            br#"{"bos_token":"<s>","eos_token":"</s>","chat_template":"{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"}"#.to_vec(),
        ],
        "generation_config" => vec![read("public/models/lab/generation_config.json")],
        "needles_jsonl" => vec![read("public/needles/heldout.jsonl"), read("public/needles/handwritten.jsonl")],
        "haystack" => vec![read("public/haystacks/village.txt"), read("public/haystacks/kjv-john.txt")[..4000].to_vec()],
        "head_scores" => vec![read("crates/headscope-fuzz/seeds/head_scores.json")],
        "duo_tsv" => vec![b"0.1000000000\t0.9000000000\n0.3000000000\t0.2000000000\n".to_vec()],
        "cot_tasks" => vec![read("public/cot/word-problems.jsonl"), read("public/cot/two-hop.jsonl")],
        "tests_jsonl" => vec![read("crates/headscope-fuzz/seeds/tests.jsonl"), seed_scored_records()],
        "run_json" => vec![seed_run_json()],
        "recipe" => vec![read("public/models/lab/recipe.toml"), read("docs/lab-v4/recipe-next-stage5.toml")],
        "share_state" => {
            let state = seed_page_state();
            vec![state.to_link_text().0.into_bytes(), state.to_json().into_bytes()]
        }
        "saved_session" => vec![seed_session().to_json().into_bytes()],
        "worker_request" => vec![read("crates/headscope-fuzz/seeds/sweep-request.json"), read("crates/headscope-fuzz/seeds/head-view-request.json")],
        other => panic!("no fuzz target {other}"),
    }
}

/// One mutant of `seed` (1-3 edits: a truncation, a byte set to a character significant to JSON or TOML,
/// an inserted extreme value or broken structure, a flipped bit), deterministic in `rng`: what the
/// stable tests feed the parsers.
pub fn mutant(seed: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"{}[]\":,=0-.\\ e\n#'\x00\xff";
    const INSERTS: [&[u8]; 10] = [
        b"1e999",
        b"-1",
        b"18446744073709551616",
        b"null",
        b"\"\\ud800\"",
        b"[[[[[[[[[[[[[[[[",
        b"{\"\":",
        b"\xff\xfe",
        b"4294967296",
        b"\"\"",
    ];
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(4) {
            0 => m.truncate(rng.below(m.len() as u64 + 1) as usize),
            1 => {
                let at = rng.below(m.len().max(1) as u64) as usize;
                if at < m.len() {
                    m[at] = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
                }
            }
            2 => {
                let at = rng.below(m.len() as u64 + 1) as usize;
                let what = INSERTS[rng.below(INSERTS.len() as u64) as usize];
                m.splice(at..at, what.iter().copied());
            }
            _ => {
                let at = rng.below(m.len().max(1) as u64) as usize;
                if at < m.len() {
                    m[at] ^= 1 << rng.below(8);
                }
            }
        }
    }
    m
}
