//! RMSNorm as each family defines it: Llama's `weight * normed(x)`, or Gemma's `(1 + weight) *
//! normed(x)` computed in f32 and cast back (transformers' Gemma norms do exactly that, so bf16
//! checkpoints round once, at the end, not at `1 + weight`).

use crate::error::Result;
use crate::spec::NormStyle;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

/// One RMSNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// The weight as applied: the checkpoint's for [`NormStyle::Plain`], `1 + weight` in f32 for
    /// [`NormStyle::OffsetByOne`].
    weight: Tensor,
    eps: f64,
    in_f32: bool,
}

impl RmsNorm {
    /// Loads `weight` of `size` under `vb`.
    pub fn load(vb: &VarBuilder, size: usize, eps: f64, style: NormStyle) -> Result<Self> {
        Self::from_weight(vb.get(size, "weight")?, eps, style)
    }

    /// The norm of a checkpoint's `weight`.
    pub fn from_weight(weight: Tensor, eps: f64, style: NormStyle) -> Result<Self> {
        Ok(match style {
            NormStyle::Plain => RmsNorm { weight, eps, in_f32: false },
            NormStyle::OffsetByOne => RmsNorm { weight: (weight.to_dtype(DType::F32)? + 1.0)?, eps, in_f32: true },
        })
    }

    /// The weight as applied (see the field).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Normalises `x` over its last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.in_f32 {
            let y = candle_nn::ops::rms_norm(&x.to_dtype(DType::F32)?.contiguous()?, &self.weight, self.eps as f32)?;
            return Ok(y.to_dtype(x.dtype())?);
        }
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32)?)
    }

    /// [`RmsNorm::forward`] built from ops autograd can differentiate (candle's fused kernel has no
    /// backward): the training node for f32, candle's composed version otherwise.
    pub fn forward_differentiable(&self, x: &Tensor) -> Result<Tensor> {
        let input = if self.in_f32 { x.to_dtype(DType::F32)? } else { x.clone() };
        let y = if input.dtype() == DType::F32 && self.weight.dtype() == DType::F32 {
            crate::train_ops::rms_norm(&input, &self.weight, self.eps)?
        } else {
            candle_nn::ops::rms_norm_slow(&input, &self.weight, self.eps as f32)?
        };
        Ok(y.to_dtype(x.dtype())?)
    }
}
