//! `headscope bench` and `headscope hf-agreement` on tiny models on the CPU: the figures are sane and
//! consistent (no timing targets), the saved prompts are exact, and bad input is a clear error.

use std::path::Path;
mod common;
use common::{headscope, ok_stdout};

fn tiny(dir: &Path, arch: &str) -> String {
    let d = dir.join(arch);
    ok_stdout(&["tiny-model", "--out", d.to_str().unwrap(), "--arch", arch]);
    d.to_string_lossy().into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn bench_prints_consistent_figures_and_saves_exact_prompts() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama");
    let (report, prompts) = (tmp.path().join("bench.json"), tmp.path().join("prompts.json"));
    let stdout = ok_stdout(&[
        "bench",
        "--model",
        &model,
        "--lengths",
        "160,320",
        "--steps",
        "3",
        "--max-context",
        "--memory-gib",
        "0.004",
        "--json",
        report.to_str().unwrap(),
        "--save-prompts",
        prompts.to_str().unwrap(),
    ]);
    assert!(stdout.contains("| context | prefill | prefill speed | decode step | per NIAH test | peak memory |"), "{stdout}");
    assert!(stdout.contains("| 160 |") && stdout.contains("| 320 |") && stdout.contains("longest context that fits"), "{stdout}");

    let r = json(&report);
    let (layers, heads, kv_heads) = (r["layers"].as_u64().unwrap(), r["heads"].as_u64().unwrap(), r["kv_heads"].as_u64().unwrap());
    let config = json(&Path::new(&model).join("config.json"));
    let head_dim = config["hidden_size"].as_u64().unwrap() / config["num_attention_heads"].as_u64().unwrap();
    assert_eq!(r["parameters"], r["stored_parameters"], "the config's parameter count is the checkpoint's");
    assert_eq!(r["kv_bytes_per_token"].as_u64().unwrap(), 2 * layers * kv_heads * head_dim * 4);
    assert_eq!(r["weight_bytes"].as_u64().unwrap(), r["parameters"].as_u64().unwrap() * 4);
    for (l, want) in r["lengths"].as_array().unwrap().iter().zip([160u64, 320]) {
        assert_eq!(l["length"].as_u64().unwrap(), want);
        assert_eq!(l["fits"], true);
        let (prefill, speed) = (l["prefill_seconds"].as_f64().unwrap(), l["prefill_tokens_per_second"].as_f64().unwrap());
        assert!(prefill > 0.0 && l["decode_step_ms"].as_f64().unwrap() > 0.0);
        assert!((speed * prefill - (want - 1) as f64).abs() < 1e-3 * want as f64, "tokens/s is prompt[:-1] over the prefill time");
        assert!(l["test_seconds"].as_f64().unwrap() >= prefill + 3.0 * l["decode_step_ms"].as_f64().unwrap() / 1e3 * 0.999);
        assert!(l["peak_memory_bytes"].as_u64().unwrap() > 0);
        assert!(l["sweep_test_seconds"].is_null() && l["sweep_reused_share"].is_null(), "no depth sweep unless asked for");
    }
    assert_eq!(r["sweep_depths"], 0);
    let m = &r["max_context"];
    let memory = m["memory_bytes"].as_u64().unwrap();
    assert_eq!(memory, (0.004 * (1u64 << 30) as f64) as u64);
    let limit = (memory - r["weight_bytes"].as_u64().unwrap()) / r["kv_bytes_per_token"].as_u64().unwrap();
    assert_eq!(m["physical_limit_tokens"].as_u64().unwrap(), limit);
    let longest = m["longest_fitting_tokens"].as_u64().unwrap();
    assert!(longest > 320 && longest <= limit && longest.is_multiple_of(1024), "{longest} of {limit}");
    assert!(m["probes"].as_array().unwrap().iter().any(|p| p[0].as_u64() == Some(longest) && p[1] == true));

    let p = json(&prompts);
    let tests = p["tests"].as_array().unwrap();
    assert_eq!(tests.len(), 2);
    for t in tests {
        let length = t["length"].as_u64().unwrap() as usize;
        assert_eq!(t["prompt_ids"].as_array().unwrap().len(), length);
        let (needle, answer) = (&t["needle_tokens"], &t["answer_tokens"]);
        assert!(needle[0].as_u64() <= answer[0].as_u64() && answer[1].as_u64() <= needle[1].as_u64());
        let argmax = t["headscope_argmax"].as_array().unwrap();
        assert_eq!(argmax.len(), 3);
        assert_eq!(t["headscope_tokens"].as_array().unwrap().len(), 3);
        for (step, a) in argmax.iter().enumerate() {
            let a = a.as_array().unwrap();
            assert_eq!(a.len() as u64, layers * heads);
            assert!(a.iter().all(|x| (x.as_u64().unwrap() as usize) < length + step), "a head looked past its position");
        }
    }
}

#[test]
fn bench_counts_parameters_of_every_family_as_stored() {
    let tmp = tempfile::tempdir().unwrap();
    for arch in ["mistral", "qwen2", "mixtral"] {
        let model = tiny(tmp.path(), arch);
        let report = tmp.path().join(format!("{arch}.json"));
        ok_stdout(&["bench", "--model", &model, "--lengths", "160", "--steps", "2", "--json", report.to_str().unwrap()]);
        let r = json(&report);
        assert_eq!(r["parameters"], r["stored_parameters"], "{arch}");
        assert!(r["max_context"].is_null());
    }
}

/// `--sweep-depths`: per length, a depth sweep run as detect runs it (deepest first, prefixes reused),
/// timed per test beside the isolated test.
#[test]
fn bench_times_a_depth_sweep_with_prefix_reuse() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama");
    let report = tmp.path().join("bench.json");
    let stdout = ok_stdout(&[
        "bench",
        "--model",
        &model,
        "--lengths",
        "160,320",
        "--steps",
        "3",
        "--sweep-depths",
        "5",
        "--json",
        report.to_str().unwrap(),
    ]);
    assert!(stdout.contains("| per NIAH test | per test in a depth sweep (prefix reused) | peak memory |"), "{stdout}");
    assert!(stdout.contains("5 depths from 0 to 100 %"), "{stdout}");
    let r = json(&report);
    assert_eq!(r["sweep_depths"], 5);
    for l in r["lengths"].as_array().unwrap() {
        assert!(l["sweep_test_seconds"].as_f64().unwrap() > 0.0, "{l}");
        // The deepest test computes its whole prompt; the four after it reuse the haystack before their needles.
        let share = l["sweep_reused_share"].as_f64().unwrap();
        assert!(share > 0.05 && share < 0.8, "{l}");
    }
}

/// `--grid official` runs the grid through `detect` (here with small lengths of the same shape: 10
/// depths, 20 new tokens, the San Francisco needle) and times it end to end: every test of the grid is
/// counted, the wall time covers the tests' own, and the run's files are those of detect.
#[test]
fn bench_times_a_whole_grid_as_detect_runs_it() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama");
    let (out, report) = (tmp.path().join("grid"), tmp.path().join("grid.json"));
    let args = ["bench", "--model", &model, "--grid", "official", "--grid-lengths", "200:300:2", "--grid-out", out.to_str().unwrap()];
    let stdout = ok_stdout(&[&args[..], &["--json", report.to_str().unwrap()]].concat());
    assert!(stdout.contains("grid official on"), "{stdout}");
    let r = json(&report);
    assert_eq!((r["tests"].as_u64(), r["depths"].as_u64(), r["max_new_tokens"].as_u64()), (Some(20), Some(10), Some(20)));
    let lengths: Vec<u64> = r["per_length"].as_array().unwrap().iter().map(|l| l["length"].as_u64().unwrap()).collect();
    assert_eq!(lengths, [200, 300]);
    assert!(r["wall_seconds"].as_f64().unwrap() >= r["test_seconds"].as_f64().unwrap(), "{r}");
    assert!(out.join("head_scores.json").exists() && out.join("tests.jsonl").exists());
    // The same folder again would time a resumed run: refused.
    let o = headscope(&args);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("already holds a run"));
    let o = headscope(&["bench", "--model", &model, "--grid", "nightly"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("expected one of official"));
}

/// Under `--kv-cache` the tests decode with the plan and the report gives the plan's KV bytes at each
/// length: the whole KV heads grow with the context, the windowed ones stop at sink + window.
#[test]
fn bench_decodes_under_a_kv_plan_and_reports_its_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama");
    let report = tmp.path().join("bench.json");
    let stdout = ok_stdout(&[
        "bench",
        "--model",
        &model,
        "--lengths",
        "160,320",
        "--steps",
        "3",
        "--kv-cache",
        "random:1:2",
        "--kv-sink",
        "2",
        "--kv-window",
        "16",
        "--json",
        report.to_str().unwrap(),
    ]);
    let r = json(&report);
    let plan = r["kv_cache"].as_str().unwrap();
    assert!(plan.starts_with("random:1:2 (sink 2, window 16; 1 of "), "{plan}");
    assert!(stdout.contains("KV cache: random:1:2"), "{stdout}");
    let per_token = r["kv_bytes_per_token"].as_u64().unwrap();
    let kv_heads = r["layers"].as_u64().unwrap() * r["kv_heads"].as_u64().unwrap();
    let per_head = per_token / kv_heads;
    for l in r["lengths"].as_array().unwrap() {
        let positions = l["length"].as_u64().unwrap() + 3;
        assert_eq!(l["kv_cache_bytes"].as_u64().unwrap(), per_head * (positions + (kv_heads - 1) * 18), "{l}");
        assert!(l["decode_step_ms"].as_f64().unwrap() > 0.0);
    }
    let whole = tmp.path().join("whole.json");
    ok_stdout(&["bench", "--model", &model, "--lengths", "160", "--steps", "3", "--json", whole.to_str().unwrap()]);
    assert!(json(&whole)["kv_cache"].is_null() && json(&whole)["lengths"][0]["kv_cache_bytes"].is_null());
    let out = headscope(&["bench", "--model", &model, "--lengths", "160", "--kv-cache", "window:8", "--max-context", "--memory-gib", "1"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--max-context"));
}

#[test]
fn bench_and_agreement_refuse_bad_input_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(tmp.path(), "llama");
    for (args, expect) in [
        (vec!["bench", "--model", &model, "--lengths", "160", "--max-context"], "--memory-gib"),
        (vec!["bench", "--model", &model, "--lengths", "0"], "positive"),
        (vec!["bench", "--model", &model, "--lengths", "20"], "too short"),
    ] {
        let out = headscope(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expect) && !stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let bad = tmp.path().join("expected.json");
    std::fs::write(&bad, r#"{"format":"something else"}"#).unwrap();
    let out = headscope(&["hf-agreement", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("bench/hf_agreement.py") && !stderr.contains("panicked"), "{stderr}");
}

/// The committed fixture: tiny random models saved by transformers 5 (one per family, plus linear RoPE
/// scaling) with what transformers computed on them (bench/hf_agreement.py). HeadScope must give the
/// same greedy tokens, logits within 1e-3 of their scale, and the same argmax at >= 99 % of
/// (step, layer, head); a wrong RoPE base must be caught.
#[test]
fn hf_agreement_fixture_matches_transformers_and_catches_a_wrong_rope_base() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf-agreement");
    let cases = ["llama", "llama-rope", "mistral", "qwen2", "mixtral", "qwen3", "phi3", "gemma2", "gemma3", "gemma3-multimodal", "jamba"];
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("agreement.json");
    let mut args: Vec<String> = vec!["hf-agreement".into(), "--json".into(), report.to_string_lossy().into_owned()];
    args.extend(cases.iter().map(|c| fixture.join(c).join("expected.json").to_string_lossy().into_owned()));
    let stdout = ok_stdout(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stdout.contains("11 case(s) agree"), "{stdout}");
    for r in json(&report).as_array().unwrap() {
        assert_eq!(r["tokens_equal"], r["steps"], "{r}");
        assert_eq!(r["argmax_equal"], r["argmax_total"], "{r}");
        assert!(r["max_logit_difference"].as_f64().unwrap() < 1e-4, "{r}");
    }

    // bf16 (the mistral case of `hf_agreement.py --dtype bfloat16 --noise-floor`, renamed): transformers
    // also ran the weights in f32, and HeadScope in bf16 must be as close to that as transformers in
    // bf16 is.
    let bf16 = tmp.path().join("bf16.json");
    let expected = fixture.join("mistral-bf16/expected.json");
    let stdout = ok_stdout(&["hf-agreement", "--json", bf16.to_str().unwrap(), expected.to_str().unwrap()]);
    assert!(stdout.contains("1 case(s) agree") && stdout.contains("against transformers in f32"), "{stdout}");
    let r = &json(&bf16)[0];
    assert_eq!(r["dtype"], "bf16");
    let f = &r["f32_reference"];
    let total = f["argmax_total"].as_f64().unwrap();
    assert!(f["headscope_equal"].as_f64().unwrap() / total >= f["transformers_equal"].as_f64().unwrap() / total - 0.01, "{r}");
    assert!(f["headscope_max_logit_difference"].as_f64().unwrap() <= 2.0 * f["transformers_max_logit_difference"].as_f64().unwrap());
    assert!(f["headscope_max_logit_difference"].as_f64().unwrap() > 0.0, "bf16 rounding shows");

    // The same weights read with the default RoPE base instead of the saved one must disagree.
    let (stdout, stderr) =
        disagreeing_copy(&fixture, tmp.path(), "llama-rope", |c| c["rope_parameters"]["rope_theta"] = serde_json::json!(10000.0));
    assert!(stdout.contains("DISAGREES") && stderr.contains("disagree on: llama-rope"), "{stdout}{stderr}");
    // Phi-3's decode crosses its LongRoPE pre-training length (170) at step 11: with the long factors
    // replaced by the short ones, the first 11 tokens still agree and the first difference is there.
    let (stdout, stderr) = disagreeing_copy(&fixture, tmp.path(), "phi3", |c| {
        c["rope_parameters"]["long_factor"] = c["rope_parameters"]["short_factor"].clone()
    });
    assert!(stdout.contains("greedy tokens 1") && stderr.contains("disagree on: phi3"), "{stdout}{stderr}");
    let report = tmp.path().join("phi3-short.json");
    let out = headscope(&["hf-agreement", "--json", report.to_str().unwrap(), tmp.path().join("phi3/expected.json").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&report)[0]["first_token_difference"], 11, "the switch to the long factors is where the runs part");
}

/// A copy of fixture `case` in `tmp` with its config edited by `edit`, compared with transformers: it
/// must fail (exit status 1). Returns stdout and stderr.
fn disagreeing_copy(fixture: &Path, tmp: &Path, case: &str, edit: impl FnOnce(&mut serde_json::Value)) -> (String, String) {
    let copy = tmp.join(case);
    std::fs::create_dir_all(copy.join("model")).unwrap();
    std::fs::copy(fixture.join(case).join("expected.json"), copy.join("expected.json")).unwrap();
    for f in std::fs::read_dir(fixture.join(case).join("model")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, copy.join("model").join(f.file_name().unwrap())).unwrap();
    }
    let config = copy.join("model/config.json");
    let mut c = json(&config);
    edit(&mut c);
    std::fs::write(&config, c.to_string()).unwrap();
    let out = headscope(&["hf-agreement", copy.join("expected.json").to_str().unwrap()]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    (stdout, stderr)
}
