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
    ("model.drop", t("You can also drop a model folder's files here (config.json, *.safetensors, tokenizer.json)", "也可以把模型文件夹里的文件拖到这里（config.json、*.safetensors、tokenizer.json）")),
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
    ("files.h", t("6. Export and import", "6. 导出与导入")),
    ("files.save", t("Save the session…", "保存这次会话…")),
    ("files.save.title", t("every run of this session with its results, and the inputs, in one file", "把这次会话的每次运行、结果和输入存进一个文件")),
    ("files.open", t("Open a saved session…", "打开保存的会话…")),
    ("files.import", t("Import head scores (official JSON)…", "导入头分数（官方 JSON 格式）…")),
    ("footer", t("HeadScope: retrieval heads, measured. The model runs in your browser; nothing is uploaded.", "HeadScope：检索头，量出来看。模型在你的浏览器里运行，什么都不会上传。")),
];

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
        let written_by_the_page = ["starting…", "step 1 of 7", "Lesson", "none"];
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
