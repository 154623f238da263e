//! The benchmark's table: figures as a person reads them (GiB, M, K), one row per length.

use super::{BenchReport, LengthResult};
use crate::sweep::WGPU_DEVICE;

pub(super) fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// A byte count in the largest unit that keeps it at least 1.
pub(super) fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => gib(n),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// A parameter count in billions or millions.
pub(super) fn count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

/// One row of the table; `sweep`: with the depth-sweep column.
pub(super) fn row(r: &LengthResult, sweep: bool) -> String {
    if !r.fits {
        let empty = if sweep { " | | | | | |" } else { " | | | | |" };
        return format!("| {} | does not fit: {}{empty}", r.length, r.error.as_deref().unwrap_or(""));
    }
    let swept = match (sweep, r.sweep_test_seconds) {
        (false, _) => String::new(),
        (true, Some(s)) => format!(" {s:.3} s ({:.0} % reused) |", 100.0 * r.sweep_reused_share.unwrap_or(0.0)),
        (true, None) => " - |".into(),
    };
    format!(
        "| {} | {:.3} s | {:.0} tok/s | {:.2} ms | {:.3} s |{swept} {} |",
        r.length,
        r.prefill_seconds,
        r.prefill_tokens_per_second,
        r.decode_step_ms,
        r.test_seconds,
        r.peak_memory_bytes.map(gib).unwrap_or_else(|| "-".into())
    )
}

/// The report as Markdown, as it is printed.
pub fn render(r: &BenchReport) -> String {
    let mut s = format!(
        "## headscope bench: {} ({} {}x{} heads, {} KV heads, {} parameters, {} on {})\n\n",
        r.model,
        r.model_type,
        r.layers,
        r.heads,
        r.kv_heads,
        count(r.parameters),
        r.dtype,
        r.device
    );
    s += &format!(
        "load {:.1} s, warm-up {:.1} s; weights {}, KV cache {} per token; {} decode steps per test, {} test(s) per length; \
         prefill chunks of at most {} tokens, {}\n",
        r.load_seconds,
        r.warmup_seconds,
        bytes(r.weight_bytes),
        bytes(r.kv_bytes_per_token),
        r.steps,
        r.repeats,
        r.prefill_chunk,
        if r.flash_prefill {
            "fused attention kernel".to_string()
        } else if r.device == WGPU_DEVICE {
            "the WGSL forward's attention".to_string()
        } else {
            format!("chunked attention within {} MiB of scores", r.score_budget_mib)
        }
    );
    s += &format!("peak memory: {}\n", r.memory_method);
    let sweep = r.sweep_depths > 0;
    if sweep {
        s += &format!(
            "per test in a depth sweep: {} depths from 0 to 100 % at each length, deepest first, each prefill reusing the cache of \
             the prefix shared with the test before (as detect runs them); the mean over the sweep's tests, the first one's \
             full prefill included\n",
            r.sweep_depths
        );
        s += "\n| context | prefill | prefill speed | decode step | per NIAH test | per test in a depth sweep (prefix reused) | peak memory |\n\
              |---|---|---|---|---|---|---|\n";
    } else {
        s += "\n| context | prefill | prefill speed | decode step | per NIAH test | peak memory |\n|---|---|---|---|---|---|\n";
    }
    for l in &r.lengths {
        s += &row(l, sweep);
        s.push('\n');
    }
    if let Some(plan) = &r.kv_cache {
        s += &format!("\nKV cache: {plan}\n");
        for l in r.lengths.iter().filter(|l| l.fits) {
            if let Some(b) = l.kv_cache_bytes {
                let whole = r.kv_bytes_per_token * (l.length + r.steps) as u64;
                s += &format!(
                    "- {} positions: {} of keys and values ({:.1} % of the whole cache's {})\n",
                    l.length + r.steps,
                    bytes(b),
                    100.0 * b as f64 / whole.max(1) as f64,
                    bytes(whole)
                );
            }
        }
    }
    if let Some(m) = &r.max_context {
        s += &format!(
            "\nlongest context that fits in {}: {} tokens (physical limit (memory - weights) / KV per token: {} tokens)\n",
            bytes(m.memory_bytes),
            m.longest_fitting_tokens,
            m.physical_limit_tokens
        );
    }
    s
}
