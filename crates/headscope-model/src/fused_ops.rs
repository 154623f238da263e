//! Fused element-wise ops for inference on CUDA (`kernels/fused_ops.cu`), with candle's ops as the
//! fallback on every other device.
//!
//! On the H100 a 7B model's long prefill spent about as much time in candle's element-wise passes
//! (a transposing copy of each projection into head-major order, then a second copy into the cache;
//! silu, then a product) as in its attention kernel. These write keys and values from the
//! projections' token-major layout straight into the cache, and compute SwiGLU's gate in one pass,
//! rounded as the ops they replace (see [`silu_mul`]).

use crate::error::Result;
use candle_core::Tensor;

/// Writes `src` (`[1, c, heads, d]`: token-major, as a projection produces it) into `cache`
/// (`[1, heads, capacity, d]`) at positions `pos..pos + c`.
pub fn write_token_major(cache: &Tensor, src: &Tensor, pos: usize) -> Result<()> {
    if !imp::write_token_major(cache, src, pos)? {
        cache.slice_set(&src.transpose(1, 2)?.contiguous()?, 2, pos)?;
    }
    Ok(())
}

/// `silu(gate) * up` (SwiGLU's gate): the silu computed in f32 and rounded to the element type, then
/// the product rounded, as PyTorch's two ops (and candle's for bf16) compute it. Tensors that
/// autograd tracks (training) take candle's ops: the kernel has no backward pass.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    match imp::silu_mul(gate, up)? {
        Some(out) => Ok(out),
        None => Ok((candle_nn::ops::silu(gate)? * up)?),
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{bail, CpuStorage, CudaStorage, CustomOp2, InplaceOp2, Layout, Shape, Tensor};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused_ops.ptx"));
    const MODULE: &str = "headscope_fused_ops";
    const THREADS: u32 = 256;
    /// Enough blocks to fill the largest GPUs several times over; the kernels loop over the rest.
    const MAX_BLOCKS: usize = 4096;

    fn launch_config(work: usize) -> LaunchConfig {
        let blocks = work.div_ceil(THREADS as usize).clamp(1, MAX_BLOCKS) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    /// The kernel's version of [`super::write_token_major`]; `false`: it does not apply (not on CUDA,
    /// or tensors it does not take).
    pub fn write_token_major(cache: &Tensor, src: &Tensor, pos: usize) -> candle_core::Result<bool> {
        if !cache.device().is_cuda() || !fits_cache(cache, src) {
            return Ok(false);
        }
        cache.inplace_op2(src, &CopyIntoCache { pos })?;
        Ok(true)
    }

    /// The kernel's version of [`super::silu_mul`]; `None`: it does not apply.
    pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if !gate.device().is_cuda() || gate.track_op() || up.track_op() || !fits_elementwise(gate, up) {
            return Ok(None);
        }
        Ok(Some(gate.apply_op2_no_bwd(up, &SiluMul)?))
    }

    /// A contiguous `[1, heads, capacity, d]` cache and a contiguous `[1, c, heads, d]` chunk of the same
    /// dtype, whose rows are whole 16-byte units.
    fn fits_cache(cache: &Tensor, src: &Tensor) -> bool {
        let (Ok((1, heads, _, d)), Ok((1, _, src_heads, src_d))) = (cache.dims4(), src.dims4()) else { return false };
        cache.is_contiguous()
            && src.is_contiguous()
            && cache.dtype() == src.dtype()
            && (heads, d) == (src_heads, src_d)
            && (d * cache.dtype().size_in_bytes()).is_multiple_of(16)
    }

    /// Two contiguous tensors of one shape and a half or f32 type, a whole number of 16-byte vectors.
    fn fits_elementwise(a: &Tensor, b: &Tensor) -> bool {
        use candle_core::DType;
        a.is_contiguous()
            && b.is_contiguous()
            && a.shape() == b.shape()
            && a.dtype() == b.dtype()
            && matches!(a.dtype(), DType::BF16 | DType::F16 | DType::F32)
            && (a.elem_count() * a.dtype().size_in_bytes()).is_multiple_of(16)
    }

    struct CopyIntoCache {
        pos: usize,
    }

    impl InplaceOp2 for CopyIntoCache {
        fn name(&self) -> &'static str {
            "copy-into-cache"
        }

        fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<()> {
            bail!("copy-into-cache runs on CUDA only")
        }

        fn cuda_fwd(&self, cs: &mut CudaStorage, cl: &Layout, ss: &CudaStorage, sl: &Layout) -> candle_core::Result<()> {
            let (_, heads, capacity, d) = cl.shape().dims4()?;
            let (_, c, _, _) = sl.shape().dims4()?;
            if self.pos + c > capacity {
                bail!("copy-into-cache: positions {}..{} are past the cache ({capacity})", self.pos, self.pos + c);
            }
            let units = d * ss.dtype().size_in_bytes() / 16;
            let dev = cs.device().clone();
            let func = dev.get_or_load_custom_func("copy_into_cache", MODULE, PTX)?;
            let cfg = launch_config(c * heads * units);
            let (c, heads, units) = (c as i32, heads as i32, units as i32);
            let (head_stride, pos) = ((capacity * units as usize) as i64, (self.pos) as i64);
            macro_rules! launch {
                ($dst:expr, $src:expr) => {{
                    let src = $src.slice(sl.start_offset()..);
                    let mut dst = $dst.slice_mut(cl.start_offset()..);
                    let mut builder = func.builder();
                    builder.arg(&src);
                    builder.arg(&mut dst);
                    candle_core::builder_arg!(builder, c, heads, units, head_stride, pos);
                    // SAFETY: arguments match the kernel's signature; the rows are whole 16-byte units
                    // (`fits_cache`) and the positions were checked against the capacity above.
                    unsafe { builder.launch(cfg) }.w()?;
                }};
            }
            match (&mut cs.slice, &ss.slice) {
                (CudaStorageSlice::BF16(dst), CudaStorageSlice::BF16(src)) => launch!(dst, src),
                (CudaStorageSlice::F16(dst), CudaStorageSlice::F16(src)) => launch!(dst, src),
                (CudaStorageSlice::F32(dst), CudaStorageSlice::F32(src)) => launch!(dst, src),
                _ => bail!("copy-into-cache: cache and keys must share a bf16, f16 or f32 type"),
            }
            Ok(())
        }
    }

    struct SiluMul;

    impl CustomOp2 for SiluMul {
        fn name(&self) -> &'static str {
            "silu-mul"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
            bail!("silu-mul runs on CUDA only")
        }

        fn cuda_fwd(&self, gs: &CudaStorage, gl: &Layout, us: &CudaStorage, ul: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
            let n = gl.shape().elem_count();
            let dev = gs.device().clone();
            let cfg = launch_config(n * gs.dtype().size_in_bytes() / 16);
            macro_rules! launch {
                ($t:ty, $kernel:literal, $g:expr, $u:expr) => {{
                    let func = dev.get_or_load_custom_func($kernel, MODULE, PTX)?;
                    let g = $g.slice(gl.start_offset()..);
                    let u = $u.slice(ul.start_offset()..);
                    // SAFETY: the kernel writes every element (n is a whole number of vectors).
                    let out = unsafe { dev.alloc::<$t>(n)? };
                    let mut builder = func.builder();
                    builder.arg(&g);
                    builder.arg(&u);
                    builder.arg(&out);
                    candle_core::builder_arg!(builder, n as i64);
                    // SAFETY: arguments match the kernel's signature (gate, up, out, n).
                    unsafe { builder.launch(cfg) }.w()?;
                    CudaStorage::wrap_cuda_slice(out, dev.clone())
                }};
            }
            let out = match (&gs.slice, &us.slice) {
                (CudaStorageSlice::BF16(g), CudaStorageSlice::BF16(u)) => launch!(half::bf16, "silu_mul_bf16", g, u),
                (CudaStorageSlice::F16(g), CudaStorageSlice::F16(u)) => launch!(half::f16, "silu_mul_f16", g, u),
                (CudaStorageSlice::F32(g), CudaStorageSlice::F32(u)) => launch!(f32, "silu_mul_f32", g, u),
                _ => bail!("silu-mul: gate and up must share a bf16, f16 or f32 type"),
            };
            Ok((out, gl.shape().clone()))
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::Tensor;

    pub fn write_token_major(_: &Tensor, _: &Tensor, _: usize) -> candle_core::Result<bool> {
        Ok(false)
    }

    pub fn silu_mul(_: &Tensor, _: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(None)
    }
}
