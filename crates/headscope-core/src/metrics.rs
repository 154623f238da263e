//! Answer metrics: ROUGE-1 recall, the NIAH pass criterion of the paper's harness.

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
}
