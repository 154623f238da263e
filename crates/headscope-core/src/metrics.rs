//! Answer metrics: ROUGE-1 recall, the NIAH pass criterion of the paper's harness, and SQuAD-style token
//! F1, the score of extractive QA (the paper's fig. 8).

use std::collections::HashMap;

/// Lower-cased alphanumeric words of `text`, as rouge_score tokenizes (no stemming).
///
/// rouge_score keeps only `[a-z0-9]`; this keeps every Unicode alphanumeric character so that
/// non-English answers are not scored as empty.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase().split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_owned).collect()
}

/// ROUGE-1 recall of `prediction` against `reference`: the share of the reference's words (with
/// multiplicity) that the prediction contains. 0 when the reference has no words.
pub fn rouge1_recall(prediction: &str, reference: &str) -> f64 {
    let reference = words(reference);
    if reference.is_empty() {
        return 0.0;
    }
    let mut available: HashMap<String, usize> = HashMap::new();
    for w in words(prediction) {
        *available.entry(w).or_default() += 1;
    }
    let mut overlap = 0usize;
    for w in &reference {
        if let Some(n) = available.get_mut(w) {
            if *n > 0 {
                *n -= 1;
                overlap += 1;
            }
        }
    }
    overlap as f64 / reference.len() as f64
}

/// SQuAD's answer normalisation, as tokens: lower case, ASCII punctuation removed (not replaced, so
/// "don't" becomes "dont"), the articles a/an/the dropped, split on whitespace.
///
/// SQuAD drops articles with the regex `\b(a|an|the)\b` on the whole text; dropping whole tokens is the
/// same except beside symbols that are not word characters (SQuAD turns "a€" into "€", this keeps it).
pub fn squad_tokens(text: &str) -> Vec<String> {
    let text: String = text.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    text.split_whitespace().filter(|t| !matches!(*t, "a" | "an" | "the")).map(str::to_owned).collect()
}

/// SQuAD-style token F1 of `prediction` against the best of `answers` ([`squad_tokens`] on both; tokens
/// count with multiplicity). 0 when there are no answers. As in the SQuAD v2 script, a prediction and an
/// answer that both normalise to nothing score 1; either alone empty scores 0.
pub fn token_f1(prediction: &str, answers: &[String]) -> f64 {
    let pred = squad_tokens(prediction);
    answers.iter().map(|a| f1_tokens(&pred, &squad_tokens(a))).fold(0.0, f64::max)
}

fn f1_tokens(pred: &[String], gold: &[String]) -> f64 {
    if pred.is_empty() || gold.is_empty() {
        return if pred.is_empty() && gold.is_empty() { 1.0 } else { 0.0 };
    }
    let mut available: HashMap<&str, usize> = HashMap::new();
    for t in gold {
        *available.entry(t.as_str()).or_default() += 1;
    }
    let mut same = 0usize;
    for t in pred {
        if let Some(n) = available.get_mut(t.as_str()) {
            if *n > 0 {
                *n -= 1;
                same += 1;
            }
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / pred.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_counts_reference_words_with_multiplicity() {
        let r = "eat a sandwich and sit in Dolores Park on a sunny day";
        assert_eq!(rouge1_recall(r, r), 1.0);
        assert_eq!(rouge1_recall("The best thing: eat a sandwich and sit in Dolores Park on a sunny day.", r), 1.0);
        // "a" appears twice in the reference; once in the prediction.
        let p = "eat a sandwich";
        assert!((rouge1_recall(p, r) - 3.0 / 12.0).abs() < 1e-12);
        assert_eq!(rouge1_recall("", r), 0.0);
        assert_eq!(rouge1_recall("anything", ""), 0.0);
        assert_eq!(rouge1_recall("EAT, Sandwich!", "eat sandwich"), 1.0);
    }

    fn answers(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn squad_normalisation() {
        assert_eq!(squad_tokens("The  Denver Broncos!"), vec!["denver", "broncos"]);
        assert_eq!(squad_tokens("Don't stop, an apple a day."), vec!["dont", "stop", "apple", "day"]);
        // Articles go only as whole words: "theory" and "another" stay.
        assert_eq!(squad_tokens("A theory, another"), vec!["theory", "another"]);
        assert!(squad_tokens(" the . a ").is_empty());
    }

    #[test]
    fn token_f1_as_squad_scores_it() {
        let broncos = answers(&["Denver Broncos", "Broncos", "the Denver Broncos."]);
        assert_eq!(token_f1("the Denver Broncos", &broncos), 1.0);
        assert_eq!(token_f1("BRONCOS!", &broncos), 1.0);
        // One of two gold tokens: precision 1, recall 1/2 -> 2/3.
        assert!((token_f1("Denver", &answers(&["Denver Broncos"])) - 2.0 / 3.0).abs() < 1e-12);
        // Max over answers: P 2/3, R 1 against the first (0.8), P 1/3, R 1 against the second (0.5).
        let f = token_f1("Denver Broncos won", &answers(&["Denver Broncos", "Broncos"]));
        assert!((f - 0.8).abs() < 1e-12, "{f}");
        // Multiplicity: "broncos broncos" against "broncos" shares one token: P 1/2, R 1.
        assert!((token_f1("broncos broncos", &answers(&["broncos"])) - 2.0 / 3.0).abs() < 1e-12);
        // The San Francisco needle, half remembered: eat, sandwich, in of the prediction's 4 tokens.
        let sf = answers(&["eat a sandwich and sit in Dolores Park on a sunny day"]);
        // Gold without articles: eat sandwich and sit in dolores park on sunny day (10); prediction 3 of them.
        assert!((token_f1("Eat a sandwich in the sun", &sf) - 2.0 * (3.0 / 4.0) * (3.0 / 10.0) / (3.0 / 4.0 + 3.0 / 10.0)).abs() < 1e-12);
        assert_eq!(token_f1("nothing alike", &sf), 0.0);
        // Edge cases: no answers, empty prediction, answers that normalise to nothing.
        assert_eq!(token_f1("Denver", &[]), 0.0);
        assert_eq!(token_f1("", &broncos), 0.0);
        assert_eq!(token_f1("", &answers(&[""])), 1.0);
        assert_eq!(token_f1("the", &answers(&["a."])), 1.0);
        assert_eq!(token_f1("Denver", &answers(&[""])), 0.0);
    }
}
