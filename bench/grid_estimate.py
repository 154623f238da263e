"""The official loop's time for a whole detection grid, computed from its measured per-test times at a
few of the grid's lengths (issue 24's `bench --grid official` comparison).

    python3 bench/grid_estimate.py --grid GRID.json --official OFFICIAL.json [--fixed FIXED.json]

GRID.json is what `headscope bench --grid official --json` wrote (the lengths, tests per length and
HeadScope's measured wall time); OFFICIAL.json (and FIXED.json) what bench/official_loop.py (and
bench/fixed_loop.py) wrote for one test at each sampled length. A test's time is fitted as
a + b L + c L^2 over the sampled lengths (least squares: prefill grows with L, attention with L^2),
then summed over every test of the grid. Start-up (loading the model) is not in it: the figure is said
to be computed, and HeadScope's wall time beside it includes its own start-up.
"""
import argparse
import json


def quadratic_fit(points):
    """a, b, c of the least-squares a + b x + c x^2 through `points` (x in thousands of tokens, for a
    well-conditioned 3 x 3 system solved by Gaussian elimination)."""
    xs = [x / 1000.0 for x, _ in points]
    ys = [y for _, y in points]
    m = [[sum(x ** (i + j) for x in xs) for j in range(3)] + [sum(y * x**i for x, y in zip(xs, ys))] for i in range(3)]
    for col in range(3):
        pivot = max(range(col, 3), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(3):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [a - f * b for a, b in zip(m[r], m[col])]
    a, b, c = (m[i][3] / m[i][i] for i in range(3))
    return lambda length: a + b * (length / 1000.0) + c * (length / 1000.0) ** 2


def fitted(path):
    with open(path) as f:
        doc = json.load(f)
    points = [(t["length"], t["seconds"]) for t in doc["tests"] if t.get("fits", True)]
    if len(points) < 3:
        raise SystemExit(f"{path}: need at least 3 measured lengths for the fit, found {len(points)}")
    return points, quadratic_fit(points)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", required=True)
    ap.add_argument("--official", required=True)
    ap.add_argument("--fixed")
    args = ap.parse_args()
    with open(args.grid) as f:
        grid = json.load(f)
    rows = [("HeadScope (measured, start-up included)", grid["wall_seconds"], None)]
    for name, path in [("official loop (computed)", args.official), ("fixed loop (computed)", args.fixed)]:
        if not path:
            continue
        points, fit = fitted(path)
        total = sum(l["tests"] * max(fit(l["length"]), 0.0) for l in grid["per_length"])
        sampled = ", ".join(f"{int(length)}: {s:.2f} s" for length, s in points)
        rows.append((name, total, sampled))
    print(f"grid {grid['grid']}: {grid['tests']} tests, lengths {grid['lengths']}, {grid['depths']} depths, {grid['max_new_tokens']} new tokens\n")
    print("| | seconds for the grid | from |")
    print("|---|---|---|")
    for name, total, sampled in rows:
        print(f"| {name} | {total:.1f} | {sampled or 'the run itself'} |")
    base = rows[0][1]
    for name, total, _ in rows[1:]:
        print(f"\n{name}: {total / base:.2f}x HeadScope's time")


if __name__ == "__main__":
    main()
