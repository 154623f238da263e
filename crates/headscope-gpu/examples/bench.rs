//! Times the GPU forward natively: load, prefill and decode steps of a model directory (default: the
//! bundled lab model) with each choice of decode-step attention kernels (serial, parallel), next to
//! the candle CPU path for scale. Prints figures; asserts nothing.
//!
//! `cargo run --release -p headscope-gpu --example bench -- [MODEL_DIR] [PROMPT_TOKENS] [STEPS]`

use headscope_core::rng::SplitMix64;
use headscope_gpu::{DecodeKernels, GpuContext, GpuModel, ModelSpec, Probe};
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../public/models/lab"));
    let prompt_len: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let steps: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(32);

    let ctx = pollster::block_on(GpuContext::new())?;
    println!("adapter: {} (decode kernels it chooses: {:?})", ctx.adapter().describe(), ctx.decode_kernels());
    let spec = ModelSpec::from_config_file(&dir.join("config.json"))?;
    let bytes: Vec<Vec<u8>> = weight_files(&dir)?.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let mut rng = SplitMix64::new(1);
    let prompt: Vec<u32> = (0..prompt_len).map(|_| 3 + rng.below(spec.vocab_size as u64 - 3) as u32).collect();
    let probe = Probe { rows: vec![headscope_core::HeadId::new(0, 0)], ..Probe::default() };
    // Both decode-step attention kernels on the same adapter, so that their figures compare.
    for kernels in [DecodeKernels::Serial, DecodeKernels::Parallel] {
        let ctx = ctx.clone().with_decode_kernels(kernels);
        let t = Instant::now();
        let mut gpu = pollster::block_on(GpuModel::load(&ctx, &spec, &refs))?;
        println!("gpu load ({kernels:?} decode kernels): {:.0} ms", t.elapsed().as_secs_f64() * 1e3);
        gpu.reserve(prompt_len + steps)?;
        // One warm-up step compiles whatever the driver compiles lazily.
        pollster::block_on(gpu.step(prompt[0], &probe))?;
        gpu.reset();
        let (r, prefill, prefill_cpu) = timed(|| pollster::block_on(gpu.prefill(&prompt[..prompt_len - 1])));
        r?;
        let (r, decode, decode_cpu) = timed(|| -> Result<(), headscope_gpu::GpuError> {
            let mut id = prompt[prompt_len - 1];
            for _ in 0..steps {
                id = pollster::block_on(gpu.step(id, &probe))?.greedy_token();
            }
            Ok(())
        });
        r?;
        println!(
            "gpu ({kernels:?}): prefill {} tokens in {:.0} ms{} ({:.0} tokens/s, {} rows per chunk); decode {:.2} ms/step{} at context {}",
            prompt_len - 1,
            prefill * 1e3,
            cpu_text(prefill_cpu, 1.0),
            (prompt_len - 1) as f64 / prefill,
            gpu.prefill_chunk(),
            decode * 1e3 / steps as f64,
            cpu_text(decode_cpu, steps as f64),
            prompt_len
        );
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
