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
use crate::lessons::{self, MaskPreset, NeedlePreset};
use crate::protocol::{
    BackendChoice, CotMask, Event, HeadViewResult, KvPolicy, KvRequest, MaskRequest, ModelSource, ModelSummary, Request, TestAt,
    TestResult, TestSetup,
};
use crate::session::{self, SavedModel, SavedRun, SavedSession};
use crate::share::{PageState, LINK_HAYSTACK_CHARS, LINK_KEY};
use crate::strings::{msg, Lang, Text};
use crate::views::{BY_HAND_ORIGIN, TOP_ORIGIN};
use crate::{render, views, wire};
use headscope_core::cot::{CotRecord, CotTask};
use headscope_core::niah::Needle;
use headscope_core::{HeadId, HeadScores, HeadShape, ScoreKind};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use wasm_bindgen::JsValue;
use web_sys::HtmlElement;

/// Where the default haystack and example needles are served, beside the page.
const DEFAULT_HAYSTACK_URL: &str = "haystacks/kjv-john.txt";
const EXAMPLE_NEEDLES_URL: &str = "needles/heldout.jsonl";
/// Most tokens of a direct answer in the chain-of-thought demo (`headscope cot`'s default).
const COT_DIRECT_TOKENS: usize = 24;
/// Where the browser keeps the last session's inputs (localStorage: read at once when the page starts).
const STORAGE_KEY: &str = "headscope-state";
/// Haystacks longer than this are not remembered (the browser's storage holds a few megabytes).
const STORED_HAYSTACK_CHARS: usize = 1_000_000;

/// A message worded when it is drawn, in the page's language then.
pub(crate) type Said = Rc<dyn Fn(Lang) -> String>;

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
    /// Rerunning a test, showing a head or scoring heads on repeated tokens.
    Test,
    /// Running the chain-of-thought demo.
    Cot,
}

/// RazorAttention's data-free scores of one model, as the worker computed them.
pub(crate) struct DataFree {
    /// The model's content hash.
    pub hash: String,
    pub induction: Vec<f64>,
    pub echo: Vec<f64>,
}

/// The KV-budget rerun: one test with the whole cache and under a plan.
pub(crate) enum KvView {
    None,
    /// Running with this sink and window.
    Running {
        sink: usize,
        window: usize,
    },
    Done {
        before: Box<TestResult>,
        after: Box<TestResult>,
        /// What the plan kept: KV heads whole of all, sink, window.
        full_kv_heads: usize,
        kv_heads: usize,
        sink: usize,
        window: usize,
        /// Positions of the test's context (prompt and answer) the bytes are counted at.
        positions: usize,
        full_bytes: u64,
        plan_bytes: u64,
    },
}

/// The chain-of-thought demo as the page follows it.
pub(crate) struct CotRun {
    /// The tasks asked.
    pub tasks: Vec<CotTask>,
    /// Each mask's name and heads, in the order the table shows them.
    pub masks: Vec<(String, Vec<HeadId>)>,
    /// Answers expected.
    pub total: usize,
    /// Each answer with its mask's name, as they came.
    pub answers: Vec<(String, CotRecord)>,
    /// Set when it ended: whether it was cancelled.
    pub done: Option<bool>,
}

/// A sweep as the page follows it: one run of the session, kept when the next one starts (and saved
/// with the session).
pub(crate) type SweepView = SavedRun;

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
    /// A haystack arrived; at boot it only fills an empty text box. `default`: it is the page's own.
    HaystackLoaded {
        text: String,
        replace: bool,
        default: bool,
    },
    /// A field of the form was edited (typing): the haystack's size and the remembered inputs follow.
    FormEdited,
    ScoresFile(Files),
    ScoresImported {
        name: String,
        scores: HeadScores,
    },
    ScoresSourceChanged,
    /// Another head score was chosen for the heatmaps.
    ScoreKindChanged,
    /// Start the chain-of-thought demo: fetch its tasks first.
    CotRun,
    /// The demo's tasks arrived.
    CotTasksLoaded(Vec<CotTask>),
    /// Rerun the selected test under the KV plan the slider sets.
    KvRerun,
    /// Another run of the session was chosen for the charts.
    RunChosen,
    /// Download every run and the inputs as one file.
    SaveSession,
    /// A saved session file was chosen.
    SessionFile(Files),
    /// A saved session was read and checked.
    SessionOpened {
        name: String,
        session: Box<SavedSession>,
    },
    /// Another language was chosen.
    LangChanged,
    /// Another run was chosen to compare the shown one with.
    CompareChosen,
    /// A setting the charts read from the form changed (the score gate, the palette): draw again.
    ChartSettingChanged,
    Export(Export),
    /// A head was clicked or chosen with the keyboard: show its view, or with `shift` mask it.
    HeadPicked {
        head: HeadId,
        shift: bool,
    },
    /// A click on the head heatmap, in canvas pixels.
    HeadsClicked {
        x: i32,
        y: i32,
        shift: bool,
    },
    /// A key on the focused score heatmap: arrows move between heads, Enter shows the head's view,
    /// Shift+Enter masks it.
    HeadsKey {
        key: String,
        shift: bool,
    },
    /// An arrow key on the focused test list.
    TestsKey(String),
    /// A click on the NIAH grid, in canvas pixels.
    NiahClicked {
        x: i32,
        y: i32,
    },
    TestClicked(usize),
    CloseError,
    /// Put this experiment in the address bar and on the clipboard.
    CopyLink,
    /// Forget the remembered inputs and reload with the defaults.
    StartOver,
    /// Open or close the lessons.
    LessonToggle,
    /// Go to the lesson step this many steps away.
    LessonStep(isize),
    /// Load the shown step's preset.
    LessonLoad,
    /// Work that waited failed: shown in the error banner.
    Failed(String),
}

impl Msg {
    /// Whether the whole page is drawn again after it. Typing in the haystack or dragging over the
    /// model panel changes one line or one class; redrawing the charts on every keystroke would not.
    fn redraws(&self) -> bool {
        !matches!(self, Msg::FormEdited | Msg::Dragging(_) | Msg::CloseError)
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
    /// Every sweep of the session, oldest first; the worker reports to the last one.
    pub runs: Vec<SweepView>,
    /// The run the charts and the test list show (an index into `runs`).
    pub shown_run: usize,
    /// How the masked heads were chosen ("top-3", "random-3, seed 7", "by hand"), for run names.
    pub mask_origin: String,
    pub imported: Option<(String, HeadScores)>,
    pub shown: Source,
    pub masked: Vec<HeadId>,
    pub selected_test: Option<usize>,
    pub selected_head: Option<HeadId>,
    /// The head whose view the worker is computing.
    pub watching: Option<HeadId>,
    /// A head's view was asked for while a short job (a rerun, another view, the data-free scores) held
    /// the worker: it is asked for as soon as the worker is free, for the head and test selected then.
    pub head_view_queued: bool,
    pub head_view: Option<HeadViewResult>,
    pub rerun: Rerun,
    /// The status line, worded in whichever language the page shows when it is drawn.
    pub status: Said,
    /// The error banner's text, while it shows.
    pub banner: Option<String>,
    pub dragging: bool,
    /// Set when a sweep starts: the next drawing brings the results into view if they are below it.
    pub scroll_to_results: std::cell::Cell<bool>,
    /// The page's default haystack as fetched (a state names it instead of holding it).
    pub default_haystack: Option<String>,
    /// The inputs as last stored, so that only a change is written; `None` once the user started
    /// over (nothing is stored until the page reloads).
    pub stored: Option<String>,
    /// Every error shown, for automated checks.
    pub errors: Vec<String>,
    /// The lesson step shown ([`crate::lessons::STEPS`]); `None`: the lessons are closed.
    pub lesson: Option<usize>,
    /// The head the keyboard is on in the score heatmap (arrow keys move it).
    pub head_cursor: Option<HeadId>,
    /// The run shown beside the shown run (an index into `runs`).
    pub compare_run: Option<usize>,
    /// WebGPU's kernel set as the address asks (`?kernels=serial|parallel`; `?decode=` is its older
    /// name), else the adapter's choice.
    pub kernel_set: Option<String>,
    /// The head score the heatmaps show for a sweep.
    pub score_kind: ScoreKind,
    /// The data-free scores of the loaded model, once computed.
    pub data_free: Option<DataFree>,
    /// The last chain-of-thought demo.
    pub cot: Option<CotRun>,
    /// The last KV-budget rerun.
    pub kv: KvView,
    /// The page's language.
    pub lang: Lang,
    /// The language the markup's strings were last set in.
    pub lang_shown: std::cell::Cell<Option<Lang>>,
}

pub(crate) type Shared = Rc<RefCell<App>>;

/// Starts the page: reports panics on the page, wires every control, starts the worker.
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        show_fatal(&format!(
            "{} / {}",
            msg::INTERNAL_ERROR.fill(Lang::En, &[("info", &info)]),
            msg::INTERNAL_ERROR.fill(Lang::Zh, &[("info", &info)])
        ))
    }));
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
        runs: vec![],
        shown_run: 0,
        mask_origin: String::new(),
        imported: None,
        shown: Source::Sweep,
        masked: vec![],
        selected_test: None,
        selected_head: None,
        watching: None,
        head_view_queued: false,
        head_view: None,
        rerun: Rerun::None,
        status: Rc::new(|_| String::new()),
        banner: None,
        dragging: false,
        scroll_to_results: std::cell::Cell::new(false),
        default_haystack: None,
        stored: Some(String::new()),
        errors: vec![],
        lesson: None,
        head_cursor: None,
        compare_run: None,
        kernel_set: params.get("kernels").or_else(|| params.get("decode")),
        score_kind: ScoreKind::Eq1,
        data_free: None,
        cot: None,
        kv: KvView::None,
        lang: dom::browser_lang().unwrap_or_default(),
        lang_shown: std::cell::Cell::new(None),
    }));
    app.borrow_mut().restore(params.get("backend").is_some());
    wire::wire(&app)?;
    let worker = wire::start_worker(&app)?;
    app.borrow_mut().worker = Some(worker);
    dispatch(&app, Msg::Boot);
    register_service_worker();
    Ok(())
}

/// Registers `sw.js`, which keeps the page and the lab model for use without a network. Where the
/// browser offers no service workers (a `file://` page, a private window) the page works as before.
fn register_service_worker() {
    let Ok(window) = dom::window() else { return };
    let container = window.navigator().service_worker();
    let registration = container.register("./sw.js");
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = dom::wait(registration).await {
            web_sys::console::warn_1(&format!("the page will not work offline: {e}").into());
        }
    });
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
        a.store();
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
                Err(e) => {
                    let m = a.say(msg::WORKER_RESTART_FAILED, &[("error", &e)]);
                    a.error(&m)
                }
            }
            render::render(&a);
        }
    }
}

/// Reads the first chosen file as text, then makes a message of (its name, its text).
fn read_text(files: Files, lang: Lang, then: impl FnOnce(String, String) -> Res<Msg> + 'static) -> Option<Effect> {
    later(async move {
        let r = async {
            let (name, file) = files.into_iter().next().ok_or_else(|| msg::NO_FILES_CHOSEN.get(lang).to_string())?;
            let text = dom::file_text(&file).await?;
            then(name, text)
        };
        r.await.unwrap_or_else(Msg::Failed)
    })
}

/// A whole number from a field named `what` (a message of the table, in `lang`).
fn parse_number(s: &str, what: Text, lang: Lang) -> Res<u64> {
    s.trim().parse::<u64>().map_err(|_| msg::NOT_A_WHOLE_NUMBER.fill(lang, &[("what", &what.get(lang)), ("value", &s)]))
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
                let lang = self.lang;
                return Ok(later(async move {
                    dom::load_font(headscope_plot::FONT_FAMILY).await;
                    match dom::fetch_text(DEFAULT_HAYSTACK_URL).await {
                        Ok(text) => Msg::HaystackLoaded { text, replace: false, default: true },
                        Err(e) => Msg::Failed(msg::DEFAULT_HAYSTACK_FAILED.fill(lang, &[("error", &e)])),
                    }
                }));
            }
            Msg::Worker(event) => return Ok(self.on_event(event)),
            Msg::WorkerUnreadable(e) => return Err(self.say(msg::WORKER_UNREADABLE, &[("error", &e)])),
            Msg::WorkerFailed(message) => {
                let m = self.say(msg::WORKER_FAILED, &[("error", &message)]);
                return Ok(self.crashed(&m));
            }
            Msg::LoadBundled => self.send_load(ModelSource::Bundled, vec![]),
            Msg::LoadUrl => {
                let url = self.dom.model_url.value();
                if url.trim().is_empty() {
                    return Err(self.say(msg::TYPE_URL_FIRST, &[]));
                }
                self.send_load(ModelSource::Url { url: url.trim().to_string() }, vec![]);
            }
            Msg::BackendChanged => {
                self.backend = BackendChoice::parse(&self.dom.backend.value()).unwrap_or_default();
                let (source, buffers) = (self.source.clone(), self.source_buffers.clone());
                self.send_load(source, buffers);
            }
            Msg::ModelFiles(files) => {
                self.status = Rc::new(|l| msg::READING_MODEL_FILES.get(l).into());
                let lang = self.lang;
                return Ok(later(async move { read_model_files(files, lang).await.unwrap_or_else(Msg::Failed) }));
            }
            Msg::ModelDropped(dt) => {
                self.dragging = false;
                let lang = self.lang;
                return Ok(later(async move {
                    let read = match dom::dropped_files(&dt).await {
                        Ok(files) => read_model_files(files, lang).await,
                        Err(e) => Err(e),
                    };
                    read.unwrap_or_else(|e| Msg::Failed(msg::DROPPED_FILES.fill(lang, &[("error", &e)])))
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
                self.status = Rc::new(|l| msg::CANCELLING.get(l).into());
            }
            Msg::Rerun => self.start_rerun()?,
            Msg::MaskClear => {
                self.masked.clear();
                self.mask_origin.clear();
            }
            Msg::MaskTop => {
                let k = parse_number(&self.dom.mask_k.value(), msg::FIELD_TOP_K, self.lang)?;
                let (scores, shape) = self.scores_for_masking(self.score_kind)?;
                self.masked = views::mask_top(&scores, shape, k as usize).map_err(|e| e.to_string())?;
                self.mask_origin = format!("{TOP_ORIGIN}{k}");
            }
            Msg::MaskRandom => {
                let k = parse_number(&self.dom.mask_random_k.value(), msg::FIELD_RANDOM_K, self.lang)?;
                let seed = parse_number(&self.dom.mask_seed.value(), msg::FIELD_SEED, self.lang)?;
                let (scores, shape) = self.scores_for_masking(ScoreKind::Eq1)?;
                self.masked = views::mask_random(&scores, shape, k as usize, seed).map_err(|e| e.to_string())?;
                self.mask_origin = views::random_origin(k, seed);
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
                return Ok(read_text(files, self.lang, |name, text| {
                    let needles = views::import_needles(&name, &text).map_err(|e| e.to_string())?;
                    Ok(Msg::NeedlesLoaded { name, needles })
                }))
            }
            Msg::NeedlesLoaded { name, needles } => self.needles = Some((name, needles)),
            Msg::NeedlesClear => self.needles = None,
            Msg::HaystackDefault => {
                return Ok(later(async {
                    match dom::fetch_text(DEFAULT_HAYSTACK_URL).await {
                        Ok(text) => Msg::HaystackLoaded { text, replace: true, default: true },
                        Err(e) => Msg::Failed(e),
                    }
                }))
            }
            Msg::HaystackFile(files) => {
                return Ok(read_text(files, self.lang, |name, text| {
                    views::check_haystack_text(&name, &text)?;
                    Ok(Msg::HaystackLoaded { text, replace: true, default: false })
                }))
            }
            Msg::HaystackLoaded { text, replace, default } => {
                if replace || self.dom.haystack.value().trim().is_empty() {
                    self.dom.haystack.set_value(&text);
                }
                if default {
                    self.default_haystack = Some(text);
                }
            }
            // The form holds the inputs; rendering counts the haystack, and the dispatch remembers them.
            Msg::FormEdited => {}
            Msg::ScoresFile(files) => {
                return Ok(read_text(files, self.lang, |name, text| {
                    let scores = views::import_head_scores(&name, &text).map_err(|e| e.to_string())?;
                    Ok(Msg::ScoresImported { name, scores })
                }))
            }
            Msg::ScoresImported { name, scores } => {
                self.imported = Some((name, scores));
                self.shown = Source::Imported;
            }
            Msg::RunChosen => {
                let chosen = self.dom.run_shown.value().parse::<usize>().ok().filter(|&i| i < self.runs.len());
                if let Some(i) = chosen.filter(|&i| i != self.shown_run) {
                    self.shown_run = i;
                    self.shown = Source::Sweep;
                    self.selected_test = (!self.runs[i].results.is_empty()).then_some(0);
                    self.head_view = None;
                }
            }
            Msg::SaveSession => self.save_session()?,
            Msg::SessionFile(files) => {
                let size = files.first().map_or(0.0, |(_, f)| f.size());
                if size > session::MAX_BYTES as f64 {
                    let mb = format!("{:.0}", size / 1e6);
                    return Err(self.say(msg::SESSION_TOO_LARGE, &[("mb", &mb), ("max", &(session::MAX_BYTES >> 20))]));
                }
                return Ok(read_text(files, self.lang, |name, text| {
                    let session = Box::new(SavedSession::from_json(&name, &text)?);
                    Ok(Msg::SessionOpened { name, session })
                }));
            }
            Msg::SessionOpened { name, session } => self.open_session(&name, *session)?,
            Msg::LangChanged => self.lang = Lang::parse(&self.dom.lang.value()).unwrap_or_default(),
            Msg::CompareChosen => {
                self.compare_run = self.dom.run_compare.value().parse::<usize>().ok().filter(|&i| i < self.runs.len());
            }
            Msg::ScoresSourceChanged => {
                self.shown = if self.dom.scores_source.value() == "imported" { Source::Imported } else { Source::Sweep };
            }
            Msg::ScoreKindChanged => {
                self.score_kind =
                    ScoreKind::parse_list(&self.dom.score_kind.value()).ok().and_then(|k| k.first().copied()).unwrap_or(ScoreKind::Eq1);
                self.shown = Source::Sweep;
                self.request_data_free();
            }
            Msg::CotRun => {
                if self.model.is_none() {
                    return Err(self.say(msg::NO_MODEL_YET, &[]));
                }
                let set = self.dom.cot_set.value();
                let count = parse_number(&self.dom.cot_count.value(), msg::FIELD_COT_COUNT, self.lang)?.max(1) as usize;
                return Ok(later(async move {
                    let name = format!("cot/{set}.jsonl");
                    let tasks = dom::fetch_text(&name).await.and_then(|text| {
                        headscope_core::cot::parse_cot_jsonl(&text, std::path::Path::new(&name)).map_err(|e| e.to_string())
                    });
                    match tasks {
                        Ok(mut tasks) => {
                            tasks.truncate(count);
                            Msg::CotTasksLoaded(tasks)
                        }
                        Err(e) => Msg::Failed(e),
                    }
                }));
            }
            Msg::CotTasksLoaded(tasks) => self.start_cot(tasks)?,
            Msg::KvRerun => self.start_kv_rerun()?,
            // The gate and the palette are read from their fields when the charts are drawn.
            Msg::ChartSettingChanged => {}
            Msg::Export(what) => self.export(what)?,
            Msg::HeadsClicked { x, y, shift } => {
                let Some(head) = render::head_at(self, x, y)? else { return Ok(None) };
                return self.update(Msg::HeadPicked { head, shift });
            }
            Msg::HeadsKey { key, shift } => {
                let Some((rows, cols)) = render::heads_shape(self) else { return Ok(None) };
                let at = self.head_cursor.or(self.selected_head).filter(|h| h.layer < rows && h.head < cols);
                let at = at.unwrap_or(HeadId::new(0, 0));
                let (layer, head) = (at.layer, at.head);
                match key.as_str() {
                    "ArrowUp" => self.head_cursor = Some(HeadId::new(layer.saturating_sub(1), head)),
                    "ArrowDown" => self.head_cursor = Some(HeadId::new((layer + 1).min(rows - 1), head)),
                    "ArrowLeft" => self.head_cursor = Some(HeadId::new(layer, head.saturating_sub(1))),
                    "ArrowRight" => self.head_cursor = Some(HeadId::new(layer, (head + 1).min(cols - 1))),
                    "Enter" => return self.update(Msg::HeadPicked { head: at, shift }),
                    _ => {}
                }
            }
            Msg::HeadPicked { head, shift } => {
                self.head_cursor = Some(head);
                if shift {
                    let model = self.model.as_ref().ok_or_else(|| self.say(msg::LOAD_MODEL_BEFORE_MASKING, &[]))?;
                    HeadShape::new(model.layers, model.heads).check(&[head]).map_err(|e| e.to_string())?;
                    views::toggle(&mut self.masked, head);
                    self.mask_origin = BY_HAND_ORIGIN.into();
                } else {
                    self.selected_head = Some(head);
                    self.request_head_view()?;
                }
            }
            Msg::TestsKey(key) => {
                let n = self.sweep().map_or(0, |s| s.results.len());
                if n > 0 {
                    let at = self.selected_test.unwrap_or(0);
                    let to = match key.as_str() {
                        "ArrowUp" => at.saturating_sub(1),
                        "ArrowDown" => (at + 1).min(n - 1),
                        "Home" => 0,
                        "End" => n - 1,
                        _ => at,
                    };
                    if Some(to) != self.selected_test {
                        self.select_test(to)?;
                    }
                }
            }
            Msg::NiahClicked { x, y } => {
                if let Some(i) = render::test_at(self, x, y)? {
                    self.select_test(i)?;
                }
            }
            Msg::TestClicked(i) => self.select_test(i)?,
            Msg::CloseError => self.banner = None,
            Msg::CopyLink => self.copy_link()?,
            Msg::StartOver => {
                self.stored = None;
                let storage = dom::window()?.local_storage().ok().flatten();
                if let Some(s) = storage {
                    let _ = s.remove_item(STORAGE_KEY);
                }
                let location = dom::window()?.location();
                let page = format!("{}{}", location.pathname().unwrap_or_default(), location.search().unwrap_or_default());
                location.replace(&page).map_err(|e| dom::js_error(&e))?;
            }
            Msg::LessonToggle => self.lesson = if self.lesson.is_some() { None } else { Some(0) },
            Msg::LessonStep(by) => {
                let last = lessons::STEPS.len() - 1;
                self.lesson = Some(self.lesson.unwrap_or(0).saturating_add_signed(by).min(last));
            }
            Msg::LessonLoad => return self.load_lesson(),
            Msg::Failed(e) => return Err(e),
        }
        Ok(None)
    }

    /// Offers every run with its results and the page's inputs as one file.
    fn save_session(&self) -> Res<()> {
        let model = self.model.as_ref().ok_or_else(|| self.say(msg::SAVE_NEEDS_RESULTS, &[]))?;
        if self.busy == Busy::Sweep {
            return Err(self.say(msg::SAVE_WHILE_RUNNING, &[]));
        }
        let runs = self.runs.clone();
        if runs.iter().all(|r| r.results.is_empty()) {
            return Err(self.say(msg::NO_RESULTS_YET, &[]));
        }
        let saved_model = SavedModel { name: model.name.clone(), hash: model.hash.clone(), layers: model.layers, heads: model.heads };
        let mut file = SavedSession::new(saved_model, self.page_state(), runs, self.shown_run, self.compare_run);
        file.saved = js_sys::Date::new_0().to_iso_string().into();
        dom::download_bytes("headscope-session.json", "application/json", file.to_json().as_bytes())
    }

    /// Puts a saved session's inputs and runs back, when its model is loaded.
    fn open_session(&mut self, name: &str, s: SavedSession) -> Res<()> {
        let model = self.model.as_ref().ok_or_else(|| self.say(msg::OPEN_NEEDS_MODEL, &[]))?;
        let same = s.fits(model.layers, model.heads, &model.hash)?;
        if self.busy != Busy::Idle {
            return Err(self.say(msg::OPEN_WHILE_BUSY, &[]));
        }
        self.apply(&s.state, true);
        if let Some(h) = &s.state.haystack {
            self.dom.haystack.set_value(h);
        } else if let Some(text) = &self.default_haystack {
            self.dom.haystack.set_value(text);
        }
        let count = s.runs.len();
        self.runs = s.runs;
        self.shown_run = s.shown_run.min(count.saturating_sub(1));
        self.compare_run = s.compare_run;
        self.shown = Source::Sweep;
        // A batch of needles is not in the form: it comes back from the shown run.
        self.needles = self.sweep().map(|r| r.setup.needles.clone()).filter(|n| n.len() > 1).map(|n| (name.to_string(), n));
        self.selected_test = self.sweep().filter(|r| !r.results.is_empty()).map(|_| 0);
        self.head_view = None;
        let m = if same { msg::OPENED_SESSION } else { msg::OPENED_SESSION_OTHER_MODEL };
        let (name, model) = (name.to_string(), s.model.name.clone());
        self.status = Rc::new(move |l| m.fill(l, &[("name", &name), ("count", &count), ("model", &model)]));
        Ok(())
    }

    /// Loads the shown lesson step's preset: its inputs into the form, its masks from the last
    /// unmasked run, the best head's view; the held-out needles arrive as a message.
    fn load_lesson(&mut self) -> Res<Option<Effect>> {
        let Some(step) = self.lesson.and_then(|i| lessons::STEPS.get(i)) else { return Ok(None) };
        let preset = step.preset;
        let state = preset.apply_to(&self.page_state());
        self.apply(&state, true);
        if preset.default_haystack {
            let text = self.default_haystack.clone().ok_or_else(|| self.say(msg::HAYSTACK_NOT_YET, &[]))?;
            self.dom.haystack.set_value(&text);
        }
        let needs_scores = self.say(msg::STEP_NEEDS_SCORES, &[]);
        match preset.mask {
            MaskPreset::Keep | MaskPreset::Clear => {}
            MaskPreset::Top(k) => {
                let (scores, shape) = self.scores_for_masking(ScoreKind::Eq1).map_err(|_| needs_scores.clone())?;
                self.masked = views::mask_top(&scores, shape, k).map_err(|e| e.to_string())?;
                self.mask_origin = format!("{TOP_ORIGIN}{k}");
            }
        }
        if preset.select_best_head {
            let (scores, _) = self.scores_for_masking(ScoreKind::Eq1).map_err(|_| needs_scores.clone())?;
            let best = scores.ranked().into_iter().next().ok_or(needs_scores)?;
            self.selected_head = Some(best.0);
            self.request_head_view()?;
        }
        let (number, title) = (self.lesson.unwrap_or(0) + 1, step.title);
        self.status = Rc::new(move |l| msg::LESSON_LOADED.fill(l, &[("step", &number), ("title", &title.get(l))]));
        Ok(match preset.needles {
            NeedlePreset::Keep => None,
            NeedlePreset::SanFrancisco => {
                self.needles = None;
                None
            }
            NeedlePreset::HeldOut => self.update(Msg::NeedlesExample)?,
        })
    }

    /// What a worker's event does.
    fn on_event(&mut self, event: Event) -> Option<Effect> {
        // Work that leaves the worker free: data-free scores chosen meanwhile are asked for then (not
        // after an error, which could be their own request failing).
        let frees = matches!(
            event,
            Event::SweepDone { .. } | Event::RerunDone { .. } | Event::HeadView(_) | Event::CotDone { .. } | Event::KvRerunDone { .. }
        );
        let effect = self.handle_event(event);
        if frees {
            if self.head_view_queued && self.busy == Busy::Idle {
                if let Err(e) = self.request_head_view() {
                    self.error(&e);
                }
            }
            self.request_data_free();
        }
        effect
    }

    fn handle_event(&mut self, event: Event) -> Option<Effect> {
        match event {
            Event::Crashed { message } => {
                let m = self.say(msg::WORKER_CRASHED, &[("error", &message)]);
                return self.crashed(&m);
            }
            Event::Ready { webgpu } => {
                self.busy = Busy::Idle;
                if !webgpu && self.backend == BackendChoice::Gpu {
                    let m = self.say(msg::NO_WEBGPU_IN_WORKERS, &[]);
                    self.error(&m);
                }
                let (source, buffers) = (self.source.clone(), self.source_buffers.clone());
                self.send_load(source, buffers);
            }
            Event::Status(status) => self.status = Rc::new(move |l| status.say(l)),
            Event::ModelLoaded(summary) => {
                self.busy = Busy::Idle;
                let (reason, seconds) = (summary.fallback_reason.clone(), format!("{:.1}", summary.load_seconds));
                self.status = Rc::new(move |l| match &reason {
                    Some(reason) => msg::WEBGPU_NOT_USED.fill(l, &[("reason", &reason.say(l))]),
                    None => msg::MODEL_LOADED.fill(l, &[("seconds", &seconds)]),
                });
                // Results of another model no longer fit the heatmaps; a reload of the same one keeps them.
                if self.loaded_hash.as_ref().is_some_and(|h| h != &summary.hash) {
                    self.runs.clear();
                    self.shown_run = 0;
                    self.compare_run = None;
                    self.selected_test = None;
                    self.selected_head = None;
                    self.masked.clear();
                }
                // Heads a remembered or shared experiment names that this model lacks are dropped.
                let shape = HeadShape::new(summary.layers, summary.heads);
                self.masked.retain(|h| shape.check(&[*h]).is_ok());
                self.selected_head = self.selected_head.filter(|h| shape.check(&[*h]).is_ok());
                self.loaded_hash = Some(summary.hash.clone());
                self.model = Some(summary);
                self.head_view = None;
                self.request_data_free();
            }
            Event::SweepStarted { total, lengths, depths, masked, haystack_tokens } => {
                if let Some(s) = self.runs.last_mut() {
                    s.total = total;
                    s.haystack_tokens = haystack_tokens;
                    s.lengths = lengths;
                    s.depths = depths;
                    s.started = crate::clock::now();
                }
                // A masked run is shown beside the last unmasked run of the same tests (else the last
                // unmasked run, whose scores ranked its heads).
                if let Some((new, earlier)) = self.runs.split_last().filter(|(new, _)| new.mask.is_some()) {
                    let same = |r: &SweepView| r.setup == new.setup && r.lengths == new.lengths && r.depths == new.depths;
                    let unmasked = |r: &&SweepView| r.mask.is_none();
                    self.compare_run =
                        earlier.iter().rposition(|r| unmasked(&r) && same(r)).or_else(|| earlier.iter().rposition(|r| unmasked(&r)));
                }
                self.scroll_to_results.set(true);
                let masked = masked.len();
                self.status = Rc::new(move |l| {
                    if masked == 0 {
                        msg::RUNNING.fill(l, &[("total", &total)])
                    } else {
                        msg::RUNNING_MASKED.fill(l, &[("total", &total), ("masked", &masked)])
                    }
                });
            }
            Event::TestDone { result, .. } => {
                if let Some(s) = self.runs.last_mut() {
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
                if let Some(s) = self.runs.last_mut() {
                    s.done = Some(stats);
                }
                self.default_mask_k();
                let m = if cancelled { msg::CANCELLED } else { msg::FINISHED };
                let (seconds, rate) = (format!("{seconds:.1}"), format!("{:.0}", rate(decode_tokens, decode_seconds)));
                self.status = Rc::new(move |l| m.fill(l, &[("tests", &tests), ("seconds", &seconds), ("rate", &rate)]));
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
            Event::KvRerunDone { before, after, full_kv_heads, kv_heads, positions, full_bytes, plan_bytes } => {
                self.busy = Busy::Idle;
                let KvView::Running { sink, window } = self.kv else { return None };
                self.kv = KvView::Done { before, after, full_kv_heads, kv_heads, sink, window, positions, full_bytes, plan_bytes };
                self.status = Rc::new(|_| String::new());
            }
            Event::RepeatedScores { induction, echo, period } => {
                self.busy = Busy::Idle;
                let hash = self.loaded_hash.clone().unwrap_or_default();
                self.data_free = Some(DataFree { hash, induction, echo });
                self.status = Rc::new(move |l| msg::REPEATED_DONE.fill(l, &[("period", &period)]));
            }
            Event::CotStarted { total } => {
                if let Some(c) = self.cot.as_mut() {
                    c.total = total;
                }
            }
            Event::CotAnswer { mask, record } => {
                if let Some(c) = self.cot.as_mut() {
                    c.answers.push((mask, record));
                }
            }
            Event::CotDone { cancelled } => {
                self.busy = Busy::Idle;
                if let Some(c) = self.cot.as_mut() {
                    c.done = Some(cancelled);
                }
                let m = if cancelled { msg::COT_CANCELLED } else { msg::COT_FINISHED };
                self.status = Rc::new(move |l| m.get(l).into());
            }
            Event::Error { context, message } => {
                if self.busy == Busy::Loading {
                    self.model = None;
                }
                // A sweep refused before its first test leaves no run: the one shown before stays.
                if self.busy == Busy::Sweep && self.runs.last().is_some_and(|r| r.results.is_empty()) {
                    self.runs.pop();
                    self.shown_run = self.runs.len().saturating_sub(1);
                    self.compare_run = self.compare_run.filter(|&i| i < self.runs.len() && i != self.shown_run);
                }
                if self.busy == Busy::Cot {
                    if let Some(c) = self.cot.as_mut() {
                        c.done = Some(true);
                    }
                }
                self.busy = Busy::Idle;
                self.watching = None;
                if matches!(self.kv, KvView::Running { .. }) {
                    self.kv = KvView::None;
                }
                if matches!(self.rerun, Rerun::Running) {
                    self.rerun = Rerun::None;
                }
                let message = crate::strings::reword(&message, self.lang);
                let m = self.say(msg::ERROR_IN, &[("context", &context.say(self.lang)), ("message", &message)]);
                self.error(&m);
            }
        }
        None
    }

    /// The worker died: say so, then start a new one, which loads the model again once ready.
    fn crashed(&mut self, message: &str) -> Option<Effect> {
        if let Some(w) = self.worker.take() {
            w.terminate();
        }
        let m = self.say(msg::WORKER_RESTARTED, &[("message", &message)]);
        self.error(&m);
        self.model = None;
        self.watching = None;
        Some(Effect::RestartWorker)
    }

    /// The page's inputs as they stand.
    fn page_state(&self) -> PageState {
        let d = &self.dom;
        let haystack = d.haystack.value();
        let default = self.default_haystack.as_deref() == Some(haystack.as_str()) || haystack.trim().is_empty();
        PageState {
            backend: d.backend.value(),
            needle: d.needle.value(),
            question: d.question.value(),
            answer: d.answer.value(),
            haystack: (!default).then_some(haystack),
            lengths: d.lengths.value(),
            depths: d.depths.value(),
            max_new: d.max_new.value(),
            gate: d.gate.value(),
            plain: d.plain.checked(),
            masked: self.masked.iter().map(HeadId::to_string).collect(),
            mask_origin: self.mask_origin.clone(),
            mask_mode: d.mask_mode.value(),
            mask_scope: d.mask_scope.value(),
            mask_k: d.mask_k.value(),
            random_k: d.mask_random_k.value(),
            seed: d.mask_seed.value(),
            selected_head: self.selected_head.map(|h| h.to_string()),
            lesson: self.lesson,
            palette: d.palette.value(),
            lang: self.lang.code().into(),
            ..PageState::default()
        }
    }

    /// Fills the form from `state`; fields it leaves empty keep the page's defaults. The backend of
    /// the state is taken unless the address names one (`?backend=`).
    fn apply(&mut self, state: &PageState, backend_in_address: bool) {
        let d = &self.dom;
        if !backend_in_address {
            if let Some(b) = BackendChoice::parse(&state.backend) {
                self.backend = b;
                d.backend.set_value(&state.backend);
            }
        }
        for (field, value) in [
            (&d.lengths, &state.lengths),
            (&d.depths, &state.depths),
            (&d.max_new, &state.max_new),
            (&d.gate, &state.gate),
            (&d.mask_k, &state.mask_k),
            (&d.mask_random_k, &state.random_k),
            (&d.mask_seed, &state.seed),
            (&d.question, &state.question),
            (&d.answer, &state.answer),
        ] {
            if !value.is_empty() {
                field.set_value(value);
            }
        }
        if !state.needle.is_empty() {
            d.needle.set_value(&state.needle);
        }
        if let Some(h) = &state.haystack {
            d.haystack.set_value(h);
        }
        d.plain.set_checked(state.plain);
        for (select, value) in [(&d.mask_mode, &state.mask_mode), (&d.mask_scope, &state.mask_scope), (&d.palette, &state.palette)] {
            if !value.is_empty() {
                select.set_value(value);
            }
        }
        self.masked = state.masked_heads().unwrap_or_default();
        self.mask_origin = state.mask_origin.clone();
        self.selected_head = state.selected().unwrap_or_default();
        self.lesson = state.lesson.filter(|&i| i < lessons::STEPS.len());
        if let Some(lang) = Lang::parse(&state.lang) {
            self.lang = lang;
        }
    }

    /// At start: the experiment of a shared link (`#state=...`), else the inputs of the last session.
    fn restore(&mut self, backend_in_address: bool) {
        let Ok(window) = dom::window() else { return };
        let hash = window.location().hash().unwrap_or_default();
        if let Some(text) = hash.strip_prefix('#').and_then(|h| h.strip_prefix(LINK_KEY)) {
            match PageState::from_link_text(text) {
                Ok(state) => {
                    self.apply(&state, backend_in_address);
                    self.status = Rc::new(|l| msg::LINK_OPENED.get(l).into());
                }
                Err(e) => {
                    let m = self.say(msg::LINK_UNREADABLE, &[("error", &e)]);
                    self.error(&m)
                }
            }
            return;
        }
        let stored = window.local_storage().ok().flatten().and_then(|s| s.get_item(STORAGE_KEY).ok().flatten());
        if let Some(json) = stored {
            match PageState::from_json(&json) {
                Ok(state) => self.apply(&state, backend_in_address),
                // A state this page cannot read is dropped, not shown: the user did nothing wrong.
                Err(e) => web_sys::console::warn_1(&format!("the remembered inputs were not restored: {e}").into()),
            }
        }
    }

    /// Remembers the inputs in the browser when they changed (not after "Start over").
    fn store(&mut self) {
        let Some(last) = &self.stored else { return };
        let mut state = self.page_state();
        if state.haystack.as_ref().is_some_and(|h| h.chars().count() > STORED_HAYSTACK_CHARS) {
            state.haystack = None;
        }
        let json = state.to_json();
        if &json == last {
            return;
        }
        let storage = dom::window().ok().and_then(|w| w.local_storage().ok().flatten());
        if let Some(s) = storage {
            if let Err(e) = s.set_item(STORAGE_KEY, &json) {
                web_sys::console::warn_1(&format!("the inputs could not be remembered: {}", dom::js_error(&e)).into());
            }
        }
        self.stored = Some(json);
    }

    /// Puts the experiment's link in the address bar and, where the browser allows, on the clipboard.
    fn copy_link(&mut self) -> Res<()> {
        let (text, dropped) = self.page_state().to_link_text();
        let window = dom::window()?;
        let location = window.location();
        let link = format!(
            "{}{}{}#{LINK_KEY}{text}",
            location.origin().unwrap_or_default(),
            location.pathname().unwrap_or_default(),
            location.search().unwrap_or_default()
        );
        window.history().and_then(|h| h.replace_state_with_url(&JsValue::NULL, "", Some(&link))).map_err(|e| dom::js_error(&e))?;
        // The clipboard may be refused (no permission, no secure context): the address bar has the link.
        let _ = window.navigator().clipboard().write_text(&link);
        self.status = Rc::new(move |l| {
            if dropped {
                msg::LINK_COPIED_NO_HAYSTACK.fill(l, &[("chars", &LINK_HAYSTACK_CHARS)])
            } else {
                msg::LINK_COPIED.get(l).into()
            }
        });
        Ok(())
    }

    /// Shows an error in the banner (and keeps it for automated checks).
    /// A message of the table in the page's language.
    pub(crate) fn say(&self, m: Text, args: &[(&str, &dyn std::fmt::Display)]) -> String {
        m.fill(self.lang, args)
    }

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
        self.send(&Request::LoadModel { source: source.clone(), backend: self.backend, kernel_set: self.kernel_set.clone() }, &buffers);
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
        let max_new_tokens = parse_number(&d.max_new.value(), msg::FIELD_NEW_TOKENS, self.lang)? as usize;
        Ok(TestSetup { needles, haystack: d.haystack.value(), max_new_tokens, plain: d.plain.checked() })
    }

    /// The recall a test needs to count in the head scores (the form's, or the default 0.5).
    pub(crate) fn gate(&self) -> f64 {
        self.dom.gate.value().trim().parse::<f64>().ok().filter(|g| (0.0..=1.0).contains(g)).unwrap_or(0.5)
    }

    fn mask_request(&self) -> Res<MaskRequest> {
        if self.masked.is_empty() {
            return Err(self.say(msg::NO_HEADS_MASKED, &[]));
        }
        Ok(MaskRequest { heads: self.masked.clone(), mode: self.dom.mask_mode.value(), scope: self.dom.mask_scope.value() })
    }

    fn start_sweep(&mut self, mask: Option<MaskRequest>) -> Res<()> {
        if self.model.is_none() {
            return Err(self.say(msg::NO_MODEL_YET, &[]));
        }
        let setup = self.setup()?;
        let depths = parse_number(&self.dom.depths.value(), msg::FIELD_DEPTHS, self.lang)? as usize;
        let lengths = self.dom.lengths.value();
        // Checked here too, so that a typo is answered at once and the shown run stays.
        headscope_core::sweep::parse_lengths(&lengths).map_err(|e| e.to_string())?;
        headscope_core::sweep::depths(depths).map_err(|e| e.to_string())?;
        // The official count costs nothing; soft and qr cost passes, so they are asked for.
        let mut scores = vec![ScoreKind::Official];
        if self.dom.measure_every.checked() {
            scores.extend([ScoreKind::Soft, ScoreKind::Qr]);
        }
        self.send(&Request::Sweep { setup: setup.clone(), lengths, depths, mask: mask.clone(), scores }, &[]);
        let origin = match &mask {
            None => String::new(),
            Some(_) if self.mask_origin.is_empty() => BY_HAND_ORIGIN.to_string(),
            Some(_) => self.mask_origin.clone(),
        };
        let mut run = SweepView {
            name: String::new(),
            origin,
            setup,
            lengths: vec![],
            depths: vec![],
            total: 0,
            haystack_tokens: 0,
            mask,
            results: vec![],
            started: crate::clock::now(),
            done: None,
        };
        // The saved file names the run in English; the page labels it in its language when it draws.
        run.name = views::run_label(Lang::En, self.runs.len(), &run);
        self.runs.push(run);
        self.shown_run = self.runs.len() - 1;
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
        if let Some(s) = self.sweep() {
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
        let model = self.model.as_ref().ok_or_else(|| self.say(msg::LOAD_MODEL_FIRST, &[]))?;
        HeadShape::new(model.layers, model.heads).check(&[head]).map_err(|e| self.say(msg::OTHER_MODELS_SCORES, &[("error", &e)]))?;
        if self.busy == Busy::Sweep {
            return Err(self.say(msg::BUSY_FOR_HEAD_VIEW, &[]));
        }
        if self.busy != Busy::Idle {
            self.head_view_queued = true;
            return Ok(());
        }
        self.head_view_queued = false;
        let (setup, at, mask) = self.current_test()?;
        self.send(&Request::HeadView { setup, at, head, mask }, &[]);
        self.busy = Busy::Test;
        self.watching = Some(head);
        Ok(())
    }

    fn start_rerun(&mut self) -> Res<()> {
        let mask = self.mask_request()?;
        if self.model.is_none() {
            return Err(self.say(msg::NO_MODEL_YET, &[]));
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
                let (scores, _) = self.shown_scores().ok_or_else(|| self.say(msg::NO_SCORES_TO_EXPORT, &[]))?;
                // Named as `headscope detect --score` names each kind's file.
                let name = if self.shown == Source::Imported { ScoreKind::Eq1.file_name() } else { self.score_kind.file_name() };
                dom::download_bytes(&name, "application/json", views::head_scores_json(&scores).as_bytes())
            }
            Export::Tests => {
                let records = self.records().filter(|r| !r.is_empty()).ok_or_else(|| self.say(msg::NO_TESTS_TO_EXPORT, &[]))?;
                dom::download_bytes("tests.jsonl", "application/x-ndjson", views::tests_jsonl(&records).as_bytes())
            }
            Export::NiahPng => render::export_png(&self.dom.niah_canvas, "niah.png"),
            Export::HeadsPng => render::export_png(&self.dom.heads_canvas, "heads.png"),
            Export::ActivationPng => render::export_png(&self.dom.activation_canvas, "activation.png"),
        }
    }

    /// The run the charts show.
    pub(crate) fn sweep(&self) -> Option<&SweepView> {
        self.runs.get(self.shown_run)
    }

    /// The run shown beside the shown one, if one is chosen (and it is another).
    pub(crate) fn compared(&self) -> Option<(usize, &SweepView)> {
        let i = self.compare_run.filter(|&i| i != self.shown_run)?;
        Some((i, self.runs.get(i)?))
    }

    /// The sweep's test records so far.
    pub(crate) fn records(&self) -> Option<Vec<headscope_core::files::TestRecord>> {
        self.sweep().map(SweepView::records)
    }

    /// The head scores of `run` for the loaded model, at the page's gate.
    pub(crate) fn run_scores(&self, run: &SweepView) -> Option<HeadScores> {
        let model = self.model.as_ref()?;
        views::sweep_scores(HeadShape::new(model.layers, model.heads), &run.records(), self.gate()).ok()
    }

    /// After an unmasked run: K of the masking plans becomes its number of retrieval heads, the size of
    /// the set whose masking the paper compares with as many random heads.
    fn default_mask_k(&self) {
        let Some(run) = self.runs.last().filter(|r| r.mask.is_none()) else { return };
        let Some(scores) = self.run_scores(run) else { return };
        let heads = scores.retrieval_heads(headscope_core::RETRIEVAL_THRESHOLD).len();
        if heads > 0 {
            self.dom.mask_k.set_value(&heads.to_string());
            self.dom.mask_random_k.set_value(&heads.to_string());
        }
    }

    /// The scores the heatmaps show and their title.
    pub(crate) fn shown_scores(&self) -> Option<(HeadScores, String)> {
        match self.shown {
            Source::Imported => self.imported.as_ref().map(|(n, s)| (s.clone(), self.say(msg::IMPORTED, &[("name", n)]))),
            Source::Sweep => {
                let model = self.model.as_ref()?;
                let scores = self.kind_scores(self.sweep(), self.score_kind).ok()?;
                let title = match (self.score_kind, self.sweep()) {
                    (k, _) if !k.from_records() => self.say(msg::DATA_FREE_TITLE, &[("model", &model.name), ("kind", &k.name())]),
                    (k, Some(run)) => {
                        let label = views::run_label(self.lang, self.shown_run, run);
                        let title = self.say(msg::SCORES_TITLE, &[("model", &model.name), ("run", &label)]);
                        if k == ScoreKind::Eq1 {
                            title
                        } else {
                            self.say(msg::SCORES_KIND_TITLE, &[("title", &title), ("kind", &k.name())])
                        }
                    }
                    (_, None) => return None,
                };
                Some((scores, title))
            }
        }
    }

    /// The scores of `kind` for the loaded model: from `run`'s records, or (data-free kinds) from the
    /// worker's pass over repeated tokens; else why there are none, for the page to say.
    pub(crate) fn kind_scores(&self, run: Option<&SweepView>, kind: ScoreKind) -> Res<HeadScores> {
        let model = self.model.as_ref().ok_or_else(|| self.say(msg::LOAD_MODEL_FIRST, &[]))?;
        let shape = HeadShape::new(model.layers, model.heads);
        if !kind.from_records() {
            let d = self.data_free.as_ref().filter(|d| self.loaded_hash.as_ref() == Some(&d.hash));
            let d = d.ok_or_else(|| self.say(msg::DATA_FREE_PENDING, &[("kind", &kind.name())]))?;
            let values = if kind == ScoreKind::Induction { &d.induction } else { &d.echo };
            return HeadScores::from_lists(shape, values.iter().map(|&v| vec![v]).collect()).map_err(|e| e.to_string());
        }
        let run = run.ok_or_else(|| self.say(msg::NO_SCORES_TO_EXPORT, &[]))?;
        headscope_core::files::head_scores_of_kind(shape, &run.records(), self.gate(), kind)
            .map_err(|_| self.say(msg::SCORE_NOT_MEASURED, &[("kind", &kind.name())]))
    }

    /// Asks the worker for the data-free scores when they are shown and missing.
    fn request_data_free(&mut self) {
        if self.score_kind.from_records() || self.busy != Busy::Idle || self.model.is_none() {
            return;
        }
        if self.data_free.as_ref().is_some_and(|d| self.loaded_hash.as_ref() == Some(&d.hash)) {
            return;
        }
        self.send(&Request::RepeatedScores, &[]);
        self.busy = Busy::Test;
        self.status = Rc::new(|l| msg::REPEATED_RUNNING.get(l).into());
    }

    /// The slider's sink and window.
    fn kv_settings(&self) -> Res<(usize, usize)> {
        let sink = parse_number(&self.dom.kv_sink.value(), msg::FIELD_KV_SINK, self.lang)? as usize;
        let window = parse_number(&self.dom.kv_window.value(), msg::FIELD_KV_WINDOW, self.lang)?.max(1) as usize;
        Ok((sink, window))
    }

    /// Reruns the selected test with the whole KV cache and under the slider's plan: the KV heads of
    /// the top-K heads of the shown scores whole (K of the mask panel), as many random KV heads
    /// (the mask panel's seed), or none; the rest keep the sink and the window.
    fn start_kv_rerun(&mut self) -> Res<()> {
        if self.model.is_none() {
            return Err(self.say(msg::NO_MODEL_YET, &[]));
        }
        if self.busy != Busy::Idle {
            return Err(self.say(msg::WORKER_BUSY, &[]));
        }
        let (sink, window) = self.kv_settings()?;
        let policy = match self.dom.kv_policy.value().as_str() {
            "window" => KvPolicy::Window,
            other => {
                let k = parse_number(&self.dom.mask_k.value(), msg::FIELD_TOP_K, self.lang)?.max(1) as usize;
                let (scores, shape) = self.scores_for_masking(self.score_kind)?;
                let heads = views::mask_top(&scores, shape, k).map_err(|e| e.to_string())?;
                if other == "random" {
                    let seed = parse_number(&self.dom.mask_seed.value(), msg::FIELD_SEED, self.lang)?;
                    KvPolicy::Random { like: heads, seed }
                } else {
                    KvPolicy::Heads { heads }
                }
            }
        };
        let (setup, at, _) = self.current_test()?;
        self.send(&Request::KvRerun { setup, at, kv: KvRequest { policy, sink, window } }, &[]);
        self.busy = Busy::Test;
        self.kv = KvView::Running { sink, window };
        self.status = Rc::new(|l| msg::KV_RUNNING.get(l).into());
        Ok(())
    }

    /// Starts the chain-of-thought demo on `tasks`: no mask, the top-K heads of the shown scores and K
    /// random heads outside eq. 1's retrieval heads (as `headscope cot` draws them), with the mask
    /// panel's mode and scope.
    fn start_cot(&mut self, tasks: Vec<CotTask>) -> Res<()> {
        if self.model.is_none() {
            return Err(self.say(msg::NO_MODEL_YET, &[]));
        }
        if self.busy != Busy::Idle {
            return Err(self.say(msg::WORKER_BUSY, &[]));
        }
        let k = parse_number(&self.dom.cot_k.value(), msg::FIELD_TOP_K, self.lang)?.max(1) as usize;
        let seed = parse_number(&self.dom.cot_seed.value(), msg::FIELD_SEED, self.lang)?;
        let max_step = parse_number(&self.dom.cot_max.value(), msg::FIELD_NEW_TOKENS, self.lang)?.max(1) as usize;
        let (top_scores, shape) = self.scores_for_masking(self.score_kind)?;
        let top = views::mask_top(&top_scores, shape, k).map_err(|e| e.to_string())?;
        let (eq1, _) = self.scores_for_masking(ScoreKind::Eq1)?;
        let random = views::mask_random(&eq1, shape, k, seed).map_err(|e| e.to_string())?;
        let (mode, scope) = (self.dom.mask_mode.value(), self.dom.mask_scope.value());
        let request = |heads: &Vec<HeadId>| MaskRequest { heads: heads.clone(), mode: mode.clone(), scope: scope.clone() };
        let masks = vec![("none".to_string(), vec![]), (format!("top-{k}"), top), (format!("random-{k}-s{seed}"), random)];
        let wire: Vec<CotMask> =
            masks.iter().map(|(name, heads)| CotMask { name: name.clone(), mask: (!heads.is_empty()).then(|| request(heads)) }).collect();
        self.send(
            &Request::Cot {
                tasks: tasks.clone(),
                masks: wire,
                plain: self.dom.plain.checked(),
                max_new_direct: COT_DIRECT_TOKENS,
                max_new_step: max_step,
            },
            &[],
        );
        self.cot = Some(CotRun { tasks, masks, total: 0, answers: vec![], done: None });
        self.busy = Busy::Cot;
        self.status = Rc::new(|l| msg::COT_RUNNING.get(l).into());
        Ok(())
    }

    /// The scores masking plans rank heads by: the imported file while it is shown, else the last run
    /// without a mask (a masked run's scores are not the model's: its masked heads cannot hit).
    fn scores_for_masking(&self, kind: ScoreKind) -> Res<(HeadScores, HeadShape)> {
        let model = self.model.as_ref().ok_or_else(|| self.say(msg::LOAD_MODEL_FIRST, &[]))?;
        let scores = match self.shown {
            Source::Imported => self.shown_scores().map(|(s, _)| s),
            Source::Sweep if kind == ScoreKind::Eq1 => self.runs.iter().rev().find(|r| r.mask.is_none()).and_then(|r| self.run_scores(r)),
            Source::Sweep => Some(self.kind_scores(self.runs.iter().rev().find(|r| r.mask.is_none()), kind)?),
        };
        let scores = scores.ok_or_else(|| self.say(msg::NO_SCORES_TO_RANK, &[]))?;
        if scores.tests() == 0 {
            return Err(self.say(msg::NOTHING_SCORED, &[]));
        }
        Ok((scores, HeadShape::new(model.layers, model.heads)))
    }
}

/// Reads the files of a model folder the user chose: only the files a model needs are read; a
/// pickle checkpoint is passed by name (empty) so the worker can say why it refuses it without
/// reading gigabytes.
async fn read_model_files(files: Files, lang: Lang) -> Res<Msg> {
    if files.is_empty() {
        return Err(msg::NO_FILES_CHOSEN.get(lang).into());
    }
    let depth = |p: &str| p.split('/').count();
    let top = files.iter().map(|(p, _)| depth(p)).min().unwrap_or(1);
    let folder = files[0].0.split('/').next().filter(|_| top > 1).unwrap_or(msg::CHOSEN_FILES.get(lang)).to_string();
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
