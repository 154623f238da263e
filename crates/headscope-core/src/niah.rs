//! Needle-in-a-haystack test construction: a needle sentence inserted at a depth of a haystack, cut so
//! that the whole prompt has exactly the requested number of tokens, with the answer's token span found
//! exactly from the tokenizer's byte offsets.
//!
//! Unlike the official harness (which tokenizes the needle on its own, BOS included, and splices ids),
//! the prompt here is always *text* encoded once, so no special token can land inside the needle, and the
//! answer span is the set of tokens whose byte ranges overlap the answer's bytes: no fuzzy window.

use crate::error::{CoreError, Result};
use crate::prompt::{niah_user_message, PromptFormat, CONTEXT_OFFSET_IN_MESSAGE};
use crate::tokenize::{Encoded, TextTokenizer};
use sha2::{Digest, Sha256};
use std::ops::Range;
use std::path::Path;

/// A needle as in the paper's `needles.jsonl`: the sentence, the question, and the answer it contains.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Needle {
    /// The sentence inserted into the haystack.
    pub needle: String,
    /// The question asked after the context.
    pub question: String,
    /// The expected answer: a part of `needle` (case may differ, as in the paper's third needle).
    pub real_needle: String,
}

impl Needle {
    /// Checks that no field is empty and returns the byte range of the answer inside `needle`.
    ///
    /// The answer is looked up verbatim, then ignoring ASCII case, then without trailing punctuation;
    /// the paper's own needles need the second step ("Because he is..." inside "...everyone because he is...").
    pub fn answer_range(&self) -> Result<Range<usize>> {
        // Said in words a student reads, with the field's name for those who write needles files.
        for (name, v, what, fix) in [
            ("needle", &self.needle, "the needle", "write the sentence to hide in the haystack"),
            ("question", &self.question, "the question", "write the question the model must answer from the needle"),
            ("real_needle", &self.real_needle, "the expected answer", "copy the words of the needle that answer the question"),
        ] {
            if v.trim().is_empty() {
                return Err(CoreError::invalid(format!("{what} is empty (`{name}` in a needles file): {fix}")));
            }
        }
        let hay = self.needle.to_ascii_lowercase();
        let answer = self.real_needle.trim();
        let candidates =
            [answer.to_owned(), answer.to_ascii_lowercase(), answer.trim_end_matches(['.', '!', '?', ',', ';']).to_ascii_lowercase()];
        for (i, c) in candidates.iter().enumerate() {
            let found = if i == 0 { self.needle.find(c.as_str()) } else { hay.find(c.as_str()) };
            if let Some(start) = found.filter(|_| !c.is_empty()) {
                return Ok(start..start + c.len());
            }
        }
        Err(CoreError::invalid(format!(
            "the expected answer {:?} is not part of the needle {:?}: copy the answer's words from the needle sentence (in a needles \
             file, `real_needle` must be a span of `needle`)",
            self.real_needle, self.needle
        )))
    }
}

/// The San Francisco needle of the NIAH harness, the default example.
pub fn san_francisco_needle() -> Needle {
    Needle {
        needle: "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day.".into(),
        question: "What is the best thing to do in San Francisco?".into(),
        real_needle: "eat a sandwich and sit in Dolores Park on a sunny day".into(),
    }
}

/// Parses needles JSONL text (one object per line with `needle`, `question`, `real_needle`).
/// `origin` names the input in errors.
pub fn parse_needles_jsonl(text: &str, origin: &Path) -> Result<Vec<Needle>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let n: Needle = serde_json::from_str(line)
            .map_err(|e| CoreError::malformed(origin, format!("line {}: {e} (each line needs needle, question, real_needle)", i + 1)))?;
        n.answer_range().map_err(|e| CoreError::malformed(origin, format!("line {}: {e}", i + 1)))?;
        out.push(n);
    }
    if out.is_empty() {
        return Err(CoreError::malformed(origin, "no needles in the file"));
    }
    Ok(out)
}

/// Reads a needles JSONL file.
pub fn read_needles_jsonl(path: &Path) -> Result<Vec<Needle>> {
    let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
    parse_needles_jsonl(&text, path)
}

/// The haystack texts, trimmed, the empty ones left out, joined by blank lines; an error if none is left.
fn joined_haystack(texts: &[String]) -> Result<String> {
    let joined = texts.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join("\n\n");
    if joined.is_empty() {
        return Err(CoreError::invalid("the haystack is empty: give at least one non-empty text"));
    }
    Ok(joined)
}

/// The haystack texts joined (as [`NiahBuilder::new`] joins them) and rotated to begin at the first
/// line that starts at or after `percent` (0-100) of their bytes; what was before follows at the end,
/// so a prompt that needs the whole text still gets all of it. A prompt shorter than the text reads
/// only its start, so one sentence there can decide every test of a sweep (docs/lab-v5/README.md,
/// "d13": one page held a sentence the lab model copied whatever was asked); running the same needles
/// from several starts tells the haystack's part from the model's. 0 returns the texts joined.
pub fn haystack_from(texts: &[String], percent: f64) -> Result<String> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(CoreError::invalid(format!("haystack start {percent} % is outside 0..100 percent")));
    }
    let joined = joined_haystack(texts)?;
    let at = floor_char_boundary(&joined, (joined.len() as f64 * percent / 100.0).round() as usize);
    if at == 0 {
        return Ok(joined);
    }
    // The line that starts at `at` (the byte before it is a line break), or the next one.
    let start = if joined.as_bytes()[at - 1] == b'\n' { Some(at) } else { joined[at..].find('\n').map(|i| at + i + 1) };
    match start.filter(|&s| s < joined.len()) {
        Some(s) => {
            let (head, tail) = joined.split_at(s);
            Ok(format!("{}\n\n{}", tail.trim(), head.trim()))
        }
        None => Err(CoreError::invalid(format!("no line of the haystack starts at or after {percent} % of it: give a smaller start"))),
    }
}

/// One built test: the prompt's token ids and where the needle and its answer sit in them.
#[derive(Debug, Clone, PartialEq)]
pub struct NiahTest {
    /// Prompt token ids, BOS and template included.
    pub prompt_ids: Vec<u32>,
    /// The prompt text those ids encode.
    pub prompt_text: String,
    /// The requested prompt length in tokens.
    pub length: usize,
    /// The requested depth, in percent of the context.
    pub depth_percent: f64,
    /// Where the needle actually landed, in percent of the context's tokens (after snapping to a sentence start).
    pub placed_depth_percent: f64,
    /// Token positions of the whole needle sentence.
    pub needle_tokens: Range<usize>,
    /// Token positions of the answer inside the needle: the span of eq. 1.
    pub answer_tokens: Range<usize>,
}

impl NiahTest {
    /// A short content hash of the prompt ids (hex SHA-256 prefix), to recognise the same prompt later.
    pub fn prompt_hash(&self) -> String {
        prompt_hash(&self.prompt_ids)
    }
}

/// Hex SHA-256 prefix (16 hex digits) of token ids as little-endian u32s.
pub fn prompt_hash(ids: &[u32]) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Builds NIAH tests from one haystack with one tokenizer and prompt format.
pub struct NiahBuilder<'t, T: TextTokenizer + ?Sized> {
    tokenizer: &'t T,
    format: PromptFormat,
    /// The haystack source texts, joined; repeated into `haystack` as long as needed.
    source: String,
    /// Tokens of one copy of `source`.
    source_tokens: usize,
    haystack: String,
    haystack_tokens: Encoded,
}

/// The null query of QRHead's calibration: the question it asks in place of the real one.
pub const NULL_QUESTION: &str = "N/A";

/// A built test's calibration prompt for the query-focused score ([`crate::ScoreKind::Qr`]): the same
/// prompt with the question replaced by [`NULL_QUESTION`]. Both share every token before
/// `query_start`; the query is everything from there to the prompt's end (the question and the
/// template after it).
#[derive(Debug, Clone, PartialEq)]
pub struct NullQuery {
    /// The first position where the real and the null prompt differ.
    pub query_start: usize,
    /// The null prompt's ids (its first `query_start` equal the real prompt's).
    pub null_ids: Vec<u32>,
}

/// The longest prompt the builder makes: far beyond any model's context, it stops a mistaken length
/// (an underflow, a typo) before it asks for gigabytes of haystack.
pub const MAX_PROMPT_TOKENS: usize = 16 << 20;

/// Sentence ends after which a needle may be inserted.
const SENTENCE_ENDS: [char; 3] = ['.', '!', '?'];

impl<'t, T: TextTokenizer + ?Sized> NiahBuilder<'t, T> {
    /// A builder over the concatenation of `texts` (separated by blank lines).
    pub fn new(tokenizer: &'t T, format: PromptFormat, texts: &[String]) -> Result<Self> {
        let source = joined_haystack(texts)?;
        let haystack_tokens = tokenizer.encode(&source, false)?;
        if haystack_tokens.ids.is_empty() {
            return Err(CoreError::invalid("the haystack encodes to no tokens"));
        }
        Ok(NiahBuilder { tokenizer, format, haystack: source.clone(), source, source_tokens: haystack_tokens.ids.len(), haystack_tokens })
    }

    /// Tokens of one copy of the haystack's texts: a prompt longer than that repeats them.
    pub fn source_tokens(&self) -> usize {
        self.source_tokens
    }

    /// The prompt format in use.
    pub fn format(&self) -> &PromptFormat {
        &self.format
    }

    /// Repeats the source text until the haystack has at least `tokens` tokens.
    fn ensure_haystack(&mut self, tokens: usize) -> Result<()> {
        while self.haystack_tokens.ids.len() < tokens {
            let per_copy = self.haystack_tokens.ids.len().max(1) as f64 / (self.haystack.len() as f64 / self.source.len() as f64);
            let copies = ((tokens as f64 / per_copy.max(1.0)).ceil() as usize).saturating_add(1).max(2);
            self.haystack = vec![self.source.as_str(); copies].join("\n\n");
            self.haystack_tokens = self.tokenizer.encode(&self.haystack, false)?;
        }
        Ok(())
    }

    /// Builds the test for `needle` at `depth_percent` (0-100) with a prompt of exactly `length` tokens.
    ///
    /// `length` counts every prompt token: BOS, template, context and question. If the tokenizer's
    /// merges make the exact count unreachable the closest shorter prompt is returned (its
    /// `prompt_ids.len()` says so); that has not been seen with real tokenizers.
    pub fn build(&mut self, needle: &Needle, length: usize, depth_percent: f64) -> Result<NiahTest> {
        if length > MAX_PROMPT_TOKENS {
            return Err(CoreError::invalid(format!(
                "a {length}-token prompt is longer than HeadScope builds ({MAX_PROMPT_TOKENS} tokens)"
            )));
        }
        if !(0.0..=100.0).contains(&depth_percent) {
            return Err(CoreError::invalid(format!("depth {depth_percent} is outside 0..100 percent")));
        }
        let answer_in_needle = needle.answer_range()?;
        let shortest = self.shortest_length(needle)?;
        if shortest > length {
            return Err(CoreError::invalid(format!(
                "a {length}-token prompt is too short: the needle, question and template alone take {shortest} tokens"
            )));
        }
        self.ensure_haystack(length + 64)?;
        let max_n = self.haystack_tokens.ids.len();
        let mut n = (length - shortest).min(max_n);
        let mut best: Option<(usize, Candidate)> = None;
        let keep_best = |cut: usize, c: Candidate, best: &mut Option<(usize, Candidate)>| {
            if c.ids.len() <= length && best.as_ref().is_none_or(|(_, b)| b.ids.len() < c.ids.len()) {
                *best = Some((cut, c));
            }
        };
        let mut tried = std::collections::HashSet::new();
        // Newton-like steps on the number of haystack tokens: tokenization is nearly additive, so this
        // lands in 1-3 steps.
        let mut step = 0i64;
        for _ in 0..12 {
            let mut cut = self.cut_after_tokens(n);
            // Several tokens can end at one character boundary (a character split into byte tokens, as
            // U+FFFD is): move on in the step's direction until the cut does. Without this a step back
            // from one token too many found the same cut and stopped with no prompt short enough, and
            // the search below started from an empty haystack and returned a prompt tens of tokens short.
            while step != 0 && tried.contains(&cut) && (1..max_n).contains(&n) {
                n = (n as i64 + step.signum()) as usize;
                cut = self.cut_after_tokens(n);
            }
            if !tried.insert(cut) {
                break;
            }
            let c = self.candidate(needle, cut, depth_percent, false)?;
            let len = c.ids.len();
            keep_best(cut, c, &mut best);
            if len == length {
                break;
            }
            step = length as i64 - len as i64;
            n = (n as i64 + step).clamp(0, max_n as i64) as usize;
        }
        // Where one more haystack token adds two prompt tokens (a lone space token, a merge at the cut),
        // cut between characters, and also try ending the haystack with a line break: a byte-level
        // tokenizer can jump by two at a cut, but not at both variants of it.
        if best.as_ref().is_none_or(|(_, b)| b.ids.len() != length) {
            let from = best.as_ref().map_or(0, |(cut, _)| *cut);
            let mut cut = from;
            'search: for _ in 0..256 {
                for newline in [true, false] {
                    if newline || cut != from {
                        let c = self.candidate(needle, cut, depth_percent, newline)?;
                        let len = c.ids.len();
                        keep_best(cut, c, &mut best);
                        if len == length || (!newline && len > length) {
                            break 'search;
                        }
                    }
                }
                cut += self.haystack[cut..].chars().next().map_or(1, char::len_utf8);
                if cut > self.haystack.len() {
                    break;
                }
            }
        }
        let (_, c) = best.ok_or_else(|| CoreError::invalid(format!("no prompt of at most {length} tokens could be built")))?;
        c.into_test(length, depth_percent, answer_in_needle)
    }

    /// The length in tokens of the shortest prompt for `needle`: the needle alone as the context, with
    /// the question and template. [`NiahBuilder::build`] refuses shorter lengths.
    pub fn shortest_length(&self, needle: &Needle) -> Result<usize> {
        Ok(self.candidate(needle, 0, 0.0, false)?.ids.len())
    }

    /// The byte offset where the first `n` haystack tokens end.
    fn cut_after_tokens(&self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            floor_char_boundary(&self.haystack, self.haystack_tokens.offsets[n - 1].1)
        }
    }

    /// The prompt with the haystack cut at byte `cut` and the needle at `depth_percent` of its tokens.
    /// `newline` ends the haystack with a line break (a second way to reach an exact length).
    /// The null-question prompt of `test` (built from `needle` by this builder): see [`NullQuery`].
    pub fn null_query(&self, test: &NiahTest, needle: &Needle) -> Result<NullQuery> {
        let asked = niah_user_message("", &needle.question);
        let tail = &asked[asked.find("Question:").unwrap_or(0)..];
        let at = test.prompt_text.rfind(tail).ok_or_else(|| {
            CoreError::invalid("the question is not found in the test's prompt text (was the test built from this needle?)")
        })?;
        let null_message = niah_user_message("", NULL_QUESTION);
        let null_tail = &null_message[null_message.find("Question:").unwrap_or(0)..];
        let text = format!("{}{}{}", &test.prompt_text[..at], null_tail, &test.prompt_text[at + tail.len()..]);
        let add_special_tokens = matches!(self.format, PromptFormat::Plain);
        let null_ids = self.tokenizer.encode(&text, add_special_tokens)?.ids;
        let query_start = test.prompt_ids.iter().zip(&null_ids).take_while(|(a, b)| a == b).count();
        if query_start < test.needle_tokens.end || query_start >= test.prompt_ids.len() || query_start >= null_ids.len() {
            return Err(CoreError::invalid(format!(
                "the null question's prompt departs from the test's at token {query_start}, not between the needle (ending at {}) and the prompt's end ({})",
                test.needle_tokens.end,
                test.prompt_ids.len()
            )));
        }
        Ok(NullQuery { query_start, null_ids })
    }

    fn candidate(&self, needle: &Needle, cut: usize, depth_percent: f64, newline: bool) -> Result<Candidate> {
        let hay = &self.haystack[..floor_char_boundary(&self.haystack, cut)];
        let n = self.haystack_tokens.offsets.partition_point(|o| o.1 <= hay.len());
        // Depth counts haystack tokens; the needle then moves back to the sentence start before that point.
        let target_token = ((depth_percent / 100.0) * n as f64).floor() as usize;
        let target_byte = if target_token >= n { hay.len() } else { self.haystack_tokens.offsets[target_token].0.min(hay.len()) };
        let at = sentence_start_at_or_before(hay, floor_char_boundary(hay, target_byte));
        let (before, after) = hay.split_at(at);
        let (mut context, needle_offset) = if before.trim().is_empty() {
            (format!("{} {}", needle.needle, after.trim_start()).trim_end().to_owned(), 0)
        } else {
            (format!("{} {}{}", before, needle.needle, after), before.len() + 1)
        };
        if newline {
            context.push('\n');
        }
        let message = niah_user_message(&context, &needle.question);
        let rendered = self.format.render(&message)?;
        let encoded = self.tokenizer.encode(&rendered.text, rendered.add_special_tokens)?;
        let needle_start = rendered.message_offset + CONTEXT_OFFSET_IN_MESSAGE + needle_offset;
        let placed_depth = if n == 0 { 0.0 } else { 100.0 * self.haystack_tokens.offsets.partition_point(|o| o.0 < at) as f64 / n as f64 };
        Ok(Candidate {
            ids: encoded.ids,
            offsets: encoded.offsets,
            text: rendered.text,
            needle_bytes: needle_start..needle_start + needle.needle.len(),
            placed_depth: placed_depth.min(100.0),
        })
    }
}

/// A prompt under consideration while searching for the exact length.
struct Candidate {
    ids: Vec<u32>,
    offsets: Vec<(usize, usize)>,
    text: String,
    needle_bytes: Range<usize>,
    placed_depth: f64,
}

impl Candidate {
    fn into_test(self, length: usize, depth_percent: f64, answer_in_needle: Range<usize>) -> Result<NiahTest> {
        let answer_bytes = self.needle_bytes.start + answer_in_needle.start..self.needle_bytes.start + answer_in_needle.end;
        let needle_tokens = overlapping_tokens(&self.offsets, &self.needle_bytes);
        let answer_tokens = overlapping_tokens(&self.offsets, &answer_bytes);
        if answer_tokens.is_empty() {
            return Err(CoreError::invalid("the answer was not found among the prompt's tokens after tokenization"));
        }
        Ok(NiahTest {
            prompt_ids: self.ids,
            prompt_text: self.text,
            length,
            depth_percent,
            placed_depth_percent: self.placed_depth,
            needle_tokens,
            answer_tokens,
        })
    }
}

/// The tokens whose (non-empty) byte ranges overlap `bytes`, as a range of positions.
fn overlapping_tokens(offsets: &[(usize, usize)], bytes: &Range<usize>) -> Range<usize> {
    let hit = |o: &(usize, usize)| o.1 > o.0 && o.0 < bytes.end && o.1 > bytes.start;
    match offsets.iter().position(hit) {
        Some(first) => {
            let last = offsets.iter().rposition(hit).unwrap_or(first);
            first..last + 1
        }
        None => 0..0,
    }
}

/// The start of the sentence that contains byte `at` (or `at` itself if a sentence ends right there).
fn sentence_start_at_or_before(text: &str, at: usize) -> usize {
    let bytes = text.as_bytes();
    let mut p = at.min(text.len());
    while p > 0 {
        let ends_sentence = SENTENCE_ENDS.contains(&(bytes[p - 1] as char));
        let followed_by_space = p == text.len() || bytes[p].is_ascii_whitespace();
        if ends_sentence && followed_by_space {
            return p;
        }
        p -= 1;
    }
    0
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::prompt::ChatTemplate;

    #[test]
    fn a_haystack_can_start_at_any_line() {
        let texts = vec!["one\ntwo\nthree".to_string(), "four\nfive".to_string()];
        // Joined: "one\ntwo\nthree\n\nfour\nfive" (25 bytes).
        assert_eq!(haystack_from(&texts, 0.0).unwrap(), "one\ntwo\nthree\n\nfour\nfive");
        // 20 % is byte 5, inside "two": the next line, "three", starts the haystack.
        assert_eq!(haystack_from(&texts, 20.0).unwrap(), "three\n\nfour\nfive\n\none\ntwo");
        // Byte 4 starts "two" itself.
        assert_eq!(haystack_from(&texts, 16.0).unwrap(), "two\nthree\n\nfour\nfive\n\none");
        // Every line stays, once.
        let rotated = haystack_from(&texts, 60.0).unwrap();
        let mut lines: Vec<&str> = rotated.lines().filter(|l| !l.is_empty()).collect();
        lines.sort_unstable();
        assert_eq!(lines, ["five", "four", "one", "three", "two"]);
        // Multi-byte text: the cut never splits a character.
        let accents = vec!["ééé\nàà\nüüü".to_string()];
        assert_eq!(haystack_from(&accents, 10.0).unwrap(), "àà\nüüü\n\nééé");
    }

    #[test]
    fn a_haystack_start_out_of_range_is_refused() {
        let texts = vec!["one\ntwo".to_string()];
        assert!(haystack_from(&texts, 101.0).unwrap_err().to_string().contains("outside 0..100"));
        assert!(haystack_from(&texts, f64::NAN).unwrap_err().to_string().contains("outside 0..100"));
        assert!(haystack_from(&texts, 90.0).unwrap_err().to_string().contains("no line"));
        assert!(haystack_from(&["  ".to_string()], 10.0).unwrap_err().to_string().contains("empty"));
    }

    /// A toy tokenizer: each word and each punctuation mark is a token, whitespace is dropped;
    /// `add_special_tokens` prepends id 1 (BOS) with an empty range.
    pub struct WordTokenizer;

    impl TextTokenizer for WordTokenizer {
        fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Encoded> {
            let mut e = Encoded::default();
            if add_special_tokens {
                e.ids.push(1);
                e.offsets.push((0, 0));
            }
            let mut start = None;
            for (i, c) in text.char_indices().chain(std::iter::once((text.len(), ' '))) {
                let word_char = c.is_alphanumeric() || c == '\'';
                if let Some(s) = start {
                    if !word_char {
                        e.ids.push(word_id(&text[s..i]));
                        e.offsets.push((s, i));
                        start = None;
                    }
                }
                if word_char && start.is_none() {
                    start = Some(i);
                } else if !word_char && !c.is_whitespace() {
                    e.ids.push(word_id(&text[i..i + c.len_utf8()]));
                    e.offsets.push((i, i + c.len_utf8()));
                }
            }
            Ok(e)
        }
        fn decode(&self, _ids: &[u32]) -> Result<String> {
            Err(CoreError::Tokenizer("toy tokenizer cannot decode".into()))
        }
    }

    fn word_id(w: &str) -> u32 {
        2 + w.bytes().fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % 50_000
    }

    pub fn haystack() -> Vec<String> {
        vec!["The river ran past the mill. Children played by the water! Who built the bridge? Nobody remembers now. \
              Bread was baked every morning in the old stone oven, and the smell filled the lane."
            .to_string()]
    }

    #[test]
    fn the_null_query_replaces_only_the_question() {
        let tok = WordTokenizer;
        let mut b = NiahBuilder::new(&tok, PromptFormat::Plain, &haystack()).unwrap();
        let needle = san_francisco_needle();
        for d in [0.0, 50.0, 100.0] {
            let t = b.build(&needle, 120, d).unwrap();
            let null = b.null_query(&t, &needle).unwrap();
            // Word tokens: "... Question : What is the best ..." against "... Question : N / A ...": the
            // prompts part at the question's first word and end with the same "\nAnswer:".
            let question_at = t.prompt_ids.iter().rposition(|&i| i == word_id("Question")).unwrap() + 2;
            assert_eq!(null.query_start, question_at, "depth {d}");
            assert_eq!(null.null_ids[..question_at], t.prompt_ids[..question_at]);
            let n = ["N", "/", "A", "Answer", ":"].map(word_id);
            assert_eq!(null.null_ids[question_at..], n);
            assert!(null.query_start >= t.needle_tokens.end);
        }
        // A needle other than the one the test was built from is named.
        let t = b.build(&needle, 120, 50.0).unwrap();
        let other = Needle { question: "Who built the bridge?".into(), ..needle };
        assert!(b.null_query(&t, &other).unwrap_err().to_string().contains("question is not found"));
    }

    #[test]
    fn prompt_has_exact_length_and_exact_span() {
        let tok = WordTokenizer;
        let mut b = NiahBuilder::new(&tok, PromptFormat::Plain, &haystack()).unwrap();
        let needle = san_francisco_needle();
        for &len in &[60usize, 61, 200, 1000] {
            for &d in &[0.0, 33.0, 50.0, 100.0] {
                let t = b.build(&needle, len, d).unwrap();
                assert_eq!(t.prompt_ids.len(), len, "length {len} depth {d}");
                assert_eq!(t.prompt_ids[0], 1, "BOS first");
                assert_eq!(t.prompt_ids.iter().filter(|&&i| i == 1).count(), 1, "exactly one BOS");
                let enc = tok.encode(&t.prompt_text, true).unwrap();
                assert_eq!(enc.ids, t.prompt_ids);
                let span = &enc.offsets[t.answer_tokens.clone()];
                let answer_text = &t.prompt_text[span[0].0..span[span.len() - 1].1];
                assert_eq!(answer_text, needle.real_needle);
                let n = &enc.offsets[t.needle_tokens.clone()];
                assert_eq!(&t.prompt_text[n[0].0..n[n.len() - 1].1], needle.needle);
                assert!(t.needle_tokens.start <= t.answer_tokens.start && t.answer_tokens.end <= t.needle_tokens.end);
            }
        }
    }

    #[test]
    fn needle_goes_to_a_sentence_start_before_the_depth() {
        let tok = WordTokenizer;
        let mut b = NiahBuilder::new(&tok, PromptFormat::Plain, &haystack()).unwrap();
        let needle = san_francisco_needle();
        let mut last = -1.0;
        for d in [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 100.0] {
            let t = b.build(&needle, 400, d).unwrap();
            let ctx_start = t.prompt_text.find("<book>").unwrap() + "<book>".len();
            let before = &t.prompt_text[ctx_start..t.prompt_text.find(&needle.needle).unwrap()];
            let before = before.trim_end();
            assert!(
                before.is_empty() || before.ends_with(['.', '!', '?']),
                "depth {d}: needle not at a sentence start: ...{}",
                &before[before.len().saturating_sub(30)..]
            );
            assert!(t.placed_depth_percent <= d + 1e-9, "snaps backwards only");
            assert!(d - t.placed_depth_percent < 12.0, "depth {d} placed at {}", t.placed_depth_percent);
            assert!(t.placed_depth_percent >= last);
            last = t.placed_depth_percent;
        }
        let t0 = b.build(&needle, 400, 0.0).unwrap();
        assert!(t0.prompt_text.starts_with(&format!("<book>{}", needle.needle)));
    }

    #[test]
    fn chat_format_adds_no_bos_of_its_own() {
        let tok = WordTokenizer;
        let fmt = PromptFormat::Chat(ChatTemplate {
            source: "[INST] {{ messages[0]['content'] }} [/INST]".into(),
            bos_token: None,
            eos_token: None,
        });
        let mut b = NiahBuilder::new(&tok, fmt, &haystack()).unwrap();
        let t = b.build(&san_francisco_needle(), 300, 50.0).unwrap();
        assert_eq!(t.prompt_ids.len(), 300);
        assert!(!t.prompt_ids.contains(&1));
        assert!(t.prompt_text.starts_with("[INST] <book>"));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let tok = WordTokenizer;
        assert!(NiahBuilder::new(&tok, PromptFormat::Plain, &["  ".into()]).is_err());
        let mut b = NiahBuilder::new(&tok, PromptFormat::Plain, &haystack()).unwrap();
        let n = san_francisco_needle();
        let e = b.build(&n, 10, 50.0).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        assert!(b.build(&n, 100, 101.0).is_err());
        assert!(b.build(&n, usize::MAX - 3, 50.0).unwrap_err().to_string().contains("longer than HeadScope builds"));
        let bad = Needle { real_needle: "a hot dog".into(), ..n.clone() };
        assert!(b.build(&bad, 100, 50.0).unwrap_err().to_string().contains("not part of the needle"));
        let empty = Needle { needle: " ".into(), ..n };
        assert!(empty.answer_range().unwrap_err().to_string().contains("the needle is empty (`needle` in a needles file)"));
    }

    #[test]
    fn answer_lookup_handles_the_papers_needles() {
        let n = Needle {
            question: "Why does everyone dislikes Mr Green ?".into(),
            needle: "Mr Green is disliked by everyone because he is a mean person and also he can't ride a horse or dive a car.".into(),
            real_needle: "Because he is a mean person and also he can't ride a horse or dive a car.".into(),
        };
        let r = n.answer_range().unwrap();
        assert_eq!(&n.needle[r], "because he is a mean person and also he can't ride a horse or dive a car.");
    }

    #[test]
    fn needles_jsonl_errors_name_the_line() {
        let p = Path::new("needles.jsonl");
        let ok = r#"{"needle": "The key is blue.", "question": "What colour is the key?", "real_needle": "blue"}"#;
        assert_eq!(parse_needles_jsonl(ok, p).unwrap().len(), 1);
        let e = parse_needles_jsonl(&format!("{ok}\n{{\"needle\": 3}}"), p).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse_needles_jsonl("\n\n", p).unwrap_err().to_string().contains("no needles"));
        let e =
            parse_needles_jsonl(r#"{"needle": "The key is blue.", "question": "Q?", "real_needle": "red"}"#, p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("not part of the needle"), "{e}");
    }

    #[test]
    fn papers_needles_file_parses_when_present() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/refs/needles.jsonl");
        if !p.exists() {
            eprintln!("skipped: {} is absent (it ships with the developers' shared folder only)", p.display());
            return;
        }
        let needles = read_needles_jsonl(&p).unwrap();
        assert_eq!(needles.len(), 3);
    }
}
