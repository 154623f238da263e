//! Rotary position embeddings (the non-interleaved "rotate half" form of Hugging Face Llama), with the
//! scalings of [`crate::spec::RopeScaling`]. Tables are built once for the run's capacity.

use crate::error::Result;
use crate::spec::ModelSpec;
use candle_core::{DType, Device, Tensor};
pub use headscope_engine::rope::inverse_frequencies;

/// cos/sin tables for positions `0..capacity`, in the model's dtype.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    inv_freq: Vec<f64>,
}

impl Rope {
    /// Tables for `capacity` positions.
    pub fn new(spec: &ModelSpec, capacity: usize, dtype: DType, device: &Device) -> Result<Self> {
        let inv_freq = inverse_frequencies(spec);
        let (cos, sin) = Self::tables(&inv_freq, capacity, dtype, device)?;
        Ok(Rope { cos, sin, inv_freq })
    }

    fn tables(inv_freq: &[f64], capacity: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
        // Never an empty table: candle launches its CUDA cast kernel even for zero elements (a grid of
        // zero blocks, CUDA_ERROR_INVALID_VALUE), and `Transformer::new` starts with capacity 0, so a
        // bf16/f16 model failed to load on CUDA while f32 (no cast) worked.
        let capacity = capacity.max(1);
        let half = inv_freq.len();
        let mut angles = Vec::with_capacity(capacity * half);
        for p in 0..capacity {
            angles.extend(inv_freq.iter().map(|f| (p as f64 * f) as f32));
        }
        let angles = Tensor::from_vec(angles, (capacity, half), device)?;
        Ok((angles.cos()?.to_dtype(dtype)?, angles.sin()?.to_dtype(dtype)?))
    }

    /// Positions the tables cover.
    pub fn capacity(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Grows the tables to at least `capacity` positions.
    pub fn ensure(&mut self, capacity: usize) -> Result<()> {
        if capacity > self.capacity() {
            let (cos, sin) = Self::tables(&self.inv_freq, capacity, self.cos.dtype(), self.cos.device())?;
            self.cos = cos;
            self.sin = sin;
        }
        Ok(())
    }

    /// Rotates `x` (`[batch, heads, seq, head_dim]`) whose first position is `pos`; `differentiable`
    /// picks a version autograd can follow (candle's fused kernel has no backward): the training node
    /// for f32, candle's composed version otherwise.
    pub fn apply(&self, x: &Tensor, pos: usize, differentiable: bool) -> Result<Tensor> {
        let (cos, sin) = self.rows(pos, x.dims()[2])?;
        if differentiable && x.dtype() == candle_core::DType::F32 {
            crate::train_ops::rope(x, &cos, &sin)
        } else if differentiable {
            Ok(candle_nn::rotary_emb::rope_slow(x, &cos, &sin)?)
        } else {
            Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
        }
    }

    /// Rotates token-major `x` (`[batch, seq, heads, head_dim]`) whose first position is `pos`: the
    /// layout the projections produce, so no transpose is needed first. Inference only (no backward).
    pub fn apply_token_major(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let (cos, sin) = self.rows(pos, x.dims()[1])?;
        Ok(candle_nn::rotary_emb::rope_thd(&x.contiguous()?, &cos, &sin)?)
    }

    /// The cos and sin rows of positions `pos..pos + seq`.
    fn rows(&self, pos: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        Ok((self.cos.narrow(0, pos, seq)?, self.sin.narrow(0, pos, seq)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn tables_are_never_empty_so_no_zero_element_cast_reaches_the_device() {
        let config = r#"{"model_type":"llama","vocab_size":16,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2}"#;
        let spec = ModelSpec::from_config_json(config, Path::new("config.json")).unwrap();
        let mut rope = Rope::new(&spec, 0, DType::BF16, &Device::Cpu).unwrap();
        assert_eq!(rope.capacity(), 1);
        assert_eq!(rope.cos.dtype(), DType::BF16);
        rope.ensure(5).unwrap();
        assert_eq!(rope.capacity(), 5);
        // Position 0 rotates by nothing.
        assert_eq!(rope.cos.get(0).unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 2]);
    }
}
