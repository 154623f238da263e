//! Generated retrieval exercises for training a lab model: a fact sentence (a [`Needle`]) drawn from many
//! templates and entity lists, so that a model learns to *retrieve* answers from context rather than to
//! memorise them. Evaluation needles are held out: the paper's three, the San Francisco needle, and
//! HeadScope's own set ([`heldout_needles`]); the generator never produces any of them, nor uses their
//! distinctive names.

use headscope_core::niah::{san_francisco_needle, Needle};
use headscope_core::rng::SplitMix64;

const PLACES: &[&str] = &[
    "Lisbon",
    "Oslo",
    "Kyoto",
    "Marrakesh",
    "Valparaiso",
    "Tbilisi",
    "Hobart",
    "Quebec",
    "Bergen",
    "Cusco",
    "Zanzibar",
    "Tallinn",
    "Porto",
    "Galway",
    "Ljubljana",
    "Hanoi",
    "Cork",
    "Krakow",
    "Seville",
    "Trieste",
    "Dubrovnik",
    "Bruges",
    "Salzburg",
    "Asmara",
    "Leipzig",
    "Antigua",
    "Odessa",
    "Tromso",
    "Granada",
    "Luang Prabang",
    "Mendoza",
    "Nantes",
    "Sapporo",
    "Cadiz",
    "Riga",
    "Palermo",
    "Halifax",
    "Tangier",
    "Arequipa",
    "Bologna",
    "Kotor",
    "Lucerne",
    "Malmo",
    "Nara",
    "Oaxaca",
    "Pisa",
    "Quito",
    "Rennes",
    "Split",
];
const CATEGORIES: &[&str] = &["colour", "book", "song", "fruit", "animal", "city", "season", "flower", "dish", "instrument"];
const OBJECTS: &[&str] =
    &["brass key", "silver locket", "map of the caves", "old diary", "spare lantern", "box of letters", "wooden flute", "green umbrella"];
const TOPICS: &[&str] =
    &["harbour repairs", "spring harvest", "library budget", "school concert", "railway timetable", "bridge inspection", "winter market"];
const ADJECTIVES: &[&str] = &["old", "red", "hidden", "second", "silent", "broken", "golden", "little", "northern", "last", "new", "tall"];
const NOUNS: &[&str] = &[
    "gate",
    "vault",
    "tower",
    "archive",
    "cellar",
    "orchard",
    "mill",
    "chapel",
    "harbour",
    "bridge",
    "kitchen",
    "stable",
    "garden",
    "attic",
    "lighthouse",
    "market",
    "well",
    "school",
    "ship",
    "library",
];
const CREATURES: &[&str] = &["heron", "badger", "otter", "goat", "owl", "hedgehog", "swan", "fox", "raven", "donkey", "beetle", "hare"];

/// The facts the paper used for detection, plus the San Francisco needle: held out from training.
pub fn paper_needles() -> Vec<Needle> {
    vec![
        Needle {
            needle: "A new report from the WMO shows that records were once again broken, and in some cases smashed, for greenhouse gas levels, surface temperatures, ocean heat and acidification.".into(),
            question: "What does a new report from WMO shows ?".into(),
            real_needle: "records were once again broken, and in some cases smashed, for greenhouse gas levels, surface temperatures, ocean heat and acidification.".into(),
        },
        Needle {
            needle: "The best thing to do in Beijing is to take a walk in Chaoyang Park and have a cup of Espresso in the evening.".into(),
            question: "What is the best thing to do in Beijing ?".into(),
            real_needle: "take a walk in Chaoyang Park and have a cup of Espresso in the evening".into(),
        },
        Needle {
            needle: "Mr Green is disliked by everyone because he is a mean person and also he can't ride a horse or dive a car.".into(),
            question: "Why does everyone dislikes Mr Green ?".into(),
            real_needle: "Because he is a mean person and also he can't ride a horse or dive a car.".into(),
        },
        san_francisco_needle(),
    ]
}

/// HeadScope's own held-out needles: names, places and answers that appear in no generator list.
pub fn heldout_needles() -> Vec<Needle> {
    let n = |needle: &str, question: &str, answer: &str| Needle {
        needle: needle.into(),
        question: question.into(),
        real_needle: answer.into(),
    };
    vec![
        n(
            "The best thing to do in Reykjavik is to soak in a geothermal pool and watch the northern lights at midnight.",
            "What is the best thing to do in Reykjavik?",
            "soak in a geothermal pool and watch the northern lights at midnight",
        ),
        n(
            "Beatrix's favourite poem is a sonnet about a drowned clockmaker.",
            "What is Beatrix's favourite poem?",
            "a sonnet about a drowned clockmaker",
        ),
        n(
            "Cornelius hid the velvet pouch behind the portrait of the admiral in the dining room.",
            "Where did Cornelius hide the velvet pouch?",
            "behind the portrait of the admiral in the dining room",
        ),
        n(
            "The secret password for the observatory is lantern mosaic 83.",
            "What is the secret password for the observatory?",
            "lantern mosaic 83",
        ),
        n(
            "The meeting about the canal dredging will be held on Sunday at eleven in the boathouse loft.",
            "When and where will the meeting about the canal dredging be held?",
            "on Sunday at eleven in the boathouse loft",
        ),
        n(
            "Mrs Okafor is admired by everyone because she rebuilt the flooded schoolhouse with her own hands.",
            "Why is Mrs Okafor admired by everyone?",
            "because she rebuilt the flooded schoolhouse with her own hands",
        ),
        n(
            "The tortoise that lives in the monastery garden eats dandelion leaves every Thursday.",
            "What does the tortoise that lives in the monastery garden eat?",
            "dandelion leaves every Thursday",
        ),
        n(
            "The cheapest way to travel from Vilnius to the coast is a night bus that leaves from the cathedral.",
            "What is the cheapest way to travel from Vilnius to the coast?",
            "a night bus that leaves from the cathedral",
        ),
    ]
}

/// The hand-written held-out needles of `public/needles/handwritten.jsonl`: 48 everyday facts in 16
/// sentence shapes that no generator makes, with questions that paraphrase them; written for lab model
/// v4 and never trained on.
pub fn handwritten_needles() -> Vec<Needle> {
    let text = include_str!("../../../public/needles/handwritten.jsonl");
    headscope_core::niah::parse_needles_jsonl(text, std::path::Path::new("public/needles/handwritten.jsonl"))
        .expect("the shipped hand-written needles parse (a test pins them)")
}

/// Every needle that evaluation uses and training must never see.
pub fn reserved_needles() -> Vec<Needle> {
    let mut v = paper_needles();
    v.extend(heldout_needles());
    v.extend(handwritten_needles());
    v
}

/// The sentences of [`reserved_needles`], made once: generators are built for every training row, and
/// the hand-written needles are parsed from JSON.
pub(crate) fn reserved_sentences() -> &'static [String] {
    static SENTENCES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SENTENCES.get_or_init(|| reserved_needles().into_iter().map(|n| n.needle).collect())
}

/// Syllables of made-up names: names the model cannot have memorised, so the question's name must be
/// matched against the context.
const SYLLABLES: &[&str] = &[
    "ba", "ke", "lo", "mi", "ra", "su", "ten", "vo", "dri", "gal", "hen", "jor", "kas", "lin", "mor", "nel", "pra", "quin", "ros", "sel",
    "tor", "ul", "var", "wen", "yst", "zan", "cor", "dal", "fen", "gris", "hal", "ith", "kel", "lum", "nor", "ost", "pel",
];

/// Draws training needles. Names are made up from syllables and every answer is a random span of the
/// phrase source (corpus text), so no answer can be guessed from the question or memorised from
/// earlier exercises: the only way to answer is to find the fact in the context and copy it.
pub struct ExerciseGenerator {
    rng: SplitMix64,
    words: std::sync::Arc<Vec<String>>,
    reserved: &'static [String],
    invented_share: f64,
    varied: bool,
    span_words: (usize, usize),
    recurring_share: f64,
}

impl ExerciseGenerator {
    /// A generator seeded with `seed` drawing answer spans from `words` (a corpus split into words).
    pub fn new(seed: u64, words: std::sync::Arc<Vec<String>>) -> Self {
        assert!(words.len() >= 64, "the phrase source needs at least 64 words");
        let reserved = reserved_sentences();
        ExerciseGenerator {
            rng: SplitMix64::new(seed),
            words,
            reserved,
            invented_share: 0.0,
            varied: false,
            span_words: (3, 10),
            recurring_share: 0.0,
        }
    }

    /// Replaces each answer word, with probability `share`, by an invented one: a made-up word, a random
    /// string of letters or a number. Corpus words cover only the corpus's sub-word tokens; invented words
    /// make every token of the vocabulary something the model has to copy, so copying does not fail on
    /// words the corpus never had (a modern needle in a model trained on old books). With `share` 0
    /// (the default) the generator draws exactly what it drew before this option existed.
    pub fn with_invented_words(mut self, share: f64) -> Self {
        self.invented_share = share.clamp(0.0, 1.0);
        self
    }

    /// Draws from many more sentence shapes whose slots are filled with random corpus phrases, instead of
    /// the eight fixed templates: a model trained on eight shapes learns those shapes, and then misses a
    /// held-out needle phrased another way. With varied shapes the only thing common to all exercises is
    /// the task: match the question's words in the context and copy what follows.
    pub fn with_varied_templates(mut self, varied: bool) -> Self {
        self.varied = varied;
        self
    }

    /// Answer spans of `min..=max` corpus words instead of 3-10 (`min` at least 1, `max` at least `min`;
    /// both are clamped so). Held-out answers run to 12 words; longer spans give more words to copy in
    /// order after the first.
    pub fn with_answer_words(mut self, min: usize, max: usize) -> Self {
        let min = min.max(1);
        self.span_words = (min, max.max(min));
        self
    }

    /// Makes a share of answers repeat their own words: each word after the first is replaced, with
    /// probability 1/3, by an earlier word of the same answer ("the gate of the mill by the gate").
    /// Then the word just copied does not say which word comes next, since it occurs more than once in
    /// the answer; only the place in the needle does. A model trained without such answers copied
    /// "behind the portrait of the admiral" as "behind the admit of the adm": after "the" it went on
    /// from the later "the admiral". With `share` 0 (the default) the generator draws exactly what it
    /// drew before.
    pub fn with_recurring_words(mut self, share: f64) -> Self {
        self.recurring_share = share.clamp(0.0, 1.0);
        self
    }

    /// 1-3 consecutive lower-case corpus words: a random but readable phrase for a template slot.
    fn phrase(&mut self) -> String {
        let len = 1 + self.rng.below(3) as usize;
        let start = self.rng.below((self.words.len() - len) as u64) as usize;
        self.words[start..start + len].join(" ").to_lowercase()
    }

    /// A noun from `list` or, half of the time, a corpus phrase.
    fn noun_or_phrase(&mut self, list: &[&str]) -> String {
        if self.rng.below(2) == 0 {
            self.pick(list).to_string()
        } else {
            self.phrase()
        }
    }

    /// A made-up person, sometimes with a title.
    fn person(&mut self) -> String {
        let name = self.name();
        match self.rng.below(6) {
            0 => format!("{} {name}", self.pick(&["Mr", "Mrs", "Dr", "Captain", "Aunt", "Brother", "Lady"])),
            1 => format!("{name} {}", self.name()),
            _ => name,
        }
    }

    /// One exercise of the varied shapes (see [`ExerciseGenerator::with_varied_templates`]).
    fn draw_varied(&mut self) -> Needle {
        let n = |needle: String, question: String, answer: String| Needle { needle, question, real_needle: answer };
        let answer = self.span();
        let place = if self.rng.below(2) == 0 { self.pick(PLACES).to_string() } else { self.name() };
        match self.rng.below(10) {
            0 => {
                let sup = self.pick(&["best", "worst", "quickest", "easiest", "safest", "strangest", "oldest", "finest"]);
                let thing = self.pick(&["thing", "place", "time", "reason", "way"]);
                let verb = self.pick(&["go", "eat", "rest", "walk", "sleep", "begin", "visit", "wait", "pray", "study", "sing"]);
                let to = if self.rng.below(2) == 0 { "to " } else { "" };
                n(
                    format!("The {sup} {thing} to {verb} in {place} is {to}{answer}."),
                    format!("What is the {sup} {thing} to {verb} in {place}?"),
                    answer,
                )
            }
            1 => {
                let (adj, noun, who) = (self.pick(ADJECTIVES), self.noun_or_phrase(NOUNS), self.person());
                n(format!("The {adj} {noun} of {who} is {answer}."), format!("What is the {adj} {noun} of {who}?"), answer)
            }
            2 => {
                let (who, obj) = (self.person(), format!("{} {}", self.pick(ADJECTIVES), self.noun_or_phrase(NOUNS)));
                let (past, verb) = *self.pick_pair(&[
                    ("hid", "hide"),
                    ("left", "leave"),
                    ("put", "put"),
                    ("buried", "bury"),
                    ("kept", "keep"),
                    ("found", "find"),
                    ("lost", "lose"),
                    ("placed", "place"),
                ]);
                let prep = self.pick(&["under", "behind", "beside", "inside", "near", "above", "below", "in", "on", "next to", "between"]);
                let answer = format!("{prep} {answer}");
                n(format!("{who} {past} the {obj} {answer}."), format!("Where did {who} {verb} the {obj}?"), answer)
            }
            3 => {
                let (creature, home) = (self.noun_or_phrase(CREATURES), self.noun_or_phrase(NOUNS));
                let lives = self.pick(&["lives", "sleeps", "works", "waits", "sings"]);
                let (verbs, verb) = *self.pick_pair(&[
                    ("eats", "eat"),
                    ("likes", "like"),
                    ("fears", "fear"),
                    ("collects", "collect"),
                    ("reads", "read"),
                    ("wants", "want"),
                ]);
                n(
                    format!("The {creature} that {lives} in the {home} {verbs} {answer}."),
                    format!("What does the {creature} that {lives} in the {home} {verb}?"),
                    answer,
                )
            }
            4 => {
                let (who, cat) = (self.person(), self.noun_or_phrase(CATEGORIES));
                n(format!("{who}'s favourite {cat} is {answer}."), format!("What is {who}'s favourite {cat}?"), answer)
            }
            5 => {
                let (event, topic) =
                    (self.pick(&["meeting", "feast", "trial", "wedding", "council", "auction", "lecture"]), self.noun_or_phrase(TOPICS));
                let q = if self.rng.below(2) == 0 { "When and where" } else { "When" };
                n(
                    format!("The {event} about the {topic} will be held {answer}."),
                    format!("{q} will the {event} about the {topic} be held?"),
                    answer,
                )
            }
            6 => {
                let (who, adj) =
                    (self.person(), self.pick(&["admired", "loved", "feared", "trusted", "remembered", "praised", "pitied", "disliked"]));
                let answer = format!("because {answer}");
                n(format!("{who} is {adj} by everyone {answer}."), format!("Why is {who} {adj} by everyone?"), answer)
            }
            7 => {
                let (kind, thing) = (self.pick(&["password", "code", "word", "sign", "number", "key"]), self.noun_or_phrase(NOUNS));
                n(format!("The secret {kind} for the {thing} is {answer}."), format!("What is the secret {kind} for the {thing}?"), answer)
            }
            8 => {
                let sup = self.pick(&["best", "quickest", "safest", "slowest", "oldest", "easiest"]);
                let verb = self.pick(&["go", "ride", "sail", "walk", "get", "climb"]);
                let dest = self.noun_or_phrase(NOUNS);
                n(
                    format!("The {sup} way to {verb} from {place} to the {dest} is {answer}."),
                    format!("What is the {sup} way to {verb} from {place} to the {dest}?"),
                    answer,
                )
            }
            _ => {
                let who = self.person();
                let (past, verb) = *self.pick_pair(&[
                    ("said", "say"),
                    ("wrote", "write"),
                    ("whispered", "whisper"),
                    ("dreamed", "dream"),
                    ("heard", "hear"),
                ]);
                n(format!("{who} {past} that {answer}."), format!("What did {who} {verb}?"), answer)
            }
        }
    }

    fn pick_pair<'a>(&mut self, list: &'a [(&'a str, &'a str)]) -> &'a (&'a str, &'a str) {
        &list[self.rng.below(list.len() as u64) as usize]
    }

    /// An invented word: pronounceable syllables (sometimes capitalised), random letters, or digits.
    fn invented_word(&mut self) -> String {
        const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
        match self.rng.below(10) {
            0..=3 => {
                let n = 1 + self.rng.below(3);
                let mut w: String = (0..n).map(|_| self.pick(SYLLABLES)).collect();
                if self.rng.below(4) == 0 {
                    w[..1].make_ascii_uppercase();
                }
                w
            }
            4..=7 => {
                let n = 2 + self.rng.below(9);
                (0..n).map(|_| LETTERS[self.rng.below(26) as usize] as char).collect()
            }
            _ => {
                let n = 1 + self.rng.below(6);
                (0..n).map(|_| char::from(b'0' + self.rng.below(10) as u8)).collect()
            }
        }
    }

    /// Words of `text` for [`ExerciseGenerator::new`]: whitespace-separated, with surrounding punctuation
    /// other than apostrophes removed.
    pub fn words_of(text: &str) -> Vec<String> {
        text.split_whitespace()
            .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\''))
            // Long unbroken strings (URLs, ASCII art) are no phrases to copy.
            .filter(|w| !w.is_empty() && w.chars().count() <= 20)
            .map(str::to_owned)
            .collect()
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.rng.below(list.len() as u64) as usize]
    }

    /// A made-up capitalised name of 2-3 syllables.
    fn name(&mut self) -> String {
        let n = 2 + self.rng.below(2);
        let mut s: String = (0..n).map(|_| self.pick(SYLLABLES)).collect();
        s[..1].make_ascii_uppercase();
        s
    }

    /// A random span of 3-10 words (see [`ExerciseGenerator::with_answer_words`]) of the phrase source,
    /// lower-cased at its start.
    fn span(&mut self) -> String {
        let recurring = self.recurring_share > 0.0 && self.rng.unit() < self.recurring_share;
        let (min, max) = self.span_words;
        let len = (min + self.rng.below((max - min + 1) as u64) as usize).min(self.words.len() - 1);
        let start = self.rng.below((self.words.len() - len) as u64) as usize;
        let mut words: Vec<String> = self.words[start..start + len].to_vec();
        if self.invented_share > 0.0 {
            for w in &mut words {
                if self.rng.unit() < self.invented_share {
                    *w = self.invented_word();
                }
            }
        }
        if recurring {
            for i in 1..words.len() {
                if self.rng.below(3) == 0 {
                    words[i] = words[self.rng.below(i as u64) as usize].clone();
                }
            }
        }
        let mut s = words.join(" ");
        if let Some(first) = s.get(..1) {
            if first != "I" {
                let lower = first.to_lowercase();
                s.replace_range(..1, &lower);
            }
        }
        s
    }

    /// The next exercise (never a reserved needle).
    pub fn next_needle(&mut self) -> Needle {
        loop {
            let n = self.draw();
            if !self.reserved.contains(&n.needle) && n.answer_range().is_ok() {
                return n;
            }
        }
    }

    fn draw(&mut self) -> Needle {
        if self.varied {
            return self.draw_varied();
        }
        let n = |needle: String, question: String, answer: String| Needle { needle, question, real_needle: answer };
        let answer = self.span();
        match self.rng.below(8) {
            0 | 1 => {
                let place = if self.rng.below(2) == 0 { self.pick(PLACES).to_string() } else { self.name() };
                let to = if self.rng.below(2) == 0 { "to " } else { "" };
                n(format!("The best thing to do in {place} is {to}{answer}."), format!("What is the best thing to do in {place}?"), answer)
            }
            2 => {
                let (who, cat) = (self.name(), self.pick(CATEGORIES));
                n(format!("{who}'s favourite {cat} is {answer}."), format!("What is {who}'s favourite {cat}?"), answer)
            }
            3 => {
                let (who, obj) = (self.name(), self.pick(OBJECTS));
                n(format!("{who} hid the {obj} under {answer}."), format!("Where did {who} hide the {obj}?"), format!("under {answer}"))
            }
            4 => {
                let thing = format!(
                    "{} {}",
                    self.pick(&["north", "old", "red", "hidden", "upper", "second"]),
                    self.pick(&["gate", "vault", "tower", "archive", "cellar"])
                );
                n(
                    format!("The secret password for the {thing} is {answer}."),
                    format!("What is the secret password for the {thing}?"),
                    answer,
                )
            }
            5 => {
                let topic = self.pick(TOPICS);
                let who = self.name();
                n(
                    format!("The meeting about the {topic} with {who} will be held {answer}."),
                    format!("When will the meeting about the {topic} with {who} be held?"),
                    answer,
                )
            }
            6 => {
                let who = self.name();
                let answer = format!("because {answer}");
                n(format!("{who} is admired by everyone {answer}."), format!("Why is {who} admired by everyone?"), answer)
            }
            _ => {
                let animal = self.pick(&["heron", "badger", "otter", "goat", "owl", "hedgehog", "swan"]);
                let who = self.name();
                n(format!("The {animal} of {who} eats {answer}."), format!("What does the {animal} of {who} eat?"), answer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn words() -> std::sync::Arc<Vec<String>> {
        let text = "The river ran past the mill, and the baker's bread was warm. Children counted boats; herons came back in spring. \
                    Nobody remembered who built the bridge, but it was older than the church on the hill above the square.";
        std::sync::Arc::new(ExerciseGenerator::words_of(&text.repeat(3)))
    }

    #[test]
    fn answers_are_spans_of_the_phrase_source() {
        let w = words();
        let joined = w.join(" ").to_lowercase();
        let mut g = ExerciseGenerator::new(9, w.clone());
        for _ in 0..500 {
            let n = g.next_needle();
            let a = n.real_needle.trim_start_matches("because ").trim_start_matches("under ").to_lowercase();
            assert!(joined.contains(&a), "{a:?} is not a span of the source");
            assert!((3..=10).contains(&a.split_whitespace().count()));
        }
    }

    #[test]
    fn every_exercise_is_a_valid_needle_and_the_generator_is_varied() {
        let mut g = ExerciseGenerator::new(1, words());
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let n = g.next_needle();
            n.answer_range().unwrap_or_else(|e| panic!("{e}: {n:?}"));
            seen.insert(n.needle);
        }
        assert!(seen.len() > 10_000, "only {} distinct exercises in 20000", seen.len());
        let mut a = ExerciseGenerator::new(5, words());
        let mut b = ExerciseGenerator::new(5, words());
        assert_eq!(a.next_needle(), b.next_needle());
    }

    #[test]
    fn invented_words_replace_the_requested_share_and_keep_needles_valid() {
        let w = words();
        let source: HashSet<String> = w.iter().map(|s| s.to_lowercase()).collect();
        let mut g = ExerciseGenerator::new(3, w).with_invented_words(0.5);
        let (mut invented, mut total) = (0usize, 0usize);
        for _ in 0..2000 {
            let n = g.next_needle();
            n.answer_range().unwrap_or_else(|e| panic!("{e}: {n:?}"));
            for word in n.real_needle.trim_start_matches("because ").trim_start_matches("under ").split_whitespace() {
                total += 1;
                invented += usize::from(!source.contains(&word.to_lowercase()));
            }
        }
        // An invented word can by chance be a source word, so a little under half are new.
        let share = invented as f64 / total as f64;
        assert!((0.4..=0.52).contains(&share), "invented share {share}");
    }

    /// Whether some word occurs twice in `text`.
    fn repeats_a_word(text: &str) -> bool {
        let words: Vec<&str> = text.split_whitespace().collect();
        words.iter().collect::<HashSet<_>>().len() < words.len()
    }

    #[test]
    fn answer_length_and_recurring_words_follow_their_options() {
        let w = words();
        let joined = w.join(" ").to_lowercase();
        let mut g = ExerciseGenerator::new(6, w.clone()).with_answer_words(6, 14).with_recurring_words(1.0);
        let (mut lengths, mut with_repeats) = (HashSet::new(), 0);
        for _ in 0..2000 {
            let n = g.next_needle();
            n.answer_range().unwrap_or_else(|e| panic!("{e}: {n:?}"));
            let answer = n.real_needle.trim_start_matches("because ").trim_start_matches("under ").to_lowercase();
            let words: Vec<&str> = answer.split_whitespace().collect();
            assert!((6..=14).contains(&words.len()), "{answer:?}");
            lengths.insert(words.len());
            // Every word is still a source word, and answers repeat words far more often than spans do.
            assert!(words.iter().all(|w| joined.split_whitespace().any(|s| s == *w)), "{answer:?}");
            with_repeats += usize::from(repeats_a_word(&answer));
        }
        assert_eq!(lengths.len(), 9, "lengths drawn: {lengths:?}");
        let mut plain = ExerciseGenerator::new(6, w).with_answer_words(6, 14);
        let plain_repeats = (0..2000).filter(|_| repeats_a_word(&plain.next_needle().real_needle.to_lowercase())).count();
        assert!(with_repeats > 1800 && with_repeats > plain_repeats + 400, "{with_repeats} vs {plain_repeats} of 2000");
    }

    #[test]
    fn varied_templates_make_valid_and_varied_needles() {
        let mut g = ExerciseGenerator::new(4, words()).with_varied_templates(true);
        let mut shapes = HashSet::new();
        for _ in 0..5000 {
            let n = g.next_needle();
            n.answer_range().unwrap_or_else(|e| panic!("{e}: {n:?}"));
            assert!(n.question.ends_with('?'), "{n:?}");
            // The sentence shape: the needle with its answer cut out, first two words kept.
            shapes.insert(n.needle.split_whitespace().take(2).collect::<Vec<_>>().join(" "));
        }
        assert!(shapes.len() > 500, "only {} sentence openings", shapes.len());
    }

    /// FNV-1a over the first `n` exercises of `g`: a fingerprint of the generator's stream.
    fn fingerprint(g: &mut ExerciseGenerator, n: usize) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for _ in 0..n {
            let e = g.next_needle();
            for b in format!("{}|{}|{}\n", e.needle, e.question, e.real_needle).bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }

    /// The committed recipes of the lab model rely on the generator drawing, option for option, what it
    /// drew when they ran: a new option must leave the streams of the old settings untouched.
    #[test]
    fn existing_settings_draw_the_same_exercises_as_when_the_lab_model_was_trained() {
        let plain = fingerprint(&mut ExerciseGenerator::new(11, words()), 2000);
        let invented = fingerprint(&mut ExerciseGenerator::new(11, words()).with_invented_words(0.4), 2000);
        let varied = fingerprint(&mut ExerciseGenerator::new(11, words()).with_invented_words(0.4).with_varied_templates(true), 2000);
        assert_eq!(
            [plain, invented, varied],
            [0xd1a0_3822_35ce_2788, 0xffe7_b7a4_ef4c_2a47, 0x2af3_3727_094b_0384],
            "{plain:#x} {invented:#x} {varied:#x}"
        );
    }

    #[test]
    fn held_out_needles_never_come_out_of_the_generator() {
        let reserved = reserved_needles();
        for n in &reserved {
            n.answer_range().unwrap();
        }
        // Their distinctive words are in no generator list, so no exercise can even come close.
        let distinctive = [
            "San Francisco",
            "Dolores",
            "Beijing",
            "Chaoyang",
            "Espresso",
            "WMO",
            "Mr Green",
            "Reykjavik",
            "Beatrix",
            "Cornelius",
            "observatory",
            "dredging",
            "Okafor",
            "tortoise",
            "Vilnius",
            "sandwich",
            "clockmaker",
            "geothermal",
        ];
        let mut plain = ExerciseGenerator::new(0, words());
        let mut invented = ExerciseGenerator::new(0, words()).with_invented_words(0.5).with_varied_templates(true);
        for _ in 0..50_000 {
            for g in [&mut plain, &mut invented] {
                let n = g.next_needle();
                let text = format!("{} {} {}", n.needle, n.question, n.real_needle);
                for d in distinctive {
                    assert!(!text.contains(d), "generator produced `{d}`: {text}");
                }
            }
        }
    }
}

#[cfg(test)]
mod shipped_file {
    use super::*;
    use headscope_core::niah::read_needles_jsonl;

    /// public/needles/heldout.jsonl is the San Francisco needle plus [`heldout_needles`], verbatim.
    #[test]
    fn shipped_heldout_file_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/needles/heldout.jsonl");
        let mut expected = vec![san_francisco_needle()];
        expected.extend(heldout_needles());
        assert_eq!(read_needles_jsonl(&path).unwrap(), expected);
    }
}
