//! Extractive question answering with heads masked (the paper's fig. 8): a QA file of contexts,
//! questions and answer spans; the prompt a model answers; and how an answer is scored (SQuAD token F1).
//!
//! Where this sits in the data flow: a QA JSONL file -> **core reads and checks it and lays out each
//! prompt** (this module) -> the model answers with and without masks (the CLI drives it) -> **core cuts
//! and scores the answers** ([`prediction`], [`crate::metrics::token_f1`]) -> plots and report.

use crate::error::{CoreError, Result};
use crate::head::HeadId;
use crate::metrics::{squad_tokens, token_f1};
use crate::prompt::niah_user_message;
use std::path::Path;

/// One extractive QA item: a context, a question about it, and the accepted answers (spans of the context).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QaItem {
    /// The passage the answer is copied from.
    pub context: String,
    /// The question.
    pub question: String,
    /// Accepted answers; at least one occurs in `context` (ignoring case).
    pub answers: Vec<String>,
}

impl QaItem {
    /// Checks that no field is empty and that some answer is a span of the context (ignoring case).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.context.trim().is_empty() {
            return Err("`context` is empty".into());
        }
        if self.question.trim().is_empty() {
            return Err("`question` is empty".into());
        }
        if self.answers.is_empty() || self.answers.iter().any(|a| squad_tokens(a).is_empty()) {
            return Err("`answers` must hold at least one answer, and every answer some words".into());
        }
        let context = self.context.to_lowercase();
        if !self.answers.iter().any(|a| context.contains(&a.trim().to_lowercase())) {
            return Err(format!("no answer of {:?} occurs in the context: extractive QA answers are spans of the context", self.answers));
        }
        Ok(())
    }

    /// The user message the model answers: the NIAH layout (context as a book, then the question), so
    /// a model evaluated on NIAH prompts meets the same wording.
    pub fn message(&self) -> String {
        niah_user_message(&self.context, &self.question)
    }
}

/// Parses a QA JSONL file (`context`, `question`, `answers` per line; blank lines skipped); every item
/// is checked ([`QaItem::check`]) and errors name the line.
pub fn parse_qa_jsonl(text: &str, origin: &Path) -> Result<Vec<QaItem>> {
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let item: QaItem = serde_json::from_str(line).map_err(|e| {
            CoreError::malformed(origin, format!("line {}: {e} (expected {{\"context\", \"question\", \"answers\": [...]}})", i + 1))
        })?;
        item.check().map_err(|why| CoreError::malformed(origin, format!("line {}: {why}", i + 1)))?;
        items.push(item);
    }
    if items.is_empty() {
        return Err(CoreError::malformed(origin, "no QA items in the file"));
    }
    Ok(items)
}

/// Reads a QA JSONL file ([`parse_qa_jsonl`]).
pub fn read_qa_jsonl(path: &Path) -> Result<Vec<QaItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    parse_qa_jsonl(&text, path)
}

/// The answer in a model's generated text: its first non-empty line, trimmed. A model that has said
/// its answer and goes on to a new line is not charged for what follows.
pub fn prediction(generated: &str) -> String {
    generated.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").to_owned()
}

/// Token F1 of the [`prediction`] in `generated` against the item's answers.
pub fn score(item: &QaItem, generated: &str) -> f64 {
    token_f1(&prediction(generated), &item.answers)
}

/// One answered item: a line of a QA run's `qa.jsonl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QaRecord {
    /// The item's index in the QA file (0-based); a rerun skips indices it finds.
    pub index: usize,
    /// The question asked.
    pub question: String,
    /// The accepted answers.
    pub answers: Vec<String>,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// The generated token ids.
    pub generated_ids: Vec<u32>,
    /// The generated text.
    pub answer: String,
    /// The part of `answer` that is scored ([`prediction`]).
    pub prediction: String,
    /// Token F1 of the prediction against the answers.
    pub f1: f64,
    /// The heads masked while answering (empty when none).
    pub masked_heads: Vec<HeadId>,
    /// Wall time in seconds: the prefill (only the part computed, not a prefix reused from the cache) and
    /// the decode.
    pub seconds: f64,
}

/// Mean token F1 of `records` (0 for none).
pub fn mean_f1(records: &[QaRecord]) -> f64 {
    if records.is_empty() {
        0.0
    } else {
        records.iter().map(|r| r.f1).sum::<f64>() / records.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(context: &str, question: &str, answers: &[&str]) -> QaItem {
        QaItem { context: context.into(), question: question.into(), answers: answers.iter().map(|a| a.to_string()).collect() }
    }

    #[test]
    fn parses_checks_and_names_bad_lines() {
        let p = Path::new("qa.jsonl");
        let good = r#"{"context": "The pool is called Bethesda.", "question": "What is the pool called?", "answers": ["Bethesda"]}"#;
        let items = parse_qa_jsonl(&format!("{good}\n\n{good}\n"), p).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].answers, vec!["Bethesda"]);
        assert!(items[0].message().starts_with("<book>The pool is called Bethesda.</book>"));
        for (text, expect) in [
            (r#"{"context": "x", "question": "q"}"#.to_owned(), "line 1"),
            (format!("{good}\nnot json"), "line 2"),
            (r#"{"context": "", "question": "q", "answers": ["a"]}"#.to_owned(), "`context` is empty"),
            (r#"{"context": "c", "question": " ", "answers": ["c"]}"#.to_owned(), "`question` is empty"),
            (r#"{"context": "c", "question": "q", "answers": []}"#.to_owned(), "at least one answer"),
            (r#"{"context": "The pool.", "question": "q", "answers": ["Siloam"]}"#.to_owned(), "occurs in the context"),
            (String::new(), "no QA items"),
        ] {
            let e = parse_qa_jsonl(&text, p).unwrap_err().to_string();
            assert!(e.contains(expect) && e.contains("qa.jsonl"), "{text}: {e}");
        }
        // Case does not matter for the span check.
        assert!(item("The pool is called Bethesda.", "q", &["the POOL"]).check().is_ok());
    }

    #[test]
    fn the_first_line_is_scored() {
        let it = item("A lad had five barley loaves and two small fishes.", "What did the lad have?", &["five barley loaves"]);
        assert_eq!(prediction("\n  five barley loaves \nand then more text"), "five barley loaves");
        assert_eq!(prediction("   \n"), "");
        assert_eq!(score(&it, " five barley loaves\nWhat else?"), 1.0);
        // "two barley loaves": 2 of 3 tokens match in both directions -> F1 2/3.
        assert!((score(&it, "two barley loaves") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(score(&it, "\n"), 0.0);
    }

    /// The QA file shipped for the report: every item is a well-formed extractive item.
    #[test]
    fn the_shipped_qa_file_is_extractive() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/qa/john-qa.jsonl");
        let items = read_qa_jsonl(&path).unwrap();
        assert!(items.len() >= 16, "{} items", items.len());
        let mut questions: Vec<&str> = items.iter().map(|i| i.question.as_str()).collect();
        questions.sort();
        questions.dedup();
        assert_eq!(questions.len(), items.len(), "questions repeat");
    }
}
