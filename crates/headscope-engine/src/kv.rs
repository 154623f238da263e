//! Head-level KV-cache plans (the paper's "future work", built by DuoAttention, RazorAttention and
//! HeadKV): per key/value head of every attention layer, either the whole cache or only a few
//! attention-sink positions and a window of recent ones (StreamingLLM's shape). Retrieval heads need the
//! whole context; most heads do not. A plan says which KV heads keep everything; the backend allocates
//! the others' cache for `sink + window` positions only.
//!
//! Grouped-query attention: a KV head serves `heads / kv_heads` query heads, and stays whole when any of
//! them is chosen.

use crate::error::{EngineError, Result};
use crate::spec::ModelSpec;
use headscope_core::rng::SplitMix64;
use headscope_core::HeadId;

/// Which KV heads keep the whole cache, and what the others keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPlan {
    /// Leading positions every windowed head keeps (attention sinks).
    pub sink: usize,
    /// Most recent positions every windowed head keeps (its own position included).
    pub window: usize,
    /// Per attention layer (rows of the head grid), per KV head: whether it keeps the whole cache.
    pub full: Vec<Vec<bool>>,
}

impl KvPlan {
    fn check_window(sink: usize, window: usize) -> Result<()> {
        if window == 0 {
            return Err(EngineError::Invalid("a KV window of 0 positions: a head must see at least its own position".into()));
        }
        if sink.checked_add(window).is_none() {
            return Err(EngineError::Invalid("the KV sink plus window overflows".into()));
        }
        Ok(())
    }

    /// Every KV head windowed.
    pub fn all_windowed(spec: &ModelSpec, sink: usize, window: usize) -> Result<Self> {
        Self::check_window(sink, window)?;
        Ok(KvPlan { sink, window, full: vec![vec![false; spec.kv_heads]; spec.head_shape().layers] })
    }

    /// The KV heads of `query_heads` (the top-K retrieval heads, say) whole, the rest windowed.
    pub fn keeping_heads(spec: &ModelSpec, query_heads: &[HeadId], sink: usize, window: usize) -> Result<Self> {
        let mut plan = Self::all_windowed(spec, sink, window)?;
        let shape = spec.head_shape();
        shape.check(query_heads).map_err(|e| EngineError::Invalid(e.to_string()))?;
        let group = spec.group_size();
        for h in query_heads {
            plan.full[h.layer][h.head / group] = true;
        }
        Ok(plan)
    }

    /// `count` KV heads drawn at random (seeded) whole, the rest windowed.
    pub fn random(spec: &ModelSpec, count: usize, seed: u64, sink: usize, window: usize) -> Result<Self> {
        let mut plan = Self::all_windowed(spec, sink, window)?;
        let layers = plan.full.len();
        let total = layers * spec.kv_heads;
        if count > total {
            return Err(EngineError::Invalid(format!("{count} random KV heads of a model with {total}")));
        }
        let mut all: Vec<usize> = (0..total).collect();
        SplitMix64::new(seed).shuffle(&mut all);
        for i in &all[..count] {
            plan.full[i / spec.kv_heads][i % spec.kv_heads] = true;
        }
        Ok(plan)
    }

    /// KV heads that keep the whole cache.
    pub fn full_heads(&self) -> usize {
        self.full.iter().flatten().filter(|f| **f).count()
    }

    /// Whether no head is windowed (the plan changes nothing).
    pub fn is_full(&self) -> bool {
        self.full.iter().flatten().all(|f| *f)
    }

    /// Whether the plan fits `spec`'s head grid.
    pub fn check(&self, spec: &ModelSpec) -> Result<()> {
        Self::check_window(self.sink, self.window)?;
        let layers = spec.head_shape().layers;
        if self.full.len() != layers || self.full.iter().any(|l| l.len() != spec.kv_heads) {
            return Err(EngineError::Invalid(format!(
                "a KV plan for another model (the model has {layers} attention layers of {} KV heads)",
                spec.kv_heads
            )));
        }
        Ok(())
    }

    /// Bytes of keys and values a context of `positions` tokens holds under the plan, in
    /// `dtype_bytes`-byte elements: the whole heads grow with it, the windowed ones stop at
    /// `sink + window`.
    pub fn cache_bytes(&self, spec: &ModelSpec, positions: usize, dtype_bytes: usize) -> u64 {
        let per_position = 2 * spec.head_dim as u64 * dtype_bytes as u64;
        let full = self.full_heads() as u64;
        let windowed = self.full.iter().flatten().count() as u64 - full;
        per_position * (full * positions as u64 + windowed * positions.min(self.sink + self.window) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec() -> ModelSpec {
        let config = r#"{"model_type":"llama","vocab_size":16,"hidden_size":32,"intermediate_size":16,
            "num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2}"#;
        ModelSpec::from_config_json(config, Path::new("config.json")).unwrap()
    }

    #[test]
    fn a_kv_head_stays_whole_when_any_of_its_query_heads_is_chosen() {
        let s = spec(); // 4 query heads over 2 KV heads: query heads 0, 1 read KV head 0
        let plan = KvPlan::keeping_heads(&s, &[HeadId::new(0, 1), HeadId::new(1, 3), HeadId::new(1, 2)], 4, 8).unwrap();
        assert_eq!(plan.full, vec![vec![true, false], vec![false, true]]);
        assert_eq!(plan.full_heads(), 2);
        // d = 8: 2 x 8 x 4 bytes a position; two whole heads at 100 positions, two windowed at 12.
        assert_eq!(plan.cache_bytes(&s, 100, 4), 64 * (2 * 100 + 2 * 12));
        assert!(KvPlan::keeping_heads(&s, &[HeadId::new(2, 0)], 4, 8).is_err());
        assert!(KvPlan::all_windowed(&s, 4, 0).is_err());
    }

    #[test]
    fn random_plans_are_seeded_and_keep_exactly_k_heads() {
        let s = spec();
        let a = KvPlan::random(&s, 3, 7, 0, 16).unwrap();
        assert_eq!(a.full_heads(), 3);
        assert_eq!(a, KvPlan::random(&s, 3, 7, 0, 16).unwrap());
        assert!((0..20).any(|seed| KvPlan::random(&s, 3, seed, 0, 16).unwrap() != a));
        assert!(KvPlan::random(&s, 5, 1, 0, 16).is_err());
        assert!(KvPlan::random(&s, 4, 1, 0, 16).unwrap().is_full());
    }
}
