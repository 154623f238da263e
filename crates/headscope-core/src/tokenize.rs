//! The tokenizer as the core sees it: text in, ids and byte offsets out. The model crate implements it
//! for Hugging Face `tokenizer.json`; tests implement it with toy tokenizers.

use crate::error::Result;

/// Token ids of a text with each token's byte range in that text (special tokens have empty ranges).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `(start, end)` byte offsets into the encoded text, one per id.
    pub offsets: Vec<(usize, usize)>,
}

/// A tokenizer that reports byte offsets, so the needle's answer span can be found exactly.
pub trait TextTokenizer {
    /// Encodes `text`; `add_special_tokens` adds what the tokenizer's post-processor adds (e.g. BOS).
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Encoded>;
    /// Decodes ids to text, skipping special tokens.
    fn decode(&self, ids: &[u32]) -> Result<String>;
}
