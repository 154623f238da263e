//! End to end: `headscope kv` and `--kv-cache` on a tiny random model. Every plan family runs as its
//! own resumable `niah` run recording its policy, the memory shares follow the plans (the retrieval
//! heads' plan and its random controls hold as many whole KV heads, every-head-windowed holds none),
//! the figure and its data are written, and bad policies are named.

use headscope_core::files::RunInfo;
use std::path::Path;
mod common;
use common::{fails, ok_stdout};

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn kv_runs_every_plan_family_and_charts_pass_rate_against_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("tiny").to_string_lossy().into_owned();
    ok_stdout(&["tiny-model", "--out", &model]);
    // 2 layers x 4 heads over 2 KV heads: heads 1-2 and 1-3 (KV head 1 of layer 1) retrieve.
    let scores = t.join("scores.json");
    std::fs::write(&scores, r#"{"0-0": [0], "0-1": [0], "0-2": [0], "0-3": [0.05], "1-0": [0], "1-1": [0], "1-2": [0.6], "1-3": [0.4]}"#)
        .unwrap();
    let out = t.join("kv");
    let (scores_s, out_s) = (scores.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
    let args = [
        "kv",
        "--model",
        &model,
        "--out",
        &out_s,
        "--scores",
        &scores_s,
        "--windows",
        "16,40",
        "--seeds",
        "2",
        "--lengths",
        "200",
        "--depths",
        "2",
        "--max-new-tokens",
        "4",
    ];
    let stdout = ok_stdout(&args);
    assert!(stdout.contains("kv.png"), "{stdout}");
    assert!(out.join("kv.png").exists() && out.join("kv.csv").exists());
    let summary = json(&out.join("kv.json"));
    assert_eq!(
        (summary["tops"][0].as_u64(), summary["whole_kv_heads"][0].as_u64(), summary["kv_heads"].as_u64()),
        (Some(2), Some(1), Some(4))
    );
    let points = summary["points"].as_array().unwrap();
    assert_eq!(points.len(), 1 + 2 * (1 + 2 + 1), "full, then per window: retrieval, 2 random, window");
    let share = |family: &str, w: u64| -> Vec<f64> {
        points.iter().filter(|p| p["family"] == family && p["window"] == w).map(|p| p["kv_share"].as_f64().unwrap()).collect()
    };
    assert_eq!(share("full", 0), vec![1.0]);
    for w in [16, 40] {
        let (r, rand, win) = (share("retrieval", w), share("random", w), share("window", w));
        assert_eq!(rand, vec![r[0]; 2], "random plans keep as many whole KV heads as the retrieval plan");
        assert!(win[0] < r[0] && r[0] < 1.0, "window {w}: {win:?} < {r:?} < 1");
    }
    assert!(share("window", 16)[0] < share("window", 40)[0]);
    // Each windowed point counts the tests whose needle lies beyond its window (after the sink of 4,
    // ending at least W positions before the prompt's end) and the whole cache's rate on those tests.
    let full_tests: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("full/tests.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for w in [16u64, 40] {
        let beyond: Vec<&serde_json::Value> = full_tests
            .iter()
            .filter(|t| {
                t["needle_tokens"][0].as_u64().unwrap() >= 4
                    && t["needle_tokens"][1].as_u64().unwrap() + w <= t["prompt_tokens"].as_u64().unwrap()
            })
            .collect();
        assert!(!beyond.is_empty(), "window {w}: the needle at depth 0 lies beyond it");
        let full_rate = beyond.iter().filter(|t| t["recall"].as_f64().unwrap() >= 0.5).count() as f64 / beyond.len() as f64;
        for p in points.iter().filter(|p| p["window"] == w) {
            let b = &p["beyond_window"];
            assert_eq!(b["tests"].as_u64(), Some(beyond.len() as u64), "{p}");
            assert_eq!(b["full_cache_pass_rate"].as_f64(), Some(full_rate), "{p}");
            assert!((0.0..=1.0).contains(&b["pass_rate"].as_f64().unwrap()), "{p}");
        }
    }
    assert!(points.iter().find(|p| p["family"] == "full").unwrap()["beyond_window"].is_null());
    let csv = std::fs::read_to_string(out.join("kv.csv")).unwrap();
    assert!(csv.starts_with("family,policy,window,top,whole_kv_heads,pass_rate,kv_share,beyond_window_tests,"), "{csv}");
    assert!(stdout.contains("needle beyond the window"), "{stdout}");
    // Each run is an ordinary niah run that recorded its policy.
    let info: RunInfo = serde_json::from_value(json(&out.join("retrieval-w16/run.json"))).unwrap();
    let policy = info.kv_cache.unwrap();
    assert!(policy.starts_with("heads:") && policy.contains("window 16") && policy.contains("1 of 4 KV heads whole"), "{policy}");
    let info: RunInfo = serde_json::from_value(json(&out.join("full/run.json"))).unwrap();
    assert_eq!(info.kv_cache, None);
    // A rerun runs nothing new.
    let again = ok_stdout(&args);
    assert_eq!(again, stdout);

    // Several top-K: each with its own random controls, named by K.
    let many = t.join("kv-tops");
    let many_s = many.to_string_lossy().into_owned();
    ok_stdout(&[
        "kv",
        "--model",
        &model,
        "--out",
        &many_s,
        "--scores",
        &scores_s,
        "--top",
        "1,4",
        "--windows",
        "16",
        "--seeds",
        "1",
        "--lengths",
        "200",
        "--depths",
        "1",
        "--max-new-tokens",
        "2",
    ]);
    let summary = json(&many.join("kv.json"));
    // Top-1 (1-2) reads KV head 1 of layer 1; top-4 adds 1-3 (the same KV head), 0-3 (KV head 1 of
    // layer 0) and, of the heads tied at 0, the first in head order, 0-0 (KV head 0 of layer 0).
    assert_eq!(summary["whole_kv_heads"], serde_json::json!([1, 3]));
    for dir in ["retrieval-k1-w16", "retrieval-k4-w16", "random-k1-w16-s1", "random-k4-w16-s1", "window-w16", "full"] {
        assert!(many.join(dir).join("summary.json").exists(), "{dir}");
    }

    // Bad policies and a wgpu run are named.
    let niah = |policy: &str, extra: &[&str], expect: &str| {
        let o = t.join("bad").to_string_lossy().into_owned();
        let mut a = vec!["niah", "--model", model.as_str(), "--out", o.as_str(), "--lengths", "200", "--depths", "1", "--kv-cache", policy];
        a.extend_from_slice(extra);
        fails(&a, expect)
    };
    niah("bogus", &[], "expected full, window:W, heads:FILE:K or random:K:SEED");
    niah("window:x", &[], "not a whole number");
    niah("random:9:1", &[], "9 random KV heads of a model with 4");
    niah(&format!("heads:{scores_s}:2"), &["--device", "wgpu"], "--device wgpu");
}

/// `--decode decore:FILE:K[:CAP]`: with the contrast weight capped at 0 its answers are greedy
/// decoding's; uncapped it runs and records itself; bad specifications and the wgpu backend are named.
#[test]
fn decore_decoding_runs_records_itself_and_reduces_to_greedy_at_weight_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("tiny").to_string_lossy().into_owned();
    ok_stdout(&["tiny-model", "--out", &model]);
    let scores = t.join("scores.json");
    std::fs::write(&scores, r#"{"0-0": [0], "0-1": [0.3], "0-2": [0], "0-3": [0.05], "1-0": [0], "1-1": [0], "1-2": [0.6], "1-3": [0]}"#)
        .unwrap();
    let scores_s = scores.to_string_lossy().into_owned();
    let run = |name: &str, decode: &str| -> Vec<String> {
        let out = t.join(name).to_string_lossy().into_owned();
        ok_stdout(&[
            "niah",
            "--model",
            &model,
            "--out",
            &out,
            "--lengths",
            "200",
            "--depths",
            "3",
            "--max-new-tokens",
            "6",
            "--decode",
            decode,
        ]);
        std::fs::read_to_string(t.join(name).join("tests.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["answer"].as_str().unwrap().to_owned())
            .collect()
    };
    let greedy = run("greedy", "greedy");
    assert_eq!(run("capped", &format!("decore:{scores_s}:2:0")), greedy);
    run("decore", &format!("decore:{scores_s}:2"));
    let info: RunInfo = serde_json::from_value(json(&t.join("decore/run.json"))).unwrap();
    assert_eq!(info.decode.as_deref(), Some(format!("decore:{scores_s}:2").as_str()));
    assert_eq!(serde_json::from_value::<RunInfo>(json(&t.join("greedy/run.json"))).unwrap().decode, None);
    let bad = t.join("bad").to_string_lossy().into_owned();
    let fail = |decode: &str, extra: &[&str], expect: &str| {
        let mut a = vec!["niah", "--model", model.as_str(), "--out", bad.as_str(), "--lengths", "200", "--decode", decode];
        a.extend_from_slice(extra);
        fails(&a, expect)
    };
    fail("beam", &[], "expected greedy or decore:FILE:K[:CAP]");
    fail(&format!("decore:{scores_s}"), &[], "expected decore:FILE:K or decore:FILE:K:CAP");
    fail(&format!("decore:{scores_s}:0"), &[], "K must be at least 1");
    fail(&format!("decore:{scores_s}:2"), &["--device", "wgpu"], "candle backend");
}

/// Needles with `distractor_answers` get DeCoRe's hallucination count in niah's summary: every test in
/// exactly one class, and the shipped distractor needles read by the needles parser unchanged.
#[test]
fn needles_with_distractors_count_hallucinations() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("tiny").to_string_lossy().into_owned();
    ok_stdout(&["tiny-model", "--out", &model]);
    let needles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/needles/distractors.jsonl");
    let out = t.join("niah");
    let stdout = ok_stdout(&[
        "niah",
        "--model",
        &model,
        "--out",
        out.to_str().unwrap(),
        "--needles",
        needles.to_str().unwrap(),
        "--lengths",
        "300",
        "--depths",
        "2",
        "--max-new-tokens",
        "8",
    ]);
    assert!(stdout.contains("with distractors:"), "{stdout}");
    let d = &json(&out.join("summary.json"))["distractors"];
    let sum: u64 = ["correct", "distractor", "fabricated", "other"].iter().map(|k| d[*k].as_u64().unwrap()).sum();
    assert_eq!(sum, d["tests"].as_u64().unwrap());
    assert_eq!(d["tests"], 18, "9 needles x 2 depths");
    let rate = (d["distractor"].as_u64().unwrap() + d["fabricated"].as_u64().unwrap()) as f64 / 18.0;
    assert!((d["hallucination_rate"].as_f64().unwrap() - rate).abs() < 1e-12);
    // A malformed distractor list is named.
    let bad = t.join("bad.jsonl");
    std::fs::write(&bad, r#"{"needle": "The key is under the mat.", "question": "Where is the key?", "real_needle": "under the mat", "distractor_answers": "on the hook"}"#).unwrap();
    fails(
        &[
            "niah",
            "--model",
            &model,
            "--out",
            t.join("bad").to_str().unwrap(),
            "--needles",
            bad.to_str().unwrap(),
            "--lengths",
            "300",
            "--depths",
            "1",
        ],
        "distractor_answers must be a list of strings",
    );
}
