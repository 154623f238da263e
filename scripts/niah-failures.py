#!/usr/bin/env python3
"""Where a NIAH run's answers go wrong: pass rates by length, depth and needle shape, and each failure
classed by what the answer does with the needle sentence (for models that answer by restating it, as
lab model v4 does).

Usage: scripts/niah-failures.py RUN_DIR/tests.jsonl NEEDLES.jsonl
(tests.jsonl as `headscope detect` or `niah` writes it, gzipped or not; the needles file the run used).
A needle's `shape` field, where it has one, groups the pass rates.
"""
import collections
import json
import re
import sys

from niah_records import records


def words(text):
    return re.findall(r"[a-z0-9']+", text.lower())


def rate(flags):
    return f"{100 * sum(flags) / len(flags):.1f} % of {len(flags)}"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    tests_path, needles_path = sys.argv[1:]
    tests = records(tests_path)
    with open(needles_path) as f:
        needles = [json.loads(line) for line in f if line.strip()]
    if not tests:
        sys.exit(f"{tests_path} holds no tests")
    by = {"length": collections.defaultdict(list), "depth": collections.defaultdict(list), "shape": collections.defaultdict(list)}
    classes = collections.Counter()
    first_words = collections.Counter()
    starts_like_needle = 0
    for t in tests:
        needle = needles[t["needle_index"]]
        answer, sentence = words(t["answer"]), words(needle["needle"])
        passed = t["recall"] >= 0.5
        by["length"][t["length"]].append(passed)
        by["depth"][t["depth_percent"]].append(passed)
        by["shape"][needle.get("shape", "-")].append(passed)
        first_words[t["answer"].split()[0] if t["answer"].split() else ""] += 1
        starts = answer[:2] == sentence[:2]
        starts_like_needle += answer[:1] == sentence[:1]
        # Share of the answer's distinct words that are the needle's: high when it copies the needle.
        from_needle = len(set(answer) & set(sentence)) / max(1, len(set(answer)))
        if passed:
            classes["pass"] += 1
        elif starts:
            classes["starts at the needle, the copy goes wrong"] += 1
        elif from_needle > 0.4:
            classes["joins the needle later"] += 1
        else:
            classes["never reaches the needle"] += 1
    print(f"{len(tests)} tests, pass rate {rate([t['recall'] >= 0.5 for t in tests])}")
    for key, groups in by.items():
        print(f"by {key}:")
        for k in sorted(groups, key=lambda k: (isinstance(k, str), k)):
            print(f"  {k}: {rate(groups[k])}")
    print("answers:")
    for name, n in classes.most_common():
        print(f"  {name}: {n}")
    print(f"  first word as the needle's: {starts_like_needle}")
    print("  most common first words: " + ", ".join(f"{w!r} {n}" for w, n in first_words.most_common(6)))


if __name__ == "__main__":
    main()
