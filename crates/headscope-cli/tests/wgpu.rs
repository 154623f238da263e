//! `--device wgpu`: `detect` and `niah` on the page's WGSL forward (here on whatever Vulkan driver the
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

#[test]
fn a_wgpu_sweep_gives_the_cpu_sweeps_records() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny").to_string_lossy().into_owned();
    ok(&["tiny-model", "--out", &model, "--arch", "llama"]);
    let needles = tmp.path().join("needles.jsonl");
    let heldout = std::fs::read_to_string(repo("public/needles/heldout.jsonl")).unwrap();
    std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let needles = needles.to_string_lossy().into_owned();
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
    let (gpu, gpu_out) = run("wgpu");
    let stderr = String::from_utf8_lossy(&gpu.stderr);
    if !gpu.status.success() && stderr.contains("no usable GPU adapter") {
        eprintln!("SKIPPING the wgpu CLI test: {stderr}");
        return;
    }
    assert!(gpu.status.success(), "{stderr}");
    assert!(stderr.contains("wgpu adapter:"), "{stderr}");
    let (cpu, cpu_out) = run("cpu");
    assert!(cpu.status.success(), "{}", String::from_utf8_lossy(&cpu.stderr));

    let records = |dir: &str| {
        let mut r = TestLog::open(&Path::new(dir).join("tests.jsonl")).unwrap().records().to_vec();
        r.sort_by(|a, b| a.id.cmp(&b.id));
        r
    };
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
    fails(&["generate", "--prompt", "x", "--device", "wgpu"], "detect` and `niah` only");
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny").to_string_lossy().into_owned();
    let out = tmp.path().join("out").to_string_lossy().into_owned();
    ok(&["tiny-model", "--out", &model, "--arch", "llama"]);
    fails(&["detect", "--model", &model, "--out", &out, "--device", "wgpu", "--dtype", "bf16"], "computes in f32");
    fails(&["niah", "--model", &model, "--out", &out, "--device", "wgpu", "--prefill-chunk", "64"], "chooses its own");
}
