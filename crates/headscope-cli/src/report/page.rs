//! The report's HTML page: one self-contained file with every figure inline, and the small text
//! helpers (escaping, percentages, tables) its sections share.

use super::{Plan, ReportArgs, FIGURES};
use headscope_core::files::TestRecord;
use headscope_core::HeadScores;
use headscope_model::ModelDir;
use std::fmt::Write as _;

/// The command that made the report, as typed (program name shortened to `headscope`).
pub(super) fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).map(|a| if a.contains(' ') { format!("'{a}'") } else { a }).collect();
    format!("headscope {}", args.join(" "))
}

/// Escapes text for HTML.
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub(super) fn percent(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// A small HTML table (cells escaped).
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = String::from("<table><tr>");
    for h in header {
        let _ = write!(t, "<th>{}</th>", esc(h));
    }
    t.push_str("</tr>");
    for row in rows {
        t.push_str("<tr>");
        for c in row {
            let _ = write!(t, "<td>{}</td>", esc(&c));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

/// The report page, built section by section. Figures are inline SVG, so the one file is the whole
/// report (it can be mailed); links to the data files work next to the report directory.
pub(super) struct Html {
    body: String,
    title: String,
}

impl Html {
    pub(super) fn new(a: &ReportArgs, md: &ModelDir, model: &str, scores: &HeadScores, plan: &Plan, detect: &[TestRecord]) -> Html {
        let passed = detect.iter().filter(|r| r.recall >= a.pass).count();
        let heads: Vec<String> = plan.retrieval.iter().map(|(h, m)| format!("{h} ({m:.3})")).collect();
        let spec = &md.spec;
        let mut body = String::new();
        let _ = write!(
            body,
            "<h1>Retrieval heads of {model}</h1><p>Model <code>{}</code> ({}, {} layers x {} query heads, {} KV heads; hash {}). \
             NIAH grid: lengths {}, {} depths, needles <code>{}</code>, haystack <code>{}</code>; {} tests, pass rate {} (ROUGE-1 recall &ge; {}). \
             {} scored tests (recall &ge; {}); <b>{} retrieval heads</b> (mean score &gt; {}){}.</p>\
             <p>Made by <code>{}</code> (HeadScope {}). Masks: {} mode, {} scope; top-K for K = 1..{}, random-K from non-retrieval heads for K = 1..{} with {} seeds.</p>",
            esc(&md.dir.display().to_string()),
            esc(&spec.model_type),
            spec.layers,
            spec.heads,
            spec.kv_heads,
            esc(&md.hash),
            esc(&a.lengths),
            a.depths,
            esc(&a.needles.display().to_string()),
            esc(&a.haystack.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")),
            detect.len(),
            percent(if detect.is_empty() { 0.0 } else { passed as f64 / detect.len() as f64 }),
            a.pass,
            scores.tests(),
            a.gate,
            plan.retrieval.len(),
            a.threshold,
            if heads.is_empty() { String::new() } else { format!(": {}", esc(&heads.join(", "))) },
            esc(&command_line()),
            headscope_core::VERSION,
            a.mask_mode,
            a.mask_scope,
            plan.k_max,
            plan.k_random,
            a.seeds,
        );
        Html { body, title: format!("HeadScope report: {model}") }
    }

    /// Adds a section: heading, text (HTML), the figure's SVG inline, links to its files.
    pub(super) fn section(&mut self, heading: &str, text: &str, svg: Option<&str>, stems: &[&str]) {
        let _ = write!(self.body, "<section><h2>{}</h2><p>{text}</p>", esc(heading));
        if let Some(svg) = svg {
            let start = svg.find("<svg").unwrap_or(0);
            let _ = write!(self.body, "<div class=\"fig\">{}</div>", &svg[start..]);
        }
        if !stems.is_empty() {
            let links: Vec<String> = stems
                .iter()
                .flat_map(|s| ["png", "svg", "json", "csv"].map(|e| format!("<a href=\"{FIGURES}/{s}.{e}\">{s}.{e}</a>")))
                .collect();
            let _ = write!(self.body, "<p class=\"files\">Files: {}</p>", links.join(" "));
        }
        self.body.push_str("</section>");
    }

    pub(super) fn finish(self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
             body{{font-family:'DejaVu Sans',sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#202020;line-height:1.4}}\
             h1{{font-size:1.6em}}h2{{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}}\
             .fig svg{{max-width:100%;height:auto}}table{{border-collapse:collapse;margin:.8em 0;font-size:.9em}}\
             td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}th{{background:#f3f3f3}}.files{{font-size:.8em;color:#666}}\
             code{{background:#f3f3f3;padding:0 .2em}}</style></head><body>\n{}\n</body></html>\n",
            esc(&self.title),
            self.body
        )
    }
}
