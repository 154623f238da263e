//! `headscope hf-agreement`: HeadScope against Hugging Face transformers on the same weights. The
//! expected side is bench/hf_agreement.py, which saved a random-weight model and what transformers
//! computed on it (eager attention): greedy tokens, logits, and every query head's attention argmax
//! at every decode step. Here the saved model runs through HeadScope's loader and instrumented
//! transformer the way detection runs it (prefill prompt[:-1], then observed steps), fed
//! transformers' tokens (teacher forcing), so each step compares like with like even after a first
//! difference.

use anyhow::{bail, Context, Result};
use clap::Args;
use headscope_model::loader::{dtype_name, parse_dtype};
use headscope_model::{DType, LoadOptions, ModelDir, Probe};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Flags of `headscope hf-agreement`.
#[derive(Args, Debug)]
pub struct AgreementArgs {
    /// expected.json files written by bench/hf_agreement.py (each next to its model/ folder).
    #[arg(required = true)]
    pub expected: Vec<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype: `expected` (the one transformers ran in), auto, f32, f16, bf16.
    #[arg(long, default_value = "expected")]
    pub dtype: String,
    /// Largest allowed |logit difference| (default: 1e-3 x the largest |logit| in f32, 5 % of it in
    /// bf16/f16). With an f32 reference, half precision also passes when HeadScope's logits are at most
    /// twice as far from transformers-in-f32 as transformers' own half-precision logits are.
    #[arg(long)]
    pub logit_tol: Option<f64>,
    /// Smallest share of (step, layer, head) argmax positions that must be equal. In bf16/f16 with a
    /// recorded f32 reference (--noise-floor) it is also enough that HeadScope is as close to
    /// transformers-in-f32 as transformers-in-half-precision is (within one percentage point), and
    /// likewise for greedy tokens (within one step): rounding alone moves near-tied peaks and tokens.
    #[arg(long, default_value_t = 0.99)]
    pub min_argmax: f64,
    /// Write the comparison as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What bench/hf_agreement.py writes (the fields used here).
#[derive(Debug, Deserialize)]
struct Expected {
    format: String,
    case: String,
    model_dir: String,
    layers: usize,
    heads: usize,
    dtype: String,
    transformers: String,
    prompt_ids: Vec<u32>,
    steps: usize,
    tokens: Vec<u32>,
    argmax: Vec<Vec<u32>>,
    /// (step, head index, positions) where transformers' rounded weights share their maximum.
    #[serde(default)]
    argmax_ties: Vec<(usize, usize, Vec<u32>)>,
    logits: Option<Vec<Vec<f32>>>,
    top_logits: Vec<Vec<(u32, f32)>>,
    /// transformers against itself in f32 on the same weights (half-precision runs with --noise-floor).
    #[serde(default)]
    noise_floor: Option<NoiseFloor>,
}

/// transformers in half precision against the same weights in f32, teacher-forced on the same tokens.
#[derive(Debug, Clone, Deserialize)]
struct NoiseFloor {
    argmax_total: usize,
    argmax_equal_strict: usize,
    tokens_equal: usize,
    max_logit_difference: f64,
    f32_argmax: Vec<Vec<u32>>,
    f32_tokens: Vec<u32>,
    f32_logits: Option<Vec<Vec<f32>>>,
    f32_top_logits: Vec<Vec<(u32, f32)>>,
}

/// Agreement with the f32 reference: transformers' half precision run, and HeadScope's.
#[derive(Debug, Serialize)]
pub struct F32Reference {
    /// (step, layer, head) positions compared.
    pub argmax_total: usize,
    /// transformers (half precision) equal to transformers (f32).
    pub transformers_equal: usize,
    /// HeadScope (this run's dtype) equal to transformers (f32).
    pub headscope_equal: usize,
    /// Steps whose greedy token of transformers (half precision) is transformers' (f32).
    pub transformers_tokens_equal: usize,
    /// Steps whose greedy token of HeadScope is transformers' (f32).
    pub headscope_tokens_equal: usize,
    /// Largest |logit difference| of transformers (half precision) from transformers (f32).
    pub transformers_max_logit_difference: f64,
    /// Largest |logit difference| of HeadScope from transformers (f32).
    pub headscope_max_logit_difference: f64,
}

/// The comparison of one case.
#[derive(Debug, Serialize)]
pub struct CaseResult {
    /// Case name.
    pub case: String,
    /// The expected.json it read.
    pub expected: String,
    /// transformers version of the expected side.
    pub transformers: String,
    /// HeadScope's compute dtype.
    pub dtype: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Decode steps compared.
    pub steps: usize,
    /// Steps whose greedy token equals transformers'.
    pub tokens_equal: usize,
    /// First step whose greedy token differs, if any.
    pub first_token_difference: Option<usize>,
    /// (step, layer, head) argmax positions compared.
    pub argmax_total: usize,
    /// Of those, equal (or, where transformers' rounded weights tie at the maximum, among the tied).
    pub argmax_equal: usize,
    /// Of those, equal to transformers' first maximum exactly.
    pub argmax_equal_strict: usize,
    /// Largest |logit difference| over the steps (all logits, or transformers' top 8 when the file has
    /// only those).
    pub max_logit_difference: f64,
    /// Largest |logit| of transformers', the scale the tolerance refers to.
    pub logit_scale: f64,
    /// The tolerance applied.
    pub logit_tolerance: f64,
    /// Both half-precision runs against transformers in f32, when the file has that reference.
    pub f32_reference: Option<F32Reference>,
    /// Whether the case meets every criterion.
    pub pass: bool,
}

/// `headscope hf-agreement`.
pub fn hf_agreement(args: &AgreementArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.min_argmax) {
        bail!("--min-argmax must be between 0 and 1");
    }
    let device = crate::sweep::parse_device(&args.device)?;
    let mut results = Vec::new();
    for path in &args.expected {
        let r = compare(path, args, &device).with_context(|| format!("comparing {}", path.display()))?;
        println!(
            "{}: greedy tokens {}/{} equal, argmax {}/{} ({:.2} %; {} without ties), max |logit diff| {:.3e} (scale {:.2}, tolerance {:.2e}), {}: {}",
            r.case,
            r.tokens_equal,
            r.steps,
            r.argmax_equal,
            r.argmax_total,
            100.0 * r.argmax_equal as f64 / r.argmax_total.max(1) as f64,
            r.argmax_equal_strict,
            r.max_logit_difference,
            r.logit_scale,
            r.logit_tolerance,
            r.dtype,
            if r.pass { "agrees" } else { "DISAGREES" }
        );
        if let Some(f) = &r.f32_reference {
            let pct = |n: usize| 100.0 * n as f64 / f.argmax_total.max(1) as f64;
            println!(
                "{}: against transformers in f32: transformers {} argmax {:.2} %, tokens {}/{}, max |logit diff| {:.3e}; \
                 HeadScope {} argmax {:.2} %, tokens {}/{}, max |logit diff| {:.3e}",
                r.case,
                r.dtype,
                pct(f.transformers_equal),
                f.transformers_tokens_equal,
                r.steps,
                f.transformers_max_logit_difference,
                r.dtype,
                pct(f.headscope_equal),
                f.headscope_tokens_equal,
                r.steps,
                f.headscope_max_logit_difference
            );
        }
        results.push(r);
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?).with_context(|| format!("writing {}", p.display()))?;
    }
    let failed: Vec<&str> = results.iter().filter(|r| !r.pass).map(|r| r.case.as_str()).collect();
    if !failed.is_empty() {
        bail!("HeadScope and transformers disagree on: {}", failed.join(", "));
    }
    println!("{} case(s) agree", results.len());
    Ok(())
}

fn compare(path: &Path, args: &AgreementArgs, device: &headscope_model::Device) -> Result<CaseResult> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let e: Expected = serde_json::from_str(&text).context("not an expected.json of bench/hf_agreement.py")?;
    if e.format != "headscope-hf-agreement/1" {
        bail!("format `{}` is not headscope-hf-agreement/1", e.format);
    }
    let reference_ok = e.noise_floor.as_ref().is_none_or(|n| {
        n.f32_argmax.len() == e.steps
            && n.f32_tokens.len() == e.steps
            && n.f32_top_logits.len() == e.steps
            && n.f32_logits.as_ref().is_none_or(|l| l.len() == e.steps)
    });
    if e.prompt_ids.len() < 2 || e.tokens.len() != e.steps || e.argmax.len() != e.steps || e.top_logits.len() != e.steps || !reference_ok {
        bail!("the file's prompt, tokens, argmax and logits do not cover {} steps", e.steps);
    }
    let dtype = match args.dtype.as_str() {
        "expected" => match e.dtype.as_str() {
            "float32" => Some(DType::F32),
            "bfloat16" => Some(DType::BF16),
            "float16" => Some(DType::F16),
            other => bail!("dtype `{other}` of the expected side is not float32, bfloat16 or float16"),
        },
        other => parse_dtype(other)?,
    };
    let dir = path.parent().unwrap_or(Path::new(".")).join(&e.model_dir);
    let mut md = ModelDir::open(&dir)?;
    // transformers runs past max_position_embeddings (RoPE is computed for any position), and a 4K
    // prompt plus its decode steps passes Llama-2's 4096: follow it there rather than refuse.
    let positions = e.prompt_ids.len() + e.steps;
    if positions > md.spec.max_position_embeddings {
        eprintln!(
            "note: {positions} positions pass the model's trained context of {}, as in transformers' run",
            md.spec.max_position_embeddings
        );
        md.spec.max_position_embeddings = positions;
    }
    let shape = md.spec.head_shape();
    let heads = shape.count();
    if (shape.layers, shape.heads) != (e.layers, e.heads) || e.argmax.iter().any(|a| a.len() != heads) {
        bail!("the file's argmax grid is not the model's {} attention layers x {} heads", shape.layers, shape.heads);
    }
    let options = LoadOptions::on(device.clone(), dtype);
    let used = ModelDir::resolve_dtype(&options);
    let mut model = md.load_weights(&options)?;
    let (&last, context) = e.prompt_ids.split_last().expect("checked above");
    model.reserve(e.prompt_ids.len() + e.steps)?;
    model.prefill(context)?;
    let mut input = last;
    let (mut tokens_equal, mut first_diff, mut argmax_equal, mut argmax_strict) = (0, None, 0, 0);
    let (mut f32_equal, mut f32_tokens_equal, mut f32_diff) = (0, 0, 0f64);
    let mut ties: std::collections::HashMap<(usize, usize), &[u32]> = std::collections::HashMap::new();
    for (step, head, positions) in &e.argmax_ties {
        ties.insert((*step, *head), positions);
    }
    let (mut max_diff, mut scale) = (0f64, 0f64);
    for step in 0..e.steps {
        let out = model.step(input, &Probe::default())?;
        let logits = out.logits.to_vec1::<f32>()?;
        let ours = argmax(&logits);
        if ours == e.tokens[step] {
            tokens_equal += 1;
        } else if first_diff.is_none() {
            first_diff = Some(step);
        }
        if let Some(n) = &e.noise_floor {
            f32_equal += out.argmax_position.iter().zip(&n.f32_argmax[step]).filter(|(a, b)| a == b).count();
            f32_tokens_equal += usize::from(ours == n.f32_tokens[step]);
            let (d, _) = logit_difference(&logits, n.f32_logits.as_ref().map(|l| &l[step]), &n.f32_top_logits[step])?;
            f32_diff = f32_diff.max(d);
        }
        for (h, (ours, theirs)) in out.argmax_position.iter().zip(&e.argmax[step]).enumerate() {
            if ours == theirs {
                argmax_strict += 1;
                argmax_equal += 1;
            } else if ties.get(&(step, h)).is_some_and(|t| t.contains(ours)) {
                argmax_equal += 1;
            }
        }
        let (d, s) = logit_difference(&logits, e.logits.as_ref().map(|l| &l[step]), &e.top_logits[step])?;
        max_diff = max_diff.max(d);
        scale = scale.max(s);
        // Teacher forcing: the next input is transformers' token, whatever HeadScope chose.
        input = e.tokens[step];
    }
    let tolerance = args.logit_tol.unwrap_or(if used == DType::F32 { 1e-3 } else { 5e-2 } * scale.max(1.0));
    let argmax_total = e.steps * heads;
    let share = |n: usize, total: usize| n as f64 / total.max(1) as f64;
    let f32_reference = e.noise_floor.as_ref().map(|n| F32Reference {
        argmax_total: n.argmax_total,
        transformers_equal: n.argmax_equal_strict,
        headscope_equal: f32_equal,
        transformers_tokens_equal: n.tokens_equal,
        headscope_tokens_equal: f32_tokens_equal,
        transformers_max_logit_difference: n.max_logit_difference,
        headscope_max_logit_difference: f32_diff,
    });
    // Each criterion holds outright, or (half precision with an f32 reference) HeadScope is as close to
    // transformers-in-f32 as transformers-in-half-precision is: rounding alone flips near-tied tokens and
    // argmax peaks and moves logits, in either implementation.
    let r = f32_reference.as_ref();
    let tokens_ok = tokens_equal == e.steps || r.is_some_and(|r| r.headscope_tokens_equal + 1 >= r.transformers_tokens_equal);
    let argmax_ok = share(argmax_equal, argmax_total) >= args.min_argmax
        || r.is_some_and(|r| share(r.headscope_equal, r.argmax_total) >= share(r.transformers_equal, r.argmax_total) - 0.01);
    let logits_ok =
        max_diff <= tolerance || r.is_some_and(|r| r.headscope_max_logit_difference <= 2.0 * r.transformers_max_logit_difference);
    let pass = tokens_ok && argmax_ok && logits_ok;
    Ok(CaseResult {
        case: e.case,
        expected: path.display().to_string(),
        transformers: e.transformers,
        dtype: dtype_name(used).to_string(),
        prompt_tokens: e.prompt_ids.len(),
        steps: e.steps,
        tokens_equal,
        first_token_difference: first_diff,
        argmax_total,
        argmax_equal,
        argmax_equal_strict: argmax_strict,
        f32_reference,
        max_logit_difference: max_diff,
        logit_scale: scale,
        logit_tolerance: tolerance,
        pass,
    })
}

/// Largest |difference| between `ours` and the expected logits (all of them, else the expected top
/// ones), and the largest expected |logit|.
fn logit_difference(ours: &[f32], all: Option<&Vec<f32>>, top: &[(u32, f32)]) -> Result<(f64, f64)> {
    let pairs: Vec<(usize, f32)> = match all {
        Some(all) => all.iter().copied().enumerate().collect(),
        None => top.iter().map(|&(i, v)| (i as usize, v)).collect(),
    };
    let (mut diff, mut scale) = (0f64, 0f64);
    for (i, v) in pairs {
        let o = *ours.get(i).with_context(|| format!("logit {i} is outside the model's vocabulary"))?;
        diff = diff.max((o - v).abs() as f64);
        scale = scale.max(v.abs() as f64);
    }
    Ok((diff, scale))
}

/// Index of the largest value, the first one on ties (as torch.argmax).
fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best }) as u32
}
