//! A `detect` sweep killed with SIGKILL at random moments (while loading, prefilling, decoding, appending a
//! record, writing head_scores.json), and rerun each time with the same command, ends with exactly the
//! records and head scores of an uninterrupted run: every finished test is kept, none is corrupted or
//! done twice, timings aside. `HEADSCOPE_KILLS=N` sets the number of kills (default 30, CI-sized).

mod common;

use common::fault_sweep::{records, FaultSweep};
use headscope_core::rng::SplitMix64;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn command(args: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_headscope"));
    c.args(args).stdout(Stdio::null()).stderr(Stdio::null());
    c
}

#[test]
fn a_sweep_killed_many_times_resumes_to_the_uninterrupted_result() {
    let kills_wanted: usize = std::env::var("HEADSCOPE_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let sweep = FaultSweep::new();
    let args = |out: &Path| sweep.args(out);

    let reference = sweep.root.join("reference");
    let started = Instant::now();
    assert!(command(&args(&reference)).status().unwrap().success());
    let whole = started.elapsed();

    // Each kill lands at a random moment of a window sized so that the kills together span about one
    // uninterrupted run: they fall in every phase, the loading included, before the sweep ends.
    let killed = sweep.root.join("killed");
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
    assert_eq!(want.len(), FaultSweep::TESTS);
    assert_eq!(got.len(), want.len(), "every test once");
    assert_eq!(got, want, "the same records in the same order");
    let scores = |d: &Path| std::fs::read(d.join("head_scores.json")).unwrap();
    assert_eq!(scores(&killed), scores(&reference), "head_scores.json byte for byte");
}
