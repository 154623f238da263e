//! Two-hop lookups for the lab model (issue 19's chain-of-thought demo): a question that needs two facts
//! of the context chained ("The brass key opens the boathouse. Marisol carries the brass key. What does
//! Marisol's key open?"), with facts of the same shape about other things beside them, so that only
//! following the chain finds the answer. Answered directly ("the boathouse") or step by step (the two
//! facts restated, then "The answer is the boathouse."), the form `headscope cot` scores.
//!
//! Names are invented words (syllables of [`crate::fact_grammar`]) or drawn from short lists: the model
//! has to copy them from the context, as a student's own names would make it.

use crate::fact_grammar::WORD_SYLLABLES;
use headscope_core::rng::SplitMix64;

/// One two-hop fact chain: the bridge fact (the question names its first entity), the answer fact (its
/// second entity leads to the answer), facts of the same shapes about other entities, the question and
/// the answer (a span of `answer_fact`).
#[derive(Debug, Clone, PartialEq)]
pub struct TwoHopFact {
    /// "Marisol carries the brass key."
    pub bridge: String,
    /// "The brass key opens the boathouse."
    pub answer_fact: String,
    /// "Tobias carries the iron key.", "The iron key opens the granary.", ...
    pub distractors: Vec<String>,
    /// "What does Marisol's key open?"
    pub question: String,
    /// "the boathouse"
    pub answer: String,
}

impl TwoHopFact {
    /// The step-by-step answer: the two facts in the order the chain follows them, then the answer.
    pub fn reasoning(&self) -> String {
        format!("{} {} The answer is {}.", self.bridge, self.answer_fact, self.answer)
    }
}

const FIRST_NAMES: &[&str] = &[
    "Marisol",
    "Tobias",
    "Amara",
    "Kenji",
    "Ines",
    "Olusegun",
    "Priya",
    "Tomasz",
    "Lerato",
    "Siobhan",
    "Esperanza",
    "Hyun",
    "Dmitri",
    "Nadia",
    "Rafael",
    "Yuki",
    "Farah",
    "Lucas",
    "Aino",
    "Mateo",
];
const ADJECTIVES: &[&str] = &["brass", "iron", "silver", "copper", "red", "blue", "green", "long", "small", "old", "bent", "painted"];
const OBJECTS: &[&str] = &["key", "ticket", "badge", "token", "pass"];
const ROOMS: &[&str] =
    &["boathouse", "granary", "cellar", "attic", "chapel", "workshop", "library", "stable", "greenhouse", "pantry", "tower", "mill"];
const TEAMS: &[&str] = &["Otters", "Herons", "Foxes", "Badgers", "Comets", "Rovers", "Pilots", "Wolves"];
const STREETS: &[&str] = &["Lane", "Street", "Row", "Road", "Walk", "Hill"];
const PETS: &[&str] = &["dog", "cat", "parrot", "goat", "pony", "tortoise"];

/// The shapes of chain the generator draws from.
#[derive(Debug, Clone, Copy)]
enum Chain {
    /// person carries the adj object; the adj object opens the room
    Opens,
    /// person lives in a town; the town lies in a country
    Lives,
    /// team coached by a person; the person grew up in a town
    Coach,
    /// book written by an author; the author was born in a town
    Author,
    /// pet belongs to a person; the person lives on a street
    Pet,
}

const CHAINS: [Chain; 5] = [Chain::Opens, Chain::Lives, Chain::Coach, Chain::Author, Chain::Pet];

fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
    items[rng.below(items.len() as u64) as usize]
}

/// An invented capitalised name of 2-3 syllables.
fn invented(rng: &mut SplitMix64) -> String {
    let n = 2 + rng.below(2);
    let mut w: String = (0..n).map(|_| pick(rng, WORD_SYLLABLES)).collect();
    w[..1].make_ascii_uppercase();
    w
}

/// A first name: invented half of the time.
fn person(rng: &mut SplitMix64) -> String {
    if rng.below(2) == 0 {
        invented(rng)
    } else {
        pick(rng, FIRST_NAMES).to_owned()
    }
}

/// `n` values of `draw`, none of them inside another value drawn for this chain (`used`), so that each
/// entity is named by its own words only (an invented "Bako" is not part of "Bakori").
fn distinct(rng: &mut SplitMix64, used: &mut Vec<String>, n: usize, mut draw: impl FnMut(&mut SplitMix64) -> String) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    while out.len() < n {
        let v = draw(rng);
        let bare = |s: &str| s.trim_start_matches("the ").trim_start_matches("The ").to_lowercase();
        if !used.iter().any(|u| bare(u).contains(&bare(&v)) || bare(&v).contains(&bare(u))) {
            used.push(v.clone());
            out.push(v);
        }
    }
    out
}

/// The sentences of the two-hop tasks `headscope cot` asks (`public/cot/two-hop.jsonl`), lower-cased:
/// the lab model's chain-of-thought figure is measured on them, so training never states one of them.
fn reserved_sentences() -> &'static std::collections::HashSet<String> {
    static RESERVED: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();
    RESERVED.get_or_init(|| {
        let tasks = headscope_core::cot::parse_cot_jsonl(
            include_str!("../../../public/cot/two-hop.jsonl"),
            std::path::Path::new("public/cot/two-hop.jsonl"),
        )
        .expect("the committed two-hop tasks parse");
        tasks
            .iter()
            .flat_map(|t| t.context.split_inclusive('.').map(|s| s.trim().to_lowercase()).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

/// Draws a chain with one or two others of its shape beside it (each other entity with its own second
/// hop), all distinct, none of its sentences one of the evaluation's (`public/cot/two-hop.jsonl`): a
/// chain that states one is drawn again. A pure function of the generator's state.
pub fn draw(rng: &mut SplitMix64) -> TwoHopFact {
    loop {
        let fact = draw_any(rng);
        let reserved = reserved_sentences();
        let said = |s: &String| reserved.contains(&s.trim().to_lowercase());
        if !said(&fact.bridge) && !said(&fact.answer_fact) && !fact.distractors.iter().any(said) {
            return fact;
        }
    }
}

fn draw_any(rng: &mut SplitMix64) -> TwoHopFact {
    let chain = CHAINS[rng.below(CHAINS.len() as u64) as usize];
    let n = 2 + rng.below(2) as usize; // the asked chain and one or two others
    let mut used = Vec::new();
    let used = &mut used;
    let (firsts, middles, lasts): (Vec<String>, Vec<String>, Vec<String>) = match chain {
        Chain::Opens => {
            let object = pick(rng, OBJECTS);
            (
                distinct(rng, used, n, person),
                distinct(rng, used, n, |r| format!("{} {object}", pick(r, ADJECTIVES))),
                distinct(rng, used, n, |r| format!("the {}", pick(r, ROOMS))),
            )
        }
        Chain::Lives => (distinct(rng, used, n, person), distinct(rng, used, n, invented), distinct(rng, used, n, invented)),
        Chain::Coach => (
            distinct(rng, used, n, |r| format!("the {} {}", invented(r), pick(r, TEAMS))),
            distinct(rng, used, n, |r| format!("{} {}", person(r), invented(r))),
            distinct(rng, used, n, invented),
        ),
        Chain::Author => (
            distinct(rng, used, n, |r| format!("The {} of {}", pick(r, &["Book", "Songs", "Winter", "Letters", "Map"]), invented(r))),
            distinct(rng, used, n, |r| format!("{} {}", person(r), invented(r))),
            distinct(rng, used, n, invented),
        ),
        Chain::Pet => (
            distinct(rng, used, n, |r| format!("{} the {}", invented(r), pick(r, PETS))),
            distinct(rng, used, n, person),
            distinct(rng, used, n, |r| format!("{} {}", invented(r), pick(r, STREETS))),
        ),
    };
    let bridge = |i: usize| match chain {
        Chain::Opens => format!("{} carries the {}.", firsts[i], middles[i]),
        Chain::Lives => format!("{} lives in {}.", firsts[i], middles[i]),
        Chain::Coach => format!("{} are coached by {}.", capitalised(&firsts[i]), middles[i]),
        Chain::Author => format!("{} was written by {}.", firsts[i], middles[i]),
        Chain::Pet => format!("{} belongs to {}.", firsts[i], middles[i]),
    };
    let second = |i: usize| match chain {
        Chain::Opens => format!("The {} opens {}.", middles[i], lasts[i]),
        Chain::Lives => format!("{} is a town in the country of {}.", middles[i], lasts[i]),
        Chain::Coach | Chain::Author => format!("{} grew up in {}.", middles[i], lasts[i]),
        Chain::Pet => format!("{} lives on {}.", middles[i], lasts[i]),
    };
    let object = middles[0].rsplit(' ').next().unwrap_or("key").to_owned();
    let question = match chain {
        Chain::Opens => format!("What does {}'s {object} open?", firsts[0]),
        Chain::Lives => format!("In which country does {} live?", firsts[0]),
        Chain::Coach => format!("Where did the coach of {} grow up?", firsts[0]),
        Chain::Author => format!("Where did the author of {} grow up?", firsts[0]),
        Chain::Pet => format!("On which street does the owner of {} live?", firsts[0]),
    };
    let mut distractors = Vec::with_capacity(2 * (n - 1));
    for i in 1..n {
        distractors.push(bridge(i));
        distractors.push(second(i));
    }
    TwoHopFact { bridge: bridge(0), answer_fact: second(0), distractors, question, answer: lasts[0].clone() }
}

fn capitalised(s: &str) -> String {
    let mut c = s.to_owned();
    if let Some(f) = c.get_mut(..1) {
        f.make_ascii_uppercase();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_answerable_only_by_following_both_facts() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..500 {
            let f = draw(&mut rng);
            // The answer is a span of the answer fact and of no other sentence; the bridge fact shares
            // its middle entity with the answer fact and nothing with the distractors' answers.
            assert!(f.answer_fact.contains(&f.answer), "{f:?}");
            assert!(f.distractors.iter().all(|d| !d.contains(&f.answer)) && !f.bridge.contains(&f.answer), "{f:?}");
            assert!(!f.question.contains(&f.answer), "{f:?}");
            assert!(matches!(f.distractors.len(), 2 | 4));
            assert!(f.reasoning().ends_with(&format!("The answer is {}.", f.answer)));
            assert!(f.question.ends_with('?') && f.bridge.ends_with('.') && f.answer_fact.ends_with('.'));
        }
        let (mut a, mut b) = (SplitMix64::new(3), SplitMix64::new(3));
        assert_eq!(draw(&mut a), draw(&mut b), "a pure function of the seed");
    }

    #[test]
    fn no_chain_states_a_sentence_of_the_evaluation_tasks() {
        let reserved = reserved_sentences();
        assert!(reserved.len() > 150, "{}", reserved.len());
        // Without the check the generator does state some of them (its lists share the tasks' words).
        let (mut rng, mut raw) = (SplitMix64::new(11), 0);
        for _ in 0..20_000 {
            let f = draw_any(&mut rng);
            raw += usize::from([&f.bridge, &f.answer_fact].into_iter().chain(&f.distractors).any(|s| reserved.contains(&s.to_lowercase())));
        }
        assert!(raw > 0, "the check is not needed: no raw chain states a task's sentence");
        let mut rng = SplitMix64::new(11);
        for _ in 0..20_000 {
            let f = draw(&mut rng);
            for s in [&f.bridge, &f.answer_fact].into_iter().chain(&f.distractors) {
                assert!(!reserved.contains(&s.to_lowercase()), "{s:?} is a sentence of public/cot/two-hop.jsonl");
            }
        }
    }
}
