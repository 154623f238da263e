//! Errors of the GPU forward: each names the adapter, tensor, limit or input at fault. Nothing in this
//! crate panics on bad input (in the browser a panic kills the worker).

use headscope_engine::EngineError;

/// What can go wrong setting up or running the GPU forward.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No usable adapter (no WebGPU in this browser, no Vulkan driver on this machine).
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to create a device, or the device reported an error while running.
    #[error("GPU device: {0}")]
    Device(String),
    /// A shader or pipeline failed validation (a bug in this crate, or a browser that rejects its WGSL).
    #[error("GPU validation: {0}")]
    Validation(String),
    /// The model or context needs more than the device allows.
    #[error("GPU limits: {0}")]
    Limits(String),
    /// The architecture, or a setting of it, is not supported by the GPU forward.
    #[error("not supported on the GPU: {0}")]
    Unsupported(String),
    /// A weight is missing, has the wrong shape or dtype, or a safetensors file is malformed.
    #[error("weights: {0}")]
    Weights(String),
    /// A sequence does not fit the model's context.
    #[error("{0}")]
    TooLong(String),
    /// A caller passed something invalid (unknown head, token outside the vocabulary, empty prompt...).
    #[error("{0}")]
    Invalid(String),
    /// Reading results back from the GPU failed.
    #[error("reading results back from the GPU: {0}")]
    Readback(String),
    /// A file error of the backend-neutral layer (reading a config.json).
    #[error(transparent)]
    Engine(EngineError),
}

/// Result with [`GpuError`].
pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Engine errors keep their kind: an invalid input is [`GpuError::Invalid`] whichever layer found it.
impl From<EngineError> for GpuError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(m) => GpuError::Invalid(m),
            EngineError::TooLong(m) => GpuError::TooLong(m),
            EngineError::Unsupported(m) => GpuError::Unsupported(m),
            other => GpuError::Engine(other),
        }
    }
}
