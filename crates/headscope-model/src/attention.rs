//! Grouped-query self-attention as a first-class, instrumented type: it reports each query head's
//! argmax position and, on request, whole attention rows, and it applies head masks. Keys and values
//! live in a preallocated per-layer cache; a prefill chunk of `C` queries builds a `C x S` score block,
//! never the full `T x T` matrix.
//!
//! Query head `h` reads key/value head `h / (heads / kv_heads)`, as Hugging Face's `repeat_kv` does; the
//! grouped matmul below (queries of one KV group stacked as rows) computes the same thing without
//! copying keys and values per query head.

use crate::error::{ModelError, Result};
use crate::kv_window::WindowedHeads;
use crate::mask::MaskMode;
use crate::norm::RmsNorm;
use crate::rope::Rope;
use crate::spec::ModelSpec;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};

/// A layer's key/value cache: `[1, kv_heads, capacity, head_dim]` each, written in place. Under a KV
/// plan ([`crate::kv_window`]) it holds only the KV heads kept whole, and `windowed` the others' sinks and
/// recent positions.
#[derive(Debug, Clone)]
pub struct LayerCache {
    k: Tensor,
    v: Tensor,
    /// The windowed KV heads, where a plan windows some.
    pub(crate) windowed: Option<WindowedHeads>,
}

impl LayerCache {
    /// A zeroed cache for `capacity` positions.
    pub fn new(spec: &ModelSpec, capacity: usize, dtype: DType, device: &Device) -> Result<Self> {
        Self::with_heads(spec.kv_heads, spec.head_dim, capacity, dtype, device)
    }

    fn with_heads(heads: usize, head_dim: usize, capacity: usize, dtype: DType, device: &Device) -> Result<Self> {
        let shape = (1, heads, capacity, head_dim);
        Ok(LayerCache { k: Tensor::zeros(shape, dtype, device)?, v: Tensor::zeros(shape, dtype, device)?, windowed: None })
    }

    /// A zeroed cache for `capacity` positions under a KV plan: `full[h]` says whether KV head h keeps
    /// every position; the others keep `sink` + `window` (their memory is all that is allocated).
    pub fn planned(
        spec: &ModelSpec,
        capacity: usize,
        dtype: DType,
        device: &Device,
        full: &[bool],
        sink: usize,
        window: usize,
    ) -> Result<Self> {
        if full.iter().all(|f| *f) {
            return Self::new(spec, capacity, dtype, device);
        }
        let kept: Vec<usize> = (0..full.len()).filter(|&h| full[h]).collect();
        let mut cache = Self::with_heads(kept.len(), spec.head_dim, capacity, dtype, device)?;
        cache.windowed = Some(WindowedHeads::new(full, sink, window, spec.head_dim, dtype, device)?);
        Ok(cache)
    }

    /// Positions the cache holds.
    pub fn capacity(&self) -> usize {
        self.k.dims()[2]
    }

    /// Bytes its tensors take.
    pub fn bytes(&self) -> usize {
        let own = (self.k.elem_count() + self.v.elem_count()) * self.k.dtype().size_in_bytes();
        own + self.windowed.as_ref().map_or(0, WindowedHeads::bytes)
    }

    /// A copy whose tensors do not share this one's storage (the cache is written in place).
    pub fn deep_copy(&self) -> Result<Self> {
        Ok(LayerCache { k: self.k.copy()?, v: self.v.copy()?, windowed: self.windowed.as_ref().map(WindowedHeads::deep_copy).transpose()? })
    }

    /// A larger cache holding the first `keep` positions of this one (a windowed part is kept as is: it
    /// moves to the new cache, which replaces this one).
    pub fn grown(&self, spec: &ModelSpec, capacity: usize, keep: usize) -> Result<Self> {
        let mut bigger = Self::with_heads(self.k.dims()[1], spec.head_dim, capacity, self.k.dtype(), self.k.device())?;
        if keep > 0 && self.k.dims()[1] > 0 {
            bigger.k.slice_set(&self.k.narrow(2, 0, keep)?.contiguous()?, 2, 0)?;
            bigger.v.slice_set(&self.v.narrow(2, 0, keep)?.contiguous()?, 2, 0)?;
        }
        bigger.windowed = self.windowed.clone();
        Ok(bigger)
    }
}

/// How one attention call is instrumented and masked.
#[derive(Debug, Clone, Default)]
pub struct AttentionControl<'a> {
    /// Per query head 1 (kept) or 0 (masked), shape `[1, heads, 1, 1]`, when a mask applies to this call.
    pub keep: Option<&'a Tensor>,
    /// How masked heads are knocked out.
    pub mode: MaskMode,
    /// Whether to return each head's argmax position (single-query calls only).
    pub argmax: bool,
    /// Query heads whose full attention row to return (single-query calls only).
    pub rows: &'a [usize],
    /// Use ops that autograd can differentiate (slower; for training).
    pub differentiable: bool,
    /// Let the call take the CUDA kernels of [`crate::flash`] where they support the tensors: the fused
    /// prefill kernel for several queries (it observes nothing, which a prefill does not need), the
    /// decode kernels for one query (the same probes as the plain path).
    pub fused: bool,
}

impl AttentionControl<'_> {
    /// The queries `[b, heads, c, d]` to attend with: in mode uniform, masked heads' queries are zeroed,
    /// so their scores are all equal and they attend uniformly.
    fn masked_queries(&self, q: &Tensor) -> Result<Tensor> {
        Ok(match (self.keep, self.mode) {
            (Some(keep), MaskMode::Uniform) => q.broadcast_mul(keep)?,
            _ => q.clone(),
        })
    }

    /// The head outputs `[b, heads, c, d]` to merge: in mode zero, masked heads' outputs are zeroed.
    fn masked_outputs(&self, out: Tensor) -> Result<Tensor> {
        Ok(match (self.keep, self.mode) {
            (Some(keep), MaskMode::Zero) => out.broadcast_mul(keep)?,
            _ => out,
        })
    }
}

/// What an instrumented single-query attention call observed.
#[derive(Debug, Clone)]
pub struct AttentionProbe {
    /// `[heads]` u32 on the device: per query head, the argmax key position relative to `first_key`.
    pub argmax: Option<Tensor>,
    /// Absolute position of the first key the query could see (non-zero with a sliding window).
    pub first_key: usize,
    /// Requested rows: (query head, weights over keys `first_key..`).
    pub rows: Vec<(usize, Vec<f32>)>,
}

/// One layer's attention: projections plus the instrumented score computation.
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    /// Per-head RMSNorms of queries and keys before the rotation (Qwen3, Gemma-3).
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: Option<usize>,
    /// What query-key products are multiplied by.
    scale: f64,
    /// Scores soft-capped to (-cap, cap) before the softmax (Gemma-2).
    softcap: Option<f64>,
}

impl Attention {
    /// Loads `self_attn.{q,k,v,o}_proj` (Phi-3: the fused `qkv_proj`) for layer `layer`, and the
    /// q/k norms where the family has them.
    pub fn new(spec: &ModelSpec, layer: usize, vb: VarBuilder) -> Result<Self> {
        let (h, kv, d) = (spec.heads, spec.kv_heads, spec.head_dim);
        let (q_proj, k_proj, v_proj) = if spec.fused_projections {
            // One matrix of q, k, v rows: each projection is a row range of it (a view, no copy).
            let fused = candle_nn::linear_b(spec.hidden_size, (h + 2 * kv) * d, spec.qkv_bias, vb.pp("qkv_proj"))?;
            let part = |start: usize, rows: usize| -> Result<Linear> {
                let bias = fused.bias().map(|b| b.narrow(0, start, rows)).transpose()?;
                Ok(Linear::new(fused.weight().narrow(0, start, rows)?, bias))
            };
            (part(0, h * d)?, part(h * d, kv * d)?, part((h + kv) * d, kv * d)?)
        } else {
            (
                candle_nn::linear_b(spec.hidden_size, h * d, spec.qkv_bias, vb.pp("q_proj"))?,
                candle_nn::linear_b(spec.hidden_size, kv * d, spec.qkv_bias, vb.pp("k_proj"))?,
                candle_nn::linear_b(spec.hidden_size, kv * d, spec.qkv_bias, vb.pp("v_proj"))?,
            )
        };
        let (q_norm, k_norm) = if spec.qk_norm {
            (
                Some(RmsNorm::load(&vb.pp("q_norm"), d, spec.rms_norm_eps, spec.norm_style)?),
                Some(RmsNorm::load(&vb.pp("k_norm"), d, spec.rms_norm_eps, spec.norm_style)?),
            )
        } else {
            (None, None)
        };
        Ok(Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj: candle_nn::linear_b(h * d, spec.hidden_size, spec.o_bias, vb.pp("o_proj"))?,
            q_norm,
            k_norm,
            heads: h,
            kv_heads: kv,
            head_dim: d,
            window: spec.sliding_windows.get(layer).copied().flatten(),
            scale: spec.attention_scale,
            softcap: spec.attention_softcap,
        })
    }

    /// Whether the fused CUDA kernels compute this layer's scores as the family defines them: they
    /// scale by 1/sqrt(head_dim) (another scale is folded into the queries) and do not soft-cap.
    fn kernels_apply(&self) -> bool {
        self.softcap.is_none()
    }

    /// Queries for the fused kernels: scaled so that the kernels' 1/sqrt(head_dim) gives this layer's
    /// scale.
    fn kernel_queries(&self, q: Tensor) -> Result<Tensor> {
        let fold = self.scale * (self.head_dim as f64).sqrt();
        if (fold - 1.0).abs() < 1e-12 {
            return Ok(q);
        }
        Ok((q * fold)?)
    }

    /// `t` (`[.., n, seq, d]` or `[.., seq, n, d]`) through `norm` over its last dimension, if any.
    fn head_norm(norm: &Option<RmsNorm>, t: Tensor, differentiable: bool) -> Result<Tensor> {
        match norm {
            None => Ok(t),
            Some(n) if differentiable => n.forward_differentiable(&t),
            Some(n) => n.forward(&t),
        }
    }

    /// The sliding window of this layer, if any.
    pub fn window(&self) -> Option<usize> {
        self.window
    }

    /// Projects `x` (`[batch, seq, hidden]`) into rotated q `[b, heads, seq, d]`, rotated k and v `[b, kv, seq, d]`.
    fn qkv(&self, x: &Tensor, pos: usize, rope: &Rope, differentiable: bool) -> Result<(Tensor, Tensor, Tensor)> {
        let q = self.queries(x, pos, rope, differentiable)?;
        let (k, v) = self.kv(x, pos, rope, differentiable)?;
        Ok((q, k, v))
    }

    /// Rotated queries `[b, heads, seq, d]` of `x`.
    fn queries(&self, x: &Tensor, pos: usize, rope: &Rope, differentiable: bool) -> Result<Tensor> {
        let q = Self::head_norm(&self.q_norm, self.split_heads(self.q_proj.forward(x)?, self.heads)?, differentiable)?;
        rope.apply(&q, pos, differentiable)
    }

    /// `[b, seq, n * d]` -> contiguous `[b, n, seq, d]`.
    fn split_heads(&self, t: Tensor, n: usize) -> Result<Tensor> {
        let (b, c, _) = t.dims3()?;
        Ok(t.reshape((b, c, n, self.head_dim))?.transpose(1, 2)?.contiguous()?)
    }

    /// Rotated keys and values `[b, kv, seq, d]` of `x`, in the cache's layout.
    fn kv(&self, x: &Tensor, pos: usize, rope: &Rope, differentiable: bool) -> Result<(Tensor, Tensor)> {
        let k = Self::head_norm(&self.k_norm, self.split_heads(self.k_proj.forward(x)?, self.kv_heads)?, differentiable)?;
        let k = rope.apply(&k, pos, differentiable)?;
        let v = self.split_heads(self.v_proj.forward(x)?, self.kv_heads)?;
        Ok((k, v))
    }

    /// Rotated queries of `x` for the fused prefill kernel: `[b, heads, seq, d]` as a view of the
    /// token-major `[b, seq, heads, d]` projection. The kernel reads that layout and writes its output
    /// in it, which spares two copies of the chunk's queries per layer (into head-major order and
    /// back) that cost about a tenth of a long prefill's time outside attention on the H100.
    fn token_major_queries(&self, x: &Tensor, pos: usize, rope: &Rope) -> Result<Tensor> {
        let (b, c, _) = x.dims3()?;
        let q = Self::head_norm(&self.q_norm, self.q_proj.forward(x)?.reshape((b, c, self.heads, self.head_dim))?, false)?;
        Ok(self.kernel_queries(rope.apply_token_major(&q, pos)?)?.transpose(1, 2)?)
    }

    /// Writes the rotated keys and the values of `x` (`[1, c, hidden]`, positions `pos..pos+c`) into
    /// `cache`: the first step of every cached attention call, and all that the last layer of a
    /// prefill needs (no one reads its output: a prefill makes no logits).
    pub fn fill_cache(&self, x: &Tensor, pos: usize, cache: &mut LayerCache, rope: &Rope) -> Result<()> {
        if cache.windowed.is_some() {
            // The windowed heads' ring is written after their attention; the output is not needed.
            self.forward_planned(x, pos, cache, rope, &mut MaskCache::default(), &AttentionControl::default())?;
            return Ok(());
        }
        let c = x.dims()[1];
        if pos + c > cache.capacity() {
            return Err(ModelError::TooLong(format!("position {} is past the KV cache ({} positions)", pos + c, cache.capacity())));
        }
        if x.device().is_cuda() {
            // Token-major keys and values go straight into the cache (one pass each, not two).
            let (b, c, _) = x.dims3()?;
            let shape = (b, c, self.kv_heads, self.head_dim);
            let k = Self::head_norm(&self.k_norm, self.k_proj.forward(x)?.reshape(shape)?, false)?;
            let k = rope.apply_token_major(&k, pos)?;
            crate::fused_ops::write_token_major(&cache.k, &k, pos)?;
            crate::fused_ops::write_token_major(&cache.v, &self.v_proj.forward(x)?.reshape(shape)?, pos)?;
        } else {
            let (k, v) = self.kv(x, pos, rope, false)?;
            cache.k.slice_set(&k, 2, pos)?;
            cache.v.slice_set(&v, 2, pos)?;
        }
        Ok(())
    }

    /// Softmax attention of q `[b, heads, c, d]` over k, v `[b, kv, s, d]` with an additive f32 `mask`.
    /// Returns the head outputs `[b, heads, c, d]` and the weights `[b, kv, group, c, s]` (f32).
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&ChunkMask>, control: &AttentionControl) -> Result<(Tensor, Tensor)> {
        let (b, heads, c, d) = q.dims4()?;
        // The heads of the tensors given: all of the layer's, or one part of them under a KV plan.
        let (kv_heads, s) = (k.dims()[1], k.dims()[2]);
        let group = heads / kv_heads;
        let qg = control.masked_queries(q)?.reshape((b, kv_heads, group * c, d))?;
        let scores = (qg.matmul(&k.t()?)? * self.scale)?;
        let mut scores = scores.to_dtype(DType::F32)?.reshape((b, kv_heads, group, c, s))?;
        if let Some(cap) = self.softcap {
            // Before the mask, as transformers does: a blocked key stays at -inf.
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        match mask {
            Some(ChunkMask::Full(mask)) => scores = scores.broadcast_add(mask)?,
            Some(ChunkMask::Tail(mask)) => {
                // Only the chunk's own keys (the last c columns) hide anything: mask those in place
                // instead of adding a c x s mask over every score, one full pass less per chunk.
                let tail = scores.narrow(D::Minus1, s - c, c)?.broadcast_add(mask)?.contiguous()?;
                scores.slice_set(&tail, 4, s - c)?;
            }
            None => {}
        }
        let weights =
            if control.differentiable { candle_nn::ops::softmax(&scores, D::Minus1)? } else { candle_nn::ops::softmax_last_dim(&scores)? };
        // `v` may be a view of the preallocated cache (strided over its capacity): the batched matmul
        // takes that stride as is, where a contiguous copy would move the whole V cache at every step.
        let out = weights.to_dtype(v.dtype())?.reshape((b, kv_heads, group * c, s))?.matmul(v)?;
        let out = control.masked_outputs(out.reshape((b, heads, c, d))?)?;
        Ok((out, weights))
    }

    /// [`Attention::attend`] for a single query on CUDA, through the decode kernels of [`crate::flash`],
    /// which also give every head's argmax.
    fn attend_decode_kernels(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        control: &AttentionControl,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let decoded = crate::flash::decode_attention(&self.kernel_queries(control.masked_queries(q)?)?, k, v)?;
        Ok((control.masked_outputs(decoded.out)?, decoded.weights, Some(decoded.argmax)))
    }

    /// Merges head outputs `[b, heads, c, d]` and applies the output projection.
    fn merge(&self, out: Tensor) -> Result<Tensor> {
        let (b, _, c, _) = out.dims4()?;
        Ok(self.o_proj.forward(&out.transpose(1, 2)?.reshape((b, c, self.heads * self.head_dim))?)?)
    }

    /// First key visible to a query at absolute position `pos` (sliding window: the last `window` keys).
    fn first_visible(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }

    /// Attention for `x` (`[1, c, hidden]`) at positions `pos..pos+c`, writing keys and values into
    /// `cache`. `masks` gives the additive mask for a chunk of `c > 1` queries per window setting.
    pub fn forward_cached(
        &self,
        x: &Tensor,
        pos: usize,
        cache: &mut LayerCache,
        rope: &Rope,
        masks: &mut MaskCache,
        control: &AttentionControl,
    ) -> Result<(Tensor, Option<AttentionProbe>)> {
        if cache.windowed.is_some() {
            return self.forward_planned(x, pos, cache, rope, masks, control);
        }
        let c = x.dims()[1];
        self.fill_cache(x, pos, cache, rope)?;
        let first = self.first_visible(pos);
        let s = pos + c - first;
        let keys = cache.k.narrow(2, first, s)?;
        let values = cache.v.narrow(2, first, s)?;
        if c > 1 && control.fused && self.kernels_apply() && crate::flash::supported(x, &keys) {
            // A prefill chunk observes nothing, so the fused kernel can take it: no score block at all.
            let q = self.token_major_queries(x, pos, rope)?;
            let out = crate::flash::prefill_attention(&control.masked_queries(&q)?, &keys, &values, self.window)?;
            return Ok((self.merge(control.masked_outputs(out)?)?, None));
        }
        let q = self.queries(x, pos, rope, false)?;
        let mask = match (c, self.window) {
            (1, _) => None,
            // Without a window every earlier key is visible to the whole chunk.
            (_, None) => Some(ChunkMask::Tail(masks.tail(c, x.device())?)),
            (_, Some(_)) => Some(ChunkMask::Full(masks.get(pos, c, first, self.window, x.device())?)),
        };
        let (out, weights, kernel_argmax) = if c == 1 && control.fused && self.kernels_apply() && crate::flash::decode_supported(&q, &keys)
        {
            self.attend_decode_kernels(&q, &keys, &values, control)?
        } else {
            let (out, weights) = self.attend(&q, &keys, &values, mask.as_ref(), control)?;
            (out, weights, None)
        };
        let probe = if c == 1 && (control.argmax || !control.rows.is_empty()) {
            let flat = weights.reshape((self.heads, s))?;
            let argmax = match (control.argmax, kernel_argmax) {
                (false, _) => None,
                (true, Some(a)) => Some(a),
                (true, None) => Some(flat.argmax(D::Minus1)?),
            };
            let mut rows = Vec::with_capacity(control.rows.len());
            for &h in control.rows {
                rows.push((h, flat.get(h)?.to_vec1::<f32>()?));
            }
            Some(AttentionProbe { argmax, first_key: first, rows })
        } else {
            None
        };
        Ok((self.merge(out)?, probe))
    }

    /// [`Attention::forward_cached`] under a KV plan: the query heads of the whole KV heads attend to
    /// every position, those of the windowed ones to the sink positions and the last `window` positions
    /// up to their own (StreamingLLM's shape; keys keep the rotation of their true positions). Each part
    /// attends on its own; the outputs go back into head order before the output projection. Argmax
    /// positions and attention rows are absolute positions, as on the plain path.
    fn forward_planned(
        &self,
        x: &Tensor,
        pos: usize,
        cache: &mut LayerCache,
        rope: &Rope,
        masks: &mut MaskCache,
        control: &AttentionControl,
    ) -> Result<(Tensor, Option<AttentionProbe>)> {
        let c = x.dims()[1];
        let device = x.device();
        let (q, k, v) = self.qkv(x, pos, rope, false)?;
        let q = control.masked_queries(&q)?;
        let group = self.heads / self.kv_heads;
        let index = |ids: &[usize]| -> Result<Tensor> {
            Ok(Tensor::from_vec(ids.iter().map(|&i| i as u32).collect::<Vec<u32>>(), ids.len(), device)?)
        };
        let query_heads = |kv: &[usize]| -> Vec<usize> { kv.iter().flat_map(|&h| h * group..(h + 1) * group).collect() };
        let windowed = cache.windowed.as_ref().ok_or_else(|| ModelError::Invalid("no windowed heads in this layer".into()))?;
        let (full, win) = (windowed.full.clone(), windowed.windowed.clone());
        let plain = AttentionControl::default();
        // A decode step runs each part through the fused decode kernels where they apply (the windowed
        // part over its visible keys only, as the kernels take no mask), with the argmax on the device.
        let kernels = c == 1 && control.fused && self.kernels_apply() && crate::flash::decode_supported(&q, &k);
        let attend = |q: &Tensor, keys: &Tensor, values: &Tensor, mask: Option<&ChunkMask>| -> Result<(Tensor, Tensor, Option<Tensor>)> {
            if kernels {
                let d = crate::flash::decode_attention(&self.kernel_queries(q.clone())?, keys, values)?;
                Ok((d.out, d.weights, Some(d.argmax)))
            } else {
                let (out, weights) = self.attend(q, keys, values, mask, &plain)?;
                Ok((out, weights, None))
            }
        };
        let mut parts: Vec<PlanPart> = Vec::with_capacity(2);
        if !full.is_empty() {
            let ids = index(&full)?;
            cache.k.slice_set(&k.index_select(&ids, 1)?.contiguous()?, 2, pos)?;
            cache.v.slice_set(&v.index_select(&ids, 1)?.contiguous()?, 2, pos)?;
            let (keys, values) = (cache.k.narrow(2, 0, pos + c)?, cache.v.narrow(2, 0, pos + c)?);
            let heads = query_heads(&full);
            let mask = if c > 1 { Some(ChunkMask::Tail(masks.tail(c, device)?)) } else { None };
            let (out, weights, argmax) = attend(&q.index_select(&index(&heads)?, 1)?, &keys, &values, mask.as_ref())?;
            parts.push(PlanPart { heads, out, weights, positions: (0..pos + c).collect(), argmax });
        }
        if !win.is_empty() {
            let ids = index(&win)?;
            let (kw, vw) = (k.index_select(&ids, 1)?.contiguous()?, v.index_select(&ids, 1)?.contiguous()?);
            let ring = cache.windowed.as_mut().expect("checked above");
            let heads = query_heads(&win);
            let qw = q.index_select(&index(&heads)?, 1)?;
            let (out, weights, positions, argmax) = if kernels {
                let (keys, values, positions) = ring.visible_keys(&kw, &vw, pos)?;
                let (out, weights, argmax) = attend(&qw, &keys, &values, None)?;
                (out, weights, positions, argmax)
            } else {
                let (keys, values, positions) = ring.keys_with(&kw, &vw, pos)?;
                let mask = ChunkMask::Full(ring.visibility(pos, c, &positions, device)?);
                let (out, weights, argmax) = attend(&qw, &keys, &values, Some(&mask))?;
                (out, weights, positions, argmax)
            };
            ring.write(&kw, &vw, pos)?;
            parts.push(PlanPart { heads, out, weights, positions, argmax });
        }
        // Back into head order.
        let order: Vec<usize> = parts.iter().flat_map(|p| p.heads.iter().copied()).collect();
        let mut inverse = vec![0usize; self.heads];
        for (i, &h) in order.iter().enumerate() {
            inverse[h] = i;
        }
        let out = Tensor::cat(&parts.iter().map(|p| &p.out).collect::<Vec<_>>(), 1)?.index_select(&index(&inverse)?, 1)?;
        let out = control.masked_outputs(out)?;
        let on_device = parts.iter().all(|p| p.argmax.is_some());
        let probe = if c == 1 && control.rows.is_empty() && control.argmax && on_device {
            // The kernels' argmax indices become positions on the device: no weights leave it.
            let mut found = Vec::with_capacity(parts.len());
            for PlanPart { positions, argmax, .. } in &parts {
                let at = Tensor::from_vec(positions.iter().map(|&p| p as u32).collect::<Vec<u32>>(), positions.len(), device)?;
                found.push(at.index_select(argmax.as_ref().expect("checked above"), 0)?);
            }
            let argmax = Tensor::cat(&found, 0)?.index_select(&index(&inverse)?, 0)?;
            Some(AttentionProbe { argmax: Some(argmax), first_key: 0, rows: vec![] })
        } else if c == 1 && (control.argmax || !control.rows.is_empty()) {
            let mut argmax = vec![0u32; self.heads];
            let mut rows = Vec::with_capacity(control.rows.len());
            for PlanPart { heads, weights, positions, argmax: kernel_argmax, .. } in &parts {
                let table = weights.reshape((heads.len(), positions.len()))?.to_vec2::<f32>()?;
                // The kernels' argmax where they ran (the first largest score, as on the plain path).
                let kernel_argmax = kernel_argmax.as_ref().map(|a| a.to_vec1::<u32>()).transpose()?;
                for (i, (row, &h)) in table.iter().zip(heads).enumerate() {
                    let best = match &kernel_argmax {
                        Some(a) => a[i] as usize,
                        None => row.iter().enumerate().fold(0, |b, (i, &w)| if w > row[b] { i } else { b }),
                    };
                    argmax[h] = positions[best] as u32;
                    if control.rows.contains(&h) {
                        let mut full_row = vec![0f32; pos + 1];
                        for (&p, &w) in positions.iter().zip(row) {
                            full_row[p] = w;
                        }
                        rows.push((h, full_row));
                    }
                }
            }
            let argmax = control.argmax.then(|| Tensor::from_vec(argmax, self.heads, device)).transpose()?;
            Some(AttentionProbe { argmax, first_key: 0, rows })
        } else {
            None
        };
        Ok((self.merge(out)?, probe))
    }

    /// Full causal attention over `x` (`[b, t, hidden]`) with no cache: for training and evaluation.
    pub fn forward_sequence(&self, x: &Tensor, rope: &Rope, masks: &mut MaskCache, control: &AttentionControl) -> Result<Tensor> {
        let t = x.dims()[1];
        let (q, k, v) = self.qkv(x, 0, rope, control.differentiable)?;
        let default_scale = (self.scale * (self.head_dim as f64).sqrt() - 1.0).abs() < 1e-12;
        if control.differentiable && q.dtype() == DType::F32 && default_scale && self.softcap.is_none() {
            // One autograd node instead of a graph of elementary ops over every t x t score.
            let out = crate::train_attention::causal_attention(&control.masked_queries(&q)?, &k, &v, self.window)?;
            return self.merge(control.masked_outputs(out)?);
        }
        let mask = ChunkMask::Full(masks.get(0, t, 0, self.window, x.device())?);
        let (out, _) = self.attend(&q, &k, &v, Some(&mask), control)?;
        self.merge(out)
    }
}

/// The additive mask of one chunk: over all of its keys, or over only its own last `c` keys.
enum ChunkMask {
    /// `[c, s]`.
    Full(Tensor),
    /// `[c, c]`: the chunk's queries over the chunk's own keys (causal); earlier keys are all visible.
    Tail(Tensor),
}

/// Additive causal (and sliding-window) masks for one chunk, shared by the layers that use the same window.
#[derive(Debug, Default)]
pub struct MaskCache {
    key: Option<(usize, usize)>,
    by_window: Vec<((usize, Option<usize>), Tensor)>,
    tail: Option<Tensor>,
}

impl MaskCache {
    /// The `[c, c]` causal mask of a chunk over its own keys: 0 on and below the diagonal, -inf above.
    pub fn tail(&mut self, c: usize, device: &Device) -> Result<Tensor> {
        if let Some(t) = self.tail.as_ref().filter(|t| t.dims()[0] == c) {
            return Ok(t.clone());
        }
        let t = build_mask(0, c, 0, None, device)?;
        self.tail = Some(t.clone());
        Ok(t)
    }

    /// The `[c, s]` mask for queries at `pos..pos+c` over keys `first..pos+c`: 0 where visible, -inf elsewhere.
    pub fn get(&mut self, pos: usize, c: usize, first: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
        if self.key != Some((pos, c)) {
            self.key = Some((pos, c));
            self.by_window.clear();
        }
        if let Some((_, m)) = self.by_window.iter().find(|(k, _)| *k == (first, window)) {
            return Ok(m.clone());
        }
        let m = build_mask(pos, c, first, window, device)?;
        self.by_window.push(((first, window), m.clone()));
        Ok(m)
    }
}

/// The `[c, s]` additive mask for queries at `pos..pos+c` over keys `first..pos+c`, built on `device`
/// from position vectors, so a long context's chunk never fills a `c x s` host buffer.
fn build_mask(pos: usize, c: usize, first: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let s = pos + c - first;
    // Positions as f32 are exact below 2^24 tokens; the difference query - key decides visibility.
    let queries = Tensor::arange(pos as f32, (pos + c) as f32, device)?.reshape((c, 1))?;
    let keys = Tensor::arange(first as f32, (pos + c) as f32, device)?.reshape((1, s))?;
    let distance = queries.broadcast_sub(&keys)?;
    let mut visible = distance.ge(0f64)?;
    if let Some(w) = window {
        visible = (visible * distance.lt(w as f64)?)?;
    }
    let zero = Tensor::zeros((), DType::F32, device)?.broadcast_as((c, s))?;
    let blocked = Tensor::new(f32::NEG_INFINITY, device)?.broadcast_as((c, s))?;
    Ok(visible.where_cond(&zero, &blocked)?)
}

/// One part of a layer's heads under a KV plan (the query heads of the whole KV heads, or of the
/// windowed ones), as [`Attention::forward_planned`] computed it.
struct PlanPart {
    /// The query heads.
    heads: Vec<usize>,
    /// Their outputs `[1, n, c, d]`.
    out: Tensor,
    /// Their weights `[1, kv, group, c, keys]`.
    weights: Tensor,
    /// Each key's position.
    positions: Vec<usize>,
    /// The decode kernels' argmax, as an index into `positions`, where they ran.
    argmax: Option<Tensor>,
}
