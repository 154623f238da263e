//! Writes a look-alike yardstick: COUNT everyday facts (`FactGrammar`, seed SEED), each with a short
//! haystack of its own that holds one of the fact's near sentences, a sentence that matches the
//! question in part and answers it otherwise ("The best thing to do on a sunny day was ..." beside
//! "What is the best thing to do in San Francisco?"). The haystack is a passage of about BYTES bytes
//! (default 1300, the village haystack's size) cut from TEXT at sentence ends; a prompt repeats it to
//! length, so the look-alike repeats with it while the needle stands once, as in the page's default
//! test. A model that matches only part of the question copies the look-alike.
//!   cargo run --release -p headscope-train --example lookalikes -- OUTDIR COUNT SEED TEXT [BYTES]
//! Writes OUTDIR/needles.jsonl (one needle a line), OUTDIR/hay-NN.txt (needle NN's haystack, from 00),
//! OUTDIR/plain-NN.txt (the same passage without the look-alike: the control) and OUTDIR/lookalikes.jsonl ({"needle": .., "lookalike": ..} a line). `scripts/lookalike-eval.sh`
//! runs each needle in its own haystack.
use headscope_core::niah::Needle;
use headscope_core::rng::SplitMix64;
use headscope_train::fact_grammar::FactGrammar;
use headscope_train::sentence_exercises::insert_sentences;
use std::fmt::Write as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, count, seed, text, bytes) = match args.as_slice() {
        [out, count, seed, text] => (out, count.parse::<usize>()?, seed.parse::<u64>()?, text, 1300),
        [out, count, seed, text, bytes] => (out, count.parse()?, seed.parse()?, text, bytes.parse()?),
        _ => return Err("usage: lookalikes OUTDIR COUNT SEED TEXT [BYTES]".into()),
    };
    let text = std::fs::read_to_string(text)?;
    if text.len() < bytes * 2 {
        return Err(format!("{} bytes of text are too few for {bytes}-byte passages", text.len()).into());
    }
    let out = std::path::Path::new(out);
    std::fs::create_dir_all(out)?;
    // Near sentences that never hold the needle's answer: copying one is always wrong.
    let mut grammar = FactGrammar::new(seed).with_distinct_near_answers(true);
    let mut rng = SplitMix64::new(seed ^ 0x9e37_79b9_7f4a_7c15);
    let (mut needles, mut lookalikes) = (String::new(), String::new());
    let mut written = 0;
    while written < count {
        let fact = grammar.fact(true);
        let Some(lookalike) = fact.near.first() else { continue };
        let passage = passage(&text, bytes, &mut rng);
        let haystack = insert_sentences(&passage, std::slice::from_ref(lookalike), passage.len(), &mut rng);
        std::fs::write(out.join(format!("hay-{written:02}.txt")), haystack)?;
        std::fs::write(out.join(format!("plain-{written:02}.txt")), &passage)?;
        let needle = Needle { needle: fact.needle.clone(), question: fact.question, real_needle: fact.answer };
        writeln!(needles, "{}", serde_json::to_string(&needle)?)?;
        writeln!(lookalikes, "{}", serde_json::json!({"needle": fact.needle, "lookalike": lookalike}))?;
        written += 1;
    }
    std::fs::write(out.join("needles.jsonl"), needles)?;
    std::fs::write(out.join("lookalikes.jsonl"), lookalikes)?;
    eprintln!("wrote {count} needles, their haystacks and look-alikes to {}", out.display());
    Ok(())
}

/// About `bytes` bytes of `text` from a random sentence start on, ending at a sentence end, on one line.
fn passage(text: &str, bytes: usize, rng: &mut SplitMix64) -> String {
    let mut start = rng.below((text.len() - bytes * 2) as u64) as usize;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let rest = &text[start..];
    let from = rest.find(". ").map_or(0, |i| i + 2);
    let window = &rest[from..];
    let mut end = bytes.min(window.len());
    while !window.is_char_boundary(end) {
        end -= 1;
    }
    let cut = window[..end].rfind(". ").map_or(end, |i| i + 1);
    window[..cut].split_whitespace().collect::<Vec<_>>().join(" ")
}
