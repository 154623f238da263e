//! `headscope bench --grid NAME`: a whole detection grid timed end to end as a user runs it, start-up
//! included: `headscope detect` in a child process of the same binary, from its start (loading the
//! model) to its last file, then the per-length times from the records it wrote.
//!
//! `official` is the grid the official retrieval-head code runs by default for Llama-2-7B-80K
//! (`retrieval_head_detection.py`: context lengths from 1,000 to 50,000 tokens in 20 steps, 10 depths,
//! its one needle, 20 new tokens). HeadScope's haystack stands in for Paul Graham's essays.

use super::BenchArgs;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A grid `--grid` names: lengths (`detect --lengths`), depths and new tokens per test.
struct Grid {
    name: &'static str,
    lengths: &'static str,
    depths: usize,
    max_new_tokens: usize,
}

const GRIDS: &[Grid] = &[Grid { name: "official", lengths: "1000:50000:20", depths: 10, max_new_tokens: 20 }];

/// Mean time of the tests of one length.
#[derive(Debug, Serialize, PartialEq)]
pub struct GridLength {
    pub length: usize,
    pub tests: usize,
    pub mean_seconds: f64,
}

/// What `--grid` measured (also `--json`).
#[derive(Debug, Serialize)]
pub struct GridReport {
    pub grid: String,
    pub model: String,
    pub device: String,
    pub lengths: String,
    pub depths: usize,
    pub max_new_tokens: usize,
    pub tests: usize,
    /// From starting `headscope detect` to its exit: loading, every test, the files.
    pub wall_seconds: f64,
    /// The tests' own times (their records' `seconds`).
    pub test_seconds: f64,
    pub per_length: Vec<GridLength>,
    pub out: PathBuf,
}

/// Runs the grid `name` with the model, device, dtype and haystack of `args` into `--grid-out`.
pub fn run(args: &BenchArgs, name: &str) -> Result<()> {
    let Some(grid) = GRIDS.iter().find(|g| g.name == name) else {
        let names: Vec<&str> = GRIDS.iter().map(|g| g.name).collect();
        bail!("--grid `{name}`: expected one of {}", names.join(", "));
    };
    let lengths = args.grid_lengths.clone().unwrap_or_else(|| grid.lengths.to_string());
    let out = args.grid_out.clone().unwrap_or_else(|| PathBuf::from(format!("runs/bench-grid-{name}")));
    if out.join("tests.jsonl").exists() {
        bail!(
            "--grid-out {} already holds a run: detect would resume it and time only what is missing; remove it or name another folder",
            out.display()
        );
    }
    let mut command = std::process::Command::new(std::env::current_exe().context("finding the headscope binary")?);
    command.arg("detect").arg("--model").arg(&args.model).args(["--device", &args.device, "--dtype", &args.dtype]);
    command.args(["--lengths", &lengths, "--depths", &grid.depths.to_string(), "--max-new-tokens", &grid.max_new_tokens.to_string()]);
    command.arg("--out").arg(&out);
    if !args.haystack.is_empty() {
        command.arg("--haystack").args(&args.haystack);
    } else if Path::new(super::KJV_HAYSTACK).exists() {
        command.args(["--haystack", super::KJV_HAYSTACK]);
    }
    println!(
        "grid {name}: headscope detect --lengths {lengths} --depths {} --max-new-tokens {} --out {}",
        grid.depths,
        grid.max_new_tokens,
        out.display()
    );
    let started = Instant::now();
    let status = command.status().context("starting headscope detect")?;
    let wall_seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        bail!("headscope detect stopped ({status}); its message is above");
    }
    let per_length = per_length(&out.join("tests.jsonl"))?;
    let tests = per_length.iter().map(|l| l.tests).sum();
    let test_seconds = per_length.iter().map(|l| l.mean_seconds * l.tests as f64).sum();
    let report = GridReport {
        grid: name.to_string(),
        model: args.model.display().to_string(),
        device: args.device.clone(),
        lengths,
        depths: grid.depths,
        max_new_tokens: grid.max_new_tokens,
        tests,
        wall_seconds,
        test_seconds,
        per_length,
        out,
    };
    print!("{}", render(&report));
    if let Some(path) = &args.json {
        super::write_json(path, &report)?;
    }
    Ok(())
}

/// The records of a detect run grouped by prompt length.
fn per_length(tests: &Path) -> Result<Vec<GridLength>> {
    let text = std::fs::read_to_string(tests).with_context(|| format!("reading {}", tests.display()))?;
    let mut by_length: BTreeMap<usize, (usize, f64)> = BTreeMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{} line {}: not a JSON record", tests.display(), i + 1))?;
        let (Some(length), Some(seconds)) = (record["length"].as_u64(), record["seconds"].as_f64()) else {
            bail!("{} line {}: a record without its length and seconds", tests.display(), i + 1);
        };
        let entry = by_length.entry(length as usize).or_default();
        entry.0 += 1;
        entry.1 += seconds;
    }
    Ok(by_length.into_iter().map(|(length, (tests, sum))| GridLength { length, tests, mean_seconds: sum / tests as f64 }).collect())
}

fn render(r: &GridReport) -> String {
    let mut s = format!(
        "grid {} on {} ({}): {} tests in {:.1} s wall, start-up and files included ({:.1} s in the tests themselves, {:.1} s else)\n",
        r.grid,
        r.model,
        r.device,
        r.tests,
        r.wall_seconds,
        r.test_seconds,
        (r.wall_seconds - r.test_seconds).max(0.0)
    );
    s += "  length  tests  seconds per test\n";
    for l in &r.per_length {
        s += &format!("  {:>6}  {:>5}  {:.3}\n", l.length, l.tests, l.mean_seconds);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_grouped_by_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tests.jsonl");
        std::fs::write(&path, "{\"length\":100,\"seconds\":1.0}\n{\"length\":50,\"seconds\":0.5}\n\n{\"length\":100,\"seconds\":2.0}\n")
            .unwrap();
        assert_eq!(
            per_length(&path).unwrap(),
            vec![GridLength { length: 50, tests: 1, mean_seconds: 0.5 }, GridLength { length: 100, tests: 2, mean_seconds: 1.5 }]
        );
        std::fs::write(&path, "{\"length\":100}\n").unwrap();
        assert!(per_length(&path).unwrap_err().to_string().contains("line 1: a record without its length and seconds"));
    }
}
