//! The data-free head scores of RazorAttention ([`headscope_core::ScoreKind::Induction`] and
//! [`headscope_core::ScoreKind::Echo`]) over any [`Engine`]: one pass over repeated random tokens
//! ([`RepeatedTokens`]), unmasked, with every head's attention row at each position of the repeats.

use crate::decode::Engine;
use crate::probe::Probe;
use headscope_core::score::RepeatedTokens;

/// Per head (layer-major), the mean over the repeats' positions of the weight on the tokens after the
/// earlier occurrences of the current token (induction) and on those occurrences (echo). The prefix
/// up to the first repeat is prefilled; every later token is fed as a step. The cache is emptied after.
pub async fn induction_and_echo<E: Engine>(engine: &mut E, seq: &RepeatedTokens) -> Result<(Vec<f64>, Vec<f64>), E::Error> {
    engine.set_mask(None)?;
    engine.reset();
    engine.reserve(seq.ids.len() + 1).await?;
    let shape = engine.spec().head_shape();
    let every = Probe { rows: shape.iter().collect(), span_mass: None };
    let first = seq.first_scored();
    engine.prefill(&seq.ids[..first]).await?;
    let (mut induction, mut echo) = (vec![0.0; shape.count()], vec![0.0; shape.count()]);
    for position in first..seq.ids.len() {
        let step = engine.step(seq.ids[position], &every).await?;
        for row in &step.attention_rows {
            if let Some(h) = shape.index(row.head) {
                let (e, i) = seq.echo_and_induction(&row.weights, position);
                echo[h] += e;
                induction[h] += i;
            }
        }
    }
    let scored = (seq.ids.len() - first) as f64;
    for v in induction.iter_mut().chain(echo.iter_mut()) {
        *v /= scored;
    }
    engine.reset();
    Ok((induction, echo))
}
