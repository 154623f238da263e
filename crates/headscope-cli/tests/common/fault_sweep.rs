//! The small `detect` sweep that the fault tests (kills, full and read-only disks) break and resume: a
//! tiny random model, two held-out needles, 4 lengths x 6 depths.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel).to_string_lossy().into_owned()
}

/// The model and needles of the sweep, in a temporary folder.
pub struct FaultSweep {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    model: String,
    needles: String,
}

impl FaultSweep {
    pub fn new() -> FaultSweep {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let model = root.join("tiny").to_string_lossy().into_owned();
        let made = Command::new(env!("CARGO_BIN_EXE_headscope")).args(["tiny-model", "--out", &model, "--arch", "llama"]).output().unwrap();
        assert!(made.status.success());
        let needles = root.join("needles.jsonl");
        let heldout = std::fs::read_to_string(repo("public/needles/heldout.jsonl")).unwrap();
        std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
        FaultSweep { _tmp: tmp, root, model, needles: needles.to_string_lossy().into_owned() }
    }

    /// Number of tests in the sweep.
    pub const TESTS: usize = 2 * 4 * 6;

    /// The `detect` arguments writing to `out`.
    pub fn args(&self, out: &Path) -> Vec<String> {
        let out = out.to_string_lossy();
        let haystack = repo("public/haystacks/kjv-john.txt");
        [
            "detect",
            "--model",
            &self.model,
            "--out",
            &out,
            "--needles",
            &self.needles,
            "--haystack",
            &haystack,
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
    }
}

/// tests.jsonl as JSON values with the timing left out, in file order; every line must parse.
pub fn records(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("tests.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("a corrupted record in {}: {e}: {l}", dir.display()));
            v.as_object_mut().unwrap().remove("seconds");
            v
        })
        .collect()
}
