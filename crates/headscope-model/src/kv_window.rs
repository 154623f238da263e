//! The windowed part of a layer's KV cache under a head-level plan ([`headscope_engine::KvPlan`]): for
//! the KV heads that do not keep every position, the first `sink` positions and a ring of the last
//! `window`, `sink + window` slots per head in all, allocated once. A position past the sinks lands in
//! slot `sink + (p - sink) % window`, overwriting the one `window` positions older.

use crate::error::{ModelError, Result};
use candle_core::{DType, Device, Tensor};

/// The windowed KV heads of one layer. A clone shares the ring's storage, which is written in place:
/// [`WindowedHeads::deep_copy`] makes one that does not (snapshots, forks).
#[derive(Debug, Clone)]
pub struct WindowedHeads {
    /// KV heads that keep every position (in the order of the layer cache's tensors).
    pub(crate) full: Vec<usize>,
    /// KV heads windowed (in the order of the ring's tensors).
    pub(crate) windowed: Vec<usize>,
    /// `[1, windowed, sink + window, head_dim]`.
    ring_k: Tensor,
    ring_v: Tensor,
    /// The position each slot holds.
    slots: Vec<Option<usize>>,
    sink: usize,
    window: usize,
}

impl WindowedHeads {
    /// The windowed heads of a layer whose KV head h is kept whole when `full[h]`.
    pub fn new(full: &[bool], sink: usize, window: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        if window == 0 {
            return Err(ModelError::Invalid("a KV window of 0 positions".into()));
        }
        let windowed: Vec<usize> = (0..full.len()).filter(|&h| !full[h]).collect();
        let slots = sink + window;
        let shape = (1, windowed.len(), slots, head_dim);
        Ok(WindowedHeads {
            full: (0..full.len()).filter(|&h| full[h]).collect(),
            windowed,
            ring_k: Tensor::zeros(shape, dtype, device)?,
            ring_v: Tensor::zeros(shape, dtype, device)?,
            slots: vec![None; slots],
            sink,
            window,
        })
    }

    /// A copy whose ring does not share this one's storage.
    pub fn deep_copy(&self) -> Result<Self> {
        Ok(WindowedHeads { ring_k: self.ring_k.copy()?, ring_v: self.ring_v.copy()?, ..self.clone() })
    }

    /// Bytes the ring takes.
    pub fn bytes(&self) -> usize {
        (self.ring_k.elem_count() + self.ring_v.elem_count()) * self.ring_k.dtype().size_in_bytes()
    }

    /// Forgets every position (a new sequence).
    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    fn slot_of(&self, p: usize) -> usize {
        if p < self.sink {
            p
        } else {
            self.sink + (p - self.sink) % self.window
        }
    }

    /// The keys and values a chunk at `pos` attends to: what the ring holds before `pos` (in position
    /// order), then the chunk's own `k`, `v` (`[1, windowed, c, d]`); with each key's position.
    pub fn keys_with(&self, k: &Tensor, v: &Tensor, pos: usize) -> Result<(Tensor, Tensor, Vec<usize>)> {
        self.held_then(k, v, pos, |p| p < pos)
    }

    /// The held positions `keep` selects, in position order, then the chunk's own keys and values.
    fn held_then(&self, k: &Tensor, v: &Tensor, pos: usize, keep: impl Fn(usize) -> bool) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let c = k.dims()[2];
        let mut held: Vec<(usize, usize)> =
            self.slots.iter().enumerate().filter_map(|(s, p)| p.filter(|&p| keep(p)).map(|p| (p, s))).collect();
        held.sort_unstable();
        let mut positions: Vec<usize> = held.iter().map(|(p, _)| *p).collect();
        positions.extend(pos..pos + c);
        if held.is_empty() {
            return Ok((k.clone(), v.clone(), positions));
        }
        let slots = Tensor::from_vec(held.iter().map(|(_, s)| *s as u32).collect::<Vec<u32>>(), held.len(), k.device())?;
        let keys = Tensor::cat(&[&self.ring_k.index_select(&slots, 2)?, k], 2)?;
        let values = Tensor::cat(&[&self.ring_v.index_select(&slots, 2)?, v], 2)?;
        Ok((keys, values, positions))
    }

    /// The keys and values a single query at `pos` sees: the held positions it can see (sinks, and those
    /// less than `window` back), in position order, then its own `k`, `v` (`[1, windowed, 1, d]`); with
    /// each key's position. No mask is needed over them (the fused decode kernel takes none).
    pub fn visible_keys(&self, k: &Tensor, v: &Tensor, pos: usize) -> Result<(Tensor, Tensor, Vec<usize>)> {
        self.held_then(k, v, pos, |p| p < pos && (p < self.sink || pos - p < self.window))
    }

    /// The additive `[c, keys]` mask of a chunk of `c` queries at `pos` over keys at `positions`: a
    /// query at q sees a key at p <= q when p is a sink or q - p < window.
    pub fn visibility(&self, pos: usize, c: usize, positions: &[usize], device: &Device) -> Result<Tensor> {
        let mut mask = Vec::with_capacity(c * positions.len());
        for q in pos..pos + c {
            mask.extend(positions.iter().map(|&p| if p <= q && (p < self.sink || q - p < self.window) { 0f32 } else { f32::NEG_INFINITY }));
        }
        Ok(Tensor::from_vec(mask, (c, positions.len()), device)?)
    }

    /// Writes a chunk's keys and values (positions `pos..`) into the ring: the sinks among them, and the
    /// last `window` (earlier ones would be overwritten within the chunk).
    pub fn write(&mut self, k: &Tensor, v: &Tensor, pos: usize) -> Result<()> {
        let c = k.dims()[2];
        for t in 0..c {
            let p = pos + t;
            if p >= self.sink && p + self.window < pos + c {
                continue;
            }
            let slot = self.slot_of(p);
            self.ring_k.slice_set(&k.narrow(2, t, 1)?.contiguous()?, 2, slot)?;
            self.ring_v.slice_set(&v.narrow(2, t, 1)?.contiguous()?, 2, slot)?;
            self.slots[slot] = Some(p);
        }
        Ok(())
    }
}
