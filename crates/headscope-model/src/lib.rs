//! HeadScope's instrumented transformer, on candle.
//!
//! Where this sits in the data flow: the core crate builds prompts -> **this crate runs them** through a
//! Llama-family model loaded from a Hugging Face directory ([`LoadedModel`]) and reports, for every decode
//! step and every query head, where that head's attention peaked ([`StepOutput`]); masks ([`HeadMask`])
//! knock heads out -> the core scores the reports. The crate knows nothing of needles or scores.
//!
//! CPU everywhere; CUDA with the `cuda` feature (the device is a parameter throughout).

pub mod attention;
pub mod error;
pub mod flash;
pub mod fused_ops;
pub mod generate;
pub mod kv_window;
pub mod loader;
pub mod mamba;
pub mod mlp;
pub mod norm;
pub mod rope;
pub mod split;
pub mod tokenizer;
pub mod train_attention;
pub mod train_ops;
pub mod transformer;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{ModelError, Result};
// The backend-neutral values live in headscope-engine; these paths stay for the crate's users.
pub use generate::{greedy_decode, greedy_decode_from, DecodeTrace};
pub use headscope_engine::{families, mask, spec, Engine, Step};
pub use headscope_engine::{AttentionRow, Probe};
pub use loader::{LoadOptions, LoadedModel, ModelDir, ModelFiles, ModelMeta};
pub use mask::{HeadMask, MaskMode, MaskScope};
pub use spec::{ModelSpec, SUPPORTED_MODEL_TYPES};
pub use tokenizer::HfTokenizer;
pub use transformer::{StepOutput, Transformer};

pub use candle_core::{self, DType, Device};
pub use candle_nn;
