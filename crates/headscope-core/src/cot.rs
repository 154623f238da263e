//! The chain-of-thought experiment of the paper's section 4.3 (fig. 10): tasks whose answer needs
//! several facts of the prompt, asked for the answer alone ([`CotMode::Direct`]) or with the reasoning
//! first ([`CotMode::StepByStep`]); masking retrieval heads is expected to hurt the second far more.
//!
//! Where this sits in the data flow: a task file (`public/cot/*.jsonl`) -> **core reads and checks it
//! and lays out each prompt** (this module) -> the model answers under each mask (a front end drives
//! it) -> **core cuts the final answer out of the text and scores it by exact match**.

use crate::error::{CoreError, Result};
use crate::metrics::squad_tokens;
use crate::prompt::{niah_user_message, PromptFormat};
use crate::tokenize::TextTokenizer;
use std::path::Path;

/// One task: a context, a question whose answer chains facts of it, the answer and a worked reasoning.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CotTask {
    /// Unique within its file; records are keyed by it.
    pub id: String,
    /// `word_problem` (arithmetic over numbers of the context) or `two_hop` (two facts chained).
    pub kind: String,
    /// The passage the facts are in.
    pub context: String,
    /// The question.
    pub question: String,
    /// The final answer: a whole number for word problems, a span of the context for two-hop questions.
    pub answer: String,
    /// A worked solution ending with "The answer is <answer>." (an example of the expected form).
    pub reasoning: String,
}

/// The sentence that introduces the final answer in a step-by-step answer.
pub const ANSWER_CUE: &str = "The answer is";

/// How the question is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CotMode {
    /// The answer alone: its first line is scored.
    Direct,
    /// Reasoning first, then "The answer is ...": what follows the last cue is scored.
    StepByStep,
}

impl CotMode {
    /// Both modes, direct first.
    pub const ALL: [CotMode; 2] = [CotMode::Direct, CotMode::StepByStep];

    /// The mode's name in records and figures.
    pub fn name(self) -> &'static str {
        match self {
            CotMode::Direct => "direct",
            CotMode::StepByStep => "step_by_step",
        }
    }

    /// What the question adds to say how to answer (the lab model's two-hop exercises use the same words).
    pub fn instruction(self) -> &'static str {
        match self {
            CotMode::Direct => "Give only the answer.",
            CotMode::StepByStep => "Think step by step, then end with \"The answer is ...\".",
        }
    }
}

impl CotTask {
    /// Checks that no field is empty, that a word problem's answer is a whole number, that a two-hop
    /// answer is a span of the context, and that the reasoning ends with the answer cue and the answer.
    pub fn check(&self) -> std::result::Result<(), String> {
        for (name, v) in [("id", &self.id), ("context", &self.context), ("question", &self.question), ("answer", &self.answer)] {
            if v.trim().is_empty() {
                return Err(format!("`{name}` is empty"));
            }
        }
        match self.kind.as_str() {
            "word_problem" => {
                if self.answer.trim().replace(',', "").parse::<i64>().is_err() {
                    return Err(format!("word problem {}: the answer {:?} is not a whole number", self.id, self.answer));
                }
            }
            "two_hop" => {
                if !self.context.to_lowercase().contains(&self.answer.trim().to_lowercase()) {
                    return Err(format!("two-hop task {}: the answer {:?} is not a span of the context", self.id, self.answer));
                }
            }
            other => return Err(format!("task {}: unknown kind {other:?} (word_problem or two_hop)", self.id)),
        }
        if final_answer(&self.reasoning, CotMode::StepByStep).map(|a| exact_match(&a, &self.answer)) != Some(true) {
            return Err(format!("task {}: the reasoning does not end with \"{ANSWER_CUE} {}.\"", self.id, self.answer.trim()));
        }
        Ok(())
    }

    /// The user message in `mode`: the NIAH layout (the context as a book, then the question), the
    /// question followed by how to answer ([`CotMode::instruction`]), so that a model trained on NIAH
    /// prompts meets the wording it knows.
    pub fn message(&self, mode: CotMode) -> String {
        niah_user_message(self.context.trim(), &format!("{} {}", self.question.trim(), mode.instruction()))
    }

    /// The prompt's token ids in `mode` ([`CotTask::message`] rendered in `format`), checked to leave
    /// room for `max_new_tokens` within a context of `max_positions`.
    pub fn prompt_ids(
        &self,
        mode: CotMode,
        format: &PromptFormat,
        tokenizer: &dyn TextTokenizer,
        max_new_tokens: usize,
        max_positions: usize,
    ) -> Result<Vec<u32>> {
        let rendered = format.render(&self.message(mode))?;
        let ids = tokenizer.encode(&rendered.text, rendered.add_special_tokens)?.ids;
        let need = ids.len() + max_new_tokens;
        if ids.len() < 2 || need > max_positions {
            return Err(CoreError::invalid(format!(
                "task {} ({}) needs {need} positions, the model's context is {max_positions} tokens",
                self.id,
                mode.name()
            )));
        }
        Ok(ids)
    }
}

/// Parses a task file (one JSON object per line; blank lines skipped); every task is checked and ids
/// must be unique. Errors name the line.
pub fn parse_cot_jsonl(text: &str, origin: &Path) -> Result<Vec<CotTask>> {
    let mut tasks: Vec<CotTask> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let task: CotTask = serde_json::from_str(line).map_err(|e| {
            CoreError::malformed(origin, format!("line {}: {e} (expected id, kind, context, question, answer, reasoning)", i + 1))
        })?;
        task.check().map_err(|why| CoreError::malformed(origin, format!("line {}: {why}", i + 1)))?;
        if tasks.iter().any(|t| t.id == task.id) {
            return Err(CoreError::malformed(origin, format!("line {}: the id {:?} is used twice", i + 1, task.id)));
        }
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Err(CoreError::malformed(origin, "no tasks in the file"));
    }
    Ok(tasks)
}

/// Reads a task file ([`parse_cot_jsonl`]).
pub fn read_cot_jsonl(path: &Path) -> Result<Vec<CotTask>> {
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    parse_cot_jsonl(&text, path)
}

/// The final answer in a generated text: in [`CotMode::StepByStep`], what follows the last
/// [`ANSWER_CUE`] up to the end of its sentence or line (`None` without a cue: the model never
/// answered); in [`CotMode::Direct`], the first non-empty line, or what follows a cue on it.
pub fn final_answer(generated: &str, mode: CotMode) -> Option<String> {
    let tail = match mode {
        CotMode::StepByStep => &generated[generated.rfind(ANSWER_CUE)? + ANSWER_CUE.len()..],
        CotMode::Direct => {
            let line = generated.lines().map(str::trim).find(|l| !l.is_empty())?;
            line.rfind(ANSWER_CUE).map_or(line, |i| &line[i + ANSWER_CUE.len()..])
        }
    };
    let line = tail.lines().next().unwrap_or("").trim().trim_start_matches(':').trim();
    // The sentence ends at a full stop followed by a space or the end, not at a decimal point.
    let end = line.char_indices().find(|&(i, c)| c == '.' && line[i + 1..].chars().next().is_none_or(char::is_whitespace));
    Some(end.map_or(line, |(i, _)| &line[..i]).trim().to_owned())
}

/// Whether `predicted` is `gold` up to case, punctuation, articles and spacing (SQuAD normalisation),
/// numbers compared without thousands separators.
pub fn exact_match(predicted: &str, gold: &str) -> bool {
    let norm = |s: &str| squad_tokens(&s.replace(',', ""));
    let (p, g) = (norm(predicted), norm(gold));
    !g.is_empty() && p == g
}

/// One answered task under one mode and mask: a line of a CoT run's `cot.jsonl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CotRecord {
    /// The task's id.
    pub id: String,
    /// The task's kind.
    pub kind: String,
    /// How it was asked.
    pub mode: CotMode,
    /// The generated text.
    pub generated: String,
    /// The final answer cut from it ([`final_answer`]); empty when there was none.
    pub predicted: String,
    /// The expected answer.
    pub gold: String,
    /// Exact match of `predicted` against `gold`.
    pub correct: bool,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub new_tokens: usize,
}

impl CotRecord {
    /// Scores a generated answer to `task` asked in `mode`.
    pub fn scored(task: &CotTask, mode: CotMode, generated: String, prompt_tokens: usize, new_tokens: usize) -> CotRecord {
        let predicted = final_answer(&generated, mode).unwrap_or_default();
        let correct = exact_match(&predicted, &task.answer);
        CotRecord {
            id: task.id.clone(),
            kind: task.kind.clone(),
            mode,
            generated,
            predicted,
            gold: task.answer.clone(),
            correct,
            prompt_tokens,
            new_tokens,
        }
    }
}

/// Share of `records` answered correctly (0 for none).
pub fn accuracy<'a>(records: impl IntoIterator<Item = &'a CotRecord>) -> f64 {
    let (mut n, mut ok) = (0usize, 0usize);
    for r in records {
        n += 1;
        ok += r.correct as usize;
    }
    if n == 0 {
        0.0
    } else {
        ok as f64 / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(kind: &str, answer: &str, reasoning: &str) -> CotTask {
        CotTask {
            id: "t1".into(),
            kind: kind.into(),
            context: "The red key opens the cellar. Ada holds the red key. Bo holds the blue key.".into(),
            question: "What does Ada's key open?".into(),
            answer: answer.into(),
            reasoning: reasoning.into(),
        }
    }

    #[test]
    fn final_answers_are_cut_after_the_last_cue() {
        let step = CotMode::StepByStep;
        assert_eq!(
            final_answer("Ada holds the red key. The red key opens the cellar. The answer is the cellar.", step).as_deref(),
            Some("the cellar")
        );
        assert_eq!(final_answer("3 x 4 = 12, so 12 + 2.5 = 14.5. The answer is 14.5. Next", step).as_deref(), Some("14.5"));
        assert_eq!(final_answer("The answer is 3. No wait. The answer is: 4\nmore", step).as_deref(), Some("4"));
        assert_eq!(final_answer("I think it is 12.", step), None, "no cue, no answer");
        assert_eq!(final_answer("\n  the cellar.\nThe red key...", CotMode::Direct).as_deref(), Some("the cellar"));
        assert_eq!(final_answer("The answer is 1,240.", CotMode::Direct).as_deref(), Some("1,240"));
        assert_eq!(final_answer("   \n", CotMode::Direct), None);
    }

    #[test]
    fn exact_match_ignores_case_articles_and_separators() {
        assert!(exact_match("The Cellar", "cellar"));
        assert!(exact_match("1,240", "1240"));
        assert!(!exact_match("the cellar door", "cellar"));
        assert!(!exact_match("12", "120"));
        assert!(!exact_match("", "cellar"));
    }

    #[test]
    fn tasks_are_checked_and_records_scored() {
        assert!(task("two_hop", "the cellar", "Ada holds the red key, which opens the cellar. The answer is the cellar.").check().is_ok());
        assert!(task("two_hop", "the attic", "The answer is the attic.").check().unwrap_err().contains("not a span"));
        assert!(task("word_problem", "twelve", "The answer is twelve.").check().unwrap_err().contains("not a whole number"));
        assert!(task("two_hop", "the cellar", "Ada opens it.").check().unwrap_err().contains("does not end with"));
        assert!(task("riddle", "the cellar", "The answer is the cellar.").check().unwrap_err().contains("unknown kind"));
        let t = task("two_hop", "the cellar", "The answer is the cellar.");
        assert!(t
            .message(CotMode::StepByStep)
            .ends_with("Ada's key open? Think step by step, then end with \"The answer is ...\".\nAnswer:"));
        assert!(t.message(CotMode::Direct).starts_with("<book>The red key opens the cellar."));
        let r = CotRecord::scored(
            &t,
            CotMode::StepByStep,
            " Ada has the red key. It opens the cellar. The answer is the cellar.".into(),
            40,
            17,
        );
        assert!(r.correct && r.predicted == "the cellar");
        let wrong = CotRecord::scored(&t, CotMode::Direct, " the attic".into(), 40, 3);
        assert!(!wrong.correct);
        assert_eq!(accuracy([&r, &wrong]), 0.5);
    }

    #[test]
    fn task_files_name_their_problems() {
        let p = Path::new("tasks.jsonl");
        let good = r#"{"id":"a","kind":"two_hop","context":"Ada holds the red key.","question":"Who holds the red key?","answer":"Ada","reasoning":"The answer is Ada."}"#;
        assert_eq!(parse_cot_jsonl(good, p).unwrap().len(), 1);
        for (text, expect) in [
            (format!("{good}\n{good}"), "used twice"),
            ("".to_string(), "no tasks"),
            (good.replace("\"reasoning\"", "\"steps\""), "line 1"),
            (good.replace("Ada\",\"reasoning", "Bo\",\"reasoning"), "not a span"),
        ] {
            let e = parse_cot_jsonl(&text, p).unwrap_err().to_string();
            assert!(e.contains(expect) && e.contains("tasks.jsonl"), "{e}");
        }
    }

    /// The shipped task files parse and hold at least 40 tasks of each kind.
    #[test]
    fn shipped_task_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/cot");
        for (file, kind) in [("word-problems.jsonl", "word_problem"), ("two-hop.jsonl", "two_hop")] {
            let tasks = read_cot_jsonl(&dir.join(file)).unwrap_or_else(|e| panic!("{e}"));
            assert!(tasks.len() >= 40 && tasks.iter().all(|t| t.kind == kind), "{file}: {} tasks", tasks.len());
        }
    }
}
