//! What a decode step observes besides every head's argmax: plain values that every backend fills.

use headscope_core::HeadId;

/// What to record at a decode step besides the argmax positions.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// Heads whose full attention row to return (the "where did this head look" view).
    pub rows: Vec<HeadId>,
}

/// One head's attention weights over every context position at one step.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttentionRow {
    /// The head.
    pub head: HeadId,
    /// Weight per context position `0..=position` (0 outside a sliding window).
    pub weights: Vec<f32>,
}
