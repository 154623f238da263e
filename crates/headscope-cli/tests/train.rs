//! `headscope train` end to end on a CPU-sized recipe: tokenizer and model files written, loss logged,
//! checkpoints resume to exactly the trajectory of an uninterrupted run, and the exported model runs
//! through `detect`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn headscope(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_headscope")).args(args).output().expect("the binary runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `headscope train` of the smoke recipe on the bundled haystacks into `out`, with `extra` flags:
/// whether it succeeded, and its stderr.
fn train_smoke(out: &Path, extra: &[&str]) -> (bool, String) {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recipe-smoke.toml");
    let corpus = repo().join("public/haystacks");
    let mut args =
        vec!["train", "--recipe", recipe.to_str().unwrap(), "--corpus", corpus.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(extra);
    let (ok, stdout, stderr) = headscope(&args);
    (ok, format!("{stdout}{stderr}"))
}

fn losses(dir: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[3].to_string())
        })
        .collect()
}

#[test]
fn train_resumes_exactly_and_exports_a_loadable_model() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recipe-smoke.toml");
    let corpus = repo().join("public/haystacks");
    let run = |out: &Path, steps: Option<&str>| {
        let mut a = vec!["--workers", "2"];
        if let Some(s) = steps {
            a.extend(["--stop-at", s]);
        }
        let (ok, output) = train_smoke(out, &a);
        assert!(ok, "train failed: {output}");
        output
    };
    // Interrupted: 6 steps, then resumed to the recipe's 12.
    let resumed = tmp.path().join("resumed");
    run(&resumed, Some("6"));
    for f in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors",
        "loss.csv",
        "checkpoint/trainer.json",
    ] {
        assert!(resumed.join(f).exists(), "{f} missing");
    }
    let stderr = run(&resumed, None);
    assert!(stderr.contains("resumed from") && stderr.contains("at step 6"), "{stderr}");
    // Uninterrupted: 12 steps at once.
    let straight = tmp.path().join("straight");
    run(&straight, None);
    let (a, b) = (losses(&resumed), losses(&straight));
    assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    assert_eq!(a, b, "a resumed run must see the same data and reach the same losses");
    let first: f64 = a[0].1.parse().unwrap();
    assert!((first - (512f64).ln()).abs() < 1.0, "initial loss {first} should be near ln(512)");

    // A further stage starts from the trained weights (and keeps their tokenizer): its first loss is
    // already below the fresh model's.
    let stage = tmp.path().join("stage2");
    let (ok, stderr) = train_smoke(&stage, &["--init-from", straight.to_str().unwrap(), "--stop-at", "1", "--workers", "1"]);
    assert!(ok && stderr.contains("starting from the weights"), "{stderr}");
    assert_eq!(std::fs::read(stage.join("tokenizer.json")).unwrap(), std::fs::read(straight.join("tokenizer.json")).unwrap());
    let staged: f64 = losses(&stage)[0].1.parse().unwrap();
    assert!(staged < first - 0.3, "stage 2 starts at {staged}, a fresh model at {first}");

    // The exported model is a Hugging Face directory that the detection pipeline runs.
    let det = tmp.path().join("det");
    let (ok, stdout, stderr) = headscope(&[
        "detect",
        "--model",
        straight.to_str().unwrap(),
        "--out",
        det.to_str().unwrap(),
        "--lengths",
        "200",
        "--depths",
        "2",
        "--max-new-tokens",
        "4",
        "--gate",
        "0",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("2 tests (2 run now"), "{stdout}");

    // Language-model views: perplexity on held-out text is below the uniform guess; generation continues a prompt.
    let john = repo().join("public/haystacks/kjv-john.txt");
    let (ok, stdout, stderr) = headscope(&[
        "perplexity",
        "--model",
        straight.to_str().unwrap(),
        "--text",
        john.to_str().unwrap(),
        "--window",
        "128",
        "--max-windows",
        "4",
    ]);
    assert!(ok, "{stderr}");
    let ppl: f64 = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(ppl > 1.0 && ppl < 512.0, "perplexity {ppl}");
    let (ok, stdout, stderr) =
        headscope(&["generate", "--model", straight.to_str().unwrap(), "--prompt", "In the beginning", "--max-new-tokens", "5"]);
    assert!(ok && stdout.starts_with("In the beginning"), "{stdout} {stderr}");

    // Loss curves of both stages, one after another.
    let png = tmp.path().join("loss.png");
    let (ok, _, stderr) = headscope(&[
        "plot-loss",
        "--log",
        straight.join("loss.csv").to_str().unwrap(),
        "--log",
        stage.join("loss.csv").to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--smooth",
        "3",
    ]);
    assert!(ok && std::fs::read(&png).unwrap().starts_with(b"\x89PNG"), "{stderr}");
    let (ok, _, stderr) = headscope(&["plot-loss", "--log", recipe.to_str().unwrap(), "--out", png.to_str().unwrap()]);
    assert!(!ok && stderr.contains("loss.csv") && !stderr.contains("panicked"), "{stderr}");

    // A recipe with an unknown field, or with data settings out of range, is refused with the name.
    let bad = tmp.path().join("bad.toml");
    for (at, added, named) in [
        ("seed = 7", "sede = 8", "sede"),
        ("[data]", "answer_words = [5, 2]", "answer_words"),
        ("[data]", "recurring_words = 1.5", "recurring_words"),
        ("[data]", "distractors = -0.1", "distractors"),
        ("[data]", "corpus_sentences = 2", "corpus_sentences"),
        ("[data]", "elsewhere_facts = 99", "elsewhere_facts"),
        ("[data]", "opening_weight = -1.0", "opening_weight"),
    ] {
        std::fs::write(&bad, std::fs::read_to_string(&recipe).unwrap().replace(at, &format!("{at}\n{added}"))).unwrap();
        let (ok, _, stderr) = headscope(&[
            "train",
            "--recipe",
            bad.to_str().unwrap(),
            "--corpus",
            corpus.to_str().unwrap(),
            "--out",
            tmp.path().join("x").to_str().unwrap(),
        ]);
        assert!(!ok && stderr.contains(named) && !stderr.contains("panicked"), "{added}: {stderr}");
    }
}

/// The batches of a `headscope train-data` stream: (step, rows, tokens, inputs, targets, weights).
type StreamBatch = (u32, usize, usize, Vec<u32>, Vec<u32>, Vec<f32>);

fn parse_batch_stream(bytes: &[u8]) -> Vec<StreamBatch> {
    assert_eq!(&bytes[..8], b"HSBATCH1", "the stream starts with its magic");
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut at = 8;
    let mut out = vec![];
    while at < bytes.len() {
        let (step, rows, tokens) = (word(at), word(at + 4) as usize, word(at + 8) as usize);
        at += 12;
        let n = rows * tokens;
        let ids: Vec<u32> = (0..2 * n).map(|i| word(at + 4 * i)).collect();
        at += 8 * n;
        let weights: Vec<f32> = (0..n).map(|i| f32::from_bits(word(at + 4 * i))).collect();
        at += 4 * n;
        out.push((step, rows, tokens, ids[..n].to_vec(), ids[n..].to_vec(), weights));
    }
    assert_eq!(at, bytes.len(), "the stream ends at a batch's end");
    out
}

#[test]
fn train_data_streams_the_batches_that_train_draws() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/recipe-smoke.toml");
    let corpus = repo().join("public/haystacks");
    let stream = |out: &Path, from: &str, to: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_headscope"))
            .args(["train-data", "--recipe", recipe.to_str().unwrap(), "--corpus", corpus.to_str().unwrap()])
            .args(["--out", out.to_str().unwrap(), "--from-step", from, "--to-step", to, "--workers", "2"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let dir = tmp.path().join("model");
    let all = parse_batch_stream(&stream(&dir, "0", "100"));
    // The recipe's 12 steps (a later --to-step is cut to them), in order, each of one of its row shapes.
    assert_eq!(all.iter().map(|b| b.0).collect::<Vec<_>>(), (0..12).collect::<Vec<_>>());
    for (step, rows, tokens, inputs, targets, weights) in &all {
        assert!([(2, 256), (1, 384)].contains(&(*rows, *tokens)), "step {step}: {rows}x{tokens}");
        for r in 0..*rows {
            let row = r * tokens..(r + 1) * tokens;
            // Targets are the inputs shifted by one token.
            assert_eq!(inputs[row.start + 1..row.end], targets[row.start..row.end - 1], "step {step} row {r}");
        }
        assert!(weights.iter().all(|w| w.is_finite() && *w >= 0.0), "step {step}: weights");
    }
    assert!(all.iter().any(|b| b.5.iter().any(|w| *w > 1.0)), "exercises weigh their answers more");
    // The model files a trainer needs are written beside it, as `train` writes them.
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // A stream started later (a resumed trainer's) holds the same batches.
    let part = parse_batch_stream(&stream(&dir, "5", "8"));
    assert_eq!(part, all[5..8].to_vec());
    // The shapes are the ones `train` logs for the same steps.
    let trained = tmp.path().join("trained");
    let (ok, stderr) = train_smoke(&trained, &["--workers", "2"]);
    assert!(ok, "{stderr}");
    let log = std::fs::read_to_string(trained.join("loss.csv")).unwrap();
    let logged: Vec<(usize, usize)> = log
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2].parse().unwrap(), f[1].parse().unwrap())
        })
        .collect();
    assert_eq!(logged, all.iter().map(|b| (b.1, b.2)).collect::<Vec<_>>());
    assert_eq!(std::fs::read(trained.join("tokenizer.json")).unwrap(), std::fs::read(dir.join("tokenizer.json")).unwrap());
}
