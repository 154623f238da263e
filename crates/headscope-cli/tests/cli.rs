//! End to end: the `headscope` binary on tiny random models in the Hugging Face layout. Checks every
//! output file against what it must contain, resume, masking, and that bad input gives a clear error.

use headscope_core::files::{head_scores_from_records, read_head_scores, RunInfo, TestLog};
use headscope_core::{HeadShape, TextTokenizer};
use headscope_model::HfTokenizer;
use std::path::{Path, PathBuf};
use std::process::Command;
mod common;
use common::{fails, ok};

fn tiny(dir: &Path, arch: &str, seed: u64, chat: bool) -> String {
    let d = dir.join(format!("{arch}-{seed}-{chat}"));
    let mut args = vec!["tiny-model", "--out", d.to_str().unwrap(), "--arch", arch];
    let seed_s = seed.to_string();
    args.extend(["--seed", &seed_s]);
    if chat {
        args.push("--chat");
    }
    ok(&args);
    d.to_string_lossy().into_owned()
}

const SWEEP: [&str; 6] = ["--lengths", "160:400:3", "--depths", "3", "--max-new-tokens", "8"];

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_string_lossy().into_owned()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).map(|b| b.starts_with(b"\x89PNG\r\n\x1a\n")).unwrap_or(false)
}

#[test]
fn detect_writes_every_file_correctly_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama", 0, false);
    let out = tmp.path().join("detect");
    let out_s = out.to_str().unwrap();
    let mut args = vec!["detect", "--model", &model, "--out", out_s, "--gate", "0", "--save-prompts"];
    args.extend(SWEEP);
    let (stdout, stderr) = ok(&args);
    assert!(stdout.contains("9 tests (9 run now, 0 from earlier runs)"), "{stdout}");
    assert!(stderr.contains("[1/9]") && stderr.contains("[9/9]"), "progress per test: {stderr}");
    for f in ["head_scores.json", "tests.jsonl", "heads.png", "niah.png", "run.json"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert!(is_png(&out.join("heads.png")) && is_png(&out.join("niah.png")));

    // tests.jsonl: one record per cell, exact lengths, the answer span decodes to the answer, hits are eq. 1 hits.
    let log = TestLog::open(&out.join("tests.jsonl")).unwrap();
    let records = log.records();
    assert_eq!(records.len(), 9);
    let tok = HfTokenizer::from_dir(Path::new(&model)).unwrap();
    let mut ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 9);
    for r in records {
        let prompt = r.prompt_ids.as_ref().expect("--save-prompts stores prompts");
        assert_eq!(prompt.len(), r.length);
        assert_eq!(r.prompt_tokens, r.length);
        assert_eq!(headscope_core::niah::prompt_hash(prompt), r.prompt_hash);
        let answer = tok.decode(&prompt[r.answer_tokens[0]..r.answer_tokens[1]]).unwrap();
        assert_eq!(answer.trim(), "eat a sandwich and sit in Dolores Park on a sunny day");
        assert!(r.needle_tokens[0] <= r.answer_tokens[0] && r.answer_tokens[1] <= r.needle_tokens[1]);
        assert!(!r.generated_ids.is_empty() && r.generated_ids.len() <= 8);
        assert_eq!(r.answer, tok.decode(&r.generated_ids).unwrap());
        assert!((0.0..=1.0).contains(&r.recall));
        for (head, positions) in &r.hits {
            for &pos in positions {
                let pos = pos as usize;
                assert!((r.answer_tokens[0]..r.answer_tokens[1]).contains(&pos), "{head} hit outside the span");
                assert!(r.generated_ids.contains(&prompt[pos]), "{head} hit a token never generated");
            }
        }
        assert!(r.masked_heads.is_empty());
    }

    // head_scores.json: the official format, one score per test (gate 0), equal to re-aggregating tests.jsonl.
    let scores = read_head_scores(&out.join("head_scores.json")).unwrap();
    assert_eq!(scores.shape(), HeadShape::new(2, 4));
    assert_eq!(scores.tests(), 9);
    assert_eq!(scores, head_scores_from_records(HeadShape::new(2, 4), records, 0.0).unwrap());
    let text = std::fs::read_to_string(out.join("head_scores.json")).unwrap();
    assert!(text.starts_with("{\"0-0\": ["), "{}", &text[..20]);

    // run.json: provenance.
    let info: RunInfo = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!((info.command.as_str(), info.model.layers, info.model.heads, info.model.kv_heads), ("detect", 2, 4, 2));
    assert_eq!(info.prompt_format, "plain");
    assert_eq!(info.model.hash.len(), 16);

    // A second run does no work and changes nothing.
    let before = std::fs::read(out.join("tests.jsonl")).unwrap();
    let (stdout, stderr) = ok(&args);
    assert!(stdout.contains("(0 run now, 9 from earlier runs)"), "{stdout}");
    assert!(stderr.contains("nothing to run") && !stderr.contains("loading"), "{stderr}");
    assert_eq!(std::fs::read(out.join("tests.jsonl")).unwrap(), before);

    // A run cut off mid-write resumes: finished tests stay as they were, the rest run.
    let text = String::from_utf8(before.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(out.join("tests.jsonl"), format!("{}\n{}\n{}\n{}", lines[0], lines[1], lines[2], &lines[3][..40])).unwrap();
    let (stdout, _) = ok(&args);
    assert!(stdout.contains("9 tests (6 run now, 3 from earlier runs)"), "{stdout}");
    let after = std::fs::read_to_string(out.join("tests.jsonl")).unwrap();
    assert!(after.starts_with(&format!("{}\n{}\n{}\n", lines[0], lines[1], lines[2])));
    let resumed = TestLog::open(&out.join("tests.jsonl")).unwrap();
    assert_eq!(resumed.records().len(), 9);
    // Greedy decoding is deterministic: the rerun tests produce the same tokens as the first time.
    for r in records {
        assert_eq!(resumed.get(&r.id).unwrap().generated_ids, r.generated_ids, "{}", r.id);
    }

    // Extending the sweep in the same directory adds only the new cells.
    let mut more = vec!["detect", "--model", &model, "--out", out_s, "--gate", "0", "--save-prompts"];
    more.extend(["--lengths", "160:400:3", "--depths", "5", "--max-new-tokens", "8"]);
    let (stdout, _) = ok(&more);
    assert!(stdout.contains("15 tests (6 run now, 9 from earlier runs)"), "{stdout}");

    // Another model in the same directory is refused rather than mixed in.
    let other = tiny(tmp.path(), "llama", 1, false);
    let mut args2 = vec!["detect", "--model", &other, "--out", out_s];
    args2.extend(SWEEP);
    fails(&args2, "different run");
}

#[test]
fn niah_masks_heads_and_records_them() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama", 2, true);
    let clean = tmp.path().join("clean");
    let mut a = vec!["niah", "--model", &model, "--out", clean.to_str().unwrap()];
    a.extend(SWEEP);
    let (stdout, _) = ok(&a);
    assert!(stdout.contains("NIAH pass rate") && stdout.contains("no heads masked"), "{stdout}");
    let clean_log = TestLog::open(&clean.join("tests.jsonl")).unwrap();
    let info: RunInfo = serde_json::from_str(&std::fs::read_to_string(clean.join("run.json")).unwrap()).unwrap();
    assert_eq!(info.prompt_format, "chat", "the chat template is used when the model has one");

    for (mode, scope) in [("uniform", "decode"), ("zero", "all")] {
        let out = tmp.path().join(format!("masked-{mode}"));
        let mut a = vec![
            "niah",
            "--model",
            &model,
            "--out",
            out.to_str().unwrap(),
            "--mask-heads",
            "0-0,0-1,0-2,0-3,1-1",
            "--mask-mode",
            mode,
            "--mask-scope",
            scope,
        ];
        a.extend(SWEEP);
        let (stdout, _) = ok(&a);
        assert!(stdout.contains("5 heads masked") && stdout.contains("0-0,0-1,0-2,0-3,1-1"), "{stdout}");
        let log = TestLog::open(&out.join("tests.jsonl")).unwrap();
        assert_eq!(log.records().len(), 9);
        assert!(log.records().iter().all(|r| r.masked_heads.len() == 5 && r.masked_heads[4].to_string() == "1-1"));
        let changed = log.records().iter().filter(|r| clean_log.get(&r.id).unwrap().generated_ids != r.generated_ids).count();
        assert!(changed > 0, "{mode}/{scope}: masking a layer's every head changed no answer");
        let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["tests"], 9);
        assert!(is_png(&out.join("niah.png")));
        let info: RunInfo = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
        let mask = info.mask.expect("run.json records the mask");
        assert_eq!((mask.mode.as_str(), mask.scope.as_str(), mask.heads.len()), (mode, scope, 5));
    }

    // Top-K and seeded random-K from a score file.
    let det = tmp.path().join("det");
    let mut d = vec!["detect", "--model", &model, "--out", det.to_str().unwrap(), "--gate", "0"];
    d.extend(SWEEP);
    ok(&d);
    let scores = p(&det, "head_scores.json");
    let top = tmp.path().join("top");
    let mut t = vec!["niah", "--model", &model, "--out", top.to_str().unwrap(), "--mask-top", "2", "--scores", &scores];
    t.extend(SWEEP);
    ok(&t);
    let ranked: Vec<String> = read_head_scores(Path::new(&scores)).unwrap().ranked().iter().take(2).map(|(h, _)| h.to_string()).collect();
    let log = TestLog::open(&top.join("tests.jsonl")).unwrap();
    assert_eq!(log.records()[0].masked_heads.iter().map(|h| h.to_string()).collect::<Vec<_>>(), ranked);

    let draw = |seed: &str, dir: &str| -> Vec<String> {
        let out = tmp.path().join(dir);
        let mut r =
            vec!["niah", "--model", &model, "--out", out.to_str().unwrap(), "--mask-random", "3", "--seed", seed, "--scores", &scores];
        r.extend(SWEEP);
        ok(&r);
        TestLog::open(&out.join("tests.jsonl")).unwrap().records()[0].masked_heads.iter().map(|h| h.to_string()).collect()
    };
    let a = draw("7", "r7");
    assert_eq!(a.len(), 3);
    assert_eq!(draw("7", "r7b"), a, "the same seed draws the same heads");
}

#[test]
fn bad_input_gets_a_clear_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama", 0, false);
    let out = p(tmp.path(), "out");
    let run = |extra: &[&str], expect: &str| {
        let mut a = vec!["detect", "--model", &model, "--out", &out, "--depths", "3", "--max-new-tokens", "8"];
        if !extra.contains(&"--lengths") {
            a.extend(["--lengths", "160:400:3"]);
        }
        a.extend(extra);
        fails(&a, expect);
    };
    // Unsupported architecture.
    let gpt2 = tmp.path().join("gpt2");
    std::fs::create_dir_all(&gpt2).unwrap();
    std::fs::write(gpt2.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    fails(&["detect", "--model", gpt2.to_str().unwrap(), "--out", &out], "model_type `gpt2` is not supported");
    fails(&["detect", "--model", &p(tmp.path(), "nope"), "--out", &out], "model directory");
    // Context longer than the model's maximum (2048 positions).
    run(&["--lengths", "4000"], "the model handles at most 2048 (max_position_embeddings");
    // Too short for the needle.
    run(&["--lengths", "20"], "too short");
    // Needles: missing file, malformed, empty, answer not in the needle.
    run(&["--needles", &p(tmp.path(), "none.jsonl")], "none.jsonl");
    let write = |name: &str, text: &str| {
        let f = tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        f.to_string_lossy().into_owned()
    };
    run(&["--needles", &write("bad.jsonl", "{\"needle\": 1}\n")], "line 1");
    run(&["--needles", &write("empty.jsonl", "\n")], "no needles");
    run(
        &["--needles", &write("blank.jsonl", r#"{"needle": "", "question": "q?", "real_needle": "x"}"#)],
        "the needle is empty (`needle` in a needles file)",
    );
    run(
        &["--needles", &write("nf.jsonl", r#"{"needle": "The key is blue.", "question": "Key?", "real_needle": "red"}"#)],
        "not part of the needle",
    );
    run(&["--haystack", &write("empty.txt", "   \n")], "haystack is empty");
    run(&["--haystack-start", "150"], "haystack start 150 % is outside 0..100");
    run(&["--lengths", "5:1:2"], "the context lengths `5:1:2`");
    run(&["--dtype", "f64"], "dtype `f64`");
    run(&["--device", "tpu"], "--device `tpu`");
    fails(&["niah", "--model", &model, "--out", &out, "--mask-heads", "9-9"], "head 9-9 does not exist");
    fails(&["niah", "--model", &model, "--out", &out, "--mask-heads", "x"], "not a head");
    let wrong = write("wrong.json", r#"{"0-0": [1], "0-1": [0]}"#);
    fails(&["niah", "--model", &model, "--out", &out, "--mask-top", "1", "--scores", &wrong], "the model has 2 x 4");
    let broken = write("broken.json", "{\"0-0\": [1]");
    fails(&["niah", "--model", &model, "--out", &out, "--mask-top", "1", "--scores", &broken], "not JSON");
    // No finished result was lost or made up along the way.
    assert!(!PathBuf::from(&out).join("head_scores.json").exists());
}

/// --haystack-start runs the same needles in another stretch of the haystack: the prompt's context
/// begins with the chosen line, and run.json's haystack hash tells the run from one at the start.
#[test]
fn a_sweep_can_read_the_haystack_from_another_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama", 0, false);
    let lines: Vec<String> = (0..40).map(|i| format!("Line {i} of the haystack tells of the river and the mill.")).collect();
    let hay = tmp.path().join("hay.txt");
    std::fs::write(&hay, lines.join("\n")).unwrap();
    let tok = HfTokenizer::from_dir(Path::new(&model)).unwrap();
    let run = |name: &str, start: Option<&str>| {
        let out = tmp.path().join(name);
        let mut a = vec!["niah", "--model", &model, "--out", out.to_str().unwrap(), "--haystack", hay.to_str().unwrap()];
        a.extend(["--lengths", "200", "--depths", "1", "--max-new-tokens", "2", "--plain", "--save-prompts"]);
        if let Some(s) = start {
            a.extend(["--haystack-start", s]);
        }
        ok(&a);
        let log = TestLog::open(&out.join("tests.jsonl")).unwrap();
        let prompt = tok.decode(log.records()[0].prompt_ids.as_ref().unwrap()).unwrap();
        let info: RunInfo = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
        (prompt, info.haystack_hash)
    };
    let (first, first_hash) = run("start", None);
    let (middle, middle_hash) = run("middle", Some("50"));
    let at = |p: &str, line: &str| p.find(line).unwrap_or(usize::MAX);
    assert!(at(&first, "Line 0 ") < at(&first, "Line 1 "), "{first}");
    // 50 % of the text lands inside line 20 (lines 10 and up are a byte longer): line 21 comes first.
    assert!(at(&middle, "Line 21 ") < at(&middle, "Line 22 ") && middle.contains("Line 22 "), "{middle}");
    assert!(
        !middle.contains("Line 0 ") && !middle.contains("Line 20 "),
        "a 200-token prompt reads only the stretch from line 21: {middle}"
    );
    assert_ne!(first_hash, middle_hash);
}

/// Without --model, the commands use the bundled lab model (run from the repository root).
#[test]
fn the_bundled_lab_model_is_the_default() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    assert!(root.join("public/models/lab/model.safetensors").exists(), "the lab model ships with the repository");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lab");
    let o = Command::new(env!("CARGO_BIN_EXE_headscope"))
        .current_dir(&root)
        .args(["detect", "--out", out.to_str().unwrap(), "--lengths", "300", "--depths", "2", "--max-new-tokens", "16", "--gate", "0"])
        .args(["--haystack", "public/haystacks/kjv-john.txt", "--plain"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let info: RunInfo = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!((info.model.dir.as_str(), info.model.layers, info.model.heads, info.model.kv_heads), ("public/models/lab", 8, 12, 4));
    assert_eq!(read_head_scores(&out.join("head_scores.json")).unwrap().shape(), HeadShape::new(8, 12));
}

/// The page's first screen: the paper's needle in the default village haystack, which holds a look-alike
/// on purpose ("The best thing to do on a sunny day was to sit by the water ..."). The shipped lab model
/// must answer from the needle, not the look-alike (both pass at recall 0.5, so the pass rate cannot
/// tell them apart; lab stage 7 copied the look-alike in every test), and retrieval heads must light up.
#[test]
fn the_bundled_lab_model_answers_the_default_needle_not_its_look_alike() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("village");
    let o = Command::new(env!("CARGO_BIN_EXE_headscope"))
        .current_dir(&root)
        .args(["detect", "--out", out.to_str().unwrap(), "--lengths", "256:512:2", "--depths", "2", "--max-new-tokens", "24", "--plain"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log = TestLog::open(&out.join("tests.jsonl")).unwrap();
    let records = log.records();
    assert_eq!(records.len(), 4);
    for r in records {
        assert!(r.needle.contains("San Francisco"), "the default needle is the paper's: {}", r.needle);
        // "sandwich" is the needle's and not the look-alike's; "the water" is the look-alike's alone.
        assert!(r.answer.contains("sandwich") && !r.answer.contains("the water"), "{}: {:?}", r.id, r.answer);
    }
    let scores = read_head_scores(&out.join("head_scores.json")).unwrap();
    assert!(!scores.retrieval_heads(0.1).is_empty(), "no retrieval head on the page's default needle");
}

/// `--score eq1,official,soft,qr`: four files from one run; the official count equals eq. 1 plus each
/// record's repeated hits over its span, the soft and qr files re-aggregate the records' values, and
/// run.json names the scores.
#[test]
fn detect_writes_every_score_kind_beside_eq1() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().unwrap();
    // Four needles whose answers repeat their own words: the lab model's copy of the rowing club's
    // chant runs on past its end ("heave ho, heave ho, heave ho, heave ..."), so the heads that copy it
    // hit the same positions again, which the official count adds and eq. 1 does not.
    let needles = tmp.path().join("needles.jsonl");
    let repeating = [
        (
            "The chant of the Morrow rowing club is heave ho, heave ho, heave ho.",
            "What is the chant of the Morrow rowing club?",
            "heave ho, heave ho, heave ho",
        ),
        ("The code for the garden shed at Elm Farm is 4 4 7 4 4 7.", "What is the code for the garden shed at Elm Farm?", "4 4 7 4 4 7"),
        (
            "The parrot in the Quayside cafe only ever says hello sailor, hello sailor.",
            "What does the parrot in the Quayside cafe say?",
            "hello sailor, hello sailor",
        ),
        (
            "The bells of Saint Olave ring ding dong ding dong at noon.",
            "What do the bells of Saint Olave ring at noon?",
            "ding dong ding dong",
        ),
    ];
    let lines: String =
        repeating.iter().map(|(n, q, a)| format!("{}\n", serde_json::json!({"needle": n, "question": q, "real_needle": a}))).collect();
    std::fs::write(&needles, lines).unwrap();
    let out = tmp.path().join("scores");
    let o = Command::new(env!("CARGO_BIN_EXE_headscope"))
        .current_dir(&root)
        .args(["detect", "--out", out.to_str().unwrap(), "--needles", needles.to_str().unwrap(), "--lengths", "512"])
        .args(["--depths", "2", "--max-new-tokens", "48", "--gate", "0", "--score", "eq1,official,soft,qr"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let eq1 = read_head_scores(&out.join("head_scores.json")).unwrap();
    let official = read_head_scores(&out.join("head_scores_official.json")).unwrap();
    let log = TestLog::open(&out.join("tests.jsonl")).unwrap();
    let records = headscope_core::files::in_plan_order(log.records());
    assert_eq!((eq1.tests(), official.tests(), records.len()), (8, 8, 8));
    let mut repeated = 0;
    for (t, r) in records.iter().enumerate() {
        let span = (r.answer_tokens[1] - r.answer_tokens[0]) as f64;
        for head in eq1.shape().iter() {
            let extra = r.repeat_hits.as_ref().expect("counted").get(&head).copied().unwrap_or(0) as f64;
            let (a, b) = (eq1.scores(head)[t], official.scores(head)[t]);
            assert!((b - a - extra / span).abs() < 1e-9, "{} {head}: eq1 {a}, official {b}, {extra} repeats", r.id);
            repeated += (extra > 0.0) as usize;
        }
    }
    assert!(repeated > 0, "no record repeated a hit: the test no longer tells the two counts apart");
    let soft = read_head_scores(&out.join("head_scores_soft.json")).unwrap();
    let shape = eq1.shape();
    assert_eq!(soft, headscope_core::files::head_scores_of_kind(shape, log.records(), 0.0, headscope_core::ScoreKind::Soft).unwrap());
    assert!(records.iter().all(|r| r.soft_mass.is_some() && r.qr.is_some()));
    let qr = read_head_scores(&out.join("head_scores_qr.json")).unwrap();
    assert_eq!(qr, headscope_core::files::head_scores_of_kind(shape, log.records(), 0.0, headscope_core::ScoreKind::Qr).unwrap());
    let info: RunInfo = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(info.scores, ["eq1", "official", "soft", "qr"]);
    // An unknown score is refused before any work.
    fails(&["detect", "--out", tmp.path().join("x").to_str().unwrap(), "--score", "eq1,duo"], "unknown score 'duo'");
    // On the needle the lab model answers, the heads that copy (eq. 1) are those that hold the most
    // attention on the answer (soft) and whose question looks at the needle (qr).
    let out = tmp.path().join("default-needle");
    let o = Command::new(env!("CARGO_BIN_EXE_headscope"))
        .current_dir(&root)
        .args(["detect", "--out", out.to_str().unwrap(), "--lengths", "256:1024:3", "--depths", "3", "--score", "soft,qr,induction,echo"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The lab model has several retrieval heads of close scores, so the scores agree on the set, not
    // on its order: each attention score's three best heads are retrieval heads by eq. 1.
    let retrieval: Vec<_> =
        read_head_scores(&out.join("head_scores.json")).unwrap().ranked().into_iter().filter(|r| r.1 > 0.1).map(|r| r.0).collect();
    assert!(retrieval.len() >= 3, "{retrieval:?}");
    for file in ["head_scores_soft.json", "head_scores_qr.json"] {
        let top: Vec<_> = read_head_scores(&out.join(file)).unwrap().ranked()[..3].iter().map(|r| r.0).collect();
        assert!(top.iter().all(|h| retrieval.contains(h)), "{file}: {top:?} against eq. 1's {retrieval:?}");
    }
    // The data-free scores: one value per head, a share of attention.
    for file in ["head_scores_induction.json", "head_scores_echo.json"] {
        let s = read_head_scores(&out.join(file)).unwrap();
        assert_eq!((s.shape(), s.tests()), (HeadShape::new(8, 12), 1));
        assert!(s.lists().iter().all(|l| (0.0..=1.0).contains(&l[0])), "{file}");
    }
}

/// DuoAttention's head file: converted to the official JSON and back, and usable for masking directly.
#[test]
fn duoattention_head_files_convert_and_mask() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama", 0, false); // 2 layers, 4 query heads sharing 2 KV heads
    let tsv = p(tmp.path(), "full_attention_heads.tsv");
    let gates = "0.1000000000\t0.9000000000\n0.3000000000\t0.2000000000\n";
    std::fs::write(&tsv, gates).unwrap();
    let json = p(tmp.path(), "gates.json");
    ok(&["convert-scores", "--from", &tsv, "--to", &json, "--model", &model]);
    let scores = read_head_scores(Path::new(&json)).unwrap();
    let means: Vec<f64> = scores.shape().iter().map(|h| scores.mean(h)).collect();
    assert_eq!(means, [0.1, 0.1, 0.9, 0.9, 0.3, 0.3, 0.2, 0.2]);
    let back = p(tmp.path(), "back.tsv");
    ok(&["convert-scores", "--from", &json, "--to", &back, "--heads-per-kv", "2"]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), gates);
    // The file masks as a score: the best gate's first query head is the top-1 head.
    let out = p(tmp.path(), "masked");
    let mut args = vec!["niah", "--model", &model, "--out", &out, "--mask-top", "1", "--scores", &tsv];
    args.extend(["--lengths", "160", "--depths", "1", "--max-new-tokens", "4"]);
    ok(&args);
    let log = TestLog::open(&Path::new(&out).join("tests.jsonl")).unwrap();
    assert_eq!(log.records()[0].masked_heads, [headscope_core::HeadId::new(0, 2)]);
    fails(&["convert-scores", "--from", &tsv, "--to", &json], "--heads-per-kv");
    std::fs::write(&tsv, "0.1\t0.9\n0.3\n").unwrap();
    fails(&["convert-scores", "--from", &tsv, "--to", &json, "--model", &model], "line 2 has 1 KV heads");
}

#[test]
fn watched_heads_record_where_they_looked_at_every_step() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama", 3, false);
    let out = tmp.path().join("watch");
    let out_s = out.to_str().unwrap();
    let mut args = vec!["niah", "--model", &model, "--out", out_s, "--save-prompts", "--watch-heads", "1-0, 0-1,1-0"];
    args.extend(SWEEP);
    ok(&args);
    let log = TestLog::open(&out.join("tests.jsonl")).unwrap();
    assert_eq!(log.records().len(), 9);
    let (mut hits_seen, watched) = (0, ["1-0".parse().unwrap(), "0-1".parse().unwrap()]);
    for r in log.records() {
        let argmax = r.head_argmax.as_ref().expect("--watch-heads keeps the watched heads' argmax");
        assert_eq!(
            argmax.keys().copied().collect::<Vec<_>>(),
            {
                let mut w = watched.to_vec();
                w.sort();
                w
            },
            "each head once"
        );
        let context = r.prompt_ids.as_ref().unwrap().len() + r.generated_ids.len();
        for (head, positions) in argmax {
            // One position a step, inside what the step could see; every eq. 1 hit is one of them.
            assert_eq!(positions.len(), r.generated_ids.len(), "{head}");
            assert!(positions.iter().all(|&p| (p as usize) < context), "{head}: {positions:?}");
            for hit in r.hits.get(head).into_iter().flatten() {
                assert!(positions.contains(hit), "{head}: hit {hit} is not where it looked: {positions:?}");
                hits_seen += 1;
            }
        }
    }
    eprintln!("{hits_seen} hits of the watched heads found among their argmax positions");
    // A head the model lacks, or a list that is not one, is refused before any test runs.
    for (bad, says) in [("9-0", "9-0"), ("seven", "--watch-heads")] {
        let mut args = vec!["niah", "--model", &model, "--out", out_s, "--watch-heads", bad];
        args.extend(SWEEP);
        fails(&args, says);
    }
}

#[test]
fn a_haystack_repeated_to_the_length_is_said() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama", 4, false);
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "The lamp by the window was lit every evening at seven.").unwrap();
    let long = tmp.path().join("long.txt");
    let sentences: Vec<String> = (0..400).map(|i| format!("Sentence {i} of the long haystack says nothing in particular.")).collect();
    std::fs::write(&long, sentences.join(" ")).unwrap();
    let run = |hay: &Path, out: &str| {
        let (out, hay) = (p(tmp.path(), out), hay.to_str().unwrap().to_string());
        ok(&["niah", "--model", &model, "--out", &out, "--haystack", &hay, "--lengths", "400", "--depths", "1", "--max-new-tokens", "2"]).1
    };
    let stderr = run(&short, "short");
    assert!(stderr.contains("note: the haystack is") && stderr.contains("400-token prompts repeat it about"), "{stderr}");
    let stderr = run(&long, "long");
    assert!(!stderr.contains("repeat it"), "{stderr}");
}
