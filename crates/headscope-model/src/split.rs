//! Splitting the decoder layers over several devices (a pipeline): each device holds one contiguous
//! block of layers, their weights and their KV cache; the hidden state moves to the next device
//! between blocks. The embeddings live on the first device, the final norm and LM head on the last.

use crate::error::{ModelError, Result};
use std::ops::Range;

/// Contiguous blocks of layers, one per device in order, that cover every layer once and keep the
/// heaviest device as light as possible. A device's load is its layers' bytes, plus `first_extra` on
/// the first device (embeddings) and `last_extra` on the last (final norm, LM head), divided by its
/// `shares` entry (free memory where the backend reports it, else equal): the split minimises the
/// largest load. Ties go to the split that gives earlier devices fewer layers, so the result does
/// not depend on float rounding between equal candidates.
pub fn plan_layer_split(layer_bytes: &[u64], first_extra: u64, last_extra: u64, shares: &[f64]) -> Result<Vec<Range<usize>>> {
    let (layers, devices) = (layer_bytes.len(), shares.len());
    if devices == 0 {
        return Err(ModelError::Invalid("splitting layers needs at least one device".into()));
    }
    if devices > layers {
        return Err(ModelError::Invalid(format!(
            "{devices} devices for {layers} layers: every device needs at least one layer, so give at most {layers} devices"
        )));
    }
    if let Some(bad) = shares.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(ModelError::Invalid(format!("a device's share of the layers must be positive, not {bad}")));
    }
    let mut prefix = vec![0u64; layers + 1];
    for (i, b) in layer_bytes.iter().enumerate() {
        prefix[i + 1] = prefix[i] + b;
    }
    let load = |d: usize, from: usize, to: usize| {
        let mut bytes = prefix[to] - prefix[from];
        if d == 0 {
            bytes += first_extra;
        }
        if d + 1 == devices {
            bytes += last_extra;
        }
        bytes as f64 / shares[d]
    };
    // best[d][i]: the smallest largest load of devices 0..=d holding layers 0..i, and where device d's
    // block starts. Layer counts are in the hundreds at most and devices in the tens: O(d n^2) is nothing.
    let mut best = vec![vec![(f64::INFINITY, 0usize); layers + 1]; devices];
    for (i, slot) in best[0].iter_mut().enumerate().skip(1) {
        *slot = (load(0, 0, i), 0);
    }
    for d in 1..devices {
        for i in (d + 1)..=layers {
            for start in d..i {
                let worst = best[d - 1][start].0.max(load(d, start, i));
                // Strictly smaller only: among equals the earliest start (fewer layers before) stays.
                if worst < best[d][i].0 {
                    best[d][i] = (worst, start);
                }
            }
        }
    }
    let mut blocks = vec![0..0; devices];
    let mut end = layers;
    for d in (0..devices).rev() {
        let start = best[d][end].1;
        blocks[d] = start..end;
        end = start;
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_cover(blocks: &[Range<usize>], layers: usize) {
        assert_eq!(blocks.first().unwrap().start, 0);
        assert_eq!(blocks.last().unwrap().end, layers);
        for pair in blocks.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{blocks:?} is not contiguous");
        }
        assert!(blocks.iter().all(|b| !b.is_empty()), "{blocks:?} leaves a device without layers");
    }

    #[test]
    fn equal_layers_split_evenly() {
        let blocks = plan_layer_split(&[10; 8], 0, 0, &[1.0, 1.0]).unwrap();
        assert_eq!(blocks, vec![0..4, 4..8]);
        let blocks = plan_layer_split(&[10; 6], 0, 0, &[1.0; 3]).unwrap();
        assert_eq!(blocks, vec![0..2, 2..4, 4..6]);
        // 4 over 3: someone gets two; the covering is still contiguous and complete.
        let blocks = plan_layer_split(&[10; 4], 0, 0, &[1.0; 3]).unwrap();
        check_cover(&blocks, 4);
        assert_eq!(blocks.iter().map(|b| b.len()).max(), Some(2));
    }

    #[test]
    fn balanced_by_bytes_not_by_count() {
        // One heavy layer at the end: it goes alone.
        assert_eq!(plan_layer_split(&[1, 1, 1, 1, 4], 0, 0, &[1.0, 1.0]).unwrap(), vec![0..4, 4..5]);
        // A heavy embedding on the first device and LM head on the last pull layers away from them.
        assert_eq!(plan_layer_split(&[1; 6], 4, 0, &[1.0, 1.0]).unwrap(), vec![0..1, 1..6]);
        assert_eq!(plan_layer_split(&[1; 6], 0, 4, &[1.0, 1.0]).unwrap(), vec![0..5, 5..6]);
        // Twice the free memory takes twice the layers.
        assert_eq!(plan_layer_split(&[1; 9], 0, 0, &[2.0, 1.0]).unwrap(), vec![0..6, 6..9]);
    }

    #[test]
    fn every_layer_once_for_every_count() {
        for layers in 1..12 {
            for devices in 1..=layers {
                let bytes: Vec<u64> = (0..layers as u64).map(|i| 1 + i % 3).collect();
                let blocks = plan_layer_split(&bytes, 2, 3, &vec![1.0; devices]).unwrap();
                assert_eq!(blocks.len(), devices);
                check_cover(&blocks, layers);
            }
        }
    }

    #[test]
    fn one_device_holds_everything() {
        assert_eq!(plan_layer_split(&[5, 6, 7], 1, 1, &[1.0]).unwrap(), vec![0..3]);
    }

    #[test]
    fn bad_requests_are_errors() {
        let more = plan_layer_split(&[1; 2], 0, 0, &[1.0; 3]).unwrap_err().to_string();
        assert!(more.contains("3 devices for 2 layers"), "{more}");
        assert!(plan_layer_split(&[1; 2], 0, 0, &[]).unwrap_err().to_string().contains("at least one device"));
        assert!(plan_layer_split(&[1; 2], 0, 0, &[1.0, 0.0]).unwrap_err().to_string().contains("positive"));
        assert!(plan_layer_split(&[1; 2], 0, 0, &[1.0, f64::NAN]).is_err());
    }
}
