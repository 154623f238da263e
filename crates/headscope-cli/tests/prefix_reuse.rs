//! A detect sweep reuses the KV cache of the prefix a test shares with the test before it, running each
//! (needle, length) group from the deepest needle to the shallowest: every test must still generate
//! exactly the tokens, and score exactly the hits, that it gives when run alone on a fresh cache.

use headscope_core::files::TestLog;
use headscope_core::score::{retrieval_hits, DecodeStep};
use headscope_model::{greedy_decode, LoadOptions, LoadedModel, Probe};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// Runs `headscope` with the sweep's debug log on; returns stderr.
fn headscope(args: &[&str]) -> String {
    let out =
        Command::new(env!("CARGO_BIN_EXE_headscope")).args(args).env("RUST_LOG", "headscope=debug").output().expect("the binary runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "headscope {args:?} failed\nstdout: {stdout}\nstderr: {stderr}");
    stderr
}

/// `(reused, prompt positions)` of every prefill the debug log reports, in order.
fn reuse_log(stderr: &str) -> Vec<(usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split("prefill: ").nth(1)?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            Some((words[0].parse().ok()?, words[2].parse().ok()?))
        })
        .collect()
}

#[test]
fn a_detect_sweep_with_prefix_reuse_gives_every_test_exactly_what_it_gives_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    let model_s = model.to_str().unwrap();
    headscope(&["tiny-model", "--out", model_s, "--arch", "llama"]);
    let needles = tmp.path().join("needles.jsonl");
    let heldout = std::fs::read_to_string(repo("public/needles/heldout.jsonl")).unwrap();
    std::fs::write(&needles, heldout.lines().take(2).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = tmp.path().join("detect");
    let haystack = repo("public/haystacks/kjv-john.txt");
    let stderr = headscope(&[
        "detect",
        "--model",
        model_s,
        "--out",
        out.to_str().unwrap(),
        "--needles",
        needles.to_str().unwrap(),
        "--haystack",
        haystack.to_str().unwrap(),
        "--lengths",
        "160:400:3",
        "--depths",
        "5",
        "--max-new-tokens",
        "8",
        "--gate",
        "0",
        "--save-prompts",
    ]);
    let log = TestLog::open(&out.join("tests.jsonl")).unwrap();
    let records = log.records();
    assert_eq!(records.len(), 2 * 3 * 5);

    // Order: (needle, length) groups in plan order, each from the deepest needle to the shallowest.
    for pair in records.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if (a.needle_index, a.length) == (b.needle_index, b.length) {
            assert!(a.depth_percent > b.depth_percent, "{} ran before {}", a.id, b.id);
        } else {
            assert!((a.needle_index, a.length) < (b.needle_index, b.length), "{} ran before {}", a.id, b.id);
            assert_eq!(b.depth_percent, 100.0, "{} opens its group", b.id);
        }
    }

    // Each prefill reused exactly what the cache held of it: the test before it left its prompt and the
    // tokens it fed back (all generated but the last) in the cache. After the first of its group, that is
    // at least the haystack before the needle (give or take the token where the needle joins the text).
    let reuse = reuse_log(&stderr);
    assert_eq!(reuse.len(), records.len(), "one prefill per test: {stderr}");
    let mut cached: Vec<u32> = Vec::new();
    for (r, &(reused, positions)) in records.iter().zip(&reuse) {
        let prompt = r.prompt_ids.as_ref().expect("--save-prompts keeps the prompt");
        let context = &prompt[..prompt.len() - 1];
        assert_eq!(positions, context.len(), "{}: the prefill covers prompt[:-1]", r.id);
        let shared = cached.iter().zip(context).take_while(|(a, b)| a == b).count();
        assert_eq!(reused, shared, "{}", r.id);
        if r.depth_percent < 100.0 {
            assert!(
                reused + 2 >= r.needle_tokens[0],
                "{}: reused {reused} of the {} positions before the needle",
                r.id,
                r.needle_tokens[0]
            );
        }
        cached = prompt.clone();
        cached.extend(&r.generated_ids[..r.generated_ids.len() - 1]);
    }
    // Five depths from 0 to 100 % reuse about (75 + 50 + 25) / 5 = 30 % of all positions where needles land
    // exactly at their depth; at sentence starts of a short haystack somewhat less.
    assert!(reuse.iter().map(|r| r.0).sum::<usize>() > reuse.iter().map(|r| r.1).sum::<usize>() / 5, "{reuse:?}");

    // Every test alone, on a fresh cache: the same tokens and the same eq. 1 hits.
    let mut m = LoadedModel::load(&model, &LoadOptions::default()).unwrap();
    let shape = m.spec.head_shape();
    for r in records {
        let prompt = r.prompt_ids.as_ref().expect("--save-prompts keeps the prompt");
        let alone = greedy_decode(&mut m.model, prompt, 8, &m.eos_token_ids, &Probe::default(), |_| true).unwrap();
        assert_eq!(alone.tokens, r.generated_ids, "{}: tokens", r.id);
        let steps: Vec<DecodeStep> =
            alone.tokens.iter().zip(&alone.argmax_position).map(|(&token, a)| DecodeStep { token, argmax: a.clone() }).collect();
        let hits = retrieval_hits(shape, prompt, r.answer_tokens[0]..r.answer_tokens[1], &steps).unwrap();
        assert_eq!(hits.to_sparse(), r.hits, "{}: hits", r.id);
    }
}
