//! Helpers of the CLI's end-to-end tests: run the built `headscope`, and require success or a clean
//! failure (exit code 1, an `error:` line naming the problem, no panic).
#![allow(dead_code)] // each test file uses its own subset

use std::process::{Command, Output};

pub fn headscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_headscope")).args(args).output().expect("the binary runs")
}

/// Runs a command that must succeed; returns its stdout and stderr.
pub fn ok(args: &[&str]) -> (String, String) {
    let out = headscope(args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "headscope {args:?} failed\nstdout: {stdout}\nstderr: {stderr}");
    (stdout, stderr)
}

/// [`ok`]'s stdout.
pub fn ok_stdout(args: &[&str]) -> String {
    ok(args).0
}

/// Runs a command that must fail cleanly with an error naming `expect`.
pub fn fails(args: &[&str], expect: &str) {
    fails_all(args, &[expect]);
}

/// Runs a command that must fail cleanly with an error naming every one of `expect`.
pub fn fails_all(args: &[&str], expect: &[&str]) {
    let out = headscope(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "headscope {args:?} should fail with 1; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for e in expect {
        assert!(stderr.contains("error:") && stderr.contains(e), "headscope {args:?}: expected `{e}` in: {stderr}");
    }
}
pub mod fault_sweep;

/// A tiny random Llama in `tmp` (`tiny-model`, plus `model_flags`) and the first two held-out needles;
/// returns the flags of a small sweep over them (the KJV haystack, 6 new tokens).
pub fn tiny_sweep(tmp: &std::path::Path, model_flags: &[&str], lengths: &str, depths: &str) -> Vec<String> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = tmp.join("tiny");
    let mut args = vec!["tiny-model", "--out", model.to_str().unwrap(), "--arch", "llama"];
    args.extend(model_flags);
    ok(&args);
    let needles = tmp.join("needles.jsonl");
    let heldout = std::fs::read_to_string(repo.join("public/needles/heldout.jsonl")).unwrap();
    std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let haystack = repo.join("public/haystacks/kjv-john.txt");
    [
        "--model",
        model.to_str().unwrap(),
        "--needles",
        needles.to_str().unwrap(),
        "--haystack",
        haystack.to_str().unwrap(),
        "--lengths",
        lengths,
        "--depths",
        depths,
        "--max-new-tokens",
        "6",
    ]
    .map(String::from)
    .to_vec()
}

/// The lines of a tests.jsonl as JSON, each without its timing (which differs between two runs).
pub fn records_without_seconds(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("seconds").expect("a record has its time");
            v
        })
        .collect()
}
