//! Feed-forward blocks: the gated MLP of the Llama family (SwiGLU; GeGLU for Gemma; Phi-3's fused
//! gate and up projections), and Mixtral's sparse mixture of experts.

use crate::error::Result;
use crate::spec::{Activation, ModelSpec, TensorNames};
use candle_core::{DType, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

/// `down(act(gate(x)) * up(x))`: SwiGLU with SiLU, GeGLU with GELU.
#[derive(Debug, Clone)]
pub struct SwiGlu {
    gate: Linear,
    up: Linear,
    down: Linear,
    activation: Activation,
}

impl SwiGlu {
    /// Loads `gate`, `up`, `down` projections under the given names.
    fn load(spec: &ModelSpec, vb: &VarBuilder, names: [&str; 3], bias: bool) -> Result<Self> {
        let (h, i) = (spec.hidden_size, spec.intermediate_size);
        Ok(SwiGlu {
            gate: candle_nn::linear_b(h, i, bias, vb.pp(names[0]))?,
            up: candle_nn::linear_b(h, i, bias, vb.pp(names[1]))?,
            down: candle_nn::linear_b(i, h, bias, vb.pp(names[2]))?,
            activation: spec.activation,
        })
    }

    /// Loads Phi-3's `gate_up_proj` (gate rows, then up rows: each a view of it) and `down_proj`.
    fn load_fused(spec: &ModelSpec, vb: &VarBuilder, bias: bool) -> Result<Self> {
        let (h, i) = (spec.hidden_size, spec.intermediate_size);
        let fused = candle_nn::linear_b(h, 2 * i, bias, vb.pp("gate_up_proj"))?;
        let part = |start: usize| -> Result<Linear> {
            let b = fused.bias().map(|b| b.narrow(0, start, i)).transpose()?;
            Ok(Linear::new(fused.weight().narrow(0, start, i)?, b))
        };
        Ok(SwiGlu { gate: part(0)?, up: part(i)?, down: candle_nn::linear_b(i, h, bias, vb.pp("down_proj"))?, activation: spec.activation })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = match self.activation {
            Activation::Silu => crate::fused_ops::silu_mul(&self.gate.forward(x)?, &self.up.forward(x)?)?,
            // candle's `gelu` is the tanh approximation (transformers' gelu_pytorch_tanh).
            Activation::GeluTanh => (self.gate.forward(x)?.gelu()? * self.up.forward(x)?)?,
        };
        Ok(self.down.forward(&gated)?)
    }
}

/// Mixtral's and Jamba's router and experts.
#[derive(Debug, Clone)]
pub struct SparseMoe {
    router: Linear,
    experts: Vec<SwiGlu>,
    top_k: usize,
    /// Rescale the chosen experts' probabilities to sum to 1 (Mixtral) or not (Jamba).
    renormalize: bool,
}

impl SparseMoe {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, h) = x.dims3()?;
        let flat = x.reshape((b * t, h))?;
        let probs = candle_nn::ops::softmax_last_dim(&self.router.forward(&flat)?.to_dtype(DType::F32)?)?.to_vec2::<f32>()?;
        // Route on the host: per expert, the rows it serves and their renormalised weights.
        let mut rows = vec![Vec::<u32>::new(); self.experts.len()];
        let mut weights = vec![Vec::<f32>::new(); self.experts.len()];
        for (r, p) in probs.iter().enumerate() {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let chosen = &order[..self.top_k];
            let total: f32 = if self.renormalize { chosen.iter().map(|&e| p[e]).sum() } else { 1.0 };
            for &e in chosen {
                rows[e].push(r as u32);
                weights[e].push(p[e] / total);
            }
        }
        let mut out = flat.zeros_like()?;
        for (e, expert) in self.experts.iter().enumerate() {
            if rows[e].is_empty() {
                continue;
            }
            let idx = Tensor::new(rows[e].as_slice(), x.device())?;
            let w = Tensor::new(weights[e].as_slice(), x.device())?.to_dtype(x.dtype())?.unsqueeze(1)?;
            let y = expert.forward(&flat.index_select(&idx, 0)?)?.broadcast_mul(&w)?;
            out = out.index_add(&idx, &y, 0)?;
        }
        Ok(out.reshape((b, t, h))?)
    }
}

/// A layer's feed-forward block.
#[derive(Debug, Clone)]
pub enum FeedForward {
    /// Dense SwiGLU (`mlp.{gate,up,down}_proj`).
    Dense(SwiGlu),
    /// Mixture of experts (`block_sparse_moe.{gate, experts.N.w1/w3/w2}`).
    Moe(SparseMoe),
}

impl FeedForward {
    /// Loads the block of layer `layer` (`vb` at `model.layers.N`).
    pub fn new(spec: &ModelSpec, layer: usize, vb: &VarBuilder) -> Result<Self> {
        let dense_names = ["gate_proj", "up_proj", "down_proj"];
        let (block, router, expert_names) = match spec.tensor_names {
            TensorNames::Llama => ("block_sparse_moe", "gate", ["w1", "w3", "w2"]),
            TensorNames::Jamba => ("feed_forward", "router", dense_names),
        };
        match &spec.moe {
            Some(moe) if moe.layers.get(layer).copied().unwrap_or(true) => {
                let vb = vb.pp(block);
                let router = candle_nn::linear_no_bias(spec.hidden_size, moe.experts, vb.pp(router))?;
                let experts = (0..moe.experts)
                    .map(|e| SwiGlu::load(spec, &vb.pp("experts").pp(e), expert_names, false))
                    .collect::<Result<Vec<_>>>()?;
                Ok(FeedForward::Moe(SparseMoe { router, experts, top_k: moe.experts_per_token, renormalize: moe.renormalize }))
            }
            _ if spec.tensor_names == TensorNames::Jamba => {
                Ok(FeedForward::Dense(SwiGlu::load(spec, &vb.pp("feed_forward"), dense_names, spec.mlp_bias)?))
            }
            _ if spec.fused_projections => Ok(FeedForward::Dense(SwiGlu::load_fused(spec, &vb.pp("mlp"), spec.mlp_bias)?)),
            _ => Ok(FeedForward::Dense(SwiGlu::load(spec, &vb.pp("mlp"), dense_names, spec.mlp_bias)?)),
        }
    }

    /// Applies the block to `[batch, seq, hidden]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FeedForward::Dense(m) => m.forward(x),
            FeedForward::Moe(m) => m.forward(x),
        }
    }
}
