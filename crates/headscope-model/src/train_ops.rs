//! Autograd nodes and a fused optimiser update for training, each replacing a chain of candle's
//! elementary ops.
//!
//! A training step of the lab model (6.6 M parameters) is bound by kernel launches, not arithmetic:
//! candle's backward adds two launches per edge of the graph (a zeroed gradient, then a sum into it),
//! and RMSNorm, RoPE, the log-softmax loss and AdamW each took dozens. Here:
//! - [`rms_norm`] and [`rope`] run candle's fused inference kernels forward, on detached tensors, and
//!   are one node each whose backward is a few tensor ops (RoPE's is RoPE by `-sin`);
//! - [`cross_entropy`] computes each row's log-sum-exp and negative log-likelihood in one kernel and
//!   its gradient in another, instead of a dozen passes over the `[tokens, vocab]` logits;
//! - [`adamw_update`] updates the moments and the weights of a parameter in two launches, not a dozen.
//!
//! Every op also runs on the CPU (loops), where the tests compare it with the elementary-op version.

use crate::error::{ModelError, Result};
use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, InplaceOp2, Layout, Shape, Storage, Tensor, D};

/// A copy of `t`'s storage, for a node whose forward hands out a result computed before it.
pub(crate) fn stored_copy(t: &Tensor) -> candle_core::Result<(Storage, Shape)> {
    let (storage, layout) = t.storage_and_layout();
    let copy = match &*storage {
        Storage::Cpu(s) => Storage::Cpu(s.try_clone(layout)?),
        Storage::Cuda(s) => Storage::Cuda(s.try_clone(layout)?),
        Storage::Metal(s) => Storage::Metal(s.try_clone(layout)?),
    };
    Ok((copy, t.shape().clone()))
}

/// Implements a node's `cpu_fwd` and `cuda_fwd` as handing out the stored tensor `self.$field`
/// (computed before the node was built), ignoring the inputs named `$arg`.
macro_rules! hand_out_forward {
    ($field:ident; $($arg:ident),*) => {
        fn cpu_fwd(
            &self,
            $($arg: &candle_core::CpuStorage, _: &candle_core::Layout),*
        ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
            $(let _ = $arg;)*
            match $crate::train_ops::stored_copy(&self.$field)? {
                (candle_core::Storage::Cpu(s), shape) => Ok((s, shape)),
                _ => candle_core::bail!("{}: result on another device than the inputs", self.name()),
            }
        }

        #[cfg(feature = "cuda")]
        fn cuda_fwd(
            &self,
            $($arg: &candle_core::CudaStorage, _: &candle_core::Layout),*
        ) -> candle_core::Result<(candle_core::CudaStorage, candle_core::Shape)> {
            $(let _ = $arg;)*
            match $crate::train_ops::stored_copy(&self.$field)? {
                (candle_core::Storage::Cuda(s), shape) => Ok((s, shape)),
                _ => candle_core::bail!("{}: result on another device than the inputs", self.name()),
            }
        }
    };
}
pub(crate) use hand_out_forward;

fn require_f32(what: &str, tensors: &[&Tensor]) -> Result<()> {
    match tensors.iter().find(|t| t.dtype() != DType::F32) {
        Some(t) => Err(ModelError::Invalid(format!("{what} for training takes f32 tensors, not {:?}", t.dtype()))),
        None => Ok(()),
    }
}

/// RMSNorm of `x` (`[..., hidden]`) scaled by `weight` (`[hidden]`), f32, differentiable in both.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    require_f32("rms_norm", &[x, weight])?;
    let x = x.contiguous()?;
    let out = candle_nn::ops::rms_norm(&x.detach(), &weight.detach(), eps as f32)?;
    Ok(x.apply_op2(weight, RmsNormNode { eps, out })?)
}

struct RmsNormNode {
    eps: f64,
    out: Tensor,
}

impl CustomOp2 for RmsNormNode {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    hand_out_forward!(out; x, weight);

    fn bwd(&self, x: &Tensor, weight: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // y = w * x * r with r = 1 / sqrt(mean(x^2) + eps):
        // dx = r * (g w - x_hat * mean(g w x_hat)), dw = sum over rows of g x_hat.
        let (x, weight) = (x.detach(), weight.detach());
        let hidden = x.dim(D::Minus1)?;
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        let x_hat = x.broadcast_mul(&r)?;
        let gw = grad.broadcast_mul(&weight)?;
        let dot = (&gw * &x_hat)?.mean_keepdim(D::Minus1)?;
        let grad_x = (gw - x_hat.broadcast_mul(&dot)?)?.broadcast_mul(&r)?;
        let grad_weight = (grad * x_hat)?.reshape(((), hidden))?.sum(0)?;
        Ok((Some(grad_x), Some(grad_weight)))
    }
}

/// Rotary embedding of `x` (`[batch, heads, seq, head_dim]`, f32) by the `cos` and `sin` tables of its
/// positions (`[seq, head_dim / 2]`, the halves layout of Llama), differentiable in `x`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    require_f32("rope", &[x, cos, sin])?;
    let (x, cos, sin) = (x.contiguous()?, cos.contiguous()?, sin.contiguous()?);
    let out = candle_nn::rotary_emb::rope(&x.detach(), &cos, &sin)?;
    Ok(x.apply_op1(RopeNode { cos, sin, out })?)
}

struct RopeNode {
    cos: Tensor,
    sin: Tensor,
    out: Tensor,
}

impl CustomOp1 for RopeNode {
    fn name(&self) -> &'static str {
        "rope"
    }

    hand_out_forward!(out; x);

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // A rotation's transpose is the rotation by the opposite angle.
        Ok(Some(candle_nn::rotary_emb::rope(&grad.contiguous()?, &self.cos, &self.sin.neg()?)?))
    }
}

/// The negative log-likelihood of each row's target: `logsumexp(logits[i]) - logits[i, targets[i]]` for
/// `logits` `[rows, vocab]` (f32) and `targets` `[rows]` (u32), differentiable in `logits`. A target
/// outside the vocabulary is an error on the CPU and gives NaN on the GPU (which checks nothing on the
/// host, to keep the step asynchronous).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    require_f32("cross_entropy", &[logits])?;
    let (rows, _) = logits.dims2()?;
    if targets.dims() != [rows] || targets.dtype() != DType::U32 {
        return Err(ModelError::Invalid(format!(
            "cross_entropy: {rows} rows of logits need {rows} u32 targets, got {:?} {:?}",
            targets.dims(),
            targets.dtype()
        )));
    }
    let logits = logits.contiguous()?;
    let targets = targets.contiguous()?;
    let lse_nll = logits.detach().apply_op2_no_bwd(&targets, &CrossEntropyRows)?;
    let lse = lse_nll.narrow(1, 0, 1)?.squeeze(1)?;
    let nll = lse_nll.narrow(1, 1, 1)?.squeeze(1)?.contiguous()?;
    Ok(logits.apply_op1(CrossEntropyNode { targets, lse, nll })?)
}

struct CrossEntropyNode {
    targets: Tensor,
    /// `[rows]`: each row's log-sum-exp.
    lse: Tensor,
    nll: Tensor,
}

impl CustomOp1 for CrossEntropyNode {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    hand_out_forward!(nll; logits);

    fn bwd(&self, logits: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let lse_and_grad = Tensor::stack(&[&self.lse, grad], 1)?;
        Ok(Some(logits.detach().apply_op3_no_bwd(&self.targets, &lse_and_grad, &CrossEntropyGrad)?))
    }
}

/// Per row: `(logsumexp, logsumexp - logit of the target)`, `[rows, 2]`.
struct CrossEntropyRows;

/// From logits, targets and `(logsumexp, gradient)` per row: the logits' gradient.
struct CrossEntropyGrad;

fn contiguous<'a, T>(slice: &'a [T], l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&slice[a..b]),
        None => bail!("{what}: contiguous input expected"),
    }
}

/// The contiguous f32 values of a CPU tensor (`what` names the op in the error).
pub(crate) fn f32_rows<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        CpuStorage::F32(v) => contiguous(v, l, what),
        _ => bail!("{what}: f32 input expected"),
    }
}

fn u32_ids<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [u32]> {
    match s {
        CpuStorage::U32(v) => contiguous(v, l, what),
        _ => bail!("{what}: u32 targets expected"),
    }
}

fn checked_target(target: u32, vocab: usize, what: &str) -> candle_core::Result<usize> {
    if target as usize >= vocab {
        bail!("{what}: target {target} outside the vocabulary of {vocab}")
    }
    Ok(target as usize)
}

impl CustomOp2 for CrossEntropyRows {
    fn name(&self) -> &'static str {
        "cross-entropy-rows"
    }

    fn cpu_fwd(&self, ls: &CpuStorage, ll: &Layout, ts: &CpuStorage, tl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (logits, targets) = (f32_rows(ls, ll, self.name())?, u32_ids(ts, tl, self.name())?);
        let vocab = ll.dims()[1];
        let mut out = Vec::with_capacity(2 * targets.len());
        for (x, &target) in logits.chunks_exact(vocab).zip(targets) {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
            out.extend([lse, lse - x[checked_target(target, vocab, self.name())?]]);
        }
        Ok((CpuStorage::F32(out), Shape::from((targets.len(), 2))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ls: &candle_core::CudaStorage,
        ll: &Layout,
        ts: &candle_core::CudaStorage,
        tl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::cross_entropy("cross_entropy_forward", (ls, ll), (ts, tl), None)
    }
}

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        ls: &CpuStorage,
        ll: &Layout,
        ts: &CpuStorage,
        tl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (logits, targets, lse_and_grad) =
            (f32_rows(ls, ll, self.name())?, u32_ids(ts, tl, self.name())?, f32_rows(gs, gl, self.name())?);
        let vocab = ll.dims()[1];
        let mut out = Vec::with_capacity(logits.len());
        for ((x, &target), lg) in logits.chunks_exact(vocab).zip(targets).zip(lse_and_grad.chunks_exact(2)) {
            let target = checked_target(target, vocab, self.name())?;
            out.extend(x.iter().enumerate().map(|(j, v)| lg[1] * ((v - lg[0]).exp() - if j == target { 1.0 } else { 0.0 })));
        }
        Ok((CpuStorage::F32(out), ll.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ls: &candle_core::CudaStorage,
        ll: &Layout,
        ts: &candle_core::CudaStorage,
        tl: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        cuda::cross_entropy("cross_entropy_backward", (ls, ll), (ts, tl), Some((gs, gl)))
    }
}

/// The scalars of one AdamW step (Loshchilov & Hutter, with bias correction).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 - bias correction` of each moment at this step: `1 - beta^step`.
    pub bias_correction: [f32; 2],
    /// Multiplies the gradient (global-norm clipping).
    pub grad_scale: f32,
    /// Multiplies the weights before the update: `1 - lr * weight_decay`, or 1 without decay.
    pub keep: f32,
}

/// One AdamW step of `weight` (f32, any shape) in place, given its `grad` and its `moments` (`[2 n]`,
/// `m` and `v` interleaved), which it updates in place too.
pub fn adamw_update(weight: &Tensor, moments: &Tensor, grad: &Tensor, step: &AdamWStep) -> Result<()> {
    require_f32("adamw_update", &[weight, moments, grad])?;
    let n = weight.elem_count();
    if grad.elem_count() != n || moments.elem_count() != 2 * n || !weight.is_contiguous() || !moments.is_contiguous() {
        return Err(ModelError::Invalid(format!(
            "adamw_update: weight {:?}, gradient {:?} and moments {:?} do not fit together",
            weight.dims(),
            grad.dims(),
            moments.dims()
        )));
    }
    moments.inplace_op2(&grad.contiguous()?, &AdamWMoments(*step))?;
    weight.inplace_op2(moments, &AdamWWeights(*step))?;
    Ok(())
}

struct AdamWMoments(AdamWStep);

struct AdamWWeights(AdamWStep);

fn f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => bail!("{what}: contiguous f32 expected"),
    }
}

impl InplaceOp2 for AdamWMoments {
    fn name(&self) -> &'static str {
        "adamw-moments"
    }

    fn cpu_fwd(&self, ms: &mut CpuStorage, ml: &Layout, gs: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let s = self.0;
        let grad = f32_rows(gs, gl, self.name())?;
        let moments = f32_mut(ms, ml, self.name())?;
        for (mv, g) in moments.chunks_exact_mut(2).zip(grad) {
            let g = g * s.grad_scale;
            mv[0] = s.beta1 * mv[0] + (1.0 - s.beta1) * g;
            mv[1] = s.beta2 * mv[1] + (1.0 - s.beta2) * g * g;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ms: &mut candle_core::CudaStorage,
        ml: &Layout,
        gs: &candle_core::CudaStorage,
        gl: &Layout,
    ) -> candle_core::Result<()> {
        let s = self.0;
        cuda::elementwise("adamw_moments", (ms, ml), (gs, gl), gl.shape().elem_count(), &[s.grad_scale, s.beta1, s.beta2])
    }
}

impl InplaceOp2 for AdamWWeights {
    fn name(&self) -> &'static str {
        "adamw-weights"
    }

    fn cpu_fwd(&self, ws: &mut CpuStorage, wl: &Layout, ms: &CpuStorage, ml: &Layout) -> candle_core::Result<()> {
        let s = self.0;
        let moments = f32_rows(ms, ml, self.name())?;
        let weight = f32_mut(ws, wl, self.name())?;
        for (w, mv) in weight.iter_mut().zip(moments.chunks_exact(2)) {
            let update = (mv[0] / s.bias_correction[0]) / ((mv[1] / s.bias_correction[1]).sqrt() + s.eps);
            *w = *w * s.keep - s.lr * update;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        ws: &mut candle_core::CudaStorage,
        wl: &Layout,
        ms: &candle_core::CudaStorage,
        ml: &Layout,
    ) -> candle_core::Result<()> {
        let s = self.0;
        let scalars = [s.lr, s.keep, s.bias_correction[0], s.bias_correction[1], s.eps];
        cuda::elementwise("adamw_weights", (ws, wl), (ms, ml), wl.shape().elem_count(), &scalars)
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{bail, CudaStorage, Layout, Shape};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/train_ops.ptx"));
    const MODULE: &str = "headscope_train_ops";
    /// `THREADS` in the kernel file.
    const THREADS: u32 = 256;

    fn check_contiguous(kernel: &str, layouts: &[&Layout]) -> candle_core::Result<()> {
        if layouts.iter().any(|l| !l.is_contiguous()) {
            bail!("{kernel}: contiguous inputs expected");
        }
        Ok(())
    }

    /// The cross-entropy kernels, a block per row of `logits` (`[rows, vocab]`): the forward writes
    /// `[rows, 2]`, the backward (given `lse_and_grad`) the logits' gradient.
    pub fn cross_entropy(
        kernel: &str,
        (ls, ll): (&CudaStorage, &Layout),
        (ts, tl): (&CudaStorage, &Layout),
        lse_and_grad: Option<(&CudaStorage, &Layout)>,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        check_contiguous(kernel, &[ll, tl])?;
        let (rows, vocab) = ll.shape().dims2()?;
        let dev = ls.device().clone();
        let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
        let logits = ls.as_cuda_slice::<f32>()?.slice(ll.start_offset()..);
        let targets = ts.as_cuda_slice::<u32>()?.slice(tl.start_offset()..);
        let (shape, n) = if lse_and_grad.is_some() { (ll.shape().clone(), rows * vocab) } else { (Shape::from((rows, 2)), rows * 2) };
        // SAFETY: the kernel writes every element.
        let out = unsafe { dev.alloc::<f32>(n)? };
        let mut builder = func.builder();
        builder.arg(&logits);
        builder.arg(&targets);
        let extra = match lse_and_grad {
            Some((gs, gl)) => {
                check_contiguous(kernel, &[gl])?;
                Some(gs.as_cuda_slice::<f32>()?.slice(gl.start_offset()..))
            }
            None => None,
        };
        if let Some(extra) = &extra {
            builder.arg(extra);
        }
        builder.arg(&out);
        candle_core::builder_arg!(builder, vocab as i32);
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: arguments match the kernel's signature (logits, targets, [lse_and_grad,] out, vocab).
        unsafe { builder.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), shape))
    }

    /// An element-wise in-place kernel over `n` elements: `(dst, src, n, scalars...)`.
    pub fn elementwise(
        kernel: &str,
        (ds, dl): (&mut CudaStorage, &Layout),
        (ss, sl): (&CudaStorage, &Layout),
        n: usize,
        scalars: &[f32],
    ) -> candle_core::Result<()> {
        check_contiguous(kernel, &[dl, sl])?;
        let dev = ds.device().clone();
        let func = dev.get_or_load_custom_func(kernel, MODULE, PTX)?;
        let src = ss.as_cuda_slice::<f32>()?.slice(sl.start_offset()..);
        let mut dst = ds.as_cuda_slice_mut::<f32>()?.slice_mut(dl.start_offset()..);
        let mut builder = func.builder();
        builder.arg(&mut dst);
        builder.arg(&src);
        let n = n as i32;
        builder.arg(&n);
        for s in scalars {
            builder.arg(s);
        }
        let blocks = (n as u32).div_ceil(THREADS).clamp(1, 1024);
        let cfg = LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: arguments match the kernel's signature (dst, src, n, scalars in order).
        unsafe { builder.launch(cfg) }.w()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    fn randn(shape: &[usize]) -> Var {
        Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Compares `fused` with `plain` (functions of the same variables), outputs and gradients, under a
    /// loss that weighs every output element differently.
    fn assert_same(what: &str, vars: &[&Var], fused: &dyn Fn() -> Tensor, plain: &dyn Fn() -> Tensor, tolerance: f32) {
        let (f, p) = (fused(), plain());
        assert_eq!(f.dims(), p.dims(), "{what}: shapes");
        assert!(max_difference(&f, &p) < tolerance, "{what}: outputs differ by {}", max_difference(&f, &p));
        let weights = Tensor::randn(0f32, 1.0, f.dims(), &Device::Cpu).unwrap();
        let fg = (f * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let pg = (p * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        for (i, v) in vars.iter().enumerate() {
            let (a, b) = (fg.get(v).unwrap(), pg.get(v).unwrap());
            let diff = max_difference(a, b);
            assert!(diff < tolerance, "{what}: gradient of input {i} differs by {diff}");
            assert!(b.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.1, "{what}: input {i} has a gradient");
        }
    }

    #[test]
    fn rms_norm_matches_the_elementary_ops() {
        let (x, w) = (randn(&[2, 5, 16]), randn(&[16]));
        let fused = || rms_norm(&x, &w, 1e-5).unwrap();
        let plain = || candle_nn::ops::rms_norm_slow(&x, &w, 1e-5).unwrap();
        assert_same("rms_norm", &[&x, &w], &fused, &plain, 1e-4);
    }

    #[test]
    fn rope_matches_the_elementary_ops() {
        let x = randn(&[2, 3, 5, 8]);
        let angles = Tensor::randn(0f32, 2.0, (5, 4), &Device::Cpu).unwrap();
        let (cos, sin) = (angles.cos().unwrap(), angles.sin().unwrap());
        let fused = || rope(&x, &cos, &sin).unwrap();
        let plain = || candle_nn::rotary_emb::rope_slow(&x, &cos, &sin).unwrap();
        assert_same("rope", &[&x], &fused, &plain, 1e-5);
    }

    #[test]
    fn cross_entropy_matches_log_softmax() {
        let logits = Var::from_tensor(&(Tensor::randn(0f32, 3.0, (6, 11), &Device::Cpu).unwrap())).unwrap();
        let targets = Tensor::new(&[0u32, 10, 3, 3, 7, 1], &Device::Cpu).unwrap();
        let fused = || cross_entropy(&logits, &targets).unwrap();
        let plain = || {
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1).unwrap();
            logp.gather(&targets.unsqueeze(1).unwrap(), 1).unwrap().squeeze(1).unwrap().neg().unwrap()
        };
        assert_same("cross_entropy", &[&logits], &fused, &plain, 1e-5);
    }

    #[test]
    fn cross_entropy_rejects_targets_outside_the_vocabulary() {
        let logits = Tensor::zeros((2, 4), DType::F32, &Device::Cpu).unwrap();
        let e = cross_entropy(&logits, &Tensor::new(&[1u32, 4], &Device::Cpu).unwrap()).unwrap_err().to_string();
        assert!(e.contains("outside the vocabulary"), "{e}");
        let e = cross_entropy(&logits, &Tensor::new(&[1u32], &Device::Cpu).unwrap()).unwrap_err().to_string();
        assert!(e.contains("2 u32 targets"), "{e}");
    }

    #[test]
    fn adamw_update_matches_the_textbook_formula() {
        let dev = Device::Cpu;
        let w0 = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
        let weight = Var::from_tensor(&w0).unwrap();
        let moments = Tensor::zeros(24, DType::F32, &dev).unwrap();
        let (mut m, mut v, mut w) = (w0.zeros_like().unwrap(), w0.zeros_like().unwrap(), w0.clone());
        let (beta1, beta2, eps, lr, decay, scale) = (0.9f64, 0.95f64, 1e-8f64, 0.01f64, 0.1f64, 0.5f64);
        for t in 1..=3 {
            let grad = Tensor::randn(0f32, 1.0, (3, 4), &dev).unwrap();
            let bias_correction = [1.0 - beta1.powi(t), 1.0 - beta2.powi(t)];
            let step = AdamWStep {
                lr: lr as f32,
                beta1: beta1 as f32,
                beta2: beta2 as f32,
                eps: eps as f32,
                bias_correction: bias_correction.map(|b| b as f32),
                grad_scale: scale as f32,
                keep: (1.0 - lr * decay) as f32,
            };
            adamw_update(&weight, &moments, &grad, &step).unwrap();
            let g = (grad * scale).unwrap();
            m = ((&m * beta1).unwrap() + (&g * (1.0 - beta1)).unwrap()).unwrap();
            v = ((&v * beta2).unwrap() + (g.sqr().unwrap() * (1.0 - beta2)).unwrap()).unwrap();
            let update =
                ((&m / bias_correction[0]).unwrap() / ((&v / bias_correction[1]).unwrap().sqrt().unwrap() + eps).unwrap()).unwrap();
            w = ((&w * (1.0 - lr * decay)).unwrap() - (update * lr).unwrap()).unwrap();
        }
        let diff = max_difference(weight.as_tensor(), &w);
        assert!(diff < 1e-6, "weights differ by {diff}");
        assert!(max_difference(weight.as_tensor(), &w0) > 1e-3, "the weights moved");
        let mv = moments.reshape((12, 2)).unwrap();
        assert!(max_difference(&mv.narrow(1, 0, 1).unwrap().reshape((3, 4)).unwrap(), &m) < 1e-6);
        assert!(max_difference(&mv.narrow(1, 1, 1).unwrap().reshape((3, 4)).unwrap(), &v) < 1e-6);
    }
}
