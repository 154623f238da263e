//! HeadScope's backend-neutral layer, with no ML framework in it: what a model is ([`ModelSpec`], read
//! from any supported family's config.json), what a run asks of it ([`Probe`], [`HeadMask`]), the
//! [`Engine`] trait that the candle backend (`headscope-model`) and the wgpu backend (`headscope-gpu`)
//! implement, and the one greedy decode loop ([`greedy_decode`]) that every front end calls.
//!
//! Data flows one way: core builds tests, an engine runs them and reports per-head argmax positions,
//! core scores them. The one sweep runner ([`SweepRunner`]) drives that flow for every front end. This
//! crate knows no tensors; it builds and scores no test itself, core does.
#![warn(missing_docs)]

pub mod decode;
pub mod error;
pub mod families;
pub mod kv;
pub mod mask;
pub mod prefix;
pub mod probe;
pub mod repeated;
pub mod rope;
pub mod spec;
pub mod sweep;

pub use decode::{block_on, greedy_decode, greedy_decode_from, DecodeTrace, Engine, Step};
pub use error::{EngineError, Result};
pub use kv::KvPlan;
pub use mask::{HeadMask, MaskMode, MaskScope};
pub use probe::{AttentionRow, Probe};
pub use spec::{ModelSpec, SUPPORTED_MODEL_TYPES};
pub use sweep::{SweepInputs, SweepPlan, SweepRunner, TestError, TestOutcome};
