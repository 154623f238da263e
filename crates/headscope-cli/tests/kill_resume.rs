//! A `detect` sweep killed with SIGKILL at random moments (while loading, prefilling, decoding, appending a
//! record, writing head_scores.json), and rerun each time with the same command, ends with exactly the
//! records and head scores of an uninterrupted run: every finished test is kept, none is corrupted or
//! done twice, timings aside. `HEADSCOPE_KILLS=N` sets the number of kills (default 30, CI-sized).

use headscope_core::rng::SplitMix64;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel).to_string_lossy().into_owned()
}

fn command(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_headscope"));
    c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

/// tests.jsonl as JSON values with the timing left out, in file order.
fn records(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("tests.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("a corrupted record in {}: {e}: {l}", dir.display()));
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}

#[test]
fn a_sweep_killed_many_times_resumes_to_the_uninterrupted_result() {
    let kills_wanted: usize = std::env::var("HEADSCOPE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny").to_string_lossy().into_owned();
    let made = command(&["tiny-model".into(), "--out".into(), model.clone(), "--arch".into(), "llama".into()]).status().unwrap();
    assert!(made.success());
    let needles = tmp.path().join("needles.jsonl");
    let heldout = std::fs::read_to_string(repo("public/needles/heldout.jsonl")).unwrap();
    std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "detect",
            "--model",
            &model,
            "--out",
            &out.to_string_lossy(),
            "--needles",
            &needles.to_string_lossy(),
            "--haystack",
            &repo("public/haystacks/kjv-john.txt"),
            "--lengths",
            "200:600:4",
            "--depths",
            "6",
            "--max-new-tokens",
            "12",
            "--gate",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };

    let reference = tmp.path().join("reference");
    let started = Instant::now();
    assert!(command(&args(&reference)).status().unwrap().success());
    let whole = started.elapsed();

    // Each kill lands at a random moment of a window sized so that the kills together span about one
    // uninterrupted run: they fall in every phase, the loading included, before the sweep ends.
    let killed = tmp.path().join("killed");
    let mut rng = SplitMix64::new(22);
    let (mut kills, mut runs) = (0, 0);
    loop {
        runs += 1;
        let mut child = command(&args(&killed)).spawn().unwrap();
        if kills < kills_wanted {
            let window = 2 * whole.as_micros() as u64 / kills_wanted as u64 + 1;
            let delay = Duration::from_micros(rng.below(window));
            std::thread::sleep(delay);
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                continue;
            }
        }
        let status = child.wait().unwrap();
        assert!(status.success(), "a resumed run failed: {status}");
        break;
    }
    eprintln!("{kills} kills over {runs} runs (an uninterrupted run takes {:.2} s)", whole.as_secs_f64());
    // Machine load can let the last runs finish early; most kills must have landed.
    assert!(2 * kills >= kills_wanted, "the sweep ended after only {kills} of {kills_wanted} kills");

    let (want, got) = (records(&reference), records(&killed));
    assert_eq!(want.len(), 2 * 4 * 6);
    assert_eq!(got.len(), want.len(), "every test once");
    assert_eq!(got, want, "the same records in the same order");
    let scores = |d: &Path| std::fs::read(d.join("head_scores.json")).unwrap();
    assert_eq!(scores(&killed), scores(&reference), "head_scores.json byte for byte");
}
