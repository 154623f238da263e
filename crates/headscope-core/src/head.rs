//! Addressing attention heads: `layer-head`, everywhere (files, UI, logs).

use crate::error::{CoreError, Result};
use std::fmt;
use std::str::FromStr;

/// One query head of one layer, written `layer-head` (both 0-based), as in the official score files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct HeadId {
    /// 0-based layer index.
    pub layer: usize,
    /// 0-based query-head index within the layer.
    pub head: usize,
}

impl HeadId {
    /// A head at `layer`, `head`.
    pub const fn new(layer: usize, head: usize) -> Self {
        HeadId { layer, head }
    }
}

impl fmt::Display for HeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.layer, self.head)
    }
}

impl FromStr for HeadId {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || CoreError::invalid(format!("`{s}` is not a head: write it as layer-head, e.g. 16-19"));
        let (l, h) = s.trim().split_once('-').ok_or_else(bad)?;
        Ok(HeadId { layer: l.parse().map_err(|_| bad())?, head: h.parse().map_err(|_| bad())? })
    }
}

impl From<HeadId> for String {
    fn from(h: HeadId) -> String {
        h.to_string()
    }
}

impl TryFrom<String> for HeadId {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// Parses a comma-separated head list such as `16-19,11-15`; duplicates are dropped, order kept.
pub fn parse_head_list(s: &str) -> Result<Vec<HeadId>> {
    let mut out: Vec<HeadId> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let id: HeadId = part.parse()?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    if out.is_empty() {
        return Err(CoreError::invalid("the head list is empty: give heads as layer-head, e.g. 16-19,11-15"));
    }
    Ok(out)
}

/// The grid of query heads of a model: `layers` x `heads` (query heads per layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeadShape {
    /// Number of layers.
    pub layers: usize,
    /// Query heads per layer.
    pub heads: usize,
}

impl HeadShape {
    /// A `layers` x `heads` grid.
    pub const fn new(layers: usize, heads: usize) -> Self {
        HeadShape { layers, heads }
    }

    /// Total number of query heads.
    pub const fn count(&self) -> usize {
        self.layers * self.heads
    }

    /// Flat index of `id` (layer-major), the order the model reports heads in.
    pub fn index(&self, id: HeadId) -> Option<usize> {
        (id.layer < self.layers && id.head < self.heads).then(|| id.layer * self.heads + id.head)
    }

    /// The head at flat index `i`.
    pub const fn head_at(&self, i: usize) -> HeadId {
        HeadId { layer: i / self.heads, head: i % self.heads }
    }

    /// All heads in flat order.
    pub fn iter(&self) -> impl Iterator<Item = HeadId> + '_ {
        (0..self.count()).map(|i| self.head_at(i))
    }

    /// Checks that every head of `heads` exists in this shape.
    pub fn check(&self, heads: &[HeadId]) -> Result<()> {
        for h in heads {
            if self.index(*h).is_none() {
                return Err(CoreError::invalid(format!(
                    "head {h} does not exist: the model has {} layers x {} heads (0-based)",
                    self.layers, self.heads
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_layer_head() {
        let h: HeadId = "16-19".parse().unwrap();
        assert_eq!(h, HeadId::new(16, 19));
        assert_eq!(h.to_string(), "16-19");
        assert!("16".parse::<HeadId>().is_err());
        assert!("a-1".parse::<HeadId>().is_err());
        assert!("-1-2".parse::<HeadId>().is_err());
    }

    #[test]
    fn head_lists_dedupe_and_reject_empty() {
        let l = parse_head_list("16-19, 11-15,16-19").unwrap();
        assert_eq!(l, vec![HeadId::new(16, 19), HeadId::new(11, 15)]);
        assert!(parse_head_list(" , ").is_err());
    }

    #[test]
    fn shape_indexing_is_layer_major() {
        let s = HeadShape::new(3, 4);
        assert_eq!(s.index(HeadId::new(1, 2)), Some(6));
        assert_eq!(s.head_at(6), HeadId::new(1, 2));
        assert_eq!(s.index(HeadId::new(3, 0)), None);
        assert!(s.check(&[HeadId::new(2, 4)]).is_err());
        assert_eq!(s.iter().count(), 12);
    }
}
