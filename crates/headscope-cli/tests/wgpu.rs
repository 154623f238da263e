//! `--device wgpu`: `detect`, `niah`, `report` and `bench` on the page's WGSL forward (here on whatever Vulkan driver the
//! machine has; CI's is lavapipe) give the records the candle CPU path gives: the same greedy answers
//! and the same eq. 1 hits for at least 99 % of (test, head) pairs. Without a GPU adapter the test says
//! why it skips and passes.

mod common;
use common::{fails, headscope, ok};
use headscope_core::files::TestLog;
use std::path::Path;

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel).to_string_lossy().into_owned()
}

/// A tiny Llama model and the first two held-out needles in `dir`: their paths.
fn tiny_model_and_needles(dir: &Path) -> (String, String) {
    let model = dir.join("tiny").to_string_lossy().into_owned();
    ok(&["tiny-model", "--out", &model, "--arch", "llama"]);
    let needles = dir.join("needles.jsonl");
    let heldout = std::fs::read_to_string(repo("public/needles/heldout.jsonl")).unwrap();
    std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    (model, needles.to_string_lossy().into_owned())
}

/// Runs `run` on wgpu, then on the CPU; both must succeed. None (the test then skips, saying why)
/// where the machine has no GPU adapter.
fn on_wgpu_and_cpu<T>(what: &str, run: impl Fn(&str) -> (std::process::Output, T)) -> Option<(String, T, T)> {
    let (gpu, gpu_out) = run("wgpu");
    let stderr = String::from_utf8_lossy(&gpu.stderr).into_owned();
    if !gpu.status.success() && stderr.contains("no usable GPU adapter") {
        eprintln!("SKIPPING the wgpu {what} test: {stderr}");
        return None;
    }
    assert!(gpu.status.success(), "{stderr}");
    let (cpu, cpu_out) = run("cpu");
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));
    Some((stderr, gpu_out, cpu_out))
}

/// The records of a `tests.jsonl`, by test id (engines may finish tests in another order).
fn sorted_records(path: &Path) -> Vec<headscope_core::files::TestRecord> {
    let mut r = TestLog::open(path).unwrap().records().to_vec();
    r.sort_by(|a, b| a.id.cmp(&b.id));
    r
}

#[test]
fn a_wgpu_sweep_gives_the_cpu_sweeps_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, needles) = tiny_model_and_needles(tmp.path());
    let haystack = repo("public/haystacks/kjv-john.txt");
    let run = |device: &str| {
        let out = tmp.path().join(device).to_string_lossy().into_owned();
        let args = [
            "detect",
            "--model",
            &model,
            "--out",
            &out,
            "--needles",
            &needles,
            "--haystack",
            &haystack,
            "--lengths",
            "160:400:3",
            "--depths",
            "4",
            "--max-new-tokens",
            "8",
            "--device",
            device,
        ];
        (headscope(&args), out)
    };
    let Some((stderr, gpu_out, cpu_out)) = on_wgpu_and_cpu("CLI", run) else { return };
    assert!(stderr.contains("wgpu adapter:"), "{stderr}");

    let records = |dir: &str| sorted_records(&Path::new(dir).join("tests.jsonl"));
    let (g, c) = (records(&gpu_out), records(&cpu_out));
    assert_eq!(g.len(), 2 * 3 * 4);
    assert_eq!(g.len(), c.len());
    let (mut agree, mut total) = (0, 0);
    for (g, c) in g.iter().zip(&c) {
        assert_eq!((&g.id, &g.prompt_hash), (&c.id, &c.prompt_hash));
        assert_eq!(g.generated_ids, c.generated_ids, "{}: the same greedy answer", g.id);
        for layer in 0..2 {
            for head in 0..4 {
                let h = headscope_core::HeadId::new(layer, head);
                total += 1;
                agree += usize::from(g.hits.get(&h) == c.hits.get(&h));
            }
        }
    }
    assert!(agree as f64 >= 0.99 * total as f64, "hits agree for {agree} of {total} (test, head) pairs");
    let run_json = std::fs::read_to_string(Path::new(&gpu_out).join("run.json")).unwrap();
    assert!(run_json.contains("\"wgpu\"") && run_json.contains("\"f32\""), "{run_json}");
}

#[test]
fn wgpu_is_refused_where_it_does_not_run() {
    fails(&["generate", "--prompt", "x", "--device", "wgpu"], "`detect`, `niah`, `report` and `bench` only");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny").to_string_lossy().into_owned();
    let out = tmp.path().join("out").to_string_lossy().into_owned();
    ok(&["tiny-model", "--out", &model, "--arch", "llama"]);
    fails(&["detect", "--model", &model, "--out", &out, "--device", "wgpu", "--dtype", "bf16"], "computes in f32");
    fails(&["niah", "--model", &model, "--out", &out, "--device", "wgpu", "--prefill-chunk", "64"], "chooses its own");
    fails(&["bench", "--model", &model, "--lengths", "100", "--device", "wgpu", "--dtype", "f16"], "computes in f32");
    fails(&["bench", "--model", &model, "--lengths", "100", "--device", "wgpu", "--max-context"], "candle path only");
}

/// `bench` times the same work on wgpu: the same prompts, the same greedy tokens and (>= 99 %) argmax
/// positions as on the CPU, and a depth sweep that reuses prefixes there too.
#[test]
fn a_wgpu_bench_runs_the_cpu_benchs_tests() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = tiny_model_and_needles(tmp.path());
    let run = |device: &str| {
        let json = tmp.path().join(format!("{device}.json"));
        let prompts = tmp.path().join(format!("{device}-prompts.json"));
        let args = [
            "bench",
            "--model",
            &model,
            "--lengths",
            "200,400",
            "--steps",
            "6",
            "--sweep-depths",
            "3",
            "--device",
            device,
            "--json",
            &json.to_string_lossy(),
            "--save-prompts",
            &prompts.to_string_lossy(),
        ];
        let read = |p: &Path| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).unwrap_or_default()).ok();
        let out = headscope(&args);
        (out, (read(&json), read(&prompts)))
    };
    let Some((_, (gpu_report, gpu_prompts), (_, cpu_prompts))) = on_wgpu_and_cpu("bench", run) else { return };
    let report = gpu_report.unwrap();
    assert_eq!(report["device"], "wgpu");
    assert_eq!(report["dtype"], "f32");
    let lengths = report["lengths"].as_array().unwrap();
    assert_eq!(lengths.len(), 2);
    for l in lengths {
        assert_eq!(l["fits"], true, "{l}");
        assert!(l["decode_step_ms"].as_f64().unwrap() > 0.0 && l["prefill_seconds"].as_f64().unwrap() > 0.0, "{l}");
        // Deepest first, each test keeps what it shares with the one before.
        assert!(l["sweep_reused_share"].as_f64().unwrap() > 0.0, "{l}");
    }
    let tests = |v: Option<serde_json::Value>| v.unwrap()["tests"].as_array().unwrap().clone();
    let (g, c) = (tests(gpu_prompts), tests(cpu_prompts));
    assert_eq!(g.len(), 2);
    let (mut same, mut all) = (0, 0);
    for (g, c) in g.iter().zip(&c) {
        assert_eq!(g["prompt_ids"], c["prompt_ids"]);
        assert_eq!(g["headscope_tokens"], c["headscope_tokens"], "the greedy tokens differ");
        let positions = |t: &serde_json::Value| -> Vec<u64> {
            t["headscope_argmax"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s.as_array().unwrap().iter().map(|p| p.as_u64().unwrap()))
                .collect()
        };
        let (gp, cp) = (positions(g), positions(c));
        assert_eq!(gp.len(), cp.len());
        same += gp.iter().zip(&cp).filter(|(a, b)| a == b).count();
        all += gp.len();
    }
    assert!(same * 100 >= all * 99, "{same} of {all} argmax positions agree");
}

#[test]
fn a_wgpu_report_answers_as_the_cpu_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, needles) = tiny_model_and_needles(tmp.path());
    let qa = tmp.path().join("qa.jsonl");
    let qa_text = std::fs::read_to_string(repo("public/qa/john-qa.jsonl")).unwrap();
    std::fs::write(&qa, qa_text.lines().take(3).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (qa, haystack) = (qa.to_string_lossy().into_owned(), repo("public/haystacks/kjv-john.txt"));
    let run = |device: &str| {
        let out = tmp.path().join(device);
        let o = out.to_string_lossy().into_owned();
        let args = [
            "report",
            "--model",
            &model,
            "--out",
            &o,
            "--needles",
            &needles,
            "--haystack",
            &haystack,
            "--qa",
            &qa,
            "--lengths",
            "160:240:2",
            "--depths",
            "2",
            "--max-new-tokens",
            "6",
            "--gate",
            "0",
            "--seeds",
            "1",
            "--qa-max-new-tokens",
            "4",
            "--device",
            device,
        ];
        (headscope(&args), out)
    };
    let Some((_, gpu_out, cpu_out)) = on_wgpu_and_cpu("report", run) else { return };
    assert!(gpu_out.join("report.html").is_file());
    // Every QA run (no mask, top-K, random-K) gives the same answers on both engines.
    let answers = |dir: &Path| {
        let mut runs: Vec<(String, Vec<(u64, serde_json::Value)>)> = std::fs::read_dir(dir.join("qa"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let text = std::fs::read_to_string(e.path().join("qa.jsonl")).unwrap();
                let mut records: Vec<(u64, serde_json::Value)> = text
                    .lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
                    .map(|r| (r["index"].as_u64().unwrap(), r["generated_ids"].clone()))
                    .collect();
                records.sort_by_key(|r| r.0);
                (e.file_name().to_string_lossy().into_owned(), records)
            })
            .collect();
        runs.sort_by(|a, b| a.0.cmp(&b.0));
        runs
    };
    let (g, c) = (answers(&gpu_out), answers(&cpu_out));
    assert!(g.len() >= 3 && g.iter().all(|(_, r)| r.len() == 3), "{g:?}");
    assert_eq!(g, c, "the QA answers of the wgpu report are the CPU report's");
    let detect =
        |dir: &Path| sorted_records(&dir.join("detect/tests.jsonl")).into_iter().map(|r| (r.id, r.generated_ids)).collect::<Vec<_>>();
    assert_eq!(detect(&gpu_out), detect(&cpu_out));
}
