//! Colour maps used by the charts.
//!
//! * [`score_color`]: retrieval scores, matplotlib's **viridis** (perceptually uniform, readable in
//!   grey-scale and by colour-blind readers): 0 = dark purple `#440154`, half of the maximum = teal
//!   `#21918C`, the maximum = yellow `#FDE725`.
//! * [`pass_color`]: NIAH recall, red `#F0496E` (0) -> yellow `#EBB839` (0.5) -> green `#0CD79F`
//!   (1), the palette of Greg Kamradt's needle-in-a-haystack plots.
//! * [`recall_color`] with [`RecallPalette::ColourBlind`]: NIAH recall on matplotlib's **cividis**
//!   (dark blue `#00224E` at 0 -> grey -> yellow `#FEE838` at 1), made for readers with red-green
//!   colour blindness, for whom the red-green palette's ends look alike.
//! * [`correlation_color`]: correlations, a diverging blue-white-red map (ColorBrewer's RdBu, 7
//!   classes, reversed): -1 = blue `#2166AC`, 0 = near-white `#F7F7F7`, +1 = red `#B2182B`.
//! * [`MISSING_COLOR`]: cells without data.

use plotters::style::RGBColor;

/// Colour of cells without data (empty, NaN or infinite): light grey `#C8C8C8`.
pub const MISSING_COLOR: RGBColor = RGBColor(0xC8, 0xC8, 0xC8);

/// Viridis sampled at 0, 0.1, ..., 1 (matplotlib's values); intermediate values are interpolated.
const VIRIDIS: [RGBColor; 11] = [
    RGBColor(0x44, 0x01, 0x54),
    RGBColor(0x48, 0x24, 0x75),
    RGBColor(0x41, 0x44, 0x87),
    RGBColor(0x35, 0x5F, 0x8D),
    RGBColor(0x2A, 0x78, 0x8E),
    RGBColor(0x21, 0x91, 0x8C),
    RGBColor(0x22, 0xA8, 0x84),
    RGBColor(0x44, 0xBF, 0x70),
    RGBColor(0x7A, 0xD1, 0x51),
    RGBColor(0xBD, 0xDF, 0x26),
    RGBColor(0xFD, 0xE7, 0x25),
];

/// Cividis sampled at 0, 0.1, ..., 1 (matplotlib's values); intermediate values are interpolated.
const CIVIDIS: [RGBColor; 11] = [
    RGBColor(0x00, 0x22, 0x4E),
    RGBColor(0x0C, 0x34, 0x70),
    RGBColor(0x35, 0x45, 0x6C),
    RGBColor(0x4F, 0x57, 0x6C),
    RGBColor(0x66, 0x69, 0x70),
    RGBColor(0x7D, 0x7C, 0x78),
    RGBColor(0x94, 0x8E, 0x77),
    RGBColor(0xAD, 0xA2, 0x72),
    RGBColor(0xC8, 0xB8, 0x66),
    RGBColor(0xE5, 0xCF, 0x52),
    RGBColor(0xFE, 0xE8, 0x38),
];

/// How NIAH recall is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecallPalette {
    /// Red-yellow-green, as needle-in-a-haystack plots are usually drawn ([`pass_color`]).
    #[default]
    Niah,
    /// Cividis: blue-grey-yellow, readable with any colour vision.
    ColourBlind,
}

/// The colour of recall `v` in 0..1 in `palette` (clamped; NaN counts as 0).
pub fn recall_color(v: f64, palette: RecallPalette) -> RGBColor {
    match palette {
        RecallPalette::Niah => pass_color(v),
        RecallPalette::ColourBlind => ramp(&CIVIDIS, v),
    }
}

/// NIAH recall stops: red at 0, yellow at 0.5, green at 1.
const PASS: [RGBColor; 3] = [RGBColor(0xF0, 0x49, 0x6E), RGBColor(0xEB, 0xB8, 0x39), RGBColor(0x0C, 0xD7, 0x9F)];

/// ColorBrewer RdBu (7 classes) from -1 to +1: blue for negative, red for positive correlations.
const RDBU: [RGBColor; 7] = [
    RGBColor(0x21, 0x66, 0xAC),
    RGBColor(0x67, 0xA9, 0xCF),
    RGBColor(0xD1, 0xE5, 0xF0),
    RGBColor(0xF7, 0xF7, 0xF7),
    RGBColor(0xFD, 0xDB, 0xC7),
    RGBColor(0xEF, 0x8A, 0x62),
    RGBColor(0xB2, 0x18, 0x2B),
];

/// Diverging colour of correlation `v` in -1..1: `#2166AC` at -1, `#F7F7F7` at 0, `#B2182B` at +1,
/// linear in between; values outside -1..1 are clamped and NaN gets the colour of 0.
pub fn correlation_color(v: f64) -> RGBColor {
    let v = if v.is_nan() { 0.0 } else { v };
    ramp(&RDBU, (v + 1.0) / 2.0)
}

/// Viridis colour of score `v` on a 0..`max` scale: `v/max` clamped to 0..1, NaN and negatives
/// give the 0 colour `#440154`, `v >= max` the top colour `#FDE725`; a `max` that is not a positive
/// number puts every positive `v` at the top.
pub fn score_color(v: f64, max: f64) -> RGBColor {
    let t = if v.is_nan() || v <= 0.0 {
        0.0
    } else if max.is_finite() && max > 0.0 {
        v / max
    } else {
        1.0
    };
    ramp(&VIRIDIS, t)
}

/// Red-yellow-green colour of recall `v` in 0..1 (`#F0496E` at 0, `#EBB839` at 0.5, `#0CD79F` at
/// 1, linear in between); values outside 0..1 are clamped and NaN counts as 0.
pub fn pass_color(v: f64) -> RGBColor {
    ramp(&PASS, v)
}

/// Linear interpolation through equally spaced `stops` at position `t` (clamped to 0..1, NaN = 0).
fn ramp(stops: &[RGBColor], t: f64) -> RGBColor {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let last = stops.len() - 1;
    let x = t * last as f64;
    let i = (x.floor() as usize).min(last.saturating_sub(1));
    let f = x - i as f64;
    let (a, b) = (stops[i], stops[(i + 1).min(last)]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round().clamp(0.0, 255.0) as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}
