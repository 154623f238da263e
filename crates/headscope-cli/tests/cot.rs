//! End to end: `headscope cot` on a tiny random model. Every mask gets its own records (each task in
//! both modes), the summary's accuracies are those of the records, the masks are the score file's
//! top-K and random non-retrieval heads, a rerun answers nothing, and bad input is named.

use headscope_core::cot::{accuracy, CotRecord};
use headscope_core::files::RunInfo;
use headscope_core::HeadId;
use std::path::Path;
mod common;
use common::{fails, ok};

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel).to_string_lossy().into_owned()
}

fn records(dir: &Path) -> Vec<CotRecord> {
    std::fs::read_to_string(dir.join("cot.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn cot_answers_every_task_in_both_modes_under_every_mask_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("tiny").to_string_lossy().into_owned();
    ok(&["tiny-model", "--out", &model]);
    // Two tasks of each shipped file.
    let mut lines = Vec::new();
    for file in ["public/cot/word-problems.jsonl", "public/cot/two-hop.jsonl"] {
        lines.extend(std::fs::read_to_string(repo(file)).unwrap().lines().take(2).map(str::to_owned));
    }
    let tasks = t.join("tasks.jsonl");
    std::fs::write(&tasks, lines.join("\n")).unwrap();
    // 2 x 4 heads; heads 1-2 and 0-1 are the retrieval heads.
    let scores = t.join("scores.json");
    std::fs::write(&scores, r#"{"0-0": [0], "0-1": [0.3], "0-2": [0], "0-3": [0.05], "1-0": [0], "1-1": [0], "1-2": [0.6], "1-3": [0]}"#)
        .unwrap();
    let out = t.join("cot");
    let (tasks_s, scores_s, out_s) =
        (tasks.to_string_lossy().into_owned(), scores.to_string_lossy().into_owned(), out.to_string_lossy().into_owned());
    let args = ["cot", "--model", &model, "--out", &out_s, "--tasks", &tasks_s, "--scores", &scores_s, "--seeds", "2"];
    let args: Vec<&str> = args.into_iter().chain(["--max-new-tokens-direct", "4", "--max-new-tokens-step", "8"]).collect();
    ok(&args);
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    for (name, heads) in [("none", vec![]), ("top-2", vec![HeadId::new(1, 2), HeadId::new(0, 1)])] {
        let info: RunInfo = serde_json::from_str(&std::fs::read_to_string(out.join(name).join("run.json")).unwrap()).unwrap();
        assert_eq!(info.mask.map(|m| m.heads).unwrap_or_default(), heads, "{name}");
    }
    let mut all_random = Vec::new();
    for seed in 0..2 {
        let info: RunInfo =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("random-2-s{seed}")).join("run.json")).unwrap()).unwrap();
        let heads = info.mask.unwrap().heads;
        assert!(heads.len() == 2 && !heads.contains(&HeadId::new(1, 2)) && !heads.contains(&HeadId::new(0, 1)), "{heads:?}");
        all_random.extend(records(&out.join(format!("random-2-s{seed}"))));
    }
    for name in ["none", "top-2", "random-2-s0", "random-2-s1"] {
        let r = records(&out.join(name));
        assert_eq!(r.len(), 8, "{name}: 4 tasks x 2 modes");
        assert!(r.iter().all(|r| r.new_tokens <= 8 && r.correct == headscope_core::cot::exact_match(&r.predicted, &r.gold)));
    }
    // The summary: per kind, mode and mask group, the accuracy of those records (random seeds pooled).
    let rows = summary["accuracy"].as_array().unwrap();
    assert_eq!(rows.len(), 2 * 2 * 3);
    for row in rows {
        let pool = match row["mask"].as_str().unwrap() {
            "none" => records(&out.join("none")),
            "top-K" => records(&out.join("top-2")),
            _ => all_random.clone(),
        };
        let sel: Vec<&CotRecord> =
            pool.iter().filter(|r| r.kind == row["kind"].as_str().unwrap() && serde_json::json!(r.mode) == row["mode"]).collect();
        assert_eq!(row["answers"].as_u64().unwrap() as usize, sel.len());
        assert_eq!(row["accuracy"].as_f64().unwrap(), accuracy(sel));
    }
    assert!(std::fs::read(out.join("fig10-cot.png")).unwrap().starts_with(b"\x89PNG"));
    // A rerun answers nothing and keeps the records.
    let before = std::fs::read(out.join("top-2/cot.jsonl")).unwrap();
    let (_, stderr) = ok(&args);
    assert!(stderr.contains("nothing to run"), "{stderr}");
    assert_eq!(std::fs::read(out.join("top-2/cot.jsonl")).unwrap(), before);
    // Bad input.
    let twice = [tasks_s.as_str(), tasks_s.as_str()];
    fails(&["cot", "--model", &model, "--out", &out_s, "--tasks", twice[0], twice[1]], "used by an earlier task file");
    fails(&["cot", "--model", &model, "--out", &out_s, "--tasks", &tasks_s, "--k", "0"], "must be at least 1");
    std::fs::write(&tasks, lines[0].replace("\"answer\": \"19\"", "\"answer\": \"nineteen\"")).unwrap();
    fails(&["cot", "--model", &model, "--out", &out_s, "--tasks", &tasks_s], "not a whole number");
}
