//! The messages between the page and the model's Web Worker. The page sends [`Request`]s (model bytes
//! travel beside them as transferred `ArrayBuffer`s); the worker answers with [`Event`]s as work
//! proceeds. Both sides are this crate, so one set of serde types describes the wire format.

pub use crate::lab::{KvPolicy, KvRequest};
use crate::strings::{msg, Lang};
use headscope_core::cot::{CotRecord, CotTask};
use headscope_core::files::TestRecord;
use headscope_core::niah::Needle;
use headscope_core::{HeadId, ScoreKind};
use serde::{Deserialize, Serialize};

/// Which compute path the worker should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// WebGPU when the browser has it, else the CPU.
    #[default]
    Auto,
    /// WebGPU or an error.
    Gpu,
    /// The candle CPU path compiled to WebAssembly.
    Cpu,
}

impl BackendChoice {
    /// Reads `auto`, `gpu`/`webgpu` or `cpu` (the page's `?backend=` parameter).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Some(BackendChoice::Auto),
            "gpu" | "webgpu" => Some(BackendChoice::Gpu),
            "cpu" | "wasm" => Some(BackendChoice::Cpu),
            _ => None,
        }
    }
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ModelSource {
    /// The bundled lab model, served beside the page under `models/lab/`.
    Bundled,
    /// A Hugging Face model directory at a URL (kept in the Cache API; a changed file is downloaded again).
    Url {
        /// The directory's URL (files are fetched as `{url}/config.json`, ...).
        url: String,
    },
    /// Files the user picked or dropped; their bytes travel beside the request, in this order.
    Files {
        /// A name for the model (the folder's name).
        name: String,
        /// File names (paths inside the folder), one per transferred buffer.
        names: Vec<String>,
    },
}

/// A head mask as the page describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskRequest {
    /// Heads to mask.
    pub heads: Vec<HeadId>,
    /// `uniform` or `zero`.
    pub mode: String,
    /// `decode` or `all`.
    pub scope: String,
}

/// The inputs every test of a run shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestSetup {
    /// Needles (one for a single needle, many for a JSONL batch).
    pub needles: Vec<Needle>,
    /// The haystack text.
    pub haystack: String,
    /// Most tokens to generate per test.
    pub max_new_tokens: usize,
    /// Use the plain prompt even when the model has a chat template (the CLI's `--plain`).
    pub plain: bool,
}

/// One test of a setup: which needle, how long a prompt, how deep the needle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TestAt {
    /// Index into [`TestSetup::needles`].
    pub needle_index: usize,
    /// Prompt length in tokens.
    pub length: usize,
    /// Needle depth in percent.
    pub depth_percent: f64,
}

/// One mask of the chain-of-thought demo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CotMask {
    /// How its records and table name it.
    pub name: String,
    /// The heads, or none for the unmasked answers.
    pub mask: Option<MaskRequest>,
}

/// What the page asks of the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Request {
    /// Load a model on a backend (replacing any loaded one).
    LoadModel {
        /// Where from.
        source: ModelSource,
        /// Which backend.
        backend: BackendChoice,
        /// WebGPU's kernel set, `serial` or `parallel` (the page's `?kernels=`); none: the adapter
        /// decides (serial on a software adapter, parallel on a GPU).
        #[serde(default)]
        kernel_set: Option<String>,
    },
    /// Run a NIAH sweep: every needle x length x depth, reporting each test as it ends.
    Sweep {
        /// Shared inputs.
        setup: TestSetup,
        /// `MIN:MAX:N` or one length.
        lengths: String,
        /// Number of depths over 0-100 %.
        depths: usize,
        /// Heads to mask during the sweep, if any.
        mask: Option<MaskRequest>,
        /// Scores measured besides eq. 1 (`official`, `soft`, `qr`): what each test's record carries.
        #[serde(default)]
        scores: Vec<ScoreKind>,
    },
    /// Run one test with the whole KV cache and again under a KV plan (the page's KV-budget slider).
    KvRerun {
        /// Shared inputs.
        setup: TestSetup,
        /// The test.
        at: TestAt,
        /// The plan.
        kv: KvRequest,
    },
    /// RazorAttention's data-free scores (induction, echo) of the loaded model: one unmasked pass over
    /// repeated random tokens.
    RepeatedScores,
    /// The chain-of-thought demo (the paper's fig. 10): every task asked directly and step by step,
    /// under every mask, each answer reported as it ends.
    Cot {
        /// The tasks.
        tasks: Vec<CotTask>,
        /// The masks, by name (`none`, `top-3`, `random-3-s0`).
        masks: Vec<CotMask>,
        /// Use the plain prompt even when the model has a chat template.
        plain: bool,
        /// Most tokens of a direct answer.
        max_new_direct: usize,
        /// Most tokens of a step-by-step answer.
        max_new_step: usize,
    },
    /// Stop the running sweep after the current step or test.
    Cancel,
    /// Run one test without and with a mask, for the before/after view.
    Rerun {
        /// Shared inputs.
        setup: TestSetup,
        /// The test.
        at: TestAt,
        /// The mask of the "after" run.
        mask: MaskRequest,
    },
    /// Run one test again, recording the attention rows of one head at every step.
    HeadView {
        /// Shared inputs.
        setup: TestSetup,
        /// The test.
        at: TestAt,
        /// The head to watch.
        head: HeadId,
        /// A mask to apply, if the shown run was masked.
        mask: Option<MaskRequest>,
    },
}

/// The loaded model, as the page shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// Name (folder or URL).
    pub name: String,
    /// `model_type` of config.json.
    pub model_type: String,
    /// Rows of the head grid: the layers that attend (all of them but a hybrid's Mamba layers).
    pub layers: usize,
    /// A hybrid's attention layers, the model layers the head grid's rows stand for (the heatmap's row
    /// labels); None where every layer attends.
    #[serde(default)]
    pub attention_layers: Option<Vec<usize>>,
    /// Query heads per layer.
    pub heads: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// The model's context (max_position_embeddings).
    pub max_positions: usize,
    /// Number of weights.
    pub parameters: usize,
    /// Content hash (as `headscope` writes into run.json).
    pub hash: String,
    /// Whether the tokenizer has a chat template.
    pub chat_template: bool,
    /// The backend in use, in English words for files and logs (e.g. "WebGPU on a graphics card" or
    /// "CPU (WebAssembly)"); the page words it from `gpu` and `adapter`.
    pub backend: String,
    /// The WebGPU adapter, when the backend is WebGPU.
    #[serde(default)]
    pub adapter: Option<AdapterInfo>,
    /// Whether the backend is WebGPU.
    pub gpu: bool,
    /// Why WebGPU is not used, when the choice was `auto` and it fell back to the CPU.
    pub fallback_reason: Option<Fallback>,
    /// Seconds the load took.
    pub load_seconds: f64,
}

/// One generated token of an answer, with whether it was copied from the needle (some head's
/// attention peaked on an answer-span token equal to it: an eq. 1 hit at that step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerToken {
    /// The token's text.
    pub text: String,
    /// Copied from the needle's answer span.
    pub copied: bool,
}

/// A finished test as the page needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// The record, exactly as `headscope` writes it to tests.jsonl.
    pub record: TestRecord,
    /// The answer, token by token.
    pub answer: Vec<AnswerToken>,
    /// Per decode step, each query head's argmax position (layer-major): the raw observation.
    pub argmax: Vec<Vec<u32>>,
    /// Prompt tokens prefilled: computed, not taken from the cache the test before left.
    pub prefill_tokens: usize,
    /// Seconds of prefill.
    pub prefill_seconds: f64,
    /// Decode steps run.
    pub decode_tokens: usize,
    /// Seconds of decode steps.
    pub decode_seconds: f64,
}

/// Where one head looked at one decode step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadStep {
    /// The token generated at this step.
    pub token: String,
    /// The context position the head's attention peaked at.
    pub argmax: u32,
    /// Its weight there.
    pub peak: f32,
    /// Whether this was an eq. 1 hit (argmax in the answer span, on the token just generated).
    pub hit: bool,
    /// Context tokens around the argmax: `(position, text)`.
    pub window: Vec<(u32, String)>,
    /// The attention row pooled into bins (max per bin), for a strip over the whole context.
    pub strip: Vec<f32>,
}

/// A head's attention over one test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadViewResult {
    /// The head.
    pub head: HeadId,
    /// The test's id (`n{needle}-L{length}-d{depth}`).
    pub test_id: String,
    /// Prompt length in tokens.
    pub context: usize,
    /// Needle token span `[start, end)`.
    pub needle_tokens: [usize; 2],
    /// Answer token span `[start, end)`.
    pub answer_tokens: [usize; 2],
    /// Positions per strip bin.
    pub bin: usize,
    /// One entry per decode step.
    pub steps: Vec<HeadStep>,
}

/// What the worker reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The worker has started; `webgpu` says whether the browser exposes WebGPU to it.
    Ready {
        /// `navigator.gpu` exists in the worker.
        webgpu: bool,
    },
    /// Something slow is under way (fetching, loading); the page words it in its language.
    Status(Status),
    /// A model is loaded and ready.
    ModelLoaded(ModelSummary),
    /// A sweep has started.
    SweepStarted {
        /// Tests to run.
        total: usize,
        /// Lengths of the grid.
        lengths: Vec<usize>,
        /// Depths of the grid.
        depths: Vec<f64>,
        /// Heads masked during the sweep.
        masked: Vec<HeadId>,
        /// Tokens of one copy of the haystack: longer prompts repeat it.
        haystack_tokens: usize,
    },
    /// One test of the sweep finished.
    TestDone {
        /// 0-based index in the sweep.
        index: usize,
        /// Tests in the sweep.
        total: usize,
        /// The result.
        result: Box<TestResult>,
    },
    /// The sweep ended (all tests ran, or it was cancelled).
    SweepDone {
        /// Whether it stopped early.
        cancelled: bool,
        /// Tests that ran.
        tests: usize,
        /// Wall-clock seconds of the sweep.
        seconds: f64,
        /// Decode steps over the sweep.
        decode_tokens: usize,
        /// Seconds in decode steps.
        decode_seconds: f64,
        /// Prompt tokens prefilled (computed; those reused from the cache are not counted).
        prefill_tokens: usize,
        /// Seconds in prefill.
        prefill_seconds: f64,
    },
    /// A before/after rerun finished.
    RerunDone {
        /// Unmasked.
        before: Box<TestResult>,
        /// Masked.
        after: Box<TestResult>,
        /// The masked heads.
        masked: Vec<HeadId>,
    },
    /// A head view is ready.
    HeadView(Box<HeadViewResult>),
    /// A KV rerun finished.
    KvRerunDone {
        /// With the whole cache.
        before: Box<TestResult>,
        /// Under the plan.
        after: Box<TestResult>,
        /// KV heads that kept the whole cache.
        full_kv_heads: usize,
        /// KV heads of the model.
        kv_heads: usize,
        /// Positions (prompt and answer) the bytes are counted at.
        positions: usize,
        /// Bytes of keys and values (f32) of the test's context with the whole cache.
        full_bytes: u64,
        /// The same under the plan.
        plan_bytes: u64,
    },
    /// The data-free scores of the loaded model, one value per head (layer-major).
    RepeatedScores {
        /// Weight on the tokens after earlier occurrences of the current token.
        induction: Vec<f64>,
        /// Weight on the earlier occurrences themselves.
        echo: Vec<f64>,
        /// Random tokens per repeat.
        period: usize,
    },
    /// The chain-of-thought demo has started.
    CotStarted {
        /// Answers to make (tasks x 2 modes x masks).
        total: usize,
    },
    /// One answer of the chain-of-thought demo.
    CotAnswer {
        /// The mask's name.
        mask: String,
        /// The answer, scored.
        record: CotRecord,
    },
    /// The chain-of-thought demo ended (all answers made, or cancelled).
    CotDone {
        /// Whether it stopped early.
        cancelled: bool,
    },
    /// A request failed; the worker is ready for the next one.
    Error {
        /// What was being done.
        context: ErrorContext,
        /// What went wrong, for the user.
        message: String,
    },
    /// The worker panicked: its state is lost and the page must restart it.
    Crashed {
        /// The panic message.
        message: String,
    },
}

/// A WebGPU adapter as the page names it: its name where the browser tells it, else its kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterInfo {
    /// The adapter's name ("" where the browser hides it).
    pub name: String,
    /// wgpu's device type in words ("discrete GPU", "integrated GPU", "virtual GPU", "CPU (software)").
    pub kind: String,
}

impl AdapterInfo {
    pub fn say(&self, lang: Lang) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        match self.kind.as_str() {
            "discrete GPU" => msg::ADAPTER_DISCRETE,
            "integrated GPU" => msg::ADAPTER_INTEGRATED,
            "virtual GPU" => msg::ADAPTER_VIRTUAL,
            k if k.starts_with("CPU") => msg::ADAPTER_CPU,
            _ => msg::ADAPTER_UNNAMED,
        }
        .get(lang)
        .to_string()
    }
}

/// Why the `auto` choice did not take WebGPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fallback {
    /// The only adapter emulates a GPU on the CPU (named, where the browser names it), where the CPU
    /// path is faster.
    Software { adapter: String },
    /// WebGPU could not be opened or the model not loaded on it.
    Unavailable { error: String },
}

impl Fallback {
    pub fn say(&self, lang: Lang) -> String {
        match self {
            Fallback::Software { adapter } => {
                let what = if adapter.is_empty() {
                    msg::SOFTWARE_EMULATION.get(lang).to_string()
                } else {
                    msg::NAMED_SOFTWARE_EMULATION.fill(lang, &[("name", adapter)])
                };
                msg::SOFTWARE_ADAPTER.fill(lang, &[("what", &what)])
            }
            Fallback::Unavailable { error } => error.clone(),
        }
    }
}

/// What the worker is busy with, for the status line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Status {
    /// Fetching the lab model the page ships.
    FetchingBundled,
    /// Loading a model's weights.
    Loading { name: String, megabytes: usize },
    /// WebGPU is not used; the model loads on the CPU.
    CpuFallback(Fallback),
    /// Fetching one weight file of several.
    FetchingShard { shard: String, index: usize, count: usize },
}

impl Status {
    pub fn say(&self, lang: Lang) -> String {
        match self {
            Status::FetchingBundled => msg::FETCHING_BUNDLED.get(lang).to_string(),
            Status::Loading { name, megabytes } => msg::LOADING_WEIGHTS.fill(lang, &[("name", name), ("mb", megabytes)]),
            Status::CpuFallback(reason) => msg::CPU_FALLBACK.fill(lang, &[("reason", &reason.say(lang))]),
            Status::FetchingShard { shard, index, count } => {
                msg::FETCHING_SHARD.fill(lang, &[("shard", shard), ("i", &(index + 1)), ("n", count)])
            }
        }
    }
}

/// What the worker was doing when a request failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ErrorContext {
    ReadingMessage,
    Starting,
    Loading,
    Sweep,
    Rerun,
    HeadView(HeadId),
    RepeatedScores,
    Cot,
    KvRerun,
}

impl ErrorContext {
    pub fn say(&self, lang: Lang) -> String {
        match self {
            ErrorContext::ReadingMessage => msg::CONTEXT_READING_MESSAGE.get(lang).to_string(),
            ErrorContext::Starting => msg::CONTEXT_STARTING.get(lang).to_string(),
            ErrorContext::Loading => msg::CONTEXT_LOADING.get(lang).to_string(),
            ErrorContext::Sweep => msg::CONTEXT_SWEEP.get(lang).to_string(),
            ErrorContext::Rerun => msg::CONTEXT_RERUN.get(lang).to_string(),
            ErrorContext::HeadView(head) => msg::CONTEXT_HEAD_VIEW.fill(lang, &[("head", head)]),
            ErrorContext::RepeatedScores => msg::CONTEXT_REPEATED.get(lang).to_string(),
            ErrorContext::Cot => msg::CONTEXT_COT.get(lang).to_string(),
            ErrorContext::KvRerun => msg::CONTEXT_KV.get(lang).to_string(),
        }
    }
}
