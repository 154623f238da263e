//! The one greedy decode loop of HeadScope, over any [`Engine`]: the loop the paper's detection runs.
//! The prompt's last token is fed as the first decode step (as the official code prefills `prompt[:-1]`
//! and decodes `prompt[-1]`), so the attention that produces the first answer token is observed too.
//!
//! The loop is `async` because the WebGPU backend must await its read-backs; the candle backend's
//! futures are ready at once, and [`block_on`] runs them without an executor.

use crate::error::EngineError;
use crate::mask::HeadMask;
use crate::probe::{AttentionRow, Probe};
use crate::spec::ModelSpec;
use headscope_core::score::top_k_mass_in_span;
use headscope_core::DecodeStep;
use std::future::Future;

/// What one decode step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The greedy next token.
    pub token: u32,
    /// For every query head (layer-major), the context position its attention peaked at.
    pub argmax_position: Vec<u32>,
    /// The rows asked for in the [`Probe`].
    pub attention_rows: Vec<AttentionRow>,
}

/// What a greedy decode produced and observed.
#[derive(Debug, Clone, Default)]
pub struct DecodeTrace {
    /// Generated token ids (a stop token, if reached, is the last one).
    pub tokens: Vec<u32>,
    /// Per step (aligned with `tokens`): each query head's argmax position, layer-major.
    pub argmax_position: Vec<Vec<u32>>,
    /// Per step: the probed heads' attention rows.
    pub attention_rows: Vec<Vec<AttentionRow>>,
    /// With [`Probe::span_mass`]: per step among the first `span.len()`, every head's attention weight
    /// on its top-`span.len()` positions inside the span (layer-major).
    pub span_mass: Vec<Vec<f64>>,
    /// Seconds spent in prefill.
    pub prefill_seconds: f64,
    /// Seconds spent in decode steps.
    pub decode_seconds: f64,
}

impl DecodeTrace {
    /// The steps as core scores them (eq. 1): each generated token with every head's argmax.
    pub fn steps(&self) -> Vec<DecodeStep> {
        self.tokens.iter().zip(&self.argmax_position).map(|(&token, argmax)| DecodeStep { token, argmax: argmax.clone() }).collect()
    }
}

/// An instrumented model with a KV cache: what the decode loop and the sweep runner drive. The candle
/// model (CPU, CUDA) and the wgpu model (WebGPU, Vulkan, Metal) implement it.
#[allow(async_fn_in_trait)] // the loop is generic over engines, never boxed: no Send bound is needed
pub trait Engine {
    /// The backend's error; every [`EngineError`] converts into it.
    type Error: From<EngineError>;
    /// The architecture.
    fn spec(&self) -> &ModelSpec;
    /// Positions already in the cache (the next token's position).
    fn position(&self) -> usize;
    /// Allocates the cache for `capacity` positions (a hint: a backend may also grow it on demand).
    async fn reserve(&mut self, capacity: usize) -> Result<(), Self::Error>;
    /// Empties the cache.
    fn reset(&mut self);
    /// Forgets every position from `position` on, keeping those before it.
    fn truncate(&mut self, position: usize) -> Result<(), Self::Error>;
    /// Applies a head mask to later calls (`None` removes it).
    fn set_mask(&mut self, mask: Option<HeadMask>) -> Result<(), Self::Error>;
    /// Runs `ids` at the next positions, filling the cache.
    async fn prefill(&mut self, ids: &[u32]) -> Result<(), Self::Error>;
    /// How many leading positions of `ids` the cache already holds as a prefill of `ids` under the
    /// current mask would compute them. A backend that tracks its cache ([`crate::prefix::CachedPrefix`])
    /// says; the default, for one that does not, is 0.
    fn reusable_prefix(&self, _ids: &[u32]) -> usize {
        0
    }
    /// Prefills `ids` as a new sequence, computing only what the cache does not already hold
    /// ([`Engine::reusable_prefix`]): keeps those positions, forgets the rest, prefills the remaining
    /// ids. Returns how many positions were reused.
    async fn prefill_reusing(&mut self, ids: &[u32]) -> Result<usize, Self::Error> {
        let reused = self.reusable_prefix(ids);
        self.truncate(reused)?;
        self.prefill(&ids[reused..]).await?;
        Ok(reused)
    }
    /// Feeds one token at the next position and reports the greedy next token and every head's argmax.
    async fn step(&mut self, id: u32, probe: &Probe) -> Result<Step, Self::Error>;
    /// Seconds on a monotonic clock, for the trace's timings. The default is the platform's clock
    /// (0 in wasm32, which has none in std: the page's engine supplies `performance.now()`).
    fn now(&self) -> f64 {
        now()
    }
}

/// Seconds since the first call, on the platform's monotonic clock; always 0 in wasm32.
pub fn now() -> f64 {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    }
    #[cfg(target_arch = "wasm32")]
    {
        0.0
    }
}

/// Greedily decodes up to `max_new_tokens` after `prompt`, stopping after any token of `stop`:
/// the cache is emptied, `prompt[..n-1]` prefilled, and `prompt[n-1]` fed as the first step.
/// `on_token` sees each new token that is not a stop token and may return `false` to stop early
/// (cancellation).
pub async fn greedy_decode<E: Engine>(
    engine: &mut E,
    prompt: &[u32],
    max_new_tokens: usize,
    stop: &[u32],
    probe: &Probe,
    on_token: impl FnMut(u32) -> bool,
) -> Result<DecodeTrace, E::Error> {
    let (&last, context) = prompt.split_last().ok_or_else(|| EngineError::Invalid("the prompt is empty".into()))?;
    check_max_new_tokens(max_new_tokens)?;
    engine.reset();
    let t0 = engine.now();
    engine.prefill(context).await?;
    let prefill_seconds = engine.now() - t0;
    let mut trace = greedy_decode_from(engine, last, max_new_tokens, stop, probe, on_token).await?;
    trace.prefill_seconds = prefill_seconds;
    Ok(trace)
}

/// The decode half of [`greedy_decode`]: feeds `last` (the prompt's last token) at the engine's current
/// position, after a prefill of the rest of the prompt that the caller did, and decodes greedily from
/// there. With [`Engine::truncate`] back to the prefilled length, one prefill serves several decodes
/// under different decode-scope masks. `prefill_seconds` is left 0.
pub async fn greedy_decode_from<E: Engine>(
    engine: &mut E,
    last: u32,
    max_new_tokens: usize,
    stop: &[u32],
    probe: &Probe,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<DecodeTrace, E::Error> {
    check_max_new_tokens(max_new_tokens)?;
    let mut trace = DecodeTrace::default();
    // The backend is asked for rows only: at the steps that measure span mass, every head's row, reduced
    // here and dropped but for the heads the caller asked to see.
    let plain = Probe { rows: probe.rows.clone(), span_mass: None };
    let every_row = probe.span_mass.is_some().then(|| Probe { rows: engine.spec().head_shape().iter().collect(), span_mass: None });
    let t1 = engine.now();
    let mut input = last;
    for i in 0..max_new_tokens {
        let span = probe.span_mass.as_ref().filter(|s| i < s.len());
        let step_probe = match (span, &every_row) {
            (Some(_), Some(every)) => every,
            _ => &plain,
        };
        let step = engine.step(input, step_probe).await?;
        let next = step.token;
        trace.tokens.push(next);
        trace.argmax_position.push(step.argmax_position);
        let mut rows = step.attention_rows;
        if let Some(span) = span {
            let shape = engine.spec().head_shape();
            let mut mass = vec![0.0; shape.count()];
            for r in &rows {
                if let Some(h) = shape.index(r.head) {
                    mass[h] = top_k_mass_in_span(&r.weights, span.clone());
                }
            }
            trace.span_mass.push(mass);
            rows.retain(|r| probe.rows.contains(&r.head));
        }
        trace.attention_rows.push(rows);
        if stop.contains(&next) || !on_token(next) {
            break;
        }
        input = next;
    }
    trace.decode_seconds = engine.now() - t1;
    Ok(trace)
}

fn check_max_new_tokens(max_new_tokens: usize) -> Result<(), EngineError> {
    if max_new_tokens == 0 {
        return Err(EngineError::Invalid("max_new_tokens must be at least 1".into()));
    }
    Ok(())
}

/// Runs a future that never waits (an engine whose work is synchronous, as the candle backend's is) to
/// completion on this thread. A future that does wait is polled again until it is ready, so this is
/// correct for any future, only wasteful for one that waits long.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use headscope_core::HeadId;

    /// A model of one layer and two heads that "generates" by replaying a script: token i+1 follows
    /// token i, and head 0 looks at position 0 while head 1 looks at the newest position.
    struct Scripted {
        spec: ModelSpec,
        cache: Vec<u32>,
        mask: Option<HeadMask>,
    }

    impl Scripted {
        fn new() -> Self {
            let config = r#"{"model_type":"llama","vocab_size":100,"hidden_size":8,"intermediate_size":16,
                "num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"max_position_embeddings":64}"#;
            let spec = ModelSpec::from_config_json(config, std::path::Path::new("config.json")).unwrap();
            Scripted { spec, cache: vec![], mask: None }
        }
    }

    impl Engine for Scripted {
        type Error = EngineError;
        fn spec(&self) -> &ModelSpec {
            &self.spec
        }
        fn position(&self) -> usize {
            self.cache.len()
        }
        async fn reserve(&mut self, _capacity: usize) -> Result<(), EngineError> {
            Ok(())
        }
        fn reset(&mut self) {
            self.cache.clear();
        }
        fn truncate(&mut self, position: usize) -> Result<(), EngineError> {
            self.cache.truncate(position);
            Ok(())
        }
        fn set_mask(&mut self, mask: Option<HeadMask>) -> Result<(), EngineError> {
            self.mask = mask;
            Ok(())
        }
        async fn prefill(&mut self, ids: &[u32]) -> Result<(), EngineError> {
            self.cache.extend_from_slice(ids);
            Ok(())
        }
        async fn step(&mut self, id: u32, probe: &Probe) -> Result<Step, EngineError> {
            self.cache.push(id);
            let newest = self.cache.len() as u32 - 1;
            let rows = probe.rows.iter().map(|&head| AttentionRow { head, weights: vec![1.0; self.cache.len()] }).collect();
            Ok(Step { token: id + 1, argmax_position: vec![0, newest], attention_rows: rows })
        }
    }

    #[test]
    fn the_last_prompt_token_is_the_first_step_and_stop_tokens_end_the_loop() {
        let mut e = Scripted::new();
        let probe = Probe { rows: vec![HeadId::new(0, 1)], ..Probe::default() };
        let trace = block_on(greedy_decode(&mut e, &[10, 11, 12], 8, &[15], &probe, |_| true)).unwrap();
        // Prefill [10, 11]; step 12 -> 13, 13 -> 14, 14 -> 15 (stop, kept as the last token).
        assert_eq!(trace.tokens, vec![13, 14, 15]);
        assert_eq!(trace.argmax_position, vec![vec![0, 2], vec![0, 3], vec![0, 4]]);
        assert_eq!(trace.attention_rows[0][0].weights.len(), 3, "the first step sees the whole prompt");
        assert_eq!(e.position(), 5);
        let steps = trace.steps();
        assert_eq!((steps.len(), steps[1].token, steps[1].argmax.clone()), (3, 14, vec![0, 3]));
    }

    #[test]
    fn on_token_can_stop_early_and_bad_arguments_are_errors() {
        let mut e = Scripted::new();
        let mut seen = vec![];
        let trace = block_on(greedy_decode(&mut e, &[1, 2], 10, &[], &Probe::default(), |t| {
            seen.push(t);
            seen.len() < 2
        }))
        .unwrap();
        assert_eq!((trace.tokens, seen), (vec![3, 4], vec![3, 4]));
        assert!(matches!(block_on(greedy_decode(&mut e, &[], 4, &[], &Probe::default(), |_| true)), Err(EngineError::Invalid(_))));
        assert!(matches!(block_on(greedy_decode(&mut e, &[1], 0, &[], &Probe::default(), |_| true)), Err(EngineError::Invalid(_))));
        // Decoding again from a truncated cache continues at that position.
        e.truncate(1).unwrap();
        let again = block_on(greedy_decode_from(&mut e, 2, 2, &[], &Probe::default(), |_| true)).unwrap();
        assert_eq!((again.tokens, again.prefill_seconds), (vec![3, 4], 0.0));
    }

    #[test]
    fn masks_and_probes_are_plain_serde_values() {
        let mask = HeadMask { heads: vec![HeadId::new(3, 1)], mode: crate::mask::MaskMode::Zero, scope: crate::mask::MaskScope::All };
        let json = serde_json::to_string(&mask).unwrap();
        assert!(json.contains("\"zero\"") && json.contains("\"all\""), "{json}");
        assert_eq!(serde_json::from_str::<HeadMask>(&json).unwrap(), mask);
        let probe = Probe { rows: vec![HeadId::new(0, 0)], ..Probe::default() };
        assert_eq!(serde_json::from_str::<Probe>(&serde_json::to_string(&probe).unwrap()).unwrap(), probe);
    }
}
