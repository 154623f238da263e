#!/usr/bin/env python3
"""What a model's failed NIAH answers are, from `headscope niah`/`detect` records (tests.jsonl, or .gz).

Each test with recall below the gate is put in one kind, by where its answer's first 25 characters
come from:
  needle      the needle sentence (it found the needle and copied the wrong part of it)
  haystack    a sentence of the haystack (it found some other sentence: a look-alike, or a "fact" of
              the haystack)
  other       neither: typically the question's own words restated, then an invented continuation
              (it never found the needle)
  short       fewer than 8 characters
and the passes are split by needle depth. A pass whose answer starts with a haystack sentence that is
not in the needle is counted apart ("passes, haystack copies"): the village haystack's look-alike shares
half of the paper's answer words, so copying it scores recall 0.5, the pass mark. --line prints one line
per records file, for scripts/lab-torch.sh. Used in docs/lab-v5/README.md to tell "finds the needle but
copies badly" from "finds nothing" for a lab model candidate.

  scripts/failure-kinds.py --haystack .carry/eval/heldout-stories.txt RECORDS.jsonl.gz [...]
"""
import argparse
import collections

from niah_records import records


def kind(test, haystack):
    start = test["answer"].strip()[:25]
    if len(start) < 8:
        return "short"
    if start in test["needle"]:
        return "needle"
    if start in haystack:
        return "haystack"
    return "other"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--haystack", required=True, help="the haystack text the tests were built from")
    ap.add_argument("--gate", type=float, default=0.5, help="recall at which a test passes (0.5, as detect's gate)")
    ap.add_argument("--line", action="store_true", help="one line per records file instead of the table")
    ap.add_argument("records", nargs="+")
    a = ap.parse_args()
    haystack = open(a.haystack, encoding="utf-8").read()
    if not a.line:
        print("| records | tests | pass | passes, haystack copies | needle, wrong part | haystack sentence | other | short | passes by depth |")
        print("|---|---|---|---|---|---|---|---|---|")
    for path in a.records:
        tests = records(path)
        kinds = collections.Counter()
        depths = collections.defaultdict(lambda: [0, 0])
        for t in tests:
            d = depths[round(t["depth_percent"])]
            d[1] += 1
            if t["recall"] >= a.gate:
                kinds["pass"] += 1
                d[0] += 1
                if kind(t, haystack) == "haystack":
                    kinds["pass copying"] += 1
            else:
                kinds[kind(t, haystack)] += 1
        by_depth = ", ".join(f"{k} %: {p}/{n}" for k, (p, n) in sorted(depths.items()))
        if a.line:
            print(f"{kinds['pass']} of {len(tests)} pass, {kinds['pass copying']} of them by copying a haystack sentence")
            continue
        row = [kinds[k] for k in ("pass", "pass copying", "needle", "haystack", "other", "short")]
        print(f"| {path} | {len(tests)} | " + " | ".join(map(str, row)) + f" | {by_depth} |")


if __name__ == "__main__":
    main()
