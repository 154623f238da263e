//! Masking plans: which heads to mask. The model crate applies them; these only choose.

use crate::error::{CoreError, Result};
use crate::head::HeadId;
use crate::rng::SplitMix64;
use crate::score::HeadScores;

/// The `k` heads with the highest mean retrieval score (ties in head order).
pub fn top_k(scores: &HeadScores, k: usize) -> Result<Vec<HeadId>> {
    let ranked = scores.ranked();
    if k > ranked.len() {
        return Err(CoreError::invalid(format!("cannot mask the top {k} heads: the model has {} heads", ranked.len())));
    }
    Ok(ranked.into_iter().take(k).map(|(h, _)| h).collect())
}

/// `k` heads drawn with `seed` from the non-retrieval heads (mean score <= `threshold`).
///
/// The official code drew from all heads (retrieval heads included) without a seed; drawing only from
/// non-retrieval heads is what makes random-K the control for top-K.
pub fn random_k(scores: &HeadScores, k: usize, seed: u64, threshold: f64) -> Result<Vec<HeadId>> {
    let mut pool: Vec<HeadId> = scores.shape().iter().filter(|h| scores.mean(*h) <= threshold).collect();
    if k > pool.len() {
        return Err(CoreError::invalid(format!(
            "cannot draw {k} random non-retrieval heads: only {} heads score at most {threshold}",
            pool.len()
        )));
    }
    SplitMix64::new(seed).shuffle(&mut pool);
    pool.truncate(k);
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::HeadShape;

    fn scores() -> HeadScores {
        // 2 layers x 4 heads; heads 0-1 (0.9) and 1-3 (0.5) are retrieval heads, 0-2 sits at 0.1.
        let means = [0.0, 0.9, 0.1, 0.05, 0.0, 0.0, 0.02, 0.5];
        HeadScores::from_lists(HeadShape::new(2, 4), means.iter().map(|&m| vec![m]).collect()).unwrap()
    }

    #[test]
    fn top_k_takes_the_highest_means() {
        assert_eq!(top_k(&scores(), 2).unwrap(), vec![HeadId::new(0, 1), HeadId::new(1, 3)]);
        assert!(top_k(&scores(), 9).is_err());
        assert!(top_k(&scores(), 0).unwrap().is_empty());
    }

    #[test]
    fn random_k_is_seeded_and_never_takes_retrieval_heads() {
        let s = scores();
        let a = random_k(&s, 3, 42, 0.1).unwrap();
        assert_eq!(a, random_k(&s, 3, 42, 0.1).unwrap());
        for seed in 0..50 {
            let r = random_k(&s, 6, seed, 0.1).unwrap();
            assert_eq!(r.len(), 6);
            assert!(!r.contains(&HeadId::new(0, 1)) && !r.contains(&HeadId::new(1, 3)));
        }
        let differ = (0..20).any(|seed| random_k(&s, 2, seed, 0.1).unwrap() != a[..2]);
        assert!(differ, "different seeds must give different draws");
        assert!(random_k(&s, 7, 0, 0.1).unwrap_err().to_string().contains("only 6"));
    }
}
