//! A session saved to a file and opened again: the page's inputs and every run with its results
//! (records, answers, per-step argmax), so that a class's results survive the browser and can be
//! handed in, compared later or opened on another machine with the same model.
//!
//! The file is outside input when it is opened: it is read with limits and checked against the loaded
//! model, and a file that does not fit is refused with a message (a fuzz target runs it).

use crate::protocol::{MaskRequest, TestResult, TestSetup};
use crate::share::PageState;
use headscope_core::HeadShape;
use serde::{Deserialize, Serialize};

/// What the file says it is.
pub const FORMAT: &str = "headscope-lab-session";
/// This format's version; a later one is refused with a message, not misread.
const VERSION: u32 = 1;
/// The largest session file the page opens (a long batch on a large model stays far below).
pub const MAX_BYTES: usize = 256 << 20;

/// The model the runs were made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedModel {
    pub name: String,
    /// Content hash, as the page and `run.json` write it.
    pub hash: String,
    pub layers: usize,
    pub heads: usize,
}

/// One run of the session: a sweep's inputs and results, as the page follows it while it runs and
/// as the session file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedRun {
    /// What the run was, in English ("run 2: 3 heads masked (top-3; uniform)"), for a reader of the
    /// file; the page labels runs in its own language ([`crate::views::run_label`]).
    pub name: String,
    /// How its masked heads were chosen ("top-3", "random-3, seed 1", "chosen by hand"; empty without
    /// a mask, and in files of earlier versions, whose runs are then labelled by `name`).
    #[serde(default)]
    pub origin: String,
    pub setup: TestSetup,
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    pub total: usize,
    /// Tokens of one copy of the haystack, so that the page can say when prompts repeat it (0 in
    /// files of earlier versions: nothing is said).
    #[serde(default)]
    pub haystack_tokens: usize,
    pub mask: Option<MaskRequest>,
    pub results: Vec<TestResult>,
    /// When it started (the page's clock, seconds); not saved.
    #[serde(skip)]
    pub started: f64,
    /// The sweep's timings once it finished.
    pub done: Option<serde_json::Value>,
}

impl SavedRun {
    /// The run's test records so far.
    pub fn records(&self) -> Vec<headscope_core::files::TestRecord> {
        self.results.iter().map(|r| r.record.clone()).collect()
    }
}

/// The saved session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedSession {
    /// Always [`FORMAT`].
    pub format: String,
    pub v: u32,
    /// When it was saved (ISO 8601, the browser's clock).
    pub saved: String,
    pub model: SavedModel,
    pub state: PageState,
    pub runs: Vec<SavedRun>,
    pub shown_run: usize,
    pub compare_run: Option<usize>,
}

impl SavedSession {
    /// A session of `runs` made with `model`.
    pub fn new(model: SavedModel, state: PageState, runs: Vec<SavedRun>, shown_run: usize, compare_run: Option<usize>) -> Self {
        SavedSession { format: FORMAT.into(), v: VERSION, saved: String::new(), model, state, runs, shown_run, compare_run }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A session file's text, checked to be one and to hold runs of a model of its own shape; the
    /// message says what is wrong.
    pub fn from_json(name: &str, text: &str) -> Result<SavedSession, String> {
        if text.len() > MAX_BYTES {
            return Err(format!("{name} is {} MB: a saved session is at most {} MB", text.len() >> 20, MAX_BYTES >> 20));
        }
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("{name} is not a saved session of this page (it is not JSON: {e})"))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            _ => {
                return Err(format!(
                    "{name} is not a saved session of this page (head-score files are opened with \"Import head scores\", \
                     tests.jsonl is the CLI's)"
                ))
            }
        }
        let s: SavedSession = serde_json::from_value(value).map_err(|e| format!("{name} is a damaged saved session: {e}"))?;
        if s.v > VERSION {
            return Err(format!("{name} was saved by a newer version of the page (format {}, this page reads {VERSION})", s.v));
        }
        let shape = HeadShape::new(s.model.layers, s.model.heads);
        if s.model.layers == 0 || s.model.heads == 0 {
            return Err(format!("{name} names a model of {} layers x {} heads", s.model.layers, s.model.heads));
        }
        let heads = s.model.layers.checked_mul(s.model.heads).ok_or_else(|| format!("{name} names an impossible model shape"))?;
        for (i, run) in s.runs.iter().enumerate() {
            let damaged = |what: String| format!("{name} is a damaged saved session: run {} {what}", i + 1);
            if let Some(mask) = &run.mask {
                shape.check(&mask.heads).map_err(|e| damaged(format!("masks {e}")))?;
            }
            for r in &run.results {
                let hits: Vec<_> = r.record.hits.keys().copied().collect();
                shape.check(&hits).map_err(|e| damaged(format!("test {}: {e}", r.record.id)))?;
                if r.argmax.iter().any(|step| step.len() != heads) {
                    return Err(damaged(format!("test {}: an argmax step does not hold one position per head", r.record.id)));
                }
            }
        }
        if s.shown_run >= s.runs.len().max(1) || s.compare_run.is_some_and(|c| c >= s.runs.len()) {
            return Err(format!("{name} is a damaged saved session: it shows a run it does not hold"));
        }
        s.state.masked_heads().and_then(|m| shape.check(&m).map_err(|e| e.to_string())).map_err(|e| format!("{name}: {e}"))?;
        Ok(s)
    }

    /// Whether the runs fit a model of `layers` x `heads` with content hash `hash`: `Err` when the
    /// shape differs (the heatmaps and head views need the same model), `Ok(false)` when only the
    /// hash does (another model of the same shape: the runs show, but are not that model's).
    pub fn fits(&self, layers: usize, heads: usize, hash: &str) -> Result<bool, String> {
        if (layers, heads) != (self.model.layers, self.model.heads) {
            return Err(format!(
                "this session's runs were made with {} ({} layers x {} heads); the loaded model has {layers} x {heads}: \
                 load that model first, then open the session again",
                self.model.name, self.model.layers, self.model.heads
            ));
        }
        Ok(hash == self.model.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::AnswerToken;
    use headscope_core::files::TestRecord;
    use headscope_core::niah::Needle;
    use headscope_core::HeadId;

    fn sample() -> SavedSession {
        let record = TestRecord {
            id: "n0-L256-d50".into(),
            needle_index: 0,
            needle: "The key is under the mat.".into(),
            length: 256,
            prompt_tokens: 256,
            depth_percent: 50.0,
            placed_depth_percent: 50.0,
            prompt_hash: "ab".into(),
            needle_tokens: [100, 108],
            answer_tokens: [104, 107],
            generated_ids: vec![5, 6, 7],
            answer: "under the mat".into(),
            recall: 1.0,
            hits: [(HeadId::new(1, 0), vec![0, 1])].into_iter().collect(),
            repeat_hits: Some([(HeadId::new(1, 0), 1)].into_iter().collect()),
            soft_mass: Some([(HeadId::new(1, 0), 0.75)].into_iter().collect()),
            qr: Some([(HeadId::new(1, 0), -0.125)].into_iter().collect()),
            masked_heads: vec![],
            prompt_ids: None,
            head_argmax: None,
            seconds: 0.1,
        };
        let result = TestResult {
            record,
            answer: vec![AnswerToken { text: "under".into(), copied: true }],
            argmax: vec![vec![0, 104, 3, 4], vec![0, 105, 3, 4]],
            prefill_tokens: 256,
            prefill_seconds: 0.01,
            decode_tokens: 3,
            decode_seconds: 0.02,
        };
        let setup = TestSetup {
            needles: vec![Needle {
                needle: "The key is under the mat.".into(),
                question: "Where is the key?".into(),
                real_needle: "under the mat".into(),
            }],
            haystack: "hay ".repeat(50),
            max_new_tokens: 16,
            plain: true,
        };
        let run = SavedRun {
            origin: String::new(),
            name: "run 1: no heads masked".into(),
            setup,
            lengths: vec![256],
            depths: vec![50.0],
            total: 1,
            haystack_tokens: 50,
            mask: None,
            results: vec![result],
            started: 0.0,
            done: Some(serde_json::json!({"seconds": 1.5})),
        };
        let masked = SavedRun {
            origin: "top-2".into(),
            name: "run 2: 1 heads masked".into(),
            mask: Some(MaskRequest { heads: vec![HeadId::new(1, 0)], mode: "uniform".into(), scope: "decode".into() }),
            ..run.clone()
        };
        let model = SavedModel { name: "lab model".into(), hash: "feed".into(), layers: 2, heads: 2 };
        SavedSession::new(model, PageState { lengths: "256".into(), ..PageState::default() }, vec![run, masked], 1, Some(0))
    }

    #[test]
    fn runs_are_labelled_in_the_page_language_from_what_they_were() {
        use crate::strings::Lang;
        use crate::views::{random_origin, run_label};
        let s = sample();
        let (plain, mut masked) = (&s.runs[0], s.runs[1].clone());
        assert_eq!(run_label(Lang::En, 0, plain), "run 1: no heads masked");
        assert_eq!(run_label(Lang::Zh, 0, plain), "第 1 次运行：未屏蔽任何头");
        assert_eq!(run_label(Lang::En, 1, &masked), "run 2: 1 heads masked (top-2; uniform)");
        assert_eq!(run_label(Lang::Zh, 1, &masked), "第 2 次运行：屏蔽了 1 个头（得分最高的 2 个；均匀注意力）");
        masked.origin = random_origin(3, 7);
        assert_eq!(run_label(Lang::En, 1, &masked), "run 2: 1 heads masked (random-3, seed 7; uniform)");
        assert_eq!(run_label(Lang::Zh, 1, &masked), "第 2 次运行：屏蔽了 1 个头（随机 3 个，种子 7；均匀注意力）");
        masked.origin = "chosen by hand".into();
        assert!(run_label(Lang::Zh, 1, &masked).contains("手动选择"));
        // A masked run of an earlier file, which does not say how its heads were chosen, keeps its name;
        // such a file still opens.
        masked.origin.clear();
        assert_eq!(run_label(Lang::Zh, 1, &masked), "run 2: 1 heads masked");
        let mut value: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        for run in value["runs"].as_array_mut().unwrap() {
            run.as_object_mut().unwrap().remove("origin").expect("a run says how its heads were chosen");
        }
        let old = value.to_string();
        let reopened = SavedSession::from_json("old.json", &old).unwrap();
        assert_eq!(run_label(Lang::En, 1, &reopened.runs[1]), "run 2: 1 heads masked");
    }

    #[test]
    fn a_session_survives_its_file() {
        let s = sample();
        assert_eq!(SavedSession::from_json("s.json", &s.to_json()).unwrap(), s);
        assert_eq!(s.fits(2, 2, "feed"), Ok(true));
        assert_eq!(s.fits(2, 2, "other"), Ok(false), "another model of the same shape shows the runs with a warning");
        assert!(s.fits(3, 2, "feed").unwrap_err().contains("load that model first"));
    }

    #[test]
    fn files_that_are_not_sessions_or_are_damaged_are_refused_with_a_reason() {
        let good = sample().to_json();
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "not JSON"),
            (r#"{"0-0": [0.5]}"#.into(), "Import head scores"),
            (good.replace("\"v\":1", "\"v\":9"), "newer version"),
            (good.replace("\"layers\":2", "\"layers\":0"), "0 layers"),
            (good.replace("\"shown_run\":1", "\"shown_run\":7"), "does not hold"),
            (good.replace("[0,104,3,4]", "[0,104]"), "one position per head"),
            (good.replace("\"1-0\"", "\"9-0\""), "run 1"),
            (good.replace("\"runs\":[", "\"runs\":[1,"), "damaged"),
        ];
        for (text, why) in cases {
            let e = SavedSession::from_json("s.json", &text).unwrap_err();
            assert!(e.contains(why) && e.contains("s.json"), "{why}: {e}");
        }
    }
}
