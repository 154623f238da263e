//! RazorAttention's data-free scores over the candle engine: the one pass (prefill up to the first
//! repeat, then steps) gives each head the mean weight on the echo and induction positions that a
//! token-by-token run of a fresh model shows in its full attention rows.

use headscope_core::score::RepeatedTokens;
use headscope_engine::repeated::induction_and_echo;
use headscope_engine::{block_on, Probe};
use headscope_model::testkit::{TinyArch, TinyModel};
use headscope_model::{LoadOptions, LoadedModel};

#[test]
fn induction_and_echo_are_the_mean_weights_on_earlier_occurrences() {
    let dir = tempfile::tempdir().unwrap();
    TinyModel { seed: 3, ..TinyModel::new(TinyArch::Llama) }.write(dir.path()).unwrap();
    let mut m = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    let seq = RepeatedTokens::new(m.spec.vocab_size, 9, 4, Some(1)).unwrap();
    let (induction, echo) = block_on(induction_and_echo(&mut m.model, &seq)).unwrap();
    assert_eq!(m.model.position(), 0, "the cache is emptied after the pass");

    let mut fresh = LoadedModel::load(dir.path(), &LoadOptions::default()).unwrap();
    let shape = fresh.spec.head_shape();
    let every = Probe { rows: shape.iter().collect(), ..Probe::default() };
    let (mut want_ind, mut want_echo) = (vec![0.0f64; shape.count()], vec![0.0f64; shape.count()]);
    fresh.model.prefill(&seq.ids[..1]).unwrap();
    let scored = seq.ids.len() - 10; // BOS and the first block
    for p in 1..seq.ids.len() {
        let step = fresh.model.step(seq.ids[p], &every).unwrap();
        if p < 10 {
            continue;
        }
        for (h, row) in step.attention_rows.iter().enumerate() {
            // Earlier copies of the token at p sit 9, 18, ... positions back, never before position 1.
            for back in (9..p).step_by(9).filter(|b| p - b >= 1) {
                want_echo[h] += row.weights[p - back] as f64 / scored as f64;
                want_ind[h] += row.weights[p - back + 1] as f64 / scored as f64;
            }
        }
    }
    for h in 0..shape.count() {
        assert!((induction[h] - want_ind[h]).abs() < 1e-5, "head {h}: induction {} vs {}", induction[h], want_ind[h]);
        assert!((echo[h] - want_echo[h]).abs() < 1e-5, "head {h}: echo {} vs {}", echo[h], want_echo[h]);
        assert!(induction[h] > 0.0 && induction[h] < 1.0 && echo[h] > 0.0 && echo[h] < 1.0);
    }
}
