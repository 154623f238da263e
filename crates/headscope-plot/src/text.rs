//! Text on pixel backends, drawn with the embedded font.
//!
//! plotters' own `ab_glyph` text path places each glyph without its left side bearing (so "score"
//! comes out as "scor e") and anchors text a few pixels high. Vector backends (SVG, canvas) hand
//! text to the viewer and are unaffected; for PNG files the save helpers wrap the bitmap backend in
//! [`EmbeddedText`], which rasterises text itself with the embedded font, sized and anchored like
//! plotters' SVG output (1 em = size / 1.24 px; top, middle and bottom anchors as SVG places them).

use crate::font::FONT_TTF;
use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters::prelude::DrawingBackend;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind};
use std::sync::OnceLock;

/// Pixels per em for a plotters text size (plotters' SVG backend uses the same ratio).
const SIZE_PER_EM: f64 = 1.24;
/// DejaVu Sans x-height in em (1120 / 2048 units), the CSS `ex` the SVG anchors use.
const X_HEIGHT_EM: f32 = 0.547;

/// The embedded font, parsed once (None if it cannot be parsed, which the tests rule out).
fn font() -> Option<&'static FontRef<'static>> {
    static FONT: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_TTF).ok()).as_ref()
}

/// The error text drawing reports when the embedded font is unusable.
#[derive(Debug)]
struct FontUnavailable;

impl std::fmt::Display for FontUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the embedded DejaVu Sans font cannot be parsed")
    }
}

impl std::error::Error for FontUnavailable {}

/// Glyph scale and em size for a plotters text size.
fn scale_for(font: &FontRef<'static>, size: f64) -> (PxScale, f32) {
    let em = (size / SIZE_PER_EM) as f32;
    let upm = font.units_per_em().unwrap_or(2048.0);
    (PxScale::from(em * font.height_unscaled() / upm), em)
}

/// Advance width of `text` in pixels (with kerning).
fn advance(font: &FontRef<'static>, scale: PxScale, text: &str) -> f32 {
    let scaled = font.as_scaled(scale);
    let mut x = 0.0;
    let mut prev = None;
    for c in text.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            x += scaled.kern(p, id);
        }
        x += scaled.h_advance(id);
        prev = Some(id);
    }
    x
}

/// A pixel backend whose text is rasterised with the embedded font (everything else is passed
/// through to `inner` unchanged).
pub(crate) struct EmbeddedText<DB> {
    inner: DB,
}

impl<DB: DrawingBackend> EmbeddedText<DB> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: DB) -> Self {
        EmbeddedText { inner }
    }
}

impl<DB: DrawingBackend> DrawingBackend for EmbeddedText<DB> {
    type ErrorType = DB::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vert, style)
    }

    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }

    /// Width = advance of the text, height = ascent - descent (both before any rotation).
    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let font = font().ok_or_else(|| DrawingErrorKind::FontError(Box::new(FontUnavailable)))?;
        let (scale, _) = scale_for(font, style.size());
        let scaled = font.as_scaled(scale);
        let w = advance(font, scale, text).ceil().max(0.0) as u32;
        let h = (scaled.ascent() - scaled.descent()).ceil().max(0.0) as u32;
        Ok((w, h))
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 || text.is_empty() {
            return Ok(());
        }
        let font = font().ok_or_else(|| DrawingErrorKind::FontError(Box::new(FontUnavailable)))?;
        let (scale, em) = scale_for(font, style.size());
        let scaled = font.as_scaled(scale);
        let width = advance(font, scale, text);
        let anchor = style.anchor();
        // Unrotated offsets from the anchor to the start of the baseline.
        let x0 = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let baseline = match anchor.v_pos {
            VPos::Top => 0.76 * em,
            VPos::Center => 0.5 * X_HEIGHT_EM * em,
            VPos::Bottom => -0.5 * X_HEIGHT_EM * em,
        };
        let trans = style.transform();
        let (w, h) = self.inner.get_size();
        let mut caret = x0;
        let mut prev = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scale, point(caret, baseline));
            caret += scaled.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            let (bx, by) = (bounds.min.x as i32, bounds.min.y as i32);
            let mut result = Ok(());
            outline.draw(|gx, gy, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let (dx, dy) = trans.transform(bx + gx as i32, by + gy as i32);
                let (x, y) = (pos.0 + dx, pos.1 + dy);
                if x >= 0 && y >= 0 && x < w as i32 && y < h as i32 {
                    let alpha = color.alpha * f64::from(coverage.min(1.0));
                    result = self.inner.draw_pixel((x, y), BackendColor { alpha, rgb: color.rgb });
                }
            });
            result?;
        }
        Ok(())
    }
}
