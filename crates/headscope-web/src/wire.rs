//! Turns DOM and worker events into [`Msg`]s for [`dispatch`]: the only place the page listens, and
//! nothing here reads or changes the state.

use crate::app::{dispatch, Export, Files, Msg, Shared};
use crate::dom::{by_id, js_error, on, Res};
use crate::protocol::Event;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{HtmlCanvasElement, HtmlElement, HtmlInputElement};

/// A button or select, and the message it sends.
type Control<'a> = (&'a HtmlElement, fn() -> Msg);

/// Listens to every control of the page.
pub(crate) fn wire(app: &Shared) -> Res<()> {
    let d = &app.borrow().dom;
    let controls: [Control; 35] = [
        (&by_id("error-close")?, || Msg::CloseError),
        (&by_id("load-bundled")?, || Msg::LoadBundled),
        (&by_id("load-url")?, || Msg::LoadUrl),
        (&d.run, || Msg::Run),
        (&d.sweep_masked, || Msg::SweepMasked),
        (&d.cancel, || Msg::Cancel),
        (&d.rerun, || Msg::Rerun),
        (&by_id("mask-clear")?, || Msg::MaskClear),
        (&by_id("mask-top")?, || Msg::MaskTop),
        (&by_id("mask-random")?, || Msg::MaskRandom),
        (&by_id("needles-clear")?, || Msg::NeedlesClear),
        (&by_id("needles-example")?, || Msg::NeedlesExample),
        (&by_id("haystack-default")?, || Msg::HaystackDefault),
        (&d.export_buttons[0], || Msg::Export(Export::Scores)),
        (&d.export_buttons[1], || Msg::Export(Export::Tests)),
        (&d.export_buttons[2], || Msg::Export(Export::NiahPng)),
        (&d.export_buttons[3], || Msg::Export(Export::HeadsPng)),
        (&d.export_buttons[4], || Msg::Export(Export::ActivationPng)),
        (&d.backend, || Msg::BackendChanged),
        (&d.scores_source, || Msg::ScoresSourceChanged),
        (&d.score_kind, || Msg::ScoreKindChanged),
        (&d.cot_run, || Msg::CotRun),
        (&d.kv_rerun, || Msg::KvRerun),
        (&d.run_shown, || Msg::RunChosen),
        (&by_id("copy-link")?, || Msg::CopyLink),
        (&by_id("start-over")?, || Msg::StartOver),
        (&d.lesson_toggle, || Msg::LessonToggle),
        (&by_id("lesson-close")?, || Msg::LessonToggle),
        (&d.lesson_prev, || Msg::LessonStep(-1)),
        (&d.lesson_next, || Msg::LessonStep(1)),
        (&by_id("lesson-load")?, || Msg::LessonLoad),
        (&d.palette, || Msg::ChartSettingChanged),
        (&d.run_compare, || Msg::CompareChosen),
        (&d.save_session, || Msg::SaveSession),
        (&d.lang, || Msg::LangChanged),
    ];
    for (element, msg) in controls {
        // Selects send `change`, buttons `click`.
        let event = if element.tag_name() == "SELECT" { "change" } else { "click" };
        let a = app.clone();
        on(element, event, move |_: web_sys::Event| dispatch(&a, msg()))?;
    }
    let a = app.clone();
    on(&d.gate, "change", move |_: web_sys::Event| dispatch(&a, Msg::ChartSettingChanged))?;
    // The KV slider shows its value while it moves and reruns the test where it is let go.
    let a = app.clone();
    let (window, shown) = (d.kv_window.clone(), d.kv_window_value.clone());
    on(&d.kv_window, "input", move |_: web_sys::Event| shown.set_text_content(Some(&window.value())))?;
    on(&d.kv_window, "change", move |_: web_sys::Event| dispatch(&a, Msg::KvRerun))?;
    // Typing in the form: the haystack's size and the remembered inputs follow every edit.
    let fields: [&HtmlElement; 14] = [
        &d.needle,
        &d.question,
        &d.answer,
        &d.haystack,
        &d.lengths,
        &d.depths,
        &d.max_new,
        &d.gate,
        &d.plain,
        &d.mask_k,
        &d.mask_random_k,
        &d.mask_seed,
        &d.mask_mode,
        &d.mask_scope,
    ];
    for field in fields {
        let a = app.clone();
        on(field, "input", move |_: web_sys::Event| dispatch(&a, Msg::FormEdited))?;
    }
    file_input(app, &d.haystack_file, Msg::HaystackFile)?;
    file_input(app, &d.needles_file, Msg::NeedlesFile)?;
    file_input(app, &d.import_scores, Msg::ScoresFile)?;
    file_input(app, &d.open_session, Msg::SessionFile)?;
    file_input(app, &d.model_files, Msg::ModelFiles)?;

    // Dropping a model folder (or its files) on the model panel.
    let a = app.clone();
    on(&d.model_panel, "dragover", move |e: web_sys::DragEvent| {
        e.prevent_default();
        dispatch(&a, Msg::Dragging(true));
    })?;
    let a = app.clone();
    on(&d.model_panel, "dragleave", move |_: web_sys::DragEvent| dispatch(&a, Msg::Dragging(false)))?;
    let a = app.clone();
    on(&d.model_panel, "drop", move |e: web_sys::DragEvent| {
        e.prevent_default();
        match e.data_transfer() {
            Some(dt) => dispatch(&a, Msg::ModelDropped(dt)),
            None => dispatch(&a, Msg::Dragging(false)),
        }
    })?;

    // Clicks on the charts, in canvas pixels.
    let a = app.clone();
    let canvas = d.heads_canvas.clone();
    on(&d.heads_canvas, "click", move |e: web_sys::MouseEvent| {
        let (x, y) = canvas_point(&canvas, &e);
        dispatch(&a, Msg::HeadsClicked { x, y, shift: e.shift_key() });
    })?;
    // The keyboard on the score heatmap and the test list.
    let a = app.clone();
    on(&d.heads_canvas, "keydown", move |e: web_sys::KeyboardEvent| {
        let key = e.key();
        if matches!(key.as_str(), "ArrowUp" | "ArrowDown" | "ArrowLeft" | "ArrowRight" | "Enter") {
            e.prevent_default();
            dispatch(&a, Msg::HeadsKey { key, shift: e.shift_key() });
        }
    })?;
    let a = app.clone();
    on(&d.tests, "keydown", move |e: web_sys::KeyboardEvent| {
        let key = e.key();
        if matches!(key.as_str(), "ArrowUp" | "ArrowDown" | "Home" | "End") {
            e.prevent_default();
            dispatch(&a, Msg::TestsKey(key));
        }
    })?;
    let a = app.clone();
    let canvas = d.niah_canvas.clone();
    on(&d.niah_canvas, "click", move |e: web_sys::MouseEvent| {
        let (x, y) = canvas_point(&canvas, &e);
        dispatch(&a, Msg::NiahClicked { x, y });
    })?;

    // A click on a test in the list (rebuilt on every render, so one listener on the list).
    let a = app.clone();
    on(&d.tests, "click", move |e: web_sys::MouseEvent| {
        let Some(target) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else { return };
        let Ok(Some(li)) = target.closest("li") else { return };
        if let Some(i) = li.get_attribute("data-index").and_then(|s| s.parse::<usize>().ok()) {
            dispatch(&a, Msg::TestClicked(i));
        }
    })
}

/// Sends `msg` with the files chosen in `input` (path in the folder, file).
fn file_input(app: &Shared, input: &HtmlInputElement, msg: fn(Files) -> Msg) -> Res<()> {
    let a = app.clone();
    let target = input.clone();
    on(input, "change", move |_: web_sys::Event| {
        let mut files = Vec::new();
        if let Some(list) = target.files() {
            for i in 0..list.length() {
                if let Some(file) = list.get(i) {
                    let rel =
                        js_sys::Reflect::get(&file, &"webkitRelativePath".into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
                    files.push((if rel.is_empty() { file.name() } else { rel }, file));
                }
            }
        }
        // Choosing the same file again must fire again.
        target.set_value("");
        dispatch(&a, msg(files));
    })
}

/// The canvas pixel under a mouse event (the canvas may be scaled by CSS).
fn canvas_point(canvas: &HtmlCanvasElement, e: &web_sys::MouseEvent) -> (i32, i32) {
    let rect = canvas.get_bounding_client_rect();
    let sx = canvas.width() as f64 / rect.width().max(1.0);
    let sy = canvas.height() as f64 / rect.height().max(1.0);
    (((e.client_x() as f64 - rect.left()) * sx) as i32, ((e.client_y() as f64 - rect.top()) * sy) as i32)
}

/// Starts the model's worker, its messages routed to [`dispatch`].
pub(crate) fn start_worker(app: &Shared) -> Res<web_sys::Worker> {
    let options = web_sys::WorkerOptions::new();
    options.set_name("headscope-model");
    let worker = web_sys::Worker::new_with_options("./worker_loader.js", &options).map_err(|e| js_error(&e))?;
    let a = app.clone();
    let on_message = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
        let msg = match serde_wasm_bindgen::from_value::<Event>(e.data()) {
            Ok(event) => Msg::Worker(event),
            Err(err) => Msg::WorkerUnreadable(err.to_string()),
        };
        dispatch(&a, msg);
    });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let a = app.clone();
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        e.prevent_default();
        dispatch(&a, Msg::WorkerFailed(e.message()));
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    Ok(worker)
}
