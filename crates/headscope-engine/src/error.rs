//! Errors of the backend-neutral layer: each names the file, setting or input at fault. Backends
//! convert them into their own error types variant for variant.

use std::path::PathBuf;

/// What can go wrong describing a model or driving an engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file could not be read.
    // Not a `#[source]`: the message holds it, and `{:#}` would print it twice.
    #[error("{path}: {error}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A config file is malformed or inconsistent.
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
    /// A sequence does not fit: longer than the model's context, or than the cache allocated for the run.
    #[error("{0}")]
    TooLong(String),
    /// A caller passed something invalid (unknown head, empty prompt, ...).
    #[error("{0}")]
    Invalid(String),
    /// A NIAH input that core refused (a needle without its answer, lengths that do not parse, ...).
    #[error(transparent)]
    Input(#[from] headscope_core::CoreError),
}

impl EngineError {
    /// An [`EngineError::Config`] for `path`.
    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EngineError::Config { path: path.into(), message: message.into() }
    }
}

/// Result with [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
