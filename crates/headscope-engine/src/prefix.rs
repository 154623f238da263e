//! What a KV cache is known to hold, so that a new prompt computes only what it does not share with the
//! last one ([`Engine::prefill_reusing`](crate::Engine::prefill_reusing)). Both backends keep one of
//! these beside their cache.
//!
//! A position's keys and values depend on every position before it and on the mask in effect when it
//! was computed. So only a leading run of positions, all computed under one mask effect, can stand in
//! for a new prefill: positions past it (a decode step under a decode-scope mask, a memory probe's jump)
//! are not tracked at all. In a NIAH sweep, tests of one needle and length at different depths share the
//! haystack up to the shallower needle, and prompts under decode-scope masks share everything.

/// The token ids of a cache's leading positions `0..ids.len()`, all computed under the same `effect`.
/// `E` is the backend's description of what a mask does to a prefill (equal effects compute equal
/// keys and values; no mask and a decode-scope mask have the same effect on a prefill).
#[derive(Debug, Clone, Default)]
pub struct CachedPrefix<E> {
    ids: Vec<u32>,
    effect: E,
}

impl<E: Clone + PartialEq + Default> CachedPrefix<E> {
    /// Notes that `ids` were just computed at positions `start..` under `effect`: they extend the run
    /// when they follow it directly and were computed as it was (an empty run takes any effect).
    pub fn written(&mut self, start: usize, ids: &[u32], effect: &E) {
        if start != self.ids.len() {
            return;
        }
        if self.ids.is_empty() {
            self.effect = effect.clone();
        } else if &self.effect != effect {
            return;
        }
        self.ids.extend_from_slice(ids);
    }

    /// The cache is unknown from `position` on.
    pub fn truncate(&mut self, position: usize) {
        self.ids.truncate(position);
    }

    /// The cache is unknown altogether.
    pub fn forget(&mut self) {
        self.ids.clear();
        self.effect = E::default();
    }

    /// The known token ids.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// How many leading positions of `ids` a prefill under `effect` may take from the cache: the longest
    /// common prefix of the known ids and `ids`, or 0 when the cache was computed under another effect.
    pub fn reusable(&self, ids: &[u32], effect: &E) -> usize {
        if &self.effect != effect {
            return 0;
        }
        self.ids.iter().zip(ids).take_while(|(a, b)| a == b).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_uniform_leading_run_is_reusable() {
        let mut c = CachedPrefix::<u8>::default();
        c.written(0, &[1, 2, 3], &0);
        assert_eq!(c.reusable(&[1, 2, 9, 9], &0), 2);
        assert_eq!(c.reusable(&[1, 2, 3], &1), 0, "another mask effect computes other keys");
        // A step under another effect (a decode-scope mask) is not tracked; the run before it still is.
        c.written(3, &[4], &1);
        assert_eq!(c.ids(), &[1, 2, 3]);
        // A write that does not follow the run (a jump) is not tracked either.
        c.written(5, &[7], &0);
        assert_eq!(c.ids(), &[1, 2, 3]);
        c.written(3, &[4, 5], &0);
        assert_eq!(c.reusable(&[1, 2, 3, 4, 5, 6], &0), 5);
        c.truncate(2);
        assert_eq!(c.reusable(&[1, 2, 3], &0), 2);
        c.forget();
        assert_eq!(c.reusable(&[1], &0), 0);
        // An empty run takes the effect of its first write.
        c.written(0, &[1], &2);
        assert_eq!((c.reusable(&[1], &2), c.reusable(&[1], &0)), (1, 0));
    }
}
