//! `headscope`: the command-line shell over headscope-core (tests, scores, files) and headscope-model
//! (the instrumented transformer). It parses flags and wires the libraries; the work lives in them.

mod agreement;
mod bench;
mod compare;
mod convert;
mod cot;
mod kv;
mod lm;
mod loss_plot;
mod merge;
mod outputs;
mod qa;
mod report;
mod sweep;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use headscope_model::{MaskMode, MaskScope};
use std::path::PathBuf;

/// Retrieval heads, measured: needle-in-a-haystack tests, per-head retrieval scores, head masking.
#[derive(Parser, Debug)]
#[command(name = "headscope", version, about, long_about = None)]
struct Cli {
    /// More log output (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Find retrieval heads: run a NIAH sweep, score every head (eq. 1), write head_scores.json,
    /// tests.jsonl, heads.png and niah.png.
    Detect(DetectArgs),
    /// Run a NIAH sweep, optionally with heads masked, and print the pass rate.
    Niah(NiahArgs),
    /// Write a tiny random model in the Hugging Face layout (for trying HeadScope out and for tests).
    TinyModel(TinyArgs),
    /// Train a model from a recipe (the lab model: public/models/lab/recipe.toml); resumes from --out.
    Train(TrainArgs),
    /// Write a recipe's training batches to stdout, for an outside trainer (the PyTorch one in
    /// crates/headscope-train/torch): the same batches `train` uses, step for step.
    TrainData(TrainDataArgs),
    /// Continue a prompt greedily (is the model's free-running text English?).
    Generate(GenerateArgs),
    /// Perplexity of a model on a text file (held-out text for a trained model).
    Perplexity(PerplexityArgs),
    /// Correlate the retrieval scores of several models (Pearson and Spearman of per-head means).
    Compare(compare::CompareArgs),
    /// Convert head scores between the official JSON and DuoAttention's full_attention_heads.tsv.
    ConvertScores(convert::ConvertArgs),
    /// The chain-of-thought experiment (fig. 10): tasks answered directly and step by step, with no
    /// heads, the top-K heads of --scores and K random heads masked; exact-match accuracy.
    Cot(cot::CotArgs),
    /// What the retrieval heads buy in KV memory: NIAH pass rate with only their KV heads keeping the
    /// whole cache (the others a sink and a window), against as many random KV heads and against every
    /// head windowed, over several windows; kv.png, kv.json, kv.csv.
    Kv(kv::KvArgs),
    /// Draw training-loss curves from `headscope train` logs (stages one after another).
    PlotLoss(PlotLossArgs),
    /// The paper's figures for one model (figs. 3-9, 13): runs or resumes detection, masking and QA
    /// sub-runs in --out, draws PNG/SVG with their JSON/CSV data, and writes a self-contained report.html.
    Report(report::ReportArgs),
    /// Time the detection loop per NIAH test at several context lengths (prefill, decode step, peak
    /// memory) and, with --max-context, find the longest context that fits on the device.
    Bench(bench::BenchArgs),
    /// Join the folders of a sweep split with --shard I/N (detect or niah) into one run folder: the
    /// files one unsharded run writes (tests.jsonl, head scores, summary.json, figures, run.json).
    Merge(merge::MergeArgs),
    /// Compare HeadScope with Hugging Face transformers on the same weights (expected.json files of
    /// bench/hf_agreement.py): greedy tokens, logits, per-head argmax positions.
    HfAgreement(agreement::AgreementArgs),
}

#[derive(Args, Debug)]
struct PlotLossArgs {
    /// loss.csv files, in training order.
    #[arg(long = "log", required = true)]
    logs: Vec<PathBuf>,
    /// Output image (.png or .svg).
    #[arg(long)]
    out: PathBuf,
    /// Moving-mean window in steps.
    #[arg(long, default_value_t = 50)]
    smooth: usize,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Model directory (default: the bundled lab model).
    #[arg(long, default_value = sweep::LAB_MODEL_DIR)]
    model: PathBuf,
    /// Text to continue.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 60)]
    max_new_tokens: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args, Debug)]
struct PerplexityArgs {
    /// Model directory (default: the bundled lab model).
    #[arg(long, default_value = sweep::LAB_MODEL_DIR)]
    model: PathBuf,
    /// Text file.
    #[arg(long)]
    text: PathBuf,
    /// Tokens per window.
    #[arg(long, default_value_t = 512)]
    window: usize,
    /// Most windows to evaluate.
    #[arg(long, default_value_t = 64)]
    max_windows: usize,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Recipe file.
    #[arg(long, default_value = "public/models/lab/recipe.toml")]
    recipe: PathBuf,
    /// Folder with the corpus files the recipe names (make it with scripts/prepare-corpus.sh).
    #[arg(long)]
    corpus: PathBuf,
    /// Output: the model directory, checkpoint/ and loss.csv. Rerunning resumes.
    #[arg(long)]
    out: PathBuf,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Stop with a checkpoint after this many minutes (rerun to resume).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Stop at this step (checkpoint and export), keeping the recipe's schedule; rerun to continue.
    #[arg(long)]
    stop_at: Option<usize>,
    /// Threads that build batches (default: all cores but one).
    #[arg(long)]
    workers: Option<usize>,
    /// Start from this model directory's weights and tokenizer (a further training stage).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Time each step's forward pass, backward pass and update (to a device synchronisation) and
    /// print their means with the loss.
    #[arg(long)]
    profile: bool,
}

#[derive(Args, Debug)]
struct TrainDataArgs {
    /// Recipe file.
    #[arg(long)]
    recipe: PathBuf,
    /// Folder with the corpus files the recipe names.
    #[arg(long)]
    corpus: PathBuf,
    /// Where the model files go (config.json, tokenizer.json, ...), as for `train --out`.
    #[arg(long)]
    out: PathBuf,
    /// A further stage's starting model directory (its tokenizer is kept).
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// First step to write.
    #[arg(long, default_value_t = 0)]
    from_step: usize,
    /// Step to stop before (default: the recipe's last).
    #[arg(long)]
    to_step: Option<usize>,
    /// Threads that build batches (default: all cores but one).
    #[arg(long)]
    workers: Option<usize>,
}

/// Which model to run and how: shared by the sweep commands and `report`.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json). Default: the bundled
    /// lab model in public/models/lab.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compute dtype: auto (f32 on CPU, bf16 on CUDA), f32, f16, bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Device: cpu, or cuda / cuda:N (needs a build with --features cuda), or wgpu (`detect`, `niah`, `report`:
    /// the page's WGSL forward on Vulkan / Metal / DX12, f32). A list (`cuda:0,1`, `cuda:0,cuda:1`, `cpu,cpu`)
    /// splits the decoder layers into contiguous blocks over those devices, balanced by weight bytes.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Use the plain prompt even if the model has a chat template (else the template is used).
    #[arg(long)]
    pub plain: bool,
    /// Prompt tokens per prefill chunk [default: 512, or 4096 where the fused CUDA attention kernel runs].
    #[arg(long)]
    pub prefill_chunk: Option<usize>,
}

/// The head-level KV cache flags (`detect`, `niah`, `bench`).
#[derive(Args, Debug, Clone)]
pub struct KvCacheArgs {
    /// Head-level KV cache (candle backend): `full` (every KV head keeps every position), `window:W`
    /// (every KV head keeps --kv-sink positions and the last W), `heads:FILE:K` (the KV heads of the
    /// top-K heads of score file FILE keep everything, the others --kv-sink and --kv-window),
    /// `random:K:SEED` (K KV heads drawn with SEED keep everything, the others likewise). A KV head
    /// stays whole when any of its query heads is chosen; windowed heads' memory is not allocated.
    #[arg(long, default_value = "full", value_name = "POLICY")]
    pub kv_cache: String,
    /// Leading positions a windowed KV head keeps (attention sinks).
    #[arg(long, default_value_t = 4)]
    pub kv_sink: usize,
    /// Recent positions a windowed KV head keeps, its own included (heads: and random: policies).
    #[arg(long, default_value_t = 256)]
    pub kv_window: usize,
}

/// Flags shared by every command that runs a sweep.
#[derive(Args, Debug, Clone)]
pub struct SweepArgs {
    #[command(flatten)]
    pub run: ModelArgs,
    /// Output directory; rerunning with the same one resumes (finished tests are kept, not redone).
    #[arg(long)]
    pub out: PathBuf,
    /// Needles JSONL (`needle`, `question`, `real_needle` per line). Default: the San Francisco needle.
    #[arg(long)]
    pub needles: Option<PathBuf>,
    /// Haystack text files, joined and repeated to length. Default: public/haystacks/village.txt (built in).
    #[arg(long, num_args = 1..)]
    pub haystack: Vec<PathBuf>,
    /// Begin the haystack at the first line at or after this percent of its text, what was before
    /// following at the end: the same needles from another stretch of the text (a short prompt reads
    /// only the start, so one sentence there can decide a whole sweep).
    #[arg(long, value_name = "PERCENT")]
    pub haystack_start: Option<f64>,
    /// Prompt lengths in tokens: MIN:MAX:N (N evenly spaced) or one length.
    #[arg(long, default_value = "1000:4000:4")]
    pub lengths: String,
    /// Number of needle depths, evenly spaced over 0-100 %.
    #[arg(long, default_value_t = 5)]
    pub depths: usize,
    /// Most tokens to generate per test.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Also store every prompt's token ids in tests.jsonl.
    #[arg(long)]
    pub save_prompts: bool,
    /// Heads (layer-head, comma-separated, e.g. 7-0,7-1) whose argmax position at every decode step
    /// goes into each test's record (`head_argmax` in tests.jsonl): where each one looked while the
    /// answer was written, as the page shows a clicked head. With --save-prompts the positions can be
    /// read back as text.
    #[arg(long, value_name = "HEADS")]
    pub watch_heads: Option<String>,
    #[command(flatten)]
    pub kv: KvCacheArgs,
    /// How the next token is chosen (candle backend): `greedy`, or `decore:FILE:K[:CAP]`: DeCoRe, the
    /// model's logits contrasted with those of a copy that masks the top-K heads of score file FILE,
    /// weighted by the entropy of the model's next-token distribution (capped at CAP).
    #[arg(long, default_value = "greedy", value_name = "HOW")]
    pub decode: String,
    /// Run only part I of N of the test plan (1 <= I <= N: a SLURM array's task id, or a 0-based
    /// index plus 1), into its own --out; `headscope merge` then joins the parts into the run one
    /// machine would have written. The parts are chosen from the plan alone, whole (needle, length)
    /// groups each, so every machine must be given the same flags but --shard and --out. `detect` and
    /// `niah` only: `report`, `bench` and `kv` refuse it (they need the whole run, or time it).
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<headscope_core::sweep::Shard>,
}

#[derive(Args, Debug)]
struct DetectArgs {
    #[command(flatten)]
    sweep: SweepArgs,
    /// Score only tests whose answer has at least this ROUGE-1 recall (0 scores every test).
    #[arg(long, default_value_t = 0.5)]
    gate: f64,
    /// A head whose mean score exceeds this is a retrieval head.
    #[arg(long, default_value_t = headscope_core::RETRIEVAL_THRESHOLD)]
    threshold: f64,
    /// Head scores to write, comma-separated: `eq1` (the paper's eq. 1, distinct positions:
    /// head_scores.json, always written), `official` (eq. 1 as the official code counts it, repeated
    /// copies again, so a score can pass 1: head_scores_official.json), `soft` (HeadKV's attention mass
    /// on the answer span's top positions: head_scores_soft.json; it reads every head's attention row
    /// at the first answer-length decode steps), `qr` (QRHead's query-focused attention on the needle,
    /// calibrated by a null question: head_scores_qr.json; two teacher-forced passes over the question),
    /// `induction` and `echo` (RazorAttention's data-free scores, one pass over repeated random tokens:
    /// head_scores_induction.json, head_scores_echo.json). The NIAH kinds come from the same decodes.
    #[arg(long, value_name = "KINDS", default_value = "eq1")]
    score: String,
}

#[derive(Args, Debug)]
struct NiahArgs {
    #[command(flatten)]
    sweep: SweepArgs,
    /// Mask the K heads with the highest mean score in --scores.
    #[arg(long, value_name = "K", requires = "scores", conflicts_with_all = ["mask_random", "mask_heads"])]
    mask_top: Option<usize>,
    /// Mask K random non-retrieval heads of --scores (mean <= --threshold), drawn with --seed.
    #[arg(long, value_name = "K", requires = "scores", conflicts_with = "mask_heads")]
    mask_random: Option<usize>,
    /// Mask these heads: layer-head list, e.g. 16-19,11-15.
    #[arg(long, value_name = "HEADS")]
    mask_heads: Option<String>,
    /// Head-score file for --mask-top / --mask-random: the official format, or DuoAttention's
    /// full_attention_heads.tsv (its KV heads' gates spread over their query heads).
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Seed of --mask-random.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Retrieval-head threshold for --mask-random.
    #[arg(long, default_value_t = headscope_core::RETRIEVAL_THRESHOLD)]
    threshold: f64,
    /// uniform: the head's query is zeroed, it attends uniformly (the paper); zero: its output is zeroed.
    #[arg(long, default_value = "uniform", value_parser = parse_mode)]
    mask_mode: MaskMode,
    /// decode: mask at decode steps only, the prompt's cache intact (the paper); all: everywhere.
    #[arg(long, default_value = "decode", value_parser = parse_scope)]
    mask_scope: MaskScope,
    /// Answers with at least this ROUGE-1 recall pass.
    #[arg(long, default_value_t = 0.5)]
    pass: f64,
}

pub(crate) fn parse_shard(s: &str) -> Result<headscope_core::sweep::Shard, String> {
    s.parse().map_err(|e: headscope_core::CoreError| e.to_string())
}

fn parse_mode(s: &str) -> Result<MaskMode, String> {
    s.parse()
}

fn parse_scope(s: &str) -> Result<MaskScope, String> {
    s.parse()
}

#[derive(Args, Debug)]
struct TinyArgs {
    /// Directory to write.
    #[arg(long)]
    out: PathBuf,
    /// Family: llama, mistral, qwen2, mixtral, qwen3, phi3, gemma2, gemma3 (gemma3_text), jamba.
    #[arg(long, default_value = "llama")]
    arch: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Add a chat template to tokenizer_config.json.
    #[arg(long)]
    chat: bool,
    /// Decoder layers (the family's default, 2 or Jamba's 4, when left out).
    #[arg(long)]
    layers: Option<usize>,
}

fn main() {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Detect(a) => sweep::detect(&a.sweep, a.gate, a.threshold, &a.score),
        Command::Niah(a) => niah(a),
        Command::TinyModel(a) => tiny_model(a),
        Command::Train(a) => train(a),
        Command::TrainData(a) => headscope_train::write_batches(
            &headscope_train::BatchOptions {
                recipe: a.recipe,
                corpus: a.corpus,
                out: a.out,
                init_from: a.init_from,
                from_step: a.from_step,
                to_step: a.to_step,
                workers: a.workers.unwrap_or_else(default_workers),
            },
            &mut std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock()),
        ),
        Command::Generate(a) => {
            sweep::load_options(&a.device, None).and_then(|options| lm::generate(&a.model, &a.prompt, a.max_new_tokens, &options))
        }
        Command::Perplexity(a) => sweep::load_options(&a.device, None)
            .and_then(|options| lm::perplexity(&a.model, &a.text, a.window, a.max_windows, &options).map(|_| ())),
        Command::Compare(a) => compare::compare(&a),
        Command::ConvertScores(a) => convert::convert(&a),
        Command::Cot(a) => cot::cot(&a),
        Command::Kv(a) => kv::kv(&a),
        Command::PlotLoss(a) => loss_plot::plot_loss(&a.logs, &a.out, a.smooth),
        Command::Report(a) => report::report(&a),
        Command::Bench(a) => bench::bench(&a),
        Command::HfAgreement(a) => agreement::hf_agreement(&a),
        Command::Merge(a) => merge::merge(&a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn niah(a: NiahArgs) -> Result<()> {
    let plan = match (a.mask_top, a.mask_random, &a.mask_heads) {
        (Some(k), _, _) => Some(sweep::MaskChoice::Top { k, scores: a.scores.clone().context("--mask-top needs --scores")? }),
        (_, Some(k), _) => Some(sweep::MaskChoice::Random {
            k,
            seed: a.seed,
            threshold: a.threshold,
            scores: a.scores.clone().context("--mask-random needs --scores")?,
        }),
        (_, _, Some(list)) => Some(sweep::MaskChoice::List(headscope_core::head::parse_head_list(list)?)),
        _ => None,
    };
    if !(0.0..=1.0).contains(&a.pass) {
        bail!("--pass must be between 0 and 1");
    }
    sweep::niah(&a.sweep, plan, a.mask_mode, a.mask_scope, a.pass)
}

/// Batch-building threads: all cores but one.
fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

fn train(a: TrainArgs) -> Result<()> {
    let workers = a.workers.unwrap_or_else(default_workers);
    headscope_train::train(headscope_train::TrainOptions {
        recipe: a.recipe,
        corpus: a.corpus,
        out: a.out,
        device: sweep::parse_device(&a.device)?,
        max_minutes: a.max_minutes,
        stop_at: a.stop_at,
        init_from: a.init_from,
        workers,
        profile: a.profile,
    })
}

fn tiny_model(a: TinyArgs) -> Result<()> {
    use headscope_model::testkit::{TinyArch, TinyModel};
    let Some(arch) = TinyArch::from_name(&a.arch) else {
        let names: Vec<&str> = TinyArch::NAMES.iter().map(|(n, _)| *n).collect();
        bail!("--arch `{}`: expected one of {}", a.arch, names.join(", "));
    };
    let base = TinyModel::new(arch);
    let layers = a.layers.unwrap_or(base.layers);
    if layers == 0 || (arch == TinyArch::Jamba && layers != base.layers) {
        bail!("--layers {layers}: expected at least 1 (Jamba's layout has exactly {})", base.layers);
    }
    TinyModel { seed: a.seed, chat_template: a.chat, layers, ..base }
        .write(&a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!("wrote a tiny random {} model to {}", a.arch, a.out.display());
    Ok(())
}
