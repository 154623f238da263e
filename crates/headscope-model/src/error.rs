//! Errors of the model crate: each names the file, tensor or setting at fault.

use std::path::PathBuf;

/// What can go wrong loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read.
    // Not a `#[source]`: the message holds it, and `{:#}` would print it twice.
    #[error("{path}: {error}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A required file is missing from the model directory.
    #[error("{dir}: no {what} found ({hint})")]
    Missing {
        /// The model directory.
        dir: PathBuf,
        /// What was looked for.
        what: String,
        /// What to do about it.
        hint: String,
    },
    /// A config or tokenizer file is malformed or inconsistent.
    #[error("{path}: {message}")]
    Config {
        /// The file involved.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint's architecture or a setting of it is not supported.
    #[error("{0}")]
    Unsupported(String),
    /// A weight is missing or has the wrong shape.
    #[error("weights: {0}")]
    Weights(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A sequence does not fit: longer than the model's context, or than the cache allocated for the run.
    #[error("{0}")]
    TooLong(String),
    /// A caller passed something invalid (unknown head, empty prompt, ...).
    #[error("{0}")]
    Invalid(String),
    /// A tensor operation failed.
    #[error("tensor operation: {0}")]
    Candle(#[from] candle_core::Error),
}

impl ModelError {
    /// A [`ModelError::Config`] for `path`.
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ModelError::Config { path: path.into(), message: message.into() }
    }
}

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

/// Every engine error has a model error of the same name and words.
impl From<headscope_engine::EngineError> for ModelError {
    fn from(e: headscope_engine::EngineError) -> Self {
        use headscope_engine::EngineError as E;
        match e {
            E::Io { path, error } => ModelError::Io { path, error },
            E::Config { path, message } => ModelError::Config { path, message },
            E::Unsupported(m) => ModelError::Unsupported(m),
            E::TooLong(m) => ModelError::TooLong(m),
            E::Invalid(m) => ModelError::Invalid(m),
            E::Input(e) => ModelError::Invalid(e.to_string()),
        }
    }
}
