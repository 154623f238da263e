//! The guided track: the paper's argument as steps a class walks through in the page. Each step says
//! what to look at and why, loads a preset (the inputs it needs), names one thing to try and asks one
//! question the page's own results answer. The glossary explains every term the page uses.
//!
//! Plain data and one pure function ([`Preset::apply_to`]), so that the steps are checked natively: the
//! page draws them and turns a preset's mask into heads ([`MaskPreset`]) with core's masking plans.

use crate::share::PageState;
use crate::strings::{t, Text};

/// Wu et al., "Retrieval Head Mechanistically Explains Long-Context Factuality" (2024).
pub const PAPER_URL: &str = "https://arxiv.org/abs/2404.15574";

/// The needle every lesson starts from: the San Francisco needle of the long-context tests.
pub const SF_NEEDLE: (&str, &str, &str) = (
    "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.",
    "What is the best thing to do in San Francisco?",
    "eat a sandwich and sit in Dolores Park on a sunny day",
);

/// Which heads a step masks when it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskPreset {
    /// The masks stay as they are.
    Keep,
    /// No head is masked.
    Clear,
    /// The `k` best heads of the last unmasked run (core's top-K plan); the random-K control is set
    /// to the same `k`.
    Top(usize),
}

/// The needles a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedlePreset {
    /// The needle, question and answer fields stay as they are.
    Keep,
    /// The San Francisco needle in the fields, no batch.
    SanFrancisco,
    /// The page's held-out needles as a batch.
    HeldOut,
}

/// The inputs a step loads; `None` and `Keep` leave a field as the student left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub needles: NeedlePreset,
    /// Put the page's default haystack back.
    pub default_haystack: bool,
    pub lengths: Option<&'static str>,
    pub depths: Option<&'static str>,
    pub max_new: Option<&'static str>,
    pub mask: MaskPreset,
    /// Show the view of the head with the best score.
    pub select_best_head: bool,
}

impl Preset {
    const KEEP: Preset = Preset {
        needles: NeedlePreset::Keep,
        default_haystack: false,
        lengths: None,
        depths: None,
        max_new: None,
        mask: MaskPreset::Keep,
        select_best_head: false,
    };

    /// The page's inputs after loading this preset over `state` (the masks are the page's to draw:
    /// they need the last run's scores; `Clear` empties them here).
    pub fn apply_to(&self, state: &PageState) -> PageState {
        let mut s = state.clone();
        if self.needles == NeedlePreset::SanFrancisco {
            (s.needle, s.question, s.answer) = (SF_NEEDLE.0.into(), SF_NEEDLE.1.into(), SF_NEEDLE.2.into());
        }
        if self.default_haystack {
            s.haystack = None;
        }
        for (field, value) in [(&mut s.lengths, self.lengths), (&mut s.depths, self.depths), (&mut s.max_new, self.max_new)] {
            if let Some(v) = value {
                *field = v.into();
            }
        }
        match self.mask {
            MaskPreset::Keep => {}
            MaskPreset::Clear => {
                s.masked.clear();
                s.mask_origin.clear();
            }
            MaskPreset::Top(k) => {
                s.mask_k = k.to_string();
                s.random_k = k.to_string();
                s.mask_mode = "uniform".into();
                s.mask_scope = "decode".into();
            }
        }
        s
    }
}

/// One step of the track.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub title: Text,
    /// What to look at and why, a few short paragraphs.
    pub explain: &'static [Text],
    pub preset: Preset,
    /// What to do once the preset is loaded.
    pub try_this: Text,
    /// A question the page's results answer.
    pub question: Text,
}

/// The steps, in order: the paper's sections 2-4 as a class period.
pub const STEPS: &[Step] = &[
    Step {
        title: t("A needle in a haystack", "大海捞针"),
        explain: &[
            t("A language model reads a long text (the haystack) in which one sentence (the needle) holds a fact. \
             Then it is asked a question only the needle answers. This is a needle-in-a-haystack (NIAH) test.", "语言模型读一篇长文（干草堆），其中有一句话（针）藏着一个事实。然后问它一个只有这根针能回答的问题。这就是“大海捞针”（NIAH）测试。"),
            t("The page builds one test for every context length and needle depth: depth 0 % puts the needle at the \
             start, 100 % at the end. The model answers greedily, one token at a time.", "页面为每个上下文长度和每个针的深度各建一个测试：深度 0 % 把针放在开头，100 % 放在结尾。模型逐个词元地贪心作答。"),
            t("An answer is scored by its recall: the share of the expected answer's words that it contains \
             (ROUGE-1 recall). A test passes at 0.5 or more.", "答案按召回率计分：它包含了预期答案中多大比例的词（ROUGE-1 召回率）。达到 0.5 或以上就算通过。"),
        ],
        preset: Preset {
            needles: NeedlePreset::SanFrancisco,
            default_haystack: true,
            lengths: Some("256:1024:3"),
            depths: Some("5"),
            max_new: Some("32"),
            mask: MaskPreset::Clear,
            ..Preset::KEEP
        },
        try_this: t("Press \"Run the sweep\" and watch the grid fill in: 3 lengths x 5 depths = 15 tests.", "按“运行测试”，看网格一格格填满：3 个长度 × 5 个深度 = 15 个测试。"),
        question: t("Where did the model find the needle? Click a red cell of the grid (or a failed test in the list): \
                   what did the model say instead?", "模型在哪些地方找到了针？点击网格里的红色格子（或列表里失败的测试）：模型说了什么？"),
    },
    Step {
        title: t("Retrieval heads: the score of each head", "检索头：每个头的分数"),
        explain: &[
            t("Every attention head looks back over the context at each step. When the model writes an answer token, \
             a retrieval head looks hardest (its attention's maximum) at the same token inside the needle: it copies it.", "每一步，每个注意力头都会回看整个上下文。当模型写出一个答案词元时，检索头最用力地看（注意力的最大值）针里的同一个词元：它在抄写。"),
            t("The retrieval score of a head (the paper's equation 1) is the share of the answer's tokens it copied this \
             way, averaged over the tests that passed. A head scoring above 0.1 is called a retrieval head.", "一个头的检索分数（论文的公式 1）是它这样抄写的答案词元所占的比例，在通过的测试上取平均。分数高于 0.1 的头叫作检索头。"),
            t("The heatmap shows one cell per head: layers down, heads across. Bright cells copy; dark cells do not.", "热力图里每个头一个格子：纵向是层，横向是头。亮的格子在抄写，暗的格子没有。"),
        ],
        preset: Preset { mask: MaskPreset::Clear, ..Preset::KEEP },
        try_this: t("Look at the retrieval-score heatmap of the sweep you ran. Hover over nothing: just count the bright cells.", "看看你刚才那次测试的检索分数热力图。什么都不用点：数一数亮的格子。"),
        question: t("How many heads score above 0.1, out of all of them? Is retrieval spread over the model or done by a few heads?", "所有头里有几个分数高于 0.1？检索是分散在整个模型里，还是由少数几个头完成的？"),
    },
    Step {
        title: t("Where does a retrieval head look?", "检索头看向哪里？"),
        explain: &[
            t("A score is a summary. The head view shows, for each answer token the model wrote, the context position \
             a head attended to most, and whether that position holds the same token (a copy).", "分数只是一个总结。头视图显示：模型每写一个答案词元，这个头最关注上下文中的哪个位置，以及那个位置是否是同一个词元（即抄写）。"),
            t("A retrieval head walks through the needle: each step it looks one token further along the answer.", "检索头会沿着针一步步走：每一步它都看向答案中的下一个词元。"),
        ],
        preset: Preset { select_best_head: true, ..Preset::KEEP },
        try_this: t("The view of the best-scoring head is open below the results. Then click a dark head in the heatmap and compare.", "分数最高的头的视图已在结果下方打开。然后在热力图里点击一个暗的头，比较一下。"),
        question: t("Does the best head look at the answer's tokens one after another? Where does a dark head look instead?", "最好的那个头是不是一个接一个地看答案的词元？暗的头又看向哪里？"),
    },
    Step {
        title: t("Many needles: how often a head takes part", "很多根针：一个头多常参与"),
        explain: &[
            t("One needle is one experiment. The paper runs many needles and finds that retrieval heads are not always \
             active: a head may copy in some tests and not in others (dynamic activation).", "一根针只是一次实验。论文用了很多根针，发现检索头并不总是活跃：一个头可能在某些测试里抄写，在另一些里不抄（动态激活）。"),
            t("The activation frequency of a head is the share of passed tests in which it copied at least one token. \
             Compare it with the retrieval score: a head can take part often but copy little each time.", "一个头的激活频率，是在通过的测试中它至少抄写了一个词元的比例。把它和检索分数比较：一个头可能经常参与，但每次只抄一点。"),
        ],
        preset: Preset {
            needles: NeedlePreset::HeldOut,
            default_haystack: true,
            lengths: Some("512"),
            depths: Some("3"),
            max_new: Some("32"),
            mask: MaskPreset::Clear,
            ..Preset::KEEP
        },
        try_this: t("The held-out needles are loaded as a batch (needles the model never trained on). Run the sweep.", "留出的针已作为一批载入（模型训练时从没见过的针）。运行测试。"),
        question: t("Which needles did the model find? Are the heads that copy the same as for the San Francisco needle? \
                   Find a head whose activation frequency is high but whose score is low.", "模型找到了哪些针？抄写的头和旧金山那根针的一样吗？找一个激活频率高、分数却低的头。"),
    },
    Step {
        title: t("Masking: are retrieval heads the cause?", "屏蔽：检索头是原因吗？"),
        explain: &[
            t("A high score shows that a head copies, not that the answer needs it. To test the cause, mask the head: \
             its query is set to zero, so it attends evenly to every position and carries no information about where \
             the needle is (the paper's masking). Then run the same tests again.", "分数高只说明这个头在抄写，不说明答案需要它。要检验因果，就屏蔽这个头：把它的查询置零，它就会平均地关注每个位置，不再带有针在哪里的信息（论文的屏蔽方法）。然后再跑一遍同样的测试。"),
            t("The control is to mask as many random heads that are not retrieval heads. If the answer falls apart only \
             when the retrieval heads are masked, they are what finds the needle.", "对照组是屏蔽同样数量的随机非检索头。如果只有屏蔽检索头时答案才崩坏，那找到针的就是它们。"),
        ],
        preset: Preset {
            needles: NeedlePreset::SanFrancisco,
            default_haystack: true,
            lengths: Some("256:1024:3"),
            depths: Some("5"),
            max_new: Some("32"),
            mask: MaskPreset::Top(3),
            ..Preset::KEEP
        },
        try_this: t("The 3 best heads of your last unmasked run are masked. Press \"Run the sweep with these heads masked\". \
                   Then press \"Mask K random non-retrieval heads\" (K 3) and run the masked sweep again.", "你上一次未屏蔽运行中分数最高的 3 个头已被屏蔽。按“屏蔽这些头后运行测试”。然后按“随机屏蔽 K 个非检索头”（K 为 3），再运行一次屏蔽后的测试。"),
        question: t("Compare the three runs in the run table: how did the pass rate change with the top-3 heads masked, \
                   and with 3 random heads masked? Read a masked answer: is it broken text, or fluent and wrong?", "在运行表里比较这三次运行：屏蔽前 3 个头后通过率怎么变了？屏蔽 3 个随机头呢？读一个屏蔽后的答案：是支离破碎，还是流畅却错误？"),
    },
    Step {
        title: t("When retrieval fails", "检索失败的时候"),
        explain: &[
            t("The paper sorts failures into kinds. Incomplete retrieval: the model copies the start of the answer and \
             drifts. Hallucination: a fluent answer that copies nothing from the needle. And the attention sink: heads \
             with nothing to copy park their attention on the first token of the context.", "论文把失败分成几类。检索不完整：模型抄了答案的开头，然后跑偏。幻觉：一个流畅的答案，却没有从针里抄任何东西。还有注意力汇聚点：没什么可抄的头会把注意力停在上下文的第一个词元上。"),
            t("Longer contexts make retrieval harder for a small model: there is more to look through, and the heads \
             must pick the needle out of thousands of positions.", "上下文越长，小模型越难检索：要看的东西更多，头必须从成千上万个位置里挑出针来。"),
        ],
        preset: Preset {
            needles: NeedlePreset::HeldOut,
            default_haystack: true,
            lengths: Some("4096"),
            depths: Some("2"),
            max_new: Some("32"),
            mask: MaskPreset::Clear,
            ..Preset::KEEP
        },
        try_this: t("Run the held-out needles at 4096 tokens, eight times the length of step 4. Open a failed test and \
                   the view of a retrieval head for it.", "在 4096 个词元的长度上运行留出的针，是第 4 步的八倍长。打开一个失败的测试，再看一个检索头在它上面的视图。"),
        question: t("Which kind of failure do you see in each failed test? Where does the retrieval head look when the \
                   answer is wrong: the needle, another sentence, or position 0 (the sink)?", "每个失败的测试属于哪一类失败？答案错误时检索头看向哪里：针、别的句子，还是位置 0（汇聚点）？"),
    },
    Step {
        title: t("Real models: the same few heads", "真实模型：同样是少数几个头"),
        explain: &[
            t("The paper finds retrieval heads in every model family it tests (Llama, Mistral, Qwen, Yi, and more): \
             fewer than 5 % of the heads, in the same places after fine-tuning or longer-context training (universal \
             and intrinsic).", "论文在它测试的每个模型家族里都找到了检索头（Llama、Mistral、Qwen、Yi 等）：不到 5 % 的头，而且在微调或长上下文训练之后仍在同样的位置（普遍且内在）。"),
            t("Researchers publish the scores as head-score files: for every head (\"layer-head\"), its score in each test. \
             The page opens such a file and draws it like its own results. HeadScope's command-line tool computes \
             them for full-size models on a GPU.", "研究者把分数发布为头分数文件：每个头（“层-头”）在每个测试里的分数。页面能打开这样的文件，像自己的结果一样画出来。HeadScope 的命令行工具可以在 GPU 上为完整大小的模型计算它们。"),
        ],
        preset: Preset::KEEP,
        try_this: t("Import a head-score file (section 7: \"Import head scores\"), for example one of the paper's \
                   head_score/*.json files or one you exported from this page.", "导入一个头分数文件（第 7 部分：“导入头分数”），比如论文的某个 head_score/*.json 文件，或你从本页导出的文件。"),
        question: t("How many heads of the imported model score above 0.1? In which layers do they sit: early, middle or late?", "导入的模型有几个头分数高于 0.1？它们在哪些层：前面、中间还是后面？"),
    },
];

/// A term the page uses and what it means, for the glossary.
pub const GLOSSARY: &[(Text, Text)] = &[
    (t("Needle", "针"), t("The sentence hidden in the haystack. Its answer is the part the question asks for.", "藏在干草堆里的句子。它的答案就是问题要问的那部分。")),
    (t("Haystack", "干草堆"), t("The long text the needle is hidden in. Any text works; the model has never seen the question's answer in it.", "藏针的长文。什么文字都行；模型从没在里面见过问题的答案。")),
    (t("Token", "词元"), t("The unit a model reads and writes: a word or a piece of one. Lengths are counted in tokens.", "模型读写的单位：一个词或词的一部分。长度按词元计算。")),
    (t("Context length", "上下文长度"), t("How many tokens the whole prompt has (haystack, needle and question). \"256:1024:3\" means 3 lengths evenly spaced from 256 to 1024.", "整个提示（干草堆、针和问题）有多少个词元。“256:1024:3”表示从 256 到 1024 等距的 3 个长度。")),
    (t("Depth", "深度"), t("Where the needle sits in the haystack: 0 % at the start, 100 % at the end. \"5\" depths means 0, 25, 50, 75 and 100 %.", "针在干草堆里的位置：0 % 在开头，100 % 在结尾。“5”个深度就是 0、25、50、75 和 100 %。")),
    (t("Recall (ROUGE-1)", "召回率（ROUGE-1）"), t("The share of the expected answer's words found in the model's answer: 1 is all of them.", "模型的答案包含了预期答案中多大比例的词：1 表示全部都有。")),
    (t("Score gate", "计分门槛"), t("Only tests whose answer reaches this recall count towards the head scores (the paper uses passed tests).", "只有答案召回率达到这个值的测试才计入头分数（论文只用通过的测试）。")),
    (t("Attention head", "注意力头"), t("One of the model's many parallel lookups: at each step it weighs every earlier position and reads a mix of them.", "模型众多并行“查找”中的一个：每一步它给前面的每个位置打权重，读取它们的混合。")),
    (t("Retrieval score", "检索分数"), t("Equation 1 of the paper: the share of answer tokens a head copied, i.e. it attended most to the same token inside the needle when the model wrote it.", "论文的公式 1：一个头抄写的答案词元所占的比例，即模型写出某个词元时，这个头最关注的正是针里的同一个词元。")),
    (t("Retrieval head", "检索头"), t("A head whose retrieval score is above 0.1. The paper finds fewer than 5 % of heads are.", "检索分数高于 0.1 的头。论文发现这样的头不到 5 %。")),
    (t("Activation frequency", "激活频率"), t("The share of passed tests in which a head copied at least one answer token.", "在通过的测试中，一个头至少抄写了一个答案词元的比例。")),
    (t("Masking", "屏蔽"), t("Switching a head off: \"uniform\" zeroes its query so it attends evenly everywhere (the paper's way); \"zero output\" removes what it writes.", "关掉一个头：“均匀”把它的查询置零，让它平均关注所有位置（论文的做法）；“输出置零”去掉它写出的内容。")),
    (t("Top-K and random-K", "前 K 个与随机 K 个"), t("Mask the K best-scoring heads, or K random heads that are not retrieval heads (the control), drawn with a seed so anyone can repeat it.", "屏蔽分数最高的 K 个头，或者随机选 K 个非检索头（对照组），用一个随机种子抽取，任何人都能重复。")),
    (t("Decode scope", "解码范围"), t("Masking during the answer's tokens only (the paper), or also while the model reads the prompt (everywhere).", "只在答案的词元上屏蔽（论文的做法），或者在模型读提示时也屏蔽（所有位置）。")),
    (t("Plain prompt", "纯文本提示"), t("Haystack and question as plain text. Chat models may expect their chat template instead; the lab model has none.", "干草堆和问题作为纯文本。聊天模型可能需要它们的聊天模板；实验模型没有模板。")),
    (t("Attention sink", "注意力汇聚点"), t("The first position of the context, where heads with nothing to look at put their attention.", "上下文的第一个位置，没有东西可看的头会把注意力放在这里。")),
    (t("GQA", "分组查询注意力（GQA）"), t("Grouped-query attention: several query heads share one key/value head. Scores are per query head.", "几个查询头共用一个键/值头。分数按查询头计算。")),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_complete_and_fits_a_panel() {
        assert!(STEPS.len() >= 6);
        for (i, s) in STEPS.iter().enumerate() {
            assert!(!s.title.en.is_empty() && !s.explain.is_empty() && !s.try_this.en.is_empty(), "step {i}");
            assert!(s.question.en.contains('?') && s.question.zh.contains('？'), "step {i} asks a question");
            for text in [s.title, s.try_this, s.question].iter().chain(s.explain) {
                assert!(text.zh.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "step {i}: {} has no Chinese", text.en);
            }
            let words: usize = s.explain.iter().map(|p| p.en.split_whitespace().count()).sum();
            assert!(words <= 160, "step {i} explains in {words} words: too long for a side panel");
        }
        // The masking step needs an unmasked run before it, whose best heads it masks.
        let masking = STEPS.iter().position(|s| matches!(s.preset.mask, MaskPreset::Top(_))).unwrap();
        assert!(STEPS[..masking].iter().any(|s| s.preset.mask == MaskPreset::Clear && s.preset.lengths.is_some()));
    }

    #[test]
    fn a_preset_sets_what_it_names_and_keeps_the_rest() {
        let mine = PageState {
            needle: "My needle.".into(),
            question: "Mine?".into(),
            answer: "needle".into(),
            haystack: Some("my own haystack".into()),
            lengths: "300".into(),
            masked: vec!["1-1".into()],
            mask_origin: "chosen by hand".into(),
            gate: "0.7".into(),
            ..PageState::default()
        };
        let first = STEPS[0].preset.apply_to(&mine);
        assert_eq!((first.needle.as_str(), first.answer.as_str()), (SF_NEEDLE.0, SF_NEEDLE.2));
        assert_eq!((first.haystack.clone(), first.lengths.as_str(), first.depths.as_str()), (None, "256:1024:3", "5"));
        assert!(first.masked.is_empty() && first.mask_origin.is_empty());
        assert_eq!(first.gate, "0.7", "a field the preset does not name is kept");
        let kept = Preset::KEEP.apply_to(&mine);
        assert_eq!(kept, mine);
        let top = Preset { mask: MaskPreset::Top(3), ..Preset::KEEP }.apply_to(&mine);
        assert_eq!((top.mask_k.as_str(), top.mask_mode.as_str(), top.mask_scope.as_str()), ("3", "uniform", "decode"));
        assert_eq!(top.random_k, "3", "the random control masks as many heads");
        // Every preset's lengths and depths are ones the page accepts.
        for s in STEPS {
            if let Some(l) = s.preset.lengths {
                assert!(headscope_core::sweep::parse_lengths(l).is_ok(), "{l}");
            }
        }
    }

    #[test]
    fn the_glossary_explains_the_pages_terms() {
        for term in ["Depth", "Recall", "Score gate", "Retrieval score", "Masking", "Plain prompt", "Decode scope"] {
            assert!(GLOSSARY.iter().any(|(t, _)| t.en.starts_with(term)), "{term}");
        }
        for (term, meaning) in GLOSSARY {
            assert!(!term.zh.is_empty() && meaning.zh.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)), "{}", term.en);
        }
    }
}
