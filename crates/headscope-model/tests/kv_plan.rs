//! Head-level KV plans: a windowed KV head's query heads see exactly the sink positions and the last
//! `window` positions, whole heads see everything; a window longer than the context changes nothing;
//! chunked prefills and decode steps agree; the windowed heads' memory is really not allocated; and a
//! planned model goes back only to where its last prefill ended.

use headscope_core::HeadId;
use headscope_engine::KvPlan;
use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{HeadMask, LoadOptions, LoadedModel, MaskMode, MaskScope, Probe};

fn load() -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 9, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
    let m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    (dir, m)
}

fn ids(n: usize, seed: u64) -> Vec<u32> {
    let mut r = headscope_core::rng::SplitMix64::new(seed);
    (0..n).map(|_| 3 + r.below(300) as u32).collect()
}

/// Logits and argmax positions of `steps` decode steps fed `tokens` after prefilling `prompt`.
fn run(m: &mut LoadedModel, prompt: &[u32], tokens: &[u32]) -> Vec<(Vec<f32>, Vec<u32>)> {
    m.model.reset();
    m.model.prefill(prompt).unwrap();
    tokens
        .iter()
        .map(|&t| {
            let out = m.model.step(t, &Probe::default()).unwrap();
            (out.logits.to_vec1::<f32>().unwrap(), out.argmax_position)
        })
        .collect()
}

fn assert_same(a: &[(Vec<f32>, Vec<u32>)], b: &[(Vec<f32>, Vec<u32>)], what: &str) {
    for (s, ((la, aa), (lb, ab))) in a.iter().zip(b).enumerate() {
        let d = la.iter().zip(lb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(d < 1e-4, "{what}: step {s}: logits differ by {d}");
        assert_eq!(aa, ab, "{what}: step {s}: argmax positions");
    }
}

#[test]
fn windowed_heads_see_exactly_the_sinks_and_the_window() {
    let (_d, mut m) = load();
    let spec = m.model.spec().clone(); // 2 layers, 4 query heads over 2 KV heads
                                       // KV head 0 of layer 0 whole (query heads 0 and 1), every other KV head windowed.
    let plan = KvPlan::keeping_heads(&spec, &[HeadId::new(0, 1)], 2, 5).unwrap();
    m.model.set_kv_plan(Some(plan)).unwrap();
    let every: Vec<HeadId> = spec.head_shape().iter().collect();
    let prompt = ids(40, 1);
    m.model.set_prefill_chunk(7);
    m.model.prefill(&prompt[..39]).unwrap();
    let mut next = prompt[39];
    for step in 0..6 {
        let pos = 39 + step;
        let out = m.model.step(next, &Probe { rows: every.clone(), ..Probe::default() }).unwrap();
        next = out.greedy_token().unwrap();
        for row in &out.attention_rows {
            assert_eq!(row.weights.len(), pos + 1);
            let whole = row.head.layer == 0 && row.head.head < 2;
            let visible = |p: usize| whole || p < 2 || pos - p < 5;
            let seen: f32 = row.weights.iter().enumerate().filter(|(p, _)| visible(*p)).map(|(_, w)| w).sum();
            assert!((seen - 1.0).abs() < 1e-5, "{}: the visible positions hold all the weight ({seen})", row.head);
            for (p, w) in row.weights.iter().enumerate() {
                assert!(visible(p) || *w == 0.0, "{} at step {step} attends to position {p}, outside its sinks and window", row.head);
            }
            if whole {
                assert!(row.weights[2..pos - 4].iter().any(|w| *w > 0.0), "{}: a whole head sees the middle", row.head);
            }
            let argmax = out.argmax_position[spec.head_shape().index(row.head).unwrap()] as usize;
            assert!(visible(argmax), "{}: its argmax {argmax} is a position it sees", row.head);
        }
    }
}

#[test]
fn a_window_longer_than_the_context_changes_nothing_and_chunks_agree_with_steps() {
    let (_d, mut m) = load();
    let spec = m.model.spec().clone();
    let prompt = ids(50, 2);
    let tokens = ids(6, 3);
    let plain = run(&mut m, &prompt, &tokens);
    m.model.set_kv_plan(Some(KvPlan::all_windowed(&spec, 4, 100).unwrap())).unwrap();
    assert_same(&run(&mut m, &prompt, &tokens), &plain, "a window of 100 over 56 positions");

    // A real window: a chunked prefill (chunks of 7 cross the ring's wrap) equals feeding every
    // position as a decode step.
    m.model.set_kv_plan(Some(KvPlan::keeping_heads(&spec, &[HeadId::new(1, 0)], 3, 8).unwrap())).unwrap();
    m.model.set_prefill_chunk(7);
    let chunked = run(&mut m, &prompt, &tokens);
    m.model.reset();
    m.model.step(prompt[0], &Probe::default()).unwrap();
    for &t in &prompt[1..] {
        m.model.step(t, &Probe::default()).unwrap();
    }
    let stepped: Vec<_> = tokens
        .iter()
        .map(|&t| {
            let out = m.model.step(t, &Probe::default()).unwrap();
            (out.logits.to_vec1::<f32>().unwrap(), out.argmax_position)
        })
        .collect();
    assert_same(&chunked, &stepped, "chunked prefill vs steps");
    let d = chunked[0].0.iter().zip(&plain[0].0).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(d > 1e-3, "a window of 8 over 50 positions changes the logits");
}

#[test]
fn windowed_heads_allocate_only_their_window_and_rewind_only_to_the_prefill() {
    let (_d, mut m) = load();
    let spec = m.model.spec().clone();
    m.model.reserve(1000).unwrap();
    let whole = m.model.kv_cache_bytes();
    m.model.set_kv_plan(Some(KvPlan::all_windowed(&spec, 4, 28).unwrap())).unwrap();
    m.model.reserve(1000).unwrap();
    let windowed = m.model.kv_cache_bytes();
    // 2 layers x 2 KV heads x (k, v) x 16 dims x 4 bytes: 1000 positions each, or 32.
    assert_eq!(whole, 2 * 2 * 2 * 16 * 4 * 1000);
    assert_eq!(windowed, 2 * 2 * 2 * 16 * 4 * 32);

    // One prefill, two decodes (the second masked); elsewhere the rings cannot go.
    let prompt = ids(60, 4);
    let tokens = ids(4, 5);
    let first = run(&mut m, &prompt, &tokens);
    let mask = HeadMask { heads: vec![HeadId::new(0, 0)], mode: MaskMode::Uniform, scope: MaskScope::Decode };
    m.model.set_mask(Some(mask.clone())).unwrap();
    let masked = run(&mut m, &prompt, &tokens);
    m.model.set_mask(None).unwrap();
    m.model.reset();
    m.model.prefill(&prompt).unwrap();
    let end = m.model.position();
    let again: Vec<_> = tokens
        .iter()
        .map(|&t| {
            let out = m.model.step(t, &Probe::default()).unwrap();
            (out.logits.to_vec1::<f32>().unwrap(), out.argmax_position)
        })
        .collect();
    assert_same(&again, &first, "first decode");
    m.model.truncate(end).unwrap();
    m.model.set_mask(Some(mask)).unwrap();
    let second: Vec<_> = tokens
        .iter()
        .map(|&t| {
            let out = m.model.step(t, &Probe::default()).unwrap();
            (out.logits.to_vec1::<f32>().unwrap(), out.argmax_position)
        })
        .collect();
    assert_same(&second, &masked, "second decode, masked, after going back to the prefill's end");
    let err = m.model.truncate(30).unwrap_err().to_string();
    assert!(err.contains("ring") && err.contains(&format!("({end})")), "{err}");
    assert_eq!(m.model.reusable_prefix(&prompt[..40]), 0, "no ring state at 40");

    // Sliding-window models keep their own windows.
    let dir = tempfile::tempdir().unwrap();
    TinyModel::new(TinyArch::Mistral(Some(16))).write(dir.path()).unwrap();
    let mut mistral = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    let s = mistral.model.spec().clone();
    let err = mistral.model.set_kv_plan(Some(KvPlan::all_windowed(&s, 4, 8).unwrap())).unwrap_err().to_string();
    assert!(err.contains("sliding-window"), "{err}");
}
