//! The compute pipelines, built once when a model loads: one WGSL module per kernel (each prefixed with
//! `common.wgsl`), explicit bind group layouts (so the matmul's two pipelines share bind groups), and the
//! uniform structs the kernels read, laid out to match the WGSL.

use crate::error::{GpuError, Result};
use bytemuck::{Pod, Zeroable};

const COMMON: &str = include_str!("shaders/common.wgsl");

/// Per submission: rows in the chunk, position of its first row, whether this is a decode step.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct RunUniform {
    pub rows: u32,
    pub pos: u32,
    pub decoding: u32,
    pub pad: u32,
}

/// `embed.wgsl`'s Op.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct EmbedOp {
    pub hidden: u32,
    /// The block of the table this dispatch reads: its first row and its number of rows.
    pub row0: u32,
    pub rows: u32,
    pub pad: u32,
}

/// `rmsnorm.wgsl`'s Op.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct NormOp {
    pub n: u32,
    pub eps: f32,
    pub pad: [u32; 2],
}

/// `head_norm.wgsl`'s Op.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct HeadNormOp {
    pub heads: u32,
    pub kv_heads: u32,
    pub dim: u32,
    pub eps: f32,
}

/// Epilogue of a matmul: store, add into the output (residual), or SwiGLU of interleaved pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Epilogue {
    Store = 0,
    Accumulate = 1,
    SwiGlu = 2,
}

/// `matmul.wgsl`'s Op.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct MatOp {
    pub k: u32,
    pub n: u32,
    pub n4: u32,
    pub ld: u32,
    pub mode: u32,
    pub has_bias: u32,
    /// First output column (a column block of a matrix split to fit the binding limit).
    pub col0: u32,
    /// Parts the input range of a `gemm_tiled` product is split into ([`k_splits`]; 1: none), set
    /// before each prefill chunk.
    pub splits: u32,
}

impl MatOp {
    /// A `[rows, k] x [k, n]` product written with `epilogue`.
    pub fn new(k: usize, n: usize, epilogue: Epilogue, has_bias: bool) -> Self {
        let ld = if epilogue == Epilogue::SwiGlu { n / 2 } else { n };
        MatOp {
            k: k as u32,
            n: n as u32,
            n4: n.div_ceil(4) as u32,
            ld: ld as u32,
            mode: epilogue as u32,
            has_bias: has_bias as u32,
            col0: 0,
            splits: 1,
        }
    }

    /// The product of columns `col0 .. col0 + n` of a matrix of `ld` columns (stored alone), written
    /// into those columns of the output.
    pub fn column_block(k: usize, col0: usize, n: usize, ld: usize) -> Self {
        MatOp {
            k: k as u32,
            n: n as u32,
            n4: n.div_ceil(4) as u32,
            ld: ld as u32,
            mode: Epilogue::Store as u32,
            has_bias: 0,
            col0: col0 as u32,
            splits: 1,
        }
    }
}

/// How a model's matrices (and its embedding table) are stored on the GPU: as f32, or in the
/// checkpoint's own 16-bit format, two values to a u32, widened to f32 as the kernels read them
/// (`unpack2x16float` for f16, a shift for bf16: both exact, so the products equal those of f32
/// copies of the same weights, and no `shader-f16` feature is needed). Half the memory and half the
/// bytes a decode step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
}

impl WeightFormat {
    /// Bytes per weight.
    pub fn bytes(self) -> u64 {
        match self {
            WeightFormat::F32 => 4,
            WeightFormat::F16 | WeightFormat::Bf16 => 2,
        }
    }

    /// `matmul.wgsl`'s binding 3 and `wv4(i)`: column group `i` as four f32.
    fn matmul_prelude(self) -> &'static str {
        match self {
            WeightFormat::F32 => {
                "@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;\nfn wv4(i: u32) -> vec4<f32> {\n    return w[i];\n}"
            }
            WeightFormat::F16 => {
                "@group(0) @binding(3) var<storage, read> w: array<vec2<u32>>;\nfn wv4(i: u32) -> vec4<f32> {\n    let p = w[i];\n    return vec4<f32>(unpack2x16float(p.x), unpack2x16float(p.y));\n}"
            }
            WeightFormat::Bf16 => {
                "@group(0) @binding(3) var<storage, read> w: array<vec2<u32>>;\nfn wv4(i: u32) -> vec4<f32> {\n    let p = w[i];\n    return vec4<f32>(bitcast<f32>(p.x << 16u), bitcast<f32>(p.x & 0xffff0000u), bitcast<f32>(p.y << 16u), bitcast<f32>(p.y & 0xffff0000u));\n}"
            }
        }
    }

    /// `embed.wgsl`'s binding 3 and `table_at(i)`: value `i` of the table block as f32.
    fn embed_prelude(self) -> &'static str {
        match self {
            WeightFormat::F32 => "@group(0) @binding(3) var<storage, read> table: array<f32>;\nfn table_at(i: u32) -> f32 {\n    return table[i];\n}",
            WeightFormat::F16 => {
                "@group(0) @binding(3) var<storage, read> table: array<u32>;\nfn table_at(i: u32) -> f32 {\n    return unpack2x16float(table[i / 2u])[i % 2u];\n}"
            }
            WeightFormat::Bf16 => {
                "@group(0) @binding(3) var<storage, read> table: array<u32>;\nfn table_at(i: u32) -> f32 {\n    let p = table[i / 2u];\n    return bitcast<f32>(select(p << 16u, p & 0xffff0000u, i % 2u == 1u));\n}"
            }
        }
    }
}

/// `rope.wgsl`'s Op.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct RopeOp {
    pub heads: u32,
    pub kv_heads: u32,
    pub dim: u32,
    pub capacity: u32,
}

/// `attention.wgsl`'s Op.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub(crate) struct AttentionOp {
    pub layer: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub dim: u32,
    pub group: u32,
    pub capacity: u32,
    pub window: u32,
    pub scale: f32,
    pub total: u32,
    pub pad: [u32; 3],
}

/// How a kernel binds one buffer.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Uniform,
    Read,
    ReadWrite,
}

/// A pipeline and the layout its bind groups use.
#[derive(Debug)]
pub(crate) struct Kernel {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

/// Every pipeline of the forward.
#[derive(Debug)]
pub(crate) struct Kernels {
    pub embed: Kernel,
    pub norm: Kernel,
    /// One-row matmul (decode steps): `gemv` or, in the parallel set, `gemv_split` (the same 16 column
    /// groups per workgroup); shares `gemm.layout`.
    pub gemv: wgpu::ComputePipeline,
    /// The parallel set's `gemv_norm`: a decode step's product of a normalised residual row, the
    /// RMSNorm computed in the same dispatch (`None` in the serial set, which dispatches the norm).
    pub gemv_norm: Option<Kernel>,
    /// Several-row matmul (prefill): `gemm` or, in the parallel set, `gemm_tiled`.
    pub gemm: Kernel,
    /// The parallel set's `gemm_sum`: adds a split `gemm_tiled`'s partial sums (shares `gemm.layout`).
    pub gemm_sum: Option<wgpu::ComputePipeline>,
    /// The parallel set's prefill product tile.
    pub gemm_tile: GemmTile,
    pub rope: Kernel,
    /// Per-head RMSNorm of queries and keys (Qwen3), in place before `rope`.
    pub head_norm: Kernel,
    /// Attention of a prefill chunk (online softmax, nothing observed).
    pub attention_prefill: Kernel,
    /// Decode-step attention in three passes sharing `attention_values.layout` (four with the parallel
    /// kernels: `attention_values` then writes per-chunk partial sums that `attention_values_sum` adds).
    pub attention_scores: wgpu::ComputePipeline,
    pub attention_softmax: wgpu::ComputePipeline,
    pub attention_values: Kernel,
    pub attention_values_sum: Option<wgpu::ComputePipeline>,
    /// The set these are.
    pub set: KernelSet,
    /// How the matrices' weights are stored (the matmul and embedding kernels read that format).
    pub weights: WeightFormat,
}

/// Which kernels a model compiles: the matmul of several rows, prefill attention and decode-step
/// attention each come in two shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSet {
    /// No workgroup memory and no barriers, the faster choice on CPU implementations of WebGPU
    /// (SwiftShader, lavapipe), where a barrier turns invocations into coroutines: `gemm` keeps a
    /// register tile, prefill attention walks a few query rows per invocation (attention_prefill.wgsl),
    /// one invocation per head walks a decode step's score row (attention_decode.wgsl); prefill runs in
    /// chunks of 256 rows.
    Serial,
    /// Workgroups share staged data, for real GPUs: RMSNorm takes a workgroup per row, `gemm_tiled`
    /// stages inputs and weights, `gemv_split` splits a decode step's products over their inputs,
    /// prefill attention stages key/value tiles for 64 query rows (attention_prefill_wg.wgsl), a decode
    /// step's softmax is shared per head and its values split over chunks of positions
    /// (attention_decode_wg.wgsl; heads up to 256 wide, wider ones keep the serial decode); prefill runs
    /// in chunks of up to 2048 rows, so that the tiles fill the GPU.
    Parallel,
}

/// Query rows per workgroup of the parallel prefill attention (attention_prefill_wg.wgsl).
pub(crate) const PREFILL_WG_ROWS: usize = 64;

/// Column groups per `gemm_tiled` workgroup (`TILE_GROUPS` in matmul.wgsl): 128 outputs a row.
pub(crate) const TILED_GROUPS: usize = 32;

/// Rows per workgroup of the parallel set's prefill products (the register tile of each invocation:
/// 4 or 8 rows by two column groups). Which is faster depends on the GPU; `Rows64` is the default, and
/// the WGSL bench times both (`BENCH_GEMM=64,128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GemmTile {
    /// `gemm_tiled`: 64 rows, 32 outputs an invocation.
    #[default]
    Rows64,
    /// `gemm_tiled128`: 128 rows, 64 outputs an invocation (more registers, fewer staged loads).
    Rows128,
    /// `gemm_coop` (matmul_coop.wgsl): 32 rows x 64 columns a workgroup of one 32-wide subgroup, on
    /// tensor cores through cooperative matrices (f16 inputs, f32 sums). Native only, where the adapter
    /// offers 16 x 16 x 16 f16 matrices with f32 sums and subgroups of exactly 32
    /// ([`crate::GpuContext::coop_matrix`]); the model's matrices are then uploaded in f16. Correct on an
    /// H100 (the same greedy tokens as `Rows64`) but 2-3x slower there so far: opt-in (BENCHMARKS.md).
    Coop,
}

impl GemmTile {
    /// Rows a workgroup covers.
    pub fn rows(self) -> usize {
        match self {
            GemmTile::Rows64 => 64,
            GemmTile::Rows128 => 128,
            GemmTile::Coop => 32,
        }
    }

    /// Column groups (of 4 outputs) a workgroup covers.
    pub fn groups(self) -> usize {
        match self {
            GemmTile::Rows64 | GemmTile::Rows128 => TILED_GROUPS,
            GemmTile::Coop => 16,
        }
    }

    fn entry(self) -> &'static str {
        match self {
            GemmTile::Rows64 => "gemm_tiled",
            GemmTile::Rows128 => "gemm_tiled128",
            GemmTile::Coop => "gemm_coop",
        }
    }
}

/// Outputs of a `gemm_tiled` product's workgroups before its input range is split ([`k_splits`]): 512
/// workgroups of the 64-row tile, a few per compute unit of a large GPU (an H100 has 132), so that a
/// narrow product (the MLP's down projection of a 576-wide model has 5 column tiles) still fills it.
/// Also the floats of the split products' partial-sum buffer (16 MiB): `splits x rows x columns` never
/// exceeds it, whatever the tile.
pub(crate) const SPLIT_TARGET_OUTPUTS: usize = 512 * 64 * 4 * TILED_GROUPS;

/// The fewest inputs a split part sums, and the most parts: past these, the partial sums' traffic and
/// the extra pass cost more than the idle compute units.
const SPLIT_MIN_INPUTS: usize = 256;
const SPLIT_MAX: usize = 8;

/// Parts the input range of a `[rows, k] x [k, n]` product of `tile` is split into: 1 where its tiles
/// alone cover [`SPLIT_TARGET_OUTPUTS`], else as many as bring it near that, each part at least
/// [`SPLIT_MIN_INPUTS`] inputs, at most [`SPLIT_MAX`] parts.
pub(crate) fn k_splits(rows: usize, n: usize, k: usize, tile: GemmTile) -> usize {
    let tiles = rows.div_ceil(tile.rows()) * n.div_ceil(4).div_ceil(tile.groups());
    let target = SPLIT_TARGET_OUTPUTS / (tile.rows() * 4 * tile.groups());
    (target / tiles.max(1)).min(k / SPLIT_MIN_INPUTS).clamp(1, SPLIT_MAX)
}

/// Positions per workgroup of the parallel values pass (`CHUNK` in attention_decode_wg.wgsl).
pub(crate) const VALUES_CHUNK: usize = 256;

/// Scratch floats a decode step needs at `capacity` positions: a score row per head, and with the
/// parallel kernels each head's partial value sums per chunk of positions.
pub(crate) fn scratch_floats(heads: usize, head_dim: usize, capacity: usize, parallel: bool) -> usize {
    heads * capacity + if parallel { heads * capacity.div_ceil(VALUES_CHUNK) * head_dim } else { 0 }
}

/// Invocations per workgroup of every kernel but `gemv` (16), `gemm` (32) and `gemm_tiled` (256).
pub(crate) const WORKGROUP: u32 = 64;

/// Query rows per prefill attention invocation (they share every key and value load).
pub(crate) const PREFILL_ATTENTION_ROWS: usize = 2;

/// The attention sources for heads of `head_dim` (a multiple of 4): `D4` and the unrolled blocks that
/// keep queries and accumulators (one per 4 dimensions and row) in registers.
fn attention_source(kernel: &str, head_dim: usize) -> String {
    let d4 = head_dim / 4;
    let rows = PREFILL_ATTENTION_ROWS;
    let each = |f: &dyn Fn(usize) -> String| (0..d4).map(f).collect::<Vec<_>>().join("\n");
    let mut setup = Vec::new();
    let mut step = Vec::new();
    let mut store = Vec::new();
    for t in 0..rows {
        setup.push(format!(
            "    let r{t} = min(first + {t}u, last);\n    let p{t} = run.pos + r{t};\n    let lo{t} = first_visible(p{t});\n    \
             let qb{t} = (r{t} * op.heads + h) * D4;\n    var m{t} = neg;\n    var l{t} = 0.0;"
        ));
        setup.push(each(&|i| format!("    let q{t}_{i} = q[qb{t} + {i}u] * keep;\n    var a{t}_{i} = vec4<f32>(0.0);")));
        let dot = (0..d4).map(|i| format!("dot(q{t}_{i}, k{i})")).collect::<Vec<_>>().join(" + ");
        step.push(format!(
            "        let seen{t} = j >= lo{t} && j <= p{t};\n        let s{t} = select(neg, ({dot}) * op.scale, seen{t});\n        \
             let n{t} = max(m{t}, s{t});\n        let c{t} = exp(m{t} - n{t});\n        let e{t} = select(0.0, exp(s{t} - n{t}), seen{t});\n        \
             l{t} = l{t} * c{t} + e{t};\n        m{t} = n{t};"
        ));
        step.push(each(&|i| format!("        a{t}_{i} = a{t}_{i} * c{t} + e{t} * v{i};")));
        store.push(format!("    if (first + {t}u <= last) {{\n        let inv{t} = zero / l{t};"));
        store.push(each(&|i| format!("        out[qb{t} + {i}u] = a{t}_{i} * inv{t};")));
        store.push("    }".to_string());
    }
    let dot = (0..d4)
        .map(|i| if i == 0 { "dot(q0, cache_k[kp])".to_string() } else { format!("dot(q{i}, cache_k[kp + {i}u])") })
        .collect::<Vec<_>>();
    format!("{}\n{kernel}", include_str!("shaders/attention.wgsl"))
        .replace("{{D4}}", &d4.to_string())
        .replace("{{ROWS}}", &rows.to_string())
        .replace("{{ROW_SETUP}}", &setup.join("\n"))
        .replace("{{LOAD_KV}}", &each(&|i| format!("        let k{i} = cache_k[kp + {i}u];\n        let v{i} = cache_v[kp + {i}u];")))
        .replace("{{ROW_STEP}}", &step.join("\n"))
        .replace("{{ROW_STORE}}", &store.join("\n"))
        .replace("{{LOAD_Q}}", &each(&|i| format!("    let q{i} = q[qb + {i}u] * keep;")))
        .replace("{{DOT}}", &dot.join(" + "))
}

/// Invocations sharing each query row in the parallel prefill attention (`SPLITS` in
/// attention_prefill_wg.wgsl): 64 rows x 4 = 256 invocations a workgroup, WebGPU's default maximum.
pub(crate) const PREFILL_WG_SPLITS: usize = 4;

/// The parallel prefill attention for heads of `head_dim`: key/value tiles of at most 16 KiB together
/// and the per-row query, accumulators and score unrolled over the head's vec4s; the splits of a row
/// merge through the tile memory, `chunk` accumulators a row at a time.
fn prefill_wg_source(head_dim: usize) -> String {
    let d4 = head_dim / 4;
    let splits = PREFILL_WG_SPLITS;
    let rows = PREFILL_WG_ROWS;
    // The merge needs the two tiles to hold a (max, sum) vec4 per invocation.
    let tile = (512 / d4).clamp(1, 64).max((rows * splits).div_ceil(2 * d4));
    let tile_d4 = tile * d4;
    let each = |f: &dyn Fn(usize) -> String| (0..d4).map(f).collect::<Vec<_>>().join("\n");
    // Keys a block (`KB`): the most, up to 8, that split every split's share of a tile evenly.
    let kb = [8, 4, 2, 1].into_iter().find(|kb| tile.is_multiple_of(splits * kb)).unwrap_or(1);
    let keys = |f: &dyn Fn(usize) -> String| (0..kb).map(f).collect::<Vec<_>>().join("\n");
    let dot = |k: usize| (0..d4).map(|i| format!("dot(q{i}, tile_k[kb{k} + {i}u])")).collect::<Vec<_>>().join(" + ");
    let block_step = [
        keys(&|k| format!("            let j{k} = t0 + b + {k}u * SPLITS;\n            let seen{k} = j{k} >= lo && j{k} <= p;\n            let kb{k} = (b + {k}u * SPLITS) * D4;\n            let s{k} = select(neg, ({}) * op.scale, seen{k});", dot(k))),
        format!("            let mn = max(m, {});", (1..kb).fold("s0".to_string(), |acc, k| format!("max({acc}, s{k})"))),
        "            let c = exp(m - mn);".to_string(),
        keys(&|k| format!("            let e{k} = select(0.0, exp(s{k} - mn), seen{k});")),
        format!("            l = l * c + {};", (0..kb).map(|k| format!("e{k}")).collect::<Vec<_>>().join(" + ")),
        "            m = mn;".to_string(),
        each(&|i| format!("            a{i} = a{i} * c + {};", (0..kb).map(|k| format!("e{k} * tile_v[kb{k} + {i}u]")).collect::<Vec<_>>().join(" + "))),
    ]
    .join("\n");
    // Merging: every split's (max, sum) through the tiles; then, for each chunk of a row's accumulators
    // that fits both tiles (64 rows x `chunk` vec4s), splits 1.. write theirs in turn and split 0 adds.
    let chunk = d4.min(2 * tile_d4 / rows).max(1);
    let mut merge = vec![
        "    part_store(t, vec4<f32>(m, l, 0.0, 0.0));".to_string(),
        "    workgroupBarrier();".to_string(),
        "    var top = neg;".to_string(),
        "    for (var s = 0u; s < SPLITS; s++) {\n        top = max(top, part_load(s * 64u + row).x);\n    }".to_string(),
        "    var total = 0.0;".to_string(),
        "    for (var s = 0u; s < SPLITS; s++) {\n        let ml = part_load(s * 64u + row);\n        total += ml.y * exp(ml.x - top);\n    }"
            .to_string(),
        "    let own = exp(m - top);".to_string(),
        "    l = total;".to_string(),
        each(&|i| format!("    a{i} = a{i} * own;")),
        "    workgroupBarrier();".to_string(),
    ];
    for c0 in (0..d4).step_by(chunk) {
        let range = c0..(c0 + chunk).min(d4);
        let writes = range.clone().map(|i| format!("            part_store({}u * 64u + row, a{i});", i - c0)).collect::<Vec<_>>();
        let adds = range.map(|i| format!("            a{i} += part_load({}u * 64u + row);", i - c0)).collect::<Vec<_>>();
        merge.push(format!(
            "    for (var s = 1u; s < SPLITS; s++) {{\n        if (split == s) {{\n{}\n        }}\n        workgroupBarrier();\n        \
             if (split == 0u) {{\n{}\n        }}\n        workgroupBarrier();\n    }}",
            writes.join("\n"),
            adds.join("\n")
        ));
    }
    // The tile's slots an invocation stages (the last may fall past the tile).
    let wg = rows * splits;
    let slots = tile_d4.div_ceil(wg);
    let slot_guard = |s: usize, body: String| {
        if (s + 1) * wg <= tile_d4 {
            body
        } else {
            format!("if (t + {}u < TILE * D4) {{ {body} }}", s * wg)
        }
    };
    let prefetch = (0..slots)
        .map(|s| {
            let load = format!(
                "let src{s} = min(next + (t + {o}u) / D4, j_end) * stride + kv + (t + {o}u) % D4; pk{s} = cache_k[src{s}]; pv{s} = cache_v[src{s}];",
                o = s * wg
            );
            format!("    {}", slot_guard(s, load))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let declare =
        (0..slots).map(|s| format!("    var pk{s} = vec4<f32>(0.0);\n    var pv{s} = vec4<f32>(0.0);")).collect::<Vec<_>>().join("\n");
    let stage = (0..slots)
        .map(|s| format!("        {}", slot_guard(s, format!("tile_k[t + {o}u] = pk{s}; tile_v[t + {o}u] = pv{s};", o = s * wg))))
        .collect::<Vec<_>>()
        .join("\n");
    format!("{}\n{}", include_str!("shaders/attention.wgsl"), include_str!("shaders/attention_prefill_wg.wgsl"))
        .replacen("{{PREFETCH}}", &format!("{declare}\n{prefetch}"), 1)
        .replace("{{PREFETCH}}", &prefetch.replace("\n    ", "\n        ").replacen("    ", "        ", 1))
        .replace("{{STAGE}}", &stage)
        .replace("{{D4}}", &d4.to_string())
        .replace("{{TILE}}", &tile.to_string())
        .replace("{{TILE_D4}}", &tile_d4.to_string())
        .replace("{{SPLITS}}", &splits.to_string())
        .replace("{{WG}}", &wg.to_string())
        .replace("{{MERGE}}", &merge.join("\n"))
        .replace("{{LOAD_Q}}", &each(&|i| format!("    let q{i} = q[qb + {i}u] * keep;\n    var a{i} = vec4<f32>(0.0);")))
        .replace("{{KB}}", &kb.to_string())
        .replace("{{BLOCK_STEP}}", &block_step)
        .replace("{{STORE}}", &each(&|i| format!("        out[qb + {i}u] = a{i} * inv;")))
}

/// The decode step's attention for heads of `head_dim`: the serial passes, and with `parallel` the
/// workgroup softmax and values (attention_decode_wg.wgsl: 256 invocations a values chunk, `STRIPES`
/// positions apart).
fn decode_source(head_dim: usize, parallel: bool) -> String {
    let mut source = include_str!("shaders/attention_decode.wgsl").to_string();
    if parallel {
        source += &include_str!("shaders/attention_decode_wg.wgsl").replace("{{STRIPES}}", &(1024 / head_dim).to_string());
    }
    attention_source(&source, head_dim)
}

fn layout(device: &wgpu::Device, label: &str, slots: &[Slot]) -> wgpu::BindGroupLayout {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = slots
        .iter()
        .enumerate()
        .map(|(i, s)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match s {
                    Slot::Uniform => wgpu::BufferBindingType::Uniform,
                    Slot::Read => wgpu::BufferBindingType::Storage { read_only: true },
                    Slot::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries })
}

/// `source` after the shared declarations (common.wgsl), its `enable` directives (which WGSL wants
/// before any declaration) first.
pub(crate) fn with_common(source: &str) -> String {
    let body = source.trim_start();
    let mut enables = String::new();
    let mut rest = body;
    while let Some(after) = rest.strip_prefix("enable ") {
        let end = after.find(';').map_or(after.len(), |i| i + 1);
        enables.push_str("enable ");
        enables.push_str(&after[..end]);
        enables.push('\n');
        rest = after[end..].trim_start();
    }
    format!("{enables}{COMMON}\n{rest}")
}

fn pipeline(device: &wgpu::Device, label: &str, source: &str, layout: &wgpu::BindGroupLayout, entry: &str) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(with_common(source).into()),
    });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: Some(&pl),
        module: &module,
        entry_point: Some(entry),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// matmul.wgsl with matmul_coop.wgsl after it, its weights f16 four to a vec4 (the buffer the other
/// kernels read as packed pairs of f16: the same bytes).
pub(crate) fn coop_source() -> String {
    const F16_WEIGHTS: &str =
        "@group(0) @binding(3) var<storage, read> w: array<vec4<f16>>;\nfn wv4(i: u32) -> vec4<f32> {\n    return vec4<f32>(w[i]);\n}";
    format!(
        "enable f16;\nenable wgpu_cooperative_matrix;\n{}\n{}",
        include_str!("shaders/matmul.wgsl").replace("{{WEIGHTS}}", F16_WEIGHTS),
        include_str!("shaders/matmul_coop.wgsl")
    )
}

fn kernel(device: &wgpu::Device, label: &str, source: &str, slots: &[Slot]) -> Kernel {
    let layout = layout(device, label, slots);
    Kernel { pipeline: pipeline(device, label, source, &layout, "main"), layout }
}

impl Kernels {
    /// Compiles every kernel for heads of `head_dim`, turning validation errors (WGSL the platform
    /// rejects) into an error.
    pub async fn build(device: &wgpu::Device, head_dim: usize, set: KernelSet, weights: WeightFormat, gemm_tile: GemmTile) -> Result<Self> {
        use Slot::*;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mm_layout = layout(device, "matmul", &[Uniform, Uniform, Read, Read, Read, ReadWrite, ReadWrite]);
        let mm_source = &include_str!("shaders/matmul.wgsl").replace("{{WEIGHTS}}", weights.matmul_prelude());
        let coop = set == KernelSet::Parallel && gemm_tile == GemmTile::Coop;
        if coop && weights != WeightFormat::F16 {
            return Err(GpuError::Validation(format!("the cooperative-matrix tile reads f16 matrices, not {weights:?}")));
        }
        let gemm_source = if coop { coop_source() } else { mm_source.clone() };
        let embed_source = include_str!("shaders/embed.wgsl").replace("{{TABLE}}", weights.embed_prelude());
        let decode_layout =
            layout(device, "attention_decode", &[Uniform, Uniform, Read, Read, Read, ReadWrite, ReadWrite, Read, ReadWrite]);
        let parallel = set == KernelSet::Parallel && head_dim <= 256;
        let decode_source = decode_source(head_dim, parallel);
        let (softmax, values) = if parallel { ("softmax_wg", "values_split") } else { ("softmax", "values") };
        let kernels = Kernels {
            embed: kernel(device, "embed", &embed_source, &[Uniform, Uniform, Read, Read, ReadWrite]),
            norm: {
                let layout = layout(device, "rmsnorm", &[Uniform, Uniform, Read, Read, ReadWrite]);
                let entry = if set == KernelSet::Parallel { "main_wg" } else { "main" };
                Kernel { pipeline: pipeline(device, "rmsnorm", include_str!("shaders/rmsnorm.wgsl"), &layout, entry), layout }
            },
            gemv: pipeline(device, "gemv", mm_source, &mm_layout, if set == KernelSet::Parallel { "gemv_split" } else { "gemv" }),
            gemv_norm: (set == KernelSet::Parallel).then(|| {
                let layout = layout(device, "gemv_norm", &[Uniform, Uniform, Read, Read, Read, ReadWrite, ReadWrite, Read, Uniform]);
                Kernel { pipeline: pipeline(device, "gemv_norm", mm_source, &layout, "gemv_norm"), layout }
            }),
            gemm_sum: (set == KernelSet::Parallel).then(|| pipeline(device, "gemm_sum", mm_source, &mm_layout, "gemm_sum")),
            gemm: Kernel {
                pipeline: pipeline(
                    device,
                    "gemm",
                    &gemm_source,
                    &mm_layout,
                    if set == KernelSet::Parallel { gemm_tile.entry() } else { "gemm" },
                ),
                layout: mm_layout,
            },
            rope: kernel(
                device,
                "rope",
                include_str!("shaders/rope.wgsl"),
                &[Uniform, Uniform, Read, Read, ReadWrite, ReadWrite, ReadWrite],
            ),
            head_norm: kernel(device, "head_norm", include_str!("shaders/head_norm.wgsl"), &[Uniform, Uniform, ReadWrite, Read, Read]),
            attention_prefill: kernel(
                device,
                "attention_prefill",
                &match set {
                    KernelSet::Serial => attention_source(include_str!("shaders/attention_prefill.wgsl"), head_dim),
                    KernelSet::Parallel => prefill_wg_source(head_dim),
                },
                &[Uniform, Uniform, Read, Read, Read, ReadWrite, Read],
            ),
            attention_scores: pipeline(device, "attention_scores", &decode_source, &decode_layout, "scores"),
            attention_softmax: pipeline(device, "attention_softmax", &decode_source, &decode_layout, softmax),
            attention_values_sum: parallel.then(|| pipeline(device, "attention_values_sum", &decode_source, &decode_layout, "values_sum")),
            attention_values: Kernel {
                pipeline: pipeline(device, "attention_values", &decode_source, &decode_layout, values),
                layout: decode_layout,
            },
            gemm_tile,
            set,
            weights,
        };
        if let Some(e) = scope.pop().await {
            return Err(GpuError::Validation(e.to_string()));
        }
        Ok(kernels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attention_sources_are_valid_wgsl_for_every_head_width() {
        // The prefill's tile, key block and staged slots and the decode's stripes change with the width:
        // widths of real models (64, 80, 96, 128, 256) and of the test models, each parsed and
        // validated as wgpu would.
        for head_dim in [8, 16, 32, 64, 80, 96, 128, 160, 256] {
            for source in [prefill_wg_source(head_dim), decode_source(head_dim, true)] {
                let source = format!("{COMMON}\n{source}");
                let module =
                    naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("head_dim {head_dim}: {}", e.emit_to_string(&source)));
                naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::default())
                    .validate(&module)
                    .unwrap_or_else(|e| panic!("head_dim {head_dim}: {e:?}"));
            }
        }
    }

    #[test]
    fn the_cooperative_matrix_product_is_valid_wgsl_and_spirv() {
        // No adapter here has cooperative matrices (lavapipe, SwiftShader): the source is held to what
        // naga accepts with the capabilities the context requests, and written as the Vulkan backend
        // writes it.
        let source = with_common(&coop_source());
        assert!(source.starts_with("enable f16;\nenable wgpu_cooperative_matrix;\n"), "{}", &source[..80]);
        let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&source)));
        let caps = naga::valid::Capabilities::COOPERATIVE_MATRIX | naga::valid::Capabilities::SHADER_FLOAT16;
        let info =
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps).validate(&module).unwrap_or_else(|e| panic!("{e:?}"));
        // Indices clamped as wgpu's Vulkan backend clamps them (not the conditional loads of ReadZeroSkipWrite).
        let restrict = naga::proc::BoundsCheckPolicy::Restrict;
        let bounds_check_policies =
            naga::proc::BoundsCheckPolicies { index: restrict, buffer: restrict, image_load: restrict, binding_array: restrict };
        let options = naga::back::spv::Options { lang_version: (1, 3), bounds_check_policies, ..Default::default() };
        let pipeline = naga::back::spv::PipelineOptions { shader_stage: naga::ShaderStage::Compute, entry_point: "gemm_coop".into() };
        let words = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline)).unwrap();
        assert!(words.len() > 100);
        // Without the capability the same source is refused: the enable directive is what asks for it.
        assert!(naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::SHADER_FLOAT16)
            .validate(&module)
            .is_err());
        // The other shaders do not start with enable directives and keep common.wgsl first.
        assert!(with_common("fn f() {}").starts_with(COMMON));
    }

    #[test]
    fn products_split_only_where_their_tiles_leave_the_gpu_idle() {
        // SmolLM-135M's down projection at 1,000 rows: 16 x 5 tiles, split in 6 (at most 1536 / 256).
        assert_eq!(k_splits(1000, 576, 1536, GemmTile::Rows64), 6);
        // Its gate/up product has 16 x 24 tiles, but 576 inputs make only two parts of 256.
        assert_eq!(k_splits(1000, 2 * 1536, 576, GemmTile::Rows64), 1);
        // Qwen2.5-0.5B's gate/up at 2,000 rows fills the GPU alone.
        assert_eq!(k_splits(2000, 2 * 4864, 896, GemmTile::Rows64), 1);
        // The 128-row tile has half the workgroups and half the target of the 64-row one (the same
        // outputs): Qwen2.5-0.5B's down projection at 2,000 rows splits in two with either.
        assert_eq!(k_splits(2000, 896, 4864, GemmTile::Rows64), 2);
        assert_eq!(k_splits(2000, 896, 4864, GemmTile::Rows128), 2);
        // Few rows: as many parts as the inputs allow, at most SPLIT_MAX.
        assert_eq!(k_splits(3, 64, 4096, GemmTile::Rows64), SPLIT_MAX);
        assert_eq!(k_splits(3, 64, 300, GemmTile::Rows64), 1);
        // A split product's partial sums always fit their buffer (unsplit ones write none).
        for rows in [2, 63, 64, 65, 999, 2048] {
            for (n, k) in [(576, 1536), (896, 4864), (64, 1000), (4096, 11008), (960, 576)] {
                for tile in [GemmTile::Rows64, GemmTile::Rows128, GemmTile::Coop] {
                    let s = k_splits(rows, n, k, tile);
                    assert!(s == 1 || s * rows * n.div_ceil(4) * 4 <= SPLIT_TARGET_OUTPUTS, "{rows} x {n} in {s} parts ({tile:?})");
                }
            }
        }
    }
}
