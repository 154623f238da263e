//! Everyday facts in natural English with natural questions: the needles a student writes.
//!
//! The corpus-sentence exercises of [`crate::sentence_exercises`] point at their sentence with a bag of
//! its words ("What is said about why in system the Free?"); a student asks "Where does Professor Anand
//! keep his spare keys?". A lab model trained only on the first met the second as a new task. This
//! grammar writes facts about people, places, times, quantities, reasons, purposes, ways and company,
//! each an event (someone does something to something, with a circumstance), realised in one of several
//! sentence shapes (plain order, fronted circumstance, passive with agent, cleft, appositive, perfect,
//! attribution, trailing relative clause), in the present or past tense, and asks for one of its parts
//! with a question of the matching kind (where, when, how often, why, what for, how, with whom, for
//! whom, how long, how many, what, who), in English grammar: do-support, verb inflection, the subject
//! named in another form, the verb sometimes by a synonym. Near sentences share the question's words
//! but hold a different fact (the same person doing the same thing to something else, or someone else).
//!
//! The word lists are the project's own; no list holds a name, place or number of the hand-written
//! held-out needles (`public/needles/handwritten.jsonl`), and the exercise generator also refuses any
//! sentence naming two of a reserved needle's distinctive words.

use headscope_core::rng::SplitMix64;

/// A verb's forms: base, third person singular present, past, past participle.
#[derive(Debug, Clone, Copy)]
struct Verb {
    base: &'static str,
    third: &'static str,
    past: &'static str,
    participle: &'static str,
    /// A verb of like meaning (its index in [`VERBS`]) that a question may use instead, if any.
    synonym: Option<usize>,
}

macro_rules! verbs {
    ($(($b:expr, $t:expr, $p:expr, $pp:expr, $syn:expr)),* $(,)?) => {
        &[$(Verb { base: $b, third: $t, past: $p, participle: $pp, synonym: $syn }),*]
    };
}

/// Transitive verbs whose object is a thing. Synonyms point at each other by index.
const VERBS: &[Verb] = verbs![
    ("keep", "keeps", "kept", "kept", Some(1)),
    ("store", "stores", "stored", "stored", Some(0)),
    ("hide", "hides", "hid", "hidden", Some(3)),
    ("conceal", "conceals", "concealed", "concealed", Some(2)),
    ("repair", "repairs", "repaired", "repaired", Some(5)),
    ("mend", "mends", "mended", "mended", Some(4)),
    ("paint", "paints", "painted", "painted", None),
    ("sell", "sells", "sold", "sold", None),
    ("buy", "buys", "bought", "bought", Some(9)),
    ("purchase", "purchases", "purchased", "purchased", Some(8)),
    ("bake", "bakes", "baked", "baked", None),
    ("carve", "carves", "carved", "carved", None),
    ("polish", "polishes", "polished", "polished", Some(13)),
    ("clean", "cleans", "cleaned", "cleaned", Some(12)),
    ("carry", "carries", "carried", "carried", Some(15)),
    ("bring", "brings", "brought", "brought", Some(14)),
    ("wrap", "wraps", "wrapped", "wrapped", None),
    ("deliver", "delivers", "delivered", "delivered", None),
    ("collect", "collects", "collected", "collected", Some(19)),
    ("gather", "gathers", "gathered", "gathered", Some(18)),
    ("build", "builds", "built", "built", Some(21)),
    ("make", "makes", "made", "made", Some(20)),
    ("lock", "locks", "locked", "locked", None),
    ("sew", "sews", "sewed", "sewn", None),
    ("plant", "plants", "planted", "planted", None),
    ("count", "counts", "counted", "counted", None),
    ("sort", "sorts", "sorted", "sorted", Some(27)),
    ("arrange", "arranges", "arranged", "arranged", Some(26)),
    ("fetch", "fetches", "fetched", "fetched", None),
    ("lend", "lends", "lent", "lent", None),
    ("borrow", "borrows", "borrowed", "borrowed", None),
    ("sketch", "sketches", "sketched", "sketched", Some(32)),
    ("draw", "draws", "drew", "drawn", Some(31)),
    ("weigh", "weighs", "weighed", "weighed", None),
    ("hang", "hangs", "hung", "hung", None),
    ("stack", "stacks", "stacked", "stacked", Some(36)),
    ("pile", "piles", "piled", "piled", Some(35)),
    ("bury", "buries", "buried", "buried", None),
    ("photograph", "photographs", "photographed", "photographed", None),
    ("fix", "fixes", "fixed", "fixed", Some(4)),
    ("cook", "cooks", "cooked", "cooked", Some(41)),
    ("prepare", "prepares", "prepared", "prepared", Some(40)),
    ("send", "sends", "sent", "sent", Some(43)),
    ("post", "posts", "posted", "posted", Some(42)),
    ("guard", "guards", "guarded", "guarded", Some(45)),
    ("watch over", "watches over", "watched over", "watched over", Some(44)),
    ("wash", "washes", "washed", "washed", None),
    ("load", "loads", "loaded", "loaded", None),
    ("test", "tests", "tested", "tested", Some(49)),
    ("check", "checks", "checked", "checked", Some(48)),
    ("light", "lights", "lit", "lit", None),
    ("decorate", "decorates", "decorated", "decorated", None),
    ("grind", "grinds", "ground", "ground", None),
    ("brew", "brews", "brewed", "brewed", None),
    ("knit", "knits", "knitted", "knitted", None),
    ("feed", "feeds", "fed", "fed", None),
    ("print", "prints", "printed", "printed", None),
    ("copy", "copies", "copied", "copied", None),
    ("trade", "trades", "traded", "traded", Some(59)),
    ("swap", "swaps", "swapped", "swapped", Some(58)),
];

const FIRST_NAMES: &[(&str, Pronoun)] = &[
    ("Aiko", Pronoun::She),
    ("Bilal", Pronoun::He),
    ("Chidi", Pronoun::He),
    ("Dagny", Pronoun::She),
    ("Emeka", Pronoun::He),
    ("Farida", Pronoun::She),
    ("Gustav", Pronoun::He),
    ("Hana", Pronoun::She),
    ("Ivo", Pronoun::He),
    ("Jamila", Pronoun::She),
    ("Kenji", Pronoun::He),
    ("Leona", Pronoun::She),
    ("Mateus", Pronoun::He),
    ("Noor", Pronoun::She),
    ("Oskar", Pronoun::He),
    ("Priya", Pronoun::She),
    ("Quentin", Pronoun::He),
    ("Rosalind", Pronoun::She),
    ("Santiago", Pronoun::He),
    ("Thandiwe", Pronoun::She),
    ("Ulrich", Pronoun::He),
    ("Valeria", Pronoun::She),
    ("Wendell", Pronoun::He),
    ("Ximena", Pronoun::She),
    ("Yusuf", Pronoun::He),
    ("Zofia", Pronoun::She),
    ("Alder", Pronoun::They),
    ("Beatrix", Pronoun::She),
    ("Cormac", Pronoun::He),
    ("Delphine", Pronoun::She),
    ("Eamon", Pronoun::He),
    ("Freya", Pronoun::She),
    ("Goran", Pronoun::He),
    ("Hester", Pronoun::She),
    ("Idris", Pronoun::He),
    ("Juniper", Pronoun::They),
    ("Kofi", Pronoun::He),
    ("Lucia", Pronoun::She),
    ("Magnus", Pronoun::He),
    ("Nell", Pronoun::She),
    ("Obadiah", Pronoun::He),
    ("Paloma", Pronoun::She),
    ("Rafferty", Pronoun::He),
    ("Saoirse", Pronoun::She),
    ("Tobias", Pronoun::He),
    ("Una", Pronoun::She),
    ("Viktor", Pronoun::He),
    ("Wilhelmina", Pronoun::She),
    ("Yara", Pronoun::She),
    ("Zeke", Pronoun::He),
    ("Marisol", Pronoun::She),
    ("Anselm", Pronoun::He),
    ("Birgit", Pronoun::She),
    ("Dmitri", Pronoun::He),
    ("Esperanza", Pronoun::She),
    ("Florian", Pronoun::He),
    ("Greta", Pronoun::She),
    ("Hamish", Pronoun::He),
    ("Ingrid", Pronoun::She),
    ("Jonah", Pronoun::He),
    ("Kamala", Pronoun::She),
    ("Lorcan", Pronoun::He),
    ("Mei", Pronoun::She),
    ("Niall", Pronoun::He),
    ("Odile", Pronoun::She),
    ("Pavel", Pronoun::He),
    ("Rowan", Pronoun::They),
    ("Sefa", Pronoun::She),
];

const SURNAMES: &[&str] = &[
    "Okafor",
    "Lindgren",
    "Castellano",
    "Whitcombe",
    "Nakamura",
    "Abernathy",
    "Mbeki",
    "Oyelaran",
    "Svensson",
    "Delacroix",
    "Kowalczyk",
    "Fairweather",
    "Achebe",
    "Moreau",
    "Thornbury",
    "Szabo",
    "Quigley",
    "Rasmussen",
    "Bellweather",
    "Chaudhry",
    "Ferreira",
    "Gallagher",
    "Hollister",
    "Ibarra",
    "Jankowski",
    "Kerrigan",
    "Lachance",
    "Mendoza",
    "Novak",
    "Oduya",
    "Pemberton",
    "Quaresma",
    "Rutherford",
    "Sorensen",
    "Tanaka",
    "Underhill",
    "Vasquez",
    "Wainwright",
    "Yamamoto",
    "Zielinski",
    "Ashdown",
    "Blackwood",
    "Crane",
    "Dunmore",
    "Ellison",
    "Fitzroy",
    "Greaves",
    "Hartigan",
    "Iversen",
    "Jessop",
    "Kinsella",
    "Lockhart",
    "Marchetti",
    "Nwosu",
    "Osei",
    "Pryce",
    "Rookwood",
    "Strand",
    "Tregarthen",
    "Voss",
    "Winterbourne",
    "Ahn",
    "Bramble",
    "Coppersmith",
    "Dray",
    "Eke",
    "Fennimore",
    "Goodbody",
];

const TITLES: &[(&str, Option<Pronoun>)] = &[
    ("Professor", None),
    ("Doctor", None),
    ("Captain", None),
    ("Aunt", Some(Pronoun::She)),
    ("Uncle", Some(Pronoun::He)),
    ("Mrs", Some(Pronoun::She)),
    ("Mr", Some(Pronoun::He)),
    ("Ms", Some(Pronoun::She)),
    ("Judge", None),
    ("Mayor", None),
    ("Coach", None),
    ("Chef", None),
    ("Nurse", None),
    ("Sergeant", None),
    ("Grandma", Some(Pronoun::She)),
    ("Grandpa", Some(Pronoun::He)),
    ("Father", Some(Pronoun::He)),
    ("Sister", Some(Pronoun::She)),
];

/// People named by what they do; "the" is added.
const ROLES: &[&str] = &[
    "baker",
    "harbour master",
    "night nurse",
    "school caretaker",
    "ferryman",
    "librarian",
    "lighthouse keeper",
    "postwoman",
    "postman",
    "stationmaster",
    "beekeeper",
    "blacksmith",
    "miller's daughter",
    "innkeeper",
    "bookbinder",
    "clockmaker",
    "shepherd",
    "ship's cook",
    "museum guard",
    "choir master",
    "youngest fisherman",
    "old gardener",
    "bus driver",
    "village doctor",
    "carpenter",
    "potter",
    "tailor",
    "bell ringer",
    "toy maker",
    "head teacher",
    "goatherd",
    "cheesemaker",
    "tram conductor",
    "night watchman",
    "market trader",
    "printer",
    "glassblower",
    "piano tuner",
    "chimney sweep",
    "ranger",
    "zookeeper",
    "cartographer",
    "locksmith",
    "organist",
    "weaver",
];

/// People in the plural; "the" is added.
const GROUPS: &[&str] = &[
    "fishermen",
    "children",
    "nuns",
    "monks",
    "twins",
    "volunteers",
    "students",
    "miners",
    "sailors",
    "farmers",
    "weavers",
    "firefighters",
    "choir singers",
    "scouts",
    "night porters",
    "dock workers",
    "three brothers",
    "two sisters",
    "neighbours",
    "beekeepers",
    "rangers",
    "apprentices",
    "shopkeepers",
    "islanders",
];

/// Syllables of invented place names.
const PLACE_SYLLABLES: &[&str] = &[
    "ash", "bry", "cal", "dor", "eld", "fal", "gil", "har", "ish", "kel", "lan", "mar", "nor", "orm", "pen", "ros", "sal", "tav", "ul",
    "ven", "wil", "yar", "bec", "cor", "dun", "fen", "gar", "hol", "kil", "lis", "mel", "quen", "rav", "sen", "tor", "wes",
];

const PLACE_SUFFIXES: &[&str] =
    &["ford", "ham", "wick", "by", "mouth", "dale", "stead", "port", "holm", "ness", "ton", "field", "bury", "combe", "thorpe", "minster"];

/// Named kinds of place: `{}` is an invented name.
const NAMED_PLACES: &[&str] = &[
    "{} Island",
    "{} Bay",
    "Mount {}",
    "{} Road",
    "{} Square",
    "the {} Valley",
    "{} Market",
    "the {} Hotel",
    "{} Station",
    "{} Park",
    "the {} Museum",
    "{} Harbour",
    "the {} Theatre",
    "{} Farm",
    "the {} Observatory",
    "{} Pier",
    "{} School",
    "{}",
    "{}",
    "{}",
];

const ADJECTIVES: &[&str] = &[
    "old", "small", "red", "blue", "green", "wooden", "copper", "brass", "silver", "leather", "cracked", "heavy", "tiny", "painted",
    "yellow", "iron", "paper", "clay", "tin", "velvet", "striped", "black", "white", "glass", "woollen", "rusty", "spare", "round",
];

/// Things (singular, plural); objects of the verbs.
const THINGS: &[(&str, &str)] = &[
    ("key", "keys"),
    ("umbrella", "umbrellas"),
    ("kettle", "kettles"),
    ("lantern", "lanterns"),
    ("map", "maps"),
    ("notebook", "notebooks"),
    ("bicycle", "bicycles"),
    ("clock", "clocks"),
    ("boat", "boats"),
    ("chair", "chairs"),
    ("basket", "baskets"),
    ("coat", "coats"),
    ("violin", "violins"),
    ("telescope", "telescopes"),
    ("jar of plum jam", "jars of plum jam"),
    ("loaf of rye bread", "loaves of rye bread"),
    ("letter", "letters"),
    ("photograph", "photographs"),
    ("recipe book", "recipe books"),
    ("hammer", "hammers"),
    ("candle", "candles"),
    ("blanket", "blankets"),
    ("wheelbarrow", "wheelbarrows"),
    ("sign", "signs"),
    ("flag", "flags"),
    ("bell", "bells"),
    ("ladder", "ladders"),
    ("trunk", "trunks"),
    ("tea set", "tea sets"),
    ("fishing net", "fishing nets"),
    ("bottle of cider", "bottles of cider"),
    ("wedding ring", "wedding rings"),
    ("passport", "passports"),
    ("pair of boots", "pairs of boots"),
    ("sack of flour", "sacks of flour"),
    ("radio", "radios"),
    ("kite", "kites"),
    ("mirror", "mirrors"),
    ("compass", "compasses"),
    ("rug", "rugs"),
    ("typewriter", "typewriters"),
    ("ledger", "ledgers"),
    ("crate of apples", "crates of apples"),
    ("pot of honey", "pots of honey"),
    ("sword", "swords"),
    ("quilt", "quilts"),
    ("shell", "shells"),
    ("stamp album", "stamp albums"),
];

/// Containers and spots things are kept at: (preposition, place), "the" added.
const SPOTS: &[(&str, &str)] = &[
    ("in", "drawer under the sink"),
    ("behind", "clock in the hall"),
    ("on", "top shelf of the pantry"),
    ("under", "loose floorboard in the attic"),
    ("in", "biscuit tin on the windowsill"),
    ("at", "bottom of the garden"),
    ("inside", "hollow oak by the gate"),
    ("in", "cellar beneath the kitchen"),
    ("beside", "stove in the back room"),
    ("in", "glovebox of the van"),
    ("under", "stairs"),
    ("in", "shed behind the chapel"),
    ("on", "hook by the back door"),
    ("in", "cupboard above the fridge"),
    ("inside", "piano"),
    ("behind", "painting of the sea"),
    ("in", "pocket of an old coat"),
    ("in", "boathouse on the lake"),
    ("under", "bed in the spare room"),
    ("in", "safe at the post office"),
    ("in", "loft of the barn"),
    ("on", "bench outside the bakery"),
    ("inside", "wardrobe on the landing"),
    ("in", "basket on the bicycle"),
    ("next to", "well in the courtyard"),
    ("in", "tower room of the library"),
    ("under", "counter of the shop"),
    ("in", "suitcase on top of the wardrobe"),
];

const MONTHS: &[&str] =
    &["January", "February", "April", "May", "June", "July", "September", "December", "spring", "summer", "autumn", "winter"];
const WEEKDAYS: &[&str] = &["Tuesday", "Wednesday", "Friday"];
const UNITS_OF_TIME: &[(&str, &str)] = &[("minute", "minutes"), ("hour", "hours"), ("day", "days"), ("week", "weeks"), ("year", "years")];

/// Clauses after "because" (subject and verb in the past or present as written).
const REASONS: &[&str] = &[
    "the river floods every spring",
    "the roof of the shed leaks",
    "a storm once broke the old one",
    "the gulls steal everything else",
    "her grandmother always did the same",
    "his father taught him to",
    "nobody else in the village knows how",
    "the damp ruins anything left outside",
    "the mayor asked for it",
    "the sea air rusts the metal",
    "the old one was lost at sea",
    "the children keep asking for it",
    "it brings good luck to the harbour",
    "a fox got into the yard last winter",
    "the market closes early on Sundays",
    "the bridge was washed away",
    "the cat knocks things off the table",
    "the doctor told them to",
    "the ferry only runs at night",
    "it reminds them of their first home",
    "the shop in town stopped selling it",
    "the wind blows everything off the cliff",
    "the lock on the front door is broken",
    "a promise was made to the lighthouse keeper",
    "the letters from abroad arrive on that day",
];

/// Infinitive purposes, after "to" or "in order to".
const PURPOSES: &[&str] = &[
    "keep the moths away",
    "raise money for the new lifeboat",
    "surprise the neighbours",
    "remember the winter of the great storm",
    "keep the bees calm",
    "pay for the roof of the chapel",
    "win the prize at the summer fair",
    "teach the apprentices",
    "welcome the ships home",
    "keep the children busy",
    "thank the night nurses",
    "frighten the crows",
    "mark the end of the harvest",
    "warm the old dogs",
    "cheer up the patients",
    "honour the first ferryman",
];

/// Ways of doing it (manner or instrument).
const MANNERS: &[&str] = &[
    "with a silver spoon",
    "by hand",
    "with a borrowed saw",
    "using only seawater",
    "with a feather and a bowl of wax",
    "by candlelight",
    "with the help of a goat",
    "on a wooden trolley",
    "in total silence",
    "with a brush made of horsehair",
    "with an old pair of pliers",
    "by bicycle",
    "in a rowing boat",
    "with string and brown paper",
    "with lemon juice and salt",
    "in the light of the full moon",
];

const NUMBER_WORDS: &[&str] =
    &["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "fifteen", "twenty", "forty"];

const ATTRIBUTIONS: &[&str] = &["According to", "As told by", "In the words of", "As written by"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pronoun {
    He,
    She,
    They,
}

impl Pronoun {
    fn possessive(self) -> &'static str {
        match self {
            Pronoun::He => "his",
            Pronoun::She => "her",
            Pronoun::They => "their",
        }
    }
}

/// Someone who does something: how the needle names them, how a question may name them.
#[derive(Debug, Clone)]
struct Person {
    full: String,
    short: String,
    pronoun: Pronoun,
    plural: bool,
}

/// A circumstance of the event, the part a question asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Place,
    Time,
    Frequency,
    Reason,
    Purpose,
    Manner,
    Companion,
    Beneficiary,
    Duration,
    Quantity,
    Object,
    Subject,
}

const ROLES_ASKED: &[Role] = &[
    Role::Place,
    Role::Place,
    Role::Time,
    Role::Frequency,
    Role::Reason,
    Role::Purpose,
    Role::Manner,
    Role::Companion,
    Role::Beneficiary,
    Role::Duration,
    Role::Quantity,
    Role::Object,
    Role::Subject,
];

/// One event: someone does something to something, with one circumstance a question asks about and
/// maybe a second one that it does not.
#[derive(Debug, Clone)]
struct Event {
    subject: Person,
    verb: Verb,
    /// The object as the needle writes it, and its head noun phrase (for "How many ...").
    object: String,
    object_plural_noun: String,
    past: bool,
    asked: Role,
    /// The asked circumstance's phrase (empty when the object or the subject is asked).
    circumstance: String,
    /// What the question asks with, for time phrases ("When", "In which year", ...).
    time_question: &'static str,
    /// Another circumstance the question does not ask about.
    extra: Option<String>,
}

/// A natural fact and a question that asks for one of its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct NaturalFact {
    /// The sentence.
    pub needle: String,
    /// The question.
    pub question: String,
    /// The answer: a span of `needle`.
    pub answer: String,
    /// Sentences that share the question's words but hold another fact (0-2).
    pub near: Vec<String>,
}

/// Syllables of invented names and words (a set apart from the place names', so that an invented
/// person does not read as a place).
pub(crate) const WORD_SYLLABLES: &[&str] = &[
    "ba", "ko", "ri", "tes", "mun", "dra", "vi", "lo", "pe", "zan", "quo", "ith", "el", "sy", "gor", "fa", "nu", "tri", "ska", "we", "jo",
    "mir", "ta", "bel", "os", "ux", "den", "ka", "ly", "pho", "ren", "sa", "gu", "hal", "ne", "vo",
];

/// Draws [`NaturalFact`]s: a pure function of its seed.
pub struct FactGrammar {
    rng: SplitMix64,
    /// Share of names, things, adjectives and spots that are invented words (see
    /// [`FactGrammar::with_invented_words`]).
    invented: f64,
    /// Share of facts written with one of the clause forms of [`FactGrammar::with_clauses`].
    clauses: f64,
    /// Near sentences always answer the question otherwise ([`FactGrammar::with_distinct_near_answers`]).
    distinct_near_answers: bool,
    /// Share of near sentences that are someone else doing the same ([`FactGrammar::with_same_event_near`]).
    same_event: f64,
    /// Share of facts written with their answer first ([`FactGrammar::with_answer_first`]).
    answer_first: f64,
}

impl FactGrammar {
    /// A grammar seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        FactGrammar {
            rng: SplitMix64::new(seed),
            invented: 0.0,
            clauses: 0.0,
            distinct_near_answers: false,
            same_event: 0.0,
            answer_first: 0.0,
        }
    }

    /// Gives every near sentence another answer than the needle's: its asked part is drawn afresh, and
    /// one whose answer still comes out the same is left out. Without it a near sentence changes what
    /// the question names (subject, object, verb, circumstance) but often keeps the asked part ("If the
    /// market was closed, Freya loaded his wooden recipe book ..." beside the needle's goatherd loading
    /// the same book, asked "What did the goatherd load?"), so copying the wrong sentence of a pair that
    /// matches the question in part cost nothing; lab stages trained on clause forms, whose questions
    /// repeat less of their needle, learnt to copy look-alikes. Off, no extra random numbers are drawn
    /// and the facts of a seed stay what they were.
    pub fn with_distinct_near_answers(mut self, on: bool) -> Self {
        self.distinct_near_answers = on;
        self
    }

    /// Makes this share of the near sentences someone else doing the same thing: the needle's verb and
    /// object, another subject and (with [`FactGrammar::with_distinct_near_answers`]) another answer,
    /// where the question does not ask for the subject. Such a sentence shares a long run of words with
    /// the needle right before the answer ("The students of Salmouth Park printed photographs, ladders
    /// and hammers for 16 hours" beside the needle's twins of Ravulness Farm doing it for 6 days): a
    /// model that copies by matching the last few words drifts from the needle into it at the end of
    /// the run, and more so where a short haystack repeats it (the wide-head stages' look-alike
    /// failures, docs/lab-v5/README.md). Otherwise a near sentence is one of three kinds, this being
    /// one. At 0 no extra random numbers are drawn, so the facts of a seed stay what they were.
    pub fn with_same_event_near(mut self, share: f64) -> Self {
        self.same_event = share;
        self
    }

    /// Writes this share of the facts with a clause form English uses all the time and the plain event
    /// shapes lack: a person named by a relative clause ("the woman who mends nets at Dunmore keeps
    /// ..."), a condition or time clause in front that the question does not ask about ("Whenever the
    /// tide is out, ..."), an existential ("There are 40 lanterns behind the stove, which Nell
    /// polished"), and fronted reasons opened by "As" or "Since" as well as "Because". Lab model v4 found
    /// needles in the plain shapes and missed most of those; a student's sentence is as likely to be
    /// one as the other. At 0 no extra random numbers are drawn, so the facts of a seed stay what they
    /// were (the committed recipes that leave it out give the same batches).
    pub fn with_clauses(mut self, share: f64) -> Self {
        self.clauses = share;
        self
    }

    /// Writes this share of the facts with their answer before every word the question names: the
    /// asked place, time, reason or purpose in front ("Behind the mill, Tomas buried ..."; "Since the
    /// well ran dry, ..."), a cleft ("It was in 1961 that ..."), or an existential that opens with the
    /// asked quantity ("There are 40 lanterns behind the stove, which ..."). A question names the words
    /// after such an answer, so finding the sentence by them and copying on from there passes the answer
    /// by; the answer starts where the sentence does. The hand-written needles of those shapes
    /// (opening adverbials, causes first, existentials) were the ones lab model h12 missed at every
    /// length, and about 7 % of the other facts have it. Events are drawn until one fits such a shape.
    /// At 0 no extra random numbers are drawn, so the facts of a seed stay what they were.
    pub fn with_answer_first(mut self, share: f64) -> Self {
        self.answer_first = share;
        self
    }

    /// Whether the next fact (or person) takes a clause form: never a draw at share 0.
    fn clause(&mut self, weight: f64) -> bool {
        self.clauses > 0.0 && self.chance(self.clauses * weight)
    }

    /// Replaces this share of the first names, surnames, things, adjectives and spots the word lists
    /// would give by invented words ("Doravi Kotes keeps her skavin velvet lantern ..."). A word list
    /// of a few dozen names is soon memorised: the model then writes a likely name, not the one the
    /// context holds. An invented word can only be copied, letter by letter, from the needle, which is
    /// what a student's needle asks of it (names and places it never saw). At 0 no extra random
    /// numbers are drawn, so the facts of a seed stay what they were.
    pub fn with_invented_words(mut self, share: f64) -> Self {
        self.invented = share;
        self
    }

    /// Whether the next word-list pick is to be invented instead.
    fn invent(&mut self) -> bool {
        self.invented > 0.0 && self.chance(self.invented)
    }

    /// An invented word of 2-3 syllables, capitalised or not.
    fn invented_word(&mut self, capital: bool) -> String {
        let n = 2 + self.rng.below(2);
        let mut w: String = (0..n).map(|_| self.pick(WORD_SYLLABLES)).collect();
        if capital {
            w[..1].make_ascii_uppercase();
        }
        w
    }

    /// `word`, or as often as [`FactGrammar::with_invented_words`] says an invented one.
    fn word_or_invented(&mut self, word: &str, capital: bool) -> String {
        if self.invent() {
            self.invented_word(capital)
        } else {
            word.to_owned()
        }
    }

    /// A thing (singular, plural) of [`THINGS`], or an invented one.
    fn thing(&mut self) -> (String, String) {
        let (one, many) = self.pick(THINGS);
        if self.invent() {
            let w = self.invented_word(false);
            let plural = if w.ends_with(['s', 'x']) { format!("{w}es") } else { format!("{w}s") };
            return (w, plural);
        }
        (one.to_owned(), many.to_owned())
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.unit() < p
    }

    /// The next fact, with `near` sentences (0-2, drawn when `near_sentences` says so).
    pub fn fact(&mut self, near_sentences: bool) -> NaturalFact {
        let (event, shape) = if self.answer_first > 0.0 && self.chance(self.answer_first) {
            self.answer_first_event()
        } else {
            let event = self.event();
            let mut shape = self.shape(&event);
            if self.clause(1.0) {
                shape = self.clause_shape(&event).unwrap_or(shape);
            }
            (event, shape)
        };
        let (needle, answer) = self.realise(&event, shape);
        let question = self.question(&event, shape == Shape::Perfect);
        let mut near = Vec::new();
        if near_sentences {
            for _ in 0..1 + self.rng.below(2) {
                let other = self.near_event(&event);
                let (s, near_answer) = self.realise(&other, shape);
                let same_answer = self.distinct_near_answers && near_answer.eq_ignore_ascii_case(&answer);
                if s != needle && !near.contains(&s) && !same_answer {
                    near.push(s);
                }
            }
        }
        NaturalFact { needle, question, answer, near }
    }

    fn invented_place(&mut self) -> String {
        let n = 1 + self.rng.below(2);
        let mut name: String = (0..n).map(|_| self.pick(PLACE_SYLLABLES)).collect();
        name.push_str(self.pick(PLACE_SUFFIXES));
        name[..1].make_ascii_uppercase();
        let kind = self.pick(NAMED_PLACES);
        kind.replace("{}", &name)
    }

    fn person(&mut self) -> Person {
        if self.clause(0.3) {
            return self.person_by_clause();
        }
        match self.rng.below(10) {
            0..=3 => {
                let (first, pronoun) = self.pick(FIRST_NAMES);
                let first = self.word_or_invented(first, true);
                let last = self.pick(SURNAMES);
                let last = self.word_or_invented(last, true);
                let short = if self.chance(0.5) { first.to_owned() } else { format!("{first} {last}") };
                Person { full: format!("{first} {last}"), short, pronoun, plural: false }
            }
            4..=5 => {
                let (title, p) = self.pick(TITLES);
                let (mut first, mut first_pronoun) = self.pick(FIRST_NAMES);
                while p.is_some_and(|p| p != first_pronoun) {
                    (first, first_pronoun) = self.pick(FIRST_NAMES);
                }
                let first = self.word_or_invented(first, true);
                let last = self.pick(SURNAMES);
                let last = self.word_or_invented(last, true);
                let pronoun = p.unwrap_or(first_pronoun);
                let full = if self.chance(0.5) { format!("{title} {first} {last}") } else { format!("{title} {last}") };
                Person { full, short: format!("{title} {last}"), pronoun, plural: false }
            }
            6..=7 => {
                let role = self.pick(ROLES);
                let pronoun = if role.ends_with("woman") || role.contains("daughter") {
                    Pronoun::She
                } else if role.ends_with("man") {
                    Pronoun::He
                } else {
                    self.pick(&[Pronoun::He, Pronoun::She])
                };
                let place = self.invented_place();
                let prep = self.pick(&["of", "at", "on", "in"]);
                let full = format!("the {role} {prep} {place}");
                let short = if self.chance(0.5) { full.clone() } else { format!("the {role}") };
                Person { full, short, pronoun, plural: false }
            }
            _ => {
                let group = self.pick(GROUPS);
                let place = self.invented_place();
                let full = format!("the {group} of {place}");
                Person { full: full.clone(), short: full, pronoun: Pronoun::They, plural: true }
            }
        }
    }

    /// Someone named by what they do, in a relative clause: "the woman who mends nets at Dunmore";
    /// questions name them in full or by the clause alone ("the woman who mends nets").
    fn person_by_clause(&mut self) -> Person {
        let (noun, pronoun) = self.pick(&[
            ("woman", Pronoun::She),
            ("man", Pronoun::He),
            ("girl", Pronoun::She),
            ("boy", Pronoun::He),
            ("old woman", Pronoun::She),
            ("old man", Pronoun::He),
            ("young woman", Pronoun::She),
            ("young man", Pronoun::He),
        ]);
        let v = self.pick(VERBS);
        let (_, things) = self.thing();
        let clause = format!("the {noun} who {} {things}", v.third);
        let full = if self.chance(0.6) {
            let prep = self.pick(&["at", "in", "near", "on"]);
            format!("{clause} {prep} {}", self.invented_place())
        } else {
            clause.clone()
        };
        let short = if self.chance(0.5) { full.clone() } else { clause };
        Person { full, short, pronoun, plural: false }
    }

    /// An event and a shape that writes its answer first ([`FactGrammar::with_answer_first`]): events
    /// are drawn until one's asked part can go in front.
    fn answer_first_event(&mut self) -> (Event, Shape) {
        loop {
            let e = self.event();
            let mut options = Vec::new();
            if frontable(&e) {
                options.extend([Shape::Fronted, Shape::Fronted, Shape::Cleft]);
            }
            if e.asked == Role::Reason {
                options.extend([Shape::ReasonFirst, Shape::ReasonFirst]);
            }
            if e.asked == Role::Quantity && !e.object.contains(',') {
                options.extend([Shape::Existential, Shape::Existential]);
            }
            if !options.is_empty() {
                let shape = self.pick(&options);
                return (e, shape);
            }
        }
    }

    /// One of the clause shapes that fits `e`, if any.
    fn clause_shape(&mut self, e: &Event) -> Option<Shape> {
        let existential = matches!(e.asked, Role::Place | Role::Quantity)
            && (e.asked == Role::Quantity || e.object.starts_with("a ") || e.object.starts_with("an "))
            && !e.object.contains(',');
        let fronted_reason = e.asked == Role::Reason;
        let mut options = vec![Shape::Conditioned, Shape::Conditioned];
        if existential {
            options.extend([Shape::Existential, Shape::Existential]);
        }
        if fronted_reason {
            options.push(Shape::ReasonFirst);
        }
        Some(self.pick(&options))
    }

    /// A condition or time clause for the front of a sentence, in the event's tense.
    fn condition(&mut self, past: bool) -> String {
        let (present, past_form) = self.pick(CONDITIONS);
        let c = if past { past_form } else { present };
        capitalise_first(c)
    }

    /// A thing as an object: with an article, a possessive, a number or an adjective; or a list.
    fn object(&mut self, owner: Pronoun, quantity: bool) -> (String, String) {
        let (one, many) = self.thing();
        if quantity {
            let n = if self.chance(0.5) { self.pick(NUMBER_WORDS).to_owned() } else { (13 + self.rng.below(480)).to_string() };
            return (format!("{n} {many}"), many);
        }
        let adj = self.pick(ADJECTIVES);
        let adj = self.word_or_invented(adj, false);
        let object = match self.rng.below(7) {
            0 | 1 => format!("{} {adj} {one}", owner.possessive()),
            2 => format!("the {adj} {one}"),
            3 => format!("{} {adj} {many}", owner.possessive()),
            4 => format!("{} {one}", if starts_with_vowel(&adj) { "an" } else { "a" }.to_owned() + " " + &adj),
            5 => {
                let (_, b) = self.thing();
                let (_, c) = self.thing();
                format!("{many}, {b} and {c}")
            }
            _ => format!("the {one}"),
        };
        (object, many)
    }

    fn time(&mut self) -> (String, &'static str) {
        match self.rng.below(6) {
            0 => (format!("in {}", 1700 + self.rng.below(320)), "In which year"),
            1 => {
                let month = self.pick(&MONTHS[..8]);
                (format!("in {month} {}", 1800 + self.rng.below(220)), "When")
            }
            2 => {
                let h = 1 + self.rng.below(12);
                let m = self.pick(&["", ":15", ":30", ":45"]);
                let part = self.pick(&["in the morning", "in the evening", "at night", "in the afternoon"]);
                (format!("at {h}{m} {part}"), "At what time")
            }
            3 => (format!("on the {} of {}", ordinal(1 + self.rng.below(28)), self.pick(&MONTHS[..8])), "On which day"),
            4 => (
                format!("just before {}", self.pick(&["sunrise", "midnight", "the first snow", "the harvest fair", "the tide turns"])),
                "When",
            ),
            _ => (format!("after the {} festival", self.pick(&["lantern", "apple", "salmon", "midsummer", "kite"])), "When"),
        }
    }

    fn frequency(&mut self) -> String {
        match self.rng.below(4) {
            0 => format!("every {}", self.pick(WEEKDAYS)),
            1 => format!("every {}", self.pick(&MONTHS[8..])),
            2 => format!("{} times a {}", self.pick(&["two", "three", "four", "five"]), self.pick(&["week", "month", "year"])),
            _ => format!("once every {} {}", self.pick(&["two", "three", "six", "ten"]), self.pick(&["days", "weeks", "months", "years"])),
        }
    }

    fn circumstance(&mut self, role: Role, subject: &Person) -> (String, &'static str) {
        match role {
            Role::Place => {
                if self.chance(0.3) {
                    let prep = self.pick(&["in", "at", "near", "behind"]);
                    (format!("{prep} {}", self.invented_place()), "Where")
                } else {
                    let (prep, spot) = self.pick(SPOTS);
                    // The spot's first word ("drawer under the sink"): invented, it is a new container.
                    let (head, rest) = spot.split_once(' ').unwrap_or((spot, ""));
                    let head = self.word_or_invented(head, false);
                    let spot = if rest.is_empty() { head } else { format!("{head} {rest}") };
                    (format!("{prep} the {spot}"), "Where")
                }
            }
            Role::Time => self.time(),
            Role::Frequency => (self.frequency(), "How often"),
            Role::Reason => (format!("because {}", self.pick(REASONS)), "Why"),
            Role::Purpose => (format!("{} {}", self.pick(&["to", "in order to"]), self.pick(PURPOSES)), "Why"),
            Role::Manner => (self.pick(MANNERS).to_owned(), "How"),
            Role::Companion => {
                let other = self.person();
                (format!("with {}", other.full), "With whom")
            }
            Role::Beneficiary => {
                let mut other = self.person();
                while other.full == subject.full {
                    other = self.person();
                }
                (format!("for {}", other.full), "For whom")
            }
            Role::Duration => {
                let (one, many) = self.pick(UNITS_OF_TIME);
                let n = 1 + self.rng.below(40);
                let unit = if n == 1 { one } else { many };
                let n = if n <= 12 && self.chance(0.6) { number_word(n) } else { n.to_string() };
                (format!("for {n} {unit}"), "How long")
            }
            Role::Quantity | Role::Object | Role::Subject => (String::new(), ""),
        }
    }

    fn event(&mut self) -> Event {
        let subject = self.person();
        let verb = self.pick(VERBS);
        let asked = self.pick(ROLES_ASKED);
        let (object, object_plural_noun) = self.object(subject.pronoun, asked == Role::Quantity);
        let (circumstance, time_question) = self.circumstance(asked, &subject);
        let mut past = self.chance(0.45);
        // A second circumstance the question does not ask about: of another role than the asked one.
        let extra = if self.chance(0.55) {
            let role = self.pick(&[Role::Place, Role::Time, Role::Frequency, Role::Manner, Role::Reason]);
            let clash = role == asked
                || (role == Role::Frequency && asked == Role::Time)
                || (role == Role::Time && asked == Role::Frequency)
                || (role == Role::Reason && asked == Role::Purpose);
            (!clash).then(|| self.circumstance(role, &subject).0)
        } else {
            None
        };
        // A dated event happened: "in 1788" wants the past tense.
        let dated = |p: &str| p.split_whitespace().any(|w| w.len() == 4 && w.chars().all(|c| c.is_ascii_digit()));
        past |= dated(&circumstance) || extra.as_deref().is_some_and(dated);
        Event { subject, verb, object, object_plural_noun, past, asked, circumstance, time_question, extra }
    }

    /// Another event that shares the question's words in part: the same subject and verb with another
    /// object or circumstance, or someone else doing the same.
    fn near_event(&mut self, e: &Event) -> Event {
        let mut other = e.clone();
        let someone_else = !matches!(e.asked, Role::Subject | Role::Companion | Role::Beneficiary);
        let kind = if self.same_event > 0.0 && someone_else && self.chance(self.same_event) { 1 } else { self.rng.below(3) };
        match kind {
            0 if !matches!(e.asked, Role::Object | Role::Quantity) => {
                other.object = self.object(e.subject.pronoun, false).0;
                if self.chance(0.5) {
                    other.circumstance = self.circumstance(e.asked, &e.subject).0;
                }
            }
            1 if someone_else => {
                other.subject = self.person();
                other.circumstance = self.circumstance(e.asked, &other.subject).0;
            }
            _ => {
                other.verb = self.pick(VERBS);
                let fresh = self.circumstance(e.asked, &e.subject).0;
                if !fresh.is_empty() {
                    other.circumstance = fresh;
                } else {
                    other.object = self.object(e.subject.pronoun, e.asked == Role::Quantity).0;
                }
            }
        }
        if self.distinct_near_answers {
            // The asked part afresh: a near sentence shares some of the question's words, never its answer.
            match e.asked {
                Role::Object | Role::Quantity => {
                    let (object, many) = self.object(other.subject.pronoun, e.asked == Role::Quantity);
                    other.object = object;
                    other.object_plural_noun = many;
                }
                Role::Subject => other.subject = self.person(),
                _ => other.circumstance = self.circumstance(e.asked, &other.subject).0,
            }
        }
        other
    }

    fn shape(&mut self, e: &Event) -> Shape {
        let frontable = frontable(e);
        loop {
            let s = self.pick(&[
                Shape::Plain,
                Shape::Plain,
                Shape::Fronted,
                Shape::Passive,
                Shape::Cleft,
                Shape::Appositive,
                Shape::Perfect,
                Shape::Attributed,
                Shape::TrailingClause,
            ]);
            let ok = match s {
                Shape::Fronted | Shape::Cleft => frontable,
                // English spells out a number that opens a sentence: no passive then.
                Shape::Passive => e.asked != Role::Object && !e.object.contains(',') && !e.object.starts_with(|c: char| c.is_ascii_digit()),
                Shape::Perfect => !matches!(e.asked, Role::Time | Role::Frequency | Role::Duration),
                _ => true,
            };
            if ok {
                return s;
            }
        }
    }

    /// The needle sentence and its answer span.
    fn realise(&mut self, e: &Event, shape: Shape) -> (String, String) {
        let s = &e.subject;
        let v = e.verb;
        let verb = if e.past {
            v.past
        } else if s.plural {
            v.base
        } else {
            v.third
        };
        let answer = match e.asked {
            Role::Subject => s.full.clone(),
            Role::Object | Role::Quantity => e.object.clone(),
            _ => e.circumstance.clone(),
        };
        // The circumstances after the object: the asked one (unless fronted), the extra one; a reason
        // reads last, after a passive's agent too.
        let (mut middle, mut last) = (Vec::new(), Vec::new());
        for (phrase, asked) in [(Some(&e.circumstance), true), (e.extra.as_ref(), false)] {
            let Some(p) = phrase.filter(|p| !p.is_empty()) else { continue };
            if p.starts_with("because") {
                last.push(p.clone());
            } else if asked {
                middle.push(p.clone());
            } else {
                middle.insert(0, p.clone());
            }
        }
        let tail = |with_asked: bool| -> String {
            let keep = |p: &&String| with_asked || p.as_str() != e.circumstance;
            middle.iter().chain(&last).filter(keep).cloned().collect::<Vec<_>>().join(" ")
        };
        let join = |words: &[&str]| words.iter().filter(|w| !w.is_empty()).copied().collect::<Vec<_>>().join(" ");
        let sentence = match shape {
            Shape::Plain => join(&[&s.full, verb, &e.object, &tail(true)]),
            Shape::Fronted => {
                let front = capitalise_first(&e.circumstance);
                format!("{front}, {}", join(&[&s.full, verb, &e.object, &tail(false)]))
            }
            Shape::Passive => {
                let be = be_form(e.past, plural_object(&e.object));
                let object = capitalise_first(&e.object);
                join(&[&object, be, v.participle, &middle.join(" "), "by", &s.full, &last.join(" ")])
            }
            Shape::Cleft => {
                let be = if e.past { "was" } else { "is" };
                format!("It {be} {} that {}", e.circumstance, join(&[&s.full, verb, &e.object, &tail(false)]))
            }
            Shape::Appositive => {
                let description = self.description();
                let be = if s.plural { "" } else { description };
                if be.is_empty() {
                    join(&[&s.full, verb, &e.object, &tail(true)])
                } else {
                    format!("{}, {be}, {}", s.full, join(&[verb, &e.object, &tail(true)]))
                }
            }
            Shape::Perfect => {
                let have = if s.plural { "have" } else { "has" };
                let since = format!("since {}", 1900 + self.rng.below(120));
                join(&[&s.full, have, v.participle, &e.object, &tail(true), &since])
            }
            Shape::Attributed => {
                let by = self.person();
                format!("{} {}, {}", self.pick(ATTRIBUTIONS), by.full, join(&[&s.full, verb, &e.object, &tail(true)]))
            }
            Shape::TrailingClause => {
                let clause = self.pick(&[
                    "which surprised nobody",
                    "and nobody has ever asked why",
                    "though few people know it",
                    "as the whole street knows",
                    "which the neighbours find strange",
                    "and the habit has stuck",
                ]);
                format!("{}, {clause}", join(&[&s.full, verb, &e.object, &tail(true)]))
            }
            Shape::Conditioned => {
                let condition = self.condition(e.past);
                format!("{condition}, {}", join(&[&s.full, verb, &e.object, &tail(true)]))
            }
            Shape::ReasonFirst => {
                // The asked reason fronted with another connective: the answer is the clause as written.
                let connective = self.pick(&["As", "Since", "Because"]);
                let reason = e.circumstance.strip_prefix("because ").unwrap_or(&e.circumstance);
                let front = format!("{connective} {reason}");
                let sentence = format!("{front}, {}.", join(&[&s.full, verb, &e.object, &tail(false)]));
                return (sentence, front);
            }
            Shape::Existential => {
                // "There are 40 lanterns behind the stove, which Nell polished by hand."
                let be = be_form(e.past, plural_object(&e.object));
                let place = if e.asked == Role::Place {
                    e.circumstance.clone()
                } else {
                    let (prep, spot) = self.pick(SPOTS);
                    format!("{prep} the {spot}")
                };
                let rest: Vec<String> = middle.iter().chain(&last).filter(|p| p.as_str() != e.circumstance).cloned().collect();
                let rest = rest.join(" ");
                format!("There {be} {} {place}, which {}", indefinite(&e.object), join(&[&s.full, verb, &rest]))
            }
        };
        let sentence = format!("{}.", capitalise_first(&sentence));
        // An answer that opens the sentence opens with a capital there.
        let answer = if sentence.contains(&answer) { answer } else { capitalise_first(&answer) };
        (sentence, answer)
    }

    fn description(&mut self) -> &'static str {
        self.pick(&[
            "who is eighty-one",
            "a retired sailor",
            "the town's oldest resident",
            "who moved here last year",
            "a quiet person",
            "who never misses a market day",
            "the best cook on the street",
            "who grew up by the sea",
            "",
        ])
    }

    /// A question for the asked part of `e`, in English grammar, maybe naming the subject in its short
    /// form and the verb by a synonym.
    fn question(&mut self, e: &Event, perfect: bool) -> String {
        let mut v = match e.verb.synonym {
            Some(i) if self.chance(0.25) => VERBS[i],
            _ => e.verb,
        };
        if perfect {
            // "Where has Nell kept ...?", "Who has kept ...?"
            let have = if e.subject.plural { "have" } else { "has" };
            let participle = v.participle;
            v = Verb { base: participle, third: participle, past: participle, ..v };
            return self.question_with(e, v, have, perfect);
        }
        let aux = if e.past {
            "did"
        } else if e.subject.plural {
            "do"
        } else {
            "does"
        };
        self.question_with(e, v, aux, perfect)
    }

    /// [`FactGrammar::question`] with the verb forms and the auxiliary chosen.
    fn question_with(&mut self, e: &Event, v: Verb, aux: &str, perfect: bool) -> String {
        let subject = if self.chance(0.5) { e.subject.short.clone() } else { e.subject.full.clone() };
        // Sometimes the object is left out of the question, when something else names the event.
        let object = if e.extra.is_some() && self.chance(0.15) { String::new() } else { e.object.clone() };
        let extra = match &e.extra {
            Some(x) if self.chance(0.3) => x.clone(),
            _ => String::new(),
        };
        let join = |words: &[&str]| words.iter().filter(|w| !w.is_empty()).copied().collect::<Vec<_>>().join(" ");
        let q = match e.asked {
            Role::Place => {
                if !perfect && self.chance(0.25) && !plural_object(&e.object) && !e.object.contains(',') {
                    let be = if e.past { "was" } else { "is" };
                    join(&["Where", be, &e.object, v.participle, "by", &subject])
                } else {
                    let opening = self.pick(&["Where", "Where", "In which place"]);
                    join(&[opening, aux, &subject, v.base, &object, &extra])
                }
            }
            Role::Time | Role::Frequency | Role::Reason | Role::Manner | Role::Duration => {
                let opening = match e.asked {
                    Role::Reason => self.pick(&["Why", "Why", "For what reason"]),
                    Role::Manner => self.pick(&["How", "How", "In what way"]),
                    Role::Time if self.chance(0.5) => "When",
                    _ => e.time_question,
                };
                join(&[opening, aux, &subject, v.base, &e.object, &extra])
            }
            Role::Purpose => {
                if self.chance(0.4) {
                    join(&["What", aux, &subject, v.base, &e.object, "for"])
                } else {
                    join(&["Why", aux, &subject, v.base, &e.object])
                }
            }
            Role::Companion => {
                if self.chance(0.5) {
                    join(&["Who", aux, &subject, v.base, &e.object, "with"])
                } else {
                    join(&["With whom", aux, &subject, v.base, &e.object])
                }
            }
            Role::Beneficiary => {
                if self.chance(0.5) {
                    join(&["Who", aux, &subject, v.base, &e.object, "for"])
                } else {
                    join(&["For whom", aux, &subject, v.base, &e.object])
                }
            }
            Role::Quantity => join(&["How many", &e.object_plural_noun, aux, &subject, v.base, &e.circumstance, &extra]),
            Role::Object => {
                let what = self.pick(&["What", "What", "Which things"]);
                join(&[what, aux, &subject, v.base, &extra])
            }
            Role::Subject => {
                let verb = if perfect {
                    format!("has {}", v.participle)
                } else if e.past {
                    v.past.to_owned()
                } else {
                    v.third.to_owned()
                };
                let who = self.pick(&["Who", "Who", "Which person"]);
                join(&[who, &verb, &e.object, &extra])
            }
        };
        format!("{}?", capitalise_first(&q))
    }
}

/// Whether the asked part of `e` is a circumstance that can open the sentence ("Behind the mill, ...",
/// "It was in 1961 that ...").
fn frontable(e: &Event) -> bool {
    matches!(e.asked, Role::Place | Role::Time | Role::Frequency | Role::Reason | Role::Purpose | Role::Duration)
        && !e.circumstance.is_empty()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Plain,
    Fronted,
    Passive,
    Cleft,
    Appositive,
    Perfect,
    Attributed,
    TrailingClause,
    /// A condition or time clause in front, not asked about ([`FactGrammar::with_clauses`]).
    Conditioned,
    /// The asked reason in front, opened by "As", "Since" or "Because".
    ReasonFirst,
    /// "There is/are ... {place}, which {subject} {verb} ...".
    Existential,
}

/// Condition and time clauses for the front of a sentence: present and past forms.
const CONDITIONS: &[(&str, &str)] = &[
    ("if the weather holds", "if the weather held"),
    ("when the tide is low", "when the tide was low"),
    ("unless it rains", "unless it rained"),
    ("whenever the bell rings", "whenever the bell rang"),
    ("as soon as the snow melts", "as soon as the snow melted"),
    ("once the harvest is in", "once the harvest was in"),
    ("if the market is closed", "if the market was closed"),
    ("when the lamps are lit", "when the lamps were lit"),
    ("before the guests arrive", "before the guests arrived"),
    ("after the last ferry leaves", "after the last ferry left"),
    ("while the children are at school", "while the children were at school"),
    ("on days when the wind is too strong for the boats", "on days when the wind was too strong for the boats"),
    ("should the post be late", "whenever the post was late"),
    ("even in the coldest weeks of the year", "even in the coldest weeks of the year"),
];

/// "is", "are", "was" or "were".
fn be_form(past: bool, plural: bool) -> &'static str {
    match (past, plural) {
        (true, true) => "were",
        (true, false) => "was",
        (false, true) => "are",
        (false, false) => "is",
    }
}

/// An object phrase as an existential names it: "her red lantern" becomes "a red lantern" ("There is
/// her red lantern" is not English), "their jars" becomes "jars".
fn indefinite(object: &str) -> String {
    for owner in ["his ", "her ", "their ", "its "] {
        if let Some(rest) = object.strip_prefix(owner) {
            if plural_object(rest) {
                return rest.to_owned();
            }
            return format!("{} {rest}", if starts_with_vowel(rest) { "an" } else { "a" });
        }
    }
    object.to_owned()
}

fn starts_with_vowel(w: &str) -> bool {
    w.starts_with(['a', 'e', 'i', 'o', 'u'])
}

fn capitalise_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Whether an object phrase is plural (takes "are"/"were").
fn plural_object(object: &str) -> bool {
    let head = object.split(" of ").next().unwrap_or(object);
    object.contains(',') || object.contains(" and ") || (head.ends_with('s') && !head.ends_with("ss")) || head.contains("pair")
}

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn number_word(n: u64) -> String {
    const WORDS: &[&str] = &["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"];
    WORDS.get(n as usize).map_or_else(|| n.to_string(), |w| (*w).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_reproducible_and_answers_are_spans_of_their_needle() {
        let (mut a, mut b) = (FactGrammar::new(5), FactGrammar::new(5));
        for _ in 0..5000 {
            let f = a.fact(true);
            assert_eq!(f, b.fact(true));
            assert!(!f.answer.is_empty() && f.needle.contains(&f.answer), "{f:?}");
            assert!(f.needle.ends_with('.') && f.question.ends_with('?'), "{f:?}");
            assert!(f.needle.starts_with(|c: char| c.is_uppercase()) && f.question.starts_with(|c: char| c.is_uppercase()), "{f:?}");
            assert!(!f.needle.contains("  ") && !f.question.contains("  ") && !f.question.contains(" ?"), "{f:?}");
            assert!(f.near.iter().all(|n| n != &f.needle));
        }
    }

    #[test]
    fn questions_are_of_every_kind_and_paraphrase_the_needle() {
        let mut g = FactGrammar::new(9);
        let mut openings = std::collections::BTreeSet::new();
        let mut repeats_opening = 0;
        let n = 4000;
        for _ in 0..n {
            let f = g.fact(false);
            openings.insert(f.question.split_whitespace().next().unwrap().to_owned());
            let first_two: Vec<&str> = f.needle.split_whitespace().take(2).collect();
            repeats_opening += usize::from(f.question.contains(&first_two.join(" ")));
        }
        for w in ["What", "Who", "Where", "When", "Why", "How", "Which", "In", "For", "With", "At", "On"] {
            assert!(openings.contains(w), "no question opens with {w}: {openings:?}");
        }
        // Questions ask in their own order: most do not start with the needle's opening.
        let share = repeats_opening as f64 / n as f64;
        assert!(share < 0.7, "{share}");
    }

    #[test]
    fn invented_words_are_new_to_the_word_lists_and_keep_facts_valid() {
        let words = |f: &NaturalFact| -> Vec<String> {
            f.needle
                .split_whitespace()
                .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase())
                .filter(|w| !w.is_empty() && !w.chars().any(|c| c.is_ascii_digit()))
                .collect()
        };
        // Every word the lists can give, as far as 20,000 facts show them.
        let mut known = std::collections::HashSet::new();
        let mut g = FactGrammar::new(1);
        for _ in 0..20_000 {
            known.extend(words(&g.fact(true)));
        }
        // Without invented words a seed's facts are what they were: the share draws nothing.
        let (mut a, mut b) = (FactGrammar::new(7), FactGrammar::new(7).with_invented_words(0.0));
        assert!((0..500).all(|_| a.fact(true) == b.fact(true)));
        let mut g = FactGrammar::new(2).with_invented_words(0.5);
        let (mut with_new, mut new_in_answer, mut new_in_question) = (0, 0, 0);
        let n = 2000;
        for _ in 0..n {
            let f = g.fact(true);
            assert!(!f.answer.is_empty() && f.needle.contains(&f.answer), "{f:?}");
            assert!(f.needle.ends_with('.') && f.question.ends_with('?') && !f.needle.contains("  "), "{f:?}");
            let new: Vec<String> = words(&f).into_iter().filter(|w| !known.contains(w)).collect();
            with_new += usize::from(!new.is_empty());
            new_in_answer += usize::from(new.iter().any(|w| f.answer.to_lowercase().contains(w.as_str())));
            new_in_question += usize::from(new.iter().any(|w| f.question.to_lowercase().contains(w.as_str())));
            // Invented words are plain letters, like the list words they stand for.
            for w in &new {
                assert!(w.chars().all(|c| c.is_ascii_lowercase()), "{w:?} in {f:?}");
            }
        }
        // Half the picks are invented: nearly every fact holds one, most questions too, and the answers
        // that are names, things or spots (not times, reasons or ways: about a third of them).
        assert!(with_new * 10 >= n * 9, "{with_new} of {n}");
        assert!(new_in_answer * 4 >= n, "{new_in_answer} of {n}");
        assert!(new_in_question * 2 >= n, "{new_in_question} of {n}");
    }

    #[test]
    fn english_agreement_in_a_few_known_cases() {
        let e = Event {
            subject: Person {
                full: "the twins of Orford".into(),
                short: "the twins of Orford".into(),
                pronoun: Pronoun::They,
                plural: true,
            },
            verb: VERBS[0],
            object: "their spare keys".into(),
            object_plural_noun: "keys".into(),
            past: false,
            asked: Role::Place,
            circumstance: "under the stairs".into(),
            time_question: "Where",
            extra: None,
        };
        let mut g = FactGrammar::new(1);
        assert_eq!(g.realise(&e, Shape::Plain).0, "The twins of Orford keep their spare keys under the stairs.");
        assert_eq!(g.realise(&e, Shape::Passive).0, "Their spare keys are kept under the stairs by the twins of Orford.");
        assert_eq!(g.realise(&e, Shape::Fronted).0, "Under the stairs, the twins of Orford keep their spare keys.");
        assert_eq!(g.realise(&e, Shape::Cleft).0, "It is under the stairs that the twins of Orford keep their spare keys.");
        let past = Event {
            past: true,
            subject: Person { plural: false, full: "Nell Voss".into(), short: "Nell".into(), pronoun: Pronoun::She },
            ..e
        };
        assert_eq!(g.realise(&past, Shape::Plain).0, "Nell Voss kept their spare keys under the stairs.");
        assert_eq!(
            g.realise(&past, Shape::Perfect).0.split(" since ").next().unwrap(),
            "Nell Voss has kept their spare keys under the stairs"
        );
    }

    #[test]
    fn near_sentences_can_answer_otherwise_and_off_leave_the_facts_as_they_were() {
        let (mut a, mut b) = (FactGrammar::new(9), FactGrammar::new(9).with_distinct_near_answers(false));
        assert!((0..500).all(|_| a.fact(true) == b.fact(true)));
        let n = 3000;
        let lower = |s: &str| s.to_lowercase();
        for clauses in [0.0, 0.35] {
            // Without the setting, near sentences often hold the needle's answer word for word.
            let mut plain = FactGrammar::new(4).with_clauses(clauses);
            let with_answer =
                (0..n).map(|_| plain.fact(true)).filter(|f| f.near.iter().any(|s| lower(s).contains(&lower(&f.answer)))).count();
            assert!(with_answer * 10 > n, "clauses {clauses}: {with_answer} of {n} facts have a near sentence with the answer");
            let mut g = FactGrammar::new(4).with_clauses(clauses).with_distinct_near_answers(true);
            let (mut with_near, mut same) = (0, Vec::new());
            for _ in 0..n {
                let f = g.fact(true);
                with_near += usize::from(!f.near.is_empty());
                same.extend(f.near.iter().filter(|s| lower(s).contains(&lower(&f.answer))).map(|s| (s.clone(), f.answer.clone())));
            }
            // A near sentence may still hold the answer's words in another part (a short answer such as
            // "the oven" inside a longer spot), but rarely; and most facts keep their near sentences.
            assert!(
                same.len() * 100 <= n,
                "clauses {clauses}: {} near sentences hold the answer: {:?}",
                same.len(),
                &same[..same.len().min(5)]
            );
            assert!(with_near * 10 >= n * 9, "clauses {clauses}: {with_near} of {n} facts kept a near sentence");
        }
    }

    #[test]
    fn same_event_near_sentences_share_a_long_run_of_the_needle_and_not_its_answer() {
        // Share 0 draws nothing: the facts of a seed stay those of the recipes written before it.
        let (mut a, mut b) = (FactGrammar::new(11), FactGrammar::new(11).with_same_event_near(0.0));
        assert!((0..500).all(|_| a.fact(true) == b.fact(true)));
        // How many of the needle's words right before its answer a near sentence holds as one run:
        // someone else doing the same holds the verb and object ("printed photographs, ladders and
        // hammers"), another verb only the object, another object nothing.
        let words =
            |s: &str| s.split_whitespace().map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase()).collect::<Vec<_>>();
        let run_before_answer = |needle: &[String], answer_at: usize, near: &[String]| {
            (1..=answer_at).take_while(|&k| near.windows(k).any(|w| w == &needle[answer_at - k..answer_at])).count()
        };
        let runs = |share: f64| {
            let mut g = FactGrammar::new(21).with_distinct_near_answers(true).with_same_event_near(share);
            let (mut total, mut all, mut with_answer) = (0, 0, 0);
            for _ in 0..1500 {
                let f = g.fact(true);
                let (needle, answer) = (words(&f.needle), words(&f.answer));
                let Some(answer_at) = needle.windows(answer.len()).position(|w| w == answer.as_slice()) else { continue };
                for near in &f.near {
                    // Rarely the answer's words in another form ("to welcome ..." in "in order to welcome ...").
                    with_answer += usize::from(near.to_lowercase().contains(&f.answer.to_lowercase()));
                    total += run_before_answer(&needle, answer_at, &words(near));
                    all += 1;
                }
            }
            assert!(with_answer * 50 <= all, "share {share}: {with_answer} of {all} near sentences hold the answer");
            (total as f64 / all as f64, all)
        };
        let (off, off_all) = runs(0.0);
        let (on, on_all) = runs(1.0);
        assert!(off_all > 1000 && on_all > 1000, "{off_all} and {on_all} near sentences");
        assert!(on > off + 0.6, "words shared right before the answer: {on:.2} at share 1, {off:.2} at share 0");
    }

    #[test]
    fn clause_forms_appear_keep_answers_in_their_needle_and_leave_share_zero_as_it_was() {
        // Share 0 draws nothing: the facts of a seed stay those of recipes written before the clauses.
        let (mut a, mut b) = (FactGrammar::new(7), FactGrammar::new(7).with_clauses(0.0));
        assert!((0..500).all(|_| a.fact(true) == b.fact(true)));
        let (mut g, mut again) = (FactGrammar::new(3).with_clauses(0.6), FactGrammar::new(3).with_clauses(0.6));
        let (mut relative, mut existential, mut conditioned, mut reason_first) = (0, 0, 0, 0);
        let n = 4000;
        for _ in 0..n {
            let f = g.fact(true);
            assert_eq!(f, again.fact(true));
            assert!(!f.answer.is_empty() && f.needle.contains(&f.answer), "{f:?}");
            assert!(f.needle.ends_with('.') && f.question.ends_with('?') && !f.needle.contains("  ") && !f.needle.contains(",,"), "{f:?}");
            assert!(f.needle.starts_with(|c: char| c.is_uppercase()), "{f:?}");
            // An existential names its thing with an article or a number, never a possessive.
            if let Some(rest) = f.needle.strip_prefix("There ") {
                existential += 1;
                let thing = rest.split_whitespace().nth(1).unwrap();
                assert!(!["his", "her", "their", "its"].contains(&thing), "{f:?}");
            }
            relative += usize::from(f.needle.contains(" who ") && f.question.contains(" who "));
            conditioned += usize::from(
                CONDITIONS.iter().any(|(p, q)| f.needle.starts_with(&capitalise_first(p)) || f.needle.starts_with(&capitalise_first(q))),
            );
            reason_first += usize::from(
                (f.needle.starts_with("As ") || f.needle.starts_with("Since ")) && f.question.starts_with("Why")
                    || f.question.starts_with("For what"),
            );
        }
        for (form, count) in
            [("relative clause", relative), ("existential", existential), ("condition", conditioned), ("reason first", reason_first)]
        {
            assert!(count * 100 >= n, "{form}: {count} of {n}");
        }
    }

    #[test]
    fn answer_first_facts_hold_their_answer_before_every_word_the_question_names() {
        // Share 0 draws nothing: the facts of a seed stay those of recipes written before the setting.
        let (mut a, mut b) = (FactGrammar::new(11), FactGrammar::new(11).with_answer_first(0.0));
        assert!((0..500).all(|_| a.fact(true) == b.fact(true)));
        let words =
            |s: &str| -> Vec<String> { s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect() };
        // Words a question and a sentence share without naming the event: auxiliaries and the frame.
        let frame = ["it", "is", "was", "are", "were", "there", "the", "a", "an", "of", "to", "in", "on", "at", "for", "by"];
        // Whether the needle's words before the answer include one the question names.
        let named_before = |f: &NaturalFact| {
            let start = f.needle.find(&f.answer).unwrap();
            let asked = words(&f.question);
            words(&f.needle[..start]).into_iter().any(|w| !frame.contains(&w.as_str()) && asked.contains(&w))
        };
        let (mut g, mut again) = (FactGrammar::new(5).with_answer_first(1.0), FactGrammar::new(5).with_answer_first(1.0));
        let (n, mut opening) = (2000, 0);
        for _ in 0..n {
            let f = g.fact(true);
            assert_eq!(f, again.fact(true));
            assert!(!f.answer.is_empty() && f.needle.contains(&f.answer), "{f:?}");
            assert!(!named_before(&f), "{f:?}");
            opening += usize::from(f.needle.starts_with(&f.answer));
        }
        // Most open with the answer (fronted circumstances and reasons); clefts and existentials after
        // "It was" or "There are".
        assert!(opening * 2 > n && opening * 10 < n * 9, "{opening} of {n} open with their answer");
        // Without the setting few facts do: the share is what the setting changes.
        let mut plain = FactGrammar::new(5);
        let first = (0..n).map(|_| plain.fact(true)).filter(|f| !named_before(f) && !f.needle.starts_with(&f.answer)).count();
        let mut mixed = FactGrammar::new(5).with_answer_first(0.5);
        let mixed_first = (0..n).map(|_| mixed.fact(true)).filter(|f| !named_before(f)).count();
        assert!(mixed_first * 10 > n * 4, "{mixed_first} of {n} answer first at share 0.5 ({first} not opening at share 0)");
    }

    #[test]
    fn clause_forms_in_known_cases() {
        let e = Event {
            subject: Person {
                full: "the woman who mends nets at Dunmore".into(),
                short: "the woman who mends nets".into(),
                pronoun: Pronoun::She,
                plural: false,
            },
            verb: VERBS[0],
            object: "her red lantern".into(),
            object_plural_noun: "lanterns".into(),
            past: false,
            asked: Role::Place,
            circumstance: "behind the stove".into(),
            time_question: "Where",
            extra: None,
        };
        let mut g = FactGrammar::new(1);
        assert_eq!(g.realise(&e, Shape::Plain).0, "The woman who mends nets at Dunmore keeps her red lantern behind the stove.");
        assert_eq!(
            g.realise(&e, Shape::Existential),
            ("There is a red lantern behind the stove, which the woman who mends nets at Dunmore keeps.".into(), "behind the stove".into())
        );
        let (sentence, answer) = g.realise(&e, Shape::Conditioned);
        assert!(
            sentence.ends_with(", the woman who mends nets at Dunmore keeps her red lantern behind the stove.")
                && answer == "behind the stove",
            "{sentence}"
        );
        let why = Event { asked: Role::Reason, circumstance: "because the roof of the shed leaks".into(), time_question: "", ..e };
        let (sentence, answer) = g.realise(&why, Shape::ReasonFirst);
        assert!(
            sentence.ends_with(" the roof of the shed leaks, the woman who mends nets at Dunmore keeps her red lantern."),
            "{sentence}"
        );
        assert!(sentence.starts_with(&answer) && answer.ends_with("the roof of the shed leaks"), "{answer}");
        assert_eq!(indefinite("their jars"), "jars");
        assert_eq!(indefinite("his old anchor"), "an old anchor");
    }
}
