//! The Hugging Face tokenizer (`tokenizer.json`) with the settings of `tokenizer_config.json` (special
//! tokens, chat template), implementing the core crate's [`TextTokenizer`].

use crate::error::{ModelError, Result};
use headscope_core::prompt::ChatTemplate;
use headscope_core::{CoreError, Encoded, TextTokenizer};
use serde_json::Value;
use std::path::Path;

/// A `tokenizer.json` tokenizer and its config.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

/// A special token in tokenizer_config.json: a string or `{"content": ...}`.
fn special_token(cfg: &Value, key: &str) -> Option<String> {
    match cfg.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl HfTokenizer {
    /// Reads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ModelError::Missing {
                dir: dir.to_owned(),
                what: "tokenizer.json".into(),
                hint: "HeadScope needs the fast-tokenizer file; convert a sentencepiece model with transformers' save_pretrained".into(),
            });
        }
        let json = std::fs::read(&path).map_err(|e| ModelError::Io { path: path.clone(), error: e })?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg = if cfg_path.exists() {
            Some(std::fs::read(&cfg_path).map_err(|e| ModelError::Io { path: cfg_path.clone(), error: e })?)
        } else {
            None
        };
        Self::from_bytes(&json, cfg.as_deref()).map_err(|e| match e {
            ModelError::Tokenizer(m) => ModelError::config(&path, m),
            other => other,
        })
    }

    /// Builds the tokenizer from the bytes of `tokenizer.json` and, if present, `tokenizer_config.json`.
    pub fn from_bytes(tokenizer_json: &[u8], tokenizer_config: Option<&[u8]>) -> Result<Self> {
        // Parsed as plain JSON first: the tokenizers crate panics, instead of returning an error, when
        // its decoder section fails to buffer (a bad escape, a number out of range, nesting too deep),
        // and a panic kills the page's worker. From a well-formed document it returns errors.
        let value: serde_json::Value =
            serde_json::from_slice(tokenizer_json).map_err(|e| ModelError::Tokenizer(format!("tokenizer.json is not valid JSON: {e}")))?;
        if let Some(p) = value.get("post_processor") {
            check_post_processor(p).map_err(|m| ModelError::Tokenizer(format!("tokenizer.json: post_processor: {m}")))?;
        }
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(value).map_err(|e| ModelError::Tokenizer(format!("tokenizer.json: {e}")))?;
        let cfg: Value = match tokenizer_config {
            Some(b) => serde_json::from_slice(b).map_err(|e| ModelError::Tokenizer(format!("tokenizer_config.json is not JSON: {e}")))?,
            None => Value::Null,
        };
        let chat_template = match cfg.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        };
        Ok(HfTokenizer { inner, chat_template, bos_token: special_token(&cfg, "bos_token"), eos_token: special_token(&cfg, "eos_token") })
    }

    /// The chat template, if the model has one.
    pub fn chat_template(&self) -> Option<ChatTemplate> {
        self.chat_template.as_ref().map(|source| ChatTemplate {
            source: source.clone(),
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
        })
    }

    /// The id of a token string.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The EOS token's id, per tokenizer_config.json.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token.as_deref().and_then(|t| self.token_id(t))
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

impl TextTokenizer for HfTokenizer {
    fn encode(&self, text: &str, add_special_tokens: bool) -> headscope_core::error::Result<Encoded> {
        let e = self.inner.encode(text, add_special_tokens).map_err(|e| CoreError::Tokenizer(e.to_string()))?;
        Ok(Encoded { ids: e.get_ids().to_vec(), offsets: e.get_offsets().to_vec() })
    }

    fn decode(&self, ids: &[u32]) -> headscope_core::error::Result<String> {
        self.inner.decode(ids, true).map_err(|e| CoreError::Tokenizer(e.to_string()))
    }
}

/// Trains a byte-level BPE tokenizer (GPT-2 style: any text encodes, no unknown tokens) on `texts`,
/// with `specials` as its first ids and a post-processor that prepends `bos` when special tokens are
/// asked for. Used for the lab model and for test models.
pub fn train_byte_level_bpe(texts: &[String], vocab_size: usize, specials: &[&str], bos: Option<&str>) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, TokenizerBuilder};

    let err = |e: tokenizers::Error| ModelError::Tokenizer(e.to_string());
    let byte_level = ByteLevel::default().add_prefix_space(false).trim_offsets(true);
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.iter().map(|s| AddedToken::from(s.to_string(), true)).collect())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let post = match bos {
        Some(b) => {
            let id = specials
                .iter()
                .position(|s| *s == b)
                .ok_or_else(|| ModelError::Invalid(format!("BOS {b} is not among the special tokens")))? as u32;
            Some(PostProcessorWrapper::Template(
                TemplateProcessing::builder()
                    .try_single(format!("{b} $A"))
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?
                    .try_pair(format!("{b} $A $B"))
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?
                    .special_tokens(vec![(b.to_string(), id)])
                    .build()
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?,
            ))
        }
        None => Some(PostProcessorWrapper::ByteLevel(byte_level)),
    };
    let mut tokenizer = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
        .with_model(BPE::default())
        .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(byte_level)))
        .with_post_processor(post)
        .with_decoder(Some(DecoderWrapper::ByteLevel(byte_level)))
        .build()
        .map_err(err)?;
    tokenizer.train(&mut trainer, texts.iter()).map_err(err)?;
    Ok(tokenizer.into())
}

/// Checks what the tokenizers crate assumes of a template post-processor (alone or inside a sequence of
/// processors) but does not check when it reads one from JSON, and then panics on while encoding (found
/// by `scripts/fuzz.sh`): every special token a template names is defined under its own id, with as
/// many ids as tokens, and the single-sequence template names sequence A only. The crate reads
/// processors by their fields (a misspelt `type` still loads), so the fields decide here too.
fn check_post_processor(p: &Value) -> std::result::Result<(), String> {
    if let Some(inner) = p.get("processors").and_then(Value::as_array) {
        return inner.iter().try_for_each(check_post_processor);
    }
    if p.get("single").is_none() && p.get("pair").is_none() && p.get("special_tokens").is_none() {
        return Ok(());
    }
    let specials = p.get("special_tokens").and_then(Value::as_object);
    for (name, token) in specials.into_iter().flatten() {
        let count = |k: &str| token.get(k).and_then(Value::as_array).map(Vec::len);
        if count("ids") != count("tokens") {
            return Err(format!("special token `{name}` has {:?} ids but {:?} tokens", count("ids"), count("tokens")));
        }
        if token.get("id").and_then(Value::as_str) != Some(name.as_str()) {
            return Err(format!("special token `{name}` is stored under another id"));
        }
    }
    for template in ["single", "pair"] {
        for piece in p.get(template).and_then(Value::as_array).into_iter().flatten() {
            if let Some(id) = piece.get("SpecialToken").and_then(|t| t.get("id")).and_then(Value::as_str) {
                if !specials.is_some_and(|s| s.contains_key(id)) {
                    return Err(format!("the {template} template names the special token `{id}`, which special_tokens does not define"));
                }
            }
            let sequence = piece.get("Sequence").and_then(|t| t.get("id")).and_then(Value::as_str);
            if template == "single" && sequence.is_some_and(|id| id != "A") {
                return Err("the single template names sequence B".into());
            }
        }
    }
    Ok(())
}
