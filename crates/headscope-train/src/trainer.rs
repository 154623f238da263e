//! Training the instrumented transformer with candle autograd: the same [`Transformer`] that inference
//! uses (the model crate's), built over trainable variables, with AdamW (the model crate's fused
//! update kernel) whose state is saved beside the weights so a run resumes exactly where it stopped.
//! Knows nothing about what the token batches contain.

use headscope_core::rng::SplitMix64;
use headscope_model::candle_core::{self, DType, Device, Tensor, Var, D};
use headscope_model::candle_nn::{VarBuilder, VarMap};
use headscope_model::train_ops::{adamw_update, AdamWStep};
use headscope_model::{ModelError, ModelSpec, Result, Transformer};
use std::collections::HashMap;
use std::path::Path;

/// AdamW settings (decoupled weight decay, Loshchilov & Hutter), with global gradient-norm clipping.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Weight decay for matrices (norm weights are not decayed).
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub grad_clip: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_clip: 1.0 }
    }
}

struct Param {
    name: String,
    var: Var,
    /// AdamW's first and second moments, interleaved (`[2 n]`), as the fused update reads them.
    moments: Tensor,
    decay: bool,
}

impl Param {
    /// One of the moments (0: first, 1: second) in the variable's shape.
    fn moment(&self, which: usize) -> Result<Tensor> {
        let n = self.var.elem_count();
        Ok(self.moments.reshape((n, 2))?.narrow(1, which, 1)?.contiguous()?.reshape(self.var.dims())?)
    }

    /// Sets both moments from tensors in the variable's shape.
    fn set_moments(&mut self, m: &Tensor, v: &Tensor) -> Result<()> {
        self.moments = Tensor::stack(&[m.flatten_all()?, v.flatten_all()?], 1)?.flatten_all()?.to_dtype(DType::F32)?;
        Ok(())
    }
}

/// Outcome of one optimisation step.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Weighted mean cross-entropy of the batch (nats per token).
    pub loss: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// With [`Trainer::set_profiling`]: seconds in the forward pass, the backward pass and the update,
    /// each measured to a device synchronisation.
    pub phase_seconds: Option<[f64; 3]>,
}

/// A trainable model and its optimiser.
pub struct Trainer {
    spec: ModelSpec,
    model: Transformer,
    params: Vec<Param>,
    config: AdamWConfig,
    step: usize,
    device: Device,
    profiling: bool,
}

/// Initial weights drawn from a fixed-sequence generator on the host, so a seed gives the same model on
/// every device: normal(0, 0.02) for embeddings and projections, output projections scaled down by
/// sqrt(2 * layers) (GPT-2), norm weights 1.
fn initial_value(name: &str, shape: &[usize], layers: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if name.ends_with("norm.weight") {
        return vec![1.0; n];
    }
    if name.ends_with(".bias") {
        return vec![0.0; n];
    }
    let mut std = 0.02f32;
    if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
        std /= (2.0 * layers as f32).sqrt();
    }
    (0..n).map(|_| std * rng.normal()).collect()
}

impl Trainer {
    /// A freshly initialised model of `spec` (f32 weights) on `device`.
    pub fn new(spec: &ModelSpec, device: &Device, seed: u64, config: AdamWConfig) -> Result<Self> {
        // The map only hands out the variables; the trainer keeps them (they share storage).
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = Transformer::new(spec, vb)?;
        let mut named: Vec<(String, Var)> =
            varmap.data().lock().map_err(|_| ModelError::Invalid("variable map poisoned".into()))?.clone().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rng = SplitMix64::new(seed);
        for (name, var) in &named {
            let shape = var.dims().to_vec();
            let values = initial_value(name, &shape, spec.layers, &mut rng);
            var.set(&Tensor::from_vec(values, shape.as_slice(), device)?)?;
        }
        let params = named
            .into_iter()
            .map(|(name, var)| {
                let moments = Tensor::zeros(2 * var.elem_count(), DType::F32, device)?;
                let decay = var.rank() >= 2 && !name.contains("embed_tokens");
                Ok(Param { name, var, moments, decay })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Trainer { spec: spec.clone(), model, params, config, step: 0, device: device.clone(), profiling: false })
    }

    /// The model being trained (for evaluation between steps).
    pub fn model(&self) -> &Transformer {
        &self.model
    }

    /// Times the phases of each step (see [`StepStats::phase_seconds`]); the synchronisations this
    /// takes slow a step down a little.
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
    }

    /// Optimisation steps taken.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Weighted mean next-token cross-entropy of `inputs` (`[b, t]` u32) against `targets` (`[b, t]` u32)
    /// with per-token `weights` (`[b, t]` f32; 0 ignores a token).
    pub fn loss(&self, inputs: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
        let logits = self.model.forward_sequence_differentiable(inputs)?;
        let vocab = logits.dim(D::Minus1)?;
        let nll = headscope_model::train_ops::cross_entropy(&logits.reshape(((), vocab))?, &targets.flatten_all()?)?;
        let total = weights.sum_all()?;
        Ok((nll.mul(&weights.flatten_all()?)?.sum_all()? / total)?)
    }

    /// One AdamW step at learning rate `lr` on a batch; returns the loss before the step.
    pub fn train_step(&mut self, inputs: &Tensor, targets: &Tensor, weights: &Tensor, lr: f64) -> Result<StepStats> {
        let mut clock = self.profiling.then(|| (std::time::Instant::now(), [0f64; 3]));
        let mut lap = |phase: usize, device: &Device| -> Result<()> {
            if let Some((start, phases)) = clock.as_mut() {
                device.synchronize()?;
                phases[phase] = start.elapsed().as_secs_f64();
                *start = std::time::Instant::now();
            }
            Ok(())
        };
        let loss = self.loss(inputs, targets, weights)?;
        lap(0, &self.device)?;
        let grads = loss.backward()?;
        lap(1, &self.device)?;
        let mut squares = Vec::with_capacity(self.params.len());
        for p in &self.params {
            if let Some(g) = grads.get(&p.var) {
                squares.push(g.sqr()?.sum_all()?);
            }
        }
        let grad_norm = Tensor::stack(&squares, 0)?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
        let c = self.config;
        let scale = if c.grad_clip > 0.0 && grad_norm as f64 > c.grad_clip { c.grad_clip / grad_norm as f64 } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let step = AdamWStep {
            lr: lr as f32,
            beta1: c.beta1 as f32,
            beta2: c.beta2 as f32,
            eps: c.eps as f32,
            bias_correction: [(1.0 - c.beta1.powi(t)) as f32, (1.0 - c.beta2.powi(t)) as f32],
            grad_scale: scale as f32,
            keep: 1.0,
        };
        for p in &self.params {
            let Some(g) = grads.get(&p.var) else { continue };
            let keep = if p.decay { (1.0 - lr * c.weight_decay) as f32 } else { 1.0 };
            adamw_update(p.var.as_tensor(), &p.moments, g, &AdamWStep { keep, ..step })?;
        }
        lap(2, &self.device)?;
        Ok(StepStats { loss: loss.to_scalar::<f32>()?, grad_norm, phase_seconds: clock.map(|(_, phases)| phases) })
    }

    /// Saves weights (`weights.safetensors`, f32), optimiser moments (`optimizer.safetensors`) and the step
    /// (`trainer.json`) into `dir`, each written to a temporary name first so a crash never leaves half a
    /// checkpoint.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| ModelError::Io { path: dir.to_owned(), error: e };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut weights = HashMap::new();
        let mut moments = HashMap::new();
        for p in &self.params {
            weights.insert(p.name.clone(), p.var.as_tensor().clone());
            moments.insert(format!("m.{}", p.name), p.moment(0)?);
            moments.insert(format!("v.{}", p.name), p.moment(1)?);
        }
        candle_core::safetensors::save(&weights, dir.join("weights.safetensors.tmp"))?;
        candle_core::safetensors::save(&moments, dir.join("optimizer.safetensors.tmp"))?;
        let meta = serde_json::json!({"step": self.step, "adamw": self.config, "parameters": self.parameter_count()});
        std::fs::write(dir.join("trainer.json.tmp"), meta.to_string()).map_err(io)?;
        for f in ["weights.safetensors", "optimizer.safetensors", "trainer.json"] {
            std::fs::rename(dir.join(format!("{f}.tmp")), dir.join(f)).map_err(io)?;
        }
        Ok(())
    }

    /// Restores a checkpoint written by [`Trainer::save`] into this (same-shaped) trainer.
    pub fn restore(&mut self, dir: &Path) -> Result<()> {
        let weights = candle_core::safetensors::load(dir.join("weights.safetensors"), &self.device)?;
        let moments = candle_core::safetensors::load(dir.join("optimizer.safetensors"), &self.device)?;
        let meta_path = dir.join("trainer.json");
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&meta_path).map_err(|e| ModelError::Io { path: meta_path.clone(), error: e })?)
                .map_err(|e| ModelError::config(&meta_path, e.to_string()))?;
        for p in &mut self.params {
            let missing = |what: &str| ModelError::Weights(format!("checkpoint {} lacks {what}", dir.display()));
            p.var.set(weights.get(&p.name).ok_or_else(|| missing(&p.name))?)?;
            let m = moments.get(&format!("m.{}", p.name)).ok_or_else(|| missing("first moments"))?;
            let v = moments.get(&format!("v.{}", p.name)).ok_or_else(|| missing("second moments"))?;
            if m.dims() != p.var.dims() || v.dims() != p.var.dims() {
                return Err(ModelError::Weights(format!("checkpoint {}: the moments of {} have the wrong shape", dir.display(), p.name)));
            }
            p.set_moments(m, v)?;
        }
        self.step = meta.get("step").and_then(|s| s.as_u64()).ok_or_else(|| ModelError::config(&meta_path, "no `step`"))? as usize;
        Ok(())
    }

    /// Starts from the weights of a Hugging Face model directory's safetensors (any dtype; cast to f32),
    /// keeping this trainer's fresh optimiser state and step 0: the start of a further training stage.
    pub fn init_from(&mut self, weight_files: &[std::path::PathBuf]) -> Result<()> {
        let mut tensors = HashMap::new();
        for f in weight_files {
            tensors.extend(candle_core::safetensors::load(f, &self.device)?);
        }
        for p in &self.params {
            let t = tensors.get(&p.name).ok_or_else(|| ModelError::Weights(format!("the initial weights lack {}", p.name)))?;
            if t.dims() != p.var.dims() {
                return Err(ModelError::Weights(format!(
                    "{}: shape {:?} in the initial weights, {:?} in the recipe",
                    p.name,
                    t.dims(),
                    p.var.dims()
                )));
            }
            p.var.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// Writes the weights as a Hugging Face `model.safetensors` in `dtype` (e.g. f16 for shipping).
    pub fn export(&self, path: &Path, dtype: DType) -> Result<()> {
        let mut out = HashMap::new();
        for p in &self.params {
            out.insert(p.name.clone(), p.var.as_tensor().to_dtype(dtype)?.to_device(&Device::Cpu)?);
        }
        candle_core::safetensors::save(&out, path)?;
        Ok(())
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }
}
