//! HeadScope's browser lab: a page where students hide a needle in a haystack, watch a small model
//! find it while a layers x heads heatmap of retrieval scores fills in, look at where one head looked,
//! and mask heads to watch the answer turn into a hallucination.
//!
//! Where this sits in the data flow: the page ([`app`], on the main thread) gathers inputs and sends
//! them to a Web Worker ([`worker`]) so the page never freezes; the worker runs the work of [`lab`]:
//! **headscope-core builds the tests** exactly as `headscope detect` does, the model (candle compiled
//! to WebAssembly, or the WGSL forward of headscope-gpu on WebGPU) decodes them and reports every
//! query head's argmax, **core scores them** into the CLI's test records; the page aggregates them
//! with core (`head_scores_from_records`, masking plans, the official head-score format) and
//! **headscope-plot draws** the heatmaps on canvases. [`protocol`] is the message format between the
//! two. Like the CLI, this crate is a thin shell: no NIAH or scoring logic lives here.

pub mod clock;
pub mod lab;
pub mod lessons;
pub mod protocol;
pub mod session;
pub mod share;
pub mod strings;
pub mod views;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
mod dom;
#[cfg(target_arch = "wasm32")]
mod render;
#[cfg(target_arch = "wasm32")]
mod wire;
#[cfg(target_arch = "wasm32")]
pub mod worker;
