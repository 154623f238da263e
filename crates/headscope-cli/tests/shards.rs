//! A sweep split with `--shard I/N` and joined with `headscope merge` must leave the folder one unsharded
//! run leaves (timings aside); bad shards and bad merges are refused with errors that name the problem.

mod common;

use common::{headscope, ok};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A tiny random model and two held-out needles in `tmp`; the sweep flags of a small grid over them
/// (2 needles x 3 lengths = 6 groups of 3 depths).
fn setup(tmp: &Path) -> Vec<String> {
    common::tiny_sweep(tmp, &[], "160:320:3", "3")
}

/// Runs `headscope <command> <flags> --out <out> <extra>`.
fn run(command: &str, flags: &[String], out: &Path, extra: &[&str]) -> (String, String) {
    let mut args: Vec<&str> = vec![command];
    args.extend(flags.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    ok(&args)
}

fn records(path: &Path) -> Vec<Value> {
    common::records_without_seconds(path)
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// Every file of `whole` equals `merged`'s: tests.jsonl record by record (in the same order) but for
/// `seconds`, JSON files parsed, anything else byte for byte (the figures).
fn assert_same_run(whole: &Path, merged: &Path) {
    assert_eq!(names(whole), names(merged), "the same files");
    for name in names(whole) {
        let (a, b) = (whole.join(&name), merged.join(&name));
        if name == "tests.jsonl" {
            let (a, b) = (records(&a), records(&b));
            assert!(!a.is_empty());
            assert_eq!(a, b, "{name}");
        } else if name.ends_with(".json") {
            let parse = |p: &Path| serde_json::from_str::<Value>(&std::fs::read_to_string(p).unwrap()).unwrap();
            assert_eq!(parse(&a), parse(&b), "{name}");
        } else {
            assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(), "{name} differs");
        }
    }
}

fn run_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).unwrap()).unwrap()
}

/// Runs a command that must fail without a panic, its error naming every one of `expect`.
fn refused(args: &[&str], expect: &[&str]) {
    let out = headscope(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "headscope {args:?} should fail; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for e in expect {
        assert!(stderr.contains("error") && stderr.contains(e), "headscope {args:?}: expected `{e}` in: {stderr}");
    }
}

#[test]
fn detect_in_three_shards_merges_into_the_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = setup(tmp.path());
    let scores = ["--gate", "0", "--score", "eq1,official,induction"];
    let whole = tmp.path().join("whole");
    run("detect", &flags, &whole, &scores);
    let shards: Vec<PathBuf> = (1..=3).map(|i| tmp.path().join(format!("part{i}"))).collect();
    let mut seen = BTreeSet::new();
    for (i, dir) in shards.iter().enumerate() {
        let shard = format!("{}/3", i + 1);
        run("detect", &flags, dir, &[&scores[..], &["--shard", &shard]].concat());
        assert_eq!(run_json(dir)["shard"]["shard"], shard.as_str(), "run.json records the shard");
        let ids: Vec<String> = records(&dir.join("tests.jsonl")).iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
        // 6 groups of 3 tests over 3 shards, each group whole.
        assert_eq!(ids.len(), 6, "shard {shard}: {ids:?}");
        for id in ids {
            assert!(seen.insert(id.clone()), "{id} is in two shards");
        }
    }
    assert_eq!(seen.len(), 18);
    let merged = tmp.path().join("merged");
    let mut args = vec!["merge", "--out", merged.to_str().unwrap()];
    // Given in any order.
    args.extend(shards.iter().rev().map(|p| p.to_str().unwrap()));
    ok(&args);
    assert!(run_json(&merged).get("shard").is_none());
    assert_same_run(&whole, &merged);
    // Rerunning the unsharded command on the merged folder finds every test done.
    let (_, stderr) = run("detect", &flags, &merged, &scores);
    assert!(stderr.contains("nothing to run"), "{stderr}");
    assert_same_run(&whole, &merged);

    // Refusals: what is missing is named (and merged only when asked, then finished by a resume).
    let (p1, p2, p3) = (shards[0].to_str().unwrap(), shards[1].to_str().unwrap(), shards[2].to_str().unwrap());
    let out = tmp.path().join("refused");
    let o = out.to_str().unwrap();
    let lost = records(&shards[1].join("tests.jsonl"))[0]["id"].as_str().unwrap().to_owned();
    refused(
        &["merge", "--out", o, p1, p3],
        &["6 of the plan's 18 tests are in no shard", &lost, "shards not given: 2/3", "--allow-missing"],
    );
    refused(&["merge", "--out", o], &["no shard folders given"]);
    refused(&["merge", "--out", o, p1, p1, p2, p3], &["shard 1/3 is given twice"]);
    refused(&["merge", "--out", o, p1, p2, tmp.path().join("nowhere").to_str().unwrap()], &["nowhere", "no such folder"]);
    refused(&["merge", "--out", o, p1, p2, whole.to_str().unwrap()], &["is not a shard"]);
    // A shard of another split (2 parts) and of another gate: different sweeps.
    let other = tmp.path().join("other");
    run("detect", &flags, &other, &["--gate", "0", "--score", "eq1,official,induction", "--shard", "1/2"]);
    refused(&["merge", "--out", o, p1, p2, p3, other.to_str().unwrap()], &["shards of different sweeps", "number of shards: 3 against 2"]);
    let gate = tmp.path().join("gate");
    run("detect", &flags, &gate, &["--gate", "0.5", "--score", "eq1,official,induction", "--shard", "2/3"]);
    refused(&["merge", "--out", o, p1, gate.to_str().unwrap(), p3], &["shards of different sweeps", "gate"]);
    // Overlap: a shard folder holding a test of another shard.
    let stolen = tmp.path().join("stolen");
    std::fs::create_dir(&stolen).unwrap();
    std::fs::copy(shards[0].join("run.json"), stolen.join("run.json")).unwrap();
    let mut lines = std::fs::read_to_string(shards[0].join("tests.jsonl")).unwrap();
    lines.push_str(std::fs::read_to_string(shards[1].join("tests.jsonl")).unwrap().lines().next().unwrap());
    lines.push('\n');
    std::fs::write(stolen.join("tests.jsonl"), lines).unwrap();
    refused(
        &["merge", "--out", o, stolen.to_str().unwrap(), p2, p3],
        &[&format!("holds test {lost}, which belongs to shard 2/3"), "overlap"],
    );
    assert!(!out.join("tests.jsonl").exists(), "a refused merge writes no run");
    refused(&["merge", "--out", merged.to_str().unwrap(), p1, p2, p3], &["already holds a run"]);

    let partial = tmp.path().join("partial");
    ok(&["merge", "--allow-missing", "--out", partial.to_str().unwrap(), p1, p3]);
    assert_eq!(records(&partial.join("tests.jsonl")).len(), 12);
    let (_, stderr) = run("detect", &flags, &partial, &scores);
    assert!(!stderr.contains("nothing to run"), "{stderr}");
    for name in ["head_scores.json", "head_scores_official.json", "head_scores_induction.json", "summary.json"] {
        let parse = |d: &Path| serde_json::from_str::<Value>(&std::fs::read_to_string(d.join(name)).unwrap()).unwrap();
        assert_eq!(parse(&whole), parse(&partial), "{name} after the resume");
    }
}

#[test]
fn niah_in_shards_merges_into_the_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = setup(tmp.path());
    let mask = ["--mask-heads", "0-0,1-1", "--pass", "0.3"];
    let whole = tmp.path().join("whole");
    run("niah", &flags, &whole, &mask);
    // 4 shards of 6 groups: two shards hold two groups, two one.
    let shards: Vec<PathBuf> = (1..=4).map(|i| tmp.path().join(format!("part{i}"))).collect();
    for (i, dir) in shards.iter().enumerate() {
        run("niah", &flags, dir, &[&mask[..], &["--shard", &format!("{}/4", i + 1)]].concat());
    }
    let merged = tmp.path().join("merged");
    let mut args = vec!["merge", "--out", merged.to_str().unwrap()];
    args.extend(shards.iter().map(|p| p.to_str().unwrap()));
    ok(&args);
    assert_same_run(&whole, &merged);
    // A niah shard and detect shards are not one sweep.
    let detect = tmp.path().join("detect");
    run("detect", &flags, &detect, &["--shard", "2/4"]);
    let (p1, p3, p4) = (shards[0].to_str().unwrap(), shards[2].to_str().unwrap(), shards[3].to_str().unwrap());
    refused(
        &["merge", "--out", tmp.path().join("x").to_str().unwrap(), p1, detect.to_str().unwrap(), p3, p4],
        &["shards of different sweeps", "command: niah against detect"],
    );
}

#[test]
fn bad_shards_and_commands_that_cannot_be_split_are_refused() {
    for (bad, why) in [
        ("0/3", "I counts from 1"),
        ("4/3", "I is at most N"),
        ("x", "expected I/N"),
        ("1/0", "at least 1"),
        ("2/x", "is not a whole number"),
    ] {
        refused(&["detect", "--out", "unused", "--shard", bad], &[&format!("shard `{bad}`"), why]);
        refused(&["niah", "--out", "unused", "--shard", bad], &[why]);
    }
    refused(&["report", "--out", "unused", "--shard", "1/2"], &["a report cannot be split"]);
    refused(&["bench", "--model", "unused", "--shard", "1/2"], &["bench cannot be split"]);
    refused(&["kv", "--scores", "unused", "--windows", "64", "--out", "unused", "--shard", "1/2"], &["kv cannot be split"]);
}
