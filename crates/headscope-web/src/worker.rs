//! The Web Worker that runs the model, so the page stays responsive while tests run.
//!
//! Where this sits in the data flow: the page posts a [`Request`] -> this worker fetches or receives
//! the model's bytes, loads them on WebGPU (headscope-gpu) or the CPU (candle), and runs the
//! [`lab`](crate::lab) functions -> it posts [`Event`]s back as each test ends. One request runs at a
//! time; `Cancel` is honoured between decode steps (WebGPU awaits every step, so the worker sees the
//! message at once) or between tests (the CPU path computes without yielding).

use crate::lab::{self, LabError, LabModel};
use crate::protocol::{
    BackendChoice, CotMask, ErrorContext, Event, Fallback, MaskRequest, ModelSource, Request, Status, TestAt, TestSetup,
};
use crate::strings::msg;
use headscope_core::cot::CotTask;
use headscope_core::ScoreKind;
use headscope_engine::{Engine, SweepRunner};
use headscope_model::{HeadMask, ModelFiles, Probe};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::DedicatedWorkerGlobalScope;

/// Where the bundled lab model is served, relative to the worker's script.
pub const BUNDLED_MODEL_URL: &str = "models/lab";

/// The Cache API store that keeps models fetched from URLs.
const CACHE_NAME: &str = "headscope-models-v1";

/// The worker's state between messages.
#[derive(Default)]
struct State {
    /// The loaded model; taken out while a request runs on it.
    model: RefCell<Option<LabModel>>,
    /// The GPU, opened once.
    gpu: RefCell<Option<Rc<headscope_gpu::GpuContext>>>,
    /// A request is running.
    busy: Cell<bool>,
    /// The page asked to stop.
    cancel: Cell<bool>,
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Posts an event to the page.
fn post(event: &Event) {
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    match serde::Serialize::serialize(event, &serializer) {
        Ok(v) => {
            if let Err(e) = scope().post_message(&v) {
                web_sys::console::error_2(&"headscope worker: postMessage failed".into(), &e);
            }
        }
        Err(e) => web_sys::console::error_1(&format!("headscope worker: cannot encode an event: {e}").into()),
    }
}

fn post_error(context: ErrorContext, e: impl std::fmt::Display) {
    post(&Event::Error { context, message: e.to_string() });
}

/// Starts the worker: installs the panic reporter and the message handler, and says it is ready.
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        let message = info.to_string();
        web_sys::console::error_1(&format!("headscope worker panicked: {message}").into());
        post(&Event::Crashed { message });
    }));
    let state = Rc::new(State::default());
    let handler = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |e: web_sys::MessageEvent| on_message(&state, e));
    scope().set_onmessage(Some(handler.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    handler.forget();
    let webgpu = js_sys::Reflect::get(&scope().navigator(), &"gpu".into()).map(|g| !g.is_undefined() && !g.is_null()).unwrap_or(false);
    post(&Event::Ready { webgpu });
}

fn on_message(state: &Rc<State>, e: web_sys::MessageEvent) {
    let data = e.data();
    let request: Request = match js_sys::Reflect::get(&data, &"request".into())
        .map_err(|_| "no request".to_string())
        .and_then(|r| serde_wasm_bindgen::from_value(r).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => return post_error(ErrorContext::ReadingMessage, e),
    };
    if request == Request::Cancel {
        state.cancel.set(true);
        return;
    }
    if state.busy.get() {
        return post_error(ErrorContext::Starting, msg::WORKER_BUSY.en);
    }
    let buffers: Vec<js_sys::ArrayBuffer> = js_sys::Reflect::get(&data, &"buffers".into())
        .ok()
        .filter(|b| b.is_array())
        .map(|b| js_sys::Array::from(&b).iter().filter_map(|x| x.dyn_into().ok()).collect())
        .unwrap_or_default();
    state.busy.set(true);
    state.cancel.set(false);
    let state = state.clone();
    wasm_bindgen_futures::spawn_local(async move {
        handle(&state, request, buffers).await;
        state.busy.set(false);
    });
}

async fn handle(state: &Rc<State>, request: Request, buffers: Vec<js_sys::ArrayBuffer>) {
    match request {
        Request::LoadModel { source, backend, kernel_set } => {
            if let Err(e) = load(state, source, backend, kernel_set.as_deref(), buffers).await {
                post_error(ErrorContext::Loading, e);
            }
        }
        Request::Sweep { setup, lengths, depths, mask, scores } => {
            let Some(mut model) = state.model.borrow_mut().take() else {
                return post_error(ErrorContext::Sweep, msg::NO_MODEL_YET.en);
            };
            let result = sweep(state, &mut model, &setup, &lengths, depths, mask.as_ref(), &scores).await;
            let _ = model.engine.set_mask(None);
            *state.model.borrow_mut() = Some(model);
            if let Err(e) = result {
                post_error(ErrorContext::Sweep, e);
            }
        }
        Request::Rerun { setup, at, mask } => {
            let Some(mut model) = state.model.borrow_mut().take() else {
                return post_error(ErrorContext::Rerun, msg::NO_MODEL_YET.en);
            };
            let result = rerun(state, &mut model, &setup, at, &mask).await;
            let _ = model.engine.set_mask(None);
            *state.model.borrow_mut() = Some(model);
            match result {
                Ok(e) => post(&e),
                Err(e) => post_error(ErrorContext::Rerun, e),
            }
        }
        Request::HeadView { setup, at, head, mask } => {
            let Some(mut model) = state.model.borrow_mut().take() else {
                return post_error(ErrorContext::HeadView(head), msg::NO_MODEL_YET.en);
            };
            let cancel = state.clone();
            let result = async {
                let mask = mask.as_ref().map(|m| model.head_mask(m)).transpose()?;
                lab::head_view(&mut model, &setup, at, head, mask, &|| cancel.cancel.get()).await
            }
            .await;
            let _ = model.engine.set_mask(None);
            *state.model.borrow_mut() = Some(model);
            match result {
                Ok(v) => post(&Event::HeadView(Box::new(v))),
                Err(e) => post_error(ErrorContext::HeadView(head), e),
            }
        }
        Request::KvRerun { setup, at, kv } => {
            let Some(mut model) = state.model.borrow_mut().take() else {
                return post_error(ErrorContext::KvRerun, msg::NO_MODEL_YET.en);
            };
            let result = lab::kv_rerun(&mut model, &setup, at, &kv, &|| state.cancel.get()).await;
            *state.model.borrow_mut() = Some(model);
            match result {
                Ok(r) => post(&Event::KvRerunDone {
                    before: Box::new(r.before),
                    after: Box::new(r.after),
                    full_kv_heads: r.full_kv_heads,
                    kv_heads: r.kv_heads,
                    positions: r.positions,
                    full_bytes: r.full_bytes,
                    plan_bytes: r.plan_bytes,
                }),
                Err(e) => post_error(ErrorContext::KvRerun, e),
            }
        }
        Request::RepeatedScores => {
            let Some(mut model) = state.model.borrow_mut().take() else {
                return post_error(ErrorContext::RepeatedScores, msg::NO_MODEL_YET.en);
            };
            let result = lab::repeated_scores(&mut model).await;
            *state.model.borrow_mut() = Some(model);
            match result {
                Ok((induction, echo, period)) => post(&Event::RepeatedScores { induction, echo, period }),
                Err(e) => post_error(ErrorContext::RepeatedScores, e),
            }
        }
        Request::Cot { tasks, masks, plain, max_new_direct, max_new_step } => {
            let Some(mut model) = state.model.borrow_mut().take() else {
                return post_error(ErrorContext::Cot, msg::NO_MODEL_YET.en);
            };
            let result = cot(state, &mut model, &tasks, &masks, plain, max_new_direct, max_new_step).await;
            let _ = model.engine.set_mask(None);
            *state.model.borrow_mut() = Some(model);
            if let Err(e) = result {
                post_error(ErrorContext::Cot, e);
            }
        }
        Request::Cancel => {}
    }
}

/// The chain-of-thought demo: each prompt (task and mode) under every mask in turn, so that the
/// decode-scope masks share its prefill; each answer is posted as it ends.
async fn cot(
    state: &Rc<State>,
    model: &mut LabModel,
    tasks: &[CotTask],
    masks: &[CotMask],
    plain: bool,
    max_new_direct: usize,
    max_new_step: usize,
) -> Result<(), LabError> {
    let prompts = lab::cot_prompts(model, tasks, plain, max_new_direct, max_new_step)?;
    let masks: Vec<(String, Option<HeadMask>)> = masks
        .iter()
        .map(|m| Ok((m.name.clone(), m.mask.as_ref().map(|r| model.head_mask(r)).transpose()?)))
        .collect::<Result<_, LabError>>()?;
    post(&Event::CotStarted { total: prompts.len() * masks.len() });
    let longest = prompts.iter().map(|p| p.ids.len() + p.max_new_tokens).max().unwrap_or(0);
    model.engine.reserve(longest).await?;
    let mut cancelled = false;
    'prompts: for prompt in &prompts {
        for (name, mask) in &masks {
            yield_now().await;
            let answer = lab::cot_answer(model, &tasks[prompt.task], prompt, mask.clone(), &|| state.cancel.get()).await?;
            match answer {
                Some(record) if !state.cancel.get() => post(&Event::CotAnswer { mask: name.clone(), record }),
                _ => {
                    cancelled = true;
                    break 'prompts;
                }
            }
        }
    }
    post(&Event::CotDone { cancelled });
    Ok(())
}

/// Fetches or takes the model's files and loads them on the chosen backend.
async fn load(
    state: &Rc<State>,
    source: ModelSource,
    backend: BackendChoice,
    kernel_set: Option<&str>,
    buffers: Vec<js_sys::ArrayBuffer>,
) -> Result<(), LabError> {
    let started = crate::clock::now();
    // The old model goes first: two models may not fit in memory together.
    state.model.borrow_mut().take();
    let files = match source {
        ModelSource::Bundled => {
            post(&Event::Status(Status::FetchingBundled));
            fetch_model(BUNDLED_MODEL_URL, "lab model (bundled)", false).await?
        }
        ModelSource::Url { url } => fetch_model(&url, &url, true).await?,
        ModelSource::Files { name, names } => {
            if names.len() != buffers.len() {
                return Err(LabError::Invalid(format!("{} file names but {} file contents arrived", names.len(), buffers.len())));
            }
            let files = names.into_iter().zip(buffers).map(|(n, b)| (n, js_sys::Uint8Array::new(&b).to_vec())).collect();
            ModelFiles::from_named(&name, files)?
        }
    };
    post(&Event::Status(Status::Loading { name: files.name.clone(), megabytes: weight_bytes(&files) >> 20 }));
    let model = match backend {
        BackendChoice::Cpu => LabModel::load_cpu(&files)?,
        BackendChoice::Gpu => load_gpu(state, &files, kernel_set).await?,
        BackendChoice::Auto => {
            // A software adapter (SwiftShader, a browser's fallback) emulates the GPU on the CPU, where
            // candle's CPU path is faster: auto takes WebGPU only on real hardware.
            let gpu = match gpu_context(state).await {
                Ok(ctx) if ctx.adapter().is_software() => Err(Fallback::Software { adapter: ctx.adapter().name.clone() }),
                Ok(_) => load_gpu(state, &files, kernel_set).await.map_err(|e| Fallback::Unavailable { error: e.to_string() }),
                Err(e) => Err(Fallback::Unavailable { error: e.to_string() }),
            };
            match gpu {
                Ok(m) => m,
                Err(reason) => {
                    post(&Event::Status(Status::CpuFallback(reason.clone())));
                    let mut m = LabModel::load_cpu(&files)?;
                    m.fallback_reason = Some(reason);
                    m
                }
            }
        }
    };
    post(&Event::ModelLoaded(model.summary(crate::clock::now() - started)));
    *state.model.borrow_mut() = Some(model);
    Ok(())
}

fn weight_bytes(files: &ModelFiles) -> usize {
    files.safetensors.iter().map(|(_, b)| b.len()).sum()
}

/// The GPU, opened on first use and kept for later loads.
async fn gpu_context(state: &Rc<State>) -> Result<Rc<headscope_gpu::GpuContext>, LabError> {
    let webgpu = js_sys::Reflect::get(&scope().navigator(), &"gpu".into()).map(|g| !g.is_undefined()).unwrap_or(false);
    if !webgpu {
        return Err(LabError::Gpu("this browser does not offer WebGPU to workers (navigator.gpu is missing)".into()));
    }
    let existing = state.gpu.borrow().clone();
    match existing {
        Some(c) => Ok(c),
        None => {
            let c = Rc::new(headscope_gpu::GpuContext::new().await.map_err(|e| LabError::Gpu(e.to_string()))?);
            *state.gpu.borrow_mut() = Some(c.clone());
            Ok(c)
        }
    }
}

/// Loads `files` on WebGPU, with the kernel set asked for (else the adapter's choice).
async fn load_gpu(state: &Rc<State>, files: &ModelFiles, kernel_set: Option<&str>) -> Result<LabModel, LabError> {
    let ctx = gpu_context(state).await?;
    let ctx = match kernel_set {
        None => ctx,
        Some("serial") => Rc::new((*ctx).clone().with_kernel_set(headscope_gpu::KernelSet::Serial)),
        Some("parallel") => Rc::new((*ctx).clone().with_kernel_set(headscope_gpu::KernelSet::Parallel)),
        Some(other) => return Err(LabError::Invalid(format!("kernel set `{other}`: expected serial or parallel"))),
    };
    LabModel::load_gpu(&ctx, files).await
}

/// Fetches a model directory's files from `base` (`{base}/config.json`, ...). With `cache`, each file is
/// kept in the Cache API, so an unchanged file is downloaded once (see [`fetch_file`]).
async fn fetch_model(base: &str, name: &str, cache: bool) -> Result<ModelFiles, LabError> {
    let base = lab::model_base_url(base)?;
    let store = if cache { open_cache().await } else { None };
    let mut files = Vec::new();
    for (file, required) in
        [("config.json", true), ("tokenizer.json", true), ("tokenizer_config.json", false), ("generation_config.json", false)]
    {
        if let Some(bytes) = fetch_file(&base, file, required, store.as_ref()).await? {
            files.push((file.to_string(), bytes));
        }
    }
    let shards = match fetch_file(&base, "model.safetensors.index.json", false, store.as_ref()).await? {
        Some(index) => lab::shard_names(&index)?,
        None => vec!["model.safetensors".to_string()],
    };
    for (i, shard) in shards.iter().enumerate() {
        post(&Event::Status(Status::FetchingShard { shard: shard.clone(), index: i, count: shards.len() }));
        if let Some(bytes) = fetch_file(&base, shard, true, store.as_ref()).await? {
            files.push((shard.clone(), bytes));
        }
    }
    Ok(ModelFiles::from_named(name, files)?)
}

async fn open_cache() -> Option<web_sys::Cache> {
    let caches = scope().caches().ok()?;
    JsFuture::from(caches.open(CACHE_NAME)).await.ok()?.dyn_into().ok()
}

/// One file of a model directory: `None` when it is optional and absent (404).
///
/// A copy kept in the Cache API is checked against the server before it is used: a `HEAD` request (a
/// round trip, no body) gives the file's `ETag`, `Last-Modified` and `Content-Length`, and the file is
/// downloaded again when any of them differs from the copy's, so a model updated at the same URL is not
/// kept stale. `HEAD` is a simple cross-origin request (no preflight), unlike a conditional `GET`. The
/// copy is used as it is when the server is unreachable (offline) or shows none of those headers.
///
/// An optional file that the server says it does not have (404, or its web page instead) is dropped
/// from the cache too, so that a file deleted from the model folder does not stay kept forever.
async fn fetch_file(base: &str, file: &str, required: bool, cache: Option<&web_sys::Cache>) -> Result<Option<Vec<u8>>, LabError> {
    let url = format!("{base}/{file}");
    let absent = || async {
        if let Some(c) = cache {
            // Failing to drop it costs only the space it takes: a later load checks it again.
            let _ = JsFuture::from(c.delete_with_str(&url)).await;
        }
        Ok(None)
    };
    let failed = |why: String| LabError::Invalid(format!("fetching {url}: {why}"));
    // An Error's message ("Failed to fetch"): JSON of an Error object is "{}".
    let js_err = |e: JsValue| crate::dom::js_error(&e);
    let body = |resp: web_sys::Response| async move {
        let buf = JsFuture::from(resp.array_buffer().map_err(|e| failed(js_err(e)))?).await.map_err(|e| failed(js_err(e)))?;
        Ok::<_, LabError>(Some(js_sys::Uint8Array::new(&buf).to_vec()))
    };
    let copy = match cache {
        Some(c) => JsFuture::from(c.match_with_str(&url)).await.ok().and_then(|hit| hit.dyn_into::<web_sys::Response>().ok()),
        None => None,
    };
    if let Some(copy) = copy {
        if copy_is_current(&url, &copy).await {
            return body(copy).await;
        }
    }
    let resp: web_sys::Response = match JsFuture::from(scope().fetch_with_str(&url)).await {
        Ok(resp) => resp.unchecked_into(),
        // A host that allows other origins may still send its 404s without the header that allows
        // them, which the browser reports as a network error: for an optional file, that means absent.
        // The kept copy, if any, stays: a network error does not say the file is gone.
        Err(_) if !required => return Ok(None),
        Err(e) => return Err(failed(format!("{} (is the URL right, and does the server allow cross-origin requests?)", js_err(e)))),
    };
    if resp.status() == 404 && !required {
        return absent().await;
    }
    if !resp.ok() {
        return Err(failed(format!("HTTP {} {}", resp.status(), resp.status_text())));
    }
    // Static hosts that answer every unknown path with the page itself (single-page-app fallback)
    // send HTML where a model file is missing.
    let html = resp.headers().get("content-type").ok().flatten().is_some_and(|t| t.starts_with("text/html"));
    if html {
        if !required {
            return absent().await;
        }
        return Err(failed("the server answered with a web page, not the file: is the URL a model folder?".into()));
    }
    if let Some(c) = cache {
        if let Ok(copy) = resp.clone() {
            // A failed store (quota) only costs a download next time.
            let _ = JsFuture::from(c.put_with_str(&url, &copy)).await;
        }
    }
    body(resp).await
}

/// Whether the server still has the file kept in `copy` (see [`fetch_file`]): true unless a `HEAD`
/// request answers with an `ETag`, `Last-Modified` or `Content-Length` that differs from the copy's.
async fn copy_is_current(url: &str, copy: &web_sys::Response) -> bool {
    const VALIDATORS: [&str; 3] = ["etag", "last-modified", "content-length"];
    let init = web_sys::RequestInit::new();
    init.set_method("HEAD");
    let Ok(head) = JsFuture::from(scope().fetch_with_str_and_init(url, &init)).await else {
        return true; // offline: the copy is the last version there was
    };
    let head: web_sys::Response = head.unchecked_into();
    if !head.ok() {
        // Gone (404) or failing: let the download report it.
        return false;
    }
    let value = |r: &web_sys::Response, name: &str| r.headers().get(name).ok().flatten();
    let compared: Vec<bool> = VALIDATORS
        .iter()
        .filter_map(|name| match (value(copy, name), value(&head, name)) {
            (Some(kept), Some(now)) => Some(kept == now),
            _ => None,
        })
        .collect();
    compared.iter().all(|same| *same)
}

/// Lets the event loop run (so a `Cancel` message can arrive) before the next test.
async fn yield_now() {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        let _ = scope().set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, 0);
    });
    let _ = JsFuture::from(promise).await;
}

/// Runs a sweep on the engine's one sweep runner (deepest needle first, each prefill reusing the cache
/// of the prompt before it), posting each test as it ends; a `Cancel` message stops it between tokens.
async fn sweep(
    state: &Rc<State>,
    model: &mut LabModel,
    setup: &TestSetup,
    lengths: &str,
    depths: usize,
    mask: Option<&MaskRequest>,
    scores: &[ScoreKind],
) -> Result<(), LabError> {
    let plan = lab::plan_sweep(model, setup, lengths, depths)?;
    let mask: Option<HeadMask> = mask.map(|m| model.head_mask(m)).transpose()?;
    let masked = mask.as_ref().map(|m| m.heads.clone()).unwrap_or_default();
    let total = plan.keys.len();
    let (lengths, depths, haystack_tokens) = (plan.lengths.clone(), plan.depths.clone(), plan.haystack_tokens);
    post(&Event::SweepStarted { total, lengths, depths, masked, haystack_tokens });
    let tokenizer = model.tokenizer.clone();
    let (spec, shape, stop) = (model.spec.clone(), model.shape(), model.eos_token_ids.clone());
    let format = model.prompt_format(setup.plain);
    let mut runner =
        SweepRunner::new(&spec, &*tokenizer, format, lab::inputs(setup), &plan, vec![mask], &stop, Probe::default(), |_, _| true)?;
    // The same switches as `headscope detect --score`: each kind's records carry what it needs.
    if scores.contains(&ScoreKind::Official) {
        runner = runner.counting_repeats();
    }
    if scores.iter().any(|k| k.needs_attention_mass()) {
        runner = runner.measuring_span_mass();
    }
    if scores.contains(&ScoreKind::Qr) {
        runner = runner.measuring_query_focus();
    }
    model.engine.reserve(runner.positions()).await?;
    let started = crate::clock::now();
    let (mut decode_tokens, mut decode_seconds, mut prefill_tokens, mut prefill_seconds) = (0, 0.0, 0, 0.0);
    let mut ran = 0;
    let mut cancelled = false;
    loop {
        yield_now().await;
        if state.cancel.get() {
            cancelled = true;
            break;
        }
        let Some(outcome) = runner.next(&mut model.engine, |_| !state.cancel.get()).await else { break };
        if state.cancel.get() {
            cancelled = true;
            break;
        }
        // The page names the failing test, as the CLI does.
        let out = outcome.map_err(|e| LabError::Invalid(e.to_string()))?;
        let r = lab::page_result(&tokenizer, shape, &out.test, &out.trace, out.reused, out.record)?;
        decode_tokens += r.decode_tokens;
        decode_seconds += r.decode_seconds;
        prefill_tokens += r.prefill_tokens;
        prefill_seconds += r.prefill_seconds;
        ran += 1;
        post(&Event::TestDone { index: out.index, total, result: Box::new(r) });
    }
    post(&Event::SweepDone {
        cancelled,
        tests: ran,
        seconds: crate::clock::now() - started,
        decode_tokens,
        decode_seconds,
        prefill_tokens,
        prefill_seconds,
    });
    Ok(())
}

/// Runs one test unmasked and masked.
async fn rerun(state: &Rc<State>, model: &mut LabModel, setup: &TestSetup, at: TestAt, mask: &MaskRequest) -> Result<Event, LabError> {
    let mask = model.head_mask(mask)?;
    let masked = mask.heads.clone();
    let cancelled = || state.cancel.get();
    let before = lab::run_test(model, setup, at, None, &Probe::default(), &cancelled).await?.result;
    let after = lab::run_test(model, setup, at, Some(mask), &Probe::default(), &cancelled).await?.result;
    Ok(Event::RerunDone { before: Box::new(before), after: Box::new(after), masked })
}
