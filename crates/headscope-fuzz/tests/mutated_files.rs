//! The project's own files, mutated by the fuzz harness's mutator (byte edits with JSON-significant
//! characters, truncations, numbers out of range) and deeply nested, read back by core's parsers:
//! needles JSONL, head-score JSON, tests.jsonl on resume and run.json on a rerun. Each mutant gives a value or an error, never a panic (issue 22;
//! a panic kills the page's worker). The seeds are repository files, so this runs in every clone.

use headscope_core::files::head_scores::parse_head_scores;
use headscope_core::files::{RunInfo, TestLog, TestRecord};
use headscope_core::niah::parse_needles_jsonl;
use headscope_core::rng::SplitMix64;
use headscope_core::sweep::TestKey;
use headscope_core::{niah::Needle, HeadShape};
use headscope_fuzz::mutant;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

fn repo(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `count` mutants of `seed` (`headscope_fuzz::mutant`, deterministic), and a deeply nested document.
fn mutants(seed: &str, count: usize, rng_seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut rng = SplitMix64::new(rng_seed);
    let mut out: Vec<(String, Vec<u8>)> = (0..count).map(|i| (format!("mutant {i}"), mutant(seed.as_bytes(), &mut rng))).collect();
    out.push(("deeply nested".into(), format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()));
    out
}

fn no_panic(what: &str, f: impl FnOnce()) {
    assert!(catch_unwind(AssertUnwindSafe(f)).is_ok(), "panicked on {what}");
}

#[test]
fn mutated_needles_and_head_scores_are_errors_not_panics() {
    let needles = repo("public/needles/handwritten.jsonl");
    assert_eq!(parse_needles_jsonl(&needles, Path::new("n.jsonl")).unwrap().len(), 48);
    let mut refused = 0;
    for (what, m) in mutants(&needles, 600, 1) {
        let text = String::from_utf8_lossy(&m);
        no_panic(&what, || refused += usize::from(parse_needles_jsonl(&text, Path::new("n.jsonl")).is_err()));
    }
    assert!(refused > 100, "{refused}");
    let scores = repo("docs/lab-v4/eval-stage5/head_scores.json");
    assert!(parse_head_scores(&scores, Path::new("s.json")).is_ok());
    for (what, m) in mutants(&scores, 600, 2) {
        let text = String::from_utf8_lossy(&m);
        no_panic(&what, || drop(parse_head_scores(&text, Path::new("s.json"))));
    }
}

#[test]
fn mutated_test_logs_and_run_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    // A real log: three scored records of the San Francisco needle on a 2 x 2 head grid.
    let log_path = dir.path().join("tests.jsonl");
    {
        let mut log = TestLog::open(&log_path).unwrap();
        let needle = Needle { needle: "The lamp is blue.".into(), question: "What colour is the lamp?".into(), real_needle: "blue".into() };
        for (i, depth) in [0.0, 50.0, 100.0].into_iter().enumerate() {
            let key = TestKey { needle_index: 0, length: 40 + i, depth_percent: depth };
            let test = headscope_core::niah::NiahTest {
                prompt_ids: (0..40 + i as u32).collect(),
                prompt_text: "x".into(),
                length: 40 + i,
                depth_percent: depth,
                placed_depth_percent: depth,
                needle_tokens: 10..14,
                answer_tokens: 12..13,
            };
            let steps = vec![headscope_core::score::DecodeStep { token: 12, argmax: vec![12, 3, 12, 0] }];
            log.append(TestRecord::scored(&key, &needle, &test, HeadShape::new(2, 2), &steps, "blue".into()).unwrap()).unwrap();
        }
    }
    let seed = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(TestLog::open(&log_path).unwrap().records().len(), 3);
    for (what, m) in mutants(&seed, 600, 3) {
        std::fs::write(&log_path, &m).unwrap();
        no_panic(&what, || drop(TestLog::open(&log_path)));
    }

    let run_seed = repo("docs/lab-v4/eval-stage2/run.json");
    let info: RunInfo = serde_json::from_str(&run_seed).unwrap();
    let run_path = dir.path().join("run.json");
    for (what, m) in mutants(&run_seed, 600, 4) {
        std::fs::write(&run_path, &m).unwrap();
        no_panic(&what, || drop(info.check_and_write(&run_path)));
    }
}
