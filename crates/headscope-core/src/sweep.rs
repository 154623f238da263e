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

/// The order a sweep runs its tests in: (needle, length) groups in plan order, each from the deepest
/// needle to the shallowest, so that each prefill can reuse the cache of the test before it (the whole
/// haystack before its own needle). Returns indices into `keys`. The runner and `headscope merge` both
/// take this order, so a merged `tests.jsonl` lists the tests as one unsharded run writes them.
pub fn run_order(keys: &[TestKey]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&keys[a], &keys[b]);
        (a.needle_index, a.length).cmp(&(b.needle_index, b.length)).then(b.depth_percent.total_cmp(&a.depth_percent))
    });
    order
}

/// One part of a sweep split over machines: part `index` (1-based) of `count`, written `I/N`.
///
/// A shard's tests are chosen from the plan alone ([`Shard::select`]), so every machine given the same
/// flags and its own `I` runs a fixed part, the parts are disjoint and together they are the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Shard {
    /// Which part, from 1.
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = CoreError;

    /// Parses `I/N` with 1 <= I <= N (as a SLURM array's 1-based task id gives it).
    fn from_str(spec: &str) -> Result<Shard> {
        let bad = |why: String| CoreError::invalid(format!("shard `{spec}`: {why}"));
        let (i, n) = spec
            .trim()
            .split_once('/')
            .ok_or_else(|| bad("expected I/N, part I of N counted from 1 (e.g. 2/4 for the second of four parts)".into()))?;
        let number = |s: &str, what: &str| {
            s.trim().parse::<usize>().map_err(|_| bad(format!("{what} `{s}` is not a whole number (expected I/N, e.g. 2/4)")))
        };
        let (index, count) = (number(i, "I")?, number(n, "N")?);
        if count == 0 {
            return Err(bad("N, the number of parts, must be at least 1".into()));
        }
        if index == 0 {
            return Err(bad(format!("I counts from 1: the parts are 1/{count} to {count}/{count}")));
        }
        if index > count {
            return Err(bad(format!("I is at most N: there are only {count} parts, 1/{count} to {count}/{count}")));
        }
        Ok(Shard { index, count })
    }
}

impl TryFrom<String> for Shard {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Shard> {
        s.parse()
    }
}

impl From<Shard> for String {
    fn from(s: Shard) -> String {
        s.to_string()
    }
}

impl Shard {
    /// The shard (1-based) of every test of `keys`, a whole plan, in the same order.
    ///
    /// A (needle, length) group is never split, so that prefix reuse works within a shard as in an
    /// unsharded run. Groups go, longest first (plan order among equals), each to the shard with the
    /// least work so far (ties: the lowest shard); a group's work is counted as its tests x its length.
    /// Round-robin in plan order would be simpler, but with as many lengths as shards it would give one
    /// machine every longest test. More shards than groups leave some shards empty.
    pub fn assign(keys: &[TestKey], count: usize) -> Vec<usize> {
        let mut groups: Vec<((usize, usize), usize)> = Vec::new();
        for k in keys {
            match groups.iter_mut().find(|(g, _)| *g == (k.needle_index, k.length)) {
                Some((_, n)) => *n += 1,
                None => groups.push(((k.needle_index, k.length), 1)),
            }
        }
        let mut by_work: Vec<usize> = (0..groups.len()).collect();
        // Stable: equal work keeps plan order.
        by_work.sort_by_key(|&g| std::cmp::Reverse(groups[g].1 * groups[g].0 .1));
        let mut load = vec![0usize; count.max(1)];
        let mut shard_of_group = std::collections::HashMap::new();
        for g in by_work {
            let lightest = (0..load.len()).min_by_key(|&s| (load[s], s)).expect("at least one shard");
            load[lightest] += groups[g].1 * groups[g].0 .1;
            shard_of_group.insert(groups[g].0, lightest + 1);
        }
        keys.iter().map(|k| shard_of_group[&(k.needle_index, k.length)]).collect()
    }

    /// The tests of `keys` (a whole plan) that this shard runs, in plan order.
    pub fn select(&self, keys: &[TestKey]) -> Vec<TestKey> {
        keys.iter().zip(Shard::assign(keys, self.count)).filter(|(_, s)| *s == self.index).map(|(k, _)| *k).collect()
    }
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

    #[test]
    fn shards_parse_i_of_n_and_name_what_is_wrong() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { index: 2, count: 4 });
        assert_eq!(" 1 / 1 ".parse::<Shard>().unwrap().to_string(), "1/1");
        for (bad, why) in [
            ("0/3", "I counts from 1"),
            ("4/3", "I is at most N"),
            ("x", "expected I/N"),
            ("1/0", "at least 1"),
            ("a/3", "`a` is not a whole number"),
            ("1/-2", "`-2` is not a whole number"),
            ("", "expected I/N"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
        let json = serde_json::to_string(&Shard { index: 3, count: 5 }).unwrap();
        assert_eq!(json, "\"3/5\"");
        assert!(serde_json::from_str::<Shard>("\"6/5\"").is_err());
    }

    #[test]
    fn shards_are_disjoint_cover_the_plan_and_keep_groups_whole() {
        let keys = plan(3, &[100, 200, 300, 400], &[0.0, 50.0, 100.0]);
        for count in 1..=14 {
            let assigned = Shard::assign(&keys, count);
            assert!(assigned.iter().all(|&s| (1..=count).contains(&s)));
            let mut union: Vec<String> = Vec::new();
            for index in 1..=count {
                let part = Shard { index, count }.select(&keys);
                // Whole (needle, length) groups: prefix reuse still works inside a shard.
                for k in &part {
                    let group = keys.iter().filter(|o| (o.needle_index, o.length) == (k.needle_index, k.length));
                    assert!(group.clone().all(|o| part.contains(o)), "{count}: {k:?}");
                }
                union.extend(part.iter().map(TestKey::id));
            }
            union.sort();
            let mut all: Vec<String> = keys.iter().map(TestKey::id).collect();
            all.sort();
            assert_eq!(union, all, "{count} shards");
            // Deterministic: the plan alone decides.
            assert_eq!(assigned, Shard::assign(&keys, count));
        }
        // 4 lengths over 4 shards: each shard gets a mix of lengths, not all the longest tests (work
        // 3 x (100 + 200 + 300 + 400) x 3 tests, split as evenly as whole groups allow).
        let work = |index| Shard { index, count: 4 }.select(&keys).iter().map(|k| k.length).sum::<usize>();
        let loads: Vec<usize> = (1..=4).map(work).collect();
        assert!(loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 300 * 3, "{loads:?}");
    }

    #[test]
    fn run_order_takes_groups_in_plan_order_deepest_first() {
        let keys = plan(2, &[100, 200], &[0.0, 50.0, 100.0]);
        let ids: Vec<String> = run_order(&keys).into_iter().map(|i| keys[i].id()).collect();
        assert_eq!(&ids[..4], ["n0-L100-d100", "n0-L100-d50", "n0-L100-d0", "n0-L200-d100"]);
        assert_eq!(ids.len(), 12);
    }
}
