//! The lab model's trainer (`headscope train`): trains from a recipe. Data: public-domain text as plain language
//! modelling, mixed with generated retrieval exercises laid out exactly like a NIAH prompt (built by the
//! core crate's NIAH builder) followed by the answer. Each batch is a pure function of the seed and the
//! step, so a resumed run sees the same data as an uninterrupted one.

pub mod exercises;
pub mod fact_grammar;
pub mod sentence_exercises;
pub mod trainer;
pub mod two_hop;
pub mod widen;

use crate::exercises::ExerciseGenerator;
use crate::sentence_exercises::{insert_sentences, SentenceExerciseGenerator, SentenceExerciseSettings, SentencePool};
use anyhow::{bail, Context, Result};
use headscope_core::niah::NiahBuilder;
use headscope_core::prompt::{niah_question, PromptFormat};
use headscope_core::rng::SplitMix64;
use headscope_core::TextTokenizer;
use headscope_model::tokenizer::train_byte_level_bpe;
use headscope_model::{DType, Device, HfTokenizer, ModelSpec};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use trainer::{AdamWConfig, Trainer};

/// The recipe file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    seed: u64,
    model: ModelRecipe,
    tokenizer: TokenizerRecipe,
    data: DataRecipe,
    train: TrainRecipe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelRecipe {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    /// Width of one head where it is not hidden_size / num_attention_heads (more or wider heads at the
    /// same hidden size, e.g. a model grown by `widen::widen_model_dir`); written into config.json.
    #[serde(default)]
    head_dim: Option<usize>,
    max_position_embeddings: usize,
    rope_theta: f64,
    rms_norm_eps: f64,
    /// The LM head reuses the embedding matrix (fewer weights for the page to load).
    #[serde(default)]
    tie_word_embeddings: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenizerRecipe {
    vocab_size: usize,
    exercise_samples: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataRecipe {
    corpus: Vec<String>,
    exercise_share: f64,
    answer_weight: f32,
    /// Loss weight of an answer's first three tokens, where the model decides which sentence it restates
    /// (the rest is copying on); by default `answer_weight`.
    #[serde(default)]
    opening_weight: Option<f32>,
    /// Share of answer words replaced by invented ones (see `ExerciseGenerator::with_invented_words`).
    #[serde(default)]
    invented_words: f64,
    /// Many sentence shapes instead of eight (see `ExerciseGenerator::with_varied_templates`).
    #[serde(default)]
    varied_templates: bool,
    /// Answer spans of `[min, max]` corpus words (see `ExerciseGenerator::with_answer_words`).
    #[serde(default = "default_answer_words")]
    answer_words: [usize; 2],
    /// Share of answers that repeat their own words (see `ExerciseGenerator::with_recurring_words`).
    #[serde(default)]
    recurring_words: f64,
    /// Ends exercises at a random point of the row and fills the rest with corpus text. With every
    /// answer ending exactly at the row's end, a model learns to answer "end of text" at that absolute
    /// position, and then fails a test whose prompt is exactly a training length long.
    #[serde(default)]
    vary_prompt_length: bool,
    /// Exercises of any sentence shape whose answer restates the needle sentence
    /// (`headscope_train::sentence_exercises`), instead of template facts answered by their span.
    #[serde(default)]
    restate: bool,
    /// With `restate`: share of needles that are corpus sentences (the rest are template facts).
    #[serde(default = "default_corpus_sentences")]
    corpus_sentences: f64,
    /// With `restate`: share of exercises with sentences near the needle that share the question's words.
    #[serde(default = "default_distractors")]
    distractors: f64,
    /// With `restate`: most further facts placed elsewhere in the context.
    #[serde(default = "default_elsewhere_facts")]
    elsewhere_facts: usize,
    /// With `restate`: share of needles that are everyday facts with natural questions
    /// (`headscope_train::fact_grammar`), drawn before `corpus_sentences` divides the rest.
    #[serde(default)]
    natural_facts: f64,
    /// With `restate`: corpus sentences come from the text the haystack passage is cut from (but not
    /// from the passage), so that a needle does not stand out from its context by style.
    #[serde(default)]
    same_document: bool,
    /// Share of exercises whose haystack passage is short (300-3000 bytes), so that the prompt repeats
    /// it, as the page and `headscope niah` repeat a short haystack to the asked length. Every haystack
    /// sentence is then seen many times and the needle once; a model trained only on text that does not
    /// repeat copies the repeated sentences instead (v4's next stages in village.txt).
    #[serde(default)]
    repeated_haystacks: f64,
    /// With `restate`: share of exercises whose answer restates the needle from the first word the
    /// question names, not from the sentence's first word (`SentenceExerciseSettings::cue_answers`).
    #[serde(default)]
    cue_answers: f64,
    /// With `cue_answers`: a needle whose answer span stands before every word the question names is
    /// restated from its first word, not from the span
    /// (`SentenceExerciseSettings::answer_first_from_sentence_start`). false keeps earlier recipes' rows.
    #[serde(default)]
    answer_first_from_sentence_start: bool,
    /// With `natural_facts`: share of their names, things, adjectives and spots that are invented words
    /// (`SentenceExerciseSettings::natural_invented_words`), so that restating them is copying.
    #[serde(default)]
    natural_invented_words: f64,
    /// With `natural_facts`: share of them written in a clause form (a person named by a relative
    /// clause, a condition in front, an existential, a reason fronted by "As" or "Since"; see
    /// `FactGrammar::with_clauses`). 0 leaves the facts of earlier recipes as they were.
    #[serde(default)]
    natural_clauses: f64,
    /// With `natural_facts`: share of them written with their answer before every word the question
    /// names (the asked circumstance or reason in front, a cleft, an existential; see
    /// `FactGrammar::with_answer_first`): the hand-written needles of those shapes were the ones lab
    /// model h12 missed at every length. 0 leaves the facts of earlier recipes as they were.
    #[serde(default)]
    natural_answer_first: f64,
    /// With `natural_facts`: their near sentences always answer the question otherwise (the asked part
    /// drawn afresh; `FactGrammar::with_distinct_near_answers`). false leaves earlier recipes' facts as
    /// they were.
    #[serde(default)]
    near_answers_differ: bool,
    /// With `restate`: share of near sentences placed elsewhere in the context, not beside the needle
    /// (`SentenceExerciseSettings::near_elsewhere`). 0 leaves earlier recipes' exercises as they were.
    #[serde(default)]
    near_elsewhere: f64,
    /// With `near_elsewhere`: a near sentence placed elsewhere stands there 1 to this many times
    /// (`SentenceExerciseSettings::near_copies`): a look-alike the context repeats. 1 (the default)
    /// leaves earlier recipes' exercises as they were.
    #[serde(default = "default_near_copies")]
    near_copies: usize,
    /// With `natural_facts`: share of their near sentences that are someone else doing the same, a long
    /// run of the needle's words right before another answer (`FactGrammar::with_same_event_near`).
    /// 0 leaves earlier recipes' facts as they were.
    #[serde(default)]
    near_same_event: f64,
    /// With `restate`: share of exercises given a look-alike that opens as the needle does and goes on
    /// otherwise, placed elsewhere 1 to `near_copies` times (`SentenceExerciseSettings::opening_lookalikes`).
    /// 0 leaves earlier recipes' exercises as they were.
    #[serde(default)]
    opening_lookalikes: f64,
    /// With `restate`: share of exercises that are two-hop lookups (`headscope_train::two_hop`), asked
    /// directly or step by step in the words `headscope cot` uses (issue 19's chain-of-thought demo).
    #[serde(default)]
    two_hop: f64,
    /// With `two_hop`: share of them asked step by step (both facts restated, then "The answer is ...").
    #[serde(default = "default_two_hop_reasoning")]
    two_hop_reasoning: f64,
    /// With `restate`: further questions after the exercise's answer, each about a sentence of its own
    /// placed elsewhere in the context and answered as the first ("Based on the content of the book,
    /// Question: ... Answer: ..."), in exercises of at least `follow_up_min_tokens`. A long exercise
    /// then teaches several far lookups, not one among thousands of text tokens (lab-v5 "r13": rows of
    /// one 8,192-token exercise each lost retrieval at every length). 0 leaves earlier recipes' rows
    /// as they were.
    #[serde(default)]
    follow_up_questions: usize,
    /// With `follow_up_questions`: the shortest exercise (tokens) that gets them.
    #[serde(default)]
    follow_up_min_tokens: usize,
    /// Share of exercises of at least `far_needles_min_tokens` whose needle stands in the first quarter
    /// of the prompt, not anywhere in it. With depths drawn evenly a lookup 6,000 tokens back is about
    /// one exercise in 200 of next stage 12, and the models trained on it pass none or nearly none of
    /// the hand-written needles at 8,192 tokens with the needle at the start (lab-v5 "h12"). 0 leaves
    /// earlier recipes' rows as they were.
    #[serde(default)]
    far_needles: f64,
    /// With `far_needles`: the shortest exercise (tokens) whose needle may be moved forward.
    #[serde(default)]
    far_needles_min_tokens: usize,
    /// Share of rows of at least `far_repeats_min_tokens` that are corpus text in which spans of the
    /// row's first third stand again, word for word, in its last third (`DataSource::far_repeat_text`):
    /// each copy is some 400 tokens to be read from a third of the row or more back, where an exercise
    /// gives one answer of about 20. Lab models h12 and hx13 pass 10 % of lookups 6,000 tokens or more
    /// back and restate the question, then invent (lab-v5 "hx13"): the copy does not reach that far.
    /// 0 leaves earlier recipes' rows as they were.
    #[serde(default)]
    far_repeats: f64,
    /// With `far_repeats`: the shortest row (tokens) that may be one.
    #[serde(default)]
    far_repeats_min_tokens: usize,
    /// With `far_repeats`: the loss weight of a copy's tokens after its first `FAR_REPEAT_CUE` (those
    /// cannot be foreseen and weigh 1, as text does).
    #[serde(default = "default_far_repeat_weight")]
    far_repeat_weight: f32,
    lengths: Vec<LengthRecipe>,
}

fn default_far_repeat_weight() -> f32 {
    1.0
}

fn default_two_hop_reasoning() -> f64 {
    SentenceExerciseSettings::default().two_hop_reasoning
}

fn default_near_copies() -> usize {
    SentenceExerciseSettings::default().near_copies
}

fn default_corpus_sentences() -> f64 {
    SentenceExerciseSettings::default().corpus_sentences
}

fn default_distractors() -> f64 {
    SentenceExerciseSettings::default().distractors
}

fn default_elsewhere_facts() -> usize {
    SentenceExerciseSettings::default().elsewhere
}

/// The answer length of every recipe written before `answer_words` existed.
fn default_answer_words() -> [usize; 2] {
    [3, 10]
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct LengthRecipe {
    tokens: usize,
    batch: usize,
    share: f64,
    /// Exercise rows of this length hold several independent exercises one after another, each a
    /// prompt of about `[min, max]` tokens with its answer (the last may run up to `min` longer). One
    /// exercise per long row leaves a few answer tokens in thousands; packing short exercises gives
    /// the retrieval skill many times the training signal for the same number of tokens.
    #[serde(default)]
    exercise_tokens: Option<[usize; 2]>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrainRecipe {
    steps: usize,
    lr: f64,
    min_lr: f64,
    warmup: usize,
    weight_decay: f64,
    grad_clip: f64,
    checkpoint_every: usize,
    log_every: usize,
}

/// Flags of `headscope train`.
pub struct TrainOptions {
    /// Recipe file.
    pub recipe: PathBuf,
    /// Folder holding the corpus files the recipe names.
    pub corpus: PathBuf,
    /// Output (model directory + checkpoint/ + loss.csv); training resumes from it.
    pub out: PathBuf,
    /// Device.
    pub device: Device,
    /// Stop (with a checkpoint) after this many minutes.
    pub max_minutes: Option<f64>,
    /// Stop at this step (with a checkpoint and an export) instead of the recipe's last; the learning
    /// rate schedule stays the recipe's, so a later run continues exactly.
    pub stop_at: Option<usize>,
    /// Worker threads building batches.
    pub workers: usize,
    /// Start from this model directory's weights and tokenizer (a further training stage).
    pub init_from: Option<PathBuf>,
    /// Time the phases of each step (forward, backward, update) and print their means.
    pub profile: bool,
}

/// Answer tokens weighted by a recipe's `opening_weight`.
const OPENING_TOKENS: usize = 3;

const SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];
const BOS: u32 = 1;
const EOS: u32 = 2;

/// `DataSource::far_repeat_text`: one copy per this many tokens of a row, which is at least this long...
const FAR_REPEAT_STRETCH: usize = 512;
/// ... a copy's first tokens, which nothing before them foretells (weight 1) ...
const FAR_REPEAT_CUE: usize = 2;
/// ... and its length in tokens.
const FAR_REPEAT_SHORTEST: usize = 16;
const FAR_REPEAT_LONGEST: usize = 48;

fn read_recipe(path: &Path) -> Result<Recipe> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading recipe {}", path.display()))?;
    parse_recipe(&text, path)
}

/// Checks a training recipe's text (`path` names it in errors) as `headscope train` reads it: an error
/// that names the recipe and the setting, never a panic.
pub fn check_recipe(text: &str, path: &Path) -> Result<()> {
    parse_recipe(text, path).map(drop)
}

fn parse_recipe(text: &str, path: &Path) -> Result<Recipe> {
    let r: Recipe = toml::from_str(text).with_context(|| format!("recipe {}", path.display()))?;
    if r.data.lengths.is_empty() || r.data.lengths.iter().any(|l| l.tokens < 64 || l.batch == 0 || l.share <= 0.0) {
        bail!("recipe {}: data.lengths needs entries with tokens >= 64, batch >= 1, share > 0", path.display());
    }
    if r.data.lengths.iter().any(|l| l.tokens + 1 > r.model.max_position_embeddings) {
        bail!("recipe {}: a training length exceeds max_position_embeddings", path.display());
    }
    if let Some(l) = r.data.lengths.iter().find(|l| l.exercise_tokens.is_some_and(|[lo, hi]| lo < 64 || hi < lo || hi > l.tokens)) {
        bail!(
            "recipe {}: exercise_tokens of the {}-token rows must be [min, max] with 64 <= min <= max <= {}",
            path.display(),
            l.tokens,
            l.tokens
        );
    }
    let [min_words, max_words] = r.data.answer_words;
    if min_words == 0 || max_words < min_words || max_words > 40 {
        bail!("recipe {}: data.answer_words must be [min, max] with 1 <= min <= max <= 40", path.display());
    }
    for (name, share) in [
        ("exercise_share", r.data.exercise_share),
        ("invented_words", r.data.invented_words),
        ("recurring_words", r.data.recurring_words),
        ("corpus_sentences", r.data.corpus_sentences),
        ("distractors", r.data.distractors),
        ("natural_facts", r.data.natural_facts),
        ("repeated_haystacks", r.data.repeated_haystacks),
        ("cue_answers", r.data.cue_answers),
        ("natural_invented_words", r.data.natural_invented_words),
        ("natural_clauses", r.data.natural_clauses),
        ("natural_answer_first", r.data.natural_answer_first),
        ("near_elsewhere", r.data.near_elsewhere),
        ("near_same_event", r.data.near_same_event),
        ("opening_lookalikes", r.data.opening_lookalikes),
        ("far_needles", r.data.far_needles),
        ("far_repeats", r.data.far_repeats),
        ("two_hop", r.data.two_hop),
        ("two_hop_reasoning", r.data.two_hop_reasoning),
    ] {
        if !(0.0..=1.0).contains(&share) {
            bail!("recipe {}: data.{name} must be a share between 0 and 1, not {share}", path.display());
        }
    }
    for (name, weight) in [
        ("answer_weight", Some(r.data.answer_weight)),
        ("opening_weight", r.data.opening_weight),
        ("far_repeat_weight", Some(r.data.far_repeat_weight)),
    ] {
        if let Some(w) = weight.filter(|w| !w.is_finite() || *w < 0.0) {
            bail!("recipe {}: data.{name} must be a loss weight of 0 or more, not {w}", path.display());
        }
    }
    if r.data.two_hop > 0.0 && !r.data.restate {
        bail!("recipe {}: data.two_hop needs data.restate = true (two-hop lookups are sentence exercises)", path.display());
    }
    if r.data.answer_first_from_sentence_start && r.data.cue_answers == 0.0 {
        bail!(
            "recipe {}: data.answer_first_from_sentence_start needs data.cue_answers above 0 (it changes where cue answers start)",
            path.display()
        );
    }
    if !(1..=8).contains(&r.data.near_copies) {
        bail!("recipe {}: data.near_copies must be 1 to 8, not {}", path.display(), r.data.near_copies);
    }
    if r.data.follow_up_questions > 8 {
        bail!("recipe {}: data.follow_up_questions must be at most 8, not {}", path.display(), r.data.follow_up_questions);
    }
    if r.data.opening_lookalikes > 0.0 && !r.data.restate {
        bail!("recipe {}: data.opening_lookalikes needs data.restate = true (look-alikes of restated needles)", path.display());
    }
    if r.data.follow_up_questions > 0 && !r.data.restate {
        bail!("recipe {}: data.follow_up_questions needs data.restate = true (they are sentence exercises)", path.display());
    }
    if r.data.far_repeats > 0.0 && r.data.far_repeats_min_tokens < FAR_REPEAT_STRETCH {
        bail!(
            "recipe {}: data.far_repeats needs data.far_repeats_min_tokens of at least {FAR_REPEAT_STRETCH}, not {} (a row gets one copy per {FAR_REPEAT_STRETCH} tokens)",
            path.display(),
            r.data.far_repeats_min_tokens
        );
    }
    if r.data.elsewhere_facts > 16 {
        bail!("recipe {}: data.elsewhere_facts must be at most 16, not {}", path.display(), r.data.elsewhere_facts);
    }
    Ok(r)
}

impl DataRecipe {
    /// The sentence-exercise settings of a `restate` recipe.
    fn sentence_settings(&self) -> Option<SentenceExerciseSettings> {
        self.restate.then_some(SentenceExerciseSettings {
            corpus_sentences: self.corpus_sentences,
            distractors: self.distractors,
            elsewhere: self.elsewhere_facts,
            invented_words: self.invented_words,
            natural_facts: self.natural_facts,
            cue_answers: self.cue_answers,
            answer_first_from_sentence_start: self.answer_first_from_sentence_start,
            natural_invented_words: self.natural_invented_words,
            natural_clauses: self.natural_clauses,
            natural_answer_first: self.natural_answer_first,
            near_answers_differ: self.near_answers_differ,
            near_elsewhere: self.near_elsewhere,
            near_copies: self.near_copies,
            near_same_event: self.near_same_event,
            opening_lookalikes: self.opening_lookalikes,
            two_hop: self.two_hop,
            two_hop_reasoning: self.two_hop_reasoning,
        })
    }
}

/// Writes config.json, tokenizer.json (trained here), tokenizer_config.json and generation_config.json
/// into `out`, unless they are there already (a resumed run keeps its tokenizer). The tokenizer also
/// learns from exercises drawn from the corpus's `words` and `sentences`, as training will see them.
fn write_model_files(
    r: &Recipe,
    corpus_text: &[String],
    words: &Arc<Vec<String>>,
    sentences: &Arc<SentencePool>,
    out: &Path,
) -> Result<()> {
    let m = &r.model;
    let mut config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"],
        "vocab_size": r.tokenizer.vocab_size, "hidden_size": m.hidden_size, "intermediate_size": m.intermediate_size,
        "num_hidden_layers": m.num_hidden_layers, "num_attention_heads": m.num_attention_heads,
        "num_key_value_heads": m.num_key_value_heads, "max_position_embeddings": m.max_position_embeddings,
        "rope_theta": m.rope_theta, "rms_norm_eps": m.rms_norm_eps, "hidden_act": "silu",
        "bos_token_id": BOS, "eos_token_id": EOS, "tie_word_embeddings": m.tie_word_embeddings, "torch_dtype": "float16",
    });
    if let Some(d) = m.head_dim {
        config["head_dim"] = d.into();
    }
    std::fs::write(out.join("config.json"), serde_json::to_string_pretty(&config)?)?;
    std::fs::write(
        out.join("generation_config.json"),
        serde_json::to_string_pretty(&serde_json::json!({"bos_token_id": BOS, "eos_token_id": EOS}))?,
    )?;
    std::fs::write(
        out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(
            &serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": true}),
        )?,
    )?;
    let tok_path = out.join("tokenizer.json");
    if !tok_path.exists() {
        eprintln!("training a {}-token byte-level BPE tokenizer", r.tokenizer.vocab_size);
        let mut texts: Vec<String> = corpus_text.to_vec();
        if let Some(settings) = r.data.sentence_settings() {
            let mut g = SentenceExerciseGenerator::new(r.seed ^ 0x7070, sentences.clone(), words.clone(), settings);
            texts.extend((0..r.tokenizer.exercise_samples).map(|_| {
                let e = g.next_exercise();
                format!("{} {} {}", e.inserted().needle, e.elsewhere.join(" "), e.needle.question)
            }));
        } else {
            let mut g = ExerciseGenerator::new(r.seed ^ 0x7070, words.clone());
            texts.extend((0..r.tokenizer.exercise_samples).map(|_| {
                let n = g.next_needle();
                format!("{} {} {}", n.needle, n.question, n.real_needle)
            }));
        }
        let tok = train_byte_level_bpe(&texts, r.tokenizer.vocab_size, &SPECIALS, Some("<s>"))?;
        tok.save(&tok_path, false).map_err(|e| anyhow::anyhow!("saving {}: {e}", tok_path.display()))?;
    }
    Ok(())
}

/// One training batch: inputs, targets and loss weights, `[batch, tokens]` each, row-major.
struct Batch {
    tokens: usize,
    rows: usize,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    weights: Vec<f32>,
}

/// Everything batch building needs, shared by the worker threads.
struct DataSource {
    tokenizer: HfTokenizer,
    corpus_text: Vec<String>,
    /// Byte ranges of each corpus text's non-empty lines (paragraphs), found once.
    paragraphs: Vec<Vec<std::ops::Range<usize>>>,
    corpus_tokens: Vec<u32>,
    corpus_words: Arc<Vec<String>>,
    /// With `restate`: the corpus sentences that can be needles, and the exercise settings.
    sentences: Arc<SentencePool>,
    sentence_settings: Option<SentenceExerciseSettings>,
    same_document: bool,
    repeated_haystacks: f64,
    exercise_share: f64,
    answer_weight: f32,
    opening_weight: f32,
    invented_words: f64,
    varied_templates: bool,
    answer_words: [usize; 2],
    recurring_words: f64,
    vary_prompt_length: bool,
    /// `DataRecipe::follow_up_questions` and `follow_up_min_tokens`.
    follow_up_questions: usize,
    follow_up_min_tokens: usize,
    /// `DataRecipe::far_needles` and `far_needles_min_tokens`.
    far_needles: f64,
    far_needles_min_tokens: usize,
    /// `DataRecipe::far_repeats`, `far_repeats_min_tokens` and `far_repeat_weight`.
    far_repeats: f64,
    far_repeats_min_tokens: usize,
    far_repeat_weight: f32,
    lengths: Vec<LengthRecipe>,
    seed: u64,
}

impl DataSource {
    fn length_for_step(&self, rng: &mut SplitMix64) -> LengthRecipe {
        let total: f64 = self.lengths.iter().map(|l| l.share).sum();
        let mut x = rng.unit() * total;
        for l in &self.lengths {
            if x < l.share {
                return *l;
            }
            x -= l.share;
        }
        *self.lengths.last().expect("checked non-empty")
    }

    /// The batch of `step`: a pure function of the seed and the step.
    fn batch(&self, step: usize) -> Result<Batch> {
        let mut rng = SplitMix64::new(self.seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let len = self.length_for_step(&mut rng);
        let t = len.tokens;
        let mut b = Batch { tokens: t, rows: len.batch, inputs: vec![], targets: vec![], weights: vec![] };
        for _ in 0..len.batch {
            let row_seed = rng.next_u64();
            // No draw where the share is 0 or the rows are short, so that earlier recipes keep their stream.
            let far_repeat = self.far_repeats > 0.0 && t >= self.far_repeats_min_tokens && rng.unit() < self.far_repeats;
            let (seq, w) = if far_repeat {
                self.far_repeat_text(t, row_seed)
            } else if rng.unit() > self.exercise_share {
                self.plain_text(t, row_seed)
            } else if let Some([lo, hi]) = len.exercise_tokens {
                self.packed_exercises(t, lo, hi, row_seed)?
            } else {
                self.exercise(t, row_seed, self.vary_prompt_length)?
            };
            b.inputs.extend_from_slice(&seq[..t]);
            b.targets.extend_from_slice(&seq[1..=t]);
            b.weights.extend_from_slice(&w[1..=t]);
        }
        Ok(b)
    }

    /// `t + 1` consecutive corpus tokens.
    fn plain_text(&self, t: usize, seed: u64) -> (Vec<u32>, Vec<f32>) {
        let mut r = SplitMix64::new(seed);
        let start = r.below((self.corpus_tokens.len() - t - 1) as u64) as usize;
        (self.corpus_tokens[start..start + t + 1].to_vec(), vec![1.0; t + 1])
    }

    /// `t + 1` corpus tokens in which one span of the first third stands again in each of
    /// `t / FAR_REPEAT_STRETCH` equal slots of the last third, word for word (16 to 48 tokens each;
    /// the slots keep copies apart). Once a copy's first `FAR_REPEAT_CUE` tokens are read, the rest
    /// can only be read from at least a third of the row back: a dense far lookup, weighted
    /// `far_repeat_weight`.
    fn far_repeat_text(&self, t: usize, seed: u64) -> (Vec<u32>, Vec<f32>) {
        let mut r = SplitMix64::new(seed);
        let (mut seq, mut w) = self.plain_text(t, r.next_u64());
        let third = (t + 1) / 3;
        let copies = (t / FAR_REPEAT_STRETCH).max(1);
        let slot = third / copies;
        let first_slot = t + 1 - copies * slot;
        for k in 0..copies {
            let len = (FAR_REPEAT_SHORTEST + r.below((FAR_REPEAT_LONGEST - FAR_REPEAT_SHORTEST + 1) as u64) as usize).min(slot);
            let from = r.below((third - len + 1) as u64) as usize;
            let to = first_slot + k * slot + r.below((slot - len + 1) as u64) as usize;
            // Sources lie in the first third and copies in the last: no copy overwrites a source.
            seq.copy_within(from..from + len, to);
            w[to + FAR_REPEAT_CUE.min(len)..to + len].fill(self.far_repeat_weight);
        }
        (seq, w)
    }

    /// A passage long enough for a `t`-token prompt (about 6 bytes per token), or as often as
    /// `repeated_haystacks` says a short one that the prompt repeats: paragraphs of a random corpus
    /// text from a random start; also which text.
    fn passage(&self, t: usize, r: &mut SplitMix64) -> (usize, String) {
        let doc = r.below(self.corpus_text.len() as u64) as usize;
        let paragraphs = &self.paragraphs[doc];
        let mut i = r.below(paragraphs.len() as u64) as usize;
        // No draw when the share is 0: recipes without it keep their data.
        let short = self.repeated_haystacks > 0.0 && r.unit() < self.repeated_haystacks;
        let bytes = if short { 300 + r.below(2700) as usize } else { t * 6 };
        let mut passage = String::new();
        while passage.len() < bytes {
            passage.push_str(&self.corpus_text[doc][paragraphs[i % paragraphs.len()].clone()]);
            passage.push('\n');
            i += 1;
        }
        (doc, passage)
    }

    /// `t + 1` tokens of independent exercises of `lo..=hi` tokens each (see `LengthRecipe::exercise_tokens`).
    /// Each is a whole prompt with its BOS, its answer and EOS, as documents are packed in pretraining.
    fn packed_exercises(&self, t: usize, lo: usize, hi: usize, seed: u64) -> Result<(Vec<u32>, Vec<f32>)> {
        let mut r = SplitMix64::new(seed);
        let (mut seq, mut w) = (Vec::with_capacity(t + 1), Vec::with_capacity(t + 1));
        while seq.len() < t + 1 {
            let left = t + 1 - seq.len();
            let mut size = lo + r.below((hi - lo + 1) as u64) as usize;
            if left < size + lo {
                // What would remain is too short for another exercise: this one takes it.
                size = left;
            }
            let (s, sw) = if size < 64 { self.plain_text(size - 1, r.next_u64()) } else { self.exercise(size - 1, r.next_u64(), false)? };
            seq.extend(s);
            w.extend(sw);
        }
        Ok((seq, w))
    }

    /// Appends an answer's tokens with their loss weights: its opening tokens weigh `opening_weight`,
    /// the rest `answer_weight`.
    fn push_answer(&self, seq: &mut Vec<u32>, w: &mut Vec<f32>, answer: &[u32]) {
        let opening = answer.len().min(OPENING_TOKENS);
        seq.extend_from_slice(answer);
        w.extend(std::iter::repeat_n(self.opening_weight, opening));
        w.extend(std::iter::repeat_n(self.answer_weight, answer.len() - opening));
    }

    /// A NIAH prompt over a random corpus passage, then the answer and EOS: `t + 1` tokens. The answer
    /// is the needle's answer span, or with `restate` the whole needle sentence. With `vary_prompt_length`
    /// the answer ends anywhere in the row's last quarter and corpus text follows.
    fn exercise(&self, t: usize, seed: u64, vary_prompt_length: bool) -> Result<(Vec<u32>, Vec<f32>)> {
        let mut r = SplitMix64::new(seed);
        // With `same_document` the passage comes first: the needle is drawn from its text.
        let early_passage = (self.same_document && self.sentence_settings.is_some()).then(|| self.passage(t, &mut r));
        let (needle, answer_text, mut elsewhere, follow_ups) = match self.sentence_settings {
            Some(settings) => {
                let mut g = SentenceExerciseGenerator::new(r.next_u64(), self.sentences.clone(), self.corpus_words.clone(), settings);
                if let Some((doc, passage)) = &early_passage {
                    g = g.in_document(*doc, passage);
                }
                let e = g.next_exercise();
                // Drawn from the exercise's own generator, after it: rows without follow-ups keep
                // every random draw they had.
                let wanted = if t >= self.follow_up_min_tokens { self.follow_up_questions } else { 0 };
                let follow_ups: Vec<_> = (0..wanted).map(|_| g.next_exercise()).filter(|x| x.answer_text.is_none()).collect();
                (e.inserted(), e.answer().to_owned(), e.elsewhere, follow_ups)
            }
            None => {
                let needle = ExerciseGenerator::new(r.next_u64(), self.corpus_words.clone())
                    .with_invented_words(self.invented_words)
                    .with_varied_templates(self.varied_templates)
                    .with_answer_words(self.answer_words[0], self.answer_words[1])
                    .with_recurring_words(self.recurring_words)
                    .next_needle();
                let answer = needle.real_needle.clone();
                (needle, answer, Vec::new(), Vec::new())
            }
        };
        let mut answer = self.tokenizer.encode(&format!(" {answer_text}"), false)?.ids;
        answer.push(EOS);
        if answer.len() * 4 > t {
            // An answer that would crowd out the context is no exercise: use plain text for this row.
            return Ok(self.plain_text(t, seed));
        }
        // Each follow-up: its needle sentence, then the tokens of its question and of its answer.
        let mut follow = Vec::with_capacity(follow_ups.len());
        for x in &follow_ups {
            let question = self.tokenizer.encode(&niah_question(&x.needle.question), false)?.ids;
            let mut restated = self.tokenizer.encode(&format!(" {}", x.answer()), false)?.ids;
            restated.push(EOS);
            follow.push((x.needle.needle.clone(), question, restated));
        }
        let mut follow_len: usize = follow.iter().map(|(_, q, a)| q.len() + a.len()).sum();
        if (answer.len() + follow_len) * 4 > t {
            // Follow-ups never crowd out the context: the row keeps its first question alone.
            follow.clear();
            follow_len = 0;
        }
        if !follow.is_empty() {
            elsewhere.extend(follow_ups.iter().map(|x| x.inserted().needle));
        }
        let (_, mut passage) = match early_passage {
            Some(p) => p,
            None => self.passage(t, &mut r),
        };
        if !elsewhere.is_empty() {
            // Within the part of the passage that the prompt will hold (about 4 bytes per token).
            passage = insert_sentences(&passage, &elsewhere, t * 3, &mut r);
        }
        let mut builder = NiahBuilder::new(&self.tokenizer, PromptFormat::Plain, &[passage])?;
        let mut depth = r.below(10_001) as f64 / 100.0;
        // No draw where the share is 0 or the row is short, so that earlier recipes keep their stream.
        if self.far_needles > 0.0 && t >= self.far_needles_min_tokens && r.unit() < self.far_needles {
            depth /= 4.0;
        }
        let mut prompt_len = t + 1 - answer.len() - follow_len;
        if vary_prompt_length {
            // Anywhere in the last quarter of the row.
            prompt_len -= r.below(prompt_len as u64 / 4 + 1) as usize;
        }
        if builder.shortest_length(&needle)? > prompt_len {
            // Near sentences and a long question can outgrow a short row: plain text instead.
            return Ok(self.plain_text(t, seed));
        }
        let test = builder.build(&needle, prompt_len, depth)?;
        let context = if follow.is_empty() { String::new() } else { self.tokenizer.decode(&test.prompt_ids)? };
        let mut seq = test.prompt_ids;
        let mut w = vec![1.0; seq.len()];
        self.push_answer(&mut seq, &mut w, &answer);
        for (sentence, question, restated) in &follow {
            // A sentence the prompt's length cut off cannot be asked about: its answer would be invented.
            if !context.contains(sentence.as_str()) {
                continue;
            }
            seq.extend_from_slice(question);
            w.extend(std::iter::repeat_n(1.0, question.len()));
            self.push_answer(&mut seq, &mut w, restated);
        }
        if vary_prompt_length && seq.len() < t + 1 {
            // The rest of the row is ordinary text, as when documents are packed.
            let (text, _) = self.plain_text(t - seq.len(), r.next_u64());
            w.extend(std::iter::repeat_n(1.0, text.len()));
            seq.extend(text);
        }
        // A prompt the tokenizer could not bring to the exact length is padded with ignored EOS tokens.
        while seq.len() < t + 1 {
            seq.push(EOS);
            w.push(0.0);
        }
        Ok((seq, w))
    }
}

/// Byte ranges of the lines of `text` that hold more than whitespace: the paragraphs passages are cut from.
fn paragraph_ranges(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in text.split('\n') {
        if !line.trim().is_empty() {
            out.push(start..start + line.len());
        }
        start += line.len() + 1;
    }
    out
}

/// The token ids of `text` (no special tokens), encoded in line-aligned pieces of about `piece` bytes on
/// `threads` threads. The byte-level pre-tokenizer splits at every line break, so the pieces encode to
/// what the whole text does (a test checks it); a corpus of a hundred megabytes then takes seconds.
fn encode_in_pieces(tokenizer: &HfTokenizer, text: &str, threads: usize, piece: usize) -> Result<Vec<u32>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + piece.max(1)).min(text.len());
        while end < text.len() && !text.is_char_boundary(end) {
            end += 1;
        }
        if end < text.len() {
            end = text[end..].find('\n').map_or(text.len(), |i| end + i + 1);
        }
        pieces.push(&text[start..end]);
        start = end;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<Vec<u32>>>>> = pieces.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads.min(pieces.len()).max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(piece) = pieces.get(i) else { break };
                let ids = tokenizer.encode(piece, false).map(|e| e.ids).map_err(anyhow::Error::from);
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(ids);
            });
        }
    });
    let mut ids = Vec::new();
    for r in results {
        ids.extend(r.into_inner().unwrap_or_else(|p| p.into_inner()).context("a corpus piece was not encoded")??);
    }
    Ok(ids)
}

fn lr_at(step: usize, r: &TrainRecipe) -> f64 {
    if step < r.warmup {
        return r.lr * (step + 1) as f64 / r.warmup as f64;
    }
    let progress = ((step - r.warmup) as f64 / (r.steps.saturating_sub(r.warmup)).max(1) as f64).min(1.0);
    r.min_lr + 0.5 * (r.lr - r.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// What `headscope train` and `headscope train-data` share: the recipe, the model files written into
/// the output folder, and the source of the recipe's batches.
struct Prepared {
    recipe: Recipe,
    spec: ModelSpec,
    source: Arc<DataSource>,
}

/// Refuses a stage whose recipe describes another model than the weights it starts from (every field of
/// the two [`ModelSpec`]s that decides what the weights compute; the context length may grow). A RoPE
/// base that differs loads without complaint (it is no tensor) and turns the weights into a model that
/// has to learn its positions again: two lab-v5 experiments (r13, f13) started v4 (base 10,000,000) with
/// a recipe copied from a stage whose base the chain's command had replaced (10,000), began at a loss of
/// 6.7 instead of v4's ~2 and lost its retrieval; nothing said why.
fn check_init_matches(recipe_path: &Path, init: &Path, spec: &ModelSpec) -> Result<()> {
    let was = ModelSpec::from_config_file(&init.join("config.json"))?;
    macro_rules! differing {
        ($($field:ident: $name:literal),*) => {
            [$(($name, format!("{:?}", was.$field), format!("{:?}", spec.$field))),*]
        };
    }
    let differs: Vec<String> = differing!(model_type: "model_type", vocab_size: "vocab_size", hidden_size: "hidden_size",
        intermediate_size: "intermediate_size", layers: "num_hidden_layers", heads: "num_attention_heads",
        kv_heads: "num_key_value_heads", head_dim: "head_dim", rope_theta: "rope_theta", rope_scaling: "rope_scaling",
        rms_norm_eps: "rms_norm_eps", tie_word_embeddings: "tie_word_embeddings", qkv_bias: "qkv_bias", o_bias: "o_bias",
        mlp_bias: "mlp_bias", sliding_windows: "sliding_windows", moe: "moe")
    .into_iter()
    .filter(|(_, a, b)| a != b)
    .map(|(name, a, b)| format!("{name} {a} in {}, {b} in the recipe", init.display()))
    .collect();
    if !differs.is_empty() {
        bail!(
            "recipe {} does not describe the model it starts from: {} (make the recipe's [model] match, e.g. scripts/lab-torch.sh RECIPE_SET=\"rope_theta=...\")",
            recipe_path.display(),
            differs.join("; ")
        );
    }
    Ok(())
}

/// Reads the recipe and the corpus, writes the model files into `out` (training the tokenizer unless
/// one is there, or copying `init_from`'s: its weights are tied to its ids) and encodes the corpus.
fn prepare(recipe_path: &Path, corpus: &Path, out: &Path, init_from: Option<&Path>, workers: usize) -> Result<Prepared> {
    let recipe = read_recipe(recipe_path)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let corpus_text = recipe
        .data
        .corpus
        .iter()
        .map(|f| {
            let p = corpus.join(f);
            std::fs::read_to_string(&p).with_context(|| format!("corpus file {} (make it with scripts/prepare-corpus.sh)", p.display()))
        })
        .collect::<Result<Vec<String>>>()?;
    std::fs::copy(recipe_path, out.join("recipe.toml")).ok();
    if let Some(init) = init_from {
        let tok = out.join("tokenizer.json");
        if !tok.exists() {
            std::fs::copy(init.join("tokenizer.json"), &tok).with_context(|| format!("copying the tokenizer of {}", init.display()))?;
        }
    }
    // Words and sentences of the corpus, found once: the tokenizer's exercises and training's draw on them.
    let corpus_words = Arc::new(corpus_text.iter().flat_map(|t| ExerciseGenerator::words_of(t)).collect::<Vec<_>>());
    let sentence_settings = recipe.data.sentence_settings();
    let sentences = Arc::new(if sentence_settings.is_some() { SentencePool::from_texts(&corpus_text) } else { SentencePool::default() });
    write_model_files(&recipe, &corpus_text, &corpus_words, &sentences, out)?;
    let tokenizer = HfTokenizer::from_dir(out)?;
    let spec = ModelSpec::from_config_file(&out.join("config.json"))?;
    if let Some(init) = init_from {
        check_init_matches(recipe_path, init, &spec)?;
    }
    let t0 = Instant::now();
    let mut corpus_tokens = Vec::new();
    for text in &corpus_text {
        corpus_tokens.extend(encode_in_pieces(&tokenizer, text, workers.max(1), 1 << 20)?);
    }
    eprintln!(
        "corpus: {} bytes, {} tokens (encoded in {:.1}s)",
        corpus_text.iter().map(String::len).sum::<usize>(),
        corpus_tokens.len(),
        t0.elapsed().as_secs_f64()
    );
    let longest = recipe.data.lengths.iter().map(|l| l.tokens).max().unwrap_or(0);
    if corpus_tokens.len() <= 2 * longest + 1 {
        bail!("the corpus holds {} tokens, too few for rows of {longest} tokens: give it more text", corpus_tokens.len());
    }
    if sentence_settings.is_some() {
        eprintln!("{} corpus sentences can be needles", sentences.len());
    }
    let source = Arc::new(DataSource {
        tokenizer,
        corpus_words,
        paragraphs: corpus_text.iter().map(|t| paragraph_ranges(t)).collect(),
        corpus_text,
        corpus_tokens,
        sentences,
        sentence_settings,
        same_document: recipe.data.same_document,
        repeated_haystacks: recipe.data.repeated_haystacks,
        exercise_share: recipe.data.exercise_share,
        answer_weight: recipe.data.answer_weight,
        opening_weight: recipe.data.opening_weight.unwrap_or(recipe.data.answer_weight),
        invented_words: recipe.data.invented_words,
        varied_templates: recipe.data.varied_templates,
        answer_words: recipe.data.answer_words,
        recurring_words: recipe.data.recurring_words,
        vary_prompt_length: recipe.data.vary_prompt_length,
        follow_up_questions: recipe.data.follow_up_questions,
        follow_up_min_tokens: recipe.data.follow_up_min_tokens,
        far_needles: recipe.data.far_needles,
        far_needles_min_tokens: recipe.data.far_needles_min_tokens,
        far_repeats: recipe.data.far_repeats,
        far_repeats_min_tokens: recipe.data.far_repeats_min_tokens,
        far_repeat_weight: recipe.data.far_repeat_weight,
        lengths: recipe.data.lengths.clone(),
        seed: recipe.seed,
    });
    Ok(Prepared { recipe, spec, source })
}

/// The batches of steps `first..last`, built by `workers` threads ahead of use and handed out in step
/// order; the threads stop when this is dropped.
struct Batches {
    rx: std::sync::mpsc::Receiver<(usize, Result<Batch>)>,
    pending: BTreeMap<usize, Result<Batch>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Batches {
    fn start(source: &Arc<DataSource>, first: usize, last: usize, workers: usize) -> Batches {
        let workers = workers.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Result<Batch>)>(workers * 2);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for w in 0..workers {
            let (tx, source, stop) = (tx.clone(), source.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut step = first + w;
                while step < last && !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if tx.send((step, source.batch(step))).is_err() {
                        break;
                    }
                    step += workers;
                }
            });
        }
        Batches { rx, pending: BTreeMap::new(), stop }
    }

    /// The batch of `step` (each step is asked for once, in order).
    fn take(&mut self, step: usize) -> Result<Batch> {
        loop {
            if let Some(b) = self.pending.remove(&step) {
                return b;
            }
            let (s, b) = self.rx.recv().context("the batch workers stopped")?;
            self.pending.insert(s, b);
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `headscope train`.
pub fn train(o: TrainOptions) -> Result<()> {
    let Prepared { recipe, spec, source } = prepare(&o.recipe, &o.corpus, &o.out, o.init_from.as_deref(), o.workers)?;
    let adamw = AdamWConfig { weight_decay: recipe.train.weight_decay, grad_clip: recipe.train.grad_clip, ..Default::default() };
    let mut trainer = Trainer::new(&spec, &o.device, recipe.seed, adamw)?;
    let ckpt = o.out.join("checkpoint");
    if ckpt.join("trainer.json").exists() {
        trainer.restore(&ckpt)?;
        eprintln!("resumed from {} at step {}", ckpt.display(), trainer.step());
    } else if let Some(init) = &o.init_from {
        trainer.init_from(&headscope_model::loader::weight_files(init)?)?;
        eprintln!("starting from the weights of {}", init.display());
    }
    eprintln!("{} parameters; training to step {}", trainer.parameter_count(), recipe.train.steps);
    trainer.set_profiling(o.profile);
    if !o.device.is_cpu() {
        // TF32 matmuls: f32 accuracy is not needed for a 4096-token vocabulary softmax at this scale.
        headscope_model::candle_core::cuda::set_gemm_reduced_precision_f32(true);
    }

    let first = trainer.step();
    let last = o.stop_at.map_or(recipe.train.steps, |s| s.min(recipe.train.steps));
    let mut batches = Batches::start(&source, first, last, o.workers);

    let mut log = std::fs::OpenOptions::new().create(true).append(true).open(o.out.join("loss.csv"))?;
    if log.metadata()?.len() == 0 {
        writeln!(log, "step,tokens,rows,loss,grad_norm,lr,seconds")?;
    }
    let started = Instant::now();
    let mut window = (0f64, 0usize, 0usize, Instant::now());
    let mut phases = [0f64; 3];
    while trainer.step() < last {
        let step = trainer.step();
        let batch = batches.take(step)?;
        let dev = &o.device;
        let inputs = headscope_model::candle_core::Tensor::from_vec(batch.inputs, (batch.rows, batch.tokens), dev)?;
        let targets = headscope_model::candle_core::Tensor::from_vec(batch.targets, (batch.rows, batch.tokens), dev)?;
        let weights = headscope_model::candle_core::Tensor::from_vec(batch.weights, (batch.rows, batch.tokens), dev)?;
        let lr = lr_at(step, &recipe.train);
        let stats = trainer.train_step(&inputs, &targets, &weights, lr)?;
        if !stats.loss.is_finite() {
            bail!("loss became {} at step {step}; the last checkpoint in {} is intact", stats.loss, ckpt.display());
        }
        writeln!(
            log,
            "{},{},{},{:.5},{:.4},{:.6},{:.2}",
            step + 1,
            batch.tokens,
            batch.rows,
            stats.loss,
            stats.grad_norm,
            lr,
            started.elapsed().as_secs_f64()
        )?;
        window.0 += stats.loss as f64;
        window.1 += 1;
        window.2 += batch.tokens * batch.rows;
        if let Some(p) = stats.phase_seconds {
            phases.iter_mut().zip(p).for_each(|(sum, s)| *sum += s);
        }
        if (step + 1) % recipe.train.log_every == 0 {
            let secs = window.3.elapsed().as_secs_f64();
            let profile = if o.profile {
                let ms = |i: usize| 1e3 * phases[i] / window.1 as f64;
                format!(" (per step: forward {:.1} ms, backward {:.1} ms, update {:.1} ms)", ms(0), ms(1), ms(2))
            } else {
                String::new()
            };
            eprintln!(
                "step {:>6} loss {:.4} lr {lr:.2e} {:.0} tokens/s{profile}",
                step + 1,
                window.0 / window.1 as f64,
                window.2 as f64 / secs
            );
            window = (0.0, 0, 0, Instant::now());
            phases = [0.0; 3];
        }
        let out_of_time = o.max_minutes.is_some_and(|m| started.elapsed().as_secs_f64() > m * 60.0);
        if (step + 1) % recipe.train.checkpoint_every == 0 || trainer.step() == last || out_of_time {
            trainer.save(&ckpt)?;
            // The weights as of this checkpoint, so that a run stopped by an error still leaves them
            // where a model directory has them (the GPU machine's commands send back only that).
            trainer.export(&o.out.join("model.safetensors"), DType::F16)?;
            log.flush()?;
        }
        if out_of_time {
            eprintln!("time limit reached at step {}: checkpoint saved; rerun the same command to resume", trainer.step());
            break;
        }
    }
    drop(batches);
    // The model directory always holds the latest weights, so a stopped run can be evaluated as it is.
    trainer.export(&o.out.join("model.safetensors"), DType::F16)?;
    let done = if trainer.step() >= recipe.train.steps { "finished" } else { "stopped at" };
    eprintln!("{done} step {} of {}; wrote {}", trainer.step(), recipe.train.steps, o.out.join("model.safetensors").display());
    Ok(())
}

/// First bytes of a `headscope train-data` stream; then, per step in order: the step, the rows and
/// the tokens per row (u32 each), then the inputs and the targets (u32 each) and the loss weights (f32),
/// `rows x tokens` each, row-major; all little-endian. The trainer's own batches, byte for byte, for an
/// outside trainer (`crates/headscope-train/torch/train_lab.py`) to consume.
pub const BATCH_STREAM_MAGIC: &[u8; 8] = b"HSBATCH1";

/// Flags of `headscope train-data`.
pub struct BatchOptions {
    pub recipe: PathBuf,
    pub corpus: PathBuf,
    /// Where the model files go (config.json, tokenizer.json, ...), as `headscope train --out`.
    pub out: PathBuf,
    /// A further stage's starting model: its tokenizer is kept.
    pub init_from: Option<PathBuf>,
    /// The first step to write.
    pub from_step: usize,
    /// The step to stop before (default: the recipe's last).
    pub to_step: Option<usize>,
    pub workers: usize,
}

/// `headscope train-data`: writes the batches of steps `from_step..to_step` to `sink` as
/// [`BATCH_STREAM_MAGIC`] describes. A closed sink (the reader stopped) ends it without an error.
pub fn write_batches(o: &BatchOptions, sink: &mut impl Write) -> Result<()> {
    let Prepared { recipe, source, .. } = prepare(&o.recipe, &o.corpus, &o.out, o.init_from.as_deref(), o.workers)?;
    let last = o.to_step.map_or(recipe.train.steps, |s| s.min(recipe.train.steps));
    let closed = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    match sink.write_all(BATCH_STREAM_MAGIC) {
        Err(e) if closed(&e) => return Ok(()),
        r => r.context("writing the batch stream")?,
    }
    let mut batches = Batches::start(&source, o.from_step, last, o.workers);
    for step in o.from_step..last {
        let b = batches.take(step)?;
        let mut bytes = Vec::with_capacity(12 + 12 * b.inputs.len());
        for v in [step, b.rows, b.tokens] {
            bytes.extend_from_slice(&u32::try_from(v).context("a step or a batch size beyond u32")?.to_le_bytes());
        }
        b.inputs.iter().chain(&b.targets).for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        b.weights.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
        match sink.write_all(&bytes) {
            Err(e) if closed(&e) => return Ok(()),
            r => r.context("writing the batch stream")?,
        }
    }
    sink.flush().or_else(|e| if closed(&e) { Ok(()) } else { Err(e) }).context("writing the batch stream")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(vary_prompt_length: bool) -> DataSource {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let tokenizer = HfTokenizer::from_dir(&repo.join("public/models/lab")).unwrap();
        let corpus_text = vec![std::fs::read_to_string(repo.join("public/haystacks/village.txt")).unwrap()];
        let corpus_tokens = tokenizer.encode(&corpus_text[0], false).unwrap().ids;
        DataSource {
            tokenizer,
            corpus_words: Arc::new(ExerciseGenerator::words_of(&corpus_text[0])),
            paragraphs: corpus_text.iter().map(|t| paragraph_ranges(t)).collect(),
            sentences: Arc::new(SentencePool::from_texts(&corpus_text)),
            sentence_settings: None,
            same_document: false,
            repeated_haystacks: 0.0,
            corpus_text,
            corpus_tokens,
            exercise_share: 1.0,
            answer_weight: 8.0,
            opening_weight: 8.0,
            invented_words: 0.5,
            varied_templates: true,
            answer_words: default_answer_words(),
            recurring_words: 0.0,
            vary_prompt_length,
            follow_up_questions: 0,
            follow_up_min_tokens: 0,
            far_needles: 0.0,
            far_needles_min_tokens: 0,
            far_repeats: 0.0,
            far_repeats_min_tokens: 0,
            far_repeat_weight: 1.0,
            lengths: vec![LengthRecipe { tokens: 256, batch: 1, share: 1.0, exercise_tokens: None }],
            seed: 1,
        }
    }

    #[test]
    fn pieces_encode_as_the_whole_text_and_paragraphs_are_the_non_empty_lines() {
        let s = source(false);
        let text = &s.corpus_text[0];
        let whole = s.tokenizer.encode(text, false).unwrap().ids;
        for (threads, piece) in [(1, 1 << 20), (3, 200), (2, 1)] {
            assert_eq!(encode_in_pieces(&s.tokenizer, text, threads, piece).unwrap(), whole, "{threads} threads, {piece}-byte pieces");
        }
        let old: Vec<&str> = text.split('\n').filter(|p| !p.trim().is_empty()).collect();
        let new: Vec<&str> = s.paragraphs[0].iter().map(|r| &text[r.clone()]).collect();
        assert_eq!(old, new);
    }

    #[test]
    fn restated_exercises_answer_with_the_needle_sentence() {
        let mut s = source(true);
        s.sentence_settings = Some(SentenceExerciseSettings { elsewhere: 2, ..Default::default() });
        let mut restated = 0;
        for seed in 0..30u64 {
            let (seq, w) = s.exercise(512, seed, s.vary_prompt_length).unwrap();
            assert_eq!((seq.len(), w.len()), (513, 513));
            let Some(last) = w.iter().rposition(|&x| x == 8.0) else { continue };
            let first = w.iter().position(|&x| x == 8.0).unwrap();
            assert_eq!(seq[last], EOS);
            let answer = s.tokenizer.decode(&seq[first..last]).unwrap();
            let prompt = s.tokenizer.decode(&seq[..first]).unwrap();
            // The answer is a whole sentence of the context, stated before the question.
            let book = &prompt[..prompt.find("</book>").unwrap()];
            assert!(book.contains(answer.trim()), "{answer:?} is not in the context");
            assert!(answer.trim_end().ends_with(['.', '!', '?']), "{answer:?}");
            restated += 1;
        }
        assert!(restated >= 25, "only {restated} of 30 rows were exercises");
        // From the passage's own text the same holds (the test corpus is one text).
        s.same_document = true;
        for seed in 0..10u64 {
            let (seq, w) = s.exercise(512, seed, s.vary_prompt_length).unwrap();
            let (Some(first), Some(last)) = (w.iter().position(|&x| x == 8.0), w.iter().rposition(|&x| x == 8.0)) else { continue };
            let answer = s.tokenizer.decode(&seq[first..last]).unwrap();
            assert!(s.tokenizer.decode(&seq[..first]).unwrap().contains(answer.trim()), "{answer:?}");
        }
        s.same_document = false;
        // In short rows a needle with its near sentences can outgrow the prompt: such a row becomes
        // plain text, not an error that stops training (it stopped stage 3 of v4 at step 1650).
        s.sentence_settings = Some(SentenceExerciseSettings { distractors: 1.0, ..Default::default() });
        let plain = (0..300u64).filter(|&seed| s.exercise(96, seed, s.vary_prompt_length).unwrap().1.iter().all(|&x| x == 1.0)).count();
        assert!((1..300).contains(&plain), "{plain} of 300 rows of 96 tokens were plain text");
    }

    #[test]
    fn follow_up_questions_ask_about_other_sentences_of_the_context() {
        let mut s = source(false);
        s.sentence_settings = Some(SentenceExerciseSettings { natural_facts: 0.5, cue_answers: 1.0, ..Default::default() });
        let before: Vec<_> = (0..6u64).map(|seed| s.exercise(1024, seed, false).unwrap()).collect();
        // Below their shortest length the rows are those of a recipe without follow-ups.
        (s.follow_up_questions, s.follow_up_min_tokens) = (3, 2048);
        let short: Vec<_> = (0..6u64).map(|seed| s.exercise(1024, seed, false).unwrap()).collect();
        assert_eq!(before, short);
        s.follow_up_min_tokens = 1024;
        let (mut rows, mut asked) = (0, 0);
        for seed in 0..20u64 {
            let (seq, w) = s.exercise(1024, seed, false).unwrap();
            assert_eq!((seq.len(), w.len()), (1025, 1025));
            // Runs of answer weight: the first answer, then one a follow-up.
            let mut runs = vec![];
            let mut i = 0;
            while i < w.len() {
                if w[i] == 8.0 {
                    let start = i;
                    while i < w.len() && w[i] == 8.0 {
                        i += 1;
                    }
                    runs.push(start..i);
                } else {
                    i += 1;
                }
            }
            if runs.is_empty() {
                continue; // a row of plain text
            }
            rows += 1;
            assert!(runs.len() <= 4, "{} answers", runs.len());
            let prompt = s.tokenizer.decode(&seq[..runs[0].start]).unwrap();
            let book = &prompt[..prompt.find("</book>").unwrap()];
            for pair in runs.windows(2) {
                let (answer, next) = (&pair[0], &pair[1]);
                assert_eq!(seq[answer.end - 1], EOS, "an answer ends with EOS");
                let between = s.tokenizer.decode(&seq[answer.end..next.start]).unwrap();
                assert!(between.starts_with("\nBased on the content of the book, Question: "), "{between:?}");
                assert!(between.ends_with("\nAnswer:"), "{between:?}");
                // Its answer restates a sentence of the context, which the first question did not ask about.
                let restated = s.tokenizer.decode(&seq[next.start..next.end - 1]).unwrap();
                assert!(book.contains(restated.trim()), "{restated:?} is not in the context");
                let first = s.tokenizer.decode(&seq[runs[0].start..runs[0].end - 1]).unwrap();
                assert_ne!(first.trim(), restated.trim());
                asked += 1;
            }
        }
        assert!(rows >= 15, "only {rows} of 20 rows were exercises");
        assert!(asked >= rows, "{asked} follow-up questions in {rows} rows");
    }

    #[test]
    fn far_needles_stand_in_the_first_quarter_of_long_prompts_and_leave_short_rows_alone() {
        let mut s = source(false);
        s.sentence_settings = Some(SentenceExerciseSettings { natural_facts: 0.5, cue_answers: 1.0, ..Default::default() });
        // Where the restated answer stands in the context, as a share of the context's bytes.
        let place = |s: &DataSource, seed: u64| -> Option<f64> {
            let (seq, w) = s.exercise(1024, seed, false).unwrap();
            let start = w.iter().position(|&x| x > 1.0)?;
            let end = start + w[start..].iter().position(|&x| x <= 1.0).unwrap_or(w.len() - start);
            let prompt = s.tokenizer.decode(&seq[..start]).unwrap();
            let book = &prompt[..prompt.find("</book>")?];
            let answer = s.tokenizer.decode(&seq[start..end - 1]).unwrap();
            book.find(answer.trim()).map(|at| at as f64 / book.len() as f64)
        };
        let before: Vec<_> = (0..40u64).map(|seed| s.exercise(1024, seed, false).unwrap()).collect();
        // Rows below the shortest length are those of a recipe without the setting.
        (s.far_needles, s.far_needles_min_tokens) = (1.0, 2048);
        assert!((0..40u64).all(|seed| s.exercise(1024, seed, false).unwrap() == before[seed as usize]));
        s.far_needles_min_tokens = 1024;
        let far: Vec<f64> = (0..40u64).filter_map(|seed| place(&s, seed)).collect();
        s.far_needles = 0.0;
        let anywhere: Vec<f64> = (0..40u64).filter_map(|seed| place(&s, seed)).collect();
        assert!(far.len() >= 25 && anywhere.len() >= 25, "{} and {} rows with a found answer", far.len(), anywhere.len());
        // Near sentences before the needle and the restated answer's offset in it leave a little room.
        assert!(far.iter().all(|&x| x < 0.35), "{far:?}");
        assert!(anywhere.iter().filter(|&&x| x > 0.5).count() * 4 > anywhere.len(), "{anywhere:?}");
    }

    #[test]
    fn far_repeats_copy_spans_of_the_first_third_into_the_last_and_leave_other_rows_alone() {
        let mut s = source(false);
        // Distinct consecutive tokens: each copied token has one source, at its id's offset from the row's first.
        s.corpus_tokens = (0..6000u32).map(|i| 3 + i).collect();
        s.far_repeat_weight = 3.0;
        let t = 1536;
        for seed in 0..20u64 {
            let (seq, w) = s.far_repeat_text(t, seed);
            assert_eq!((seq.len(), w.len()), (t + 1, t + 1));
            let first = seq[0];
            let changed: Vec<usize> = (0..=t).filter(|&i| seq[i] != first + i as u32).collect();
            for &i in &changed {
                let source = (seq[i] - first) as usize;
                assert!(source < (t + 1) / 3 && i >= t + 1 - (t + 1) / 3, "seed {seed}: token {i} copied from {source}");
                assert!(i - source >= t / 3, "seed {seed}: a copy {} tokens after its source", i - source);
            }
            let weighted: Vec<usize> = (0..=t).filter(|&i| w[i] == 3.0).collect();
            assert!(weighted.iter().all(|i| changed.contains(i)), "seed {seed}: a weighted token that is no copy");
            assert!(w.iter().all(|&x| x == 1.0 || x == 3.0));
            // Each weighted token follows the copied token before it: its cue is in the row.
            assert!(weighted.iter().all(|&i| changed.contains(&(i - 1)) && seq[i] == seq[i - 1] + 1), "seed {seed}");
            let copies = t / FAR_REPEAT_STRETCH;
            assert_eq!(changed.len() - weighted.len(), copies * FAR_REPEAT_CUE, "seed {seed}: the copies' unforeseeable first tokens");
            assert!(weighted.len() >= copies * (FAR_REPEAT_SHORTEST - FAR_REPEAT_CUE), "seed {seed}: {} weighted", weighted.len());
        }
        // In batches: rows below the shortest length, or a share of 0, keep the stream of a recipe without it.
        s.lengths = vec![LengthRecipe { tokens: 1024, batch: 3, share: 1.0, exercise_tokens: None }];
        let before: Vec<Batch> = (0..6).map(|step| s.batch(step).unwrap()).collect();
        (s.far_repeats, s.far_repeats_min_tokens) = (1.0, 2048);
        assert!((0..6).all(|step| s.batch(step).unwrap().weights == before[step].weights));
        (s.far_repeats, s.far_repeats_min_tokens) = (0.0, 1024);
        assert!((0..6).all(|step| s.batch(step).unwrap().inputs == before[step].inputs));
        s.far_repeats = 1.0;
        for step in 0..6 {
            let b = s.batch(step).unwrap();
            let rows: Vec<&[f32]> = b.weights.chunks(1024).collect();
            assert!(
                rows.iter().all(|r| r.iter().filter(|&&x| x == 3.0).count() >= 2 * (FAR_REPEAT_SHORTEST - FAR_REPEAT_CUE) - 2),
                "step {step}"
            );
        }
        s.far_repeats = 0.5;
        let repeat_rows: usize = (0..20).map(|step| s.batch(step).unwrap().weights.chunks(1024).filter(|r| r.contains(&3.0)).count()).sum();
        assert!((15..=45).contains(&repeat_rows), "{repeat_rows} of 60 rows at share 0.5");
    }

    #[test]
    fn far_repeat_settings_out_of_range_are_refused_by_name() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = root.join("docs/lab-v5/recipe-hr13.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        check_recipe(&text, &path).unwrap();
        for (from, to, says) in [
            ("far_repeats = 0.3 ", "far_repeats = 1.5 ", "data.far_repeats must be a share between 0 and 1, not 1.5"),
            (
                "far_repeats_min_tokens = 4096",
                "far_repeats_min_tokens = 256",
                "data.far_repeats needs data.far_repeats_min_tokens of at least 512, not 256",
            ),
            ("far_repeat_weight = 2.0", "far_repeat_weight = -1.0", "data.far_repeat_weight must be a loss weight of 0 or more, not -1"),
        ] {
            assert!(text.contains(from), "{from}");
            let err = format!("{:#}", check_recipe(&text.replace(from, to), &path).unwrap_err());
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn follow_up_settings_out_of_range_are_refused_by_name() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = root.join("docs/lab-v5/recipe-f13.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        check_recipe(&text, &path).unwrap();
        let too_many = text.replace("follow_up_questions = 4 ", "follow_up_questions = 9 ");
        let err = format!("{:#}", check_recipe(&too_many, &path).unwrap_err());
        assert!(err.contains("data.follow_up_questions must be at most 8, not 9"), "{err}");
        let unrestated = text.replace("restate = true", "restate = false");
        let err = format!("{:#}", check_recipe(&unrestated, &path).unwrap_err());
        assert!(err.contains("data.follow_up_questions needs data.restate = true"), "{err}");
    }

    #[test]
    fn a_stage_whose_recipe_describes_another_model_than_its_start_is_refused() {
        let (init, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let config = |theta: f64, positions: usize, tied: Option<bool>| {
            let mut c = serde_json::json!({"model_type": "llama", "vocab_size": 8192, "hidden_size": 384, "intermediate_size": 1024,
                "num_hidden_layers": 8, "num_attention_heads": 12, "num_key_value_heads": 4, "rope_theta": theta,
                "rms_norm_eps": 1e-5, "max_position_embeddings": positions});
            if let Some(t) = tied {
                c["tie_word_embeddings"] = t.into();
            }
            c.to_string()
        };
        let check = |was: String, will: String| {
            std::fs::write(init.path().join("config.json"), was).unwrap();
            std::fs::write(out.path().join("config.json"), will).unwrap();
            check_init_matches(Path::new("r.toml"), init.path(), &ModelSpec::from_config_file(&out.path().join("config.json")).unwrap())
        };
        // A longer context, and a tie flag written where the other leaves it to the default: the same model.
        check(config(1e7, 4096, None), config(1e7, 8448, Some(false))).unwrap();
        let e = check(config(1e7, 8448, Some(true)), config(1e4, 8448, Some(true))).unwrap_err().to_string();
        assert!(e.contains("rope_theta 10000000.0 in") && e.contains("10000.0 in the recipe"), "{e}");
        let e = check(config(1e7, 8448, Some(true)), config(1e7, 8448, None)).unwrap_err().to_string();
        assert!(e.contains("tie_word_embeddings true in") && !e.contains("rope_theta 1"), "{e}");
    }

    #[test]
    fn answer_first_facts_reach_the_exercise_settings_and_out_of_range_shares_are_refused() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let path = root.join("docs/lab-v5/recipe-ha14.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let settings = parse_recipe(&text, &path).unwrap().data.sentence_settings().unwrap();
        assert_eq!(settings.natural_answer_first, 0.3);
        assert!(settings.answer_first_from_sentence_start);
        // Recipes without the line keep their facts: the setting is 0.
        let before = text.replace("natural_answer_first = 0.3 ", "");
        assert_eq!(parse_recipe(&before, &path).unwrap().data.sentence_settings().unwrap().natural_answer_first, 0.0);
        let too_much = text.replace("natural_answer_first = 0.3 ", "natural_answer_first = 1.3 ");
        let err = format!("{:#}", check_recipe(&too_much, &path).unwrap_err());
        assert!(err.contains("data.natural_answer_first must be a share between 0 and 1, not 1.3"), "{err}");
    }

    /// A recipe that only fails on the GPU machine costs a lent session: every committed one parses.
    #[test]
    fn every_committed_recipe_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut checked = 0;
        for dir in ["public/models/lab", "docs/lab-v3", "docs/lab-v4", "docs/lab-v5", "docs/lab-retrain"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    check_recipe(&text, &path).unwrap_or_else(|e| panic!("{e:#}"));
                    checked += 1;
                }
            }
        }
        assert!(checked >= 20, "only {checked} recipes found");
    }

    /// The prompt and the answer (the tokens weighted 8, less the last: EOS) of a 512-token exercise
    /// row of `seed`; None for a row of plain text.
    fn prompt_and_answer(s: &DataSource, seed: u64) -> Option<(String, String)> {
        let (seq, w) = s.exercise(512, seed, s.vary_prompt_length).unwrap();
        let (first, last) = (w.iter().position(|&x| x == 8.0)?, w.iter().rposition(|&x| x == 8.0)?);
        Some((s.tokenizer.decode(&seq[..first]).unwrap(), s.tokenizer.decode(&seq[first..last]).unwrap()))
    }

    #[test]
    fn invented_natural_words_are_copied_from_the_context() {
        let mut s = source(true);
        s.sentence_settings =
            Some(SentenceExerciseSettings { natural_facts: 1.0, cue_answers: 1.0, natural_invented_words: 0.5, ..Default::default() });
        let words_of = |t: &str| -> Vec<String> {
            t.split_whitespace()
                .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
                .filter(|w| !w.is_empty() && !w.chars().any(|c| c.is_ascii_digit()))
                .collect()
        };
        // The words a model could recall: the corpus's and those of the grammar's lists.
        let mut known: std::collections::HashSet<String> = words_of(&s.corpus_text.concat()).into_iter().collect();
        let mut grammar = crate::fact_grammar::FactGrammar::new(1);
        for _ in 0..20_000 {
            known.extend(words_of(&grammar.fact(true).needle));
        }
        let (mut answers, mut invented) = (0, 0);
        for seed in 0..30u64 {
            let Some((prompt, answer)) = prompt_and_answer(&s, seed) else { continue };
            // The answer restates the context, and holds words that neither the corpus nor the
            // grammar's lists hold: only this context does.
            assert!(prompt.contains(answer.trim()), "{answer:?} is not in the context");
            answers += 1;
            invented += usize::from(words_of(&answer).iter().any(|w| !known.contains(w)));
        }
        assert!(answers >= 25, "only {answers} of 30 rows were exercises");
        assert!(invented * 2 >= answers, "{invented} of {answers} answers hold an invented word");
    }

    #[test]
    fn cue_answers_restate_the_needle_from_a_word_of_the_question() {
        let mut s = source(true);
        s.sentence_settings = Some(SentenceExerciseSettings { natural_facts: 0.5, cue_answers: 1.0, ..Default::default() });
        let (mut answers, mut shortened) = (0, 0);
        for seed in 0..30u64 {
            let Some((prompt, answer)) = prompt_and_answer(&s, seed) else { continue };
            let (book, question) = prompt.split_at(prompt.find("</book>").unwrap());
            // Still a run of the context's text, ending where its sentence ends ...
            assert!(book.contains(answer.trim()), "{answer:?} is not in the context");
            assert!(answer.trim_end().ends_with(['.', '!', '?']), "{answer:?}");
            // ... that opens with a word of the question, unless the answer span comes first.
            let opening = answer.split_whitespace().next().unwrap().trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
            if question.to_lowercase().contains(&opening) {
                shortened += 1;
            }
            answers += 1;
        }
        assert!(answers >= 25, "only {answers} of 30 rows were exercises");
        assert!(shortened * 10 >= answers * 7, "{shortened} of {answers} answers open with a word of the question");
    }

    #[test]
    fn repeated_haystacks_are_short_passages_the_prompt_repeats() {
        let mut s = source(false);
        let longest_paragraph = s.paragraphs[0].iter().map(|r| r.len()).max().unwrap();
        let mut r = SplitMix64::new(3);
        assert!((0..20).all(|_| s.passage(2048, &mut r).1.len() >= 2048 * 6));
        s.repeated_haystacks = 1.0;
        for _ in 0..20 {
            let (_, passage) = s.passage(2048, &mut r);
            assert!((300..=3000 + longest_paragraph + 1).contains(&passage.len()), "{}", passage.len());
        }
        // A 2048-token prompt over such a passage holds its sentences many times.
        s.sentence_settings = Some(SentenceExerciseSettings { natural_facts: 1.0, ..Default::default() });
        let (seq, _) = s.exercise(2048, 5, false).unwrap();
        let prompt = s.tokenizer.decode(&seq).unwrap();
        let first_sentence = s.corpus_text[0].split(". ").next().unwrap();
        assert!(prompt.matches(first_sentence).count() >= 3, "{prompt}");
    }

    /// Where each exercise's answer ends (its EOS target), for rows of 256 tokens.
    fn answer_ends(s: &DataSource) -> Vec<usize> {
        (0..40u64)
            .map(|seed| {
                let (seq, w) = s.exercise(256, seed, s.vary_prompt_length).unwrap();
                assert_eq!((seq.len(), w.len()), (257, 257));
                let last = w.iter().rposition(|&x| x == 8.0).expect("an answer");
                assert_eq!(seq[last], EOS, "the answer ends with EOS");
                last
            })
            .collect()
    }

    #[test]
    fn exercises_end_at_the_row_end_unless_prompt_lengths_vary() {
        assert!(answer_ends(&source(false)).iter().all(|&e| e == 256), "a fixed layout ends every answer at the last position");
        let s = source(true);
        let ends = answer_ends(&s);
        let distinct: std::collections::BTreeSet<_> = ends.iter().collect();
        assert!(distinct.len() > 20, "answers end at only {} distinct positions", distinct.len());
        assert!(ends.iter().all(|&e| e >= 150), "prompts stay in the row's last quarter: {ends:?}");
        // After the answer comes corpus text at full weight, not padding.
        let (seq, w) = s.exercise(256, 3, s.vary_prompt_length).unwrap();
        let last = w.iter().rposition(|&x| x == 8.0).unwrap();
        if last < 256 {
            assert!(w[last + 1..].iter().all(|&x| x == 1.0));
            assert!(seq[last + 1..].iter().any(|&t| t != EOS));
        }
    }

    #[test]
    fn packed_rows_hold_several_whole_exercises() {
        let mut s = source(true);
        s.sentence_settings = Some(SentenceExerciseSettings { elsewhere: 1, ..Default::default() });
        let mut exercises = 0;
        for seed in 0..6u64 {
            let (seq, w) = s.packed_exercises(2048, 256, 512, seed).unwrap();
            assert_eq!((seq.len(), w.len()), (2049, 2049));
            assert_eq!(s.packed_exercises(2048, 256, 512, seed).unwrap(), (seq.clone(), w.clone()), "a pure function of the seed");
            // Each answer is a run of answer-weighted tokens ending with EOS, restating a sentence of
            // the prompt since its own BOS.
            let mut i = 0;
            while i < w.len() {
                if w[i] != 8.0 {
                    i += 1;
                    continue;
                }
                let end = i + w[i..].iter().position(|&x| x != 8.0).unwrap_or(w.len() - i);
                assert_eq!(seq[end - 1], EOS, "an answer ends with EOS");
                let bos = seq[..i].iter().rposition(|&t| t == BOS).expect("each exercise opens with BOS");
                let answer = s.tokenizer.decode(&seq[i..end - 1]).unwrap();
                assert!(s.tokenizer.decode(&seq[bos..i]).unwrap().contains(answer.trim()), "{answer:?} is not in its own prompt");
                exercises += 1;
                i = end;
            }
        }
        assert!(exercises >= 6 * 3, "{exercises} exercises in 6 rows of 2048 tokens packed with 256-512-token exercises");
    }
}
