//! Plain language-model views of a model: free-running generation and held-out perplexity, the sanity
//! checks a lab model's card reports next to its retrieval numbers.

use anyhow::{bail, Context, Result};
use headscope_core::TextTokenizer;
use headscope_model::candle_core::{Tensor, D};
use headscope_model::{greedy_decode, LoadOptions, ModelDir, Probe};
use std::path::Path;

/// `headscope generate`: greedy continuation of a prompt.
pub fn generate(model: &Path, prompt: &str, max_new_tokens: usize, options: &LoadOptions) -> Result<()> {
    let md = ModelDir::open(model)?;
    let mut m = md.load_weights(options)?;
    let ids = md.tokenizer.encode(prompt, true)?.ids;
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    let trace = greedy_decode(&mut m, &ids, max_new_tokens, &md.eos_token_ids, &Probe::default(), |_| true)?;
    println!("{}{}", prompt, md.tokenizer.decode(&trace.tokens)?);
    Ok(())
}

/// `headscope perplexity`: exp of the mean next-token loss over non-overlapping windows of a text file.
pub fn perplexity(model: &Path, text_file: &Path, window: usize, max_windows: usize, options: &LoadOptions) -> Result<f64> {
    let md = ModelDir::open(model)?;
    let m = md.load_weights(options)?;
    let text = std::fs::read_to_string(text_file).with_context(|| format!("reading {}", text_file.display()))?;
    let ids = md.tokenizer.encode(&text, false)?.ids;
    if window < 2 || window > md.spec.max_position_embeddings {
        bail!("--window must be between 2 and the model's context ({})", md.spec.max_position_embeddings);
    }
    if ids.len() < window + 1 {
        bail!("{} has {} tokens, fewer than one window of {window}", text_file.display(), ids.len());
    }
    let (mut total, mut count) = (0f64, 0usize);
    for chunk in ids.chunks_exact(window + 1).take(max_windows) {
        let input = Tensor::new(&chunk[..window], m.device())?.unsqueeze(0)?;
        let target = Tensor::new(&chunk[1..], m.device())?.unsqueeze(0)?;
        let logp = headscope_model::candle_nn::ops::log_softmax(&m.forward_sequence(&input)?, D::Minus1)?;
        let picked = logp.gather(&target.unsqueeze(D::Minus1)?, D::Minus1)?;
        total -= picked.sum_all()?.to_dtype(headscope_model::DType::F64)?.to_scalar::<f64>()?;
        count += window;
    }
    let ppl = (total / count as f64).exp();
    println!("perplexity {ppl:.2} over {count} tokens of {} ({} windows of {window})", text_file.display(), count / window);
    Ok(ppl)
}
