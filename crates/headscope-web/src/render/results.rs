//! The lists under the charts: the sweep's tests, the masked heads, where one head looked, and the
//! before/after rerun with the mask.

use super::charts::context_2d;
use crate::app::{App, KvView, Rerun};
use crate::dom::{self, append, el, js_error, Res};
use crate::protocol::{HeadViewResult, TestResult};
use crate::strings::msg;
use crate::views;
use headscope_core::cot::{accuracy, CotMode, CotRecord};
use wasm_bindgen::JsCast;
use web_sys::{HtmlCanvasElement, HtmlElement};

pub(super) fn tests(a: &App) -> Res<()> {
    let list = &a.dom.tests;
    dom::clear(list);
    let note = a.sweep().and_then(|s| {
        let longest = s.lengths.iter().max().copied()?;
        let times = headscope_engine::sweep::haystack_repeats(s.haystack_tokens, longest)?;
        Some(a.say(msg::HAYSTACK_REPEATED, &[("tokens", &s.haystack_tokens), ("longest", &longest), ("times", &times)]))
    });
    a.dom.sweep_note.set_hidden(note.is_none());
    a.dom.sweep_note.set_text_content(note.as_deref());
    let Some(s) = a.sweep() else { return Ok(()) };
    for (i, r) in s.results.iter().enumerate() {
        let li = el("li", if Some(i) == a.selected_test { "selected" } else { "" }, "")?;
        let _ = li.set_attribute("data-index", &i.to_string());
        append(&li, &el("span", "id", &format!("{} ", r.record.id))?)?;
        // With several needles, which question the test asked.
        if let Some(n) = s.setup.needles.get(r.record.needle_index).filter(|_| s.setup.needles.len() > 1) {
            append(&li, &el("span", "question", &format!("{} ", shortened(&n.question, 60)))?)?;
        }
        let pass = r.record.recall >= 0.5;
        let recall = a.say(msg::RECALL, &[("recall", &format!("{:.2}", r.record.recall))]) + " ";
        append(&li, &el("span", if pass { "pass" } else { "fail" }, &recall)?)?;
        append(&li, &answer_element(a, r)?)?;
        append(list, &li)?;
    }
    Ok(())
}

/// The session's runs, each with its pass rate beside the last run without a mask before it, and the
/// choice of the run the charts show.
pub(super) fn runs(a: &App) -> Res<()> {
    let select = &a.dom.run_shown;
    dom::clear(select);
    for (i, run) in a.runs.iter().enumerate() {
        let option = el("option", "", &views::run_label(a.lang, i, run))?;
        let _ = option.set_attribute("value", &i.to_string());
        append(select, &option)?;
    }
    select.set_value(&a.shown_run.to_string());
    select.set_disabled(a.runs.len() < 2);
    let compare = &a.dom.run_compare;
    dom::clear(compare);
    let none = el("option", "", msg::COMPARE_NOTHING.get(a.lang))?;
    let _ = none.set_attribute("value", "");
    append(compare, &none)?;
    for (i, run) in a.runs.iter().enumerate().filter(|&(i, _)| i != a.shown_run) {
        let option = el("option", "", &views::run_label(a.lang, i, run))?;
        let _ = option.set_attribute("value", &i.to_string());
        append(compare, &option)?;
    }
    compare.set_value(&a.compared().map_or(String::new(), |(i, _)| i.to_string()));
    compare.set_disabled(a.runs.len() < 2);
    let table = &a.dom.runs;
    dom::clear(table);
    if a.runs.is_empty() {
        return Ok(());
    }
    let head = el("tr", "", "")?;
    for t in [msg::TABLE_RUN, msg::TABLE_TESTS, msg::TABLE_PASSED, msg::TABLE_VS_UNMASKED, msg::TABLE_RETRIEVAL_HEADS] {
        append(&head, &el("th", "", t.get(a.lang))?)?;
    }
    append(table, &head)?;
    let mut baseline: Option<f64> = None;
    for (i, run) in a.runs.iter().enumerate() {
        let (passed, total) = views::pass_rate(&run.records(), 0.5);
        let rate = (total > 0).then(|| passed as f64 / total as f64);
        let tr = el("tr", if i == a.shown_run { "selected" } else { "" }, "")?;
        append(&tr, &el("td", "", &views::run_label(a.lang, i, run))?)?;
        append(&tr, &el("td", "", &total.to_string())?)?;
        let passed = rate.map_or("-".into(), |r| a.say(msg::PASSED_COUNT, &[("passed", &passed), ("pct", &format!("{:.0}", 100.0 * r))]));
        append(&tr, &el("td", "", &passed)?)?;
        let change = match (run.mask.is_some(), baseline, rate) {
            (true, Some(b), Some(r)) => a.say(msg::POINTS, &[("delta", &format!("{:+.0}", 100.0 * (r - b)))]),
            _ => "-".into(),
        };
        append(&tr, &el("td", "", &change)?)?;
        let heads = match (run.mask.is_none(), a.run_scores(run)) {
            (true, Some(scores)) if scores.tests() > 0 => {
                let heads = scores.retrieval_heads(headscope_core::RETRIEVAL_THRESHOLD);
                if heads.is_empty() {
                    a.say(msg::NONE, &[])
                } else {
                    heads.iter().map(|(h, _)| h.to_string()).collect::<Vec<_>>().join(", ")
                }
            }
            // A masked run's scores are not the model's: its masked heads cannot hit.
            (false, _) => a.say(msg::MASKED_RUN, &[]),
            _ => "-".into(),
        };
        append(&tr, &el("td", "", &heads)?)?;
        append(table, &tr)?;
        if run.mask.is_none() && rate.is_some() {
            baseline = rate;
        }
    }
    Ok(())
}

/// `text` cut to `max` characters, with an ellipsis when cut.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

pub(super) fn masks(a: &App) -> Res<()> {
    let d = &a.dom;
    dom::clear(&d.masked_list);
    if a.masked.is_empty() {
        d.masked_list.set_text_content(Some(msg::NONE.get(a.lang)));
    }
    for h in &a.masked {
        append(&d.masked_list, &el("span", "chip", &h.to_string())?)?;
    }
    Ok(())
}

pub(super) fn head_view(a: &App) -> Res<()> {
    let d = &a.dom;
    dom::clear(&d.head_steps);
    if let Some(head) = a.watching {
        d.head_info.set_text_content(Some(&a.say(msg::WATCHING_HEAD, &[("head", &head)])));
        return Ok(());
    }
    let Some(v) = &a.head_view else { return Ok(()) };
    if Some(v.head) != a.selected_head {
        return Ok(());
    }
    let hits = v.steps.iter().filter(|s| s.hit).count();
    let args: [(&str, &dyn std::fmt::Display); 5] =
        [("head", &v.head), ("test", &v.test_id), ("context", &v.context), ("hits", &hits), ("steps", &v.steps.len())];
    d.head_info.set_text_content(Some(&a.say(msg::HEAD_VIEW_INFO, &args)));
    let table = el("table", "", "")?;
    let head = el("tr", "", "")?;
    for t in [
        msg::HEAD_TABLE_STEP,
        msg::HEAD_TABLE_TOKEN,
        msg::HEAD_TABLE_PEAK,
        msg::HEAD_TABLE_WEIGHT,
        msg::HEAD_TABLE_CONTEXT,
        msg::HEAD_TABLE_ATTENTION,
    ] {
        append(&head, &el("th", "", t.get(a.lang))?)?;
    }
    append(&table, &head)?;
    for (i, s) in v.steps.iter().enumerate() {
        let tr = el("tr", "", "")?;
        append(&tr, &el("td", "", &i.to_string())?)?;
        append(&tr, &el("td", if s.hit { "hit" } else { "" }, &format!("{:?}", s.token))?)?;
        append(&tr, &el("td", "", &s.argmax.to_string())?)?;
        append(&tr, &el("td", "", &format!("{:.2}", s.peak))?)?;
        let ctx = el("td", "ctx", "")?;
        for (p, text) in &s.window {
            let p = *p as usize;
            let mut class = String::new();
            if (v.needle_tokens[0]..v.needle_tokens[1]).contains(&p) {
                class += "needle ";
            }
            if (v.answer_tokens[0]..v.answer_tokens[1]).contains(&p) {
                class += "answer ";
            }
            if p == s.argmax as usize {
                class += "peak";
            }
            append(&ctx, &el("span", class.trim(), text)?)?;
        }
        append(&tr, &ctx)?;
        let td = el("td", "", "")?;
        append(&td, &strip_canvas(v, &s.strip)?)?;
        append(&tr, &td)?;
        append(&table, &tr)?;
    }
    append(&d.head_steps, &table)
}

pub(super) fn rerun(a: &App) -> Res<()> {
    let d = &a.dom.rerun_result;
    dom::clear(d);
    let (before, after, masked) = match &a.rerun {
        Rerun::None => return Ok(()),
        Rerun::Running => {
            d.set_text_content(Some(msg::RERUNNING.get(a.lang)));
            return Ok(());
        }
        Rerun::Done { before, after, masked } => (before, after, masked),
    };
    before_after(a, d, [(a.say(msg::BEFORE_MASK, &[]), before), (a.say(msg::AFTER_MASK, &[("count", &masked.len())]), after)])?;
    let list: Vec<String> = masked.iter().map(|h| h.to_string()).collect();
    let _ = d.set_attribute("data-masked", &list.join(","));
    let _ = d.set_attribute("data-before", &before.record.answer);
    let _ = d.set_attribute("data-after", &after.record.answer);
    Ok(())
}

/// Two results side by side, each under its title with its recall and answer.
fn before_after(a: &App, into: &HtmlElement, columns: [(String, &TestResult); 2]) -> Res<()> {
    for (title, result) in columns {
        let col = el("div", "", "")?;
        append(&col, &el("h4", "", &title)?)?;
        let pass = result.record.recall >= 0.5;
        let recall = a.say(msg::RECALL, &[("recall", &format!("{:.2}", result.record.recall))]);
        append(&col, &el("div", if pass { "pass" } else { "fail" }, &recall)?)?;
        append(&col, &answer_element(a, result)?)?;
        append(into, &col)?;
    }
    Ok(())
}

/// The answer of a test with copied tokens marked.
fn answer_element(a: &App, r: &TestResult) -> Res<HtmlElement> {
    let span = el("span", "answer", "")?;
    for t in &r.answer {
        let piece = el(if t.copied { "mark" } else { "span" }, "", &t.text)?;
        append(&span, &piece)?;
    }
    if r.answer.is_empty() {
        span.set_text_content(Some(msg::NO_ANSWER.get(a.lang)));
    }
    Ok(span)
}

/// A strip of one step's attention over the whole context: grey intensity = weight, the needle band green.
fn strip_canvas(v: &HeadViewResult, strip: &[f32]) -> Res<HtmlCanvasElement> {
    let canvas: HtmlCanvasElement = dom::document()?.create_element("canvas").map_err(|e| js_error(&e))?.unchecked_into();
    let (w, h) = (strip.len().max(1) as u32, 16u32);
    canvas.set_width(w);
    canvas.set_height(h);
    // One pixel per bin, stretched to a fixed width by CSS (crisp, whatever the context length).
    let _ = canvas.style().set_property("width", "480px");
    let _ = canvas.style().set_property("height", &format!("{h}px"));
    let ctx = context_2d(&canvas)?;
    ctx.set_fill_style_str("#f0f0f0");
    ctx.fill_rect(0.0, 0.0, w as f64, h as f64);
    ctx.set_fill_style_str("#cde9d8");
    let (n0, n1) = (v.needle_tokens[0] / v.bin, v.needle_tokens[1].div_ceil(v.bin));
    ctx.fill_rect(n0 as f64, 0.0, (n1 - n0) as f64, h as f64);
    let max = strip.iter().copied().fold(1e-9f32, f32::max);
    for (x, &w) in strip.iter().enumerate() {
        let t = (w / max).clamp(0.0, 1.0);
        if t < 0.02 {
            continue;
        }
        let shade = (40.0 + 200.0 * (1.0 - t)) as u8;
        ctx.set_fill_style_str(&format!("rgb({shade},{shade},{shade})"));
        let bar = (h as f64 - 2.0) * t as f64;
        ctx.fill_rect(x as f64, h as f64 - 1.0 - bar, 1.0, bar.max(1.0));
    }
    Ok(canvas)
}

/// The chain-of-thought demo: accuracy per mode (rows) and mask (columns), and every answer.
pub(super) fn cot(a: &App) -> Res<()> {
    let d = &a.dom;
    dom::clear(&d.cot_table);
    dom::clear(&d.cot_answers);
    let Some(c) = &a.cot else {
        d.cot_info.set_text_content(Some(""));
        return Ok(());
    };
    let heads = |h: &[headscope_core::HeadId]| h.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ");
    let masks: Vec<String> = c.masks.iter().filter(|(_, h)| !h.is_empty()).map(|(n, h)| format!("{n}: {}", heads(h))).collect();
    let info = a.say(
        msg::COT_INFO,
        &[("done", &c.answers.len()), ("total", &c.total.max(c.answers.len())), ("tasks", &c.tasks.len()), ("masks", &masks.join("; "))],
    );
    d.cot_info.set_text_content(Some(&info));
    let header = el("tr", "", "")?;
    append(&header, &el("th", "", "")?)?;
    for (name, _) in &c.masks {
        append(&header, &el("th", "", name)?)?;
    }
    append(&d.cot_table, &header)?;
    for mode in CotMode::ALL {
        let row = el("tr", "", "")?;
        let label = if mode == CotMode::Direct { msg::COT_DIRECT } else { msg::COT_STEP };
        append(&row, &el("th", "", label.get(a.lang))?)?;
        for (name, _) in &c.masks {
            let records: Vec<&CotRecord> = c.answers.iter().filter(|(m, r)| m == name && r.mode == mode).map(|(_, r)| r).collect();
            let right = records.iter().filter(|r| r.correct).count();
            let cell = if records.is_empty() {
                "–".to_string()
            } else {
                let pct = format!("{:.0}", 100.0 * accuracy(records.iter().copied()));
                a.say(msg::COT_CELL, &[("right", &right), ("n", &records.len()), ("pct", &pct)])
            };
            let td = el("td", "", &cell)?;
            let _ = td.set_attribute("data-mask", name);
            let _ = td.set_attribute("data-mode", mode.name());
            append(&row, &td)?;
        }
        append(&d.cot_table, &row)?;
    }
    for (mask, r) in &c.answers {
        let li = el("li", "", "")?;
        let mode = if r.mode == CotMode::Direct { msg::COT_DIRECT } else { msg::COT_STEP };
        append(&li, &el("span", "id", &a.say(msg::COT_ANSWER_ID, &[("id", &r.id), ("mode", &mode.get(a.lang)), ("mask", mask)]))?)?;
        let verdict = if r.correct { "pass" } else { "fail" };
        let predicted = if r.predicted.is_empty() { "–" } else { &r.predicted };
        append(&li, &el("span", verdict, &format!("{} ", shortened(predicted, 60)))?)?;
        append(&li, &el("span", "question", &a.say(msg::COT_EXPECTED, &[("answer", &r.gold)]))?)?;
        let text = el("div", "answer", &shortened(r.generated.trim(), 240))?;
        text.set_title(&r.generated);
        append(&li, &text)?;
        append(&d.cot_answers, &li)?;
    }
    Ok(())
}

/// The KV-budget rerun: the answer with the whole cache and under the plan, and the memory saved.
pub(super) fn kv(a: &App) -> Res<()> {
    let d = &a.dom;
    dom::clear(&d.kv_result);
    let (before, after, full_kv_heads, kv_heads, sink, window, positions, full_bytes, plan_bytes) = match &a.kv {
        KvView::None => {
            d.kv_info.set_text_content(Some(""));
            return Ok(());
        }
        KvView::Running { .. } => {
            d.kv_info.set_text_content(Some(msg::KV_RUNNING.get(a.lang)));
            return Ok(());
        }
        KvView::Done { before, after, full_kv_heads, kv_heads, sink, window, positions, full_bytes, plan_bytes } => {
            (before, after, full_kv_heads, kv_heads, sink, window, positions, full_bytes, plan_bytes)
        }
    };
    let kib = |b: u64| format!("{:.0}", b as f64 / 1024.0);
    let saved = format!("{:.0}", 100.0 * (1.0 - *plan_bytes as f64 / (*full_bytes).max(1) as f64));
    let info =
        a.say(msg::KV_SAVED, &[("positions", positions), ("plan", &kib(*plan_bytes)), ("whole", &kib(*full_bytes)), ("saved", &saved)]);
    d.kv_info.set_text_content(Some(&info));
    let plan = a.say(msg::KV_PLAN, &[("full", full_kv_heads), ("total", kv_heads), ("sink", sink), ("window", window)]);
    before_after(a, &d.kv_result, [(a.say(msg::KV_WHOLE, &[]), before), (plan, after)])?;
    let _ = d.kv_result.set_attribute("data-before", &before.record.answer);
    let _ = d.kv_result.set_attribute("data-after", &after.record.answer);
    let _ = d.kv_result.set_attribute("data-saved", &saved);
    Ok(())
}
