//! The engine's sweep runner on the candle model: every decode it runs (with prefix reuse, one prompt
//! shared by several masks, deepest needle first) gives the record a fresh, unshared run of the same
//! test gives, each test comes once per mask that needs it, and the cache is really reused.

use headscope_core::niah::{Needle, NiahBuilder};
use headscope_core::prompt::PromptFormat;
use headscope_core::HeadId;
use headscope_engine::sweep::{score_test, SweepInputs, SweepPlan, SweepRunner, TestError};
use headscope_engine::{block_on, EngineError};
use headscope_model::testkit::{TinyArch, TinyModel, TINY_TEXT};
use headscope_model::{greedy_decode, HeadMask, LoadOptions, LoadedModel, MaskMode, MaskScope, Probe};

fn needle(needle: &str, question: &str, answer: &str) -> Needle {
    Needle { needle: needle.into(), question: question.into(), real_needle: answer.into() }
}

fn needles() -> Vec<Needle> {
    vec![
        needle("The lantern in the mill is kept lit by Orla.", "Who keeps the lantern in the mill lit?", "Orla"),
        needle("The boat was painted green in the spring.", "What colour was the boat painted?", "green"),
    ]
}

#[test]
fn the_runner_gives_each_test_the_record_of_a_fresh_run_and_reuses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 11, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
    let mut m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    m.model.set_prefill_chunk(16);
    let (needles, haystack) = (needles(), vec![TINY_TEXT.to_string()]);
    let inputs = SweepInputs { needles: &needles, haystack: &haystack, max_new_tokens: 5 };
    let plan = SweepPlan::new(&m.spec, &m.tokenizer, PromptFormat::Plain, &inputs, "150:200:2", 3).unwrap();
    assert_eq!(plan.keys.len(), 2 * 2 * 3);
    let decode_mask = HeadMask { heads: vec![HeadId::new(1, 0), HeadId::new(0, 2)], mode: MaskMode::Uniform, scope: MaskScope::Decode };
    let all_mask = HeadMask { scope: MaskScope::All, ..decode_mask.clone() };
    let masks = vec![None, Some(decode_mask), Some(all_mask)];
    // As a resumed run: the first test is already done unmasked.
    let done = plan.keys[0];
    let stop = m.eos_token_ids.clone();
    let mut runner =
        SweepRunner::new(&m.spec, &m.tokenizer, PromptFormat::Plain, inputs, &plan, masks.clone(), &stop, Probe::default(), |k, v| {
            !(v == 0 && *k == done)
        })
        .unwrap();
    assert_eq!((runner.pending(), runner.positions()), (3 * 12 - 1, 205));
    m.model.reserve(runner.positions()).unwrap();
    let mut seen = vec![];
    let mut reused_total = 0;
    while let Some(out) = block_on(runner.next(&mut m.model, |_| true)) {
        let out = out.unwrap();
        reused_total += out.reused;
        let key = plan.keys[out.index];
        assert_eq!(out.record.id, key.id());
        // The same test from scratch: fresh cache, no reuse.
        let fresh_test = NiahBuilder::new(&m.tokenizer, PromptFormat::Plain, &haystack)
            .unwrap()
            .build(&needles[key.needle_index], key.length, key.depth_percent)
            .unwrap();
        assert_eq!(fresh_test, out.test);
        let mut fresh = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
        fresh.model.set_mask(masks[out.variant].clone()).unwrap();
        let trace = greedy_decode(&mut fresh.model, &fresh_test.prompt_ids, 5, &stop, &Probe::default(), |_| true).unwrap();
        assert_eq!(
            (&out.trace.tokens, &out.trace.argmax_position),
            (&trace.tokens, &trace.argmax_position),
            "{} variant {}",
            key.id(),
            out.variant
        );
        let masked = masks[out.variant].as_ref().map(|h| h.heads.clone()).unwrap_or_default();
        let want = score_test(&m.tokenizer, m.spec.head_shape(), &key, &needles[key.needle_index], &fresh_test, &trace, masked).unwrap();
        assert_eq!((&out.record.answer, out.record.recall, &out.record.hits), (&want.answer, want.recall, &want.hits));
        assert_eq!(out.record.masked_heads, want.masked_heads);
        seen.push((out.index, out.variant));
    }
    assert_eq!(runner.pending(), 0);
    seen.sort();
    let mut want: Vec<(usize, usize)> =
        (0..plan.keys.len()).flat_map(|i| (0..3).map(move |v| (i, v))).filter(|&(i, v)| (i, v) != (0, 0)).collect();
    want.sort();
    assert_eq!(seen, want, "every test under every mask that needs it, once");
    // Decode-scope masks share each prompt's whole prefill; deeper-first order shares haystack.
    assert!(reused_total > plan.keys.len() * 150, "only {reused_total} positions reused");
}

#[test]
fn bad_sweeps_are_named_before_any_decode() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel::new(TinyArch::Llama).write(dir.path()).unwrap();
    let m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    let haystack = vec![TINY_TEXT.to_string()];
    let needles = needles();
    let plan = |needles: &[Needle], haystack: &[String], lengths: &str, max_new_tokens: usize| {
        let inputs = SweepInputs { needles, haystack, max_new_tokens };
        SweepPlan::new(&m.spec, &m.tokenizer, PromptFormat::Plain, &inputs, lengths, 2).unwrap_err().to_string()
    };
    assert!(plan(&[], &haystack, "150", 4).contains("no needle"));
    assert!(plan(&needles, &[" \n".into()], "150", 4).contains("haystack is empty"));
    assert!(plan(&needles, &haystack, "150", 0).contains("at least 1"));
    assert!(plan(&needles, &haystack, "60:", 4).contains("the context lengths `60:`"));
    let context = m.spec.max_position_embeddings;
    assert!(plan(&needles, &haystack, &context.to_string(), 4).contains("max_position_embeddings"));
    let mut wrong = needles.clone();
    wrong[1].real_needle = "purple".into();
    assert!(plan(&wrong, &haystack, "150", 4).starts_with("needle 2"));
    // A needle longer than the shortest context is named.
    let long = vec![needle(&"The mill is old. ".repeat(60), "How old is the mill?", "old")];
    assert!(plan(&long, &haystack, "150:200:2", 4).contains("needle 1"));
    // A mask outside the model is refused by the runner.
    let inputs = SweepInputs { needles: &needles, haystack: &haystack, max_new_tokens: 4 };
    let p = SweepPlan::new(&m.spec, &m.tokenizer, PromptFormat::Plain, &inputs, "150", 1).unwrap();
    let bad = HeadMask { heads: vec![HeadId::new(99, 0)], mode: MaskMode::Zero, scope: MaskScope::Decode };
    let r = SweepRunner::new(&m.spec, &m.tokenizer, PromptFormat::Plain, inputs, &p, vec![Some(bad)], &[], Probe::default(), |_, _| true);
    assert!(matches!(r.err(), Some(EngineError::Input(_))));
    // A test that fails mid-sweep is named in its error.
    let failed = TestError { key: p.keys[0], error: EngineError::Invalid("the GPU was lost".into()) };
    assert_eq!(failed.to_string(), format!("test {}: the GPU was lost", p.keys[0].id()));
}

/// The soft score's attention mass: the runner's records hold, per head, the sum over the first |span|
/// steps of what core's `top_k_mass_in_span` gives on that head's full attention row, as a plain decode
/// that asks for every head's row sees it; the argmax, tokens and hits stay those of a run without it.
#[test]
fn measured_span_mass_sums_each_heads_top_k_weight_in_the_span() {
    use headscope_core::score::top_k_mass_in_span;
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 5, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
    let mut m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    let (needles, haystack) = (needles(), vec![TINY_TEXT.to_string()]);
    let inputs = SweepInputs { needles: &needles, haystack: &haystack, max_new_tokens: 6 };
    let plan = SweepPlan::new(&m.spec, &m.tokenizer, PromptFormat::Plain, &inputs, "160", 2).unwrap();
    let stop = m.eos_token_ids.clone();
    let shape = m.spec.head_shape();
    let mut runner =
        SweepRunner::new(&m.spec, &m.tokenizer, PromptFormat::Plain, inputs, &plan, vec![None], &stop, Probe::default(), |_, _| true)
            .unwrap()
            .measuring_span_mass();
    m.model.reserve(runner.positions()).unwrap();
    let mut checked = 0;
    while let Some(out) = block_on(runner.next(&mut m.model, |_| true)) {
        let out = out.unwrap();
        let span = out.test.answer_tokens.clone();
        let mut fresh = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
        let every = Probe { rows: shape.iter().collect(), ..Probe::default() };
        let trace = greedy_decode(&mut fresh.model, &out.test.prompt_ids, 6, &stop, &every, |_| true).unwrap();
        assert_eq!((&out.trace.tokens, &out.trace.argmax_position), (&trace.tokens, &trace.argmax_position));
        assert!(out.trace.attention_rows.iter().all(|r| r.is_empty()), "rows asked for the mass are not kept");
        let counted = span.len().min(trace.tokens.len());
        assert_eq!(out.trace.span_mass.len(), counted);
        let mass = out.record.soft_mass.as_ref().expect("a measured run records the mass");
        for (i, head) in shape.iter().enumerate() {
            let want: f64 = trace.attention_rows[..counted].iter().map(|rows| top_k_mass_in_span(&rows[i].weights, span.clone())).sum();
            let got = mass.get(&head).copied().unwrap_or(0.0);
            assert!((got - want).abs() < 1e-9, "{} {head}: {got} vs {want}", out.record.id);
            assert!(want <= counted as f64 + 1e-6, "weights of one row sum to at most 1");
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
}

/// The qr score's passes: the runner (prefix reuse across tests, the null pass reusing the real one's
/// prefix, the cache truncated after) gives each record the scores that fresh models give when each
/// query is fed from a fresh cache; the decoded records are those of a run without the passes.
#[test]
fn query_focus_passes_equal_fresh_runs_and_leave_the_decodes_alone() {
    use headscope_core::score::query_focus_score;
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 9, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
    let mut m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    let (needles, haystack) = (needles(), vec![TINY_TEXT.to_string()]);
    let inputs = SweepInputs { needles: &needles, haystack: &haystack, max_new_tokens: 4 };
    let plan = SweepPlan::new(&m.spec, &m.tokenizer, PromptFormat::Plain, &inputs, "150:190:2", 2).unwrap();
    let stop = m.eos_token_ids.clone();
    let shape = m.spec.head_shape();
    let run = |m: &mut LoadedModel, qr: bool| {
        let runner =
            SweepRunner::new(&m.spec, &m.tokenizer, PromptFormat::Plain, inputs, &plan, vec![None], &stop, Probe::default(), |_, _| true)
                .unwrap();
        let mut runner = if qr { runner.measuring_query_focus() } else { runner };
        m.model.reserve(runner.positions()).unwrap();
        let mut outs = vec![];
        while let Some(out) = block_on(runner.next(&mut m.model, |_| true)) {
            outs.push(out.unwrap());
        }
        outs
    };
    let plain = run(&mut m, false);
    let measured = run(&mut m, true);
    assert_eq!(measured.len(), 8);
    let builder = NiahBuilder::new(&m.tokenizer, PromptFormat::Plain, &haystack).unwrap();
    let every = Probe { rows: shape.iter().collect(), ..Probe::default() };
    for (a, b) in plain.iter().zip(&measured) {
        assert_eq!((&a.record.generated_ids, &a.record.hits), (&b.record.generated_ids, &b.record.hits));
        assert!(a.record.qr.is_none());
        let needle = &needles[plan.keys[b.index].needle_index];
        let null = builder.null_query(&b.test, needle).unwrap();
        // Per query, a fresh model: prefill the shared prefix, feed the query's tokens one by one.
        let mean_rows = |ids: &[u32]| {
            let mut fresh = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
            fresh.model.prefill(&ids[..null.query_start]).unwrap();
            let mut sum = vec![vec![0.0f64; b.test.needle_tokens.len()]; shape.count()];
            for &id in &ids[null.query_start..] {
                let step = fresh.model.step(id, &every).unwrap();
                for (h, row) in step.attention_rows.iter().enumerate() {
                    for (k, j) in b.test.needle_tokens.clone().enumerate() {
                        sum[h][k] += row.weights[j] as f64 / (ids.len() - null.query_start) as f64;
                    }
                }
            }
            sum
        };
        let (real, nul) = (mean_rows(&b.test.prompt_ids), mean_rows(&null.null_ids));
        let qr = b.record.qr.as_ref().expect("measured");
        for (h, head) in shape.iter().enumerate() {
            let want = query_focus_score(&real[h].iter().zip(&nul[h]).map(|(x, y)| x - y).collect::<Vec<_>>());
            let got = qr.get(&head).copied().unwrap_or(0.0);
            assert!((got - want).abs() < 1e-6, "{} {head}: {got} vs {want}", b.record.id);
        }
        assert!(qr.values().any(|v| *v != 0.0));
    }
}
