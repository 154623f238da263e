//! DuoAttention's head file (`full_attention_heads.tsv`, Xiao et al., ICLR 2025): one row per layer, one
//! tab-separated gate in [0, 1] per KV head, saying how much that KV head needs the full cache (1) rather
//! than a sink and a recent window (0). DuoAttention learns the gates; HeadScope reads them as a head
//! score, to rank and mask heads by them, and writes any score in that layout, for DuoAttention's
//! loader (`duo_attn.utils.load_attn_pattern`) and for the KV policies that take the file.
//!
//! The file names KV heads, HeadScope's scores name query heads. Read: every query head of a KV group
//! gets its group's gate (one "test" per head). Written: a KV head's value is the highest mean score of
//! its query heads (it must keep the full cache if any of them retrieves), clipped to [0, 1] as
//! DuoAttention's loader clips.

use super::write_atomic;
use crate::error::{CoreError, Result};
use crate::head::{HeadId, HeadShape};
use crate::score::HeadScores;
use std::fmt::Write as _;
use std::path::Path;

/// Parses a DuoAttention head file for a model whose KV heads each serve `heads_per_kv` query heads.
/// Gates outside [0, 1] are clipped, as DuoAttention's loader does; blank lines are skipped.
pub fn parse_duo_tsv(text: &str, origin: &Path, heads_per_kv: usize) -> Result<HeadScores> {
    if heads_per_kv == 0 {
        return Err(CoreError::invalid("a KV head serves at least one query head"));
    }
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row = line
            .split('\t')
            .map(|cell| {
                cell.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| CoreError::malformed(origin, format!("line {}: `{cell}` is not a number", n + 1)))
            })
            .collect::<Result<Vec<f64>>>()?;
        if let Some(first) = rows.first() {
            if row.len() != first.len() {
                return Err(CoreError::malformed(
                    origin,
                    format!("line {} has {} KV heads, the first line {}", n + 1, row.len(), first.len()),
                ));
            }
        }
        rows.push(row);
    }
    let Some(kv_heads) = rows.first().map(Vec::len) else {
        return Err(CoreError::malformed(origin, "no layers in the file"));
    };
    let heads = kv_heads
        .checked_mul(heads_per_kv)
        .filter(|&h| h <= 1 << 16)
        .ok_or_else(|| CoreError::invalid(format!("{kv_heads} KV heads of {heads_per_kv} query heads each is no model's layer")))?;
    let shape = HeadShape::new(rows.len(), heads);
    let lists = shape.iter().map(|h| vec![rows[h.layer][h.head / heads_per_kv].clamp(0.0, 1.0)]).collect();
    HeadScores::from_lists(shape, lists)
}

/// Reads a DuoAttention head file (see [`parse_duo_tsv`]).
pub fn read_duo_tsv(path: &Path, heads_per_kv: usize) -> Result<HeadScores> {
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    parse_duo_tsv(&text, path, heads_per_kv)
}

/// Formats `scores` in DuoAttention's layout: per KV head, the highest mean of its `heads_per_kv` query
/// heads, clipped to [0, 1], with ten decimals as DuoAttention writes its gates.
pub fn format_duo_tsv(scores: &HeadScores, heads_per_kv: usize) -> Result<String> {
    let shape = scores.shape();
    if heads_per_kv == 0 || !shape.heads.is_multiple_of(heads_per_kv) {
        return Err(CoreError::invalid(format!("{} query heads per layer do not split into KV groups of {heads_per_kv}", shape.heads)));
    }
    let mut s = String::new();
    for layer in 0..shape.layers {
        let gates: Vec<String> = (0..shape.heads / heads_per_kv)
            .map(|kv| {
                let best = (0..heads_per_kv).map(|q| scores.mean(HeadId::new(layer, kv * heads_per_kv + q))).fold(0.0, f64::max);
                format!("{:.10}", best.clamp(0.0, 1.0))
            })
            .collect();
        let _ = writeln!(s, "{}", gates.join("\t"));
    }
    Ok(s)
}

/// Writes `scores` as a DuoAttention head file (atomically; see [`format_duo_tsv`]).
pub fn write_duo_tsv(path: &Path, scores: &HeadScores, heads_per_kv: usize) -> Result<()> {
    write_atomic(path, format_duo_tsv(scores, heads_per_kv)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_spread_over_query_heads_and_clip() {
        // Two layers, two KV heads, two query heads per KV head.
        let text = "0.25\t1.5\n-0.1\t0.75\n\n";
        let s = parse_duo_tsv(text, Path::new("full_attention_heads.tsv"), 2).unwrap();
        assert_eq!(s.shape(), HeadShape::new(2, 4));
        let means: Vec<f64> = s.shape().iter().map(|h| s.mean(h)).collect();
        assert_eq!(means, [0.25, 0.25, 1.0, 1.0, 0.0, 0.0, 0.75, 0.75]);
        assert_eq!(s.tests(), 1);
    }

    #[test]
    fn a_kv_head_takes_the_best_of_its_query_heads() {
        // Query-head means 0.2 0.4 | 0.0 1.3 (an official score past 1) on one layer, groups of two.
        let s = HeadScores::from_lists(HeadShape::new(1, 4), vec![vec![0.2], vec![0.3, 0.5], vec![0.0], vec![1.3]]).unwrap();
        let text = format_duo_tsv(&s, 2).unwrap();
        assert_eq!(text, "0.4000000000\t1.0000000000\n");
        // Read back, each query head holds its group's value.
        let back = parse_duo_tsv(&text, Path::new("x"), 2).unwrap();
        let means: Vec<f64> = back.shape().iter().map(|h| back.mean(h)).collect();
        assert_eq!(means, [0.4, 0.4, 1.0, 1.0]);
        assert!(format_duo_tsv(&s, 3).unwrap_err().to_string().contains("KV groups of 3"));
    }

    #[test]
    fn malformed_files_name_the_problem() {
        let p = Path::new("full_attention_heads.tsv");
        for (text, expect) in [
            ("", "no layers"),
            ("0.5\tx\n", "`x` is not a number"),
            ("0.5\t0.5\n0.5\n", "line 2 has 1 KV heads"),
            ("nan\n", "not a number"),
        ] {
            let e = parse_duo_tsv(text, p, 1).unwrap_err().to_string();
            assert!(e.contains(expect) && e.contains("full_attention_heads.tsv"), "{text:?}: {e}");
        }
        assert!(parse_duo_tsv("1\n", p, 0).is_err());
        assert!(parse_duo_tsv("1\t1\n", p, usize::MAX).unwrap_err().to_string().contains("no model's layer"));
    }
}
