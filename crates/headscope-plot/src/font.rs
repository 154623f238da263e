//! The embedded font, registered with plotters once before anything is drawn.

use crate::error::PlotError;

/// Family name under which the embedded font is registered (and which SVG/canvas text names).
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// The embedded DejaVu Sans TrueType file (Bitstream Vera licence, see assets/LICENSE-DejaVu.txt).
pub static FONT_TTF: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers [`FONT_TTF`] with plotters (under [`FONT_FAMILY`] and plotters' default
/// "sans-serif") the first time it is called; later calls return the first outcome.
///
/// On wasm32 plotters draws text through the browser, which has no registry: nothing to do.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn ensure_font() -> Result<(), PlotError> {
    use plotters::style::{register_font, FontStyle};
    use std::sync::OnceLock;
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for family in [FONT_FAMILY, "sans-serif"] {
                register_font(family, FontStyle::Normal, FONT_TTF)
                    .map_err(|_| format!("the embedded font is not a valid TrueType file ({family})"))?;
            }
            Ok(())
        })
        .clone()
        .map_err(PlotError::Drawing)
}

/// Registers the embedded font (a no-op on wasm32, where the browser draws text).
#[cfg(target_arch = "wasm32")]
pub(crate) fn ensure_font() -> Result<(), PlotError> {
    Ok(())
}
