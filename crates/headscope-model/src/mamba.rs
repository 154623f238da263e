//! Jamba's Mamba mixer: a selective state-space block in place of attention. Per token, the input is
//! projected to channels x and a gate z; x goes through a causal depthwise convolution and SiLU; from
//! it, a time step dt (RMS-normalised, projected back to every channel, softplus), an input map B and
//! an output map C (both RMS-normalised) are drawn; each channel e keeps a state s[e, n] that decays
//! by exp(dt[e] A[e, n]) and takes in dt[e] B[n] x[e]; the output is sum_n s[e, n] C[n] + D[e] x[e],
//! gated by silu(z), projected back. The state and the convolution's last inputs carry across prefill
//! chunks and decode steps, as transformers' cache carries them.
//!
//! The scan is computed in f32, as transformers' reference path computes it: on CUDA by
//! `kernels/selective_scan.cu` (a thread per channel walks the chunk's tokens), elsewhere on the host
//! (a Mamba layer of Jamba-v0.1 costs about 2 x 8192 x 16 multiply-adds a token there).

use crate::error::{ModelError, Result};
use crate::norm::RmsNorm;
use crate::spec::{MambaSpec, ModelSpec, NormStyle};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder};

/// One Mamba layer's weights.
#[derive(Debug, Clone)]
pub struct MambaMixer {
    in_proj: Linear,
    /// `[inner, conv]`.
    conv_weight: Tensor,
    /// `[1, inner, 1]`.
    conv_bias: Option<Tensor>,
    x_proj: Linear,
    /// `[inner, dt_rank]`.
    dt_proj: Tensor,
    /// `dt_proj.bias`, f32 on the host.
    dt_bias: Vec<f32>,
    /// `-exp(A_log)`, `[inner * state]`, f32 on the host.
    a: Vec<f32>,
    /// `D`, f32 on the host.
    d: Vec<f32>,
    /// A, D and dt_bias in one f32 tensor on the model's device, as the CUDA scan reads them.
    scan_params: Tensor,
    dt_norm: RmsNorm,
    b_norm: RmsNorm,
    c_norm: RmsNorm,
    out_proj: Linear,
    shape: MambaSpec,
}

/// What a Mamba layer carries from one call to the next: the convolution's last `conv - 1` inputs and
/// the selective scan's state.
#[derive(Debug, Clone)]
pub struct MambaState {
    /// `[batch, inner, conv - 1]`, in the model's dtype.
    conv: Tensor,
    /// `[batch, inner * state]`, f32, on the model's device.
    ssm: Tensor,
}

impl MambaState {
    /// A zero state for `batch` sequences.
    pub fn zeros(shape: &MambaSpec, batch: usize, dtype: DType, device: &Device) -> Result<Self> {
        Ok(MambaState {
            conv: Tensor::zeros((batch, shape.inner, shape.conv - 1), dtype, device)?,
            ssm: Tensor::zeros((batch, shape.inner * shape.state), DType::F32, device)?,
        })
    }
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// transformers' softplus (threshold 20: above it, x itself).
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

impl MambaMixer {
    /// Loads `mamba.*` of one layer (`vb` at `model.layers.N.mamba`).
    pub fn new(spec: &ModelSpec, vb: VarBuilder) -> Result<Self> {
        let m = spec.mamba.clone().ok_or_else(|| ModelError::Invalid("a Mamba layer without Mamba settings".into()))?;
        let (h, e, n, r, k) = (spec.hidden_size, m.inner, m.state, m.dt_rank, m.conv);
        let conv_weight = vb.pp("conv1d").get((e, 1, k), "weight")?.reshape((e, k))?;
        let conv_bias = if m.conv_bias { Some(vb.pp("conv1d").get(e, "bias")?.reshape((1, e, 1))?) } else { None };
        let a_log = host(&vb.get((e, n), "A_log")?)?;
        let a: Vec<f32> = a_log.iter().map(|x| -x.exp()).collect();
        let d = host(&vb.get(e, "D")?)?;
        let dt_bias = host(&vb.pp("dt_proj").get(e, "bias")?)?;
        let params: Vec<f32> = a.iter().chain(&d).chain(&dt_bias).copied().collect();
        let scan_params = Tensor::from_vec(params, a.len() + 2 * e, vb.device())?;
        let eps = spec.rms_norm_eps;
        Ok(MambaMixer {
            in_proj: candle_nn::linear_b(h, 2 * e, m.proj_bias, vb.pp("in_proj"))?,
            conv_weight,
            conv_bias,
            x_proj: candle_nn::linear_no_bias(e, r + 2 * n, vb.pp("x_proj"))?,
            dt_proj: vb.pp("dt_proj").get((e, r), "weight")?,
            dt_bias,
            a,
            d,
            scan_params,
            dt_norm: RmsNorm::load(&vb.pp("dt_layernorm"), r, eps, NormStyle::Plain)?,
            b_norm: RmsNorm::load(&vb.pp("b_layernorm"), n, eps, NormStyle::Plain)?,
            c_norm: RmsNorm::load(&vb.pp("c_layernorm"), n, eps, NormStyle::Plain)?,
            out_proj: candle_nn::linear_b(e, h, m.proj_bias, vb.pp("out_proj"))?,
            shape: m,
        })
    }

    /// The layer's shape.
    pub fn shape(&self) -> &MambaSpec {
        &self.shape
    }

    /// Mixes `x` (`[batch, c, hidden]`), the tokens that follow what `state` has seen, and advances
    /// `state` past them.
    pub fn forward(&self, x: &Tensor, state: &mut MambaState) -> Result<Tensor> {
        let (b, c, _) = x.dims3()?;
        let (e, n, r, k) = (self.shape.inner, self.shape.state, self.shape.dt_rank, self.shape.conv);
        if state.ssm.dims()[0] != b {
            return Err(ModelError::Invalid(format!("a Mamba state for {} sequences given {b}", state.ssm.dims()[0])));
        }
        let xz = self.in_proj.forward(x)?;
        let xs = xz.narrow(2, 0, e)?.transpose(1, 2)?.contiguous()?; // [b, e, c]
        let z = xz.narrow(2, e, e)?;
        // Causal depthwise convolution over the previous k - 1 inputs and these.
        let padded = Tensor::cat(&[&state.conv, &xs], 2)?; // [b, e, k - 1 + c]
        let mut conv = padded.narrow(2, 0, c)?.broadcast_mul(&self.conv_weight.narrow(1, 0, 1)?.unsqueeze(0)?)?;
        for j in 1..k {
            conv = (conv + padded.narrow(2, j, c)?.broadcast_mul(&self.conv_weight.narrow(1, j, 1)?.unsqueeze(0)?)?)?;
        }
        if let Some(bias) = &self.conv_bias {
            conv = conv.broadcast_add(bias)?;
        }
        state.conv = padded.narrow(2, c, k - 1)?.contiguous()?;
        let xc = candle_nn::ops::silu(&conv.transpose(1, 2)?.contiguous()?)?; // [b, c, e]
        let proj = self.x_proj.forward(&xc)?;
        let dt = self.dt_norm.forward(&proj.narrow(2, 0, r)?.contiguous()?)?;
        let bm = self.b_norm.forward(&proj.narrow(2, r, n)?.contiguous()?)?;
        let cm = self.c_norm.forward(&proj.narrow(2, r + n, n)?.contiguous()?)?;
        let dt = dt.broadcast_matmul(&self.dt_proj.t()?)?; // [b, c, e]
        let f32 = |t: &Tensor| -> Result<Tensor> { Ok(t.to_dtype(DType::F32)?.contiguous()?) };
        let xdz = Tensor::cat(&[&f32(&xc)?, &f32(&dt)?, &f32(&z)?], 2)?;
        let bc = Tensor::cat(&[&f32(&bm)?, &f32(&cm)?], 2)?;
        let y = match imp::selective_scan(&xdz, &bc, &self.scan_params, &state.ssm, (b, c, e, n))? {
            Some((y, next)) => {
                state.ssm = next;
                y
            }
            None => self.scan_on_host(&xdz, &bc, state, (b, c))?,
        };
        Ok(self.out_proj.forward(&y.to_dtype(x.dtype())?)?)
    }

    /// The scan on the host: `xdz` `[b, c, 3e]` (x, dt before its bias, z), `bc` `[b, c, 2n]`; returns
    /// y `[b, c, e]` f32 and advances `state`.
    fn scan_on_host(&self, xdz: &Tensor, bc: &Tensor, state: &mut MambaState, (b, c): (usize, usize)) -> Result<Tensor> {
        let (e, n) = (self.shape.inner, self.shape.state);
        let (xdz_h, bc_h) = (host(xdz)?, host(bc)?);
        let mut ssm = host(&state.ssm)?;
        let mut y = vec![0f32; b * c * e];
        for (batch, s) in ssm.chunks_mut(e * n).enumerate() {
            for t in 0..c {
                let row = batch * c + t;
                let (bt, ct) = (&bc_h[row * 2 * n..row * 2 * n + n], &bc_h[row * 2 * n + n..(row + 1) * 2 * n]);
                let (xr, dtr, zr) = (&xdz_h[row * 3 * e..], &xdz_h[row * 3 * e + e..], &xdz_h[row * 3 * e + 2 * e..]);
                for ch in 0..e {
                    let step = softplus(dtr[ch] + self.dt_bias[ch]);
                    let input = xr[ch];
                    let (a, st) = (&self.a[ch * n..(ch + 1) * n], &mut s[ch * n..(ch + 1) * n]);
                    let mut out = 0f32;
                    for j in 0..n {
                        st[j] = (step * a[j]).exp() * st[j] + step * bt[j] * input;
                        out += st[j] * ct[j];
                    }
                    y[row * e + ch] = (out + self.d[ch] * input) * silu(zr[ch]);
                }
            }
        }
        state.ssm = Tensor::from_vec(ssm, (b, e * n), xdz.device())?;
        Ok(Tensor::from_vec(y, (b, c, e), xdz.device())?)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{bail, CpuStorage, CudaStorage, CustomOp3, Layout, Shape, Tensor};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/selective_scan.ptx"));
    const MODULE: &str = "headscope_selective_scan";
    const THREADS: u32 = 128;
    /// The kernel's register array for one channel's state.
    const MAX_STATE: usize = 64;

    /// The scan on CUDA: y `[b, c, e]` and the state after the chunk `[b, e * n]`; None off CUDA.
    #[allow(clippy::type_complexity)]
    pub fn selective_scan(
        xdz: &Tensor,
        bc: &Tensor,
        params: &Tensor,
        state: &Tensor,
        (b, c, e, n): (usize, usize, usize, usize),
    ) -> candle_core::Result<Option<(Tensor, Tensor)>> {
        if !xdz.device().is_cuda() || n > MAX_STATE {
            return Ok(None);
        }
        let inputs = Tensor::cat(&[&params.flatten_all()?, &state.flatten_all()?], 0)?.contiguous()?;
        let out = xdz.contiguous()?.apply_op3_no_bwd(&bc.contiguous()?, &inputs, &Scan { b, c, e, n })?;
        let y = out.narrow(0, 0, b * c * e)?.reshape((b, c, e))?;
        let next = out.narrow(0, b * c * e, b * e * n)?.reshape((b, e * n))?;
        Ok(Some((y, next)))
    }

    struct Scan {
        b: usize,
        c: usize,
        e: usize,
        n: usize,
    }

    impl CustomOp3 for Scan {
        fn name(&self) -> &'static str {
            "selective-scan"
        }

        fn cpu_fwd(
            &self,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
            _: &CpuStorage,
            _: &Layout,
        ) -> candle_core::Result<(CpuStorage, Shape)> {
            bail!("selective-scan runs on CUDA only")
        }

        fn cuda_fwd(
            &self,
            xs: &CudaStorage,
            xl: &Layout,
            bs: &CudaStorage,
            bl: &Layout,
            ps: &CudaStorage,
            pl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let Scan { b, c, e, n } = *self;
            if xl.shape().elem_count() != b * c * 3 * e
                || bl.shape().elem_count() != b * c * 2 * n
                || pl.shape().elem_count() != e * n + 2 * e + b * e * n
            {
                bail!("selective-scan: inputs of the wrong size for {b} x {c} tokens, {e} channels, state {n}");
            }
            let (CudaStorageSlice::F32(x), CudaStorageSlice::F32(bcs), CudaStorageSlice::F32(p)) = (&xs.slice, &bs.slice, &ps.slice) else {
                bail!("selective-scan: f32 inputs only");
            };
            let dev = xs.device().clone();
            let func = dev.get_or_load_custom_func("selective_scan_f32", MODULE, PTX)?;
            let total = b * c * e + b * e * n;
            // SAFETY: the kernel writes every y element and every state element.
            let out = unsafe { dev.alloc::<f32>(total)? };
            let (x, bcs, p) = (x.slice(xl.start_offset()..), bcs.slice(bl.start_offset()..), p.slice(pl.start_offset()..));
            let threads = b * e;
            let cfg = LaunchConfig {
                grid_dim: (threads.div_ceil(THREADS as usize) as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut builder = func.builder();
            builder.arg(&x);
            builder.arg(&bcs);
            builder.arg(&p);
            builder.arg(&out);
            let (bi, ci, ei, ni) = (b as i32, c as i32, e as i32, n as i32);
            candle_core::builder_arg!(builder, bi, ci, ei, ni);
            // SAFETY: arguments match the kernel's signature; sizes were checked above.
            unsafe { builder.launch(cfg) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(total)))
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::Tensor;

    #[allow(clippy::type_complexity)]
    pub fn selective_scan(
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        _: (usize, usize, usize, usize),
    ) -> candle_core::Result<Option<(Tensor, Tensor)>> {
        Ok(None)
    }
}
