//! End to end: `headscope compare` on the published head-score files (fig. 6's 0.96 between Mistral-7B
//! and Mixtral-8x7B) and on small hand-written files, with its table, JSON and plot outputs, and clear
//! errors (exit code 1, no panic) for bad input.

use std::path::{Path, PathBuf};
mod common;
use common::{fails_all, ok_stdout};

/// The cells of the table row named `name` in the section that starts with `section` (rows start with
/// their name; the header, which names the columns, starts with blanks).
fn row(stdout: &str, section: &str, name: &str) -> Vec<String> {
    let start = stdout.find(section).unwrap_or_else(|| panic!("no `{section}` section in:\n{stdout}"));
    let line = stdout[start..]
        .lines()
        .find(|l| l.starts_with(name) && l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} after `{section}` in:\n{stdout}"));
    line.split_whitespace().skip(1).map(str::to_owned).collect()
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("--json printed something that is not JSON ({e}):\n{stdout}"))
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Writes a 1 x n head-score file whose head `i` has the single score `means[i]`.
fn write_scores(path: &Path, means: &[f64]) -> String {
    let body: Vec<String> = means.iter().enumerate().map(|(i, m)| format!("\"0-{i}\": [{m}]")).collect();
    std::fs::write(path, format!("{{{}}}", body.join(", "))).unwrap();
    s(path)
}

fn published() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/refs/head_score");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: {} is absent (it ships with the developers' shared folder only)", dir.display());
        None
    }
}

#[test]
fn published_files_give_the_papers_correlations() {
    let Some(dir) = published() else { return };
    let f = |name: &str| s(&dir.join(format!("{name}.json")));
    let stdout = ok_stdout(&["compare", &f("Mistral-7B-v0.2-hf"), &f("Mixtral-8x7B-v0.1")]);
    assert!(stdout.contains("2 models, 32 layers x 32 heads"), "{stdout}");
    assert_eq!(row(&stdout, "Pearson", "Mistral-7B-v0.2-hf"), ["1.00", "0.96"]);
    assert_eq!(row(&stdout, "Pearson", "Mixtral-8x7B-v0.1"), ["0.96", "1.00"]);
    assert_eq!(row(&stdout, "Spearman", "Mistral-7B-v0.2-hf"), ["1.00", "0.87"]);

    let names = ["Mistral-7B-v0.2-hf", "Mixtral-8x7B-v0.1", "Yi-6B-200K", "llama-2-7b-80k"];
    let files: Vec<String> = names.iter().map(|n| f(n)).collect();
    let mut args = vec!["compare", "--json"];
    args.extend(files.iter().map(String::as_str));
    let v = json(&ok_stdout(&args));
    assert_eq!(v["names"], serde_json::json!(names));
    let p = |i: usize, j: usize| v["pearson"][i][j].as_f64().unwrap();
    assert_eq!(v["pearson"].as_array().unwrap().len(), 4);
    assert!((p(0, 1) - 0.96).abs() < 0.005, "{}", p(0, 1));
    assert!(p(3, 0).abs() < 0.2, "llama-2-7b-80k vs Mistral: {}", p(3, 0));
    for i in 0..4 {
        assert_eq!(p(i, i), 1.0);
        for j in 0..4 {
            assert_eq!(p(i, j), p(j, i));
            assert_eq!(v["spearman"][i][j], v["spearman"][j][i]);
        }
    }
    let v = json(&ok_stdout(&["compare", "--json", &f("Qwen1.5-14B"), &f("Qwen1.5-14B-Chat")]));
    assert!(v["pearson"][0][1].as_f64().unwrap() > 0.8, "{v}");

    // Models with different grids are refused, naming both files and both grids.
    fails_all(
        &["compare", &f("Mistral-7B-v0.2-hf"), &f("Qwen1.5-14B")],
        &["Qwen1.5-14B.json has 40 layers x 40 heads", "Mistral-7B-v0.2-hf.json has 32 layers x 32 heads"],
    );
}

#[test]
fn hand_written_files_table_json_and_plots() {
    let tmp = tempfile::tempdir().unwrap();
    // Means x = 1..5 and y = 2 4 5 4 5: Pearson 6/sqrt(60) = 0.7746, Spearman (ties averaged) 7/sqrt(90) = 0.7379.
    let a = write_scores(&tmp.path().join("a.json"), &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let b = write_scores(&tmp.path().join("b.json"), &[2.0, 4.0, 5.0, 4.0, 5.0]);
    let stdout = ok_stdout(&["compare", &a, &b]);
    assert_eq!(row(&stdout, "Pearson", "a"), ["1.00", "0.77"]);
    assert_eq!(row(&stdout, "Spearman", "b"), ["0.74", "1.00"]);
    // Columns line up: every row of a section has the same length as its header.
    let table: Vec<&str> = stdout.lines().skip(1).take(3).collect();
    assert!(table[1].len() == table[0].len() && table[2].len() == table[0].len(), "{table:#?}");

    let v = json(&ok_stdout(&["compare", "--json", &a, &b]));
    assert_eq!(v.as_object().unwrap().len(), 3, "only names, pearson and spearman: {v}");
    assert_eq!(v["names"], serde_json::json!(["a", "b"]));
    assert!((v["pearson"][0][1].as_f64().unwrap() - 6.0 / 60f64.sqrt()).abs() < 1e-12);
    assert!((v["spearman"][1][0].as_f64().unwrap() - 7.0 / 90f64.sqrt()).abs() < 1e-12);

    let svg = tmp.path().join("corr.svg");
    let png = tmp.path().join("corr.png");
    let stdout = ok_stdout(&["compare", &a, &b, "--plot", &s(&svg)]);
    assert!(stdout.contains(&format!("wrote {}", svg.display())), "{stdout}");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.contains("\na\n") && text.contains("\n0.77\n"), "the SVG lacks names or values");
    // With --json and --plot, stdout is the JSON alone.
    json(&ok_stdout(&["compare", "--json", "--plot", &s(&png), &a, &b]));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));

    // Two files with one stem are named by their paths.
    std::fs::create_dir_all(tmp.path().join("r1")).unwrap();
    std::fs::create_dir_all(tmp.path().join("r2")).unwrap();
    let r1 = write_scores(&tmp.path().join("r1/head_scores.json"), &[0.0, 0.0, 0.3, 0.9, 0.1]);
    let r2 = write_scores(&tmp.path().join("r2/head_scores.json"), &[0.0, 0.1, 0.2, 0.8, 0.0]);
    let v = json(&ok_stdout(&["compare", "--json", &r1, &r2, &a]));
    assert_eq!(v["names"], serde_json::json!([r1, r2, "a"]));
}

#[test]
fn bad_input_exits_with_1_and_a_message() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_scores(&tmp.path().join("a.json"), &[1.0, 2.0, 3.0, 4.0]);
    fails_all(&["compare", &a], &["at least two head-score files, 1 given"]);
    fails_all(&["compare"], &["at least two head-score files, 0 given"]);

    // 1 x 4 against 2 x 2: same number of heads, different grids.
    let grid = tmp.path().join("grid.json");
    std::fs::write(&grid, r#"{"0-0": [1], "0-1": [2], "1-0": [3], "1-1": [4]}"#).unwrap();
    fails_all(&["compare", &a, &s(&grid)], &["grid.json has 2 layers x 2 heads", "a.json has 1 layers x 4 heads"]);

    let bad = tmp.path().join("broken.json");
    std::fs::write(&bad, r#"{"0-0": [1], "0-1": "#).unwrap();
    fails_all(&["compare", &a, &s(&bad)], &["broken.json", "not JSON"]);
    let not_scores = tmp.path().join("list.json");
    std::fs::write(&not_scores, "[1, 2, 3]").unwrap();
    fails_all(&["compare", &s(&not_scores), &a], &["list.json", "expected an object"]);
    fails_all(&["compare", &a, &s(&tmp.path().join("missing.json"))], &["missing.json"]);

    // All heads at 0 (a model that never retrieved): the correlation is undefined, not 0 or NaN.
    let flat = write_scores(&tmp.path().join("flat.json"), &[0.0; 4]);
    fails_all(&["compare", &a, &flat], &["flat", "undefined"]);

    let b = write_scores(&tmp.path().join("b.json"), &[4.0, 3.0, 2.0, 1.0]);
    fails_all(&["compare", &a, &b, "--plot", &s(&tmp.path().join("corr.bmp"))], &["corr.bmp", "neither .png nor .svg"]);
    fails_all(&["compare", &a, &b, "--plot", &s(&tmp.path().join("no-dir/corr.png"))], &["no-dir"]);
}

/// A hybrid's files: a tiny random Jamba's detect run writes eq. 1 and the data-free scores (which
/// differ between heads even on random weights), `compare` correlates two Jamba runs, and an
/// all-zero eq. 1 file (random weights find no needle) is named as the reason, not a panic; the
/// Jamba-v0.1 file from the lent GPU (committed beside BENCHMARKS.md) reads the same way.
#[test]
fn a_jamba_runs_head_score_files_open_in_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for seed in ["0", "1"] {
        let model = tmp.path().join(format!("jamba-{seed}"));
        ok_stdout(&["tiny-model", "--arch", "jamba", "--seed", seed, "--out", &s(&model)]);
        let out = tmp.path().join(format!("detect-{seed}"));
        let (model_s, out_s) = (s(&model), s(&out));
        let haystack = format!("{}/../../public/haystacks/village.txt", env!("CARGO_MANIFEST_DIR"));
        let heldout = std::fs::read_to_string(format!("{}/../../public/needles/heldout.jsonl", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let needles = s(&tmp.path().join("needles.jsonl"));
        std::fs::write(&needles, heldout.lines().take(2).collect::<Vec<_>>().join("\n")).unwrap();
        let mut args = vec!["detect", "--model", &model_s, "--haystack", &haystack, "--needles", &needles, "--out", &out_s];
        args.extend("--lengths 200 --depths 2 --max-new-tokens 4 --gate 0 --score eq1,induction,echo".split_whitespace());
        ok_stdout(&args);
        let run: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
        assert_eq!(run["model"]["attention_layers"], serde_json::json!([1, 3]), "the tiny Jamba's attention layers are recorded");
        runs.push(out);
    }
    let stdout =
        ok_stdout(&["compare", "--json", &s(&runs[0].join("head_scores_induction.json")), &s(&runs[1].join("head_scores_induction.json"))]);
    let m = json(&stdout);
    let r = m["pearson"][0][1].as_f64().expect("a correlation between the two Jamba runs");
    assert!((-1.0..=1.0).contains(&r) && r != 1.0, "two random Jambas' induction scores differ: {r}");
    let stdout = ok_stdout(&["compare", &s(&runs[0].join("head_scores_induction.json")), &s(&runs[0].join("head_scores_echo.json"))]);
    assert!(stdout.contains("Spearman"), "{stdout}");
    let eq1 = s(&runs[0].join("head_scores.json"));
    fails_all(&["compare", &eq1, &eq1], &["same mean score", "undefined"]);
    let gpu = format!("{}/../../bench/results/2026-12-06/table1/jamba-v0.1/detect/head_scores.json", env!("CARGO_MANIFEST_DIR"));
    fails_all(&["compare", &gpu, &gpu], &["same mean score", "undefined"]);
    fails_all(&["compare", &gpu, &eq1], &["4 layers x 32 heads", "2 layers x 4 heads"]);
}
