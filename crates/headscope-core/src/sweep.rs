//! The grid of a NIAH sweep: which lengths, depths and needles to test, and in which order.

use crate::error::{CoreError, Result};

/// `N` integers evenly spaced from `min` to `max` inclusive, parsed from `MIN:MAX:N` (like numpy's
/// `linspace(min, max, n).round()` in the official harness); duplicates after rounding are dropped.
pub fn parse_lengths(spec: &str) -> Result<Vec<usize>> {
    let bad = |why: &str| {
        CoreError::invalid(format!(
            "the context lengths `{spec}`: {why} (write MIN:MAX:N, e.g. 1000:4000:4 for four lengths from 1000 to 4000 tokens, or \
             one length)"
        ))
    };
    let parts: Vec<&str> = spec.split(':').map(str::trim).collect();
    let num = |s: &str| s.parse::<usize>().map_err(|_| bad(&format!("`{s}` is not a whole number")));
    let (min, max, n) = match parts.as_slice() {
        [one] => {
            let v = num(one)?;
            (v, v, 1)
        }
        [a, b, c] => (num(a)?, num(b)?, num(c)?),
        _ => return Err(bad("expected three fields")),
    };
    if n == 0 || min == 0 || min > max {
        return Err(bad("need 0 < MIN <= MAX and N >= 1"));
    }
    if n > MAX_LENGTHS {
        return Err(bad(&format!("N is at most {MAX_LENGTHS}")));
    }
    Ok(linspace(min as f64, max as f64, n).into_iter().map(|v| v.round() as usize).fold(Vec::new(), dedup_push))
}

/// Most lengths in one sweep: far more than any study uses, few enough that a typo cannot ask for memory
/// the machine lacks.
pub const MAX_LENGTHS: usize = 10_000;

/// Most depths in one sweep (0.1 % apart).
pub const MAX_DEPTHS: usize = 1001;

/// Most tests in one sweep (needles x lengths x depths).
pub const MAX_TESTS: usize = 1_000_000;

/// `n` depths in percent evenly spaced over 0..=100 (one depth: 50 %).
pub fn depths(n: usize) -> Result<Vec<f64>> {
    match n {
        0 => Err(CoreError::invalid("the number of needle depths must be at least 1")),
        n if n > MAX_DEPTHS => Err(CoreError::invalid(format!("{n} needle depths: at most {MAX_DEPTHS} (0.1 % apart)"))),
        1 => Ok(vec![50.0]),
        _ => Ok(linspace(0.0, 100.0, n).into_iter().map(|d| (d * 1e6).round() / 1e6).collect()),
    }
}

fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect()
}

fn dedup_push<T: PartialEq>(mut v: Vec<T>, x: T) -> Vec<T> {
    if v.last() != Some(&x) {
        v.push(x);
    }
    v
}

/// One cell of a sweep: which needle, at what length and depth.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TestKey {
    /// Index of the needle in the needles list.
    pub needle_index: usize,
    /// Prompt length in tokens.
    pub length: usize,
    /// Needle depth in percent.
    pub depth_percent: f64,
}

impl TestKey {
    /// A stable text form, `n{needle}-L{length}-d{depth}`, used to recognise finished tests.
    pub fn id(&self) -> String {
        format!("n{}-L{}-d{}", self.needle_index, self.length, self.depth_percent)
    }
}

/// All tests of a sweep: every needle x length x depth, needle-major, then length, then depth.
pub fn plan(needles: usize, lengths: &[usize], depths: &[f64]) -> Vec<TestKey> {
    let mut out = Vec::with_capacity(needles * lengths.len() * depths.len());
    for needle_index in 0..needles {
        for &length in lengths {
            for &depth_percent in depths {
                out.push(TestKey { needle_index, length, depth_percent });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_evenly_spaced_and_inclusive() {
        assert_eq!(parse_lengths("1000:4000:4").unwrap(), vec![1000, 2000, 3000, 4000]);
        assert_eq!(parse_lengths("256").unwrap(), vec![256]);
        assert_eq!(parse_lengths("10:11:5").unwrap(), vec![10, 11]);
        // A typo's huge N is an error, not a request for terabytes (the fuzzer's 274 GB allocation).
        for bad in ["", "1:2", "5:1:3", "0:10:2", "1:10:0", "a:b:c", "200:600:34359738368", "1:2:10001"] {
            assert!(parse_lengths(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn depths_cover_both_ends() {
        assert_eq!(depths(5).unwrap(), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(depths(1).unwrap(), vec![50.0]);
        assert!(depths(0).is_err());
        assert!(depths(MAX_DEPTHS + 1).is_err() && depths(usize::MAX).is_err());
        assert_eq!(depths(MAX_DEPTHS).unwrap().len(), MAX_DEPTHS);
        assert_eq!(depths(3).unwrap()[1], 50.0);
    }

    #[test]
    fn plan_is_the_full_product() {
        let p = plan(2, &[100, 200], &[0.0, 100.0]);
        assert_eq!(p.len(), 8);
        assert_eq!(p[0].id(), "n0-L100-d0");
        assert_eq!(p[7].id(), "n1-L200-d100");
        let mut ids: Vec<String> = p.iter().map(TestKey::id).collect();
        ids.dedup();
        assert_eq!(ids.len(), 8);
    }
}
