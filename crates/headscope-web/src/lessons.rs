//! The guided track: the paper's argument as steps a class walks through in the page. Each step says
//! what to look at and why, loads a preset (the inputs it needs), names one thing to try and asks one
//! question the page's own results answer. The glossary explains every term the page uses.
//!
//! Plain data and one pure function ([`Preset::apply_to`]), so that the steps are checked natively: the
//! page draws them and turns a preset's mask into heads ([`MaskPreset`]) with core's masking plans.

use crate::share::PageState;

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
    /// The `k` best heads of the last unmasked run (core's top-K plan).
    Top(usize),
    /// `k` random heads that are not retrieval heads, drawn with `seed` (core's random-K plan).
    Random { k: usize, seed: u64 },
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
                s.mask_mode = "uniform".into();
                s.mask_scope = "decode".into();
            }
            MaskPreset::Random { k, seed } => {
                s.random_k = k.to_string();
                s.seed = seed.to_string();
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
    pub title: &'static str,
    /// What to look at and why, a few short paragraphs.
    pub explain: &'static [&'static str],
    pub preset: Preset,
    /// What to do once the preset is loaded.
    pub try_this: &'static str,
    /// A question the page's results answer.
    pub question: &'static str,
}

/// The steps, in order: the paper's sections 2-4 as a class period.
pub const STEPS: &[Step] = &[
    Step {
        title: "A needle in a haystack",
        explain: &[
            "A language model reads a long text (the haystack) in which one sentence (the needle) holds a fact. \
             Then it is asked a question only the needle answers. This is a needle-in-a-haystack (NIAH) test.",
            "The page builds one test for every context length and needle depth: depth 0 % puts the needle at the \
             start, 100 % at the end. The model answers greedily, one token at a time.",
            "An answer is scored by its recall: the share of the expected answer's words that it contains \
             (ROUGE-1 recall). A test passes at 0.5 or more.",
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
        try_this: "Press \"Run the sweep\" and watch the grid fill in: 3 lengths x 5 depths = 15 tests.",
        question: "Where did the model find the needle? Click a red cell of the grid (or a failed test in the list): \
                   what did the model say instead?",
    },
    Step {
        title: "Retrieval heads: the score of each head",
        explain: &[
            "Every attention head looks back over the context at each step. When the model writes an answer token, \
             a retrieval head looks hardest (its attention's maximum) at the same token inside the needle: it copies it.",
            "The retrieval score of a head (the paper's equation 1) is the share of the answer's tokens it copied this \
             way, averaged over the tests that passed. A head scoring above 0.1 is called a retrieval head.",
            "The heatmap shows one cell per head: layers down, heads across. Bright cells copy; dark cells do not.",
        ],
        preset: Preset { mask: MaskPreset::Clear, ..Preset::KEEP },
        try_this: "Look at the retrieval-score heatmap of the sweep you ran. Hover over nothing: just count the bright cells.",
        question: "How many heads score above 0.1, out of all of them? Is retrieval spread over the model or done by a few heads?",
    },
    Step {
        title: "Where does a retrieval head look?",
        explain: &[
            "A score is a summary. The head view shows, for each answer token the model wrote, the context position \
             a head attended to most, and whether that position holds the same token (a copy).",
            "A retrieval head walks through the needle: each step it looks one token further along the answer.",
        ],
        preset: Preset { select_best_head: true, ..Preset::KEEP },
        try_this: "The view of the best-scoring head is open below the results. Then click a dark head in the heatmap and compare.",
        question: "Does the best head look at the answer's tokens one after another? Where does a dark head look instead?",
    },
    Step {
        title: "Many needles: how often a head takes part",
        explain: &[
            "One needle is one experiment. The paper runs many needles and finds that retrieval heads are not always \
             active: a head may copy in some tests and not in others (dynamic activation).",
            "The activation frequency of a head is the share of passed tests in which it copied at least one token. \
             Compare it with the retrieval score: a head can take part often but copy little each time.",
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
        try_this: "The held-out needles are loaded as a batch (needles the model never trained on). Run the sweep.",
        question: "Which needles did the model find? Are the heads that copy the same as for the San Francisco needle? \
                   Find a head whose activation frequency is high but whose score is low.",
    },
    Step {
        title: "Masking: are retrieval heads the cause?",
        explain: &[
            "A high score shows that a head copies, not that the answer needs it. To test the cause, mask the head: \
             its query is set to zero, so it attends evenly to every position and carries no information about where \
             the needle is (the paper's masking). Then run the same tests again.",
            "The control is to mask as many random heads that are not retrieval heads. If the answer falls apart only \
             when the retrieval heads are masked, they are what finds the needle.",
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
        try_this: "The 3 best heads of your last unmasked run are masked. Press \"Run the sweep with these heads masked\". \
                   Then press \"Mask K random non-retrieval heads\" (K 3) and run the masked sweep again.",
        question: "Compare the three runs in the run table: how did the pass rate change with the top-3 heads masked, \
                   and with 3 random heads masked? Read a masked answer: is it broken text, or fluent and wrong?",
    },
    Step {
        title: "When retrieval fails",
        explain: &[
            "The paper sorts failures into kinds. Incomplete retrieval: the model copies the start of the answer and \
             drifts. Hallucination: a fluent answer that copies nothing from the needle. And the attention sink: heads \
             with nothing to copy park their attention on the first token of the context.",
            "Longer contexts make retrieval harder for a small model: there is more to look through, and the heads \
             must pick the needle out of thousands of positions.",
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
        try_this: "Run the held-out needles at 4096 tokens, eight times the length of step 4. Open a failed test and \
                   the view of a retrieval head for it.",
        question: "Which kind of failure do you see in each failed test? Where does the retrieval head look when the \
                   answer is wrong: the needle, another sentence, or position 0 (the sink)?",
    },
    Step {
        title: "Real models: the same few heads",
        explain: &[
            "The paper finds retrieval heads in every model family it tests (Llama, Mistral, Qwen, Yi, and more): \
             fewer than 5 % of the heads, in the same places after fine-tuning or longer-context training (universal \
             and intrinsic).",
            "Researchers publish the scores as head-score files: for every head (\"layer-head\"), its score in each test. \
             The page opens such a file and draws it like its own results. HeadScope's command-line tool computes \
             them for full-size models on a GPU.",
        ],
        preset: Preset::KEEP,
        try_this: "Import a head-score file (section 6: \"Import head scores\"), for example one of the paper's \
                   head_score/*.json files or one you exported from this page.",
        question: "How many heads of the imported model score above 0.1? In which layers do they sit: early, middle or late?",
    },
];

/// A term the page uses and what it means, for the glossary.
pub const GLOSSARY: &[(&str, &str)] = &[
    ("Needle", "The sentence hidden in the haystack. Its answer is the part the question asks for."),
    ("Haystack", "The long text the needle is hidden in. Any text works; the model has never seen the question's answer in it."),
    ("Token", "The unit a model reads and writes: a word or a piece of one. Lengths are counted in tokens."),
    ("Context length", "How many tokens the whole prompt has (haystack, needle and question). \"256:1024:3\" means 3 lengths evenly spaced from 256 to 1024."),
    ("Depth", "Where the needle sits in the haystack: 0 % at the start, 100 % at the end. \"5\" depths means 0, 25, 50, 75 and 100 %."),
    ("Recall (ROUGE-1)", "The share of the expected answer's words found in the model's answer: 1 is all of them."),
    ("Score gate", "Only tests whose answer reaches this recall count towards the head scores (the paper uses passed tests)."),
    ("Attention head", "One of the model's many parallel lookups: at each step it weighs every earlier position and reads a mix of them."),
    ("Retrieval score", "Equation 1 of the paper: the share of answer tokens a head copied, i.e. it attended most to the same token inside the needle when the model wrote it."),
    ("Retrieval head", "A head whose retrieval score is above 0.1. The paper finds fewer than 5 % of heads are."),
    ("Activation frequency", "The share of passed tests in which a head copied at least one answer token."),
    ("Masking", "Switching a head off: \"uniform\" zeroes its query so it attends evenly everywhere (the paper's way); \"zero output\" removes what it writes."),
    ("Top-K and random-K", "Mask the K best-scoring heads, or K random heads that are not retrieval heads (the control), drawn with a seed so anyone can repeat it."),
    ("Decode scope", "Masking during the answer's tokens only (the paper), or also while the model reads the prompt (everywhere)."),
    ("Plain prompt", "Haystack and question as plain text. Chat models may expect their chat template instead; the lab model has none."),
    ("Attention sink", "The first position of the context, where heads with nothing to look at put their attention."),
    ("GQA", "Grouped-query attention: several query heads share one key/value head. Scores are per query head."),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_complete_and_fits_a_panel() {
        assert!(STEPS.len() >= 6);
        for (i, s) in STEPS.iter().enumerate() {
            assert!(!s.title.is_empty() && !s.explain.is_empty() && !s.try_this.is_empty(), "step {i}");
            assert!(s.question.contains('?'), "step {i} asks a question");
            let words: usize = s.explain.iter().map(|p| p.split_whitespace().count()).sum();
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
            assert!(GLOSSARY.iter().any(|(t, _)| t.starts_with(term)), "{term}");
        }
    }
}
