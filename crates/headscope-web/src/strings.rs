//! Every string of the page's own markup in English and Simplified Chinese, by key. `web/index.html`
//! marks each text with `data-i18n="KEY"` (its text), `data-i18n-title`, `data-i18n-placeholder` or
//! `data-i18n-aria-label` (an attribute); switching the language sets them from this table. The English
//! entries equal the markup's own text (a test reads `web/index.html`), so the page reads the same
//! before the table is applied.

/// A language of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    Zh,
}

impl Lang {
    /// `en` or `zh` (also `zh-CN`, `zh-Hans`, ... as browsers name it); anything else is `None`.
    pub fn parse(code: &str) -> Option<Lang> {
        let code = code.trim().to_ascii_lowercase();
        if code == "en" || code.starts_with("en-") {
            Some(Lang::En)
        } else if code == "zh" || code.starts_with("zh-") {
            Some(Lang::Zh)
        } else {
            None
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }
}

/// A text in both languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text {
    pub en: &'static str,
    pub zh: &'static str,
}

impl Text {
    pub fn get(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.en,
            Lang::Zh => self.zh,
        }
    }
}

/// Shorthand for the tables.
pub const fn t(en: &'static str, zh: &'static str) -> Text {
    Text { en, zh }
}

/// The page's markup strings: (key, text).
pub const UI: &[(&str, Text)] = &[
    ("lede.1", t("Hide a needle in a haystack, let a small language model find it, and watch which attention heads copy the answer: the", "把一根“针”藏进“干草堆”，让一个小语言模型去找它，看看哪些注意力头把答案抄了出来：这就是")),
    ("lede.2", t("retrieval heads", "检索头")),
    ("lede.3", t("of", "，出自")),
    ("lede.4", t("Then mask them and see the answer fall apart.", "然后屏蔽它们，看答案如何崩坏。")),
    ("backend.label", t("compute on", "计算设备")),
    ("backend.auto", t("auto: WebGPU on a hardware GPU, else CPU", "自动：有硬件 GPU 时用 WebGPU，否则用 CPU")),
    ("backend.gpu", t("WebGPU only", "只用 WebGPU")),
    ("backend.cpu", t("CPU (WebAssembly)", "CPU（WebAssembly）")),
    ("lessons.open", t("Lessons", "课程")),
    ("link.copy", t("Copy link", "复制链接")),
    ("link.copy.title", t("A link that opens this experiment (needle, haystack, settings, masked heads) on any machine", "一个链接，在任何电脑上打开这个实验（针、干草堆、设置、被屏蔽的头）")),
    ("start.over", t("Start over", "重新开始")),
    ("start.over.title", t("Forget the inputs this browser remembers and start with the defaults", "忘掉浏览器记住的输入，从默认设置开始")),
    ("error.close", t("dismiss", "关闭")),
    ("lessons.close", t("close the lessons", "关闭课程")),
    ("lessons.close.label", t("close the lessons", "关闭课程")),
    ("lessons.load", t("Load this step's inputs", "载入这一步的输入")),
    ("lessons.prev", t("← Previous", "← 上一步")),
    ("lessons.next", t("Next →", "下一步 →")),
    ("glossary", t("Glossary", "术语表")),
    ("paper", t("The paper:", "论文：")),
    ("model.drop", t("You can also drop a model folder's files here (config.json, *.safetensors, tokenizer.json). WebGPU runs Llama, Mistral, Qwen2 and Qwen3 models; Phi-3, Gemma-2, Gemma-3, Mixtral and Jamba run on the CPU path.", "也可以把模型文件夹里的文件拖到这里（config.json、*.safetensors、tokenizer.json）。WebGPU 运行 Llama、Mistral、Qwen2 和 Qwen3 模型；Phi-3、Gemma-2、Gemma-3、Mixtral 和 Jamba 在 CPU 路径上运行。")),
    ("model.h", t("1. Model", "1. 模型")),
    ("model.bundled", t("Bundled lab model", "自带的实验模型")),
    ("model.open", t("Open (or drop here) a model folder…", "打开（或拖到这里）一个模型文件夹…")),
    ("model.url", t("https://huggingface.co/org/model or a model folder's URL", "https://huggingface.co/org/model 或模型文件夹的网址")),
    ("model.url.load", t("Load from URL", "从网址载入")),
    ("model.none", t("no model loaded", "还没有载入模型")),
    ("test.h", t("2. Needle and haystack", "2. 针与干草堆")),
    ("test.needle", t("Needle (the sentence hidden in the haystack)", "针（藏在干草堆里的句子）")),
    ("test.question", t("Question", "问题")),
    ("test.answer", t("Expected answer (part of the needle)", "预期答案（针的一部分）")),
    ("test.batch", t("Needles JSONL for a batch…", "一批针（JSONL 文件）…")),
    ("test.heldout", t("Use the held-out needles", "用留出的针")),
    ("test.single", t("Back to one needle", "回到一根针")),
    ("test.haystack", t("Haystack", "干草堆")),
    ("test.haystack.loading", t("loading the default haystack (King James Version, Gospel of John)…", "正在载入默认的干草堆（英王钦定本《约翰福音》）…")),
    ("test.upload", t("Upload a .txt haystack…", "上传 .txt 干草堆…")),
    ("test.default", t("Default haystack", "默认干草堆")),
    ("test.lengths", t("Context lengths", "上下文长度")),
    ("test.lengths.title", t("MIN:MAX:N (N evenly spaced) or one length, in tokens", "MIN:MAX:N（N 个等距长度）或一个长度，单位是词元")),
    ("test.depths", t("Depths", "深度")),
    ("test.depths.title", t("needle depths, evenly spaced over 0-100 %", "针的深度，在 0–100 % 之间等距分布")),
    ("test.new", t("New tokens", "生成词元数")),
    ("test.gate", t("Score gate", "计分门槛")),
    ("test.gate.title", t("tests whose answer has at least this ROUGE-1 recall are scored", "答案的 ROUGE-1 召回率至少达到这个值的测试才计分")),
    ("test.plain", t("plain prompt (ignore a chat template)", "纯文本提示（忽略聊天模板）")),
    ("test.every", t("soft + qr scores", "soft + qr 分数")),
    ("test.every.title", t("also measure HeadKV's soft score and QRHead's qr score in the sweep (they cost extra passes; eq. 1 and the official code's count are always measured)", "在扫描中同时测量 HeadKV 的 soft 分数和 QRHead 的 qr 分数（需要额外的计算；eq. 1 和官方代码的计数总会测量）")),
    ("test.run", t("Run the sweep", "运行测试")),
    ("test.cancel", t("Cancel", "取消")),
    ("results.h", t("3. Results", "3. 结果")),
    ("results.empty", t("Run a sweep to fill the heatmaps.", "运行一次测试来填满热力图。")),
    ("results.show", t("Show", "显示")),
    ("results.compare", t("Compare with", "对比")),
    ("results.compare.label", t("a second run to compare the shown run with", "用来与当前这次对比的另一次运行")),
    ("results.colours", t("Colours", "配色")),
    ("results.colours.title", t("the needle grid's colours", "针网格的配色")),
    ("results.palette.niah", t("red to green", "红到绿")),
    ("results.palette.cb", t("colour-blind safe (blue to yellow)", "色盲友好（蓝到黄）")),
    ("results.runs", t("Every sweep of this session is kept as a run: compare an unmasked run with masked ones below.", "这次会话的每次测试都保存为一次运行：可以把未屏蔽的运行和屏蔽后的运行放在一起比较。")),
    ("chart.niah.label", t("Needle-in-a-haystack grid: answer recall per context length and needle depth. The test list below has every test's result.", "大海捞针网格：每个上下文长度和针深度的答案召回率。下面的测试列表有每个测试的结果。")),
    ("chart.niah", t("Did the model find the needle? Answer recall per context length and needle depth (click a cell to pick its test).", "模型找到针了吗？每个上下文长度和针深度的答案召回率（点击格子选中对应的测试）。")),
    ("chart.heads.label", t("Retrieval score of every head, layers by heads. Arrow keys move between heads; Enter shows where the head looked; Shift+Enter masks it.", "每个头的检索分数，按层和头排列。方向键在头之间移动；回车显示这个头看向哪里；Shift+回车屏蔽它。")),
    ("chart.heads.1", t("Retrieval score of every head (layer × head).", "每个头的检索分数（层 × 头）。")),
    ("chart.heads.2", t("Click a head to see where it looked; Shift+click masks it.", "点击一个头，看它看向哪里；Shift+点击屏蔽它。")),
    ("chart.showing", t("Showing", "显示")),
    ("chart.source.label", t("which head scores the heatmaps show", "热力图显示哪一组头分数")),
    ("chart.source.sweep", t("this sweep", "这次测试")),
    ("chart.source.imported", t("an imported file", "导入的文件")),
    ("chart.kind", t("scored by", "打分方式")),
    ("chart.kind.label", t("which head score the heatmaps show", "热力图显示哪一种头分数")),
    ("chart.kind.eq1", t("eq. 1 (the paper)", "eq. 1（论文）")),
    ("chart.kind.official", t("official code (repeats count again)", "官方代码（重复命中再次计数）")),
    ("chart.kind.soft", t("soft (HeadKV)", "soft（HeadKV）")),
    ("chart.kind.qr", t("qr (QRHead)", "qr（QRHead）")),
    ("chart.kind.induction", t("induction (RazorAttention, data-free)", "归纳（RazorAttention，无需数据）")),
    ("chart.kind.echo", t("echo (RazorAttention, data-free)", "回声（RazorAttention，无需数据）")),
    ("chart.activation.label", t("Activation frequency of every head, layers by heads", "每个头的激活频率，按层和头排列")),
    ("chart.activation", t("Activation frequency: the share of scored tests in which a head copied at least one answer token.", "激活频率：在计分的测试中，一个头至少抄写了一个答案词元的比例。")),
    ("compare.h", t("Side by side", "并排对比")),
    ("compare.hint", t("(the shown run against the run chosen under \"Compare with\")", "（当前显示的运行与“对比”中选中的运行）")),
    ("compare.niah.label", t("Needle-in-a-haystack grid of the compared run", "对比运行的大海捞针网格")),
    ("compare.niah", t("The compared run's needle grid, beside the shown run's above.", "对比运行的针网格，与上面当前运行的并排。")),
    ("compare.diff.label", t("Change of every head's retrieval score between the two runs", "两次运行之间每个头检索分数的变化")),
    ("compare.diff", t("Score change per head, shown run minus compared run: blue heads lost score (masked heads do), red heads gained it.", "每个头的分数变化（当前运行减去对比运行）：蓝色的头失去了分数（被屏蔽的头就是这样），红色的头得到了分数。")),
    ("tests.h", t("Tests", "测试")),
    ("tests.hint", t("(copied needle tokens are marked; click a test to select it)", "（被抄写的针词元会高亮；点击测试来选中它）")),
    ("tests.label", t("tests of the shown run: arrow keys choose a test", "当前运行的测试：用方向键选择测试")),
    ("head.h", t("4. Where did a head look?", "4. 一个头看向了哪里？")),
    ("head.info", t("Click a head in the retrieval-score heatmap.", "在检索分数热力图里点击一个头。")),
    ("head.steps.label", t("where the chosen head looked at each answer step", "选中的头在每个答案步骤看向哪里")),
    ("mask.h", t("5. Mask heads", "5. 屏蔽注意力头")),
    ("mask.masked", t("Masked:", "已屏蔽：")),
    ("mask.clear", t("Clear", "清空")),
    ("mask.top", t("Top", "前")),
    ("mask.top.button", t("Mask the top-K heads", "屏蔽分数最高的 K 个头")),
    ("mask.seed", t("seed", "随机种子")),
    ("mask.random", t("Mask K random non-retrieval heads", "随机屏蔽 K 个非检索头")),
    ("mask.mode", t("mode", "方式")),
    ("mask.mode.uniform", t("uniform (the paper)", "均匀（论文的做法）")),
    ("mask.mode.zero", t("zero output", "输出置零")),
    ("mask.scope", t("scope", "范围")),
    ("mask.scope.decode", t("decode steps (the paper)", "解码步骤（论文的做法）")),
    ("mask.scope.all", t("everywhere", "所有位置")),
    ("mask.rerun", t("Rerun the selected test: before / after", "重跑选中的测试：屏蔽前 / 屏蔽后")),
    ("mask.sweep", t("Run the sweep with these heads masked", "屏蔽这些头后运行测试")),
    ("files.h", t("7. Export and import", "7. 导出与导入")),
    ("kv.h", t("KV cache:", "KV 缓存：")),
    ("kv.keep", t("keep every position for", "保留全部位置的是")),
    ("kv.policy.heads", t("the KV heads of the top-K heads", "得分最高的 K 个头所用的 KV 头")),
    ("kv.policy.random", t("as many random KV heads", "同样数量的随机 KV 头")),
    ("kv.policy.window", t("no head", "没有头")),
    ("kv.window", t("window", "窗口")),
    ("kv.window.title", t("recent positions the other KV heads keep", "其余 KV 头保留的最近位置数")),
    ("kv.sink", t("sink", "汇聚位置")),
    ("kv.sink.title", t("leading positions the other KV heads keep (attention sinks)", "其余 KV 头保留的开头位置数（注意力汇聚点）")),
    ("kv.rerun", t("Rerun the selected test with this cache", "用这个缓存重新运行所选测试")),
    ("cot.h", t("6. Chain of thought", "6. 思维链")),
    ("cot.intro", t("The paper's fig. 10: questions that chain facts of a short passage, answered directly and step by step, with no heads masked, the top-K retrieval heads masked and K random non-retrieval heads masked. Masking retrieval heads should hurt step-by-step answers most.", "论文的图 10：需要把一段短文中的几条事实串起来的问题，分别直接回答和逐步推理回答；不屏蔽头、屏蔽得分最高的 K 个检索头、屏蔽 K 个随机的非检索头。屏蔽检索头应当对逐步推理的回答伤害最大。")),
    ("cot.tasks", t("Tasks", "任务")),
    ("cot.set.two", t("two-hop questions", "两跳问题")),
    ("cot.set.word", t("word problems", "应用题")),
    ("cot.count", t("how many", "数量")),
    ("cot.k.title", t("heads masked (the top-K of the shown scores; as many random non-retrieval heads)", "屏蔽的头数（当前显示分数的前 K 个；以及同样数量的随机非检索头）")),
    ("cot.steps", t("step-by-step tokens", "逐步推理的词元数")),
    ("cot.run", t("Run the demo", "运行演示")),
    ("files.save", t("Save the session…", "保存这次会话…")),
    ("files.save.title", t("every run of this session with its results, and the inputs, in one file", "把这次会话的每次运行、结果和输入存进一个文件")),
    ("files.open", t("Open a saved session…", "打开保存的会话…")),
    ("files.import", t("Import head scores (official JSON)…", "导入头分数（官方 JSON 格式）…")),
    ("footer", t("HeadScope: retrieval heads, measured. The model runs in your browser; nothing is uploaded.", "HeadScope：检索头，量出来看。模型在你的浏览器里运行，什么都不会上传。")),
];

impl Text {
    /// The text in `lang` with each `{name}` slot set from `args`: the messages the page writes itself.
    pub fn fill(&self, lang: Lang, args: &[(&str, &dyn std::fmt::Display)]) -> String {
        let mut out = self.get(lang).to_string();
        for (name, value) in args {
            out = out.replace(&format!("{{{name}}}"), &value.to_string());
        }
        out
    }
}

/// Declares each message as a constant and lists them all in [`MESSAGES`] for the tests.
macro_rules! messages {
    ($($(#[$doc:meta])* $name:ident: $en:literal, $zh:literal;)*) => {
        $($(#[$doc])* pub const $name: Text = t($en, $zh);)*
        /// Every message the page writes itself, by name.
        pub const MESSAGES: &[(&str, Text)] = &[$((stringify!($name), $name)),*];
    };
}

/// The messages the page writes itself (status line, errors, summaries, run names, chart words), with
/// `{name}` slots that [`Text::fill`] sets. Details that come from a file or from the model's code
/// (a parser's complaint, an HTTP status) are set into them as they are.
pub mod msg {
    use super::t;
    use super::Text;
    messages! {
        READING_MODEL_FILES: "reading the model's files…", "正在读取模型文件…";
        CANCELLING: "cancelling…", "正在取消…";
        OPENED_SESSION: "opened {name}: {count} runs of {model}", "已打开 {name}：{model} 的 {count} 次运行";
        OPENED_SESSION_OTHER_MODEL: "opened {name}: {count} runs made with {model} (another model of the same shape: these results are not the loaded model's)",
            "已打开 {name}：用 {model} 做的 {count} 次运行（另一个形状相同的模型：这些结果不属于当前载入的模型）";
        LESSON_LOADED: "loaded the inputs of lesson step {step}: {title}", "已载入课程第 {step} 步的输入：{title}";
        WEBGPU_NOT_USED: "WebGPU not used ({reason}); running on the CPU", "未使用 WebGPU（{reason}）；在 CPU 上运行";
        MODEL_LOADED: "model loaded in {seconds} s", "模型已载入，用时 {seconds} 秒";
        RUNNING: "running {total} tests", "正在运行 {total} 个测试";
        RUNNING_MASKED: "running {total} tests with {masked} heads masked", "正在运行 {total} 个测试，屏蔽了 {masked} 个头";
        FINISHED: "finished {tests} tests in {seconds} s ({rate} tokens/s decoding)", "完成 {tests} 个测试，用时 {seconds} 秒（解码 {rate} 词元/秒）";
        CANCELLED: "cancelled after {tests} tests in {seconds} s ({rate} tokens/s decoding)", "已取消：完成了 {tests} 个测试，用时 {seconds} 秒（解码 {rate} 词元/秒）";
        FETCHING_BUNDLED: "fetching the bundled lab model", "正在获取内置的实验模型";
        LOADING_WEIGHTS: "loading {name} ({mb} MB of weights)", "正在载入 {name}（{mb} MB 权重）";
        CPU_FALLBACK: "not using WebGPU ({reason}); loading on the CPU", "不使用 WebGPU（{reason}）；在 CPU 上载入";
        FETCHING_SHARD: "fetching {shard} ({i}/{n})", "正在获取 {shard}（{i}/{n}）";
        SOFTWARE_ADAPTER: "the only WebGPU adapter is {what}: the CPU path is faster", "唯一的 WebGPU 适配器是{what}：CPU 路径更快";
        SOFTWARE_EMULATION: "a software emulation", "软件模拟";
        NAMED_SOFTWARE_EMULATION: "{name}, a software emulation", "{name}（软件模拟）";

        TYPE_URL_FIRST: "type the URL of a model folder first", "请先输入模型文件夹的网址";
        NOT_A_WHOLE_NUMBER: "{what}: `{value}` is not a whole number", "{what}：“{value}”不是整数";
        FIELD_TOP_K: "top K", "最高 K";
        FIELD_RANDOM_K: "random K", "随机 K";
        FIELD_SEED: "seed", "种子";
        FIELD_DEPTHS: "depths", "深度数";
        DEFAULT_HAYSTACK_FAILED: "the default haystack could not be fetched: {error}", "无法获取默认的干草堆：{error}";
        WORKER_UNREADABLE: "a message from the worker could not be read: {error}", "无法读取后台线程的消息：{error}";
        WORKER_FAILED: "the model's worker failed: {error}", "模型的后台线程出错：{error}";
        WORKER_CRASHED: "the model's worker crashed: {error}", "模型的后台线程崩溃了：{error}";
        WORKER_RESTARTED: "{message}\nThe worker was restarted; the model is loading again.", "{message}\n后台线程已重启，模型正在重新载入。";
        DROPPED_FILES: "the dropped files: {error}", "拖入的文件：{error}";
        NO_FILES_CHOSEN: "no file was chosen", "没有选择文件";
        SESSION_TOO_LARGE: "this file is {mb} MB: a saved session is at most {max} MB", "这个文件有 {mb} MB：保存的会话最多 {max} MB";
        STEP_NEEDS_SCORES: "this step works with the head scores of an unmasked sweep: run step 1's sweep first (press Run), then load this step again",
            "这一步要用未屏蔽扫描的头得分：先运行第 1 步的扫描（按“运行”），再重新载入这一步";
        HAYSTACK_NOT_YET: "the default haystack has not arrived yet: load the step again in a moment", "默认的干草堆还没有下载完：稍后再载入这一步";
        NO_WEBGPU_IN_WORKERS: "this browser offers no WebGPU to workers: choose the CPU path", "这个浏览器不向后台线程提供 WebGPU：请选择 CPU 路径";
        ERROR_IN: "{context}: {message}", "{context}：{message}";
        CONTEXT_READING_MESSAGE: "reading the page's message", "读取页面消息时";
        CONTEXT_STARTING: "starting", "开始时";
        CONTEXT_LOADING: "loading the model", "载入模型时";
        CONTEXT_SWEEP: "running the sweep", "运行扫描时";
        CONTEXT_RERUN: "rerunning the test", "重新运行测试时";
        CONTEXT_HEAD_VIEW: "showing head {head}", "显示头 {head} 时";
        REPEATED_RUNNING: "scoring every head on repeated random tokens…", "正在用重复的随机词元给每个头打分…";
        REPEATED_DONE: "data-free scores ready ({period} random tokens repeated four times)", "无需数据的分数已就绪（{period} 个随机词元重复四次）";
        DATA_FREE_TITLE: "{kind} scores (data-free): {model}", "{kind} 分数（无需数据）：{model}";
        DATA_FREE_PENDING: "the {kind} score is computed on repeated random tokens once the model is free", "模型空闲后会在重复的随机词元上计算 {kind} 分数";
        SCORE_NOT_MEASURED: "this run did not measure the {kind} score: tick \"soft + qr scores\" and run the sweep again", "这次运行没有测量 {kind} 分数：勾选“soft + qr 分数”后重新运行扫描";
        COT_RUNNING: "chain-of-thought demo: answering…", "思维链演示：正在回答…";
        COT_FINISHED: "chain-of-thought demo finished", "思维链演示完成";
        COT_CANCELLED: "chain-of-thought demo cancelled", "思维链演示已取消";
        KV_RUNNING: "running the test with the whole KV cache and with the smaller one…", "正在用完整的 KV 缓存和较小的缓存分别运行测试…";
        KV_WHOLE: "whole KV cache", "完整的 KV 缓存";
        KV_PLAN: "{full} of {total} KV heads whole, the rest {sink} + {window} positions", "{total} 个 KV 头中 {full} 个完整，其余保留 {sink} + {window} 个位置";
        KV_SAVED: "KV memory at {positions} positions: {plan} KiB instead of {whole} KiB ({saved} % saved)", "{positions} 个位置时的 KV 内存：{plan} KiB，而不是 {whole} KiB（节省 {saved} %）";
        COT_INFO: "{done} of {total} answers ({tasks} tasks, each asked directly and step by step); masked: {masks}", "已回答 {total} 个中的 {done} 个（{tasks} 个任务，每个都直接回答并逐步推理回答）；屏蔽：{masks}";
        SCORES_KIND_TITLE: "{title} · {kind}", "{title} · {kind}";
        COT_ANSWER_ID: "{id} · {mode} · {mask} ", "{id} · {mode} · {mask} ";
        COT_DIRECT: "answer only", "只给答案";
        COT_STEP: "step by step", "逐步推理";
        COT_CELL: "{right}/{n} right ({pct} %)", "{right}/{n} 正确（{pct} %）";
        COT_EXPECTED: "(expected: {answer})", "（应为：{answer}）";
        FIELD_KV_SINK: "the KV sink", "KV 汇聚位置数";
        FIELD_KV_WINDOW: "the KV window", "KV 窗口";
        FIELD_COT_COUNT: "the number of tasks", "任务数量";
        CONTEXT_REPEATED: "scoring the heads on repeated random tokens", "在重复的随机词元上给头打分时";
        CONTEXT_COT: "running the chain-of-thought demo", "运行思维链演示时";
        CONTEXT_KV: "rerunning the test with a smaller KV cache", "用更小的 KV 缓存重新运行测试时";
        WORKER_BUSY: "the worker is still busy with the previous request: wait for it or cancel it", "后台线程仍在处理上一个请求：请等待或取消";
        NO_HEADS_MASKED: "no heads are masked: Shift+click heads in the heatmap, or use mask top-K / random-K", "没有屏蔽任何头：在热图中按住 Shift 点击头，或使用“屏蔽最高 K 个”/“随机 K 个”";
        NO_MODEL_YET: "no model is loaded yet", "还没有载入模型";
        LOAD_MODEL_FIRST: "load a model first", "请先载入模型";
        LOAD_MODEL_BEFORE_MASKING: "load a model before masking heads", "屏蔽头之前请先载入模型";
        BUSY_FOR_HEAD_VIEW: "the model is busy: wait for the sweep to finish (or cancel it) to see where a head looked", "模型正忙：等扫描结束（或取消它）后再查看头关注的位置";
        OTHER_MODELS_SCORES: "{error} (the heatmap shows imported scores of another model)", "{error}（热图显示的是另一个模型的导入得分）";
        NO_SCORES_TO_EXPORT: "no head scores yet: run a sweep", "还没有头得分：先运行一次扫描";
        NO_TESTS_TO_EXPORT: "no tests yet: run a sweep", "还没有测试：先运行一次扫描";
        NO_SCORES_TO_RANK: "no head scores yet: run a sweep without masked heads, or import a head-score file", "还没有头得分：先运行一次不屏蔽头的扫描，或导入一个头得分文件";
        NOTHING_SCORED: "no test has been scored yet (none reached the gate): there is nothing to rank heads by", "还没有计分的测试（没有测试达到门槛）：无法给头排序";
        SAVE_NEEDS_RESULTS: "load a model and run a sweep first", "请先载入模型并运行一次扫描";
        SAVE_WHILE_RUNNING: "a sweep is running: save the session when it has finished (or cancel it)", "扫描正在运行：结束（或取消）后再保存会话";
        NO_RESULTS_YET: "no results yet: run a sweep first", "还没有结果：先运行一次扫描";
        OPEN_NEEDS_MODEL: "load the session's model first, then open the session", "请先载入会话所用的模型，再打开会话";
        OPEN_WHILE_BUSY: "the model is busy: open the session when the sweep has finished (or cancel it)", "模型正忙：扫描结束（或取消）后再打开会话";
        LINK_UNREADABLE: "this link's experiment could not be read: {error}. The page starts with its defaults.", "无法读取这个链接里的实验：{error}。页面使用默认设置。";

        RUN_NAME: "run {n}: {what}", "第 {n} 次运行：{what}";
        RUN_SHORT: "run {n}", "第 {n} 次运行";
        RUN_UNMASKED: "no heads masked", "未屏蔽任何头";
        RUN_MASKED: "{count} heads masked ({origin}; {mode})", "屏蔽了 {count} 个头（{origin}；{mode}）";
        ORIGIN_TOP: "top-{k}", "得分最高的 {k} 个";
        ORIGIN_RANDOM: "random-{k}, seed {seed}", "随机 {k} 个，种子 {seed}";
        ORIGIN_BY_HAND: "chosen by hand", "手动选择";
        MODE_UNIFORM: "uniform", "均匀注意力";
        MODE_ZERO: "zero output", "输出置零";

        NIAH_TITLE: "needle in a haystack", "大海捞针";
        SUMMARY: "{run}: {passed} of {total} tests passed (answer recall ≥ 0.5)", "{run}：{total} 个测试中通过 {passed} 个（答案召回率 ≥ 0.5）";
        SUMMARY_SCORES: "; {tests} tests scored (recall ≥ {gate}); retrieval heads (mean > 0.1): {heads}", "；{tests} 个测试参与计分（召回率 ≥ {gate}）；检索头（平均分 > 0.1）：{heads}";
        NONE_YET: "none yet", "暂无";
        NONE: "none", "无";
        ACTIVATION_TITLE: "activation frequency", "激活频率";
        COMPARE_RUN: "{run}: {passed} of {total} passed", "{run}：{total} 个中通过 {passed} 个";
        PERCENT: " ({pct} %)", "（{pct}%）";
        COMPARE_CHANGE: " · pass rate {delta} points", " · 通过率变化 {delta} 个百分点";
        COMPARE_NO_SCORES: " · (no score change: a run has no test that reached the score gate)", " · （没有得分变化：有一次运行没有达到计分门槛的测试）";
        SCORE_CHANGE_TITLE: "score change: {a} minus {b}", "得分变化：{a} 减 {b}";
        SCORES_TITLE: "retrieval scores: {model}, {run}", "检索得分：{model}，{run}";
        SCORES_TITLE_EMPTY: "retrieval scores: {model} (no scored test yet)", "检索得分：{model}（还没有计分的测试）";
        IMPORTED: "imported: {name}", "导入：{name}";
        AXIS_LENGTH: "context length (tokens)", "上下文长度（词元）";
        AXIS_DEPTH: "needle depth", "针的深度";
        AXIS_RECALL: "recall", "召回率";
        AXIS_HEAD: "head", "头";
        AXIS_LAYER: "layer", "层";
        AXIS_ATTENTION_LAYER: "attention layer", "注意力层";
        AXIS_SCORE: "score", "得分";
        AXIS_SHARE: "share", "比例";
        AXIS_CHANGE: "change", "变化";
        HEAD_CURSOR: "head {head}", "头 {head}";
        HEAD_CURSOR_SCORE: ": retrieval score {score}", "：检索得分 {score}";
        HEAD_CURSOR_RETRIEVAL: " (a retrieval head)", "（检索头）";
        HEAD_CURSOR_MASKED: ", masked", "，已屏蔽";
        HEAD_CURSOR_KEYS: ". Enter: where it looked; Shift+Enter: mask or unmask.", "。回车：查看它关注的位置；Shift+回车：屏蔽或取消屏蔽。";
        CHARTS_FAILED: "the charts could not be drawn: {error}", "无法绘制图表：{error}";
        RERUN_FAILED: "the rerun could not be shown: {error}", "无法显示重新运行的结果：{error}";
        HAYSTACK_SIZE: "({count} characters)", "（{count} 个字符）";
        HAYSTACK_REPEATED: "Note: the haystack is {tokens} tokens, so the {longest}-token prompts repeat it about {times} times, and every sentence in it with it. A sentence that resembles the needle then stands there {times} times against the needle's once, and copying heads may follow it: a longer haystack avoids that.", "注意：干草堆只有 {tokens} 个词元，所以 {longest} 个词元的提示把它重复了大约 {times} 次，其中的每个句子也随之重复。与针相似的句子会出现 {times} 次，而针只出现一次，复制型的头可能会跟随那个句子：用更长的干草堆可以避免。";
        BADGE_LOADING: "loading…", "正在载入…";
        BADGE_NO_MODEL: "no model", "没有模型";
        BACKEND_WEBGPU: "WebGPU on {adapter}", "WebGPU，运行于{adapter}";
        BACKEND_CPU: "CPU (WebAssembly)", "CPU（WebAssembly）";
        ADAPTER_DISCRETE: "a graphics card", "独立显卡";
        ADAPTER_INTEGRATED: "the built-in graphics", "集成显卡";
        ADAPTER_VIRTUAL: "a virtual GPU", "虚拟 GPU";
        ADAPTER_CPU: "a software renderer on the CPU", "CPU 上的软件渲染器";
        ADAPTER_UNNAMED: "a GPU the browser does not name", "浏览器未具名的 GPU";
        MODEL_INFO: "{name}: {type} ({params} M parameters), {layers} layers x {heads} heads ({kv} KV heads), context {context} tokens",
            "{name}：{type}（{params} M 参数），{layers} 层 × {heads} 个头（{kv} 个 KV 头），上下文 {context} 个词元";
        MODEL_INFO_CHAT: ", has a chat template", "，带对话模板";
        NO_MODEL_LOADED: "no model loaded", "没有载入模型";
        NEEDLES_INFO: "{count} needles from {name} (the single needle above is not used)", "来自 {name} 的 {count} 根针（上面的单根针不使用）";
        IMPORT_INFO: "{name}: {layers} layers x {heads} heads, {tests} tests", "{name}：{layers} 层 × {heads} 个头，{tests} 个测试";
        PROGRESS_STARTING: "starting…", "正在开始…";
        PROGRESS_DONE: "{n} of {total} tests · {rate} tokens/s decoding", "{total} 个测试中的 {n} 个 · 解码 {rate} 词元/秒";
        PROGRESS_RUNNING: "test {i} of {total} · {rate} tokens/s decoding · {seconds} s", "第 {i} 个测试，共 {total} 个 · 解码 {rate} 词元/秒 · {seconds} 秒";
        RECALL: "recall {recall}", "召回率 {recall}";
        COMPARE_NOTHING: "nothing", "不比较";
        TABLE_RUN: "run", "运行";
        TABLE_TESTS: "tests", "测试数";
        TABLE_PASSED: "passed", "通过";
        TABLE_VS_UNMASKED: "vs. the unmasked run before", "与之前未屏蔽的运行相比";
        TABLE_RETRIEVAL_HEADS: "retrieval heads (mean > 0.1)", "检索头（平均分 > 0.1）";
        PASSED_COUNT: "{passed} ({pct} %)", "{passed}（{pct}%）";
        POINTS: "{delta} points", "{delta} 个百分点";
        MASKED_RUN: "(masked run)", "（屏蔽运行）";
        WATCHING_HEAD: "running the test again, watching head {head}…", "正在重新运行测试，观察头 {head}…";
        HEAD_VIEW_INFO: "Head {head} on test {test}: for each generated token, the context around the position its attention peaked at (needle in green, the answer span darker, the peak outlined) and its attention over the whole {context}-token context (needle band in green). {hits} of {steps} steps copied an answer token.",
            "头 {head} 在测试 {test} 上：每个生成的词元一行，显示它注意力峰值所在位置周围的上下文（针为绿色，答案片段更深，峰值加框），以及它在整个 {context} 个词元的上下文上的注意力（针所在的带为绿色）。{steps} 步中有 {hits} 步抄写了答案词元。";
        HEAD_TABLE_STEP: "step", "步";
        HEAD_TABLE_TOKEN: "token", "词元";
        HEAD_TABLE_PEAK: "peak at", "峰值位置";
        HEAD_TABLE_WEIGHT: "weight", "权重";
        HEAD_TABLE_CONTEXT: "context around the peak", "峰值周围的上下文";
        HEAD_TABLE_ATTENTION: "attention over the context", "在上下文上的注意力";
        RERUNNING: "running the test without and with the mask…", "正在分别不加屏蔽和加屏蔽运行测试…";
        BEFORE_MASK: "Before (no heads masked)", "之前（未屏蔽任何头）";
        AFTER_MASK: "After: {count} heads masked", "之后：屏蔽了 {count} 个头";
        INTERNAL_ERROR: "internal error: {info}. Reload the page to start over.", "内部错误：{info}。请重新载入页面。";
        WORKER_RESTART_FAILED: "the worker could not be restarted: {error}", "无法重启后台线程：{error}";
        LINK_OPENED: "opened the experiment of the link: press Run to run it", "已打开链接中的实验：按“运行”来运行它";
        LINK_COPIED: "link copied (also in the address bar): it opens this experiment on any machine", "链接已复制（地址栏里也有）：它在任何电脑上都能打开这个实验";
        LINK_COPIED_NO_HAYSTACK: "link copied (also in the address bar). The haystack is longer than {chars} characters, too long for a link: it opens with the page's default haystack",
            "链接已复制（地址栏里也有）。干草堆超过 {chars} 个字符，放不进链接：打开时使用页面默认的干草堆";
        FIELD_NEW_TOKENS: "new tokens", "新词元数";
        CHOSEN_FILES: "chosen files", "所选文件";
        LESSON_COUNT: "step {i} of {n}", "第 {i} 步，共 {n} 步";
        LESSON_TRY: "Try: ", "试一试：";
        LESSON_QUESTION: "Question: ", "问题：";
        NO_ANSWER: "(no answer)", "（没有回答）";
    }
}

/// `text` in `lang` where it is one of the table's messages without slots as another part of the
/// program wrote it in English (the worker, which does not know the page's language); else as it is.
pub fn reword(text: &str, lang: Lang) -> String {
    msg::MESSAGES
        .iter()
        .find(|(_, m)| m.en == text && !m.en.contains('{'))
        .map_or_else(|| text.to_string(), |(_, m)| m.get(lang).to_string())
}

/// The text of `key` in `lang`.
pub fn lookup(key: &str, lang: Lang) -> Option<&'static str> {
    UI.iter().find(|(k, _)| *k == key).map(|(_, text)| text.get(lang))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn markup() -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/index.html");
        std::fs::read_to_string(path).unwrap()
    }

    /// The text of the element whose start tag ends at `at` (up to the next tag).
    fn text_after(html: &str, at: usize) -> String {
        let rest = &html[at + 1..];
        rest[..rest.find('<').unwrap_or(rest.len())].split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn every_marked_string_is_in_the_table_in_english_as_the_markup_has_it() {
        let html = markup();
        let mut used = BTreeSet::new();
        for (i, _) in html.match_indices("data-i18n") {
            let rest = &html[i + "data-i18n".len()..];
            let (attr, rest) = rest.split_once("=\"").unwrap();
            let key = &rest[..rest.find('"').unwrap()];
            let text = lookup(key, Lang::En).unwrap_or_else(|| panic!("{key} is not in the table"));
            let tag_start = html[..i].rfind('<').unwrap();
            let tag_end = i + html[i..].find('>').unwrap();
            let tag = &html[tag_start..tag_end];
            let shown = match attr.strip_prefix('-') {
                None => text_after(&html, tag_end),
                Some(name) => {
                    let v = &tag[tag.find(&format!(" {name}=\"")).unwrap_or_else(|| panic!("{key}: no {name}")) + name.len() + 3..];
                    v[..v.find('"').unwrap()].split_whitespace().collect::<Vec<_>>().join(" ")
                }
            };
            assert_eq!(shown, text.split_whitespace().collect::<Vec<_>>().join(" "), "{key}");
            used.insert(key.to_string());
        }
        let unused: Vec<_> = UI.iter().map(|(k, _)| *k).filter(|k| !used.contains(*k)).collect();
        assert!(unused.is_empty(), "in the table, not on the page: {unused:?}");
        let keys: BTreeSet<_> = UI.iter().map(|(k, _)| k).collect();
        assert_eq!(keys.len(), UI.len(), "a key is in the table twice");
    }

    /// The `{name}` slots of a message.
    fn slots(text: &str) -> BTreeSet<String> {
        text.split('{').skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string())).collect()
    }

    #[test]
    fn every_message_is_translated_with_the_same_slots() {
        let chinese = |c: char| ('\u{4e00}'..='\u{9fff}').contains(&c);
        let mut names = BTreeSet::new();
        for (name, text) in msg::MESSAGES {
            assert!(names.insert(*name), "{name} twice");
            assert_eq!(slots(text.en), slots(text.zh), "{name}: the two languages fill different slots");
            // A message that is only a number, a percent or a name in slots reads the same in both.
            let only_slots = text.en.chars().filter(|c| c.is_alphabetic()).count() == slots(text.en).iter().map(|s| s.len()).sum::<usize>();
            let full_width = text.zh.chars().any(|c| ('\u{ff00}'..='\u{ffef}').contains(&c));
            assert!(only_slots || text.zh.chars().any(chinese) || full_width, "{name} is not translated: {}", text.zh);
        }
        let filled = msg::RUNNING_MASKED.fill(Lang::Zh, &[("total", &15), ("masked", &"3")]);
        assert_eq!(filled, "正在运行 15 个测试，屏蔽了 3 个头");
        assert_eq!(msg::RUNNING.fill(Lang::En, &[("total", &2)]), "running 2 tests");
        assert_eq!(reword(msg::NO_MODEL_YET.en, Lang::Zh), msg::NO_MODEL_YET.zh);
        assert_eq!(reword("a parser's own words", Lang::Zh), "a parser's own words");
    }

    /// The string literals of `code` (plain `"..."` ones), with their line numbers.
    fn literals(code: &str) -> Vec<(usize, String)> {
        let mut out = vec![];
        let (mut line, mut chars) = (1, code.chars().peekable());
        let mut comment = false;
        while let Some(c) = chars.next() {
            match c {
                '\n' => {
                    line += 1;
                    comment = false;
                }
                '/' if chars.peek() == Some(&'/') => comment = true,
                '\'' if !comment => {
                    // A char literal ('"', '\\'), or a lifetime: skip what a char literal holds.
                    let rest: String = chars.clone().take(3).collect();
                    if rest.starts_with("\\") && rest.len() == 3 {
                        chars.nth(2);
                    } else if rest.chars().nth(1) == Some('\'') {
                        chars.nth(1);
                    }
                }
                '"' if !comment => {
                    let mut lit = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => {
                                chars.next();
                            }
                            '"' => break,
                            '\n' => {
                                line += 1;
                                lit.push(c)
                            }
                            _ => lit.push(c),
                        }
                    }
                    out.push((line, lit));
                }
                _ => {}
            }
        }
        out
    }

    /// No code file of the page writes English text into the page but through [`msg`]: every string
    /// literal with a word and a space in it is a console message, a CSS class list or a name.
    #[test]
    fn the_page_code_shows_no_text_outside_the_table() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        // CSS class lists, and a browser fault no working browser shows (a canvas without a 2-D context).
        let not_shown = ["badge gpu", "badge cpu", "needle ", "answer ", "the canvas has no 2-D context"];
        let mut offenders = vec![];
        for file in ["app.rs", "render/mod.rs", "render/charts.rs", "render/results.rs"] {
            let code = std::fs::read_to_string(src.join(file)).unwrap();
            let code = &code[..code.find("#[cfg(test)]").unwrap_or(code.len())];
            let lines: Vec<&str> = code.lines().collect();
            for (n, lit) in literals(code) {
                let near = |l: &str| l.contains("console::") || l.contains("js_error") || l.contains("expect(");
                let console = lines[n.saturating_sub(3)..n.min(lines.len())].iter().any(|l| near(l));
                let words = lit.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| w.len() >= 3).count();
                if words > 0 && lit.contains(' ') && !console && !not_shown.contains(&lit.as_str()) {
                    offenders.push(format!("{file}:{n}: {lit:?}"));
                }
            }
        }
        assert!(offenders.is_empty(), "text shown outside the table:\n{}", offenders.join("\n"));
    }

    #[test]
    fn the_chinese_page_has_no_untranslated_string() {
        for (key, text) in UI {
            assert!(!text.zh.trim().is_empty(), "{key} has no Chinese");
            // Chinese characters, or Chinese (full-width) punctuation around a name that stays as it is.
            let chinese = |c: char| {
                ('\u{4e00}'..='\u{9fff}').contains(&c) || ('\u{3000}'..='\u{303f}').contains(&c) || ('\u{ff00}'..='\u{ffef}').contains(&c)
            };
            assert!(text.zh != text.en && text.zh.chars().any(chinese), "{key} is not translated: {}", text.zh);
        }
        // Every text the markup shows is marked, but for names, file names and symbols, which read the
        // same in both languages, and the texts the page writes itself (filled in before they show).
        let html = markup();
        let body = &html[html.find("<body").unwrap()..];
        let same_in_both = [
            "HeadScope lab",
            "×",
            "K",
            "head_scores.json",
            "tests.jsonl",
            "niah.png",
            "heads.png",
            "activation.png",
            "Wu et al. (2024)",
            "Wu et al., Retrieval Head Mechanistically Explains Long-Context Factuality (2024)",
            "English",
            "简体中文",
            ".",
        ];
        let written_by_the_page = ["starting…", "step 1 of 7", "Lesson", "none", "128"];
        let mut untranslated = vec![];
        let mut rest = body;
        while let Some(open) = rest.find('<') {
            let close = open + rest[open..].find('>').unwrap();
            let tag = &rest[open..close];
            let after = &rest[close + 1..];
            let text = after[..after.find('<').unwrap_or(after.len())].split_whitespace().collect::<Vec<_>>().join(" ");
            let marked = tag.contains("data-i18n=\"");
            // The needle fields' default values are the experiment, not the interface.
            let content = tag.starts_with("<textarea id=\"needle\"");
            if !text.is_empty()
                && !marked
                && !content
                && !same_in_both.contains(&text.as_str())
                && !written_by_the_page.contains(&text.as_str())
            {
                untranslated.push(text);
            }
            rest = &rest[close + 1..];
        }
        assert!(untranslated.is_empty(), "shown but not in the table: {untranslated:?}");
        assert_eq!(Lang::parse("zh-CN"), Some(Lang::Zh));
        assert_eq!(Lang::parse("en-GB"), Some(Lang::En));
        assert_eq!(Lang::parse("fr"), None);
    }
}
