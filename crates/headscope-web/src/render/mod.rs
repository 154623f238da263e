//! Draws the page from the [`App`]'s state: nothing here changes the state, and everything the page
//! shows is drawn here (the model panel, the controls and progress here; the charts in [`charts`];
//! the tests, masks, head view and rerun in [`results`]).

mod charts;
mod results;

pub(crate) use charts::{export_png, head_at, heads_shape, test_at};

use crate::app::{rate, App, Busy, Source};
use crate::dom::{self, by_id, Res};
use crate::strings::{self, msg, Lang};
use crate::{lessons, views};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{HtmlButtonElement, HtmlCanvasElement, HtmlElement, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};

/// The page's elements, looked up once.
pub(crate) struct Dom {
    pub badge: HtmlElement,
    pub backend: HtmlSelectElement,
    pub status: HtmlElement,
    pub error: HtmlElement,
    pub error_text: HtmlElement,
    pub model_panel: HtmlElement,
    pub model_files: HtmlInputElement,
    pub model_url: HtmlInputElement,
    pub model_info: HtmlElement,
    pub needle: HtmlTextAreaElement,
    pub question: HtmlInputElement,
    pub answer: HtmlInputElement,
    pub needles_file: HtmlInputElement,
    pub needles_clear: HtmlButtonElement,
    pub needles_info: HtmlElement,
    pub haystack: HtmlTextAreaElement,
    pub haystack_file: HtmlInputElement,
    pub haystack_info: HtmlElement,
    pub lengths: HtmlInputElement,
    pub depths: HtmlInputElement,
    pub max_new: HtmlInputElement,
    pub gate: HtmlInputElement,
    pub plain: HtmlInputElement,
    pub run: HtmlButtonElement,
    pub cancel: HtmlButtonElement,
    pub progress: web_sys::HtmlProgressElement,
    pub progress_text: HtmlElement,
    pub summary: HtmlElement,
    pub niah_canvas: HtmlCanvasElement,
    pub heads_canvas: HtmlCanvasElement,
    pub activation_canvas: HtmlCanvasElement,
    pub scores_source: HtmlSelectElement,
    pub score_kind: HtmlSelectElement,
    pub score_note: HtmlElement,
    pub measure_every: HtmlInputElement,
    pub cot_set: HtmlSelectElement,
    pub cot_count: HtmlInputElement,
    pub cot_k: HtmlInputElement,
    pub cot_seed: HtmlInputElement,
    pub cot_max: HtmlInputElement,
    pub cot_run: HtmlButtonElement,
    pub cot_info: HtmlElement,
    pub cot_table: HtmlElement,
    pub cot_answers: HtmlElement,
    pub kv_policy: HtmlSelectElement,
    pub kv_window: HtmlInputElement,
    pub kv_window_value: HtmlElement,
    pub kv_sink: HtmlInputElement,
    pub kv_rerun: HtmlButtonElement,
    pub kv_info: HtmlElement,
    pub kv_result: HtmlElement,
    pub run_shown: HtmlSelectElement,
    pub runs: HtmlElement,
    pub tests: HtmlElement,
    pub sweep_note: HtmlElement,
    pub head_info: HtmlElement,
    pub head_steps: HtmlElement,
    pub masked_list: HtmlElement,
    pub mask_k: HtmlInputElement,
    pub mask_random_k: HtmlInputElement,
    pub mask_seed: HtmlInputElement,
    pub mask_mode: HtmlSelectElement,
    pub mask_scope: HtmlSelectElement,
    pub rerun: HtmlButtonElement,
    pub sweep_masked: HtmlButtonElement,
    pub rerun_result: HtmlElement,
    pub import_scores: HtmlInputElement,
    pub export_buttons: Vec<HtmlButtonElement>,
    pub import_info: HtmlElement,
    pub lesson_toggle: HtmlButtonElement,
    pub lesson_panel: HtmlElement,
    pub lesson_title: HtmlElement,
    pub lesson_count: HtmlElement,
    pub lesson_body: HtmlElement,
    pub lesson_prev: HtmlButtonElement,
    pub lesson_next: HtmlButtonElement,
    pub heads_cursor: HtmlElement,
    pub palette: HtmlSelectElement,
    pub run_compare: HtmlSelectElement,
    pub compare: HtmlElement,
    pub compare_summary: HtmlElement,
    pub compare_niah_canvas: HtmlCanvasElement,
    pub compare_diff_canvas: HtmlCanvasElement,
    pub save_session: HtmlButtonElement,
    pub open_session: HtmlInputElement,
    pub lang: HtmlSelectElement,
}

impl Dom {
    pub(crate) fn find() -> Res<Dom> {
        Ok(Dom {
            badge: by_id("backend-badge")?,
            backend: by_id("backend")?,
            status: by_id("status")?,
            error: by_id("error")?,
            error_text: by_id("error-text")?,
            model_panel: by_id("model-panel")?,
            model_files: by_id("model-files")?,
            model_url: by_id("model-url")?,
            model_info: by_id("model-info")?,
            needle: by_id("needle")?,
            question: by_id("question")?,
            answer: by_id("answer")?,
            needles_file: by_id("needles-file")?,
            needles_clear: by_id("needles-clear")?,
            needles_info: by_id("needles-info")?,
            haystack: by_id("haystack")?,
            haystack_file: by_id("haystack-file")?,
            haystack_info: by_id("haystack-info")?,
            lengths: by_id("lengths")?,
            depths: by_id("depths")?,
            max_new: by_id("max-new")?,
            gate: by_id("gate")?,
            plain: by_id("plain")?,
            run: by_id("run")?,
            cancel: by_id("cancel")?,
            progress: by_id("progress")?,
            progress_text: by_id("progress-text")?,
            summary: by_id("summary")?,
            niah_canvas: by_id("niah-canvas")?,
            heads_canvas: by_id("heads-canvas")?,
            activation_canvas: by_id("activation-canvas")?,
            scores_source: by_id("scores-source")?,
            score_kind: by_id("score-kind")?,
            score_note: by_id("score-note")?,
            measure_every: by_id("measure-every")?,
            cot_set: by_id("cot-set")?,
            cot_count: by_id("cot-count")?,
            cot_k: by_id("cot-k")?,
            cot_seed: by_id("cot-seed")?,
            cot_max: by_id("cot-max")?,
            cot_run: by_id("cot-run")?,
            cot_info: by_id("cot-info")?,
            cot_table: by_id("cot-table")?,
            cot_answers: by_id("cot-answers")?,
            kv_policy: by_id("kv-policy")?,
            kv_window: by_id("kv-window")?,
            kv_window_value: by_id("kv-window-value")?,
            kv_sink: by_id("kv-sink")?,
            kv_rerun: by_id("kv-rerun")?,
            kv_info: by_id("kv-info")?,
            kv_result: by_id("kv-result")?,
            run_shown: by_id("run-shown")?,
            runs: by_id("runs")?,
            tests: by_id("tests")?,
            sweep_note: by_id("sweep-note")?,
            head_info: by_id("head-info")?,
            head_steps: by_id("head-steps")?,
            masked_list: by_id("masked-list")?,
            mask_k: by_id("mask-k")?,
            mask_random_k: by_id("mask-random-k")?,
            mask_seed: by_id("mask-seed")?,
            mask_mode: by_id("mask-mode")?,
            mask_scope: by_id("mask-scope")?,
            rerun: by_id("rerun")?,
            sweep_masked: by_id("sweep-masked")?,
            rerun_result: by_id("rerun-result")?,
            import_scores: by_id("import-scores")?,
            export_buttons: ["export-scores", "export-tests", "export-niah", "export-heads", "export-activation"]
                .iter()
                .map(|id| by_id(id))
                .collect::<Res<_>>()?,
            import_info: by_id("import-info")?,
            lesson_toggle: by_id("lesson-toggle")?,
            lesson_panel: by_id("lesson-panel")?,
            lesson_title: by_id("lesson-title")?,
            lesson_count: by_id("lesson-count")?,
            lesson_body: by_id("lesson-body")?,
            lesson_prev: by_id("lesson-prev")?,
            lesson_next: by_id("lesson-next")?,
            heads_cursor: by_id("heads-cursor")?,
            palette: by_id("palette")?,
            run_compare: by_id("run-compare")?,
            compare: by_id("compare")?,
            compare_summary: by_id("compare-summary")?,
            compare_niah_canvas: by_id("compare-niah-canvas")?,
            compare_diff_canvas: by_id("compare-diff-canvas")?,
            save_session: by_id("save-session")?,
            open_session: by_id("open-session")?,
            lang: by_id("lang")?,
        })
    }
}

/// Draws the whole page.
pub(crate) fn render(a: &App) {
    let state = match a.busy {
        Busy::Starting => "starting",
        Busy::Loading => "loading",
        Busy::Sweep => "running",
        Busy::Test => "testing",
        Busy::Cot => "cot",
        Busy::Idle if a.model.is_some() => "ready",
        Busy::Idle => "no-model",
    };
    if let Some(body) = dom::document().ok().and_then(|d| d.body()) {
        let _ = body.set_attribute("data-state", state);
    }
    // Aggregated from the records once per drawing, for the charts, the buttons and the mirror.
    let shown = a.shown_scores();
    language(a);
    status_lines(a);
    lesson(a);
    model_panel(a);
    controls(a, shown.is_some());
    progress(a);
    a.dom.heads_cursor.set_text_content(Some(&charts::head_cursor_text(a, shown.as_ref())));
    if let Err(e) = charts::charts(a, shown.as_ref()) {
        a.dom.summary.set_text_content(Some(&a.say(msg::CHARTS_FAILED, &[("error", &e)])));
    }
    for (part, r) in [
        ("runs", results::runs(a)),
        ("tests", results::tests(a)),
        ("masks", results::masks(a)),
        ("head-view", results::head_view(a)),
        ("cot", results::cot(a)),
        ("kv", results::kv(a)),
    ] {
        if let Err(e) = r {
            web_sys::console::warn_1(&format!("the {part} could not be drawn: {e}").into());
        }
    }
    // On a narrow screen the results are below the inputs: a starting sweep brings them into view.
    if a.scroll_to_results.replace(false) {
        let below = dom::window().ok().and_then(|w| w.inner_height().ok()).and_then(|h| h.as_f64());
        if below.is_some_and(|h| a.dom.summary.get_bounding_client_rect().top() > h) {
            a.dom.summary.scroll_into_view();
        }
    }
    if let Err(e) = results::rerun(a) {
        a.dom.rerun_result.set_text_content(Some(&a.say(msg::RERUN_FAILED, &[("error", &e)])));
    }
    publish(a, shown.as_ref());
}

/// Draws what changes while typing or dragging: the status line, the error banner, the haystack's
/// size and the drop target. Nothing `window.__headscope` mirrors changes then (those messages
/// cannot fail), so the sweep is not serialised again on every keystroke.
pub(crate) fn light(a: &App) {
    status_lines(a);
}

fn status_lines(a: &App) {
    let d = &a.dom;
    d.status.set_text_content(Some(&(a.status)(a.lang)));
    match &a.banner {
        Some(message) => {
            d.error_text.set_text_content(Some(message));
            d.error.set_hidden(false);
        }
        None => {
            d.error_text.set_text_content(Some(""));
            d.error.set_hidden(true);
        }
    }
    d.haystack_info.set_text_content(Some(&a.say(msg::HAYSTACK_SIZE, &[("count", &d.haystack.value().chars().count())])));
    let classes = d.model_panel.class_list();
    let _ = if a.dragging { classes.add_1("dragging") } else { classes.remove_1("dragging") };
}

/// Sets the markup's strings ([`strings::UI`]) and the glossary in the page's language when it changed.
fn language(a: &App) {
    a.dom.lang.set_value(a.lang.code());
    if a.lang_shown.get() == Some(a.lang) {
        return;
    }
    a.lang_shown.set(Some(a.lang));
    let Ok(doc) = dom::document() else { return };
    if let Some(root) = doc.document_element() {
        let _ = root.set_attribute("lang", if a.lang == Lang::Zh { "zh-Hans" } else { "en" });
    }
    for (selector, attribute) in [
        ("[data-i18n]", None),
        ("[data-i18n-title]", Some("title")),
        ("[data-i18n-placeholder]", Some("placeholder")),
        ("[data-i18n-aria-label]", Some("aria-label")),
    ] {
        let Ok(nodes) = doc.query_selector_all(selector) else { continue };
        let data = selector.trim_matches(|c| c == '[' || c == ']');
        for i in 0..nodes.length() {
            let Some(e) = nodes.item(i).and_then(|n| n.dyn_into::<web_sys::Element>().ok()) else { continue };
            let Some(text) = e.get_attribute(data).and_then(|k| strings::lookup(&k, a.lang)) else { continue };
            let _ = match attribute {
                None => {
                    e.set_text_content(Some(text));
                    Ok(())
                }
                Some(name) => e.set_attribute(name, text),
            };
        }
    }
    if let Err(e) = glossary(a.lang) {
        web_sys::console::warn_1(&format!("the glossary could not be drawn: {e}").into());
    }
    // The lesson is drawn again in the new language.
    let _ = a.dom.lesson_body.remove_attribute("data-step");
}

/// The lessons' side panel: the shown step, or hidden.
fn lesson(a: &App) {
    let d = &a.dom;
    let step = a.lesson.and_then(|i| Some((i, lessons::STEPS.get(i)?)));
    d.lesson_panel.set_hidden(step.is_none());
    let _ = d.lesson_toggle.set_attribute("aria-expanded", if step.is_some() { "true" } else { "false" });
    if let Some(body) = dom::document().ok().and_then(|doc| doc.body()) {
        let classes = body.class_list();
        let _ = if step.is_some() { classes.add_1("lesson-open") } else { classes.remove_1("lesson-open") };
    }
    let Some((i, step)) = step else { return };
    let count = a.say(msg::LESSON_COUNT, &[("i", &(i + 1)), ("n", &lessons::STEPS.len())]);
    d.lesson_count.set_text_content(Some(&count));
    d.lesson_title.set_text_content(Some(step.title.get(a.lang)));
    // Drawn only when the step changed: a redraw must not reset a student's text selection.
    if d.lesson_body.get_attribute("data-step").as_deref() != Some(&i.to_string()) {
        if let Err(e) = lesson_body(&d.lesson_body, step, a.lang) {
            web_sys::console::warn_1(&format!("the lesson could not be drawn: {e}").into());
        }
        let _ = d.lesson_body.set_attribute("data-step", &i.to_string());
    }
    d.lesson_prev.set_disabled(i == 0);
    d.lesson_next.set_disabled(i + 1 >= lessons::STEPS.len());
}

fn lesson_body(body: &HtmlElement, step: &lessons::Step, lang: Lang) -> Res<()> {
    dom::clear(body);
    for p in step.explain {
        dom::append(body, &dom::el("p", "", p.get(lang))?)?;
    }
    let labels = [msg::LESSON_TRY.get(lang), msg::LESSON_QUESTION.get(lang)];
    for (class, label, text) in [("try", labels[0], step.try_this), ("ask", labels[1], step.question)] {
        let p = dom::el("p", class, "")?;
        dom::append(&p, &dom::el("b", "", label)?)?;
        p.append_with_str_1(text.get(lang)).map_err(|e| dom::js_error(&e))?;
        dom::append(body, &p)?;
    }
    Ok(())
}

/// The glossary's terms in `lang`.
fn glossary(lang: Lang) -> Res<()> {
    let list: HtmlElement = by_id("glossary-list")?;
    dom::clear(&list);
    for (term, meaning) in lessons::GLOSSARY {
        dom::append(&list, &dom::el("dt", "", term.get(lang))?)?;
        dom::append(&list, &dom::el("dd", "", meaning.get(lang))?)?;
    }
    Ok(())
}

fn model_panel(a: &App) {
    let d = &a.dom;
    let (badge, class) = match (&a.model, a.busy) {
        (Some(m), _) if m.gpu => {
            let adapter = m.adapter.as_ref().map_or(String::new(), |ad| ad.say(a.lang));
            (a.say(msg::BACKEND_WEBGPU, &[("adapter", &adapter)]), "badge gpu")
        }
        (Some(_), _) => (a.say(msg::BACKEND_CPU, &[]), "badge cpu"),
        (None, Busy::Loading) => (a.say(msg::BADGE_LOADING, &[]), "badge"),
        (None, _) => (a.say(msg::BADGE_NO_MODEL, &[]), "badge"),
    };
    d.badge.set_text_content(Some(&badge));
    d.badge.set_class_name(class);
    let info = match &a.model {
        Some(m) => {
            let params = format!("{:.1}", m.parameters as f64 / 1e6);
            let args: [(&str, &dyn std::fmt::Display); 7] = [
                ("name", &m.name),
                ("type", &m.model_type),
                ("params", &params),
                ("layers", &m.layers),
                ("heads", &m.heads),
                ("kv", &m.kv_heads),
                ("context", &m.max_positions),
            ];
            a.say(msg::MODEL_INFO, &args) + if m.chat_template { msg::MODEL_INFO_CHAT.get(a.lang) } else { "" }
        }
        None if a.busy == Busy::Loading => a.say(msg::BADGE_LOADING, &[]),
        None => a.say(msg::NO_MODEL_LOADED, &[]),
    };
    d.model_info.set_text_content(Some(&info));
    match &a.needles {
        Some((name, n)) => {
            d.needles_info.set_text_content(Some(&a.say(msg::NEEDLES_INFO, &[("count", &n.len()), ("name", name)])));
            dom::show(&d.needles_clear, true);
        }
        None => {
            d.needles_info.set_text_content(Some(""));
            dom::show(&d.needles_clear, false);
        }
    }
    for e in [&d.needle as &HtmlElement, &d.question, &d.answer] {
        let _ = e.class_list().toggle_with_force("unused", a.needles.is_some());
    }
    let import_info = a.imported.as_ref().map_or(String::new(), |(name, scores)| {
        let shape = scores.shape();
        a.say(msg::IMPORT_INFO, &[("name", name), ("layers", &shape.layers), ("heads", &shape.heads), ("tests", &scores.tests())])
    });
    d.import_info.set_text_content(Some(&import_info));
}

fn controls(a: &App, has_scores: bool) {
    let d = &a.dom;
    let idle = a.busy == Busy::Idle && a.model.is_some();
    d.run.set_disabled(!idle);
    d.cancel.set_disabled(!matches!(a.busy, Busy::Sweep | Busy::Cot));
    d.cot_run.set_disabled(!idle);
    d.kv_rerun.set_disabled(!idle);
    d.kv_window_value.set_text_content(Some(&d.kv_window.value()));
    d.rerun.set_disabled(!idle || a.masked.is_empty());
    d.sweep_masked.set_disabled(!idle || a.masked.is_empty());
    let has_results = a.sweep().is_some_and(|s| !s.results.is_empty());
    d.save_session.set_disabled(a.busy == Busy::Sweep || a.model.is_none() || !a.runs.iter().any(|r| !r.results.is_empty()));
    for (i, b) in d.export_buttons.iter().enumerate() {
        b.set_disabled(match i {
            0 => !has_scores,
            1 | 2 => !has_results,
            _ => a.model.is_none() && a.imported.is_none(),
        });
    }
    if let Ok(opts) = d.scores_source.options().item(1).ok_or(()).and_then(|o| o.dyn_into::<web_sys::HtmlOptionElement>().map_err(|_| ())) {
        opts.set_disabled(a.imported.is_none());
        if let Some((name, _)) = &a.imported {
            opts.set_text(&a.say(msg::IMPORTED, &[("name", name)]));
        }
    }
    d.scores_source.set_value(if a.shown == Source::Imported { "imported" } else { "sweep" });
    d.score_kind.set_value(a.score_kind.name());
    d.score_kind.set_disabled(a.shown == Source::Imported);
    // Why the chosen score shows nothing, where it does not.
    let note = if a.shown == Source::Sweep && a.model.is_some() && (a.sweep().is_some() || !a.score_kind.from_records()) {
        a.kind_scores(a.sweep(), a.score_kind).err().unwrap_or_default()
    } else {
        String::new()
    };
    d.score_note.set_text_content(Some(&note));
}

fn progress(a: &App) {
    let d = &a.dom;
    // The progress of the run under way (the last), whichever run the charts show.
    let Some(s) = a.runs.last() else {
        d.progress.set_value(0.0);
        d.progress_text.set_text_content(Some(""));
        return;
    };
    let n = s.results.len();
    d.progress.set_max(s.total.max(1) as f64);
    d.progress.set_value(n as f64);
    let tokens: usize = s.results.iter().map(|r| r.decode_tokens).sum();
    let seconds: f64 = s.results.iter().map(|r| r.decode_seconds).sum();
    let text = if s.total == 0 {
        a.say(msg::PROGRESS_STARTING, &[])
    } else if s.done.is_some() {
        a.say(msg::PROGRESS_DONE, &[("n", &n), ("total", &s.total), ("rate", &format!("{:.0}", rate(tokens, seconds)))])
    } else {
        let elapsed = format!("{:.0}", crate::clock::now() - s.started);
        let (i, r) = ((n + 1).min(s.total), format!("{:.0}", rate(tokens, seconds)));
        a.say(msg::PROGRESS_RUNNING, &[("i", &i), ("total", &s.total), ("rate", &r), ("seconds", &elapsed)])
    };
    d.progress_text.set_text_content(Some(&text));
}

/// Mirrors the state into `window.__headscope` for scripts that drive the page.
fn publish(a: &App, shown: charts::Shown) {
    let Ok(window) = dom::window() else { return };
    let o = js_sys::Object::new();
    let set = |k: &str, v: JsValue| {
        let _ = js_sys::Reflect::set(&o, &k.into(), &v);
    };
    set("model", a.model.as_ref().and_then(|m| serde_json::to_string(m).ok()).map_or(JsValue::NULL, |s| s.into()));
    set("errors", JsValue::from(a.errors.iter().map(JsValue::from).collect::<js_sys::Array>()));
    if let Some((scores, _)) = shown {
        set("scoresJson", views::head_scores_json(scores).into());
    }
    if let Some(s) = a.sweep() {
        set("testsJsonl", views::tests_jsonl(&s.records()).into());
        let traces: serde_json::Map<String, serde_json::Value> =
            s.results.iter().map(|r| (r.record.id.clone(), serde_json::json!(r.argmax))).collect();
        set("tracesJson", serde_json::Value::Object(traces).to_string().into());
        set("sweepDone", s.done.as_ref().map_or(JsValue::NULL, |d| d.to_string().into()));
        set("testsDone", JsValue::from(s.results.len() as u32));
    }
    if let Ok(cells) = js_sys::Reflect::get(&window, &"__headscopeHeadCells".into()) {
        set("headCells", cells);
    }
    if let Some(c) = &a.cot {
        let answers: Vec<serde_json::Value> = c.answers.iter().map(|(mask, r)| serde_json::json!({"mask": mask, "record": r})).collect();
        set("cotJson", serde_json::Value::Array(answers).to_string().into());
    }
    if let Some(v) = &a.head_view {
        set("headView", serde_json::to_string(v).map_or(JsValue::NULL, |s| s.into()));
    }
    let _ = js_sys::Reflect::set(&window, &"__headscope".into(), &o);
}
