//! Times the GPU forward natively: load, prefill and decode steps of a model directory (default: the
//! bundled lab model) with each kernel set (serial, parallel), next to the candle CPU path for scale
//! (`BENCH_CPU=0` leaves it out, `BENCH_SERIAL=0` the serial set; `BENCH_GEMM=64,128` times the parallel
//! set with each prefill product tile). Prints figures, the prefill's arithmetic rate among them; asserts
//! nothing. Where the adapter has timestamp queries, it then profiles the prefill and decode steps again
//! and prints each kind of dispatch's GPU time per prefill chunk and per step (`BENCH_PROFILE=0` leaves
//! that out).
//!
//! `cargo run --release -p headscope-gpu --example bench -- [MODEL_DIR] [PROMPT_TOKENS] [STEPS] [REPEATS]`
//!
//! The prefill and the decode steps are timed REPEATS times (default 3) from an empty cache; the figures
//! are means, as `headscope bench --repeats` gives them, and each prefill's own time is printed beside
//! them. A warm-up prefill of the whole prompt comes first and is printed on its own: the first use (a
//! driver allocating or compiling on first touch) is kept out of the means.

use headscope_core::rng::SplitMix64;
use headscope_gpu::{GemmTile, GpuContext, GpuModel, KernelSet, ModelSpec, Probe};
use headscope_model::loader::weight_files;
use headscope_model::{LoadOptions, LoadedModel};
use std::path::PathBuf;
use std::time::Instant;

/// CPU seconds this process has used (user + system), where the platform reports it: on a shared
/// machine it says more about a CPU-emulated GPU's cost than wall time does.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Wall and CPU time of `f`, in seconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, Option<f64>) {
    let (c0, t) = (cpu_seconds(), Instant::now());
    let out = f();
    let cpu = cpu_seconds().zip(c0).map(|(b, a)| b - a);
    (out, t.elapsed().as_secs_f64(), cpu)
}

fn cpu_text(cpu: Option<f64>, per: f64) -> String {
    cpu.map_or(String::new(), |c| format!(" (CPU {:.0} ms)", c * 1e3 / per))
}

/// Floating-point operations of a prefill of `tokens` tokens (no logits): 2 per weight of the layers'
/// matrices per token, and causal attention's 4 per head dimension per (query, visible key) pair.
fn prefill_flops(spec: &ModelSpec, tokens: usize) -> f64 {
    let (hidden, inter) = (spec.hidden_size as f64, spec.intermediate_size as f64);
    let (qw, kvw) = ((spec.heads * spec.head_dim) as f64, (spec.kv_heads * spec.head_dim) as f64);
    let weights = hidden * (qw + 2.0 * kvw) + qw * hidden + 3.0 * hidden * inter;
    let t = tokens as f64;
    let pairs = t * (t + 1.0) / 2.0;
    spec.layers as f64 * (2.0 * weights * t + 4.0 * spec.heads as f64 * spec.head_dim as f64 * pairs)
}

/// The prefill and decode steps again, each dispatch timed on the GPU: per phase, one line per kind
/// of dispatch, the most time first, with its share of the phase's summed dispatch time.
fn profile_forward(gpu: &mut GpuModel, prompt: &[u32], steps: usize, probe: &Probe) -> Result<(), headscope_gpu::GpuError> {
    gpu.reset();
    gpu.start_profile()?;
    pollster::block_on(gpu.prefill(&prompt[..prompt.len() - 1]))?;
    let mut id = prompt[prompt.len() - 1];
    for _ in 0..steps {
        id = pollster::block_on(gpu.step(id, probe))?.greedy_token();
    }
    let profile = gpu.take_profile().expect("profiling was started");
    gpu.stop_profile();
    for (name, phase) in [("prefill chunk", &profile.prefill), ("decode step", &profile.decode)] {
        let total = phase.seconds_per_run();
        println!(
            "   profile, {name}: {} runs of {:.0} tokens, {} dispatches, {:.3} ms a run on the GPU in the dispatches themselves",
            phase.runs,
            phase.tokens as f64 / phase.runs.max(1) as f64,
            phase.dispatches.iter().map(|d| d.per_run).sum::<usize>(),
            total * 1e3
        );
        for d in &phase.dispatches {
            println!(
                "   {:>17} x{:<4} {:>9.1} us  {:>5.1} %  ({:.1} us each)",
                d.what,
                d.per_run,
                d.seconds_per_run * 1e6,
                100.0 * d.seconds_per_run / total.max(f64::MIN_POSITIVE),
                d.seconds_per_run * 1e6 / d.per_run.max(1) as f64
            );
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../public/models/lab"));
    let prompt_len: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let repeats: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3).max(1);

    let ctx = pollster::block_on(GpuContext::new())?;
    println!("adapter: {} (kernel set it chooses: {:?})", ctx.adapter().describe(), ctx.kernel_set());
    let spec = ModelSpec::from_config_file(&dir.join("config.json"))?;
    let bytes: Vec<Vec<u8>> = weight_files(&dir)?.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let mut rng = SplitMix64::new(1);
    let prompt: Vec<u32> = (0..prompt_len).map(|_| 3 + rng.below(spec.vocab_size as u64 - 3) as u32).collect();
    let probe = Probe { rows: vec![headscope_core::HeadId::new(0, 0)], ..Probe::default() };
    // Both kernel sets on the same adapter, so that their figures compare.
    // `BENCH_SERIAL=0` leaves the serial set (the one CPU emulators get) out, where only a real GPU's
    // figures are wanted.
    let serial = !std::env::var("BENCH_SERIAL").is_ok_and(|v| v == "0");
    // `BENCH_GEMM=64,128,coop` times the parallel set once per prefill product tile (default: 64, and
    // coop where the adapter has cooperative matrices).
    println!("cooperative matrices (GemmTile::Coop): {}", if ctx.coop_matrix() { "yes" } else { "no" });
    let default_tiles = if ctx.coop_matrix() { "64,coop" } else { "64" };
    let tiles: Vec<GemmTile> = std::env::var("BENCH_GEMM")
        .unwrap_or_else(|_| default_tiles.into())
        .split(',')
        .map(|t| match t.trim() {
            "64" => Ok(GemmTile::Rows64),
            "128" => Ok(GemmTile::Rows128),
            "coop" => Ok(GemmTile::Coop),
            other => Err(format!("BENCH_GEMM: no tile {other} (64, 128 or coop)")),
        })
        .collect::<Result<_, _>>()?;
    // The first decode step's logits and the greedy tokens of each configuration: the later ones are
    // compared with the first (a tile's products must give the same tokens).
    let mut reference: Option<(String, Vec<f32>, Vec<u32>)> = None;
    let mut configs: Vec<(KernelSet, GemmTile)> = if serial { vec![(KernelSet::Serial, GemmTile::default())] } else { Vec::new() };
    configs.extend(tiles.iter().map(|&t| (KernelSet::Parallel, t)));
    for (kernels, tile) in configs {
        let ctx = ctx.clone().with_kernel_set(kernels).with_gemm_tile(tile);
        // Named as "Parallel" alone for the default tile, so that earlier logs compare line for line.
        let kernels = match (kernels, tile) {
            (KernelSet::Parallel, GemmTile::Rows128) => "Parallel, 128-row tile".to_string(),
            (KernelSet::Parallel, GemmTile::Coop) => "Parallel, cooperative-matrix tile".to_string(),
            _ => format!("{kernels:?}"),
        };
        let t = Instant::now();
        let mut gpu = pollster::block_on(GpuModel::load(&ctx, &spec, &refs))?;
        println!(
            "gpu load ({kernels} kernels): {:.0} ms; weights {:?}, {:.1} MB on the GPU (embedding and LM head in {:?} blocks)",
            t.elapsed().as_secs_f64() * 1e3,
            gpu.weight_format(),
            gpu.weight_bytes() as f64 / 1e6,
            gpu.weight_blocks()
        );
        gpu.reserve(prompt_len + steps)?;
        // A warm-up prefill of the whole prompt and a step compile whatever the driver compiles lazily
        // and allocate what the first long prefill allocates, so that the timed runs are steady ones
        // (a 64-token warm-up left Qwen's first 1K prefill at 153 ms against 38 ms after it, on the
        // H200). The first use is printed on its own: a page pays it once per model.
        let (r, first_use, _) = timed(|| pollster::block_on(gpu.prefill(&prompt[..prompt_len - 1])));
        r?;
        let first = pollster::block_on(gpu.step(prompt[prompt_len - 1], &probe))?;
        println!("gpu ({kernels}): first prefill (warm-up, untimed below) {:.0} ms", first_use * 1e3);
        let mut tokens = vec![first.greedy_token()];
        for _ in 1..steps.min(16) {
            tokens.push(pollster::block_on(gpu.step(*tokens.last().unwrap(), &probe))?.greedy_token());
        }
        match &reference {
            None => reference = Some((kernels.clone(), first.logits.clone(), tokens)),
            Some((name, logits, want)) => {
                let worst = logits.iter().zip(&first.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                let scale = logits.iter().map(|v| v.abs()).fold(0f32, f32::max);
                let same = tokens.iter().zip(want).take_while(|(a, b)| a == b).count();
                println!(
                    "gpu ({kernels}) against ({name}): first step's logits differ by {worst:.4} at most (largest |logit| {scale:.2}); greedy tokens agree for {same} of {}",
                    want.len()
                );
            }
        }
        let (mut prefills, mut prefill_cpu, mut decode, mut decode_cpu) = (Vec::new(), Some(0.0), 0.0, Some(0.0));
        for _ in 0..repeats {
            gpu.reset();
            let (r, seconds, cpu) = timed(|| pollster::block_on(gpu.prefill(&prompt[..prompt_len - 1])));
            r?;
            prefills.push(seconds);
            prefill_cpu = prefill_cpu.zip(cpu).map(|(a, b)| a + b / repeats as f64);
            let (r, seconds, cpu) = timed(|| -> Result<(), headscope_gpu::GpuError> {
                let mut id = prompt[prompt_len - 1];
                for _ in 0..steps {
                    id = pollster::block_on(gpu.step(id, &probe))?.greedy_token();
                }
                Ok(())
            });
            r?;
            decode += seconds / repeats as f64;
            decode_cpu = decode_cpu.zip(cpu).map(|(a, b)| a + b / repeats as f64);
        }
        let prefill = prefills.iter().sum::<f64>() / repeats as f64;
        let each: Vec<String> = prefills.iter().map(|p| format!("{:.0}", p * 1e3)).collect();
        println!(
            "gpu ({kernels}): prefill {} tokens in {:.0} ms{} ({:.0} tokens/s, {:.2} TFLOP/s, {} rows per chunk; runs {} ms); decode {:.2} ms/step{} at context {}",
            prompt_len - 1,
            prefill * 1e3,
            cpu_text(prefill_cpu, 1.0),
            (prompt_len - 1) as f64 / prefill,
            prefill_flops(&spec, prompt_len - 1) / prefill / 1e12,
            gpu.prefill_chunk(),
            each.join("/"),
            decode * 1e3 / steps as f64,
            cpu_text(decode_cpu, steps as f64),
            prompt_len
        );
        if gpu.context().can_profile() && !std::env::var("BENCH_PROFILE").is_ok_and(|v| v == "0") {
            profile_forward(&mut gpu, &prompt, steps, &probe)?;
        }
    }

    if std::env::var("BENCH_CPU").is_ok_and(|v| v == "0") {
        return Ok(());
    }
    let mut cpu = LoadedModel::load(&dir, &LoadOptions::default())?;
    cpu.model.reserve(prompt_len + steps)?;
    let (r, prefill, prefill_cpu) = timed(|| cpu.model.prefill(&prompt[..prompt_len - 1]));
    r?;
    let (r, decode, decode_cpu) = timed(|| -> Result<(), headscope_model::ModelError> {
        let mut id = prompt[prompt_len - 1];
        for _ in 0..steps {
            id = cpu.model.step(id, &probe)?.greedy_token()?;
        }
        Ok(())
    });
    r?;
    println!(
        "candle cpu: prefill {:.0} ms{} ({:.0} tokens/s); decode {:.2} ms/step{}",
        prefill * 1e3,
        cpu_text(prefill_cpu, 1.0),
        (prompt_len - 1) as f64 / prefill,
        decode * 1e3 / steps as f64,
        cpu_text(decode_cpu, steps as f64)
    );
    Ok(())
}
