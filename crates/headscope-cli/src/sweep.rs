//! Running a NIAH sweep: resolve inputs, check the output directory's provenance, skip finished tests,
//! run the rest (each written to tests.jsonl as it ends), then aggregate.

use crate::outputs;
use crate::SweepArgs;
use anyhow::{bail, Context, Result};
use headscope_core::files::{self, read_head_scores, short_hash, MaskInfo, ModelInfo, RunInfo, TestLog, TestRecord};
use headscope_core::metrics::rouge1_recall;
use headscope_core::niah::{read_needles_jsonl, san_francisco_needle, Needle, NiahBuilder};
use headscope_core::score::{retrieval_hits, DecodeStep};
use headscope_core::sweep::{depths, parse_lengths, plan, TestKey};
use headscope_core::{masking, HeadId, TextTokenizer};
use headscope_model::loader::{dtype_name, parse_dtype};
use headscope_model::{greedy_decode, Device, HeadMask, LoadOptions, MaskMode, MaskScope, ModelDir, Probe};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    options: LoadOptions,
    needles: Vec<Needle>,
    haystack: Vec<String>,
    keys: Vec<TestKey>,
    info: RunInfo,
}

/// The device named by `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match s.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .with_context(|| format!("--device `{s}`: expected cpu, cuda or cuda:N"))?,
                None => bail!("--device `{s}`: expected cpu, cuda or cuda:N"),
            };
            Device::new_cuda(ordinal).with_context(|| {
                format!("--device {s}: CUDA is not available (build with --features cuda and run on a machine with an NVIDIA GPU)")
            })
        }
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading haystack {}", path.display()))
}

/// Opens `--model`, or the bundled lab model when it is not given.
fn open_model(args: &SweepArgs) -> Result<ModelDir> {
    let path = match &args.model {
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
        let device = parse_device(&args.device)?;
        let options = LoadOptions { dtype: parse_dtype(&args.dtype)?, device };
        let needles = match &args.needles {
            Some(p) => read_needles_jsonl(p)?,
            None => vec![san_francisco_needle()],
        };
        let haystack = if args.haystack.is_empty() {
            vec![DEFAULT_HAYSTACK.to_string()]
        } else {
            args.haystack.iter().map(|p| read_text(p)).collect::<Result<_>>()?
        };
        if args.max_new_tokens == 0 {
            bail!("--max-new-tokens must be at least 1");
        }
        let lengths = parse_lengths(&args.lengths)?;
        let depths = depths(args.depths)?;
        let longest = lengths.iter().max().copied().unwrap_or(0) + args.max_new_tokens;
        let max = model_dir.spec.max_position_embeddings;
        if longest > max {
            bail!(
                "the longest test needs {longest} positions ({} prompt + {} new tokens) but the model's context is {max} tokens (max_position_embeddings in {})",
                longest - args.max_new_tokens,
                args.max_new_tokens,
                model_dir.dir.join("config.json").display()
            );
        }
        let format = model_dir.prompt_format(args.plain);
        let spec = &model_dir.spec;
        let info = RunInfo {
            headscope_version: headscope_core::VERSION.to_string(),
            command: command.to_string(),
            model: ModelInfo {
                dir: model_dir.dir.display().to_string(),
                hash: model_dir.hash.clone(),
                model_type: spec.model_type.clone(),
                layers: spec.layers,
                heads: spec.heads,
                kv_heads: spec.kv_heads,
                dtype: dtype_name(ModelDir::resolve_dtype(&options)).to_string(),
                device: args.device.clone(),
            },
            tokenizer_hash: model_dir.tokenizer_hash.clone(),
            prompt_format: format.name().to_string(),
            needles_hash: short_hash(serde_json::to_string(&needles)?.as_bytes()),
            haystack_hash: short_hash(haystack.join("\n\n").as_bytes()),
            max_new_tokens: args.max_new_tokens,
            mask,
            seed: None,
        };
        let keys = plan(needles.len(), &lengths, &depths);
        // Every needle must build at the shortest length: catch bad needles and haystacks before any
        // file is written or any weight is loaded.
        let mut builder = NiahBuilder::new(&model_dir.tokenizer, format, &haystack)?;
        let shortest = lengths.iter().min().copied().unwrap_or(0);
        for (i, n) in needles.iter().enumerate() {
            builder.build(n, shortest, 50.0).with_context(|| format!("needle {} ({:?})", i + 1, n.needle))?;
        }
        Ok(Sweep { model_dir, options, needles, haystack, keys, info })
    }

    /// Runs every test not yet in `log`; returns how many ran.
    fn run(&self, args: &SweepArgs, log: &mut TestLog, mask: Option<HeadMask>) -> Result<usize> {
        let todo: Vec<&TestKey> = self.keys.iter().filter(|k| !log.contains(&k.id())).collect();
        let total = self.keys.len();
        let already = total - todo.len();
        if todo.is_empty() {
            eprintln!("all {total} tests are already in {}: nothing to run", log_path(args).display());
            return Ok(0);
        }
        let md = &self.model_dir;
        let mut builder = NiahBuilder::new(&md.tokenizer, md.prompt_format(args.plain), &self.haystack)?;
        eprintln!(
            "loading {} ({} layers x {} heads, {} KV heads) on {}",
            md.dir.display(),
            md.spec.layers,
            md.spec.heads,
            md.spec.kv_heads,
            args.device
        );
        let mut model = md.load_weights(&self.options)?;
        model.set_prefill_chunk(args.prefill_chunk);
        let longest = todo.iter().map(|k| k.length).max().unwrap_or(0) + args.max_new_tokens;
        model.reserve(longest)?;
        model.set_mask(mask.clone())?;
        let masked_heads = mask.map(|m| m.heads).unwrap_or_default();
        let shape = md.spec.head_shape();

        let bar = progress_bar(total as u64, already as u64);
        for key in &todo {
            let needle = &self.needles[key.needle_index];
            let started = Instant::now();
            let test = builder.build(needle, key.length, key.depth_percent).with_context(|| format!("building test {}", key.id()))?;
            let trace = greedy_decode(&mut model, &test.prompt_ids, args.max_new_tokens, &md.eos_token_ids, &Probe::default(), |_| true)
                .with_context(|| format!("running test {}", key.id()))?;
            let steps: Vec<DecodeStep> = trace
                .tokens
                .iter()
                .zip(&trace.argmax_position)
                .map(|(&token, argmax)| DecodeStep { token, argmax: argmax.clone() })
                .collect();
            let hits = retrieval_hits(shape, &test.prompt_ids, test.answer_tokens.clone(), &steps)?;
            let answer = md.tokenizer.decode(&trace.tokens)?;
            let recall = rouge1_recall(&answer, &needle.real_needle);
            let record = TestRecord {
                id: key.id(),
                needle_index: key.needle_index,
                needle: needle.needle.clone(),
                length: key.length,
                prompt_tokens: test.prompt_ids.len(),
                depth_percent: key.depth_percent,
                placed_depth_percent: test.placed_depth_percent,
                prompt_hash: test.prompt_hash(),
                needle_tokens: [test.needle_tokens.start, test.needle_tokens.end],
                answer_tokens: [test.answer_tokens.start, test.answer_tokens.end],
                generated_ids: trace.tokens.clone(),
                answer: answer.clone(),
                recall,
                hits: hits.to_sparse(),
                masked_heads: masked_heads.clone(),
                prompt_ids: args.save_prompts.then(|| test.prompt_ids.clone()),
                head_argmax: None,
                seconds: started.elapsed().as_secs_f64(),
            };
            log.append(record)?;
            let line = format!("{} recall {recall:.2} {:.1}s: {:?}", key.id(), started.elapsed().as_secs_f64(), answer.trim());
            if bar.is_hidden() {
                eprintln!("[{}/{total}] {line}", bar.position() + 1);
            } else {
                bar.set_message(line);
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(todo.len())
    }
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

fn log_path(args: &SweepArgs) -> PathBuf {
    args.out.join("tests.jsonl")
}

/// Creates the output directory, checks and writes run.json, and opens tests.jsonl. A run.json with
/// no finished test behind it protects nothing and is replaced.
fn open_out(args: &SweepArgs, info: &RunInfo) -> Result<TestLog> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let log = TestLog::open(&log_path(args))?;
    let run_json = args.out.join("run.json");
    if log.records().is_empty() && run_json.exists() {
        std::fs::remove_file(&run_json).with_context(|| format!("replacing {}", run_json.display()))?;
    }
    info.check_and_write(&run_json)?;
    Ok(log)
}

/// `headscope detect`.
pub fn detect(args: &SweepArgs, gate: f64, threshold: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&gate) {
        bail!("--gate must be between 0 and 1");
    }
    let sweep = Sweep::prepare(args, "detect", open_model(args)?, None)?;
    let mut log = open_out(args, &sweep.info)?;
    let ran = sweep.run(args, &mut log, None)?;
    let shape = sweep.model_dir.spec.head_shape();
    let scores = files::head_scores_from_records(shape, log.records(), gate)?;
    let scores_path = args.out.join("head_scores.json");
    files::write_head_scores(&scores_path, &scores)?;
    let model_name = model_name(&sweep.model_dir.dir);
    outputs::save_head_heatmap(&args.out.join("heads.png"), &scores, &format!("retrieval scores: {model_name}"))?;
    outputs::save_niah(&args.out.join("niah.png"), log.records(), &format!("NIAH: {model_name}"))?;
    outputs::print_detect_summary(&args.out, log.records(), ran, &scores, gate, threshold)?;
    println!("wrote {}/{{head_scores.json, tests.jsonl, heads.png, niah.png, summary.json, run.json}}", args.out.display());
    Ok(())
}

/// `headscope niah`.
pub fn niah(args: &SweepArgs, choice: Option<MaskChoice>, mode: MaskMode, scope: MaskScope, pass: f64) -> Result<()> {
    let model_dir = open_model(args)?;
    let spec_shape = model_dir.spec.head_shape();
    let (plan_name, heads) = match &choice {
        None => (String::new(), vec![]),
        Some(MaskChoice::List(h)) => ("list".to_string(), h.clone()),
        Some(MaskChoice::Top { k, scores }) => {
            let s = read_scores_for(scores, spec_shape)?;
            (format!("top-{k} of {}", scores.display()), masking::top_k(&s, *k)?)
        }
        Some(MaskChoice::Random { k, seed, threshold, scores }) => {
            let s = read_scores_for(scores, spec_shape)?;
            (format!("random-{k} seed {seed} of {} (mean <= {threshold})", scores.display()), masking::random_k(&s, *k, *seed, *threshold)?)
        }
    };
    spec_shape.check(&heads)?;
    let mask = (!heads.is_empty()).then(|| HeadMask { heads: heads.clone(), mode, scope });
    let mask_info = mask.as_ref().map(|m| MaskInfo {
        plan: plan_name.clone(),
        heads: m.heads.clone(),
        mode: mode.to_string(),
        scope: scope.to_string(),
    });
    let mut sweep = Sweep::prepare(args, "niah", model_dir, mask_info)?;
    if let Some(MaskChoice::Random { seed, .. }) = &choice {
        sweep.info.seed = Some(*seed);
    }
    let mut log = open_out(args, &sweep.info)?;
    sweep.run(args, &mut log, mask)?;
    let model_name = model_name(&sweep.model_dir.dir);
    let title =
        if heads.is_empty() { format!("NIAH: {model_name}") } else { format!("NIAH: {model_name}, {} heads masked ({mode})", heads.len()) };
    outputs::save_niah(&args.out.join("niah.png"), log.records(), &title)?;
    outputs::print_niah_summary(&args.out, log.records(), pass, &heads, &plan_name)?;
    Ok(())
}

fn read_scores_for(path: &Path, shape: headscope_core::HeadShape) -> Result<headscope_core::HeadScores> {
    let s = read_head_scores(path)?;
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

fn model_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}
