//! Causal self-attention for training, as one autograd node.
//!
//! Built from candle's elementary ops, a masked softmax and its gradient are a dozen full passes over
//! the f32 `t x t` score matrix of every head, and candle's backward adds two more per node (a zeroed
//! gradient, then a sum into it); at the lab model's 4096-token rows that was most of a training step.
//! Here the forward is two matrix products around one fused causal softmax, computed on detached
//! tensors, and the node's backward is the textbook one: four matrix products around one fused
//! softmax gradient. Autograd sees only `q`, `k`, `v` and the output.
//!
//! The fused softmax runs as a CUDA kernel (`kernels/causal_softmax.cu`) on the GPU and as a loop on
//! the CPU; both compute exactly what `softmax(q k^T / sqrt(d) + causal mask) v` does.

use crate::error::{ModelError, Result};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor};

/// Causal attention of `q` (`[b, heads, t, d]`) over `k` and `v` (`[b, kv_heads, t, d]`, query head `h`
/// reading KV head `h / (heads / kv_heads)`), all f32, with an optional sliding `window` (keys at most
/// `window - 1` positions back). Returns `[b, heads, t, d]`; differentiable in `q`, `k` and `v`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> Result<Tensor> {
    let (b, heads, t, d) = q.dims4()?;
    let (kb, kv_heads, kt, kd) = k.dims4()?;
    if (kb, kt, kd) != (b, t, d) || v.dims() != k.dims() || kv_heads == 0 || heads % kv_heads != 0 {
        return Err(ModelError::Invalid(format!(
            "causal attention: q {:?}, k {:?}, v {:?} do not fit together",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    if [q, k, v].iter().any(|x| x.dtype() != DType::F32) {
        return Err(ModelError::Invalid("causal attention for training takes f32 tensors".into()));
    }
    let rows = Rows { t, window: window.unwrap_or(0), scale: 1.0 / (d as f32).sqrt() };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    // Grouped: the queries of one KV head stacked as rows, as in `Attention::attend`.
    let qg = q.detach().reshape((b, kv_heads, heads / kv_heads * t, d))?;
    let scores = qg.matmul(&k.detach().t()?)?;
    let weights = scores.apply_op1_no_bwd(&CausalSoftmax(rows))?;
    let out = weights.matmul(&v.detach())?.reshape((b, heads, t, d))?;
    Ok(q.apply_op3(&k, &v, AttentionNode { rows, weights, out })?)
}

/// What a row of the score matrix is: query `row % t` of a `t`-token sequence, softmax scale, window.
#[derive(Debug, Clone, Copy)]
struct Rows {
    t: usize,
    /// 0: none.
    window: usize,
    scale: f32,
}

impl Rows {
    /// The visible keys of row `row`.
    fn visible(&self, row: usize) -> std::ops::RangeInclusive<usize> {
        let i = row % self.t;
        let first = if self.window > 0 { (i + 1).saturating_sub(self.window) } else { 0 };
        first..=i
    }
}

/// The autograd node: its forward hands out the output computed in [`causal_attention`], its
/// backward computes the gradients of `q`, `k` and `v` from the saved weights.
struct AttentionNode {
    rows: Rows,
    /// `[b, kv_heads, group * t, t]`.
    weights: Tensor,
    /// `[b, heads, t, d]`.
    out: Tensor,
}

impl CustomOp3 for AttentionNode {
    fn name(&self) -> &'static str {
        "causal-attention"
    }

    crate::train_ops::hand_out_forward!(out; q, k, v);

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad_out: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, heads, t, d) = q.dims4()?;
        let kv_heads = k.dims()[1];
        let grouped = (b, kv_heads, heads / kv_heads * t, d);
        let qg = q.reshape(grouped)?;
        let grad_out = grad_out.contiguous()?.reshape(grouped)?;
        let grad_weights = grad_out.matmul(&v.t()?)?;
        let grad_scores = self.weights.apply_op2_no_bwd(&grad_weights, &CausalSoftmaxGrad(self.rows))?;
        let grad_q = grad_scores.matmul(k)?.reshape((b, heads, t, d))?;
        let grad_k = grad_scores.t()?.matmul(&qg)?;
        let grad_v = self.weights.t()?.matmul(&grad_out)?;
        Ok((Some(grad_q), Some(grad_k), Some(grad_v)))
    }
}

/// `softmax(scale * scores)` over each row's visible keys, 0 on hidden ones; f32 rows of `t`.
struct CausalSoftmax(Rows);

/// The scores' gradient from the weights `y` and their gradient `dy`: `scale * y * (dy - sum(y * dy))`.
struct CausalSoftmaxGrad(Rows);

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let scores = crate::train_ops::f32_rows(s, l, self.name())?;
        let Rows { t, scale, .. } = self.0;
        let mut out = vec![0f32; scores.len()];
        for (row, (x, y)) in scores.chunks_exact(t).zip(out.chunks_exact_mut(t)).enumerate() {
            let visible = self.0.visible(row);
            let max = x[visible.clone()].iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for j in visible.clone() {
                y[j] = (scale * (x[j] - max)).exp();
                sum += y[j];
            }
            for j in visible {
                y[j] /= sum;
            }
        }
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &candle_core::CudaStorage, l: &Layout) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::launch("causal_softmax_forward", self.0, &[(s, l)])
    }
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "causal-softmax-grad"
    }

    fn cpu_fwd(&self, ys: &CpuStorage, yl: &Layout, gs: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, dy) = (crate::train_ops::f32_rows(ys, yl, self.name())?, crate::train_ops::f32_rows(gs, gl, self.name())?);
        if y.len() != dy.len() {
            bail!("{}: weights {:?}, gradient {:?}", self.name(), yl.dims(), gl.dims());
        }
        let Rows { t, scale, .. } = self.0;
        let mut out = vec![0f32; y.len()];
        for (row, ((w, g), o)) in y.chunks_exact(t).zip(dy.chunks_exact(t)).zip(out.chunks_exact_mut(t)).enumerate() {
            let visible = self.0.visible(row);
            let dot: f32 = visible.clone().map(|j| w[j] * g[j]).sum();
            for j in visible {
                o[j] = scale * w[j] * (g[j] - dot);
            }
        }
        Ok((CpuStorage::F32(out), yl.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ys: &candle_core::CudaStorage,
        yl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        if yl.dims() != gl.dims() {
            bail!("{}: weights {:?}, gradient {:?}", self.name(), yl.dims(), gl.dims());
        }
        cuda::launch("causal_softmax_backward", self.0, &[(ys, yl), (gs, gl)])
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::Rows;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{bail, CudaStorage, Layout, Shape};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/causal_softmax.ptx"));
    /// `THREADS` in the kernel file.
    const THREADS: u32 = 256;

    /// Runs `kernel` with a block per row over the f32 `inputs` (contiguous, all of one shape) and a
    /// fresh output of that shape.
    pub fn launch(kernel: &str, rows: Rows, inputs: &[(&CudaStorage, &Layout)]) -> candle_core::Result<(CudaStorage, Shape)> {
        let shape = inputs[0].1.shape().clone();
        let n = shape.elem_count();
        if inputs.iter().any(|(_, l)| !l.is_contiguous()) || !n.is_multiple_of(rows.t) {
            bail!("{kernel}: contiguous f32 rows of {} expected", rows.t);
        }
        let dev = inputs[0].0.device().clone();
        let func = dev.get_or_load_custom_func(kernel, "headscope_causal_softmax", PTX)?;
        let slices =
            inputs.iter().map(|(s, l)| Ok(s.as_cuda_slice::<f32>()?.slice(l.start_offset()..))).collect::<candle_core::Result<Vec<_>>>()?;
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<f32>(n)? };
        let mut builder = func.builder();
        for s in &slices {
            builder.arg(s);
        }
        builder.arg(&out);
        candle_core::builder_arg!(builder, rows.t as i32, rows.window.min(i32::MAX as usize) as i32, rows.scale);
        let cfg = LaunchConfig { grid_dim: ((n / rows.t) as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: arguments match the kernel's signature (inputs, output, t, window, scale).
        unsafe { builder.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    /// The same attention from candle's elementary ops, as `Attention::attend` builds it.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> Tensor {
        let (b, heads, t, d) = q.dims4().unwrap();
        let kv = k.dims()[1];
        let qg = q.reshape((b, kv, heads / kv * t, d)).unwrap();
        let scores = (qg.matmul(&k.t().unwrap()).unwrap() * (1.0 / (d as f64).sqrt())).unwrap();
        let mask: Vec<f32> = (0..t * t)
            .map(|n| {
                let (i, j) = (n / t, n % t);
                let visible = j <= i && window.is_none_or(|w| i - j < w);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), q.device()).unwrap();
        let scores = scores.reshape((b, kv, heads / kv, t, t)).unwrap().broadcast_add(&mask).unwrap();
        let weights = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
        weights.reshape((b, kv, heads / kv * t, t)).unwrap().matmul(v).unwrap().reshape((b, heads, t, d)).unwrap()
    }

    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn output_and_gradients_match_the_elementary_ops() {
        let dev = Device::Cpu;
        for (heads, kv_heads, window) in [(4, 2, None), (2, 2, Some(3)), (6, 1, None)] {
            let (b, t, d) = (2, 7, 8);
            let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, heads, t, d), &dev).unwrap()).unwrap();
            let k = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, kv_heads, t, d), &dev).unwrap()).unwrap();
            let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, (b, kv_heads, t, d), &dev).unwrap()).unwrap();
            // A loss that weighs every output element differently, so every gradient entry matters.
            let weights = Tensor::randn(0f32, 1.0, (b, heads, t, d), &dev).unwrap();
            let fused = causal_attention(&q, &k, &v, window).unwrap();
            let plain = reference(&q, &k, &v, window);
            assert!(max_difference(&fused, &plain) < 1e-5, "outputs differ by {}", max_difference(&fused, &plain));
            let fused_grads = (fused * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            let plain_grads = (plain * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
                let (f, p) = (fused_grads.get(x).unwrap(), plain_grads.get(x).unwrap());
                let diff = max_difference(f, p);
                assert!(diff < 1e-4, "heads {heads}/{kv_heads}, window {window:?}: gradient of {name} differs by {diff}");
                assert!(p.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.1, "{name} has a gradient");
            }
        }
    }

    #[test]
    fn rejects_what_it_cannot_compute() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 3, 4, 8), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 4, 8), DType::F32, &dev).unwrap();
        let e = causal_attention(&q, &k, &k, None).unwrap_err().to_string();
        assert!(e.contains("do not fit"), "{e}");
        let q = Tensor::zeros((1, 2, 4, 8), DType::BF16, &dev).unwrap();
        let k = Tensor::zeros((1, 2, 4, 8), DType::BF16, &dev).unwrap();
        let e = causal_attention(&q, &k, &k, None).unwrap_err().to_string();
        assert!(e.contains("f32"), "{e}");
    }
}
