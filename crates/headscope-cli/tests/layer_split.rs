//! `--device cpu,cpu` splits the decoder layers over two devices: detect's records (every head's
//! argmax per step, through the scores) and generate's text are those of the unsplit run; bad device
//! lists fail with an error naming the problem.

mod common;

use common::{fails, ok, ok_stdout};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// A 4-layer tiny random model and the flags of a small detect sweep over two held-out needles.
fn setup(tmp: &Path) -> Vec<String> {
    common::tiny_sweep(tmp, &["--layers", "4"], "160:320:2", "2")
}

fn records(path: &Path) -> Vec<Value> {
    common::records_without_seconds(path)
}

fn detect(flags: &[String], out: &Path, device: &str) {
    let mut args: Vec<&str> = vec!["detect"];
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap(), "--device", device]);
    ok(&args);
}

#[test]
fn detect_split_over_cpus_records_what_the_unsplit_run_records() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = setup(tmp.path());
    let whole = tmp.path().join("whole");
    detect(&flags, &whole, "cpu");
    let expected = records(&whole.join("tests.jsonl"));
    assert!(!expected.is_empty());
    for device in ["cpu,cpu", "cpu,cpu,cpu"] {
        let out = tmp.path().join(device.replace(',', "-"));
        detect(&flags, &out, device);
        assert_eq!(records(&out.join("tests.jsonl")), expected, "--device {device}");
        let parse = |p: &Path| serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap()).unwrap();
        assert_eq!(parse(&out.join("head_scores.json")), parse(&whole.join("head_scores.json")), "--device {device}");
    }
}

#[test]
fn generate_split_over_cpus_writes_the_unsplit_text() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    ok(&["tiny-model", "--out", model.to_str().unwrap(), "--arch", "qwen2", "--layers", "4"]);
    let generate = |device: &str| {
        ok_stdout(&[
            "generate",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "In the beginning",
            "--max-new-tokens",
            "12",
            "--device",
            device,
        ])
    };
    let expected = generate("cpu");
    assert_eq!(generate("cpu,cpu"), expected);
    assert_eq!(generate("cpu,cpu,cpu,cpu"), expected);
}

#[test]
fn bad_device_lists_fail_naming_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = setup(tmp.path());
    let out = tmp.path().join("out");
    let run = |device: &str, expect: &str| {
        let mut args: Vec<&str> = vec!["detect"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(["--out", out.to_str().unwrap(), "--device", device]);
        fails(&args, expect);
    };
    run("cpu,,cpu", "entry 2 of the list is empty");
    run("cpu,", "entry 2 of the list is empty");
    run("cpu,tpu", "unknown device `tpu`");
    run("cpu,cuda:0", "mixes cpu and cuda");
    run("wgpu,wgpu", "wgpu runs on one device");
    run("cpu,cpu,cpu,cpu,cpu", "5 devices for 4 layers");
    #[cfg(not(feature = "cuda"))]
    run("cuda:0,1", "CUDA is not available");
    // A command that runs on one device says so.
    fails(&["hf-agreement", "--device", "cpu,cpu", "missing.json"], "this command runs on one device");
}

/// The bundled lab model has retrieval heads, so its records hold per-head hits (where each head's
/// argmax landed on the needle as the answer was copied): split, they are the same heads and steps.
#[test]
fn lab_model_split_over_cpus_has_the_same_head_hits() {
    let root = repo("");
    let tmp = tempfile::tempdir().unwrap();
    let run = |device: &str| {
        let out = tmp.path().join(device.replace(',', "-"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
            .current_dir(&root)
            .args(["detect", "--out", out.to_str().unwrap(), "--lengths", "300", "--depths", "2", "--max-new-tokens", "16"])
            .args(["--gate", "0", "--haystack", "public/haystacks/kjv-john.txt", "--plain", "--device", device])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        records(&out.join("tests.jsonl"))
    };
    let expected = run("cpu");
    let hits: usize = expected.iter().map(|r| r["hits"].as_object().map_or(0, |h| h.len())).sum();
    assert!(hits > 0, "the lab model's heads hit the needle: the comparison covers argmax positions");
    assert_eq!(run("cpu,cpu,cpu"), expected);
}
