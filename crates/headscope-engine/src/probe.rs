//! What a decode step observes besides every head's argmax: plain values that every backend fills.

use headscope_core::HeadId;

/// What to record at a decode step besides the argmax positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// Heads whose full attention row to return (the "where did this head look" view).
    pub rows: Vec<HeadId>,
    /// An answer span whose attention mass the decode loop measures for every head at the first
    /// `span.len()` steps (HeadKV's score, [`headscope_core::score::top_k_mass_in_span`]). Backends
    /// never see it: the loop asks them for every head's row at those steps and reduces the rows.
    #[serde(default)]
    pub span_mass: Option<std::ops::Range<usize>>,
}

/// One head's attention weights over every context position at one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttentionRow {
    /// The head.
    pub head: HeadId,
    /// Weight per context position `0..=position` (0 outside a sliding window).
    pub weights: Vec<f32>,
}
