//! HeadScope's instrumented transformer forward on the GPU, through wgpu: WebGPU in the browser (the
//! lab page runs it in a Web Worker), Vulkan natively (tests run it on Mesa's lavapipe).
//!
//! Where this sits in the data flow: the core crate builds prompts -> **this crate runs them** through a
//! Llama-family checkpoint on the GPU and reports, for every decode step and every query head, where that
//! head's attention peaked; masks knock heads out -> the core scores the reports. It computes exactly
//! what the candle model of `headscope-model` computes on candle (the tests hold the two against each other)
//! and reuses that crate's types: [`ModelSpec`] parses config.json, [`HeadMask`] / [`Probe`] /
//! [`AttentionRow`] are the same values, so callers switch backends without translating anything.
//!
//! # API (stable: the web app depends on it)
//!
//! ```text
//! GpuContext::new().await -> Result<GpuContext>            // adapter + device (the adapter's own limits)
//!   .adapter() -> &AdapterSummary { name, backend, device_type, driver }, .describe() -> one line,
//!                 .is_software() -> bool (SwiftShader/lavapipe: the candle CPU path is faster there)
//! GpuModel::load(&ctx, &ModelSpec, &[&[u8]]).await -> Result<GpuModel>
//!                                                          // bytes of model.safetensors (or every shard);
//!                                                          // f32/f16/bf16, converted to f32 on upload
//! model.reserve(capacity) -> Result<()>                    // size KV cache + buffers once per run; resets
//! model.reset()                                            // empty the cache, keep the buffers
//! model.set_mask(Option<HeadMask>) -> Result<()>           // uniform | zero, scope decode | all
//! model.prefill(&[u32]).await -> Result<()>                // prompt[:-1]; no logits
//! model.step(id, &Probe).await -> Result<StepOutput>       // one token; one readback
//!   StepOutput { logits: Vec<f32>, argmax_position: Vec<u32> /* per query head, layer-major */,
//!                attention_rows: Vec<AttentionRow> /* the Probe's heads, by layer */ }
//!   .greedy_token() -> u32
//! model.position(), capacity(), spec(), mask(), prefill_chunk(), context()
//! greedy_decode(&mut model, prompt, max_new_tokens, stop, &Probe, on_token).await -> Result<DecodeTrace>
//! ```
//!
//! Semantics are those of the candle path: feed `prompt[..n-1]` to `prefill` and `prompt[n-1]` as the
//! first `step` (its output is the first answer token, and its attention is observed); argmax positions
//! are absolute context positions (the first maximum of the softmax weights); attention rows have one
//! weight per position `0..=step position` (0 outside a sliding window). Positions past the reserved
//! capacity grow the cache (copying it), up to `max_position_embeddings`.
//!
//! Supported: Llama, Mistral (sliding window), Qwen2 (q/k/v biases, tied embeddings), GQA, RoPE plain,
//! "linear" and "llama3". Refused with [`GpuError::Unsupported`]: Mixtral (mixture of experts), head_dim
//! not a multiple of 4 or above 256. Every buffer must fit the device's binding limit; a model or
//! context that does not gets [`GpuError::Limits`] naming the buffer.
//!
//! Performance (lab model, 2 shared cores, `cargo run --release -p headscope-gpu --example bench`):
//! on CPU implementations a decode step takes ~15 ms (lavapipe) to ~25 ms (SwiftShader, what Chromium
//! falls back to) and a 1000-token prefill ~2 s / ~5 s of CPU; candle on the CPU is several times
//! faster there (see [`AdapterSummary::is_software`]). Real GPUs are where this path pays.
//!
//! Everything is `async` because readback is one asynchronous buffer map per step; natively the
//! futures complete on first poll (the device is polled to completion), so `pollster::block_on`
//! drives them; in the browser `wasm_bindgen_futures` does. Types are not `Send` on wasm32.

pub mod context;
pub mod decode;
pub mod error;
mod kernels;
pub mod model;
mod profile;
mod signal;
mod weights;

pub use context::{AdapterSummary, GemmTile, GpuContext, KernelSet};
pub use decode::greedy_decode;
pub use error::{GpuError, Result};
pub use kernels::WeightFormat;
pub use model::{GpuModel, StepOutput};
pub use profile::{DispatchTime, ForwardProfile, PhaseProfile};

pub use headscope_engine::{AttentionRow, DecodeTrace, Engine, HeadMask, MaskMode, MaskScope, ModelSpec, Probe};
