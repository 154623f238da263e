#!/usr/bin/env python3
"""Where watched heads looked while the answer was written: steps whose argmax lay in the needle sentence.

Reads `headscope niah --save-prompts --watch-heads H,...` records (tests.jsonl, or .jsonl.gz). For each
test: the answer's recall, the heads whose argmax was in the needle at the first answer step, and the
head that stayed there most: its steps in the needle and its copies (steps whose argmax token there is
the token just written, eq. 1's match over the whole sentence rather than the answer span). A copy head
that keeps the needle writes it out; one that finds it now and then writes a blend of needle and
invention. Tests group by depth, so that a far and a near needle read side by side.
  scripts/heads-in-needle.py RECORDS
"""
import ast
import collections
import sys

from niah_records import records


def parsed(value):
    # niah writes prompt_ids and head_argmax as strings of a list and of a map.
    return ast.literal_eval(value) if isinstance(value, str) else value


def main(argv):
    if len(argv) != 1:
        sys.exit(__doc__)
    groups = collections.defaultdict(list)
    for r in records(argv[0]):
        if "head_argmax" not in r or "prompt_ids" not in r:
            sys.exit(f"{argv[0]}: test {r['id']} has no head_argmax or prompt_ids: run niah with --watch-heads and --save-prompts")
        lo, hi = r["needle_tokens"]
        ids, looked, written = parsed(r["prompt_ids"]), parsed(r["head_argmax"]), r["generated_ids"]
        inside = {h: sum(lo <= a < hi for a in steps) for h, steps in looked.items()}
        copies = {h: sum(lo <= a < hi and ids[a] == written[j] for j, a in enumerate(steps[: len(written)])) for h, steps in looked.items()}
        at_first = sum(lo <= steps[0] < hi for steps in looked.values() if steps)
        best = max(inside, key=lambda h: (inside[h], copies[h]))
        groups[r["depth_percent"]].append((r, len(written), at_first, len(looked), best, inside[best], copies[best]))
    for depth, rows in sorted(groups.items()):
        passed = sum(r["recall"] >= 0.5 for r, *_ in rows)
        steps_in = sum(x[5] for x in rows)
        steps = sum(x[1] for x in rows)
        print(f"depth {depth:g} %: {passed}/{len(rows)} pass; the most faithful head in the needle {steps_in} of {steps} steps")
        for r, n, at_first, heads, best, inside, copied in rows:
            print(f"  {r['id']}: recall {r['recall']:.2f}, {at_first}/{heads} heads in the needle at the first step, "
                  f"{best} in it {inside} of {n} steps ({copied} copies)")


if __name__ == "__main__":
    main(sys.argv[1:])
