#!/usr/bin/env python3
"""Joins one or more benchmark folders (scripts/gpu-bench.sh writes one per model) into results.md and
results.json: HeadScope (headscope bench) next to the official loop's port (bench/official_loop.py) on
the same prompts, weights and GPU, the argmax agreement between the two, the longest context, and the
HF agreement runs (headscope hf-agreement --json) when present.

A folder holds: headscope.json (headscope bench --json), prompts.json (--save-prompts, with HeadScope's
tokens and argmax), official.json, and optionally smi-headscope.csv / smi-official.csv (nvidia-smi
memory.used samples in MiB, one per line) and agreement.json.

    python bench/bench_report.py OUT/llama-2-7b OUT/mistral-7b-v0.2 --out OUT/results.md
"""

import argparse
import json
import os


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def smi_peak(path):
    """Largest memory.used sample (MiB) of an nvidia-smi log, in bytes."""
    if not os.path.exists(path):
        return None
    peak = None
    with open(path) as f:
        for line in f:
            try:
                v = float(line.strip().split(",")[0].split()[0])
            except (ValueError, IndexError):
                continue
            peak = v if peak is None else max(peak, v)
    return None if peak is None else int(peak * 2**20)


def argmax_agreement(hs_tokens, hs_argmax, off_tokens, off_argmax):
    """Equal argmax positions over the steps both sides ran on the same inputs: up to and including the
    first step whose generated token differs (after it the inputs differ)."""
    total = equal = steps = 0
    for s in range(min(len(hs_argmax), len(off_argmax))):
        a, b = hs_argmax[s], off_argmax[s]
        total += len(a)
        equal += sum(x == y for x, y in zip(a, b))
        steps += 1
        if s >= len(hs_tokens) or s >= len(off_tokens) or hs_tokens[s] != off_tokens[s]:
            break
    return dict(steps_compared=steps, argmax_total=total, argmax_equal=equal)


def gib(b):
    return "-" if b is None else f"{b / 2**30:.1f} GiB"


def folder(path):
    hs, prompts, off = load(os.path.join(path, "headscope.json")), load(os.path.join(path, "prompts.json")), load(os.path.join(path, "official.json"))
    name = os.path.basename(os.path.normpath(path))
    rows = []
    by_len_off = {t["length"]: t for t in (off or {}).get("tests", [])}
    fixed = load(os.path.join(path, "fixed.json"))
    by_len_fixed = {t["length"]: t for t in (fixed or {}).get("tests", [])}
    by_len_prompt = {t["length"]: t for t in (prompts or {}).get("tests", [])}
    for r in (hs or {}).get("lengths", []):
        o = by_len_off.get(r["length"])
        p = by_len_prompt.get(r["length"])
        x = by_len_fixed.get(r["length"])
        row = dict(model=name, length=r["length"], headscope=r, official=o, fixed=x)
        if o and o.get("fits") and p:
            row["agreement"] = argmax_agreement(p["headscope_tokens"], p["headscope_argmax"], o["tokens"], o["argmax"])
        if x and x.get("fits") and p:
            row["fixed_agreement"] = argmax_agreement(p["headscope_tokens"], p["headscope_argmax"], x["tokens"], x["argmax"])
        rows.append(row)
    return dict(
        model=name,
        headscope=hs,
        official={k: v for k, v in (off or {}).items() if k != "tests"} if off else None,
        fixed={k: v for k, v in (fixed or {}).items() if k != "tests"} if fixed else None,
        rows=rows,
        smi_headscope=smi_peak(os.path.join(path, "smi-headscope.csv")),
        smi_official=smi_peak(os.path.join(path, "smi-official.csv")),
        agreement=load(os.path.join(path, "agreement.json")),
    )


def markdown(folders):
    out = ["# HeadScope vs the official detection loop", ""]
    for f in folders:
        hs, off = f["headscope"], f["official"]
        if hs:
            out.append(f"## {f['model']}: {hs['model_type']}, {hs['layers']} layers x {hs['heads']} heads, "
                       f"{hs['parameters'] / 1e9:.2f} B parameters, {hs['dtype']} on {hs['device']}")
        else:
            out.append(f"## {f['model']}")
        if off:
            out.append(f"official loop: torch {off['torch']}, transformers {off['transformers']}, prefill attention "
                       f"{off['prefill_attention']}, GPU {off.get('gpu')}")
        # headscope bench --sweep-depths N adds the time per test of a depth sweep with prefix reuse; older
        # reports have no such field, and their table keeps its columns.
        sweep = (hs or {}).get("sweep_depths") or 0
        if f["rows"]:
            sweep_head = f"HeadScope per test in a depth sweep, prefix reused ({sweep} depths) | " if sweep else ""
            out += ["", f"| context | HeadScope per test | {sweep_head}official per test | speed-up | HeadScope prefill | official prefill | "
                    "HeadScope decode step | official decode step | HeadScope peak memory | official peak (reserved) | argmax equal |",
                    "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if sweep else "")]
            for row in f["rows"]:
                h, o = row["headscope"], row["official"]
                if not h["fits"]:
                    hcells = ["does not fit", "", "", "", ""]
                else:
                    hcells = [f"{h['test_seconds']:.3f} s", f"{h['prefill_seconds']:.3f} s ({h['prefill_tokens_per_second']:.0f} tok/s)",
                              f"{h['decode_step_ms']:.1f} ms", gib(h.get("peak_memory_bytes"))]
                if o and o.get("fits"):
                    ocells = [f"{o['seconds']:.3f} s", f"{o['prefill_seconds']:.3f} s ({(o['length'] - 1) / max(o['prefill_seconds'], 1e-9):.0f} tok/s)",
                              f"{o['decode_step_ms']:.1f} ms", gib(o.get("peak_reserved_bytes"))]
                else:
                    ocells = ["does not fit" if o else "not run", "", "", ""]
                speed = f"{o['seconds'] / h['test_seconds']:.1f}x" if h["fits"] and o and o.get("fits") else ""
                a = row.get("agreement")
                agree = f"{100 * a['argmax_equal'] / max(1, a['argmax_total']):.1f} % ({a['steps_compared']} steps)" if a else ""
                sweep_cell = ""
                if sweep:
                    t = h.get("sweep_test_seconds")
                    sweep_cell = (f"{t:.3f} s ({100 * (h.get('sweep_reused_share') or 0):.0f} % of prefill reused) | " if t is not None else "- | ")
                out.append(f"| {row['length']} | {hcells[0]} | {sweep_cell}{ocells[0]} | {speed} | {hcells[1] if h['fits'] else ''} | {ocells[1]} | "
                           f"{hcells[2] if h['fits'] else ''} | {ocells[2]} | {hcells[3] if h['fits'] else ''} | {ocells[3]} | {agree} |")
        if f.get("fixed") and f["rows"]:
            out += ["", "Against the detection loop with the obvious fixes (bench/fixed_loop.py: SDPA prefill of the last logits, a static "
                    "KV cache, every head's argmax on the GPU with one host sync per test):", "",
                    "| context | HeadScope per test | fixed loop per test | speed-up | fixed loop prefill | fixed loop decode step | "
                    "fixed loop peak (reserved) | argmax equal |", "|---|---|---|---|---|---|---|---|"]
            for row in f["rows"]:
                h, x = row["headscope"], row.get("fixed")
                if not (h["fits"] and x and x.get("fits")):
                    out.append(f"| {row['length']} | {'' if h['fits'] else 'does not fit'} | {'not run' if not x else ('' if x.get('fits') else 'does not fit')} | | | | | |")
                    continue
                a = row.get("fixed_agreement")
                agree = f"{100 * a['argmax_equal'] / max(1, a['argmax_total']):.1f} % ({a['steps_compared']} steps)" if a else ""
                out.append(f"| {row['length']} | {h['test_seconds']:.3f} s | {x['seconds']:.3f} s | {x['seconds'] / h['test_seconds']:.2f}x | "
                           f"{x['prefill_seconds']:.3f} s | {x['decode_step_ms']:.1f} ms | {gib(x.get('peak_reserved_bytes'))} | {agree} |")
        out.append("")
        if f["smi_headscope"] or f["smi_official"]:
            out.append(f"nvidia-smi peak memory.used over the whole run: HeadScope {gib(f['smi_headscope'])}, official loop {gib(f['smi_official'])}")
        if hs:
            out.append(f"HeadScope peak memory: {hs['memory_method']}")
        if off and off.get("memory_method"):
            out.append(f"official peak memory: {off['memory_method']}")
        if hs and hs.get("max_context"):
            m = hs["max_context"]
            out.append(f"longest context that fits in {gib(m['memory_bytes'])} (HeadScope, by trying): {m['longest_fitting_tokens']} tokens; "
                       f"physical limit (memory - weights) / KV bytes per token: {m['physical_limit_tokens']} tokens")
        if f["agreement"]:
            for c in f["agreement"]:
                out.append(f"HF agreement {c['case']} ({c['dtype']}, {c['prompt_tokens']} tokens): greedy tokens {c['tokens_equal']}/{c['steps']}, "
                           f"argmax {c['argmax_equal']}/{c['argmax_total']}, max |logit diff| {c['max_logit_difference']:.3g}, "
                           f"{'agrees' if c['pass'] else 'DISAGREES'}")
                r = c.get("f32_reference")
                if r:
                    pct = lambda n: 100 * n / max(1, r["argmax_total"])
                    out.append(f"  against transformers in f32: transformers {c['dtype']} argmax {pct(r['transformers_equal']):.1f} %, tokens "
                               f"{r['transformers_tokens_equal']}/{c['steps']}, max |logit diff| {r['transformers_max_logit_difference']:.3g}; "
                               f"HeadScope argmax {pct(r['headscope_equal']):.1f} %, tokens {r['headscope_tokens_equal']}/{c['steps']}, "
                               f"max |logit diff| {r['headscope_max_logit_difference']:.3g}")
        out.append("")
    if any((f["headscope"] or {}).get("sweep_depths") for f in folders):
        out.append("Per test in a depth sweep, prefix reused: the mean time per test of N needle depths (0 to 100 %) at one length run "
                   "one after another as headscope detect runs them, deepest first, each prefill reusing the KV cache of the prefix the "
                   "test shares with the one before it; the first test's full prefill is included. The official loop prefills every "
                   "test in full.")
        out.append("")
    out.append("Argmax equal: share of (step, layer, head) argmax positions that are the same on both sides, over the decode steps both ran on "
               "the same inputs (up to the first step whose generated token differs; the official loop's topk over bf16 weights breaks ties "
               "its own way, so a few percent of near-tied heads may differ; headscope hf-agreement accounts for ties).")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--out", required=True, help="results.md to write (results.json next to it)")
    args = ap.parse_args()
    folders = [folder(d) for d in args.dirs]
    with open(args.out, "w") as f:
        f.write(markdown(folders))
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(folders, f, indent=1)
    print(open(args.out).read())


if __name__ == "__main__":
    main()
