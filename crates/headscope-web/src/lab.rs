//! The lab's work with no browser in it: load a model from bytes, prepare a sweep, run one NIAH test
//! on an [`Engine`] ([`Backend`]) and turn what the model reports into the page's results.
//!
//! Where this sits in the data flow: the page's inputs -> **core builds the tests** (`NiahBuilder`, as
//! `headscope detect` does) -> an [`Engine`] (candle on the CPU, or WebGPU) decodes them and reports
//! each query head's argmax -> **core scores them** (`retrieval_hits`, ROUGE-1 recall) into the same
//! [`TestRecord`] the CLI writes -> the page aggregates (`head_scores_from_records`) and draws. The
//! worker ([`crate::worker`]) only moves these results over `postMessage`, so everything here runs in
//! native tests too.

use crate::clock;
use crate::protocol::{
    AdapterInfo, AnswerToken, Fallback, HeadStep, HeadViewResult, MaskRequest, ModelSummary, TestAt, TestResult, TestSetup,
};
use headscope_core::cot::{CotMode, CotRecord, CotTask};
use headscope_core::files::TestRecord;
use headscope_core::niah::{NiahBuilder, NiahTest};
use headscope_core::prompt::PromptFormat;
use headscope_core::score::{retrieval_hits, DecodeStep, RepeatedTokens};
use headscope_core::sweep::TestKey;
use headscope_core::{CoreError, HeadId, HeadShape, TextTokenizer};
use headscope_engine::sweep::{check_fits, decode_prompt, score_test};
pub use headscope_engine::SweepPlan;
use headscope_engine::{DecodeTrace, Engine, EngineError, KvPlan, Step, SweepInputs};
use headscope_gpu::{GpuContext, GpuError, GpuModel};
use headscope_model::{
    HeadMask, HfTokenizer, LoadOptions, LoadedModel, MaskMode, MaskScope, ModelError, ModelFiles, ModelMeta, ModelSpec, Probe, Transformer,
};
use std::rc::Rc;

/// Everything that can stop a lab request, worded for the page.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Bad NIAH input (needle, haystack, lengths, ...).
    #[error("{0}")]
    Core(#[from] CoreError),
    /// The model could not be loaded or run.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// The WebGPU path failed.
    #[error("WebGPU: {0}")]
    Gpu(String),
    /// A request that makes no sense as given.
    #[error("{0}")]
    Invalid(String),
    /// The user cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// Result with [`LabError`].
pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Bytes of weights the CPU path accepts: wasm32 addresses 4 GiB, and the f32 copy of the weights,
/// the file bytes and the KV cache must fit in it together.
pub const CPU_WEIGHT_BYTES_LIMIT: usize = 1 << 30;

/// What runs the forward pass: candle on the CPU (native or WebAssembly), or WebGPU. Both are
/// [`Engine`]s; this is the one the page loaded.
pub enum Backend {
    /// The instrumented candle transformer, f32 on the CPU.
    Cpu(Box<Transformer>),
    /// The WGSL forward of headscope-gpu (f32 on the GPU).
    Gpu(Box<GpuModel>),
}

impl Backend {
    /// Whether this is the WebGPU path.
    pub fn is_gpu(&self) -> bool {
        matches!(self, Backend::Gpu(_))
    }
}

impl Engine for Backend {
    type Error = LabError;

    fn spec(&self) -> &ModelSpec {
        match self {
            Backend::Cpu(m) => m.spec(),
            Backend::Gpu(g) => g.spec(),
        }
    }

    fn position(&self) -> usize {
        match self {
            Backend::Cpu(m) => m.position(),
            Backend::Gpu(g) => g.position(),
        }
    }

    async fn reserve(&mut self, capacity: usize) -> Result<()> {
        match self {
            Backend::Cpu(m) => Ok(m.reserve(capacity)?),
            Backend::Gpu(g) => g.reserve(capacity).map_err(gpu_err),
        }
    }

    fn reset(&mut self) {
        match self {
            Backend::Cpu(m) => m.reset(),
            Backend::Gpu(g) => g.reset(),
        }
    }

    fn truncate(&mut self, position: usize) -> Result<()> {
        match self {
            Backend::Cpu(m) => Ok(m.truncate(position)?),
            Backend::Gpu(g) => g.truncate(position).map_err(gpu_err),
        }
    }

    fn set_mask(&mut self, mask: Option<HeadMask>) -> Result<()> {
        match self {
            Backend::Cpu(m) => Ok(m.set_mask(mask)?),
            Backend::Gpu(g) => g.set_mask(mask).map_err(gpu_err),
        }
    }

    async fn prefill(&mut self, ids: &[u32]) -> Result<()> {
        match self {
            Backend::Cpu(m) => Ok(m.prefill(ids)?),
            Backend::Gpu(g) => g.prefill(ids).await.map_err(gpu_err),
        }
    }

    fn reusable_prefix(&self, ids: &[u32]) -> usize {
        match self {
            Backend::Cpu(m) => m.reusable_prefix(ids),
            Backend::Gpu(g) => g.reusable_prefix(ids),
        }
    }

    async fn step(&mut self, id: u32, probe: &Probe) -> Result<Step> {
        match self {
            Backend::Cpu(m) => Ok(Engine::step(m.as_mut(), id, probe).await?),
            Backend::Gpu(g) => Engine::step(g.as_mut(), id, probe).await.map_err(gpu_err),
        }
    }

    /// The browser's `performance.now()` (std has no clock in wasm32).
    fn now(&self) -> f64 {
        clock::now()
    }
}

impl From<EngineError> for LabError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Input(e) => LabError::Core(e),
            e => LabError::Model(e.into()),
        }
    }
}

/// A GPU error for the page: limits and unsupported models keep their own words.
fn gpu_err(e: GpuError) -> LabError {
    match e {
        GpuError::Engine(e) => LabError::Model(e.into()),
        GpuError::TooLong(m) | GpuError::Invalid(m) => LabError::Invalid(m),
        other => LabError::Gpu(other.to_string()),
    }
}

/// A loaded model: its tokenizer and facts beside the engine that runs it.
pub struct LabModel {
    /// Name (folder or URL).
    pub name: String,
    /// Architecture.
    pub spec: ModelSpec,
    /// Tokenizer (shared, so test builders can borrow it while the engine runs).
    pub tokenizer: Rc<HfTokenizer>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
    /// Content hash.
    pub hash: String,
    /// The engine.
    pub engine: Backend,
    /// The backend in words.
    pub backend: String,
    /// Why WebGPU is not used, when it was wanted.
    pub fallback_reason: Option<Fallback>,
    /// The WebGPU adapter, on the GPU path.
    pub adapter: Option<AdapterInfo>,
}

impl LabModel {
    /// Loads `files` on the CPU engine (f32, as `headscope detect` computes on the CPU).
    pub fn load_cpu(files: &ModelFiles) -> Result<Self> {
        let weight_bytes: usize = files.safetensors.iter().map(|(_, b)| b.len()).sum();
        // f32 weights beside the file bytes: a checkpoint stored in 16 bits doubles.
        let f32_bytes = weight_bytes.saturating_mul(2);
        if f32_bytes > CPU_WEIGHT_BYTES_LIMIT {
            return Err(LabError::Invalid(format!(
                "{} is too large for the browser's CPU path: {} MB of weights need about {} MB as f32, more than the {} MB WebAssembly can hold; use WebGPU or a smaller model",
                files.name,
                weight_bytes >> 20,
                f32_bytes >> 20,
                CPU_WEIGHT_BYTES_LIMIT >> 20
            )));
        }
        let m = LoadedModel::from_files(files, &LoadOptions::default())?;
        Ok(LabModel {
            name: files.name.clone(),
            spec: m.spec,
            tokenizer: Rc::new(m.tokenizer),
            eos_token_ids: m.eos_token_ids,
            hash: m.hash,
            engine: Backend::Cpu(Box::new(m.model)),
            backend: "CPU (candle in WebAssembly)".into(),
            adapter: None,
            fallback_reason: None,
        })
    }

    /// Loads `files` on the GPU of `ctx` (weights converted to f32 there).
    pub async fn load_gpu(ctx: &GpuContext, files: &ModelFiles) -> Result<Self> {
        let ModelMeta { spec, tokenizer, eos_token_ids } = files.meta()?;
        let shards: Vec<&[u8]> = files.safetensors.iter().map(|(_, b)| b.as_slice()).collect();
        let model = GpuModel::load(ctx, &spec, &shards).await.map_err(gpu_err)?;
        Ok(LabModel {
            name: files.name.clone(),
            spec,
            tokenizer: Rc::new(tokenizer),
            eos_token_ids,
            hash: files.hash(),
            engine: Backend::Gpu(Box::new(model)),
            backend: format!("WebGPU on {}", ctx.adapter().plain()),
            adapter: Some(AdapterInfo { name: ctx.adapter().name.clone(), kind: ctx.adapter().device_type.clone() }),
            fallback_reason: None,
        })
    }

    /// The query-head grid.
    pub fn shape(&self) -> HeadShape {
        self.spec.head_shape()
    }

    /// The prompt format: the chat template unless the model has none or `plain` is asked for.
    pub fn prompt_format(&self, plain: bool) -> PromptFormat {
        match self.tokenizer.chat_template() {
            Some(t) if !plain => PromptFormat::Chat(t),
            _ => PromptFormat::Plain,
        }
    }

    /// What the page shows about the model.
    pub fn summary(&self, load_seconds: f64) -> ModelSummary {
        ModelSummary {
            name: self.name.clone(),
            model_type: self.spec.model_type.clone(),
            layers: self.spec.head_shape().layers,
            attention_layers: self.spec.hybrid_attention_layers(),
            heads: self.spec.heads,
            kv_heads: self.spec.kv_heads,
            max_positions: self.spec.max_position_embeddings,
            parameters: self.spec.parameter_count() as usize,
            hash: self.hash.clone(),
            chat_template: self.tokenizer.chat_template().is_some(),
            backend: self.backend.clone(),
            adapter: self.adapter.clone(),
            gpu: self.engine.is_gpu(),
            fallback_reason: self.fallback_reason.clone(),
            load_seconds,
        }
    }

    /// The model's mask for a page's mask request, checked against the head grid.
    pub fn head_mask(&self, m: &MaskRequest) -> Result<HeadMask> {
        let mode: MaskMode = m.mode.parse().map_err(LabError::Invalid)?;
        let scope: MaskScope = m.scope.parse().map_err(LabError::Invalid)?;
        if m.heads.is_empty() {
            return Err(LabError::Invalid(
                "no heads are selected for masking: click heads in the heatmap, or use mask top-K / random-K".into(),
            ));
        }
        self.shape().check(&m.heads)?;
        Ok(HeadMask { heads: m.heads.clone(), mode, scope })
    }

    /// A test builder over `setup`'s haystack, borrowing the shared tokenizer.
    pub fn builder<'t>(&self, tokenizer: &'t HfTokenizer, setup: &TestSetup) -> Result<NiahBuilder<'t, HfTokenizer>> {
        Ok(NiahBuilder::new(tokenizer, self.prompt_format(setup.plain), std::slice::from_ref(&setup.haystack))?)
    }
}

/// What every sweep and test of `setup` needs, as the engine's runner takes it.
pub fn inputs(setup: &TestSetup) -> SweepInputs<'_> {
    SweepInputs { needles: &setup.needles, haystack: std::slice::from_ref(&setup.haystack), max_new_tokens: setup.max_new_tokens }
}

/// Checks a sweep's inputs as `headscope detect` does, with the engine's checks ([`SweepPlan::new`]):
/// lengths and depths parse, the longest test fits the model's context, every needle builds at the
/// shortest length.
pub fn plan_sweep(model: &LabModel, setup: &TestSetup, lengths: &str, depth_count: usize) -> Result<SweepPlan> {
    let format = model.prompt_format(setup.plain);
    SweepPlan::new(&model.spec, &*model.tokenizer, format, &inputs(setup), lengths, depth_count).map_err(|e| named(model, e))
}

/// An engine error for the page; a context too long names the model.
fn named(model: &LabModel, e: EngineError) -> LabError {
    match e {
        EngineError::TooLong(m) => LabError::Invalid(format!("{}: {m}", model.name)),
        e => e.into(),
    }
}

/// A built and decoded test.
pub struct RunOutput {
    /// The page's result.
    pub result: TestResult,
    /// The built test.
    pub test: NiahTest,
    /// The decode trace (attention rows included when probed).
    pub trace: DecodeTrace,
}

/// Builds the test `at` of `setup` and decodes it on `model` with `mask` (which stays set afterwards)
/// and `probe`, reusing what the cache holds of its prompt; scores it as `headscope detect` does and
/// returns the record and the page's views.
pub async fn run_test(
    model: &mut LabModel,
    setup: &TestSetup,
    at: TestAt,
    mask: Option<HeadMask>,
    probe: &Probe,
    cancelled: &dyn Fn() -> bool,
) -> Result<RunOutput> {
    inputs(setup).check()?;
    check_fits(&model.spec, at.length, setup.max_new_tokens).map_err(|e| named(model, e))?;
    let needle = setup
        .needles
        .get(at.needle_index)
        .ok_or_else(|| LabError::Invalid(format!("needle {} does not exist ({} given)", at.needle_index + 1, setup.needles.len())))?;
    let key = TestKey { needle_index: at.needle_index, length: at.length, depth_percent: at.depth_percent };
    let tokenizer = model.tokenizer.clone();
    let test = model.builder(&tokenizer, setup)?.build(needle, at.length, at.depth_percent)?;
    let masked_heads = mask.as_ref().map(|m| m.heads.clone()).unwrap_or_default();
    if cancelled() {
        return Err(LabError::Cancelled);
    }
    let mut stopped = false;
    let (trace, reused) =
        decode_prompt(&mut model.engine, &test.prompt_ids, mask, probe, setup.max_new_tokens, &model.eos_token_ids, |_| {
            stopped = cancelled();
            !stopped
        })
        .await?;
    if stopped {
        return Err(LabError::Cancelled);
    }
    let record = score_test(&*tokenizer, model.shape(), &key, needle, &test, &trace, masked_heads)?;
    Ok(RunOutput { result: page_result(&tokenizer, model.shape(), &test, &trace, reused, record)?, test, trace })
}

/// The KV cache a rerun keeps, as the page's slider sets it (`headscope niah --kv-cache`'s policies).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KvRequest {
    /// Which KV heads keep the whole cache.
    pub policy: KvPolicy,
    /// Leading positions every windowed head keeps.
    pub sink: usize,
    /// Recent positions every windowed head keeps.
    pub window: usize,
}

/// Which KV heads keep the whole cache.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KvPolicy {
    /// The KV heads of these query heads (the top-K retrieval heads).
    Heads { heads: Vec<HeadId> },
    /// As many KV heads as `like` would keep, drawn at random with `seed`.
    Random { like: Vec<HeadId>, seed: u64 },
    /// None: every head windowed.
    Window,
}

/// A test run with the whole cache and again under a KV plan, with the cache's size under each.
pub struct KvRerun {
    pub before: TestResult,
    pub after: TestResult,
    /// KV heads that kept the whole cache, of all.
    pub full_kv_heads: usize,
    pub kv_heads: usize,
    /// Positions the bytes are counted at: the prompt and the most tokens an answer may take.
    pub positions: usize,
    /// Bytes of keys and values (f32) the test's context holds with the whole cache and under the plan.
    pub full_bytes: u64,
    pub plan_bytes: u64,
}

/// Reruns test `at` with the whole KV cache and then under `kv`'s plan (the CPU path: the windowed
/// heads' memory is really not allocated). The model keeps the whole cache afterwards.
pub async fn kv_rerun(
    model: &mut LabModel,
    setup: &TestSetup,
    at: TestAt,
    kv: &KvRequest,
    cancelled: &dyn Fn() -> bool,
) -> Result<KvRerun> {
    let spec = model.spec.clone();
    let plan = match &kv.policy {
        KvPolicy::Heads { heads } => KvPlan::keeping_heads(&spec, heads, kv.sink, kv.window),
        KvPolicy::Random { like, seed } => KvPlan::keeping_heads(&spec, like, kv.sink, kv.window)
            .and_then(|p| KvPlan::random(&spec, p.full_heads(), *seed, kv.sink, kv.window)),
        KvPolicy::Window => KvPlan::all_windowed(&spec, kv.sink, kv.window),
    }?;
    let Backend::Cpu(_) = &model.engine else {
        return Err(LabError::Invalid("KV-cache plans run on the CPU path: choose CPU as the backend to try one".into()));
    };
    let before = run_test(model, setup, at, None, &Probe::default(), cancelled).await?.result;
    let set = |model: &mut LabModel, plan| match &mut model.engine {
        Backend::Cpu(m) => Ok::<_, LabError>(m.set_kv_plan(plan)?),
        Backend::Gpu(_) => Ok(()),
    };
    set(model, Some(plan.clone()))?;
    let after = run_test(model, setup, at, None, &Probe::default(), cancelled).await;
    set(model, None)?;
    let after = after?.result;
    let whole = KvPlan { full: vec![vec![true; spec.kv_heads]; plan.full.len()], ..plan.clone() };
    let positions = at.length + setup.max_new_tokens;
    Ok(KvRerun {
        before,
        after,
        full_kv_heads: plan.full_heads(),
        kv_heads: plan.full.iter().flatten().count(),
        positions,
        full_bytes: whole.cache_bytes(&spec, positions, 4),
        plan_bytes: plan.cache_bytes(&spec, positions, 4),
    })
}

/// RazorAttention's data-free scores of `model` ([`headscope_engine::repeated::induction_and_echo`] on
/// [`RepeatedTokens::for_model`], as `headscope detect --score induction,echo` computes them): per
/// head (layer-major) induction and echo, and the random block's length.
pub async fn repeated_scores(model: &mut LabModel) -> Result<(Vec<f64>, Vec<f64>, usize)> {
    let spec = &model.spec;
    let seq = RepeatedTokens::for_model(spec.vocab_size, spec.max_position_embeddings, spec.bos_token_id)?;
    let (induction, echo) = headscope_engine::repeated::induction_and_echo(&mut model.engine, &seq).await?;
    Ok((induction, echo, seq.period))
}

/// One prompt of the chain-of-thought demo: a task (index into the request's tasks) in one mode.
pub struct CotPrompt {
    pub task: usize,
    pub mode: CotMode,
    pub ids: Vec<u32>,
    pub max_new_tokens: usize,
}

/// Every task in both modes, tokenized as `headscope cot` does ([`CotTask::prompt_ids`]); a task the
/// model's context cannot hold fails before anything runs.
pub fn cot_prompts(model: &LabModel, tasks: &[CotTask], plain: bool, max_direct: usize, max_step: usize) -> Result<Vec<CotPrompt>> {
    if tasks.is_empty() || max_direct == 0 || max_step == 0 {
        return Err(LabError::Invalid("the chain-of-thought demo needs at least one task and room for at least one answer token".into()));
    }
    let format = model.prompt_format(plain);
    let mut out = Vec::with_capacity(tasks.len() * 2);
    for (task, t) in tasks.iter().enumerate() {
        t.check().map_err(LabError::Invalid)?;
        for mode in CotMode::ALL {
            let max_new_tokens = if mode == CotMode::Direct { max_direct } else { max_step };
            let ids = t.prompt_ids(mode, &format, &*model.tokenizer, max_new_tokens, model.spec.max_position_embeddings)?;
            out.push(CotPrompt { task, mode, ids, max_new_tokens });
        }
    }
    Ok(out)
}

/// Answers one prompt of the demo under `mask` (which stays set afterwards), greedily as `headscope
/// cot` does, and scores it by exact match; `None` when `cancelled` stopped it.
pub async fn cot_answer(
    model: &mut LabModel,
    task: &CotTask,
    prompt: &CotPrompt,
    mask: Option<HeadMask>,
    cancelled: &dyn Fn() -> bool,
) -> Result<Option<CotRecord>> {
    let mut stopped = false;
    let (trace, _) =
        decode_prompt(&mut model.engine, &prompt.ids, mask, &Probe::default(), prompt.max_new_tokens, &model.eos_token_ids, |_| {
            stopped = cancelled();
            !stopped
        })
        .await?;
    if stopped {
        return Ok(None);
    }
    let text = model.tokenizer.decode(&trace.tokens)?;
    Ok(Some(CotRecord::scored(task, prompt.mode, text, prompt.ids.len(), trace.tokens.len())))
}

/// The page's view of a decoded test: its record, the answer token by token, and the timings (`reused`
/// prompt positions came from the cache and were not computed).
pub fn page_result(
    tokenizer: &HfTokenizer,
    shape: HeadShape,
    test: &NiahTest,
    trace: &DecodeTrace,
    reused: usize,
    record: TestRecord,
) -> Result<TestResult> {
    let answer = answer_tokens(tokenizer, shape, test, &trace.steps())?;
    Ok(TestResult {
        record,
        answer,
        argmax: trace.argmax_position.clone(),
        prefill_tokens: test.prompt_ids.len().saturating_sub(1 + reused),
        prefill_seconds: trace.prefill_seconds,
        decode_tokens: trace.tokens.len(),
        decode_seconds: trace.decode_seconds,
    })
}

/// The answer token by token, each marked when it was copied: some head's argmax at that step is an
/// eq. 1 hit (core's `retrieval_hits` on that one step).
pub fn answer_tokens(tokenizer: &dyn TextTokenizer, shape: HeadShape, test: &NiahTest, steps: &[DecodeStep]) -> Result<Vec<AnswerToken>> {
    let mut out = Vec::with_capacity(steps.len());
    let mut previous = String::new();
    for i in 0..steps.len() {
        // Decoding growing prefixes keeps characters split over several byte-level tokens whole.
        let ids: Vec<u32> = steps[..=i].iter().map(|s| s.token).collect();
        let text = tokenizer.decode(&ids)?;
        let piece = match text.strip_prefix(previous.as_str()) {
            Some(rest) => rest.to_owned(),
            None => tokenizer.decode(&ids[i..])?,
        };
        previous = text;
        let hit = retrieval_hits(shape, &test.prompt_ids, test.answer_tokens.clone(), &steps[i..=i])?;
        let copied = shape.iter().any(|h| !hit.positions(h).is_empty());
        out.push(AnswerToken { text: piece, copied });
    }
    Ok(out)
}

/// Most bins of a head view's attention strip.
pub const STRIP_BINS: usize = 480;

/// Context tokens shown on each side of a head's argmax.
pub const WINDOW: usize = 6;

/// Runs test `at` with `head`'s attention rows probed and returns, per decode step, where it looked.
pub async fn head_view(
    model: &mut LabModel,
    setup: &TestSetup,
    at: TestAt,
    head: HeadId,
    mask: Option<HeadMask>,
    cancelled: &dyn Fn() -> bool,
) -> Result<HeadViewResult> {
    model.shape().check(&[head])?;
    let probe = Probe { rows: vec![head], ..Probe::default() };
    let out = run_test(model, setup, at, mask, &probe, cancelled).await?;
    let plain = matches!(model.prompt_format(setup.plain), PromptFormat::Plain);
    head_view_from(&model.tokenizer, model.shape(), head, &out, plain)
}

/// Assembles a [`HeadViewResult`] from a run that probed `head`'s rows.
pub fn head_view_from(tokenizer: &HfTokenizer, shape: HeadShape, head: HeadId, out: &RunOutput, plain: bool) -> Result<HeadViewResult> {
    let test = &out.test;
    let index = shape.index(head).ok_or_else(|| LabError::Invalid(format!("head {head} is outside the model")))?;
    let encoded = tokenizer.encode(&test.prompt_text, plain)?;
    if encoded.ids != test.prompt_ids {
        return Err(LabError::Invalid("the prompt does not re-encode to the same tokens; cannot show token texts".into()));
    }
    let context = test.prompt_ids.len();
    let generated: Vec<String> = out.trace.tokens.iter().map(|&t| tokenizer.decode(&[t]).unwrap_or_default()).collect();
    // Keys past the prompt are the tokens generated so far (step s sees generated[..s]).
    let token_text = |p: usize| -> String {
        if p >= context {
            return generated.get(p - context).cloned().unwrap_or_default();
        }
        let (a, b) = encoded.offsets[p];
        if b > a {
            test.prompt_text.get(a..b).unwrap_or("?").to_owned()
        } else {
            tokenizer.inner().id_to_token(test.prompt_ids[p]).unwrap_or_default()
        }
    };
    let bin = context.div_ceil(STRIP_BINS).max(1);
    let mut steps = Vec::with_capacity(out.trace.tokens.len());
    for (s, &token) in out.trace.tokens.iter().enumerate() {
        let argmax = out.trace.argmax_position[s]
            .get(index)
            .copied()
            .ok_or_else(|| LabError::Invalid(format!("step {s} reports no argmax for head {head}")))?;
        let row = out.trace.attention_rows[s].iter().find(|r| r.head == head).map(|r| r.weights.as_slice()).unwrap_or(&[]);
        let a = argmax as usize;
        let peak = row.get(a).copied().unwrap_or(0.0);
        let one = DecodeStep { token, argmax: out.trace.argmax_position[s].clone() };
        let hit = !retrieval_hits(shape, &test.prompt_ids, test.answer_tokens.clone(), &[one])?.positions(head).is_empty();
        let visible = context + s;
        let window = (a.saturating_sub(WINDOW)..(a + WINDOW + 1).min(visible)).map(|p| (p as u32, token_text(p))).collect();
        // Positions past the prompt (earlier generated tokens) are left out of the strip.
        let strip = row[..row.len().min(context)].chunks(bin).map(|c| c.iter().copied().fold(0f32, f32::max)).collect();
        let token = generated[s].clone();
        steps.push(HeadStep { token, argmax, peak, hit, window, strip });
    }
    Ok(HeadViewResult {
        head,
        test_id: out.result.record.id.clone(),
        context,
        needle_tokens: [test.needle_tokens.start, test.needle_tokens.end],
        answer_tokens: [test.answer_tokens.start, test.answer_tokens.end],
        bin,
        steps,
    })
}

/// The base URL of a model directory: trailing slashes dropped, and a Hugging Face model page
/// (`https://huggingface.co/org/name`) turned into its file URL (`.../resolve/main`).
pub fn model_base_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        return Err(LabError::Invalid("the model URL is empty".into()));
    }
    if let Some(rest) = url.strip_prefix("https://huggingface.co/") {
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() == 2 {
            return Ok(format!("{url}/resolve/main"));
        }
        if parts.len() >= 4 && parts[2] == "tree" {
            return Ok(format!("https://huggingface.co/{}/{}/resolve/{}", parts[0], parts[1], parts[3..].join("/")));
        }
    }
    Ok(url.to_owned())
}

/// The shard files named by a `model.safetensors.index.json`, sorted, each once.
pub fn shard_names(index_json: &[u8]) -> Result<Vec<String>> {
    let bad = |why: &str| LabError::Invalid(format!("model.safetensors.index.json: {why}"));
    let v: serde_json::Value = serde_json::from_slice(index_json).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no `weight_map` object"))?;
    let mut names: Vec<String> = Vec::new();
    for shard in map.values() {
        let name = shard.as_str().ok_or_else(|| bad("a weight_map entry is not a file name"))?;
        if name.contains('/') || name.contains("..") || !name.ends_with(".safetensors") {
            return Err(bad(&format!("`{name}` is not a safetensors file beside the index")));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        return Err(bad("the weight map is empty"));
    }
    names.sort();
    Ok(names)
}
