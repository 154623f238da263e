#!/usr/bin/env python3
"""Where a head looked while a model answered the look-alike yardstick.

Reads a `scripts/lookalike-eval.sh` output folder run with `--watch-heads HEAD --save-prompts` and sorts
each test by the first of the two sentences, the needle (N) or the look-alike (L), that HEAD's argmax
fell on while the answer was written ('.': neither, only the haystack or the question), and by whether
it went from the needle over to the look-alike later in the answer ("drift").
  scripts/lookalike-eval.sh MODEL DIR 1024 OUT --watch-heads 7-0 --save-prompts
  scripts/lookalike-looks.py MODEL DIR OUT 7-0
Positions are mapped to text with the tokenizer's vocabulary (byte-level BPE: 'Ġ' is a space).
"""
import json
import re
import sys
from collections import Counter

model, d, out, head = sys.argv[1:5]
vocab = {v: k for k, v in json.load(open(f"{model}/tokenizer.json"))["model"]["vocab"].items()}
needles = [json.loads(line) for line in open(f"{d}/lookalikes.jsonl")]
kinds = Counter()
for i, pair in enumerate(needles):
    look = pair["lookalike"].strip()
    for line in open(f"{out}/{i:02d}/tests.jsonl"):
        r = json.loads(line)
        ids = r["prompt_ids"]
        pieces = [vocab.get(t, "?").replace("Ġ", " ").replace("Ċ", "\n") for t in ids]
        starts, o = [], 0
        for p in pieces:
            starts.append(o)
            o += len(p)
        text = "".join(pieces)
        token_at = lambda c: max(k for k in range(len(starts)) if starts[k] <= c)
        # Every copy of the look-alike in the prompt (a short haystack repeats with it).
        spans = [(token_at(m.start()), token_at(m.start() + len(look) - 1) + 1) for m in re.finditer(re.escape(look[:40]), text)]
        a, b = r["needle_tokens"]
        where = "".join("N" if a <= q < b else "L" if any(x <= q < y for x, y in spans) else "." for q in r["head_argmax"][head])
        first = next((c for c in where if c != "."), ".")
        drift = first == "N" and "L" in where
        kinds[("pass" if r["recall"] >= 0.5 else "fail", first, drift)] += 1
for (outcome, first, drift), n in sorted(kinds.items()):
    print(f"{outcome}: first looked at {dict(N='the needle', L='the look-alike').get(first, 'neither')}{', then drifted to the look-alike' if drift else ''}: {n}")
