//! DeCoRe decoding: a capped contrast weight of 0 is greedy decoding; each step's token is the argmax of
//! (1 + a) base - a masked with a the base distribution's entropy, recomputed here by hand from two
//! independent decodes; a fork's cache is its own.

use headscope_core::HeadId;
use headscope_model::generate::decore_decode;
use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{greedy_decode, HeadMask, LoadOptions, LoadedModel, MaskMode, MaskScope, Probe};

fn load() -> (tempfile::TempDir, LoadedModel) {
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 12, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
    let m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    (dir, m)
}

fn prompt() -> Vec<u32> {
    let mut r = headscope_core::rng::SplitMix64::new(3);
    (0..40).map(|_| 3 + r.below(300) as u32).collect()
}

#[test]
fn a_zero_contrast_weight_is_greedy_decoding() {
    let (_d, mut m) = load();
    let p = prompt();
    m.model.reset();
    let greedy = greedy_decode(&mut m.model, &p, 8, &[], &Probe::default(), |_| true).unwrap();
    m.model.reset();
    let decore = decore_decode(&mut m.model, &[HeadId::new(1, 2)], MaskMode::Uniform, &p, 8, &[], Some(0.0)).unwrap();
    assert_eq!(decore.trace.tokens, greedy.tokens);
    assert_eq!(decore.trace.argmax_position, greedy.argmax_position);
    assert!(decore.alphas.iter().all(|a| *a == 0.0));
}

#[test]
fn each_token_is_the_argmax_of_the_entropy_weighted_contrast() {
    let (_d, mut m) = load();
    let p = prompt();
    let heads = vec![HeadId::new(0, 1), HeadId::new(1, 3)];
    m.model.reset();
    let decore = decore_decode(&mut m.model, &heads, MaskMode::Uniform, &p, 6, &[], None).unwrap();
    // The same by hand: two models fed DeCoRe's tokens, one masked at decode steps.
    m.model.reset();
    m.model.prefill(&p[..p.len() - 1]).unwrap();
    let mut masked = m.model.fork().unwrap();
    masked.set_mask(Some(HeadMask { heads, mode: MaskMode::Uniform, scope: MaskScope::Decode })).unwrap();
    let mut input = *p.last().unwrap();
    for (step, &token) in decore.trace.tokens.iter().enumerate() {
        let base = m.model.step(input, &Probe::default()).unwrap().logits.to_vec1::<f32>().unwrap();
        let other = masked.step(input, &Probe::default()).unwrap().logits.to_vec1::<f32>().unwrap();
        let max = base.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let z: f64 = base.iter().map(|&l| (l as f64 - max).exp()).sum();
        let entropy: f64 = -base.iter().map(|&l| (l as f64 - max).exp() / z).filter(|&q| q > 0.0).map(|q| q * q.ln()).sum::<f64>();
        assert!((decore.alphas[step] - entropy).abs() < 1e-4, "step {step}: alpha {} vs entropy {entropy}", decore.alphas[step]);
        let contrast: Vec<f64> = base.iter().zip(&other).map(|(&b, &o)| (1.0 + entropy) * b as f64 - entropy * o as f64).collect();
        let best = contrast.iter().enumerate().fold(0, |b, (i, &v)| if v > contrast[b] { i } else { b });
        assert_eq!(token as usize, best, "step {step}");
        input = token;
    }
    assert!(decore.alphas.iter().all(|a| *a > 0.0), "a random model's next-token distribution has entropy");
}

#[test]
fn a_fork_keeps_a_cache_of_its_own() {
    let (_d, mut m) = load();
    let p = prompt();
    // Room for every position up front: no step reallocates (and so unshares) the cache.
    m.model.reserve(64).unwrap();
    m.model.prefill(&p[..30]).unwrap();
    let mut fork = m.model.fork().unwrap();
    // The model writes position 30, then the fork writes its own token there: the model's next step
    // reads position 30 and must find its own keys and values.
    m.model.step(p[30], &Probe::default()).unwrap();
    fork.step(p[35], &Probe::default()).unwrap();
    let after = m.model.step(p[31], &Probe::default()).unwrap().logits.to_vec1::<f32>().unwrap();
    m.model.reset();
    m.model.prefill(&p[..31]).unwrap();
    let fresh = m.model.step(p[31], &Probe::default()).unwrap().logits.to_vec1::<f32>().unwrap();
    let d = after.iter().zip(&fresh).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d < 1e-5, "the fork's step changed the model's cache: logits differ by {d}");
}
