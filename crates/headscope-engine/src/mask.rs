//! Head masks: which query heads to knock out, how, and when.

use headscope_core::HeadId;
use std::fmt;
use std::str::FromStr;

/// How a masked head is knocked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    /// The head's query is zeroed, so it attends uniformly over the context (the paper's masking).
    #[default]
    Uniform,
    /// The head's output is zeroed before the output projection.
    Zero,
}

/// When a mask applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskScope {
    /// Only at decode steps (the step at the last prompt position included): the prompt's KV cache is
    /// computed unmasked, as in the paper.
    #[default]
    Decode,
    /// At every position, prefill included.
    All,
}

/// A set of heads masked in one mode and scope.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct HeadMask {
    /// The masked query heads.
    pub heads: Vec<HeadId>,
    /// How they are masked.
    pub mode: MaskMode,
    /// When they are masked.
    pub scope: MaskScope,
}

impl fmt::Display for MaskMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaskMode::Uniform => "uniform",
            MaskMode::Zero => "zero",
        })
    }
}

impl FromStr for MaskMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(MaskMode::Uniform),
            "zero" => Ok(MaskMode::Zero),
            other => Err(format!("mask mode `{other}`: expected uniform or zero")),
        }
    }
}

impl fmt::Display for MaskScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaskScope::Decode => "decode",
            MaskScope::All => "all",
        })
    }
}

impl FromStr for MaskScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "decode" => Ok(MaskScope::Decode),
            "all" => Ok(MaskScope::All),
            other => Err(format!("mask scope `{other}`: expected decode or all")),
        }
    }
}
