//! More attention heads for a trained model, without changing what it computes: every KV group is
//! copied `factor` times, with its query heads, and the copies' columns of `o_proj` are zero, so the
//! widened model's logits equal the original's until training moves them (Net2Net-style growth, Chen et
//! al. 2016). The copies' q/k/v weights carry a little seeded noise so that they do not stay twins of the
//! heads they came from. The lab model uses it to try more heads on a trained chain (docs/lab-v5) rather
//! than training a wider one from scratch; the head width stays, so config.json names it (`head_dim`)
//! once `heads x head_dim` differs from the hidden size.

use anyhow::{bail, ensure, Context, Result};
use headscope_core::rng::SplitMix64;
use headscope_model::candle_core::{Device, Tensor, D};
use headscope_model::ModelSpec;
use std::collections::HashMap;
use std::path::Path;

/// Families whose attention is plain q/k/v/o projections (with optional q/k/v biases) and whose
/// config reads `head_dim`; others (q/k norms, fused qkv, sliding variants) are refused.
const WIDENABLE: [&str; 3] = ["llama", "mistral", "qwen2"];

/// The attention shape read from config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttentionShape {
    /// The attention shape of `spec` (which derives `head_dim` where config.json does not name it).
    fn of_spec(spec: &ModelSpec) -> Self {
        AttentionShape { layers: spec.layers, heads: spec.heads, kv_heads: spec.kv_heads, head_dim: spec.head_dim }
    }
}

/// Widens `src` (a model directory) into `dst`: `factor` times the query and KV heads, the same head
/// width and hidden size, the same outputs. `noise` is the copies' perturbation relative to the RMS of
/// the weights they copy (0 makes exact twins). Returns the shapes before and after.
pub fn widen_model_dir(src: &Path, dst: &Path, factor: usize, noise: f32, seed: u64) -> Result<(AttentionShape, AttentionShape)> {
    ensure!(factor >= 2, "a factor of {factor} adds no heads: give 2 or more");
    ensure!(noise.is_finite() && noise >= 0.0, "noise {noise} must be a finite number >= 0");
    grow_model_dir(src, dst, |_, before, weights| {
        let after = AttentionShape { heads: before.heads * factor, kv_heads: before.kv_heads * factor, ..before };
        Ok((after, widen_weights(weights, before, factor, noise, seed)?))
    })
}

/// Reads the model in `src`, lets `grow` make the new attention shape and tensors from its spec, shape
/// and weights, and writes the grown model to `dst`: config.json with the new shape, the tokenizer
/// files as they were, the tensors. Returns the shapes before and after.
fn grow_model_dir(
    src: &Path,
    dst: &Path,
    grow: impl FnOnce(&ModelSpec, AttentionShape, &HashMap<String, Tensor>) -> Result<(AttentionShape, HashMap<String, Tensor>)>,
) -> Result<(AttentionShape, AttentionShape)> {
    let config_path = src.join("config.json");
    let text = std::fs::read_to_string(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let mut config: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config_path.display()))?;
    let spec = ModelSpec::from_config_json(&text, &config_path)?;
    if !WIDENABLE.contains(&spec.model_type.as_str()) {
        bail!("model_type {:?}: widening knows {} only", spec.model_type, WIDENABLE.join(", "));
    }
    let before = AttentionShape::of_spec(&spec);
    let files = headscope_model::loader::weight_files(src)?;
    let mut weights = HashMap::new();
    for f in &files {
        weights
            .extend(headscope_model::candle_core::safetensors::load(f, &Device::Cpu).with_context(|| format!("reading {}", f.display()))?);
    }
    let (after, grown) = grow(&spec, before, &weights)?;
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    config["num_attention_heads"] = after.heads.into();
    config["num_key_value_heads"] = after.kv_heads.into();
    config["head_dim"] = after.head_dim.into();
    std::fs::write(dst.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"] {
        if src.join(name).exists() {
            std::fs::copy(src.join(name), dst.join(name)).with_context(|| format!("copying {name}"))?;
        }
    }
    headscope_model::candle_core::safetensors::save(&grown, dst.join("model.safetensors"))?;
    Ok((before, after))
}

/// The widened tensors (see [`widen_model_dir`]); every tensor but the attention projections as it was.
pub fn widen_weights(
    weights: &HashMap<String, Tensor>,
    shape: AttentionShape,
    factor: usize,
    noise: f32,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let AttentionShape { layers, heads, kv_heads, head_dim } = shape;
    let group = heads / kv_heads;
    let mut rng = SplitMix64::new(seed);
    let mut out = weights.clone();
    for layer in 0..layers {
        let name = |p: &str| format!("model.layers.{layer}.self_attn.{p}");
        let get = |n: &str| weights.get(n).with_context(|| format!("the weights lack {n}"));
        // Rows of q (and its bias) come in KV groups of `group` heads, rows of k and v one head a group.
        for (proj, rows_per_group) in [("q_proj", group * head_dim), ("k_proj", head_dim), ("v_proj", head_dim)] {
            for part in ["weight", "bias"] {
                let n = name(&format!("{proj}.{part}"));
                let Some(t) = weights.get(&n) else {
                    ensure!(part == "bias", "the weights lack {n}");
                    continue;
                };
                ensure!(t.dim(0)? == kv_heads * rows_per_group, "{n} has {} rows, not {kv_heads} x {rows_per_group}", t.dim(0)?);
                let mut blocks = Vec::with_capacity(kv_heads * factor);
                for g in 0..kv_heads {
                    let block = t.narrow(0, g * rows_per_group, rows_per_group)?;
                    blocks.push(block.clone());
                    for _ in 1..factor {
                        // Biases are copied as they are: noise on the weights already tells the twins apart.
                        blocks.push(if part == "weight" && noise > 0.0 { perturbed(&block, noise, &mut rng)? } else { block.clone() });
                    }
                }
                out.insert(n, Tensor::cat(&blocks, 0)?);
            }
        }
        // Columns of o: the original group's heads, then zeros for its copies (they add nothing yet).
        let n = name("o_proj.weight");
        let o = get(&n)?;
        let cols = group * head_dim;
        ensure!(o.dim(D::Minus1)? == kv_heads * cols, "{n} has {} columns, not {kv_heads} x {cols}", o.dim(D::Minus1)?);
        let mut blocks = Vec::with_capacity(kv_heads * factor);
        for g in 0..kv_heads {
            let block = o.narrow(1, g * cols, cols)?;
            blocks.push(block.clone());
            for _ in 1..factor {
                blocks.push(block.zeros_like()?);
            }
        }
        out.insert(n, Tensor::cat(&blocks, 1)?);
    }
    Ok(out)
}

/// Widens every head of `src` (a model directory) into `dst`: the same heads, each `factor` times as
/// wide, the same outputs. The new channels sit between the old ones in RoPE's frequency order, so that
/// the old channels keep their frequencies: with rotate-half RoPE over width d, channel pair i turns at
/// base^(-2i/d), which is pair `factor * i` of width `factor * d`. The old query rows are multiplied by
/// sqrt(factor) to undo the smaller 1/sqrt(width) scale; the new query rows are zero (so scores do not
/// change) while the new key and value rows get seeded noise of `noise` times the RMS of the rows they
/// sit beside (so that training has a gradient into the new query rows and o_proj columns); the new
/// o_proj columns are zero. Returns the shapes before and after.
pub fn deepen_model_dir(src: &Path, dst: &Path, factor: usize, noise: f32, seed: u64) -> Result<(AttentionShape, AttentionShape)> {
    ensure!(factor >= 2, "a factor of {factor} keeps every head as wide as it is: give 2 or more");
    ensure!(
        noise.is_finite() && noise > 0.0,
        "noise {noise} must be a finite number > 0 (zero noise leaves the new channels without a gradient)"
    );
    grow_model_dir(src, dst, |spec, before, weights| {
        ensure!(
            spec.rotary_dim == spec.head_dim,
            "the heads rotate {} of {} channels: deepening keeps RoPE's frequencies only where all turn",
            spec.rotary_dim,
            spec.head_dim
        );
        ensure!(
            matches!(spec.rope_scaling, headscope_model::spec::RopeScaling::None),
            "RoPE scaling {:?}: deepening maps plain RoPE's frequencies only",
            spec.rope_scaling
        );
        let plain_scale = 1.0 / (spec.head_dim as f64).sqrt();
        ensure!(
            (spec.attention_scale - plain_scale).abs() < 1e-9 * plain_scale,
            "attention scale {} is not 1/sqrt(head_dim)",
            spec.attention_scale
        );
        ensure!(spec.head_dim % 2 == 0, "head width {} is odd: RoPE pairs channels", spec.head_dim);
        let after = AttentionShape { head_dim: before.head_dim * factor, ..before };
        Ok((after, deepen_weights(weights, before, factor, noise, seed)?))
    })
}

/// Where channel `c` of a rotate-half head `d` wide lands in the head `factor * d` wide: the first half
/// holds the pairs' first channels, in frequency order, so pair i becomes pair `factor * i`.
fn deepened_channel(c: usize, d: usize, factor: usize) -> usize {
    let half = d / 2;
    if c < half {
        factor * c
    } else {
        factor * half + factor * (c - half)
    }
}

/// The deepened tensors (see [`deepen_model_dir`]); every tensor but the attention projections as it was.
pub fn deepen_weights(
    weights: &HashMap<String, Tensor>,
    shape: AttentionShape,
    factor: usize,
    noise: f32,
    seed: u64,
) -> Result<HashMap<String, Tensor>> {
    let AttentionShape { layers, heads, kv_heads, head_dim } = shape;
    let wide = head_dim * factor;
    let mut rng = SplitMix64::new(seed);
    let mut out = weights.clone();
    let f32 = headscope_model::DType::F32;
    for layer in 0..layers {
        let name = |p: &str| format!("model.layers.{layer}.self_attn.{p}");
        for (proj, n_heads) in [("q_proj", heads), ("k_proj", kv_heads), ("v_proj", kv_heads)] {
            // Queries carry the sqrt(factor) that keeps the scores; the new channels are zero for
            // queries, noise for keys and values (biases: zero).
            let scale = if proj == "q_proj" { (factor as f32).sqrt() } else { 1.0 };
            for part in ["weight", "bias"] {
                let n = name(&format!("{proj}.{part}"));
                let Some(t) = weights.get(&n) else {
                    ensure!(part == "bias", "the weights lack {n}");
                    continue;
                };
                ensure!(t.dim(0)? == n_heads * head_dim, "{n} has {} rows, not {n_heads} x {head_dim}", t.dim(0)?);
                let cols = t.elem_count() / t.dim(0)?;
                let old: Vec<f32> = t.to_dtype(f32)?.flatten_all()?.to_vec1()?;
                let mut new = vec![0f32; n_heads * wide * cols];
                let noisy = part == "weight" && proj != "q_proj";
                for h in 0..n_heads {
                    let rows = &old[h * head_dim * cols..(h + 1) * head_dim * cols];
                    let rms = (rows.iter().map(|x| x * x).sum::<f32>() / rows.len() as f32).sqrt();
                    let head = &mut new[h * wide * cols..(h + 1) * wide * cols];
                    if noisy {
                        for x in head.iter_mut() {
                            *x = noise * rms * rng.normal();
                        }
                    }
                    for c in 0..head_dim {
                        let to = deepened_channel(c, head_dim, factor);
                        for (dst, src) in head[to * cols..(to + 1) * cols].iter_mut().zip(&rows[c * cols..(c + 1) * cols]) {
                            *dst = src * scale;
                        }
                    }
                }
                let dims: Vec<usize> = std::iter::once(n_heads * wide).chain(t.dims()[1..].iter().copied()).collect();
                out.insert(n, Tensor::from_vec(new, dims, &Device::Cpu)?.to_dtype(t.dtype())?);
            }
        }
        // o_proj's columns: each head's old value channels where they moved (v_proj's rows moved as
        // queries' and keys' did), zeros for the new ones.
        let n = name("o_proj.weight");
        let o = weights.get(&n).with_context(|| format!("the weights lack {n}"))?;
        let (rows, cols) = o.dims2()?;
        ensure!(cols == heads * head_dim, "{n} has {cols} columns, not {heads} x {head_dim}");
        let old: Vec<f32> = o.to_dtype(f32)?.flatten_all()?.to_vec1()?;
        let mut new = vec![0f32; rows * heads * wide];
        for r in 0..rows {
            for h in 0..heads {
                for c in 0..head_dim {
                    new[r * heads * wide + h * wide + deepened_channel(c, head_dim, factor)] = old[r * cols + h * head_dim + c];
                }
            }
        }
        out.insert(n, Tensor::from_vec(new, (rows, heads * wide), &Device::Cpu)?.to_dtype(o.dtype())?);
    }
    Ok(out)
}

/// `t` plus seeded Gaussian noise of `relative` times its RMS, in `t`'s dtype.
fn perturbed(t: &Tensor, relative: f32, rng: &mut SplitMix64) -> Result<Tensor> {
    let f = t.to_dtype(headscope_model::DType::F32)?;
    let rms = f.sqr()?.mean_all()?.to_scalar::<f32>()?.sqrt();
    let n = f.elem_count();
    let noise: Vec<f32> = (0..n).map(|_| relative * rms * rng.normal()).collect();
    let noise = Tensor::from_vec(noise, f.shape(), f.device())?;
    Ok((f + noise)?.to_dtype(t.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use headscope_model::testkit::{TinyArch, TinyModel};
    use headscope_model::{LoadOptions, LoadedModel};

    fn logits(dir: &Path, tokens: &[u32]) -> Vec<f32> {
        let m = LoadedModel::load(dir, &LoadOptions::default()).unwrap();
        let x = Tensor::new(tokens, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        m.model.forward_sequence(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The largest difference between two models' logits over `tokens`.
    fn logit_gap(a: &Path, b: &Path, tokens: &[u32]) -> f32 {
        let (a, b) = (logits(a, tokens), logits(b, tokens));
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
    }

    #[test]
    fn widened_model_has_more_heads_and_the_same_logits() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        TinyModel::new(TinyArch::Llama).write(&src).unwrap();
        let (before, after) = widen_model_dir(&src, &dst, 2, 0.05, 7).unwrap();
        assert_eq!((before.heads, before.kv_heads, before.head_dim), (4, 2, 16));
        assert_eq!((after.heads, after.kv_heads, after.head_dim), (8, 4, 16));
        let spec = headscope_model::loader::ModelDir::open(&dst).unwrap().spec;
        assert_eq!((spec.heads, spec.kv_heads, spec.head_dim, spec.hidden_size), (8, 4, 16, 64));

        let tokens: Vec<u32> = (0..40).map(|i| 3 + (i * 37 % 300) as u32).collect();
        let worst = logit_gap(&src, &dst, &tokens);
        assert!(worst < 1e-4, "the widened model's logits differ by {worst}");

        // The copies are not twins: their queries differ from the heads they copy, and o ignores them.
        let w = headscope_model::candle_core::safetensors::load(dst.join("model.safetensors"), &Device::Cpu).unwrap();
        let q = &w["model.layers.0.self_attn.q_proj.weight"];
        assert_eq!(q.dims(), &[8 * 16, 64]);
        let (orig, copy) = (q.narrow(0, 0, 32).unwrap(), q.narrow(0, 32, 32).unwrap());
        let diff = (orig - copy).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff > 0.0, "the copied queries equal the originals");
        let o = &w["model.layers.1.self_attn.o_proj.weight"];
        assert_eq!(o.dims(), &[64, 8 * 16]);
        let copy_cols = o.narrow(1, 32, 32).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(copy_cols, 0.0);
        let kept = o.narrow(1, 64, 32).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(kept > 0.0, "the second group's own heads keep their o columns");
    }

    #[test]
    fn deepened_model_has_wider_heads_and_the_same_logits() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        TinyModel::new(TinyArch::Llama).write(&src).unwrap();
        let (before, after) = deepen_model_dir(&src, &dst, 2, 0.05, 7).unwrap();
        assert_eq!((before.heads, before.kv_heads, before.head_dim), (4, 2, 16));
        assert_eq!((after.heads, after.kv_heads, after.head_dim), (4, 2, 32));
        let spec = headscope_model::loader::ModelDir::open(&dst).unwrap().spec;
        assert_eq!((spec.heads, spec.kv_heads, spec.head_dim, spec.hidden_size), (4, 2, 32, 64));

        // Far enough that the slow frequencies turn: a wrong channel map would show at once.
        let tokens: Vec<u32> = (0..90).map(|i| 3 + (i * 37 % 300) as u32).collect();
        let worst = logit_gap(&src, &dst, &tokens);
        assert!(worst < 1e-4, "the deepened model's logits differ by {worst}");

        let w = headscope_model::candle_core::safetensors::load(dst.join("model.safetensors"), &Device::Cpu).unwrap();
        let row_max = |t: &Tensor, r: usize| t.narrow(0, r, 1).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        // Channel 1 of the wide head is a new pair's: zero in queries, noise in keys and values.
        let (q, k, v) = (
            &w["model.layers.0.self_attn.q_proj.weight"],
            &w["model.layers.0.self_attn.k_proj.weight"],
            &w["model.layers.0.self_attn.v_proj.weight"],
        );
        assert_eq!(q.dims(), &[4 * 32, 64]);
        assert_eq!(row_max(q, 1), 0.0);
        assert!(row_max(k, 1) > 0.0 && row_max(v, 1) > 0.0, "the new key and value channels carry no noise");
        assert!(row_max(q, 2) > 0.0, "the old second pair is missing from the queries");
        let o = &w["model.layers.1.self_attn.o_proj.weight"];
        assert_eq!(o.dims(), &[64, 4 * 32]);
        let col = |c: usize| o.narrow(1, c, 1).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(col(1), 0.0);
        assert!(col(2) > 0.0);

        // Biases move with their rows (Qwen2's q/k/v biases), three times as wide.
        let (qsrc, qdst) = (tmp.path().join("qsrc"), tmp.path().join("qdst"));
        TinyModel::new(TinyArch::Qwen2).write(&qsrc).unwrap();
        deepen_model_dir(&qsrc, &qdst, 3, 0.1, 9).unwrap();
        let worst = logit_gap(&qsrc, &qdst, &tokens);
        // sqrt(3) is not exact in f32 as sqrt(2) nearly is: a little more rounding than above.
        assert!(worst < 5e-4, "the deepened Qwen2's logits differ by {worst}");
    }

    #[test]
    fn deepening_refuses_what_it_cannot_keep() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        TinyModel::new(TinyArch::Llama).write(&src).unwrap();
        let e = deepen_model_dir(&src, &tmp.path().join("a"), 1, 0.05, 0).unwrap_err();
        assert!(e.to_string().contains("as wide as it is"), "{e}");
        let e = deepen_model_dir(&src, &tmp.path().join("b"), 2, 0.0, 0).unwrap_err();
        assert!(e.to_string().contains("without a gradient"), "{e}");
        let phi = tmp.path().join("phi");
        TinyModel::new(TinyArch::Phi3).write(&phi).unwrap();
        let e = deepen_model_dir(&phi, &tmp.path().join("c"), 2, 0.05, 0).unwrap_err();
        assert!(e.to_string().contains("phi3"), "{e}");
    }

    #[test]
    fn widening_refuses_what_it_cannot_do() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        TinyModel::new(TinyArch::Llama).write(&src).unwrap();
        let e = widen_model_dir(&src, &tmp.path().join("a"), 1, 0.0, 0).unwrap_err();
        assert!(e.to_string().contains("adds no heads"), "{e}");
        let gemma = tmp.path().join("gemma");
        TinyModel::new(TinyArch::Gemma2).write(&gemma).unwrap();
        let e = widen_model_dir(&gemma, &tmp.path().join("b"), 2, 0.0, 0).unwrap_err();
        assert!(e.to_string().contains("gemma2"), "{e}");
        let e = widen_model_dir(&tmp.path().join("none"), &tmp.path().join("c"), 2, 0.0, 0).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }
}
