//! Errors of the core crate: each names the input that was wrong.

use std::path::PathBuf;

/// Everything that can go wrong in the core: bad inputs, never internal invariants.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A file could not be read or written.
    // Not a `#[source]`: the message already holds it, and `{:#}` would print it twice.
    #[error("{path}: {error}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A file was read but its content is not what it should be.
    #[error("{path}: {message}")]
    Malformed {
        /// The file involved (or a description of the input when it did not come from a file).
        path: PathBuf,
        /// What is wrong with it, and where.
        message: String,
    },
    /// An argument or input value is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be rendered.
    #[error("chat template: {0}")]
    Template(String),
}

impl CoreError {
    /// An [`CoreError::Invalid`] from anything printable.
    pub fn invalid(message: impl Into<String>) -> Self {
        CoreError::Invalid(message.into())
    }

    /// A [`CoreError::Malformed`] for `path`.
    pub fn malformed(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        CoreError::Malformed { path: path.into(), message: message.into() }
    }

    /// A [`CoreError::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io { path: path.into(), error: source }
    }
}

/// Result with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
