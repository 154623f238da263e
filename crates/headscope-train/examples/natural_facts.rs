//! Prints natural facts of the lab model's training kind as needles JSONL (`headscope_train::fact_grammar`):
//!   cargo run --release -p headscope-train --example natural_facts -- COUNT SEED > needles.jsonl
use headscope_core::niah::Needle;
use headscope_train::fact_grammar::FactGrammar;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [count, seed] = args.as_slice() else {
        return Err("usage: natural_facts COUNT SEED".into());
    };
    let mut g = FactGrammar::new(seed.parse()?);
    for _ in 0..count.parse::<usize>()? {
        let f = g.fact(false);
        println!("{}", serde_json::to_string(&Needle { needle: f.needle, question: f.question, real_needle: f.answer })?);
    }
    Ok(())
}
