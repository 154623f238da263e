//! Attention kernels for CUDA.
//!
//! - Prefill (`kernels/flash_prefill.cu`, FlashAttention-2's forward pass): the prompt's queries attend
//!   to the KV cache tile by tile with an online softmax, so no `chunk x keys` score block is ever
//!   written to GPU memory. It reports no per-head probe, which a prefill does not need. On Hopper
//!   GPUs (compute capability 9.0) with head size 128, `kernels/flash_hopper.cu` computes the same with
//!   warpgroup tensor-core instructions and TMA copies, about 1.8x faster on the H100.
//! - Decode (`kernels/decode_attention.cu`): one query per head, in two bandwidth-bound passes over the
//!   cache: scores, with each block of keys' softmax statistics, then values, whose blocks combine
//!   those statistics into the softmax and the argmax themselves (a pass over the scores per row, even
//!   with a block per row, left a decode step's 32 long rows latency-bound). Same rounding as Hugging
//!   Face's eager attention.
//!
//! Supported: bf16 and f16, head dimensions 64 and 128, grouped-query attention, sliding windows.
//! Anything else (and every CPU or wasm build) takes the chunked path, which computes the same thing.

use candle_core::{DType, Device, Tensor};

/// Whether prefills of a model with this head dimension, run on `device` in `dtype`, take the fused kernel.
pub fn supported_for(device: &Device, dtype: DType, head_dim: usize) -> bool {
    imp::AVAILABLE && device.is_cuda() && matches!(dtype, DType::BF16 | DType::F16) && matches!(head_dim, 64 | 128)
}

/// Whether the fused kernel can run attention for queries of `x`'s dtype and device (the chunk
/// itself, or its queries: the check needs no projection first) over cached keys `k`.
pub fn supported(x: &Tensor, k: &Tensor) -> bool {
    k.dtype() == x.dtype() && k.dims().last().is_some_and(|&d| supported_for(x.device(), x.dtype(), d))
}

/// The prefill kernel's compiled block shapes that run on `device` for this head dimension, the
/// default first (`wg3`: 3 warpgroups on Hopper; `w4k128`: 4 warps of 16 query rows, 128 keys per
/// tile); empty without CUDA.
pub fn prefill_variants(device: &Device, head_dim: usize) -> Vec<String> {
    imp::prefill_variants(device, head_dim)
}

/// [`prefill_attention`] through one compiled block shape of [`prefill_variants`], for timing them.
pub fn prefill_attention_variant(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>, variant: &str) -> candle_core::Result<Tensor> {
    imp::prefill_attention_variant(q, k, v, window, variant)
}

/// What [`decode_attention`] computed.
#[derive(Debug)]
pub struct DecodeAttention {
    /// The head outputs `[1, heads, 1, d]`.
    pub out: Tensor,
    /// The f32 softmax weights `[1, kv_heads, heads / kv_heads, 1, s]`, rounded as Hugging Face's eager
    /// attention rounds them.
    pub weights: Tensor,
    /// `[heads]` u32: each query head's first position of its largest score, a position of maximal
    /// weight (the first, unless f32 exp rounds a smaller score to the same weight).
    pub argmax: Tensor,
}

/// Attention of one decode step: `q` (`[1, heads, 1, d]`) over all of `k` and `v` (`[1, kv_heads, s, d]`,
/// views of the cache are fine).
pub fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<DecodeAttention> {
    imp::decode_attention(q, k, v)
}

/// Whether [`decode_attention`] can run for these tensors (besides [`supported`]: query heads per KV
/// head at most 8).
pub fn decode_supported(q: &Tensor, k: &Tensor) -> bool {
    supported(q, k) && q.dims().get(1).zip(k.dims().get(1)).is_some_and(|(&h, &kv)| kv > 0 && h / kv <= MAX_GROUP)
}

/// Query heads per KV head the decode kernels handle (`MAX_GROUP` in `kernels/decode_attention.cu`).
const MAX_GROUP: usize = 8;

/// Causal attention of `q` (`[b, heads, c, d]`, the last `c` of the `s` key positions) over `k` and `v`
/// (`[b, kv_heads, s, d]`, views of the cache are fine), with an optional sliding `window` (keys at
/// most `window - 1` positions back). Returns the head outputs `[b, heads, c, d]`, in `q`'s memory
/// order: when `q` is a transposed view of token-major `[b, c, heads, d]` queries (as the projections
/// produce them), so is the output, and merging the heads back needs no copy.
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
    /// sm_90a code: loads only on compute capability 9.0.
    const HOPPER_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flash_hopper.ptx"));
    const DECODE_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/decode_attention.ptx"));
    const DECODE_KEYS_PER_BLOCK: usize = 128;
    const DECODE_VALUE_THREADS: u32 = 128;
    /// Blocks the value pass aims for over all KV heads: a few waves of the largest GPUs' SMs, so short
    /// contexts still fill the device and long ones add few partial sums.
    const DECODE_VALUE_BLOCKS: usize = 2048;
    const PAD: usize = 8;
    /// Dynamic shared memory a kernel gets without asking for more.
    const DEFAULT_SHARED_BYTES: usize = 48 * 1024;

    /// A compiled prefill kernel. The default is the fastest measured on the H100 among those that
    /// run on the device; `HEADSCOPE_FLASH_VARIANT` (a name of [`VARIANTS`]: `wg3`, `w4r32k64`, ...)
    /// picks another, for timing them against each other.
    #[derive(Debug, Clone, Copy)]
    enum Variant {
        /// `flash_prefill.cu` (mma.sync, sm_80 and newer): warps, query rows per warp (16, or 32 with
        /// the queries in shared memory), keys per tile.
        MmaSync { warps: usize, rows: usize, block_k: usize },
        /// `flash_hopper.cu` (wgmma, compute capability 9.0, head size 128): warpgroups of 64 query
        /// rows, key and value tiles of 128 rows in flight, copied by the whole block with cp.async.
        Wgmma { warpgroups: usize, stages: usize },
        /// `flash_hopper.cu`'s TMA kernel: two warpgroups, tiles copied by the tensor memory accelerator
        /// through tensor maps of the cache (which need 16-byte aligned keys, values and strides).
        Tma,
    }

    /// Fastest first (H100, attention of a whole 64K prefill in 4096-query chunks: tma 535, wg3 399
    /// and wg2 361 TFLOP/s; then mma.sync's 296, 293, 275, 271, 238, 234, 232, 210, 205 and 187).
    const VARIANTS: [Variant; 13] = [
        Variant::Tma,
        Variant::Wgmma { warpgroups: 3, stages: 2 },
        Variant::Wgmma { warpgroups: 2, stages: 3 },
        Variant::MmaSync { warps: 4, rows: 32, block_k: 64 },
        Variant::MmaSync { warps: 4, rows: 32, block_k: 48 },
        Variant::MmaSync { warps: 8, rows: 32, block_k: 64 },
        Variant::MmaSync { warps: 4, rows: 32, block_k: 32 },
        Variant::MmaSync { warps: 8, rows: 16, block_k: 128 },
        Variant::MmaSync { warps: 8, rows: 32, block_k: 32 },
        Variant::MmaSync { warps: 4, rows: 16, block_k: 128 },
        Variant::MmaSync { warps: 8, rows: 16, block_k: 64 },
        Variant::MmaSync { warps: 4, rows: 16, block_k: 64 },
        Variant::MmaSync { warps: 8, rows: 16, block_k: 32 },
    ];

    impl Variant {
        /// The kernel's suffix in its `.cu` file.
        fn name(self) -> String {
            match self {
                Variant::MmaSync { warps, rows: 16, block_k } => format!("w{warps}k{block_k}"),
                Variant::MmaSync { warps, rows, block_k } => format!("w{warps}r{rows}k{block_k}"),
                Variant::Wgmma { warpgroups, .. } => format!("wg{warpgroups}"),
                Variant::Tma => "tma".into(),
            }
        }

        /// Query rows per block.
        fn block_q(self) -> usize {
            match self {
                Variant::MmaSync { warps, rows, .. } => warps * rows,
                Variant::Wgmma { warpgroups, .. } => 64 * warpgroups,
                Variant::Tma => 128,
            }
        }

        fn threads(self) -> usize {
            match self {
                Variant::MmaSync { warps, .. } => 32 * warps,
                Variant::Wgmma { warpgroups, .. } => 128 * warpgroups,
                Variant::Tma => 256,
            }
        }

        /// Shared memory for a head size of `d`, as the kernels lay it out.
        fn shared_bytes(self, d: usize) -> usize {
            match self {
                // A key and a value tile, and with 32 rows per warp the block's queries (rows padded).
                Variant::MmaSync { rows, block_k, .. } => {
                    let q_rows = if rows > 16 { self.block_q() } else { 0 };
                    (2 * block_k + q_rows) * (d + PAD) * 2
                }
                // The queries, `stages` key and value tiles of 128 rows, and room to align to 1024 bytes.
                Variant::Wgmma { stages, .. } => 1024 + (self.block_q() + 2 * stages * 128) * d * 2,
                Variant::Tma => 1024 + (self.block_q() + 2 * TMA_STAGES * 128) * d * 2,
            }
        }

        /// Whether the kernel runs for head size `d` on a device of this compute capability.
        fn runs_on(self, capability: (i32, i32), d: usize) -> bool {
            match self {
                Variant::MmaSync { .. } => capability.0 >= 8 && matches!(d, 64 | 128),
                Variant::Wgmma { .. } | Variant::Tma => capability == (9, 0) && d == 128,
            }
        }

        /// The PTX module holding the kernel, and its name.
        fn module(self) -> (&'static str, &'static str) {
            match self {
                Variant::MmaSync { .. } => ("headscope_flash_prefill", PTX),
                Variant::Wgmma { .. } | Variant::Tma => ("headscope_flash_hopper", HOPPER_PTX),
            }
        }
    }

    /// Key and value tiles the TMA kernel keeps in flight (`flash_prefill_tma`'s STAGES).
    const TMA_STAGES: usize = 3;

    /// A `CUtensorMap`, passed to the kernel by value.
    #[repr(transparent)]
    struct TensorMap(candle_core::cuda_backend::cudarc::driver::sys::CUtensorMap);

    // SAFETY: a plain 128-byte value the kernel takes as a `__grid_constant__` parameter.
    unsafe impl candle_core::cuda_backend::cudarc::driver::DeviceRepr for TensorMap {}

    /// A 4-d tensor map over the keys or values at device address `address` (head dimension `d`,
    /// `s` keys, `kv_heads`, `b`; element strides of a head and a batch), in boxes of 64 columns x 128
    /// keys with the 128-byte swizzle, as `flash_prefill_tma` reads them. TMA zero-fills rows past `s`.
    /// `None` where TMA cannot address the layout (16-byte alignment of the address and strides).
    fn tensor_map(address: u64, bf16: bool, [d, s, kv_heads, b]: [usize; 4], [head_stride, batch_stride]: [usize; 2]) -> Option<TensorMap> {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let strides = [d as u64 * 2, head_stride as u64 * 2, batch_stride as u64 * 2];
        if !address.is_multiple_of(16) || strides.iter().any(|x| !x.is_multiple_of(16) || *x >= 1 << 40) || s >= 1 << 31 {
            return None;
        }
        let dims = [d as u64, s as u64, kv_heads as u64, b as u64];
        let boxes = [64u32, 128, 1, 1];
        let element_strides = [1u32; 4];
        let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
        let data_type = if bf16 {
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
        } else {
            sys::CUtensorMapDataType::CU_TENSOR_MAP_DATA_TYPE_FLOAT16
        };
        // SAFETY: the arrays have the rank's lengths (strides one fewer); the driver writes the map.
        let result = unsafe {
            sys::cuTensorMapEncodeTiled(
                map.as_mut_ptr(),
                data_type,
                4,
                address as *mut std::ffi::c_void,
                dims.as_ptr(),
                strides.as_ptr(),
                boxes.as_ptr(),
                element_strides.as_ptr(),
                sys::CUtensorMapInterleave::CU_TENSOR_MAP_INTERLEAVE_NONE,
                sys::CUtensorMapSwizzle::CU_TENSOR_MAP_SWIZZLE_128B,
                sys::CUtensorMapL2promotion::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                sys::CUtensorMapFloatOOBfill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
            )
        };
        // SAFETY: written by the driver when it reports success.
        (result == sys::CUresult::CUDA_SUCCESS).then(|| TensorMap(unsafe { map.assume_init() }))
    }

    fn capability(dev: &candle_core::CudaDevice) -> candle_core::Result<(i32, i32)> {
        dev.cuda_stream().context().compute_capability().w()
    }

    /// The compiled variant called `name`.
    fn named_variant(name: &str) -> Result<Variant, String> {
        VARIANTS.iter().copied().find(|v| v.name() == name).ok_or_else(|| {
            let known: Vec<String> = VARIANTS.iter().map(|v| v.name()).collect();
            format!("prefill kernel variant `{name}`: expected one of {}", known.join(", "))
        })
    }

    /// `HEADSCOPE_FLASH_VARIANT`'s variant (read once), or the first of [`VARIANTS`] that runs here.
    fn variant(capability: (i32, i32), d: usize) -> candle_core::Result<Variant> {
        static CHOSEN: std::sync::OnceLock<Option<Result<Variant, String>>> = std::sync::OnceLock::new();
        let chosen = CHOSEN.get_or_init(|| {
            std::env::var("HEADSCOPE_FLASH_VARIANT")
                .ok()
                .map(|name| named_variant(&name).map_err(|e| format!("HEADSCOPE_FLASH_VARIANT: {e}")))
        });
        match chosen {
            Some(chosen) => chosen.clone().map_err(candle_core::Error::msg),
            None => VARIANTS.iter().copied().find(|v| v.runs_on(capability, d)).ok_or_else(|| {
                candle_core::Error::msg(format!("flash prefill: no kernel for head size {d} on compute capability {capability:?}"))
            }),
        }
    }

    #[derive(Clone, Copy)]
    struct FlashPrefill {
        window: Option<usize>,
        /// The block shape; `None`: [`variant`]'s.
        shape: Option<Variant>,
        /// The queries (and so the output) are `[b, c, heads, d]`, not `[b, heads, c, d]`.
        token_major: bool,
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

    /// The kernels' name for the half type all of `inputs` share: `bf16` or `f16`.
    fn half_type(op: &str, inputs: &[&CudaStorage]) -> candle_core::Result<&'static str> {
        let name = |s: &CudaStorage| match &s.slice {
            CudaStorageSlice::BF16(_) => Some("bf16"),
            CudaStorageSlice::F16(_) => Some("f16"),
            _ => None,
        };
        match name(inputs[0]) {
            Some(first) if inputs.iter().all(|s| name(s) == Some(first)) => Ok(first),
            _ => bail!("{op}: the inputs must all be bf16 or all f16"),
        }
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
            let (b, heads, c, d) = if self.token_major {
                let (b, c, heads, d) = ql.shape().dims4()?;
                (b, heads, c, d)
            } else {
                ql.shape().dims4()?
            };
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
            let type_name = half_type("flash prefill", &[qs, ks, vs])?;
            if d != 64 && d != 128 {
                bail!("flash prefill: head dimension {d} (supported: 64, 128)");
            }
            let capability = capability(&dev)?;
            let shape = match self.shape {
                Some(shape) => shape,
                None => variant(capability, d)?,
            };
            if !shape.runs_on(capability, d) {
                bail!("flash prefill: kernel variant {} does not run for head size {d} on compute capability {capability:?}", shape.name());
            }
            // The kernel and its launch shape for a variant.
            let load = |shape: Variant| -> candle_core::Result<_> {
                let name = format!("flash_prefill_{type_name}_d{d}_{}", shape.name());
                let (module, ptx) = shape.module();
                let func = dev.get_or_load_custom_func(&name, module, ptx)?;
                let shared_bytes = shape.shared_bytes(d);
                if shared_bytes > DEFAULT_SHARED_BYTES {
                    use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute_enum;
                    func.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_bytes as i32)
                        .w()?;
                }
                let cfg = LaunchConfig {
                    grid_dim: (c.div_ceil(shape.block_q()) as u32, heads as u32, b as u32),
                    block_dim: (shape.threads() as u32, 1, 1),
                    shared_mem_bytes: shared_bytes as u32,
                };
                Ok((func, cfg))
            };
            // The TMA kernel takes tensor maps instead of key and value pointers; where TMA cannot
            // address the cache (see `tensor_map`) the three-warpgroup kernel runs instead.
            let (tma, (func, cfg)) = match shape {
                Variant::Tma => (Some(load(shape)?), load(Variant::Wgmma { warpgroups: 3, stages: 2 })?),
                _ => (None, load(shape)?),
            };
            let window = self.window.map_or(0, |w| w.min(i32::MAX as usize)) as i32;
            let scale = 1.0 / (d as f32).sqrt();
            let elements = b * heads * c * d;
            // (batch, head, position) strides of the queries, and of the output written alike.
            let (q_batch, q_head, q_row) = if self.token_major { (c * heads * d, d, heads * d) } else { (heads * c * d, c * d, d) };
            let out_shape = if self.token_major { Shape::from((b, c, heads, d)) } else { Shape::from((b, heads, c, d)) };
            macro_rules! launch {
                ($t:ty, $q:expr, $k:expr, $v:expr) => {{
                    let q = $q.slice(ql.start_offset()..);
                    let k = $k.slice(kl.start_offset()..);
                    let v = $v.slice(vl.start_offset()..);
                    // SAFETY: every element is written by the kernel before it is read.
                    let out = unsafe { dev.alloc::<$t>(elements)? };
                    if let Some((func, cfg)) = &tma {
                        use candle_core::cuda_backend::cudarc::driver::DevicePtr;
                        let stream = dev.cuda_stream();
                        let bf16 = type_name == "bf16";
                        let ((k_address, _k_read), (v_address, _v_read)) = (k.device_ptr(&stream), v.device_ptr(&stream));
                        let dims = [d, s, kv_heads, b];
                        let maps =
                            tensor_map(k_address, bf16, dims, [k_head, k_batch]).zip(tensor_map(v_address, bf16, dims, [v_head, v_batch]));
                        if let Some((k_map, v_map)) = maps {
                            let mut builder = func.builder();
                            builder.arg(&q);
                            builder.arg(&k_map);
                            builder.arg(&v_map);
                            builder.arg(&out);
                            candle_core::builder_arg!(
                                builder,
                                heads as i32,
                                kv_heads as i32,
                                c as i32,
                                s as i32,
                                q_batch as i64,
                                q_head as i64,
                                q_row as i64,
                                window,
                                scale
                            );
                            // SAFETY: arguments match the kernel's signature; shapes were checked above.
                            unsafe { builder.launch(*cfg) }.w()?;
                            return Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), out_shape));
                        }
                        if self.shape.is_some() {
                            bail!("flash prefill: the tma variant needs 16-byte aligned keys, values and strides");
                        }
                    }
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
                        q_batch as i64,
                        q_head as i64,
                        q_row as i64,
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
            Ok((storage, out_shape))
        }
    }

    pub fn prefill_attention(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> candle_core::Result<Tensor> {
        run_prefill(q, k, v, FlashPrefill { window, shape: None, token_major: false })
    }

    /// Whether `q` (`[b, heads, c, d]`) is a transposed view of a contiguous `[b, c, heads, d]` tensor.
    fn token_major(q: &Tensor) -> bool {
        let (dims, stride) = (q.dims(), q.stride());
        let (heads, c, d) = (dims[1], dims[2], dims[3]);
        // Strides of dimensions of size 1 are immaterial.
        let want = [c * heads * d, d, heads * d, 1];
        !q.is_contiguous() && (0..4).all(|i| dims[i] == 1 || stride[i] == want[i])
    }

    /// Runs `op` on queries in either memory order (see [`super::prefill_attention`]).
    fn run_prefill(q: &Tensor, k: &Tensor, v: &Tensor, op: FlashPrefill) -> candle_core::Result<Tensor> {
        if q.rank() == 4 && token_major(q) {
            // The op sees (and returns) the contiguous token-major tensor; its shape says so.
            let out = q.transpose(1, 2)?.apply_op3_no_bwd(k, v, &FlashPrefill { token_major: true, ..op })?;
            out.transpose(1, 2)
        } else {
            q.contiguous()?.apply_op3_no_bwd(k, v, &op)
        }
    }

    pub fn prefill_variants(device: &candle_core::Device, d: usize) -> Vec<String> {
        let Ok(dev) = device.as_cuda_device() else { return Vec::new() };
        let Ok(capability) = capability(dev) else { return Vec::new() };
        VARIANTS.iter().filter(|v| v.runs_on(capability, d)).map(|v| v.name()).collect()
    }

    pub fn prefill_attention_variant(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>, name: &str) -> candle_core::Result<Tensor> {
        let shape = named_variant(name).map_err(candle_core::Error::msg)?;
        run_prefill(q, k, v, FlashPrefill { window, shape: Some(shape), token_major: false })
    }

    /// One decode step in two launches: `decode_scores` writes the f32 scores `[heads, s]` and, per head
    /// and block of keys, the statistics of their softmax; `decode_values` combines those into the
    /// weights and the argmax and sums the values under the weights. A custom op returns one tensor, so
    /// the kernels run on the inputs' storage directly.
    pub fn decode_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<super::DecodeAttention> {
        use candle_core::{op::BackpropOp, Storage};
        let q = q.contiguous()?;
        let (b, heads, c, d) = q.dims4()?;
        let (kb, kv_heads, s, kd) = k.dims4()?;
        let fits = b == 1 && c == 1 && kb == 1 && kd == d && v.dims() == k.dims() && s > 0 && kv_heads > 0 && heads % kv_heads == 0;
        if !fits || heads / kv_heads > super::MAX_GROUP {
            bail!("decode attention: queries {:?} over keys {:?} and values {:?}", q.dims(), k.dims(), v.dims());
        }
        let key_blocks = s.div_ceil(DECODE_KEYS_PER_BLOCK);
        let span = s.div_ceil((DECODE_VALUE_BLOCKS / kv_heads).max(1)).max(64);
        let scores_cfg = LaunchConfig {
            grid_dim: (key_blocks as u32, kv_heads as u32, 1),
            block_dim: (DECODE_KEYS_PER_BLOCK as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let values_cfg = LaunchConfig {
            grid_dim: (s.div_ceil(span) as u32, kv_heads as u32, 1),
            block_dim: (DECODE_VALUE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let scale = 1.0 / (d as f32).sqrt();
        let (dev, out, weights, argmax) = {
            let (qs, ql) = q.storage_and_layout();
            let (ks, kl) = k.storage_and_layout();
            let (vs, vl) = v.storage_and_layout();
            let (Storage::Cuda(qs), Storage::Cuda(ks), Storage::Cuda(vs)) = (&*qs, &*ks, &*vs) else {
                bail!("decode attention runs on CUDA only")
            };
            let (_, k_head) = row_major_strides(kl, "key")?;
            let (_, v_head) = row_major_strides(vl, "value")?;
            let name = half_type("decode attention", &[qs, ks, vs])?;
            let dev = qs.device().clone();
            let load =
                |kernel: &str| dev.get_or_load_custom_func(&format!("{kernel}_{name}_d{d}"), "headscope_decode_attention", DECODE_PTX);
            let (scores_func, values_func) = (load("decode_scores")?, load("decode_values")?);
            // SAFETY: the kernels write every element of these before anything reads it.
            let (scores, weights, argmax) =
                unsafe { (dev.alloc::<f32>(heads * s)?, dev.alloc::<f32>(heads * s)?, dev.alloc::<u32>(heads)?) };
            // Per head and block of keys: the largest score and the sum of exponentials (f32 pairs), and
            // the largest score's first position.
            // SAFETY: as above.
            let (block_stats, block_first) = unsafe { (dev.alloc::<f32>(2 * heads * key_blocks)?, dev.alloc::<u32>(heads * key_blocks)?) };
            // Blocks add their share of each output atomically: start from zero.
            let out = dev.alloc_zeros::<f32>(heads * d)?;
            macro_rules! launch {
                ($q:expr, $k:expr, $v:expr) => {{
                    let q = $q.slice(ql.start_offset()..);
                    let k = $k.slice(kl.start_offset()..);
                    let v = $v.slice(vl.start_offset()..);
                    let mut builder = scores_func.builder();
                    builder.arg(&q);
                    builder.arg(&k);
                    builder.arg(&scores);
                    builder.arg(&block_stats);
                    builder.arg(&block_first);
                    candle_core::builder_arg!(builder, heads as i32, kv_heads as i32, s as i32, k_head as i64, scale);
                    // SAFETY: arguments match the kernel's signature; shapes were checked above.
                    unsafe { builder.launch(scores_cfg) }.w()?;
                    let mut builder = values_func.builder();
                    builder.arg(&scores);
                    builder.arg(&block_stats);
                    builder.arg(&block_first);
                    builder.arg(&v);
                    builder.arg(&weights);
                    builder.arg(&out);
                    builder.arg(&argmax);
                    candle_core::builder_arg!(builder, heads as i32, kv_heads as i32, s as i32, v_head as i64, span as i32);
                    // SAFETY: as above.
                    unsafe { builder.launch(values_cfg) }.w()?;
                }};
            }
            match (&qs.slice, &ks.slice, &vs.slice) {
                (CudaStorageSlice::BF16(q), CudaStorageSlice::BF16(k), CudaStorageSlice::BF16(v)) => launch!(q, k, v),
                (CudaStorageSlice::F16(q), CudaStorageSlice::F16(k), CudaStorageSlice::F16(v)) => launch!(q, k, v),
                _ => unreachable!("types checked above"),
            }
            (dev, out, weights, argmax)
        };
        let tensor = |storage: CudaStorage, shape: Shape| Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false);
        let out = tensor(CudaStorage::wrap_cuda_slice(out, dev.clone()), Shape::from((b, heads, 1, d))).to_dtype(q.dtype())?;
        let weights = tensor(CudaStorage::wrap_cuda_slice(weights, dev.clone()), Shape::from((b, kv_heads, heads / kv_heads, 1, s)));
        let argmax = tensor(CudaStorage::wrap_cuda_slice(argmax, dev), Shape::from(heads));
        Ok(super::DecodeAttention { out, weights, argmax })
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use candle_core::Tensor;

    pub const AVAILABLE: bool = false;

    pub fn prefill_attention(_: &Tensor, _: &Tensor, _: &Tensor, _: Option<usize>) -> candle_core::Result<Tensor> {
        candle_core::bail!("flash prefill needs a CUDA build (--features cuda)")
    }

    pub fn prefill_variants(_: &candle_core::Device, _: usize) -> Vec<String> {
        Vec::new()
    }

    pub fn prefill_attention_variant(_: &Tensor, _: &Tensor, _: &Tensor, _: Option<usize>, _: &str) -> candle_core::Result<Tensor> {
        candle_core::bail!("flash prefill needs a CUDA build (--features cuda)")
    }

    pub fn decode_attention(_: &Tensor, _: &Tensor, _: &Tensor) -> candle_core::Result<super::DecodeAttention> {
        candle_core::bail!("decode attention kernels need a CUDA build (--features cuda)")
    }
}
