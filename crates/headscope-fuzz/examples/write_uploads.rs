//! Writes mutated uploads for the page's upload fuzz test (`tests/e2e/fuzz-uploads.mjs`), drawn with the
//! stable tests' mutator ([`headscope_fuzz::mutant`]) from the fuzz targets' seeds:
//! - `model/FILE-I/`: the tiny model's folder with FILE (config.json, tokenizer.json,
//!   tokenizer_config.json, generation_config.json or model.safetensors) mutated;
//! - `needles/I.jsonl`, `haystack/I.txt`, `scores/I.json`: needles JSONL, haystack text, head-score JSON.
//!
//! COUNT mutants of each kind; the same SEED writes the same files:
//!
//!   cargo run --release -p headscope-fuzz --example write_uploads -- DIR COUNT [SEED]
use headscope_core::rng::SplitMix64;
use headscope_fuzz::{mutant, seeds, tiny_files};
use std::path::Path;

/// Model files and the fuzz target whose seeds they are.
const MODEL_FILES: &[(&str, &str)] = &[
    ("config.json", "config_json"),
    ("tokenizer.json", "tokenizer_json"),
    ("tokenizer_config.json", "tokenizer_config"),
    ("generation_config.json", "generation_config"),
    ("model.safetensors", "safetensors"),
];

/// The other uploads: folder, file extension, fuzz target.
const FILES: &[(&str, &str, &str)] =
    &[("needles", "jsonl", "needles_jsonl"), ("haystack", "txt", "haystack"), ("scores", "json", "head_scores")];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, count, seed) = match args.as_slice() {
        [dir, count] => (dir, count.parse::<usize>()?, 1),
        [dir, count, seed] => (dir, count.parse::<usize>()?, seed.parse::<u64>()?),
        _ => return Err("usage: write_uploads DIR COUNT [SEED]".into()),
    };
    let root = Path::new(dir);
    let mut rng = SplitMix64::new(seed);
    for (file, target) in MODEL_FILES {
        let pool = seeds(target);
        for i in 0..count {
            let folder = root.join("model").join(format!("{file}-{i}"));
            std::fs::create_dir_all(&folder)?;
            for (name, bytes) in tiny_files() {
                std::fs::write(folder.join(name), bytes)?;
            }
            let from = &pool[rng.below(pool.len() as u64) as usize];
            std::fs::write(folder.join(file), mutant(from, &mut rng))?;
        }
    }
    for (folder, ext, target) in FILES {
        let pool = seeds(target);
        std::fs::create_dir_all(root.join(folder))?;
        for i in 0..count {
            let from = &pool[rng.below(pool.len() as u64) as usize];
            std::fs::write(root.join(folder).join(format!("{i}.{ext}")), mutant(from, &mut rng))?;
        }
    }
    eprintln!("wrote {count} mutants of each of {} uploads into {}", MODEL_FILES.len() + FILES.len(), root.display());
    Ok(())
}
