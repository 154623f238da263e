//! The charts: the NIAH grid, the score and activation heatmaps (drawn by headscope-plot on canvases),
//! and which cell a click on them lands in.

use crate::app::{App, SweepView};
use crate::dom::{self, js_error, Res};
use crate::strings::msg;
use crate::views;
use headscope_core::{HeadId, HeadScores, HeadShape};
use headscope_plot::plotters;
use headscope_plot::{CellMap, Grid, RecallPalette};
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use wasm_bindgen::JsCast;
use web_sys::HtmlCanvasElement;

/// The shown head scores and their title ([`App::shown_scores`]), computed once per drawing.
pub(super) type Shown<'a> = Option<&'a (HeadScores, String)>;

pub(super) fn charts(a: &App, shown: Shown) -> Res<()> {
    // NIAH grid.
    if let Some(s) = a.sweep().filter(|s| !s.lengths.is_empty() && !s.depths.is_empty()) {
        let grid = niah_grid_of(s);
        let palette = palette(a);
        draw_on(&a.dom.niah_canvas, (720, 400), |area| {
            headscope_plot::draw_niah_grid_in(area, &grid, &s.lengths, &s.depths, &niah_title(a), palette, &niah_names(a))
        })?;
        let (passed, total) = views::pass_rate(&s.records(), 0.5);
        let run = views::run_label(a.lang, a.shown_run, s);
        let mut summary = a.say(msg::SUMMARY, &[("run", &run), ("passed", &passed), ("total", &total)]);
        if let Some((scores, _)) = shown.filter(|_| a.shown == crate::app::Source::Sweep) {
            let heads = scores.retrieval_heads(headscope_core::RETRIEVAL_THRESHOLD);
            let heads = if heads.is_empty() {
                a.say(msg::NONE_YET, &[])
            } else {
                heads.iter().map(|(h, m)| format!("{h} ({m:.2})")).collect::<Vec<_>>().join(", ")
            };
            summary += &a.say(msg::SUMMARY_SCORES, &[("tests", &scores.tests()), ("gate", &a.gate()), ("heads", &heads)]);
        }
        a.dom.summary.set_text_content(Some(&summary));
    }
    compare(a, shown)?;
    // Head heatmaps.
    if let Some((grid, title)) = heads_grid(a, shown) {
        let size = headscope_plot::head_heatmap_size(&grid);
        draw_on(&a.dom.heads_canvas, size, |area| {
            headscope_plot::draw_head_heatmap_named(area, &grid, &title, &head_names(a, msg::AXIS_SCORE))
        })?;
        mark_heads(a, &grid, &title)?;
        let activation = shown.filter(|(s, _)| s.tests() > 0).map(|(s, _)| views::activation_grid(s));
        let activation = activation.unwrap_or_else(|| Grid::new(grid.rows, grid.cols));
        draw_on(&a.dom.activation_canvas, size, |area| {
            headscope_plot::draw_head_heatmap_named(area, &activation, &a.say(msg::ACTIVATION_TITLE, &[]), &head_names(a, msg::AXIS_SHARE))
        })?;
    }
    Ok(())
}

/// The shown run beside the compared one: pass rates, the compared run's needle grid, and how every
/// head's score changed between them. `shown` are the shown run's scores when the charts show the
/// sweep (aggregated once per drawing); only the compared run's are aggregated here.
fn compare(a: &App, shown_scores: Shown) -> Res<()> {
    let d = &a.dom;
    let (Some(shown), Some((_, other))) = (a.sweep(), a.compared()) else {
        d.compare.set_hidden(true);
        return Ok(());
    };
    d.compare.set_hidden(false);
    let rate = |run: &SweepView| {
        let (passed, total) = views::pass_rate(&run.records(), 0.5);
        (passed, total, (total > 0).then(|| 100.0 * passed as f64 / total as f64))
    };
    let other_index = a.compared().map_or(0, |(i, _)| i);
    let describe = |index: usize, run: &SweepView| {
        let (passed, total, pct) = rate(run);
        let label = views::run_label(a.lang, index, run);
        let pct = pct.map_or(String::new(), |p| a.say(msg::PERCENT, &[("pct", &format!("{p:.0}"))]));
        a.say(msg::COMPARE_RUN, &[("run", &label), ("passed", &passed), ("total", &total)]) + &pct
    };
    let mut summary = format!("{} · {}", describe(a.shown_run, shown), describe(other_index, other));
    if let (Some(p), Some(q)) = (rate(shown).2, rate(other).2) {
        summary += &a.say(msg::COMPARE_CHANGE, &[("delta", &format!("{:+.0}", p - q))]);
    }
    if !other.lengths.is_empty() && !other.depths.is_empty() {
        let grid = niah_grid_of(other);
        let palette = palette(a);
        draw_on(&d.compare_niah_canvas, (720, 400), |area| {
            headscope_plot::draw_niah_grid_in(
                area,
                &grid,
                &other.lengths,
                &other.depths,
                &views::run_label(a.lang, other_index, other),
                palette,
                &niah_names(a),
            )
        })?;
    }
    let after = match shown_scores.filter(|_| a.shown == crate::app::Source::Sweep) {
        Some((scores, _)) => Some(std::borrow::Cow::Borrowed(scores)),
        None => a.run_scores(shown).map(std::borrow::Cow::Owned),
    };
    match (after, a.run_scores(other)) {
        (Some(after), Some(before)) if after.tests() > 0 && before.tests() > 0 => {
            let change = views::score_change(&after, &before)?;
            let (this, that) = (views::run_short_label(a.lang, a.shown_run), views::run_short_label(a.lang, other_index));
            let title = a.say(msg::SCORE_CHANGE_TITLE, &[("a", &this), ("b", &that)]);
            draw_on(&d.compare_diff_canvas, headscope_plot::head_heatmap_size(&change), |area| {
                headscope_plot::draw_head_difference(area, &change, &title, &head_names(a, msg::AXIS_CHANGE))
            })?;
        }
        _ => summary += &a.say(msg::COMPARE_NO_SCORES, &[]),
    }
    d.compare_summary.set_text_content(Some(&summary));
    Ok(())
}

/// The NIAH grid's title in the page's language.
fn niah_title(a: &App) -> String {
    a.say(msg::NIAH_TITLE, &[])
}

/// The NIAH grid's axis words in the page's language.
fn niah_names(a: &App) -> headscope_plot::AxisNames<'static> {
    headscope_plot::AxisNames {
        x: msg::AXIS_LENGTH.get(a.lang),
        y: msg::AXIS_DEPTH.get(a.lang),
        y_attention: msg::AXIS_DEPTH.get(a.lang),
        legend: msg::AXIS_RECALL.get(a.lang),
    }
}

/// A head chart's axis words in the page's language, its legend captioned `legend`.
fn head_names(a: &App, legend: crate::strings::Text) -> headscope_plot::AxisNames<'static> {
    headscope_plot::AxisNames {
        x: msg::AXIS_HEAD.get(a.lang),
        y: msg::AXIS_LAYER.get(a.lang),
        y_attention: msg::AXIS_ATTENTION_LAYER.get(a.lang),
        legend: legend.get(a.lang),
    }
}

fn palette(a: &App) -> RecallPalette {
    if a.dom.palette.value() == "colour-blind" {
        RecallPalette::ColourBlind
    } else {
        RecallPalette::Niah
    }
}

/// The head heatmap's grid and title: the shown scores, or an empty grid of the model's shape; a
/// hybrid model's rows labelled with its attention layers.
fn heads_grid(a: &App, shown: Shown) -> Option<(Grid, String)> {
    let (grid, title) = match shown {
        // Scores of no tests yet draw the model's empty grid, unless they are of another shape (an
        // imported file of a model whose detect run scored no test: its grid, all zero).
        Some((scores, title))
            if scores.tests() > 0 || a.model.as_ref().is_none_or(|m| HeadShape::new(m.layers, m.heads) != scores.shape()) =>
        {
            (views::score_grid(scores), title.clone())
        }
        _ => {
            let m = a.model.as_ref()?;
            (Grid::new(m.layers, m.heads), a.say(msg::SCORES_TITLE_EMPTY, &[("model", &m.name)]))
        }
    };
    let rows = a.model.as_ref().and_then(|m| m.attention_layers.clone()).filter(|rows| rows.len() == grid.rows);
    Some((grid.with_row_numbers(rows), title))
}

/// Outlines the selected head and crosses out masked heads on the score heatmap.
fn mark_heads(a: &App, grid: &Grid, title: &str) -> Res<()> {
    let canvas = &a.dom.heads_canvas;
    let cells = cells_of(canvas, |area| headscope_plot::head_heatmap_cells(area, grid, title, &head_names(a, msg::AXIS_SCORE)))?;
    if let Ok(window) = dom::window() {
        let json =
            serde_json::json!({"x0": cells.x0, "y0": cells.y0, "x1": cells.x1, "y1": cells.y1, "rows": cells.rows, "cols": cells.cols});
        let _ = js_sys::Reflect::set(&window, &"__headscopeHeadCells".into(), &json.to_string().into());
    }
    let ctx = context_2d(canvas)?;
    for h in &a.masked {
        if h.layer >= cells.rows || h.head >= cells.cols {
            continue;
        }
        let (x0, y0, x1, y1) = cells.cell_rect(h.layer, h.head);
        // A white cross over a dark one: legible on the dark and on the yellow end of the colour scale.
        for (colour, width) in [("#1a1a1a", 4.0), ("#ffffff", 2.0)] {
            ctx.set_stroke_style_str(colour);
            ctx.set_line_width(width);
            ctx.begin_path();
            ctx.move_to(x0 as f64 + 3.0, y0 as f64 + 3.0);
            ctx.line_to(x1 as f64 - 4.0, y1 as f64 - 4.0);
            ctx.move_to(x1 as f64 - 4.0, y0 as f64 + 3.0);
            ctx.line_to(x0 as f64 + 3.0, y1 as f64 - 4.0);
            ctx.stroke();
        }
    }
    // The keyboard's head: a dashed outline, white over dark.
    if let Some(h) = a.head_cursor.filter(|h| h.layer < cells.rows && h.head < cells.cols) {
        let (x0, y0, x1, y1) = cells.cell_rect(h.layer, h.head);
        for (colour, width, dash) in [("#1a1a1a", 4.0, 0.0), ("#ffffff", 2.0, 4.0)] {
            ctx.set_stroke_style_str(colour);
            ctx.set_line_width(width);
            let pattern = js_sys::Array::new();
            if dash > 0.0 {
                pattern.push(&dash.into());
                pattern.push(&dash.into());
            }
            let _ = ctx.set_line_dash(&pattern);
            ctx.stroke_rect(x0 as f64 + 1.0, y0 as f64 + 1.0, (x1 - x0) as f64 - 3.0, (y1 - y0) as f64 - 3.0);
        }
        let _ = ctx.set_line_dash(&js_sys::Array::new());
    }
    if let Some(h) = a.selected_head.filter(|h| h.layer < cells.rows && h.head < cells.cols) {
        let (x0, y0, x1, y1) = cells.cell_rect(h.layer, h.head);
        ctx.set_stroke_style_str("#e8336d");
        ctx.set_line_width(3.0);
        ctx.stroke_rect(x0 as f64 + 1.5, y0 as f64 + 1.5, (x1 - x0) as f64 - 4.0, (y1 - y0) as f64 - 4.0);
    }
    Ok(())
}

/// Layers x heads of the score heatmap as drawn.
pub(crate) fn heads_shape(a: &App) -> Option<(usize, usize)> {
    heads_grid(a, a.shown_scores().as_ref()).map(|(g, _)| (g.rows, g.cols)).filter(|&(r, c)| r > 0 && c > 0)
}

/// What the keyboard's head is, for screen readers and the caption.
pub(super) fn head_cursor_text(a: &App, shown: Shown) -> String {
    let Some(h) = a.head_cursor else { return String::new() };
    let score = shown.filter(|(s, _)| s.tests() > 0 && s.shape().check(&[h]).is_ok()).map(|(s, _)| s.mean(h));
    let mut text = a.say(msg::HEAD_CURSOR, &[("head", &h)]);
    if let Some(m) = score {
        text += &a.say(msg::HEAD_CURSOR_SCORE, &[("score", &format!("{m:.2}"))]);
        if m > headscope_core::RETRIEVAL_THRESHOLD {
            text += msg::HEAD_CURSOR_RETRIEVAL.get(a.lang);
        }
    }
    if a.masked.contains(&h) {
        text += msg::HEAD_CURSOR_MASKED.get(a.lang);
    }
    text + msg::HEAD_CURSOR_KEYS.get(a.lang)
}

/// The head under canvas pixel (`x`, `y`) of the score heatmap, if any.
pub(crate) fn head_at(a: &App, x: i32, y: i32) -> Res<Option<HeadId>> {
    let Some((grid, title)) = heads_grid(a, a.shown_scores().as_ref()) else { return Ok(None) };
    let cells =
        cells_of(&a.dom.heads_canvas, |area| headscope_plot::head_heatmap_cells(area, &grid, &title, &head_names(a, msg::AXIS_SCORE)))?;
    Ok(cells.cell_at(x, y).map(|(layer, head)| HeadId::new(layer, head)))
}

/// The index in the sweep of the test under canvas pixel (`x`, `y`) of the NIAH grid, if any.
pub(crate) fn test_at(a: &App, x: i32, y: i32) -> Res<Option<usize>> {
    let Some(s) = a.sweep() else { return Ok(None) };
    let grid = niah_grid_of(s);
    let cells = cells_of(&a.dom.niah_canvas, |area| {
        headscope_plot::niah_grid_cells(area, &grid, &s.lengths, &s.depths, &niah_title(a), &niah_names(a))
    })?;
    let Some((d, l)) = cells.cell_at(x, y) else { return Ok(None) };
    Ok(s.results.iter().position(|r| r.record.length == s.lengths[l] && r.record.depth_percent == s.depths[d]))
}

/// Offers the chart on `canvas` as a PNG download called `name`.
pub(crate) fn export_png(canvas: &HtmlCanvasElement, name: &str) -> Res<()> {
    let url = canvas.to_data_url_with_type("image/png").map_err(|e| js_error(&e))?;
    dom::download_url(name, &url)
}

fn niah_grid_of(s: &SweepView) -> Grid {
    views::niah_grid(&s.records(), &s.lengths, &s.depths)
}

/// Measures the cell layout of a chart on `canvas`.
fn cells_of(
    canvas: &HtmlCanvasElement,
    f: impl FnOnce(&DrawingArea<CanvasBackend, plotters::coord::Shift>) -> Result<CellMap, headscope_plot::PlotError>,
) -> Res<CellMap> {
    let backend = CanvasBackend::with_canvas_object(canvas.clone()).ok_or("the canvas has no 2-D context")?;
    f(&backend.into_drawing_area()).map_err(|e| e.to_string())
}

/// Draws with `f` on `canvas`, sized `size`.
fn draw_on(
    canvas: &HtmlCanvasElement,
    size: (u32, u32),
    f: impl FnOnce(&DrawingArea<CanvasBackend, plotters::coord::Shift>) -> Result<(), headscope_plot::PlotError>,
) -> Res<()> {
    if canvas.width() != size.0 || canvas.height() != size.1 {
        canvas.set_width(size.0);
        canvas.set_height(size.1);
    }
    let backend = CanvasBackend::with_canvas_object(canvas.clone()).ok_or("the canvas has no 2-D context")?;
    let area = backend.into_drawing_area();
    f(&area).map_err(|e| e.to_string())?;
    area.present().map_err(|e| e.to_string())
}

pub(super) fn context_2d(canvas: &HtmlCanvasElement) -> Res<web_sys::CanvasRenderingContext2d> {
    canvas.get_context("2d").map_err(|e| js_error(&e))?.ok_or("no 2-D context")?.dyn_into().map_err(|_| "no 2-D context".to_string())
}
