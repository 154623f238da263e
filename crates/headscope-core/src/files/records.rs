//! `tests.jsonl`: one record per finished test, appended and flushed as each test ends, so a run that
//! stops (crash, Ctrl-C, time limit) loses at most the test in flight and resumes where it stopped.

use super::jsonl::JsonlLog;
use crate::error::{CoreError, Result};
use crate::head::{HeadId, HeadShape};
use crate::metrics::rouge1_recall;
use crate::niah::{Needle, NiahTest};
use crate::score::{passes_gate, retrieval_hits, soft_score, DecodeStep, HeadHits, HeadScores, ScoreKind};
use crate::sweep::TestKey;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Everything about one finished NIAH test.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TestRecord {
    /// The sweep cell's id ([`crate::sweep::TestKey::id`]); a rerun skips ids it finds.
    pub id: String,
    /// Index of the needle in the needles list.
    pub needle_index: usize,
    /// The needle sentence.
    pub needle: String,
    /// Requested prompt length in tokens.
    pub length: usize,
    /// Actual prompt length in tokens (equal to `length` unless the tokenizer made it unreachable).
    pub prompt_tokens: usize,
    /// Requested depth in percent.
    pub depth_percent: f64,
    /// Where the needle landed, in percent of the context.
    pub placed_depth_percent: f64,
    /// Hash of the prompt's token ids.
    pub prompt_hash: String,
    /// Token positions `[start, end)` of the needle sentence.
    pub needle_tokens: [usize; 2],
    /// Token positions `[start, end)` of the answer span (eq. 1's span).
    pub answer_tokens: [usize; 2],
    /// The generated token ids, first answer token first.
    pub generated_ids: Vec<u32>,
    /// The generated text.
    pub answer: String,
    /// ROUGE-1 recall of the answer against the expected answer.
    pub recall: f64,
    /// Per head that hit: the distinct answer positions it retrieved.
    pub hits: BTreeMap<HeadId, Vec<u32>>,
    /// Per head whose decode steps hit a position it had hit already: how many hits past its distinct
    /// positions (what the official code's count adds, [`ScoreKind::Official`]). Present (perhaps
    /// empty) only in runs that counted them, so a default run's records are as they always were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_hits: Option<BTreeMap<HeadId, u32>>,
    /// Per head with any, the attention weight summed over the first |span| decode steps on its
    /// top-|span| positions inside the answer span ([`crate::score::top_k_mass_in_span`]): what
    /// [`ScoreKind::Soft`] scores. Present (perhaps empty) only in runs that measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_mass: Option<BTreeMap<HeadId, f64>>,
    /// Per head (zeros left out), the test's query-focused score ([`ScoreKind::Qr`]). Present (perhaps
    /// empty) only in runs that measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qr: Option<BTreeMap<HeadId, f64>>,
    /// The heads masked during this test (empty when none).
    #[serde(default)]
    pub masked_heads: Vec<HeadId>,
    /// The prompt's token ids, when the run saves prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_ids: Option<Vec<u32>>,
    /// Per watched head, where its attention peaked at every decode step (aligned with
    /// `generated_ids`), when the run watched heads (the report watches the retrieval heads, for the
    /// attention-sink note of fig. 9). Absent in runs that watched none and in files written before
    /// the field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_argmax: Option<BTreeMap<HeadId, Vec<u32>>>,
    /// Wall time of the test in seconds: its prefill (only the part it computed: a prefix reused from the
    /// cache costs nothing) and its decode.
    pub seconds: f64,
}

impl TestRecord {
    /// Scores a finished test (eq. 1 hits over its decode steps, ROUGE-1 recall of `answer`, the decoded
    /// `generated` ids) and lays it out as a record. Fields only the caller knows (masked heads, saved
    /// prompt, watched argmax, time) start empty; the CLI and the web worker both build records here.
    pub fn scored(
        key: &TestKey,
        needle: &Needle,
        test: &NiahTest,
        shape: HeadShape,
        steps: &[DecodeStep],
        answer: String,
    ) -> Result<TestRecord> {
        let hits = retrieval_hits(shape, &test.prompt_ids, test.answer_tokens.clone(), steps)?;
        Ok(TestRecord {
            id: key.id(),
            needle_index: key.needle_index,
            needle: needle.needle.clone(),
            length: key.length,
            prompt_tokens: test.prompt_ids.len(),
            depth_percent: key.depth_percent,
            placed_depth_percent: test.placed_depth_percent,
            prompt_hash: test.prompt_hash(),
            needle_tokens: [test.needle_tokens.start, test.needle_tokens.end],
            answer_tokens: [test.answer_tokens.start, test.answer_tokens.end],
            generated_ids: steps.iter().map(|s| s.token).collect(),
            recall: rouge1_recall(&answer, &needle.real_needle),
            answer,
            hits: hits.to_sparse(),
            repeat_hits: None,
            soft_mass: None,
            qr: None,
            masked_heads: Vec::new(),
            prompt_ids: None,
            head_argmax: None,
            seconds: 0.0,
        })
    }

    /// This record's scores of `kind` for every head of `shape`, in flat order.
    pub fn scores_of_kind(&self, shape: HeadShape, kind: ScoreKind) -> Result<Vec<f64>> {
        let span = self.answer_tokens[1].saturating_sub(self.answer_tokens[0]);
        let (values, what, flag) = match kind {
            ScoreKind::Eq1 => return Ok(self.head_hits(shape)?.scores(ScoreKind::Eq1)),
            ScoreKind::Official if self.repeat_hits.is_some() => return Ok(self.head_hits(shape)?.scores(ScoreKind::Official)),
            ScoreKind::Official => return Err(self.not_measured("counting repeated hits, which the official score needs", "official")),
            ScoreKind::Soft => (self.soft_mass.as_ref(), "measuring attention mass, which the soft score needs", "soft"),
            ScoreKind::Qr => (self.qr.as_ref(), "the query-focused passes the qr score needs", "qr"),
            ScoreKind::Induction | ScoreKind::Echo => {
                return Err(CoreError::invalid(format!("the {} score is data-free: it does not come from test records", kind.name())))
            }
        };
        let values = values.ok_or_else(|| self.not_measured(what, flag))?;
        let mut out = vec![0.0; shape.count()];
        for (h, &v) in values {
            let i = shape.index(*h).ok_or_else(|| CoreError::invalid(format!("test {}: head {h} is outside the model", self.id)))?;
            if !v.is_finite() || (kind == ScoreKind::Soft && v < 0.0) {
                return Err(CoreError::invalid(format!("test {}: head {h} has {} value {v}", self.id, kind.name())));
            }
            out[i] = if kind == ScoreKind::Soft { soft_score(v, span) } else { v };
        }
        Ok(out)
    }

    fn not_measured(&self, what: &str, flag: &str) -> CoreError {
        CoreError::invalid(format!("test {} was run without {what}: run detect with --score {flag} into a new --out", self.id))
    }

    /// The per-head hits of this record on a model of `shape`.
    pub fn head_hits(&self, shape: HeadShape) -> Result<HeadHits> {
        let span = self.answer_tokens[1].saturating_sub(self.answer_tokens[0]);
        HeadHits::from_sparse(shape, span, &self.hits)
            .and_then(|h| match &self.repeat_hits {
                Some(repeats) => h.with_repeats(repeats),
                None => Ok(h),
            })
            .map_err(|e| CoreError::invalid(format!("test {}: {e}", self.id)))
    }
}

/// `records` in the order a sweep plans its tests ([`crate::sweep::plan`]: needle, then length, then
/// depth), records of one cell in the order given. Sweeps run and write tests in another order (prefix
/// reuse runs a group's depths deepest first; a resumed or extended run appends cells at the end), so
/// whatever depends on the order of tests takes them in this one: the per-test lists of head scores,
/// the running top-k of fig. 13, the rows of tables.
pub fn in_plan_order<'a>(records: impl IntoIterator<Item = &'a TestRecord>) -> Vec<&'a TestRecord> {
    let mut sorted: Vec<&TestRecord> = records.into_iter().collect();
    sorted.sort_by(|a, b| (a.needle_index, a.length).cmp(&(b.needle_index, b.length)).then(a.depth_percent.total_cmp(&b.depth_percent)));
    sorted
}

/// Head scores over every record whose answer passes `gate` (a per-head list of per-test scores, tests
/// in plan order: [`in_plan_order`]).
pub fn head_scores_from_records<'a>(shape: HeadShape, records: impl IntoIterator<Item = &'a TestRecord>, gate: f64) -> Result<HeadScores> {
    head_scores_of_kind(shape, records, gate, ScoreKind::Eq1)
}

/// [`head_scores_from_records`] with each test's hits counted as `kind` says.
pub fn head_scores_of_kind<'a>(
    shape: HeadShape,
    records: impl IntoIterator<Item = &'a TestRecord>,
    gate: f64,
    kind: ScoreKind,
) -> Result<HeadScores> {
    let mut scores = HeadScores::new(shape);
    for r in in_plan_order(records) {
        if !passes_gate(r.recall, gate) {
            continue;
        }
        scores.push_values(&r.scores_of_kind(shape, kind)?)?;
    }
    Ok(scores)
}

/// The records of the `tests.jsonl` at `path`, read only ([`JsonlLog::read`]).
pub fn read_records(path: &Path) -> Result<Vec<TestRecord>> {
    JsonlLog::read(path)
}

/// An append-only `tests.jsonl` ([`JsonlLog`]), with the records already in it indexed by test id.
pub struct TestLog {
    log: JsonlLog<TestRecord>,
    index: HashMap<String, usize>,
}

impl TestLog {
    /// Opens (or creates) the log at `path` and reads its records. A last line cut off by a crash is
    /// dropped from the file (that test runs again); a malformed line elsewhere is an error.
    pub fn open(path: &Path) -> Result<Self> {
        let log = JsonlLog::open(path)?;
        let index = log.records().iter().enumerate().map(|(i, r): (usize, &TestRecord)| (r.id.clone(), i)).collect();
        Ok(TestLog { log, index })
    }

    /// Whether a test with this id is already recorded.
    pub fn contains(&self, id: &str) -> bool {
        self.index.contains_key(id)
    }

    /// The recorded test with this id.
    pub fn get(&self, id: &str) -> Option<&TestRecord> {
        self.index.get(id).map(|&i| &self.log.records()[i])
    }

    /// All records, in the order they were written.
    pub fn records(&self) -> &[TestRecord] {
        self.log.records()
    }

    /// Appends a record and flushes it to disk before returning. Where the write fails (a full disk),
    /// the file is cut back to its records before it, and the error returned.
    pub fn append(&mut self, record: TestRecord) -> Result<()> {
        if self.contains(&record.id) {
            return Err(CoreError::invalid(format!("test {} is already recorded in {}", record.id, self.log.path().display())));
        }
        let (id, at) = (record.id.clone(), self.log.records().len());
        self.log.append(record)?;
        self.index.insert(id, at);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn record(id: &str, recall: f64, hits: &[(HeadId, Vec<u32>)]) -> TestRecord {
        TestRecord {
            id: id.into(),
            needle_index: 0,
            needle: "n".into(),
            length: 100,
            prompt_tokens: 100,
            depth_percent: 50.0,
            placed_depth_percent: 48.0,
            prompt_hash: "00".into(),
            needle_tokens: [40, 50],
            answer_tokens: [44, 48],
            generated_ids: vec![1, 2],
            answer: "a".into(),
            recall,
            hits: hits.iter().cloned().collect(),
            repeat_hits: None,
            soft_mass: None,
            qr: None,
            masked_heads: vec![],
            prompt_ids: None,
            head_argmax: None,
            seconds: 0.1,
        }
    }

    #[test]
    fn log_appends_survives_reopen_and_truncated_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tests.jsonl");
        let mut log = TestLog::open(&p).unwrap();
        log.append(record("a", 1.0, &[(HeadId::new(0, 1), vec![44, 45])])).unwrap();
        log.append(record("b", 0.0, &[])).unwrap();
        assert!(log.append(record("a", 1.0, &[])).is_err());
        drop(log);
        // Simulate a crash in the middle of writing a third record.
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"id\": \"c\", \"needle_in").unwrap();
        drop(f);
        let mut log = TestLog::open(&p).unwrap();
        assert_eq!(log.records().len(), 2);
        assert!(log.contains("a") && log.contains("b") && !log.contains("c"));
        assert_eq!(log.get("a").unwrap().hits[&HeadId::new(0, 1)], vec![44, 45]);
        log.append(record("c", 0.5, &[])).unwrap();
        drop(log);
        assert_eq!(TestLog::open(&p).unwrap().records().len(), 3);
    }

    #[test]
    fn head_argmax_is_optional_so_older_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tests.jsonl");
        // A line as written before `head_argmax` existed: no such key.
        let mut old = serde_json::to_value(record("old", 1.0, &[])).unwrap();
        assert!(old.as_object_mut().unwrap().remove("head_argmax").is_none(), "None is not written");
        let mut watched = record("new", 0.0, &[]);
        watched.head_argmax = Some([(HeadId::new(0, 1), vec![0, 3, 0])].into_iter().collect());
        std::fs::write(&p, format!("{old}\n{}\n", serde_json::to_string(&watched).unwrap())).unwrap();
        let log = TestLog::open(&p).unwrap();
        assert_eq!(log.get("old").unwrap().head_argmax, None);
        assert_eq!(log.get("new").unwrap(), &watched);
    }

    #[test]
    fn malformed_middle_line_is_an_error_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tests.jsonl");
        let good = serde_json::to_string(&record("a", 1.0, &[])).unwrap();
        std::fs::write(&p, format!("{good}\nnot json\n{good}\n")).unwrap();
        let e = TestLog::open(&p).err().unwrap().to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn repeated_hits_survive_the_file_and_count_only_in_the_official_score() {
        let shape = HeadShape::new(1, 2);
        let mut r = record("a", 1.0, &[(HeadId::new(0, 0), vec![44, 45])]);
        r.repeat_hits = Some([(HeadId::new(0, 0), 1)].into_iter().collect());
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""repeat_hits":{"0-0":1}"#), "{line}");
        let back: TestRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        // A 4-token span: eq. 1 counts 2 distinct positions, the official count 3 hitting steps.
        assert_eq!(head_scores_of_kind(shape, [&back], 0.5, ScoreKind::Eq1).unwrap().scores(HeadId::new(0, 0)), &[0.5]);
        assert_eq!(head_scores_of_kind(shape, [&back], 0.5, ScoreKind::Official).unwrap().scores(HeadId::new(0, 0)), &[0.75]);
        // A record of a run that did not count repeats is written as before the field existed, and the
        // official score refuses it rather than reading no repeats.
        let plain = record("b", 1.0, &[]);
        assert!(!serde_json::to_string(&plain).unwrap().contains("repeat_hits"));
        let e = head_scores_of_kind(shape, [&plain], 0.5, ScoreKind::Official).unwrap_err().to_string();
        assert!(e.contains("test b was run without counting repeated hits"), "{e}");
    }

    #[test]
    fn soft_scores_come_from_the_recorded_mass() {
        let shape = HeadShape::new(1, 2);
        // A 4-token span; head 0 put 2.0 of weight on it over the counted steps: 10 * 2 / 16.
        let mut r = record("a", 1.0, &[]);
        r.soft_mass = Some([(HeadId::new(0, 0), 2.0)].into_iter().collect());
        let s = head_scores_of_kind(shape, [&r], 0.5, ScoreKind::Soft).unwrap();
        assert_eq!((s.scores(HeadId::new(0, 0)), s.scores(HeadId::new(0, 1))), (&[1.25][..], &[0.0][..]));
        let back: TestRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        // A record of a run that did not measure it is named, not scored as zeros.
        let e = head_scores_of_kind(shape, [&record("b", 1.0, &[])], 0.5, ScoreKind::Soft).unwrap_err().to_string();
        assert!(e.contains("test b was run without measuring attention mass"), "{e}");
        r.soft_mass = Some([(HeadId::new(0, 0), f64::NAN)].into_iter().collect());
        assert!(head_scores_of_kind(shape, [&r], 0.5, ScoreKind::Soft).is_err());
    }

    #[test]
    fn gate_selects_which_tests_are_scored() {
        let shape = HeadShape::new(1, 2);
        let recs = [record("a", 1.0, &[(HeadId::new(0, 0), vec![44, 45])]), record("b", 0.2, &[(HeadId::new(0, 0), vec![44])])];
        let gated = head_scores_from_records(shape, &recs, 0.5).unwrap();
        assert_eq!(gated.scores(HeadId::new(0, 0)), &[0.5]);
        let all = head_scores_from_records(shape, &recs, 0.0).unwrap();
        assert_eq!(all.scores(HeadId::new(0, 0)), &[0.5, 0.25]);
        assert_eq!(all.scores(HeadId::new(0, 1)), &[0.0, 0.0]);
    }

    #[test]
    fn scores_take_tests_in_plan_order_whatever_order_they_were_written_in() {
        let shape = HeadShape::new(1, 1);
        let cell = |needle_index, length, depth_percent, hits: Vec<u32>| TestRecord {
            needle_index,
            length,
            depth_percent,
            ..record("x", 1.0, &[(HeadId::new(0, 0), hits)])
        };
        // As a sweep that reuses prefixes writes them: depths deepest first, a second length appended.
        let written = [
            cell(0, 100, 100.0, vec![44]),
            cell(0, 100, 50.0, vec![44, 45]),
            cell(0, 100, 0.0, vec![44, 45, 46]),
            cell(1, 100, 50.0, vec![]),
            cell(0, 200, 50.0, vec![44, 45, 46, 47]),
        ];
        let order: Vec<(usize, usize, f64)> = in_plan_order(&written).iter().map(|r| (r.needle_index, r.length, r.depth_percent)).collect();
        assert_eq!(order, [(0, 100, 0.0), (0, 100, 50.0), (0, 100, 100.0), (0, 200, 50.0), (1, 100, 50.0)]);
        let scores = head_scores_from_records(shape, &written, 0.0).unwrap();
        assert_eq!(scores.scores(HeadId::new(0, 0)), &[0.75, 0.5, 0.25, 1.0, 0.0]);
    }
}
