//! The official head-score file of nightdessert/Retrieval_Head: `{"layer-head": [score per test], ...}`.
//! Published files may hold scores above 1 (that code did not de-duplicate repeated hits); they are read
//! as they are.

use super::write_atomic;
use crate::error::{CoreError, Result};
use crate::head::{HeadId, HeadShape};
use crate::score::HeadScores;
use std::fmt::Write as _;
use std::path::Path;

/// Parses the official format. The grid is as large as the largest layer and head named; every head of
/// it must be present.
pub fn parse_head_scores(text: &str, origin: &Path) -> Result<HeadScores> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| CoreError::malformed(origin, format!("not JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| CoreError::malformed(origin, "expected an object {\"layer-head\": [scores...]}"))?;
    if obj.is_empty() {
        return Err(CoreError::malformed(origin, "no heads in the file"));
    }
    let mut entries = Vec::with_capacity(obj.len());
    for (key, v) in obj {
        let head: HeadId = key.parse().map_err(|_| CoreError::malformed(origin, format!("key `{key}` is not layer-head")))?;
        let list = v.as_array().ok_or_else(|| CoreError::malformed(origin, format!("head {key}: expected a list of scores")))?;
        let scores = list
            .iter()
            .map(|x| {
                x.as_f64()
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| CoreError::malformed(origin, format!("head {key}: `{x}` is not a number")))
            })
            .collect::<Result<Vec<f64>>>()?;
        entries.push((head, scores));
    }
    let shape = HeadShape::new(
        entries.iter().map(|(h, _)| h.layer).max().unwrap_or(0) + 1,
        entries.iter().map(|(h, _)| h.head).max().unwrap_or(0) + 1,
    );
    if entries.len() != shape.count() {
        let missing = shape.iter().find(|h| !entries.iter().any(|(e, _)| e == h)).map(|h| h.to_string()).unwrap_or_default();
        return Err(CoreError::malformed(
            origin,
            format!("{} heads for a {}x{} grid (head {missing} is missing)", entries.len(), shape.layers, shape.heads),
        ));
    }
    let mut lists = vec![Vec::new(); shape.count()];
    for (h, s) in entries {
        lists[shape.index(h).expect("inside the grid by construction")] = s;
    }
    HeadScores::from_lists(shape, lists)
}

/// Reads an official head-score file.
pub fn read_head_scores(path: &Path) -> Result<HeadScores> {
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    parse_head_scores(&text, path)
}

/// Formats scores in the official layout: heads in layer-major order, Python's `json.dumps` spacing,
/// whole numbers without a decimal point (as Python wrote them).
pub fn format_head_scores(scores: &HeadScores) -> String {
    let mut s = String::from("{");
    for (i, (head, list)) in scores.shape().iter().zip(scores.lists()).enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "\"{head}\": [");
        for (j, v) in list.iter().enumerate() {
            if j > 0 {
                s.push_str(", ");
            }
            if v.fract() == 0.0 && v.abs() < 1e15 {
                let _ = write!(s, "{}", *v as i64);
            } else {
                s.push_str(&serde_json::Number::from_f64(*v).map_or_else(|| "0".to_owned(), |n| n.to_string()));
            }
        }
        s.push(']');
    }
    s.push('}');
    s
}

/// Writes an official head-score file (atomically).
pub fn write_head_scores(path: &Path, scores: &HeadScores) -> Result<()> {
    write_atomic(path, format_head_scores(scores).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_heads_numerically() {
        let shape = HeadShape::new(2, 11);
        let lists: Vec<Vec<f64>> = (0..shape.count()).map(|i| vec![i as f64 / 22.0, 0.0]).collect();
        let s = HeadScores::from_lists(shape, lists).unwrap();
        let text = format_head_scores(&s);
        assert!(text.starts_with("{\"0-0\": [0, 0], \"0-1\": [0.045454545454545456, 0], \"0-2\""), "{}", &text[..60]);
        assert!(text.find("\"0-10\"").unwrap() < text.find("\"1-0\"").unwrap());
        let back = parse_head_scores(&text, Path::new("x")).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn malformed_files_name_the_problem() {
        let p = Path::new("scores.json");
        for (text, expect) in [
            ("[1,2]", "expected an object"),
            ("{}", "no heads"),
            ("{\"0-0\": [1], \"x\": [1]}", "key `x`"),
            ("{\"0-0\": 3}", "list of scores"),
            ("{\"0-0\": [\"a\"]}", "not a number"),
            ("{\"0-0\": [1], \"1-1\": [1]}", "missing"),
            ("{\"0-0\": [1]", "not JSON"),
        ] {
            let e = parse_head_scores(text, p).unwrap_err().to_string();
            assert!(e.contains(expect) && e.contains("scores.json"), "{text}: {e}");
        }
    }

    /// Every published file reads, has a plausible shape, and survives a write/read round trip.
    #[test]
    fn published_files_read_and_round_trip() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/refs/head_score");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("skipped: {} is absent (it ships with the developers' shared folder only)", dir.display());
            return;
        };
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            let scores = read_head_scores(&path).unwrap_or_else(|e| panic!("{e}"));
            let shape = scores.shape();
            assert!(shape.layers >= 32 && shape.heads >= 32, "{}: {shape:?}", path.display());
            assert!(scores.tests() > 0);
            let top = scores.ranked()[0];
            assert!(top.1 > 0.1, "{}: strongest head {top:?}", path.display());
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("s.json");
            write_head_scores(&out, &scores).unwrap();
            assert_eq!(read_head_scores(&out).unwrap(), scores, "{}", path.display());
            n += 1;
        }
        assert_eq!(n, 7, "expected the seven published files");
    }
}
