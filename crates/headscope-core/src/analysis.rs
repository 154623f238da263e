//! The numbers behind the paper's figures, computed from finished results: how mean scores spread over
//! heads (fig. 3), how often each head fires (fig. 4), how alike two models' heads are (fig. 6), why a
//! NIAH answer failed (fig. 9), how soon the head ranking settles (fig. 13) and answer F1 for the QA
//! experiment (fig. 8, [`token_f1`]).
//!
//! Where this sits in the data flow: core scores tests ([`crate::score`]) and files carry them between
//! runs ([`crate::files`]) -> **analysis reduces scores and test records to figures' numbers** (this
//! module) -> the CLI prints them and the plot crate draws them. Nothing here runs a model.

use crate::error::{CoreError, Result};
use crate::files::TestRecord;
use crate::head::{HeadId, HeadShape};
use crate::metrics::{rouge1_recall, words};
use crate::score::{passes_gate, HeadScores, RETRIEVAL_THRESHOLD};
use std::collections::HashSet;

pub use crate::metrics::token_f1;

// ---- fig. 3: distribution of mean scores --------------------------------------------------------

/// How many heads fall in each mean-score band of fig. 3 (every head of the grid is counted once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ScoreDistribution {
    /// Heads counted: every head of the grid.
    pub heads: usize,
    /// Heads whose mean is 0: they never copied a needle token.
    pub zero: usize,
    /// Heads with a mean in (0, 0.1]: some copying, not retrieval heads.
    pub weak: usize,
    /// Heads with a mean in (0.1, 0.5]: retrieval heads.
    pub moderate: usize,
    /// Heads with a mean above 0.5: strong retrieval heads.
    pub strong: usize,
}

impl ScoreDistribution {
    /// Names of the bands, in the order of [`Self::counts`] and [`Self::shares`].
    pub const BANDS: [&'static str; 4] = ["0", "(0, 0.1]", "(0.1, 0.5]", "> 0.5"];

    /// Head counts per band: zero, weak, moderate, strong.
    pub fn counts(&self) -> [usize; 4] {
        [self.zero, self.weak, self.moderate, self.strong]
    }

    /// Share of all heads per band; the shares sum to 1 (all 0 for a grid without heads).
    pub fn shares(&self) -> [f64; 4] {
        let n = self.heads.max(1) as f64;
        self.counts().map(|c| c as f64 / n)
    }
}

/// Counts heads by mean score into the bands of fig. 3: exactly 0, (0, 0.1], (0.1, 0.5], above 0.5.
pub fn score_distribution(scores: &HeadScores) -> ScoreDistribution {
    let mut d = ScoreDistribution { heads: 0, zero: 0, weak: 0, moderate: 0, strong: 0 };
    for h in scores.shape().iter() {
        let m = scores.mean(h);
        d.heads += 1;
        // Tested from the top so that anything not above 0 (0, and a NaN no scoring produces) lands in `zero`.
        if m > 0.5 {
            d.strong += 1;
        } else if m > RETRIEVAL_THRESHOLD {
            d.moderate += 1;
        } else if m > 0.0 {
            d.weak += 1;
        } else {
            d.zero += 1;
        }
    }
    d
}

// ---- fig. 4: activation frequency ---------------------------------------------------------------

/// One head's mean score and how often it fired (fig. 4).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct HeadActivity {
    /// The head.
    pub head: HeadId,
    /// Mean retrieval score over the scored tests.
    pub mean: f64,
    /// Share of scored tests in which the head hit at least once.
    pub activation_frequency: f64,
}

/// Every head's mean and activation frequency, highest mean first (ties in head order, as
/// [`HeadScores::ranked`]).
pub fn head_activity(scores: &HeadScores) -> Vec<HeadActivity> {
    scores
        .ranked()
        .into_iter()
        .map(|(head, mean)| HeadActivity { head, mean, activation_frequency: scores.activation_frequency(head) })
        .collect()
}

/// Number of heads that fired in every scored test (activation frequency exactly 1); heads without
/// tests never count.
pub fn always_active(scores: &HeadScores) -> usize {
    scores.shape().iter().filter(|&h| !scores.scores(h).is_empty() && scores.activation_frequency(h) == 1.0).count()
}

// ---- fig. 6: correlation between models ---------------------------------------------------------

/// Pearson's r of two equally long series; None when their lengths differ, when they hold fewer than
/// two values, or when either is constant (zero variance: r is undefined, not 0).
pub fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() || x.len() < 2 || is_constant(x) || is_constant(y) {
        return None;
    }
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    // sqrt of the product keeps r(x, x) exactly 1; the product of roots only if the product overflows.
    let prod = sxx * syy;
    let denom = if prod.is_finite() { prod.sqrt() } else { sxx.sqrt() * syy.sqrt() };
    let r = sxy / denom;
    // Rounding can push |r| a hair past 1.
    r.is_finite().then(|| r.clamp(-1.0, 1.0))
}

/// Spearman's rho: Pearson's r of the average ranks ([`average_ranks`]); None as for [`pearson`].
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.len() != y.len() {
        return None;
    }
    pearson(&average_ranks(x), &average_ranks(y))
}

/// 1-based ranks, ascending, where tied values share the average of the ranks they span (three heads
/// tied at 0 below two others get 2, 2, 2): the tie rule of Spearman's rho.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        // total_cmp sorts -0.0 just before 0.0, so `==` still finds every tie in one run.
        while j < order.len() && values[order[j]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + 1 + j) as f64 / 2.0;
        for &k in &order[i..j] {
            ranks[k] = rank;
        }
        i = j;
    }
    ranks
}

fn is_constant(v: &[f64]) -> bool {
    v.iter().all(|x| *x == v[0])
}

/// How alike two models' heads are: correlations of their per-head mean scores, head `l-h` paired with
/// head `l-h` (fig. 6).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Correlation {
    /// Pearson's r of the means.
    pub pearson: f64,
    /// Spearman's rho of the means (average ranks for ties; most heads tie at 0).
    pub spearman: f64,
}

/// Per-head means in flat (layer-major) order.
fn means(scores: &HeadScores) -> Vec<f64> {
    scores.shape().iter().map(|h| scores.mean(h)).collect()
}

fn grid_words(shape: HeadShape) -> String {
    format!("{} layers x {} heads", shape.layers, shape.heads)
}

/// Correlations of the per-head mean scores of `a` and `b`.
///
/// Errors: different head grids (heads are paired by `layer-head`), or a model whose heads all have
/// the same mean (e.g. all 0): then a correlation is undefined, and an error says so rather than
/// returning NaN or a made-up 0.
pub fn correlation(a: &HeadScores, b: &HeadScores) -> Result<Correlation> {
    if a.shape() != b.shape() {
        return Err(CoreError::invalid(format!(
            "cannot correlate head scores of {} with head scores of {}: heads are paired by layer-head, so both need the same grid",
            grid_words(a.shape()),
            grid_words(b.shape())
        )));
    }
    let (ma, mb) = (means(a), means(b));
    for (which, m) in [("first", &ma), ("second", &mb)] {
        check_not_constant(m).map_err(|v| CoreError::invalid(format!("the {which} head scores {v}: a correlation is undefined")))?;
    }
    Ok(Correlation {
        pearson: pearson(&ma, &mb).ok_or_else(|| CoreError::invalid("the correlation of these head scores is not a finite number"))?,
        spearman: spearman(&ma, &mb).ok_or_else(|| CoreError::invalid("the correlation of these head scores is not a finite number"))?,
    })
}

/// Ok, or what makes the means unusable for a correlation (in words, to follow a name).
fn check_not_constant(means: &[f64]) -> std::result::Result<(), String> {
    match means.first() {
        None => Err("have no heads".to_owned()),
        Some(_) if means.len() < 2 => Err("have a single head".to_owned()),
        Some(&v) if is_constant(means) => Err(format!("give every head the same mean score ({v})")),
        Some(_) => Ok(()),
    }
}

/// Correlations between every pair of several models (fig. 6), in the order given.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CorrelationMatrix {
    /// The models' names, one per row and column.
    pub names: Vec<String>,
    /// Pearson's r, `pearson[i][j]` between model `i` and model `j` (symmetric, 1 on the diagonal).
    pub pearson: Vec<Vec<f64>>,
    /// Spearman's rho, laid out like `pearson`.
    pub spearman: Vec<Vec<f64>>,
}

/// Correlations between every pair of `models` (name, scores). An empty list gives an empty matrix.
///
/// Errors name the model: one whose grid differs from the first model's (both names and grids), or one
/// whose heads all have the same mean (its correlations are undefined; see [`correlation`]).
pub fn correlation_matrix(models: &[(String, HeadScores)]) -> Result<CorrelationMatrix> {
    if let Some((first, s0)) = models.first() {
        // Shapes first, so a mismatch is reported the same way whatever the models' contents.
        for (name, s) in &models[1..] {
            if s.shape() != s0.shape() {
                return Err(CoreError::invalid(format!(
                    "{name} ({}) and {first} ({}) have different head grids: only models with the same layers and heads can be correlated",
                    grid_words(s.shape()),
                    grid_words(s0.shape())
                )));
            }
        }
    }
    let mut all_means = Vec::with_capacity(models.len());
    for (name, s) in models {
        let m = means(s);
        check_not_constant(&m)
            .map_err(|why| CoreError::invalid(format!("{name}: its head scores {why}, so its correlations are undefined")))?;
        all_means.push(m);
    }
    let all_ranks: Vec<Vec<f64>> = all_means.iter().map(|m| average_ranks(m)).collect();
    let n = models.len();
    let (mut p, mut s) = (vec![vec![0.0; n]; n], vec![vec![0.0; n]; n]);
    for i in 0..n {
        for j in i..n {
            let undefined = || CoreError::invalid(format!("the correlation of {} and {} is not a finite number", models[i].0, models[j].0));
            p[i][j] = pearson(&all_means[i], &all_means[j]).ok_or_else(undefined)?;
            s[i][j] = pearson(&all_ranks[i], &all_ranks[j]).ok_or_else(undefined)?;
            p[j][i] = p[i][j];
            s[j][i] = s[i][j];
        }
    }
    Ok(CorrelationMatrix { names: models.iter().map(|(name, _)| name.clone()).collect(), pearson: p, spearman: s })
}

// ---- fig. 9: why an answer failed ----------------------------------------------------------------

/// What went wrong with a NIAH answer (fig. 9), judged from its words alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The answer's ROUGE-1 recall reached the pass threshold: no failure.
    Passed,
    /// Part of the answer: some content word of the expected answer is there, recall is below the pass threshold.
    IncompleteRetrieval,
    /// None of the expected answer, but at least half of the answer's content words occur in the
    /// context: copied from the wrong place.
    WrongExtraction,
    /// None of the expected answer, and fewer than half of the answer's content words occur in the
    /// context: made up.
    Hallucination,
    /// The answer has no words at all.
    Empty,
}

/// Function words of three letters or more that say nothing about where an answer came from.
const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "are", "but", "not", "you", "your", "all", "any", "can", "was", "were", "has", "have", "had", "its", "our", "out",
    "this", "that", "these", "those", "with", "from", "into", "onto", "than", "then", "there", "their", "they", "them", "what", "when",
    "where", "which", "who", "whom", "why", "how", "will", "would", "should", "could", "been", "being", "does", "did", "about", "also",
    "just", "very", "too", "she", "her", "his", "him", "some", "such", "here", "each", "more", "most", "other", "only", "own", "same",
    "both", "nor", "yes", "may", "might", "must", "shall", "answer",
];

/// The distinct content words of `text`: [`words`] (lower-case alphanumeric runs) of at least three
/// characters that are not in a small stop list, plus any word with a digit (numbers are facts, even
/// short ones such as "42"). A text with words but no content words falls back to all its words, so
/// that "go to it" is still judged by something.
pub fn content_words(text: &str) -> HashSet<String> {
    let all = words(text);
    let content: HashSet<String> = all
        .iter()
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()) || (w.chars().count() >= 3 && !STOP_WORDS.contains(&w.as_str())))
        .cloned()
        .collect();
    if content.is_empty() {
        all.into_iter().collect()
    } else {
        content
    }
}

/// Sorts a NIAH answer into the failure classes of fig. 9.
///
/// In order: no words at all -> [`FailureClass::Empty`]; ROUGE-1 recall of `expected` at least `pass`
/// (the pass rule of `niah`) -> [`FailureClass::Passed`]; some content word of `expected` in the answer
/// -> [`FailureClass::IncompleteRetrieval`]; otherwise the share of the answer's distinct content words
/// ([`content_words`]) found among the words of `context` decides: at least half ->
/// [`FailureClass::WrongExtraction`], less -> [`FailureClass::Hallucination`].
///
/// "Part of the answer" is judged on content words, not on ROUGE recall > 0, because the expected answer's
/// "a", "in" and "on" occur in almost any sentence and would make every made-up answer a partial one.
/// `context` is whatever the model saw; an answer that mostly restates the question counts as copied
/// from the context when the question is part of it.
pub fn classify_failure(answer: &str, expected: &str, context: &str, pass: f64) -> FailureClass {
    let answer_words: HashSet<String> = words(answer).into_iter().collect();
    if answer_words.is_empty() {
        return FailureClass::Empty;
    }
    if rouge1_recall(answer, expected) >= pass {
        return FailureClass::Passed;
    }
    if content_words(expected).iter().any(|w| answer_words.contains(w)) {
        return FailureClass::IncompleteRetrieval;
    }
    let context_words: HashSet<String> = words(context).into_iter().collect();
    let content = content_words(answer);
    let found = content.iter().filter(|w| context_words.contains(*w)).count();
    // "Most" = at least half.
    if 2 * found >= content.len() {
        FailureClass::WrongExtraction
    } else {
        FailureClass::Hallucination
    }
}

/// An answer to a needle placed beside distractor sentences (same shape, another fact), as DeCoRe's
/// evaluation counts hallucinations: copying a distractor's fact, or nothing from the context at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DistractorClass {
    /// The expected answer (ROUGE-1 recall at least the pass threshold).
    Correct,
    /// A distractor's answer instead (its recall at least the pass threshold; the expected one's not).
    Distractor,
    /// Made up: fig. 9's hallucination (fewer than half of the answer's content words are in the
    /// context) or no words at all.
    Fabricated,
    /// Anything else: part of the answer, or words of the context that are neither answer.
    Other,
}

impl DistractorClass {
    /// Whether the answer is a hallucination in DeCoRe's sense (a distractor's fact, or made up).
    pub fn is_hallucination(self) -> bool {
        matches!(self, DistractorClass::Distractor | DistractorClass::Fabricated)
    }
}

/// Sorts an answer to a needle with distractors: [`DistractorClass::Distractor`] when it recalls one of
/// `distractors` (each a distractor sentence's answer span) at least `pass` and more than `expected`
/// (distractors share the needle's shape and so its function words: "a morning train that leaves from
/// the market" recalls 5 of the 8 words of "a night bus that leaves from the cathedral"), else
/// [`DistractorClass::Correct`] when it recalls `expected` at least `pass`, else by
/// [`classify_failure`]: made up or empty -> [`DistractorClass::Fabricated`], the rest
/// [`DistractorClass::Other`].
pub fn classify_with_distractors(answer: &str, expected: &str, distractors: &[String], context: &str, pass: f64) -> DistractorClass {
    let recall = rouge1_recall(answer, expected);
    if distractors.iter().map(|d| rouge1_recall(answer, d)).any(|r| r >= pass && r > recall) {
        return DistractorClass::Distractor;
    }
    if recall >= pass {
        return DistractorClass::Correct;
    }
    match classify_failure(answer, expected, context, pass) {
        FailureClass::Hallucination | FailureClass::Empty => DistractorClass::Fabricated,
        _ => DistractorClass::Other,
    }
}

/// Whether the heads looked at the attention sink: more than half of `argmax_positions` (one per
/// decode step and head, as gathered by the caller) lie on the first `sink_len` prompt tokens. False
/// when no positions are given. Fig. 9's hallucinations come with retrieval heads parked on the sink.
pub fn attends_to_sink(argmax_positions: &[u32], sink_len: usize) -> bool {
    let on_sink = argmax_positions.iter().filter(|&&p| (p as usize) < sink_len).count();
    2 * on_sink > argmax_positions.len()
}

/// How many first prompt tokens count as the attention sink (the BOS and the few tokens after it, as
/// in StreamingLLM's four sink tokens).
pub const SINK_TOKENS: usize = 4;

/// Fig. 9's verdict on one recorded test: its class, and where the watched heads looked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FailureJudgement {
    /// What kind of answer it was ([`classify_failure`]).
    pub class: FailureClass,
    /// Whether the watched heads that were not masked in the test mostly looked at the attention sink
    /// ([`attends_to_sink`] over all their decode steps); None when the record holds no argmax positions
    /// of such heads (the run watched none, or every watched head was masked).
    pub on_sink: Option<bool>,
}

/// Judges a recorded NIAH test for fig. 9: [`classify_failure`] of its answer against `expected` in
/// `context` (the prompt text the model saw), and [`attends_to_sink`] over the recorded argmax positions
/// (`head_argmax`) of `watched` heads that the test did not mask, with a sink of `sink_len` tokens.
///
/// Masked heads are left out of the sink note because a uniformly masked head has no peak to speak of.
pub fn judge_record(
    record: &TestRecord,
    expected: &str,
    context: &str,
    pass: f64,
    watched: &[HeadId],
    sink_len: usize,
) -> FailureJudgement {
    let class = classify_failure(&record.answer, expected, context, pass);
    let positions: Option<Vec<u32>> = record.head_argmax.as_ref().and_then(|argmax| {
        let mut any = false;
        let mut all = Vec::new();
        for h in watched.iter().filter(|h| !record.masked_heads.contains(h)) {
            if let Some(p) = argmax.get(h) {
                any = true;
                all.extend_from_slice(p);
            }
        }
        (any && !all.is_empty()).then_some(all)
    });
    FailureJudgement { class, on_sink: positions.map(|p| attends_to_sink(&p, sink_len)) }
}

/// Fig. 9's counts for one set of tests (one mask): answers per class, and how many hallucinations came
/// with the watched heads on the attention sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FailureCounts {
    /// Tests counted.
    pub tests: usize,
    /// Answers that passed.
    pub passed: usize,
    /// Part of the answer.
    pub incomplete_retrieval: usize,
    /// Made up.
    pub hallucination: usize,
    /// Copied from the wrong place of the context.
    pub wrong_extraction: usize,
    /// No words at all.
    pub empty: usize,
    /// Hallucinations whose watched heads mostly looked at the attention sink.
    pub hallucination_on_sink: usize,
    /// Hallucinations for which the sink could be judged (argmax positions of unmasked watched heads recorded).
    pub hallucination_sink_known: usize,
}

impl FailureCounts {
    /// Counts one judged test.
    pub fn add(&mut self, j: &FailureJudgement) {
        self.tests += 1;
        match j.class {
            FailureClass::Passed => self.passed += 1,
            FailureClass::IncompleteRetrieval => self.incomplete_retrieval += 1,
            FailureClass::Hallucination => {
                self.hallucination += 1;
                if let Some(on_sink) = j.on_sink {
                    self.hallucination_sink_known += 1;
                    self.hallucination_on_sink += usize::from(on_sink);
                }
            }
            FailureClass::WrongExtraction => self.wrong_extraction += 1,
            FailureClass::Empty => self.empty += 1,
        }
    }

    /// Tests that did not pass.
    pub fn failed(&self) -> usize {
        self.tests - self.passed
    }
}

// ---- fig. 7 and 8: means over seeds --------------------------------------------------------------

/// The mean of several runs (random-K over seeds) and how far they spread.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Population standard deviation (0 for one value).
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

/// Mean, standard deviation and range of `values`; None when there are none or one is not finite.
pub fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Some(Spread {
        n: values.len(),
        mean,
        std: var.sqrt(),
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    })
}

// ---- fig. 13: how soon the ranking settles --------------------------------------------------------

/// After each scored test (records in plan order as head scores take them, [`crate::files::in_plan_order`],
/// those passing `gate`), the share of the final top-`k` heads that are already in the running top-`k`:
/// `(tests scored so far, share)`. The last point is always 1.
///
/// Rankings are by mean score with ties in head order, as [`HeadScores::ranked`] ranks them. Errors
/// when `k` is 0 or more than the heads of `shape`, or when a record's hits do not fit `shape`. No
/// record passing the gate gives an empty list.
pub fn ranking_stability(records: &[TestRecord], shape: HeadShape, gate: f64, k: usize) -> Result<Vec<(usize, f64)>> {
    if k == 0 || k > shape.count() {
        return Err(CoreError::invalid(format!("top-k of {k} heads: k must be between 1 and the {} heads of the model", shape.count())));
    }
    let n = shape.count();
    let mut sums = vec![0.0; n];
    let mut tops: Vec<Vec<usize>> = Vec::new();
    for r in crate::files::in_plan_order(records).into_iter().filter(|r| passes_gate(r.recall, gate)) {
        let hits = r.head_hits(shape)?;
        for (i, s) in sums.iter_mut().enumerate() {
            *s += hits.score_at(i);
        }
        let tests = (tops.len() + 1) as f64;
        // Means as HeadScores::mean computes them (same running sum, same division), so the final
        // top-k is exactly HeadScores::ranked's.
        let means: Vec<f64> = sums.iter().map(|s| s / tests).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.select_nth_unstable_by(k - 1, |&a, &b| means[b].total_cmp(&means[a]).then(a.cmp(&b)));
        order.truncate(k);
        tops.push(order);
    }
    let Some(last) = tops.last() else {
        return Ok(Vec::new());
    };
    let mut in_final = vec![false; n];
    for &i in last {
        in_final[i] = true;
    }
    Ok(tops.iter().enumerate().map(|(t, top)| (t + 1, top.iter().filter(|&&i| in_final[i]).count() as f64 / k as f64)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    /// One test per head list entry: head `i` of a 1 x n grid gets the scores `lists[i]`.
    fn scores(lists: &[&[f64]]) -> HeadScores {
        HeadScores::from_lists(HeadShape::new(1, lists.len()), lists.iter().map(|l| l.to_vec()).collect()).unwrap()
    }

    #[test]
    fn distribution_bands_and_shares() {
        // Means: 0, 0 (no tests), 0.05, 0.1 (edge: weak), 0.1000001, 0.5 (edge: moderate), 0.75, 1.
        let s = scores(&[&[0.0, 0.0], &[], &[0.1, 0.0], &[0.1], &[0.1000001], &[0.5], &[1.0, 0.5], &[1.0]]);
        let d = score_distribution(&s);
        assert_eq!(d, ScoreDistribution { heads: 8, zero: 2, weak: 2, moderate: 2, strong: 2 });
        assert_eq!(d.counts(), [2, 2, 2, 2]);
        assert_eq!(d.shares(), [0.25; 4]);
        let d = score_distribution(&scores(&[&[0.0], &[0.0], &[0.3]]));
        assert_eq!(d.counts(), [2, 0, 1, 0]);
        assert!(close(d.shares().iter().sum::<f64>(), 1.0));
        let none = score_distribution(&HeadScores::new(HeadShape::new(0, 0)));
        assert_eq!((none.heads, none.shares()), (0, [0.0; 4]));
    }

    #[test]
    fn activity_sorted_by_mean_with_ties_in_head_order() {
        // head 0: mean 0.25, fired in 1 of 2; head 1: 0.5, fired 2 of 2; head 2: 0.25, 2 of 2; head 3: none.
        let s = scores(&[&[0.5, 0.0], &[0.5, 0.5], &[0.25, 0.25], &[]]);
        let a = head_activity(&s);
        let order: Vec<HeadId> = a.iter().map(|x| x.head).collect();
        assert_eq!(order, vec![HeadId::new(0, 1), HeadId::new(0, 0), HeadId::new(0, 2), HeadId::new(0, 3)]);
        assert_eq!(a[0], HeadActivity { head: HeadId::new(0, 1), mean: 0.5, activation_frequency: 1.0 });
        assert_eq!(a[1].activation_frequency, 0.5);
        assert_eq!(a[3].activation_frequency, 0.0);
        assert_eq!(always_active(&s), 2);
    }

    #[test]
    fn pearson_and_spearman_by_hand() {
        // x = 1..5, y = 2 4 5 4 5. Deviations -2 -1 0 1 2 and -2 0 1 0 1: sxy 6, sxx 10, syy 6.
        let (x, y) = ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 5.0, 4.0, 5.0]);
        assert!(close(pearson(&x, &y).unwrap(), 6.0 / 60f64.sqrt()));
        // Ranks of y with ties: 1, 2.5, 4.5, 2.5, 4.5; deviations -2 -0.5 1.5 -0.5 1.5: sxy 7, syy 9.
        assert_eq!(average_ranks(&y), vec![1.0, 2.5, 4.5, 2.5, 4.5]);
        assert!(close(spearman(&x, &y).unwrap(), 7.0 / 90f64.sqrt()));
        // Perfectly opposite; monotone but not linear.
        assert!(close(pearson(&x, &x.map(|v| -2.0 * v)).unwrap(), -1.0));
        let cubes = x.map(|v| v * v * v);
        assert!(pearson(&x, &cubes).unwrap() < 0.99);
        assert_eq!(spearman(&x, &cubes), Some(1.0));
        assert_eq!(pearson(&x, &x), Some(1.0));
        // Undefined cases are None, never NaN or a panic.
        assert_eq!(pearson(&x, &[1.0; 5]), None);
        assert_eq!(pearson(&[0.1; 3], &[1.0, 2.0, 3.0]), None);
        assert_eq!(pearson(&x, &y[..4]), None);
        assert_eq!(spearman(&x, &y[..4]), None);
        assert_eq!(pearson(&[1.0], &[2.0]), None);
        assert_eq!(pearson(&[], &[]), None);
    }

    #[test]
    fn ranks_average_ties_at_zero() {
        // Three heads tied at 0 share ranks 1..3 -> 2; -0.0 ties with 0.0.
        assert_eq!(average_ranks(&[0.0, 0.7, 0.0, 0.2, -0.0]), vec![2.0, 5.0, 2.0, 4.0, 2.0]);
        assert_eq!(average_ranks(&[3.0, 3.0, 3.0, 3.0]), vec![2.5; 4]);
        assert!(average_ranks(&[]).is_empty());
        // Spearman with a block of zeros by hand: x ranks 2 2 2 4 5, y ranks 1 2 3 4 5, both of mean 3.
        // Deviations x: -1 -1 -1 1 2, y: -2 -1 0 1 2: sxy 2+1+0+1+4 = 8, sxx 8, syy 10.
        let rho = spearman(&[0.0, 0.0, 0.0, 0.3, 0.9], &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert!(close(rho, 8.0 / 80f64.sqrt()), "{rho}");
    }

    #[test]
    fn correlation_is_over_per_head_means() {
        // Means of a: 1 2 3 4 5 from two-test lists; b's means 2 4 5 4 5.
        let a = scores(&[&[0.0, 2.0], &[2.0, 2.0], &[6.0, 0.0], &[4.0, 4.0], &[5.0, 5.0]]);
        let b = scores(&[&[2.0], &[4.0], &[5.0], &[4.0], &[5.0]]);
        let c = correlation(&a, &b).unwrap();
        assert!(close(c.pearson, 6.0 / 60f64.sqrt()) && close(c.spearman, 7.0 / 90f64.sqrt()), "{c:?}");
        assert_eq!(correlation(&a, &a).unwrap(), Correlation { pearson: 1.0, spearman: 1.0 });
    }

    #[test]
    fn correlation_errors_name_shapes_and_constant_scores() {
        let a = HeadScores::from_lists(HeadShape::new(1, 4), vec![vec![0.1], vec![0.2], vec![0.0], vec![0.0]]).unwrap();
        let b = HeadScores::from_lists(HeadShape::new(2, 2), vec![vec![0.1], vec![0.2], vec![0.0], vec![0.0]]).unwrap();
        let e = correlation(&a, &b).unwrap_err().to_string();
        assert!(e.contains("1 layers x 4 heads") && e.contains("2 layers x 2 heads"), "{e}");
        let zeros = scores(&[&[0.0], &[0.0], &[0.0], &[0.0]]);
        let e = correlation(&a, &zeros).unwrap_err().to_string();
        assert!(e.contains("second") && e.contains("same mean score (0)") && e.contains("undefined"), "{e}");
    }

    #[test]
    fn matrix_is_symmetric_with_unit_diagonal_and_names_bad_inputs() {
        let a = scores(&[&[1.0], &[2.0], &[3.0], &[4.0], &[5.0]]);
        let b = scores(&[&[2.0], &[4.0], &[5.0], &[4.0], &[5.0]]);
        let c = scores(&[&[0.5], &[0.4], &[0.3], &[0.2], &[0.0]]);
        let models = vec![("a".to_owned(), a.clone()), ("b".to_owned(), b.clone()), ("c".to_owned(), c.clone())];
        let m = correlation_matrix(&models).unwrap();
        assert_eq!(m.names, vec!["a", "b", "c"]);
        for i in 0..3 {
            assert_eq!((m.pearson[i][i], m.spearman[i][i]), (1.0, 1.0));
            for j in 0..3 {
                assert_eq!(m.pearson[i][j], m.pearson[j][i]);
                assert_eq!(m.spearman[i][j], m.spearman[j][i]);
            }
        }
        let ab = correlation(&a, &b).unwrap();
        assert_eq!((m.pearson[0][1], m.spearman[0][1]), (ab.pearson, ab.spearman));
        assert_eq!(m.spearman[0][2], -1.0);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["names"][2], "c");
        assert_eq!(json["pearson"][1][1], 1.0);

        let big = HeadScores::from_lists(HeadShape::new(2, 5), vec![vec![0.1]; 10]).unwrap();
        let e = correlation_matrix(&[("a".into(), a.clone()), ("big.json".into(), big)]).unwrap_err().to_string();
        assert!(e.contains("big.json (2 layers x 5 heads)") && e.contains("a (1 layers x 5 heads)"), "{e}");
        let flat = scores(&[&[0.0][..]; 5]);
        let e = correlation_matrix(&[("a".into(), a), ("flat".into(), flat)]).unwrap_err().to_string();
        assert!(e.starts_with("flat:") && e.contains("undefined"), "{e}");
        assert!(correlation_matrix(&[]).unwrap().names.is_empty());
    }

    // The San Francisco needle.
    const EXPECTED: &str = "eat a sandwich and sit in Dolores Park on a sunny day";
    const CONTEXT: &str = "The village market opens at dawn. Visitors ride the cable cars past the Golden Gate Bridge. \
        The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day. \
        The baker sells bread until noon.";

    fn class(answer: &str) -> FailureClass {
        classify_failure(answer, EXPECTED, CONTEXT, 0.5)
    }

    #[test]
    fn answers_beside_a_distractor_are_correct_copied_made_up_or_other() {
        let expected = "soak in a geothermal pool and watch the northern lights at midnight";
        let distractors = vec!["ride the ferry past the islands at dawn".to_string()];
        let context = "The best thing to do in Oslo is to ride the ferry past the islands at dawn. The best thing to do in \
                       Reykjavik is to soak in a geothermal pool and watch the northern lights at midnight.";
        let class = |a: &str| classify_with_distractors(a, expected, &distractors, context, 0.5);
        assert_eq!(class("soak in a geothermal pool and watch the northern lights at midnight."), DistractorClass::Correct);
        assert_eq!(class("ride the ferry past the islands at dawn"), DistractorClass::Distractor);
        assert_eq!(class("climb the volcano with a troll"), DistractorClass::Fabricated);
        assert_eq!(class(""), DistractorClass::Fabricated);
        assert_eq!(class("the best thing to do in Oslo"), DistractorClass::Other, "words of the context, neither answer");
        // A distractor sharing the needle's function words is still the distractor.
        let bus = "a night bus that leaves from the cathedral";
        let train = vec!["a morning train that leaves from the market".to_string()];
        assert!(rouge1_recall("a morning train that leaves from the nor", bus) >= 0.5);
        assert_eq!(
            classify_with_distractors("a morning train that leaves from the nor", bus, &train, "", 0.5),
            DistractorClass::Distractor
        );
        assert_eq!(classify_with_distractors("a night bus that leaves from the market", bus, &train, "", 0.5), DistractorClass::Correct);
        assert!(DistractorClass::Distractor.is_hallucination() && DistractorClass::Fabricated.is_hallucination());
        assert!(!DistractorClass::Other.is_hallucination() && !DistractorClass::Correct.is_hallucination());
    }

    #[test]
    fn failure_classes_on_the_san_francisco_needle() {
        assert_eq!(class("Eat a sandwich and sit in Dolores Park on a sunny day."), FailureClass::Passed);
        assert_eq!(class("The best thing to do is to eat a sandwich and sit in Dolores Park"), FailureClass::Passed);
        // Part of the answer: recall 3/12.
        assert_eq!(class("Eat a sandwich."), FailureClass::IncompleteRetrieval);
        assert_eq!(class("Sit in the park."), FailureClass::IncompleteRetrieval);
        // Copied from elsewhere in the context: ride, cable, cars, golden, gate, bridge are all there.
        assert_eq!(class("Ride the cable cars to the Golden Gate Bridge."), FailureClass::WrongExtraction);
        assert_eq!(class("The baker sells bread until noon"), FailureClass::WrongExtraction);
        // Made up; "in" and "the" are shared with the expected answer and context but are no evidence.
        assert_eq!(class("Go surfing at Ocean Beach with your friends."), FailureClass::Hallucination);
        assert_eq!(class("Go surfing in the ocean"), FailureClass::Hallucination);
        // Half of the content words found is "most": golden, gate found; surfing, kites not.
        assert_eq!(class("golden gate surfing kites"), FailureClass::WrongExtraction);
        assert_eq!(class("golden surfing kites"), FailureClass::Hallucination);
        assert_eq!(class(""), FailureClass::Empty);
        assert_eq!(class("  ... !? "), FailureClass::Empty);
        // A pass threshold of 1 makes the nearly complete answer incomplete.
        assert_eq!(classify_failure("eat a sandwich in Dolores Park", EXPECTED, CONTEXT, 1.0), FailureClass::IncompleteRetrieval);
        assert_eq!(serde_json::to_string(&FailureClass::WrongExtraction).unwrap(), "\"wrong_extraction\"");
    }

    #[test]
    fn content_words_drop_short_and_stop_words_but_keep_numbers() {
        let w = content_words("The answer is 42, and the sandwich was in the Park!");
        let mut w: Vec<&str> = w.iter().map(String::as_str).collect();
        w.sort();
        assert_eq!(w, vec!["42", "park", "sandwich"]);
        // Only function words: judged by all of them.
        assert_eq!(content_words("it is in").len(), 3);
        assert!(content_words("").is_empty());
    }

    #[test]
    fn sink_means_most_argmaxes_on_the_first_tokens() {
        assert!(attends_to_sink(&[0, 1, 0, 57], 4));
        assert!(!attends_to_sink(&[0, 1, 57, 58], 4), "exactly half is not most");
        assert!(!attends_to_sink(&[10, 20, 30], 4));
        assert!(!attends_to_sink(&[], 4));
        assert!(!attends_to_sink(&[0, 0], 0));
    }

    /// A record of `answer` whose heads 5-0 and 5-2 looked at `argmax` (per step), with `masked` heads masked.
    fn watched_record(answer: &str, argmax: Option<(&[u32], &[u32])>, masked: &[HeadId]) -> TestRecord {
        let mut r = record("t", 0.0, &[]);
        r.answer = answer.to_owned();
        r.masked_heads = masked.to_vec();
        r.head_argmax = argmax.map(|(a, b)| [(HeadId::new(5, 0), a.to_vec()), (HeadId::new(5, 2), b.to_vec())].into_iter().collect());
        r
    }

    #[test]
    fn records_are_judged_by_answer_and_unmasked_watched_heads() {
        let watched = [HeadId::new(5, 0), HeadId::new(5, 2)];
        let judge = |r: &TestRecord| judge_record(r, EXPECTED, CONTEXT, 0.5, &watched, SINK_TOKENS);
        // Made up while both heads sat on positions 0-3: a hallucination on the sink.
        let sink = watched_record("Go surfing at Ocean Beach.", Some((&[0, 1, 0], &[2, 0, 3])), &[]);
        assert_eq!(judge(&sink), FailureJudgement { class: FailureClass::Hallucination, on_sink: Some(true) });
        // Same answer, heads on the needle (positions 44-47): not the sink.
        let needle = watched_record("Go surfing at Ocean Beach.", Some((&[44, 45, 0], &[46, 0, 47])), &[]);
        assert_eq!(judge(&needle).on_sink, Some(false));
        // 5-0 is masked: only 5-2 counts, and it looked at the needle.
        let masked = watched_record("Go surfing at Ocean Beach.", Some((&[0, 0, 0], &[44, 45, 46])), &[HeadId::new(5, 0)]);
        assert_eq!(judge(&masked).on_sink, Some(false));
        // Every watched head masked, or nothing recorded (an older file): the sink cannot be judged.
        let all_masked = watched_record("Go surfing.", Some((&[0], &[0])), &watched);
        assert_eq!(judge(&all_masked), FailureJudgement { class: FailureClass::Hallucination, on_sink: None });
        assert_eq!(judge(&watched_record("Go surfing.", None, &[])).on_sink, None);
        assert_eq!(judge_record(&sink, EXPECTED, CONTEXT, 0.5, &[], SINK_TOKENS).on_sink, None);
        // The other classes come from the answer alone.
        assert_eq!(judge(&watched_record("Eat a sandwich.", None, &[])).class, FailureClass::IncompleteRetrieval);
        assert_eq!(judge(&watched_record("Ride the cable cars.", None, &[])).class, FailureClass::WrongExtraction);
        assert_eq!(judge(&watched_record("", None, &[])).class, FailureClass::Empty);
        assert_eq!(judge(&watched_record(EXPECTED, None, &[])).class, FailureClass::Passed);

        let mut counts = FailureCounts::default();
        for r in [&sink, &needle, &all_masked, &watched_record("Eat a sandwich.", None, &[]), &watched_record(EXPECTED, None, &[])] {
            counts.add(&judge(r));
        }
        assert_eq!(
            counts,
            FailureCounts {
                tests: 5,
                passed: 1,
                incomplete_retrieval: 1,
                hallucination: 3,
                wrong_extraction: 0,
                empty: 0,
                hallucination_on_sink: 1,
                hallucination_sink_known: 2
            }
        );
        assert_eq!(counts.failed(), 4);
    }

    #[test]
    fn spread_by_hand() {
        let s = spread(&[0.2, 0.4, 0.6]).unwrap();
        assert_eq!((s.n, s.min, s.max), (3, 0.2, 0.6));
        assert!(close(s.mean, 0.4) && close(s.std, (0.08f64 / 3.0).sqrt()), "{s:?}");
        assert_eq!(spread(&[0.5]).unwrap().std, 0.0);
        assert!(spread(&[]).is_none() && spread(&[1.0, f64::NAN]).is_none());
    }

    /// A test record with these hits (the records module's test helper, with slices for brevity).
    fn record(id: &str, recall: f64, hits: &[(HeadId, &[u32])]) -> TestRecord {
        let hits: Vec<(HeadId, Vec<u32>)> = hits.iter().map(|(h, p)| (*h, p.to_vec())).collect();
        crate::files::records::tests::record(id, recall, &hits)
    }

    #[test]
    fn ranking_settles_on_the_final_top_k() {
        let shape = HeadShape::new(1, 4);
        let h = |i| HeadId::new(0, i);
        // Span of 4. Test 1: head 0 strong. Test 2 (failed, skipped at gate 0.5). Tests 3, 4: heads 2, 3 strong.
        let recs = [
            record("t1", 1.0, &[(h(0), &[44, 45, 46, 47]), (h(1), &[44])]),
            record("t2", 0.0, &[(h(1), &[44, 45, 46, 47])]),
            record("t3", 1.0, &[(h(2), &[44, 45, 46, 47]), (h(3), &[44, 45, 46])]),
            record("t4", 1.0, &[(h(2), &[44, 45, 46, 47]), (h(3), &[44, 45, 46, 47])]),
        ];
        // Final means: h0 1/3, h1 1/12, h2 2/3, h3 7/12 -> top-2 {2, 3}. After t1: top-2 {0, 1} -> 0;
        // after t3: means h0 .5, h1 .125, h2 .5, h3 .375 -> {0, 2} -> 1/2; after t4: 1.
        let s = ranking_stability(&recs, shape, 0.5, 2).unwrap();
        assert_eq!(s, vec![(1, 0.0), (2, 0.5), (3, 1.0)]);
        let final_top: Vec<HeadId> =
            crate::files::head_scores_from_records(shape, &recs, 0.5).unwrap().ranked().iter().take(2).map(|r| r.0).collect();
        assert_eq!(final_top, vec![h(2), h(3)]);
        // Gate 0 scores t2 as well.
        assert_eq!(ranking_stability(&recs, shape, 0.0, 2).unwrap().len(), 4);
        assert_eq!(ranking_stability(&recs, shape, 0.5, 4).unwrap(), vec![(1, 1.0), (2, 1.0), (3, 1.0)]);
        assert!(ranking_stability(&recs, shape, 2.0, 1).unwrap().is_empty());
        assert!(ranking_stability(&recs, shape, 0.5, 0).is_err());
        assert!(ranking_stability(&recs, shape, 0.5, 5).unwrap_err().to_string().contains("4 heads"));
        let bad = [record("x", 1.0, &[(HeadId::new(3, 0), &[44])])];
        assert!(ranking_stability(&bad, shape, 0.5, 1).unwrap_err().to_string().contains("test x"));
    }

    /// Fig. 6 on the published files: Mistral-7B-v0.2 and Mixtral-8x7B share their retrieval heads
    /// (the paper's 0.96), the base and chat Qwen1.5-14B too, unrelated models do not.
    #[test]
    fn published_files_correlate_as_the_paper_reports() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/refs/head_score");
        if !dir.is_dir() {
            eprintln!("skipped: {} is absent (it ships with the developers' shared folder only)", dir.display());
            return;
        }
        let read = |name: &str| (name.to_owned(), crate::files::read_head_scores(&dir.join(format!("{name}.json"))).unwrap());
        let pair = |a: &str, b: &str| {
            let c = correlation(&read(a).1, &read(b).1).unwrap();
            eprintln!("{a} vs {b}: pearson {:.4}, spearman {:.4}", c.pearson, c.spearman);
            c
        };
        let mm = pair("Mistral-7B-v0.2-hf", "Mixtral-8x7B-v0.1");
        assert!((mm.pearson - 0.96).abs() < 0.005, "{mm:?}");
        let qq = pair("Qwen1.5-14B", "Qwen1.5-14B-Chat");
        assert!(qq.pearson > 0.8, "{qq:?}");
        let lm = pair("llama-2-7b-80k", "Mistral-7B-v0.2-hf");
        assert!(lm.pearson.abs() < 0.2, "{lm:?}");

        let names = ["Mistral-7B-v0.2-hf", "Mixtral-8x7B-v0.1", "Yi-6B-200K", "llama-2-7b-80k"];
        let m = correlation_matrix(&names.map(read)).unwrap();
        assert_eq!(m.pearson[0][1], mm.pearson);
        let e = correlation_matrix(&[read("Mistral-7B-v0.2-hf"), read("Qwen1.5-14B")]).unwrap_err().to_string();
        assert!(e.contains("Qwen1.5-14B (40 layers x 40 heads)") && e.contains("Mistral-7B-v0.2-hf (32 layers x 32 heads)"), "{e}");

        // Fig. 3: most heads never retrieve, and retrieval heads (mean > 0.1) are a few percent.
        for name in names.iter().chain(&["Qwen1.5-14B", "Qwen1.5-14B-Chat", "llama-2-13b-64k"]) {
            let d = score_distribution(&read(name).1);
            let s = d.shares();
            eprintln!("{name}: {:?} heads by band {:?}", d.counts(), ScoreDistribution::BANDS);
            assert!(close(s.iter().sum::<f64>(), 1.0));
            assert!(s[0] > 0.45 && s[2] + s[3] < 0.07, "{name}: {s:?}");
        }
    }
}
