//! The fuzz targets on stable, in CI: every seed of every target is accepted (so the corpora that
//! `scripts/fuzz.sh` builds are valid inputs), and mutants of each seed (truncations, edits with
//! characters significant to JSON and TOML, inserted extreme values, flipped bytes) give an answer, never
//! a panic. `HEADSCOPE_FUZZ_MUTANTS=N` sets the mutants per seed (default 150).

use headscope_core::rng::SplitMix64;
use headscope_fuzz::{seeds, TARGETS};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn mutant(seed: &[u8], rng: &mut SplitMix64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"{}[]\":,=0-.\\ e\n#'\x00\xff";
    const INSERTS: [&[u8]; 10] = [
        b"1e999",
        b"-1",
        b"18446744073709551616",
        b"null",
        b"\"\\ud800\"",
        b"[[[[[[[[[[[[[[[[",
        b"{\"\":",
        b"\xff\xfe",
        b"4294967296",
        b"\"\"",
    ];
    let mut m = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        match rng.below(4) {
            0 => m.truncate(rng.below(m.len() as u64 + 1) as usize),
            1 => {
                let at = rng.below(m.len().max(1) as u64) as usize;
                if at < m.len() {
                    m[at] = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
                }
            }
            2 => {
                let at = rng.below(m.len() as u64 + 1) as usize;
                let what = INSERTS[rng.below(INSERTS.len() as u64) as usize];
                m.splice(at..at, what.iter().copied());
            }
            _ => {
                let at = rng.below(m.len().max(1) as u64) as usize;
                if at < m.len() {
                    m[at] ^= 1 << rng.below(8);
                }
            }
        }
    }
    m
}

#[test]
fn every_seed_is_accepted_and_no_mutant_panics() {
    let per_seed: usize = std::env::var("HEADSCOPE_FUZZ_MUTANTS").ok().and_then(|v| v.parse().ok()).unwrap_or(150);
    let mut rng = SplitMix64::new(2026);
    for (name, target) in TARGETS {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name}: no seeds");
        for (i, seed) in seeds.iter().enumerate() {
            assert!(target(seed), "{name}: seed {i} is not accepted");
        }
        let (mut runs, mut accepted) = (0, 0);
        for seed in &seeds {
            for _ in 0..per_seed {
                let input = mutant(seed, &mut rng);
                match catch_unwind(AssertUnwindSafe(|| target(&input))) {
                    Ok(ok) => accepted += usize::from(ok),
                    Err(_) => panic!("{name} panicked on a mutant of its seed: {:?}", String::from_utf8_lossy(&input)),
                }
                runs += 1;
            }
        }
        eprintln!("{name}: {runs} mutants, {accepted} accepted");
    }
}
