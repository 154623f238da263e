//! Prints sentence exercises of the lab model's kind as needles JSONL, drawn from the given texts:
//! a needle set in the training distribution, to tell "cannot retrieve" from "cannot retrieve this
//! shape" (run it on text the model never trained on).
//!   cargo run --release -p headscope-train --example exercises -- COUNT SEED TEXT... > needles.jsonl
use headscope_train::exercises::ExerciseGenerator;
use headscope_train::sentence_exercises::{SentenceExerciseGenerator, SentenceExerciseSettings, SentencePool};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [count, seed, files @ ..] = args.as_slice() else {
        return Err("usage: exercises COUNT SEED TEXT...".into());
    };
    let texts = files.iter().map(std::fs::read_to_string).collect::<Result<Vec<_>, _>>()?;
    let words = Arc::new(texts.iter().flat_map(|t| ExerciseGenerator::words_of(t)).collect::<Vec<_>>());
    let pool = Arc::new(SentencePool::from_texts(&texts));
    // Corpus sentences only, with no near sentences: the needle alone, as a student's test places it.
    let settings = SentenceExerciseSettings { corpus_sentences: 1.0, distractors: 0.0, elsewhere: 0, ..Default::default() };
    let mut g = SentenceExerciseGenerator::new(seed.parse()?, pool, words, settings);
    for _ in 0..count.parse::<usize>()? {
        println!("{}", serde_json::to_string(&g.next_exercise().inserted())?);
    }
    Ok(())
}
