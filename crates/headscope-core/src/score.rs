//! The retrieval score of Wu et al. (2024), eq. 1, and its aggregation over tests.
//!
//! At every decode step and for every query head, let `j` be the argmax of the head's attention over the
//! context. The head *hits* when `j` lies in the needle's answer span and the token at `j` is the token
//! the step generated. A test's score for a head is the number of distinct span positions it hit divided by
//! the span length, so it lies in [0, 1] (the official code counted repeated hits of one position again and
//! could exceed 1). The first decode step is the one at the last prompt position, which produces the first
//! answer token; its attention counts like any other step's.
//!
//! The same probes also give the score as the official code counts it ([`ScoreKind::Official`]): every
//! decode step whose argmax hits counts once, so a position copied twice counts twice and a test's score
//! can pass 1, as in the published head-score files. HeadScope keeps both from one run, so its numbers
//! can be put beside the published ones like for like.

use crate::error::{CoreError, Result};
use crate::head::{HeadId, HeadShape};
use std::collections::BTreeMap;
use std::ops::Range;

/// A head whose mean retrieval score exceeds this is a retrieval head (the paper's 0.1).
pub const RETRIEVAL_THRESHOLD: f64 = 0.1;

/// What the model reports for one decode step: the token it generated and each query head's argmax.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DecodeStep {
    /// The token generated from this step's logits.
    pub token: u32,
    /// For each query head (layer-major, see [`HeadShape::index`]), the context position its attention peaked at.
    pub argmax: Vec<u32>,
}

/// How a head's behaviour in one test becomes its score for that test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// Eq. 1 as the paper defines it: distinct answer positions hit / span length, in [0, 1].
    Eq1,
    /// Eq. 1 as the official code counts it (`retrieval_calculate` in `retrieval_head_detection.py`):
    /// decode steps that hit / span length, so repeated copies of one position count again.
    Official,
    /// The retrieval-reasoning score of HeadKV (Fu et al., "Not All Heads Matter", ICLR 2025): at each
    /// of the first |span| decode steps, the attention weight on those of the head's top-|span|
    /// positions that lie in the answer span, no token match asked; summed, times 10, divided by
    /// |span| x |answer tokens| (both the span's length here). See [`top_k_mass_in_span`].
    Soft,
    /// The query-focused score of QRHead (Zhang et al., 2025): over the needle's tokens, the attention
    /// from the query's tokens (mean over them) minus the same from a null query ("N/A") in the same
    /// prompt, outliers below mean - 2 std dropped, summed ([`query_focus_score`]). From teacher-forced
    /// passes over the question, not from the answer; it can be negative.
    Qr,
    /// RazorAttention's induction score (Tang et al., 2024), data-free: on a random token sequence
    /// repeated [`REPEATED_TIMES`] times, the attention weight a head puts on the tokens that followed
    /// earlier occurrences of the current token, averaged over the positions of the repeats
    /// ([`RepeatedTokens`]).
    Induction,
    /// RazorAttention's echo score: the same, on the earlier occurrences of the current token itself.
    Echo,
}

/// HeadKV's scale factor on its summed attention weights.
pub const SOFT_SCALE: f64 = 10.0;

impl ScoreKind {
    /// Every kind, in the order files and tables list them.
    pub const ALL: [ScoreKind; 6] =
        [ScoreKind::Eq1, ScoreKind::Official, ScoreKind::Soft, ScoreKind::Qr, ScoreKind::Induction, ScoreKind::Echo];

    /// The name used on the command line and in `run.json`.
    pub fn name(self) -> &'static str {
        match self {
            ScoreKind::Eq1 => "eq1",
            ScoreKind::Official => "official",
            ScoreKind::Soft => "soft",
            ScoreKind::Qr => "qr",
            ScoreKind::Induction => "induction",
            ScoreKind::Echo => "echo",
        }
    }

    /// Whether the kind comes from the NIAH tests' records (the others are data-free: one pass over
    /// repeated random tokens per run).
    pub fn from_records(self) -> bool {
        !matches!(self, ScoreKind::Induction | ScoreKind::Echo)
    }

    /// Whether the kind needs attention weights, not only argmax positions: such a run asks the
    /// backend for every head's attention row at the first |span| decode steps.
    pub fn needs_attention_mass(self) -> bool {
        self == ScoreKind::Soft
    }

    /// The head-score file a run writes for this kind: `head_scores.json` for eq. 1 (as always),
    /// `head_scores_<name>.json` for the others.
    pub fn file_name(self) -> String {
        match self {
            ScoreKind::Eq1 => "head_scores.json".to_string(),
            other => format!("head_scores_{}.json", other.name()),
        }
    }

    /// Parses a comma-separated list (`eq1,official`): each kind once, in the order given.
    pub fn parse_list(text: &str) -> Result<Vec<ScoreKind>> {
        let mut kinds = Vec::new();
        for part in text.split(',').map(str::trim) {
            let kind = ScoreKind::ALL.into_iter().find(|k| k.name() == part).ok_or_else(|| {
                let known: Vec<&str> = ScoreKind::ALL.iter().map(|k| k.name()).collect();
                CoreError::invalid(format!("unknown score '{part}' (known: {})", known.join(", ")))
            })?;
            if kinds.contains(&kind) {
                return Err(CoreError::invalid(format!("score '{part}' is listed twice")));
            }
            kinds.push(kind);
        }
        Ok(kinds)
    }
}

/// The attention weight a head put, at one decode step, on those of its `span.len()` highest-weighted
/// context positions that lie in `span` (HeadKV's top-k with k = the span's length; ties go to the
/// earlier position). `weights` is the head's attention row over the context.
pub fn top_k_mass_in_span(weights: &[f32], span: Range<usize>) -> f64 {
    let k = span.len().min(weights.len());
    if k == 0 {
        return 0.0;
    }
    let mut order: Vec<(f32, usize)> = weights.iter().copied().zip(0..).collect();
    let by_weight = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, by_weight);
    }
    order[..k].iter().filter(|(_, i)| span.contains(i)).map(|&(w, _)| w as f64).sum()
}

/// QRHead's score of one head on one test: `calibrated` holds, per needle token, the query's mean
/// attention minus the null query's; tokens below mean - 2 x std (sample standard deviation) are
/// dropped as outliers and the rest summed. With fewer than two tokens nothing is dropped.
pub fn query_focus_score(calibrated: &[f64]) -> f64 {
    let n = calibrated.len();
    if n < 2 {
        return calibrated.iter().sum();
    }
    let mean = calibrated.iter().sum::<f64>() / n as f64;
    let std = (calibrated.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
    let threshold = mean - 2.0 * std;
    calibrated.iter().filter(|&&v| v > threshold).sum()
}

/// How many times the random sequence of the data-free scores is repeated (RazorAttention's 4).
pub const REPEATED_TIMES: usize = 4;

/// The period of the data-free scores' random sequence on a model with room for it
/// ([`RepeatedTokens::for_model`]). RazorAttention repeats 2,500 tokens; 256 keep the pass short on
/// every model (and in the page), and any length separates induction and echo heads from the rest.
pub const REPEATED_PERIOD: usize = 256;

/// The input of the data-free scores ([`ScoreKind::Induction`], [`ScoreKind::Echo`]): `period` random
/// token ids drawn with `seed` from the upper seven eighths of the vocabulary (the lowest ids are
/// where tokenizers keep special and byte tokens), repeated [`REPEATED_TIMES`] times, after an
/// optional BOS.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatedTokens {
    /// The whole sequence, BOS (if any) first.
    pub ids: Vec<u32>,
    /// Positions before the first repeat's first token (1 with a BOS).
    pub offset: usize,
    /// Length of the repeated block.
    pub period: usize,
}

impl RepeatedTokens {
    /// Draws the sequence.
    pub fn new(vocab_size: usize, period: usize, seed: u64, bos: Option<u32>) -> Result<Self> {
        if period < 2 || vocab_size < 16 {
            return Err(CoreError::invalid(format!("a repeated block of {period} tokens from a {vocab_size}-token vocabulary")));
        }
        let low = vocab_size as u64 / 8;
        let mut rng = crate::rng::SplitMix64::new(seed);
        let block: Vec<u32> = (0..period).map(|_| (low + rng.below(vocab_size as u64 - low)) as u32).collect();
        let mut ids: Vec<u32> = bos.into_iter().collect();
        let offset = ids.len();
        for _ in 0..REPEATED_TIMES {
            ids.extend_from_slice(&block);
        }
        Ok(RepeatedTokens { ids, offset, period })
    }

    /// The sequence every front end scores a model's heads on: [`REPEATED_PERIOD`] tokens (fewer where
    /// the model's context cannot hold [`REPEATED_TIMES`] of them and a BOS), seed 0.
    pub fn for_model(vocab_size: usize, max_positions: usize, bos: Option<u32>) -> Result<Self> {
        RepeatedTokens::new(vocab_size, REPEATED_PERIOD.min(max_positions.saturating_sub(2) / REPEATED_TIMES), 0, bos)
    }

    /// A given block repeated [`REPEATED_TIMES`] times after an optional BOS (for text blocks: the
    /// heads of a small model trained on text may copy text but not random ids).
    pub fn from_block(block: &[u32], bos: Option<u32>) -> Result<Self> {
        if block.len() < 2 {
            return Err(CoreError::invalid(format!("a repeated block of {} tokens", block.len())));
        }
        let mut ids: Vec<u32> = bos.into_iter().collect();
        let offset = ids.len();
        for _ in 0..REPEATED_TIMES {
            ids.extend_from_slice(block);
        }
        Ok(RepeatedTokens { ids, offset, period: block.len() })
    }

    /// The first position whose row is scored: the second repeat's first token.
    pub fn first_scored(&self) -> usize {
        self.offset + self.period
    }

    /// The weight a head's attention row at `position` (scored positions only) puts on the earlier
    /// occurrences of the same token (echo) and on the tokens that followed them (induction).
    pub fn echo_and_induction(&self, weights: &[f32], position: usize) -> (f64, f64) {
        let (mut echo, mut induction) = (0.0, 0.0);
        let mut j = position;
        while j >= self.offset + self.period {
            j -= self.period;
            echo += weights.get(j).copied().unwrap_or(0.0) as f64;
            induction += weights.get(j + 1).copied().unwrap_or(0.0) as f64;
        }
        (echo, induction)
    }
}

/// A test's [`ScoreKind::Soft`] score from the head's summed [`top_k_mass_in_span`] over the counted steps.
pub fn soft_score(summed_mass: f64, span_len: usize) -> f64 {
    if span_len == 0 {
        0.0
    } else {
        SOFT_SCALE * summed_mass / (span_len * span_len) as f64
    }
}

/// Per head, the distinct answer-span positions it retrieved during one test, and how many decode
/// steps hit (more than the positions when a position was copied again).
#[derive(Debug, Clone, PartialEq)]
pub struct HeadHits {
    shape: HeadShape,
    span_len: usize,
    positions: Vec<Vec<u32>>,
    hit_steps: Vec<u32>,
}

/// Applies eq. 1 to one test: which answer positions each head copied.
///
/// `prompt_ids` are the prompt's tokens, `span` the answer's token positions in it, `steps` the decode
/// steps in order, starting with the step at the last prompt position.
pub fn retrieval_hits(shape: HeadShape, prompt_ids: &[u32], span: Range<usize>, steps: &[DecodeStep]) -> Result<HeadHits> {
    if span.is_empty() || span.end > prompt_ids.len() {
        return Err(CoreError::invalid(format!("answer span {span:?} is empty or outside the {}-token prompt", prompt_ids.len())));
    }
    let mut positions = vec![Vec::new(); shape.count()];
    let mut hit_steps = vec![0u32; shape.count()];
    for (s, step) in steps.iter().enumerate() {
        if step.argmax.len() != shape.count() {
            return Err(CoreError::invalid(format!(
                "decode step {s} reports {} heads, the model has {} ({} layers x {} heads)",
                step.argmax.len(),
                shape.count(),
                shape.layers,
                shape.heads
            )));
        }
        for (h, &j) in step.argmax.iter().enumerate() {
            let j_usize = j as usize;
            if span.contains(&j_usize) && prompt_ids[j_usize] == step.token {
                hit_steps[h] += 1;
                if !positions[h].contains(&j) {
                    positions[h].push(j);
                }
            }
        }
    }
    for p in &mut positions {
        p.sort_unstable();
    }
    Ok(HeadHits { shape, span_len: span.len(), positions, hit_steps })
}

impl HeadHits {
    /// The head grid these hits cover.
    pub fn shape(&self) -> HeadShape {
        self.shape
    }

    /// Length of the answer span the score divides by.
    pub fn span_len(&self) -> usize {
        self.span_len
    }

    /// The distinct answer positions `head` retrieved.
    pub fn positions(&self, head: HeadId) -> &[u32] {
        self.shape.index(head).map_or(&[], |i| &self.positions[i])
    }

    /// This test's retrieval score of the head at flat index `i`: distinct hits / span length.
    pub fn score_at(&self, i: usize) -> f64 {
        self.positions[i].len() as f64 / self.span_len as f64
    }

    /// This test's retrieval score of `head` (0 for a head outside the grid).
    pub fn score(&self, head: HeadId) -> f64 {
        self.shape.index(head).map_or(0.0, |i| self.score_at(i))
    }

    /// This test's score of the head at flat index `i`, counted as `kind` says: `None` for the kinds
    /// that are not counts of hits (soft, qr: records carry their values; induction, echo: data-free).
    pub fn score_of_kind_at(&self, i: usize, kind: ScoreKind) -> Option<f64> {
        match kind {
            ScoreKind::Eq1 => Some(self.score_at(i)),
            ScoreKind::Official => Some(self.hit_steps[i] as f64 / self.span_len as f64),
            ScoreKind::Soft | ScoreKind::Qr | ScoreKind::Induction | ScoreKind::Echo => None,
        }
    }

    /// This test's score of every head (flat order) counted as `kind` says; zeros for the kinds that
    /// are not counted from hits.
    pub(crate) fn scores(&self, kind: ScoreKind) -> Vec<f64> {
        (0..self.shape.count()).map(|i| self.score_of_kind_at(i, kind).unwrap_or(0.0)).collect()
    }

    /// Per head whose decode steps hit a position again: how many hits past the distinct positions
    /// (the sparse form stored in `tests.jsonl` beside the positions; empty when nothing repeated).
    pub fn repeats_sparse(&self) -> BTreeMap<HeadId, u32> {
        self.shape
            .iter()
            .zip(self.positions.iter().zip(&self.hit_steps))
            .filter(|(_, (p, &n))| n as usize > p.len())
            .map(|(h, (p, &n))| (h, n - p.len() as u32))
            .collect()
    }

    /// The heads that hit at least once, with their positions: the sparse form stored in `tests.jsonl`.
    pub fn to_sparse(&self) -> BTreeMap<HeadId, Vec<u32>> {
        self.shape.iter().zip(&self.positions).filter(|(_, p)| !p.is_empty()).map(|(h, p)| (h, p.clone())).collect()
    }

    /// Rebuilds hits from their sparse form (as read back from `tests.jsonl`).
    pub fn from_sparse(shape: HeadShape, span_len: usize, sparse: &BTreeMap<HeadId, Vec<u32>>) -> Result<Self> {
        if span_len == 0 {
            return Err(CoreError::invalid("a test record has an empty answer span"));
        }
        let mut positions = vec![Vec::new(); shape.count()];
        for (h, p) in sparse {
            let i = shape
                .index(*h)
                .ok_or_else(|| CoreError::invalid(format!("head {h} is outside the {}x{} grid", shape.layers, shape.heads)))?;
            let mut p = p.clone();
            p.sort_unstable();
            p.dedup();
            if p.len() > span_len {
                return Err(CoreError::invalid(format!("head {h} has {} hits for a {span_len}-token span", p.len())));
            }
            positions[i] = p;
        }
        let hit_steps = positions.iter().map(|p| p.len() as u32).collect();
        Ok(HeadHits { shape, span_len, positions, hit_steps })
    }

    /// Adds the repeated hits of a record (its `repeat_hits`, see [`HeadHits::repeats_sparse`]).
    pub fn with_repeats(mut self, repeats: &BTreeMap<HeadId, u32>) -> Result<Self> {
        for (h, &n) in repeats {
            let i = self
                .shape
                .index(*h)
                .ok_or_else(|| CoreError::invalid(format!("head {h} is outside the {}x{} grid", self.shape.layers, self.shape.heads)))?;
            if self.positions[i].is_empty() {
                return Err(CoreError::invalid(format!("head {h} repeats {n} hits but hit no position")));
            }
            self.hit_steps[i] = (self.positions[i].len() as u32)
                .checked_add(n)
                .ok_or_else(|| CoreError::invalid(format!("head {h} repeats {n} hits: more than a decode can make")))?;
        }
        Ok(self)
    }
}

/// Whether a test's answer passes the gate: ROUGE-1 recall at least `gate` (the paper scores only tests
/// the model answered, recall 0.5; a gate of 0 scores every test).
pub fn passes_gate(recall: f64, gate: f64) -> bool {
    recall >= gate
}

/// Retrieval scores of every head over many tests: per head, one score per scored test.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadScores {
    shape: HeadShape,
    per_head: Vec<Vec<f64>>,
}

impl HeadScores {
    /// No tests yet.
    pub fn new(shape: HeadShape) -> Self {
        HeadScores { shape, per_head: vec![Vec::new(); shape.count()] }
    }

    /// Scores as given, per head in flat order (each list one entry per test).
    pub fn from_lists(shape: HeadShape, per_head: Vec<Vec<f64>>) -> Result<Self> {
        if per_head.len() != shape.count() {
            return Err(CoreError::invalid(format!("{} score lists for {} heads", per_head.len(), shape.count())));
        }
        Ok(HeadScores { shape, per_head })
    }

    /// The head grid.
    pub fn shape(&self) -> HeadShape {
        self.shape
    }

    /// Adds one scored test (eq. 1).
    pub fn push(&mut self, hits: &HeadHits) -> Result<()> {
        self.push_kind(hits, ScoreKind::Eq1)
    }

    /// Adds one scored test, its hits counted as `kind` says (an argmax kind: eq. 1 or official).
    pub fn push_kind(&mut self, hits: &HeadHits, kind: ScoreKind) -> Result<()> {
        if hits.shape != self.shape {
            return Err(CoreError::invalid(format!("a test of a {:?} model cannot join scores of a {:?} model", hits.shape, self.shape)));
        }
        let values = (0..self.shape.count())
            .map(|i| hits.score_of_kind_at(i, kind))
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| CoreError::invalid(format!("the {} score is not counted from hits", kind.name())))?;
        for (list, v) in self.per_head.iter_mut().zip(values) {
            list.push(v);
        }
        Ok(())
    }

    /// Adds one test's scores as given, one per head in flat order.
    pub fn push_values(&mut self, values: &[f64]) -> Result<()> {
        if values.len() != self.shape.count() {
            return Err(CoreError::invalid(format!("{} scores for {} heads", values.len(), self.shape.count())));
        }
        for (list, &v) in self.per_head.iter_mut().zip(values) {
            list.push(v);
        }
        Ok(())
    }

    /// Number of tests scored (the longest list, for files whose lists differ).
    pub fn tests(&self) -> usize {
        self.per_head.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// The per-test scores of `head`.
    pub fn scores(&self, head: HeadId) -> &[f64] {
        self.shape.index(head).map_or(&[], |i| &self.per_head[i])
    }

    /// Mean retrieval score of `head` (0 with no tests): the number that ranks heads.
    pub fn mean(&self, head: HeadId) -> f64 {
        mean(self.scores(head))
    }

    /// Share of tests in which `head` hit at least once.
    pub fn activation_frequency(&self, head: HeadId) -> f64 {
        let s = self.scores(head);
        if s.is_empty() {
            0.0
        } else {
            s.iter().filter(|&&v| v > 0.0).count() as f64 / s.len() as f64
        }
    }

    /// Every head with its mean, highest first (ties broken by head order, so rankings are stable).
    pub fn ranked(&self) -> Vec<(HeadId, f64)> {
        let mut v: Vec<(HeadId, f64)> = self.shape.iter().map(|h| (h, self.mean(h))).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The retrieval heads: mean above `threshold`, highest first.
    pub fn retrieval_heads(&self, threshold: f64) -> Vec<(HeadId, f64)> {
        self.ranked().into_iter().filter(|(_, m)| *m > threshold).collect()
    }

    /// Means as a layers x heads matrix (row = layer), for heatmaps.
    pub fn mean_grid(&self) -> Vec<Vec<f64>> {
        (0..self.shape.layers).map(|l| (0..self.shape.heads).map(|h| self.mean(HeadId::new(l, h))).collect()).collect()
    }

    /// The per-head lists in flat order.
    pub fn lists(&self) -> &[Vec<f64>] {
        &self.per_head
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Prompt of 10 tokens; answer span = positions 4..7 holding tokens 40, 50, 60.
    const PROMPT: [u32; 10] = [1, 10, 20, 30, 40, 50, 60, 70, 80, 90];
    const SPAN: Range<usize> = 4..7;

    fn step(token: u32, argmax: &[u32]) -> DecodeStep {
        DecodeStep { token, argmax: argmax.to_vec() }
    }

    #[test]
    fn hit_needs_position_in_span_and_matching_token() {
        let shape = HeadShape::new(1, 4);
        // head 0: in span, token matches -> hit. head 1: in span, wrong token. head 2: token 40 matches but
        // outside the span (position 1 holds 10, not 40) -> no. head 3: argmax at a non-span position.
        let steps = [step(40, &[4, 5, 1, 9])];
        let hits = retrieval_hits(shape, &PROMPT, SPAN, &steps).unwrap();
        assert_eq!(hits.positions(HeadId::new(0, 0)), &[4]);
        assert!(hits.positions(HeadId::new(0, 1)).is_empty());
        assert!(hits.positions(HeadId::new(0, 2)).is_empty());
        assert!(hits.positions(HeadId::new(0, 3)).is_empty());
        assert!((hits.score(HeadId::new(0, 0)) - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn the_official_count_adds_repeated_copies_and_can_pass_one() {
        let shape = HeadShape::new(1, 2);
        // The model writes 40 50 40 50 40: head 0 copies position 4 three times and position 5 twice
        // (5 hitting steps over a 3-token span); head 1 copies 4 once and misses the rest.
        let steps = [step(40, &[4, 4]), step(50, &[5, 9]), step(40, &[4, 9]), step(50, &[5, 9]), step(40, &[4, 9])];
        let hits = retrieval_hits(shape, &PROMPT, SPAN, &steps).unwrap();
        assert!((hits.score_of_kind_at(0, ScoreKind::Eq1).unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((hits.score_of_kind_at(0, ScoreKind::Official).unwrap() - 5.0 / 3.0).abs() < 1e-12);
        assert!((hits.score_of_kind_at(1, ScoreKind::Eq1).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((hits.score_of_kind_at(1, ScoreKind::Official).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // Stored sparsely (positions, and 3 hits past them for head 0 only) and read back, both counts hold.
        let repeats = hits.repeats_sparse();
        assert_eq!(repeats, [(HeadId::new(0, 0), 3)].into_iter().collect());
        let back = HeadHits::from_sparse(shape, 3, &hits.to_sparse()).unwrap().with_repeats(&repeats).unwrap();
        assert_eq!(back, hits);
        // A repeat for a head without hits is malformed.
        let bad = [(HeadId::new(0, 1), 1)].into_iter().collect();
        assert!(HeadHits::from_sparse(shape, 3, &BTreeMap::new()).unwrap().with_repeats(&bad).is_err());
        let mut scores = HeadScores::new(shape);
        scores.push_kind(&hits, ScoreKind::Official).unwrap();
        assert!(scores.mean(HeadId::new(0, 0)) > 1.0);
    }

    #[test]
    fn the_soft_score_sums_top_k_weight_inside_the_span() {
        // A 3-token span at 4..7 and a row over 10 positions: the top 3 weights are 0.30 (position 5),
        // 0.20 (position 1) and 0.15 (positions 6 and 8 tie: the earlier, 6, is taken). In the span: 5 and 6.
        let row = [0.05, 0.20, 0.0, 0.05, 0.10, 0.30, 0.15, 0.0, 0.15, 0.0];
        assert!((top_k_mass_in_span(&row, 4..7) - 0.45).abs() < 1e-6);
        // k larger than the row, and an empty span.
        assert!((top_k_mass_in_span(&[0.5, 0.5], 0..5) - 1.0).abs() < 1e-6);
        assert_eq!(top_k_mass_in_span(&row, 4..4), 0.0);
        // Three steps with 0.45 each over a 3-token span: 10 * 1.35 / 9.
        assert!((soft_score(3.0 * 0.45, 3) - 1.5).abs() < 1e-6);
    }

    #[test]
    fn the_query_focused_score_drops_low_outliers_and_sums_the_rest() {
        // 20 needle tokens: nineteen at 0.01 and one at -0.5. Mean = (0.19 - 0.5) / 20 = -0.0155; the
        // sample std is 0.1140 (sum of squared deviations 0.24700 / 19), so the threshold is -0.2435
        // and the -0.5 token is dropped: the score is 0.19.
        let mut v = vec![0.01; 19];
        v.push(-0.5);
        assert!((query_focus_score(&v) - 0.19).abs() < 1e-12);
        // Three tokens cannot hold an outlier two sample deviations below their mean: all are summed.
        assert!((query_focus_score(&[0.3, -0.1, 0.1]) - 0.3).abs() < 1e-12);
        assert_eq!(query_focus_score(&[0.25]), 0.25);
        assert_eq!(query_focus_score(&[]), 0.0);
    }

    #[test]
    fn repeated_tokens_score_echo_and_induction_positions() {
        let r = RepeatedTokens::new(1000, 3, 7, Some(1)).unwrap();
        assert_eq!((r.ids.len(), r.offset, r.first_scored()), (13, 1, 4));
        assert_eq!(r.ids[1..4], r.ids[4..7]);
        assert_eq!(r.ids[1..4], r.ids[10..13]);
        assert!(r.ids[1..].iter().all(|&t| (125..1000).contains(&t)));
        assert_eq!(RepeatedTokens::new(1000, 3, 7, Some(1)).unwrap(), r, "seeded");
        // Position 8 (third repeat, block index 1): the same token stood at 5 and 2, the tokens after
        // them at 6 and 3.
        let mut w = vec![0.0f32; 9];
        (w[2], w[5], w[3], w[6], w[8]) = (0.1, 0.2, 0.3, 0.25, 0.15);
        let (echo, induction) = r.echo_and_induction(&w, 8);
        assert!((echo - 0.3).abs() < 1e-6 && (induction - 0.55).abs() < 1e-6, "{echo} {induction}");
        assert!(RepeatedTokens::new(1000, 1, 7, None).is_err());
    }

    #[test]
    fn score_lists_parse_each_known_kind_once() {
        assert_eq!(ScoreKind::parse_list("eq1, official").unwrap(), [ScoreKind::Eq1, ScoreKind::Official]);
        assert!(ScoreKind::parse_list("eq1,eq1").unwrap_err().to_string().contains("twice"));
        assert!(ScoreKind::parse_list("duo").unwrap_err().to_string().contains("unknown score 'duo'"));
        assert_eq!(ScoreKind::parse_list("echo,induction").unwrap(), [ScoreKind::Echo, ScoreKind::Induction]);
        assert_eq!(ScoreKind::parse_list("qr,soft").unwrap(), [ScoreKind::Qr, ScoreKind::Soft]);
        assert_eq!(ScoreKind::parse_list("soft").unwrap(), [ScoreKind::Soft]);
        assert_eq!(ScoreKind::Official.file_name(), "head_scores_official.json");
        assert_eq!(ScoreKind::Eq1.file_name(), "head_scores.json");
    }

    #[test]
    fn a_position_counts_once_so_scores_stay_in_unit_interval() {
        let shape = HeadShape::new(1, 1);
        // The head copies position 4 at three steps that all generate token 40, then 5 and 6.
        let steps = [step(40, &[4]), step(40, &[4]), step(40, &[4]), step(50, &[5]), step(60, &[6])];
        let hits = retrieval_hits(shape, &PROMPT, SPAN, &steps).unwrap();
        assert_eq!(hits.positions(HeadId::new(0, 0)), &[4, 5, 6]);
        assert_eq!(hits.score(HeadId::new(0, 0)), 1.0);
        // Without de-duplication this would be 5/3.
    }

    #[test]
    fn first_step_at_last_prompt_position_counts() {
        // The step that produced the first answer token (from the last prompt position) is steps[0].
        let shape = HeadShape::new(1, 1);
        let hits = retrieval_hits(shape, &PROMPT, SPAN, &[step(40, &[4]), step(2, &[0])]).unwrap();
        assert_eq!(hits.score(HeadId::new(0, 0)), 1.0 / 3.0);
    }

    #[test]
    fn gqa_heads_are_scored_per_query_head() {
        // 2 layers x 4 query heads (e.g. 2 KV heads of 2 queries each): two query heads that share a KV
        // head are scored separately, and the flat index is layer-major.
        let shape = HeadShape::new(2, 4);
        let mut argmax = vec![0u32; 8];
        argmax[shape.index(HeadId::new(1, 2)).unwrap()] = 5; // hit
        argmax[shape.index(HeadId::new(1, 3)).unwrap()] = 2; // same KV group, looked elsewhere
        let hits = retrieval_hits(shape, &PROMPT, SPAN, &[step(50, &argmax)]).unwrap();
        assert_eq!(hits.score(HeadId::new(1, 2)), 1.0 / 3.0);
        assert_eq!(hits.score(HeadId::new(1, 3)), 0.0);
        assert_eq!(hits.to_sparse().len(), 1);
        assert!(hits.to_sparse().contains_key(&HeadId::new(1, 2)));
    }

    #[test]
    fn wrong_head_count_is_an_error() {
        let e = retrieval_hits(HeadShape::new(2, 2), &PROMPT, SPAN, &[step(1, &[0, 0, 0])]).unwrap_err();
        assert!(e.to_string().contains("reports 3 heads"));
        assert!(retrieval_hits(HeadShape::new(1, 1), &PROMPT, 9..12, &[]).is_err());
    }

    #[test]
    fn aggregation_means_frequency_and_threshold() {
        let shape = HeadShape::new(1, 3);
        let mut scores = HeadScores::new(shape);
        // Test A: head 0 gets all 3 positions, head 1 gets one. Test B: head 0 gets none, head 1 one.
        let a = retrieval_hits(shape, &PROMPT, SPAN, &[step(40, &[4, 4, 0]), step(50, &[5, 0, 0]), step(60, &[6, 0, 0])]).unwrap();
        let b = retrieval_hits(shape, &PROMPT, SPAN, &[step(60, &[0, 6, 0])]).unwrap();
        scores.push(&a).unwrap();
        scores.push(&b).unwrap();
        assert_eq!(scores.tests(), 2);
        assert_eq!(scores.scores(HeadId::new(0, 0)), &[1.0, 0.0]);
        assert_eq!(scores.mean(HeadId::new(0, 0)), 0.5);
        assert_eq!(scores.activation_frequency(HeadId::new(0, 0)), 0.5);
        assert_eq!(scores.activation_frequency(HeadId::new(0, 1)), 1.0);
        assert_eq!(scores.activation_frequency(HeadId::new(0, 2)), 0.0);
        let rh = scores.retrieval_heads(RETRIEVAL_THRESHOLD);
        assert_eq!(rh.iter().map(|r| r.0).collect::<Vec<_>>(), vec![HeadId::new(0, 0), HeadId::new(0, 1)]);
        // Exactly at the threshold is not a retrieval head (the paper: mean > 0.1).
        let at = HeadScores::from_lists(HeadShape::new(1, 1), vec![vec![0.1]]).unwrap();
        assert!(at.retrieval_heads(0.1).is_empty());
    }

    #[test]
    fn gate_is_inclusive_and_zero_scores_everything() {
        assert!(passes_gate(0.5, 0.5));
        assert!(!passes_gate(0.49, 0.5));
        assert!(passes_gate(0.0, 0.0));
    }

    #[test]
    fn sparse_round_trip() {
        let shape = HeadShape::new(2, 2);
        let hits = retrieval_hits(shape, &PROMPT, SPAN, &[step(40, &[4, 0, 0, 4]), step(50, &[5, 0, 0, 0])]).unwrap();
        let back = HeadHits::from_sparse(shape, 3, &hits.to_sparse()).unwrap();
        assert_eq!(back, hits);
        let mut bad = hits.to_sparse();
        bad.insert(HeadId::new(5, 0), vec![4]);
        assert!(HeadHits::from_sparse(shape, 3, &bad).is_err());
    }
}
