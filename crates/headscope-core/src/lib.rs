//! HeadScope's pure algorithms: everything about retrieval heads that needs no tensors.
//!
//! Where this sits in the data flow: inputs (needles, haystacks, a tokenizer) -> **core builds the
//! needle-in-a-haystack tests** ([`niah`]) -> the model runs them and reports, for every decode step,
//! each query head's argmax position -> **core scores them** ([`score`], eq. 1 of Wu et al. 2024) and
//! aggregates ([`HeadScores`]) -> plots, CLI and web present the results. Files that carry results
//! between runs and tools live in [`files`]; masking plans in [`masking`]; the numbers behind the paper's
//! figures (score distributions, correlations between models, failure classes) in [`analysis`];
//! extractive QA items and their scoring (fig. 8) in [`qa`].
//!
//! The crate knows nothing of any ML framework: the tokenizer is a trait ([`TextTokenizer`]) that the
//! model crate implements, and the model's per-step output arrives as plain vectors ([`DecodeStep`]).

pub mod analysis;
pub mod cot;
pub mod error;
pub mod files;
pub mod head;
pub mod masking;
pub mod metrics;
pub mod niah;
pub mod prompt;
pub mod qa;
pub mod rng;
pub mod score;
pub mod sweep;
pub mod tokenize;

pub use error::CoreError;
pub use head::{HeadId, HeadShape};
pub use score::{DecodeStep, HeadHits, HeadScores, ScoreKind, RETRIEVAL_THRESHOLD};
pub use tokenize::{Encoded, TextTokenizer};

/// The version written into run provenance records.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
