//! `headscope bench`: how fast HeadScope runs the paper's detection loop on one model, and how long a
//! context fits on the device. It sits beside the sweep: the same NIAH prompt (core), the same
//! prefill of prompt[:-1] and observed decode steps (model), the same eq. 1 scoring (core), timed per
//! phase, with a fixed number of decode steps (stop tokens are ignored) so every run does equal work.
//! Each test is timed alone (a fresh cache) and, with `--sweep-depths N`, also inside a depth sweep as
//! `detect` runs one: N depths at one length, deepest first, each prefill reusing the cache of the
//! prefix the test shares with the one before it ([`headscope_engine::Engine::prefill_reusing`]). The
//! work is the same on every engine (`--device cpu`, `cuda` or `wgpu`): it is written once over the
//! [`headscope_engine::Engine`] trait, in `measure`; `render` writes the table and `memory` samples the
//! peak memory.
//!
//! Peak memory: candle has no allocator statistics, so on CUDA a thread polls the driver's free/total
//! memory (`cuMemGetInfo`, every millisecond) and reports the largest amount in use on the whole GPU,
//! the CUDA context included. On the CPU the figure is the process's peak resident set (VmHWM).
//!
//! The longest context (`--max-context`) is found by trying: for a length L the KV cache is allocated
//! for L positions, the model jumps to the end of it without computing the prompt
//! ([`headscope_model::Transformer::pretend_filled`]), runs one prefill chunk and one decode step there
//! (the largest transient buffers of a real run at L), and a binary search over L keeps the longest
//! that ran without running out of memory. Next to it stands the physical limit from the config:
//! (device memory - weight bytes) / KV-cache bytes per token.

mod grid;
mod measure;
mod memory;
mod render;

use crate::sweep::WGPU_DEVICE;
use anyhow::{bail, Context, Result};
use clap::Args;
use headscope_core::niah::{san_francisco_needle, NiahBuilder};
use headscope_model::loader::{dtype_name, parse_dtype};
use headscope_model::spec::ModelSpec;
use headscope_model::transformer::DEFAULT_PREFILL_SCORE_BUDGET;
use headscope_model::{DType, Device, LoadOptions, ModelDir};
use measure::{search_max_context, Measured, Work, WGPU_PREFILL_CHUNK};
use render::count;
pub use render::render;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The default haystack for timing: the public-domain text the lab uses, else the built-in one.
const KJV_HAYSTACK: &str = "public/haystacks/kjv-john.txt";
/// The built-in haystack (the sweep's default).
const VILLAGE_HAYSTACK: &str = include_str!("../../../../public/haystacks/village.txt");
/// Lengths of the max-context search are multiples of this.
const SEARCH_STEP: usize = 1024;

/// Flags of `headscope bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Hugging Face model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Device: cpu, cuda, cuda:N, or wgpu (the WGSL forward on the first GPU adapter wgpu finds:
    /// Vulkan, Metal or DX12; f32; no --max-context, --prefill-chunk or memory figures there).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: auto (f32 on CPU, bf16 on CUDA), f32, f16, bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Prompt lengths in tokens, comma-separated (one NIAH test per length and repeat).
    #[arg(long, value_delimiter = ',', default_value = "4096,16384,32768,65536")]
    pub lengths: Vec<usize>,
    /// Decode steps per test; stop tokens are ignored so that every test decodes this many.
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Tests per length; the figures are means over them.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Haystack text files (default: public/haystacks/kjv-john.txt when present, else the built-in text).
    #[arg(long, num_args = 1..)]
    pub haystack: Vec<PathBuf>,
    /// Needle depth in percent of the context.
    #[arg(long, default_value_t = 50.0)]
    pub depth: f64,
    /// Also run, per length, a depth sweep of this many needle depths evenly spaced over 0..100 % as
    /// `detect` runs one: deepest first, each prefill reusing the cache of the prefix the test shares
    /// with the one before it; reports the mean time per test of the sweep beside the isolated one (0: off).
    #[arg(long, default_value_t = 0)]
    pub sweep_depths: usize,
    /// Prompt tokens per prefill chunk [default: 512, or 4096 where the fused CUDA attention kernel
    /// runs]. On the chunked path long contexts use fewer: see the score budget.
    #[arg(long)]
    pub prefill_chunk: Option<usize>,
    /// MiB of f32 attention scores one prefill chunk may hold on the chunked path (long contexts get
    /// shorter chunks; the chunk's transient memory is a few times this). The fused kernel holds none.
    #[arg(long, default_value_t = (DEFAULT_PREFILL_SCORE_BUDGET >> 20) as u64)]
    pub score_budget_mib: u64,
    /// Also find the longest context that fits in device memory, by trying (see the module docs).
    #[arg(long)]
    pub max_context: bool,
    /// Device memory in GiB for the physical limit and the search (default: the GPU's total; on the CPU
    /// --max-context needs it).
    #[arg(long)]
    pub memory_gib: Option<f64>,
    /// Write the figures as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write every test's prompt (ids, needle and answer spans) with HeadScope's generated tokens and
    /// per-step argmax positions, for bench/official_loop.py (same prompts) and the argmax comparison.
    #[arg(long)]
    pub save_prompts: Option<PathBuf>,
    /// The KV cache the tests decode with (`--kv-cache` of detect and niah; candle backend).
    #[command(flatten)]
    pub kv: crate::KvCacheArgs,
    /// Not available: bench times tests on one device, and timings of different machines do not add up
    /// to one table; run one bench per machine. Given, bench stops with that error.
    #[arg(long, value_name = "I/N", value_parser = crate::parse_shard)]
    pub shard: Option<headscope_core::sweep::Shard>,
    /// Instead of timing tests one by one, run a whole detection grid as `headscope detect` runs it
    /// and time it end to end, start-up included (`detect` in a child process; its records give the
    /// time per length). `official`: the official code's default grid for Llama-2-7B-80K (20 lengths
    /// from 1,000 to 50,000 tokens, 10 depths, the San Francisco needle, 20 new tokens). Uses --model,
    /// --device, --dtype, --haystack and --json; the other timing flags do not apply.
    #[arg(long, value_name = "NAME")]
    pub grid: Option<String>,
    /// The grid's lengths instead of its own (`detect --lengths`: a smaller run of the same shape).
    #[arg(long, value_name = "LENGTHS", requires = "grid")]
    pub grid_lengths: Option<String>,
    /// Where the grid's detect run goes [default: runs/bench-grid-NAME]; it must not hold a run yet.
    #[arg(long, requires = "grid")]
    pub grid_out: Option<PathBuf>,
}

/// Timing of one prompt length (means over the repeats).
#[derive(Debug, Serialize, Deserialize)]
pub struct LengthResult {
    /// Requested prompt length in tokens.
    pub length: usize,
    /// Whether the tests ran (false: the error says why, e.g. out of memory).
    pub fits: bool,
    /// Why the tests did not run.
    pub error: Option<String>,
    /// Seconds to prefill prompt[:-1].
    pub prefill_seconds: f64,
    /// Prefilled tokens per second.
    pub prefill_tokens_per_second: f64,
    /// Milliseconds per observed decode step (forward, all heads' argmax, copy to the host).
    pub decode_step_ms: f64,
    /// Seconds per NIAH test: prefill, decode steps, scoring.
    pub test_seconds: f64,
    /// Seconds per NIAH test in a depth sweep at this length (`--sweep-depths`): the mean over the
    /// sweep's tests, run deepest first with prefix reuse, the first test's full prefill included. None
    /// when no sweep ran (not asked for, or the length does not fit).
    #[serde(default)]
    pub sweep_test_seconds: Option<f64>,
    /// Share of the sweep's prefill positions (prompt[:-1] of every test) taken from the cache instead
    /// of computed.
    #[serde(default)]
    pub sweep_reused_share: Option<f64>,
    /// Peak memory in use while testing this length, in bytes (see `memory_method`).
    pub peak_memory_bytes: Option<u64>,
    /// Heads with at least one eq. 1 hit in the last test (random weights: usually none).
    pub heads_with_hits: usize,
    /// Under a KV plan (`--kv-cache`): bytes of keys and values the plan keeps for this length's context
    /// (prompt and decode steps); the whole cache's are `kv_bytes_per_token` times as many positions.
    #[serde(default)]
    pub kv_cache_bytes: Option<u64>,
}

/// Result of the longest-context search.
#[derive(Debug, Serialize, Deserialize)]
pub struct MaxContext {
    /// Device memory the limits refer to, in bytes.
    pub memory_bytes: u64,
    /// (memory - weight bytes) / KV bytes per token, rounded down.
    pub physical_limit_tokens: u64,
    /// The longest context that ran (multiple of 1024), 0 if none did.
    pub longest_fitting_tokens: usize,
    /// Every probe: (context length, whether it ran).
    pub probes: Vec<(usize, bool)>,
}

/// Everything `headscope bench` measured. Fields added after the first version are serde defaults, so
/// older reports still parse.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// HeadScope version.
    pub headscope_version: String,
    /// Model directory.
    pub model: String,
    /// `model_type`.
    pub model_type: String,
    /// Layers x query heads (KV heads).
    pub layers: usize,
    /// Query heads per layer.
    pub heads: usize,
    /// KV heads per layer.
    pub kv_heads: usize,
    /// Parameters, counted from config.json.
    pub parameters: u64,
    /// Parameters stored in the safetensors files (should equal `parameters`).
    pub stored_parameters: u64,
    /// Bytes of weights in the compute dtype.
    pub weight_bytes: u64,
    /// Bytes of KV cache per context token: 2 x layers x kv_heads x head_dim x dtype size.
    pub kv_bytes_per_token: u64,
    /// Compute dtype.
    pub dtype: String,
    /// Device as given.
    pub device: String,
    /// Decode steps per test.
    pub steps: usize,
    /// Tests per length.
    pub repeats: usize,
    /// Depths of the per-length depth sweep with prefix reuse (0: none ran).
    #[serde(default)]
    pub sweep_depths: usize,
    /// Prompt tokens per prefill chunk at most.
    pub prefill_chunk: usize,
    /// Whether the prefill ran the fused attention kernel (else chunked attention under the score budget).
    #[serde(default)]
    pub flash_prefill: bool,
    /// MiB of f32 scores a prefill chunk may hold.
    pub score_budget_mib: u64,
    /// How peak memory was measured.
    pub memory_method: String,
    /// Seconds to load the weights.
    pub load_seconds: f64,
    /// Seconds of the warm-up test (kernel compilation, library start-up).
    pub warmup_seconds: f64,
    /// The model's trained context (max_position_embeddings); longer tests are timing only.
    pub max_position_embeddings: usize,
    /// The KV plan the tests decoded with (`--kv-cache`), None for the whole cache.
    #[serde(default)]
    pub kv_cache: Option<String>,
    /// Per prompt length.
    pub lengths: Vec<LengthResult>,
    /// The longest-context search, when asked for.
    pub max_context: Option<MaxContext>,
}

/// One saved test for the PyTorch baseline and the argmax comparison.
#[derive(Debug, Serialize)]
struct SavedTest {
    length: usize,
    prompt_ids: Vec<u32>,
    prompt_hash: String,
    needle_tokens: [usize; 2],
    answer_tokens: [usize; 2],
    headscope_tokens: Vec<u32>,
    /// Per step, per query head (layer-major), the argmax context position.
    headscope_argmax: Vec<Vec<u32>>,
}

/// KV-cache bytes per context token in `dtype_bytes`-byte elements: the attention layers' (a hybrid's
/// Mamba layers keep a fixed-size state instead).
pub fn kv_bytes_per_token(spec: &ModelSpec, dtype_bytes: u64) -> u64 {
    2 * spec.head_shape().layers as u64 * spec.kv_heads as u64 * spec.head_dim as u64 * dtype_bytes
}

/// Elements stored in safetensors files, read from their headers only.
pub fn stored_parameters(files: &[PathBuf]) -> Result<u64> {
    use std::io::Read;
    let mut total = 0u64;
    for f in files {
        let mut file = std::fs::File::open(f).with_context(|| format!("opening {}", f.display()))?;
        let mut len = [0u8; 8];
        file.read_exact(&mut len).with_context(|| format!("{}: no safetensors header", f.display()))?;
        let n = u64::from_le_bytes(len);
        if n > 100 << 20 {
            bail!("{}: a {n}-byte safetensors header is not plausible", f.display());
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).with_context(|| format!("{}: truncated safetensors header", f.display()))?;
        let v: serde_json::Value = serde_json::from_slice(&header).with_context(|| format!("{}: header is not JSON", f.display()))?;
        for (name, t) in v.as_object().into_iter().flatten() {
            if name == "__metadata__" {
                continue;
            }
            let shape =
                t.get("shape").and_then(|s| s.as_array()).with_context(|| format!("{}: tensor {name} has no shape", f.display()))?;
            total += shape.iter().map(|d| d.as_u64().unwrap_or(0)).product::<u64>();
        }
    }
    Ok(total)
}

/// `headscope bench`.
pub fn bench(args: &BenchArgs) -> Result<()> {
    if let Some(shard) = args.shard {
        bail!(
            "--shard {shard}: bench cannot be split over machines (it times tests on one device, and timings of different machines do not make one table); run one bench per machine"
        );
    }
    if let Some(name) = &args.grid {
        return grid::run(args, name);
    }
    if args.lengths.is_empty() || args.lengths.contains(&0) {
        bail!("--lengths needs positive prompt lengths");
    }
    if args.steps == 0 || args.repeats == 0 {
        bail!("--steps and --repeats must be at least 1");
    }
    let wgpu = args.device == WGPU_DEVICE;
    if wgpu {
        if !matches!(args.dtype.as_str(), "auto" | "f32") {
            bail!("--device wgpu computes in f32: --dtype {} is not available there (leave it out or pass f32)", args.dtype);
        }
        if args.prefill_chunk.is_some() {
            bail!("--prefill-chunk sets the candle path's chunks; --device wgpu chooses its own ({WGPU_PREFILL_CHUNK} tokens)");
        }
        if args.max_context {
            bail!("--max-context probes memory on the candle path only: use --device cpu or cuda");
        }
        if args.kv.kv_cache.trim() != "full" {
            bail!("--kv-cache runs on the candle path only: use --device cpu or cuda");
        }
    }
    if args.max_context && args.kv.kv_cache.trim() != "full" {
        bail!("--max-context searches the longest context of the whole KV cache: leave --kv-cache out");
    }
    // The wgpu engine takes its weights from the candle loader's files, as f32.
    let device = if wgpu { Device::Cpu } else { crate::sweep::parse_device(&args.device)? };
    let dtype = if wgpu { Some(DType::F32) } else { parse_dtype(&args.dtype)? };
    let options = LoadOptions::on(device.clone(), dtype);
    let dtype = ModelDir::resolve_dtype(&options);
    let mut md = ModelDir::open(&args.model)?;
    let spec = md.spec.clone();
    let dtype_bytes = dtype.size_in_bytes() as u64;
    let parameters = spec.parameter_count();
    let stored = stored_parameters(&md.weight_files)?;
    let weight_bytes = stored.max(parameters) * dtype_bytes;
    let kv_per_token = kv_bytes_per_token(&spec, dtype_bytes);
    let kv_plan = crate::sweep::kv_plan(&args.kv, &spec)?;
    // wgpu reports no memory use: no figure there rather than the host process's.
    let monitor = (!wgpu).then(|| memory::Monitor::start(&device));
    let memory_bytes = match (args.memory_gib, monitor.as_ref().and_then(|m| m.total())) {
        (Some(g), _) if g > 0.0 => Some((g * (1u64 << 30) as f64) as u64),
        (Some(_), _) => bail!("--memory-gib must be positive"),
        (None, total) => total,
    };
    if args.max_context && memory_bytes.is_none() {
        bail!("--max-context on the CPU needs --memory-gib (the memory to fill)");
    }
    let physical_limit = memory_bytes.map(|m| m.saturating_sub(weight_bytes) / kv_per_token.max(1));

    // Tests past the trained context are for timing only: lift the limit (random weights do not care).
    let longest_test = args.lengths.iter().max().copied().unwrap_or(0) + args.steps;
    let search_top = if args.max_context { physical_limit.unwrap_or(0) as usize + SEARCH_STEP + args.steps } else { 0 };
    let trained = spec.max_position_embeddings;
    md.spec.max_position_embeddings = trained.max(longest_test).max(search_top);
    if longest_test > trained {
        eprintln!("note: tests up to {longest_test} positions pass the model's trained context of {trained} (timing only)");
    }

    let haystack = if !args.haystack.is_empty() {
        args.haystack
            .iter()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
            .collect::<Result<_>>()?
    } else if Path::new(KJV_HAYSTACK).exists() {
        vec![std::fs::read_to_string(KJV_HAYSTACK)?]
    } else {
        vec![VILLAGE_HAYSTACK.to_string()]
    };
    let needle = san_francisco_needle();
    let mut builder = NiahBuilder::new(&md.tokenizer, md.prompt_format(true), &haystack)?;
    // Build every prompt before loading gigabytes: a bad length fails fast.
    let mut prompts = Vec::new();
    for &length in &args.lengths {
        prompts.push(builder.build(&needle, length, args.depth).with_context(|| format!("building the {length}-token prompt"))?);
    }
    // Per length, the depth sweep's prompts, deepest first: each test then shares with the one before
    // it everything up to its own needle.
    let sweep_depths = match args.sweep_depths {
        0 => Vec::new(),
        n => {
            let mut d = headscope_core::sweep::depths(n)?;
            d.reverse();
            d
        }
    };
    let mut sweeps = Vec::new();
    for &length in &args.lengths {
        let sweep = sweep_depths
            .iter()
            .map(|&depth| {
                builder.build(&needle, length, depth).with_context(|| format!("building the {length}-token prompt at depth {depth} %"))
            })
            .collect::<Result<Vec<_>>>()?;
        sweeps.push(sweep);
    }

    eprintln!(
        "loading {} ({} layers x {} heads, {} KV heads, {} parameters) on {} as {}",
        md.dir.display(),
        spec.layers,
        spec.heads,
        spec.kv_heads,
        count(parameters),
        args.device,
        dtype_name(dtype)
    );
    let shape = spec.head_shape();
    let work =
        Work { args, prompts: &prompts, sweeps: &sweeps, shape, tokenizer: &md.tokenizer, needle: &needle, monitor: monitor.as_ref() };
    let t = Instant::now();
    let (measured, prefill_chunk, flash_prefill, max_context) = if wgpu {
        let mut model = crate::sweep::load_wgpu(&md)?;
        let load_seconds = t.elapsed().as_secs_f64();
        (work.measure(&mut model, load_seconds)?, WGPU_PREFILL_CHUNK, false, None)
    } else {
        let mut model = md.load_weights(&options)?;
        device.synchronize()?;
        let load_seconds = t.elapsed().as_secs_f64();
        if let Some(chunk) = args.prefill_chunk {
            model.set_prefill_chunk(chunk);
        }
        model.set_prefill_score_budget((args.score_budget_mib as usize) << 20);
        if let Some((plan, name)) = &kv_plan {
            model.set_kv_plan(Some(plan.clone()))?;
            eprintln!("KV cache: {name}");
        }
        let measured = work.measure(&mut model, load_seconds)?;
        let max_context = if args.max_context {
            let memory = memory_bytes.expect("checked above");
            let limit = physical_limit.unwrap_or(0);
            let known = measured.results.iter().filter(|r| r.fits).map(|r| r.length).max().unwrap_or(0);
            Some(search_max_context(&mut model, &device, memory, limit, known, args)?)
        } else {
            None
        };
        (measured, model.prefill_chunk(), model.uses_fused_attention(), max_context)
    };
    let Measured { mut results, saved, load_seconds, warmup_seconds } = measured;
    if let Some((plan, _)) = &kv_plan {
        for r in &mut results {
            r.kv_cache_bytes = Some(plan.cache_bytes(&spec, r.length + args.steps, dtype_bytes as usize));
        }
    }

    let report = BenchReport {
        headscope_version: headscope_core::VERSION.to_string(),
        model: md.dir.display().to_string(),
        model_type: spec.model_type.clone(),
        layers: spec.layers,
        heads: spec.heads,
        kv_heads: spec.kv_heads,
        parameters,
        stored_parameters: stored,
        weight_bytes,
        kv_bytes_per_token: kv_per_token,
        dtype: dtype_name(dtype).to_string(),
        device: args.device.clone(),
        steps: args.steps,
        repeats: args.repeats,
        sweep_depths: args.sweep_depths,
        prefill_chunk,
        flash_prefill,
        score_budget_mib: args.score_budget_mib,
        memory_method: monitor.as_ref().map_or("none (wgpu reports no memory use)", |m| m.method()).to_string(),
        load_seconds,
        warmup_seconds,
        max_position_embeddings: trained,
        kv_cache: kv_plan.as_ref().map(|(_, name)| name.clone()),
        lengths: results,
        max_context,
    };
    print!("{}", render(&report));
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    if let Some(path) = &args.save_prompts {
        let doc = serde_json::json!({
            "model": report.model,
            "steps": args.steps,
            "layers": spec.layers,
            "heads": spec.heads,
            "real_needle": needle.real_needle,
            "tests": saved,
        });
        write_json(path, &doc)?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(value)?).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as `headscope bench --json` wrote it before the depth sweep (and the fused kernel) existed.
    const OLD_REPORT: &str = r#"{"headscope_version": "0.1.0", "model": "m", "model_type": "llama", "layers": 2, "heads": 4,
        "kv_heads": 2, "parameters": 10, "stored_parameters": 10, "weight_bytes": 40, "kv_bytes_per_token": 64, "dtype": "f32",
        "device": "cpu", "steps": 3, "repeats": 1, "prefill_chunk": 512, "score_budget_mib": 1024, "memory_method": "VmHWM",
        "load_seconds": 0.1, "warmup_seconds": 0.2, "max_position_embeddings": 2048, "max_context": null,
        "lengths": [{"length": 160, "fits": true, "error": null, "prefill_seconds": 0.01, "prefill_tokens_per_second": 15900.0,
                     "decode_step_ms": 1.5, "test_seconds": 0.02, "peak_memory_bytes": 1000, "heads_with_hits": 0}]}"#;

    #[test]
    fn old_reports_parse_and_render_without_the_sweep_column() {
        let mut r: BenchReport = serde_json::from_str(OLD_REPORT).unwrap();
        assert_eq!((r.sweep_depths, r.lengths[0].sweep_test_seconds, r.flash_prefill), (0, None, false));
        let text = render(&r);
        assert!(text.contains("| per NIAH test | peak memory |\n") && !text.contains("depth sweep"), "{text}");
        assert!(text.contains("| 160 | 0.010 s | 15900 tok/s | 1.50 ms | 0.020 s | 0.00 GiB |"), "{text}");

        r.sweep_depths = 5;
        r.lengths[0].sweep_test_seconds = Some(0.0125);
        r.lengths[0].sweep_reused_share = Some(0.3);
        r.lengths.push(LengthResult {
            length: 320,
            fits: false,
            error: Some("out of memory".into()),
            ..serde_json::from_str(&serde_json::to_string(&r.lengths[0]).unwrap()).unwrap()
        });
        let text = render(&r);
        assert!(
            text.contains("| per NIAH test | per test in a depth sweep (prefix reused) | peak memory |\n|---|---|---|---|---|---|---|\n"),
            "{text}"
        );
        assert!(text.contains("| 0.020 s | 0.013 s (30 % reused) | 0.00 GiB |"), "{text}");
        assert!(text.contains("| 320 | does not fit: out of memory | | | | | |"), "{text}");
        let again: BenchReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!((again.sweep_depths, again.lengths[0].sweep_reused_share), (5, Some(0.3)));
    }
}
