#!/usr/bin/env python3
"""Whether two models' NIAH records differ by more than chance, test by test.

Two `headscope niah`/`detect` records of the same grid (tests.jsonl, or .gz) are paired by test id; each
test passes at recall >= the gate. Printed: the passes of each, the tests both pass, those one passes
alone, and the exact two-sided McNemar p-value of the discordant pairs (the chance of a split at least
this uneven if either model were as likely to win each of them). On the 240-test yardsticks of
docs/lab-v5/README.md two restarts of one model differed by 17-20 tests each way, so a difference of ten
passes alone says little; this says how little.

  scripts/compare-records.py A/tests.jsonl B/tests.jsonl.gz [--gate 0.5]
"""
import argparse
import math
import sys

from niah_records import records


def passes(path, gate):
    return {t["id"]: t["recall"] >= gate for t in records(path)}


def mcnemar_p(b, c):
    """Exact two-sided McNemar p-value: binomial(b + c, 1/2), the tail at the smaller count, doubled."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--gate", type=float, default=0.5, help="recall at which a test passes (0.5, as niah's)")
    args = ap.parse_args()
    a, b = passes(args.a, args.gate), passes(args.b, args.gate)
    shared = sorted(set(a) & set(b))
    if not shared:
        sys.exit(f"{args.a} and {args.b} share no test id: they are not records of one grid")
    if len(shared) < max(len(a), len(b)):
        print(f"note: {len(shared)} tests in both; {len(a) - len(shared)} only in A, {len(b) - len(shared)} only in B")
    both = sum(a[t] and b[t] for t in shared)
    only_a = sum(a[t] and not b[t] for t in shared)
    only_b = sum(b[t] and not a[t] for t in shared)
    pa, pb = both + only_a, both + only_b
    n = len(shared)
    print(f"A {pa}/{n} ({100 * pa / n:.1f} %), B {pb}/{n} ({100 * pb / n:.1f} %)")
    print(f"both pass {both}, A alone {only_a}, B alone {only_b}; McNemar exact p = {mcnemar_p(only_a, only_b):.3g}")


if __name__ == "__main__":
    main()
