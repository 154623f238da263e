#!/usr/bin/env python3
"""Pass rate (ROUGE-1 recall >= 0.5) by the distance from the needle to the end of the prompt, in tokens.

A lab model's failures at 8K follow that distance, not the prompt's length (docs/lab-v5/README.md, "hx13"):
this reads `headscope niah` records (tests.jsonl, or .jsonl.gz) and counts passes per band of distance.
  scripts/pass-by-distance.py [--bands 2048,4096,6144] RECORDS... [-- RECORDS...]
Each group of records (split by `--`) prints one line, so that two models read side by side.
"""
import bisect
import os
import sys

from niah_records import records


def main(argv):
    bands = [2048, 4096, 6144]
    if argv[:1] == ["--bands"]:
        bands = [int(x) for x in argv[1].split(",")]
        argv = argv[2:]
    groups, group = [], []
    for a in argv:
        if a == "--":
            groups.append(group)
            group = []
        else:
            group.append(a)
    groups.append(group)
    if not any(groups):
        sys.exit(__doc__)
    names = [f"<{bands[0]}"] + [f"{lo}-{hi}" for lo, hi in zip(bands, bands[1:])] + [f">={bands[-1]}"]
    for paths in groups:
        passed, total = [0] * len(names), [0] * len(names)
        for path in paths:
            for r in records(path):
                # The needle's first token to the last prompt token: what a head must reach back over.
                distance = r["prompt_tokens"] - r["needle_tokens"][0]
                band = bisect.bisect_right(bands, distance)
                total[band] += 1
                passed[band] += r["recall"] >= 0.5
        cells = [f"{n} {p}/{t} ({100 * p / t:.0f} %)" if t else f"{n} -" for n, p, t in zip(names, passed, total)]
        print(f"{' '.join(os.path.basename(p) for p in paths)}: " + ", ".join(cells))


if __name__ == "__main__":
    main(sys.argv[1:])
