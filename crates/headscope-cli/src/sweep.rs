//! Running a NIAH sweep: resolve inputs, check the output directory's provenance, skip finished tests,
//! run the rest (each written to tests.jsonl as it ends), then aggregate.

use crate::outputs;
use crate::{KvCacheArgs, ModelArgs, SweepArgs};
use anyhow::{bail, Context, Result};
use headscope_core::files::{self, read_head_scores, short_hash, MaskInfo, ModelInfo, RunInfo, ShardInfo, TestLog, TestRecord};
use headscope_core::niah::{read_needles_jsonl, san_francisco_needle, Needle};
use headscope_core::ScoreKind;
use headscope_core::{masking, HeadId};
use headscope_engine::{block_on, Engine, KvPlan, ModelSpec, SweepInputs, SweepPlan, SweepRunner, TestOutcome};
use headscope_gpu::{GpuContext, GpuModel};
use headscope_model::loader::{dtype_name, parse_dtype, weight_files};
use headscope_model::{Device, HeadMask, HfTokenizer, LoadOptions, MaskMode, MaskScope, ModelDir, Probe};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The default haystack, shipped in the repository (`public/haystacks/village.txt`).
const DEFAULT_HAYSTACK: &str = include_str!("../../../public/haystacks/village.txt");

/// Where the bundled lab model lives, relative to the repository root (the working directory).
pub const LAB_MODEL_DIR: &str = "public/models/lab";

/// How the heads to mask are chosen.
#[derive(Debug, Clone)]
pub enum MaskChoice {
    /// The K best heads of a score file.
    Top { k: usize, scores: PathBuf },
    /// K random non-retrieval heads of a score file.
    Random { k: usize, seed: u64, threshold: f64, scores: PathBuf },
    /// Named heads.
    List(Vec<HeadId>),
}

/// Everything a sweep needs, resolved and checked, weights not yet loaded.
struct Sweep {
    model_dir: ModelDir,
    /// The candle device and dtype; unused where `wgpu` is set.
    options: LoadOptions,
    /// Run on the wgpu engine (the page's WGSL forward) rather than candle.
    wgpu: bool,
    needles: Vec<Needle>,
    haystack: Vec<String>,
    plan: SweepPlan,
    info: RunInfo,
    /// Whether tests measure their answer span's attention mass (for the soft score).
    span_mass: bool,
    /// Whether tests run the query-focused passes (for the qr score).
    query_focus: bool,
    /// Whether records count repeated hits (for the official score).
    repeats: bool,
    /// The head-level KV plan of `--kv-cache` (None: the whole cache).
    kv: Option<KvPlan>,
    /// DeCoRe decoding of `--decode` (None: greedy).
    decore: Option<DecoreChoice>,
}

/// What `--decode decore:FILE:K[:CAP]` asks for.
#[derive(Debug, Clone)]
struct DecoreChoice {
    heads: Vec<HeadId>,
    cap: Option<f64>,
    /// As run.json records it.
    name: String,
}

/// The `--device` that selects the wgpu engine.
pub const WGPU_DEVICE: &str = "wgpu";

/// The candle device named by `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    if s.contains(',') {
        bail!(
            "--device `{s}`: a list of devices (which splits a model's layers) is taken by detect, niah, report, kv, cot, generate and perplexity; this command runs on one device"
        );
    }
    match s {
        "cpu" => Ok(Device::Cpu),
        WGPU_DEVICE => bail!("--device wgpu runs `detect`, `niah`, `report` and `bench` only; use cpu or cuda here"),
        _ => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("--device `{s}`: expected cpu, cuda or cuda:N"))?,
                None => bail!("--device `{s}`: expected cpu, cuda or cuda:N"),
            };
            Device::new_cuda(ordinal).map_err(|e| {
                let e = anyhow::Error::from(e);
                if is_out_of_memory(&format!("{e:#}")) {
                    // The GPU is there but full: saying CUDA is missing would send the user the wrong way.
                    anyhow::anyhow!(
                        "--device {s}: the GPU has no memory left to start on (another process may hold it): {}",
                        device_words(&e)
                    )
                } else {
                    e.context(format!(
                        "--device {s}: CUDA is not available (build with --features cuda and run on a machine with an NVIDIA GPU)"
                    ))
                }
            })
        }
    }
}

/// The candle devices of a `--device` list that splits the decoder layers over them: `cpu,cpu`,
/// `cuda:0,cuda:1`, or `cuda:0,1` (a bare number after a cuda entry is another cuda ordinal). One entry
/// is [`parse_device`]'s single device. The devices are all of one kind: the attention path is chosen
/// once for the whole model, and a CPU block would hold a CUDA pipeline up anyway.
pub fn parse_devices(s: &str) -> Result<Vec<Device>> {
    if !s.contains(',') {
        return Ok(vec![parse_device(s)?]);
    }
    let mut names: Vec<String> = Vec::new();
    for (i, entry) in s.split(',').map(str::trim).enumerate() {
        if entry.is_empty() {
            bail!("--device `{s}`: entry {} of the list is empty (expected e.g. cpu,cpu or cuda:0,1)", i + 1);
        }
        if entry == WGPU_DEVICE {
            bail!("--device `{s}`: wgpu runs on one device; a list splits the layers over cpu or cuda devices");
        }
        let after_cuda = names.last().is_some_and(|n| n.starts_with("cuda"));
        let name = if after_cuda && entry.parse::<usize>().is_ok() { format!("cuda:{entry}") } else { entry.to_owned() };
        if name != "cpu" && !name.starts_with("cuda") {
            bail!("--device `{s}`: unknown device `{entry}` in the list (expected cpu, cuda, cuda:N, or a number after a cuda entry)");
        }
        names.push(name);
    }
    let cpus = names.iter().filter(|n| *n == "cpu").count();
    if cpus != 0 && cpus != names.len() {
        bail!("--device `{s}`: mixes cpu and cuda; split the layers over devices of one kind");
    }
    names.iter().map(|n| parse_device(n)).collect()
}

/// Load options for the candle backend on `--device` (one device, or a list that splits the layers).
pub(crate) fn load_options(device: &str, dtype: Option<headscope_model::DType>) -> Result<LoadOptions> {
    let mut devices = parse_devices(device)?;
    let first = devices.remove(0);
    Ok(LoadOptions { dtype, device: first, later_devices: devices })
}

/// The engine that `--device` and `--dtype` choose: candle's load options, and whether the wgpu engine
/// runs instead (its options then only name f32, which run.json records).
pub(crate) fn engine_options(run: &ModelArgs) -> Result<(LoadOptions, bool)> {
    if run.device != WGPU_DEVICE {
        return Ok((load_options(&run.device, parse_dtype(&run.dtype)?)?, false));
    }
    // The WGSL forward computes in f32 whatever the checkpoint stores.
    if !matches!(run.dtype.as_str(), "auto" | "f32") {
        bail!("--device wgpu computes in f32: --dtype {} is not available there (leave it out or pass f32)", run.dtype);
    }
    if run.prefill_chunk.is_some() {
        bail!("--prefill-chunk sets the candle path's chunks; --device wgpu chooses its own (256 tokens per submission)");
    }
    Ok((LoadOptions::on(Device::Cpu, Some(headscope_model::DType::F32)), true))
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading haystack {}", path.display()))
}

/// What run.json records about the model of a run.
pub(crate) fn model_info(model_dir: &ModelDir, options: &LoadOptions, device: &str) -> ModelInfo {
    let spec = &model_dir.spec;
    ModelInfo {
        dir: model_dir.dir.display().to_string(),
        hash: model_dir.hash.clone(),
        model_type: spec.model_type.clone(),
        layers: spec.layers,
        heads: spec.heads,
        kv_heads: spec.kv_heads,
        dtype: dtype_name(ModelDir::resolve_dtype(options)).to_string(),
        device: device.to_string(),
        attention_layers: spec.hybrid_attention_layers(),
    }
}

/// Opens `--model`, or the bundled lab model when it is not given.
pub(crate) fn open_model(args: &SweepArgs) -> Result<ModelDir> {
    open_model_dir(&args.run)
}

/// The model of `--model`, or the bundled lab model (from the repository root).
pub(crate) fn open_model_dir(run: &ModelArgs) -> Result<ModelDir> {
    let path = match &run.model {
        Some(p) => p.clone(),
        None => {
            let lab = PathBuf::from(LAB_MODEL_DIR);
            if !lab.join("config.json").exists() {
                bail!("no --model given and the bundled lab model is not in {LAB_MODEL_DIR} (run from the repository root, or pass --model DIR)");
            }
            lab
        }
    };
    Ok(ModelDir::open(&path)?)
}

impl Sweep {
    fn prepare(args: &SweepArgs, command: &str, model_dir: ModelDir, mask: Option<MaskInfo>) -> Result<Sweep> {
        let (options, wgpu) = engine_options(&args.run)?;
        let needles = match &args.needles {
            Some(p) => read_needles_jsonl(p)?,
            None => vec![san_francisco_needle()],
        };
        let mut haystack = if args.haystack.is_empty() {
            vec![DEFAULT_HAYSTACK.to_string()]
        } else {
            args.haystack.iter().map(|p| read_text(p)).collect::<Result<_>>()?
        };
        if let Some(percent) = args.haystack_start {
            // One rotated text: its hash in run.json (and so resuming) tells it from the unrotated one.
            haystack = vec![headscope_core::niah::haystack_from(&haystack, percent)?];
        }
        let format = model_dir.prompt_format(args.run.plain);
        let info = RunInfo {
            headscope_version: headscope_core::VERSION.to_string(),
            command: command.to_string(),
            model: model_info(&model_dir, &options, &args.run.device),
            tokenizer_hash: model_dir.tokenizer_hash.clone(),
            prompt_format: format.name().to_string(),
            needles_hash: short_hash(serde_json::to_string(&needles)?.as_bytes()),
            haystack_hash: short_hash(haystack.join("\n\n").as_bytes()),
            max_new_tokens: args.max_new_tokens,
            mask,
            seed: None,
            scores: Vec::new(),
            kv_cache: None,
            decode: None,
            shard: None,
        };
        let kv = kv_plan(&args.kv, &model_dir.spec)?;
        let decore = decore_choice(args, &model_dir.spec)?;
        if decore.is_some() && wgpu {
            bail!("--decode decore runs on the candle backend (cpu, cuda)");
        }
        if kv.is_some() && wgpu {
            bail!("--kv-cache runs on the candle backend (cpu, cuda); --device wgpu keeps every position");
        }
        let mut info = info;
        info.kv_cache = kv.as_ref().map(|(_, name)| name.clone());
        info.decode = decore.as_ref().map(|d| d.name.clone());
        // Checked before any file is written or any weight is loaded: every needle builds at the
        // shortest length, the longest test fits the model's context.
        let inputs = SweepInputs { needles: &needles, haystack: &haystack, max_new_tokens: args.max_new_tokens };
        let mut plan = SweepPlan::new(&model_dir.spec, &model_dir.tokenizer, format, &inputs, &args.lengths, args.depths)?;
        // A short haystack is repeated to the length, and a sentence in it that resembles the needle
        // with it (`headscope_engine::sweep::haystack_repeats`).
        if let (Some(times), Some(longest)) = (plan.haystack_repeats(), plan.lengths.iter().max()) {
            eprintln!(
                "note: the haystack is {} tokens, so {longest}-token prompts repeat it about {times} times; \
                 a sentence in it that resembles the needle repeats with it",
                plan.haystack_tokens
            );
        }
        if let Some(shard) = args.shard {
            info.shard = Some(ShardInfo {
                shard,
                needles: needles.len(),
                lengths: plan.lengths.clone(),
                depths: plan.depths.clone(),
                model_name: model_name(&model_dir.dir),
                gate: None,
                threshold: None,
                pass: None,
            });
            let whole = plan.keys.len();
            plan.keys = shard.select(&plan.keys);
            eprintln!("shard {shard}: {} of the plan's {whole} tests", plan.keys.len());
            if plan.keys.is_empty() {
                eprintln!(
                    "shard {shard} has no test: the plan's (needle, length) groups, which are not split, are fewer than {} shards",
                    shard.count
                );
            }
        }
        Ok(Sweep {
            model_dir,
            options,
            wgpu,
            needles,
            haystack,
            plan,
            info,
            span_mass: false,
            query_focus: false,
            repeats: false,
            kv: kv.map(|(plan, _)| plan),
            decore,
        })
    }

    /// Sets what a shard's run.json records of the command's own settings (gate, pass, ...); nothing
    /// for an unsharded run.
    fn record_shard(&mut self, set: impl FnOnce(&mut ShardInfo)) {
        if let Some(s) = self.info.shard.as_mut() {
            set(s);
        }
    }

    /// Runs every test not yet in `log` (no mask); returns how many ran, and the log.
    fn run(&self, args: &SweepArgs, log: TestLog) -> Result<(usize, TestLog)> {
        let mut variants = [Variant { out: args.out.clone(), log, mask: None, watch: watched_heads(args)? }];
        let ran = self.run_variants(args, &mut variants)?;
        let [v] = variants;
        Ok((ran, v.log))
    }

    /// Runs every test of the grid that some variant's log lacks, on the engine's one sweep runner
    /// ([`SweepRunner`]): each prompt is built and prefilled once, then decoded under each variant's mask
    /// that still needs it, each prefill reusing the cache of the prompt before it. Each record is
    /// written as its test ends; records are keyed by test id, so the order they are written in does
    /// not matter (readers take them in plan order). Returns how many decodes ran.
    fn run_variants(&self, args: &SweepArgs, variants: &mut [Variant]) -> Result<usize> {
        let md = &self.model_dir;
        let keys = &self.plan.keys;
        let inputs = SweepInputs { needles: &self.needles, haystack: &self.haystack, max_new_tokens: args.max_new_tokens };
        let masks = variants.iter().map(|v| v.mask.clone()).collect();
        let shape = md.spec.head_shape();
        for v in variants.iter() {
            shape.check(&v.watch)?;
        }
        let format = md.prompt_format(args.run.plain);
        let runner =
            SweepRunner::new(&md.spec, &md.tokenizer, format, inputs, &self.plan, masks, &md.eos_token_ids, Probe::default(), |k, v| {
                !variants[v].log.contains(&k.id())
            })?;
        let runner = if self.span_mass { runner.measuring_span_mass() } else { runner };
        let runner = if self.query_focus { runner.measuring_query_focus() } else { runner };
        let runner = if self.repeats { runner.counting_repeats() } else { runner };
        let pending = runner.pending();
        if pending == 0 {
            match variants {
                [one] => eprintln!("all {} tests are already in {}: nothing to run", keys.len(), one.out.join("tests.jsonl").display()),
                _ => eprintln!("all {} tests of the {} runs are already done: nothing to run", keys.len(), variants.len()),
            }
            return Ok(0);
        }
        let attending = md.spec.attention_layers();
        let hybrid = if attending.len() == md.spec.layers {
            String::new()
        } else {
            // Head `l-h` of a hybrid is head h of the l-th attention layer.
            format!(
                "; heads scored in the {} attention layers {:?}, numbered 0..{} in the head grid",
                attending.len(),
                attending,
                attending.len() - 1
            )
        };
        eprintln!(
            "loading {} ({} layers x {} heads, {} KV heads{hybrid}) on {}",
            md.dir.display(),
            md.spec.layers,
            md.spec.heads,
            md.spec.kv_heads,
            args.run.device
        );
        if self.wgpu {
            let mut model = load_wgpu(md)?;
            eprintln!("wgpu adapter: {}", model.context().adapter().describe());
            self.drive(args, &mut model, runner, variants, &|| None)?;
        } else {
            let mut model = md.load_weights(&self.options).map_err(|e| {
                let what = format!("loading the weights of {} on {}", md.dir.display(), args.run.device);
                out_of_memory_or(e.into(), &what, headscope_model::loader::device_memory(&self.options.device), variants)
            })?;
            if let Some(chunk) = args.run.prefill_chunk {
                model.set_prefill_chunk(chunk);
            }
            if let Some(plan) = &self.kv {
                model.set_kv_plan(Some(plan.clone()))?;
                let positions = runner.positions();
                let bytes = ModelDir::resolve_dtype(&self.options).size_in_bytes();
                let whole = crate::bench::kv_bytes_per_token(&md.spec, bytes as u64) * positions as u64;
                eprintln!(
                    "KV cache: {} of {} KV heads keep every position, the others {} sink + {} recent: {:.2} MB at {positions} positions (the whole cache: {:.2} MB)",
                    plan.full_heads(),
                    plan.full.iter().flatten().count(),
                    plan.sink,
                    plan.window,
                    plan.cache_bytes(&md.spec, positions, bytes) as f64 / 1e6,
                    whole as f64 / 1e6
                );
            }
            let memory = || headscope_model::loader::device_memory(&self.options.device);
            match &self.decore {
                Some(d) => {
                    let mut engine = headscope_model::generate::Decore::new(&mut model, d.heads.clone(), MaskMode::Uniform, d.cap)?;
                    self.drive(args, &mut engine, runner, variants, &memory)?;
                    let mean = engine.alphas.iter().sum::<f64>() / engine.alphas.len().max(1) as f64;
                    eprintln!("DeCoRe: {} steps, mean contrast weight {mean:.3}", engine.alphas.len());
                }
                None => self.drive(args, &mut model, runner, variants, &memory)?,
            }
        }
        Ok(pending)
    }

    /// RazorAttention's data-free scores (induction, echo) of the model: one pass over
    /// random tokens ([`headscope_core::score::RepeatedTokens::for_model`]) on the run's engine.
    fn repeated_token_scores(&self, args: &SweepArgs) -> Result<(Vec<f64>, Vec<f64>)> {
        let md = &self.model_dir;
        let seq =
            headscope_core::score::RepeatedTokens::for_model(md.spec.vocab_size, md.spec.max_position_embeddings, md.spec.bos_token_id)?;
        eprintln!("induction and echo scores: {} random tokens repeated {} times", seq.period, headscope_core::score::REPEATED_TIMES);
        if self.wgpu {
            let mut model = load_wgpu(md)?;
            Ok(block_on(headscope_engine::repeated::induction_and_echo(&mut model, &seq))?)
        } else {
            let mut model = md.load_weights(&self.options)?;
            if let Some(chunk) = args.run.prefill_chunk {
                model.set_prefill_chunk(chunk);
            }
            Ok(block_on(headscope_engine::repeated::induction_and_echo(&mut model, &seq))?)
        }
    }

    /// Runs what `runner` has left on `engine`, appending each record to its variant's log as it ends.
    /// `memory` reports the device's free and total bytes, for an out-of-memory error to name them.
    fn drive<E: Engine>(
        &self,
        args: &SweepArgs,
        engine: &mut E,
        mut runner: SweepRunner<'_, HfTokenizer>,
        variants: &mut [Variant],
        memory: &dyn Fn() -> Option<(u64, u64)>,
    ) -> Result<()>
    where
        E::Error: std::error::Error + Send + Sync + 'static,
    {
        let keys = &self.plan.keys;
        let positions = runner.positions();
        block_on(engine.reserve(positions)).map_err(|e| {
            let what = format!("reserving the KV cache for {positions} positions (the longest prompt and its answer)");
            out_of_memory_or(e.into(), &what, memory(), variants)
        })?;
        let total = keys.len() * variants.len();
        let batch = variants.len() > 1;
        let bar = progress_bar(total as u64, (total - runner.pending()) as u64);
        while let Some(outcome) = block_on(runner.next(engine, |_| true)) {
            let out = outcome.map_err(|e| {
                let what = format!("test {} (a {}-token prompt)", e.key.id(), e.key.length);
                bar.finish_and_clear();
                out_of_memory_or(e.into(), &what, memory(), variants)
            })?;
            let key = keys[out.index];
            tracing::debug!("{}: prefill: {} of {} positions reused from the cache", key.id(), out.reused, out.test.prompt_ids.len() - 1);
            let variant = &mut variants[out.variant];
            let record = self.record(args, &out, &variant.watch);
            let line = format!("{} recall {:.2} {:.1}s: {:?}", key.id(), record.recall, record.seconds, record.answer.trim());
            variant.log.append(record)?;
            let line = if batch { format!("{}: {line}", variant.out.display()) } else { line };
            if bar.is_hidden() {
                eprintln!("[{}/{total}] {line}", bar.position() + 1);
            } else {
                bar.set_message(line);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// The record of one finished test as the CLI writes it: the runner's, with the watched heads'
    /// argmax positions and, when asked, the prompt's ids.
    fn record(&self, args: &SweepArgs, out: &TestOutcome, watch: &[HeadId]) -> TestRecord {
        let shape = self.model_dir.spec.head_shape();
        let head_argmax = (!watch.is_empty()).then(|| {
            watch
                .iter()
                .filter_map(|&h| shape.index(h).map(|i| (h, out.trace.argmax_position.iter().map(|step| step[i]).collect())))
                .collect()
        });
        TestRecord { prompt_ids: args.save_prompts.then(|| out.test.prompt_ids.clone()), head_argmax, ..out.record.clone() }
    }
}

/// Whether an error is the device running out of memory (as opposed to a bug to report): the CUDA
/// driver's and cuBLAS's codes, candle's and wgpu's wording.
pub(crate) fn is_out_of_memory(e: &(impl std::fmt::Display + ?Sized)) -> bool {
    let m = e.to_string().to_lowercase();
    m.contains("out_of_memory") || m.contains("out of memory") || m.contains("alloc_failed") || m.contains("memory allocation")
}

/// `error` as it stops a sweep. An out-of-memory error says what ran out (`what`: the test and its
/// length), the device's memory when it failed, that the finished tests are kept, and how to go on;
/// any other error is returned as it is.
fn out_of_memory_or(error: anyhow::Error, what: &str, memory: Option<(u64, u64)>, variants: &[Variant]) -> anyhow::Error {
    if !is_out_of_memory(&format!("{error:#}")) {
        return error;
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    let memory = match memory {
        Some((free, total)) => format!(" ({:.2} GiB of the device's {:.1} GiB free after the failure)", gib(free), gib(total)),
        None => String::new(),
    };
    let kept: Vec<String> =
        variants.iter().map(|v| format!("{} finished tests in {}", v.log.records().len(), v.out.join("tests.jsonl").display())).collect();
    anyhow::anyhow!(
        "{what} ran out of device memory{memory}. Kept: {}. Rerun the same command with shorter --lengths (or on a device with more memory) to go on from there. The device said: {}",
        kept.join(", "),
        device_words(&error)
    )
}

/// The device's own words in `error`: the innermost line of its chain that names running out of
/// memory (the driver's code), else the root cause's first line. Not the whole chain: candle's errors
/// repeat their cause and may carry a backtrace of many lines.
fn device_words(error: &anyhow::Error) -> String {
    let lines: Vec<String> = error.chain().flat_map(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>()).collect();
    lines
        .into_iter()
        .rev()
        .find(|l| is_out_of_memory(l.as_str()))
        .or_else(|| error.root_cause().to_string().lines().next().map(str::to_owned))
        .unwrap_or_default()
}

/// The model of `md` on the wgpu engine: the first adapter wgpu finds (Vulkan, Metal or DX12), the
/// weights uploaded as f32.
pub(crate) fn load_wgpu(md: &ModelDir) -> Result<GpuModel> {
    let ctx = block_on(GpuContext::new()).context("--device wgpu: no usable GPU adapter")?;
    let files = weight_files(&md.dir)?;
    let bytes = files.iter().map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display()))).collect::<Result<Vec<_>>>()?;
    let shards: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    block_on(GpuModel::load(&ctx, &md.spec, &shards)).with_context(|| format!("loading {} on wgpu", md.dir.display()))
}

/// One run of a batch: its output directory, its log, what it masks and which heads' argmax it keeps.
struct Variant {
    out: PathBuf,
    log: TestLog,
    mask: Option<HeadMask>,
    /// Heads whose argmax position at every step goes into each record (`head_argmax`); empty: none.
    watch: Vec<HeadId>,
}

fn progress_bar(total: u64, done: u64) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:30.green/white} {pos}/{len} tests [{elapsed_precise} < {eta_precise}] {wide_msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_length(total);
    bar.set_position(done);
    bar
}

/// Creates the output directory, checks and writes run.json, and opens tests.jsonl. A run.json with
/// no finished test behind it protects nothing and is replaced.
fn open_out(out: &Path, info: &RunInfo) -> Result<TestLog> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let log = TestLog::open(&out.join("tests.jsonl"))?;
    let run_json = out.join("run.json");
    if log.records().is_empty() && run_json.exists() {
        std::fs::remove_file(&run_json).with_context(|| format!("replacing {}", run_json.display()))?;
    }
    info.check_and_write(&run_json)?;
    Ok(log)
}

/// `headscope detect`.
pub fn detect(args: &SweepArgs, gate: f64, threshold: f64, score_kinds: &str) -> Result<()> {
    if !(0.0..=1.0).contains(&gate) {
        bail!("--gate must be between 0 and 1");
    }
    let kinds = ScoreKind::parse_list(score_kinds).context("--score")?;
    let mut sweep = Sweep::prepare(args, "detect", open_model(args)?, None)?;
    sweep.span_mass = kinds.iter().any(|k| k.needs_attention_mass());
    sweep.query_focus = kinds.contains(&ScoreKind::Qr);
    sweep.repeats = kinds.contains(&ScoreKind::Official);
    if kinds.iter().any(|&k| k != ScoreKind::Eq1) {
        sweep.info.scores =
            ScoreKind::ALL.iter().filter(|k| **k == ScoreKind::Eq1 || kinds.contains(k)).map(|k| k.name().to_string()).collect();
    }
    sweep.record_shard(|s| {
        s.gate = Some(gate);
        s.threshold = Some(threshold);
    });
    let log = open_out(&args.out, &sweep.info)?;
    let (ran, log) = sweep.run(args, log)?;
    let shape = sweep.model_dir.spec.head_shape();
    let data_free: Vec<ScoreKind> = kinds.iter().copied().filter(|k| !k.from_records()).collect();
    if data_free.iter().any(|k| !args.out.join(k.file_name()).exists()) {
        let (induction, echo) = sweep.repeated_token_scores(args)?;
        for kind in data_free {
            let values = if kind == ScoreKind::Induction { &induction } else { &echo };
            let scores = headscope_core::HeadScores::from_lists(shape, values.iter().map(|&v| vec![v]).collect())?;
            let path = args.out.join(kind.file_name());
            files::write_head_scores(&path, &scores)?;
            println!("{} scores: {}", kind.name(), path.display());
        }
    }
    let model_name = model_name(&sweep.model_dir.dir);
    let rows = sweep.model_dir.spec.hybrid_attention_layers();
    outputs::finish_detect(&args.out, shape, rows.as_deref(), log.records(), &kinds, gate, threshold, &model_name, ran)?;
    println!("wrote {}/{{head_scores.json, tests.jsonl, heads.png, niah.png, summary.json, run.json}}", args.out.display());
    Ok(())
}

/// The head-level KV plan `--kv-cache` names for a model of `spec`, with its name for run.json; None for
/// `full`.
pub fn kv_plan(args: &KvCacheArgs, spec: &ModelSpec) -> Result<Option<(KvPlan, String)>> {
    let policy = args.kv_cache.trim();
    let (sink, window) = (args.kv_sink, args.kv_window);
    let number = |s: &str, what: &str| -> Result<usize> {
        s.parse().with_context(|| format!("--kv-cache `{policy}`: {what} `{s}` is not a whole number"))
    };
    let plan = if policy == "full" {
        return Ok(None);
    } else if let Some(w) = policy.strip_prefix("window:") {
        KvPlan::all_windowed(spec, sink, number(w, "the window")?)?
    } else if let Some(rest) = policy.strip_prefix("heads:") {
        let (file, k) = rest.rsplit_once(':').with_context(|| format!("--kv-cache `{policy}`: expected heads:FILE:K"))?;
        let scores = read_scores_for(Path::new(file), spec.head_shape(), spec.group_size())?;
        KvPlan::keeping_heads(spec, &masking::top_k(&scores, number(k, "K")?)?, sink, window)?
    } else if let Some(rest) = policy.strip_prefix("random:") {
        let (k, seed) = rest.split_once(':').with_context(|| format!("--kv-cache `{policy}`: expected random:K:SEED"))?;
        KvPlan::random(spec, number(k, "K")?, number(seed, "the seed")? as u64, sink, window)?
    } else {
        bail!("--kv-cache `{policy}`: expected full, window:W, heads:FILE:K or random:K:SEED");
    };
    let window = if policy.starts_with("window:") { plan.window } else { window };
    let name =
        format!("{policy} (sink {sink}, window {window}; {} of {} KV heads whole)", plan.full_heads(), plan.full.iter().flatten().count());
    Ok(Some((plan, name)))
}

/// The DeCoRe decoding `--decode` names for a model of `spec`; None for `greedy`.
fn decore_choice(args: &SweepArgs, spec: &ModelSpec) -> Result<Option<DecoreChoice>> {
    let how = args.decode.trim();
    if how == "greedy" {
        return Ok(None);
    }
    let Some(rest) = how.strip_prefix("decore:") else {
        bail!("--decode `{how}`: expected greedy or decore:FILE:K[:CAP]");
    };
    // FILE may hold ':'; K and the optional CAP are the last fields.
    let expected = || format!("--decode `{how}`: expected decore:FILE:K or decore:FILE:K:CAP");
    let (head, last) = rest.rsplit_once(':').with_context(expected)?;
    let (file, k, cap) = match head.rsplit_once(':') {
        Some((file, k)) if k.parse::<usize>().is_ok() && last.parse::<f64>().is_ok() => {
            (file, k.parse::<usize>()?, Some(last.parse::<f64>()?))
        }
        _ => (head, last.parse::<usize>().with_context(expected)?, None),
    };
    if cap.is_some_and(|c| !(c.is_finite() && c >= 0.0)) {
        bail!("--decode `{how}`: the cap must be a non-negative number");
    }
    if k == 0 {
        bail!("--decode `{how}`: K must be at least 1");
    }
    let scores = read_scores_for(Path::new(&file), spec.head_shape(), spec.group_size())?;
    let heads = masking::top_k(&scores, k)?;
    Ok(Some(DecoreChoice { heads, cap, name: how.to_string() }))
}

/// `headscope niah`.
pub fn niah(args: &SweepArgs, choice: Option<MaskChoice>, mode: MaskMode, scope: MaskScope, pass: f64) -> Result<()> {
    niah_batch(args, &[MaskRun { out: args.out.clone(), choice, plan_name: None }], mode, scope, pass, &watched_heads(args)?)
}

/// One `niah` run of a batch ([`niah_batch`]): its output directory and the heads it masks.
#[derive(Debug, Clone)]
pub struct MaskRun {
    /// Output directory, laid out as `headscope niah --out` lays it out.
    pub out: PathBuf,
    /// The heads to mask (None: no mask).
    pub choice: Option<MaskChoice>,
    /// The plan's name in run.json, instead of the one `niah` gives it (which names the score file's
    /// path as given): the report names its score file relative to its own directory, so that a rerun
    /// with the directory spelled or placed differently still resumes.
    pub plan_name: Option<String>,
}

/// The mask plan's name for provenance and the heads it picks on a model of `shape`.
fn resolve_choice(choice: &Option<MaskChoice>, shape: headscope_core::HeadShape, heads_per_kv: usize) -> Result<(String, Vec<HeadId>)> {
    let (name, heads) = match choice {
        None => (String::new(), vec![]),
        Some(MaskChoice::List(h)) => ("list".to_string(), h.clone()),
        Some(MaskChoice::Top { k, scores }) => {
            let s = read_scores_for(scores, shape, heads_per_kv)?;
            (format!("top-{k} of {}", scores.display()), masking::top_k(&s, *k)?)
        }
        Some(MaskChoice::Random { k, seed, threshold, scores }) => {
            let s = read_scores_for(scores, shape, heads_per_kv)?;
            (format!("random-{k} seed {seed} of {} (mean <= {threshold})", scores.display()), masking::random_k(&s, *k, *seed, *threshold)?)
        }
    };
    shape.check(&heads)?;
    Ok((name, heads))
}

/// Several `niah` runs over one grid (the grid, model and inputs of `args`; `args.out` is not used),
/// each into its own directory exactly as `headscope niah` writes it (tests.jsonl, run.json, niah.png,
/// summary.json), run test by test so that decode-scope masks share each prompt's prefill. `watch`
/// names heads whose argmax positions every record keeps. Finished tests are skipped, as in `niah`.
pub fn niah_batch(args: &SweepArgs, runs: &[MaskRun], mode: MaskMode, scope: MaskScope, pass: f64, watch: &[HeadId]) -> Result<()> {
    // Read before any test runs: a malformed list is named at once.
    let distractors = distractor_answers(args)?;
    let model_dir = open_model(args)?;
    let shape = model_dir.spec.head_shape();
    let mut plans = Vec::with_capacity(runs.len());
    for run in runs {
        let (name, heads) = resolve_choice(&run.choice, shape, model_dir.spec.heads / model_dir.spec.kv_heads)?;
        plans.push((run.plan_name.clone().unwrap_or(name), heads));
    }
    let mut sweep = Sweep::prepare(args, "niah", model_dir, None)?;
    if sweep.info.shard.is_some() && distractors.is_some() {
        // Their counts need every prompt rebuilt, which merge (with no model) cannot do yet.
        bail!(
            "--shard: needles with distractor_answers are not split yet (headscope merge does not count distractors); run this sweep whole"
        );
    }
    sweep.record_shard(|s| s.pass = Some(pass));
    let mut variants = Vec::with_capacity(runs.len());
    for (run, (plan_name, heads)) in runs.iter().zip(&plans) {
        let mask = (!heads.is_empty()).then(|| HeadMask { heads: heads.clone(), mode, scope });
        let mut info = sweep.info.clone();
        info.mask = mask.as_ref().map(|m| MaskInfo {
            plan: plan_name.clone(),
            heads: m.heads.clone(),
            mode: mode.to_string(),
            scope: scope.to_string(),
        });
        if let Some(MaskChoice::Random { seed, .. }) = &run.choice {
            info.seed = Some(*seed);
        }
        let log = open_out(&run.out, &info)?;
        variants.push(Variant { out: run.out.clone(), log, mask, watch: watch.to_vec() });
    }
    sweep.run_variants(args, &mut variants)?;
    let model_name = model_name(&sweep.model_dir.dir);
    for (v, (plan_name, heads)) in variants.iter().zip(&plans) {
        outputs::finish_niah(&v.out, v.log.records(), &model_name, heads, plan_name, &mode.to_string(), pass)?;
        if let Some(distractors) = &distractors {
            distractor_summary(&sweep, args, &v.out, v.log.records(), distractors, pass)?;
        }
    }
    Ok(())
}

/// Per needle of `--needles`, its `distractor_answers` (the answer spans of the distractor sentences
/// placed beside it in its `needle` text); None when no needle has any.
fn distractor_answers(args: &SweepArgs) -> Result<Option<Vec<Vec<String>>>> {
    let Some(path) = &args.needles else { return Ok(None) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut all = Vec::new();
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("{}: line {} is not JSON", path.display(), i + 1))?;
        let answers = match v.get("distractor_answers") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .with_context(|| format!("{}: needle {}: distractor_answers must be a list of strings", path.display(), i + 1))?,
            Some(_) => bail!("{}: needle {}: distractor_answers must be a list of strings", path.display(), i + 1),
        };
        all.push(answers);
    }
    Ok(all.iter().any(|a| !a.is_empty()).then_some(all))
}

/// DeCoRe's hallucination count for a run whose needles sit beside distractors: every answer sorted
/// into correct, a distractor's fact, made up, or other (each prompt rebuilt for its context and
/// checked against the recorded hash), printed and written into summary.json as `distractors`.
fn distractor_summary(
    sweep: &Sweep,
    args: &SweepArgs,
    out: &Path,
    records: &[TestRecord],
    distractors: &[Vec<String>],
    pass: f64,
) -> Result<()> {
    use headscope_core::analysis::{classify_with_distractors, DistractorClass};
    let md = &sweep.model_dir;
    let mut builder = headscope_core::niah::NiahBuilder::new(&md.tokenizer, md.prompt_format(args.run.plain), &sweep.haystack)?;
    let mut counts: std::collections::BTreeMap<&'static str, usize> = std::collections::BTreeMap::new();
    for r in records {
        let needle = sweep.needles.get(r.needle_index).with_context(|| format!("test {}: no needle {}", r.id, r.needle_index))?;
        let test = builder.build(needle, r.length, r.depth_percent).with_context(|| format!("rebuilding test {}", r.id))?;
        if test.prompt_hash() != r.prompt_hash {
            bail!("test {}: the rebuilt prompt differs from the recorded one: were the needles or haystack changed?", r.id);
        }
        let no_distractors = Vec::new();
        let d = distractors.get(r.needle_index).unwrap_or(&no_distractors);
        let class = classify_with_distractors(&r.answer, &needle.real_needle, d, &test.prompt_text, pass);
        let name = match class {
            DistractorClass::Correct => "correct",
            DistractorClass::Distractor => "distractor",
            DistractorClass::Fabricated => "fabricated",
            DistractorClass::Other => "other",
        };
        *counts.entry(name).or_default() += 1;
    }
    let n = records.len();
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    let hallucinated = get("distractor") + get("fabricated");
    println!(
        "with distractors: {hallucinated}/{n} hallucinated ({} copied a distractor, {} made up), {} correct, {} other",
        get("distractor"),
        get("fabricated"),
        get("correct"),
        get("other")
    );
    let path = out.join("summary.json");
    let mut summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    summary["distractors"] = serde_json::json!({
        "tests": n, "correct": get("correct"), "distractor": get("distractor"), "fabricated": get("fabricated"),
        "other": get("other"), "hallucination_rate": if n == 0 { 0.0 } else { hallucinated as f64 / n as f64 },
    });
    files::write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    Ok(())
}

/// Head scores for masking a model of `shape`: an official head-score file, or a DuoAttention head file
/// (`.tsv`, one gate per KV head, spread over its `heads_per_kv` query heads).
pub(crate) fn read_scores_for(path: &Path, shape: headscope_core::HeadShape, heads_per_kv: usize) -> Result<headscope_core::HeadScores> {
    let s = read_scores_file(path, heads_per_kv)?;
    if s.shape() != shape {
        bail!(
            "{}: scores for {} layers x {} heads, but the model has {} x {}",
            path.display(),
            s.shape().layers,
            s.shape().heads,
            shape.layers,
            shape.heads
        );
    }
    Ok(s)
}

/// Reads a head-score file by its extension: `.tsv` is DuoAttention's layout (KV heads of
/// `heads_per_kv` query heads each), anything else the official JSON.
pub(crate) fn read_scores_file(path: &Path, heads_per_kv: usize) -> Result<headscope_core::HeadScores> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("tsv")) {
        Ok(files::read_duo_tsv(path, heads_per_kv)?)
    } else {
        Ok(read_head_scores(path)?)
    }
}

pub(crate) fn model_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

/// The heads of `--watch-heads` (none without it): each test's record keeps their argmax positions.
fn watched_heads(args: &SweepArgs) -> Result<Vec<HeadId>> {
    Ok(match &args.watch_heads {
        Some(list) => headscope_core::head::parse_head_list(list).with_context(|| "--watch-heads")?,
        None => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_split_over_devices_of_one_kind() {
        assert_eq!(parse_devices("cpu").unwrap().len(), 1);
        assert!(parse_devices("cpu,cpu").unwrap().iter().all(Device::is_cpu));
        assert_eq!(parse_devices("cpu, cpu,cpu").unwrap().len(), 3);
        let options = load_options("cpu,cpu,cpu", None).unwrap();
        assert!(options.device.is_cpu());
        assert_eq!(options.later_devices.len(), 2);
        assert!(load_options("cpu", None).unwrap().later_devices.is_empty());
        let error = |s: &str| format!("{:#}", parse_devices(s).unwrap_err());
        assert!(error("cpu,,cpu").contains("entry 2 of the list is empty"), "{}", error("cpu,,cpu"));
        assert!(error("cpu,").contains("entry 2 of the list is empty"));
        assert!(error(",cpu").contains("entry 1 of the list is empty"));
        assert!(error("cpu,tpu").contains("unknown device `tpu`"), "{}", error("cpu,tpu"));
        // A bare number names a cuda ordinal only after a cuda entry.
        assert!(error("cpu,1").contains("unknown device `1`"));
        assert!(error("cpu,cuda:0").contains("mixes cpu and cuda"), "{}", error("cpu,cuda:0"));
        assert!(error("cuda:0,cpu").contains("mixes cpu and cuda"));
        assert!(error("wgpu,wgpu").contains("wgpu runs on one device"));
        // Commands that take one device say so instead of failing on the comma.
        assert!(format!("{:#}", parse_device("cpu,cpu").unwrap_err()).contains("this command runs on one device"));
        #[cfg(not(feature = "cuda"))]
        for list in ["cuda:0,1", "cuda:0,cuda:1", "cuda,cuda"] {
            assert!(error(list).contains("CUDA is not available"), "{list}: {}", error(list));
        }
    }

    #[test]
    fn out_of_memory_errors_name_the_test_the_memory_and_what_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = TestLog::open(&dir.path().join("tests.jsonl")).unwrap();
        let variants = [Variant { out: dir.path().to_owned(), log, mask: None, watch: vec![] }];
        // As candle reports cudarc's error.
        let device = anyhow::anyhow!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")");
        let what = "test n0-L65536-d50 (a 65536-token prompt)";
        let message = format!("{:#}", out_of_memory_or(device, what, Some((3 << 29, 140 << 30)), &variants));
        for part in
            [what, "ran out of device memory", "1.50 GiB of the device's 140.0 GiB free", "0 finished tests in", "shorter --lengths"]
        {
            assert!(message.contains(part), "{part:?} is not in {message:?}");
        }
        assert!(message.ends_with("The device said: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"), "{message}");
        // Candle's error repeats its cause and carries a backtrace when RUST_BACKTRACE is set: only the
        // driver's line is said.
        let traced = anyhow::anyhow!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")\n   0: <unknown>\n   1: main")
            .context("tensor operation: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")\n   0: <unknown>")
            .context("test n0-L8192-d100: tensor operation");
        let message = format!("{:#}", out_of_memory_or(traced, what, None, &variants));
        assert!(!message.contains("<unknown>") && message.matches("CUDA_ERROR_OUT_OF_MEMORY").count() == 1, "{message}");
        // Without a memory query (wgpu, CPU) the rest is said all the same; other errors pass unchanged.
        let message = format!("{:#}", out_of_memory_or(anyhow::anyhow!("out of memory"), what, None, &variants));
        assert!(message.contains("ran out of device memory. Kept: 0 finished tests"), "{message}");
        let other = out_of_memory_or(anyhow::anyhow!("the weights are corrupt"), what, None, &variants);
        assert_eq!(other.to_string(), "the weights are corrupt");
    }
}
