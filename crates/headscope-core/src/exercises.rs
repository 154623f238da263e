//! Generated retrieval exercises for training a lab model: a fact sentence (a [`Needle`]) drawn from many
//! templates and entity lists, so that a model learns to *retrieve* answers from context rather than to
//! memorise them. Evaluation needles are held out: the paper's three, the San Francisco needle, and
//! HeadScope's own set ([`heldout_needles`]); the generator never produces any of them, nor uses their
//! distinctive names.

use crate::niah::{san_francisco_needle, Needle};
use crate::rng::SplitMix64;

const NAMES: &[&str] = &[
    "Alice", "Bram", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Keiko", "Lars", "Mira", "Nadia", "Oscar",
    "Priya", "Quentin", "Rosa", "Soren", "Tamsin", "Ugo", "Vera", "Wendell", "Xenia", "Yusuf", "Zora", "Arlo", "Bettina", "Cyril",
    "Delphine", "Emil", "Fiona", "Gideon", "Hazel", "Ivo", "Juno", "Kasimir", "Lena", "Magnus", "Nell", "Otto", "Petra", "Rufus", "Selma",
    "Tobias", "Ulla", "Viktor", "Wilma", "Yara", "Zeno", "Agnes", "Basil", "Celeste", "Dorian", "Edith", "Felix", "Hilda",
];
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
const VERBS: &[&str] = &[
    "walk along",
    "visit",
    "sit beside",
    "explore",
    "photograph",
    "climb",
    "row across",
    "sketch",
    "wander through",
    "picnic near",
    "cycle around",
    "swim in",
    "read a book in",
    "listen to music in",
    "feed the ducks at",
    "watch the boats from",
    "buy flowers at",
];
const SIGHTS: &[&str] = &[
    "the old harbour",
    "the castle gardens",
    "the river path",
    "the covered market",
    "the stone bridge",
    "the botanical garden",
    "the lighthouse",
    "the cathedral square",
    "the northern cliffs",
    "the silver lake",
    "the pine forest",
    "the fish market",
    "the university library",
    "the clock tower",
    "the eastern beach",
    "the rose garden",
    "the railway museum",
    "the windmill",
];
const ACTIVITIES: &[&str] = &[
    "drink a glass of cider",
    "eat warm almond cake",
    "try the grilled sardines",
    "share a pot of mint tea",
    "eat a bowl of noodles",
    "taste the local cheese",
    "buy a jar of honey",
    "order hot chocolate",
    "listen to a street violinist",
    "play a game of chess",
];
const TIMES: &[&str] = &[
    "at sunrise",
    "in the late afternoon",
    "on a foggy morning",
    "after the first snow",
    "during the spring festival",
    "at dusk",
    "on a windy evening",
    "before breakfast",
    "under a full moon",
    "on a quiet Sunday",
    "in early autumn",
    "after a summer storm",
];
const CATEGORIES: &[&str] = &["colour", "book", "song", "fruit", "animal", "city", "season", "flower", "dish", "instrument"];
const VALUES: &[&str] = &[
    "deep turquoise",
    "a faded copy of an old atlas",
    "a slow waltz in minor key",
    "the yellow plum",
    "the grey heron",
    "the harbour town of Bergen",
    "the first week of autumn",
    "the wild purple iris",
    "lentil soup with lemon",
    "the battered cello",
    "burnt orange",
    "a book of sea charts",
    "the red fox",
    "crisp green apples",
    "a ballad about a lighthouse keeper",
    "the snowdrop",
    "the old oboe",
    "baked trout with fennel",
];
const OBJECTS: &[&str] =
    &["brass key", "silver locket", "map of the caves", "old diary", "spare lantern", "box of letters", "wooden flute", "green umbrella"];
const HIDING: &[&str] = &[
    "under the loose floorboard beside the stove",
    "inside the hollow oak at the edge of the orchard",
    "behind the third brick of the garden wall",
    "in a tin box buried beneath the apple tree",
    "on the top shelf of the attic cupboard",
    "inside the piano in the music room",
    "under the stone steps of the chapel",
    "in the drawer of the blue writing desk",
    "beneath the boat shed by the pier",
];
const TOPICS: &[&str] =
    &["harbour repairs", "spring harvest", "library budget", "school concert", "railway timetable", "bridge inspection", "winter market"];
const DAYS: &[&str] =
    &["Monday morning", "Tuesday at noon", "Wednesday evening", "Thursday at nine", "Friday afternoon", "Saturday at dawn"];
const ROOMS: &[&str] =
    &["the east wing hall", "the small council room", "the library annex", "the old ballroom", "the lighthouse office", "the greenhouse"];
const REASONS: &[&str] = &[
    "she repaired the village well without asking for payment",
    "he taught every child in the valley to read",
    "she carried medicine across the mountains in winter",
    "he always returns what he borrows twice as good",
    "she rescued three fishermen during the great storm",
    "he planted a thousand trees along the river",
];
const WORDS: &[&str] =
    &["amber", "falcon", "cobalt", "thistle", "granite", "willow", "ember", "harbour", "quartz", "meadow", "raven", "saffron"];

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

/// Every needle that evaluation uses and training must never see.
pub fn reserved_needles() -> Vec<Needle> {
    let mut v = paper_needles();
    v.extend(heldout_needles());
    v
}

/// Draws training needles from the templates.
pub struct ExerciseGenerator {
    rng: SplitMix64,
    reserved: Vec<String>,
}

impl ExerciseGenerator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        ExerciseGenerator { rng: SplitMix64::new(seed), reserved: reserved_needles().into_iter().map(|n| n.needle).collect() }
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.rng.below(list.len() as u64) as usize]
    }

    /// The next exercise (never a reserved needle).
    pub fn next_needle(&mut self) -> Needle {
        loop {
            let n = self.draw();
            if !self.reserved.contains(&n.needle) {
                return n;
            }
        }
    }

    fn draw(&mut self) -> Needle {
        let n = |needle: String, question: String, answer: String| Needle { needle, question, real_needle: answer };
        match self.rng.below(8) {
            0 | 1 => {
                let place = self.pick(PLACES);
                let answer = match self.rng.below(3) {
                    0 => format!("{} {} {}", self.pick(VERBS), self.pick(SIGHTS), self.pick(TIMES)),
                    1 => format!("{} {} and {}", self.pick(VERBS), self.pick(SIGHTS), self.pick(ACTIVITIES)),
                    _ => format!("{} {}", self.pick(ACTIVITIES), self.pick(TIMES)),
                };
                let to = if self.rng.below(2) == 0 { "to " } else { "" };
                n(format!("The best thing to do in {place} is {to}{answer}."), format!("What is the best thing to do in {place}?"), answer)
            }
            2 => {
                let (who, cat, val) = (self.pick(NAMES), self.pick(CATEGORIES), self.pick(VALUES));
                n(format!("{who}'s favourite {cat} is {val}."), format!("What is {who}'s favourite {cat}?"), val.to_string())
            }
            3 => {
                let (who, obj, loc) = (self.pick(NAMES), self.pick(OBJECTS), self.pick(HIDING));
                n(format!("{who} hid the {obj} {loc}."), format!("Where did {who} hide the {obj}?"), loc.to_string())
            }
            4 => {
                let thing = self.pick(SIGHTS).trim_start_matches("the ").to_string();
                let code = format!("{} {} {}", self.pick(WORDS), self.pick(WORDS), 10 + self.rng.below(90));
                n(format!("The secret password for the {thing} is {code}."), format!("What is the secret password for the {thing}?"), code)
            }
            5 => {
                let (topic, day, room) = (self.pick(TOPICS), self.pick(DAYS), self.pick(ROOMS));
                let answer = format!("on {day} in {room}");
                n(
                    format!("The meeting about the {topic} will be held {answer}."),
                    format!("When and where will the meeting about the {topic} be held?"),
                    answer,
                )
            }
            6 => {
                let (who, why) = (self.pick(NAMES), self.pick(REASONS));
                let answer = format!("because {why}");
                n(format!("{who} is admired by everyone {answer}."), format!("Why is {who} admired by everyone?"), answer)
            }
            _ => {
                let place = self.pick(SIGHTS);
                let animal = ["heron", "badger", "otter", "goat", "owl", "hedgehog", "swan"][self.rng.below(7) as usize];
                let food = ["wild berries", "fresh clover", "small crabs", "bread crusts", "beech nuts", "river snails"]
                    [self.rng.below(6) as usize];
                let when = self.pick(TIMES);
                let answer = format!("{food} {when}");
                n(
                    format!("The {animal} that lives near {place} eats {answer}."),
                    format!("What does the {animal} that lives near {place} eat?"),
                    answer,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_exercise_is_a_valid_needle_and_the_generator_is_varied() {
        let mut g = ExerciseGenerator::new(1);
        let mut seen = HashSet::new();
        for _ in 0..20_000 {
            let n = g.next_needle();
            n.answer_range().unwrap_or_else(|e| panic!("{e}: {n:?}"));
            seen.insert(n.needle);
        }
        assert!(seen.len() > 10_000, "only {} distinct exercises in 20000", seen.len());
        let mut a = ExerciseGenerator::new(5);
        let mut b = ExerciseGenerator::new(5);
        assert_eq!(a.next_needle(), b.next_needle());
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
        let mut g = ExerciseGenerator::new(0);
        for _ in 0..50_000 {
            let n = g.next_needle();
            let text = format!("{} {} {}", n.needle, n.question, n.real_needle);
            for d in distinctive {
                assert!(!text.contains(d), "generator produced `{d}`: {text}");
            }
        }
    }
}

#[cfg(test)]
mod shipped_file {
    use super::*;
    use crate::niah::read_needles_jsonl;

    /// public/needles/heldout.jsonl is the San Francisco needle plus [`heldout_needles`], verbatim.
    #[test]
    fn shipped_heldout_file_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/needles/heldout.jsonl");
        let mut expected = vec![san_francisco_needle()];
        expected.extend(heldout_needles());
        assert_eq!(read_needles_jsonl(&path).unwrap(), expected);
    }
}
