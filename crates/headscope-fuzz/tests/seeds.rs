//! The fuzz targets on stable, in CI: every seed of every target is accepted (so the corpora that
//! `scripts/fuzz.sh` builds are valid inputs), and mutants of each seed (truncations, edits with
//! characters significant to JSON and TOML, inserted extreme values, flipped bytes) give an answer, never
//! a panic. `HEADSCOPE_FUZZ_MUTANTS=N` sets the mutants per seed (default 150).

use headscope_core::rng::SplitMix64;
use headscope_fuzz::{mutant, seeds, TARGETS};
use std::panic::{catch_unwind, AssertUnwindSafe};

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
