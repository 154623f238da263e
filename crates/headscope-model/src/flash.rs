//! Fused prefill attention on CUDA (`kernels/flash_prefill.cu`, FlashAttention-2's forward pass): the
//! prompt's queries attend to the KV cache tile by tile with an online softmax, so no `chunk x keys`
//! score block is ever written to GPU memory. Only the prefill takes this path: it reports no
//! per-head probe, and the decode steps, whose attention the retrieval score reads, keep the
//! instrumented path in [`crate::attention`].
//!
//! Supported: bf16 and f16, head dimensions 64 and 128, grouped-query attention, sliding windows.
//! Anything else (and every CPU or wasm build) takes the chunked path, which computes the same thing.

use candle_core::{DType, Device, Tensor};

/// Whether prefills of a model with this head dimension, run on `device` in `dtype`, take the fused kernel.
pub fn supported_for(device: &Device, dtype: DType, head_dim: usize) -> bool {
    imp::AVAILABLE && device.is_cuda() && matches!(dtype, DType::BF16 | DType::F16) && matches!(head_dim, 64 | 128)
}

/// Whether the fused kernel can run attention for these queries and cached keys.
pub fn supported(q: &Tensor, k: &Tensor) -> bool {
    k.dtype() == q.dtype() && q.dims().last().is_some_and(|&d| supported_for(q.device(), q.dtype(), d))
}

/// Causal attention of `q` (`[b, heads, c, d]`, the last `c` of the `s` key positions) over `k` and `v`
/// (`[b, kv_heads, s, d]`, views of the cache are fine), with an optional sliding `window` (keys at
/// most `window - 1` positions back). Returns the head outputs `[b, heads, c, d]`.
pub fn prefill_attention(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> candle_core::Result<Tensor> {
    imp::prefill_attention(q, k, v, window)
}

#[cfg(feature = "cuda")]
mod imp {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::{bail, CpuStorage, CudaStorage, CustomOp3, Layout, Shape, Tensor};

    pub const AVAILABLE: bool = true;

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_prefill.ptx"));
    const BLOCK_Q: usize = 64;
    const BLOCK_K: usize = 64;
    const THREADS: u32 = 128;
    const PAD: usize = 8;

    struct FlashPrefill {
        window: Option<usize>,
    }

    /// `[b, n, s, d]` with rows of `d` contiguous elements: (batch stride, head stride) in elements.
    fn row_major_strides(l: &Layout, what: &str) -> candle_core::Result<(usize, usize)> {
        let stride = l.stride();
        let d = l.dims()[3];
        if stride[3] != 1 || stride[2] != d {
            bail!("flash prefill: {what} rows must be contiguous (strides {stride:?})");
        }
        Ok((stride[0], stride[1]))
    }

    impl CustomOp3 for FlashPrefill {
        fn name(&self) -> &'static str {
            "flash-prefill"
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
            bail!("flash prefill runs on CUDA only")
        }

        fn cuda_fwd(
            &self,
            qs: &CudaStorage,
            ql: &Layout,
            ks: &CudaStorage,
            kl: &Layout,
            vs: &CudaStorage,
            vl: &Layout,
        ) -> candle_core::Result<(CudaStorage, Shape)> {
            let (b, heads, c, d) = ql.shape().dims4()?;
            let (kb, kv_heads, s, kd) = kl.shape().dims4()?;
            if vl.dims() != kl.dims() || kb != b || kd != d || heads % kv_heads != 0 || c > s {
                bail!("flash prefill: q {:?}, k {:?}, v {:?} do not fit together", ql.dims(), kl.dims(), vl.dims());
            }
            if !ql.is_contiguous() {
                bail!("flash prefill: queries must be contiguous");
            }
            let (k_batch, k_head) = row_major_strides(kl, "key")?;
            let (v_batch, v_head) = row_major_strides(vl, "value")?;
            if (k_batch, k_head) != (v_batch, v_head) {
                bail!("flash prefill: keys and values must share a layout");
            }
            let dev = qs.device().clone();
            let type_name = match (&qs.slice, &ks.slice, &vs.slice) {
                (CudaStorageSlice::BF16(_), CudaStorageSlice::BF16(_), CudaStorageSlice::BF16(_)) => "bf16",
                (CudaStorageSlice::F16(_), CudaStorageSlice::F16(_), CudaStorageSlice::F16(_)) => "f16",
                _ => bail!("flash prefill: q, k and v must all be bf16 or all f16"),
            };
            if d != 64 && d != 128 {
                bail!("flash prefill: head dimension {d} (supported: 64, 128)");
            }
            let func = dev.get_or_load_custom_func(&format!("flash_prefill_{type_name}_d{d}"), "headscope_flash_prefill", PTX)?;
            let cfg = LaunchConfig {
                grid_dim: (c.div_ceil(BLOCK_Q) as u32, heads as u32, b as u32),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: (2 * BLOCK_K * (d + PAD) * 2) as u32,
            };
            let window = self.window.map_or(0, |w| w.min(i32::MAX as usize)) as i32;
            let scale = 1.0 / (d as f32).sqrt();
            let elements = b * heads * c * d;
            macro_rules! launch {
                ($t:ty, $q:expr, $k:expr, $v:expr) => {{
                    let q = $q.slice(ql.start_offset()..);
                    let k = $k.slice(kl.start_offset()..);
                    let v = $v.slice(vl.start_offset()..);
                    // SAFETY: every element is written by the kernel before it is read.
                    let out = unsafe { dev.alloc::<$t>(elements)? };
                    let mut builder = func.builder();
                    builder.arg(&q);
                    builder.arg(&k);
                    builder.arg(&v);
                    builder.arg(&out);
                    candle_core::builder_arg!(
                        builder,
                        heads as i32,
                        kv_heads as i32,
                        c as i32,
                        s as i32,
                        k_batch as i64,
                        k_head as i64,
                        window,
                        scale
                    );
                    // SAFETY: arguments match the kernel's signature; shapes were checked above.
                    unsafe { builder.launch(cfg) }.w()?;
                    CudaStorage::wrap_cuda_slice(out, dev.clone())
                }};
            }
            let storage = match (&qs.slice, &ks.slice, &vs.slice) {
                (CudaStorageSlice::BF16(q), CudaStorageSlice::BF16(k), CudaStorageSlice::BF16(v)) => {
                    launch!(half::bf16, q, k, v)
                }
                (CudaStorageSlice::F16(q), CudaStorageSlice::F16(k), CudaStorageSlice::F16(v)) => launch!(half::f16, q, k, v),
                _ => unreachable!("dtypes checked above"),
            };
            Ok((storage, Shape::from((b, heads, c, d))))
        }
    }

    pub fn prefill_attention(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> candle_core::Result<Tensor> {
        q.contiguous()?.apply_op3_no_bwd(k, v, &FlashPrefill { window })
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::Tensor;

    pub const AVAILABLE: bool = false;

    pub fn prefill_attention(_: &Tensor, _: &Tensor, _: &Tensor, _: Option<usize>) -> candle_core::Result<Tensor> {
        candle_core::bail!("flash prefill needs a CUDA build (--features cuda)")
    }
}
