//! Joining the parts of a sweep split over machines (`--shard I/N`) into the run one machine would have
//! written: which records, in which order, under which run.json, after checking that the parts belong
//! to one sweep, do not overlap and (unless asked otherwise) leave no test out. Files are the CLI's.

use super::{RunInfo, TestRecord};
use crate::error::{CoreError, Result};
use crate::sweep::{plan, run_order, Shard, TestKey};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// One shard's folder as read: where it is, its run.json and its records.
#[derive(Debug, Clone)]
pub struct ShardRun {
    /// The folder, for messages.
    pub dir: PathBuf,
    /// Its run.json.
    pub info: RunInfo,
    /// Its tests.jsonl.
    pub records: Vec<TestRecord>,
}

/// The merged run: what an unsharded run of the same plan writes.
#[derive(Debug, Clone)]
pub struct MergedRun {
    /// run.json: the shards' own, without the shard.
    pub info: RunInfo,
    /// Every record, in the order an unsharded run writes them ([`run_order`]).
    pub records: Vec<TestRecord>,
    /// Ids of the plan's tests that no shard holds (empty unless merging an incomplete set was allowed).
    pub missing: Vec<String>,
    /// The shard settings the shards share (the plan, the gate, ...): what writing the other files needs.
    pub shard: super::ShardInfo,
}

/// Most test ids an error lists before saying how many more.
const LISTED: usize = 12;

/// Joins shards of one sweep. Refused, with the reason: no shard; a folder that is not a shard; shards
/// of different sweeps (model, inputs, settings, plan or number of parts: the fields are named); a shard
/// given twice; a record in a shard that the plan gives to another shard or lists twice (overlap); and,
/// unless `allow_missing`, tests of the plan that no shard holds (named, with the shards that are not
/// there). The result's records are in the order an unsharded run writes them.
pub fn merge_shards(runs: &[ShardRun], allow_missing: bool) -> Result<MergedRun> {
    let first = runs.first().ok_or_else(|| CoreError::invalid("no shard folders to merge: name the folders the shards wrote"))?;
    let shard_of = |r: &ShardRun| {
        r.info.shard.clone().ok_or_else(|| {
            CoreError::invalid(format!("{} is not a shard: its run.json has no `shard` (it was not run with --shard I/N)", r.dir.display()))
        })
    };
    let settings = shard_of(first)?;
    let mut seen: BTreeMap<usize, &PathBuf> = BTreeMap::new();
    for r in runs {
        let shard = shard_of(r)?;
        let differ = first.info.differences_as_shards(&r.info);
        if !differ.is_empty() {
            return Err(CoreError::invalid(format!(
                "{} and {} are shards of different sweeps ({}): merge only the shards of one command",
                first.dir.display(),
                r.dir.display(),
                differ.join("; ")
            )));
        }
        if let Some(other) = seen.insert(shard.shard.index, &r.dir) {
            return Err(CoreError::invalid(format!("shard {} is given twice: {} and {}", shard.shard, other.display(), r.dir.display())));
        }
    }
    let keys = plan(settings.needles, &settings.lengths, &settings.depths);
    let count = settings.shard.count;
    let owner = Shard::assign(&keys, count);
    let index_of: HashMap<String, usize> = keys.iter().enumerate().map(|(i, k)| (k.id(), i)).collect();
    let mut found: Vec<Option<&TestRecord>> = vec![None; keys.len()];
    for r in runs {
        let shard = shard_of(r)?.shard;
        for rec in &r.records {
            let Some(&i) = index_of.get(&rec.id) else {
                return Err(CoreError::invalid(format!("{}: test {} is not in the plan the shards name", r.dir.display(), rec.id)));
            };
            if owner[i] != shard.index {
                return Err(CoreError::invalid(format!(
                    "{} (shard {shard}) holds test {}, which belongs to shard {}/{count}: the shards overlap",
                    r.dir.display(),
                    rec.id,
                    owner[i]
                )));
            }
            if found[i].replace(rec).is_some() {
                return Err(CoreError::invalid(format!("{}: test {} is recorded twice", r.dir.display(), rec.id)));
            }
        }
    }
    let missing: Vec<&TestKey> = keys.iter().zip(&found).filter(|(_, f)| f.is_none()).map(|(k, _)| k).collect();
    if !missing.is_empty() && !allow_missing {
        let absent: Vec<String> = (1..=count).filter(|i| !seen.contains_key(i)).map(|i| format!("{i}/{count}")).collect();
        let absent = if absent.is_empty() { String::new() } else { format!("; shards not given: {}", absent.join(", ")) };
        let mut ids: Vec<String> = missing.iter().take(LISTED).map(|k| k.id()).collect();
        if missing.len() > LISTED {
            ids.push(format!("and {} more", missing.len() - LISTED));
        }
        return Err(CoreError::invalid(format!(
            "{} of the plan's {} tests are in no shard ({}){absent}: finish or add those shards, or pass --allow-missing to merge what is there (rerunning the unsharded command on the merged folder then runs the rest)",
            missing.len(),
            keys.len(),
            ids.join(", ")
        )));
    }
    let records = run_order(&keys).into_iter().filter_map(|i| found[i].cloned()).collect();
    let mut info = first.info.clone();
    info.shard = None;
    Ok(MergedRun { info, records, missing: missing.iter().map(|k| k.id()).collect(), shard: settings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::records::tests::record;
    use crate::files::ShardInfo;

    fn info(index: usize, count: usize) -> RunInfo {
        let text = r#"{"headscope_version":"0","command":"detect","model":{"dir":"m","hash":"h","model_type":"llama","layers":1,
            "heads":2,"kv_heads":1,"dtype":"f32","device":"cpu"},"tokenizer_hash":"t","prompt_format":"plain","needles_hash":"n",
            "haystack_hash":"s","max_new_tokens":4,"mask":null,"seed":null}"#;
        let mut info: RunInfo = serde_json::from_str(text).unwrap();
        info.shard = Some(ShardInfo {
            shard: Shard { index, count },
            needles: 2,
            lengths: vec![100, 200],
            depths: vec![0.0, 100.0],
            model_name: "m".into(),
            gate: Some(0.5),
            threshold: Some(0.1),
            pass: None,
        });
        info
    }

    /// The shards of a 2 needles x 2 lengths x 2 depths plan over `count` parts, each complete.
    fn shards(count: usize) -> Vec<ShardRun> {
        let keys = plan(2, &[100, 200], &[0.0, 100.0]);
        (1..=count)
            .map(|index| ShardRun {
                dir: PathBuf::from(format!("s{index}")),
                info: info(index, count),
                records: Shard { index, count }
                    .select(&keys)
                    .iter()
                    .map(|k| TestRecord {
                        needle_index: k.needle_index,
                        length: k.length,
                        depth_percent: k.depth_percent,
                        ..record(&k.id(), 1.0, &[])
                    })
                    .collect(),
            })
            .collect()
    }

    #[test]
    fn complete_shards_merge_into_the_unsharded_order_and_run_json() {
        let mut runs = shards(3);
        runs.reverse();
        let merged = merge_shards(&runs, false).unwrap();
        let ids: Vec<&str> = merged.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["n0-L100-d100", "n0-L100-d0", "n0-L200-d100", "n0-L200-d0", "n1-L100-d100", "n1-L100-d0", "n1-L200-d100", "n1-L200-d0"]
        );
        assert_eq!(merged.info.shard, None);
        assert!(merged.missing.is_empty());
    }

    #[test]
    fn merging_refuses_what_is_not_one_sweep_split_once() {
        let err = |runs: &[ShardRun]| merge_shards(runs, false).unwrap_err().to_string();
        assert!(err(&[]).contains("no shard folders"));
        // A missing shard: its tests are named, and so is the shard.
        let runs = shards(3);
        let e = err(&[runs[0].clone(), runs[2].clone()]);
        let lost: Vec<String> = runs[1].records.iter().map(|r| r.id.clone()).collect();
        assert!(!lost.is_empty() && lost.iter().all(|id| e.contains(id.as_str())) && e.contains("shards not given: 2/3"), "{e}");
        let partial = merge_shards(&[runs[0].clone(), runs[2].clone()], true).unwrap();
        assert_eq!(partial.missing, lost);
        // A shard given twice, one with another's test, one with a test twice.
        assert!(err(&[runs[0].clone(), runs[0].clone()]).contains("shard 1/3 is given twice"));
        let mut stolen = runs.clone();
        let moved = stolen[1].records[0].clone();
        stolen[0].records.push(moved.clone());
        let e = err(&stolen);
        assert!(e.contains(&format!("holds test {}, which belongs to shard 2/3", moved.id)), "{e}");
        let mut twice = runs.clone();
        let again = twice[0].records[0].clone();
        twice[0].records.push(again);
        assert!(err(&twice).contains("recorded twice"));
        // Shards of another sweep: another model, another split, another gate; a folder not a shard.
        for change in [
            (|i: &mut RunInfo| i.model.hash = "other".into()) as fn(&mut RunInfo),
            |i| i.shard.as_mut().unwrap().shard = Shard { index: 2, count: 4 },
            |i| i.shard.as_mut().unwrap().gate = Some(0.0),
            |i| i.shard.as_mut().unwrap().lengths = vec![100],
        ] {
            let mut other = runs.clone();
            change(&mut other[1].info);
            assert!(err(&other).contains("shards of different sweeps"), "{}", err(&other));
        }
        let mut plain = runs.clone();
        plain[2].info.shard = None;
        assert!(err(&plain).contains("s3 is not a shard"));
    }
}
