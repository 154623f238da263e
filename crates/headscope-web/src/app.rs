//! The lab page on the main thread: reads the form, talks to the worker, aggregates the results with
//! core and draws them with headscope-plot on canvases.
//!
//! Where this sits in the data flow: user inputs -> [`Request`]s to the worker (which builds, runs and
//! scores the tests) -> [`Event`]s back -> **core aggregates** ([`views`]: head scores from the test
//! records, masking plans, the official file format) -> **headscope-plot draws** the NIAH grid and the
//! layers x heads heatmaps -> the DOM. The page never computes a forward pass, so it stays responsive.
//!
//! The page is written as candle's wasm examples write theirs (the Elm shape): everything that
//! happens, a click or a worker's event, is one [`Msg`]; [`App::update`] is the one place state
//! changes; [`crate::render`] draws the whole page from the state. [`crate::wire`] turns DOM and worker
//! events into messages and nothing else. Work that waits (reading a file, fetching a haystack) is an
//! [`Effect`] whose result comes back as another message.
//!
//! For automated checks the page mirrors its state into `window.__headscope` (model, head scores,
//! tests, per-step argmax traces, sweep timings) and `<body data-state>`.

use crate::dom::{self, by_id, Res};
use crate::protocol::{
    BackendChoice, Event, HeadViewResult, MaskRequest, ModelSource, ModelSummary, Request, TestAt, TestResult, TestSetup,
};
use crate::{render, views, wire};
use headscope_core::niah::Needle;
use headscope_core::{HeadId, HeadScores, HeadShape};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use web_sys::HtmlElement;

/// Where the default haystack and example needles are served, beside the page.
const DEFAULT_HAYSTACK_URL: &str = "haystacks/kjv-john.txt";
const EXAMPLE_NEEDLES_URL: &str = "needles/heldout.jsonl";

/// What the worker is doing for the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
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
pub(crate) struct SweepView {
    pub setup: TestSetup,
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    pub total: usize,
    pub mask: Option<MaskRequest>,
    pub results: Vec<TestResult>,
    pub started: f64,
    pub done: Option<serde_json::Value>,
}

/// Which scores the heatmaps show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Sweep,
    Imported,
}

/// The before/after rerun of one test with the mask.
pub(crate) enum Rerun {
    None,
    Running,
    Done { before: Box<TestResult>, after: Box<TestResult>, masked: Vec<HeadId> },
}

/// What the export buttons offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Export {
    Scores,
    Tests,
    NiahPng,
    HeadsPng,
    ActivationPng,
}

/// Files a file input or a drop gave: (path in the chosen folder, file).
pub(crate) type Files = Vec<(String, web_sys::File)>;

/// Everything that happens on the page.
pub(crate) enum Msg {
    /// The page has started: wait for the charts' font, fetch the default haystack.
    Boot,
    /// The worker reported.
    Worker(Event),
    /// A worker message could not be read.
    WorkerUnreadable(String),
    /// The worker died (its `onerror`).
    WorkerFailed(String),
    LoadBundled,
    LoadUrl,
    BackendChanged,
    /// Files of a model folder were chosen or dropped.
    ModelFiles(Files),
    ModelDropped(web_sys::DataTransfer),
    /// A model's files were read: send them to the worker.
    ModelFilesRead {
        folder: String,
        names: Vec<String>,
        buffers: Vec<js_sys::ArrayBuffer>,
    },
    /// Something is dragged over the model panel (or left it).
    Dragging(bool),
    Run,
    SweepMasked,
    Cancel,
    Rerun,
    MaskClear,
    MaskTop,
    MaskRandom,
    NeedlesExample,
    NeedlesFile(Files),
    NeedlesLoaded {
        name: String,
        needles: Vec<Needle>,
    },
    NeedlesClear,
    HaystackDefault,
    HaystackFile(Files),
    /// A haystack arrived; at boot it only fills an empty text box.
    HaystackLoaded {
        text: String,
        replace: bool,
    },
    HaystackEdited,
    ScoresFile(Files),
    ScoresImported {
        name: String,
        scores: HeadScores,
    },
    ScoresSourceChanged,
    GateChanged,
    Export(Export),
    /// A click on the head heatmap, in canvas pixels.
    HeadsClicked {
        x: i32,
        y: i32,
        shift: bool,
    },
    /// A click on the NIAH grid, in canvas pixels.
    NiahClicked {
        x: i32,
        y: i32,
    },
    TestClicked(usize),
    CloseError,
    /// Work that waited failed: shown in the error banner.
    Failed(String),
}

impl Msg {
    /// Whether the whole page is drawn again after it. Typing in the haystack or dragging over the
    /// model panel changes one line or one class; redrawing the charts on every keystroke would not.
    fn redraws(&self) -> bool {
        !matches!(self, Msg::HaystackEdited | Msg::Dragging(_) | Msg::CloseError)
    }
}

/// Work that waits, asked for by [`App::update`] and run by [`dispatch`].
pub(crate) enum Effect {
    /// A future whose outcome is the next message.
    Later(Pin<Box<dyn Future<Output = Msg>>>),
    /// Start a new worker (the last one died).
    RestartWorker,
}

fn later(f: impl Future<Output = Msg> + 'static) -> Option<Effect> {
    Some(Effect::Later(Box::pin(f)))
}

/// The page's state.
pub(crate) struct App {
    pub dom: render::Dom,
    pub worker: Option<web_sys::Worker>,
    pub busy: Busy,
    pub backend: BackendChoice,
    pub model: Option<ModelSummary>,
    /// Content hash of the last model loaded (kept while another load runs).
    pub loaded_hash: Option<String>,
    /// The last model source, with the bytes of picked files, to reload after a crash or a backend change.
    pub source: ModelSource,
    pub source_buffers: Vec<js_sys::ArrayBuffer>,
    pub needles: Option<(String, Vec<Needle>)>,
    pub sweep: Option<SweepView>,
    pub imported: Option<(String, HeadScores)>,
    pub import_info: String,
    pub shown: Source,
    pub masked: Vec<HeadId>,
    pub selected_test: Option<usize>,
    pub selected_head: Option<HeadId>,
    /// The head whose view the worker is computing.
    pub watching: Option<HeadId>,
    pub head_view: Option<HeadViewResult>,
    pub rerun: Rerun,
    /// The status line.
    pub status: String,
    /// The error banner's text, while it shows.
    pub banner: Option<String>,
    pub dragging: bool,
    /// Every error shown, for automated checks.
    pub errors: Vec<String>,
}

pub(crate) type Shared = Rc<RefCell<App>>;

/// Starts the page: reports panics on the page, wires every control, starts the worker.
pub fn start() {
    std::panic::set_hook(Box::new(|info| show_fatal(&format!("internal error: {info}. Reload the page to start over."))));
    if let Err(e) = boot() {
        show_fatal(&e);
    }
}

/// Shows `message` in the error banner without the app (a panic, or a page that could not start).
fn show_fatal(message: &str) {
    web_sys::console::error_1(&message.into());
    if let Ok(e) = by_id::<HtmlElement>("error-text") {
        e.set_text_content(Some(message));
    }
    if let Ok(e) = by_id::<HtmlElement>("error") {
        e.set_hidden(false);
    }
}

fn boot() -> Res<()> {
    let dom = render::Dom::find()?;
    let params =
        web_sys::UrlSearchParams::new_with_str(&dom::window()?.location().search().unwrap_or_default()).map_err(|e| dom::js_error(&e))?;
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
        import_info: String::new(),
        shown: Source::Sweep,
        masked: vec![],
        selected_test: None,
        selected_head: None,
        watching: None,
        head_view: None,
        rerun: Rerun::None,
        status: String::new(),
        banner: None,
        dragging: false,
        errors: vec![],
    }));
    wire::wire(&app)?;
    let worker = wire::start_worker(&app)?;
    app.borrow_mut().worker = Some(worker);
    dispatch(&app, Msg::Boot);
    Ok(())
}

/// The one way anything changes the page: `msg` goes through [`App::update`], errors go to the
/// banner, the page is drawn again, and the update's waiting work is started.
pub(crate) fn dispatch(app: &Shared, msg: Msg) {
    let effect = {
        let mut a = app.borrow_mut();
        let redraw = msg.redraws();
        let effect = a.update(msg).unwrap_or_else(|e| {
            a.error(&e);
            None
        });
        if redraw {
            render::render(&a);
        } else {
            render::light(&a);
        }
        effect
    };
    match effect {
        None => {}
        Some(Effect::Later(future)) => {
            let app = app.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let msg = future.await;
                dispatch(&app, msg);
            });
        }
        Some(Effect::RestartWorker) => {
            let started = wire::start_worker(app);
            let mut a = app.borrow_mut();
            match started {
                Ok(w) => {
                    a.worker = Some(w);
                    a.busy = Busy::Starting;
                }
                Err(e) => a.error(&format!("the worker could not be restarted: {e}")),
            }
            render::render(&a);
        }
    }
}

/// Reads the first chosen file as text, then makes a message of (its name, its text).
fn read_text(files: Files, then: impl FnOnce(String, String) -> Res<Msg> + 'static) -> Option<Effect> {
    later(async move {
        let r = async {
            let (name, file) = files.into_iter().next().ok_or("no file chosen")?;
            let text = dom::file_text(&file).await?;
            then(name, text)
        };
        r.await.unwrap_or_else(Msg::Failed)
    })
}

fn parse_number(s: &str, what: &str) -> Res<u64> {
    s.trim().parse::<u64>().map_err(|_| format!("{what}: `{s}` is not a whole number"))
}

pub(crate) fn rate(tokens: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        tokens as f64 / seconds
    } else {
        0.0
    }
}

impl App {
    /// What `msg` does to the state; the work it leaves waiting, if any.
    fn update(&mut self, msg: Msg) -> Res<Option<Effect>> {
        match msg {
            Msg::Boot => {
                return Ok(later(async {
                    dom::load_font(headscope_plot::FONT_FAMILY).await;
                    match dom::fetch_text(DEFAULT_HAYSTACK_URL).await {
                        Ok(text) => Msg::HaystackLoaded { text, replace: false },
                        Err(e) => Msg::Failed(format!("the default haystack could not be fetched: {e}")),
                    }
                }))
            }
            Msg::Worker(event) => return Ok(self.on_event(event)),
            Msg::WorkerUnreadable(e) => return Err(format!("a message from the worker could not be read: {e}")),
            Msg::WorkerFailed(message) => return Ok(self.crashed(&format!("the model's worker failed: {message}"))),
            Msg::LoadBundled => self.send_load(ModelSource::Bundled, vec![]),
            Msg::LoadUrl => {
                let url = self.dom.model_url.value();
                if url.trim().is_empty() {
                    return Err("type the URL of a model folder first".into());
                }
                self.send_load(ModelSource::Url { url: url.trim().to_string() }, vec![]);
            }
            Msg::BackendChanged => {
                self.backend = BackendChoice::parse(&self.dom.backend.value()).unwrap_or_default();
                let (source, buffers) = (self.source.clone(), self.source_buffers.clone());
                self.send_load(source, buffers);
            }
            Msg::ModelFiles(files) => {
                self.status = "reading the model's files…".into();
                return Ok(later(async move { read_model_files(files).await.unwrap_or_else(Msg::Failed) }));
            }
            Msg::ModelDropped(dt) => {
                self.dragging = false;
                return Ok(later(async move {
                    let read = match dom::dropped_files(&dt).await {
                        Ok(files) => read_model_files(files).await,
                        Err(e) => Err(e),
                    };
                    read.unwrap_or_else(|e| Msg::Failed(format!("the dropped files: {e}")))
                }));
            }
            Msg::ModelFilesRead { folder, names, buffers } => self.send_load(ModelSource::Files { name: folder, names }, buffers),
            Msg::Dragging(on) => self.dragging = on,
            Msg::Run => self.start_sweep(None)?,
            Msg::SweepMasked => {
                let mask = self.mask_request()?;
                self.start_sweep(Some(mask))?;
            }
            Msg::Cancel => {
                self.send(&Request::Cancel, &[]);
                self.status = "cancelling…".into();
            }
            Msg::Rerun => self.start_rerun()?,
            Msg::MaskClear => self.masked.clear(),
            Msg::MaskTop => {
                let k = parse_number(&self.dom.mask_k.value(), "top K")?;
                let (scores, shape) = self.scores_for_masking()?;
                self.masked = views::mask_top(&scores, shape, k as usize).map_err(|e| e.to_string())?;
            }
            Msg::MaskRandom => {
                let k = parse_number(&self.dom.mask_random_k.value(), "random K")?;
                let seed = parse_number(&self.dom.mask_seed.value(), "seed")?;
                let (scores, shape) = self.scores_for_masking()?;
                self.masked = views::mask_random(&scores, shape, k as usize, seed).map_err(|e| e.to_string())?;
            }
            Msg::NeedlesExample => {
                return Ok(later(async {
                    let name = "heldout.jsonl".to_string();
                    let r = dom::fetch_text(EXAMPLE_NEEDLES_URL)
                        .await
                        .and_then(|t| views::import_needles(&name, &t).map_err(|e| e.to_string()));
                    match r {
                        Ok(needles) => Msg::NeedlesLoaded { name, needles },
                        Err(e) => Msg::Failed(e),
                    }
                }))
            }
            Msg::NeedlesFile(files) => {
                return Ok(read_text(files, |name, text| {
                    let needles = views::import_needles(&name, &text).map_err(|e| e.to_string())?;
                    Ok(Msg::NeedlesLoaded { name, needles })
                }))
            }
            Msg::NeedlesLoaded { name, needles } => self.needles = Some((name, needles)),
            Msg::NeedlesClear => self.needles = None,
            Msg::HaystackDefault => {
                return Ok(later(async {
                    match dom::fetch_text(DEFAULT_HAYSTACK_URL).await {
                        Ok(text) => Msg::HaystackLoaded { text, replace: true },
                        Err(e) => Msg::Failed(e),
                    }
                }))
            }
            Msg::HaystackFile(files) => {
                return Ok(read_text(files, |name, text| {
                    if text.trim().is_empty() {
                        return Err(format!("{name} is empty"));
                    }
                    Ok(Msg::HaystackLoaded { text, replace: true })
                }))
            }
            Msg::HaystackLoaded { text, replace } => {
                if replace || self.dom.haystack.value().trim().is_empty() {
                    self.dom.haystack.set_value(&text);
                }
            }
            // The text box holds the haystack; rendering counts its characters.
            Msg::HaystackEdited => {}
            Msg::ScoresFile(files) => {
                return Ok(read_text(files, |name, text| {
                    let scores = views::import_head_scores(&name, &text).map_err(|e| e.to_string())?;
                    Ok(Msg::ScoresImported { name, scores })
                }))
            }
            Msg::ScoresImported { name, scores } => {
                let shape = scores.shape();
                self.import_info = format!("{name}: {} layers x {} heads, {} tests", shape.layers, shape.heads, scores.tests());
                self.imported = Some((name, scores));
                self.shown = Source::Imported;
            }
            Msg::ScoresSourceChanged => {
                self.shown = if self.dom.scores_source.value() == "imported" { Source::Imported } else { Source::Sweep };
            }
            // The gate is read from its field when scores are computed.
            Msg::GateChanged => {}
            Msg::Export(what) => self.export(what)?,
            Msg::HeadsClicked { x, y, shift } => {
                let Some(id) = render::head_at(self, x, y)? else { return Ok(None) };
                if shift {
                    let model = self.model.as_ref().ok_or("load a model before masking heads")?;
                    HeadShape::new(model.layers, model.heads).check(&[id]).map_err(|e| e.to_string())?;
                    views::toggle(&mut self.masked, id);
                } else {
                    self.selected_head = Some(id);
                    self.request_head_view()?;
                }
            }
            Msg::NiahClicked { x, y } => {
                if let Some(i) = render::test_at(self, x, y)? {
                    self.select_test(i)?;
                }
            }
            Msg::TestClicked(i) => self.select_test(i)?,
            Msg::CloseError => self.banner = None,
            Msg::Failed(e) => return Err(e),
        }
        Ok(None)
    }

    /// What a worker's event does.
    fn on_event(&mut self, event: Event) -> Option<Effect> {
        match event {
            Event::Crashed { message } => return self.crashed(&format!("the model's worker crashed: {message}")),
            Event::Ready { webgpu } => {
                self.busy = Busy::Idle;
                if !webgpu && self.backend == BackendChoice::Gpu {
                    self.error("this browser offers no WebGPU to workers: choose the CPU path");
                }
                let (source, buffers) = (self.source.clone(), self.source_buffers.clone());
                self.send_load(source, buffers);
            }
            Event::Status { message } => self.status = message,
            Event::ModelLoaded(summary) => {
                self.busy = Busy::Idle;
                self.status = match &summary.fallback_reason {
                    Some(reason) => format!("WebGPU not used ({reason}); running on the CPU"),
                    None => format!("model loaded in {:.1} s", summary.load_seconds),
                };
                // Results of another model no longer fit the heatmaps; a reload of the same one keeps them.
                if self.loaded_hash.as_ref() != Some(&summary.hash) {
                    self.sweep = None;
                    self.selected_test = None;
                    self.selected_head = None;
                    self.masked.clear();
                }
                self.loaded_hash = Some(summary.hash.clone());
                self.model = Some(summary);
                self.head_view = None;
            }
            Event::SweepStarted { total, lengths, depths, masked } => {
                if let Some(s) = self.sweep.as_mut() {
                    s.total = total;
                    s.lengths = lengths;
                    s.depths = depths;
                    s.started = crate::clock::now();
                }
                self.status = if masked.is_empty() {
                    format!("running {total} tests")
                } else {
                    format!("running {total} tests with {} heads masked", masked.len())
                };
            }
            Event::TestDone { result, .. } => {
                if let Some(s) = self.sweep.as_mut() {
                    s.results.push(*result);
                }
                if self.selected_test.is_none() {
                    self.selected_test = Some(0);
                }
            }
            Event::SweepDone { cancelled, tests, seconds, decode_tokens, decode_seconds, prefill_tokens, prefill_seconds } => {
                self.busy = Busy::Idle;
                let backend = self.model.as_ref().map(|m| m.backend.clone()).unwrap_or_default();
                let stats = serde_json::json!({
                    "cancelled": cancelled, "tests": tests, "seconds": seconds, "decode_tokens": decode_tokens,
                    "decode_seconds": decode_seconds, "decode_tokens_per_second": rate(decode_tokens, decode_seconds),
                    "prefill_tokens": prefill_tokens, "prefill_seconds": prefill_seconds,
                    "prefill_tokens_per_second": rate(prefill_tokens, prefill_seconds), "backend": backend,
                });
                if let Some(s) = self.sweep.as_mut() {
                    s.done = Some(stats);
                }
                self.status = format!(
                    "{} {tests} tests in {seconds:.1} s ({:.0} tokens/s decoding)",
                    if cancelled { "cancelled after" } else { "finished" },
                    rate(decode_tokens, decode_seconds)
                );
            }
            Event::RerunDone { before, after, masked } => {
                self.busy = Busy::Idle;
                self.rerun = Rerun::Done { before, after, masked };
            }
            Event::HeadView(view) => {
                self.busy = Busy::Idle;
                self.watching = None;
                self.head_view = Some(*view);
            }
            Event::Error { context, message } => {
                if self.busy == Busy::Loading {
                    self.model = None;
                }
                self.busy = Busy::Idle;
                self.watching = None;
                if matches!(self.rerun, Rerun::Running) {
                    self.rerun = Rerun::None;
                }
                self.error(&format!("{context}: {message}"));
            }
        }
        None
    }

    /// The worker died: say so, then start a new one, which loads the model again once ready.
    fn crashed(&mut self, message: &str) -> Option<Effect> {
        if let Some(w) = self.worker.take() {
            w.terminate();
        }
        self.error(&format!("{message}\nThe worker was restarted; the model is loading again."));
        self.model = None;
        self.watching = None;
        Some(Effect::RestartWorker)
    }

    /// Shows an error in the banner (and keeps it for automated checks).
    pub(crate) fn error(&mut self, message: &str) {
        web_sys::console::warn_1(&message.into());
        self.errors.push(message.to_string());
        self.banner = Some(message.to_string());
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

    /// The recall a test needs to count in the head scores (the form's, or the default 0.5).
    pub(crate) fn gate(&self) -> f64 {
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
        self.banner = None;
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
        self.watching = Some(head);
        Ok(())
    }

    fn start_rerun(&mut self) -> Res<()> {
        let mask = self.mask_request()?;
        if self.model.is_none() {
            return Err("no model is loaded yet".into());
        }
        let (setup, at, _) = self.current_test()?;
        self.send(&Request::Rerun { setup, at, mask }, &[]);
        self.busy = Busy::Test;
        self.rerun = Rerun::Running;
        Ok(())
    }

    fn export(&self, what: Export) -> Res<()> {
        match what {
            Export::Scores => {
                let (scores, _) = self.shown_scores().ok_or("no head scores yet: run a sweep")?;
                dom::download_bytes("head_scores.json", "application/json", views::head_scores_json(&scores).as_bytes())
            }
            Export::Tests => {
                let records = self.records().filter(|r| !r.is_empty()).ok_or("no tests yet: run a sweep")?;
                dom::download_bytes("tests.jsonl", "application/x-ndjson", views::tests_jsonl(&records).as_bytes())
            }
            Export::NiahPng => render::export_png(&self.dom.niah_canvas, "niah.png"),
            Export::HeadsPng => render::export_png(&self.dom.heads_canvas, "heads.png"),
            Export::ActivationPng => render::export_png(&self.dom.activation_canvas, "activation.png"),
        }
    }

    /// The sweep's test records so far.
    pub(crate) fn records(&self) -> Option<Vec<headscope_core::files::TestRecord>> {
        self.sweep.as_ref().map(|s| s.results.iter().map(|r| r.record.clone()).collect())
    }

    /// The scores the heatmaps show and their title.
    pub(crate) fn shown_scores(&self) -> Option<(HeadScores, String)> {
        match self.shown {
            Source::Imported => self.imported.as_ref().map(|(n, s)| (s.clone(), format!("imported: {n}"))),
            Source::Sweep => {
                let records = self.records()?;
                let model = self.model.as_ref()?;
                let shape = HeadShape::new(model.layers, model.heads);
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
}

/// Reads the files of a model folder the user chose: only the files a model needs are read; a
/// pickle checkpoint is passed by name (empty) so the worker can say why it refuses it without
/// reading gigabytes.
async fn read_model_files(files: Files) -> Res<Msg> {
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
            buffers.push(dom::file_bytes(file).await?);
            names.push(name.to_string());
        } else if pickle {
            buffers.push(js_sys::ArrayBuffer::new(0));
            names.push(name.to_string());
        }
    }
    Ok(Msg::ModelFilesRead { folder, names, buffers })
}
