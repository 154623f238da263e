//! What the page shows and exports, computed from results with core and handed to headscope-plot:
//! the grids behind the heatmaps, the files users download, imported head-score files and masking
//! plans. No browser here, so native tests cover it.

use headscope_core::files::head_scores::{format_head_scores, parse_head_scores};
use headscope_core::files::{head_scores_from_records, TestRecord};
use headscope_core::niah::{parse_needles_jsonl, Needle};
use headscope_core::{masking, CoreError, HeadId, HeadScores, HeadShape};
use headscope_plot::Grid;
use std::collections::BTreeMap;
use std::path::Path;

use crate::session::SavedRun;
use crate::strings::{msg, Lang};

/// How a mask came about, as the page keeps it (in links and saved runs; [`origin_label`] words it):
/// `top-K`, `random-K, seed S`, or chosen by hand.
pub const TOP_ORIGIN: &str = "top-";
pub const RANDOM_ORIGIN: &str = "random-";
pub const BY_HAND_ORIGIN: &str = "chosen by hand";
const SEED_SEPARATOR: &str = ", seed ";

/// The record of a random-K mask drawn with `seed`.
pub fn random_origin(k: u64, seed: u64) -> String {
    format!("{RANDOM_ORIGIN}{k}{SEED_SEPARATOR}{seed}")
}

/// Layers x heads grid of a per-head value, for [`headscope_plot::draw_head_heatmap`].
pub fn head_grid(shape: HeadShape, value: impl Fn(HeadId) -> f64) -> Grid {
    let mut grid = Grid::new(shape.layers, shape.heads);
    for h in shape.iter() {
        grid.set(h.layer, h.head, value(h));
    }
    grid
}

/// Mean retrieval score per head.
pub fn score_grid(scores: &HeadScores) -> Grid {
    head_grid(scores.shape(), |h| scores.mean(h))
}

/// How each head's mean score changed from run `before` to run `after` (`after - before`); heads of
/// a run that scored no test are empty. The two must be of one model.
pub fn score_change(after: &HeadScores, before: &HeadScores) -> Result<Grid, String> {
    if after.shape() != before.shape() {
        return Err("the two runs are of models of different shapes".into());
    }
    let mut grid = Grid::new(after.shape().layers, after.shape().heads);
    if after.tests() > 0 && before.tests() > 0 {
        for h in after.shape().iter() {
            grid.set(h.layer, h.head, after.mean(h) - before.mean(h));
        }
    }
    Ok(grid)
}

/// Activation frequency per head: the share of scored tests in which it hit at least once.
pub fn activation_grid(scores: &HeadScores) -> Grid {
    head_grid(scores.shape(), |h| scores.activation_frequency(h))
}

/// The NIAH grid: mean answer recall per (depth, length) over needles, with the lengths and depths
/// of the planned sweep (cells not run yet stay empty), as `headscope detect` draws niah.png.
pub fn niah_grid(records: &[TestRecord], lengths: &[usize], depths: &[f64]) -> Grid {
    let mut sums: BTreeMap<(usize, usize), (f64, usize)> = BTreeMap::new();
    for r in records {
        let (Some(c), Some(d)) = (lengths.iter().position(|&l| l == r.length), depths.iter().position(|&x| x == r.depth_percent)) else {
            continue;
        };
        let e = sums.entry((d, c)).or_default();
        e.0 += r.recall;
        e.1 += 1;
    }
    let mut grid = Grid::new(depths.len(), lengths.len());
    for ((d, c), (sum, n)) in sums {
        grid.set(d, c, sum / n as f64);
    }
    grid
}

/// Head scores of the records (tests with recall >= `gate`), as `headscope detect` aggregates them.
pub fn sweep_scores(shape: HeadShape, records: &[TestRecord], gate: f64) -> Result<HeadScores, CoreError> {
    head_scores_from_records(shape, records, gate)
}

/// `tests.jsonl`: one record per line, the CLI's format.
pub fn tests_jsonl(records: &[TestRecord]) -> String {
    records.iter().filter_map(|r| serde_json::to_string(r).ok()).map(|l| l + "\n").collect()
}

/// `head_scores.json` in the official format.
pub fn head_scores_json(scores: &HeadScores) -> String {
    format_head_scores(scores)
}

/// Reads an imported head-score file (official format), naming it in errors.
pub fn import_head_scores(name: &str, text: &str) -> Result<HeadScores, CoreError> {
    parse_head_scores(text, Path::new(name))
}

/// Reads a needles JSONL file, naming it in errors.
pub fn import_needles(name: &str, text: &str) -> Result<Vec<Needle>, CoreError> {
    parse_needles_jsonl(text, Path::new(name))
}

/// Checks that scores describe the loaded model's head grid before they choose heads to mask.
pub fn check_scores_fit(scores: &HeadScores, model: HeadShape) -> Result<(), CoreError> {
    let s = scores.shape();
    if s != model {
        return Err(CoreError::invalid(format!(
            "these head scores are for {} layers x {} heads, but the loaded model has {} x {}: they can be viewed, not used for masking",
            s.layers, s.heads, model.layers, model.heads
        )));
    }
    Ok(())
}

/// The `k` best heads of `scores` (core's top-K plan).
pub fn mask_top(scores: &HeadScores, model: HeadShape, k: usize) -> Result<Vec<HeadId>, CoreError> {
    check_scores_fit(scores, model)?;
    masking::top_k(scores, k)
}

/// `k` random non-retrieval heads of `scores` drawn with `seed` (core's random-K plan).
pub fn mask_random(scores: &HeadScores, model: HeadShape, k: usize, seed: u64) -> Result<Vec<HeadId>, CoreError> {
    check_scores_fit(scores, model)?;
    masking::random_k(scores, k, seed, headscope_core::RETRIEVAL_THRESHOLD)
}

/// Adds `head` to `masked` or removes it (a click on the heatmap).
pub fn toggle(masked: &mut Vec<HeadId>, head: HeadId) {
    match masked.iter().position(|&h| h == head) {
        Some(i) => {
            masked.remove(i);
        }
        None => masked.push(head),
    }
}

/// Checks that a chosen haystack file is text: not empty, and not a binary file (an image, a PDF, a
/// zip) that the browser decoded as text. Binary files hold NUL bytes or, decoded as UTF-8, many
/// replacement characters and control characters; prose holds none of either.
pub fn check_haystack_text(name: &str, text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err(format!("{name} is empty: choose a text file with some prose in it"));
    }
    let chars = text.chars().count();
    let odd = text.chars().filter(|&c| c == '\u{FFFD}' || (c.is_control() && !matches!(c, '\n' | '\r' | '\t'))).count();
    if text.contains('\0') || odd * 100 > chars {
        return Err(format!(
            "{name} is not a text file ({odd} of its {chars} characters are not text; an image or a PDF?): choose a plain .txt file"
        ));
    }
    Ok(())
}

/// Pass rate of the records: (passed, total) at recall >= `pass`.
pub fn pass_rate(records: &[TestRecord], pass: f64) -> (usize, usize) {
    (records.iter().filter(|r| r.recall >= pass).count(), records.len())
}

/// How masked heads were chosen, in `lang`, from the page's record of it ([`TOP_ORIGIN`] and the
/// rest): "top-3", "random-3, seed 1", anything else is "chosen by hand".
pub fn origin_label(lang: Lang, origin: &str) -> String {
    if let Some(k) = origin.strip_prefix(TOP_ORIGIN).filter(|k| k.parse::<usize>().is_ok()) {
        return msg::ORIGIN_TOP.fill(lang, &[("k", &k)]);
    }
    if let Some((k, seed)) = origin.strip_prefix(RANDOM_ORIGIN).and_then(|r| r.split_once(SEED_SEPARATOR)) {
        return msg::ORIGIN_RANDOM.fill(lang, &[("k", &k), ("seed", &seed)]);
    }
    msg::ORIGIN_BY_HAND.get(lang).to_string()
}

/// A mask mode (`uniform`, `zero`) in `lang`.
pub fn mode_label(lang: Lang, mode: &str) -> String {
    match mode {
        "uniform" => msg::MODE_UNIFORM.get(lang).to_string(),
        "zero" => msg::MODE_ZERO.get(lang).to_string(),
        other => other.to_string(),
    }
}

/// The label of the `index`-th run (0-based) in `lang`: "run 2: 3 heads masked (top-3; uniform)".
/// A masked run from a file of an earlier version, which does not say how its heads were chosen,
/// keeps the name it was saved with.
pub fn run_label(lang: Lang, index: usize, run: &SavedRun) -> String {
    let what = match &run.mask {
        None => msg::RUN_UNMASKED.get(lang).to_string(),
        Some(_) if run.origin.is_empty() && !run.name.is_empty() => return run.name.clone(),
        Some(m) => msg::RUN_MASKED
            .fill(lang, &[("count", &m.heads.len()), ("origin", &origin_label(lang, &run.origin)), ("mode", &mode_label(lang, &m.mode))]),
    };
    msg::RUN_NAME.fill(lang, &[("n", &(index + 1)), ("what", &what)])
}

/// "run 2" in `lang`.
pub fn run_short_label(lang: Lang, index: usize) -> String {
    msg::RUN_SHORT.fill(lang, &[("n", &(index + 1))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_files_are_not_haystacks() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let prose = std::fs::read_to_string(repo.join("public/haystacks/village.txt")).unwrap();
        assert!(check_haystack_text("village.txt", &prose).is_ok());
        // Text in other scripts, with tabs and Windows line ends, is text.
        assert!(check_haystack_text("a.txt", "第一章\t天地玄黄。\r\nΚαλημέρα κόσμε.\r\n").is_ok());
        let png = std::fs::read(repo.join("docs/web-lab.png")).unwrap();
        let e = check_haystack_text("web-lab.png", &String::from_utf8_lossy(&png)).unwrap_err();
        assert!(e.contains("web-lab.png is not a text file"), "{e}");
        assert!(check_haystack_text("empty.txt", " \n ").unwrap_err().contains("empty"));
    }

    fn record(length: usize, depth: f64, recall: f64, hits: &[(HeadId, Vec<u32>)]) -> TestRecord {
        TestRecord {
            id: format!("n0-L{length}-d{depth}"),
            needle_index: 0,
            needle: "n".into(),
            length,
            prompt_tokens: length,
            depth_percent: depth,
            placed_depth_percent: depth,
            prompt_hash: "00".into(),
            needle_tokens: [10, 20],
            answer_tokens: [12, 16],
            generated_ids: vec![],
            answer: String::new(),
            recall,
            hits: hits.iter().cloned().collect(),
            repeat_hits: None,
            soft_mass: None,
            qr: None,
            masked_heads: vec![],
            prompt_ids: None,
            head_argmax: None,
            seconds: 0.0,
        }
    }

    #[test]
    fn a_score_change_is_after_minus_before_per_head() {
        let shape = HeadShape::new(2, 2);
        let (a, b) = (HeadId::new(1, 0), HeadId::new(0, 1));
        let unmasked = [record(100, 0.0, 1.0, &[(a, vec![0, 1, 2, 3]), (b, vec![0])])];
        let masked = [record(100, 0.0, 1.0, &[(b, vec![0, 1])])];
        let before = sweep_scores(shape, &unmasked, 0.5).unwrap();
        let after = sweep_scores(shape, &masked, 0.5).unwrap();
        let g = score_change(&after, &before).unwrap();
        // The answer span holds 4 tokens: head 1-0 lost all 4 hits, head 0-1 gained one.
        assert_eq!(g.get(1, 0), Some(-1.0));
        assert_eq!(g.get(0, 1), Some(0.25));
        assert_eq!(g.get(0, 0), Some(0.0));
        let nothing = sweep_scores(shape, &[record(100, 0.0, 0.0, &[])], 0.5).unwrap();
        assert_eq!(score_change(&nothing, &before).unwrap().get(1, 0), None, "a run with no scored test has no change");
        let other = sweep_scores(HeadShape::new(3, 2), &unmasked, 0.5).unwrap();
        assert!(score_change(&other, &before).is_err());
    }

    #[test]
    fn niah_grid_places_cells_and_leaves_unrun_cells_empty() {
        let recs = [record(100, 0.0, 1.0, &[]), record(200, 50.0, 0.5, &[]), record(200, 50.0, 0.0, &[])];
        let g = niah_grid(&recs, &[100, 200, 300], &[0.0, 50.0, 100.0]);
        assert_eq!((g.rows, g.cols), (3, 3));
        assert_eq!(g.get(0, 0), Some(1.0));
        assert_eq!(g.get(1, 1), Some(0.25), "two needles at one cell average");
        assert_eq!(g.get(2, 2), None);
    }

    #[test]
    fn scores_follow_core_and_export_round_trips() {
        let shape = HeadShape::new(2, 2);
        let recs = [record(100, 0.0, 1.0, &[(HeadId::new(1, 0), vec![12, 13])]), record(100, 50.0, 0.1, &[(HeadId::new(0, 1), vec![12])])];
        let s = sweep_scores(shape, &recs, 0.5).unwrap();
        assert_eq!(s.tests(), 1, "the gate drops the failed test");
        assert_eq!(score_grid(&s).get(1, 0), Some(0.5));
        assert_eq!(activation_grid(&s).get(1, 0), Some(1.0));
        assert_eq!(activation_grid(&s).get(0, 1), Some(0.0));
        let back = import_head_scores("x.json", &head_scores_json(&s)).unwrap();
        assert_eq!(back, s);
        let lines = tests_jsonl(&recs);
        assert_eq!(lines.lines().count(), 2);
        let r: TestRecord = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
        assert_eq!(r, recs[0]);
    }

    #[test]
    fn masking_plans_check_the_model_shape() {
        let shape = HeadShape::new(2, 2);
        let s = HeadScores::from_lists(shape, vec![vec![0.9], vec![0.0], vec![0.5], vec![0.05]]).unwrap();
        assert_eq!(mask_top(&s, shape, 2).unwrap(), vec![HeadId::new(0, 0), HeadId::new(1, 0)]);
        let r = mask_random(&s, shape, 2, 7).unwrap();
        assert!(r.iter().all(|h| *h == HeadId::new(0, 1) || *h == HeadId::new(1, 1)), "{r:?}");
        let e = mask_top(&s, HeadShape::new(32, 32), 2).unwrap_err().to_string();
        assert!(e.contains("32 x 32"), "{e}");
        let mut m = vec![HeadId::new(0, 0)];
        toggle(&mut m, HeadId::new(1, 1));
        toggle(&mut m, HeadId::new(0, 0));
        assert_eq!(m, vec![HeadId::new(1, 1)]);
    }

    #[test]
    fn bad_imports_name_the_file() {
        let e = import_head_scores("mine.json", "{\"0-0\": [1], \"x\": [2]}").unwrap_err().to_string();
        assert!(e.contains("mine.json"), "{e}");
        let e = import_needles("n.jsonl", "{\"needle\": \"a b\", \"question\": \"q\", \"real_needle\": \"zzz\"}").unwrap_err().to_string();
        assert!(e.contains("n.jsonl") && e.contains("not part of the needle"), "{e}");
    }
}
