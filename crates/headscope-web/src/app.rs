//! The lab page on the main thread: reads the form, talks to the worker, aggregates the results with
//! core and draws them with headscope-plot on canvases.
//!
//! Where this sits in the data flow: user inputs -> [`Request`]s to the worker (which builds, runs and
//! scores the tests) -> [`Event`]s back -> **core aggregates** ([`views`]: head scores from the test
//! records, masking plans, the official file format) -> **headscope-plot draws** the NIAH grid and the
//! layers x heads heatmaps -> the DOM. The page never computes a forward pass, so it stays responsive.
//!
//! For automated checks the page mirrors its state into `window.__headscope` (model, head scores,
//! tests, per-step argmax traces, sweep timings) and `<body data-state>`.

use crate::dom::{self, append, by_id, el, js_error, on, Res};
use crate::protocol::{
    BackendChoice, Event, HeadViewResult, MaskRequest, ModelSource, ModelSummary, Request, TestAt, TestResult, TestSetup,
};
use crate::views;
use headscope_core::niah::Needle;
use headscope_core::{HeadId, HeadScores, HeadShape};
use headscope_plot::{CellMap, Grid};
use plotters::prelude::*;
use plotters_canvas::CanvasBackend;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{HtmlButtonElement, HtmlCanvasElement, HtmlElement, HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};

use headscope_plot::plotters;

/// Where the default haystack and example needles are served, beside the page.
const DEFAULT_HAYSTACK_URL: &str = "haystacks/kjv-john.txt";
const EXAMPLE_NEEDLES_URL: &str = "needles/heldout.jsonl";

/// The page's elements, looked up once.
struct Dom {
    badge: HtmlElement,
    backend: HtmlSelectElement,
    status: HtmlElement,
    error: HtmlElement,
    error_text: HtmlElement,
    model_panel: HtmlElement,
    model_files: HtmlInputElement,
    model_url: HtmlInputElement,
    model_info: HtmlElement,
    needle: HtmlTextAreaElement,
    question: HtmlInputElement,
    answer: HtmlInputElement,
    needles_file: HtmlInputElement,
    needles_clear: HtmlButtonElement,
    needles_info: HtmlElement,
    haystack: HtmlTextAreaElement,
    haystack_file: HtmlInputElement,
    haystack_info: HtmlElement,
    lengths: HtmlInputElement,
    depths: HtmlInputElement,
    max_new: HtmlInputElement,
    gate: HtmlInputElement,
    plain: HtmlInputElement,
    run: HtmlButtonElement,
    cancel: HtmlButtonElement,
    progress: web_sys::HtmlProgressElement,
    progress_text: HtmlElement,
    summary: HtmlElement,
    niah_canvas: HtmlCanvasElement,
    heads_canvas: HtmlCanvasElement,
    activation_canvas: HtmlCanvasElement,
    scores_source: HtmlSelectElement,
    tests: HtmlElement,
    head_info: HtmlElement,
    head_steps: HtmlElement,
    masked_list: HtmlElement,
    mask_k: HtmlInputElement,
    mask_random_k: HtmlInputElement,
    mask_seed: HtmlInputElement,
    mask_mode: HtmlSelectElement,
    mask_scope: HtmlSelectElement,
    rerun: HtmlButtonElement,
    sweep_masked: HtmlButtonElement,
    rerun_result: HtmlElement,
    export_buttons: Vec<HtmlButtonElement>,
    import_info: HtmlElement,
}

impl Dom {
    fn find() -> Res<Dom> {
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
            tests: by_id("tests")?,
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
            export_buttons: ["export-scores", "export-tests", "export-niah", "export-heads", "export-activation"]
                .iter()
                .map(|id| by_id(id))
                .collect::<Res<_>>()?,
            import_info: by_id("import-info")?,
        })
    }
}

/// What the worker is doing for the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    /// Waiting for the worker to start.
    Starting,
    /// Nothing.
    Idle,
    /// Loading a model.
    Loading,
    /// Running a sweep.
    Sweep,
    /// Rerunning a test or showing a head.
    Test,
}

/// A sweep as the page follows it.
struct SweepView {
    setup: TestSetup,
    lengths: Vec<usize>,
    depths: Vec<f64>,
    total: usize,
    mask: Option<MaskRequest>,
    results: Vec<TestResult>,
    started: f64,
    done: Option<serde_json::Value>,
}

/// Which scores the heatmaps show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Sweep,
    Imported,
}

/// The page's state.
struct App {
    dom: Dom,
    worker: Option<web_sys::Worker>,
    busy: Busy,
    backend: BackendChoice,
    model: Option<ModelSummary>,
    /// Content hash of the last model loaded (kept while another load runs).
    loaded_hash: Option<String>,
    /// The last model source, with the bytes of picked files, to reload after a crash or a backend change.
    source: ModelSource,
    source_buffers: Vec<js_sys::ArrayBuffer>,
    needles: Option<(String, Vec<Needle>)>,
    sweep: Option<SweepView>,
    imported: Option<(String, HeadScores)>,
    shown: Source,
    masked: Vec<HeadId>,
    selected_test: Option<usize>,
    selected_head: Option<HeadId>,
    head_view: Option<HeadViewResult>,
    errors: Vec<String>,
}

type Shared = Rc<RefCell<App>>;

/// Starts the page: reports panics on the page, wires every control, starts the worker.
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("internal error: {info}. Reload the page to start over.");
        web_sys::console::error_1(&message.clone().into());
        if let Ok(e) = by_id::<HtmlElement>("error-text") {
            e.set_text_content(Some(&message));
        }
        if let Ok(e) = by_id::<HtmlElement>("error") {
            e.set_hidden(false);
        }
    }));
    if let Err(e) = boot() {
        web_sys::console::error_1(&e.clone().into());
        if let Ok(t) = by_id::<HtmlElement>("error-text") {
            t.set_text_content(Some(&e));
        }
        if let Ok(b) = by_id::<HtmlElement>("error") {
            b.set_hidden(false);
        }
    }
}

fn boot() -> Res<()> {
    let dom = Dom::find()?;
    let params =
        web_sys::UrlSearchParams::new_with_str(&dom::window()?.location().search().unwrap_or_default()).map_err(|e| js_error(&e))?;
    let backend = params.get("backend").and_then(|b| BackendChoice::parse(&b)).unwrap_or_default();
    dom.backend.set_value(match backend {
        BackendChoice::Auto => "auto",
        BackendChoice::Gpu => "gpu",
        BackendChoice::Cpu => "cpu",
    });
    let app = Rc::new(RefCell::new(App {
        dom,
        worker: None,
        busy: Busy::Starting,
        backend,
        model: None,
        loaded_hash: None,
        source: ModelSource::Bundled,
        source_buffers: vec![],
        needles: None,
        sweep: None,
        imported: None,
        shown: Source::Sweep,
        masked: vec![],
        selected_test: None,
        selected_head: None,
        head_view: None,
        errors: vec![],
    }));
    wire(&app)?;
    wire_tests(&app)?;
    start_worker(&app)?;
    let a = app.clone();
    wasm_bindgen_futures::spawn_local(async move {
        dom::load_font(headscope_plot::FONT_FAMILY).await;
        match dom::fetch_text(DEFAULT_HAYSTACK_URL).await {
            Ok(text) => {
                let app = a.borrow();
                if app.dom.haystack.value().trim().is_empty() {
                    app.dom.haystack.set_value(&text);
                }
            }
            Err(e) => a.borrow_mut().error(&format!("the default haystack could not be fetched: {e}")),
        }
        let mut app = a.borrow_mut();
        app.haystack_changed();
        app.render();
    });
    app.borrow_mut().render();
    Ok(())
}

/// Creates the worker and routes its messages to the page.
fn start_worker(app: &Shared) -> Res<()> {
    let options = web_sys::WorkerOptions::new();
    options.set_name("headscope-model");
    let worker = web_sys::Worker::new_with_options("./worker_loader.js", &options).map_err(|e| js_error(&e))?;
    let a = app.clone();
    let on_message =
        Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| {
            match serde_wasm_bindgen::from_value::<Event>(e.data()) {
                Ok(event) => on_event(&a, event),
                Err(err) => a.borrow_mut().error(&format!("a message from the worker could not be read: {err}")),
            }
        });
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let a = app.clone();
    let on_error = Closure::<dyn FnMut(web_sys::ErrorEvent)>::new(move |e: web_sys::ErrorEvent| {
        e.prevent_default();
        crashed(&a, &format!("the model's worker failed: {}", e.message()));
    });
    worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    on_error.forget();
    let mut a = app.borrow_mut();
    a.worker = Some(worker);
    a.busy = Busy::Starting;
    Ok(())
}

/// The worker died: say so, start a new one and load the model again.
fn crashed(app: &Shared, message: &str) {
    {
        let mut a = app.borrow_mut();
        if let Some(w) = a.worker.take() {
            w.terminate();
        }
        a.error(&format!("{message}\nThe worker was restarted; the model is loading again."));
        a.model = None;
    }
    if let Err(e) = start_worker(app) {
        app.borrow_mut().error(&format!("the worker could not be restarted: {e}"));
    }
    app.borrow_mut().render();
}

fn on_event(app: &Shared, event: Event) {
    if let Event::Crashed { message } = &event {
        return crashed(app, &format!("the model's worker crashed: {message}"));
    }
    let mut a = app.borrow_mut();
    match event {
        Event::Ready { webgpu } => {
            a.busy = Busy::Idle;
            if !webgpu && a.backend == BackendChoice::Gpu {
                a.error("this browser offers no WebGPU to workers: choose the CPU path");
            }
            let (source, buffers) = (a.source.clone(), a.source_buffers.clone());
            a.send_load(source, buffers);
        }
        Event::Status { message } => a.dom.status.set_text_content(Some(&message)),
        Event::ModelLoaded(summary) => {
            a.busy = Busy::Idle;
            a.dom.status.set_text_content(Some(&format!("model loaded in {:.1} s", summary.load_seconds)));
            if let Some(reason) = &summary.fallback_reason {
                a.dom.status.set_text_content(Some(&format!("WebGPU not used ({reason}); running on the CPU")));
            }
            // Results of another model no longer fit the heatmaps; a reload of the same one keeps them.
            if a.loaded_hash.as_ref() != Some(&summary.hash) {
                a.sweep = None;
                a.selected_test = None;
                a.selected_head = None;
                a.masked.clear();
            }
            a.loaded_hash = Some(summary.hash.clone());
            a.model = Some(summary);
            a.head_view = None;
        }
        Event::SweepStarted { total, lengths, depths, masked } => {
            if let Some(s) = a.sweep.as_mut() {
                s.total = total;
                s.lengths = lengths;
                s.depths = depths;
                s.started = crate::clock::now();
            }
            a.dom.status.set_text_content(Some(&if masked.is_empty() {
                format!("running {total} tests")
            } else {
                format!("running {total} tests with {} heads masked", masked.len())
            }));
        }
        Event::TestDone { result, .. } => {
            if let Some(s) = a.sweep.as_mut() {
                s.results.push(*result);
            }
            if a.selected_test.is_none() {
                a.selected_test = Some(0);
            }
        }
        Event::SweepDone { cancelled, tests, seconds, decode_tokens, decode_seconds, prefill_tokens, prefill_seconds } => {
            a.busy = Busy::Idle;
            let backend = a.model.as_ref().map(|m| m.backend.clone()).unwrap_or_default();
            let stats = serde_json::json!({
                "cancelled": cancelled, "tests": tests, "seconds": seconds, "decode_tokens": decode_tokens,
                "decode_seconds": decode_seconds, "decode_tokens_per_second": rate(decode_tokens, decode_seconds),
                "prefill_tokens": prefill_tokens, "prefill_seconds": prefill_seconds,
                "prefill_tokens_per_second": rate(prefill_tokens, prefill_seconds), "backend": backend,
            });
            if let Some(s) = a.sweep.as_mut() {
                s.done = Some(stats);
            }
            a.dom.status.set_text_content(Some(&format!(
                "{} {tests} tests in {seconds:.1} s ({:.0} tokens/s decoding)",
                if cancelled { "cancelled after" } else { "finished" },
                rate(decode_tokens, decode_seconds)
            )));
        }
        Event::RerunDone { before, after, masked } => {
            a.busy = Busy::Idle;
            a.render_rerun(&before, &after, &masked);
        }
        Event::HeadView(view) => {
            a.busy = Busy::Idle;
            a.head_view = Some(*view);
        }
        Event::Error { context, message } => {
            if a.busy == Busy::Loading {
                a.model = None;
            }
            a.busy = Busy::Idle;
            a.error(&format!("{context}: {message}"));
        }
        Event::Crashed { .. } => {}
    }
    a.render();
}

fn rate(tokens: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        tokens as f64 / seconds
    } else {
        0.0
    }
}

/// Wires every control of the page to the app.
fn wire(app: &Shared) -> Res<()> {
    let d = &app.borrow().dom;
    let click = |b: &HtmlElement, f: fn(&Shared) -> Res<()>| -> Res<()> {
        let a = app.clone();
        on(b, "click", move |_: web_sys::Event| {
            if let Err(e) = f(&a) {
                a.borrow_mut().error(&e);
            }
        })
    };
    click(&by_id::<HtmlElement>("error-close")?, |a| {
        a.borrow().dom.error.set_hidden(true);
        Ok(())
    })?;
    click(&by_id::<HtmlElement>("load-bundled")?, |a| {
        a.borrow_mut().send_load(ModelSource::Bundled, vec![]);
        Ok(())
    })?;
    click(&by_id::<HtmlElement>("load-url")?, |a| {
        let url = a.borrow().dom.model_url.value();
        if url.trim().is_empty() {
            return Err("type the URL of a model folder first".into());
        }
        a.borrow_mut().send_load(ModelSource::Url { url: url.trim().to_string() }, vec![]);
        Ok(())
    })?;
    click(&d.run, |a| a.borrow_mut().start_sweep(None))?;
    click(&d.sweep_masked, |a| {
        let mask = a.borrow().mask_request()?;
        a.borrow_mut().start_sweep(Some(mask))
    })?;
    click(&d.cancel, |a| {
        a.borrow().send(&Request::Cancel, &[]);
        a.borrow().dom.status.set_text_content(Some("cancelling…"));
        Ok(())
    })?;
    click(&d.rerun, |a| a.borrow_mut().rerun())?;
    click(&by_id::<HtmlElement>("mask-clear")?, |a| {
        let mut app = a.borrow_mut();
        app.masked.clear();
        app.render();
        Ok(())
    })?;
    click(&by_id::<HtmlElement>("mask-top")?, |a| {
        let mut app = a.borrow_mut();
        let k = parse_number(&app.dom.mask_k.value(), "top K")?;
        let (scores, shape) = app.scores_for_masking()?;
        app.masked = views::mask_top(&scores, shape, k as usize).map_err(|e| e.to_string())?;
        app.render();
        Ok(())
    })?;
    click(&by_id::<HtmlElement>("mask-random")?, |a| {
        let mut app = a.borrow_mut();
        let k = parse_number(&app.dom.mask_random_k.value(), "random K")?;
        let seed = parse_number(&app.dom.mask_seed.value(), "seed")?;
        let (scores, shape) = app.scores_for_masking()?;
        app.masked = views::mask_random(&scores, shape, k as usize, seed).map_err(|e| e.to_string())?;
        app.render();
        Ok(())
    })?;
    click(&by_id::<HtmlElement>("needles-clear")?, |a| {
        let mut app = a.borrow_mut();
        app.needles = None;
        app.render();
        Ok(())
    })?;
    {
        let a = app.clone();
        on(&by_id::<HtmlElement>("needles-example")?, "click", move |_: web_sys::Event| {
            let a = a.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let r = dom::fetch_text(EXAMPLE_NEEDLES_URL)
                    .await
                    .and_then(|t| views::import_needles("heldout.jsonl", &t).map_err(|e| e.to_string()));
                let mut app = a.borrow_mut();
                match r {
                    Ok(n) => app.needles = Some(("heldout.jsonl".into(), n)),
                    Err(e) => app.error(&e),
                }
                app.render();
            });
        })?;
    }
    click(&by_id::<HtmlElement>("haystack-default")?, |a| {
        let a = a.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let r = dom::fetch_text(DEFAULT_HAYSTACK_URL).await;
            let mut app = a.borrow_mut();
            match r {
                Ok(t) => app.dom.haystack.set_value(&t),
                Err(e) => app.error(&e),
            }
            app.haystack_changed();
        });
        Ok(())
    })?;
    click(&d.export_buttons[0], |a| {
        let app = a.borrow();
        let (scores, _) = app.shown_scores().ok_or("no head scores yet: run a sweep")?;
        dom::download_bytes("head_scores.json", "application/json", views::head_scores_json(&scores).as_bytes())
    })?;
    click(&d.export_buttons[1], |a| {
        let app = a.borrow();
        let s = app.sweep.as_ref().filter(|s| !s.results.is_empty()).ok_or("no tests yet: run a sweep")?;
        let records: Vec<_> = s.results.iter().map(|r| r.record.clone()).collect();
        dom::download_bytes("tests.jsonl", "application/x-ndjson", views::tests_jsonl(&records).as_bytes())
    })?;
    click(&d.export_buttons[2], |a| export_png(&a.borrow().dom.niah_canvas, "niah.png"))?;
    click(&d.export_buttons[3], |a| export_png(&a.borrow().dom.heads_canvas, "heads.png"))?;
    click(&d.export_buttons[4], |a| export_png(&a.borrow().dom.activation_canvas, "activation.png"))?;

    // Backend choice: reload the model on the chosen path.
    {
        let a = app.clone();
        on(&d.backend, "change", move |_: web_sys::Event| {
            let mut app = a.borrow_mut();
            app.backend = BackendChoice::parse(&app.dom.backend.value()).unwrap_or_default();
            let (source, buffers) = (app.source.clone(), app.source_buffers.clone());
            app.send_load(source, buffers);
        })?;
    }
    {
        let a = app.clone();
        on(&d.scores_source, "change", move |_: web_sys::Event| {
            let mut app = a.borrow_mut();
            app.shown = if app.dom.scores_source.value() == "imported" { Source::Imported } else { Source::Sweep };
            app.render();
        })?;
    }
    {
        let a = app.clone();
        on(&d.gate, "change", move |_: web_sys::Event| a.borrow_mut().render())?;
    }
    {
        let a = app.clone();
        on(&d.haystack, "input", move |_: web_sys::Event| a.borrow_mut().haystack_changed())?;
    }
    file_input(app, &d.haystack_file, |a, files| {
        Box::pin(async move {
            let (name, file) = files.into_iter().next().ok_or("no file chosen")?;
            let text = dom::file_text(&file).await?;
            if text.trim().is_empty() {
                return Err(format!("{name} is empty"));
            }
            let mut app = a.borrow_mut();
            app.dom.haystack.set_value(&text);
            app.haystack_changed();
            Ok(())
        })
    })?;
    file_input(app, &d.needles_file, |a, files| {
        Box::pin(async move {
            let (name, file) = files.into_iter().next().ok_or("no file chosen")?;
            let text = dom::file_text(&file).await?;
            let needles = views::import_needles(&name, &text).map_err(|e| e.to_string())?;
            let mut app = a.borrow_mut();
            app.needles = Some((name, needles));
            app.render();
            Ok(())
        })
    })?;
    file_input(app, &by_id::<HtmlInputElement>("import-scores")?, |a, files| {
        Box::pin(async move {
            let (name, file) = files.into_iter().next().ok_or("no file chosen")?;
            let text = dom::file_text(&file).await?;
            let scores = views::import_head_scores(&name, &text).map_err(|e| e.to_string())?;
            let mut app = a.borrow_mut();
            let shape = scores.shape();
            app.dom.import_info.set_text_content(Some(&format!(
                "{name}: {} layers x {} heads, {} tests",
                shape.layers,
                shape.heads,
                scores.tests()
            )));
            app.imported = Some((name, scores));
            app.shown = Source::Imported;
            app.render();
            Ok(())
        })
    })?;
    file_input(app, &d.model_files, |a, files| Box::pin(async move { load_model_files(&a, files).await }))?;

    // Dropping a model folder (or its files) on the model panel.
    {
        let panel = &d.model_panel;
        let a = app.clone();
        on(panel, "dragover", move |e: web_sys::DragEvent| {
            e.prevent_default();
            let _ = a.borrow().dom.model_panel.class_list().add_1("dragging");
        })?;
        let a = app.clone();
        on(panel, "dragleave", move |_: web_sys::DragEvent| {
            let _ = a.borrow().dom.model_panel.class_list().remove_1("dragging");
        })?;
        let a = app.clone();
        on(panel, "drop", move |e: web_sys::DragEvent| {
            e.prevent_default();
            let _ = a.borrow().dom.model_panel.class_list().remove_1("dragging");
            let Some(dt) = e.data_transfer() else { return };
            let a = a.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let r = match dom::dropped_files(&dt).await {
                    Ok(files) => load_model_files(&a, files).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = r {
                    a.borrow_mut().error(&format!("the dropped files: {e}"));
                }
            });
        })?;
    }

    // Clicks on the charts.
    {
        let a = app.clone();
        on(&d.heads_canvas, "click", move |e: web_sys::MouseEvent| {
            let r = heads_click(&a, &e);
            if let Err(err) = r {
                a.borrow_mut().error(&err);
            }
        })?;
        let a = app.clone();
        on(&d.niah_canvas, "click", move |e: web_sys::MouseEvent| {
            let r = niah_click(&a, &e);
            if let Err(err) = r {
                a.borrow_mut().error(&err);
            }
        })?;
    }
    Ok(())
}

type FileFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Res<()>>>>;

/// Calls `f` with the files chosen in `input` (path, file), reporting its error on the page.
fn file_input(app: &Shared, input: &HtmlInputElement, f: fn(Shared, Vec<(String, web_sys::File)>) -> FileFuture) -> Res<()> {
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
        let a = a.clone();
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = f(a.clone(), files).await {
                a.borrow_mut().error(&e);
            }
        });
    })
}

/// Reads the files of a model folder the user chose and sends them to the worker. Only the files a
/// model needs are read; a pickle checkpoint is passed by name (empty) so the worker can say why it
/// refuses it without reading gigabytes.
async fn load_model_files(app: &Shared, files: Vec<(String, web_sys::File)>) -> Res<()> {
    if files.is_empty() {
        return Err("no files were chosen".into());
    }
    let depth = |p: &str| p.split('/').count();
    let top = files.iter().map(|(p, _)| depth(p)).min().unwrap_or(1);
    let folder = files[0].0.split('/').next().filter(|_| top > 1).unwrap_or("chosen files").to_string();
    let mut names = Vec::new();
    let mut buffers = Vec::new();
    for (path, file) in files.iter().filter(|(p, _)| depth(p) == top) {
        let name = path.rsplit('/').next().unwrap_or(path);
        let wanted = matches!(name, "config.json" | "tokenizer.json" | "tokenizer_config.json" | "generation_config.json")
            || name.ends_with(".safetensors");
        let pickle = name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth");
        if wanted {
            app.borrow().dom.status.set_text_content(Some(&format!("reading {name}…")));
            buffers.push(dom::file_bytes(file).await?);
            names.push(name.to_string());
        } else if pickle {
            buffers.push(js_sys::ArrayBuffer::new(0));
            names.push(name.to_string());
        }
    }
    app.borrow_mut().send_load(ModelSource::Files { name: folder, names }, buffers);
    Ok(())
}

fn export_png(canvas: &HtmlCanvasElement, name: &str) -> Res<()> {
    let url = canvas.to_data_url_with_type("image/png").map_err(|e| js_error(&e))?;
    dom::download_url(name, &url)
}

fn parse_number(s: &str, what: &str) -> Res<u64> {
    s.trim().parse::<u64>().map_err(|_| format!("{what}: `{s}` is not a whole number"))
}

/// The canvas pixel under a mouse event (the canvas may be scaled by CSS).
fn canvas_point(canvas: &HtmlCanvasElement, e: &web_sys::MouseEvent) -> (i32, i32) {
    let rect = canvas.get_bounding_client_rect();
    let sx = canvas.width() as f64 / rect.width().max(1.0);
    let sy = canvas.height() as f64 / rect.height().max(1.0);
    (((e.client_x() as f64 - rect.left()) * sx) as i32, ((e.client_y() as f64 - rect.top()) * sy) as i32)
}

fn heads_click(app: &Shared, e: &web_sys::MouseEvent) -> Res<()> {
    let mut a = app.borrow_mut();
    let (x, y) = canvas_point(&a.dom.heads_canvas, e);
    let Some((grid, title)) = a.heads_grid() else { return Ok(()) };
    let cells = cells_of(&a.dom.heads_canvas, |area| headscope_plot::head_heatmap_cells(area, &grid, &title))?;
    let Some((layer, head)) = cells.cell_at(x, y) else { return Ok(()) };
    let id = HeadId::new(layer, head);
    if e.shift_key() {
        let shape = a.model.as_ref().map(|m| HeadShape::new(m.layers, m.heads)).ok_or("load a model before masking heads")?;
        shape.check(&[id]).map_err(|e| e.to_string())?;
        views::toggle(&mut a.masked, id);
        a.render();
        return Ok(());
    }
    a.selected_head = Some(id);
    a.request_head_view()?;
    a.render();
    Ok(())
}

fn niah_click(app: &Shared, e: &web_sys::MouseEvent) -> Res<()> {
    let mut a = app.borrow_mut();
    let (x, y) = canvas_point(&a.dom.niah_canvas, e);
    let Some(s) = a.sweep.as_ref() else { return Ok(()) };
    let grid = niah_grid_of(s);
    let (lengths, depths) = (s.lengths.clone(), s.depths.clone());
    let cells = cells_of(&a.dom.niah_canvas, |area| headscope_plot::niah_grid_cells(area, &grid, &lengths, &depths, NIAH_TITLE))?;
    let Some((d, l)) = cells.cell_at(x, y) else { return Ok(()) };
    let found = s.results.iter().position(|r| r.record.length == lengths[l] && r.record.depth_percent == depths[d]);
    if let Some(i) = found {
        a.select_test(i)?;
    }
    Ok(())
}

const NIAH_TITLE: &str = "needle in a haystack";

fn niah_grid_of(s: &SweepView) -> Grid {
    let records: Vec<_> = s.results.iter().map(|r| r.record.clone()).collect();
    views::niah_grid(&records, &s.lengths, &s.depths)
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

fn context_2d(canvas: &HtmlCanvasElement) -> Res<web_sys::CanvasRenderingContext2d> {
    canvas.get_context("2d").map_err(|e| js_error(&e))?.ok_or("no 2-D context")?.dyn_into().map_err(|_| "no 2-D context".to_string())
}

impl App {
    /// Shows an error in the banner (and keeps it for automated checks).
    fn error(&mut self, message: &str) {
        web_sys::console::warn_1(&message.into());
        self.errors.push(message.to_string());
        self.dom.error_text.set_text_content(Some(message));
        self.dom.error.set_hidden(false);
        self.publish();
    }

    fn send(&self, request: &Request, buffers: &[js_sys::ArrayBuffer]) {
        let Some(w) = &self.worker else { return };
        let serializer = serde_wasm_bindgen::Serializer::json_compatible();
        let msg = js_sys::Object::new();
        let value = match serde::Serialize::serialize(request, &serializer) {
            Ok(v) => v,
            Err(e) => return web_sys::console::error_1(&format!("cannot encode a request: {e}").into()),
        };
        let _ = js_sys::Reflect::set(&msg, &"request".into(), &value);
        let list = js_sys::Array::new();
        for b in buffers {
            list.push(b);
        }
        let _ = js_sys::Reflect::set(&msg, &"buffers".into(), &list);
        // Buffers are copied, not transferred: the page keeps them to reload after a backend change.
        if let Err(e) = w.post_message(&msg) {
            web_sys::console::error_1(&e);
        }
    }

    fn send_load(&mut self, source: ModelSource, buffers: Vec<js_sys::ArrayBuffer>) {
        if self.busy == Busy::Starting {
            // The worker loads it once it says it is ready.
            self.source = source;
            self.source_buffers = buffers;
            return;
        }
        if matches!(self.busy, Busy::Sweep | Busy::Test) {
            self.send(&Request::Cancel, &[]);
        }
        self.send(&Request::LoadModel { source: source.clone(), backend: self.backend }, &buffers);
        self.source = source;
        self.source_buffers = buffers;
        self.busy = Busy::Loading;
        self.model = None;
        self.render();
    }

    /// The needles, haystack and settings of the form.
    fn setup(&self) -> Res<TestSetup> {
        let d = &self.dom;
        let needles = match &self.needles {
            Some((_, n)) => n.clone(),
            None => vec![Needle { needle: d.needle.value(), question: d.question.value(), real_needle: d.answer.value() }],
        };
        let max_new_tokens = parse_number(&d.max_new.value(), "new tokens")? as usize;
        Ok(TestSetup { needles, haystack: d.haystack.value(), max_new_tokens, plain: d.plain.checked() })
    }

    fn gate(&self) -> f64 {
        self.dom.gate.value().trim().parse::<f64>().ok().filter(|g| (0.0..=1.0).contains(g)).unwrap_or(0.5)
    }

    fn mask_request(&self) -> Res<MaskRequest> {
        if self.masked.is_empty() {
            return Err("no heads are masked: Shift+click heads in the heatmap, or use mask top-K / random-K".into());
        }
        Ok(MaskRequest { heads: self.masked.clone(), mode: self.dom.mask_mode.value(), scope: self.dom.mask_scope.value() })
    }

    fn start_sweep(&mut self, mask: Option<MaskRequest>) -> Res<()> {
        if self.model.is_none() {
            return Err("no model is loaded yet".into());
        }
        let setup = self.setup()?;
        let depths = parse_number(&self.dom.depths.value(), "depths")? as usize;
        let lengths = self.dom.lengths.value();
        self.send(&Request::Sweep { setup: setup.clone(), lengths, depths, mask: mask.clone() }, &[]);
        self.sweep = Some(SweepView {
            setup,
            lengths: vec![],
            depths: vec![],
            total: 0,
            mask,
            results: vec![],
            started: crate::clock::now(),
            done: None,
        });
        self.selected_test = None;
        self.head_view = None;
        self.shown = Source::Sweep;
        self.busy = Busy::Sweep;
        self.dom.error.set_hidden(true);
        self.render();
        Ok(())
    }

    /// The test the head view and the rerun use: the selected test of the sweep, else the form's
    /// first length at 50 % depth.
    fn current_test(&self) -> Res<(TestSetup, TestAt, Option<MaskRequest>)> {
        if let Some(s) = &self.sweep {
            if let Some(r) = self.selected_test.and_then(|i| s.results.get(i)).or(s.results.first()) {
                let at = TestAt { needle_index: r.record.needle_index, length: r.record.length, depth_percent: r.record.depth_percent };
                return Ok((s.setup.clone(), at, s.mask.clone()));
            }
        }
        let setup = self.setup()?;
        let lengths = headscope_core::sweep::parse_lengths(&self.dom.lengths.value()).map_err(|e| e.to_string())?;
        Ok((setup, TestAt { needle_index: 0, length: lengths[0], depth_percent: 50.0 }, None))
    }

    fn select_test(&mut self, i: usize) -> Res<()> {
        self.selected_test = Some(i);
        if self.selected_head.is_some() {
            self.request_head_view()?;
        }
        self.render();
        Ok(())
    }

    fn request_head_view(&mut self) -> Res<()> {
        let Some(head) = self.selected_head else { return Ok(()) };
        let model = self.model.as_ref().ok_or("load a model first")?;
        HeadShape::new(model.layers, model.heads)
            .check(&[head])
            .map_err(|e| format!("{e} (the heatmap shows imported scores of another model)"))?;
        if self.busy != Busy::Idle {
            return Err("the model is busy: wait for the sweep to finish (or cancel it) to see where a head looked".into());
        }
        let (setup, at, mask) = self.current_test()?;
        self.send(&Request::HeadView { setup, at, head, mask }, &[]);
        self.busy = Busy::Test;
        self.dom.head_info.set_text_content(Some(&format!("running the test again, watching head {head}…")));
        Ok(())
    }

    fn rerun(&mut self) -> Res<()> {
        let mask = self.mask_request()?;
        if self.model.is_none() {
            return Err("no model is loaded yet".into());
        }
        let (setup, at, _) = self.current_test()?;
        self.send(&Request::Rerun { setup, at, mask }, &[]);
        self.busy = Busy::Test;
        dom::clear(&self.dom.rerun_result);
        self.dom.rerun_result.set_text_content(Some("running the test without and with the mask…"));
        self.render();
        Ok(())
    }

    fn haystack_changed(&mut self) {
        let text = self.dom.haystack.value();
        self.dom.haystack_info.set_text_content(Some(&format!("({} characters)", text.chars().count())));
    }

    /// The scores the heatmaps show and their grid shape.
    fn shown_scores(&self) -> Option<(HeadScores, String)> {
        match self.shown {
            Source::Imported => self.imported.as_ref().map(|(n, s)| (s.clone(), format!("imported: {n}"))),
            Source::Sweep => {
                let s = self.sweep.as_ref()?;
                let model = self.model.as_ref()?;
                let shape = HeadShape::new(model.layers, model.heads);
                let records: Vec<_> = s.results.iter().map(|r| r.record.clone()).collect();
                let scores = views::sweep_scores(shape, &records, self.gate()).ok()?;
                Some((scores, format!("retrieval scores: {}", model.name)))
            }
        }
    }

    fn scores_for_masking(&self) -> Res<(HeadScores, HeadShape)> {
        let model = self.model.as_ref().ok_or("load a model first")?;
        let (scores, _) = self.shown_scores().ok_or("no head scores yet: run a sweep or import a head-score file")?;
        if scores.tests() == 0 {
            return Err("no test has been scored yet (none reached the gate): there is nothing to rank heads by".into());
        }
        Ok((scores, HeadShape::new(model.layers, model.heads)))
    }

    /// The head heatmap's grid and title: the shown scores, or an empty grid of the model's shape.
    fn heads_grid(&self) -> Option<(Grid, String)> {
        if let Some((scores, title)) = self.shown_scores() {
            if scores.tests() > 0 {
                return Some((views::score_grid(&scores), title));
            }
        }
        let m = self.model.as_ref()?;
        Some((Grid::new(m.layers, m.heads), format!("retrieval scores: {} (no scored test yet)", m.name)))
    }

    // ---- rendering ------------------------------------------------------------------------------

    fn render(&mut self) {
        let state = match self.busy {
            Busy::Starting => "starting",
            Busy::Loading => "loading",
            Busy::Sweep => "running",
            Busy::Test => "testing",
            Busy::Idle if self.model.is_some() => "ready",
            Busy::Idle => "no-model",
        };
        if let Some(body) = dom::document().ok().and_then(|d| d.body()) {
            let _ = body.set_attribute("data-state", state);
        }
        self.render_model();
        self.render_controls();
        self.render_progress();
        if let Err(e) = self.render_charts() {
            self.dom.summary.set_text_content(Some(&format!("the charts could not be drawn: {e}")));
        }
        let _ = self.render_tests();
        let _ = self.render_masks();
        let _ = self.render_head_view();
        self.publish();
    }

    fn render_model(&self) {
        let d = &self.dom;
        let (badge, class) = match (&self.model, self.busy) {
            (Some(m), _) if m.gpu => (m.backend.clone(), "badge gpu"),
            (Some(m), _) => (m.backend.clone(), "badge cpu"),
            (None, Busy::Loading) => ("loading…".to_string(), "badge"),
            (None, _) => ("no model".to_string(), "badge"),
        };
        d.badge.set_text_content(Some(&badge));
        d.badge.set_class_name(class);
        let info = match &self.model {
            Some(m) => format!(
                "{}: {} ({:.1} M parameters), {} layers x {} heads ({} KV heads), context {} tokens{}",
                m.name,
                m.model_type,
                m.parameters as f64 / 1e6,
                m.layers,
                m.heads,
                m.kv_heads,
                m.max_positions,
                if m.chat_template { ", has a chat template" } else { "" }
            ),
            None if self.busy == Busy::Loading => "loading…".into(),
            None => "no model loaded".into(),
        };
        d.model_info.set_text_content(Some(&info));
        match &self.needles {
            Some((name, n)) => {
                d.needles_info.set_text_content(Some(&format!("{} needles from {name} (the single needle above is not used)", n.len())));
                dom::show(&d.needles_clear, true);
            }
            None => {
                d.needles_info.set_text_content(Some(""));
                dom::show(&d.needles_clear, false);
            }
        }
        for e in [&d.needle as &HtmlElement, &d.question, &d.answer] {
            let _ = e.style().set_property("opacity", if self.needles.is_some() { "0.5" } else { "1" });
        }
    }

    fn render_controls(&self) {
        let d = &self.dom;
        let idle = self.busy == Busy::Idle && self.model.is_some();
        d.run.set_disabled(!idle);
        d.cancel.set_disabled(self.busy != Busy::Sweep);
        d.rerun.set_disabled(!idle || self.masked.is_empty());
        d.sweep_masked.set_disabled(!idle || self.masked.is_empty());
        let has_results = self.sweep.as_ref().is_some_and(|s| !s.results.is_empty());
        let has_scores = self.shown_scores().is_some();
        for (i, b) in d.export_buttons.iter().enumerate() {
            b.set_disabled(match i {
                0 => !has_scores,
                1 | 2 => !has_results,
                _ => self.model.is_none() && self.imported.is_none(),
            });
        }
        if let Ok(opts) =
            d.scores_source.options().item(1).ok_or(()).and_then(|o| o.dyn_into::<web_sys::HtmlOptionElement>().map_err(|_| ()))
        {
            opts.set_disabled(self.imported.is_none());
            if let Some((name, _)) = &self.imported {
                opts.set_text(&format!("imported: {name}"));
            }
        }
        d.scores_source.set_value(if self.shown == Source::Imported { "imported" } else { "sweep" });
    }

    fn render_progress(&self) {
        let d = &self.dom;
        let Some(s) = &self.sweep else {
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
            "starting…".to_string()
        } else if s.done.is_some() {
            format!("{n} of {} tests · {:.0} tokens/s decoding", s.total, rate(tokens, seconds))
        } else {
            let elapsed = crate::clock::now() - s.started;
            format!("test {} of {} · {:.0} tokens/s decoding · {:.0} s", (n + 1).min(s.total), s.total, rate(tokens, seconds), elapsed)
        };
        d.progress_text.set_text_content(Some(&text));
    }

    fn render_charts(&mut self) -> Res<()> {
        // NIAH grid.
        if let Some(s) = self.sweep.as_ref().filter(|s| !s.lengths.is_empty() && !s.depths.is_empty()) {
            let grid = niah_grid_of(s);
            let (lengths, depths) = (s.lengths.clone(), s.depths.clone());
            draw_on(&self.dom.niah_canvas, (720, 400), |a| headscope_plot::draw_niah_grid(a, &grid, &lengths, &depths, NIAH_TITLE))?;
            let records: Vec<_> = s.results.iter().map(|r| r.record.clone()).collect();
            let (passed, total) = views::pass_rate(&records, 0.5);
            let mut summary = format!("{passed} of {total} tests passed (answer recall ≥ 0.5)");
            if let Some((scores, _)) = self.shown_scores().filter(|_| self.shown == Source::Sweep) {
                let heads = scores.retrieval_heads(headscope_core::RETRIEVAL_THRESHOLD);
                summary += &format!(
                    "; {} tests scored (recall ≥ {}); retrieval heads (mean > 0.1): {}",
                    scores.tests(),
                    self.gate(),
                    if heads.is_empty() {
                        "none yet".to_string()
                    } else {
                        heads.iter().map(|(h, m)| format!("{h} ({m:.2})")).collect::<Vec<_>>().join(", ")
                    }
                );
            }
            self.dom.summary.set_text_content(Some(&summary));
        }
        // Head heatmaps.
        if let Some((grid, title)) = self.heads_grid() {
            let size = headscope_plot::head_heatmap_size(&grid);
            draw_on(&self.dom.heads_canvas, size, |a| headscope_plot::draw_head_heatmap(a, &grid, &title))?;
            self.mark_heads(&grid, &title)?;
            let activation = self.shown_scores().filter(|(s, _)| s.tests() > 0).map(|(s, _)| views::activation_grid(&s));
            let activation = activation.unwrap_or_else(|| Grid::new(grid.rows, grid.cols));
            draw_on(&self.dom.activation_canvas, size, |a| {
                headscope_plot::draw_head_heatmap_captioned(a, &activation, "activation frequency", "share")
            })?;
        }
        Ok(())
    }

    /// Outlines the selected head and crosses out masked heads on the score heatmap.
    fn mark_heads(&self, grid: &Grid, title: &str) -> Res<()> {
        let canvas = &self.dom.heads_canvas;
        let cells = cells_of(canvas, |a| headscope_plot::head_heatmap_cells(a, grid, title))?;
        if let Ok(window) = dom::window() {
            let json =
                serde_json::json!({"x0": cells.x0, "y0": cells.y0, "x1": cells.x1, "y1": cells.y1, "rows": cells.rows, "cols": cells.cols});
            let _ = js_sys::Reflect::set(&window, &"__headscopeHeadCells".into(), &json.to_string().into());
        }
        let ctx = context_2d(canvas)?;
        for h in &self.masked {
            if h.layer >= cells.rows || h.head >= cells.cols {
                continue;
            }
            let (x0, y0, x1, y1) = cells.cell_rect(h.layer, h.head);
            ctx.set_stroke_style_str("#ffffff");
            ctx.set_line_width(2.0);
            ctx.begin_path();
            ctx.move_to(x0 as f64 + 3.0, y0 as f64 + 3.0);
            ctx.line_to(x1 as f64 - 4.0, y1 as f64 - 4.0);
            ctx.move_to(x1 as f64 - 4.0, y0 as f64 + 3.0);
            ctx.line_to(x0 as f64 + 3.0, y1 as f64 - 4.0);
            ctx.stroke();
        }
        if let Some(h) = self.selected_head.filter(|h| h.layer < cells.rows && h.head < cells.cols) {
            let (x0, y0, x1, y1) = cells.cell_rect(h.layer, h.head);
            ctx.set_stroke_style_str("#e8336d");
            ctx.set_line_width(3.0);
            ctx.stroke_rect(x0 as f64 + 1.5, y0 as f64 + 1.5, (x1 - x0) as f64 - 4.0, (y1 - y0) as f64 - 4.0);
        }
        Ok(())
    }

    fn render_tests(&self) -> Res<()> {
        let list = &self.dom.tests;
        dom::clear(list);
        let Some(s) = &self.sweep else { return Ok(()) };
        for (i, r) in s.results.iter().enumerate() {
            let li = el("li", if Some(i) == self.selected_test { "selected" } else { "" }, "")?;
            let _ = li.set_attribute("data-index", &i.to_string());
            append(&li, &el("span", "id", &format!("{} ", r.record.id))?)?;
            let pass = r.record.recall >= 0.5;
            append(&li, &el("span", if pass { "pass" } else { "fail" }, &format!("recall {:.2} ", r.record.recall))?)?;
            append(&li, &answer_element(r)?)?;
            append(list, &li)?;
        }
        Ok(())
    }

    fn render_masks(&self) -> Res<()> {
        let d = &self.dom;
        dom::clear(&d.masked_list);
        if self.masked.is_empty() {
            d.masked_list.set_text_content(Some("none"));
        }
        for h in &self.masked {
            append(&d.masked_list, &el("span", "chip", &h.to_string())?)?;
        }
        Ok(())
    }

    fn render_head_view(&self) -> Res<()> {
        let d = &self.dom;
        dom::clear(&d.head_steps);
        let Some(v) = &self.head_view else { return Ok(()) };
        if Some(v.head) != self.selected_head {
            return Ok(());
        }
        let hits = v.steps.iter().filter(|s| s.hit).count();
        d.head_info.set_text_content(Some(&format!(
            "Head {} on test {}: for each generated token, the context around the position its attention peaked at (needle in green, \
             the answer span darker, the peak outlined) and its attention over the whole {}-token context (needle band in green). \
             {hits} of {} steps copied an answer token.",
            v.head,
            v.test_id,
            v.context,
            v.steps.len()
        )));
        let table = el("table", "", "")?;
        let head = el("tr", "", "")?;
        for t in ["step", "token", "peak at", "weight", "context around the peak", "attention over the context"] {
            append(&head, &el("th", "", t)?)?;
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

    fn render_rerun(&mut self, before: &TestResult, after: &TestResult, masked: &[HeadId]) {
        let r = (|| -> Res<()> {
            let d = &self.dom.rerun_result;
            dom::clear(d);
            d.set_text_content(None);
            for (title, result) in
                [("Before (no heads masked)".to_string(), before), (format!("After: {} heads masked", masked.len()), after)]
            {
                let col = el("div", "", "")?;
                append(&col, &el("h4", "", &title)?)?;
                let pass = result.record.recall >= 0.5;
                append(&col, &el("div", if pass { "pass" } else { "fail" }, &format!("recall {:.2}", result.record.recall))?)?;
                append(&col, &answer_element(result)?)?;
                append(d, &col)?;
            }
            let list: Vec<String> = masked.iter().map(|h| h.to_string()).collect();
            let _ = d.set_attribute("data-masked", &list.join(","));
            let _ = d.set_attribute("data-before", &before.record.answer);
            let _ = d.set_attribute("data-after", &after.record.answer);
            Ok(())
        })();
        if let Err(e) = r {
            self.error(&e);
        }
    }

    /// Mirrors the state into `window.__headscope` for scripts that drive the page.
    fn publish(&self) {
        let Ok(window) = dom::window() else { return };
        let o = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = js_sys::Reflect::set(&o, &k.into(), &v);
        };
        set("model", self.model.as_ref().and_then(|m| serde_json::to_string(m).ok()).map_or(JsValue::NULL, |s| s.into()));
        set("errors", JsValue::from(self.errors.iter().map(JsValue::from).collect::<js_sys::Array>()));
        if let Some((scores, _)) = self.shown_scores() {
            set("scoresJson", views::head_scores_json(&scores).into());
        }
        if let Some(s) = &self.sweep {
            let records: Vec<_> = s.results.iter().map(|r| r.record.clone()).collect();
            set("testsJsonl", views::tests_jsonl(&records).into());
            let traces: serde_json::Map<String, serde_json::Value> =
                s.results.iter().map(|r| (r.record.id.clone(), serde_json::json!(r.argmax))).collect();
            set("tracesJson", serde_json::Value::Object(traces).to_string().into());
            set("sweepDone", s.done.as_ref().map_or(JsValue::NULL, |d| d.to_string().into()));
            set("testsDone", JsValue::from(s.results.len() as u32));
        }
        if let Ok(cells) = js_sys::Reflect::get(&window, &"__headscopeHeadCells".into()) {
            set("headCells", cells);
        }
        if let Some(v) = &self.head_view {
            set("headView", serde_json::to_string(v).map_or(JsValue::NULL, |s| s.into()));
        }
        let _ = js_sys::Reflect::set(&window, &"__headscope".into(), &o);
    }
}

/// The answer of a test with copied tokens marked.
fn answer_element(r: &TestResult) -> Res<HtmlElement> {
    let span = el("span", "answer", "")?;
    for t in &r.answer {
        let piece = el(if t.copied { "mark" } else { "span" }, "", &t.text)?;
        append(&span, &piece)?;
    }
    if r.answer.is_empty() {
        span.set_text_content(Some("(no answer)"));
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

/// Clicks on a test in the list select it (the list is rebuilt on every render, so one listener on it).
fn wire_tests(app: &Shared) -> Res<()> {
    let a = app.clone();
    let list = a.borrow().dom.tests.clone();
    on(&list, "click", move |e: web_sys::MouseEvent| {
        let Some(target) = e.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) else { return };
        let Ok(Some(li)) = target.closest("li") else { return };
        let Some(i) = li.get_attribute("data-index").and_then(|s| s.parse::<usize>().ok()) else { return };
        let r = a.borrow_mut().select_test(i);
        if let Err(err) = r {
            a.borrow_mut().error(&err);
        }
    })
}
