//! Loading a Hugging Face model directory: `config.json`, `model.safetensors` or a sharded
//! `model.safetensors.index.json`, `tokenizer.json` (+ `tokenizer_config.json`, `generation_config.json`).
//! Weights are memory-mapped and converted tensor by tensor, so no second copy of the checkpoint is made
//! in host memory. Pickle checkpoints (`.bin`, `.pt`) are refused: loading them runs arbitrary code.

use crate::error::{ModelError, Result};
use crate::spec::ModelSpec;
use crate::tokenizer::HfTokenizer;
use crate::transformer::Transformer;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use headscope_core::prompt::PromptFormat;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Free and total memory of `device` in bytes, as the driver reports them: CUDA devices only (None on
/// the CPU, in a build without CUDA, or when the query fails). Said in out-of-memory errors, so that
/// the user sees how far the run was from fitting.
pub fn device_memory(device: &Device) -> Option<(u64, u64)> {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        return cuda.cuda_stream().context().mem_get_info().ok().map(|(free, total)| (free as u64, total as u64));
    }
    let _ = device;
    None
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Compute dtype; `None` picks f32 on CPU and bf16 on CUDA.
    pub dtype: Option<DType>,
    /// Where the weights go (with `later_devices`, the first of the devices the layers are split over).
    pub device: Device,
    /// Devices after `device` that hold later blocks of the decoder layers, a pipeline: the layers are
    /// split by weight bytes ([`crate::split::plan_layer_split`]). Empty: everything on `device`.
    pub later_devices: Vec<Device>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { dtype: None, device: Device::Cpu, later_devices: Vec::new() }
    }
}

impl LoadOptions {
    /// Options that load onto one device.
    pub fn on(device: Device, dtype: Option<DType>) -> Self {
        LoadOptions { dtype, device, later_devices: Vec::new() }
    }
}

/// A loaded model directory: the transformer, its tokenizer and the facts provenance needs.
pub struct LoadedModel {
    /// The directory it came from.
    pub dir: PathBuf,
    /// The architecture.
    pub spec: ModelSpec,
    /// The instrumented transformer.
    pub model: Transformer,
    /// The tokenizer.
    pub tokenizer: HfTokenizer,
    /// Tokens that end generation (generation_config.json, config.json, tokenizer_config.json).
    pub eos_token_ids: Vec<u32>,
    /// Content hash of the directory ([`model_dir_hash`]).
    pub hash: String,
    /// Hash of tokenizer.json.
    pub tokenizer_hash: String,
}

/// The safetensors files of a model directory: the shards named by `model.safetensors.index.json`, or
/// every `*.safetensors` file.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::Io { path: index.clone(), error: e })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::config(&index, format!("not JSON: {e}")))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| ModelError::config(&index, "no `weight_map` object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for shard in map.values() {
            let name = shard.as_str().ok_or_else(|| ModelError::config(&index, "a weight_map entry is not a file name"))?;
            let p = dir.join(name);
            if !files.contains(&p) {
                if !p.exists() {
                    return Err(ModelError::config(&index, format!("shard {name} is missing from the directory")));
                }
                files.push(p);
            }
        }
        files.sort();
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::Io { path: dir.to_owned(), error: e })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        let pickles = ["pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "consolidated.00.pth"];
        let hint = if pickles.iter().any(|p| dir.join(p).exists()) {
            "this checkpoint is in PyTorch pickle format (.bin/.pt), which HeadScope refuses because loading it can run arbitrary code; convert it with transformers' save_pretrained(..., safe_serialization=True)"
        } else {
            "expected model.safetensors or model.safetensors.index.json"
        };
        return Err(ModelError::Missing { dir: dir.to_owned(), what: "safetensors weights".into(), hint: hint.into() });
    }
    Ok(files)
}

/// A content hash of a model directory: config.json, tokenizer.json, and per weight file its name, size,
/// first and last MiB (the safetensors header and a sample of values; hashing every byte of a 100 GB
/// checkpoint would take minutes).
pub fn model_dir_hash(dir: &Path, weights: &[PathBuf]) -> Result<String> {
    const SAMPLE: u64 = 1 << 20;
    let mut h = Sha256::new();
    for name in ["config.json", "tokenizer.json"] {
        let p = dir.join(name);
        h.update(std::fs::read(&p).map_err(|e| ModelError::Io { path: p.clone(), error: e })?);
    }
    for w in weights {
        let io = |e| ModelError::Io { path: w.clone(), error: e };
        let mut f = std::fs::File::open(w).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        h.update(w.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        h.update(size.to_le_bytes());
        let mut buf = Vec::new();
        (&mut f).take(SAMPLE).read_to_end(&mut buf).map_err(io)?;
        if size > SAMPLE {
            f.seek(SeekFrom::Start(size.saturating_sub(SAMPLE).max(SAMPLE))).map_err(io)?;
            f.take(SAMPLE).read_to_end(&mut buf).map_err(io)?;
        }
        h.update(&buf);
    }
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// The dtype named by `auto`, `f32`, `f16`, `bf16`.
pub fn parse_dtype(s: &str) -> Result<Option<DType>> {
    match s {
        "auto" => Ok(None),
        "f32" => Ok(Some(DType::F32)),
        "f16" => Ok(Some(DType::F16)),
        "bf16" => Ok(Some(DType::BF16)),
        other => Err(ModelError::Invalid(format!("dtype `{other}`: expected auto, f32, f16 or bf16"))),
    }
}

/// The name of a dtype as [`parse_dtype`] reads it.
pub fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "other",
    }
}

/// A model directory read without its weights: architecture, tokenizer, file list and hash. Cheap,
/// so a run can check what it would do (or that nothing is left to do) before loading gigabytes.
pub struct ModelDir {
    /// The directory.
    pub dir: PathBuf,
    /// The architecture.
    pub spec: ModelSpec,
    /// The tokenizer.
    pub tokenizer: HfTokenizer,
    /// Tokens that end generation (generation_config.json, config.json, tokenizer_config.json).
    pub eos_token_ids: Vec<u32>,
    /// The safetensors files.
    pub weight_files: Vec<PathBuf>,
    /// Content hash of the directory ([`model_dir_hash`]).
    pub hash: String,
    /// Hash of tokenizer.json.
    pub tokenizer_hash: String,
}

impl ModelDir {
    /// Reads config, tokenizer and weight file list of `dir`, checking they fit together.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(ModelError::Missing {
                dir: dir.to_owned(),
                what: "model directory".into(),
                hint: "give a Hugging Face model directory".into(),
            });
        }
        let config = dir.join("config.json");
        if !config.exists() {
            return Err(ModelError::Missing {
                dir: dir.to_owned(),
                what: "config.json".into(),
                hint: "is this a Hugging Face model directory?".into(),
            });
        }
        let spec = ModelSpec::from_config_file(&config)?;
        let tokenizer = HfTokenizer::from_dir(dir)?;
        if tokenizer.vocab_size() > spec.vocab_size {
            return Err(ModelError::config(
                &config,
                format!("the tokenizer has {} tokens but the model's vocab_size is {}", tokenizer.vocab_size(), spec.vocab_size),
            ));
        }
        let weight_files = weight_files(dir)?;
        let mut eos = read_generation_eos(dir)?;
        if eos.is_empty() {
            eos = spec.eos_token_ids.clone();
        }
        if eos.is_empty() {
            eos.extend(tokenizer.eos_token_id());
        }
        let hash = model_dir_hash(dir, &weight_files)?;
        let tokenizer_hash = {
            let p = dir.join("tokenizer.json");
            headscope_core::files::short_hash(&std::fs::read(&p).map_err(|e| ModelError::Io { path: p, error: e })?)
        };
        Ok(ModelDir { dir: dir.to_owned(), spec, tokenizer, eos_token_ids: eos, weight_files, hash, tokenizer_hash })
    }

    /// The dtype `options` resolve to: as given, else f32 on CPU and bf16 on CUDA.
    pub fn resolve_dtype(options: &LoadOptions) -> DType {
        options.dtype.unwrap_or(if options.device.is_cpu() { DType::F32 } else { DType::BF16 })
    }

    /// Loads the weights into the instrumented transformer.
    pub fn load_weights(&self, options: &LoadOptions) -> Result<Transformer> {
        let dtype = Self::resolve_dtype(options);
        // SAFETY: the files are memory-mapped read-only and candle validates headers and offsets; a file
        // changed underneath would give wrong weights, not unsafety in code that checks every length.
        let weights_error = |e: candle_core::Error| ModelError::Weights(format!("{}: {e}", self.dir.display()));
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&self.weight_files, dtype, &options.device) }.map_err(weights_error)?;
        let built = if options.later_devices.is_empty() {
            Transformer::new(&self.spec, vb)
        } else {
            let devices: Vec<&Device> = std::iter::once(&options.device).chain(&options.later_devices).collect();
            let blocks = self.layer_split(&devices)?;
            let mut vbs = vec![vb];
            for device in &devices[1..] {
                // SAFETY: as above; each device's builder maps the same files.
                vbs.push(unsafe { VarBuilder::from_mmaped_safetensors(&self.weight_files, dtype, device) }.map_err(weights_error)?);
            }
            tracing::info!("decoder layers split over {} devices: {blocks:?}", devices.len());
            Transformer::new_split(&self.spec, &vbs, &blocks)
        };
        built.map_err(|e| match e {
            ModelError::Candle(c) => ModelError::Weights(format!("{}: {c}", self.dir.display())),
            other => other,
        })
    }

    /// The prompt format: the chat template if the tokenizer has one and `plain` is not forced.
    pub fn prompt_format(&self, plain: bool) -> PromptFormat {
        prompt_format(&self.tokenizer, plain)
    }

    /// The blocks of decoder layers each of `devices` holds: balanced by the checkpoint's bytes per
    /// layer (read from the safetensors headers), the embeddings counted on the first device and the
    /// rest (final norm, LM head) on the last, in proportion to free memory where every device reports
    /// it (CUDA), else equal shares.
    pub fn layer_split(&self, devices: &[&Device]) -> Result<Vec<std::ops::Range<usize>>> {
        // SAFETY: read-only maps of the headers and sizes; no tensor data is read.
        let files = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&self.weight_files) }
            .map_err(|e| ModelError::Weights(format!("{}: {e}", self.dir.display())))?;
        let mut layer_bytes = vec![0u64; self.spec.layers];
        let (mut embed_bytes, mut other_bytes) = (0u64, 0u64);
        for (name, view) in files.tensors() {
            let bytes = view.data().len() as u64;
            let layer = name.split(".layers.").nth(1).and_then(|rest| rest.split('.').next()).and_then(|i| i.parse::<usize>().ok());
            match layer {
                Some(i) if i < layer_bytes.len() => layer_bytes[i] += bytes,
                _ if name.contains("embed_tokens") => embed_bytes += bytes,
                _ => other_bytes += bytes,
            }
        }
        if self.spec.tie_word_embeddings && !files.tensors().iter().any(|(n, _)| n.ends_with("lm_head.weight")) {
            // The last device holds a copy of the tied embeddings as its LM head.
            other_bytes += embed_bytes;
        }
        let free: Option<Vec<f64>> = devices.iter().map(|d| device_memory(d).map(|(free, _)| free as f64)).collect();
        let shares = free.filter(|f| f.iter().all(|b| *b > 0.0)).unwrap_or_else(|| vec![1.0; devices.len()]);
        crate::split::plan_layer_split(&layer_bytes, embed_bytes, other_bytes, &shares)
    }
}

impl LoadedModel {
    /// Loads the model directory `dir`, weights included.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Self> {
        let md = ModelDir::open(dir)?;
        let model = md.load_weights(options)?;
        Ok(LoadedModel {
            dir: md.dir,
            spec: md.spec,
            model,
            tokenizer: md.tokenizer,
            eos_token_ids: md.eos_token_ids,
            hash: md.hash,
            tokenizer_hash: md.tokenizer_hash,
        })
    }

    /// The prompt format: the chat template if the tokenizer has one and `plain` is not forced.
    pub fn prompt_format(&self, plain: bool) -> PromptFormat {
        prompt_format(&self.tokenizer, plain)
    }
}

/// A model directory's files as bytes, for places without a filesystem (the browser): what [`ModelDir`]
/// reads from disk, handed over by whoever fetched or picked the files.
#[derive(Debug, Clone, Default)]
pub struct ModelFiles {
    /// A name for messages and provenance (the folder name or URL).
    pub name: String,
    /// `config.json`.
    pub config_json: Vec<u8>,
    /// `tokenizer.json`.
    pub tokenizer_json: Vec<u8>,
    /// `tokenizer_config.json`, if present.
    pub tokenizer_config_json: Option<Vec<u8>>,
    /// `generation_config.json`, if present.
    pub generation_config_json: Option<Vec<u8>>,
    /// The safetensors files by file name.
    pub safetensors: Vec<(String, Vec<u8>)>,
}

impl ModelFiles {
    /// Sorts a flat list of `(file name, bytes)` (a picked or dropped folder) into a model's files;
    /// other files are ignored, paths keep only their last component. Missing required files and
    /// pickle checkpoints are named errors, as with [`ModelDir::open`].
    pub fn from_named(name: &str, files: Vec<(String, Vec<u8>)>) -> Result<Self> {
        let dir = PathBuf::from(name);
        let mut out = ModelFiles { name: name.to_owned(), ..Default::default() };
        let (mut config, mut tokenizer, mut pickle) = (None, None, false);
        for (path, bytes) in files {
            let file = path.rsplit(['/', '\\']).next().unwrap_or(&path).to_owned();
            match file.as_str() {
                "config.json" => config = Some(bytes),
                "tokenizer.json" => tokenizer = Some(bytes),
                "tokenizer_config.json" => out.tokenizer_config_json = Some(bytes),
                "generation_config.json" => out.generation_config_json = Some(bytes),
                f if f.ends_with(".safetensors") => out.safetensors.push((file, bytes)),
                f if f.ends_with(".bin") || f.ends_with(".pt") || f.ends_with(".pth") => pickle = true,
                _ => {}
            }
        }
        out.config_json = config.ok_or_else(|| ModelError::Missing {
            dir: dir.clone(),
            what: "config.json".into(),
            hint: "is this a Hugging Face model directory?".into(),
        })?;
        out.tokenizer_json = tokenizer.ok_or_else(|| ModelError::Missing {
            dir: dir.clone(),
            what: "tokenizer.json".into(),
            hint: "HeadScope needs the fast-tokenizer file; convert a sentencepiece model with transformers' save_pretrained".into(),
        })?;
        if out.safetensors.is_empty() {
            let hint = if pickle {
                "this checkpoint is in PyTorch pickle format (.bin/.pt), which HeadScope refuses because loading it can run arbitrary code; convert it with transformers' save_pretrained(..., safe_serialization=True)"
            } else {
                "expected model.safetensors or model.safetensors.index.json with its shards"
            };
            return Err(ModelError::Missing { dir, what: "safetensors weights".into(), hint: hint.into() });
        }
        out.safetensors.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The same content hash [`model_dir_hash`] gives the directory these files came from.
    pub fn hash(&self) -> String {
        const SAMPLE: usize = 1 << 20;
        let mut h = Sha256::new();
        h.update(&self.config_json);
        h.update(&self.tokenizer_json);
        for (name, bytes) in &self.safetensors {
            h.update(name.as_bytes());
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(&bytes[..bytes.len().min(SAMPLE)]);
            if bytes.len() > SAMPLE {
                h.update(&bytes[(bytes.len() - SAMPLE).max(SAMPLE)..]);
            }
        }
        h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// What a model's small files say: architecture, tokenizer and stop tokens (the weights not read).
pub struct ModelMeta {
    /// The architecture.
    pub spec: ModelSpec,
    /// The tokenizer.
    pub tokenizer: HfTokenizer,
    /// Tokens that end generation (generation_config.json, config.json, tokenizer_config.json).
    pub eos_token_ids: Vec<u32>,
}

impl ModelFiles {
    /// Reads config, tokenizer and stop tokens, checking they fit together (as [`ModelDir::open`] does).
    pub fn meta(&self) -> Result<ModelMeta> {
        let dir = PathBuf::from(&self.name);
        let config = dir.join("config.json");
        let text = std::str::from_utf8(&self.config_json).map_err(|_| ModelError::config(&config, "not UTF-8 text"))?;
        let spec = ModelSpec::from_config_json(text, &config)?;
        let tokenizer = HfTokenizer::from_bytes(&self.tokenizer_json, self.tokenizer_config_json.as_deref()).map_err(|e| match e {
            ModelError::Tokenizer(m) => ModelError::config(dir.join("tokenizer.json"), m),
            other => other,
        })?;
        if tokenizer.vocab_size() > spec.vocab_size {
            return Err(ModelError::config(
                &config,
                format!("the tokenizer has {} tokens but the model's vocab_size is {}", tokenizer.vocab_size(), spec.vocab_size),
            ));
        }
        let mut eos = match &self.generation_config_json {
            Some(b) => {
                let p = dir.join("generation_config.json");
                let v: serde_json::Value = serde_json::from_slice(b).map_err(|e| ModelError::config(&p, format!("not JSON: {e}")))?;
                crate::spec::token_ids(&v, "eos_token_id")
            }
            None => vec![],
        };
        if eos.is_empty() {
            eos = spec.eos_token_ids.clone();
        }
        if eos.is_empty() {
            eos.extend(tokenizer.eos_token_id());
        }
        Ok(ModelMeta { spec, tokenizer, eos_token_ids: eos })
    }
}

impl LoadedModel {
    /// Loads a model from its files' bytes (see [`ModelFiles`]); checks as [`ModelDir::open`] does.
    pub fn from_files(files: &ModelFiles, options: &LoadOptions) -> Result<Self> {
        let ModelMeta { spec, tokenizer, eos_token_ids: eos } = files.meta()?;
        let dir = PathBuf::from(&files.name);
        let dtype = ModelDir::resolve_dtype(options);
        let weights_err = |e: candle_core::Error| ModelError::Weights(format!("{}: {e}", files.name));
        // One file is read in place; shards are gathered into one tensor map first.
        let vb = match files.safetensors.as_slice() {
            [(_, bytes)] => VarBuilder::from_slice_safetensors(bytes, dtype, &options.device).map_err(weights_err)?,
            shards => {
                let mut tensors = std::collections::HashMap::new();
                for (name, bytes) in shards {
                    let t = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
                        .map_err(|e| ModelError::Weights(format!("{}/{name}: {e}", files.name)))?;
                    tensors.extend(t);
                }
                VarBuilder::from_tensors(tensors, dtype, &options.device)
            }
        };
        let model = Transformer::new(&spec, vb).map_err(|e| match e {
            ModelError::Candle(c) => ModelError::Weights(format!("{}: {c}", files.name)),
            other => other,
        })?;
        let tokenizer_hash = headscope_core::files::short_hash(&files.tokenizer_json);
        Ok(LoadedModel { dir, spec, model, tokenizer, eos_token_ids: eos, hash: files.hash(), tokenizer_hash })
    }
}

/// The chat template of `tokenizer` as the prompt format, unless it has none or `plain` is forced.
fn prompt_format(tokenizer: &HfTokenizer, plain: bool) -> PromptFormat {
    match tokenizer.chat_template() {
        Some(t) if !plain => PromptFormat::Chat(t),
        _ => PromptFormat::Plain,
    }
}

/// `eos_token_id` of generation_config.json, if the file exists.
fn read_generation_eos(dir: &Path) -> Result<Vec<u32>> {
    let p = dir.join("generation_config.json");
    if !p.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| ModelError::Io { path: p.clone(), error: e })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::config(&p, format!("not JSON: {e}")))?;
    Ok(crate::spec::token_ids(&v, "eos_token_id"))
}
