//! Prefix reuse: a prefill that keeps the cached positions a new prompt shares with what the cache holds
//! computes what a fresh prefill computes, and the bookkeeping of which ids the cache holds (under which
//! mask) stays exact through decode steps, masks, truncation, resets and memory probes.

use headscope_core::HeadId;
use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{greedy_decode, greedy_decode_from, DecodeTrace, HeadMask, LoadOptions, LoadedModel, MaskMode, MaskScope, Probe};

fn load(arch: TinyArch) -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 5, ..TinyModel::new(arch) }.write(dir.path()).unwrap();
    let m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    (dir, m)
}

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut r = headscope_core::rng::SplitMix64::new(seed);
    (0..n).map(|_| 3 + r.below(300) as u32).collect()
}

/// `head` followed by `tail`.
fn join(head: &[u32], tail: &[u32]) -> Vec<u32> {
    head.iter().chain(tail).copied().collect()
}

/// Decodes `steps` tokens after `prompt` from a fresh cache, keeping every step's logits.
fn fresh(m: &mut LoadedModel, prompt: &[u32], steps: usize) -> (DecodeTrace, Vec<Vec<f32>>) {
    m.model.reset();
    let (&last, context) = prompt.split_last().unwrap();
    m.model.prefill(context).unwrap();
    decode(m, last, steps)
}

/// Decodes `steps` tokens from the model's position, feeding `last` first, keeping every step's logits.
fn decode(m: &mut LoadedModel, last: u32, steps: usize) -> (DecodeTrace, Vec<Vec<f32>>) {
    let mut trace = DecodeTrace::default();
    let mut logits = Vec::new();
    let mut input = last;
    for _ in 0..steps {
        let out = m.model.step(input, &Probe::default()).unwrap();
        input = out.greedy_token().unwrap();
        logits.push(out.logits.to_vec1::<f32>().unwrap());
        trace.tokens.push(input);
        trace.argmax_position.push(out.argmax_position);
    }
    (trace, logits)
}

/// The same tokens and argmax positions, and logits within 1e-4.
fn assert_same(got: &(DecodeTrace, Vec<Vec<f32>>), want: &(DecodeTrace, Vec<Vec<f32>>), what: &str) {
    assert_eq!(got.0.tokens, want.0.tokens, "{what}: tokens");
    assert_eq!(got.0.argmax_position, want.0.argmax_position, "{what}: argmax positions");
    for (a, b) in got.1.iter().zip(&want.1) {
        let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d < 1e-4, "{what}: logits differ by {d}");
    }
}

/// Two prompts that share their first 30 tokens (as two NIAH tests at different depths share the
/// haystack before the shallower needle): the second, prefilled after the first with reuse, decodes
/// exactly as after a fresh prefill, and only its unshared part is computed.
#[test]
fn a_prompt_prefilled_after_a_shared_prefix_decodes_as_after_a_fresh_prefill() {
    for arch in [TinyArch::Llama, TinyArch::Mistral(Some(9))] {
        let (_d, mut m) = load(arch);
        let shared = ids(30, 1);
        let (a, b) = (join(&shared, &ids(14, 2)), join(&shared, &ids(11, 3)));
        let want = fresh(&mut m, &b, 6);
        // Chunks of 8: the reused part ends mid-chunk, so the two prefills chunk differently.
        m.model.set_prefill_chunk(8);
        m.model.reset();
        assert_eq!(m.model.prefill_reusing(&a[..a.len() - 1]).unwrap(), 0, "nothing cached yet");
        assert_eq!(m.model.cached_ids(), &a[..a.len() - 1]);
        let before = m.model.position();
        let reused = m.model.prefill_reusing(&b[..b.len() - 1]).unwrap();
        assert!(before > 30);
        assert_eq!(reused, 30, "{arch:?}: exactly the shared prefix is reused");
        assert_eq!(m.model.position(), b.len() - 1);
        assert_eq!(m.model.cached_ids(), &b[..b.len() - 1]);
        let got = decode(&mut m, *b.last().unwrap(), 6);
        assert_same(&got, &want, &format!("{arch:?}"));

        // The same prompt again reuses all of it and computes nothing; a prefix of it is reused whole.
        assert_eq!(m.model.prefill_reusing(&b[..b.len() - 1]).unwrap(), b.len() - 1);
        assert_eq!(m.model.prefill_reusing(&b[..12]).unwrap(), 12, "never more than the ids given");
        assert_eq!(m.model.position(), 12);
        // Nothing shared: a full prefill.
        let c = ids(20, 4);
        assert_eq!(m.model.prefill_reusing(&c).unwrap(), 0);
        assert_eq!((m.model.position(), m.model.cached_ids()), (20, c.as_slice()));
    }
}

/// Decode steps append their ids: a prompt that continues a decoded sequence reuses the prompt and the
/// steps' positions (the last generated token was never fed, so it is not in the cache).
#[test]
fn reuse_after_decode_steps_counts_the_fed_tokens() {
    let (_d, mut m) = load(TinyArch::Qwen2);
    let prompt = ids(25, 5);
    let trace = greedy_decode(&mut m.model, &prompt, 5, &[], &Probe::default(), |_| true).unwrap();
    let fed = join(&prompt, &trace.tokens[..4]);
    assert_eq!(m.model.cached_ids(), fed.as_slice(), "prompt[:-1], the prompt's last token and 4 fed tokens");
    assert_eq!(m.model.position(), fed.len());

    // A continuation of everything decoded, plus new tokens.
    let next = join(&join(&prompt, &trace.tokens), &ids(6, 6));
    let want = fresh(&mut m, &next, 4);
    greedy_decode(&mut m.model, &prompt, 5, &[], &Probe::default(), |_| true).unwrap();
    let reused = m.model.prefill_reusing(&next[..next.len() - 1]).unwrap();
    assert_eq!(reused, fed.len());
    let got = decode(&mut m, *next.last().unwrap(), 4);
    assert_same(&got, &want, "continuation of a decode");

    // A prompt that leaves the decoded path after 27 tokens reuses 27.
    let mut branch = next[..27].to_vec();
    branch.push(if next[27] == 3 { 4 } else { 3 });
    branch.extend(ids(7, 7));
    let want = fresh(&mut m, &branch, 3);
    greedy_decode(&mut m.model, &prompt, 5, &[], &Probe::default(), |_| true).unwrap();
    assert_eq!(m.model.prefill_reusing(&branch[..branch.len() - 1]).unwrap(), 27);
    assert_same(&decode(&mut m, *branch.last().unwrap(), 3), &want, "branch off a decode");
}

/// A mask of scope `all` changes the prefill: its cache is not reused without it, nor another mask's
/// for it. Decode-scope masks (and none) leave the prefill alone, so they share it; but a decode step
/// taken under a decode-scope mask is not a prefill's, and is not reused.
#[test]
fn masks_allow_reuse_exactly_where_they_compute_the_same() {
    let (_d, mut m) = load(TinyArch::Llama);
    let shared = ids(28, 8);
    let (a, b) = (join(&shared, &ids(9, 9)), join(&shared, &ids(7, 10)));
    let heads = vec![HeadId::new(0, 1), HeadId::new(1, 2)];
    let all = |heads: Vec<HeadId>, mode| Some(HeadMask { heads, mode, scope: MaskScope::All });
    let decode_scope = Some(HeadMask { heads: heads.clone(), mode: MaskMode::Uniform, scope: MaskScope::Decode });
    let all_a = all(heads.clone(), MaskMode::Uniform);

    // Under one scope-all mask, reuse is exact.
    m.model.set_mask(all_a.clone()).unwrap();
    let want = fresh(&mut m, &b, 5);
    m.model.reset();
    m.model.prefill_reusing(&a[..a.len() - 1]).unwrap();
    assert_eq!(m.model.prefill_reusing(&b[..b.len() - 1]).unwrap(), 28);
    assert_same(&decode(&mut m, *b.last().unwrap(), 5), &want, "scope all, same mask");

    // No mask, a decode-scope mask, other heads or another mode: nothing of the masked cache is reused.
    let others = [None, decode_scope.clone(), all(vec![HeadId::new(0, 1)], MaskMode::Uniform), all(heads.clone(), MaskMode::Zero)];
    for other in &others {
        m.model.set_mask(all_a.clone()).unwrap();
        m.model.prefill_reusing(&a[..a.len() - 1]).unwrap();
        m.model.set_mask(other.clone()).unwrap();
        assert_eq!(m.model.prefill_reusing(&b[..b.len() - 1]).unwrap(), 0, "{other:?} after the scope-all mask");
    }
    // ... and the other way round: an unmasked cache is not reused under a scope-all mask.
    m.model.set_mask(None).unwrap();
    m.model.prefill_reusing(&a[..a.len() - 1]).unwrap();
    m.model.set_mask(all_a.clone()).unwrap();
    assert_eq!(m.model.prefill_reusing(&b[..b.len() - 1]).unwrap(), 0);
    // The same heads listed in another order (and repeated) compute the same: reuse.
    m.model.set_mask(all(vec![HeadId::new(1, 2), HeadId::new(0, 1), HeadId::new(1, 2)], MaskMode::Uniform)).unwrap();
    assert_eq!(m.model.prefill_reusing(&b[..b.len() - 1]).unwrap(), b.len() - 1);

    // Decode scope: the unmasked prefill is shared, and what a masked decode wrote is not.
    m.model.set_mask(decode_scope.clone()).unwrap();
    let want = fresh(&mut m, &b, 5);
    m.model.set_mask(None).unwrap();
    m.model.reset();
    m.model.prefill_reusing(&a[..a.len() - 1]).unwrap();
    m.model.set_mask(decode_scope.clone()).unwrap();
    assert_eq!(m.model.prefill_reusing(&b[..b.len() - 1]).unwrap(), 28);
    assert_same(&decode(&mut m, *b.last().unwrap(), 5), &want, "decode scope after an unmasked prefill");
    assert_eq!(m.model.cached_ids(), &b[..b.len() - 1], "masked decode steps are not a prefill's positions");
    let continued = join(&b, &want.0.tokens);
    m.model.set_mask(None).unwrap();
    assert_eq!(m.model.prefill_reusing(&continued).unwrap(), b.len() - 1);
}

/// Everything that moves the position keeps the record of the cache right: truncate keeps what is
/// before the new position, reset, reserve and release forget all, and a memory probe's jump (content
/// unknown) forgets all too.
#[test]
fn truncation_resets_and_memory_probes_keep_the_record_exact() {
    let (_d, mut m) = load(TinyArch::Llama);
    let prompt = ids(30, 11);
    m.model.prefill(&prompt).unwrap();
    assert_eq!(m.model.cached_ids(), prompt.as_slice());
    m.model.truncate(17).unwrap();
    assert_eq!(m.model.cached_ids(), &prompt[..17]);
    assert_eq!(m.model.prefill_reusing(&prompt).unwrap(), 17);

    // One prefill serves several decodes (the sweep's decode-scope masks), then the next prompt.
    let trace = greedy_decode_from(&mut m.model, 5, 3, &[], &Probe::default(), |_| true).unwrap();
    assert_eq!(m.model.cached_ids(), join(&join(&prompt, &[5]), &trace.tokens[..2]).as_slice());
    assert_eq!(m.model.prefill_reusing(&prompt).unwrap(), 30);

    m.model.reset();
    assert!(m.model.cached_ids().is_empty());
    assert_eq!(m.model.prefill_reusing(&prompt).unwrap(), 0);
    m.model.reserve(64).unwrap();
    assert!(m.model.cached_ids().is_empty() && m.model.position() == 0);
    m.model.prefill(&prompt).unwrap();
    // A memory probe: a jump without computing leaves the cache's content unknown, even before the jump.
    m.model.pretend_filled(20).unwrap();
    m.model.prefill(&prompt[20..]).unwrap();
    assert!(m.model.cached_ids().is_empty());
    assert_eq!(m.model.prefill_reusing(&prompt).unwrap(), 0);
    assert_eq!(m.model.cached_ids(), prompt.as_slice());
    m.model.release_cache();
    assert!(m.model.cached_ids().is_empty());
    assert_eq!(m.model.prefill_reusing(&prompt).unwrap(), 0);
    // Bad ids are refused before the cache is touched.
    assert!(m.model.prefill_reusing(&[prompt[0], 100_000]).is_err());
    assert_eq!(m.model.cached_ids(), prompt.as_slice());
}

/// LongRoPE (the tiny Phi-3 switches to its long factors past 256 tokens) rotates a whole prefill with
/// the factors of the length it reaches: a cache filled by a short prompt is not reused by a prompt
/// past the switch (its positions were rotated otherwise), and is reused by one that stays short.
#[test]
fn longrope_prompts_on_either_side_of_the_switch_share_nothing() {
    let (_d, mut m) = load(TinyArch::Phi3);
    let shared = ids(200, 7);
    let long_prompt = join(&shared, &ids(100, 8));
    let short_prompt = join(&shared, &ids(40, 9));
    let want_long = fresh(&mut m, &long_prompt, 4);
    let want_short = fresh(&mut m, &short_prompt, 4);

    // The cache holds the short prompt (rotated with the short factors).
    m.model.reset();
    m.model.prefill(&short_prompt[..short_prompt.len() - 1]).unwrap();
    assert_eq!(m.model.reusable_prefix(&long_prompt[..long_prompt.len() - 1]), 0, "past the switch nothing is reusable");
    assert_eq!(m.model.prefill_reusing(&long_prompt[..long_prompt.len() - 1]).unwrap(), 0);
    assert_same(&decode(&mut m, *long_prompt.last().unwrap(), 4), &want_long, "long prompt after a short one");

    m.model.reset();
    m.model.prefill(&shared[..150]).unwrap();
    assert_eq!(m.model.prefill_reusing(&short_prompt[..short_prompt.len() - 1]).unwrap(), 150, "both short: the shared part is reused");
    assert_same(&decode(&mut m, *short_prompt.last().unwrap(), 4), &want_short, "short prompt after a short one");
}

/// A Jamba's Mamba layers keep a state, not a cache: it goes back only to where its last prefill ended
/// (several decodes under different masks from one prefilled prompt, as the sweep runner does) or to 0;
/// a prompt sharing only part of what was prefilled is prefilled whole. Every route decodes as a fresh
/// prefill does.
#[test]
fn jamba_rewinds_only_to_its_last_prefill_and_otherwise_starts_over() {
    let (_d, mut m) = load(TinyArch::Jamba);
    let shared = ids(30, 1);
    let (a, b) = (join(&shared, &ids(14, 2)), join(&shared, &ids(11, 3)));
    let want_b = fresh(&mut m, &b, 6);
    let mask = HeadMask { heads: vec![HeadId::new(0, 1), HeadId::new(1, 2)], mode: MaskMode::Uniform, scope: MaskScope::Decode };
    m.model.set_mask(Some(mask.clone())).unwrap();
    let want_b_masked = fresh(&mut m, &b, 6);
    m.model.set_mask(None).unwrap();

    // One prefill, two decodes: the second starts from the state the prefill left.
    m.model.set_prefill_chunk(8);
    m.model.reset();
    m.model.prefill(&b[..b.len() - 1]).unwrap();
    let end = m.model.position();
    assert_same(&decode(&mut m, *b.last().unwrap(), 6), &want_b, "first decode");
    m.model.truncate(end).unwrap();
    m.model.set_mask(Some(mask)).unwrap();
    assert_same(&decode(&mut m, *b.last().unwrap(), 6), &want_b_masked, "second decode, masked, after truncate");
    m.model.set_mask(None).unwrap();

    // Anywhere else the state cannot go, and says so.
    let err = m.model.truncate(20).unwrap_err().to_string();
    assert!(err.contains("Mamba") && err.contains(&format!("({end})")), "{err}");

    // A prompt that shares 30 tokens with the cached one: no state at 30, so it is prefilled whole.
    m.model.reset();
    m.model.prefill(&a[..a.len() - 1]).unwrap();
    assert_eq!(m.model.reusable_prefix(&b[..b.len() - 1]), 0);
    assert_eq!(m.model.prefill_reusing(&b[..b.len() - 1]).unwrap(), 0);
    assert_same(&decode(&mut m, *b.last().unwrap(), 6), &want_b, "after a full prefill");
    // The same prompt again, after its decode: the prefill's end is reused, nothing recomputed.
    assert_eq!(m.model.prefill_reusing(&b[..b.len() - 1]).unwrap(), b.len() - 1);
    assert_same(&decode(&mut m, *b.last().unwrap(), 6), &want_b, "after reusing the whole prompt");
}
