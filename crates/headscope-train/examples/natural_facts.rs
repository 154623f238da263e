//! Prints natural facts of the lab model's training kind as needles JSONL (`headscope_train::fact_grammar`):
//!   cargo run --release -p headscope-train --example natural_facts -- COUNT SEED [CLAUSES] > needles.jsonl
//! CLAUSES (default 0) is the share of facts in a clause form (`FactGrammar::with_clauses`).
use headscope_core::niah::Needle;
use headscope_train::fact_grammar::FactGrammar;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (count, seed, clauses) = match args.as_slice() {
        [count, seed] => (count, seed, 0.0),
        [count, seed, clauses] => (count, seed, clauses.parse()?),
        _ => return Err("usage: natural_facts COUNT SEED [CLAUSES]".into()),
    };
    let mut g = FactGrammar::new(seed.parse()?).with_clauses(clauses);
    for _ in 0..count.parse::<usize>()? {
        let f = g.fact(false);
        println!("{}", serde_json::to_string(&Needle { needle: f.needle, question: f.question, real_needle: f.answer })?);
    }
    Ok(())
}
