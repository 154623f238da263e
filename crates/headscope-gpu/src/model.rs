//! [`GpuModel`]: the instrumented forward of the candle model (`headscope-model`) on the GPU. Weights are
//! uploaded once ([`GpuModel::load`]); the KV cache, activations and readback buffers are sized once per
//! run ([`GpuModel::reserve`]) and every bind group is built then, so a decode step allocates nothing:
//! it writes three small buffers, records about ten dispatches per layer in one compute pass, and maps
//! one staging buffer holding the logits, every query head's argmax position and any requested
//! attention rows.
//!
//! Per layer: RMSNorm -> fused q|k|v matmul -> RoPE (q to its buffer, k and v into the cache) ->
//! attention (masks; at decode steps argmax and rows) -> output matmul added into the residual ->
//! RMSNorm -> fused gate|up matmul with a SwiGLU epilogue -> down matmul added into the residual.
//!
//! The serial kernel set avoids workgroup barriers altogether: the GPU a student's browser falls back to
//! is often SwiftShader on the CPU, where barriers are expensive coroutine switches (see
//! shaders/matmul.wgsl); the parallel set, for real GPUs, shares data in workgroup memory ([`KernelSet`]).
//! A step's dispatches are built as a list (`Dispatch`) and recorded into one pass, or, while
//! profiling ([`GpuModel::start_profile`]), each into a timed pass of its own.

use crate::context::GpuContext;
use crate::error::{GpuError, Result};
use crate::kernels::{
    k_splits, scratch_floats, AttentionOp, EmbedOp, Epilogue, GemmTile, HeadNormOp, KernelSet, Kernels, MatOp, NormOp, RopeOp, RunUniform,
    WeightFormat, PREFILL_ATTENTION_ROWS, PREFILL_WG_ROWS, SPLIT_TARGET_OUTPUTS, VALUES_CHUNK, WORKGROUP,
};
use crate::profile::{record, Dispatch, ForwardProfile, Phase, Profiler};
use crate::signal::signal;
use crate::weights::{check_supported, interleaved, pad4, reorder_bias, straight, transpose_columns, Checkpoint, HostTensor};
use headscope_core::HeadId;
use headscope_engine::prefix::CachedPrefix;
use headscope_engine::{AttentionRow, HeadMask, MaskMode, MaskScope, ModelSpec, Probe};
use wgpu::util::DeviceExt;

/// Column groups (of 4 outputs) per `gemv` workgroup.
const GEMV_GROUPS: usize = 16;
/// Column groups per `gemm` workgroup, and rows.
const GEMM_GROUPS: usize = 64;
const GEMM_ROWS: usize = 8;
/// Prompt tokens per prefill submission with the serial kernels: enough rows to fill the matmul tiles,
/// few enough that one submission stays short on a CPU implementation (a browser may reset a GPU whose
/// work runs for seconds).
const PREFILL_CHUNK: usize = 256;
/// The same with the parallel kernels (a real GPU): enough rows that the tiles of a small model's
/// matmuls and attention fill the GPU (2048 rows of a 576-wide model are 160-768 workgroups), halved
/// while a buffer would pass the device's limits.
const PREFILL_CHUNK_PARALLEL: usize = 2048;
/// Attention-row slots allocated before any probe asks for more.
const INITIAL_ROW_SLOTS: usize = 4;
/// `control` value of a head with no attention-row slot.
const NO_SLOT: u32 = u32::MAX;

/// The result of one decode step, read back from the GPU.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Next-token logits `[vocab]`.
    pub logits: Vec<f32>,
    /// For every query head (layer-major), the context position its attention peaked at.
    pub argmax_position: Vec<u32>,
    /// The rows asked for in the [`Probe`], grouped by layer (as the candle model's step returns them).
    pub attention_rows: Vec<AttentionRow>,
}

impl StepOutput {
    /// The greedy next token (the first maximum, as candle's argmax).
    pub fn greedy_token(&self) -> u32 {
        let mut best = 0;
        for (i, &v) in self.logits.iter().enumerate() {
            if v > self.logits[best] {
                best = i;
            }
        }
        best as u32
    }
}

/// One layer's weights on the GPU.
struct LayerWeights {
    input_norm: wgpu::Buffer,
    post_norm: wgpu::Buffer,
    qkv: wgpu::Buffer,
    qkv_bias: Option<wgpu::Buffer>,
    o: wgpu::Buffer,
    o_bias: Option<wgpu::Buffer>,
    gate_up: wgpu::Buffer,
    gate_up_bias: Option<wgpu::Buffer>,
    down: wgpu::Buffer,
    down_bias: Option<wgpu::Buffer>,
    /// Qwen3's per-head query and key norm weights.
    qk_norm: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

/// Every weight on the GPU, plus the static per-kernel uniforms.
struct Weights {
    /// The embedding table in blocks of rows (one block unless the device cannot bind it whole), each
    /// with its op (first row, rows).
    embed: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    layers: Vec<LayerWeights>,
    norm: wgpu::Buffer,
    /// The LM head in blocks of columns, likewise, each with its op and its number of columns.
    lm_head: Vec<(wgpu::Buffer, wgpu::Buffer, usize)>,
    /// Bound where a matmul has no bias (a binding cannot be left empty).
    no_bias: wgpu::Buffer,
    /// Bytes of GPU memory the weights take.
    bytes: u64,
    norm_op: wgpu::Buffer,
    qkv_op: wgpu::Buffer,
    o_op: wgpu::Buffer,
    gate_up_op: wgpu::Buffer,
    down_op: wgpu::Buffer,
    head_norm_op: wgpu::Buffer,
}

/// Bind groups of one layer.
struct LayerGroups {
    norm_in: wgpu::BindGroup,
    qkv: wgpu::BindGroup,
    head_norm: Option<wgpu::BindGroup>,
    rope: wgpu::BindGroup,
    attention: wgpu::BindGroup,
    attention_prefill: wgpu::BindGroup,
    o: wgpu::BindGroup,
    norm_post: wgpu::BindGroup,
    gate_up: wgpu::BindGroup,
    down: wgpu::BindGroup,
    /// With `gemv_norm` (parallel set): a decode step's q/k/v and gate/up products straight from the
    /// residual stream, each with its norm's weights.
    qkv_norm: Option<wgpu::BindGroup>,
    gate_up_norm: Option<wgpu::BindGroup>,
}

/// Buffers and bind groups of a run, sized for `capacity` positions.
struct RunState {
    capacity: usize,
    /// Prefill rows per submission ([`PREFILL_CHUNK`], [`PREFILL_CHUNK_PARALLEL`]).
    chunk: usize,
    /// Attention rows the probe buffer can hold per step.
    row_slots: usize,
    run: wgpu::Buffer,
    ids: wgpu::Buffer,
    cache_k: Vec<wgpu::Buffer>,
    cache_v: Vec<wgpu::Buffer>,
    /// `[prefill mask | decode mask | row slot]`, one u32 per query head each.
    control: wgpu::Buffer,
    /// `[argmax per query head | row_slots x capacity weights]`.
    probe: wgpu::Buffer,
    logits: wgpu::Buffer,
    staging: wgpu::Buffer,
    /// Activations, RoPE tables, score scratch and per-layer uniforms: only the bind groups use them,
    /// held here so the run visibly owns its memory.
    _held: Vec<wgpu::Buffer>,
    /// One per block of the embedding table.
    embed_groups: Vec<wgpu::BindGroup>,
    layers: Vec<LayerGroups>,
    norm_final: wgpu::BindGroup,
    /// One per block of the LM head, with its number of columns.
    lm_head: Vec<(wgpu::BindGroup, usize)>,
    /// The same blocks for `gemv_norm`, the final norm folded in (empty without it).
    lm_head_norm: Vec<wgpu::BindGroup>,
}

/// The instrumented transformer on the GPU.
pub struct GpuModel {
    ctx: GpuContext,
    spec: ModelSpec,
    kernels: Kernels,
    weights: Weights,
    state: Option<RunState>,
    position: usize,
    mask: Option<HeadMask>,
    /// Per query head: 0 keep, 1 uniform, 2 zero; at prefill and at decode steps.
    prefill_codes: Vec<u32>,
    decode_codes: Vec<u32>,
    /// What the cache holds, for [`GpuModel::reusable_prefix`]; the effect is the mask codes the
    /// positions were computed under.
    contents: CachedPrefix<Vec<u32>>,
    /// Timestamps per dispatch of each decode step and prefill chunk, while profiling
    /// ([`GpuModel::start_profile`]).
    profile: Option<Profiler>,
}

fn storage(device: &wgpu::Device, label: &str, bytes: u64, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16),
        usage: wgpu::BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

fn uniform<T: bytemuck::Pod>(device: &wgpu::Device, label: &str, value: &T) -> wgpu::Buffer {
    device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

fn group(device: &wgpu::Device, layout: &wgpu::BindGroupLayout, label: &str, buffers: &[&wgpu::Buffer]) -> wgpu::BindGroup {
    let entries: Vec<wgpu::BindGroupEntry> =
        buffers.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() }).collect();
    device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(label), layout, entries: &entries })
}

/// The format of the model's matrices on the GPU: the checkpoint's own 16-bit type when every matrix
/// (and the embedding table, and the LM head if it has its own) has it, else f32.
fn weight_format(spec: &ModelSpec, ck: &Checkpoint) -> WeightFormat {
    let mut names = vec!["model.embed_tokens.weight".to_string()];
    if ck.contains("lm_head.weight") {
        names.push("lm_head.weight".into());
    }
    for l in 0..spec.layers {
        for m in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            names.push(format!("model.layers.{l}.{m}.weight"));
        }
    }
    let types: Vec<Option<safetensors::Dtype>> = names.iter().map(|n| ck.dtype(n)).collect();
    if types.iter().all(|t| *t == Some(safetensors::Dtype::F16)) {
        WeightFormat::F16
    } else if types.iter().all(|t| *t == Some(safetensors::Dtype::BF16)) {
        WeightFormat::Bf16
    } else {
        WeightFormat::F32
    }
}

/// `data` as the GPU stores it in `format`: f32 as is, or 16-bit values two to a u32, the lower half
/// first (f32 is borrowed, not copied). The values came from weights of that type, so the conversion
/// is exact, but for the cooperative-matrix tile, which rounds any checkpoint's matrices to f16.
fn pack_weights(data: &[f32], format: WeightFormat) -> std::borrow::Cow<'_, [u8]> {
    match format {
        WeightFormat::F32 => bytemuck::cast_slice(data).into(),
        WeightFormat::F16 => data.iter().flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes()).collect::<Vec<u8>>().into(),
        WeightFormat::Bf16 => data.iter().flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes()).collect::<Vec<u8>>().into(),
    }
}

/// The bias buffer if the layer has one, else the placeholder.
fn or<'a>(bias: &'a Option<wgpu::Buffer>, none: &'a wgpu::Buffer) -> &'a wgpu::Buffer {
    bias.as_ref().unwrap_or(none)
}

/// The largest buffer this device can both create and bind.
fn binding_limit(limits: &wgpu::Limits) -> u64 {
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
}

/// Checks that a buffer of `bytes` can be created and bound on this device.
fn check_size(limits: &wgpu::Limits, what: &str, bytes: u64) -> Result<()> {
    let max = binding_limit(limits);
    if bytes > max {
        return Err(GpuError::Limits(format!(
            "{what} needs {:.1} MiB, more than this device binds in one buffer ({:.1} MiB)",
            bytes as f64 / 1048576.0,
            max as f64 / 1048576.0
        )));
    }
    Ok(())
}

impl GpuModel {
    /// Uploads a checkpoint described by `spec` from the bytes of its safetensors files (one, or every
    /// shard) and builds the pipelines. The matrices and the embedding table stay in the checkpoint's
    /// f16 or bf16 where all of them have that type ([`WeightFormat`]); otherwise, and for norms and
    /// biases, weights become f32.
    pub async fn load(ctx: &GpuContext, spec: &ModelSpec, safetensors_files: &[&[u8]]) -> Result<Self> {
        check_supported(spec)?;
        let checkpoint = Checkpoint::parse(safetensors_files)?;
        let device = &ctx.device;
        // The cooperative-matrix tile reads f16 matrices whatever the checkpoint holds (bf16 and f32
        // values rounded to f16; weights of these magnitudes keep 11 significant bits).
        let coop = ctx.kernel_set() == KernelSet::Parallel && ctx.gemm_tile() == GemmTile::Coop;
        let format = if coop { WeightFormat::F16 } else { weight_format(spec, &checkpoint) };
        let kernels = Kernels::build(device, spec.head_dim, ctx.kernel_set(), format, ctx.gemm_tile()).await?;
        let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let weights = Self::upload(ctx, spec, &checkpoint, format);
        let invalid = validation.pop().await;
        let oom = memory.pop().await;
        let weights = weights?;
        if let Some(e) = invalid {
            return Err(GpuError::Validation(format!("uploading weights: {e}")));
        }
        if let Some(e) = oom {
            return Err(GpuError::Device(format!("out of GPU memory uploading the weights: {e}")));
        }
        let total = spec.layers * spec.heads;
        Ok(GpuModel {
            ctx: ctx.clone(),
            spec: spec.clone(),
            kernels,
            weights,
            state: None,
            position: 0,
            mask: None,
            prefill_codes: vec![0; total],
            decode_codes: vec![0; total],
            contents: CachedPrefix::default(),
            profile: None,
        })
    }

    /// The weight format of this model's matrices on the GPU.
    pub fn weight_format(&self) -> WeightFormat {
        self.kernels.weights
    }

    /// Bytes of GPU memory the model's weights take (in [`GpuModel::weight_format`]).
    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes
    }

    /// Blocks the embedding table and the LM head are split into (1 and 1 when they fit whole).
    pub fn weight_blocks(&self) -> (usize, usize) {
        (self.weights.embed.len(), self.weights.lm_head.len())
    }

    fn upload(ctx: &GpuContext, spec: &ModelSpec, ck: &Checkpoint, format: WeightFormat) -> Result<Weights> {
        let device = &ctx.device;
        let limits = device.limits();
        let bytes_held = std::cell::Cell::new(0u64);
        // A weight in `as_format`: norms and biases in f32, matrices and table blocks in the model's format.
        let put_in = |as_format: WeightFormat, name: &str, data: &[f32]| -> Result<wgpu::Buffer> {
            check_size(&limits, &format!("weight {name}"), as_format.bytes() * data.len() as u64)?;
            let bytes = pack_weights(data, as_format);
            bytes_held.set(bytes_held.get() + bytes.len() as u64);
            Ok(device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(name),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE,
            }))
        };
        let put = |name: &str, data: &[f32]| put_in(WeightFormat::F32, name, data);
        let put_matrix = |name: &str, data: &[f32]| put_in(format, name, data);
        // The largest weight buffer: the device's binding limit, or the context's smaller block.
        let block_bytes = ctx.weight_block.map_or(binding_limit(&limits), |b| b.min(binding_limit(&limits)));
        let (hidden, inter) = (spec.hidden_size, spec.intermediate_size);
        let (qw, kvw) = (spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
        let embed = ck.get("model.embed_tokens.weight", &[spec.vocab_size, hidden])?;
        let mut layers = Vec::with_capacity(spec.layers);
        for l in 0..spec.layers {
            let p = format!("model.layers.{l}");
            let a = format!("{p}.self_attn");
            let m = format!("{p}.mlp");
            let q = ck.get(&format!("{a}.q_proj.weight"), &[qw, hidden])?;
            let k = ck.get(&format!("{a}.k_proj.weight"), &[kvw, hidden])?;
            let v = ck.get(&format!("{a}.v_proj.weight"), &[kvw, hidden])?;
            let o = ck.get(&format!("{a}.o_proj.weight"), &[hidden, qw])?;
            let gate = ck.get(&format!("{m}.gate_proj.weight"), &[inter, hidden])?;
            let up = ck.get(&format!("{m}.up_proj.weight"), &[inter, hidden])?;
            let down = ck.get(&format!("{m}.down_proj.weight"), &[hidden, inter])?;
            let qkv_order = straight(qw + 2 * kvw);
            let bias = |present: bool, parts: &[(&str, usize)], order: &[usize]| -> Result<Option<wgpu::Buffer>> {
                if !present {
                    return Ok(None);
                }
                let tensors = parts.iter().map(|(n, len)| ck.get(n, &[*len])).collect::<Result<Vec<HostTensor>>>()?;
                let refs: Vec<&HostTensor> = tensors.iter().collect();
                put(&format!("{p} bias {}", parts[0].0), &reorder_bias(&refs, order)).map(Some)
            };
            let gu_order = interleaved(inter);
            layers.push(LayerWeights {
                input_norm: put(&format!("{p}.input_layernorm.weight"), &ck.get(&format!("{p}.input_layernorm.weight"), &[hidden])?.data)?,
                post_norm: put(
                    &format!("{p}.post_attention_layernorm.weight"),
                    &ck.get(&format!("{p}.post_attention_layernorm.weight"), &[hidden])?.data,
                )?,
                qkv: put_matrix(&format!("{a}.qkv (fused)"), &transpose_columns(&[&q, &k, &v], &qkv_order))?,
                qkv_bias: bias(
                    spec.qkv_bias,
                    &[(&format!("{a}.q_proj.bias"), qw), (&format!("{a}.k_proj.bias"), kvw), (&format!("{a}.v_proj.bias"), kvw)],
                    &qkv_order,
                )?,
                o: put_matrix(&format!("{a}.o_proj.weight"), &transpose_columns(&[&o], &straight(hidden)))?,
                o_bias: bias(spec.o_bias, &[(&format!("{a}.o_proj.bias"), hidden)], &straight(hidden))?,
                gate_up: put_matrix(&format!("{m}.gate_up (interleaved)"), &transpose_columns(&[&gate, &up], &gu_order))?,
                gate_up_bias: bias(
                    spec.mlp_bias,
                    &[(&format!("{m}.gate_proj.bias"), inter), (&format!("{m}.up_proj.bias"), inter)],
                    &gu_order,
                )?,
                down: put_matrix(&format!("{m}.down_proj.weight"), &transpose_columns(&[&down], &straight(hidden)))?,
                down_bias: bias(spec.mlp_bias, &[(&format!("{m}.down_proj.bias"), hidden)], &straight(hidden))?,
                qk_norm: if spec.qk_norm {
                    let d = spec.head_dim;
                    let (qn, kn) = (format!("{a}.q_norm.weight"), format!("{a}.k_norm.weight"));
                    Some((put(&qn, &ck.get(&qn, &[d])?.data)?, put(&kn, &ck.get(&kn, &[d])?.data)?))
                } else {
                    None
                },
            });
        }
        let norm = ck.get("model.norm.weight", &[hidden])?;
        // As candle's loader: tied embeddings serve as the LM head unless the checkpoint has its own.
        let own_head = if spec.tie_word_embeddings && !ck.contains("lm_head.weight") {
            None
        } else {
            Some(ck.get("lm_head.weight", &[spec.vocab_size, hidden])?)
        };
        let head = own_head.as_ref().unwrap_or(&embed);
        let eps = spec.rms_norm_eps as f32;
        // The embedding table by blocks of rows, the LM head (stored as [hidden, vocab padded to 4]) by
        // blocks of 4-column groups, each block within `block_bytes`.
        let rows_per_block = (block_bytes / (format.bytes() * hidden as u64)).max(1) as usize;
        let embed_blocks = (0..spec.vocab_size)
            .step_by(rows_per_block)
            .map(|row0| {
                let rows = rows_per_block.min(spec.vocab_size - row0);
                let data = &embed.data[row0 * hidden..(row0 + rows) * hidden];
                let op = EmbedOp { hidden: hidden as u32, row0: row0 as u32, rows: rows as u32, pad: 0 };
                Ok((put_matrix(&format!("model.embed_tokens.weight rows {row0}.."), data)?, uniform(device, "embed op", &op)))
            })
            .collect::<Result<Vec<_>>>()?;
        let padded = pad4(spec.vocab_size);
        let groups_per_block = (block_bytes / (format.bytes() * 4 * hidden as u64)).max(1) as usize;
        let lm_blocks = (0..padded / 4)
            .step_by(groups_per_block)
            .map(|g0| {
                let g1 = (g0 + groups_per_block).min(padded / 4);
                let n = (4 * g1).min(spec.vocab_size) - 4 * g0;
                // Rows 4 g0 .. 4 g0 + n of [vocab, hidden], transposed into this block's own columns
                // (the whole transposed head is never built: for a large vocabulary it is as big as
                // the table).
                let data = transpose_columns(&[head], &(4 * g0..4 * g0 + n).collect::<Vec<_>>());
                let op = MatOp::column_block(hidden, 4 * g0, n, spec.vocab_size);
                Ok((put_matrix(&format!("lm_head.weight columns {}..", 4 * g0), &data)?, uniform(device, "lm_head op", &op), n))
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = put("model.norm.weight", &norm.data)?;
        Ok(Weights {
            embed: embed_blocks,
            layers,
            norm,
            lm_head: lm_blocks,
            no_bias: storage(device, "no bias", 16, wgpu::BufferUsages::empty()),
            bytes: bytes_held.get(),
            norm_op: uniform(device, "norm op", &NormOp { n: hidden as u32, eps, pad: [0; 2] }),
            head_norm_op: uniform(
                device,
                "head norm op",
                &HeadNormOp { heads: spec.heads as u32, kv_heads: spec.kv_heads as u32, dim: spec.head_dim as u32, eps },
            ),
            qkv_op: uniform(device, "qkv op", &MatOp::new(hidden, qw + 2 * kvw, Epilogue::Store, spec.qkv_bias)),
            o_op: uniform(device, "o op", &MatOp::new(qw, hidden, Epilogue::Accumulate, spec.o_bias)),
            gate_up_op: uniform(device, "gate_up op", &MatOp::new(hidden, 2 * inter, Epilogue::SwiGlu, spec.mlp_bias)),
            down_op: uniform(device, "down op", &MatOp::new(inter, hidden, Epilogue::Accumulate, spec.mlp_bias)),
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The GPU it runs on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Positions already in the cache (the next token's position).
    pub fn position(&self) -> usize {
        self.position
    }

    /// Positions the KV cache holds now (0 before the first [`GpuModel::reserve`] or run).
    pub fn capacity(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.capacity)
    }

    /// Prompt tokens one prefill submission processes (0 before the first reservation).
    pub fn prefill_chunk(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.chunk)
    }

    /// Allocates the KV cache and every per-run buffer for `capacity` positions and empties the cache.
    /// Call once with the run's longest context: later sequences reuse the buffers. A run that outgrows
    /// it grows the cache (copying what it holds), as the candle path does.
    pub fn reserve(&mut self, capacity: usize) -> Result<()> {
        self.check_fits(capacity)?;
        if self.state.as_ref().is_none_or(|s| s.capacity < capacity) {
            let slots = self.state.as_ref().map_or(INITIAL_ROW_SLOTS, |s| s.row_slots);
            self.state = None;
            self.state = Some(self.build_state(capacity.max(1), slots)?);
        }
        self.position = 0;
        self.contents.forget();
        Ok(())
    }

    /// Empties the cache (keeping its buffers) for a new sequence; nothing of it is reused.
    pub fn reset(&mut self) {
        self.position = 0;
        self.contents.forget();
    }

    /// Forgets every position from `position` on: later calls overwrite them. The keys and values
    /// before it stay valid, so a prompt that shares them need not compute them again.
    pub fn truncate(&mut self, position: usize) -> Result<()> {
        if position > self.position {
            return Err(GpuError::Invalid(format!("cannot truncate to position {position}: the cache holds {} positions", self.position)));
        }
        self.position = position;
        self.contents.truncate(position);
        Ok(())
    }

    /// How many leading positions of `ids` the cache holds as a prefill of `ids` under the current mask
    /// would compute them: the longest common prefix with the ids the cache holds, when those were
    /// computed under the same prefill mask (a mask of scope `all` changes the prefill; one of scope
    /// `decode`, or none, does not). [`Engine::prefill_reusing`](headscope_engine::Engine::prefill_reusing)
    /// keeps them.
    pub fn reusable_prefix(&self, ids: &[u32]) -> usize {
        self.contents.reusable(ids, &self.prefill_codes)
    }

    /// Applies `mask` to subsequent calls (`None` removes it), with the semantics of
    /// the candle model's `set_mask`. Unknown heads are an error.
    pub fn set_mask(&mut self, mask: Option<HeadMask>) -> Result<()> {
        let total = self.spec.layers * self.spec.heads;
        let (mut prefill, mut decode) = (vec![0u32; total], vec![0u32; total]);
        if let Some(m) = &mask {
            self.spec.head_shape().check(&m.heads).map_err(|e| GpuError::Invalid(e.to_string()))?;
            let code = match m.mode {
                MaskMode::Uniform => 1,
                MaskMode::Zero => 2,
            };
            for h in &m.heads {
                let i = h.layer * self.spec.heads + h.head;
                decode[i] = code;
                if m.scope == MaskScope::All {
                    prefill[i] = code;
                }
            }
        }
        self.prefill_codes = prefill;
        self.decode_codes = decode;
        self.mask = mask;
        if let Some(s) = &self.state {
            self.write_masks(s);
        }
        Ok(())
    }

    /// The mask in effect.
    pub fn mask(&self) -> Option<&HeadMask> {
        self.mask.as_ref()
    }

    /// From the next prefill or decode step on, times each dispatch on the GPU (timestamp queries; the
    /// adapter must offer them) until [`GpuModel::stop_profile`]; [`GpuModel::take_profile`] reads the
    /// means. A profiled forward runs each dispatch in a compute pass of its own (slower than a plain
    /// one; a prefill also waits for each chunk), and gives the same results.
    pub fn start_profile(&mut self) -> Result<()> {
        let spec = &self.spec;
        // Dispatches a run has at most: a dozen a layer, the final norm, and the embedding table's and
        // LM head's blocks.
        let blocks = self.weights.embed.len() + self.weights.lm_head.len();
        let capacity = spec.layers * 12 + 1 + blocks;
        self.profile = Some(Profiler::new(&self.ctx.device, &self.ctx.queue, capacity)?);
        Ok(())
    }

    /// The mean GPU time per decode step and per prefill chunk of each kind of dispatch since profiling
    /// started or was last taken; `None` when not profiling.
    pub fn take_profile(&mut self) -> Option<ForwardProfile> {
        self.profile.as_mut().map(Profiler::take)
    }

    /// Ends profiling: each prefill chunk and decode step records one compute pass again.
    pub fn stop_profile(&mut self) {
        self.profile = None;
    }

    fn write_masks(&self, s: &RunState) {
        let codes: Vec<u32> = self.prefill_codes.iter().chain(&self.decode_codes).copied().collect();
        self.ctx.queue.write_buffer(&s.control, 0, bytemuck::cast_slice(&codes));
    }

    fn check_fits(&self, positions: usize) -> Result<()> {
        if positions > self.spec.max_position_embeddings {
            return Err(GpuError::TooLong(format!(
                "{positions} positions exceed the model's context of {} tokens (max_position_embeddings)",
                self.spec.max_position_embeddings
            )));
        }
        Ok(())
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= self.spec.vocab_size) {
            return Err(GpuError::Invalid(format!("token id {bad} is outside the vocabulary ({} tokens)", self.spec.vocab_size)));
        }
        Ok(())
    }

    /// Makes room for `extra` more positions, growing the cache (and copying what it holds) if needed.
    fn make_room(&mut self, extra: usize) -> Result<()> {
        let need = self.position + extra;
        self.check_fits(need)?;
        let have = self.capacity();
        if need <= have {
            return Ok(());
        }
        let capacity = need.max(have * 2).min(self.spec.max_position_embeddings).max(need);
        let slots = self.state.as_ref().map_or(INITIAL_ROW_SLOTS, |s| s.row_slots);
        let fresh = self.build_state(capacity, slots)?;
        if let Some(old) = &self.state {
            let bytes = (self.position * self.spec.kv_heads * self.spec.head_dim * 4) as u64;
            if bytes > 0 {
                let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("grow cache") });
                for l in 0..self.spec.layers {
                    enc.copy_buffer_to_buffer(&old.cache_k[l], 0, &fresh.cache_k[l], 0, bytes);
                    enc.copy_buffer_to_buffer(&old.cache_v[l], 0, &fresh.cache_v[l], 0, bytes);
                }
                self.ctx.queue.submit([enc.finish()]);
            }
        }
        self.state = Some(fresh);
        Ok(())
    }

    /// Makes the probe buffer hold at least `slots` attention rows per step.
    fn ensure_row_slots(&mut self, slots: usize) -> Result<()> {
        let Some(s) = &self.state else { return Ok(()) };
        if slots <= s.row_slots {
            return Ok(());
        }
        let (capacity, position) = (s.capacity, self.position);
        let fresh = self.build_state(capacity, slots.max(s.row_slots * 2).min(self.spec.layers * self.spec.heads))?;
        let old = self.state.take().expect("checked above");
        let bytes = (position * self.spec.kv_heads * self.spec.head_dim * 4) as u64;
        if bytes > 0 {
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("more row slots") });
            for l in 0..self.spec.layers {
                enc.copy_buffer_to_buffer(&old.cache_k[l], 0, &fresh.cache_k[l], 0, bytes);
                enc.copy_buffer_to_buffer(&old.cache_v[l], 0, &fresh.cache_v[l], 0, bytes);
            }
            self.ctx.queue.submit([enc.finish()]);
        }
        self.state = Some(fresh);
        Ok(())
    }

    /// Allocates the buffers of a run and builds every bind group.
    fn build_state(&self, capacity: usize, row_slots: usize) -> Result<RunState> {
        let spec = &self.spec;
        let device = &self.ctx.device;
        let limits = device.limits();
        let (hidden, inter, vocab) = (spec.hidden_size as u64, spec.intermediate_size as u64, spec.vocab_size as u64);
        let (heads, dim) = (spec.heads as u64, spec.head_dim as u64);
        let (qw, kvw) = (heads * dim, spec.kv_heads as u64 * dim);
        let total = (spec.layers * spec.heads) as u64;
        let cap = capacity as u64;
        let parallel = self.kernels.attention_values_sum.is_some();
        let scratch_bytes = (scratch_floats(spec.heads, spec.head_dim, capacity, parallel) * 4) as u64;
        let fits = |rows: u64| [rows * (qw + 2 * kvw) * 4, rows * inter * 4].iter().all(|&b| b <= binding_limit(&limits));
        let mut chunk = if self.kernels.set == KernelSet::Parallel { PREFILL_CHUNK_PARALLEL } else { PREFILL_CHUNK };
        while chunk > PREFILL_CHUNK && !fits(chunk as u64) {
            chunk /= 2;
        }
        if let Some(cap) = self.ctx.prefill_chunk {
            chunk = chunk.min(cap);
        }
        let rows = chunk as u64;
        // Partial sums of split products (`k_splits`): only the parallel set splits.
        let partial_bytes = if self.kernels.gemm_sum.is_some() { SPLIT_TARGET_OUTPUTS as u64 * 4 } else { 16 };
        let sizes = [
            ("the key/value cache of one layer", cap * kvw * 4),
            ("the attention scores of a decode step", scratch_bytes),
            ("the RoPE tables", 2 * cap * dim / 2 * 4),
            ("the attention rows", (total + row_slots as u64 * cap) * 4),
            ("the fused q/k/v activations", rows * (qw + 2 * kvw) * 4),
            ("the MLP activations", rows * inter * 4),
            ("the split products' partial sums", partial_bytes),
        ];
        for (what, bytes) in sizes {
            check_size(&limits, what, bytes)?;
        }
        let copy = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let none = wgpu::BufferUsages::empty();
        let run = uniform(device, "run", &RunUniform { rows: 0, pos: 0, decoding: 0, pad: 0 });
        let ids = storage(device, "ids", rows * 4, wgpu::BufferUsages::COPY_DST);
        let x = storage(device, "x", rows * hidden * 4, none);
        let h = storage(device, "h", rows * hidden * 4, none);
        let qkv = storage(device, "qkv", rows * (qw + 2 * kvw) * 4, none);
        let q = storage(device, "q", rows * qw * 4, none);
        let attn = storage(device, "attn", rows * qw * 4, none);
        let mlp = storage(device, "mlp", rows * inter * 4, none);
        let cache_k: Vec<wgpu::Buffer> = (0..spec.layers).map(|l| storage(device, &format!("cache_k {l}"), cap * kvw * 4, copy)).collect();
        let cache_v: Vec<wgpu::Buffer> = (0..spec.layers).map(|l| storage(device, &format!("cache_v {l}"), cap * kvw * 4, copy)).collect();
        let rope = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("rope"),
            contents: bytemuck::cast_slice(&rope_tables(spec, capacity)),
            usage: wgpu::BufferUsages::STORAGE,
        });
        let scratch = storage(device, "scratch", scratch_bytes, none);
        let partial = storage(device, "split partial sums", partial_bytes, none);
        let control = storage(device, "control", 3 * total * 4, wgpu::BufferUsages::COPY_DST);
        let probe = storage(device, "probe", (total + row_slots as u64 * cap) * 4, wgpu::BufferUsages::COPY_SRC);
        let logits = storage(device, "logits", pad4(spec.vocab_size) as u64 * 4, wgpu::BufferUsages::COPY_SRC);
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("staging"),
            size: (vocab + total + row_slots as u64 * cap) * 4,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let rope_op = uniform(
            device,
            "rope op",
            &RopeOp { heads: spec.heads as u32, kv_heads: spec.kv_heads as u32, dim: dim as u32, capacity: capacity as u32 },
        );
        let attention_ops: Vec<wgpu::Buffer> = (0..spec.layers)
            .map(|l| {
                let op = AttentionOp {
                    layer: l as u32,
                    heads: spec.heads as u32,
                    kv_heads: spec.kv_heads as u32,
                    dim: dim as u32,
                    group: spec.group_size() as u32,
                    capacity: capacity as u32,
                    window: spec.sliding_windows.get(l).copied().flatten().unwrap_or(0) as u32,
                    scale: (1.0 / (spec.head_dim as f64).sqrt()) as f32,
                    total: total as u32,
                    pad: [0; 3],
                };
                uniform(device, &format!("attention op {l}"), &op)
            })
            .collect();

        let k = &self.kernels;
        let w = &self.weights;
        let mut layers = Vec::with_capacity(spec.layers);
        for (l, lw) in w.layers.iter().enumerate() {
            let (qkv_b, o_b, gu_b, down_b) =
                (or(&lw.qkv_bias, &w.no_bias), or(&lw.o_bias, &w.no_bias), or(&lw.gate_up_bias, &w.no_bias), or(&lw.down_bias, &w.no_bias));
            let fused = |label, op, weights, bias, out, norm| {
                k.gemv_norm
                    .as_ref()
                    .map(|f| group(device, &f.layout, label, &[&run, op, &x, weights, bias, out, &partial, norm, &w.norm_op]))
            };
            layers.push(LayerGroups {
                norm_in: group(device, &k.norm.layout, "norm_in", &[&run, &w.norm_op, &x, &lw.input_norm, &h]),
                qkv: group(device, &k.gemm.layout, "qkv", &[&run, &w.qkv_op, &h, &lw.qkv, qkv_b, &qkv, &partial]),
                head_norm: lw
                    .qk_norm
                    .as_ref()
                    .map(|(qn, kn)| group(device, &k.head_norm.layout, "head norm", &[&run, &w.head_norm_op, &qkv, qn, kn])),
                rope: group(device, &k.rope.layout, "rope", &[&run, &rope_op, &qkv, &rope, &q, &cache_k[l], &cache_v[l]]),
                attention: group(
                    device,
                    &k.attention_values.layout,
                    "attention",
                    &[&run, &attention_ops[l], &q, &cache_k[l], &cache_v[l], &attn, &scratch, &control, &probe],
                ),
                attention_prefill: group(
                    device,
                    &k.attention_prefill.layout,
                    "attention_prefill",
                    &[&run, &attention_ops[l], &q, &cache_k[l], &cache_v[l], &attn, &control],
                ),
                o: group(device, &k.gemm.layout, "o", &[&run, &w.o_op, &attn, &lw.o, o_b, &x, &partial]),
                norm_post: group(device, &k.norm.layout, "norm_post", &[&run, &w.norm_op, &x, &lw.post_norm, &h]),
                gate_up: group(device, &k.gemm.layout, "gate_up", &[&run, &w.gate_up_op, &h, &lw.gate_up, gu_b, &mlp, &partial]),
                down: group(device, &k.gemm.layout, "down", &[&run, &w.down_op, &mlp, &lw.down, down_b, &x, &partial]),
                qkv_norm: fused("qkv_norm", &w.qkv_op, &lw.qkv, qkv_b, &qkv, &lw.input_norm),
                gate_up_norm: fused("gate_up_norm", &w.gate_up_op, &lw.gate_up, gu_b, &mlp, &lw.post_norm),
            });
        }
        let embed_groups =
            w.embed.iter().map(|(table, op)| group(device, &k.embed.layout, "embed", &[&run, op, &ids, table, &x])).collect();
        let norm_final = group(device, &k.norm.layout, "norm_final", &[&run, &w.norm_op, &x, &w.norm, &h]);
        let lm_head = w
            .lm_head
            .iter()
            .map(|(weights, op, n)| (group(device, &k.gemm.layout, "lm_head", &[&run, op, &h, weights, &w.no_bias, &logits, &partial]), *n))
            .collect();
        let lm_head_norm = match &k.gemv_norm {
            Some(f) => w
                .lm_head
                .iter()
                .map(|(weights, op, _)| {
                    group(device, &f.layout, "lm_head_norm", &[&run, op, &x, weights, &w.no_bias, &logits, &partial, &w.norm, &w.norm_op])
                })
                .collect(),
            None => Vec::new(),
        };
        let state = RunState {
            capacity,
            chunk,
            row_slots,
            run,
            ids,
            cache_k,
            cache_v,
            control,
            probe,
            logits,
            staging,
            _held: [x, h, qkv, q, attn, mlp, rope, scratch, partial, rope_op].into_iter().chain(attention_ops).collect(),
            embed_groups,
            layers,
            norm_final,
            lm_head,
            lm_head_norm,
        };
        self.write_masks(&state);
        Ok(state)
    }

    /// The dispatches of the embedding and every layer for `rows` rows starting at position `pos`, in
    /// order (about ten a layer).
    fn layer_dispatches<'a>(&'a self, s: &'a RunState, rows: u32, pos: usize) -> Vec<Dispatch<'a>> {
        let spec = &self.spec;
        let k = &self.kernels;
        let mut list = Vec::with_capacity(2 + spec.layers * 12);
        let groups = |n: usize| n.div_ceil(WORKGROUP as usize) as u32;
        // A `[rows, inputs] x [inputs, n]` product. Split ones (`k_splits`, the parallel set) add their
        // parts in a second pass; `prefill` has written the same split count into the op.
        let matmul = |list: &mut Vec<Dispatch<'a>>, what: &'static str, group: &'a wgpu::BindGroup, inputs: usize, n: usize| {
            let n4 = n.div_ceil(4);
            let (pipeline, x, y) = match (rows, k.set) {
                (1, _) => (&k.gemv, n4.div_ceil(GEMV_GROUPS), 1),
                (_, KernelSet::Parallel) => {
                    (&k.gemm.pipeline, n4.div_ceil(k.gemm_tile.groups()), (rows as usize).div_ceil(k.gemm_tile.rows()))
                }
                (_, KernelSet::Serial) => (&k.gemm.pipeline, n4.div_ceil(GEMM_GROUPS), (rows as usize).div_ceil(GEMM_ROWS)),
            };
            let split = k.gemm_sum.as_ref().filter(|_| rows > 1).map(|sum| (sum, k_splits(rows as usize, n, inputs, k.gemm_tile)));
            match split {
                Some((sum, splits)) if splits > 1 => {
                    list.push(Dispatch { what, pipeline, group, grid: ((x * splits) as u32, y as u32) });
                    list.push(Dispatch { what: "split_sum", pipeline: sum, group, grid: (groups(n4), rows) });
                }
                _ => list.push(Dispatch { what, pipeline, group, grid: (x as u32, y as u32) }),
            }
        };
        let norm_groups = norm_workgroups(k.set, rows);
        let (qw, kvw) = (spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
        let heads = spec.heads as u32;
        for g in &s.embed_groups {
            list.push(Dispatch { what: "embed", pipeline: &k.embed.pipeline, group: g, grid: (groups(spec.hidden_size), rows) });
        }
        let rope_items = (spec.heads + spec.kv_heads) * spec.head_dim / 2 + kvw;
        // A decode step's norms ride in the products that read them where the set has `gemv_norm`.
        let normed_gemv = |list: &mut Vec<Dispatch<'a>>,
                           what: &'static str,
                           norm: &'a wgpu::BindGroup,
                           fused: &'a Option<wgpu::BindGroup>,
                           plain: &'a wgpu::BindGroup,
                           n: usize| {
            match (rows, &k.gemv_norm, fused) {
                (1, Some(f), Some(group)) => {
                    list.push(Dispatch { what, pipeline: &f.pipeline, group, grid: (n.div_ceil(4).div_ceil(GEMV_GROUPS) as u32, 1) })
                }
                _ => {
                    list.push(Dispatch { what: "norm", pipeline: &k.norm.pipeline, group: norm, grid: (norm_groups, 1) });
                    matmul(list, what, plain, spec.hidden_size, n);
                }
            }
        };
        for (l, g) in s.layers.iter().enumerate() {
            normed_gemv(&mut list, "qkv", &g.norm_in, &g.qkv_norm, &g.qkv, qw + 2 * kvw);
            if let Some(norm) = &g.head_norm {
                let grid = (groups(rows as usize * (spec.heads + spec.kv_heads)), 1);
                list.push(Dispatch { what: "head_norm", pipeline: &k.head_norm.pipeline, group: norm, grid });
            }
            list.push(Dispatch { what: "rope", pipeline: &k.rope.pipeline, group: &g.rope, grid: (groups(rope_items), rows) });
            if rows > 1 {
                let workgroups = match k.set {
                    KernelSet::Serial => groups((rows as usize).div_ceil(PREFILL_ATTENTION_ROWS)),
                    KernelSet::Parallel => (rows as usize).div_ceil(PREFILL_WG_ROWS) as u32,
                };
                let pipeline = &k.attention_prefill.pipeline;
                list.push(Dispatch { what: "attention_prefill", pipeline, group: &g.attention_prefill, grid: (workgroups, heads) });
            } else {
                // Keys this step's query sees in this layer (its window may cut the context).
                let visible = spec.sliding_windows.get(l).copied().flatten().map_or(pos + 1, |w| w.min(pos + 1));
                let group = &g.attention;
                list.push(Dispatch { what: "scores", pipeline: &k.attention_scores, group, grid: (groups(visible.div_ceil(4)), heads) });
                // The parallel softmax takes a workgroup per head, the serial one an invocation.
                let softmax = if k.attention_values_sum.is_some() { heads } else { groups(spec.heads) };
                list.push(Dispatch { what: "softmax", pipeline: &k.attention_softmax, group, grid: (softmax, 1) });
                let values = &k.attention_values.pipeline;
                match &k.attention_values_sum {
                    None => list.push(Dispatch { what: "values", pipeline: values, group, grid: (groups(qw / 4), 1) }),
                    Some(sum) => {
                        let chunks = visible.div_ceil(VALUES_CHUNK) as u32;
                        list.push(Dispatch { what: "values", pipeline: values, group, grid: (chunks, heads) });
                        list.push(Dispatch { what: "values_sum", pipeline: sum, group, grid: (groups(qw / 4), 1) });
                    }
                }
            }
            matmul(&mut list, "o", &g.o, qw, spec.hidden_size);
            normed_gemv(&mut list, "gate_up", &g.norm_post, &g.gate_up_norm, &g.gate_up, 2 * spec.intermediate_size);
            matmul(&mut list, "down", &g.down, spec.intermediate_size, spec.hidden_size);
        }
        list
    }

    /// Records `dispatches` into `enc`: into one compute pass, or while profiling each into a timed pass
    /// of its own, returning then their names in order (what the timestamps will be read as).
    fn encode(&self, enc: &mut wgpu::CommandEncoder, label: &str, dispatches: &[Dispatch]) -> Option<Vec<&'static str>> {
        match &self.profile {
            Some(p) if dispatches.len() <= p.capacity() => {
                p.record(enc, dispatches);
                Some(dispatches.iter().map(|d| d.what).collect())
            }
            _ => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
                record(&mut pass, dispatches);
                None
            }
        }
    }

    /// Runs `ids` through the model in chunks, filling the cache; produces no logits. The prompt's last
    /// token should go to [`GpuModel::step`] instead, so that its attention is observed. Resolves when
    /// the GPU has finished.
    pub async fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        self.check_ids(ids)?;
        self.make_room(ids.len())?;
        if ids.is_empty() {
            return Ok(());
        }
        let s = self.state.as_ref().expect("make_room allocated the run state");
        let start = self.position;
        for chunk in ids.chunks(s.chunk) {
            let rows = chunk.len() as u32;
            let run = RunUniform { rows, pos: self.position as u32, decoding: 0, pad: 0 };
            self.ctx.queue.write_buffer(&s.run, 0, bytemuck::bytes_of(&run));
            self.ctx.queue.write_buffer(&s.ids, 0, bytemuck::cast_slice(chunk));
            if self.kernels.gemm_sum.is_some() {
                self.write_splits(chunk.len());
            }
            let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("prefill") });
            let dispatches = self.layer_dispatches(s, rows, self.position);
            let timing = self.encode(&mut enc, "prefill", &dispatches);
            drop(dispatches);
            self.ctx.queue.submit([enc.finish()]);
            self.position += chunk.len();
            if let (Some(what), Some(profile)) = (timing, self.profile.as_ref()) {
                // Each chunk's timestamps are read before the next chunk reuses the query set.
                let mapped = profile.map(what.len());
                self.wait().await?;
                let mapped = mapped.await;
                self.profile.as_mut().expect("a profiled chunk has a profiler").add(mapped, Phase::Prefill, chunk.len(), &what)?;
            }
        }
        let (tx, rx) = signal::<()>();
        self.ctx.queue.on_submitted_work_done(move || tx.send(()));
        self.wait().await?;
        rx.await.ok_or_else(|| GpuError::Device("the GPU dropped the prefill's completion callback".into()))?;
        self.ctx.take_errors()?;
        self.contents.written(start, ids, &self.prefill_codes);
        Ok(())
    }

    /// Writes into the layers' product ops the split counts their prefill dispatches of `rows` rows use
    /// (`layer_dispatches` asks `k_splits` the same), before the chunk is submitted.
    fn write_splits(&self, rows: usize) {
        let spec = &self.spec;
        let (hidden, inter, qw, kvw) =
            (spec.hidden_size, spec.intermediate_size, spec.heads * spec.head_dim, spec.kv_heads * spec.head_dim);
        let w = &self.weights;
        let offset = std::mem::offset_of!(MatOp, splits) as u64;
        for (op, inputs, n) in
            [(&w.qkv_op, hidden, qw + 2 * kvw), (&w.o_op, qw, hidden), (&w.gate_up_op, hidden, 2 * inter), (&w.down_op, inter, hidden)]
        {
            let splits = k_splits(rows, n, inputs, self.kernels.gemm_tile) as u32;
            self.ctx.queue.write_buffer(op, offset, bytemuck::bytes_of(&splits));
        }
    }

    /// Natively, blocks until submitted work is done and callbacks ran; in the browser this is a no-op
    /// (the browser runs callbacks from its event loop while we await).
    async fn wait(&self) -> Result<()> {
        self.ctx.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Device(format!("waiting for the GPU: {e}")))?;
        Ok(())
    }

    /// Feeds one token, observes attention, and returns the next-token logits, every query head's
    /// argmax position and the attention rows `probe` asks for, read back in one buffer map.
    pub async fn step(&mut self, id: u32, probe: &Probe) -> Result<StepOutput> {
        self.check_ids(&[id])?;
        self.spec.head_shape().check(&probe.rows).map_err(|e| GpuError::Invalid(e.to_string()))?;
        self.make_room(1)?;
        // Rows in the candle path's order: by layer, then as asked. Each distinct head gets a slot.
        let mut wanted: Vec<HeadId> = probe.rows.clone();
        wanted.sort_by_key(|h| h.layer);
        let mut distinct: Vec<HeadId> = Vec::new();
        for h in &wanted {
            if !distinct.contains(h) {
                distinct.push(*h);
            }
        }
        self.ensure_row_slots(distinct.len())?;
        let s = self.state.as_ref().expect("make_room allocated the run state");
        let spec = &self.spec;
        let total = spec.layers * spec.heads;
        let mut slots = vec![NO_SLOT; total];
        for (i, h) in distinct.iter().enumerate() {
            slots[h.layer * spec.heads + h.head] = i as u32;
        }
        let pos = self.position;
        let queue = &self.ctx.queue;
        queue.write_buffer(&s.control, (2 * total * 4) as u64, bytemuck::cast_slice(&slots));
        queue.write_buffer(&s.run, 0, bytemuck::bytes_of(&RunUniform { rows: 1, pos: pos as u32, decoding: 1, pad: 0 }));
        queue.write_buffer(&s.ids, 0, bytemuck::bytes_of(&id));
        let mut enc = self.ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("step") });
        let mut dispatches = self.layer_dispatches(s, 1, pos);
        let k = &self.kernels;
        match &k.gemv_norm {
            Some(f) => {
                for ((_, n), g) in s.lm_head.iter().zip(&s.lm_head_norm) {
                    let grid = (n.div_ceil(4).div_ceil(GEMV_GROUPS) as u32, 1);
                    dispatches.push(Dispatch { what: "lm_head", pipeline: &f.pipeline, group: g, grid });
                }
            }
            None => {
                dispatches.push(Dispatch {
                    what: "final_norm",
                    pipeline: &k.norm.pipeline,
                    group: &s.norm_final,
                    grid: (norm_workgroups(k.set, 1), 1),
                });
                for (g, n) in &s.lm_head {
                    dispatches.push(Dispatch {
                        what: "lm_head",
                        pipeline: &k.gemv,
                        group: g,
                        grid: (n.div_ceil(4).div_ceil(GEMV_GROUPS) as u32, 1),
                    });
                }
            }
        }
        let timing = self.encode(&mut enc, "step", &dispatches);
        drop(dispatches);
        let vocab = spec.vocab_size as u64;
        let row_len = (pos + 1) as u64;
        enc.copy_buffer_to_buffer(&s.logits, 0, &s.staging, 0, vocab * 4);
        enc.copy_buffer_to_buffer(&s.probe, 0, &s.staging, vocab * 4, total as u64 * 4);
        let rows_at = vocab + total as u64;
        for i in 0..distinct.len() as u64 {
            let src = (total as u64 + i * s.capacity as u64) * 4;
            enc.copy_buffer_to_buffer(&s.probe, src, &s.staging, (rows_at + i * row_len) * 4, row_len * 4);
        }
        let bytes = (rows_at + distinct.len() as u64 * row_len) * 4;
        queue.submit([enc.finish()]);
        let (tx, rx) = signal();
        s.staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        let timestamps = match (&timing, &self.profile) {
            (Some(what), Some(p)) => Some(p.map(what.len())),
            _ => None,
        };
        self.wait().await?;
        let mapped = rx.await.ok_or_else(|| GpuError::Readback("the GPU dropped the map callback".into()))?;
        if let Err(e) = mapped {
            self.ctx.take_errors()?;
            return Err(GpuError::Readback(e.to_string()));
        }
        let values: Vec<u32> = {
            let view = s.staging.slice(..bytes).get_mapped_range().map_err(|e| GpuError::Readback(e.to_string()))?;
            bytemuck::cast_slice::<u8, u32>(&view).to_vec()
        };
        s.staging.unmap();
        if let (Some(what), Some(mapped)) = (&timing, timestamps) {
            let mapped = mapped.await;
            self.profile.as_mut().expect("a profiled step has a profiler").add(mapped, Phase::Decode, 1, what)?;
        }
        self.ctx.take_errors()?;
        let vocab = vocab as usize;
        let logits: Vec<f32> = values[..vocab].iter().map(|&b| f32::from_bits(b)).collect();
        let argmax_position = values[vocab..vocab + total].to_vec();
        let rows_at = rows_at as usize;
        let row_len = row_len as usize;
        let attention_rows = wanted
            .iter()
            .map(|h| {
                let slot = distinct.iter().position(|d| d == h).expect("every wanted head has a slot");
                let first = spec.sliding_windows.get(h.layer).copied().flatten().map_or(0, |w| (pos + 1).saturating_sub(w));
                let start = rows_at + slot * row_len;
                let weights = values[start..start + row_len]
                    .iter()
                    .enumerate()
                    .map(|(j, &b)| if j < first { 0.0 } else { f32::from_bits(b) })
                    .collect();
                AttentionRow { head: *h, weights }
            })
            .collect();
        self.contents.written(self.position, &[id], &self.decode_codes);
        self.position += 1;
        Ok(StepOutput { logits, argmax_position, attention_rows })
    }
}

/// Workgroups of the RMSNorm kernel for `rows` rows: one a row in the parallel set, one per
/// `WORKGROUP` rows (an invocation a row) in the serial one.
fn norm_workgroups(set: KernelSet, rows: u32) -> u32 {
    match set {
        KernelSet::Parallel => rows,
        KernelSet::Serial => rows.div_ceil(WORKGROUP),
    }
}

/// cos then sin tables, `[capacity, head_dim / 2]` each, built as the candle path builds them: angles
/// in f64 rounded to f32, then f32 cos/sin.
fn rope_tables(spec: &ModelSpec, capacity: usize) -> Vec<f32> {
    let inv = headscope_engine::rope::inverse_frequencies(spec);
    let half = inv.len();
    let mut out = vec![0f32; 2 * capacity * half];
    for p in 0..capacity {
        for (i, f) in inv.iter().enumerate() {
            let angle = (p as f64 * f) as f32;
            out[p * half + i] = angle.cos();
            out[capacity * half + p * half + i] = angle.sin();
        }
    }
    out
}
