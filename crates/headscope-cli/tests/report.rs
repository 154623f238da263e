//! End to end: `headscope report` on a tiny random model and a tiny grid. Every figure file is there,
//! its data agrees with the sub-runs it was made from (and with core's functions applied to them), a
//! masked sub-run equals what `headscope niah` makes on its own, and a rerun does no model work.

use headscope_core::analysis::{always_active, correlation_matrix, head_activity, ranking_stability, score_distribution};
use headscope_core::files::{read_head_scores, RunInfo, TestLog};
use headscope_core::qa::{prediction, QaRecord};
use headscope_core::{masking, HeadId, HeadScores};
use serde_json::Value;
use std::path::{Path, PathBuf};
mod common;
use common::{fails, ok};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

const STEMS: [&str; 8] = [
    "fig3-score-bands",
    "fig4-head-activity",
    "fig5-heatmap",
    "fig6-correlation",
    "fig7-masking",
    "fig8-qa",
    "fig9-failures",
    "fig13-ranking-stability",
];

/// Writes a 2 x 4 head-score file with one test per head.
fn write_scores(path: &Path, means: [f64; 8]) -> String {
    let body: Vec<String> = means.iter().enumerate().map(|(i, m)| format!("\"{}-{}\": [{m}]", i / 4, i % 4)).collect();
    std::fs::write(path, format!("{{{}}}", body.join(", "))).unwrap();
    s(path)
}

#[test]
fn report_draws_every_figure_from_its_runs_and_reruns_for_free() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("tiny");
    ok(&["tiny-model", "--out", &s(&model)]);
    let needles = t.join("needles.jsonl");
    let heldout = std::fs::read_to_string(repo("public/needles/heldout.jsonl")).unwrap();
    std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let qa_file = t.join("qa.jsonl");
    let qa_text = std::fs::read_to_string(repo("public/qa/john-qa.jsonl")).unwrap();
    std::fs::write(&qa_file, qa_text.lines().take(3).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let a = write_scores(&t.join("a.json"), [0.0, 0.5, 0.1, 0.0, 0.2, 0.0, 0.9, 0.3]);
    let b = write_scores(&t.join("b.json"), [0.1, 0.4, 0.0, 0.0, 0.3, 0.0, 0.7, 0.0]);
    let out = t.join("report");
    let (model_s, out_s, needles_s, qa_s, hay_s) =
        (s(&model), s(&out), s(&needles), s(&qa_file), s(&repo("public/haystacks/kjv-john.txt")));
    let grid = ["--lengths", "160:240:2", "--depths", "2", "--max-new-tokens", "6", "--gate", "0"];
    let mut args = vec!["report", "--model", &model_s, "--out", &out_s, "--needles", &needles_s, "--haystack", &hay_s, "--qa", &qa_s];
    args.extend(grid);
    args.extend(["--seeds", "2", "--qa-max-new-tokens", "4", "--compare", &a, &b]);
    let (stdout, stderr) = ok(&args);
    assert!(stdout.contains("report.html"), "{stdout}");
    assert!(stderr.contains("loading") && stderr.contains("answering"), "{stderr}");

    // Every figure in four files, and one page holding every figure inline.
    let fig = out.join("figures");
    for stem in STEMS {
        for ext in ["png", "svg", "json", "csv"] {
            assert!(fig.join(format!("{stem}.{ext}")).is_file(), "{stem}.{ext} missing");
        }
        assert!(std::fs::read(fig.join(format!("{stem}.png"))).unwrap().starts_with(b"\x89PNG\r\n\x1a\n"));
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), STEMS.len(), "one inline SVG per figure");
    assert!(!html.contains("<img") && html.contains("Fig. 9") && html.contains("Fig. 13"));

    // The detection run and its scores: figs. 3, 4, 5, 13.
    let scores = read_head_scores(&out.join("detect/head_scores.json")).unwrap();
    let shape = scores.shape();
    let detect = TestLog::open(&out.join("detect/tests.jsonl")).unwrap();
    assert_eq!(detect.records().len(), 2 * 2 * 2);
    let f3 = json(&fig.join("fig3-score-bands.json"));
    let d = score_distribution(&scores);
    let bands = f3["bands"].as_array().unwrap();
    let shares: Vec<f64> = bands.iter().map(|b| b["share"].as_f64().unwrap()).collect();
    assert!(close(shares.iter().sum(), 1.0), "{shares:?}");
    assert_eq!(shares, d.shares().to_vec());
    assert_eq!(bands.iter().map(|b| b["heads"].as_u64().unwrap() as usize).collect::<Vec<_>>(), d.counts().to_vec());
    let f4 = json(&fig.join("fig4-head-activity.json"));
    assert_eq!(f4["always_active"], always_active(&scores));
    assert_eq!(f4["heads"], serde_json::to_value(head_activity(&scores)).unwrap());
    assert_eq!(f4["heads"].as_array().unwrap().len(), shape.count());
    assert_eq!(json(&fig.join("fig5-heatmap.json"))["mean"], serde_json::to_value(scores.mean_grid()).unwrap());
    let f13 = json(&fig.join("fig13-ranking-stability.json"));
    for curve in f13["curves"].as_array().unwrap() {
        let k = curve["k"].as_u64().unwrap() as usize;
        let want = ranking_stability(detect.records(), shape, 0.0, k).unwrap();
        let got: Vec<(usize, f64)> = curve["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["tests"].as_u64().unwrap() as usize, p["share"].as_f64().unwrap()))
            .collect();
        assert_eq!(got, want, "k {k}");
    }

    // Fig. 6: the correlations core computes for these models (a model whose heads all score alike has
    // undefined correlations and is left out, with a note).
    let f6 = json(&fig.join("fig6-correlation.json"));
    let named = |n: &str, p: &str| (n.to_owned(), read_head_scores(Path::new(p)).unwrap());
    let mine = ("tiny".to_owned(), scores.clone());
    let want = correlation_matrix(&[mine, named("a", &a), named("b", &b)])
        .or_else(|_| correlation_matrix(&[named("a", &a), named("b", &b)]))
        .unwrap();
    assert_eq!(f6["matrix"], serde_json::to_value(&want).unwrap());

    // Figs. 7 and 9: K up to 2 (twice the retrieval heads, at least 2), random-K from 2 seeds.
    let retrieval = scores.retrieval_heads(0.1).len().max(1);
    let k_max = 2 * retrieval;
    let f7 = json(&fig.join("fig7-masking.json"));
    let top = f7["top"].as_array().unwrap();
    assert_eq!(top.len(), k_max + 1);
    let rate_of = |run: &str| json(&out.join(run).join("summary.json"))["pass_rate"].as_f64().unwrap();
    for (k, point) in top.iter().enumerate() {
        let run = if k == 0 { "mask/none".to_owned() } else { format!("mask/top-{k}") };
        assert_eq!((point["k"].as_u64().unwrap() as usize, point["run"].as_str().unwrap()), (k, run.as_str()));
        assert_eq!(point["pass_rate"].as_f64().unwrap(), rate_of(&run), "{run}");
        let log = TestLog::open(&out.join(&run).join("tests.jsonl")).unwrap();
        let passed = log.records().iter().filter(|r| r.recall >= 0.5).count();
        assert!(close(rate_of(&run), passed as f64 / log.records().len() as f64));
        if k > 0 {
            let want = masking::top_k(&scores, k).unwrap();
            assert!(log.records().iter().all(|r| r.masked_heads == want), "{run} masks the top {k}");
        }
    }
    for point in f7["random"].as_array().unwrap() {
        let k = point["k"].as_u64().unwrap() as usize;
        let seeds = point["seeds"].as_array().unwrap();
        assert_eq!(seeds.len(), 2);
        let mut sum = 0.0;
        for (seed, sp) in seeds.iter().enumerate() {
            let run = format!("mask/random-{k}-s{seed}");
            assert_eq!(sp["pass_rate"].as_f64().unwrap(), rate_of(&run));
            sum += rate_of(&run);
            let info: RunInfo = serde_json::from_str(&std::fs::read_to_string(out.join(&run).join("run.json")).unwrap()).unwrap();
            assert_eq!(info.mask.unwrap().heads, masking::random_k(&scores, k, seed as u64, 0.1).unwrap());
            assert_eq!(info.seed, Some(seed as u64));
        }
        assert!(close(point["spread"]["mean"].as_f64().unwrap(), sum / 2.0));
    }

    // The shared prefill changes nothing: the unmasked run decodes exactly as detect did, and a masked
    // run exactly as `headscope niah --mask-top` does on its own.
    let none = TestLog::open(&out.join("mask/none/tests.jsonl")).unwrap();
    for r in detect.records() {
        let n = none.get(&r.id).unwrap();
        assert_eq!((&n.generated_ids, &n.hits), (&r.generated_ids, &r.hits), "{}", r.id);
    }
    let alone = t.join("alone");
    let scores_file = s(&out.join("detect/head_scores.json"));
    let mut niah = vec!["niah", "--model", &model_s, "--out", alone.to_str().unwrap(), "--needles", &needles_s, "--haystack", &hay_s];
    niah.extend(&grid[..6]);
    niah.extend(["--mask-top", "2", "--scores", &scores_file]);
    ok(&niah);
    let alone_log = TestLog::open(&alone.join("tests.jsonl")).unwrap();
    let batch = TestLog::open(&out.join("mask/top-2/tests.jsonl")).unwrap();
    assert_eq!(alone_log.records().len(), batch.records().len());
    for r in alone_log.records() {
        let m = batch.get(&r.id).unwrap();
        assert_eq!((&m.generated_ids, &m.hits, m.recall), (&r.generated_ids, &r.hits, r.recall), "{}", r.id);
    }

    // Fig. 9: every test of every masking run counted once; the watched heads' argmax kept per step.
    let watched: Vec<HeadId> = scores.ranked().iter().take(retrieval).map(|h| h.0).collect();
    let f9 = json(&fig.join("fig9-failures.json"));
    assert_eq!(f9["watched_heads"], serde_json::to_value(watched.iter().map(HeadId::to_string).collect::<Vec<_>>()).unwrap());
    let csv = std::fs::read_to_string(fig.join("fig9-failures.csv")).unwrap();
    let runs = f9["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1 + k_max + 2 * k_max);
    for run in runs {
        let name = run["run"].as_str().unwrap();
        let log = TestLog::open(&out.join(name).join("tests.jsonl")).unwrap();
        let c = &run["counts"];
        let n = |key: &str| c[key].as_u64().unwrap() as usize;
        assert_eq!(n("tests"), log.records().len(), "{name}");
        assert_eq!(n("passed"), log.records().iter().filter(|r| r.recall >= 0.5).count(), "{name}");
        assert_eq!(n("passed") + n("incomplete_retrieval") + n("hallucination") + n("wrong_extraction") + n("empty"), n("tests"));
        assert!(n("hallucination_on_sink") <= n("hallucination_sink_known") && n("hallucination_sink_known") <= n("hallucination"));
        let failed_rows = csv.lines().filter(|l| l.starts_with(&format!("{name},"))).count();
        assert_eq!(failed_rows, n("tests") - n("passed"), "{name}: one CSV row per failed test");
        for r in log.records() {
            let argmax = r.head_argmax.as_ref().expect("masking runs keep the watched heads' argmax");
            assert_eq!(argmax.keys().copied().collect::<Vec<_>>(), watched);
            assert!(argmax.values().all(|p| p.len() == r.generated_ids.len()));
        }
    }

    // Fig. 8: F1 per QA run is the mean of its answers' token F1, each scored on the answer's first line.
    let f8 = json(&fig.join("fig8-qa.json"));
    assert_eq!(f8["items"], 3);
    let qa_runs = f8["runs"].as_array().unwrap();
    // K of the QA runs: the number of retrieval heads, at least 1.
    let q = retrieval;
    let want_runs = ["qa/none".to_owned(), format!("qa/top-{q}"), format!("qa/random-{q}-s0"), format!("qa/random-{q}-s1")];
    assert_eq!(qa_runs.iter().map(|r| r["run"].as_str().unwrap()).collect::<Vec<_>>(), want_runs);
    for run in qa_runs {
        let dir = out.join(run["run"].as_str().unwrap());
        let records: Vec<QaRecord> =
            std::fs::read_to_string(dir.join("qa.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(records.len(), 3);
        for r in &records {
            assert_eq!(r.prediction, prediction(&r.answer));
            assert_eq!(r.f1, headscope_core::metrics::token_f1(&r.prediction, &r.answers));
            assert!(!r.generated_ids.is_empty() && r.generated_ids.len() <= 4);
        }
        let mean = records.iter().map(|r| r.f1).sum::<f64>() / 3.0;
        assert!(close(run["mean_f1"].as_f64().unwrap(), mean));
        assert_eq!(json(&dir.join("summary.json"))["mean_f1"].as_f64().unwrap(), run["mean_f1"].as_f64().unwrap());
        let masked: Vec<HeadId> = records[0].masked_heads.clone();
        assert_eq!(serde_json::to_value(&masked).unwrap(), run["masked_heads"]);
    }
    assert_eq!(top_heads(&scores, q), serde_json::from_value::<Vec<HeadId>>(qa_runs[1]["masked_heads"].clone()).unwrap());

    // A second invocation does no model work and leaves every run as it was.
    let logs = |root: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v = Vec::new();
        for dir in ["detect", "mask", "qa"] {
            collect(&root.join(dir), &mut v);
        }
        v
    };
    let before = logs(&out);
    let figures_before = std::fs::read(fig.join("fig7-masking.json")).unwrap();
    let (_, stderr) = ok(&args);
    assert!(!stderr.contains("loading") && !stderr.contains("answering"), "{stderr}");
    assert!(stderr.matches("nothing to run").count() == 3, "{stderr}");
    assert_eq!(logs(&out), before);
    assert_eq!(std::fs::read(fig.join("fig7-masking.json")).unwrap(), figures_before);

    // A masking run cut short resumes just its missing tests, to the same outcome.
    let top1 = out.join("mask/top-1/tests.jsonl");
    let full = std::fs::read_to_string(&top1).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    std::fs::write(&top1, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    let (_, stderr) = ok(&args);
    assert!(stderr.contains("loading") && stderr.contains("[") && !stderr.contains("answering"), "{stderr}");
    let again = TestLog::open(&top1).unwrap();
    let old = TestLog::open(&out.join("mask/top-2/tests.jsonl")).unwrap();
    assert_eq!(again.records().len(), lines.len());
    assert_eq!(old.records().len(), lines.len(), "other runs are untouched");
    for line in &lines {
        let r: headscope_core::files::TestRecord = serde_json::from_str(line).unwrap();
        assert_eq!(again.get(&r.id).unwrap().generated_ids, r.generated_ids);
    }
}

fn top_heads(scores: &HeadScores, k: usize) -> Vec<HeadId> {
    masking::top_k(scores, k).unwrap()
}

/// Every tests.jsonl and qa.jsonl under `dir`, with its bytes.
fn collect(dir: &Path, into: &mut Vec<(PathBuf, Vec<u8>)>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, into);
        } else if p.file_name().is_some_and(|n| n == "tests.jsonl" || n == "qa.jsonl") {
            into.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
}

#[test]
fn bad_report_input_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let model = t.join("tiny");
    ok(&["tiny-model", "--out", &s(&model)]);
    let out = t.join("r");
    let (model_s, out_s) = (s(&model), s(&out));
    let hay = s(&repo("public/haystacks/kjv-john.txt"));
    let needles = s(&repo("public/needles/heldout.jsonl"));
    let base = ["report", "--model", &model_s, "--out", &out_s, "--haystack", &hay, "--needles", &needles];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|x| x.to_string()).collect() };
    let run = |v: &[String], expect: &str| fails(&v.iter().map(String::as_str).collect::<Vec<_>>(), expect);
    run(&with(&["--qa", "no-such-qa.jsonl"]), "--qa no-such-qa.jsonl: no such file");
    run(&with(&["--no-qa", "--seeds", "0"]), "--seeds must be at least 1");
    run(&with(&["--no-qa", "--pass", "2"]), "--pass must be between 0 and 1");
    let wide = t.join("wide.json");
    std::fs::write(&wide, r#"{"0-0": [1], "0-1": [0], "1-0": [0], "1-1": [0]}"#).unwrap();
    run(&with(&["--no-qa", "--compare", &s(&wide)]), "wide.json has 2 layers x 2 heads but the model has 2 x 4");
    let bad_qa = t.join("bad.jsonl");
    std::fs::write(&bad_qa, "{\"context\": \"A pool.\", \"question\": \"Which?\", \"answers\": [\"Siloam\"]}\n").unwrap();
    run(&with(&["--qa", &s(&bad_qa)]), "occurs in the context");
    assert!(!out.exists(), "nothing is written for bad input");
}

/// `--scores`: each score's top-K heads are masked in sub-runs of their own, and the causal figure and
/// the correlation matrix come from those runs and the detection's score files. On the lab model, the
/// heads eq. 1 finds are those soft finds, and masking three of them breaks retrieval. (In lab model
/// v4 the retrieval heads are also its induction heads, so induction's top heads break it too; in v3
/// they were not.)
#[test]
fn report_sets_the_scores_side_by_side() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("scores");
    // Two held-out needles at one length keep the 13 sub-runs short.
    let needles = tmp.path().join("needles.jsonl");
    let heldout = std::fs::read_to_string(repo("public/needles/heldout.jsonl")).unwrap();
    std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .current_dir(repo(""))
        .args(["report", "--out", &s(&out), "--no-qa", "--needles", &s(&needles), "--lengths", "256", "--depths", "2"])
        .args(["--k-max", "3", "--seeds", "1", "--scores", "soft,induction"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fig = json(&out.join("figures/fig-scores-causal.json"));
    let detect = out.join("detect");
    for (kind, file) in [("eq1", "head_scores.json"), ("soft", "head_scores_soft.json"), ("induction", "head_scores_induction.json")] {
        let scores = read_head_scores(&detect.join(file)).unwrap();
        let points = fig["top"][kind].as_array().unwrap_or_else(|| panic!("{kind} curve"));
        assert_eq!(points.len(), 4, "{kind}: K = 0..3");
        for p in points.iter().skip(1) {
            let k = p["k"].as_u64().unwrap() as usize;
            let run = out.join(p["run"].as_str().unwrap());
            let summary = json(&run.join("summary.json"));
            assert!(close(p["pass_rate"].as_f64().unwrap(), summary["pass_rate"].as_f64().unwrap()), "{kind} K={k}");
            let log = TestLog::open(&run.join("tests.jsonl")).unwrap();
            let mut want = top_heads(&scores, k);
            want.sort();
            let mut got = log.records()[0].masked_heads.clone();
            got.sort();
            assert_eq!(got, want, "{kind} K={k}: the score's own top-K heads");
        }
    }
    let rate = |kind: &str, k: usize| fig["top"][kind][k]["pass_rate"].as_f64().unwrap();
    assert!(rate("eq1", 0) >= 0.75, "the lab model finds these needles unmasked");
    assert!(rate("eq1", 3) < 0.2 && rate("soft", 3) < 0.2, "masking the retrieval heads breaks retrieval");
    let m = json(&out.join("figures/fig-scores-correlation.json"));
    assert_eq!(m["names"], serde_json::json!(["eq1", "soft", "induction"]));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Which score is causal?") && html.contains("How alike are the scores?"));
}

/// A hybrid: the report of a tiny random Jamba runs its sub-runs and writes every figure; fig. 5's
/// data is the 2 attention layers' grid (Jamba's Mamba layers have no heads).
#[test]
fn report_runs_on_a_jamba() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("jamba");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(["tiny-model", "--arch", "jamba", "--out", &s(&model)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let needles = tmp.path().join("needles.jsonl");
    let heldout = std::fs::read_to_string(repo("public/needles/heldout.jsonl")).unwrap();
    std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = tmp.path().join("report");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .current_dir(repo(""))
        .args(["report", "--model", &s(&model), "--out", &s(&out), "--no-qa", "--needles", &s(&needles), "--lengths", "256"])
        .args(["--depths", "2", "--max-new-tokens", "4", "--gate", "0", "--k-max", "2", "--seeds", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fig5 = json(&out.join("figures/fig5-heatmap.json"));
    assert_eq!((fig5["layers"].as_u64(), fig5["heads"].as_u64()), (Some(2), Some(4)), "{fig5}");
    for f in ["fig5-heatmap.png", "fig5-heatmap.svg", "fig7-masking.png"] {
        assert!(out.join("figures").join(f).is_file(), "{f}");
    }
    assert!(std::fs::read_to_string(out.join("report.html")).unwrap().contains("Fig. 5"));
}
