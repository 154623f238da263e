//! Grows a trained model's attention: FACTOR times the query and KV heads, the same head width and
//! hidden size, the same logits (the copies' o_proj columns are zero; see `headscope_train::widen`);
//! with --deepen, the same heads FACTOR times as wide (new channels between the old ones in RoPE's
//! frequency order; see `deepen_model_dir`), the same logits too.
//!   cargo run --release -p headscope-train --example widen_heads -- [--deepen] SRC DST [FACTOR] [NOISE] [SEED]
//! FACTOR defaults to 2, NOISE (the copies' q/k/v perturbation, or the new key and value channels',
//! relative to the weights' RMS) to 0.05, SEED to 0. A recipe that trains on from DST names the new
//! shape in its [model] table, `head_dim` included (docs/lab-v5/recipe-x13.toml).
use std::path::PathBuf;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let deepen = args.first().is_some_and(|a| a == "--deepen");
    if deepen {
        args.remove(0);
    }
    if args.len() < 2 || args.len() > 5 {
        eprintln!("usage: widen_heads [--deepen] SRC DST [FACTOR] [NOISE] [SEED]");
        std::process::exit(2);
    }
    let parse = |i: usize, default: &str| args.get(i).map_or(default, String::as_str).to_string();
    let run = || -> anyhow::Result<()> {
        let factor: usize = parse(2, "2").parse().map_err(|e| anyhow::anyhow!("FACTOR: {e}"))?;
        let noise: f32 = parse(3, "0.05").parse().map_err(|e| anyhow::anyhow!("NOISE: {e}"))?;
        let seed: u64 = parse(4, "0").parse().map_err(|e| anyhow::anyhow!("SEED: {e}"))?;
        let (src, dst) = (PathBuf::from(&args[0]), PathBuf::from(&args[1]));
        let grow = if deepen { headscope_train::widen::deepen_model_dir } else { headscope_train::widen::widen_model_dir };
        let (a, b) = grow(&src, &dst, factor, noise, seed)?;
        println!(
            "{}: {} query / {} KV heads of width {} -> {}: {} / {} of width {}",
            src.display(),
            a.heads,
            a.kv_heads,
            a.head_dim,
            dst.display(),
            b.heads,
            b.kv_heads,
            b.head_dim
        );
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
