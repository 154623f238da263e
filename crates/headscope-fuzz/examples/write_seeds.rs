//! Writes every fuzz target's seeds (the repository's own files) as a cargo-fuzz corpus:
//!   cargo run --release -p headscope-fuzz --example write_seeds -- fuzz/corpus
use headscope_fuzz::{seeds, TARGETS};

fn main() -> std::io::Result<()> {
    let root = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    for (name, _) in TARGETS {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed)?;
        }
    }
    Ok(())
}
