//! The measurements: one test timed phase by phase on any engine, the search for the longest context
//! that fits, and the memory probe at one length.

use super::render::row;
use super::{memory, BenchArgs, LengthResult, MaxContext, SavedTest, SEARCH_STEP};
use crate::sweep::is_out_of_memory;
use anyhow::{Context, Result};
use headscope_core::metrics::rouge1_recall;
use headscope_core::niah::{Needle, NiahTest};
use headscope_core::score::{retrieval_hits, DecodeStep};
use headscope_core::{HeadShape, TextTokenizer};
use headscope_engine::{block_on, greedy_decode_from, DecodeTrace, Engine};
use headscope_gpu::GpuModel;
use headscope_model::{Device, Probe, Transformer};
use std::time::Instant;

/// Prompt tokens per prefill submission on the wgpu engine (its own choice).
pub(super) const WGPU_PREFILL_CHUNK: usize = 256;

/// What bench needs of an engine beyond [`Engine`]: waiting for its device, so that a time is the
/// device's, and freeing its cache after an attempt that ran out of memory.
pub(super) trait Benched: Engine<Error: std::error::Error + Send + Sync + 'static> {
    fn synchronize(&self) -> Result<()>;
    fn release_cache(&mut self);
}

impl Benched for Transformer {
    fn synchronize(&self) -> Result<()> {
        Ok(self.device().synchronize()?)
    }
    fn release_cache(&mut self) {
        Transformer::release_cache(self);
    }
}

impl Benched for GpuModel {
    /// Nothing to wait for: its prefill resolves when the GPU has finished, and every step reads its
    /// results back.
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
    fn release_cache(&mut self) {
        self.reset();
    }
}

/// The measurements, shared by every engine: the built prompts and what scores them.
pub(super) struct Work<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) prompts: &'a [NiahTest],
    /// Per length, the depth sweep's prompts, deepest first.
    pub(super) sweeps: &'a [Vec<NiahTest>],
    pub(super) shape: HeadShape,
    pub(super) tokenizer: &'a headscope_model::HfTokenizer,
    pub(super) needle: &'a Needle,
    pub(super) monitor: Option<&'a memory::Monitor>,
}

/// What [`Work::measure`] found.
pub(super) struct Measured {
    pub(super) results: Vec<LengthResult>,
    pub(super) saved: Vec<SavedTest>,
    pub(super) load_seconds: f64,
    pub(super) warmup_seconds: f64,
}

impl Work<'_> {
    /// Warms `model` up, then times every length alone (`repeats` times) and in its depth sweep.
    pub(super) fn measure<E: Benched>(&self, model: &mut E, load_seconds: f64) -> Result<Measured> {
        let args = self.args;
        // Warm-up: kernel JIT and library start-up (12-15 s on a fresh GPU machine) stay out of the figures.
        let t = Instant::now();
        let first = &self.prompts[0].prompt_ids;
        let warm = &first[..64.min(first.len())];
        block_on(model.reserve(warm.len() + 2))?;
        run_test(model, warm, 2, false)?;
        let warmup_seconds = t.elapsed().as_secs_f64();

        let mut results = Vec::new();
        let mut saved = Vec::new();
        for (test, sweep) in self.prompts.iter().zip(self.sweeps) {
            if let Some(m) = self.monitor {
                m.reset_peak();
            }
            let length = test.prompt_ids.len();
            let mut sums = (0.0, 0.0, 0.0);
            let mut outcome = Ok(());
            let mut heads_with_hits = 0;
            for _ in 0..args.repeats {
                let run = block_on(model.reserve(length + args.steps)).map_err(anyhow::Error::from).and_then(|_| {
                    let t0 = Instant::now();
                    let timing = run_test(model, &test.prompt_ids, args.steps, false)?;
                    Ok((t0, timing))
                });
                match run {
                    Ok((t0, (prefill, decode, _, trace))) => {
                        heads_with_hits = self.score_test(test, &trace)?;
                        sums.0 += prefill;
                        sums.1 += decode;
                        sums.2 += t0.elapsed().as_secs_f64();
                        if saved.iter().all(|s: &SavedTest| s.length != length) {
                            saved.push(SavedTest {
                                length,
                                prompt_ids: test.prompt_ids.clone(),
                                prompt_hash: test.prompt_hash(),
                                needle_tokens: [test.needle_tokens.start, test.needle_tokens.end],
                                answer_tokens: [test.answer_tokens.start, test.answer_tokens.end],
                                headscope_tokens: trace.tokens.clone(),
                                headscope_argmax: trace.argmax_position.clone(),
                            });
                        }
                    }
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                }
            }
            let n = args.repeats as f64;
            // The sweep runs only where the isolated test fit: at one length it needs the same memory.
            let swept = match &outcome {
                Ok(()) if !sweep.is_empty() => match self.run_sweep(model, sweep) {
                    Ok(s) => Some(s),
                    Err(e) if is_out_of_memory(&e) => {
                        model.release_cache();
                        None
                    }
                    Err(e) => return Err(e).with_context(|| format!("the {length}-token depth sweep")),
                },
                _ => None,
            };
            let peak_memory_bytes = self.monitor.and_then(|m| m.peak());
            let r = match outcome {
                Ok(()) => LengthResult {
                    length,
                    fits: true,
                    error: None,
                    prefill_seconds: sums.0 / n,
                    prefill_tokens_per_second: (length - 1) as f64 / (sums.0 / n).max(1e-9),
                    decode_step_ms: 1e3 * sums.1 / n / args.steps as f64,
                    test_seconds: sums.2 / n,
                    sweep_test_seconds: swept.map(|s| s.0),
                    sweep_reused_share: swept.map(|s| s.1),
                    peak_memory_bytes,
                    heads_with_hits,
                    kv_cache_bytes: None,
                },
                Err(e) => {
                    if !is_out_of_memory(&e) {
                        return Err(e).with_context(|| format!("the {length}-token test"));
                    }
                    // Free what the failed attempt left before the next length.
                    model.release_cache();
                    LengthResult {
                        length,
                        fits: false,
                        error: Some(e.to_string()),
                        prefill_seconds: 0.0,
                        prefill_tokens_per_second: 0.0,
                        decode_step_ms: 0.0,
                        test_seconds: 0.0,
                        sweep_test_seconds: None,
                        sweep_reused_share: None,
                        peak_memory_bytes,
                        heads_with_hits: 0,
                        kv_cache_bytes: None,
                    }
                }
            };
            eprintln!("{}", row(&r, args.sweep_depths > 0));
            results.push(r);
        }
        Ok(Measured { results, saved, load_seconds, warmup_seconds })
    }

    /// Scores a finished test as the sweep does (eq. 1 hits, the answer's ROUGE-1 recall), so that its
    /// cost is in the time per test; returns how many heads hit.
    fn score_test(&self, test: &NiahTest, trace: &DecodeTrace) -> Result<usize> {
        let steps: Vec<DecodeStep> = trace.steps();
        let hits = retrieval_hits(self.shape, &test.prompt_ids, test.answer_tokens.clone(), &steps)?;
        let answer = self.tokenizer.decode(&trace.tokens).unwrap_or_default();
        let _recall = rouge1_recall(&answer, &self.needle.real_needle);
        Ok(self.shape.iter().filter(|&h| hits.score(h) > 0.0).count())
    }

    /// A depth sweep at one length as `detect` runs it: `tests` (deepest first) one after another from
    /// an empty cache, each prefill reusing the prefix shared with the test before. Returns the mean
    /// seconds per test (model work and scoring) and the share of prefill positions reused.
    fn run_sweep<E: Benched>(&self, model: &mut E, tests: &[NiahTest]) -> Result<(f64, f64)> {
        let steps = self.args.steps;
        let longest = tests.iter().map(|t| t.prompt_ids.len()).max().unwrap_or(0);
        // Empty: the sweep's first test computes its whole prompt, as the first test of a real sweep does.
        model.reset();
        block_on(model.reserve(longest + steps))?;
        let (mut seconds, mut reused, mut positions) = (0.0, 0, 0);
        for test in tests {
            let t0 = Instant::now();
            let (_, _, r, trace) = run_test(model, &test.prompt_ids, steps, true)?;
            self.score_test(test, &trace)?;
            seconds += t0.elapsed().as_secs_f64();
            reused += r;
            positions += test.prompt_ids.len() - 1;
        }
        Ok((seconds / tests.len().max(1) as f64, reused as f64 / positions.max(1) as f64))
    }
}

/// One NIAH test's model work: prefill prompt[:-1] (synchronised, so the time is the device's), then
/// `steps` observed decode steps. With `reuse` the prefill keeps the cached prefix the prompt shares
/// with what the cache holds, else it starts from an empty cache. Returns (prefill seconds, decode
/// seconds, positions reused, trace).
pub(super) fn run_test<E: Benched>(model: &mut E, prompt: &[u32], steps: usize, reuse: bool) -> Result<(f64, f64, usize, DecodeTrace)> {
    let (&last, context) = prompt.split_last().context("the prompt is empty")?;
    if !reuse {
        model.reset();
    }
    let t = Instant::now();
    let reused = block_on(model.prefill_reusing(context))?;
    model.synchronize()?;
    let prefill = t.elapsed().as_secs_f64();
    // Every step copies its argmax positions to the host, which waits for the device.
    let trace = block_on(greedy_decode_from(model, last, steps, &[], &Probe::default(), |_| true))?;
    Ok((prefill, trace.decode_seconds, reused, trace))
}

/// Binary search for the longest context (multiple of [`SEARCH_STEP`]) whose KV cache, last prefill
/// chunk and decode step run, between `known` (a length that ran) and the physical limit.
pub(super) fn search_max_context(
    model: &mut Transformer,
    device: &Device,
    memory: u64,
    limit: u64,
    known: usize,
    args: &BenchArgs,
) -> Result<MaxContext> {
    let mut probes = Vec::new();
    let top = (limit as usize / SEARCH_STEP) * SEARCH_STEP;
    let (mut lo, mut hi) = ((known / SEARCH_STEP) * SEARCH_STEP, top + SEARCH_STEP);
    let mut probe = |model: &mut Transformer, length: usize| -> Result<bool> {
        model.release_cache();
        let ok = match memory_probe(model, device, length, args.steps) {
            Ok(()) => true,
            Err(e) if is_out_of_memory(&e) => false,
            Err(e) => return Err(e).with_context(|| format!("probing a {length}-token context")),
        };
        model.release_cache();
        eprintln!("max-context probe {length} tokens: {}", if ok { "fits" } else { "out of memory" });
        probes.push((length, ok));
        Ok(ok)
    };
    // The physical limit itself first: if it fits there is nothing to search.
    if top > lo && probe(model, top)? {
        lo = top;
    } else {
        hi = hi.min(top);
        while hi > lo + SEARCH_STEP {
            let mid = (lo + hi) / 2 / SEARCH_STEP * SEARCH_STEP;
            if probe(model, mid)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    Ok(MaxContext { memory_bytes: memory, physical_limit_tokens: limit, longest_fitting_tokens: lo, probes })
}

/// The buffers of a real run at `length` positions without computing the prompt: the KV cache for
/// `length + steps` positions, the last prefill chunk of prompt tokens (prefilled in the chunks the score
/// budget gives there) and one decode step.
pub(super) fn memory_probe(model: &mut Transformer, device: &Device, length: usize, steps: usize) -> headscope_model::Result<()> {
    model.reserve(length + steps)?;
    let tail = model.prefill_chunk().min(length - 1);
    model.pretend_filled(length - 1 - tail)?;
    model.prefill(&vec![0u32; tail])?;
    model.step(0, &Probe::default())?;
    device.synchronize()?;
    Ok(())
}
