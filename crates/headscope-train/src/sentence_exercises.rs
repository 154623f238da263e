//! Retrieval exercises of any sentence shape, answered by restating the sentence: the training data of
//! lab models from v4 on.
//!
//! The template exercises of [`crate::exercises`] taught lab models up to v3 to find facts in the
//! generator's own sentence shapes only ("The X of Y is ..."): a student's needle in another shape was
//! missed. Here the needle is, most of the time, a sentence of the corpus itself, in whatever shape the
//! corpus wrote it, with some of its words replaced by invented ones so that it cannot be recalled from
//! memory; the question names some of the sentence's words in another order and form; sentences near it
//! share words with the question but state something else; further facts sit elsewhere in the context.
//! The answer is the whole sentence, restated, as large models answer NIAH questions: then no rule about
//! where an answer starts inside a sentence (which depends on the sentence's shape) has to be learnt,
//! only which sentence the question points to, and copying it.
//!
//! Where this sits: the trainer draws an [`Exercise`], inserts [`Exercise::inserted`] into a corpus
//! passage with the NIAH builder, puts [`Exercise::elsewhere`] at other places of the passage, and
//! trains on [`Exercise::answer`] after the prompt.

use crate::exercises::ExerciseGenerator;
use crate::fact_grammar::FactGrammar;
use headscope_core::cot::CotMode;
use headscope_core::niah::Needle;
use headscope_core::rng::SplitMix64;
use std::collections::HashSet;
use std::sync::Arc;

/// Fewest and most words of a corpus sentence used as a needle.
pub const SENTENCE_WORDS: (usize, usize) = (6, 32);

/// Function words: never the words a question points with, never replaced by invented ones.
const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "nor", "so", "yet", "for", "of", "in", "on", "at", "to", "from", "by", "with", "into", "onto",
    "upon", "about", "over", "under", "after", "before", "as", "than", "that", "this", "these", "those", "there", "here", "which", "who",
    "whom", "whose", "what", "when", "where", "why", "how", "is", "are", "was", "were", "be", "been", "being", "am", "do", "does", "did",
    "have", "has", "had", "will", "would", "shall", "should", "can", "could", "may", "might", "must", "not", "no", "it", "its", "he",
    "him", "his", "she", "her", "hers", "they", "them", "their", "we", "us", "our", "you", "your", "ye", "thee", "thou", "thy", "i", "me",
    "my", "if", "then", "all", "any", "some", "every", "each", "also", "only", "very", "unto", "hath", "shalt", "thereof", "up", "out",
    "down", "off", "again", "one", "two", "more", "most", "such", "own", "same", "other", "too", "just", "now", "even", "because", "while",
    "though", "through", "between", "against", "without", "within", "whether", "let", "said", "saith",
];

/// Syllables of invented names and words (distinct from the template generator's, so that names here
/// form another population; none of the held-out needles' names can be spelt from either).
const SYLLABLES: &[&str] = &[
    "ar", "bel", "cas", "dun", "el", "fal", "gor", "hask", "im", "jul", "kor", "lev", "mun", "nis", "ob", "pim", "quor", "rud", "sav",
    "tam", "ub", "vel", "wyn", "xa", "yor", "zel", "bri", "cle", "dro", "fin", "gla", "hob", "ket", "lor", "mab", "nid", "orp", "pes",
    "rin", "sto", "tev", "ung", "vor", "wes",
];

/// Question openings: a question word and, where English wants one, an auxiliary.
const OPENINGS: &[&str] = &[
    "What",
    "What is",
    "What was",
    "What did",
    "What does",
    "What do",
    "What happened when",
    "Who",
    "Who is",
    "Who was",
    "Who did",
    "Where",
    "Where is",
    "Where did",
    "Where does",
    "When",
    "When did",
    "When was",
    "When will",
    "Why",
    "Why did",
    "Why does",
    "Why is",
    "Why was",
    "How",
    "How did",
    "How does",
    "How is",
    "How many",
    "How much",
    "How long",
    "Which",
    "Whose",
    "In what way did",
    "For what reason did",
    "What do we learn about how",
    "What is said about why",
    "At what time did",
    "To whom did",
    "From where did",
];

/// Questions that point at a sentence by its words without a question word's grammar.
const ABOUT: &[&str] = &[
    "What does the book say about",
    "What does the text tell us about",
    "What do we learn about",
    "What is written about",
    "What is said about",
    "What did the story say about",
    "Which sentence mentions",
    "What is stated about",
    "Remind me, what about",
    "What was the detail about",
];

/// Corpus sentences that can become needles.
#[derive(Debug, Default)]
pub struct SentencePool {
    sentences: Vec<String>,
    /// The sentences of each text given to [`SentencePool::from_texts`], as a range of `sentences`.
    documents: Vec<std::ops::Range<usize>>,
}

impl SentencePool {
    /// The sentences of `texts` (one paragraph a line) that read as a needle: 6-32 words, starting with a
    /// capital letter, ending with `.`, `!` or `?`, of letters mostly.
    /// Reserved needles (see [`crate::exercises::reserved_needles`]) and sentences that name two of the
    /// distinctive words (names, numbers) of one of them (its one, if it has one) are left out, so that
    /// no corpus can bring an evaluation fact into training.
    pub fn from_texts(texts: &[String]) -> Self {
        let reserved = reserved_distinctive();
        let reserved_text = reserved_normalised();
        let mut sentences = Vec::new();
        let mut documents = Vec::new();
        for text in texts {
            let first = sentences.len();
            for paragraph in text.lines() {
                sentences.extend(
                    split_sentences(paragraph)
                        .into_iter()
                        .filter(|s| usable_sentence(s))
                        .filter(|s| !reserved_text.contains(&normalise(s)) && !names_a_reserved_fact(s, reserved))
                        .map(str::to_owned),
                );
            }
            documents.push(first..sentences.len());
        }
        SentencePool { sentences, documents }
    }

    /// Number of usable sentences.
    pub fn len(&self) -> usize {
        self.sentences.len()
    }

    /// Whether the pool has no sentence.
    pub fn is_empty(&self) -> bool {
        self.sentences.is_empty()
    }

    fn pick(&self, rng: &mut SplitMix64) -> &str {
        &self.sentences[rng.below(self.sentences.len() as u64) as usize]
    }
}

/// The sentences of one paragraph: cut after `.`, `!` or `?` (and any closing quote or bracket) that a
/// space follows.
pub fn split_sentences(paragraph: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = paragraph.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if matches!(bytes[i], b'.' | b'!' | b'?') {
            let mut end = i + 1;
            while end < bytes.len() && matches!(bytes[end], b'"' | b'\'' | b')' | b']') {
                end += 1;
            }
            if end == bytes.len() || bytes[end] == b' ' {
                let s = paragraph[start..end].trim();
                if !s.is_empty() {
                    out.push(s);
                }
                start = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    let rest = paragraph[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

fn usable_sentence(s: &str) -> bool {
    let words = s.split_whitespace().count();
    let letters = s.chars().filter(|c| c.is_ascii_alphabetic()).count();
    (SENTENCE_WORDS.0..=SENTENCE_WORDS.1).contains(&words)
        && s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.ends_with(['.', '!', '?'])
        && s.is_ascii()
        && letters * 10 >= s.len() * 7
        && !s.contains(['<', '>', '{', '}', '|', '_', '*', '#', '=', '\\', '[', ']'])
}

/// A word's letters, lower-cased, without surrounding punctuation: what questions and sentences are
/// compared by.
fn bare(word: &str) -> String {
    word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()
}

/// The words of a sentence that identify its fact: capitalised words after its first (names) and words
/// with digits other than one- and two-digit numbers (which any text has), lower-cased.
fn distinctive_words(sentence: &str) -> HashSet<String> {
    sentence
        .split_whitespace()
        .enumerate()
        .filter(|(i, w)| {
            let core = w.trim_matches(|c: char| !c.is_alphanumeric());
            (core.chars().any(|c| c.is_ascii_digit()) && !(core.len() <= 2 && core.chars().all(|c| c.is_ascii_digit())))
                || (*i > 0 && core.starts_with(|c: char| c.is_uppercase()) && !STOPWORDS.contains(&core.to_lowercase().as_str()))
        })
        .map(|(_, w)| bare(w))
        .filter(|w| !w.is_empty())
        .collect()
}

/// Whether `sentence` names two distinctive words of one of `reserved` (its only one, if it has one).
fn names_a_reserved_fact(sentence: &str, reserved: &[HashSet<String>]) -> bool {
    let words = distinctive_words(sentence);
    !words.is_empty() && reserved.iter().any(|r| !r.is_empty() && r.intersection(&words).count() >= r.len().min(2))
}

/// Where a restated answer to `needle` starts when it starts from the question's words: at the first
/// content word of the sentence (not a function word, three letters or more) that the question also
/// names, but never after the answer span (`real_needle`) starts, so that the answer still holds it
/// ("In 1998 Maria planted ..." asked "When did Maria plant ...?" starts at "In"). A sentence that
/// shares no such word with its question starts at its span, or at 0 where the span is the whole
/// sentence (corpus sentences): such a span does not hold the start back.
pub fn cue_start(needle: &Needle) -> usize {
    cue_scan(needle).0
}

/// [`cue_start`], except that a needle whose answer span stands before every word the question names
/// ("There are exactly 317 steps between the harbour and the chapel", asked "How many steps are there
/// between the harbour and the chapel?") is restated from the sentence's first word, not from the span.
/// Nothing in the question points at the span's first word, so an answer that starts there starts at a
/// place the model must guess; the sentence's first word follows the previous sentence's end, a place
/// the text marks, found by looking back from the question's word. Spans that are the whole sentence,
/// open with a named word or follow one start where [`cue_start`] says.
pub fn cue_start_or_sentence_start(needle: &Needle) -> usize {
    match cue_scan(needle) {
        (_, true) => 0,
        (start, false) => start,
    }
}

/// [`cue_start`]'s walk: where it stops, and whether it stopped at the answer span with no word the
/// question names before it or opening it.
fn cue_scan(needle: &Needle) -> (usize, bool) {
    let sentence = needle.needle.as_str();
    let asked: HashSet<String> = needle.question.split_whitespace().map(bare).filter(|w| !w.is_empty()).collect();
    let named = |w: &str| is_content(w) && asked.contains(&bare(w));
    let whole = needle.real_needle.len() + 1 >= sentence.trim_end().len();
    let span_start = if whole { sentence.len() } else { sentence.find(needle.real_needle.as_str()).unwrap_or(0) };
    let mut offset = 0;
    for word in sentence.split_inclusive(char::is_whitespace) {
        let w = word.trim_end();
        if offset >= span_start {
            let opening = sentence[span_start..].split_whitespace().next().unwrap_or("");
            return (span_start, !named(opening));
        }
        if named(w) {
            // From the word's first letter, not from punctuation before it ('"Marrow' starts at 'M').
            return (offset + w.find(|c: char| c.is_alphanumeric()).unwrap_or(0), false);
        }
        offset += word.len();
    }
    (0, false)
}

/// A sentence that opens as `e`'s needle does, up to the last run of words the question names before
/// the answer span, and goes on with `tail`: "The best thing to do in" + "the evenings people sat
/// outside." for "The best thing to do in San Francisco is eat a sandwich ...", asked "What is the
/// best thing to do in San Francisco?". The shared opening holds a word the question names from where
/// the answer's restatement starts, so an answer copied from either sentence begins the same; `None`
/// where the needle has no such two places (one run of named words, or the whole sentence is the span),
/// where the tail names a word of the question, or where the sentence would hold the answer span.
pub fn opening_lookalike(e: &Exercise, tail: &str) -> Option<String> {
    let sentence = e.needle.needle.as_str();
    let span = e.needle.real_needle.as_str();
    let asked: HashSet<String> = e.needle.question.split_whitespace().map(bare).filter(|w| !w.is_empty()).collect();
    let named = |w: &str| is_content(w) && asked.contains(&bare(w));
    let span_start = sentence.find(span).filter(|_| span.len() + 1 < sentence.trim_end().len())?;
    // Byte offset and word, for the words before the span.
    let mut words = Vec::new();
    let mut offset = 0;
    for word in sentence.split_inclusive(char::is_whitespace) {
        if offset >= span_start {
            break;
        }
        words.push((offset, word.trim_end()));
        offset += word.len();
    }
    let last = words.iter().rposition(|(_, w)| named(w))?;
    let run = (0..=last).rev().take_while(|&i| named(words[i].1)).last()?;
    let cut = words[run].0;
    if cut <= e.answer_start || !words[..run].iter().any(|&(o, w)| o >= e.answer_start && named(w)) {
        return None;
    }
    if tail.split_whitespace().any(named) || tail.split_whitespace().count() < 3 {
        return None;
    }
    let lookalike = format!("{} {}", sentence[..cut].trim_end(), tail.trim());
    (!lookalike.contains(span)).then_some(lookalike)
}

fn is_content(word: &str) -> bool {
    let b = bare(word);
    b.len() >= 3 && !STOPWORDS.contains(&b.as_str())
}

/// One exercise: the sentence to find, the sentences around it, the facts elsewhere, the question.
#[derive(Debug, Clone, PartialEq)]
pub struct Exercise {
    /// The sentence that holds the answer (`needle`), the question, and the answer span
    /// (`real_needle`: what a NIAH test of this needle would score; for corpus sentences the whole
    /// sentence).
    pub needle: Needle,
    /// Sentences placed right before the needle: they share words with the question but are not it.
    pub before: Vec<String>,
    /// Likewise right after the needle.
    pub after: Vec<String>,
    /// Further facts placed elsewhere in the context.
    pub elsewhere: Vec<String>,
    /// Byte offset in the needle sentence where the restated answer starts: 0, or with
    /// [`SentenceExerciseSettings::cue_answers`] the first word the question names (see [`cue_start`]).
    pub answer_start: usize,
    /// The answer when it is not the needle restated: a two-hop lookup's answer alone, or its two facts
    /// and "The answer is ..." ([`crate::two_hop`]).
    pub answer_text: Option<String>,
}

impl Exercise {
    /// The text the trainer writes after the prompt: the needle sentence from `answer_start` on, or
    /// [`Exercise::answer_text`].
    pub fn answer(&self) -> &str {
        self.answer_text.as_deref().unwrap_or(&self.needle.needle[self.answer_start..])
    }

    /// The needle as inserted into the haystack: the near sentences around the needle sentence, with
    /// the whole needle sentence as its answer span.
    pub fn inserted(&self) -> Needle {
        let mut parts: Vec<&str> = self.before.iter().map(String::as_str).collect();
        parts.push(&self.needle.needle);
        parts.extend(self.after.iter().map(String::as_str));
        Needle { needle: parts.join(" "), question: self.needle.question.clone(), real_needle: self.needle.needle.clone() }
    }
}

/// Settings of [`SentenceExerciseGenerator`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SentenceExerciseSettings {
    /// Share of needles that are corpus sentences; the rest are the template generator's facts.
    pub corpus_sentences: f64,
    /// Share of exercises with one or two near sentences that share words with the question.
    pub distractors: f64,
    /// Most further facts placed elsewhere (0..=this many, uniformly).
    pub elsewhere: usize,
    /// Share of answer words the template facts replace by invented ones (their `invented_words`).
    pub invented_words: f64,
    /// Share of needles drawn from [`crate::fact_grammar`]: everyday facts with natural questions, and
    /// near sentences of their own kind. Drawn first; the other shares divide the rest.
    pub natural_facts: f64,
    /// Share of exercises whose answer restates the needle from the first word the question names
    /// ("lighthouse keeper on Marrow Island paints ..." for "Why does the lighthouse keeper ...?"), not
    /// from its first word. A sentence's first word ("The", "In", "Every") is shared by many sentences,
    /// so choosing it is choosing the sentence, with nothing in the question to copy; the question's
    /// own word is one the model can see, and copying on from wherever that word stands in the context
    /// finds the needle's words even when the first choice was not the best cue.
    pub cue_answers: f64,
    /// With `cue_answers`: a needle whose answer span stands before every word the question names is
    /// restated from its first word ([`cue_start_or_sentence_start`]) instead of from the span.
    pub answer_first_from_sentence_start: bool,
    /// Share of the natural facts' names, things, adjectives and spots that are invented words
    /// ([`FactGrammar::with_invented_words`]): what the model restates must then be copied from the
    /// needle, not recalled from the grammar's word lists.
    pub natural_invented_words: f64,
    /// Share of the natural facts written in a clause form ([`FactGrammar::with_clauses`]).
    pub natural_clauses: f64,
    /// Share of the natural facts written with their answer before every word the question names
    /// ([`FactGrammar::with_answer_first`]): the asked circumstance or reason in front, a cleft, an
    /// existential. With `answer_first_from_sentence_start` their answers are restated from the
    /// sentence's first word.
    pub natural_answer_first: f64,
    /// The natural facts' near sentences always answer otherwise ([`FactGrammar::with_distinct_near_answers`]).
    pub near_answers_differ: bool,
    /// Share of near sentences placed elsewhere in the context instead of beside the needle. A
    /// sentence that matches the question in part is not always the needle's neighbour: the page's
    /// village haystack holds "The best thing to do on a sunny day was ..." far from the paper's
    /// needle, and repeats it with the haystack. Models trained with near sentences only beside the
    /// needle learnt to pick between neighbours, and the wide-head chain copied the far look-alike
    /// in all 20 village tests. At 0 no extra random numbers are drawn.
    pub near_elsewhere: f64,
    /// A near sentence placed elsewhere stands there 1 to this many times (uniformly), at different
    /// places: a look-alike that the context repeats, as a short haystack repeated to the length does,
    /// against a needle that stands once. A model that copies by matching counts the copies; this makes
    /// that wrong in long haystacks too. At 0 or 1 no extra random numbers are drawn.
    pub near_copies: usize,
    /// Share of the natural facts' near sentences that are someone else doing the same, with a long run
    /// of the needle's words right before another answer ([`FactGrammar::with_same_event_near`]).
    pub near_same_event: f64,
    /// Share of exercises given a look-alike that opens as the needle does and goes on otherwise
    /// ([`opening_lookalike`]), placed elsewhere in the context 1 to `near_copies` times. Answers restate
    /// the needle from a word of the question, and most often from the question's first word in it
    /// (about three exercises in four), so a model can start its answer without finding the needle and
    /// continue by copying whatever followed those words most often. The page's village haystack holds
    /// "The best thing to do on a sunny day was ..." for "The best thing to do in San Francisco is ...",
    /// and the wide-head models answered with it in 19-20 of 20 tests. Where the two part, the needle
    /// goes on with words the question names ("San Francisco"), the look-alike with words it does not:
    /// this teaches to keep copying what the question names. At 0 no extra random numbers are drawn.
    pub opening_lookalikes: f64,
    /// Share of exercises that are two-hop lookups ([`crate::two_hop`]): the answer fact is the needle,
    /// the bridge fact and facts of the same shape go elsewhere in the context, and the question asks
    /// for the answer alone or to think step by step ([`headscope_core::cot::CotMode`]'s wording).
    pub two_hop: f64,
    /// Of the two-hop exercises, the share asked step by step (answered with both facts, then "The
    /// answer is ..."); the others are asked for the answer alone.
    pub two_hop_reasoning: f64,
}

impl Default for SentenceExerciseSettings {
    fn default() -> Self {
        SentenceExerciseSettings {
            corpus_sentences: 0.75,
            distractors: 0.5,
            elsewhere: 3,
            invented_words: 0.4,
            natural_facts: 0.0,
            cue_answers: 0.0,
            answer_first_from_sentence_start: false,
            natural_invented_words: 0.0,
            natural_clauses: 0.0,
            natural_answer_first: 0.0,
            near_answers_differ: false,
            near_elsewhere: 0.0,
            near_copies: 1,
            near_same_event: 0.0,
            opening_lookalikes: 0.0,
            two_hop: 0.0,
            two_hop_reasoning: 0.5,
        }
    }
}

/// Draws [`Exercise`]s (see the module comment). A pure function of the seed, the pool and the words.
pub struct SentenceExerciseGenerator {
    rng: SplitMix64,
    pool: Arc<SentencePool>,
    words: Arc<Vec<String>>,
    settings: SentenceExerciseSettings,
    reserved: &'static HashSet<String>,
    /// With [`SentenceExerciseGenerator::in_document`]: the pool's sentences to draw from, and the text
    /// (the haystack passage) whose sentences not to draw.
    document: Option<(std::ops::Range<usize>, String)>,
}

impl SentenceExerciseGenerator {
    /// A generator seeded with `seed`, drawing sentences from `pool` and replacement words from `words`
    /// (a corpus split by [`ExerciseGenerator::words_of`]; at least 64 words).
    pub fn new(seed: u64, pool: Arc<SentencePool>, words: Arc<Vec<String>>, settings: SentenceExerciseSettings) -> Self {
        assert!(words.len() >= 64, "the word source needs at least 64 words");
        let reserved = reserved_normalised();
        SentenceExerciseGenerator { rng: SplitMix64::new(seed), pool, words, settings, reserved, document: None }
    }

    /// Draws corpus sentences (needle, near and elsewhere) from text `document` of the pool only, and
    /// none that `passage` holds. With the haystack passage cut from the same text, a needle does not
    /// stand out from its context by style, so only the question's words can find it; and the
    /// unchanged original of a needle is never in the context beside it. A text without usable
    /// sentences leaves the whole pool in use.
    pub fn in_document(mut self, document: usize, passage: &str) -> Self {
        self.document = self.pool.documents.get(document).filter(|r| !r.is_empty()).map(|r| (r.clone(), passage.to_owned()));
        self
    }

    /// A corpus sentence: from the whole pool, or as [`SentenceExerciseGenerator::in_document`] says.
    fn pick_sentence(&mut self) -> String {
        let Some((range, passage)) = &self.document else {
            return self.pool.pick(&mut self.rng).to_owned();
        };
        let sentences = &self.pool.sentences[range.clone()];
        let start = self.rng.below(sentences.len() as u64) as usize;
        // The first sentence from a random start on that the passage does not hold (nearly always the
        // first one tried: a passage is a small part of a text).
        let free = (0..sentences.len()).map(|k| &sentences[(start + k) % sentences.len()]).find(|s| !passage.contains(s.as_str()));
        free.unwrap_or(&sentences[start]).clone()
    }

    /// The next exercise (never a reserved needle, never one whose answer cannot be found in it).
    pub fn next_exercise(&mut self) -> Exercise {
        loop {
            let e = self.draw();
            if !self.reserved.contains(&normalise(&e.needle.needle))
                && e.inserted().answer_range().is_ok()
                && !self.names_reserved_facts(&e)
            {
                return e;
            }
        }
    }

    /// Whether a sentence of `e` that the pool did not vet (a natural or template fact, a changed
    /// sentence) names two distinctive words of a reserved needle.
    fn names_reserved_facts(&self, e: &Exercise) -> bool {
        let reserved = reserved_distinctive();
        std::iter::once(&e.needle.needle)
            .chain(&e.before)
            .chain(&e.after)
            .chain(&e.elsewhere)
            .chain(std::iter::once(&e.needle.question))
            .any(|s| names_a_reserved_fact(s, reserved))
    }

    fn draw(&mut self) -> Exercise {
        // No draw at all when the share is 0, so that recipes without two-hop lookups keep their stream.
        if self.settings.two_hop > 0.0 && self.rng.unit() < self.settings.two_hop {
            return self.two_hop_exercise();
        }
        let mut e = self.draw_restating_whole();
        // No draw at all when the share is 0, so that recipes without cue answers keep their stream.
        if self.settings.cue_answers > 0.0 && self.rng.unit() < self.settings.cue_answers {
            e.answer_start =
                if self.settings.answer_first_from_sentence_start { cue_start_or_sentence_start(&e.needle) } else { cue_start(&e.needle) };
        }
        // No draw at all when the share is 0, so that recipes without them keep their stream.
        if self.settings.opening_lookalikes > 0.0 && self.rng.unit() < self.settings.opening_lookalikes {
            let tail = self.pick_tail();
            if let Some(lookalike) = opening_lookalike(&e, &tail) {
                let copies = self.near_copy_count();
                e.elsewhere.extend(std::iter::repeat_n(lookalike, copies));
            }
        }
        e
    }

    /// How many times a look-alike placed elsewhere stands there: 1 to `near_copies` (no draw at 1).
    fn near_copy_count(&mut self) -> usize {
        if self.settings.near_copies > 1 {
            1 + self.rng.below(self.settings.near_copies as u64) as usize
        } else {
            1
        }
    }

    /// The end of another sentence (a corpus sentence, or a template fact where the pool is empty)
    /// without its first one to three words: how an [`opening_lookalike`] goes on.
    fn pick_tail(&mut self) -> String {
        let sentence = if self.pool.is_empty() { self.other_fact() } else { self.pick_sentence() };
        let words: Vec<&str> = sentence.split_whitespace().collect();
        let drop = (1 + self.rng.below(3) as usize).min(words.len().saturating_sub(4));
        words[drop..].join(" ")
    }

    /// A two-hop lookup: the answer fact as the needle, the bridge and the other chains' facts elsewhere
    /// (in random order), the question with the wording of the mode it is asked in.
    fn two_hop_exercise(&mut self) -> Exercise {
        let fact = crate::two_hop::draw(&mut self.rng);
        let step_by_step = self.rng.unit() < self.settings.two_hop_reasoning;
        let mode = if step_by_step { CotMode::StepByStep } else { CotMode::Direct };
        let mut elsewhere = fact.distractors.clone();
        elsewhere.push(fact.bridge.clone());
        self.rng.shuffle(&mut elsewhere);
        let answer_text = if step_by_step { fact.reasoning() } else { fact.answer.clone() };
        Exercise {
            needle: Needle {
                needle: fact.answer_fact,
                question: format!("{} {}", fact.question, mode.instruction()),
                real_needle: fact.answer,
            },
            before: Vec::new(),
            after: Vec::new(),
            elsewhere,
            answer_start: 0,
            answer_text: Some(answer_text),
        }
    }

    fn draw_restating_whole(&mut self) -> Exercise {
        // No draw at all when the share is 0, so that recipes without natural facts keep their stream.
        if self.settings.natural_facts > 0.0 && self.rng.unit() < self.settings.natural_facts {
            return self.natural_exercise();
        }
        let from_corpus = !self.pool.is_empty() && self.rng.unit() < self.settings.corpus_sentences;
        let (needle, cues) = if from_corpus { self.corpus_needle() } else { self.template_needle() };
        let (mut before, mut after, mut far) = (Vec::new(), Vec::new(), Vec::new());
        if self.rng.unit() < self.settings.distractors {
            for _ in 0..1 + self.rng.below(2) {
                let Some(d) = self.distractor(&needle.needle, &cues) else { continue };
                self.place_near(d, &mut before, &mut after, &mut far);
            }
        }
        let n_else = self.rng.below(self.settings.elsewhere as u64 + 1) as usize;
        let mut elsewhere: Vec<String> = (0..n_else).map(|_| self.other_fact()).collect();
        elsewhere.extend(far);
        Exercise { needle, before, after, elsewhere, answer_start: 0, answer_text: None }
    }

    /// Puts a near sentence before or after the needle, or (as often as `near_elsewhere` says) among
    /// the sentences placed elsewhere in the context.
    fn place_near(&mut self, near: String, before: &mut Vec<String>, after: &mut Vec<String>, far: &mut Vec<String>) {
        if self.settings.near_elsewhere > 0.0 && self.rng.unit() < self.settings.near_elsewhere {
            let copies = self.near_copy_count();
            for _ in 1..copies {
                far.push(near.clone());
            }
            far.push(near);
        } else if self.rng.below(2) == 0 {
            before.push(near);
        } else {
            after.push(near);
        }
    }

    /// A fact of [`FactGrammar`] with its own near sentences (as often as `distractors` says), and
    /// further facts elsewhere: natural facts or corpus sentences.
    fn natural_exercise(&mut self) -> Exercise {
        let mut grammar = FactGrammar::new(self.rng.next_u64())
            .with_invented_words(self.settings.natural_invented_words)
            .with_clauses(self.settings.natural_clauses)
            .with_answer_first(self.settings.natural_answer_first)
            .with_distinct_near_answers(self.settings.near_answers_differ)
            .with_same_event_near(self.settings.near_same_event);
        let fact = grammar.fact(self.rng.unit() < self.settings.distractors);
        let (mut before, mut after, mut far) = (Vec::new(), Vec::new(), Vec::new());
        for near in fact.near {
            self.place_near(near, &mut before, &mut after, &mut far);
        }
        let n_else = self.rng.below(self.settings.elsewhere as u64 + 1) as usize;
        let mut elsewhere: Vec<String> =
            (0..n_else).map(|_| if self.rng.below(2) == 0 { grammar.fact(false).needle } else { self.other_fact() }).collect();
        elsewhere.extend(far);
        Exercise {
            needle: Needle { needle: fact.needle, question: fact.question, real_needle: fact.answer },
            before,
            after,
            elsewhere,
            answer_start: 0,
            answer_text: None,
        }
    }

    /// A corpus sentence with invented words in it, and a question that points at it; also the
    /// question's words that the sentence has (the cues a distractor shares in part).
    fn corpus_needle(&mut self) -> (Needle, Vec<String>) {
        let sentence = self.pick_sentence();
        let sentence = self.with_invented_words(&sentence);
        let words: Vec<&str> = sentence.split_whitespace().collect();
        let question = self.question(&words);
        let qwords: HashSet<String> = question.split_whitespace().map(bare).collect();
        let cues = words.iter().filter(|w| is_content(w) && qwords.contains(&bare(w))).map(|w| bare(w)).collect();
        let answer = sentence.trim_end_matches(['.', '!', '?']).to_owned();
        (Needle { needle: sentence, question, real_needle: answer }, cues)
    }

    /// A fact of the template generator (its varied shapes), whose question shares its words.
    fn template_needle(&mut self) -> (Needle, Vec<String>) {
        let n = ExerciseGenerator::new(self.rng.next_u64(), self.words.clone())
            .with_invented_words(self.settings.invented_words)
            .with_varied_templates(true)
            .with_answer_words(2, 12)
            .next_needle();
        let qwords: HashSet<String> = n.question.split_whitespace().map(bare).collect();
        let cues = n.needle.split_whitespace().filter(|w| is_content(w) && qwords.contains(&bare(w))).map(bare).collect();
        (n, cues)
    }

    /// Replaces 0-3 content words of `sentence` (85 % of the time at least one) by invented names,
    /// words or numbers, keeping their punctuation.
    fn with_invented_words(&mut self, sentence: &str) -> String {
        let mut words: Vec<String> = sentence.split_whitespace().map(str::to_owned).collect();
        let content: Vec<usize> = (0..words.len()).filter(|&i| is_content(&words[i])).collect();
        if content.is_empty() || self.rng.unit() >= 0.85 {
            return sentence.to_owned();
        }
        let n = (1 + self.rng.below(3) as usize).min(content.len());
        for _ in 0..n {
            let i = content[self.rng.below(content.len() as u64) as usize];
            let new = self.invented(capitalised(&words[i]));
            words[i] = replace_core(&words[i], &new);
        }
        words.join(" ")
    }

    /// An invented name (capitalised), word, or number.
    fn invented(&mut self, capital: bool) -> String {
        match self.rng.below(10) {
            0..=6 => {
                let n = 2 + self.rng.below(2);
                let mut w: String = (0..n).map(|_| SYLLABLES[self.rng.below(SYLLABLES.len() as u64) as usize]).collect();
                if capital || self.rng.below(3) == 0 {
                    w[..1].make_ascii_uppercase();
                }
                w
            }
            7 | 8 => (1 + self.rng.below(4000)).to_string(),
            _ => {
                let letters: String = (0..1 + self.rng.below(2)).map(|_| char::from(b'A' + self.rng.below(26) as u8)).collect();
                format!("{letters}-{}", 1 + self.rng.below(99))
            }
        }
    }

    /// A question about the sentence of `words`: a window of its words (anywhere but, mostly, not its
    /// opening) behind a question word, with words dropped or inflected; or its content words behind
    /// "What does the book say about".
    fn question(&mut self, words: &[&str]) -> String {
        let content: Vec<String> = words.iter().filter(|w| is_content(w)).map(|w| question_word(w)).collect();
        if content.len() >= 2 && self.rng.below(4) == 0 {
            return self.about_question(content);
        }
        let body = self.window_question(words, &content);
        let opening = OPENINGS[self.rng.below(OPENINGS.len() as u64) as usize];
        format!("{opening} {body}?")
    }

    /// "What does the book say about" some of the sentence's content words, in its order or shuffled.
    fn about_question(&mut self, mut picked: Vec<String>) -> String {
        let keep = 1 + self.rng.below(picked.len().min(4) as u64) as usize;
        while picked.len() > keep {
            picked.remove(self.rng.below(picked.len() as u64) as usize);
        }
        if self.rng.below(3) == 0 {
            self.rng.shuffle(&mut picked);
        }
        let joined = match picked.len() {
            1 => picked[0].clone(),
            n => format!("{} and {}", picked[..n - 1].join(", "), picked[n - 1]),
        };
        let about = ABOUT[self.rng.below(ABOUT.len() as u64) as usize];
        format!("{about} {joined}?")
    }

    /// The words of a question's body: a window of 2-7 of the sentence's `words`, changed as
    /// [`SentenceExerciseGenerator::question`] says; `content` are the sentence's content words.
    fn window_question(&mut self, words: &[&str], content: &[String]) -> String {
        // A window of 2-7 words.
        let len = (2 + self.rng.below(6) as usize).min(words.len());
        let latest = words.len() - len;
        let start = if latest > 0 && self.rng.unit() < 0.75 { 1 + self.rng.below(latest as u64) as usize } else { 0 };
        let mut window: Vec<String> = words[start..start + len].iter().map(|w| question_word(w)).collect();
        if window.len() > 3 && self.rng.below(3) == 0 {
            window.remove(self.rng.below(window.len() as u64) as usize);
        }
        if self.rng.below(2) == 0 {
            let k = self.rng.below(window.len() as u64) as usize;
            if is_content(&window[k]) {
                window[k] = inflect(&window[k], self.rng.next_u64());
            }
        }
        // Words from outside the window, to point with more than one place of the sentence, and so
        // that every question names at least two of the sentence's content words (one if it has one).
        let wanted = content.len().min(2).max(usize::from(self.rng.below(3) == 0) + window.iter().filter(|w| is_content(w)).count());
        for _ in 0..8 {
            if content.is_empty() || window.iter().filter(|w| is_content(w)).count() >= wanted {
                break;
            }
            let extra = content[self.rng.below(content.len() as u64) as usize].clone();
            if !window.contains(&extra) {
                let at = self.rng.below(window.len() as u64 + 1) as usize;
                window.insert(at, extra);
            }
        }
        window.join(" ")
    }

    /// A sentence near the needle that shares some of the question's words but says something else:
    /// the needle with part of its cue words and other words replaced, or another corpus sentence with a
    /// cue word spliced in.
    fn distractor(&mut self, needle: &str, cues: &[String]) -> Option<String> {
        (0..4).map(|_| self.distractor_draw(needle, cues)).find(|d| !d.trim().is_empty() && normalise(d) != normalise(needle))
    }

    fn distractor_draw(&mut self, needle: &str, cues: &[String]) -> String {
        if self.pool.is_empty() || self.rng.below(3) != 0 {
            self.mutated_needle(needle, cues)
        } else {
            self.spliced_sentence(cues)
        }
    }

    /// Another corpus sentence with one of the `cues` in place of one of its content words.
    fn spliced_sentence(&mut self, cues: &[String]) -> String {
        let other = self.pick_sentence();
        let mut words: Vec<String> = other.split_whitespace().map(str::to_owned).collect();
        if let Some(cue) = cues.get(self.rng.below(cues.len().max(1) as u64) as usize) {
            let content: Vec<usize> = (0..words.len()).filter(|&i| is_content(&words[i])).collect();
            if let Some(&i) = content.get(self.rng.below(content.len().max(1) as u64) as usize) {
                words[i] = replace_core(&words[i], cue);
            }
        }
        words.join(" ")
    }

    /// The needle with some of its `cues` and other content words replaced.
    fn mutated_needle(&mut self, needle: &str, cues: &[String]) -> String {
        let mut words: Vec<String> = needle.split_whitespace().map(str::to_owned).collect();
        // Keep at least one cue word when there are two or more; replace at least one.
        let cue_at: Vec<usize> = (0..words.len()).filter(|&i| cues.contains(&bare(&words[i]))).collect();
        let keep = if cue_at.len() >= 2 { Some(cue_at[self.rng.below(cue_at.len() as u64) as usize]) } else { None };
        let mut replaced = 0;
        for (i, word) in words.iter_mut().enumerate() {
            if !is_content(word) || Some(i) == keep {
                continue;
            }
            let is_cue = cue_at.contains(&i);
            if self.rng.unit() < if is_cue { 0.6 } else { 0.35 } || (is_cue && replaced == 0 && i == *cue_at.last().unwrap_or(&0)) {
                let capital = capitalised(word);
                let new = if self.rng.below(2) == 0 {
                    self.invented(capital)
                } else {
                    let w = self.words[self.rng.below(self.words.len() as u64) as usize].to_lowercase();
                    if capital {
                        capitalise(&w)
                    } else {
                        w
                    }
                };
                *word = replace_core(word, &new);
                replaced += 1;
            }
        }
        let out = words.join(" ");
        if out == needle {
            // Nothing could be replaced: another sentence instead.
            return if self.pool.is_empty() { String::new() } else { self.pick_sentence() };
        }
        out
    }

    /// A fact for elsewhere in the context: another corpus sentence with invented words, or a template fact.
    fn other_fact(&mut self) -> String {
        if !self.pool.is_empty() && self.rng.below(2) == 0 {
            let s = self.pick_sentence();
            self.with_invented_words(&s)
        } else {
            self.template_needle().0.needle
        }
    }
}

/// A sentence word as a question would write it: no punctuation; lower case unless a name.
fn question_word(w: &str) -> String {
    let core = w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'' && c != '-');
    let core = core.trim_matches('\'');
    if core.chars().next().is_some_and(|c| c.is_uppercase()) && STOPWORDS.contains(&core.to_lowercase().as_str()) {
        core.to_lowercase()
    } else {
        core.to_owned()
    }
}

/// `word` with its alphanumeric core replaced by `new`, surrounding punctuation kept.
fn replace_core(word: &str, new: &str) -> String {
    let start = word.find(|c: char| c.is_alphanumeric()).unwrap_or(0);
    let end = word.rfind(|c: char| c.is_alphanumeric()).map_or(word.len(), |e| e + word[e..].chars().next().map_or(1, char::len_utf8));
    format!("{}{new}{}", &word[..start], &word[end.max(start)..])
}

/// Whether a word's first letter or digit is an upper-case letter.
fn capitalised(word: &str) -> bool {
    word.trim_start_matches(|c: char| !c.is_alphanumeric()).starts_with(|c: char| c.is_uppercase())
}

fn capitalise(w: &str) -> String {
    let mut c = w.chars();
    c.next().map_or_else(String::new, |f| f.to_uppercase().collect::<String>() + c.as_str())
}

/// Another form of a word, as questions change a verb's form ("keeps" -> "keep", "named" -> "name",
/// "paint" -> "paints"); names and short words stay.
fn inflect(word: &str, draw: u64) -> String {
    if word.len() < 4 || word.chars().next().is_some_and(|c| c.is_uppercase()) || !word.chars().all(|c| c.is_ascii_lowercase()) {
        return word.to_owned();
    }
    if let Some(stem) = word.strip_suffix("ing") {
        return stem.to_owned();
    }
    if let Some(stem) = word.strip_suffix("ed") {
        return if draw.is_multiple_of(2) { stem.to_owned() } else { format!("{stem}e") };
    }
    if word.ends_with('s') && !word.ends_with("ss") {
        return word[..word.len() - 1].to_owned();
    }
    if draw.is_multiple_of(3) {
        format!("{word}ed")
    } else {
        format!("{word}s")
    }
}

/// A sentence reduced to its lower-case words, for comparing needles regardless of spacing and case.
fn normalise(s: &str) -> String {
    headscope_core::metrics::words(s).join(" ")
}

/// The reserved needles' sentences, normalised, made once (a generator is built for every training row).
fn reserved_normalised() -> &'static HashSet<String> {
    static NORMALISED: std::sync::OnceLock<HashSet<String>> = std::sync::OnceLock::new();
    NORMALISED.get_or_init(|| crate::exercises::reserved_sentences().iter().map(|s| normalise(s)).collect())
}

/// The distinctive words of each reserved needle, made once.
fn reserved_distinctive() -> &'static [HashSet<String>] {
    static WORDS: std::sync::OnceLock<Vec<HashSet<String>>> = std::sync::OnceLock::new();
    WORDS.get_or_init(|| crate::exercises::reserved_sentences().iter().map(|s| distinctive_words(s)).collect())
}

/// Inserts each of `sentences` at a random sentence boundary of `passage` within its first `limit`
/// bytes (where there is none, at the start), as a sentence of its own.
pub fn insert_sentences(passage: &str, sentences: &[String], limit: usize, rng: &mut SplitMix64) -> String {
    let mut out = passage.to_owned();
    for s in sentences.iter().filter(|s| !s.trim().is_empty()) {
        let bound = out.len().min(limit);
        let boundaries: Vec<usize> = out[..floor_boundary(&out, bound)]
            .match_indices(". ")
            .map(|(i, _)| i + 2)
            .chain(out[..floor_boundary(&out, bound)].match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let at = if boundaries.is_empty() { 0 } else { boundaries[rng.below(boundaries.len() as u64) as usize] };
        out.insert_str(at, &format!("{s} "));
    }
    out
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {

    fn asked(needle: &str, question: &str, span: &str) -> String {
        let n = Needle { needle: needle.into(), question: question.into(), real_needle: span.into() };
        n.needle[cue_start(&n)..].to_owned()
    }

    #[test]
    fn cue_answers_start_at_the_first_word_the_question_names() {
        let lighthouse = "The lighthouse keeper on Marrow Island paints the door blue every spring to keep the salt away.";
        let why = "Why does the lighthouse keeper on Marrow Island paint the door blue every spring?";
        assert_eq!(
            asked(lighthouse, why, "to keep the salt away"),
            "lighthouse keeper on Marrow Island paints the door blue every spring to keep the salt away."
        );
        // A name that opens the sentence is its own cue; function words are never cues.
        let keys = "Professor Anand keeps his spare keys in a blue teapot.";
        assert_eq!(asked(keys, "Where does Professor Anand keep his spare keys?", "in a blue teapot"), keys);
        let mill = "In the end the mayor of Dunmore sold the mill.";
        assert_eq!(asked(mill, "Who sold the mill in the end?", "the mayor of Dunmore"), "end the mayor of Dunmore sold the mill.");
        // Never past the answer span's start, so that the answer keeps it.
        assert_eq!(
            asked("In 1998 Maria planted an oak tree.", "When did Maria plant an oak tree?", "In 1998"),
            "In 1998 Maria planted an oak tree."
        );
        assert_eq!(
            asked("Every winter, Jo burns a \"Straw\" whale.", "What does Jo burn every winter?", "a \"Straw\" whale"),
            "winter, Jo burns a \"Straw\" whale."
        );
        // Punctuation before the cue stays out; a span that is the whole sentence does not hold it back.
        let quoted = "They called it \"Marrow\" after the island.";
        assert_eq!(asked(quoted, "What is marrow named after?", quoted.trim_end_matches('.')), "Marrow\" after the island.");
        // Nothing in common: the whole sentence.
        assert_eq!(asked("Rain fell all night.", "What happened?", "Rain fell all night"), "Rain fell all night.");
    }

    #[test]
    fn answers_that_come_first_are_restated_from_the_sentence_start() {
        let first = |needle: &str, question: &str, span: &str| {
            let n = Needle { needle: needle.into(), question: question.into(), real_needle: span.into() };
            n.needle[cue_start_or_sentence_start(&n)..].to_owned()
        };
        // The span before every named word: from the first word, where cue_start stops at the span.
        let stairs = "There are exactly 212 stairs between the mill and the bell tower in Oskarby.";
        let how_many = "How many stairs are there between the mill and the bell tower in Oskarby?";
        assert_eq!(asked(stairs, how_many, "212"), "212 stairs between the mill and the bell tower in Oskarby.");
        assert_eq!(first(stairs, how_many, "212"), stairs);
        let storm = "Because of a storm over the pass, the Vellan choir sang in the barn that year.";
        assert_eq!(first(storm, "Why did the Vellan choir sing in the barn that year?", "a storm over the pass"), storm);
        // A span that opens with a named word, or follows one, or is the whole sentence: as cue_start.
        let lantern = "It was the blue lantern that Ida carried home.";
        assert_eq!(first(lantern, "Which lantern did Ida carry home?", "blue lantern"), lantern);
        let glass = "It was the lantern of blue glass that Ida carried home.";
        let which = "Which lantern did Ida carry home?";
        assert_eq!(first(glass, which, "lantern of blue glass"), "lantern of blue glass that Ida carried home.");
        assert_eq!(first(glass, which, "lantern of blue glass"), asked(glass, which, "lantern of blue glass"));
        let lighthouse = "The lighthouse keeper on Marrow Island paints the door blue every spring to keep the salt away.";
        let why = "Why does the lighthouse keeper on Marrow Island paint the door blue every spring?";
        assert_eq!(first(lighthouse, why, "to keep the salt away"), asked(lighthouse, why, "to keep the salt away"));
        let wool = "Wool from Kestrel Farm is spun in the old chapel.";
        assert_eq!(
            first(wool, "Where is the wool from Kestrel Farm spun?", "in the old chapel"),
            "Wool from Kestrel Farm is spun in the old chapel."
        );
        assert_eq!(first("Rain fell all night.", "What happened?", "Rain fell all night"), "Rain fell all night.");
    }

    #[test]
    fn answer_first_facts_are_restated_from_their_first_word_in_exercises() {
        let base =
            SentenceExerciseSettings { natural_facts: 1.0, cue_answers: 1.0, answer_first_from_sentence_start: true, ..Default::default() };
        let from_start = |share: f64| {
            let mut g = generator(21, SentenceExerciseSettings { natural_answer_first: share, ..base });
            (0..400).filter(|_| g.next_exercise().answer_start == 0).count()
        };
        // Answers restated from the needle's first word: where the question names it (a subject), or
        // where the answer comes first; the setting makes the second kind common.
        let (off, on) = (from_start(0.0), from_start(0.5));
        assert!(on >= off + 80, "{off} of 400 exercises restated from the first word at share 0, {on} at 0.5");
    }

    #[test]
    fn cue_answers_are_tails_of_the_needle_that_keep_the_answer_span() {
        let plain = SentenceExerciseSettings { natural_facts: 0.5, ..Default::default() };
        let mut a = generator(9, plain);
        assert!((0..50).all(|_| a.next_exercise().answer_start == 0));
        let mut b = generator(9, SentenceExerciseSettings { cue_answers: 1.0, ..plain });
        let mut shorter = 0;
        for _ in 0..200 {
            let y = b.next_exercise();
            assert!(y.needle.needle.ends_with(y.answer()), "{:?} is not a tail of {:?}", y.answer(), y.needle.needle);
            // The answer span stays inside the answer.
            assert!(y.answer().contains(y.needle.real_needle.as_str()) || y.needle.real_needle.len() + 1 >= y.needle.needle.len());
            shorter += usize::from(y.answer_start > 0);
        }
        assert!(shorter >= 60, "only {shorter} of 200 cue answers start after the sentence's first word");
        // Answers that come first start at the sentence's start; the rest of the stream is unchanged.
        let mut c = generator(9, SentenceExerciseSettings { cue_answers: 1.0, answer_first_from_sentence_start: true, ..plain });
        let mut b = generator(9, SentenceExerciseSettings { cue_answers: 1.0, ..plain });
        for _ in 0..200 {
            let (x, y) = (b.next_exercise(), c.next_exercise());
            assert_eq!(x.needle, y.needle);
            assert!(y.answer_start == x.answer_start || y.answer_start == 0, "{:?} moved elsewhere than the start", y.needle);
        }
    }

    use super::*;

    fn texts() -> Vec<String> {
        vec![
            "The miller's daughter walked to the market every Tuesday, carrying eggs in a basket. The river was high that year, and the ferry did not run until June. \
             When the bells rang at noon, the children ran out of the school and down to the harbour. Nobody knew who had built the old tower on the hill above the village.\n\
             In the spring of that year the farmers planted barley instead of wheat, because the rain came late. The baker kept his recipes in a tin box under the counter."
                .to_owned(),
            "A man who has never seen the sea cannot imagine how the waves sound at night. The lamps of the town were lit one by one as the evening fell over the square."
                .to_owned(),
        ]
    }

    fn generator(seed: u64, settings: SentenceExerciseSettings) -> SentenceExerciseGenerator {
        let t = texts();
        let words: Vec<String> = t.iter().flat_map(|x| ExerciseGenerator::words_of(x)).collect();
        let words = Arc::new([words.clone(), words.clone(), words.clone(), words].concat());
        SentenceExerciseGenerator::new(seed, Arc::new(SentencePool::from_texts(&t)), words, settings)
    }

    #[test]
    fn sentences_split_at_sentence_ends_only() {
        let s = split_sentences("He said \"Go.\" Then 3.5 miles on! Was it far? yes");
        assert_eq!(s, vec!["He said \"Go.\"", "Then 3.5 miles on!", "Was it far?", "yes"]);
        let pool = SentencePool::from_texts(&texts());
        assert_eq!(pool.len(), 8, "{:?}", pool.sentences);
        assert!(pool.sentences.iter().all(|s| usable_sentence(s)));
    }

    #[test]
    fn two_hop_exercises_chain_a_fact_elsewhere_to_the_needle() {
        let settings = SentenceExerciseSettings { two_hop: 0.3, two_hop_reasoning: 0.5, ..Default::default() };
        let mut g = generator(5, settings);
        let (mut two_hop, mut reasoned) = (0, 0);
        for _ in 0..2000 {
            let e = g.next_exercise();
            let Some(answer) = &e.answer_text else { continue };
            two_hop += 1;
            let span = &e.needle.real_needle;
            assert!(e.needle.needle.contains(span.as_str()), "the answer is a span of the needle: {e:?}");
            assert!(e.elsewhere.iter().all(|f| !f.contains(span.as_str())), "{e:?}");
            if answer.starts_with(span.as_str()) && answer.len() == span.len() {
                assert!(e.needle.question.ends_with(CotMode::Direct.instruction()));
            } else {
                reasoned += 1;
                assert!(e.needle.question.ends_with(CotMode::StepByStep.instruction()));
                assert!(answer.ends_with(&format!("{} The answer is {span}.", e.needle.needle)), "{answer}");
                // The bridge fact it restates first is one of the facts placed elsewhere.
                let bridge = &answer[..answer.find(&e.needle.needle).unwrap()].trim();
                assert!(e.elsewhere.iter().any(|f| f == bridge), "{bridge:?} not in {:?}", e.elsewhere);
            }
        }
        assert!((500..700).contains(&two_hop), "{two_hop} of 2000 two-hop");
        assert!((two_hop * 4 / 10..two_hop * 6 / 10).contains(&reasoned), "{reasoned} of {two_hop} step by step");
        // At share 0 nothing is drawn for it: the stream is the one without the setting.
        let mut a = generator(9, SentenceExerciseSettings::default());
        let mut b = generator(9, SentenceExerciseSettings { two_hop: 0.0, two_hop_reasoning: 0.9, ..Default::default() });
        for _ in 0..50 {
            assert_eq!(a.next_exercise(), b.next_exercise());
        }
    }

    #[test]
    fn exercises_are_valid_varied_and_reproducible() {
        let mut g = generator(7, SentenceExerciseSettings::default());
        let (mut with_near, mut with_else, mut corpus) = (0, 0, 0);
        let mut questions = HashSet::new();
        for _ in 0..2000 {
            let e = g.next_exercise();
            let inserted = e.inserted();
            let range = inserted.answer_range().unwrap();
            assert_eq!(&inserted.needle[range], e.answer(), "the answer span of the insertion is the needle sentence");
            assert!(e.needle.question.ends_with('?'), "{:?}", e.needle.question);
            e.needle.answer_range().unwrap();
            with_near += usize::from(!e.before.is_empty() || !e.after.is_empty());
            with_else += usize::from(!e.elsewhere.is_empty());
            corpus += usize::from(e.needle.real_needle.len() + 1 == e.needle.needle.len());
            questions.insert(e.needle.question.clone());
            // Near sentences are never the needle itself.
            for d in e.before.iter().chain(&e.after) {
                assert_ne!(normalise(d), normalise(&e.needle.needle));
            }
        }
        assert!((800..1200).contains(&with_near), "{with_near} of 2000 with near sentences");
        assert!((1300..1700).contains(&with_else), "{with_else} of 2000 with facts elsewhere");
        assert!((1300..1700).contains(&corpus), "{corpus} of 2000 from the corpus");
        assert!(questions.len() > 1500, "only {} distinct questions", questions.len());
        let mut a = generator(3, SentenceExerciseSettings::default());
        let mut b = generator(3, SentenceExerciseSettings::default());
        assert_eq!(a.next_exercise(), b.next_exercise());
    }

    #[test]
    fn near_sentences_elsewhere_repeat_as_often_as_asked() {
        let settings = |copies| SentenceExerciseSettings {
            distractors: 1.0,
            elsewhere: 0,
            natural_facts: 1.0,
            near_answers_differ: true,
            near_elsewhere: 1.0,
            near_copies: copies,
            ..Default::default()
        };
        // One copy draws nothing more: the exercises stay those of recipes without the setting.
        let (mut a, mut b) = (generator(8, settings(1)), generator(8, SentenceExerciseSettings { near_copies: 0, ..settings(1) }));
        assert!((0..300).all(|_| a.next_exercise() == b.next_exercise()));
        let mut g = generator(8, settings(3));
        let mut times = [0usize; 4];
        for _ in 0..600 {
            let e = g.next_exercise();
            let mut distinct: Vec<&String> = e.elsewhere.iter().collect();
            distinct.sort();
            distinct.dedup();
            for s in distinct {
                let n = e.elsewhere.iter().filter(|t| *t == s).count();
                assert!(n <= 3, "{s:?} stands {n} times");
                times[n] += 1;
            }
        }
        // 1, 2 or 3 copies, about a third each.
        for (n, &count) in times.iter().enumerate().skip(1) {
            assert!(count * 5 > times.iter().sum::<usize>(), "{count} near sentences stand {n} times: {times:?}");
        }
    }

    #[test]
    fn an_opening_lookalike_shares_the_needles_opening_and_parts_where_the_question_names_words() {
        let needle = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.";
        let exercise = |answer_start| Exercise {
            needle: Needle {
                needle: needle.into(),
                question: "What is the best thing to do in San Francisco?".into(),
                real_needle: "eat a sandwich and sit in Dolores Park on a sunny day".into(),
            },
            before: vec![],
            after: vec![],
            elsewhere: vec![],
            answer_start,
            answer_text: None,
        };
        let e = exercise(needle.find("best").unwrap());
        assert_eq!(
            opening_lookalike(&e, "the evenings people sat outside and talked.").as_deref(),
            Some("The best thing to do in the evenings people sat outside and talked.")
        );
        // A tail that names a word of the question would not part from the needle there.
        assert_eq!(opening_lookalike(&e, "evenings in San Jose people sat outside."), None);
        // Restated from "San": nothing the two would share from the answer's first word.
        assert_eq!(opening_lookalike(&exercise(needle.find("San").unwrap()), "the evenings people sat outside."), None);
        // Two runs of named words ("Maria", "spare keys"; "keeps" is not the question's "keep"): the two
        // part before the second. With one run there is no such place.
        let keys = |question: &str| Exercise {
            needle: Needle {
                needle: "Maria keeps her spare keys under the blue flowerpot.".into(),
                question: question.into(),
                real_needle: "under the blue flowerpot".into(),
            },
            ..exercise(0)
        };
        assert_eq!(
            opening_lookalike(&keys("Where does Maria keep her spare keys?"), "the evenings people sat outside.").as_deref(),
            Some("Maria keeps her the evenings people sat outside.")
        );
        let one_run = keys("Where does Maria keep things?");
        assert_eq!(opening_lookalike(&one_run, "the evenings people sat outside."), None);
    }

    #[test]
    fn opening_lookalikes_stand_elsewhere_as_often_as_asked_and_never_hold_the_answer() {
        let settings = |share, copies| SentenceExerciseSettings {
            natural_facts: 0.5,
            cue_answers: 1.0,
            opening_lookalikes: share,
            near_copies: copies,
            ..Default::default()
        };
        // At share 0 nothing more is drawn: the exercises stay those of recipes without the setting.
        let mut a = generator(5, settings(0.0, 3));
        let mut plain = generator(5, SentenceExerciseSettings { cue_answers: 1.0, natural_facts: 0.5, ..Default::default() });
        assert!((0..300).all(|_| a.next_exercise() == plain.next_exercise()));
        let (mut g, mut with, mut copies) = (generator(5, settings(1.0, 3)), 0, [0usize; 4]);
        let n = 600;
        for _ in 0..n {
            let e = g.next_exercise();
            // The needle up to the restated answer's second word.
            let restated: Vec<&str> = e.answer().split_whitespace().collect();
            if restated.len() < 2 {
                continue;
            }
            let opening = format!("{}{} {}", &e.needle.needle[..e.answer_start], restated[0], restated[1]);
            let lookalikes: Vec<&String> = e.elsewhere.iter().filter(|s| *s != &e.needle.needle && s.starts_with(&opening)).collect();
            let Some(first) = lookalikes.first() else { continue };
            with += 1;
            let same = lookalikes.iter().filter(|s| s == &first).count();
            copies[same.min(3)] += 1;
            assert!(!first.contains(&e.needle.real_needle), "{first:?} holds the answer of {:?}", e.needle);
        }
        // About 40 % of exercises have two runs of words the question names before the span (at least a
        // quarter here: the test's texts are short).
        assert!(with * 4 > n, "{with} of {n} exercises got a look-alike");
        assert!(copies[1] > 0 && copies[2] > 0 && copies[3] > 0, "{copies:?}");
    }

    #[test]
    fn near_sentences_go_elsewhere_as_often_as_asked() {
        // Natural facts and corpus needles alike; no facts elsewhere, so `elsewhere` holds only near sentences.
        for natural_facts in [0.0, 1.0] {
            let settings = |share| SentenceExerciseSettings {
                distractors: 1.0,
                elsewhere: 0,
                natural_facts,
                near_answers_differ: true,
                near_elsewhere: share,
                ..Default::default()
            };
            let (mut beside, mut far) = (0, 0);
            let mut g = generator(5, settings(0.5));
            for _ in 0..600 {
                let e = g.next_exercise();
                beside += e.before.len() + e.after.len();
                far += e.elsewhere.len();
                for s in &e.elsewhere {
                    assert_ne!(normalise(s), normalise(&e.needle.needle), "a near sentence is never the needle");
                }
            }
            let all = beside + far;
            assert!(all > 500, "natural {natural_facts}: only {all} near sentences");
            assert!(far * 10 > all * 4 && far * 10 < all * 6, "natural {natural_facts}: {far} of {all} elsewhere at share 0.5");
            let mut g = generator(5, settings(1.0));
            for _ in 0..100 {
                let e = g.next_exercise();
                assert!(e.before.is_empty() && e.after.is_empty(), "share 1 leaves none beside the needle");
            }
            // Share 0 keeps every near sentence beside the needle (and draws nothing extra: the pinned
            // stream of `the_stream_is_the_one_the_v4_recipes_trained_on` has it at 0).
            let mut g = generator(8, settings(0.0));
            let mut with_near = 0;
            for _ in 0..100 {
                let e = g.next_exercise();
                assert!(e.elsewhere.is_empty());
                with_near += usize::from(!e.before.is_empty() || !e.after.is_empty());
            }
            assert!(with_near > 80, "natural {natural_facts}: {with_near} of 100 with near sentences beside the needle");
        }
    }

    #[test]
    fn questions_point_at_their_sentence_more_than_at_the_near_ones() {
        let mut g = generator(11, SentenceExerciseSettings { corpus_sentences: 1.0, distractors: 1.0, elsewhere: 0, ..Default::default() });
        let overlap = |q: &str, s: &str| {
            let q: HashSet<String> = q.split_whitespace().filter(|w| is_content(w)).map(bare).collect();
            s.split_whitespace().filter(|w| is_content(w)).map(bare).collect::<HashSet<_>>().intersection(&q).count()
        };
        let (mut more, mut total) = (0, 0);
        for _ in 0..1000 {
            let e = g.next_exercise();
            let mine = overlap(&e.needle.question, &e.needle.needle);
            assert!(mine >= 1 || e.needle.question.split_whitespace().filter(|w| is_content(w)).count() == 0, "{e:?}");
            for d in e.before.iter().chain(&e.after) {
                total += 1;
                more += usize::from(mine > overlap(&e.needle.question, d));
            }
        }
        // A spliced sentence can by chance share as many words; most near sentences share fewer.
        assert!(more * 10 >= total * 8, "{more} of {total} near sentences share fewer question words");
    }

    #[test]
    fn invented_words_keep_punctuation_and_inflections_change_words() {
        let mut g = generator(5, SentenceExerciseSettings::default());
        let mut changed = 0;
        for _ in 0..200 {
            let s = "The baker kept his recipes in a tin box, under the counter.";
            let t = g.with_invented_words(s);
            assert_eq!(t.split_whitespace().count(), s.split_whitespace().count());
            assert!(t.ends_with('.') && t.contains(','), "{t}");
            changed += usize::from(t != s);
        }
        assert!((150..=190).contains(&changed), "{changed} of 200 changed");
        assert_eq!(inflect("keeps", 0), "keep");
        assert_eq!(inflect("named", 0), "nam");
        assert_eq!(inflect("named", 1), "name");
        assert_eq!(inflect("paint", 1), "paints");
        assert_eq!(inflect("Anand", 1), "Anand");
    }

    /// Lab model v4's recipes rely on the generator drawing, setting for setting, what it drew when
    /// they ran: a change that alters the stream must come as a new option.
    #[test]
    fn the_stream_is_the_one_the_v4_recipes_trained_on() {
        let mut g = generator(11, SentenceExerciseSettings::default());
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..2000 {
            let e = g.next_exercise();
            let text = format!("{:?}|{:?}|{:?}|{:?}\n", e.needle, e.before, e.after, e.elsewhere);
            for b in text.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        assert_eq!(h, 0xb3e1_7c5b_255f_6254, "{h:#x}");
    }

    #[test]
    fn in_document_draws_that_texts_sentences_and_none_of_the_passage() {
        let t = texts();
        let pool = SentencePool::from_texts(&t);
        assert_eq!(pool.documents, vec![0..6, 6..8]);
        let passage = "A man who has never seen the sea cannot imagine how the waves sound at night.";
        let settings = SentenceExerciseSettings { corpus_sentences: 1.0, distractors: 1.0, elsewhere: 2, ..Default::default() };
        for seed in 0..200 {
            let e = generator(seed, settings).in_document(1, passage).next_exercise();
            // Text 1 has two sentences and the passage holds one: every corpus sentence is the other,
            // with invented words (spliced near sentences have a cue word in place of one of theirs).
            let lamps = |s: &str| s.split_whitespace().filter(|w| "The lamps of the town were lit one by one".contains(w)).count() >= 4;
            assert!(lamps(&e.needle.needle), "{:?}", e.needle.needle);
            assert!(e.elsewhere.iter().all(|s| lamps(s) || template_shaped(s)), "{:?}", e.elsewhere);
        }
        // A text with no usable sentence leaves the whole pool in use.
        let e = generator(1, settings).in_document(7, passage).next_exercise();
        e.needle.answer_range().unwrap();
    }

    /// Whether `s` is one of the template generator's facts (they are not corpus sentences).
    fn template_shaped(s: &str) -> bool {
        !texts().iter().any(|t| t.contains(s.split_whitespace().take(2).collect::<Vec<_>>().join(" ").as_str()))
    }

    #[test]
    fn insertion_lands_at_sentence_boundaries_inside_the_limit() {
        let mut rng = SplitMix64::new(1);
        let passage = "One two. Three four. Five six. Seven eight. Nine ten.";
        for _ in 0..50 {
            let out = insert_sentences(passage, &["Xa yo.".to_owned()], 25, &mut rng);
            let at = out.find("Xa yo.").unwrap();
            assert!(at <= 25 && (at == 0 || out[..at].ends_with(". ")), "{out}");
            assert_eq!(out.replace("Xa yo. ", ""), passage);
        }
    }
}
#[cfg(test)]
mod held_out {
    use super::*;
    use crate::exercises::handwritten_needles;

    /// Whether `text` matches `pattern`, where `*` stands for any (possibly empty) run of characters.
    fn glob(pattern: &str, text: &str) -> bool {
        let parts: Vec<&str> = pattern.split('*').collect();
        let (first, last) = (parts[0], parts[parts.len() - 1]);
        if parts.len() == 1 {
            return text == pattern;
        }
        if !text.starts_with(first) || !text.ends_with(last) || text.len() < first.len() + last.len() {
            return false;
        }
        let mut rest = &text[first.len()..text.len() - last.len()];
        for part in &parts[1..parts.len() - 1] {
            match rest.find(part) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        true
    }

    /// The sentence shapes of the template generator (both of its modes), as patterns a shape's every
    /// sentence matches; slots and word lists are wildcards, which makes the patterns wider than the
    /// shapes, so a sentence that matches none is surely of no template shape.
    const TEMPLATE_SHAPES: &[&str] = &[
        "The * * to * in * is *",
        "The * of * is *",
        "* hid the * *",
        "* left the * *",
        "* put the * *",
        "* buried the * *",
        "* kept the * *",
        "* found the * *",
        "* lost the * *",
        "* placed the * *",
        "The * that * in the * *",
        "*'s favourite * is *",
        "The * about the * will be held *",
        "* is * by everyone because *",
        "The secret * for the * is *",
        "The * way to * from * to the * is *",
        "* said that *",
        "* wrote that *",
        "* whispered that *",
        "* dreamed that *",
        "* heard that *",
        "The * of * eats *",
    ];

    fn template_shape(sentence: &str) -> Option<&'static str> {
        TEMPLATE_SHAPES.iter().copied().find(|p| glob(p, sentence))
    }

    fn corpus() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/haystacks");
        ["village.txt", "kjv-john.txt"].iter().map(|f| std::fs::read_to_string(root.join(f)).unwrap()).collect()
    }

    #[test]
    fn the_handwritten_file_has_many_shapes_and_valid_answers() {
        let text = include_str!("../../../public/needles/handwritten.jsonl");
        let mut shapes = std::collections::BTreeMap::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *shapes.entry(v["shape"].as_str().expect("every needle names its shape").to_owned()).or_insert(0) += 1;
        }
        let needles = handwritten_needles();
        assert!(needles.len() >= 40, "{} needles", needles.len());
        assert!(shapes.len() >= 12, "{} shapes", shapes.len());
        // Most questions paraphrase: they do not end with the words that lead to the answer in the
        // needle (as "What is the best thing to do in X?" ends with "... in X", which "is" and the answer
        // follow), so finding the question's last words and copying on is no way to answer them.
        let mut lead_ins = 0;
        for n in &needles {
            let range = n.answer_range().unwrap();
            assert!(n.question.ends_with('?') && n.needle.ends_with('.'), "{n:?}");
            let lead: Vec<String> = n.needle[..range.start].split_whitespace().map(bare).collect();
            let q: Vec<String> = n.question.split_whitespace().map(bare).filter(|w| !w.is_empty()).collect();
            let tail = &q[q.len().saturating_sub(3)..];
            let leads_in = |skip: usize| lead.len() >= 3 + skip && lead[lead.len() - 3 - skip..lead.len() - skip] == *tail;
            lead_ins += usize::from(leads_in(0) || leads_in(1));
        }
        assert!(lead_ins * 3 <= needles.len(), "{lead_ins} of {} questions end with the words before the answer", needles.len());
    }

    #[test]
    fn no_generator_makes_a_handwritten_needle_or_its_shape() {
        // The patterns describe the templates: every template sentence, of either mode, matches one.
        let words = Arc::new(corpus().iter().flat_map(|t| ExerciseGenerator::words_of(t)).collect::<Vec<_>>());
        let mut plain = ExerciseGenerator::new(1, words.clone()).with_invented_words(0.4);
        let mut varied = ExerciseGenerator::new(2, words.clone()).with_invented_words(0.4).with_varied_templates(true);
        for _ in 0..20_000 {
            for n in [plain.next_needle(), varied.next_needle()] {
                assert!(template_shape(&n.needle).is_some(), "no pattern for the template sentence {:?}", n.needle);
            }
        }
        // No hand-written needle is of a template shape.
        let handwritten = handwritten_needles();
        for n in &handwritten {
            assert_eq!(template_shape(&n.needle), None, "{:?} has a template shape", n.needle);
        }
        // A corpus that holds the hand-written needles themselves still yields none of them: the pool
        // leaves out sentences with two of a reserved needle's names or numbers.
        let mut texts = corpus();
        texts.push(handwritten.iter().map(|n| n.needle.clone()).collect::<Vec<_>>().join("\n"));
        let pool = Arc::new(SentencePool::from_texts(&texts));
        assert!(pool.len() > 500);
        let reserved: Vec<String> = handwritten.iter().map(|n| normalise(&n.needle)).collect();
        let reserved_names: Vec<HashSet<String>> = handwritten.iter().map(|n| distinctive_words(&n.needle)).collect();
        // Natural facts too (a third of the needles).
        let settings = SentenceExerciseSettings { natural_facts: 0.35, ..Default::default() };
        let mut g = SentenceExerciseGenerator::new(3, pool, words, settings);
        for _ in 0..20_000 {
            let e = g.next_exercise();
            let mut sentences: Vec<&str> = vec![&e.needle.needle, &e.needle.question];
            sentences.extend(e.before.iter().chain(&e.after).chain(&e.elsewhere).map(String::as_str));
            for s in sentences {
                assert!(!reserved.contains(&normalise(s)), "the generator made the hand-written needle {s:?}");
                assert!(!names_a_reserved_fact(s, &reserved_names), "{s:?} names a hand-written fact");
            }
        }
    }
}
