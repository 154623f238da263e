//! Host-side weight preparation: reads tensors out of safetensors files (f32, f16 or bf16, converted to
//! f32), checks their shapes against the [`ModelSpec`], and lays them out for the kernels: projection
//! matrices transposed to `[in, out]` with the output width padded to a multiple of 4 (so a `vec4` load
//! covers four outputs), q/k/v fused into one matrix, gate/up interleaved column by column (so the
//! SwiGLU epilogue finds each gate next to its up).

use crate::error::{GpuError, Result};
use headscope_engine::spec::{Activation, NormStyle};
use headscope_engine::ModelSpec;
use safetensors::{Dtype, SafeTensors};

/// The tensors of one checkpoint, spread over one or more safetensors files.
pub(crate) struct Checkpoint<'a> {
    files: Vec<SafeTensors<'a>>,
}

/// A tensor converted to f32, row-major.
pub(crate) struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl<'a> Checkpoint<'a> {
    /// Parses the headers of every file.
    pub fn parse(files: &[&'a [u8]]) -> Result<Self> {
        if files.is_empty() {
            return Err(GpuError::Weights("no safetensors files were given".into()));
        }
        let files = files
            .iter()
            .enumerate()
            .map(|(i, b)| SafeTensors::deserialize(b).map_err(|e| GpuError::Weights(format!("safetensors file #{}: {e}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Checkpoint { files })
    }

    /// Whether some file holds `name`.
    /// The stored type of tensor `name`, if the checkpoint has it.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.files.iter().find_map(|f| f.tensor(name).ok()).map(|t| t.dtype())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.files.iter().any(|f| f.tensor(name).is_ok())
    }

    /// The tensor `name` as f32, checked against `shape`.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let view = self
            .files
            .iter()
            .find_map(|f| f.tensor(name).ok())
            .ok_or_else(|| GpuError::Weights(format!("tensor `{name}` is missing from the checkpoint")))?;
        if view.shape() != shape {
            return Err(GpuError::Weights(format!("tensor `{name}` has shape {:?}, expected {shape:?}", view.shape())));
        }
        let bytes = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
            Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect(),
            other => {
                return Err(GpuError::Weights(format!("tensor `{name}` is {other:?}; the GPU forward reads f32, f16 and bf16 weights")))
            }
        };
        let expected: usize = shape.iter().product();
        if data.len() != expected {
            return Err(GpuError::Weights(format!("tensor `{name}` holds {} values, expected {expected}", data.len())));
        }
        Ok(HostTensor { shape: shape.to_vec(), data })
    }
}

/// `n` rounded up to a multiple of 4.
pub(crate) fn pad4(n: usize) -> usize {
    n.div_ceil(4) * 4
}

/// Linear weights `[out, in]` (stacked when several) as one `[in, pad4(out)]` matrix whose columns are
/// the output rows of `parts` in `order` (the output column `c` is row `order[c]` of the stacked rows).
pub(crate) fn transpose_columns(parts: &[&HostTensor], order: &[usize]) -> Vec<f32> {
    let k = parts[0].shape[1];
    let rows: Vec<&[f32]> = parts.iter().flat_map(|p| p.data.chunks_exact(k)).collect();
    let np = pad4(order.len());
    let mut out = vec![0f32; k * np];
    for (c, &r) in order.iter().enumerate() {
        for (i, &v) in rows[r].iter().enumerate() {
            out[i * np + c] = v;
        }
    }
    out
}

/// Biases (stacked) reordered like [`transpose_columns`] and padded to a multiple of 4.
pub(crate) fn reorder_bias(parts: &[&HostTensor], order: &[usize]) -> Vec<f32> {
    let all: Vec<f32> = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
    let mut out = vec![0f32; pad4(order.len())];
    for (c, &r) in order.iter().enumerate() {
        out[c] = all[r];
    }
    out
}

/// The identity order over `n` rows.
pub(crate) fn straight(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// Gate rows `0..i` and up rows `i..2i` interleaved: gate 0, up 0, gate 1, up 1, ...
pub(crate) fn interleaved(i: usize) -> Vec<usize> {
    (0..i).flat_map(|j| [j, i + j]).collect()
}

/// Refuses what the GPU forward does not implement, naming it.
pub(crate) fn check_supported(spec: &ModelSpec) -> Result<()> {
    let default_scale = (spec.attention_scale * (spec.head_dim as f64).sqrt() - 1.0).abs() < 1e-12;
    let missing: Vec<&str> = [
        (spec.mamba.is_some(), "Mamba layers"),
        (spec.qk_norm && spec.norm_style != NormStyle::Plain, "q/k norms of 1 + weight"),
        (spec.norm_style != NormStyle::Plain, "norms of 1 + weight"),
        (spec.sandwich_norms, "norms around the MLP"),
        (spec.embedding_scale.is_some(), "scaled embeddings"),
        (!default_scale, "a query_pre_attn_scalar scale"),
        (spec.attention_softcap.is_some() || spec.final_logit_softcap.is_some(), "soft-capping"),
        (spec.activation != Activation::Silu, "GeGLU"),
        (spec.fused_projections, "fused qkv/gate_up projections"),
        (spec.rotary_dim != spec.head_dim, "partial rotary embeddings"),
        (!spec.one_rope() || spec.rope_scaling.long_from().is_some(), "per-layer or LongRoPE rotary tables"),
        (spec.weight_prefix != "model", "a multimodal checkpoint's text model"),
    ]
    .into_iter()
    .filter_map(|(needed, what)| needed.then_some(what))
    .collect();
    if !missing.is_empty() {
        return Err(GpuError::Unsupported(format!(
            "`{}` needs {}, which the WebGPU forward does not implement: it runs Llama, Mistral, Qwen2 and Qwen3 models; use the CPU/CUDA path (the native `headscope`) for this family",
            spec.model_type,
            missing.join(", ")
        )));
    }
    if spec.moe.is_some() {
        return Err(GpuError::Unsupported(format!(
            "`{}` is a mixture-of-experts model (Mixtral); the GPU forward runs dense Llama-family models only — use the CPU/CUDA path (headscope-model)",
            spec.model_type
        )));
    }
    if !spec.hidden_size.is_multiple_of(4) || !spec.intermediate_size.is_multiple_of(4) {
        return Err(GpuError::Unsupported(format!(
            "hidden_size {} / intermediate_size {} (the matmul kernels read inputs 4 at a time: both must be multiples of 4)",
            spec.hidden_size, spec.intermediate_size
        )));
    }
    if !spec.head_dim.is_multiple_of(4) || spec.head_dim > 256 {
        return Err(GpuError::Unsupported(format!("head_dim {} (the attention kernel needs a multiple of 4, at most 256)", spec.head_dim)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use headscope_model::testkit::{TinyArch, TinyModel};
    use std::path::Path;

    #[test]
    fn families_the_wgsl_forward_lacks_are_refused_naming_what_they_need() {
        let spec = |arch| ModelSpec::from_config_json(&TinyModel::new(arch).config_json().to_string(), Path::new("config.json")).unwrap();
        for arch in [TinyArch::Llama, TinyArch::Mistral(Some(8)), TinyArch::Qwen2, TinyArch::Qwen3] {
            check_supported(&spec(arch)).unwrap();
        }
        let needs = [
            (TinyArch::Phi3, "fused qkv/gate_up projections, partial rotary embeddings, per-layer or LongRoPE"),
            (TinyArch::Gemma2, "norms of 1 + weight, norms around the MLP, scaled embeddings"),
            (TinyArch::Gemma3, "per-layer or LongRoPE rotary tables"),
            (TinyArch::Jamba, "Mamba layers"),
        ];
        for (arch, what) in needs {
            let err = check_supported(&spec(arch)).unwrap_err().to_string();
            assert!(err.contains(what) && err.contains("CPU/CUDA path"), "{arch:?}: {err}");
        }
    }
}
