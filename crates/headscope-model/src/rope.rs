//! Rotary position embeddings (the non-interleaved "rotate half" form of Hugging Face Llama), with the
//! scalings of [`crate::spec::RopeScaling`]. Tables are built once for the run's capacity.

use crate::error::Result;
use crate::spec::{ModelSpec, RopeSpec};
use candle_core::{DType, Device, Tensor};
pub use headscope_engine::rope::inverse_frequencies;
use headscope_engine::rope::{attention_factor, inverse_frequencies_of};

/// cos/sin tables for positions `0..capacity`, in the model's dtype, of one rotary embedding: the
/// model's, or one of a group of its layers (Gemma-3's sliding layers rotate with their own base).
/// With LongRoPE it holds the short and the long factors' tables and rotates with the set that
/// [`Rope::select`] picked for the current call.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    inv_freq: Vec<f64>,
    /// LongRoPE's long-factor tables and inverse frequencies, and the length past which they apply.
    long: Option<LongTables>,
    /// Whether the current call rotates with the long tables.
    long_active: bool,
    /// cos and sin are multiplied by this (LongRoPE's attention factor).
    factor: f64,
    /// The rotated width (the rest of each head passes through).
    rotary_dim: usize,
    head_dim: usize,
}

#[derive(Debug, Clone)]
struct LongTables {
    cos: Tensor,
    sin: Tensor,
    inv_freq: Vec<f64>,
    from: usize,
}

impl Rope {
    /// Tables of the model's (global) rotary embedding for `capacity` positions.
    pub fn new(spec: &ModelSpec, capacity: usize, dtype: DType, device: &Device) -> Result<Self> {
        Self::of(&spec.global_rope(), spec.rotary_dim, spec.head_dim, capacity, dtype, device)
    }

    /// Tables of `rope` rotating the first `rotary_dim` of `head_dim` channels.
    pub fn of(rope: &RopeSpec, rotary_dim: usize, head_dim: usize, capacity: usize, dtype: DType, device: &Device) -> Result<Self> {
        let factor = attention_factor(rope);
        // A model that rotates nothing (Jamba's attention) still gets one-column tables, never used: no
        // zero-element tensor reaches the device (see `tables`).
        let inv_freq = if rotary_dim == 0 { vec![0.0] } else { inverse_frequencies_of(rope, rotary_dim, false) };
        let (cos, sin) = Self::tables(&inv_freq, factor, capacity, dtype, device)?;
        let long = match rope.scaling.long_from() {
            Some(from) => {
                let inv_freq = inverse_frequencies_of(rope, rotary_dim, true);
                let (cos, sin) = Self::tables(&inv_freq, factor, capacity, dtype, device)?;
                Some(LongTables { cos, sin, inv_freq, from })
            }
            None => None,
        };
        Ok(Rope { cos, sin, inv_freq, long, long_active: false, factor, rotary_dim, head_dim })
    }

    fn tables(inv_freq: &[f64], factor: f64, capacity: usize, dtype: DType, device: &Device) -> Result<(Tensor, Tensor)> {
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
        let (mut cos, mut sin) = (angles.cos()?, angles.sin()?);
        if factor != 1.0 {
            // transformers multiplies in f32, before the cast to the model's dtype.
            cos = (cos * factor)?;
            sin = (sin * factor)?;
        }
        Ok((cos.to_dtype(dtype)?, sin.to_dtype(dtype)?))
    }

    /// Positions the tables cover.
    pub fn capacity(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Grows the tables to at least `capacity` positions.
    pub fn ensure(&mut self, capacity: usize) -> Result<()> {
        if capacity > self.capacity() {
            let (dtype, device) = (self.cos.dtype(), self.cos.device().clone());
            let (cos, sin) = Self::tables(&self.inv_freq, self.factor, capacity, dtype, &device)?;
            self.cos = cos;
            self.sin = sin;
            if let Some(long) = &mut self.long {
                let (cos, sin) = Self::tables(&long.inv_freq, self.factor, capacity, dtype, &device)?;
                long.cos = cos;
                long.sin = sin;
            }
        }
        Ok(())
    }

    /// Whether a call whose longest sequence is `length` tokens rotates with LongRoPE's long factors
    /// (past the pre-training length, as transformers decides per forward call).
    pub fn long_for(&self, length: usize) -> bool {
        self.long.as_ref().is_some_and(|l| length > l.from)
    }

    /// Picks the tables for a call whose longest sequence is `length` tokens.
    pub fn select(&mut self, length: usize) {
        self.long_active = self.long_for(length);
    }

    /// Rotates `x` (`[batch, heads, seq, head_dim]`) whose first position is `pos`; `differentiable`
    /// picks a version autograd can follow (candle's fused kernel has no backward): the training node
    /// for f32, candle's composed version otherwise.
    pub fn apply(&self, x: &Tensor, pos: usize, differentiable: bool) -> Result<Tensor> {
        let (cos, sin) = self.rows(pos, x.dims()[2])?;
        self.partial(x, |x| {
            if differentiable && x.dtype() == candle_core::DType::F32 {
                crate::train_ops::rope(x, &cos, &sin)
            } else if differentiable {
                Ok(candle_nn::rotary_emb::rope_slow(x, &cos, &sin)?)
            } else {
                Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)?)
            }
        })
    }

    /// Rotates token-major `x` (`[batch, seq, heads, head_dim]`) whose first position is `pos`: the
    /// layout the projections produce, so no transpose is needed first. Inference only (no backward).
    pub fn apply_token_major(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let (cos, sin) = self.rows(pos, x.dims()[1])?;
        self.partial(x, |x| Ok(candle_nn::rotary_emb::rope_thd(&x.contiguous()?, &cos, &sin)?))
    }

    /// `rotate` applied to the first `rotary_dim` channels of `x`'s last dimension, the rest passed
    /// through (all of it rotated when the whole head is).
    fn partial(&self, x: &Tensor, rotate: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        if self.rotary_dim == self.head_dim {
            return rotate(x);
        }
        if self.rotary_dim == 0 {
            return Ok(x.contiguous()?);
        }
        let last = x.rank() - 1;
        let rotated = rotate(&x.narrow(last, 0, self.rotary_dim)?.contiguous()?)?;
        let kept = x.narrow(last, self.rotary_dim, self.head_dim - self.rotary_dim)?;
        Ok(Tensor::cat(&[&rotated, &kept.contiguous()?], last)?.contiguous()?)
    }

    /// The cos and sin rows of positions `pos..pos + seq`.
    fn rows(&self, pos: usize, seq: usize) -> Result<(Tensor, Tensor)> {
        let (cos, sin) = match (&self.long, self.long_active) {
            (Some(long), true) => (&long.cos, &long.sin),
            _ => (&self.cos, &self.sin),
        };
        Ok((cos.narrow(0, pos, seq)?, sin.narrow(0, pos, seq)?))
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
