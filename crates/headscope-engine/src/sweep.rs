//! The one NIAH sweep runner that every front end calls: `headscope detect` / `niah` and the page.
//!
//! Core builds the tests ([`NiahBuilder`]) and scores them ([`TestRecord::scored`]); an [`Engine`]
//! decodes them. What lies between is here, once: the checks a sweep makes before it loads weights
//! ([`SweepPlan::new`]), the order tests run in, the prefill that reuses the cache of the prompt before
//! it ([`Engine::prefill_reusing`]), one prefill shared by several masks, and the record of each test.
//! Front ends keep only what is theirs: files and a progress bar for the CLI, messages and
//! cancellation for the page.

use crate::decode::{greedy_decode_from, DecodeTrace, Engine};
use crate::error::EngineError;
use crate::mask::HeadMask;
use crate::probe::Probe;
use crate::spec::ModelSpec;
use headscope_core::files::TestRecord;
use headscope_core::niah::{Needle, NiahBuilder, NiahTest, NullQuery};
use headscope_core::prompt::PromptFormat;
use headscope_core::score::{query_focus_score, retrieval_hits};
use headscope_core::sweep::{depths, parse_lengths, plan, run_order, TestKey};
use headscope_core::{HeadShape, TextTokenizer};

/// What every sweep and every single test needs, whatever its grid.
#[derive(Debug, Clone, Copy)]
pub struct SweepInputs<'a> {
    /// The needles, each with its question and the answer inside it.
    pub needles: &'a [Needle],
    /// The haystack texts (joined and repeated to length by the builder).
    pub haystack: &'a [String],
    /// Most tokens to generate per test.
    pub max_new_tokens: usize,
}

impl SweepInputs<'_> {
    /// Checks what every run needs: needles whose answers lie inside them, a haystack, tokens to
    /// generate. Each error names the input at fault.
    pub fn check(&self) -> Result<(), EngineError> {
        if self.needles.is_empty() {
            return Err(EngineError::Invalid("no needle: give a needle, a question and its answer, or a needles JSONL file".into()));
        }
        for (i, n) in self.needles.iter().enumerate() {
            n.answer_range().map_err(|e| match self.needles.len() {
                1 => EngineError::Input(e),
                _ => EngineError::Invalid(format!("needle {}: {e}", i + 1)),
            })?;
        }
        if self.haystack.iter().all(|h| h.trim().is_empty()) {
            return Err(EngineError::Invalid("the haystack is empty: give a text (a .txt file) to hide the needle in".into()));
        }
        if self.max_new_tokens == 0 {
            return Err(EngineError::Invalid("max new tokens must be at least 1".into()));
        }
        Ok(())
    }
}

/// Refuses a test whose prompt of `length` tokens and `max_new_tokens` answer tokens would not fit the
/// model's context.
pub fn check_fits(spec: &ModelSpec, length: usize, max_new_tokens: usize) -> Result<(), EngineError> {
    let max = spec.max_position_embeddings;
    if length + max_new_tokens > max {
        return Err(EngineError::TooLong(format!(
            "a {length}-token context plus {max_new_tokens} new tokens needs {} positions, but the model handles at most {max} (max_position_embeddings in its config.json); choose shorter lengths",
            length + max_new_tokens
        )));
    }
    Ok(())
}

/// About how many copies of a `haystack_tokens`-token haystack a `longest`-token prompt holds, where
/// that is more than two. A short haystack is repeated to the length, and every sentence in it with
/// it: a sentence that resembles the needle then stands there several times against the needle's
/// once, and copying heads follow the repeated text (docs/lab-v5/README.md, "A look-alike that
/// repeats"). The CLI and the page say so. A count of 0 tokens means unknown (a session saved before
/// the page kept it), and gets no answer.
pub fn haystack_repeats(haystack_tokens: usize, longest: usize) -> Option<usize> {
    (haystack_tokens > 0 && longest > 2 * haystack_tokens).then(|| longest.div_ceil(haystack_tokens))
}

/// A checked sweep: its grid and every test of it.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepPlan {
    /// Context lengths in tokens.
    pub lengths: Vec<usize>,
    /// Needle depths in percent.
    pub depths: Vec<f64>,
    /// Every test, needle-major, then length, then depth: the order records are read in.
    pub keys: Vec<TestKey>,
    /// Tokens of one copy of the haystack: longer prompts repeat it ([`NiahBuilder::source_tokens`]).
    pub haystack_tokens: usize,
}

impl SweepPlan {
    /// Parses and checks a sweep before any weight is loaded or file written: the inputs
    /// ([`SweepInputs::check`]), `lengths` (`MIN:MAX:N` or one length) and `depth_count`, the longest
    /// test against the model's context, and every needle built at the shortest length (a needle longer
    /// than the context, a haystack too short, ... are caught here, named by the needle).
    pub fn new<T: TextTokenizer>(
        spec: &ModelSpec,
        tokenizer: &T,
        format: PromptFormat,
        inputs: &SweepInputs,
        lengths: &str,
        depth_count: usize,
    ) -> Result<SweepPlan, EngineError> {
        inputs.check()?;
        let lengths = parse_lengths(lengths)?;
        let depths = depths(depth_count)?;
        let tests = inputs.needles.len().saturating_mul(lengths.len()).saturating_mul(depths.len());
        if tests > headscope_core::sweep::MAX_TESTS {
            return Err(EngineError::Invalid(format!(
                "{} needles x {} lengths x {} depths = {tests} tests, more than the {} one sweep may hold; split it",
                inputs.needles.len(),
                lengths.len(),
                depths.len(),
                headscope_core::sweep::MAX_TESTS
            )));
        }
        check_fits(spec, lengths.iter().max().copied().unwrap_or(0), inputs.max_new_tokens)?;
        let mut builder = NiahBuilder::new(tokenizer, format, inputs.haystack)?;
        let shortest = lengths.iter().min().copied().unwrap_or(0);
        for (i, n) in inputs.needles.iter().enumerate() {
            builder.build(n, shortest, 50.0).map_err(|e| EngineError::Invalid(format!("needle {} ({:?}): {e}", i + 1, n.needle)))?;
        }
        let keys = plan(inputs.needles.len(), &lengths, &depths);
        Ok(SweepPlan { lengths, depths, keys, haystack_tokens: builder.source_tokens() })
    }

    /// How many times the longest prompt repeats the haystack, where that is more than twice
    /// ([`haystack_repeats`]).
    pub fn haystack_repeats(&self) -> Option<usize> {
        haystack_repeats(self.haystack_tokens, self.lengths.iter().max().copied().unwrap_or(0))
    }

    /// The longest test's positions, prompt and answer: what to [`Engine::reserve`] once.
    pub fn positions(&self, max_new_tokens: usize) -> usize {
        self.lengths.iter().max().copied().unwrap_or(0) + max_new_tokens
    }
}

/// One finished decode of a sweep.
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// Where the test sits in [`SweepPlan::keys`].
    pub index: usize,
    /// Which of the runner's masks it ran under.
    pub variant: usize,
    /// The built test.
    pub test: NiahTest,
    /// What the engine generated and observed.
    pub trace: DecodeTrace,
    /// The test scored, as `tests.jsonl` holds it.
    pub record: TestRecord,
    /// Prompt positions taken from the cache rather than computed.
    pub reused: usize,
}

/// A test of a sweep that failed: which one, and why. Its message names the test, as `test ID: why`.
#[derive(Debug)]
pub struct TestError<E> {
    /// The test.
    pub key: TestKey,
    /// What went wrong building, decoding or scoring it.
    pub error: E,
}

impl<E: std::fmt::Display> std::fmt::Display for TestError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "test {}: {}", self.key.id(), self.error)
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TestError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Runs a [`SweepPlan`] on an engine, one decode at a time ([`SweepRunner::next`]), so that each front
/// end can write, post or cancel between tests.
///
/// Each test is built once and decoded under every mask (variant) that still needs it. Each prefill
/// reuses the cache of the prompt before it as far as the two share their first tokens: decode-scope
/// masks leave a prompt's cache as the prefill left it, so they share all of it; a mask of scope `all`
/// changes the prefill and shares only with itself. Tests of one needle and length run from the
/// deepest needle to the shallowest, so that each shares with the one before it the whole haystack
/// before its own needle. Outcomes carry their index in the plan, so the order they come in does not
/// matter to readers.
pub struct SweepRunner<'a, T: TextTokenizer> {
    builder: NiahBuilder<'a, T>,
    tokenizer: &'a T,
    shape: HeadShape,
    inputs: SweepInputs<'a>,
    stop: &'a [u32],
    probe: Probe,
    /// Whether each test measures its answer span's attention mass ([`Probe::span_mass`]).
    span_mass: bool,
    /// Whether each unmasked test also runs the query-focused passes ([`query_focus`]).
    query_focus: bool,
    /// Whether records count repeated hits (`repeat_hits`, for the official score).
    repeats: bool,
    masks: Vec<Option<HeadMask>>,
    /// Tests still to run, in run order: plan index and the variants that need it.
    queue: std::collections::VecDeque<(usize, Vec<usize>)>,
    keys: Vec<TestKey>,
    /// The test being decoded and the variants it still awaits.
    current: Option<(usize, NiahTest, Vec<usize>)>,
    pending: usize,
}

impl<'a, T: TextTokenizer> SweepRunner<'a, T> {
    /// A runner over `plan`, decoding each test under each of `masks` (one `None`: no mask) for which
    /// `needed(key, variant)` holds (false: already done, e.g. found in a resumed run's file). `stop`
    /// ends a decode; `probe` names attention rows to keep.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        spec: &ModelSpec,
        tokenizer: &'a T,
        format: PromptFormat,
        inputs: SweepInputs<'a>,
        plan: &SweepPlan,
        masks: Vec<Option<HeadMask>>,
        stop: &'a [u32],
        probe: Probe,
        needed: impl Fn(&TestKey, usize) -> bool,
    ) -> Result<Self, EngineError> {
        inputs.check()?;
        let shape = spec.head_shape();
        for m in masks.iter().flatten() {
            shape.check(&m.heads)?;
        }
        shape.check(&probe.rows)?;
        let order: Vec<(usize, Vec<usize>)> = run_order(&plan.keys)
            .into_iter()
            .map(|i| (i, (0..masks.len()).filter(|&v| needed(&plan.keys[i], v)).collect::<Vec<_>>()))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let keys = plan.keys.clone();
        let pending = order.iter().map(|(_, v)| v.len()).sum();
        Ok(SweepRunner {
            builder: NiahBuilder::new(tokenizer, format, inputs.haystack)?,
            tokenizer,
            shape,
            inputs,
            stop,
            probe,
            span_mass: false,
            query_focus: false,
            repeats: false,
            masks,
            queue: order.into(),
            keys,
            current: None,
            pending,
        })
    }

    /// Makes every test measure its answer span's attention mass, for the soft score
    /// ([`headscope_core::ScoreKind::Soft`]): records then carry `soft_mass`. It costs every head's
    /// attention row at the first |span| decode steps.
    pub fn measuring_span_mass(mut self) -> Self {
        self.span_mass = true;
        self
    }

    /// Makes every unmasked test also run QRHead's passes ([`query_focus`]), for the qr score
    /// ([`headscope_core::ScoreKind::Qr`]): records then carry `qr`. It costs two teacher-forced passes
    /// over the question (the real one and the null one) with every head's attention row.
    pub fn measuring_query_focus(mut self) -> Self {
        self.query_focus = true;
        self
    }

    /// Makes records count the hits that repeat a position (`repeat_hits`), for the official score
    /// ([`headscope_core::ScoreKind::Official`]). Without it records hold no such field, as before the
    /// score existed.
    pub fn counting_repeats(mut self) -> Self {
        self.repeats = true;
        self
    }

    /// Decodes left to run.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// The longest prompt and answer still to run: what to [`Engine::reserve`] before the first test.
    pub fn positions(&self) -> usize {
        let longest = self.queue.iter().map(|(i, _)| self.keys[*i].length).max().unwrap_or(0);
        longest + self.inputs.max_new_tokens
    }

    /// Runs the next decode and returns its outcome, or `None` when the sweep is done. `on_token` sees
    /// each new token and may return `false` to stop that decode early (cancellation: the outcome then
    /// holds a shortened answer, and the caller should drop it).
    pub async fn next<E: Engine>(
        &mut self,
        engine: &mut E,
        on_token: impl FnMut(u32) -> bool,
    ) -> Option<Result<TestOutcome, TestError<E::Error>>> {
        if self.current.is_none() {
            let (index, variants) = self.queue.pop_front()?;
            let key = self.keys[index];
            let needle = &self.inputs.needles[key.needle_index];
            let test = match self.builder.build(needle, key.length, key.depth_percent) {
                Ok(t) => t,
                Err(e) => {
                    self.pending -= variants.len();
                    return Some(Err(TestError { key, error: EngineError::Input(e).into() }));
                }
            };
            self.current = Some((index, test, variants));
        }
        let (index, test, variants) = self.current.as_mut().expect("set above");
        let (index, variant) = (*index, variants.remove(0));
        let test = if variants.is_empty() { self.current.take().expect("set above").1 } else { test.clone() };
        self.pending -= 1;
        let key = self.keys[index];
        let mask = self.masks[variant].clone();
        let masked_heads = mask.as_ref().map(|m| m.heads.clone()).unwrap_or_default();
        let probe = Probe { rows: self.probe.rows.clone(), span_mass: self.span_mass.then(|| test.answer_tokens.clone()) };
        let unmasked = mask.is_none();
        let run = decode_prompt(engine, &test.prompt_ids, mask, &probe, self.inputs.max_new_tokens, self.stop, on_token).await;
        let needle = &self.inputs.needles[key.needle_index];
        let outcome = async {
            let (trace, reused) = run?;
            let mut record = score_test(self.tokenizer, self.shape, &key, needle, &test, &trace, masked_heads)?;
            if self.repeats {
                let hits =
                    retrieval_hits(self.shape, &test.prompt_ids, test.answer_tokens.clone(), &trace.steps()).map_err(EngineError::Input)?;
                record.repeat_hits = Some(hits.repeats_sparse());
            }
            if self.query_focus && unmasked {
                let null = self.builder.null_query(&test, needle).map_err(EngineError::Input)?;
                let values = query_focus(engine, &test, &null).await?;
                record.qr = Some(self.shape.iter().zip(values).filter(|(_, v)| *v != 0.0).collect());
            }
            Ok(TestOutcome { index, variant, test, trace, record, reused })
        }
        .await;
        Some(outcome.map_err(|error| TestError { key, error }))
    }
}

/// Decodes a prompt greedily on `engine` under `mask` (which stays set afterwards), as the official
/// code does: the prompt but its last token is prefilled, reusing what the cache holds of it
/// ([`Engine::prefill_reusing`]), and the last token is fed as the first decode step. Returns the
/// trace (prefill time included) and how many prompt positions were reused.
pub async fn decode_prompt<E: Engine>(
    engine: &mut E,
    prompt_ids: &[u32],
    mask: Option<HeadMask>,
    probe: &Probe,
    max_new_tokens: usize,
    stop: &[u32],
    on_token: impl FnMut(u32) -> bool,
) -> Result<(DecodeTrace, usize), E::Error> {
    let (&last, context) = prompt_ids.split_last().ok_or_else(|| EngineError::Invalid("the prompt is empty".into()))?;
    engine.set_mask(mask)?;
    let started = engine.now();
    let reused = engine.prefill_reusing(context).await?;
    let prefill_seconds = engine.now() - started;
    let mut trace = greedy_decode_from(engine, last, max_new_tokens, stop, probe, on_token).await?;
    trace.prefill_seconds = prefill_seconds;
    Ok((trace, reused))
}

/// QRHead's passes over one built test, unmasked: the prompt before the query is prefilled (reusing the
/// cache), the query's tokens are fed one by one with every head's attention row kept, then the same for
/// the null query from the same point; per head and needle token, the mean attention from the real
/// query minus the null query's is scored by core ([`query_focus_score`]). Returns one score per head
/// (layer-major) and leaves the cache holding the shared prefix.
pub async fn query_focus<E: Engine>(engine: &mut E, test: &NiahTest, null: &NullQuery) -> Result<Vec<f64>, E::Error> {
    engine.set_mask(None)?;
    let shape = engine.spec().head_shape();
    let every = Probe { rows: shape.iter().collect(), span_mass: None };
    let (start, needle) = (null.query_start, test.needle_tokens.clone());
    let mut means = Vec::with_capacity(2);
    for ids in [&test.prompt_ids, &null.null_ids] {
        engine.prefill_reusing(&ids[..start]).await?;
        let query = &ids[start..];
        let mut sum = vec![vec![0.0f64; needle.len()]; shape.count()];
        for &id in query {
            let step = engine.step(id, &every).await?;
            for row in &step.attention_rows {
                if let Some(h) = shape.index(row.head) {
                    for (k, j) in needle.clone().enumerate() {
                        sum[h][k] += row.weights.get(j).copied().unwrap_or(0.0) as f64;
                    }
                }
            }
        }
        for v in sum.iter_mut().flatten() {
            *v /= query.len() as f64;
        }
        means.push(sum);
    }
    engine.truncate(start)?;
    Ok(means[0]
        .iter()
        .zip(&means[1])
        .map(|(real, null)| query_focus_score(&real.iter().zip(null).map(|(a, b)| a - b).collect::<Vec<f64>>()))
        .collect())
}

/// The record of one decoded test, as `headscope detect` writes it and the page aggregates it: the
/// answer text, ROUGE-1 recall, every head's eq. 1 hits and, when the trace measured it, every head's
/// summed attention mass on the answer span. Its time is the prefill's and the decode's.
pub fn score_test<T: TextTokenizer>(
    tokenizer: &T,
    shape: HeadShape,
    key: &TestKey,
    needle: &Needle,
    test: &NiahTest,
    trace: &DecodeTrace,
    masked_heads: Vec<headscope_core::HeadId>,
) -> Result<TestRecord, EngineError> {
    let answer = tokenizer.decode(&trace.tokens)?;
    let soft_mass = (!trace.span_mass.is_empty()).then(|| {
        shape
            .iter()
            .enumerate()
            .map(|(i, h)| (h, trace.span_mass.iter().map(|step| step[i]).sum::<f64>()))
            .filter(|(_, m)| *m > 0.0)
            .collect()
    });
    Ok(TestRecord {
        masked_heads,
        soft_mass,
        seconds: trace.prefill_seconds + trace.decode_seconds,
        ..TestRecord::scored(key, needle, test, shape, &trace.steps(), answer)?
    })
}

#[cfg(test)]
mod tests {
    use super::haystack_repeats;

    #[test]
    fn a_haystack_is_said_to_repeat_only_past_two_copies() {
        assert_eq!(haystack_repeats(346, 692), None, "two copies exactly");
        assert_eq!(haystack_repeats(346, 693), Some(3));
        assert_eq!(haystack_repeats(346, 1024), Some(3));
        assert_eq!(haystack_repeats(346, 8192), Some(24));
        assert_eq!(haystack_repeats(100_000, 8192), None, "a long haystack is cut, not repeated");
        // An empty plan (no lengths), or a haystack whose size is unknown (0), says nothing.
        assert_eq!(haystack_repeats(346, 0), None);
        assert_eq!(haystack_repeats(0, 10), None);
    }
}
